//! A Double Ratchet session: `RatchetEncrypt` / `RatchetDecrypt` of the Signal specification,
//! with transactional decryption, and a thread-safe handle.

use std::sync::{Arc, Mutex, MutexGuard};

use dp2ptcs_types::NodeId;
use rand_core::{CryptoRng, RngCore};

use super::chain_key::ChainKey;
use super::header::{Header, RatchetMessage, HEADER_LEN};
use super::plaintext::Plaintext;
use super::ratchet_key::{RatchetKeyPair, RatchetPublicKey};
use super::receiver_chain::ReceiverChain;
use super::root_key::RootKey;
use super::skipped_keys::{SkippedKey, SkippedKeys};
use super::MAX_SKIP;
use crate::x3dh::{
    self, AssociatedData, InitialMessage, PreKeyBundle, PreKeyStore, SharedSecret, X3dhError,
    ASSOCIATED_DATA_LEN,
};
use crate::Identity;

/// Why a message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The responder cannot send before it has received the initiator's first message.
    #[error("no sending chain yet: the responder must receive a message first")]
    NoSendingChain,
    /// The sending chain has reached message number 2^32 - 1.
    #[error("sending chain exhausted")]
    ChainExhausted,
    /// The plaintext is longer than ChaCha20-Poly1305 allows.
    #[error("plaintext too long")]
    TooLong,
}

/// Why a message was rejected. In every case the session state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The header claims more skipped messages than `MAX_SKIP`; rejected before any derivation.
    #[error("message skips {skip} messages, more than the maximum {max}")]
    TooManySkipped {
        /// Messages the header would make us skip.
        skip: u64,
        /// `MAX_SKIP`.
        max: u32,
    },
    /// A message number already used (or skipped and since evicted) on the current chain:
    /// a replay, a duplicate, or too old.
    #[error("message {message_number} already received or its key expired")]
    DuplicateOrExpired {
        /// The header's message number.
        message_number: u32,
    },
    /// The new ratchet public key gives an all-zero DH output (small-order key).
    #[error("the header's ratchet key has small order")]
    NonContributoryDh,
    /// The receiving chain would pass message number 2^32 - 1.
    #[error("receiving chain exhausted")]
    ChainExhausted,
    /// The ciphertext, header or associated data do not authenticate.
    #[error("message does not authenticate")]
    Authentication,
}

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// X3DH failed.
    #[error("X3DH: {0}")]
    X3dh(#[from] X3dhError),
    /// The remote ratchet key has small order.
    #[error("the remote ratchet key has small order")]
    NonContributoryDh,
    /// The first message did not decrypt.
    #[error("first message: {0}")]
    FirstMessage(#[from] DecryptError),
}

/// The ratchet state of the specification, minus `MKSKIPPED` (kept apart so that decryption can
/// work on a cheap copy and commit it only on success).
#[derive(Clone, Debug)]
pub(crate) struct RatchetState {
    /// `RK`.
    pub(crate) root_key: RootKey,
    /// `DHs`.
    pub(crate) sending_ratchet_key: RatchetKeyPair,
    /// `CKs` (None for the responder until its first DH ratchet step).
    pub(crate) sending_chain_key: Option<ChainKey>,
    /// `Ns`.
    pub(crate) sending_index: u32,
    /// `PN`.
    pub(crate) previous_sending_length: u32,
    /// `DHr`, `CKr`, `Nr`.
    pub(crate) receiving: ReceiverChain,
}

/// A Double Ratchet session with one peer. Use [`SharedSession`] to share it between tasks.
///
/// `Debug` shows only public values.
#[derive(Clone)]
pub struct Session {
    pub(crate) associated_data: AssociatedData,
    pub(crate) state: RatchetState,
    pub(crate) skipped: SkippedKeys,
    /// The initiator's X3DH initial message, attached to every message it sends until the first
    /// reply decrypts.
    pub(crate) pending_initial_message: Option<InitialMessage>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            associated_data,
            state,
            skipped,
            pending_initial_message,
        } = self;
        f.debug_struct("Session")
            .field("associated_data", associated_data)
            .field("state", state)
            .field("skipped_keys", &skipped.len())
            .field("pending_initial_message", pending_initial_message)
            .finish()
    }
}

impl Session {
    /// `RatchetInitAlice(SK, SPK_B)`: draws `DHs` from `rng`,
    /// `RK, CKs = KDF_RK(SK, DH(DHs, SPK_B))`.
    pub fn new_initiator<R: RngCore + CryptoRng>(
        rng: &mut R,
        shared_secret: &SharedSecret,
        associated_data: AssociatedData,
        remote_ratchet_key: [u8; 32],
    ) -> Result<Self, SessionError> {
        Self::new_initiator_with_key(
            RatchetKeyPair::generate(rng),
            shared_secret,
            associated_data,
            remote_ratchet_key,
        )
    }

    /// [`Session::new_initiator`] with a given first ratchet key pair (test vectors).
    pub fn new_initiator_with_key(
        ratchet_key: RatchetKeyPair,
        shared_secret: &SharedSecret,
        associated_data: AssociatedData,
        remote_ratchet_key: [u8; 32],
    ) -> Result<Self, SessionError> {
        let dhr = RatchetPublicKey(remote_ratchet_key);
        let (root_key, cks) = RootKey::new(*shared_secret.as_bytes())
            .advance(&ratchet_key, &dhr)
            .map_err(|_| SessionError::NonContributoryDh)?;
        Ok(Self {
            associated_data,
            state: RatchetState {
                root_key,
                sending_ratchet_key: ratchet_key,
                sending_chain_key: Some(cks),
                sending_index: 0,
                previous_sending_length: 0,
                receiving: ReceiverChain {
                    ratchet_key: Some(dhr),
                    chain_key: None,
                    index: 0,
                },
            },
            skipped: SkippedKeys::default(),
            pending_initial_message: None,
        })
    }

    /// `RatchetInitBob(SK, SPK_B key pair)`: `DHs = SPK_B`, `RK = SK`, no chains yet.
    pub fn new_responder(
        shared_secret: &SharedSecret,
        associated_data: AssociatedData,
        ratchet_key: RatchetKeyPair,
    ) -> Self {
        Self {
            associated_data,
            state: RatchetState {
                root_key: RootKey::new(*shared_secret.as_bytes()),
                sending_ratchet_key: ratchet_key,
                sending_chain_key: None,
                sending_index: 0,
                previous_sending_length: 0,
                receiving: ReceiverChain {
                    ratchet_key: None,
                    chain_key: None,
                    index: 0,
                },
            },
            skipped: SkippedKeys::default(),
            pending_initial_message: None,
        }
    }

    /// X3DH as initiator from `bundle`, then `RatchetInitAlice`. Send
    /// [`Session::pending_initial_message`] with every message until the first reply arrives.
    pub fn initiate<R: RngCore + CryptoRng>(
        rng: &mut R,
        identity: &Identity,
        bundle: &PreKeyBundle,
    ) -> Result<Self, SessionError> {
        let out = x3dh::initiate(rng, identity, bundle)?;
        let mut session = Self::new_initiator(
            rng,
            &out.shared_secret,
            out.associated_data,
            out.remote_ratchet_key,
        )?;
        session.pending_initial_message = Some(out.initial_message.clone());
        Ok(session)
    }

    /// X3DH as responder, `RatchetInitBob`, and decryption of the initiator's first message.
    /// The initial message is marked used in `store` (its one-time prekey consumed, or without
    /// one its ephemeral key recorded so a replay fails with
    /// [`X3dhError::ReplayedInitialMessage`]) only if that message authenticates, so a forged
    /// initial message cannot burn a one-time prekey or fill the replay set.
    pub fn respond<R: RngCore + CryptoRng>(
        rng: &mut R,
        identity: &Identity,
        store: &mut PreKeyStore,
        initial: &InitialMessage,
        first_message: &RatchetMessage,
        now: u64,
    ) -> Result<(Self, Plaintext), SessionError> {
        Self::respond_in_context(rng, identity, store, initial, first_message, &[], now)
    }

    /// [`Session::respond`] for a first message encrypted in `context`
    /// ([`Session::encrypt_in_context`]).
    pub fn respond_in_context<R: RngCore + CryptoRng>(
        rng: &mut R,
        identity: &Identity,
        store: &mut PreKeyStore,
        initial: &InitialMessage,
        first_message: &RatchetMessage,
        context: &[u8],
        now: u64,
    ) -> Result<(Self, Plaintext), SessionError> {
        let (session, _, plaintext) =
            Self::respond_with_start(rng, identity, store, initial, first_message, context, now)?;
        Ok((session, plaintext))
    }

    /// [`Session::respond_in_context`], also returning the session as it was before the first
    /// message's decryption (right after `RatchetInitBob`): `(session, start, plaintext)`. The
    /// first message still decrypts with `start`. An application that records that message in
    /// the transaction saving `session`, and cannot, saves `start` instead: the message is not
    /// lost, it decrypts again later (the initial message itself is used up).
    pub fn respond_with_start<R: RngCore + CryptoRng>(
        rng: &mut R,
        identity: &Identity,
        store: &mut PreKeyStore,
        initial: &InitialMessage,
        first_message: &RatchetMessage,
        context: &[u8],
        now: u64,
    ) -> Result<(Self, Self, Plaintext), SessionError> {
        let out = x3dh::compute_responder(identity, store, initial, now)?;
        let start = Self::new_responder(
            &out.shared_secret,
            out.associated_data,
            out.ratchet_key_pair.clone(),
        );
        let mut session = start.clone();
        let plaintext = session.decrypt_in_context(rng, first_message, context)?;
        store.mark_used(initial)?;
        Ok((session, start, plaintext))
    }

    /// The X3DH associated data this session authenticates every message with.
    pub fn associated_data(&self) -> &AssociatedData {
        &self.associated_data
    }

    /// The initiator's X3DH initial message, until a reply has decrypted; None afterwards and
    /// for the responder.
    pub fn pending_initial_message(&self) -> Option<&InitialMessage> {
        self.pending_initial_message.as_ref()
    }

    /// Our current ratchet public key (`DHs`).
    pub fn our_ratchet_key(&self) -> &RatchetPublicKey {
        self.state.sending_ratchet_key.public()
    }

    /// How many skipped-message keys are stored.
    pub fn skipped_key_count(&self) -> usize {
        self.skipped.len()
    }

    /// Where the peer's sending chain whose messages carry `ratchet_key` stands among those
    /// this session can still receive in, oldest first: an earlier chain with skipped keys
    /// left ranks by its oldest stored key, the receiving chain (`DHr`) after every such chain,
    /// and any other key last. A peer starts a new chain only after it received a ratchet key
    /// this session sent after it took a message of the receiving chain, so at most one chain
    /// is newer than `DHr`: sorting a peer's messages of this session by (rank, message number)
    /// puts them in the order they were written, which `previous_chain_length` alone does not
    /// tell apart. Keys this session does not know (another session's, or chains whose keys are
    /// all used) rank with the newer chain.
    pub fn chain_rank(&self, ratchet_key: &RatchetPublicKey) -> usize {
        if let Some(i) = self
            .skipped
            .iter()
            .position(|k| &k.ratchet_key == ratchet_key)
        {
            return i;
        }
        let n = self.skipped.len();
        if self.state.receiving.ratchet_key.as_ref() == Some(ratchet_key) {
            n
        } else {
            n + 1
        }
    }

    /// `AD || header bytes || context`. AD and header have fixed lengths, so the context is
    /// told apart from them without a length.
    fn aad(ad: &[u8; ASSOCIATED_DATA_LEN], header: &Header, context: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(ASSOCIATED_DATA_LEN + HEADER_LEN + context.len());
        aad.extend_from_slice(ad);
        aad.extend_from_slice(&header.to_bytes());
        aad.extend_from_slice(context);
        aad
    }

    /// `RatchetEncrypt`: `CKs, mk = KDF_CK(CKs)`, header `(DHs, PN, Ns)`, `Ns += 1`,
    /// `ENCRYPT(mk, plaintext, AD || header)`.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<RatchetMessage, EncryptError> {
        self.encrypt_in_context(plaintext, &[])
    }

    /// [`Session::encrypt`] with `context` appended to the associated data:
    /// `ENCRYPT(mk, plaintext, AD || header || context)`. The message then decrypts only with
    /// the same context ([`Session::decrypt_in_context`]): an application binds to the
    /// ciphertext what it sends beside it in clear (say, the kind of payload), so that a change
    /// to it in transit is a forgery.
    pub fn encrypt_in_context(
        &mut self,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<RatchetMessage, EncryptError> {
        let st = &mut self.state;
        let cks = st
            .sending_chain_key
            .as_ref()
            .ok_or(EncryptError::NoSendingChain)?;
        let n = st.sending_index;
        let next_n = n.checked_add(1).ok_or(EncryptError::ChainExhausted)?;
        let (next_ck, mk) = cks.step();
        let header = Header {
            ratchet_key: *st.sending_ratchet_key.public(),
            previous_chain_length: st.previous_sending_length,
            message_number: n,
        };
        let aad = Self::aad(self.associated_data.as_bytes(), &header, context);
        let ciphertext = mk
            .encrypt(plaintext, &aad)
            .map_err(|_| EncryptError::TooLong)?;
        st.sending_chain_key = Some(next_ck);
        st.sending_index = next_n;
        Ok(RatchetMessage { header, ciphertext })
    }

    /// `RatchetDecrypt`. On any error the session is left exactly as it was. `rng` supplies the
    /// new ratchet key pair when the message starts a DH ratchet step.
    pub fn decrypt<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        message: &RatchetMessage,
    ) -> Result<Plaintext, DecryptError> {
        self.decrypt_in_context(rng, message, &[])
    }

    /// [`Session::decrypt`] of a message encrypted in `context`
    /// ([`Session::encrypt_in_context`]); any other context fails authentication and leaves
    /// the session as it was.
    pub fn decrypt_in_context<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        message: &RatchetMessage,
        context: &[u8],
    ) -> Result<Plaintext, DecryptError> {
        let ad = *self.associated_data.as_bytes();
        self.decrypt_with_ad(rng, message, &ad, context)
    }

    pub(crate) fn decrypt_with_ad<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        message: &RatchetMessage,
        ad: &[u8; ASSOCIATED_DATA_LEN],
        context: &[u8],
    ) -> Result<Plaintext, DecryptError> {
        let header = &message.header;
        let aad = Self::aad(ad, header, context);

        // TrySkippedMessageKeys.
        if let Some(i) = self
            .skipped
            .position(&header.ratchet_key, header.message_number)
        {
            let entry = self.skipped.get(i).ok_or(DecryptError::Authentication)?;
            let plaintext = entry
                .key
                .decrypt(&message.ciphertext, &aad)
                .map_err(|_| DecryptError::Authentication)?;
            self.skipped.remove(i);
            self.received_reply();
            return Ok(plaintext);
        }

        // MAX_SKIP checks, before any key derivation.
        let st = &self.state;
        let max = MAX_SKIP;
        let new_chain = st.receiving.ratchet_key != Some(header.ratchet_key);
        let nr = u64::from(st.receiving.index);
        if new_chain {
            let pn = u64::from(header.previous_chain_length);
            if pn > nr + u64::from(max) {
                return Err(DecryptError::TooManySkipped { skip: pn - nr, max });
            }
            if header.message_number > max {
                return Err(DecryptError::TooManySkipped {
                    skip: u64::from(header.message_number),
                    max,
                });
            }
        } else {
            let n = u64::from(header.message_number);
            if n < nr {
                return Err(DecryptError::DuplicateOrExpired {
                    message_number: header.message_number,
                });
            }
            if n > nr + u64::from(max) {
                return Err(DecryptError::TooManySkipped { skip: n - nr, max });
            }
        }

        // Work on a copy; commit only if the message authenticates. A message on the current
        // receiving chain changes nothing but that chain, so only the chain is copied.
        let mut newly_skipped = Vec::new();
        let plaintext = if new_chain {
            let mut next = self.state.clone();
            next.receiving
                .skip_until(header.previous_chain_length, &mut newly_skipped);
            dh_ratchet(&mut next, rng, &header.ratchet_key)?;
            let plaintext = open(&mut next.receiving, message, &aad, &mut newly_skipped)?;
            self.state = next;
            plaintext
        } else {
            let mut receiving = self.state.receiving.clone();
            let plaintext = open(&mut receiving, message, &aad, &mut newly_skipped)?;
            self.state.receiving = receiving;
            plaintext
        };
        self.skipped.extend(newly_skipped);
        self.received_reply();
        Ok(plaintext)
    }

    fn received_reply(&mut self) {
        self.pending_initial_message = None;
    }
}

/// The rest of `RatchetDecrypt` on the receiving chain the message belongs to:
/// `SkipMessageKeys(state, header.n)`, `CKr, mk = KDF_CK(CKr)`, `Nr += 1`, `DECRYPT`. Works on
/// the caller's copy of the chain, which the caller commits only on success.
fn open(
    receiving: &mut ReceiverChain,
    message: &RatchetMessage,
    aad: &[u8],
    newly_skipped: &mut Vec<SkippedKey>,
) -> Result<Plaintext, DecryptError> {
    receiving.skip_until(message.header.message_number, newly_skipped);
    let mk = receiving
        .next_key()
        .ok_or(if receiving.chain_key.is_none() {
            DecryptError::Authentication
        } else {
            DecryptError::ChainExhausted
        })?;
    mk.decrypt(&message.ciphertext, aad)
        .map_err(|_| DecryptError::Authentication)
}

/// `DHRatchet(state, header)`.
fn dh_ratchet<R: RngCore + CryptoRng>(
    st: &mut RatchetState,
    rng: &mut R,
    remote: &RatchetPublicKey,
) -> Result<(), DecryptError> {
    st.previous_sending_length = st.sending_index;
    st.sending_index = 0;
    st.receiving.index = 0;
    st.receiving.ratchet_key = Some(*remote);
    let (rk, ckr) = st
        .root_key
        .advance(&st.sending_ratchet_key, remote)
        .map_err(|_| DecryptError::NonContributoryDh)?;
    st.receiving.chain_key = Some(ckr);
    st.sending_ratchet_key = RatchetKeyPair::generate(rng);
    let (rk, cks) = rk
        .advance(&st.sending_ratchet_key, remote)
        .map_err(|_| DecryptError::NonContributoryDh)?;
    st.root_key = rk;
    st.sending_chain_key = Some(cks);
    Ok(())
}

/// Which of two crossing sessions both sides keep when each initiated one to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossingResolution {
    /// Keep the session we initiated; drop the one the peer initiated.
    KeepOurs,
    /// Keep the session the peer initiated; drop ours.
    KeepTheirs,
}

/// Simultaneous initiation: the session initiated by the identity with the smaller node id
/// (bytewise comparison of the 32-byte `SHA-256(public key)`) wins, on both sides.
pub fn resolve_crossing(our_id: &NodeId, their_id: &NodeId) -> CrossingResolution {
    if our_id.as_bytes() <= their_id.as_bytes() {
        CrossingResolution::KeepOurs
    } else {
        CrossingResolution::KeepTheirs
    }
}

/// A session shared between tasks: encrypt and decrypt may be called concurrently from any
/// number of threads; each call is atomic. Cloning the handle shares the session.
#[derive(Clone)]
pub struct SharedSession(Arc<Mutex<Session>>);

impl std::fmt::Debug for SharedSession {
    /// Never blocks: a session locked by someone else (or by the caller) shows as `<locked>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.try_lock() {
            Ok(session) => f.debug_tuple("SharedSession").field(&*session).finish(),
            Err(std::sync::TryLockError::Poisoned(p)) => f
                .debug_tuple("SharedSession")
                .field(&*p.into_inner())
                .finish(),
            Err(std::sync::TryLockError::WouldBlock) => f.write_str("SharedSession(<locked>)"),
        }
    }
}

impl SharedSession {
    /// Wraps a session.
    pub fn new(session: Session) -> Self {
        Self(Arc::new(Mutex::new(session)))
    }

    /// Every mutation commits at its end, so a panic in another holder cannot leave a
    /// half-updated state: a poisoned lock is safe to reuse.
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`Session::encrypt`].
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<RatchetMessage, EncryptError> {
        self.lock().encrypt(plaintext)
    }

    /// [`Session::decrypt`].
    pub fn decrypt<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        message: &RatchetMessage,
    ) -> Result<Plaintext, DecryptError> {
        self.lock().decrypt(rng, message)
    }

    /// Runs `f` with the session locked, e.g. to encrypt and persist the new pickle before the
    /// ciphertext leaves the node.
    pub fn with<T>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        f(&mut self.lock())
    }
}
