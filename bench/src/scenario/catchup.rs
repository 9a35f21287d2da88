//! `catchup`: a consumer paused during D seconds of TPC-B on blue, then resumed and timed until
//! green has everything blue committed, durably.
//!
//! ```text
//!  per run: both consumers paused → pgbench -T D on blue → sentinel marker, end LSN
//!           → each side alone (order alternates): start → sentinel visible on green and
//!             green's WAL flushed past it (timed) → slot acknowledged ≥ end LSN → stop
//!           → green equal to blue, table by table
//! ```
//!
//! The stop condition is read on green for both sides the same way (a row, then
//! `pg_current_wal_flush_lsn()`), so neither side's feedback interval is in the figure; the
//! slot's acknowledgement is waited for too (and recorded as `acknowledged_s`).
//!
//! With `--catchup-workload`, each run replays each listed write load in turn (see
//! [`workload`](crate::workload)); figures of a load other than TPC-B carry its name
//! (`catchup_s_swap`), and the throughput plot shows TPC-B only.
//!
//! A third side, the **decode floor**, is the least any logical consumer of this backlog can
//! take: `pg_recvlogical` reading a third pgoutput slot, created before the load, to the end LSN
//! into /dev/null (the `decode` scenario's peer, same protocol version and publication). Nothing
//! is applied; blueshift within 1.1× of it means apply is no longer what limits catch-up.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::decode::{proto_version, recvlogical, Recv};
use super::{green_flushed, marker_visible, sentinel, shared_client, turns, Context, Pair};
use crate::check::tables_equal;
use crate::consumer::{self, poll_until};
use crate::pgbench;
use crate::process::{Since, Watch};
use crate::results::{Better, Figure, ScenarioResult, BLUESHIFT, PROCESS_FIGURES, WORKLOAD};
use crate::say;
use crate::server::{literal, query_value};
use crate::workload::Workload;

const NATIVE: &str = "native";
/// `pg_recvlogical` to the end LSN: the decode floor.
const FLOOR: &str = "decode_floor";
const FLOOR_SLOT: &str = "recv_catchup";
/// How often green's applied transactions are counted for the throughput plot.
const SERIES_EVERY: Duration = Duration::from_millis(250);

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("catchup", vec![NATIVE, FLOOR]);
    r.workload = format!(
        "`pgbench -i -s {}`; consumer paused; TPC-B (`pgbench -c {c} -j {c} -T {}`) on blue",
        o.scale,
        o.duration,
        c = o.clients
    );
    r.timed = "resume → the sentinel row written after the backlog visible on green and green's \
               WAL flushed past it (then the slot's acknowledgement ≥ blue's end LSN is awaited, \
               and green is compared with blue table by table); peer: native `CREATE \
               SUBSCRIPTION` disabled during the load, then enabled; decode floor: `pg_recvlogical \
               --endpos <end LSN> -f /dev/null` on a third slot holding the same backlog (its \
               time is start → exit at the end LSN)"
        .to_owned();
    r.figures = Vec::new();
    r.workload_figures = Vec::new();
    for w in &o.catchup_workloads {
        let (suffix, named) = names(*w);
        let f = |metric: &str, label: &str, better, digits| Figure {
            metric: format!("{metric}{suffix}").into(),
            label: format!("{label}{named}").into(),
            better,
            digits,
        };
        r.figures
            .push(f("catchup_s", "catch-up seconds", Better::Lower, 2));
        r.figures.push(f(
            "applied_txn_per_s",
            "applied transactions/s",
            Better::Higher,
            0,
        ));
        if *w == Workload::Tpcb {
            r.figures.extend(PROCESS_FIGURES);
        } else {
            for p in PROCESS_FIGURES
                .iter()
                .filter(|p| p.metric.starts_with("total_") || p.metric.starts_with("consumer_cpu"))
            {
                r.figures.push(f(&p.metric, &p.label, p.better, p.digits));
            }
        }
        for (metric, label, digits) in [
            ("transactions", "backlog transactions", 0),
            ("blue_tps", "pgbench tps on blue", 0),
            ("wal_mib", "backlog WAL MiB", 1),
        ] {
            r.workload_figures.push((
                format!("{metric}{suffix}").into(),
                format!("{label}{named}").into(),
                digits,
            ));
        }
    }
    let pair = Pair::new("catchup").with_workloads(&o.catchup_workloads);
    if let Err(e) = pair.setup(ctx).await {
        r.error = Some(format!("{e:#}"));
    } else {
        for run in 1..=o.runs {
            for w in &o.catchup_workloads {
                if let Err(e) = one_run(ctx, &pair, run, *w, &mut r).await {
                    r.fail(Some(run), None, &e);
                }
            }
        }
    }
    pair.teardown(ctx).await;
    r
}

/// The metric suffix and the label suffix of workload `w` (none for TPC-B).
fn names(w: Workload) -> (String, String) {
    if w == Workload::Tpcb {
        (String::new(), String::new())
    } else {
        (format!("_{}", w.name()), format!(", {} workload", w.name()))
    }
}

/// What one run left on blue for the consumers to catch up with.
struct Backlog {
    workload: Workload,
    /// The marker row written after it.
    sentinel_id: i64,
    end_lsn: String,
    transactions: u64,
}

impl Backlog {
    fn changes(&self) -> f64 {
        self.transactions as f64 * self.workload.changes_per_transaction()
    }

    fn metric(&self, name: &str) -> String {
        format!("{name}{}", names(self.workload).0)
    }
}

async fn one_run(
    ctx: &Context<'_>,
    pair: &Pair,
    run: u32,
    workload: Workload,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let blue = ctx.blue();
    let client = blue.connect(&pair.blue_db).await?;
    say(format!(
        "catchup run {run}/{}: {} backlog on blue",
        o.runs,
        workload.name()
    ));
    let script = workload.write_script(ctx.logs)?;
    // The floor's slot, before the load so that it holds the same backlog.
    let _ = consumer::drop_slot(blue, &pair.blue_db, FLOOR_SLOT).await;
    client
        .batch_execute(&format!(
            "SELECT pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput')",
            literal(FLOOR_SLOT)
        ))
        .await?;
    let start_lsn = query_value(&client, "SELECT pg_catalog.pg_current_wal_lsn()").await?;
    let load = match &script {
        None => pgbench::run(blue, &pair.blue_db, o.clients, o.duration, None).await?,
        Some(script) => {
            let rows = workload.rows(o.scale);
            pgbench::run_script(blue, &pair.blue_db, o.clients, o.duration, script, rows).await?
        }
    };
    let id = sentinel(&client).await?;
    let end_lsn = query_value(&client, "SELECT pg_catalog.pg_current_wal_lsn()").await?;
    let wal: f64 = query_value(
        &client,
        &format!("SELECT ('{end_lsn}'::pg_lsn - '{start_lsn}'::pg_lsn)::float8"),
    )
    .await?
    .parse()
    .unwrap_or(f64::NAN);
    say(format!(
        "backlog: {} transactions ({:.0} tps), {:.1} MiB of WAL",
        load.transactions,
        load.tps,
        wal / 1048576.0
    ));
    let backlog = Backlog {
        workload,
        sentinel_id: id,
        end_lsn,
        transactions: load.transactions,
    };
    r.sample(
        run,
        WORKLOAD,
        &backlog.metric("transactions"),
        load.transactions as f64,
    );
    r.sample(run, WORKLOAD, &backlog.metric("blue_tps"), load.tps);
    r.sample(run, WORKLOAD, &backlog.metric("wal_mib"), wal / 1048576.0);
    for side in turns(&[BLUESHIFT, NATIVE], run) {
        match catch_up(ctx, pair, side, run, &backlog, r).await {
            Ok(()) => {}
            Err(e) => {
                // Leave the side paused for the next run.
                if side == NATIVE {
                    let _ = pair.native.disable(blue, ctx.green()).await;
                }
                r.fail(Some(run), Some(side), &e);
            }
        }
    }
    let floor = decode_floor(ctx, pair, &backlog, run, r).await;
    let _ = consumer::drop_slot(blue, &pair.blue_db, FLOOR_SLOT).await;
    if let Err(e) = floor {
        r.fail(Some(run), Some(FLOOR), &e);
    }
    Ok(())
}

/// `pg_recvlogical` reads the backlog from the floor's slot to `end_lsn`, timed.
async fn decode_floor(
    ctx: &Context<'_>,
    pair: &Pair,
    backlog: &Backlog,
    run: u32,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let (end_lsn, transactions) = (backlog.end_lsn.as_str(), backlog.transactions);
    let blue = ctx.blue();
    let stream = Recv {
        db: &pair.blue_db,
        slot: FLOOR_SLOT,
        publication: &pair.publication,
        proto: proto_version(blue, &pair.blue_db).await?,
    };
    let watch_client = shared_client(blue, &pair.blue_db).await?;
    let started = Instant::now();
    let (elapsed, usage) = recvlogical(ctx, blue, &stream, end_lsn, watch_client, started).await?;
    let secs = elapsed.as_secs_f64();
    say(format!(
        "decode floor: pg_recvlogical read the backlog in {secs:.2} s ({:.0} txn/s)",
        transactions as f64 / secs
    ));
    r.sample(run, FLOOR, &backlog.metric("catchup_s"), secs);
    r.sample(
        run,
        FLOOR,
        &backlog.metric("applied_txn_per_s"),
        transactions as f64 / secs,
    );
    r.usage_as(
        run,
        FLOOR,
        &usage,
        backlog.changes(),
        &names(backlog.workload).0,
    );
    Ok(())
}

async fn catch_up(
    ctx: &Context<'_>,
    pair: &Pair,
    side: &'static str,
    run: u32,
    backlog: &Backlog,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let (sentinel_id, end_lsn, transactions) = (
        backlog.sentinel_id,
        backlog.end_lsn.as_str(),
        backlog.transactions,
    );
    let (blue, green) = (ctx.blue(), ctx.green());
    let green_db = pair.green_db(side);
    let g = green.connect(green_db).await?;
    let watchers = pair.watchers(ctx, side).await?;
    let (stop_series, series) = throughput_series(green.connect(green_db).await?);

    let started = Instant::now();
    let mut sync = pair
        // One log per workload and run (the workloads of a run would overwrite each other's).
        .start_consumer(
            ctx,
            side,
            &format!("catchup-{}-run{run}", backlog.workload.name()),
        )
        .await?;
    let pid = sync.as_ref().map(consumer::Child::pid);
    let sources = pair.watch_sources(watchers, side, pid, Since::Start, Since::Start);
    let watch = Watch::start(sources, ctx.local());
    let result = async {
        poll_until(
            &format!("{side} catching up"),
            ctx.timeout(),
            || match sync.as_mut() {
                Some(s) => s.check_running(),
                None => Ok(()),
            },
            || marker_visible(&g, sentinel_id),
        )
        .await?;
        green_flushed(&g).await?;
        Ok::<_, anyhow::Error>(started.elapsed())
    }
    .await;
    let usage = watch.finish().await;
    let _ = stop_series.send(true);
    let points = series.await.unwrap_or_default();
    let elapsed = result?;
    // The slot's acknowledgement (what lets blue release its WAL), untimed for the figure.
    let b = blue.connect(&pair.blue_db).await?;
    let slot = if side == BLUESHIFT {
        &pair.bs_slot
    } else {
        &pair.native.slot
    };
    let ack_sql = format!(
        "SELECT coalesce(confirmed_flush_lsn >= '{end_lsn}'::pg_lsn, false) \
         FROM pg_catalog.pg_replication_slots WHERE slot_name = '{slot}'"
    );
    poll_until(
        &format!("{side}'s slot acknowledging the backlog"),
        Duration::from_secs(120),
        || Ok(()),
        || async { Ok(query_value(&b, &ack_sql).await? == "t") },
    )
    .await?;
    let acknowledged = started.elapsed();
    match sync.take() {
        Some(s) => s.stop().await?,
        None => pair.native.disable(blue, green).await?,
    }
    tables_equal(blue, &pair.blue_db, green, green_db, &pair.tables()).await?;
    let secs = elapsed.as_secs_f64();
    say(format!(
        "{side} caught up in {secs:.2} s ({:.0} txn/s), acknowledged after {:.2} s; green equals blue",
        transactions as f64 / secs,
        acknowledged.as_secs_f64()
    ));
    r.sample(run, side, &backlog.metric("catchup_s"), secs);
    r.sample(
        run,
        side,
        &backlog.metric("applied_txn_per_s"),
        transactions as f64 / secs,
    );
    r.sample(
        run,
        side,
        &backlog.metric("acknowledged_s"),
        acknowledged.as_secs_f64(),
    );
    r.usage_as(
        run,
        side,
        &usage,
        backlog.changes(),
        &names(backlog.workload).0,
    );
    if backlog.workload != Workload::Tpcb {
        return Ok(());
    }
    r.series.push(crate::results::Series {
        run,
        side: side.to_owned(),
        metric: "throughput",
        x: "seconds since the consumer was resumed",
        y: "applied transactions/s (green's pgbench_history rows)",
        points,
    });
    Ok(())
}

/// Counts green's `pgbench_history` rows (one per TPC-B transaction) every [`SERIES_EVERY`]
/// until told to stop; the points are (seconds, transactions/s over the interval).
fn throughput_series(
    green: tokio_postgres::Client,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Vec<(f64, f64)>>,
) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut points = vec![(0.0, 0.0)];
        let Some(mut last) = history_rows(&green).await else {
            return points;
        };
        let mut last_t = 0.0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SERIES_EVERY) => {}
                _ = stopped.changed() => break,
            }
            let Some(n) = history_rows(&green).await else {
                break;
            };
            let t = started.elapsed().as_secs_f64();
            points.push((t, (n - last) / (t - last_t)));
            last = n;
            last_t = t;
        }
        points
    });
    (stop, task)
}

async fn history_rows(green: &tokio_postgres::Client) -> Option<f64> {
    query_value(green, "SELECT count(*) FROM public.pgbench_history")
        .await
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
}
