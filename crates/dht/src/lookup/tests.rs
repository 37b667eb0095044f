use std::collections::HashSet;
use std::net::SocketAddr;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn network(n: usize, seed: u64) -> Vec<Contact> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut id = [0u8; 32];
            rng.fill_bytes(&mut id);
            Contact::new(
                NodeId::from_bytes(id),
                SocketAddr::from((
                    [
                        10,
                        (i / 65536) as u8,
                        (i / 256 % 256) as u8,
                        (i % 256) as u8,
                    ],
                    1,
                )),
            )
        })
        .collect()
}

/// What an honest node answers: the k closest of the whole network to `target`.
fn closest_in(net: &[Contact], target: &NodeId, k: usize) -> Vec<Contact> {
    let mut all = net.to_vec();
    all.sort_by_key(|c| c.id.distance(target));
    all.truncate(k);
    all
}

fn params(paths: usize) -> LookupParams {
    LookupParams {
        k: 20,
        alpha: 3,
        paths,
        stop_at_target: false,
    }
}

#[test]
fn finds_the_target_and_ends_when_the_k_closest_answered() {
    let net = network(500, 1);
    let target = net[123].id;
    let local = net[0].id;
    let seeds = net[1..21].to_vec();
    let mut lookup = Lookup::new(local, target, seeds, params(1), false);
    let mut asked = HashSet::new();
    let mut in_flight = Vec::new();
    while !lookup.is_finished() {
        while let Some(c) = lookup.next_request() {
            assert!(asked.insert(c.id), "asked twice");
            in_flight.push(c);
        }
        assert!(in_flight.len() <= 3, "more than alpha in flight");
        let c = in_flight.remove(0);
        lookup.on_success(&c.id, &closest_in(&net, &target, 20));
    }
    assert!(lookup.target_answered());
    assert_eq!(lookup.closest(), closest_in(&net, &target, 20));
    assert!(lookup.requests() < 60, "{} requests", lookup.requests());
    assert!(lookup.next_request().is_none());
}

#[test]
fn failures_and_silence_do_not_stall_it() {
    let net = network(300, 2);
    let target = net[77].id;
    let mut lookup = Lookup::new(net[0].id, target, net[1..21].to_vec(), params(1), false);
    let mut n = 0;
    let mut in_flight = Vec::new();
    while !lookup.is_finished() {
        while let Some(c) = lookup.next_request() {
            in_flight.push(c);
        }
        let c = in_flight.remove(0);
        n += 1;
        // Every third peer times out.
        if n % 3 == 0 && c.id != target {
            lookup.on_failure(&c.id);
        } else {
            lookup.on_success(&c.id, &closest_in(&net, &target, 20));
        }
    }
    assert!(lookup.target_answered());
}

#[test]
fn a_lookup_with_nobody_to_ask_is_finished_at_once() {
    let lookup = Lookup::new(
        NodeId::from_bytes([1; 32]),
        NodeId::from_bytes([2; 32]),
        Vec::new(),
        params(3),
        false,
    );
    assert!(lookup.is_finished());
    assert!(lookup.closest().is_empty());
}

#[test]
fn disjoint_paths_never_share_a_peer_and_survive_a_liar() {
    let net = network(400, 3);
    let target = net[201].id;
    // One node in five lies, seeds included.
    let liar_contacts: Vec<Contact> = net.iter().step_by(5).skip(1).copied().collect();
    let liars: HashSet<NodeId> = liar_contacts.iter().map(|c| c.id).collect();
    assert!(!liars.contains(&target));
    let mut lookup = Lookup::new(net[0].id, target, net[1..31].to_vec(), params(3), false);
    let mut asked = HashSet::new();
    let mut in_flight = Vec::new();
    while !lookup.is_finished() {
        while let Some(c) = lookup.next_request() {
            assert!(asked.insert(c.id), "a peer was asked by two paths");
            in_flight.push(c);
        }
        assert!(in_flight.len() <= 9);
        let c = in_flight.remove(0);
        if liars.contains(&c.id) {
            // Self-serving answer: only fellow liars.
            lookup.on_success(&c.id, &closest_in(&liar_contacts, &target, 20));
        } else {
            lookup.on_success(&c.id, &closest_in(&net, &target, 20));
        }
    }
    assert!(lookup.target_answered());
}

#[test]
fn a_value_ends_a_find_value_lookup() {
    use crate::record::{PeerRecord, RecordPayload};
    use dp2ptcs_crypto::Identity;
    let owner = Identity::from_seed(&[8; 32]);
    let record = Record::sign(
        &owner,
        1,
        10,
        RecordPayload::Peer(PeerRecord {
            addresses: vec![],
            mix_key: None,
        }),
    )
    .unwrap();
    let net = network(100, 4);
    let mut lookup = Lookup::new(
        net[0].id,
        owner.node_id(),
        net[1..21].to_vec(),
        params(1),
        true,
    );
    let first = lookup.next_request().unwrap();
    assert!(!lookup.is_finished());
    lookup.on_value(&first.id, record.clone());
    assert!(lookup.is_finished());
    assert_eq!(lookup.record(), Some(&record));
    assert_eq!(lookup.rounds(), 1);
}

#[test]
fn a_find_node_for_a_peer_stops_when_the_peer_answers() {
    let net = network(500, 5);
    let target = net[321].id;
    let params = LookupParams {
        stop_at_target: true,
        ..params(1)
    };
    let mut lookup = Lookup::new(net[0].id, target, net[1..21].to_vec(), params, false);
    let mut in_flight = Vec::new();
    while !lookup.is_finished() {
        while let Some(c) = lookup.next_request() {
            in_flight.push(c);
        }
        let c = in_flight.remove(0);
        lookup.on_success(&c.id, &closest_in(&net, &target, 20));
    }
    assert!(lookup.target_answered());
    assert!(lookup.requests() < 20, "{} requests", lookup.requests());
}

#[test]
fn one_seed_is_spread_over_every_disjoint_path_after_its_answer() {
    let net = network(300, 6);
    let target = net[100].id;
    let mut lookup = Lookup::new(net[0].id, target, vec![net[1]], params(3), false);
    let first = lookup.next_request().unwrap();
    assert!(lookup.next_request().is_none(), "only one seed to ask");
    lookup.on_success(&first.id, &closest_in(&net, &target, 20));
    // Every path now has peers to ask: three paths × alpha requests.
    let mut n = 0;
    while lookup.next_request().is_some() {
        n += 1;
    }
    assert_eq!(n, 9);
}

#[test]
fn the_path_records_every_peer_asked_once_in_order_with_hop_and_outcome() {
    let net = network(400, 4);
    let target = net[200].id;
    let seeds = net[1..21].to_vec();
    let seed_ids: HashSet<NodeId> = seeds.iter().map(|c| c.id).collect();
    let mut lookup = Lookup::new(net[0].id, target, seeds, params(1), false);
    let mut first_asked = Vec::new();
    let mut in_flight = Vec::new();
    let mut n = 0;
    let mut expected: Vec<(NodeId, StepOutcome)> = Vec::new();
    let outcome_of = |expected: &mut Vec<(NodeId, StepOutcome)>, id: NodeId, o| {
        if let Some(e) = expected.iter_mut().find(|e| e.0 == id) {
            e.1 = o;
        }
    };
    while !lookup.is_finished() {
        while let Some(c) = lookup.next_request() {
            if !first_asked.contains(&c.id) {
                first_asked.push(c.id);
                expected.push((c.id, StepOutcome::Pending));
            }
            in_flight.push(c);
        }
        let c = in_flight.remove(0);
        n += 1;
        if c.id == target {
            lookup.on_success(&c.id, &closest_in(&net, &target, 20));
            outcome_of(&mut expected, c.id, StepOutcome::Answered);
        } else if n % 5 == 0 {
            // Twice silent: asked again, then failed.
            lookup.on_failure(&c.id);
            if let Some(again) = lookup.next_request() {
                assert_eq!(again.id, c.id, "a timed-out peer is retried first");
                lookup.on_failure(&again.id);
            }
            outcome_of(&mut expected, c.id, StepOutcome::Failed);
        } else if n % 7 == 0 {
            lookup.on_invalid(&c.id);
            outcome_of(&mut expected, c.id, StepOutcome::Invalid);
        } else {
            lookup.on_success(&c.id, &closest_in(&net, &target, 20));
            outcome_of(&mut expected, c.id, StepOutcome::Answered);
        }
    }
    let path = lookup.path();
    let got: Vec<(NodeId, StepOutcome)> = path.iter().map(|s| (s.peer.id, s.outcome)).collect();
    // Still in flight when it ended: pending.
    for c in &in_flight {
        assert_eq!(
            path.iter().find(|s| s.peer.id == c.id).map(|s| s.outcome),
            Some(StepOutcome::Pending)
        );
    }
    assert_eq!(got, expected);
    assert!(got.iter().any(|g| g.1 == StepOutcome::Failed));
    assert!(got.iter().any(|g| g.1 == StepOutcome::Invalid));
    // Hops: the starting peers are hop 1, peers learned from them hop 2, and the deepest step is
    // the lookup's round count.
    for s in path {
        assert_eq!(s.hop == 1, seed_ids.contains(&s.peer.id), "{s:?}");
    }
    assert_eq!(path.iter().map(|s| s.hop).max(), Some(lookup.rounds()));
    assert!(path.iter().any(|s| s.hop == 2));
}

#[test]
fn the_path_is_bounded() {
    // A hostile network: every answer names 20 fresh ids, each closer to the target than any
    // named before. A path never forgets a peer it asked and holds at most MAX_PEERS_PER_PATH, so
    // the lookup ends after asking that many, and its path is that long.
    let target = NodeId::from_bytes([0; 32]);
    let seeds = network(20, 5);
    let mut lookup = Lookup::new(
        NodeId::from_bytes([0xff; 32]),
        target,
        seeds,
        params(1),
        false,
    );
    let mut next = u64::MAX;
    let mut requests = 0;
    while !lookup.is_finished() && requests < 10 * MAX_PEERS_PER_PATH {
        let Some(c) = lookup.next_request() else {
            break;
        };
        requests += 1;
        let fresh: Vec<Contact> = (0..20)
            .map(|_| {
                let mut id = [0u8; 32];
                id[24..].copy_from_slice(&next.to_be_bytes());
                next -= 1;
                Contact::new(NodeId::from_bytes(id), SocketAddr::from(([10, 0, 0, 1], 1)))
            })
            .collect();
        lookup.on_success(&c.id, &fresh);
    }
    assert!(lookup.is_finished());
    assert_eq!(requests, MAX_PEERS_PER_PATH);
    assert_eq!(lookup.path().len(), MAX_PEERS_PER_PATH);
}
