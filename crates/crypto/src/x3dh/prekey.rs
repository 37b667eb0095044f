//! Our prekeys: the signed prekey (rotated, the previous one kept for a grace period) and a
//! bounded pool of one-time prekeys, each usable once.

use std::collections::BTreeMap;

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};

use super::{PreKeyBundle, X3dhError, SIGNED_PREKEY_SIGNATURE_PREFIX};
use crate::{Identity, PublicIdentity};

/// How long (seconds) a rotated-out signed prekey is still accepted: 7 days, so initial messages
/// made from a bundle fetched just before the rotation still work.
pub const SIGNED_PREKEY_GRACE_PERIOD_SECS: u64 = 7 * 24 * 60 * 60;
/// The most one-time prekeys a store holds; generating more evicts the oldest.
pub const MAX_ONE_TIME_PREKEYS: usize = 200;

/// The message the identity key signs to certify a signed prekey:
/// `"DP2PTCS_SignedPreKey_v1" || id (u32 big-endian) || SPK (32 bytes)`.
pub fn signed_prekey_signature_message(id: u32, public: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_PREKEY_SIGNATURE_PREFIX.len() + 36);
    m.extend_from_slice(SIGNED_PREKEY_SIGNATURE_PREFIX);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(public);
    m
}

/// A signed prekey we hold: secret, public, and our identity's signature over it.
#[derive(Clone)]
struct SignedPreKey {
    id: u32,
    secret: StaticSecret,
    public: [u8; 32],
    signature: [u8; 64],
}

impl SignedPreKey {
    fn new(identity: &Identity, id: u32, secret: StaticSecret) -> Self {
        let public = X25519PublicKey::from(&secret).to_bytes();
        let signature = identity.sign(&signed_prekey_signature_message(id, &public));
        Self {
            id,
            secret,
            public,
            signature,
        }
    }
}

/// Our side of X3DH: the current signed prekey, the previous one during its grace period, and the
/// unused one-time prekeys. Secrets are zeroized on drop; `Debug` shows only ids.
pub struct PreKeyStore {
    identity: PublicIdentity,
    current: SignedPreKey,
    /// The rotated-out signed prekey and the time it was retired.
    previous: Option<(SignedPreKey, u64)>,
    one_time: BTreeMap<u32, StaticSecret>,
    next_one_time_id: u32,
}

impl PreKeyStore {
    /// A store with a fresh signed prekey (id 1) and no one-time prekeys.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R, identity: &Identity) -> Self {
        let secret = StaticSecret::random_from_rng(&mut *rng);
        Self::with_signed_prekey(identity, 1, secret)
    }

    /// A store whose signed prekey has the given id and secret (test vectors).
    pub fn with_signed_prekey(identity: &Identity, id: u32, secret: StaticSecret) -> Self {
        Self {
            identity: identity.public(),
            current: SignedPreKey::new(identity, id, secret),
            previous: None,
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

    /// Replaces the signed prekey by a fresh one (id + 1). The old one stays acceptable until
    /// `now + SIGNED_PREKEY_GRACE_PERIOD_SECS`; the one before it is dropped now.
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
        let old = std::mem::replace(&mut self.current, SignedPreKey::new(identity, id, secret));
        self.previous = Some((old, now));
        Ok(())
    }

    /// Drops the previous signed prekey once its grace period is over.
    pub fn expire(&mut self, now: u64) {
        if let Some((_, retired)) = &self.previous {
            if now >= retired.saturating_add(SIGNED_PREKEY_GRACE_PERIOD_SECS) {
                self.previous = None;
            }
        }
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

    /// The signed prekey secret `id` and its public key, if it is current or within its grace
    /// period at `now`.
    pub(crate) fn signed_prekey_secret(
        &self,
        id: u32,
        now: u64,
    ) -> Option<(&StaticSecret, &[u8; 32])> {
        if self.current.id == id {
            return Some((&self.current.secret, &self.current.public));
        }
        match &self.previous {
            Some((spk, retired))
                if spk.id == id
                    && now < retired.saturating_add(SIGNED_PREKEY_GRACE_PERIOD_SECS) =>
            {
                Some((&spk.secret, &spk.public))
            }
            _ => None,
        }
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
            .field(
                "previous_signed_prekey_id",
                &previous.as_ref().map(|(k, t)| (k.id, *t)),
            )
            .field("one_time_prekey_ids", &one_time.keys().collect::<Vec<_>>())
            .field("next_one_time_id", next_one_time_id)
            .field("secrets", &"<redacted>")
            .finish()
    }
}
