//! Where passphrases come from, and how strong they must be.
//!
//! Sources, first match wins: `--passphrase-file FILE`, the `DP2PTCS_PASSPHRASE` environment
//! variable, an interactive prompt on the terminal (not echoed; asked twice when choosing a new
//! one). For a new passphrase in `change-passphrase`: `--new-passphrase-file`,
//! `DP2PTCS_NEW_PASSPHRASE`, the prompt.

use std::path::Path;

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use crate::fsutil::read_limited;

/// Environment variable holding the passphrase, for scripts.
pub(crate) const ENV_PASSPHRASE: &str = "DP2PTCS_PASSPHRASE";
/// Environment variable holding the new passphrase for `change-passphrase`.
pub(crate) const ENV_NEW_PASSPHRASE: &str = "DP2PTCS_NEW_PASSPHRASE";
/// Longest passphrase accepted, in bytes.
pub(crate) const MAX_PASSPHRASE_LEN: usize = 1024;
/// Lowest zxcvbn score (0-4) accepted without `--allow-weak-passphrase`.
pub(crate) const MIN_SCORE: u8 = 3;

/// A passphrase; wiped from memory when dropped.
pub(crate) type Passphrase = Zeroizing<String>;

/// Where to look for a passphrase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) file: Option<&'a Path>,
    /// The flag that gives `file`, for messages.
    pub(crate) flag: &'static str,
    pub(crate) env_var: &'static str,
    /// Prompt text, e.g. "Passphrase".
    pub(crate) prompt: &'static str,
}

/// Reads a passphrase from the first source present. `confirm` asks twice at the prompt.
pub(crate) fn read(source: Source<'_>, confirm: bool) -> Result<Passphrase> {
    if let Some(path) = source.file {
        let bytes = Zeroizing::new(read_limited(path, MAX_PASSPHRASE_LEN as u64 + 2)?);
        let text = std::str::from_utf8(&bytes)
            .with_context(|| format!("the passphrase file {} is not UTF-8 text", path.display()))?;
        // A file ends with one newline by convention; it is not part of the passphrase.
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        return check(
            Zeroizing::new(text.to_owned()),
            &format!("the file {}", path.display()),
        );
    }
    if let Some(value) = std::env::var_os(source.env_var) {
        let Some(text) = value.to_str() else {
            bail!("{} is not valid UTF-8", source.env_var);
        };
        return check(Zeroizing::new(text.to_owned()), source.env_var);
    }
    let first = prompt(&format!("{}: ", source.prompt), source)?;
    if confirm {
        let second = prompt(&format!("{} (again): ", source.prompt), source)?;
        if *first != *second {
            bail!("the two passphrases differ; nothing was changed");
        }
    }
    check(first, "the prompt")
}

fn prompt(text: &str, source: Source<'_>) -> Result<Passphrase> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot ask for the passphrase ({e}): there is no terminal. \
             Give {} FILE or set {}",
                source.flag,
                source.env_var
            )
        })
}

fn check(pass: Passphrase, from: &str) -> Result<Passphrase> {
    if pass.is_empty() {
        bail!("the passphrase from {from} is empty");
    }
    if pass.len() > MAX_PASSPHRASE_LEN {
        bail!("the passphrase from {from} is longer than {MAX_PASSPHRASE_LEN} bytes");
    }
    Ok(pass)
}

/// Strength of a passphrase as zxcvbn estimates it, 0 (guessable) to 4 (strong), with advice.
pub(crate) fn strength(pass: &str) -> (u8, String) {
    let entropy = zxcvbn::zxcvbn(pass, &["dp2ptcs", "tactical"]);
    let score = u8::from(entropy.score());
    let mut advice = Vec::new();
    if let Some(feedback) = entropy.feedback() {
        if let Some(w) = feedback.warning() {
            advice.push(w.to_string());
        }
        advice.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    (score, advice.join(" "))
}

/// Refuses a weak new passphrase unless the user insists.
pub(crate) fn require_strong(pass: &str, allow_weak: bool) -> Result<()> {
    let (score, advice) = strength(pass);
    if score >= MIN_SCORE {
        return Ok(());
    }
    if allow_weak {
        errln!("warning: weak passphrase (strength {score} of 4) accepted because of --allow-weak-passphrase");
        return Ok(());
    }
    bail!(
        "this passphrase is too weak (strength {score} of 4, at least {MIN_SCORE} is needed). {advice}\n\
         A few random words make a strong one. To use it anyway, add --allow-weak-passphrase."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_strong() {
        assert!(require_strong("password", false).is_err());
        assert!(require_strong("123456", false).is_err());
        assert!(require_strong("dp2ptcs", false).is_err());
        assert!(require_strong("password", true).is_ok());
        assert!(require_strong("lantern orbit quarry mosaic", false).is_ok());
    }

    #[test]
    fn file_source_strips_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, "secret words here\r\n").unwrap();
        let src = Source {
            file: Some(&path),
            flag: "--passphrase-file",
            env_var: "DP2PTCS_TEST_UNUSED",
            prompt: "x",
        };
        assert_eq!(read(src, false).unwrap().as_str(), "secret words here");
        std::fs::write(&path, "\n").unwrap();
        assert!(read(src, false).is_err());
        std::fs::write(&path, vec![b'a'; MAX_PASSPHRASE_LEN + 10]).unwrap();
        assert!(read(src, false).is_err());
    }
}
