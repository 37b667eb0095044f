//! Fuzz target `wire_frames`: the incremental frame decoder and every message decoder, through
//! `dp2ptcs_wire::fuzzing::frame_decoder` (which asserts its invariants). Its seed corpus
//! `fuzz/corpus/wire_frames/` is replayed by `crates/wire/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dp2ptcs_wire::fuzzing::frame_decoder(data);
});
