//! Receipts this node owes for messages it took from its mailbox: kept until one reaches the
//! sender (directly, or through another node holding it in the sender's mailbox), so a sender
//! that was away when its messages were taken still learns they were delivered. A message
//! received directly is acknowledged on the spot (the sender sends it again until it is) and
//! owes nothing here.

use dp2ptcs_types::{MessageId, NodeId};
use rusqlite::params;

use crate::{Store, StoreError};

fn ms(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

impl Store {
    /// Notes that `peer` is owed a receipt for each of `ids`, until `until_ms` (when the sender
    /// gives the message up: a receipt after that is of little use to it). A receipt owed already
    /// keeps the later of the two times.
    pub fn owe_receipts(
        &self,
        peer: &NodeId,
        ids: &[MessageId],
        until_ms: u64,
    ) -> Result<(), StoreError> {
        for id in ids {
            self.exec(
                "INSERT INTO receipts_owed (peer, id, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer, id) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
                params![
                    peer.as_bytes().as_slice(),
                    id.as_bytes().as_slice(),
                    ms(until_ms)
                ],
            )?;
        }
        Ok(())
    }

    /// Up to `limit` of the receipts owed to `peer` (in no particular order).
    pub fn owed_receipts(&self, peer: &NodeId, limit: usize) -> Result<Vec<MessageId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM receipts_owed WHERE peer = ?1 LIMIT ?2")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![peer.as_bytes().as_slice(), limit], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        let mut out = Vec::new();
        for id in rows {
            let id = <[u8; 16]>::try_from(id?.as_slice())
                .map_err(|_| StoreError::Corrupt("an owed receipt has a bad id".into()))?;
            out.push(MessageId::from_bytes(id));
        }
        Ok(out)
    }

    /// The peers owed a receipt that are contacts (one removed is owed its receipts again if it
    /// is added again). Receipts owed until before `now_ms` are forgotten first.
    pub fn peers_owed_receipts(&self, now_ms: u64) -> Result<Vec<NodeId>, StoreError> {
        self.exec(
            "DELETE FROM receipts_owed WHERE until_ms < ?1",
            params![ms(now_ms)],
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT peer FROM receipts_owed WHERE peer IN (SELECT node_id FROM contacts)",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for peer in rows {
            let peer = <[u8; 32]>::try_from(peer?.as_slice())
                .map_err(|_| StoreError::Corrupt("an owed receipt has a bad peer".into()))?;
            out.push(NodeId::from_bytes(peer));
        }
        Ok(out)
    }

    /// How many receipts are owed at `now_ms` to contacts (those of a removed contact wait
    /// until it is added again).
    pub fn receipts_owed(&self, now_ms: u64) -> Result<u64, StoreError> {
        Ok(self.query_one(
            "SELECT count(*) FROM receipts_owed
             WHERE until_ms >= ?1 AND peer IN (SELECT node_id FROM contacts)",
            params![ms(now_ms)],
            |r| Ok(r.get::<_, i64>(0)?.max(0) as u64),
        )?)
    }

    /// Forgets the receipts owed to `peer` for `ids` (one reached it); returns how many were
    /// owed.
    pub fn settle_receipts(&self, peer: &NodeId, ids: &[MessageId]) -> Result<usize, StoreError> {
        let mut n = 0;
        for id in ids {
            n += self.exec(
                "DELETE FROM receipts_owed WHERE peer = ?1 AND id = ?2",
                params![peer.as_bytes().as_slice(), id.as_bytes().as_slice()],
            )?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{ContactRecord, DB_FILE};

    fn contact(id: NodeId, name: &str) -> ContactRecord {
        ContactRecord {
            node_id: id,
            public_key: *id.as_bytes(),
            name: name.into(),
            addresses: Vec::new(),
            verified: false,
            verified_at: None,
            added_at: 0,
        }
    }

    #[test]
    fn owed_receipts_last_until_settled_or_expired_and_are_paid_to_contacts_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(DB_FILE), &[3; 32]).unwrap();
        let (alpha, bravo) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        store.put_contact(&contact(alpha, "alpha")).unwrap();
        store.put_contact(&contact(bravo, "bravo")).unwrap();
        let ids: Vec<MessageId> = (0..4u8).map(|i| MessageId::from_bytes([i; 16])).collect();
        store.owe_receipts(&alpha, &ids[..3], 1_000).unwrap();
        // Owed again (a duplicate taken again), later: the later time stays.
        store.owe_receipts(&alpha, &ids[..1], 5_000).unwrap();
        store.owe_receipts(&bravo, &ids[3..], 2_000).unwrap();

        let mut owed = store.owed_receipts(&alpha, 10).unwrap();
        owed.sort_by_key(|id| *id.as_bytes());
        assert_eq!(owed, ids[..3]);
        assert_eq!(store.owed_receipts(&alpha, 2).unwrap().len(), 2);
        assert_eq!(store.receipts_owed(0).unwrap(), 4);
        assert_eq!(store.receipts_owed(1_500).unwrap(), 2);
        let peers = |store: &Store, now_ms| {
            let mut p = store.peers_owed_receipts(now_ms).unwrap();
            p.sort_by_key(|p| *p.as_bytes());
            p
        };
        assert_eq!(peers(&store, 500), [alpha, bravo]);

        // One reached Alpha; settling it again counts nothing.
        assert_eq!(store.settle_receipts(&alpha, &ids[1..2]).unwrap(), 1);
        assert_eq!(store.settle_receipts(&alpha, &ids[1..2]).unwrap(), 0);
        // Past their time, Alpha's others go but the one owed again until later stays.
        assert_eq!(peers(&store, 1_500), [alpha, bravo]);
        assert_eq!(store.owed_receipts(&alpha, 10).unwrap(), ids[..1]);
        // Bravo is removed: nothing is paid to it, but it is owed its receipt again once added
        // again.
        store.remove_contact(&bravo).unwrap();
        assert_eq!(peers(&store, 1_500), [alpha]);
        assert_eq!(store.receipts_owed(1_500).unwrap(), 1);
        store.put_contact(&contact(bravo, "bravo")).unwrap();
        assert_eq!(peers(&store, 1_500), [alpha, bravo]);
        assert_eq!(store.owed_receipts(&bravo, 10).unwrap(), ids[3..]);
        // It survives a reopening.
        drop(store);
        let store = Store::open(&dir.path().join(DB_FILE), &[3; 32]).unwrap();
        assert_eq!(store.owed_receipts(&alpha, 10).unwrap(), ids[..1]);
    }
}
