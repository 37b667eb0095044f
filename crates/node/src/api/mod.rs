//! The local control API: HTTP/1.1 with JSON bodies over a Unix socket in the data directory
//! (mode 0600, in the 0700 data directory: only the owner can connect), versioned paths.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/status` | [`Status`]: node id, addresses, connected peers, counts |
//! | `GET /v1/contacts` | `[`[`Contact`]`]` |
//! | `POST /v1/contacts` | [`AddContactRequest`] → [`AddContactResponse`] (`201` added, `200` known already) |
//! | `DELETE /v1/contacts/{contact}` | the removed [`Contact`] |
//! | `GET /v1/messages?peer=&direction=&after=&limit=&newest=` | `[`[`Message`]`]`, oldest first |
//! | `POST /v1/messages` | [`SendRequest`] → [`SendResponse`] (`202` queued, `200` delivered) |
//! | `GET /v1/outbox?peer=&after=&limit=` | `[`[`Message`]`]`: the messages waiting for a receipt, oldest first |
//! | `DELETE /v1/outbox/{id}` | [`CancelResponse`]: the message cancelled |
//! | `DELETE /v1/outbox?to={contact}` | [`CancelAllResponse`]: every message waiting for one contact cancelled |
//! | `GET /v1/events` | server-sent events, one [`Event`] per `data:` line |
//! | `GET /v1/peers` | `[`[`DhtPeer`]`]`: the DHT routing table |
//! | `GET /v1/lookup/{node_id}` | [`Lookup`]: a DHT lookup of the id and the path it took |
//!
//! Errors are [`ErrorBody`] with a 4xx or 5xx status. The CLI (`dp2ptcs send`, `inbox`,
//! `status`, `outbox`, `cancel`) is a client of this API through [`client::Client`].

mod answers;
pub mod client;
mod server;
mod stall;

use serde::{Deserialize, Serialize};

pub use answers::{
    cancel_answer, check_new_contact_name, contact_named, is_format_control, message_id, peer_name,
    recipient_named, Refusal, MIN_ID_PREFIX,
};
pub use server::{bind, serve, serve_with, ApiInfo};

/// The socket file's name in the data directory.
pub const SOCKET_FILE: &str = "api.sock";
/// Largest request body the server reads (a chat message is at most 60 KiB of text).
pub const MAX_REQUEST_BODY: usize = 128 * 1024;
/// Most messages one history request returns.
pub const MAX_HISTORY_LIMIT: u32 = 10_000;
/// A page of `GET /v1/messages` stops once its bodies reach this many bytes (the message that
/// reaches it included): the answer, and what the node holds to make it, stay within memory
/// however long the messages. A client reads on with `after`.
pub const MAX_HISTORY_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Longest a `wait`ing send request may wait for its receipt.
pub const MAX_WAIT_MS: u64 = 10 * 60 * 1000;
/// Most connections the server serves at once (an event stream holds one for as long as it is
/// followed, a send waiting for its receipt until it is answered). A connection past it is
/// answered `503 busy` and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send a request's whole header within this time of connecting, or of its
/// previous answer on a kept-alive connection; otherwise the connection is closed.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A client must send a request's whole body within this time of its header; otherwise it is
/// answered `408 timeout` and the connection is closed.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A connection whose client reads nothing of its answer (or of its event stream) for this long,
/// while the socket's buffer is full, is closed.
pub const WRITE_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The bounds the server keeps on its clients; [`Default`] gives the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Most connections served at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: std::time::Duration,
    /// [`BODY_READ_TIMEOUT`].
    pub body_read_timeout: std::time::Duration,
    /// [`WRITE_STALL_TIMEOUT`].
    pub write_stall_timeout: std::time::Duration,
}

impl ApiLimits {
    /// Refuses limits under which the server could serve nothing: no connection, or a timeout
    /// of zero.
    pub fn check(&self) -> Result<(), crate::NodeError> {
        if self.max_connections == 0 {
            return Err(crate::NodeError::InvalidConfig(
                "the API's max_connections must be at least 1".into(),
            ));
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
        ] {
            if value.is_zero() {
                return Err(crate::NodeError::InvalidConfig(format!(
                    "the API's {name} must be above zero"
                )));
            }
        }
        Ok(())
    }
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Our node id, 64 hex digits.
    pub node_id: String,
    /// The program version.
    pub version: String,
    /// The bound UDP address.
    pub listen: String,
    /// The addresses put in our contact URI.
    pub addresses: Vec<String>,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Peers with an open, authenticated connection.
    pub connected: Vec<Peer>,
    /// Open messaging connections: one per connected peer, and for a short while two to a peer
    /// that dialed this node while it dialed the peer.
    #[serde(default)]
    pub connections: usize,
    /// Number of contacts.
    pub contacts: usize,
    /// Message counts.
    pub messages: Counts,
    /// Peers the outbox waits to retry (their last attempt failed).
    pub peers_retrying: usize,
    /// Receipts for messages taken from the mailbox not yet delivered to their senders.
    #[serde(default)]
    pub receipts_owed: u64,
    /// Nodes that are not contacts whose messages are kept until they are added.
    #[serde(default)]
    pub strangers: Vec<Stranger>,
    /// The DHT.
    #[serde(default)]
    pub dht: DhtSummary,
}

/// A node that is not a contact with messages kept for when it is added ([`Status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stranger {
    /// Its node id, hex.
    pub node_id: String,
    /// How many of its messages are kept.
    pub messages: u64,
}

/// The DHT part of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtSummary {
    /// Peers in the routing table.
    pub peers: usize,
    /// Records held (ours and others').
    pub records: usize,
    /// Open DHT connections.
    pub connections: usize,
    /// Lookups running.
    pub lookups: usize,
    /// Mailbox items this node holds for others (store-and-forward), not counting copies of its
    /// own messages.
    #[serde(default)]
    pub mailbox_items: usize,
    /// Their total size in bytes.
    #[serde(default)]
    pub mailbox_bytes: usize,
}

/// One entry of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtPeer {
    /// Node id, 64 hex digits.
    pub node_id: String,
    /// Where it was last reached.
    pub addr: String,
    /// Its k-bucket (255 − leading zero bits of the XOR distance).
    pub bucket: usize,
    /// When it was last heard from, Unix milliseconds.
    pub last_seen_ms: u64,
    /// Consecutive failed requests.
    pub failures: u32,
    /// Whether a DHT connection to it is open.
    pub connected: bool,
}

/// `GET /v1/lookup/{node_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    /// The id looked up.
    pub target: String,
    /// Whether the target itself answered.
    pub found: bool,
    /// Where it answered.
    pub addr: Option<String>,
    /// Rounds (the greatest hop asked).
    pub rounds: u32,
    /// Requests sent.
    pub requests: u32,
    /// Wall-clock milliseconds.
    pub elapsed_ms: u64,
    /// Every peer asked, in the order first asked.
    pub path: Vec<LookupHop>,
    /// The closest peers that answered, closest first.
    pub closest: Vec<DhtPeerRef>,
}

/// One peer asked by a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupHop {
    /// Node id, 64 hex digits.
    pub node_id: String,
    /// Its address.
    pub addr: String,
    /// 1 for peers of our own table; n + 1 for peers learned from a hop-n answer.
    pub hop: u32,
    /// `answered`, `failed`, `invalid` or `pending`.
    pub outcome: String,
}

/// A peer and its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtPeerRef {
    /// Node id, 64 hex digits.
    pub node_id: String,
    /// Its address.
    pub addr: String,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Node id, 64 hex digits.
    pub node_id: String,
    /// The contact's name.
    pub name: Option<String>,
}

/// Messages by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Outgoing, not yet sent.
    pub queued: u64,
    /// Outgoing, sent but no receipt yet.
    pub sent: u64,
    /// Outgoing, held in the recipient's mailbox, no receipt yet.
    #[serde(default)]
    pub held: u64,
    /// Outgoing, receipt received.
    pub delivered: u64,
    /// Outgoing, given up on.
    pub expired: u64,
    /// Outgoing, cancelled by us before a receipt came.
    #[serde(default)]
    pub cancelled: u64,
    /// Incoming.
    pub received: u64,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The name we call them by.
    pub name: String,
    /// Node id, 64 hex digits.
    pub node_id: String,
    /// Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Address hints.
    pub addresses: Vec<String>,
    /// Whether the safety number was compared and matched.
    pub verified: bool,
}

/// `POST /v1/contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddContactRequest {
    /// Their contact URI (`dp2ptcs://contact?...`), as `dp2ptcs id` shows it.
    pub uri: String,
    /// The name to call them by; without it, the name the URI carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The answer to [`AddContactRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddContactResponse {
    /// `added`, `addresses_updated` (the key was a contact under this name; its address hints
    /// were replaced) or `unchanged`.
    pub outcome: String,
    /// The contact as stored.
    pub contact: Contact,
}

/// One message of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Position in this node's history (increasing).
    pub seq: i64,
    /// End-to-end message id, 32 hex digits.
    pub id: String,
    /// The other party's node id.
    pub peer: String,
    /// The other party's contact name, if they are a contact.
    pub peer_name: Option<String>,
    /// `incoming` or `outgoing`.
    pub direction: String,
    /// The text.
    pub body: String,
    /// The sender's clock when sent, Unix milliseconds.
    pub sent_at_ms: u64,
    /// `queued`, `sent`, `held`, `delivered`, `expired`, `cancelled` (outgoing) or `received`
    /// (incoming).
    pub state: String,
    /// When the state last changed (for a `held` message, when it was last deposited: it is
    /// deposited again while its contact stays out of reach), Unix milliseconds.
    pub state_at_ms: u64,
    /// Outgoing: when the node gives up on it without a receipt, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// The answer to `DELETE /v1/outbox/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// The message's state before: `queued` (no copy is known to have left this node), `sent`
    /// (the contact's node may have it already) or `held` (a mailbox holds a copy the contact
    /// may still fetch).
    pub was: String,
    /// A copy was being sent or put in a mailbox at that moment: it may still arrive.
    #[serde(default)]
    pub in_flight: bool,
    /// The message, now `cancelled`.
    pub message: Message,
}

/// The answer to `DELETE /v1/outbox?to={contact}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAllResponse {
    /// The recipient's node id.
    pub to: String,
    /// The ids of the messages cancelled, oldest first (none if nothing was waiting).
    pub cancelled: Vec<String>,
    /// Those of them a copy of which was being sent or put in a mailbox at that moment: they
    /// may still arrive.
    #[serde(default)]
    pub in_flight: Vec<String>,
}

/// `POST /v1/messages`. A field it does not know is refused (a misspelt `ttl_ms` must not
/// send the message with the default time to live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// A contact's name, or at least 8 hex digits of its node id.
    pub to: String,
    /// The text (UTF-8, not empty).
    pub text: String,
    /// Wait for the end-to-end receipt before answering.
    #[serde(default)]
    pub wait: bool,
    /// How long to wait, in milliseconds (default 30 000, at most [`MAX_WAIT_MS`]).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Time to live in milliseconds: without a receipt by then, the message expires (default:
    /// the node's, 7 days; at most its maximum, 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// The answer to [`SendRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    /// The message id, 32 hex digits.
    pub id: String,
    /// The recipient's node id.
    pub to: String,
    /// The message's state when answering (`delivered` once the receipt arrived).
    pub state: String,
}

/// One server-sent event of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A new message arrived (each once).
    Message {
        /// End-to-end message id.
        id: String,
        /// Sender's node id.
        from: String,
        /// Sender's contact name.
        from_name: Option<String>,
        /// Sender's clock when sent, Unix milliseconds.
        sent_at_ms: u64,
        /// The text.
        body: String,
    },
    /// The receipt for a message we sent arrived.
    Delivered {
        /// The message id.
        id: String,
        /// The recipient's node id.
        to: String,
    },
    /// A message we sent expired without a receipt.
    Expired {
        /// The message id.
        id: String,
        /// The recipient's node id.
        to: String,
    },
    /// A message we sent was cancelled before a receipt came.
    Cancelled {
        /// The message id.
        id: String,
        /// The recipient's node id.
        to: String,
    },
    /// A message was put in the outbox (`POST /v1/messages`, by this client or another): the
    /// history has it, `queued`.
    Queued {
        /// The message id.
        id: String,
        /// The recipient's node id.
        to: String,
    },
    /// A message we sent is held in its recipient's mailbox by another node, or was fetched from
    /// it already (its recipient is out of reach).
    Held {
        /// The message id.
        id: String,
        /// The recipient's node id.
        to: String,
    },
    /// This subscriber fell behind and missed `missed` events; read the history to catch up.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
    /// An event of a kind this client does not know (from a newer node); skip it.
    #[serde(other)]
    Other,
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn an_event_of_a_newer_kind_is_skipped_not_an_error() {
        let known: Event =
            serde_json::from_str(r#"{"type": "cancelled", "id": "ab", "to": "cd"}"#).unwrap();
        assert_eq!(
            known,
            Event::Cancelled {
                id: "ab".into(),
                to: "cd".into()
            }
        );
        let newer: Event =
            serde_json::from_str(r#"{"type": "recalled", "id": "ab", "extra": [1]}"#).unwrap();
        assert_eq!(newer, Event::Other);
        assert!(serde_json::from_str::<Event>(r#"{"id": "ab"}"#).is_err());
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`unknown_contact`, `unknown_message`, `not_waiting`,
    /// `bad_request`, `too_large`, `name_taken`, `already_contact`, `contacts_full`, `busy`,
    /// `shutting_down`, `internal`, `not_found`, `method_not_allowed`).
    pub code: String,
    /// A sentence for a person.
    pub error: String,
}
