//! The data directory and unlocking the identity in it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use dp2ptcs_crypto::keystore::ParsedKeystore;
use dp2ptcs_crypto::{KeystoreError, UnlockedKeystore};
use dp2ptcs_types::limits::MAX_KEYSTORE_FILE_LEN;

use crate::cli::Global;
use crate::fsutil::{check_private_dir, check_private_file, read_limited};
use crate::passphrase::{self, Passphrase};

/// The key file's name in the data directory.
pub(crate) const KEY_FILE: &str = "node.key";
/// Environment variable naming the data directory.
pub(crate) const ENV_HOME: &str = "DP2PTCS_HOME";

/// `--data-dir`, else `$DP2PTCS_HOME`, else the platform data directory.
pub(crate) fn resolve(global: &Global) -> Result<PathBuf> {
    if let Some(dir) = &global.data_dir {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os(ENV_HOME).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::data_dir().map(|d| d.join("dp2ptcs")).ok_or_else(|| {
        anyhow!("cannot find a data directory: give --data-dir DIR or set {ENV_HOME}")
    })
}

pub(crate) fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

/// The current passphrase, from the global sources.
pub(crate) fn current_passphrase(global: &Global) -> Result<Passphrase> {
    passphrase::read(
        passphrase::Source {
            file: global.passphrase_file.as_deref(),
            flag: "--passphrase-file",
            env_var: passphrase::ENV_PASSPHRASE,
            prompt: "Passphrase",
        },
        false,
    )
}

/// An unlocked identity and where it lives.
#[derive(Debug)]
pub(crate) struct Unlocked {
    pub(crate) dir: PathBuf,
    pub(crate) keystore: UnlockedKeystore,
    pub(crate) parsed: ParsedKeystore,
}

/// Finds, checks and decrypts the key file. The structure and permissions are checked before the
/// passphrase is asked for, so a damaged file is reported without a prompt.
pub(crate) fn unlock(global: &Global) -> Result<Unlocked> {
    let dir = resolve(global)?;
    let path = key_path(&dir);
    if !path.exists() {
        bail!(
            "no identity in {}: create one with `dp2ptcs init` (or point --data-dir at the right directory)",
            dir.display()
        );
    }
    check_private_dir(&dir)?;
    check_private_file(&path)?;
    let bytes = read_limited(&path, MAX_KEYSTORE_FILE_LEN as u64)
        .map_err(|_| KeystoreError::TooLarge(MAX_KEYSTORE_FILE_LEN + 1))
        .with_context(|| format!("cannot use {}", path.display()))?;
    let parsed =
        ParsedKeystore::parse(&bytes).with_context(|| format!("cannot use {}", path.display()))?;
    let pass = current_passphrase(global)?;
    let keystore = UnlockedKeystore::decrypt(&bytes, pass.as_bytes())
        .map_err(|e| anyhow!("{e} ({})", path.display()))?;
    Ok(Unlocked {
        dir,
        keystore,
        parsed,
    })
}
