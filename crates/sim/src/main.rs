//! `dp2ptcs-sim`: runs one DHT scenario and prints what it measured.
//!
//! ```text
//! cargo run --release -p dp2ptcs-sim -- --nodes 10000 --seed 1 --churn 0.3
//! ```
//!
//! Options (defaults in brackets): `--nodes N` [1000], `--seed S` [1], `--churn F` [0],
//! `--adversarial F` [0], `--adversary collude|fabricate` [collude], `--loss F` [0.01], `--paths D` [1], `--alpha A` [3], `--lookups L`
//! [1000], `--records R` [200], `--duration-s T` [7200], `--join-spacing-ms J` [20],
//! `--attacker-ids I` [1000], `--latency-ms M` [40], `--memory` (also print wall time and peak
//! memory, which differ between runs and machines).
//!
//! Store-and-forward mode: `--mailbox`, with `--messages N` [1000], `--recipients R` [N/4],
//! `--partition-ms P` [1800000], `--offline F` [0.5], `--offline-ms O` [1800000], `--ttl-ms T`
//! [7 days], `--fetch-interval-ms I` [300000], `--payload-bytes B` [1024], `--settle-ms S`
//! [3600000]; `--churn`, `--loss`, `--latency-ms` as above (any of these options implies
//! `--mailbox`).
//!
//! ```text
//! cargo run --release -p dp2ptcs-sim -- --mailbox --nodes 1000 --seed 1 --churn 0.1
//! ```

use std::time::Instant;

use anyhow::{bail, Context};
use dp2ptcs_sim::{run, AdversaryMode, MailboxScenario, SimConfig};

fn main() -> anyhow::Result<()> {
    let mut cfg = SimConfig::default();
    let mut memory = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--memory" {
            memory = true;
            continue;
        }
        if flag == "--mailbox" {
            cfg.mailbox.get_or_insert_with(MailboxScenario::default);
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("see the crate documentation: cargo doc -p dp2ptcs-sim --open");
            return Ok(());
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let bad = || format!("invalid value for {flag}: {value}");
        match flag.as_str() {
            "--nodes" => cfg.nodes = value.parse().with_context(bad)?,
            "--seed" => cfg.seed = value.parse().with_context(bad)?,
            "--churn" => cfg.churn = value.parse().with_context(bad)?,
            "--adversarial" => cfg.adversarial = value.parse().with_context(bad)?,
            "--loss" => cfg.net.loss = value.parse().with_context(bad)?,
            "--latency-ms" => cfg.net.median_latency_ms = value.parse().with_context(bad)?,
            "--paths" => cfg.dht.disjoint_paths = value.parse().with_context(bad)?,
            "--adversary" => {
                cfg.adversary = match value.as_str() {
                    "collude" => AdversaryMode::Collude,
                    "fabricate" => AdversaryMode::Fabricate,
                    _ => bail!("--adversary is collude or fabricate"),
                }
            }
            "--alpha" => cfg.dht.alpha = value.parse().with_context(bad)?,
            "--lookups" => cfg.lookups = value.parse().with_context(bad)?,
            "--records" => cfg.records = value.parse().with_context(bad)?,
            "--duration-s" => {
                cfg.duration_ms = value.parse::<u64>().with_context(bad)?.saturating_mul(1000)
            }
            "--join-spacing-ms" => cfg.join_spacing_ms = value.parse().with_context(bad)?,
            "--attacker-ids" => cfg.attacker_ids = value.parse().with_context(bad)?,
            "--messages"
            | "--recipients"
            | "--partition-ms"
            | "--offline"
            | "--offline-ms"
            | "--ttl-ms"
            | "--fetch-interval-ms"
            | "--payload-bytes"
            | "--settle-ms" => {
                let m = cfg.mailbox.get_or_insert_with(MailboxScenario::default);
                match flag.as_str() {
                    "--messages" => m.messages = value.parse().with_context(bad)?,
                    "--recipients" => m.recipients = value.parse().with_context(bad)?,
                    "--partition-ms" => m.partition_ms = value.parse().with_context(bad)?,
                    "--offline" => m.offline = value.parse().with_context(bad)?,
                    "--offline-ms" => m.offline_ms = value.parse().with_context(bad)?,
                    "--ttl-ms" => m.ttl_ms = value.parse().with_context(bad)?,
                    "--fetch-interval-ms" => {
                        m.fetch_interval_ms = value.parse().with_context(bad)?
                    }
                    "--payload-bytes" => m.payload_bytes = value.parse().with_context(bad)?,
                    _ => m.settle_ms = value.parse().with_context(bad)?,
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    if !(0.0..=1.0).contains(&cfg.churn)
        || !(0.0..1.0).contains(&cfg.adversarial)
        || !(0.0..1.0).contains(&cfg.net.loss)
    {
        bail!("--churn, --adversarial and --loss are fractions");
    }
    if let Some(m) = &cfg.mailbox {
        if !(0.0..=1.0).contains(&m.offline) {
            bail!("--offline is a fraction");
        }
        if m.ttl_ms > dp2ptcs_dht::MAX_MAILBOX_TTL_MS || m.ttl_ms == 0 {
            bail!("--ttl-ms is 1 to {}", dp2ptcs_dht::MAX_MAILBOX_TTL_MS);
        }
        if m.payload_bytes > dp2ptcs_dht::MAX_MAILBOX_PAYLOAD {
            bail!(
                "--payload-bytes is at most {}",
                dp2ptcs_dht::MAX_MAILBOX_PAYLOAD
            );
        }
    }
    let started = Instant::now();
    let report = run(cfg);
    print!("{report}");
    if memory {
        println!("wall time: {:.1}s", started.elapsed().as_secs_f64());
        // Peak resident memory, from the kernel (Linux only).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM")) {
            println!("peak memory: {}", line.trim_start_matches("VmHWM:").trim());
        }
    }
    Ok(())
}
