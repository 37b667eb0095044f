use std::fmt;

use rand_core::{CryptoRng, RngCore};

/// A 16-byte message identifier, used for end-to-end receipts and deduplication. A receiver
/// takes any 16 bytes; [`MessageId::new`] makes the ids this node sends.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId([u8; 16]);

impl MessageId {
    /// Length of a message id in bytes.
    pub const LEN: usize = 16;

    /// A fresh id for a message written at `now_ms` (milliseconds since the Unix epoch): the
    /// time in its first 6 bytes (big-endian), 80 random bits from the caller's RNG after it.
    ///
    /// Ids of one sender therefore sort by the time they were made, so the indexes that find a
    /// message by its id (at the sender and at the receiver) grow at their end instead of at
    /// random places: a commit writes one index page for a batch of messages instead of one
    /// per message. The id travels only inside the end-to-end encryption (a mailbox item is
    /// named by a hash of it), so only the two ends see the time, and no one relies on it: a
    /// receiver treats the id as opaque. Two ids from the same millisecond differ in 80 random
    /// bits.
    pub fn new<R: RngCore + CryptoRng>(now_ms: u64, rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
        rng.fill_bytes(&mut bytes[6..]);
        Self(bytes)
    }

    /// A fresh id of 128 random bits drawn from the caller's RNG.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps 16 raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::str::FromStr for MessageId {
    type Err = hex::FromHexError;

    /// Parses 32 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes)?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_input() {
        let id = MessageId::from_bytes([0xab; 16]);
        assert_eq!(id.to_hex().parse::<MessageId>().unwrap(), id);
        assert!("abc".parse::<MessageId>().is_err());
        assert!("zz".repeat(16).parse::<MessageId>().is_err());
    }

    #[test]
    fn new_ids_sort_by_time_and_differ_within_a_millisecond() {
        let mut rng = rand_core::OsRng;
        let t = 1_795_000_000_123u64;
        let a = MessageId::new(t, &mut rng);
        assert_eq!(&a.as_bytes()[..6], &t.to_be_bytes()[2..]);
        // Later ids sort after earlier ones, whatever their random part.
        for later in [t + 1, t + 1000, (1 << 48) - 1] {
            assert!(MessageId::new(later, &mut rng) > a);
        }
        let same: std::collections::HashSet<MessageId> =
            (0..1000).map(|_| MessageId::new(t, &mut rng)).collect();
        assert_eq!(same.len(), 1000);
    }
}
