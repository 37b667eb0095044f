//! Safety numbers: what two people compare to be sure each holds the other's real key.
//!
//! Built like Signal's numeric fingerprint (version 0, 5200 iterations of SHA-512):
//!
//! ```text
//! H_0 = SHA-512(0x00 0x00 || public_key || node_id)
//! H_i = SHA-512(H_{i-1} || public_key)            for i = 1 .. 5199
//! fingerprint(key) = H_5199
//! digits(fp) = for each of the six 5-byte chunks of fp[0..30]:
//!              big-endian integer mod 100000, written as 5 decimal digits
//! safety number = the two 30-digit strings, the smaller first, concatenated
//! ```
//!
//! Both sides therefore see the same 60 digits. The QR form is directional (the scanner's own
//! fingerprint must appear second), so scanning one's own screen never "verifies" anything.

use std::fmt;

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::PublicIdentity;

/// Number of SHA-512 invocations per fingerprint.
pub const ITERATIONS: usize = 5200;
/// Fingerprint format version, hashed first as two big-endian bytes.
pub const FINGERPRINT_VERSION: u16 = 0;
/// Prefix of the QR code text. Upper case so the QR code uses the compact alphanumeric mode.
pub const QR_PREFIX: &str = "DP2PTCS-SN:1:";

/// The safety number of a pair of identities, as seen from one of them.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    local: [u8; 32],
    remote: [u8; 32],
}

/// Why a scanned safety-number code does not confirm the contact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SafetyNumberError {
    /// The QR code is not a DP2PTCS safety-number code.
    #[error("this QR code is not a DP2PTCS safety number")]
    NotASafetyNumber,
    /// The code is our own (a photo of our own screen).
    #[error("this is your own safety-number code; scan the code shown on your contact's device")]
    OwnCode,
    /// The code does not match: the keys differ.
    #[error("SAFETY NUMBERS DO NOT MATCH: the key you hold for this contact is not the key their device holds")]
    Mismatch,
    /// Typed digits are not 60 decimal digits.
    #[error("a safety number has 60 digits, {0} were given")]
    DigitCount(usize),
}

fn fingerprint(key: &PublicIdentity) -> [u8; 64] {
    let pk = key.to_bytes();
    let mut hash: [u8; 64] = Sha512::new()
        .chain_update(FINGERPRINT_VERSION.to_be_bytes())
        .chain_update(pk)
        .chain_update(key.node_id().as_bytes())
        .finalize()
        .into();
    for _ in 1..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(pk)
            .finalize()
            .into();
    }
    hash
}

fn digits(fp: &[u8; 32]) -> String {
    let mut out = String::with_capacity(30);
    for chunk in fp[..30].chunks_exact(5) {
        let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        out.push_str(&format!("{:05}", value % 100_000));
    }
    out
}

fn truncate(fp: [u8; 64]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&fp[..32]);
    out
}

impl SafetyNumber {
    /// The safety number between us (`local`) and a contact (`remote`).
    pub fn new(local: &PublicIdentity, remote: &PublicIdentity) -> Self {
        Self {
            local: truncate(fingerprint(local)),
            remote: truncate(fingerprint(remote)),
        }
    }

    /// The 60 digits, the same on both sides.
    pub fn digits(&self) -> String {
        let (a, b) = (digits(&self.local), digits(&self.remote));
        if a <= b {
            a + &b
        } else {
            b + &a
        }
    }

    /// The 60 digits in 12 groups of 5, separated by spaces.
    pub fn grouped(&self) -> String {
        let d = self.digits();
        d.as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The text of our QR code: prefix, our fingerprint, `:`, theirs, in upper-case hex.
    pub fn qr_text(&self) -> String {
        format!(
            "{QR_PREFIX}{}:{}",
            hex::encode_upper(self.local),
            hex::encode_upper(self.remote)
        )
    }

    /// Checks the text of the QR code shown on the contact's device. It must hold their
    /// fingerprint first and ours second.
    pub fn check_scanned(&self, scanned: &str) -> Result<(), SafetyNumberError> {
        let body = scanned
            .trim()
            .strip_prefix(QR_PREFIX)
            .ok_or(SafetyNumberError::NotASafetyNumber)?;
        let (theirs, ours) = body
            .split_once(':')
            .ok_or(SafetyNumberError::NotASafetyNumber)?;
        let mut their_fp = [0u8; 32];
        let mut our_fp = [0u8; 32];
        hex::decode_to_slice(theirs, &mut their_fp)
            .and_then(|()| hex::decode_to_slice(ours, &mut our_fp))
            .map_err(|_| SafetyNumberError::NotASafetyNumber)?;
        let matches = their_fp.ct_eq(&self.remote) & our_fp.ct_eq(&self.local);
        if bool::from(matches) {
            return Ok(());
        }
        if bool::from(their_fp.ct_eq(&self.local) & our_fp.ct_eq(&self.remote)) {
            return Err(SafetyNumberError::OwnCode);
        }
        Err(SafetyNumberError::Mismatch)
    }

    /// Checks 60 digits read out or typed by a person; spaces and dashes are ignored.
    pub fn check_digits(&self, typed: &str) -> Result<(), SafetyNumberError> {
        let cleaned: String = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        if cleaned.len() != 60 || !cleaned.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SafetyNumberError::DigitCount(cleaned.chars().count()));
        }
        if bool::from(cleaned.as_bytes().ct_eq(self.digits().as_bytes())) {
            Ok(())
        } else {
            Err(SafetyNumberError::Mismatch)
        }
    }
}

impl fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.grouped())
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({})", self.grouped())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use proptest::prelude::*;

    fn ids() -> (PublicIdentity, PublicIdentity) {
        (
            Identity::from_seed(&[1; 32]).public(),
            Identity::from_seed(&[2; 32]).public(),
        )
    }

    #[test]
    fn both_sides_see_the_same_sixty_digits() {
        let (a, b) = ids();
        let ab = SafetyNumber::new(&a, &b);
        let ba = SafetyNumber::new(&b, &a);
        assert_eq!(ab.digits(), ba.digits());
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|c| c.is_ascii_digit()));
        let grouped = ab.grouped();
        assert_eq!(grouped.split(' ').count(), 12);
        assert!(grouped.split(' ').all(|g| g.len() == 5));
    }

    #[test]
    fn scanning_the_peers_code_matches_and_ours_does_not() {
        let (a, b) = ids();
        let ab = SafetyNumber::new(&a, &b);
        let ba = SafetyNumber::new(&b, &a);
        assert_eq!(ab.check_scanned(&ba.qr_text()), Ok(()));
        assert_eq!(ba.check_scanned(&ab.qr_text()), Ok(()));
        assert_eq!(
            ab.check_scanned(&ab.qr_text()),
            Err(SafetyNumberError::OwnCode)
        );
        let mallory = Identity::from_seed(&[3; 32]).public();
        let am = SafetyNumber::new(&mallory, &a);
        assert_eq!(
            ab.check_scanned(&am.qr_text()),
            Err(SafetyNumberError::Mismatch)
        );
        assert_eq!(
            ab.check_scanned("hello"),
            Err(SafetyNumberError::NotASafetyNumber)
        );
        assert_eq!(
            ab.check_scanned(&format!("{QR_PREFIX}zz:zz")),
            Err(SafetyNumberError::NotASafetyNumber)
        );
    }

    #[test]
    fn typed_digits() {
        let (a, b) = ids();
        let sn = SafetyNumber::new(&a, &b);
        assert_eq!(sn.check_digits(&sn.grouped()), Ok(()));
        let mut wrong = sn.digits().into_bytes();
        wrong[59] = if wrong[59] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            sn.check_digits(std::str::from_utf8(&wrong).unwrap()),
            Err(SafetyNumberError::Mismatch)
        );
        assert_eq!(
            sn.check_digits("123"),
            Err(SafetyNumberError::DigitCount(3))
        );
    }

    #[test]
    fn known_answer() {
        // Pinned so that a change to the construction cannot go unnoticed; PROTOCOL.md and
        // testdata/safety_number.json carry the same vector.
        let (a, b) = ids();
        let sn = SafetyNumber::new(&a, &b);
        let vector: serde_json::Value =
            serde_json::from_str(include_str!("../../../testdata/safety_number.json")).unwrap();
        assert_eq!(vector["public_key_a"], hex::encode(a.to_bytes()));
        assert_eq!(vector["public_key_b"], hex::encode(b.to_bytes()));
        assert_eq!(vector["safety_number"], sn.grouped());
        assert_eq!(vector["qr_text_from_a"], sn.qr_text());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn check_scanned_never_panics(s in ".{0,200}") {
            let (a, b) = ids();
            let _ = SafetyNumber::new(&a, &b).check_scanned(&s);
            let _ = SafetyNumber::new(&a, &b).check_digits(&s);
        }
    }
}
