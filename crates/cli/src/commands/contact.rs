//! `dp2ptcs contact add|list|show|remove`.

use anyhow::{anyhow, bail, Result};
use dp2ptcs_crypto::{ContactUri, ContactUriError};
use serde_json::{json, Value};

use super::inbox::printable;
use super::{now_unix, print_json};
use crate::cli::{ContactAddArgs, ContactCommand, ContactRefArgs, Global};
use dp2ptcs_store::AddOutcome;

use crate::contacts::{self, Book, Contact};
use crate::datadir::unlock;
use crate::fsutil::DirLock;
use crate::qr;

pub(super) fn run(global: &Global, cmd: ContactCommand) -> Result<()> {
    match cmd {
        ContactCommand::Add(args) => add(global, &args),
        ContactCommand::List(args) => list(global, args.json),
        ContactCommand::Show(args) => show(global, &args),
        ContactCommand::Remove(args) => remove(global, &args),
    }
}

pub(super) fn contact_json(c: &Contact) -> Value {
    json!({
        "name": c.name,
        "node_id": c.node_id,
        "public_key": c.public_key,
        "addresses": c.addresses,
        "verified": c.verified,
        "verified_at": c.verified_at,
        "added_at": c.added_at,
    })
}

fn parse_uri(text: &str, from_image: Option<&std::path::Path>) -> Result<ContactUri> {
    text.parse::<ContactUri>()
        .map_err(|e| match (e, from_image) {
            (ContactUriError::NotAContactUri, Some(path)) => {
                let mut shown: String = text.chars().take(60).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                anyhow!(
                    "the QR code in {} is not a DP2PTCS contact (it reads {shown:?})",
                    path.display()
                )
            }
            (e, Some(path)) => anyhow!("the QR code in {}: {e}", path.display()),
            (e, None) => anyhow!("{e}"),
        })
}

fn add(global: &Global, args: &ContactAddArgs) -> Result<()> {
    let uri = match (&args.uri, &args.qr_image) {
        (Some(text), None) => parse_uri(text, None)?,
        (None, Some(path)) => parse_uri(&qr::scan_file(path)?, Some(path))?,
        _ => bail!("give either a contact URI or --qr-image FILE"),
    };
    let Some(name) = args.name.as_deref().or(uri.name()) else {
        bail!("this contact URI carries no name: give one with --name NAME");
    };
    let name = name.to_owned();

    let unlocked = unlock(global)?;
    let _lock = DirLock::acquire(&unlocked.dir)?;
    let key = unlocked.keystore.database_key();
    if uri.public_identity().node_id() == unlocked.keystore.identity().node_id() {
        bail!("this is your own contact URI; add someone else's");
    }
    let (contact, outcome) = contacts::add(&unlocked.dir, key, &uri, &name, now_unix())?;
    if args.json {
        let mut v = contact_json(&contact);
        v["outcome"] = json!(match outcome {
            AddOutcome::Added => "added",
            AddOutcome::AddressesUpdated => "addresses_updated",
            AddOutcome::Unchanged => "unchanged",
        });
        print_json(&v);
        return Ok(());
    }
    match outcome {
        AddOutcome::Added => outln!("Added {name} (node id {})", contact.node_id),
        AddOutcome::AddressesUpdated => {
            outln!("{name} was already a contact; address hints updated")
        }
        AddOutcome::Unchanged => outln!("{name} was already a contact; nothing changed"),
    }
    if !contact.verified {
        outln!(
            "Not verified yet: meet {name} and run `dp2ptcs verify {}` together to compare safety numbers.",
            shell_word(&name)
        );
    }
    Ok(())
}

fn list(global: &Global, json_out: bool) -> Result<()> {
    let unlocked = unlock(global)?;
    let book = Book::load(&unlocked.dir, unlocked.keystore.database_key())?;
    if json_out {
        print_json(&Value::Array(
            book.contacts.iter().map(contact_json).collect(),
        ));
        return Ok(());
    }
    if book.contacts.is_empty() {
        outln!("No contacts yet. Add one with `dp2ptcs contact add URI` or `--qr-image FILE`.");
        return Ok(());
    }
    let width = book
        .contacts
        .iter()
        .map(|c| printable(&c.name).chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "{:<width$}  {:<16}  {:<8}  ADDRESSES",
        "NAME",
        "NODE ID",
        "VERIFIED"
    );
    for c in &book.contacts {
        let addrs: Vec<String> = c.addresses.iter().map(ToString::to_string).collect();
        outln!(
            "{:<width$}  {:<16}  {:<8}  {}",
            printable(&c.name),
            &c.node_id[..16],
            if c.verified { "yes" } else { "no" },
            if addrs.is_empty() {
                "-".to_owned()
            } else {
                addrs.join(", ")
            }
        );
    }
    Ok(())
}

fn show(global: &Global, args: &ContactRefArgs) -> Result<()> {
    let unlocked = unlock(global)?;
    let book = Book::load(&unlocked.dir, unlocked.keystore.database_key())?;
    let c = &book.contacts[book.find(&args.contact)?];
    if args.json {
        print_json(&contact_json(c));
        return Ok(());
    }
    outln!("Name         {}", printable(&c.name));
    outln!("Node ID      {}", c.node_id);
    outln!("Public key   {}", c.public_key);
    outln!("Verified     {}", if c.verified { "yes" } else { "no" });
    for a in &c.addresses {
        outln!("Address      {a}");
    }
    Ok(())
}

fn remove(global: &Global, args: &ContactRefArgs) -> Result<()> {
    let unlocked = unlock(global)?;
    let _lock = DirLock::acquire(&unlocked.dir)?;
    let key = unlocked.keystore.database_key();
    let book = Book::load(&unlocked.dir, key)?;
    let removed = book.contacts[book.find(&args.contact)?].clone();
    let waiting = contacts::remove(&unlocked.dir, key, &removed.public_identity()?.node_id())?;
    if args.json {
        let mut v = contact_json(&removed);
        v["waiting"] = json!(waiting);
        print_json(&v);
        return Ok(());
    }
    outln!(
        "Removed {} (node id {})",
        printable(&removed.name),
        removed.node_id
    );
    if waiting > 0 {
        outln!(
            "{waiting} message(s) to {} still wait in the outbox: they go out if you add {} again \
             before they expire (one already sent or held in a mailbox may still reach them). \
             To drop them: dp2ptcs cancel --to {}",
            printable(&removed.name),
            printable(&removed.name),
            &removed.node_id[..16]
        );
    }
    Ok(())
}

/// Quotes a contact name for a command line shown to the user.
pub(super) fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
