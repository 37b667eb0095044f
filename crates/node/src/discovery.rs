//! The discovery service: the sans-IO DHT of `dp2ptcs-dht` driven over QUIC (`PROTOCOL.md`
//! section 10.5).
//!
//! - **Connections.** DHT traffic uses its own QUIC connections (ALPN [`DHT_ALPN`]), apart from
//!   the messaging connections of contacts, so that any node can talk to any other without a
//!   ratchet session and without a disk write. The first stream of a DHT connection carries one
//!   [`DhtHello`] each way: the sender's Ed25519 key and its signature over the TLS exporter of
//!   this very connection, so a hello cannot be replayed on another connection. A peer is in the
//!   routing table only once its hello verified; an id learned from a `NODES` answer stays a
//!   hint until then.
//! - **Requests.** Every later stream carries one request frame and one response frame, in
//!   either direction. Each side bounds the rate of requests per connection, and the requests in
//!   flight across all peers share the node's `max_in_flight`.
//! - **Driver.** One task owns the timing: it sends what [`Dht::poll_transmit`] asks (each in its
//!   own task, with a deadline), hands finished lookups to their waiters, and calls
//!   [`Dht::handle_timeout`] when [`Dht::poll_timeout`] says.
//! - **Joining.** At start the node dials its `bootstrap` addresses and the peers it remembers
//!   (the routing-table snapshot in the store), then looks up its own id and publishes its peer
//!   record and prekey bundle; both are signed again with a fresh expiry every
//!   [`PUBLISH_INTERVAL`]. With an empty table it tries again every [`REJOIN_INTERVAL`].
//! - **Refilling.** The snapshot is saved once joined, every [`SNAPSHOT_INTERVAL`] and at
//!   shutdown. It keeps the peers that left the table too (up to [`MAX_SNAPSHOT_PEERS`], for
//!   [`SNAPSHOT_MAX_AGE`]). While the table holds fewer than k peers, every
//!   [`REFILL_INTERVAL`] the node dials up to [`REFILL_PER_ROUND`] of the bootstrap addresses and
//!   remembered peers that are not in it, and looks up its own id again if one answered: when a
//!   partition heals, the two halves find each other within that interval even if no traffic
//!   crosses between them.
//! - **Bounds.** DHT connections are at most half of `max_connections`, the least recently used
//!   is closed for a new one, and an idle one closes after the idle timeout (nobody keeps it
//!   alive). Lookups are bounded by [`DhtConfig::max_lookups`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dp2ptcs_dht::{
    Contact, Dht, DhtConfig, Event, LookupOutcome, PeerRecord, Record, RecordKey, RecordKind,
    RecordPayload, Response, TableEntry, Transmit, K,
};
use dp2ptcs_dht::{MailboxDelete, MailboxItem};
use dp2ptcs_types::{MessageId, NodeId};
use dp2ptcs_wire::{DhtHello, WireErrorCode};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use crate::frames::{write_frame, FrameReader};
use crate::limits::{ConnectionSlot, TokenBucket};
use crate::node::Inner;
use crate::sessions::{blocking, lock, now_ms};
use crate::{NodeError, DHT_ALPN, SERVER_NAME};

/// Context of the hello signature.
pub(crate) const HELLO_CONTEXT: &[u8] = b"dp2ptcs/v1/dht-hello";
/// TLS exporter label of the hello's channel binding.
pub(crate) const HELLO_EXPORTER_LABEL: &[u8] = b"EXPORTER-dp2ptcs-dht-hello";
/// Role byte of the dialer's hello.
const ROLE_DIALER: u8 = 0x01;
/// Role byte of the responder's hello.
const ROLE_RESPONDER: u8 = 0x02;
/// Our own records are signed again with a fresh expiry this often.
pub(crate) const PUBLISH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Lifetime of our own records (under the 24 h a holder accepts, so a clock a little behind
/// ours still takes them).
pub(crate) const RECORD_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// With an empty routing table, joining is tried again this often.
pub(crate) const REJOIN_INTERVAL: Duration = Duration::from_secs(30);
/// The routing-table snapshot is written this often (and once joined, and at shutdown).
pub(crate) const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Most peers in the snapshot.
pub(crate) const MAX_SNAPSHOT_PEERS: usize = 256;
/// A remembered peer not seen for this long leaves the snapshot (7 days).
pub(crate) const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// With fewer than k peers in the table, the remembered ones not in it are dialed this often.
pub(crate) const REFILL_INTERVAL: Duration = Duration::from_secs(60);
/// Most bootstrap addresses and remembered peers dialed in one refill round.
pub(crate) const REFILL_PER_ROUND: usize = 32;
/// Peers of the snapshot dialed at once when rejoining.
const REJOIN_PARALLEL: usize = 16;
/// Profile key of the routing-table snapshot in the store.
const SNAPSHOT_KEY: &str = "dht_peers";

/// A DHT connection in the pool.
#[derive(Debug)]
struct Pooled {
    conn: Connection,
    used: Instant,
}

/// The discovery service's state, owned by [`Inner`].
pub(crate) struct Discovery {
    dht: std::sync::Mutex<Dht>,
    /// Wakes the driver: something was queued.
    wake: Notify,
    /// Lookups someone waits for; `None` once the driver has stopped, so that nobody starts
    /// waiting for an answer that will never come.
    waiters: std::sync::Mutex<Option<HashMap<dp2ptcs_dht::LookupId, Waiter>>>,
    /// Writes the mailbox items we hold for others through to the store, in order. Each change
    /// is numbered; it is queued with the DHT locked, in the order the DHT made it.
    persist: tokio::sync::mpsc::UnboundedSender<(u64, Held)>,
    persist_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(u64, Held)>>>,
    /// Number of the last change queued for the store.
    persist_queued: std::sync::atomic::AtomicU64,
    /// Number of the last change the store has written (or failed to).
    persisted: tokio::sync::watch::Sender<u64>,
    /// Number of the last change the store failed to write (0: none).
    persist_failed: std::sync::atomic::AtomicU64,
    pool: std::sync::Mutex<HashMap<NodeId, Pooled>>,
    /// One dial at a time per peer id (entries live only while dialing).
    dialing: std::sync::Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    client: quinn::ClientConfig,
    /// The addresses our peer record advertises (empty: the bound address, if specific).
    advertised: std::sync::Mutex<Vec<SocketAddr>>,
    /// Sequence number of the last record we signed.
    last_sequence: std::sync::Mutex<u64>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").finish_non_exhaustive()
    }
}

impl Discovery {
    /// Takes the DHT's pending events (with `dht` locked): changes to the mailbox items we hold
    /// are queued for the store here, in order; the others are returned for [`Inner::dispatch`].
    fn take_events(&self, dht: &mut Dht) -> Vec<Event> {
        let mut rest = Vec::new();
        while let Some(event) = dht.poll_event() {
            let change = match event {
                Event::MailboxStored(item) => Held::Stored(Box::new(item)),
                Event::MailboxRemoved {
                    recipient,
                    message_id,
                } => Held::Removed(recipient, message_id),
                other => {
                    rest.push(other);
                    continue;
                }
            };
            let number = self.persist_queued.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = self.persist.send((number, change));
        }
        rest
    }

    pub(crate) fn new(
        local: NodeId,
        config: DhtConfig,
        client: quinn::ClientConfig,
        advertised: Vec<SocketAddr>,
    ) -> Self {
        let (persist, persist_rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            dht: std::sync::Mutex::new(Dht::new(local, config, now_ms())),
            wake: Notify::new(),
            waiters: std::sync::Mutex::new(Some(HashMap::new())),
            persist,
            persist_rx: std::sync::Mutex::new(Some(persist_rx)),
            persist_queued: std::sync::atomic::AtomicU64::new(0),
            persisted: tokio::sync::watch::Sender::new(0),
            persist_failed: std::sync::atomic::AtomicU64::new(0),
            pool: std::sync::Mutex::new(HashMap::new()),
            dialing: std::sync::Mutex::new(HashMap::new()),
            client,
            advertised: std::sync::Mutex::new(advertised),
            last_sequence: std::sync::Mutex::new(0),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        }
    }

    fn pooled(&self, peer: &NodeId) -> Option<Connection> {
        let mut pool = lock(&self.pool);
        let entry = pool.get_mut(peer)?;
        if entry.conn.close_reason().is_some() {
            pool.remove(peer);
            return None;
        }
        entry.used = Instant::now();
        Some(entry.conn.clone())
    }

    fn evict(&self, peer: &NodeId, conn: &Connection) {
        let mut pool = lock(&self.pool);
        if pool
            .get(peer)
            .is_some_and(|p| p.conn.stable_id() == conn.stable_id())
        {
            pool.remove(peer);
        }
    }
}

/// One routing-table entry, as `peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerEntry {
    /// The peer.
    pub node_id: NodeId,
    /// Where it was last reached.
    pub addr: SocketAddr,
    /// Its k-bucket (255 − leading zero bits of the distance).
    pub bucket: usize,
    /// When it last answered or asked, Unix milliseconds.
    pub last_seen_ms: u64,
    /// Consecutive failed requests.
    pub failures: u32,
    /// Whether a DHT connection to it is open now.
    pub connected: bool,
}

/// One peer asked during a lookup, as `lookup` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LookupStep {
    /// The peer asked.
    pub node_id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Hop: 1 for the peers of our own table, n + 1 for a peer learned from a hop-n answer.
    pub hop: u32,
    /// `answered`, `failed`, `invalid` or `pending`.
    pub outcome: &'static str,
}

/// The result of [`Node::lookup`](crate::Node::lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LookupReport {
    /// The id looked up.
    pub target: NodeId,
    /// Where the target answered, if it did.
    pub found: Option<SocketAddr>,
    /// The closest peers that answered, closest first.
    pub closest: Vec<(NodeId, SocketAddr)>,
    /// Every peer asked, in the order first asked.
    pub path: Vec<LookupStep>,
    /// Rounds (the greatest hop asked).
    pub rounds: u32,
    /// Requests sent.
    pub requests: u32,
    /// Wall-clock time of the lookup.
    pub elapsed: Duration,
}

/// What the DHT holds and knows, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DhtStatus {
    /// Peers in the routing table.
    pub peers: usize,
    /// Records held for others and ourselves.
    pub records: usize,
    /// Open DHT connections.
    pub connections: usize,
    /// Lookups running.
    pub lookups: usize,
    /// Mailbox items this node holds for others.
    pub mailbox_items: usize,
    /// Their total size in bytes.
    pub mailbox_bytes: usize,
    /// Copies of this node's own messages it keeps as one of their recipients' mailbox holders
    /// (not counted in `mailbox_items`; they do not make a message `held`).
    pub own_mailbox_items: usize,
}

/// A peer of the snapshot.
struct Remembered {
    contact: Contact,
    seen_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPeer {
    id: String,
    addr: SocketAddr,
    /// When it was last seen (Unix ms); 0 in snapshots written before this was kept.
    #[serde(default)]
    seen_ms: u64,
}

fn hello_message(conn: &Connection, role: u8) -> Result<Vec<u8>, NodeError> {
    let mut binding = [0u8; 32];
    conn.export_keying_material(&mut binding, HELLO_EXPORTER_LABEL, &[])
        .map_err(|_| NodeError::Internal("TLS exporter unavailable".into()))?;
    let mut m = Vec::with_capacity(HELLO_CONTEXT.len() + 1 + binding.len());
    m.extend_from_slice(HELLO_CONTEXT);
    m.push(role);
    m.extend_from_slice(&binding);
    Ok(m)
}

pub(crate) fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Whether `conn` was opened for the DHT (else it is a messaging connection).
pub(crate) fn is_dht_connection(conn: &Connection) -> bool {
    alpn(conn).as_deref() == Some(DHT_ALPN)
}

fn close_code(e: &NodeError) -> VarInt {
    VarInt::from_u32(e.wire_code().code())
}

impl Inner {
    fn our_hello(&self, conn: &Connection, role: u8) -> Result<DhtHello, NodeError> {
        Ok(DhtHello {
            identity_key: self.identity.public().to_bytes(),
            signature: self.identity.sign(&hello_message(conn, role)?),
        })
    }

    fn check_hello(
        &self,
        conn: &Connection,
        hello: &DhtHello,
        role: u8,
    ) -> Result<NodeId, NodeError> {
        let identity = dp2ptcs_crypto::PublicIdentity::from_bytes(&hello.identity_key)
            .map_err(|_| NodeError::Authentication("bad identity key"))?;
        if !identity.verify(&hello_message(conn, role)?, &hello.signature) {
            return Err(NodeError::Authentication("DHT hello signature"));
        }
        let peer = identity.node_id();
        if peer == self.node_id {
            return Err(NodeError::Authentication("a DHT hello with our own id"));
        }
        Ok(peer)
    }

    /// Responder side of a new DHT connection: hellos, then requests until it ends.
    pub(crate) async fn serve_dht_incoming(
        self: Arc<Self>,
        conn: Connection,
        slot: ConnectionSlot,
    ) {
        let this = self.clone();
        let c = conn.clone();
        let hello = async move {
            let (mut send, mut recv) = c.accept_bi().await?;
            let mut reader = FrameReader::new();
            let theirs = DhtHello::decode(&reader.expect(&mut recv).await?)?;
            let peer = this.check_hello(&c, &theirs, ROLE_DIALER)?;
            write_frame(&mut send, &this.our_hello(&c, ROLE_RESPONDER)?.encode()).await?;
            let _ = send.finish();
            Ok::<_, NodeError>(peer)
        };
        let peer = match tokio::time::timeout(self.config.handshake_timeout, hello).await {
            Ok(Ok(peer)) => peer,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "inbound DHT hello failed");
                conn.close(close_code(&e), b"hello failed");
                return;
            }
            Err(_) => {
                conn.close(close_code(&NodeError::Timeout("hello")), b"hello timed out");
                return;
            }
        };
        self.pool_dht(peer, conn.clone());
        {
            let mut dht = lock(&self.discovery.dht);
            dht.add_peer(Contact::new(peer, conn.remote_address()), now_ms());
        }
        self.discovery.wake.notify_one();
        self.serve_dht_connection(conn, peer, slot).await;
    }

    /// Puts a DHT connection in the pool, closing the least recently used one beyond the bound.
    fn pool_dht(&self, peer: NodeId, conn: Connection) {
        let bound = (self.config.max_connections / 2).max(1);
        let mut pool = lock(&self.discovery.pool);
        if let Some(old) = pool.insert(
            peer,
            Pooled {
                conn,
                used: Instant::now(),
            },
        ) {
            // A second connection with the same peer (both dialed at once): keep the new one,
            // let the old one end when idle.
            drop(old);
        }
        while pool.len() > bound {
            let Some(oldest) = pool.iter().min_by_key(|(_, p)| p.used).map(|(id, _)| *id) else {
                break;
            };
            if let Some(p) = pool.remove(&oldest) {
                p.conn.close(
                    VarInt::from_u32(WireErrorCode::NoError.code()),
                    b"pool full",
                );
            }
        }
    }

    /// Serves the request streams a DHT peer opens on `conn` until it ends.
    async fn serve_dht_connection(
        self: Arc<Self>,
        conn: Connection,
        peer: NodeId,
        _slot: ConnectionSlot,
    ) {
        let contact = Contact::new(peer, conn.remote_address());
        let mut bucket = TokenBucket::new(
            self.config.peer_burst,
            self.config.peer_rate_per_sec,
            Instant::now(),
        );
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => break,
            };
            let permit = if bucket.try_take(Instant::now()) && !self.is_shutting_down() {
                self.in_flight.clone().try_acquire_owned().ok()
            } else {
                None
            };
            let Some(permit) = permit else {
                refuse(send, recv, WireErrorCode::LimitExceeded);
                continue;
            };
            let this = self.clone();
            let conn = conn.clone();
            self.tasks.spawn(async move {
                let _permit = permit;
                let r = tokio::time::timeout(
                    this.config.request_timeout,
                    this.answer_dht(contact, send, recv),
                )
                .await
                .unwrap_or(Err(NodeError::Timeout("request")));
                if let Err(e) = r {
                    if e.is_peer_fault() {
                        tracing::debug!(error = %e, peer = %peer.short(8), "closing DHT connection");
                        conn.close(close_code(&e), b"protocol violation");
                    }
                }
            });
        }
        self.discovery.evict(&peer, &conn);
    }

    async fn answer_dht(
        &self,
        from: Contact,
        mut send: SendStream,
        mut recv: RecvStream,
    ) -> Result<(), NodeError> {
        let mut reader = FrameReader::new();
        let frame = reader.expect(&mut recv).await?;
        reader.expect_end(&mut recv).await?;
        let (id, request) = dp2ptcs_dht::decode_request(&frame)?;
        let put = matches!(request, dp2ptcs_dht::Request::MailboxPut { .. });
        let (response, events, queued_before, written) = {
            let mut dht = lock(&self.discovery.dht);
            let queued_before = self.discovery.persist_queued.load(Ordering::SeqCst);
            let response = dht.handle_request(from, request, now_ms());
            let events = self.discovery.take_events(&mut dht);
            (
                response,
                events,
                queued_before,
                self.discovery.persist_queued.load(Ordering::SeqCst),
            )
        };
        for event in events {
            self.dispatch(event);
        }
        // Answering may have queued a ping (a full bucket): the driver sends it.
        self.discovery.wake.notify_one();
        if put {
            // An item is acknowledged only once it is on disk (with every change queued before
            // it, so also when it was already held and its first write is still under way): a
            // holder that crashes right after saying "held" still holds it when it comes back.
            // If the write failed (or the node stops first), no answer: the depositor counts a
            // failure.
            let mut done = self.discovery.persisted.subscribe();
            let mut stop = self.shutdown.subscribe();
            tokio::select! {
                r = done.wait_for(|n| *n >= written) => {
                    r.map_err(|_| NodeError::ShuttingDown)?;
                }
                _ = stop.wait_for(|s| *s) => return Err(NodeError::ShuttingDown),
            }
            if self.discovery.persist_failed.load(Ordering::SeqCst) > queued_before {
                return Err(NodeError::Internal(
                    "a mailbox item could not be written to the store".into(),
                ));
            }
        }
        let bytes = dp2ptcs_dht::encode_response(id, &response)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        write_frame(&mut send, &bytes).await?;
        let _ = send.finish();
        Ok(())
    }

    /// The DHT connection to `to`, dialing it if needed; the peer must prove `to.id`.
    async fn dht_connection(self: &Arc<Self>, to: Contact) -> Result<Connection, NodeError> {
        if let Some(c) = self.discovery.pooled(&to.id) {
            return Ok(c);
        }
        let dial_lock = lock(&self.discovery.dialing)
            .entry(to.id)
            .or_default()
            .clone();
        let result = async {
            let _guard = dial_lock.lock().await;
            if let Some(c) = self.discovery.pooled(&to.id) {
                return Ok(c);
            }
            self.dht_dial(to.addr, Some(to.id)).await.map(|(_, c)| c)
        }
        .await;
        {
            let mut dialing = lock(&self.discovery.dialing);
            if dialing
                .get(&to.id)
                .is_some_and(|l| Arc::ptr_eq(l, &dial_lock) && Arc::strong_count(l) <= 2)
            {
                dialing.remove(&to.id);
            }
        }
        result
    }

    /// Dials `addr` for the DHT and runs the hellos; with `expected`, the peer must prove that
    /// id. The peer enters the routing table.
    async fn dht_dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<(NodeId, Connection), NodeError> {
        if self.is_shutting_down() {
            return Err(NodeError::ShuttingDown);
        }
        let slot = self
            .limiter
            .try_acquire(None, self.config.max_connections, usize::MAX)
            .ok_or(NodeError::Limit("connections"))?;
        let this = self.clone();
        let dial = async move {
            let conn = this
                .endpoint
                .connect_with(this.discovery.client.clone(), addr, SERVER_NAME)
                .map_err(|e| NodeError::Connect(e.to_string()))?
                .await?;
            let result = async {
                let (mut send, mut recv) = conn.open_bi().await?;
                write_frame(&mut send, &this.our_hello(&conn, ROLE_DIALER)?.encode()).await?;
                let _ = send.finish();
                let mut reader = FrameReader::new();
                let theirs = DhtHello::decode(&reader.expect(&mut recv).await?)?;
                let peer = this.check_hello(&conn, &theirs, ROLE_RESPONDER)?;
                if expected.is_some_and(|e| e != peer) {
                    return Err(NodeError::Authentication("DHT peer proved another id"));
                }
                Ok(peer)
            }
            .await;
            match result {
                Ok(peer) => Ok((peer, conn)),
                Err(e) => {
                    conn.close(close_code(&e), b"hello failed");
                    Err(e)
                }
            }
        };
        let timeout = self
            .discovery
            .request_timeout
            .max(Duration::from_millis(500));
        let (peer, conn) = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| NodeError::Timeout("DHT dial"))??;
        self.pool_dht(peer, conn.clone());
        {
            let mut dht = lock(&self.discovery.dht);
            dht.add_peer(Contact::new(peer, addr), now_ms());
        }
        self.tasks
            .spawn(self.clone().serve_dht_connection(conn.clone(), peer, slot));
        Ok((peer, conn))
    }

    /// Sends one request the DHT asked for and reports its response or failure.
    async fn dht_transmit(self: Arc<Self>, t: Transmit) {
        let limit = self.discovery.request_timeout + Duration::from_millis(500);
        let result = tokio::time::timeout(limit, self.dht_exchange(&t))
            .await
            .unwrap_or(Err(NodeError::Timeout("DHT request")));
        {
            let mut dht = lock(&self.discovery.dht);
            match result {
                Ok(response) => dht.handle_response(&t.to.id, t.id, response, now_ms()),
                Err(e) => {
                    tracing::trace!(error = %e, peer = %t.to.id.short(8), "DHT request failed");
                    dht.handle_failure(t.id, now_ms());
                }
            }
        }
        self.discovery.wake.notify_one();
    }

    async fn dht_exchange(self: &Arc<Self>, t: &Transmit) -> Result<Response, NodeError> {
        let conn = self.dht_connection(t.to).await?;
        let bytes = dp2ptcs_dht::encode_request(t.id, &t.request)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let result = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            write_frame(&mut send, &bytes).await?;
            let _ = send.finish();
            let mut reader = FrameReader::new();
            let frame = reader.expect(&mut recv).await?;
            let (id, response) = dp2ptcs_dht::decode_response(&frame)?;
            if id != t.id {
                return Err(NodeError::Authentication("response to another request"));
            }
            Ok(response)
        }
        .await;
        if let Err(e) = &result {
            if e.is_peer_fault() {
                conn.close(close_code(e), b"protocol violation");
            }
            if e.is_peer_fault() || matches!(e, NodeError::Connection(_) | NodeError::Stream(_)) {
                self.discovery.evict(&t.to.id, &conn);
            }
        }
        result
    }

    /// The driver: sends transmits, dispatches events, runs timers, until shutdown.
    pub(crate) async fn discovery_loop(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let (transmits, events, next) = {
                let mut dht = lock(&self.discovery.dht);
                let now = now_ms();
                if dht.poll_timeout() <= now {
                    dht.handle_timeout(now, &mut OsRng);
                }
                let transmits: Vec<Transmit> = std::iter::from_fn(|| dht.poll_transmit()).collect();
                let events = self.discovery.take_events(&mut dht);
                (transmits, events, dht.poll_timeout())
            };
            for t in transmits {
                self.tasks.spawn(self.clone().dht_transmit(t));
            }
            for event in events {
                self.dispatch(event);
            }
            let wait = Duration::from_millis(next.saturating_sub(now_ms()).min(60_000));
            tokio::select! {
                () = self.discovery.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        // Nobody waits past shutdown, and nobody starts waiting.
        lock(&self.discovery.waiters).take();
    }

    /// Hands a DHT event to whoever waits for it, or persists what it says.
    fn dispatch(&self, event: Event) {
        let mut waiters = lock(&self.discovery.waiters);
        let Some(waiters) = waiters.as_mut() else {
            return;
        };
        match event {
            Event::LookupFinished(outcome) => {
                if matches!(waiters.get(&outcome.id), Some(Waiter::Lookup(_))) {
                    if let Some(Waiter::Lookup(tx)) = waiters.remove(&outcome.id) {
                        let _ = tx.send(outcome);
                    }
                }
            }
            Event::Deposited {
                lookup,
                accepted,
                held_here,
                taken,
                ..
            } => {
                if let Some(Waiter::Deposit(tx)) = waiters.remove(&lookup) {
                    let _ = tx.send(Deposit {
                        // A copy kept here leaves with this node: it makes nothing held.
                        others: accepted - u32::from(held_here),
                        taken,
                    });
                }
            }
            Event::MailboxItems { lookup, items } => {
                if let Some(Waiter::Fetch { got, .. }) = waiters.get_mut(&lookup) {
                    got.extend(items);
                }
            }
            Event::MailboxFetched { lookup, .. } => {
                if let Some(Waiter::Fetch { got, done }) = waiters.remove(&lookup) {
                    let _ = done.send(got);
                }
            }
            Event::MailboxDeleted {
                lookup, removed, ..
            } => {
                if let Some(Waiter::Count(tx)) = waiters.remove(&lookup) {
                    let _ = tx.send(removed);
                }
            }
            // Queued for the store by `take_events`.
            Event::MailboxStored(_) | Event::MailboxRemoved { .. } => {}
        }
    }

    /// Loads the mailbox items held before a restart (before the node serves anyone).
    pub(crate) async fn restore_held(&self) {
        let store = self.store.clone();
        let restored = blocking(move || Ok(lock(&store).held_items(now_ms())?)).await;
        match restored {
            Ok(blobs) => {
                let items: Vec<MailboxItem> = blobs
                    .iter()
                    .filter_map(|b| MailboxItem::from_bytes(b).ok())
                    .collect();
                let n = items.len();
                lock(&self.discovery.dht).restore_mailbox(items, now_ms());
                if n > 0 {
                    tracing::info!(items = n, "mailbox items held for others restored");
                }
                self.discovery.wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "reading the held mailbox items failed"),
        }
    }

    /// Writes every change to the mailbox items we hold through to the store, in order, until
    /// shutdown (what is queued then is still written).
    pub(crate) async fn persist_held(self: Arc<Self>) {
        let Some(mut rx) = lock(&self.discovery.persist_rx).take() else {
            return;
        };
        let mut stop = self.shutdown.subscribe();
        loop {
            let change = tokio::select! {
                c = rx.recv() => c,
                // At shutdown: what is queued still goes in, then the task ends.
                _ = stop.wait_for(|s| *s) => rx.try_recv().ok(),
            };
            let Some((number, change)) = change else {
                break;
            };
            let store = self.store.clone();
            let r = blocking(move || {
                let store = lock(&store);
                match change {
                    Held::Stored(item) => store.put_held(&dp2ptcs_store::HeldItem {
                        recipient: item.recipient(),
                        message_id: item.message_id(),
                        sender: &item.sender_id(),
                        expires_at_ms: item.expires_at_ms(),
                        item: &item.to_bytes(),
                    })?,
                    Held::Removed(recipient, id) => {
                        store.remove_held(&recipient, &id)?;
                    }
                }
                Ok(())
            })
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "persisting a held mailbox item failed");
                self.discovery
                    .persist_failed
                    .fetch_max(number, Ordering::SeqCst);
            }
            self.discovery.persisted.send_replace(number);
        }
    }

    /// Deposits `item` at the holders of its recipient's mailbox.
    pub(crate) async fn dht_deposit(
        self: &Arc<Self>,
        item: MailboxItem,
    ) -> Result<Deposit, NodeError> {
        let rx = self.start_op(|dht, now| dht.deposit(item, now), Waiter::Deposit)?;
        rx.await.map_err(|_| NodeError::ShuttingDown)
    }

    /// Fetches the items of our own mailbox from its holders (deduplicated).
    pub(crate) async fn dht_fetch_mailbox(self: &Arc<Self>) -> Result<Vec<MailboxItem>, NodeError> {
        let rx = self.start_op(
            |dht, now| dht.fetch_mailbox(now),
            |done| Waiter::Fetch {
                got: Vec::new(),
                done,
            },
        )?;
        rx.await.map_err(|_| NodeError::ShuttingDown)
    }

    /// Deletes `ids` from our mailbox at its holders, with a request we sign.
    pub(crate) async fn dht_delete_from_mailbox(
        self: &Arc<Self>,
        ids: Vec<MessageId>,
    ) -> Result<u32, NodeError> {
        let request = MailboxDelete::sign(&self.identity, ids, now_ms())
            .map_err(|e| NodeError::Internal(format!("mailbox delete: {e}")))?;
        let rx = self.start_op(
            |dht, now| dht.delete_from_mailbox(request, now),
            Waiter::Count,
        )?;
        rx.await.map_err(|_| NodeError::ShuttingDown)
    }

    /// Starts a DHT operation and registers its waiter (under the DHT lock, so its events
    /// cannot come first).
    fn start_op<T>(
        self: &Arc<Self>,
        start: impl FnOnce(&mut Dht, u64) -> Result<dp2ptcs_dht::LookupId, dp2ptcs_dht::DhtError>,
        waiter: impl FnOnce(oneshot::Sender<T>) -> Waiter,
    ) -> Result<oneshot::Receiver<T>, NodeError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut dht = lock(&self.discovery.dht);
            let id = start(&mut dht, now_ms()).map_err(|e| NodeError::Limit(dht_limit(&e)))?;
            lock(&self.discovery.waiters)
                .as_mut()
                .ok_or(NodeError::ShuttingDown)?
                .insert(id, waiter(tx));
        }
        self.discovery.wake.notify_one();
        Ok(rx)
    }

    /// Joins the network, publishes our records, and keeps both fresh until shutdown.
    pub(crate) async fn maintain(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        let mut published: Option<Instant> = None;
        let mut snapshot_at = Instant::now() + SNAPSHOT_INTERVAL;
        let mut refill_at = Instant::now() + REFILL_INTERVAL;
        loop {
            let before = lock(&self.discovery.dht).table().len();
            if before == 0 {
                self.join(usize::MAX, false).await;
                published = None;
                refill_at = Instant::now() + REFILL_INTERVAL;
            } else if before < K && Instant::now() >= refill_at {
                self.join(REFILL_PER_ROUND, true).await;
                refill_at = Instant::now() + REFILL_INTERVAL;
            }
            let after = lock(&self.discovery.dht).table().len();
            let joined = after > 0;
            if before == 0 && joined {
                // Remembered at once: a node that crashes soon after joining can still rejoin.
                snapshot_at = Instant::now();
            }
            if joined && published.is_none_or(|t| t.elapsed() >= PUBLISH_INTERVAL) {
                match self.publish().await {
                    Ok(()) => published = Some(Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "publishing our DHT records failed"),
                }
            }
            if Instant::now() >= snapshot_at {
                if let Err(e) = self.save_snapshot().await {
                    tracing::warn!(error = %e, "saving the routing table failed");
                }
                snapshot_at = Instant::now() + SNAPSHOT_INTERVAL;
            }
            let wait = if joined {
                let publish_in = published.map_or(Duration::ZERO, |t| {
                    PUBLISH_INTERVAL.saturating_sub(t.elapsed())
                });
                let mut wait = publish_in
                    .min(snapshot_at.saturating_duration_since(Instant::now()))
                    .max(REJOIN_INTERVAL);
                if after < K {
                    wait = wait.min(refill_at.saturating_duration_since(Instant::now()));
                }
                wait
            } else {
                REJOIN_INTERVAL
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    /// Dials (at most `most` of) the bootstrap addresses and the remembered peers that are not in
    /// the routing table, then looks up our own id if one answered. A `refill` (the node has
    /// peers already, but fewer than k) logs its outcome at debug level only: in a network of
    /// fewer than k nodes it runs every [`REFILL_INTERVAL`] for good.
    async fn join(self: &Arc<Self>, most: usize, refill: bool) {
        let (in_table, addrs): (HashSet<NodeId>, HashSet<SocketAddr>) = lock(&self.discovery.dht)
            .table()
            .contacts()
            .map(|c| (c.id, c.addr))
            .unzip();
        let mut targets: Vec<(SocketAddr, Option<NodeId>)> = self
            .config
            .bootstrap
            .iter()
            .filter(|a| !addrs.contains(a))
            .map(|a| (*a, None))
            .collect();
        match self.load_snapshot().await {
            Ok(peers) => targets.extend(
                peers
                    .into_iter()
                    .filter(|p| !in_table.contains(&p.contact.id))
                    .map(|p| (p.contact.addr, Some(p.contact.id))),
            ),
            Err(e) => tracing::warn!(error = %e, "reading the routing-table snapshot failed"),
        }
        if targets.len() > most {
            // A different few each round, so that every remembered peer gets its turn.
            targets.shuffle(&mut OsRng);
            targets.truncate(most);
        }
        if targets.is_empty() {
            return;
        }
        let mut joined = 0usize;
        for chunk in targets.chunks(REJOIN_PARALLEL) {
            let mut set = tokio::task::JoinSet::new();
            for (addr, expected) in chunk.iter().copied() {
                let this = self.clone();
                set.spawn(async move { (addr, this.dht_dial(addr, expected).await) });
            }
            while let Some(r) = set.join_next().await {
                match r {
                    Ok((_, Ok(_))) => joined += 1,
                    Ok((addr, Err(e))) => {
                        tracing::debug!(%addr, error = %e, "could not reach a DHT peer")
                    }
                    Err(_) => {}
                }
            }
        }
        if joined == 0 {
            if refill {
                tracing::debug!(tried = targets.len(), "no more DHT peers reachable");
            } else {
                tracing::info!(
                    tried = targets.len(),
                    "no DHT peer reachable yet; trying again later"
                );
            }
            return;
        }
        match self.lookup_raw(self.node_id, Purpose::Bootstrap).await {
            Ok(o) if refill => tracing::debug!(
                peers = lock(&self.discovery.dht).table().len(),
                rounds = o.rounds,
                "routing table refilled"
            ),
            Ok(o) => tracing::info!(
                peers = lock(&self.discovery.dht).table().len(),
                rounds = o.rounds,
                "joined the DHT"
            ),
            Err(e) => tracing::warn!(error = %e, "DHT self-lookup failed"),
        }
    }

    /// The addresses our peer record carries.
    fn advertised(&self) -> Vec<SocketAddr> {
        let set = lock(&self.discovery.advertised).clone();
        if !set.is_empty() {
            return set;
        }
        match self.endpoint.local_addr() {
            Ok(a) if !a.ip().is_unspecified() => vec![a],
            _ => Vec::new(),
        }
    }

    /// A sequence number above every one we signed before (also across restarts: it is the
    /// clock in milliseconds, bumped if the clock went back).
    fn next_sequence(&self) -> u64 {
        let mut last = lock(&self.discovery.last_sequence);
        *last = now_ms().max(*last + 1);
        *last
    }

    /// Signs our peer record and prekey bundle afresh and stores them at the k closest nodes.
    pub(crate) async fn publish(self: &Arc<Self>) -> Result<(), NodeError> {
        let now = now_ms();
        let expires = now + RECORD_LIFETIME.as_millis() as u64;
        let addresses = self.advertised();
        let mut records = Vec::new();
        if !addresses.is_empty() {
            let peer = RecordPayload::Peer(PeerRecord {
                addresses,
                mix_key: None,
            });
            records.push(
                Record::sign(&self.identity, self.next_sequence(), expires, peer)
                    .map_err(|e| NodeError::Internal(e.to_string()))?,
            );
        }
        // It may rotate the signed prekey, which writes the database.
        let this = self.clone();
        let bundle = blocking(move || Ok(this.published_bundle())).await?;
        records.push(
            Record::sign(
                &self.identity,
                self.next_sequence(),
                expires,
                RecordPayload::PrekeyBundle(Box::new(bundle)),
            )
            .map_err(|e| NodeError::Internal(e.to_string()))?,
        );
        let mut waits = Vec::new();
        for record in records {
            waits.push(self.lookup_raw(record.key().owner, Purpose::Put(Box::new(record))));
        }
        for w in waits {
            let outcome = w.await?;
            tracing::debug!(stores = outcome.stores_sent, "published a DHT record");
        }
        Ok(())
    }

    /// Starts a lookup and returns a future of its outcome.
    fn lookup_raw(
        self: &Arc<Self>,
        target: NodeId,
        purpose: Purpose,
    ) -> impl std::future::Future<Output = Result<LookupOutcome, NodeError>> + Send + 'static {
        let started = (|| {
            let (tx, rx) = oneshot::channel();
            let mut dht = lock(&self.discovery.dht);
            let now = now_ms();
            let id = match purpose {
                Purpose::Find => dht.find_node(target, now),
                Purpose::Bootstrap => dht.bootstrap(now),
                Purpose::Get(kind) => dht.get_record(
                    RecordKey {
                        owner: target,
                        kind,
                    },
                    now,
                ),
                Purpose::Put(record) => dht.put_record(*record, now),
            }
            .map_err(|e| NodeError::Limit(dht_limit(&e)))?;
            lock(&self.discovery.waiters)
                .as_mut()
                .ok_or(NodeError::ShuttingDown)?
                .insert(id, Waiter::Lookup(tx));
            Ok::<_, NodeError>(rx)
        })();
        self.discovery.wake.notify_one();
        async move { started?.await.map_err(|_| NodeError::ShuttingDown) }
    }

    /// Addresses at which `peer` may be reached, from the DHT: where it answered a lookup of
    /// its id (proven), then the addresses of its signed peer record.
    pub(crate) async fn resolve(
        self: &Arc<Self>,
        peer: NodeId,
    ) -> Result<Vec<SocketAddr>, NodeError> {
        let mut found = Vec::new();
        let outcome = self.lookup_raw(peer, Purpose::Find).await?;
        if let Some(c) = outcome.closest.iter().find(|c| c.id == peer) {
            found.push(c.addr);
        }
        if found.is_empty() {
            let outcome = self
                .lookup_raw(peer, Purpose::Get(RecordKind::Peer))
                .await?;
            if let Some(RecordPayload::Peer(p)) = outcome.record.as_ref().map(Record::payload) {
                found.extend(p.addresses.iter().copied());
            }
        }
        Ok(found)
    }

    /// `peer`'s prekey bundle from the DHT, verified (its signature and its owner).
    pub(crate) async fn fetch_bundle(
        self: &Arc<Self>,
        peer: NodeId,
    ) -> Result<Option<dp2ptcs_crypto::PreKeyBundle>, NodeError> {
        let outcome = self
            .lookup_raw(peer, Purpose::Get(RecordKind::PrekeyBundle))
            .await?;
        Ok(match outcome.record.as_ref().map(Record::payload) {
            Some(RecordPayload::PrekeyBundle(b)) if b.identity().node_id() == peer => {
                Some((**b).clone())
            }
            _ => None,
        })
    }

    /// The remembered peers, most recently seen first (a snapshot without times reads as seen
    /// now).
    async fn load_snapshot(&self) -> Result<Vec<Remembered>, NodeError> {
        let store = self.store.clone();
        let json = blocking(move || Ok(lock(&store).profile(SNAPSHOT_KEY)?)).await?;
        let Some(json) = json else {
            return Ok(Vec::new());
        };
        let peers: Vec<SnapshotPeer> = match serde_json::from_str(&json) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable routing-table snapshot");
                return Ok(Vec::new());
            }
        };
        let now = now_ms();
        Ok(peers
            .into_iter()
            .take(MAX_SNAPSHOT_PEERS)
            .filter_map(|p| {
                Some(Remembered {
                    contact: Contact::new(p.id.parse().ok()?, p.addr),
                    seen_ms: if p.seen_ms == 0 { now } else { p.seen_ms },
                })
            })
            .filter(|p| p.contact.id != self.node_id)
            .collect())
    }

    /// Writes the remembered peers to the store: the routing table, then the peers remembered
    /// before that are no longer in it (dropped during a partition, say) and were seen within
    /// [`SNAPSHOT_MAX_AGE`], most recently seen first, at most [`MAX_SNAPSHOT_PEERS`].
    pub(crate) async fn save_snapshot(&self) -> Result<(), NodeError> {
        let entries = lock(&self.discovery.dht).table().entries();
        if entries.is_empty() {
            return Ok(());
        }
        let mut peers: Vec<Remembered> = entries
            .iter()
            .map(|e| Remembered {
                contact: e.contact,
                seen_ms: e.last_seen_ms,
            })
            .collect();
        let in_table: HashSet<NodeId> = peers.iter().map(|p| p.contact.id).collect();
        let oldest = now_ms().saturating_sub(SNAPSHOT_MAX_AGE.as_millis() as u64);
        peers.extend(
            self.load_snapshot()
                .await?
                .into_iter()
                .filter(|p| !in_table.contains(&p.contact.id) && p.seen_ms >= oldest),
        );
        peers.sort_by_key(|p| std::cmp::Reverse(p.seen_ms));
        let peers: Vec<SnapshotPeer> = peers
            .iter()
            .take(MAX_SNAPSHOT_PEERS)
            .map(|p| SnapshotPeer {
                id: p.contact.id.to_hex(),
                addr: p.contact.addr,
                seen_ms: p.seen_ms,
            })
            .collect();
        let json = serde_json::to_string(&peers).map_err(|e| NodeError::Internal(e.to_string()))?;
        let store = self.store.clone();
        blocking(move || Ok(lock(&store).set_profile(SNAPSHOT_KEY, &json)?)).await
    }

    pub(crate) fn set_advertised(self: &Arc<Self>, addresses: Vec<SocketAddr>) {
        *lock(&self.discovery.advertised) = addresses;
    }

    pub(crate) fn dht_peers(&self) -> Vec<PeerEntry> {
        let entries: Vec<TableEntry> = lock(&self.discovery.dht).table().entries();
        let pool = lock(&self.discovery.pool);
        entries
            .into_iter()
            .map(|e| PeerEntry {
                node_id: e.contact.id,
                addr: e.contact.addr,
                bucket: e.bucket,
                last_seen_ms: e.last_seen_ms,
                failures: e.failures,
                connected: pool
                    .get(&e.contact.id)
                    .is_some_and(|p| p.conn.close_reason().is_none()),
            })
            .collect()
    }

    pub(crate) fn dht_status(&self) -> DhtStatus {
        let dht = lock(&self.discovery.dht);
        let (items, bytes) = dht
            .mailbox()
            .map_or((0, 0), |m| (m.items_held(), m.bytes_held()));
        let (own_items, own_bytes) = dht.mailbox().map_or((0, 0), |m| m.held_from(&self.node_id));
        DhtStatus {
            peers: dht.table().len(),
            records: dht.store().len(),
            connections: lock(&self.discovery.pool).len(),
            lookups: dht.running_lookups(),
            mailbox_items: items - own_items,
            mailbox_bytes: bytes - own_bytes,
            own_mailbox_items: own_items,
        }
    }

    pub(crate) async fn lookup(
        self: &Arc<Self>,
        target: NodeId,
    ) -> Result<LookupReport, NodeError> {
        let started = Instant::now();
        let o = self.lookup_raw(target, Purpose::Find).await?;
        Ok(LookupReport {
            target,
            found: o.closest.iter().find(|c| c.id == target).map(|c| c.addr),
            closest: o.closest.iter().map(|c| (c.id, c.addr)).collect(),
            path: o
                .path
                .iter()
                .map(|s| LookupStep {
                    node_id: s.peer.id,
                    addr: s.peer.addr,
                    hop: s.hop,
                    outcome: match s.outcome {
                        dp2ptcs_dht::StepOutcome::Answered => "answered",
                        dp2ptcs_dht::StepOutcome::Failed => "failed",
                        dp2ptcs_dht::StepOutcome::Invalid => "invalid",
                        dp2ptcs_dht::StepOutcome::Pending => "pending",
                    },
                })
                .collect(),
            rounds: o.rounds,
            requests: o.requests,
            elapsed: started.elapsed(),
        })
    }

    /// Closes every DHT connection and ends every wait for a DHT operation (shutdown).
    pub(crate) fn close_dht(&self) {
        lock(&self.discovery.pool).clear();
        // The driver does the same when it stops, but it may be cancelled before it sees the
        // signal: an operation asked for from now on fails instead of waiting forever.
        lock(&self.discovery.waiters).take();
    }
}

/// How a deposit went.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deposit {
    /// Holders other than this node that accepted the item.
    pub(crate) others: u32,
    /// Holders that refused it because its recipient deleted it (a tombstone: the recipient
    /// fetched it, though it may have dropped it unread), this node included.
    pub(crate) taken: u32,
}

/// Who waits for a DHT operation.
enum Waiter {
    /// A lookup's outcome.
    Lookup(oneshot::Sender<LookupOutcome>),
    /// A deposit's outcome.
    Deposit(oneshot::Sender<Deposit>),
    /// A delete's removed items.
    Count(oneshot::Sender<u32>),
    /// A mailbox fetch: the items so far, and where to send them all.
    Fetch {
        got: Vec<MailboxItem>,
        done: oneshot::Sender<Vec<MailboxItem>>,
    },
}

/// A change to the mailbox items we hold, to write through.
enum Held {
    Stored(Box<MailboxItem>),
    Removed(NodeId, MessageId),
}

/// What a lookup is for.
enum Purpose {
    Find,
    Bootstrap,
    Get(RecordKind),
    Put(Box<Record>),
}

fn dht_limit(e: &dp2ptcs_dht::DhtError) -> &'static str {
    match e {
        dp2ptcs_dht::DhtError::TooManyLookups(_) => "DHT lookups running",
        _ => "DHT record refused",
    }
}

fn refuse(mut send: SendStream, mut recv: RecvStream, c: WireErrorCode) {
    let code = VarInt::from_u32(c.code());
    let _ = send.reset(code);
    let _ = recv.stop(code);
}
