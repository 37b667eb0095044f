//! `dp2ptcs init`: create an identity.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use dp2ptcs_crypto::contact_uri::validate_display_name;
use dp2ptcs_crypto::{ContactUri, KdfParams, UnlockedKeystore};
use serde_json::json;

use super::{kdf_params, now_unix, print_json};
use crate::cli::{Global, InitArgs};
use crate::contacts::{self, Book};
use crate::datadir::{key_path, resolve};
use crate::fsutil::{ensure_private_dir, shell_quote, write_atomic, DirLock};
use crate::passphrase::{self, require_strong};

pub(super) fn run(global: &Global, args: &InitArgs) -> Result<()> {
    if let Some(name) = &args.name {
        validate_display_name(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let params = kdf_params(&args.kdf, KdfParams::default())?;
    let dir = resolve(global)?;
    ensure_private_dir(&dir)?;
    let _lock = DirLock::acquire(&dir)?;
    let path = key_path(&dir);
    if path.exists() && !args.force {
        bail!(
            "an identity already exists in {}; nothing was changed.\n\
             To replace it (the old one is kept as a backup), run again with --force.",
            shell_quote(&dir)
        );
    }
    if super::run::DaemonLock::is_held(&dir) {
        bail!(
            "a node is running on {}; stop it before replacing its identity",
            shell_quote(&dir)
        );
    }

    let pass = passphrase::read(
        passphrase::Source {
            file: global.passphrase_file.as_deref(),
            flag: "--passphrase-file",
            env_var: passphrase::ENV_PASSPHRASE,
            prompt: "New passphrase",
        },
        true,
    )?;
    require_strong(&pass, args.allow_weak_passphrase)?;

    let keystore = UnlockedKeystore::generate(&mut rand_core::OsRng);
    let file = keystore.encrypt(pass.as_bytes(), params, &mut rand_core::OsRng)?;

    let mut backups = Vec::new();
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    if path.exists() {
        // Keep the old identity: hard-link it to a backup name before the new file replaces it,
        // so there is no moment without a node.key.
        let stamp = now_unix();
        let backup = dir.join(format!("node.key.{stamp}.bak"));
        fs::hard_link(&path, &backup).with_context(|| {
            format!("cannot back up {} to {}", path.display(), backup.display())
        })?;
        backups.push(backup);
        // The address book and database are sealed under the old identity's database key.
        let mut olds: Vec<PathBuf> = contacts::db_files(&dir).to_vec();
        olds.push(contacts::legacy_path(&dir));
        for old in olds.into_iter().filter(|p| p.exists()) {
            let name = old
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let backup = dir.join(format!("{name}.{stamp}.bak"));
            fs::rename(&old, &backup)
                .with_context(|| format!("cannot back up {}", old.display()))?;
            moved.push((backup.clone(), old));
            backups.push(backup);
        }
    }
    if let Err(e) = write_atomic(&path, &file, 0o600) {
        // The old identity is still in place: put its database back beside it.
        for (backup, original) in moved {
            let _ = fs::rename(backup, original);
        }
        return Err(e);
    }

    let book = Book {
        profile: contacts::Profile {
            name: args.name.clone(),
            addresses: Vec::new(),
        },
        contacts: Vec::new(),
    };
    book.save(&dir, keystore.database_key())?;

    let identity = keystore.identity();
    let uri = ContactUri::new(identity, args.name.as_deref(), &[])?;
    if args.json {
        print_json(&json!({
            "node_id": identity.node_id().to_hex(),
            "public_key": hex::encode(identity.public().to_bytes()),
            "contact_uri": uri.to_string(),
            "key_file": path,
            "backups": backups,
        }));
    } else {
        outln!("Created a new identity in {}", dir.display());
        outln!("Node ID  {}", identity.node_id());
        for b in &backups {
            outln!("Backup   {}", b.display());
        }
        outln!();
        outln!("Next: `dp2ptcs id` shows your contact URI and QR code for others to scan.");
        outln!("Keep your passphrase safe: without it this identity cannot be recovered.");
    }
    Ok(())
}
