//! One node's DHT: routing table, record store and running lookups behind one sans-IO API.
//!
//! The caller (the node, or the simulator) drives it:
//!
//! 1. Every DHT request that arrives from a peer whose id is proven goes to
//!    [`Dht::handle_request`], which returns the response to send back.
//! 2. Every response to a request this node sent goes to [`Dht::handle_response`]; a request that
//!    could not be delivered goes to [`Dht::handle_failure`].
//! 3. After any input, drain [`Dht::poll_transmit`] (requests to send) and [`Dht::poll_event`]
//!    (finished lookups), and call [`Dht::handle_timeout`] once `now` reaches
//!    [`Dht::poll_timeout`]. That is where request timeouts, record expiry, republishing and bucket
//!    refresh happen.
//!
//! **Bounds.** Lookups running: [`DhtConfig::max_lookups`]; requests in flight: at most
//! `disjoint_paths × alpha` per lookup, k STOREs per finished put or republish, and one eviction
//! ping per bucket; records held: [`DhtConfig::store_capacity`]; routing table: 256 × k entries
//! plus 256 × [`REPLACEMENT_CACHE_LEN`](crate::REPLACEMENT_CACHE_LEN) cached newcomers; mailboxes:
//! [`DhtConfig::mailbox`] and the bounds in `src/dht/mailbox.rs`. The
//! transmit and event queues hold what the last inputs produced: drain them after each input.
//!
//! Lookups are started by [`Dht::find_node`], [`Dht::get_record`], [`Dht::put_record`] and
//! [`Dht::bootstrap`]; each returns a [`LookupId`] that its [`Event::LookupFinished`] carries.
//!
//! **Mailboxes** (store-and-forward, PROTOCOL.md section 11) ride the same lookups and the same
//! request/response exchange: [`Dht::deposit`], [`Dht::fetch_mailbox`] and
//! [`Dht::delete_from_mailbox`] look up a mailbox key and then talk to its holders, and
//! [`Dht::handle_request`] serves the three mailbox RPCs from this node's [`MailboxStore`]. See
//! the module notes in `src/dht/mailbox.rs` for the events, hand-off and bounds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dp2ptcs_types::{MessageId, NodeId};
use rand_core::RngCore;

use crate::contact::Contact;
use crate::kbucket::{random_id_in_bucket, InsertOutcome, RoutingTable, K, REFRESH_INTERVAL_MS};
use crate::lookup::{Lookup, LookupParams, PathStep};
use crate::mailbox::{MailboxDelete, MailboxItem, MailboxLimits, MailboxStore, MAILBOX_REPLICAS};
use crate::message::{Request, RequestId, Response, Transmit};
use crate::record::{Record, RecordKey};
use crate::store::{PutOutcome, RecordStore, StoreError, DEFAULT_STORE_CAPACITY};

/// Tunables of a [`Dht`]. [`DhtConfig::default`] gives the protocol's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtConfig {
    /// Requests in flight per lookup path (α, default 3).
    pub alpha: usize,
    /// Disjoint lookup paths (default 3; 1 is plain Kademlia; see [`Lookup`]). Three paths cost
    /// about twice the requests of one and keep lookups working when a fifth of the nodes answer
    /// with self-serving contacts (the simulator's figures are in BENCHMARKS.md).
    pub disjoint_paths: usize,
    /// A request without an answer after this long has failed (default 2 s).
    pub request_timeout_ms: u64,
    /// A bucket untouched by lookups for this long is refreshed (default 1 h).
    pub refresh_interval_ms: u64,
    /// Held records are stored again at the k closest nodes this often (default 1 h).
    pub republish_interval_ms: u64,
    /// How often expiry, republish and refresh are checked (default 1 min).
    pub maintenance_interval_ms: u64,
    /// Most records held (default [`DEFAULT_STORE_CAPACITY`]).
    pub store_capacity: usize,
    /// Most lookups running at once, including refresh and republish ones (default 32).
    pub max_lookups: usize,
    /// Quotas of the mailboxes this node holds for others (default [`MailboxLimits::default`]).
    /// With `total_bytes` 0 it holds none and refuses every `MAILBOX_PUT`.
    pub mailbox: MailboxLimits,
    /// Holders of each mailbox: the r nodes closest to its key (default [`MAILBOX_REPLICAS`] = 5).
    pub mailbox_replicas: usize,
    /// A held item is handed on to the r closest nodes of its mailbox this often, unless another
    /// holder handed it here in the meantime (default 10 min).
    pub mailbox_replicate_interval_ms: u64,
    /// How soon after a node closer to a held mailbox than its farthest known holder enters the
    /// routing table (a newcomer, a healed partition) the mailbox's items are handed on to it
    /// (default 5 s).
    pub mailbox_handoff_delay_ms: u64,
    /// Most items handed on per round, each to up to r holders (default 64). A round runs at each
    /// maintenance tick (periodic replication) and each hand-off timer.
    pub mailbox_items_per_round: usize,
    /// Contacts dropped from the routing table after failing are pinged again this long after
    /// (default 2 min; then at doubling intervals; each maintenance tick pings those due), so that the two sides of a healed partition find
    /// each other without waiting for a bucket refresh. See [`DROPPED_MEMORY`].
    pub reping_interval_ms: u64,
}

/// Dropped contacts remembered for pinging again ([`DhtConfig::reping_interval_ms`]), for at
/// most [`DROPPED_MAX_AGE_MS`]; the oldest is forgotten first. Each is pinged after the
/// interval, then after twice as long each time, at most [`REPING_MAX_BACKOFF_MS`] apart.
pub const DROPPED_MEMORY: usize = 128;
/// Dropped contacts pinged per round, at most.
pub const REPING_PER_ROUND: usize = 16;
/// Longest wait between two pings of one dropped contact (16 min).
pub const REPING_MAX_BACKOFF_MS: u64 = 16 * 60 * 1000;
/// A dropped contact is forgotten this long after it was dropped (24 h).
pub const DROPPED_MAX_AGE_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            alpha: crate::ALPHA,
            disjoint_paths: 3,
            request_timeout_ms: 2_000,
            refresh_interval_ms: REFRESH_INTERVAL_MS,
            republish_interval_ms: 60 * 60 * 1000,
            maintenance_interval_ms: 60 * 1000,
            store_capacity: DEFAULT_STORE_CAPACITY,
            max_lookups: 32,
            mailbox: MailboxLimits::default(),
            mailbox_replicas: MAILBOX_REPLICAS,
            mailbox_replicate_interval_ms: 10 * 60 * 1000,
            mailbox_handoff_delay_ms: 5_000,
            mailbox_items_per_round: 64,
            reping_interval_ms: 2 * 60 * 1000,
        }
    }
}

/// Why a lookup could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// [`DhtConfig::max_lookups`] lookups are already running.
    #[error("too many lookups running (at most {0})")]
    TooManyLookups(usize),
    /// The local store refused the record being published.
    #[error("record refused: {0}")]
    Store(#[from] StoreError),
}

/// Identifies a lookup started by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// Why a lookup runs, and what happens when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupPurpose {
    /// [`Dht::find_node`].
    FindNode,
    /// [`Dht::bootstrap`]: a lookup of the local id.
    Bootstrap,
    /// [`Dht::get_record`].
    GetRecord(RecordKey),
    /// [`Dht::put_record`]: STORE the record at the k closest found.
    PutRecord(Box<Record>),
    /// Republishing a held record: STORE it at the k closest found.
    Republish(Box<Record>),
    /// Refreshing a bucket.
    Refresh,
    /// [`Dht::deposit`]: `MAILBOX_PUT` the item at the r closest to its mailbox key.
    Deposit(Box<MailboxItem>),
    /// [`Dht::fetch_mailbox`]: `MAILBOX_FETCH` from the r closest to our mailbox key.
    FetchMailbox,
    /// [`Dht::delete_from_mailbox`]: `MAILBOX_DELETE` at the r closest to the mailbox key.
    DeleteFromMailbox(Box<MailboxDelete>),
    /// Handing the items held for this recipient on to the r closest to its mailbox key.
    ReplicateMailbox(NodeId),
}

/// How a lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOutcome {
    /// Which lookup.
    pub id: LookupId,
    /// Why it ran.
    pub purpose: LookupPurpose,
    /// The id looked up.
    pub target: NodeId,
    /// The k closest peers that answered, closest first.
    pub closest: Vec<Contact>,
    /// The record found ([`LookupPurpose::GetRecord`]).
    pub record: Option<Record>,
    /// Whether the target node itself answered.
    pub target_answered: bool,
    /// Rounds: the greatest hop count of any peer asked.
    pub rounds: u32,
    /// Lookup requests sent.
    pub requests: u32,
    /// STORE requests sent when it ended (put and republish).
    pub stores_sent: u32,
    /// Every peer the lookup asked, in the order first asked, with its hop and how its request
    /// ended: at most `disjoint_paths ×` [`MAX_PEERS_PER_PATH`](crate::MAX_PEERS_PER_PATH).
    pub path: Vec<PathStep>,
}

/// What the DHT tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lookup ended.
    LookupFinished(LookupOutcome),
    /// A [`Dht::deposit`] is over: every holder it asked answered, refused or failed. Emitted
    /// after the deposit's [`Event::LookupFinished`]. The message is held by another node if
    /// `accepted` is more than `held_here` counts.
    Deposited {
        /// The deposit's lookup.
        lookup: LookupId,
        /// The item's message id.
        message_id: MessageId,
        /// Holders that accepted it (stored, or already held), this node included if it is one.
        accepted: u32,
        /// Holders that refused it or did not answer.
        refused: u32,
        /// Whether this node is one of the holders that accepted it (it is among the r closest
        /// to the mailbox key it knows). Such a copy is gone with the sender if it goes offline.
        held_here: bool,
        /// Holders (among `refused`) that refused it because its recipient deleted it (a
        /// tombstone): the recipient fetched it already. A holder's word: it proves nothing.
        taken: u32,
    },
    /// Items of our own mailbox, fetched by [`Dht::fetch_mailbox`]: verified, addressed to this
    /// node, unexpired, and new within this fetch (deduplicated across holders). A fetch may
    /// report several batches.
    MailboxItems {
        /// The fetch's lookup.
        lookup: LookupId,
        /// The items, in the order the holders returned them (oldest first per holder).
        items: Vec<MailboxItem>,
    },
    /// A [`Dht::fetch_mailbox`] is over: every holder asked answered (all its pages, up to
    /// [`MAX_MAILBOX_FETCH_PAGES`]) or failed.
    MailboxFetched {
        /// The fetch's lookup.
        lookup: LookupId,
        /// Holders that answered.
        holders: u32,
        /// Items reported in [`Event::MailboxItems`] for this fetch.
        items: u32,
    },
    /// A [`Dht::delete_from_mailbox`] is over.
    MailboxDeleted {
        /// The delete's lookup.
        lookup: LookupId,
        /// Holders that answered.
        holders: u32,
        /// Items they removed, summed over holders.
        removed: u32,
    },
    /// This node now holds `item` for someone else's mailbox (persist it).
    MailboxStored(MailboxItem),
    /// This node no longer holds this item: deleted by its recipient, expired, handed on to
    /// closer holders, or not restored (forget it).
    MailboxRemoved {
        /// Whose mailbox it was in.
        recipient: NodeId,
        /// Which item.
        message_id: MessageId,
    },
}

/// Most pages one [`Dht::fetch_mailbox`] asks of one holder (each at most one frame, 60 KiB of
/// items); what is left waits for the next fetch.
pub const MAX_MAILBOX_FETCH_PAGES: u32 = 8;

#[derive(Debug, Clone, Copy)]
enum PendingKind {
    Lookup(LookupId),
    EvictionPing,
    /// A ping to a contact dropped earlier ([`DhtConfig::reping_interval_ms`]).
    Reping,
    Store,
    Mailbox {
        op: LookupId,
        what: mailbox::MailboxPending,
    },
}

/// A contact dropped from the routing table, remembered for pinging again.
#[derive(Debug, Clone, Copy)]
struct Dropped {
    contact: Contact,
    /// When it was dropped.
    at_ms: u64,
    /// When to ping it next.
    next_ms: u64,
    /// Pings sent since it was dropped.
    pings: u32,
}

#[derive(Debug, Clone)]
struct Pending {
    to: Contact,
    deadline_ms: u64,
    kind: PendingKind,
}

#[derive(Debug, Clone)]
struct Running {
    lookup: Lookup,
    purpose: LookupPurpose,
}

/// One node's DHT. See the module notes in `src/dht.rs` (design, rules, bounds).
#[derive(Debug)]
pub struct Dht {
    local: NodeId,
    config: DhtConfig,
    table: RoutingTable,
    store: RecordStore,
    lookups: BTreeMap<LookupId, Running>,
    pending: BTreeMap<RequestId, Pending>,
    deadlines: BTreeSet<(u64, RequestId)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_request: u64,
    next_lookup: u64,
    next_maintenance_ms: u64,
    mailbox: Option<MailboxStore>,
    mailbox_ops: BTreeMap<LookupId, mailbox::MailboxOp>,
    mailbox_plans: BTreeMap<LookupId, mailbox::ReplicatePlan>,
    mailbox_views: BTreeMap<NodeId, mailbox::MailboxView>,
    handoff_due: BTreeMap<NodeId, BTreeSet<NodeId>>,
    next_handoff_ms: u64,
    /// Contacts dropped after failing, oldest first: pinged again now and then.
    dropped: VecDeque<Dropped>,
}

impl Dht {
    /// The DHT of node `local`, started at `now_ms`.
    pub fn new(local: NodeId, config: DhtConfig, now_ms: u64) -> Self {
        Self {
            local,
            config,
            table: RoutingTable::new(local, now_ms),
            store: RecordStore::new(local, config.store_capacity, config.republish_interval_ms),
            lookups: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_request: 0,
            next_lookup: 0,
            next_maintenance_ms: now_ms.saturating_add(config.maintenance_interval_ms),
            mailbox: (config.mailbox.total_bytes > 0).then(|| {
                let mut store = MailboxStore::new(config.mailbox);
                store.set_replicate_interval(config.mailbox_replicate_interval_ms);
                store
            }),
            mailbox_ops: BTreeMap::new(),
            mailbox_plans: BTreeMap::new(),
            mailbox_views: BTreeMap::new(),
            handoff_due: BTreeMap::new(),
            next_handoff_ms: u64::MAX,
            dropped: VecDeque::new(),
        }
    }

    /// The local id.
    pub fn local_id(&self) -> &NodeId {
        &self.local
    }

    /// The routing table (read only).
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store (read only).
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// Number of lookups running.
    pub fn running_lookups(&self) -> usize {
        self.lookups.len()
    }

    /// A peer proved its id (handshake done, e.g. with a bootstrap node): add it to the table.
    pub fn add_peer(&mut self, peer: Contact, now_ms: u64) {
        self.observe(peer, now_ms);
    }

    /// The next request to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Dht::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> u64 {
        let first = self.deadlines.first().map_or(u64::MAX, |(t, _)| *t);
        first
            .min(self.next_maintenance_ms)
            .min(self.next_handoff_ms)
    }

    /// Answers a request from `from`, whose id the caller has proven. `from` enters the routing
    /// table (which may queue a ping to an old entry).
    pub fn handle_request(&mut self, from: Contact, request: Request, now_ms: u64) -> Response {
        self.observe(from, now_ms);
        match request {
            Request::Ping => Response::Pong,
            Request::FindNode { target } => Response::Nodes {
                closer: self.closest_for(&target, &from.id),
            },
            Request::FindValue { key } => match self.store.get(&key, now_ms) {
                Some(record) => Response::Value {
                    record: Box::new(record.clone()),
                },
                None => Response::Nodes {
                    closer: self.closest_for(&key.owner, &from.id),
                },
            },
            Request::Store { record } => Response::Stored {
                accepted: self.store.put(*record, now_ms).is_ok(),
            },
            Request::MailboxPut { item } => self.serve_mailbox_put(*item, now_ms),
            Request::MailboxFetch { limit_bytes, after } => {
                self.serve_mailbox_fetch(&from.id, limit_bytes, after, now_ms)
            }
            Request::MailboxDelete { request } => self.serve_mailbox_delete(&request, now_ms),
        }
    }

    /// A response from `from` (proven by the session it came over) to request `id`. Ignored if
    /// no such request is pending to that peer.
    pub fn handle_response(
        &mut self,
        from: &NodeId,
        id: RequestId,
        response: Response,
        now_ms: u64,
    ) {
        match self.pending.get(&id) {
            Some(p) if p.to.id == *from => {}
            _ => return,
        }
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(pending.deadline_ms, id));
        self.observe(pending.to, now_ms);
        match pending.kind {
            PendingKind::EvictionPing => {
                self.table.ping_result(from, true, now_ms);
            }
            // Back: `observe` above put it in the table again.
            PendingKind::Reping => self.dropped.retain(|d| d.contact.id != *from),
            PendingKind::Store => {}
            PendingKind::Mailbox { op, what } => {
                self.mailbox_answer(op, what, pending.to, Some(response), now_ms);
            }
            PendingKind::Lookup(lid) => {
                let Some(running) = self.lookups.get_mut(&lid) else {
                    return;
                };
                match response {
                    Response::Nodes { mut closer } => {
                        closer.truncate(K);
                        running.lookup.on_success(from, &closer);
                    }
                    Response::Value { record } => {
                        let wanted = match &running.purpose {
                            LookupPurpose::GetRecord(key) => *key == record.key(),
                            _ => false,
                        };
                        if wanted && record.expires_at_ms() > now_ms {
                            running.lookup.on_value(from, *record);
                        } else {
                            running.lookup.on_invalid(from);
                        }
                    }
                    Response::Pong
                    | Response::Stored { .. }
                    | Response::MailboxStored { .. }
                    | Response::MailboxItems { .. }
                    | Response::MailboxDeleted { .. } => running.lookup.on_invalid(from),
                }
                self.drive(lid, now_ms);
            }
        }
    }

    /// The request `id` could not be delivered (no route, connection or handshake failed).
    pub fn handle_failure(&mut self, id: RequestId, now_ms: u64) {
        if let Some(p) = self.pending.remove(&id) {
            self.deadlines.remove(&(p.deadline_ms, id));
            self.fail(p, now_ms);
        }
    }

    /// Times out overdue requests and, when due, expires records and mailbox items, republishes
    /// held records, hands mailbox items on, and refreshes idle buckets (with random ids from
    /// `rng`).
    pub fn handle_timeout(&mut self, now_ms: u64, rng: &mut impl RngCore) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&id) {
                self.fail(p, now_ms);
            }
        }
        if now_ms >= self.next_handoff_ms {
            self.mailbox_handoffs(now_ms);
        }
        if now_ms < self.next_maintenance_ms {
            return;
        }
        self.next_maintenance_ms = now_ms.saturating_add(self.config.maintenance_interval_ms);
        self.store.expire(now_ms);
        self.mailbox_maintenance(now_ms);
        self.reping_dropped(now_ms);
        for record in self.store.due_republish(now_ms) {
            let target = record.key().owner;
            let purpose = LookupPurpose::Republish(Box::new(record));
            if self.start(target, purpose, now_ms).is_err() {
                break;
            }
        }
        for idx in self
            .table
            .due_refreshes(now_ms, self.config.refresh_interval_ms)
        {
            let target = random_id_in_bucket(&self.local, idx, rng);
            // Marked even if it cannot start now, so that a busy node does not retry every tick.
            self.table.mark_refreshed(idx, now_ms);
            if self.start(target, LookupPurpose::Refresh, now_ms).is_err() {
                break;
            }
        }
    }

    /// Starts a lookup of `target`. It ends as soon as the target itself answers (it is then in
    /// the routing table, proven), or else when the k closest peers found have answered.
    pub fn find_node(&mut self, target: NodeId, now_ms: u64) -> Result<LookupId, DhtError> {
        self.start(target, LookupPurpose::FindNode, now_ms)
    }

    /// Starts a lookup of the local id: run it after adding the first peers, to fill the table
    /// and make this node known to its neighbours.
    pub fn bootstrap(&mut self, now_ms: u64) -> Result<LookupId, DhtError> {
        self.start(self.local, LookupPurpose::Bootstrap, now_ms)
    }

    /// Starts a FIND_VALUE lookup of `key`. A record held locally is still looked up in the
    /// network (a newer version may exist); use [`Dht::store`] for the local copy.
    pub fn get_record(&mut self, key: RecordKey, now_ms: u64) -> Result<LookupId, DhtError> {
        self.start(key.owner, LookupPurpose::GetRecord(key), now_ms)
    }

    /// Publishes `record` (normally our own): keeps it locally, so that it is republished, and
    /// STOREs it at the k closest nodes to its key once a lookup has found them.
    pub fn put_record(&mut self, record: Record, now_ms: u64) -> Result<LookupId, DhtError> {
        match self.store.put(record.clone(), now_ms) {
            Ok(PutOutcome::Stored | PutOutcome::Replaced | PutOutcome::Unchanged) => {}
            Err(e) => return Err(e.into()),
        }
        let target = record.key().owner;
        self.start(target, LookupPurpose::PutRecord(Box::new(record)), now_ms)
    }

    fn start(
        &mut self,
        target: NodeId,
        purpose: LookupPurpose,
        now_ms: u64,
    ) -> Result<LookupId, DhtError> {
        if self.lookups.len() >= self.config.max_lookups {
            return Err(DhtError::TooManyLookups(self.config.max_lookups));
        }
        if let Some(idx) = self.table.bucket_index(&target) {
            self.table.mark_refreshed(idx, now_ms);
        }
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let params = LookupParams {
            k: K,
            alpha: self.config.alpha,
            paths: self.config.disjoint_paths,
            stop_at_target: matches!(purpose, LookupPurpose::FindNode),
        };
        let seeds = self.table.closest(&target, K);
        let want_value = matches!(purpose, LookupPurpose::GetRecord(_));
        let lookup = Lookup::new(self.local, target, seeds, params, want_value);
        self.lookups.insert(id, Running { lookup, purpose });
        self.drive(id, now_ms);
        Ok(id)
    }

    /// Sends what the lookup wants sent; ends it if it is finished.
    fn drive(&mut self, lid: LookupId, now_ms: u64) {
        let Some(running) = self.lookups.get_mut(&lid) else {
            return;
        };
        let request = match &running.purpose {
            LookupPurpose::GetRecord(key) => Request::FindValue { key: *key },
            _ => Request::FindNode {
                target: *running.lookup.target(),
            },
        };
        let mut to_send = Vec::new();
        while let Some(peer) = running.lookup.next_request() {
            to_send.push(peer);
        }
        let finished = running.lookup.is_finished();
        for peer in to_send {
            self.send(peer, request.clone(), PendingKind::Lookup(lid), now_ms);
        }
        if finished {
            self.finish(lid, now_ms);
        }
    }

    fn finish(&mut self, lid: LookupId, now_ms: u64) {
        let Some(Running { lookup, purpose }) = self.lookups.remove(&lid) else {
            return;
        };
        let closest = lookup.closest();
        let mailbox_purpose = match &purpose {
            LookupPurpose::Deposit(_)
            | LookupPurpose::FetchMailbox
            | LookupPurpose::DeleteFromMailbox(_)
            | LookupPurpose::ReplicateMailbox(_) => Some(purpose.clone()),
            _ => None,
        };
        let mut stores_sent = 0;
        if let LookupPurpose::PutRecord(record) | LookupPurpose::Republish(record) = &purpose {
            let local = self.local;
            for peer in closest.iter().filter(|c| c.id != local) {
                let request = Request::Store {
                    record: record.clone(),
                };
                self.send(*peer, request, PendingKind::Store, now_ms);
                stores_sent += 1;
            }
        }
        // A record this node holds itself counts as an answer: it may be one of the k closest,
        // and the only one of them still up.
        let record = match &purpose {
            LookupPurpose::GetRecord(key) => match (lookup.record(), self.store.get(key, now_ms)) {
                (Some(found), Some(held)) if held.sequence() > found.sequence() => Some(held),
                (found, held) => found.or(held),
            },
            _ => lookup.record(),
        };
        self.events.push_back(Event::LookupFinished(LookupOutcome {
            id: lid,
            target: *lookup.target(),
            record: record.cloned(),
            target_answered: lookup.target_answered(),
            rounds: lookup.rounds(),
            requests: lookup.requests(),
            path: lookup.path().to_vec(),
            closest: closest.clone(),
            purpose,
            stores_sent,
        }));
        if let Some(p) = mailbox_purpose {
            self.mailbox_lookup_done(lid, p, &closest, now_ms);
        }
    }

    fn send(&mut self, to: Contact, request: Request, kind: PendingKind, now_ms: u64) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let deadline_ms = now_ms.saturating_add(self.config.request_timeout_ms);
        self.pending.insert(
            id,
            Pending {
                to,
                deadline_ms,
                kind,
            },
        );
        self.deadlines.insert((deadline_ms, id));
        self.transmits.push_back(Transmit { to, id, request });
    }

    /// Remembers `c`, just dropped from the table, for [`DhtConfig::reping_interval_ms`].
    fn note_dropped(&mut self, c: Contact, now_ms: u64) {
        self.dropped.retain(|d| d.contact.id != c.id);
        self.dropped.push_back(Dropped {
            contact: c,
            at_ms: now_ms,
            next_ms: now_ms.saturating_add(self.config.reping_interval_ms),
            pings: 0,
        });
        while self.dropped.len() > DROPPED_MEMORY {
            self.dropped.pop_front();
        }
    }

    /// Reports a failed request to `c`, remembering it if that dropped it.
    fn report_failure(&mut self, c: Contact, now_ms: u64) {
        if self.table.report_failure(&c.id, now_ms) {
            self.note_dropped(c, now_ms);
        }
    }

    /// Pings again up to [`REPING_PER_ROUND`] of the remembered dropped contacts whose time
    /// has come and that are not back in the table, oldest first.
    fn reping_dropped(&mut self, now_ms: u64) {
        let table = &self.table;
        self.dropped.retain(|d| {
            now_ms.saturating_sub(d.at_ms) < DROPPED_MAX_AGE_MS
                && table.get(&d.contact.id).is_none()
        });
        let interval = self.config.reping_interval_ms.max(1);
        let mut due = Vec::new();
        for d in self.dropped.iter_mut() {
            if due.len() == REPING_PER_ROUND {
                break;
            }
            if d.next_ms <= now_ms {
                d.pings = d.pings.saturating_add(1);
                let wait = interval
                    .saturating_mul(1u64 << d.pings.min(16))
                    .min(REPING_MAX_BACKOFF_MS.max(interval));
                d.next_ms = now_ms.saturating_add(wait);
                due.push(d.contact);
            }
        }
        for c in due {
            self.send(c, Request::Ping, PendingKind::Reping, now_ms);
        }
    }

    fn fail(&mut self, p: Pending, now_ms: u64) {
        match p.kind {
            PendingKind::EvictionPing => {
                self.table.ping_result(&p.to.id, false, now_ms);
                if self.table.get(&p.to.id).is_none() {
                    self.note_dropped(p.to, now_ms);
                }
            }
            PendingKind::Reping => {}
            PendingKind::Store => {
                self.report_failure(p.to, now_ms);
            }
            PendingKind::Mailbox { op, what } => {
                self.report_failure(p.to, now_ms);
                self.mailbox_answer(op, what, p.to, None, now_ms);
            }
            PendingKind::Lookup(lid) => {
                self.report_failure(p.to, now_ms);
                if let Some(running) = self.lookups.get_mut(&lid) {
                    running.lookup.on_failure(&p.to.id);
                    self.drive(lid, now_ms);
                }
            }
        }
    }

    /// A proven peer was seen: into the table, pinging an old entry if its bucket is full.
    fn observe(&mut self, peer: Contact, now_ms: u64) {
        match self.table.insert(peer, now_ms) {
            InsertOutcome::PingOldest { oldest } => {
                self.send(oldest, Request::Ping, PendingKind::EvictionPing, now_ms);
            }
            InsertOutcome::Inserted => self.mailbox_peer_seen(&peer.id, now_ms),
            _ => {}
        }
    }

    fn closest_for(&self, target: &NodeId, requester: &NodeId) -> Vec<Contact> {
        let mut out = self.table.closest(target, K + 1);
        out.retain(|c| c.id != *requester);
        out.truncate(K);
        out
    }
}

mod mailbox;
#[cfg(test)]
mod tests;
