use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn contact(id: [u8; 32], net: u8, host: u8) -> Contact {
    Contact::new(
        NodeId::from_bytes(id),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, net, host)), 4433),
    )
}

fn check_invariants(table: &RoutingTable) {
    let mut total = 0;
    for (idx, bucket) in &table.buckets {
        assert!(bucket.entries.len() <= K, "bucket {idx} over k");
        assert!(bucket.replacements.len() <= REPLACEMENT_CACHE_LEN);
        for e in &bucket.entries {
            assert_eq!(table.bucket_index(&e.contact.id), Some(*idx));
            assert!(bucket.count_prefix(e.contact.prefix()) <= MAX_PER_PREFIX);
        }
        let mut ids: Vec<_> = bucket.entries.iter().map(|e| e.contact.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), bucket.entries.len(), "duplicate entry");
        total += bucket.entries.len();
    }
    assert_eq!(total, table.len());
}

proptest! {
    #[test]
    fn buckets_never_exceed_k_nor_the_diversity_limit(
        local in any::<[u8; 32]>(),
        ops in proptest::collection::vec((any::<[u8; 32]>(), 0u8..6, any::<u8>(), 0u8..4), 1..400),
    ) {
        let local = NodeId::from_bytes(local);
        let mut table = RoutingTable::new(local, 0);
        // Skew ids towards a few buckets so that buckets fill up.
        for (now, (mut id, net, host, op)) in ops.into_iter().enumerate() {
            id[0] = local.as_bytes()[0] ^ (0x80 >> (id[1] % 3));
            let c = contact(id, net, host);
            let now = now as u64;
            match op {
                0 | 1 => {
                    if let InsertOutcome::PingOldest { oldest } = table.insert(c, now) {
                        table.ping_result(&oldest.id, host % 2 == 0, now);
                    }
                }
                2 => { table.report_failure(&c.id, now); }
                _ => { table.remove(&c.id, now); }
            }
            check_invariants(&table);
        }
    }

    #[test]
    fn closest_equals_a_brute_force_sort(
        local in any::<[u8; 32]>(),
        ids in proptest::collection::vec(any::<[u8; 32]>(), 0..300),
        target in any::<[u8; 32]>(),
        count in 1usize..50,
    ) {
        let local = NodeId::from_bytes(local);
        let target = NodeId::from_bytes(target);
        let mut table = RoutingTable::new(local, 0);
        for (i, id) in ids.iter().enumerate() {
            // Distinct networks: the diversity limit is not what this property is about.
            let c = Contact::new(
                NodeId::from_bytes(*id),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 1)), 1),
            );
            table.insert(c, 0);
        }
        let mut all: Vec<Contact> = table.contacts().collect();
        all.sort_by_key(|c| c.id.distance(&target));
        all.truncate(count);
        prop_assert_eq!(table.closest(&target, count), all);
    }

    #[test]
    fn random_ids_fall_in_the_asked_bucket(local in any::<[u8; 32]>(), idx in 0usize..256, seed in any::<u64>()) {
        let local = NodeId::from_bytes(local);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let id = random_id_in_bucket(&local, idx, &mut rng);
        prop_assert_eq!(local.distance(&id).bucket_index(), Some(idx));
    }
}

fn id_in_bucket(local: &NodeId, idx: usize, n: u64) -> NodeId {
    random_id_in_bucket(local, idx, &mut ChaCha8Rng::seed_from_u64(n))
}

#[test]
fn full_bucket_asks_for_a_ping_and_evicts_only_a_dead_entry() {
    let local = NodeId::from_bytes([0; 32]);
    let mut table = RoutingTable::new(local, 0);
    let first: Vec<Contact> = (0..K as u64)
        .map(|n| contact(*id_in_bucket(&local, 255, n).as_bytes(), n as u8, 1))
        .collect();
    for c in &first {
        assert_eq!(table.insert(*c, 1), InsertOutcome::Inserted);
    }
    let newcomer = contact(*id_in_bucket(&local, 255, 999).as_bytes(), 200, 1);
    assert_eq!(
        table.insert(newcomer, 2),
        InsertOutcome::PingOldest { oldest: first[0] }
    );
    // A second newcomer waits: one ping at a time per bucket.
    let second = contact(*id_in_bucket(&local, 255, 1000).as_bytes(), 201, 1);
    assert_eq!(table.insert(second, 3), InsertOutcome::Cached);
    // The oldest answers: it stays (now most recent), nobody is evicted.
    assert_eq!(table.ping_result(&first[0].id, true, 4), None);
    assert!(table.get(&first[0].id).is_some());
    assert!(table.get(&newcomer.id).is_none());
    // Next newcomer: now first[1] is the oldest; it does not answer and is replaced by the
    // freshest cached newcomer.
    let third = contact(*id_in_bucket(&local, 255, 1001).as_bytes(), 202, 1);
    assert_eq!(
        table.insert(third, 5),
        InsertOutcome::PingOldest { oldest: first[1] }
    );
    assert_eq!(table.ping_result(&first[1].id, false, 6), Some(third));
    assert!(table.get(&first[1].id).is_none());
    assert_eq!(table.bucket_len(255), K);
}

#[test]
fn an_attacker_with_a_thousand_ids_in_one_slash_24_gets_two_per_bucket() {
    let local = NodeId::from_bytes([7; 32]);
    let mut table = RoutingTable::new(local, 0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for host in 0..1000u32 {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let c = Contact::new(
            NodeId::from_bytes(id),
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(66, 6, 6, (host % 256) as u8)),
                1000 + host as u16,
            ),
        );
        table.insert(c, 0);
    }
    for idx in 0..BUCKETS {
        assert!(table.bucket_len(idx) <= MAX_PER_PREFIX);
    }
    // 1000 random ids land in about 10 buckets: at most 2 each.
    assert!(table.len() <= 2 * 12, "{} attacker entries", table.len());
}

#[test]
fn failures_drop_a_contact_and_promote_a_cached_one() {
    let local = NodeId::from_bytes([0; 32]);
    let mut table = RoutingTable::new(local, 0);
    let first: Vec<Contact> = (0..K as u64)
        .map(|n| contact(*id_in_bucket(&local, 200, n).as_bytes(), n as u8, 1))
        .collect();
    for c in &first {
        table.insert(*c, 0);
    }
    let newcomer = contact(*id_in_bucket(&local, 200, 77).as_bytes(), 100, 1);
    table.insert(newcomer, 1);
    assert!(!table.report_failure(&first[5].id, 2));
    assert!(table.report_failure(&first[5].id, 3));
    assert!(table.get(&first[5].id).is_none());
    assert!(table.get(&newcomer.id).is_some());
    assert_eq!(table.len(), K);
}

#[test]
fn refresh_is_due_for_untouched_buckets_only() {
    let local = NodeId::from_bytes([0; 32]);
    let mut table = RoutingTable::new(local, 0);
    assert!(table
        .due_refreshes(REFRESH_INTERVAL_MS, REFRESH_INTERVAL_MS)
        .is_empty());
    table.insert(contact(*id_in_bucket(&local, 250, 1).as_bytes(), 1, 1), 0);
    let due = table.due_refreshes(REFRESH_INTERVAL_MS, REFRESH_INTERVAL_MS);
    assert_eq!(due, (250..256).collect::<Vec<_>>());
    table.mark_refreshed(252, REFRESH_INTERVAL_MS);
    assert!(!table
        .due_refreshes(REFRESH_INTERVAL_MS + 1, REFRESH_INTERVAL_MS)
        .contains(&252));
    assert!(table
        .due_refreshes(2 * REFRESH_INTERVAL_MS, REFRESH_INTERVAL_MS)
        .contains(&252));
}

#[test]
fn the_local_id_is_never_inserted() {
    let local = NodeId::from_bytes([3; 32]);
    let mut table = RoutingTable::new(local, 0);
    assert_eq!(
        table.insert(contact([3; 32], 1, 1), 0),
        InsertOutcome::IsLocal
    );
    assert!(table.is_empty());
}

#[test]
fn entries_list_every_contact_by_bucket_then_distance_with_its_state() {
    let local = NodeId::from_bytes([0x5a; 32]);
    let mut table = RoutingTable::new(local, 0);
    let mut inserted = Vec::new();
    for (i, idx) in [255usize, 3, 200, 255, 200, 17, 255]
        .into_iter()
        .enumerate()
    {
        let c = contact(*id_in_bucket(&local, idx, i as u64).as_bytes(), i as u8, 1);
        assert_eq!(table.insert(c, 10 + i as u64), InsertOutcome::Inserted);
        inserted.push((c, idx, 10 + i as u64));
    }
    // One failure on one contact, another seen again later.
    table.report_failure(&inserted[2].0.id, 50);
    table.insert(inserted[0].0, 99);
    let entries = table.entries();
    assert_eq!(entries.len(), table.len());
    assert_eq!(entries.len(), inserted.len());
    for (c, idx, seen) in &inserted {
        let e = entries.iter().find(|e| e.contact == *c).unwrap();
        assert_eq!(e.bucket, *idx);
        let (want_seen, want_failures) = if c.id == inserted[0].0.id {
            (99, 0)
        } else if c.id == inserted[2].0.id {
            (*seen, 1)
        } else {
            (*seen, 0)
        };
        assert_eq!((e.last_seen_ms, e.failures), (want_seen, want_failures));
    }
    // Sorted by bucket, then by distance to the local id.
    let keys: Vec<_> = entries
        .iter()
        .map(|e| (e.bucket, local.distance(&e.contact.id)))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(entries.first().map(|e| e.bucket), Some(3));
    assert_eq!(entries.last().map(|e| e.bucket), Some(255));
    assert!(RoutingTable::new(local, 0).entries().is_empty());
}
