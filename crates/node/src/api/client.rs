//! A client of the local control API (hyper over the Unix socket), used by the CLI.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::{
    AddContactRequest, AddContactResponse, CancelAllResponse, CancelResponse, Contact, DhtPeer,
    ErrorBody, Event, Lookup, Message, SendRequest, SendResponse, Status,
};

/// Largest response body read (a history page of 10 000 messages of 32 KiB would exceed it; the
/// server's limit keeps real pages far below).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;
/// Longest server-sent event accepted.
const MAX_EVENT: usize = 1024 * 1024;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "the node is not running (nothing listens on {}); start it with `dp2ptcs run`",
        .0.display()
    )]
    NotRunning(PathBuf),
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable error code (see [`ErrorBody`]).
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// The socket failed.
    #[error("local API: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not what the API promises.
    #[error("local API protocol: {0}")]
    Protocol(String),
}

fn protocol(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// Which messages [`Client::history`] asks for (see `GET /v1/messages`).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// A contact's name or node-id prefix, or any node id in full (64 hex digits), such as a
    /// removed contact's.
    pub peer: Option<String>,
    /// `incoming` or `outgoing`.
    pub direction: Option<String>,
    /// Only messages after this sequence number.
    pub after: Option<i64>,
    /// At most this many (server default 100).
    pub limit: Option<u32>,
    /// The newest `limit` instead of the oldest.
    pub newest: bool,
}

impl HistoryFilter {
    fn query(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: String| {
            parts.push(format!("{k}={}", utf8_percent_encode(&v, NON_ALPHANUMERIC)));
        };
        if let Some(p) = &self.peer {
            push("peer", p.clone());
        }
        if let Some(d) = &self.direction {
            push("direction", d.clone());
        }
        if let Some(a) = self.after {
            push("after", a.to_string());
        }
        if let Some(l) = self.limit {
            push("limit", l.to_string());
        }
        if self.newest {
            push("newest", "true".into());
        }
        parts.join("&")
    }
}

/// A client of one node's API socket. Each call opens its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the API listening on `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream = match UnixStream::connect(&self.socket).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NotRunning(self.socket.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(protocol)?;
        sender.send_request(request).await.map_err(protocol)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, T), ClientError> {
        let response = self.request(method, path, body).await?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(protocol)?
            .to_bytes();
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        let value = serde_json::from_slice(&bytes).map_err(protocol)?;
        Ok((status, value))
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        Ok(self.call(Method::GET, "/v1/status", None).await?.1)
    }

    /// `GET /v1/contacts`.
    pub async fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        Ok(self.call(Method::GET, "/v1/contacts", None).await?.1)
    }

    /// `POST /v1/contacts`.
    pub async fn add_contact(
        &self,
        request: &AddContactRequest,
    ) -> Result<AddContactResponse, ClientError> {
        let body = serde_json::to_vec(request).map_err(protocol)?;
        Ok(self.call(Method::POST, "/v1/contacts", Some(body)).await?.1)
    }

    /// `DELETE /v1/contacts/{contact}`: `contact` is a name or at least 8 hex digits of a node
    /// id.
    pub async fn remove_contact(&self, contact: &str) -> Result<Contact, ClientError> {
        let path = format!(
            "/v1/contacts/{}",
            utf8_percent_encode(contact, NON_ALPHANUMERIC)
        );
        Ok(self.call(Method::DELETE, &path, None).await?.1)
    }

    /// `GET /v1/messages`.
    pub async fn history(&self, filter: &HistoryFilter) -> Result<Vec<Message>, ClientError> {
        let path = format!("/v1/messages?{}", filter.query());
        Ok(self.call(Method::GET, &path, None).await?.1)
    }

    /// `POST /v1/messages`.
    pub async fn send(&self, request: &SendRequest) -> Result<SendResponse, ClientError> {
        let body = serde_json::to_vec(request).map_err(protocol)?;
        Ok(self.call(Method::POST, "/v1/messages", Some(body)).await?.1)
    }

    /// `GET /v1/outbox`: at most `limit` of the messages waiting for a receipt after position
    /// `after`, oldest first; those to `peer` only (a contact's name or node-id prefix), if
    /// given.
    pub async fn outbox(
        &self,
        peer: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Message>, ClientError> {
        let mut path = format!("/v1/outbox?after={after}&limit={limit}");
        if let Some(p) = peer {
            path.push_str(&format!(
                "&peer={}",
                utf8_percent_encode(p, NON_ALPHANUMERIC)
            ));
        }
        Ok(self.call(Method::GET, &path, None).await?.1)
    }

    /// `DELETE /v1/outbox/{id}`: cancels the message `id` (32 hex digits).
    pub async fn cancel(&self, id: &str) -> Result<CancelResponse, ClientError> {
        let path = format!("/v1/outbox/{}", utf8_percent_encode(id, NON_ALPHANUMERIC));
        Ok(self.call(Method::DELETE, &path, None).await?.1)
    }

    /// `DELETE /v1/outbox?to={to}`: cancels every message waiting for `to` (a contact's name, or
    /// a node-id prefix of a contact or of a recipient with messages waiting).
    pub async fn cancel_all(&self, to: &str) -> Result<CancelAllResponse, ClientError> {
        let path = format!(
            "/v1/outbox?to={}",
            utf8_percent_encode(to, NON_ALPHANUMERIC)
        );
        Ok(self.call(Method::DELETE, &path, None).await?.1)
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self) -> Result<Vec<DhtPeer>, ClientError> {
        Ok(self.call(Method::GET, "/v1/peers", None).await?.1)
    }

    /// `GET /v1/lookup/{node_id}`: `node_id` is 64 hex digits.
    pub async fn lookup(&self, node_id: &str) -> Result<Lookup, ClientError> {
        let path = format!(
            "/v1/lookup/{}",
            utf8_percent_encode(node_id, NON_ALPHANUMERIC)
        );
        Ok(self.call(Method::GET, &path, None).await?.1)
    }

    /// `GET /v1/events`: the stream of events from now on.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let response = self.request(Method::GET, "/v1/events", None).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(protocol)?
                .to_bytes();
            return Err(refusal(status, &bytes));
        }
        Ok(EventStream {
            body: response.into_body(),
            buf: Vec::new(),
            data: String::new(),
        })
    }
}

/// The error an answer with a failure status carries.
fn refusal(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.code,
            message: e.error,
        },
        Err(_) => ClientError::Protocol(format!("HTTP {status} without an error body")),
    }
}

/// Server-sent events from `GET /v1/events`.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
    data: String,
}

impl EventStream {
    /// The next event; `None` when the node closed the stream (it shut down).
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if self.data.is_empty() {
                        continue;
                    }
                    let data = std::mem::take(&mut self.data);
                    return Some(serde_json::from_str(&data).map_err(protocol));
                }
                if let Some(value) = line.strip_prefix("data:") {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
                // `event:`, `id:`, `retry:` and `:` comments (keep-alives) carry nothing more.
            }
            if self.buf.len() + self.data.len() > MAX_EVENT {
                return Some(Err(ClientError::Protocol("event too long".into())));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(bytes) = frame.into_data() {
                        self.buf.extend_from_slice(&bytes);
                    }
                }
                Some(Err(e)) => return Some(Err(protocol(e))),
                None => return None,
            }
        }
    }
}
