//! Real `dp2ptcs run` processes on loopback, driven through the CLI and the local API:
//! messaging both ways, kill -9 and restart, retries while a peer is down, clean shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dp2ptcs_node::api::client::{Client, HistoryFilter};
use dp2ptcs_node::api::{Message, SendRequest};
use serde_json::Value;

mod common;

use common::*;

/// A safety net so a broken build fails instead of hanging; not a performance assertion.
const SAFETY: Duration = Duration::from_secs(180);
/// Quick retries, so a restarted peer is found again soon.
const CONFIG: &str = "[limits]\nretry_initial_ms = 100\nretry_max_ms = 1000\n";

/// A free UDP port on loopback, held by the socket returned until the node takes it.
fn reserve_udp_port() -> (u16, std::net::UdpSocket) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (socket.local_addr().unwrap().port(), socket)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < SAFETY, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One person: a data directory and, while running, their node process.
struct Person {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    port: u16,
    /// Holds `port` until the first start, so another test's node cannot take it meanwhile.
    reserved: Option<std::net::UdpSocket>,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
}

impl Person {
    fn init(name: &str) -> Self {
        // tmpfs when there is one: the store syncs every write.
        let tmp = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let dir = tmp.path().join("home");
        let (port, reserved) = reserve_udp_port();
        let p = Self {
            _tmp: tmp,
            dir,
            port,
            reserved: Some(reserved),
            child: None,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        p.run_ok(&[&["init", "--name", name], &FAST_KDF[..]].concat());
        fs::write(p.dir.join("config.toml"), CONFIG).unwrap();
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env("DP2PTCS_PASSPHRASE", PASS);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        assert_no_panic(&out);
        out
    }

    fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_slice(&self.run_ok(args).stdout).unwrap()
    }

    fn log_path(&self) -> PathBuf {
        self._tmp.path().join("node.log")
    }

    /// Starts `dp2ptcs run` and waits until its API answers.
    fn start(&mut self) {
        self.start_with(&[]);
    }

    /// [`Person::start`] with more `run` flags.
    fn start_with(&mut self, extra: &[&str]) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let listen = format!("127.0.0.1:{}", self.port);
        drop(self.reserved.take());
        let child = self
            .cmd(&[&["run", "--listen", &listen, "--log-format", "json"], extra].concat())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until("the node to start", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the node exited with {status}: {}",
                    fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            self.runtime.block_on(self.client().status()).is_ok()
        });
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", child.id())])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < SAFETY, "the node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `inbox --follow --json --limit 1`, its output piped.
    fn follow_inbox(&self) -> Child {
        self.cmd(&["inbox", "--follow", "--json", "--limit", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn client(&self) -> Client {
        Client::new(self.dir.join("api.sock"))
    }

    fn uri(&self) -> String {
        self.json(&["id", "--json"])["contact_uri"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn add(&self, name: &str, other: &Person) {
        self.run_ok(&["contact", "add", &other.uri(), "--name", name]);
    }

    fn queue(&self, to: &str, text: &str) -> String {
        let request = SendRequest {
            to: to.into(),
            text: text.into(),
            wait: false,
            timeout_ms: None,
            ttl_ms: None,
        };
        self.runtime
            .block_on(self.client().send(&request))
            .unwrap()
            .id
    }

    fn history(&self, direction: &str) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            let page = self
                .runtime
                .block_on(self.client().history(&HistoryFilter {
                    direction: Some(direction.into()),
                    after: all.last().map(|m: &Message| m.seq),
                    limit: Some(10_000),
                    ..HistoryFilter::default()
                }))
                .unwrap();
            let done = page.len() < 10_000;
            all.extend(page);
            if done {
                return all;
            }
        }
    }

    fn status(&self) -> dp2ptcs_node::api::Status {
        self.runtime.block_on(self.client().status()).unwrap()
    }
}

impl Drop for Person {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two running people who have added each other.
fn pair() -> (Person, Person) {
    let mut a = Person::init("Alpha");
    let mut b = Person::init("Bravo");
    a.start();
    b.start();
    // `id` now carries the listening address; contacts are added while the nodes run.
    a.add("Bravo", &b);
    b.add("Alpha", &a);
    (a, b)
}

/// Asserts `received` holds exactly the `expected` bodies, each once, in order.
fn assert_exactly_once_in_order(received: &[Message], expected: &[String]) {
    let bodies: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
    let ids: HashSet<&str> = received.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "a message was delivered twice");
    assert_eq!(bodies, expected, "messages lost, altered or out of order");
}

#[test]
fn two_nodes_exchange_1000_messages_both_ways_exactly_once_with_receipts() {
    let (a, b) = pair();
    const N: usize = 1000;

    // The CLI: send and wait for the receipt.
    let out = a.run_ok(&["send", "Bravo", "hello from the CLI", "--wait"]);
    let first_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(first_id.len(), 32);

    let a_to_b: Vec<String> = (0..N)
        .map(|i| format!("a->b #{i} {}", "x".repeat(i % 97)))
        .collect();
    let b_to_a: Vec<String> = (0..N).map(|i| format!("b->a #{i} ✓")).collect();
    for i in 0..N {
        a.queue("Bravo", &a_to_b[i]);
        b.queue("Alpha", &b_to_a[i]);
    }
    wait_until("every receipt", || {
        let (sa, sb) = (a.status(), b.status());
        sa.messages.delivered == N as u64 + 1 && sb.messages.delivered == N as u64
    });

    let mut expected_b = vec!["hello from the CLI".to_owned()];
    expected_b.extend(a_to_b);
    assert_exactly_once_in_order(&b.history("incoming"), &expected_b);
    assert_exactly_once_in_order(&a.history("incoming"), &b_to_a);
    assert!(a.history("outgoing").iter().all(|m| m.state == "delivered"));
    assert_eq!(b.history("incoming")[0].id, first_id);

    // The CLI views of the same.
    let status = b.json(&["status", "--json"]);
    assert_eq!(status["messages"]["received"], N as u64 + 1);
    assert_eq!(status["connected"][0]["name"], "Alpha");
    // Both queued for the other at once: two connections at most, one once the other idles.
    let connections = status["connections"].as_u64().unwrap();
    assert!((1..=2).contains(&connections), "{status}");
    let inbox = b.run_ok(&["inbox", "--json", "--limit", "3"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&inbox.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["body"], expected_b[N].as_str());
    let human = String::from_utf8_lossy(&b.run_ok(&["inbox", "--limit", "1"]).stdout).into_owned();
    assert!(human.contains("Alpha: a->b #999"), "{human}");

    // `inbox --follow` prints a message that arrives while it runs.
    let mut follow = b.follow_inbox();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let old: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(old["body"], expected_b[N].as_str());
    a.run_ok(&["send", "Bravo", "live one"]);
    let live: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(live["body"], "live one");
    assert_eq!(live["peer_name"], "Alpha");
    // Its reader goes away (as `| head -2` would): at the next message it ends quietly.
    drop(lines);
    // With --all, what B sends shows as it is sent, without waiting for a message to come in.
    let mut all = b
        .cmd(&["inbox", "--all", "--follow", "--json", "--limit", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, shown) = std::sync::mpsc::channel();
    let all_out = all.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(all_out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    shown.recv_timeout(SAFETY).unwrap();
    b.run_ok(&["send", "Alpha", "b sends this"]);
    let sent = shown
        .recv_timeout(SAFETY)
        .expect("the message sent was not shown");
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["body"], "b sends this");
    assert_eq!(sent["direction"], "outgoing");
    all.kill().unwrap();
    all.wait().unwrap();
    a.run_ok(&["send", "Bravo", "nobody reads this"]);
    wait_until("inbox --follow to end with its reader", || {
        follow.try_wait().unwrap().is_some()
    });
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
}

#[test]
fn kill_9_mid_stream_and_restart_loses_nothing_and_reuses_no_key() {
    let (a, mut b) = pair();
    a.queue("Bravo", "warm-up");
    wait_until("B to receive the first", || {
        b.status().messages.received == 1
    });
    // B's user follows the inbox, from the first message to after the crash.
    let mut follow = b.follow_inbox();
    let followed = {
        let (tx, rx) = std::sync::mpsc::channel();
        let out = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap();
                if tx.send(v["body"].as_str().unwrap().to_owned()).is_err() {
                    break;
                }
            }
        });
        rx
    };
    // It shows the latest message once it is subscribed.
    assert_eq!(followed.recv_timeout(SAFETY).unwrap(), "warm-up");
    let before: Vec<String> = (0..300).map(|i| format!("before #{i}")).collect();
    for text in &before {
        a.queue("Bravo", text);
    }
    // Kill B in the middle of the stream.
    wait_until("B to receive some", || b.status().messages.received >= 40);
    b.kill9();
    // Sent while B is down: queued, retried.
    let during: Vec<String> = (0..50).map(|i| format!("while down #{i}")).collect();
    for text in &during {
        a.queue("Bravo", text);
    }
    wait_until("A to back off from B", || a.status().peers_retrying == 1);
    b.start();

    let mut expected = vec!["warm-up".to_owned()];
    expected.extend(before);
    expected.extend(during);
    wait_until("every message to reach B", || {
        a.status().messages.delivered == expected.len() as u64
    });
    // Sessions and history survived the crash: what B had received before is still there,
    // nothing twice, in order.
    assert_exactly_once_in_order(&b.history("incoming"), &expected);
    // The inbox followed on after the restart: it showed every message, each once, in order.
    let mut shown: Vec<String> = Vec::new();
    while shown.last() != expected.last() {
        let body = followed
            .recv_timeout(SAFETY)
            .expect("inbox --follow stopped showing messages");
        shown.push(body);
    }
    assert_eq!(
        shown,
        expected[1..],
        "inbox --follow lost, repeated or reordered messages"
    );
    follow.kill().unwrap();
    follow.wait().unwrap();
    let mut said = String::new();
    follow
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        said.contains("the node stopped") && said.contains("runs again"),
        "{said}"
    );

    // After the restart B's sending chain continues from its saved state: A decrypts all.
    let replies: Vec<String> = (0..100).map(|i| format!("after restart #{i}")).collect();
    for text in &replies {
        b.queue("Alpha", text);
    }
    let more: Vec<String> = (0..20).map(|i| format!("more #{i}")).collect();
    for text in &more {
        a.queue("Bravo", text);
    }
    wait_until("the replies and more", || {
        b.status().messages.delivered == 100
            && a.status().messages.delivered == (expected.len() + 20) as u64
    });
    assert_exactly_once_in_order(&a.history("incoming"), &replies);
    expected.extend(more);
    assert_exactly_once_in_order(&b.history("incoming"), &expected);
}

#[test]
fn clients_explain_errors_and_sigterm_stops_the_node_cleanly() {
    let mut a = Person::init("Alpha");
    // Nothing running: every client says so.
    for args in [
        &["send", "Bravo", "hi"][..],
        &["status"][..],
        &["inbox"][..],
    ] {
        let out = a.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    }
    // A typo in config.toml is reported with the file, and nothing starts.
    fs::write(a.dir.join("config.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = a.run(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("config.toml"), "{}", stderr(&out));
    assert!(stderr(&out).contains("lisen"), "{}", stderr(&out));
    fs::write(a.dir.join("config.toml"), CONFIG).unwrap();
    // A bad flag value is a usage error.
    assert_eq!(
        a.run(&["run", "--listen", "nowhere"]).status.code(),
        Some(2)
    );

    a.start();
    // A second node on the same data directory is refused.
    let out = a.run(&["run", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));

    let out = a.run(&["send", "Nobody", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no contact named \"Nobody\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(a.run(&["send", "Nobody", ""]).status.code(), Some(1));

    // A contact whose node is down: --wait gives up with exit code 4, the message stays queued.
    let b = Person::init("Bravo");
    a.run_ok(&["contact", "add", &b.uri(), "--name", "Bravo"]);
    let out = a.run(&[
        "send",
        "Bravo",
        "are you there?",
        "--wait",
        "--timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("retried"));
    let status = a.json(&["status", "--json"]);
    assert_eq!(
        status["messages"]["queued"].as_u64().unwrap()
            + status["messages"]["sent"].as_u64().unwrap(),
        1
    );
    let human = String::from_utf8_lossy(&a.run_ok(&["status"]).stdout).into_owned();
    assert!(human.contains("127.0.0.1"), "{human}");

    // SIGTERM: a clean exit, the socket removed, JSON log lines.
    let status = a.sigterm();
    assert!(status.success(), "{status}");
    assert!(!a.dir.join("api.sock").exists());
    let log = fs::read_to_string(a.log_path()).unwrap();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v.get("level").is_some());
    }
    assert!(log.contains("stopped"), "{log}");
    // The queued message is still there for the next run.
    a.start();
    let status = a.status();
    assert_eq!(status.messages.queued + status.messages.sent, 1);
}

#[test]
fn a_node_whose_log_reader_went_away_keeps_running_and_stops_cleanly() {
    let mut a = Person::init("Alpha");
    let listen = format!("127.0.0.1:{}", a.port);
    drop(a.reserved.take());
    // `dp2ptcs run 2>&1 | head -1`: the reader takes one line and goes.
    let mut child = a
        .cmd(&["run", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    logs.read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    drop(logs);
    a.child = Some(child);
    wait_until("the node to answer", || {
        assert!(
            a.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the node died when its log reader went away"
        );
        a.runtime.block_on(a.client().status()).is_ok()
    });
    // Its shutdown logs too, into the closed pipe.
    let status = a.sigterm();
    assert!(status.success(), "{status}");
    assert!(!a.dir.join("api.sock").exists());
}

#[test]
fn the_outbox_lists_what_waits_and_a_cancelled_message_never_arrives() {
    let (mut a, mut b) = pair();
    assert!(b.sigterm().success());
    let ids: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|text| {
            stdout(&a.run_ok(&["send", "Bravo", text]))
                .trim()
                .to_owned()
        })
        .collect();
    // Each waiting message on a line of its own, with the id to cancel it by.
    let listed = stdout(&a.run_ok(&["outbox"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    for (line, id) in lines.iter().zip(&ids) {
        assert!(line.starts_with(id.as_str()), "{line}");
        assert!(line.contains("→ Bravo"), "{line}");
    }

    let out = a.run_ok(&["cancel", &ids[1]]);
    assert!(
        stdout(&out).contains(&format!("Cancelled {} to Bravo", ids[1])),
        "{}",
        stdout(&out)
    );
    // Cancelling it again, a made-up id or something that is not an id: a clear error each.
    for (id, says) in [
        (ids[1].clone(), "is cancelled, not waiting"),
        ("0".repeat(32), "no message was sent with id"),
        ("xyz".to_owned(), "32 hex digits"),
    ] {
        let out = a.run(&["cancel", &id]);
        assert_eq!(out.status.code(), Some(1), "{id}");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    // Nothing to cancel named, or both ways of naming it: usage errors.
    assert_eq!(a.run(&["cancel"]).status.code(), Some(2));
    assert_eq!(
        a.run(&["cancel", &ids[0], "--to", "Bravo"]).status.code(),
        Some(2)
    );
    let waiting: Vec<Value> = stdout(&a.run_ok(&["outbox", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let waiting: Vec<&str> = waiting.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(waiting, [&ids[0], &ids[2]]);

    // A contact removed with a message waiting: the command says so and how to drop it, and
    // that works by node id, though the name is gone.
    let charlie = Person::init("Charlie");
    a.add("Charlie", &charlie);
    a.run_ok(&["send", "Charlie", "for charlie"]);
    let out = stdout(&a.run_ok(&["contact", "remove", "Charlie"]));
    assert!(out.contains("1 message(s) to Charlie still wait"), "{out}");
    let c_id = charlie.json(&["id", "--json"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        out.contains(&format!("dp2ptcs cancel --to {}", &c_id[..16])),
        "{out}"
    );
    let out = a.run(&["cancel", "--to", "Charlie"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no contact named"),
        "{}",
        stderr(&out)
    );
    let out = stdout(&a.run_ok(&["cancel", "--to", &c_id[..16]]));
    assert!(out.starts_with("Cancelled 1 message(s)"), "{out}");

    // With Alpha's node stopped, the outbox is read and changed in the database itself.
    let four = stdout(&a.run_ok(&["send", "Bravo", "four"]))
        .trim()
        .to_owned();
    assert!(a.sigterm().success());
    let out = a.run_ok(&["outbox"]);
    let text = stdout(&out);
    let listed: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(listed, [&ids[0], &ids[2], &four]);
    assert!(
        stderr(&out).contains("No node is running"),
        "{}",
        stderr(&out)
    );
    let out = a.run_ok(&["cancel", &four]);
    assert!(
        stdout(&out).contains(&format!("Cancelled {four} to Bravo;")),
        "{}",
        stdout(&out)
    );
    let out = a.run(&["cancel", &four]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is cancelled, not waiting"),
        "{}",
        stderr(&out)
    );
    a.start();

    // Bravo comes back: the two left arrive, in order, once each; the cancelled ones never.
    b.start();
    wait_until("the two messages left to be delivered", || {
        a.status().messages.delivered == 2
    });
    assert_exactly_once_in_order(&b.history("incoming"), &["one".into(), "three".into()]);
    let out = a.run_ok(&["outbox"]);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("Nothing waits"), "{}", stderr(&out));
    assert_eq!(a.status().messages.cancelled, 3);

    // A node that holds the directory but whose API does not answer (here: its socket is gone)
    // is never bypassed: the database is left to it.
    fs::remove_file(a.dir.join("api.sock")).unwrap();
    let out = a.run(&["cancel", &ids[0]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("starting or stopping"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn id_shows_the_listening_address_after_a_run() {
    let mut a = Person::init("Alpha");
    a.start();
    let uri = a.uri();
    let parsed: dp2ptcs_crypto::ContactUri = uri.parse().unwrap();
    let expected: SocketAddr = format!("127.0.0.1:{}", a.port).parse().unwrap();
    assert_eq!(parsed.addresses(), &[expected]);
}

#[test]
fn nodes_join_through_a_seed_and_reach_a_contact_known_only_by_key() {
    let mut seed = Person::init("Seed");
    let mut a = Person::init("Alpha");
    let mut b = Person::init("Bravo");
    // Contact URIs made before the first run carry no address: only the keys.
    a.add("Bravo", &b);
    b.add("Alpha", &a);
    let bravo = a.json(&["contact", "show", "Bravo", "--json"]);
    assert_eq!(bravo["addresses"], serde_json::json!([]));
    let b_id = b.json(&["id", "--json"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seed_id = seed.json(&["id", "--json"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();

    seed.start();
    let seed_addr = format!("127.0.0.1:{}", seed.port);
    a.start_with(&["--bootstrap", &seed_addr]);
    b.start_with(&["--bootstrap", &seed_addr]);
    wait_until("both nodes to join the DHT", || {
        a.status().dht.peers >= 1 && b.status().dht.peers >= 1
    });

    // `peers`: the seed is in Alpha's table, proven, in human and JSON form.
    let peers = a.json(&["peers", "--json"]);
    let peers = peers.as_array().unwrap();
    assert!(peers
        .iter()
        .any(|p| p["node_id"] == seed_id.as_str() && p["addr"] == seed_addr.as_str()));
    let out = a.run_ok(&["peers"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&seed_id));

    // `lookup` finds Bravo where it listens, and shows the path. (A lookup that timed out on a
    // loaded machine exits 5; it is tried again, as a user would.)
    let found_by = |args: &[&str]| {
        let mut out = None;
        wait_until("Alpha's lookup to find Bravo", || {
            let o = a.run(args);
            let found = o.status.success();
            out = Some(o);
            found
        });
        out.unwrap()
    };
    let found: Value =
        serde_json::from_slice(&found_by(&["lookup", &b_id, "--json"]).stdout).unwrap();
    assert_eq!(found["found"], true, "{found}");
    assert_eq!(found["addr"], format!("127.0.0.1:{}", b.port).as_str());
    assert!(!found["path"].as_array().unwrap().is_empty());
    let out = found_by(&["lookup", &b_id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Found"));
    // By the contact's name, or the first digits of its id, as everywhere.
    for name in ["Bravo", &b_id[..8]] {
        let out = found_by(&["lookup", name]);
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("Found {b_id}")));
    }

    // A message to the contact known only by its key: found by lookup, delivered, once.
    let out = a.run(&[
        "send",
        "Bravo",
        "found by key alone",
        "--wait",
        "--timeout",
        "60",
    ]);
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    let received = b.history("incoming");
    assert_exactly_once_in_order(&received, &["found by key alone".to_owned()]);
    // And the reply goes back the same way.
    let out = b.run(&["send", "Alpha", "copy", "--wait", "--timeout", "60"]);
    assert!(out.status.success(), "reply failed: {}", stderr(&out));

    // An id nobody has: exit 5 and a clear message. Not an id at all: exit 1.
    let nobody = "00".repeat(32);
    let out = a.run(&["lookup", &nobody]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not answer"));
    let out = a.run(&["lookup", "not-an-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no contact named \"not-an-id\""));

    // Killed a minute after it joined, Alpha rejoins with no bootstrap address: it saved the
    // peers it knew as soon as it had joined.
    a.kill9();
    a.start();
    wait_until("Alpha to rejoin through the peers it remembered", || {
        a.status().dht.peers >= 1
    });
    wait_until("Alpha's lookup to find Bravo after the restart", || {
        a.run(&["lookup", &b_id, "--json"]).status.success()
    });
}
