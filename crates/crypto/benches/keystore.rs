//! Unlock time of `node.key` with the default Argon2id parameters (RFC 9106's second
//! recommendation: 64 MiB, 3 passes, 4 lanes), beside its baseline measured in the same run: the
//! bare Argon2id derivation with the same parameters. The ratio is the cost of everything the
//! keystore adds (JSON parsing, validation, AES-256-GCM); `tools/bench-ratios.py` prints it.

#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use criterion::{criterion_group, criterion_main, Criterion};
use dp2ptcs_crypto::keystore::{bench_derive_key, ParsedKeystore};
use dp2ptcs_crypto::{KdfParams, UnlockedKeystore};
use rand_core::OsRng;

const PASS: &[u8] = b"lantern orbit quarry mosaic";

fn unlock(c: &mut Criterion) {
    let mut group = c.benchmark_group("keystore_unlock");
    group.sample_size(10);
    for (label, params) in [
        ("rfc9106_second_64MiB_t3_p4", KdfParams::RFC9106_SECOND),
        (
            "light_16MiB_t2_p1",
            KdfParams {
                m_cost: 16 * 1024,
                t_cost: 2,
                p_cost: 1,
            },
        ),
    ] {
        let file = UnlockedKeystore::generate(&mut OsRng)
            .encrypt(PASS, params, &mut OsRng)
            .unwrap_or_default();
        let salt = ParsedKeystore::parse(&file)
            .map(|p| p.salt)
            .unwrap_or_default();
        group.bench_function(format!("{label}/unlock"), |b| {
            b.iter(|| UnlockedKeystore::decrypt(&file, PASS).is_ok())
        });
        group.bench_function(format!("{label}/baseline_argon2id_only"), |b| {
            b.iter(|| bench_derive_key(PASS, &salt, params))
        });
    }
    group.finish();
}

criterion_group!(benches, unlock);
criterion_main!(benches);
