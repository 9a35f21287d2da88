//! `cutover`: the write pause clients see when traffic moves from blue to green through a real
//! PgBouncer, and the transactions that fail doing it (there must be none).
//!
//! ```text
//!  setup: blue's max TPC-B rate through PgBouncer (scratch database, no consumer); rate = 0.8 × max
//!  per run, each side in turn, on fresh databases (a cutover leaves blue fenced):
//!    pgbench -i on blue, pg_dump | pg_restore into green, the consumer started and caught up,
//!    PgBouncer (transaction pooling) in front of blue
//!    pgbench -R rate -T D -l through PgBouncer ──► at D/3 the switch:
//!      blueshift  `blueshift cutover` (PAUSE, blue read-only, fence marker, drain, sequences,
//!                 way back armed, entry re-pointed + RELOAD, RESUME, watch 2 s)
//!      native     the same by hand on a native subscription: PAUSE, a marker row on blue
//!                 waited for on green (the subscription caught up), sequences set by script,
//!                 entry re-pointed + RELOAD, RESUME
//!    pgbench's per-transaction log ──► failed transactions, the write pause (the longest time
//!    in which no transaction completed), the longest delay from a transaction's scheduled
//!    start to its end, p99/max latency; then every committed transaction's history row is on
//!    green
//! ```
//!
//! Runs on throwaway clusters only: PgBouncer is started by the test harness as the `postgres`
//! OS user with trust authentication towards the servers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use blueshift_tests::{DatabaseEntry, PgBouncer, PgBouncerOptions};

use super::{copy_database, turns, Context, DumpSection, MARKER_TABLE};
use crate::consumer::{self, poll_until, Child, Endpoints, Subscription};
use crate::pgbench::{self, TABLES};
use crate::results::{figure, quantile, Better, ScenarioResult, BLUESHIFT, WORKLOAD};
use crate::say;
use crate::server::{literal, query_value, Server};

const NATIVE: &str = "native";
/// The database on both servers, and PgBouncer's entry for it.
const DB: &str = "bench_cutover";
const SCRATCH: &str = "bench_cutover_max";
const PUBLICATION: &str = "bench_cutover_pub";
const SLOT: &str = "bs_cutover";
const SUBSCRIPTION: &str = "native_cutover";
/// The share of blue's measured maximum rate the load runs at.
const RATE_SHARE: f64 = 0.8;
/// The shortest load: the switch happens a third of the way in, and blueshift's watch lasts 2 s.
const MIN_SECONDS: u32 = 15;

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let seconds = o.duration.max(MIN_SECONDS);
    let mut r = ScenarioResult::new("cutover", vec![NATIVE]);
    r.workload = format!(
        "`pgbench -i -s {}`; TPC-B through PgBouncer 1.x (transaction pooling) at {:.0} % of \
         blue's maximum rate through it (`pgbench -c {c} -j {c} -R <rate> -T {seconds} -l`), \
         the switch to green {} s in; fresh databases per run and side",
        o.scale,
        RATE_SHARE * 100.0,
        seconds / 3,
        c = o.clients
    );
    r.timed = "from pgbench's per-transaction log: the write pause clients saw (the longest \
               time in which no transaction completed), the longest delay from a transaction's \
               scheduled start to its end (latency plus schedule lag), p99 and max latency, \
               failed transactions (must be 0); the switcher's own PAUSE→RESUME. blueshift: `blueshift cutover --skip-verify --watch 2` (verify is \
               its own scenario); native: a subscription and the same switch by hand (PAUSE, \
               a marker row on blue seen on green, sequences set by script, entry re-pointed, \
               RELOAD, RESUME) over one open admin-console session"
        .to_owned();
    r.figures = vec![
        figure(
            "pause_ms",
            "write pause (longest time without a commit), ms",
            Better::Lower,
            1,
        ),
        figure(
            "delay_max_ms",
            "longest delay from schedule, ms",
            Better::Lower,
            1,
        ),
        figure(
            "switch_ms",
            "PAUSE to RESUME (switcher's clock), ms",
            Better::Lower,
            1,
        ),
        figure("latency_p99_ms", "latency p99, ms", Better::Lower, 1),
        figure("latency_max_ms", "latency max, ms", Better::Lower, 1),
        figure("failed", "failed transactions", Better::Lower, 0),
    ];
    r.workload_figures = vec![
        (
            "max_tps".into(),
            "blue's max tps through PgBouncer".into(),
            0,
        ),
        ("rate".into(), "target rate, tps".into(), 0),
        (
            "committed".into(),
            "committed transactions per run".into(),
            0,
        ),
    ];
    r.notes.push(
        "every committed transaction is checked on green (one pgbench_history row each) before \
         the run yields a figure; blueshift's pause includes its fence (blue read-only, a \
         marker in blue's WAL) and arming the way back (green's slot), which the native \
         switch does not do"
            .to_owned(),
    );
    if !(ctx.blue().is_throwaway() && ctx.green().is_throwaway()) {
        r.error = Some(
            "the cutover scenario runs on throwaway clusters only (PgBouncer is started by the \
             harness with trust authentication towards the servers): leave out --source/--target"
                .to_owned(),
        );
        return r;
    }
    match max_rate(ctx).await {
        Err(e) => r.error = Some(format!("measuring blue's max rate: {e:#}")),
        Ok(max) => {
            let rate = max * RATE_SHARE;
            say(format!("cutover: max {max:.0} tps; load at {rate:.0} tps"));
            r.sample(0, WORKLOAD, "max_tps", max);
            r.sample(0, WORKLOAD, "rate", rate);
            for run in 1..=o.runs {
                for side in turns(&[BLUESHIFT, NATIVE], run) {
                    let result = turn(ctx, side, run, rate, seconds).await;
                    teardown(ctx).await;
                    match result {
                        Ok(m) => {
                            say(format!(
                                "cutover {side}: pause {:.1} ms (switch {:.1} ms), longest delay \
                                 {:.1} ms, p99 {:.1} ms, \
                                 {} committed, {} failed",
                                m.pause_ms,
                                m.switch_ms,
                                m.delay_ms,
                                m.p99_ms,
                                m.committed,
                                m.failed
                            ));
                            r.sample(run, side, "pause_ms", m.pause_ms);
                            r.sample(run, side, "delay_max_ms", m.delay_ms);
                            r.sample(run, side, "switch_ms", m.switch_ms);
                            r.sample(run, side, "latency_p99_ms", m.p99_ms);
                            r.sample(run, side, "latency_max_ms", m.max_ms);
                            r.sample(run, side, "failed", m.failed as f64);
                            if side == BLUESHIFT {
                                r.sample(run, WORKLOAD, "committed", m.committed as f64);
                            }
                        }
                        Err(e) => r.fail(Some(run), Some(side), &e),
                    }
                }
            }
        }
    }
    teardown(ctx).await;
    r
}

/// What one side's run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    pause_ms: f64,
    delay_ms: f64,
    switch_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    committed: u64,
    failed: u64,
}

/// PgBouncer with the entry [`DB`] (or `db`) pointing at `server`'s database.
fn bouncer_in_front_of(server: &Server, name: &str, db: &str) -> anyhow::Result<PgBouncer> {
    let cluster = server
        .throwaway()
        .context("PgBouncer needs a throwaway cluster")?;
    let mut options = PgBouncerOptions::new()
        .name(&format!("bench-{name}"))
        .database(DatabaseEntry::on(db, cluster, db));
    if cluster.superuser() != "postgres" {
        options = options.user(cluster.superuser());
    }
    PgBouncer::start(options)
}

/// Blue's TPC-B rate through PgBouncer at full speed, on a scratch database.
async fn max_rate(ctx: &Context<'_>) -> anyhow::Result<f64> {
    let o = ctx.options;
    let blue = ctx.blue();
    blue.recreate_database(SCRATCH).await?;
    pgbench::init(blue, SCRATCH, o.scale).await?;
    blue.execute(SCRATCH, "VACUUM ANALYZE").await?;
    let bouncer = bouncer_in_front_of(blue, "max", SCRATCH)?;
    let seconds = o.duration.clamp(2, 10);
    say(format!(
        "cutover: blue's max TPC-B rate through PgBouncer ({seconds} s)"
    ));
    let run = Load::start(ctx, blue, &bouncer, SCRATCH, "max", None, seconds)?
        .finish()
        .await?;
    drop(bouncer);
    let _ = blue.drop_database(SCRATCH).await;
    ensure!(
        run.failed == 0 && run.committed > 0,
        "the max-rate run failed: {run:?}"
    );
    Ok(run.committed as f64 / f64::from(seconds))
}

/// Blue and green databases for one side, equal, published, the consumer streaming.
async fn setup(ctx: &Context<'_>, side: &str, run: u32) -> anyhow::Result<Option<Child>> {
    let o = ctx.options;
    let (blue, green) = (ctx.blue(), ctx.green());
    teardown(ctx).await;
    blue.recreate_database(DB).await?;
    say(format!("pgbench -i -s {} on blue/{DB} ({side})", o.scale));
    pgbench::init(blue, DB, o.scale).await?;
    blue.execute(DB, MARKER_TABLE).await?;
    let mut published: Vec<&str> = TABLES.to_vec();
    published.push("bench_marker");
    blue.execute(
        DB,
        &format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {}",
            published.join(", ")
        ),
    )
    .await?;
    copy_database(ctx, DB, DB, DumpSection::All).await?;
    for s in [blue, green] {
        s.execute(DB, "VACUUM ANALYZE").await?;
    }
    blue.execute(DB, "CHECKPOINT").await?;
    let ends = ends(ctx);
    if side == BLUESHIFT {
        let mut sync = consumer::start_sync(
            ctx.blueshift,
            &ends,
            PUBLICATION,
            SLOT,
            o.workers,
            ctx.logs,
            &format!("cutover-run{run}-sync"),
        )?;
        let log = ctx.logs.join(format!("cutover-run{run}-sync.log"));
        let client = blue.connect(DB).await?;
        let sql = format!(
            "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = {} AND active",
            literal(SLOT)
        );
        poll_until(
            "blueshift sync streaming",
            Duration::from_secs(120),
            || sync.check_running(),
            || async {
                let started = std::fs::read_to_string(&log)
                    .map(|text| text.contains("sync started"))
                    .unwrap_or(false);
                Ok(started && query_value(&client, &sql).await? == "1")
            },
        )
        .await?;
        Ok(Some(sync))
    } else {
        let sub = subscription();
        sub.create(blue, green, PUBLICATION, false, true).await?;
        Ok(None)
    }
}

fn ends<'a>(ctx: &'a Context<'_>) -> Endpoints<'a> {
    Endpoints {
        blue: ctx.blue(),
        blue_db: DB,
        green: ctx.green(),
        green_db: DB,
    }
}

fn subscription() -> Subscription {
    Subscription {
        name: SUBSCRIPTION.to_owned(),
        slot: SUBSCRIPTION.to_owned(),
        green_db: DB.to_owned(),
        blue_db: DB.to_owned(),
    }
}

/// Best effort: the subscription, blueshift's origins on both servers (forward on green, the
/// way back on blue), both databases (their slots go with them).
async fn teardown(ctx: &Context<'_>) {
    let (blue, green) = (ctx.blue(), ctx.green());
    let _ = subscription().drop(blue, green).await;
    let _ = consumer::drop_origins(green, green.maintenance_db(), SLOT).await;
    let _ = consumer::drop_origins(blue, blue.maintenance_db(), SLOT).await;
    let _ = green.drop_database(DB).await;
    let _ = blue.drop_database(DB).await;
}

/// A marker row on blue, waited for on green: whatever committed on blue before it is there.
async fn caught_up(
    ctx: &Context<'_>,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let b = ctx.blue().connect(DB).await?;
    let g = ctx.green().connect(DB).await?;
    let id = super::sentinel(&b).await?;
    poll_until(
        "green caught up with blue's marker",
        ctx.timeout(),
        &mut alive,
        || super::marker_visible(&g, id),
    )
    .await?;
    Ok(())
}

async fn turn(
    ctx: &Context<'_>,
    side: &'static str,
    run: u32,
    rate: f64,
    seconds: u32,
) -> anyhow::Result<Measured> {
    let mut sync = setup(ctx, side, run).await?;
    caught_up(ctx, || sync.as_mut().map_or(Ok(()), Child::check_running)).await?;
    let bouncer = bouncer_in_front_of(ctx.blue(), side, DB)?;
    let load = Load::start(
        ctx,
        ctx.blue(),
        &bouncer,
        DB,
        &format!("run{run}-{side}"),
        Some(rate),
        seconds,
    )?;
    tokio::time::sleep(Duration::from_secs(u64::from(seconds / 3))).await;
    say(format!("cutover {side}: switching to green"));
    let switched = match side {
        BLUESHIFT => blueshift_cutover(ctx, &bouncer, run).await,
        _ => native_cutover(ctx, &bouncer).await,
    };
    // The load runs to its end either way (a client waiting in PgBouncer's PAUSE, or failing,
    // is what is measured).
    let result = load.finish().await;
    let switch_ms = switched?;
    let result = result?;
    ensure!(
        result.committed > 0,
        "pgbench committed nothing: {result:?}"
    );
    // Every committed transaction is on green: one history row each (pgbench -i leaves the
    // table empty).
    if let Some(s) = sync.as_mut() {
        s.check_running()?;
    }
    let on_green: u64 = ctx
        .green()
        .value(DB, "SELECT count(*) FROM public.pgbench_history")
        .await?
        .parse()?;
    ensure!(
        on_green == result.committed,
        "{side}: green holds {on_green} history rows for {} committed transactions",
        result.committed
    );
    if let Some(s) = sync {
        s.stop().await?;
    }
    drop(bouncer);
    Ok(Measured {
        pause_ms: result.gap_ms,
        delay_ms: result.max_delay_ms,
        switch_ms,
        p99_ms: result.p99_ms,
        max_ms: result.max_ms,
        committed: result.committed,
        failed: result.failed,
    })
}

/// `blueshift cutover` through `bouncer`; the pause it measured, PAUSE to RESUME, in ms.
async fn blueshift_cutover(
    ctx: &Context<'_>,
    bouncer: &PgBouncer,
    run: u32,
) -> anyhow::Result<f64> {
    let uri = bouncer.uri(DB);
    let file = bouncer.databases_file();
    let file = file.to_str().context("PgBouncer's folder is not UTF-8")?;
    let out = Child::start(
        ctx.blueshift,
        &[
            "cutover",
            "--publication",
            PUBLICATION,
            "--slot",
            SLOT,
            "--pgbouncer",
            &uri,
            "--pgbouncer-file",
            file,
            "--skip-verify",
            "--watch",
            "2",
            // The load may keep the sync a few seconds behind on a shared machine: the drain
            // then takes that long, and the pause shows it.
            "--max-lag",
            "30",
        ],
        &ends(ctx),
        true,
        ctx.logs,
        &format!("cutover-run{run}-cutover"),
    )?
    .wait(ctx.timeout())
    .await?;
    ensure!(
        out.contains("cutover: cut-over"),
        "blueshift cutover did not cut over:\n{out}"
    );
    out.lines()
        .find_map(|l| l.trim().strip_prefix("write pause (PAUSE to RESUME): "))
        .and_then(|v| v.trim_end_matches(" ms").parse::<f64>().ok())
        .with_context(|| format!("no write pause in blueshift cutover's report:\n{out}"))
}

/// The same switch by hand on native replication, over one open admin-console session; its
/// PAUSE to RESUME in ms.
async fn native_cutover(ctx: &Context<'_>, bouncer: &PgBouncer) -> anyhow::Result<f64> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(bouncer.host())
        .port(bouncer.port())
        .user("postgres")
        .dbname("pgbouncer")
        .connect_timeout(Duration::from_secs(10));
    let (admin, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("PgBouncer's admin console")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let (blue, green) = (
        ctx.blue().connect(DB).await?,
        ctx.green().connect(DB).await?,
    );
    let green_cluster = ctx.green().throwaway().context("a throwaway green")?;
    let started = Instant::now();
    admin.simple_query(&format!("PAUSE {DB}")).await?;
    let switched = async {
        // The subscription caught up: a marker committed on blue now is applied on green.
        let id = super::sentinel(&blue).await?;
        poll_until(
            "the subscription caught up",
            Duration::from_secs(60),
            || Ok(()),
            || super::marker_visible(&green, id),
        )
        .await?;
        // Sequences by script: each of blue's set on green.
        for row in blue
            .query(
                "SELECT pg_catalog.format('%I.%I', schemaname, sequencename), last_value \
                   FROM pg_catalog.pg_sequences WHERE last_value IS NOT NULL",
                &[],
            )
            .await?
        {
            let (name, value): (String, i64) = (row.get(0), row.get(1));
            green
                .execute(
                    "SELECT pg_catalog.setval($1::text::pg_catalog.regclass, $2)",
                    &[&name, &value],
                )
                .await?;
        }
        let entry = DatabaseEntry::on(DB, green_cluster, DB);
        std::fs::write(bouncer.databases_file(), format!("{}\n", entry.line()))
            .context("rewriting PgBouncer's entry")?;
        admin.simple_query("RELOAD").await?;
        anyhow::Ok(())
    }
    .await;
    // RESUME whatever happened: clients must not stay paused.
    let resumed = admin.simple_query(&format!("RESUME {DB}")).await;
    let took = started.elapsed();
    switched?;
    resumed?;
    Ok(took.as_secs_f64() * 1000.0)
}

/// pgbench through PgBouncer with a per-transaction log.
struct Load {
    child: tokio::process::Child,
    dir: PathBuf,
    prefix: PathBuf,
    seconds: u32,
}

/// What pgbench's log says.
#[derive(Debug, Clone, Copy)]
struct LoadResult {
    committed: u64,
    failed: u64,
    max_ms: f64,
    p99_ms: f64,
    /// The longest scheduled start → end (latency plus schedule lag), ms.
    max_delay_ms: f64,
    /// The longest time between two consecutive transaction ends, any client, ms.
    gap_ms: f64,
}

impl Load {
    fn start(
        ctx: &Context<'_>,
        server: &Server,
        bouncer: &PgBouncer,
        db: &str,
        name: &str,
        rate: Option<f64>,
        seconds: u32,
    ) -> anyhow::Result<Load> {
        let o = ctx.options;
        let dir = ctx.logs.join(format!("cutover-pgbench-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let prefix = dir.join("tx");
        let c = o.clients.to_string();
        let t = seconds.to_string();
        let mut cmd = tokio::process::Command::from(server.command("pgbench"));
        cmd.env("PGHOST", bouncer.host())
            .env("PGPORT", bouncer.port().to_string())
            .args(["-n", "-c", &c, "-j", &c, "-T", &t, "-l", "--log-prefix"])
            .arg(&prefix);
        if let Some(r) = rate {
            cmd.args(["-R", &format!("{:.0}", r.max(1.0))]);
        }
        cmd.arg(db)
            .current_dir(&dir)
            .stdout(std::fs::File::create(dir.join("pgbench.out"))?)
            .stderr(std::fs::File::create(dir.join("pgbench.err"))?)
            .kill_on_drop(true);
        let child = cmd.spawn().context("could not run pgbench")?;
        Ok(Load {
            child,
            dir,
            prefix,
            seconds,
        })
    }

    async fn finish(mut self) -> anyhow::Result<LoadResult> {
        let limit = Duration::from_secs(u64::from(self.seconds) + 120);
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(s) => s?,
            Err(_) => bail!("pgbench did not end within {} s", limit.as_secs()),
        };
        let out = std::fs::read_to_string(self.dir.join("pgbench.out")).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.join("pgbench.err")).unwrap_or_default();
        let mut result = read_log(&self.prefix)?;
        // A client pgbench aborted (an error it does not retry) fails every transaction it had
        // left: count it as one at least.
        let aborted = err.lines().filter(|l| l.contains("aborted")).count() as u64;
        let summary = out
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        result.failed = result.failed.max(summary) + aborted;
        if !status.success() && result.failed == 0 {
            result.failed = 1;
        }
        if result.failed > 0 {
            say(format!(
                "pgbench reported failures ({status}):\n{}",
                crate::server::tail(&format!("{out}\n{err}"), 20)
            ));
        }
        Ok(result)
    }
}

/// The logs `<prefix>.<pid>[.<thread>]`: `client_id transaction_no time script_no time_epoch
/// time_us [schedule_lag]`, time in µs, or `failed`/`skipped`.
fn read_log(prefix: &Path) -> anyhow::Result<LoadResult> {
    let dir = prefix.parent().context("a folder")?;
    let stem = prefix
        .file_name()
        .context("a name")?
        .to_string_lossy()
        .into_owned();
    let mut latencies = Vec::new();
    // When each transaction ended, µs since the epoch.
    let mut ends: Vec<u64> = Vec::new();
    let (mut failed, mut max_delay) = (0u64, 0f64);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{stem}.")) {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())?.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(time) = fields.get(2) else { continue };
            match time.parse::<f64>() {
                Ok(us) => {
                    let lag = fields
                        .get(6)
                        .and_then(|l| l.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    latencies.push(us / 1000.0);
                    max_delay = max_delay.max((us + lag) / 1000.0);
                    let end = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
                    if let (Some(s), Some(us)) = (end(4), end(5)) {
                        ends.push(s.saturating_mul(1_000_000).saturating_add(us));
                    }
                }
                Err(_) if *time == "skipped" => {}
                Err(_) => failed += 1,
            }
        }
    }
    let max_ms = latencies.iter().copied().fold(0.0, f64::max);
    ends.sort_unstable();
    let gap_us = ends.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Ok(LoadResult {
        committed: latencies.len() as u64,
        failed,
        max_ms,
        p99_ms: quantile(&latencies, 0.99),
        max_delay_ms: max_delay,
        gap_ms: gap_us as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gives_the_pause_the_delay_and_the_failures() {
        let dir = tempfile_dir();
        let prefix = dir.join("tx");
        // client tx latency_us script epoch_s epoch_us schedule_lag_us
        std::fs::write(
            dir.join("tx.100"),
            "0 0 1000 0 1700000000 100000 50\n\
             0 1 2000 0 1700000000 300000 10\n\
             0 2 failed 0 1700000001 0 0\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("tx.100.1"),
            "1 0 500000 0 1700000000 900000 400000\n\
             1 1 skipped 0 1700000001 0 0\n",
        )
        .unwrap();
        std::fs::write(dir.join("other.log"), "0 0 99999999 0 1 1 1\n").unwrap();
        let r = read_log(&prefix).unwrap();
        assert_eq!(r.committed, 3);
        assert_eq!(r.failed, 1);
        assert!((r.max_ms - 500.0).abs() < 1e-9, "{r:?}");
        // 500 ms of latency after 400 ms behind schedule.
        assert!((r.max_delay_ms - 900.0).abs() < 1e-9, "{r:?}");
        // Ends at .1, .3 and .9 s: the longest time without a commit is 600 ms.
        assert!((r.gap_ms - 600.0).abs() < 1e-9, "{r:?}");
        assert!((r.p99_ms - 500.0).abs() < 1e-9, "{r:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "blueshift-bench-cutover-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
