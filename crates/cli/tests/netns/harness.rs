//! A small network of real `dp2ptcs run` processes, each in its own Linux network namespace.
//!
//! # Layout
//! One [`Net`] is one test's network. Its hosts are network namespaces joined by veth pairs to
//! a Linux bridge in the root namespace; host `i` has the address `10.77.(i+1).1/16`, so every
//! host reaches every other without a route, yet each sits in its own /24, as separate
//! networks would (the DHT keeps at most 2 peers of one /24 per bucket). The bridge carries no
//! address: nothing in the root namespace is reachable from the hosts, and two `Net`s never
//! see each other's traffic even though their addresses are the same.
//!
//! Each host runs `dp2ptcs run --listen <its IP>:7446 --bootstrap <host 0's IP>:7446` under
//! `ip netns exec` (host 0, the seed, has no `--bootstrap`). Its data directory is on the host
//! filesystem (tmpfs `/dev/shm` when present), so the test drives every node from the root
//! namespace: the API client over its `api.sock` (a Unix socket is reachable from any network
//! namespace) and the CLI with `--data-dir`.
//!
//! # Faults
//! - [`Net::cut`] / [`Net::restore`]: the root-side end of the host's veth goes down / up. The
//!   host keeps its address and its sockets; its packets go nowhere.
//! - [`Net::partition`] / [`Net::heal`]: a second bridge. The veths of one group move to it, so
//!   each group reaches only itself; healing moves them back. A link moved to another bridge
//!   stays up, so a partition composes with [`Net::cut`].
//! - [`Net::kill9`] / [`Net::restart`]: SIGKILL the node (`ip netns exec` execs, so the child is
//!   the node itself), and start it again on the same data directory and address.
//!
//! # Names and cleanup
//! Everything a `Net` creates is named after the test process's pid and a per-process counter:
//! namespaces `dpn-<pid>-<run>-h<i>`, root-namespace links `dn<pid>-<run>{b,v}<k>` (15 bytes at
//! most, the kernel's limit), data under `<tmp>/dpn-<pid>-<run>`. [`Drop`] removes them all
//! (after printing each node's log if the test failed). A run that crashed cannot clean up, so
//! every new `Net` first removes anything of those prefixes whose pid no longer exists,
//! killing the nodes still running in such namespaces.
//!
//! Only `ip` (iproute2) is used: no iptables or nft.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dp2ptcs_dht::mailbox_key;
use dp2ptcs_node::api::client::{Client, HistoryFilter};
use dp2ptcs_node::api::{Message, SendRequest, Status};
use dp2ptcs_types::NodeId;
use serde_json::Value;

use crate::common::{assert_no_panic, bin, scrub_env, stderr, FAST_KDF, PASS};

/// A safety net so a broken build fails instead of hanging; never a performance assertion.
pub(crate) const SAFETY: Duration = Duration::from_secs(150);
/// The UDP port every node listens on (each host has its own address).
pub(crate) const PORT: u16 = 7446;
/// Host names, used as each node's profile name and as its contact name in every other book.
const NAMES: [&str; 8] = [
    "Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel",
];
/// Prefix of our namespaces and data directories.
const NS_PREFIX: &str = "dpn-";
/// Prefix of our links in the root namespace.
const LINK_PREFIX: &str = "dn";
/// Lines of each node's log printed when a test fails.
const LOG_TAIL: usize = 60;

/// Distinguishes the `Net`s of one test process (tests run in parallel threads).
static RUNS: AtomicUsize = AtomicUsize::new(0);

/// `true` if this process can build namespaces; otherwise says so on stderr.
pub(crate) fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0");
    let netns = root
        && Command::new("ip")
            .args(["netns", "list"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !netns {
        eprintln!("skipped: needs root and ip netns");
    }
    netns
}

/// One host: a namespace, its veth, its data directory and, while it runs, its node.
#[derive(Debug)]
struct Host {
    name: &'static str,
    ns: String,
    /// The root-namespace end of the veth pair (the other end is `eth0` in `ns`).
    veth: String,
    ip: Ipv4Addr,
    /// `dir/home` is the data directory, `dir/node.log` the node's stderr.
    dir: PathBuf,
    node_id: String,
    /// How many times the node was started (for the log's markers).
    starts: usize,
    child: RefCell<Option<Child>>,
}

impl Host {
    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }
}

/// A network of hosts (see the module documentation).
#[derive(Debug)]
pub(crate) struct Net {
    tag: String,
    /// The main bridge and the one a partition moves a group to.
    bridges: [String; 2],
    root: PathBuf,
    hosts: Vec<Host>,
    /// The partitioned-off hosts (on `bridges[1]`).
    split: HashSet<usize>,
    runtime: tokio::runtime::Runtime,
}

impl Net {
    /// Builds `hosts` namespaces and identities (nodes not started), with `config` as every
    /// node's `config.toml`. `None`, after saying so, where namespaces cannot be made.
    pub(crate) fn new(hosts: usize, config: &str) -> Option<Self> {
        if !available() {
            return None;
        }
        assert!(
            (1..=NAMES.len()).contains(&hosts),
            "1 to {} hosts",
            NAMES.len()
        );
        sweep_stale();
        let pid = std::process::id();
        // Two digits at most, so that link names fit in 15 bytes.
        let run = RUNS.fetch_add(1, Ordering::Relaxed) % 100;
        let tag = format!("{pid}-{run}");
        let root = scratch_dir().join(format!("{NS_PREFIX}{tag}"));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let mut net = Self {
            bridges: [0, 1].map(|k| format!("{LINK_PREFIX}{tag}b{k}")),
            tag,
            root,
            hosts: Vec::new(),
            split: HashSet::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        // From here on `Drop` cleans up whatever was made, even if a step below fails.
        for bridge in &net.bridges {
            ip(&["link", "add", bridge, "type", "bridge"]);
            ip(&["link", "set", bridge, "up"]);
        }
        for i in 0..hosts {
            let host = net.add_host(i);
            net.hosts.push(host);
        }
        net.init_all(config);
        Some(net)
    }

    fn add_host(&self, i: usize) -> Host {
        let ns = format!("{NS_PREFIX}{}-h{i}", self.tag);
        let veth = format!("{LINK_PREFIX}{}v{i}", self.tag);
        let ip_addr = Ipv4Addr::new(10, 77, u8::try_from(i + 1).unwrap(), 1);
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "master", &self.bridges[0]]);
        ip(&["link", "set", &veth, "up"]);
        let cidr = format!("{ip_addr}/16");
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let dir = self.root.join(format!("h{i}"));
        fs::create_dir_all(&dir).unwrap();
        Host {
            name: NAMES[i],
            ns,
            veth,
            ip: ip_addr,
            dir,
            node_id: String::new(),
            starts: 0,
            child: RefCell::new(None),
        }
    }

    /// `init` on every host at once (cheap KDF), then writes `config` and reads the node ids.
    fn init_all(&mut self, config: &str) {
        let children: Vec<Child> = self
            .hosts
            .iter()
            .map(|h| {
                self.cli_cmd_for(h, &[&["init", "--name", h.name], &FAST_KDF[..]].concat())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "init failed: {}", stderr(&out));
        }
        for i in 0..self.hosts.len() {
            fs::write(self.hosts[i].home().join("config.toml"), config).unwrap();
            let id = self.cli_json(i, &["id", "--json"])["node_id"]
                .as_str()
                .unwrap()
                .to_owned();
            self.hosts[i].node_id = id;
        }
    }

    // ----- accessors -----

    /// The number of hosts.
    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Host `i`'s name: its profile name, and its contact name in [`Net::introduce`].
    pub(crate) fn name(&self, i: usize) -> &'static str {
        self.hosts[i].name
    }

    /// Host `i`'s node id (64 hex digits).
    pub(crate) fn node_id(&self, i: usize) -> &str {
        &self.hosts[i].node_id
    }

    /// Host `i`'s address.
    pub(crate) fn ip(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].ip
    }

    /// Where host `i`'s node listens.
    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.ip(i), PORT))
    }

    /// Host `i`'s data directory.
    pub(crate) fn data_dir(&self, i: usize) -> PathBuf {
        self.hosts[i].home()
    }

    /// Host `i`'s contact URI now (`id --json`): without addresses before its first run, with
    /// its listening address after.
    pub(crate) fn contact_uri(&self, i: usize) -> String {
        self.cli_json(i, &["id", "--json"])["contact_uri"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The API client of host `i`'s node.
    pub(crate) fn client(&self, i: usize) -> Client {
        Client::new(self.hosts[i].home().join("api.sock"))
    }

    /// Runs a future (an API call) to completion.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    // ----- the nodes -----

    /// Starts the nodes of `hosts` and waits until each one's API answers. The seed (host 0),
    /// if among them, starts first, so the others find it when they bootstrap.
    pub(crate) fn start(&mut self, hosts: &[usize]) {
        if hosts.contains(&0) && hosts.len() > 1 {
            self.start(&[0]);
        }
        let rest: Vec<usize> = hosts
            .iter()
            .copied()
            .filter(|&i| i != 0 || hosts.len() == 1)
            .collect();
        for &i in &rest {
            self.spawn(i);
        }
        for &i in &rest {
            self.wait_until(&format!("{} to start", self.name(i)), || {
                self.block_on(self.client(i).status()).is_ok()
            });
        }
    }

    /// Waits until each of `hosts` has at least one peer in its DHT routing table.
    pub(crate) fn wait_joined(&self, hosts: &[usize]) {
        self.wait_until("the nodes to join the DHT", || {
            hosts.iter().all(|&i| self.status(i).dht.peers >= 1)
        });
    }

    /// Waits until the number of DHT records each running node holds has not changed for a
    /// second: every node that joined has published its records (its peer record and its
    /// prekey bundle, which a contact needs to write to its mailbox while it is away).
    pub(crate) fn wait_published(&self) {
        self.wait_settled("the DHT records", Duration::from_secs(1), || {
            (0..self.len())
                .map(|i| self.running(i).then(|| self.status(i).dht.records))
                .collect::<Vec<_>>()
        });
    }

    /// Starts every node (the seed first) and waits until all have joined the DHT.
    pub(crate) fn start_all(&mut self) {
        let all: Vec<usize> = (0..self.len()).collect();
        self.start(&all);
        self.wait_joined(&all);
    }

    fn spawn(&mut self, i: usize) {
        let seed = self.addr(0).to_string();
        let host = &mut self.hosts[i];
        assert!(host.child.get_mut().is_none(), "{} already runs", host.name);
        host.starts += 1;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host.log())
            .unwrap();
        writeln!(log, "----- start #{} -----", host.starts).unwrap();
        let listen = SocketAddr::from((host.ip, PORT)).to_string();
        let mut cmd = scrub_env(Command::new("ip"));
        cmd.args(["netns", "exec", &host.ns])
            .arg(env!("CARGO_BIN_EXE_dp2ptcs"))
            .arg("--data-dir")
            .arg(host.home())
            .args(["run", "--listen", &listen]);
        if i != 0 {
            cmd.args(["--bootstrap", &seed]);
        }
        let child = cmd
            .env("DP2PTCS_PASSPHRASE", PASS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        *host.child.get_mut() = Some(child);
    }

    /// Whether host `i`'s node is running (started, not killed, not exited).
    pub(crate) fn running(&self, i: usize) -> bool {
        let mut child = self.hosts[i].child.borrow_mut();
        child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILLs host `i`'s node and reaps it.
    pub(crate) fn kill9(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        let mut child = host
            .child
            .get_mut()
            .take()
            .unwrap_or_else(|| panic!("{} is not running", host.name));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts host `i`'s node again on the same data directory and address (SIGKILLing it
    /// first if it runs), and waits until its API answers.
    pub(crate) fn restart(&mut self, i: usize) {
        if self.hosts[i].child.get_mut().is_some() {
            self.kill9(i);
        }
        self.start(&[i]);
    }

    // ----- faults -----

    /// Takes host `i` off the network: its veth goes down (the host keeps its address).
    pub(crate) fn cut(&self, i: usize) {
        ip(&["link", "set", &self.hosts[i].veth, "down"]);
    }

    /// Undoes [`Net::cut`].
    pub(crate) fn restore(&self, i: usize) {
        ip(&["link", "set", &self.hosts[i].veth, "up"]);
    }

    /// Splits the network in two: the hosts of `b` move to a bridge of their own, so they
    /// reach only each other; all others, `a` included, stay together. `a` and `b` must not
    /// overlap. A second call replaces the first.
    pub(crate) fn partition(&mut self, a: &[usize], b: &[usize]) {
        assert!(
            a.iter().all(|i| !b.contains(i)),
            "the groups overlap: {a:?} {b:?}"
        );
        for i in 0..self.len() {
            let on_b = b.contains(&i);
            if on_b != self.split.contains(&i) {
                let bridge = &self.bridges[usize::from(on_b)];
                ip(&["link", "set", &self.hosts[i].veth, "master", bridge]);
            }
        }
        self.split = b.iter().copied().collect();
    }

    /// Undoes [`Net::partition`]: every host back on the main bridge.
    pub(crate) fn heal(&mut self) {
        self.partition(&[], &[]);
    }

    // ----- the CLI, from the root namespace -----

    fn cli_cmd_for(&self, host: &Host, args: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.arg("--data-dir")
            .arg(host.home())
            .args(args)
            .env("DP2PTCS_PASSPHRASE", PASS);
        cmd
    }

    /// `dp2ptcs --data-dir <host i's> ARGS`, run to completion (no panic allowed).
    pub(crate) fn cli(&self, i: usize, args: &[&str]) -> Output {
        let out = self.cli_cmd_for(&self.hosts[i], args).output().unwrap();
        assert_no_panic(&out);
        out
    }

    /// [`Net::cli`] that must succeed.
    pub(crate) fn cli_ok(&self, i: usize, args: &[&str]) -> Output {
        let out = self.cli(i, args);
        assert!(
            out.status.success(),
            "{}: {args:?} failed: {}",
            self.name(i),
            stderr(&out)
        );
        out
    }

    /// [`Net::cli_ok`] whose output is JSON.
    pub(crate) fn cli_json(&self, i: usize, args: &[&str]) -> Value {
        serde_json::from_slice(&self.cli_ok(i, args).stdout).unwrap()
    }

    /// Host `a` adds host `b` (under `b`'s name) from `b`'s current contact URI.
    pub(crate) fn add_contact(&self, a: usize, b: usize) {
        let uri = self.contact_uri(b);
        self.cli_ok(a, &["contact", "add", &uri, "--name", self.name(b)]);
    }

    /// Hosts `a` and `b` add each other.
    pub(crate) fn introduce(&self, a: usize, b: usize) {
        self.add_contact(a, b);
        self.add_contact(b, a);
    }

    // ----- the API -----

    /// Host `i`'s node status.
    pub(crate) fn status(&self, i: usize) -> Status {
        self.block_on(self.client(i).status())
            .unwrap_or_else(|e| panic!("{}: status: {e}", self.name(i)))
    }

    /// Queues `text` from host `from` to host `to` (`POST /v1/messages` without waiting);
    /// returns the message id.
    pub(crate) fn send(&self, from: usize, to: usize, text: &str) -> String {
        self.send_with_ttl(from, to, text, None)
    }

    /// [`Net::send`] with a time to live in milliseconds (`None`: the node's default).
    pub(crate) fn send_with_ttl(
        &self,
        from: usize,
        to: usize,
        text: &str,
        ttl_ms: Option<u64>,
    ) -> String {
        let request = SendRequest {
            to: self.name(to).into(),
            text: text.into(),
            wait: false,
            timeout_ms: None,
            ttl_ms,
        };
        self.block_on(self.client(from).send(&request))
            .unwrap_or_else(|e| panic!("{} -> {}: send: {e}", self.name(from), self.name(to)))
            .id
    }

    /// Host `i`'s whole history in one `direction` (`incoming` or `outgoing`), optionally only
    /// with host `peer`, oldest first.
    pub(crate) fn history(&self, i: usize, direction: &str, peer: Option<usize>) -> Vec<Message> {
        const PAGE: u32 = 10_000;
        let mut all: Vec<Message> = Vec::new();
        loop {
            let filter = HistoryFilter {
                peer: peer.map(|p| self.name(p).to_owned()),
                direction: Some(direction.into()),
                after: all.last().map(|m| m.seq),
                limit: Some(PAGE),
                ..HistoryFilter::default()
            };
            let page = self
                .block_on(self.client(i).history(&filter))
                .unwrap_or_else(|e| panic!("{}: history: {e}", self.name(i)));
            let done = page.len() < PAGE as usize;
            all.extend(page);
            if done {
                return all;
            }
        }
    }

    /// How many of host `i`'s outgoing messages still wait for their receipt: queued, sent,
    /// or held in the recipient's mailbox (where a failed attempt may have put them).
    pub(crate) fn pending(&self, i: usize) -> u64 {
        let counts = self.status(i).messages;
        counts.queued + counts.sent + counts.held
    }

    /// The states of host `i`'s outgoing messages to host `peer`, oldest first.
    pub(crate) fn states(&self, i: usize, peer: usize) -> Vec<String> {
        self.history(i, "outgoing", Some(peer))
            .into_iter()
            .map(|m| m.state)
            .collect()
    }

    /// How many of host `i`'s outgoing messages to host `peer` are in `state`.
    pub(crate) fn count_state(&self, i: usize, peer: usize, state: &str) -> usize {
        self.states(i, peer).iter().filter(|s| *s == state).count()
    }

    /// The mailbox items each host's node holds for others and their size in bytes
    /// (`status().dht.mailbox_items`, `mailbox_bytes`); `None` for a host whose node does not
    /// run.
    pub(crate) fn mailboxes(&self) -> Vec<Option<(usize, usize)>> {
        (0..self.len())
            .map(|i| {
                self.running(i).then(|| {
                    let dht = self.status(i).dht;
                    (dht.mailbox_items, dht.mailbox_bytes)
                })
            })
            .collect()
    }

    /// The mailbox items each host's node holds for others; `None` for a host whose node does
    /// not run.
    pub(crate) fn held_counts(&self) -> Vec<Option<usize>> {
        self.mailboxes()
            .into_iter()
            .map(|m| m.map(|(items, _)| items))
            .collect()
    }

    /// Every host, by the XOR distance of its node id to host `i`'s mailbox key, closest
    /// first: the first [`dp2ptcs_dht::MAILBOX_REPLICAS`] of those reachable should hold
    /// `i`'s mailbox.
    pub(crate) fn mailbox_order(&self, i: usize) -> Vec<usize> {
        let id = |j: usize| NodeId::from_str(self.node_id(j)).unwrap();
        let key = mailbox_key(&id(i));
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&j| key.distance(&id(j)));
        order
    }

    /// The hosts in host `i`'s DHT routing table (`GET /v1/peers`), in its order.
    pub(crate) fn table(&self, i: usize) -> Vec<usize> {
        let peers = self
            .block_on(self.client(i).peers())
            .unwrap_or_else(|e| panic!("{}: peers: {e}", self.name(i)));
        peers
            .iter()
            .filter_map(|p| (0..self.len()).find(|&j| self.node_id(j) == p.node_id))
            .collect()
    }

    /// The running hosts that hold at least one mailbox item for others.
    pub(crate) fn holders(&self) -> Vec<usize> {
        self.held_counts()
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some_and(|n| n > 0))
            .map(|(i, _)| i)
            .collect()
    }

    /// Waits until host `i` has exactly `n` outgoing messages `held` (`status().messages.held`).
    pub(crate) fn wait_held(&self, i: usize, n: u64) {
        self.wait_until(&format!("{n} of {}'s messages held", self.name(i)), || {
            self.status(i).messages.held == n
        });
    }

    /// The bodies host `to` received from host `from`, in order.
    pub(crate) fn received(&self, to: usize, from: usize) -> Vec<String> {
        self.history(to, "incoming", Some(from))
            .into_iter()
            .map(|m| m.body)
            .collect()
    }

    // ----- waiting -----

    /// Polls `done` until it holds. Fails after [`SAFETY`], or as soon as a started node has
    /// exited by itself.
    pub(crate) fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            for host in &self.hosts {
                let mut child = host.child.borrow_mut();
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!(
                        "{} exited with {status} while waiting for {what}",
                        host.name
                    );
                }
            }
            if done() {
                return;
            }
            assert!(
                start.elapsed() < SAFETY,
                "timed out after {SAFETY:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `value` until it has not changed for `quiet`, and returns it. Fails after
    /// [`SAFETY`] (or as [`Net::wait_until`] does).
    pub(crate) fn wait_settled<T: PartialEq>(
        &self,
        what: &str,
        quiet: Duration,
        mut value: impl FnMut() -> T,
    ) -> T {
        let mut last = value();
        let mut since = Instant::now();
        self.wait_until(&format!("{what} to settle"), || {
            let now = value();
            if now != last {
                last = now;
                since = Instant::now();
            }
            since.elapsed() >= quiet
        });
        last
    }

    /// Prints what each running node knows, as far as its API answers within a few seconds:
    /// its DHT routing table (as host names), the mailbox items it holds for others and its
    /// message counts. Never panics (it runs while a failed test unwinds).
    pub(crate) fn print_state(&self) {
        const ASK: Duration = Duration::from_secs(5);
        for i in (0..self.len()).filter(|&i| self.running(i)) {
            let client = self.client(i);
            let (status, peers) = self.block_on(async {
                (
                    tokio::time::timeout(ASK, client.status()).await,
                    tokio::time::timeout(ASK, client.peers()).await,
                )
            });
            let table: Option<Vec<&str>> = peers.ok().and_then(Result::ok).map(|peers| {
                peers
                    .iter()
                    .map(|p| {
                        (0..self.len())
                            .find(|&j| self.node_id(j) == p.node_id)
                            .map_or("?", |j| self.name(j))
                    })
                    .collect()
            });
            match status.ok().and_then(Result::ok) {
                Some(s) => eprintln!(
                    "===== {}: table {table:?}, holds {} mailbox items ({} bytes), messages {:?}",
                    self.name(i),
                    s.dht.mailbox_items,
                    s.dht.mailbox_bytes,
                    s.messages
                ),
                None => eprintln!("===== {}: no status; table {table:?}", self.name(i)),
            }
        }
    }

    /// Prints the last lines of every node's log to stderr.
    pub(crate) fn print_logs(&self) {
        for host in &self.hosts {
            let log = fs::read_to_string(host.log()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "===== {} ({}, {}): last {} of {} log lines =====",
                host.name,
                host.ip,
                host.node_id,
                tail.len(),
                lines.len()
            );
            for line in tail {
                eprintln!("{}: {line}", host.name);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_state();
        }
        for host in &mut self.hosts {
            if let Some(mut child) = host.child.get_mut().take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.print_logs();
        }
        for host in &self.hosts {
            // Deleting one end of a veth pair deletes both.
            ip_quiet(&["link", "del", &host.veth]);
            ip_quiet(&["netns", "del", &host.ns]);
        }
        for bridge in &self.bridges {
            ip_quiet(&["link", "del", bridge]);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Asserts that `received` holds exactly the `expected` bodies, each once, in order.
pub(crate) fn assert_exactly_once_in_order(received: &[Message], expected: &[String]) {
    let ids: HashSet<&str> = received.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "a message was recorded twice");
    let bodies: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, expected, "messages lost, altered or out of order");
}

/// Where data directories go: tmpfs when there is one (the store syncs every write).
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// Runs `ip ARGS`; fails with its stderr if it does.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        stderr(&out)
    );
}

/// Runs `ip ARGS`, ignoring failure (cleanup of what may already be gone); returns stdout.
fn ip_quiet(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The pid in a name `<prefix><pid>-<run>...` that we made, if it is one.
fn creator_pid(name: &str, prefix: &str) -> Option<u32> {
    let (pid, run) = name.strip_prefix(prefix)?.split_once('-')?;
    if !run.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces, links and data directories left by test processes that are gone,
/// killing any node still running in such a namespace.
fn sweep_stale() {
    let stale = |name: &str, prefix: &str| creator_pid(name, prefix).is_some_and(|p| !pid_alive(p));
    for line in ip_quiet(&["netns", "list"]).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if !stale(ns, NS_PREFIX) {
            continue;
        }
        for pid in ip_quiet(&["netns", "pids", ns]).split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
        ip_quiet(&["netns", "del", ns]);
    }
    // `ip -o link` lines read "7: NAME@PEER: <FLAGS> ..." or "7: NAME: <FLAGS> ...".
    for line in ip_quiet(&["-o", "link", "show"]).lines() {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        if stale(name, LINK_PREFIX) {
            ip_quiet(&["link", "del", name]);
        }
    }
    if let Ok(entries) = fs::read_dir(scratch_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale(&name, NS_PREFIX) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}
