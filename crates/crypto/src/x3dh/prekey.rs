//! Our prekeys: the signed prekey (rotated after [`SIGNED_PREKEY_LIFETIME_SECS`], the retired
//! ones kept for [`SIGNED_PREKEY_GRACE_PERIOD_SECS`]), a bounded pool of one-time prekeys, each
//! usable once, and per signed prekey the set of initial messages (their ephemeral keys) already
//! accepted without a one-time prekey, so that such a message cannot be replayed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};

use super::{InitialMessage, PreKeyBundle, X3dhError, SIGNED_PREKEY_SIGNATURE_PREFIX};
use crate::{Identity, PublicIdentity};

/// How long (seconds) a signed prekey is current before [`PreKeyStore::maintain`] replaces it:
/// 7 days.
pub const SIGNED_PREKEY_LIFETIME_SECS: u64 = 7 * 24 * 60 * 60;
/// How long (seconds) a rotated-out signed prekey is still accepted: 48 hours, so initial
/// messages made from a bundle fetched just before the rotation (a DHT record lives at most
/// 24 hours) still work.
pub const SIGNED_PREKEY_GRACE_PERIOD_SECS: u64 = 48 * 60 * 60;
/// The most rotated-out signed prekeys a store keeps in their grace period; a rotation beyond
/// that drops the oldest at once.
pub const MAX_PREVIOUS_SIGNED_PREKEYS: usize = 4;
/// The most one-time prekeys a store holds; generating more evicts the oldest.
pub const MAX_ONE_TIME_PREKEYS: usize = 200;
/// The most initial messages without a one-time prekey remembered per signed prekey (by their
/// ephemeral key, to refuse replays). A signed prekey whose set is full accepts no more such
/// messages ([`X3dhError::SignedPreKeyExhausted`]) and is due for rotation.
pub const MAX_SEEN_INITIAL_MESSAGES: usize = 1024;

/// The message the identity key signs to certify a signed prekey:
/// `"DP2PTCS_SignedPreKey_v1" || id (u32 big-endian) || SPK (32 bytes)`.
pub fn signed_prekey_signature_message(id: u32, public: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_PREKEY_SIGNATURE_PREFIX.len() + 36);
    m.extend_from_slice(SIGNED_PREKEY_SIGNATURE_PREFIX);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(public);
    m
}

/// A signed prekey we hold: secret, public, our identity's signature over it, when it was made,
/// and the ephemeral keys of the initial messages without one-time prekey it accepted.
#[derive(Clone)]
pub(crate) struct SignedPreKey {
    pub(crate) id: u32,
    pub(crate) secret: StaticSecret,
    pub(crate) public: [u8; 32],
    pub(crate) signature: [u8; 64],
    pub(crate) created_at: u64,
    pub(crate) seen: BTreeSet<[u8; 32]>,
}

impl SignedPreKey {
    fn new(identity: &Identity, id: u32, secret: StaticSecret, created_at: u64) -> Self {
        let public = X25519PublicKey::from(&secret).to_bytes();
        let signature = identity.sign(&signed_prekey_signature_message(id, &public));
        Self {
            id,
            secret,
            public,
            signature,
            created_at,
            seen: BTreeSet::new(),
        }
    }
}

/// Our side of X3DH: the current signed prekey, the rotated-out ones during their grace period,
/// and the unused one-time prekeys. Secrets are zeroized on drop; `Debug` shows only ids.
/// [`PreKeyStore::pickle`] gives its persistent form.
#[derive(Clone)]
pub struct PreKeyStore {
    pub(crate) identity: PublicIdentity,
    pub(crate) current: SignedPreKey,
    /// The rotated-out signed prekeys and the times they were retired, newest first.
    pub(crate) previous: VecDeque<(SignedPreKey, u64)>,
    pub(crate) one_time: BTreeMap<u32, StaticSecret>,
    pub(crate) next_one_time_id: u32,
}

impl PreKeyStore {
    /// A store with a fresh signed prekey (id 1) made at time 0 (so with a Unix-time clock, the
    /// first [`PreKeyStore::maintain`] rotates it), and no one-time prekeys. See
    /// [`PreKeyStore::new_at`].
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R, identity: &Identity) -> Self {
        Self::new_at(rng, identity, 0)
    }

    /// A store with a fresh signed prekey (id 1) made at `now` (seconds, the same clock as every
    /// other `now` given to this store), and no one-time prekeys.
    pub fn new_at<R: RngCore + CryptoRng>(rng: &mut R, identity: &Identity, now: u64) -> Self {
        let secret = StaticSecret::random_from_rng(&mut *rng);
        let mut store = Self::with_signed_prekey(identity, 1, secret);
        store.current.created_at = now;
        store
    }

    /// A store whose signed prekey has the given id and secret (test vectors).
    pub fn with_signed_prekey(identity: &Identity, id: u32, secret: StaticSecret) -> Self {
        Self {
            identity: identity.public(),
            current: SignedPreKey::new(identity, id, secret, 0),
            previous: VecDeque::new(),
            one_time: BTreeMap::new(),
            next_one_time_id: 1,
        }
    }

    /// The identity this store belongs to.
    pub fn identity(&self) -> &PublicIdentity {
        &self.identity
    }

    /// The id of the current signed prekey.
    pub fn signed_prekey_id(&self) -> u32 {
        self.current.id
    }

    /// When the current signed prekey was made.
    pub fn signed_prekey_created_at(&self) -> u64 {
        self.current.created_at
    }

    /// The ids of the rotated-out signed prekeys still held, newest first.
    pub fn previous_signed_prekey_ids(&self) -> Vec<u32> {
        self.previous.iter().map(|(k, _)| k.id).collect()
    }

    /// Whether an initial message naming signed prekey `id` is answered at `now`: the key is
    /// current, or rotated out and within its grace period.
    pub fn accepts_signed_prekey(&self, id: u32, now: u64) -> bool {
        self.signed_prekey(id, now).is_some()
    }

    /// Replaces the signed prekey by a fresh one (id + 1) made at `now`. The old one stays
    /// acceptable until `now + SIGNED_PREKEY_GRACE_PERIOD_SECS`, and so do older ones until their
    /// own grace period ends, at most [`MAX_PREVIOUS_SIGNED_PREKEYS`] of them (the oldest is
    /// dropped at once beyond that).
    pub fn rotate_signed_prekey<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        identity: &Identity,
        now: u64,
    ) -> Result<(), X3dhError> {
        if identity.public() != self.identity {
            return Err(X3dhError::WrongIdentity);
        }
        let secret = StaticSecret::random_from_rng(&mut *rng);
        let id = self.current.id.wrapping_add(1);
        let old = std::mem::replace(
            &mut self.current,
            SignedPreKey::new(identity, id, secret, now),
        );
        self.previous.push_front((old, now));
        self.previous.truncate(MAX_PREVIOUS_SIGNED_PREKEYS);
        Ok(())
    }

    /// Drops the rotated-out signed prekeys (and their replay sets) whose grace period is over.
    /// Returns whether any was dropped.
    pub fn expire(&mut self, now: u64) -> bool {
        self.expire_keeping(now, &BTreeSet::new())
    }

    /// [`PreKeyStore::expire`], except for the rotated-out signed prekeys whose ids are in
    /// `pinned` (initial messages kept to be answered later, say from a sender not accepted yet,
    /// still need them): their grace period starts again at `now`. They stay as long as they are
    /// pinned when this runs, or until more rotations than [`MAX_PREVIOUS_SIGNED_PREKEYS`] push
    /// them out. Returns whether the store changed.
    pub fn expire_keeping(&mut self, now: u64, pinned: &BTreeSet<u32>) -> bool {
        let mut changed = false;
        for (key, retired) in &mut self.previous {
            if pinned.contains(&key.id) && *retired < now {
                *retired = now;
                changed = true;
            }
        }
        let before = self.previous.len();
        self.previous
            .retain(|(_, retired)| now < retired.saturating_add(SIGNED_PREKEY_GRACE_PERIOD_SECS));
        changed || self.previous.len() != before
    }

    /// Whether the current signed prekey is due for rotation at `now`: older than
    /// [`SIGNED_PREKEY_LIFETIME_SECS`], or its replay set is full.
    pub fn needs_rotation(&self, now: u64) -> bool {
        now >= self
            .current
            .created_at
            .saturating_add(SIGNED_PREKEY_LIFETIME_SECS)
            || self.current.seen.len() >= MAX_SEEN_INITIAL_MESSAGES
    }

    /// The rotation policy: expires rotated-out signed prekeys past their grace period and
    /// rotates the current one if [`PreKeyStore::needs_rotation`]. Returns whether the store
    /// changed (and so must be saved before it is used further).
    pub fn maintain<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        identity: &Identity,
        now: u64,
    ) -> Result<bool, X3dhError> {
        self.maintain_keeping(rng, identity, now, &BTreeSet::new())
    }

    /// [`PreKeyStore::maintain`], keeping the signed prekeys in `pinned` past their grace period
    /// ([`PreKeyStore::expire_keeping`]).
    pub fn maintain_keeping<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        identity: &Identity,
        now: u64,
        pinned: &BTreeSet<u32>,
    ) -> Result<bool, X3dhError> {
        let mut changed = self.expire_keeping(now, pinned);
        if self.needs_rotation(now) {
            self.rotate_signed_prekey(rng, identity, now)?;
            changed = true;
        }
        Ok(changed)
    }

    /// Adds `count` fresh one-time prekeys and returns their ids and public keys, to publish.
    /// The pool holds at most [`MAX_ONE_TIME_PREKEYS`]; the oldest are evicted beyond that.
    pub fn generate_one_time_prekeys<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        count: usize,
    ) -> Vec<(u32, [u8; 32])> {
        let mut out = Vec::with_capacity(count.min(MAX_ONE_TIME_PREKEYS));
        for _ in 0..count.min(MAX_ONE_TIME_PREKEYS) {
            let id = self.next_one_time_id;
            self.next_one_time_id = self.next_one_time_id.wrapping_add(1).max(1);
            let secret = StaticSecret::random_from_rng(&mut *rng);
            out.push((id, X25519PublicKey::from(&secret).to_bytes()));
            self.one_time.insert(id, secret);
        }
        while self.one_time.len() > MAX_ONE_TIME_PREKEYS {
            self.one_time.pop_first();
        }
        out
    }

    /// Adds a one-time prekey with a given id and secret (test vectors).
    pub fn insert_one_time_prekey(&mut self, id: u32, secret: StaticSecret) -> [u8; 32] {
        let public = X25519PublicKey::from(&secret).to_bytes();
        self.one_time.insert(id, secret);
        while self.one_time.len() > MAX_ONE_TIME_PREKEYS {
            self.one_time.pop_first();
        }
        public
    }

    /// How many unused one-time prekeys remain.
    pub fn one_time_prekey_count(&self) -> usize {
        self.one_time.len()
    }

    /// Our bundle with the current signed prekey and, if `one_time_prekey_id` names an unused
    /// one-time prekey, that one.
    pub fn bundle(&self, one_time_prekey_id: Option<u32>) -> PreKeyBundle {
        let otk = one_time_prekey_id.and_then(|id| {
            self.one_time
                .get(&id)
                .map(|s| (id, X25519PublicKey::from(s).to_bytes()))
        });
        PreKeyBundle::new(
            self.identity,
            self.current.id,
            self.current.public,
            self.current.signature,
            otk,
        )
    }

    /// The signed prekey `id`, if it is current or within its grace period at `now`.
    fn signed_prekey(&self, id: u32, now: u64) -> Option<&SignedPreKey> {
        if self.current.id == id {
            return Some(&self.current);
        }
        self.previous
            .iter()
            .find(|(spk, retired)| {
                spk.id == id && now < retired.saturating_add(SIGNED_PREKEY_GRACE_PERIOD_SECS)
            })
            .map(|(spk, _)| spk)
    }

    fn signed_prekey_mut(&mut self, id: u32) -> Option<&mut SignedPreKey> {
        if self.current.id == id {
            return Some(&mut self.current);
        }
        self.previous
            .iter_mut()
            .find(|(spk, _)| spk.id == id)
            .map(|(spk, _)| spk)
    }

    /// The signed prekey secret `id` and its public key, if it is current or within its grace
    /// period at `now`.
    pub(crate) fn signed_prekey_secret(
        &self,
        id: u32,
        now: u64,
    ) -> Option<(&StaticSecret, &[u8; 32])> {
        self.signed_prekey(id, now).map(|k| (&k.secret, &k.public))
    }

    pub(crate) fn one_time_prekey_secret(&self, id: u32) -> Option<&StaticSecret> {
        self.one_time.get(&id)
    }

    /// Removes (and so zeroizes) one-time prekey `id`.
    pub(crate) fn consume_one_time_prekey(&mut self, id: u32) -> Result<(), X3dhError> {
        self.one_time
            .remove(&id)
            .map(drop)
            .ok_or(X3dhError::UnknownOneTimePreKey(id))
    }

    /// Refuses an initial message without one-time prekey whose ephemeral key its signed prekey
    /// already accepted (a replay), or whose signed prekey's replay set is full. Messages with a
    /// one-time prekey pass: consuming the one-time prekey makes them single-use.
    pub(crate) fn check_not_replayed(
        &self,
        initial: &InitialMessage,
        now: u64,
    ) -> Result<(), X3dhError> {
        if initial.one_time_prekey_id().is_some() {
            return Ok(());
        }
        let id = initial.signed_prekey_id();
        let spk = self
            .signed_prekey(id, now)
            .ok_or(X3dhError::UnknownSignedPreKey(id))?;
        if spk.seen.contains(initial.ephemeral_key()) {
            return Err(X3dhError::ReplayedInitialMessage);
        }
        if spk.seen.len() >= MAX_SEEN_INITIAL_MESSAGES {
            return Err(X3dhError::SignedPreKeyExhausted(id));
        }
        Ok(())
    }

    /// Marks an accepted initial message as used: consumes its one-time prekey, or, without one,
    /// records its ephemeral key under its signed prekey.
    pub(crate) fn mark_used(&mut self, initial: &InitialMessage) -> Result<(), X3dhError> {
        match initial.one_time_prekey_id() {
            Some(id) => self.consume_one_time_prekey(id),
            None => {
                let id = initial.signed_prekey_id();
                let spk = self
                    .signed_prekey_mut(id)
                    .ok_or(X3dhError::UnknownSignedPreKey(id))?;
                if spk.seen.len() >= MAX_SEEN_INITIAL_MESSAGES {
                    return Err(X3dhError::SignedPreKeyExhausted(id));
                }
                spk.seen.insert(*initial.ephemeral_key());
                Ok(())
            }
        }
    }
}

impl std::fmt::Debug for PreKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            identity,
            current,
            previous,
            one_time,
            next_one_time_id,
        } = self;
        f.debug_struct("PreKeyStore")
            .field("identity", identity)
            .field("signed_prekey_id", &current.id)
            .field("signed_prekey_created_at", &current.created_at)
            .field("seen_initial_messages", &current.seen.len())
            .field(
                "previous_signed_prekeys",
                &previous
                    .iter()
                    .map(|(k, t)| (k.id, *t, k.seen.len()))
                    .collect::<Vec<_>>(),
            )
            .field("one_time_prekey_ids", &one_time.keys().collect::<Vec<_>>())
            .field("next_one_time_id", next_one_time_id)
            .field("secrets", &"<redacted>")
            .finish()
    }
}
