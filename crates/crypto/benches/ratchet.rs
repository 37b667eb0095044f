//! Double Ratchet benchmarks, each beside a baseline measured in the same run.
//!
//! - `chain/<size>`: encrypt + decrypt of one message on an established chain (no DH step), vs
//!   raw ChaCha20-Poly1305 seal + open of the same size and AAD length (same crate, same calls:
//!   each side allocates its output), vs vodozemac's Olm session (v1) encrypt + decrypt. Our
//!   figure includes all the API does per message: a `KDF_CK` step and a message-key HKDF on
//!   each side, and wiping the returned plaintext when it is dropped.
//! - `dh_turn`: a full DH ratchet turn (A→B, B→A, each side does a DH ratchet step), vs the
//!   X25519 work it needs (2 key generations + 4 DH), vs the same ping-pong on vodozemac.
//!
//! Run: `cargo bench -p dp2ptcs-crypto --bench ratchet`.

#![allow(missing_docs)] // criterion_group! generates undocumented functions
#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark aborts on any failure

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dp2ptcs_crypto::{Identity, PreKeyStore, Session};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use vodozemac::olm::{Account, OlmMessage, Session as OlmSession, SessionConfig};
use x25519_dalek::{PublicKey, StaticSecret};

fn our_pair(rng: &mut ChaCha20Rng) -> (Session, Session) {
    let a = Identity::generate(rng);
    let b = Identity::generate(rng);
    let mut store = PreKeyStore::new(rng, &b);
    let mut alice = Session::initiate(rng, &a, &store.bundle(None)).unwrap();
    let initial = alice.pending_initial_message().unwrap().clone();
    let first = alice.encrypt(b"hi").unwrap();
    let (bob, _) = Session::respond(rng, &b, &mut store, &initial, &first, 0).unwrap();
    (alice, bob)
}

fn olm_pair() -> (OlmSession, OlmSession) {
    let alice = Account::new();
    let mut bob = Account::new();
    bob.generate_one_time_keys(1);
    let otk = *bob.one_time_keys().values().next().unwrap();
    bob.mark_keys_as_published();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(m) = a.encrypt(b"hi").unwrap() else {
        unreachable!()
    };
    let b = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &m)
        .unwrap()
        .session;
    (a, b)
}

fn chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain");
    for size in [64usize, 1024, 64 * 1024] {
        let msg = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));

        let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7u8; 32]));
        let nonce = [9u8; 12];
        let aad = [3u8; 105];
        g.bench_with_input(
            BenchmarkId::new("baseline_raw_chacha20poly1305", size),
            &msg,
            |b, m| {
                b.iter(|| {
                    let ct = cipher
                        .encrypt(Nonce::from_slice(&nonce), Payload { msg: m, aad: &aad })
                        .unwrap();
                    let pt = cipher
                        .decrypt(
                            Nonce::from_slice(&nonce),
                            Payload {
                                msg: &ct,
                                aad: &aad,
                            },
                        )
                        .unwrap();
                    black_box(pt)
                })
            },
        );

        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (mut alice, mut bob) = our_pair(&mut rng);
        g.bench_with_input(BenchmarkId::new("dp2ptcs_ratchet", size), &msg, |b, m| {
            b.iter(|| {
                let ct = alice.encrypt(m).unwrap();
                black_box(bob.decrypt(&mut rng, &ct).unwrap())
            })
        });

        let (mut a, mut b_) = olm_pair();
        g.bench_with_input(BenchmarkId::new("vodozemac_olm", size), &msg, |b, m| {
            b.iter(|| {
                let ct = a.encrypt(m).unwrap();
                black_box(b_.decrypt(&ct).unwrap())
            })
        });
    }
    g.finish();
}

fn dh_turn(c: &mut Criterion) {
    let mut g = c.benchmark_group("dh_turn");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let peer = PublicKey::from(&StaticSecret::random_from_rng(&mut rng));
    g.bench_function("baseline_x25519_2keygen_4dh", |b| {
        b.iter(|| {
            let mut acc = [0u8; 32];
            for _ in 0..2 {
                let s = StaticSecret::random_from_rng(&mut rng);
                let p = PublicKey::from(&s);
                for _ in 0..2 {
                    let d = s.diffie_hellman(black_box(&peer));
                    acc[0] ^= d.as_bytes()[0];
                }
                acc[1] ^= p.as_bytes()[0];
            }
            black_box(acc)
        })
    });

    let (mut alice, mut bob) = our_pair(&mut rng);
    g.bench_function("dp2ptcs_ratchet", |b| {
        b.iter(|| {
            let m = alice.encrypt(b"ping").unwrap();
            black_box(bob.decrypt(&mut rng, &m).unwrap());
            let r = bob.encrypt(b"pong").unwrap();
            black_box(alice.decrypt(&mut rng, &r).unwrap())
        })
    });

    let (mut a, mut b_) = olm_pair();
    g.bench_function("vodozemac_olm", |b| {
        b.iter(|| {
            let m = a.encrypt(b"ping").unwrap();
            black_box(b_.decrypt(&m).unwrap());
            let r = b_.encrypt(b"pong").unwrap();
            black_box(a.decrypt(&r).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, chain, dh_turn);
criterion_main!(benches);
