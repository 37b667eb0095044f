//! The DHT's messages on the wire: [`Request`] and [`Response`] to and from the protobuf
//! `DhtRequest` and `DhtResponse` of `dp2ptcs-wire` (PROTOCOL.md section 10.3).
//!
//! The wire crate checks the shape (id lengths, at most [`K`] contacts, record length, addresses,
//! exactly one body); this module checks the meaning: a record kind must be known, and record
//! bytes must be a valid record, signature included ([`Record::from_bytes`]), and mailbox items
//! and delete requests must verify ([`MailboxItem::from_bytes`], [`MailboxDelete::from_bytes`]).
//! A value decoded here can be handed to [`Dht`](crate::Dht) as is.
//!
//! An IPv6 contact address loses its flow label and scope id on the wire.

use dp2ptcs_types::NodeId;
use dp2ptcs_wire::{
    DecodeError, DhtRequest, DhtRequestBody, DhtResponse, DhtResponseBody, WireErrorCode,
};

use crate::contact::Contact;
use crate::kbucket::K;
use crate::mailbox::{MailboxDelete, MailboxError, MailboxItem};
use crate::message::{Request, RequestId, Response};
use crate::record::{Record, RecordError, RecordKey, RecordKind};

/// Why a DHT message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The protobuf is malformed or breaks a bound of the wire format.
    #[error("DHT message: {0}")]
    Wire(#[from] DecodeError),
    /// The record carried is malformed or forged.
    #[error("DHT record: {0}")]
    Record(#[from] RecordError),
    /// A `FIND_VALUE` names a record kind this node does not know.
    #[error("unknown record kind {0}")]
    UnknownRecordKind(u8),
    /// A `NODES` answer carries more than [`K`] contacts.
    #[error("{0} contacts, at most {K}")]
    TooManyContacts(usize),
    /// A mailbox item or delete request is malformed or forged.
    #[error("mailbox: {0}")]
    Mailbox(#[from] MailboxError),
}

impl CodecError {
    /// The code with which the stream is closed when a peer sends this.
    pub fn wire_code(&self) -> WireErrorCode {
        match self {
            Self::Wire(e) => e.wire_code(),
            Self::UnknownRecordKind(_) => WireErrorCode::UnknownType,
            Self::Record(RecordError::BadSignature) | Self::Mailbox(MailboxError::BadSignature) => {
                WireErrorCode::AuthenticationFailed
            }
            Self::Record(_) | Self::TooManyContacts(_) | Self::Mailbox(_) => {
                WireErrorCode::MalformedFrame
            }
        }
    }
}

/// The protobuf encoding of request `id`.
pub fn encode_request(id: RequestId, request: &Request) -> Result<Vec<u8>, CodecError> {
    let body = match request {
        Request::Ping => DhtRequestBody::Ping,
        Request::FindNode { target } => DhtRequestBody::FindNode(*target),
        Request::FindValue { key } => DhtRequestBody::FindValue {
            owner: key.owner,
            kind: key.kind.code(),
        },
        Request::Store { record } => DhtRequestBody::Store(record.to_bytes()),
        Request::MailboxPut { item } => DhtRequestBody::MailboxPut(item.to_bytes()),
        Request::MailboxFetch { limit_bytes, after } => DhtRequestBody::MailboxFetch {
            limit_bytes: *limit_bytes,
            after: *after,
        },
        Request::MailboxDelete { request } => DhtRequestBody::MailboxDelete(request.to_bytes()),
    };
    Ok(DhtRequest {
        request_id: id.0,
        body,
    }
    .encode()?)
}

/// Decodes and validates a request; a stored record, a mailbox item and a delete request are
/// verified in full.
pub fn decode_request(bytes: &[u8]) -> Result<(RequestId, Request), CodecError> {
    let m = DhtRequest::decode(bytes)?;
    let request = match m.body {
        DhtRequestBody::Ping => Request::Ping,
        DhtRequestBody::FindNode(target) => Request::FindNode { target },
        DhtRequestBody::FindValue { owner, kind } => Request::FindValue {
            key: RecordKey {
                owner,
                kind: RecordKind::from_code(kind).ok_or(CodecError::UnknownRecordKind(kind))?,
            },
        },
        DhtRequestBody::Store(bytes) => Request::Store {
            record: Box::new(Record::from_bytes(&bytes)?),
        },
        DhtRequestBody::MailboxPut(bytes) => Request::MailboxPut {
            item: Box::new(MailboxItem::from_bytes(&bytes)?),
        },
        DhtRequestBody::MailboxFetch { limit_bytes, after } => {
            Request::MailboxFetch { limit_bytes, after }
        }
        DhtRequestBody::MailboxDelete(bytes) => Request::MailboxDelete {
            request: Box::new(MailboxDelete::from_bytes(&bytes)?),
        },
    };
    Ok((RequestId(m.request_id), request))
}

/// The protobuf encoding of the response to request `id`. Fails if it lists more than [`K`]
/// contacts, or mailbox items beyond the bounds of one answer.
pub fn encode_response(id: RequestId, response: &Response) -> Result<Vec<u8>, CodecError> {
    let body = match response {
        Response::Pong => DhtResponseBody::Pong,
        Response::Nodes { closer } => {
            if closer.len() > K {
                return Err(CodecError::TooManyContacts(closer.len()));
            }
            DhtResponseBody::Nodes(closer.iter().map(|c| (c.id, c.addr)).collect())
        }
        Response::Value { record } => DhtResponseBody::Value(record.to_bytes()),
        Response::Stored { accepted } => DhtResponseBody::Stored(*accepted),
        Response::MailboxStored { accepted, reason } => DhtResponseBody::MailboxStored {
            accepted: *accepted,
            reason: *reason,
        },
        Response::MailboxItems { items, more } => DhtResponseBody::MailboxItems {
            items: items.iter().map(MailboxItem::to_bytes).collect(),
            more: *more,
        },
        Response::MailboxDeleted { removed } => DhtResponseBody::MailboxDeleted(*removed),
    };
    Ok(DhtResponse {
        request_id: id.0,
        body,
    }
    .encode()?)
}

/// Decodes and validates a response: at most [`K`] contacts, a record and mailbox items verified
/// in full.
pub fn decode_response(bytes: &[u8]) -> Result<(RequestId, Response), CodecError> {
    let m = DhtResponse::decode(bytes)?;
    let response = match m.body {
        DhtResponseBody::Pong => Response::Pong,
        DhtResponseBody::Nodes(contacts) => {
            if contacts.len() > K {
                return Err(CodecError::TooManyContacts(contacts.len()));
            }
            Response::Nodes {
                closer: contacts
                    .into_iter()
                    .map(|(id, addr): (NodeId, _)| Contact::new(id, addr))
                    .collect(),
            }
        }
        DhtResponseBody::Value(bytes) => Response::Value {
            record: Box::new(Record::from_bytes(&bytes)?),
        },
        DhtResponseBody::Stored(accepted) => Response::Stored { accepted },
        DhtResponseBody::MailboxStored { accepted, reason } => {
            Response::MailboxStored { accepted, reason }
        }
        DhtResponseBody::MailboxItems { items, more } => Response::MailboxItems {
            items: items
                .iter()
                .map(|b| MailboxItem::from_bytes(b))
                .collect::<Result<_, _>>()?,
            more,
        },
        DhtResponseBody::MailboxDeleted(removed) => Response::MailboxDeleted { removed },
    };
    Ok((RequestId(m.request_id), response))
}

#[cfg(test)]
mod tests;
