//! The DP2PTCS Kademlia DHT, sans-IO.
//!
//! A node finds any other by its id, and fetches the signed records other nodes publish, with no
//! central directory (DESIGN.md decision 8; PROTOCOL.md section 10 is the byte-level contract).
//!
//! - [`RoutingTable`]: 256 k-buckets of [`K`] = 20, ping-before-evict with a replacement cache,
//!   at most [`MAX_PER_PREFIX`] contacts of one /24 or /48 per bucket, closest-k queries that read
//!   only the buckets they need, bucket refresh.
//! - [`Lookup`]: the iterative FIND_NODE / FIND_VALUE state machine, α = 3 in flight per path,
//!   optional disjoint paths against nodes that lie.
//! - [`Record`] and [`RecordStore`]: owner-signed, versioned, expiring peer records and prekey
//!   bundles; newer replaces older; forged, stale and expired ones are refused.
//! - [`Dht`]: one node's DHT, tying them together with request ids, timeouts, refresh and
//!   republish. The caller feeds it requests, responses, failures and time, and drains
//!   [`Dht::poll_transmit`] and [`Dht::poll_event`].
//!
//! This crate does no IO, reads no clock and owns no random number generator: time is a `u64` of
//! milliseconds passed in by the caller (Unix time in the node, virtual time in the simulator,
//! the same clock for timers and record expiry) and randomness comes from a `&mut impl RngCore`.
//! Messages are plain Rust values ([`Request`], [`Response`]); [`encode_request`],
//! [`decode_request`], [`encode_response`] and [`decode_response`] turn them into the protobuf
//! messages of `dp2ptcs-wire` and back (verifying every record), and sending them is the node's
//! job.
//!
//! ```
//! use dp2ptcs_dht::{Contact, Dht, DhtConfig, Event, Request, Response};
//! use dp2ptcs_types::NodeId;
//!
//! // Two nodes; the caller is the network. Time is milliseconds from the caller's clock.
//! let (a_id, b_id) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
//! let b = Contact::new(b_id, "192.0.2.2:4433".parse()?);
//! let a = Contact::new(a_id, "192.0.2.1:4433".parse()?);
//! let mut node_a = Dht::new(a_id, DhtConfig::default(), 0);
//! let mut node_b = Dht::new(b_id, DhtConfig::default(), 0);
//! node_a.add_peer(b, 0); // b proved its id in a handshake
//! let lookup = node_a.find_node(b_id, 0)?;
//! // Drain transmits, deliver them, feed the responses back.
//! while let Some(t) = node_a.poll_transmit() {
//!     let response: Response = node_b.handle_request(a, t.request, 5);
//!     node_a.handle_response(&t.to.id, t.id, response, 10);
//! }
//! let Some(Event::LookupFinished(outcome)) = node_a.poll_event() else {
//!     return Err("lookup still running".into());
//! };
//! assert_eq!(outcome.id, lookup);
//! assert!(outcome.target_answered);
//! // b now knows a too: it answered a's request.
//! assert!(node_b.table().get(&a_id).is_some());
//! # let _ = Request::Ping;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Trust.** Only peers that proved their id (a handshake, or a response over an authenticated
//! session) enter the routing table: the caller vouches for this when it passes a peer to
//! [`Dht::handle_request`], [`Dht::handle_response`] or [`Dht::add_peer`]. Contacts named inside a
//! response are hints: lookups may ask them, nothing else trusts them.

mod codec;
mod contact;
mod dht;
#[doc(hidden)]
pub mod fuzzing;
mod kbucket;
mod lookup;
mod mailbox;
mod message;
mod record;
mod store;

pub use codec::{decode_request, decode_response, encode_request, encode_response, CodecError};
pub use contact::{Contact, NetPrefix};
pub use dht::{
    Dht, DhtConfig, DhtError, Event, LookupId, LookupOutcome, LookupPurpose, DROPPED_MAX_AGE_MS,
    DROPPED_MEMORY, MAX_MAILBOX_FETCH_PAGES, REPING_MAX_BACKOFF_MS, REPING_PER_ROUND,
};
pub use kbucket::{
    random_id_in_bucket, InsertOutcome, RoutingTable, TableEntry, BUCKETS, K, MAX_FAILURES,
    MAX_PER_PREFIX, REFRESH_INTERVAL_MS, REPLACEMENT_CACHE_LEN,
};
pub use lookup::{Lookup, LookupParams, PathStep, StepOutcome, MAX_ATTEMPTS, MAX_PEERS_PER_PATH};
pub use mailbox::{
    mailbox_key, MailboxDelete, MailboxError, MailboxItem, MailboxLimits, MailboxPut,
    MailboxRefusal, MailboxStore, QuotaKind, DEFAULT_MAILBOX_TTL_MS, MAILBOX_DELETE_CONTEXT,
    MAILBOX_ITEM_CONTEXT, MAILBOX_KEY_CONTEXT, MAILBOX_REPLICAS, MAILBOX_VERSION,
    MAX_MAILBOX_CLOCK_SKEW_MS, MAX_MAILBOX_DELETE_IDS, MAX_MAILBOX_ITEM_LEN, MAX_MAILBOX_PAYLOAD,
    MAX_MAILBOX_TTL_MS,
};
pub use message::{Request, RequestId, Response, Transmit};
pub use record::{
    PeerRecord, Record, RecordError, RecordKey, RecordKind, RecordPayload, MAX_PEER_ADDRESSES,
    MAX_RECORD_LEN, RECORD_SIGNATURE_CONTEXT, RECORD_VERSION,
};
pub use store::{PutOutcome, RecordStore, StoreError, DEFAULT_STORE_CAPACITY, MAX_RECORD_TTL_MS};

/// Requests in flight per lookup path (Kademlia's α).
pub const ALPHA: usize = 3;
