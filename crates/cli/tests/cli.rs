//! Drives the built `dp2ptcs` binary through every command and every bad-input case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod common;

use common::*;

/// One person's data directory.
struct Node {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Node {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        Self { _tmp: tmp, dir }
    }

    fn init(name: &str) -> Self {
        let node = Self::new();
        let out = node.run_ok(&[&["init", "--name", name], &FAST_KDF[..]].concat());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Created a new identity"));
        node
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

    fn run_err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} should fail: {}",
            stdout(&out)
        );
        stderr(&out)
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_slice(&self.run_ok(args).stdout).unwrap()
    }

    fn uri(&self) -> String {
        self.json(&["id", "--json"])["contact_uri"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn key_file(&self) -> PathBuf {
        self.dir.join("node.key")
    }

    fn tmp(&self, name: &str) -> PathBuf {
        self._tmp.path().join(name)
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Decodes every QR code in a grayscale image with quircs, a decoder independent of the one
/// the program uses (rqrr).
fn quircs_decode(width: usize, height: usize, pixels: &[u8]) -> Vec<String> {
    let mut decoder = quircs::Quirc::default();
    decoder
        .identify(width, height, pixels)
        .filter_map(|code| code.ok()?.decode().ok())
        .map(|data| String::from_utf8(data.payload).unwrap())
        .collect()
}

fn quircs_decode_png(path: &Path) -> Vec<String> {
    let img = image::open(path).unwrap().into_luma8();
    quircs_decode(img.width() as usize, img.height() as usize, img.as_raw())
}

#[test]
fn init_creates_a_private_identity_and_id_shows_it() {
    let node = Node::new();
    let init: Value = serde_json::from_slice(
        &node
            .run_ok(&[&["init", "--json", "--name", "Alpha"], &FAST_KDF[..]].concat())
            .stdout,
    )
    .unwrap();
    assert_eq!(mode(&node.dir), 0o700);
    assert_eq!(mode(&node.key_file()), 0o600);
    assert_eq!(mode(&node.dir.join("node.db")), 0o600);
    let key: Value = serde_json::from_slice(&fs::read(node.key_file()).unwrap()).unwrap();
    assert_eq!(key["version"], 1);
    assert_eq!(key["kdf"]["algorithm"], "argon2id");
    for field in ["salt", "nonce", "ciphertext"] {
        assert!(key[field].is_string(), "{field}");
    }

    let id = node.json(&["id", "--json"]);
    let fields: Vec<&String> = id.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["contact_uri", "node_id", "public_key"]);
    assert_eq!(id["node_id"], init["node_id"]);
    let node_id = id["node_id"].as_str().unwrap();
    assert_eq!(node_id.len(), 64);
    // node id = SHA-256(public key), checked independently of the program's code path.
    let pk = hex::decode(id["public_key"].as_str().unwrap()).unwrap();
    let expected = dp2ptcs_types::NodeId::from_public_key(&pk.try_into().unwrap());
    assert_eq!(node_id, expected.to_hex());
    assert!(id["contact_uri"]
        .as_str()
        .unwrap()
        .starts_with("dp2ptcs://contact?v=1&"));

    let text = stdout(&node.run_ok(&["id"]));
    assert!(text.contains(node_id));
    assert!(text.contains("█"), "a QR code is drawn");
}

#[test]
fn default_parameters_are_written_when_none_are_given() {
    let node = Node::new();
    node.run_ok(&["init"]);
    let key: Value = serde_json::from_slice(&fs::read(node.key_file()).unwrap()).unwrap();
    assert_eq!(key["kdf"]["m_cost"], 65536);
    assert_eq!(key["kdf"]["t_cost"], 3);
    assert_eq!(key["kdf"]["p_cost"], 4);
}

#[test]
fn data_dir_comes_from_the_environment_too() {
    let node = Node::new();
    let out = bin()
        .env("DP2PTCS_HOME", &node.dir)
        .env("DP2PTCS_PASSPHRASE", PASS)
        .args([&["init"], &FAST_KDF[..]].concat())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(node.key_file().exists());
}

#[test]
fn qr_png_decodes_to_the_uri_with_an_independent_decoder() {
    let node = Node::init("Alpha");
    let png = node.tmp("me.png");
    let id: Value = serde_json::from_slice(
        &node
            .run_ok(&[
                "id",
                "--json",
                "--address",
                "192.0.2.1:4433",
                "--qr-png",
                png.to_str().unwrap(),
            ])
            .stdout,
    )
    .unwrap();
    assert_eq!(
        quircs_decode_png(&png),
        [id["contact_uri"].as_str().unwrap()]
    );
}

#[test]
fn terminal_qr_decodes_to_the_uri() {
    let node = Node::init("Alpha");
    let uri = node.uri();
    let text = stdout(&node.run_ok(&["id"]));
    // Rebuild a bitmap from the half-block characters: each cell holds two modules.
    let lines: Vec<Vec<char>> = text
        .lines()
        .filter(|l| !l.is_empty() && l.chars().all(|c| " █▀▄".contains(c)))
        .map(|l| l.chars().collect())
        .collect();
    let scale = 4;
    let width = lines[0].len() * scale;
    let height = lines.len() * 2 * scale;
    let mut pixels = vec![0u8; width * height];
    for (row, line) in lines.iter().enumerate() {
        for (col, c) in line.iter().enumerate() {
            let (top, bottom) = match c {
                '█' => (255, 255),
                '▀' => (255, 0),
                '▄' => (0, 255),
                _ => (0, 0),
            };
            for dy in 0..2 * scale {
                for dx in 0..scale {
                    let v = if dy < scale { top } else { bottom };
                    // Light modules are drawn as blocks: invert to get dark modules on light.
                    pixels[(row * 2 * scale + dy) * width + col * scale + dx] = 255 - v;
                }
            }
        }
    }
    let inverted: Vec<u8> = pixels.iter().map(|p| 255 - p).collect();
    let mut found = quircs_decode(width, height, &pixels);
    found.extend(quircs_decode(width, height, &inverted));
    assert!(found.contains(&uri), "decoded {found:?}");
}

#[test]
fn init_refuses_to_overwrite_and_force_keeps_a_backup() {
    let node = Node::init("Alpha");
    let before = fs::read(node.key_file()).unwrap();
    let old_id = node.json(&["id", "--json"])["node_id"].clone();
    let err = node.run_err(&[&["init"], &FAST_KDF[..]].concat());
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(node.key_file()).unwrap(), before);

    let out = node.json(&[&["init", "--force", "--json"], &FAST_KDF[..]].concat());
    assert_ne!(out["node_id"], old_id);
    let backup = PathBuf::from(out["backups"][0].as_str().unwrap());
    assert_eq!(
        fs::read(&backup).unwrap(),
        before,
        "the old identity is kept"
    );
    assert_eq!(mode(&backup), 0o600);
    // The backup still unlocks to the old identity.
    let restore = Node::new();
    fs::create_dir(&restore.dir).unwrap();
    fs::set_permissions(&restore.dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(&backup, restore.key_file()).unwrap();
    assert_eq!(restore.json(&["id", "--json"])["node_id"], old_id);
}

#[test]
fn weak_passphrases_are_refused_unless_allowed() {
    let node = Node::new();
    let out = node
        .cmd(&[&["init"], &FAST_KDF[..]].concat())
        .env("DP2PTCS_PASSPHRASE", "password1")
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("too weak"), "{}", stderr(&out));
    assert!(!node.key_file().exists());

    let out = node
        .cmd(&[&["init", "--allow-weak-passphrase"], &FAST_KDF[..]].concat())
        .env("DP2PTCS_PASSPHRASE", "password1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn passphrase_file_is_a_source() {
    let node = Node::new();
    let file = node.tmp("pass.txt");
    fs::write(&file, format!("{PASS}\n")).unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--passphrase-file")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        assert_no_panic(&out);
        out
    };
    assert!(run(&[&["init"], &FAST_KDF[..]].concat()).status.success());
    assert!(run(&["id", "--json"]).status.success());
    // The same passphrase from the environment unlocks it too.
    node.run_ok(&["id", "--json"]);
    let missing = node.tmp("nope.txt");
    let out = bin()
        .arg("--data-dir")
        .arg(&node.dir)
        .arg("--passphrase-file")
        .arg(&missing)
        .args(["id"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope.txt"), "{}", stderr(&out));
}

#[test]
fn without_a_terminal_or_other_source_the_error_says_what_to_do() {
    let node = Node::init("Alpha");
    if Command::new("setsid").arg("--version").output().is_err() {
        eprintln!("skipped: setsid(1) is not installed");
        return;
    }
    // setsid detaches from any controlling terminal, so the prompt cannot open /dev/tty.
    let out = Command::new("setsid")
        .arg(env!("CARGO_BIN_EXE_dp2ptcs"))
        .arg("--data-dir")
        .arg(&node.dir)
        .arg("id")
        .env_remove("DP2PTCS_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--passphrase-file") && err.contains("DP2PTCS_PASSPHRASE"),
        "{err}"
    );
}

#[test]
fn interactive_prompt_asks_twice_without_echo() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let node = Node::new();
    let command = format!(
        "{} --data-dir {} init {}",
        env!("CARGO_BIN_EXE_dp2ptcs"),
        node.dir.display(),
        FAST_KDF.join(" ")
    );
    // The two prompts, in the order they are asked.
    const PROMPTS: [&str; 2] = ["New passphrase: ", "New passphrase (again): "];
    let run = |input: &str| {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("DP2PTCS_PASSPHRASE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let shown = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let reader = {
            let shown = shown.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = stdout.read(&mut buf) {
                    shown.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        // Type each line only once its prompt is shown and, a moment later, echo is off (the
        // prompt is written before echo is turned off; a second covers a loaded machine).
        let mut stdin = child.stdin.take().unwrap();
        for (line, prompt) in input.lines().zip(PROMPTS) {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !String::from_utf8_lossy(&shown.lock().unwrap()).contains(prompt) {
                assert!(std::time::Instant::now() < end, "no prompt {prompt:?}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
            writeln!(stdin, "{line}").unwrap();
        }
        drop(stdin);
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let shown = String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
        (status, shown)
    };
    let (status, shown) = run("first words here ok\nsecond words differ\n");
    assert!(!status.success());
    assert!(shown.contains("differ"), "{shown}");
    assert!(!node.key_file().exists());

    let (status, shown) = run(&format!("{PASS}\n{PASS}\n"));
    assert!(status.success(), "{shown}");
    assert!(shown.contains("New passphrase"), "{shown}");
    assert!(!shown.contains(PASS), "the passphrase was echoed: {shown}");
    node.run_ok(&["id", "--json"]);
}

#[test]
fn wrong_passphrase_is_refused_and_the_file_is_untouched() {
    let node = Node::init("Alpha");
    let before = fs::read(node.key_file()).unwrap();
    let before_mtime = fs::metadata(node.key_file()).unwrap().modified().unwrap();
    for args in [&["id"][..], &["contact", "list"], &["change-passphrase"]] {
        let out = node
            .cmd(args)
            .env("DP2PTCS_PASSPHRASE", "not the passphrase")
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("wrong passphrase or damaged key file"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(fs::read(node.key_file()).unwrap(), before);
    assert_eq!(
        fs::metadata(node.key_file()).unwrap().modified().unwrap(),
        before_mtime
    );
}

#[test]
fn damaged_key_files_are_named() {
    let node = Node::init("Alpha");
    let good = fs::read_to_string(node.key_file()).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            good[..good.len() / 2].to_owned(),
            "damaged or not a DP2PTCS key file",
        ),
        (
            "\u{0}\u{1}garbage".to_owned(),
            "damaged or not a DP2PTCS key file",
        ),
        (String::new(), "empty"),
        (
            good.replacen("\"version\": 1", "\"version\": 7", 1),
            "version 7",
        ),
        (good.replace("argon2id", "scrypt"), "only argon2id"),
        (good.replacen("\"salt\": \"", "\"salt\": \"AA", 1), "salt"),
    ];
    for (content, expected) in cases {
        fs::write(node.key_file(), &content).unwrap();
        let err = node.run_err(&["id"]);
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
        assert!(err.contains("node.key"), "the error names the file: {err}");
    }
    // A flipped ciphertext byte is indistinguishable from a wrong passphrase, by design.
    let key: Value = serde_json::from_str(&good).unwrap();
    let ct = key["ciphertext"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        if ct.starts_with('A') { "B" } else { "A" },
        &ct[1..]
    );
    fs::write(node.key_file(), good.replace(ct, &flipped)).unwrap();
    assert!(node
        .run_err(&["id"])
        .contains("wrong passphrase or damaged key file"));
}

#[test]
fn readable_key_file_is_refused_with_the_fix() {
    let node = Node::init("Alpha");
    fs::set_permissions(node.key_file(), fs::Permissions::from_mode(0o644)).unwrap();
    let err = node.run_err(&["id"]);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(
        err.contains(&node.key_file().display().to_string()),
        "{err}"
    );
    fs::set_permissions(node.key_file(), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&node.dir, fs::Permissions::from_mode(0o755)).unwrap();
    let err = node.run_err(&["id"]);
    assert!(err.contains("chmod 700"), "{err}");
}

#[test]
fn missing_identity_says_to_run_init() {
    let node = Node::new();
    assert!(node.run_err(&["id"]).contains("dp2ptcs init"));
    assert!(node.run_err(&["contact", "list"]).contains("dp2ptcs init"));
}

#[test]
fn contacts_from_uri_and_from_qr_images() {
    let alice = Node::init("Alice");
    let bob = Node::init("Bob");
    let carol = Node::init("Carol");

    // From the URI text.
    let added = alice.json(&["contact", "add", &bob.uri(), "--json"]);
    assert_eq!(added["name"], "Bob");
    assert_eq!(added["outcome"], "added");
    assert_eq!(added["verified"], false);

    // From a PNG of the QR code, under a chosen name.
    let png = carol.tmp("carol.png");
    carol.run_ok(&["id", "--qr-png", png.to_str().unwrap(), "--no-qr"]);
    alice.run_ok(&[
        "contact",
        "add",
        "--qr-image",
        png.to_str().unwrap(),
        "--name",
        "C",
    ]);

    // From a JPEG photo (lossy, scaled, on a grey background).
    let img = image::open(&png).unwrap().to_luma8();
    let mut photo =
        image::GrayImage::from_pixel(img.width() + 300, img.height() + 200, image::Luma([170]));
    image::imageops::overlay(&mut photo, &img, 150, 100);
    let photo = image::imageops::resize(
        &photo,
        photo.width() * 3 / 4,
        photo.height() * 3 / 4,
        image::imageops::FilterType::Triangle,
    );
    let jpeg = alice.tmp("photo.jpg");
    photo.save(&jpeg).unwrap();
    let dave = Node::init("Dave");
    dave.run_ok(&["contact", "add", "--qr-image", jpeg.to_str().unwrap()]);
    assert_eq!(
        dave.json(&["contact", "list", "--json"])[0]["name"],
        "Carol"
    );

    let list = alice.json(&["contact", "list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bob", "C"]);
    let table = stdout(&alice.run_ok(&["contact", "list"]));
    assert!(
        table.contains("VERIFIED") && table.contains("Bob"),
        "{table}"
    );

    // Show by id prefix, remove by name.
    let bob_id = bob.json(&["id", "--json"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        alice.json(&["contact", "show", &bob_id[..10], "--json"])["name"],
        "Bob"
    );
    alice.run_ok(&["contact", "remove", "C"]);
    assert_eq!(
        alice
            .json(&["contact", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(alice
        .run_err(&["contact", "remove", "C"])
        .contains("no contact"));
}

#[test]
fn a_different_key_under_a_known_name_never_replaces_it() {
    let alice = Node::init("Alice");
    let bob = Node::init("Bob");
    let mallory = Node::init("Bob");
    alice.run_ok(&["contact", "add", &bob.uri()]);
    let before = alice.json(&["contact", "list", "--json"]);
    let err = alice.run_err(&["contact", "add", &mallory.uri()]);
    assert!(err.contains("DIFFERENT key"), "{err}");
    assert_eq!(alice.json(&["contact", "list", "--json"]), before);
    let list = alice.json(&["contact", "list", "--json"]);
    assert_eq!(list[0]["node_id"], bob.json(&["id", "--json"])["node_id"]);
    // Under another name it is fine.
    alice.run_ok(&[
        "contact",
        "add",
        &mallory.uri(),
        "--name",
        "Bob (new phone?)",
    ]);
}

#[test]
fn a_name_that_could_pass_for_another_contact_is_refused() {
    let alice = Node::init("Alice");
    let bob = Node::init("Bob");
    let carol = Node::init("Carol");
    alice.run_ok(&["contact", "add", &bob.uri()]);
    let bob_id = bob.json(&["id", "--json"])["node_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Named as the start of Bob's node id, Carol would get what is meant for Bob.
    let err = alice.run_err(&["contact", "add", &carol.uri(), "--name", &bob_id[..8]]);
    assert!(err.contains("node id prefix"), "{err}");
    // Shown reversed, a name could read as another.
    let err = alice.run_err(&["contact", "add", &carol.uri(), "--name", "Carol\u{202e}boB"]);
    assert!(err.contains("invisible"), "{err}");
    assert_eq!(
        alice
            .json(&["contact", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    alice.run_ok(&["contact", "add", &carol.uri(), "--name", "Carol 7"]);
}

#[test]
fn bad_contact_input_gets_clear_errors() {
    let alice = Node::init("Alice");
    let bob = Node::init("Bob");
    let uri = bob.uri();
    // One character too many: no longer 32 bytes, whatever the key.
    let typo = uri.replacen("key=", "key=A", 1);
    let cases: Vec<(String, &str)> = vec![
        ("https://example.com/".into(), "not a DP2PTCS contact URI"),
        ("dp2ptcs://contact?v=2".into(), "version"),
        (typo, "key"),
        (uri.replace("name=Bob", "name=Rob"), "signature"),
        (format!("{uri}&extra=1"), "unknown field"),
    ];
    for (input, expected) in cases {
        let err = alice.run_err(&["contact", "add", &input]);
        assert!(
            err.to_lowercase().contains(&expected.to_lowercase()),
            "{input}: expected {expected:?} in {err}"
        );
    }
    // A URI with no name needs --name.
    let nameless = Node::new();
    nameless.run_ok(&[&["init"], &FAST_KDF[..]].concat());
    assert!(alice
        .run_err(&["contact", "add", &nameless.uri()])
        .contains("--name"));
    // Our own URI.
    assert!(alice
        .run_err(&["contact", "add", &alice.uri()])
        .contains("your own"));

    // An image without a QR code, a file that is not an image, a QR code that is not a contact.
    let blank = alice.tmp("blank.png");
    image::GrayImage::from_pixel(200, 200, image::Luma([255]))
        .save(&blank)
        .unwrap();
    assert!(alice
        .run_err(&["contact", "add", "--qr-image", blank.to_str().unwrap()])
        .contains("no QR code"));
    let text = alice.tmp("notes.png");
    fs::write(&text, "just text").unwrap();
    assert!(alice
        .run_err(&["contact", "add", "--qr-image", text.to_str().unwrap()])
        .contains("not a PNG or JPEG"));
    let sn_png = alice.tmp("sn.png");
    alice.run_ok(&["contact", "add", &uri]);
    alice.run_ok(&[
        "verify",
        "Bob",
        "--qr-png",
        sn_png.to_str().unwrap(),
        "--no-qr",
    ]);
    let err = alice.run_err(&["contact", "add", "--qr-image", sn_png.to_str().unwrap()]);
    assert!(err.contains("not a DP2PTCS contact"), "{err}");
    assert!(alice
        .run_err(&["contact", "add", "--qr-image", "/nonexistent.png"])
        .contains("/nonexistent.png"));
    // Usage errors: exit code 2 and a usage message.
    let out = alice.run(&["contact", "add"]);
    assert_eq!(out.status.code(), Some(2));
    let out = alice.run(&["contact", "add", &uri, "--qr-image", "x.png"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn safety_numbers_match_on_both_sides_and_scanning_verifies() {
    let alice = Node::init("Alice");
    let bob = Node::init("Bob");
    alice.run_ok(&["contact", "add", &bob.uri()]);
    bob.run_ok(&["contact", "add", &alice.uri()]);

    let a = alice.json(&["verify", "Bob", "--json"]);
    let b = bob.json(&["verify", "Alice", "--json"]);
    assert_eq!(a["safety_number"], b["safety_number"]);
    let digits = a["safety_number"].as_str().unwrap();
    assert_eq!(digits.len(), 60);
    assert!(digits.bytes().all(|c| c.is_ascii_digit()));
    let human = stdout(&alice.run_ok(&["verify", "Bob"]));
    let groups: Vec<String> = digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    assert!(human.contains(&groups[..4].join(" ")), "{human}");
    assert!(human.contains("NOT verified"));

    // Bob shows his code; Alice scans a picture of it.
    let bob_code = bob.tmp("bob-sn.png");
    bob.run_ok(&[
        "verify",
        "Alice",
        "--no-qr",
        "--qr-png",
        bob_code.to_str().unwrap(),
    ]);
    assert_eq!(
        quircs_decode_png(&bob_code),
        [b["qr_text"].as_str().unwrap()]
    );
    // Alice's own code does not verify Bob.
    let alice_code = alice.tmp("alice-sn.png");
    alice.run_ok(&[
        "verify",
        "Bob",
        "--no-qr",
        "--qr-png",
        alice_code.to_str().unwrap(),
    ]);
    assert!(alice
        .run_err(&["verify", "Bob", "--scan", alice_code.to_str().unwrap()])
        .contains("your own"));
    let ok = alice.json(&[
        "verify",
        "Bob",
        "--scan",
        bob_code.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(ok["match"], true);
    assert_eq!(
        alice.json(&["contact", "list", "--json"])[0]["verified"],
        true
    );
    assert!(stdout(&alice.run_ok(&["contact", "list"])).contains("yes"));

    // Bob types the digits Alice reads out.
    let spaced = groups.join(" ");
    bob.run_ok(&["verify", "Alice", "--digits", &spaced]);
    assert_eq!(
        bob.json(&["contact", "list", "--json"])[0]["verified"],
        true
    );
    // Digits typed wrong later: loud, and true about what stays (the key verified is the one
    // Bob still holds).
    let first = if spaced.starts_with('1') { "2" } else { "1" };
    let wrong = format!("{first}{}", &spaced[1..]);
    let out = bob.run(&["verify", "Alice", "--digits", &wrong]);
    assert_mismatch(&out, "Alice stays marked verified");
    assert!(first_contact_verified(&bob));
}

/// `out` is a safety-number mismatch (exit code 3) whose message says `says`.
fn assert_mismatch(out: &std::process::Output, says: &str) {
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(out).contains(says), "{}", stderr(out));
}

/// Whether `node`'s first contact is marked verified.
fn first_contact_verified(node: &Node) -> bool {
    node.json(&["contact", "list", "--json"])[0]["verified"] == true
}

#[test]
fn a_mismatch_is_loud_and_does_not_verify() {
    let alice = Node::init("Alice");
    let bob = Node::init("Bob");
    let mallory = Node::init("Bob");
    // Alice was handed Mallory's URI under Bob's name; Bob holds Alice's real key.
    alice.run_ok(&["contact", "add", &mallory.uri()]);
    bob.run_ok(&["contact", "add", &alice.uri()]);
    let code = bob.tmp("bob-sn.png");
    bob.run_ok(&[
        "verify",
        "Alice",
        "--no-qr",
        "--qr-png",
        code.to_str().unwrap(),
    ]);
    let out = alice.run(&["verify", "Bob", "--scan", code.to_str().unwrap()]);
    assert_mismatch(&out, "SAFETY NUMBERS DO NOT MATCH");
    assert!(!first_contact_verified(&alice));

    let bob_digits = bob.json(&["verify", "Alice", "--json"])["safety_number"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = alice.run(&["verify", "Bob", "--digits", &bob_digits]);
    assert_eq!(out.status.code(), Some(3));
    assert!(alice
        .run_err(&["verify", "Bob", "--digits", "12345"])
        .contains("60 digits"));
    assert!(alice.run_err(&["verify", "Nobody"]).contains("no contact"));
    assert!(alice
        .run_err(&["verify", "Bob", "--scan", "/nonexistent.png"])
        .contains("nonexistent"));
}

#[test]
fn change_passphrase_re_encrypts_atomically() {
    let node = Node::init("Alpha");
    let id = node.json(&["id", "--json"])["node_id"].clone();
    node.run_ok(&["contact", "add", &Node::init("Bob").uri()]);
    let new_pass = "copper violin glacier harbor";
    let out = node
        .cmd(&["change-passphrase"])
        .env("DP2PTCS_NEW_PASSPHRASE", "weak")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("too weak"));
    let out = node
        .cmd(&["change-passphrase"])
        .env("DP2PTCS_NEW_PASSPHRASE", new_pass)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&node.key_file()), 0o600);
    // The cheap test parameters were kept.
    let key: Value = serde_json::from_slice(&fs::read(node.key_file()).unwrap()).unwrap();
    assert_eq!(key["kdf"]["m_cost"], 64);
    assert!(node.run_err(&["id"]).contains("wrong passphrase"));
    let out = node
        .cmd(&["id", "--json"])
        .env("DP2PTCS_PASSPHRASE", new_pass)
        .output()
        .unwrap();
    let back: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back["node_id"], id);
    // The address book (sealed with the database key) still opens.
    let out = node
        .cmd(&["contact", "list", "--json"])
        .env("DP2PTCS_PASSPHRASE", new_pass)
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "Bob");
    let leftovers: Vec<_> = fs::read_dir(&node.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn nothing_readable_at_rest() {
    // Names long enough that ciphertext does not hold them by chance.
    let alice = Node::init("Alice of Alpha");
    let bob = Node::init("Bravo Six");
    alice.run_ok(&["contact", "add", &bob.uri()]);
    let alice_id = alice.json(&["id", "--json"]);
    let bob_id = bob.json(&["id", "--json"]);
    let secrets = [
        "Bravo Six".to_owned(),
        "Alice of Alpha".to_owned(),
        alice_id["node_id"].as_str().unwrap().to_owned(),
        alice_id["public_key"].as_str().unwrap().to_owned(),
        bob_id["node_id"].as_str().unwrap().to_owned(),
        bob_id["public_key"].as_str().unwrap().to_owned(),
    ];
    for entry in fs::read_dir(&alice.dir).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for s in &secrets {
            assert!(!text.contains(&s.to_lowercase()), "{s} readable at rest");
            let raw = hex::decode(s).unwrap_or_default();
            if !raw.is_empty() {
                assert!(
                    !bytes.windows(raw.len()).any(|w| w == raw),
                    "{s} (raw bytes) readable at rest"
                );
            }
        }
    }
}

#[test]
fn arbitrary_arguments_never_panic() {
    let node = Node::init("Alpha");
    let junk = [
        "",
        "-",
        "--",
        "\u{7f}",
        "é",
        "%",
        "dp2ptcs://contact?",
        "--json",
        "--qr-png",
        "/",
        "--kdf-memory",
        "0",
        "99999999999",
        "--digits",
        "--scan",
        "-x",
        "🙂",
    ];
    let commands: [&[&str]; 7] = [
        &["init"],
        &["id"],
        &["contact", "add"],
        &["contact", "remove"],
        &["contact", "show"],
        &["verify"],
        &["change-passphrase"],
    ];
    for (i, cmd) in commands.iter().enumerate() {
        for (j, a) in junk.iter().enumerate() {
            let b = junk[(i * 7 + j * 3) % junk.len()];
            let args: Vec<&str> = cmd.iter().copied().chain([*a, b]).collect();
            // A new passphrase in the environment (too weak to be accepted) so that
            // `change-passphrase` never waits at a prompt.
            let out = node
                .cmd(&args)
                .env("DP2PTCS_NEW_PASSPHRASE", "weak")
                .output()
                .unwrap();
            assert_no_panic(&out);
            if !out.status.success() {
                assert!(!stderr(&out).is_empty(), "{args:?} failed silently");
            }
        }
    }
    // The identity survived all of it.
    node.run_ok(&["id", "--json"]);
}

/// A data directory written by the first release (node.key + contacts.sealed), and the contacts
/// it holds as `contact list --json` shows them.
fn first_version_data_dir() -> (Node, Value) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1-sealed");
    let expected: Value =
        serde_json::from_str(&fs::read_to_string(fixture.with_extension("expected.json")).unwrap())
            .unwrap();
    let node = Node::new();
    fs::create_dir(&node.dir).unwrap();
    fs::set_permissions(&node.dir, fs::Permissions::from_mode(0o700)).unwrap();
    for file in ["node.key", "contacts.sealed"] {
        fs::copy(fixture.join(file), node.dir.join(file)).unwrap();
        fs::set_permissions(node.dir.join(file), fs::Permissions::from_mode(0o600)).unwrap();
    }
    (node, expected)
}

#[test]
fn an_address_book_from_the_first_version_is_migrated_into_the_database() {
    let (node, expected) = first_version_data_dir();
    assert_eq!(node.json(&["contact", "list", "--json"]), expected);
    assert!(
        !node.dir.join("contacts.sealed").exists(),
        "the old file is removed once imported"
    );
    assert!(node.dir.join("node.db").exists());
    // Verification state and names survived; later commands read the database.
    assert_eq!(node.json(&["contact", "list", "--json"]), expected);
    assert_eq!(
        node.json(&["contact", "show", "Charlie 3", "--json"])["addresses"][0],
        "192.0.2.5:4433"
    );
    assert!(stdout(&node.run_ok(&["id"])).contains("Name         Alpha"));
}

#[test]
fn adding_a_contact_first_after_the_upgrade_keeps_the_old_address_book() {
    let (node, expected) = first_version_data_dir();
    // The first command after the upgrade adds a contact.
    let delta = Node::init("Delta");
    node.run_ok(&["contact", "add", &delta.uri()]);
    assert!(!node.dir.join("contacts.sealed").exists());
    let mut listed = node.json(&["contact", "list", "--json"]);
    let added = listed.as_array_mut().unwrap().pop().unwrap();
    assert_eq!(added["name"], "Delta");
    assert_eq!(listed, expected, "the old contacts, verification included");
}

#[test]
fn a_bad_time_to_live_is_a_usage_error_that_says_how_to_write_one() {
    for ttl in ["0s", "banana", "5 parsecs"] {
        let out = bin()
            .args(["send", "Bravo", "hi", "--ttl", ttl])
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "--ttl {ttl}");
        let err = stderr(&out);
        assert!(err.contains("--ttl"), "{err}");
    }
}

#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    let node = Node::init("Alpha");
    // The reader is gone before the command writes (as in `dp2ptcs id | true`).
    for args in [&["id"][..], &["id", "--json"][..], &["contact", "list"][..]] {
        let mut child = node
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_no_panic(&out);
        assert!(
            out.status.success(),
            "{args:?}: {:?}: {}",
            out.status,
            stderr(&out)
        );
    }
}
