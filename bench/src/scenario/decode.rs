//! `decode`: a recorded backlog (TPC-B for D seconds, then one transaction inserting M rows)
//! held by two pgoutput slots; each consumer reads its slot to the end LSN into a sink that
//! discards: blueshift's replication stream and decoder (`blueshift bench-decode-sink`), and
//! `pg_recvlogical` writing to /dev/null.
//!
//! ```text
//!  per run: slots bs_decode + recv_decode created → pgbench -T D → INSERT of M rows → end LSN
//!           → each side in turn: start → exits at the end LSN (timed)
//!           → checked: blueshift decoded exactly the rows written; both slots acknowledged
//!             the end LSN → slots dropped
//! ```
//!
//! Both ask the walsender for the same thing: the same slot kind (pgoutput), the same
//! `proto_version` and `publication_names`, no streaming, no logical messages, text values.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use super::{shared_client, turns, Context};
use crate::consumer::{self, Child, Endpoints};
use crate::decode_sink::Counts;
use crate::pgbench::{self, CHANGES_PER_TRANSACTION, TABLES};
use crate::process::{Role, Since, Source, Watch};
use crate::results::{figure, Better, ScenarioResult, BLUESHIFT, PROCESS_FIGURES, WORKLOAD};
use crate::say;
use crate::server::{literal, query_value, Server};

const PEER: &str = "pg_recvlogical";
const DB: &str = "bench_decode";
const PUBLICATION: &str = "bench_decode_pub";
const BS_SLOT: &str = "bs_decode";
const PEER_SLOT: &str = "recv_decode";

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("decode", vec![PEER]);
    r.workload = format!(
        "`pgbench -i -s {}`; a backlog recorded in two pgoutput slots: TPC-B (`pgbench -c {c} -j \
         {c} -T {}`) then one transaction inserting {} rows into pgbench_history",
        o.scale,
        o.duration,
        o.decode_rows,
        c = o.clients
    );
    r.timed = "start → the consumer exits at the backlog's end LSN, everything decoded and \
               discarded (blueshift: its replication stream and pgoutput decoder into a counting \
               sink; peer: `pg_recvlogical --endpos … -f /dev/null` with the same \
               `proto_version` and `publication_names`)"
        .to_owned();
    r.figures = vec![
        figure("decode_s", "seconds to the end LSN", Better::Lower, 2),
        figure("wal_mib_per_s", "WAL MiB/s decoded", Better::Higher, 1),
    ];
    r.figures.extend(PROCESS_FIGURES);
    r.workload_figures = vec![
        ("transactions".into(), "TPC-B transactions".into(), 0),
        ("wal_mib".into(), "backlog WAL MiB".into(), 1),
    ];
    match setup(ctx).await {
        Err(e) => r.error = Some(format!("{e:#}")),
        Ok(proto) => {
            for run in 1..=o.runs {
                if let Err(e) = one_run(ctx, run, proto, &mut r).await {
                    r.fail(Some(run), None, &e);
                }
                for slot in [BS_SLOT, PEER_SLOT] {
                    let _ = consumer::drop_slot(ctx.blue(), DB, slot).await;
                }
            }
        }
    }
    let _ = ctx.blue().drop_database(DB).await;
    r
}

/// The database and publication; returns the pgoutput protocol version both sides use.
async fn setup(ctx: &Context<'_>) -> anyhow::Result<u32> {
    let blue = ctx.blue();
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
    proto_version(blue, DB).await
}

/// The newest pgoutput protocol version blue's server speaks (without streaming).
pub(super) async fn proto_version(blue: &Server, db: &str) -> anyhow::Result<u32> {
    let version: u32 = blue
        .value(db, "SHOW server_version_num")
        .await?
        .parse()
        .context("server_version_num")?;
    Ok(match version {
        v if v >= 160_000 => 4,
        v if v >= 150_000 => 3,
        v if v >= 140_000 => 2,
        _ => 1,
    })
}

async fn one_run(
    ctx: &Context<'_>,
    run: u32,
    proto: u32,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let blue = ctx.blue();
    let b = blue.connect(DB).await?;
    for slot in [BS_SLOT, PEER_SLOT] {
        b.batch_execute(&format!(
            "SELECT pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput')",
            literal(slot)
        ))
        .await?;
    }
    let start = query_value(&b, "SELECT pg_catalog.pg_current_wal_lsn()").await?;
    say(format!(
        "decode run {run}/{}: recording the backlog",
        o.runs
    ));
    let load = pgbench::run(blue, DB, o.clients, o.duration, None).await?;
    b.batch_execute(&format!(
        "INSERT INTO public.pgbench_history (tid, bid, aid, delta, mtime) \
         SELECT g % 10 + 1, 1, g, 0, now() FROM generate_series(1, {}) g",
        o.decode_rows
    ))
    .await?;
    let end = query_value(&b, "SELECT pg_catalog.pg_current_wal_lsn()").await?;
    let wal: f64 = query_value(
        &b,
        &format!("SELECT ('{end}'::pg_lsn - '{start}'::pg_lsn)::float8"),
    )
    .await?
    .parse()
    .unwrap_or(f64::NAN);
    r.sample(run, WORKLOAD, "transactions", load.transactions as f64);
    r.sample(run, WORKLOAD, "wal_mib", wal / 1048576.0);
    let expected_inserts = load.transactions + o.decode_rows;
    let expected_updates = load.transactions * 3;
    let changes = load.transactions as f64 * CHANGES_PER_TRANSACTION + o.decode_rows as f64;
    say(format!(
        "backlog: {} transactions + {} rows, {:.1} MiB of WAL, end LSN {end}",
        load.transactions,
        o.decode_rows,
        wal / 1048576.0
    ));
    for side in turns(&[BLUESHIFT, PEER], run) {
        let result = async {
            let watch_client = shared_client(blue, DB).await?;
            let started = Instant::now();
            let (elapsed, usage) = if side == BLUESHIFT {
                let proto = proto.to_string();
                let child = Child::start(
                    ctx.blueshift,
                    &[
                        "bench-decode-sink",
                        "--publication",
                        PUBLICATION,
                        "--slot",
                        BS_SLOT,
                        "--until",
                        &end,
                        "--proto-version",
                        &proto,
                    ],
                    &Endpoints { blue, blue_db: DB, green: ctx.green(), green_db: "" },
                    false,
                    ctx.logs,
                    &format!("decode-run{run}"),
                )?;
                let watch = Watch::start(
                    vec![
                        (Role::Consumer, Since::Start, Source::Own(child.pid())),
                        (Role::Walsender, Since::Start, Source::Slot { client: watch_client, slot: BS_SLOT.to_owned() }),
                    ],
                    ctx.local(),
                );
                let out = child.wait(ctx.timeout()).await;
                let elapsed = started.elapsed();
                let usage = watch.finish().await;
                let counts: Counts = serde_json::from_str(out?.trim())
                    .context("the decode sink's counts")?;
                ensure!(
                    counts.inserts == expected_inserts && counts.updates == expected_updates,
                    "blueshift decoded {} inserts and {} updates; blue wrote {expected_inserts} and \
                     {expected_updates}",
                    counts.inserts,
                    counts.updates
                );
                (elapsed, usage)
            } else {
                let stream = Recv {
                    db: DB,
                    slot: PEER_SLOT,
                    publication: PUBLICATION,
                    proto,
                };
                recvlogical(ctx, blue, &stream, &end, watch_client, started).await?
            };
            let slot = if side == BLUESHIFT { BS_SLOT } else { PEER_SLOT };
            let acked = query_value(
                &b,
                &format!(
                    "SELECT confirmed_flush_lsn >= '{end}'::pg_lsn FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = {}",
                    literal(slot)
                ),
            )
            .await?;
            ensure!(acked == "t", "{side} exited but slot {slot} has not acknowledged the end LSN {end}");
            Ok::<_, anyhow::Error>((elapsed, usage))
        }
        .await;
        match result {
            Ok((elapsed, usage)) => {
                let secs = elapsed.as_secs_f64();
                say(format!(
                    "{side}: decoded to {end} in {secs:.2} s ({:.1} WAL MiB/s)",
                    wal / 1048576.0 / secs
                ));
                r.sample(run, side, "decode_s", secs);
                r.sample(run, side, "wal_mib_per_s", wal / 1048576.0 / secs);
                r.usage(run, side, &usage, changes);
            }
            Err(e) => r.fail(Some(run), Some(side), &e),
        }
    }
    Ok(())
}

/// What `pg_recvlogical` streams: database, slot, publication and pgoutput version.
pub(super) struct Recv<'a> {
    pub(super) db: &'a str,
    pub(super) slot: &'a str,
    pub(super) publication: &'a str,
    pub(super) proto: u32,
}

/// `pg_recvlogical --start --endpos <end> -f /dev/null` with the same plugin options.
pub(super) async fn recvlogical(
    ctx: &Context<'_>,
    blue: &Server,
    stream: &Recv<'_>,
    end: &str,
    watch_client: std::sync::Arc<tokio_postgres::Client>,
    started: Instant,
) -> anyhow::Result<(
    Duration,
    std::collections::HashMap<Role, crate::process::Usage>,
)> {
    let mut cmd = tokio::process::Command::from(blue.command("pg_recvlogical"));
    cmd.args([
        "-d",
        stream.db,
        "--slot",
        stream.slot,
        "--start",
        "--no-loop",
        "-f",
        "/dev/null",
    ])
    .arg(format!("--endpos={end}"))
    .args(["-o", &format!("proto_version={}", stream.proto)])
    .args(["-o", &format!("publication_names={}", stream.publication)])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let child = cmd.spawn().context("could not run pg_recvlogical")?;
    let watch = Watch::start(
        vec![
            (
                Role::Consumer,
                Since::Start,
                Source::Own(child.id().unwrap_or(0)),
            ),
            (
                Role::Walsender,
                Since::Start,
                Source::Slot {
                    client: watch_client,
                    slot: stream.slot.to_owned(),
                },
            ),
        ],
        ctx.local(),
    );
    let out = tokio::time::timeout(ctx.timeout(), child.wait_with_output())
        .await
        .context("pg_recvlogical did not reach the end LSN in time")??;
    let elapsed = started.elapsed();
    let usage = watch.finish().await;
    ensure!(
        out.status.success(),
        "pg_recvlogical failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((elapsed, usage))
}
