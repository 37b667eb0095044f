//! The mailboxes a node holds for others, with the holder's rules.
//!
//! - **Lifetime.** An item whose `expires_at_ms` is not after `now` is refused, and dropped once it
//!   passes ([`MailboxStore::expire`]); one that claims to live more than
//!   [`MailboxLimits::max_ttl_ms`] from `now` is refused.
//! - **Identity.** A mailbox holds at most one item per message id: the same item again is a
//!   [`MailboxPut::Duplicate`] (accepted), another item with the same id a
//!   [`MailboxError::Conflict`] (the first stays).
//! - **Quotas** ([`MailboxLimits`]), counted in encoded item bytes: per sender within one mailbox,
//!   per mailbox, and in total. Identities are free, so the per-sender quota stops one careless or
//!   hostile sender from filling a mailbox, not a crowd of made-up ones; the per-mailbox and total
//!   quotas bound what they can make a holder keep. A refused item is never stored in part.
//! - **Deletes.** A [`MailboxDelete`] verified by its signature removes the ids it names from the
//!   signer's mailbox, and leaves a tombstone per id: until the item's expiry if it was held, else
//!   for [`MailboxLimits::max_ttl_ms`] (no item that could still arrive outlives that). A
//!   tombstoned id is refused ([`MailboxError::Deleted`]), so that another holder handing the item
//!   on does not bring it back. Tombstones are bounded per mailbox and in total; when full, the one
//!   that expires first makes room (at worst a deleted item comes back once, and the recipient,
//!   which deduplicates by message id, deletes it again).
//! - **Fetch** returns a mailbox's items oldest first (in the order this holder stored them),
//!   bounded in bytes and count, with a cursor for the next page.
//!
//! Every map is ordered, so iteration (and so a simulation) is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use dp2ptcs_types::limits::MAX_MAILBOX_FETCH_ITEMS;
use dp2ptcs_types::{MessageId, NodeId};

use super::{
    MailboxDelete, MailboxError, MailboxItem, MAX_MAILBOX_CLOCK_SKEW_MS, MAX_MAILBOX_TTL_MS,
};

/// Which quota refused an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaKind {
    /// [`MailboxLimits::per_sender_items`].
    SenderItems,
    /// [`MailboxLimits::per_sender_bytes`].
    SenderBytes,
    /// [`MailboxLimits::per_mailbox_items`].
    MailboxItems,
    /// [`MailboxLimits::per_mailbox_bytes`].
    MailboxBytes,
    /// [`MailboxLimits::total_bytes`].
    Total,
}

/// What one holder keeps, at most. Bytes are encoded item bytes
/// ([`MailboxItem::encoded_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Items one sender may have in one mailbox (default 1000).
    pub per_sender_items: usize,
    /// Bytes one sender may have in one mailbox (default 8 MiB).
    pub per_sender_bytes: usize,
    /// Items one mailbox may hold (default 5000).
    pub per_mailbox_items: usize,
    /// Bytes one mailbox may hold (default 32 MiB).
    pub per_mailbox_bytes: usize,
    /// Bytes of all mailboxes together (default 256 MiB). 0: this node holds no mailboxes.
    pub total_bytes: usize,
    /// Longest lifetime accepted, from when an item is stored (default and at most
    /// [`MAX_MAILBOX_TTL_MS`], 30 days).
    pub max_ttl_ms: u64,
    /// Tombstones kept for one mailbox (default 10,000: two full mailboxes' worth of ids).
    pub per_mailbox_tombstones: usize,
    /// Tombstones kept in total (default 100,000, about 10 MB).
    pub total_tombstones: usize,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        Self {
            per_sender_items: 1000,
            per_sender_bytes: 8 << 20,
            per_mailbox_items: 5000,
            per_mailbox_bytes: 32 << 20,
            total_bytes: 256 << 20,
            max_ttl_ms: MAX_MAILBOX_TTL_MS,
            per_mailbox_tombstones: 10_000,
            total_tombstones: 100_000,
        }
    }
}

impl MailboxLimits {
    /// Small quotas for tests: 3 items / 2 KiB per sender, 5 items / 4 KiB per mailbox, 6 KiB in
    /// total, 1 day, 8 tombstones per mailbox and 16 in total.
    pub fn small() -> Self {
        Self {
            per_sender_items: 3,
            per_sender_bytes: 2 << 10,
            per_mailbox_items: 5,
            per_mailbox_bytes: 4 << 10,
            total_bytes: 6 << 10,
            max_ttl_ms: 24 * 60 * 60 * 1000,
            per_mailbox_tombstones: 8,
            total_tombstones: 16,
        }
    }

    /// No mailboxes held at all.
    pub fn none() -> Self {
        Self {
            total_bytes: 0,
            ..Self::default()
        }
    }
}

/// What [`MailboxStore::put`] did with an item it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxPut {
    /// It is new here and now held.
    Stored,
    /// The same item was already held.
    Duplicate,
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    items: usize,
    bytes: usize,
}

#[derive(Debug, Clone)]
struct Held {
    item: MailboxItem,
    len: usize,
    seq: u64,
    /// When this holder next hands it on to the other holders.
    replicate_at_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct Mailbox {
    items: BTreeMap<MessageId, Held>,
    /// Arrival order: sequence number to id.
    order: BTreeMap<u64, MessageId>,
    usage: Usage,
    senders: BTreeMap<NodeId, Usage>,
}

#[derive(Debug, Clone, Default)]
struct Tombstones {
    until: BTreeMap<(NodeId, MessageId), u64>,
    by_expiry: BTreeSet<(u64, NodeId, MessageId)>,
    per_mailbox: BTreeMap<NodeId, BTreeSet<(u64, MessageId)>>,
}

impl Tombstones {
    fn contains(&self, recipient: &NodeId, id: &MessageId, now_ms: u64) -> bool {
        self.until
            .get(&(*recipient, *id))
            .is_some_and(|&t| t > now_ms)
    }

    fn remove(&mut self, recipient: NodeId, id: MessageId) {
        if let Some(t) = self.until.remove(&(recipient, id)) {
            self.by_expiry.remove(&(t, recipient, id));
            if let Some(set) = self.per_mailbox.get_mut(&recipient) {
                set.remove(&(t, id));
                if set.is_empty() {
                    self.per_mailbox.remove(&recipient);
                }
            }
        }
    }

    fn add(&mut self, recipient: NodeId, id: MessageId, until: u64, limits: &MailboxLimits) {
        let until = match self.until.get(&(recipient, id)) {
            Some(&t) if t >= until => return,
            Some(&t) => {
                self.remove(recipient, id);
                t.max(until)
            }
            None => until,
        };
        if limits.per_mailbox_tombstones == 0 || limits.total_tombstones == 0 {
            return;
        }
        let first = self
            .per_mailbox
            .get(&recipient)
            .filter(|s| s.len() >= limits.per_mailbox_tombstones)
            .and_then(|s| s.first().copied());
        if let Some((_, old)) = first {
            self.remove(recipient, old);
        }
        if self.until.len() >= limits.total_tombstones {
            if let Some(&(_, r, old)) = self.by_expiry.first() {
                self.remove(r, old);
            }
        }
        self.until.insert((recipient, id), until);
        self.by_expiry.insert((until, recipient, id));
        self.per_mailbox
            .entry(recipient)
            .or_default()
            .insert((until, id));
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(t, r, id)) = self.by_expiry.first() {
            if t > now_ms {
                break;
            }
            self.remove(r, id);
        }
    }

    fn len(&self) -> usize {
        self.until.len()
    }
}

/// The mailboxes one node holds. See the module notes in `src/mailbox/store.rs` (rules, bounds).
#[derive(Debug, Clone)]
pub struct MailboxStore {
    limits: MailboxLimits,
    mailboxes: BTreeMap<NodeId, Mailbox>,
    expiries: BTreeSet<(u64, NodeId, MessageId)>,
    tombstones: Tombstones,
    usage: Usage,
    next_seq: u64,
    /// Items by the time they are due for replication.
    replicate_order: BTreeSet<(u64, NodeId, MessageId)>,
    replicate_interval_ms: u64,
}

/// How often a holder hands each item on unless another holder did (default of
/// [`DhtConfig::mailbox_replicate_interval_ms`](crate::DhtConfig::mailbox_replicate_interval_ms)).
pub(crate) const DEFAULT_REPLICATE_INTERVAL_MS: u64 = 10 * 60 * 1000;

impl MailboxStore {
    /// An empty store with these quotas (a `max_ttl_ms` above [`MAX_MAILBOX_TTL_MS`] counts as
    /// that).
    pub fn new(limits: MailboxLimits) -> Self {
        let limits = MailboxLimits {
            max_ttl_ms: limits.max_ttl_ms.min(MAX_MAILBOX_TTL_MS),
            ..limits
        };
        Self {
            limits,
            mailboxes: BTreeMap::new(),
            expiries: BTreeSet::new(),
            tombstones: Tombstones::default(),
            usage: Usage::default(),
            next_seq: 0,
            replicate_order: BTreeSet::new(),
            replicate_interval_ms: DEFAULT_REPLICATE_INTERVAL_MS,
        }
    }

    /// Sets how long after it is stored (or last handed on) an item is due for replication.
    pub(crate) fn set_replicate_interval(&mut self, interval_ms: u64) {
        self.replicate_interval_ms = interval_ms;
    }

    /// The quotas.
    pub fn limits(&self) -> &MailboxLimits {
        &self.limits
    }

    /// Offers a (verified) item at `now_ms`: refused if tombstoned, expired, too long-lived, in
    /// conflict with a held item, or over a quota.
    pub fn put(&mut self, item: MailboxItem, now_ms: u64) -> Result<MailboxPut, MailboxError> {
        self.check_lifetime(&item, now_ms)?;
        let recipient = *item.recipient();
        let id = *item.message_id();
        if let Some(held) = self
            .mailboxes
            .get(&recipient)
            .and_then(|m| m.items.get(&id))
        {
            if held.item != item {
                return Err(MailboxError::Conflict);
            }
            // Another holder is handing it on: no need for us to, this interval.
            let next = now_ms.saturating_add(self.replicate_interval_ms);
            self.replicated(&recipient, &id, next);
            return Ok(MailboxPut::Duplicate);
        }
        let len = item.encoded_len();
        let l = &self.limits;
        let (mailbox, sender) = match self.mailboxes.get(&recipient) {
            Some(m) => (
                m.usage,
                m.senders
                    .get(&item.sender_id())
                    .copied()
                    .unwrap_or_default(),
            ),
            None => (Usage::default(), Usage::default()),
        };
        if sender.items + 1 > l.per_sender_items {
            return Err(MailboxError::Quota(QuotaKind::SenderItems));
        }
        if sender.bytes + len > l.per_sender_bytes {
            return Err(MailboxError::Quota(QuotaKind::SenderBytes));
        }
        if mailbox.items + 1 > l.per_mailbox_items {
            return Err(MailboxError::Quota(QuotaKind::MailboxItems));
        }
        if mailbox.bytes + len > l.per_mailbox_bytes {
            return Err(MailboxError::Quota(QuotaKind::MailboxBytes));
        }
        if self.usage.bytes + len > l.total_bytes {
            return Err(MailboxError::Quota(QuotaKind::Total));
        }
        let replicate_at_ms = now_ms.saturating_add(self.replicate_interval_ms);
        self.insert(item, len, replicate_at_ms);
        Ok(MailboxPut::Stored)
    }

    /// Reloads an item from the node's persistence at `now_ms`: the tombstones and the per-sender
    /// and per-mailbox quotas are not checked again (they were when it arrived), only its lifetime
    /// and the total. A restored item is due for replication at once (others may have come closer
    /// to its mailbox while this node was away).
    pub fn restore(&mut self, item: MailboxItem, now_ms: u64) -> Result<MailboxPut, MailboxError> {
        let expires_at_ms = item.expires_at_ms();
        if expires_at_ms <= now_ms {
            return Err(MailboxError::Expired {
                expires_at_ms,
                now_ms,
            });
        }
        let recipient = *item.recipient();
        if let Some(held) = self
            .mailboxes
            .get(&recipient)
            .and_then(|m| m.items.get(item.message_id()))
        {
            return if held.item == item {
                Ok(MailboxPut::Duplicate)
            } else {
                Err(MailboxError::Conflict)
            };
        }
        let len = item.encoded_len();
        if self.usage.bytes + len > self.limits.total_bytes {
            return Err(MailboxError::Quota(QuotaKind::Total));
        }
        self.insert(item, len, now_ms);
        Ok(MailboxPut::Stored)
    }

    fn check_lifetime(&self, item: &MailboxItem, now_ms: u64) -> Result<(), MailboxError> {
        if self
            .tombstones
            .contains(item.recipient(), item.message_id(), now_ms)
        {
            return Err(MailboxError::Deleted);
        }
        let expires_at_ms = item.expires_at_ms();
        if expires_at_ms <= now_ms {
            return Err(MailboxError::Expired {
                expires_at_ms,
                now_ms,
            });
        }
        let ttl_ms = expires_at_ms - now_ms;
        if ttl_ms > self.limits.max_ttl_ms {
            return Err(MailboxError::TtlTooLong {
                ttl_ms,
                max_ms: self.limits.max_ttl_ms,
            });
        }
        Ok(())
    }

    fn insert(&mut self, item: MailboxItem, len: usize, replicate_at_ms: u64) {
        let recipient = *item.recipient();
        let id = *item.message_id();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.expiries.insert((item.expires_at_ms(), recipient, id));
        self.replicate_order
            .insert((replicate_at_ms, recipient, id));
        let m = self.mailboxes.entry(recipient).or_default();
        let s = m.senders.entry(item.sender_id()).or_default();
        s.items += 1;
        s.bytes += len;
        m.usage.items += 1;
        m.usage.bytes += len;
        m.order.insert(seq, id);
        m.items.insert(
            id,
            Held {
                item,
                len,
                seq,
                replicate_at_ms,
            },
        );
        self.usage.items += 1;
        self.usage.bytes += len;
    }

    /// Removes one item (not a delete: no tombstone), e.g. once it was handed on to closer
    /// holders. Returns it if it was held.
    pub fn remove(&mut self, recipient: &NodeId, id: &MessageId) -> Option<MailboxItem> {
        let m = self.mailboxes.get_mut(recipient)?;
        let held = m.items.remove(id)?;
        m.order.remove(&held.seq);
        m.usage.items -= 1;
        m.usage.bytes -= held.len;
        let sender = held.item.sender_id();
        if let Some(s) = m.senders.get_mut(&sender) {
            s.items -= 1;
            s.bytes -= held.len;
            if s.items == 0 {
                m.senders.remove(&sender);
            }
        }
        if m.items.is_empty() {
            self.mailboxes.remove(recipient);
        }
        self.expiries
            .remove(&(held.item.expires_at_ms(), *recipient, *id));
        self.replicate_order
            .remove(&(held.replicate_at_ms, *recipient, *id));
        self.usage.items -= 1;
        self.usage.bytes -= held.len;
        Some(held.item)
    }

    /// The first page of `recipient`'s items, oldest first: as many as fit in `limit_bytes` (and
    /// at most [`MAX_MAILBOX_FETCH_ITEMS`](dp2ptcs_types::limits::MAX_MAILBOX_FETCH_ITEMS)), and
    /// whether more are held. Expired items not yet dropped by [`MailboxStore::expire`] are
    /// included.
    pub fn fetch(&self, recipient: &NodeId, limit_bytes: usize) -> (Vec<MailboxItem>, bool) {
        self.fetch_after(recipient, None, limit_bytes)
    }

    /// As [`MailboxStore::fetch`], starting after the item `after` (the last of the previous
    /// page); from the start if `after` is not held (any more).
    pub fn fetch_after(
        &self,
        recipient: &NodeId,
        after: Option<&MessageId>,
        limit_bytes: usize,
    ) -> (Vec<MailboxItem>, bool) {
        let Some(m) = self.mailboxes.get(recipient) else {
            return (Vec::new(), false);
        };
        let start = after
            .and_then(|id| m.items.get(id))
            .map_or(0, |h| h.seq.saturating_add(1));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for id in m.order.range(start..).map(|(_, id)| id) {
            let Some(held) = m.items.get(id) else {
                continue;
            };
            if out.len() >= MAX_MAILBOX_FETCH_ITEMS || bytes + held.len > limit_bytes {
                return (out, true);
            }
            bytes += held.len;
            out.push(held.item.clone());
        }
        (out, false)
    }

    /// Applies a verified delete request at `now_ms`: removes the ids it names from the signer's
    /// mailbox and tombstones them. Returns how many items were removed. Refused if issued more
    /// than [`MAX_MAILBOX_CLOCK_SKEW_MS`] in the future or longer ago than
    /// [`MailboxLimits::max_ttl_ms`].
    pub fn delete(&mut self, req: &MailboxDelete, now_ms: u64) -> Result<usize, MailboxError> {
        self.delete_ids(req, now_ms).map(|ids| ids.len())
    }

    /// As [`MailboxStore::delete`], returning the ids of the items removed.
    pub(crate) fn delete_ids(
        &mut self,
        req: &MailboxDelete,
        now_ms: u64,
    ) -> Result<Vec<MessageId>, MailboxError> {
        let issued_at_ms = req.issued_at_ms();
        if issued_at_ms > now_ms.saturating_add(MAX_MAILBOX_CLOCK_SKEW_MS)
            || issued_at_ms.saturating_add(self.limits.max_ttl_ms) < now_ms
        {
            return Err(MailboxError::StaleDelete {
                issued_at_ms,
                now_ms,
            });
        }
        let recipient = req.recipient_id();
        let mut removed = Vec::new();
        let fallback = now_ms.saturating_add(self.limits.max_ttl_ms);
        for id in req.ids() {
            let until = match self.remove(&recipient, id) {
                Some(item) => {
                    removed.push(*id);
                    item.expires_at_ms()
                }
                None => fallback,
            };
            self.tombstones.add(recipient, *id, until, &self.limits);
        }
        Ok(removed)
    }

    /// Up to `max` items due for replication at `now_ms`, the longest due first.
    pub(crate) fn due_replication(&self, now_ms: u64, max: usize) -> Vec<(NodeId, MessageId)> {
        self.replicate_order
            .iter()
            .take_while(|(t, _, _)| *t <= now_ms)
            .take(max)
            .map(|&(_, r, id)| (r, id))
            .collect()
    }

    /// Item `id` of `recipient` was handed on (by us or someone else): due again at `next_ms`.
    pub(crate) fn replicated(&mut self, recipient: &NodeId, id: &MessageId, next_ms: u64) {
        let Some(held) = self
            .mailboxes
            .get_mut(recipient)
            .and_then(|m| m.items.get_mut(id))
        else {
            return;
        };
        self.replicate_order
            .remove(&(held.replicate_at_ms, *recipient, *id));
        held.replicate_at_ms = next_ms;
        self.replicate_order.insert((next_ms, *recipient, *id));
    }

    /// Whether `id` is tombstoned in `recipient`'s mailbox at `now_ms`.
    pub fn is_deleted(&self, recipient: &NodeId, id: &MessageId, now_ms: u64) -> bool {
        self.tombstones.contains(recipient, id, now_ms)
    }

    /// Drops the items and tombstones that expired at `now_ms`; returns the items dropped.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(NodeId, MessageId)> {
        let mut out = Vec::new();
        while let Some(&(t, r, id)) = self.expiries.first() {
            if t > now_ms {
                break;
            }
            self.remove(&r, &id);
            out.push((r, id));
        }
        self.tombstones.expire(now_ms);
        out
    }

    /// Items held, in all mailboxes.
    pub fn items_held(&self) -> usize {
        self.usage.items
    }

    /// Encoded bytes held, in all mailboxes.
    pub fn bytes_held(&self) -> usize {
        self.usage.bytes
    }

    /// Items `sender` signed, in all mailboxes, and their encoded bytes: for a node, the
    /// copies of its own messages it keeps as one of their recipients' holders.
    pub fn held_from(&self, sender: &NodeId) -> (usize, usize) {
        self.mailboxes
            .values()
            .filter_map(|m| m.senders.get(sender))
            .fold((0, 0), |(items, bytes), u| {
                (items + u.items, bytes + u.bytes)
            })
    }

    /// Tombstones held.
    pub fn tombstones_held(&self) -> usize {
        self.tombstones.len()
    }

    /// The recipients whose mailboxes hold at least one item, in id order.
    pub fn recipients(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.mailboxes.keys()
    }

    /// The items held for `recipient`, oldest first.
    pub fn items_for<'a>(&'a self, recipient: &NodeId) -> impl Iterator<Item = &'a MailboxItem> {
        self.mailboxes.get(recipient).into_iter().flat_map(|m| {
            m.order
                .values()
                .filter_map(move |id| m.items.get(id).map(|h| &h.item))
        })
    }

    /// The item `id` in `recipient`'s mailbox, if held.
    pub fn get(&self, recipient: &NodeId, id: &MessageId) -> Option<&MailboxItem> {
        self.mailboxes
            .get(recipient)
            .and_then(|m| m.items.get(id))
            .map(|h| &h.item)
    }
}

#[cfg(test)]
mod tests;
