//! `live`: TPC-B at a fixed rate (80 % of blue's measured maximum) for D seconds with a marker
//! row every 100 ms; the lag of each marker from blue to green.
//!
//! ```text
//!  setup: pgbench -i; blue's max rate: pgbench -T (consumers paused); rate = 0.8 × max
//!  per run, each side in turn: start, catch up (untimed) → pgbench -R rate -T D and a marker
//!        every 100 ms → all markers on green → lag = green commit time − blue insert time
//!        → sentinel, stop, green equal to blue
//! ```
//!
//! A marker's blue time is `clock_timestamp()` at its INSERT (an autocommit statement); its
//! green time is `clock_timestamp()` in a deferred constraint trigger on green, i.e. at the
//! commit of the transaction that applied it. Same machine, same clock.

use std::time::{Duration, Instant};

use super::{
    marker_lags, marker_visible, sentinel, shared_client, turns, Context, Pair, PAIR_TABLES,
};
use crate::check::tables_equal;
use crate::consumer::{self, poll_until, Child};
use crate::pgbench::{self, CHANGES_PER_TRANSACTION};
use crate::process::{Role, Since, Source, Watch};
use crate::results::{
    figure, quantile, Better, ScenarioResult, Series, BLUESHIFT, PROCESS_FIGURES, WORKLOAD,
};
use crate::say;

const NATIVE: &str = "native";
const MARKER_EVERY: Duration = Duration::from_millis(100);
/// The share of blue's measured maximum rate the load runs at.
const RATE_SHARE: f64 = 0.8;

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("live", vec![NATIVE]);
    r.workload = format!(
        "`pgbench -i -s {}`; TPC-B at {:.0} % of blue's maximum rate (`pgbench -c {c} -j {c} -R \
         <rate> -T {}`, the rate measured first with the consumers paused) and a marker row \
         every 100 ms",
        o.scale,
        RATE_SHARE * 100.0,
        o.duration,
        c = o.clients
    );
    r.timed = "lag of each marker: its INSERT on blue (`clock_timestamp()`) → the commit of the \
               green transaction that applied it (`clock_timestamp()` in a deferred trigger); \
               peer: native subscription"
        .to_owned();
    r.figures = vec![
        figure("lag_p50_ms", "lag p50, ms", Better::Lower, 1),
        figure("lag_p99_ms", "lag p99, ms", Better::Lower, 1),
        figure("lag_max_ms", "lag max, ms", Better::Lower, 1),
    ];
    r.figures.extend(PROCESS_FIGURES);
    r.workload_figures = vec![
        ("max_tps", "blue's max tps", 0),
        ("rate", "target rate, tps", 0),
        ("achieved_tps", "achieved tps", 0),
        ("markers", "markers per run", 0),
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
                    let rate = max.tps * RATE_SHARE;
                    say(format!(
                        "live: max {:.0} tps; load at {rate:.0} tps",
                        max.tps
                    ));
                    r.sample(0, WORKLOAD, "max_tps", max.tps);
                    r.sample(0, WORKLOAD, "rate", rate);
                    for run in 1..=o.runs {
                        for side in turns(&[BLUESHIFT, NATIVE], run) {
                            if let Err(e) = turn(ctx, &pair, side, run, rate, &mut r).await {
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
    pair.teardown(ctx).await;
    r
}

async fn turn(
    ctx: &Context<'_>,
    pair: &Pair,
    side: &'static str,
    run: u32,
    rate: f64,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let (blue, green) = (ctx.blue(), ctx.green());
    let green_db = pair.green_db(side);
    let b = blue.connect(&pair.blue_db).await?;
    let g = green.connect(green_db).await?;

    // Start and catch up with what happened since this side last ran (untimed).
    let mut sync: Option<Child> = None;
    let sources = if side == BLUESHIFT {
        let s = consumer::start_sync(
            ctx.blueshift,
            &pair.ends(ctx),
            &pair.publication,
            &pair.bs_slot,
            o.workers,
            ctx.logs,
            &format!("live-run{run}"),
        )?;
        let pid = s.pid();
        sync = Some(s);
        vec![
            (Role::Consumer, Since::Now, Source::Own(pid)),
            (
                Role::Walsender,
                Since::Now,
                Source::Slot {
                    client: shared_client(blue, &pair.blue_db).await?,
                    slot: pair.bs_slot.clone(),
                },
            ),
        ]
    } else {
        pair.native.enable(green).await?;
        vec![
            (
                Role::Consumer,
                Since::Now,
                Source::Subscription {
                    client: shared_client(green, green_db).await?,
                    name: pair.native.name.clone(),
                },
            ),
            (
                Role::Walsender,
                Since::Now,
                Source::Slot {
                    client: shared_client(blue, &pair.blue_db).await?,
                    slot: pair.native.slot.clone(),
                },
            ),
        ]
    };
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
        "live run {run}/{}: {side}, {} s at {rate:.0} tps",
        o.runs, o.duration
    ));
    let watch = Watch::start(sources, ctx.local());
    let started = Instant::now();
    let load = pgbench::run(blue, &pair.blue_db, o.clients, o.duration, Some(rate));
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
    let (load, ids) = tokio::try_join!(load, markers)?;
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

    let (p50, p99, max) = (
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        quantile(&lags, 1.0),
    );
    say(format!(
        "{side}: {} markers, lag p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({:.0} tps achieved); green equals blue",
        lags.len(),
        load.tps
    ));
    r.sample(run, side, "lag_p50_ms", p50);
    r.sample(run, side, "lag_p99_ms", p99);
    r.sample(run, side, "lag_max_ms", max);
    r.sample(run, WORKLOAD, "achieved_tps", load.tps);
    r.sample(run, WORKLOAD, "markers", lags.len() as f64);
    r.usage(
        run,
        side,
        &usage,
        load.transactions as f64 * CHANGES_PER_TRANSACTION + lags.len() as f64,
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
