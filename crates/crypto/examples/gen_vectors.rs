//! Regenerates the known-answer vectors under `testdata/` from fixed keys.
//!
//! Run from the repository root: `cargo run -p dp2ptcs-crypto --example gen_vectors`.
//! The tests re-derive every value from the inputs recorded in the files.

use std::fs;
use std::path::Path;

use dp2ptcs_crypto::{ContactUri, Identity, KdfParams, SafetyNumber, UnlockedKeystore};
use serde_json::json;

fn write(dir: &Path, name: &str, value: serde_json::Value) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    fs::write(dir.join(name), text)?;
    println!("wrote testdata/{name}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    fs::create_dir_all(&dir)?;

    let a = Identity::from_seed(&[1; 32]);
    let b = Identity::from_seed(&[2; 32]);
    let sn = SafetyNumber::new(&a.public(), &b.public());
    write(
        &dir,
        "safety_number.json",
        json!({
            "description": "Safety number of identities A (seed 01*32) and B (seed 02*32); see PROTOCOL.md",
            "seed_a": hex::encode([1u8; 32]),
            "seed_b": hex::encode([2u8; 32]),
            "public_key_a": hex::encode(a.public().to_bytes()),
            "public_key_b": hex::encode(b.public().to_bytes()),
            "node_id_a": a.node_id().to_hex(),
            "node_id_b": b.node_id().to_hex(),
            "safety_number": sn.grouped(),
            "qr_text_from_a": sn.qr_text(),
        }),
    )?;

    let addrs = ["192.0.2.7:4433".parse()?, "[2001:db8::7]:4433".parse()?];
    let uri = ContactUri::new(&a, Some("Alpha 1"), &addrs)?;
    let bare = ContactUri::new(&b, None, &[])?;
    write(
        &dir,
        "contact_uri.json",
        json!({
            "description": "Contact URIs signed by A (seed 01*32) and B (seed 02*32); see PROTOCOL.md",
            "seed_a": hex::encode([1u8; 32]),
            "uri_a": uri.to_string(),
            "seed_b": hex::encode([2u8; 32]),
            "uri_b": bare.to_string(),
        }),
    )?;

    let params = KdfParams {
        m_cost: 256,
        t_cost: 2,
        p_cost: 1,
    };
    let ks = UnlockedKeystore::from_parts(Identity::from_seed(&[1; 32]), [0x42; 32]);
    // Salt 00..0f, then nonce 10..1b.
    let mut rng = dp2ptcs_crypto::fuzzing::FixedKeys::new(vec![core::array::from_fn(|i| i as u8)]);
    let file = ks.encrypt(b"correct horse battery staple", params, &mut rng)?;
    write(
        &dir,
        "keystore.json",
        json!({
            "description": "node.key with small Argon2id parameters (salt 00..0f, nonce 10..1b); see PROTOCOL.md",
            "passphrase": "correct horse battery staple",
            "ed25519_seed": hex::encode([1u8; 32]),
            "database_key": hex::encode([0x42u8; 32]),
            "file": String::from_utf8(file)?,
        }),
    )?;

    let session_inputs = x3dh_vectors(&dir)?;
    ratchet_transcript(&dir, &session_inputs)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// X3DH and Double Ratchet vectors (PROTOCOL.md section 7).

use dp2ptcs_crypto::fuzzing::FixedKeys;
use dp2ptcs_crypto::ratchet::{RatchetKeyPair, RatchetMessage, Session};
use dp2ptcs_crypto::x3dh::{self, PreKeyStore};
use serde_json::Value;
use x25519_dalek::StaticSecret;

/// What the ratchet transcript starts from: the X3DH outcome with a one-time prekey.
struct SessionInputs {
    shared_secret: [u8; 32],
    associated_data: [u8; 64],
    bob_signed_prekey_private: [u8; 32],
    bob_signed_prekey_public: [u8; 32],
}

fn x3dh_vectors(dir: &Path) -> Result<SessionInputs, Box<dyn std::error::Error>> {
    let alice = Identity::from_seed(&[1; 32]);
    let bob = Identity::from_seed(&[2; 32]);
    let spk = [0x11u8; 32];
    let opk = [0x12u8; 32];
    let mut cases = Vec::new();
    let mut inputs = None;
    for (name, ek, with_opk) in [
        ("without_one_time_prekey", [0x14u8; 32], false),
        ("with_one_time_prekey", [0x13u8; 32], true),
    ] {
        let mut store = PreKeyStore::with_signed_prekey(&bob, 1, StaticSecret::from(spk));
        let opk_public = store.insert_one_time_prekey(7, StaticSecret::from(opk));
        let bundle = store.bundle(with_opk.then_some(7));
        let a = x3dh::initiate(&mut FixedKeys::new(vec![ek]), &alice, &bundle)?;
        let b = x3dh::respond(&bob, &mut store, &a.initial_message, 0)?;
        assert_eq!(a.shared_secret.as_bytes(), b.shared_secret.as_bytes());
        if with_opk {
            inputs = Some(SessionInputs {
                shared_secret: *a.shared_secret.as_bytes(),
                associated_data: *a.associated_data.as_bytes(),
                bob_signed_prekey_private: spk,
                bob_signed_prekey_public: *bundle.signed_prekey(),
            });
        }
        cases.push(json!({
            "name": name,
            "alice_identity_seed": hex::encode([1u8; 32]),
            "bob_identity_seed": hex::encode([2u8; 32]),
            "alice_identity_public": hex::encode(alice.public().to_bytes()),
            "bob_identity_public": hex::encode(bob.public().to_bytes()),
            "bob_signed_prekey_id": 1,
            "bob_signed_prekey_private": hex::encode(spk),
            "bob_signed_prekey_public": hex::encode(bundle.signed_prekey()),
            "bob_signed_prekey_signature": hex::encode(bundle.signed_prekey_signature()),
            "bob_one_time_prekey_id": if with_opk { json!(7) } else { Value::Null },
            "bob_one_time_prekey_private": if with_opk { json!(hex::encode(opk)) } else { Value::Null },
            "bob_one_time_prekey_public": if with_opk { json!(hex::encode(opk_public)) } else { Value::Null },
            "alice_ephemeral_private": hex::encode(ek),
            "bundle": hex::encode(bundle.to_bytes()),
            "initial_message": hex::encode(a.initial_message.to_bytes()),
            "shared_secret": hex::encode(a.shared_secret.as_bytes()),
            "associated_data": hex::encode(a.associated_data.as_bytes()),
        }));
    }
    write(
        dir,
        "x3dh.json",
        json!({
            "description": "X3DH (PROTOCOL.md section 7) between A (seed 01*32, initiator) and B (seed 02*32). Private keys are X25519 secrets before clamping.",
            "info": String::from_utf8_lossy(x3dh::X3DH_INFO),
            "cases": cases,
        }),
    )?;
    Ok(inputs.ok_or("no session inputs")?)
}

fn pickle_json(s: &Session) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(&s.pickle())
}

fn field(v: &Value, name: &str) -> Value {
    v.get(name).cloned().unwrap_or(Value::Null)
}

/// The context a transcript message is encrypted in: none for an even label number (plain
/// `encrypt`), else one byte, as an envelope's type (PROTOCOL.md 8.2).
fn context_of(label: &str) -> Vec<u8> {
    let n: u8 = label[1..].parse().unwrap_or(0);
    if n.is_multiple_of(2) {
        Vec::new()
    } else {
        vec![1 + n % 5]
    }
}

fn ratchet_transcript(
    dir: &Path,
    inputs: &SessionInputs,
) -> Result<(), Box<dyn std::error::Error>> {
    let alice_first = [0x21u8; 32];
    let alice_keys: Vec<[u8; 32]> = (0x22u8..0x30).map(|b| [b; 32]).collect();
    let bob_keys: Vec<[u8; 32]> = (0x31u8..0x40).map(|b| [b; 32]).collect();
    let ss = x3dh::SharedSecret::from_bytes(inputs.shared_secret);
    let ad = x3dh::AssociatedData::from_bytes(inputs.associated_data);
    let mut sessions = [
        Session::new_initiator_with_key(
            RatchetKeyPair::from_secret_bytes(alice_first),
            &ss,
            ad,
            inputs.bob_signed_prekey_public,
        )?,
        Session::new_responder(
            &ss,
            ad,
            RatchetKeyPair::from_secret_bytes(inputs.bob_signed_prekey_private),
        ),
    ];
    let mut rngs = [
        FixedKeys::new(alice_keys.clone()),
        FixedKeys::new(bob_keys.clone()),
    ];
    let names = ["alice", "bob"];

    // 'a'/'b' + count: that party sends `count` messages; 'A'/'B' + list: deliver those
    // message labels (sender's letter + number) to Alice/Bob, in that order.
    let schedule: &[(&str, &[&str])] = &[
        ("a", &["a0", "a1", "a2"]),
        ("B", &["a1", "a0"]),
        ("b", &["b0", "b1"]),
        ("A", &["b1"]),
        ("a", &["a3", "a4", "a5"]),
        ("B", &["a5", "a2", "a3"]),
        ("b", &["b2", "b3"]),
        ("A", &["b0", "b3", "b2"]),
        ("a", &["a6", "a7"]),
        ("B", &["a6", "a4", "a7"]),
        ("b", &["b4", "b5", "b6"]),
        ("A", &["b6", "b4", "b5"]),
        ("a", &["a8"]),
        ("B", &["a8"]),
        ("b", &["b7"]),
        ("A", &["b7"]),
        ("a", &["a9", "a10", "a11"]),
        ("B", &["a11", "a9"]),
        ("b", &["b8", "b9"]),
        ("A", &["b9", "b8"]),
        ("B", &["a10"]),
    ];
    let mut in_flight: std::collections::HashMap<String, RatchetMessage> = Default::default();
    let mut events = Vec::new();
    let mut root_steps = Vec::new();
    for (who, labels) in schedule {
        let party = if who.eq_ignore_ascii_case("a") { 0 } else { 1 };
        let sending = who.chars().all(|c| c.is_ascii_lowercase());
        for label in labels.iter() {
            if sending {
                let before = pickle_json(&sessions[party])?;
                let plaintext = format!("{} says {label}", names[party]);
                let context = context_of(label);
                let m = sessions[party].encrypt_in_context(plaintext.as_bytes(), &context)?;
                events.push(json!({
                    "op": "send",
                    "from": names[party],
                    "label": label,
                    "plaintext": plaintext,
                    "context": hex::encode(&context),
                    "chain_key": field(&before, "sending_chain_key"),
                    "header": hex::encode(m.header.to_bytes()),
                    "ciphertext": hex::encode(&m.ciphertext),
                }));
                in_flight.insert(label.to_string(), m);
            } else {
                let m = in_flight.remove(*label).ok_or("message not in flight")?;
                let before = pickle_json(&sessions[party])?;
                let pt =
                    sessions[party].decrypt_in_context(&mut rngs[party], &m, &context_of(label))?;
                let after = pickle_json(&sessions[party])?;
                events.push(json!({
                    "op": "deliver",
                    "to": names[party],
                    "label": label,
                    "plaintext": String::from_utf8(pt.to_vec())?,
                }));
                if field(&before, "receiving_ratchet_key") != field(&after, "receiving_ratchet_key")
                {
                    root_steps.push(json!({
                        "party": names[party],
                        "root_key_before": field(&before, "root_key"),
                        "our_old_private": field(&before, "sending_ratchet_secret"),
                        "their_public": field(&after, "receiving_ratchet_key"),
                        "receiving_chain_key_after_delivery": field(&after, "receiving_chain_key"),
                        "receiving_index_after_delivery": field(&after, "receiving_index"),
                        "our_new_private": field(&after, "sending_ratchet_secret"),
                        "sending_chain_key": field(&after, "sending_chain_key"),
                        "root_key_after": field(&after, "root_key"),
                    }));
                }
            }
        }
    }
    if !in_flight.is_empty() {
        return Err("schedule leaves messages undelivered".into());
    }
    let alice_used = rngs[0].used();
    let bob_used = rngs[1].used();
    write(
        dir,
        "ratchet_transcript.json",
        json!({
            "description": "Double Ratchet transcript (PROTOCOL.md section 7) from the with_one_time_prekey case of x3dh.json. Alice starts with RatchetInitAlice(SK, SPK_B) and ratchet key alice_initial_ratchet_private; Bob with RatchetInitBob(SK, SPK_B). Each DH ratchet step draws the party's next key from its list, in order. chain_key is the sending chain key the message key was derived from. context (hex, may be empty) is appended to the associated data: AD || header || context.",
            "shared_secret": hex::encode(inputs.shared_secret),
            "associated_data": hex::encode(inputs.associated_data),
            "bob_signed_prekey_private": hex::encode(inputs.bob_signed_prekey_private),
            "bob_signed_prekey_public": hex::encode(inputs.bob_signed_prekey_public),
            "alice_initial_ratchet_private": hex::encode(alice_first),
            "alice_ratchet_privates": alice_keys[..alice_used].iter().map(hex::encode).collect::<Vec<_>>(),
            "bob_ratchet_privates": bob_keys[..bob_used].iter().map(hex::encode).collect::<Vec<_>>(),
            "events": events,
            "dh_ratchet_steps": root_steps,
        }),
    )?;
    Ok(())
}
