//! The DHT's messages (PROTOCOL.md section 10.3), validated.
//!
//! [`DhtHello`] opens a DHT connection in each direction; then every request stream carries one
//! [`DhtRequest`] and its [`DhtResponse`]. This module checks the shape of each message: ids are
//! exactly 32 bytes, a `NODES` answer carries at most
//! [`MAX_DHT_CONTACTS`](dp2ptcs_types::limits::MAX_DHT_CONTACTS) contacts, record bytes are at
//! most [`MAX_DHT_RECORD_LEN`](dp2ptcs_types::limits::MAX_DHT_RECORD_LEN), an address is 4 or 16
//! IP bytes and a port at most 65535, and exactly one body is set. Mailbox messages (PROTOCOL.md
//! section 11.4) are bounded the same way: an item at most
//! [`MAX_MAILBOX_ITEM_LEN`](dp2ptcs_types::limits::MAX_MAILBOX_ITEM_LEN) bytes, a delete request
//! at most [`MAX_MAILBOX_DELETE_LEN`](dp2ptcs_types::limits::MAX_MAILBOX_DELETE_LEN), and a
//! `MAILBOX_ITEMS` answer at most
//! [`MAX_MAILBOX_FETCH_ITEMS`](dp2ptcs_types::limits::MAX_MAILBOX_FETCH_ITEMS) items of
//! [`MAX_MAILBOX_FETCH_BYTES`](dp2ptcs_types::limits::MAX_MAILBOX_FETCH_BYTES) in all, so that it
//! fits one frame. What a record's, item's or delete request's bytes mean (and whether their
//! signatures verify) is the DHT crate's business: here they are opaque.
//!
//! Unknown fields are skipped, as in every other message of this crate, so that later versions
//! may add optional fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dp2ptcs_types::limits::{
    MAX_DHT_CONTACTS, MAX_DHT_RECORD_LEN, MAX_MAILBOX_DELETE_LEN, MAX_MAILBOX_FETCH_BYTES,
    MAX_MAILBOX_FETCH_ITEMS, MAX_MAILBOX_ITEM_LEN,
};
use dp2ptcs_types::{MessageId, NodeId};
use prost::Message as _;

use crate::message::{bounded, decode_proto, fixed, DecodeError};
use crate::proto;
use crate::proto::dht_request::Body as RequestBodyProto;
use crate::proto::dht_response::Body as ResponseBodyProto;

/// The first frame each way on a DHT connection: the sender's identity key and a signature
/// (what it covers is the transport's binding, PROTOCOL.md section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtHello {
    /// The sender's Ed25519 public key.
    pub identity_key: [u8; 32],
    /// The sender's Ed25519 signature.
    pub signature: [u8; 64],
}

impl DhtHello {
    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        proto::DhtHello {
            identity_key: self.identity_key.to_vec(),
            signature: self.signature.to_vec(),
        }
        .encode_to_vec()
    }

    /// Decodes and validates a DHT hello.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: proto::DhtHello = decode_proto(bytes)?;
        Ok(Self {
            identity_key: fixed::<32>("identity_key", &m.identity_key)?,
            signature: fixed::<64>("signature", &m.signature)?,
        })
    }
}

/// A DHT request with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtRequest {
    /// Unique per sender; the response echoes it.
    pub request_id: u64,
    /// What is asked.
    pub body: DhtRequestBody,
}

/// What a [`DhtRequest`] asks.
///
/// Not `#[non_exhaustive]`: the set of RPCs is fixed by the protocol version, and the DHT's codec
/// must map every one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtRequestBody {
    /// `PING`.
    Ping,
    /// `FIND_NODE(target)`.
    FindNode(NodeId),
    /// `FIND_VALUE(owner, kind)`: the record of kind `kind` (PROTOCOL.md section 10.2) owned by
    /// the node `owner`.
    FindValue {
        /// The owner's node id.
        owner: NodeId,
        /// The record kind byte.
        kind: u8,
    },
    /// `STORE(record)`: the signed record bytes of PROTOCOL.md section 10.2, at most
    /// [`MAX_DHT_RECORD_LEN`] bytes.
    Store(Vec<u8>),
    /// `MAILBOX_PUT(item)`: the signed item bytes of PROTOCOL.md section 11.2, at most
    /// [`MAX_MAILBOX_ITEM_LEN`] bytes.
    MailboxPut(Vec<u8>),
    /// `MAILBOX_FETCH(limit_bytes, after)`: the requester's own mailbox items.
    MailboxFetch {
        /// Most item bytes wanted in the answer.
        limit_bytes: u32,
        /// Continue after this message id (the last of the previous answer); `None`: from the
        /// start.
        after: Option<MessageId>,
    },
    /// `MAILBOX_DELETE(delete)`: the signed delete request bytes of PROTOCOL.md section 11.3, at
    /// most [`MAX_MAILBOX_DELETE_LEN`] bytes.
    MailboxDelete(Vec<u8>),
}

impl DhtRequest {
    /// The protobuf encoding. Fails if a stored record, item or delete request is longer than
    /// its maximum.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let body = match &self.body {
            DhtRequestBody::Ping => RequestBodyProto::Ping(proto::DhtPing {}),
            DhtRequestBody::FindNode(target) => RequestBodyProto::FindNode(proto::DhtFindNode {
                target: target.as_bytes().to_vec(),
            }),
            DhtRequestBody::FindValue { owner, kind } => {
                RequestBodyProto::FindValue(proto::DhtFindValue {
                    owner: owner.as_bytes().to_vec(),
                    kind: u32::from(*kind),
                })
            }
            DhtRequestBody::Store(record) => {
                bounded("record", record.len(), MAX_DHT_RECORD_LEN)?;
                RequestBodyProto::Store(proto::DhtStore {
                    record: record.clone(),
                })
            }
            DhtRequestBody::MailboxPut(item) => {
                bounded("item", item.len(), MAX_MAILBOX_ITEM_LEN)?;
                RequestBodyProto::MailboxPut(proto::DhtMailboxPut { item: item.clone() })
            }
            DhtRequestBody::MailboxFetch { limit_bytes, after } => {
                RequestBodyProto::MailboxFetch(proto::DhtMailboxFetch {
                    limit_bytes: *limit_bytes,
                    after: after.map(|id| id.as_bytes().to_vec()).unwrap_or_default(),
                })
            }
            DhtRequestBody::MailboxDelete(delete) => {
                bounded("delete", delete.len(), MAX_MAILBOX_DELETE_LEN)?;
                RequestBodyProto::MailboxDelete(proto::DhtMailboxDelete {
                    delete: delete.clone(),
                })
            }
        };
        Ok(proto::DhtRequest {
            request_id: self.request_id,
            body: Some(body),
        }
        .encode_to_vec())
    }

    /// Decodes and validates a request; a request without a body is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: proto::DhtRequest = decode_proto(bytes)?;
        let body = match m.body.ok_or(DecodeError::MissingField("body"))? {
            RequestBodyProto::Ping(proto::DhtPing {}) => DhtRequestBody::Ping,
            RequestBodyProto::FindNode(f) => {
                DhtRequestBody::FindNode(node_id("target", &f.target)?)
            }
            RequestBodyProto::FindValue(f) => DhtRequestBody::FindValue {
                owner: node_id("owner", &f.owner)?,
                kind: u8::try_from(f.kind).map_err(|_| DecodeError::OutOfRange {
                    field: "kind",
                    actual: u64::from(f.kind),
                    max: u64::from(u8::MAX),
                })?,
            },
            RequestBodyProto::Store(s) => {
                bounded("record", s.record.len(), MAX_DHT_RECORD_LEN)?;
                DhtRequestBody::Store(s.record)
            }
            RequestBodyProto::MailboxPut(p) => {
                bounded("item", p.item.len(), MAX_MAILBOX_ITEM_LEN)?;
                DhtRequestBody::MailboxPut(p.item)
            }
            RequestBodyProto::MailboxFetch(f) => DhtRequestBody::MailboxFetch {
                limit_bytes: f.limit_bytes,
                after: if f.after.is_empty() {
                    None
                } else {
                    Some(MessageId::from_bytes(fixed::<16>("after", &f.after)?))
                },
            },
            RequestBodyProto::MailboxDelete(d) => {
                bounded("delete", d.delete.len(), MAX_MAILBOX_DELETE_LEN)?;
                DhtRequestBody::MailboxDelete(d.delete)
            }
        };
        Ok(Self {
            request_id: m.request_id,
            body,
        })
    }
}

/// A DHT response with the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtResponse {
    /// The request's id.
    pub request_id: u64,
    /// The answer.
    pub body: DhtResponseBody,
}

/// What a [`DhtResponse`] answers.
///
/// Not `#[non_exhaustive]`, for the same reason as [`DhtRequestBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtResponseBody {
    /// `PONG`.
    Pong,
    /// `NODES`: at most [`MAX_DHT_CONTACTS`] contacts, closest to the target first. An IPv6
    /// address's flow label and scope id are not carried.
    Nodes(Vec<(NodeId, SocketAddr)>),
    /// `VALUE(record)`: signed record bytes, at most [`MAX_DHT_RECORD_LEN`].
    Value(Vec<u8>),
    /// `STORED(accepted)`.
    Stored(bool),
    /// `MAILBOX_STORED(accepted, reason)`: `reason` says why not (PROTOCOL.md section 11.4), 0
    /// when accepted.
    MailboxStored {
        /// Stored, or already held.
        accepted: bool,
        /// The refusal code.
        reason: u32,
    },
    /// `MAILBOX_ITEMS(items, more)`: signed item bytes, at most [`MAX_MAILBOX_FETCH_ITEMS`] of at
    /// most [`MAX_MAILBOX_ITEM_LEN`] bytes each and [`MAX_MAILBOX_FETCH_BYTES`] in all.
    MailboxItems {
        /// The items, oldest first.
        items: Vec<Vec<u8>>,
        /// Whether more are held after the last.
        more: bool,
    },
    /// `MAILBOX_DELETED(removed)`: how many items the delete request removed.
    MailboxDeleted(u32),
}

impl DhtResponse {
    /// The protobuf encoding. Fails if there are more than [`MAX_DHT_CONTACTS`] contacts, the
    /// record is longer than [`MAX_DHT_RECORD_LEN`], or the mailbox items break their bounds.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let body = match &self.body {
            DhtResponseBody::Pong => ResponseBodyProto::Pong(proto::DhtPong {}),
            DhtResponseBody::Nodes(contacts) => {
                bounded("contacts", contacts.len(), MAX_DHT_CONTACTS)?;
                ResponseBodyProto::Nodes(proto::DhtNodes {
                    contacts: contacts
                        .iter()
                        .map(|(id, addr)| contact_to_proto(id, addr))
                        .collect(),
                })
            }
            DhtResponseBody::Value(record) => {
                bounded("record", record.len(), MAX_DHT_RECORD_LEN)?;
                ResponseBodyProto::Value(proto::DhtValue {
                    record: record.clone(),
                })
            }
            DhtResponseBody::Stored(accepted) => ResponseBodyProto::Stored(proto::DhtStored {
                accepted: *accepted,
            }),
            DhtResponseBody::MailboxStored { accepted, reason } => {
                ResponseBodyProto::MailboxStored(proto::DhtMailboxStored {
                    accepted: *accepted,
                    reason: *reason,
                })
            }
            DhtResponseBody::MailboxItems { items, more } => {
                check_items(items)?;
                ResponseBodyProto::MailboxItems(proto::DhtMailboxItems {
                    items: items.clone(),
                    more: *more,
                })
            }
            DhtResponseBody::MailboxDeleted(removed) => {
                ResponseBodyProto::MailboxDeleted(proto::DhtMailboxDeleted { removed: *removed })
            }
        };
        Ok(proto::DhtResponse {
            request_id: self.request_id,
            body: Some(body),
        }
        .encode_to_vec())
    }

    /// Decodes and validates a response; a response without a body is refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: proto::DhtResponse = decode_proto(bytes)?;
        let body = match m.body.ok_or(DecodeError::MissingField("body"))? {
            ResponseBodyProto::Pong(proto::DhtPong {}) => DhtResponseBody::Pong,
            ResponseBodyProto::Nodes(n) => {
                bounded("contacts", n.contacts.len(), MAX_DHT_CONTACTS)?;
                DhtResponseBody::Nodes(
                    n.contacts
                        .iter()
                        .map(contact_from_proto)
                        .collect::<Result<_, _>>()?,
                )
            }
            ResponseBodyProto::Value(v) => {
                bounded("record", v.record.len(), MAX_DHT_RECORD_LEN)?;
                DhtResponseBody::Value(v.record)
            }
            ResponseBodyProto::Stored(s) => DhtResponseBody::Stored(s.accepted),
            ResponseBodyProto::MailboxStored(s) => DhtResponseBody::MailboxStored {
                accepted: s.accepted,
                reason: s.reason,
            },
            ResponseBodyProto::MailboxItems(m) => {
                check_items(&m.items)?;
                DhtResponseBody::MailboxItems {
                    items: m.items,
                    more: m.more,
                }
            }
            ResponseBodyProto::MailboxDeleted(d) => DhtResponseBody::MailboxDeleted(d.removed),
        };
        Ok(Self {
            request_id: m.request_id,
            body,
        })
    }
}

/// The bounds of a `MAILBOX_ITEMS` answer: count, each item, and the total.
fn check_items(items: &[Vec<u8>]) -> Result<(), DecodeError> {
    bounded("items", items.len(), MAX_MAILBOX_FETCH_ITEMS)?;
    let mut total = 0usize;
    for item in items {
        bounded("item", item.len(), MAX_MAILBOX_ITEM_LEN)?;
        total = total.saturating_add(item.len());
    }
    bounded("items bytes", total, MAX_MAILBOX_FETCH_BYTES)
}

fn node_id(field: &'static str, bytes: &[u8]) -> Result<NodeId, DecodeError> {
    fixed::<32>(field, bytes).map(NodeId::from_bytes)
}

fn contact_to_proto(id: &NodeId, addr: &SocketAddr) -> proto::DhtContact {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    proto::DhtContact {
        node_id: id.as_bytes().to_vec(),
        ip,
        port: u32::from(addr.port()),
    }
}

fn contact_from_proto(c: &proto::DhtContact) -> Result<(NodeId, SocketAddr), DecodeError> {
    let id = node_id("node_id", &c.node_id)?;
    let ip = match c.ip.len() {
        4 => IpAddr::V4(Ipv4Addr::from(fixed::<4>("ip", &c.ip)?)),
        16 => IpAddr::V6(Ipv6Addr::from(fixed::<16>("ip", &c.ip)?)),
        other => return Err(DecodeError::IpLength(other)),
    };
    let port = u16::try_from(c.port).map_err(|_| DecodeError::OutOfRange {
        field: "port",
        actual: u64::from(c.port),
        max: u64::from(u16::MAX),
    })?;
    Ok((id, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contacts(n: usize) -> Vec<(NodeId, SocketAddr)> {
        (0..n)
            .map(|i| {
                let addr = if i % 2 == 0 {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8)), 4433)
                } else {
                    SocketAddr::new(
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                        1,
                    )
                };
                (NodeId::from_bytes([i as u8; 32]), addr)
            })
            .collect()
    }

    #[test]
    fn hello_round_trip_and_lengths() {
        let hello = DhtHello {
            identity_key: [1; 32],
            signature: [2; 64],
        };
        assert_eq!(DhtHello::decode(&hello.encode()).unwrap(), hello);
        let short = proto::DhtHello {
            identity_key: vec![1; 32],
            signature: vec![2; 63],
        };
        assert_eq!(
            DhtHello::decode(&short.encode_to_vec()),
            Err(DecodeError::FieldLength {
                field: "signature",
                actual: 63,
                expected: 64
            })
        );
        assert!(matches!(
            DhtHello::decode(&[]),
            Err(DecodeError::FieldLength {
                field: "identity_key",
                ..
            })
        ));
    }

    #[test]
    fn requests_round_trip() {
        let bodies = [
            DhtRequestBody::Ping,
            DhtRequestBody::FindNode(NodeId::from_bytes([3; 32])),
            DhtRequestBody::FindValue {
                owner: NodeId::from_bytes([4; 32]),
                kind: 2,
            },
            DhtRequestBody::Store(vec![5; MAX_DHT_RECORD_LEN]),
            DhtRequestBody::Store(Vec::new()),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            let r = DhtRequest {
                request_id: u64::MAX - i as u64,
                body,
            };
            assert_eq!(DhtRequest::decode(&r.encode().unwrap()).unwrap(), r);
        }
    }

    /// Pins the layout of PROTOCOL.md section 10.3: field 1 the id, the body a nested message.
    #[test]
    fn request_exact_bytes() {
        let r = DhtRequest {
            request_id: 1,
            body: DhtRequestBody::Ping,
        };
        assert_eq!(r.encode().unwrap(), [0x08, 0x01, 0x12, 0x00]);
        let r = DhtRequest {
            request_id: 0,
            body: DhtRequestBody::FindValue {
                owner: NodeId::from_bytes([0xaa; 32]),
                kind: 1,
            },
        };
        let bytes = r.encode().unwrap();
        // Field 4 (find_value), 36 bytes: field 1 (owner, 32 bytes), field 2 (kind = 1).
        assert_eq!(&bytes[..4], &[0x22, 36, 0x0a, 32]);
        assert_eq!(&bytes[36..], &[0x10, 0x01]);
    }

    #[test]
    fn request_validation() {
        assert_eq!(
            DhtRequest::decode(&[0x08, 0x07]),
            Err(DecodeError::MissingField("body"))
        );
        let m = proto::DhtRequest {
            request_id: 1,
            body: Some(RequestBodyProto::FindNode(proto::DhtFindNode {
                target: vec![0; 33],
            })),
        };
        assert_eq!(
            DhtRequest::decode(&m.encode_to_vec()),
            Err(DecodeError::FieldLength {
                field: "target",
                actual: 33,
                expected: 32
            })
        );
        let m = proto::DhtRequest {
            request_id: 1,
            body: Some(RequestBodyProto::FindValue(proto::DhtFindValue {
                owner: vec![0; 32],
                kind: 256,
            })),
        };
        assert_eq!(
            DhtRequest::decode(&m.encode_to_vec()),
            Err(DecodeError::OutOfRange {
                field: "kind",
                actual: 256,
                max: 255
            })
        );
        let m = proto::DhtRequest {
            request_id: 1,
            body: Some(RequestBodyProto::Store(proto::DhtStore {
                record: vec![0; MAX_DHT_RECORD_LEN + 1],
            })),
        };
        let too_long = DecodeError::TooLong {
            field: "record",
            actual: MAX_DHT_RECORD_LEN + 1,
            max: MAX_DHT_RECORD_LEN,
        };
        assert_eq!(
            DhtRequest::decode(&m.encode_to_vec()),
            Err(too_long.clone())
        );
        let r = DhtRequest {
            request_id: 1,
            body: DhtRequestBody::Store(vec![0; MAX_DHT_RECORD_LEN + 1]),
        };
        assert_eq!(r.encode(), Err(too_long));
    }

    #[test]
    fn responses_round_trip() {
        let bodies = [
            DhtResponseBody::Pong,
            DhtResponseBody::Nodes(Vec::new()),
            DhtResponseBody::Nodes(contacts(MAX_DHT_CONTACTS)),
            DhtResponseBody::Value(vec![6; 100]),
            DhtResponseBody::Stored(true),
            DhtResponseBody::Stored(false),
        ];
        for body in bodies {
            let r = DhtResponse {
                request_id: 42,
                body,
            };
            assert_eq!(DhtResponse::decode(&r.encode().unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn response_validation() {
        assert_eq!(
            DhtResponse::decode(&[]),
            Err(DecodeError::MissingField("body"))
        );
        let r = DhtResponse {
            request_id: 1,
            body: DhtResponseBody::Nodes(contacts(MAX_DHT_CONTACTS + 1)),
        };
        let too_many = DecodeError::TooLong {
            field: "contacts",
            actual: MAX_DHT_CONTACTS + 1,
            max: MAX_DHT_CONTACTS,
        };
        assert_eq!(r.encode(), Err(too_many.clone()));
        let nodes = |c: proto::DhtContact| proto::DhtResponse {
            request_id: 1,
            body: Some(ResponseBodyProto::Nodes(proto::DhtNodes {
                contacts: vec![c],
            })),
        };
        let good = proto::DhtContact {
            node_id: vec![1; 32],
            ip: vec![192, 0, 2, 1],
            port: 65535,
        };
        assert!(DhtResponse::decode(&nodes(good.clone()).encode_to_vec()).is_ok());
        let mut m = nodes(good.clone());
        if let Some(ResponseBodyProto::Nodes(n)) = &mut m.body {
            n.contacts = vec![good.clone(); MAX_DHT_CONTACTS + 1];
        }
        assert_eq!(DhtResponse::decode(&m.encode_to_vec()), Err(too_many));
        for (ip_len, want) in [
            (0, DecodeError::IpLength(0)),
            (5, DecodeError::IpLength(5)),
            (15, DecodeError::IpLength(15)),
        ] {
            let c = proto::DhtContact {
                ip: vec![1; ip_len],
                ..good.clone()
            };
            assert_eq!(DhtResponse::decode(&nodes(c).encode_to_vec()), Err(want));
        }
        let c = proto::DhtContact {
            port: 65536,
            ..good.clone()
        };
        assert_eq!(
            DhtResponse::decode(&nodes(c).encode_to_vec()),
            Err(DecodeError::OutOfRange {
                field: "port",
                actual: 65536,
                max: 65535
            })
        );
        let c = proto::DhtContact {
            node_id: vec![1; 31],
            ..good
        };
        assert!(matches!(
            DhtResponse::decode(&nodes(c).encode_to_vec()),
            Err(DecodeError::FieldLength {
                field: "node_id",
                ..
            })
        ));
        let m = proto::DhtResponse {
            request_id: 1,
            body: Some(ResponseBodyProto::Value(proto::DhtValue {
                record: vec![0; MAX_DHT_RECORD_LEN + 1],
            })),
        };
        assert!(matches!(
            DhtResponse::decode(&m.encode_to_vec()),
            Err(DecodeError::TooLong {
                field: "record",
                ..
            })
        ));
    }

    #[test]
    fn mailbox_messages_round_trip_at_their_bounds() {
        let requests = [
            DhtRequestBody::MailboxPut(vec![1; MAX_MAILBOX_ITEM_LEN]),
            DhtRequestBody::MailboxFetch {
                limit_bytes: u32::MAX,
                after: None,
            },
            DhtRequestBody::MailboxFetch {
                limit_bytes: 0,
                after: Some(MessageId::from_bytes([9; 16])),
            },
            DhtRequestBody::MailboxDelete(vec![2; MAX_MAILBOX_DELETE_LEN]),
        ];
        for body in requests {
            let r = DhtRequest {
                request_id: u64::MAX,
                body,
            };
            let bytes = r.encode().unwrap();
            assert!(bytes.len() <= crate::MAX_FRAME_LEN);
            assert_eq!(DhtRequest::decode(&bytes).unwrap(), r);
        }
        // The fullest MAILBOX_ITEMS answers fit one frame: by bytes, and by count.
        let by_bytes = vec![
            vec![3; MAX_MAILBOX_ITEM_LEN],
            vec![4; MAX_MAILBOX_FETCH_BYTES - MAX_MAILBOX_ITEM_LEN],
        ];
        let each = MAX_MAILBOX_FETCH_BYTES / MAX_MAILBOX_FETCH_ITEMS;
        let by_count = vec![vec![5; each]; MAX_MAILBOX_FETCH_ITEMS];
        for items in [by_bytes, by_count, Vec::new()] {
            let r = DhtResponse {
                request_id: u64::MAX,
                body: DhtResponseBody::MailboxItems { items, more: true },
            };
            let bytes = r.encode().unwrap();
            assert!(bytes.len() <= crate::MAX_FRAME_LEN, "{}", bytes.len());
            assert_eq!(DhtResponse::decode(&bytes).unwrap(), r);
        }
        for body in [
            DhtResponseBody::MailboxStored {
                accepted: false,
                reason: 5,
            },
            DhtResponseBody::MailboxDeleted(256),
        ] {
            let r = DhtResponse {
                request_id: 3,
                body,
            };
            assert_eq!(DhtResponse::decode(&r.encode().unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn mailbox_bounds_are_enforced_both_ways() {
        let put = |item: Vec<u8>| proto::DhtRequest {
            request_id: 1,
            body: Some(RequestBodyProto::MailboxPut(proto::DhtMailboxPut { item })),
        };
        let too_long = DecodeError::TooLong {
            field: "item",
            actual: MAX_MAILBOX_ITEM_LEN + 1,
            max: MAX_MAILBOX_ITEM_LEN,
        };
        assert_eq!(
            DhtRequest::decode(&put(vec![0; MAX_MAILBOX_ITEM_LEN + 1]).encode_to_vec()),
            Err(too_long.clone())
        );
        let r = DhtRequest {
            request_id: 1,
            body: DhtRequestBody::MailboxPut(vec![0; MAX_MAILBOX_ITEM_LEN + 1]),
        };
        assert_eq!(r.encode(), Err(too_long));
        let del = proto::DhtRequest {
            request_id: 1,
            body: Some(RequestBodyProto::MailboxDelete(proto::DhtMailboxDelete {
                delete: vec![0; MAX_MAILBOX_DELETE_LEN + 1],
            })),
        };
        assert!(matches!(
            DhtRequest::decode(&del.encode_to_vec()),
            Err(DecodeError::TooLong {
                field: "delete",
                ..
            })
        ));
        let fetch = proto::DhtRequest {
            request_id: 1,
            body: Some(RequestBodyProto::MailboxFetch(proto::DhtMailboxFetch {
                limit_bytes: 1,
                after: vec![0; 15],
            })),
        };
        assert_eq!(
            DhtRequest::decode(&fetch.encode_to_vec()),
            Err(DecodeError::FieldLength {
                field: "after",
                actual: 15,
                expected: 16
            })
        );
        let items = |items: Vec<Vec<u8>>| proto::DhtResponse {
            request_id: 1,
            body: Some(ResponseBodyProto::MailboxItems(proto::DhtMailboxItems {
                items,
                more: false,
            })),
        };
        let over = [
            (vec![vec![0; MAX_MAILBOX_ITEM_LEN + 1]], "item"),
            (vec![Vec::new(); MAX_MAILBOX_FETCH_ITEMS + 1], "items"),
            (
                vec![vec![0; MAX_MAILBOX_ITEM_LEN], vec![0; MAX_MAILBOX_ITEM_LEN]],
                "items bytes",
            ),
        ];
        for (list, field) in over {
            let m = items(list.clone());
            match DhtResponse::decode(&m.encode_to_vec()) {
                Err(DecodeError::TooLong { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
            let r = DhtResponse {
                request_id: 1,
                body: DhtResponseBody::MailboxItems {
                    items: list,
                    more: false,
                },
            };
            assert!(r.encode().is_err(), "{field}");
        }
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = DhtRequest {
            request_id: 9,
            body: DhtRequestBody::Ping,
        }
        .encode()
        .unwrap();
        // Field 15, varint 1: a field a later version might add.
        bytes.extend_from_slice(&[0x78, 0x01]);
        assert_eq!(
            DhtRequest::decode(&bytes).unwrap().body,
            DhtRequestBody::Ping
        );
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
        ]
    }

    fn request_body() -> impl Strategy<Value = DhtRequestBody> {
        prop_oneof![
            Just(DhtRequestBody::Ping),
            any::<[u8; 32]>().prop_map(|b| DhtRequestBody::FindNode(NodeId::from_bytes(b))),
            (any::<[u8; 32]>(), any::<u8>()).prop_map(|(b, kind)| DhtRequestBody::FindValue {
                owner: NodeId::from_bytes(b),
                kind
            }),
            proptest::collection::vec(any::<u8>(), 0..=MAX_DHT_RECORD_LEN)
                .prop_map(DhtRequestBody::Store),
            proptest::collection::vec(any::<u8>(), 0..2048).prop_map(DhtRequestBody::MailboxPut),
            (any::<u32>(), proptest::option::of(any::<[u8; 16]>())).prop_map(|(limit_bytes, a)| {
                DhtRequestBody::MailboxFetch {
                    limit_bytes,
                    after: a.map(MessageId::from_bytes),
                }
            }),
            proptest::collection::vec(any::<u8>(), 0..=MAX_MAILBOX_DELETE_LEN)
                .prop_map(DhtRequestBody::MailboxDelete),
        ]
    }

    fn response_body() -> impl Strategy<Value = DhtResponseBody> {
        prop_oneof![
            Just(DhtResponseBody::Pong),
            proptest::collection::vec(
                (
                    any::<[u8; 32]>().prop_map(NodeId::from_bytes),
                    socket_addr()
                ),
                0..=MAX_DHT_CONTACTS
            )
            .prop_map(DhtResponseBody::Nodes),
            proptest::collection::vec(any::<u8>(), 0..=MAX_DHT_RECORD_LEN)
                .prop_map(DhtResponseBody::Value),
            any::<bool>().prop_map(DhtResponseBody::Stored),
            (any::<bool>(), any::<u32>())
                .prop_map(|(accepted, reason)| DhtResponseBody::MailboxStored { accepted, reason }),
            (
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..20),
                any::<bool>()
            )
                .prop_map(|(items, more)| DhtResponseBody::MailboxItems { items, more }),
            any::<u32>().prop_map(DhtResponseBody::MailboxDeleted),
        ]
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = DhtHello::decode(&bytes);
            let _ = DhtRequest::decode(&bytes);
            let _ = DhtResponse::decode(&bytes);
        }

        #[test]
        fn requests_round_trip_any(request_id in any::<u64>(), body in request_body()) {
            let r = DhtRequest { request_id, body };
            prop_assert_eq!(DhtRequest::decode(&r.encode().unwrap()).unwrap(), r);
        }

        #[test]
        fn responses_round_trip_any(request_id in any::<u64>(), body in response_body()) {
            let r = DhtResponse { request_id, body };
            prop_assert_eq!(DhtResponse::decode(&r.encode().unwrap()).unwrap(), r);
        }

        #[test]
        fn hellos_round_trip_any(key in any::<[u8; 32]>(), sig in proptest::collection::vec(any::<u8>(), 64)) {
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&sig);
            let h = DhtHello { identity_key: key, signature };
            prop_assert_eq!(DhtHello::decode(&h.encode()).unwrap(), h);
        }
    }
}
