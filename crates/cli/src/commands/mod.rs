//! One module per command.

mod cancel;
mod change_passphrase;
mod contact;
mod id;
mod inbox;
mod init;
mod lookup;
mod outbox;
mod outbox_access;
mod peers;
pub(crate) mod run;
mod send;
mod status;
mod verify;

use anyhow::Result;
use dp2ptcs_crypto::KdfParams;

use crate::cli::{Cli, Command, KdfArgs};

/// Runs the parsed command.
pub(crate) fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(args) => init::run(&cli.global, &args),
        Command::Id(args) => id::run(&cli.global, &args),
        Command::Contact(cmd) => contact::run(&cli.global, cmd),
        Command::Verify(args) => verify::run(&cli.global, &args),
        Command::ChangePassphrase(args) => change_passphrase::run(&cli.global, &args),
        Command::Run(args) => run::run(&cli.global, &args),
        Command::Send(args) => send::run(&cli.global, &args),
        Command::Inbox(args) => inbox::run(&cli.global, &args),
        Command::Outbox(args) => outbox::run(&cli.global, &args),
        Command::Cancel(args) => cancel::run(&cli.global, &args),
        Command::Status(args) => status::run(&cli.global, &args),
        Command::Peers(args) => peers::run(&cli.global, &args),
        Command::Lookup(args) => lookup::run(&cli.global, &args),
    }
}

/// A client of the API of the node running on the data directory.
fn api_client(global: &crate::cli::Global) -> Result<dp2ptcs_node::api::client::Client> {
    let dir = crate::datadir::resolve(global)?;
    Ok(dp2ptcs_node::api::client::Client::new(
        dir.join(dp2ptcs_node::api::SOCKET_FILE),
    ))
}

/// Runs `f` to completion on a single-threaded runtime (the API clients).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(f))
}

/// Argon2id parameters from the flags, each defaulting to `base`.
fn kdf_params(args: &KdfArgs, base: KdfParams) -> Result<KdfParams> {
    let params = KdfParams {
        m_cost: args.kdf_memory.unwrap_or(base.m_cost),
        t_cost: args.kdf_iterations.unwrap_or(base.t_cost),
        p_cost: args.kdf_parallelism.unwrap_or(base.p_cost),
    };
    params.validate().map_err(|_| {
        anyhow::anyhow!(
            "invalid key-derivation parameters: --kdf-parallelism must be 1..={}, --kdf-iterations \
             1..={}, --kdf-memory between 8 x parallelism and {} KiB",
            dp2ptcs_crypto::keystore::MAX_P_COST,
            dp2ptcs_crypto::keystore::MAX_T_COST,
            dp2ptcs_crypto::keystore::MAX_M_COST_KIB
        )
    })?;
    if !params.is_at_least_default() {
        errln!(
            "warning: key-derivation parameters below the default (64 MiB, 3 passes) make a \
             stolen key file faster to attack"
        );
    }
    Ok(params)
}

/// Milliseconds since the Unix epoch.
fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A Unix time in milliseconds as `YYYY-MM-DD hh:mm:ssZ` (UTC). A time past the year 9999 (a
/// peer's clock, or a peer, may claim any `sent_at_ms`) is shown as the number it is.
fn utc_time(ms: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms)) {
        Some(when) if write!(out, "{}", humantime::format_rfc3339_seconds(when)).is_ok() => {
            out.replace('T', " ")
        }
        _ => format!("{ms} ms after 1970 (UTC)"),
    }
}

/// Prints a JSON value on one line.
fn print_json(value: &serde_json::Value) {
    outln!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_shown_in_utc_and_any_time_a_peer_claims_is_shown_without_failing() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc_time(1_764_028_800_123), "2025-11-25 00:00:00Z");
        // Past the year 9999, which the formatter refuses.
        assert_eq!(
            utc_time(300_000_000_000_000),
            "300000000000000 ms after 1970 (UTC)"
        );
        assert_eq!(
            utc_time(u64::MAX),
            format!("{} ms after 1970 (UTC)", u64::MAX)
        );
    }
}
