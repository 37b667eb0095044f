//! The durable outbox: every outgoing message is recorded before it is sent, and a message
//! without its end-to-end receipt is retried, with exponential backoff and jitter per peer,
//! until the receipt arrives — across connection losses and restarts of either side.
//!
//! The messages themselves live in the store (`queued` or `sent` outgoing messages are the
//! outbox); this module holds only the in-memory scheduling state: which messages are being
//! transmitted right now, which peers have a worker, and each peer's backoff. Each peer's
//! messages are sent one batch at a time, oldest first, so they arrive in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dp2ptcs_types::{MessageId, NodeId};
use rand::Rng;
use tokio::sync::Notify;

use crate::sessions::lock;

/// A peer's retry schedule.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    next_at: Instant,
}

/// Scheduling state of the outbox (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    wake: Notify,
    /// Messages being transmitted now, by a worker or by a direct send: never twice at once.
    in_flight: Arc<Mutex<HashSet<(NodeId, MessageId)>>>,
    /// Peers with a running worker.
    busy: Mutex<HashSet<NodeId>>,
    /// Peers whose last attempt failed (at most one entry per contact with queued messages).
    backoff: Mutex<HashMap<NodeId, Backoff>>,
}

/// Marks a message in flight until dropped; owned, so it can travel with the message to
/// whichever task sends it.
#[derive(Debug)]
pub(crate) struct InFlight {
    in_flight: Arc<Mutex<HashSet<(NodeId, MessageId)>>>,
    key: (NodeId, MessageId),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.key);
    }
}

impl Outbox {
    /// Makes the worker loop look at the outbox now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Outbox::wake`] is called (or returns at once if it was called since the
    /// last wait).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Claims `id` for transmission; `None` if it is already being transmitted.
    pub(crate) fn claim(&self, peer: NodeId, id: MessageId) -> Option<InFlight> {
        // Not `then_some`: it would build (and drop, releasing the other claim) a guard even
        // when the insert fails.
        let inserted = lock(&self.in_flight).insert((peer, id));
        if inserted {
            Some(InFlight {
                in_flight: self.in_flight.clone(),
                key: (peer, id),
            })
        } else {
            None
        }
    }

    /// Claims the worker slot of `peer` if it is free and its backoff has passed. Otherwise
    /// returns when it should be looked at again (`None`: when its worker finishes).
    pub(crate) fn claim_peer(&self, peer: NodeId, now: Instant) -> Result<(), Option<Instant>> {
        if let Some(b) = lock(&self.backoff).get(&peer) {
            if b.next_at > now {
                return Err(Some(b.next_at));
            }
        }
        if lock(&self.busy).insert(peer) {
            Ok(())
        } else {
            Err(None)
        }
    }

    /// Releases the worker slot of `peer` and wakes the loop.
    pub(crate) fn release_peer(&self, peer: NodeId) {
        lock(&self.busy).remove(&peer);
        self.wake();
    }

    /// Records a failed attempt: the next one waits `initial × 2^(failures−1)`, at most `max`,
    /// times a random factor in [0.5, 1.5).
    pub(crate) fn failed(&self, peer: NodeId, now: Instant, initial: Duration, max: Duration) {
        let mut map = lock(&self.backoff);
        let failures = map.get(&peer).map_or(0, |b| b.failures).saturating_add(1);
        let delay = initial
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(max)
            .mul_f64(rand::rngs::OsRng.gen_range(0.5..1.5));
        map.insert(
            peer,
            Backoff {
                failures,
                next_at: now + delay,
            },
        );
    }

    /// Forgets `peer`'s failures (it answered, or it just connected to us) and, if it had
    /// failed, wakes the loop to send what waits for it. A peer that had not failed has nothing
    /// waiting that a pass would not already handle (`queue_chat` wakes the loop itself), so
    /// the common case, a receipt from a healthy peer, costs no outbox pass.
    pub(crate) fn reachable(&self, peer: NodeId) {
        if lock(&self.backoff).remove(&peer).is_some() {
            self.wake();
        }
    }

    /// Forgets the backoff of every peer with nothing waiting any more (its messages expired,
    /// were cancelled, or were delivered through another path) once it has passed: a peer
    /// whose attempt failed after `waiting` was read keeps its own.
    pub(crate) fn forget_all_but(&self, waiting: &HashSet<NodeId>, now: Instant) {
        lock(&self.backoff).retain(|peer, b| waiting.contains(peer) || b.next_at > now);
    }

    /// The number of peers currently backing off.
    pub(crate) fn backing_off(&self) -> usize {
        lock(&self.backoff).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_claimed_once_at_a_time() {
        let outbox = Outbox::default();
        let (peer, id) = (NodeId::from_bytes([1; 32]), MessageId::from_bytes([2; 16]));
        let first = outbox.claim(peer, id);
        assert!(first.is_some());
        assert!(outbox.claim(peer, id).is_none());
        drop(first);
        assert!(outbox.claim(peer, id).is_some());
    }

    #[test]
    fn backoff_grows_is_capped_and_resets() {
        let outbox = Outbox::default();
        let peer = NodeId::from_bytes([1; 32]);
        let now = Instant::now();
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(outbox.claim_peer(peer, now), Ok(()));
        assert_eq!(
            outbox.claim_peer(peer, now),
            Err(None),
            "one worker per peer"
        );
        outbox.release_peer(peer);
        let mut last = Duration::ZERO;
        for failures in 1..=10u32 {
            outbox.failed(peer, now, initial, max);
            let Err(Some(at)) = outbox.claim_peer(peer, now) else {
                panic!("backing off")
            };
            let wait = at - now;
            let nominal = initial.saturating_mul(1 << (failures - 1)).min(max);
            assert!(wait >= nominal.mul_f64(0.5) && wait < nominal.mul_f64(1.5));
            last = wait;
        }
        assert!(last < max.mul_f64(1.5));
        assert_eq!(outbox.backing_off(), 1);
        outbox.reachable(peer);
        assert_eq!(outbox.claim_peer(peer, now), Ok(()));
        assert_eq!(outbox.backing_off(), 0);
    }

    #[test]
    fn the_backoff_of_a_peer_with_nothing_waiting_goes_once_it_has_passed() {
        let outbox = Outbox::default();
        let (waits, idle) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let now = Instant::now();
        let second = Duration::from_secs(1);
        outbox.failed(waits, now, second, second);
        outbox.failed(idle, now, second, second);
        let waiting = HashSet::from([waits]);
        // Its attempt may have failed after `waiting` was read: kept until its backoff passed.
        outbox.forget_all_but(&waiting, now);
        assert_eq!(outbox.backing_off(), 2);
        outbox.forget_all_but(&waiting, now + 2 * second);
        assert_eq!(outbox.backing_off(), 1);
        assert!(outbox.claim_peer(idle, now).is_ok(), "no backoff left");
        assert!(outbox.claim_peer(waits, now).is_err(), "still backing off");
    }
}
