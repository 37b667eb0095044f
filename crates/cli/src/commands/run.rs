//! `dp2ptcs run`: the node daemon in the foreground.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dp2ptcs_node::api::{self, ApiInfo};
use dp2ptcs_node::Node;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::cli::{Global, LogFormat, RunArgs};
use crate::config::{self, RunConfig, CONFIG_FILE};
use crate::contacts::{open_store, Book};
use crate::datadir::{self, unlock};
use crate::fsutil::{open_lock_file, DirLock};

/// The lock file held while a node runs on a data directory; it contains the node's pid.
pub(crate) const DAEMON_LOCK_FILE: &str = "node.pid";
/// Time in-flight work gets to finish at shutdown.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How long [`DaemonLock::acquire`] tries a lock that is taken.
const ACQUIRE_PATIENCE: Duration = Duration::from_secs(3);

/// Set once this process holds the [`DaemonLock`].
static HOLDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Held while the node runs: at most one node per data directory.
#[derive(Debug)]
pub(crate) struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Takes the lock of `dir`, or fails at once if a node runs there. A command opening the
    /// database holds the lock shared for that long (see [`DaemonLock::hold_shared`]), so a
    /// lock only commands hold is tried again for [`ACQUIRE_PATIENCE`] before giving up.
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(DAEMON_LOCK_FILE);
        let mut file = open_lock_file(&path)?;
        // Held exclusively (no shared hold can be had): a node runs, and waiting is no use.
        let locked = file.try_lock().is_ok()
            || (!Self::is_held(dir) && lock_within(&file, ACQUIRE_PATIENCE));
        if !locked {
            if file.try_lock_shared().is_ok() {
                // Only commands hold it: no node runs, one command is slow.
                bail!(
                    "another dp2ptcs command is opening the database in {}; try again when it \
                     has finished",
                    dir.display()
                );
            }
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "a node is already running on {} (pid {}); stop it first",
                dir.display(),
                pid.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        HOLDING.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(Self { _file: file })
    }

    /// Holds the lock of `dir` shared, so that no node starts there while it is held; `None`
    /// if a node runs there now, or if the lock file cannot be opened (then [`Self::is_held`]
    /// says whether a node runs). A command holds it while it opens (and may migrate) the
    /// database.
    pub(crate) fn hold_shared(dir: &Path) -> Option<File> {
        let file = open_lock_file(&dir.join(DAEMON_LOCK_FILE)).ok()?;
        file.try_lock_shared().is_ok().then_some(file)
    }

    /// Whether this process is the node running on its data directory.
    pub(crate) fn held_here() -> bool {
        HOLDING.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a node is running on `dir` now.
    pub(crate) fn is_held(dir: &Path) -> bool {
        let Ok(file) = File::open(dir.join(DAEMON_LOCK_FILE)) else {
            return false;
        };
        file.try_lock_shared().is_err()
    }
}

/// Locks `file` exclusively, trying again for up to `patience` while it is taken.
fn lock_within(file: &File, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if file.try_lock().is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The merged configuration for `dir`.
pub(crate) fn load_config(dir: &Path, args: &RunArgs) -> Result<RunConfig> {
    let (file, path) = match &args.config {
        Some(p) => (config::read_file(p, true)?, Some(p.clone())),
        None => {
            let p = dir.join(CONFIG_FILE);
            let file = config::read_file(&p, false)?;
            let path = file.is_some().then_some(p);
            (file, path)
        }
    };
    config::merge(file, path, args)
}

fn init_logging(format: LogFormat, filter: &str) -> Result<()> {
    let filter =
        EnvFilter::try_new(filter).map_err(|e| anyhow!("invalid log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A log line that cannot be written (its reader went away) is dropped: the default
        // reports it with `eprintln!`, which panics on that same closed pipe.
        .log_internal_errors(false);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow!("cannot start logging: {e}"))
}

pub(super) fn run(global: &Global, args: &RunArgs) -> Result<()> {
    let dir = datadir::resolve(global)?;
    let config = load_config(&dir, args)?;
    init_logging(config.log_format, &config.log)?;
    let unlocked = unlock(global)?;
    let _daemon = DaemonLock::acquire(&unlocked.dir)?;
    let key = unlocked.keystore.database_key();
    {
        // Imports an address book of an earlier version and checks the contacts.
        let _lock = DirLock::acquire(&unlocked.dir)?;
        Book::load(&unlocked.dir, key)?;
    }
    let store = open_store(&unlocked.dir, key)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(daemon(&unlocked.dir, &config, &unlocked.keystore, store))
}

async fn daemon(
    dir: &Path,
    config: &RunConfig,
    keys: &dp2ptcs_crypto::UnlockedKeystore,
    store: dp2ptcs_store::Store,
) -> Result<()> {
    if let Some(file) = &config.file {
        tracing::info!(file = %file.display(), "configuration read");
    }
    let node = Node::start(config.node.clone(), keys, store)
        .await
        .with_context(|| format!("cannot start the node on {}", config.node.listen))?;
    let bound = node.local_addr()?;
    let advertised = if config.advertise.is_empty() {
        config::derive_advertised(bound)
    } else {
        config.advertise.clone()
    };
    save_addresses(dir, keys.database_key(), &advertised)?;
    let socket: PathBuf = dir.join(api::SOCKET_FILE);
    let listener =
        api::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    let api_task = tokio::spawn(api::serve(
        listener,
        node.clone(),
        ApiInfo {
            addresses: advertised.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
    ));
    node.set_advertised(advertised.clone());
    for addr in config
        .bootstrap
        .iter()
        .filter(|a| config::is_own_address(**a, bound))
    {
        tracing::warn!(
            %addr,
            "the bootstrap address {addr} is this node's own: a node cannot join the DHT through \
             itself; give another node's address"
        );
    }
    if config.bootstrap.is_empty() {
        tracing::info!(
            "no --bootstrap address: the DHT joins through the peers this node knew last time, \
             or when another node dials it"
        );
    }
    tracing::info!(
        node_id = %node.node_id(),
        listen = %bound,
        addresses = ?advertised,
        api = %socket.display(),
        "node running; stop with Ctrl-C or SIGTERM"
    );

    let received = wait_for_signal().await?;
    tracing::info!(signal = received, "shutting down");
    let result = node.shutdown(SHUTDOWN_DEADLINE).await;
    match tokio::time::timeout(Duration::from_secs(5), api_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "local API ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "local API task failed"),
        _ => {}
    }
    let _ = std::fs::remove_file(&socket);
    result.context("shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Records the addresses our contact URI carries (`dp2ptcs id` shows them).
fn save_addresses(dir: &Path, key: &[u8; 32], addresses: &[std::net::SocketAddr]) -> Result<()> {
    let _lock = DirLock::acquire(dir)?;
    let store = open_store(dir, key)?;
    store.set_profile("addresses", &serde_json::to_string(addresses)?)?;
    Ok(())
}

async fn wait_for_signal() -> Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_starting_while_a_command_opens_the_database_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let held = DaemonLock::hold_shared(dir.path());
        assert!(held.is_some(), "no node runs: a command may hold the lock");
        let node = open_lock_file(&dir.path().join(DAEMON_LOCK_FILE)).unwrap();
        assert!(
            !lock_within(&node, Duration::ZERO),
            "taken while the command holds it"
        );
        // A command that holds it past the node's patience is named as what is in the way.
        let err = DaemonLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another dp2ptcs command"), "{err}");
        assert!(!DaemonLock::held_here());
        let command = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        assert!(lock_within(&node, Duration::from_secs(20)));
        command.join().unwrap();
        // With the node running, a command gets no hold, and opens without migrating.
        assert!(DaemonLock::hold_shared(dir.path()).is_none());
        assert!(DaemonLock::is_held(dir.path()));
        // A second node gives up after its patience; through `acquire`, at once, saying why.
        let second = open_lock_file(&dir.path().join(DAEMON_LOCK_FILE)).unwrap();
        assert!(!lock_within(&second, Duration::from_millis(200)));
        let err = DaemonLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
    }
}
