//! The catch-up benchmark of issue 3: applied transactions per second on a pgbench TPC-B
//! backlog, `blueshift sync` next to native `CREATE SUBSCRIPTION`, on the same two clusters.
//!
//! ```text
//!  blue (pgbench -i, publication bench_pub)
//!   ├── slot bs_bench      ──► blueshift sync ──► green/bs
//!   └── slot native_bench  ──► native_sub     ──► green/native
//!
//!  per run: both consumers paused → pgbench TPC-B for D seconds → end LSN on blue
//!           → each consumer catches up alone (the order alternates between runs), timed
//!             until its slot's confirmed_flush_lsn ≥ end LSN → green == blue, checked
//! ```
//!
//! `cargo build --release -p blueshift && cargo run --release -p blueshift-bench --bin catchup
//! -- --scale 10 --duration 30 --clients 4 --workers 4 --runs 3`. The Markdown report goes to
//! stdout, progress to stderr; any check failure exits non-zero.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use blueshift_tests::{eventually, Cluster, ClusterOptions, PgBinaries};
use clap::Parser;

const BLUE_DB: &str = "bench";
const BS_DB: &str = "bs";
const NATIVE_DB: &str = "native";
const PUBLICATION: &str = "bench_pub";
const BS_SLOT: &str = "bs_bench";
const NATIVE_SLOT: &str = "native_bench";
const NATIVE_SUB: &str = "native_sub";
const TABLES: &[&str] = &[
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];
const POLL: Duration = Duration::from_millis(50);

/// Catch-up of a pgbench TPC-B backlog: blueshift sync against native logical replication.
#[derive(Debug, Parser)]
struct Args {
    /// pgbench scale factor (100 000 accounts each).
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Seconds of TPC-B on blue per run (the backlog).
    #[arg(long, default_value_t = 10)]
    duration: u32,
    /// pgbench clients (and threads).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// blueshift appliers (`blueshift sync --workers`).
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Backlog + catch-up runs; medians are reported.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// PostgreSQL major of both clusters [default: PG_BIN, else pg_config].
    #[arg(long)]
    pg_major: Option<u32>,
    /// The blueshift binary [default: target/release/blueshift of this workspace].
    #[arg(long, env = "BLUESHIFT_BIN")]
    blueshift: Option<PathBuf>,
    /// Folder for the clusters' data and the logs; on disk, not tmpfs
    /// [default: target/bench-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds between blueshift's standby status updates (its slot position is what is timed).
    #[arg(long, default_value_t = 1)]
    status_interval: u32,
    /// Leave fsync off, as the test harness does (faster, not a production setting).
    #[arg(long)]
    no_fsync: bool,
    /// Catch-up longer than this fails the run.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

/// One consumer's catch-up of one backlog.
#[derive(Debug, Clone, Copy)]
struct CatchUp {
    seconds: f64,
    /// The machine's 1-minute load average when it ended (other work on the machine skews the
    /// figures; this shows how much there was).
    load: f64,
}

/// One backlog and both catch-ups.
#[derive(Debug, Clone, Copy)]
struct Run {
    transactions: u64,
    tps: f64,
    wal_bytes: u64,
    blueshift: CatchUp,
    native: CatchUp,
}

impl Run {
    fn rate(&self, c: CatchUp) -> f64 {
        self.transactions as f64 / c.seconds
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(bench(&args)) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("catchup: FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the workspace")
        .to_owned()
}

fn say(text: impl AsRef<str>) {
    eprintln!("[catchup {}] {}", clock(), text.as_ref());
}

fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

async fn bench(args: &Args) -> anyhow::Result<String> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    let bins = match args.pg_major {
        Some(m) => PgBinaries::major(m)?,
        None => PgBinaries::from_env()?,
    };
    let blueshift = match &args.blueshift {
        Some(p) => p.clone(),
        None => workspace().join("target/release/blueshift"),
    };
    ensure!(
        blueshift.is_file(),
        "no blueshift binary at {}: build it with `cargo build --release -p blueshift` \
         (or pass --blueshift / BLUESHIFT_BIN)",
        blueshift.display()
    );
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| workspace().join("target/bench-data"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("could not create {}", data_dir.display()))?;
    let logs = data_dir.join(format!(
        "logs-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&logs)?;
    say(format!(
        "PostgreSQL {} from {}, blueshift {}, data in {}, logs in {}",
        bins.version(),
        bins.dir().display(),
        blueshift.display(),
        data_dir.display(),
        logs.display()
    ));

    let opts = |name: &str| {
        let mut o = ClusterOptions::new(bins.clone())
            .name(name)
            .base_dir(&data_dir)
            .setting("shared_buffers", "1GB")
            .setting("max_wal_size", "4GB")
            .setting("checkpoint_timeout", "15min")
            .setting("max_worker_processes", "16")
            .setting("max_logical_replication_workers", "8")
            .setting("max_sync_workers_per_subscription", "2")
            .setting("max_connections", "100");
        if !args.no_fsync {
            o = o.setting("fsync", "on");
        }
        if bins.major_version() >= 16 {
            o = o.setting("max_parallel_apply_workers_per_subscription", "2");
        }
        o
    };
    let blue = Cluster::start(opts("bench-blue"))?;
    let green = Cluster::start(opts("bench-green"))?;
    let version = blue.psql("postgres", "SELECT version()")?;
    let settings = blue.psql(
        "postgres",
        "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) \
         FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', \
         'max_wal_size', 'wal_level', 'io_method', 'data_checksums')",
    )?;
    say(format!(
        "blue port {}, green port {}; {settings}",
        blue.port(),
        green.port()
    ));

    setup(args, &blue, &green, &blueshift, &logs).await?;

    let mut runs = Vec::new();
    for k in 0..args.runs {
        say(format!(
            "run {}/{}: TPC-B backlog on blue",
            k + 1,
            args.runs
        ));
        let start_lsn = blue.psql(BLUE_DB, "SELECT pg_current_wal_lsn()")?;
        let (transactions, tps) = pgbench_run(args, &blue)?;
        let end_lsn = blue.psql(BLUE_DB, "SELECT pg_current_wal_lsn()")?;
        let wal_bytes: u64 = blue
            .psql(
                BLUE_DB,
                &format!("SELECT ('{end_lsn}'::pg_lsn - '{start_lsn}'::pg_lsn)::bigint"),
            )?
            .parse()
            .context("WAL bytes of the backlog")?;
        say(format!(
            "backlog: {transactions} transactions ({tps:.0} tps on blue), {:.1} MiB of WAL, end LSN {end_lsn}",
            wal_bytes as f64 / 1048576.0
        ));
        let mut bs = None;
        let mut native = None;
        let blueshift_first = k % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == blueshift_first {
                let c =
                    blueshift_catch_up(args, &blue, &green, &blueshift, &logs, &end_lsn, k).await?;
                say(format!(
                    "blueshift caught up in {:.2} s: {:.0} txn/s",
                    c.seconds,
                    transactions as f64 / c.seconds
                ));
                verify(&blue, &green, BS_DB)?;
                bs = Some(c);
            } else {
                let c = native_catch_up(args, &blue, &green, &end_lsn).await?;
                say(format!(
                    "native caught up in {:.2} s: {:.0} txn/s",
                    c.seconds,
                    transactions as f64 / c.seconds
                ));
                verify(&blue, &green, NATIVE_DB)?;
                native = Some(c);
            }
        }
        runs.push(Run {
            transactions,
            tps,
            wal_bytes,
            blueshift: bs.expect("blueshift ran"),
            native: native.expect("native ran"),
        });
    }
    Ok(report(args, &bins, &version, &settings, &runs))
}

/// pgbench -i on blue; the same tables and rows in green's `bs` and `native`; the publication;
/// both consumers created and left paused.
async fn setup(
    args: &Args,
    blue: &Cluster,
    green: &Cluster,
    blueshift: &Path,
    logs: &Path,
) -> anyhow::Result<()> {
    blue.create_database(BLUE_DB)?;
    say(format!("pgbench -i -s {} on blue", args.scale));
    run_client(
        blue,
        "pgbench",
        &["-i", "-q", "-s", &args.scale.to_string(), BLUE_DB],
    )?;
    let dump = logs.join("schema_and_data.sql");
    run_client(
        blue,
        "pg_dump",
        &["--no-publications", "-f", path_str(&dump)?, BLUE_DB],
    )?;
    for db in [BS_DB, NATIVE_DB] {
        green.create_database(db)?;
        run_client(
            green,
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                path_str(&dump)?,
                db,
            ],
        )?;
        green.psql(db, "VACUUM ANALYZE")?;
    }
    std::fs::remove_file(&dump)?;
    blue.psql(
        BLUE_DB,
        &format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {}",
            TABLES.join(", ")
        ),
    )?;
    blue.psql(BLUE_DB, "CHECKPOINT")?;
    for db in [BS_DB, NATIVE_DB] {
        verify(blue, green, db)?;
    }

    // blueshift: the slot is created by a first start, which then stops; the slot keeps the
    // position.
    say("creating blueshift's slot (start, wait until streaming, SIGTERM)");
    let mut sync = Sync::start(args, blue, green, blueshift, logs, "setup")?;
    eventually(Duration::from_secs(60), || {
        ensure!(
            sync.running()?,
            "blueshift sync exited:\n{}",
            sync.log_text()
        );
        ensure!(
            slot_active(blue, BS_SLOT)?,
            "slot {BS_SLOT} is not streaming yet"
        );
        Ok(())
    })?;
    sync.terminate()?;

    // native: created disabled, with its slot.
    say("creating the native subscription (disabled)");
    green.psql(
        NATIVE_DB,
        &format!(
            "CREATE SUBSCRIPTION {NATIVE_SUB} CONNECTION '{}' PUBLICATION {PUBLICATION} \
             WITH (copy_data = false, enabled = false, create_slot = true, \
             slot_name = '{NATIVE_SLOT}', streaming = on)",
            blue_conninfo(blue)
        ),
    )?;
    Ok(())
}

fn blue_conninfo(blue: &Cluster) -> String {
    format!(
        "host={} port={} user={} dbname={BLUE_DB} application_name={NATIVE_SUB}",
        blue.host(),
        blue.port(),
        blue.superuser()
    )
}

/// `pgbench -c C -j C -T D -n`: (transactions processed, tps).
fn pgbench_run(args: &Args, blue: &Cluster) -> anyhow::Result<(u64, f64)> {
    let c = args.clients.to_string();
    let out = run_client(
        blue,
        "pgbench",
        &[
            "-n",
            "-c",
            &c,
            "-j",
            &c,
            "-T",
            &args.duration.to_string(),
            BLUE_DB,
        ],
    )?;
    let transactions = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse::<u64>().ok())
        .with_context(|| format!("no transaction count in pgbench's output:\n{out}"))?;
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{out}"))?;
    Ok((transactions, tps))
}

async fn blueshift_catch_up(
    args: &Args,
    blue: &Cluster,
    green: &Cluster,
    blueshift: &Path,
    logs: &Path,
    end_lsn: &str,
    run: u32,
) -> anyhow::Result<CatchUp> {
    let client = blue.connect(BLUE_DB).await?;
    let started = Instant::now();
    let mut sync = Sync::start(
        args,
        blue,
        green,
        blueshift,
        logs,
        &format!("run{}", run + 1),
    )?;
    let mut sync_running = true;
    let result = wait_slot(&client, BS_SLOT, end_lsn, args.timeout, || {
        sync_running = sync.running().unwrap_or(false);
        ensure!(
            sync_running,
            "blueshift sync exited:\n{}",
            tail(&sync.log_text(), 40)
        );
        Ok(())
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let stopped = sync.terminate();
    result?;
    stopped?;
    Ok(CatchUp {
        seconds,
        load: load_average(),
    })
}

async fn native_catch_up(
    args: &Args,
    blue: &Cluster,
    green: &Cluster,
    end_lsn: &str,
) -> anyhow::Result<CatchUp> {
    let client = blue.connect(BLUE_DB).await?;
    let green_client = green.connect(NATIVE_DB).await?;
    say("native subscription enabled");
    let started = Instant::now();
    green_client
        .batch_execute(&format!("ALTER SUBSCRIPTION {NATIVE_SUB} ENABLE"))
        .await?;
    let result = wait_slot(&client, NATIVE_SLOT, end_lsn, args.timeout, || Ok(())).await;
    let seconds = started.elapsed().as_secs_f64();
    green_client
        .batch_execute(&format!("ALTER SUBSCRIPTION {NATIVE_SUB} DISABLE"))
        .await?;
    result.with_context(|| format!("native apply; green's log:\n{}", tail(&green.log(), 40)))?;
    // Paused again only once its walsender is gone.
    eventually(Duration::from_secs(60), || {
        ensure!(
            !slot_active(blue, NATIVE_SLOT)?,
            "slot {NATIVE_SLOT} is still active"
        );
        Ok(())
    })?;
    Ok(CatchUp {
        seconds,
        load: load_average(),
    })
}

/// Polls every [`POLL`] until `slot`'s confirmed_flush_lsn reaches `end_lsn`; `alive` is
/// checked between polls.
async fn wait_slot(
    client: &tokio_postgres::Client,
    slot: &str,
    end_lsn: &str,
    timeout: u64,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let query = client
        .prepare(
            "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false), \
             coalesce(confirmed_flush_lsn::text, '') \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        )
        .await?;
    loop {
        let row = client.query_one(&query, &[&slot, &end_lsn]).await?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        alive()?;
        if Instant::now() > deadline {
            bail!(
                "slot {slot} at {} has not reached {end_lsn} after {timeout} s",
                row.get::<_, String>(1)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn slot_active(blue: &Cluster, slot: &str) -> anyhow::Result<bool> {
    Ok(blue.psql(
        BLUE_DB,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"),
    )? == "1")
}

/// Equal row counts and hashes of the sorted rows of every table, blue against green's `db`.
fn verify(blue: &Cluster, green: &Cluster, db: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    for table in TABLES {
        let b = fingerprint(blue, BLUE_DB, table)?;
        let g = fingerprint(green, db, table)?;
        ensure!(
            b == g,
            "green/{db} differs from blue on {table}: blue {b}, green {g} (count:md5)"
        );
    }
    say(format!(
        "verified: green/{db} equals blue on {} tables ({:.1} s)",
        TABLES.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn fingerprint(c: &Cluster, db: &str, table: &str) -> anyhow::Result<String> {
    c.psql(
        db,
        &format!(
            "SET datestyle = ISO; SET timezone = UTC; SET extra_float_digits = 3; \
             SET work_mem = '256MB'; \
             SELECT count(*) || ':' || md5(coalesce(string_agg(md5(x::text), '' ORDER BY x::text), '')) \
             FROM {table} x"
        ),
    )
}

/// A running `blueshift sync` between blue/bench and green/bs.
struct Sync {
    child: Option<Child>,
    log: PathBuf,
}

impl Sync {
    fn start(
        args: &Args,
        blue: &Cluster,
        green: &Cluster,
        blueshift: &Path,
        logs: &Path,
        name: &str,
    ) -> anyhow::Result<Sync> {
        let (source, target) = (blue.uri(BLUE_DB), green.uri(BS_DB));
        let log = logs.join(format!("sync-{name}.log"));
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        let child = Command::new(blueshift)
            .arg("sync")
            .args(["--source", &source, "--target", &target])
            .args(["--publication", PUBLICATION, "--slot", BS_SLOT])
            .args(["--workers", &args.workers.to_string()])
            .args(["--status-interval", &args.status_interval.to_string()])
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("could not start {}", blueshift.display()))?;
        say(format!(
            "blueshift sync started (pid {}, log {})",
            child.id(),
            log.display()
        ));
        Ok(Sync {
            child: Some(child),
            log,
        })
    }

    fn running(&mut self) -> anyhow::Result<bool> {
        Ok(match self.child.as_mut() {
            Some(c) => c.try_wait()?.is_none(),
            None => false,
        })
    }

    /// SIGTERM, then waits; an exit other than 0 is an error.
    fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM {} failed", child.id());
        let status = child.wait()?;
        ensure!(
            status.success(),
            "blueshift sync exited with {status} after SIGTERM:\n{}",
            tail(&self.log_text(), 40)
        );
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a client program of `cluster`'s binaries against it (as `postgres` over TCP); returns
/// stdout, or an error with stderr.
fn run_client(cluster: &Cluster, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let own = cluster.binaries().bin(program);
    let bin = if own.is_file() {
        own
    } else {
        PathBuf::from(program)
    };
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .env("PGHOST", cluster.host())
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", cluster.superuser())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .with_context(|| format!("could not run {}", bin.display()))?;
    ensure!(
        out.status.success(),
        "{program} {} on {} failed ({}): {}",
        args.join(" "),
        cluster.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64], digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.digits$}–{max:.digits$}")
}

fn report(args: &Args, bins: &PgBinaries, version: &str, settings: &str, runs: &[Run]) -> String {
    let col = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let bs_rate = col(&|r| r.rate(r.blueshift));
    let nat_rate = col(&|r| r.rate(r.native));
    let ratio_rate = col(&|r| r.rate(r.blueshift) / r.rate(r.native));
    let bs_secs = col(&|r| r.blueshift.seconds);
    let nat_secs = col(&|r| r.native.seconds);
    let ratio_secs = col(&|r| r.blueshift.seconds / r.native.seconds);
    let txns = col(&|r| r.transactions as f64);
    let tps = col(&|r| r.tps);
    let wal = col(&|r| r.wal_bytes as f64 / 1048576.0);
    let n = runs.len();
    let mut out = String::new();
    out.push_str(&format!(
        "## Catch-up of a pgbench TPC-B backlog: blueshift sync vs native subscription\n\n\
         `catchup --scale {} --duration {} --clients {} --workers {} --runs {}{}`\n\n",
        args.scale,
        args.duration,
        args.clients,
        args.workers,
        args.runs,
        if args.no_fsync { " --no-fsync" } else { "" }
    ));
    out.push_str(
        "| figure | blueshift | native | ratio (blueshift/native) | runs | spread: blueshift; native; ratio |\n\
         |---|---|---|---|---|---|\n",
    );
    out.push_str(&format!(
        "| applied txn/s (median) | {:.0} | {:.0} | {:.2} | {n} | {}; {}; {} |\n",
        median(bs_rate.clone()),
        median(nat_rate.clone()),
        median(ratio_rate.clone()),
        spread(&bs_rate, 0),
        spread(&nat_rate, 0),
        spread(&ratio_rate, 2)
    ));
    out.push_str(&format!(
        "| catch-up seconds (median) | {:.2} | {:.2} | {:.2} | {n} | {}; {}; {} |\n",
        median(bs_secs.clone()),
        median(nat_secs.clone()),
        median(ratio_secs.clone()),
        spread(&bs_secs, 2),
        spread(&nat_secs, 2),
        spread(&ratio_secs, 2)
    ));
    out.push_str(&format!(
        "| backlog: transactions (median) | {:.0} | same | | {n} | {} |\n",
        median(txns.clone()),
        spread(&txns, 0)
    ));
    out.push_str(&format!(
        "| backlog: pgbench tps on blue (median) | {:.0} | same | | {n} | {} |\n",
        median(tps.clone()),
        spread(&tps, 0)
    ));
    out.push_str(&format!(
        "| backlog: WAL MiB (median) | {:.1} | same | | {n} | {} |\n\n",
        median(wal.clone()),
        spread(&wal, 1)
    ));
    out.push_str("Per run (blueshift first in odd runs, native first in even runs):\n\n");
    out.push_str(
        "| run | transactions | blueshift s | native s | blueshift txn/s | native txn/s | ratio \
         | load avg after blueshift / native |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (i, r) in runs.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} | {:.1} / {:.1} |\n",
            i + 1,
            r.transactions,
            r.blueshift.seconds,
            r.native.seconds,
            r.rate(r.blueshift),
            r.rate(r.native),
            r.rate(r.blueshift) / r.rate(r.native),
            r.blueshift.load,
            r.native.load
        ));
    }
    out.push_str(&format!(
        "\nMachine: {} CPUs (nproc), {}; {version}; PostgreSQL {} binaries for both clusters; \
         {settings}. Every catch-up was followed by a row-for-row check (count + md5 of the \
         sorted rows of the four tables): all equal.\n",
        nproc(),
        cpu_model(),
        bins.version()
    ));
    out
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn nproc() -> String {
    Command::new("nproc")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
