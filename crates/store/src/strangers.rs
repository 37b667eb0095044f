//! Items of this node's own mailbox from nodes that are not its contacts (yet): someone who
//! added us writes before we added them. They are taken from the holders and kept here as they
//! came (sealed and signed), within bounds, until their sender is added as a contact, when they
//! are opened like any item, or until they expire.

use dp2ptcs_types::{MessageId, NodeId};
use rusqlite::params;

use crate::{Store, StoreError};

/// How much is kept from nodes that are not contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrangerLimits {
    /// Items kept from one sender.
    pub per_sender_items: u64,
    /// Items kept in all.
    pub total_items: u64,
    /// Bytes kept in all (the items' encodings).
    pub total_bytes: u64,
}

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

impl Store {
    /// Keeps `item` (a signed mailbox item's encoding) from `sender`, which is not a contact,
    /// until `expires_at_ms`; returns whether it is kept (an item kept already is). Not if that
    /// would pass `limits`, nor once it expired (`now_ms`; expired items are forgotten first).
    pub fn keep_from_stranger(
        &self,
        sender: &NodeId,
        id: &MessageId,
        expires_at_ms: u64,
        item: &[u8],
        now_ms: u64,
        limits: &StrangerLimits,
    ) -> Result<bool, StoreError> {
        self.exec(
            "DELETE FROM mailbox_strangers WHERE expires_at_ms <= ?1",
            params![ms(now_ms)],
        )?;
        if expires_at_ms <= now_ms {
            return Ok(false);
        }
        let (sender_b, id_b) = (sender.as_bytes().as_slice(), id.as_bytes().as_slice());
        let known: i64 = self.query_one(
            "SELECT count(*) FROM mailbox_strangers WHERE sender = ?1 AND message_id = ?2",
            params![sender_b, id_b],
            |r| r.get(0),
        )?;
        if known > 0 {
            return Ok(true);
        }
        let from_sender: i64 = self.query_one(
            "SELECT count(*) FROM mailbox_strangers WHERE sender = ?1",
            params![sender_b],
            |r| r.get(0),
        )?;
        let (items, bytes): (i64, i64) = self.query_one(
            "SELECT count(*), coalesce(sum(length(item)), 0) FROM mailbox_strangers",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if count(from_sender) >= limits.per_sender_items
            || count(items) >= limits.total_items
            || count(bytes) + item.len() as u64 > limits.total_bytes
        {
            return Ok(false);
        }
        self.exec(
            "INSERT INTO mailbox_strangers (sender, message_id, expires_at_ms, item)
             VALUES (?1, ?2, ?3, ?4)",
            params![sender_b, id_b, ms(expires_at_ms), item],
        )?;
        Ok(true)
    }

    /// The items kept from senders that are contacts now (their encodings), not expired at
    /// `now_ms` (expired ones are forgotten).
    pub fn kept_from_contacts(&self, now_ms: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        self.exec(
            "DELETE FROM mailbox_strangers WHERE expires_at_ms <= ?1",
            params![ms(now_ms)],
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT item FROM mailbox_strangers
             WHERE sender IN (SELECT node_id FROM contacts) ORDER BY expires_at_ms",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets the items `ids` kept from `sender`; returns how many there were.
    pub fn forget_kept(&self, sender: &NodeId, ids: &[MessageId]) -> Result<usize, StoreError> {
        let mut n = 0;
        for id in ids {
            n += self.exec(
                "DELETE FROM mailbox_strangers WHERE sender = ?1 AND message_id = ?2",
                params![sender.as_bytes().as_slice(), id.as_bytes().as_slice()],
            )?;
        }
        Ok(n)
    }

    /// The senders that are not contacts with items kept that have not expired at `now_ms`,
    /// each with how many, most first.
    pub fn strangers_waiting(&self, now_ms: u64) -> Result<Vec<(NodeId, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sender, count(*) AS n FROM mailbox_strangers
             WHERE expires_at_ms > ?1 AND sender NOT IN (SELECT node_id FROM contacts)
             GROUP BY sender ORDER BY n DESC, sender",
        )?;
        let rows = stmt.query_map(params![ms(now_ms)], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (sender, n) = row?;
            let sender = <[u8; 32]>::try_from(sender.as_slice())
                .map_err(|_| StoreError::Corrupt("a kept item has a bad sender".into()))?;
            out.push((NodeId::from_bytes(sender), count(n)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{ContactRecord, DB_FILE};

    #[test]
    fn items_from_strangers_are_kept_within_bounds_until_their_sender_is_a_contact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(DB_FILE), &[4; 32]).unwrap();
        let limits = StrangerLimits {
            per_sender_items: 2,
            total_items: 3,
            total_bytes: 100,
        };
        let (x, y, z) = (
            NodeId::from_bytes([1; 32]),
            NodeId::from_bytes([2; 32]),
            NodeId::from_bytes([3; 32]),
        );
        let id = |i: u8| MessageId::from_bytes([i; 16]);
        let keep = |s: &NodeId, i: u8, exp: u64, item: &[u8], now: u64| {
            store
                .keep_from_stranger(s, &id(i), exp, item, now, &limits)
                .unwrap()
        };
        assert!(keep(&x, 1, 1_000, b"x1", 0));
        assert!(keep(&x, 1, 1_000, b"x1", 0), "kept already");
        assert!(keep(&x, 2, 5_000, b"x2", 0));
        assert!(!keep(&x, 3, 5_000, b"x3", 0), "past the sender's bound");
        assert!(keep(&y, 4, 5_000, b"y4", 0));
        assert!(!keep(&z, 5, 5_000, b"z5", 0), "past the total bound");
        assert!(!keep(&z, 6, 10, b"z6", 20), "expired");
        assert_eq!(store.strangers_waiting(0).unwrap(), [(x, 2), (y, 1)]);
        // Past the first one's expiry, it is gone and there is room again (bytes too).
        assert!(!keep(&z, 7, 5_000, &[0; 97], 1_000), "past the byte bound");
        assert!(keep(&z, 7, 5_000, b"z7", 1_000));
        assert_eq!(
            store.strangers_waiting(1_000).unwrap(),
            [(x, 1), (y, 1), (z, 1)]
        );

        // X becomes a contact: its items are handed out, and no longer waiting as a stranger's.
        assert!(store.kept_from_contacts(1_000).unwrap().is_empty());
        store
            .put_contact(&ContactRecord {
                node_id: x,
                public_key: [1; 32],
                name: "x".into(),
                addresses: Vec::new(),
                verified: false,
                verified_at: None,
                added_at: 0,
            })
            .unwrap();
        assert_eq!(store.kept_from_contacts(1_000).unwrap(), [b"x2".to_vec()]);
        assert_eq!(store.strangers_waiting(1_000).unwrap(), [(y, 1), (z, 1)]);
        assert_eq!(store.forget_kept(&x, &[id(2), id(9)]).unwrap(), 1);
        assert!(store.kept_from_contacts(1_000).unwrap().is_empty());
    }
}
