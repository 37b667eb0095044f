//! Writes the seed corpora of the `dht_record`, `dht_messages` and `dht_mailbox` fuzz targets
//! (`fuzz/corpus/dht_record/`, `fuzz/corpus/dht_messages/`, `fuzz/corpus/dht_mailbox/`): valid
//! encodings of every record kind, message, mailbox item and delete request, and a few truncated
//! or mutated ones. Deterministic; run from anywhere:
//! `cargo run -p dp2ptcs-dht --example gen_fuzz_seeds`. `tests/fuzz_corpus.rs` replays them.

use std::fs;
use std::path::Path;

use dp2ptcs_crypto::{Identity, PreKeyStore};
use dp2ptcs_dht::{
    encode_request, encode_response, Contact, MailboxDelete, MailboxItem, PeerRecord, Record,
    RecordPayload, Request, RequestId, Response,
};
use dp2ptcs_types::{MessageId, NodeId};
use x25519_dalek::StaticSecret;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let expires = 1_893_456_000_000;

    let owner = Identity::from_seed(&[0x31; 32]);
    let peer = Record::sign(
        &owner,
        2,
        expires,
        RecordPayload::Peer(PeerRecord {
            addresses: vec!["192.0.2.1:4433".parse()?, "[2001:db8::1]:4433".parse()?],
            mix_key: Some([0x32; 32]),
        }),
    )?;
    let bundle_owner = Identity::from_seed(&[0x33; 32]);
    let bundle = PreKeyStore::with_signed_prekey(&bundle_owner, 1, StaticSecret::from([0x34; 32]))
        .bundle(None);
    let prekey = Record::sign(
        &bundle_owner,
        1,
        expires,
        RecordPayload::PrekeyBundle(Box::new(bundle)),
    )?;

    let records = corpus.join("dht_record");
    let peer_bytes = peer.to_bytes();
    write(&records, "peer", &peer_bytes)?;
    write(&records, "prekey_bundle", &prekey.to_bytes())?;
    write(&records, "truncated", &peer_bytes[..peer_bytes.len() - 10])?;
    let mut flipped = peer_bytes.clone();
    flipped[60] ^= 0x01;
    write(&records, "bad_signature", &flipped)?;
    let mut kind = peer_bytes.clone();
    kind[1] = 0x07;
    write(&records, "unknown_kind", &kind)?;

    let mailbox = corpus.join("dht_mailbox");
    let recipient = Identity::from_seed(&[0x35; 32]);
    let item = MailboxItem::sign(
        &owner,
        recipient.node_id(),
        MessageId::from_bytes([0x36; 16]),
        expires,
        b"sealed".to_vec(),
    )?;
    let delete = MailboxDelete::sign(
        &recipient,
        vec![
            MessageId::from_bytes([0x36; 16]),
            MessageId::from_bytes([0x37; 16]),
        ],
        expires - 1,
    )?;
    let item_bytes = item.to_bytes();
    write(&mailbox, "item", &item_bytes)?;
    write(&mailbox, "delete", &delete.to_bytes())?;
    write(
        &mailbox,
        "item_truncated",
        &item_bytes[..item_bytes.len() - 3],
    )?;
    let mut flipped = item_bytes.clone();
    flipped[40] ^= 0x01;
    write(&mailbox, "item_bad_signature", &flipped)?;

    let messages = corpus.join("dht_messages");
    let target = NodeId::from_bytes([0x41; 32]);
    let requests = [
        ("request_ping", Request::Ping),
        ("request_find_node", Request::FindNode { target }),
        ("request_find_value", Request::FindValue { key: peer.key() }),
        (
            "request_store",
            Request::Store {
                record: Box::new(prekey.clone()),
            },
        ),
        (
            "request_mailbox_put",
            Request::MailboxPut {
                item: Box::new(item.clone()),
            },
        ),
        (
            "request_mailbox_fetch",
            Request::MailboxFetch {
                limit_bytes: 61_440,
                after: Some(MessageId::from_bytes([0x36; 16])),
            },
        ),
        (
            "request_mailbox_delete",
            Request::MailboxDelete {
                request: Box::new(delete),
            },
        ),
    ];
    for (i, (name, r)) in requests.into_iter().enumerate() {
        write(&messages, name, &encode_request(RequestId(i as u64), &r)?)?;
    }
    let closer: Vec<Contact> = (0..3u8)
        .map(|i| {
            let addr = if i == 2 {
                "[2001:db8::2]:9".parse()
            } else {
                format!("198.51.100.{i}:4433").parse()
            };
            addr.map(|a| Contact::new(NodeId::from_bytes([i; 32]), a))
        })
        .collect::<Result<_, _>>()?;
    let responses = [
        ("response_pong", Response::Pong),
        ("response_nodes", Response::Nodes { closer }),
        (
            "response_value",
            Response::Value {
                record: Box::new(peer),
            },
        ),
        ("response_stored", Response::Stored { accepted: true }),
        (
            "response_mailbox_stored",
            Response::MailboxStored {
                accepted: false,
                reason: 2,
            },
        ),
        (
            "response_mailbox_items",
            Response::MailboxItems {
                items: vec![item],
                more: true,
            },
        ),
        (
            "response_mailbox_deleted",
            Response::MailboxDeleted { removed: 1 },
        ),
    ];
    let mut nodes = Vec::new();
    for (i, (name, r)) in responses.into_iter().enumerate() {
        let bytes = encode_response(RequestId(100 + i as u64), &r)?;
        if name == "response_nodes" {
            nodes = bytes.clone();
        }
        write(&messages, name, &bytes)?;
    }
    write(&messages, "truncated_nodes", &nodes[..nodes.len() - 5])?;
    // A NODES answer whose one contact has port 65536, assembled by hand (the encoder cannot
    // produce it): DhtResponse { request_id: 1, nodes: { contacts: [{ node_id, ip, port }] } }.
    let mut contact = vec![0x0a, 32];
    contact.extend_from_slice(&[0x42; 32]);
    contact.extend_from_slice(&[0x12, 4, 192, 0, 2, 1]);
    contact.extend_from_slice(&[0x18, 0x80, 0x80, 0x04]);
    let mut big_port = vec![
        0x08,
        0x01,
        0x1a,
        contact.len() as u8 + 2,
        0x0a,
        contact.len() as u8,
    ];
    big_port.extend_from_slice(&contact);
    write(&messages, "bad_port", &big_port)?;
    write(&messages, "missing_body", &[0x08, 0x01])?;
    println!("wrote fuzz/corpus/dht_record, fuzz/corpus/dht_messages and fuzz/corpus/dht_mailbox");
    Ok(())
}
