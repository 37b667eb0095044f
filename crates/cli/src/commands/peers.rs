//! `dp2ptcs peers`: the running node's DHT routing table.

use anyhow::Result;

use super::{api_client, block_on, print_json};
use crate::cli::{Global, JsonArg};

pub(super) fn run(global: &Global, args: &JsonArg) -> Result<()> {
    let client = api_client(global)?;
    let peers = block_on(client.peers())??;
    if args.json {
        print_json(&serde_json::to_value(&peers)?);
        return Ok(());
    }
    if peers.is_empty() {
        outln!("The routing table is empty: no DHT peer is known yet (see `--bootstrap`).");
        return Ok(());
    }
    let now = super::now_unix_ms();
    outln!(
        "{:<6} {:<64}  {:<22} {:>10}  {:>5}  conn",
        "bucket",
        "node id",
        "address",
        "last seen",
        "fails"
    );
    for p in &peers {
        let ago = std::time::Duration::from_secs(now.saturating_sub(p.last_seen_ms) / 1000);
        outln!(
            "{:<6} {:<64}  {:<22} {:>10}  {:>5}  {}",
            p.bucket,
            p.node_id,
            p.addr,
            format!("{} ago", humantime::format_duration(ago)),
            p.failures,
            if p.connected { "yes" } else { "-" }
        );
    }
    outln!("{} peers", peers.len());
    Ok(())
}
