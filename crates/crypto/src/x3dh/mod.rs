//! X3DH key agreement, exactly as in Signal's X3DH specification (revision 1, 2016-11-04), with
//! the choices below. `PROTOCOL.md` (section 7.1, "X3DH") is the normative text; this is a summary.
//!
//! # Parameters
//!
//! | spec name | DP2PTCS choice |
//! |---|---|
//! | curve | X25519 for every DH; identity keys are Ed25519 (XEdDSA not used) |
//! | hash | SHA-256 |
//! | info | [`X3DH_INFO`] = ASCII `"DP2PTCS_X3DH_v1"` |
//! | `Encode(PK)` of an identity key | the 32-byte Ed25519 public key (RFC 8032 encoding) |
//! | `Encode(PK)` of a prekey | the 32-byte X25519 public key (RFC 7748 u-coordinate) |
//!
//! An Ed25519 identity key is used for DH by converting it to X25519: the secret scalar is the
//! first half of `SHA-512(seed)`, clamped (RFC 8032 §5.1.5 = RFC 7748 clamping); the public key is
//! the birational Edwards→Montgomery map `u = (1 + y) / (1 - y)` of the Ed25519 public point.
//!
//! # Computation
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)     DH2 = DH(EK_A, IK_B)     DH3 = DH(EK_A, SPK_B)     DH4 = DH(EK_A, OPK_B)
//! SK  = HKDF-SHA-256(salt = 0x00 * 32, ikm = 0xFF * 32 || DH1 || DH2 || DH3 [|| DH4],
//!                    info = "DP2PTCS_X3DH_v1", L = 32)
//! AD  = Encode(IK_A) || Encode(IK_B)          (64 bytes, Ed25519 public keys; A = initiator)
//! ```
//!
//! Every DH output is checked: an all-zero result (the peer's key has small order) aborts the
//! agreement with [`X3dhError::NonContributoryDh`]. The signed prekey's signature is
//! Ed25519(IK_B, [`SIGNED_PREKEY_SIGNATURE_PREFIX`] || id (u32 BE) || SPK_B), checked before any
//! DH. The responder's signed prekey key pair becomes its first ratchet key pair
//! (Double Ratchet `RatchetInitBob`), as the Double Ratchet specification recommends.

mod bundle;
mod initial_message;
mod prekey;
mod prekey_pickle;

use crate::kdf::hkdf_sha256;
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub use bundle::{BundleError, PreKeyBundle, BUNDLE_VERSION};
pub use initial_message::{InitialMessage, InitialMessageError, INITIAL_MESSAGE_VERSION};
pub use prekey::{
    signed_prekey_signature_message, PreKeyStore, MAX_ONE_TIME_PREKEYS,
    MAX_PREVIOUS_SIGNED_PREKEYS, MAX_SEEN_INITIAL_MESSAGES, SIGNED_PREKEY_GRACE_PERIOD_SECS,
    SIGNED_PREKEY_LIFETIME_SECS,
};
pub use prekey_pickle::{PreKeyPickleError, PREKEY_PICKLE_VERSION, PREKEY_SEAL_CONTEXT};

use crate::ratchet::RatchetKeyPair;
use crate::{Identity, PublicIdentity};

/// A bounds-safe cursor for the fixed-layout decoders of this crate.
pub(crate) fn initial_message_reader(bytes: &[u8]) -> initial_message::Reader<'_> {
    initial_message::Reader(bytes)
}

/// The HKDF `info` of the X3DH key derivation.
pub const X3DH_INFO: &[u8] = b"DP2PTCS_X3DH_v1";
/// Domain-separation prefix of the message an identity key signs to certify a signed prekey.
pub const SIGNED_PREKEY_SIGNATURE_PREFIX: &[u8] = b"DP2PTCS_SignedPreKey_v1";
/// Length of the associated data `AD = Encode(IK_A) || Encode(IK_B)`.
pub const ASSOCIATED_DATA_LEN: usize = 64;

/// The X3DH output `SK`: the 32-byte secret that becomes the first Double Ratchet root key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; 32]);

impl SharedSecret {
    /// Wraps raw bytes (test vectors, interoperability tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self(_) = self;
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// The X3DH associated data `AD = Encode(IK_A) || Encode(IK_B)`, A being the initiator.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AssociatedData([u8; ASSOCIATED_DATA_LEN]);

impl AssociatedData {
    /// `Encode(initiator) || Encode(responder)`.
    pub fn new(initiator: &PublicIdentity, responder: &PublicIdentity) -> Self {
        let mut ad = [0u8; ASSOCIATED_DATA_LEN];
        ad[..32].copy_from_slice(&initiator.to_bytes());
        ad[32..].copy_from_slice(&responder.to_bytes());
        Self(ad)
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; ASSOCIATED_DATA_LEN]) -> Self {
        Self(bytes)
    }

    /// The 64 bytes.
    pub fn as_bytes(&self) -> &[u8; ASSOCIATED_DATA_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for AssociatedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssociatedData({})", hex::encode(self.0))
    }
}

/// Why an X3DH agreement failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X3dhError {
    /// The bundle's signed-prekey signature does not verify under its identity key.
    #[error("the signed prekey signature does not verify")]
    BadSignature,
    /// A DH output was all zeros: the peer supplied a small-order public key.
    #[error("a Diffie-Hellman output is all zeros (small-order public key)")]
    NonContributoryDh,
    /// The initial message names a signed prekey we do not hold (or whose grace period is over).
    #[error("unknown or expired signed prekey {0}")]
    UnknownSignedPreKey(u32),
    /// The initial message names a one-time prekey we do not hold (never issued or already used).
    #[error("unknown or already used one-time prekey {0}")]
    UnknownOneTimePreKey(u32),
    /// The initial message is addressed to a different identity than ours.
    #[error("the prekey store belongs to a different identity")]
    WrongIdentity,
    /// An initial message without one-time prekey whose ephemeral key was already accepted
    /// with the same signed prekey: a replay.
    #[error("replayed initial message")]
    ReplayedInitialMessage,
    /// The signed prekey has accepted as many initial messages without one-time prekey as it
    /// may remember ([`MAX_SEEN_INITIAL_MESSAGES`]); it must be rotated.
    #[error("signed prekey {0} accepts no more initial messages without one-time prekey")]
    SignedPreKeyExhausted(u32),
}

/// What the initiator (Alice) gets from X3DH.
pub struct InitiatorOutput {
    /// `SK`.
    pub shared_secret: SharedSecret,
    /// `AD = Encode(IK_A) || Encode(IK_B)`.
    pub associated_data: AssociatedData,
    /// The responder's signed prekey, which is its first ratchet public key.
    pub remote_ratchet_key: [u8; 32],
    /// What Alice sends to Bob alongside her first ratchet message.
    pub initial_message: InitialMessage,
}

impl std::fmt::Debug for InitiatorOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            shared_secret,
            associated_data,
            remote_ratchet_key,
            initial_message,
        } = self;
        f.debug_struct("InitiatorOutput")
            .field("shared_secret", shared_secret)
            .field("associated_data", associated_data)
            .field("remote_ratchet_key", &hex::encode(remote_ratchet_key))
            .field("initial_message", initial_message)
            .finish()
    }
}

/// What the responder (Bob) gets from X3DH.
pub struct ResponderOutput {
    /// `SK`.
    pub shared_secret: SharedSecret,
    /// `AD = Encode(IK_A) || Encode(IK_B)`.
    pub associated_data: AssociatedData,
    /// The signed prekey pair named by the initial message: Bob's first ratchet key pair.
    pub(crate) ratchet_key_pair: RatchetKeyPair,
    /// The one-time prekey the initial message used, if any (consumed by [`respond`]).
    pub one_time_prekey_id: Option<u32>,
}

impl std::fmt::Debug for ResponderOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            shared_secret,
            associated_data,
            ratchet_key_pair,
            one_time_prekey_id,
        } = self;
        f.debug_struct("ResponderOutput")
            .field("shared_secret", shared_secret)
            .field("associated_data", associated_data)
            .field("ratchet_key_pair", ratchet_key_pair)
            .field("one_time_prekey_id", one_time_prekey_id)
            .finish()
    }
}

/// The X25519 secret of an Ed25519 identity: `clamp(SHA-512(seed)[0..32])` (clamping is done by
/// x25519-dalek on use).
pub(crate) fn identity_dh_secret(identity: &Identity) -> StaticSecret {
    let bytes = Zeroizing::new(identity.signing_key().to_scalar_bytes());
    StaticSecret::from(*bytes)
}

/// The X25519 public key of an Ed25519 identity: the Edwards→Montgomery map of its point.
pub(crate) fn identity_dh_public(identity: &PublicIdentity) -> X25519PublicKey {
    X25519PublicKey::from(identity.verifying_key().to_montgomery().to_bytes())
}

/// `DH(secret, public)`, appended to the HKDF input; rejects the all-zero output.
fn dh_into(
    ikm: &mut Zeroizing<Vec<u8>>,
    secret: &StaticSecret,
    public: &X25519PublicKey,
) -> Result<(), X3dhError> {
    let shared = secret.diffie_hellman(public);
    if !shared.was_contributory() {
        return Err(X3dhError::NonContributoryDh);
    }
    ikm.extend_from_slice(shared.as_bytes());
    Ok(())
}

/// `HKDF-SHA-256(salt = 0x00*32, ikm = 0xFF*32 || dh_concat, info = X3DH_INFO)`, 32 bytes.
fn kdf(dh_concat: &[u8]) -> SharedSecret {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 + dh_concat.len()));
    ikm.extend_from_slice(&[0xFF; 32]);
    ikm.extend_from_slice(dh_concat);
    let mut sk = [0u8; 32];
    hkdf_sha256(Some(&[0u8; 32]), &ikm, X3DH_INFO, &mut sk);
    SharedSecret(sk)
}

/// The initiator's side: verifies `bundle`, draws the ephemeral key `EK_A` from `rng`, and
/// computes `SK` and `AD`.
pub fn initiate<R: RngCore + CryptoRng>(
    rng: &mut R,
    identity: &Identity,
    bundle: &PreKeyBundle,
) -> Result<InitiatorOutput, X3dhError> {
    let ephemeral = StaticSecret::random_from_rng(&mut *rng);
    initiate_with_ephemeral(identity, bundle, ephemeral)
}

/// [`initiate`] with a given ephemeral secret (test vectors).
pub(crate) fn initiate_with_ephemeral(
    identity: &Identity,
    bundle: &PreKeyBundle,
    ephemeral: StaticSecret,
) -> Result<InitiatorOutput, X3dhError> {
    bundle.verify().map_err(|_| X3dhError::BadSignature)?;
    let ik_a = identity_dh_secret(identity);
    let ik_b = identity_dh_public(bundle.identity());
    let spk_b = X25519PublicKey::from(*bundle.signed_prekey());

    let mut dh = Zeroizing::new(Vec::with_capacity(128));
    dh_into(&mut dh, &ik_a, &spk_b)?;
    dh_into(&mut dh, &ephemeral, &ik_b)?;
    dh_into(&mut dh, &ephemeral, &spk_b)?;
    if let Some((_, opk)) = bundle.one_time_prekey() {
        dh_into(&mut dh, &ephemeral, &X25519PublicKey::from(*opk))?;
    }
    let shared_secret = kdf(&dh);
    let associated_data = AssociatedData::new(&identity.public(), bundle.identity());
    let initial_message = InitialMessage::new(
        identity.public(),
        X25519PublicKey::from(&ephemeral).to_bytes(),
        bundle.signed_prekey_id(),
        bundle.one_time_prekey().map(|(id, _)| id),
    );
    Ok(InitiatorOutput {
        shared_secret,
        associated_data,
        remote_ratchet_key: *bundle.signed_prekey(),
        initial_message,
    })
}

/// The responder's side: computes `SK` and `AD` from Alice's initial message and our prekeys,
/// and marks the message used: it consumes the one-time prekey it used (a second use fails with
/// [`X3dhError::UnknownOneTimePreKey`]), or, without one, records its ephemeral key under the
/// signed prekey (a second use fails with [`X3dhError::ReplayedInitialMessage`]). `now`
/// (seconds, any fixed epoch the caller uses consistently) decides whether a rotated-out signed
/// prekey is still in its grace period.
///
/// To mark the message used only once the first ratchet message has been authenticated (so a
/// forged initial message burns nothing), use [`crate::ratchet::Session::respond`] instead.
pub fn respond(
    identity: &Identity,
    store: &mut PreKeyStore,
    initial: &InitialMessage,
    now: u64,
) -> Result<ResponderOutput, X3dhError> {
    let out = compute_responder(identity, store, initial, now)?;
    store.mark_used(initial)?;
    Ok(out)
}

/// The responder's computation, without consuming anything. Refuses a replayed initial message.
pub(crate) fn compute_responder(
    identity: &Identity,
    store: &PreKeyStore,
    initial: &InitialMessage,
    now: u64,
) -> Result<ResponderOutput, X3dhError> {
    if store.identity() != &identity.public() {
        return Err(X3dhError::WrongIdentity);
    }
    let (spk, spk_public) = store
        .signed_prekey_secret(initial.signed_prekey_id(), now)
        .ok_or(X3dhError::UnknownSignedPreKey(initial.signed_prekey_id()))?;
    store.check_not_replayed(initial, now)?;
    let opk = match initial.one_time_prekey_id() {
        Some(id) => Some(
            store
                .one_time_prekey_secret(id)
                .ok_or(X3dhError::UnknownOneTimePreKey(id))?,
        ),
        None => None,
    };
    let ik_b = identity_dh_secret(identity);
    let ik_a = identity_dh_public(initial.identity());
    let ek_a = X25519PublicKey::from(*initial.ephemeral_key());

    let mut dh = Zeroizing::new(Vec::with_capacity(128));
    dh_into(&mut dh, spk, &ik_a)?;
    dh_into(&mut dh, &ik_b, &ek_a)?;
    dh_into(&mut dh, spk, &ek_a)?;
    if let Some(opk) = opk {
        dh_into(&mut dh, opk, &ek_a)?;
    }
    Ok(ResponderOutput {
        shared_secret: kdf(&dh),
        associated_data: AssociatedData::new(initial.identity(), &identity.public()),
        ratchet_key_pair: RatchetKeyPair::from_parts(spk.clone(), *spk_public),
        one_time_prekey_id: initial.one_time_prekey_id(),
    })
}

#[cfg(test)]
mod tests;
