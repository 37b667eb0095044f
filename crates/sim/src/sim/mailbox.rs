//! The store-and-forward scenario: senders deposit messages in the mailboxes of recipients they
//! cannot reach (offline, or on the other side of a partition), the partition heals and the
//! recipients come back, and they fetch their mailboxes periodically; the real `Dht` mailbox code
//! (deposit, holders, hand-off, replication, fetch, delete) runs on every node.
//!
//! Timeline, from the start `t0` of the measured period (after the network is built):
//!
//! 1. At `t0`, with a partition, every node is put on side 0 or 1 (one half each, at random);
//!    until `t0 + partition_ms` every message between the sides is dropped, and nodes that join
//!    meanwhile join through a node of their own side. Without a partition every recipient is an
//!    offline one.
//! 2. Recipients (distinct honest nodes, protected from churn) are offline with probability
//!    `offline`: they leave at `t0` and come back (same id, fresh state) at a uniform time in
//!    `[0.6, 1.4] × offline_ms` after `t0`, then fetch at once (5 s after joining) and every
//!    `fetch_interval_ms`. The others stay online and fetch every `fetch_interval_ms` from the
//!    start.
//! 3. `messages` deposits at uniform times in the first half of the partition (or of the shortest
//!    absence): a recipient at random, and a sender that cannot reach it: any online node for an
//!    offline recipient, an online node of the other side for an online one.
//! 4. Churn: `churn × nodes` nodes (never recipients) leave without notice at uniform times
//!    until the end of the partition plus half the settling time, and as many fresh nodes join.
//! 5. The run ends `settle_ms` after the last recipient is back and the partition healed.
//!
//! A message is *eligible* if its TTL outlives the partition and its recipient's absence (it
//! expires after both are over); the delivery ratio counts eligible messages that reached their
//! recipient at least once. A recipient deletes what it fetched (signed delete request), as a node
//! does.

use std::collections::HashMap;
use std::fmt;

use dp2ptcs_dht::{Event, MailboxDelete, MailboxItem, MAX_MAILBOX_DELETE_IDS};
use dp2ptcs_types::MessageId;
use rand::Rng;

use super::{Ev, Report, Sim};
use crate::stats::{mean, percentile};

/// The parameters of the store-and-forward scenario (`--mailbox`).
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxScenario {
    /// Messages deposited.
    pub messages: usize,
    /// Recipients (0: a quarter of the messages, at most a quarter of the nodes).
    pub recipients: usize,
    /// How long the network is split in two, milliseconds (0: no partition).
    pub partition_ms: u64,
    /// Fraction of the recipients that are offline (the others are cut off by the partition);
    /// without a partition all are.
    pub offline: f64,
    /// Mean absence of an offline recipient, milliseconds.
    pub offline_ms: u64,
    /// Lifetime of each item, milliseconds.
    pub ttl_ms: u64,
    /// How often an online recipient fetches its mailbox, milliseconds.
    pub fetch_interval_ms: u64,
    /// Sealed payload per message, bytes.
    pub payload_bytes: usize,
    /// How long the run goes on after the partition healed and the last recipient came back.
    pub settle_ms: u64,
}

impl Default for MailboxScenario {
    fn default() -> Self {
        Self {
            messages: 1000,
            recipients: 0,
            partition_ms: 30 * 60 * 1000,
            offline: 0.5,
            offline_ms: 30 * 60 * 1000,
            ttl_ms: dp2ptcs_dht::DEFAULT_MAILBOX_TTL_MS,
            fetch_interval_ms: 5 * 60 * 1000,
            payload_bytes: 1024,
            settle_ms: 60 * 60 * 1000,
        }
    }
}

/// What the store-and-forward scenario measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MailboxReport {
    /// Recipients offline at the start / cut off by the partition.
    pub offline_recipients: usize,
    /// Recipients online on the other side of the partition.
    pub partitioned_recipients: usize,
    /// Messages whose deposit started (a sender was found).
    pub deposited: usize,
    /// Of those, how many at least one holder accepted.
    pub held: usize,
    /// Deposits made again because no holder had accepted the message (as the outbox does).
    pub deposit_retries: u64,
    /// Messages whose sender left (churn) before any holder accepted them: lost with the sender,
    /// not counted as eligible.
    pub lost_with_sender: usize,
    /// Holders that accepted each deposit.
    pub accepted: Vec<u64>,
    /// Messages whose TTL outlives the partition and their recipient's absence.
    pub eligible: usize,
    /// Eligible messages delivered.
    pub delivered: usize,
    /// Eligible messages not delivered that no holder had accepted.
    pub undelivered_never_held: usize,
    /// Messages delivered that were not eligible (expired after all, or delivered before).
    pub delivered_other: usize,
    /// Deposit to first delivery, milliseconds (eligible messages delivered).
    pub delay_ms: Vec<u64>,
    /// From the moment the recipient could be reached (back, partition healed) to delivery.
    pub after_reachable_ms: Vec<u64>,
    /// Items fetched again after their first delivery (each deleted again).
    pub duplicates: u64,
    /// Mailbox bytes held per live node when the partition heals (or the first recipient comes
    /// back), before any delivery.
    pub held_peak: Vec<u64>,
    /// Mailbox bytes held per live node at the end.
    pub held_end: Vec<u64>,
    /// Items held in the whole network at the peak / at the end.
    pub items_peak: u64,
    /// Items held in the whole network at the end.
    pub items_end: u64,
    /// Nodes that left / joined through churn.
    pub left: usize,
    /// Nodes that joined through churn.
    pub joined: usize,
    /// Messages dropped by the partition.
    pub cut_total: u64,
}

impl MailboxReport {
    /// Eligible messages delivered, as a fraction.
    pub fn delivery_ratio(&self) -> f64 {
        if self.eligible == 0 {
            0.0
        } else {
            self.delivered as f64 / self.eligible as f64
        }
    }

    pub(super) fn write(&self, report: &Report, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &report.config;
        let Some(m) = &c.mailbox else {
            return Ok(());
        };
        writeln!(
            f,
            "scenario: store-and-forward, nodes={} seed={} churn={} loss={} messages={} recipients={} ({} offline, {} across the partition) partition={}s offline~{}s ttl={}s fetch every {}s payload={}B settle={}s",
            c.nodes,
            c.seed,
            c.churn,
            c.net.loss,
            m.messages,
            self.offline_recipients + self.partitioned_recipients,
            self.offline_recipients,
            self.partitioned_recipients,
            m.partition_ms / 1000,
            m.offline_ms / 1000,
            m.ttl_ms / 1000,
            m.fetch_interval_ms / 1000,
            m.payload_bytes,
            m.settle_ms / 1000
        )?;
        writeln!(
            f,
            "network: latency median={}ms sigma={}; {} left, {} joined during the run; replicas={} replicate every {}s",
            c.net.median_latency_ms,
            c.net.latency_sigma,
            self.left,
            self.joined,
            c.dht.mailbox_replicas,
            c.dht.mailbox_replicate_interval_ms / 1000
        )?;
        writeln!(
            f,
            "deposits: {} started, {} held by at least one node, {} retried, {} lost with their sender (left before any holder accepted); holders accepting: mean {:.2} min {}",
            self.deposited,
            self.held,
            self.deposit_retries,
            self.lost_with_sender,
            mean(&self.accepted),
            self.accepted.iter().min().copied().unwrap_or(0)
        )?;
        writeln!(
            f,
            "delivery: {}/{} eligible messages delivered ({:.2}%); {} undelivered were never held; {} other deliveries; {} duplicate fetches",
            self.delivered,
            self.eligible,
            100.0 * self.delivery_ratio(),
            self.undelivered_never_held,
            self.delivered_other,
            self.duplicates
        )?;
        writeln!(
            f,
            "delay deposit->delivery: p50 {}s p90 {}s p99 {}s max {}s; reachable->delivery: p50 {}s p90 {}s p99 {}s max {}s",
            percentile(&self.delay_ms, 50.0) / 1000,
            percentile(&self.delay_ms, 90.0) / 1000,
            percentile(&self.delay_ms, 99.0) / 1000,
            percentile(&self.delay_ms, 100.0) / 1000,
            percentile(&self.after_reachable_ms, 50.0) / 1000,
            percentile(&self.after_reachable_ms, 90.0) / 1000,
            percentile(&self.after_reachable_ms, 99.0) / 1000,
            percentile(&self.after_reachable_ms, 100.0) / 1000
        )?;
        for (name, v, items) in [
            ("at the peak", &self.held_peak, self.items_peak),
            ("at the end", &self.held_end, self.items_end),
        ] {
            writeln!(
                f,
                "bytes held per node {name}: mean {:.0} p99 {} max {}; {} items in the network",
                mean(v),
                percentile(v, 99.0),
                percentile(v, 100.0),
                items
            )?;
        }
        writeln!(
            f,
            "traffic: {} requests in total, {} messages lost, {} cut by the partition",
            report.requests_total, report.lost_total, self.cut_total
        )
    }
}

/// Deposits a node makes of one message before it gives up (its outbox keeps it).
const MAX_DEPOSIT_ATTEMPTS: u32 = 10;
/// Wait before depositing again a message no holder accepted.
const DEPOSIT_RETRY_MS: u64 = 30_000;

/// Scenario events.
#[derive(Debug)]
pub(super) enum MbEv {
    Deposit(usize),
    Fetch(u32),
    Return(u32),
    Heal,
    Sample { end: bool },
    Leave,
}

#[derive(Debug, Clone)]
struct Msg {
    recipient: u32,
    id: Option<MessageId>,
    deposited_at: u64,
    expires_at: u64,
    reachable_at: u64,
    delivered_at: Option<u64>,
    accepted: Option<u32>,
    sender: Option<u32>,
    attempts: u32,
}

#[derive(Debug)]
pub(super) struct State {
    scenario: MailboxScenario,
    recipients: Vec<u32>,
    offline: Vec<bool>,
    msgs: Vec<Msg>,
    by_id: HashMap<MessageId, usize>,
    protected: std::collections::HashSet<u32>,
    report: MailboxReport,
}

impl Sim {
    pub(super) fn mailbox_scenario(&mut self) {
        let Some(sc) = self.cfg.mailbox.clone() else {
            return;
        };
        let n = self.cfg.nodes;
        for i in 0..n {
            let slot = self.new_node(false);
            self.schedule(i as u64 * self.cfg.join_spacing_ms, Ev::Join(slot));
        }
        let built = n as u64 * self.cfg.join_spacing_ms + 60_000;
        self.run_until(built);
        let t0 = self.now;

        // Recipients.
        let k = if sc.recipients > 0 {
            sc.recipients
        } else {
            (sc.messages / 4).clamp(1, (n / 4).max(1))
        }
        .min(self.honest_alive.len());
        let mut recipients = Vec::with_capacity(k);
        while recipients.len() < k {
            let Some(s) = self.random_honest() else {
                break;
            };
            if !recipients.contains(&s) {
                recipients.push(s);
            }
        }
        let partition = sc.partition_ms > 0;
        let heal_at = if partition { t0 + sc.partition_ms } else { t0 };
        if partition {
            for node in &mut self.nodes {
                node.side = u8::from(self.rng.gen_bool(0.5));
            }
            self.partitioned = true;
            self.schedule(heal_at, Ev::Mailbox(MbEv::Heal));
        }
        let mut offline = Vec::with_capacity(k);
        let mut return_at = Vec::with_capacity(k);
        let mut report = MailboxReport::default();
        for &r in &recipients {
            let off = !partition || self.rng.gen_bool(sc.offline.clamp(0.0, 1.0));
            offline.push(off);
            if off {
                report.offline_recipients += 1;
                let back = t0 + (sc.offline_ms as f64 * self.rng.gen_range(0.6..1.4)) as u64;
                return_at.push(back);
                self.go_offline(r);
                self.schedule(back, Ev::Mailbox(MbEv::Return(r)));
            } else {
                report.partitioned_recipients += 1;
                return_at.push(t0);
                let first = t0 + self.rng.gen_range(0..sc.fetch_interval_ms.max(1));
                self.schedule(first, Ev::Mailbox(MbEv::Fetch(r)));
            }
        }
        // Deposits, in the first half of the shortest absence.
        let shortest = match (partition, report.offline_recipients > 0) {
            (true, true) => sc.partition_ms.min(sc.offline_ms * 6 / 10),
            (true, false) => sc.partition_ms,
            _ => sc.offline_ms * 6 / 10,
        };
        let window = (shortest / 2).max(1);
        let mut msgs = Vec::with_capacity(sc.messages);
        for i in 0..sc.messages {
            if recipients.is_empty() {
                break;
            }
            let ri = self.rng.gen_range(0..recipients.len());
            let at = t0 + self.rng.gen_range(0..window);
            let reachable_at = return_at[ri].max(heal_at);
            msgs.push(Msg {
                recipient: recipients[ri],
                id: None,
                deposited_at: at,
                expires_at: at.saturating_add(sc.ttl_ms),
                reachable_at,
                delivered_at: None,
                accepted: None,
                sender: None,
                attempts: 0,
            });
            self.schedule(at, Ev::Mailbox(MbEv::Deposit(i)));
        }
        let last_back = return_at.iter().copied().max().unwrap_or(t0).max(heal_at);
        let end = last_back + sc.settle_ms;
        // Churn, never of recipients.
        let replaced = (self.cfg.churn * n as f64).round() as usize;
        let churn_until = (heal_at.max(t0 + 1) + sc.settle_ms / 2).max(t0 + 1);
        for _ in 0..replaced {
            let t = self.rng.gen_range(t0..churn_until);
            self.schedule(t, Ev::Mailbox(MbEv::Leave));
            let t = self.rng.gen_range(t0..churn_until);
            let slot = self.new_node(false);
            if partition {
                self.nodes[slot as usize].side = u8::from(self.rng.gen_bool(0.5));
            }
            self.schedule(t, Ev::Join(slot));
            report.joined += 1;
        }
        let peak = if partition {
            heal_at
        } else {
            t0 + sc.offline_ms * 6 / 10
        };
        self.schedule(peak, Ev::Mailbox(MbEv::Sample { end: false }));
        self.mb = Some(State {
            scenario: sc,
            protected: recipients.iter().copied().collect(),
            recipients,
            offline,
            msgs,
            by_id: HashMap::new(),
            report,
        });
        self.run_until(end);
        self.mailbox_sample(true);
        let Some(mut st) = self.mb.take() else {
            return;
        };
        for m in &st.msgs {
            let unheld = m.accepted.is_none_or(|a| a == 0);
            let sender_gone = m
                .sender
                .is_some_and(|s| self.nodes[s as usize].dht.is_none());
            if m.id.is_some() && unheld && sender_gone && m.delivered_at.is_none() {
                st.report.lost_with_sender += 1;
                continue;
            }
            let eligible = m.id.is_some() && m.expires_at > m.reachable_at;
            match (eligible, m.delivered_at) {
                (true, Some(at)) => {
                    st.report.eligible += 1;
                    st.report.delivered += 1;
                    st.report.delay_ms.push(at - m.deposited_at);
                    st.report
                        .after_reachable_ms
                        .push(at.saturating_sub(m.reachable_at));
                }
                (true, None) => {
                    st.report.eligible += 1;
                }
                (false, Some(_)) => st.report.delivered_other += 1,
                (false, None) => {}
            }
        }
        st.report.accepted = st
            .msgs
            .iter()
            .filter_map(|m| m.accepted.map(u64::from))
            .collect();
        st.report.undelivered_never_held = st
            .msgs
            .iter()
            .filter(|m| m.id.is_some() && m.expires_at > m.reachable_at)
            .filter(|m| m.delivered_at.is_none() && m.accepted.is_none_or(|a| a == 0))
            .count()
            - st.report.lost_with_sender;
        self.report.mailbox = Some(st.report);
    }

    pub(super) fn count_cut(&mut self) {
        if let Some(st) = self.mb.as_mut() {
            st.report.cut_total += 1;
        }
    }

    fn go_offline(&mut self, slot: u32) {
        let node = &mut self.nodes[slot as usize];
        node.dht = None;
        self.by_id.remove(&node.contact.id);
        self.honest_alive.retain(|&s| s != slot);
        self.measured.retain(|(s, _), _| *s != slot);
    }

    pub(super) fn mailbox_handle(&mut self, ev: MbEv) {
        let now = self.now;
        match ev {
            MbEv::Heal => self.partitioned = false,
            MbEv::Sample { end } => self.mailbox_sample(end),
            MbEv::Leave => {
                let Some(st) = self.mb.as_ref() else {
                    return;
                };
                let candidates: Vec<u32> = self
                    .honest_alive
                    .iter()
                    .copied()
                    .filter(|s| !st.protected.contains(s))
                    .collect();
                if candidates.is_empty() {
                    return;
                }
                let slot = candidates[self.rng.gen_range(0..candidates.len())];
                self.go_offline(slot);
                if let Some(st) = self.mb.as_mut() {
                    st.report.left += 1;
                }
            }
            MbEv::Return(slot) => {
                self.join(slot);
                self.schedule(now + 5_000, Ev::Mailbox(MbEv::Fetch(slot)));
            }
            MbEv::Fetch(slot) => {
                let Some(interval) = self.mb.as_ref().map(|s| s.scenario.fetch_interval_ms) else {
                    return;
                };
                let Some(dht) = self.nodes[slot as usize].dht.as_mut() else {
                    return; // offline: the fetches start again when it is back
                };
                let _ = dht.fetch_mailbox(now);
                self.flush(slot);
                self.schedule(now + interval.max(1), Ev::Mailbox(MbEv::Fetch(slot)));
            }
            MbEv::Deposit(i) => self.mailbox_deposit(i),
        }
    }

    fn mailbox_deposit(&mut self, i: usize) {
        let now = self.now;
        let Some(st) = self.mb.as_ref() else {
            return;
        };
        let Some(msg) = st.msgs.get(i) else {
            return;
        };
        let recipient = msg.recipient;
        let expires_at = msg.expires_at;
        let payload_bytes = st.scenario.payload_bytes;
        let ri = st.recipients.iter().position(|&r| r == recipient);
        let offline = ri.is_some_and(|ri| st.offline[ri]);
        let retry = msg.sender.zip(msg.id);
        let (sender, id) = match retry {
            // The sender's outbox tries again with the same message.
            Some((sender, id)) => (sender, id),
            None => {
                let sender = if offline || !self.partitioned {
                    self.random_honest()
                } else {
                    let other = 1 - self.nodes[recipient as usize].side;
                    self.random_honest_on(other)
                };
                let Some(sender) = sender.filter(|&s| s != recipient) else {
                    return;
                };
                let mut id = [0u8; 16];
                self.rng.fill(&mut id[..]);
                (sender, MessageId::from_bytes(id))
            }
        };
        let mut payload = vec![0u8; payload_bytes];
        self.rng.fill(&mut payload[..]);
        let to = self.nodes[recipient as usize].contact.id;
        let Ok(item) = MailboxItem::sign(
            &self.nodes[sender as usize].identity,
            to,
            id,
            expires_at,
            payload,
        ) else {
            return;
        };
        let Some(dht) = self.nodes[sender as usize].dht.as_mut() else {
            return;
        };
        if dht.deposit(item, now).is_err() {
            // Too many lookups running: the node's outbox would try again.
            self.schedule(now + 1_000, Ev::Mailbox(MbEv::Deposit(i)));
            return;
        }
        if let Some(st) = self.mb.as_mut() {
            let m = &mut st.msgs[i];
            if retry.is_none() {
                m.id = Some(id);
                m.sender = Some(sender);
                m.deposited_at = now;
                st.by_id.insert(id, i);
                st.report.deposited += 1;
            } else {
                st.report.deposit_retries += 1;
            }
            m.attempts += 1;
        }
        self.flush(sender);
    }

    /// A mailbox event of node `slot`; returns whether its DHT was given more to do.
    pub(super) fn mailbox_event(&mut self, slot: u32, event: Event) -> bool {
        let now = self.now;
        let Some(st) = self.mb.as_mut() else {
            return false;
        };
        match event {
            Event::Deposited {
                message_id,
                accepted,
                held_here,
                ..
            } => {
                // As in the node: a copy the sender keeps itself does not make the message held.
                // Unlike the node, it ignores `taken`: a deposit no holder accepted is tried
                // again, up to its limit.
                let accepted = accepted - u32::from(held_here);
                let mut retry = None;
                if let Some(&i) = st.by_id.get(&message_id) {
                    let m = &mut st.msgs[i];
                    if m.accepted.is_none_or(|a| a == 0) {
                        m.accepted = Some(accepted);
                        if accepted > 0 {
                            st.report.held += 1;
                        } else if m.attempts < MAX_DEPOSIT_ATTEMPTS {
                            retry = Some(i);
                        }
                    }
                }
                if let Some(i) = retry {
                    // Not held: the outbox tries again later.
                    self.schedule(now + DEPOSIT_RETRY_MS, Ev::Mailbox(MbEv::Deposit(i)));
                }
                false
            }
            Event::MailboxItems { items, .. } => {
                let mut ids = Vec::with_capacity(items.len());
                for item in &items {
                    ids.push(*item.message_id());
                    let Some(&i) = st.by_id.get(item.message_id()) else {
                        continue;
                    };
                    if st.msgs[i].recipient != slot {
                        continue;
                    }
                    match st.msgs[i].delivered_at {
                        None => st.msgs[i].delivered_at = Some(now),
                        Some(_) => st.report.duplicates += 1,
                    }
                }
                let identity = self.nodes[slot as usize].identity.clone();
                let Some(dht) = self.nodes[slot as usize].dht.as_mut() else {
                    return false;
                };
                for chunk in ids.chunks(MAX_MAILBOX_DELETE_IDS) {
                    if let Ok(req) = MailboxDelete::sign(&identity, chunk.to_vec(), now) {
                        let _ = dht.delete_from_mailbox(req, now);
                    }
                }
                true
            }
            _ => false,
        }
    }

    fn mailbox_sample(&mut self, end: bool) {
        let mut bytes = Vec::new();
        let mut items = 0u64;
        for &s in &self.honest_alive {
            if let Some(m) = self.nodes[s as usize]
                .dht
                .as_ref()
                .and_then(|d| d.mailbox())
            {
                bytes.push(m.bytes_held() as u64);
                items += m.items_held() as u64;
            }
        }
        if let Some(st) = self.mb.as_mut() {
            if end {
                st.report.held_end = bytes;
                st.report.items_end = items;
            } else {
                st.report.held_peak = bytes;
                st.report.items_peak = items;
            }
        }
    }
}
