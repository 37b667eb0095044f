//! What the tests of the `dp2ptcs` binary share.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::{Command, Output, Stdio};

/// The passphrase every test identity uses.
pub const PASS: &str = "lantern orbit quarry mosaic";
/// Cheap Argon2id parameters so the suites run fast; the file format is the same.
pub const FAST_KDF: [&str; 6] = [
    "--kdf-memory",
    "64",
    "--kdf-iterations",
    "1",
    "--kdf-parallelism",
    "1",
];

/// The built binary, with no `DP2PTCS_*` setting inherited from the environment and no stdin.
pub fn bin() -> Command {
    let mut cmd = scrub_env(Command::new(env!("CARGO_BIN_EXE_dp2ptcs")));
    cmd.stdin(Stdio::null());
    cmd
}

/// `cmd` without any `DP2PTCS_*` setting inherited from the environment.
pub fn scrub_env(mut cmd: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DP2PTCS_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails if the binary panicked (a message or exit code 101).
pub fn assert_no_panic(out: &Output) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "the binary panicked: {err}");
    assert_ne!(
        out.status.code(),
        Some(101),
        "exit code 101 means a panic: {err}"
    );
}
