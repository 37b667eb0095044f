/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database key does not open the file (or the file is not a DP2PTCS database).
    #[error("the database key does not open this database (wrong key, or not a DP2PTCS database)")]
    WrongKey,
    /// The SQLite library in use has no encryption: refusing to store anything in clear.
    #[error("this build's SQLite has no SQLCipher encryption; refusing to store data in clear")]
    NotEncrypted,
    /// The database was written by a newer version of DP2PTCS.
    #[error("the database has schema version {found}, this program knows up to {known}: upgrade DP2PTCS")]
    NewerSchema {
        /// Version in the file.
        found: u32,
        /// Newest version this program knows.
        known: u32,
    },
    /// The database is at an older schema version and was opened without migrating it (beside
    /// a running node, which may be an older program still writing that version).
    #[error("the database has schema version {found}, older than this program's {known}; it is migrated when the node starts")]
    OlderSchema {
        /// Version in the file.
        found: u32,
        /// The version this program writes.
        known: u32,
    },
    /// A name is already used by another contact.
    #[error("a contact named {0:?} already exists")]
    DuplicateName(String),
    /// A contact of this name exists with a different key.
    #[error("a contact named {name:?} already exists with a different key (node id {node_id})")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The node id of the contact that has it.
        node_id: dp2ptcs_types::NodeId,
    },
    /// This key is already a contact, under another name.
    #[error("this key is already a contact, named {name:?} (node id {node_id})")]
    AlreadyContact {
        /// The name it is known by.
        name: String,
        /// Its node id.
        node_id: dp2ptcs_types::NodeId,
    },
    /// The address book holds as many contacts as it may.
    #[error("the address book is full ({max} contacts)")]
    ContactsFull {
        /// The most contacts it holds.
        max: usize,
    },
    /// A stored value does not decode (damage or a bug).
    #[error("damaged database record: {0}")]
    Corrupt(String),
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
