//! Regenerates `testdata/dht_record.json`: a peer record and a prekey-bundle record (PROTOCOL.md
//! section 10.2) signed by fixed identities, with every input field, so that an independent
//! implementation (`tools/check_vectors.py`) can rebuild the body and verify the signature; and
//! `testdata/mailbox.json`: a mailbox key, item and delete request (PROTOCOL.md section 11) the
//! same way.
//!
//! Run from anywhere: `cargo run -p dp2ptcs-dht --example gen_vectors`. Ed25519 signatures are
//! deterministic, so the file regenerates byte for byte.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use dp2ptcs_crypto::{Identity, PreKeyStore};
use dp2ptcs_dht::{
    mailbox_key, MailboxDelete, MailboxItem, PeerRecord, Record, RecordPayload,
    MAILBOX_DELETE_CONTEXT, MAILBOX_ITEM_CONTEXT, MAILBOX_KEY_CONTEXT, RECORD_SIGNATURE_CONTEXT,
};
use dp2ptcs_types::MessageId;
use serde_json::{json, Value};
use x25519_dalek::StaticSecret;

/// 2030-01-01T00:00:00Z in Unix milliseconds.
const EXPIRES_AT_MS: u64 = 1_893_456_000_000;

fn record_json(seed: [u8; 32], record: &Record, payload: Value) -> Value {
    let bytes = record.to_bytes();
    let (body, signature) = bytes.split_at(bytes.len() - 64);
    let key = record.key();
    json!({
        "seed": hex::encode(seed),
        "owner_public_key": hex::encode(record.owner().to_bytes()),
        "kind": key.kind.code(),
        "sequence": record.sequence(),
        "expires_at_ms": record.expires_at_ms(),
        "payload": payload,
        "body": hex::encode(body),
        "signature": hex::encode(signature),
        "record": hex::encode(&bytes),
        "key_owner_node_id": key.owner.to_hex(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    fs::create_dir_all(&dir)?;

    let peer_seed = [0x21u8; 32];
    let peer_owner = Identity::from_seed(&peer_seed);
    let addresses: Vec<SocketAddr> =
        vec!["192.0.2.10:4433".parse()?, "[2001:db8::10]:4434".parse()?];
    let mix_key = [0x33u8; 32];
    let peer = Record::sign(
        &peer_owner,
        7,
        EXPIRES_AT_MS,
        RecordPayload::Peer(PeerRecord {
            addresses: addresses.clone(),
            mix_key: Some(mix_key),
        }),
    )?;
    let peer_payload = json!({
        "addresses": addresses
            .iter()
            .map(|a| json!({ "ip": a.ip().to_string(), "port": a.port() }))
            .collect::<Vec<_>>(),
        "mix_key": hex::encode(mix_key),
    });

    let bundle_seed = [0x22u8; 32];
    let bundle_owner = Identity::from_seed(&bundle_seed);
    let spk_private = [0x44u8; 32];
    let opk_private = [0x45u8; 32];
    let mut store =
        PreKeyStore::with_signed_prekey(&bundle_owner, 3, StaticSecret::from(spk_private));
    store.insert_one_time_prekey(9, StaticSecret::from(opk_private));
    let bundle = store.bundle(Some(9));
    let Some((opk_id, opk_public)) = bundle.one_time_prekey() else {
        return Err("the bundle lost its one-time prekey".into());
    };
    let bundle_payload = json!({
        "identity_key": hex::encode(bundle.identity().to_bytes()),
        "signed_prekey_id": bundle.signed_prekey_id(),
        "signed_prekey_private": hex::encode(spk_private),
        "signed_prekey": hex::encode(bundle.signed_prekey()),
        "signed_prekey_signature": hex::encode(bundle.signed_prekey_signature()),
        "one_time_prekey_id": opk_id,
        "one_time_prekey_private": hex::encode(opk_private),
        "one_time_prekey": hex::encode(opk_public),
    });
    let prekey = Record::sign(
        &bundle_owner,
        1,
        EXPIRES_AT_MS,
        RecordPayload::PrekeyBundle(Box::new(bundle)),
    )?;

    let value = json!({
        "description": "DHT records (PROTOCOL.md section 10.2): a peer record and a prekey-bundle record, each signed by the identity with the given Ed25519 seed. X25519 private keys are secrets before clamping.",
        "signature_context": String::from_utf8_lossy(RECORD_SIGNATURE_CONTEXT),
        "peer_record": record_json(peer_seed, &peer, peer_payload),
        "prekey_bundle_record": record_json(bundle_seed, &prekey, bundle_payload),
    });
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    fs::write(dir.join("dht_record.json"), text)?;
    println!("wrote testdata/dht_record.json");
    mailbox_vectors(&dir)
}

fn split_signature(bytes: &[u8]) -> (String, String) {
    let (body, signature) = bytes.split_at(bytes.len() - 64);
    (hex::encode(body), hex::encode(signature))
}

fn mailbox_vectors(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let sender_seed = [0x31u8; 32];
    let recipient_seed = [0x32u8; 32];
    let sender = Identity::from_seed(&sender_seed);
    let recipient = Identity::from_seed(&recipient_seed);
    let ids = [
        MessageId::from_bytes([0x41; 16]),
        MessageId::from_bytes([0x42; 16]),
    ];
    let payload = b"sealed envelope bytes".to_vec();
    let item = MailboxItem::sign(
        &sender,
        recipient.node_id(),
        ids[0],
        EXPIRES_AT_MS,
        payload.clone(),
    )?;
    let item_bytes = item.to_bytes();
    let (item_body, item_signature) = split_signature(&item_bytes);
    let issued_at_ms = EXPIRES_AT_MS - 7 * 24 * 60 * 60 * 1000;
    let delete = MailboxDelete::sign(&recipient, ids.to_vec(), issued_at_ms)?;
    let delete_bytes = delete.to_bytes();
    let (delete_body, delete_signature) = split_signature(&delete_bytes);
    let value = json!({
        "description": "Mailboxes (PROTOCOL.md section 11): the mailbox key of a recipient, an item signed by a sender for it, and a delete request signed by the recipient, each identity given by its Ed25519 seed.",
        "key_context": String::from_utf8_lossy(MAILBOX_KEY_CONTEXT),
        "item_context": String::from_utf8_lossy(MAILBOX_ITEM_CONTEXT),
        "delete_context": String::from_utf8_lossy(MAILBOX_DELETE_CONTEXT),
        "recipient_seed": hex::encode(recipient_seed),
        "recipient_public_key": hex::encode(recipient.public().to_bytes()),
        "recipient_node_id": recipient.node_id().to_hex(),
        "mailbox_key": mailbox_key(&recipient.node_id()).to_hex(),
        "item": {
            "sender_seed": hex::encode(sender_seed),
            "sender_public_key": hex::encode(sender.public().to_bytes()),
            "message_id": ids[0].to_hex(),
            "expires_at_ms": EXPIRES_AT_MS,
            "payload": hex::encode(&payload),
            "body": item_body,
            "signature": item_signature,
            "item": hex::encode(&item_bytes),
        },
        "delete": {
            "issued_at_ms": issued_at_ms,
            "message_ids": ids.iter().map(MessageId::to_hex).collect::<Vec<_>>(),
            "body": delete_body,
            "signature": delete_signature,
            "delete": hex::encode(&delete_bytes),
        },
    });
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    fs::write(dir.join("mailbox.json"), text)?;
    println!("wrote testdata/mailbox.json");
    Ok(())
}
