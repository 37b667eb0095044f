//! Versioned schema migrations. `PRAGMA user_version` holds the version; each step runs in a
//! transaction together with the version bump, so a crash leaves the database at a whole version.

use rusqlite::Connection;

use crate::StoreError;

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: contacts, profile, sessions, message history.
    "CREATE TABLE contacts (
        node_id     BLOB PRIMARY KEY CHECK (length(node_id) = 32),
        public_key  BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
        name        TEXT NOT NULL UNIQUE,
        addresses   TEXT NOT NULL DEFAULT '[]',
        verified    INTEGER NOT NULL DEFAULT 0,
        verified_at INTEGER,
        added_at    INTEGER NOT NULL
     );
     CREATE TABLE profile (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
     );
     CREATE TABLE sessions (
        peer       BLOB PRIMARY KEY CHECK (length(peer) = 32),
        pickle     BLOB NOT NULL,
        updated_at INTEGER NOT NULL
     );
     CREATE TABLE messages (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        id             BLOB NOT NULL CHECK (length(id) = 16),
        peer           BLOB NOT NULL CHECK (length(peer) = 32),
        direction      INTEGER NOT NULL CHECK (direction IN (0, 1)),
        body           TEXT NOT NULL,
        sent_at_ms     INTEGER NOT NULL,
        state          TEXT NOT NULL,
        state_at_ms    INTEGER NOT NULL
     );
     -- Message ids are chosen by their sender: unique per conversation, not globally, so that
     -- one contact cannot pre-empt another's message by reusing its id.
     CREATE UNIQUE INDEX messages_by_peer_id ON messages (peer, id);
     CREATE INDEX messages_by_peer ON messages (peer, seq);",
    // 2: our prekey store (one row: the sealed prekey pickle).
    "CREATE TABLE prekeys (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        sealed     BLOB NOT NULL,
        updated_at INTEGER NOT NULL
     );",
    // 3: message expiry, and the mailbox items this node holds for others (store-and-forward).
    "ALTER TABLE messages ADD COLUMN expires_at_ms INTEGER;
     ALTER TABLE messages ADD COLUMN sealed BLOB;
     CREATE INDEX messages_outbox ON messages (direction, state, seq);
     CREATE TABLE mailbox_held (
        recipient     BLOB NOT NULL CHECK (length(recipient) = 32),
        message_id    BLOB NOT NULL CHECK (length(message_id) = 16),
        sender        BLOB NOT NULL CHECK (length(sender) = 32),
        expires_at_ms INTEGER NOT NULL,
        item          BLOB NOT NULL,
        PRIMARY KEY (recipient, message_id)
     );
     CREATE INDEX mailbox_held_by_expiry ON mailbox_held (expires_at_ms);",
    // 4: the delivery state as a one-byte code (2 queued, 3 sent, 4 held, 5 delivered,
    // 6 expired, 7 received), before the body. A change of state then leaves the row's size
    // as it was, and SQLite overwrites it in place: it rewrites only the page holding the
    // state, not a long body's overflow pages. The table is rebuilt (SQLite cannot change a
    // column's type); sequence numbers and the AUTOINCREMENT counter are kept.
    "CREATE TABLE messages_v4 (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        id             BLOB NOT NULL CHECK (length(id) = 16),
        peer           BLOB NOT NULL CHECK (length(peer) = 32),
        direction      INTEGER NOT NULL CHECK (direction IN (0, 1)),
        state          INTEGER NOT NULL CHECK (state BETWEEN 2 AND 7),
        state_at_ms    INTEGER NOT NULL,
        sent_at_ms     INTEGER NOT NULL,
        expires_at_ms  INTEGER,
        body           TEXT NOT NULL,
        sealed         BLOB
     );
     INSERT INTO messages_v4
        (seq, id, peer, direction, state, state_at_ms, sent_at_ms, expires_at_ms, body, sealed)
        SELECT seq, id, peer, direction,
               CASE state WHEN 'queued' THEN 2 WHEN 'sent' THEN 3 WHEN 'held' THEN 4
                          WHEN 'delivered' THEN 5 WHEN 'expired' THEN 6 WHEN 'received' THEN 7
               END,
               state_at_ms, sent_at_ms, expires_at_ms, body, sealed
        FROM messages ORDER BY seq;
     INSERT INTO sqlite_sequence (name, seq)
        SELECT 'messages_v4', seq FROM sqlite_sequence WHERE name = 'messages'
        AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages_v4');
     UPDATE sqlite_sequence
        SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'messages'))
        WHERE name = 'messages_v4';
     DROP TABLE messages;
     ALTER TABLE messages_v4 RENAME TO messages;
     CREATE UNIQUE INDEX messages_by_peer_id ON messages (peer, id);
     CREATE INDEX messages_by_peer ON messages (peer, seq);
     CREATE INDEX messages_outbox ON messages (direction, state, seq);",
    // 5: the outbox index orders by peer before sequence, so a contact's waiting messages are
    // found in the index alone, without reading the rest of its history, and carries the expiry,
    // so a pass over the outbox reads no row; it still counts the messages of each direction and
    // state for the status.
    "DROP INDEX messages_outbox;
     CREATE INDEX messages_outbox ON messages (direction, state, peer, seq, expires_at_ms);",
    // 6: a message its sender cancelled (state 8). The check on the state column changes, so
    // the table is rebuilt as in version 4, keeping sequence numbers and the AUTOINCREMENT
    // counter.
    "CREATE TABLE messages_v6 (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        id             BLOB NOT NULL CHECK (length(id) = 16),
        peer           BLOB NOT NULL CHECK (length(peer) = 32),
        direction      INTEGER NOT NULL CHECK (direction IN (0, 1)),
        state          INTEGER NOT NULL CHECK (state BETWEEN 2 AND 8),
        state_at_ms    INTEGER NOT NULL,
        sent_at_ms     INTEGER NOT NULL,
        expires_at_ms  INTEGER,
        body           TEXT NOT NULL,
        sealed         BLOB
     );
     INSERT INTO messages_v6
        (seq, id, peer, direction, state, state_at_ms, sent_at_ms, expires_at_ms, body, sealed)
        SELECT seq, id, peer, direction, state, state_at_ms, sent_at_ms, expires_at_ms, body,
               sealed
        FROM messages ORDER BY seq;
     INSERT INTO sqlite_sequence (name, seq)
        SELECT 'messages_v6', seq FROM sqlite_sequence WHERE name = 'messages'
        AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages_v6');
     UPDATE sqlite_sequence
        SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'messages'))
        WHERE name = 'messages_v6';
     DROP TABLE messages;
     ALTER TABLE messages_v6 RENAME TO messages;
     CREATE UNIQUE INDEX messages_by_peer_id ON messages (peer, id);
     CREATE INDEX messages_by_peer ON messages (peer, seq);
     CREATE INDEX messages_outbox ON messages (direction, state, peer, seq, expires_at_ms);",
    // 7: outgoing messages still waiting since before version 3 have no expiry: they were
    // retried for good, and each deposit of one in a mailbox carried another expiry. They get
    // the longest a message may have, 30 days, from this upgrade.
    "UPDATE messages
        SET expires_at_ms =
            CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + 2592000000
        WHERE direction = 0 AND state IN (2, 3, 4) AND expires_at_ms IS NULL;",
    // 8: receipts owed for messages taken from the mailbox, until one reaches their sender.
    "CREATE TABLE IF NOT EXISTS receipts_owed (
        peer      BLOB NOT NULL CHECK (length(peer) = 32),
        id        BLOB NOT NULL CHECK (length(id) = 16),
        until_ms  INTEGER NOT NULL,
        PRIMARY KEY (peer, id)
     ) WITHOUT ROWID;",
    // 9: items of our own mailbox from nodes that are not contacts, kept until they are, with
    // the signed prekey their X3DH handshake names (kept while they wait).
    "CREATE TABLE IF NOT EXISTS mailbox_strangers (
        sender           BLOB NOT NULL CHECK (length(sender) = 32),
        message_id       BLOB NOT NULL CHECK (length(message_id) = 16),
        expires_at_ms    INTEGER NOT NULL,
        signed_prekey_id INTEGER,
        item             BLOB NOT NULL,
        PRIMARY KEY (sender, message_id)
     ) WITHOUT ROWID;
     CREATE INDEX IF NOT EXISTS mailbox_strangers_expiry ON mailbox_strangers (expires_at_ms);",
];

/// The schema version this program writes.
pub const CURRENT: u32 = MIGRATIONS.len() as u32;

/// Refuses a database that is not at [`CURRENT`], without changing it.
pub fn check(conn: &Connection) -> Result<(), StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match found.cmp(&CURRENT) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StoreError::OlderSchema {
            found,
            known: CURRENT,
        }),
        std::cmp::Ordering::Greater => Err(StoreError::NewerSchema {
            found,
            known: CURRENT,
        }),
    }
}

/// Brings the database to [`CURRENT`]; refuses a newer one.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > CURRENT {
        return Err(StoreError::NewerSchema {
            found,
            known: CURRENT,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {};", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(crate::Store::open(&path, &[1; 32]).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode([1u8; 32])))
                .unwrap();
            conn.execute_batch(crate::PageFormat::NEW.pragmas())
                .unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {};", CURRENT + 1))
                .unwrap();
        }
        assert!(matches!(
            crate::Store::open(&path, &[1; 32]),
            Err(StoreError::NewerSchema { .. })
        ));
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    /// `expiry` is 30 days after `from_ms` (give or take the time the test took).
    fn assert_thirty_days_from(expiry: Option<u64>, from_ms: u64) {
        const THIRTY_DAYS_MS: u64 = 30 * 24 * 60 * 60 * 1000;
        let expiry = expiry.expect("no expiry");
        let late = expiry.saturating_sub(from_ms + THIRTY_DAYS_MS);
        assert!(
            expiry + 1000 >= from_ms + THIRTY_DAYS_MS && late < 60_000,
            "{expiry} is not 30 days after {from_ms}"
        );
    }

    #[test]
    fn waiting_messages_without_an_expiry_get_thirty_days_from_the_upgrade() {
        use crate::{Direction, HistoryQuery, MessageState, NewMessage};
        use dp2ptcs_types::{MessageId, NodeId};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let key = [7u8; 32];
        let peer = NodeId::from_bytes([9; 32]);
        let rows = [
            (Direction::Outgoing, MessageState::Queued, None),
            (Direction::Outgoing, MessageState::Held, None),
            (Direction::Outgoing, MessageState::Queued, Some(500)),
            (Direction::Outgoing, MessageState::Delivered, None),
            (Direction::Incoming, MessageState::Received, None),
        ];
        {
            let store = crate::Store::open(&path, &key).unwrap();
            for (i, (direction, state, expires_at_ms)) in rows.into_iter().enumerate() {
                let id = MessageId::from_bytes([i as u8; 16]);
                let message = NewMessage {
                    id: &id,
                    peer: &peer,
                    direction,
                    body: "b",
                    sent_at_ms: 1,
                    state,
                    expires_at_ms,
                };
                store.insert_message(&message, 1).unwrap();
            }
        }
        {
            // Back to version 6, the one before (what later versions added is undone).
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))
                .unwrap();
            conn.execute_batch(crate::PageFormat::NEW.pragmas())
                .unwrap();
            conn.execute_batch("DROP TABLE receipts_owed; PRAGMA user_version = 6;")
                .unwrap();
        }
        let upgraded_ms = now_ms();
        let store = crate::Store::open(&path, &key).unwrap();
        assert_eq!(store.schema_version().unwrap(), CURRENT);
        let all = store.history(&HistoryQuery::default()).unwrap();
        assert_eq!(all.len(), rows.len());
        assert_thirty_days_from(all[0].expires_at_ms, upgraded_ms);
        assert_thirty_days_from(all[1].expires_at_ms, upgraded_ms);
        assert_eq!(all[2].expires_at_ms, Some(500));
        assert_eq!(all[3].expires_at_ms, None);
        assert_eq!(all[4].expires_at_ms, None);
    }

    #[test]
    fn the_table_rebuilds_keep_every_message_its_state_and_its_sequence_number() {
        use crate::{Direction, HistoryQuery, MessageState, NewMessage};
        use dp2ptcs_types::{MessageId, NodeId};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let key = [6u8; 32];
        let peer = NodeId::from_bytes([8; 32]);
        let states = ["queued", "sent", "held", "delivered", "expired", "received"];
        {
            // A database written by the version before, with a message in every state.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))
                .unwrap();
            for (i, sql) in MIGRATIONS[..3].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute_batch(&format!("PRAGMA user_version = {};", i + 1))
                    .unwrap();
            }
            for (i, state) in states.iter().enumerate() {
                conn.execute(
                    "INSERT INTO messages (id, peer, direction, body, sent_at_ms, state,
                        state_at_ms, expires_at_ms, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    rusqlite::params![
                        [i as u8; 16].as_slice(),
                        peer.as_bytes().as_slice(),
                        i64::from(*state == "received"),
                        format!("body {i}"),
                        100 + i as i64,
                        state,
                        200 + i as i64,
                        (i == 0).then_some(300i64),
                        (i == 2).then_some(vec![9u8; 40]),
                    ],
                )
                .unwrap();
            }
            // The last one was removed: its sequence number must not be given out again.
            conn.execute("INSERT INTO messages (id, peer, direction, body, sent_at_ms, state, state_at_ms) VALUES (x'ffffffffffffffffffffffffffffffff', ?1, 0, 'gone', 0, 'queued', 0)", [peer.as_bytes().as_slice()]).unwrap();
            conn.execute("DELETE FROM messages WHERE body = 'gone'", [])
                .unwrap();
        }
        let upgraded_ms = now_ms();
        let store = crate::Store::open(&path, &key).unwrap();
        assert_eq!(store.schema_version().unwrap(), CURRENT);
        let all = store.history(&HistoryQuery::default()).unwrap();
        assert_eq!(all.len(), states.len());
        for (i, m) in all.iter().enumerate() {
            assert_eq!(m.seq, i as i64 + 1);
            assert_eq!(m.id, MessageId::from_bytes([i as u8; 16]));
            assert_eq!(m.state.to_string(), states[i]);
            assert_eq!(m.body, format!("body {i}"));
            assert_eq!(
                (m.sent_at_ms, m.state_at_ms),
                (100 + i as u64, 200 + i as u64)
            );
            // Those still waiting get an expiry, 30 days from the upgrade.
            match i {
                0 => assert_eq!(m.expires_at_ms, Some(300)),
                1 | 2 => assert_thirty_days_from(m.expires_at_ms, upgraded_ms),
                _ => assert_eq!(m.expires_at_ms, None),
            }
        }
        assert_eq!(
            store
                .sealed(&peer, &MessageId::from_bytes([2; 16]))
                .unwrap(),
            Some(vec![9u8; 40])
        );
        let outbox: Vec<MessageState> = store
            .outbox_window(&peer, crate::Undelivered::All, 0, 10, usize::MAX)
            .unwrap()
            .iter()
            .map(|m| m.state)
            .collect();
        assert_eq!(
            outbox,
            [MessageState::Queued, MessageState::Sent, MessageState::Held]
        );
        let new = MessageId::from_bytes([0xaa; 16]);
        store
            .insert_message(
                &NewMessage {
                    id: &new,
                    peer: &peer,
                    direction: Direction::Outgoing,
                    body: "after",
                    sent_at_ms: 1,
                    state: MessageState::Queued,
                    expires_at_ms: None,
                },
                1,
            )
            .unwrap();
        assert_eq!(store.message(&peer, &new).unwrap().unwrap().seq, 8);
        // The state version 6 adds is allowed.
        assert!(matches!(
            store.cancel_outgoing(&new, 2).unwrap(),
            crate::Cancel::Cancelled { .. }
        ));
    }

    #[test]
    fn an_older_database_opened_without_migrating_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let key = [2u8; 32];
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))
                .unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch("PRAGMA user_version = 1;").unwrap();
        }
        assert!(matches!(
            crate::Store::open_without_migrating(&path, &key),
            Err(StoreError::OlderSchema {
                found: 1,
                known: CURRENT
            })
        ));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))
            .unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
        drop(conn);
        // The node migrates it when it starts; then both ways of opening agree.
        drop(crate::Store::open(&path, &key).unwrap());
        crate::Store::open_without_migrating(&path, &key).unwrap();
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let store = crate::Store::open_in_memory(&[1; 32]).unwrap();
        let mut conn = store.conn;
        migrate(&mut conn).unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, CURRENT);
    }
}
