//! The X3DH initial message: what the initiator sends so the responder can compute `SK`.
//!
//! ```text
//! initial = version (1 byte, 0x01)
//!        || IK_A (32, Ed25519 public key) || EK_A (32, X25519 public key)
//!        || SPK id (u32 big-endian)
//!        || has OPK (1 byte, 0x00 or 0x01) [|| OPK id (u32 big-endian)]
//! ```
//!
//! 70 bytes without a one-time prekey, 74 with. It travels with Alice's first ratchet message;
//! Alice attaches it to every message she sends until she has received a reply.

use crate::{PublicIdentity, PublicKeyError};

/// First byte of an encoded initial message.
pub const INITIAL_MESSAGE_VERSION: u8 = 1;
const BASE_LEN: usize = 1 + 32 + 32 + 4 + 1;

/// Alice's identity key, ephemeral key, and the ids of Bob's prekeys she used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMessage {
    identity: PublicIdentity,
    ephemeral_key: [u8; 32],
    signed_prekey_id: u32,
    one_time_prekey_id: Option<u32>,
}

/// Why bytes are not a valid initial message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InitialMessageError {
    /// Wrong length for the encoding.
    #[error("initial message has invalid length {0}")]
    Length(usize),
    /// Unknown version byte.
    #[error("initial message has unknown version {0}")]
    UnknownVersion(u8),
    /// The has-OPK flag is neither 0 nor 1.
    #[error("initial message has invalid one-time-prekey flag {0}")]
    Flag(u8),
    /// The identity key is not a valid Ed25519 public key.
    #[error("initial message identity key: {0}")]
    Identity(#[from] PublicKeyError),
}

impl InitialMessage {
    /// Assembles an initial message.
    pub fn new(
        identity: PublicIdentity,
        ephemeral_key: [u8; 32],
        signed_prekey_id: u32,
        one_time_prekey_id: Option<u32>,
    ) -> Self {
        Self {
            identity,
            ephemeral_key,
            signed_prekey_id,
            one_time_prekey_id,
        }
    }
    /// The initiator's identity `IK_A`.
    pub fn identity(&self) -> &PublicIdentity {
        &self.identity
    }
    /// The initiator's ephemeral key `EK_A` (X25519 public key).
    pub fn ephemeral_key(&self) -> &[u8; 32] {
        &self.ephemeral_key
    }
    /// The id of the responder's signed prekey that was used.
    pub fn signed_prekey_id(&self) -> u32 {
        self.signed_prekey_id
    }
    /// The id of the responder's one-time prekey that was used, if any.
    pub fn one_time_prekey_id(&self) -> Option<u32> {
        self.one_time_prekey_id
    }

    /// The canonical encoding (module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BASE_LEN + 4);
        out.push(INITIAL_MESSAGE_VERSION);
        out.extend_from_slice(&self.identity.to_bytes());
        out.extend_from_slice(&self.ephemeral_key);
        out.extend_from_slice(&self.signed_prekey_id.to_be_bytes());
        match self.one_time_prekey_id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        out
    }

    /// Decodes the canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InitialMessageError> {
        if bytes.len() != BASE_LEN && bytes.len() != BASE_LEN + 4 {
            return Err(InitialMessageError::Length(bytes.len()));
        }
        let mut r = Reader(bytes);
        let version = r.u8();
        if version != INITIAL_MESSAGE_VERSION {
            return Err(InitialMessageError::UnknownVersion(version));
        }
        let identity = PublicIdentity::from_bytes(&r.array::<32>())?;
        let ephemeral_key = r.array::<32>();
        let signed_prekey_id = r.u32();
        let one_time_prekey_id = match (r.u8(), bytes.len()) {
            (0, BASE_LEN) => None,
            (1, len) if len == BASE_LEN + 4 => Some(r.u32()),
            (0 | 1, len) => return Err(InitialMessageError::Length(len)),
            (flag, _) => return Err(InitialMessageError::Flag(flag)),
        };
        Ok(Self {
            identity,
            ephemeral_key,
            signed_prekey_id,
            one_time_prekey_id,
        })
    }
}

/// A cursor over bytes whose length the caller has already checked; reading past the end yields
/// zeros instead of panicking.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    pub(crate) fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array::<4>())
    }
}
