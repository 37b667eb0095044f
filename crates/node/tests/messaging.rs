//! Two real nodes on loopback exchanging messages, and a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dp2ptcs_node::NodeEvent;
use dp2ptcs_store::MessageState;
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
