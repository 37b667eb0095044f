//! Regenerates the known-answer vectors under `testdata/` from fixed keys.
//!
//! Run from the repository root: `cargo run -p dp2ptcs-crypto --example gen_vectors`.
//! The tests re-derive every value from the inputs recorded in the files.

use std::fs;
use std::path::Path;

use dp2ptcs_crypto::{ContactUri, Identity, KdfParams, SafetyNumber, UnlockedKeystore};
use rand_core::{CryptoRng, RngCore};
use serde_json::json;

/// A deterministic "RNG" that hands out fixed bytes, so the keystore vector is reproducible.
struct FixedBytes(Vec<u8>, usize);

impl RngCore for FixedBytes {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.0[self.1 % self.0.len()];
            self.1 += 1;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for FixedBytes {}

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
    let mut rng = FixedBytes((0u8..=255).collect(), 0);
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
    Ok(())
}
