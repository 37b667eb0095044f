//! Multi-host tests: real `dp2ptcs run` processes, each in its own Linux network namespace on a
//! shared bridge, with links cut, the network partitioned and nodes killed (see
//! `netns/harness.rs`). They need root and `ip netns`; without them each test says
//! "skipped: needs root and ip netns" and passes.
//!
//! Run them alone with `cargo test -p dp2ptcs-cli --test netns -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

mod common;
#[path = "netns/harness.rs"]
mod harness;

use harness::{assert_exactly_once_in_order, Net};

/// Quick retries, so the tests wait on the network rather than on backoff. After a fault ends
/// a message should arrive within one backoff (at most 1.5 × `retry_max_ms` with jitter) plus
/// one failed attempt still in flight (the 10 s QUIC handshake or request timeout) plus a DHT
/// lookup; the tests assert only the harness's safety timeout and print the time taken.
const CONFIG: &str = "[limits]\nretry_initial_ms = 500\nretry_max_ms = 2000\n";
/// [`CONFIG`] for the mailbox tests: the node checks its own mailbox every second, and logs at
/// `debug` what each deposit, fetch and retry did (printed if a test fails).
const MAILBOX_CONFIG: &str = "log = \"warn,dp2ptcs=info,dp2ptcs_node=debug\"\n\
    [limits]\nretry_initial_ms = 500\nretry_max_ms = 2000\nmailbox_poll_ms = 1000\n";
/// Hosts per test.
const HOSTS: usize = 6;

/// `n` numbered message bodies.
fn texts(label: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{label} #{i}")).collect()
}

#[test]
fn an_offline_recipient_gets_every_message_once_in_order_when_it_comes_up() {
    // Host 1 (Bravo) writes to host 5 (Foxtrot); host 0 is the seed.
    const A: usize = 1;
    const B: usize = 5;
    let Some(mut net) = Net::new(HOSTS, CONFIG) else {
        return;
    };
    // Before any first run a contact URI carries only keys: A will find B through the DHT.
    net.introduce(A, B);
    let others: Vec<usize> = (0..HOSTS).filter(|&i| i != B).collect();
    net.start(&others);
    net.wait_joined(&others);

    // B has never run: nothing can reach it, not even its prekeys.
    let first = texts("before B's first run", 100);
    for text in &first {
        net.send(A, B, text);
    }
    net.wait_until("A to try B and back off", || {
        net.status(A).peers_retrying == 1
    });
    assert_eq!(net.pending(A), 100);
    let up = Instant::now();
    net.start(&[B]);
    net.wait_until("the first 100 to be delivered", || net.pending(A) == 0);
    eprintln!("100 messages delivered {:?} after B started", up.elapsed());

    // B crashes; A keeps writing; B comes back on the same data directory.
    net.kill9(B);
    let second = texts("while B was killed", 100);
    for text in &second {
        net.send(A, B, text);
    }
    net.wait_until("A to notice B is gone and back off", || {
        net.status(A).peers_retrying == 1
    });
    let up = Instant::now();
    net.restart(B);
    net.wait_until("the second 100 to be delivered", || net.pending(A) == 0);
    eprintln!(
        "100 messages delivered {:?} after B restarted",
        up.elapsed()
    );

    let mut expected = first;
    expected.extend(second);
    assert_exactly_once_in_order(&net.history(B, "incoming", None), &expected);
    let sent = net.history(A, "outgoing", None);
    assert_eq!(sent.len(), expected.len());
    assert!(
        sent.iter().all(|m| m.state == "delivered"),
        "not all delivered: {:?}",
        sent.iter().find(|m| m.state != "delivered")
    );
    assert_eq!(net.status(B).messages.received, 200);
}

#[test]
fn messages_across_a_partition_arrive_once_in_order_after_it_heals() {
    const LEFT: [usize; 3] = [0, 1, 2];
    const RIGHT: [usize; 3] = [3, 4, 5];
    // Alpha and Bravo on the left, Delta and Echo on the right.
    const A: usize = 0;
    const B: usize = 1;
    const D: usize = 3;
    const E: usize = 4;
    let Some(mut net) = Net::new(HOSTS, CONFIG) else {
        return;
    };
    net.start_all();
    // After a first run contact URIs carry the nodes' addresses.
    net.introduce(A, D);
    net.introduce(E, B);
    net.introduce(A, B);
    // Sessions and connections exist before the split: the CLI, waiting for each receipt.
    for (from, to) in [(A, D), (E, B), (A, B)] {
        let to = net.name(to);
        net.cli_ok(from, &["send", to, "warm-up", "--wait", "--timeout", "60"]);
    }

    net.partition(&LEFT, &RIGHT);
    let a_to_d = texts("A->D across", 20);
    let e_to_b = texts("E->B across", 20);
    let a_to_b = texts("A->B within", 5);
    for i in 0..20 {
        net.send(A, D, &a_to_d[i]);
        net.send(E, B, &e_to_b[i]);
        if let Some(text) = a_to_b.get(i) {
            net.send(A, B, text);
        }
    }
    // Within a half, messages still flow.
    net.wait_until("A->B within the left half", || {
        net.received(B, A).len() == 1 + a_to_b.len()
    });
    // Across, nothing gets through: both senders fail an attempt and back off.
    net.wait_until("A and E to back off", || {
        net.status(A).peers_retrying == 1 && net.status(E).peers_retrying == 1
    });
    assert_eq!(net.received(D, A), ["warm-up"]);
    assert_eq!(net.received(B, E), ["warm-up"]);

    let healed = Instant::now();
    net.heal();
    net.wait_until("every message across the healed partition", || {
        net.pending(A) == 0 && net.pending(E) == 0
    });
    eprintln!(
        "40 messages across delivered {:?} after the heal",
        healed.elapsed()
    );
    let with_warm_up = |texts: &[String]| {
        let mut all = vec!["warm-up".to_owned()];
        all.extend_from_slice(texts);
        all
    };
    assert_exactly_once_in_order(&net.history(D, "incoming", Some(A)), &with_warm_up(&a_to_d));
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(E)), &with_warm_up(&e_to_b));
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &with_warm_up(&a_to_b));

    // One host cut off on its own, then restored.
    net.cut(D);
    let while_cut = texts("A->D while D is cut off", 5);
    for text in &while_cut {
        net.send(A, D, text);
    }
    net.wait_until("A to back off from D", || net.status(A).peers_retrying == 1);
    assert_eq!(net.received(D, A).len(), 1 + a_to_d.len());
    let restored = Instant::now();
    net.restore(D);
    net.wait_until("the messages to the restored host", || net.pending(A) == 0);
    eprintln!(
        "5 messages delivered {:?} after the link came back",
        restored.elapsed()
    );
    let mut expected = with_warm_up(&a_to_d);
    expected.extend(while_cut);
    assert_exactly_once_in_order(&net.history(D, "incoming", Some(A)), &expected);
    for i in [A, E] {
        assert!(net
            .history(i, "outgoing", None)
            .iter()
            .all(|m| m.state == "delivered"));
    }
}

/// Asserts that host `i` has exactly `n` outgoing messages and that all are `delivered`.
fn assert_all_delivered(net: &Net, i: usize, n: usize) {
    let sent = net.history(i, "outgoing", None);
    assert_eq!(sent.len(), n, "{}'s outgoing messages", net.name(i));
    assert!(
        sent.iter().all(|m| m.state == "delivered"),
        "{}: not all delivered: {:?}",
        net.name(i),
        sent.iter().find(|m| m.state != "delivered")
    );
}

/// Prints, once they stop changing, the mailbox items each host still holds and its rank by
/// distance to `b`'s mailbox key. Not asserted: `b` deletes what it took only at the holders
/// its fetch reached (the r closest it found), so a copy left at a host that is no longer among
/// them (a holder killed and restarted, or one cut off by a partition) stays until it expires.
fn print_leftovers(net: &Net, b: usize) {
    let counts = net.wait_settled("the items held", Duration::from_secs(3), || {
        net.held_counts()
    });
    let order = net.mailbox_order(b);
    let rank = |i: usize| order.iter().position(|&j| j == i).unwrap();
    let left: Vec<String> = counts
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.map(|n| format!("{}: {n} (rank {})", net.name(i), rank(i))))
        .collect();
    eprintln!(
        "items still held, and each host's rank by distance to {}'s mailbox key: {left:?}",
        net.name(b)
    );
}

#[test]
fn a_recipient_away_gets_its_mailbox_from_the_holders_while_the_sender_is_away_too() {
    // Bravo (1) writes to Foxtrot (5); five hosts besides them can hold Foxtrot's mailbox.
    const A: usize = 1;
    const B: usize = 5;
    let Some(mut net) = Net::new(7, MAILBOX_CONFIG) else {
        return;
    };
    net.start_all();
    net.introduce(A, B);
    // B has been online: its prekey bundle is in the DHT. A and B never talked.
    net.wait_published();
    net.kill9(B);

    let texts = texts("for B's mailbox", 100);
    let sent = Instant::now();
    for text in &texts {
        net.send(A, B, text);
    }
    net.wait_held(A, 100);
    eprintln!(
        "100 messages held {:?} after they were sent; items held per host: {:?}",
        sent.elapsed(),
        net.held_counts()
    );
    // Nothing can go directly any more.
    net.kill9(A);

    let up = Instant::now();
    net.restart(B);
    net.wait_until("B to take all 100 from its mailbox", || {
        net.received(B, A).len() >= texts.len()
    });
    eprintln!("B had all 100 {:?} after it restarted", up.elapsed());
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &texts);

    let up = Instant::now();
    net.restart(A);
    net.wait_until("A to have every receipt", || {
        net.status(A).messages.delivered == 100
    });
    eprintln!(
        "A had all 100 receipts {:?} after it restarted; items held per host: {:?}",
        up.elapsed(),
        net.held_counts()
    );
    assert_all_delivered(&net, A, 100);
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &texts);
    assert_eq!(net.status(B).messages.received, 100);
    print_leftovers(&net, B);
}

#[test]
fn a_mailbox_survives_the_loss_of_all_its_holders_but_one() {
    // Bravo (1) writes to Foxtrot (5); six hosts besides them can hold Foxtrot's mailbox.
    const A: usize = 1;
    const B: usize = 5;
    const R: usize = dp2ptcs_dht::MAILBOX_REPLICAS;
    let Some(mut net) = Net::new(8, MAILBOX_CONFIG) else {
        return;
    };
    net.start_all();
    net.introduce(A, B);
    net.wait_published();
    net.kill9(B);

    let texts = texts("for B's mailbox, holders lost", 100);
    let sent = Instant::now();
    for text in &texts {
        net.send(A, B, text);
    }
    net.wait_held(A, 100);
    let counts = net.held_counts();
    eprintln!(
        "100 messages held {:?} after they were sent; items held per host: {counts:?}",
        sent.elapsed()
    );
    // A (if it is a holder) goes down with the others; one holder besides A survives: the
    // seed if it holds, since B and A rejoin through it (a node killed within 5 minutes of
    // starting has saved no routing table to rejoin through).
    let holders = net.holders();
    if holders.len() < R {
        eprintln!(
            "only {} hosts hold B's mailbox ({holders:?}), not {R}: all but one are killed anyway",
            holders.len()
        );
    }
    let survivor = if holders.contains(&0) {
        0
    } else {
        *holders
            .iter()
            .rev()
            .find(|&&i| i != A)
            .expect("a holder besides A")
    };
    net.kill9(A);
    let mut lost = Vec::new();
    for &i in &holders {
        if i != survivor {
            if i != A {
                net.kill9(i);
            }
            lost.push(net.name(i));
        }
    }
    eprintln!(
        "killed {} of {} holders ({lost:?}); {} alone holds B's mailbox",
        lost.len(),
        holders.len(),
        net.name(survivor)
    );

    let up = Instant::now();
    net.restart(B);
    net.wait_until("B to take all 100 from the last holder", || {
        net.received(B, A).len() >= texts.len()
    });
    eprintln!("B had all 100 {:?} after it restarted", up.elapsed());
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &texts);

    let up = Instant::now();
    net.restart(A);
    net.wait_until("A to have every receipt", || {
        net.status(A).messages.delivered == 100
    });
    eprintln!(
        "A had all 100 receipts {:?} after it restarted",
        up.elapsed()
    );
    assert_all_delivered(&net, A, 100);
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &texts);
    print_leftovers(&net, B);
}

#[test]
fn a_message_whose_ttl_runs_out_in_the_mailbox_expires_and_leaves_every_holder() {
    const A: usize = 1;
    const B: usize = 5;
    /// Long enough to outlast A's first attempt at B: one dial of B's dead address (up to the
    /// handshake timeout, 2 s here) and a lookup of B before the mailbox is tried, a few seconds
    /// in all. 2 s, as in the in-process test, would expire before it is ever held.
    const SHORT_TTL_MS: u64 = 30_000;
    /// The bodies' sizes tell their items apart in the holders' `mailbox_bytes`.
    const BIG: usize = 8000;
    let config = format!("{MAILBOX_CONFIG}handshake_timeout_ms = 2000\n");
    let Some(mut net) = Net::new(7, &config) else {
        return;
    };
    net.start_all();
    net.introduce(A, B);
    net.wait_published();
    net.kill9(B);

    // The short-lived one first, so that A's first failed attempt deposits it.
    let sent = Instant::now();
    let short = net.send_with_ttl(A, B, "short time to live", Some(SHORT_TTL_MS));
    let lasting = net.send(A, B, &"default time to live ".repeat(BIG / 20));
    let state = |id: &str| {
        net.history(A, "outgoing", Some(B))
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.state)
            .unwrap()
    };
    net.wait_until("the short-lived message to be held", || {
        state(&short) == "held"
    });
    eprintln!(
        "the short-lived message held {:?} after it was sent; items, bytes per host: {:?}",
        sent.elapsed(),
        net.mailboxes()
    );
    net.wait_until("it to expire", || state(&short) == "expired");
    eprintln!("it expired {:?} after it was sent", sent.elapsed());
    assert_eq!(net.status(A).messages.expired, 1);

    // No holder keeps the short one (a small item); the other one stays held (big items).
    net.wait_until(
        "the holders to drop the expired item and hold the other one",
        || {
            let held: Vec<(usize, usize)> = net.mailboxes().into_iter().flatten().collect();
            state(&lasting) == "held"
                && held.iter().any(|&(items, _)| items > 0)
                && held
                    .iter()
                    .all(|&(items, bytes)| items == 0 || (items == 1 && bytes > BIG))
        },
    );
    eprintln!(
        "the holders hold only the other one {:?} after they were sent; items, bytes per host: {:?}",
        sent.elapsed(),
        net.mailboxes()
    );
    assert_eq!(state(&short), "expired");
    let counts = net.status(A).messages;
    assert_eq!((counts.held, counts.expired), (1, 1));
}

#[test]
fn a_sender_flooding_a_mailbox_is_held_to_its_quota_and_the_rest_arrives_directly() {
    const A: usize = 1;
    const C: usize = 2;
    const B: usize = 5;
    /// Every holder keeps at most this many items of one sender for one mailbox.
    const QUOTA: usize = 3;
    let config = format!("{MAILBOX_CONFIG}[mailbox]\nper_sender_items = {QUOTA}\n");
    let Some(mut net) = Net::new(8, &config) else {
        return;
    };
    net.start_all();
    net.introduce(A, B);
    net.introduce(C, B);
    net.wait_published();
    net.kill9(B);

    let flood = texts("A floods B", 10);
    let fair = texts("C writes B", 2);
    let sent = Instant::now();
    for text in &flood {
        net.send(A, B, text);
    }
    for text in &fair {
        net.send(C, B, text);
    }
    net.wait_until("A's messages to be held", || {
        net.status(A).messages.held >= QUOTA as u64
    });
    net.wait_held(C, fair.len() as u64);
    eprintln!(
        "A's {QUOTA} and C's {} held {:?} after they were sent",
        fair.len(),
        sent.elapsed()
    );
    // A's deposits past the quota are refused: the rest stays in its outbox. A few seconds
    // more let any further deposit of A's show.
    let held = net.wait_settled("A's held messages", Duration::from_secs(5), || {
        net.status(A).messages.held
    });
    assert_eq!(held, QUOTA as u64);
    assert_eq!(net.count_state(A, B, "held"), QUOTA);
    assert_eq!(net.count_state(A, B, "queued"), flood.len() - QUOTA);
    assert_eq!(net.count_state(C, B, "held"), fair.len());
    eprintln!("items held per host: {:?}", net.held_counts());

    // B comes back: A's 3 and C's 2 from its mailbox, A's other 7 directly.
    let up = Instant::now();
    net.restart(B);
    net.wait_until("B to have all 12", || {
        net.received(B, A).len() >= flood.len() && net.received(B, C).len() >= fair.len()
    });
    eprintln!("B had all 12 {:?} after it restarted", up.elapsed());
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &flood);
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(C)), &fair);
    net.wait_until("A and C to have every receipt", || {
        net.status(A).messages.delivered == 10 && net.status(C).messages.delivered == 2
    });
    assert_all_delivered(&net, A, flood.len());
    assert_all_delivered(&net, C, fair.len());
    assert_eq!(net.status(B).messages.received, 12);
    print_leftovers(&net, B);
}

/// A stays up: after the heal its messages come directly, from B's mailbox, or both; each is
/// recorded once.
#[test]
fn a_recipient_restarted_across_a_partition_gets_everything_once_after_the_heal() {
    mailbox_across_a_partition(false);
}

/// A is down: B gets the messages only from the holders of its mailbox on A's side, which it
/// can find only once the DHT's two halves have found each other again. No connection crosses
/// the split, and each half dropped the other from its routing tables during it: they meet
/// again through the peers each node remembers (its routing-table snapshot, saved once it
/// joined) and the re-ping of dropped contacts.
#[test]
fn a_recipient_restarted_across_a_partition_takes_its_mailbox_after_the_heal() {
    mailbox_across_a_partition(true);
}

/// A's messages to B, across a partition, held on A's side; B restarts within its own half;
/// after the heal all arrive once, in order, and are delivered. With `sender_down`, A is
/// killed once they are held, so that B can get them only by taking its mailbox after the
/// heal, and the split lasts long enough for every connection across it to time out; A
/// restarts once B has them, for the receipts.
fn mailbox_across_a_partition(sender_down: bool) {
    // The seed is on B's side: B restarts within its half, through it (a node killed within
    // 5 minutes of starting has saved no routing table to rejoin through).
    const LEFT: [usize; 4] = [1, 2, 3, 4];
    const RIGHT: [usize; 4] = [0, 5, 6, 7];
    // Bravo on the left writes to Foxtrot on the right.
    const A: usize = 1;
    const B: usize = 5;
    /// How long the split lasts at least with `sender_down`.
    const SPLIT_FOR: Duration = Duration::from_secs(75);
    let Some(mut net) = Net::new(8, MAILBOX_CONFIG) else {
        return;
    };
    net.start_all();
    net.introduce(A, B);
    let to = net.name(B);
    net.cli_ok(A, &["send", to, "warm-up", "--wait", "--timeout", "60"]);

    net.partition(&LEFT, &RIGHT);
    let split = Instant::now();
    let texts = texts("A->B across, to the mailbox", 20);
    let sent = Instant::now();
    for text in &texts {
        net.send(A, B, text);
    }
    // Only the left half can hold B's mailbox now.
    net.wait_held(A, 20);
    let counts = net.held_counts();
    eprintln!(
        "20 messages held {:?} after they were sent; items held per host: {counts:?}; \
         hosts by distance to B's mailbox key: {:?}",
        sent.elapsed(),
        net.mailbox_order(B)
    );
    assert!(
        RIGHT.iter().all(|&i| counts[i] == Some(0)),
        "a host across the partition holds items: {counts:?}"
    );
    if sender_down {
        // Nothing can come directly after the heal: only from the mailbox.
        net.kill9(A);
    }
    // B restarts within its half: its mailbox check there finds nothing.
    net.restart(B);
    net.wait_joined(&[B]);
    std::thread::sleep(Duration::from_secs(3));
    let table = net.table(B);
    assert!(
        table.iter().all(|i| RIGHT.contains(i)),
        "B knows hosts across the partition: {table:?}"
    );
    assert_eq!(net.received(B, A), ["warm-up"]);
    if sender_down {
        // No connection from before the split outlives it (the QUIC idle timeout is 60 s).
        std::thread::sleep(SPLIT_FOR.saturating_sub(split.elapsed()));
    }

    let healed = Instant::now();
    net.heal();
    net.wait_until("B to have all 20 after the heal", || {
        net.received(B, A).len() > texts.len()
    });
    eprintln!("B had all 20 {:?} after the heal", healed.elapsed());
    let mut expected = vec!["warm-up".to_owned()];
    expected.extend(texts);
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &expected);

    if sender_down {
        let up = Instant::now();
        net.restart(A);
        net.wait_until("A to have every receipt", || {
            net.status(A).messages.delivered == 21
        });
        eprintln!("A had every receipt {:?} after it restarted", up.elapsed());
    } else {
        net.wait_until("A to have every receipt", || {
            net.status(A).messages.delivered == 21
        });
        eprintln!("A had every receipt {:?} after the heal", healed.elapsed());
    }
    assert_all_delivered(&net, A, expected.len());
    assert_exactly_once_in_order(&net.history(B, "incoming", Some(A)), &expected);
    print_leftovers(&net, B);
}
