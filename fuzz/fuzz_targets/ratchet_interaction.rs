//! Fuzz target `ratchet_interaction`: a thin wrapper around `dp2ptcs_crypto::fuzzing::ratchet_interaction`, whose seed corpus
//! `fuzz/corpus/ratchet_interaction/` is replayed by `crates/crypto/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_crypto::fuzzing::ratchet_interaction(data) {
        panic!("invariant broken: {e}");
    }
});
