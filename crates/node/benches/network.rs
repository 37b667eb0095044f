//! Network benchmark of the node: chat messages between two real nodes on loopback, beside raw
//! quinn streams carrying the same bytes in the same run, and the idle memory a connected peer
//! costs a node.
//!
//! `cargo bench -p dp2ptcs-node --bench network`
//!
//! What is measured:
//!
//! - **Messages.** Node A sends chats to node B with [`Node::send_chat`]: one call records the
//!   message, encrypts it with the Double Ratchet (saving the new session state first), sends one
//!   frame on a new bidirectional QUIC stream and waits for B's end-to-end encrypted receipt. The
//!   latency of a message is one such call. Both nodes are real: quinn on UDP 127.0.0.1, SQLCipher
//!   stores in temporary directories, keystores built from a random identity and database key
//!   (no passphrase KDF: that runs once at unlock and is not on the message path).
//! - **Messages through the outbox** (system `queue`). The same, through [`Node::queue_chat`],
//!   the path `dp2ptcs send` and `POST /v1/messages` take: one call records the message and
//!   returns; the outbox sends the contact's waiting messages in batches; the latency of a
//!   message is from the call until its `Delivered` event.
//! - **Baseline.** Two raw quinn endpoints in the same process and runtime, with the node's TLS
//!   configuration (same rustls crypto provider, TLS 1.3, ALPN) and transport configuration. Per
//!   message the client opens a bidirectional stream, writes a request of exactly the size of the
//!   node's framed chat envelope for that payload, finishes, and reads a reply of exactly the size
//!   of the framed receipt envelope. Same concurrency, same duration, measured right before the
//!   node at each point.
//! - **Idle memory per peer.** A fresh hub node in this process; `PEERS` peer nodes run as child
//!   processes (this same binary with `--peer-child`), each a contact of the hub that dials it,
//!   completes the handshake (X3DH) and delivers one chat, then stays connected and idle. The
//!   figure is the hub's resident set growth (`VmRSS`) divided by the number of peers, measured
//!   from a baseline taken with a few warm-up peers already connected (so one-time growth of
//!   threads, allocator arenas and page cache is not charged to the peers): only the hub's side
//!   of each peer (contact row, pooled QUIC connection and its task, the ratchet session, one
//!   message row), none of the peers' own memory.
//!
//! The node configuration raises the per-peer token bucket and the in-flight limit out of the
//! way: this measures the data path, not the rate limiter.
//!
//! Environment: `DP2PTCS_BENCH_DIR` (where the stores go; default the system temporary
//! directory), `DP2PTCS_BENCH_SECS` (seconds per measurement, default 5), `DP2PTCS_BENCH_PEERS`
//! (peers of the memory stage, default 64, even; 0 skips it), `DP2PTCS_BENCH_SYSTEMS` (default
//! `raw,node,queue`; one of them alone is for profiling), `DP2PTCS_BENCH_PAYLOADS` and
//! `DP2PTCS_BENCH_CONCURRENCY` (comma-separated lists; default `64,16384` and `1,32`). The
//! results are printed as a table, then as JSON lines (one object per line, each starting with
//! `{"bench":"network"`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dp2ptcs_crypto::ratchet::TAG_LEN;
use dp2ptcs_crypto::{Identity, UnlockedKeystore};
use dp2ptcs_node::{tls, Node, NodeConfig, NodeEvent, SERVER_NAME};
use dp2ptcs_store::{ContactRecord, Store, DB_FILE};
use dp2ptcs_types::{MessageId, NodeId};
use dp2ptcs_wire::{
    encode_frame, Chat, Envelope, MessageKind, RatchetHeader, Receipt, MAX_FRAME_LEN,
};
use quinn::{Connection, Endpoint, VarInt};
use rand::rngs::OsRng;
use rand::RngCore;

/// Payload sizes (chat body bytes).
const PAYLOADS: [usize; 2] = [64, 16 * 1024];
/// Concurrency levels: 1 for latency, 32 concurrent senders for throughput (half the default
/// 64 concurrent streams a connection allows).
const CONCURRENCY: [usize; 2] = [1, 32];
/// Warm-up before each measurement, not counted.
const WARM_UP: Duration = Duration::from_millis(500);
/// Idle time before each memory reading.
const SETTLE: Duration = Duration::from_secs(3);
/// Peers connected to the hub before its baseline memory reading.
const WARM_UP_PEERS: usize = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list of numbers from `name`, or `default` if it is unset or not one.
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.split(',').map(|n| n.trim().parse().ok()).collect())
        .filter(|l: &Vec<usize>| !l.is_empty() && l.iter().all(|&n| n > 0))
        .unwrap_or_else(|| default.to_vec())
}

fn base_dir() -> PathBuf {
    std::env::var_os("DP2PTCS_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// The filesystem type holding `path` (longest mount point prefix in `/proc/mounts`).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), kind.to_owned()))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, k)| k)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `RssAnon`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn bench_config() -> NodeConfig {
    let default = NodeConfig::default();
    NodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        // Out of the way: the benchmark measures the data path, not the rate limiter.
        peer_rate_per_sec: 10_000_000,
        peer_burst: 10_000_000,
        max_in_flight: 4096,
        ..default
    }
}

fn new_keys() -> UnlockedKeystore {
    let mut db_key = [0u8; 32];
    OsRng.fill_bytes(&mut db_key);
    UnlockedKeystore::from_parts(Identity::generate(&mut OsRng), db_key)
}

async fn start_node(dir: &Path, keys: &UnlockedKeystore, config: NodeConfig) -> Node {
    let store = Store::open(&dir.join(DB_FILE), keys.database_key()).unwrap();
    Node::start(config, keys, store).await.unwrap()
}

fn contact(name: &str, public_key: [u8; 32], addr: SocketAddr) -> ContactRecord {
    ContactRecord {
        node_id: NodeId::from_public_key(&public_key),
        public_key,
        name: name.into(),
        addresses: vec![addr],
        verified: true,
        verified_at: None,
        added_at: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Wire sizes: the bytes the node puts on a stream for one chat and for its receipt.

fn framed_envelope(kind: MessageKind, plaintext_len: usize) -> Vec<u8> {
    let env = Envelope {
        sender: NodeId::from_bytes([0xA5; 32]),
        kind,
        header: RatchetHeader {
            dh_public_key: [0x5A; 32],
            previous_chain_length: 1,
            message_number: 1000,
        },
        payload: vec![0x3C; plaintext_len + TAG_LEN],
    };
    encode_frame(&env.encode(), MAX_FRAME_LEN).unwrap()
}

/// The framed chat envelope and the framed receipt envelope for a `payload`-byte body.
fn wire_sizes(payload: usize) -> (Vec<u8>, Vec<u8>) {
    let id = MessageId::random(&mut OsRng);
    let chat = Chat {
        id,
        sent_at_ms: 1_800_000_000_000,
        body: "x".repeat(payload),
    };
    let receipt = Receipt { ids: vec![id] };
    (
        framed_envelope(MessageKind::Chat, chat.encode().unwrap().len()),
        framed_envelope(MessageKind::Receipt, receipt.encode().unwrap().len()),
    )
}

// ---------------------------------------------------------------------------------------------
// The load driver.

type Op = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct Sample {
    messages: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Sample {
    fn per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        let n = self.latencies.len();
        let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        self.latencies[i]
    }
}

/// `concurrency` workers each run `op` back to back until `duration` has passed; a call still
/// running at the deadline completes and counts.
async fn drive(op: &Op, concurrency: usize, duration: Duration) -> Sample {
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let op = op.clone();
        workers.spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                op().await;
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut latencies = Vec::new();
    while let Some(l) = workers.join_next().await {
        latencies.extend(l.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Sample {
        messages: latencies.len(),
        elapsed,
        latencies,
    }
}

// ---------------------------------------------------------------------------------------------
// The two systems under test.

fn transport(config: &NodeConfig) -> Arc<quinn::TransportConfig> {
    // The same transport settings as `Node::start`.
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(config.max_streams_per_connection))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.idle_timeout).unwrap(),
        ))
        .keep_alive_interval(Some(config.idle_timeout / 3));
    Arc::new(t)
}

/// Raw quinn: a server that answers each bidirectional stream with `reply` once the request
/// ended, and a client connection to it.
async fn raw_pair(reply_for: Arc<Mutex<Vec<u8>>>) -> (Endpoint, Endpoint, Connection) {
    let config = bench_config();
    let server_crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_crypto().unwrap()).unwrap();
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server_config.transport_config(transport(&config));
    let server = Endpoint::server(server_config, config.listen).unwrap();
    let client_crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_crypto().unwrap()).unwrap();
    let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
    client_config.transport_config(transport(&config));
    let mut client = Endpoint::client(config.listen).unwrap();
    client.set_default_client_config(client_config);

    let accept = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            let reply_for = reply_for.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let reply = reply_for.lock().unwrap().clone();
                    tokio::spawn(async move {
                        if recv.read_to_end(MAX_FRAME_LEN + 16).await.is_ok() {
                            let _ = send.write_all(&reply).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    let conn = client
        .connect(server.local_addr().unwrap(), SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    (server, client, conn)
}

fn raw_op(conn: &Connection, request: Vec<u8>, reply_len: usize) -> Op {
    let conn = conn.clone();
    let request: Arc<[u8]> = request.into();
    Arc::new(move || {
        let (conn, request) = (conn.clone(), request.clone());
        Box::pin(async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&request).await.unwrap();
            send.finish().unwrap();
            let reply = recv.read_to_end(MAX_FRAME_LEN + 16).await.unwrap();
            assert_eq!(reply.len(), reply_len);
        })
    })
}

fn node_op(node: &Node, to: &ContactRecord, body: String) -> Op {
    let (node, to, body) = (node.clone(), to.clone(), Arc::new(body));
    Arc::new(move || {
        let (node, to, body) = (node.clone(), to.clone(), body.clone());
        Box::pin(async move {
            node.send_chat(&to, &body).await.unwrap();
        })
    })
}

/// Hands each `Delivered` event of a node to whoever waits for that message.
#[derive(Default)]
struct DeliveredIds {
    state: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    /// Delivered before anyone waited.
    early: HashSet<MessageId>,
    /// Who waits.
    waiting: HashMap<MessageId, tokio::sync::oneshot::Sender<()>>,
}

impl DeliveredIds {
    /// Routes `node`'s events until it shuts down. After a lag it asks the store about every
    /// message still waited for.
    fn follow(self: &Arc<Self>, node: &Node, peer: NodeId) {
        let (this, node) = (self.clone(), node.clone());
        let mut events = node.subscribe();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Delivered { id, .. }) => this.delivered(id),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let waiting: Vec<MessageId> =
                            this.state.lock().unwrap().waiting.keys().copied().collect();
                        for id in waiting {
                            let m = node.message(&peer, &id).await.unwrap();
                            if m.is_some_and(|m| m.state == dp2ptcs_store::MessageState::Delivered)
                            {
                                this.delivered(id);
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
        });
    }

    fn delivered(&self, id: MessageId) {
        let mut state = self.state.lock().unwrap();
        match state.waiting.remove(&id) {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => {
                state.early.insert(id);
            }
        }
    }

    async fn wait(&self, id: MessageId) {
        let rx = {
            let mut state = self.state.lock().unwrap();
            if state.early.remove(&id) {
                return;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            state.waiting.insert(id, tx);
            rx
        };
        rx.await.unwrap();
    }
}

fn queue_op(node: &Node, to: &ContactRecord, body: String, delivered: &Arc<DeliveredIds>) -> Op {
    let (node, to, body, delivered) = (node.clone(), to.clone(), Arc::new(body), delivered.clone());
    Arc::new(move || {
        let (node, to, body, delivered) =
            (node.clone(), to.clone(), body.clone(), delivered.clone());
        Box::pin(async move {
            let id = node.queue_chat(&to, &body).await.unwrap();
            delivered.wait(id).await;
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Results.

struct Row {
    payload: usize,
    concurrency: usize,
    system: &'static str,
    request_bytes: usize,
    reply_bytes: usize,
    sample: Sample,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn json_row(r: &Row, store_fs: &str) -> String {
    let s = &r.sample;
    format!(
        concat!(
            "{{\"bench\":\"network\",\"kind\":\"messages\",\"system\":\"{}\",\"store_fs\":\"{}\",",
            "\"payload_bytes\":{},\"concurrency\":{},\"request_bytes\":{},\"reply_bytes\":{},",
            "\"messages\":{},\"seconds\":{:.3},\"msgs_per_sec\":{:.1},\"payload_mb_per_sec\":{:.3},",
            "\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"mean_ms\":{:.3}}}"
        ),
        r.system,
        store_fs,
        r.payload,
        r.concurrency,
        r.request_bytes,
        r.reply_bytes,
        s.messages,
        s.elapsed.as_secs_f64(),
        s.per_sec(),
        s.per_sec() * r.payload as f64 / 1e6,
        ms(s.quantile(0.50)),
        ms(s.quantile(0.99)),
        ms(s.latencies.iter().sum::<Duration>()) / s.messages as f64,
    )
}

fn print_rows(rows: &[Row]) {
    println!(
        "\n{:>8} {:>5} {:<5} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9}",
        "payload", "conc", "sys", "bytes", "msgs", "msgs/s", "MB/s", "p50 ms", "p99 ms"
    );
    for r in rows {
        let s = &r.sample;
        println!(
            "{:>8} {:>5} {:<5} {:>8} {:>7} {:>10.1} {:>9.3} {:>9.3} {:>9.3}",
            r.payload,
            r.concurrency,
            r.system,
            r.request_bytes,
            s.messages,
            s.per_sec(),
            s.per_sec() * r.payload as f64 / 1e6,
            ms(s.quantile(0.50)),
            ms(s.quantile(0.99)),
        );
    }
    println!(
        "\n{:>8} {:>5} {:<5} {:>22} {:>14} {:>14}",
        "payload", "conc", "sys", "throughput sys/raw", "p50 sys/raw", "p99 sys/raw"
    );
    for (raw, node) in pairs(rows) {
        println!(
            "{:>8} {:>5} {:<5} {:>21.3}× {:>13.2}× {:>13.2}×",
            raw.payload,
            raw.concurrency,
            node.system,
            node.sample.per_sec() / raw.sample.per_sec(),
            ms(node.sample.quantile(0.5)) / ms(raw.sample.quantile(0.5)),
            ms(node.sample.quantile(0.99)) / ms(raw.sample.quantile(0.99)),
        );
    }
}

/// Each raw row with every node row (`node`, `queue`) measured at the same point.
fn pairs(rows: &[Row]) -> impl Iterator<Item = (&Row, &Row)> {
    rows.iter()
        .filter(|r| r.system == "raw")
        .flat_map(move |raw| {
            rows.iter()
                .filter(move |n| {
                    n.system != "raw"
                        && (n.payload, n.concurrency) == (raw.payload, raw.concurrency)
                })
                .map(move |n| (raw, n))
        })
}

fn ratio_json(raw: &Row, node: &Row) -> String {
    format!(
        concat!(
            "{{\"bench\":\"network\",\"kind\":\"ratio\",\"system\":\"{}\",",
            "\"payload_bytes\":{},\"concurrency\":{},",
            "\"throughput_node_over_raw\":{:.4},\"p50_node_over_raw\":{:.3},",
            "\"p99_node_over_raw\":{:.3},\"goal_met\":{}}}"
        ),
        node.system,
        raw.payload,
        raw.concurrency,
        node.sample.per_sec() / raw.sample.per_sec(),
        ms(node.sample.quantile(0.5)) / ms(raw.sample.quantile(0.5)),
        ms(node.sample.quantile(0.99)) / ms(raw.sample.quantile(0.99)),
        node.sample.per_sec() / raw.sample.per_sec() >= 0.5,
    )
}

// ---------------------------------------------------------------------------------------------
// Messages stage.

/// What the message stage measures.
struct Plan {
    duration: Duration,
    systems: Vec<String>,
    payloads: Vec<usize>,
    concurrency: Vec<usize>,
}

async fn messages_stage(dir: &Path, plan: &Plan) -> Vec<Row> {
    let (duration, systems) = (plan.duration, &plan.systems);
    let (da, db) = (
        tempfile::tempdir_in(dir).unwrap(),
        tempfile::tempdir_in(dir).unwrap(),
    );
    let (ka, kb) = (new_keys(), new_keys());
    let a = start_node(da.path(), &ka, bench_config()).await;
    let b = start_node(db.path(), &kb, bench_config()).await;
    let b_contact = contact(
        "b",
        kb.identity().public().to_bytes(),
        b.local_addr().unwrap(),
    );
    let a_contact = contact(
        "a",
        ka.identity().public().to_bytes(),
        a.local_addr().unwrap(),
    );
    a.put_contact(&b_contact).await.unwrap();
    b.put_contact(&a_contact).await.unwrap();
    // Handshake (X3DH) and a few messages both ways before anything is measured.
    for _ in 0..5 {
        a.send_chat(&b_contact, "warm-up").await.unwrap();
        b.send_chat(&a_contact, "warm-up").await.unwrap();
    }

    let delivered = Arc::new(DeliveredIds::default());
    delivered.follow(&a, b_contact.node_id);

    let reply_for = Arc::new(Mutex::new(Vec::new()));
    let (server, client, conn) = raw_pair(reply_for.clone()).await;

    let mut rows = Vec::new();
    for &payload in &plan.payloads {
        let (request, reply) = wire_sizes(payload);
        *reply_for.lock().unwrap() = reply.clone();
        for &concurrency in &plan.concurrency {
            let raw = raw_op(&conn, request.clone(), reply.len());
            let node = node_op(&a, &b_contact, "x".repeat(payload));
            let queue = queue_op(&a, &b_contact, "x".repeat(payload), &delivered);
            for (system, op) in [("raw", raw), ("node", node), ("queue", queue)] {
                if !systems.iter().any(|s| s == system) {
                    continue;
                }
                drive(&op, concurrency, WARM_UP).await;
                let sample = drive(&op, concurrency, duration).await;
                eprintln!(
                    "  {system:<4} {payload:>5} B x{concurrency:<2}: {:.1} msgs/s",
                    sample.per_sec()
                );
                rows.push(Row {
                    payload,
                    concurrency,
                    system,
                    request_bytes: request.len(),
                    reply_bytes: reply.len(),
                    sample,
                });
            }
        }
    }

    conn.close(VarInt::from_u32(0), b"done");
    client.wait_idle().await;
    server.close(VarInt::from_u32(0), b"done");
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
    rows
}

// ---------------------------------------------------------------------------------------------
// Memory stage: the hub here, the peers in child processes.

struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

struct MemoryReport {
    peers: usize,
    rss_before_kib: u64,
    rss_half_kib: u64,
    rss_after_kib: u64,
    anon_before_kib: u64,
    anon_after_kib: u64,
    peer_process_rss_kib: u64,
}

fn per_peer(from: u64, to: u64, n: usize) -> f64 {
    to.saturating_sub(from) as f64 / n as f64
}

impl MemoryReport {
    fn text(&self) -> String {
        let (n, half) = (self.peers, self.peers / 2);
        format!(
            "idle memory per connected peer (hub side only, {n} peers after {WARM_UP_PEERS}): \
             {:.1} KiB RSS \
             (first half {:.1}, second half {:.1}; anonymous {:.1}); hub RSS {} -> {} KiB; \
             one idle peer process: {} KiB",
            per_peer(self.rss_before_kib, self.rss_after_kib, n),
            per_peer(self.rss_before_kib, self.rss_half_kib, half),
            per_peer(self.rss_half_kib, self.rss_after_kib, n - half),
            per_peer(self.anon_before_kib, self.anon_after_kib, n),
            self.rss_before_kib,
            self.rss_after_kib,
            self.peer_process_rss_kib,
        )
    }

    fn json(&self, store_fs: &str) -> String {
        format!(
            concat!(
                "{{\"bench\":\"network\",\"kind\":\"idle_memory\",\"store_fs\":\"{}\",",
                "\"peers\":{},\"rss_before_kib\":{},\"rss_half_kib\":{},\"rss_after_kib\":{},",
                "\"kib_per_peer\":{:.1},\"anon_kib_per_peer\":{:.1},\"peer_process_rss_kib\":{}}}"
            ),
            store_fs,
            self.peers,
            self.rss_before_kib,
            self.rss_half_kib,
            self.rss_after_kib,
            per_peer(self.rss_before_kib, self.rss_after_kib, self.peers),
            per_peer(self.anon_before_kib, self.anon_after_kib, self.peers),
            self.peer_process_rss_kib,
        )
    }
}

/// Starts `count` peer processes, makes each a contact of the hub, and waits until each one has
/// handshaken and delivered a chat. Returns the peers and their own RSS.
fn connect_peers(
    rt: &tokio::runtime::Runtime,
    hub: &Node,
    hub_line: &str,
    first: usize,
    count: usize,
    dir: &Path,
) -> (Vec<Peer>, Vec<u64>) {
    let exe = std::env::current_exe().unwrap();
    let mut peers: Vec<Peer> = (0..count)
        .map(|_| {
            let mut child = Command::new(&exe)
                .arg("--peer-child")
                .env("DP2PTCS_BENCH_DIR", dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            Peer {
                child,
                stdin,
                stdout,
            }
        })
        .collect();
    for (i, p) in peers.iter_mut().enumerate() {
        let line = read_line(&mut p.stdout);
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), Some("PEER"), "peer said {line:?}");
        let key: [u8; 32] = hex::decode(f.next().unwrap()).unwrap().try_into().unwrap();
        let addr: SocketAddr = f.next().unwrap().parse().unwrap();
        rt.block_on(hub.put_contact(&contact(&format!("peer-{}", first + i), key, addr)))
            .unwrap();
        let stdin = p.stdin.as_mut().unwrap();
        writeln!(stdin, "{hub_line}").unwrap();
        stdin.flush().unwrap();
    }
    let rss = peers
        .iter_mut()
        .map(|p| {
            let line = read_line(&mut p.stdout);
            let rss = line
                .strip_prefix("READY ")
                .unwrap_or_else(|| panic!("{line:?}"));
            rss.parse().unwrap()
        })
        .collect();
    (peers, rss)
}

fn memory_stage(rt: &tokio::runtime::Runtime, dir: &Path, peers: usize) -> MemoryReport {
    let hub_dir = tempfile::tempdir_in(dir).unwrap();
    let keys = new_keys();
    let config = NodeConfig {
        max_connections: peers + WARM_UP_PEERS + 16,
        max_connections_per_ip: peers + WARM_UP_PEERS + 16,
        ..bench_config()
    };
    let hub = rt.block_on(start_node(hub_dir.path(), &keys, config));
    let hub_line = format!(
        "HUB {} {}",
        hex::encode(keys.identity().public().to_bytes()),
        hub.local_addr().unwrap()
    );
    // A few peers first, not counted: they grow the runtime's blocking threads, the allocator's
    // arenas and the store's page cache to their working size, so the figure is per peer.
    let (mut all, mut peer_rss) = connect_peers(rt, &hub, &hub_line, 0, WARM_UP_PEERS, dir);
    std::thread::sleep(SETTLE);
    let rss_before_kib = status_kib("VmRSS");
    let anon_before_kib = status_kib("RssAnon");

    let half = peers / 2;
    let (more, more_rss) = connect_peers(rt, &hub, &hub_line, WARM_UP_PEERS, half, dir);
    all.extend(more);
    peer_rss.extend(more_rss);
    std::thread::sleep(SETTLE);
    let rss_half_kib = status_kib("VmRSS");
    let first = WARM_UP_PEERS + half;
    let (more, more_rss) = connect_peers(rt, &hub, &hub_line, first, peers - half, dir);
    all.extend(more);
    peer_rss.extend(more_rss);
    std::thread::sleep(SETTLE);
    let rss_after_kib = status_kib("VmRSS");
    let anon_after_kib = status_kib("RssAnon");

    // Closing a peer's stdin tells it to shut down.
    for p in &mut all {
        p.stdin = None;
    }
    for p in &mut all {
        assert!(p.child.wait().unwrap().success());
    }
    rt.block_on(hub.shutdown(Duration::from_secs(5))).unwrap();
    peer_rss.sort_unstable();
    MemoryReport {
        peers,
        rss_before_kib,
        rss_half_kib,
        rss_after_kib,
        anon_before_kib,
        anon_after_kib,
        peer_process_rss_kib: peer_rss[peer_rss.len() / 2],
    }
}

/// A peer process of the memory stage. Protocol on stdin/stdout, one line each:
/// it prints `PEER <public key hex> <addr>`, reads `HUB <public key hex> <addr>`, handshakes with
/// the hub and delivers one chat, prints `READY <own VmRSS KiB>`, then idles until stdin closes.
fn peer_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let keys = new_keys();
    let node = rt.block_on(start_node(dir.path(), &keys, bench_config()));
    println!(
        "PEER {} {}",
        hex::encode(keys.identity().public().to_bytes()),
        node.local_addr().unwrap()
    );
    std::io::stdout().flush().unwrap();
    let mut stdin = BufReader::new(std::io::stdin());
    let line = read_line(&mut stdin);
    let mut f = line.split_whitespace();
    assert_eq!(f.next(), Some("HUB"), "hub said {line:?}");
    let key: [u8; 32] = hex::decode(f.next().unwrap()).unwrap().try_into().unwrap();
    let hub = contact("hub", key, f.next().unwrap().parse().unwrap());
    rt.block_on(async {
        node.put_contact(&hub).await.unwrap();
        node.send_chat(&hub, "hello hub").await.unwrap();
    });
    println!("READY {}", status_kib("VmRSS"));
    std::io::stdout().flush().unwrap();
    // Idle until the parent closes stdin (or goes away).
    let mut rest = String::new();
    while stdin.read_line(&mut rest).is_ok_and(|n| n > 0) {
        rest.clear();
    }
    rt.block_on(node.shutdown(Duration::from_secs(2))).unwrap();
}

// ---------------------------------------------------------------------------------------------

fn main() {
    if std::env::args().any(|a| a == "--peer-child") {
        peer_child();
        return;
    }
    let duration = Duration::from_secs(env_u64("DP2PTCS_BENCH_SECS", 5));
    let peers = env_u64("DP2PTCS_BENCH_PEERS", 64) as usize & !1;
    let systems: Vec<String> = std::env::var("DP2PTCS_BENCH_SYSTEMS")
        .unwrap_or_else(|_| "raw,node,queue".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let dir = base_dir();
    let store_fs = fs_type(&dir);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!(
        "node network benchmark: stores on {store_fs}, {cores} cores, {}s per point",
        duration.as_secs()
    );

    // Memory first, in a process that has not yet grown its heap for the message stage.
    let mem = (peers > 0).then(|| {
        eprintln!("memory: hub + {peers} peer processes");
        memory_stage(&rt, &dir, peers)
    });
    let plan = Plan {
        duration,
        systems,
        payloads: env_list("DP2PTCS_BENCH_PAYLOADS", &PAYLOADS),
        concurrency: env_list("DP2PTCS_BENCH_CONCURRENCY", &CONCURRENCY),
    };
    eprintln!(
        "messages: payloads {:?}, concurrency {:?}",
        plan.payloads, plan.concurrency
    );
    let rows = rt.block_on(messages_stage(&dir, &plan));

    print_rows(&rows);
    if let Some(mem) = &mem {
        println!("\n{}", mem.text());
    }
    println!();
    for r in &rows {
        println!("{}", json_row(r, &store_fs));
    }
    for (raw, node) in pairs(&rows) {
        println!("{}", ratio_json(raw, node));
    }
    if let Some(mem) = &mem {
        println!("{}", mem.json(&store_fs));
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}
