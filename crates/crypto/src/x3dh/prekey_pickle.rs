//! Prekey pickles: the versioned persistent form of a [`PreKeyStore`], and its sealed form.
//!
//! A pickle is a UTF-8 JSON object (readers ignore unknown fields; fields added in later
//! versions are optional):
//!
//! ```text
//! {
//!   "version": 1,
//!   "identity": hex(32),                     // Ed25519 public key of the owner
//!   "signed_prekeys": [                      // the current one first, then the rotated-out ones,
//!     {                                      // newest first (at most 1 + MAX_PREVIOUS_SIGNED_PREKEYS)
//!       "id": u32,
//!       "secret": hex(32),                   // X25519 secret; the public key is derived
//!       "signature": hex(64),                // Ed25519 signature of the identity (section 7.1)
//!       "created_at": u64,                   // seconds
//!       "retired_at": u64 | null,            // null for the current one only
//!       "seen": [hex(32), ...]               // ephemeral keys of accepted initial messages
//!     }, ...                                 // without one-time prekey (at most MAX_SEEN_INITIAL_MESSAGES)
//!   ],
//!   "one_time_prekeys": [ { "id": u32, "secret": hex(32) }, ... ],   // at most MAX_ONE_TIME_PREKEYS
//!   "next_one_time_id": u32
//! }
//! ```
//!
//! hex is lower-case, no prefix. A reader checks every bound, refuses duplicate ids, and verifies
//! every signed prekey's signature under `identity`. A sealed pickle is
//! [`crate::seal::seal`]`(key, "DP2PTCS prekey store v1", pickle)`: its own context, so a sealed
//! session pickle never opens as a prekey store or the reverse. The plaintext pickle holds every
//! prekey secret: it is returned as `Zeroizing<Vec<u8>>`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::prekey::{
    signed_prekey_signature_message, SignedPreKey, MAX_ONE_TIME_PREKEYS,
    MAX_PREVIOUS_SIGNED_PREKEYS, MAX_SEEN_INITIAL_MESSAGES,
};
use super::PreKeyStore;
use crate::ratchet::pickle::Hex;
use crate::seal::{self, SealError};
use crate::{PublicIdentity, PublicKeyError};

/// The current prekey pickle version.
pub const PREKEY_PICKLE_VERSION: u32 = 1;
/// The `context` a prekey pickle is sealed under.
pub const PREKEY_SEAL_CONTEXT: &[u8] = b"DP2PTCS prekey store v1";

/// Why a prekey pickle does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreKeyPickleError {
    /// Not a pickle (malformed JSON or a field of the wrong form). Only the position is kept, so
    /// the error never echoes secret bytes.
    #[error("malformed prekey pickle (line {line}, column {column})")]
    Malformed {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// A version this implementation does not know.
    #[error("unknown prekey pickle version {0}")]
    UnknownVersion(u32),
    /// The identity key is not a valid Ed25519 public key.
    #[error("prekey pickle identity key: {0}")]
    Identity(#[from] PublicKeyError),
    /// No signed prekey, or a current one marked retired, or a rotated-out one without a
    /// retirement time.
    #[error("prekey pickle has an invalid list of signed prekeys")]
    SignedPreKeys,
    /// More entries of a kind than a store may hold.
    #[error("prekey pickle holds {count} {what}, more than {max}")]
    TooMany {
        /// What is counted.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// The same id twice.
    #[error("prekey pickle has {what} id {id} twice")]
    DuplicateId {
        /// Which kind of prekey.
        what: &'static str,
        /// The id.
        id: u32,
    },
    /// A signed prekey's signature does not verify under the identity.
    #[error("prekey pickle: signed prekey {0} has a bad signature")]
    BadSignature(u32),
    /// The sealed pickle does not open.
    #[error("sealed prekey pickle: {0}")]
    Seal(#[from] SealError),
}

impl From<serde_json::Error> for PreKeyPickleError {
    fn from(e: serde_json::Error) -> Self {
        PreKeyPickleError::Malformed {
            line: e.line(),
            column: e.column(),
        }
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct SignedPreKeyPickle {
    id: u32,
    secret: Hex<32>,
    signature: Hex<64>,
    created_at: u64,
    retired_at: Option<u64>,
    seen: Vec<Hex<32>>,
}

#[derive(Serialize, Deserialize)]
struct OneTimePreKeyPickle {
    id: u32,
    secret: Hex<32>,
}

#[derive(Serialize, Deserialize)]
struct PreKeyPickleV1 {
    version: u32,
    identity: Hex<32>,
    signed_prekeys: Vec<SignedPreKeyPickle>,
    one_time_prekeys: Vec<OneTimePreKeyPickle>,
    next_one_time_id: u32,
}

fn signed_to_pickle(k: &SignedPreKey, retired_at: Option<u64>) -> SignedPreKeyPickle {
    SignedPreKeyPickle {
        id: k.id,
        secret: Hex(k.secret.to_bytes()),
        signature: Hex(k.signature),
        created_at: k.created_at,
        retired_at,
        seen: k.seen.iter().map(|e| Hex(*e)).collect(),
    }
}

fn signed_from_pickle(
    identity: &PublicIdentity,
    p: &SignedPreKeyPickle,
) -> Result<SignedPreKey, PreKeyPickleError> {
    if p.seen.len() > MAX_SEEN_INITIAL_MESSAGES {
        return Err(PreKeyPickleError::TooMany {
            what: "seen initial messages",
            count: p.seen.len(),
            max: MAX_SEEN_INITIAL_MESSAGES,
        });
    }
    let secret = StaticSecret::from(p.secret.0);
    let public = X25519PublicKey::from(&secret).to_bytes();
    let msg = signed_prekey_signature_message(p.id, &public);
    let sig = ed25519_dalek::Signature::from_bytes(&p.signature.0);
    if identity.verifying_key().verify_strict(&msg, &sig).is_err() {
        return Err(PreKeyPickleError::BadSignature(p.id));
    }
    Ok(SignedPreKey {
        id: p.id,
        secret,
        public,
        signature: p.signature.0,
        created_at: p.created_at,
        seen: p.seen.iter().map(|e| e.0).collect::<BTreeSet<_>>(),
    })
}

impl PreKeyStore {
    /// The plaintext pickle (module docs). It holds every prekey secret.
    pub fn pickle(&self) -> Zeroizing<Vec<u8>> {
        let mut signed_prekeys = Vec::with_capacity(1 + self.previous.len());
        signed_prekeys.push(signed_to_pickle(&self.current, None));
        signed_prekeys.extend(
            self.previous
                .iter()
                .map(|(k, retired)| signed_to_pickle(k, Some(*retired))),
        );
        let seen: usize = signed_prekeys.iter().map(|k| k.seen.len()).sum();
        let p = PreKeyPickleV1 {
            version: PREKEY_PICKLE_VERSION,
            identity: Hex(self.identity.to_bytes()),
            one_time_prekeys: self
                .one_time
                .iter()
                .map(|(id, s)| OneTimePreKeyPickle {
                    id: *id,
                    secret: Hex(s.to_bytes()),
                })
                .collect(),
            next_one_time_id: self.next_one_time_id,
            signed_prekeys,
        };
        // Room for everything, so the buffer is never reallocated (leaving a copy behind).
        let capacity = 256 + 400 * p.signed_prekeys.len() + 70 * seen + 100 * self.one_time.len();
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        // Serializing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &p);
        out
    }

    /// Loads a pickle made by [`PreKeyStore::pickle`], checking every bound and signature.
    /// Never panics, whatever the input.
    pub fn from_pickle(bytes: &[u8]) -> Result<Self, PreKeyPickleError> {
        let VersionOnly { version } = serde_json::from_slice(bytes)?;
        if version != PREKEY_PICKLE_VERSION {
            return Err(PreKeyPickleError::UnknownVersion(version));
        }
        let p: PreKeyPickleV1 = serde_json::from_slice(bytes)?;
        let identity = PublicIdentity::from_bytes(&p.identity.0)?;
        let max_signed = 1 + MAX_PREVIOUS_SIGNED_PREKEYS;
        if p.signed_prekeys.len() > max_signed {
            return Err(PreKeyPickleError::TooMany {
                what: "signed prekeys",
                count: p.signed_prekeys.len(),
                max: max_signed,
            });
        }
        if p.one_time_prekeys.len() > MAX_ONE_TIME_PREKEYS {
            return Err(PreKeyPickleError::TooMany {
                what: "one-time prekeys",
                count: p.one_time_prekeys.len(),
                max: MAX_ONE_TIME_PREKEYS,
            });
        }
        let Some((first, rest)) = p.signed_prekeys.split_first() else {
            return Err(PreKeyPickleError::SignedPreKeys);
        };
        if first.retired_at.is_some() {
            return Err(PreKeyPickleError::SignedPreKeys);
        }
        let mut ids = BTreeSet::new();
        let mut check_id = |id| {
            if ids.insert(id) {
                Ok(())
            } else {
                Err(PreKeyPickleError::DuplicateId {
                    what: "signed prekey",
                    id,
                })
            }
        };
        check_id(first.id)?;
        let current = signed_from_pickle(&identity, first)?;
        let mut previous = VecDeque::with_capacity(rest.len());
        for k in rest {
            let retired = k.retired_at.ok_or(PreKeyPickleError::SignedPreKeys)?;
            check_id(k.id)?;
            previous.push_back((signed_from_pickle(&identity, k)?, retired));
        }
        let mut one_time = BTreeMap::new();
        for k in &p.one_time_prekeys {
            if one_time
                .insert(k.id, StaticSecret::from(k.secret.0))
                .is_some()
            {
                return Err(PreKeyPickleError::DuplicateId {
                    what: "one-time prekey",
                    id: k.id,
                });
            }
        }
        Ok(PreKeyStore {
            identity,
            current,
            previous,
            one_time,
            next_one_time_id: p.next_one_time_id,
        })
    }

    /// The pickle sealed under `key` (XChaCha20-Poly1305, [`PREKEY_SEAL_CONTEXT`]), for the
    /// store.
    pub fn seal<R: RngCore + CryptoRng>(&self, key: &[u8; 32], rng: &mut R) -> Vec<u8> {
        seal::seal(key, PREKEY_SEAL_CONTEXT, &self.pickle(), rng)
    }

    /// Opens a sealed pickle made by [`PreKeyStore::seal`].
    pub fn open_sealed(key: &[u8; 32], sealed: &[u8]) -> Result<Self, PreKeyPickleError> {
        let pickle = seal::open(key, PREKEY_SEAL_CONTEXT, sealed)?;
        Self::from_pickle(&pickle)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::ratchet::{Session, PICKLE_SEAL_CONTEXT};
    use crate::x3dh::{initiate, respond, PreKeyBundle, X3dhError};
    use crate::Identity;

    /// A store with two rotations, one-time prekeys and accepted initial messages.
    fn busy_store(
        seed: u64,
    ) -> (
        ChaCha20Rng,
        Identity,
        Identity,
        PreKeyStore,
        Vec<PreKeyBundle>,
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let alice = Identity::generate(&mut rng);
        let bob = Identity::generate(&mut rng);
        let mut store = PreKeyStore::new_at(&mut rng, &bob, 100);
        let mut bundles = vec![store.bundle(None)];
        for t in [200, 300] {
            let a = initiate(&mut rng, &alice, &store.bundle(None)).unwrap();
            respond(&bob, &mut store, &a.initial_message, t).unwrap();
            store.rotate_signed_prekey(&mut rng, &bob, t).unwrap();
            bundles.push(store.bundle(None));
        }
        store.generate_one_time_prekeys(&mut rng, 5);
        (rng, alice, bob, store, bundles)
    }

    #[test]
    fn round_trip_keeps_every_key_and_replay_set() {
        let (mut rng, alice, bob, mut store, bundles) = busy_store(1);
        let a = initiate(&mut rng, &alice, &bundles[1]).unwrap();
        respond(&bob, &mut store, &a.initial_message, 400).unwrap();
        let pickle = store.pickle();
        let mut loaded = PreKeyStore::from_pickle(&pickle).unwrap();
        assert_eq!(loaded.pickle().as_slice(), pickle.as_slice());
        assert_eq!(loaded.signed_prekey_id(), 3);
        assert_eq!(loaded.previous_signed_prekey_ids(), vec![2, 1]);
        assert_eq!(loaded.one_time_prekey_count(), 5);
        assert_eq!(loaded.bundle(None), store.bundle(None));
        // The replay set survived.
        assert_eq!(
            respond(&bob, &mut loaded, &a.initial_message, 400).unwrap_err(),
            X3dhError::ReplayedInitialMessage
        );
        // Every signed prekey still works, one-time prekeys too.
        for b in &bundles {
            let a = initiate(&mut rng, &alice, b).unwrap();
            let out = respond(&bob, &mut loaded, &a.initial_message, 400).unwrap();
            assert_eq!(out.shared_secret.as_bytes(), a.shared_secret.as_bytes());
        }
        let otk = loaded.bundle(Some(3));
        let a = initiate(&mut rng, &alice, &otk).unwrap();
        respond(&bob, &mut loaded, &a.initial_message, 400).unwrap();
        assert_eq!(loaded.one_time_prekey_count(), 4);
    }

    #[test]
    fn sealed_form_has_its_own_context() {
        let (mut rng, _, _, store, _) = busy_store(2);
        let key = [5u8; 32];
        let sealed = store.seal(&key, &mut rng);
        let opened = PreKeyStore::open_sealed(&key, &sealed).unwrap();
        assert_eq!(opened.pickle().as_slice(), store.pickle().as_slice());
        assert_eq!(
            PreKeyStore::open_sealed(&[6u8; 32], &sealed).unwrap_err(),
            PreKeyPickleError::Seal(SealError::Authentication)
        );
        // Neither a session pickle nor a prekey store opens as the other.
        assert_ne!(PICKLE_SEAL_CONTEXT, PREKEY_SEAL_CONTEXT);
        assert!(Session::open_sealed(&key, &sealed).is_err());
        let as_session = seal::seal(&key, PICKLE_SEAL_CONTEXT, &store.pickle(), &mut rng);
        assert_eq!(
            PreKeyStore::open_sealed(&key, &as_session).unwrap_err(),
            PreKeyPickleError::Seal(SealError::Authentication)
        );
    }

    fn edit(pickle: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(pickle).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn invalid_pickles_give_typed_errors() {
        let (_, _, _, store, _) = busy_store(3);
        let p = store.pickle();
        let load = |b: &[u8]| PreKeyStore::from_pickle(b).unwrap_err();
        assert!(matches!(load(b"{"), PreKeyPickleError::Malformed { .. }));
        assert_eq!(
            load(&edit(&p, |v| v["version"] = 2.into())),
            PreKeyPickleError::UnknownVersion(2)
        );
        assert_eq!(
            load(&edit(&p, |v| v["signed_prekeys"][1]["signature"] =
                hex::encode([7u8; 64]).into())),
            PreKeyPickleError::BadSignature(2)
        );
        assert_eq!(
            load(&edit(&p, |v| v["signed_prekeys"][0]["secret"] =
                hex::encode([7u8; 32]).into())),
            PreKeyPickleError::BadSignature(3)
        );
        assert_eq!(
            load(&edit(&p, |v| v["signed_prekeys"] = serde_json::json!([]))),
            PreKeyPickleError::SignedPreKeys
        );
        assert_eq!(
            load(&edit(&p, |v| v["signed_prekeys"][0]["retired_at"] = 5.into())),
            PreKeyPickleError::SignedPreKeys
        );
        assert_eq!(
            load(&edit(&p, |v| v["signed_prekeys"][1]["retired_at"] =
                serde_json::Value::Null)),
            PreKeyPickleError::SignedPreKeys
        );
        assert_eq!(
            load(&edit(&p, |v| {
                let first = v["one_time_prekeys"][0].clone();
                v["one_time_prekeys"].as_array_mut().unwrap().push(first);
            })),
            PreKeyPickleError::DuplicateId {
                what: "one-time prekey",
                id: 1
            }
        );
        assert_eq!(
            load(&edit(&p, |v| {
                let first = v["signed_prekeys"][1].clone();
                v["signed_prekeys"].as_array_mut().unwrap().push(first);
            })),
            PreKeyPickleError::DuplicateId {
                what: "signed prekey",
                id: 2
            }
        );
        let too_many = edit(&p, |v| {
            let one = v["one_time_prekeys"][0].clone();
            let list: Vec<_> = (0..=MAX_ONE_TIME_PREKEYS as u32)
                .map(|i| {
                    let mut k = one.clone();
                    k["id"] = i.into();
                    k
                })
                .collect();
            v["one_time_prekeys"] = list.into();
        });
        assert!(matches!(
            load(&too_many),
            PreKeyPickleError::TooMany {
                what: "one-time prekeys",
                ..
            }
        ));
        let seen = edit(&p, |v| {
            let list: Vec<_> = (0..=MAX_SEEN_INITIAL_MESSAGES)
                .map(|i| hex::encode([i as u8; 32]).into())
                .collect::<Vec<serde_json::Value>>();
            v["signed_prekeys"][0]["seen"] = list.into();
        });
        assert!(matches!(
            load(&seen),
            PreKeyPickleError::TooMany {
                what: "seen initial messages",
                ..
            }
        ));
        // An error never echoes secret bytes.
        let secret = v_secret(&p);
        let bad = edit(&p, |v| v["signed_prekeys"][0]["secret"] = "zz".into());
        let text = load(&bad).to_string();
        assert!(!text.contains(&secret[..8]), "{text}");
    }

    fn v_secret(p: &[u8]) -> String {
        let v: serde_json::Value = serde_json::from_slice(p).unwrap();
        v["signed_prekeys"][0]["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn from_pickle_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            let _ = PreKeyStore::from_pickle(&bytes);
        }

        #[test]
        fn from_pickle_never_panics_on_damaged_pickles(
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let (_, _, _, store, _) = busy_store(9);
            let mut p = store.pickle().to_vec();
            let i = pos.index(p.len());
            p[i] = byte;
            let _ = PreKeyStore::from_pickle(&p);
            let _ = PreKeyStore::from_pickle(&p[..cut.index(p.len())]);
        }

        #[test]
        fn open_sealed_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = PreKeyStore::open_sealed(&[1u8; 32], &bytes);
        }
    }
}
