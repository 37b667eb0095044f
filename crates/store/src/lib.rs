//! Persistence for DP2PTCS: one SQLCipher database per node, keyed by the database key from
//! `node.key`.
//!
//! - [`Store::open`] applies the raw 32-byte key (no passphrase derivation inside SQLCipher: the
//!   key is already random) and refuses a wrong key with [`StoreError::WrongKey`].
//! - Pages are encrypted with AES-256-CBC and authenticated with HMAC-SHA256 in a database
//!   created now, HMAC-SHA512 (SQLCipher 4's default) in one created before; both open
//!   ([`PageFormat`]).
//! - Versioned schema migrations run at open ([`migrations`]), each in a transaction.
//! - Tables: contacts, our profile, ratchet sessions (sealed pickles, opaque here), message
//!   history with delivery state, receipts owed for messages taken from the mailbox, items
//!   from nodes not (yet) contacts, our prekey store (one sealed pickle, opaque here).
//! - Durability: WAL with `synchronous = FULL`, so a write that returned is on disk. A session is
//!   saved with [`Store::save_session`] *before* any ciphertext made with it leaves the node.
//! - [`Store::transaction`] runs several writes as one transaction: one commit, one sync, all or
//!   nothing.
//!
//! Without the key, the file is indistinguishable from random bytes: no name, node id or message
//! text appears in it (tested).
//!
//! The store does file IO and nothing else: no network, no clock (callers pass times).

mod contacts;
mod error;
mod mailbox;
mod messages;
pub mod migrations;
mod prekeys;
mod receipts;
mod sessions;
mod strangers;

use std::fmt;
use std::path::Path;

use rusqlite::{Connection, Params, Row};
use zeroize::Zeroizing;

pub use contacts::{AddOutcome, ContactRecord};
pub use error::StoreError;
pub use mailbox::HeldItem;
pub use messages::{
    Cancel, Direction, HistoryQuery, MessageRecord, MessageState, NewMessage, OutboxPeer,
    Undelivered,
};
pub use strangers::{KeptItem, StrangerLimits};

/// The database file name in the data directory.
pub const DB_FILE: &str = "node.db";
/// How long a write waits for another connection's transaction before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Prepared statements kept for reuse: every statement the store runs fits, so none is parsed
/// again on the message path.
const STATEMENT_CACHE: usize = 64;
/// The most memory the page cache may take (it grows as pages are read). Pages that fall out of
/// it must be read, decrypted and authenticated again (a receipt, for one, finds its message
/// through the `(peer, id)` index, anywhere in the history).
const PAGE_CACHE_KIB: u32 = 32 * 1024;

/// How SQLCipher protects each page of a database. Both encrypt a page with AES-256-CBC under
/// the database key and a random IV, and authenticate it with an HMAC (keyed from the database
/// key and the file's salt); they differ in the hash. SQLCipher does not record which one a file
/// uses: [`Store::open`] tries both, the first one that authenticates page 1 wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFormat {
    /// HMAC-SHA256 (and PBKDF2-HMAC-SHA256 for the HMAC key): every database created now. Every
    /// commit encrypts and authenticates each page it wrote, and SHA-256 costs about half of
    /// SHA-512 on CPUs with SHA extensions, which is most of that work.
    HmacSha256,
    /// HMAC-SHA512 (and PBKDF2-HMAC-SHA512), SQLCipher 4's default: databases created by
    /// DP2PTCS before, which keep it.
    HmacSha512,
}

impl PageFormat {
    /// The format new databases get.
    pub const NEW: Self = Self::HmacSha256;

    /// The SQLCipher settings, issued after the key and before the first read.
    fn pragmas(self) -> &'static str {
        match self {
            Self::HmacSha256 => {
                "PRAGMA cipher_hmac_algorithm = HMAC_SHA256;
                 PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA256;"
            }
            Self::HmacSha512 => {
                "PRAGMA cipher_hmac_algorithm = HMAC_SHA512;
                 PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA512;"
            }
        }
    }
}

/// Keys `conn` with `key` in `format` and reads from it: [`StoreError::WrongKey`] if page 1 does
/// not authenticate (a wrong key, another format, or not a DP2PTCS database).
fn unlock(conn: Connection, key: &[u8; 32], format: PageFormat) -> Result<Connection, StoreError> {
    // Raw key form: x'<64 hex digits>' uses the key as is, without PBKDF2.
    let pragma = Zeroizing::new(format!("PRAGMA key = \"x'{}'\";", hex::encode(key)));
    conn.execute_batch(&pragma)?;
    // SQLCipher would print its own error lines to stderr on a wrong key or the other page
    // format ("hmac check failed"); errors are returned as values instead. Only after the key:
    // the first key of the process (again after every connection closed) resets the level to
    // its default.
    conn.execute_batch("PRAGMA cipher_log_level = NONE;").ok();
    let cipher: Option<String> = conn
        .query_row("PRAGMA cipher_version", [], |r| r.get(0))
        .ok();
    if cipher.is_none() {
        return Err(StoreError::NotEncrypted);
    }
    conn.execute_batch(format.pragmas())?;
    // The daemon and a command run beside it (say `contact add`) may write at the same time:
    // wait for the other's transaction instead of failing at once (from the first read on).
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The first read fails when page 1 does not authenticate ("file is not a database"); any
    // other failure (busy, I/O) is reported as it is.
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(conn),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Err(StoreError::WrongKey)
        }
        Err(e) => Err(e.into()),
    }
}

/// An open, unlocked database.
pub struct Store {
    conn: Connection,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` with `key`, and migrates it to the
    /// current schema.
    pub fn open(path: &Path, key: &[u8; 32]) -> Result<Self, StoreError> {
        Self::init(Self::unlock_file(path, key)?, true)
    }

    /// Opens the existing database at `path` with `key` as it is: one at an older schema
    /// version is refused with [`StoreError::OlderSchema`] instead of migrated. For a program
    /// that opens the database beside a running node, which may be an older program that still
    /// writes the older schema.
    pub fn open_without_migrating(path: &Path, key: &[u8; 32]) -> Result<Self, StoreError> {
        Self::init(Self::unlock_file(path, key)?, false)
    }

    /// An in-memory encrypted database, for tests.
    pub fn open_in_memory(key: &[u8; 32]) -> Result<Self, StoreError> {
        let conn = unlock(Connection::open_in_memory()?, key, PageFormat::NEW)?;
        Self::init(conn, true)
    }

    /// A connection to the database at `path` that `key` opens, in whichever [`PageFormat`] the
    /// file has: each is tried on a connection of its own (SQLCipher's settings cannot change
    /// after a read), [`PageFormat::NEW`] first. An empty or missing file becomes a new database
    /// in that format.
    fn unlock_file(path: &Path, key: &[u8; 32]) -> Result<Connection, StoreError> {
        for format in [PageFormat::NEW, PageFormat::HmacSha512] {
            match unlock(Connection::open(path)?, key, format) {
                Err(StoreError::WrongKey) => continue,
                unlocked => return unlocked,
            }
        }
        Err(StoreError::WrongKey)
    }

    fn init(conn: Connection, migrate: bool) -> Result<Self, StoreError> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;
             PRAGMA cache_size = -{PAGE_CACHE_KIB};"
        ))?;
        let mut store = Self { conn };
        if migrate {
            migrations::migrate(&mut store.conn)?;
        } else {
            migrations::check(&store.conn)?;
        }
        Ok(store)
    }

    /// How this database's pages are authenticated.
    pub fn page_format(&self) -> Result<PageFormat, StoreError> {
        let hmac: String = self
            .conn
            .query_row("PRAGMA cipher_hmac_algorithm", [], |r| r.get(0))?;
        match hmac.as_str() {
            "HMAC_SHA256" => Ok(PageFormat::HmacSha256),
            "HMAC_SHA512" => Ok(PageFormat::HmacSha512),
            other => Err(StoreError::Corrupt(format!("unexpected page HMAC {other}"))),
        }
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Runs `f` as one transaction: every write `f` makes through the given store is committed
    /// together (one durable commit, one sync) if `f` returns `Ok`, and none of them if it returns
    /// `Err` (or panics). Returns only once the commit is durable (`synchronous = FULL`).
    ///
    /// The transaction takes the write lock at once (`BEGIN IMMEDIATE`). Transactions do not
    /// nest: calling [`Store::transaction`] again inside `f` fails.
    pub fn transaction<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        self.within("BEGIN IMMEDIATE", f)
    }

    /// Runs `f`, which only reads, as one read transaction: everything it reads comes from one
    /// snapshot of the database, and the locks a read takes are taken once for all of `f`'s
    /// statements instead of once for each. Like [`Store::transaction`], it does not nest. `f`
    /// must not write: a write would have to upgrade the snapshot, and fails at once (without
    /// waiting for the busy timeout) if another connection wrote since; use
    /// [`Store::transaction`] to write.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        self.within("BEGIN DEFERRED", f)
    }

    /// Runs `f` between `begin` and `COMMIT`, rolled back unless committed.
    fn within<T, E: From<StoreError>>(
        &self,
        begin: &str,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        // Inside another transaction this fails ("cannot start a transaction within a
        // transaction").
        self.exec(begin, []).map_err(StoreError::from)?;
        // Rolled back unless committed, also when `f` or the commit fails or `f` panics.
        let open = Open(&self.conn);
        let out = f(self)?;
        self.exec("COMMIT", []).map_err(StoreError::from)?;
        std::mem::forget(open);
        Ok(out)
    }

    /// Runs `sql` from the statement cache.
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// Runs `sql` from the statement cache and maps its first row with `f`.
    fn query_one<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs `f` inside a savepoint of the transaction `f`'s caller opened with
    /// [`Store::transaction`]: if `f` returns `Err` its writes are undone and the rest of the
    /// transaction is kept. If undoing fails, the error is a [`StoreError`] (for the whole
    /// transaction, which should then be abandoned).
    pub fn savepoint<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        self.exec("SAVEPOINT step", [])?;
        match f(self) {
            Ok(t) => {
                self.exec("RELEASE step", [])?;
                Ok(Ok(t))
            }
            Err(e) => {
                self.exec("ROLLBACK TO step", [])?;
                self.exec("RELEASE step", [])?;
                Ok(Err(e))
            }
        }
    }

    /// Flushes the write-ahead log into the database file (at shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    /// Test support: while `on`, every insert into the message history on this connection
    /// fails, as a full disk would make it (a temporary trigger, which the database file never
    /// holds and which ends with the connection). A test makes the recording of a message fail
    /// after the steps before it succeeded, with the real store.
    #[doc(hidden)]
    pub fn fail_message_inserts(&self, on: bool) -> Result<(), StoreError> {
        self.conn.execute_batch(if on {
            "CREATE TEMP TRIGGER IF NOT EXISTS fail_message_inserts BEFORE INSERT ON messages \
             BEGIN SELECT RAISE(ABORT, 'message inserts fail (test)'); END;"
        } else {
            "DROP TRIGGER IF EXISTS temp.fail_message_inserts;"
        })?;
        Ok(())
    }
}

/// An open transaction of [`Store::transaction`]: rolled back when dropped.
struct Open<'a>(&'a Connection);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        // Fails only if there is nothing to roll back (SQLite already did, on some errors).
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_key_is_refused_and_right_key_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::CURRENT);
        drop(store);
        assert!(matches!(
            Store::open(&path, &[2; 32]),
            Err(StoreError::WrongKey)
        ));
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(store.schema_version().unwrap(), migrations::CURRENT);
    }

    /// Two stores in one process (two nodes in a test or the network benchmark, a program
    /// embedding several) must not share one page cache: in SQLite's shared pool, once it is
    /// full, each page is freed as soon as it is released and the roots of every b-tree are
    /// read and decrypted again on nearly every statement (BENCHMARKS.md, "Node network,
    /// 2026-11-25"). The workspace's `.cargo/config.toml` builds SQLite without the option that
    /// shares it.
    #[test]
    fn each_connection_has_a_page_cache_of_its_own() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        let mut stmt = store.conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o.starts_with("THREADSAFE=")),
            "PRAGMA compile_options answered: {options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "SQLite was built with ENABLE_MEMORY_MANAGEMENT (is LIBSQLITE3_FLAGS from \
             .cargo/config.toml set?): {options:?}"
        );
    }

    /// A raw connection keyed as SQLCipher 4 does by default (HMAC-SHA512), as DP2PTCS did
    /// before [`PageFormat::HmacSha256`].
    fn legacy_connection(path: &Path, key: &[u8; 32]) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))
            .unwrap();
        conn
    }

    #[test]
    fn a_new_database_authenticates_pages_with_sha256_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(store.page_format().unwrap(), PageFormat::HmacSha256);
        let peer = dp2ptcs_types::NodeId::from_bytes([7; 32]);
        store.save_session(&peer, b"state", 1).unwrap();
        drop(store);
        // The file really is in the new format: SQLCipher's defaults do not open it.
        let legacy = legacy_connection(&path, &[1; 32]);
        assert!(legacy
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r
                .get::<_, i64>(0))
            .is_err());
        drop(legacy);
        for open in [Store::open, Store::open_without_migrating] {
            let store = open(&path, &[1; 32]).unwrap();
            assert_eq!(store.page_format().unwrap(), PageFormat::HmacSha256);
            assert_eq!(
                store.load_session(&peer).unwrap().as_deref(),
                Some(&b"state"[..])
            );
        }
        assert!(matches!(
            Store::open(&path, &[2; 32]),
            Err(StoreError::WrongKey)
        ));
    }

    #[test]
    fn a_database_made_before_keeps_sha512_and_everything_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        // Written as the program did before: SQLCipher's default page format.
        let legacy = legacy_connection(&path, &[1; 32]);
        let mut legacy = legacy;
        migrations::migrate(&mut legacy).unwrap();
        drop(legacy);
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(store.page_format().unwrap(), PageFormat::HmacSha512);
        // The attempt in the other format failed silently: SQLCipher logs nothing.
        let level: String = store
            .conn
            .query_row("PRAGMA cipher_log_level", [], |r| r.get(0))
            .unwrap();
        assert_eq!(level, "NONE");
        let peer = dp2ptcs_types::NodeId::from_bytes([8; 32]);
        store.save_session(&peer, b"kept", 1).unwrap();
        drop(store);
        // Still in its format (the old program could go on reading it), and it reopens.
        let legacy = legacy_connection(&path, &[1; 32]);
        let pickle: Vec<u8> = legacy
            .query_row("SELECT pickle FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pickle, b"kept");
        drop(legacy);
        let store = Store::open_without_migrating(&path, &[1; 32]).unwrap();
        assert_eq!(store.page_format().unwrap(), PageFormat::HmacSha512);
        assert_eq!(
            store.load_session(&peer).unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        drop(store);
        assert!(matches!(
            Store::open(&path, &[2; 32]),
            Err(StoreError::WrongKey)
        ));
    }

    /// SQLCipher prints nothing when the format tried first is not the file's. Run in a fresh
    /// process: SQLCipher sets its default log level at the first key of the process.
    #[test]
    fn opening_a_database_in_the_other_format_prints_nothing() {
        const CHILD: &str = "DP2PTCS_STORE_TEST_OPEN_IN";
        if let Some(dir) = std::env::var_os(CHILD) {
            let store = Store::open(&Path::new(&dir).join(DB_FILE), &[1; 32]).unwrap();
            assert_eq!(store.page_format().unwrap(), PageFormat::HmacSha512);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut legacy = legacy_connection(&dir.path().join(DB_FILE), &[1; 32]);
        migrations::migrate(&mut legacy).unwrap();
        drop(legacy);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::opening_a_database_in_the_other_format_prints_nothing",
                "--nocapture",
            ])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
        assert!(!stderr.contains("hmac"), "{stderr}");
    }

    #[test]
    fn transaction_commits_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let peer = dp2ptcs_types::NodeId::from_bytes([7; 32]);
        let id = dp2ptcs_types::MessageId::from_bytes([8; 16]);
        let msg = NewMessage {
            id: &id,
            peer: &peer,
            direction: Direction::Outgoing,
            body: "hi",
            sent_at_ms: 1,
            state: MessageState::Queued,
            expires_at_ms: None,
        };
        {
            let store = Store::open(&path, &[1; 32]).unwrap();
            // A failing closure leaves nothing behind.
            let r: Result<(), StoreError> = store.transaction(|tx| {
                tx.save_session(&peer, b"lost", 1)?;
                tx.insert_message(&msg, 1)?;
                Err(StoreError::Corrupt("abort".into()))
            });
            assert!(r.is_err());
            assert_eq!(store.load_session(&peer).unwrap(), None);
            assert_eq!(store.message(&peer, &id).unwrap(), None);
            // Nesting is refused, and refusing it does not disturb the outer transaction.
            let inner = store.transaction(|tx| {
                tx.save_session(&peer, b"kept", 2)?;
                let nested = tx.transaction(|_| Ok::<_, StoreError>(()));
                tx.insert_message(&msg, 2)?;
                Ok::<_, StoreError>(nested.is_err())
            });
            assert!(inner.unwrap());
        }
        // What committed survives reopening.
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(
            store.load_session(&peer).unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(store.message(&peer, &id).unwrap().unwrap().body, "hi");
    }

    #[test]
    fn a_failed_savepoint_undoes_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let (a, b, c) = (
            dp2ptcs_types::NodeId::from_bytes([1; 32]),
            dp2ptcs_types::NodeId::from_bytes([2; 32]),
            dp2ptcs_types::NodeId::from_bytes([3; 32]),
        );
        {
            let store = Store::open(&path, &[1; 32]).unwrap();
            store
                .transaction(|tx| {
                    let first = tx.savepoint(|s| s.save_session(&a, b"a", 1))?;
                    let failed: Result<(), StoreError> = tx.savepoint(|s| {
                        s.save_session(&b, b"b", 1)?;
                        Err(StoreError::Corrupt("this step fails".into()))
                    })?;
                    let last = tx.savepoint(|s| s.save_session(&c, b"c", 1))?;
                    assert!(first.is_ok() && failed.is_err() && last.is_ok());
                    Ok::<_, StoreError>(())
                })
                .unwrap();
        }
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(store.load_session(&a).unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(store.load_session(&b).unwrap(), None);
        assert_eq!(store.load_session(&c).unwrap().as_deref(), Some(&b"c"[..]));
    }
}
