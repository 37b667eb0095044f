//! Without the key, the database files reveal nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dp2ptcs_store::{ContactRecord, Direction, MessageState, NewMessage, Store};
use dp2ptcs_types::{MessageId, NodeId};

#[test]
fn no_plaintext_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let bob = NodeId::from_bytes([0xb0; 32]);
    let secret_text = "rendezvous at grid 4471 at dawn";
    {
        let store = Store::open(&dir.path().join("node.db"), &[7; 32]).unwrap();
        store
            .put_contact(&ContactRecord {
                node_id: bob,
                public_key: [0xb1; 32],
                name: "Bravo Six".into(),
                addresses: vec!["198.51.100.9:4433".parse().unwrap()],
                verified: true,
                verified_at: Some(1),
                added_at: 1,
            })
            .unwrap();
        for i in 0..50u8 {
            let id = MessageId::from_bytes([i; 16]);
            let m = NewMessage {
                id: &id,
                peer: &bob,
                direction: Direction::Outgoing,
                body: secret_text,
                sent_at_ms: 1,
                state: MessageState::Sent,
                expires_at_ms: None,
            };
            store.insert_message(&m, 1).unwrap();
        }
        store
            .save_session(&bob, b"session pickle bytes", 1)
            .unwrap();
        store.save_prekeys(b"prekey pickle bytes", 1).unwrap();
        // Leave the WAL in place too: it must be encrypted as well.
    }
    let needles: Vec<Vec<u8>> = vec![
        secret_text.as_bytes().to_vec(),
        b"Bravo Six".to_vec(),
        b"198.51.100.9".to_vec(),
        b"session pickle".to_vec(),
        b"prekey pickle".to_vec(),
        bob.as_bytes().to_vec(),
        bob.to_hex().into_bytes(),
        [0xb1; 32].to_vec(),
        b"SQLite format 3".to_vec(),
        b"CREATE TABLE".to_vec(),
    ];
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(files >= 1);
}
