//! The daemon's configuration: `config.toml` < environment (`DP2PTCS_*`) < flags.
//!
//! clap reads each flag's environment variable itself (a flag given on the command line wins),
//! so this module merges two layers: the file, then whatever clap found.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dp2ptcs_node::NodeConfig;
use dp2ptcs_types::limits::MAX_ADDRESS_HINTS;
use serde::Deserialize;

use crate::cli::{LogFormat, RunArgs};
use crate::fsutil::read_limited;

/// The configuration file's name in the data directory.
pub(crate) const CONFIG_FILE: &str = "config.toml";
/// The UDP port the node listens on unless told otherwise.
pub(crate) const DEFAULT_PORT: u16 = 7446;
/// Largest configuration file read.
const MAX_CONFIG_LEN: u64 = 64 * 1024;
/// Most bootstrap addresses.
const MAX_BOOTSTRAP: usize = 64;

/// `config.toml`. Every key is optional; unknown keys are an error (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) advertise: Option<Vec<SocketAddr>>,
    pub(crate) bootstrap: Option<Vec<SocketAddr>>,
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) log: Option<String>,
    /// Speak messaging protocol version 2 with peers that do (`NodeConfig::pipelining`).
    pub(crate) pipelining: Option<bool>,
    #[serde(default)]
    pub(crate) limits: Limits,
    #[serde(default)]
    pub(crate) mailbox: MailboxSettings,
}

/// `[mailbox]`: what this node holds for others (defaults in `MailboxLimits`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MailboxSettings {
    pub(crate) per_sender_items: Option<usize>,
    pub(crate) per_sender_bytes: Option<usize>,
    pub(crate) per_mailbox_items: Option<usize>,
    pub(crate) per_mailbox_bytes: Option<usize>,
    pub(crate) total_bytes: Option<usize>,
    pub(crate) max_ttl_ms: Option<u64>,
}

/// `[limits]`: bounds and timings of the node (defaults in `NodeConfig`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) max_streams_per_connection: Option<u32>,
    pub(crate) peer_rate_per_sec: Option<u32>,
    pub(crate) peer_burst: Option<u32>,
    pub(crate) retry_initial_ms: Option<u64>,
    pub(crate) retry_max_ms: Option<u64>,
    pub(crate) outbox_poll_ms: Option<u64>,
    pub(crate) message_ttl_ms: Option<u64>,
    pub(crate) max_message_ttl_ms: Option<u64>,
    pub(crate) mailbox_poll_ms: Option<u64>,
    pub(crate) mailbox_redeposit_ms: Option<u64>,
    pub(crate) dial_attempts: Option<u32>,
    pub(crate) handshake_timeout_ms: Option<u64>,
    pub(crate) dht_timeout_ms: Option<u64>,
}

/// The merged configuration of `dp2ptcs run`.
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    pub(crate) node: NodeConfig,
    /// Addresses put in our contact URI (empty: derived from the bound address).
    pub(crate) advertise: Vec<SocketAddr>,
    /// Nodes to join the network through (used by peer discovery).
    pub(crate) bootstrap: Vec<SocketAddr>,
    pub(crate) log_format: LogFormat,
    pub(crate) log: String,
    /// The file read, if any.
    pub(crate) file: Option<PathBuf>,
}

/// The default log filter: our crates at `info`, everything else at `warn`.
pub(crate) const DEFAULT_LOG: &str = "warn,dp2ptcs=info,dp2ptcs_node=info";

/// Reads `path`. A missing file is an error only when `required` (it was named explicitly).
pub(crate) fn read_file(path: &Path, required: bool) -> Result<Option<FileConfig>> {
    if !required && !path.exists() {
        return Ok(None);
    }
    let bytes = read_limited(path, MAX_CONFIG_LEN)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("the configuration {} is not UTF-8", path.display()))?;
    let config: FileConfig = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the configuration {} is invalid: {e}", path.display()))?;
    Ok(Some(config))
}

/// Merges the file (if any) under the flags and environment.
pub(crate) fn merge(
    file: Option<FileConfig>,
    path: Option<PathBuf>,
    args: &RunArgs,
) -> Result<RunConfig> {
    let file = file.unwrap_or_default();
    let mut node = NodeConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        ..NodeConfig::default()
    };
    if let Some(listen) = args.listen.or(file.listen) {
        node.listen = listen;
    }
    if let Some(pipelining) = file.pipelining {
        node.pipelining = pipelining;
    }
    let l = &file.limits;
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = l.$field {
                node.$field = v;
            }
        };
    }
    set!(max_connections);
    set!(max_connections_per_ip);
    set!(max_streams_per_connection);
    set!(peer_rate_per_sec);
    set!(peer_burst);
    for (name, value) in [
        (
            "max_streams_per_connection",
            u64::from(node.max_streams_per_connection),
        ),
        ("peer_rate_per_sec", u64::from(node.peer_rate_per_sec)),
        ("peer_burst", u64::from(node.peer_burst)),
    ] {
        if value == 0 {
            bail!("[limits] {name} must be at least 1");
        }
    }
    // A duration in milliseconds of at least `min`: refused below, not raised in silence.
    let millis = |name: &str, ms: Option<u64>, min: u64| -> Result<Option<Duration>> {
        match ms {
            Some(ms) if ms < min => bail!("[limits] {name} must be at least {min}"),
            Some(ms) => Ok(Some(Duration::from_millis(ms))),
            None => Ok(None),
        }
    };
    if let Some(d) = millis("retry_initial_ms", l.retry_initial_ms, 1)? {
        node.retry_initial = d;
    }
    if let Some(d) = millis("retry_max_ms", l.retry_max_ms, 1)? {
        node.retry_max = d;
    }
    if let Some(d) = millis("outbox_poll_ms", l.outbox_poll_ms, 10)? {
        node.outbox_poll = d;
    }
    if let Some(d) = millis("mailbox_poll_ms", l.mailbox_poll_ms, 100)? {
        node.mailbox_poll = d;
    }
    if let Some(d) = millis("mailbox_redeposit_ms", l.mailbox_redeposit_ms, 1000)? {
        node.mailbox_redeposit = d;
    }
    if let Some(n) = l.dial_attempts {
        if n == 0 || n > 20 {
            bail!("[limits] dial_attempts must be between 1 and 20");
        }
        node.dial_attempts = n;
    }
    if let Some(ms) = l.handshake_timeout_ms {
        if !(100..=300_000).contains(&ms) {
            bail!("[limits] handshake_timeout_ms must be between 100 and 300000 (5 minutes)");
        }
        node.handshake_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = l.dht_timeout_ms {
        // Not below the 500 ms a DHT dial is given anyway.
        if !(500..=60_000).contains(&ms) {
            bail!("[limits] dht_timeout_ms must be between 500 and 60000 (1 minute)");
        }
        node.dht.request_timeout_ms = ms;
    }
    if let Some(ms) = l.max_message_ttl_ms {
        if ms == 0 || ms > dp2ptcs_dht::MAX_MAILBOX_TTL_MS {
            bail!(
                "[limits] max_message_ttl_ms must be between 1 and {} (30 days)",
                dp2ptcs_dht::MAX_MAILBOX_TTL_MS
            );
        }
        node.max_message_ttl = Duration::from_millis(ms);
    }
    if let Some(ms) = l.message_ttl_ms {
        node.message_ttl = Duration::from_millis(ms);
    }
    if node.message_ttl.is_zero() || node.message_ttl > node.max_message_ttl {
        bail!("[limits] message_ttl_ms must be above 0 and at most max_message_ttl_ms");
    }
    let m = &file.mailbox;
    let holder = &mut node.dht.mailbox;
    macro_rules! set_mailbox {
        ($field:ident) => {
            if let Some(v) = m.$field {
                holder.$field = v;
            }
        };
    }
    set_mailbox!(per_sender_items);
    set_mailbox!(per_sender_bytes);
    set_mailbox!(per_mailbox_items);
    set_mailbox!(per_mailbox_bytes);
    set_mailbox!(total_bytes);
    if let Some(ms) = m.max_ttl_ms {
        holder.max_ttl_ms = ms.min(dp2ptcs_dht::MAX_MAILBOX_TTL_MS);
    }
    if node.max_connections == 0 || node.max_connections_per_ip == 0 {
        bail!("[limits] max_connections and max_connections_per_ip must be at least 1");
    }
    let advertise = if args.advertise.is_empty() {
        file.advertise.unwrap_or_default()
    } else {
        args.advertise.clone()
    };
    if advertise.len() > MAX_ADDRESS_HINTS {
        bail!("at most {MAX_ADDRESS_HINTS} advertised addresses");
    }
    if let Some(bad) = advertise
        .iter()
        .find(|a| a.ip().is_unspecified() || a.port() == 0)
    {
        bail!("cannot advertise {bad}: give an address others can reach, with its port");
    }
    let bootstrap = if args.bootstrap.is_empty() {
        file.bootstrap.unwrap_or_default()
    } else {
        args.bootstrap.clone()
    };
    if bootstrap.len() > MAX_BOOTSTRAP {
        bail!("at most {MAX_BOOTSTRAP} bootstrap addresses");
    }
    let log = args
        .log
        .clone()
        .or(file.log)
        .unwrap_or_else(|| DEFAULT_LOG.to_owned());
    node.bootstrap = bootstrap.clone();
    node.advertise = advertise.clone();
    // What the node itself would refuse at its start, said before the keystore is unlocked.
    node.check().context("the configuration")?;
    Ok(RunConfig {
        node,
        advertise,
        bootstrap,
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Human),
        log,
        file: path,
    })
}

/// The addresses to put in our contact URI when none are configured: the bound address if it
/// is a specific one, else the address of every non-loopback interface (loopback if there is
/// no other), all with the bound port.
pub(crate) fn derive_advertised(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let want_v4 = bound.is_ipv4();
    let mut found: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == want_v4 || !want_v4)
        .filter(|ip| !ip.is_unspecified() && !is_link_local(ip))
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect();
    let (loopback, mut others): (Vec<_>, Vec<_>) =
        found.drain(..).partition(|a| a.ip().is_loopback());
    if others.is_empty() {
        others = loopback;
    }
    others.sort();
    others.dedup();
    others.truncate(MAX_ADDRESS_HINTS);
    others
}

/// Whether `addr` is this node's own, bound to `bound`: that address, or, bound to every
/// interface, an address of this machine on its port.
pub(crate) fn is_own_address(addr: SocketAddr, bound: SocketAddr) -> bool {
    if addr.port() != bound.port() {
        return false;
    }
    if addr.ip() == bound.ip() {
        return true;
    }
    bound.ip().is_unspecified()
        && (addr.ip().is_loopback()
            || if_addrs::get_if_addrs()
                .unwrap_or_default()
                .iter()
                .any(|i| i.ip() == addr.ip()))
}

fn is_link_local(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_nodes_own_address_is_recognised_on_its_port_only() {
        use super::is_own_address;
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(is_own_address(a("127.0.0.5:7000"), a("127.0.0.5:7000")));
        assert!(!is_own_address(a("127.0.0.6:7000"), a("127.0.0.5:7000")));
        assert!(!is_own_address(a("127.0.0.5:7001"), a("127.0.0.5:7000")));
        assert!(is_own_address(a("127.0.0.1:7000"), a("0.0.0.0:7000")));
        assert!(!is_own_address(a("127.0.0.1:7001"), a("0.0.0.0:7000")));
        // Not an address of this machine (TEST-NET-1).
        assert!(!is_own_address(a("192.0.2.1:7000"), a("0.0.0.0:7000")));
    }

    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["dp2ptcs", "run"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Run(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            bootstrap = ["10.0.0.1:7446"]
            log_format = "json"
            [limits]
            retry_max_ms = 5000
            dial_attempts = 2
            handshake_timeout_ms = 30000
            dht_timeout_ms = 8000
            mailbox_redeposit_ms = 600000
            "#,
        )
        .unwrap();
        let c = merge(Some(file), None, &args(&[])).unwrap();
        assert_eq!(c.node.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.bootstrap, vec!["10.0.0.1:7446".parse().unwrap()]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.node.retry_max, Duration::from_secs(5));
        assert_eq!(c.node.dial_attempts, 2);
        assert_eq!(c.node.handshake_timeout, Duration::from_secs(30));
        assert_eq!(c.node.dht.request_timeout_ms, 8000);
        assert_eq!(c.node.mailbox_redeposit, Duration::from_secs(600));
        assert_eq!(c.log, DEFAULT_LOG);
        assert!(
            c.node.pipelining,
            "messaging version 2 unless the file says otherwise"
        );

        let file: FileConfig = toml::from_str("pipelining = false").unwrap();
        assert!(!merge(Some(file), None, &args(&[])).unwrap().node.pipelining);

        let file: FileConfig = toml::from_str(r#"listen = "127.0.0.1:9000""#).unwrap();
        let c = merge(
            Some(file),
            None,
            &args(&["--listen", "127.0.0.1:9001", "--log-format", "human"]),
        )
        .unwrap();
        assert_eq!(c.node.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(c.log_format, LogFormat::Human);

        let c = merge(None, None, &args(&[])).unwrap();
        assert_eq!(c.node.listen.port(), DEFAULT_PORT);
    }

    /// The error merging a file whose `[limits]` table is `line` gives.
    fn limits_error(line: &str) -> String {
        let file: FileConfig = toml::from_str(&format!("[limits]\n{line}")).unwrap();
        merge(Some(file), None, &args(&[])).unwrap_err().to_string()
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(toml::from_str::<FileConfig>("lisen = \"127.0.0.1:1\"").is_err());
        assert!(toml::from_str::<FileConfig>("listen = \"localhost\"").is_err());
        assert!(toml::from_str::<FileConfig>("[limits]\nmax_conections = 3").is_err());
        assert!(toml::from_str::<FileConfig>("log_format = \"xml\"").is_err());
        assert!(toml::from_str::<FileConfig>("pipelining = \"no\"").is_err());
        let file: FileConfig = toml::from_str("advertise = [\"0.0.0.0:7446\"]").unwrap();
        assert!(merge(Some(file), None, &args(&[])).is_err());
        for bad in [
            "dial_attempts = 0",
            "handshake_timeout_ms = 5",
            "handshake_timeout_ms = 99999999",
            "dht_timeout_ms = 499",
            "dht_timeout_ms = 60001",
        ] {
            let e = limits_error(bad);
            assert!(e.contains("must be between"), "{bad}: {e}");
        }
        // Below its least value, a setting is refused with its name, not raised in silence.
        for bad in [
            "mailbox_redeposit_ms = 999",
            "mailbox_poll_ms = 0",
            "outbox_poll_ms = 9",
            "retry_initial_ms = 0",
            "retry_max_ms = 0",
            "peer_rate_per_sec = 0",
            "peer_burst = 0",
            "max_streams_per_connection = 0",
        ] {
            let e = limits_error(bad);
            let name = bad.split(' ').next().unwrap();
            assert!(
                e.contains(&format!("[limits] {name} must be at least")),
                "{bad}: {e}"
            );
        }
        // A retry_initial_ms above retry_max_ms is capped by it, as before.
        let file: FileConfig = toml::from_str("[limits]\nretry_max_ms = 500").unwrap();
        assert!(merge(Some(file), None, &args(&[])).is_ok());
    }

    #[test]
    fn a_specific_bound_address_is_advertised_as_is() {
        let a: SocketAddr = "127.0.0.1:7446".parse().unwrap();
        assert_eq!(derive_advertised(a), vec![a]);
        let any: SocketAddr = "0.0.0.0:7446".parse().unwrap();
        let derived = derive_advertised(any);
        assert!(!derived.is_empty());
        assert!(derived
            .iter()
            .all(|d| d.port() == 7446 && !d.ip().is_unspecified()));
    }
}
