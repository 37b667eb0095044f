//! The command-line interface, declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// DP2PTCS: decentralized, end-to-end encrypted messaging for tactical teams.
///
/// Start with `dp2ptcs init`, run the node with `dp2ptcs run`, show your identity with
/// `dp2ptcs id`, add people with `dp2ptcs contact add`, compare safety numbers with
/// `dp2ptcs verify`, then `dp2ptcs send` and `dp2ptcs inbox`.
#[derive(Debug, Parser)]
#[command(name = "dp2ptcs", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Data directory [default: $DP2PTCS_HOME, else the platform data directory, e.g.
    /// ~/.local/share/dp2ptcs]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Read the passphrase from FILE (one trailing newline is ignored). Otherwise
    /// $DP2PTCS_PASSPHRASE, otherwise an interactive prompt.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a new identity (Ed25519 key pair) in the data directory.
    Init(InitArgs),
    /// Show your node id, public key and contact URI, as text and as a QR code.
    Id(IdArgs),
    /// Add, list, show and remove contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Show the safety number shared with a contact, or check theirs and mark them verified.
    Verify(VerifyArgs),
    /// Re-encrypt the key file under a new passphrase.
    ChangePassphrase(ChangePassphraseArgs),
    /// Run the node in the foreground until SIGINT (Ctrl-C) or SIGTERM.
    Run(RunArgs),
    /// Send a message to a contact through the running node; prints the message id.
    Send(SendArgs),
    /// Show received messages (from the running node); --follow keeps printing new ones.
    Inbox(InboxArgs),
    /// Show the messages you sent that wait for a receipt, with their ids.
    Outbox(OutboxArgs),
    /// Cancel messages waiting in the outbox: the node stops sending them.
    Cancel(CancelArgs),
    /// Show the running node's addresses, connected peers and message counts.
    Status(JsonArg),
    /// Show the running node's DHT routing table.
    Peers(JsonArg),
    /// Find a node by its id through the DHT, and show the path the lookup took.
    Lookup(LookupArgs),
}

/// `lookup`.
#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// The node to find: a contact (its name, or at least 8 hex digits of its node id), or any
    /// node id (64 hex digits).
    #[arg(value_name = "NODE")]
    pub(crate) node: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line, for machines.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// UDP address to listen on [default: 0.0.0.0:7446]
    #[arg(long, env = "DP2PTCS_LISTEN", value_name = "IP:PORT")]
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// Address to put in your contact URI (repeatable) [default: the listening address, or
    /// every interface's address when listening on 0.0.0.0]
    #[arg(
        long,
        env = "DP2PTCS_ADVERTISE",
        value_name = "IP:PORT",
        value_delimiter = ','
    )]
    pub(crate) advertise: Vec<std::net::SocketAddr>,
    /// A node to join the network through (repeatable); used by peer discovery.
    #[arg(
        long,
        env = "DP2PTCS_BOOTSTRAP",
        value_name = "IP:PORT",
        value_delimiter = ','
    )]
    pub(crate) bootstrap: Vec<std::net::SocketAddr>,
    /// Configuration file [default: config.toml in the data directory, if present]
    #[arg(long, env = "DP2PTCS_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "DP2PTCS_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `warn,dp2ptcs_node=debug` [default: our crates at info]
    #[arg(long, env = "DP2PTCS_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The contact's name, or at least 8 hex digits of its node id.
    #[arg(value_name = "CONTACT")]
    pub(crate) contact: String,
    /// The message text; `-` reads it from standard input.
    #[arg(value_name = "TEXT")]
    pub(crate) text: String,
    /// Wait for the end-to-end receipt (exit code 4 if it does not come in time; the message
    /// stays queued and is retried).
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits, in seconds (1 to 600).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        requires = "wait",
        value_parser = clap::value_parser!(u64).range(1..=600)
    )]
    pub(crate) timeout: u64,
    /// Give up on the message if no receipt came back within this time, e.g. `90s`, `2h`,
    /// `3days` (default 7 days, at most 30 days). It then shows as `expired`.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub(crate) ttl: Option<std::time::Duration>,
    /// Print {"id", "to", "state"} as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InboxArgs {
    /// Only messages with this contact.
    #[arg(long, value_name = "CONTACT")]
    pub(crate) contact: Option<String>,
    /// Show this many of the latest messages.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) limit: u32,
    /// Include the messages you sent (with their delivery state).
    #[arg(long)]
    pub(crate) all: bool,
    /// Keep running and print new messages as they arrive, through restarts of the node, until
    /// Ctrl-C.
    #[arg(long)]
    pub(crate) follow: bool,
    /// One JSON object per message per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct OutboxArgs {
    /// Only messages to this contact (its name, or at least 8 hex digits of its node id).
    #[arg(long, value_name = "CONTACT")]
    pub(crate) contact: Option<String>,
    /// One JSON object per message per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "to"])))]
pub(crate) struct CancelArgs {
    /// The ids of the messages to cancel (32 hex digits, as `dp2ptcs send` and `dp2ptcs outbox`
    /// print them).
    #[arg(value_name = "ID")]
    pub(crate) ids: Vec<String>,
    /// Cancel every message waiting for this recipient instead: a contact's name, or at least 8
    /// hex digits of a node id (also of someone you removed from your contacts).
    #[arg(long, value_name = "CONTACT", conflicts_with = "ids")]
    pub(crate) to: Option<String>,
    /// Print JSON (one object per message cancelled, or one for --to).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Argon2id cost options (advanced).
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct KdfArgs {
    /// Argon2id memory in KiB [default: 65536 = 64 MiB, RFC 9106's second recommendation]
    #[arg(long, value_name = "KIB", help_heading = "Key derivation (advanced)")]
    pub(crate) kdf_memory: Option<u32>,
    /// Argon2id passes over memory [default: 3]
    #[arg(long, value_name = "N", help_heading = "Key derivation (advanced)")]
    pub(crate) kdf_iterations: Option<u32>,
    /// Argon2id lanes [default: 4]
    #[arg(long, value_name = "N", help_heading = "Key derivation (advanced)")]
    pub(crate) kdf_parallelism: Option<u32>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Replace an existing identity (the old key file and address book are kept as backups).
    #[arg(long)]
    pub(crate) force: bool,
    /// Accept a passphrase that the strength estimate finds weak.
    #[arg(long)]
    pub(crate) allow_weak_passphrase: bool,
    /// The display name put in your contact URI.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) kdf: KdfArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// Also write the contact URI's QR code as a PNG image to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) qr_png: Option<PathBuf>,
    /// Do not draw the QR code in the terminal.
    #[arg(long)]
    pub(crate) no_qr: bool,
    /// Put this display name in the URI instead of the one chosen at init.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Put this address hint (IP:port) in the URI; repeatable.
    #[arg(long = "address", value_name = "IP:PORT")]
    pub(crate) addresses: Vec<std::net::SocketAddr>,
    /// Print {"node_id", "public_key", "contact_uri"} as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContactCommand {
    /// Add a contact from their contact URI or a photo/screenshot of their QR code.
    Add(ContactAddArgs),
    /// List contacts and whether each is verified.
    List(JsonArg),
    /// Show one contact.
    Show(ContactRefArgs),
    /// Remove a contact.
    Remove(ContactRefArgs),
}

#[derive(Debug, Args)]
pub(crate) struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ContactAddArgs {
    /// The contact URI (dp2ptcs://contact?...).
    #[arg(
        value_name = "URI",
        required_unless_present = "qr_image",
        conflicts_with = "qr_image"
    )]
    pub(crate) uri: Option<String>,
    /// A PNG or JPEG image (photo or screenshot) of their QR code.
    #[arg(long, value_name = "FILE")]
    pub(crate) qr_image: Option<PathBuf>,
    /// The name to file them under [default: the name in their URI].
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ContactRefArgs {
    /// The contact's name, or at least 8 hex digits of its node id.
    #[arg(value_name = "CONTACT")]
    pub(crate) contact: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The contact's name, or at least 8 hex digits of its node id.
    #[arg(value_name = "CONTACT")]
    pub(crate) contact: String,
    /// An image of the safety-number QR code shown on the contact's device; on a match the
    /// contact is marked verified.
    #[arg(long, value_name = "FILE", conflicts_with = "digits")]
    pub(crate) scan: Option<PathBuf>,
    /// The 60 digits the contact reads out (spaces allowed); on a match the contact is marked
    /// verified.
    #[arg(long, value_name = "DIGITS")]
    pub(crate) digits: Option<String>,
    /// Also write the safety-number QR code as a PNG image to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) qr_png: Option<PathBuf>,
    /// Do not draw the QR code in the terminal.
    #[arg(long)]
    pub(crate) no_qr: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ChangePassphraseArgs {
    /// Read the new passphrase from FILE. Otherwise $DP2PTCS_NEW_PASSPHRASE, otherwise a prompt.
    #[arg(long, value_name = "FILE")]
    pub(crate) new_passphrase_file: Option<PathBuf>,
    /// Accept a new passphrase that the strength estimate finds weak.
    #[arg(long)]
    pub(crate) allow_weak_passphrase: bool,
    #[command(flatten)]
    pub(crate) kdf: KdfArgs,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A time to live: a human duration (`90s`, `2h`, `3days`) above zero.
fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write it like 90s, 15min, 2h or 3days)"))?;
    if d.is_zero() {
        return Err("the time to live must be above zero".into());
    }
    // The longest any node takes; the node's own `max_message_ttl_ms` may be shorter.
    let longest = std::time::Duration::from_millis(dp2ptcs_dht::MAX_MAILBOX_TTL_MS);
    if d > longest {
        return Err("the time to live is at most 30 days".into());
    }
    Ok(d)
}
