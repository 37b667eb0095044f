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
];

/// The schema version this program writes.
pub const CURRENT: u32 = MIGRATIONS.len() as u32;

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
            conn.execute_batch(&format!("PRAGMA user_version = {};", CURRENT + 1))
                .unwrap();
        }
        assert!(matches!(
            crate::Store::open(&path, &[1; 32]),
            Err(StoreError::NewerSchema { .. })
        ));
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
