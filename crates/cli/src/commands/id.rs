//! `dp2ptcs id`: show our identity.

use anyhow::Result;
use dp2ptcs_crypto::ContactUri;
use serde_json::json;

use super::print_json;
use crate::cli::{Global, IdArgs};
use crate::contacts::Book;
use crate::datadir::unlock;
use crate::qr;

pub(super) fn run(global: &Global, args: &IdArgs) -> Result<()> {
    if let Some(path) = &args.qr_png {
        qr::check_output_path(path)?;
    }
    let unlocked = unlock(global)?;
    let book = Book::load(&unlocked.dir, unlocked.keystore.database_key())?;
    let identity = unlocked.keystore.identity();
    let name = args.name.as_deref().or(book.profile.name.as_deref());
    let addresses = if args.addresses.is_empty() {
        book.profile.addresses.clone()
    } else {
        args.addresses.clone()
    };
    let uri = ContactUri::new(identity, name, &addresses).map_err(|e| anyhow::anyhow!("{e}"))?;
    let uri_text = uri.to_string();

    if let Some(path) = &args.qr_png {
        qr::write_png(path, &uri_text)?;
    }
    if args.json {
        print_json(&json!({
            "node_id": identity.node_id().to_hex(),
            "public_key": hex::encode(identity.public().to_bytes()),
            "contact_uri": uri_text,
        }));
        return Ok(());
    }
    outln!("Node ID      {}", identity.node_id());
    outln!("Public key   {}", hex::encode(identity.public().to_bytes()));
    if let Some(name) = name {
        outln!("Name         {name}");
    }
    outln!("Contact URI  {uri_text}");
    if !args.no_qr {
        outln!();
        out!("{}", qr::to_terminal(&uri_text)?);
        outln!();
    }
    if let Some(path) = &args.qr_png {
        outln!("QR code written to {}", path.display());
    }
    outln!(
        "Others add you with `dp2ptcs contact add --qr-image PHOTO` or `dp2ptcs contact add URI`."
    );
    Ok(())
}
