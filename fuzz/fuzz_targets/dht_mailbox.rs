//! Fuzz target `dht_mailbox`: `MailboxItem::from_bytes` and `MailboxDelete::from_bytes` (full
//! signature verification), through `dp2ptcs_dht::fuzzing::mailbox`, which also checks that what
//! verifies re-encodes to its exact bytes. Its seed corpus `fuzz/corpus/dht_mailbox/` is replayed
//! by `crates/dht/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = dp2ptcs_dht::fuzzing::mailbox(data) {
        panic!("invariant broken: {e}");
    }
});
