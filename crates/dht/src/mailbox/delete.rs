//! A recipient's signed request to delete items from its own mailbox.
//!
//! ```text
//! body   = version (0x01) || recipient (32, Ed25519 public key)
//!       || issued_at_ms (u64 big-endian, Unix milliseconds)
//!       || count (u16 big-endian, 1 to 256) || count × message_id (16)
//! signed = "dp2ptcs/v1/mailbox-delete" (25 ASCII bytes, no terminator) || body
//! delete = body || signature (64, Ed25519 by recipient over `signed`)
//! ```
//!
//! Any node may carry it (the signature proves the recipient asked); a holder deletes the named
//! ids from the mailbox of `SHA-256(recipient)` only. A [`MailboxDelete`] value is always
//! verified.

use dp2ptcs_crypto::{Identity, PublicIdentity};
use dp2ptcs_types::{MessageId, NodeId};

use super::{signed_message, MailboxError, Reader, MAILBOX_VERSION};

/// Domain-separation prefix of a delete request's signature.
pub const MAILBOX_DELETE_CONTEXT: &[u8] = b"dp2ptcs/v1/mailbox-delete";
/// Most message ids one delete request names.
pub const MAX_MAILBOX_DELETE_IDS: usize = dp2ptcs_types::limits::MAX_MAILBOX_DELETE_IDS;
const MAX_DELETE_LEN: usize = dp2ptcs_types::limits::MAX_MAILBOX_DELETE_LEN;

const HEADER_LEN: usize = 1 + 32 + 8 + 2;
const SIGNATURE_LEN: usize = 64;
const _: () = assert!(MAX_DELETE_LEN == HEADER_LEN + 16 * MAX_MAILBOX_DELETE_IDS + SIGNATURE_LEN);
const _: () = assert!(MAX_MAILBOX_DELETE_IDS == 256);

/// A verified delete request. Its encoding is in the module notes of `src/mailbox/delete.rs` and
/// PROTOCOL.md section 11.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxDelete {
    recipient: PublicIdentity,
    ids: Vec<MessageId>,
    issued_at_ms: u64,
    signature: [u8; 64],
}

impl MailboxDelete {
    /// Signs a request by `recipient` to delete `ids` (1 to [`MAX_MAILBOX_DELETE_IDS`]) from its
    /// mailbox, issued at `issued_at_ms` (Unix milliseconds, the recipient's clock).
    pub fn sign(
        recipient: &Identity,
        ids: Vec<MessageId>,
        issued_at_ms: u64,
    ) -> Result<Self, MailboxError> {
        if ids.is_empty() || ids.len() > MAX_MAILBOX_DELETE_IDS {
            return Err(MailboxError::IdCount(ids.len()));
        }
        let mut d = Self {
            recipient: recipient.public(),
            ids,
            issued_at_ms,
            signature: [0; 64],
        };
        d.signature = recipient.sign(&signed_message(MAILBOX_DELETE_CONTEXT, &d.body()));
        Ok(d)
    }

    /// Decodes and verifies a request: every length, the key, the signature. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MailboxError> {
        if bytes.len() > MAX_DELETE_LEN {
            return Err(MailboxError::TooLong {
                what: "mailbox delete",
                len: bytes.len(),
                max: MAX_DELETE_LEN,
            });
        }
        if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
            return Err(MailboxError::Malformed("shorter than a mailbox delete"));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader(body);
        let version = r.u8()?;
        if version != MAILBOX_VERSION {
            return Err(MailboxError::UnknownVersion(version));
        }
        let recipient = PublicIdentity::from_bytes(&r.array::<32>()?)?;
        let issued_at_ms = r.u64()?;
        let count = u16::from_be_bytes(r.array::<2>()?) as usize;
        if count == 0 || count > MAX_MAILBOX_DELETE_IDS {
            return Err(MailboxError::IdCount(count));
        }
        if r.0.len() != 16 * count {
            return Err(MailboxError::Malformed(
                "id count disagrees with the request length",
            ));
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig);
        if !recipient.verify(&signed_message(MAILBOX_DELETE_CONTEXT, body), &signature) {
            return Err(MailboxError::BadSignature);
        }
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(MessageId::from_bytes(r.array::<16>()?));
        }
        Ok(Self {
            recipient,
            ids,
            issued_at_ms,
            signature,
        })
    }

    /// The canonical encoding: body then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 16 * self.ids.len() + SIGNATURE_LEN);
        out.push(MAILBOX_VERSION);
        out.extend_from_slice(&self.recipient.to_bytes());
        out.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        // At most MAX_MAILBOX_DELETE_IDS (checked by both constructors): fits a u16.
        out.extend_from_slice(&(self.ids.len() as u16).to_be_bytes());
        for id in &self.ids {
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// The recipient's public key.
    pub fn recipient(&self) -> &PublicIdentity {
        &self.recipient
    }

    /// The recipient's node id: whose mailbox the ids are deleted from.
    pub fn recipient_id(&self) -> NodeId {
        self.recipient.node_id()
    }

    /// The ids to delete.
    pub fn ids(&self) -> &[MessageId] {
        &self.ids
    }

    /// When the recipient signed it, Unix milliseconds.
    pub fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }

    /// The recipient's Ed25519 signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(n: usize) -> Vec<MessageId> {
        (0..n)
            .map(|i| MessageId::from_bytes([i as u8; 16]))
            .collect()
    }

    #[test]
    fn a_signed_delete_round_trips_and_verifies() {
        let id = Identity::from_seed(&[1; 32]);
        let d = MailboxDelete::sign(&id, ids(3), 77).unwrap();
        let bytes = d.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 48 + 64);
        let back = MailboxDelete::from_bytes(&bytes).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.recipient_id(), id.node_id());
        assert_eq!(back.ids(), &ids(3)[..]);
        assert_eq!(back.issued_at_ms(), 77);
        // Layout (PROTOCOL.md section 11.3).
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..33], &id.public().to_bytes());
        assert_eq!(&bytes[33..43], &[0, 0, 0, 0, 0, 0, 0, 77, 0, 3]);
        let mut signed = b"dp2ptcs/v1/mailbox-delete".to_vec();
        signed.extend_from_slice(&bytes[..bytes.len() - 64]);
        assert!(id.public().verify(&signed, d.signature()));
    }

    #[test]
    fn id_counts_are_bounded_on_both_sides() {
        let id = Identity::from_seed(&[2; 32]);
        assert_eq!(
            MailboxDelete::sign(&id, Vec::new(), 1),
            Err(MailboxError::IdCount(0))
        );
        assert_eq!(
            MailboxDelete::sign(&id, ids(257), 1),
            Err(MailboxError::IdCount(257))
        );
        let full = MailboxDelete::sign(&id, ids(256), 1).unwrap().to_bytes();
        assert_eq!(full.len(), MAX_DELETE_LEN);
        assert!(MailboxDelete::from_bytes(&full).is_ok());
        // A count of zero in a (re-signed) body is refused.
        let mut b = vec![1];
        b.extend_from_slice(&id.public().to_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&[0, 0]);
        let sig = id.sign(&signed_message(MAILBOX_DELETE_CONTEXT, &b));
        b.extend_from_slice(&sig);
        assert_eq!(MailboxDelete::from_bytes(&b), Err(MailboxError::IdCount(0)));
    }

    #[test]
    fn forged_deletes_are_refused() {
        let victim = Identity::from_seed(&[3; 32]);
        let forger = Identity::from_seed(&[4; 32]);
        let mut bytes = MailboxDelete::sign(&forger, ids(1), 5).unwrap().to_bytes();
        bytes[1..33].copy_from_slice(&victim.public().to_bytes());
        assert_eq!(
            MailboxDelete::from_bytes(&bytes),
            Err(MailboxError::BadSignature)
        );
        let good = MailboxDelete::sign(&victim, ids(2), 5).unwrap().to_bytes();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x80;
            assert!(MailboxDelete::from_bytes(&b).is_err(), "byte {i}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = MailboxDelete::from_bytes(&bytes);
        }

        #[test]
        fn deletes_round_trip(seed in any::<u8>(), n in 1usize..=256, at in any::<u64>()) {
            let d = MailboxDelete::sign(&Identity::from_seed(&[seed; 32]), ids(n), at).unwrap();
            prop_assert_eq!(MailboxDelete::from_bytes(&d.to_bytes()).unwrap(), d);
        }
    }
}
