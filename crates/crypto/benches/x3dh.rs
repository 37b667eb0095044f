//! X3DH benchmark: initiator + responder (with a one-time prekey, bundle signature checked),
//! beside the sum of the DH and signature operations it needs (1 strict Ed25519 verification,
//! 1 X25519 key generation, 8 X25519 DH), and vodozemac's Olm outbound + inbound session
//! creation (3DH with a one-time key, no signature check, plus one first message).
//!
//! Run: `cargo bench -p dp2ptcs-crypto --bench x3dh`.

#![allow(missing_docs)] // criterion_group! generates undocumented functions
#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark aborts on any failure

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use dp2ptcs_crypto::{x3dh, Identity, PreKeyStore};
use ed25519_dalek::{Signature, Signer, SigningKey};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use vodozemac::olm::{Account, OlmMessage, SessionConfig};
use x25519_dalek::{PublicKey, StaticSecret};

fn x3dh_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("x3dh");
    let mut rng = ChaCha20Rng::seed_from_u64(3);

    let sk = SigningKey::generate(&mut rng);
    let vk = sk.verifying_key();
    let msg = [1u8; 59];
    let sig: Signature = sk.sign(&msg);
    let peer = PublicKey::from(&StaticSecret::random_from_rng(&mut rng));
    let fixed = StaticSecret::random_from_rng(&mut rng);
    g.bench_function("baseline_1verify_1keygen_8dh", |b| {
        b.iter(|| {
            vk.verify_strict(black_box(&msg), &sig).unwrap();
            let e = StaticSecret::random_from_rng(&mut rng);
            let mut acc = PublicKey::from(&e).to_bytes()[0];
            for i in 0..8 {
                let s = if i % 2 == 0 { &e } else { &fixed };
                acc ^= s.diffie_hellman(black_box(&peer)).as_bytes()[0];
            }
            black_box(acc)
        })
    });

    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let base = PreKeyStore::new(&mut rng, &bob);
    let _ = base;
    g.bench_function("dp2ptcs_x3dh_initiate_respond", |b| {
        b.iter_batched(
            || {
                let mut r = ChaCha20Rng::seed_from_u64(4);
                let mut store = PreKeyStore::new(&mut r, &bob);
                let ids = store.generate_one_time_prekeys(&mut r, 1);
                let bundle = store.bundle(Some(ids[0].0));
                (store, bundle, r)
            },
            |(mut store, bundle, mut r)| {
                let a = x3dh::initiate(&mut r, &alice, &bundle).unwrap();
                let out = x3dh::respond(&bob, &mut store, &a.initial_message, 0).unwrap();
                black_box((a, out))
            },
            BatchSize::SmallInput,
        )
    });

    let olm_alice = Account::new();
    g.bench_function("vodozemac_olm_outbound_inbound", |b| {
        b.iter_batched(
            || {
                let mut bob = Account::new();
                bob.generate_one_time_keys(1);
                let otk = *bob.one_time_keys().values().next().unwrap();
                bob.mark_keys_as_published();
                (bob, otk)
            },
            |(mut bob, otk)| {
                let mut s = olm_alice
                    .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
                    .unwrap();
                let OlmMessage::PreKey(m) = s.encrypt(b"").unwrap() else {
                    unreachable!()
                };
                let r = bob
                    .create_inbound_session(
                        SessionConfig::version_1(),
                        olm_alice.curve25519_key(),
                        &m,
                    )
                    .unwrap();
                black_box((s, r.session))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, x3dh_bench);
criterion_main!(benches);
