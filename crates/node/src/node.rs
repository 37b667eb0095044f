//! The public [`Node`] handle: endpoint, connection pool, router and messaging.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dp2ptcs_crypto::{Identity, PreKeyBundle, UnlockedKeystore};
use dp2ptcs_store::{
    AddOutcome, Cancel, ContactRecord, Direction, HistoryQuery, MessageRecord, MessageState,
    NewMessage, Store, StoreError, Undelivered,
};
use dp2ptcs_types::{MessageId, NodeId};
use dp2ptcs_wire::{
    Chat, Chats, Envelope, MessageKind, Receipt, WireErrorCode, MAX_BATCH_CHATS, MAX_BATCH_LEN,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rand::rngs::OsRng;
use rand::Rng;
use tokio::sync::{broadcast, oneshot, watch, Semaphore};
use zeroize::Zeroizing;

use crate::batch::{Drainer, Pushed, SendQueues, Waiting};
use crate::discovery::{DhtStatus, Discovery, LookupReport, PeerEntry};
use crate::frames::{write_frame, FrameReader};
use crate::limits::{ConnectionLimiter, ConnectionSlot, TokenBucket};
use crate::outbox::{InFlight, Outbox};
use crate::pool::Pool;
use crate::prekeys::{LearnedBundles, PreKeys};
use crate::sessions::{blocking, lock, now_ms, Reply, SessionManager, StoreStep};
use crate::tasks::Tasks;
use crate::{tls, NodeConfig, NodeError, DHT_ALPN, SERVER_NAME};

/// Something that happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A new chat message arrived (each message id is reported once).
    Message {
        /// Its end-to-end id.
        id: MessageId,
        /// The sender.
        from: NodeId,
        /// The sender's clock when sent, Unix milliseconds.
        sent_at_ms: u64,
        /// The text.
        body: String,
    },
    /// The end-to-end receipt for a message we sent arrived.
    Delivered {
        /// The message.
        id: MessageId,
        /// Who received it.
        to: NodeId,
    },
    /// A message we sent outlived its time to live without a receipt: the node gave up on it.
    /// A copy that left before may still be received; its receipt then reports it
    /// [`NodeEvent::Delivered`] after all.
    Expired {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: NodeId,
    },
    /// A message we sent was cancelled before its receipt came ([`Node::cancel_message`]).
    Cancelled {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: NodeId,
    },
    /// A message was put in the outbox ([`Node::queue_chat`]): the history has it, `queued`.
    /// ([`Node::send_chat`] reports none: its caller has the outcome.)
    Queued {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: NodeId,
    },
    /// A message we sent, its recipient out of reach, is now `held`: in the recipient's mailbox
    /// at another node, or already fetched from it (its holders say the recipient deleted it).
    /// Reported when it becomes so, not when it is deposited again.
    Held {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: NodeId,
    },
}

/// What [`Node::cancel_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReport {
    /// What the store found and did.
    pub outcome: Cancel,
    /// Cancelled while a copy was being sent or put in a mailbox: that copy may still arrive.
    pub in_flight: bool,
}

/// What [`Node::cancel_messages_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkCancelReport {
    /// The messages cancelled, oldest first.
    pub cancelled: Vec<MessageId>,
    /// Those of them a copy of which was being sent or put in a mailbox at that moment.
    pub in_flight: Vec<MessageId>,
}

/// Most of a contact's outbox messages an outbox worker holds at once: a full pipeline of full
/// batches (PROTOCOL.md 9.3).
const OUTBOX_WINDOW: u32 = (PIPELINE_DEPTH * MAX_BATCH_CHATS) as u32;
/// ... and no more once their bodies reach this (at least one message): a full pipeline of
/// batches of the largest size, with room to spare.
const OUTBOX_WINDOW_BYTES: usize = 2 * PIPELINE_DEPTH * MAX_BATCH_LEN;

fn code(c: WireErrorCode) -> VarInt {
    VarInt::from_u32(c.code())
}

/// A snapshot of a node, from [`Node::status`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Our node id.
    pub node_id: NodeId,
    /// The bound UDP address.
    pub listen: SocketAddr,
    /// Time since the node started.
    pub uptime: Duration,
    /// Peers with an open, authenticated connection.
    pub connected: Vec<NodeId>,
    /// Open messaging connections, authenticated: one per connected peer, and for a short while
    /// two when a peer and this node dialed each other at once (the one not kept closes once it
    /// is idle, PROTOCOL.md 9.1).
    pub connections: usize,
    /// Number of contacts.
    pub contacts: usize,
    /// Messages per (direction, state).
    pub messages: Vec<(Direction, MessageState, u64)>,
    /// Peers the outbox is waiting to retry.
    pub peers_retrying: usize,
    /// Receipts for messages taken from the mailbox that have not reached their senders yet.
    pub receipts_owed: u64,
    /// Nodes that are not contacts whose messages from the mailbox are kept until they are
    /// added, with how many each, most first.
    pub strangers: Vec<(NodeId, u64)>,
    /// The DHT: routing table, records held, connections.
    pub dht: DhtStatus,
}

/// The state every task of a node shares.
pub(crate) struct Inner {
    /// Request streams served that carried more than one envelope (dp2ptcs/2).
    pipelined_streams: AtomicU64,
    pub(crate) config: NodeConfig,
    pub(crate) identity: Identity,
    pub(crate) node_id: NodeId,
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) sessions: Arc<SessionManager>,
    /// Our prekeys, persisted.
    pub(crate) prekeys: PreKeys,
    /// Peers' bundles learned out of band (bounded by `MAX_LEARNED_BUNDLES`).
    pub(crate) learned_bundles: LearnedBundles,
    pub(crate) endpoint: Endpoint,
    pub(crate) discovery: Discovery,
    /// The connection requests to each authenticated peer go on (bounded by
    /// `max_connections`), and a spare for a while after both dialed each other.
    pool: Mutex<Pool>,
    /// Authenticated messaging connections being served, pooled or not.
    connections: AtomicUsize,
    /// Where the DHT last found a contact (entries only for contacts we send to).
    resolved: Mutex<HashMap<NodeId, SocketAddr>>,
    /// One dial at a time per peer (entries only for contacts we send to).
    dial_locks: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Request rate per authenticated peer.
    buckets: Mutex<HashMap<NodeId, TokenBucket>>,
    pub(crate) limiter: ConnectionLimiter,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Every background task; shutdown stops them all.
    pub(crate) tasks: Tasks,
    pub(crate) outbox: Outbox,
    /// Chats `send_chat` callers wait on, sent together per peer.
    send_queues: Arc<SendQueues>,
    /// One mailbox check at a time.
    pub(crate) mailbox_lock: tokio::sync::Mutex<()>,
    /// Tries at paying the receipts owed to each contact (entries only while some are owed).
    pub(crate) receipts_due: Mutex<HashMap<NodeId, crate::mailbox::OwedTries>>,
    started: Instant,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// A running node. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[cfg(test)]
impl Node {
    /// The node's internals, for the crate's own tests.
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Node {
    /// Binds the endpoint and starts serving. `keys` gives the identity and the database key
    /// (from which the session pickle key is derived); `store` is the node database. A
    /// `config` out of range ([`NodeConfig::check`]) is refused with
    /// [`NodeError::InvalidConfig`].
    pub async fn start(
        config: NodeConfig,
        keys: &UnlockedKeystore,
        store: Store,
    ) -> Result<Node, NodeError> {
        config.check()?;
        let identity = keys.identity().clone();
        let node_id = identity.node_id();
        let store = Arc::new(Mutex::new(store));
        let sessions = SessionManager::new(store.clone(), keys.database_key(), node_id);
        // Only the dialer of a messaging connection keeps it alive; DHT connections close when
        // idle.
        let transport = |keep_alive: bool| -> Result<Arc<quinn::TransportConfig>, NodeError> {
            let mut t = quinn::TransportConfig::default();
            t.max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams_per_connection))
                .max_concurrent_uni_streams(VarInt::from_u32(0))
                .max_idle_timeout(Some(
                    quinn::IdleTimeout::try_from(config.idle_timeout)
                        .map_err(|e| NodeError::Tls(e.to_string()))?,
                ))
                .keep_alive_interval(keep_alive.then_some(config.idle_timeout / 3));
            Ok(Arc::new(t))
        };
        let messaging: &[&[u8]] = if config.pipelining {
            &tls::MESSAGING
        } else {
            &[crate::ALPN_V1]
        };
        let server_crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_crypto_for(messaging)?)
                .map_err(|e| NodeError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport(false)?);
        let client_for =
            |alpns: &[&[u8]], keep_alive: bool| -> Result<quinn::ClientConfig, NodeError> {
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(
                    tls::client_crypto_offering(alpns)?,
                )
                .map_err(|e| NodeError::Tls(e.to_string()))?;
                let mut client = quinn::ClientConfig::new(Arc::new(crypto));
                client.transport_config(transport(keep_alive)?);
                Ok(client)
            };
        // Resets from this node stay valid after it restarts (reset.rs).
        let endpoint_config = crate::reset::endpoint_config(keys.database_key());
        let runtime = quinn::default_runtime()
            .ok_or_else(|| NodeError::Internal("no async runtime for QUIC".into()))?;
        let mut endpoint = Endpoint::new(
            endpoint_config,
            Some(server),
            std::net::UdpSocket::bind(config.listen)?,
            runtime,
        )?;
        endpoint.set_default_client_config(client_for(messaging, true)?);
        let discovery = Discovery::new(
            node_id,
            config.dht,
            client_for(&[DHT_ALPN], false)?,
            config.advertise.clone(),
        );
        let prekeys = {
            let (store, identity) = (store.clone(), identity.clone());
            let key = Zeroizing::new(*keys.database_key());
            blocking(move || PreKeys::load(store, &key, &identity)).await?
        };
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            pipelined_streams: AtomicU64::new(0),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            identity,
            node_id,
            store,
            sessions,
            prekeys,
            learned_bundles: Mutex::new(HashMap::new()),
            endpoint,
            discovery,
            pool: Mutex::new(Pool::new(node_id)),
            connections: AtomicUsize::new(0),
            resolved: Mutex::new(HashMap::new()),
            dial_locks: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            limiter: ConnectionLimiter::default(),
            events,
            shutdown,
            tasks: Tasks::default(),
            outbox: Outbox::default(),
            send_queues: Arc::default(),
            mailbox_lock: tokio::sync::Mutex::new(()),
            receipts_due: Mutex::new(HashMap::new()),
            started: Instant::now(),
        });
        inner.restore_held().await;
        inner.tasks.spawn(inner.clone().accept_loop());
        inner.tasks.spawn(inner.clone().outbox_loop());
        inner.tasks.spawn(inner.clone().discovery_loop());
        inner.tasks.spawn(inner.clone().maintain());
        inner.tasks.spawn(inner.clone().mailbox_loop());
        inner.tasks.spawn(inner.clone().persist_held());
        match inner.endpoint.local_addr() {
            Ok(addr) => tracing::info!(node = %node_id.short(8), %addr, "node started"),
            Err(e) => tracing::info!(node = %node_id.short(8), error = %e, "node started"),
        }
        Ok(Node { inner })
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// Remembers `bundle`, a bundle fetched from the DHT, so that the next dial to its owner
    /// without a session runs X3DH from it directly, without asking the peer for a bundle
    /// (`PROTOCOL.md` section 9.2). Refuses a bundle whose signature does not verify; drops a
    /// one-time prekey it may carry. A bundle the peer refuses is forgotten.
    pub fn learn_bundle(&self, bundle: PreKeyBundle) -> Result<(), NodeError> {
        self.inner.learn_bundle(bundle)
    }

    /// Our current prekey bundle without a one-time prekey, for publishing (in the DHT). It
    /// applies the rotation policy first, so it may rotate the signed prekey or drop a retired
    /// one and then write the database (a few times a week at most).
    pub fn prekey_bundle(&self) -> PreKeyBundle {
        self.inner.published_bundle()
    }

    /// A new subscription to node events (bounded; a lagging subscriber loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// Records and sends a chat message to `contact` now, and waits for its end-to-end receipt.
    /// Returns the message id once the receipt arrived. An error before the message was
    /// accepted (text too long, or the node already stopping) records nothing. Once accepted,
    /// the message is in the outbox whatever happens: on error (including a shutdown while it
    /// waits) it stays there (`queued`, or `sent` if it left) and is retried until its receipt
    /// arrives.
    pub async fn send_chat(
        &self,
        contact: &ContactRecord,
        text: &str,
    ) -> Result<MessageId, NodeError> {
        self.inner.send_chat(contact, text).await
    }

    /// [`Node::queue_chat`] with a time to live of its own instead of the configured default
    /// (at most `max_message_ttl`): once it passes without a receipt, the message is `expired`
    /// and reported as [`NodeEvent::Expired`].
    pub async fn queue_chat_with_ttl(
        &self,
        contact: &ContactRecord,
        text: &str,
        ttl: Duration,
    ) -> Result<MessageId, NodeError> {
        self.inner.queue_chat(contact, text, Some(ttl)).await
    }

    /// Records a chat message to `contact` in the durable outbox and returns its id at once;
    /// the outbox sends it (in order with the contact's other queued messages) and retries until
    /// the end-to-end receipt arrives, reported as [`NodeEvent::Delivered`].
    pub async fn queue_chat(
        &self,
        contact: &ContactRecord,
        text: &str,
    ) -> Result<MessageId, NodeError> {
        self.inner.queue_chat(contact, text, None).await
    }

    /// The addresses, connections, contacts and message counts of this node.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let inner = &self.inner;
        let connected = lock(&inner.pool).connected();
        let store = inner.store.clone();
        let (contacts, messages, receipts_owed, strangers) = blocking(move || {
            let store = lock(&store);
            Ok((
                store.contacts()?.len(),
                store.message_counts()?,
                store.receipts_owed(now_ms())?,
                store.strangers_waiting(now_ms())?,
            ))
        })
        .await?;
        Ok(NodeStatus {
            node_id: inner.node_id,
            listen: self.local_addr()?,
            uptime: inner.started.elapsed(),
            connected,
            connections: inner.connections.load(Ordering::Relaxed),
            contacts,
            messages,
            peers_retrying: inner.outbox.backing_off(),
            receipts_owed,
            strangers,
            dht: inner.dht_status(),
        })
    }

    /// The DHT routing table, by bucket.
    pub fn peers(&self) -> Vec<PeerEntry> {
        self.inner.dht_peers()
    }

    /// Looks `target` up in the DHT and reports the path the lookup took.
    pub async fn lookup(&self, target: &NodeId) -> Result<LookupReport, NodeError> {
        self.inner.lookup(*target).await
    }

    /// Sets the addresses our DHT peer record advertises, and republishes it.
    pub fn set_advertised(&self, addresses: Vec<SocketAddr>) {
        self.inner.set_advertised(addresses);
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            if inner.dht_status().peers > 0 {
                if let Err(e) = inner.publish().await {
                    tracing::debug!(error = %e, "republishing after an address change failed");
                }
            }
        });
    }

    /// The contact with node id `id`.
    pub async fn contact(&self, id: &NodeId) -> Result<Option<ContactRecord>, NodeError> {
        let store = self.inner.store.clone();
        let id = *id;
        blocking(move || Ok(lock(&store).contact(&id)?)).await
    }

    /// Every contact, by name.
    pub async fn contacts(&self) -> Result<Vec<ContactRecord>, NodeError> {
        let store = self.inner.store.clone();
        blocking(move || Ok(lock(&store).contacts()?)).await
    }

    /// The message history matching `q` (see [`HistoryQuery`]).
    pub async fn history(&self, q: &HistoryQuery<'_>) -> Result<Vec<MessageRecord>, NodeError> {
        let store = self.inner.store.clone();
        let peer = q.peer.copied();
        let (direction, after_seq, limit, newest, max_body_bytes) = (
            q.direction,
            q.after_seq,
            q.limit,
            q.newest,
            q.max_body_bytes,
        );
        blocking(move || {
            Ok(lock(&store).history(&HistoryQuery {
                peer: peer.as_ref(),
                direction,
                after_seq,
                limit,
                newest,
                max_body_bytes,
            })?)
        })
        .await
    }

    /// Whether [`Node::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.is_shutting_down()
    }

    /// Resolves when [`Node::shutdown`] begins.
    pub async fn shutting_down(&self) {
        let mut stop = self.inner.shutdown.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Test support (hostile-peer tests): writes `bytes` as they are on a new stream of the
    /// authenticated connection to `contact`, then returns the application code with which the
    /// peer closed the connection, or `None` if it was still open after `wait`.
    #[doc(hidden)]
    pub async fn send_raw_stream(
        &self,
        contact: &ContactRecord,
        bytes: &[u8],
        wait: Duration,
    ) -> Result<Option<u64>, NodeError> {
        let conn = self.inner.connection(contact).await?;
        let (mut send, _recv) = conn.open_bi().await?;
        send.write_all(bytes)
            .await
            .map_err(|e| NodeError::Stream(e.to_string()))?;
        let _ = send.finish();
        Ok(match tokio::time::timeout(wait, conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
            Ok(other) => return Err(other.into()),
            Err(_) => None,
        })
    }

    /// Test support: a new request stream on the authenticated connection to `contact`, and
    /// each `(kind, plaintext)` encrypted with the session with it, encoded; with `sent_as`,
    /// each envelope's type is then changed to it, as an on-path attacker could.
    async fn test_stream(
        &self,
        contact: &ContactRecord,
        envelopes: &[(MessageKind, Vec<u8>)],
        sent_as: Option<MessageKind>,
    ) -> Result<(Connection, SendStream, RecvStream, Vec<Vec<u8>>), NodeError> {
        let (inner, peer) = (&self.inner, contact.node_id);
        let conn = inner.connection(contact).await?;
        let handle = inner
            .sessions
            .current(peer)
            .await?
            .ok_or(NodeError::Internal("no session after handshake".into()))?;
        let mut encoded = Vec::new();
        for (kind, plaintext) in envelopes {
            let plaintext = Zeroizing::new(plaintext.clone());
            let mut env = inner
                .sessions
                .encrypt(peer, &handle, *kind, plaintext)
                .await?;
            env.kind = sent_as.unwrap_or(env.kind);
            encoded.push(env.encode());
        }
        let (send, recv) = conn.open_bi().await?;
        Ok((conn, send, recv, encoded))
    }

    /// Test support (hostile-peer tests): encrypts each `(kind, plaintext)` with the session
    /// with `contact` and writes them all on one new stream of the authenticated connection,
    /// then counts the frames that come back before the stream ends (within `wait` each), and
    /// returns that count with the application code with which the peer closed the connection
    /// (`None` if it was still open after `wait`).
    #[doc(hidden)]
    pub async fn send_envelopes_on_one_stream(
        &self,
        contact: &ContactRecord,
        envelopes: &[(MessageKind, Vec<u8>)],
        wait: Duration,
    ) -> Result<(usize, Option<u64>), NodeError> {
        self.send_on_one_stream(contact, envelopes, None, wait)
            .await
    }

    /// Test support (hostile-peer tests): [`Node::send_envelopes_on_one_stream`] with one
    /// envelope, sealed as `sealed_as` and then sent with the type `sent_as`, as an on-path
    /// attacker could change it.
    #[doc(hidden)]
    pub async fn send_retyped_envelope(
        &self,
        contact: &ContactRecord,
        (sealed_as, plaintext): (MessageKind, Vec<u8>),
        sent_as: MessageKind,
        wait: Duration,
    ) -> Result<(usize, Option<u64>), NodeError> {
        self.send_on_one_stream(contact, &[(sealed_as, plaintext)], Some(sent_as), wait)
            .await
    }

    async fn send_on_one_stream(
        &self,
        contact: &ContactRecord,
        envelopes: &[(MessageKind, Vec<u8>)],
        sent_as: Option<MessageKind>,
        wait: Duration,
    ) -> Result<(usize, Option<u64>), NodeError> {
        let (conn, mut send, mut recv, envelopes) =
            self.test_stream(contact, envelopes, sent_as).await?;
        for env in &envelopes {
            if write_frame(&mut send, env).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
        let (mut replies, mut reader) = (0, FrameReader::new());
        while let Ok(Ok(Some(_))) = tokio::time::timeout(wait, reader.next(&mut recv)).await {
            replies += 1;
        }
        let closed = match tokio::time::timeout(wait, conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
            Ok(_) | Err(_) => None,
        };
        Ok((replies, closed))
    }

    /// Test support: sends `envelopes` on one request stream without ending it and reads one
    /// reply per envelope (within `wait` each); the stream stays open while the returned
    /// [`HeldStream`] lives.
    #[doc(hidden)]
    pub async fn hold_stream_open(
        &self,
        contact: &ContactRecord,
        envelopes: &[(MessageKind, Vec<u8>)],
        wait: Duration,
    ) -> Result<HeldStream, NodeError> {
        let (_, mut send, mut recv, envelopes) = self.test_stream(contact, envelopes, None).await?;
        let mut reader = FrameReader::new();
        let mut replies = 0;
        for env in &envelopes {
            write_frame(&mut send, env).await?;
            if let Ok(Ok(Some(_))) = tokio::time::timeout(wait, reader.next(&mut recv)).await {
                replies += 1;
            }
        }
        Ok(HeldStream {
            replies,
            send,
            _recv: recv,
        })
    }

    /// Test support: holds the store for `hold` (as a slow disk would), from the moment this
    /// returns: every commit waits meanwhile.
    #[doc(hidden)]
    pub async fn hold_store(&self, hold: Duration) {
        let store = self.inner.store.clone();
        let (held, taken) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _store = lock(&store);
            let _ = held.send(());
            std::thread::sleep(hold);
        });
        let _ = taken.await;
    }

    /// Test support: how many request streams this node served that carried more than one
    /// envelope (messaging version 2).
    #[doc(hidden)]
    pub fn pipelined_streams_served(&self) -> u64 {
        self.inner.pipelined_streams.load(Ordering::Relaxed)
    }

    /// Adds the contact of `uri` under `name` (see [`Store::add_contact`] for what it refuses):
    /// the name must be a valid display name, and the URI not this node's own. The check and
    /// the write are one transaction, so a `dp2ptcs contact` command run at the same time
    /// cannot undo it.
    ///
    /// [`Store::add_contact`]: dp2ptcs_store::Store::add_contact
    pub async fn add_contact(
        &self,
        uri: &dp2ptcs_crypto::ContactUri,
        name: &str,
    ) -> Result<(ContactRecord, AddOutcome), NodeError> {
        // The node validates the display name here, and refuses names that could mislead:
        // rules for new names, so a contact stored before them under such a name can still
        // have its addresses refreshed.
        dp2ptcs_crypto::contact_uri::validate_display_name(name)
            .map_err(|e| NodeError::InvalidContact(e.to_string()))?;
        let identity = uri.public_identity();
        if identity.node_id() == self.node_id() {
            return Err(NodeError::InvalidContact(
                "this is the node's own contact URI; add someone else's".into(),
            ));
        }
        let record = contact_from_uri(uri, name, now_ms() / 1000);
        let store = self.inner.store.clone();
        blocking(move || {
            let mut store = lock(&store);
            let known = store
                .contact(&record.node_id)?
                .is_some_and(|c| c.name == record.name);
            if !known {
                crate::api::check_new_contact_name(&record.name)
                    .map_err(NodeError::InvalidContact)?;
            }
            Ok(store.add_contact(&record)?)
        })
        .await
        .inspect(|(c, _)| self.open_kept_from(c.node_id))
    }

    /// Opens now what was kept of `id`'s mailbox items while it was not a contact, if anything
    /// was, instead of at the next mailbox check.
    fn open_kept_from(&self, id: NodeId) {
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let store = inner.store.clone();
            let kept = blocking(move || Ok(!lock(&store).kept_from(&id, now_ms())?.is_empty()));
            if matches!(kept.await, Ok(true)) {
                if let Err(e) = inner.check_mailbox().await {
                    tracing::debug!(error = %e, "opening the messages kept from a new contact failed");
                }
            }
        });
    }

    /// Removes the contact `id`; returns it, or `None` if it was not a contact. Its history and
    /// the messages waiting for it are kept.
    pub async fn remove_contact(&self, id: &NodeId) -> Result<Option<ContactRecord>, NodeError> {
        let store = self.inner.store.clone();
        let id = *id;
        blocking(move || {
            let store = lock(&store);
            let Some(contact) = store.contact(&id)? else {
                return Ok(None);
            };
            store.remove_contact(&id)?;
            Ok(Some(contact))
        })
        .await
    }

    /// Adds or replaces a contact (only contacts may handshake with this node).
    pub async fn put_contact(&self, contact: &ContactRecord) -> Result<(), NodeError> {
        let store = self.inner.store.clone();
        let c = contact.clone();
        blocking(move || Ok(lock(&store).put_contact(&c)?))
            .await
            .inspect(|()| self.open_kept_from(contact.node_id))
    }

    /// The message `id` exchanged with `peer`.
    pub async fn message(
        &self,
        peer: &NodeId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, NodeError> {
        let store = self.inner.store.clone();
        let (peer, id) = (*peer, *id);
        blocking(move || Ok(lock(&store).message(&peer, &id)?)).await
    }

    /// The messages in the outbox (`queued`, `sent` or `held`), oldest first: those to `peer`
    /// only, if given, and at most `limit` after position `after_seq`.
    pub async fn waiting(
        &self,
        peer: Option<&NodeId>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, NodeError> {
        let store = self.inner.store.clone();
        let peer = peer.copied();
        blocking(move || Ok(lock(&store).waiting(peer.as_ref(), after_seq, limit)?)).await
    }

    /// The peers with messages in the outbox, the one waiting longest first.
    pub async fn waiting_peers(&self) -> Result<Vec<NodeId>, NodeError> {
        let store = self.inner.store.clone();
        blocking(move || {
            Ok(lock(&store)
                .outbox_peers()?
                .into_iter()
                .map(|p| p.peer)
                .collect())
        })
        .await
    }

    /// Cancels the message `id` we sent, if it is still in the outbox: it becomes `cancelled`,
    /// is reported as [`NodeEvent::Cancelled`], and is sent and deposited no more. A copy that
    /// had already left (a `sent` or `held` message) or was leaving at that moment
    /// ([`CancelReport::in_flight`]) may still arrive; its receipt then marks it `delivered`.
    pub async fn cancel_message(&self, id: &MessageId) -> Result<CancelReport, NodeError> {
        // A task of its own: the claim, the state change and the event happen together even
        // if the caller stops waiting (a client that hung up).
        tokio::spawn(self.inner.clone().cancel_message(*id))
            .await
            .map_err(|e| NodeError::Internal(format!("cancelling: {e}")))?
    }

    /// Cancels every message waiting for `peer` (see [`Node::cancel_message`]), a contact or
    /// not.
    pub async fn cancel_messages_to(&self, peer: &NodeId) -> Result<BulkCancelReport, NodeError> {
        tokio::spawn(self.inner.clone().cancel_messages_to(*peer))
            .await
            .map_err(|e| NodeError::Internal(format!("cancelling: {e}")))?
    }

    /// Graceful shutdown: stops accepting, lets in-flight requests finish within `deadline`,
    /// closes every connection with `ShuttingDown`, and flushes the store. Background tasks
    /// still running at the deadline are cancelled, and all of them have ended when this returns,
    /// so the UDP socket is released as soon as its connections have drained and the caller's
    /// last `Node` is dropped. Must not be called from inside the node's own tasks.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), NodeError> {
        let inner = &self.inner;
        let end = Instant::now() + deadline;
        let _ = inner.shutdown.send(true);
        inner.endpoint.set_server_config(None);
        // Chats not yet on their way stay in the outbox for the next start.
        inner.send_queues.close();
        let max = u32::try_from(inner.config.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout_at(end.into(), inner.in_flight.clone().acquire_many_owned(max))
                .await;
        if drained.is_err() {
            tracing::warn!("shutdown deadline passed with requests in flight");
        }
        inner.in_flight.close();
        if let Err(e) = inner.save_snapshot().await {
            tracing::warn!(error = %e, "saving the routing table failed");
        }
        inner
            .endpoint
            .close(code(WireErrorCode::ShuttingDown), b"shutting down");
        lock(&inner.pool).clear();
        inner.close_dht();
        let _ = tokio::time::timeout_at(end.into(), inner.endpoint.wait_idle()).await;
        let cancelled = inner.tasks.stop(end.into()).await;
        if cancelled > 0 {
            tracing::debug!(
                cancelled,
                "background tasks cancelled at the shutdown deadline"
            );
        }
        let store = inner.store.clone();
        blocking(move || Ok(lock(&store).checkpoint()?)).await
    }
}

impl Inner {
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn accept_loop(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let incoming = tokio::select! {
                i = self.endpoint.accept() => i,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(incoming) = incoming else { break };
            let ip = incoming.remote_address().ip();
            let Some(slot) = self.limiter.try_acquire(
                Some(ip),
                self.config.max_connections,
                self.config.max_connections_per_ip,
            ) else {
                tracing::debug!(%ip, "connection refused: limit");
                incoming.refuse();
                continue;
            };
            self.tasks
                .spawn(self.clone().serve_incoming(incoming, slot));
        }
    }

    async fn serve_incoming(self: Arc<Self>, incoming: quinn::Incoming, slot: ConnectionSlot) {
        let timeout = self.config.handshake_timeout;
        let conn = match tokio::time::timeout(timeout, incoming).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "inbound QUIC handshake failed");
                return;
            }
            Err(_) => return,
        };
        if crate::discovery::is_dht_connection(&conn) {
            return self.serve_dht_incoming(conn, slot).await;
        }
        let this = self.clone();
        let handshake = async move {
            let (mut send, mut recv) = conn.accept_bi().await?;
            match this.accept_handshake(&mut send, &mut recv).await {
                Ok(peer) => Ok((conn, peer)),
                Err(e) => {
                    conn.close(code(e.wire_code()), b"handshake failed");
                    Err(e)
                }
            }
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok((conn, peer))) => {
                lock(&self.pool).adopt(peer, &conn);
                // It is up: anything queued for it can go now.
                self.outbox.reachable(peer);
                self.serve_connection(conn, peer, slot).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "inbound handshake failed"),
            Err(_) => tracing::debug!("inbound handshake timed out"),
        }
    }

    /// Accepts request streams from an authenticated peer until the connection ends.
    async fn serve_connection(
        self: Arc<Self>,
        conn: Connection,
        peer: NodeId,
        _slot: ConnectionSlot,
    ) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let _counted = Counted(&self.connections);
        let pipelined = pipelined(&conn);
        // A version-1 stream has the time of one request. On a version-2 stream
        // `handle_stream` gives each wait for an envelope that time, and the whole stream at
        // most this.
        let stream_timeout = if pipelined {
            self.config.request_timeout * MAX_ENVELOPES_PER_STREAM as u32
        } else {
            self.config.request_timeout
        };
        // A connection we dialed that the pool no longer keeps (the peer's dial was preferred,
        // PROTOCOL.md 9.1) is closed once it has carried no stream data for a whole `check`:
        // by then every request that took it has been answered or has timed out. Only we keep
        // it alive, so only we can close it.
        let dialed = conn.side() == quinn::Side::Client;
        let check = (self.config.idle_timeout / 3).max(self.config.request_timeout);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + check, check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Stream frames sent and received, at the last tick at which the pool did not keep it.
        let mut unkept_at: Option<u64> = None;
        loop {
            let accepted = tokio::select! {
                accepted = conn.accept_bi() => accepted,
                _ = tick.tick(), if dialed => {
                    let stats = conn.stats();
                    let frames = stats.frame_tx.stream + stats.frame_rx.stream;
                    let mut pool = lock(&self.pool);
                    if pool.keeps(&peer, &conn) {
                        unkept_at = None;
                    } else if pool.get(&peer).is_none() {
                        // The one kept instead closed: this one is the peer's now (it may be
                        // the peer's spare, in use).
                        pool.adopt(peer, &conn);
                        unkept_at = None;
                    } else if unkept_at == Some(frames) {
                        tracing::debug!(peer = %peer.short(8), "closing a duplicate connection");
                        conn.close(code(WireErrorCode::NoError), b"duplicate connection");
                        break;
                    } else {
                        unkept_at = Some(frames);
                    }
                    continue;
                }
            };
            let (send, recv) = match accepted {
                Ok(s) => s,
                Err(_) => break,
            };
            let allowed = self.take_request_token(peer);
            let permit = if allowed && !self.is_shutting_down() {
                self.in_flight.clone().try_acquire_owned().ok()
            } else {
                None
            };
            let Some(permit) = permit else {
                refuse_stream(send, recv, WireErrorCode::LimitExceeded);
                continue;
            };
            let this = self.clone();
            let conn = conn.clone();
            self.tasks.spawn(async move {
                let _permit = permit;
                let mut send = send;
                let r = tokio::time::timeout(
                    stream_timeout,
                    this.handle_stream(peer, &mut send, recv, pipelined),
                )
                .await;
                let r = r.unwrap_or(Err(NodeError::Timeout("request")));
                // The stream ends cleanly only if every request on it was handled: a peer may
                // take that end as the acknowledgement of a request that has no reply (a
                // receipt). Otherwise it is reset (a send stream merely dropped would end
                // cleanly).
                match &r {
                    Ok(()) => {
                        let _ = send.finish();
                    }
                    Err(e) => {
                        let _ = send.reset(code(e.wire_code()));
                    }
                }
                if let Err(e) = r {
                    if e.is_peer_fault() {
                        tracing::debug!(error = %e, peer = %peer.short(8), "closing connection");
                        conn.close(code(e.wire_code()), b"protocol violation");
                    }
                }
            });
        }
        self.evict(peer, &conn);
    }

    /// Removes `conn` from the pool, if it is `peer`'s pooled connection or its spare.
    fn evict(&self, peer: NodeId, conn: &Connection) {
        lock(&self.pool).evict(&peer, conn);
    }

    /// Takes one request from `peer`'s token bucket; `false` if it has none left.
    fn take_request_token(&self, peer: NodeId) -> bool {
        let mut buckets = lock(&self.buckets);
        buckets
            .entry(peer)
            .or_insert_with(|| {
                TokenBucket::new(
                    self.config.peer_burst,
                    self.config.peer_rate_per_sec,
                    Instant::now(),
                )
            })
            .try_take(Instant::now())
    }

    /// The router: a request stream carries one envelope (with `pipelined`, dp2ptcs/2: then
    /// chats, up to [`MAX_ENVELOPES_PER_STREAM`] in all, each a request of its own for the
    /// peer's rate), handled in order; chats get one receipt back each, in the same order. The
    /// caller ends `send`: cleanly if this returns `Ok`.
    async fn handle_stream(
        self: &Arc<Self>,
        peer: NodeId,
        send: &mut SendStream,
        mut recv: RecvStream,
        pipelined: bool,
    ) -> Result<(), NodeError> {
        let mut reader = FrameReader::new();
        let wait = self.config.request_timeout;
        let mut stop = self.shutdown.subscribe();
        // Every wait for the peer's bytes gives way to shutdown: a peer that opens a stream and
        // sends nothing (more), or never ends it, must not hold the shutdown until its
        // deadline. `None`: the node began to shut down first.
        let first = until_shutdown(&mut stop, wait, reader.expect(&mut recv)).await;
        let Some(first) = first.transpose()? else {
            let _ = recv.stop(code(WireErrorCode::ShuttingDown));
            return Err(NodeError::ShuttingDown);
        };
        if !pipelined {
            let end = until_shutdown(&mut stop, wait, reader.expect_end(&mut recv)).await;
            if end.transpose()?.is_none() {
                let _ = recv.stop(code(WireErrorCode::ShuttingDown));
                return Err(NodeError::ShuttingDown);
            }
        }
        let mut frame = Some(first);
        let mut handled = 0;
        while let Some(bytes) = frame.take() {
            let env = Envelope::decode(&bytes)?;
            if env.sender != peer {
                return Err(NodeError::Authentication(
                    "sender is not the connection's peer",
                ));
            }
            let kind = env.kind;
            if handled > 0 && !matches!(kind, MessageKind::Chat | MessageKind::Chats) {
                return Err(NodeError::JunkAfterFrame);
            }
            let reply = self.open_and_announce(peer, env).await?;
            if let Some(reply) = reply {
                write_frame(send, &reply.encode()).await?;
            }
            handled += 1;
            if !pipelined {
                break;
            }
            if handled == 2 {
                self.pipelined_streams.fetch_add(1, Ordering::Relaxed);
            }
            let next = if handled == MAX_ENVELOPES_PER_STREAM {
                until_shutdown(&mut stop, wait, reader.expect_end(&mut recv))
                    .await
                    .transpose()?
                    .map(|()| None)
            } else {
                until_shutdown(&mut stop, wait, reader.next(&mut recv))
                    .await
                    .transpose()?
            };
            let Some(next) = next else {
                // Shutting down while waiting: the rest is refused, the receipts sent stand.
                let _ = recv.stop(code(WireErrorCode::ShuttingDown));
                break;
            };
            frame = next;
            if frame.is_some() {
                // The rest is refused; what came before stands, and its receipts still go.
                let refused = if self.is_shutting_down() {
                    Some(WireErrorCode::ShuttingDown)
                } else if !self.take_request_token(peer) {
                    Some(WireErrorCode::LimitExceeded)
                } else {
                    None
                };
                if let Some(refused) = refused {
                    let _ = recv.stop(code(refused));
                    break;
                }
            }
        }
        Ok(())
    }

    /// Decrypts `env` from `peer` under its session, records what it carries and announces it,
    /// as one task that runs to its end even if the caller stops waiting (a stream's time runs
    /// out, a mailbox fetch is cancelled): a chat recorded without its event would reach the
    /// application only through the history (a later copy is a duplicate, not announced).
    /// Returns the reply to send back (a receipt).
    pub(crate) async fn open_and_announce(
        self: &Arc<Self>,
        peer: NodeId,
        env: Envelope,
    ) -> Result<Option<Envelope>, NodeError> {
        let this = self.clone();
        self.to_the_end(async move {
            let kind = env.kind;
            let (_, inbound, reply) = this
                .sessions
                .decrypt_with(peer, &env, move |store, plaintext| {
                    inbound(store, peer, kind, &plaintext)
                })
                .await?;
            this.announce(peer, inbound?);
            Ok(reply)
        })
        .await
    }

    /// Runs `work` to its end even if the caller stops waiting (see [`Tasks::spawn_to_end`]).
    pub(crate) async fn to_the_end<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, NodeError>> + Send + 'static,
    ) -> Result<T, NodeError> {
        self.tasks
            .spawn_to_end(work)
            .await
            .map_err(|e| NodeError::Internal(format!("a store step failed: {e}")))?
    }

    /// Tells the application (every subscriber).
    pub(crate) fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    fn report_delivered(&self, peer: NodeId, ids: Vec<MessageId>) {
        self.announce(peer, Inbound::Delivered(ids));
    }

    /// Reports what an authenticated message did: new chats, in order, and delivered ones.
    pub(crate) fn announce(&self, peer: NodeId, what: Inbound) {
        match what {
            Inbound::Chats(chats) => {
                for (chat, fresh) in chats {
                    if fresh {
                        self.emit(NodeEvent::Message {
                            id: chat.id,
                            from: peer,
                            sent_at_ms: chat.sent_at_ms,
                            body: chat.body,
                        });
                    }
                }
            }
            Inbound::Delivered(ids) => {
                for id in ids {
                    self.emit(NodeEvent::Delivered { id, to: peer });
                }
            }
            Inbound::Nothing => {}
        }
    }

    /// The pooled connection to `contact`, dialing (with backoff and jitter) if there is none.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        contact: &ContactRecord,
    ) -> Result<Connection, NodeError> {
        self.connect(contact, self.config.dial_attempts.max(1), false)
            .await
    }

    /// The pooled connection to `contact`, or one dial round: each known address once, then
    /// (if none answered) the addresses the DHT gives that were not tried yet. The outbox uses
    /// it, so that a contact out of reach gets its messages in its mailbox after one
    /// `handshake_timeout` or two rather than after every retry of every address; the outbox
    /// retries itself.
    pub(crate) async fn connection_once(
        self: &Arc<Self>,
        contact: &ContactRecord,
    ) -> Result<Connection, NodeError> {
        self.connect(contact, 2, true).await
    }

    /// The pooled connection to `contact`, dialing as `dial` says if there is none.
    async fn dial(
        self: &Arc<Self>,
        contact: &ContactRecord,
        dial: Dial,
    ) -> Result<Connection, NodeError> {
        match dial {
            Dial::Retrying => self.connection(contact).await,
            Dial::Once => self.connection_once(contact).await,
        }
    }

    async fn connect(
        self: &Arc<Self>,
        contact: &ContactRecord,
        attempts: u32,
        once: bool,
    ) -> Result<Connection, NodeError> {
        let peer = contact.node_id;
        let pooled = |this: &Self| lock(&this.pool).get(&peer);
        if let Some(c) = pooled(self) {
            return Ok(c);
        }
        let dial_lock = lock(&self.dial_locks).entry(peer).or_default().clone();
        let _guard = dial_lock.lock().await;
        if let Some(c) = pooled(self) {
            return Ok(c);
        }
        // Where it was last reached through the DHT, then the contact's own hints; when those
        // fail (or there are none), the DHT is asked where it is now.
        let mut addrs: Vec<SocketAddr> = Vec::new();
        addrs.extend(lock(&self.resolved).get(&peer).copied());
        for a in &contact.addresses {
            if !addrs.contains(a) {
                addrs.push(*a);
            }
        }
        let mut looked_up = false;
        let mut backoff = self.config.dial_backoff;
        let mut last = NodeError::Connect("contact has no known address".into());
        let mut tried: Vec<SocketAddr> = Vec::new();
        for attempt in 0..attempts {
            if self.is_shutting_down() {
                return Err(NodeError::ShuttingDown);
            }
            if !looked_up && (addrs.is_empty() || attempt > 0) {
                looked_up = true;
                // Without a session, the contact's prekey bundle from the DHT lets the
                // handshake start the session at once (asynchronous X3DH, PROTOCOL.md 9.2).
                let needs_bundle = self.sessions.current(peer).await?.is_none()
                    && self.learned_bundle(contact).is_none();
                let bundle = async {
                    if needs_bundle {
                        self.fetch_bundle(peer).await
                    } else {
                        Ok(None)
                    }
                };
                let (found, bundle) = tokio::join!(self.resolve(peer), bundle);
                match bundle {
                    Ok(Some(b)) => {
                        if let Err(e) = self.learn_bundle(b) {
                            tracing::debug!(error = %e, "a DHT prekey bundle was refused");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "no prekey bundle from the DHT"),
                }
                match found {
                    Ok(found) => {
                        for a in found.into_iter().rev() {
                            addrs.retain(|x| *x != a);
                            addrs.insert(0, a);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "DHT lookup of a contact failed"),
                }
                if addrs.is_empty() {
                    return Err(NodeError::Connect(
                        "no address known for the contact and the DHT does not know it".into(),
                    ));
                }
            } else if once && attempt > 0 {
                // Looked up already, and every address tried.
                break;
            } else if attempt > 0 {
                let jitter = OsRng.gen_range(0.5..1.5);
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = backoff.saturating_mul(2).min(Duration::from_secs(30));
            }
            let mut all_refused = true;
            for &addr in &addrs {
                if once && tried.contains(&addr) {
                    continue;
                }
                tried.push(addr);
                match self.dial_once(contact, addr).await {
                    Ok(c) => {
                        if !contact.addresses.contains(&addr) {
                            lock(&self.resolved).insert(peer, addr);
                        }
                        return Ok(c);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, attempt, %addr, "dial failed");
                        all_refused &=
                            matches!(e, NodeError::Refused { .. } | NodeError::Authentication(_));
                        last = e;
                    }
                }
            }
            // A refusal or a failed proof will not improve by retrying.
            if all_refused && looked_up {
                return Err(last);
            }
        }
        Err(last)
    }

    async fn dial_once(
        self: &Arc<Self>,
        contact: &ContactRecord,
        addr: SocketAddr,
    ) -> Result<Connection, NodeError> {
        let slot = self
            .limiter
            .try_acquire(None, self.config.max_connections, usize::MAX)
            .ok_or(NodeError::Limit("connections"))?;
        let this = self.clone();
        let c = contact.clone();
        let dial = async move {
            let conn = this
                .endpoint
                .connect(addr, SERVER_NAME)
                .map_err(|e| NodeError::Connect(e.to_string()))?
                .await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            if let Err(e) = this.dial_handshake(&mut send, &mut recv, &c).await {
                conn.close(code(e.wire_code()), b"handshake failed");
                return Err(e);
            }
            Ok(conn)
        };
        let conn = tokio::time::timeout(self.config.handshake_timeout, dial)
            .await
            .map_err(|_| NodeError::Timeout("dial"))??;
        lock(&self.pool).adopt(contact.node_id, &conn);
        self.tasks.spawn(
            self.clone()
                .serve_connection(conn.clone(), contact.node_id, slot),
        );
        Ok(conn)
    }

    /// When a message sent now with `ttl` (default: the configured one) expires.
    fn expiry(&self, ttl: Option<Duration>) -> Result<u64, NodeError> {
        let ttl = ttl.unwrap_or(self.config.message_ttl);
        if ttl.is_zero() || ttl > self.config.max_message_ttl {
            return Err(NodeError::InvalidTtl {
                max: self.config.max_message_ttl,
            });
        }
        Ok(now_ms().saturating_add(ttl.as_millis().min(u128::from(u64::MAX)) as u64))
    }

    /// A new chat message with a fresh id; refuses what could never be sent.
    fn new_chat(&self, text: &str) -> Result<Chat, NodeError> {
        if self.is_shutting_down() {
            return Err(NodeError::ShuttingDown);
        }
        let now = now_ms();
        let chat = Chat {
            id: MessageId::new(now, &mut OsRng),
            sent_at_ms: now,
            body: text.to_owned(),
        };
        chat.encode()?;
        Ok(chat)
    }

    /// Records `chat` to `peer` as a queued outgoing message: from here on the outbox owns it.
    async fn record_outgoing(
        &self,
        peer: NodeId,
        chat: &Chat,
        expires_at_ms: u64,
    ) -> Result<(), NodeError> {
        // In the group commit: messages queued at the same time share one transaction.
        let c = chat.clone();
        self.sessions
            .write(move |store| Ok(insert_outgoing(store, &peer, &c, expires_at_ms)?))
            .await
    }

    async fn send_chat(
        self: &Arc<Self>,
        contact: &ContactRecord,
        text: &str,
    ) -> Result<MessageId, NodeError> {
        let peer = contact.node_id;
        let chat = self.new_chat(text)?;
        let expires_at_ms = self.expiry(None)?;
        // Claimed before it is recorded, so an outbox pass cannot send it at the same time; the
        // claim goes with the chat until its outcome is known.
        let claim = self.outbox.claim(peer, chat.id).ok_or(NodeError::Internal(
            "fresh message id already in flight".into(),
        ))?;
        // Sent together with the chats other callers queued for this peer meanwhile. Recorded as
        // queued together with the session save of its encryption (one commit), or alone if it
        // fails before that.
        let (done, outcome) = oneshot::channel();
        let waiting = Waiting {
            chat: chat.clone(),
            expires_at_ms,
            claim,
            done,
        };
        match self.send_queues.push(peer, waiting) {
            Pushed::Drain(drainer) => self
                .tasks
                .spawn(self.clone().drain_sends(contact.clone(), drainer)),
            Pushed::Queued | Pushed::Closed => {}
        }
        let result = match outcome.await {
            Ok(r) => r,
            // Stopped with the node before it was sent: the chat waits in the outbox.
            Err(_) => {
                self.record_outgoing(peer, &chat, expires_at_ms).await?;
                Err(NodeError::ShuttingDown)
            }
        };
        result.map(|()| chat.id)
    }

    async fn queue_chat(
        self: &Arc<Self>,
        contact: &ContactRecord,
        text: &str,
        ttl: Option<Duration>,
    ) -> Result<MessageId, NodeError> {
        let chat = self.new_chat(text)?;
        let expires_at_ms = self.expiry(ttl)?;
        // Recorded and reported together, even if the caller stops waiting in between.
        let (this, peer) = (self.clone(), contact.node_id);
        self.to_the_end(async move {
            this.record_outgoing(peer, &chat, expires_at_ms).await?;
            this.emit(NodeEvent::Queued {
                id: chat.id,
                to: peer,
            });
            this.outbox.wake();
            Ok(chat.id)
        })
        .await
    }

    /// Sends what `send_chat` callers queued for `contact`, a batch at a time, until nothing is
    /// left, and hands each caller its outcome.
    async fn drain_sends(self: Arc<Self>, contact: ContactRecord, mut drainer: Drainer) {
        let peer = contact.node_id;
        while let Some(batch) = drainer.next_batch() {
            let chats: Vec<Chat> = batch.iter().map(|w| w.chat.clone()).collect();
            let expiry: Vec<u64> = batch.iter().map(|w| w.expires_at_ms).collect();
            let result = self
                .deliver(&contact, &chats, Some(&expiry), Dial::Retrying)
                .await;
            let failed = match &result {
                Ok(named) => batch.iter().any(|w| !named.contains(&w.chat.id)),
                Err(_) => true,
            };
            if failed {
                // One failed attempt for the peer's backoff, however many chats it carried;
                // the outbox takes over what did not get through.
                self.outbox.failed(
                    peer,
                    Instant::now(),
                    self.config.retry_initial,
                    self.config.retry_max,
                );
                self.outbox.wake();
            }
            for w in batch {
                let r = match &result {
                    Ok(named) if named.contains(&w.chat.id) => Ok(()),
                    Ok(_) => Err(NodeError::Unacknowledged),
                    Err(e) => Err(e.duplicate()),
                };
                let Waiting {
                    chat, done, claim, ..
                } = w;
                let _ = done.send(r);
                // Only now may the outbox send it (if it did not get through).
                drop((chat, claim));
            }
        }
    }

    /// Transmits chat messages, one envelope for all of them, and waits for their receipt;
    /// returns the ids the receipt names. A message that left but that no receipt names is
    /// marked `sent`; one that never left stays `queued`. With
    /// `record` (their expiries), the messages are not recorded yet: they are recorded as
    /// `queued` in the same transaction as the session save of their encryption (so before they
    /// leave), or alone if this fails before that.
    async fn deliver(
        self: &Arc<Self>,
        contact: &ContactRecord,
        chats: &[Chat],
        record: Option<&[u64]>,
        dial: Dial,
    ) -> Result<Vec<MessageId>, NodeError> {
        let mut recorded = record.is_none();
        let result = self
            .transmit(contact, chats, record, &mut recorded, dial)
            .await;
        if let (Err(_), false, Some(expiry)) = (&result, recorded, record) {
            let store = self.store.clone();
            let (peer, chats, expiry) = (contact.node_id, chats.to_vec(), expiry.to_vec());
            blocking(move || {
                let store = lock(&store);
                for (chat, expires_at_ms) in chats.iter().zip(expiry) {
                    insert_outgoing(&store, &peer, chat, expires_at_ms)?;
                }
                Ok(())
            })
            .await?;
        }
        result
    }

    async fn transmit(
        self: &Arc<Self>,
        contact: &ContactRecord,
        chats: &[Chat],
        expiry: Option<&[u64]>,
        recorded: &mut bool,
        dial: Dial,
    ) -> Result<Vec<MessageId>, NodeError> {
        let _permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        let peer = contact.node_id;
        let (kind, payload) = chats_payload(chats)?;
        let conn = self.dial(contact, dial).await?;
        let handle = self
            .sessions
            .current(peer)
            .await?
            .ok_or(NodeError::Internal("no session after handshake".into()))?;
        let record: Option<StoreStep> = match expiry {
            Some(expiry) if !*recorded => {
                let (chats, expiry) = (chats.to_vec(), expiry.to_vec());
                Some(Box::new(move |store: &Store| {
                    for (chat, expires_at_ms) in chats.iter().zip(expiry) {
                        insert_outgoing(store, &peer, chat, expires_at_ms)?;
                    }
                    Ok(())
                }))
            }
            _ => None,
        };
        let env = self
            .sessions
            .encrypt_with(peer, &handle, kind, payload, record)
            .await?;
        *recorded = true;
        let mut left = false;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            write_frame(&mut send, &env.encode()).await?;
            left = true;
            let _ = send.finish();
            self.read_receipt(peer, &mut FrameReader::new(), &mut recv)
                .await
        };
        let result = tokio::time::timeout(self.config.request_timeout, exchange)
            .await
            .unwrap_or(Err(NodeError::Timeout("request")));
        self.settle(contact, &conn, chats, result, left).await
    }

    /// Reads the receipt that answers a request on `recv` and records it
    /// ([`Inner::record_receipt`]).
    async fn read_receipt(
        self: &Arc<Self>,
        peer: NodeId,
        reader: &mut FrameReader,
        recv: &mut RecvStream,
    ) -> Result<(Vec<MessageId>, Vec<MessageId>), NodeError> {
        let frame = reader.expect(recv).await?;
        self.record_receipt(peer, &frame).await
    }

    /// Records the receipt `frame` from `peer`: its session advance and the delivered states in
    /// one commit, then reports the messages now delivered, to the end even if the caller stops
    /// waiting. Returns the ids now delivered, and the ids the receipt names.
    async fn record_receipt(
        self: &Arc<Self>,
        peer: NodeId,
        frame: &[u8],
    ) -> Result<(Vec<MessageId>, Vec<MessageId>), NodeError> {
        let reply = Envelope::decode(frame)?;
        if reply.sender != peer || reply.kind != MessageKind::Receipt {
            return Err(NodeError::Authentication("reply is not a receipt"));
        }
        let this = self.clone();
        self.to_the_end(async move {
            let (_, (delivered, named), _) = this
                .sessions
                .decrypt_with(peer, &reply, move |store, plaintext| {
                    let named = Receipt::decode(&plaintext)
                        .map(|r| r.ids)
                        .unwrap_or_default();
                    let (delivered, reply) =
                        inbound(store, peer, MessageKind::Receipt, &plaintext)?;
                    Ok(((delivered, named), reply))
                })
                .await?;
            match delivered? {
                Inbound::Delivered(ids) => {
                    this.report_delivered(peer, ids.clone());
                    Ok((ids, named))
                }
                _ => Err(NodeError::Internal("receipt read as another kind".into())),
            }
        })
        .await
    }

    /// What became of one request carrying `chats` on `conn`: reports those delivered, marks
    /// `sent` those that `left` and that no receipt named, and drops a connection that failed
    /// the request. Returns the ids the receipt named.
    async fn settle(
        self: &Arc<Self>,
        contact: &ContactRecord,
        conn: &Connection,
        chats: &[Chat],
        result: Result<(Vec<MessageId>, Vec<MessageId>), NodeError>,
        left: bool,
    ) -> Result<Vec<MessageId>, NodeError> {
        let peer = contact.node_id;
        match result {
            // The ones delivered were reported as they were recorded.
            Ok((_, named)) => {
                self.outbox.reachable(peer);
                let unnamed: Vec<MessageId> = chats
                    .iter()
                    .map(|c| c.id)
                    .filter(|id| !named.contains(id))
                    .collect();
                if !unnamed.is_empty() {
                    self.mark_sent(peer, unnamed).await?;
                }
                Ok(named)
            }
            Err(e) => {
                if matches!(
                    e,
                    NodeError::Timeout(_) | NodeError::Connection(_) | NodeError::Stream(_)
                ) {
                    // The peer may be gone (crashed, cut off) long before QUIC's idle timeout
                    // says so: the next attempt dials afresh instead of waiting on this one.
                    conn.close(code(WireErrorCode::NoError), b"request failed");
                    self.evict(peer, conn);
                }
                if left {
                    self.mark_sent(peer, chats.iter().map(|c| c.id).collect())
                        .await?;
                }
                Err(e)
            }
        }
    }

    /// Sends batches of `contact`'s recorded chats in order on one request stream of a
    /// dp2ptcs/2 connection (`conn`): each batch is encrypted (its session state saved) and
    /// written while the ones before it travel or are answered, and the receipts come back in
    /// the same order. One result per batch, as [`Inner::transmit`] gives; a batch fails if
    /// one before it failed (the peer reads no further).
    async fn transmit_pipelined(
        self: &Arc<Self>,
        contact: &ContactRecord,
        conn: &Connection,
        batches: &[Vec<Chat>],
    ) -> Vec<Result<Vec<MessageId>, NodeError>> {
        let peer = contact.node_id;
        let all_fail = |e: NodeError| batches.iter().map(|_| Err(e.duplicate())).collect();
        let Ok(_permit) = self.in_flight.clone().acquire_owned().await else {
            return all_fail(NodeError::ShuttingDown);
        };
        let handle = match self.sessions.current(peer).await {
            Ok(Some(h)) => h,
            Ok(None) => return all_fail(NodeError::Internal("no session after handshake".into())),
            Err(e) => return all_fail(e),
        };
        // How many batches left, and whether the writer is done.
        let (wrote, mut written) = watch::channel((0usize, false));
        // The reader met a failure: the writer sends nothing more.
        let reader_failed = AtomicBool::new(false);
        let mut write_error = None;
        let mut receipts = Vec::new();
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            let writer = async {
                let r = async {
                    for chats in batches {
                        if reader_failed.load(Ordering::Relaxed) || self.is_shutting_down() {
                            break;
                        }
                        let (kind, payload) = chats_payload(chats)?;
                        let env = self
                            .sessions
                            .encrypt_with(peer, &handle, kind, payload, None)
                            .await?;
                        write_frame(&mut send, &env.encode()).await?;
                        wrote.send_modify(|w| w.0 += 1);
                    }
                    let _ = send.finish();
                    Ok::<_, NodeError>(())
                }
                .await;
                wrote.send_modify(|w| w.1 = true);
                r
            };
            let reader = async {
                let mut frames = FrameReader::new();
                for i in 0..batches.len() {
                    // Only a batch that left gets a receipt.
                    match written.wait_for(|&(n, done)| n > i || done).await {
                        Ok(w) if w.0 > i => {}
                        _ => break,
                    }
                    let receipt = match frames.next(&mut recv).await {
                        Ok(Some(frame)) => self.record_receipt(peer, &frame).await,
                        // The peer ended the stream here: it refused the rest (too many
                        // requests, or it is stopping).
                        Ok(None) => Err(NodeError::Refused {
                            code: WireErrorCode::LimitExceeded.code(),
                            reason: "the peer took no more on this stream".into(),
                        }),
                        Err(e) => Err(e),
                    };
                    let failed = receipt.is_err();
                    receipts.push(receipt);
                    if failed {
                        reader_failed.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            };
            let (w, ()) = tokio::join!(writer, reader);
            write_error = w.err();
            Ok::<_, NodeError>(())
        };
        let limit = self.config.request_timeout * batches.len().max(1) as u32;
        let stopped = match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(NodeError::Timeout("request")),
        };
        let left = written.borrow().0;
        // What stopped the exchange, for every batch that got no receipt: the first failure (a
        // batch after a refused one is refused too, not a broken connection).
        let first_failure = receipts
            .iter()
            .find_map(|r| match (r, &write_error) {
                // The end of the stream read as a refusal: the code the peer stopped our
                // writing with says why (rate or shutdown), if we saw it.
                (Err(NodeError::Refused { .. }), Some(w @ NodeError::Refused { .. })) => {
                    Some(w.duplicate())
                }
                (r, _) => r.as_ref().err().map(NodeError::duplicate),
            })
            .or(stopped)
            .or(write_error)
            .unwrap_or(NodeError::Refused {
                code: WireErrorCode::ShuttingDown.code(),
                reason: "stopped sending: the node is shutting down".into(),
            });
        let mut receipts = receipts.into_iter();
        let mut out = Vec::with_capacity(batches.len());
        for (i, chats) in batches.iter().enumerate() {
            let result = receipts
                .next()
                .unwrap_or_else(|| Err(first_failure.duplicate()));
            out.push(self.settle(contact, conn, chats, result, i < left).await);
        }
        out
    }

    /// [`Node::cancel_message`].
    async fn cancel_message(self: Arc<Self>, id: MessageId) -> Result<CancelReport, NodeError> {
        let store = self.store.clone();
        let Some(found) = blocking(move || Ok(lock(&store).outgoing(&id)?)).await? else {
            return Ok(CancelReport {
                outcome: Cancel::Unknown,
                in_flight: false,
            });
        };
        // Claimed while its state changes: every sender claims a message before it checks its
        // state, so none takes it up after this. A claim held elsewhere may be a copy leaving.
        let claim = self.outbox.claim(found.peer, id);
        let (store, events, to) = (self.store.clone(), self.events.clone(), found.peer);
        let outcome = blocking(move || {
            let store = lock(&store);
            let outcome = store.cancel_outgoing(&id, now_ms())?;
            // Reported while the store is still held (see `cancel_messages_to`).
            if matches!(outcome, Cancel::Cancelled { .. }) {
                let _ = events.send(NodeEvent::Cancelled { id, to });
            }
            Ok(outcome)
        })
        .await?;
        let cancelled = matches!(outcome, Cancel::Cancelled { .. });
        let in_flight = cancelled && claim.is_none();
        drop(claim);
        Ok(CancelReport { outcome, in_flight })
    }

    /// [`Node::cancel_messages_to`]: claims what waits for `peer`, cancels exactly that, and
    /// goes again for anything queued meanwhile.
    async fn cancel_messages_to(
        self: Arc<Self>,
        peer: NodeId,
    ) -> Result<BulkCancelReport, NodeError> {
        /// Rounds at most: a sender still queueing for the peer does not keep this going.
        const ROUNDS: usize = 4;
        let mut report = BulkCancelReport {
            cancelled: Vec::new(),
            in_flight: Vec::new(),
        };
        for _ in 0..ROUNDS {
            let store = self.store.clone();
            let ids = blocking(move || Ok(lock(&store).waiting_ids(&peer)?)).await?;
            if ids.is_empty() {
                break;
            }
            let claims: Vec<(MessageId, Option<InFlight>)> = ids
                .into_iter()
                .map(|id| (id, self.outbox.claim(peer, id)))
                .collect();
            let store = self.store.clone();
            let ids: Vec<MessageId> = claims.iter().map(|(id, _)| *id).collect();
            let events = self.events.clone();
            let cancelled: std::collections::HashSet<MessageId> = blocking(move || {
                // All or none, and reported while the store is still held: a receipt recorded
                // right after reports Delivered after these (PROTOCOL.md 6.1).
                let store = lock(&store);
                let cancelled = store.transaction(|s| {
                    Ok::<_, NodeError>(s.cancel_outgoing_of(&peer, &ids, now_ms())?)
                })?;
                for id in &cancelled {
                    let _ = events.send(NodeEvent::Cancelled { id: *id, to: peer });
                }
                Ok(cancelled)
            })
            .await?
            .into_iter()
            .collect();
            for (id, claim) in &claims {
                if !cancelled.contains(id) {
                    continue;
                }
                if claim.is_none() {
                    report.in_flight.push(*id);
                }
                report.cancelled.push(*id);
            }
            drop(claims);
        }
        Ok(report)
    }

    /// Marks those of `ids` still `queued` as `sent`: they left, and no receipt named them.
    async fn mark_sent(&self, peer: NodeId, ids: Vec<MessageId>) -> Result<(), NodeError> {
        let store = self.store.clone();
        blocking(move || {
            let store = lock(&store);
            // Most were delivered or held meanwhile: the write lock only if some were not.
            let queued = store.read(|store| {
                let mut queued = Vec::new();
                for id in ids {
                    if store.message_state(&peer, &id)?.map(|(_, s)| s)
                        == Some(MessageState::Queued)
                    {
                        queued.push(id);
                    }
                }
                Ok::<_, NodeError>(queued)
            })?;
            if queued.is_empty() {
                return Ok(());
            }
            let now = now_ms();
            store.transaction(|store| {
                for id in queued {
                    store.mark_sent(&peer, &id, now)?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Runs the outbox until shutdown: a pass on start, whenever woken, and when a backoff or
    /// the poll interval ends.
    async fn outbox_loop(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let next = match self.outbox_pass().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox pass failed");
                    Instant::now() + self.config.outbox_poll
                }
            };
            tokio::select! {
                () = self.outbox.woken() => {}
                () = tokio::time::sleep_until(next.into()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    /// Starts a worker for each peer with undelivered messages whose backoff has passed, and
    /// returns when the next pass is due. Reads no message body: each worker reads its
    /// contact's messages itself, a window at a time.
    async fn outbox_pass(self: &Arc<Self>) -> Result<Instant, NodeError> {
        let (store, events) = (self.store.clone(), self.events.clone());
        blocking(move || {
            let store = lock(&store);
            // Reported at once, while the store is still held: before anything else can fail
            // (they are no longer pending, so no later pass would report them), and before a
            // receipt recorded right after reports Delivered (PROTOCOL.md 6.1).
            for (to, id) in store.expire_outgoing(now_ms())? {
                tracing::info!(id = %id, to = %to.short(8), "message expired before delivery");
                let _ = events.send(NodeEvent::Expired { id, to });
            }
            Ok(())
        })
        .await?;
        let store = self.store.clone();
        let waiting = blocking(move || Ok(lock(&store).outbox_peers()?)).await?;
        let now = Instant::now();
        self.outbox
            .forget_all_but(&waiting.iter().map(|p| p.peer).collect(), now);
        let mut next = now + self.config.outbox_poll;
        // Wake in time to expire the first message that will.
        let wall = now_ms();
        if let Some(first) = waiting.iter().filter_map(|p| p.first_expiry_ms).min() {
            next = next.min(now + Duration::from_millis(first.saturating_sub(wall)));
        }
        for p in waiting {
            match self.outbox.claim_peer(p.peer, now) {
                Ok(()) => {
                    self.tasks.spawn(
                        self.clone()
                            .outbox_worker(p.peer, p.first_seq.saturating_sub(1)),
                    );
                }
                Err(Some(at)) => next = next.min(at),
                Err(None) => {}
            }
        }
        Ok(next)
    }

    /// `peer`'s next waiting messages of `which` kind after position `after_seq`, oldest
    /// first, a window at a time.
    async fn outbox_window(
        &self,
        peer: NodeId,
        which: Undelivered,
        after_seq: i64,
    ) -> Result<Vec<MessageRecord>, NodeError> {
        let store = self.store.clone();
        blocking(move || {
            Ok(lock(&store).outbox_window(
                &peer,
                which,
                after_seq,
                OUTBOX_WINDOW,
                OUTBOX_WINDOW_BYTES,
            )?)
        })
        .await
    }

    /// Sends `peer`'s undelivered messages after position `after_seq` in order, a window at a
    /// time, until none waits (messages queued meanwhile included), stopping at the first
    /// failure.
    async fn outbox_worker(self: Arc<Self>, peer: NodeId, after_seq: i64) {
        let result = async {
            let store = self.store.clone();
            let contact = blocking(move || Ok(lock(&store).contact(&peer)?))
                .await?
                .ok_or(NodeError::NotAContact)?;
            // One dial round: out of reach, the messages go to the mailbox now.
            let conn = match self.connection_once(&contact).await {
                Ok(conn) => conn,
                Err(e) => {
                    if unreachable(&e) {
                        self.hold_in_mailbox(&contact, &[], after_seq).await;
                    }
                    return Err(e);
                }
            };
            drop(conn);
            let mut after_seq = after_seq;
            loop {
                let msgs = self
                    .outbox_window(peer, Undelivered::All, after_seq)
                    .await?;
                let Some(last) = msgs.last() else {
                    return Ok(());
                };
                let last_seq = last.seq;
                self.send_window(&contact, &msgs).await?;
                after_seq = last_seq;
            }
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, peer = %peer.short(8), "outbox: will retry");
            self.outbox.failed(
                peer,
                Instant::now(),
                self.config.retry_initial,
                self.config.retry_max,
            );
        }
        self.outbox.release_peer(peer);
    }

    /// Sends one window of `contact`'s waiting messages (oldest first), stopping at the first
    /// failure; if the contact is out of reach, what was not sent goes to its mailbox, with the
    /// messages that wait after the window.
    async fn send_window(
        self: &Arc<Self>,
        contact: &ContactRecord,
        msgs: &[MessageRecord],
    ) -> Result<(), NodeError> {
        let peer = contact.node_id;
        // In order, as many at a time as one envelope carries; with dp2ptcs/2, several such
        // batches on one stream.
        let mut next = 0;
        while next < msgs.len() {
            if self.is_shutting_down() {
                return Err(NodeError::ShuttingDown);
            }
            let depth = if lock(&self.pool).get(&peer).is_some_and(|c| pipelined(&c)) {
                PIPELINE_DEPTH
            } else {
                1
            };
            // (index of its first message, its claims, its chats)
            let mut batches: Vec<(usize, Vec<InFlight>, Vec<Chat>)> = Vec::new();
            while batches.len() < depth && next < msgs.len() {
                let start = next;
                let (claims, chats) = self.outbox_batch(peer, msgs, &mut next);
                let chats = self.still_pending(peer, chats).await?;
                if !chats.is_empty() {
                    batches.push((start, claims, chats));
                }
            }
            let results = match batches.as_slice() {
                [] => continue,
                [(_, _, chats)] => {
                    vec![self.deliver(contact, chats, None, Dial::Once).await]
                }
                _ => {
                    let chats: Vec<Vec<Chat>> = batches.iter().map(|(_, _, c)| c.clone()).collect();
                    self.deliver_window(contact, &chats).await
                }
            };
            let mut results = results.into_iter();
            let mut batches = batches.into_iter();
            while let Some((start, claims, chats)) = batches.next() {
                let result = results.next().unwrap_or(Err(NodeError::Internal(
                    "a batch without its result".into(),
                )));
                match result {
                    // Every one recorded there: on to the next batch.
                    Ok(named) if chats.iter().all(|c| named.contains(&c.id)) => {}
                    // The peer took some and not the others: sending later ones now would
                    // break the order.
                    Ok(_) => return Err(NodeError::Unacknowledged),
                    Err(e) => {
                        if unreachable(&e) {
                            // Not reachable directly: the rest waits in its mailbox too (the
                            // later batches' claims go first).
                            drop((claims, batches));
                            let last_seq = msgs.last().map_or(0, |m| m.seq);
                            self.hold_in_mailbox(contact, &msgs[start..], last_seq)
                                .await;
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Delivers `batches` of `contact`'s recorded chats in order: on one stream if the
    /// connection speaks dp2ptcs/2, else one after another, stopping at the first that does not
    /// fully get through. One result per batch sent.
    async fn deliver_window(
        self: &Arc<Self>,
        contact: &ContactRecord,
        batches: &[Vec<Chat>],
    ) -> Vec<Result<Vec<MessageId>, NodeError>> {
        match self.connection_once(contact).await {
            Ok(conn) if pipelined(&conn) => self.transmit_pipelined(contact, &conn, batches).await,
            Ok(_) => {
                // The connection changed meanwhile, to one of version 1.
                let mut out = Vec::new();
                for chats in batches {
                    let r = self.deliver(contact, chats, None, Dial::Once).await;
                    let through =
                        matches!(&r, Ok(named) if chats.iter().all(|c| named.contains(&c.id)));
                    out.push(r);
                    if !through {
                        break;
                    }
                }
                out
            }
            Err(e) => vec![Err(e)],
        }
    }

    /// The next batch of `msgs` from `*next` on (advanced past it): as many as one envelope
    /// carries, less those sent elsewhere right now (by `send_chat`, or another worker).
    fn outbox_batch(
        &self,
        peer: NodeId,
        msgs: &[MessageRecord],
        next: &mut usize,
    ) -> (Vec<InFlight>, Vec<Chat>) {
        let (mut claims, mut chats, mut len) = (Vec::new(), Vec::new(), 0);
        let now = now_ms();
        while let Some(m) = msgs.get(*next) {
            let chat = Chat {
                id: m.id,
                sent_at_ms: m.sent_at_ms,
                body: m.body.clone(),
            };
            let entry = Chats::entry_len(&chat);
            if !chats.is_empty() && (chats.len() == MAX_BATCH_CHATS || len + entry > MAX_BATCH_LEN)
            {
                break;
            }
            *next += 1;
            // Past its time to live, it is the outbox pass's to expire, not to send.
            if overdue(m, now) {
                continue;
            }
            let Some(claim) = self.outbox.claim(peer, m.id) else {
                continue;
            };
            len += entry;
            claims.push(claim);
            chats.push(chat);
        }
        (claims, chats)
    }

    /// Those of `chats` still waiting to be delivered: a receipt may have come in since the
    /// outbox was read.
    async fn still_pending(&self, peer: NodeId, chats: Vec<Chat>) -> Result<Vec<Chat>, NodeError> {
        if chats.is_empty() {
            return Ok(chats);
        }
        let store = self.store.clone();
        blocking(move || {
            lock(&store).read(|store| {
                let mut left = Vec::new();
                for chat in chats {
                    let state = store.message_state(&peer, &chat.id)?.map(|(_, s)| s);
                    if matches!(
                        state,
                        Some(MessageState::Queued | MessageState::Sent | MessageState::Held)
                    ) {
                        left.push(chat);
                    }
                }
                Ok(left)
            })
        })
        .await
    }

    /// A message held since this time or earlier is deposited again
    /// ([`NodeConfig::mailbox_redeposit`]).
    pub(crate) fn held_before_ms(&self) -> u64 {
        let redeposit =
            u64::try_from(self.config.mailbox_redeposit.as_millis()).unwrap_or(u64::MAX);
        now_ms().saturating_sub(redeposit)
    }

    /// Deposits in `contact`'s mailbox those of `msgs`, then of its messages waiting after
    /// position `after_seq` (a window at a time), that are not held there yet, or were deposited
    /// longer than [`NodeConfig::mailbox_redeposit`] ago. Messages held since are not read again.
    async fn hold_in_mailbox(
        self: &Arc<Self>,
        contact: &ContactRecord,
        msgs: &[MessageRecord],
        after_seq: i64,
    ) {
        let peer = contact.node_id.short(8);
        let result = async {
            let mut held = self.deposit_outgoing(contact, msgs).await?;
            let mut after_seq = after_seq;
            loop {
                let which = Undelivered::ToDeposit {
                    held_before_ms: self.held_before_ms(),
                };
                let window = self
                    .outbox_window(contact.node_id, which, after_seq)
                    .await?;
                let Some(last) = window.last() else {
                    return Ok::<_, NodeError>(held);
                };
                after_seq = last.seq;
                held += self.deposit_outgoing(contact, &window).await?;
            }
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(held = n, to = %peer, "messages held in the contact's mailbox"),
            Err(e) => tracing::debug!(error = %e, to = %peer, "mailbox deposit failed"),
        }
    }
}

/// Whether outgoing message `m` is past its time to live at `now_ms`: it is neither sent nor
/// deposited any more (holders would refuse it), only expired by the next outbox pass.
pub(crate) fn overdue(m: &MessageRecord, now_ms: u64) -> bool {
    m.expires_at_ms.is_some_and(|at| at <= now_ms)
}

/// The payload of an envelope carrying `chats`: a lone chat as `Chat`, more as `Chats`.
fn chats_payload(chats: &[Chat]) -> Result<(MessageKind, Zeroizing<Vec<u8>>), NodeError> {
    let (kind, payload) = match chats {
        [chat] => (MessageKind::Chat, chat.encode()?),
        _ => (
            MessageKind::Chats,
            Chats {
                chats: chats.to_vec(),
            }
            .encode()?,
        ),
    };
    Ok((kind, Zeroizing::new(payload)))
}

/// Batches of a contact's waiting messages the outbox sends on one stream (dp2ptcs/2).
const PIPELINE_DEPTH: usize = 8;

/// Most envelopes one request stream may carry (dp2ptcs/2): the first, then chats.
pub(crate) const MAX_ENVELOPES_PER_STREAM: usize = 16;

/// Counts down one when dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `conn` speaks dp2ptcs/2 (several chat envelopes per request stream).
pub(crate) fn pipelined(conn: &Connection) -> bool {
    crate::discovery::alpn(conn).as_deref() == Some(crate::ALPN)
}

/// What an authenticated envelope from a peer did to the store.
pub(crate) enum Inbound {
    /// Chat messages, in the order sent, each with whether it was new (`true`: recorded now)
    /// or already recorded.
    Chats(Vec<(Chat, bool)>),
    /// A receipt: these outgoing messages are now delivered.
    Delivered(Vec<MessageId>),
    /// Nothing to do.
    Nothing,
}

/// Applies the decrypted `plaintext` of a `kind` envelope from `peer` to `store` (inside the
/// transaction that saves the session's advance): a chat is recorded and asks for a receipt as
/// the reply; a receipt marks messages delivered. The peer's faults are in the inner result
/// (nothing written then); the outer one is the store's failures, and a chat from a peer that
/// is no longer a contact ([`NodeError::NotAContact`], which closes its connection).
pub(crate) fn inbound(
    store: &Store,
    peer: NodeId,
    kind: MessageKind,
    plaintext: &[u8],
) -> Result<(Result<Inbound, NodeError>, Option<Reply>), NodeError> {
    let fault = |e: NodeError| Ok((Err(e), None));
    match kind {
        MessageKind::Chat | MessageKind::Chats => {
            let chats = match kind {
                MessageKind::Chat => Chat::decode(plaintext).map(|c| vec![c]),
                _ => Chats::decode(plaintext).map(|b| b.chats),
            };
            let chats = match chats {
                Ok(c) => c,
                Err(e) => return fault(e.into()),
            };
            // A contact removed while its connection stayed open (or by a command, in the
            // database) is refused here as at the handshake. As a store failure, it undoes the
            // session's step: the message opens if the contact is added again and sends it again.
            if store.contact(&peer)?.is_none() {
                return Err(NodeError::NotAContact);
            }
            // One receipt for all; a duplicate is acknowledged again: the sender may have
            // missed the receipt.
            let ids = chats.iter().map(|c| c.id).collect();
            let receipt = match (Receipt { ids }).encode() {
                Ok(r) => r,
                Err(e) => return fault(e.into()),
            };
            let now = now_ms();
            let mut recorded = Vec::with_capacity(chats.len());
            for chat in chats {
                let fresh = store.insert_message(
                    &NewMessage {
                        id: &chat.id,
                        peer: &peer,
                        direction: Direction::Incoming,
                        body: &chat.body,
                        sent_at_ms: chat.sent_at_ms,
                        state: MessageState::Received,
                        expires_at_ms: None,
                    },
                    now,
                )?;
                recorded.push((chat, fresh));
            }
            Ok((
                Ok(Inbound::Chats(recorded)),
                Some((MessageKind::Receipt, Zeroizing::new(receipt))),
            ))
        }
        MessageKind::Receipt => {
            let receipt = match Receipt::decode(plaintext) {
                Ok(r) => r,
                Err(e) => return fault(e.into()),
            };
            let mut delivered = Vec::new();
            let now = now_ms();
            for id in receipt.ids {
                if store.mark_delivered(&peer, &id, now)? {
                    delivered.push(id);
                }
            }
            Ok((Ok(Inbound::Delivered(delivered)), None))
        }
        MessageKind::Error | MessageKind::SessionProof => Ok((Ok(Inbound::Nothing), None)),
        _ => fault(NodeError::Authentication("unexpected message kind")),
    }
}

/// Records `chat` to `peer` as a queued outgoing message.
fn insert_outgoing(
    store: &Store,
    peer: &NodeId,
    chat: &Chat,
    expires_at_ms: u64,
) -> Result<(), StoreError> {
    store.insert_message(
        &NewMessage {
            id: &chat.id,
            peer,
            direction: Direction::Outgoing,
            body: &chat.body,
            sent_at_ms: chat.sent_at_ms,
            state: MessageState::Queued,
            expires_at_ms: Some(expires_at_ms),
        },
        now_ms(),
    )?;
    Ok(())
}

/// Whether `e` says the peer could not be reached (as opposed to refusing or misbehaving).
fn unreachable(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::Connect(_)
            | NodeError::Timeout(_)
            | NodeError::Connection(_)
            | NodeError::Stream(_)
    )
}

/// `read` within `wait` (a timeout is [`NodeError::Timeout`]), or `None` if the node begins to
/// shut down first (`stop` is its shutdown flag).
async fn until_shutdown<T>(
    stop: &mut watch::Receiver<bool>,
    wait: Duration,
    read: impl std::future::Future<Output = Result<T, NodeError>>,
) -> Option<Result<T, NodeError>> {
    tokio::select! {
        r = tokio::time::timeout(wait, read) => {
            Some(r.unwrap_or(Err(NodeError::Timeout("request"))))
        }
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// Test support: a request stream kept open, from [`Node::hold_stream_open`].
#[doc(hidden)]
#[derive(Debug)]
pub struct HeldStream {
    /// The replies read.
    pub replies: usize,
    send: SendStream,
    _recv: RecvStream,
}

impl HeldStream {
    /// Waits (at most `wait`) until the peer stops the stream or the connection ends: the code
    /// it was stopped or closed with (`None`: neither within `wait`).
    pub async fn stopped(self, wait: Duration) -> Option<u64> {
        match tokio::time::timeout(wait, self.send.stopped()).await {
            Ok(Ok(c)) => c.map(|c| c.into_inner()),
            Ok(Err(quinn::StoppedError::ConnectionLost(
                quinn::ConnectionError::ApplicationClosed(c),
            ))) => Some(c.error_code.into_inner()),
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

/// How hard to try when a message finds no connection to its contact.
#[derive(Clone, Copy, Debug)]
enum Dial {
    /// `dial_attempts` rounds with backoff (`send_chat`: the caller waits for the outcome).
    Retrying,
    /// One round (the outbox: it retries on its own schedule, and an unreachable contact's
    /// messages go to its mailbox without waiting for every retry).
    Once,
}

fn refuse_stream(mut send: SendStream, mut recv: RecvStream, c: WireErrorCode) {
    let _ = send.reset(code(c));
    let _ = recv.stop(code(c));
}

/// The contact of `uri`, named `name`, not verified yet, added at `added_at` (Unix seconds): what
/// [`Store::add_contact`](dp2ptcs_store::Store::add_contact) is given.
pub fn contact_from_uri(
    uri: &dp2ptcs_crypto::ContactUri,
    name: &str,
    added_at: u64,
) -> ContactRecord {
    let identity = uri.public_identity();
    ContactRecord {
        node_id: identity.node_id(),
        public_key: identity.to_bytes(),
        name: name.to_owned(),
        addresses: uri.addresses().to_vec(),
        verified: false,
        verified_at: None,
        added_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(n: u8, body: &str) -> Chat {
        Chat {
            id: MessageId::from_bytes([n; 16]),
            sent_at_ms: 1_700_000_000_000,
            body: body.into(),
        }
    }

    /// Makes `id` a contact in `store`, named `name`.
    fn befriend(store: &Store, id: NodeId, name: &str) {
        store
            .put_contact(&ContactRecord {
                node_id: id,
                public_key: [id.as_bytes()[0]; 32],
                name: name.into(),
                addresses: Vec::new(),
                verified: false,
                verified_at: None,
                added_at: 0,
            })
            .unwrap();
    }

    #[test]
    fn chats_from_a_peer_that_is_no_longer_a_contact_are_refused_and_record_nothing() {
        let store = Store::open_in_memory(&[7; 32]).unwrap();
        let peer = NodeId::from_bytes([1; 32]);
        let hello = chat(1, "hello");
        let refused = inbound(&store, peer, MessageKind::Chat, &hello.encode().unwrap());
        assert!(matches!(refused, Err(NodeError::NotAContact)));
        assert_eq!(store.message_state(&peer, &hello.id).unwrap(), None);
        // A receipt still marks our own message delivered: it says something true.
        insert_outgoing(&store, &peer, &chat(2, "ours"), u64::MAX).unwrap();
        let receipt = Receipt {
            ids: vec![chat(2, "").id],
        };
        let (got, _) = inbound(
            &store,
            peer,
            MessageKind::Receipt,
            &receipt.encode().unwrap(),
        )
        .unwrap();
        assert!(matches!(got.unwrap(), Inbound::Delivered(ids) if ids.len() == 1));
        // Made a contact, it is heard.
        befriend(&store, peer, "Bravo");
        let (got, _) = inbound(&store, peer, MessageKind::Chat, &hello.encode().unwrap()).unwrap();
        assert!(matches!(got.unwrap(), Inbound::Chats(c) if c == vec![(hello.clone(), true)]));
    }

    #[test]
    fn chats_sent_together_are_recorded_in_order_once_and_acknowledged_by_one_receipt() {
        let store = Store::open_in_memory(&[7; 32]).unwrap();
        let peer = NodeId::from_bytes([1; 32]);
        befriend(&store, peer, "Bravo");
        let first = chat(1, "one");
        let (got, _) = inbound(&store, peer, MessageKind::Chat, &first.encode().unwrap()).unwrap();
        assert!(matches!(got.unwrap(), Inbound::Chats(c) if c == vec![(first.clone(), true)]));
        // A batch repeating the first chat (its receipt was lost) and adding two.
        let batch = Chats {
            chats: vec![first.clone(), chat(2, "two"), chat(3, "three")],
        };
        let (got, reply) =
            inbound(&store, peer, MessageKind::Chats, &batch.encode().unwrap()).unwrap();
        let Inbound::Chats(chats) = got.unwrap() else {
            panic!("not chats");
        };
        let fresh: Vec<(u8, bool)> = chats
            .iter()
            .map(|(c, f)| (c.id.as_bytes()[0], *f))
            .collect();
        assert_eq!(fresh, vec![(1, false), (2, true), (3, true)]);
        let (kind, receipt) = reply.unwrap();
        assert_eq!(kind, MessageKind::Receipt);
        assert_eq!(
            Receipt::decode(&receipt).unwrap().ids,
            batch.chats.iter().map(|c| c.id).collect::<Vec<_>>(),
            "one receipt names every chat, the repeated one too"
        );
        let history = store
            .history(&HistoryQuery {
                peer: Some(&peer),
                direction: Some(Direction::Incoming),
                after_seq: 0,
                limit: 10,
                ..HistoryQuery::default()
            })
            .unwrap();
        let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["one", "two", "three"]);
        // A batch that does not decode is the peer's fault, and records nothing.
        let (got, reply) = inbound(&store, peer, MessageKind::Chats, b"\x0a\x02junk").unwrap();
        assert!(got.is_err_and(|e| e.is_peer_fault()));
        assert!(reply.is_none());
    }

    #[test]
    fn a_receipt_delivers_only_our_messages_to_that_peer_each_once() {
        let store = Store::open_in_memory(&[7; 32]).unwrap();
        let (bob, carol) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        befriend(&store, bob, "Bob");
        let state = |peer: &NodeId, c: &Chat| store.message_state(peer, &c.id).unwrap();
        let receipt = |ids: Vec<MessageId>| Receipt { ids }.encode().unwrap();
        // Two of ours to bob waiting, one of ours to carol, one chat bob sent us.
        let (ours, also_ours, carols, theirs) =
            (chat(1, "a"), chat(2, "b"), chat(3, "c"), chat(4, "d"));
        for (peer, c) in [(&bob, &ours), (&bob, &also_ours), (&carol, &carols)] {
            insert_outgoing(&store, peer, c, u64::MAX).unwrap();
        }
        let (got, _) = inbound(&store, bob, MessageKind::Chat, &theirs.encode().unwrap()).unwrap();
        assert!(matches!(got.unwrap(), Inbound::Chats(c) if c == vec![(theirs.clone(), true)]));
        store.mark_sent(&bob, &also_ours.id, 1).unwrap();
        // Bob's receipt names ours twice, the sent one, carol's, his own chat and an unknown id.
        let named = vec![
            ours.id,
            also_ours.id,
            carols.id,
            theirs.id,
            chat(9, "").id,
            ours.id,
        ];
        let (got, reply) = inbound(&store, bob, MessageKind::Receipt, &receipt(named)).unwrap();
        assert!(reply.is_none(), "a receipt is not answered");
        assert!(
            matches!(got.unwrap(), Inbound::Delivered(ids) if ids == vec![ours.id, also_ours.id]),
            "each of our messages to bob is reported delivered once"
        );
        let delivered = Some((Direction::Outgoing, MessageState::Delivered));
        assert_eq!(state(&bob, &ours), delivered);
        assert_eq!(state(&bob, &also_ours), delivered);
        assert_eq!(
            state(&carol, &carols),
            Some((Direction::Outgoing, MessageState::Queued)),
            "bob cannot deliver what we sent carol"
        );
        assert_eq!(
            state(&bob, &theirs),
            Some((Direction::Incoming, MessageState::Received))
        );
        // The same receipt again changes nothing and reports nothing.
        let again = receipt(vec![ours.id]);
        let (got, _) = inbound(&store, bob, MessageKind::Receipt, &again).unwrap();
        assert!(matches!(got.unwrap(), Inbound::Delivered(ids) if ids.is_empty()));
    }
}
