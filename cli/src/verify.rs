//! `blueshift verify`: proves green equals blue at one consistent point of blue, while writes go
//! on, and reports every difference with its key and both rows.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use blueshift_engine::backfill::Progress;
use blueshift_engine::metrics::{Metrics, MetricsServer};
use blueshift_engine::sync;
use blueshift_engine::verify::{self, Depth, Hashing, VerifyConfig};

use crate::exit::{Differences, Refused};
use crate::rename::{self, RenameArgs};
use crate::settings;

/// Prove that green holds what blue holds, at one consistent point L of blue.
///
/// Blue is read in a snapshot holding exactly the transactions committed before L (a temporary
/// slot's exported snapshot); green in a snapshot taken while the running `blueshift sync`
/// holds its next commit past L for a few milliseconds (the control channel on green). With no
/// sync running, the pair must be quiet and caught up (the sync's idle slot holds nothing for
/// green before L), or verify refuses and says why.
///
/// Every published table is compared through the same column mapping as sync: row counts and
/// checksums per key-range chunk, in parallel; a chunk that differs is bisected down to the
/// keys, each reported as missing on green, extra on green or different, with both rows. Tables
/// without a key are compared as multisets. Then, on green: foreign keys (apply does not check
/// them), NOT VALID check constraints, invalid indexes; sequences must be at least blue's.
///
/// The run and every finished chunk are recorded on green (blueshift.verify_run,
/// blueshift.verify_chunk): --resume continues a killed run, and cutover reads the last outcome.
///
/// Progress: a bar per table on a terminal (rows, rows/s, ETA), a log line every 10 s
/// otherwise. With --metrics-addr, blueshift_verify_rows_total, _chunks_total and
/// _differences_total grow during the run; the running sidecar exports the latest run's outcome
/// and blueshift_verified_lsn from green's records.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # While the sidecar runs: compare everything the publication publishes
  blueshift verify --source 'postgresql://replicator@blue:5432/app' \\
      --target 'postgresql://blueshift@green:5432/app' --publication app_pub --slot app_sync

  # Two tables, 8 connections per side, 100 random rows each also compared column by column
  blueshift verify --config /etc/blueshift/sync.toml --tables accounts,public.orders \\
      --workers 8 --sample 100

  # Continue the run a kill interrupted; JSON for a script
  blueshift verify --config sync.toml --resume --format json | jq .differences_total

Exit codes: 0 equal, 1 differences found, 3 refused (no consistent point, a table or column
green lacks, nothing to resume), 4 connection, 6 interrupted, 7 internal.")]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pair: settings::PairArgs,
    /// Publication on blue: the tables compared [default: blueshift].
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_PUBLICATION")]
    publication: Option<String>,
    /// Only these tables (`table` or `schema.table`, comma-separated or repeated).
    #[arg(
        long,
        value_name = "TABLES",
        value_delimiter = ',',
        env = "BLUESHIFT_VERIFY_TABLES"
    )]
    tables: Vec<String>,
    /// Row counts and per-chunk checksums, bisected to the keys (the default).
    #[arg(long, conflicts_with = "counts")]
    checksum: bool,
    /// Row counts only (per chunk).
    #[arg(long)]
    counts: bool,
    /// Where chunk checksums are computed: `server` (hashtextextended summed in SQL on each
    /// server) or `client` (the canonical rows streamed out and hashed here with xxh3).
    #[arg(
        long,
        value_enum,
        value_name = "WHERE",
        default_value_t = HashingArg::Server,
        env = "BLUESHIFT_VERIFY_HASHING"
    )]
    hashing: HashingArg,
    /// Rows per chunk.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50_000,
        env = "BLUESHIFT_VERIFY_CHUNK_ROWS"
    )]
    chunk_rows: u64,
    /// Connections per side comparing chunks in parallel.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        env = "BLUESHIFT_VERIFY_WORKERS"
    )]
    workers: usize,
    /// Also compare N random rows of each table column by column.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        env = "BLUESHIFT_VERIFY_SAMPLE"
    )]
    sample: u64,
    /// Continue the last run, which was killed or failed: only its unfinished chunks.
    #[arg(long)]
    resume: bool,
    /// Serve this run's Prometheus metrics at this address (GET /metrics): rows and chunks
    /// compared, differences found, the latest run's outcome. Not the sidecar's address.
    #[arg(long, value_name = "ADDR", env = "BLUESHIFT_VERIFY_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// The report: a summary table, or one JSON object.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    renames: RenameArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HashingArg {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub(crate) async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let settings::Pair {
        file,
        source,
        target,
        slot,
    } = args.pair.resolve()?;
    let workers = settings::in_range("--workers", args.workers, 1..=64)?;
    if args.chunk_rows == 0 {
        return Err(anyhow::Error::new(Refused(
            "--chunk-rows must be at least 1".to_owned(),
        )));
    }
    let config = VerifyConfig {
        source,
        target,
        publication: args
            .publication
            .or(file.publication.clone())
            .unwrap_or_else(|| sync::DEFAULT_SLOT.to_owned()),
        slot,
        tables: args.tables.into_iter().filter(|t| !t.is_empty()).collect(),
        depth: if args.counts {
            Depth::Counts
        } else {
            Depth::Checksum
        },
        hashing: match args.hashing {
            HashingArg::Server => Hashing::Server,
            HashingArg::Client => Hashing::Client,
        },
        chunk_rows: args.chunk_rows,
        workers,
        sample: args.sample,
        resume: args.resume,
        mapping: Arc::new(
            rename::collect(file.mapping(), args.renames)
                .map_err(|e| anyhow::Error::new(Refused(format!("{e:#}"))))?,
        ),
    };
    let metrics = Metrics::for_verify();
    metrics.set_build_info(crate::version::VERSION, crate::version::COMMIT);
    let server = match args.metrics_addr.or(file.verify_metrics_addr) {
        Some(addr) => {
            let server = MetricsServer::bind(addr)
                .await
                .context("verify's metrics (--metrics-addr, verify_metrics_addr)")?;
            Some(tokio::spawn(
                server.serve(metrics.clone(), std::future::pending()),
            ))
        }
        None => None,
    };
    let progress = Progress::for_verify(metrics);
    let display = crate::progress::show(&progress);
    let report = verify::run_with(&config, &progress).await;
    display.finish().await;
    if let Some(server) = server {
        server.abort();
    }
    let report = report.context("blueshift verify failed")?;
    let text = match args.format {
        Format::Text => report.to_text(),
        Format::Json => format!("{}\n", report.to_json()),
    };
    crate::status::print(&text)?;
    if report.equal() {
        Ok(())
    } else {
        Err(anyhow::Error::new(Differences(format!(
            "green differs from blue at {}: {} difference(s) (verify run {})",
            report.lsn, report.total_differences, report.run_id
        ))))
    }
}
