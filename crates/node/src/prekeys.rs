//! Our prekeys, persisted sealed in the node database, and the peers' prekey bundles learned out
//! of band (from the DHT) for asynchronous X3DH (`PROTOCOL.md` sections 7.1, 7.4 and 9.2).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use dp2ptcs_crypto::kdf::hkdf_sha256;
use dp2ptcs_crypto::ratchet::SessionError;
use dp2ptcs_crypto::x3dh::InitialMessage;
use dp2ptcs_crypto::{Identity, Plaintext, PreKeyBundle, PreKeyStore, Session};
use dp2ptcs_store::{ContactRecord, Store};
use dp2ptcs_types::NodeId;
use dp2ptcs_wire::Envelope;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::node::Inner;
use crate::sessions::{blocking, lock, now_ms};
use crate::NodeError;

/// HKDF info of the key that seals the prekey pickle (derived from the database key; distinct
/// from the session pickle key's).
pub(crate) const PREKEY_KEY_INFO: &[u8] = b"DP2PTCS prekey store key v1";
/// The most peer bundles learned out of band that a node keeps; learning one more evicts an
/// arbitrary other.
pub(crate) const MAX_LEARNED_BUNDLES: usize = 1024;

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Our prekey store: kept in memory, and sealed and saved in the node database every time it
/// changes, before anything that depends on the change leaves the node.
pub(crate) struct PreKeys {
    store: Arc<Mutex<Store>>,
    seal_key: Zeroizing<[u8; 32]>,
    keys: Mutex<PreKeyStore>,
    /// Signed prekeys kept past their grace period: X3DH handshakes of mailbox items kept for
    /// later (from senders not yet contacts) name them.
    pinned: Mutex<BTreeSet<u32>>,
}

impl std::fmt::Debug for PreKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreKeys")
            .field("keys", &*lock(&self.keys))
            .finish_non_exhaustive()
    }
}

impl PreKeys {
    /// Loads our prekey store from `store` (creating and saving one on first start) and applies
    /// the rotation policy. Blocking: call it off the async threads.
    pub(crate) fn load(
        store: Arc<Mutex<Store>>,
        database_key: &[u8; 32],
        identity: &Identity,
    ) -> Result<Self, NodeError> {
        let mut seal_key = Zeroizing::new([0u8; 32]);
        hkdf_sha256(None, database_key, PREKEY_KEY_INFO, seal_key.as_mut());
        let now = now_secs();
        let (saved, pinned) = {
            let store = lock(&store);
            (store.load_prekeys()?, store.kept_signed_prekeys(now_ms())?)
        };
        let (keys, changed) = match saved {
            Some(sealed) => {
                let mut keys = PreKeyStore::open_sealed(&seal_key, &sealed)
                    .map_err(|e| NodeError::Internal(format!("prekey store: {e}")))?;
                if keys.identity() != &identity.public() {
                    return Err(NodeError::Internal(
                        "the prekey store belongs to another identity".into(),
                    ));
                }
                let changed = keys
                    .maintain_keeping(&mut OsRng, identity, now, &pinned)
                    .map_err(|e| NodeError::Internal(format!("prekey rotation: {e}")))?;
                (keys, changed)
            }
            None => (PreKeyStore::new_at(&mut OsRng, identity, now), true),
        };
        let this = Self {
            store,
            seal_key,
            keys: Mutex::new(keys),
            pinned: Mutex::new(pinned),
        };
        if changed {
            let keys = lock(&this.keys);
            this.save(&keys)?;
        }
        Ok(this)
    }

    fn save(&self, keys: &PreKeyStore) -> Result<(), NodeError> {
        let sealed = keys.seal(&self.seal_key, &mut OsRng);
        lock(&self.store).save_prekeys(&sealed, now_ms())?;
        Ok(())
    }

    /// Applies the rotation policy, then runs `f`, which says whether it changed the store. All
    /// of it happens on a copy, under the lock: if anything changed, the copy is saved (durably)
    /// before it replaces the store and before this returns; if saving fails, nothing changed.
    /// Blocking: call it off the async threads (or where a short write is acceptable).
    pub(crate) fn update<T>(
        &self,
        identity: &Identity,
        f: impl FnOnce(&mut PreKeyStore) -> (T, bool),
    ) -> Result<T, NodeError> {
        let pinned = lock(&self.pinned).clone();
        let mut keys = lock(&self.keys);
        let mut work = keys.clone();
        let rotated = work
            .maintain_keeping(&mut OsRng, identity, now_secs(), &pinned)
            .map_err(|e| NodeError::Internal(format!("prekey rotation: {e}")))?;
        let (out, changed) = f(&mut work);
        if rotated || changed {
            self.save(&work)?;
            *keys = work;
        }
        Ok(out)
    }

    /// Sets the signed prekeys to keep past their grace period (all those named by mailbox items
    /// kept for later), from the next [`PreKeys::update`] on.
    pub(crate) fn pin(&self, ids: BTreeSet<u32>) {
        *lock(&self.pinned) = ids;
    }

    /// Whether an X3DH handshake naming signed prekey `id` is answered now.
    pub(crate) fn accepts_signed_prekey(&self, id: u32) -> bool {
        lock(&self.keys).accepts_signed_prekey(id, now_secs())
    }

    /// The current bundle without a one-time prekey, as held now (no rotation, no write).
    pub(crate) fn current_bundle(&self) -> PreKeyBundle {
        lock(&self.keys).bundle(None)
    }
}

impl Inner {
    /// Remembers `bundle`, a peer's bundle learned out of band (from the DHT), for the next dial
    /// without a session: its signature is verified first, and a one-time prekey it may carry is
    /// dropped (one published for everyone may already be used). The last bundle learned for an
    /// identity replaces the previous one.
    pub(crate) fn learn_bundle(&self, bundle: PreKeyBundle) -> Result<(), NodeError> {
        bundle
            .verify()
            .map_err(|_| NodeError::Authentication("prekey bundle signature does not verify"))?;
        let bundle = PreKeyBundle::new(
            *bundle.identity(),
            bundle.signed_prekey_id(),
            *bundle.signed_prekey(),
            *bundle.signed_prekey_signature(),
            None,
        );
        let peer = bundle.identity().node_id();
        let mut learned = lock(&self.learned_bundles);
        if !learned.contains_key(&peer) && learned.len() >= MAX_LEARNED_BUNDLES {
            if let Some(evict) = learned.keys().next().copied() {
                learned.remove(&evict);
            }
        }
        learned.insert(peer, bundle);
        Ok(())
    }

    /// The bundle learned for `contact`, if its identity is the contact's key.
    pub(crate) fn learned_bundle(&self, contact: &ContactRecord) -> Option<PreKeyBundle> {
        lock(&self.learned_bundles)
            .get(&contact.node_id)
            .filter(|b| b.identity().to_bytes() == contact.public_key)
            .cloned()
    }

    /// Forgets the bundle learned for `peer` (the peer refused a handshake made from it).
    pub(crate) fn forget_bundle(&self, peer: &NodeId) {
        lock(&self.learned_bundles).remove(peer);
    }

    /// Our current bundle without a one-time prekey, for publishing. Applies the rotation policy
    /// first (saving the store if it rotated); if that save fails, the bundle of the saved state.
    pub(crate) fn published_bundle(&self) -> PreKeyBundle {
        match self
            .prekeys
            .update(&self.identity, |k| (k.bundle(None), false))
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "prekey rotation could not be saved");
                self.prekeys.current_bundle()
            }
        }
    }

    /// A bundle to offer a dialer: the current signed prekey and a fresh one-time prekey, saved
    /// before this returns.
    pub(crate) async fn offer_bundle(self: &Arc<Self>) -> Result<PreKeyBundle, NodeError> {
        let this = self.clone();
        blocking(move || {
            this.prekeys.update(&this.identity, |k| {
                let otk = k
                    .generate_one_time_prekeys(&mut OsRng, 1)
                    .first()
                    .map(|(id, _)| *id);
                (k.bundle(otk), true)
            })
        })
        .await
    }

    /// X3DH as responder with the first message: on success the initial message is marked used
    /// (one-time prekey consumed or ephemeral key recorded) and saved before this returns. The
    /// inner result is the peer's fault, if any.
    pub(crate) async fn respond_x3dh(
        self: &Arc<Self>,
        initial: InitialMessage,
        first: &Envelope,
    ) -> Result<Result<Session, SessionError>, NodeError> {
        Ok(self
            .respond_x3dh_with_start(initial, first)
            .await?
            .map(|(session, _, _)| session))
    }

    /// [`Inner::respond_x3dh`], also returning the session as it was before the first message
    /// and that message's plaintext ([`Session::respond_with_start`]).
    pub(crate) async fn respond_x3dh_with_start(
        self: &Arc<Self>,
        initial: InitialMessage,
        first: &Envelope,
    ) -> Result<Result<(Session, Session, Plaintext), SessionError>, NodeError> {
        let this = self.clone();
        let (binding, first) = (first.kind.binding(), crate::sessions::to_ratchet(first));
        blocking(move || {
            this.prekeys.update(&this.identity, |k| {
                let (id, now) = (&this.identity, now_secs());
                let opened =
                    Session::respond_with_start(&mut OsRng, id, k, &initial, &first, &binding, now);
                let used = opened.is_ok();
                (opened, used)
            })
        })
        .await
    }
}

/// The map of learned bundles, as [`Inner`] holds it.
pub(crate) type LearnedBundles = Mutex<HashMap<NodeId, PreKeyBundle>>;
