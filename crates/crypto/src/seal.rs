//! Sealing local state (address book, ratchet pickles) under a 32-byte key.
//!
//! ```text
//! sealed = 0x01 || nonce (24 random bytes) || XChaCha20-Poly1305(key, nonce, plaintext, aad = context)
//! ```
//!
//! `context` names what is sealed (for example `b"dp2ptcs contacts v1"`), so a blob sealed for one
//! purpose never opens as another.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// Format version, the first byte of every sealed blob.
pub const SEAL_VERSION: u8 = 1;
/// Length of the random nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes a sealed blob adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// Why a sealed blob does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Too short to be a sealed blob.
    #[error("sealed data is truncated ({0} bytes)")]
    Truncated(usize),
    /// Unknown version byte.
    #[error("sealed data has unknown version {0}")]
    UnknownVersion(u8),
    /// Wrong key, wrong context, or altered data.
    #[error("sealed data does not authenticate (wrong key or damaged data)")]
    Authentication,
}

/// Encrypts and authenticates `plaintext` under `key`, bound to `context`.
pub fn seal<R: RngCore + CryptoRng>(
    key: &[u8; 32],
    context: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    // Encryption with a valid key and in-memory buffers cannot fail.
    if let Ok(ct) = cipher.encrypt(
        XNonce::from_slice(&nonce),
        Payload {
            msg: plaintext,
            aad: context,
        },
    ) {
        out.extend_from_slice(&ct);
    }
    out
}

/// Opens a blob made by [`seal`] with the same key and context.
pub fn open(
    key: &[u8; 32],
    context: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < OVERHEAD {
        return Err(SealError::Truncated(sealed.len()));
    }
    if sealed[0] != SEAL_VERSION {
        return Err(SealError::UnknownVersion(sealed[0]));
    }
    let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: context,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn round_trip_and_binding() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let key = [7u8; 32];
        let blob = seal(&key, b"ctx", b"hello", &mut rng);
        assert_eq!(blob.len(), 5 + OVERHEAD);
        assert_eq!(open(&key, b"ctx", &blob).unwrap().as_slice(), b"hello");
        assert_eq!(
            open(&[8u8; 32], b"ctx", &blob),
            Err(SealError::Authentication)
        );
        assert_eq!(open(&key, b"other", &blob), Err(SealError::Authentication));
        assert_eq!(
            open(&key, b"ctx", &blob[..10]),
            Err(SealError::Truncated(10))
        );
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut rng = ChaCha20Rng::seed_from_u64(4);
            let key = [9u8; 32];
            let mut blob = seal(&key, b"ctx", b"some plaintext", &mut rng);
            let i = pos.index(blob.len());
            blob[i] ^= 1 << bit;
            prop_assert!(open(&key, b"ctx", &blob).is_err());
        }
    }
}
