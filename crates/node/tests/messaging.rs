//! Two real nodes on loopback exchanging messages, and a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dp2ptcs_node::{NodeConfig, NodeError, NodeEvent};
use dp2ptcs_store::{ContactRecord, MessageState};
use futures_util::future::{join_all, poll_immediate};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const N: usize = 1000;
/// A safety net so a broken build fails instead of hanging; not a performance assertion.
const SAFETY: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_exchange_1000_messages_both_ways_exactly_once_with_receipts() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, test_config([127, 0, 0, 1])).await;
    let b = start(db.path(), &kb, test_config([127, 0, 0, 1])).await;
    let b_contact = contact_of("b", &kb, &b);
    let a_contact = contact_of("a", &ka, &a);
    a.put_contact(&b_contact).await.unwrap();
    b.put_contact(&a_contact).await.unwrap();
    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();

    let mut sends = JoinSet::new();
    let limit = Arc::new(Semaphore::new(16));
    for i in 0..N {
        for (from, to, tag) in [(&a, &b_contact, "a->b"), (&b, &a_contact, "b->a")] {
            let (node, contact, limit) = (from.clone(), to.clone(), limit.clone());
            sends.spawn(async move {
                let _p = limit.acquire_owned().await.unwrap();
                node.send_chat(&contact, &format!("{tag} #{i}")).await
            });
        }
    }
    let mut ids = HashSet::new();
    tokio::time::timeout(SAFETY, async {
        while let Some(r) = sends.join_next().await {
            assert!(ids.insert(r.unwrap().unwrap()));
        }
    })
    .await
    .unwrap();
    assert_eq!(ids.len(), 2 * N);

    for (events, tag, from) in [
        (&mut b_events, "a->b", a.node_id()),
        (&mut a_events, "b->a", b.node_id()),
    ] {
        let (mut bodies, mut delivered) = (HashSet::new(), 0);
        tokio::time::timeout(SAFETY, async {
            while bodies.len() < N || delivered < N {
                match events.recv().await.unwrap() {
                    NodeEvent::Message { from: f, body, .. } => {
                        assert_eq!(f, from);
                        assert!(body.starts_with(tag), "{body}");
                        assert!(bodies.insert(body), "delivered twice");
                    }
                    NodeEvent::Delivered { .. } => delivered += 1,
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        assert!(events.try_recv().is_err(), "nothing more than once");
    }
    for id in &ids {
        let sent_by_a = a.message(&b.node_id(), id).await.unwrap().unwrap();
        let other = b.message(&a.node_id(), id).await.unwrap().unwrap();
        let (out, inc) = if sent_by_a.direction == dp2ptcs_store::Direction::Outgoing {
            (sent_by_a, other)
        } else {
            (other, sent_by_a)
        };
        assert_eq!(out.state, MessageState::Delivered);
        assert_eq!(inc.state, MessageState::Received);
        assert_eq!(out.body, inc.body);
    }
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Chats sent at the same time leave together, one request for many: 200 sent at once to a
/// peer that accepts 20 requests and then one a second all arrive at once, none refused, each
/// once and intact, and each sender learns its own chat was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_sent_together_share_requests_and_each_arrives_once() {
    const SENDS: usize = 200;
    let pair = pair(NodeConfig {
        peer_rate_per_sec: 1,
        peer_burst: 20,
        ..test_config([127, 0, 0, 1])
    })
    .await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    let mut b_events = b.subscribe();

    let mut sends = JoinSet::new();
    for i in 0..SENDS {
        let (a, c) = (a.clone(), b_contact.clone());
        sends.spawn(async move { (i, a.send_chat(&c, &format!("together #{i}")).await) });
    }
    let mut ids = vec![None; SENDS];
    tokio::time::timeout(SAFETY, async {
        while let Some(r) = sends.join_next().await {
            let (i, sent) = r.unwrap();
            ids[i] = Some(sent.unwrap_or_else(|e| panic!("send #{i} failed: {e}")));
        }
    })
    .await
    .unwrap();
    let mut bodies = HashSet::new();
    tokio::time::timeout(SAFETY, async {
        while bodies.len() < SENDS {
            if let NodeEvent::Message { id, body, .. } = b_events.recv().await.unwrap() {
                let i: usize = body.strip_prefix("together #").unwrap().parse().unwrap();
                assert_eq!(ids[i], Some(id), "the body arrived under its own id");
                assert!(bodies.insert(body), "delivered twice");
            }
        }
    })
    .await
    .unwrap();
    for id in ids.iter().flatten() {
        let out = a.message(&b.node_id(), id).await.unwrap().unwrap();
        assert_eq!(out.state, MessageState::Delivered);
    }
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_a_restart() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, test_config([127, 0, 0, 1])).await;
    let b = start(db.path(), &kb, test_config([127, 0, 0, 1])).await;
    a.put_contact(&contact_of("b", &kb, &b)).await.unwrap();
    b.put_contact(&contact_of("a", &ka, &a)).await.unwrap();
    let first = a
        .send_chat(&contact_of("b", &kb, &b), "before")
        .await
        .unwrap();
    b.send_chat(&contact_of("a", &ka, &a), "reply")
        .await
        .unwrap();

    b.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(b);
    let b = start(db.path(), &kb, test_config([127, 0, 0, 1])).await;
    // The history survived, and the stored session still works both ways.
    assert_eq!(
        b.message(&a.node_id(), &first)
            .await
            .unwrap()
            .unwrap()
            .state,
        MessageState::Received
    );
    let b_contact = contact_of("b", &kb, &b);
    a.put_contact(&b_contact).await.unwrap();
    let mut b_events = b.subscribe();
    let id = a.send_chat(&b_contact, "after restart").await.unwrap();
    match b_events.recv().await.unwrap() {
        NodeEvent::Message { id: got, body, .. } => {
            assert_eq!((got, body.as_str()), (id, "after restart"));
        }
        other => panic!("unexpected {other:?}"),
    }
    b.send_chat(&contact_of("a", &ka, &a), "and back")
        .await
        .unwrap();
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A contact removed while its connection is open can no longer send on it: its messages wait
/// (queued, retried) and arrive, once each, when it is added again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_contact_cannot_send_on_its_open_connection_until_added_again() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let config = NodeConfig {
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(300),
        ..test_config([127, 0, 0, 1])
    };
    let a = start(da.path(), &ka, config.clone()).await;
    let b = start(db.path(), &kb, config).await;
    let (a_contact, b_contact) = (contact_of("a", &ka, &a), contact_of("b", &kb, &b));
    a.put_contact(&b_contact).await.unwrap();
    b.put_contact(&a_contact).await.unwrap();
    let mut a_events = a.subscribe();
    b.send_chat(&a_contact, "before").await.unwrap();
    assert_eq!(next_bodies(&mut a_events, 1).await, ["before"]);

    a.remove_contact(&b.node_id()).await.unwrap();
    let refused = b.send_chat(&a_contact, "refused").await;
    assert!(refused.is_err(), "{refused:?}");
    let queued = b.queue_chat(&a_contact, "after removal").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from_b = |m: &dp2ptcs_store::MessageRecord| m.body.clone();
    let history = |node: &dp2ptcs_node::Node, peer| {
        let node = node.clone();
        async move {
            let q = dp2ptcs_store::HistoryQuery {
                peer: Some(&peer),
                direction: Some(dp2ptcs_store::Direction::Incoming),
                limit: 100,
                ..dp2ptcs_store::HistoryQuery::default()
            };
            node.history(&q).await.unwrap()
        }
    };
    let got: Vec<String> = history(&a, b.node_id()).await.iter().map(from_b).collect();
    assert_eq!(got, ["before"], "a removed contact's message was taken");

    // Added again: what it sent meanwhile (the refused one stayed in its outbox) arrives, in
    // order, once each.
    a.put_contact(&b_contact).await.unwrap();
    assert_eq!(
        next_bodies(&mut a_events, 2).await,
        ["refused", "after removal"]
    );
    let got: Vec<String> = history(&a, b.node_id()).await.iter().map(from_b).collect();
    assert_eq!(got, ["before", "refused", "after removal"]);
    let delivered = tokio::time::timeout(SAFETY, async {
        loop {
            let m = b.message(&a.node_id(), &queued).await.unwrap().unwrap();
            if m.state == MessageState::Delivered {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(delivered.is_ok(), "the sender never heard of the delivery");
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Shutdown stops every task of the node, even one in the middle of a dial that would hang for
/// two minutes and then turns to the DHT to deposit in the mailbox, so the port can be bound
/// again once the node is dropped, as a node restarted in the same process needs. A DHT
/// operation asked for after shutdown fails instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_port_while_a_dial_hangs() {
    let (ds, dir) = (tempdir(), tempdir());
    let (ks, keys) = (new_keys(), new_keys());
    let seed = start(ds.path(), &ks, test_config([127, 0, 0, 1])).await;
    let config = NodeConfig {
        handshake_timeout: Duration::from_secs(120),
        bootstrap: vec![seed.local_addr().unwrap()],
        ..test_config([127, 0, 0, 1])
    };
    let node = start(dir.path(), &keys, config).await;
    let addr = node.local_addr().unwrap();
    tokio::time::timeout(SAFETY, async {
        while node.peers().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the node joins through the seed");
    let (hole, ghost) = black_hole().await;
    node.put_contact(&ghost).await.unwrap();
    node.queue_chat(&ghost, "are you there").await.unwrap();
    dialed(&hole).await;

    node.shutdown(Duration::from_millis(200)).await.unwrap();
    tokio::time::timeout(SAFETY, node.lookup(&ghost.node_id))
        .await
        .expect("a lookup after shutdown does not wait forever")
        .expect_err("a lookup after shutdown fails");
    // A task that turns to the DHT as the node stops (here: republishing after an address
    // change) ends too.
    node.set_advertised(vec![addr]);
    drop(node);
    // What may be left is the endpoint draining closed connections (three probe timeouts).
    let mut tries = 0;
    let socket = loop {
        match std::net::UdpSocket::bind(addr) {
            Ok(socket) => break socket,
            Err(_) if tries < 300 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{addr} still taken 30 s after shutdown: {e}"),
        }
    };
    drop(socket);
    seed.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// A contact that never answers: its address is a bound socket nobody replies on.
async fn black_hole() -> (tokio::net::UdpSocket, ContactRecord) {
    let hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let public = new_keys().identity().public();
    let ghost = ContactRecord {
        node_id: public.node_id(),
        public_key: public.to_bytes(),
        name: "ghost".into(),
        addresses: vec![hole.local_addr().unwrap()],
        verified: true,
        verified_at: None,
        added_at: 0,
    };
    (hole, ghost)
}

/// Waits until the first QUIC packet of a dial reaches `hole`.
async fn dialed(hole: &tokio::net::UdpSocket) {
    let mut buf = [0u8; 2048];
    tokio::time::timeout(SAFETY, hole.recv_from(&mut buf))
        .await
        .expect("the node dials the contact")
        .unwrap();
}

/// Chats a local application is sending when the node stops are not lost: every caller gets
/// its answer, and every chat waits in the outbox for the next start, whether it was in the
/// batch being sent or still queued behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_being_sent_at_shutdown_wait_in_the_outbox() {
    const SENDS: usize = 40;
    let dir = tempdir();
    let keys = new_keys();
    let config = NodeConfig {
        handshake_timeout: Duration::from_secs(120),
        ..test_config([127, 0, 0, 1])
    };
    let node = start(dir.path(), &keys, config).await;
    let (hole, ghost) = black_hole().await;
    node.put_contact(&ghost).await.unwrap();
    // Each call is polled once here, which takes it as far as the send queue (no await comes
    // before): all of them are accepted before the shutdown, however busy the machine is.
    let mut sends: Vec<_> = (0..SENDS)
        .map(|i| {
            let (node, ghost) = (node.clone(), ghost.clone());
            Box::pin(async move { node.send_chat(&ghost, &format!("pending #{i}")).await })
        })
        .collect();
    for send in &mut sends {
        assert!(poll_immediate(send).await.is_none(), "nothing is delivered");
    }
    dialed(&hole).await;
    node.shutdown(Duration::from_millis(200)).await.unwrap();
    let answers = tokio::time::timeout(SAFETY, join_all(sends))
        .await
        .expect("every caller gets an answer");
    assert!(
        answers.iter().all(Result::is_err),
        "nothing was delivered: {answers:?}"
    );
    // A chat sent once the node has stopped is refused, not recorded.
    assert!(matches!(
        node.send_chat(&ghost, "too late").await,
        Err(NodeError::ShuttingDown)
    ));
    let kept = node
        .history(&dp2ptcs_store::HistoryQuery {
            peer: Some(&ghost.node_id),
            direction: Some(dp2ptcs_store::Direction::Outgoing),
            after_seq: 0,
            limit: 1000,
            newest: false,
            max_body_bytes: usize::MAX,
        })
        .await
        .unwrap();
    let mut bodies: Vec<String> = kept.into_iter().map(|m| m.body).collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..SENDS).map(|i| format!("pending #{i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "every chat is in the outbox, once");
}

/// `contact` without its addresses, stored so at `node`: `node` cannot reach it until the
/// contact is stored again with them.
async fn forget_addresses(node: &dp2ptcs_node::Node, contact: &ContactRecord) -> ContactRecord {
    let nowhere = ContactRecord {
        addresses: Vec::new(),
        ..contact.clone()
    };
    node.put_contact(&nowhere).await.unwrap();
    nowhere
}

/// The bodies of the next `n` messages `events` reports, in order (within [`SAFETY`]).
async fn next_bodies(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    n: usize,
) -> Vec<String> {
    let mut got = Vec::new();
    tokio::time::timeout(SAFETY, async {
        while got.len() < n {
            if let NodeEvent::Message { body, .. } = events.recv().await.unwrap() {
                got.push(body);
            }
        }
    })
    .await
    .unwrap();
    got
}

/// Queues `n` messages of `len` bytes from `from` to `to` (the contact `to_contact`) at once and
/// returns the bodies `to` received, in the order it recorded them.
async fn queue_and_receive(
    from: &dp2ptcs_node::Node,
    to: &dp2ptcs_node::Node,
    to_contact: &ContactRecord,
    n: usize,
    len: usize,
) -> (Vec<String>, Vec<String>) {
    let mut events = to.subscribe();
    let expected: Vec<String> = (0..n)
        .map(|i| format!("{i:04} {}", "x".repeat(len - 5)))
        .collect();
    for body in &expected {
        from.queue_chat(to_contact, body).await.unwrap();
    }
    let got = next_bodies(&mut events, n).await;
    (got, expected)
}

/// Large queued messages fill a batch with a few, so the outbox sends many batches: with
/// dp2ptcs/2 several on one stream, answered in order. They arrive in the order written, each
/// once, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_large_messages_arrive_in_order_over_version_2() {
    let pair = pair(test_config([127, 0, 0, 1])).await;
    let (a, b) = (&pair.a, &pair.b);
    // A first knows no address of B, so the whole backlog waits for the outbox's retry, which
    // then sees all of it at once: 16 KiB bodies, three to a batch, 24 batches, more than one
    // stream carries, and more bytes than the outbox reads at once (it reads a window of about
    // 1 MB, then the next).
    let nowhere = forget_addresses(a, &pair.b_contact).await;
    let mut events = b.subscribe();
    let expected: Vec<String> = (0..70)
        .map(|i| format!("{i:04} {}", "x".repeat(16 * 1024 - 5)))
        .collect();
    for body in &expected {
        a.queue_chat(&nowhere, body).await.unwrap();
    }
    a.put_contact(&pair.b_contact).await.unwrap();
    let got = next_bodies(&mut events, expected.len()).await;
    assert_eq!(got, expected, "in order, each once");
    assert!(
        b.pipelined_streams_served() > 0,
        "several batches went on one stream"
    );
    let (got, expected) = queue_and_receive(b, a, &pair.a_contact, 40, 16 * 1024).await;
    assert_eq!(got, expected, "in order, each once");
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A node that speaks only version 1 (as earlier releases) and one that speaks version 2 agree
/// on version 1, and many batches still arrive in order both ways (the version-2 node must not
/// put a second envelope on a stream: the other would take it for junk and cut it off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_node_and_a_version_2_node_exchange_queued_messages_in_order() {
    let old = NodeConfig {
        pipelining: false,
        ..test_config([127, 0, 0, 1])
    };
    let pair = pair(old).await;
    let (a, b) = (&pair.a, &pair.b);
    let (got, expected) = queue_and_receive(a, b, &pair.b_contact, 30, 16 * 1024).await;
    assert_eq!(got, expected, "in order, each once");
    let (got, expected) = queue_and_receive(b, a, &pair.a_contact, 30, 16 * 1024).await;
    assert_eq!(got, expected, "in order, each once");
    assert_eq!(
        (a.pipelined_streams_served(), b.pipelined_streams_served()),
        (0, 0),
        "one envelope per stream"
    );
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A contact's queued messages go out in batches, in the order they were written, and each
/// arrives once: more of them than one envelope carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sends_many_queued_messages_in_order() {
    const QUEUED: usize = 150;
    let pair = pair(test_config([127, 0, 0, 1])).await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    let mut b_events = b.subscribe();
    for i in 0..QUEUED {
        a.queue_chat(b_contact, &format!("queued #{i}"))
            .await
            .unwrap();
    }
    let got = next_bodies(&mut b_events, QUEUED).await;
    let expected: Vec<String> = (0..QUEUED).map(|i| format!("queued #{i}")).collect();
    assert_eq!(got, expected, "in order, each once");
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A backlog larger than the outbox holds at once (512 messages, or about 1 MB of bodies) goes
/// out a window after another, in the order written, each message once; and messages queued
/// while it goes out follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_outbox_holds_at_once_arrives_in_order() {
    const BACKLOG: usize = 1200;
    const LATER: usize = 50;
    let pair = pair(test_config([127, 0, 0, 1])).await;
    let (a, b) = (&pair.a, &pair.b);
    // A knows no address of B while the backlog builds up.
    let nowhere = forget_addresses(a, &pair.b_contact).await;
    let mut events = b.subscribe();
    let mut expected: Vec<String> = (0..BACKLOG).map(|i| format!("backlog #{i}")).collect();
    for body in &expected {
        a.queue_chat(&nowhere, body).await.unwrap();
    }
    a.put_contact(&pair.b_contact).await.unwrap();
    let later: Vec<String> = (0..LATER).map(|i| format!("later #{i}")).collect();
    expected.extend(later.iter().cloned());
    let mut got = next_bodies(&mut events, 100).await;
    for body in &later {
        a.queue_chat(&pair.b_contact, body).await.unwrap();
    }
    got.extend(next_bodies(&mut events, expected.len() - 100).await);
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "in order, each once");
    // Every receipt came back: nothing is left waiting.
    tokio::time::timeout(SAFETY, async {
        loop {
            let status = a.status().await.unwrap();
            let delivered = status
                .messages
                .iter()
                .find(|(_, state, _)| *state == MessageState::Delivered)
                .map_or(0, |(_, _, n)| *n);
            if delivered == expected.len() as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Two nodes that dial each other at the same moment end with one connection between them, the
/// same one at both ends, and every message still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_dialing_each_other_at_once_keep_one_connection() {
    // Keep-alives every second; the check for a connection left over every 3 s (the request
    // timeout, which also bounds each send: a first one dials and runs an X3DH on a loaded
    // machine).
    let config = || NodeConfig {
        idle_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(3),
        ..test_config([127, 0, 0, 1])
    };
    // Most connections seen at once at either node, over the rounds.
    let mut most = 0;
    for round in 0..5 {
        let (da, db) = (tempdir(), tempdir());
        let (ka, kb) = (new_keys(), new_keys());
        let a = start(da.path(), &ka, config()).await;
        let b = start(db.path(), &kb, config()).await;
        let (a_contact, b_contact) = (contact_of("a", &ka, &a), contact_of("b", &kb, &b));
        a.put_contact(&b_contact).await.unwrap();
        b.put_contact(&a_contact).await.unwrap();
        let (to_b, to_a) = tokio::time::timeout(SAFETY, async {
            tokio::join!(
                a.send_chat(&b_contact, "from a"),
                b.send_chat(&a_contact, "from b")
            )
        })
        .await
        .unwrap();
        to_b.unwrap();
        to_a.unwrap();
        let mut last = (0, 0);
        let settled = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let (sa, sb) = (a.status().await.unwrap(), b.status().await.unwrap());
                most = most.max(sa.connections).max(sb.connections);
                if sa.connections == 1 && sb.connections == 1 {
                    return (sa, sb);
                }
                last = (sa.connections, sb.connections);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let (sa, sb) = settled.unwrap_or_else(|_| {
            panic!("round {round}: connections at a and b after 30 s: {last:?}")
        });
        assert_eq!(sa.connected, vec![b.node_id()]);
        assert_eq!(sb.connected, vec![a.node_id()]);
        // The connection kept carries messages both ways.
        a.send_chat(&b_contact, "again from a").await.unwrap();
        b.send_chat(&a_contact, "again from b").await.unwrap();
        assert_eq!(a.status().await.unwrap().connections, 1);
        assert_eq!(b.status().await.unwrap().connections, 1);
        a.shutdown(Duration::from_secs(5)).await.unwrap();
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    // Both dials start before either completes (a handshake takes round trips and an X3DH):
    // the test saw the duplicate it is about.
    assert!(most >= 2, "no round had two connections at once");
}

/// A chat whose recording outlasts its stream's time (a slow disk) is still announced once it
/// is recorded: the sender's retry finds it recorded and is not announced again, so without
/// this the application would never hear of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_recorded_after_its_stream_timed_out_is_announced_once() {
    let pair = pair(NodeConfig {
        request_timeout: Duration::from_millis(100),
        ..test_config([127, 0, 0, 1])
    })
    .await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    // The session first, retried as needed: one attempt has 100 ms, a dial and an X3DH included.
    let first = a.queue_chat(b_contact, "first").await.unwrap();
    tokio::time::timeout(SAFETY, async {
        while a
            .message(&b.node_id(), &first)
            .await
            .unwrap()
            .unwrap()
            .state
            != MessageState::Delivered
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the first chat was never delivered");
    let mut events = b.subscribe();
    // B's commits wait 3 s, longer than its streams may last (16 × 100 ms).
    b.hold_store(Duration::from_secs(3)).await;
    let id = a.queue_chat(b_contact, "slow").await.unwrap();
    tokio::time::timeout(SAFETY, async {
        loop {
            if let NodeEvent::Message { id: got, body, .. } = events.recv().await.unwrap() {
                if got == id {
                    assert_eq!(body, "slow");
                    return;
                }
            }
        }
    })
    .await
    .expect("the chat was never announced");
    // A retries (its request failed with B's stream) and gets the receipt.
    tokio::time::timeout(SAFETY, async {
        while a.message(&b.node_id(), &id).await.unwrap().unwrap().state != MessageState::Delivered
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the chat was never delivered");
    // A retry still on its way would be a duplicate: give it the time to come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(e) = events.try_recv() {
        if let NodeEvent::Message { id: got, .. } = e {
            assert_ne!(got, id, "announced twice");
        }
    }
}
