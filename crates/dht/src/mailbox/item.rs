//! A mailbox item: a sealed message signed by its sender for one recipient's mailbox.
//!
//! ```text
//! body   = version (0x01) || sender (32, Ed25519 public key) || recipient (32, node id)
//!       || message_id (16) || expires_at_ms (u64 big-endian, Unix milliseconds)
//!       || payload_len (u32 big-endian) || payload (at most MAX_MAILBOX_PAYLOAD bytes)
//! signed = "dp2ptcs/v1/mailbox-item" (23 ASCII bytes, no terminator) || body
//! item   = body || signature (64, Ed25519 by sender over `signed`)
//! ```
//!
//! The payload is opaque here: the sealed envelope bytes the node makes for the recipient. A
//! [`MailboxItem`] value is always verified: the only ways to get one are [`MailboxItem::sign`]
//! and [`MailboxItem::from_bytes`].

use dp2ptcs_crypto::{Identity, PublicIdentity};
use dp2ptcs_types::{MessageId, NodeId};

use super::{signed_message, MailboxError, Reader, MAILBOX_VERSION};

/// Domain-separation prefix of an item signature.
pub const MAILBOX_ITEM_CONTEXT: &[u8] = b"dp2ptcs/v1/mailbox-item";
/// Largest payload of one item, in bytes (48 KiB): a sealed chat of at most 32 KiB with its
/// envelope and X3DH overhead.
pub const MAX_MAILBOX_PAYLOAD: usize = dp2ptcs_types::limits::MAX_MAILBOX_PAYLOAD;
/// Largest encoded item (body and signature), in bytes.
pub const MAX_MAILBOX_ITEM_LEN: usize = dp2ptcs_types::limits::MAX_MAILBOX_ITEM_LEN;

const HEADER_LEN: usize = 1 + 32 + 32 + 16 + 8 + 4;
const SIGNATURE_LEN: usize = 64;
const _: () = assert!(MAX_MAILBOX_ITEM_LEN == HEADER_LEN + MAX_MAILBOX_PAYLOAD + SIGNATURE_LEN);
const _: () = assert!(MAX_MAILBOX_PAYLOAD == 48 * 1024);
const _: () = assert!(MAX_MAILBOX_ITEM_LEN < dp2ptcs_wire::MAX_FRAME_LEN);

/// A verified mailbox item. Its encoding is in the module notes of `src/mailbox/item.rs` and
/// PROTOCOL.md section 11.2.
#[derive(Clone, PartialEq, Eq)]
pub struct MailboxItem {
    sender: PublicIdentity,
    recipient: NodeId,
    message_id: MessageId,
    expires_at_ms: u64,
    payload: Vec<u8>,
    signature: [u8; 64],
}

impl std::fmt::Debug for MailboxItem {
    /// The payload is sealed, but long: only its length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxItem")
            .field("sender", &self.sender.node_id())
            .field("recipient", &self.recipient)
            .field("message_id", &self.message_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl MailboxItem {
    /// Signs an item from `sender` for `recipient`'s mailbox. `expires_at_ms` is a Unix time in
    /// milliseconds (normally now + [`DEFAULT_MAILBOX_TTL_MS`](super::DEFAULT_MAILBOX_TTL_MS));
    /// `payload` at most [`MAX_MAILBOX_PAYLOAD`] bytes.
    pub fn sign(
        sender: &Identity,
        recipient: NodeId,
        message_id: MessageId,
        expires_at_ms: u64,
        payload: Vec<u8>,
    ) -> Result<Self, MailboxError> {
        if payload.len() > MAX_MAILBOX_PAYLOAD {
            return Err(MailboxError::PayloadTooLong(payload.len()));
        }
        let mut item = Self {
            sender: sender.public(),
            recipient,
            message_id,
            expires_at_ms,
            payload,
            signature: [0; 64],
        };
        item.signature = sender.sign(&signed_message(MAILBOX_ITEM_CONTEXT, &item.body()));
        Ok(item)
    }

    /// Decodes and verifies an item: every length, the sender key, the signature. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MailboxError> {
        if bytes.len() > MAX_MAILBOX_ITEM_LEN {
            return Err(MailboxError::TooLong {
                what: "mailbox item",
                len: bytes.len(),
                max: MAX_MAILBOX_ITEM_LEN,
            });
        }
        if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
            return Err(MailboxError::Malformed("shorter than a mailbox item"));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader(body);
        let version = r.u8()?;
        if version != MAILBOX_VERSION {
            return Err(MailboxError::UnknownVersion(version));
        }
        let sender = PublicIdentity::from_bytes(&r.array::<32>()?)?;
        let recipient = NodeId::from_bytes(r.array::<32>()?);
        let message_id = MessageId::from_bytes(r.array::<16>()?);
        let expires_at_ms = r.u64()?;
        let len = u32::from_be_bytes(r.array::<4>()?) as usize;
        if r.0.len() != len {
            return Err(MailboxError::Malformed(
                "payload length disagrees with the item length",
            ));
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig);
        if !sender.verify(&signed_message(MAILBOX_ITEM_CONTEXT, body), &signature) {
            return Err(MailboxError::BadSignature);
        }
        Ok(Self {
            sender,
            recipient,
            message_id,
            expires_at_ms,
            payload: r.0.to_vec(),
            signature,
        })
    }

    /// The canonical encoding: body then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// The length of [`MailboxItem::to_bytes`], what a holder counts against its quotas.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len() + SIGNATURE_LEN
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(MAILBOX_VERSION);
        out.extend_from_slice(&self.sender.to_bytes());
        out.extend_from_slice(self.recipient.as_bytes());
        out.extend_from_slice(self.message_id.as_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        // At most MAX_MAILBOX_PAYLOAD (checked by both constructors): fits a u32.
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// The sender's public key.
    pub fn sender(&self) -> &PublicIdentity {
        &self.sender
    }

    /// The sender's node id.
    pub fn sender_id(&self) -> NodeId {
        self.sender.node_id()
    }

    /// The recipient's node id: whose mailbox holds it.
    pub fn recipient(&self) -> &NodeId {
        &self.recipient
    }

    /// The message id the recipient deduplicates by and deletes with.
    pub fn message_id(&self) -> &MessageId {
        &self.message_id
    }

    /// When it stops being held, Unix milliseconds.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// The sealed payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The sender's Ed25519 signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn item(seed: u8, payload: Vec<u8>) -> MailboxItem {
        let id = Identity::from_seed(&[seed; 32]);
        MailboxItem::sign(
            &id,
            NodeId::from_bytes([0xbb; 32]),
            MessageId::from_bytes([0xcc; 16]),
            0x0000_0190_0000_0000,
            payload,
        )
        .unwrap()
    }

    #[test]
    fn a_signed_item_round_trips_and_verifies() {
        let i = item(1, b"sealed".to_vec());
        let bytes = i.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 6 + 64);
        assert_eq!(bytes.len(), i.encoded_len());
        let back = MailboxItem::from_bytes(&bytes).unwrap();
        assert_eq!(back, i);
        assert_eq!(back.sender_id(), Identity::from_seed(&[1; 32]).node_id());
        assert_eq!(back.recipient(), &NodeId::from_bytes([0xbb; 32]));
        assert_eq!(back.message_id(), &MessageId::from_bytes([0xcc; 16]));
        assert_eq!(back.expires_at_ms(), 0x0000_0190_0000_0000);
        assert_eq!(back.payload(), b"sealed");
    }

    /// Pins the layout of PROTOCOL.md section 11.2.
    #[test]
    fn layout() {
        let id = Identity::from_seed(&[0x11; 32]);
        let i = item(0x11, vec![0xab, 0xcd]);
        let b = i.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..33], &id.public().to_bytes());
        assert_eq!(&b[33..65], &[0xbb; 32]);
        assert_eq!(&b[65..81], &[0xcc; 16]);
        assert_eq!(&b[81..89], &[0, 0, 1, 0x90, 0, 0, 0, 0]);
        assert_eq!(&b[89..95], &[0, 0, 0, 2, 0xab, 0xcd]);
        let mut signed = b"dp2ptcs/v1/mailbox-item".to_vec();
        signed.extend_from_slice(&b[..95]);
        assert!(id.public().verify(&signed, i.signature()));
        // Not under the body alone, nor under another context.
        assert!(!id.public().verify(&b[..95], i.signature()));
    }

    #[test]
    fn the_largest_payload_is_accepted_and_one_more_byte_refused() {
        let i = item(2, vec![7; MAX_MAILBOX_PAYLOAD]);
        assert_eq!(i.to_bytes().len(), MAX_MAILBOX_ITEM_LEN);
        assert_eq!(MailboxItem::from_bytes(&i.to_bytes()).unwrap(), i);
        let id = Identity::from_seed(&[2; 32]);
        assert_eq!(
            MailboxItem::sign(
                &id,
                NodeId::from_bytes([0; 32]),
                MessageId::from_bytes([0; 16]),
                1,
                vec![0; MAX_MAILBOX_PAYLOAD + 1]
            ),
            Err(MailboxError::PayloadTooLong(MAX_MAILBOX_PAYLOAD + 1))
        );
        assert!(matches!(
            MailboxItem::from_bytes(&vec![0; MAX_MAILBOX_ITEM_LEN + 1]),
            Err(MailboxError::TooLong { .. })
        ));
    }

    #[test]
    fn forged_items_are_refused() {
        let owner = Identity::from_seed(&[3; 32]);
        let forger = Identity::from_seed(&[4; 32]);
        // The forger's item claiming the owner's key.
        let mut bytes = item(4, b"x".to_vec()).to_bytes();
        bytes[1..33].copy_from_slice(&owner.public().to_bytes());
        assert_eq!(
            MailboxItem::from_bytes(&bytes),
            Err(MailboxError::BadSignature)
        );
        // Any flipped bit breaks it.
        let good = item(3, b"payload".to_vec()).to_bytes();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            assert!(MailboxItem::from_bytes(&b).is_err(), "byte {i}");
        }
        // The signature of a record-context message does not make an item.
        let i = item(3, b"payload".to_vec());
        let mut b = i.body();
        b.extend_from_slice(&owner.sign(&signed_message(b"dp2ptcs/v1/dht-record", &i.body())));
        assert_eq!(MailboxItem::from_bytes(&b), Err(MailboxError::BadSignature));
        let _ = forger;
    }

    #[test]
    fn debug_shows_no_payload() {
        let i = item(5, b"secret-ish".to_vec());
        let s = format!("{i:?}");
        assert!(s.contains("payload_len: 10"));
        assert!(!s.contains("115, 101"));
    }

    proptest! {
        /// The decoder is fed by peers: arbitrary bytes give an error, never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = MailboxItem::from_bytes(&bytes);
        }

        /// Any signed item round-trips; cutting or adding bytes breaks it.
        #[test]
        fn items_round_trip(seed in any::<u8>(), recipient in any::<[u8; 32]>(),
                            id in any::<[u8; 16]>(), expires in any::<u64>(),
                            payload in proptest::collection::vec(any::<u8>(), 0..300),
                            cut in 1usize..50, extra in any::<u8>()) {
            let i = MailboxItem::sign(&Identity::from_seed(&[seed; 32]), NodeId::from_bytes(recipient),
                MessageId::from_bytes(id), expires, payload).unwrap();
            let bytes = i.to_bytes();
            prop_assert_eq!(MailboxItem::from_bytes(&bytes).unwrap(), i);
            let cut = cut.min(bytes.len());
            prop_assert!(MailboxItem::from_bytes(&bytes[..bytes.len() - cut]).is_err());
            let mut longer = bytes;
            longer.push(extra);
            prop_assert!(MailboxItem::from_bytes(&longer).is_err());
        }
    }
}
