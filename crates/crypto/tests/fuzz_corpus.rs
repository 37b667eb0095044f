//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/*`) through the same functions the
//! fuzz targets call, so every seed and every crash found and committed stays a regression test.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers abort on failure

use std::path::PathBuf;

use dp2ptcs_crypto::fuzzing;

fn replay(target: &str, f: fn(&[u8]) -> Result<(), String>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
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

#[test]
fn ratchet_interaction_corpus() {
    replay("ratchet_interaction", fuzzing::ratchet_interaction);
}

#[test]
fn decode_bundle_corpus() {
    replay("decode_bundle", fuzzing::decode_bundle);
}

#[test]
fn decode_prekey_pickle_corpus() {
    replay("decode_prekey_pickle", fuzzing::decode_prekey_pickle);
}

#[test]
fn decode_header_corpus() {
    replay("decode_header", fuzzing::decode_header);
}

#[test]
fn corpus_decoders_accept_the_valid_seeds() {
    // The decoder seeds are genuine encodings: they must decode (not merely not crash).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for name in ["bundle_0", "bundle_1"] {
        let data = std::fs::read(dir.join("decode_bundle").join(name)).unwrap();
        assert!(
            dp2ptcs_crypto::PreKeyBundle::from_bytes(&data).is_ok(),
            "{name}"
        );
    }
    for name in ["pickle_0", "pickle_1"] {
        let data = std::fs::read(dir.join("decode_prekey_pickle").join(name)).unwrap();
        assert!(
            dp2ptcs_crypto::PreKeyStore::from_pickle(&data).is_ok(),
            "{name}"
        );
    }
    for name in ["message_0", "message_1", "message_2"] {
        let data = std::fs::read(dir.join("decode_header").join(name)).unwrap();
        assert!(
            dp2ptcs_crypto::RatchetMessage::from_bytes(&data).is_ok(),
            "{name}"
        );
    }
}

#[test]
fn contact_uri_corpus() {
    replay("contact_uri", fuzzing::contact_uri);
}

#[test]
fn keystore_file_corpus() {
    replay("keystore_file", fuzzing::keystore_file);
}

#[test]
fn safety_number_text_corpus() {
    replay("safety_number_text", fuzzing::safety_number_text);
}
