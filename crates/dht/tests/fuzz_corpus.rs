//! Replays the committed corpora of the `dht_record`, `dht_messages` and `dht_mailbox` fuzz targets
//! (`fuzz/corpus/<target>/*`, seeded by `examples/gen_fuzz_seeds.rs`) through the same functions
//! the fuzz targets call, so every seed and every crash found and committed stays a regression
//! test.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers abort on failure

use std::path::PathBuf;

use dp2ptcs_dht::{decode_request, decode_response, fuzzing, CodecError, Record};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn replay(target: &str, f: fn(&[u8]) -> Result<(), String>) {
    let dir = corpus(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(e) = f(&data) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "empty corpus for {target}");
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(corpus(target).join(name)).unwrap()
}

#[test]
fn dht_record_corpus() {
    replay("dht_record", fuzzing::record);
}

#[test]
fn dht_messages_corpus() {
    replay("dht_messages", fuzzing::messages);
}

#[test]
fn dht_mailbox_corpus() {
    replay("dht_mailbox", fuzzing::mailbox);
    assert!(dp2ptcs_dht::MailboxItem::from_bytes(&seed("dht_mailbox", "item")).is_ok());
    assert!(dp2ptcs_dht::MailboxDelete::from_bytes(&seed("dht_mailbox", "delete")).is_ok());
    assert!(
        dp2ptcs_dht::MailboxItem::from_bytes(&seed("dht_mailbox", "item_bad_signature")).is_err()
    );
}

#[test]
fn the_seeds_are_what_their_names_say() {
    for name in ["peer", "prekey_bundle"] {
        assert!(
            Record::from_bytes(&seed("dht_record", name)).is_ok(),
            "{name}"
        );
    }
    for name in ["truncated", "bad_signature", "unknown_kind"] {
        assert!(
            Record::from_bytes(&seed("dht_record", name)).is_err(),
            "{name}"
        );
    }
    for name in [
        "request_ping",
        "request_find_node",
        "request_find_value",
        "request_store",
    ] {
        assert!(
            decode_request(&seed("dht_messages", name)).is_ok(),
            "{name}"
        );
    }
    for name in [
        "response_pong",
        "response_nodes",
        "response_value",
        "response_stored",
    ] {
        assert!(
            decode_response(&seed("dht_messages", name)).is_ok(),
            "{name}"
        );
    }
    assert!(decode_response(&seed("dht_messages", "truncated_nodes")).is_err());
    let err = decode_response(&seed("dht_messages", "bad_port")).unwrap_err();
    assert!(
        matches!(&err, CodecError::Wire(e) if e.to_string().contains("port")),
        "{err:?}"
    );
    assert!(decode_request(&seed("dht_messages", "missing_body")).is_err());
    assert!(decode_response(&seed("dht_messages", "missing_body")).is_err());
}
