//! `dp2ptcs inbox`: a client of the running node's API.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use dp2ptcs_node::api::client::{Client, ClientError, EventStream, HistoryFilter};
use dp2ptcs_node::api::{Event, Message};

use super::{api_client, block_on, print_json, utc_time};
use crate::cli::{Global, InboxArgs};

/// How often `--follow` tries to subscribe again while the node is not running.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

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
    let events = if args.follow {
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
    let Some(mut events) = events else {
        return Ok(());
    };
    loop {
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Message { .. } | Event::Lagged { .. }) => {}
                Ok(
                    Event::Delivered { .. }
                    | Event::Expired { .. }
                    | Event::Cancelled { .. }
                    | Event::Other,
                ) => continue,
                // The connection broke (the node was killed): as if the stream ended.
                Err(_) => break,
            }
            if !catch_up(client, args, &mut last_seq, &mut shown).await? {
                break;
            }
        }
        // The node stopped. Following goes on once it runs again, from where it was: what it
        // received meanwhile (at its start, from mailboxes) is shown first.
        loop {
            eprintln!("dp2ptcs: the node stopped; waiting for it to run again (Ctrl-C to quit)");
            events = resubscribe(client).await?;
            eprintln!("dp2ptcs: the node runs again");
            if catch_up(client, args, &mut last_seq, &mut shown).await? {
                break;
            }
        }
    }
}

/// Shows what is new in the history after `last_seq`: the same shape as the first page, and
/// nothing is lost even if the event subscriber lagged. `false` if the node stopped meanwhile.
async fn catch_up(
    client: &Client,
    args: &InboxArgs,
    last_seq: &mut i64,
    shown: &mut HashSet<i64>,
) -> Result<bool> {
    loop {
        let page = client
            .history(&HistoryFilter {
                after: Some(*last_seq),
                limit: Some(1000),
                ..filter(args)
            })
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) if node_away(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        // A page may stop short of 1000 (long bodies): read on until one is empty.
        if page.is_empty() {
            return Ok(true);
        }
        for m in &page {
            *last_seq = (*last_seq).max(m.seq);
            if shown.insert(m.seq) {
                show(m, args.json)?;
            }
        }
    }
}

/// Subscribes to the events again once the node answers. Waits while nothing answers or the
/// node is starting or stopping; a refusal that waiting will not change is an error.
async fn resubscribe(client: &Client) -> Result<EventStream> {
    loop {
        match client.events().await {
            Ok(events) => return Ok(events),
            Err(e) if node_away(&e) => tokio::time::sleep(RESUBSCRIBE_EVERY).await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `e` says the node is not running, or is starting or stopping, rather than refusing
/// the request.
fn node_away(e: &ClientError) -> bool {
    match e {
        ClientError::Api { status, .. } => *status == 503,
        ClientError::NotRunning(_) | ClientError::Io(_) | ClientError::Protocol(_) => true,
        _ => false,
    }
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
