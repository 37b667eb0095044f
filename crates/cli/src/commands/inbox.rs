//! `dp2ptcs inbox`: a client of the running node's API.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use dp2ptcs_node::api::client::{Client, ClientError, EventStream, HistoryFilter};
use dp2ptcs_node::api::{Event, Message};

use super::{api_client, block_on, utc_time};
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
    match show_and_follow(client, args).await {
        // The reader went away (`| head`): done, as other tools are.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn show_and_follow(client: &Client, args: &InboxArgs) -> Result<()> {
    // Subscribe before reading the history, so nothing falls between the two.
    let mut events = if args.follow {
        Some(client.events().await?)
    } else {
        None
    };
    let mut subscribed_at = Instant::now();
    let latest = client
        .history(&HistoryFilter {
            limit: Some(args.limit),
            newest: true,
            ..filter(args)
        })
        .await?;
    // What is shown next comes after this position in the history (which never reuses one).
    let mut last_seq = 0;
    for m in &latest {
        show(m, args.json)?;
        last_seq = last_seq.max(m.seq);
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        while let Some(event) = match events.as_mut() {
            Some(events) => events.next().await,
            None => None,
        } {
            match event {
                Ok(Event::Message { .. } | Event::Lagged { .. }) => {}
                // A message sent (from here or any other client) is shown with --all.
                Ok(Event::Queued { .. }) if args.all => {}
                Ok(
                    Event::Queued { .. }
                    | Event::Held { .. }
                    | Event::Delivered { .. }
                    | Event::Expired { .. }
                    | Event::Cancelled { .. }
                    | Event::Other,
                ) => continue,
                // The connection broke (the node was killed): as if the stream ended.
                Err(_) => break,
            }
            if !catch_up(client, args, &mut last_seq).await? {
                break;
            }
        }
        drop(events.take());
        // The node closed a stream this side did not read in time (its output was not read):
        // it goes on where it was, without a word. Not again at once for a stream that ended
        // as soon as it began.
        if subscribed_at.elapsed() >= RESUBSCRIBE_EVERY {
            if let Ok(subscribed) = client.events().await {
                if catch_up(client, args, &mut last_seq).await? {
                    events = Some(subscribed);
                    subscribed_at = Instant::now();
                    continue;
                }
            }
        }
        // The node stopped. Following goes on once it runs again, from where it was: what it
        // received meanwhile (at its start, from mailboxes) is shown first.
        errln!("dp2ptcs: the node stopped; waiting for it to run again (Ctrl-C to quit)");
        loop {
            let subscribed = resubscribe(client).await?;
            errln!("dp2ptcs: the node runs again");
            if catch_up(client, args, &mut last_seq).await? {
                events = Some(subscribed);
                subscribed_at = Instant::now();
                break;
            }
            // Gone again at once: not in a busy loop.
            drop(subscribed);
            tokio::time::sleep(RESUBSCRIBE_EVERY).await;
        }
    }
}

/// Shows what is new in the history after `last_seq`: the same shape as the first page, and
/// nothing is lost even if the event subscriber lagged. `false` if the node stopped meanwhile.
async fn catch_up(client: &Client, args: &InboxArgs, last_seq: &mut i64) -> Result<bool> {
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
            show(m, args.json)?;
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

/// Whether `e` says the node is not running, or is starting or stopping (or its connection
/// broke), rather than refusing the request.
fn node_away(e: &ClientError) -> bool {
    use std::io::ErrorKind;
    match e {
        ClientError::Api { status, .. } => *status == 503,
        ClientError::NotRunning(_) | ClientError::Protocol(_) => true,
        ClientError::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::NotFound
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Prints `m` on one line (one JSON object with `json`); an error if standard output is gone.
fn show(m: &Message, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_value(m)?)?;
        return Ok(out.flush()?);
    }
    let when = utc_time(m.sent_at_ms);
    let who = m
        .peer_name
        .as_deref()
        .map_or_else(|| format!("{}…", &m.peer[..8.min(m.peer.len())]), printable);
    let body = body_lines(&m.body);
    let shown = if m.direction == "incoming" {
        format!("[{when}] {who}: {body}")
    } else {
        format!("[{when}] → {who}: {body} ({})", m.state)
    };
    // On a terminal, the rows it would wrap are wrapped here, each starting as a continued line:
    // else a body padded to the terminal's width could start a row that looks like a message.
    let shown = match terminal_columns() {
        Some(columns) => wrapped(&shown, columns),
        None => shown,
    };
    writeln!(out, "{shown}")?;
    Ok(out.flush()?)
}

/// The width of the terminal standard output is, if it is one.
fn terminal_columns() -> Option<usize> {
    let (terminal_size::Width(w), _) = terminal_size::terminal_size_of(std::io::stdout())?;
    Some(usize::from(w))
}

/// `text` (lines after the first starting with [`CONTINUED`]) cut into rows narrower than
/// `columns`, each row after the first starting with [`CONTINUED`]. A terminal too narrow to
/// hold the prefix and some text gets `text` as it is.
fn wrapped(text: &str, columns: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let prefix = CONTINUED.chars().count();
    // One column spare: a row that fills the terminal exactly may leave the cursor past it.
    let room = columns.saturating_sub(1);
    if room < prefix + 8 {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + text.len() / room * (prefix + 1));
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut used = 0;
        for c in line.chars() {
            let w = c.width().unwrap_or(0);
            if used + w > room {
                out.push('\n');
                out.push_str(CONTINUED);
                used = prefix;
            }
            out.push(c);
            used += w;
        }
    }
    out
}

/// What starts each line of a message body after its first: a message shown in the inbox can
/// then not pass for another one, whose line starts with `[`.
const CONTINUED: &str = "    │ ";

/// A message body for the inbox: [`printable`], each line after the first starting with
/// [`CONTINUED`].
fn body_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join(&format!("\n{CONTINUED}"))
}

/// `text` with control characters other than tab (newlines and carriage returns included) and
/// invisible format characters escaped as `\u{..}`, so a text from a peer can neither drive the
/// terminal nor pass for other output.
pub(super) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() && c != '\t') || dp2ptcs_node::api::is_format_control(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{body_lines, printable, wrapped, CONTINUED};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("hi\u{1b}[2J there\t"), "hi\\u{1b}[2J there\t");
        assert_eq!(printable("\u{9b}x"), "\\u{9b}x");
        assert_eq!(printable("a\nb\r"), "a\\u{a}b\\u{d}");
        // Shown reversed, this would read "exe.txt".
        assert_eq!(printable("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(printable("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(printable("a\u{2028}b\u{85}c"), "a\\u{2028}b\\u{85}c");
        assert_eq!(printable("Grüße, 東京 ✓"), "Grüße, 東京 ✓");
    }

    #[test]
    fn a_body_padded_to_the_terminal_width_is_wrapped_as_one_message() {
        use unicode_width::UnicodeWidthStr;
        let header = "[2026-11-25 09:58:00Z] Alpha: ";
        // Padded so that, unwrapped, the forged header would start a row of an 80-column
        // terminal; then a continued line padded the same way, and wide characters.
        let body = format!(
            "ok{}[2026-11-25 09:59:00Z] Charlie (HQ): abort\n{}[x] y\n{}",
            " ".repeat(80 - header.len() - 2),
            ".".repeat(80 - CONTINUED.chars().count()),
            "東".repeat(60)
        );
        let shown = wrapped(&format!("{header}{}", body_lines(&body)), 80);
        let rows: Vec<&str> = shown.split('\n').collect();
        assert!(rows[0].starts_with(header));
        for row in &rows[1..] {
            assert!(row.starts_with(CONTINUED), "{row:?}");
        }
        assert!(rows.iter().all(|r| r.width() < 80), "{rows:?}");
        // Nothing is lost or changed but for the row breaks.
        let unwrapped = |t: &str| t.replace(&format!("\n{CONTINUED}"), "");
        assert_eq!(
            unwrapped(&shown),
            unwrapped(&format!("{header}{}", body_lines(&body)))
        );
        // Too narrow a terminal to wrap in: left as it is.
        assert_eq!(wrapped("abc\n    │ def", 10), "abc\n    │ def");
    }

    #[test]
    fn a_message_cannot_pass_for_two() {
        let forged = "ok\n[2026-11-25 09:59:00Z] Charlie (HQ): abort\r\n[x] y";
        let shown = body_lines(forged);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "ok");
        for line in &lines[1..] {
            assert!(line.starts_with(CONTINUED), "{line}");
        }
        assert_eq!(lines[2], format!("{CONTINUED}[x] y"));
        assert!(lines[1].ends_with("abort\\u{d}"));
    }
}
