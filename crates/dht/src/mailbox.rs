//! Mailboxes: store-and-forward for recipients that cannot be reached (DESIGN.md decision 9;
//! PROTOCOL.md section 11 is the byte-level contract).
//!
//! A sender that cannot reach a recipient signs its sealed message into a [`MailboxItem`] and puts
//! it in the recipient's mailbox: the [`MAILBOX_REPLICAS`] nodes closest (XOR) to
//! [`mailbox_key`]`(recipient)`. Each of them holds it in its [`MailboxStore`] until it expires
//! (at most [`MAX_MAILBOX_TTL_MS`] after it is stored; senders use [`DEFAULT_MAILBOX_TTL_MS`]),
//! within the quotas of [`MailboxLimits`], and hands it on to closer nodes as they appear. The
//! recipient fetches its items (a holder gives them only to the recipient, proven by its
//! session) and deletes them with a [`MailboxDelete`] it signs; a holder then keeps a tombstone of
//! each deleted id so that replication from another holder does not bring it back.
//!
//! - [`MailboxItem`], [`MailboxDelete`]: the signed, verified values and their encodings.
//! - [`MailboxStore`]: the holder's side: quotas, expiry, tombstones, oldest-first fetch.
//! - The RPCs (`MAILBOX_PUT`, `MAILBOX_FETCH`, `MAILBOX_DELETE`) and the lookups that find the
//!   holders are in [`Dht`](crate::Dht): [`Dht::deposit`](crate::Dht::deposit),
//!   [`Dht::fetch_mailbox`](crate::Dht::fetch_mailbox),
//!   [`Dht::delete_from_mailbox`](crate::Dht::delete_from_mailbox).
//!
//! Like the rest of this crate: no IO, no clock (times are Unix milliseconds from the caller),
//! no global RNG.

use dp2ptcs_crypto::PublicKeyError;
use dp2ptcs_types::NodeId;
use sha2::{Digest, Sha256};

mod delete;
mod item;
mod store;

pub use delete::{MailboxDelete, MAILBOX_DELETE_CONTEXT, MAX_MAILBOX_DELETE_IDS};
pub use item::{MailboxItem, MAILBOX_ITEM_CONTEXT, MAX_MAILBOX_ITEM_LEN, MAX_MAILBOX_PAYLOAD};
pub use store::{MailboxLimits, MailboxPut, MailboxStore, QuotaKind};

/// Nodes that hold each mailbox: the r closest to its key.
pub const MAILBOX_REPLICAS: usize = 5;
/// The lifetime a sender gives an item unless configured otherwise: 7 days.
pub const DEFAULT_MAILBOX_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// The longest lifetime a holder accepts, counted from when it stores the item: 30 days.
pub const MAX_MAILBOX_TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// How far in the future a delete request's `issued_at_ms` may lie (clock skew): 10 minutes.
pub const MAX_MAILBOX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// First byte of an item's and of a delete request's body.
pub const MAILBOX_VERSION: u8 = 1;
/// Domain-separation prefix of [`mailbox_key`].
pub const MAILBOX_KEY_CONTEXT: &[u8] = b"dp2ptcs/v1/mailbox";

const _: () = assert!(
    MAX_MAILBOX_ITEM_LEN <= dp2ptcs_types::limits::MAX_MAILBOX_FETCH_BYTES,
    "one item must fit one MAILBOX_ITEMS answer"
);
const _: () = assert!(
    dp2ptcs_types::limits::MAX_MAILBOX_FETCH_BYTES
        + 4 * dp2ptcs_types::limits::MAX_MAILBOX_FETCH_ITEMS
        + 64
        <= dp2ptcs_wire::MAX_FRAME_LEN,
    "a full MAILBOX_ITEMS answer must fit one wire frame"
);

/// The DHT key of `recipient`'s mailbox: `SHA-256("dp2ptcs/v1/mailbox" || recipient id)`. Its
/// holders are the [`MAILBOX_REPLICAS`] nodes closest to it. It differs from the recipient's own
/// id, so that a recipient's mailbox does not sit on its own neighbours (who would be offline or
/// cut off with it).
pub fn mailbox_key(recipient: &NodeId) -> NodeId {
    let mut h = Sha256::new();
    h.update(MAILBOX_KEY_CONTEXT);
    h.update(recipient.as_bytes());
    NodeId::from_bytes(h.finalize().into())
}

/// Why a mailbox item or delete request is malformed, forged or refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The encoding is longer than its maximum.
    #[error("{what} is {len} bytes, at most {max}")]
    TooLong {
        /// Item or delete request.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The encoding ends early or has bytes where none may be.
    #[error("malformed mailbox message: {0}")]
    Malformed(&'static str),
    /// Unknown version byte.
    #[error("unknown mailbox version {0}")]
    UnknownVersion(u8),
    /// The signer's key is not a usable Ed25519 key.
    #[error("mailbox signer key: {0}")]
    Key(#[from] PublicKeyError),
    /// The signature does not verify.
    #[error("mailbox signature does not verify")]
    BadSignature,
    /// The payload is longer than [`MAX_MAILBOX_PAYLOAD`].
    #[error("payload is {0} bytes, at most {MAX_MAILBOX_PAYLOAD}")]
    PayloadTooLong(usize),
    /// A delete request names no id, or more than [`MAX_MAILBOX_DELETE_IDS`].
    #[error("a delete request names {0} ids, 1 to {MAX_MAILBOX_DELETE_IDS}")]
    IdCount(usize),
    /// The item expired at or before `now`.
    #[error("item expired at {expires_at_ms}, now is {now_ms}")]
    Expired {
        /// Its expiry.
        expires_at_ms: u64,
        /// When it was offered.
        now_ms: u64,
    },
    /// The item claims to live longer than the holder's
    /// [`max_ttl_ms`](MailboxLimits::max_ttl_ms).
    #[error("item lives {ttl_ms} ms, at most {max_ms}")]
    TtlTooLong {
        /// Its remaining lifetime.
        ttl_ms: u64,
        /// The holder's maximum.
        max_ms: u64,
    },
    /// A quota of [`MailboxLimits`] is reached.
    #[error("mailbox quota reached: {0:?}")]
    Quota(QuotaKind),
    /// The recipient deleted this id: its tombstone refuses it until it expires.
    #[error("the recipient deleted this message")]
    Deleted,
    /// Another item with the same recipient and message id is held: the first stays.
    #[error("another item with this message id is held")]
    Conflict,
    /// A delete request issued too far in the future, or so long ago that no item it names can
    /// still be held.
    #[error("delete request issued at {issued_at_ms}, now is {now_ms}")]
    StaleDelete {
        /// Its issue time.
        issued_at_ms: u64,
        /// When it was offered.
        now_ms: u64,
    },
    /// This node holds no mailboxes ([`DhtConfig::mailbox`](crate::DhtConfig::mailbox) has no
    /// room).
    #[error("this node holds no mailboxes")]
    NotHolding,
}

/// Why a holder refused a `MAILBOX_PUT`: the `reason` of a `MAILBOX_STORED` answer
/// (PROTOCOL.md section 11.4). Unknown codes from later versions decode as
/// [`MailboxRefusal::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailboxRefusal {
    /// 0: accepted (stored, or already held).
    None,
    /// 1: expired, or a lifetime above the holder's maximum.
    Lifetime,
    /// 2: the sender's quota in this mailbox (items or bytes).
    SenderQuota,
    /// 3: the mailbox's quota (items or bytes).
    MailboxQuota,
    /// 4: the holder is full.
    Full,
    /// 5: the recipient deleted this id (tombstone).
    Deleted,
    /// 6: another item with this id is held.
    Conflict,
    /// 7: the node holds no mailboxes.
    NotHolding,
    /// Any other code.
    Other(u32),
}

impl MailboxRefusal {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Lifetime => 1,
            Self::SenderQuota => 2,
            Self::MailboxQuota => 3,
            Self::Full => 4,
            Self::Deleted => 5,
            Self::Conflict => 6,
            Self::NotHolding => 7,
            Self::Other(c) => c,
        }
    }

    /// The refusal with this wire code.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Self::None,
            1 => Self::Lifetime,
            2 => Self::SenderQuota,
            3 => Self::MailboxQuota,
            4 => Self::Full,
            5 => Self::Deleted,
            6 => Self::Conflict,
            7 => Self::NotHolding,
            c => Self::Other(c),
        }
    }

    /// The refusal a holder reports for `error`.
    pub fn of(error: &MailboxError) -> Self {
        match error {
            MailboxError::Expired { .. } | MailboxError::TtlTooLong { .. } => Self::Lifetime,
            MailboxError::Quota(QuotaKind::SenderItems | QuotaKind::SenderBytes) => {
                Self::SenderQuota
            }
            MailboxError::Quota(QuotaKind::MailboxItems | QuotaKind::MailboxBytes) => {
                Self::MailboxQuota
            }
            MailboxError::Quota(QuotaKind::Total) => Self::Full,
            MailboxError::Deleted => Self::Deleted,
            MailboxError::Conflict => Self::Conflict,
            MailboxError::NotHolding => Self::NotHolding,
            _ => Self::Other(u32::MAX),
        }
    }
}

/// Reads fixed-size fields off the front of a byte string.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], MailboxError> {
        if self.0.len() < N {
            return Err(MailboxError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(N);
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        self.0 = rest;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, MailboxError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, MailboxError> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }
}

fn signed_message(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + body.len());
    m.extend_from_slice(context);
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the key derivation of PROTOCOL.md section 11.1.
    #[test]
    fn mailbox_key_is_the_domain_separated_hash_of_the_recipient() {
        let r = NodeId::from_bytes([7; 32]);
        let mut input = b"dp2ptcs/v1/mailbox".to_vec();
        input.extend_from_slice(&[7; 32]);
        let want: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(mailbox_key(&r), NodeId::from_bytes(want));
        assert_ne!(mailbox_key(&r), r);
    }

    /// Pins PROTOCOL.md section 11 (Ed25519 signatures are deterministic): sender seed 32 × 0x11,
    /// recipient seed 32 × 0x22, message id 16 × 0x33.
    #[test]
    fn known_answer() {
        use dp2ptcs_crypto::Identity;
        use dp2ptcs_types::MessageId;
        let sender = Identity::from_seed(&[0x11; 32]);
        let recipient = Identity::from_seed(&[0x22; 32]);
        assert_eq!(
            mailbox_key(&recipient.node_id()).to_hex(),
            "3611f28a7cb83765d90d89dadd7d2269ba13578fa3551caf812c493ff689e47f"
        );
        let id = MessageId::from_bytes([0x33; 16]);
        let item = MailboxItem::sign(
            &sender,
            recipient.node_id(),
            id,
            0x0000_0190_0000_0000,
            b"hi".to_vec(),
        )
        .unwrap();
        assert_eq!(
            hex::encode(item.to_bytes()),
            concat!(
                "01",
                "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737",
                "1325b850c2871916eae203f0efc3c8987f64e5e3cdb27679e6d1fa97808357e6",
                "33333333333333333333333333333333",
                "0000019000000000",
                "00000002",
                "6869",
                "0697016c916550f71c41495a0c28dc666be0a82faffa0b12bf116773c1381f3b",
                "cc5cac279b240badeba210ea0e1f01c6a3435ad95398731f2410dc91cc03c608",
            )
        );
        let delete = MailboxDelete::sign(&recipient, vec![id], 0x0000_0190_0000_0001).unwrap();
        assert_eq!(
            hex::encode(delete.to_bytes()),
            concat!(
                "01",
                "a09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f0",
                "0000019000000001",
                "0001",
                "33333333333333333333333333333333",
                "a40693376ad0852f1181d1d8ecc045162eddbe8932e00e826582931a373deb32",
                "1e034308abb89bb9d8a85c1bbb7614b858754762bf7382f20df8e75ff9726c04",
            )
        );
    }

    #[test]
    fn refusal_codes_round_trip() {
        for c in 0..10 {
            assert_eq!(MailboxRefusal::from_code(c).code(), c);
        }
        assert_eq!(
            MailboxRefusal::of(&MailboxError::Quota(QuotaKind::SenderBytes)),
            MailboxRefusal::SenderQuota
        );
    }
}
