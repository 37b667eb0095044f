//! Multi-host tests: real `dp2ptcs run` processes, each in its own Linux network namespace on a
//! shared bridge, with links cut, the network partitioned and nodes killed (see
//! `netns/harness.rs`). They need root and `ip netns`; without them each test says
//! "skipped: needs root and ip netns" and passes.
//!
//! Run them alone with `cargo test -p dp2ptcs-cli --test netns -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

mod common;
#[path = "netns/harness.rs"]
mod harness;

use harness::{assert_exactly_once_in_order, Net};

/// Quick retries, so the tests wait on the network rather than on backoff. After a fault ends
/// a message should arrive within one backoff (at most 1.5 × `retry_max_ms` with jitter) plus
/// one failed attempt still in flight (the 10 s QUIC handshake or request timeout) plus a DHT
/// lookup; the tests assert only the harness's safety timeout and print the time taken.
const CONFIG: &str = "[limits]\nretry_initial_ms = 500\nretry_max_ms = 2000\n";
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
