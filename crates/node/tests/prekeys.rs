//! Persisted prekeys, asynchronous X3DH from a learned bundle, and replay protection, with real
//! nodes on loopback. A TLS-terminating relay between dialer and responder shows which handshake
//! path was taken: nodes accept any certificate (identity is proven by the handshake, `PROTOCOL.md`
//! 9.1), so such a relay sees the handshake frames in clear, as an active network attacker would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dp2ptcs_crypto::{PreKeyBundle, PreKeyStore, UnlockedKeystore};
use dp2ptcs_node::{tls, Node, NodeError, NodeEvent, SERVER_NAME};
use dp2ptcs_store::{ContactRecord, Store, DB_FILE};
use dp2ptcs_wire::{Hello, HelloBody, HelloReply, WireErrorCode, MAX_FRAME_LEN};
use quinn::{ConnectionError, Endpoint, RecvStream, SendStream};

/// A safety net so a broken build fails instead of hanging; not a performance assertion.
const SAFETY: Duration = Duration::from_secs(30);

/// The bytes each side wrote on the handshake stream of one relayed connection.
#[derive(Debug, Default)]
struct Captured {
    dialer: Vec<u8>,
    responder: Vec<u8>,
}

impl Captured {
    fn hellos(&self) -> Vec<Hello> {
        dp2ptcs_wire::frame::decode_all(&self.dialer, MAX_FRAME_LEN)
            .unwrap()
            .iter()
            .map(|f| Hello::decode(f).unwrap())
            .collect()
    }
    fn replies(&self) -> Vec<HelloReply> {
        dp2ptcs_wire::frame::decode_all(&self.responder, MAX_FRAME_LEN)
            .unwrap()
            .iter()
            .map(|f| HelloReply::decode(f).unwrap())
            .collect()
    }
}

type Log = Arc<Mutex<Vec<u8>>>;

/// A relay to `target`: every connection to it is forwarded to a connection of its own to
/// `target`, stream by stream, and the handshake streams are recorded.
struct Relay {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<(Log, Log)>>>,
}

impl Relay {
    fn captured(&self, i: usize) -> Captured {
        let (d, r) = self.connections.lock().unwrap()[i].clone();
        let dialer = d.lock().unwrap().clone();
        let responder = r.lock().unwrap().clone();
        Captured { dialer, responder }
    }
    fn count(&self) -> usize {
        self.connections.lock().unwrap().len()
    }
}

fn client_config() -> quinn::ClientConfig {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_crypto().unwrap()).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

async fn pump(mut from: RecvStream, mut to: SendStream, log: Option<Log>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(Some(n)) => {
                if let Some(log) = &log {
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = to.finish();
                return;
            }
            Err(_) => {
                let _ = to.reset(0u32.into());
                return;
            }
        }
    }
}

fn splice(a: (SendStream, RecvStream), b: (SendStream, RecvStream), logs: Option<(Log, Log)>) {
    let (a_log, b_log) = match logs {
        Some((x, y)) => (Some(x), Some(y)),
        None => (None, None),
    };
    tokio::spawn(pump(a.1, b.0, a_log));
    tokio::spawn(pump(b.1, a.0, b_log));
}

fn close_code(e: &ConnectionError) -> Option<u32> {
    match e {
        ConnectionError::ApplicationClosed(c) => u32::try_from(c.error_code.into_inner()).ok(),
        _ => None,
    }
}

async fn relay(target: SocketAddr) -> Relay {
    let server_crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_crypto().unwrap()).unwrap();
    let server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    let mut ep = Endpoint::server(server, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    ep.set_default_client_config(client_config());
    let addr = ep.local_addr().unwrap();
    let connections: Arc<Mutex<Vec<(Log, Log)>>> = Arc::default();
    let conns = connections.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let (ep, conns) = (ep.clone(), conns.clone());
            tokio::spawn(async move {
                let Ok(down) = incoming.await else { return };
                let Ok(up) = ep.connect(target, SERVER_NAME).unwrap().await else {
                    return;
                };
                let logs: (Log, Log) = Default::default();
                conns.lock().unwrap().push(logs.clone());
                let (d2, u2) = (down.clone(), up.clone());
                tokio::spawn(async move {
                    let (code, other) = tokio::select! {
                        e = d2.closed() => (close_code(&e), &u2),
                        e = u2.closed() => (close_code(&e), &d2),
                    };
                    other.close(code.unwrap_or(0).into(), b"relay");
                });
                let mut first = Some(logs);
                loop {
                    tokio::select! {
                        s = down.accept_bi() => {
                            let Ok(s) = s else { break };
                            let Ok(u) = up.open_bi().await else { break };
                            splice(s, u, first.take());
                        }
                        s = up.accept_bi() => {
                            let Ok(s) = s else { break };
                            let Ok(d) = down.open_bi().await else { break };
                            splice(s, d, None);
                        }
                    }
                }
            });
        }
    });
    Relay { addr, connections }
}

fn via(mut contact: ContactRecord, addr: SocketAddr) -> ContactRecord {
    contact.addresses = vec![addr];
    contact
}

async fn expect_message(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>, text: &str) {
    tokio::time::timeout(SAFETY, async {
        loop {
            if let NodeEvent::Message { body, .. } = events.recv().await.unwrap() {
                assert_eq!(body, text);
                return;
            }
        }
    })
    .await
    .unwrap();
}

/// The single hello of a direct handshake from `bundle`, answered by a proof.
fn assert_direct(c: &Captured, bundle: &PreKeyBundle) {
    let hellos = c.hellos();
    assert_eq!(hellos.len(), 1, "{hellos:?}");
    match &hellos[0].body {
        HelloBody::Handshake(init) => {
            assert_eq!(init.signed_prekey_id, bundle.signed_prekey_id());
            assert_eq!(init.one_time_prekey_id, None);
        }
        other => panic!("expected a direct handshake, got {other:?}"),
    }
    let replies = c.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(matches!(replies[0], HelloReply::Proof(_)), "{replies:?}");
}

async fn pair() -> (
    tempfile::TempDir,
    UnlockedKeystore,
    Node,
    tempfile::TempDir,
    UnlockedKeystore,
    Node,
) {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, test_config([127, 0, 0, 1])).await;
    let b = start(db.path(), &kb, test_config([127, 0, 0, 1])).await;
    a.put_contact(&contact_of("b", &kb, &b)).await.unwrap();
    b.put_contact(&contact_of("a", &ka, &a)).await.unwrap();
    (da, ka, a, db, kb, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_x3dh_from_a_learned_bundle_takes_the_direct_path() {
    let (_da, ka, a, _db, kb, b) = pair().await;
    let relay = relay(b.local_addr().unwrap()).await;
    let b_contact = via(contact_of("b", &kb, &b), relay.addr);
    a.put_contact(&b_contact).await.unwrap();
    let bundle = b.prekey_bundle();
    assert_eq!(bundle.one_time_prekey(), None);
    a.learn_bundle(bundle.clone()).unwrap();

    let mut b_events = b.subscribe();
    a.send_chat(&b_contact, "first, asynchronously")
        .await
        .unwrap();
    expect_message(&mut b_events, "first, asynchronously").await;
    assert_eq!(relay.count(), 1);
    assert_direct(&relay.captured(0), &bundle);
    // The session works both ways.
    let mut a_events = a.subscribe();
    b.send_chat(&contact_of("a", &ka, &a), "reply")
        .await
        .unwrap();
    expect_message(&mut a_events, "reply").await;
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_accepts_a_handshake_from_the_bundle_it_published_before() {
    let (_da, ka, a, db, kb, b) = pair().await;
    let bundle = b.prekey_bundle();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(b);
    let b = start(db.path(), &kb, test_config([127, 0, 0, 1])).await;
    // Same signed prekey after the restart.
    assert_eq!(b.prekey_bundle(), bundle);

    let relay = relay(b.local_addr().unwrap()).await;
    let b_contact = via(contact_of("b", &kb, &b), relay.addr);
    a.put_contact(&b_contact).await.unwrap();
    a.learn_bundle(bundle.clone()).unwrap();
    let mut b_events = b.subscribe();
    a.send_chat(&b_contact, "after your restart").await.unwrap();
    expect_message(&mut b_events, "after your restart").await;
    assert_direct(&relay.captured(0), &bundle);
    let mut a_events = a.subscribe();
    b.send_chat(&contact_of("a", &ka, &a), "and back")
        .await
        .unwrap();
    expect_message(&mut a_events, "and back").await;
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_learned_bundle_falls_back_to_an_offer_on_the_same_stream() {
    let (_da, ka, a, _db, kb, b) = pair().await;
    let stale = b.prekey_bundle();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(b);
    // B lost its database: same identity, new prekeys (same signed prekey id, another key).
    let db2 = tempdir();
    let b = start(db2.path(), &kb, test_config([127, 0, 0, 1])).await;
    b.put_contact(&contact_of("a", &ka, &a)).await.unwrap();
    assert_ne!(b.prekey_bundle(), stale);

    let relay = relay(b.local_addr().unwrap()).await;
    let b_contact = via(contact_of("b", &kb, &b), relay.addr);
    a.put_contact(&b_contact).await.unwrap();
    a.learn_bundle(stale.clone()).unwrap();
    let mut b_events = b.subscribe();
    a.send_chat(&b_contact, "despite a stale bundle")
        .await
        .unwrap();
    expect_message(&mut b_events, "despite a stale bundle").await;
    let c = relay.captured(0);
    let hellos = c.hellos();
    let replies = c.replies();
    assert_eq!(hellos.len(), 2, "{hellos:?}");
    assert!(matches!(&hellos[0].body, HelloBody::Handshake(i) if i.one_time_prekey_id.is_none()));
    assert!(matches!(&hellos[1].body, HelloBody::Handshake(i) if i.one_time_prekey_id.is_some()));
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(matches!(replies[0], HelloReply::Offer(_)));
    assert!(matches!(replies[1], HelloReply::Proof(_)));
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bundles_are_refused_by_learn_bundle() {
    let (_da, _ka, a, _db, kb, b) = pair().await;
    let (dc, kc) = (tempdir(), new_keys());
    let c = start(dc.path(), &kc, test_config([127, 0, 0, 1])).await;
    let (bb, cb) = (b.prekey_bundle(), c.prekey_bundle());
    let mut bad_sig = *bb.signed_prekey_signature();
    bad_sig[10] ^= 1;
    let forged = [
        // A damaged signature.
        PreKeyBundle::new(
            *bb.identity(),
            bb.signed_prekey_id(),
            *bb.signed_prekey(),
            bad_sig,
            None,
        ),
        // B's identity with C's signed prekey and signature.
        PreKeyBundle::new(
            *bb.identity(),
            cb.signed_prekey_id(),
            *cb.signed_prekey(),
            *cb.signed_prekey_signature(),
            None,
        ),
        // C's identity with B's signed prekey and signature.
        PreKeyBundle::new(
            *cb.identity(),
            bb.signed_prekey_id(),
            *bb.signed_prekey(),
            *bb.signed_prekey_signature(),
            None,
        ),
    ];
    for f in forged {
        assert!(matches!(
            a.learn_bundle(f),
            Err(NodeError::Authentication(_))
        ));
    }
    // Nothing was learned: A reaches B by the interactive path.
    let relay = relay(b.local_addr().unwrap()).await;
    let b_contact = via(contact_of("b", &kb, &b), relay.addr);
    a.put_contact(&b_contact).await.unwrap();
    a.send_chat(&b_contact, "hello").await.unwrap();
    let hellos = relay.captured(0).hellos();
    assert_eq!(hellos[0].body, HelloBody::BundleRequest);
    for n in [a, b, c] {
        n.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

/// Sends `bytes` on the first stream of a new connection to `addr` and returns the replies that
/// arrived and the code the node closed the connection with.
async fn replay(addr: SocketAddr, bytes: &[u8]) -> (Vec<HelloReply>, u64) {
    let mut ep = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    ep.set_default_client_config(client_config());
    let conn = ep.connect(addr, SERVER_NAME).unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    let got = tokio::time::timeout(SAFETY, recv.read_to_end(MAX_FRAME_LEN * 4))
        .await
        .expect("no answer to the replay")
        .unwrap_or_default();
    let replies: Vec<HelloReply> = dp2ptcs_wire::frame::decode_all(&got, MAX_FRAME_LEN)
        .unwrap()
        .iter()
        .map(|f| HelloReply::decode(f).unwrap())
        .collect();
    assert!(
        !replies.iter().any(|r| matches!(r, HelloReply::Proof(_))),
        "the replay was accepted: {replies:?}"
    );
    let code = match tokio::time::timeout(SAFETY, conn.closed()).await {
        Ok(ConnectionError::ApplicationClosed(c)) => c.error_code.into_inner(),
        other => panic!("unexpected close {other:?}"),
    };
    (replies, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_direct_handshake_is_refused_and_the_session_is_unaffected() {
    let (_da, ka, a, _db, kb, b) = pair().await;
    let relay = relay(b.local_addr().unwrap()).await;
    let b_contact = via(contact_of("b", &kb, &b), relay.addr);
    a.put_contact(&b_contact).await.unwrap();
    let bundle = b.prekey_bundle();
    a.learn_bundle(bundle.clone()).unwrap();
    let mut b_events = b.subscribe();
    a.send_chat(&b_contact, "one").await.unwrap();
    expect_message(&mut b_events, "one").await;
    let captured = relay.captured(0);
    assert_direct(&captured, &bundle);

    // The attacker replays the recorded handshake on new connections: refused every time.
    let auth = u64::from(WireErrorCode::AuthenticationFailed.code());
    for _ in 0..2 {
        let (replies, code) = replay(b.local_addr().unwrap(), &captured.dialer).await;
        assert_eq!(code, auth);
        // The error frame may be lost to the connection close racing it; never a proof.
        assert!(
            matches!(&replies[..], [] | [HelloReply::Error(_)]),
            "{replies:?}"
        );
    }
    // The session made by the original handshake still carries messages both ways.
    a.send_chat(&b_contact, "two").await.unwrap();
    expect_message(&mut b_events, "two").await;
    let mut a_events = a.subscribe();
    b.send_chat(&contact_of("a", &ka, &a), "three")
        .await
        .unwrap();
    expect_message(&mut a_events, "three").await;
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_reveals_no_prekey() {
    let (da, ka, a, db, kb, b) = pair().await;
    // Offers make one-time prekeys; a direct handshake fills a replay set.
    a.send_chat(&contact_of("b", &kb, &b), "interactive")
        .await
        .unwrap();
    b.learn_bundle(a.prekey_bundle()).unwrap();
    b.send_chat(&contact_of("a", &ka, &a), "direct")
        .await
        .unwrap();
    let bundles = [a.prekey_bundle(), b.prekey_bundle()];
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
    drop((a, b));

    let mut needles: Vec<Vec<u8>> = vec![
        b"signed_prekeys".to_vec(),
        b"one_time_prekeys".to_vec(),
        b"secret".to_vec(),
    ];
    for bundle in &bundles {
        needles.push(bundle.signed_prekey().to_vec());
        needles.push(hex::encode(bundle.signed_prekey()).into_bytes());
    }
    for dir in [da.path(), db.path()] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for needle in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} contains {:?}",
                    path.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
    // Inside the database, the prekeys are sealed again, under the key of PROTOCOL.md 9.4.
    let store = Store::open(&db.path().join(DB_FILE), kb.database_key()).unwrap();
    let sealed = store.load_prekeys().unwrap().unwrap();
    for needle in &needles {
        assert!(!sealed.windows(needle.len()).any(|w| w == needle.as_slice()));
    }
    let key = |info: &[u8]| {
        let mut k = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, kb.database_key())
            .expand(info, &mut k)
            .unwrap();
        k
    };
    let opened = PreKeyStore::open_sealed(&key(b"DP2PTCS prekey store key v1"), &sealed).unwrap();
    assert_eq!(opened.bundle(None), bundles[1]);
    assert!(PreKeyStore::open_sealed(&key(b"DP2PTCS session pickle key v1"), &sealed).is_err());
}
