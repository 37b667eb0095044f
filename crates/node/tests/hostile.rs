//! Misbehaving peers are cut off; well-behaved ones keep messaging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dp2ptcs_node::{tls, HeldStream, NodeConfig, SERVER_NAME};
use dp2ptcs_store::{Direction, HistoryQuery};
use dp2ptcs_types::MessageId;
use dp2ptcs_wire::{
    encode_frame, Chat, Hello, HelloBody, MessageKind, Receipt, WireErrorCode, MAX_FRAME_LEN,
};
use quinn::{ConnectionError, Endpoint};

fn raw_client(ip: [u8; 4]) -> Endpoint {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_crypto().unwrap()).unwrap();
    let mut ep = Endpoint::client(SocketAddr::from((ip, 0))).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    ep
}

/// Connects, opens the first stream, sends `bytes`, and returns the code the node closed with.
async fn close_code_after(ep: &Endpoint, addr: SocketAddr, bytes: &[u8]) -> u64 {
    let conn = ep.connect(addr, SERVER_NAME).unwrap().await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    match conn.closed().await {
        ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("unexpected close {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversize_unknown_and_junk_close_the_connection_others_unaffected() {
    let pair = pair(test_config([127, 0, 0, 1])).await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    a.send_chat(b_contact, "hello before").await.unwrap();

    let ep = raw_client([127, 0, 0, 1]);
    let addr = b.local_addr().unwrap();
    let malformed = WireErrorCode::MalformedFrame.code() as u64;

    // Not protobuf at all.
    let garbage = encode_frame(&[0xff; 40], MAX_FRAME_LEN).unwrap();
    assert_eq!(close_code_after(&ep, addr, &garbage).await, malformed);
    // A length prefix far above the maximum (refused before allocating).
    let mut oversize = Vec::new();
    dp2ptcs_wire::frame::write_varint(u64::MAX / 3, &mut oversize);
    oversize.extend_from_slice(&[0; 16]);
    assert_eq!(close_code_after(&ep, addr, &oversize).await, malformed);
    // A non-minimal length prefix.
    assert_eq!(close_code_after(&ep, addr, &[0x80, 0x00]).await, malformed);
    // An envelope of unknown type inside the hello: TacticalMessage{type = 99}.
    let mut tm = vec![0x0a, 32];
    tm.extend([7u8; 32]);
    tm.extend([0x10, 99, 0x1a, 32]);
    tm.extend([9u8; 32]);
    let mut hello = vec![0x0a, 32];
    hello.extend([1u8; 32]);
    hello.extend([0x12, 32]);
    hello.extend(b.node_id().as_bytes());
    hello.extend([0x1a, tm.len() as u8]);
    hello.extend(&tm);
    let unknown = encode_frame(&hello, MAX_FRAME_LEN).unwrap();
    assert_eq!(
        close_code_after(&ep, addr, &unknown).await,
        WireErrorCode::UnknownType.code() as u64
    );
    // A well-formed hello from a stranger, followed by junk.
    let stranger = new_keys();
    let hello = Hello {
        identity_key: stranger.identity().public().to_bytes(),
        responder_id: b.node_id(),
        body: HelloBody::BundleRequest,
    };
    let mut junk = encode_frame(&hello.encode(), MAX_FRAME_LEN).unwrap();
    junk.extend_from_slice(b"\x05junk!");
    assert_eq!(
        close_code_after(&ep, addr, &junk).await,
        WireErrorCode::AuthenticationFailed.code() as u64
    );

    // Meanwhile the contact keeps messaging both ways.
    a.send_chat(b_contact, "hello after").await.unwrap();
    b.send_chat(&pair.a_contact, "still here").await.unwrap();
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authenticated_contact_sending_junk_is_cut_off_and_others_keep_messaging() {
    let (da, db, dc) = (tempdir(), tempdir(), tempdir());
    let (ka, kb, kc) = (new_keys(), new_keys(), new_keys());
    let a = start(da.path(), &ka, test_config([127, 0, 0, 1])).await;
    // B speaks version 1, where a request stream ends after its one frame (version 2's stream
    // bounds: `a_stream_carries_chats_up_to_its_bound_and_nothing_else_after_the_first`).
    let v1 = NodeConfig {
        pipelining: false,
        ..test_config([127, 0, 0, 1])
    };
    let b = start(db.path(), &kb, v1).await;
    let c = start(dc.path(), &kc, test_config([127, 0, 0, 1])).await;
    let b_contact = contact_of("b", &kb, &b);
    a.put_contact(&b_contact).await.unwrap();
    c.put_contact(&b_contact).await.unwrap();
    b.put_contact(&contact_of("a", &ka, &a)).await.unwrap();
    b.put_contact(&contact_of("c", &kc, &c)).await.unwrap();
    let wait = Duration::from_secs(10);
    let malformed = WireErrorCode::MalformedFrame.code() as u64;

    // C has a session with B (the handshake is done by a real message), then misbehaves.
    c.send_chat(&b_contact, "hi, I am c").await.unwrap();
    let garbage = encode_frame(&[0xff; 40], MAX_FRAME_LEN).unwrap();
    assert_eq!(
        c.send_raw_stream(&b_contact, &garbage, wait).await.unwrap(),
        Some(malformed)
    );
    // A fresh connection (proved by the session) followed by a frame and trailing junk.
    let mut trailing = encode_frame(&[0x0a, 0x00], MAX_FRAME_LEN).unwrap();
    trailing.extend_from_slice(b"junk after the frame");
    assert_eq!(
        c.send_raw_stream(&b_contact, &trailing, wait)
            .await
            .unwrap(),
        Some(malformed),
        "junk after the one frame of a stream closes the connection"
    );
    // An oversize length prefix after the handshake.
    let mut oversize = Vec::new();
    dp2ptcs_wire::frame::write_varint(u64::MAX / 3, &mut oversize);
    assert_eq!(
        c.send_raw_stream(&b_contact, &oversize, wait)
            .await
            .unwrap(),
        Some(malformed)
    );

    // A keeps messaging B throughout, and C can still talk properly afterwards.
    a.send_chat(&b_contact, "a is fine").await.unwrap();
    b.send_chat(&contact_of("a", &ka, &a), "b is fine")
        .await
        .unwrap();
    c.send_chat(&b_contact, "c behaves again").await.unwrap();
    for n in [&a, &b, &c] {
        n.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_from_one_ip_is_limited_and_a_peer_still_connects() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let limited = NodeConfig {
        max_connections_per_ip: 4,
        ..test_config([127, 0, 0, 1])
    };
    let b = start(db.path(), &kb, limited).await;
    // The legitimate peer comes from another loopback address.
    let a = start(da.path(), &ka, test_config([127, 0, 0, 2])).await;
    let b_contact = contact_of("b", &kb, &b);
    a.put_contact(&b_contact).await.unwrap();
    b.put_contact(&contact_of("a", &ka, &a)).await.unwrap();

    let ep = raw_client([127, 0, 0, 1]);
    let addr = b.local_addr().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..16 {
        match ep.connect(addr, SERVER_NAME).unwrap().await {
            Ok(c) => held.push(c),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(held.len(), 4);
    assert_eq!(refused, 12);

    let id = a.send_chat(&b_contact, "through the flood").await.unwrap();
    assert!(b.message(&a.node_id(), &id).await.unwrap().is_some());
    drop(held);
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A chat envelope's kind and plaintext.
fn chat(body: &str) -> (MessageKind, Vec<u8>) {
    let chat = Chat {
        id: MessageId::random(&mut rand::rngs::OsRng),
        sent_at_ms: 1_800_000_000_000,
        body: body.into(),
    };
    (MessageKind::Chat, chat.encode().unwrap())
}

/// What `node` recorded from `peer`.
async fn received(node: &dp2ptcs_node::Node, peer: &dp2ptcs_types::NodeId) -> Vec<String> {
    let q = HistoryQuery {
        peer: Some(peer),
        direction: Some(Direction::Incoming),
        after_seq: 0,
        limit: 1000,
        ..HistoryQuery::default()
    };
    node.history(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect()
}

/// With dp2ptcs/2 a stream carries chats one after another, up to a bound; more, or anything
/// but a chat after the first envelope, cuts the sender off. What came before stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_chats_up_to_its_bound_and_nothing_else_after_the_first() {
    let pair = pair(test_config([127, 0, 0, 1])).await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    let wait = Duration::from_secs(10);
    let malformed = WireErrorCode::MalformedFrame.code() as u64;
    a.send_chat(b_contact, "hello").await.unwrap();

    // 17 chats on one stream: the bound is 16.
    let many: Vec<_> = (0..17).map(|i| chat(&format!("piped #{i}"))).collect();
    let (_, closed) = a
        .send_envelopes_on_one_stream(b_contact, &many, wait)
        .await
        .unwrap();
    assert_eq!(closed, Some(malformed));
    let mut expected = vec!["hello".to_string()];
    expected.extend((0..16).map(|i| format!("piped #{i}")));
    assert_eq!(
        received(b, &a.node_id()).await,
        expected,
        "16 taken, in order"
    );

    // A chat, then a receipt on the same stream.
    let receipt = Receipt {
        ids: vec![MessageId::random(&mut rand::rngs::OsRng)],
    };
    let mixed = vec![
        chat("before the receipt"),
        (MessageKind::Receipt, receipt.encode().unwrap()),
    ];
    let (_, closed) = a
        .send_envelopes_on_one_stream(b_contact, &mixed, wait)
        .await
        .unwrap();
    assert_eq!(closed, Some(malformed));
    expected.push("before the receipt".into());
    assert_eq!(received(b, &a.node_id()).await, expected);

    // Within the bound, every chat gets its receipt, in order, and the connection stays.
    let three: Vec<_> = (0..3).map(|i| chat(&format!("fine #{i}"))).collect();
    let (receipts, closed) = a
        .send_envelopes_on_one_stream(b_contact, &three, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((receipts, closed), (3, None));
    expected.extend((0..3).map(|i| format!("fine #{i}")));
    assert_eq!(received(b, &a.node_id()).await, expected);
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// An envelope's type travels in clear beside its ciphertext and is bound to it (PROTOCOL.md
/// 8.2): an envelope whose type was changed in transit does not decrypt. A receipt made to pass
/// for a chat would otherwise be recorded as an empty chat from the contact. The sender is cut
/// off, nothing is recorded, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_whose_type_was_changed_in_transit_is_refused_and_records_nothing() {
    let pair = pair(test_config([127, 0, 0, 1])).await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    let wait = Duration::from_secs(10);
    let refused = WireErrorCode::AuthenticationFailed.code() as u64;
    a.send_chat(b_contact, "hello").await.unwrap();

    let receipt = Receipt {
        ids: vec![MessageId::random(&mut rand::rngs::OsRng)],
    };
    let changed = [
        (
            (MessageKind::Receipt, receipt.encode().unwrap()),
            MessageKind::Chat,
        ),
        (chat("a chat sent as a receipt"), MessageKind::Receipt),
        (chat("a chat sent as a batch"), MessageKind::Chats),
        (
            chat("a chat sent as a session proof"),
            MessageKind::SessionProof,
        ),
    ];
    for (sealed, sent_as) in changed {
        let sealed_as = sealed.0;
        let (replies, closed) = a
            .send_retyped_envelope(b_contact, sealed, sent_as, wait)
            .await
            .unwrap();
        assert_eq!(
            (replies, closed),
            (0, Some(refused)),
            "{sealed_as:?} sent as {sent_as:?}"
        );
        assert_eq!(received(b, &a.node_id()).await, ["hello"]);
    }

    // The session is intact both ways.
    a.send_chat(b_contact, "after").await.unwrap();
    b.send_chat(&pair.a_contact, "reply").await.unwrap();
    assert_eq!(received(b, &a.node_id()).await, ["hello", "after"]);
    assert_eq!(received(a, &b.node_id()).await, ["reply"]);
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Each envelope of a stream is a request for the peer's rate: past its budget the rest of the
/// stream is refused, what came before stands, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_envelope_of_a_stream_counts_against_the_peers_rate() {
    let slow = NodeConfig {
        peer_rate_per_sec: 0,
        peer_burst: 3,
        ..test_config([127, 0, 0, 1])
    };
    let pair = pair(slow).await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    // The first chat (with the handshake) takes a token.
    a.send_chat(b_contact, "hello").await.unwrap();
    let ten: Vec<_> = (0..10).map(|i| chat(&format!("burst #{i}"))).collect();
    let (receipts, closed) = a
        .send_envelopes_on_one_stream(b_contact, &ten, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(closed, None, "refused, not cut off");
    let got = received(b, &a.node_id()).await;
    let taken = got.len() - 1;
    // Two tokens were left (none comes back: the rate is 0).
    assert_eq!(taken, 2, "took {taken} of 10");
    assert_eq!(receipts, taken);
    let expected: Vec<String> = std::iter::once("hello".to_string())
        .chain((0..taken).map(|i| format!("burst #{i}")))
        .collect();
    assert_eq!(got, expected, "the first ones, in order");
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    b.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Shuts `node` down (deadline 120 s) while `held` waits: the code its stream was stopped or
/// its connection closed with, if that came within 60 s.
async fn shut_down_while_held(node: &dp2ptcs_node::Node, held: HeldStream) -> Option<u64> {
    let (stopped, shut) = tokio::join!(
        held.stopped(Duration::from_secs(60)),
        node.shutdown(Duration::from_secs(120))
    );
    shut.unwrap();
    stopped
}

/// A peer that keeps a stream open after its chats does not hold up the node's shutdown until
/// its deadline: the node stops the stream at once with "shutting down", and the chats the
/// stream carried stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_stream_that_a_peer_holds_open() {
    let patient = NodeConfig {
        request_timeout: Duration::from_secs(120),
        ..test_config([127, 0, 0, 1])
    };
    let pair = pair(patient).await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    a.send_chat(b_contact, "hello").await.unwrap();
    let shutting_down = WireErrorCode::ShuttingDown.code() as u64;
    let chats = [chat("held #0"), chat("held #1")];
    let held = a
        .hold_stream_open(b_contact, &chats, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(held.replies, 2, "both receipts came back");
    assert_eq!(
        received(b, &a.node_id()).await,
        ["hello", "held #0", "held #1"]
    );
    // A now sits on its open stream; B stops.
    let stopped = shut_down_while_held(b, held).await;
    assert_eq!(
        stopped,
        Some(shutting_down),
        "the stream was stopped at B's shutdown"
    );
    a.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The same with version 1, where a request is one envelope and the end of the stream: a peer
/// that sends its envelope but never ends the stream has it refused at the node's shutdown
/// (nothing recorded: the sender will send it again), without the shutdown waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_a_version_1_request_that_never_ends() {
    let patient_v1 = NodeConfig {
        request_timeout: Duration::from_secs(120),
        pipelining: false,
        ..test_config([127, 0, 0, 1])
    };
    let pair = pair(patient_v1).await;
    let (a, b, b_contact) = (&pair.a, &pair.b, &pair.b_contact);
    a.send_chat(b_contact, "hello").await.unwrap();
    // No reply comes before the stream ends: wait for none.
    let held = a
        .hold_stream_open(
            b_contact,
            &[chat("never ended")],
            Duration::from_millis(500),
        )
        .await
        .unwrap();
    assert_eq!(held.replies, 0);
    let stopped = shut_down_while_held(b, held).await;
    assert_eq!(
        stopped,
        Some(WireErrorCode::ShuttingDown.code() as u64),
        "refused at B's shutdown"
    );
    assert_eq!(received(b, &a.node_id()).await, ["hello"]);
    a.shutdown(Duration::from_secs(5)).await.unwrap();
}
