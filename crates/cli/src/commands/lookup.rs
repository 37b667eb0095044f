//! `dp2ptcs lookup NODE`: a DHT lookup through the running node, with the path it took.

use anyhow::{bail, Result};

use super::{api_client, block_on, print_json};
use crate::cli::{Global, LookupArgs};
use crate::{ExitError, EXIT_NOT_FOUND};

pub(super) fn run(global: &Global, args: &LookupArgs) -> Result<()> {
    let target = args.node.trim();
    if target.is_empty() {
        bail!("give a contact's name, at least 8 hex digits of its node id, or a node id");
    }
    let client = api_client(global)?;
    if block_on(client.status())??.node_id == target.to_ascii_lowercase() {
        bail!("{target} is this node's own id: look up another node's");
    }
    let r = block_on(client.lookup(target))??;
    if args.json {
        print_json(&serde_json::to_value(&r)?);
    } else {
        match &r.addr {
            Some(addr) => outln!("Found {} at {addr}", r.target),
            None => outln!("Not found: {}", r.target),
        }
        outln!(
            "{} request{} in {} round{}, {} ms",
            r.requests,
            if r.requests == 1 { "" } else { "s" },
            r.rounds,
            if r.rounds == 1 { "" } else { "s" },
            r.elapsed_ms
        );
        outln!("Path (every peer asked, in order):");
        for h in &r.path {
            outln!(
                "  hop {:<2} {}…  {:<22} {}",
                h.hop,
                &h.node_id[..16],
                h.addr,
                h.outcome
            );
        }
    }
    if r.found {
        Ok(())
    } else {
        Err(ExitError {
            code: EXIT_NOT_FOUND,
            message: format!(
                "{} did not answer: it is offline, or not in this network",
                r.target
            ),
        }
        .into())
    }
}
