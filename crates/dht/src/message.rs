//! The DHT's RPC messages, as plain validated Rust values.
//!
//! Their protobuf encoding is in [`codec`](crate::encode_request) (PROTOCOL.md section 10.3);
//! this crate never sends anything.

use dp2ptcs_types::{MessageId, NodeId};

use crate::contact::Contact;
use crate::mailbox::{MailboxDelete, MailboxItem};
use crate::record::{Record, RecordKey};

/// Identifies a request so that its response (or timeout) can be matched to it. Unique per
/// [`Dht`](crate::Dht) instance; a response whose id or sender does not match is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A DHT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Are you alive? Answered with [`Response::Pong`].
    Ping,
    /// The contacts you know closest to `target`: [`Response::Nodes`].
    FindNode {
        /// The id looked up.
        target: NodeId,
    },
    /// The record under `key` if you hold it ([`Response::Value`]), else closer contacts
    /// ([`Response::Nodes`]).
    FindValue {
        /// The record looked up.
        key: RecordKey,
    },
    /// Hold this record: [`Response::Stored`].
    Store {
        /// The record, verified by the receiver before anything else.
        record: Box<Record>,
    },
    /// Hold this item in its recipient's mailbox: [`Response::MailboxStored`]. The sender need
    /// not be the requester (holders hand items on): the item's signature proves who sent it.
    MailboxPut {
        /// The item, verified by the receiver before anything else.
        item: Box<MailboxItem>,
    },
    /// The items of the requester's own mailbox, oldest first: [`Response::MailboxItems`].
    MailboxFetch {
        /// Most item bytes wanted (the holder answers with at least one item's worth and at most
        /// a frame's worth).
        limit_bytes: u32,
        /// Continue after this message id, the last of the previous answer.
        after: Option<MessageId>,
    },
    /// Delete ids from the signer's mailbox: [`Response::MailboxDeleted`].
    MailboxDelete {
        /// The recipient's signed request, verified by the receiver before anything else.
        request: Box<MailboxDelete>,
    },
}

/// A DHT response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// At most [`K`](crate::K) contacts, closest to the target first; more are ignored.
    Nodes {
        /// The contacts: hints until each proves its id.
        closer: Vec<Contact>,
    },
    /// The record asked for by [`Request::FindValue`].
    Value {
        /// The record.
        record: Box<Record>,
    },
    /// Answer to [`Request::Store`].
    Stored {
        /// Whether the record was accepted (stored, or already held).
        accepted: bool,
    },
    /// Answer to [`Request::MailboxPut`].
    MailboxStored {
        /// Whether the item was accepted (stored, or already held).
        accepted: bool,
        /// Why not: a [`MailboxRefusal`](crate::MailboxRefusal) code, 0 when accepted.
        reason: u32,
    },
    /// Answer to [`Request::MailboxFetch`]: verified items, oldest first.
    MailboxItems {
        /// The items (a receiver checks they are for it: a holder could send anyone's).
        items: Vec<MailboxItem>,
        /// Whether the holder has more after the last one.
        more: bool,
    },
    /// Answer to [`Request::MailboxDelete`].
    MailboxDeleted {
        /// How many items the request removed at this holder.
        removed: u32,
    },
}

/// A request the caller must send: to `to`, tagged with `id`. Report its response with
/// [`Dht::handle_response`](crate::Dht::handle_response), or its failure with
/// [`Dht::handle_failure`](crate::Dht::handle_failure); without either it times out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer to send to. Its id must be proven (by the handshake) before its response counts.
    pub to: Contact,
    /// The request id to echo.
    pub id: RequestId,
    /// The request.
    pub request: Request,
}
