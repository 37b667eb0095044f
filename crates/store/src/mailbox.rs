//! Mailbox items this node holds for others (store-and-forward): written through from the
//! node's in-memory mailbox so that what it holds survives a restart. The items are opaque here
//! (their signed encoding, checked again when loaded); the rules (quotas, TTL, tombstones) live
//! in `dp2ptcs-dht`'s mailbox store.

use dp2ptcs_types::{MessageId, NodeId};
use rusqlite::params;

use crate::{Store, StoreError};

/// One held item, as the node writes it.
#[derive(Debug, Clone, Copy)]
pub struct HeldItem<'a> {
    /// The recipient whose mailbox holds it.
    pub recipient: &'a NodeId,
    /// The message id (unique per recipient's mailbox).
    pub message_id: &'a MessageId,
    /// The sender.
    pub sender: &'a NodeId,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: u64,
    /// The item's signed encoding.
    pub item: &'a [u8],
}

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

impl Store {
    /// Stores (or replaces) a held item.
    pub fn put_held(&self, h: &HeldItem<'_>) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO mailbox_held (recipient, message_id, sender, expires_at_ms, item)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                h.recipient.as_bytes().as_slice(),
                h.message_id.as_bytes().as_slice(),
                h.sender.as_bytes().as_slice(),
                ms(h.expires_at_ms),
                h.item
            ],
        )?;
        Ok(())
    }

    /// Removes a held item; returns whether it was there.
    pub fn remove_held(&self, recipient: &NodeId, id: &MessageId) -> Result<bool, StoreError> {
        Ok(self.exec(
            "DELETE FROM mailbox_held WHERE recipient = ?1 AND message_id = ?2",
            params![recipient.as_bytes().as_slice(), id.as_bytes().as_slice()],
        )? == 1)
    }

    /// Every held item not expired at `now_ms` (their encodings), oldest expiry first; expired
    /// ones are deleted.
    pub fn held_items(&self, now_ms: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.exec(
            "DELETE FROM mailbox_held WHERE expires_at_ms <= ?1",
            params![ms(now_ms)],
        )?;
        let mut stmt = self
            .conn
            .prepare("SELECT item FROM mailbox_held ORDER BY expires_at_ms, rowid")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many items are held, and their total size in bytes.
    pub fn held_stats(&self) -> Result<(u64, u64), StoreError> {
        Ok(self.query_one(
            "SELECT count(*), coalesce(sum(length(item)), 0) FROM mailbox_held",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn held_items_survive_reopen_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let key = [7u8; 32];
        let (r, s) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let (m1, m2) = (
            MessageId::from_bytes([3; 16]),
            MessageId::from_bytes([4; 16]),
        );
        {
            let store = Store::open(&path, &key).unwrap();
            for (id, exp, item) in [(&m1, 1_000, b"one".as_slice()), (&m2, 5_000, b"two")] {
                store
                    .put_held(&HeldItem {
                        recipient: &r,
                        message_id: id,
                        sender: &s,
                        expires_at_ms: exp,
                        item,
                    })
                    .unwrap();
            }
            assert_eq!(store.held_stats().unwrap(), (2, 6));
        }
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(
            store.held_items(0).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        // At 1 000 ms the first has expired: it is gone for good.
        assert_eq!(store.held_items(1_000).unwrap(), vec![b"two".to_vec()]);
        assert_eq!(store.held_stats().unwrap(), (1, 3));
        assert!(store.remove_held(&r, &m2).unwrap());
        assert!(!store.remove_held(&r, &m2).unwrap());
        assert_eq!(store.held_stats().unwrap(), (0, 0));
    }
}
