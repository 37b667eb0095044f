//! Chats that callers of `send_chat` wait on, gathered per peer so that those waiting together
//! leave together: one envelope ([`Chats`]), one ratchet step, one stream, one receipt.
//!
//! A caller queues its chat and, if fewer than [`MAX_DRAINERS`] drainers serve that peer,
//! starts one. A drainer takes the oldest chats that fit one batch ([`MAX_BATCH_CHATS`],
//! [`MAX_BATCH_LEN`]), sends them, hands each caller its outcome, and goes on until the
//! queue is empty. With one caller at a time a batch is that one chat, sent as a plain `Chat`;
//! with many, each round trip carries what queued during the previous one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use dp2ptcs_types::NodeId;
use dp2ptcs_wire::{Chat, Chats, MAX_BATCH_CHATS, MAX_BATCH_LEN};
use tokio::sync::oneshot;

use crate::sessions::lock;
use crate::NodeError;

/// Most batches in flight to one peer at once: while one waits for its receipt, the next is
/// being encrypted and the one after is filling.
pub(crate) const MAX_DRAINERS: usize = 3;

/// One caller's chat, and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// The chat, not recorded yet.
    pub(crate) chat: Chat,
    /// When it expires (Unix milliseconds).
    pub(crate) expires_at_ms: u64,
    /// The caller.
    pub(crate) done: oneshot::Sender<Result<(), NodeError>>,
}

#[derive(Debug, Default)]
struct PeerQueue {
    waiting: VecDeque<Waiting>,
    drainers: usize,
}

/// The per-peer queues.
#[derive(Debug, Default)]
pub(crate) struct SendQueues {
    peers: Mutex<HashMap<NodeId, PeerQueue>>,
}

impl SendQueues {
    /// Queues `w` for `peer`. Returns whether the caller must start a drainer for `peer`.
    pub(crate) fn push(&self, peer: NodeId, w: Waiting) -> bool {
        let mut peers = lock(&self.peers);
        let q = peers.entry(peer).or_default();
        q.waiting.push_back(w);
        if q.drainers < MAX_DRAINERS {
            q.drainers += 1;
            true
        } else {
            false
        }
    }

    /// The next batch for a drainer of `peer`: the oldest chats that fit in one envelope. `None`
    /// when nothing waits; the drainer must then end (it is no longer counted).
    pub(crate) fn next_batch(&self, peer: NodeId) -> Option<Vec<Waiting>> {
        let mut peers = lock(&self.peers);
        let q = peers.get_mut(&peer)?;
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
        if batch.is_empty() {
            q.drainers = q.drainers.saturating_sub(1);
            if q.drainers == 0 {
                peers.remove(&peer);
            }
            return None;
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use dp2ptcs_types::MessageId;
    use dp2ptcs_wire::MAX_CHAT_BODY_LEN;

    use super::*;

    fn waiting(n: u32, body_len: usize) -> (Waiting, oneshot::Receiver<Result<(), NodeError>>) {
        let (done, rx) = oneshot::channel();
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let w = Waiting {
            chat: Chat {
                id: MessageId::from_bytes(id),
                sent_at_ms: 1,
                body: "x".repeat(body_len),
            },
            expires_at_ms: u64::MAX,
            done,
        };
        (w, rx)
    }

    #[test]
    fn batches_are_the_oldest_chats_that_fit_and_drainers_are_bounded() {
        let q = SendQueues::default();
        let peer = NodeId::from_bytes([1; 32]);
        let mut started = 0;
        let mut receivers = Vec::new();
        for n in 0..(MAX_BATCH_CHATS as u32 + 10) {
            let (w, rx) = waiting(n, 64);
            receivers.push(rx);
            started += usize::from(q.push(peer, w));
        }
        assert_eq!(started, MAX_DRAINERS);
        let first = q.next_batch(peer).unwrap();
        assert_eq!(first.len(), MAX_BATCH_CHATS);
        let ids: Vec<_> = first.iter().map(|w| w.chat.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "oldest first, in order");
        assert_eq!(q.next_batch(peer).unwrap().len(), 10);
        // Every drainer finds the queue empty and ends; then a new caller starts one again.
        for _ in 0..MAX_DRAINERS {
            assert!(q.next_batch(peer).is_none());
        }
        assert!(lock(&q.peers).is_empty());
        let (w, _rx) = waiting(999, 1);
        assert!(q.push(peer, w));
    }

    #[test]
    fn a_batch_stays_within_its_byte_bound_and_a_big_chat_goes_alone() {
        let q = SendQueues::default();
        let peer = NodeId::from_bytes([2; 32]);
        let mut receivers = Vec::new();
        for n in 0..5 {
            let (w, rx) = waiting(n, MAX_CHAT_BODY_LEN);
            receivers.push(rx);
            q.push(peer, w);
        }
        let mut total = 0;
        while let Some(batch) = q.next_batch(peer) {
            let chats: Vec<Chat> = batch.iter().map(|w| w.chat.clone()).collect();
            if chats.len() > 1 {
                assert!(Chats { chats }.encode().is_ok(), "every batch encodes");
            }
            total += batch.len();
        }
        assert_eq!(total, 5);
    }
}
