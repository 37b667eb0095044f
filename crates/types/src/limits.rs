//! Limits every decoder checks before it allocates or accepts input.
//!
//! Each bound is named here once so that the encoder, the decoder, the documentation in
//! `PROTOCOL.md` and the tests all agree.

/// Longest contact URI accepted, in bytes.
pub const MAX_CONTACT_URI_LEN: usize = 2048;

/// Longest display name, in bytes of UTF-8.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;

/// Most address hints a contact URI may carry.
pub const MAX_ADDRESS_HINTS: usize = 8;

/// Longest single address hint (`host:port` text), in bytes.
pub const MAX_ADDRESS_HINT_LEN: usize = 128;

/// Largest `node.key` file accepted, in bytes. A real one is well under 1 KiB.
pub const MAX_KEYSTORE_FILE_LEN: usize = 64 * 1024;

/// Largest image (PNG or JPEG) decoded when scanning a QR code, in bytes on disk.
pub const MAX_QR_IMAGE_FILE_LEN: u64 = 32 * 1024 * 1024;

/// Largest image decoded when scanning a QR code, in pixels per side.
pub const MAX_QR_IMAGE_SIDE: u32 = 8192;

/// Most contacts an address book holds.
pub const MAX_CONTACTS: usize = 10_000;

/// Most contacts one DHT `NODES` answer may carry: Kademlia's k (PROTOCOL.md section 10.1).
pub const MAX_DHT_CONTACTS: usize = 20;

/// Largest encoded DHT record (body and signature), in bytes (PROTOCOL.md section 10.1).
pub const MAX_DHT_RECORD_LEN: usize = 1024;

/// Largest sealed payload one mailbox item may carry, in bytes (PROTOCOL.md section 11): an
/// encrypted chat of at most 32 KiB plus its envelope and an X3DH initial message, with room.
pub const MAX_MAILBOX_PAYLOAD: usize = 48 * 1024;

/// Largest encoded mailbox item (body and signature), in bytes (PROTOCOL.md section 11.2): the
/// 93-byte header, [`MAX_MAILBOX_PAYLOAD`] and a 64-byte signature.
pub const MAX_MAILBOX_ITEM_LEN: usize = 93 + MAX_MAILBOX_PAYLOAD + 64;

/// Most message ids one signed mailbox delete request may name (PROTOCOL.md section 11.3).
pub const MAX_MAILBOX_DELETE_IDS: usize = 256;

/// Largest encoded mailbox delete request (body and signature), in bytes: a 43-byte header,
/// [`MAX_MAILBOX_DELETE_IDS`] ids of 16 bytes and a 64-byte signature.
pub const MAX_MAILBOX_DELETE_LEN: usize = 43 + 16 * MAX_MAILBOX_DELETE_IDS + 64;

/// Most item bytes (the sum of the encoded items) one `MAILBOX_ITEMS` answer may carry, so that
/// with its protobuf overhead it fits one 64 KiB wire frame (PROTOCOL.md section 11.4).
pub const MAX_MAILBOX_FETCH_BYTES: usize = 60 * 1024;

/// Most items one `MAILBOX_ITEMS` answer may carry.
pub const MAX_MAILBOX_FETCH_ITEMS: usize = 384;
