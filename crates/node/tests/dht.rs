//! The DHT with real nodes: 50 nodes in this process, each with its own store and its own QUIC
//! endpoint on a loopback address of its own /24 (so the per-prefix diversity limit does not
//! fold them together), joined through one seed node.
//!
//! - Every node finds every other by id (a failed lookup is tried once more; at most 1 % of
//!   them may need it).
//! - A message to a contact known only by its public key (no address) is delivered: the sender
//!   looks the contact up in the DHT.
//! - After 30 % of the nodes are stopped, every survivor still finds every other survivor.
//! - A node restarted without `bootstrap` rejoins from its routing-table snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{new_keys, start, tempdir, test_config};
use dp2ptcs_crypto::UnlockedKeystore;
use dp2ptcs_node::{Node, NodeConfig, NodeEvent};
use dp2ptcs_store::ContactRecord;
use dp2ptcs_types::NodeId;

const NODES: usize = 50;

struct Member {
    keys: UnlockedKeystore,
    dir: tempfile::TempDir,
    node: Node,
    addr: SocketAddr,
}

fn config(i: usize, bootstrap: Vec<SocketAddr>) -> NodeConfig {
    // 127.0.i.1: one /24 per node.
    let ip = [127, 0, i as u8, 1];
    NodeConfig {
        bootstrap,
        ..test_config(ip)
    }
}

/// Waits until `f` holds, polling; panics with `what` after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Looks `target` up from `node` until it is found at `addr`, for at most 30 s: a lookup that
/// timed out on a loaded machine is tried again, as a user would.
async fn finds(node: &Node, target: &NodeId, addr: SocketAddr) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = node.lookup(target).await;
        if matches!(r, Ok(ref r) if r.found == Some(addr)) {
            return true;
        }
        if Instant::now() >= end {
            eprintln!("lookup of {} failed: {r:?}", target.short(8));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every member of `alive` looks up every other one, `parallel` lookups at a time per node;
/// returns the (looker, target) pairs that failed twice in a row. A failed lookup is tried once
/// more (a user would try again: a peer too slow to answer in time on a loaded machine is not a
/// peer the DHT lost), but first tries may fail for at most 1 % of the pairs.
async fn all_find_all(members: &[Arc<Member>], parallel: usize) -> Vec<(usize, usize)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let m = m.clone();
        let targets: Vec<(usize, NodeId, SocketAddr)> = members
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, t)| (j, t.node.node_id(), t.addr))
            .collect();
        tasks.spawn(async move {
            let mut failed = Vec::new();
            let mut retried = 0usize;
            let mut costs = Vec::new();
            for chunk in targets.chunks(parallel) {
                let mut set = tokio::task::JoinSet::new();
                for &(j, id, addr) in chunk {
                    let node = m.node.clone();
                    set.spawn(async move {
                        let mut r = node.lookup(&id).await;
                        let mut ok = matches!(r, Ok(ref r) if r.found == Some(addr));
                        let first_try = ok;
                        if !ok {
                            eprintln!("lookup of {j} failed, trying once more: {r:?}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            r = node.lookup(&id).await;
                            ok = matches!(r, Ok(ref r) if r.found == Some(addr));
                            if !ok {
                                eprintln!("lookup of {j} failed again: {r:?}");
                            }
                        }
                        let cost = r.map(|r| (r.requests, r.rounds)).unwrap_or((0, 0));
                        (j, ok, first_try, cost)
                    });
                }
                while let Some(r) = set.join_next().await {
                    let (j, ok, first_try, cost) = r.unwrap();
                    if !ok {
                        failed.push((i, j));
                    }
                    retried += usize::from(!first_try);
                    costs.push(cost);
                }
            }
            (failed, retried, costs)
        });
    }
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut retried = 0;
    let mut costs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (f, n, c) = r.unwrap();
        failed.extend(f);
        retried += n;
        costs.extend(c);
    }
    assert!(
        retried * 100 <= costs.len(),
        "{retried} of {} first tries failed",
        costs.len()
    );
    // Figures for the record (never asserted: machines are noisy).
    costs.sort_unstable();
    let (requests, rounds): (Vec<u32>, Vec<u32>) = costs.iter().copied().unzip();
    let median = |v: &[u32]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    eprintln!(
        "{} lookups ({retried} tried twice) in {:.1} s: median {} requests, {} rounds; max {} requests",
        costs.len(),
        started.elapsed().as_secs_f64(),
        median(&requests),
        median(&rounds),
        requests.iter().max().copied().unwrap_or(0)
    );
    failed
}

fn bare_contact(name: &str, m: &Member) -> ContactRecord {
    let public = m.keys.identity().public();
    ContactRecord {
        node_id: public.node_id(),
        public_key: public.to_bytes(),
        name: name.into(),
        addresses: Vec::new(),
        verified: true,
        verified_at: None,
        added_at: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_find_each_other_message_by_key_and_survive_losing_30_percent() {
    // The seed, then 49 nodes that know only the seed's address.
    let mut members: Vec<Arc<Member>> = Vec::new();
    let seed_keys = new_keys();
    let seed_dir = tempdir();
    let seed = start(seed_dir.path(), &seed_keys, config(0, Vec::new())).await;
    let seed_addr = seed.local_addr().unwrap();
    members.push(Arc::new(Member {
        keys: seed_keys,
        dir: seed_dir,
        node: seed,
        addr: seed_addr,
    }));
    for i in 1..NODES {
        let keys = new_keys();
        let dir = tempdir();
        let node = start(dir.path(), &keys, config(i, vec![seed_addr])).await;
        let addr = node.local_addr().unwrap();
        members.push(Arc::new(Member {
            keys,
            dir,
            node,
            addr,
        }));
    }
    // Each has joined: its self-lookup filled its table beyond the seed.
    for m in &members {
        let node = m.node.clone();
        eventually(Duration::from_secs(60), "every node joins", || {
            let node = node.clone();
            async move { node.status().await.unwrap().dht.peers >= 10 }
        })
        .await;
    }

    // 1. Every node finds every other by id.
    let failed = all_find_all(&members, 1).await;
    assert!(
        failed.is_empty(),
        "{} of {} lookups failed: {:?}",
        failed.len(),
        NODES * (NODES - 1),
        &failed[..failed.len().min(10)]
    );
    // `peers` lists proven peers, in their buckets.
    let peers = members[7].node.peers();
    assert!(peers.len() >= 10);
    for p in &peers {
        assert!(members
            .iter()
            .any(|m| m.node.node_id() == p.node_id && m.addr == p.addr));
        assert_eq!(
            Some(p.bucket),
            members[7]
                .node
                .node_id()
                .distance(&p.node_id)
                .bucket_index()
        );
    }
    // A lookup's path starts at hop 1 and names only real nodes.
    let r = members[3]
        .node
        .lookup(&members[45].node.node_id())
        .await
        .unwrap();
    assert!(!r.path.is_empty() && r.path.iter().any(|s| s.hop == 1));
    assert!(r.requests >= 1);

    // 2. Contacts that know only each other's public key: the sender finds the address by
    // lookup, and the message arrives once, intact.
    let (a, b) = (members[11].clone(), members[42].clone());
    a.node
        .put_contact(&bare_contact("Bravo", &b))
        .await
        .unwrap();
    b.node
        .put_contact(&bare_contact("Alpha", &a))
        .await
        .unwrap();
    let mut inbox = b.node.subscribe();
    let to_b = a.node.contact(&b.node.node_id()).await.unwrap().unwrap();
    assert!(to_b.addresses.is_empty());
    let id = a.node.send_chat(&to_b, "found you by key").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(NodeEvent::Message { id, from, body, .. }) = inbox.recv().await {
                return (id, from, body);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, (id, a.node.node_id(), "found you by key".to_owned()));
    // And back, the other way.
    let to_a = b.node.contact(&a.node.node_id()).await.unwrap().unwrap();
    b.node.send_chat(&to_a, "and you by yours").await.unwrap();

    // 3. Stop 30 % of the nodes (the seed among them): the rest still find each other.
    let stopped: HashSet<usize> = (0..NODES).step_by(3).take(NODES * 3 / 10).collect();
    assert_eq!(stopped.len(), 15);
    for &i in &stopped {
        members[i].node.shutdown(Duration::ZERO).await.unwrap();
    }
    let survivors: Vec<Arc<Member>> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| !stopped.contains(i))
        .map(|(_, m)| m.clone())
        .collect();
    let failed = all_find_all(&survivors, 2).await;
    let total = survivors.len() * (survivors.len() - 1);
    assert!(
        failed.is_empty(),
        "{} of {total} lookups failed after the loss: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );

    // 4. A survivor restarted without any bootstrap address rejoins from its snapshot.
    let m = survivors[5].clone();
    m.node.shutdown(Duration::from_secs(2)).await.unwrap();
    let restarted = start(m.dir.path(), &m.keys, config(60, Vec::new())).await;
    eventually(Duration::from_secs(30), "rejoin from the snapshot", || {
        let node = restarted.clone();
        async move { node.status().await.unwrap().dht.peers >= 5 }
    })
    .await;
    let target = &survivors[20];
    assert!(finds(&restarted, &target.node.node_id(), target.addr).await);
}

mod hostile {
    use super::*;
    use dp2ptcs_node::{tls, DHT_ALPN, SERVER_NAME};
    use dp2ptcs_wire::{encode_frame, DhtHello, WireErrorCode, MAX_FRAME_LEN};
    use quinn::{Connection, ConnectionError, Endpoint};

    fn dht_client() -> Endpoint {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(
            tls::client_crypto_for(DHT_ALPN).unwrap(),
        )
        .unwrap();
        let mut ep = Endpoint::client(SocketAddr::from(([127, 0, 9, 9], 0))).unwrap();
        ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        ep
    }

    /// The dialer's hello for `conn`, signed by `keys` (PROTOCOL.md 10.5).
    fn hello(conn: &Connection, keys: &UnlockedKeystore) -> DhtHello {
        let mut binding = [0u8; 32];
        conn.export_keying_material(&mut binding, b"EXPORTER-dp2ptcs-dht-hello", b"")
            .unwrap();
        let mut m = b"dp2ptcs/v1/dht-hello".to_vec();
        m.push(0x01);
        m.extend_from_slice(&binding);
        DhtHello {
            identity_key: keys.identity().public().to_bytes(),
            signature: keys.identity().sign(&m),
        }
    }

    async fn closed_with(conn: &Connection) -> u64 {
        match tokio::time::timeout(Duration::from_secs(10), conn.closed()).await {
            Ok(ConnectionError::ApplicationClosed(c)) => c.error_code.into_inner(),
            other => panic!("unexpected end {other:?}"),
        }
    }

    async fn send_first(conn: &Connection, bytes: &[u8]) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        let _ = send.finish();
        (send, recv)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_hellos_and_junk_requests_close_the_connection_others_still_served() {
        let (ds, db, dc) = (tempdir(), tempdir(), tempdir());
        let (ks, kb, kc) = (new_keys(), new_keys(), new_keys());
        let seed = start(ds.path(), &ks, config(0, Vec::new())).await;
        let seed_addr = seed.local_addr().unwrap();
        let b = start(db.path(), &kb, config(1, vec![seed_addr])).await;
        let c = start(dc.path(), &kc, config(2, vec![seed_addr])).await;
        for n in [&b, &c] {
            let n = n.clone();
            eventually(Duration::from_secs(30), "join", || {
                let n = n.clone();
                async move { n.status().await.unwrap().dht.peers >= 2 }
            })
            .await;
        }
        let ep = dht_client();
        let auth = WireErrorCode::AuthenticationFailed.code() as u64;
        let malformed = WireErrorCode::MalformedFrame.code() as u64;

        // Not a hello at all.
        let conn = ep.connect(seed_addr, SERVER_NAME).unwrap().await.unwrap();
        let garbage = encode_frame(&[0xff; 40], MAX_FRAME_LEN).unwrap();
        let _s = send_first(&conn, &garbage).await;
        assert_eq!(closed_with(&conn).await, malformed);

        // A hello whose signature is not over this connection: a replay of another one's.
        let stranger = new_keys();
        let first = ep.connect(seed_addr, SERVER_NAME).unwrap().await.unwrap();
        let replayed = hello(&first, &stranger);
        let conn = ep.connect(seed_addr, SERVER_NAME).unwrap().await.unwrap();
        let _s = send_first(
            &conn,
            &encode_frame(&replayed.encode(), MAX_FRAME_LEN).unwrap(),
        )
        .await;
        assert_eq!(closed_with(&conn).await, auth);

        // A valid hello, then a request stream of junk.
        let conn = ep.connect(seed_addr, SERVER_NAME).unwrap().await.unwrap();
        let ours = hello(&conn, &stranger);
        let (_send, mut recv) =
            send_first(&conn, &encode_frame(&ours.encode(), MAX_FRAME_LEN).unwrap()).await;
        let reply = recv.read_to_end(1024).await.unwrap();
        assert!(!reply.is_empty(), "the responder's hello");
        let _s = send_first(&conn, &encode_frame(&[0x08, 0xff], MAX_FRAME_LEN).unwrap()).await;
        assert_eq!(closed_with(&conn).await, malformed);

        // Meanwhile the seed keeps serving the real nodes.
        assert!(finds(&c, &b.node_id(), b.local_addr().unwrap()).await);
        assert!(finds(&b, &c.node_id(), c.local_addr().unwrap()).await);
    }
}
