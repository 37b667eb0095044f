//! Helpers shared by the node tests: real nodes on loopback with stores in a temporary dir.
#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::path::Path;

use dp2ptcs_crypto::{Identity, UnlockedKeystore};
use dp2ptcs_node::{Node, NodeConfig};
use dp2ptcs_store::{ContactRecord, Store, DB_FILE};
use rand::rngs::OsRng;
use rand::RngCore;

pub fn tempdir() -> tempfile::TempDir {
    // tmpfs when there is one: the store syncs every write.
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

pub fn test_config(ip: [u8; 4]) -> NodeConfig {
    NodeConfig {
        listen: SocketAddr::from((ip, 0)),
        peer_rate_per_sec: 100_000,
        peer_burst: 100_000,
        event_capacity: 8192,
        ..NodeConfig::default()
    }
}

pub fn new_keys() -> UnlockedKeystore {
    let mut db_key = [0u8; 32];
    OsRng.fill_bytes(&mut db_key);
    UnlockedKeystore::from_parts(Identity::generate(&mut OsRng), db_key)
}

pub async fn start(dir: &Path, keys: &UnlockedKeystore, config: NodeConfig) -> Node {
    let store = Store::open(&dir.join(DB_FILE), keys.database_key()).unwrap();
    Node::start(config, keys, store).await.unwrap()
}

pub fn contact_of(name: &str, keys: &UnlockedKeystore, node: &Node) -> ContactRecord {
    let public = keys.identity().public();
    ContactRecord {
        node_id: public.node_id(),
        public_key: public.to_bytes(),
        name: name.into(),
        addresses: vec![node.local_addr().unwrap()],
        verified: true,
        verified_at: None,
        added_at: 0,
    }
}

/// Two started nodes on 127.0.0.1, each a contact of the other, with stores in temporary
/// directories that live as long as this.
#[derive(Debug)]
pub struct Pair {
    pub a: Node,
    pub b: Node,
    /// A, as a contact of B.
    pub a_contact: ContactRecord,
    /// B, as a contact of A.
    pub b_contact: ContactRecord,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A [`Pair`]; B runs with `b_config`.
pub async fn pair(b_config: NodeConfig) -> Pair {
    let (da, db) = (tempdir(), tempdir());
    let (ka, kb) = (new_keys(), new_keys());
    let a = start(da.path(), &ka, test_config([127, 0, 0, 1])).await;
    let b = start(db.path(), &kb, b_config).await;
    let (a_contact, b_contact) = (contact_of("a", &ka, &a), contact_of("b", &kb, &b));
    a.put_contact(&b_contact).await.unwrap();
    b.put_contact(&a_contact).await.unwrap();
    Pair {
        a,
        b,
        a_contact,
        b_contact,
        _dirs: (da, db),
    }
}
