//! Re-derives every value in the foundation vectors (`testdata/safety_number.json`,
//! `contact_uri.json`, `keystore.json`) from the inputs recorded there.
//! Regenerate with `cargo run -p dp2ptcs-crypto --example gen_vectors`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dp2ptcs_crypto::keystore::ParsedKeystore;
use dp2ptcs_crypto::{ContactUri, Identity, SafetyNumber, UnlockedKeystore};
use serde_json::Value;

fn vector(name: &str) -> Value {
    let path = format!("{}/../../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn seed(v: &Value, field: &str) -> [u8; 32] {
    hex::decode(v[field].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn safety_number_vector() {
    let v = vector("safety_number.json");
    let a = Identity::from_seed(&seed(&v, "seed_a")).public();
    let b = Identity::from_seed(&seed(&v, "seed_b")).public();
    assert_eq!(hex::encode(a.to_bytes()), v["public_key_a"]);
    assert_eq!(a.node_id().to_hex(), v["node_id_a"]);
    assert_eq!(b.node_id().to_hex(), v["node_id_b"]);
    let sn = SafetyNumber::new(&a, &b);
    assert_eq!(sn.grouped(), v["safety_number"]);
    assert_eq!(SafetyNumber::new(&b, &a).grouped(), v["safety_number"]);
    assert_eq!(sn.qr_text(), v["qr_text_from_a"]);
}

#[test]
fn contact_uri_vector() {
    let v = vector("contact_uri.json");
    let a = Identity::from_seed(&seed(&v, "seed_a"));
    let addrs = [
        "192.0.2.7:4433".parse().unwrap(),
        "[2001:db8::7]:4433".parse().unwrap(),
    ];
    // Ed25519 signatures are deterministic, so the whole URI is reproducible.
    assert_eq!(
        ContactUri::new(&a, Some("Alpha 1"), &addrs)
            .unwrap()
            .to_string(),
        v["uri_a"]
    );
    let b = Identity::from_seed(&seed(&v, "seed_b"));
    assert_eq!(
        ContactUri::new(&b, None, &[]).unwrap().to_string(),
        v["uri_b"]
    );
    for field in ["uri_a", "uri_b"] {
        let parsed: ContactUri = v[field].as_str().unwrap().parse().unwrap();
        assert_eq!(parsed.to_string(), v[field]);
    }
}

#[test]
fn keystore_vector() {
    let v = vector("keystore.json");
    let file = v["file"].as_str().unwrap().as_bytes();
    let ks = UnlockedKeystore::decrypt(file, v["passphrase"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(hex::encode(*ks.identity().seed()), v["ed25519_seed"]);
    assert_eq!(hex::encode(ks.database_key()), v["database_key"]);
    let parsed = ParsedKeystore::parse(file).unwrap();
    assert_eq!(parsed.salt, core::array::from_fn::<u8, 16, _>(|i| i as u8));
    assert_eq!(
        parsed.nonce,
        core::array::from_fn::<u8, 12, _>(|i| 16 + i as u8)
    );
    assert!(UnlockedKeystore::decrypt(file, b"not it").is_err());
}
