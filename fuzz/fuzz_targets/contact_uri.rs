//! Fuzz target `contact_uri`: a thin wrapper around `dp2ptcs_crypto::fuzzing::contact_uri`, whose seed corpus
//! `fuzz/corpus/contact_uri/` is replayed by `crates/crypto/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_crypto::fuzzing::contact_uri(data) {
        panic!("invariant broken: {e}");
    }
});
