//! `dp2ptcs change-passphrase`: re-encrypt the key file.

use anyhow::Result;
use serde_json::json;

use super::{kdf_params, print_json};
use crate::cli::{ChangePassphraseArgs, Global};
use crate::datadir::{key_path, unlock};
use crate::fsutil::{write_atomic, DirLock};
use crate::passphrase::{self, require_strong};

pub(super) fn run(global: &Global, args: &ChangePassphraseArgs) -> Result<()> {
    let unlocked = unlock(global)?;
    let _lock = DirLock::acquire(&unlocked.dir)?;
    let new = passphrase::read(
        passphrase::Source {
            file: args.new_passphrase_file.as_deref(),
            flag: "--new-passphrase-file",
            env_var: passphrase::ENV_NEW_PASSPHRASE,
            prompt: "New passphrase",
        },
        true,
    )?;
    require_strong(&new, args.allow_weak_passphrase)?;
    // Keep the file's cost parameters unless new ones are given.
    let params = kdf_params(&args.kdf, unlocked.parsed.params)?;
    let file = unlocked
        .keystore
        .encrypt(new.as_bytes(), params, &mut rand_core::OsRng)?;
    let path = key_path(&unlocked.dir);
    write_atomic(&path, &file, 0o600)?;
    if args.json {
        print_json(&json!({ "key_file": path, "changed": true }));
    } else {
        outln!("Passphrase changed; {} re-encrypted.", path.display());
    }
    Ok(())
}
