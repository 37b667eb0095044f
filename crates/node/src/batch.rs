//! Chats that callers of `send_chat` wait on, gathered per peer so that those waiting together
//! leave together: one envelope ([`Chats`]), one ratchet step, one stream, one receipt.
//!
//! A caller queues its chat and, if fewer than [`MAX_DRAINERS`] drainers serve that peer
//! ([`MAX_DRAINERS_BUSY`] while more than a full batch waits), starts one. A drainer takes the oldest chats that fit one batch ([`MAX_BATCH_CHATS`],
//! [`MAX_BATCH_LEN`]), sends them, hands each caller its outcome, and goes on until the
//! queue is empty. With one caller at a time a batch is that one chat, sent as a plain `Chat`;
//! with many, each round trip carries what queued during the previous one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use dp2ptcs_types::NodeId;
use dp2ptcs_wire::{Chat, Chats, MAX_BATCH_CHATS, MAX_BATCH_LEN};
use tokio::sync::oneshot;

use crate::outbox::InFlight;
use crate::sessions::lock;
use crate::NodeError;

/// Batches in flight to one peer at once, normally: while one waits for its receipt, the next
/// is being encrypted and the one after is filling.
pub(crate) const MAX_DRAINERS: usize = 3;
/// Batches in flight to one peer at once while more than a full batch waits (large chats fill
/// a batch with a few): as many chats in flight as if each had its own request, up to this.
pub(crate) const MAX_DRAINERS_BUSY: usize = 16;

/// One caller's chat, and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// The chat, not recorded yet.
    pub(crate) chat: Chat,
    /// When it expires (Unix milliseconds).
    pub(crate) expires_at_ms: u64,
    /// Keeps the outbox from sending the chat too until its outcome is known, even if the
    /// caller stopped waiting.
    pub(crate) claim: InFlight,
    /// The caller.
    pub(crate) done: oneshot::Sender<Result<(), NodeError>>,
}

#[derive(Debug, Default)]
struct PeerQueue {
    waiting: VecDeque<Waiting>,
    /// Encoded size of `waiting` in a batch ([`Chats::entry_len`]).
    bytes: usize,
    drainers: usize,
}

impl PeerQueue {
    /// Whether what waits needs more than one batch.
    fn over_one_batch(&self) -> bool {
        self.waiting.len() > MAX_BATCH_CHATS || self.bytes > MAX_BATCH_LEN
    }
}

#[derive(Debug, Default)]
struct Queues {
    peers: HashMap<NodeId, PeerQueue>,
    closed: bool,
}

/// The per-peer queues.
#[derive(Debug, Default)]
pub(crate) struct SendQueues {
    queues: Mutex<Queues>,
}

/// What became of a queued chat.
#[derive(Debug)]
pub(crate) enum Pushed {
    /// Queued; the caller must run this drainer.
    Drain(Drainer),
    /// Queued; enough drainers serve the peer already.
    Queued,
    /// The node is stopping: nothing is queued any more (the chat was dropped, so its outcome
    /// is gone).
    Closed,
}

/// The right to drain one peer's queue, counted against [`MAX_DRAINERS`] until it ends, even if
/// the task running it is dropped before it finishes (or before it starts).
#[derive(Debug)]
pub(crate) struct Drainer {
    queues: Arc<SendQueues>,
    peer: NodeId,
    counted: bool,
}

impl SendQueues {
    /// Queues `w` for `peer`.
    pub(crate) fn push(self: &Arc<Self>, peer: NodeId, w: Waiting) -> Pushed {
        let mut queues = lock(&self.queues);
        if queues.closed {
            drop(w);
            return Pushed::Closed;
        }
        let q = queues.peers.entry(peer).or_default();
        q.bytes += Chats::entry_len(&w.chat);
        q.waiting.push_back(w);
        let wanted = if q.over_one_batch() {
            MAX_DRAINERS_BUSY
        } else {
            MAX_DRAINERS
        };
        if q.drainers < wanted {
            q.drainers += 1;
            Pushed::Drain(Drainer {
                queues: self.clone(),
                peer,
                counted: true,
            })
        } else {
            Pushed::Queued
        }
    }

    /// Refuses every later chat and drops every queued one: their callers find their outcome
    /// gone and keep the chat in the outbox themselves.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut queues = lock(&self.queues);
            queues.closed = true;
            std::mem::take(&mut queues.peers)
        };
        drop(dropped);
    }
}

impl Drainer {
    /// The next batch: the oldest chats that fit in one envelope. `None` when nothing waits;
    /// the drainer is then no longer counted and must end.
    pub(crate) fn next_batch(&mut self) -> Option<Vec<Waiting>> {
        if !self.counted {
            return None;
        }
        let mut queues = lock(&self.queues.queues);
        let Some(q) = queues.peers.get_mut(&self.peer) else {
            // Closed.
            self.counted = false;
            return None;
        };
        let mut batch = Vec::new();
        let mut len = 0;
        while let Some(next) = q.waiting.front() {
            let entry = Chats::entry_len(&next.chat);
            if !batch.is_empty() && (batch.len() == MAX_BATCH_CHATS || len + entry > MAX_BATCH_LEN)
            {
                break;
            }
            len += entry;
            batch.extend(q.waiting.pop_front());
        }
        q.bytes -= len;
        if batch.is_empty() {
            self.counted = false;
            release(&mut queues, self.peer);
            return None;
        }
        Some(batch)
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        if self.counted {
            // Stopped early: if it was the last drainer, nobody would send what still waits,
            // so it is handed back (its callers keep it in the outbox).
            let mut queues = lock(&self.queues.queues);
            let orphans = release(&mut queues, self.peer);
            drop(queues);
            drop(orphans);
        }
    }
}

/// One drainer of `peer` less; the peer's queue goes when its last drainer does. Returns what
/// was left in it then.
fn release(queues: &mut Queues, peer: NodeId) -> Option<PeerQueue> {
    let q = queues.peers.get_mut(&peer)?;
    q.drainers = q.drainers.saturating_sub(1);
    if q.drainers == 0 {
        queues.peers.remove(&peer)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use dp2ptcs_types::MessageId;
    use dp2ptcs_wire::MAX_CHAT_BODY_LEN;

    use super::*;
    use crate::outbox::Outbox;

    type Outcome = oneshot::Receiver<Result<(), NodeError>>;

    fn waiting(outbox: &Outbox, peer: NodeId, n: u32, body_len: usize) -> (Waiting, Outcome) {
        let (done, rx) = oneshot::channel();
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let id = MessageId::from_bytes(id);
        let w = Waiting {
            chat: Chat {
                id,
                sent_at_ms: 1,
                body: "x".repeat(body_len),
            },
            expires_at_ms: u64::MAX,
            claim: outbox.claim(peer, id).unwrap(),
            done,
        };
        (w, rx)
    }

    /// Queues chats `numbers` of `body_len` bytes for `peer`; returns the drainers they started
    /// and where their outcomes go.
    fn queue_many(
        q: &Arc<SendQueues>,
        outbox: &Outbox,
        peer: NodeId,
        numbers: std::ops::Range<u32>,
        body_len: usize,
    ) -> (Vec<Drainer>, Vec<Outcome>) {
        let (mut drainers, mut receivers) = (Vec::new(), Vec::new());
        for n in numbers {
            let (w, rx) = waiting(outbox, peer, n, body_len);
            receivers.push(rx);
            if let Pushed::Drain(d) = q.push(peer, w) {
                drainers.push(d);
            }
        }
        (drainers, receivers)
    }

    #[test]
    fn batches_are_the_oldest_chats_that_fit_and_drainers_are_bounded() {
        let (q, outbox) = (Arc::new(SendQueues::default()), Outbox::default());
        let peer = NodeId::from_bytes([1; 32]);
        let full = MAX_BATCH_CHATS as u32;
        let (mut drainers, _first) = queue_many(&q, &outbox, peer, 0..full, 64);
        assert_eq!(
            drainers.len(),
            MAX_DRAINERS,
            "one batch's worth: the usual few"
        );
        let (more, _rest) = queue_many(&q, &outbox, peer, full..full + 10, 64);
        drainers.extend(more);
        assert_eq!(
            drainers.len(),
            MAX_DRAINERS + 10,
            "beyond one batch, each chat may bring one more"
        );
        let first = drainers[0].next_batch().unwrap();
        assert_eq!(first.len(), MAX_BATCH_CHATS);
        let ids: Vec<_> = first.iter().map(|w| w.chat.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "oldest first, in order");
        assert_eq!(drainers[1].next_batch().unwrap().len(), 10);
        // Every drainer finds the queue empty and ends; then a new caller starts one again.
        for d in &mut drainers {
            assert!(d.next_batch().is_none());
        }
        assert!(lock(&q.queues).peers.is_empty());
        let (w, _rx) = waiting(&outbox, peer, 999, 1);
        assert!(matches!(q.push(peer, w), Pushed::Drain(_)));
    }

    #[test]
    fn a_batch_stays_within_its_byte_bound_and_a_big_chat_goes_alone() {
        let (q, outbox) = (Arc::new(SendQueues::default()), Outbox::default());
        let peer = NodeId::from_bytes([2; 32]);
        let (drainers, _outcomes) = queue_many(&q, &outbox, peer, 0..5, MAX_CHAT_BODY_LEN);
        let mut drainer = drainers.into_iter().next().unwrap();
        let mut total = 0;
        while let Some(batch) = drainer.next_batch() {
            let chats: Vec<Chat> = batch.iter().map(|w| w.chat.clone()).collect();
            if chats.len() > 1 {
                assert!(Chats { chats }.encode().is_ok(), "every batch encodes");
            }
            total += batch.len();
        }
        assert_eq!(total, 5);
    }

    #[test]
    fn large_chats_waiting_beyond_one_batch_get_more_drainers() {
        let (q, outbox) = (Arc::new(SendQueues::default()), Outbox::default());
        let peer = NodeId::from_bytes([5; 32]);
        let (mut drainers, _outcomes) = queue_many(&q, &outbox, peer, 0..40, 16 * 1024);
        assert_eq!(drainers.len(), MAX_DRAINERS_BUSY);
        let mut sent = 0;
        for d in &mut drainers {
            while let Some(batch) = d.next_batch() {
                assert!(batch.len() <= 3, "three 16 KiB chats fill a batch");
                sent += batch.len();
            }
        }
        assert_eq!(sent, 40);
        assert!(lock(&q.queues).peers.is_empty());
    }

    #[test]
    fn a_drainer_dropped_early_hands_back_what_waits_and_is_no_longer_counted() {
        let (q, outbox) = (Arc::new(SendQueues::default()), Outbox::default());
        let peer = NodeId::from_bytes([3; 32]);
        let (w, mut first) = waiting(&outbox, peer, 1, 8);
        let Pushed::Drain(d) = q.push(peer, w) else {
            panic!("the first chat starts a drainer");
        };
        // Its task was cancelled before it ran.
        drop(d);
        assert!(
            first
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed),
            "the caller learns at once that nobody will send it"
        );
        assert!(
            outbox
                .claim(
                    peer,
                    MessageId::from_bytes([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                )
                .is_some(),
            "its claim is released"
        );
        let (w, _rx) = waiting(&outbox, peer, 2, 8);
        assert!(
            matches!(q.push(peer, w), Pushed::Drain(_)),
            "the next chat gets a drainer"
        );
    }

    #[test]
    fn closing_drops_what_waits_and_refuses_the_rest() {
        let (q, outbox) = (Arc::new(SendQueues::default()), Outbox::default());
        let peer = NodeId::from_bytes([4; 32]);
        let (mut drainers, receivers) = queue_many(&q, &outbox, peer, 0..10, 8);
        q.close();
        for mut rx in receivers {
            assert!(rx
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        }
        for d in &mut drainers {
            assert!(d.next_batch().is_none());
        }
        let (w, _rx) = waiting(&outbox, peer, 99, 8);
        assert!(matches!(q.push(peer, w), Pushed::Closed));
    }
}
