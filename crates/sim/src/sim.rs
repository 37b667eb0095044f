//! The event loop and the scenario.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dp2ptcs_crypto::Identity;
use dp2ptcs_dht::{
    Contact, Dht, DhtConfig, Event, LookupId, LookupOutcome, PeerRecord, Record, RecordKey,
    RecordPayload, Request, RequestId, Response, Transmit, K,
};
use dp2ptcs_types::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::net::NetModel;
use crate::stats::{mean, percentile};

mod mailbox;

pub use mailbox::{MailboxReport, MailboxScenario};

/// How adversarial nodes answer lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdversaryMode {
    /// Self-serving: the k adversarial nodes closest to the target (real nodes that lie too).
    Collude,
    /// Wrong: k made-up ids closer to the target than anyone, at addresses nobody answers.
    Fabricate,
}

/// A scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Nodes at the start.
    pub nodes: usize,
    /// Seed of the one random generator.
    pub seed: u64,
    /// Fraction of the starting nodes replaced (leave without notice, fresh ones join) during the
    /// measured period.
    pub churn: f64,
    /// Fraction of the starting nodes that are adversarial.
    pub adversarial: f64,
    /// How they answer.
    pub adversary: AdversaryMode,
    /// FIND_NODE lookups measured, spread over the measured period.
    pub lookups: usize,
    /// Records published before the measured period and fetched after it.
    pub records: usize,
    /// Network model.
    pub net: NetModel,
    /// DHT configuration of every honest node.
    pub dht: DhtConfig,
    /// Milliseconds between two joins while the network is built.
    pub join_spacing_ms: u64,
    /// Length of the measured period, milliseconds.
    pub duration_ms: u64,
    /// Ids the /24 attacker holds when it tries to fill a victim's routing table (0: skip).
    pub attacker_ids: usize,
    /// Run the store-and-forward scenario instead of the lookup one (see [`MailboxScenario`]).
    pub mailbox: Option<MailboxScenario>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 1000,
            seed: 1,
            churn: 0.0,
            adversarial: 0.0,
            adversary: AdversaryMode::Collude,
            lookups: 1000,
            records: 200,
            net: NetModel {
                median_latency_ms: 40.0,
                latency_sigma: 0.5,
                loss: 0.01,
            },
            dht: DhtConfig::default(),
            join_spacing_ms: 20,
            duration_ms: 2 * 60 * 60 * 1000,
            attacker_ids: 1000,
            mailbox: None,
        }
    }
}

/// What a run measured. Its `Display` is the simulator's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario.
    pub config: SimConfig,
    /// Measured FIND_NODE lookups that ended (the source did not leave meanwhile).
    pub lookups_done: usize,
    /// Of those, how many reached their target (the target itself answered).
    pub lookups_found: usize,
    /// Rounds of each measured lookup.
    pub rounds: Vec<u64>,
    /// Lookup requests of each measured lookup.
    pub messages: Vec<u64>,
    /// Simulated time from start to end of each measured lookup, milliseconds.
    pub latency_ms: Vec<u64>,
    /// Records fetched at the end.
    pub records_checked: usize,
    /// Of those, how many were found.
    pub records_found: usize,
    /// Nodes that left / joined during the measured period.
    pub left: usize,
    /// Nodes that joined during the measured period.
    pub joined: usize,
    /// Requests sent in the whole run (all purposes), and how many were lost.
    pub requests_total: u64,
    /// Messages (requests or responses) lost.
    pub lost_total: u64,
    /// Entries the /24 attacker got into the victims' tables, per victim.
    pub attacker_entries: Vec<usize>,
    /// The most attacker entries in any one bucket of any victim.
    pub attacker_max_per_bucket: usize,
    /// Mean routing-table size of the honest nodes alive at the end.
    pub mean_table_len: f64,
    /// What the store-and-forward scenario measured, when it ran.
    pub mailbox: Option<MailboxReport>,
}

impl Report {
    /// Fraction of measured lookups that found their target.
    pub fn success_rate(&self) -> f64 {
        ratio(self.lookups_found, self.lookups_done)
    }

    /// Fraction of records found at the end.
    pub fn record_rate(&self) -> f64 {
        ratio(self.records_found, self.records_checked)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        if let Some(m) = &self.mailbox {
            return m.write(self, f);
        }
        writeln!(
            f,
            "scenario: nodes={} seed={} churn={} adversarial={} ({:?}) loss={} paths={} alpha={} lookups={} records={} duration={}s",
            c.nodes,
            c.seed,
            c.churn,
            c.adversarial,
            c.adversary,
            c.net.loss,
            c.dht.disjoint_paths,
            c.dht.alpha,
            c.lookups,
            c.records,
            c.duration_ms / 1000
        )?;
        writeln!(
            f,
            "network: latency median={}ms sigma={}; {} left, {} joined during the run; mean table size {:.1}",
            c.net.median_latency_ms, c.net.latency_sigma, self.left, self.joined, self.mean_table_len
        )?;
        writeln!(
            f,
            "lookups: {}/{} found their target ({:.2}%)",
            self.lookups_found,
            self.lookups_done,
            100.0 * self.success_rate()
        )?;
        writeln!(
            f,
            "rounds: median {} p90 {} max {}",
            percentile(&self.rounds, 50.0),
            percentile(&self.rounds, 90.0),
            percentile(&self.rounds, 100.0)
        )?;
        writeln!(
            f,
            "messages per lookup: mean {:.1} median {} p90 {}",
            mean(&self.messages),
            percentile(&self.messages, 50.0),
            percentile(&self.messages, 90.0)
        )?;
        writeln!(
            f,
            "lookup latency: p50 {}ms p90 {}ms p99 {}ms",
            percentile(&self.latency_ms, 50.0),
            percentile(&self.latency_ms, 90.0),
            percentile(&self.latency_ms, 99.0)
        )?;
        writeln!(
            f,
            "records: {}/{} retrievable after the run ({:.2}%)",
            self.records_found,
            self.records_checked,
            100.0 * self.record_rate()
        )?;
        writeln!(
            f,
            "traffic: {} requests in total, {} messages lost",
            self.requests_total, self.lost_total
        )?;
        if !self.attacker_entries.is_empty() {
            writeln!(
                f,
                "/24 attacker with {} ids: entries in each victim's table {:?}, at most {} in one bucket",
                c.attacker_ids, self.attacker_entries, self.attacker_max_per_bucket
            )?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Node {
    contact: Contact,
    identity: Identity,
    dht: Option<Dht>,
    adversarial: bool,
    /// The time of the timer event queued for this node, if any.
    timer_at: u64,
    /// Its side of a partition (store-and-forward scenario only).
    side: u8,
}

#[derive(Debug)]
enum Ev {
    Join(u32),
    Leave,
    StartLookup,
    Timer(u32),
    Request {
        from: u32,
        to: u32,
        t: Transmit,
    },
    Response {
        to: u32,
        from: NodeId,
        id: RequestId,
        response: Response,
    },
    Mailbox(mailbox::MbEv),
}

#[derive(Debug, Clone, Copy)]
enum Measured {
    FindNode { started_ms: u64 },
    GetRecord,
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Event payloads by slot; the heap orders (time, sequence, slot).
    payloads: Vec<Option<Ev>>,
    free_slots: Vec<usize>,
    nodes: Vec<Node>,
    by_id: HashMap<NodeId, u32>,
    /// Honest nodes currently alive, for picking sources and targets.
    honest_alive: Vec<u32>,
    adversaries: Vec<u32>,
    measured: BTreeMap<(u32, LookupId), Measured>,
    report: Report,
    /// Messages between the two sides are dropped (store-and-forward scenario).
    partitioned: bool,
    mb: Option<mailbox::State>,
}

/// Runs a scenario to the end.
pub fn run(cfg: SimConfig) -> Report {
    let report = Report {
        config: cfg.clone(),
        lookups_done: 0,
        lookups_found: 0,
        rounds: Vec::new(),
        messages: Vec::new(),
        latency_ms: Vec::new(),
        records_checked: 0,
        records_found: 0,
        left: 0,
        joined: 0,
        requests_total: 0,
        lost_total: 0,
        attacker_entries: Vec::new(),
        attacker_max_per_bucket: 0,
        mean_table_len: 0.0,
        mailbox: None,
    };
    let mut sim = Sim {
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        cfg,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        payloads: Vec::new(),
        free_slots: Vec::new(),
        nodes: Vec::new(),
        by_id: HashMap::new(),
        honest_alive: Vec::new(),
        adversaries: Vec::new(),
        measured: BTreeMap::new(),
        report,
        partitioned: false,
        mb: None,
    };
    if sim.cfg.mailbox.is_some() {
        sim.mailbox_scenario();
    } else {
        sim.scenario();
    }
    sim.report
}

impl Sim {
    fn scenario(&mut self) {
        let n = self.cfg.nodes;
        let n_adv = (self.cfg.adversarial * n as f64).round() as usize;
        // 1. Build the network: nodes join one after the other, each through a random node that
        //    already joined.
        // Adversaries are spread over the join order (never the first node), so that they join
        // through honest nodes and get into honest routing tables like anyone else.
        let mut adversarial = vec![false; n];
        let mut marked = 0;
        while marked < n_adv.min(n.saturating_sub(1)) {
            let i = self.rng.gen_range(1..n);
            if !adversarial[i] {
                adversarial[i] = true;
                marked += 1;
            }
        }
        for (i, adv) in adversarial.into_iter().enumerate() {
            let slot = self.new_node(adv);
            self.schedule(i as u64 * self.cfg.join_spacing_ms, Ev::Join(slot));
        }
        let built = n as u64 * self.cfg.join_spacing_ms + 60_000;
        self.run_until(built);
        // 2. Publish records from random honest nodes.
        let mut published: Vec<RecordKey> = Vec::new();
        for _ in 0..self.cfg.records {
            let Some(slot) = self.random_honest() else {
                break;
            };
            let node = &self.nodes[slot as usize];
            let payload = RecordPayload::Peer(PeerRecord {
                addresses: vec![node.contact.addr],
                mix_key: None,
            });
            let expires = self.now + 12 * 60 * 60 * 1000;
            let Ok(record) = Record::sign(&node.identity, 1, expires, payload) else {
                continue;
            };
            let key = record.key();
            if published.contains(&key) {
                continue;
            }
            let now = self.now;
            if let Some(dht) = self.nodes[slot as usize].dht.as_mut() {
                if dht.put_record(record, now).is_ok() {
                    published.push(key);
                }
            }
            self.flush(slot);
        }
        self.run_until(self.now + 60_000);
        // 3. The measured period: lookups, churn.
        let start = self.now;
        let d = self.cfg.duration_ms.max(1);
        for _ in 0..self.cfg.lookups {
            let t = start + self.rng.gen_range(0..d);
            self.schedule(t, Ev::StartLookup);
        }
        let replaced = (self.cfg.churn * n as f64).round() as usize;
        for _ in 0..replaced {
            let t = start + self.rng.gen_range(0..d);
            self.schedule(t, Ev::Leave);
            let t = start + self.rng.gen_range(0..d);
            let slot = self.new_node(false);
            self.schedule(t, Ev::Join(slot));
        }
        self.run_until(start + d);
        // 4. Fetch every record from a random honest node.
        for key in published {
            let Some(slot) = self.random_honest() else {
                break;
            };
            let now = self.now;
            if let Some(dht) = self.nodes[slot as usize].dht.as_mut() {
                if let Ok(lid) = dht.get_record(key, now) {
                    self.measured.insert((slot, lid), Measured::GetRecord);
                    self.report.records_checked += 1;
                }
            }
            self.flush(slot);
        }
        self.run_until(self.now + 120_000);
        // 5. The /24 attacker against a few victims.
        if self.cfg.attacker_ids > 0 {
            for _ in 0..5 {
                if let Some(victim) = self.random_honest() {
                    let entries = self.attack(victim);
                    self.report.attacker_entries.push(entries);
                }
            }
        }
        let sizes: Vec<u64> = self
            .honest_alive
            .iter()
            .filter_map(|&s| self.nodes[s as usize].dht.as_ref())
            .map(|d| d.table().len() as u64)
            .collect();
        self.report.mean_table_len = mean(&sizes);
    }

    /// 1000 ids from one /24 contact `victim`; returns how many end up in its table.
    fn attack(&mut self, victim: u32) -> usize {
        let mut attackers = Vec::new();
        for i in 0..self.cfg.attacker_ids {
            let mut id = [0u8; 32];
            self.rng.fill(&mut id[..]);
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i % 256) as u8)),
                1024 + (i % 60_000) as u16,
            );
            attackers.push(Contact::new(NodeId::from_bytes(id), addr));
        }
        let now = self.now;
        for a in &attackers {
            if let Some(dht) = self.nodes[victim as usize].dht.as_mut() {
                let _ = dht.handle_request(*a, Request::FindNode { target: a.id }, now);
            }
            self.flush(victim);
        }
        // Let the eviction pings to the honest entries run their course.
        self.run_until(self.now + 30_000);
        let Some(dht) = self.nodes[victim as usize].dht.as_ref() else {
            return 0;
        };
        let ids: std::collections::HashSet<NodeId> = attackers.iter().map(|a| a.id).collect();
        let mut per_bucket: BTreeMap<usize, usize> = BTreeMap::new();
        for c in dht.table().contacts().filter(|c| ids.contains(&c.id)) {
            if let Some(b) = dht.table().bucket_index(&c.id) {
                *per_bucket.entry(b).or_default() += 1;
            }
        }
        let max = per_bucket.values().copied().max().unwrap_or(0);
        self.report.attacker_max_per_bucket = self.report.attacker_max_per_bucket.max(max);
        per_bucket.values().sum()
    }

    fn new_node(&mut self, adversarial: bool) -> u32 {
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let identity = Identity::from_seed(&seed);
        // A random public IPv4 address: a random /24 each, as for independent hosts.
        let ip = Ipv4Addr::new(
            self.rng.gen_range(1..224),
            self.rng.gen(),
            self.rng.gen(),
            self.rng.gen_range(1..255),
        );
        let contact = Contact::new(identity.node_id(), SocketAddr::new(IpAddr::V4(ip), 4433));
        let slot = self.nodes.len() as u32;
        self.nodes.push(Node {
            contact,
            identity,
            dht: None,
            adversarial,
            timer_at: u64::MAX,
            side: 0,
        });
        slot
    }

    fn random_honest_on(&mut self, side: u8) -> Option<u32> {
        let on: Vec<u32> = self
            .honest_alive
            .iter()
            .copied()
            .filter(|&s| self.nodes[s as usize].side == side)
            .collect();
        if on.is_empty() {
            return None;
        }
        Some(on[self.rng.gen_range(0..on.len())])
    }

    fn random_honest(&mut self) -> Option<u32> {
        if self.honest_alive.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.honest_alive.len());
        Some(self.honest_alive[i])
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.payloads[s] = Some(ev);
                s
            }
            None => {
                self.payloads.push(Some(ev));
                self.payloads.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    fn run_until(&mut self, end: u64) {
        while let Some(&Reverse((at, _, _))) = self.queue.peek() {
            if at > end {
                break;
            }
            let Some(Reverse((at, _, slot))) = self.queue.pop() else {
                break;
            };
            let Some(ev) = self.payloads[slot].take() else {
                continue;
            };
            self.free_slots.push(slot);
            self.now = at;
            self.handle(ev);
        }
        self.now = self.now.max(end);
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Join(slot) => self.join(slot),
            Ev::Leave => {
                if let Some(slot) = self.random_honest() {
                    self.leave(slot);
                }
            }
            Ev::StartLookup => {
                let (Some(src), Some(dst)) = (self.random_honest(), self.random_honest()) else {
                    return;
                };
                if src == dst {
                    return;
                }
                let target = self.nodes[dst as usize].contact.id;
                if let Some(dht) = self.nodes[src as usize].dht.as_mut() {
                    if let Ok(lid) = dht.find_node(target, now) {
                        self.measured
                            .insert((src, lid), Measured::FindNode { started_ms: now });
                    }
                }
                self.flush(src);
            }
            Ev::Timer(slot) => {
                let node = &mut self.nodes[slot as usize];
                if node.timer_at != now {
                    return;
                }
                node.timer_at = u64::MAX;
                if let Some(dht) = node.dht.as_mut() {
                    dht.handle_timeout(now, &mut self.rng);
                }
                self.flush(slot);
            }
            Ev::Request { from, to, t } => self.deliver_request(from, to, t),
            Ev::Mailbox(ev) => self.mailbox_handle(ev),
            Ev::Response {
                to,
                from,
                id,
                response,
            } => {
                if let Some(dht) = self.nodes[to as usize].dht.as_mut() {
                    dht.handle_response(&from, id, response, now);
                    self.flush(to);
                }
            }
        }
    }

    fn join(&mut self, slot: u32) {
        let now = self.now;
        // A real node joins through a contact it knows: an honest one (on its side of a
        // partition).
        let bootstrap = if self.partitioned {
            self.random_honest_on(self.nodes[slot as usize].side)
        } else {
            self.random_honest()
        }
        .map(|s| self.nodes[s as usize].contact);
        let node = &mut self.nodes[slot as usize];
        let mut dht = Dht::new(node.contact.id, self.cfg.dht, now);
        if let Some(b) = bootstrap {
            dht.add_peer(b, now);
            let _ = dht.bootstrap(now);
        }
        node.dht = Some(dht);
        self.by_id.insert(node.contact.id, slot);
        if node.adversarial {
            self.adversaries.push(slot);
        } else {
            self.honest_alive.push(slot);
            if self.in_measured_period() {
                self.report.joined += 1;
            }
        }
        self.flush(slot);
    }

    fn in_measured_period(&self) -> bool {
        self.now > self.cfg.nodes as u64 * self.cfg.join_spacing_ms + 60_000
    }

    fn leave(&mut self, slot: u32) {
        let node = &mut self.nodes[slot as usize];
        node.dht = None;
        self.by_id.remove(&node.contact.id);
        self.honest_alive.retain(|&s| s != slot);
        self.report.left += 1;
        // Its measured lookups will never end: forget them.
        self.measured.retain(|(s, _), _| *s != slot);
    }

    /// Sends what node `slot` queued, collects its events and re-arms its timer.
    fn flush(&mut self, slot: u32) {
        let now = self.now;
        let mut out = Vec::new();
        let mut events = Vec::new();
        let timeout = {
            let Some(dht) = self.nodes[slot as usize].dht.as_mut() else {
                return;
            };
            while let Some(t) = dht.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = dht.poll_event() {
                events.push(e);
            }
            dht.poll_timeout()
        };
        for t in out {
            self.report.requests_total += 1;
            let Some(&to) = self.by_id.get(&t.to.id) else {
                continue; // gone: the request times out
            };
            if self.cut(slot, to) {
                self.count_cut();
                continue; // the other side of the partition: the request times out
            }
            if self.cfg.net.lost(&mut self.rng) {
                self.report.lost_total += 1;
                continue;
            }
            let at = now + self.cfg.net.latency_ms(&mut self.rng);
            self.schedule(at, Ev::Request { from: slot, to, t });
        }
        let mut again = false;
        for event in events {
            match event {
                Event::LookupFinished(outcome) => self.lookup_finished(slot, outcome),
                other => again |= self.mailbox_event(slot, other),
            }
        }
        let node = &mut self.nodes[slot as usize];
        if timeout < node.timer_at {
            node.timer_at = timeout;
            self.schedule(timeout, Ev::Timer(slot));
        }
        if again {
            self.flush(slot);
        }
    }

    /// Whether a partition separates `a` and `b`.
    fn cut(&self, a: u32, b: u32) -> bool {
        self.partitioned && self.nodes[a as usize].side != self.nodes[b as usize].side
    }

    fn lookup_finished(&mut self, slot: u32, o: LookupOutcome) {
        let Some(m) = self.measured.remove(&(slot, o.id)) else {
            return;
        };
        match m {
            Measured::FindNode { started_ms } => {
                self.report.lookups_done += 1;
                self.report.lookups_found += usize::from(o.target_answered);
                self.report.rounds.push(u64::from(o.rounds));
                self.report.messages.push(u64::from(o.requests));
                self.report.latency_ms.push(self.now - started_ms);
            }
            Measured::GetRecord => {
                self.report.records_found += usize::from(o.record.is_some());
            }
        }
    }

    fn deliver_request(&mut self, from: u32, to: u32, t: Transmit) {
        let now = self.now;
        let from_contact = self.nodes[from as usize].contact;
        let target_alive = self.nodes[to as usize].dht.is_some();
        if !target_alive || self.nodes[from as usize].dht.is_none() {
            return;
        }
        if self.cut(from, to) {
            self.count_cut();
            return;
        }
        let response = if self.nodes[to as usize].adversarial {
            self.adversarial_answer(&t.request)
        } else {
            let Some(dht) = self.nodes[to as usize].dht.as_mut() else {
                return;
            };
            let r = dht.handle_request(from_contact, t.request, now);
            self.flush(to);
            r
        };
        if self.cut(from, to) {
            return;
        }
        if self.cfg.net.lost(&mut self.rng) {
            self.report.lost_total += 1;
            return;
        }
        let at = now + self.cfg.net.latency_ms(&mut self.rng);
        let from_id = self.nodes[to as usize].contact.id;
        self.schedule(
            at,
            Ev::Response {
                to: from,
                from: from_id,
                id: t.id,
                response,
            },
        );
    }

    /// A liar: never a record, claims to store what it is given and drops it, and answers
    /// lookups as its [`AdversaryMode`] says.
    fn adversarial_answer(&mut self, request: &Request) -> Response {
        let target = match request {
            Request::Ping => return Response::Pong,
            Request::Store { .. } => return Response::Stored { accepted: true },
            Request::MailboxPut { .. } => {
                return Response::MailboxStored {
                    accepted: true,
                    reason: 0,
                }
            }
            Request::MailboxFetch { .. } => {
                return Response::MailboxItems {
                    items: Vec::new(),
                    more: false,
                }
            }
            Request::MailboxDelete { .. } => return Response::MailboxDeleted { removed: 0 },
            Request::FindNode { target } => *target,
            Request::FindValue { key } => key.owner,
        };
        if self.cfg.adversary == AdversaryMode::Fabricate {
            let closer = (0..K)
                .map(|_| {
                    // The target with its last 8 bytes made up: closer than any real node.
                    let mut id = *target.as_bytes();
                    self.rng.fill(&mut id[24..]);
                    let addr = SocketAddr::new(
                        IpAddr::V4(Ipv4Addr::new(198, 18, self.rng.gen(), self.rng.gen())),
                        4433,
                    );
                    Contact::new(NodeId::from_bytes(id), addr)
                })
                .collect();
            return Response::Nodes { closer };
        }
        let mut liars: Vec<Contact> = self
            .adversaries
            .iter()
            .map(|&s| self.nodes[s as usize].contact)
            .collect();
        let count = K.min(liars.len());
        if count > 0 {
            liars.select_nth_unstable_by_key(count - 1, |c| c.id.distance(&target));
            liars.truncate(count);
            liars.sort_by_key(|c| c.id.distance(&target));
        }
        Response::Nodes { closer: liars }
    }
}
