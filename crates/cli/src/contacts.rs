//! The address book: contacts and our own profile.
//!
//! Kept in the node's SQLCipher database (`node.db`, see `dp2ptcs-store`), keyed by the database
//! key from `node.key`. Earlier versions kept it in `contacts.sealed` (JSON sealed with
//! XChaCha20-Poly1305 under the same key, context `"dp2ptcs contacts v1"`); such a file is
//! imported into the database the first time it is opened, then removed.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dp2ptcs_crypto::contact_uri::validate_display_name;
use dp2ptcs_crypto::{seal, ContactUri, PublicIdentity};
use dp2ptcs_store::{AddOutcome, ContactRecord, Store, StoreError};
use dp2ptcs_types::limits::{MAX_ADDRESS_HINTS, MAX_CONTACTS};
use dp2ptcs_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::commands::run::DaemonLock;
use crate::fsutil::read_limited;

/// The legacy address book file, imported into the database when found.
pub(crate) const LEGACY_FILE_NAME: &str = "contacts.sealed";
/// The database file in the data directory.
pub(crate) const DB_FILE_NAME: &str = dp2ptcs_store::DB_FILE;
/// Seal context, so the blob cannot be confused with any other sealed data.
const SEAL_CONTEXT: &[u8] = b"dp2ptcs contacts v1";
/// Version of the JSON inside.
const BOOK_VERSION: u32 = 1;
/// Largest sealed file read (each contact is well under 1 KiB).
const MAX_FILE_LEN: u64 = (MAX_CONTACTS as u64) * 1024 + 64 * 1024;
/// Shortest node-id prefix accepted to name a contact.
pub(crate) const MIN_ID_PREFIX: usize = 8;

/// One contact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Contact {
    /// The name we call them by (unique in the book).
    pub(crate) name: String,
    /// Their Ed25519 public key, 64 hex digits.
    pub(crate) public_key: String,
    /// Their node id, 64 hex digits (derived from the key; checked on load).
    pub(crate) node_id: String,
    /// Address hints from their contact URI.
    #[serde(default)]
    pub(crate) addresses: Vec<SocketAddr>,
    /// Whether the safety number has been compared and matched.
    #[serde(default)]
    pub(crate) verified: bool,
    /// When it was verified (Unix seconds).
    #[serde(default)]
    pub(crate) verified_at: Option<u64>,
    /// When the contact was added (Unix seconds).
    #[serde(default)]
    pub(crate) added_at: u64,
}

impl Contact {
    pub(crate) fn public_identity(&self) -> Result<PublicIdentity> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&self.public_key, &mut bytes)
            .context("damaged address book: a public key is not 64 hex digits")?;
        PublicIdentity::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("damaged address book: contact {:?}: {e}", self.name))
    }
}

/// Our own profile: the display name and address hints put in our contact URI.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Profile {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) addresses: Vec<SocketAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BookJson {
    version: u32,
    #[serde(default)]
    profile: Profile,
    #[serde(default)]
    contacts: Vec<Contact>,
}

/// The address book, loaded and validated.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) profile: Profile,
    pub(crate) contacts: Vec<Contact>,
}

pub(crate) fn legacy_path(dir: &Path) -> PathBuf {
    dir.join(LEGACY_FILE_NAME)
}

/// The database and its write-ahead-log companions.
pub(crate) fn db_files(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join(DB_FILE_NAME),
        dir.join(format!("{DB_FILE_NAME}-wal")),
        dir.join(format!("{DB_FILE_NAME}-shm")),
    ]
}

/// Opens the node database, keeping its files private to the owner. It is migrated to this
/// program's schema unless a node other than this process runs on `dir`: that node may be an
/// older program, which would fail on the new schema (it is migrated when the node restarts).
pub(crate) fn open_store(dir: &Path, key: &[u8; 32]) -> Result<Store> {
    let [db, ..] = db_files(dir);
    // Held until the database is open: a node (perhaps an older program) cannot start while
    // this command migrates the database.
    let no_node_starts = if DaemonLock::held_here() {
        None
    } else {
        DaemonLock::hold_shared(dir)
    };
    let beside_a_node =
        !DaemonLock::held_here() && no_node_starts.is_none() && DaemonLock::is_held(dir);
    let opened = if beside_a_node {
        Store::open_without_migrating(&db, key)
    } else {
        Store::open(&db, key)
    };
    let store = match opened {
        Ok(store) => store,
        Err(e @ StoreError::OlderSchema { .. }) => bail!(
            "the node running on {} keeps its database in an older format ({e}): restart it \
             with this version of dp2ptcs (`dp2ptcs run`), then try again",
            dir.display()
        ),
        Err(e) => bail!("cannot open {}: {e}", db.display()),
    };
    for file in db_files(dir) {
        if file.exists() {
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", file.display()))?;
        }
    }
    Ok(store)
}

/// Opens the node database as [`open_store`] does, after importing a legacy `contacts.sealed`
/// into it if one is there: every command that reads or changes contacts opens it this way,
/// so the first one after an upgrade, whichever it is, finds the old contacts.
pub(crate) fn open_address_book(dir: &Path, key: &[u8; 32]) -> Result<Store> {
    let mut store = open_store(dir, key)?;
    if legacy_path(dir).exists() {
        let legacy = Book::load_legacy(dir, key)?;
        if store.contacts()?.is_empty() {
            legacy.write_to(&mut store)?;
        }
        // The database transaction is durable (synchronous = FULL): the old file can go.
        match fs::remove_file(legacy_path(dir)) {
            Ok(()) => fs::File::open(dir)?.sync_all()?,
            // Another command imported it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "imported {} but cannot remove it",
                        legacy_path(dir).display()
                    )
                })
            }
        }
    }
    Ok(store)
}

fn to_record(c: &Contact) -> Result<ContactRecord> {
    let key = c.public_identity()?;
    Ok(ContactRecord {
        node_id: key.node_id(),
        public_key: key.to_bytes(),
        name: c.name.clone(),
        addresses: c.addresses.clone(),
        verified: c.verified,
        verified_at: c.verified_at,
        added_at: c.added_at,
    })
}

fn from_record(r: ContactRecord) -> Contact {
    Contact {
        name: r.name,
        public_key: hex::encode(r.public_key),
        node_id: r.node_id.to_hex(),
        addresses: r.addresses,
        verified: r.verified,
        verified_at: r.verified_at,
        added_at: r.added_at,
    }
}

/// Adds the contact of `uri` under `name` to the database in `dir`, in one transaction (a
/// running node may be adding one through its API at the same time). Never replaces a contact
/// of the same name whose key differs, and never files one key under two names.
pub(crate) fn add(
    dir: &Path,
    key: &[u8; 32],
    uri: &ContactUri,
    name: &str,
    now: u64,
) -> Result<(Contact, AddOutcome)> {
    validate_display_name(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let record = dp2ptcs_node::contact_from_uri(uri, name, now);
    let mut store = open_address_book(dir, key)?;
    // Rules for new names: a contact stored before them under such a name can still have its
    // addresses refreshed.
    let known = store
        .contact(&record.node_id)?
        .is_some_and(|c| c.name == record.name);
    if !known {
        dp2ptcs_node::api::check_new_contact_name(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    match store.add_contact(&record) {
        Ok((stored, outcome)) => Ok((from_record(stored), outcome)),
        Err(StoreError::NameTaken { node_id, .. }) => bail!(
            "a contact named {name:?} already exists with a DIFFERENT key\n  \
             known:    node id {node_id}\n  \
             this URI: node id {}\n\
             Nothing was changed. If {name} really has a new identity, confirm it with them in \
             person, then run `dp2ptcs contact remove {name:?}` and add the new URI; \
             otherwise add it under another --name.",
            record.node_id
        ),
        Err(StoreError::AlreadyContact { name, node_id }) => bail!(
            "this key is already a contact, named {name:?} (node id {node_id}); nothing was \
             changed. To take this URI's addresses for it, add it again with --name {name:?}"
        ),
        Err(e) => Err(e.into()),
    }
}

/// Removes the contact `node_id` from the database in `dir`; returns how many messages to it
/// still wait in the outbox (they are kept).
pub(crate) fn remove(dir: &Path, key: &[u8; 32], node_id: &NodeId) -> Result<u64> {
    let store = open_address_book(dir, key)?;
    store.remove_contact(node_id)?;
    Ok(store
        .outbox_peers()?
        .iter()
        .find(|p| p.peer == *node_id)
        .map_or(0, |p| p.waiting))
}

/// Marks the contact `node_id` verified at `now` in the database in `dir`.
pub(crate) fn mark_verified(dir: &Path, key: &[u8; 32], node_id: &NodeId, now: u64) -> Result<()> {
    if !open_address_book(dir, key)?.set_contact_verified(node_id, now)? {
        bail!("the contact was removed meanwhile; nothing was verified");
    }
    Ok(())
}

impl Book {
    /// Loads the book from the database, importing a legacy `contacts.sealed` first if present.
    pub(crate) fn load(dir: &Path, key: &[u8; 32]) -> Result<Self> {
        let store = open_address_book(dir, key)?;
        let addresses = match store.profile("addresses")? {
            Some(json) => serde_json::from_str(&json).context("damaged profile addresses")?,
            None => Vec::new(),
        };
        let book = Self {
            profile: Profile {
                name: store.profile("name")?,
                addresses,
            },
            contacts: store.contacts()?.into_iter().map(from_record).collect(),
        };
        book.validate()
            .context("the address book in the database is damaged")?;
        Ok(book)
    }

    /// Saves the whole book to the database in one transaction.
    pub(crate) fn save(&self, dir: &Path, key: &[u8; 32]) -> Result<()> {
        let mut store = open_store(dir, key)?;
        self.write_to(&mut store)
    }

    fn write_to(&self, store: &mut Store) -> Result<()> {
        let records = self
            .contacts
            .iter()
            .map(to_record)
            .collect::<Result<Vec<_>>>()?;
        let addresses = serde_json::to_string(&self.profile.addresses)?;
        store.replace_contacts(
            &records,
            &[
                ("name", self.profile.name.as_deref()),
                ("addresses", Some(&addresses)),
            ],
        )?;
        Ok(())
    }

    /// Reads a legacy `contacts.sealed` file.
    fn load_legacy(dir: &Path, key: &[u8; 32]) -> Result<Self> {
        let path = legacy_path(dir);
        crate::fsutil::check_private_file(&path)?;
        let sealed = read_limited(&path, MAX_FILE_LEN)?;
        let plain = seal::open(key, SEAL_CONTEXT, &sealed)
            .map_err(|e| anyhow::anyhow!("cannot open the address book {}: {e}", path.display()))?;
        let json: BookJson = serde_json::from_slice(&plain)
            .with_context(|| format!("the address book {} is damaged", path.display()))?;
        if json.version != BOOK_VERSION {
            bail!(
                "the address book has version {}, this program reads {BOOK_VERSION}",
                json.version
            );
        }
        let book = Self {
            profile: json.profile,
            contacts: json.contacts,
        };
        book.validate()
            .with_context(|| format!("the address book {} is damaged", path.display()))?;
        Ok(book)
    }

    fn validate(&self) -> Result<()> {
        if self.contacts.len() > MAX_CONTACTS {
            bail!("{} contacts, at most {MAX_CONTACTS}", self.contacts.len());
        }
        let mut names = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for c in &self.contacts {
            validate_display_name(&c.name)?;
            let id = c.public_identity()?.node_id();
            if id.to_hex() != c.node_id {
                bail!("contact {:?}: node id does not match its key", c.name);
            }
            if !names.insert(c.name.as_str()) || !ids.insert(id) {
                bail!("contact {:?} appears twice", c.name);
            }
            if c.addresses.len() > MAX_ADDRESS_HINTS {
                bail!("contact {:?} has too many addresses", c.name);
            }
        }
        Ok(())
    }

    /// Finds a contact by exact name, or by node id (whole, or a prefix of at least
    /// [`MIN_ID_PREFIX`] hex digits that matches only one contact).
    pub(crate) fn find(&self, query: &str) -> Result<usize> {
        if let Some(i) = self.contacts.iter().position(|c| c.name == query) {
            return Ok(i);
        }
        let q = query.to_ascii_lowercase();
        if q.len() >= MIN_ID_PREFIX
            && q.len() <= NodeId::LEN * 2
            && q.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let matches: Vec<usize> = self
                .contacts
                .iter()
                .enumerate()
                .filter(|(_, c)| c.node_id.starts_with(&q))
                .map(|(i, _)| i)
                .collect();
            match matches.as_slice() {
                [one] => return Ok(*one),
                [] => {}
                _ => bail!(
                    "{query:?} matches {} contacts; give more digits of the node id",
                    matches.len()
                ),
            }
        }
        bail!(
            "no contact {query:?}; `dp2ptcs contact list` shows your contacts \
             (name one by its name or by at least {MIN_ID_PREFIX} digits of its node id)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dp2ptcs_crypto::Identity;

    fn uri(seed: u8, addr: Option<&str>) -> ContactUri {
        let addrs: Vec<SocketAddr> = addr.map(|a| a.parse().unwrap()).into_iter().collect();
        ContactUri::new(&Identity::from_seed(&[seed; 32]), None, &addrs).unwrap()
    }

    #[test]
    fn beside_a_running_node_an_older_database_is_left_for_the_node_to_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let key = [5u8; 32];
        let [db, ..] = db_files(dir.path());
        drop(open_store(dir.path(), &key).unwrap());
        // As if an older program had written it.
        let set_version = |v: u32| {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", hex::encode(key)))
                .unwrap();
            // The page format of a new database (`dp2ptcs_store::PageFormat::HmacSha256`).
            conn.execute_batch(
                "PRAGMA cipher_hmac_algorithm = HMAC_SHA256;
                 PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA256;",
            )
            .unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {v};"))
                .unwrap();
        };
        set_version(dp2ptcs_store::migrations::CURRENT - 1);
        // A node runs on the directory (another process holds its lock).
        let lock =
            crate::fsutil::open_lock_file(&dir.path().join(crate::commands::run::DAEMON_LOCK_FILE))
                .unwrap();
        lock.lock().unwrap();
        let err = open_store(dir.path(), &key).unwrap_err().to_string();
        assert!(err.contains("restart it"), "{err}");
        // With no node running, the command migrates it itself.
        drop(lock);
        set_version(dp2ptcs_store::migrations::CURRENT - 1);
        let store = open_store(dir.path(), &key).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            dp2ptcs_store::migrations::CURRENT
        );
    }

    #[test]
    fn adding_keeps_names_and_keys_apart_with_clear_messages() {
        let dir = tempfile::tempdir().unwrap();
        let key = [3u8; 32];
        let (bob, outcome) = add(dir.path(), &key, &uri(1, None), "bob", 0).unwrap();
        assert_eq!(outcome, AddOutcome::Added);
        let err = add(dir.path(), &key, &uri(2, None), "bob", 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DIFFERENT key") && err.contains(&bob.node_id),
            "{err}"
        );
        let err = add(dir.path(), &key, &uri(1, None), "robert", 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already a contact, named \"bob\""), "{err}");
        assert_eq!(
            add(dir.path(), &key, &uri(1, Some("127.0.0.1:9")), "bob", 0)
                .unwrap()
                .1,
            AddOutcome::AddressesUpdated
        );
        let book = Book::load(dir.path(), &key).unwrap();
        assert_eq!(book.contacts.len(), 1);
        assert_eq!(book.contacts[0].addresses, ["127.0.0.1:9".parse().unwrap()]);
    }

    #[test]
    fn find_by_name_or_id_prefix() {
        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), &[3; 32], &uri(1, None), "bob", 0).unwrap();
        add(dir.path(), &[3; 32], &uri(2, None), "carol", 1).unwrap();
        let book = Book::load(dir.path(), &[3; 32]).unwrap();
        assert_eq!(book.find("carol").unwrap(), 1);
        let id = book.contacts[0].node_id.clone();
        assert_eq!(book.find(&id[..8]).unwrap(), 0);
        assert_eq!(book.find(&id.to_uppercase()).unwrap(), 0);
        assert!(book.find(&id[..7]).is_err());
        assert!(book.find("dave").is_err());
    }

    #[test]
    fn database_round_trip_and_wrong_key() {
        // Long enough that random ciphertext does not contain it by chance: a 3-byte
        // name ("bob") turned up in the encrypted file in one CI run.
        const NAME: &str = "Bravo Six, second squad";
        let dir = tempfile::tempdir().unwrap();
        let mut book = Book::default();
        let bob_uri = uri(1, Some("[::1]:5"));
        let bob = bob_uri.public_identity();
        book.contacts.push(Contact {
            name: NAME.into(),
            public_key: hex::encode(bob.to_bytes()),
            node_id: bob.node_id().to_hex(),
            addresses: vec!["[::1]:5".parse().unwrap()],
            verified: true,
            verified_at: Some(8),
            added_at: 7,
        });
        book.profile.name = Some("me".into());
        book.save(dir.path(), &[3; 32]).unwrap();
        let raw = std::fs::read(dir.path().join(DB_FILE_NAME)).unwrap();
        assert!(!raw.windows(NAME.len()).any(|w| w == NAME.as_bytes()));
        let back = Book::load(dir.path(), &[3; 32]).unwrap();
        assert_eq!(back.contacts, book.contacts);
        assert_eq!(back.profile, book.profile);
        assert!(Book::load(dir.path(), &[4; 32]).is_err());
    }
}
