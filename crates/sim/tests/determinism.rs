#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The simulator is a measuring instrument: the same seed must give the same bytes, and a small
//! network must behave.

use dp2ptcs_sim::{run, MailboxScenario, SimConfig};

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

fn small_mailbox(seed: u64) -> SimConfig {
    SimConfig {
        nodes: 120,
        seed,
        churn: 0.1,
        mailbox: Some(MailboxScenario {
            messages: 60,
            partition_ms: 5 * 60 * 1000,
            offline_ms: 5 * 60 * 1000,
            fetch_interval_ms: 2 * 60 * 1000,
            settle_ms: 15 * 60 * 1000,
            ..MailboxScenario::default()
        }),
        ..SimConfig::default()
    }
}

#[test]
fn the_store_and_forward_mode_is_deterministic_too() {
    let a = run(small_mailbox(5)).to_string();
    assert_eq!(a, run(small_mailbox(5)).to_string());
    assert_ne!(a, run(small_mailbox(6)).to_string());
    assert!(a.starts_with("scenario: store-and-forward"), "{a}");
}

#[test]
fn a_small_network_delivers_what_it_holds_across_a_partition() {
    let report = run(SimConfig {
        churn: 0.0,
        ..small_mailbox(3)
    });
    let m = report.mailbox.as_ref().unwrap();
    assert!(m.deposited > 0 && m.held == m.deposited, "{report}");
    assert!(m.delivery_ratio() >= 0.99, "{report}");
    assert!(m.cut_total > 0, "{report}");
}
