//! HKDF-SHA-256 (RFC 5869) that leaves no copy of its pseudorandom key behind.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroize;

/// Longest output HKDF-SHA-256 gives: 255 blocks of 32 bytes.
pub const MAX_OKM_LEN: usize = 255 * 32;

/// Fills `okm` with HKDF-SHA-256(`salt`, `ikm`, `info`); `None` for the salt is 32 zero bytes.
/// The PRK the extract step returns is wiped, and the HMAC state keyed with it wipes itself
/// when dropped.
///
/// # Panics
/// If `okm` is longer than [`MAX_OKM_LEN`] (every caller asks for a constant length well
/// below it).
pub fn hkdf_sha256(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], okm: &mut [u8]) {
    assert!(okm.len() <= MAX_OKM_LEN, "HKDF-SHA-256 output too long");
    let (mut prk, hk) = Hkdf::<Sha256>::extract(salt, ikm);
    prk.as_mut_slice().zeroize();
    // Cannot fail: the length was checked above.
    let _ = hk.expand(info, okm);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5869 appendix A, test case 1.
    #[test]
    fn rfc_5869_test_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        hkdf_sha256(Some(&salt), &ikm, &info, &mut okm);
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    /// A missing salt is HashLen zero bytes (RFC 5869 2.2), as test case 3 has it.
    #[test]
    fn no_salt_is_32_zero_bytes() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        hkdf_sha256(None, b"ikm", b"info", &mut a);
        hkdf_sha256(Some(&[0u8; 32]), b"ikm", b"info", &mut b);
        assert_eq!(a, b);
    }
}
