//! The local control API over its Unix socket, and the durable outbox behind `POST /v1/messages`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use dp2ptcs_crypto::ContactUri;
use dp2ptcs_node::api::client::{Client, ClientError, HistoryFilter};
use dp2ptcs_node::api::{self, AddContactRequest, ApiInfo, ApiLimits, Event, SendRequest};
use dp2ptcs_node::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SAFETY: Duration = Duration::from_secs(60);

fn serve(node: &Node, dir: &Path) -> Client {
    serve_within(node, dir, ApiLimits::default())
}

/// Serves `node`'s API in `dir` within `limits`.
fn serve_within(node: &Node, dir: &Path, limits: ApiLimits) -> Client {
    let path = dir.join(api::SOCKET_FILE);
    let listener = api::bind(&path).unwrap();
    let info = ApiInfo {
        addresses: vec![node.local_addr().unwrap()],
        version: "test".into(),
    };
    tokio::spawn(api::serve_with(listener, node.clone(), info, limits));
    Client::new(path)
}

/// Adds `b` to `node`'s contacts as "b", at an address held by the socket returned, which
/// never answers.
async fn unreachable_contact(
    node: &Node,
    b: &dp2ptcs_crypto::UnlockedKeystore,
) -> (dp2ptcs_store::ContactRecord, std::net::UdpSocket) {
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut contact = contact_of("b", b, node);
    contact.addresses = vec![hole.local_addr().unwrap()];
    node.put_contact(&contact).await.unwrap();
    (contact, hole)
}

/// The next event of `events` (within [`SAFETY`]).
async fn next_event(events: &mut api::client::EventStream) -> Event {
    tokio::time::timeout(SAFETY, events.next())
        .await
        .expect("no event")
        .expect("the event stream ended")
        .unwrap()
}

/// Whether the node behind `client` comes to retry `n` peers (within [`SAFETY`]).
async fn retrying(client: &Client, n: usize) -> bool {
    tokio::time::timeout(SAFETY, async {
        while client.status().await.unwrap().peers_retrying != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

fn quick_retries() -> NodeConfig {
    NodeConfig {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        dial_attempts: 1,
        handshake_timeout: Duration::from_secs(2),
        ..test_config([127, 0, 0, 1])
    }
}

fn send(to: &str, text: &str, wait: bool) -> SendRequest {
    SendRequest {
        to: to.into(),
        text: text.into(),
        wait,
        timeout_ms: Some(20_000),
        ttl_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_contacts_send_history_and_events_over_the_socket() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, quick_retries()).await;
    let b = start(db.path(), &kb, quick_retries()).await;
    a.put_contact(&contact_of("Bravo 2", &kb, &b))
        .await
        .unwrap();
    b.put_contact(&contact_of("Alpha", &ka, &a)).await.unwrap();
    let (ca, cb) = (serve(&a, da.path()), serve(&b, db.path()));

    let mode = std::fs::metadata(ca.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may connect");

    let status = ca.status().await.unwrap();
    assert_eq!(status.node_id, a.node_id().to_hex());
    assert_eq!(status.contacts, 1);
    assert_eq!(status.addresses, vec![a.local_addr().unwrap().to_string()]);
    let contacts = ca.contacts().await.unwrap();
    assert_eq!(contacts[0].name, "Bravo 2");
    assert_eq!(contacts[0].node_id, b.node_id().to_hex());

    let mut b_events = cb.events().await.unwrap();
    // By name, waiting for the receipt.
    let sent = ca
        .send(&send("Bravo 2", "hello, bravo", true))
        .await
        .unwrap();
    assert_eq!(sent.state, "delivered");
    assert_eq!(sent.to, b.node_id().to_hex());
    // By node-id prefix, without waiting.
    let prefix = &b.node_id().to_hex()[..10];
    let queued = ca.send(&send(prefix, "second", false)).await.unwrap();

    let mut bodies = Vec::new();
    tokio::time::timeout(SAFETY, async {
        while bodies.len() < 2 {
            match b_events.next().await.unwrap().unwrap() {
                Event::Message {
                    id,
                    from,
                    from_name,
                    body,
                    ..
                } => {
                    assert_eq!(from, a.node_id().to_hex());
                    assert_eq!(from_name.as_deref(), Some("Alpha"));
                    bodies.push((id, body));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        bodies,
        vec![
            (sent.id.clone(), "hello, bravo".to_owned()),
            (queued.id.clone(), "second".to_owned())
        ]
    );

    // The sender's history shows both delivered (the second once its receipt is in).
    tokio::time::timeout(SAFETY, async {
        loop {
            let out = ca
                .history(&HistoryFilter {
                    peer: Some("Bravo 2".into()),
                    direction: Some("outgoing".into()),
                    ..HistoryFilter::default()
                })
                .await
                .unwrap();
            if out.len() == 2 && out.iter().all(|m| m.state == "delivered") {
                assert_eq!(out[1].peer_name.as_deref(), Some("Bravo 2"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let inbox = cb
        .history(&HistoryFilter {
            direction: Some("incoming".into()),
            limit: Some(1),
            newest: true,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].body, "second");
    assert_eq!(inbox[0].state, "received");

    let status = cb.status().await.unwrap();
    assert_eq!(status.messages.received, 2);
    assert_eq!(status.connected.len(), 1);
    assert_eq!(status.connected[0].name.as_deref(), Some("Alpha"));
}

fn add_request(uri: &ContactUri, name: Option<&str>) -> AddContactRequest {
    AddContactRequest {
        uri: uri.to_string(),
        name: name.map(str::to_owned),
    }
}

fn api_code(err: ClientError) -> (u16, String) {
    match err {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_contact_added_over_the_socket_can_be_messaged_and_removed() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, quick_retries()).await;
    let b = start(db.path(), &kb, quick_retries()).await;
    b.put_contact(&contact_of("Alpha", &ka, &a)).await.unwrap();
    let ca = serve(&a, da.path());

    // Bravo's URI as `dp2ptcs id` shows it: its name and where it listens.
    let b_addr = b.local_addr().unwrap();
    let b_uri = ContactUri::new(kb.identity(), Some("Bravo"), &[b_addr]).unwrap();
    let added = ca.add_contact(&add_request(&b_uri, None)).await.unwrap();
    assert_eq!(added.outcome, "added");
    assert_eq!(added.contact.name, "Bravo");
    assert_eq!(added.contact.node_id, b.node_id().to_hex());
    assert_eq!(added.contact.addresses, [b_addr.to_string()]);
    assert!(!added.contact.verified);
    assert_eq!(
        ca.contacts().await.unwrap(),
        std::slice::from_ref(&added.contact)
    );

    // It is a contact like any other: a message to it arrives, and its receipt comes back.
    let sent = ca
        .send(&send("Bravo", "added over the API", true))
        .await
        .unwrap();
    assert_eq!(sent.state, "delivered");
    let got = b
        .history(&dp2ptcs_store::HistoryQuery {
            peer: Some(&a.node_id()),
            direction: Some(dp2ptcs_store::Direction::Incoming),
            after_seq: 0,
            limit: 10,
            newest: false,
            max_body_bytes: usize::MAX,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "added over the API");

    // The same URI again changes nothing; with other address hints, only those change.
    let again = ca.add_contact(&add_request(&b_uri, None)).await.unwrap();
    assert_eq!(
        (again.outcome.as_str(), &again.contact),
        ("unchanged", &added.contact)
    );
    let moved: std::net::SocketAddr = "192.0.2.7:7446".parse().unwrap();
    let b_moved = ContactUri::new(kb.identity(), Some("Bravo"), &[moved]).unwrap();
    let updated = ca.add_contact(&add_request(&b_moved, None)).await.unwrap();
    assert_eq!(updated.outcome, "addresses_updated");
    assert_eq!(updated.contact.addresses, [moved.to_string()]);

    // What is refused, each with its code, and nothing changes.
    let other = new_keys();
    let other_uri = ContactUri::new(other.identity(), None, &[]).unwrap();
    let own_uri = ContactUri::new(ka.identity(), Some("me"), &[]).unwrap();
    let refused = [
        (add_request(&other_uri, Some("Bravo")), (409, "name_taken")),
        (
            add_request(&b_uri, Some("Bravo again")),
            (409, "already_contact"),
        ),
        (add_request(&other_uri, None), (400, "bad_request")),
        (add_request(&other_uri, Some("")), (400, "bad_request")),
        (add_request(&own_uri, None), (400, "bad_request")),
        (
            AddContactRequest {
                uri: "dp2ptcs://contact?v=1&key=nonsense".into(),
                name: Some("X".into()),
            },
            (400, "bad_request"),
        ),
    ];
    for (request, (status, code)) in refused {
        let err = ca.add_contact(&request).await.unwrap_err();
        assert_eq!(api_code(err), (status, code.to_owned()), "{request:?}");
    }
    assert_eq!(
        ca.contacts().await.unwrap(),
        std::slice::from_ref(&updated.contact)
    );

    // Removed by a node-id prefix; then it is unknown, to the API and to sending.
    let prefix = &b.node_id().to_hex()[..12];
    let removed = ca.remove_contact(prefix).await.unwrap();
    assert_eq!(removed, updated.contact);
    assert!(ca.contacts().await.unwrap().is_empty());
    let err = ca.remove_contact("Bravo").await.unwrap_err();
    assert_eq!(api_code(err), (404, "unknown_contact".to_owned()));
    let err = ca.send(&send("Bravo", "gone", false)).await.unwrap_err();
    assert_eq!(api_code(err), (404, "unknown_contact".to_owned()));
    // Its history stays.
    let kept = ca
        .history(&HistoryFilter {
            direction: Some("outgoing".into()),
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].peer, b.node_id().to_hex());
    assert_eq!(kept[0].peer_name, None);
    // And can be asked for by its full node id (a prefix names only contacts).
    let by_id = ca
        .history(&HistoryFilter {
            peer: Some(b.node_id().to_hex()),
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_id, kept);
    let err = ca
        .history(&HistoryFilter {
            peer: Some(prefix.to_owned()),
            ..HistoryFilter::default()
        })
        .await
        .unwrap_err();
    assert_eq!(api_code(err), (404, "unknown_contact".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_typed_errors_and_the_server_keeps_serving() {
    let da = tempdir();
    let ka = new_keys();
    let a = start(da.path(), &ka, quick_retries()).await;
    let ca = serve(&a, da.path());

    let err = ca.send(&send("nobody", "hi", false)).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 404, code, .. } if code == "unknown_contact"),
        "{err:?}"
    );
    let err = ca.send(&send("nobody", "", false)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 400, .. }),
        "{err:?}"
    );
    let err = ca
        .history(&HistoryFilter {
            direction: Some("sideways".into()),
            ..HistoryFilter::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 400, .. }),
        "{err:?}"
    );
    let err = ca
        .history(&HistoryFilter {
            limit: Some(0),
            ..HistoryFilter::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 400, .. }),
        "{err:?}"
    );

    // Raw junk on the socket: malformed JSON, an unknown path, bytes that are not HTTP, and a
    // body over the limit. Each gets an error (or a closed connection), never a crash.
    for request in [
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{\"to\"".to_owned(),
        "GET /v2/nothing HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
        "\u{1}\u{2}garbage\r\n\r\n".to_owned(),
        format!(
            "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            api::MAX_REQUEST_BODY + 1,
            "x".repeat(api::MAX_REQUEST_BODY + 1)
        ),
    ] {
        let mut s = tokio::net::UnixStream::connect(ca.socket()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        let n = tokio::time::timeout(SAFETY, s.read(&mut head))
            .await
            .unwrap()
            .unwrap_or(0);
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(
            n == 0 || head.starts_with("HTTP/1.1 4"),
            "{request:?} got {head:?}"
        );
    }
    assert_eq!(ca.status().await.unwrap().node_id, a.node_id().to_hex());

    // Every refusal is a typed JSON error, whatever part of the request is wrong.
    let big = "x".repeat(api::MAX_REQUEST_BODY + 1);
    for (request, status, code) in [
        ("PUT /v1/status".to_owned(), 405, "method_not_allowed"),
        ("DELETE /v1/contacts/%FF".to_owned(), 400, "bad_request"),
        ("DELETE /v1/outbox/%FF%FE".to_owned(), 400, "bad_request"),
        // A misspelt field (`ttl` for `ttl_ms`) is not silently dropped.
        (
            format!("POST /v1/messages\r\ncontent-type: application/json\r\ncontent-length: 38\r\n\r\n{}", r#"{"to":"a","text":"at 0400","ttl":7200}"#),
            400,
            "bad_request",
        ),
        (
            format!("POST /v1/messages\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{big}", big.len()),
            413,
            "too_large",
        ),
    ] {
        let (line, rest) = request.split_once("\r\n").unwrap_or((&request, ""));
        let raw = format!("{line} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{}", if rest.is_empty() { "\r\n" } else { rest });
        let mut s = tokio::net::UnixStream::connect(ca.socket()).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(SAFETY, s.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{line}: {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: api::ErrorBody =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{line}: {e}: {answer}"));
        assert_eq!(body.code, code, "{line}: {answer}");
    }

    // With the node stopped, the client says so.
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::remove_file(ca.socket()).ok();
    assert!(matches!(
        ca.status().await.unwrap_err(),
        ClientError::NotRunning(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_messages_are_retried_until_the_peer_comes_up_and_survive_a_restart() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    // B's address is reserved, but B is not running yet.
    // Held (unanswered) until B starts, so no other test's node takes it meanwhile.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_addr = hole.local_addr().unwrap();
    let a = start(da.path(), &ka, quick_retries()).await;
    let mut b_contact = contact_of("b", &kb, &a);
    b_contact.addresses = vec![b_addr];
    a.put_contact(&b_contact).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            a.queue_chat(&b_contact, &format!("early #{i}"))
                .await
                .unwrap(),
        );
    }
    // A restarts while B is still down: the outbox is on disk.
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(a);
    let a = start(da.path(), &ka, quick_retries()).await;
    for i in 5..10 {
        ids.push(
            a.queue_chat(&b_contact, &format!("early #{i}"))
                .await
                .unwrap(),
        );
    }
    // Its first attempt fails (nothing answers at B's address), and A backs off.
    tokio::time::timeout(SAFETY, async {
        while a.status().await.unwrap().peers_retrying != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    drop(hole);
    let b = start(
        db.path(),
        &kb,
        NodeConfig {
            listen: b_addr,
            ..quick_retries()
        },
    )
    .await;
    // Subscribed first: A's next retry may deliver as soon as B knows it.
    let mut b_events = b.subscribe();
    b.put_contact(&contact_of("a", &ka, &a)).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(SAFETY, async {
        while got.len() < 10 {
            if let Ok(dp2ptcs_node::NodeEvent::Message { id, body, .. }) = b_events.recv().await {
                got.push((id, body));
            }
        }
    })
    .await
    .unwrap();
    // In order, each once.
    let expected: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, format!("early #{i}")))
        .collect();
    assert_eq!(got, expected);
    tokio::time::timeout(SAFETY, async {
        loop {
            let mut all = true;
            for id in &ids {
                let m = a.message(&b.node_id(), id).await.unwrap().unwrap();
                all &= m.state == dp2ptcs_store::MessageState::Delivered;
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_over_the_peer_rate_are_refused_with_a_typed_error_and_retried_later() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    // A slow first handshake on a loaded machine is not what this test is about.
    let patient = NodeConfig {
        handshake_timeout: Duration::from_secs(15),
        ..quick_retries()
    };
    let a = start(da.path(), &ka, patient.clone()).await;
    // One request a second after a burst of 5: twenty sends one after the other overrun it
    // unless each takes most of a second.
    let b = start(
        db.path(),
        &kb,
        NodeConfig {
            peer_rate_per_sec: 1,
            peer_burst: 5,
            ..patient
        },
    )
    .await;
    let b_contact = contact_of("b", &kb, &b);
    a.put_contact(&b_contact).await.unwrap();
    b.put_contact(&contact_of("a", &ka, &a)).await.unwrap();
    let mut b_events = b.subscribe();

    // Twenty, one after the other (chats sent at the same time would share one request): the
    // burst passes, the rest is refused, not queued at B.
    let mut refused = 0;
    for i in 0..20 {
        match a.send_chat(&b_contact, &format!("burst #{i}")).await {
            Ok(_) => {}
            Err(dp2ptcs_node::NodeError::Refused { code, .. }) => {
                assert_eq!(code, dp2ptcs_wire::WireErrorCode::LimitExceeded.code());
                refused += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(refused > 0, "the rate limit refused nothing");
    // The refused ones stay in A's outbox and get through as B's bucket refills.
    let mut bodies = std::collections::HashSet::new();
    tokio::time::timeout(SAFETY, async {
        while bodies.len() < 20 {
            if let Ok(dp2ptcs_node::NodeEvent::Message { body, .. }) = b_events.recv().await {
                assert!(bodies.insert(body), "delivered twice");
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_past_its_time_to_live_expires_and_says_so() {
    let (da, ka, kb) = (tempdir(), new_keys(), new_keys());
    // B never runs: its address is a reserved port nobody answers on.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_addr = hole.local_addr().unwrap();
    let a = start(da.path(), &ka, quick_retries()).await;
    let client = serve(&a, da.path());
    let mut b_contact = contact_of("b", &kb, &a);
    b_contact.addresses = vec![b_addr];
    a.put_contact(&b_contact).await.unwrap();
    let mut events = client.events().await.unwrap();

    let mut short = send("b", "only worth 2 s", false);
    short.ttl_ms = Some(2_000);
    let short = client.send(&short).await.unwrap();
    let long = client
        .send(&send("b", "worth a week", false))
        .await
        .unwrap();
    let expired = tokio::time::timeout(SAFETY, async {
        loop {
            if let Some(Ok(Event::Expired { id, to })) = events.next().await {
                return (id, to);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(expired, (short.id.clone(), b_contact.node_id.to_hex()));
    let history = client
        .history(&HistoryFilter {
            direction: Some("outgoing".into()),
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    let state = |id: &str| history.iter().find(|m| m.id == id).unwrap().state.clone();
    assert_eq!(state(&short.id), "expired");
    assert_ne!(state(&long.id), "expired");
    assert_eq!(client.status().await.unwrap().messages.expired, 1);

    // A zero or too long time to live is refused with a clear error, and nothing is queued.
    for ttl in [0, 31 * 24 * 60 * 60 * 1000] {
        let mut bad = send("b", "never queued", false);
        bad.ttl_ms = Some(ttl);
        match client.send(&bad).await {
            Err(ClientError::Api {
                status: 400,
                message,
                ..
            }) => {
                assert!(message.contains("time to live"), "{message}")
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }
    assert_eq!(
        client
            .history(&HistoryFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_cancelled_before_its_contact_comes_up_never_arrives() {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb, kc) = (new_keys(), new_keys(), new_keys());
    // B's address is reserved, but B is not running yet; C never runs.
    // Held (unanswered) until B starts, so no other test's node takes it meanwhile.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_addr = hole.local_addr().unwrap();
    let a = start(da.path(), &ka, quick_retries()).await;
    let mut b_contact = contact_of("Bravo", &kb, &a);
    b_contact.addresses = vec![b_addr];
    let mut c_contact = contact_of("Charlie", &kc, &a);
    c_contact.addresses = vec![b_addr];
    a.put_contact(&b_contact).await.unwrap();
    a.put_contact(&c_contact).await.unwrap();
    let ca = serve(&a, da.path());

    let mut ids = Vec::new();
    for (to, text) in [
        ("Bravo", "one"),
        ("Charlie", "for charlie 1"),
        ("Bravo", "two"),
        ("Charlie", "for charlie 2"),
        ("Bravo", "three"),
    ] {
        ids.push(ca.send(&send(to, text, false)).await.unwrap().id);
    }
    // The outbox lists them oldest first, each with its recipient and expiry.
    let waiting = ca.outbox(None, 0, 100).await.unwrap();
    let ids_of = |ms: &[api::Message]| -> Vec<String> { ms.iter().map(|m| m.id.clone()).collect() };
    assert_eq!(ids_of(&waiting), ids);
    assert!(waiting.iter().all(|m| m.expires_at_ms.is_some()));
    assert_eq!(waiting[1].peer_name.as_deref(), Some("Charlie"));
    let to_bravo = ca.outbox(Some("Bravo"), 0, 100).await.unwrap();
    assert_eq!(
        ids_of(&to_bravo),
        [ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );
    assert_eq!(
        ids_of(&ca.outbox(None, waiting[0].seq, 1).await.unwrap()),
        [ids[1].clone()]
    );

    // One message cancelled: it leaves the outbox, stays in the history, and the event says so.
    let mut events = ca.events().await.unwrap();
    let cancelled = ca.cancel(&ids[2]).await.unwrap();
    assert_eq!(cancelled.was, "queued", "nothing can have left: B is down");
    assert_eq!(cancelled.message.state, "cancelled");
    assert_eq!(cancelled.message.body, "two");
    let event = next_event(&mut events).await;
    assert_eq!(
        event,
        Event::Cancelled {
            id: ids[2].clone(),
            to: b_contact.node_id.to_hex()
        }
    );
    // Cancelling it again, a made-up id or something that is not an id is refused.
    assert_eq!(
        api_code(ca.cancel(&ids[2]).await.unwrap_err()),
        (409, "not_waiting".to_owned())
    );
    assert_eq!(
        api_code(ca.cancel(&"0".repeat(32)).await.unwrap_err()),
        (404, "unknown_message".to_owned())
    );
    assert_eq!(api_code(ca.cancel("not an id").await.unwrap_err()).0, 400);

    // Charlie is removed; the messages left waiting for him are found and cancelled by his
    // node id, which no contact carries any more.
    ca.remove_contact("Charlie").await.unwrap();
    assert_eq!(
        api_code(ca.outbox(Some("Charlie"), 0, 100).await.unwrap_err()),
        (404, "unknown_contact".to_owned())
    );
    let c_hex = c_contact.node_id.to_hex();
    let for_c = ca.outbox(Some(&c_hex[..12]), 0, 100).await.unwrap();
    assert_eq!(ids_of(&for_c), [ids[1].clone(), ids[3].clone()]);
    assert_eq!(for_c[0].peer_name, None);
    // Neither B nor C answered: both are retried.
    assert!(retrying(&ca, 2).await, "B and C are not both retried");
    let all = ca.cancel_all(&c_hex[..12]).await.unwrap();
    assert_eq!(
        (all.to.as_str(), all.cancelled.as_slice()),
        (c_hex.as_str(), &[ids[1].clone(), ids[3].clone()][..])
    );
    // Nothing is left for him: his id no longer names anyone with messages waiting.
    assert_eq!(
        api_code(ca.cancel_all(&c_hex[..12]).await.unwrap_err()),
        (404, "unknown_contact".to_owned())
    );
    // A DELETE that does not say whose messages cancels nothing.
    let mut s = tokio::net::UnixStream::connect(ca.socket()).await.unwrap();
    s.write_all(b"DELETE /v1/outbox HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    let n = tokio::time::timeout(SAFETY, s.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head[..n], b"HTTP/1.1 400");
    assert_eq!(
        ids_of(&ca.outbox(None, 0, 100).await.unwrap()),
        [ids[0].clone(), ids[4].clone()]
    );

    // B comes up: it gets the two messages left, in order, and never the cancelled one.
    drop(hole);
    let b = start(
        db.path(),
        &kb,
        NodeConfig {
            listen: b_addr,
            ..quick_retries()
        },
    )
    .await;
    b.put_contact(&contact_of("Alpha", &ka, &a)).await.unwrap();
    tokio::time::timeout(SAFETY, async {
        while !ca.outbox(None, 0, 100).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let received: Vec<String> = b
        .history(&dp2ptcs_store::HistoryQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(received, ["one", "three"]);
    let counts = ca.status().await.unwrap().messages;
    assert_eq!((counts.delivered, counts.cancelled), (2, 3));
    // Nothing waits for anyone: nobody is retried, C (who never answered) included.
    assert!(
        retrying(&ca, 0).await,
        "a peer with nothing waiting is still retried"
    );
    let states: Vec<String> = ca
        .history(&HistoryFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.state)
        .collect();
    assert_eq!(
        states,
        [
            "delivered",
            "cancelled",
            "cancelled",
            "cancelled",
            "delivered"
        ]
    );
    // Nothing waits for Bravo now: cancelling everything for him finds nothing.
    let none = ca.cancel_all("Bravo").await.unwrap();
    assert!(none.cancelled.is_empty());
    assert_eq!(none.to, b_contact.node_id.to_hex());
}

/// A send waiting for its receipt when the node shuts down is answered with the message's id
/// and state (it stays queued for the next start), instead of a connection that drops without
/// the id, which could make the user send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_waiting_for_its_receipt_is_answered_when_the_node_shuts_down() {
    let (da, kb) = (tempdir(), new_keys());
    let ka = new_keys();
    let a = start(da.path(), &ka, quick_retries()).await;
    // B is not running: its address is held by a socket that never answers.
    let (b_contact, _hole) = unreachable_contact(&a, &kb).await;
    let ca = serve(&a, da.path());
    let waiting = tokio::spawn(async move {
        ca.send(&SendRequest {
            timeout_ms: Some(api::MAX_WAIT_MS),
            ..send("b", "still waiting", true)
        })
        .await
    });
    // Once it is recorded, the request is waiting for the receipt.
    tokio::time::timeout(SAFETY, async {
        while a.waiting(None, 0, 10).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the send was never recorded");
    a.shutdown(Duration::from_secs(5)).await.unwrap();
    let answer = tokio::time::timeout(SAFETY, waiting)
        .await
        .expect("the send was not answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer.to, kb.identity().node_id().to_hex());
    assert_eq!(answer.state, "queued");
    // It is in the outbox for the next start.
    let a = start(da.path(), &ka, quick_retries()).await;
    let out = a
        .message(&b_contact.node_id, &answer.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.body, "still waiting");
    a.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_server_answers_busy_and_closes_connections_that_send_nothing() {
    let da = tempdir();
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, quick_retries()).await;
    // B never runs: a message to it stays queued until it is cancelled.
    let (b_contact, _hole) = unreachable_contact(&a, &kb).await;
    let ca = serve(&a, da.path());

    // An event stream and connections that never send a request fill the server.
    let mut events = ca.events().await.unwrap();
    let mut silent = Vec::new();
    for _ in 1..api::MAX_CONNECTIONS {
        silent.push(tokio::net::UnixStream::connect(ca.socket()).await.unwrap());
    }
    // The server takes connections in order, so the next one is past the limit.
    let (status, code) = api_code(ca.status().await.unwrap_err());
    assert_eq!((status, code.as_str()), (503, "busy"));
    let (status, code) = api_code(ca.events().await.unwrap_err());
    assert_eq!((status, code.as_str()), (503, "busy"));

    // The silent ones are closed once the header read timeout passes; the server serves again.
    for s in &mut silent {
        let mut rest = Vec::new();
        tokio::time::timeout(SAFETY, s.read_to_end(&mut rest))
            .await
            .expect("a connection that sent nothing is still open")
            .ok();
        assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&rest)
        );
    }
    let sent = tokio::time::timeout(SAFETY, async {
        loop {
            match ca.send(&send("b", "queued", false)).await {
                Ok(sent) => return sent,
                Err(ClientError::Api { status: 503, .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await
    .expect("the server did not serve again");
    // The event stream, which had its answer, was not closed with them: it reports the message
    // put in the outbox, then its cancellation.
    assert_eq!(
        next_event(&mut events).await,
        Event::Queued {
            id: sent.id.clone(),
            to: b_contact.node_id.to_hex()
        }
    );
    ca.cancel(&sent.id).await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(
        event,
        Event::Cancelled {
            id: sent.id.clone(),
            to: b_contact.node_id.to_hex()
        }
    );
    a.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The declared length of the answer's body in `answer` (status line and headers included), and
/// how much of that body it holds.
fn body_received(answer: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(answer);
    let end = text.find("\r\n\r\n").expect("no whole answer header") + 4;
    let length = text[..end]
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .expect("no content-length");
    (length, answer.len() - end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_its_answer_is_disconnected() {
    let da = tempdir();
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, quick_retries()).await;
    let (_b_contact, _hole) = unreachable_contact(&a, &kb).await;
    let limits = ApiLimits {
        write_stall_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(3),
        ..ApiLimits::default()
    };
    let ca = serve_within(&a, da.path(), limits);
    // About 2 MiB of history: more than the socket's buffers hold.
    let text = "x".repeat(dp2ptcs_wire::MAX_CHAT_BODY_LEN);
    for _ in 0..64 {
        ca.send(&send("b", &text, false)).await.unwrap();
    }

    let mut stalled = tokio::net::UnixStream::connect(ca.socket()).await.unwrap();
    stalled
        .write_all(b"GET /v1/messages?limit=100 HTTP/1.1\r\nHost: dp2ptcs\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing for longer than the limit: the server gives up on it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut answer = Vec::new();
    tokio::time::timeout(SAFETY, stalled.read_to_end(&mut answer))
        .await
        .expect("the stalled connection is still open")
        .ok();
    let (length, received) = body_received(&answer);
    assert!(
        received < length,
        "the whole answer ({length} bytes) was written to a client that did not read"
    );

    // A client that reads gets the same answer whole, and the server goes on serving.
    let mut reader = tokio::net::UnixStream::connect(ca.socket()).await.unwrap();
    reader
        .write_all(
            b"GET /v1/messages?limit=100 HTTP/1.1\r\nHost: dp2ptcs\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(SAFETY, reader.read_to_end(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    let (length, received) = body_received(&answer);
    assert_eq!(received, length);
    assert!(length > 64 * dp2ptcs_wire::MAX_CHAT_BODY_LEN);
    assert_eq!(ca.status().await.unwrap().messages.queued, 64);
    a.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_body_that_trickles_in_is_answered_timeout_and_closed() {
    let da = tempdir();
    let ka = new_keys();
    let a = start(da.path(), &ka, quick_retries()).await;
    let limits = ApiLimits {
        body_read_timeout: Duration::from_secs(1),
        ..ApiLimits::default()
    };
    let ca = serve_within(&a, da.path(), limits);

    let stream = tokio::net::UnixStream::connect(ca.socket()).await.unwrap();
    let (mut from_server, mut to_server) = stream.into_split();
    to_server
        .write_all(
            b"POST /v1/contacts HTTP/1.1\r\nHost: dp2ptcs\r\nContent-Type: application/json\r\n\
              Content-Length: 4000\r\n\r\n{",
        )
        .await
        .unwrap();
    // One byte every 100 ms: always something, never the whole body in time.
    let trickle = tokio::spawn(async move {
        while to_server.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(SAFETY, from_server.read_to_end(&mut answer))
        .await
        .expect("the trickling connection is still open");
    // A byte that arrives as the server closes makes the close a reset, after the answer.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
    trickle.abort();

    // Nothing was added, and the server goes on serving.
    assert!(ca.contacts().await.unwrap().is_empty());
    a.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The rules on new contact names do not lock out a contact stored before them: adding its URI
/// again under its name still refreshes its addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_stored_under_a_name_now_refused_can_still_be_refreshed() {
    let da = tempdir();
    let (ka, kb, kc) = (new_keys(), new_keys(), new_keys());
    let a = start(da.path(), &ka, quick_retries()).await;
    let mut legacy = contact_of("deadbeef", &kb, &a);
    legacy.addresses = vec!["127.0.0.1:9".parse().unwrap()];
    a.put_contact(&legacy).await.unwrap();
    let moved: std::net::SocketAddr = "127.0.0.1:10".parse().unwrap();
    let uri = ContactUri::new(kb.identity(), None, &[moved]).unwrap();
    let (stored, outcome) = a.add_contact(&uri, "deadbeef").await.unwrap();
    assert_eq!(outcome, dp2ptcs_store::AddOutcome::AddressesUpdated);
    assert_eq!(stored.addresses, [moved]);
    // A new contact may not take such a name.
    let other = ContactUri::new(kc.identity(), None, &[]).unwrap();
    assert!(matches!(
        a.add_contact(&other, "deadbeef00").await,
        Err(dp2ptcs_node::NodeError::InvalidContact(_))
    ));
    a.shutdown(Duration::from_secs(5)).await.unwrap();
}
