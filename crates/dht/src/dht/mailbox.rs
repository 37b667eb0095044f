//! The mailbox side of [`Dht`]: depositing, fetching and deleting through lookups of a mailbox
//! key, serving the three mailbox RPCs, and handing held items on (PROTOCOL.md section 11).
//!
//! **Sender.** [`Dht::deposit`] looks up [`mailbox_key`]`(recipient)` and sends `MAILBOX_PUT` to
//! the r ([`DhtConfig::mailbox_replicas`](crate::DhtConfig::mailbox_replicas)) closest nodes that answered, keeping the item itself
//! if this node is one of the r. The lookup's [`Event::LookupFinished`] comes first; once every
//! holder answered or failed, [`Event::Deposited`] reports how many accepted.
//!
//! **Recipient.** [`Dht::fetch_mailbox`] looks up our own mailbox key and sends `MAILBOX_FETCH` to
//! the r closest; a holder answers with our items only (the requester is proven by its session),
//! oldest first, a frame at a time; we follow `more` with the next page, at most
//! [`MAX_MAILBOX_FETCH_PAGES`] per holder. New, valid items are reported in
//! [`Event::MailboxItems`] batches, then [`Event::MailboxFetched`]. The node deletes what it
//! received with [`Dht::delete_from_mailbox`] (a [`MailboxDelete`] it signs), which ends with
//! [`Event::MailboxDeleted`].
//!
//! **Holder.** Items are kept in the [`MailboxStore`] under its quotas; every change is reported
//! ([`Event::MailboxStored`], [`Event::MailboxRemoved`]) for the node to write through to its
//! database, and [`Dht::restore_mailbox`] reloads them. Items move towards the right holders in
//! two ways:
//!
//! - *Periodic replication* (Kademlia's republish): each item is due
//!   [`DhtConfig::mailbox_replicate_interval_ms`](crate::DhtConfig::mailbox_replicate_interval_ms) after it was stored or last handed on, unless
//!   another holder handed it here in the meantime (then that holder did the work). A due item's
//!   mailbox key is looked up and the item is put at the r closest found. A holder that finds
//!   itself no longer among the r closest drops each item that all r accepted or refused as
//!   deleted (a tombstone: the recipient deleted it while this node was away).
//! - *Hand-off*: for each held mailbox the node remembers the r closest nodes it knows to the key.
//!   When a peer closer than the farthest of them enters the routing table (a newcomer, a healed
//!   partition), the mailbox's items are handed on, after
//!   [`DhtConfig::mailbox_handoff_delay_ms`](crate::DhtConfig::mailbox_handoff_delay_ms), to the r closest found that were not among them.
//!
//! **Bounds.** At most [`DhtConfig::mailbox_items_per_round`](crate::DhtConfig::mailbox_items_per_round) items are handed on per round (a
//! maintenance tick, or a hand-off timer), each to at most r holders, and replication lookups
//! start only while fewer than half of [`DhtConfig::max_lookups`](crate::DhtConfig::max_lookups) run; a mailbox operation (deposit,
//! fetch, delete, replication) lives from its lookup's end until its requests are answered or
//! time out, with at most r requests in flight (one per holder) except replication (r per item);
//! a fetch remembers at most `r × MAX_MAILBOX_FETCH_PAGES ×`
//! [`MAX_MAILBOX_FETCH_ITEMS`](dp2ptcs_types::limits::MAX_MAILBOX_FETCH_ITEMS) ids; the
//! per-mailbox holder views and hand-off marks exist only for mailboxes with items held, r nodes
//! each.

use std::collections::{BTreeMap, BTreeSet};

use dp2ptcs_types::limits::MAX_MAILBOX_FETCH_BYTES;
use dp2ptcs_types::{Distance, MessageId, NodeId};

use super::{Dht, DhtError, Event, LookupId, LookupPurpose, PendingKind, MAX_MAILBOX_FETCH_PAGES};
use crate::contact::Contact;
use crate::mailbox::{
    mailbox_key, MailboxDelete, MailboxError, MailboxItem, MailboxPut, MailboxRefusal,
    MailboxStore, MAX_MAILBOX_ITEM_LEN,
};
use crate::message::{Request, Response};

/// What a mailbox request in flight is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum MailboxPending {
    Put(MessageId),
    Fetch { page: u32 },
    Delete,
}

/// A mailbox operation whose lookup ended, waiting for its holders' answers.
#[derive(Debug, Clone)]
pub(super) enum MailboxOp {
    Deposit {
        message_id: MessageId,
        outstanding: u32,
        accepted: u32,
        refused: u32,
        held_here: bool,
        taken: u32,
    },
    Fetch {
        outstanding: u32,
        seen: BTreeSet<MessageId>,
        holders: u32,
        items: u32,
    },
    Delete {
        outstanding: u32,
        holders: u32,
        removed: u32,
    },
    Replicate {
        recipient: NodeId,
        outstanding: u32,
        /// Drop the items all `targets` accepted (or refused as deleted by the recipient): this
        /// node is not among the r closest.
        drop_accepted: bool,
        targets: u32,
        accepted: BTreeMap<MessageId, u32>,
    },
}

impl MailboxOp {
    fn outstanding(&mut self) -> &mut u32 {
        match self {
            Self::Deposit { outstanding, .. }
            | Self::Fetch { outstanding, .. }
            | Self::Delete { outstanding, .. }
            | Self::Replicate { outstanding, .. } => outstanding,
        }
    }
}

/// Which items a replication lookup hands on, and to whom not.
#[derive(Debug, Clone)]
pub(super) struct ReplicatePlan {
    items: Vec<MessageId>,
    /// Holders known before a hand-off: they are skipped (periodic replication skips nobody).
    skip: BTreeSet<NodeId>,
}

/// The r closest nodes this node knows to a held mailbox's key, itself included.
#[derive(Debug, Clone)]
pub(super) struct MailboxView {
    key: NodeId,
    /// Closest first, at most r.
    members: Vec<(Distance, NodeId)>,
}

impl Dht {
    /// The mailboxes this node holds for others, if it holds any
    /// ([`DhtConfig::mailbox`](super::DhtConfig::mailbox)).
    pub fn mailbox(&self) -> Option<&MailboxStore> {
        self.mailbox.as_ref()
    }

    /// Deposits `item` (signed by this node as sender) in its recipient's mailbox: looks up the
    /// mailbox key and sends `MAILBOX_PUT` to the r closest nodes found, keeping it too if this
    /// node is one of them. [`Event::Deposited`] tells how many accepted, and whether this node
    /// is one of them.
    pub fn deposit(&mut self, item: MailboxItem, now_ms: u64) -> Result<LookupId, DhtError> {
        let target = mailbox_key(item.recipient());
        self.start(target, LookupPurpose::Deposit(Box::new(item)), now_ms)
    }

    /// Fetches this node's own mailbox from the r closest nodes to its key:
    /// [`Event::MailboxItems`], then [`Event::MailboxFetched`].
    pub fn fetch_mailbox(&mut self, now_ms: u64) -> Result<LookupId, DhtError> {
        let target = mailbox_key(&self.local);
        self.start(target, LookupPurpose::FetchMailbox, now_ms)
    }

    /// Sends the recipient's signed delete request to the r closest nodes to its mailbox key
    /// (applying it here too if this node is one): [`Event::MailboxDeleted`].
    pub fn delete_from_mailbox(
        &mut self,
        request: MailboxDelete,
        now_ms: u64,
    ) -> Result<LookupId, DhtError> {
        let target = mailbox_key(&request.recipient_id());
        self.start(
            target,
            LookupPurpose::DeleteFromMailbox(Box::new(request)),
            now_ms,
        )
    }

    /// Reloads the items this node held before a restart (from its database) at `now_ms`;
    /// returns how many were restored. Each item that cannot be (expired, or over the total
    /// quota) is reported as [`Event::MailboxRemoved`] so that the node forgets it too. Restored
    /// items are handed on at the next maintenance tick.
    pub fn restore_mailbox(
        &mut self,
        items: impl IntoIterator<Item = MailboxItem>,
        now_ms: u64,
    ) -> usize {
        let mut restored = 0;
        for item in items {
            let recipient = *item.recipient();
            let message_id = *item.message_id();
            let result = match self.mailbox.as_mut() {
                Some(store) => store.restore(item, now_ms),
                None => Err(MailboxError::NotHolding),
            };
            match result {
                Ok(MailboxPut::Stored) => {
                    restored += 1;
                    self.ensure_view(&recipient);
                }
                Ok(MailboxPut::Duplicate) => {}
                Err(_) => self.events.push_back(Event::MailboxRemoved {
                    recipient,
                    message_id,
                }),
            }
        }
        restored
    }

    // ---- holder side: the three RPCs --------------------------------------------------------

    pub(super) fn serve_mailbox_put(&mut self, item: MailboxItem, now_ms: u64) -> Response {
        let result = self.mailbox_put_local(item, now_ms);
        let (accepted, reason) = match result {
            Ok(_) => (true, MailboxRefusal::None),
            Err(e) => (false, MailboxRefusal::of(&e)),
        };
        Response::MailboxStored {
            accepted,
            reason: reason.code(),
        }
    }

    pub(super) fn serve_mailbox_fetch(
        &mut self,
        requester: &NodeId,
        limit_bytes: u32,
        after: Option<MessageId>,
        now_ms: u64,
    ) -> Response {
        self.expire_mailbox(now_ms);
        let limit = (limit_bytes as usize).clamp(MAX_MAILBOX_ITEM_LEN, MAX_MAILBOX_FETCH_BYTES);
        let (items, more) = match &self.mailbox {
            Some(store) => store.fetch_after(requester, after.as_ref(), limit),
            None => (Vec::new(), false),
        };
        Response::MailboxItems { items, more }
    }

    pub(super) fn serve_mailbox_delete(
        &mut self,
        request: &MailboxDelete,
        now_ms: u64,
    ) -> Response {
        let removed = self.mailbox_delete_local(request, now_ms);
        Response::MailboxDeleted {
            removed: u32::try_from(removed).unwrap_or(u32::MAX),
        }
    }

    fn mailbox_put_local(
        &mut self,
        item: MailboxItem,
        now_ms: u64,
    ) -> Result<MailboxPut, MailboxError> {
        let store = self.mailbox.as_mut().ok_or(MailboxError::NotHolding)?;
        let result = store.put(item.clone(), now_ms);
        if result == Ok(MailboxPut::Stored) {
            self.ensure_view(item.recipient());
            self.events.push_back(Event::MailboxStored(item));
        }
        result
    }

    fn mailbox_delete_local(&mut self, request: &MailboxDelete, now_ms: u64) -> usize {
        let Some(store) = self.mailbox.as_mut() else {
            return 0;
        };
        let ids = store.delete_ids(request, now_ms).unwrap_or_default();
        let recipient = request.recipient_id();
        for id in &ids {
            self.mailbox_removed(recipient, *id);
        }
        ids.len()
    }

    fn expire_mailbox(&mut self, now_ms: u64) {
        let Some(store) = self.mailbox.as_mut() else {
            return;
        };
        for (recipient, id) in store.expire(now_ms) {
            self.mailbox_removed(recipient, id);
        }
    }

    /// Reports a removal and forgets the mailbox's view once it is empty.
    fn mailbox_removed(&mut self, recipient: NodeId, message_id: MessageId) {
        self.events.push_back(Event::MailboxRemoved {
            recipient,
            message_id,
        });
        let empty = self
            .mailbox
            .as_ref()
            .is_none_or(|s| s.items_for(&recipient).next().is_none());
        if empty {
            self.mailbox_views.remove(&recipient);
            self.handoff_due.remove(&recipient);
        }
    }

    // ---- holder side: views, hand-off, replication ------------------------------------------

    /// Replication and hand-off lookups leave half of [`DhtConfig::max_lookups`](crate::DhtConfig::max_lookups) to the node's
    /// own.
    fn replication_room(&self) -> bool {
        self.lookups.len() < self.config.max_lookups / 2
    }

    fn replicas(&self) -> usize {
        self.config.mailbox_replicas.max(1)
    }

    /// Starts a view of `recipient`'s mailbox from the routing table, if there is none.
    fn ensure_view(&mut self, recipient: &NodeId) {
        if self.mailbox_views.contains_key(recipient) {
            return;
        }
        let key = mailbox_key(recipient);
        let r = self.replicas();
        let mut members: Vec<(Distance, NodeId)> = self
            .table
            .closest(&key, r)
            .into_iter()
            .map(|c| (c.id.distance(&key), c.id))
            .collect();
        members.push((self.local.distance(&key), self.local));
        members.sort();
        members.truncate(r);
        self.mailbox_views
            .insert(*recipient, MailboxView { key, members });
    }

    /// A peer entered the routing table: if it is closer to a held mailbox than the farthest
    /// holder known, that mailbox is handed on soon.
    pub(super) fn mailbox_peer_seen(&mut self, peer: &NodeId, now_ms: u64) {
        let r = self.replicas();
        let mut due = false;
        for (recipient, view) in self.mailbox_views.iter_mut() {
            let d = peer.distance(&view.key);
            let closer = view.members.len() < r || view.members.last().is_some_and(|(f, _)| d < *f);
            if !closer || view.members.iter().any(|(_, id)| id == peer) {
                continue;
            }
            let pos = view.members.partition_point(|(x, _)| *x < d);
            view.members.insert(pos, (d, *peer));
            view.members.truncate(r);
            let marks = self.handoff_due.entry(*recipient).or_default();
            marks.insert(*peer);
            // Only newcomers still among the r closest matter.
            marks.retain(|id| view.members.iter().any(|(_, m)| m == id));
            due = true;
        }
        if due {
            let at = now_ms.saturating_add(self.config.mailbox_handoff_delay_ms);
            self.next_handoff_ms = self.next_handoff_ms.min(at);
        }
    }

    /// Hands the marked mailboxes on to their newcomers, within the round's bounds.
    pub(super) fn mailbox_handoffs(&mut self, now_ms: u64) {
        self.next_handoff_ms = u64::MAX;
        let mut budget = self.config.mailbox_items_per_round;
        let due: Vec<NodeId> = self.handoff_due.keys().copied().collect();
        for recipient in due {
            if budget == 0 || !self.replication_room() {
                break;
            }
            let Some(newcomers) = self.handoff_due.remove(&recipient) else {
                continue;
            };
            let items: Vec<MessageId> = match &self.mailbox {
                Some(store) => store
                    .items_for(&recipient)
                    .take(budget)
                    .map(|i| *i.message_id())
                    .collect(),
                None => Vec::new(),
            };
            if items.is_empty() || newcomers.is_empty() {
                continue;
            }
            budget -= items.len();
            let skip = self
                .mailbox_views
                .get(&recipient)
                .map(|v| {
                    v.members
                        .iter()
                        .map(|(_, id)| *id)
                        .filter(|id| !newcomers.contains(id))
                        .collect()
                })
                .unwrap_or_default();
            self.start_replication(recipient, ReplicatePlan { items, skip }, now_ms);
        }
        if !self.handoff_due.is_empty() {
            let at = now_ms.saturating_add(self.config.mailbox_handoff_delay_ms);
            self.next_handoff_ms = at;
        }
    }

    /// Expires items and starts the periodic replication of the items due.
    pub(super) fn mailbox_maintenance(&mut self, now_ms: u64) {
        self.expire_mailbox(now_ms);
        let Some(store) = self.mailbox.as_mut() else {
            return;
        };
        let due = store.due_replication(now_ms, self.config.mailbox_items_per_round);
        let mut by_recipient: BTreeMap<NodeId, Vec<MessageId>> = BTreeMap::new();
        for (recipient, id) in due {
            by_recipient.entry(recipient).or_default().push(id);
        }
        let next = now_ms.saturating_add(self.config.mailbox_replicate_interval_ms);
        for (recipient, items) in by_recipient {
            if !self.replication_room() {
                break;
            }
            if let Some(store) = self.mailbox.as_mut() {
                for id in &items {
                    store.replicated(&recipient, id, next);
                }
            }
            let plan = ReplicatePlan {
                items,
                skip: BTreeSet::new(),
            };
            self.start_replication(recipient, plan, now_ms);
        }
    }

    fn start_replication(&mut self, recipient: NodeId, plan: ReplicatePlan, now_ms: u64) {
        let target = mailbox_key(&recipient);
        if let Ok(lid) = self.start(target, LookupPurpose::ReplicateMailbox(recipient), now_ms) {
            // The lookup may have ended at once (an empty table): the plan is then unused.
            if self.lookups.contains_key(&lid) {
                self.mailbox_plans.insert(lid, plan);
            }
        }
    }

    // ---- the end of a mailbox lookup ----------------------------------------------------------

    /// The holders a node asks for its own mailbox (fetch, delete): the r closest others that
    /// answered, and whether it is itself one of the r closest (its own store is read too).
    /// Senders deposited while it was away, at the r closest without it: the r-th of them may
    /// hold items too.
    fn own_mailbox_holders(&self, target: &NodeId, closest: &[Contact]) -> (Vec<Contact>, bool) {
        let (_, local_in) = self.holders(target, closest);
        let holders = closest
            .iter()
            .filter(|c| c.id != self.local)
            .take(self.replicas())
            .copied()
            .collect();
        (holders, local_in)
    }

    /// The holders of a mailbox lookup: the r closest that answered, and whether this node is one
    /// of the r (it then takes one of the places).
    fn holders(&self, target: &NodeId, closest: &[Contact]) -> (Vec<Contact>, bool) {
        let r = self.replicas();
        let own = self.local.distance(target);
        let closer = closest
            .iter()
            .filter(|c| c.id.distance(target) < own)
            .count();
        let local_in = closer < r;
        let n = if local_in { r - 1 } else { r };
        let holders = closest
            .iter()
            .filter(|c| c.id != self.local)
            .take(n)
            .copied()
            .collect();
        (holders, local_in)
    }

    pub(super) fn mailbox_lookup_done(
        &mut self,
        lid: LookupId,
        purpose: LookupPurpose,
        closest: &[Contact],
        now_ms: u64,
    ) {
        match purpose {
            LookupPurpose::Deposit(item) => {
                let key = mailbox_key(item.recipient());
                let (holders, local_in) = self.holders(&key, closest);
                let (mut accepted, mut refused, mut held_here, mut taken) = (0, 0, false, 0);
                if local_in && self.mailbox.is_some() {
                    match self.mailbox_put_local((*item).clone(), now_ms) {
                        Ok(_) => {
                            accepted += 1;
                            held_here = true;
                        }
                        Err(e) => {
                            refused += 1;
                            taken += u32::from(e == MailboxError::Deleted);
                        }
                    }
                }
                let message_id = *item.message_id();
                for h in &holders {
                    let request = Request::MailboxPut { item: item.clone() };
                    let what = MailboxPending::Put(message_id);
                    self.send(*h, request, PendingKind::Mailbox { op: lid, what }, now_ms);
                }
                let op = MailboxOp::Deposit {
                    message_id,
                    outstanding: holders.len() as u32,
                    accepted,
                    refused,
                    held_here,
                    taken,
                };
                self.mailbox_ops.insert(lid, op);
            }
            LookupPurpose::FetchMailbox => {
                let key = mailbox_key(&self.local);
                let (holders, local_in) = self.own_mailbox_holders(&key, closest);
                let mut seen = BTreeSet::new();
                let mut items = 0;
                if local_in {
                    let local = self.local;
                    let own: Vec<MailboxItem> = self
                        .mailbox
                        .as_ref()
                        .map(|s| {
                            s.items_for(&local)
                                .filter(|i| i.expires_at_ms() > now_ms)
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    let own: Vec<MailboxItem> = own
                        .into_iter()
                        .filter(|i| seen.insert(*i.message_id()))
                        .collect();
                    if !own.is_empty() {
                        items = own.len() as u32;
                        self.events.push_back(Event::MailboxItems {
                            lookup: lid,
                            items: own,
                        });
                    }
                }
                for h in &holders {
                    self.send_fetch(lid, *h, None, 0, now_ms);
                }
                let op = MailboxOp::Fetch {
                    outstanding: holders.len() as u32,
                    seen,
                    holders: 0,
                    items,
                };
                self.mailbox_ops.insert(lid, op);
            }
            LookupPurpose::DeleteFromMailbox(request) => {
                let key = mailbox_key(&request.recipient_id());
                let (holders, local_in) = self.own_mailbox_holders(&key, closest);
                let mut removed = 0;
                if local_in {
                    removed = self.mailbox_delete_local(&request, now_ms) as u32;
                }
                for h in &holders {
                    let r = Request::MailboxDelete {
                        request: request.clone(),
                    };
                    let what = MailboxPending::Delete;
                    self.send(*h, r, PendingKind::Mailbox { op: lid, what }, now_ms);
                }
                let op = MailboxOp::Delete {
                    outstanding: holders.len() as u32,
                    holders: 0,
                    removed,
                };
                self.mailbox_ops.insert(lid, op);
            }
            LookupPurpose::ReplicateMailbox(recipient) => {
                let plan = self.mailbox_plans.remove(&lid);
                let key = mailbox_key(&recipient);
                let (holders, local_in) = self.holders(&key, closest);
                if let Some(view) = self.mailbox_views.get_mut(&recipient) {
                    view.members = holders
                        .iter()
                        .map(|c| (c.id.distance(&key), c.id))
                        .chain(local_in.then(|| (self.local.distance(&key), self.local)))
                        .collect();
                    view.members.sort();
                }
                let Some(plan) = plan else {
                    return;
                };
                let targets: Vec<Contact> = holders
                    .into_iter()
                    .filter(|c| !plan.skip.contains(&c.id))
                    .collect();
                let items: Vec<MailboxItem> = match &self.mailbox {
                    Some(store) => plan
                        .items
                        .iter()
                        .filter_map(|id| store.get(&recipient, id).cloned())
                        .collect(),
                    None => Vec::new(),
                };
                let mut outstanding = 0;
                let mut accepted = BTreeMap::new();
                for item in items {
                    let id = *item.message_id();
                    accepted.insert(id, 0);
                    let item = Box::new(item);
                    for t in &targets {
                        let request = Request::MailboxPut { item: item.clone() };
                        let what = MailboxPending::Put(id);
                        self.send(*t, request, PendingKind::Mailbox { op: lid, what }, now_ms);
                        outstanding += 1;
                    }
                }
                let op = MailboxOp::Replicate {
                    recipient,
                    outstanding,
                    drop_accepted: !local_in && plan.skip.is_empty(),
                    targets: targets.len() as u32,
                    accepted,
                };
                self.mailbox_ops.insert(lid, op);
            }
            _ => return,
        }
        self.mailbox_op_check(lid);
    }

    fn send_fetch(
        &mut self,
        op: LookupId,
        to: Contact,
        after: Option<MessageId>,
        page: u32,
        now_ms: u64,
    ) {
        let request = Request::MailboxFetch {
            limit_bytes: MAX_MAILBOX_FETCH_BYTES as u32,
            after,
        };
        let what = MailboxPending::Fetch { page };
        self.send(to, request, PendingKind::Mailbox { op, what }, now_ms);
    }

    /// The answer (or, with `None`, the failure) of a mailbox request to `from`.
    pub(super) fn mailbox_answer(
        &mut self,
        op_id: LookupId,
        what: MailboxPending,
        from: Contact,
        response: Option<Response>,
        now_ms: u64,
    ) {
        let local = self.local;
        let Some(op) = self.mailbox_ops.get_mut(&op_id) else {
            return;
        };
        let mut next_page = None;
        let mut fresh_items = Vec::new();
        match (op, what, response) {
            (
                MailboxOp::Deposit {
                    outstanding,
                    accepted,
                    refused,
                    taken,
                    ..
                },
                MailboxPending::Put(_),
                response,
            ) => {
                *outstanding = outstanding.saturating_sub(1);
                match response {
                    Some(Response::MailboxStored { accepted: true, .. }) => *accepted += 1,
                    Some(Response::MailboxStored { reason, .. })
                        if MailboxRefusal::from_code(reason) == MailboxRefusal::Deleted =>
                    {
                        *refused += 1;
                        *taken += 1;
                    }
                    _ => *refused += 1,
                }
            }
            (
                MailboxOp::Replicate {
                    outstanding,
                    accepted,
                    ..
                },
                MailboxPending::Put(id),
                response,
            ) => {
                *outstanding = outstanding.saturating_sub(1);
                // Held there, or deleted by the recipient (a tombstone there): either way the
                // target has dealt with it.
                let settled = match response {
                    Some(Response::MailboxStored { accepted, reason }) => {
                        accepted || MailboxRefusal::from_code(reason) == MailboxRefusal::Deleted
                    }
                    _ => false,
                };
                if settled {
                    if let Some(n) = accepted.get_mut(&id) {
                        *n += 1;
                    }
                }
            }
            (
                MailboxOp::Fetch {
                    outstanding,
                    seen,
                    holders,
                    items: count,
                },
                MailboxPending::Fetch { page },
                response,
            ) => match response {
                Some(Response::MailboxItems { items, more }) => {
                    let last = items.last().map(|i| *i.message_id());
                    for item in items {
                        if *item.recipient() == local
                            && item.expires_at_ms() > now_ms
                            && seen.insert(*item.message_id())
                        {
                            fresh_items.push(item);
                        }
                    }
                    *count += fresh_items.len() as u32;
                    if more && last.is_some() && page + 1 < MAX_MAILBOX_FETCH_PAGES {
                        next_page = Some((last, page + 1));
                    } else {
                        *outstanding = outstanding.saturating_sub(1);
                        *holders += 1;
                    }
                }
                _ => *outstanding = outstanding.saturating_sub(1),
            },
            (
                MailboxOp::Delete {
                    outstanding,
                    holders,
                    removed,
                },
                MailboxPending::Delete,
                response,
            ) => {
                *outstanding = outstanding.saturating_sub(1);
                if let Some(Response::MailboxDeleted { removed: n }) = response {
                    *holders += 1;
                    *removed = removed.saturating_add(n);
                }
            }
            (op, _, _) => {
                let o = op.outstanding();
                *o = o.saturating_sub(1);
            }
        }
        if !fresh_items.is_empty() {
            self.events.push_back(Event::MailboxItems {
                lookup: op_id,
                items: fresh_items,
            });
        }
        if let Some((after, page)) = next_page {
            self.send_fetch(op_id, from, after, page, now_ms);
        }
        self.mailbox_op_check(op_id);
    }

    /// Ends an operation whose requests are all answered.
    fn mailbox_op_check(&mut self, op_id: LookupId) {
        let done = self
            .mailbox_ops
            .get_mut(&op_id)
            .is_some_and(|op| *op.outstanding() == 0);
        if !done {
            return;
        }
        let Some(op) = self.mailbox_ops.remove(&op_id) else {
            return;
        };
        match op {
            MailboxOp::Deposit {
                message_id,
                accepted,
                refused,
                held_here,
                taken,
                ..
            } => self.events.push_back(Event::Deposited {
                lookup: op_id,
                message_id,
                accepted,
                refused,
                held_here,
                taken,
            }),
            MailboxOp::Fetch { holders, items, .. } => {
                self.events.push_back(Event::MailboxFetched {
                    lookup: op_id,
                    holders,
                    items,
                })
            }
            MailboxOp::Delete {
                holders, removed, ..
            } => self.events.push_back(Event::MailboxDeleted {
                lookup: op_id,
                holders,
                removed,
            }),
            MailboxOp::Replicate {
                recipient,
                drop_accepted,
                targets,
                accepted,
                ..
            } => {
                if !drop_accepted || targets == 0 {
                    return;
                }
                for (id, n) in accepted {
                    if n < targets {
                        continue;
                    }
                    let removed = self
                        .mailbox
                        .as_mut()
                        .and_then(|s| s.remove(&recipient, &id))
                        .is_some();
                    if removed {
                        self.mailbox_removed(recipient, id);
                    }
                }
            }
        }
    }
}
