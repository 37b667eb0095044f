//! Fuzz target `dht_messages`: `decode_request` and `decode_response` of the DHT codec, through
//! `dp2ptcs_dht::fuzzing::messages`, which re-encodes what decodes and checks it round-trips. Its
//! seed corpus `fuzz/corpus/dht_messages/` is replayed by `crates/dht/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_dht::fuzzing::messages(data) {
        panic!("invariant broken: {e}");
    }
});
