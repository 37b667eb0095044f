//! Validated message types and their protobuf encodings.

use dp2ptcs_types::{MessageId, NodeId};
use prost::Message as _;

use crate::proto;

/// Largest envelope payload (ciphertext) accepted, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 60 * 1024;
/// Largest chat body, in bytes of UTF-8.
pub const MAX_CHAT_BODY_LEN: usize = 32 * 1024;
/// Most message ids one receipt may acknowledge.
pub const MAX_RECEIPT_IDS: usize = 256;
/// Most chats one [`Chats`] payload may carry.
pub const MAX_BATCH_CHATS: usize = 64;
/// Largest encoded [`Chats`] payload, in bytes: its ciphertext, with the ratchet's padding and
/// authentication tag, must stay within [`MAX_PAYLOAD_LEN`].
pub const MAX_BATCH_LEN: usize = MAX_PAYLOAD_LEN - 1024;
/// Longest error reason, in bytes.
pub const MAX_ERROR_REASON_LEN: usize = 256;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a well-formed protobuf encoding of the expected message.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A fixed-size field has the wrong length.
    #[error("{field} has {actual} bytes, expected {expected}")]
    FieldLength {
        /// The field.
        field: &'static str,
        /// Bytes found.
        actual: usize,
        /// Bytes required.
        expected: usize,
    },
    /// A bounded field is too long.
    #[error("{field} is too long ({actual}, at most {max})")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Length or count found.
        actual: usize,
        /// The bound.
        max: usize,
    },
    /// The message type is unknown or unspecified.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// Fields that must appear together do not.
    #[error("inconsistent fields: {0}")]
    Inconsistent(&'static str),
    /// A number is above its field's range.
    #[error("{field} is {actual}, at most {max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value found.
        actual: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// An IP address field is neither 4 (IPv4) nor 16 (IPv6) bytes.
    #[error("IP address has {0} bytes, expected 4 or 16")]
    IpLength(usize),
}

/// Application error codes used to close QUIC streams and connections, and in [`ErrorReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u32)]
pub enum WireErrorCode {
    /// Orderly close.
    NoError = 0,
    /// A frame could not be decoded (bad length prefix, oversize, malformed protobuf).
    MalformedFrame = 1,
    /// A message type the receiver does not know.
    UnknownType = 2,
    /// The handshake failed or a frame did not decrypt under the session.
    AuthenticationFailed = 3,
    /// A limit was exceeded (rate, streams, connections).
    LimitExceeded = 4,
    /// The node is shutting down.
    ShuttingDown = 5,
    /// An unexpected internal failure.
    Internal = 6,
}

impl WireErrorCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }
}

impl DecodeError {
    /// The code with which a stream is closed when a peer sends this.
    pub fn wire_code(&self) -> WireErrorCode {
        match self {
            DecodeError::UnknownType(_) => WireErrorCode::UnknownType,
            _ => WireErrorCode::MalformedFrame,
        }
    }
}

pub(crate) fn decode_proto<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, DecodeError> {
    M::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

pub(crate) fn fixed<const N: usize>(
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], DecodeError> {
    <[u8; N]>::try_from(bytes).map_err(|_| DecodeError::FieldLength {
        field,
        actual: bytes.len(),
        expected: N,
    })
}

pub(crate) fn bounded(field: &'static str, actual: usize, max: usize) -> Result<(), DecodeError> {
    if actual > max {
        return Err(DecodeError::TooLong { field, actual, max });
    }
    Ok(())
}

/// What an envelope's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// A [`Chat`] message.
    Chat,
    /// A [`Receipt`].
    Receipt,
    /// An [`ErrorReport`].
    Error,
    /// Proof of holding the session, first frame of a stream (empty plaintext).
    SessionProof,
    /// Several chats in one envelope: a [`Chats`] payload.
    Chats,
}

impl MessageKind {
    fn from_wire(value: i32) -> Result<Self, DecodeError> {
        match proto::MessageType::try_from(value) {
            Ok(proto::MessageType::Chat) => Ok(Self::Chat),
            Ok(proto::MessageType::Receipt) => Ok(Self::Receipt),
            Ok(proto::MessageType::Error) => Ok(Self::Error),
            Ok(proto::MessageType::SessionProof) => Ok(Self::SessionProof),
            Ok(proto::MessageType::Chats) => Ok(Self::Chats),
            Ok(proto::MessageType::Unspecified) | Err(_) => Err(DecodeError::UnknownType(value)),
        }
    }

    /// What an envelope of this kind binds to its ciphertext (`PROTOCOL.md` section 8.2): its
    /// `MessageType` number, one byte, appended to the ratchet's associated data. An envelope
    /// whose type was changed in transit then fails to decrypt.
    pub fn binding(self) -> [u8; 1] {
        // The numbers are 1 to 5.
        [self.to_wire() as u8]
    }

    fn to_wire(self) -> i32 {
        let t = match self {
            Self::Chat => proto::MessageType::Chat,
            Self::Receipt => proto::MessageType::Receipt,
            Self::Error => proto::MessageType::Error,
            Self::SessionProof => proto::MessageType::SessionProof,
            Self::Chats => proto::MessageType::Chats,
        };
        t as i32
    }
}

/// The Double Ratchet header carried in an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RatchetHeader {
    /// The sender's current ratchet public key (X25519).
    pub dh_public_key: [u8; 32],
    /// Length of the sender's previous sending chain (PN).
    pub previous_chain_length: u32,
    /// Index of this message in the current sending chain (N).
    pub message_number: u32,
}

/// The envelope (`TacticalMessage`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Who sent it.
    pub sender: NodeId,
    /// What the payload holds.
    pub kind: MessageKind,
    /// The ratchet header.
    pub header: RatchetHeader,
    /// The AEAD ciphertext of the payload.
    pub payload: Vec<u8>,
}

impl Envelope {
    fn to_proto(&self) -> proto::TacticalMessage {
        proto::TacticalMessage {
            sender_id: self.sender.as_bytes().to_vec(),
            r#type: self.kind.to_wire(),
            dh_public_key: self.header.dh_public_key.to_vec(),
            payload: self.payload.clone(),
            message_number: self.header.message_number,
            previous_chain_length: self.header.previous_chain_length,
        }
    }

    fn from_proto(m: proto::TacticalMessage) -> Result<Self, DecodeError> {
        let sender = NodeId::from_bytes(fixed::<32>("sender_id", &m.sender_id)?);
        let kind = MessageKind::from_wire(m.r#type)?;
        let dh_public_key = fixed::<32>("dh_public_key", &m.dh_public_key)?;
        bounded("payload", m.payload.len(), MAX_PAYLOAD_LEN)?;
        Ok(Self {
            sender,
            kind,
            header: RatchetHeader {
                dh_public_key,
                previous_chain_length: m.previous_chain_length,
                message_number: m.message_number,
            },
            payload: m.payload,
        })
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes and validates an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(decode_proto(bytes)?)
    }
}

/// A chat message: the plaintext payload of a [`MessageKind::Chat`] envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    /// End-to-end message id, acknowledged by a [`Receipt`].
    pub id: MessageId,
    /// The sender's clock when sent, Unix milliseconds.
    pub sent_at_ms: u64,
    /// The text.
    pub body: String,
}

impl Chat {
    /// The protobuf encoding. Fails if the body is longer than [`MAX_CHAT_BODY_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        Ok(self.to_proto()?.encode_to_vec())
    }

    /// Decodes and validates a chat payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(decode_proto(bytes)?)
    }

    fn to_proto(&self) -> Result<proto::Chat, DecodeError> {
        bounded("body", self.body.len(), MAX_CHAT_BODY_LEN)?;
        Ok(proto::Chat {
            message_id: self.id.as_bytes().to_vec(),
            sent_at_ms: self.sent_at_ms,
            body: self.body.clone(),
        })
    }

    fn from_proto(m: proto::Chat) -> Result<Self, DecodeError> {
        bounded("body", m.body.len(), MAX_CHAT_BODY_LEN)?;
        Ok(Self {
            id: MessageId::from_bytes(fixed::<16>("message_id", &m.message_id)?),
            sent_at_ms: m.sent_at_ms,
            body: m.body,
        })
    }
}

/// Several chat messages sent together: the plaintext payload of a [`MessageKind::Chats`]
/// envelope, answered by one [`Receipt`] for all of them. Two to [`MAX_BATCH_CHATS`] chats,
/// in the order they were sent, at most [`MAX_BATCH_LEN`] bytes encoded, no id twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chats {
    /// The chats, oldest first.
    pub chats: Vec<Chat>,
}

impl Chats {
    /// How many bytes `chat` adds to an encoded batch, so that a sender can fill one up to
    /// [`MAX_BATCH_LEN`] without encoding it for every chat it adds.
    pub fn entry_len(chat: &Chat) -> usize {
        use prost::encoding::encoded_len_varint as varint;
        let mut len = 2 + 16;
        if chat.sent_at_ms != 0 {
            len += 1 + varint(chat.sent_at_ms);
        }
        if !chat.body.is_empty() {
            len += 1 + varint(chat.body.len() as u64) + chat.body.len();
        }
        1 + varint(len as u64) + len
    }

    /// The protobuf encoding. Fails if the batch breaks one of its bounds.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        self.check()?;
        let m = proto::Chats {
            chats: self
                .chats
                .iter()
                .map(Chat::to_proto)
                .collect::<Result<_, _>>()?,
        };
        bounded("chats", m.encoded_len(), MAX_BATCH_LEN)?;
        Ok(m.encode_to_vec())
    }

    /// Decodes and validates a batch of chats.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        bounded("chats", bytes.len(), MAX_BATCH_LEN)?;
        let m: proto::Chats = decode_proto(bytes)?;
        bounded("chats", m.chats.len(), MAX_BATCH_CHATS)?;
        let batch = Self {
            chats: m
                .chats
                .into_iter()
                .map(Chat::from_proto)
                .collect::<Result<_, _>>()?,
        };
        batch.check()?;
        Ok(batch)
    }

    fn check(&self) -> Result<(), DecodeError> {
        bounded("chats", self.chats.len(), MAX_BATCH_CHATS)?;
        if self.chats.len() < 2 {
            return Err(DecodeError::MissingField("chats"));
        }
        let mut ids: Vec<&MessageId> = self.chats.iter().map(|c| &c.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(DecodeError::Inconsistent(
                "the same message id twice in one batch",
            ));
        }
        Ok(())
    }
}

/// An end-to-end delivery receipt for one or more messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The acknowledged message ids (1 to [`MAX_RECEIPT_IDS`]).
    pub ids: Vec<MessageId>,
}

impl Receipt {
    /// The protobuf encoding.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        bounded("message_ids", self.ids.len(), MAX_RECEIPT_IDS)?;
        Ok(proto::Receipt {
            message_ids: self.ids.iter().map(|i| i.as_bytes().to_vec()).collect(),
        }
        .encode_to_vec())
    }

    /// Decodes and validates a receipt.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: proto::Receipt = decode_proto(bytes)?;
        bounded("message_ids", m.message_ids.len(), MAX_RECEIPT_IDS)?;
        if m.message_ids.is_empty() {
            return Err(DecodeError::MissingField("message_ids"));
        }
        let ids = m
            .message_ids
            .iter()
            .map(|b| fixed::<16>("message_ids", b).map(MessageId::from_bytes))
            .collect::<Result<_, _>>()?;
        Ok(Self { ids })
    }
}

/// An application-level error report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// A [`WireErrorCode`] value (unknown codes are kept as numbers).
    pub code: u32,
    /// Human-readable reason, at most [`MAX_ERROR_REASON_LEN`] bytes.
    pub reason: String,
}

impl ErrorReport {
    /// The protobuf encoding; an over-long reason is cut at a character boundary.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    fn to_proto(&self) -> proto::ErrorReport {
        let mut reason = self.reason.clone();
        if reason.len() > MAX_ERROR_REASON_LEN {
            let mut cut = MAX_ERROR_REASON_LEN;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        proto::ErrorReport {
            code: self.code,
            reason,
        }
    }

    /// Decodes and validates an error report.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(decode_proto(bytes)?)
    }

    fn from_proto(m: proto::ErrorReport) -> Result<Self, DecodeError> {
        bounded("reason", m.reason.len(), MAX_ERROR_REASON_LEN)?;
        Ok(Self {
            code: m.code,
            reason: m.reason,
        })
    }
}

/// A signed prekey bundle as it travels (signatures are checked by the crypto layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrekeyBundle {
    /// Ed25519 identity public key.
    pub identity_key: [u8; 32],
    /// Id of the signed prekey.
    pub signed_prekey_id: u32,
    /// X25519 signed prekey.
    pub signed_prekey: [u8; 32],
    /// Ed25519 signature over the signed prekey.
    pub signed_prekey_signature: [u8; 64],
    /// Optional one-time prekey: id and X25519 public key.
    pub one_time_prekey: Option<(u32, [u8; 32])>,
}

impl PrekeyBundle {
    fn to_proto(&self) -> proto::PrekeyBundle {
        proto::PrekeyBundle {
            identity_key: self.identity_key.to_vec(),
            signed_prekey_id: self.signed_prekey_id,
            signed_prekey: self.signed_prekey.to_vec(),
            signed_prekey_signature: self.signed_prekey_signature.to_vec(),
            one_time_prekey_id: self.one_time_prekey.map(|(id, _)| id),
            one_time_prekey: self
                .one_time_prekey
                .map(|(_, k)| k.to_vec())
                .unwrap_or_default(),
        }
    }

    fn from_proto(m: proto::PrekeyBundle) -> Result<Self, DecodeError> {
        let one_time_prekey = match (m.one_time_prekey_id, m.one_time_prekey.is_empty()) {
            (None, true) => None,
            (Some(id), false) => Some((id, fixed::<32>("one_time_prekey", &m.one_time_prekey)?)),
            _ => {
                return Err(DecodeError::Inconsistent(
                    "one_time_prekey_id and one_time_prekey must be given together",
                ))
            }
        };
        Ok(Self {
            identity_key: fixed::<32>("identity_key", &m.identity_key)?,
            signed_prekey_id: m.signed_prekey_id,
            signed_prekey: fixed::<32>("signed_prekey", &m.signed_prekey)?,
            signed_prekey_signature: fixed::<64>(
                "signed_prekey_signature",
                &m.signed_prekey_signature,
            )?,
            one_time_prekey,
        })
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes and validates a bundle's structure.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(decode_proto(bytes)?)
    }
}

/// The X3DH initial message with the first ratchet message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInit {
    /// The initiator's Ed25519 identity public key.
    pub identity_key: [u8; 32],
    /// The initiator's ephemeral X25519 public key.
    pub ephemeral_key: [u8; 32],
    /// Which signed prekey of the responder was used.
    pub signed_prekey_id: u32,
    /// Which one-time prekey of the responder was used, if any.
    pub one_time_prekey_id: Option<u32>,
    /// The first message of the session.
    pub first_message: Envelope,
}

impl HandshakeInit {
    fn to_proto(&self) -> proto::HandshakeInit {
        proto::HandshakeInit {
            identity_key: self.identity_key.to_vec(),
            ephemeral_key: self.ephemeral_key.to_vec(),
            signed_prekey_id: self.signed_prekey_id,
            one_time_prekey_id: self.one_time_prekey_id,
            first_message: Some(self.first_message.to_proto()),
        }
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes and validates a handshake message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(decode_proto(bytes)?)
    }

    fn from_proto(m: proto::HandshakeInit) -> Result<Self, DecodeError> {
        let first = m
            .first_message
            .ok_or(DecodeError::MissingField("first_message"))?;
        Ok(Self {
            identity_key: fixed::<32>("identity_key", &m.identity_key)?,
            ephemeral_key: fixed::<32>("ephemeral_key", &m.ephemeral_key)?,
            signed_prekey_id: m.signed_prekey_id,
            one_time_prekey_id: m.one_time_prekey_id,
            first_message: Envelope::from_proto(first)?,
        })
    }
}

/// The responder's offer of its prekey bundle, to start an interactive handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeOffer {
    /// The bundle to run X3DH against.
    pub bundle: PrekeyBundle,
}

impl HandshakeOffer {
    fn to_proto(&self) -> proto::HandshakeOffer {
        proto::HandshakeOffer {
            bundle: Some(self.bundle.to_proto()),
        }
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes and validates an offer.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_proto(decode_proto(bytes)?)
    }

    fn from_proto(m: proto::HandshakeOffer) -> Result<Self, DecodeError> {
        let bundle = m.bundle.ok_or(DecodeError::MissingField("bundle"))?;
        Ok(Self {
            bundle: PrekeyBundle::from_proto(bundle)?,
        })
    }
}

/// The dialer's frame on a connection's handshake stream (PROTOCOL.md section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's Ed25519 identity public key.
    pub identity_key: [u8; 32],
    /// The node the dialer means to reach.
    pub responder_id: NodeId,
    /// What the hello carries.
    pub body: HelloBody,
}

/// What a [`Hello`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelloBody {
    /// Nothing: a request for the responder's prekey bundle.
    BundleRequest,
    /// A session-proof envelope under the existing session.
    Proof(Envelope),
    /// The X3DH initial message with the first ratchet message.
    Handshake(HandshakeInit),
}

impl Hello {
    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        let (proof, handshake) = match &self.body {
            HelloBody::BundleRequest => (None, None),
            HelloBody::Proof(e) => (Some(e.to_proto()), None),
            HelloBody::Handshake(h) => (None, Some(h.to_proto())),
        };
        proto::Hello {
            identity_key: self.identity_key.to_vec(),
            responder_id: self.responder_id.as_bytes().to_vec(),
            proof,
            handshake,
        }
        .encode_to_vec()
    }

    /// Decodes and validates a hello; `proof` and `handshake` together are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: proto::Hello = decode_proto(bytes)?;
        let body = match (m.proof, m.handshake) {
            (None, None) => HelloBody::BundleRequest,
            (Some(p), None) => HelloBody::Proof(Envelope::from_proto(p)?),
            (None, Some(h)) => HelloBody::Handshake(HandshakeInit::from_proto(h)?),
            (Some(_), Some(_)) => {
                return Err(DecodeError::Inconsistent(
                    "hello carries both proof and handshake",
                ))
            }
        };
        Ok(Self {
            identity_key: fixed::<32>("identity_key", &m.identity_key)?,
            responder_id: NodeId::from_bytes(fixed::<32>("responder_id", &m.responder_id)?),
            body,
        })
    }
}

/// The responder's answer on the handshake stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelloReply {
    /// Run X3DH against this bundle.
    Offer(HandshakeOffer),
    /// A session-proof envelope: the handshake is complete.
    Proof(Envelope),
    /// Refused.
    Error(ErrorReport),
}

impl HelloReply {
    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = proto::HelloReply::default();
        match self {
            Self::Offer(o) => m.offer = Some(o.to_proto()),
            Self::Proof(e) => m.proof = Some(e.to_proto()),
            Self::Error(e) => m.error = Some(e.to_proto()),
        }
        m.encode_to_vec()
    }

    /// Decodes and validates a reply: exactly one field must be set.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: proto::HelloReply = decode_proto(bytes)?;
        match (m.offer, m.proof, m.error) {
            (Some(o), None, None) => Ok(Self::Offer(HandshakeOffer::from_proto(o)?)),
            (None, Some(p), None) => Ok(Self::Proof(Envelope::from_proto(p)?)),
            (None, None, Some(e)) => Ok(Self::Error(ErrorReport::from_proto(e)?)),
            (None, None, None) => Err(DecodeError::MissingField("offer, proof or error")),
            _ => Err(DecodeError::Inconsistent(
                "hello reply sets more than one field",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope() -> Envelope {
        Envelope {
            sender: NodeId::from_bytes([7; 32]),
            kind: MessageKind::Chat,
            header: RatchetHeader {
                dh_public_key: [9; 32],
                previous_chain_length: 3,
                message_number: 41,
            },
            payload: b"ciphertext".to_vec(),
        }
    }

    #[test]
    fn envelope_round_trip_and_exact_bytes() {
        let e = envelope();
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        // Field 1 (sender_id, length-delimited) comes first: tag 0x0a, length 32.
        assert_eq!(&bytes[..2], &[0x0a, 32]);
        // Then field 2 (type, varint): tag 0x10, value 1 (CHAT).
        assert_eq!(&bytes[34..36], &[0x10, 0x01]);
    }

    #[test]
    fn envelope_validation() {
        let mut p = envelope().to_proto();
        p.sender_id.pop();
        assert_eq!(
            Envelope::decode(&p.encode_to_vec()),
            Err(DecodeError::FieldLength {
                field: "sender_id",
                actual: 31,
                expected: 32
            })
        );
        let mut p = envelope().to_proto();
        p.r#type = 99;
        let err = Envelope::decode(&p.encode_to_vec()).unwrap_err();
        assert_eq!(err, DecodeError::UnknownType(99));
        assert_eq!(err.wire_code(), WireErrorCode::UnknownType);
        let mut p = envelope().to_proto();
        p.r#type = 0;
        assert_eq!(
            Envelope::decode(&p.encode_to_vec()),
            Err(DecodeError::UnknownType(0))
        );
        let mut p = envelope().to_proto();
        p.payload = vec![0; MAX_PAYLOAD_LEN + 1];
        assert!(matches!(
            Envelope::decode(&p.encode_to_vec()),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(matches!(
            Envelope::decode(&[0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn chat_receipt_error_round_trip() {
        let chat = Chat {
            id: MessageId::from_bytes([1; 16]),
            sent_at_ms: 5,
            body: "hé".into(),
        };
        assert_eq!(Chat::decode(&chat.encode().unwrap()).unwrap(), chat);
        let long = Chat {
            body: "x".repeat(MAX_CHAT_BODY_LEN + 1),
            ..chat.clone()
        };
        assert!(long.encode().is_err());
        let receipt = Receipt {
            ids: vec![MessageId::from_bytes([2; 16]); 3],
        };
        assert_eq!(
            Receipt::decode(&receipt.encode().unwrap()).unwrap(),
            receipt
        );
        assert_eq!(
            Receipt::decode(&[]),
            Err(DecodeError::MissingField("message_ids"))
        );
        let err = ErrorReport {
            code: 3,
            reason: "é".repeat(200),
        };
        let back = ErrorReport::decode(&err.encode()).unwrap();
        assert!(back.reason.len() <= MAX_ERROR_REASON_LEN);
    }

    fn chat(n: u8, body: &str) -> Chat {
        Chat {
            id: MessageId::from_bytes([n; 16]),
            sent_at_ms: 1_700_000_000_000 + u64::from(n),
            body: body.into(),
        }
    }

    #[test]
    fn chats_round_trip_and_bounds() {
        let batch = Chats {
            chats: vec![chat(1, "first"), chat(2, ""), chat(3, "third")],
        };
        let bytes = batch.encode().unwrap();
        assert_eq!(Chats::decode(&bytes).unwrap(), batch);
        assert_eq!(
            bytes.len(),
            batch.chats.iter().map(Chats::entry_len).sum::<usize>()
        );
        // One chat goes as a Chat; a batch needs two.
        let one = Chats {
            chats: vec![chat(1, "alone")],
        };
        assert_eq!(one.encode(), Err(DecodeError::MissingField("chats")));
        let mut p = proto::Chats::default();
        p.chats.push(chat(1, "x").to_proto().unwrap());
        assert_eq!(
            Chats::decode(&p.encode_to_vec()),
            Err(DecodeError::MissingField("chats"))
        );
        // The same id twice is refused both ways.
        let twice = Chats {
            chats: vec![chat(1, "a"), chat(2, "b"), chat(1, "a again")],
        };
        assert!(matches!(twice.encode(), Err(DecodeError::Inconsistent(_))));
        let mut p = proto::Chats::default();
        for c in &twice.chats {
            p.chats.push(c.to_proto().unwrap());
        }
        assert!(matches!(
            Chats::decode(&p.encode_to_vec()),
            Err(DecodeError::Inconsistent(_))
        ));
        // Too many chats, too many bytes.
        let many = Chats {
            chats: (0..=MAX_BATCH_CHATS as u8).map(|n| chat(n, "x")).collect(),
        };
        assert!(matches!(many.encode(), Err(DecodeError::TooLong { .. })));
        let mut p = proto::Chats::default();
        for c in &many.chats {
            p.chats.push(c.to_proto().unwrap());
        }
        assert!(matches!(
            Chats::decode(&p.encode_to_vec()),
            Err(DecodeError::TooLong { .. })
        ));
        let big = "y".repeat(MAX_CHAT_BODY_LEN);
        let heavy = Chats {
            chats: vec![chat(1, &big), chat(2, &big)],
        };
        assert!(matches!(heavy.encode(), Err(DecodeError::TooLong { .. })));
        // A chat inside that breaks its own bounds.
        let mut p = proto::Chats::default();
        p.chats.push(chat(1, "ok").to_proto().unwrap());
        let mut bad = chat(2, "short id").to_proto().unwrap();
        bad.message_id.pop();
        p.chats.push(bad);
        assert!(matches!(
            Chats::decode(&p.encode_to_vec()),
            Err(DecodeError::FieldLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn chats_entry_len_is_exact(
            bodies in proptest::collection::vec(".{0,300}", 2..20),
            sent in proptest::collection::vec(any::<u64>(), 20),
        ) {
            let batch = Chats {
                chats: bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| Chat {
                        id: MessageId::from_bytes([i as u8; 16]),
                        sent_at_ms: sent[i],
                        body: b.clone(),
                    })
                    .collect(),
            };
            let bytes = batch.encode().unwrap();
            prop_assert_eq!(bytes.len(), batch.chats.iter().map(Chats::entry_len).sum::<usize>());
            prop_assert_eq!(Chats::decode(&bytes).unwrap(), batch);
        }
    }

    #[test]
    fn bundle_and_handshake_round_trip() {
        let bundle = PrekeyBundle {
            identity_key: [1; 32],
            signed_prekey_id: 7,
            signed_prekey: [2; 32],
            signed_prekey_signature: [3; 64],
            one_time_prekey: Some((9, [4; 32])),
        };
        assert_eq!(PrekeyBundle::decode(&bundle.encode()).unwrap(), bundle);
        let offer = HandshakeOffer {
            bundle: PrekeyBundle {
                one_time_prekey: None,
                ..bundle
            },
        };
        assert_eq!(HandshakeOffer::decode(&offer.encode()).unwrap(), offer);
        let mut p = offer.bundle.to_proto();
        p.one_time_prekey_id = Some(1);
        assert!(matches!(
            PrekeyBundle::decode(&p.encode_to_vec()),
            Err(DecodeError::Inconsistent(_))
        ));
        let init = HandshakeInit {
            identity_key: [5; 32],
            ephemeral_key: [6; 32],
            signed_prekey_id: 7,
            one_time_prekey_id: Some(9),
            first_message: envelope(),
        };
        assert_eq!(HandshakeInit::decode(&init.encode()).unwrap(), init);
        assert_eq!(
            HandshakeInit::decode(&[]),
            Err(DecodeError::MissingField("first_message"))
        );
    }

    #[test]
    fn hello_and_reply_round_trip() {
        let hello = Hello {
            identity_key: [1; 32],
            responder_id: NodeId::from_bytes([2; 32]),
            body: HelloBody::BundleRequest,
        };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        let proof = Hello {
            body: HelloBody::Proof(envelope()),
            ..hello.clone()
        };
        assert_eq!(Hello::decode(&proof.encode()).unwrap(), proof);
        let mut both = proto::Hello::decode(proof.encode().as_slice()).unwrap();
        both.handshake = Some(proto::HandshakeInit::default());
        assert!(matches!(
            Hello::decode(&both.encode_to_vec()),
            Err(DecodeError::Inconsistent(_))
        ));
        let reply = HelloReply::Error(ErrorReport {
            code: 3,
            reason: "no".into(),
        });
        assert_eq!(HelloReply::decode(&reply.encode()).unwrap(), reply);
        let reply = HelloReply::Proof(envelope());
        assert_eq!(HelloReply::decode(&reply.encode()).unwrap(), reply);
        assert!(matches!(
            HelloReply::decode(&[]),
            Err(DecodeError::MissingField(_))
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes);
            let _ = Chat::decode(&bytes);
            let _ = Receipt::decode(&bytes);
            let _ = ErrorReport::decode(&bytes);
            let _ = PrekeyBundle::decode(&bytes);
            let _ = HandshakeInit::decode(&bytes);
            let _ = HandshakeOffer::decode(&bytes);
            let _ = Hello::decode(&bytes);
            let _ = HelloReply::decode(&bytes);
        }

        #[test]
        fn envelopes_round_trip(sender in any::<[u8; 32]>(), dh in any::<[u8; 32]>(), n in any::<u32>(), pn in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let e = Envelope {
                sender: NodeId::from_bytes(sender),
                kind: MessageKind::Receipt,
                header: RatchetHeader { dh_public_key: dh, previous_chain_length: pn, message_number: n },
                payload,
            };
            prop_assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        }
    }
}
