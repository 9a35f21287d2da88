//! `blueshift sync`: the sidecar that keeps green caught up with blue.
//!
//! Settings come, in order of precedence, from the command line, `BLUESHIFT_*` environment
//! variables, a TOML file (`--config`), then defaults; column renames from the file's
//! `[[rename]]` tables and the `--rename` flags add up (see [`crate::rename`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use blueshift_decoder::config::Password;
use blueshift_engine::backfill::{BackfillMode, BackfillOptions, Progress};
use blueshift_engine::metrics::{Metrics, MetricsServer};
use blueshift_engine::sync::{self, SyncConfig};
use serde::Deserialize;

use crate::rename::{self, FileRename, RenameArgs};
use crate::source;

/// Keep green caught up with blue: stream blue's changes and apply them to green, exactly once.
///
/// Runs until SIGINT or SIGTERM (then drains what is in flight and exits 0). Transient errors —
/// a lost connection, blue or green restarting — reconnect with backoff and resume from green's
/// durable position; anything else stops with a non-zero exit and the fix.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Start (creating the slot, and the publication for all tables) with 4 appliers
  blueshift sync --source 'postgresql://replicator@blue:5432/app' \\
      --target 'postgresql://blueshift@green:5432/app' --publication app_pub --create-publication \\
      --workers 4 --metrics-addr 127.0.0.1:9187

  # The same from a file, passwords from ~/.pgpass
  blueshift sync --config /etc/blueshift/sync.toml

  # Green renamed a column: blue's users.name is green's users.full_name
  blueshift sync --config /etc/blueshift/sync.toml --rename 'public.users:name=full_name'

sync.toml holds the same settings as the options, with underscores, and renames as tables:
  source = \"host=blue dbname=app user=replicator\"
  target = \"host=green dbname=app user=blueshift\"
  publication = \"app_pub\"
  workers = 4
  metrics_addr = \"127.0.0.1:9187\"
  [[rename]]
  table = \"public.users\"
  from = \"name\"
  to = \"full_name\"

Columns are matched by name: a column only on blue is not copied, one only on green takes its
default, a different type is converted by green. Renames from the file and from --rename add up.

Each option but --rename can also be set as BLUESHIFT_<NAME> (e.g. BLUESHIFT_WORKERS=4). Passwords: ~/.pgpass,
PGPASSWORD, or --source-password-file/--target-password-file; one inside a URI on the command line
works but draws a warning, since other users can read it in the process list.")]
pub(crate) struct SyncArgs {
    /// TOML file with settings (command line and environment win).
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_CONFIG")]
    config: Option<PathBuf>,
    /// Blue: a libpq URI or key=value string.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_SOURCE",
        hide_env_values = true
    )]
    source: Option<String>,
    /// Green: a libpq URI or key=value string.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_TARGET",
        hide_env_values = true
    )]
    target: Option<String>,
    /// File holding blue's password (first line).
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_SOURCE_PASSWORD_FILE")]
    source_password_file: Option<PathBuf>,
    /// File holding green's password (first line).
    #[arg(long, value_name = "FILE", env = "BLUESHIFT_TARGET_PASSWORD_FILE")]
    target_password_file: Option<PathBuf>,
    /// Publication on blue [default: blueshift].
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_PUBLICATION")]
    publication: Option<String>,
    /// Create the publication when it does not exist: for all tables, or for the listed ones
    /// (`--create-publication accounts,public.orders`).
    #[arg(long, value_name = "TABLES", num_args = 0..=1, default_missing_value = "", value_delimiter = ',', env = "BLUESHIFT_CREATE_PUBLICATION")]
    create_publication: Option<Vec<String>>,
    /// Ask blue for values in binary (faster to parse); every published column must have the
    /// same built-in type on green.
    #[arg(long, env = "BLUESHIFT_BINARY")]
    binary: bool,
    /// Logical replication slot on blue, created when absent [default: blueshift].
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_SLOT")]
    slot: Option<String>,
    /// Appliers, each one connection to green [default: 4].
    #[arg(long, value_name = "N", env = "BLUESHIFT_WORKERS")]
    workers: Option<usize>,
    /// Serve Prometheus metrics at this address (GET /metrics).
    #[arg(long, value_name = "ADDR", env = "BLUESHIFT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Bytes of in-progress transactions held in memory before spilling to disk, e.g. 256MiB
    /// [default: 256MiB].
    #[arg(long, value_name = "SIZE", env = "BLUESHIFT_MAX_TXN_MEMORY")]
    max_txn_memory: Option<String>,
    /// Folder for spill files [default: the system temp folder].
    #[arg(long, value_name = "DIR", env = "BLUESHIFT_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// Transactions queued for the appliers at most [default: 1024].
    #[arg(long, value_name = "N", env = "BLUESHIFT_QUEUE_CAPACITY")]
    queue_capacity: Option<usize>,
    /// Seconds between standby status updates to blue [default: 10].
    #[arg(long, value_name = "SECONDS", env = "BLUESHIFT_STATUS_INTERVAL")]
    status_interval: Option<u64>,
    /// Copy blue's existing rows into green before streaming, even though the slot exists
    /// (green's tables must be empty; a backfill of this slot that finished already is not
    /// repeated: `blueshift cleanup` forgets it). Without it or --no-backfill, sync copies when
    /// it creates the slot, and finishes an interrupted copy.
    #[arg(long, env = "BLUESHIFT_BACKFILL", conflicts_with = "no_backfill")]
    backfill: bool,
    /// Never copy: green was loaded another way (pg_dump, a restore). A table added to the
    /// publication later stops sync: run once without it to copy that table.
    #[arg(long, env = "BLUESHIFT_NO_BACKFILL")]
    no_backfill: bool,
    /// Parallel copy workers, each one connection to blue and one to green [default: 4].
    #[arg(long, value_name = "N", env = "BLUESHIFT_COPY_WORKERS")]
    copy_workers: Option<usize>,
    /// Split tables into chunks of about this size, e.g. 64MiB; smaller tables are copied whole
    /// [default: 64MiB].
    #[arg(long, value_name = "SIZE", env = "BLUESHIFT_CHUNK_SIZE")]
    chunk_size: Option<String>,
    /// Keep green's indexes and constraints during the copy instead of dropping them and
    /// building them after (slower load; for tables already in use on green).
    #[arg(long, env = "BLUESHIFT_KEEP_INDEXES")]
    keep_indexes: bool,
    /// maintenance_work_mem for building green's indexes after the copy [default: 256MB].
    #[arg(long, value_name = "SIZE", env = "BLUESHIFT_MAINTENANCE_WORK_MEM")]
    maintenance_work_mem: Option<String>,
    #[command(flatten)]
    renames: RenameArgs,
}

/// The TOML file's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    source: Option<String>,
    target: Option<String>,
    source_password_file: Option<PathBuf>,
    target_password_file: Option<PathBuf>,
    publication: Option<String>,
    create_publication: Option<Vec<String>>,
    binary: Option<bool>,
    slot: Option<String>,
    workers: Option<usize>,
    metrics_addr: Option<SocketAddr>,
    max_txn_memory: Option<String>,
    spill_dir: Option<PathBuf>,
    queue_capacity: Option<usize>,
    status_interval: Option<u64>,
    /// `true`: as --backfill; `false`: as --no-backfill.
    backfill: Option<bool>,
    copy_workers: Option<usize>,
    chunk_size: Option<String>,
    keep_indexes: Option<bool>,
    maintenance_work_mem: Option<String>,
    #[serde(default)]
    rename: Vec<FileRename>,
}

pub(crate) async fn run(args: SyncArgs) -> anyhow::Result<()> {
    let (config, metrics_addr) = settings(args)?;
    run_config(config, metrics_addr, "blueshift sync stopped").await
}

/// `blueshift backfill`: the copy only.
pub(crate) async fn run_backfill(args: SyncArgs) -> anyhow::Result<()> {
    let (mut config, metrics_addr) = settings(args)?;
    config.backfill.only = true;
    if config.backfill.mode == BackfillMode::Auto {
        config.backfill.mode = BackfillMode::Always;
    }
    run_config(config, metrics_addr, "blueshift backfill stopped").await
}

async fn run_config(
    config: SyncConfig,
    metrics_addr: Option<SocketAddr>,
    context: &'static str,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let server = match metrics_addr {
        Some(addr) => {
            let server = MetricsServer::bind(addr)
                .await
                .with_context(|| format!("could not serve metrics at {addr}"))?;
            let metrics = metrics.clone();
            Some(tokio::spawn(
                server.serve(metrics, crate::shutdown_signal()),
            ))
        }
        None => None,
    };
    let progress = Progress::new(metrics.clone());
    let display = crate::progress::show(&progress);
    let result =
        sync::run_with_progress(config, metrics, &progress, crate::shutdown_signal()).await;
    display.finish().await;
    let summary = result.context(context)?;
    if summary.backfill.ran {
        let b = summary.backfill;
        tracing::info!(
            rows = b.rows,
            chunks = b.chunks,
            resumed_chunks = b.chunks_resumed,
            indexes = b.indexes,
            sequences = b.sequences,
            "backfill finished"
        );
    }
    tracing::info!(
        transactions = summary.transactions,
        reconnects = summary.reconnects,
        "sync finished"
    );
    if let Some(server) = server {
        server.abort();
    }
    Ok(())
}

fn settings(args: SyncArgs) -> anyhow::Result<(SyncConfig, Option<SocketAddr>)> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            toml::from_str::<FileSettings>(&text)
                .with_context(|| format!("invalid settings file {}", path.display()))?
        }
        None => FileSettings::default(),
    };
    let source = args.source.or(file.source).context(
        "no source: pass --source URI (or BLUESHIFT_SOURCE, or source = \"…\" in --config)",
    )?;
    let target = args.target.or(file.target).context(
        "no target: pass --target URI (or BLUESHIFT_TARGET, or target = \"…\" in --config)",
    )?;
    let mut source = source::parse("--source", &source)?;
    let mut target = source::parse("--target", &target)?;
    if let Some(path) = args.source_password_file.or(file.source_password_file) {
        source.set_password(read_password(&path)?);
    }
    if let Some(path) = args.target_password_file.or(file.target_password_file) {
        target.set_password(read_password(&path)?);
    }
    let workers = args.workers.or(file.workers).unwrap_or(4);
    anyhow::ensure!(
        (1..=64).contains(&workers),
        "--workers must be between 1 and 64, not {workers}"
    );
    let copy_workers = args.copy_workers.or(file.copy_workers).unwrap_or(4);
    anyhow::ensure!(
        (1..=64).contains(&copy_workers),
        "--copy-workers must be between 1 and 64, not {copy_workers}"
    );
    let chunk_bytes = match args.chunk_size.or(file.chunk_size) {
        Some(text) => parse_size(&text)?.max(8192),
        None => 64 << 20,
    };
    let max_txn_memory = match args.max_txn_memory.or(file.max_txn_memory) {
        Some(text) => parse_size(&text)?,
        None => 256 << 20,
    };
    let config = SyncConfig {
        source,
        target,
        publication: args
            .publication
            .or(file.publication)
            .unwrap_or_else(|| sync::DEFAULT_SLOT.to_owned()),
        create_publication: args
            .create_publication
            .or(file.create_publication)
            .map(|tables| tables.into_iter().filter(|t| !t.is_empty()).collect()),
        binary: args.binary || file.binary.unwrap_or(false),
        slot: args
            .slot
            .or(file.slot)
            .unwrap_or_else(|| sync::DEFAULT_SLOT.to_owned()),
        workers,
        queue_capacity: args.queue_capacity.or(file.queue_capacity).unwrap_or(1024),
        max_txn_memory,
        spill_dir: args
            .spill_dir
            .or(file.spill_dir)
            .unwrap_or_else(std::env::temp_dir),
        status_interval: Duration::from_secs(
            args.status_interval
                .or(file.status_interval)
                .unwrap_or(10)
                .max(1),
        ),
        turn_timeout: Duration::from_secs(1),
        backoff: (Duration::from_millis(500), Duration::from_secs(30)),
        backfill: BackfillOptions {
            mode: if args.backfill {
                BackfillMode::Always
            } else if args.no_backfill {
                BackfillMode::Never
            } else {
                match file.backfill {
                    Some(true) => BackfillMode::Always,
                    Some(false) => BackfillMode::Never,
                    None => BackfillMode::Auto,
                }
            },
            copy_workers,
            chunk_bytes: chunk_bytes as u64,
            keep_indexes: args.keep_indexes || file.keep_indexes.unwrap_or(false),
            maintenance_work_mem: args
                .maintenance_work_mem
                .or(file.maintenance_work_mem)
                .unwrap_or_else(|| "256MB".to_owned()),
            only: false,
        },
        renames: Arc::new(rename::collect(file.rename, args.renames.renames)?),
    };
    blueshift_decoder::connection::validate_slot_name(&config.slot)?;
    Ok((config, args.metrics_addr.or(file.metrics_addr)))
}

fn read_password(path: &Path) -> anyhow::Result<Password> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    Ok(Password::new(line))
}

/// `256MiB`, `1GB`, `65536`…: a byte count.
fn parse_size(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().with_context(|| {
        format!("invalid size {text:?}: expected a number with an optional unit, e.g. 256MiB")
    })?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => anyhow::bail!("invalid size unit {other:?} in {text:?}: use B, KiB, MiB or GiB"),
    };
    n.checked_mul(factor)
        .with_context(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1 GB").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
    }
}
