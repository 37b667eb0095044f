//! `dp2ptcs status`: a client of the running node's API.

use anyhow::Result;

use super::{api_client, block_on, print_json};
use crate::cli::{Global, JsonArg};

pub(super) fn run(global: &Global, args: &JsonArg) -> Result<()> {
    let client = api_client(global)?;
    let s = block_on(client.status())??;
    if args.json {
        print_json(&serde_json::to_value(&s)?);
        return Ok(());
    }
    let up = std::time::Duration::from_secs(s.uptime_secs);
    outln!("Node ID      {}", s.node_id);
    outln!("Version      {}", s.version);
    outln!("Listening    {} (UDP)", s.listen);
    outln!("Addresses    {}", list(&s.addresses));
    outln!("Uptime       {}", humantime::format_duration(up));
    outln!("Contacts     {}", s.contacts);
    let peers: Vec<String> = s
        .connected
        .iter()
        .map(|p| match &p.name {
            Some(name) => format!("{name} ({}…)", &p.node_id[..8]),
            None => format!("{}…", &p.node_id[..8]),
        })
        .collect();
    outln!(
        "Connected    {}: {} ({} messaging connection{})",
        peers.len(),
        list(&peers),
        s.connections,
        if s.connections == 1 { "" } else { "s" }
    );
    let m = &s.messages;
    outln!(
        "Messages     received {}; sent {} delivered, {} waiting for a receipt ({} queued, {} sent, {} held in mailboxes), {} expired, {} cancelled",
        m.received,
        m.delivered,
        m.queued + m.sent + m.held,
        m.queued,
        m.sent,
        m.held,
        m.expired,
        m.cancelled
    );
    outln!(
        "DHT          {} peer{} in the routing table, {} record{} held, {} DHT connection{}",
        s.dht.peers,
        if s.dht.peers == 1 { "" } else { "s" },
        s.dht.records,
        if s.dht.records == 1 { "" } else { "s" },
        s.dht.connections,
        if s.dht.connections == 1 { "" } else { "s" }
    );
    outln!(
        "Holding      {} message(s), {} bytes, in mailboxes for others",
        s.dht.mailbox_items,
        s.dht.mailbox_bytes
    );
    if !s.strangers.is_empty() {
        let n: u64 = s.strangers.iter().map(|x| x.messages).sum();
        outln!(
            "Not contacts {} message(s) from {} node(s) that are not your contacts, kept until you add them ({}): {}",
            n,
            s.strangers.len(),
            "dp2ptcs contact add URI",
            s.strangers
                .iter()
                .map(|x| format!("{} ({})", x.node_id, x.messages))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if s.receipts_owed > 0 {
        outln!(
            "Receipts     {} owed for messages taken from the mailbox: sent to their senders, or to their mailboxes, once either can be reached",
            s.receipts_owed
        );
    }
    if s.peers_retrying > 0 {
        outln!(
            "Retrying     {} peer(s) unreachable at their last attempt",
            s.peers_retrying
        );
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}
