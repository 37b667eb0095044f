//! `dp2ptcs send`: a client of the running node's API.

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Result};
use dp2ptcs_node::api::SendRequest;
use dp2ptcs_wire::MAX_CHAT_BODY_LEN;
use serde_json::json;

use super::{api_client, block_on, print_json};
use crate::cli::{Global, SendArgs};
use crate::{ExitError, EXIT_NOT_DELIVERED};

pub(super) fn run(global: &Global, args: &SendArgs) -> Result<()> {
    let text = if args.text == "-" {
        let mut buf = Vec::new();
        // Two bytes past the limit: one more than fits even once a final newline is dropped.
        std::io::stdin()
            .take(MAX_CHAT_BODY_LEN as u64 + 2)
            .read_to_end(&mut buf)?;
        let mut text = String::from_utf8(buf)
            .map_err(|_| anyhow::anyhow!("the message on standard input is not UTF-8"))?;
        if text.ends_with('\n') {
            text.pop();
        }
        text
    } else {
        args.text.clone()
    };
    if text.is_empty() {
        bail!("the message is empty");
    }
    if text.len() > MAX_CHAT_BODY_LEN {
        // Standard input is read only up to two bytes past the limit.
        if args.text == "-" {
            bail!(
                "the message on standard input is more than {MAX_CHAT_BODY_LEN} bytes, the most \
                 that fit in one message"
            );
        }
        bail!(
            "the message is {} bytes; at most {MAX_CHAT_BODY_LEN} fit in one message",
            text.len()
        );
    }
    let client = api_client(global)?;
    let request = SendRequest {
        to: args.contact.clone(),
        text,
        wait: args.wait,
        timeout_ms: Some(args.timeout.saturating_mul(1000)),
        ttl_ms: args
            .ttl
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
    };
    let asked = std::time::Instant::now();
    let response = block_on(client.send(&request))??;
    if args.json {
        print_json(&json!({
            "id": response.id,
            "to": response.to,
            "state": response.state,
        }));
    } else {
        outln!("{}", response.id);
    }
    if args.wait && response.state != "delivered" {
        let message = match response.state.as_str() {
            "cancelled" => {
                "the message was cancelled while waiting for its receipt; it is not sent again"
                    .to_owned()
            }
            "expired" => {
                "the message expired before its receipt came; it is not sent again".to_owned()
            }
            // Answered before its time: the node stopped waiting because it is shutting down.
            state
                if asked.elapsed() + Duration::from_millis(500)
                    < Duration::from_secs(args.timeout) =>
            {
                format!(
                    "the node stopped before the receipt came (the message is {state}); it stays \
                     in the outbox and is retried when the node runs again"
                )
            }
            state => format!(
                "no receipt within {} s (the message is {state}); it stays in the outbox and is \
                 retried",
                args.timeout
            ),
        };
        return Err(ExitError {
            code: EXIT_NOT_DELIVERED,
            message,
        }
        .into());
    }
    Ok(())
}
