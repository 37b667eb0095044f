//! Our prekey store, kept as one opaque (already sealed) pickle.

use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

impl Store {
    /// Saves our sealed prekey pickle, replacing the previous one. Returns only once the write is
    /// durable (`synchronous = FULL`): call it before any handshake answer that depends on the
    /// new state leaves the node.
    pub fn save_prekeys(&self, sealed: &[u8], now_ms: u64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO prekeys (id, sealed, updated_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            params![sealed, now_ms as i64],
        )?;
        Ok(())
    }

    /// Our saved sealed prekey pickle, if any.
    pub fn load_prekeys(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query_one("SELECT sealed FROM prekeys WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prekeys_survive_reopening_and_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path, &[1; 32]).unwrap();
            assert_eq!(store.load_prekeys().unwrap(), None);
            store.save_prekeys(b"v1", 1).unwrap();
            store.save_prekeys(b"v2", 2).unwrap();
        }
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(store.load_prekeys().unwrap().as_deref(), Some(&b"v2"[..]));
    }
}
