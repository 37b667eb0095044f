//! Store-and-forward on the node's side (`PROTOCOL.md` section 11.8): sealing messages for a
//! contact's mailbox, and taking the items of our own.
//!
//! - **Sending.** When the outbox cannot reach a contact directly, it seals each undelivered
//!   message with the contact's ratchet session (starting one from the contact's DHT prekey
//!   bundle if there is none: asynchronous X3DH), signs it as a mailbox item and deposits it at
//!   the holders of the contact's mailbox. A message at least one holder accepted is `held`. The
//!   outbox keeps trying the contact directly too; the receiver's deduplication by id makes any
//!   second copy invisible.
//! - **Payload.** An item's payload is one byte of type, then either a `TacticalMessage` (a
//!   session exists) or a `Hello` whose body is the X3DH `HandshakeInit` and whose first message
//!   is the sealed message itself. Every message sent before the contact's first answer carries
//!   the handshake, so whichever arrives first starts the session.
//! - **Receiving.** The node fetches its mailbox after joining and every `mailbox_poll`. Items
//!   from nodes that are not contacts are kept here, as they came and within bounds, until their
//!   sender is added as a contact (then they open at the next check, with its fetched items) or
//!   they expire; the signed prekeys their handshakes name are kept meanwhile. Each sender's
//!   items are opened in sending order (the handshake first, then by ratchet chain and message
//!   number), recorded exactly as a direct message is (deduplicated by id), and acknowledged
//!   with an end-to-end receipt. Items taken, kept here, or useless are deleted at the holders
//!   with a request we sign; an item that cannot be opened yet (its handshake has not arrived)
//!   is left for a later fetch.
//! - **Receipts owed.** Once its item is deleted, the sender cannot deposit a message again (the
//!   holders refuse it: the recipient took it), so a receipt lost there would leave the message
//!   `held` at the sender, then `expired`. Each receipt is owed, in the transaction that records
//!   its message, until one reaches the sender: acknowledged by it directly, or taken by another
//!   node for its mailbox. Owed receipts go together (up to `MAX_RECEIPT_IDS` in one) right after
//!   the fetch, then again at the mailbox polls, waiting twice as long after each failure (up to
//!   `mailbox_redeposit`), until the message's time to live runs out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dp2ptcs_crypto::x3dh::InitialMessage;
use dp2ptcs_crypto::{PublicIdentity, Session};
use dp2ptcs_dht::{MailboxItem, MAX_MAILBOX_TTL_MS};
use dp2ptcs_store::{ContactRecord, Direction, KeptItem, MessageState, Store, StrangerLimits};
use dp2ptcs_types::{MessageId, NodeId};
use dp2ptcs_wire::{
    Envelope, HandshakeInit, Hello, HelloBody, MessageKind, Receipt, MAX_RECEIPT_IDS,
};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::discovery::Deposit;
use crate::frames::{write_frame, FrameReader};
use crate::node::{inbound, overdue, Inbound, Inner, NodeEvent};
use crate::sessions::{blocking, lock, now_ms, Reply};
use crate::NodeError;

/// Payload type: a `TacticalMessage` under an existing session.
const PAYLOAD_ENVELOPE: u8 = 0x01;
/// Payload type: a `Hello` carrying the X3DH `HandshakeInit` and the first message.
const PAYLOAD_HANDSHAKE: u8 = 0x02;

/// A decoded item payload.
enum Payload {
    Envelope(Envelope),
    Handshake(HandshakeInit),
}

impl Payload {
    fn decode(bytes: &[u8], recipient: &NodeId) -> Result<Self, NodeError> {
        match bytes.split_first() {
            Some((&PAYLOAD_ENVELOPE, rest)) => Ok(Self::Envelope(Envelope::decode(rest)?)),
            Some((&PAYLOAD_HANDSHAKE, rest)) => match Hello::decode(rest)? {
                Hello {
                    responder_id,
                    body: HelloBody::Handshake(init),
                    identity_key,
                } if responder_id == *recipient && identity_key == init.identity_key => {
                    Ok(Self::Handshake(init))
                }
                _ => Err(NodeError::Authentication(
                    "mailbox handshake for another node",
                )),
            },
            _ => Err(NodeError::Authentication("unknown mailbox payload type")),
        }
    }

    /// The ratchet key of the sender's chain the message is in.
    fn ratchet_key(&self) -> [u8; 32] {
        match self {
            Self::Handshake(init) => init.first_message.header.dh_public_key,
            Self::Envelope(e) => e.header.dh_public_key,
        }
    }

    /// Opening order within one sender's items: the handshake, then chain by chain, message by
    /// message. `chain_rank` is the chain's [`Session::chain_rank`] under the session with the
    /// sender (`previous_chain_length` only breaks ties: it does not grow from chain to chain).
    ///
    /// [`Session::chain_rank`]: dp2ptcs_crypto::Session::chain_rank
    fn order(&self, chain_rank: usize) -> (u8, usize, u32, u32) {
        match self {
            Self::Handshake(init) => (0, 0, 0, init.first_message.header.message_number),
            Self::Envelope(e) => (
                1,
                chain_rank,
                e.header.previous_chain_length,
                e.header.message_number,
            ),
        }
    }
}

/// Whether a mailbox item may carry a message of `kind`.
fn in_mailbox(kind: MessageKind) -> bool {
    matches!(kind, MessageKind::Chat | MessageKind::Receipt)
}

/// Whether `e`, a failure of this node's own while taking a mailbox item, may pass (a busy or
/// full disk, a shutdown): the item is then kept for the next fetch. A lasting one (a damaged
/// record, a bug) would keep the sender's items at the front of the mailbox until they expire,
/// in the way of everyone else's, so the item is given up as before.
fn may_pass(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::ShuttingDown
            | NodeError::Io(_)
            | NodeError::Timeout(_)
            | NodeError::Store(dp2ptcs_store::StoreError::Sqlite(_))
    )
}

/// [`inbound`] for a message taken from the mailbox, in the same transaction: the receipt it
/// asks for is owed to `peer` until `until_ms` (the item's expiry), not sealed now; it goes
/// with the others owed ([`Inner::pay_receipts`]). (A receipt is the only reply `inbound`
/// asks for.)
fn inbound_owing(
    tx: &Store,
    peer: NodeId,
    kind: MessageKind,
    plaintext: &[u8],
    until_ms: u64,
) -> Result<(Result<Inbound, NodeError>, Option<Reply>), NodeError> {
    let (result, reply) = inbound(tx, peer, kind, plaintext)?;
    if let (Ok(Inbound::Chats(chats)), Some((MessageKind::Receipt, _))) = (&result, &reply) {
        let ids: Vec<MessageId> = chats.iter().map(|(chat, _)| chat.id).collect();
        tx.owe_receipts(&peer, &ids, until_ms)?;
    }
    Ok((result, None))
}

/// What a mailbox check did with its items.
#[derive(Debug, Default)]
struct Done {
    /// Fetched items to delete at their holders (taken, kept here, or useless).
    delete: Vec<MessageId>,
    /// Items kept here (from senders not contacts then) that are taken or useless now.
    forget: BTreeMap<NodeId, Vec<MessageId>>,
}

/// What is kept of the mailbox items from nodes that are not contacts (PROTOCOL.md 11.8).
pub(crate) const STRANGER_LIMITS: StrangerLimits = StrangerLimits {
    per_sender_items: 256,
    total_items: 4096,
    total_bytes: 16 << 20,
};

/// When the receipts owed to a peer are tried next, and whether a try is running.
#[derive(Debug)]
pub(crate) struct OwedTries {
    running: bool,
    /// More became owed while a try was running: the next one goes at once.
    again: bool,
    next_at: Instant,
    wait: Duration,
    /// The receipt the last try sealed for the mailbox and no node took.
    sealed: Option<SealedReceipt>,
}

/// A receipt sealed for the contact's mailbox. It is deposited again as it is while the same
/// receipts are owed and its session is still the current one: a copy that reached no one
/// skipped a message key at the contact, and tries may go on for the messages' whole time to
/// live; under its first item id, a copy a holder took but answered too late for is not held
/// twice.
#[derive(Debug)]
struct SealedReceipt {
    ids: Vec<MessageId>,
    session: u64,
    item_id: MessageId,
    payload: Vec<u8>,
}

/// Marks a peer's try at paying its receipts as running; when dropped (the try ended, or was
/// cancelled), schedules the next one: none if all were paid, else `wait` after the try began
/// (at once if more became owed meanwhile), with the wait doubled for the one after, up to
/// `mailbox_redeposit`.
struct Paying<'a> {
    inner: &'a Inner,
    peer: NodeId,
    began: Instant,
    paid: bool,
}

impl Drop for Paying<'_> {
    fn drop(&mut self) {
        let mut due = lock(&self.inner.receipts_due);
        if self.paid {
            due.remove(&self.peer);
        } else if let Some(d) = due.get_mut(&self.peer) {
            d.running = false;
            d.next_at = if std::mem::take(&mut d.again) {
                Instant::now()
            } else {
                self.began + d.wait
            };
            d.wait = (d.wait * 2).min(self.inner.config.mailbox_redeposit.max(d.wait));
        }
    }
}

/// Domain separation of [`item_id`].
const ITEM_ID_CONTEXT: &[u8] = b"dp2ptcs/v1/mailbox-item-id";

/// The `message_id` of the mailbox item that carries chat `chat`: the first 16 bytes of
/// SHA-256(context || chat id). The same for every deposit of the message (holders keep one
/// copy), and unlinkable to the chat id, whose first bytes are the time it was written: holders
/// learn nothing from it. The recipient deletes by the item's id and deduplicates by the chat id
/// inside.
pub(crate) fn item_id(chat: &MessageId) -> MessageId {
    let digest = Sha256::new()
        .chain_update(ITEM_ID_CONTEXT)
        .chain_update(chat.as_bytes())
        .finalize();
    let mut id = [0u8; MessageId::LEN];
    id.copy_from_slice(&digest[..MessageId::LEN]);
    MessageId::from_bytes(id)
}

/// What became of one item.
enum Taken {
    /// Used (or useless): delete it.
    Done,
    /// It cannot be opened yet (no session): keep it for a later fetch.
    Later,
}

impl Inner {
    /// Seals `plaintext` as a `kind` message to `contact` for its mailbox: the item payload.
    /// Starts a session from the contact's DHT prekey bundle if there is none.
    pub(crate) async fn seal_for_mailbox(
        self: &Arc<Self>,
        contact: &ContactRecord,
        kind: MessageKind,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, NodeError> {
        let peer = contact.node_id;
        let handle = match self.sessions.current(peer).await? {
            Some(h) => h,
            None => {
                let bundle = match self.learned_bundle(contact) {
                    Some(b) => b,
                    None => {
                        let b = self.fetch_bundle(peer).await?.ok_or(NodeError::Connect(
                            "no session with the contact and no prekey bundle of it in the DHT"
                                .into(),
                        ))?;
                        self.learn_bundle(b)?;
                        self.learned_bundle(contact)
                            .ok_or(NodeError::Authentication(
                                "the DHT bundle is not the contact's",
                            ))?
                    }
                };
                let session = Session::initiate(&mut OsRng, &self.identity, &bundle)
                    .map_err(|_| NodeError::Authentication("X3DH with the DHT bundle failed"))?;
                self.sessions.install(peer, session, true).await?
            }
        };
        self.seal_with(peer, &handle, kind, plaintext).await
    }

    /// Seals `plaintext` as a `kind` message to `peer` for its mailbox with session `handle`:
    /// the item payload, with the X3DH handshake while the session still sends one.
    async fn seal_with(
        self: &Arc<Self>,
        peer: NodeId,
        handle: &crate::sessions::Handle,
        kind: MessageKind,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, NodeError> {
        let env = self
            .sessions
            .encrypt_with(peer, handle, kind, plaintext, None)
            .await?;
        let mut out = Vec::new();
        match handle.pending_initial() {
            Some(initial) => {
                let init = HandshakeInit {
                    identity_key: initial.identity().to_bytes(),
                    ephemeral_key: *initial.ephemeral_key(),
                    signed_prekey_id: initial.signed_prekey_id(),
                    one_time_prekey_id: initial.one_time_prekey_id(),
                    first_message: env,
                };
                out.push(PAYLOAD_HANDSHAKE);
                out.extend(
                    Hello {
                        identity_key: self.identity.public().to_bytes(),
                        responder_id: peer,
                        body: HelloBody::Handshake(init),
                    }
                    .encode(),
                );
            }
            None => {
                out.push(PAYLOAD_ENVELOPE);
                out.extend(env.encode());
            }
        }
        Ok(out)
    }

    /// Seals `payload` into a signed mailbox item for `to` and deposits it.
    async fn deposit_payload(
        self: &Arc<Self>,
        to: NodeId,
        id: MessageId,
        expires_at_ms: u64,
        payload: Vec<u8>,
    ) -> Result<Deposit, NodeError> {
        let expires_at_ms = expires_at_ms.min(now_ms().saturating_add(MAX_MAILBOX_TTL_MS));
        let item = MailboxItem::sign(&self.identity, to, id, expires_at_ms, payload)
            .map_err(|e| NodeError::Internal(format!("mailbox item: {e}")))?;
        self.dht_deposit(item).await
    }

    /// Deposits the undelivered messages `msgs` (oldest first) in `contact`'s mailbox; each one
    /// a holder accepted becomes `held`; returns how many became so. Stops at the first failure. A message `held` already
    /// is deposited again only if that was longer than [`NodeConfig::mailbox_redeposit`] ago
    /// (and its refusal stops nothing: a holder may refuse it because the contact took it).
    ///
    /// [`NodeConfig::mailbox_redeposit`]: crate::NodeConfig::mailbox_redeposit
    pub(crate) async fn deposit_outgoing(
        self: &Arc<Self>,
        contact: &ContactRecord,
        msgs: &[dp2ptcs_store::MessageRecord],
    ) -> Result<usize, NodeError> {
        let peer = contact.node_id;
        let held_before_ms = self.held_before_ms();
        // Not while this node knows no DHT peer (its own network is down): the redeposit would
        // reach no holder and wait another interval.
        let may_redeposit = self.dht_status().peers > 0;
        // Whether a message in `state` (read now) is to be deposited: `again` if it is held.
        let wanted = |state: Option<(Direction, MessageState)>, again: bool| match state {
            Some((_, MessageState::Queued | MessageState::Sent)) => true,
            Some((_, MessageState::Held)) => again,
            _ => false,
        };
        let mut held = 0;
        for m in msgs {
            if self.is_shutting_down() {
                return Err(NodeError::ShuttingDown);
            }
            // Holders refuse an item past its time, which would stop the deposits after it.
            if overdue(m, now_ms()) {
                continue;
            }
            // Held already: deposited again once its last deposit is old enough.
            let again =
                may_redeposit && m.state == MessageState::Held && m.state_at_ms <= held_before_ms;
            let Some(_claim) = self.outbox.claim(peer, m.id) else {
                continue;
            };
            // Its state now (a receipt may have come in since it was read), without its body.
            let (store, id) = (self.store.clone(), m.id);
            let state = blocking(move || Ok(lock(&store).message_state(&peer, &id)?)).await?;
            if !wanted(state, again) {
                continue;
            }
            // Sealed once: depositing again (another pass, a refusal) reuses it, so a contact
            // away for long never sees more skipped message keys than messages.
            let store = self.store.clone();
            let payload = match blocking(move || Ok(lock(&store).sealed(&peer, &id)?)).await? {
                Some(p) => p,
                None => {
                    let chat = dp2ptcs_wire::Chat {
                        id: m.id,
                        sent_at_ms: m.sent_at_ms,
                        body: m.body.clone(),
                    };
                    let p = self
                        .seal_for_mailbox(
                            contact,
                            MessageKind::Chat,
                            Zeroizing::new(chat.encode()?),
                        )
                        .await?;
                    let (store, kept) = (self.store.clone(), p.clone());
                    blocking(move || Ok(lock(&store).set_sealed(&peer, &id, &kept)?)).await?;
                    p
                }
            };
            // Sealing may have taken a while (a bundle fetched from the DHT): a receipt may
            // have come in meanwhile, or the message been cancelled.
            let store = self.store.clone();
            let state = blocking(move || Ok(lock(&store).message_state(&peer, &id)?)).await?;
            if !wanted(state, again) {
                continue;
            }
            let expires = m.expires_at_ms.unwrap_or(u64::MAX);
            let deposit = self
                .deposit_payload(peer, item_id(&m.id), expires, payload)
                .await?;
            let accepted = deposit.others;
            // Refused because the contact deleted it from its mailbox: it fetched the message (its
            // receipt is late, or was lost, or this node did not record its first deposit; or it
            // keeps the item unopened until it adds this node, or dropped it unread). Depositing it again is of no use: it counts as held, and
            // stops nothing. (A holder's word, as an acceptance is.)
            let taken = accepted == 0 && deposit.taken > 0;
            if accepted == 0 && !again && !taken {
                // It ran out of time while being deposited: refused for that, it stops nothing.
                if overdue(m, now_ms()) {
                    continue;
                }
                return Err(NodeError::Connect(
                    "no node other than this one took the message for the contact's mailbox".into(),
                ));
            }
            let (store, events) = (self.store.clone(), self.events.clone());
            blocking(move || {
                let store = lock(&store);
                // A receipt may have come in meanwhile, or its time to live run out. A message
                // deposited again is held from now (if no holder took it, it is tried again as
                // late).
                let state = store.message_state(&peer, &id)?;
                if wanted(state, again) {
                    store.set_message_state(&peer, &id, MessageState::Held, now_ms())?;
                    // Reported while the store is held: before a receipt could report it
                    // delivered.
                    if !matches!(state, Some((_, MessageState::Held))) {
                        let _ = events.send(NodeEvent::Held { id, to: peer });
                    }
                }
                Ok(())
            })
            .await?;
            if taken {
                tracing::debug!(id = %m.id, to = %peer.short(8), "the contact took the message from its mailbox already");
            } else if accepted == 0 {
                tracing::debug!(id = %m.id, to = %peer.short(8), "no holder took a held message again");
                continue;
            }
            tracing::debug!(id = %m.id, to = %peer.short(8), accepted, again, "message held in the mailbox");
            held += usize::from(!again);
        }
        Ok(held)
    }

    /// Checks our mailbox once the node has joined the DHT, then every `mailbox_poll`, until
    /// shutdown.
    pub(crate) async fn mailbox_loop(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        loop {
            let wait = if self.dht_status().peers == 0 {
                std::time::Duration::from_millis(500)
            } else {
                match self.check_mailbox().await {
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "checking the mailbox failed"),
                }
                if let Err(e) = self.pay_receipts_due().await {
                    tracing::debug!(error = %e, "reading the receipts owed failed");
                }
                self.config.mailbox_poll
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    /// Fetches our mailbox, takes what it holds (with what was kept from senders that have
    /// become contacts since), and deletes what was taken.
    pub(crate) async fn check_mailbox(self: &Arc<Self>) -> Result<usize, NodeError> {
        let _one = self.mailbox_lock.lock().await;
        let fetched = self.dht_fetch_mailbox().await;
        let store = self.store.clone();
        let kept_senders = blocking(move || Ok(lock(&store).kept_senders(now_ms())?)).await?;
        // What was kept here opens without the network.
        let items = match fetched {
            Ok(items) => items,
            Err(e) if kept_senders.is_empty() || matches!(e, NodeError::ShuttingDown) => {
                return Err(e)
            }
            Err(e) => {
                tracing::debug!(error = %e, "fetching the mailbox failed; opening what was kept");
                Vec::new()
            }
        };
        if items.is_empty() && kept_senders.is_empty() {
            return Ok(0);
        }
        let n = items.len();
        let done = self.take_items(items, kept_senders).await;
        // What was kept and is taken now is forgotten; the prekeys what is still kept needs
        // are pinned again (some kept now, others expired).
        let (store, forget) = (self.store.clone(), done.forget);
        let pinned = blocking(move || {
            let store = lock(&store);
            for (sender, ids) in &forget {
                if let Err(e) = store.forget_kept(sender, ids) {
                    tracing::warn!(error = %e, "forgetting mailbox items kept and taken failed");
                }
            }
            Ok(store.kept_signed_prekeys(now_ms())?)
        })
        .await;
        match pinned {
            Ok(pinned) => self.prekeys.pin(pinned),
            Err(e) => tracing::warn!(error = %e, "reading the prekeys kept items need failed"),
        }
        for chunk in done.delete.chunks(dp2ptcs_dht::MAX_MAILBOX_DELETE_IDS) {
            if let Err(e) = self.dht_delete_from_mailbox(chunk.to_vec()).await {
                tracing::debug!(error = %e, "deleting taken mailbox items failed");
            }
        }
        tracing::debug!(items = n, taken = done.delete.len(), "mailbox checked");
        Ok(n)
    }

    /// Opens, records and acknowledges the fetched `items`, and the items kept from
    /// `kept_senders` (that have become contacts); keeps those of senders that are not contacts.
    async fn take_items(
        self: &Arc<Self>,
        items: Vec<MailboxItem>,
        kept_senders: Vec<NodeId>,
    ) -> Done {
        let mut done = Done::default();
        // Each sender's items, each with whether it was kept here (else fetched).
        let mut by_sender: BTreeMap<NodeId, Vec<(MailboxItem, Payload, bool)>> = BTreeMap::new();
        for item in items {
            if *item.recipient() != self.node_id {
                continue;
            }
            let sender = item.sender_id();
            match Payload::decode(item.payload(), &self.node_id) {
                Ok(p) => by_sender.entry(sender).or_default().push((item, p, false)),
                Err(e) => {
                    tracing::debug!(error = %e, from = %sender.short(8), "dropping a malformed mailbox item");
                    done.delete.push(*item.message_id());
                }
            }
        }
        for sender in kept_senders {
            by_sender.entry(sender).or_default();
        }
        for (sender, mut items) in by_sender {
            // The contact, and what was kept of its items, as of one moment.
            let store = self.store.clone();
            let read = blocking(move || {
                lock(&store).read(|s| {
                    Ok::<_, NodeError>((s.contact(&sender)?, s.kept_from(&sender, now_ms())?))
                })
            })
            .await;
            let (contact, kept) = match read {
                Ok(read) => read,
                // Our failure, not the items': they stay for the next fetch.
                Err(e) if may_pass(&e) => {
                    tracing::warn!(error = %e, "mailbox items kept: reading the contact failed");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the contact failed: its mailbox items are handled as a non-contact's");
                    (None, Vec::new())
                }
            };
            let Some(contact) = contact else {
                if !items.is_empty() {
                    self.keep_from_stranger(sender, items, &mut done).await;
                }
                continue;
            };
            // A copy fetched of an item kept already is taken once, as kept.
            let mut kept_ids: Vec<MessageId> = Vec::new();
            for (id, bytes) in kept {
                let item = MailboxItem::from_bytes(&bytes).ok().filter(|i| {
                    i.sender_id() == sender
                        && *i.recipient() == self.node_id
                        && *i.message_id() == id
                });
                let payload = item
                    .as_ref()
                    .and_then(|i| Payload::decode(i.payload(), &self.node_id).ok());
                match (item, payload) {
                    (Some(item), Some(p)) => {
                        kept_ids.push(id);
                        items.push((item, p, true));
                    }
                    // Stored whole and checked when kept: damaged since.
                    _ => {
                        tracing::info!(from = %sender.short(8), "a message kept until its sender was added is damaged; dropped");
                        done.forget.entry(sender).or_default().push(id);
                    }
                }
            }
            items.retain(|(item, _, kept)| {
                *kept || !kept_ids.contains(item.message_id()) || {
                    done.delete.push(*item.message_id());
                    false
                }
            });
            let mark = |done: &mut Done, item: &MailboxItem, kept: bool| {
                if kept {
                    done.forget
                        .entry(sender)
                        .or_default()
                        .push(*item.message_id());
                } else {
                    done.delete.push(*item.message_id());
                }
            };
            if items
                .first()
                .is_some_and(|(i, _, _)| i.sender().to_bytes() != contact.public_key)
            {
                for (item, _, kept) in &items {
                    mark(&mut done, item, *kept);
                }
                continue;
            }
            let keys: Vec<[u8; 32]> = items.iter().map(|(_, p, _)| p.ratchet_key()).collect();
            let ranks = match self.sessions.chain_ranks(sender, &keys).await {
                Ok(ranks) => ranks,
                Err(e) => {
                    tracing::debug!(error = %e, from = %sender.short(8), "mailbox items opened in header order");
                    vec![0; keys.len()]
                }
            };
            let mut items: Vec<_> = items.into_iter().zip(ranks).collect();
            items.sort_by_key(|((_, p, _), rank)| p.order(*rank));
            let mut taken = false;
            for ((item, payload, kept), _) in items {
                // As the sender signed it, within what any holder keeps an item.
                let until_ms = item
                    .expires_at_ms()
                    .min(now_ms().saturating_add(MAX_MAILBOX_TTL_MS));
                match self
                    .take_one(&contact, item.sender(), payload, until_ms)
                    .await
                {
                    Ok(Taken::Done) => {
                        mark(&mut done, &item, kept);
                        taken = true;
                    }
                    Ok(Taken::Later) => {}
                    // Ours and passing (the store, a shutdown): nothing of it was recorded, so it
                    // stays at the holders (or here) for the next check, and the sender's later
                    // items with it, to keep the order. A failed step leaves the session as it
                    // was, so the next check opens it again; the first message of a session
                    // opened by X3DH too, since that session is saved before the message
                    // decrypts.
                    Err(e) if !e.is_peer_fault() && may_pass(&e) => {
                        tracing::warn!(error = %e, from = %sender.short(8), "a mailbox item kept for the next fetch");
                        break;
                    }
                    // The item is bad (forged, damaged, not for a session we can have), or
                    // our failure will not pass.
                    Err(e) => {
                        if kept {
                            tracing::info!(error = %e, from = %sender.short(8), "a message kept until its sender was added does not open; dropped");
                        } else {
                            tracing::debug!(error = %e, from = %sender.short(8), "a mailbox item was refused");
                        }
                        mark(&mut done, &item, kept);
                    }
                }
            }
            if taken {
                let this = self.clone();
                self.tasks
                    .spawn(async move { this.pay_receipts(&contact).await });
            }
        }
        done
    }

    /// Keeps the fetched `items` of `sender`, which is not a contact, until it is one (in
    /// sending order, within [`STRANGER_LIMITS`]; beyond them, they are dropped). Those kept or
    /// dropped are deleted at the holders; if storing them fails for a passing reason, they stay
    /// there for the next fetch.
    async fn keep_from_stranger(
        self: &Arc<Self>,
        sender: NodeId,
        mut items: Vec<(MailboxItem, Payload, bool)>,
        done: &mut Done,
    ) {
        items.sort_by_key(|(_, p, _)| p.order(0));
        let now = now_ms();
        let kept: Vec<(MessageId, u64, Option<u32>, Vec<u8>)> = items
            .iter()
            .map(|(i, p, _)| {
                let until = i
                    .expires_at_ms()
                    .min(now.saturating_add(MAX_MAILBOX_TTL_MS));
                // Only a prekey the handshake could use now: a sender does not get to keep
                // an older one for longer by naming it.
                let prekey = match p {
                    Payload::Handshake(init) => Some(init.signed_prekey_id)
                        .filter(|id| self.prekeys.accepts_signed_prekey(*id)),
                    Payload::Envelope(_) => None,
                };
                (*i.message_id(), until, prekey, i.to_bytes())
            })
            .collect();
        let store = self.store.clone();
        let outcome = blocking(move || {
            let store = lock(&store);
            let list: Vec<KeptItem<'_>> = kept
                .iter()
                .map(|(id, until, prekey, bytes)| KeptItem {
                    id,
                    expires_at_ms: *until,
                    signed_prekey_id: *prekey,
                    item: bytes,
                })
                .collect();
            Ok(store.keep_from_stranger(&sender, &list, now, &STRANGER_LIMITS)?)
        })
        .await;
        match outcome {
            Ok(n) => {
                tracing::info!(from = %sender.short(8), kept = n, dropped = items.len() - n, "messages from a node that is not a contact: kept until it is added (beyond the bounds for such nodes, dropped)");
            }
            // Our failure: they stay at the holders for the next fetch.
            Err(e) if may_pass(&e) => {
                tracing::warn!(error = %e, "mailbox items kept at their holders: storing them failed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "mailbox items of a node that is not a contact dropped");
            }
        }
        done.delete
            .extend(items.iter().map(|(i, _, _)| *i.message_id()));
    }

    /// Opens one item from `contact`, which expires at `until_ms`; returns whether it is done.
    /// The receipt for what it carries is owed ([`inbound_owing`]).
    async fn take_one(
        self: &Arc<Self>,
        contact: &ContactRecord,
        sender: &PublicIdentity,
        payload: Payload,
        until_ms: u64,
    ) -> Result<Taken, NodeError> {
        let peer = contact.node_id;
        let env = match payload {
            Payload::Envelope(env) => env,
            Payload::Handshake(init) => {
                // Checked before the X3DH, which would use up a prekey for a message `open`
                // refuses.
                if init.identity_key != contact.public_key
                    || init.first_message.sender != peer
                    || !in_mailbox(init.first_message.kind)
                {
                    return Err(NodeError::Authentication("inconsistent mailbox handshake"));
                }
                // A later message of a session already started: open it under the session.
                match self.open(peer, &init.first_message, until_ms).await {
                    Ok(out) => return Ok(out),
                    Err(NodeError::Authentication(_)) => {}
                    Err(e) => return Err(e),
                }
                let initial = InitialMessage::new(
                    *sender,
                    init.ephemeral_key,
                    init.signed_prekey_id,
                    init.one_time_prekey_id,
                );
                let kind = init.first_message.kind;
                // The X3DH (which uses up a one-time prekey), the record and the event run to
                // their end together, also if the fetch is cancelled meanwhile: a session lost
                // after its prekey was used would not open the item again, and a chat recorded
                // without its event would reach the application only through the history (the
                // next fetch's copy is a duplicate, not announced).
                let this = self.clone();
                let first = init.first_message;
                return self
                    .to_the_end(async move {
                        let (session, start, plaintext) = this
                            .respond_x3dh_with_start(initial, &first)
                            .await?
                            .map_err(|_| NodeError::Authentication("mailbox X3DH failed"))?;
                        // The first message is recorded in the transaction that saves the
                        // session.
                        let recorded = this
                            .sessions
                            .install_with(peer, session, false, move |tx| {
                                inbound_owing(tx, peer, kind, &plaintext, until_ms)
                            })
                            .await;
                        let (result, _) = match recorded {
                            Ok((_, done)) => done,
                            Err(e) => {
                                // Neither was saved, and the initial message is used: the
                                // session is saved as it was before the first message, which
                                // then opens again at the next fetch like any later one. Until
                                // then the session cannot send (a responder sends only once it
                                // has received); any later message of the contact's opens it
                                // too.
                                this.sessions.install(peer, start, false).await?;
                                return Err(e);
                            }
                        };
                        this.announce(peer, result?);
                        Ok(Taken::Done)
                    })
                    .await;
            }
        };
        match self.open(peer, &env, until_ms).await {
            Ok(out) => Ok(out),
            // No session yet: its handshake has not arrived (or was lost); keep it.
            Err(NodeError::Authentication(_)) if self.sessions.current(peer).await?.is_none() => {
                Ok(Taken::Later)
            }
            Err(e) => Err(e),
        }
    }

    /// Decrypts `env` from `peer` under an existing session, records it (owing its receipt
    /// until `until_ms`) and announces it, as a task that runs to its end (see
    /// [`Inner::open_and_announce`]).
    async fn open(
        self: &Arc<Self>,
        peer: NodeId,
        env: &Envelope,
        until_ms: u64,
    ) -> Result<Taken, NodeError> {
        if env.sender != peer || !in_mailbox(env.kind) {
            return Err(NodeError::Authentication("unexpected mailbox message"));
        }
        let (this, env) = (self.clone(), env.clone());
        self.to_the_end(async move {
            let kind = env.kind;
            let (_, result, _) = this
                .sessions
                .decrypt_with(peer, &env, move |tx, plaintext| {
                    inbound_owing(tx, peer, kind, &plaintext, until_ms)
                })
                .await?;
            this.announce(peer, result?);
            Ok(Taken::Done)
        })
        .await
    }

    /// Pays the receipts owed to every contact whose next try is due (and that no try is paying
    /// now).
    async fn pay_receipts_due(self: &Arc<Self>) -> Result<(), NodeError> {
        let store = self.store.clone();
        let owed = blocking(move || {
            let store = lock(&store);
            let mut owed = Vec::new();
            for peer in store.peers_owed_receipts(now_ms())? {
                owed.extend(store.contact(&peer)?);
            }
            Ok(owed)
        })
        .await?;
        let now = Instant::now();
        let due: Vec<ContactRecord> = {
            let mut tries = lock(&self.receipts_due);
            // Peers owed nothing any more (their receipts ran out of time, or they are no
            // longer contacts) are forgotten.
            tries.retain(|peer, t| t.running || owed.iter().any(|c| c.node_id == *peer));
            owed.into_iter()
                .filter(|c| {
                    tries
                        .get(&c.node_id)
                        .is_none_or(|t| !t.running && t.next_at <= now)
                })
                .collect()
        };
        for contact in due {
            let this = self.clone();
            self.tasks
                .spawn(async move { this.pay_receipts(&contact).await });
        }
        Ok(())
    }

    /// Sends the receipts owed to `contact`, up to [`MAX_RECEIPT_IDS`] in each: directly if it
    /// answers, else through its mailbox. Those that reached it are settled; if some did not,
    /// they are tried again later (the same sealed receipt, while what is owed is the same).
    /// One try per contact at a time.
    pub(crate) async fn pay_receipts(self: Arc<Self>, contact: &ContactRecord) {
        let peer = contact.node_id;
        {
            let mut due = lock(&self.receipts_due);
            let tries = due.entry(peer).or_insert_with(|| OwedTries {
                running: false,
                again: false,
                next_at: Instant::now(),
                wait: self.config.mailbox_poll,
                sealed: None,
            });
            if tries.running {
                tries.again = true;
                return;
            }
            tries.running = true;
        }
        let mut paying = Paying {
            inner: &self,
            peer,
            began: Instant::now(),
            paid: false,
        };
        match self.try_paying(contact).await {
            Ok(paid) => paying.paid = paid,
            Err(e) => tracing::debug!(error = %e, to = %peer.short(8), "receipts stay owed"),
        }
    }

    /// [`Inner::pay_receipts`]'s one try; returns whether every receipt owed was paid.
    async fn try_paying(self: &Arc<Self>, contact: &ContactRecord) -> Result<bool, NodeError> {
        let peer = contact.node_id;
        let wait = self.config.request_timeout;
        let owed = || {
            let store = self.store.clone();
            blocking(move || Ok(lock(&store).owed_receipts(&peer, MAX_RECEIPT_IDS)?))
        };
        let mut ids = owed().await?;
        if ids.is_empty() {
            return Ok(true);
        }
        let mut direct = match tokio::time::timeout(wait, self.connection(contact)).await {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, to = %peer.short(8), "receipts go to the mailbox");
                None
            }
            Err(_) => None,
        };
        while !ids.is_empty() {
            // The session the messages came in (or a later one): the contact can open it.
            let Some(session) = self.sessions.current(peer).await? else {
                return Ok(false);
            };
            let receipt = || Receipt { ids: ids.clone() }.encode().map(Zeroizing::new);
            let mut paid = false;
            if let Some(conn) = &direct {
                // Sealed for this stream alone: whether it reached the contact is not always
                // known, so it is never sent again.
                let env = self
                    .sessions
                    .encrypt(peer, &session, MessageKind::Receipt, receipt()?)
                    .await?;
                // Paid once the contact ends its side of the stream, which it does cleanly
                // only after recording the receipt.
                let send = async {
                    let (mut send, mut recv) = conn.open_bi().await?;
                    write_frame(&mut send, &env.encode()).await?;
                    let _ = send.finish();
                    FrameReader::new().expect_end(&mut recv).await?;
                    Ok::<_, NodeError>(())
                };
                match tokio::time::timeout(wait, send).await {
                    Ok(Ok(())) => paid = true,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, to = %peer.short(8), "receipts go to the mailbox");
                        direct = None;
                    }
                    Err(_) => direct = None,
                }
            }
            if !paid {
                // No node for the contact's mailbox within reach either.
                if self.dht_status().peers == 0 {
                    tracing::debug!(to = %peer.short(8), owed = ids.len(), "receipts stay owed: neither the contact nor a DHT peer can be reached");
                    return Ok(false);
                }
                let last = lock(&self.receipts_due)
                    .get_mut(&peer)
                    .and_then(|t| t.sealed.take())
                    .filter(|r| r.ids == ids && r.session == session.id());
                let sealed = match last {
                    Some(r) => r,
                    None => SealedReceipt {
                        payload: self
                            .seal_with(peer, &session, MessageKind::Receipt, receipt()?)
                            .await?,
                        ids: ids.clone(),
                        session: session.id(),
                        item_id: MessageId::random(&mut OsRng),
                    },
                };
                let ttl = u64::try_from(self.config.message_ttl.as_millis()).unwrap_or(u64::MAX);
                let expires = now_ms().saturating_add(ttl);
                let deposit = self
                    .deposit_payload(peer, sealed.item_id, expires, sealed.payload.clone())
                    .await;
                match deposit {
                    Ok(Deposit { others: 0, .. }) => {
                        tracing::info!(to = %peer.short(8), owed = ids.len(), "no node took receipts for the contact's mailbox; they are tried again later");
                    }
                    Ok(_) => paid = true,
                    Err(e) => {
                        tracing::info!(error = %e, to = %peer.short(8), owed = ids.len(), "could not deposit receipts; they are tried again later");
                    }
                }
                if !paid {
                    if let Some(t) = lock(&self.receipts_due).get_mut(&peer) {
                        t.sealed = Some(sealed);
                    }
                    return Ok(false);
                }
            }
            let store = self.store.clone();
            blocking(move || Ok(lock(&store).settle_receipts(&peer, &ids)?)).await?;
            ids = owed().await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_open_chain_by_chain_whatever_their_previous_chain_lengths() {
        let env = |chain: u8, pn, n| {
            Payload::Envelope(Envelope {
                sender: NodeId::from_bytes([1; 32]),
                kind: MessageKind::Chat,
                header: dp2ptcs_wire::RatchetHeader {
                    dh_public_key: [chain; 32],
                    previous_chain_length: pn,
                    message_number: n,
                },
                payload: Vec::new(),
            })
        };
        // Chain 3 follows a chain of 1 message, chain 2 one of 5: their ranks order them.
        let mut items = [(env(3, 1, 0), 2), (env(2, 5, 1), 1), (env(2, 5, 0), 1)];
        items.sort_by_key(|(p, rank)| p.order(*rank));
        let order: Vec<(u8, u32)> = items
            .iter()
            .map(|(p, _)| (p.ratchet_key()[0], p.order(0).3))
            .collect();
        assert_eq!(order, [(2, 0), (2, 1), (3, 0)]);
    }

    #[test]
    fn only_passing_failures_of_our_own_keep_an_item() {
        use dp2ptcs_store::StoreError;
        assert!(may_pass(&NodeError::ShuttingDown));
        assert!(may_pass(&NodeError::Io(std::io::Error::other("disk"))));
        assert!(!may_pass(&NodeError::Store(StoreError::Corrupt(
            "x".into()
        ))));
        assert!(!may_pass(&NodeError::Internal("bug".into())));
        assert!(!may_pass(&NodeError::Authentication("forged")));
    }

    fn keys() -> dp2ptcs_crypto::UnlockedKeystore {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut key);
        dp2ptcs_crypto::UnlockedKeystore::from_parts(
            dp2ptcs_crypto::Identity::generate(&mut OsRng),
            key,
        )
    }

    async fn start(dir: &std::path::Path, keys: &dp2ptcs_crypto::UnlockedKeystore) -> crate::Node {
        let path = dir.join(dp2ptcs_store::DB_FILE);
        let store = dp2ptcs_store::Store::open(&path, keys.database_key()).unwrap();
        let config = crate::NodeConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ..crate::NodeConfig::default()
        };
        crate::Node::start(config, keys, store).await.unwrap()
    }

    fn contact(keys: &dp2ptcs_crypto::UnlockedKeystore, node: &crate::Node) -> ContactRecord {
        let public = keys.identity().public();
        ContactRecord {
            node_id: public.node_id(),
            public_key: public.to_bytes(),
            name: "peer".into(),
            addresses: vec![node.local_addr().unwrap()],
            verified: true,
            verified_at: None,
            added_at: 0,
        }
    }

    async fn received(node: &crate::Node, from: &NodeId) -> Vec<String> {
        let q = dp2ptcs_store::HistoryQuery {
            peer: Some(from),
            direction: Some(dp2ptcs_store::Direction::Incoming),
            after_seq: 0,
            limit: 100,
            ..dp2ptcs_store::HistoryQuery::default()
        };
        let got = node.history(&q).await.unwrap();
        got.into_iter().map(|m| m.body).collect()
    }

    /// The first message of a session opened by X3DH from a mailbox is recorded in the
    /// transaction that saves the session. If recording it fails (here, the real store refuses
    /// the insert), the item is kept and the session is saved as it was before that message:
    /// after a restart, the next fetch opens the item and records it, once; the session works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_message_that_could_not_be_recorded_opens_at_the_next_fetch_after_a_restart() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ka, kb) = (keys(), keys());
        let alpha = start(da.path(), &ka).await;
        let mut bravo = start(db.path(), &kb).await;
        let (to_b, to_a) = (contact(&kb, &bravo), contact(&ka, &alpha));
        alpha.put_contact(&to_b).await.unwrap();
        bravo.put_contact(&to_a).await.unwrap();

        // No session yet: Alpha seals a chat for Bravo's mailbox from Bravo's bundle, as it
        // would from the DHT. The item carries the X3DH handshake.
        let a = alpha.inner();
        a.learn_bundle(bravo.inner().published_bundle()).unwrap();
        let id = MessageId::new(now_ms(), &mut OsRng);
        let chat = dp2ptcs_wire::Chat {
            id,
            sent_at_ms: now_ms(),
            body: "first".into(),
        };
        let plaintext = Zeroizing::new(chat.encode().unwrap());
        let payload = a
            .seal_for_mailbox(&to_b, MessageKind::Chat, plaintext)
            .await
            .unwrap();
        assert_eq!(payload[0], PAYLOAD_HANDSHAKE);
        let expires = now_ms() + 600_000;
        let item = MailboxItem::sign(
            ka.identity(),
            bravo.node_id(),
            item_id(&id),
            expires,
            payload,
        )
        .unwrap();

        // The X3DH succeeds (the prekey is used), recording the message fails: kept.
        lock(&bravo.inner().store)
            .fail_message_inserts(true)
            .unwrap();
        assert!(bravo
            .inner()
            .take_items(vec![item.clone()], Vec::new())
            .await
            .delete
            .is_empty());
        assert!(received(&bravo, &alpha.node_id()).await.is_empty());

        // Only what was saved survives a restart: the next fetch opens the item, once.
        bravo.shutdown(Duration::from_secs(5)).await.unwrap();
        bravo = start(db.path(), &kb).await;
        let taken = bravo
            .inner()
            .take_items(vec![item.clone()], Vec::new())
            .await;
        assert_eq!(taken.delete, vec![*item.message_id()]);
        assert_eq!(received(&bravo, &alpha.node_id()).await, ["first"]);
        // Fetched again (a holder had not deleted it yet): done, and not recorded twice.
        let taken = bravo
            .inner()
            .take_items(vec![item.clone()], Vec::new())
            .await;
        assert_eq!(taken.delete, vec![*item.message_id()]);
        assert_eq!(received(&bravo, &alpha.node_id()).await, ["first"]);

        // The session works: Bravo answers directly, and Alpha opens it.
        bravo.send_chat(&to_a, "got it").await.unwrap();
        assert_eq!(received(&alpha, &bravo.node_id()).await, ["got it"]);
        alpha.shutdown(Duration::from_secs(5)).await.unwrap();
        bravo.shutdown(Duration::from_secs(5)).await.unwrap();
    }

    /// A sender claims a message before it checks its state, and cancelling claims it too:
    /// a message cancelled while a copy is leaving is reported so, and one cancelled otherwise
    /// can no longer be taken up by any sender.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_cancelled_while_a_copy_is_leaving_says_so() {
        use dp2ptcs_store::{Cancel, Direction, NewMessage};
        let da = tempfile::tempdir().unwrap();
        let (ka, kb) = (keys(), keys());
        let alpha = start(da.path(), &ka).await;
        let peer = contact(&kb, &alpha).node_id;
        // Recorded straight into the store, for a peer that is not a contact: no outbox worker
        // takes them up, so the only claims are the ones made below.
        let ids: Vec<MessageId> = (0..4)
            .map(|_| MessageId::new(now_ms(), &mut OsRng))
            .collect();
        for id in &ids {
            let m = NewMessage {
                id,
                peer: &peer,
                direction: Direction::Outgoing,
                body: "x",
                sent_at_ms: now_ms(),
                state: MessageState::Queued,
                expires_at_ms: None,
            };
            assert!(lock(&alpha.inner().store)
                .insert_message(&m, now_ms())
                .unwrap());
        }
        let outbox = &alpha.inner().outbox;

        // A copy of the first is leaving (its sender holds the claim).
        let leaving = outbox.claim(peer, ids[0]).unwrap();
        let report = alpha.cancel_message(&ids[0]).await.unwrap();
        assert!(matches!(report.outcome, Cancel::Cancelled { .. }));
        assert!(report.in_flight, "a copy was leaving");
        drop(leaving);

        // The second is not: no copy leaves, and a sender that claims it next finds it cancelled.
        let report = alpha.cancel_message(&ids[1]).await.unwrap();
        assert!(matches!(report.outcome, Cancel::Cancelled { .. }));
        assert!(!report.in_flight);
        let _claim = outbox
            .claim(peer, ids[1])
            .expect("cancelling released its claim");
        assert_eq!(
            lock(&alpha.inner().store)
                .message_state(&peer, &ids[1])
                .unwrap(),
            Some((Direction::Outgoing, MessageState::Cancelled))
        );

        // Everything left for the peer: the one leaving is named.
        let leaving = outbox.claim(peer, ids[2]).unwrap();
        let report = alpha.cancel_messages_to(&peer).await.unwrap();
        assert_eq!(report.cancelled, [ids[2], ids[3]]);
        assert_eq!(report.in_flight, [ids[2]]);
        drop(leaving);
        assert!(outbox.claim(peer, ids[3]).is_some(), "claims released");
        alpha.shutdown(Duration::from_secs(5)).await.unwrap();
    }

    #[test]
    fn an_item_id_is_fixed_per_message_and_hides_the_time_the_message_was_written() {
        let t = 1_795_000_000_000;
        let (a, b) = (MessageId::new(t, &mut OsRng), MessageId::new(t, &mut OsRng));
        assert_eq!(&a.as_bytes()[..6], &b.as_bytes()[..6]);
        assert_eq!(item_id(&a), item_id(&a));
        assert_ne!(item_id(&a), a);
        // Written in the same millisecond, yet nothing in common at the start.
        assert_ne!(&item_id(&a).as_bytes()[..6], &item_id(&b).as_bytes()[..6]);
    }
}
