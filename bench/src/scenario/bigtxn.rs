//! `bigtxn`: one INSERT of N rows, one UPDATE and one DELETE of the same N rows on blue, each a
//! single transaction; timed from blue's commit until green shows it; peak memory of the consumer.
//!
//! ```text
//!  setup: per side its own blue database and green database (table big, the marker table),
//!         a publication; native: a subscription with streaming = on, disabled
//!  per run, each side in turn: start, catch up → INSERT N rows (commit) → row N visible on
//!         green (timed) → green equal → UPDATE N rows (commit) → row N updated on green
//!         (timed) → green equal → DELETE N rows (commit) → row 1 gone on green (timed)
//!         → green equal → stop
//! ```
//!
//! A transaction is atomic on green for both consumers, so its last (or first) row showing
//! (or gone) means all of it did: the poll is an index probe, not a count.

use std::time::Instant;

use super::{marker_visible, sentinel, shared_client, turns, Context};
use crate::check::tables_equal;
use crate::consumer::{self, poll_until, Child, Endpoints, Subscription};
use crate::process::{Role, Since, Source, Watch};
use crate::results::{figure, Better, ScenarioResult, BLUESHIFT, PROCESS_FIGURES};
use crate::say;

const NATIVE: &str = "native";
const SCHEMA: &str = "
CREATE TABLE public.big (id bigint PRIMARY KEY, k int NOT NULL, payload text NOT NULL);
CREATE TABLE public.bench_marker (id bigserial PRIMARY KEY,
                                  blue_at timestamptz NOT NULL DEFAULT clock_timestamp());
";
const TABLES: [&str; 2] = ["big", "bench_marker"];
const BS_SLOT: &str = "bs_bigtxn";

fn db(side: &str) -> String {
    format!(
        "bench_bigtxn_{}",
        if side == BLUESHIFT { "bs" } else { NATIVE }
    )
}

fn publication(side: &str) -> String {
    format!("{}_pub", db(side))
}

fn subscription() -> Subscription {
    Subscription {
        name: "native_bigtxn".to_owned(),
        slot: "native_bigtxn".to_owned(),
        green_db: db(NATIVE),
        blue_db: db(NATIVE),
    }
}

pub(super) async fn run(ctx: &Context<'_>) -> ScenarioResult {
    let o = ctx.options;
    let mut r = ScenarioResult::new("bigtxn", vec![NATIVE]);
    r.workload = format!(
        "one `INSERT` of {n} rows (bigint key, int, 32-byte text), one `UPDATE` (of `k`) and \
         one `DELETE` of the same {n} rows on blue, each a single transaction",
        n = o.bigtxn_rows
    );
    r.timed = format!(
        "blue's commit → green shows the transaction (its last row there, or its first row \
         gone), then green is compared with blue; peak RSS over both (blueshift sync's memory \
         budget `--max-txn-memory` {}); peer: native subscription with `streaming = on`",
        o.bigtxn_memory.as_deref().unwrap_or("64MiB, the default")
    );
    r.figures = vec![
        figure("insert_s", "INSERT: commit → on green, s", Better::Lower, 2),
        figure("update_s", "UPDATE: commit → on green, s", Better::Lower, 2),
        figure("delete_s", "DELETE: commit → on green, s", Better::Lower, 2),
    ];
    r.figures.extend(PROCESS_FIGURES);
    match setup(ctx).await {
        Err(e) => r.error = Some(format!("{e:#}")),
        Ok(()) => {
            for run in 1..=o.runs {
                for side in turns(&[BLUESHIFT, NATIVE], run) {
                    if let Err(e) = turn(ctx, side, run, &mut r).await {
                        if side == NATIVE {
                            let _ = subscription().disable(ctx.blue(), ctx.green()).await;
                        }
                        r.fail(Some(run), Some(side), &e);
                    }
                }
            }
        }
    }
    teardown(ctx).await;
    r
}

async fn setup(ctx: &Context<'_>) -> anyhow::Result<()> {
    let (blue, green) = (ctx.blue(), ctx.green());
    teardown(ctx).await;
    for side in [BLUESHIFT, NATIVE] {
        let db = db(side);
        blue.recreate_database(&db).await?;
        green.recreate_database(&db).await?;
        blue.execute(&db, SCHEMA).await?;
        green.execute(&db, SCHEMA).await?;
        blue.execute(
            &db,
            &format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                publication(side),
                TABLES.join(", ")
            ),
        )
        .await?;
    }
    let bs = db(BLUESHIFT);
    super::create_sync_slot(
        ctx,
        &Endpoints {
            blue,
            blue_db: &bs,
            green,
            green_db: &bs,
        },
        &publication(BLUESHIFT),
        BS_SLOT,
    )
    .await?;
    subscription()
        .create(blue, green, &publication(NATIVE), false, false)
        .await
}

async fn teardown(ctx: &Context<'_>) {
    let (blue, green) = (ctx.blue(), ctx.green());
    let _ = subscription().drop(blue, green).await;
    let _ = consumer::drop_slot(blue, &db(BLUESHIFT), BS_SLOT).await;
    let _ = consumer::drop_origins(green, green.maintenance_db(), BS_SLOT).await;
    for side in [BLUESHIFT, NATIVE] {
        let _ = green.drop_database(&db(side)).await;
        let _ = blue.drop_database(&db(side)).await;
    }
}

async fn turn(
    ctx: &Context<'_>,
    side: &'static str,
    run: u32,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let o = ctx.options;
    let (blue, green) = (ctx.blue(), ctx.green());
    let db = db(side);
    let b = blue.connect(&db).await?;
    let g = green.connect(&db).await?;
    let sub = subscription();
    let mut sync: Option<Child> = None;
    let sources = if side == BLUESHIFT {
        let memory: Vec<&str> = match &o.bigtxn_memory {
            Some(size) => vec!["--max-txn-memory", size],
            None => Vec::new(),
        };
        let s = consumer::start_sync_with(
            ctx.blueshift,
            &Endpoints {
                blue,
                blue_db: &db,
                green,
                green_db: &db,
            },
            &publication(side),
            BS_SLOT,
            o.workers,
            ctx.logs,
            &format!("bigtxn-run{run}"),
            &memory,
        )?;
        let pid = s.pid();
        sync = Some(s);
        vec![
            (Role::Consumer, Since::Start, Source::Own(pid)),
            (
                Role::Walsender,
                Since::Start,
                Source::Slot {
                    client: shared_client(blue, &db).await?,
                    slot: BS_SLOT.to_owned(),
                },
            ),
        ]
    } else {
        sub.enable(green).await?;
        vec![
            (
                Role::Consumer,
                Since::Start,
                Source::Subscription {
                    client: shared_client(green, &db).await?,
                    name: sub.name.clone(),
                },
            ),
            (
                Role::Walsender,
                Since::Start,
                Source::Slot {
                    client: shared_client(blue, &db).await?,
                    slot: sub.slot.clone(),
                },
            ),
        ]
    };
    let watch = Watch::start(sources, ctx.local());
    let mut alive = || match sync.as_mut() {
        Some(s) => s.check_running(),
        None => Ok(()),
    };
    // Caught up before the big transaction.
    let id = sentinel(&b).await?;
    poll_until(
        &format!("{side} streaming"),
        ctx.timeout(),
        &mut alive,
        || marker_visible(&g, id),
    )
    .await?;

    let n = i64::try_from(o.bigtxn_rows)?;
    say(format!(
        "bigtxn run {run}/{}: {side}, INSERT of {n} rows",
        o.runs
    ));
    b.batch_execute(&format!(
        "INSERT INTO public.big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, {n}) g"
    ))
    .await?;
    let committed = Instant::now();
    let probe = "SELECT EXISTS (SELECT 1 FROM public.big WHERE id = $1)";
    poll_until(
        &format!("{side} applying the INSERT"),
        ctx.timeout(),
        &mut alive,
        || async { Ok(g.query_one(probe, &[&n]).await?.get::<_, bool>(0)) },
    )
    .await?;
    let insert = committed.elapsed().as_secs_f64();
    tables_equal(blue, &db, green, &db, &TABLES).await?;

    say(format!(
        "{side}: INSERT on green after {insert:.2} s; UPDATE of {n} rows"
    ));
    b.batch_execute("UPDATE public.big SET k = -1 - k").await?;
    let committed = Instant::now();
    let updated = "SELECT k < 0 FROM public.big WHERE id = $1";
    poll_until(
        &format!("{side} applying the UPDATE"),
        ctx.timeout(),
        &mut alive,
        || async { Ok(g.query_one(updated, &[&n]).await?.get::<_, bool>(0)) },
    )
    .await?;
    let update = committed.elapsed().as_secs_f64();
    tables_equal(blue, &db, green, &db, &TABLES).await?;

    say(format!(
        "{side}: UPDATE on green after {update:.2} s; DELETE of {n} rows"
    ));
    b.batch_execute("DELETE FROM public.big").await?;
    let committed = Instant::now();
    poll_until(
        &format!("{side} applying the DELETE"),
        ctx.timeout(),
        &mut alive,
        || async { Ok(!g.query_one(probe, &[&1i64]).await?.get::<_, bool>(0)) },
    )
    .await?;
    let delete = committed.elapsed().as_secs_f64();
    let usage = watch.finish().await;
    tables_equal(blue, &db, green, &db, &TABLES).await?;
    match sync.take() {
        Some(s) => s.stop().await?,
        None => sub.disable(blue, green).await?,
    }
    say(format!(
        "{side}: DELETE on green after {delete:.2} s; green equals blue"
    ));
    r.sample(run, side, "insert_s", insert);
    r.sample(run, side, "update_s", update);
    r.sample(run, side, "delete_s", delete);
    r.usage(run, side, &usage, 3.0 * n as f64);
    Ok(())
}
