//! The API server (axum on a tokio `UnixListener`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use dp2ptcs_crypto::ContactUri;
use dp2ptcs_store::{AddOutcome, ContactRecord, Direction, HistoryQuery, MessageState, StoreError};
use dp2ptcs_types::{MessageId, NodeId};
use futures_util::Stream;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Semaphore;

use super::stall::WriteStall;
use super::ApiLimits;
use super::{
    cancel_answer, contact_named, message_id, peer_name, recipient_named, AddContactRequest,
    AddContactResponse, CancelAllResponse, CancelResponse, Contact, Counts, DhtPeer, DhtPeerRef,
    DhtSummary, ErrorBody, Event, Lookup, LookupHop, Message, Peer, Refusal, SendRequest,
    SendResponse, Status, MAX_HISTORY_BODY_BYTES, MAX_HISTORY_LIMIT, MAX_REQUEST_BODY, MAX_WAIT_MS,
};
use crate::{Node, NodeError, NodeEvent};

/// Connections past [`super::MAX_CONNECTIONS`] being answered `busy` at once; past this, they are
/// closed unanswered.
const MAX_REFUSING: usize = 16;
/// Pause after a failed `accept` (out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Longest wait at shutdown for the answers still being written.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// What the server reports that the node itself does not know.
#[derive(Debug, Clone, Default)]
pub struct ApiInfo {
    /// The addresses put in our contact URI.
    pub addresses: Vec<SocketAddr>,
    /// The program version.
    pub version: String,
}

#[derive(Debug, Clone)]
struct AppState {
    node: Node,
    info: Arc<ApiInfo>,
}

/// An error answer.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the node is shutting down",
            ),
            NodeError::Decode(e) => Self::new(StatusCode::BAD_REQUEST, "too_large", e.to_string()),
            e @ (NodeError::InvalidTtl { .. } | NodeError::InvalidContact(_)) => {
                Self::bad_request(e.to_string())
            }
            NodeError::Store(e @ StoreError::NameTaken { .. }) => {
                Self::new(StatusCode::CONFLICT, "name_taken", e.to_string())
            }
            NodeError::Store(e @ StoreError::AlreadyContact { .. }) => {
                Self::new(StatusCode::CONFLICT, "already_contact", e.to_string())
            }
            NodeError::Store(e @ StoreError::ContactsFull { .. }) => {
                Self::new(StatusCode::CONFLICT, "contacts_full", e.to_string())
            }
            e => {
                tracing::warn!(error = %e, "api request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self {
            status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: r.code,
            message: r.message,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a request body is at most {MAX_REQUEST_BODY} bytes"),
            );
        }
        Self::bad_request(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

/// Binds the API socket at `path`, readable and writable by the owner only. The caller must
/// own the data directory (hold its daemon lock): a file already at `path` is a stale socket
/// of an earlier run and is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, NodeError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let listener = UnixListener::bind(path)?;
    // The data directory is 0700, so nobody else could reach the socket between the two calls.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API on `listener` until the node begins shutting down, with the default
/// [`ApiLimits`].
pub async fn serve(listener: UnixListener, node: Node, info: ApiInfo) -> Result<(), NodeError> {
    serve_with(listener, node, info, ApiLimits::default()).await
}

/// Serves the API on `listener` until the node begins shutting down, within `limits`.
pub async fn serve_with(
    listener: UnixListener,
    node: Node,
    info: ApiInfo,
    limits: ApiLimits,
) -> Result<(), NodeError> {
    limits.check()?;
    let stop = node.clone();
    let state = AppState {
        node,
        info: Arc::new(info),
    };
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/contacts", get(contacts).post(add_contact))
        .route("/v1/contacts/{contact}", delete(remove_contact))
        .route("/v1/messages", get(history).post(send))
        .route("/v1/outbox", get(outbox).delete(cancel_all))
        .route("/v1/outbox/{id}", delete(cancel))
        .route("/v1/events", get(events))
        .route("/v1/peers", get(peers))
        .route("/v1/lookup/{node_id}", get(lookup))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::from_fn(move |request, next| {
            whole_body_within(limits.body_read_timeout, request, next)
        }))
        .with_state(state);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut refuse = http.clone();
    refuse.keep_alive(false);
    let serving = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before it was accepted: nothing to wait for.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to be freed rather
                    // than spin.
                    tracing::warn!(error = %e, "local API cannot accept a connection");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                        () = stop.shutting_down() => break,
                    }
                }
            },
            () = stop.shutting_down() => break,
        };
        let io = TokioIo::new(WriteStall::new(stream, limits.write_stall_timeout));
        if let Ok(permit) = Arc::clone(&serving).try_acquire_owned() {
            let conn = http.serve_connection(io, TowerToHyperService::new(app.clone()));
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "local API connection ended");
                }
                drop(permit);
            });
        } else if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
            let max = limits.max_connections;
            let conn = refuse.serve_connection(
                io,
                service_fn(move |_| async move { Ok::<_, Infallible>(busy(max)) }),
            );
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
                drop(permit);
            });
        }
        // Past both, the connection is closed unanswered: a client opening connections that
        // fast is not reading answers either.
    }
    drop(listener);
    // In-flight requests are answered (a waiting send with its id); event streams end with
    // the node's shutdown. A client that does not read its answer is not waited for long.
    if tokio::time::timeout(SHUTDOWN_WAIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("local API connections left open at shutdown");
    }
    Ok(())
}

/// The answer to a connection past the `max` served at once.
fn busy(max: usize) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!(
            "the local API serves at most {max} connections at once (each followed event stream \
             and each send waiting for its receipt holds one); close some and try again"
        ),
    )
    .into_response()
}

/// Reads the request's whole body (at most [`MAX_REQUEST_BODY`] bytes) within `limit` before
/// the handler runs: a client that trickles its body, or stops sending it, is answered
/// `408 timeout` and its connection closed, instead of holding the connection for good.
async fn whole_body_within(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read =
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_REQUEST_BODY));
    let body = match tokio::time::timeout(limit, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a request body is at most {MAX_REQUEST_BODY} bytes"),
            )
            .into_response();
        }
        // The client went away while sending: nobody reads an answer.
        Ok(Err(e)) => {
            return ApiError::bad_request(format!("cannot read the request body: {e}"))
                .into_response()
        }
        Err(_) => {
            let mut answer = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {limit:?} of its header"),
            )
            .into_response();
            answer.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return answer;
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(body),
    ))
    .await
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method (see the API table in the README)",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (the API is under /v1/: status, contacts[/NAME], messages, outbox[/ID], \
         events, peers, lookup/NODE_ID)",
    )
}

fn contact_json(c: &ContactRecord) -> Contact {
    Contact {
        name: c.name.clone(),
        node_id: c.node_id.to_hex(),
        public_key: hex::encode(c.public_key),
        addresses: c.addresses.iter().map(ToString::to_string).collect(),
        verified: c.verified,
    }
}

async fn status(State(st): State<AppState>) -> Result<Json<Status>, ApiError> {
    let s = st.node.status().await?;
    let contacts = st.node.contacts().await?;
    let mut counts = Counts::default();
    for (_, state, n) in &s.messages {
        let slot = match state {
            MessageState::Queued => &mut counts.queued,
            MessageState::Sent => &mut counts.sent,
            MessageState::Held => &mut counts.held,
            MessageState::Delivered => &mut counts.delivered,
            MessageState::Expired => &mut counts.expired,
            MessageState::Cancelled => &mut counts.cancelled,
            _ => &mut counts.received,
        };
        *slot += n;
    }
    Ok(Json(Status {
        node_id: s.node_id.to_hex(),
        version: st.info.version.clone(),
        listen: s.listen.to_string(),
        addresses: st.info.addresses.iter().map(ToString::to_string).collect(),
        uptime_secs: s.uptime.as_secs(),
        connected: s
            .connected
            .iter()
            .map(|id| Peer {
                node_id: id.to_hex(),
                name: peer_name(&contacts, id),
            })
            .collect(),
        connections: s.connections,
        contacts: s.contacts,
        messages: counts,
        peers_retrying: s.peers_retrying,
        receipts_owed: s.receipts_owed,
        strangers: s
            .strangers
            .iter()
            .map(|(id, n)| super::Stranger {
                node_id: id.to_hex(),
                messages: *n,
            })
            .collect(),
        dht: DhtSummary {
            peers: s.dht.peers,
            records: s.dht.records,
            connections: s.dht.connections,
            lookups: s.dht.lookups,
            mailbox_items: s.dht.mailbox_items,
            mailbox_bytes: s.dht.mailbox_bytes,
        },
    }))
}

async fn peers(State(st): State<AppState>) -> Json<Vec<DhtPeer>> {
    Json(
        st.node
            .peers()
            .into_iter()
            .map(|p| DhtPeer {
                node_id: p.node_id.to_hex(),
                addr: p.addr.to_string(),
                bucket: p.bucket,
                last_seen_ms: p.last_seen_ms,
                failures: p.failures,
                connected: p.connected,
            })
            .collect(),
    )
}

async fn lookup(
    State(st): State<AppState>,
    node_id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Lookup>, ApiError> {
    let UrlPath(node) = node_id?;
    // A contact, as everywhere, or any node in full.
    let contacts = st.node.contacts().await?;
    let target = history_peer(&contacts, &node)?;
    let r = st.node.lookup(&target).await.map_err(|e| match e {
        NodeError::Limit(what) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("too many {what}"),
        ),
        e => e.into(),
    })?;
    Ok(Json(Lookup {
        target: r.target.to_hex(),
        found: r.found.is_some(),
        addr: r.found.map(|a| a.to_string()),
        rounds: r.rounds,
        requests: r.requests,
        elapsed_ms: r.elapsed.as_millis() as u64,
        path: r
            .path
            .iter()
            .map(|s| LookupHop {
                node_id: s.node_id.to_hex(),
                addr: s.addr.to_string(),
                hop: s.hop,
                outcome: s.outcome.to_owned(),
            })
            .collect(),
        closest: r
            .closest
            .iter()
            .map(|(id, addr)| DhtPeerRef {
                node_id: id.to_hex(),
                addr: addr.to_string(),
            })
            .collect(),
    }))
}

async fn contacts(State(st): State<AppState>) -> Result<Json<Vec<Contact>>, ApiError> {
    Ok(Json(
        st.node.contacts().await?.iter().map(contact_json).collect(),
    ))
}

async fn add_contact(
    State(st): State<AppState>,
    body: Result<Json<AddContactRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<AddContactResponse>), ApiError> {
    let Json(req) = body?;
    let uri: ContactUri = req
        .uri
        .trim()
        .parse()
        .map_err(|e| ApiError::bad_request(format!("the contact URI: {e}")))?;
    let Some(name) = req.name.as_deref().or(uri.name()) else {
        return Err(ApiError::bad_request(
            "this contact URI carries no name: give one in \"name\"",
        ));
    };
    let name = name.to_owned();
    let (record, outcome) = st.node.add_contact(&uri, &name).await?;
    let (code, outcome) = match outcome {
        AddOutcome::Added => (StatusCode::CREATED, "added"),
        AddOutcome::AddressesUpdated => (StatusCode::OK, "addresses_updated"),
        AddOutcome::Unchanged => (StatusCode::OK, "unchanged"),
    };
    Ok((
        code,
        Json(AddContactResponse {
            outcome: outcome.to_owned(),
            contact: contact_json(&record),
        }),
    ))
}

async fn remove_contact(
    State(st): State<AppState>,
    query: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Contact>, ApiError> {
    let UrlPath(query) = query?;
    let contacts = st.node.contacts().await?;
    let contact = contact_named(&contacts, &query)?;
    match st.node.remove_contact(&contact.node_id).await? {
        Some(removed) => Ok(Json(contact_json(&removed))),
        // Removed by someone else between the two reads.
        None => Err(Refusal::unknown_contact(&query).into()),
    }
}

/// The `limit` of a listing: 100 unless given, at most [`MAX_HISTORY_LIMIT`].
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_HISTORY_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..={MAX_HISTORY_LIMIT}"
        )));
    }
    Ok(limit)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    peer: Option<String>,
    direction: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
    newest: Option<bool>,
}

async fn history(
    State(st): State<AppState>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let Query(p) = params?;
    let contacts = st.node.contacts().await?;
    let peer = match &p.peer {
        Some(q) => Some(history_peer(&contacts, q)?),
        None => None,
    };
    let direction = match p.direction.as_deref() {
        None => None,
        Some("incoming") => Some(Direction::Incoming),
        Some("outgoing") => Some(Direction::Outgoing),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "direction must be incoming or outgoing, not {other:?}"
            )))
        }
    };
    let limit = page_limit(p.limit)?;
    let records = st
        .node
        .history(&HistoryQuery {
            peer: peer.as_ref(),
            direction,
            after_seq: p.after.unwrap_or(0),
            limit,
            newest: p.newest.unwrap_or(false),
            max_body_bytes: MAX_HISTORY_BODY_BYTES,
        })
        .await?;
    Ok(Json(
        records
            .iter()
            .map(|m| Message::from_record(m, &contacts))
            .collect(),
    ))
}

/// The peer whose history `query` asks for: a contact (as [`contact_named`]), or any node id in
/// full (64 hex digits), such as a removed contact's, whose history stays.
fn history_peer(contacts: &[ContactRecord], query: &str) -> Result<NodeId, ApiError> {
    match contact_named(contacts, query) {
        Ok(c) => Ok(c.node_id),
        Err(e) => match query.parse::<NodeId>() {
            Ok(id) if e.code == "unknown_contact" => Ok(id),
            _ => Err(e.into()),
        },
    }
}

/// The recipient `query` names (see [`recipient_named`]).
async fn resolve_recipient(node: &Node, query: &str) -> Result<NodeId, ApiError> {
    let contacts = node.contacts().await?;
    let waiting = node.waiting_peers().await?;
    Ok(recipient_named(&contacts, &waiting, query)?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxParams {
    peer: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

async fn outbox(
    State(st): State<AppState>,
    params: Result<Query<OutboxParams>, QueryRejection>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let Query(p) = params?;
    let peer = match &p.peer {
        Some(q) => Some(resolve_recipient(&st.node, q).await?),
        None => None,
    };
    let limit = page_limit(p.limit)?;
    let records = st
        .node
        .waiting(peer.as_ref(), p.after.unwrap_or(0), limit)
        .await?;
    let contacts = st.node.contacts().await?;
    Ok(Json(
        records
            .iter()
            .map(|m| Message::from_record(m, &contacts))
            .collect(),
    ))
}

async fn cancel(
    State(st): State<AppState>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<CancelResponse>, ApiError> {
    let UrlPath(id) = id?;
    let id = message_id(&id)?;
    let report = st.node.cancel_message(&id).await?;
    let contacts = st.node.contacts().await?;
    Ok(Json(cancel_answer(
        report.outcome,
        report.in_flight,
        &id,
        &contacts,
    )?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelAllParams {
    to: Option<String>,
}

async fn cancel_all(
    State(st): State<AppState>,
    params: Result<Query<CancelAllParams>, QueryRejection>,
) -> Result<Json<CancelAllResponse>, ApiError> {
    let Query(p) = params?;
    let Some(to) = p.to else {
        return Err(ApiError::bad_request(
            "say whose messages to cancel: DELETE /v1/outbox?to=CONTACT (or /v1/outbox/ID for one)",
        ));
    };
    let peer = resolve_recipient(&st.node, &to).await?;
    let report = st.node.cancel_messages_to(&peer).await?;
    Ok(Json(CancelAllResponse {
        to: peer.to_hex(),
        cancelled: report.cancelled.iter().map(MessageId::to_hex).collect(),
        in_flight: report.in_flight.iter().map(MessageId::to_hex).collect(),
    }))
}

async fn send(
    State(st): State<AppState>,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<SendResponse>), ApiError> {
    let Json(req) = body?;
    if req.text.is_empty() {
        return Err(ApiError::bad_request("the message text is empty"));
    }
    let contacts = st.node.contacts().await?;
    let contact = contact_named(&contacts, &req.to)?;
    let peer = contact.node_id;
    // Subscribe before queueing, so the receipt cannot slip past.
    let mut events = st.node.subscribe();
    let id = match req.ttl_ms {
        Some(ms) => {
            st.node
                .queue_chat_with_ttl(&contact, &req.text, Duration::from_millis(ms))
                .await?
        }
        None => st.node.queue_chat(&contact, &req.text).await?,
    };
    let mut state = MessageState::Queued;
    if req.wait {
        let wait = Duration::from_millis(req.timeout_ms.unwrap_or(30_000).min(MAX_WAIT_MS));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // The node shutting down ends the wait: the message stays queued, and the answer
            // says so with its id (else the client would see the connection drop, without the
            // id, and might send it again).
            let received = tokio::select! {
                r = tokio::time::timeout_at(deadline, events.recv()) => r,
                () = st.node.shutting_down() => break,
            };
            match received {
                Ok(Ok(NodeEvent::Delivered { id: d, to })) if d == id && to == peer => {
                    state = MessageState::Delivered;
                    break;
                }
                // Cancelled or expired while we waited: the node stopped sending it.
                Ok(Ok(NodeEvent::Cancelled { id: c, .. } | NodeEvent::Expired { id: c, .. }))
                    if c == id =>
                {
                    break
                }
                Ok(Ok(_)) => {}
                // Events were missed: the store says whether it is still waiting.
                Ok(Err(RecvError::Lagged(_))) => match current_state(&st.node, &peer, &id).await? {
                    Some(MessageState::Queued | MessageState::Sent | MessageState::Held) | None => {
                    }
                    Some(_) => break,
                },
                Ok(Err(RecvError::Closed)) | Err(_) => break,
            }
        }
    }
    if state != MessageState::Delivered {
        state = current_state(&st.node, &peer, &id)
            .await?
            .unwrap_or(MessageState::Queued);
    }
    let code = if state == MessageState::Delivered {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        code,
        Json(SendResponse {
            id: id.to_hex(),
            to: peer.to_hex(),
            state: state.to_string(),
        }),
    ))
}

async fn current_state(
    node: &Node,
    peer: &NodeId,
    id: &MessageId,
) -> Result<Option<MessageState>, NodeError> {
    Ok(node.message(peer, id).await?.map(|m| m.state))
}

async fn events(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.node.subscribe();
    let stream = futures_util::stream::unfold((rx, st.node), |(mut rx, node)| async move {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                () = node.shutting_down() => return None,
            };
            let event = match received {
                Ok(NodeEvent::Message {
                    id,
                    from,
                    sent_at_ms,
                    body,
                }) => Event::Message {
                    id: id.to_hex(),
                    from: from.to_hex(),
                    from_name: node.contact(&from).await.ok().flatten().map(|c| c.name),
                    sent_at_ms,
                    body,
                },
                Ok(NodeEvent::Delivered { id, to }) => Event::Delivered {
                    id: id.to_hex(),
                    to: to.to_hex(),
                },
                Ok(NodeEvent::Expired { id, to }) => Event::Expired {
                    id: id.to_hex(),
                    to: to.to_hex(),
                },
                Ok(NodeEvent::Cancelled { id, to }) => Event::Cancelled {
                    id: id.to_hex(),
                    to: to.to_hex(),
                },
                Ok(NodeEvent::Queued { id, to }) => Event::Queued {
                    id: id.to_hex(),
                    to: to.to_hex(),
                },
                Ok(NodeEvent::Held { id, to }) => Event::Held {
                    id: id.to_hex(),
                    to: to.to_hex(),
                },
                Err(RecvError::Lagged(missed)) => Event::Lagged { missed },
                Err(RecvError::Closed) => return None,
            };
            let kind = match &event {
                Event::Message { .. } => "message",
                Event::Delivered { .. } => "delivered",
                Event::Expired { .. } => "expired",
                Event::Cancelled { .. } => "cancelled",
                Event::Queued { .. } => "queued",
                Event::Held { .. } => "held",
                Event::Lagged { .. } => "lagged",
                Event::Other => "other",
            };
            match SseEvent::default().event(kind).json_data(&event) {
                Ok(sse) => return Some((Ok(sse), (rx, node))),
                Err(e) => tracing::warn!(error = %e, "cannot encode an event"),
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
