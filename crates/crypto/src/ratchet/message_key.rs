//! Message keys and message encryption.
//!
//! ```text
//! key (32) || nonce (12) = HKDF-SHA-256(salt = 0x00 * 32, ikm = mk, info = "DP2PTCS_MessageKeys_v1", L = 44)
//! ciphertext = ChaCha20-Poly1305(key, nonce, plaintext, aad = AD || header bytes)   (RFC 8439; tag appended)
//! ```
//!
//! Each message key encrypts exactly one message, so the derived nonce is never reused with its key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::sync::OnceLock;

use hmac::digest::{FixedOutput, FixedOutputReset};
use hmac::{Hmac, HmacReset, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use super::plaintext::Plaintext;

/// The HKDF `info` that turns a message key into an AEAD key and nonce.
pub const MESSAGE_KEY_INFO: &[u8] = b"DP2PTCS_MessageKeys_v1";
/// Bytes of authentication tag each ciphertext carries.
pub const TAG_LEN: usize = 16;

/// The HMAC-SHA-256 state keyed with HKDF's all-zero salt (a public constant).
fn zero_salt_hmac() -> &'static Hmac<Sha256> {
    static STATE: OnceLock<Hmac<Sha256>> = OnceLock::new();
    STATE.get_or_init(|| <Hmac<Sha256> as hmac::KeyInit>::new(&Default::default()))
}

/// `mk`: 32 secret bytes, used for one message and then dropped (zeroized).
#[derive(Clone)]
pub(crate) struct MessageKey([u8; 32]);

wipe_on_drop!(MessageKey);

/// The AEAD refused the ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadFailure;

impl MessageKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn as_mut_bytes(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    /// The ChaCha20-Poly1305 instance keyed for this message, and its nonce. The cipher
    /// zeroizes its copy of the key when dropped.
    ///
    /// HKDF (RFC 5869) written out as its HMAC-SHA-256 calls, which is what lets the extract
    /// step reuse a precomputed state. With L = 44 the expand step is two blocks:
    /// `T(1) = HMAC(PRK, info || 0x01)` and `T(2) = HMAC(PRK, T(1) || info || 0x02)`;
    /// key = `T(1)`, nonce = the first 12 bytes of `T(2)`.
    fn aead(&self) -> (ChaCha20Poly1305, [u8; 12]) {
        // HKDF-Extract(salt = 0x00 * 32, mk) = HMAC-SHA-256(key = 0x00 * 32, mk). The HMAC state
        // keyed with the constant zero salt is computed once and cloned (a 32-byte key is
        // zero-padded to the 64-byte block, so it is the state for a 64-byte zero key).
        let mut extract = zero_salt_hmac().clone();
        extract.update(&self.0);
        let mut prk = [0u8; 32];
        FixedOutput::finalize_into(extract, (&mut prk).into());
        let mut t1 = [0u8; 32];
        let mut t2 = [0u8; 32];
        // Cannot fail: HMAC takes keys of any length.
        if let Ok(mut mac) = <HmacReset<Sha256> as hmac::KeyInit>::new_from_slice(&prk) {
            mac.update(MESSAGE_KEY_INFO);
            mac.update(&[1]);
            FixedOutputReset::finalize_into_reset(&mut mac, (&mut t1).into());
            mac.update(&t1);
            mac.update(MESSAGE_KEY_INFO);
            mac.update(&[2]);
            FixedOutput::finalize_into(mac, (&mut t2).into());
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&t1));
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&t2[..12]);
        prk.as_mut_slice().zeroize();
        t1.as_mut_slice().zeroize();
        t2.as_mut_slice().zeroize();
        (cipher, nonce)
    }

    /// Fails only for plaintexts longer than ChaCha20-Poly1305 allows (2^38 bytes).
    pub(crate) fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, AeadFailure> {
        let (cipher, nonce) = self.aead();
        cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| AeadFailure)
    }

    pub(crate) fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Plaintext, AeadFailure> {
        let (cipher, nonce) = self.aead();
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Plaintext::new)
            .map_err(|_| AeadFailure)
    }
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self(_) = self;
        f.write_str("MessageKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::Hkdf;

    /// The HMAC calls in `aead` are HKDF-SHA-256(salt = 0x00 * 32, mk, info, L = 44) as the
    /// `hkdf` crate computes it: same ciphertexts, and each side opens the other's.
    #[test]
    fn aead_key_and_nonce_are_the_specified_hkdf() {
        for seed in 0u8..8 {
            let bytes = [seed.wrapping_mul(37).wrapping_add(1); 32];
            let mk = MessageKey::new(bytes);
            let mut okm = [0u8; 44];
            Hkdf::<Sha256>::new(Some(&[0u8; 32]), &bytes)
                .expand(MESSAGE_KEY_INFO, &mut okm)
                .unwrap();
            let reference = ChaCha20Poly1305::new(Key::from_slice(&okm[..32]));
            let nonce = Nonce::from_slice(&okm[32..]);
            let msg = vec![seed; usize::from(seed) * 9];
            let aad = [seed ^ 0x55; 105];
            let ours = mk.encrypt(&msg, &aad).unwrap();
            let theirs = reference
                .encrypt(
                    nonce,
                    Payload {
                        msg: &msg,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(ours, theirs);
            assert_eq!(mk.decrypt(&theirs, &aad).unwrap().as_slice(), msg);
            assert!(mk.decrypt(&theirs, &aad[1..]).is_err());
        }
    }

    /// Every HMAC state keyed with a chain key, a message key or a PRK (and HKDF's, which holds
    /// one) wipes itself when dropped: it is two SHA-256 cores and a block buffer, which wipe
    /// themselves with the `zeroize` features of `hmac` and `sha2`. Without those features this
    /// does not compile.
    #[test]
    fn keyed_hmac_states_wipe_themselves_on_drop() {
        use hmac::digest::block_api::{Buffer, CoreProxy};
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<<Sha256 as CoreProxy>::Core>();
        wiped_on_drop::<Buffer<<Hmac<Sha256> as CoreProxy>::Core>>();
        wiped_on_drop::<Buffer<<HmacReset<Sha256> as CoreProxy>::Core>>();
    }
}
