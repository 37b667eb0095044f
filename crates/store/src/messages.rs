//! Message history: what was sent and received, with delivery state.

use std::fmt;
use std::str::FromStr;

use dp2ptcs_types::{MessageId, NodeId};
use rusqlite::{params, OptionalExtension, Row};

use crate::{Store, StoreError};

/// Sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We sent it.
    Outgoing,
    /// We received it.
    Incoming,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageState {
    /// Outgoing, waiting to be sent.
    Queued,
    /// Outgoing, handed to the peer, no receipt yet.
    Sent,
    /// Outgoing, held in the recipient's mailbox by at least one node, no receipt yet.
    Held,
    /// Outgoing, the end-to-end receipt arrived.
    Delivered,
    /// Outgoing, its time to live ran out before delivery.
    Expired,
    /// Incoming.
    Received,
    /// Outgoing, its sender cancelled it before a receipt came: the node sends it no more.
    Cancelled,
}

impl MessageState {
    /// The code the database keeps (schema version 4): one byte for every state, so that a
    /// change of state leaves a row's size as it was.
    fn code(self) -> i64 {
        match self {
            Self::Queued => 2,
            Self::Sent => 3,
            Self::Held => 4,
            Self::Delivered => 5,
            Self::Expired => 6,
            Self::Received => 7,
            Self::Cancelled => 8,
        }
    }

    fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            2 => Self::Queued,
            3 => Self::Sent,
            4 => Self::Held,
            5 => Self::Delivered,
            6 => Self::Expired,
            7 => Self::Received,
            8 => Self::Cancelled,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Held => "held",
            Self::Delivered => "delivered",
            Self::Expired => "expired",
            Self::Received => "received",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => Self::Queued,
            "sent" => Self::Sent,
            "held" => Self::Held,
            "delivered" => Self::Delivered,
            "expired" => Self::Expired,
            "received" => Self::Received,
            "cancelled" => Self::Cancelled,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown message state {other:?}"
                )))
            }
        })
    }
}

/// One message in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Position in the history (increasing).
    pub seq: i64,
    /// End-to-end id.
    pub id: MessageId,
    /// The other party.
    pub peer: NodeId,
    /// Sent or received.
    pub direction: Direction,
    /// The text.
    pub body: String,
    /// The sender's clock at sending, Unix milliseconds.
    pub sent_at_ms: u64,
    /// Delivery state.
    pub state: MessageState,
    /// When the state last changed, Unix milliseconds (set again, in the same state, by
    /// [`Store::set_message_state`]: a `held` message deposited again).
    pub state_at_ms: u64,
    /// Outgoing: when the sender gives up on it, Unix milliseconds (`None`: never).
    pub expires_at_ms: Option<u64>,
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let conv = |idx: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            what.to_owned().into(),
        )
    };
    let id: Vec<u8> = row.get(1)?;
    let peer: Vec<u8> = row.get(2)?;
    let state: i64 = row.get(6)?;
    Ok(MessageRecord {
        seq: row.get(0)?,
        id: MessageId::from_bytes(<[u8; 16]>::try_from(id.as_slice()).map_err(|_| conv(1, "id"))?),
        peer: NodeId::from_bytes(
            <[u8; 32]>::try_from(peer.as_slice()).map_err(|_| conv(2, "peer"))?,
        ),
        direction: if row.get::<_, i64>(3)? == 0 {
            Direction::Outgoing
        } else {
            Direction::Incoming
        },
        body: row.get(4)?,
        sent_at_ms: row.get::<_, i64>(5)?.max(0) as u64,
        state: MessageState::from_code(state).ok_or_else(|| conv(6, "state"))?,
        state_at_ms: row.get::<_, i64>(7)?.max(0) as u64,
        expires_at_ms: row.get::<_, Option<i64>>(8)?.map(|t| t.max(0) as u64),
    })
}

/// The states of outgoing messages still in the outbox (queued, sent, held), as SQL.
const PENDING: &str = "(2, 3, 4)";

/// A contact with messages in the outbox ([`Store::outbox_peers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxPeer {
    /// The contact.
    pub peer: NodeId,
    /// The position of its oldest waiting message.
    pub first_seq: i64,
    /// The earliest expiry of its waiting messages, Unix milliseconds (`None`: none expires).
    pub first_expiry_ms: Option<u64>,
    /// How many of its messages wait.
    pub waiting: u64,
}

/// What [`Store::cancel_outgoing`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The message was waiting, in state `was`; it is now `cancelled` (`message`).
    Cancelled {
        /// Its state before: `queued` (no copy is known to have left), `sent` or `held`.
        was: MessageState,
        /// The message as it is now.
        message: MessageRecord,
    },
    /// The message is not waiting any more (delivered, expired or cancelled): nothing changed.
    NotWaiting(MessageRecord),
    /// No message we sent has this id.
    Unknown,
}

/// Which of a contact's waiting messages an [`Store::outbox_window`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// Every one (`queued`, `sent`, `held`): to send them directly.
    All,
    /// Those to deposit in its mailbox: the ones not there yet (`queued`, `sent`), and the
    /// `held` ones last deposited at or before `held_before_ms` (deposited again: their holders
    /// may all have left).
    ToDeposit {
        /// A `held` message whose state dates from this time or earlier is taken.
        held_before_ms: u64,
    },
}

impl Undelivered {
    fn states(self) -> &'static [MessageState] {
        &[MessageState::Queued, MessageState::Sent, MessageState::Held]
    }

    /// Whether `m`, one of the contact's outgoing messages, is of this kind.
    fn takes(self, m: &MessageRecord) -> bool {
        match (self, m.state) {
            (_, MessageState::Queued | MessageState::Sent) => true,
            (Undelivered::All, MessageState::Held) => true,
            (Undelivered::ToDeposit { held_before_ms }, MessageState::Held) => {
                m.state_at_ms <= held_before_ms
            }
            _ => false,
        }
    }
}

/// The positions of a contact's next waiting messages in one state (`?1` peer, `?2` after this
/// position, `?3` at most so many, `?4` the state). The index holds all the query asks, in the
/// order asked: no row of the history is read, and nothing is sorted.
const WINDOW_SQL: &str = "SELECT seq FROM messages INDEXED BY messages_outbox
     WHERE direction = 0 AND state = ?4 AND peer = ?1 AND seq > ?2
     ORDER BY seq LIMIT ?3";

/// [`WINDOW_SQL`] for those in state `?4` since `?5` or earlier (the rows are read for their
/// state's time, not their bodies).
const WINDOW_SINCE_SQL: &str = "SELECT seq FROM messages INDEXED BY messages_outbox
     WHERE direction = 0 AND state = ?4 AND peer = ?1 AND seq > ?2 AND state_at_ms <= ?5
     ORDER BY seq LIMIT ?3";

/// Per contact with waiting messages: the first position, earliest expiry and count. The index
/// holds all the query asks: no row is read.
fn outbox_peers_sql() -> String {
    format!(
        "SELECT peer, MIN(seq), MIN(expires_at_ms), COUNT(*) FROM messages
         WHERE direction = 0 AND state IN {PENDING} GROUP BY peer ORDER BY MIN(seq)"
    )
}

/// The positions of the waiting messages (`?1` to this peer only, if not null; `?2` after
/// this position; `?3` at most so many), oldest first, from the outbox index alone.
fn waiting_sql() -> String {
    format!(
        "SELECT seq FROM messages INDEXED BY messages_outbox
         WHERE direction = 0 AND state IN {PENDING} AND (?1 IS NULL OR peer = ?1) AND seq > ?2
         ORDER BY seq LIMIT ?3"
    )
}

/// The outgoing message with id `?1`. The peers are walked in the (peer, id) index, each
/// found from the one before (a skip-scan), and each is looked up with the id: a few index
/// searches per peer, however long the history.
fn outgoing_by_id_sql() -> String {
    format!(
        "WITH RECURSIVE p(peer) AS (
            SELECT min(peer) FROM messages
            UNION ALL
            SELECT (SELECT min(peer) FROM messages WHERE peer > p.peer) FROM p
            WHERE p.peer IS NOT NULL
         )
         SELECT {COLUMNS} FROM messages INDEXED BY messages_by_peer_id
         WHERE peer IN (SELECT peer FROM p) AND id = ?1 AND direction = 0"
    )
}

/// A message to record.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// End-to-end id.
    pub id: &'a MessageId,
    /// The other party.
    pub peer: &'a NodeId,
    /// Sent or received.
    pub direction: Direction,
    /// The text.
    pub body: &'a str,
    /// The sender's clock at sending, Unix milliseconds.
    pub sent_at_ms: u64,
    /// Initial state.
    pub state: MessageState,
    /// Outgoing: when to give up on it, Unix milliseconds (`None`: never).
    pub expires_at_ms: Option<u64>,
}

const COLUMNS: &str =
    "seq, id, peer, direction, body, sent_at_ms, state, state_at_ms, expires_at_ms";

impl Store {
    /// Records a message. Returns `false` (and changes nothing) if a message with this id is
    /// already recorded with this peer: receivers deduplicate by (peer, id).
    pub fn insert_message(&self, m: &NewMessage<'_>, now_ms: u64) -> Result<bool, StoreError> {
        let n = self.exec(
            "INSERT OR IGNORE INTO messages
                (id, peer, direction, body, sent_at_ms, state, state_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                m.id.as_bytes().as_slice(),
                m.peer.as_bytes().as_slice(),
                matches!(m.direction, Direction::Incoming) as i64,
                m.body,
                m.sent_at_ms as i64,
                m.state.code(),
                now_ms as i64,
                m.expires_at_ms.map(|t| t.min(i64::MAX as u64) as i64),
            ],
        )?;
        Ok(n == 1)
    }

    /// Moves the message `id` exchanged with `peer` to `state`; returns whether it exists.
    pub fn set_message_state(
        &self,
        peer: &NodeId,
        id: &MessageId,
        state: MessageState,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE messages SET state = ?3, state_at_ms = ?4 WHERE peer = ?1 AND id = ?2",
            params![
                peer.as_bytes().as_slice(),
                id.as_bytes().as_slice(),
                state.code(),
                now_ms as i64
            ],
        )? == 1)
    }

    /// Marks our message `id` to `peer` `delivered` (a receipt named it), whatever its state
    /// before, unless it already was; returns whether it changed. One lookup: the receipt path
    /// runs this for every id a receipt names.
    pub fn mark_delivered(
        &self,
        peer: &NodeId,
        id: &MessageId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.move_ours(peer, id, MessageState::Delivered, None, now_ms)
    }

    /// Marks our message `id` to `peer` `sent` if it is still `queued` (a copy left, and no
    /// receipt named it); returns whether it changed.
    pub fn mark_sent(
        &self,
        peer: &NodeId,
        id: &MessageId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.move_ours(
            peer,
            id,
            MessageState::Sent,
            Some(MessageState::Queued),
            now_ms,
        )
    }

    /// Moves our message `id` to `peer` to state `to` unless it is there already, and only from
    /// state `from` if one is given; returns whether it changed.
    fn move_ours(
        &self,
        peer: &NodeId,
        id: &MessageId,
        to: MessageState,
        from: Option<MessageState>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE messages SET state = ?3, state_at_ms = ?4
             WHERE peer = ?1 AND id = ?2 AND direction = 0 AND state <> ?3
               AND (?5 IS NULL OR state = ?5)",
            params![
                peer.as_bytes().as_slice(),
                id.as_bytes().as_slice(),
                to.code(),
                now_ms as i64,
                from.map(MessageState::code)
            ],
        )? == 1)
    }

    /// The direction and state of the message `id` exchanged with `peer`, without reading its
    /// body.
    pub fn message_state(
        &self,
        peer: &NodeId,
        id: &MessageId,
    ) -> Result<Option<(Direction, MessageState)>, StoreError> {
        let row = self
            .query_one(
                "SELECT direction, state FROM messages WHERE peer = ?1 AND id = ?2",
                params![peer.as_bytes().as_slice(), id.as_bytes().as_slice()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        row.map(|(direction, state)| {
            let direction = if direction == 0 {
                Direction::Outgoing
            } else {
                Direction::Incoming
            };
            let state = MessageState::from_code(state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown message state {state}")))?;
            Ok((direction, state))
        })
        .transpose()
    }

    /// The message `id` exchanged with `peer`.
    pub fn message(
        &self,
        peer: &NodeId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self
            .query_one(
                &format!("SELECT {COLUMNS} FROM messages WHERE peer = ?1 AND id = ?2"),
                params![peer.as_bytes().as_slice(), id.as_bytes().as_slice()],
                from_row,
            )
            .optional()?)
    }

    /// The history matching `q`, oldest first. With `q.newest`, the last `q.limit` matching
    /// messages (still oldest first); otherwise the first `q.limit` after `q.after_seq`. Fewer
    /// if their bodies reach `q.max_body_bytes` first (the newest ones, with `q.newest`).
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<MessageRecord>, StoreError> {
        let order = if q.newest { "DESC" } else { "ASC" };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages
             WHERE seq > ?1 AND (?2 IS NULL OR peer = ?2) AND (?3 IS NULL OR direction = ?3)
             ORDER BY seq {order} LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                q.after_seq,
                q.peer.map(|p| p.as_bytes().to_vec()),
                q.direction.map(|d| matches!(d, Direction::Incoming) as i64),
                i64::from(q.limit)
            ],
            from_row,
        )?;
        let mut out: Vec<MessageRecord> = Vec::new();
        let mut bytes = 0usize;
        for row in rows {
            let m = row?;
            bytes = bytes.saturating_add(m.body.len());
            out.push(m);
            if bytes >= q.max_body_bytes {
                break;
            }
        }
        if q.newest {
            out.reverse();
        }
        Ok(out)
    }

    /// The contacts with messages in the outbox, without reading a body: for each, the
    /// position of its oldest waiting message and the earliest expiry among them. Ordered by
    /// that oldest message, so the contact waiting longest comes first.
    pub fn outbox_peers(&self) -> Result<Vec<OutboxPeer>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&outbox_peers_sql())?;
        let rows = stmt.query_map([], |row| {
            let peer: Vec<u8> = row.get(0)?;
            let peer = <[u8; 32]>::try_from(peer.as_slice()).map_err(|_| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Blob,
                    "peer is not 32 bytes".into(),
                )
            })?;
            Ok(OutboxPeer {
                peer: NodeId::from_bytes(peer),
                first_seq: row.get(1)?,
                first_expiry_ms: row.get::<_, Option<i64>>(2)?.map(|t| t.max(0) as u64),
                waiting: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The next of `peer`'s messages in the outbox (those of `which` kind) after position
    /// `after_seq`, oldest first: at most `max_messages`, and no more once their bodies reach
    /// `max_bytes` (at least one). Only the bodies returned are read.
    pub fn outbox_window(
        &self,
        peer: &NodeId,
        which: Undelivered,
        after_seq: i64,
        max_messages: u32,
        max_bytes: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        // The first `max_messages` of each state, merged: the first `max_messages` of all.
        let mut seqs: Vec<i64> = Vec::new();
        for &state in which.states() {
            let peer = peer.as_bytes().as_slice();
            let limit = i64::from(max_messages);
            let found: Vec<i64> = match (which, state) {
                (Undelivered::ToDeposit { held_before_ms }, MessageState::Held) => {
                    let since = i64::try_from(held_before_ms).unwrap_or(i64::MAX);
                    let mut stmt = self.conn.prepare_cached(WINDOW_SINCE_SQL)?;
                    let rows = stmt
                        .query_map(params![peer, after_seq, limit, state.code(), since], |r| {
                            r.get(0)
                        })?;
                    rows.collect::<Result<_, _>>()?
                }
                _ => {
                    let mut stmt = self.conn.prepare_cached(WINDOW_SQL)?;
                    let rows = stmt
                        .query_map(params![peer, after_seq, limit, state.code()], |r| r.get(0))?;
                    rows.collect::<Result<_, _>>()?
                }
            };
            seqs.extend(found);
        }
        seqs.sort_unstable();
        seqs.truncate(max_messages as usize);
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE seq = ?1"))?;
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for seq in seqs {
            if bytes >= max_bytes {
                break;
            }
            // Gone or delivered since the first query: it is not waiting any more.
            let Some(m) = stmt.query_row(params![seq], from_row).optional()? else {
                continue;
            };
            if m.direction != Direction::Outgoing || !which.takes(&m) {
                continue;
            }
            bytes += m.body.len();
            out.push(m);
        }
        Ok(out)
    }

    /// Keeps `sealed`, the encrypted form of outgoing message `id` made for `peer`'s mailbox, so
    /// that depositing it again never spends another message key.
    pub fn set_sealed(
        &self,
        peer: &NodeId,
        id: &MessageId,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE messages SET sealed = ?3 WHERE peer = ?1 AND id = ?2 AND direction = 0",
            params![peer.as_bytes().as_slice(), id.as_bytes().as_slice(), sealed],
        )? == 1)
    }

    /// The encrypted form kept by [`Store::set_sealed`], if any.
    pub fn sealed(&self, peer: &NodeId, id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query_one(
                "SELECT sealed FROM messages WHERE peer = ?1 AND id = ?2",
                params![peer.as_bytes().as_slice(), id.as_bytes().as_slice()],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()?
            .flatten())
    }

    /// The messages in the outbox (`queued`, `sent` or `held`), oldest first: those to `peer`
    /// only, if given, and at most `limit` after position `after_seq`. Their positions come from
    /// the outbox index alone; only the rows returned are read.
    pub fn waiting(
        &self,
        peer: Option<&NodeId>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&waiting_sql())?;
        let seqs = stmt
            .query_map(
                params![
                    peer.map(|p| p.as_bytes().to_vec()),
                    after_seq,
                    i64::from(limit)
                ],
                |r| r.get::<_, i64>(0),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE seq = ?1"))?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            out.push(stmt.query_row(params![seq], from_row)?);
        }
        Ok(out)
    }

    /// The message we sent with the id `id`, if any. Ids are chosen at random by this node, so
    /// one outgoing message at most has this one. Found through the (peer, id) index, a peer at
    /// a time: no row of the history is read but the one returned.
    pub fn outgoing(&self, id: &MessageId) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self
            .query_one(
                &outgoing_by_id_sql(),
                params![id.as_bytes().as_slice()],
                from_row,
            )
            .optional()?)
    }

    /// Cancels the outgoing message `id` if it is still in the outbox: it becomes `cancelled`
    /// and is sent no more (nor deposited in a mailbox). A receipt that comes in later still
    /// marks it `delivered`: a copy that had left may arrive.
    pub fn cancel_outgoing(&self, id: &MessageId, now_ms: u64) -> Result<Cancel, StoreError> {
        let Some(m) = self.outgoing(id)? else {
            return Ok(Cancel::Unknown);
        };
        if !Undelivered::All.takes(&m) {
            return Ok(Cancel::NotWaiting(m));
        }
        self.exec(
            "UPDATE messages SET state = ?2, state_at_ms = ?3 WHERE seq = ?1",
            params![m.seq, MessageState::Cancelled.code(), now_ms as i64],
        )?;
        let message = MessageRecord {
            state: MessageState::Cancelled,
            state_at_ms: now_ms,
            ..m.clone()
        };
        Ok(Cancel::Cancelled {
            was: m.state,
            message,
        })
    }

    /// The ids of the messages waiting for `peer`, oldest first, without reading their bodies.
    pub fn waiting_ids(&self, peer: &NodeId) -> Result<Vec<MessageId>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT seq, id FROM messages INDEXED BY messages_outbox
             WHERE direction = 0 AND state IN {PENDING} AND peer = ?1 ORDER BY seq"
        ))?;
        let rows = stmt.query_map(params![peer.as_bytes().as_slice()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, id) = row?;
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("message {seq} has a bad id")))?;
            out.push(MessageId::from_bytes(id));
        }
        Ok(out)
    }

    /// Cancels those of the messages `ids` to `peer` still waiting (see
    /// [`Store::cancel_outgoing`]); returns them, in the order given.
    pub fn cancel_outgoing_of(
        &self,
        peer: &NodeId,
        ids: &[MessageId],
        now_ms: u64,
    ) -> Result<Vec<MessageId>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "UPDATE messages SET state = ?3, state_at_ms = ?4
             WHERE peer = ?1 AND id = ?2 AND direction = 0 AND state IN {PENDING}"
        ))?;
        let mut out = Vec::new();
        for id in ids {
            let changed = stmt.execute(params![
                peer.as_bytes().as_slice(),
                id.as_bytes().as_slice(),
                MessageState::Cancelled.code(),
                now_ms as i64
            ])?;
            if changed == 1 {
                out.push(*id);
            }
        }
        Ok(out)
    }

    /// Cancels every message waiting for `peer` (see [`Store::cancel_outgoing`]); returns their
    /// ids, oldest first.
    pub fn cancel_outgoing_to(
        &self,
        peer: &NodeId,
        now_ms: u64,
    ) -> Result<Vec<MessageId>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "UPDATE messages SET state = ?2, state_at_ms = ?3
             WHERE direction = 0 AND state IN {PENDING} AND peer = ?1 RETURNING seq, id"
        ))?;
        let rows = stmt.query_map(
            params![
                peer.as_bytes().as_slice(),
                MessageState::Cancelled.code(),
                now_ms as i64
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, id) = row?;
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("message {seq} has a bad id")))?;
            out.push((seq, MessageId::from_bytes(id)));
        }
        // RETURNING gives no order.
        out.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, id)| id).collect())
    }

    /// Marks every outgoing message still in the outbox whose expiry is at or before `now_ms`
    /// as `expired`, and returns them (peer, id), oldest first. All of them or none (a row
    /// that does not read back undoes the lot: each must be reported), and no body is read
    /// (after a long time offline they may be many).
    pub fn expire_outgoing(&self, now_ms: u64) -> Result<Vec<(NodeId, MessageId)>, StoreError> {
        self.savepoint(|s| s.expire_outgoing_now(now_ms))?
    }

    fn expire_outgoing_now(&self, now_ms: u64) -> Result<Vec<(NodeId, MessageId)>, StoreError> {
        let now = now_ms.min(i64::MAX as u64) as i64;
        let mut stmt = self.conn.prepare_cached(&format!(
            "UPDATE messages SET state = ?2, state_at_ms = ?1
             WHERE direction = 0 AND state IN {PENDING}
               AND expires_at_ms IS NOT NULL AND expires_at_ms <= ?1
             RETURNING seq, peer, id"
        ))?;
        let rows = stmt.query_map(params![now, MessageState::Expired.code()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, peer, id) = row?;
            let bad = |what: &str| StoreError::Corrupt(format!("message {seq} has a bad {what}"));
            let peer = <[u8; 32]>::try_from(peer.as_slice()).map_err(|_| bad("peer"))?;
            let id = <[u8; 16]>::try_from(id.as_slice()).map_err(|_| bad("id"))?;
            out.push((seq, NodeId::from_bytes(peer), MessageId::from_bytes(id)));
        }
        // RETURNING gives no order.
        out.sort_unstable_by_key(|(seq, _, _)| *seq);
        Ok(out.into_iter().map(|(_, peer, id)| (peer, id)).collect())
    }

    /// How many messages are in each (direction, state).
    pub fn message_counts(&self) -> Result<Vec<(Direction, MessageState, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT direction, state, count(*) FROM messages GROUP BY direction, state ORDER BY 1, 2",
        )?;
        let rows = stmt.query_map([], |row| {
            let direction = if row.get::<_, i64>(0)? == 0 {
                Direction::Outgoing
            } else {
                Direction::Incoming
            };
            let state: i64 = row.get(1)?;
            Ok((direction, state, row.get::<_, i64>(2)?.max(0) as u64))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (direction, state, n) = row?;
            let state = MessageState::from_code(state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown message state {state}")))?;
            out.push((direction, state, n));
        }
        Ok(out)
    }
}

/// Which messages [`Store::history`] returns.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery<'a> {
    /// Only messages exchanged with this peer.
    pub peer: Option<&'a NodeId>,
    /// Only messages in this direction.
    pub direction: Option<Direction>,
    /// Only messages recorded after this sequence number (0 for all).
    pub after_seq: i64,
    /// At most this many.
    pub limit: u32,
    /// The newest `limit` instead of the oldest.
    pub newest: bool,
    /// Stop once the bodies read reach this many bytes (the message that reaches it is
    /// included, so a page is never empty while messages match): a page of long messages
    /// stays within memory; the caller reads on after the last one.
    pub max_body_bytes: usize,
}

impl Default for HistoryQuery<'_> {
    fn default() -> Self {
        Self {
            peer: None,
            direction: None,
            after_seq: 0,
            limit: 100,
            newest: false,
            max_body_bytes: usize::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records a message with body "x", written and recorded at 1.
    fn put(
        store: &Store,
        peer: &NodeId,
        id: &MessageId,
        direction: Direction,
        state: MessageState,
        expires_at_ms: Option<u64>,
    ) {
        let m = NewMessage {
            id,
            peer,
            direction,
            body: "x",
            sent_at_ms: 1,
            state,
            expires_at_ms,
        };
        assert!(store.insert_message(&m, 1).unwrap());
    }

    /// How many messages the outbox holds.
    fn waiting(store: &Store) -> u64 {
        store
            .outbox_peers()
            .unwrap()
            .iter()
            .map(|p| p.waiting)
            .sum()
    }

    #[test]
    fn a_history_page_stops_once_its_bodies_reach_the_byte_budget() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let bob = NodeId::from_bytes([2; 32]);
        let bodies: Vec<String> = (0..5u8)
            .map(|i| char::from(b'a' + i).to_string().repeat(100))
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            let m = NewMessage {
                id: &MessageId::from_bytes([i as u8; 16]),
                peer: &bob,
                direction: Direction::Incoming,
                body,
                sent_at_ms: 1,
                state: MessageState::Received,
                expires_at_ms: None,
            };
            assert!(store.insert_message(&m, 1).unwrap());
        }
        let page = |after_seq, newest, max_body_bytes| -> Vec<String> {
            let q = HistoryQuery {
                after_seq,
                newest,
                max_body_bytes,
                ..HistoryQuery::default()
            };
            store
                .history(&q)
                .unwrap()
                .into_iter()
                .map(|m| m.body)
                .collect()
        };
        // The message that reaches the budget is included.
        assert_eq!(page(0, false, 250), bodies[..3]);
        assert_eq!(page(0, false, 300), bodies[..3]);
        assert_eq!(page(0, true, 250), bodies[2..]);
        // Never empty while messages match; the next page goes on after the last one.
        assert_eq!(page(0, false, 0), bodies[..1]);
        let first = store
            .history(&HistoryQuery {
                max_body_bytes: 250,
                ..HistoryQuery::default()
            })
            .unwrap();
        assert_eq!(page(first[2].seq, false, 250), bodies[3..]);
        assert_eq!(page(0, false, usize::MAX), bodies);
    }

    #[test]
    fn expiry_takes_only_undelivered_outgoing_messages_past_their_time() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let bob = NodeId::from_bytes([2; 32]);
        let ids: Vec<MessageId> = (0..5u8).map(|i| MessageId::from_bytes([i; 16])).collect();
        let cases = [
            (Direction::Outgoing, MessageState::Queued, Some(100)),
            (Direction::Outgoing, MessageState::Held, Some(100)),
            (Direction::Outgoing, MessageState::Delivered, Some(100)),
            (Direction::Outgoing, MessageState::Sent, Some(500)),
            (Direction::Outgoing, MessageState::Queued, None),
        ];
        for (id, (direction, state, expires_at_ms)) in ids.iter().zip(cases) {
            put(&store, &bob, id, direction, state, expires_at_ms);
        }
        assert_eq!(waiting(&store), 4);
        let expired = store.expire_outgoing(100).unwrap();
        assert_eq!(expired, vec![(bob, ids[0]), (bob, ids[1])]);
        assert_eq!(
            store.message(&bob, &ids[1]).unwrap().unwrap().state,
            MessageState::Expired
        );
        assert_eq!(
            store.message(&bob, &ids[1]).unwrap().unwrap().expires_at_ms,
            Some(100)
        );
        // Expired messages leave the outbox; a second pass finds nothing more until 500.
        assert_eq!(waiting(&store), 2);
        assert!(store.expire_outgoing(499).unwrap().is_empty());
        assert_eq!(store.expire_outgoing(500).unwrap(), vec![(bob, ids[3])]);
        // The sealed form of a message is kept for depositing again.
        assert_eq!(store.sealed(&bob, &ids[4]).unwrap(), None);
        assert!(store.set_sealed(&bob, &ids[4], b"sealed").unwrap());
        assert_eq!(
            store.sealed(&bob, &ids[4]).unwrap(),
            Some(b"sealed".to_vec())
        );
    }

    #[test]
    fn a_receipt_or_a_departure_changes_only_our_own_messages() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let bob = NodeId::from_bytes([2; 32]);
        let (ours, theirs) = (
            MessageId::from_bytes([1; 16]),
            MessageId::from_bytes([2; 16]),
        );
        for (id, direction, state) in [
            (&ours, Direction::Outgoing, MessageState::Queued),
            (&theirs, Direction::Incoming, MessageState::Received),
        ] {
            put(&store, &bob, id, direction, state, None);
        }
        // A message bob sent us, or an id nobody sent, is not ours to mark.
        let unknown = MessageId::from_bytes([3; 16]);
        for id in [&theirs, &unknown] {
            assert!(!store.mark_sent(&bob, id, 2).unwrap());
            assert!(!store.mark_delivered(&bob, id, 2).unwrap());
        }
        assert_eq!(
            store.message_state(&bob, &theirs).unwrap(),
            Some((Direction::Incoming, MessageState::Received))
        );
        // Ours to another peer is another message.
        let carol = NodeId::from_bytes([9; 32]);
        assert!(!store.mark_sent(&carol, &ours, 2).unwrap());
        assert!(!store.mark_delivered(&carol, &ours, 2).unwrap());
        // All in one read transaction, and the writes after it still commit.
        let states = store
            .read(|s| {
                [&ours, &theirs, &unknown]
                    .iter()
                    .map(|id| s.message_state(&bob, id))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .unwrap();
        assert_eq!(
            states,
            vec![
                Some((Direction::Outgoing, MessageState::Queued)),
                Some((Direction::Incoming, MessageState::Received)),
                None
            ]
        );
        assert!(store.conn.is_autocommit(), "read left its transaction open");
        // A failing read ends its transaction too, and reads do not nest in a transaction.
        let failed: Result<(), StoreError> =
            store.read(|_| Err(StoreError::Corrupt("test".into())));
        assert!(failed.is_err());
        assert!(store.conn.is_autocommit());
        let nested: Result<(), StoreError> = store.transaction(|s| s.read(|_| Ok(())));
        assert!(nested.is_err());
        assert!(store.conn.is_autocommit());
        assert!(store.mark_sent(&bob, &ours, 3).unwrap());
        assert!(!store.mark_sent(&bob, &ours, 4).unwrap());
        assert!(store.mark_delivered(&bob, &ours, 5).unwrap());
        assert!(!store.mark_delivered(&bob, &ours, 6).unwrap());
        let m = store.message(&bob, &ours).unwrap().unwrap();
        assert_eq!((m.state, m.state_at_ms), (MessageState::Delivered, 5));
        // A delivered message never goes back to sent.
        assert!(!store.mark_sent(&bob, &ours, 7).unwrap());
    }

    #[test]
    fn every_state_has_a_one_byte_code_and_pending_names_the_outbox_states() {
        use MessageState::*;
        for s in [Queued, Sent, Held, Delivered, Expired, Received, Cancelled] {
            assert_eq!(MessageState::from_code(s.code()), Some(s));
            // 0 and 1 are stored in no bytes at all, 128 and above in two.
            assert!((2..128).contains(&s.code()));
            assert_eq!(s.to_string().parse::<MessageState>().unwrap(), s);
        }
        assert_eq!(MessageState::from_code(1), None);
        assert_eq!(
            PENDING,
            format!("({}, {}, {})", Queued.code(), Sent.code(), Held.code())
        );
    }

    #[test]
    fn history_dedup_and_states() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let bob = NodeId::from_bytes([2; 32]);
        let carol = NodeId::from_bytes([3; 32]);
        let m1 = MessageId::from_bytes([1; 16]);
        let m2 = MessageId::from_bytes([2; 16]);
        let out = NewMessage {
            id: &m1,
            peer: &bob,
            direction: Direction::Outgoing,
            body: "hi",
            sent_at_ms: 10,
            state: MessageState::Queued,
            expires_at_ms: None,
        };
        let inc = NewMessage {
            id: &m2,
            peer: &carol,
            direction: Direction::Incoming,
            body: "yo",
            sent_at_ms: 11,
            state: MessageState::Received,
            expires_at_ms: None,
        };
        assert!(store.insert_message(&out, 10).unwrap());
        assert!(store.insert_message(&inc, 12).unwrap());
        // The same id again is ignored: delivered once.
        assert!(!store.insert_message(&inc, 13).unwrap());
        // The same id from another peer is another message: one contact cannot suppress
        // another's message by sending its id first.
        let other = NewMessage { peer: &bob, ..inc };
        assert!(store.insert_message(&other, 14).unwrap());
        assert_eq!(store.message(&carol, &m2).unwrap().unwrap().body, "yo");
        let all = HistoryQuery::default();
        assert_eq!(store.history(&all).unwrap().len(), 3);
        let with_bob = HistoryQuery {
            peer: Some(&bob),
            ..all
        };
        assert_eq!(store.history(&with_bob).unwrap()[0].body, "hi");
        let incoming = HistoryQuery {
            direction: Some(Direction::Incoming),
            ..all
        };
        assert_eq!(store.history(&incoming).unwrap().len(), 2);
        let last = HistoryQuery {
            limit: 1,
            newest: true,
            ..all
        };
        assert_eq!(store.history(&last).unwrap()[0].body, "yo");
        assert_eq!(waiting(&store), 1);
        assert!(store
            .set_message_state(&bob, &m1, MessageState::Delivered, 20)
            .unwrap());
        assert!(!store
            .set_message_state(&carol, &m1, MessageState::Expired, 21)
            .unwrap());
        let m = store.message(&bob, &m1).unwrap().unwrap();
        assert_eq!((m.state, m.state_at_ms), (MessageState::Delivered, 20));
        assert_eq!(
            store.message_state(&bob, &m1).unwrap(),
            Some((m.direction, MessageState::Delivered))
        );
        assert_eq!(
            store
                .message_state(&bob, &MessageId::from_bytes([0xee; 16]))
                .unwrap(),
            None
        );
        assert_eq!(waiting(&store), 0);
        let first = store.history(&HistoryQuery { limit: 1, ..all }).unwrap();
        let next = HistoryQuery {
            after_seq: first[0].seq,
            ..all
        };
        assert_eq!(store.history(&next).unwrap()[0].id, m2);
        let counts = store.message_counts().unwrap();
        assert!(counts.contains(&(Direction::Outgoing, MessageState::Delivered, 1)));
        assert!(counts.contains(&(Direction::Incoming, MessageState::Received, 2)));
    }
}

#[cfg(test)]
mod outbox_tests {
    use super::*;

    /// An outgoing or incoming message to `peer` in `state`, its body `body`.
    fn put(
        store: &Store,
        peer: &NodeId,
        n: u16,
        direction: Direction,
        state: MessageState,
        body: &str,
        expires: Option<u64>,
    ) {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        let m = NewMessage {
            id: &MessageId::from_bytes(id),
            peer,
            direction,
            body,
            sent_at_ms: 1,
            state,
            expires_at_ms: expires,
        };
        assert!(store.insert_message(&m, 1).unwrap());
    }

    #[test]
    fn the_outbox_is_read_per_contact_oldest_first_a_window_at_a_time() {
        use Direction::{Incoming, Outgoing};
        use MessageState::*;
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let (bob, carol) = (NodeId::from_bytes([2; 32]), NodeId::from_bytes([3; 32]));
        let body = "b".repeat(100);
        put(&store, &carol, 1, Outgoing, Delivered, &body, None);
        put(&store, &bob, 2, Outgoing, Queued, &body, Some(900));
        put(&store, &carol, 3, Outgoing, Held, &body, Some(700));
        put(&store, &bob, 4, Incoming, Received, &body, None);
        put(&store, &bob, 5, Outgoing, Sent, &body, None);
        put(&store, &bob, 6, Outgoing, Expired, &body, Some(1));
        put(&store, &bob, 7, Outgoing, Held, &body, Some(800));
        put(&store, &carol, 8, Outgoing, Queued, &body, None);

        let peers = store.outbox_peers().unwrap();
        let want = [
            OutboxPeer {
                peer: bob,
                first_seq: 2,
                first_expiry_ms: Some(800),
                waiting: 3,
            },
            OutboxPeer {
                peer: carol,
                first_seq: 3,
                first_expiry_ms: Some(700),
                waiting: 2,
            },
        ];
        assert_eq!(peers, want);

        let seqs = |w: Vec<MessageRecord>| w.iter().map(|m| m.seq).collect::<Vec<_>>();
        let all = usize::MAX;
        assert_eq!(
            seqs(
                store
                    .outbox_window(&bob, Undelivered::All, 0, 10, all)
                    .unwrap()
            ),
            [2, 5, 7]
        );
        assert_eq!(
            seqs(
                store
                    .outbox_window(&bob, Undelivered::All, 0, 2, all)
                    .unwrap()
            ),
            [2, 5]
        );
        assert_eq!(
            seqs(
                store
                    .outbox_window(&bob, Undelivered::All, 5, 10, all)
                    .unwrap()
            ),
            [7]
        );
        assert!(store
            .outbox_window(&bob, Undelivered::All, 7, 10, all)
            .unwrap()
            .is_empty());
        assert_eq!(
            seqs(
                store
                    .outbox_window(&carol, Undelivered::All, 0, 10, all)
                    .unwrap()
            ),
            [3, 8]
        );
        // Bodies bound the window, but one message always fits.
        assert_eq!(
            seqs(
                store
                    .outbox_window(&bob, Undelivered::All, 0, 10, 150)
                    .unwrap()
            ),
            [2, 5]
        );
        assert_eq!(
            seqs(
                store
                    .outbox_window(&bob, Undelivered::All, 0, 10, 1)
                    .unwrap()
            ),
            [2]
        );
        // Those not in the mailbox yet, and held ones deposited at or before a time (all held
        // here at 1; seq 7 again at 50).
        let to_deposit = |peer, held_before_ms| {
            seqs(
                store
                    .outbox_window(peer, Undelivered::ToDeposit { held_before_ms }, 0, 10, all)
                    .unwrap(),
            )
        };
        assert_eq!(to_deposit(&bob, 0), [2, 5]);
        assert_eq!(to_deposit(&carol, 0), [8]);
        assert_eq!(to_deposit(&bob, 1), [2, 5, 7]);
        assert_eq!(to_deposit(&carol, 1), [3, 8]);
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&7u16.to_be_bytes());
        store
            .set_message_state(&bob, &MessageId::from_bytes(id), Held, 50)
            .unwrap();
        assert_eq!(to_deposit(&bob, 49), [2, 5]);
        assert_eq!(to_deposit(&bob, 50), [2, 5, 7]);
        assert_eq!(to_deposit(&bob, u64::MAX), [2, 5, 7]);
        let w = store
            .outbox_window(&bob, Undelivered::All, 0, 1, all)
            .unwrap();
        assert_eq!((w[0].body.as_str(), w[0].state), (body.as_str(), Queued));

        // Delivered, it leaves the outbox.
        let id5 = store
            .outbox_window(&bob, Undelivered::All, 2, 1, all)
            .unwrap()[0]
            .id;
        store.set_message_state(&bob, &id5, Delivered, 2).unwrap();
        assert_eq!(
            seqs(
                store
                    .outbox_window(&bob, Undelivered::All, 0, 10, all)
                    .unwrap()
            ),
            [2, 7]
        );
        assert_eq!(store.outbox_peers().unwrap()[0].waiting, 2);
    }

    fn id(n: u16) -> MessageId {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        MessageId::from_bytes(id)
    }

    #[test]
    fn a_cancelled_message_leaves_the_outbox_and_stays_in_the_history() {
        use Direction::{Incoming, Outgoing};
        use MessageState::*;
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let (bob, carol) = (NodeId::from_bytes([2; 32]), NodeId::from_bytes([3; 32]));
        put(&store, &bob, 1, Outgoing, Queued, "one", Some(900));
        put(&store, &carol, 2, Outgoing, Sent, "two", None);
        put(&store, &bob, 3, Outgoing, Held, "three", None);
        put(&store, &bob, 4, Outgoing, Delivered, "four", None);
        // An incoming message that reuses an id we chose is not ours to cancel.
        put(&store, &carol, 5, Incoming, Received, "five", None);
        let bodies =
            |ms: Vec<MessageRecord>| -> Vec<String> { ms.into_iter().map(|m| m.body).collect() };
        assert_eq!(
            bodies(store.waiting(None, 0, 10).unwrap()),
            ["one", "two", "three"]
        );
        assert_eq!(
            bodies(store.waiting(Some(&bob), 0, 10).unwrap()),
            ["one", "three"]
        );
        assert_eq!(bodies(store.waiting(None, 1, 1).unwrap()), ["two"]);

        let Cancel::Cancelled { was, message } = store.cancel_outgoing(&id(2), 50).unwrap() else {
            panic!("a sent message without a receipt can be cancelled")
        };
        assert_eq!(
            (was, message.state, message.state_at_ms),
            (Sent, Cancelled, 50)
        );
        assert_eq!(store.message(&carol, &id(2)).unwrap().unwrap(), message);
        assert_eq!(
            bodies(store.waiting(None, 0, 10).unwrap()),
            ["one", "three"]
        );
        // Once only; a delivered message, an incoming one and an unknown id are refused.
        assert_eq!(
            store.cancel_outgoing(&id(2), 60).unwrap(),
            Cancel::NotWaiting(message)
        );
        assert!(matches!(
            store.cancel_outgoing(&id(4), 60).unwrap(),
            Cancel::NotWaiting(MessageRecord {
                state: Delivered,
                ..
            })
        ));
        assert_eq!(store.cancel_outgoing(&id(5), 60).unwrap(), Cancel::Unknown);
        assert_eq!(store.cancel_outgoing(&id(9), 60).unwrap(), Cancel::Unknown);
        assert_eq!(
            store.message(&carol, &id(5)).unwrap().unwrap().state,
            Received
        );

        // Everything waiting for one contact at once; the others' stay.
        put(&store, &carol, 6, Outgoing, Queued, "six", None);
        assert_eq!(store.waiting_ids(&bob).unwrap(), [id(1), id(3)]);
        assert_eq!(store.waiting_ids(&carol).unwrap(), [id(6)]);
        // Only those of the ids given that wait for that peer.
        assert_eq!(
            store
                .cancel_outgoing_of(&carol, &[id(1), id(6), id(9)], 65)
                .unwrap(),
            [id(6)]
        );
        assert_eq!(
            store.message(&carol, &id(6)).unwrap().unwrap().state,
            Cancelled
        );
        put(&store, &carol, 7, Outgoing, Queued, "seven", None);
        assert_eq!(store.cancel_outgoing_to(&bob, 70).unwrap(), [id(1), id(3)]);
        assert!(store.cancel_outgoing_to(&bob, 80).unwrap().is_empty());
        assert_eq!(bodies(store.waiting(None, 0, 10).unwrap()), ["seven"]);
        assert!(store
            .outbox_peers()
            .unwrap()
            .iter()
            .all(|p| p.peer == carol));
        assert_eq!(store.expire_outgoing(u64::MAX).unwrap(), []);
        let history = store.history(&HistoryQuery::default()).unwrap();
        let states: Vec<MessageState> = history.iter().map(|m| m.state).collect();
        assert_eq!(
            states,
            [Cancelled, Cancelled, Cancelled, Delivered, Received, Cancelled, Queued]
        );
        // A receipt that comes in afterwards still counts: a copy had left.
        assert!(store
            .set_message_state(&bob, &id(3), Delivered, 90)
            .unwrap());
        assert!(store
            .message_counts()
            .unwrap()
            .contains(&(Outgoing, Cancelled, 3)));
    }

    /// The plan of `sql` run with `params`, one line per step.
    fn plan(store: &Store, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        stmt.query_map(params, |r| r.get(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Listing the outbox reads only the rows it returns, and finding a message we sent by its
    /// id alone reads no row of the history but that one.
    #[test]
    fn the_outbox_is_listed_and_a_sent_message_found_without_reading_the_history() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let listing = plan(
            &store,
            &waiting_sql(),
            rusqlite::params![Option::<Vec<u8>>::None, 0, 1],
        );
        assert!(
            listing[0].starts_with("SEARCH messages USING COVERING INDEX messages_outbox"),
            "{listing:?}"
        );
        let by_id = plan(
            &store,
            &outgoing_by_id_sql(),
            rusqlite::params![[0u8; 16].as_slice()],
        );
        assert!(
            by_id.iter().all(|step| !step.starts_with("SCAN messages")),
            "{by_id:?}"
        );
        assert!(
            by_id
                .iter()
                .any(|step| step.starts_with("SEARCH messages USING INDEX messages_by_peer_id")),
            "{by_id:?}"
        );
    }

    /// Finding a contact's waiting messages reads the index alone, however long the history,
    /// and sorts nothing, however many wait.
    #[test]
    fn a_contacts_waiting_messages_are_found_without_reading_its_history() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {WINDOW_SQL}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params![[0u8; 32].as_slice(), 0, 1, 2], |r| {
                r.get(3)
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            plan,
            ["SEARCH messages USING COVERING INDEX messages_outbox \
              (direction=? AND state=? AND peer=? AND seq>?)"]
        );
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", outbox_peers_sql()))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map([], |r| r.get(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            plan[0].starts_with("SEARCH messages USING COVERING INDEX messages_outbox"),
            "{plan:?}"
        );
    }
}

#[cfg(test)]
mod state_machine_tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// What the node does to an outgoing message, and a user's cancel.
    #[derive(Debug, Clone)]
    enum Op {
        /// A new message to peer `0..3`, expiring at the time given, if any.
        Queue(u8, Option<u64>),
        /// It left (`mark_sent`: only a queued message becomes sent).
        Left(usize),
        /// A mailbox took it (only a queued or sent one becomes held).
        Held(usize),
        /// Its receipt came (anything not delivered yet becomes delivered).
        Receipt(usize),
        /// Time passed to this point (`expire_outgoing`).
        Expire(u64),
        /// The user cancelled it, or an id nobody sent.
        Cancel(usize),
        /// The user cancelled everything waiting for peer `0..3`.
        CancelTo(u8),
        /// The node cancelled those of these messages waiting for peer `0..3` (the ids it
        /// claimed; some may be another peer's, repeated, or unknown).
        CancelSome(u8, Vec<usize>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, proptest::option::of(0u64..50)).prop_map(|(p, e)| Op::Queue(p, e)),
            2 => (0usize..40).prop_map(Op::Left),
            1 => (0usize..40).prop_map(Op::Held),
            2 => (0usize..40).prop_map(Op::Receipt),
            1 => (0u64..60).prop_map(Op::Expire),
            2 => (0usize..45).prop_map(Op::Cancel),
            1 => (0u8..3).prop_map(Op::CancelTo),
            1 => (0u8..3, proptest::collection::vec(0usize..45, 0..6))
                .prop_map(|(p, ids)| Op::CancelSome(p, ids)),
        ]
    }

    fn pending(s: MessageState) -> bool {
        matches!(
            s,
            MessageState::Queued | MessageState::Sent | MessageState::Held
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The outbox is exactly the queued, sent and held messages; cancelling takes a waiting
        /// message out for good (only a receipt changes it again) and refuses anything else.
        #[test]
        fn cancelling_takes_exactly_the_waiting_messages_out_of_the_outbox(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            let store = Store::open_in_memory(&[1; 32]).unwrap();
            let peers: Vec<NodeId> = (0..3u8).map(|i| NodeId::from_bytes([i + 1; 32])).collect();
            // In sending order: id, peer, state, expiry.
            let mut model: Vec<(MessageId, NodeId, MessageState, Option<u64>)> = Vec::new();
            let mut clock = 0u64;
            for op in ops {
                clock += 1;
                match op {
                    Op::Queue(p, expires) => {
                        let id = MessageId::from_bytes([model.len() as u8 + 1; 16]);
                        let peer = peers[usize::from(p)];
                        let m = NewMessage {
                            id: &id,
                            peer: &peer,
                            direction: Direction::Outgoing,
                            body: "m",
                            sent_at_ms: clock,
                            state: MessageState::Queued,
                            expires_at_ms: expires,
                        };
                        prop_assert!(store.insert_message(&m, clock).unwrap());
                        model.push((id, peer, MessageState::Queued, expires));
                    }
                    Op::Left(i) => {
                        let Some((id, peer, state, _)) = model.get_mut(i) else { continue };
                        let left = *state == MessageState::Queued;
                        prop_assert_eq!(store.mark_sent(peer, id, clock).unwrap(), left);
                        if left {
                            *state = MessageState::Sent;
                        }
                    }
                    Op::Receipt(i) => {
                        let Some((id, peer, state, _)) = model.get_mut(i) else { continue };
                        let changes = *state != MessageState::Delivered;
                        prop_assert_eq!(store.mark_delivered(peer, id, clock).unwrap(), changes);
                        *state = MessageState::Delivered;
                    }
                    Op::Held(i) => {
                        let Some((id, peer, state, _)) = model.get_mut(i) else { continue };
                        let (from, to) = (
                            [MessageState::Queued, MessageState::Sent],
                            MessageState::Held,
                        );
                        let now = store.message_state(peer, id).unwrap().unwrap().1;
                        if from.contains(&now) {
                            store.set_message_state(peer, id, to, clock).unwrap();
                            *state = to;
                        }
                    }
                    Op::Expire(t) => {
                        let expired = store.expire_outgoing(t).unwrap();
                        let mut expected = Vec::new();
                        for (id, peer, state, expires) in &mut model {
                            if pending(*state) && expires.is_some_and(|e| e <= t) {
                                *state = MessageState::Expired;
                                expected.push((*peer, *id));
                            }
                        }
                        prop_assert_eq!(expired, expected);
                    }
                    Op::Cancel(i) => {
                        let id = model.get(i).map_or(MessageId::from_bytes([0xee; 16]), |m| m.0);
                        let outcome = store.cancel_outgoing(&id, clock).unwrap();
                        match model.get_mut(i) {
                            None => prop_assert_eq!(outcome, Cancel::Unknown),
                            Some((_, _, state, _)) if pending(*state) => {
                                let Cancel::Cancelled { was, message } = outcome else {
                                    return Err(TestCaseError::fail("a waiting message was not cancelled"));
                                };
                                prop_assert_eq!(was, *state);
                                prop_assert_eq!(message.state, MessageState::Cancelled);
                                *state = MessageState::Cancelled;
                            }
                            Some((_, _, state, _)) => {
                                let Cancel::NotWaiting(m) = outcome else {
                                    return Err(TestCaseError::fail("a message not waiting was cancelled"));
                                };
                                prop_assert_eq!(m.state, *state);
                            }
                        }
                    }
                    Op::CancelTo(p) => {
                        let peer = peers[usize::from(p)];
                        let ids = store.cancel_outgoing_to(&peer, clock).unwrap();
                        let mut expected = Vec::new();
                        for (id, to, state, _) in &mut model {
                            if *to == peer && pending(*state) {
                                *state = MessageState::Cancelled;
                                expected.push(*id);
                            }
                        }
                        prop_assert_eq!(ids, expected);
                    }
                    Op::CancelSome(p, which) => {
                        let peer = peers[usize::from(p)];
                        let ids: Vec<MessageId> = which
                            .iter()
                            .map(|&i| model.get(i).map_or(MessageId::from_bytes([0xee; 16]), |m| m.0))
                            .collect();
                        let cancelled = store.cancel_outgoing_of(&peer, &ids, clock).unwrap();
                        let mut expected = Vec::new();
                        for &i in &which {
                            if let Some((id, to, state, _)) = model.get_mut(i) {
                                if *to == peer && pending(*state) {
                                    *state = MessageState::Cancelled;
                                    expected.push(*id);
                                }
                            }
                        }
                        prop_assert_eq!(cancelled, expected);
                    }
                }
                // The outbox, as listed and as the outbox worker sees it, is the model's.
                let waiting: Vec<MessageId> = store.waiting(None, 0, 1000).unwrap().iter().map(|m| m.id).collect();
                let expected: Vec<MessageId> = model.iter().filter(|m| pending(m.2)).map(|m| m.0).collect();
                prop_assert_eq!(waiting, expected);
                let mut counts: BTreeMap<[u8; 32], u64> = BTreeMap::new();
                for m in model.iter().filter(|m| pending(m.2)) {
                    *counts.entry(*m.1.as_bytes()).or_default() += 1;
                }
                let peers_seen: BTreeMap<[u8; 32], u64> = store
                    .outbox_peers()
                    .unwrap()
                    .iter()
                    .map(|p| (*p.peer.as_bytes(), p.waiting))
                    .collect();
                prop_assert_eq!(peers_seen, counts);
                for peer in &peers {
                    let expected: Vec<MessageId> = model
                        .iter()
                        .filter(|m| m.1 == *peer && pending(m.2))
                        .map(|m| m.0)
                        .collect();
                    prop_assert_eq!(store.waiting_ids(peer).unwrap(), expected);
                }
                for (id, peer, state, _) in &model {
                    prop_assert_eq!(store.message_state(peer, id).unwrap().unwrap().1, *state);
                }
            }
        }
    }
}
