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

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The HKDF `info` that turns a message key into an AEAD key and nonce.
pub const MESSAGE_KEY_INFO: &[u8] = b"DP2PTCS_MessageKeys_v1";
/// Bytes of authentication tag each ciphertext carries.
pub const TAG_LEN: usize = 16;

/// `mk`: 32 secret bytes, used for one message and then dropped (zeroized).
/// The HMAC-SHA-256 state keyed with HKDF's all-zero salt (a public constant).
fn zero_salt_hmac() -> &'static Hmac<Sha256> {
    static STATE: OnceLock<Hmac<Sha256>> = OnceLock::new();
    STATE.get_or_init(|| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()))
}

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKey([u8; 32]);

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

    /// The ChaCha20-Poly1305 key and nonce.
    pub(crate) fn aead_key_nonce(&self) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
        // HKDF-Extract(salt = 0x00 * 32, mk) = HMAC-SHA-256(key = 0x00 * 32, mk). The HMAC state
        // keyed with the constant zero salt is computed once and cloned (a 32-byte key is
        // zero-padded to the 64-byte block, so it is the state for a 64-byte zero key).
        let mut extract = zero_salt_hmac().clone();
        extract.update(&self.0);
        let prk = Zeroizing::new(<[u8; 32]>::from(extract.finalize().into_bytes()));
        let mut okm = Zeroizing::new([0u8; 44]);
        // Cannot fail: the PRK is one hash length and 44 <= 255 * 32.
        if let Ok(hk) = Hkdf::<Sha256>::from_prk(prk.as_ref()) {
            let _ = hk.expand(MESSAGE_KEY_INFO, okm.as_mut());
        }
        let mut key = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 12];
        key.copy_from_slice(&okm[..32]);
        nonce.copy_from_slice(&okm[32..]);
        (key, nonce)
    }

    /// Fails only for plaintexts longer than ChaCha20-Poly1305 allows (2^38 bytes).
    pub(crate) fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, AeadFailure> {
        let (key, nonce) = self.aead_key_nonce();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
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

    pub(crate) fn decrypt(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AeadFailure> {
        let (key, nonce) = self.aead_key_nonce();
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| AeadFailure)
    }
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self(_) = self;
        f.write_str("MessageKey(<redacted>)")
    }
}
