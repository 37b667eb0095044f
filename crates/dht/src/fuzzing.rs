//! Entry points shared by the fuzz targets under `fuzz/` (`dht_record`, `dht_messages`,
//! `dht_mailbox`) and the
//! test that replays their corpora. Not a stable API. Each function returns `Err` with a
//! description when an invariant breaks; the fuzz targets turn that into a crash.

use crate::codec::{decode_request, decode_response, encode_request, encode_response};
use crate::mailbox::{MailboxDelete, MailboxItem};
use crate::record::Record;

/// Decodes `data` as a record; one that verifies must re-encode to exactly `data` (the signature
/// covers the bytes received, so any other encoding would be a second valid form).
pub fn record(data: &[u8]) -> Result<(), String> {
    if let Ok(r) = Record::from_bytes(data) {
        if r.to_bytes() != data {
            return Err("a verified record does not re-encode to its bytes".into());
        }
        if Record::from_bytes(&r.to_bytes()).as_ref() != Ok(&r) {
            return Err("a re-encoded record does not decode to itself".into());
        }
    }
    Ok(())
}

/// Decodes `data` as a mailbox item and as a delete request; one that verifies must re-encode to
/// exactly `data` (the signature covers the bytes received).
pub fn mailbox(data: &[u8]) -> Result<(), String> {
    if let Ok(item) = MailboxItem::from_bytes(data) {
        if item.to_bytes() != data || item.encoded_len() != data.len() {
            return Err("a verified mailbox item does not re-encode to its bytes".into());
        }
    }
    if let Ok(delete) = MailboxDelete::from_bytes(data) {
        if delete.to_bytes() != data {
            return Err("a verified delete request does not re-encode to its bytes".into());
        }
    }
    Ok(())
}

/// Decodes `data` as a DHT request and as a response; what decodes must re-encode and decode to
/// the same value.
pub fn messages(data: &[u8]) -> Result<(), String> {
    if let Ok((id, request)) = decode_request(data) {
        let bytes = encode_request(id, &request).map_err(|e| format!("re-encode request: {e}"))?;
        match decode_request(&bytes) {
            Ok(back) if back == (id, request) => {}
            other => return Err(format!("request does not round-trip: {other:?}")),
        }
    }
    if let Ok((id, response)) = decode_response(data) {
        let bytes =
            encode_response(id, &response).map_err(|e| format!("re-encode response: {e}"))?;
        match decode_response(&bytes) {
            Ok(back) if back == (id, response) => {}
            other => return Err(format!("response does not round-trip: {other:?}")),
        }
    }
    Ok(())
}
