//! The prekey bundle a responder publishes (in the DHT or over a handshake stream).
//!
//! ```text
//! bundle = version (1 byte, 0x01)
//!       || IK   (32, Ed25519 public key)
//!       || SPK id (u32 big-endian) || SPK (32, X25519 public key) || SPK signature (64, Ed25519)
//!       || has OPK (1 byte, 0x00 or 0x01)
//!       [|| OPK id (u32 big-endian) || OPK (32, X25519 public key)]      -- iff has OPK = 0x01
//! ```
//!
//! 134 bytes without a one-time prekey, 170 with. Nothing may follow.

use super::prekey::signed_prekey_signature_message;
use crate::{PublicIdentity, PublicKeyError};

/// First byte of an encoded bundle.
pub const BUNDLE_VERSION: u8 = 1;
const BASE_LEN: usize = 1 + 32 + 4 + 32 + 64 + 1;
const OTK_LEN: usize = 4 + 32;

/// A prekey bundle: identity key, signed prekey with its signature, optional one-time prekey.
/// All public; `Debug` prints hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    identity: PublicIdentity,
    signed_prekey_id: u32,
    signed_prekey: [u8; 32],
    signed_prekey_signature: [u8; 64],
    one_time_prekey: Option<(u32, [u8; 32])>,
}

/// Why bytes are not a valid bundle, or a bundle does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Wrong length for the encoding.
    #[error("prekey bundle has invalid length {0}")]
    Length(usize),
    /// Unknown version byte.
    #[error("prekey bundle has unknown version {0}")]
    UnknownVersion(u8),
    /// The has-OPK flag is neither 0 nor 1.
    #[error("prekey bundle has invalid one-time-prekey flag {0}")]
    Flag(u8),
    /// The identity key is not a valid Ed25519 public key.
    #[error("prekey bundle identity key: {0}")]
    Identity(#[from] PublicKeyError),
    /// The signed prekey signature does not verify.
    #[error("prekey bundle signature does not verify")]
    BadSignature,
}

impl PreKeyBundle {
    /// Assembles a bundle (not verified; see [`PreKeyBundle::verify`]).
    pub fn new(
        identity: PublicIdentity,
        signed_prekey_id: u32,
        signed_prekey: [u8; 32],
        signed_prekey_signature: [u8; 64],
        one_time_prekey: Option<(u32, [u8; 32])>,
    ) -> Self {
        Self {
            identity,
            signed_prekey_id,
            signed_prekey,
            signed_prekey_signature,
            one_time_prekey,
        }
    }

    /// The responder's identity.
    pub fn identity(&self) -> &PublicIdentity {
        &self.identity
    }
    /// The signed prekey's id.
    pub fn signed_prekey_id(&self) -> u32 {
        self.signed_prekey_id
    }
    /// The signed prekey (X25519 public key).
    pub fn signed_prekey(&self) -> &[u8; 32] {
        &self.signed_prekey
    }
    /// The identity's Ed25519 signature over [`signed_prekey_signature_message`].
    pub fn signed_prekey_signature(&self) -> &[u8; 64] {
        &self.signed_prekey_signature
    }
    /// The one-time prekey, if any: id and X25519 public key.
    pub fn one_time_prekey(&self) -> Option<(u32, &[u8; 32])> {
        self.one_time_prekey.as_ref().map(|(id, k)| (*id, k))
    }

    /// Checks the signed prekey signature (strict Ed25519 verification).
    pub fn verify(&self) -> Result<(), BundleError> {
        let msg = signed_prekey_signature_message(self.signed_prekey_id, &self.signed_prekey);
        let sig = ed25519_dalek::Signature::from_bytes(&self.signed_prekey_signature);
        // Strict verification (canonical S, no small-order R or A) suffices: it implies the
        // plain RFC 8032 check.
        if self
            .identity
            .verifying_key()
            .verify_strict(&msg, &sig)
            .is_ok()
        {
            Ok(())
        } else {
            Err(BundleError::BadSignature)
        }
    }

    /// The canonical encoding (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BASE_LEN + OTK_LEN);
        out.push(BUNDLE_VERSION);
        out.extend_from_slice(&self.identity.to_bytes());
        out.extend_from_slice(&self.signed_prekey_id.to_be_bytes());
        out.extend_from_slice(&self.signed_prekey);
        out.extend_from_slice(&self.signed_prekey_signature);
        match &self.one_time_prekey {
            None => out.push(0),
            Some((id, key)) => {
                out.push(1);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(key);
            }
        }
        out
    }

    /// Decodes the canonical encoding and verifies the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let bundle = Self::decode(bytes)?;
        bundle.verify()?;
        Ok(bundle)
    }

    /// Decodes without verifying the signature.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() != BASE_LEN && bytes.len() != BASE_LEN + OTK_LEN {
            return Err(BundleError::Length(bytes.len()));
        }
        let mut r = crate::x3dh::initial_message::Reader(bytes);
        let version = r.u8();
        if version != BUNDLE_VERSION {
            return Err(BundleError::UnknownVersion(version));
        }
        let identity = PublicIdentity::from_bytes(&r.array::<32>())?;
        let signed_prekey_id = r.u32();
        let signed_prekey = r.array::<32>();
        let signed_prekey_signature = r.array::<64>();
        let one_time_prekey = match (r.u8(), bytes.len()) {
            (0, BASE_LEN) => None,
            (1, len) if len == BASE_LEN + OTK_LEN => Some((r.u32(), r.array::<32>())),
            (0 | 1, len) => return Err(BundleError::Length(len)),
            (flag, _) => return Err(BundleError::Flag(flag)),
        };
        Ok(Self {
            identity,
            signed_prekey_id,
            signed_prekey,
            signed_prekey_signature,
            one_time_prekey,
        })
    }
}
