//! Message headers and the wire form of a ratchet message.
//!
//! ```text
//! header  = version (1 byte, 0x01) || DHs (32, X25519 public key) || PN (u32 BE) || N (u32 BE)   -- 41 bytes
//! message = header || ciphertext (ChaCha20-Poly1305 output, tag included, >= 16 bytes)
//! ```

use super::message_key::TAG_LEN;
use super::ratchet_key::RatchetPublicKey;
use crate::x3dh::initial_message_reader as reader;

/// The header version byte.
pub const HEADER_VERSION: u8 = 1;
/// Length of the canonical header encoding.
pub const HEADER_LEN: usize = 1 + 32 + 4 + 4;

/// `HEADER(dh_pair, pn, n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: RatchetPublicKey,
    /// `PN`: number of messages in the sender's previous sending chain.
    pub previous_chain_length: u32,
    /// `N`: this message's number in its sending chain.
    pub message_number: u32,
}

/// Why bytes are not a valid header or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Too short (a header is 41 bytes; a message is at least 57).
    #[error("ratchet header or message truncated ({0} bytes)")]
    Truncated(usize),
    /// A header must be exactly 41 bytes.
    #[error("ratchet header has invalid length {0}")]
    Length(usize),
    /// Unknown version byte.
    #[error("ratchet header has unknown version {0}")]
    UnknownVersion(u8),
}

impl Header {
    /// The canonical 41 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = HEADER_VERSION;
        out[1..33].copy_from_slice(&self.ratchet_key.0);
        out[33..37].copy_from_slice(&self.previous_chain_length.to_be_bytes());
        out[37..41].copy_from_slice(&self.message_number.to_be_bytes());
        out
    }

    /// Decodes exactly 41 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() != HEADER_LEN {
            return Err(HeaderError::Length(bytes.len()));
        }
        let mut r = reader(bytes);
        let version = r.u8();
        if version != HEADER_VERSION {
            return Err(HeaderError::UnknownVersion(version));
        }
        Ok(Self {
            ratchet_key: RatchetPublicKey(r.array::<32>()),
            previous_chain_length: r.u32(),
            message_number: r.u32(),
        })
    }
}

/// A ratchet message: header and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatchetMessage {
    /// The header (authenticated as associated data).
    pub header: Header,
    /// ChaCha20-Poly1305 ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl RatchetMessage {
    /// `header || ciphertext`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.ciphertext.len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Decodes `header || ciphertext`; the ciphertext must hold at least a tag.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(HeaderError::Truncated(bytes.len()));
        }
        let (h, ct) = bytes.split_at(HEADER_LEN);
        Ok(Self {
            header: Header::from_bytes(h)?,
            ciphertext: ct.to_vec(),
        })
    }
}
