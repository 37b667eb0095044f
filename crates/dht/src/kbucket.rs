//! The Kademlia routing table: 256 k-buckets indexed by the highest bit of the XOR distance to
//! the local id.
//!
//! - Each bucket holds at most [`K`] proven contacts, least recently seen first.
//! - **Diversity limit:** at most [`MAX_PER_PREFIX`] contacts of one IPv4 /24 or IPv6 /48 per
//!   bucket (and in its replacement cache), so an attacker holding many ids in one network gets
//!   at most that many into any bucket.
//! - **Ping before evict:** a newcomer for a full bucket goes into the bucket's bounded
//!   replacement cache and the table asks the caller to ping the least recently seen entry
//!   ([`InsertOutcome::PingOldest`]). If the ping fails ([`RoutingTable::ping_result`]) the old
//!   entry is dropped and the freshest cached newcomer takes its place; if it answers, it stays.
//!   Long-lived nodes are preferred, as Kademlia intends.
//! - **Closest without a scan:** [`RoutingTable::closest`] visits buckets in increasing order of
//!   their distance to the target and stops once it has enough contacts.
//! - **Refresh:** a bucket no lookup has touched for [`REFRESH_INTERVAL_MS`] is due for a lookup
//!   of a random id in its range ([`RoutingTable::due_refreshes`], [`random_id_in_bucket`]).
//!
//! Only contacts that proved their id (a handshake, or a response over an authenticated session)
//! may be inserted: ids merely named in a response are hints and go to lookups, never here.

use std::collections::BTreeMap;

use dp2ptcs_types::{Distance, NodeId};
use rand_core::RngCore;

use crate::contact::{Contact, NetPrefix};

/// Bucket size, replication factor and most contacts per `NODES` answer: the wire bound
/// [`MAX_DHT_CONTACTS`](dp2ptcs_types::limits::MAX_DHT_CONTACTS), so that every answer fits.
pub const K: usize = dp2ptcs_types::limits::MAX_DHT_CONTACTS;
const _: () = assert!(K == 20, "PROTOCOL.md section 10.1 fixes k = 20");
/// Most contacts of one IPv4 /24 or IPv6 /48 in one bucket (and in its replacement cache).
pub const MAX_PER_PREFIX: usize = 2;
/// Most newcomers remembered per full bucket, waiting for a slot.
pub const REPLACEMENT_CACHE_LEN: usize = 8;
/// Consecutive failed requests after which a contact is dropped from the table.
pub const MAX_FAILURES: u32 = 2;
/// A bucket no lookup touched for this long is refreshed (one hour).
pub const REFRESH_INTERVAL_MS: u64 = 60 * 60 * 1000;
/// Number of buckets: one per bit of a 256-bit id.
pub const BUCKETS: usize = 256;

#[derive(Debug, Clone)]
struct Entry {
    contact: Contact,
    last_seen_ms: u64,
    failures: u32,
}

#[derive(Debug, Clone)]
struct PendingEviction {
    oldest: NodeId,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    /// Oldest first; the freshest is promoted first.
    replacements: Vec<Contact>,
    pending: Option<PendingEviction>,
}

impl Bucket {
    fn count_prefix(&self, prefix: NetPrefix) -> usize {
        self.entries
            .iter()
            .filter(|e| e.contact.prefix() == prefix)
            .count()
    }

    fn position(&self, id: &NodeId) -> Option<usize> {
        self.entries.iter().position(|e| e.contact.id == *id)
    }

    /// Moves the freshest replacement that respects the diversity limit into the bucket.
    fn promote(&mut self, now_ms: u64) -> Option<Contact> {
        if self.entries.len() >= K {
            return None;
        }
        let idx = (0..self.replacements.len())
            .rev()
            .find(|&i| self.count_prefix(self.replacements[i].prefix()) < MAX_PER_PREFIX)?;
        let contact = self.replacements.remove(idx);
        self.entries.push(Entry {
            contact,
            last_seen_ms: now_ms,
            failures: 0,
        });
        Some(contact)
    }
}

/// One contact of the routing table as [`RoutingTable::entries`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableEntry {
    /// The contact.
    pub contact: Contact,
    /// Its bucket: the index of the highest bit of its distance to the local id.
    pub bucket: usize,
    /// When it last proved itself (answered, or was inserted or updated), caller milliseconds.
    pub last_seen_ms: u64,
    /// Consecutive failed requests to it (it is dropped at [`MAX_FAILURES`]).
    pub failures: u32,
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The contact is new and now in its bucket.
    Inserted,
    /// The contact was already known; it is now the most recently seen of its bucket.
    Updated,
    /// The bucket is full: the newcomer waits in the replacement cache and the caller should
    /// ping `oldest`, then report with [`RoutingTable::ping_result`].
    PingOldest {
        /// The least recently seen entry of the bucket.
        oldest: Contact,
    },
    /// The bucket is full and a ping is already pending: the newcomer waits in the cache.
    Cached,
    /// The bucket (or its cache) already holds [`MAX_PER_PREFIX`] contacts of this network.
    RejectedDiversity,
    /// The contact is the local node.
    IsLocal,
}

/// The routing table of one node. See the module notes in `src/kbucket.rs` (design, rules, bounds).
#[derive(Debug, Clone)]
pub struct RoutingTable {
    local: NodeId,
    /// Only non-empty buckets are allocated (a table of N peers uses about log2(N/K) of them).
    buckets: BTreeMap<usize, Bucket>,
    /// Last time a lookup touched each bucket range; absent means `created_ms`.
    refreshed: BTreeMap<usize, u64>,
    created_ms: u64,
    len: usize,
}

impl RoutingTable {
    /// An empty table for the node `local`, created at `now_ms`.
    pub fn new(local: NodeId, now_ms: u64) -> Self {
        Self {
            local,
            buckets: BTreeMap::new(),
            refreshed: BTreeMap::new(),
            created_ms: now_ms,
            len: 0,
        }
    }

    /// The local id.
    pub fn local_id(&self) -> &NodeId {
        &self.local
    }

    /// Number of contacts in the buckets (replacement caches not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no contact.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bucket `id` belongs to, `None` for the local id.
    pub fn bucket_index(&self, id: &NodeId) -> Option<usize> {
        self.local.distance(id).bucket_index()
    }

    /// Records that `contact` proved its id and was seen at `now_ms`.
    pub fn insert(&mut self, contact: Contact, now_ms: u64) -> InsertOutcome {
        let Some(idx) = self.bucket_index(&contact.id) else {
            return InsertOutcome::IsLocal;
        };
        let bucket = self.buckets.entry(idx).or_default();
        let prefix = contact.prefix();
        if let Some(pos) = bucket.position(&contact.id) {
            let mut entry = bucket.entries.remove(pos);
            // A new address is taken only if it does not break the diversity limit.
            if entry.contact.addr != contact.addr
                && (entry.contact.prefix() == prefix
                    || bucket.count_prefix(prefix) < MAX_PER_PREFIX)
            {
                entry.contact.addr = contact.addr;
            }
            entry.last_seen_ms = now_ms;
            entry.failures = 0;
            bucket.entries.push(entry);
            return InsertOutcome::Updated;
        }
        if bucket.count_prefix(prefix) >= MAX_PER_PREFIX {
            return InsertOutcome::RejectedDiversity;
        }
        if bucket.entries.len() < K {
            bucket.entries.push(Entry {
                contact,
                last_seen_ms: now_ms,
                failures: 0,
            });
            self.len += 1;
            return InsertOutcome::Inserted;
        }
        // Full: remember the newcomer (bounded, diversity-limited cache), ask for a ping.
        bucket.replacements.retain(|c| c.id != contact.id);
        let cached_same_prefix = bucket
            .replacements
            .iter()
            .filter(|c| c.prefix() == prefix)
            .count();
        if cached_same_prefix >= MAX_PER_PREFIX {
            return InsertOutcome::RejectedDiversity;
        }
        if bucket.replacements.len() >= REPLACEMENT_CACHE_LEN {
            bucket.replacements.remove(0);
        }
        bucket.replacements.push(contact);
        if bucket.pending.is_some() {
            return InsertOutcome::Cached;
        }
        let Some(oldest) = bucket.entries.first().map(|e| e.contact) else {
            return InsertOutcome::Cached;
        };
        bucket.pending = Some(PendingEviction { oldest: oldest.id });
        InsertOutcome::PingOldest { oldest }
    }

    /// The answer to a ping asked for by [`InsertOutcome::PingOldest`]: if `alive`, the entry
    /// becomes the most recently seen; otherwise it is dropped and the freshest eligible cached
    /// newcomer, returned here, takes its place.
    pub fn ping_result(&mut self, id: &NodeId, alive: bool, now_ms: u64) -> Option<Contact> {
        let idx = self.bucket_index(id)?;
        let bucket = self.buckets.get_mut(&idx)?;
        if bucket.pending.as_ref().map(|p| p.oldest) == Some(*id) {
            bucket.pending = None;
        }
        let pos = bucket.position(id)?;
        if alive {
            let mut entry = bucket.entries.remove(pos);
            entry.last_seen_ms = now_ms;
            entry.failures = 0;
            bucket.entries.push(entry);
            None
        } else {
            bucket.entries.remove(pos);
            self.len -= 1;
            let promoted = bucket.promote(now_ms);
            if promoted.is_some() {
                self.len += 1;
            }
            promoted
        }
    }

    /// A request to `id` failed (timeout, refused). After [`MAX_FAILURES`] consecutive failures
    /// the contact is dropped and a cached newcomer, if any, takes its place. Returns whether it
    /// was dropped.
    pub fn report_failure(&mut self, id: &NodeId, now_ms: u64) -> bool {
        let Some(idx) = self.bucket_index(id) else {
            return false;
        };
        let Some(bucket) = self.buckets.get_mut(&idx) else {
            return false;
        };
        let Some(pos) = bucket.position(id) else {
            bucket.replacements.retain(|c| c.id != *id);
            return false;
        };
        bucket.entries[pos].failures += 1;
        if bucket.entries[pos].failures < MAX_FAILURES {
            return false;
        }
        bucket.entries.remove(pos);
        self.len -= 1;
        if bucket.pending.as_ref().map(|p| p.oldest) == Some(*id) {
            bucket.pending = None;
        }
        if bucket.promote(now_ms).is_some() {
            self.len += 1;
        }
        if bucket.entries.is_empty() && bucket.replacements.is_empty() {
            self.buckets.remove(&idx);
        }
        true
    }

    /// Removes `id` from the table and the caches. Returns whether it was in a bucket.
    pub fn remove(&mut self, id: &NodeId, now_ms: u64) -> bool {
        let Some(idx) = self.bucket_index(id) else {
            return false;
        };
        let Some(bucket) = self.buckets.get_mut(&idx) else {
            return false;
        };
        bucket.replacements.retain(|c| c.id != *id);
        let Some(pos) = bucket.position(id) else {
            return false;
        };
        bucket.entries.remove(pos);
        self.len -= 1;
        if bucket.promote(now_ms).is_some() {
            self.len += 1;
        }
        true
    }

    /// The contact with this id, if in a bucket.
    pub fn get(&self, id: &NodeId) -> Option<Contact> {
        let idx = self.bucket_index(id)?;
        let bucket = self.buckets.get(&idx)?;
        bucket.position(id).map(|p| bucket.entries[p].contact)
    }

    /// Every contact in the buckets, by bucket index then least recently seen first.
    pub fn contacts(&self) -> impl Iterator<Item = Contact> + '_ {
        self.buckets
            .values()
            .flat_map(|b| b.entries.iter().map(|e| e.contact))
    }

    /// Every contact in the buckets with what the table knows of it, sorted by bucket, then by
    /// distance to the local id (closest first). Replacement caches are not listed.
    pub fn entries(&self) -> Vec<TableEntry> {
        let mut out = Vec::with_capacity(self.len);
        for (&bucket, b) in &self.buckets {
            let start = out.len();
            out.extend(b.entries.iter().map(|e| TableEntry {
                contact: e.contact,
                bucket,
                last_seen_ms: e.last_seen_ms,
                failures: e.failures,
            }));
            out[start..].sort_by_key(|e| self.local.distance(&e.contact.id));
        }
        out
    }

    /// Number of contacts in bucket `idx`.
    pub fn bucket_len(&self, idx: usize) -> usize {
        self.buckets.get(&idx).map_or(0, |b| b.entries.len())
    }

    /// The `count` contacts closest to `target`, closest first.
    ///
    /// Buckets are visited in increasing order of distance to `target`: with `d = local ^ target`,
    /// every entry of bucket `i` is at a distance whose bits above `i` equal those of `d` and whose
    /// bit `i` is the complement of `d`'s. So the buckets where `d` has a one bit, from the highest
    /// down, come first (each closer than the next), then those where `d` has a zero bit, from the
    /// lowest up. Only the buckets needed to reach `count` contacts are read.
    pub fn closest(&self, target: &NodeId, count: usize) -> Vec<Contact> {
        let d = self.local.distance(target);
        let mut out: Vec<Contact> = Vec::with_capacity(count.min(self.len));
        let ones = (0..BUCKETS).rev().filter(|&i| bit(&d, i));
        let zeros = (0..BUCKETS).filter(|&i| !bit(&d, i));
        for i in ones.chain(zeros) {
            if out.len() >= count {
                break;
            }
            let Some(bucket) = self.buckets.get(&i) else {
                continue;
            };
            let start = out.len();
            out.extend(bucket.entries.iter().map(|e| e.contact));
            out[start..].sort_by_key(|c| c.id.distance(target));
        }
        out.truncate(count);
        out
    }

    /// Records that a lookup for an id in bucket `idx`'s range ran at `now_ms`.
    pub fn mark_refreshed(&mut self, idx: usize, now_ms: u64) {
        self.refreshed.insert(idx, now_ms);
    }

    /// The buckets due for a refresh at `now_ms`: every index from the lowest non-empty bucket up
    /// to 255 that no lookup touched for `interval_ms` (normally [`REFRESH_INTERVAL_MS`]). Lower
    /// buckets cover ranges so close to the local id that they are almost surely empty.
    pub fn due_refreshes(&self, now_ms: u64, interval_ms: u64) -> Vec<usize> {
        let Some(&lowest) = self.buckets.keys().next() else {
            return Vec::new();
        };
        (lowest..BUCKETS)
            .filter(|i| {
                let last = self.refreshed.get(i).copied().unwrap_or(self.created_ms);
                now_ms.saturating_sub(last) >= interval_ms
            })
            .collect()
    }
}

/// Whether bit `i` (0 = least significant) of a distance is set.
fn bit(d: &Distance, i: usize) -> bool {
    let bytes = d.as_bytes();
    bytes[31 - i / 8] & (1 << (i % 8)) != 0
}

/// A uniformly random id whose distance to `local` has its highest set bit at `idx`: a random
/// member of bucket `idx`'s range, for refreshing it.
pub fn random_id_in_bucket(local: &NodeId, idx: usize, rng: &mut impl RngCore) -> NodeId {
    let idx = idx.min(BUCKETS - 1);
    let mut d = [0u8; 32];
    rng.fill_bytes(&mut d);
    let top_byte = 31 - idx / 8;
    for b in d.iter_mut().take(top_byte) {
        *b = 0;
    }
    let bit_in_byte = idx % 8;
    // Keep the bits below `bit_in_byte`, set `bit_in_byte`, clear those above.
    let low_mask = ((1u16 << bit_in_byte) - 1) as u8;
    d[top_byte] = (d[top_byte] & low_mask) | (1 << bit_in_byte);
    let mut id = *local.as_bytes();
    for (o, x) in id.iter_mut().zip(d.iter()) {
        *o ^= x;
    }
    NodeId::from_bytes(id)
}

#[cfg(test)]
mod tests;
