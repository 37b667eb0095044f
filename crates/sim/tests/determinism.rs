#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The simulator is a measuring instrument: the same seed must give the same bytes, and a small
//! network must behave.

use dp2ptcs_sim::{run, SimConfig};

fn small(seed: u64) -> SimConfig {
    SimConfig {
        nodes: 150,
        seed,
        churn: 0.2,
        adversarial: 0.1,
        lookups: 60,
        records: 15,
        duration_ms: 10 * 60 * 1000,
        attacker_ids: 200,
        ..SimConfig::default()
    }
}

#[test]
fn the_same_seed_gives_byte_identical_output() {
    let a = run(small(7)).to_string();
    let b = run(small(7)).to_string();
    assert_eq!(a, b);
    let c = run(small(8)).to_string();
    assert_ne!(a, c, "a different seed should give a different run");
}

#[test]
fn a_small_network_finds_its_nodes_and_records_and_resists_the_slash_24_attacker() {
    let report = run(SimConfig {
        churn: 0.0,
        adversarial: 0.0,
        ..small(3)
    });
    assert!(report.success_rate() >= 0.99, "{report}");
    assert!(report.record_rate() >= 0.99, "{report}");
    assert!(
        report.attacker_entries.iter().all(|&e| e <= 2 * 16),
        "{report}"
    );
}
