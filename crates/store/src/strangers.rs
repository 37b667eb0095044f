//! Items of this node's own mailbox from nodes that are not its contacts (yet): someone who
//! added us writes before we added them. They are taken from the holders and kept here as they
//! came (sealed and signed), within bounds, until their sender is added as a contact, when they
//! are opened like any item, or until they expire. The signed prekey an item's X3DH handshake
//! names is recorded, so that the node keeps that prekey while the item waits.

use std::collections::BTreeSet;

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

/// An item to keep.
#[derive(Debug, Clone, Copy)]
pub struct KeptItem<'a> {
    /// Its id in the mailbox.
    pub id: &'a MessageId,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: u64,
    /// The signed prekey its X3DH handshake names, if it carries one.
    pub signed_prekey_id: Option<u32>,
    /// The item's signed encoding.
    pub item: &'a [u8],
}

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

fn node_id(bytes: &[u8]) -> Result<NodeId, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(NodeId::from_bytes)
        .map_err(|_| StoreError::Corrupt("a kept item has a bad sender".into()))
}

impl Store {
    /// Keeps `items` from `sender`, which is not a contact, in order, in one transaction, as
    /// long as `limits` allow (expired items are forgotten first, and an expired item is not
    /// kept); returns how many were kept, those kept already included.
    pub fn keep_from_stranger(
        &self,
        sender: &NodeId,
        items: &[KeptItem<'_>],
        now_ms: u64,
        limits: &StrangerLimits,
    ) -> Result<usize, StoreError> {
        self.transaction(|store| {
            store.exec(
                "DELETE FROM mailbox_strangers WHERE expires_at_ms <= ?1",
                params![ms(now_ms)],
            )?;
            let sender_b = sender.as_bytes().as_slice();
            let mut from_sender = count(store.query_one(
                "SELECT count(*) FROM mailbox_strangers WHERE sender = ?1",
                params![sender_b],
                |r| r.get(0),
            )?);
            let (mut total, mut bytes): (u64, u64) = store.query_one(
                "SELECT count(*), coalesce(sum(length(item)), 0) FROM mailbox_strangers",
                [],
                |r| Ok((count(r.get(0)?), count(r.get(1)?))),
            )?;
            let mut kept = 0;
            for item in items {
                let id_b = item.id.as_bytes().as_slice();
                let known: i64 = store.query_one(
                    "SELECT count(*) FROM mailbox_strangers WHERE sender = ?1 AND message_id = ?2",
                    params![sender_b, id_b],
                    |r| r.get(0),
                )?;
                if known > 0 {
                    kept += 1;
                    continue;
                }
                let len = item.item.len() as u64;
                if item.expires_at_ms <= now_ms
                    || from_sender >= limits.per_sender_items
                    || total >= limits.total_items
                    || bytes + len > limits.total_bytes
                {
                    continue;
                }
                store.exec(
                    "INSERT INTO mailbox_strangers
                        (sender, message_id, expires_at_ms, signed_prekey_id, item)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        sender_b,
                        id_b,
                        ms(item.expires_at_ms),
                        item.signed_prekey_id,
                        item.item
                    ],
                )?;
                kept += 1;
                from_sender += 1;
                total += 1;
                bytes += len;
            }
            Ok(kept)
        })
    }

    /// The senders with items kept that are contacts now (expired items are forgotten first).
    pub fn kept_senders(&self, now_ms: u64) -> Result<Vec<NodeId>, StoreError> {
        self.exec(
            "DELETE FROM mailbox_strangers WHERE expires_at_ms <= ?1",
            params![ms(now_ms)],
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT sender FROM mailbox_strangers
             WHERE sender IN (SELECT node_id FROM contacts)",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for sender in rows {
            out.push(node_id(&sender?)?);
        }
        Ok(out)
    }

    /// The items kept from `sender` that have not expired at `now_ms`: their ids and encodings.
    pub fn kept_from(
        &self,
        sender: &NodeId,
        now_ms: u64,
    ) -> Result<Vec<(MessageId, Vec<u8>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT message_id, item FROM mailbox_strangers
             WHERE sender = ?1 AND expires_at_ms > ?2",
        )?;
        let rows = stmt.query_map(params![sender.as_bytes().as_slice(), ms(now_ms)], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, item) = row?;
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| StoreError::Corrupt("a kept item has a bad id".into()))?;
            out.push((MessageId::from_bytes(id), item));
        }
        Ok(out)
    }

    /// The signed prekeys named by items kept that have not expired at `now_ms`.
    pub fn kept_signed_prekeys(&self, now_ms: u64) -> Result<BTreeSet<u32>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT signed_prekey_id FROM mailbox_strangers
             WHERE signed_prekey_id IS NOT NULL AND expires_at_ms > ?1",
        )?;
        let rows = stmt.query_map(params![ms(now_ms)], |r| r.get::<_, u32>(0))?;
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
            out.push((node_id(&sender)?, count(n)));
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
        let ids: Vec<MessageId> = (0..10u8).map(|i| MessageId::from_bytes([i; 16])).collect();
        let item = |i: usize, exp: u64, spk: Option<u32>, bytes: &'static [u8]| KeptItem {
            id: &ids[i],
            expires_at_ms: exp,
            signed_prekey_id: spk,
            item: bytes,
        };
        let keep = |s: &NodeId, items: &[KeptItem<'_>], now: u64| {
            store.keep_from_stranger(s, items, now, &limits).unwrap()
        };
        // X's third is past its bound; one kept already counts as kept.
        let from_x = [
            item(1, 1_000, Some(7), b"x1"),
            item(1, 1_000, Some(7), b"x1"),
            item(2, 5_000, Some(8), b"x2"),
            item(3, 5_000, Some(8), b"x3"),
        ];
        assert_eq!(keep(&x, &from_x, 0), 3);
        assert_eq!(keep(&y, &[item(4, 5_000, None, b"y4")], 0), 1);
        // Past the total bound, and expired.
        assert_eq!(keep(&z, &[item(5, 5_000, None, b"z5")], 0), 0);
        assert_eq!(keep(&z, &[item(6, 10, None, b"z6")], 20), 0);
        assert_eq!(store.strangers_waiting(0).unwrap(), [(x, 2), (y, 1)]);
        assert_eq!(
            store.kept_signed_prekeys(0).unwrap(),
            BTreeSet::from([7, 8])
        );
        // Past the first one's expiry, it is gone and there is room again (bytes too).
        assert_eq!(keep(&z, &[item(7, 5_000, None, &[0; 97])], 1_000), 0);
        assert_eq!(keep(&z, &[item(7, 5_000, None, b"z7")], 1_000), 1);
        assert_eq!(
            store.strangers_waiting(1_000).unwrap(),
            [(x, 1), (y, 1), (z, 1)]
        );
        assert_eq!(
            store.kept_signed_prekeys(1_000).unwrap(),
            BTreeSet::from([8])
        );

        // X becomes a contact: its items are handed out, and no longer waiting as a stranger's.
        assert!(store.kept_senders(1_000).unwrap().is_empty());
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
        assert_eq!(store.kept_senders(1_000).unwrap(), [x]);
        assert_eq!(
            store.kept_from(&x, 1_000).unwrap(),
            [(ids[2], b"x2".to_vec())]
        );
        assert_eq!(store.strangers_waiting(1_000).unwrap(), [(y, 1), (z, 1)]);
        assert_eq!(store.forget_kept(&x, &[ids[2], ids[9]]).unwrap(), 1);
        assert!(store.kept_senders(1_000).unwrap().is_empty());
        assert!(store.kept_signed_prekeys(1_000).unwrap().is_empty());
    }
}
