//! The DP2PTCS wire format.
//!
//! - [`frame`]: each frame is an unsigned LEB128 length followed by that many bytes of one
//!   protobuf message; the declared length is checked against a maximum before anything is
//!   allocated. [`FrameDecoder`] is an incremental, bounded decoder for byte streams.
//! - Validated domain types: [`Envelope`] (the `TacticalMessage`), [`RatchetHeader`], [`Chat`],
//!   [`Receipt`], [`ErrorReport`], [`PrekeyBundle`], [`HandshakeInit`], [`HandshakeOffer`],
//!   [`Hello`] and [`HelloReply`] (the transport handshake), and the DHT's [`DhtHello`],
//!   [`DhtRequest`] and [`DhtResponse`]. Each
//!   decodes with `TryFrom<&[u8]>`-style constructors that check every length and enum, so the rest
//!   of the program never sees a 31-byte key or an unknown message type.
//!
//! The prost structs generated from `proto/dp2ptcs/v1/wire.proto` are private to this crate
//! (regenerate them with `cargo run -p dp2ptcs-wire-codegen`; no `protoc` needed).
//!
//! No IO, no clock, no randomness: bytes in, values out, and back.

mod dht;
pub mod frame;
mod message;

#[doc(hidden)]
pub mod fuzzing;

#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod proto {
    include!("gen/dp2ptcs.v1.rs");
}

pub use dht::{DhtHello, DhtRequest, DhtRequestBody, DhtResponse, DhtResponseBody};
pub use frame::{encode_frame, FrameDecoder, FrameError, MAX_FRAME_LEN};
pub use message::{
    Chat, Chats, DecodeError, Envelope, ErrorReport, HandshakeInit, HandshakeOffer, Hello,
    HelloBody, HelloReply, MessageKind, PrekeyBundle, RatchetHeader, Receipt, WireErrorCode,
    MAX_BATCH_CHATS, MAX_BATCH_LEN, MAX_CHAT_BODY_LEN, MAX_ERROR_REASON_LEN, MAX_PAYLOAD_LEN,
    MAX_RECEIPT_IDS,
};
