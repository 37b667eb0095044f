//! Re-derives every value of `testdata/x3dh.json` and `testdata/ratchet_transcript.json` from
//! the recorded inputs, twice: through this crate, and independently from the primitives as
//! `PROTOCOL.md section 7` specifies them.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers abort on failure

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use dp2ptcs_crypto::fuzzing::FixedKeys;
use dp2ptcs_crypto::ratchet::{Header, RatchetKeyPair, RatchetMessage, Session};
use dp2ptcs_crypto::x3dh::{self, AssociatedData, PreKeyBundle, PreKeyStore, SharedSecret};
use dp2ptcs_crypto::Identity;
use ed25519_dalek::{Signature, VerifyingKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use x25519_dalek::{PublicKey, StaticSecret};

fn load(name: &str) -> Value {
    let path = format!("{}/../../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(
        v.as_str()
            .unwrap_or_else(|| panic!("not a hex string: {v}")),
    )
    .unwrap()
}

fn b32(v: &Value) -> [u8; 32] {
    bytes(v).try_into().unwrap()
}

fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .unwrap();
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn dh(secret: [u8; 32], public: [u8; 32]) -> [u8; 32] {
    let out = StaticSecret::from(secret)
        .diffie_hellman(&PublicKey::from(public))
        .to_bytes();
    assert_ne!(out, [0u8; 32]);
    out
}

fn x25519_public(secret: [u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(secret)).to_bytes()
}

/// The X25519 secret of an Ed25519 seed: SHA-512(seed)[0..32] (clamped by X25519).
fn identity_dh_secret(seed: [u8; 32]) -> [u8; 32] {
    Sha512::digest(seed)[..32].try_into().unwrap()
}

#[test]
fn x3dh_vectors() {
    let v = load("x3dh.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let seed_a = b32(&c["alice_identity_seed"]);
        let seed_b = b32(&c["bob_identity_seed"]);
        let ik_a = b32(&c["alice_identity_public"]);
        let ik_b = b32(&c["bob_identity_public"]);
        let spk = b32(&c["bob_signed_prekey_private"]);
        let spk_pub = b32(&c["bob_signed_prekey_public"]);
        let ek = b32(&c["alice_ephemeral_private"]);
        let spk_id = c["bob_signed_prekey_id"].as_u64().unwrap() as u32;
        let opk = c["bob_one_time_prekey_private"]
            .as_str()
            .map(|_| b32(&c["bob_one_time_prekey_private"]));
        let opk_id = c["bob_one_time_prekey_id"].as_u64().map(|x| x as u32);

        // Independent derivation.
        assert_eq!(Identity::from_seed(&seed_a).public().to_bytes(), ik_a);
        assert_eq!(x25519_public(spk), spk_pub);
        let ik_b_mont = VerifyingKey::from_bytes(&ik_b)
            .unwrap()
            .to_montgomery()
            .to_bytes();
        let ik_a_mont = VerifyingKey::from_bytes(&ik_a)
            .unwrap()
            .to_montgomery()
            .to_bytes();
        assert_eq!(x25519_public(identity_dh_secret(seed_b)), ik_b_mont);
        assert_eq!(x25519_public(identity_dh_secret(seed_a)), ik_a_mont);
        let mut signed = b"DP2PTCS_SignedPreKey_v1".to_vec();
        signed.extend_from_slice(&spk_id.to_be_bytes());
        signed.extend_from_slice(&spk_pub);
        let sig: [u8; 64] = bytes(&c["bob_signed_prekey_signature"]).try_into().unwrap();
        VerifyingKey::from_bytes(&ik_b)
            .unwrap()
            .verify_strict(&signed, &Signature::from_bytes(&sig))
            .unwrap();

        let mut ikm = vec![0xFF; 32];
        ikm.extend_from_slice(&dh(identity_dh_secret(seed_a), spk_pub));
        ikm.extend_from_slice(&dh(ek, ik_b_mont));
        ikm.extend_from_slice(&dh(ek, spk_pub));
        // Bob's side of the same DHs.
        assert_eq!(dh(spk, ik_a_mont), dh(identity_dh_secret(seed_a), spk_pub));
        assert_eq!(
            dh(identity_dh_secret(seed_b), x25519_public(ek)),
            dh(ek, ik_b_mont)
        );
        if let Some(opk) = opk {
            ikm.extend_from_slice(&dh(ek, x25519_public(opk)));
        }
        let sk: [u8; 32] = hkdf(&[0u8; 32], &ikm, b"DP2PTCS_X3DH_v1");
        assert_eq!(hex::encode(sk), c["shared_secret"].as_str().unwrap());
        let ad = [ik_a, ik_b].concat();
        assert_eq!(hex::encode(&ad), c["associated_data"].as_str().unwrap());

        let mut bundle = vec![1u8];
        bundle.extend_from_slice(&ik_b);
        bundle.extend_from_slice(&spk_id.to_be_bytes());
        bundle.extend_from_slice(&spk_pub);
        bundle.extend_from_slice(&sig);
        let mut initial = vec![1u8];
        initial.extend_from_slice(&ik_a);
        initial.extend_from_slice(&x25519_public(ek));
        initial.extend_from_slice(&spk_id.to_be_bytes());
        match (opk, opk_id) {
            (Some(opk), Some(id)) => {
                bundle.push(1);
                bundle.extend_from_slice(&id.to_be_bytes());
                bundle.extend_from_slice(&x25519_public(opk));
                initial.push(1);
                initial.extend_from_slice(&id.to_be_bytes());
            }
            _ => {
                bundle.push(0);
                initial.push(0);
            }
        }
        assert_eq!(bundle, bytes(&c["bundle"]));
        assert_eq!(initial, bytes(&c["initial_message"]));

        // Through the implementation.
        let alice = Identity::from_seed(&seed_a);
        let bob = Identity::from_seed(&seed_b);
        let parsed = PreKeyBundle::from_bytes(&bundle).unwrap();
        let a = x3dh::initiate(&mut FixedKeys::new(vec![ek]), &alice, &parsed).unwrap();
        assert_eq!(a.shared_secret.as_bytes(), &sk);
        assert_eq!(a.initial_message.to_bytes(), initial);
        let mut store = PreKeyStore::with_signed_prekey(&bob, spk_id, StaticSecret::from(spk));
        if let (Some(opk), Some(id)) = (opk, opk_id) {
            store.insert_one_time_prekey(id, StaticSecret::from(opk));
        }
        let b = x3dh::respond(&bob, &mut store, &a.initial_message, 0).unwrap();
        assert_eq!(b.shared_secret.as_bytes(), &sk);
        assert_eq!(b.associated_data.as_bytes().as_slice(), ad.as_slice());
    }
}

#[test]
fn ratchet_transcript_through_the_implementation() {
    let v = load("ratchet_transcript.json");
    let ss = SharedSecret::from_bytes(b32(&v["shared_secret"]));
    let ad = AssociatedData::from_bytes(bytes(&v["associated_data"]).try_into().unwrap());
    let keys = |name: &str| {
        v[name]
            .as_array()
            .unwrap()
            .iter()
            .map(b32)
            .collect::<Vec<_>>()
    };
    let mut sessions = [
        Session::new_initiator_with_key(
            RatchetKeyPair::from_secret_bytes(b32(&v["alice_initial_ratchet_private"])),
            &ss,
            ad,
            b32(&v["bob_signed_prekey_public"]),
        )
        .unwrap(),
        Session::new_responder(
            &ss,
            ad,
            RatchetKeyPair::from_secret_bytes(b32(&v["bob_signed_prekey_private"])),
        ),
    ];
    let mut rngs = [
        FixedKeys::new(keys("alice_ratchet_privates")),
        FixedKeys::new(keys("bob_ratchet_privates")),
    ];
    let idx = |s: &Value| usize::from(s.as_str().unwrap() == "bob");
    let (mut in_flight, mut contexts) = (HashMap::new(), HashMap::new());
    let (mut sends, mut delivered) = (0, 0);
    for e in v["events"].as_array().unwrap() {
        let label = e["label"].as_str().unwrap().to_string();
        let plaintext = e["plaintext"].as_str().unwrap();
        if e["op"] == "send" {
            let p = idx(&e["from"]);
            let m = sessions[p]
                .encrypt_in_context(plaintext.as_bytes(), &bytes(&e["context"]))
                .unwrap();
            contexts.insert(label.clone(), bytes(&e["context"]));
            assert_eq!(
                hex::encode(m.header.to_bytes()),
                e["header"].as_str().unwrap(),
                "{label}"
            );
            assert_eq!(
                hex::encode(&m.ciphertext),
                e["ciphertext"].as_str().unwrap(),
                "{label}"
            );
            in_flight.insert(label, m);
            sends += 1;
        } else {
            let p = idx(&e["to"]);
            let m: RatchetMessage = in_flight.remove(&label).unwrap();
            let context = &contexts[&label];
            let pt = sessions[p]
                .decrypt_in_context(&mut rngs[p], &m, context)
                .unwrap();
            assert_eq!(pt.as_slice(), plaintext.as_bytes(), "{label}");
            // A replay is rejected (its failed attempt may draw from an RNG: use another one).
            let mut spare = FixedKeys::new(vec![[0x77; 32]]);
            assert!(
                sessions[p]
                    .decrypt_in_context(&mut spare, &m, context)
                    .is_err(),
                "replay of {label}"
            );
            delivered += 1;
        }
    }
    assert!(sends >= 20);
    assert_eq!(sends, delivered);
    assert!(in_flight.is_empty());
}

#[test]
fn ratchet_transcript_independently() {
    let v = load("ratchet_transcript.json");
    let ad = bytes(&v["associated_data"]);
    let sk = b32(&v["shared_secret"]);
    let kdf_rk = |rk: &[u8; 32], dh_out: [u8; 32]| -> ([u8; 32], [u8; 32]) {
        let okm: [u8; 64] = hkdf(rk, &dh_out, b"DP2PTCS_Ratchet_v1");
        (okm[..32].try_into().unwrap(), okm[32..].try_into().unwrap())
    };

    // Chain keys that start a sending chain, by the ratchet public key of that chain.
    let mut chain_starts: HashMap<[u8; 32], [u8; 32]> = HashMap::new();
    let alice_first = b32(&v["alice_initial_ratchet_private"]);
    let (_, cks0) = kdf_rk(&sk, dh(alice_first, b32(&v["bob_signed_prekey_public"])));
    chain_starts.insert(x25519_public(alice_first), cks0);

    let steps = v["dh_ratchet_steps"].as_array().unwrap();
    assert!(steps.len() >= 4, "several DH ratchet steps");
    let mut alice_steps = 0;
    for s in steps {
        let rk = b32(&s["root_key_before"]);
        let theirs = b32(&s["their_public"]);
        let (rk_mid, ckr) = kdf_rk(&rk, dh(b32(&s["our_old_private"]), theirs));
        // The recorded chain key is after the delivery that caused the step (Nr messages on).
        let mut ck = ckr;
        for _ in 0..s["receiving_index_after_delivery"].as_u64().unwrap() {
            ck = hmac(&ck, &[0x02]);
        }
        assert_eq!(ck, b32(&s["receiving_chain_key_after_delivery"]));
        // The receiving chain equals the peer's sending chain for that key.
        assert_eq!(chain_starts.get(&theirs), Some(&ckr));
        let new = b32(&s["our_new_private"]);
        let (rk_after, cks) = kdf_rk(&rk_mid, dh(new, theirs));
        assert_eq!(rk_after, b32(&s["root_key_after"]));
        assert_eq!(cks, b32(&s["sending_chain_key"]));
        chain_starts.insert(x25519_public(new), cks);
        alice_steps += usize::from(s["party"] == "alice");
    }
    // Each party's new keys come from its list, in order.
    assert_eq!(
        alice_steps,
        v["alice_ratchet_privates"].as_array().unwrap().len()
    );

    let mut last_ck: HashMap<[u8; 32], (u32, [u8; 32])> = HashMap::new();
    for e in v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "send")
    {
        let header_bytes = bytes(&e["header"]);
        let header = Header::from_bytes(&header_bytes).unwrap();
        assert_eq!(header_bytes[0], 1);
        let dh_pub = *header.ratchet_key.as_bytes();
        let ck = b32(&e["chain_key"]);
        match last_ck.get(&dh_pub) {
            None => {
                assert_eq!(header.message_number, 0);
                assert_eq!(chain_starts.get(&dh_pub), Some(&ck), "chain start");
            }
            Some((n, prev)) => {
                assert_eq!(header.message_number, n + 1);
                assert_eq!(hmac(prev, &[0x02]), ck, "chain step");
            }
        }
        last_ck.insert(dh_pub, (header.message_number, ck));
        let mk = hmac(&ck, &[0x01]);
        let okm: [u8; 44] = hkdf(&[0u8; 32], &mk, b"DP2PTCS_MessageKeys_v1");
        let cipher = ChaCha20Poly1305::new_from_slice(&okm[..32]).unwrap();
        let context = bytes(&e["context"]);
        let aad = [ad.as_slice(), header_bytes.as_slice(), context.as_slice()].concat();
        let ct = bytes(&e["ciphertext"]);
        let pt = cipher
            .decrypt(
                okm[32..].into(),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(pt, e["plaintext"].as_str().unwrap().as_bytes());
    }
}
