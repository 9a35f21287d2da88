//! `blueshift bench`: parses the options and calls the bench crate, which owns the scenarios,
//! the reports and the plots.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use blueshift_bench::{decode_sink, BenchOptions, Endpoints, Scenario};
use blueshift_decoder::Lsn;

/// Measure blueshift against native logical replication on the same two clusters, in one run.
///
/// Scenarios (all by default): catchup (a paused consumer catching up a TPC-B backlog), live
/// (lag per marker row under a fixed TPC-B rate), backfill (pgbench -i copied into an empty
/// green), decode (a recorded backlog consumed into a discarding sink), bigtxn (one large
/// INSERT, UPDATE and DELETE), verify (proving green equals blue), cutover (the write pause
/// of a switch through PgBouncer under a TPC-B rate, against the same switch by hand on native
/// replication), bidirectional (two-way sync with pgbench on both sides at once, lag per
/// direction, against two native subscriptions with origin = none: PostgreSQL 16+; and the
/// throughput cost of --bidirectional on a one-way load). Each runs for blueshift and for its peer(s) in turn, --runs
/// times; every run is checked (green equal to blue) before it yields a figure.
///
/// Writes report.md (the Markdown tables, also printed on stdout), BENCHMARKS.md (the same,
/// plots linked from docs/bench/, for the root), results.json (every raw sample) and SVG plots
/// into --out. Exits 1 when a scenario or a run failed (its figures are then missing, never
/// wrong).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Everything, the published figures (BENCHMARKS.md): on a quiet machine, release build
  cargo build --release -p blueshift
  target/release/blueshift bench --scale 50 --duration 60 --runs 3 --out bench-results/full
  cp bench-results/full/BENCHMARKS.md . && cp bench-results/full/*.svg docs/bench/

  # Does the harness work? (seconds per scenario; CI runs this)
  blueshift bench --smoke --out /tmp/bench-smoke

  # Two scenarios on PostgreSQL 18
  blueshift bench live bigtxn --pg-bin /var/cache/blueshift/postgresql/18/bin --scale 10

  # On existing servers (the role needs CREATEDB, REPLICATION and CREATE SUBSCRIPTION)
  blueshift bench catchup --source 'host=blue dbname=postgres user=bench' \\
      --target 'host=green dbname=postgres user=bench'")]
pub(crate) struct BenchArgs {
    /// Scenarios to run: catchup, live, backfill, decode, bigtxn, verify,
    /// cutover, catchup-outage, bidirectional [default: all].
    #[arg(value_name = "SCENARIO")]
    scenarios: Vec<Scenario>,

    /// pgbench scale factor, 100 000 accounts each [default: 50; --smoke: 1].
    #[arg(long, value_name = "N")]
    scale: Option<u32>,

    /// Seconds of workload per run [default: 60; --smoke: 2].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u32>,

    /// Runs per scenario; medians are reported [default: 3; --smoke: 1].
    #[arg(long, value_name = "K")]
    runs: Option<u32>,

    /// pgbench clients (and threads).
    #[arg(long, value_name = "N", default_value_t = 4)]
    clients: u32,

    /// blueshift appliers (sync --workers) and copy workers (backfill --copy-workers).
    #[arg(long, value_name = "N", default_value_t = 4)]
    workers: u32,

    /// Rows of the big transactions [default: 5 000 000 for bigtxn, 2 000 000 for decode;
    /// --smoke: 20 000].
    #[arg(long, value_name = "N")]
    big_rows: Option<u64>,

    /// bigtxn: the memory budget of the measured `blueshift sync` (its --max-txn-memory),
    /// e.g. 16MiB [default: sync's own, 64MiB].
    #[arg(long, value_name = "SIZE")]
    bigtxn_memory: Option<String>,
    /// `live`: the loads to run at, each a percentage of blue's measured maximum TPC-B rate
    /// (comma-separated, e.g. `50,80,95`) [default: 80].
    #[arg(long, value_name = "PERCENT", value_delimiter = ',')]
    live_load: Vec<u32>,

    /// `catchup`: the write loads of the backlog, each run in turn (comma-separated): tpcb,
    /// uniform, swap, keychange, toast, rifull (see BENCHMARKS.md) [default: tpcb].
    #[arg(long, value_name = "WORKLOAD", value_delimiter = ',')]
    catchup_workload: Vec<blueshift_bench::Workload>,

    /// PostgreSQL binaries folder for the clusters and the client programs [default: PG_BIN,
    /// else pg_config --bindir].
    #[arg(long, value_name = "DIR")]
    pg_bin: Option<PathBuf>,

    /// Output folder [default: bench-results/<unix time>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Folder for the throwaway clusters' data, on disk [default: /var/tmp; --smoke: /dev/shm].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Blue: an existing server instead of a throwaway cluster (libpq URI or key=value).
    #[arg(long, value_name = "URI", requires = "target", hide_env_values = true)]
    source: Option<String>,

    /// Green: an existing server instead of a throwaway cluster.
    #[arg(long, value_name = "URI", requires = "source", hide_env_values = true)]
    target: Option<String>,

    /// The blueshift binary to measure [default: the one running].
    #[arg(long, value_name = "PATH")]
    blueshift: Option<PathBuf>,

    /// Tiny scale, seconds per scenario: checks that the harness works; the figures mean
    /// nothing.
    #[arg(long)]
    smoke: bool,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let command_line = command_line(std::env::args().skip(1));
    let options = BenchOptions {
        scenarios: args.scenarios,
        scale: args.scale,
        duration: args.duration,
        runs: args.runs,
        clients: args.clients,
        workers: args.workers,
        pg_bin: args.pg_bin,
        out: args.out,
        endpoints: match (args.source, args.target) {
            (Some(source), Some(target)) => Some(Endpoints { source, target }),
            _ => None,
        },
        data_dir: args.data_dir,
        blueshift: args.blueshift,
        big_rows: args.big_rows,
        bigtxn_memory: args.bigtxn_memory,
        live_loads: args.live_load,
        catchup_workloads: args.catchup_workload,
        smoke: args.smoke,
        command_line,
    };
    // Ctrl-C or SIGTERM drops the run (`main` stops every command but the draining ones at
    // once): its children are killed and its clusters stopped and removed.
    let results = blueshift_bench::run(options).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(results.markdown().as_bytes())?;
    stdout.flush()?;
    anyhow::ensure!(
        !results.failed(),
        "some scenarios or runs failed; their errors are in the report"
    );
    Ok(())
}

/// The command line for the report, with the connection strings shown without their passwords.
fn command_line(args: impl Iterator<Item = String>) -> String {
    let redact =
        |conninfo: &str| match blueshift_decoder::config::ConnectConfig::from_conninfo_with_env(
            conninfo,
            |_| None,
        ) {
            Ok(c) => format!("'{c}'"),
            Err(_) => "<connection string>".to_owned(),
        };
    let mut out = vec!["blueshift".to_owned()];
    let mut next_is_conninfo = false;
    for arg in args {
        if next_is_conninfo {
            out.push(redact(&arg));
            next_is_conninfo = false;
        } else if let Some((flag, value)) = arg
            .split_once('=')
            .filter(|(f, _)| matches!(*f, "--source" | "--target"))
        {
            out.push(format!("{flag}={}", redact(value)));
        } else {
            next_is_conninfo = matches!(arg.as_str(), "--source" | "--target");
            out.push(arg);
        }
    }
    out.join(" ")
}

/// The `decode` scenario's discarding consumer (run by `blueshift bench`).
#[derive(Debug, clap::Args)]
pub(crate) struct DecodeSinkArgs {
    #[arg(long)]
    source: String,
    #[arg(long = "publication", required = true)]
    publications: Vec<String>,
    #[arg(long)]
    slot: String,
    #[arg(long)]
    until: Lsn,
    #[arg(long)]
    proto_version: u32,
    #[arg(long)]
    source_password_file: Option<PathBuf>,
}

pub(crate) async fn decode_sink(args: DecodeSinkArgs) -> anyhow::Result<()> {
    let mut source = crate::source::parse("--source", &args.source)?;
    if let Some(path) = &args.source_password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        source.set_password(blueshift_decoder::config::Password::new(
            text.lines().next().unwrap_or_default(),
        ));
    }
    let counts = decode_sink::run(decode_sink::SinkOptions {
        source,
        publications: args.publications,
        slot: args.slot,
        until: args.until,
        proto_version: args.proto_version,
    })
    .await?;
    println!("{}", serde_json::to_string(&counts)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::command_line;

    #[test]
    fn the_reported_command_line_carries_no_password() {
        let args = [
            "bench",
            "catchup",
            "--source",
            "postgresql://bench:s3cret@blue:5432/postgres",
            "--target=host=green user=bench password=s3cret dbname=postgres",
        ]
        .map(str::to_owned);
        let line = command_line(args.into_iter());
        assert!(!line.contains("s3cret"), "{line}");
        assert!(
            line.starts_with(
                "blueshift bench catchup --source 'bench@blue:5432/postgres' --target="
            ),
            "{line}"
        );
    }
}
