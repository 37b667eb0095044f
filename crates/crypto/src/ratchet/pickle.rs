//! Session pickles: the versioned persistent form of a [`Session`], and its sealed form.
//!
//! A pickle is a UTF-8 JSON object (field order as below; readers ignore unknown fields, and
//! fields added in later versions are optional):
//!
//! ```text
//! {
//!   "version": 1,
//!   "associated_data": hex(64 bytes),              // X3DH AD
//!   "root_key": hex(32),                           // RK
//!   "sending_ratchet_secret": hex(32),             // DHs secret (X25519 scalar); public is derived
//!   "sending_chain_key": hex(32) | null,           // CKs
//!   "sending_index": u32,                          // Ns
//!   "previous_sending_length": u32,                // PN
//!   "receiving_ratchet_key": hex(32) | null,       // DHr
//!   "receiving_chain_key": hex(32) | null,         // CKr
//!   "receiving_index": u32,                        // Nr
//!   "skipped_keys": [ { "ratchet_key": hex(32), "index": u32, "message_key": hex(32) }, ... ],  // oldest first
//!   "pending_initial_message": hex | null          // optional; X3DH initial message (initiator)
//! }
//! ```
//!
//! hex is lower-case, no prefix. A sealed pickle is [`crate::seal::seal`]`(key, "DP2PTCS session
//! pickle v1", pickle)`. The plaintext pickle holds every secret of the session: keep it in
//! memory only, zeroized (it is returned as `Zeroizing<Vec<u8>>`).

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::chain_key::ChainKey;
use super::message_key::MessageKey;
use super::ratchet_key::{RatchetKeyPair, RatchetPublicKey};
use super::receiver_chain::ReceiverChain;
use super::root_key::RootKey;
use super::session::{RatchetState, Session};
use super::skipped_keys::{SkippedKey, SkippedKeys};
use super::MAX_SKIPPED_KEYS;
use crate::seal::{self, SealError};
use crate::x3dh::{AssociatedData, InitialMessage};

/// The current pickle version.
pub const PICKLE_VERSION: u32 = 1;
/// The `context` a session pickle is sealed under.
pub const PICKLE_SEAL_CONTEXT: &[u8] = b"DP2PTCS session pickle v1";

/// Why a pickle does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// Not a pickle (malformed JSON or a field of the wrong form). Only the position is kept, so
    /// the error never echoes secret bytes.
    #[error("malformed session pickle (line {line}, column {column})")]
    Malformed {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// A version this implementation does not know.
    #[error("unknown session pickle version {0}")]
    UnknownVersion(u32),
    /// More skipped keys than a session may hold.
    #[error("session pickle holds {0} skipped keys, more than allowed")]
    TooManySkippedKeys(usize),
    /// The pending initial message does not decode.
    #[error("session pickle has an invalid initial message")]
    InitialMessage,
    /// The sealed pickle does not open.
    #[error("sealed session pickle: {0}")]
    Seal(#[from] SealError),
}

impl From<serde_json::Error> for PickleError {
    fn from(e: serde_json::Error) -> Self {
        PickleError::Malformed {
            line: e.line(),
            column: e.column(),
        }
    }
}

/// N secret bytes, serialized as lower-case hex without intermediate copies left behind.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Hex<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(hex::encode(self.0));
        s.serialize_str(&text)
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for V<N> {
            type Value = Hex<N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} hex digits", 2 * N)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Hex<N>, E> {
                let mut out = Hex([0u8; N]);
                hex::decode_to_slice(v, &mut out.0)
                    .map_err(|_| E::custom(format_args!("expected {} hex digits", 2 * N)))?;
                Ok(out)
            }
        }
        d.deserialize_str(V::<N>)
    }
}

#[derive(Serialize, Deserialize)]
struct SkippedPickle {
    ratchet_key: Hex<32>,
    index: u32,
    message_key: Hex<32>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct SessionPickleV1 {
    version: u32,
    associated_data: Hex<64>,
    root_key: Hex<32>,
    sending_ratchet_secret: Hex<32>,
    sending_chain_key: Option<Hex<32>>,
    sending_index: u32,
    previous_sending_length: u32,
    receiving_ratchet_key: Option<Hex<32>>,
    receiving_chain_key: Option<Hex<32>>,
    receiving_index: u32,
    skipped_keys: Vec<SkippedPickle>,
    #[serde(default)]
    pending_initial_message: Option<String>,
}

impl Session {
    /// The plaintext pickle (module docs). It holds every secret of the session.
    pub fn pickle(&self) -> Zeroizing<Vec<u8>> {
        let st = &self.state;
        let p = SessionPickleV1 {
            version: PICKLE_VERSION,
            associated_data: Hex(*self.associated_data.as_bytes()),
            root_key: Hex(*st.root_key.as_bytes()),
            sending_ratchet_secret: Hex(st.sending_ratchet_key.secret_bytes()),
            sending_chain_key: st.sending_chain_key.as_ref().map(|k| Hex(*k.as_bytes())),
            sending_index: st.sending_index,
            previous_sending_length: st.previous_sending_length,
            receiving_ratchet_key: st.receiving.ratchet_key.map(|k| Hex(k.0)),
            receiving_chain_key: st.receiving.chain_key.as_ref().map(|k| Hex(*k.as_bytes())),
            receiving_index: st.receiving.index,
            skipped_keys: self
                .skipped
                .iter()
                .map(|s| SkippedPickle {
                    ratchet_key: Hex(s.ratchet_key.0),
                    index: s.index,
                    message_key: Hex(*s.key.as_bytes()),
                })
                .collect(),
            pending_initial_message: self
                .pending_initial_message
                .as_ref()
                .map(|m| hex::encode(m.to_bytes())),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(1024 + 200 * self.skipped.len()));
        // Serializing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &p);
        out
    }

    /// Loads a pickle made by [`Session::pickle`].
    pub fn from_pickle(bytes: &[u8]) -> Result<Self, PickleError> {
        let VersionOnly { version } = serde_json::from_slice(bytes)?;
        if version != PICKLE_VERSION {
            return Err(PickleError::UnknownVersion(version));
        }
        let p: SessionPickleV1 = serde_json::from_slice(bytes)?;
        if p.skipped_keys.len() > MAX_SKIPPED_KEYS {
            return Err(PickleError::TooManySkippedKeys(p.skipped_keys.len()));
        }
        let pending_initial_message = match &p.pending_initial_message {
            None => None,
            Some(h) => {
                let raw = hex::decode(h).map_err(|_| PickleError::InitialMessage)?;
                Some(InitialMessage::from_bytes(&raw).map_err(|_| PickleError::InitialMessage)?)
            }
        };
        let mut skipped = SkippedKeys::default();
        skipped.extend(
            p.skipped_keys
                .iter()
                .map(|s| SkippedKey {
                    ratchet_key: RatchetPublicKey(s.ratchet_key.0),
                    index: s.index,
                    key: MessageKey::new(s.message_key.0),
                })
                .collect(),
        );
        Ok(Session {
            associated_data: AssociatedData::from_bytes(p.associated_data.0),
            state: RatchetState {
                root_key: RootKey::new(p.root_key.0),
                sending_ratchet_key: RatchetKeyPair::from_secret_bytes(p.sending_ratchet_secret.0),
                sending_chain_key: p.sending_chain_key.as_ref().map(|k| ChainKey::new(k.0)),
                sending_index: p.sending_index,
                previous_sending_length: p.previous_sending_length,
                receiving: ReceiverChain {
                    ratchet_key: p
                        .receiving_ratchet_key
                        .as_ref()
                        .map(|k| RatchetPublicKey(k.0)),
                    chain_key: p.receiving_chain_key.as_ref().map(|k| ChainKey::new(k.0)),
                    index: p.receiving_index,
                },
            },
            skipped,
            pending_initial_message,
        })
    }

    /// The pickle sealed under `key` (XChaCha20-Poly1305, [`PICKLE_SEAL_CONTEXT`]), for the store.
    pub fn seal<R: RngCore + CryptoRng>(&self, key: &[u8; 32], rng: &mut R) -> Vec<u8> {
        seal::seal(key, PICKLE_SEAL_CONTEXT, &self.pickle(), rng)
    }

    /// Opens a sealed pickle made by [`Session::seal`].
    pub fn open_sealed(key: &[u8; 32], sealed: &[u8]) -> Result<Self, PickleError> {
        let pickle = seal::open(key, PICKLE_SEAL_CONTEXT, sealed)?;
        Self::from_pickle(&pickle)
    }
}
