//! Identifiers and limits shared by every DP2PTCS crate.
//!
//! This crate is the small base that everything else agrees on: the 32-byte [`NodeId`] (SHA-256 of
//! an Ed25519 public key), the XOR [`Distance`] between ids that the Kademlia DHT sorts by, the
//! [`MessageId`] that end-to-end receipts and deduplication use, and the [`limits`] every decoder
//! checks before it allocates.
//!
//! It does no IO, reads no clock and owns no global random number generator: randomness comes from
//! the caller.

mod distance;
pub mod limits;
mod message_id;
mod node_id;

pub use distance::Distance;
pub use message_id::MessageId;
pub use node_id::{NodeId, ParseNodeIdError};
