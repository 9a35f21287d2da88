//! `backfill`: `pgbench -i -s N` on blue copied into a green that has nothing but the schema
//! (or nothing at all), timed until every row, index and sequence is there.
//!
//! ```text
//!  setup: pgbench -i on blue, publication of its tables
//!  per run, each side in turn (order alternates), into a fresh green database:
//!    blueshift           green: schema (tables + indexes)   blueshift backfill … (exits 0 when ready)
//!    native              green: schema                      CREATE SUBSCRIPTION … copy_data = true,
//!                                                           until every pg_subscription_rel is 'r'
//!    pg_dump+pg_restore  green: empty                       pg_dump -Fc, pg_restore -j <nproc>
//!    copy_pipe           green: tables (pre-data)           COPY … TO STDOUT → COPY … FROM STDIN per
//!                                                           table (<nproc> at once), then the indexes
//!                                                           (post-data, pg_restore -j <nproc>)
//!  each checked: rows equal table by table, same indexes, same sequence values
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::SinkExt as _;

use super::{copy_database, shared_client, turns, Context, DumpSection};
use crate::check::{schema_ready, tables_equal};
use crate::consumer::{self, poll_until, Child, Endpoints, Subscription};
use crate::pgbench::{self, TABLES};
use crate::process::{Role, Since, Source, Usage, Watch};
use crate::results::{figure, Better, ScenarioResult, BLUESHIFT, PROCESS_FIGURES, WORKLOAD};
use crate::say;
use crate::server::query_value;

const NATIVE: &str = "native";
const DUMP: &str = "pg_dump+pg_restore";
const PIPE: &str = "copy_pipe";
const DB: &str = "bench_backfill";
const PUBLICATION: &str = "bench_backfill_pub";
const BS_SLOT: &str = "bs_backfill";

fn green_db(side: &str) -> String {
    let suffix = match side {
        BLUESHIFT => "bs",
        NATIVE => "native",
        DUMP => "dump",
        _ => "pipe",
    };
    format!("{DB}_{suffix}")
}

fn subscription() -> Subscription {
    Subscription {
        name: "native_backfill".to_owned(),
        slot: "native_backfill".to_owned(),
        green_db: green_db(NATIVE),
        blue_db: DB.to_owned(),
    }
}

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("backfill", vec![NATIVE, DUMP, PIPE]);
    r.workload = format!(
        "`pgbench -i -s {}` on blue; green empty but for the schema (blueshift, native: tables \
         and indexes as `pg_dump --schema-only` gives them; COPY pipe: the tables only; \
         pg_restore: nothing)",
        o.scale
    );
    r.timed = format!(
        "start → every row, index and sequence on green (checked: rows equal table by table, the \
         same indexes, the same sequence values). blueshift: `blueshift backfill --copy-workers \
         {w}`; native: `CREATE SUBSCRIPTION … WITH (copy_data = true)` until every \
         `pg_subscription_rel` state is `r` (`max_sync_workers_per_subscription` = 2, \
         PostgreSQL's default); pg_dump+pg_restore: `pg_dump -Fc` then `pg_restore -j {n}` into \
         an empty database; copy_pipe: `COPY … TO STDOUT (FORMAT binary)` streamed into `COPY … \
         FROM STDIN`, {n} tables at once, then the indexes and keys (`pg_restore -j {n}` of the \
         post-data section)",
        w = o.workers,
        n = crate::machine::nproc()
    );
    r.figures = vec![
        figure("backfill_s", "seconds to ready", Better::Lower, 2),
        figure("rows_per_s", "rows/s", Better::Higher, 0),
    ];
    r.figures.extend(
        PROCESS_FIGURES
            .into_iter()
            .filter(|f| f.metric.starts_with("consumer")),
    );
    r.workload_figures = vec![("rows".into(), "rows".into(), 0)];
    r.notes.push(
        "pgbench's tables have no sequences, so the sequence check compares empty sets; the \
         consumer figures are the processes that do the copying on the client side (blueshift; \
         the subscription's apply and tablesync workers; pg_dump and pg_restore with its \
         workers); the COPY pipe runs inside the bench and has none."
            .to_owned(),
    );
    let available = backfill_available(ctx).await;
    match setup(ctx).await {
        Err(e) => r.error = Some(format!("{e:#}")),
        Ok(rows) => {
            for run in 1..=o.runs {
                r.sample(run, WORKLOAD, "rows", rows);
                for side in turns(&[BLUESHIFT, NATIVE, DUMP, PIPE], run) {
                    let result = match side {
                        BLUESHIFT => match &available {
                            Ok(()) => blueshift(ctx, run).await,
                            Err(e) => Err(anyhow::anyhow!("{e}")),
                        },
                        NATIVE => native(ctx).await,
                        DUMP => dump_restore(ctx, run).await,
                        _ => copy_pipe(ctx, run).await,
                    };
                    let checked = match result {
                        Ok(m) => check(ctx, side).await.map(|()| m),
                        Err(e) => Err(e),
                    };
                    match checked {
                        Ok((elapsed, usage)) => {
                            let secs = elapsed.as_secs_f64();
                            say(format!(
                                "backfill {side}: ready in {secs:.2} s; green equals blue"
                            ));
                            r.sample(run, side, "backfill_s", secs);
                            r.sample(run, side, "rows_per_s", rows / secs);
                            r.usage(run, side, &usage, rows);
                        }
                        Err(e) => r.fail(Some(run), Some(side), &e),
                    }
                    cleanup_side(ctx, side).await;
                }
            }
        }
    }
    teardown(ctx).await;
    r
}

/// Whether the measured binary has `blueshift backfill` (issue 4); the row is an error until
/// it does, never a made-up number.
async fn backfill_available(ctx: &Context<'_>) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(ctx.blueshift)
        .args(["backfill", "--help"])
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "blueshift backfill not available: {} has no `backfill` command yet (issue 4)",
            ctx.blueshift.display()
        );
    }
    Ok(())
}

/// pgbench -i and the publication; returns the number of rows to copy.
async fn setup(ctx: &Context<'_>) -> anyhow::Result<f64> {
    let blue = ctx.blue();
    teardown(ctx).await;
    blue.recreate_database(DB).await?;
    say(format!("pgbench -i -s {} on blue/{DB}", ctx.options.scale));
    pgbench::init(blue, DB, ctx.options.scale).await?;
    blue.execute(
        DB,
        &format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {}",
            TABLES.join(", ")
        ),
    )
    .await?;
    blue.execute(DB, "CHECKPOINT").await?;
    let sql = TABLES
        .iter()
        .map(|t| format!("(SELECT count(*) FROM public.{t})"))
        .collect::<Vec<_>>()
        .join(" + ");
    Ok(blue.value(DB, &format!("SELECT {sql}")).await?.parse()?)
}

async fn teardown(ctx: &Context<'_>) {
    for side in [BLUESHIFT, NATIVE, DUMP, PIPE] {
        cleanup_side(ctx, side).await;
    }
    let _ = ctx.blue().drop_database(DB).await;
}

/// The side's green database, subscription, slot and origins, gone.
async fn cleanup_side(ctx: &Context<'_>, side: &str) {
    let (blue, green) = (ctx.blue(), ctx.green());
    match side {
        BLUESHIFT => {
            let _ = consumer::drop_slot(blue, DB, BS_SLOT).await;
            let _ = consumer::drop_origins(green, green.maintenance_db(), BS_SLOT).await;
        }
        NATIVE => {
            let _ = subscription().drop(blue, green).await;
        }
        _ => {}
    }
    let _ = green.drop_database(&green_db(side)).await;
}

type Measured = (Duration, std::collections::HashMap<Role, Usage>);

async fn blueshift(ctx: &Context<'_>, run: u32) -> anyhow::Result<Measured> {
    let (blue, green) = (ctx.blue(), ctx.green());
    let db = green_db(BLUESHIFT);
    copy_database(ctx, DB, &db, DumpSection::Schema).await?;
    let workers = ctx.options.workers.to_string();
    let started = Instant::now();
    let child = Child::start(
        ctx.blueshift,
        &[
            "backfill",
            "--publication",
            PUBLICATION,
            "--slot",
            BS_SLOT,
            "--copy-workers",
            &workers,
        ],
        &Endpoints {
            blue,
            blue_db: DB,
            green,
            green_db: &db,
        },
        true,
        ctx.logs,
        &format!("backfill-run{run}"),
    )?;
    let watch = Watch::start(
        vec![(Role::Consumer, Since::Start, Source::Own(child.pid()))],
        ctx.local(),
    );
    let out = child.wait(ctx.timeout()).await;
    let elapsed = started.elapsed();
    let usage = watch.finish().await;
    out?;
    Ok((elapsed, usage))
}

async fn native(ctx: &Context<'_>) -> anyhow::Result<Measured> {
    let (blue, green) = (ctx.blue(), ctx.green());
    let sub = subscription();
    copy_database(ctx, DB, &sub.green_db, DumpSection::Schema).await?;
    let g = green.connect(&sub.green_db).await?;
    let watch_client = shared_client(green, &sub.green_db).await?;
    let started = Instant::now();
    sub.create(blue, green, PUBLICATION, true, true).await?;
    let watch = Watch::start(
        vec![(
            Role::Consumer,
            Since::Start,
            Source::Subscription {
                client: watch_client,
                name: sub.name.clone(),
            },
        )],
        ctx.local(),
    );
    let sql = format!(
        "SELECT count(*) FILTER (WHERE srsubstate = 'r') || '/' || count(*) \
         FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid \
         WHERE s.subname = '{}'",
        sub.name
    );
    let ready = format!("{n}/{n}", n = TABLES.len());
    let waited = poll_until(
        "native copy_data",
        ctx.timeout(),
        || Ok(()),
        || async { Ok(query_value(&g, &sql).await? == ready) },
    )
    .await;
    let elapsed = started.elapsed();
    let usage = watch.finish().await;
    waited.with_context(|| format!("green's log:\n{}", green.log_tail(20)))?;
    sub.disable(blue, green).await?;
    Ok((elapsed, usage))
}

async fn dump_restore(ctx: &Context<'_>, run: u32) -> anyhow::Result<Measured> {
    let (blue, green) = (ctx.blue(), ctx.green());
    let db = green_db(DUMP);
    green.recreate_database(&db).await?;
    let file = ctx.logs.join(format!("backfill-run{run}.dump"));
    let path = file
        .to_str()
        .context("the log folder is not UTF-8")?
        .to_owned();
    let jobs = crate::machine::nproc().to_string();
    let started = Instant::now();
    let mut usage: std::collections::HashMap<Role, Usage> = Default::default();
    for (server, program, args) in [
        (
            blue,
            "pg_dump",
            vec![
                "-Fc",
                "--no-publications",
                "--no-subscriptions",
                "-f",
                &path,
                DB,
            ],
        ),
        (
            green,
            "pg_restore",
            vec!["--no-owner", "-j", &jobs, "-d", &db, &path],
        ),
    ] {
        let mut cmd = tokio::process::Command::from(server.command(program));
        cmd.args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not run {program}"))?;
        let watch = Watch::start(
            vec![(
                Role::Consumer,
                Since::Start,
                Source::Tree(child.id().unwrap_or(0)),
            )],
            ctx.local(),
        );
        let out = child.wait_with_output().await?;
        let u = watch.finish().await;
        anyhow::ensure!(
            out.status.success(),
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if let Some(u) = u.get(&Role::Consumer) {
            let total = usage.entry(Role::Consumer).or_default();
            total.cpu_seconds += u.cpu_seconds;
            total.peak_rss_mib = total.peak_rss_mib.max(u.peak_rss_mib);
            total.processes += u.processes;
        }
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&file);
    Ok((elapsed, usage))
}

async fn copy_pipe(ctx: &Context<'_>, run: u32) -> anyhow::Result<Measured> {
    let (blue, green) = (ctx.blue(), ctx.green());
    let db = green_db(PIPE);
    copy_database(ctx, DB, &db, DumpSection::PreData).await?;
    // The post-data section (keys, indexes) dumped ahead, untimed: only its restore is timed.
    let file = ctx.logs.join(format!("backfill-run{run}-post.dump"));
    let path = file
        .to_str()
        .context("the log folder is not UTF-8")?
        .to_owned();
    blue.run(
        "pg_dump",
        &[
            "-Fc",
            "--section",
            "post-data",
            "--no-publications",
            "--no-subscriptions",
            "-f",
            &path,
            DB,
        ],
    )
    .await?;
    let limit = Arc::new(tokio::sync::Semaphore::new(crate::machine::nproc()));
    let started = Instant::now();
    let mut copies = tokio::task::JoinSet::new();
    for table in TABLES {
        let src = blue.connect(DB).await?;
        let dst = green.connect(&db).await?;
        let limit = limit.clone();
        copies.spawn(async move {
            let _permit = limit.acquire().await?;
            let out = src
                .copy_out(&format!("COPY public.{table} TO STDOUT (FORMAT binary)"))
                .await?;
            let sink = dst
                .copy_in(&format!("COPY public.{table} FROM STDIN (FORMAT binary)"))
                .await?;
            futures_util::pin_mut!(out);
            futures_util::pin_mut!(sink);
            sink.send_all(&mut out).await?;
            sink.as_mut().finish().await?;
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = copies.join_next().await {
        done??;
    }
    let jobs = crate::machine::nproc().to_string();
    green
        .run("pg_restore", &["--no-owner", "-j", &jobs, "-d", &db, &path])
        .await?;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&file);
    Ok((elapsed, Default::default()))
}

/// Rows, indexes and sequences of the side's green database equal blue's.
async fn check(ctx: &Context<'_>, side: &str) -> anyhow::Result<()> {
    let (blue, green) = (ctx.blue(), ctx.green());
    let db = green_db(side);
    tables_equal(blue, DB, green, &db, &TABLES).await?;
    schema_ready(blue, DB, green, &db).await
}
