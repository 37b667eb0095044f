//! `dp2ptcs outbox`: a client of the running node's API, or, with no node running, a reader of
//! the database.

use anyhow::{bail, Result};
use dp2ptcs_node::api::Message;

use super::inbox::printable;
use super::outbox_access::OutboxAccess;
use super::{print_json, utc_time};
use crate::cli::{Global, OutboxArgs};

/// Messages asked for per request.
const PAGE: u32 = 1000;
/// Characters of a message's text shown on its line.
const SHOWN_CHARS: usize = 40;

pub(super) fn run(global: &Global, args: &OutboxArgs) -> Result<()> {
    let mut access = OutboxAccess::new(global)?;
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page = match access.outbox(args.contact.as_deref(), after, PAGE)? {
            Ok(page) => page,
            Err(why) => bail!("{why}"),
        };
        after = page.iter().map(|m| m.seq).max().unwrap_or(after);
        let full = page.len() == PAGE as usize;
        all.extend(page);
        if !full {
            break;
        }
    }
    // Without a node, the database is held until now: a node may start while this prints.
    let offline = access.is_offline();
    drop(access);
    for m in &all {
        show(m, args.json)?;
    }
    if offline && !all.is_empty() && !args.json {
        errln!(
            "No node is running: these go out when it starts (`dp2ptcs run`), those to removed \
             contacts once they are added again."
        );
    }
    if all.is_empty() && !args.json {
        match &args.contact {
            Some(c) => errln!("Nothing waits for {c}."),
            None => errln!(
                "Nothing waits in the outbox: every message sent has its receipt, expired or was \
                 cancelled."
            ),
        }
    }
    Ok(())
}

fn show(m: &Message, json: bool) -> Result<()> {
    if json {
        print_json(&serde_json::to_value(m)?);
        return Ok(());
    }
    let who = m.peer_name.as_deref().map(printable).unwrap_or_else(|| {
        format!(
            "{}… (not a contact)",
            m.peer.chars().take(8).collect::<String>()
        )
    });
    let expires = m.expires_at_ms.map_or_else(|| "never".to_owned(), utc_time);
    outln!(
        "{}  → {who}  {}  since {}  expires {expires}  {}",
        m.id,
        m.state,
        utc_time(m.state_at_ms),
        one_line(&m.body, SHOWN_CHARS)
    );
    Ok(())
}

/// The first `max` characters of `text` on one line, escaped as for the inbox, with `…` if cut.
fn one_line(text: &str, max: usize) -> String {
    let flat = printable(text).replace("\\u{a}", "\\n").replace('\t', " ");
    let mut out: String = flat.chars().take(max).collect();
    if out.len() < flat.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_message_is_shown_on_one_line_escaped_and_cut() {
        assert_eq!(one_line("short", 40), "short");
        assert_eq!(one_line("two\nlines", 40), "two\\nlines");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("é\u{1b}x", 40), "é\\u{1b}x");
        assert_eq!(one_line("ééé", 2), "éé…");
    }
}
