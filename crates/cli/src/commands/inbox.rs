//! `dp2ptcs inbox`: a client of the running node's API.

use std::collections::HashSet;

use anyhow::Result;
use dp2ptcs_node::api::client::{Client, HistoryFilter};
use dp2ptcs_node::api::{Event, Message};

use super::{api_client, block_on, print_json, utc_time};
use crate::cli::{Global, InboxArgs};

pub(super) fn run(global: &Global, args: &InboxArgs) -> Result<()> {
    let client = api_client(global)?;
    block_on(inbox(&client, args))?
}

fn filter(args: &InboxArgs) -> HistoryFilter {
    HistoryFilter {
        peer: args.contact.clone(),
        direction: (!args.all).then(|| "incoming".to_owned()),
        ..HistoryFilter::default()
    }
}

async fn inbox(client: &Client, args: &InboxArgs) -> Result<()> {
    // Subscribe before reading the history, so nothing falls between the two.
    let mut events = if args.follow {
        Some(client.events().await?)
    } else {
        None
    };
    let latest = client
        .history(&HistoryFilter {
            limit: Some(args.limit),
            newest: true,
            ..filter(args)
        })
        .await?;
    let mut last_seq = 0;
    let mut shown = HashSet::new();
    for m in &latest {
        show(m, args.json)?;
        last_seq = last_seq.max(m.seq);
        shown.insert(m.seq);
    }
    let Some(events) = events.as_mut() else {
        return Ok(());
    };
    while let Some(event) = events.next().await {
        match event? {
            Event::Message { .. } | Event::Lagged { .. } => {}
            Event::Delivered { .. }
            | Event::Expired { .. }
            | Event::Cancelled { .. }
            | Event::Other => continue,
        }
        // Read what is new from the history: the same shape as above, and nothing is lost
        // even if this subscriber lagged.
        loop {
            let page = client
                .history(&HistoryFilter {
                    after: Some(last_seq),
                    limit: Some(1000),
                    ..filter(args)
                })
                .await?;
            // A page may stop short of 1000 (long bodies): read on until one is empty.
            if page.is_empty() {
                break;
            }
            for m in &page {
                last_seq = last_seq.max(m.seq);
                if shown.insert(m.seq) {
                    show(m, args.json)?;
                }
            }
        }
    }
    Ok(())
}

fn show(m: &Message, json: bool) -> Result<()> {
    if json {
        print_json(&serde_json::to_value(m)?);
        return Ok(());
    }
    let when = utc_time(m.sent_at_ms);
    let who = m
        .peer_name
        .clone()
        .unwrap_or_else(|| format!("{}…", &m.peer[..8.min(m.peer.len())]));
    let body = printable(&m.body);
    if m.direction == "incoming" {
        println!("[{when}] {who}: {body}");
    } else {
        println!("[{when}] → {who}: {body} ({})", m.state);
    }
    Ok(())
}

/// The text with control characters (other than newline and tab) escaped, so a message cannot
/// drive the terminal.
pub(super) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("hi\u{1b}[2J there\n"), "hi\\u{1b}[2J there\n");
        assert_eq!(printable("\u{9b}x"), "\\u{9b}x");
    }
}
