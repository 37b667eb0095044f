//! The records a node holds for others (and its own), with the freshness rules.
//!
//! - A record whose `expires_at_ms` is not after `now` is refused, and dropped once it passes.
//! - A record may not claim to live more than [`MAX_RECORD_TTL_MS`] from `now`.
//! - A newer `sequence` replaces an older one; an older one is refused as stale; the same
//!   sequence with different content is refused (the first seen stays) and identical content
//!   only counts as a fresh STORE.
//! - Each owner has at most one record per [`RecordKind`](crate::RecordKind), so at most two,
//!   and the store holds at most its capacity in total: when full, a record for a key closer to
//!   the local id displaces the farthest one (this node is among the right holders for it),
//!   otherwise it is refused.
//! - Republishing (Kademlia): a held record is due for republishing every
//!   `republish_interval_ms`, unless another holder stored it here in the meantime, which means
//!   that holder already republished it.

use std::collections::HashMap;

use dp2ptcs_types::NodeId;

use crate::record::{Record, RecordKey};

/// Longest lifetime a record may claim, counted from when it is stored (24 hours).
pub const MAX_RECORD_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Default number of records one node holds.
pub const DEFAULT_STORE_CAPACITY: usize = 4096;

/// Why the store refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record expired at or before `now`.
    #[error("record expired at {expires_at_ms}, now is {now_ms}")]
    Expired {
        /// Its expiry.
        expires_at_ms: u64,
        /// The time it was offered.
        now_ms: u64,
    },
    /// The record claims to live longer than [`MAX_RECORD_TTL_MS`].
    #[error("record lives {ttl_ms} ms, at most {MAX_RECORD_TTL_MS}")]
    TtlTooLong {
        /// Its remaining lifetime.
        ttl_ms: u64,
    },
    /// A newer (or the same) version is already held.
    #[error("stale record: sequence {offered}, holding {held}")]
    Stale {
        /// The sequence held.
        held: u64,
        /// The sequence offered.
        offered: u64,
    },
    /// Same sequence, different content: the first seen stays.
    #[error("conflicting record with the same sequence {0}")]
    Conflict(u64),
    /// The store is full of records closer to this node.
    #[error("record store full")]
    Full,
}

/// What [`RecordStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A record for a new key.
    Stored,
    /// A newer version replaced the held one.
    Replaced,
    /// The same record was already held.
    Unchanged,
}

#[derive(Debug, Clone)]
struct Held {
    record: Record,
    /// Next time this node republishes it.
    republish_at_ms: u64,
}

/// The record store of one node. See the module notes in `src/store.rs` (design, rules, bounds).
#[derive(Debug, Clone)]
pub struct RecordStore {
    local: NodeId,
    capacity: usize,
    republish_interval_ms: u64,
    records: HashMap<RecordKey, Held>,
}

impl RecordStore {
    /// An empty store for node `local` holding at most `capacity` records, republishing every
    /// `republish_interval_ms`.
    pub fn new(local: NodeId, capacity: usize, republish_interval_ms: u64) -> Self {
        Self {
            local,
            capacity,
            republish_interval_ms,
            records: HashMap::new(),
        }
    }

    /// Number of records held (expired ones count until [`RecordStore::expire`]).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Offers a (verified) record at `now_ms`.
    pub fn put(&mut self, record: Record, now_ms: u64) -> Result<PutOutcome, StoreError> {
        let expires_at_ms = record.expires_at_ms();
        if expires_at_ms <= now_ms {
            return Err(StoreError::Expired {
                expires_at_ms,
                now_ms,
            });
        }
        let ttl_ms = expires_at_ms - now_ms;
        if ttl_ms > MAX_RECORD_TTL_MS {
            return Err(StoreError::TtlTooLong { ttl_ms });
        }
        let key = record.key();
        let republish_at_ms = now_ms.saturating_add(self.republish_interval_ms);
        if let Some(held) = self.records.get_mut(&key) {
            let (h, o) = (held.record.sequence(), record.sequence());
            if o < h {
                return Err(StoreError::Stale {
                    held: h,
                    offered: o,
                });
            }
            if o == h {
                if held.record != record {
                    return Err(StoreError::Conflict(o));
                }
                // Someone else republished it: no need for us to, this interval.
                held.republish_at_ms = republish_at_ms;
                return Ok(PutOutcome::Unchanged);
            }
            *held = Held {
                record,
                republish_at_ms,
            };
            return Ok(PutOutcome::Replaced);
        }
        if self.records.len() >= self.capacity {
            self.expire(now_ms);
        }
        if self.records.len() >= self.capacity {
            let d = self.local.distance(&key.owner);
            let farthest = self
                .records
                .keys()
                .max_by_key(|k| self.local.distance(&k.owner))
                .copied();
            match farthest {
                Some(f) if self.local.distance(&f.owner) > d => {
                    self.records.remove(&f);
                }
                _ => return Err(StoreError::Full),
            }
        }
        self.records.insert(
            key,
            Held {
                record,
                republish_at_ms,
            },
        );
        Ok(PutOutcome::Stored)
    }

    /// The unexpired record under `key`.
    pub fn get(&self, key: &RecordKey, now_ms: u64) -> Option<&Record> {
        self.records
            .get(key)
            .map(|h| &h.record)
            .filter(|r| r.expires_at_ms() > now_ms)
    }

    /// Drops every expired record; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.records.len();
        self.records
            .retain(|_, h| h.record.expires_at_ms() > now_ms);
        before - self.records.len()
    }

    /// The unexpired records due for republishing at `now_ms`; each is scheduled again one
    /// interval later.
    pub fn due_republish(&mut self, now_ms: u64) -> Vec<Record> {
        let next = now_ms.saturating_add(self.republish_interval_ms);
        let mut due: Vec<(RecordKey, Record)> = self
            .records
            .iter_mut()
            .filter(|(_, h)| h.republish_at_ms <= now_ms && h.record.expires_at_ms() > now_ms)
            .map(|(k, h)| {
                h.republish_at_ms = next;
                (*k, h.record.clone())
            })
            .collect();
        // Hash-map order is not deterministic across runs: sort for reproducibility.
        due.sort_by_key(|(k, _)| *k);
        due.into_iter().map(|(_, r)| r).collect()
    }

    /// The earliest time a record is due for republishing.
    pub fn next_republish_ms(&self) -> Option<u64> {
        self.records.values().map(|h| h.republish_at_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use dp2ptcs_crypto::Identity;

    use super::*;
    use crate::record::{PeerRecord, RecordPayload};

    fn record(seed: u8, sequence: u64, expires: u64, port: u16) -> Record {
        let id = Identity::from_seed(&[seed; 32]);
        let payload = RecordPayload::Peer(PeerRecord {
            addresses: vec![std::net::SocketAddr::from(([192, 0, 2, 1], port))],
            mix_key: None,
        });
        Record::sign(&id, sequence, expires, payload).unwrap()
    }

    fn store() -> RecordStore {
        RecordStore::new(NodeId::from_bytes([0; 32]), 16, 1000)
    }

    #[test]
    fn newer_replaces_older_and_older_is_stale() {
        let mut s = store();
        assert_eq!(s.put(record(1, 5, 10_000, 1), 0), Ok(PutOutcome::Stored));
        assert_eq!(s.put(record(1, 6, 10_000, 2), 1), Ok(PutOutcome::Replaced));
        assert_eq!(
            s.put(record(1, 5, 10_000, 1), 2),
            Err(StoreError::Stale {
                held: 6,
                offered: 5
            })
        );
        let key = record(1, 6, 10_000, 2).key();
        assert_eq!(s.get(&key, 3).unwrap().sequence(), 6);
    }

    #[test]
    fn same_sequence_different_content_is_a_conflict() {
        let mut s = store();
        s.put(record(1, 5, 10_000, 1), 0).unwrap();
        assert_eq!(s.put(record(1, 5, 10_000, 1), 1), Ok(PutOutcome::Unchanged));
        assert_eq!(
            s.put(record(1, 5, 10_000, 2), 1),
            Err(StoreError::Conflict(5))
        );
    }

    #[test]
    fn expired_records_are_refused_and_dropped() {
        let mut s = store();
        assert!(matches!(
            s.put(record(1, 1, 100, 1), 100),
            Err(StoreError::Expired { .. })
        ));
        s.put(record(1, 1, 200, 1), 100).unwrap();
        let key = record(1, 1, 200, 1).key();
        assert!(s.get(&key, 199).is_some());
        assert!(s.get(&key, 200).is_none());
        assert_eq!(s.expire(200), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn lifetimes_beyond_the_maximum_are_refused() {
        let mut s = store();
        assert_eq!(
            s.put(record(1, 1, MAX_RECORD_TTL_MS + 11, 1), 10),
            Err(StoreError::TtlTooLong {
                ttl_ms: MAX_RECORD_TTL_MS + 1
            })
        );
    }

    #[test]
    fn a_full_store_keeps_the_closest_keys() {
        let mut s = RecordStore::new(NodeId::from_bytes([0; 32]), 4, 1000);
        let mut all: Vec<Record> = (1..=8).map(|i| record(i, 1, 10_000, 1)).collect();
        for r in &all {
            let _ = s.put(r.clone(), 0);
        }
        assert_eq!(s.len(), 4);
        all.sort_by_key(|r| NodeId::from_bytes([0; 32]).distance(&r.key().owner));
        for r in &all[..4] {
            assert!(s.get(&r.key(), 1).is_some());
        }
    }

    #[test]
    fn republish_is_skipped_after_someone_else_stored_it() {
        let mut s = store();
        let r = record(1, 1, 100_000, 1);
        s.put(r.clone(), 0).unwrap();
        assert!(s.due_republish(999).is_empty());
        // Another holder republished it at 900: not due at 1000 any more.
        s.put(r.clone(), 900).unwrap();
        assert!(s.due_republish(1000).is_empty());
        assert_eq!(s.due_republish(1900), vec![r]);
        assert!(s.due_republish(1901).is_empty());
    }
}
