//! The DP2PTCS node: QUIC transport, the transport handshake, the session manager, a router of
//! typed messages, and end-to-end messaging with receipts.
//!
//! - [`Node::start`] binds a quinn endpoint (ALPN `dp2ptcs/2`, or `dp2ptcs/1` with a node that
//!   offers only that; an ephemeral self-signed
//!   certificate made at start) and serves it; [`Node::send_chat`] sends a chat message to a
//!   contact and waits for its end-to-end receipt; [`Node::subscribe`] streams [`NodeEvent`]s;
//!   [`Node::shutdown`] stops gracefully.
//! - Peer identity is never taken from TLS: it is proven by X3DH on the first stream of a
//!   connection, or by a frame that decrypts under the existing session (`PROTOCOL.md`
//!   section 9). See [`tls`] for why the client accepts any certificate.
//! - Every queue, map and rate a peer can grow is bounded by a field of [`NodeConfig`].
//!
//! This crate is the async shell around the pure cores (`dp2ptcs-crypto`, `dp2ptcs-wire`): it
//! owns the sockets, the clock and the randomness.

pub mod api;
mod batch;
mod commit;
mod config;
mod discovery;
mod error;
mod frames;
mod handshake;
mod limits;
mod mailbox;
mod node;
mod outbox;
mod pool;
mod prekeys;
mod reset;
mod sessions;
mod tasks;
pub mod tls;

pub use config::NodeConfig;
pub use discovery::{DhtStatus, LookupReport, LookupStep, PeerEntry};
pub use error::NodeError;
#[doc(hidden)]
pub use node::HeldStream;
pub use node::{contact_from_uri, BulkCancelReport, CancelReport, Node, NodeEvent, NodeStatus};

/// The QUIC ALPN protocol id of messaging connections: version 2, where a request stream may
/// carry several chat envelopes one after another, each answered in order (`PROTOCOL.md`
/// section 9.3).
pub const ALPN: &[u8] = b"dp2ptcs/2";
/// Messaging version 1 (one envelope per request stream), still spoken with nodes that offer
/// only it.
pub const ALPN_V1: &[u8] = b"dp2ptcs/1";
/// The QUIC ALPN protocol id of DHT connections (`PROTOCOL.md` section 10.5).
pub const DHT_ALPN: &[u8] = b"dp2ptcs-dht/1";
/// The TLS server name dialers use (identity is proven by the handshake, not by it).
pub const SERVER_NAME: &str = "dp2ptcs";
