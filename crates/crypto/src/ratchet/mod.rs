//! The Double Ratchet, exactly as in Signal's Double Ratchet specification (revision 1,
//! 2016-11-20), section 3 (no header encryption). `PROTOCOL.md` (section 7.2, "Double Ratchet") is the
//! normative text; this is a summary.
//!
//! ```text
//! GENERATE_DH()  = fresh X25519 key pair from the caller's RNG
//! DH(a, B)       = X25519(a, B); an all-zero output is rejected
//! KDF_RK(rk, dh) = HKDF-SHA-256(salt = rk, ikm = dh, info = "DP2PTCS_Ratchet_v1", L = 64) -> (rk', ck)
//! KDF_CK(ck)     = (HMAC-SHA-256(ck, 0x02) -> ck',  HMAC-SHA-256(ck, 0x01) -> mk)
//! ENCRYPT(mk, p, ad): key || nonce = HKDF-SHA-256(salt = 0x00*32, ikm = mk,
//!                     info = "DP2PTCS_MessageKeys_v1", L = 44); ChaCha20-Poly1305(key, nonce, p, ad)
//! HEADER         = 0x01 || DHs public (32) || PN (u32 BE) || N (u32 BE)        (41 bytes)
//! CONCAT(AD, h)  = AD (64 bytes from X3DH) || header bytes
//! ```
//!
//! `MAX_SKIP` = [`MAX_SKIP`]: a header that would make the receiver skip more message keys than
//! that in one chain is rejected before any derivation. At most [`MAX_SKIPPED_KEYS`] skipped keys
//! are kept per session; the oldest is evicted first. A key is deleted once used, so a replayed
//! message fails. Decryption works on a copy of the state and commits only when the message
//! authenticates: a rejected message leaves the session byte-for-byte unchanged.
//!
//! The initiator's first ratchet public key pair is fresh; the responder's is its signed prekey
//! (`RatchetInitBob(SK, SPK_B)`), and the initiator's `DHr` starts as `SPK_B`.

/// `Zeroize`, `Drop` and `ZeroizeOnDrop` for a one-field tuple struct over a secret byte array.
/// The slice form of `zeroize` clears the bytes at once and then keeps the compiler from eliding
/// the writes; the array form (what `#[derive(Zeroize)]` calls) writes one volatile byte at a time.
macro_rules! wipe_on_drop {
    ($t:ty) => {
        impl zeroize::Zeroize for $t {
            fn zeroize(&mut self) {
                zeroize::Zeroize::zeroize(self.0.as_mut_slice());
            }
        }

        impl Drop for $t {
            fn drop(&mut self) {
                zeroize::Zeroize::zeroize(self);
            }
        }

        impl zeroize::ZeroizeOnDrop for $t {}
    };
}

mod chain_key;
mod header;
mod message_key;
pub(crate) mod pickle;
mod plaintext;
mod ratchet_key;
mod receiver_chain;
mod root_key;
mod session;
mod skipped_keys;

pub use chain_key::{CHAIN_KEY_SEED, MESSAGE_KEY_SEED};
pub use header::{Header, HeaderError, RatchetMessage, HEADER_LEN, HEADER_VERSION};
pub use message_key::{MESSAGE_KEY_INFO, TAG_LEN};
pub use pickle::{PickleError, PICKLE_SEAL_CONTEXT, PICKLE_VERSION};
pub use plaintext::Plaintext;
pub use ratchet_key::{RatchetKeyPair, RatchetPublicKey};
pub use root_key::KDF_RK_INFO;
pub use session::{
    resolve_crossing, CrossingResolution, DecryptError, EncryptError, Session, SessionError,
    SharedSession,
};

/// The most message keys one header may make the receiver skip in one chain (`MAX_SKIP`).
pub const MAX_SKIP: u32 = 1000;
/// The most skipped-message keys a session stores; beyond this the oldest is evicted.
pub const MAX_SKIPPED_KEYS: usize = 2000;

#[cfg(test)]
mod tests;
