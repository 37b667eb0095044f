use std::collections::BTreeMap;
use std::net::SocketAddr;

use dp2ptcs_crypto::Identity;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::lookup::{StepOutcome, MAX_ATTEMPTS};
use crate::record::{PeerRecord, RecordKind, RecordPayload};
use crate::MAILBOX_REPLICAS;

/// A toy network that delivers every request instantly, except to `silent` nodes.
struct Net {
    nodes: BTreeMap<NodeId, Dht>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    silent: Vec<NodeId>,
    events: Vec<(NodeId, Event)>,
}

impl Net {
    fn new(n: usize) -> Self {
        let mut net = Net {
            nodes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            silent: Vec::new(),
            events: Vec::new(),
        };
        let mut first: Option<Contact> = None;
        for i in 0..n {
            let id = Identity::from_seed(&[i as u8 + 1; 32]).node_id();
            let addr = SocketAddr::from(([10, 0, i as u8, 1], 4433));
            net.addrs.insert(id, addr);
            let mut dht = Dht::new(id, DhtConfig::default(), 0);
            if let Some(f) = first {
                dht.add_peer(f, 0);
                dht.bootstrap(0).unwrap();
            }
            net.nodes.insert(id, dht);
            first.get_or_insert(Contact::new(id, addr));
            net.run(0);
        }
        net
    }

    fn contact(&self, id: &NodeId) -> Contact {
        Contact::new(*id, self.addrs[id])
    }

    /// Delivers everything queued until the network is quiet.
    fn run(&mut self, now: u64) {
        loop {
            let mut work = Vec::new();
            for (id, dht) in self.nodes.iter_mut() {
                while let Some(t) = dht.poll_transmit() {
                    work.push((*id, t));
                }
                while let Some(e) = dht.poll_event() {
                    self.events.push((*id, e));
                }
            }
            if work.is_empty() {
                return;
            }
            for (from, t) in work {
                if self.silent.contains(&t.to.id) {
                    continue;
                }
                let from_contact = self.contact(&from);
                let Some(peer) = self.nodes.get_mut(&t.to.id) else {
                    continue;
                };
                let response = peer.handle_request(from_contact, t.request, now);
                if let Some(me) = self.nodes.get_mut(&from) {
                    me.handle_response(&t.to.id, t.id, response, now);
                }
            }
        }
    }

    fn finished(&mut self, node: &NodeId, lookup: LookupId) -> LookupOutcome {
        let pos = self
            .events
            .iter()
            .position(|(n, e)| matches!(e, Event::LookupFinished(o) if n == node && o.id == lookup))
            .expect("lookup finished");
        match self.events.remove(pos) {
            (_, Event::LookupFinished(o)) => o,
            _ => unreachable!(),
        }
    }
}

#[test]
fn every_node_finds_every_other() {
    let mut net = Net::new(40);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    for (i, a) in ids.iter().enumerate() {
        let b = ids[(i * 7 + 3) % ids.len()];
        let lid = net.nodes.get_mut(a).unwrap().find_node(b, 1).unwrap();
        net.run(1);
        let outcome = net.finished(a, lid);
        if *a != b {
            assert!(outcome.target_answered, "{a:?} did not find {b:?}");
            assert_eq!(outcome.closest[0].id, b);
            // The path: every request's peer once, the target answered at the deepest hop.
            assert_eq!(outcome.path.len() as u32, outcome.requests);
            let last = outcome.path.iter().find(|s| s.peer.id == b).unwrap();
            assert_eq!(last.outcome, StepOutcome::Answered);
            assert!(last.hop <= outcome.rounds);
            assert_eq!(
                outcome.path.iter().map(|s| s.hop).max(),
                Some(outcome.rounds)
            );
        }
    }
}

#[test]
fn a_published_record_is_found_by_another_node() {
    let mut net = Net::new(30);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let owner = Identity::from_seed(&[1; 32]);
    assert_eq!(owner.node_id(), Identity::from_seed(&[1; 32]).node_id());
    let record = Record::sign(
        &owner,
        1,
        100_000,
        RecordPayload::Peer(PeerRecord {
            addresses: vec![net.addrs[&owner.node_id()]],
            mix_key: None,
        }),
    )
    .unwrap();
    let lid = net
        .nodes
        .get_mut(&owner.node_id())
        .unwrap()
        .put_record(record.clone(), 1)
        .unwrap();
    net.run(1);
    let put = net.finished(&owner.node_id(), lid);
    assert_eq!(put.stores_sent as usize, put.closest.len());
    assert!(put.stores_sent >= 19);
    let reader = ids
        .iter()
        .find(|i| **i != owner.node_id())
        .copied()
        .unwrap();
    let key = RecordKey {
        owner: owner.node_id(),
        kind: RecordKind::Peer,
    };
    let lid = net
        .nodes
        .get_mut(&reader)
        .unwrap()
        .get_record(key, 2)
        .unwrap();
    net.run(2);
    assert_eq!(net.finished(&reader, lid).record, Some(record));
}

/// Runs `node`'s timers until an event `done` accepts is out.
fn run_until(net: &mut Net, node: &NodeId, mut now: u64, done: impl Fn(&Event) -> bool) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    net.run(now);
    while !net.events.iter().any(|(n, e)| n == node && done(e)) {
        now = net.nodes[node].poll_timeout();
        assert!(now < 600_000, "it never ended");
        net.nodes
            .get_mut(node)
            .unwrap()
            .handle_timeout(now, &mut rng);
        net.run(now);
    }
    now
}

/// Runs `node`'s timers until lookup `lid` ends.
fn finish_lookup(net: &mut Net, node: &NodeId, lid: LookupId, now: u64) -> LookupOutcome {
    run_until(
        net,
        node,
        now,
        |e| matches!(e, Event::LookupFinished(o) if o.id == lid),
    );
    net.finished(node, lid)
}

#[test]
fn a_record_held_here_is_found_when_no_other_holder_answers_and_a_newer_one_wins() {
    let mut net = Net::new(3);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let owner = Identity::from_seed(&[1; 32]);
    let (o, reader) = (
        owner.node_id(),
        *ids.iter().find(|i| **i != owner.node_id()).unwrap(),
    );
    let other = *ids.iter().find(|i| **i != o && **i != reader).unwrap();
    let record = |sequence| {
        Record::sign(
            &owner,
            sequence,
            1_000_000,
            RecordPayload::Peer(PeerRecord {
                addresses: vec![net.addrs[&o]],
                mix_key: None,
            }),
        )
        .unwrap()
    };
    let (first, second, third) = (record(1), record(2), record(3));
    let key = first.key();
    // Everyone holds the first version; the reader misses the second.
    let lid = net
        .nodes
        .get_mut(&o)
        .unwrap()
        .put_record(first.clone(), 1)
        .unwrap();
    finish_lookup(&mut net, &o, lid, 1);
    net.silent.push(reader);
    let lid = net
        .nodes
        .get_mut(&o)
        .unwrap()
        .put_record(second.clone(), 2)
        .unwrap();
    finish_lookup(&mut net, &o, lid, 2);
    net.silent.clear();
    net.events.clear();

    // A newer version elsewhere wins over the one held here.
    let lid = net
        .nodes
        .get_mut(&reader)
        .unwrap()
        .get_record(key, 3)
        .unwrap();
    assert_eq!(
        finish_lookup(&mut net, &reader, lid, 3).record,
        Some(second)
    );

    // A stale answer loses to a newer version held here.
    net.silent = vec![other];
    let lid = net
        .nodes
        .get_mut(&o)
        .unwrap()
        .put_record(third.clone(), 50_000)
        .unwrap();
    finish_lookup(&mut net, &o, lid, 50_000);
    net.silent = vec![o];
    net.events.clear();
    let lid = net
        .nodes
        .get_mut(&reader)
        .unwrap()
        .get_record(key, 100_000)
        .unwrap();
    let found = finish_lookup(&mut net, &reader, lid, 100_000);
    assert!(found
        .path
        .iter()
        .any(|s| s.peer.id == other && s.outcome == StepOutcome::Answered));
    assert_eq!(found.record, Some(third.clone()));

    // Every other holder gone: the reader's own copy is the answer.
    net.silent = vec![o, other];
    let lid = net
        .nodes
        .get_mut(&reader)
        .unwrap()
        .get_record(key, 200_000)
        .unwrap();
    assert_eq!(
        finish_lookup(&mut net, &reader, lid, 200_000).record,
        Some(third)
    );
}

#[test]
fn silent_peers_are_retried_then_time_out_and_leave_the_table() {
    let mut net = Net::new(25);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let (a, dead) = (ids[0], ids[1]);
    assert!(net.nodes[&a].table().get(&dead).is_some());
    net.silent.push(dead);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let timeout = DhtConfig::default().request_timeout_ms;
    let lid = net.nodes.get_mut(&a).unwrap().find_node(dead, 10).unwrap();
    net.run(10);
    let mut now = 10;
    // First attempt times out, the second (a retry) too; only then does the lookup end.
    for attempt in 1..=MAX_ATTEMPTS {
        assert!(
            net.events
                .iter()
                .all(|(_, e)| !matches!(e, Event::LookupFinished(o) if o.id == lid)),
            "ended before attempt {attempt} timed out"
        );
        let deadline = net.nodes[&a].poll_timeout();
        assert_eq!(deadline, now + timeout);
        now = deadline;
        net.nodes.get_mut(&a).unwrap().handle_timeout(now, &mut rng);
        net.run(now);
    }
    let outcome = net.finished(&a, lid);
    assert!(!outcome.target_answered);
    assert!(outcome.closest.iter().all(|c| c.id != dead));
    // Two consecutive failures: dropped from the table.
    assert!(net.nodes[&a].table().get(&dead).is_none());
}

#[test]
fn responses_from_the_wrong_peer_or_for_unknown_requests_are_ignored() {
    let mut net = Net::new(5);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let a = ids[0];
    let dht = net.nodes.get_mut(&a).unwrap();
    dht.find_node(ids[3], 5).unwrap();
    let t = dht.poll_transmit().unwrap();
    let stranger = NodeId::from_bytes([0xee; 32]);
    let bogus = vec![Contact::new(
        NodeId::from_bytes([0xdd; 32]),
        "192.0.2.9:1".parse().unwrap(),
    )];
    dht.handle_response(
        &stranger,
        t.id,
        Response::Nodes {
            closer: bogus.clone(),
        },
        5,
    );
    dht.handle_response(
        &t.to.id,
        RequestId(9_999),
        Response::Nodes { closer: bogus },
        5,
    );
    assert!(dht.table().get(&stranger).is_none());
    // The genuine answer is still expected.
    assert!(dht.poll_timeout() <= 5 + DhtConfig::default().request_timeout_ms);
}

#[test]
fn a_value_for_another_key_does_not_satisfy_a_get() {
    let mut net = Net::new(6);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let a = ids[0];
    let other = Identity::from_seed(&[200; 32]);
    let wrong = Record::sign(
        &other,
        1,
        1_000,
        RecordPayload::Peer(PeerRecord {
            addresses: vec![],
            mix_key: None,
        }),
    )
    .unwrap();
    let key = RecordKey {
        owner: ids[4],
        kind: RecordKind::Peer,
    };
    let dht = net.nodes.get_mut(&a).unwrap();
    let lid = dht.get_record(key, 1).unwrap();
    // Everyone answers with a record for the wrong key: each answer counts as a failure.
    while let Some(t) = dht.poll_transmit() {
        dht.handle_response(
            &t.to.id,
            t.id,
            Response::Value {
                record: Box::new(wrong.clone()),
            },
            1,
        );
    }
    let Some(Event::LookupFinished(outcome)) = dht.poll_event() else {
        panic!("lookup not finished")
    };
    assert_eq!(outcome.id, lid);
    assert_eq!(outcome.record, None);
    assert!(outcome.closest.is_empty());
    assert!(!outcome.path.is_empty());
    assert!(outcome
        .path
        .iter()
        .all(|s| s.outcome == StepOutcome::Invalid && s.hop == 1));
}

#[test]
fn maintenance_republishes_and_refreshes() {
    let mut net = Net::new(10);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let owner = Identity::from_seed(&[3; 32]);
    let record = Record::sign(
        &owner,
        1,
        crate::MAX_RECORD_TTL_MS,
        RecordPayload::Peer(PeerRecord {
            addresses: vec![],
            mix_key: None,
        }),
    )
    .unwrap();
    let holder = ids[0];
    let from = net.contact(&ids[1]);
    let resp = net.nodes.get_mut(&holder).unwrap().handle_request(
        from,
        Request::Store {
            record: Box::new(record),
        },
        0,
    );
    assert_eq!(resp, Response::Stored { accepted: true });
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let later = DhtConfig::default().republish_interval_ms;
    net.nodes
        .get_mut(&holder)
        .unwrap()
        .handle_timeout(later, &mut rng);
    net.run(later);
    let purposes: Vec<_> = net
        .events
        .iter()
        .filter(|(n, _)| *n == holder)
        .filter_map(|(_, e)| match e {
            Event::LookupFinished(o) => Some(o.purpose.clone()),
            _ => None,
        })
        .collect();
    assert!(purposes
        .iter()
        .any(|p| matches!(p, LookupPurpose::Republish(_))));
    assert!(purposes.iter().any(|p| matches!(p, LookupPurpose::Refresh)));
    let key = RecordKey {
        owner: owner.node_id(),
        kind: RecordKind::Peer,
    };
    let holders = net
        .nodes
        .values()
        .filter(|d| d.store().get(&key, later).is_some())
        .count();
    assert_eq!(holders, 10);
}

mod mailbox;

#[test]
fn a_contact_dropped_after_failing_is_pinged_again_and_comes_back() {
    let mut net = Net::new(6);
    let ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    let (a, b) = (ids[0], ids[1]);
    assert!(net.nodes[&a].table().get(&b).is_some());
    // b goes silent (a partition): a's lookups fail on it until a drops it.
    net.silent.push(b);
    let mut now = 1_000;
    for _ in 0..4 {
        net.nodes.get_mut(&a).unwrap().find_node(b, now).unwrap();
        net.run(now);
        now += 10_000;
        net.nodes
            .get_mut(&a)
            .unwrap()
            .handle_timeout(now, &mut ChaCha8Rng::seed_from_u64(1));
        net.run(now);
    }
    assert!(net.nodes[&a].table().get(&b).is_none(), "b was dropped");
    // The partition heals; nobody looks b up. The first maintenance tick once the re-ping
    // interval has passed pings b again, whenever that tick falls: a tick between the drop and
    // the due time (here 90 s after the drop) must not put b's ping off to a later round.
    net.silent.clear();
    let config = DhtConfig::default();
    let due = now + config.reping_interval_ms;
    let mut tick = now + 90_000;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    while net.nodes[&a].table().get(&b).is_none() {
        assert!(
            tick <= due + config.maintenance_interval_ms,
            "b not pinged again by the first tick after it was due"
        );
        net.nodes
            .get_mut(&a)
            .unwrap()
            .handle_timeout(tick, &mut rng);
        net.run(tick);
        tick += config.maintenance_interval_ms;
    }
}
