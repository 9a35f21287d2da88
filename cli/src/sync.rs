//! `blueshift sync`: the sidecar that keeps green caught up with blue.
//!
//! Settings come, in order of precedence, from the command line, `BLUESHIFT_*` environment
//! variables, the TOML file (`--config`), then defaults (see [`crate::settings`], shared by
//! every command); the column mapping from the file's `[[rename]]`, `[[exclude]]` and `[[cast]]`
//! tables and the `--rename`, `--exclude` and `--lossy-cast` flags add up (see
//! [`crate::rename`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use blueshift_engine::backfill::{BackfillMode, BackfillOptions, Progress};
use blueshift_engine::metrics::{Metrics, MetricsServer};
use blueshift_engine::sync::{self, SyncConfig};
use blueshift_engine::sync::{Policies, Policy};

use crate::exit::Refused;
use crate::rename::{self, RenameArgs};
use crate::settings::{self, FileSettings};
use crate::signals::Signals;

/// Keep green caught up with blue: stream blue's changes and apply them to green, exactly once.
///
/// Runs until SIGINT or SIGTERM, then drains what is in flight (at most --shutdown-timeout; a
/// second signal stops at once) and exits 0 — or 6 when the backfill was not finished.
/// Transient errors — a lost connection, blue or green restarting — reconnect with backoff and
/// resume from green's durable position. A change green cannot take as it is (a column blue
/// added, a narrower type, a value too long) holds the line: sync logs what it waits for and
/// the fix, and goes on once green is fixed. Anything else stops with the fix and an exit code
/// by class (`blueshift --help`).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Start (creating the slot, and the publication for all tables) with 4 appliers
  blueshift sync --source 'postgresql://replicator@blue:5432/app' \\
      --target 'postgresql://blueshift@green:5432/app' --publication app_pub --create-publication \\
      --workers 4 --metrics-addr 127.0.0.1:9187

  # The same from a file, passwords from ~/.pgpass
  blueshift sync --config /etc/blueshift/sync.toml

  # Green renamed a column (blue's users.name is green's users.full_name) and dropped another
  blueshift sync --config /etc/blueshift/sync.toml --rename 'public.users:name=full_name' \\
      --exclude 'public.users:legacy'

sync.toml holds the same settings as the options, with underscores, and the mapping as tables:
  source = \"host=blue dbname=app user=replicator\"
  target = \"host=green dbname=app user=blueshift\"
  publication = \"app_pub\"
  workers = 4
  metrics_addr = \"127.0.0.1:9187\"
  [[rename]]
  table = \"public.users\"
  from = \"name\"
  to = \"full_name\"
  [[exclude]]
  table = \"public.users\"
  column = \"legacy\"
  [[cast]]
  table = \"public.prices\"
  column = \"amount\"
  lossy = true

Columns are matched by name and must be carried losslessly: a column only on blue stops sync
unless excluded, one only on green takes its default, a different type is converted by green
when nothing is lost (a narrower or lossy type stops sync unless declared a lossy cast). The
mapping from the file and from the flags adds up.

Every command (status, cleanup, plan, tail, migrate…) reads the same file. Each option but
--rename, --exclude and --lossy-cast can also be set as BLUESHIFT_<NAME> (e.g.
BLUESHIFT_WORKERS=4, BLUESHIFT_NO_BACKFILL=1). Precedence: command line, then BLUESHIFT_*
variables, then the file, then libpq's PG* variables for what a connection string leaves out.
Passwords: --source-password-file/--target-password-file, else PGPASSWORD, else ~/.pgpass; one
inside a URI on the command line works but draws a warning, since other users can read it in
the process list.

/healthz answers 200 while the process runs; /readyz answers 200 while sync streams with both
sides connected and green is at most --ready-max-lag seconds behind, 503 otherwise.")]
pub(crate) struct SyncArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Ask blue for values in binary (faster to parse); every published column must have the
    /// same built-in type on green.
    #[arg(long, env = "BLUESHIFT_BINARY", value_parser = settings::boolish())]
    binary: bool,
    /// Appliers, each one connection to green; all but the first wait while fewer than four
    /// transactions are queued [default: 4].
    #[arg(long, value_name = "N", env = "BLUESHIFT_WORKERS")]
    workers: Option<usize>,
    /// The one memory budget of in-flight transactions (being assembled, queued, being
    /// applied), in the real bytes of their decoded changes; past it the largest open
    /// transaction spills to disk and reading waits for the appliers, e.g. 16MiB
    /// [default: 64MiB].
    #[arg(long, value_name = "SIZE", env = "BLUESHIFT_MAX_TXN_MEMORY")]
    max_txn_memory: Option<String>,
    /// Folder for spill files: they go in a private subfolder `blueshift_spill_<slot>` (mode
    /// 0700, files 0600, removed on exit and cleared at start) [default: the system temp
    /// folder].
    #[arg(long, value_name = "DIR", env = "BLUESHIFT_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// While green is down, keep reading blue into a local spool beside the spill folder, at
    /// most this many bytes, and apply it once green is back (the slot is still acknowledged
    /// only up to green's durable position); when full, reading blue waits. 0: no spool
    /// [default: 1GiB].
    #[arg(long, value_name = "SIZE", env = "BLUESHIFT_SPOOL_LIMIT")]
    spool_limit: Option<String>,
    /// Transactions queued for the appliers at most [default: 1024].
    #[arg(long, value_name = "N", env = "BLUESHIFT_QUEUE_CAPACITY")]
    queue_capacity: Option<usize>,
    /// Fold a catch-up group (many source transactions applied as one green transaction), or
    /// one large transaction in chunks, per row to its net effect and apply each table's as a
    /// few set statements; off applies every change row by row in blue's order. Tables with a unique index beyond the key, triggers
    /// that fire during apply, no key or REPLICA IDENTITY FULL always go row by row
    /// [default: on].
    #[arg(long, value_name = "on|off", env = "BLUESHIFT_FOLD", value_parser = settings::boolish())]
    fold: Option<bool>,
    /// Apply a large transaction blue streams while it is in progress (PostgreSQL 14+) as it
    /// arrives, on a connection of its own, and commit it at its turn, as native
    /// `streaming = parallel` does; it is still spilled as it arrives, and applied from the spill
    /// whenever the streamed apply gives up. Off: applied from its spill after its commit,
    /// folded into set statements, which is faster for a large DELETE or UPDATE (the streamed
    /// apply goes row by row) [default: off].
    #[arg(long, value_name = "on|off", env = "BLUESHIFT_STREAM_APPLY", value_parser = settings::boolish())]
    stream_apply: Option<bool>,
    /// At most this many streamed transactions applied at once, each on a connection of its
    /// own (replication origin `blueshift_<slot>_<workers + n>`); others are applied from their
    /// spill [default: 2].
    #[arg(long, value_name = "N", env = "BLUESHIFT_STREAM_APPLY_MAX")]
    stream_apply_max: Option<usize>,
    /// Apply over blueshift's own protocol session, one Sync per window of requests (a
    /// transaction, or a group of them while catching up); off: over tokio-postgres, one Sync
    /// per statement. Two-way sync always uses the latter. On by default: green answers and
    /// flushes once per transaction, which cut live lag and CPU (BENCHMARKS.md) [default: on].
    #[arg(long, value_name = "on|off", env = "BLUESHIFT_PIPELINED_APPLY", value_parser = settings::boolish())]
    pipelined_apply: Option<bool>,
    /// Copy blue's existing rows into green before streaming, even though the slot exists
    /// (green's tables must be empty; a backfill of this slot that finished already is not
    /// repeated: `blueshift cleanup` forgets it). Without it or --no-backfill, sync copies when
    /// it creates the slot, and finishes an interrupted copy.
    #[arg(long, env = "BLUESHIFT_BACKFILL", value_parser = settings::boolish(), conflicts_with = "no_backfill")]
    backfill: bool,
    /// Never copy: green was loaded another way (pg_dump, a restore). A table added to the
    /// publication later stops sync: run once without it to copy that table.
    #[arg(long, env = "BLUESHIFT_NO_BACKFILL", value_parser = settings::boolish())]
    no_backfill: bool,
    /// Two-way sync: once the forward direction streams, also apply green's writes to blue
    /// (a reverse slot and publication on green, appliers on blue; see README "Two-way sync").
    /// Writes made on green before the log says "the reverse direction is armed" are not
    /// carried to blue.
    #[arg(long, env = "BLUESHIFT_BIDIRECTIONAL", value_parser = settings::boolish())]
    bidirectional: bool,
    /// Two-way sync: what to do when a change meets a conflicting row on the other side —
    /// last-writer-wins (later commit timestamp; a tie goes to blue; a delete beats an update),
    /// blue-wins, green-wins, skip (each side keeps its row), stop (the default: stop and name
    /// the row). `schema.table=POLICY` sets one table's; repeat the option for several. Every
    /// conflict is recorded in blueshift.conflict (`blueshift conflicts`).
    #[arg(
        long,
        value_name = "[TABLE=]POLICY",
        env = "BLUESHIFT_CONFLICT_POLICY",
        value_delimiter = ','
    )]
    conflict_policy: Vec<String>,
    /// Two-way sync: keep the two sides' sequences apart once the reverse direction is armed —
    /// interleave (both step by twice their increment, blue and green on alternate values) or
    /// offset (green continues half-way to the type's maximum, blue is bounded below it).
    /// Applied only when given; `blueshift finalize` puts the increments and bounds back.
    /// Without it, sync names the overlapping sequences and leaves them alone.
    #[arg(long, value_name = "STRATEGY", env = "BLUESHIFT_SEQUENCE_STRATEGY", value_parser = ["offset", "interleave"])]
    sequence_strategy: Option<String>,
    #[command(flatten)]
    copy: CopyArgs,
}

/// Copy blue's existing rows into green, then exit.
///
/// A consistent snapshot shared with the replication slot, tables split across
/// --copy-workers, green's indexes rebuilt after the load, sequences set. Resumes an
/// interrupted copy. `blueshift sync` then streams from the slot with no gap and nothing
/// twice.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Copy with 8 workers, then start the sidecar, which streams from the slot the copy created
  blueshift backfill --config /etc/blueshift/sync.toml --copy-workers 8
  blueshift sync --config /etc/blueshift/sync.toml

Interrupted (Ctrl-C, SIGTERM, a crash), it exits with code 6; running it again copies only the
chunks that are not finished. Settings as for `blueshift sync` (--config, BLUESHIFT_*).")]
pub(crate) struct BackfillArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    copy: CopyArgs,
}

/// What sync and backfill share: where, which slot and publication, metrics, renames.
#[derive(Debug, clap::Args)]
struct CommonArgs {
    #[command(flatten)]
    config: settings::ConfigArg,
    #[command(flatten)]
    source: settings::SourceArgs,
    #[command(flatten)]
    target: settings::TargetArgs,
    /// Publication on blue [default: blueshift].
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_PUBLICATION")]
    publication: Option<String>,
    /// Create the publication when it does not exist: for all tables, or for the listed ones
    /// (`--create-publication accounts,public.orders`).
    #[arg(long, value_name = "TABLES", num_args = 0..=1, default_missing_value = "", value_delimiter = ',', env = "BLUESHIFT_CREATE_PUBLICATION")]
    create_publication: Option<Vec<String>>,
    #[command(flatten)]
    slot: settings::SlotArg,
    /// Seconds between standby status updates to blue [default: 10].
    #[arg(long, value_name = "SECONDS", env = "BLUESHIFT_STATUS_INTERVAL")]
    status_interval: Option<u64>,
    /// Serve Prometheus metrics at this address (GET /metrics), with /healthz and /readyz.
    #[arg(long, value_name = "ADDR", env = "BLUESHIFT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// /readyz answers 503 while green is more than this many seconds behind blue
    /// [default: 60].
    #[arg(long, value_name = "SECONDS", env = "BLUESHIFT_READY_MAX_LAG")]
    ready_max_lag: Option<f64>,
    #[command(flatten)]
    renames: RenameArgs,
}

/// The copy's options.
#[derive(Debug, clap::Args)]
struct CopyArgs {
    /// Parallel copy workers, each one connection to blue and one to green [default: 4].
    #[arg(long, value_name = "N", env = "BLUESHIFT_COPY_WORKERS")]
    copy_workers: Option<usize>,
    /// Split tables into chunks of about this size, e.g. 64MiB; smaller tables are copied whole
    /// [default: 64MiB].
    #[arg(long, value_name = "SIZE", env = "BLUESHIFT_CHUNK_SIZE")]
    chunk_size: Option<String>,
    /// Keep green's indexes and constraints during the copy instead of dropping them and
    /// building them after (slower load; for tables already in use on green).
    #[arg(long, env = "BLUESHIFT_KEEP_INDEXES", value_parser = settings::boolish())]
    keep_indexes: bool,
    /// maintenance_work_mem for building green's indexes after the copy [default: 256MB].
    #[arg(long, value_name = "SIZE", env = "BLUESHIFT_MAINTENANCE_WORK_MEM")]
    maintenance_work_mem: Option<String>,
}

/// Where the sidecar serves its endpoints, and when it is ready.
struct Serve {
    metrics_addr: Option<SocketAddr>,
    ready_max_lag: Duration,
}

pub(crate) async fn run(args: SyncArgs, signals: &Signals) -> anyhow::Result<()> {
    let file = args.common.config.load()?;
    let (mut config, serve) = settings(&args.common, &args.copy, &file)?;
    let stream = &mut config;
    stream.binary = args.binary || file.binary.unwrap_or(false);
    stream.workers = settings::in_range(
        "--workers",
        args.workers.or(file.workers).unwrap_or(4),
        1..=64,
    )?;
    stream.queue_capacity = args.queue_capacity.or(file.queue_capacity).unwrap_or(1024);
    stream.fold = args.fold.or(file.fold).unwrap_or(true);
    stream.stream_apply = args.stream_apply.or(file.stream_apply).unwrap_or(false);
    stream.stream_apply_max = settings::in_range(
        "--stream-apply-max",
        args.stream_apply_max
            .or(file.stream_apply_max)
            .unwrap_or(sync::DEFAULT_STREAM_APPLY_MAX),
        1..=16,
    )?;
    stream.pipelined_apply = args
        .pipelined_apply
        .or(file.pipelined_apply)
        .unwrap_or(true);
    if let Some(text) = args.max_txn_memory.or(file.max_txn_memory.clone()) {
        stream.max_txn_memory = settings::parse_with("--max-txn-memory", &text, parse_size)?;
    }
    if let Some(dir) = args.spill_dir.or(file.spill_dir.clone()) {
        stream.spill_dir = dir;
    }
    if let Some(text) = args.spool_limit.or(file.spool_limit.clone()) {
        stream.spool_limit = settings::parse_with("--spool-limit", &text, parse_size)? as u64;
    }
    stream.backfill.mode = if args.backfill {
        BackfillMode::Always
    } else if args.no_backfill {
        BackfillMode::Never
    } else {
        match file.backfill {
            Some(true) => BackfillMode::Always,
            Some(false) => BackfillMode::Never,
            None => BackfillMode::Auto,
        }
    };
    stream.bidirectional = args.bidirectional
        || file.bidirectional.unwrap_or(false)
        || file
            .reverse
            .as_ref()
            .is_some_and(|r| r.enabled.unwrap_or(true));
    if let Some(text) = args.sequence_strategy.or_else(|| {
        file.reverse
            .as_ref()
            .and_then(|r| r.sequence_strategy.clone())
    }) {
        stream.conflicts.sequence_strategy = Some(text.parse().map_err(|e: String| {
            anyhow::Error::new(Refused(format!("[reverse] sequence_strategy: {e}")))
        })?);
    }
    stream.conflicts.policies = Arc::new(conflict_policies(
        &args.conflict_policy,
        file.reverse.as_ref(),
    )?);
    run_config(config, serve, signals, "blueshift sync stopped").await
}

/// The conflict policies: `--conflict-policy` (`POLICY` or `schema.table=POLICY`, the command
/// line winning) over `[reverse]`'s `conflict_policy` and `conflict_policy_tables`.
fn conflict_policies(
    args: &[String],
    file: Option<&settings::FileReverse>,
) -> anyhow::Result<Policies> {
    let parse = |what: &str, text: &str| -> anyhow::Result<Policy> {
        text.trim()
            .parse::<Policy>()
            .map_err(|e| anyhow::Error::new(Refused(format!("{what}: {e}"))))
    };
    let table_name = |name: &str| -> anyhow::Result<String> {
        let name = name.trim();
        match name.split_once('.') {
            Some((schema, table)) if !schema.is_empty() && !table.is_empty() => Ok(name.to_owned()),
            None if !name.is_empty() => Ok(format!("public.{name}")),
            _ => Err(anyhow::Error::new(Refused(format!(
                "--conflict-policy: \"{name}\" is not a table name — write schema.table=POLICY"
            )))),
        }
    };
    let mut policies = Policies::default();
    if let Some(file) = file {
        if let Some(text) = &file.conflict_policy {
            policies.default = parse("[reverse] conflict_policy", text)?;
        }
        for (table, text) in &file.conflict_policy_tables {
            policies.tables.insert(
                table_name(table)?,
                parse("[reverse.conflict_policy_tables]", text)?,
            );
        }
    }
    for arg in args {
        match arg.split_once('=') {
            Some((table, text)) => {
                policies
                    .tables
                    .insert(table_name(table)?, parse("--conflict-policy", text)?);
            }
            None => policies.default = parse("--conflict-policy", arg)?,
        }
    }
    Ok(policies)
}

/// `blueshift backfill`: the copy only.
pub(crate) async fn run_backfill(args: BackfillArgs, signals: &Signals) -> anyhow::Result<()> {
    let file = args.common.config.load()?;
    let (mut config, serve) = settings(&args.common, &args.copy, &file)?;
    // The catch-up after a resumed copy streams: the file's stream settings apply to it.
    if let Some(text) = file.max_txn_memory.clone() {
        config.max_txn_memory = settings::parse_with("max_txn_memory", &text, parse_size)?;
    }
    if let Some(dir) = file.spill_dir.clone() {
        config.spill_dir = dir;
    }
    config.backfill.only = true;
    config.backfill.mode = BackfillMode::Always;
    run_config(config, serve, signals, "blueshift backfill stopped").await
}

async fn run_config(
    config: SyncConfig,
    serve: Serve,
    signals: &Signals,
    context: &'static str,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    metrics.set_build_info(crate::version::VERSION, crate::version::COMMIT);
    let server = match serve.metrics_addr {
        Some(addr) => {
            let server = MetricsServer::bind(addr)
                .await?
                .ready_max_lag(serve.ready_max_lag);
            let metrics = metrics.clone();
            // Served through the drain too; stopped when sync returns.
            Some(tokio::spawn(server.serve(metrics, std::future::pending())))
        }
        None => None,
    };
    let progress = Progress::new(metrics.clone());
    let display = crate::progress::show(&progress);
    let result =
        sync::run_with_progress(config, metrics.clone(), &progress, signals.requested()).await;
    display.finish().await;
    metrics.set_up(false);
    if let Some(server) = server {
        server.abort();
    }
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
    Ok(())
}

/// The settings sync and backfill share, resolved: the command line, then `BLUESHIFT_*`
/// variables, then the file, then defaults.
fn settings(
    common: &CommonArgs,
    copy: &CopyArgs,
    file: &FileSettings,
) -> anyhow::Result<(SyncConfig, Serve)> {
    let source = common.source.resolve(file)?;
    let target = common.target.resolve(file)?;
    settings::ensure_distinct(&source, &target)?;
    let slot = common.slot.resolve(file)?;
    let copy_workers = settings::in_range(
        "--copy-workers",
        copy.copy_workers.or(file.copy_workers).unwrap_or(4),
        1..=64,
    )?;
    let chunk_bytes = match copy.chunk_size.clone().or(file.chunk_size.clone()) {
        Some(text) => settings::parse_with("--chunk-size", &text, parse_size)?.max(8192),
        None => 64 << 20,
    };
    let max_txn_memory = 64 << 20;
    let config = SyncConfig {
        source,
        target,
        publication: common
            .publication
            .clone()
            .or(file.publication.clone())
            .unwrap_or_else(|| sync::DEFAULT_SLOT.to_owned()),
        create_publication: common
            .create_publication
            .clone()
            .or(file.create_publication.clone())
            .map(|tables| tables.into_iter().filter(|t| !t.is_empty()).collect()),
        binary: false,
        slot,
        workers: 4,
        queue_capacity: 1024,
        max_txn_memory,
        spill_dir: std::env::temp_dir(),
        status_interval: Duration::from_secs(
            common
                .status_interval
                .or(file.status_interval)
                .unwrap_or(10)
                .max(1),
        ),
        turn_timeout: Duration::from_secs(1),
        // At most 5 s between attempts, as native apply's `wal_retrieve_retry_interval`: a
        // green back from an outage is seen within 5 s (measured by `bench catchup-outage`).
        backoff: (Duration::from_millis(500), Duration::from_secs(5)),
        backfill: BackfillOptions {
            mode: BackfillMode::Auto,
            copy_workers,
            chunk_bytes: chunk_bytes as u64,
            keep_indexes: copy.keep_indexes || file.keep_indexes.unwrap_or(false),
            maintenance_work_mem: copy
                .maintenance_work_mem
                .clone()
                .or(file.maintenance_work_mem.clone())
                .unwrap_or_else(|| "256MB".to_owned()),
            only: false,
        },
        mapping: Arc::new(
            rename::collect(file.mapping(), common.renames.clone())
                .map_err(|e| anyhow::Error::new(Refused(format!("{e:#}"))))?,
        ),
        bidirectional: false,
        conflicts: Default::default(),
        fold: true,
        spool_limit: sync::spool::DEFAULT_LIMIT,
        stream_apply: false,
        stream_apply_max: sync::DEFAULT_STREAM_APPLY_MAX,
        pipelined_apply: true,
    };
    let ready_max_lag = common.ready_max_lag.or(file.ready_max_lag).unwrap_or(60.0);
    if !(ready_max_lag.is_finite() && ready_max_lag >= 0.0) {
        return Err(anyhow::Error::new(Refused(format!(
            "--ready-max-lag must be a number of seconds, not {ready_max_lag}"
        ))));
    }
    Ok((
        config,
        Serve {
            metrics_addr: common.metrics_addr.or(file.metrics_addr),
            ready_max_lag: Duration::from_secs_f64(ready_max_lag),
        },
    ))
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
