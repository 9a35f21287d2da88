//! `verify`: how fast each side proves that green equals blue, on `pgbench -i -s N` copied to
//! green, and whether blueshift's verify finds injected differences exactly.
//!
//! ```text
//!  setup: pgbench -i on blue, pg_dump | pg_restore into green (equal), blue's publication and
//!         an idle logical slot (blueshift verify's quiet pair: nothing pending for green)
//!  per run, each side in turn (order alternates), timed:
//!    blueshift   blueshift verify --workers W (counts + chunk checksums, bisection on mismatch)
//!    sql_peer    per table, both sides at once: SELECT count(*), sum(hashtext(t::text)) FROM t
//!    dump_diff   per table, both sides at once: COPY (SELECT … ORDER BY key) TO STDOUT, the two
//!                streams compared byte for byte
//!  each must say "equal"; then K rows are changed, deleted and added on green, and blueshift
//!  verify must report exactly K differences (recall and false positives)
//! ```

use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use futures_util::StreamExt as _;

use super::{copy_database, turns, Context, DumpSection};
use crate::consumer::{self, Child, Endpoints};
use crate::pgbench::{self, TABLES};
use crate::results::{figure, Better, ScenarioResult, BLUESHIFT, WORKLOAD};
use crate::say;
use crate::server::Server;

const SQL_PEER: &str = "sql_peer";
/// blueshift verify with `--hashing client` (rows streamed out, xxh3 here), measured beside
/// the default (`--hashing server`) to pick between them.
const STREAMED: &str = "blueshift_streamed";
const DUMP: &str = "dump_diff";
const DB: &str = "bench_verify";
const PUBLICATION: &str = "bench_verify_pub";
const SLOT: &str = "bs_verify";

/// The order each table is dumped in (its key; pgbench_history has none: every column).
fn order_by(table: &str) -> &'static str {
    match table {
        "pgbench_accounts" => "aid",
        "pgbench_branches" => "bid",
        "pgbench_tellers" => "tid",
        _ => "tid, bid, aid, delta, mtime, filler",
    }
}

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("verify", vec![SQL_PEER, STREAMED, DUMP]);
    r.workload = format!(
        "`pgbench -i -s {}` on blue, copied to green with pg_dump/pg_restore (equal); no writes",
        o.scale
    );
    r.timed = format!(
        "start → the answer \"equal\". blueshift: `blueshift verify --workers {w}` (a temporary \
         slot's snapshot at L on blue, green proven quiet and caught up; per chunk of 50 000 keys \
         count and a sum of 64-bit row hashes (hashtextextended) on both servers; constraints and sequences); \
         sql_peer: per table `SELECT count(*), sum(hashtext(t::text))` on both sides at once, \
         every table at once; dump_diff: per table `COPY (SELECT * … ORDER BY key) TO STDOUT` \
         from both sides at once, compared byte for byte in the bench; blueshift_streamed: \
         `blueshift verify --hashing client` (the same chunks, each one's canonical rows \
         streamed out and hashed with xxh3 in blueshift)",
        w = o.workers
    );
    r.figures = vec![
        figure("verify_s", "seconds to the answer", Better::Lower, 2),
        figure("rows_per_s", "rows/s per side", Better::Higher, 0),
    ];
    r.workload_figures = vec![
        ("rows".into(), "rows".into(), 0),
        ("recall".into(), "recall, %".into(), 0),
        ("false_positives".into(), "false positives".into(), 0),
    ];
    r.notes.push(
        "recall: after the timed runs, 3 rows changed, 3 deleted and 3 added on green; \
         blueshift verify must exit 1 and record exactly 9 differences (100 % = all found, \
         none more). False positives under writes are covered by the end-to-end test \
         `verify_e2e::zero_differences_under_pgbench_load_at_several_moments` (the sidecar \
         holding green at L)."
            .to_owned(),
    );
    match setup(ctx).await {
        Err(e) => r.error = Some(format!("{e:#}")),
        Ok(rows) => {
            for run in 1..=o.runs {
                r.sample(run, WORKLOAD, "rows", rows);
                for side in turns(&[BLUESHIFT, SQL_PEER, STREAMED, DUMP], run) {
                    let started = Instant::now();
                    let result = match side {
                        BLUESHIFT => blueshift(ctx, run, "server").await,
                        STREAMED => blueshift(ctx, run, "client").await,
                        SQL_PEER => sql_peer(ctx).await,
                        _ => dump_diff(ctx).await,
                    };
                    let secs = started.elapsed().as_secs_f64();
                    match result {
                        Ok(()) => {
                            say(format!("verify {side}: equal in {secs:.2} s"));
                            r.sample(run, side, "verify_s", secs);
                            r.sample(run, side, "rows_per_s", rows / secs);
                        }
                        Err(e) => r.fail(Some(run), Some(side), &e),
                    }
                }
            }
            match recall(ctx).await {
                Ok((recall, extra)) => {
                    r.sample(1, WORKLOAD, "recall", recall);
                    r.sample(1, WORKLOAD, "false_positives", extra);
                }
                Err(e) => r.fail(None, Some(BLUESHIFT), &e),
            }
        }
    }
    teardown(ctx).await;
    r
}

async fn setup(ctx: &Context<'_>) -> anyhow::Result<f64> {
    let blue = ctx.blue();
    teardown(ctx).await;
    blue.recreate_database(DB).await?;
    say(format!("pgbench -i -s {} on blue/{DB}", ctx.options.scale));
    pgbench::init(blue, DB, ctx.options.scale).await?;
    copy_database(ctx, DB, DB, DumpSection::All).await?;
    blue.execute(
        DB,
        &format!(
            "CREATE PUBLICATION {PUBLICATION} FOR TABLE {}",
            TABLES.join(", ")
        ),
    )
    .await?;
    blue.execute(
        DB,
        &format!("SELECT pg_catalog.pg_create_logical_replication_slot('{SLOT}', 'pgoutput')"),
    )
    .await?;
    let sql = TABLES
        .iter()
        .map(|t| format!("(SELECT count(*) FROM public.{t})"))
        .collect::<Vec<_>>()
        .join(" + ");
    Ok(blue.value(DB, &format!("SELECT {sql}")).await?.parse()?)
}

async fn teardown(ctx: &Context<'_>) {
    let _ = consumer::drop_slot(ctx.blue(), DB, SLOT).await;
    let _ = ctx.green().drop_database(DB).await;
    let _ = ctx.blue().drop_database(DB).await;
}

fn verify_child(ctx: &Context<'_>, log: &str, hashing: &str) -> anyhow::Result<Child> {
    let workers = ctx.options.workers.to_string();
    Child::start(
        ctx.blueshift,
        &[
            "verify",
            "--publication",
            PUBLICATION,
            "--slot",
            SLOT,
            "--workers",
            &workers,
            "--format",
            "json",
            "--hashing",
            hashing,
        ],
        &Endpoints {
            blue: ctx.blue(),
            blue_db: DB,
            green: ctx.green(),
            green_db: DB,
        },
        true,
        ctx.logs,
        log,
    )
}

async fn blueshift(ctx: &Context<'_>, run: u32, hashing: &str) -> anyhow::Result<()> {
    let out = verify_child(ctx, &format!("verify-{hashing}-run{run}"), hashing)?
        .wait(ctx.timeout())
        .await?;
    let report: serde_json::Value =
        serde_json::from_str(out.trim()).context("blueshift verify printed no JSON report")?;
    ensure!(
        report["equal"] == true,
        "blueshift verify: not equal: {report}"
    );
    Ok(())
}

async fn sql_peer(ctx: &Context<'_>) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for server in [ctx.blue(), ctx.green()] {
        for table in TABLES {
            let client = server.connect(DB).await?;
            let side = if std::ptr::eq(server, ctx.blue()) {
                "blue"
            } else {
                "green"
            };
            tasks.spawn(async move {
                let row = client
                    .query_one(
                        &format!(
                            "SELECT count(*), coalesce(sum(hashtext(t::text)), 0)::text \
                             FROM public.{table} t"
                        ),
                        &[],
                    )
                    .await?;
                Ok::<_, anyhow::Error>((side, table, row.get::<_, i64>(0), row.get::<_, String>(1)))
            });
        }
    }
    let mut sums = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (side, table, count, sum) = done??;
        sums.insert((side, table), (count, sum));
    }
    for table in TABLES {
        ensure!(
            sums.get(&("blue", table)) == sums.get(&("green", table)),
            "sql_peer: {table} differs"
        );
    }
    Ok(())
}

/// Streams `COPY (SELECT … ORDER BY key) TO STDOUT` of `table` from `server` (with the client
/// the stream needs alive).
async fn dump(
    server: &Server,
    table: &str,
) -> anyhow::Result<(tokio_postgres::Client, tokio_postgres::CopyOutStream)> {
    let client = server.connect(DB).await?;
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT * FROM public.{table} ORDER BY {}) TO STDOUT",
            order_by(table)
        ))
        .await?;
    Ok((client, stream))
}

async fn dump_diff(ctx: &Context<'_>) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for table in TABLES {
        let (blue_client, blue) = dump(ctx.blue(), table).await?;
        let (green_client, green) = dump(ctx.green(), table).await?;
        tasks.spawn(async move {
            let _clients = (blue_client, green_client);
            let (mut a, mut b) = (Box::pin(blue), Box::pin(green));
            let (mut pa, mut pb): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
            let (mut done_a, mut done_b) = (false, false);
            loop {
                // Read from the side that is behind (or either while both are even).
                if pa.len() <= pb.len() && !done_a {
                    match a.next().await {
                        Some(chunk) => pa.extend_from_slice(&chunk?),
                        None => done_a = true,
                    }
                } else if !done_b {
                    match b.next().await {
                        Some(chunk) => pb.extend_from_slice(&chunk?),
                        None => done_b = true,
                    }
                } else if !done_a {
                    match a.next().await {
                        Some(chunk) => pa.extend_from_slice(&chunk?),
                        None => done_a = true,
                    }
                }
                let common = pa.len().min(pb.len());
                if pa[..common] != pb[..common] {
                    bail!("dump_diff: {table} differs");
                }
                pa.drain(..common);
                pb.drain(..common);
                if done_a && done_b {
                    ensure!(
                        pa.is_empty() && pb.is_empty(),
                        "dump_diff: {table} differs in length"
                    );
                    return Ok(());
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Injects 9 differences on green; (the share blueshift verify reports in percent, the
/// differences it reports beyond them).
async fn recall(ctx: &Context<'_>) -> anyhow::Result<(f64, f64)> {
    const INJECTED: i64 = 9;
    let green = ctx.green();
    green
        .execute(
            DB,
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (7, 70007, 99997); \
             DELETE FROM pgbench_accounts WHERE aid IN (11, 50011, 90011); \
             INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES \
                 (1, 1, 1, 1, now()), (2, 1, 2, 2, now()), (3, 1, 3, 3, now())",
        )
        .await?;
    let child = verify_child(ctx, "verify-recall", "server")?;
    // Exit 1 (differences) is the expected outcome: the count is read from green's record.
    let _ = child.wait(ctx.timeout()).await;
    let found: i64 = green
        .value(
            DB,
            "SELECT coalesce(differences, -1) FROM blueshift.verify_run ORDER BY id DESC LIMIT 1",
        )
        .await?
        .parse()?;
    say(format!(
        "verify recall: {found} of {INJECTED} injected differences reported"
    ));
    ensure!(found >= 0, "blueshift verify recorded no outcome");
    Ok((
        100.0 * (found.min(INJECTED) as f64) / (INJECTED as f64),
        (found - INJECTED).max(0) as f64,
    ))
}
