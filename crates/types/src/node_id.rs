use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::Distance;

/// The identifier of a node: `SHA-256(Ed25519 public key)`, always exactly 32 bytes.
///
/// Shown to people as 64 lower-case hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Length of a node id in bytes.
    pub const LEN: usize = 32;

    /// The node id of the holder of `public_key` (the 32-byte Ed25519 public key encoding).
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        Self(Sha256::digest(public_key).into())
    }

    /// Wraps 32 raw bytes. Use [`NodeId::from_public_key`] to derive an id from a key.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The XOR distance between two ids, the Kademlia metric.
    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut out = [0u8; 32];
        for (o, (a, b)) in out.iter_mut().zip(self.0.iter().zip(other.0.iter())) {
            *o = a ^ b;
        }
        Distance::from_bytes(out)
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first `n` hex digits (at most 64), for compact display.
    pub fn short(&self, n: usize) -> String {
        let mut s = self.to_hex();
        s.truncate(n.min(64));
        s
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short(16))
    }
}

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeIdError {
    /// The string does not have exactly 64 characters.
    #[error("a node id has 64 hex digits, this has {0}")]
    Length(usize),
    /// A character is not a hexadecimal digit.
    #[error("a node id is made of hex digits (0-9, a-f) only")]
    NotHex,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    /// Parses 64 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseNodeIdError::Length(s.chars().count()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseNodeIdError::NotHex)?;
        Ok(Self(out))
    }
}

impl From<[u8; 32]> for NodeId {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl TryFrom<&[u8]> for NodeId {
    type Error = ParseNodeIdError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ParseNodeIdError::Length(bytes.len() * 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_id_is_sha256_of_the_public_key() {
        // SHA-256 of 32 zero bytes.
        let id = NodeId::from_public_key(&[0u8; 32]);
        assert_eq!(
            id.to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn parse_rejects_bad_input_with_a_reason() {
        assert_eq!("abc".parse::<NodeId>(), Err(ParseNodeIdError::Length(3)));
        assert_eq!(
            "g".repeat(64).parse::<NodeId>(),
            Err(ParseNodeIdError::NotHex)
        );
        // Multi-byte characters must not panic on slicing or produce a misleading length.
        assert!("é".repeat(32).parse::<NodeId>().is_err());
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in any::<[u8; 32]>()) {
            let id = NodeId::from_bytes(bytes);
            prop_assert_eq!(id.to_hex().parse::<NodeId>(), Ok(id));
            prop_assert_eq!(id.to_hex().to_uppercase().parse::<NodeId>(), Ok(id));
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = s.parse::<NodeId>();
        }

        #[test]
        fn distance_is_a_metric(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (a, b) = (NodeId::from_bytes(a), NodeId::from_bytes(b));
            prop_assert_eq!(a.distance(&b), b.distance(&a));
            prop_assert_eq!(a.distance(&a), Distance::ZERO);
            prop_assert_eq!(a.distance(&b) == Distance::ZERO, a == b);
        }
    }
}
