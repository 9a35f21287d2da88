//! `live`: TPC-B at a fixed rate (by default 80 % of blue's measured maximum; `--live-load
//! 50,80,95` runs each load in turn) for D seconds with a marker row every 100 ms; the lag of
//! each marker from blue to green.
//!
//! ```text
//!  setup: pgbench -i; blue's max rate: pgbench -T (consumers paused)
//!  per load L, per run, each side in turn: start, catch up (untimed) → pgbench -R (L × max)
//!        -T D and a marker every 100 ms → all markers on green → lag = green commit time −
//!        blue insert time → sentinel, stop, green equal to blue
//! ```
//!
//! Lag figures are per load (`lag_p99_ms_80`: p99 at 80 %); the lag plot and the process
//! figures (CPU, memory, context switches) are those of the first load.
//!
//! A marker's blue time is `clock_timestamp()` at its INSERT (an autocommit statement); its
//! green time is `clock_timestamp()` in a deferred constraint trigger on green, i.e. at the
//! commit of the transaction that applied it. Same machine, same clock.

use std::time::{Duration, Instant};

use super::{marker_lags, marker_visible, sentinel, turns, Context, Pair, PAIR_TABLES};
use crate::check::tables_equal;
use crate::consumer::{poll_until, Child};
use crate::pgbench::{self, CHANGES_PER_TRANSACTION};
use crate::process::{Since, Watch};
use crate::results::{
    quantile, Better, Figure, ScenarioResult, Series, BLUESHIFT, PROCESS_FIGURES, WORKLOAD,
};
use crate::say;

const NATIVE: &str = "native";
const MARKER_EVERY: Duration = Duration::from_millis(100);

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("live", vec![NATIVE]);
    let loads = o
        .live_loads
        .iter()
        .map(|l| format!("{l} %"))
        .collect::<Vec<_>>()
        .join(", ");
    r.workload = format!(
        "`pgbench -i -s {}`; TPC-B at {loads} of blue's maximum rate (`pgbench -c {c} -j {c} -R \
         <rate> -T {}`, the rate measured first with the consumers paused) and a marker row \
         every 100 ms",
        o.scale,
        o.duration,
        c = o.clients
    );
    r.timed = "lag of each marker: its INSERT on blue (`clock_timestamp()`) → the commit of the \
               green transaction that applied it (`clock_timestamp()` in a deferred trigger); \
               peer: native subscription"
        .to_owned();
    r.figures = Vec::new();
    for load in &o.live_loads {
        for (name, label) in LAG_FIGURES {
            r.figures.push(Figure {
                metric: format!("{name}_{load}").into(),
                label: format!("{label} at {load} % load, ms").into(),
                better: Better::Lower,
                digits: 1,
            });
        }
    }
    r.figures.extend(PROCESS_FIGURES);
    r.workload_figures = vec![
        ("max_tps".into(), "blue's max tps".into(), 0),
        ("achieved_tps".into(), "achieved tps (all loads)".into(), 0),
        ("markers".into(), "markers per run".into(), 0),
    ];
    let pair = Pair::new("live");
    match pair.setup(ctx).await {
        Err(e) => r.error = Some(format!("{e:#}")),
        Ok(()) => {
            let seconds = o.duration.min(10);
            say(format!(
                "live: blue's max TPC-B rate ({seconds} s, consumers paused)"
            ));
            match pgbench::run(ctx.blue(), &pair.blue_db, o.clients, seconds, None).await {
                Err(e) => r.error = Some(format!("measuring blue's max rate: {e:#}")),
                Ok(max) => {
                    r.sample(0, WORKLOAD, "max_tps", max.tps);
                    for (i, load) in o.live_loads.iter().enumerate() {
                        let rate = max.tps * f64::from(*load) / 100.0;
                        say(format!(
                            "live: max {:.0} tps; load {load} % at {rate:.0} tps",
                            max.tps
                        ));
                        let at = Load {
                            percent: *load,
                            rate,
                            plotted: i == 0,
                        };
                        for run in 1..=o.runs {
                            for side in turns(&[BLUESHIFT, NATIVE], run) {
                                if let Err(e) = turn(ctx, &pair, side, run, &at, &mut r).await {
                                    if side == NATIVE {
                                        let _ = pair.native.disable(ctx.blue(), ctx.green()).await;
                                    }
                                    r.fail(Some(run), Some(side), &e);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    pair.teardown(ctx).await;
    r
}

/// The lag figures of each load: metric prefix and label.
const LAG_FIGURES: [(&str, &str); 4] = [
    ("lag_p50_ms", "lag p50"),
    ("lag_p99_ms", "lag p99"),
    ("lag_p999_ms", "lag p99.9"),
    ("lag_max_ms", "lag max"),
];

/// One load of the scenario.
struct Load {
    /// Share of blue's maximum rate, in percent.
    percent: u32,
    /// The rate, transactions/s.
    rate: f64,
    /// Whether its lags go into the plot (the first load only).
    plotted: bool,
}

async fn turn(
    ctx: &Context<'_>,
    pair: &Pair,
    side: &'static str,
    run: u32,
    load: &Load,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let rate = load.rate;
    let (blue, green) = (ctx.blue(), ctx.green());
    let green_db = pair.green_db(side);
    let b = blue.connect(&pair.blue_db).await?;
    let g = green.connect(green_db).await?;

    // Start and catch up with what happened since this side last ran (untimed).
    let mut sync = pair
        .start_consumer(ctx, side, &format!("live-run{run}"))
        .await?;
    let sources = pair.watch_sources(
        pair.watchers(ctx, side).await?,
        side,
        sync.as_ref().map(Child::pid),
        Since::Now,
        Since::Now,
    );
    let mut alive = || match sync.as_mut() {
        Some(s) => s.check_running(),
        None => Ok(()),
    };
    let id = sentinel(&b).await?;
    poll_until(
        &format!("{side} catching up before the load"),
        ctx.timeout(),
        &mut alive,
        || marker_visible(&g, id),
    )
    .await?;

    say(format!(
        "live run {run}/{}: {side}, {} s at {rate:.0} tps ({} %)",
        o.runs, o.duration, load.percent
    ));
    let watch = Watch::start(sources, ctx.local());
    let started = Instant::now();
    let pgbench_load = pgbench::run(blue, &pair.blue_db, o.clients, o.duration, Some(rate));
    let markers = async {
        let mut ids = Vec::new();
        let mut tick = tokio::time::interval(MARKER_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while started.elapsed() < Duration::from_secs(u64::from(o.duration)) {
            tick.tick().await;
            ids.push(sentinel(&b).await?);
        }
        Ok::<_, anyhow::Error>(ids)
    };
    let (pgbench_load, ids) = tokio::try_join!(pgbench_load, markers)?;
    let Some(&last) = ids.last() else {
        anyhow::bail!("no marker was written");
    };
    poll_until(
        &format!("{side} applying the last marker"),
        ctx.timeout(),
        &mut alive,
        || marker_visible(&g, last),
    )
    .await?;
    let usage = watch.finish().await;

    let points = marker_lags(&g, &ids).await?;
    let lags: Vec<f64> = points.iter().map(|p| p.1).collect();

    // Everything applied, then green equal to blue.
    let id = sentinel(&b).await?;
    poll_until(
        &format!("{side} applying the sentinel"),
        ctx.timeout(),
        &mut alive,
        || marker_visible(&g, id),
    )
    .await?;
    match sync.take() {
        Some(s) => s.stop().await?,
        None => pair.native.disable(blue, green).await?,
    }
    tables_equal(blue, &pair.blue_db, green, green_db, &PAIR_TABLES).await?;

    let (p50, p99, p999, max) = (
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        quantile(&lags, 0.999),
        quantile(&lags, 1.0),
    );
    say(format!(
        "{side}: {} markers, lag p50 {p50:.1} ms, p99 {p99:.1} ms, p99.9 {p999:.1} ms, max {max:.1} ms ({:.0} tps achieved); green equals blue",
        lags.len(),
        pgbench_load.tps
    ));
    let percent = load.percent;
    for ((name, _), value) in LAG_FIGURES.iter().zip([p50, p99, p999, max]) {
        r.sample(run, side, &format!("{name}_{percent}"), value);
    }
    r.sample(run, WORKLOAD, "achieved_tps", pgbench_load.tps);
    r.sample(run, WORKLOAD, "markers", lags.len() as f64);
    if !load.plotted {
        return Ok(());
    }
    r.usage(
        run,
        side,
        &usage,
        pgbench_load.transactions as f64 * CHANGES_PER_TRANSACTION + lags.len() as f64,
    );
    r.series.push(Series {
        run,
        side: side.to_owned(),
        metric: "lag",
        x: "seconds since the first marker",
        y: "lag, ms (blue insert → green commit)",
        points,
    });
    Ok(())
}
