//! Fuzz target `decode_header`: a thin wrapper around `dp2ptcs_crypto::fuzzing::decode_header`, whose seed corpus
//! `fuzz/corpus/decode_header/` is replayed by `crates/crypto/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_crypto::fuzzing::decode_header(data) {
        panic!("invariant broken: {e}");
    }
});
