//! Fuzz target `keystore_file`: a thin wrapper around `dp2ptcs_crypto::fuzzing::keystore_file`, whose seed corpus
//! `fuzz/corpus/keystore_file/` is replayed by `crates/crypto/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_crypto::fuzzing::keystore_file(data) {
        panic!("invariant broken: {e}");
    }
});
