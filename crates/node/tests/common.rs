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
