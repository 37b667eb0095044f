//! Contacts.

use std::net::SocketAddr;

use dp2ptcs_types::limits::MAX_CONTACTS;
use dp2ptcs_types::NodeId;
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use crate::{Store, StoreError};

/// A contact as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecord {
    /// Their node id (SHA-256 of `public_key`; the caller guarantees it).
    pub node_id: NodeId,
    /// Their Ed25519 public key.
    pub public_key: [u8; 32],
    /// The name we call them by (unique).
    pub name: String,
    /// Address hints.
    pub addresses: Vec<SocketAddr>,
    /// Whether the safety number was compared and matched.
    pub verified: bool,
    /// When it was verified (Unix seconds).
    pub verified_at: Option<u64>,
    /// When the contact was added (Unix seconds).
    pub added_at: u64,
}

/// What [`Store::add_contact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new contact.
    Added,
    /// The key was a contact under this name already; its address hints were replaced.
    AddressesUpdated,
    /// The key was a contact under this name already, with these address hints.
    Unchanged,
}

fn blob32(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = row.get(idx)?;
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            "not 32 bytes".into(),
        )
    })
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<ContactRecord> {
    let addresses: String = row.get(3)?;
    let addresses = serde_json::from_str(&addresses).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(ContactRecord {
        node_id: NodeId::from_bytes(blob32(row, 0)?),
        public_key: blob32(row, 1)?,
        name: row.get(2)?,
        addresses,
        verified: row.get(4)?,
        verified_at: row.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
        added_at: row.get::<_, i64>(6)?.max(0) as u64,
    })
}

const COLUMNS: &str = "node_id, public_key, name, addresses, verified, verified_at, added_at";

/// `INSERT INTO contacts ... <on_conflict>` of one record.
fn insert_contact(
    conn: &rusqlite::Connection,
    c: &ContactRecord,
    on_conflict: &str,
) -> Result<usize, rusqlite::Error> {
    let addresses = serde_json::to_string(&c.addresses)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        &format!(
            "INSERT INTO contacts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) {on_conflict}"
        ),
        params![
            c.node_id.as_bytes().as_slice(),
            c.public_key.as_slice(),
            c.name,
            addresses,
            c.verified,
            c.verified_at.map(|v| v as i64),
            c.added_at as i64,
        ],
    )
}

impl Store {
    /// Inserts a contact, or replaces the one with the same node id. A different contact with
    /// the same name is an error ([`StoreError::DuplicateName`]).
    pub fn put_contact(&self, c: &ContactRecord) -> Result<(), StoreError> {
        let taken: Option<Vec<u8>> = self
            .query_one(
                "SELECT node_id FROM contacts WHERE name = ?1",
                [&c.name],
                |r| r.get(0),
            )
            .optional()?;
        if matches!(&taken, Some(id) if id.as_slice() != c.node_id.as_bytes()) {
            return Err(StoreError::DuplicateName(c.name.clone()));
        }
        insert_contact(
            &self.conn,
            c,
            "ON CONFLICT (node_id) DO UPDATE SET public_key = excluded.public_key,
               name = excluded.name, addresses = excluded.addresses,
               verified = excluded.verified, verified_at = excluded.verified_at",
        )?;
        Ok(())
    }

    /// Adds `c` under its name, checking and writing in one transaction, so that two writers
    /// (a command and the node's API) cannot undo each other. Never replaces a contact of the
    /// same name whose key differs ([`StoreError::NameTaken`]), never files one key under two
    /// names ([`StoreError::AlreadyContact`]), and holds at most [`MAX_CONTACTS`]
    /// ([`StoreError::ContactsFull`]). If the key is already a contact under this name, only its
    /// address hints are replaced; its verification and the time it was added are kept.
    /// Returns the contact as stored.
    pub fn add_contact(
        &mut self,
        c: &ContactRecord,
    ) -> Result<(ContactRecord, AddOutcome), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let by_name = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM contacts WHERE name = ?1"),
                [&c.name],
                from_row,
            )
            .optional()?;
        if let Some(mut known) = by_name {
            if known.public_key != c.public_key {
                return Err(StoreError::NameTaken {
                    name: known.name,
                    node_id: known.node_id,
                });
            }
            if known.addresses == c.addresses {
                return Ok((known, AddOutcome::Unchanged));
            }
            known.addresses = c.addresses.clone();
            let addresses = serde_json::to_string(&known.addresses)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "UPDATE contacts SET addresses = ?1 WHERE node_id = ?2",
                params![addresses, known.node_id.as_bytes().as_slice()],
            )?;
            tx.commit()?;
            return Ok((known, AddOutcome::AddressesUpdated));
        }
        let by_key = tx
            .query_row(
                "SELECT name, node_id FROM contacts WHERE node_id = ?1 OR public_key = ?2",
                params![c.node_id.as_bytes().as_slice(), c.public_key.as_slice()],
                |r| Ok((r.get::<_, String>(0)?, blob32(r, 1)?)),
            )
            .optional()?;
        if let Some((name, id)) = by_key {
            return Err(StoreError::AlreadyContact {
                name,
                node_id: NodeId::from_bytes(id),
            });
        }
        let count: i64 = tx.query_row("SELECT count(*) FROM contacts", [], |r| r.get(0))?;
        if count >= MAX_CONTACTS as i64 {
            return Err(StoreError::ContactsFull { max: MAX_CONTACTS });
        }
        insert_contact(&tx, c, "")?;
        tx.commit()?;
        Ok((c.clone(), AddOutcome::Added))
    }

    /// Marks the contact `id` verified at `at` (Unix seconds); returns whether it exists.
    pub fn set_contact_verified(&self, id: &NodeId, at: u64) -> Result<bool, StoreError> {
        Ok(self.exec(
            "UPDATE contacts SET verified = 1, verified_at = ?1 WHERE node_id = ?2",
            params![at as i64, id.as_bytes().as_slice()],
        )? > 0)
    }

    /// All contacts, in the order they were added.
    pub fn contacts(&self) -> Result<Vec<ContactRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM contacts ORDER BY added_at, rowid"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The contact with this node id.
    pub fn contact(&self, id: &NodeId) -> Result<Option<ContactRecord>, StoreError> {
        Ok(self
            .query_one(
                &format!("SELECT {COLUMNS} FROM contacts WHERE node_id = ?1"),
                [id.as_bytes().as_slice()],
                from_row,
            )
            .optional()?)
    }

    /// Removes a contact; returns whether it existed.
    pub fn remove_contact(&self, id: &NodeId) -> Result<bool, StoreError> {
        Ok(self.exec(
            "DELETE FROM contacts WHERE node_id = ?1",
            [id.as_bytes().as_slice()],
        )? > 0)
    }

    /// Replaces every contact and the given profile values in one transaction: either all of it
    /// is stored or none.
    pub fn replace_contacts(
        &mut self,
        contacts: &[ContactRecord],
        profile: &[(&str, Option<&str>)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM contacts", [])?;
        for c in contacts {
            insert_contact(&tx, c, "").map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::DuplicateName(c.name.clone())
                }
                other => StoreError::Sqlite(other),
            })?;
        }
        for (k, v) in profile {
            match v {
                Some(v) => tx.execute(
                    "INSERT OR REPLACE INTO profile (key, value) VALUES (?1, ?2)",
                    params![k, v],
                )?,
                None => tx.execute("DELETE FROM profile WHERE key = ?1", params![k])?,
            };
        }
        tx.commit()?;
        Ok(())
    }

    /// A profile value (our display name, ...).
    pub fn profile(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .query_one("SELECT value FROM profile WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a profile value.
    pub fn set_profile(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR REPLACE INTO profile (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(seed: u8, name: &str) -> ContactRecord {
        ContactRecord {
            node_id: NodeId::from_bytes([seed; 32]),
            public_key: [seed; 32],
            name: name.into(),
            addresses: vec!["127.0.0.1:4433".parse().unwrap()],
            verified: false,
            verified_at: None,
            added_at: u64::from(seed),
        }
    }

    #[test]
    fn contacts_crud() {
        let store = Store::open_in_memory(&[1; 32]).unwrap();
        store.put_contact(&contact(1, "bob")).unwrap();
        store.put_contact(&contact(2, "carol")).unwrap();
        assert!(matches!(
            store.put_contact(&contact(3, "bob")),
            Err(StoreError::DuplicateName(_))
        ));
        let mut bob = contact(1, "bob");
        bob.verified = true;
        bob.verified_at = Some(9);
        store.put_contact(&bob).unwrap();
        assert_eq!(store.contact(&bob.node_id).unwrap(), Some(bob.clone()));
        assert_eq!(store.contacts().unwrap().len(), 2);
        assert!(store.remove_contact(&bob.node_id).unwrap());
        assert!(!store.remove_contact(&bob.node_id).unwrap());
        store.set_profile("name", "Alpha").unwrap();
        let mut store = store;
        store
            .replace_contacts(&[contact(5, "eve")], &[("name", None)])
            .unwrap();
        assert_eq!(store.contacts().unwrap(), [contact(5, "eve")]);
        assert_eq!(store.profile("name").unwrap(), None);
        let dup = [contact(6, "x"), contact(7, "x")];
        assert!(matches!(
            store.replace_contacts(&dup, &[]),
            Err(StoreError::DuplicateName(_))
        ));
        assert_eq!(
            store.contacts().unwrap(),
            [contact(5, "eve")],
            "a failed replace changes nothing"
        );
    }

    #[test]
    fn adding_never_renames_a_key_nor_gives_a_name_a_new_key() {
        let mut store = Store::open_in_memory(&[1; 32]).unwrap();
        let bob = contact(1, "bob");
        assert_eq!(
            store.add_contact(&bob).unwrap(),
            (bob.clone(), AddOutcome::Added)
        );
        // Another key under the same name: refused, and bob is left as he was.
        let err = store.add_contact(&contact(2, "bob")).unwrap_err();
        assert!(
            matches!(&err, StoreError::NameTaken { name, node_id } if name == "bob" && *node_id == bob.node_id),
            "{err}"
        );
        // The same key under another name: refused.
        let err = store.add_contact(&contact(1, "robert")).unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyContact { name, .. } if name == "bob"),
            "{err}"
        );
        assert_eq!(store.contacts().unwrap(), std::slice::from_ref(&bob));

        // The same key and name again: nothing changes, or only the address hints, and a
        // verification made meanwhile is kept.
        assert!(store.set_contact_verified(&bob.node_id, 77).unwrap());
        assert!(!store
            .set_contact_verified(&NodeId::from_bytes([9; 32]), 77)
            .unwrap());
        let (kept, outcome) = store.add_contact(&bob).unwrap();
        assert_eq!(outcome, AddOutcome::Unchanged);
        assert!(kept.verified && kept.verified_at == Some(77));
        let mut moved = bob.clone();
        moved.addresses = vec!["192.0.2.1:7446".parse().unwrap()];
        moved.added_at = 500;
        let (now, outcome) = store.add_contact(&moved).unwrap();
        assert_eq!(outcome, AddOutcome::AddressesUpdated);
        assert_eq!(now.addresses, moved.addresses);
        assert_eq!(store.contact(&bob.node_id).unwrap(), Some(now.clone()));
        assert!(now.verified && now.verified_at == Some(77));
        assert_eq!(now.added_at, bob.added_at, "added when it was first added");
    }

    #[test]
    fn a_full_address_book_takes_no_new_contact_but_still_updates_one() {
        let mut store = Store::open_in_memory(&[1; 32]).unwrap();
        let all: Vec<ContactRecord> = (0..MAX_CONTACTS as u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                ContactRecord {
                    node_id: NodeId::from_bytes(id),
                    public_key: id,
                    name: format!("c{i}"),
                    addresses: Vec::new(),
                    verified: false,
                    verified_at: None,
                    added_at: 0,
                }
            })
            .collect();
        store.replace_contacts(&all, &[]).unwrap();
        let err = store
            .add_contact(&contact(0xee, "one too many"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::ContactsFull { max } if max == MAX_CONTACTS),
            "{err}"
        );
        let mut first = all[0].clone();
        first.addresses = vec!["127.0.0.1:9".parse().unwrap()];
        assert_eq!(
            store.add_contact(&first).unwrap().1,
            AddOutcome::AddressesUpdated
        );
        assert_eq!(store.contacts().unwrap().len(), MAX_CONTACTS);
    }
}
