//! Fuzz target `safety_number_text`: a thin wrapper around `dp2ptcs_crypto::fuzzing::safety_number_text`, whose seed corpus
//! `fuzz/corpus/safety_number_text/` is replayed by `crates/crypto/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_crypto::fuzzing::safety_number_text(data) {
        panic!("invariant broken: {e}");
    }
});
