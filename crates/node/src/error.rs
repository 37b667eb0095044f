//! The node's error type and its mapping to wire error codes.

use dp2ptcs_wire::{DecodeError, FrameError, WireErrorCode};

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Binding or socket IO failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// TLS or QUIC configuration failed.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] dp2ptcs_store::StoreError),
    /// The contact has no address to dial, or dialing failed after every attempt.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection was lost.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading or writing a stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// A frame's length prefix is invalid or too large.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame does not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A DHT message does not decode or verify.
    #[error("dht: {0}")]
    Dht(#[from] dp2ptcs_dht::CodecError),
    /// Bytes followed the one frame a stream may carry.
    #[error("junk after the frame")]
    JunkAfterFrame,
    /// The peer did not prove its identity, or a message did not authenticate.
    #[error("authentication failed: {0}")]
    Authentication(&'static str),
    /// The peer is not a contact.
    #[error("not a contact")]
    NotAContact,
    /// The peer refused with a wire error code.
    #[error("refused by peer: code {code}: {reason}")]
    Refused {
        /// The wire error code.
        code: u32,
        /// The peer's reason.
        reason: String,
    },
    /// A message's time to live is zero or above the maximum.
    #[error("a message's time to live must be above zero and at most {max:?}")]
    InvalidTtl {
        /// The longest allowed.
        max: std::time::Duration,
    },
    /// A contact to add was refused: its name is not a valid display name, or it is this node.
    #[error("invalid contact: {0}")]
    InvalidContact(String),
    /// A [`NodeConfig`](crate::NodeConfig) setting is out of its range.
    #[error("invalid node configuration: {0}")]
    InvalidConfig(String),
    /// The peer's receipt did not name the message: the peer did not record it.
    #[error("the receipt did not acknowledge the message")]
    Unacknowledged,
    /// A bound was hit.
    #[error("limit exceeded: {0}")]
    Limit(&'static str),
    /// Something took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// An internal failure (a task panicked, an encoding failed).
    #[error("internal: {0}")]
    Internal(String),
}

impl NodeError {
    /// The code with which a stream or connection is closed because of this error.
    pub fn wire_code(&self) -> WireErrorCode {
        match self {
            Self::Frame(_) | Self::JunkAfterFrame => WireErrorCode::MalformedFrame,
            Self::Dht(e) => e.wire_code(),
            Self::Decode(e) => e.wire_code(),
            Self::Authentication(_) | Self::NotAContact => WireErrorCode::AuthenticationFailed,
            Self::Limit(_) | Self::Timeout(_) => WireErrorCode::LimitExceeded,
            Self::ShuttingDown => WireErrorCode::ShuttingDown,
            Self::Refused { .. } | Self::Connection(_) | Self::Stream(_) => WireErrorCode::NoError,
            _ => WireErrorCode::Internal,
        }
    }

    /// The same error for another waiter of the operation that failed: several messages sent
    /// together fail together. Errors that cannot be copied keep their kind and text.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Io(e) => Self::Io(std::io::Error::new(e.kind(), e.to_string())),
            Self::Tls(s) => Self::Tls(s.clone()),
            Self::Store(e) => Self::Internal(format!("store: {e}")),
            Self::Connect(s) => Self::Connect(s.clone()),
            Self::Connection(e) => Self::Connection(e.clone()),
            Self::Stream(s) => Self::Stream(s.clone()),
            Self::Frame(e) => Self::Frame(e.clone()),
            Self::Decode(e) => Self::Decode(e.clone()),
            Self::Dht(e) => Self::Internal(format!("dht: {e}")),
            Self::JunkAfterFrame => Self::JunkAfterFrame,
            Self::Authentication(s) => Self::Authentication(s),
            Self::NotAContact => Self::NotAContact,
            Self::Refused { code, reason } => Self::Refused {
                code: *code,
                reason: reason.clone(),
            },
            Self::InvalidTtl { max } => Self::InvalidTtl { max: *max },
            Self::InvalidContact(s) => Self::InvalidContact(s.clone()),
            Self::InvalidConfig(s) => Self::InvalidConfig(s.clone()),
            Self::Unacknowledged => Self::Unacknowledged,
            Self::Limit(s) => Self::Limit(s),
            Self::Timeout(s) => Self::Timeout(s),
            Self::ShuttingDown => Self::ShuttingDown,
            Self::Internal(s) => Self::Internal(s.clone()),
        }
    }

    /// Whether the peer caused it (a protocol violation that closes the connection).
    pub(crate) fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::Frame(_)
                | Self::JunkAfterFrame
                | Self::Decode(_)
                | Self::Dht(_)
                | Self::Authentication(_)
                | Self::NotAContact
        )
    }
}
