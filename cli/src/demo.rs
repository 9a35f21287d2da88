//! `blueshift demo`: a throwaway blue cluster, a live write workload, and blueshift decoding
//! its WAL as it happens, then a check that every change blue committed was decoded.
//!
//! This is the README's first command. It grows with the engine: once streaming sync lands it
//! starts green too and proves green equals blue row for row.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::pgoutput::PgOutputMessage;
use blueshift_decoder::relation::RelationCache;
use blueshift_decoder::Lsn;
use blueshift_engine::tail::{self, SlotChoice, TailError, TailOptions, TailSink};
use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};

/// Start a throwaway PostgreSQL cluster, write to it live, and watch blueshift decode it.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blueshift demo                       # 10 seconds of writes on the default PostgreSQL
  blueshift demo --duration 30 --pg-major 18
  blueshift demo --keep                # leave the cluster running and print its URI")]
pub(crate) struct DemoArgs {
    /// Seconds of live writes.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    duration: u64,

    /// PostgreSQL binaries folder (default: PG_BIN, else pg_config --bindir).
    #[arg(long, value_name = "DIR", conflicts_with = "pg_major")]
    pg_bin: Option<PathBuf>,

    /// PostgreSQL major version to run (its binaries from scripts/fetch-postgres).
    #[arg(long, value_name = "N")]
    pg_major: Option<u32>,

    /// Leave the cluster running at the end and print how to reach and remove it.
    #[arg(long)]
    keep: bool,
}

const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
CREATE TABLE transfers (id bigserial PRIMARY KEY, from_id int NOT NULL, to_id int NOT NULL,
                        amount bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
INSERT INTO accounts SELECT g, 'owner ' || g, 1000 FROM generate_series(1, 1000) g;
CREATE PUBLICATION demo_pub FOR TABLE accounts, transfers;
";

/// What the workload committed (and, mirrored, what was decoded).
#[derive(Debug, Default)]
struct Counts {
    transactions: AtomicU64,
    inserts: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
    bytes: AtomicU64,
    /// End LSN of the last decoded commit.
    end_lsn: AtomicU64,
}

impl Counts {
    fn get(&self) -> [u64; 4] {
        [
            self.transactions.load(Ordering::Relaxed),
            self.inserts.load(Ordering::Relaxed),
            self.updates.load(Ordering::Relaxed),
            self.deletes.load(Ordering::Relaxed),
        ]
    }
}

/// Counts decoded changes instead of printing them.
struct CountingSink(Arc<Counts>);

impl TailSink for CountingSink {
    fn message(
        &mut self,
        _lsn: Lsn,
        message: &PgOutputMessage,
        _relations: &RelationCache,
    ) -> Result<(), TailError> {
        let c = &self.0;
        let counter = match message {
            PgOutputMessage::Insert(i) => {
                add_bytes(c, &i.new);
                &c.inserts
            }
            PgOutputMessage::Update(u) => {
                add_bytes(c, &u.new);
                &c.updates
            }
            PgOutputMessage::Delete(_) => &c.deletes,
            PgOutputMessage::Commit(commit) => {
                c.end_lsn.store(commit.end_lsn.0, Ordering::Relaxed);
                &c.transactions
            }
            _ => return Ok(()),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn add_bytes(c: &Counts, tuple: &blueshift_decoder::pgoutput::TupleData) {
    let n: usize = tuple
        .columns
        .iter()
        .filter_map(|v| v.bytes().map(|b| b.len()))
        .sum();
    c.bytes
        .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let bins = match (&args.pg_bin, args.pg_major) {
        (Some(dir), _) => PgBinaries::at(dir)?,
        (None, Some(major)) => PgBinaries::major(major)?,
        (None, None) => PgBinaries::from_env()?,
    };
    say(&format!(
        "starting a throwaway blue cluster (PostgreSQL {})",
        bins.version()
    ));
    let blue =
        tokio::task::spawn_blocking(move || Cluster::start(ClusterOptions::new(bins).name("blue")))
            .await
            .context("cluster start task")??;
    blue.create_database("demo")?;
    blue.psql("demo", SCHEMA)?;
    say(&format!(
        "blue is up at {}; 1000 accounts, publication demo_pub",
        blue.uri("demo")
    ));

    let source = ConnectConfig::from_conninfo_with_env(&blue.uri("demo"), |_| None)?;
    let decoded = Arc::new(Counts::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let tail_task = {
        let options = TailOptions {
            source,
            publications: vec!["demo_pub".into()],
            slot: SlotChoice::Temporary,
            from: None,
            until: None,
            binary: false,
            messages: true,
            streaming: true,
            proto_version: None,
            status_interval: Duration::from_secs(1),
        };
        let decoded = Arc::clone(&decoded);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut sink = CountingSink(decoded);
            tail::tail(options, &mut sink, stop.notified()).await
        })
    };

    // The workload: transfers between random accounts, now and then a clean-up delete.
    let written = Arc::new(Counts::default());
    let writing = Arc::new(AtomicBool::new(true));
    let client = blue.connect("demo").await?;
    // Wait until the temporary slot exists, so the workload's first transaction is decoded.
    blueshift_tests::eventually_async(Duration::from_secs(30), || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE active",
                &[],
            )
            .await?;
        anyhow::ensure!(row.get::<_, i64>(0) == 1, "replication has not started yet");
        Ok(())
    })
    .await?;
    let workload = {
        let written = Arc::clone(&written);
        let writing = Arc::clone(&writing);
        let client = blue.connect("demo").await?;
        tokio::spawn(async move { workload(client, &written, &writing).await })
    };

    say(&format!(
        "writing to blue for {} s; blueshift decodes its WAL live:",
        args.duration
    ));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut last_bytes = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let current: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        let current: Lsn = current.parse()?;
        let lag = current.bytes_since(Lsn(decoded.end_lsn.load(Ordering::Relaxed)));
        let bytes = decoded.bytes.load(Ordering::Relaxed);
        let [wt, ..] = written.get();
        let [dt, di, du, dd] = decoded.get();
        say(&format!(
            "{:>4.0}s  blue committed {wt:>7} txn  |  decoded {dt:>7} txn: {di} inserts, {du} updates, {dd} deletes, {:.1} MB/s of values  |  lag {}",
            started.elapsed().as_secs_f64(),
            (bytes - last_bytes) as f64 / 1e6,
            human_bytes(lag),
        ));
        last_bytes = bytes;
    }
    writing.store(false, Ordering::Relaxed);
    workload.await.context("workload task")??;
    let final_lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let final_lsn: Lsn = final_lsn.parse()?;
    say(&format!(
        "writes stopped at {final_lsn}; waiting for blueshift to decode the rest"
    ));
    blueshift_tests::eventually_async(Duration::from_secs(60), || async {
        let at = Lsn(decoded.end_lsn.load(Ordering::Relaxed));
        anyhow::ensure!(
            decoded.get()[0] >= written.get()[0],
            "decoded up to {at}, blue is at {final_lsn}"
        );
        Ok(())
    })
    .await?;
    stop.notify_one();
    let summary = tail_task.await.context("tail task")??;

    let w = written.get();
    let d = decoded.get();
    say(&format!(
        "blue committed {} transactions: {} inserts, {} updates, {} deletes",
        w[0], w[1], w[2], w[3]
    ));
    say(&format!(
        "blueshift decoded {} transactions: {} inserts, {} updates, {} deletes ({} messages, protocol v{})",
        d[0], d[1], d[2], d[3], summary.messages, summary.proto_version
    ));
    anyhow::ensure!(
        w == d,
        "decoded counts differ from what blue committed — please report this as a bug"
    );
    say("every change blue committed was decoded, in commit order: ok");

    drop(client);
    if args.keep {
        let uri = blue.uri("demo");
        let stop = blue.keep();
        say(&format!(
            "blue keeps running: psql '{uri}'\n  stop and remove it with: {stop}"
        ));
    } else {
        say("removing the throwaway cluster");
    }
    Ok(())
}

async fn workload(
    client: tokio_postgres::Client,
    counts: &Counts,
    writing: &AtomicBool,
) -> anyhow::Result<()> {
    let transfer = client
        .prepare(
            "WITH f AS (UPDATE accounts SET balance = balance - $3 WHERE id = $1),
                  t AS (UPDATE accounts SET balance = balance + $3 WHERE id = $2)
             INSERT INTO transfers (from_id, to_id, amount) VALUES ($1, $2, $3)",
        )
        .await?;
    let cleanup = client
        .prepare("DELETE FROM transfers WHERE id IN (SELECT id FROM transfers ORDER BY id LIMIT 5)")
        .await?;
    let mut n: u64 = 0;
    while writing.load(Ordering::Relaxed) {
        n += 1;
        // A cheap deterministic spread of account pairs.
        let from = i32::try_from(n.wrapping_mul(7919) % 1000 + 1).unwrap_or(1);
        let to = i32::try_from(n.wrapping_mul(104_729) % 1000 + 1).unwrap_or(2);
        let to = if to == from { from % 1000 + 1 } else { to };
        let amount = i64::try_from(n % 100 + 1).unwrap_or(1);
        if n % 20 == 0 {
            let deleted = client.execute(&cleanup, &[]).await?;
            counts.deletes.fetch_add(deleted, Ordering::Relaxed);
            if deleted == 0 {
                continue;
            }
        } else {
            client.execute(&transfer, &[&from, &to, &amount]).await?;
            counts.updates.fetch_add(2, Ordering::Relaxed);
            counts.inserts.fetch_add(1, Ordering::Relaxed);
        }
        counts.transactions.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
