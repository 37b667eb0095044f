//! `dp2ptcs cancel`: a client of the running node's API, or, with no node running, a change to
//! the database.

use anyhow::{bail, Result};
use dp2ptcs_node::api::CancelResponse;

use super::outbox_access::OutboxAccess;
use super::print_json;
use crate::cli::{CancelArgs, Global};
use crate::ExitError;

pub(super) fn run(global: &Global, args: &CancelArgs) -> Result<()> {
    let mut access = OutboxAccess::new(global)?;
    if let Some(to) = &args.to {
        let r = match access.cancel_all(to)? {
            Ok(r) => r,
            Err(why) => bail!("{why}"),
        };
        if args.json {
            print_json(&serde_json::to_value(&r)?);
        } else if r.cancelled.is_empty() {
            outln!("Nothing was waiting for {to}.");
        } else {
            outln!(
                "Cancelled {} message(s) waiting for {to}:",
                r.cancelled.len()
            );
            for id in &r.cancelled {
                if r.in_flight.contains(id) {
                    outln!("{id} (a copy was leaving at that moment: it may still arrive)");
                } else {
                    outln!("{id}");
                }
            }
        }
        return Ok(());
    }
    let mut failed = 0;
    for id in &args.ids {
        match access.cancel(id.trim())? {
            Ok(r) if args.json => print_json(&serde_json::to_value(&r)?),
            Ok(r) => outln!("{}", describe(&r)),
            // Several: a refusal of one is said, and the others are still cancelled.
            Err(why) if args.ids.len() > 1 => {
                errln!("error: {why}");
                failed += 1;
            }
            Err(why) => bail!("{why}"),
        }
    }
    if failed > 0 {
        return Err(ExitError {
            code: 1,
            message: format!(
                "{failed} of {} message(s) not cancelled (see above)",
                args.ids.len()
            ),
        }
        .into());
    }
    Ok(())
}

/// What cancelling did, for a person: whether a copy may still arrive.
fn describe(r: &CancelResponse) -> String {
    let m = &r.message;
    let who = m
        .peer_name
        .clone()
        .unwrap_or_else(|| format!("{}…", m.peer.chars().take(8).collect::<String>()));
    if r.in_flight {
        return format!(
            "Cancelled {} to {who}; a copy was leaving at that moment and may still arrive (its \
             receipt would mark it delivered).",
            m.id
        );
    }
    let what = match r.was.as_str() {
        "queued" => "as far as this node knows, no copy had left it".to_owned(),
        "sent" => format!(
            "it had been sent: {who}'s node may have it already, and its receipt would still mark \
             it delivered"
        ),
        "held" => format!("a mailbox holds a copy that {who} may still fetch"),
        other => format!("it was {other}"),
    };
    format!("Cancelled {} to {who}; {what}.", m.id)
}
