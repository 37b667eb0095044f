//! The plaintext of a decrypted message, wiped when dropped.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A decrypted message. Its bytes (and any spare capacity of its buffer) are zeroized when it is
/// dropped; `Debug` shows only the length.
///
/// The wipe goes through `zeroize`'s slice implementation, which clears the whole buffer at once
/// and then keeps the compiler from eliding the writes. (`Zeroizing<Vec<u8>>` clears a vector one
/// volatile byte write at a time, which for a 64 KiB message costs about a tenth of decrypting it.)
#[derive(Clone)]
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The same bytes in a [`Zeroizing`] vector, for callers that keep one (no copy).
    pub fn into_zeroizing(mut self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(std::mem::take(&mut self.0))
    }
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Zeroize for Plaintext {
    fn zeroize(&mut self) {
        self.0.as_mut_slice().zeroize();
        self.0.spare_capacity_mut().zeroize();
        self.0.clear();
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for Plaintext {}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroize_empties_and_debug_hides_the_bytes() {
        let mut p = Plaintext::new(b"secret".to_vec());
        assert_eq!(&*p, b"secret");
        assert_eq!(format!("{p:?}"), "Plaintext(<6 bytes>)");
        let z = p.clone().into_zeroizing();
        assert_eq!(z.as_slice(), b"secret");
        p.zeroize();
        assert!(p.is_empty());
    }
}
