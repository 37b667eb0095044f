//! The iterative lookup state machine (FIND_NODE and FIND_VALUE).
//!
//! A lookup keeps the peers it knows sorted by distance to the target and asks the closest ones it
//! has not asked yet, at most α at a time. It learns closer peers from each answer and ends when
//! the k closest peers it knows that did not fail have all answered, when nothing is left to ask,
//! or (FIND_VALUE) when a valid record arrives.
//!
//! **Disjoint paths** (S/Kademlia): with `paths = d > 1` the starting peers are dealt round-robin
//! to d independent sub-lookups, and a peer is asked by at most one of them: a peer that one path
//! learned is ignored by the others. A node that answers with wrong or self-serving peers can
//! then spoil only the path it sits on; the lookup succeeds if any path reaches the target.
//!
//! **Path.** Every peer asked is recorded once, in the order first asked, with its hop (its depth)
//! and how its request ended ([`PathStep`]), for a caller that shows how a lookup went. It is
//! bounded because the lookup is: a path never forgets a peer it asked and holds at most
//! [`MAX_PEERS_PER_PATH`], so a lookup asks at most `paths ×` [`MAX_PEERS_PER_PATH`] peers however
//! many fresh ids hostile nodes name.
//!
//! The state machine does not know about request ids, time or the network: the
//! [`Dht`](crate::Dht) asks it for the next peer, sends, and reports success or failure.

use std::collections::HashSet;

use dp2ptcs_types::{Distance, NodeId};

use crate::contact::Contact;
use crate::record::Record;

/// Most peers one path remembers; the farthest un-asked ones are forgotten beyond it.
pub const MAX_PEERS_PER_PATH: usize = 8 * crate::K;
/// Requests sent to one peer in one lookup before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 2;

/// How the request to a peer on a lookup's path ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// It answered (contacts or a record).
    Answered,
    /// It did not answer, after [`MAX_ATTEMPTS`] requests.
    Failed,
    /// Its answer was unusable (a record for another key, the wrong message): failed at once.
    Invalid,
    /// No final answer when the lookup ended: a request in flight, or a retry not sent.
    Pending,
}

/// One peer a lookup asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathStep {
    /// The peer.
    pub peer: Contact,
    /// Its hop: 1 for a starting peer (from the routing table), n + 1 for one learned from a peer
    /// of hop n.
    pub hop: u32,
    /// How its request ended.
    pub outcome: StepOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotAsked,
    Waiting,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Peer {
    contact: Contact,
    distance: Distance,
    state: State,
    /// 1 for a starting peer, n + 1 for one learned from a peer of depth n.
    depth: u32,
    /// Requests sent to it.
    attempts: u32,
    /// Its index in [`Lookup::path`], once asked.
    step: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct Path {
    /// Sorted by distance to the target, closest first.
    peers: Vec<Peer>,
}

impl Path {
    fn in_flight(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.state == State::Waiting)
            .count()
    }

    /// The closest peer not asked yet among the k closest that did not fail.
    fn next_candidate(&self, k: usize) -> Option<usize> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state != State::Failed)
            .take(k)
            .find(|(_, p)| p.state == State::NotAsked)
            .map(|(i, _)| i)
    }

    /// Finished when the k closest non-failed peers all answered (and so nothing is left to ask
    /// among them and nothing of them is in flight).
    fn is_finished(&self, k: usize) -> bool {
        self.peers
            .iter()
            .filter(|p| p.state != State::Failed)
            .take(k)
            .all(|p| p.state == State::Answered)
    }

    fn insert(&mut self, peer: Peer) {
        let pos = self.peers.partition_point(|p| p.distance < peer.distance);
        self.peers.insert(pos, peer);
        if self.peers.len() > MAX_PEERS_PER_PATH {
            if let Some(i) = self.peers.iter().rposition(|p| p.state == State::NotAsked) {
                self.peers.remove(i);
            }
        }
    }
}

/// The parameters of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupParams {
    /// How many closest peers must answer (Kademlia's k).
    pub k: usize,
    /// Requests in flight per path (Kademlia's α).
    pub alpha: usize,
    /// Number of disjoint paths (1 = plain Kademlia).
    pub paths: usize,
    /// End as soon as the target node itself has answered (a FIND_NODE whose caller wants to
    /// reach that node, not the k closest).
    pub stop_at_target: bool,
}

/// One iterative lookup. See the module notes in `src/lookup.rs` (design, rules, bounds).
#[derive(Debug, Clone)]
pub struct Lookup {
    target: NodeId,
    params: LookupParams,
    local: NodeId,
    paths: Vec<Path>,
    /// Every peer any path has seen, so that paths stay disjoint and nobody is asked twice.
    seen: HashSet<NodeId>,
    record: Option<Record>,
    want_value: bool,
    target_answered: bool,
    requests: u32,
    max_depth: u32,
    /// Peers asked, in the order first asked (at most `paths ×` [`MAX_PEERS_PER_PATH`]).
    path: Vec<PathStep>,
}

impl Lookup {
    /// A lookup of `target` by node `local`, starting from `seeds` (typically the k closest of
    /// the routing table). With `want_value` it ends at the first record reported.
    pub fn new(
        local: NodeId,
        target: NodeId,
        seeds: Vec<Contact>,
        params: LookupParams,
        want_value: bool,
    ) -> Self {
        let params = LookupParams {
            k: params.k.max(1),
            alpha: params.alpha.max(1),
            paths: params.paths.max(1),
            stop_at_target: params.stop_at_target,
        };
        let mut lookup = Self {
            target,
            params,
            local,
            paths: vec![Path::default(); params.paths],
            seen: HashSet::new(),
            record: None,
            want_value,
            target_answered: false,
            requests: 0,
            max_depth: 0,
            path: Vec::new(),
        };
        let mut seeds = seeds;
        seeds.sort_by_key(|c| c.id.distance(&target));
        let mut slot = 0;
        for c in seeds {
            if c.id == local || !lookup.seen.insert(c.id) {
                continue;
            }
            let path = slot % params.paths;
            slot += 1;
            lookup.paths[path].insert(Peer {
                contact: c,
                distance: c.id.distance(&target),
                state: State::NotAsked,
                depth: 1,
                attempts: 0,
                step: None,
            });
        }
        lookup
    }

    /// The id looked up.
    pub fn target(&self) -> &NodeId {
        &self.target
    }

    /// The next peer to ask, if a path has room in flight and a candidate; it counts as in
    /// flight until [`Lookup::on_success`] or [`Lookup::on_failure`].
    pub fn next_request(&mut self) -> Option<Contact> {
        if self.is_finished() {
            return None;
        }
        let (k, alpha) = (self.params.k, self.params.alpha);
        for path in &mut self.paths {
            if path.in_flight() >= alpha || path.is_finished(k) {
                continue;
            }
            if let Some(i) = path.next_candidate(k) {
                let peer = &mut path.peers[i];
                peer.state = State::Waiting;
                peer.attempts += 1;
                self.requests += 1;
                self.max_depth = self.max_depth.max(peer.depth);
                if peer.step.is_none() {
                    peer.step = Some(self.path.len());
                    self.path.push(PathStep {
                        peer: peer.contact,
                        hop: peer.depth,
                        outcome: StepOutcome::Pending,
                    });
                }
                return Some(peer.contact);
            }
        }
        None
    }

    fn find(&mut self, id: &NodeId) -> Option<(usize, usize)> {
        self.paths.iter().enumerate().find_map(|(pi, p)| {
            p.peers
                .iter()
                .position(|peer| peer.contact.id == *id)
                .map(|i| (pi, i))
        })
    }

    /// `from` answered with `closer` peers (hints, at most k are considered).
    pub fn on_success(&mut self, from: &NodeId, closer: &[Contact]) {
        let Some((pi, i)) = self.find(from) else {
            return;
        };
        let peer = &mut self.paths[pi].peers[i];
        if peer.state != State::Waiting {
            return;
        }
        peer.state = State::Answered;
        let (step, depth) = (peer.step, peer.depth + 1);
        self.set_outcome(step, StepOutcome::Answered);
        if *from == self.target {
            self.target_answered = true;
        }
        // Paths that were dealt no starting peer (a node bootstrapping from one contact) are
        // seeded from the first answers, round-robin with the answering path.
        let mut empty: Vec<usize> = (0..self.paths.len())
            .filter(|&p| p != pi && self.paths[p].peers.is_empty())
            .collect();
        if !empty.is_empty() {
            empty.push(pi);
        }
        let mut slot = 0;
        for c in closer.iter().take(self.params.k) {
            if c.id == self.local || !self.seen.insert(c.id) {
                continue;
            }
            let path = if empty.is_empty() {
                pi
            } else {
                slot += 1;
                empty[(slot - 1) % empty.len()]
            };
            self.paths[path].insert(Peer {
                contact: *c,
                distance: c.id.distance(&self.target),
                state: State::NotAsked,
                depth,
                attempts: 0,
                step: None,
            });
        }
    }

    /// `from` answered with a record (already checked by the caller to be valid and the one
    /// asked for). A newer sequence replaces an older one.
    pub fn on_value(&mut self, from: &NodeId, record: Record) {
        self.on_success(from, &[]);
        let newer = self
            .record
            .as_ref()
            .is_none_or(|r| record.sequence() > r.sequence());
        if newer {
            self.record = Some(record);
        }
    }

    /// The request to `from` failed or timed out. A peer is asked up to [`MAX_ATTEMPTS`] times,
    /// so that one lost datagram does not hide the closest node, then counts as failed.
    pub fn on_failure(&mut self, from: &NodeId) {
        if let Some((pi, i)) = self.find(from) {
            let peer = &mut self.paths[pi].peers[i];
            if peer.state == State::Waiting {
                peer.state = if peer.attempts < MAX_ATTEMPTS {
                    State::NotAsked
                } else {
                    State::Failed
                };
                if peer.state == State::Failed {
                    let step = peer.step;
                    self.set_outcome(step, StepOutcome::Failed);
                }
            }
        }
    }

    /// The answer from `from` was invalid (a record for another key, a wrong message type): it
    /// counts as failed at once, without a retry.
    pub fn on_invalid(&mut self, from: &NodeId) {
        if let Some((pi, i)) = self.find(from) {
            let peer = &mut self.paths[pi].peers[i];
            if peer.state == State::Waiting {
                peer.state = State::Failed;
                let step = peer.step;
                self.set_outcome(step, StepOutcome::Invalid);
            }
        }
    }

    fn set_outcome(&mut self, step: Option<usize>, outcome: StepOutcome) {
        if let Some(s) = step.and_then(|i| self.path.get_mut(i)) {
            s.outcome = outcome;
        }
    }

    /// Whether the lookup is over: a value was found (FIND_VALUE), or on every path the k closest
    /// peers that did not fail have answered or nobody is left to ask.
    pub fn is_finished(&self) -> bool {
        if self.want_value && self.record.is_some() {
            return true;
        }
        if self.params.stop_at_target && self.target_answered {
            return true;
        }
        let k = self.params.k;
        self.paths
            .iter()
            .all(|p| p.is_finished(k) || (p.in_flight() == 0 && p.next_candidate(k).is_none()))
    }

    /// The k closest peers that answered, over all paths, closest first.
    pub fn closest(&self) -> Vec<Contact> {
        let mut all: Vec<&Peer> = self
            .paths
            .iter()
            .flat_map(|p| p.peers.iter())
            .filter(|p| p.state == State::Answered)
            .collect();
        all.sort_by_key(|p| p.distance);
        all.into_iter()
            .take(self.params.k)
            .map(|p| p.contact)
            .collect()
    }

    /// The record found, if any.
    pub fn record(&self) -> Option<&Record> {
        self.record.as_ref()
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Rounds: the greatest depth of any peer asked (1 = only the starting peers were asked).
    pub fn rounds(&self) -> u32 {
        self.max_depth
    }

    /// Whether the target itself answered.
    pub fn target_answered(&self) -> bool {
        self.target_answered
    }

    /// Every peer asked so far, in the order first asked: at most `paths ×`
    /// [`MAX_PEERS_PER_PATH`].
    pub fn path(&self) -> &[PathStep] {
        &self.path
    }
}

#[cfg(test)]
mod tests;
