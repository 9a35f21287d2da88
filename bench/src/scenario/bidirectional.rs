//! `bidirectional`: two-way sync under load on both sides. pgbench writes on blue and on green
//! at once, on disjoint branches (blue the first half, green the second, each with its tellers
//! and accounts), with a marker row every 100 ms on each side; the lag of each marker to the
//! other side, per direction, and the throughput each direction applied. Peer: two native
//! subscriptions with `origin = none` (PostgreSQL 16+), one each way. Then the cost of two-way
//! mode on a one-way workload: the same TPC-B backlog on blue caught up by `blueshift sync`
//! without and with `--bidirectional`.
//!
//! ```text
//!  setup: blue: pgbench -i (twice: one database for blueshift, one for native), markers,
//!         publication → green: pg_dump | pg_restore; green's marker ids start at 10^12
//!         blueshift: its slot; native: a subscription on green (blue's publication) and one on
//!         blue (green's), both origin = none, both paused
//!  blue's max rate of the script (consumers paused); each side's rate = 0.4 × max
//!  per run, each side in turn (order alternates):
//!         start (blueshift: sync --bidirectional, which arms the way back on its first start)
//!         → catch up both ways (untimed) → pgbench -R rate on blue (branches 1..S/2) and on
//!         green (S/2+1..S) and markers on both, D seconds → every marker on the other side
//!         → lag per direction; applied tps = a side's transactions ÷ (load start → its last
//!         marker applied on the other side) → sentinels, stop, green equal to blue
//!  then each mode in turn (order alternates): sync stopped → pgbench (blue's branches, full
//!         speed) D seconds on blue → start sync [--bidirectional] → sentinel on green and
//!         green's WAL flushed (timed) → stop → green equal to blue
//! ```
//!
//! `pgbench_history` has no key and gets none: pgbench only INSERTs into it, and an INSERT
//! needs no replica identity in either direction, for native replication or for blueshift (two-way
//! mode checks a keyless table's INSERTs for unique collisions only; it has no unique index).
//! An UPDATE or DELETE on it would need a key or `REPLICA IDENTITY FULL` on both sides.
//!
//! The markers are the `live` scenario's (`bench_marker`, a deferred trigger recording when a
//! marker became visible), here on both servers: a marker's time is `clock_timestamp()` at its
//! INSERT on its side and at the commit that applied it on the other. Same machine, same clock.
//!
//! In the one-way part the reverse direction is armed (the first part armed it) and idle in
//! both modes: what differs is what `--bidirectional` adds to the forward appliers — reading
//! and locking the rows each change could collide with, and one green transaction per source
//! transaction (no group commit).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::{
    copy_database, create_sync_slot, green_flushed, marker_lags, marker_visible, sentinel,
    shared_client, turns, Context, DumpSection, MARKER_SEEN, MARKER_TABLE, PAIR_TABLES,
};
use crate::check::tables_equal;
use crate::consumer::{self, poll_until, Child, Endpoints, Subscription};
use crate::pgbench::{self, CHANGES_PER_TRANSACTION};
use crate::process::{Role, Since, Source, Usage, Watch};
use crate::results::{
    figure, quantile, Better, ScenarioResult, Series, BLUESHIFT, PROCESS_FIGURES, WORKLOAD,
};
use crate::say;
use crate::server::{literal, query_value, Server};

const NATIVE: &str = "native";
/// The one-way part's peer: `blueshift sync` without `--bidirectional`.
const FORWARD_ONLY: &str = "forward-only";
const MARKER_EVERY: Duration = Duration::from_millis(100);
/// The share of blue's measured maximum rate each side runs at (both together: 0.8).
const RATE_SHARE: f64 = 0.4;
/// Green's markers are numbered from here (blue's from 1): the two never meet.
const GREEN_MARKERS: i64 = 1_000_000_000_000;
/// Two branches at least: one for each side.
const MIN_SCALE: u32 = 2;
/// The first PostgreSQL with `origin = none` subscriptions.
const NATIVE_MIN_VERSION: u32 = 160_000;

/// pgbench's TPC-B transaction (`pgbench -b tpcb-like`) on the branches `:lo` to `:hi` only:
/// a branch, one of its 10 tellers, one of its 100 000 accounts.
const SCRIPT: &str = "\\set bid random(:lo, :hi)
\\set tid (:bid - 1) * 10 + random(1, 10)
\\set aid (:bid - 1) * 100000 + random(1, 100000)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let scale = o.scale.max(MIN_SCALE);
    let half = scale / 2;
    let mut r = ScenarioResult::new("bidirectional", vec![NATIVE, FORWARD_ONLY]);
    r.workload = format!(
        "`pgbench -i -s {scale}`; pgbench's TPC-B transaction on disjoint branches at once \
         (`pgbench -c {c} -j {c} -R <rate> -T {d} -f <script> -D lo=… -D hi=…`): blue on \
         branches 1–{half}, green on {}–{scale}, each at {:.0} % of blue's maximum rate of the \
         script (measured first, consumers paused), and a marker row every 100 ms on each side. \
         One-way part: the script on blue's branches at full speed for {d} s \
         (`-c {c} -j {c}`), caught up by a stopped consumer",
        half + 1,
        RATE_SHARE * 100.0,
        c = o.clients,
        d = o.duration,
    );
    r.timed = format!(
        "lag of each marker: its INSERT on its side (`clock_timestamp()`) → the commit of the \
         transaction that applied it on the other side (a deferred trigger), per direction; \
         applied tps: a side's pgbench transactions ÷ (load start → its last marker applied on \
         the other side). Peer `{NATIVE}`: two native subscriptions with `origin = none`, one \
         each way. One-way rows against `{FORWARD_ONLY}`: the blueshift column is `sync \
         --bidirectional`, the peer column the same sync without it; catch-up timed from the \
         start of the process to the sentinel visible on green and green's WAL flushed past it \
         (the way back armed and idle in both)"
    );
    r.figures = vec![
        figure(
            "forward_lag_p50_ms",
            "blue → green lag p50, ms",
            Better::Lower,
            1,
        ),
        figure(
            "forward_lag_p99_ms",
            "blue → green lag p99, ms",
            Better::Lower,
            1,
        ),
        figure(
            "reverse_lag_p50_ms",
            "green → blue lag p50, ms",
            Better::Lower,
            1,
        ),
        figure(
            "reverse_lag_p99_ms",
            "green → blue lag p99, ms",
            Better::Lower,
            1,
        ),
        figure(
            "forward_applied_tps",
            "blue → green applied transactions/s",
            Better::Higher,
            0,
        ),
        figure(
            "reverse_applied_tps",
            "green → blue applied transactions/s",
            Better::Higher,
            0,
        ),
    ];
    r.figures.extend(PROCESS_FIGURES);
    r.figures.extend([
        figure(
            "oneway_txn_per_s",
            "one-way catch-up, applied transactions/s",
            Better::Higher,
            0,
        ),
        figure(
            "oneway_cpu_s_per_ktxn",
            "one-way catch-up, blueshift CPU-s per 1 000 transactions",
            Better::Lower,
            3,
        ),
    ]);
    r.workload_figures = vec![
        ("max_tps".into(), "blue's max tps of the script".into(), 0),
        ("rate".into(), "target rate per side, tps".into(), 0),
        ("blue_tps".into(), "achieved tps on blue".into(), 0),
        ("green_tps".into(), "achieved tps on green".into(), 0),
        (
            "oneway_transactions".into(),
            "one-way backlog transactions".into(),
            0,
        ),
    ];
    if let Err(e) = preflight(ctx).await {
        r.error = Some(format!("{e:#}"));
        return r;
    }
    let duo = Duo::new("bidirectional");
    let script = ctx.logs.join("bidirectional-tpcb.sql");
    if let Err(e) = std::fs::write(&script, SCRIPT) {
        r.error = Some(format!("could not write {}: {e}", script.display()));
        return r;
    }
    let script = script.to_string_lossy().into_owned();
    let load = Load {
        script: &script,
        clients: o.clients,
        blue: (1, half),
        green: (half + 1, scale),
    };
    match duo.setup(ctx, scale).await {
        Err(e) => r.error = Some(format!("{e:#}")),
        Ok(()) => {
            let seconds = o.duration.min(10);
            say(format!(
                "bidirectional: blue's max rate of the script ({seconds} s, consumers paused)"
            ));
            match load
                .run(ctx.blue(), &duo.blue_bs, load.blue, seconds, None)
                .await
            {
                Err(e) => r.error = Some(format!("measuring blue's max rate: {e:#}")),
                Ok(max) => {
                    let rate = max.tps * RATE_SHARE;
                    say(format!(
                        "bidirectional: max {:.0} tps; each side at {rate:.0} tps",
                        max.tps
                    ));
                    r.sample(0, WORKLOAD, "max_tps", max.tps);
                    r.sample(0, WORKLOAD, "rate", rate);
                    for run in 1..=o.runs {
                        for side in turns(&[BLUESHIFT, NATIVE], run) {
                            if let Err(e) = two_way(ctx, &duo, &load, side, run, rate, &mut r).await
                            {
                                if side == NATIVE {
                                    let _ = duo.pause_native(ctx).await;
                                }
                                r.fail(Some(run), Some(side), &e);
                            }
                        }
                    }
                    for run in 1..=o.runs {
                        if let Err(e) = one_way(ctx, &duo, &load, run, &mut r).await {
                            r.fail(Some(run), None, &e);
                        }
                    }
                }
            }
        }
    }
    duo.teardown(ctx).await;
    r
}

/// Native's peer needs PostgreSQL 16+ on both sides, blueshift's two-way mode commit
/// timestamps on both.
async fn preflight(ctx: &Context<'_>) -> anyhow::Result<()> {
    for server in [ctx.blue(), ctx.green()] {
        let db = server.maintenance_db();
        let version: u32 = server
            .value(db, "SHOW server_version_num")
            .await?
            .parse()
            .unwrap_or(0);
        if version < NATIVE_MIN_VERSION {
            bail!(
                "the bidirectional scenario needs PostgreSQL 16 or later on blue and green (its \
                 peer, native subscriptions with origin = none, came in 16); {} runs {} — pass \
                 --pg-bin with a PostgreSQL 16, 17 or 18 bin folder (scripts/fetch-postgres 18 \
                 puts one in /var/cache/blueshift/postgresql/18/bin), or run the other \
                 scenarios by name",
                server.role,
                server.value(db, "SHOW server_version").await?
            );
        }
        let track = server.value(db, "SHOW track_commit_timestamp").await?;
        ensure!(
            track == "on",
            "the bidirectional scenario runs blueshift sync --bidirectional, which needs \
             track_commit_timestamp = on on both servers; {} has it off — ALTER SYSTEM SET \
             track_commit_timestamp = on and restart it (throwaway clusters have it on)",
            server.role
        );
    }
    Ok(())
}

/// The load of one side: pgbench's TPC-B on a range of branches.
#[derive(Debug)]
struct Load<'a> {
    script: &'a str,
    clients: u32,
    blue: (u32, u32),
    green: (u32, u32),
}

impl Load<'_> {
    async fn run(
        &self,
        server: &Server,
        db: &str,
        (lo, hi): (u32, u32),
        seconds: u32,
        rate: Option<f64>,
    ) -> anyhow::Result<pgbench::Run> {
        let (lo, hi) = (format!("lo={lo}"), format!("hi={hi}"));
        pgbench::run_with(
            server,
            db,
            self.clients,
            seconds,
            rate,
            &["-f", self.script, "-D", &lo, "-D", &hi],
        )
        .await
    }
}

/// The databases, slots and subscriptions: blueshift's pair and native's pair.
#[derive(Debug)]
struct Duo {
    blue_bs: String,
    green_bs: String,
    publication: String,
    slot: String,
    blue_native: String,
    green_native: String,
    /// On green: blue's publication, in native's databases.
    forward: Subscription,
    /// On blue: green's publication (`reverse_publication`), in native's databases.
    reverse: Subscription,
    reverse_publication: String,
}

impl Duo {
    fn new(scenario: &str) -> Duo {
        let blue_native = format!("bench_{scenario}_nb");
        let green_native = format!("bench_{scenario}_ng");
        Duo {
            blue_bs: format!("bench_{scenario}"),
            green_bs: format!("bench_{scenario}_bs"),
            publication: format!("bench_{scenario}_pub"),
            slot: format!("bs_{scenario}"),
            forward: Subscription {
                name: format!("native_{scenario}_fwd"),
                slot: format!("native_{scenario}_fwd"),
                green_db: green_native.clone(),
                blue_db: blue_native.clone(),
            },
            // Subscription speaks of "blue" as the publisher and "green" as the subscriber:
            // here the publisher is green.
            reverse: Subscription {
                name: format!("native_{scenario}_rev"),
                slot: format!("native_{scenario}_rev"),
                green_db: blue_native.clone(),
                blue_db: green_native.clone(),
            },
            reverse_publication: format!("bench_{scenario}_rev_pub"),
            blue_native,
            green_native,
        }
    }

    fn ends<'a>(&'a self, ctx: &'a Context<'_>) -> Endpoints<'a> {
        Endpoints {
            blue: ctx.blue(),
            blue_db: &self.blue_bs,
            green: ctx.green(),
            green_db: &self.green_bs,
        }
    }

    /// Blue's and green's database of `side`.
    fn dbs(&self, side: &str) -> (&str, &str) {
        if side == NATIVE {
            (&self.blue_native, &self.green_native)
        } else {
            (&self.blue_bs, &self.green_bs)
        }
    }

    fn reverse_slot(&self) -> String {
        blueshift_engine::sync::direction::reverse_slot_name(&self.slot)
    }

    async fn setup(&self, ctx: &Context<'_>, scale: u32) -> anyhow::Result<()> {
        let (blue, green) = (ctx.blue(), ctx.green());
        self.teardown(ctx).await;
        for (from, to) in [
            (&self.blue_bs, &self.green_bs),
            (&self.blue_native, &self.green_native),
        ] {
            blue.recreate_database(from).await?;
            say(format!("pgbench -i -s {scale} on blue/{from}"));
            pgbench::init(blue, from, scale).await?;
            // Markers travel both ways: the table, and when each became visible, on both sides
            // (the dump carries them to green).
            blue.execute(from, MARKER_TABLE).await?;
            blue.execute(from, MARKER_SEEN).await?;
            blue.execute(
                from,
                &format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    self.publication,
                    PAIR_TABLES.join(", ")
                ),
            )
            .await?;
            copy_database(ctx, from, to, DumpSection::All).await?;
            green
                .execute(
                    to,
                    &format!(
                        "SELECT pg_catalog.setval('public.bench_marker_id_seq', {GREEN_MARKERS})"
                    ),
                )
                .await?;
            green.execute(to, "VACUUM ANALYZE").await?;
            blue.execute(from, "VACUUM ANALYZE").await?;
        }
        green
            .execute(
                &self.green_native,
                &format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    self.reverse_publication,
                    PAIR_TABLES.join(", ")
                ),
            )
            .await?;
        blue.execute(blue.maintenance_db(), "CHECKPOINT").await?;
        create_sync_slot(ctx, &self.ends(ctx), &self.publication, &self.slot).await?;
        // Neither subscription sends back what the other applied: origin = none.
        self.forward
            .create_with(
                blue,
                green,
                &self.publication,
                false,
                false,
                ", origin = none",
            )
            .await?;
        self.reverse
            .create_with(
                green,
                blue,
                &self.reverse_publication,
                false,
                false,
                ", origin = none",
            )
            .await?;
        Ok(())
    }

    async fn pause_native(&self, ctx: &Context<'_>) -> anyhow::Result<()> {
        let (blue, green) = (ctx.blue(), ctx.green());
        self.forward.disable(blue, green).await?;
        self.reverse.disable(green, blue).await
    }

    /// Best effort: everything the scenario created, gone (slots first: a database with a
    /// logical slot cannot be dropped).
    async fn teardown(&self, ctx: &Context<'_>) {
        let (blue, green) = (ctx.blue(), ctx.green());
        let _ = self.forward.drop(blue, green).await;
        let _ = self.reverse.drop(green, blue).await;
        let _ = consumer::drop_slot(blue, &self.blue_bs, &self.slot).await;
        let _ = consumer::drop_slot(green, &self.green_bs, &self.reverse_slot()).await;
        // Both directions' origins: blueshift_<slot>_<n> on green, blueshift_<slot>_r<n> on blue.
        let _ = consumer::drop_origins(green, green.maintenance_db(), &self.slot).await;
        let _ = consumer::drop_origins(blue, blue.maintenance_db(), &self.slot).await;
        for db in [&self.green_bs, &self.green_native] {
            let _ = green.drop_database(db).await;
        }
        for db in [&self.blue_bs, &self.blue_native] {
            let _ = blue.drop_database(db).await;
        }
    }
}

/// Whether blueshift armed the way back (the `blueshift.reverse` row on green).
async fn armed(green: &tokio_postgres::Client, slot: &str) -> anyhow::Result<bool> {
    let sql = format!(
        "SELECT count(*) FROM blueshift.reverse WHERE slot = {}",
        literal(slot)
    );
    // Before arming the table may not exist yet.
    Ok(matches!(query_value(green, &sql).await, Ok(n) if n == "1"))
}

/// Inserts a marker every [`MARKER_EVERY`] on `client` until `seconds` after `started`.
async fn markers(
    client: &tokio_postgres::Client,
    started: Instant,
    seconds: u32,
) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(MARKER_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < Duration::from_secs(u64::from(seconds)) {
        tick.tick().await;
        ids.push(sentinel(client).await?);
    }
    Ok(ids)
}

/// One side's two-way run: load on both sides, lag per direction.
async fn two_way(
    ctx: &Context<'_>,
    duo: &Duo,
    load: &Load<'_>,
    side: &'static str,
    run: u32,
    rate: f64,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let (blue, green) = (ctx.blue(), ctx.green());
    let (blue_db, green_db) = duo.dbs(side);
    let b = blue.connect(blue_db).await?;
    let g = green.connect(green_db).await?;

    let mut sync: Option<Child> = None;
    let walsenders = |forward: String, reverse: String| async move {
        Ok::<_, anyhow::Error>(vec![
            (
                Role::Walsender,
                Since::Now,
                Source::Slot {
                    client: shared_client(blue, blue_db).await?,
                    slot: forward,
                },
            ),
            (
                Role::Walsender,
                Since::Now,
                Source::Slot {
                    client: shared_client(green, green_db).await?,
                    slot: reverse,
                },
            ),
        ])
    };
    let sources = if side == BLUESHIFT {
        let s = consumer::start_sync_with(
            ctx.blueshift,
            &duo.ends(ctx),
            &duo.publication,
            &duo.slot,
            o.workers,
            ctx.logs,
            &format!("bidirectional-run{run}"),
            &["--bidirectional"],
        )?;
        let mut sources = vec![(Role::Consumer, Since::Now, Source::Own(s.pid()))];
        sync = Some(s);
        sources.extend(walsenders(duo.slot.clone(), duo.reverse_slot()).await?);
        sources
    } else {
        duo.forward.enable(green).await?;
        duo.reverse.enable(blue).await?;
        let mut sources = vec![
            (
                Role::Consumer,
                Since::Now,
                Source::Subscription {
                    client: shared_client(green, green_db).await?,
                    name: duo.forward.name.clone(),
                },
            ),
            (
                Role::Consumer,
                Since::Now,
                Source::Subscription {
                    client: shared_client(blue, blue_db).await?,
                    name: duo.reverse.name.clone(),
                },
            ),
        ];
        sources.extend(walsenders(duo.forward.slot.clone(), duo.reverse.slot.clone()).await?);
        sources
    };
    let mut alive = || match sync.as_mut() {
        Some(s) => s.check_running(),
        None => Ok(()),
    };
    if side == BLUESHIFT {
        // Green takes writes only once the way back is armed (the sidecar's first start).
        poll_until(
            "blueshift arming the reverse direction",
            ctx.timeout(),
            &mut alive,
            || armed(&g, &duo.slot),
        )
        .await?;
    }
    // Catch up both ways with what happened since this side last ran (untimed).
    for (from, to, way) in [(&b, &g, "blue → green"), (&g, &b, "green → blue")] {
        let id = sentinel(from).await?;
        poll_until(
            &format!("{side} catching up {way} before the load"),
            ctx.timeout(),
            &mut alive,
            || marker_visible(to, id),
        )
        .await?;
    }

    say(format!(
        "bidirectional run {run}/{}: {side}, {} s at {rate:.0} tps on each side",
        o.runs, o.duration
    ));
    let watch = Watch::start(sources, ctx.local());
    let started = Instant::now();
    let (blue_load, green_load, blue_ids, green_ids) = tokio::try_join!(
        load.run(blue, blue_db, load.blue, o.duration, Some(rate)),
        load.run(green, green_db, load.green, o.duration, Some(rate)),
        markers(&b, started, o.duration),
        markers(&g, started, o.duration),
    )?;
    let (Some(&blue_last), Some(&green_last)) = (blue_ids.last(), green_ids.last()) else {
        bail!("no marker was written");
    };
    // Both directions awaited together: each one's time is its own.
    let (forward_s, reverse_s) = tokio::try_join!(
        async {
            poll_until(
                &format!("{side} applying blue's last marker on green"),
                ctx.timeout(),
                || Ok(()),
                || marker_visible(&g, blue_last),
            )
            .await?;
            Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64())
        },
        async {
            poll_until(
                &format!("{side} applying green's last marker on blue"),
                ctx.timeout(),
                || Ok(()),
                || marker_visible(&b, green_last),
            )
            .await?;
            Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64())
        },
    )?;
    alive()?;
    let usage = watch.finish().await;
    let forward = marker_lags(&g, &blue_ids).await?;
    let reverse = marker_lags(&b, &green_ids).await?;

    // Everything applied both ways, then green equal to blue.
    for (from, to, way) in [(&b, &g, "blue → green"), (&g, &b, "green → blue")] {
        let id = sentinel(from).await?;
        poll_until(
            &format!("{side} applying the sentinel {way}"),
            ctx.timeout(),
            &mut alive,
            || marker_visible(to, id),
        )
        .await?;
    }
    match sync.take() {
        Some(s) => s.stop().await?,
        None => duo.pause_native(ctx).await?,
    }
    tables_equal(blue, blue_db, green, green_db, &PAIR_TABLES).await?;

    let mut changes = 0.0;
    for (way, points, lag_metric, tps_metric, transactions, done_s) in [
        (
            "blue → green",
            forward,
            "forward",
            "forward_applied_tps",
            blue_load.transactions,
            forward_s,
        ),
        (
            "green → blue",
            reverse,
            "reverse",
            "reverse_applied_tps",
            green_load.transactions,
            reverse_s,
        ),
    ] {
        let lags: Vec<f64> = points.iter().map(|p| p.1).collect();
        let (p50, p99) = (quantile(&lags, 0.5), quantile(&lags, 0.99));
        let tps = transactions as f64 / done_s;
        say(format!(
            "{side} {way}: {} markers, lag p50 {p50:.1} ms, p99 {p99:.1} ms; {transactions} \
             transactions applied in {done_s:.1} s ({tps:.0}/s)",
            lags.len()
        ));
        r.sample(run, side, &format!("{lag_metric}_lag_p50_ms"), p50);
        r.sample(run, side, &format!("{lag_metric}_lag_p99_ms"), p99);
        r.sample(run, side, tps_metric, tps);
        changes += transactions as f64 * CHANGES_PER_TRANSACTION + lags.len() as f64;
        r.series.push(Series {
            run,
            side: side.to_owned(),
            metric: if lag_metric == "forward" {
                "lag_forward"
            } else {
                "lag_reverse"
            },
            x: "seconds since the first marker",
            y: if lag_metric == "forward" {
                "lag, ms (blue insert → green commit)"
            } else {
                "lag, ms (green insert → blue commit)"
            },
            points,
        });
    }
    say(format!(
        "{side}: {:.0} tps on blue, {:.0} tps on green; green equals blue",
        blue_load.tps, green_load.tps
    ));
    r.sample(run, WORKLOAD, "blue_tps", blue_load.tps);
    r.sample(run, WORKLOAD, "green_tps", green_load.tps);
    r.usage(run, side, &usage, changes);
    Ok(())
}

/// One run of the one-way part: the same backlog caught up by `sync --bidirectional` and by
/// `sync` alone, in turn.
async fn one_way(
    ctx: &Context<'_>,
    duo: &Duo,
    load: &Load<'_>,
    run: u32,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let (blue, green) = (ctx.blue(), ctx.green());
    let b = blue.connect(&duo.blue_bs).await?;
    let g = green.connect(&duo.green_bs).await?;
    for mode in turns(&[BLUESHIFT, FORWARD_ONLY], run) {
        say(format!(
            "bidirectional one-way run {run}/{}: backlog on blue for {mode}",
            o.runs
        ));
        // Blue's branches only: green's were last written on green, and blue updating them
        // now is a conflict (update_origin_differs), as it should be.
        let backlog = load
            .run(blue, &duo.blue_bs, load.blue, o.duration, None)
            .await?;
        let id = sentinel(&b).await?;
        r.sample(
            run,
            WORKLOAD,
            "oneway_transactions",
            backlog.transactions as f64,
        );
        let extra: &[&str] = if mode == BLUESHIFT {
            &["--bidirectional"]
        } else {
            &[]
        };
        let started = Instant::now();
        let mut sync = consumer::start_sync_with(
            ctx.blueshift,
            &duo.ends(ctx),
            &duo.publication,
            &duo.slot,
            o.workers,
            ctx.logs,
            &format!("bidirectional-oneway-{mode}-run{run}"),
            extra,
        )?;
        let watch = Watch::start(
            vec![(Role::Consumer, Since::Start, Source::Own(sync.pid()))],
            ctx.local(),
        );
        let caught_up = async {
            poll_until(
                &format!("{mode} catching up"),
                ctx.timeout(),
                || sync.check_running(),
                || marker_visible(&g, id),
            )
            .await?;
            green_flushed(&g).await?;
            Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64())
        }
        .await;
        let usage = watch.finish().await;
        let stopped = sync.stop().await;
        let seconds = caught_up?;
        stopped?;
        tables_equal(blue, &duo.blue_bs, green, &duo.green_bs, &PAIR_TABLES).await?;
        let tps = backlog.transactions as f64 / seconds;
        let cpu = usage
            .get(&Role::Consumer)
            .map_or(f64::NAN, |u: &Usage| u.cpu_seconds);
        say(format!(
            "{mode}: {} transactions caught up in {seconds:.2} s ({tps:.0}/s), {cpu:.2} CPU-s; \
             green equals blue",
            backlog.transactions
        ));
        let side = if mode == BLUESHIFT {
            BLUESHIFT
        } else {
            FORWARD_ONLY
        };
        r.sample(run, side, "oneway_txn_per_s", tps);
        if backlog.transactions > 0 {
            r.sample(
                run,
                side,
                "oneway_cpu_s_per_ktxn",
                cpu / backlog.transactions as f64 * 1000.0,
            );
        }
    }
    Ok(())
}
