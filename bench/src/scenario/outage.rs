//! `catchup-outage`: green goes down while blue takes a TPC-B backlog; once green is back, how
//! long until it holds everything blue committed.
//!
//! ```text
//!  per run, each side in turn: consumer running and caught up (untimed) → green stopped
//!           (`pg_ctl stop -m fast`) → pgbench -T D on blue → sentinel marker
//!           → green started; timed from the moment it accepts connections until the sentinel
//!             is visible on green and green's WAL is flushed past it
//!           → consumer stopped → green equal to blue, table by table
//! ```
//!
//! The consumer is never restarted by the bench: blueshift's sidecar must ride out the outage by
//! itself (its reconnection backoff is part of the figure), as must the native subscription's
//! apply worker (started again by green's launcher). A consumer that keeps decoding blue while
//! green is down (a local spool) would have part of the backlog read before green is back;
//! today's blueshift does not, so the figure is its catch-up plus its time to notice green.
//! Throwaway clusters only (the bench stops and starts green).

use std::time::Instant;

use anyhow::Context as _;

use super::{green_flushed, marker_visible, sentinel, turns, Context, Pair};
use crate::check::tables_equal;
use crate::consumer::{poll_until, Child};
use crate::pgbench::{self, CHANGES_PER_TRANSACTION};
use crate::process::{Since, Watch};
use crate::results::{figure, Better, ScenarioResult, BLUESHIFT, PROCESS_FIGURES, WORKLOAD};
use crate::say;

const NATIVE: &str = "native";

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("catchup-outage", vec![NATIVE]);
    r.workload = format!(
        "`pgbench -i -s {}`; consumer running and caught up; green stopped (`pg_ctl stop -m \
         fast`); TPC-B (`pgbench -c {c} -j {c} -T {}`) on blue; green started",
        o.scale,
        o.duration,
        c = o.clients
    );
    r.timed = "green accepting connections again → the sentinel row written after the backlog \
               visible on green and green's WAL flushed past it; neither consumer is restarted \
               by the bench (blueshift's sidecar reconnects on its own, native's apply worker is \
               started by green's launcher); peer: native subscription"
        .to_owned();
    r.figures = vec![
        figure(
            "outage_catchup_s",
            "seconds from green's return to caught up",
            Better::Lower,
            2,
        ),
        figure(
            "applied_txn_per_s",
            "applied transactions/s after green's return",
            Better::Higher,
            0,
        ),
    ];
    r.figures.extend(PROCESS_FIGURES);
    r.workload_figures = vec![
        ("transactions".into(), "backlog transactions".into(), 0),
        ("outage_s".into(), "green down, seconds".into(), 1),
    ];
    if ctx.green().throwaway().is_none() {
        r.error = Some(
            "catchup-outage stops and starts green: it runs on throwaway clusters only (without \
             --source/--target)"
                .to_owned(),
        );
        return r;
    }
    let pair = Pair::new("outage");
    if let Err(e) = pair.setup(ctx).await {
        r.error = Some(format!("{e:#}"));
    } else {
        for run in 1..=o.runs {
            for side in turns(&[BLUESHIFT, NATIVE], run) {
                if let Err(e) = turn(ctx, &pair, side, run, &mut r).await {
                    if side == NATIVE {
                        let _ = pair.native.disable(ctx.blue(), ctx.green()).await;
                    }
                    r.fail(Some(run), Some(side), &e);
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
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let (blue, green) = (ctx.blue(), ctx.green());
    let cluster = green.throwaway().context("a throwaway green")?;
    let green_db = pair.green_db(side);
    let b = blue.connect(&pair.blue_db).await?;

    // Running and caught up (untimed).
    let mut sync = pair
        .start_consumer(ctx, side, &format!("outage-run{run}"))
        .await?;
    let pid = sync.as_ref().map(Child::pid);
    let mut alive = || match sync.as_mut() {
        Some(s) => s.check_running(),
        None => Ok(()),
    };
    {
        let g = green.connect(green_db).await?;
        let id = sentinel(&b).await?;
        poll_until(
            &format!("{side} catching up before the outage"),
            ctx.timeout(),
            &mut alive,
            || marker_visible(&g, id),
        )
        .await?;
    }

    say(format!(
        "catchup-outage run {run}/{}: {side}; green down during {} s of TPC-B",
        o.runs, o.duration
    ));
    let down = Instant::now();
    cluster.begin_outage()?;
    let backlog = async {
        let load = pgbench::run(blue, &pair.blue_db, o.clients, o.duration, None).await?;
        let id = sentinel(&b).await?;
        Ok::<_, anyhow::Error>((load, id))
    }
    .await;
    // Green comes back whatever happened on blue.
    let back = cluster.end_outage();
    let outage = down.elapsed();
    let (load, id) = backlog?;
    back?;
    let returned = Instant::now();
    say(format!(
        "green back after {:.1} s; backlog {} transactions",
        outage.as_secs_f64(),
        load.transactions
    ));

    let sources = pair.watch_sources(
        pair.watchers(ctx, side).await?,
        side,
        pid,
        Since::Now,
        Since::Start,
    );
    let watch = Watch::start(sources, ctx.local());
    let g = green.connect(green_db).await?;
    let caught_up = async {
        poll_until(
            &format!("{side} catching up after the outage"),
            ctx.timeout(),
            &mut alive,
            || marker_visible(&g, id),
        )
        .await?;
        green_flushed(&g).await?;
        Ok::<_, anyhow::Error>(returned.elapsed())
    }
    .await;
    let usage = watch.finish().await;
    let elapsed = caught_up?;
    match sync.take() {
        Some(s) => s.stop().await?,
        None => pair.native.disable(blue, green).await?,
    }
    tables_equal(blue, &pair.blue_db, green, green_db, &pair.tables()).await?;

    let secs = elapsed.as_secs_f64();
    say(format!(
        "{side} caught up {secs:.2} s after green's return ({:.0} txn/s); green equals blue",
        load.transactions as f64 / secs
    ));
    r.sample(run, side, "outage_catchup_s", secs);
    r.sample(
        run,
        side,
        "applied_txn_per_s",
        load.transactions as f64 / secs,
    );
    r.sample(run, WORKLOAD, "transactions", load.transactions as f64);
    r.sample(run, WORKLOAD, "outage_s", outage.as_secs_f64());
    r.usage(
        run,
        side,
        &usage,
        load.transactions as f64 * CHANGES_PER_TRANSACTION,
    );
    Ok(())
}
