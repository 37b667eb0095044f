//! Entry points for the fuzz targets in `fuzz/`, also used to replay their corpora in tests.

use crate::frame::{decode_all, FrameDecoder};
use crate::{
    Chat, Chats, DhtHello, DhtRequest, DhtResponse, Envelope, ErrorReport, HandshakeInit,
    HandshakeOffer, PrekeyBundle, Receipt,
};

/// Feeds `data` to the frame decoder in chunks whose sizes come from the data itself, and decodes
/// every frame as each message type. Must never panic; checks the decoder's invariants.
pub fn frame_decoder(data: &[u8]) {
    let max = 1024;
    let mut decoder = FrameDecoder::new(max);
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut frames = Vec::new();
    'outer: for piece in data.chunks(chunk) {
        let mut piece = piece;
        while !piece.is_empty() {
            match decoder.push(piece) {
                Ok(used) => {
                    piece = &piece[used..];
                    if let Some(frame) = decoder.take_frame() {
                        assert!(frame.len() <= max, "a frame above the maximum was accepted");
                        frames.push(frame);
                    }
                }
                Err(_) => break 'outer,
            }
        }
    }
    // Whole-buffer decoding agrees with incremental decoding whenever both succeed.
    if let Ok(all) = decode_all(data, max) {
        assert_eq!(
            all, frames,
            "incremental and whole-buffer decoding disagree"
        );
    }
    for frame in &frames {
        messages(frame);
    }
}

/// Decodes `data` as every message type; re-encodes what decodes and checks it round-trips.
pub fn messages(data: &[u8]) {
    if let Ok(e) = Envelope::decode(data) {
        assert_eq!(Envelope::decode(&e.encode()).as_ref(), Ok(&e));
    }
    if let Ok(c) = Chat::decode(data) {
        assert_eq!(c.encode().map(|b| Chat::decode(&b)), Ok(Ok(c)));
    }
    if let Ok(b) = Chats::decode(data) {
        assert_eq!(b.encode().map(|e| Chats::decode(&e)), Ok(Ok(b)));
    }
    if let Ok(r) = Receipt::decode(data) {
        assert_eq!(r.encode().map(|b| Receipt::decode(&b)), Ok(Ok(r)));
    }
    if let Ok(r) = ErrorReport::decode(data) {
        assert_eq!(ErrorReport::decode(&r.encode()), Ok(r));
    }
    if let Ok(b) = PrekeyBundle::decode(data) {
        assert_eq!(PrekeyBundle::decode(&b.encode()), Ok(b));
    }
    if let Ok(h) = HandshakeInit::decode(data) {
        assert_eq!(HandshakeInit::decode(&h.encode()), Ok(h));
    }
    if let Ok(o) = HandshakeOffer::decode(data) {
        assert_eq!(HandshakeOffer::decode(&o.encode()), Ok(o));
    }
    if let Ok(h) = DhtHello::decode(data) {
        assert_eq!(DhtHello::decode(&h.encode()), Ok(h));
    }
    if let Ok(r) = DhtRequest::decode(data) {
        assert_eq!(r.encode().map(|b| DhtRequest::decode(&b)), Ok(Ok(r)));
    }
    if let Ok(r) = DhtResponse::decode(data) {
        assert_eq!(r.encode().map(|b| DhtResponse::decode(&b)), Ok(Ok(r)));
    }
}
