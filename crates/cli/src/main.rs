//! `dp2ptcs`: the command-line tool of DP2PTCS.
//!
//! A thin layer: argument parsing, reading passphrases, files and images, and printing. All
//! cryptography lives in `dp2ptcs-crypto`.

/// Writes a line to standard output, as `println!` does, but ends the program quietly (exit 0)
/// when its reader has gone away (`dp2ptcs outbox | head`), as other command-line tools do.
macro_rules! outln {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`outln!`] without the line end.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

/// Writes a line to standard error, as `eprintln!` does, but never panics: a message nobody can
/// read any more (its reader went away, `dp2ptcs run 2>&1 | head`) is dropped, and the program
/// goes on; its exit code still tells how it ended.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

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

/// What [`outln!`] and [`out!`] do: a closed pipe ends the program with exit 0, any other
/// failure to write (a full disk) with a message and exit 1, never a panic.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        errln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(exit) = err.downcast_ref::<ExitError>() {
                errln!("{}", exit.message);
                return ExitCode::from(exit.code);
            }
            errln!("error: {}", causes(&err));
            ExitCode::FAILURE
        }
    }
}

/// `err` and its causes, as `{:#}` prints them, less a cause whose text the ones before it
/// already hold (an error that shows its source in its own text: "io: X: X").
fn causes(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_shown_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        #[derive(Debug, thiserror::Error)]
        #[error("io: {0}")]
        struct Wrapper(#[from] std::io::Error);
        let err = anyhow::Error::from(Wrapper(io)).context("cannot start the node on 127.0.0.1:1");
        assert_eq!(
            super::causes(&err),
            "cannot start the node on 127.0.0.1:1: io: Address already in use"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::causes(&plain), "outer: inner");
    }
}
