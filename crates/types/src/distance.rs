use std::fmt;

/// The XOR distance between two [`NodeId`](crate::NodeId)s, compared as a 256-bit big-endian
/// unsigned integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Distance([u8; 32]);

impl Distance {
    /// The distance of an id to itself.
    pub const ZERO: Distance = Distance([0; 32]);

    /// Wraps the 32 bytes of an XOR result (big-endian).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw big-endian bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Number of leading zero bits (256 for [`Distance::ZERO`]).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for byte in self.0 {
            if byte == 0 {
                n += 8;
            } else {
                return n + byte.leading_zeros();
            }
        }
        n
    }

    /// The index of the k-bucket a peer at this distance belongs to: `255 - leading_zeros`, i.e.
    /// the position of the highest set bit. `None` for the zero distance (ourselves).
    pub fn bucket_index(&self) -> Option<usize> {
        let lz = self.leading_zeros();
        (lz < 256).then(|| 255 - lz as usize)
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Distance({})", hex::encode(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_is_the_highest_set_bit() {
        assert_eq!(Distance::ZERO.bucket_index(), None);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(Distance::from_bytes(one).bucket_index(), Some(0));
        let mut top = [0u8; 32];
        top[0] = 0x80;
        assert_eq!(Distance::from_bytes(top).bucket_index(), Some(255));
        let mut mid = [0u8; 32];
        mid[1] = 0x10;
        assert_eq!(Distance::from_bytes(mid).bucket_index(), Some(255 - 11));
    }

    #[test]
    fn ordering_is_big_endian() {
        let mut a = [0u8; 32];
        a[0] = 1;
        let mut b = [0xffu8; 32];
        b[0] = 0;
        assert!(Distance::from_bytes(a) > Distance::from_bytes(b));
    }
}
