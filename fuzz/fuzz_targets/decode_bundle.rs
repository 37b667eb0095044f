//! Fuzz target `decode_bundle`: a thin wrapper around `dp2ptcs_crypto::fuzzing::decode_bundle`, whose seed corpus
//! `fuzz/corpus/decode_bundle/` is replayed by `crates/crypto/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_crypto::fuzzing::decode_bundle(data) {
        panic!("invariant broken: {e}");
    }
});
