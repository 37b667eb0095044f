//! Fuzz target `decode_prekey_pickle`: a thin wrapper around
//! `dp2ptcs_crypto::fuzzing::decode_prekey_pickle`, whose seed corpus
//! `fuzz/corpus/decode_prekey_pickle/` is replayed by `crates/crypto/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_crypto::fuzzing::decode_prekey_pickle(data) {
        panic!("invariant broken: {e}");
    }
});
