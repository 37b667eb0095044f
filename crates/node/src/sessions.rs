//! The session manager: one current Double Ratchet session per contact, persisted (sealed) before
//! any ciphertext made with it leaves the node, plus the session that lost a crossing, kept in
//! memory to decrypt messages already in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dp2ptcs_crypto::kdf::hkdf_sha256;
use dp2ptcs_crypto::ratchet::{resolve_crossing, CrossingResolution, Header, RatchetPublicKey};
use dp2ptcs_crypto::{Plaintext, RatchetMessage, Session, SharedSession};
use dp2ptcs_store::Store;
use dp2ptcs_types::NodeId;
use dp2ptcs_wire::{Envelope, MessageKind, RatchetHeader};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::commit::GroupCommit;
use crate::NodeError;

/// HKDF info of the key that seals session pickles (derived from the database key).
pub(crate) const PICKLE_KEY_INFO: &[u8] = b"DP2PTCS session pickle key v1";
/// Version byte of a stored session record.
const RECORD_VERSION: u8 = 1;

/// A session and a process-unique id to tell sessions apart.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    id: u64,
    session: SharedSession,
}

impl Handle {
    /// Tells this session apart from every other of this run (not kept across restarts).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The X3DH initial message this session still sends with every message (we initiated it
    /// and the peer has not answered yet).
    pub(crate) fn pending_initial(&self) -> Option<dp2ptcs_crypto::x3dh::InitialMessage> {
        self.session.with(|s| s.pending_initial_message().cloned())
    }
}

#[derive(Debug, Clone)]
struct PeerSessions {
    current: Handle,
    /// Whether we initiated `current`.
    ours: bool,
    /// The session that lost a crossing, or the one `current` replaced: decryption only.
    previous: Option<Handle>,
}

/// Sessions with contacts. The map holds one entry per contact (contacts are bounded by
/// `MAX_CONTACTS`); only authenticated contacts ever get an entry.
pub(crate) struct SessionManager {
    store: Arc<Mutex<Store>>,
    /// Every session save goes through it, in the order of the session's states.
    commit: Arc<GroupCommit>,
    /// Sessions advanced by the steps of the transaction being written, by peer and handle id,
    /// saved once each just before it commits ([`SessionManager::save_advanced`]). Keyed by
    /// handle too: a step of a session that was just replaced must not hide its successor's.
    advanced: Mutex<HashMap<(NodeId, u64), (Handle, bool)>>,
    pickle_key: Zeroizing<[u8; 32]>,
    our_id: NodeId,
    peers: Mutex<HashMap<NodeId, PeerSessions>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("our_id", &self.our_id)
            .finish_non_exhaustive()
    }
}

/// Store writes to make in the same transaction as a session save.
pub(crate) type StoreStep = Box<dyn FnOnce(&Store) -> Result<(), NodeError> + Send>;

/// A reply to encrypt with the session that decrypted a message: its kind and plaintext.
pub(crate) type Reply = (MessageKind, Zeroizing<Vec<u8>>);

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?
}

pub(crate) fn to_ratchet(env: &Envelope) -> RatchetMessage {
    RatchetMessage {
        header: Header {
            ratchet_key: RatchetPublicKey::from_bytes(env.header.dh_public_key),
            previous_chain_length: env.header.previous_chain_length,
            message_number: env.header.message_number,
        },
        ciphertext: env.payload.clone(),
    }
}

impl SessionManager {
    /// Must be called inside a tokio runtime (see [`GroupCommit`]).
    pub(crate) fn new(
        store: Arc<Mutex<Store>>,
        database_key: &[u8; 32],
        our_id: NodeId,
    ) -> Arc<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf_sha256(None, database_key, PICKLE_KEY_INFO, key.as_mut());
        Arc::new_cyclic(|me: &std::sync::Weak<Self>| {
            let me = me.clone();
            let hook: crate::commit::Hook = Box::new(move |tx: &Store| match me.upgrade() {
                Some(manager) => manager.save_advanced(tx),
                None => Ok(()),
            });
            Self {
                commit: GroupCommit::with_hook(store.clone(), Some(hook)),
                advanced: Mutex::new(HashMap::new()),
                store,
                pickle_key: key,
                our_id,
                peers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }
        })
    }

    /// Notes (on the writer's thread, in a step) that `h`, current with `peer` when it was
    /// used, advanced: it is saved before the step's transaction commits.
    fn advance(&self, peer: NodeId, h: &Handle, ours: bool) {
        lock(&self.advanced).insert((peer, h.id), (h.clone(), ours));
    }

    /// The commit hook: saves each session the transaction's steps advanced, once, in its
    /// latest state, if it is still the current one. A state saved here may be ahead of what
    /// the steps needed (a concurrent encryption advanced it since); that is safe, since a
    /// saved state only ever skips keys, never reuses one.
    fn save_advanced(&self, tx: &Store) -> Result<(), NodeError> {
        let advanced = std::mem::take(&mut *lock(&self.advanced));
        for ((peer, _), (h, ours)) in advanced {
            if self.is_current(&peer, &h) == Some(ours) {
                let record = h.session.with(|s| self.record(s, ours));
                tx.save_session(&peer, &record, now_ms())?;
            }
        }
        Ok(())
    }

    fn handle(&self, session: Session) -> Handle {
        Handle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            session: SharedSession::new(session),
        }
    }

    /// [`Session::chain_rank`] of each of `keys` (ratchet keys of `peer`'s message headers)
    /// under the current session with `peer`; all equal without one.
    pub(crate) async fn chain_ranks(
        self: &Arc<Self>,
        peer: NodeId,
        keys: &[[u8; 32]],
    ) -> Result<Vec<usize>, NodeError> {
        let Some(h) = self.current(peer).await? else {
            return Ok(vec![0; keys.len()]);
        };
        Ok(h.session.with(|s| {
            keys.iter()
                .map(|k| s.chain_rank(&RatchetPublicKey::from_bytes(*k)))
                .collect()
        }))
    }

    /// The current session with `peer`, loading it from the store if needed.
    pub(crate) async fn current(
        self: &Arc<Self>,
        peer: NodeId,
    ) -> Result<Option<Handle>, NodeError> {
        if let Some(ps) = lock(&self.peers).get(&peer) {
            return Ok(Some(ps.current.clone()));
        }
        let this = self.clone();
        blocking(move || {
            let Some(blob) = lock(&this.store).load_session(&peer)? else {
                return Ok(None);
            };
            let (ours, sealed) = match blob.as_slice() {
                [RECORD_VERSION, flag @ (0 | 1), sealed @ ..] => (*flag == 0, sealed),
                _ => return Err(NodeError::Internal("unknown session record".into())),
            };
            let session = Session::open_sealed(&this.pickle_key, sealed)
                .map_err(|e| NodeError::Internal(format!("session pickle: {e}")))?;
            let mut peers = lock(&this.peers);
            let ps = peers.entry(peer).or_insert_with(|| PeerSessions {
                current: this.handle(session),
                ours,
                previous: None,
            });
            Ok(Some(ps.current.clone()))
        })
        .await
    }

    /// The stored record of `session` (sealed), `ours` if we initiated it.
    fn record(&self, session: &Session, ours: bool) -> Vec<u8> {
        let mut blob = vec![RECORD_VERSION, if ours { 0 } else { 1 }];
        blob.extend(session.seal(&self.pickle_key, &mut OsRng));
        blob
    }

    /// Adds a new session (`ours`: we initiated it). If it becomes current it is saved before
    /// this returns. Crossing sessions (one initiated by each side) resolve with
    /// [`resolve_crossing`]: the loser stays for decryption only.
    pub(crate) async fn install(
        self: &Arc<Self>,
        peer: NodeId,
        session: Session,
        ours: bool,
    ) -> Result<Handle, NodeError> {
        let (h, ()) = self.install_with(peer, session, ours, |_| Ok(())).await?;
        Ok(h)
    }

    /// [`SessionManager::install`], also running `step` in the store transaction that saves the
    /// session (or in one of its own if the session lost a crossing and is not saved): one
    /// durable commit for both, before this returns. If it fails, neither is saved, though the
    /// session stays installed in memory.
    pub(crate) async fn install_with<T: Send + 'static>(
        self: &Arc<Self>,
        peer: NodeId,
        session: Session,
        ours: bool,
        step: impl FnOnce(&Store) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<(Handle, T), NodeError> {
        // Make sure a stored session is loaded first, so the rule sees it.
        self.current(peer).await?;
        let this = self.clone();
        let (new, saved) = blocking(move || {
            let new = this.handle(session);
            let mut peers = lock(&this.peers);
            let becomes_current = match peers.get(&peer) {
                None => true,
                Some(ps) if ps.ours == ours => true,
                Some(_) => {
                    let we_win =
                        resolve_crossing(&this.our_id, &peer) == CrossingResolution::KeepOurs;
                    ours == we_win
                }
            };
            let saved = if becomes_current {
                // Queued after every save of the session it replaces, before any of its own.
                let record = new.session.with(|s| this.record(s, ours));
                let saved = this.commit.submit(move |tx| {
                    let out = step(tx)?;
                    tx.save_session(&peer, &record, now_ms())?;
                    Ok(out)
                });
                let previous = peers.get(&peer).map(|ps| ps.current.clone());
                peers.insert(
                    peer,
                    PeerSessions {
                        current: new.clone(),
                        ours,
                        previous,
                    },
                );
                saved
            } else {
                if let Some(ps) = peers.get_mut(&peer) {
                    ps.previous = Some(new.clone());
                }
                this.commit.submit(step)
            };
            Ok((new, saved))
        })
        .await?;
        let out = saved.wait().await?;
        Ok((new, out))
    }

    fn is_current(&self, peer: &NodeId, h: &Handle) -> Option<bool> {
        lock(&self.peers)
            .get(peer)
            .filter(|ps| ps.current.id == h.id)
            .map(|ps| ps.ours)
    }

    /// Encrypts `plaintext` as a `kind` envelope with session `h`, saving the new state before
    /// returning if `h` is the current session.
    pub(crate) async fn encrypt(
        self: &Arc<Self>,
        peer: NodeId,
        h: &Handle,
        kind: MessageKind,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Envelope, NodeError> {
        self.encrypt_with(peer, h, kind, plaintext, None).await
    }

    /// Runs `step` in the group commit: in a transaction shared with the writes queued beside
    /// it; returns once that transaction is durable.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        step: impl FnOnce(&Store) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        self.commit.run(step).await
    }

    /// [`SessionManager::encrypt`], also running `also` (if any) in the same store transaction
    /// as the save of the new state: one durable commit for both, before the envelope is
    /// returned. If either fails, neither is saved and no envelope is returned. The commit is
    /// shared with other requests' ([`GroupCommit`]); the state is saved only if `h` is still
    /// the current session then.
    pub(crate) async fn encrypt_with(
        self: &Arc<Self>,
        peer: NodeId,
        h: &Handle,
        kind: MessageKind,
        plaintext: Zeroizing<Vec<u8>>,
        also: Option<StoreStep>,
    ) -> Result<Envelope, NodeError> {
        let this = self.clone();
        let h = h.clone();
        let (env, saved) = blocking(move || {
            let persist = this.is_current(&peer, &h);
            h.session.with(|s| {
                let env = this.seal_envelope(s, kind, &plaintext)?;
                let mut saved = None;
                if persist.is_some() || also.is_some() {
                    let (manager, h) = (this.clone(), h.clone());
                    // Queued with the session locked: its states reach the store in order. The
                    // state saved is the one at commit time, at least this one.
                    saved = Some(this.commit.submit(move |tx| {
                        if let Some(also) = also {
                            also(tx)?;
                        }
                        if let Some(ours) = persist {
                            manager.advance(peer, &h, ours);
                        }
                        Ok(())
                    }));
                }
                Ok::<_, NodeError>((env, saved))
            })
        })
        .await?;
        if let Some(saved) = saved {
            saved.wait().await?;
        }
        Ok(env)
    }

    /// Encrypts `plaintext` with `s` into a `kind` envelope from us (saves nothing).
    fn seal_envelope(
        &self,
        s: &mut Session,
        kind: MessageKind,
        plaintext: &[u8],
    ) -> Result<Envelope, NodeError> {
        let m = s
            .encrypt_in_context(plaintext, &kind.binding())
            .map_err(|e| NodeError::Internal(format!("encrypt: {e}")))?;
        Ok(Envelope {
            sender: self.our_id,
            kind,
            header: RatchetHeader {
                dh_public_key: *m.header.ratchet_key.as_bytes(),
                previous_chain_length: m.header.previous_chain_length,
                message_number: m.header.message_number,
            },
            payload: m.ciphertext,
        })
    }

    /// Decrypts an envelope from `peer` with the current session or the previous one; the
    /// current one's new state is saved before this returns.
    pub(crate) async fn decrypt(
        self: &Arc<Self>,
        peer: NodeId,
        env: &Envelope,
    ) -> Result<(Handle, Plaintext), NodeError> {
        let (h, p, _) = self.decrypt_with(peer, env, |_, p| Ok((p, None))).await?;
        Ok((h, p))
    }

    /// Decrypts an envelope from `peer` like [`SessionManager::decrypt`], then, in one store
    /// transaction (one durable commit) before returning:
    ///
    /// - runs `then` on the plaintext, which may write to the store and may ask for a reply
    ///   (kind and plaintext), encrypted with the same session;
    /// - saves the session's new state (after the reply's encryption) if it is the current one.
    ///
    /// So what `then` writes is durable before the reply can leave, and the reply's ratchet state
    /// is durable before its ciphertext leaves. `then` reports the peer's faults (say, a
    /// plaintext that does not parse) in its own result, `T`: the transaction still commits the
    /// session's advance, so `then` must leave the store consistent when it fails that way. An
    /// `Err` from `then` (a store failure) rolls everything back.
    pub(crate) async fn decrypt_with<T, F>(
        self: &Arc<Self>,
        peer: NodeId,
        env: &Envelope,
        then: F,
    ) -> Result<(Handle, T, Option<Envelope>), NodeError>
    where
        T: Send + 'static,
        F: FnOnce(&Store, Plaintext) -> Result<(T, Option<Reply>), NodeError> + Send + 'static,
    {
        self.current(peer).await?;
        let candidates: Vec<Handle> = match lock(&self.peers).get(&peer) {
            Some(ps) => std::iter::once(ps.current.clone())
                .chain(ps.previous.clone())
                .collect(),
            None => Vec::new(),
        };
        let this = self.clone();
        let msg = to_ratchet(env);
        let binding = env.kind.binding();
        // The whole step runs in a shared transaction on the writer's thread (its own savepoint:
        // a failure undoes its writes alone), with the session locked only there.
        self.commit
            .run(move |tx| {
                let mut then = Some(then);
                for h in candidates {
                    let persist = this.is_current(&peer, &h);
                    let out = h.session.with(|s| {
                        // If what follows the decryption fails (say, the store), its writes
                        // are undone, and so is the session's step: the message can be opened
                        // again (a mailbox item is fetched again as it is).
                        let before = s.clone();
                        let Ok(p) = s.decrypt_in_context(&mut OsRng, &msg, &binding) else {
                            return Ok::<_, NodeError>(None);
                        };
                        let Some(then) = then.take() else {
                            return Err(NodeError::Internal("decrypted twice".into()));
                        };
                        let handled = then(tx, p).and_then(|(t, reply)| {
                            let reply = match reply {
                                Some((kind, plaintext)) => {
                                    Some(this.seal_envelope(s, kind, &plaintext)?)
                                }
                                None => None,
                            };
                            Ok((t, reply))
                        });
                        let (t, reply) = match handled {
                            Ok(done) => done,
                            Err(e) => {
                                *s = before;
                                return Err(e);
                            }
                        };
                        if let Some(ours) = persist {
                            this.advance(peer, &h, ours);
                        }
                        Ok(Some((t, reply)))
                    })?;
                    if let Some((t, reply)) = out {
                        return Ok((h, t, reply));
                    }
                }
                Err(NodeError::Authentication("message does not decrypt"))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use dp2ptcs_crypto::ratchet::RatchetKeyPair;
    use dp2ptcs_crypto::x3dh::{AssociatedData, SharedSecret};
    use dp2ptcs_crypto::Identity;

    fn session(ours: &Identity, theirs: &Identity, secret: u8) -> Session {
        let remote = RatchetKeyPair::generate(&mut OsRng);
        Session::new_initiator(
            &mut OsRng,
            &SharedSecret::from_bytes([secret; 32]),
            AssociatedData::new(&ours.public(), &theirs.public()),
            *remote.public().as_bytes(),
        )
        .unwrap()
    }

    /// A message whose handling fails after it decrypted (the store, say) leaves the session as
    /// it was, in memory and in the store: the same message opens again (a mailbox item is
    /// fetched again as it is), even after a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_after_decryption_leaves_the_message_openable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(dp2ptcs_store::DB_FILE), &[4; 32]).unwrap();
        let store = Arc::new(Mutex::new(store));
        let (us, them) = (
            Identity::generate(&mut OsRng),
            Identity::generate(&mut OsRng),
        );
        let manager = SessionManager::new(store.clone(), &[4; 32], us.node_id());
        let peer = them.node_id();
        // They initiated; we hold the responder's side.
        let secret = SharedSecret::from_bytes([7; 32]);
        let ad = AssociatedData::new(&them.public(), &us.public());
        let ours = RatchetKeyPair::generate(&mut OsRng);
        let theirs =
            Session::new_initiator(&mut OsRng, &secret, ad, *ours.public().as_bytes()).unwrap();
        manager
            .install(peer, Session::new_responder(&secret, ad, ours), false)
            .await
            .unwrap();
        let m = theirs
            .clone()
            .encrypt_in_context(b"hello", &MessageKind::Chat.binding())
            .unwrap();
        let env = Envelope {
            sender: peer,
            kind: MessageKind::Chat,
            header: dp2ptcs_wire::RatchetHeader {
                dh_public_key: *m.header.ratchet_key.as_bytes(),
                previous_chain_length: m.header.previous_chain_length,
                message_number: m.header.message_number,
            },
            payload: m.ciphertext,
        };
        let failed = manager
            .decrypt_with(
                peer,
                &env,
                |_, _| -> Result<((), Option<Reply>), NodeError> {
                    Err(NodeError::Internal("the store failed".into()))
                },
            )
            .await;
        assert!(failed.is_err());
        // After a restart too: the saved state is the one before the message (the state a
        // session opened by X3DH from a mailbox is saved in, before its first message).
        let restarted = SessionManager::new(store.clone(), &[4; 32], us.node_id());
        let (_, plaintext) = restarted.decrypt(peer, &env).await.unwrap();
        assert_eq!(&plaintext[..], b"hello");
        let (_, plaintext) = manager.decrypt(peer, &env).await.unwrap();
        assert_eq!(&plaintext[..], b"hello");
    }

    /// A step of a session that was replaced meanwhile must not hide the advance of the session
    /// that replaced it: the current one is what the commit saves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_sessions_step_does_not_hide_the_current_ones_save() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(dp2ptcs_store::DB_FILE), &[4; 32]).unwrap();
        let store = Arc::new(Mutex::new(store));
        let (us, them) = (
            Identity::generate(&mut OsRng),
            Identity::generate(&mut OsRng),
        );
        let manager = SessionManager::new(store.clone(), &[4; 32], us.node_id());
        let peer = them.node_id();
        let old = manager
            .install(peer, session(&us, &them, 1), true)
            .await
            .unwrap();
        let new = manager
            .install(peer, session(&us, &them, 2), true)
            .await
            .unwrap();
        // The new session advances (a message is encrypted with it), then a late step of the
        // old one lands in the same transaction.
        new.session.with(|s| s.encrypt(b"hello").unwrap());
        let (m, n, o) = (manager.clone(), new.clone(), old.clone());
        manager
            .commit
            .run(move |_| {
                m.advance(peer, &n, true);
                m.advance(peer, &o, true);
                Ok(())
            })
            .await
            .unwrap();
        let saved = lock(&store).load_session(&peer).unwrap().unwrap();
        let expected = new.session.with(|s| s.encrypt(b"probe").unwrap());
        // The saved state is the new session after "hello": it encrypts the probe with the same
        // message number as the live one did.
        let reloaded = Session::open_sealed(&manager.pickle_key, &saved[2..]).unwrap();
        let again = SharedSession::new(reloaded).with(|s| s.encrypt(b"probe").unwrap());
        assert_eq!(again.header.message_number, expected.header.message_number);
        assert_eq!(again.header.ratchet_key, expected.header.ratchet_key);
    }
}
