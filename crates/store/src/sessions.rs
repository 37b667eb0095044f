//! Ratchet sessions, stored as opaque (already sealed) pickles.

use dp2ptcs_types::NodeId;
use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

impl Store {
    /// Saves the session with `peer`. Returns only once the write is durable (`synchronous =
    /// FULL`): call it before any ciphertext made with the new state leaves the node.
    pub fn save_session(
        &self,
        peer: &NodeId,
        pickle: &[u8],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO sessions (peer, pickle, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer) DO UPDATE SET pickle = excluded.pickle, updated_at = excluded.updated_at",
            params![peer.as_bytes().as_slice(), pickle, now_ms as i64],
        )?;
        Ok(())
    }

    /// The saved session with `peer`.
    pub fn load_session(&self, peer: &NodeId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .query_one(
                "SELECT pickle FROM sessions WHERE peer = ?1",
                [peer.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Forgets the session with `peer`.
    pub fn delete_session(&self, peer: &NodeId) -> Result<bool, StoreError> {
        Ok(self.exec(
            "DELETE FROM sessions WHERE peer = ?1",
            [peer.as_bytes().as_slice()],
        )? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let peer = NodeId::from_bytes([4; 32]);
        {
            let store = Store::open(&path, &[1; 32]).unwrap();
            store.save_session(&peer, b"v1", 1).unwrap();
            store.save_session(&peer, b"v2", 2).unwrap();
        }
        let store = Store::open(&path, &[1; 32]).unwrap();
        assert_eq!(
            store.load_session(&peer).unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        assert!(store.delete_session(&peer).unwrap());
        assert_eq!(store.load_session(&peer).unwrap(), None);
    }
}
