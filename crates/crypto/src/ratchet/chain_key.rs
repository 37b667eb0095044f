//! Chain keys and `KDF_CK`.
//!
//! ```text
//! message key    = HMAC-SHA-256(key = ck, data = 0x01)
//! next chain key = HMAC-SHA-256(key = ck, data = 0x02)
//! ```

use hmac::digest::{FixedOutput, FixedOutputReset};
use hmac::{HmacReset, KeyInit, Mac};
use sha2::Sha256;

use super::message_key::MessageKey;

/// `KDF_CK` input byte for the message key.
pub const MESSAGE_KEY_SEED: u8 = 0x01;
/// `KDF_CK` input byte for the next chain key.
pub const CHAIN_KEY_SEED: u8 = 0x02;

/// `CKs` / `CKr`: 32 secret bytes, zeroized on drop.
#[derive(Clone)]
pub(crate) struct ChainKey([u8; 32]);

wipe_on_drop!(ChainKey);

impl ChainKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `KDF_CK(self)` = (next chain key, message key).
    pub(crate) fn step(&self) -> (ChainKey, MessageKey) {
        // The outputs are written straight into the key types, which wipe them on drop, rather
        // than into local arrays that would be copied and left behind.
        let mut next = ChainKey([0u8; 32]);
        let mut mk = MessageKey::new([0u8; 32]);
        // Cannot fail: HMAC takes keys of any length.
        // One keyed state serves both outputs (reset to the keyed state in between): one state
        // less to wipe than a clone would make.
        if let Ok(mut mac) = HmacReset::<Sha256>::new_from_slice(&self.0) {
            mac.update(&[MESSAGE_KEY_SEED]);
            FixedOutputReset::finalize_into_reset(&mut mac, mk.as_mut_bytes().into());
            mac.update(&[CHAIN_KEY_SEED]);
            FixedOutput::finalize_into(mac, (&mut next.0).into());
        }
        (next, mk)
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self(_) = self;
        f.write_str("ChainKey(<redacted>)")
    }
}
