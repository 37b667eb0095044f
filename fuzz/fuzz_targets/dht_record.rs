//! Fuzz target `dht_record`: `Record::from_bytes` (full signature and payload verification),
//! through `dp2ptcs_dht::fuzzing::record`, which also checks that a verified record re-encodes to
//! its exact bytes. Its seed corpus `fuzz/corpus/dht_record/` is replayed by
//! `crates/dht/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_dht::fuzzing::record(data) {
        panic!("invariant broken: {e}");
    }
});
