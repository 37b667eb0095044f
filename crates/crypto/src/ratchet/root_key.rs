//! The root key and `KDF_RK`.
//!
//! ```text
//! KDF_RK(rk, dh_out) = HKDF-SHA-256(salt = rk, ikm = dh_out, info = "DP2PTCS_Ratchet_v1", L = 64)
//!                    = new root key (bytes 0..32) || new chain key (bytes 32..64)
//! ```

use crate::kdf::hkdf_sha256;
use zeroize::Zeroizing;

use super::chain_key::ChainKey;
use super::ratchet_key::{RatchetKeyPair, RatchetPublicKey};

/// The HKDF `info` of `KDF_RK`.
pub const KDF_RK_INFO: &[u8] = b"DP2PTCS_Ratchet_v1";

/// The DH output of a ratchet step was all zeros (small-order ratchet public key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonContributory;

/// `RK`: 32 secret bytes, zeroized on drop.
#[derive(Clone)]
pub(crate) struct RootKey([u8; 32]);

wipe_on_drop!(RootKey);

impl RootKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `KDF_RK(self, DH(ours, theirs))`; refuses an all-zero DH output.
    pub(crate) fn advance(
        &self,
        ours: &RatchetKeyPair,
        theirs: &RatchetPublicKey,
    ) -> Result<(RootKey, ChainKey), NonContributory> {
        let shared = ours.diffie_hellman(theirs);
        if !shared.was_contributory() {
            return Err(NonContributory);
        }
        Ok(self.kdf(shared.as_bytes()))
    }

    /// `KDF_RK(self, dh_out)`.
    pub(crate) fn kdf(&self, dh_out: &[u8; 32]) -> (RootKey, ChainKey) {
        let mut okm = Zeroizing::new([0u8; 64]);
        hkdf_sha256(Some(&self.0), dh_out, KDF_RK_INFO, okm.as_mut());
        let mut rk = [0u8; 32];
        let mut ck = [0u8; 32];
        rk.copy_from_slice(&okm[..32]);
        ck.copy_from_slice(&okm[32..]);
        (RootKey(rk), ChainKey::new(ck))
    }
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self(_) = self;
        f.write_str("RootKey(<redacted>)")
    }
}
