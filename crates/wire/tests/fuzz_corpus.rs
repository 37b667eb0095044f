//! Replays the committed corpus of the `wire_frames` fuzz target through the same function.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

#[test]
fn wire_frames_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wire_frames");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        dp2ptcs_wire::fuzzing::frame_decoder(&data);
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn the_seed_frames_decode_as_the_messages_they_are() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wire_frames");
    let data = std::fs::read(dir.join("envelope_chat_receipt")).unwrap();
    // The first byte is the chunk size the fuzz target feeds the decoder with.
    let frames = dp2ptcs_wire::frame::decode_all(&data[1..], dp2ptcs_wire::MAX_FRAME_LEN).unwrap();
    assert_eq!(frames.len(), 3);
    let envelope = dp2ptcs_wire::Envelope::decode(&frames[0]).unwrap();
    assert_eq!(envelope.kind, dp2ptcs_wire::MessageKind::Chat);
    assert_eq!(envelope.header.message_number, 7);
    let chat = dp2ptcs_wire::Chat::decode(&frames[1]).unwrap();
    assert_eq!(chat.body, "hello, zoë");
    assert_eq!(
        dp2ptcs_wire::Receipt::decode(&frames[2]).unwrap().ids.len(),
        2
    );
}
