//! The `node.key` file: an identity and a database key, encrypted under a passphrase.
//!
//! ```text
//! key        = Argon2id(passphrase, salt, m_cost, t_cost, p_cost, version 0x13) -> 32 bytes
//! plaintext  = ed25519_seed (32) || database_key (32)
//! ciphertext = AES-256-GCM(key, nonce, plaintext, aad = "dp2ptcs node.key v1")
//! ```
//!
//! The file is a JSON object (`version`, `kdf`, `salt`, `nonce`, `ciphertext`, the byte strings in
//! standard padded base64). `PROTOCOL.md` specifies it byte for byte. This module only converts
//! between bytes and values; writing the file atomically with the right mode is the caller's job.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use dp2ptcs_types::limits::MAX_KEYSTORE_FILE_LEN;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::Identity;

/// The only file version this code reads and writes.
pub const VERSION: u32 = 1;
/// Associated data of the AES-256-GCM encryption.
pub const AAD: &[u8] = b"dp2ptcs node.key v1";
/// Length of the Argon2id salt.
pub const SALT_LEN: usize = 16;
/// Length of the AES-256-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the plaintext: Ed25519 seed and database key.
pub const PLAINTEXT_LEN: usize = 64;
/// Length of the AES-GCM tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;

/// Largest Argon2 memory cost accepted, in KiB (2 GiB): a damaged or hostile file cannot make
/// unlocking allocate more.
pub const MAX_M_COST_KIB: u32 = 2 * 1024 * 1024;
/// Largest Argon2 time cost accepted.
pub const MAX_T_COST: u32 = 64;
/// Largest Argon2 parallelism accepted.
pub const MAX_P_COST: u32 = 64;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// RFC 9106 section 4, second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const RFC9106_SECOND: KdfParams = KdfParams {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 4,
    };

    /// Checks the parameters are within what Argon2 accepts and what this implementation allows.
    pub fn validate(&self) -> Result<(), KeystoreError> {
        let ok = (1..=MAX_P_COST).contains(&self.p_cost)
            && (1..=MAX_T_COST).contains(&self.t_cost)
            && self.m_cost >= 8 * self.p_cost
            && self.m_cost <= MAX_M_COST_KIB;
        if ok {
            Ok(())
        } else {
            Err(KeystoreError::BadKdfParams(*self))
        }
    }

    /// Whether these parameters are at least as costly as the default in every dimension.
    pub fn is_at_least_default(&self) -> bool {
        let d = Self::RFC9106_SECOND;
        self.m_cost >= d.m_cost && self.t_cost >= d.t_cost
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::RFC9106_SECOND
    }
}

/// Everything that can be wrong with a key file or its unlocking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// Authentication failed: the passphrase is wrong, or the ciphertext was altered.
    #[error("wrong passphrase or damaged key file")]
    WrongPassphraseOrDamaged,
    /// The file is larger than any key file could be.
    #[error("the key file is too large ({0} bytes, at most {MAX_KEYSTORE_FILE_LEN}): not a DP2PTCS key file")]
    TooLarge(usize),
    /// The file is empty.
    #[error("the key file is empty")]
    Empty,
    /// The file is not the JSON object it should be (truncated, garbage, or a missing field).
    #[error("the key file is damaged or not a DP2PTCS key file: {0}")]
    Malformed(String),
    /// The file was written by a version of DP2PTCS this one does not understand.
    #[error("the key file has version {0}, this program reads version {VERSION}: upgrade DP2PTCS")]
    UnsupportedVersion(u64),
    /// The key derivation named is not Argon2id version 0x13.
    #[error("the key file uses key derivation {0:?}, only argon2id version 19 is supported")]
    UnsupportedKdf(String),
    /// The Argon2 parameters are out of range.
    #[error(
        "the key file's Argon2 parameters are out of range (m_cost {} KiB, t_cost {}, p_cost {})",
        .0.m_cost, .0.t_cost, .0.p_cost
    )]
    BadKdfParams(KdfParams),
    /// A field has the wrong length after base64 decoding.
    #[error("the key file's {field} has {actual} bytes, expected {expected}")]
    FieldLength {
        /// Which field.
        field: &'static str,
        /// Bytes found.
        actual: usize,
        /// Bytes required.
        expected: usize,
    },
}

#[derive(Serialize, Deserialize)]
struct KdfJson {
    algorithm: String,
    version: u32,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

#[derive(Serialize, Deserialize)]
struct FileJson {
    version: u64,
    kdf: KdfJson,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// Only the version, read first so that a newer file gets "unsupported version" rather than a
/// complaint about fields this version does not know.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

/// The unlocked contents of a key file. Both secrets are wiped when this is dropped.
pub struct UnlockedKeystore {
    identity: Identity,
    database_key: Zeroizing<[u8; 32]>,
}

impl UnlockedKeystore {
    /// A fresh identity and database key from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let identity = Identity::generate(rng);
        let mut database_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(database_key.as_mut());
        Self {
            identity,
            database_key,
        }
    }

    /// Assembles contents from parts (for tests and re-encryption).
    pub fn from_parts(identity: Identity, database_key: [u8; 32]) -> Self {
        Self {
            identity,
            database_key: Zeroizing::new(database_key),
        }
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The 32-byte key of the local database.
    pub fn database_key(&self) -> &[u8; 32] {
        &self.database_key
    }

    /// Encrypts these contents under `passphrase`, with a fresh salt and nonce, and returns the
    /// bytes of the key file.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        passphrase: &[u8],
        params: KdfParams,
        rng: &mut R,
    ) -> Result<Vec<u8>, KeystoreError> {
        params.validate()?;
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);

        let key = derive_key(passphrase, &salt, params)?;
        let mut plaintext = Zeroizing::new([0u8; PLAINTEXT_LEN]);
        plaintext[..32].copy_from_slice(self.identity.seed().as_ref());
        plaintext[32..].copy_from_slice(self.database_key.as_ref());
        let cipher = Aes256Gcm::new_from_slice(key.as_ref())
            .map_err(|_| KeystoreError::WrongPassphraseOrDamaged)?;
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_ref(),
                    aad: AAD,
                },
            )
            .map_err(|_| KeystoreError::WrongPassphraseOrDamaged)?;

        let file = FileJson {
            version: u64::from(VERSION),
            kdf: KdfJson {
                algorithm: "argon2id".into(),
                version: 0x13,
                m_cost: params.m_cost,
                t_cost: params.t_cost,
                p_cost: params.p_cost,
            },
            salt: B64.encode(salt),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        };
        let mut out = serde_json::to_vec_pretty(&file)
            .map_err(|e| KeystoreError::Malformed(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Decrypts a key file. The file is fully validated before the (expensive) key derivation.
    pub fn decrypt(file: &[u8], passphrase: &[u8]) -> Result<Self, KeystoreError> {
        let parsed = ParsedKeystore::parse(file)?;
        let key = derive_key(passphrase, &parsed.salt, parsed.params)?;
        let cipher = Aes256Gcm::new_from_slice(key.as_ref())
            .map_err(|_| KeystoreError::WrongPassphraseOrDamaged)?;
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&parsed.nonce),
                    Payload {
                        msg: &parsed.ciphertext,
                        aad: AAD,
                    },
                )
                .map_err(|_| KeystoreError::WrongPassphraseOrDamaged)?,
        );
        if plaintext.len() != PLAINTEXT_LEN {
            return Err(KeystoreError::FieldLength {
                field: "plaintext",
                actual: plaintext.len(),
                expected: PLAINTEXT_LEN,
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&plaintext[..32]);
        let mut database_key = Zeroizing::new([0u8; 32]);
        database_key.copy_from_slice(&plaintext[32..]);
        Ok(Self {
            identity: Identity::from_seed(&seed),
            database_key,
        })
    }
}

impl fmt::Debug for UnlockedKeystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            identity,
            database_key: _,
        } = self;
        f.debug_struct("UnlockedKeystore")
            .field("identity", identity)
            .field("database_key", &"<redacted>")
            .finish()
    }
}

/// A key file whose structure has been checked but which has not been decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKeystore {
    /// Argon2id parameters.
    pub params: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; SALT_LEN],
    /// AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// AES-GCM ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl ParsedKeystore {
    /// Validates the structure of a key file without decrypting it.
    pub fn parse(file: &[u8]) -> Result<Self, KeystoreError> {
        if file.len() > MAX_KEYSTORE_FILE_LEN {
            return Err(KeystoreError::TooLarge(file.len()));
        }
        if file.iter().all(u8::is_ascii_whitespace) {
            return Err(KeystoreError::Empty);
        }
        let version: VersionOnly =
            serde_json::from_slice(file).map_err(|e| KeystoreError::Malformed(e.to_string()))?;
        if version.version != u64::from(VERSION) {
            return Err(KeystoreError::UnsupportedVersion(version.version));
        }
        let json: FileJson =
            serde_json::from_slice(file).map_err(|e| KeystoreError::Malformed(e.to_string()))?;
        if json.kdf.algorithm != "argon2id" || json.kdf.version != 0x13 {
            return Err(KeystoreError::UnsupportedKdf(format!(
                "{} version {}",
                json.kdf.algorithm, json.kdf.version
            )));
        }
        let params = KdfParams {
            m_cost: json.kdf.m_cost,
            t_cost: json.kdf.t_cost,
            p_cost: json.kdf.p_cost,
        };
        params.validate()?;
        let salt = decode_fixed::<SALT_LEN>("salt", &json.salt)?;
        let nonce = decode_fixed::<NONCE_LEN>("nonce", &json.nonce)?;
        let ciphertext = decode_field("ciphertext", &json.ciphertext)?;
        if ciphertext.len() != PLAINTEXT_LEN + TAG_LEN {
            return Err(KeystoreError::FieldLength {
                field: "ciphertext",
                actual: ciphertext.len(),
                expected: PLAINTEXT_LEN + TAG_LEN,
            });
        }
        Ok(Self {
            params,
            salt,
            nonce,
            ciphertext,
        })
    }
}

fn decode_field(field: &'static str, text: &str) -> Result<Vec<u8>, KeystoreError> {
    B64.decode(text)
        .map_err(|e| KeystoreError::Malformed(format!("{field} is not base64: {e}")))
}

fn decode_fixed<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], KeystoreError> {
    let bytes = decode_field(field, text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| KeystoreError::FieldLength {
        field,
        actual: bytes.len(),
        expected: N,
    })
}

fn derive_key(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let argon_params = argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|_| KeystoreError::BadKdfParams(params))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|_| KeystoreError::BadKdfParams(params))?;
    Ok(key)
}

/// Derives the Argon2id key of a key file, exposed for the keystore benchmark.
#[doc(hidden)]
pub fn bench_derive_key(passphrase: &[u8], salt: &[u8; SALT_LEN], params: KdfParams) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(key) = derive_key(passphrase, salt, params) {
        out.copy_from_slice(key.as_ref());
    }
    let copy = out;
    out.zeroize();
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// The lanes of Argon2id run in parallel here (four threads for the default four lanes), and
    /// must give the key the reference implementation gives: key files written before, or by
    /// another implementation, must still open.
    #[test]
    fn four_lanes_derive_what_the_reference_implementation_derives() {
        // The reference C implementation of Argon2id, version 0x13, with these inputs.
        const REFERENCE: &str = "5141949fd9243397d73a77b840cf2d718c142cd490d88e54a115ca0ac0dd9a0f";
        let params = KdfParams {
            m_cost: 256,
            t_cost: 2,
            p_cost: 4,
        };
        let salt: [u8; SALT_LEN] = core::array::from_fn(|i| i as u8);
        let key = derive_key(b"correct horse battery staple", &salt, params).unwrap();
        assert_eq!(hex::encode(*key), REFERENCE);
    }

    /// Cheap parameters so the tests run fast; the format is the same.
    const FAST: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn sample() -> (UnlockedKeystore, Vec<u8>) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let ks = UnlockedKeystore::generate(&mut rng);
        let file = ks
            .encrypt(b"correct horse battery staple", FAST, &mut rng)
            .unwrap();
        (ks, file)
    }

    #[test]
    fn round_trip_recovers_identity_and_database_key() {
        let (ks, file) = sample();
        let back = UnlockedKeystore::decrypt(&file, b"correct horse battery staple").unwrap();
        assert_eq!(back.identity().node_id(), ks.identity().node_id());
        assert_eq!(back.database_key(), ks.database_key());
    }

    #[test]
    fn wrong_passphrase_is_reported_as_such() {
        let (_, file) = sample();
        let err = UnlockedKeystore::decrypt(&file, b"wrong").unwrap_err();
        assert!(matches!(err, KeystoreError::WrongPassphraseOrDamaged));
        assert_eq!(err.to_string(), "wrong passphrase or damaged key file");
    }

    #[test]
    fn every_flipped_ciphertext_bit_is_detected() {
        let (_, file) = sample();
        let parsed = ParsedKeystore::parse(&file).unwrap();
        for byte in [0, 31, 63, 79] {
            let mut ct = parsed.ciphertext.clone();
            ct[byte] ^= 0x01;
            let text = String::from_utf8(file.clone())
                .unwrap()
                .replace(&B64.encode(&parsed.ciphertext), &B64.encode(&ct));
            let err = UnlockedKeystore::decrypt(text.as_bytes(), b"correct horse battery staple")
                .unwrap_err();
            assert!(
                matches!(err, KeystoreError::WrongPassphraseOrDamaged),
                "{err}"
            );
        }
    }

    #[test]
    fn structural_damage_is_named() {
        let (_, file) = sample();
        let text = String::from_utf8(file.clone()).unwrap();
        assert!(matches!(
            ParsedKeystore::parse(b""),
            Err(KeystoreError::Empty)
        ));
        assert!(matches!(
            ParsedKeystore::parse(&file[..file.len() / 2]),
            Err(KeystoreError::Malformed(_))
        ));
        assert!(matches!(
            ParsedKeystore::parse(b"\x00\xffgarbage"),
            Err(KeystoreError::Malformed(_))
        ));
        let v2 = text.replacen("\"version\": 1", "\"version\": 2", 1);
        assert!(matches!(
            ParsedKeystore::parse(v2.as_bytes()),
            Err(KeystoreError::UnsupportedVersion(2))
        ));
        let argon2i = text.replace("argon2id", "argon2i");
        assert!(matches!(
            ParsedKeystore::parse(argon2i.as_bytes()),
            Err(KeystoreError::UnsupportedKdf(_))
        ));
        let huge = text.replace("\"m_cost\": 64", "\"m_cost\": 4000000000");
        assert!(matches!(
            ParsedKeystore::parse(huge.as_bytes()),
            Err(KeystoreError::BadKdfParams(_))
        ));
        let big = vec![b' '; MAX_KEYSTORE_FILE_LEN + 1];
        assert!(matches!(
            ParsedKeystore::parse(&big),
            Err(KeystoreError::TooLarge(_))
        ));
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let (ks, _) = sample();
        let dbg = format!("{ks:?}");
        assert!(!dbg.contains(&hex::encode(ks.database_key())));
        assert!(!dbg.contains(&hex::encode(*ks.identity().seed())));
        // Byte-list form, as a derived Debug would print it.
        assert!(!dbg.contains(&format!("{:?}", &ks.database_key()[..4])));
    }

    #[test]
    fn default_parameters_are_rfc9106_second_recommendation() {
        assert_eq!(
            KdfParams::default(),
            KdfParams {
                m_cost: 65536,
                t_cost: 3,
                p_cost: 4
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = ParsedKeystore::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_mutated_files(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let (_, file) = sample();
            let mut mutated = file.clone();
            let i = pos.index(mutated.len());
            mutated[i] = byte;
            let _ = ParsedKeystore::parse(&mutated);
            // Cutting anywhere before the closing brace (the file ends with "}\n") breaks it.
            let truncated = &file[..cut.index(file.len() - 1)];
            prop_assert!(ParsedKeystore::parse(truncated).is_err());
        }

        #[test]
        fn decrypt_of_a_mutated_file_never_panics_and_never_returns_other_keys(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let (ks, file) = sample();
            let mut mutated = file.clone();
            let i = pos.index(mutated.len());
            mutated[i] = byte;
            if let Ok(back) = UnlockedKeystore::decrypt(&mutated, b"correct horse battery staple") {
                // Only a mutation that leaves the meaning unchanged (e.g. whitespace) may succeed.
                prop_assert_eq!(back.database_key(), ks.database_key());
                prop_assert_eq!(back.identity().node_id(), ks.identity().node_id());
            }
        }
    }
}
