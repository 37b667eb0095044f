//! `dp2ptcs`: the command-line tool of DP2PTCS.
//!
//! A thin layer: argument parsing, reading passphrases, files and images, and printing. All
//! cryptography lives in `dp2ptcs-crypto`.

mod cli;
mod commands;
mod config;
mod contacts;
mod datadir;
mod fsutil;
mod passphrase;
mod qr;

use std::process::ExitCode;

use clap::Parser;

/// Exit code when a safety-number comparison fails: the keys differ.
pub(crate) const EXIT_MISMATCH: u8 = 3;
/// Exit code when `send --wait` got no receipt: none in time (the message stays queued), or the
/// message expired or was cancelled meanwhile.
pub(crate) const EXIT_NOT_DELIVERED: u8 = 4;
/// Exit code when `lookup` did not find the node.
pub(crate) const EXIT_NOT_FOUND: u8 = 5;

/// An error that asks for a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ExitError {
    pub(crate) code: u8,
    pub(crate) message: String,
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(exit) = err.downcast_ref::<ExitError>() {
                eprintln!("{}", exit.message);
                return ExitCode::from(exit.code);
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
