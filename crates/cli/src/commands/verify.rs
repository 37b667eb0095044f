//! `dp2ptcs verify`: safety numbers.

use anyhow::{bail, Result};
use dp2ptcs_crypto::{SafetyNumber, SafetyNumberError};
use serde_json::json;

use super::{now_unix, print_json};
use crate::cli::{Global, VerifyArgs};
use crate::contacts::{self, Book};
use crate::datadir::unlock;
use crate::fsutil::DirLock;
use crate::{qr, ExitError, EXIT_MISMATCH};

pub(super) fn run(global: &Global, args: &VerifyArgs) -> Result<()> {
    if let Some(path) = &args.qr_png {
        qr::check_output_path(path)?;
    }
    // Read the scanned image before asking for the passphrase: a bad file fails fast.
    let scanned = args.scan.as_deref().map(qr::scan_file).transpose()?;

    let unlocked = unlock(global)?;
    let _lock = DirLock::acquire(&unlocked.dir)?;
    let key = unlocked.keystore.database_key();
    let book = Book::load(&unlocked.dir, key)?;
    let idx = book.find(&args.contact)?;
    let remote = book.contacts[idx].public_identity()?;
    let local = unlocked.keystore.identity().public();
    let sn = SafetyNumber::new(&local, &remote);
    let name = book.contacts[idx].name.clone();
    // As the inbox shows it: a name cannot drive the terminal or read as another.
    let shown = super::inbox::printable(&name);

    if let Some(path) = &args.qr_png {
        qr::write_png(path, &sn.qr_text())?;
    }

    let check = match (&scanned, &args.digits) {
        (Some(text), _) => Some(sn.check_scanned(text)),
        (None, Some(digits)) => Some(sn.check_digits(digits)),
        (None, None) => None,
    };
    match check {
        None => {
            let c = &book.contacts[idx];
            if args.json {
                print_json(&json!({
                    "contact": c.name,
                    "node_id": c.node_id,
                    "safety_number": sn.digits(),
                    "qr_text": sn.qr_text(),
                    "verified": c.verified,
                }));
                return Ok(());
            }
            outln!("Safety number with {shown}:\n");
            let grouped = sn.grouped();
            let words: Vec<&str> = grouped.split(' ').collect();
            for line in words.chunks(4) {
                outln!("    {}", line.join(" "));
            }
            if !args.no_qr {
                outln!();
                out!("{}", qr::to_terminal(&sn.qr_text())?);
            }
            outln!();
            outln!(
                "Compare these digits with {shown}'s screen, in person or over a trusted voice line. \
                 Then {} with `dp2ptcs verify {} --scan PHOTO` (a picture of the code on their \
                 screen) or `--digits \"...\"`.",
                if c.verified {
                    "check them again"
                } else {
                    "mark them verified"
                },
                super::contact::shell_word(&name)
            );
            outln!(
                "Status: {}",
                if c.verified {
                    "verified"
                } else {
                    "NOT verified"
                }
            );
            Ok(())
        }
        Some(Ok(())) => {
            contacts::mark_verified(&unlocked.dir, key, &remote.node_id(), now_unix())?;
            if args.json {
                print_json(&json!({ "contact": name, "match": true, "verified": true }));
            } else {
                outln!("Safety numbers match: {shown} is now verified.");
            }
            Ok(())
        }
        Some(Err(SafetyNumberError::Mismatch)) => {
            let verified = book.contacts[idx].verified;
            if args.json {
                print_json(&json!({ "contact": name, "match": false, "verified": verified }));
            }
            // The key held for the contact has not changed: a verification of it made before
            // stands, and saying otherwise would be false.
            let outcome = if verified {
                format!(
                    "{shown} stays marked verified: that was done earlier, for the key you still \
                     hold. If you typed their digits right, the device you compared with holds \
                     another key."
                )
            } else {
                format!("{shown} was NOT marked verified.")
            };
            Err(ExitError {
                code: EXIT_MISMATCH,
                message: format!(
                    "\n!!! WARNING: SAFETY NUMBERS DO NOT MATCH !!!\n\n\
                     The key you hold for {shown} is not the key their device holds. Someone may be \
                     intercepting your communication, or one of you has a new identity.\n\
                     Do not trust this contact until you have re-added their contact URI in person and \
                     compared again. {outcome}"
                ),
            }
            .into())
        }
        Some(Err(e)) => bail!("{e}"),
    }
}
