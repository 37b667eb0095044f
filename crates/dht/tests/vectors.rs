//! Checks `testdata/dht_record.json` (written by `examples/gen_vectors.rs`) against the library:
//! each record decodes and verifies, its fields are the recorded ones, and signing the same
//! inputs again gives the same bytes. `tools/check_vectors.py` checks it independently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use dp2ptcs_crypto::Identity;
use dp2ptcs_dht::{Record, RecordKind, RecordPayload};
use serde_json::Value;

fn vectors() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/dht_record.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex_field(v: &Value, name: &str) -> Vec<u8> {
    hex::decode(v[name].as_str().unwrap()).unwrap()
}

#[test]
fn the_recorded_records_verify_and_carry_their_fields() {
    let all = vectors();
    for (name, kind) in [
        ("peer_record", RecordKind::Peer),
        ("prekey_bundle_record", RecordKind::PrekeyBundle),
    ] {
        let v = &all[name];
        let bytes = hex_field(v, "record");
        let record = Record::from_bytes(&bytes).unwrap();
        let seed: [u8; 32] = hex_field(v, "seed").try_into().unwrap();
        let owner = Identity::from_seed(&seed);
        assert_eq!(
            record.owner().to_bytes().to_vec(),
            hex_field(v, "owner_public_key")
        );
        assert_eq!(record.key().kind, kind);
        assert_eq!(record.key().owner, owner.node_id());
        assert_eq!(record.key().owner.to_hex(), v["key_owner_node_id"]);
        assert_eq!(record.sequence(), v["sequence"].as_u64().unwrap());
        assert_eq!(record.expires_at_ms(), v["expires_at_ms"].as_u64().unwrap());
        assert_eq!(record.signature().to_vec(), hex_field(v, "signature"));
        assert_eq!(&bytes[..bytes.len() - 64], hex_field(v, "body"));
        // Deterministic: the same inputs sign to the same bytes.
        let again = Record::sign(
            &owner,
            record.sequence(),
            record.expires_at_ms(),
            record.payload().clone(),
        )
        .unwrap();
        assert_eq!(again.to_bytes(), bytes);
        match record.payload() {
            RecordPayload::Peer(p) => {
                let addrs = v["payload"]["addresses"].as_array().unwrap();
                assert_eq!(p.addresses.len(), addrs.len());
                for (a, want) in p.addresses.iter().zip(addrs) {
                    assert_eq!(a.ip().to_string(), want["ip"]);
                    assert_eq!(u64::from(a.port()), want["port"]);
                }
                assert_eq!(p.mix_key.map(hex::encode).unwrap(), v["payload"]["mix_key"]);
            }
            RecordPayload::PrekeyBundle(b) => {
                assert_eq!(b.signed_prekey_id(), 3);
                assert_eq!(
                    hex::encode(b.signed_prekey()),
                    v["payload"]["signed_prekey"]
                );
                let (id, opk) = b.one_time_prekey().unwrap();
                assert_eq!(u64::from(id), v["payload"]["one_time_prekey_id"]);
                assert_eq!(hex::encode(opk), v["payload"]["one_time_prekey"]);
            }
        }
    }
}

/// `testdata/mailbox.json` (PROTOCOL.md section 11): the key, the item and the delete request
/// decode, verify, carry their fields, and sign again to the same bytes.
#[test]
fn the_recorded_mailbox_vectors_verify_and_carry_their_fields() {
    use dp2ptcs_dht::{mailbox_key, MailboxDelete, MailboxItem};
    use dp2ptcs_types::MessageId;

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/mailbox.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let seed = |hex_seed: &Value| -> [u8; 32] {
        hex::decode(hex_seed.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let recipient = Identity::from_seed(&seed(&v["recipient_seed"]));
    assert_eq!(recipient.node_id().to_hex(), v["recipient_node_id"]);
    assert_eq!(mailbox_key(&recipient.node_id()).to_hex(), v["mailbox_key"]);

    let it = &v["item"];
    let sender = Identity::from_seed(&seed(&it["sender_seed"]));
    let bytes = hex_field(it, "item");
    let item = MailboxItem::from_bytes(&bytes).unwrap();
    assert_eq!(
        item.sender().to_bytes().to_vec(),
        hex_field(it, "sender_public_key")
    );
    assert_eq!(item.recipient(), &recipient.node_id());
    assert_eq!(item.message_id().to_hex(), it["message_id"]);
    assert_eq!(item.expires_at_ms(), it["expires_at_ms"].as_u64().unwrap());
    assert_eq!(item.payload(), hex_field(it, "payload"));
    assert_eq!(item.signature().to_vec(), hex_field(it, "signature"));
    assert_eq!(&bytes[..bytes.len() - 64], hex_field(it, "body"));
    let again = MailboxItem::sign(
        &sender,
        *item.recipient(),
        *item.message_id(),
        item.expires_at_ms(),
        item.payload().to_vec(),
    )
    .unwrap();
    assert_eq!(again.to_bytes(), bytes);

    let d = &v["delete"];
    let bytes = hex_field(d, "delete");
    let delete = MailboxDelete::from_bytes(&bytes).unwrap();
    assert_eq!(delete.recipient_id(), recipient.node_id());
    assert_eq!(delete.issued_at_ms(), d["issued_at_ms"].as_u64().unwrap());
    let ids: Vec<MessageId> = d["message_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(delete.ids(), &ids[..]);
    assert_eq!(&bytes[..bytes.len() - 64], hex_field(d, "body"));
    let again = MailboxDelete::sign(&recipient, ids, delete.issued_at_ms()).unwrap();
    assert_eq!(again.to_bytes(), bytes);
}
