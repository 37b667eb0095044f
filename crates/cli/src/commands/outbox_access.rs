//! Where `outbox` and `cancel` read and change the outbox: through the running node's API, or,
//! when no node runs, in the database itself (after the passphrase), with the same answers.

use std::fs::File;

use anyhow::{anyhow, bail, Result};
use dp2ptcs_node::api::client::{Client, ClientError};
use dp2ptcs_node::api::{
    cancel_answer, message_id, recipient_named, CancelAllResponse, CancelResponse, Message,
};
use dp2ptcs_store::Store;
use dp2ptcs_types::NodeId;

use super::run::DaemonLock;
use super::{api_client, block_on, now_unix_ms};
use crate::cli::Global;
use crate::contacts::open_address_book;
use crate::datadir::{resolve, unlock};
use crate::fsutil::DirLock;

/// The database of a data directory where no node runs. No node starts while this lives (one
/// that tries waits, then says a command holds the database), so nothing sends a message
/// while it is cancelled here.
struct Offline {
    store: Store,
    _no_node_starts: File,
    /// Other commands wait (the legacy address book may be imported on opening).
    _commands_wait: DirLock,
}

impl Offline {
    fn open(global: &Global) -> Result<Self> {
        let dir = resolve(global)?;
        // Before asking for the passphrase: a node holds its lock from before its API answers
        // until after it stops answering.
        let busy = || {
            anyhow!(
                "a node is starting or stopping on {} (its API does not answer); try again in a \
                 moment",
                dir.display()
            )
        };
        if DaemonLock::is_held(&dir) {
            return Err(busy());
        }
        let unlocked = unlock(global)?;
        let commands_wait = DirLock::acquire(&unlocked.dir)?;
        let no_node_starts = DaemonLock::hold_shared(&unlocked.dir).ok_or_else(busy)?;
        let store = open_address_book(&unlocked.dir, unlocked.keystore.database_key())?;
        Ok(Self {
            store,
            _no_node_starts: no_node_starts,
            _commands_wait: commands_wait,
        })
    }

    fn recipient(&self, query: &str) -> Result<Result<NodeId, String>> {
        let contacts = self.store.contacts()?;
        let waiting: Vec<NodeId> = self
            .store
            .outbox_peers()?
            .into_iter()
            .map(|p| p.peer)
            .collect();
        Ok(recipient_named(&contacts, &waiting, query).map_err(|r| r.message))
    }
}

/// The running node, or the database when none runs (decided at the first request).
pub(super) struct OutboxAccess<'a> {
    global: &'a Global,
    client: Client,
    offline: Option<Offline>,
}

/// A request's outcome: `Err` for a failure that ends the command (no database, no node to
/// ask), `Ok(Err(why))` for one refused request (an unknown id, a message no longer waiting).
pub(super) type Answer<T> = Result<Result<T, String>>;

impl<'a> OutboxAccess<'a> {
    pub(super) fn new(global: &'a Global) -> Result<Self> {
        Ok(Self {
            global,
            client: api_client(global)?,
            offline: None,
        })
    }

    /// `Ok(Some(answer))` from the node; `Ok(None)` if no node runs (the database is open now).
    fn ask<T>(
        &mut self,
        request: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<Option<Result<T, String>>> {
        if self.offline.is_some() {
            return Ok(None);
        }
        match block_on(request)? {
            Ok(t) => Ok(Some(Ok(t))),
            Err(ClientError::Api { message, .. }) => Ok(Some(Err(message))),
            Err(ClientError::NotRunning(_)) => {
                self.offline = Some(Offline::open(self.global)?);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the answers come from the database (no node runs).
    pub(super) fn is_offline(&self) -> bool {
        self.offline.is_some()
    }

    /// Up to `limit` waiting messages after position `after`, to `peer` only if given.
    pub(super) fn outbox(
        &mut self,
        peer: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Answer<Vec<Message>> {
        let client = self.client.clone();
        if let Some(answer) = self.ask(client.outbox(peer, after, limit))? {
            return Ok(answer);
        }
        let Some(db) = &self.offline else {
            bail!("no database open");
        };
        let peer = match peer.map(|q| db.recipient(q)).transpose()? {
            Some(Err(why)) => return Ok(Err(why)),
            Some(Ok(p)) => Some(p),
            None => None,
        };
        let contacts = db.store.contacts()?;
        let page = db.store.waiting(peer.as_ref(), after, limit)?;
        Ok(Ok(page
            .iter()
            .map(|m| Message::from_record(m, &contacts))
            .collect()))
    }

    /// Cancels the message `id`.
    pub(super) fn cancel(&mut self, text: &str) -> Answer<CancelResponse> {
        // Checked here first: no passphrase is asked for a typo.
        let id = match message_id(text) {
            Ok(id) => id,
            Err(r) => return Ok(Err(r.message)),
        };
        let client = self.client.clone();
        if let Some(answer) = self.ask(client.cancel(&id.to_hex()))? {
            return Ok(answer);
        }
        let Some(db) = &self.offline else {
            bail!("no database open");
        };
        let outcome = db.store.cancel_outgoing(&id, now_unix_ms())?;
        let contacts = db.store.contacts()?;
        Ok(cancel_answer(outcome, false, &id, &contacts).map_err(|r| r.message))
    }

    /// Cancels every message waiting for `to`.
    pub(super) fn cancel_all(&mut self, to: &str) -> Answer<CancelAllResponse> {
        let client = self.client.clone();
        if let Some(answer) = self.ask(client.cancel_all(to))? {
            return Ok(answer);
        }
        let Some(db) = &self.offline else {
            bail!("no database open");
        };
        let peer = match db.recipient(to)? {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        let cancelled = db.store.cancel_outgoing_to(&peer, now_unix_ms())?;
        Ok(Ok(CancelAllResponse {
            to: peer.to_hex(),
            cancelled: cancelled.iter().map(|id| id.to_hex()).collect(),
            in_flight: Vec::new(),
        }))
    }
}
