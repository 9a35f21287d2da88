//! The scenarios (issue 6's five, verify, cutover, bidirectional), and what they share: the context, the blue database with its
//! publication and marker table, the pair of green databases (one per consumer) and the
//! sentinel that tells when a consumer has caught up.
//!
//! Each scenario sets up its own databases on the two servers, runs K times with every side in
//! turn (the order alternates between runs), checks each run before it records a figure, and
//! tears everything down (subscriptions, slots, origins, databases) whatever happened.

mod backfill;
mod bidirectional;
mod bigtxn;
mod catchup;
mod cutover;
mod decode;
mod live;
mod outage;
mod verify;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::consumer::{self, poll_until, Endpoints, Subscription};
use crate::options::{Scenario, Validated};
use crate::process::{Role, Since, Source};
use crate::results::ScenarioResult;
use crate::server::{query_value, Server, Servers};
use crate::workload::Workload;
use crate::{pgbench, say};

/// What every scenario runs with.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) options: &'a Validated,
    pub(crate) servers: &'a Servers,
    pub(crate) blueshift: &'a Path,
    pub(crate) logs: &'a Path,
}

impl Context<'_> {
    pub(crate) fn blue(&self) -> &Server {
        &self.servers.blue
    }

    pub(crate) fn green(&self) -> &Server {
        &self.servers.green
    }

    /// Whether /proc shows the servers' processes.
    pub(crate) fn local(&self) -> bool {
        self.servers.blue.is_local() && self.servers.green.is_local()
    }

    /// A bound on any one wait: generous, scaled with the work.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(
            600 + 60 * u64::from(self.options.scale) + 20 * u64::from(self.options.duration),
        )
    }
}

/// Runs one scenario; failures are recorded in the result.
pub(crate) async fn run(scenario: Scenario, ctx: &Context<'_>) -> ScenarioResult {
    match scenario {
        Scenario::Catchup => catchup::run(ctx).await,
        Scenario::Live => live::run(ctx).await,
        Scenario::Backfill => backfill::run(ctx).await,
        Scenario::Decode => decode::run(ctx).await,
        Scenario::Bigtxn => bigtxn::run(ctx).await,
        Scenario::Verify => verify::run(ctx).await,
        Scenario::Cutover => cutover::run(ctx).await,
        Scenario::CatchupOutage => outage::run(ctx).await,
        Scenario::Bidirectional => bidirectional::run(ctx).await,
    }
}

/// The order of the sides in run `run` (1-based): rotated by one each run.
pub(crate) fn turns<T: Clone>(sides: &[T], run: u32) -> Vec<T> {
    let mut v = sides.to_vec();
    if !v.is_empty() {
        let k = (run as usize - 1) % v.len();
        v.rotate_left(k);
    }
    v
}

/// The marker table: one row per marker, its blue commit time set on blue. Published with the
/// pgbench tables; also the sentinel that tells when a consumer has caught up.
pub(crate) const MARKER_TABLE: &str =
    "CREATE TABLE public.bench_marker (id bigserial PRIMARY KEY, \
                            blue_at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// On green only: when each marker became visible, recorded at the commit of the transaction
/// that applied it (a deferred constraint trigger, enabled ALWAYS so it fires under
/// `session_replication_role = replica`, for blueshift's appliers and native apply alike).
pub(crate) const MARKER_SEEN: &str = "
CREATE TABLE public.bench_marker_seen (id bigint PRIMARY KEY, green_at timestamptz NOT NULL);
CREATE FUNCTION public.bench_marker_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.bench_marker_seen VALUES (NEW.id, clock_timestamp()) ON CONFLICT (id) DO NOTHING;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER bench_marker_seen AFTER INSERT ON public.bench_marker
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.bench_marker_seen();
ALTER TABLE public.bench_marker ENABLE ALWAYS TRIGGER bench_marker_seen;
";

/// The tables compared between blue and green after a run.
pub(crate) const PAIR_TABLES: [&str; 5] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
    "bench_marker",
];

/// A blue database with pgbench's tables and the marker table, published; one green database
/// for blueshift and one for the native subscription, both with blue's rows; blueshift's slot
/// created and the subscription created, both paused.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) blue_db: String,
    pub(crate) bs_db: String,
    pub(crate) publication: String,
    pub(crate) bs_slot: String,
    pub(crate) native: Subscription,
    /// Tables of other write loads, created on blue and published beside pgbench's.
    pub(crate) workloads: Vec<Workload>,
}

impl Pair {
    pub(crate) fn new(scenario: &str) -> Pair {
        let blue_db = format!("bench_{scenario}");
        Pair {
            bs_db: format!("bench_{scenario}_bs"),
            publication: format!("bench_{scenario}_pub"),
            bs_slot: format!("bs_{scenario}"),
            native: Subscription {
                name: format!("native_{scenario}"),
                slot: format!("native_{scenario}"),
                green_db: format!("bench_{scenario}_native"),
                blue_db: blue_db.clone(),
            },
            blue_db,
            workloads: Vec::new(),
        }
    }

    /// The same pair with the tables of `workloads` too.
    pub(crate) fn with_workloads(mut self, workloads: &[Workload]) -> Pair {
        self.workloads = workloads.to_vec();
        self
    }

    /// Starts `side`'s consumer: `blueshift sync` (its log `<log>.log`, returned) or the native
    /// subscription, enabled (`None`).
    pub(crate) async fn start_consumer(
        &self,
        ctx: &Context<'_>,
        side: &str,
        log: &str,
    ) -> anyhow::Result<Option<consumer::Child>> {
        if side == crate::results::BLUESHIFT {
            Ok(Some(consumer::start_sync(
                ctx.blueshift,
                &self.ends(ctx),
                &self.publication,
                &self.bs_slot,
                ctx.options.workers,
                ctx.logs,
                log,
            )?))
        } else {
            self.native.enable(ctx.green()).await?;
            Ok(None)
        }
    }

    /// The sessions the /proc sampler looks things up with, for `side` (open them before a
    /// timed section).
    pub(crate) async fn watchers(&self, ctx: &Context<'_>, side: &str) -> anyhow::Result<Watchers> {
        Ok(Watchers {
            blue: shared_client(ctx.blue(), &self.blue_db).await?,
            green: shared_client(ctx.green(), self.green_db(side)).await?,
        })
    }

    /// What to watch in /proc while `side` applies: blueshift's process `pid` (counted from
    /// `consumer`), its sessions on green and its walsender, or the native subscription's
    /// workers and walsender (all but blueshift's process counted from `others`).
    pub(crate) fn watch_sources(
        &self,
        watchers: Watchers,
        side: &str,
        pid: Option<u32>,
        consumer: Since,
        others: Since,
    ) -> Vec<(Role, Since, Source)> {
        let Watchers { blue, green } = watchers;
        match pid {
            Some(pid) => vec![
                (Role::Consumer, consumer, Source::Own(pid)),
                (
                    Role::GreenBackends,
                    others,
                    Source::Backends {
                        client: green,
                        database: self.green_db(side).to_owned(),
                        prefix: "blueshift".to_owned(),
                    },
                ),
                (
                    Role::Walsender,
                    others,
                    Source::Slot {
                        client: blue,
                        slot: self.bs_slot.clone(),
                    },
                ),
            ],
            None => vec![
                (
                    Role::Consumer,
                    others,
                    Source::Subscription {
                        client: green,
                        name: self.native.name.clone(),
                    },
                ),
                (
                    Role::Walsender,
                    others,
                    Source::Slot {
                        client: blue,
                        slot: self.native.slot.clone(),
                    },
                ),
            ],
        }
    }

    /// Every published table: pgbench's, the marker, the workloads'.
    pub(crate) fn tables(&self) -> Vec<&'static str> {
        let mut tables = PAIR_TABLES.to_vec();
        tables.extend(self.workloads.iter().filter_map(|w| w.table()));
        tables
    }

    pub(crate) fn ends<'a>(&'a self, ctx: &'a Context<'_>) -> Endpoints<'a> {
        Endpoints {
            blue: ctx.blue(),
            blue_db: &self.blue_db,
            green: ctx.green(),
            green_db: &self.bs_db,
        }
    }

    /// The green database of `side` ("blueshift" or "native").
    pub(crate) fn green_db(&self, side: &str) -> &str {
        if side == crate::results::BLUESHIFT {
            &self.bs_db
        } else {
            &self.native.green_db
        }
    }

    pub(crate) async fn setup(&self, ctx: &Context<'_>) -> anyhow::Result<()> {
        let (blue, green) = (ctx.blue(), ctx.green());
        self.teardown(ctx).await;
        blue.recreate_database(&self.blue_db).await?;
        say(format!(
            "pgbench -i -s {} on blue/{}",
            ctx.options.scale, self.blue_db
        ));
        pgbench::init(blue, &self.blue_db, ctx.options.scale).await?;
        blue.execute(&self.blue_db, MARKER_TABLE).await?;
        for workload in &self.workloads {
            if let Some(sql) = workload.setup_sql(ctx.options.scale) {
                say(format!(
                    "workload {}: {} rows on blue/{}",
                    workload.name(),
                    workload.rows(ctx.options.scale),
                    self.blue_db
                ));
                blue.execute(&self.blue_db, &sql).await?;
            }
        }
        blue.execute(
            &self.blue_db,
            &format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                self.publication,
                self.tables().join(", ")
            ),
        )
        .await?;
        for db in [&self.bs_db, &self.native.green_db] {
            copy_database(ctx, &self.blue_db, db, DumpSection::All).await?;
            green.execute(db, MARKER_SEEN).await?;
            green.execute(db, "VACUUM ANALYZE").await?;
        }
        blue.execute(&self.blue_db, "VACUUM ANALYZE").await?;
        blue.execute(&self.blue_db, "CHECKPOINT").await?;

        create_sync_slot(ctx, &self.ends(ctx), &self.publication, &self.bs_slot).await?;
        self.native
            .create(blue, green, &self.publication, false, false)
            .await?;
        Ok(())
    }

    /// Best effort: everything the pair created, gone.
    pub(crate) async fn teardown(&self, ctx: &Context<'_>) {
        let (blue, green) = (ctx.blue(), ctx.green());
        let _ = self.native.drop(blue, green).await;
        let _ = consumer::drop_slot(blue, &self.blue_db, &self.bs_slot).await;
        let _ = consumer::drop_slot(blue, &self.blue_db, &self.native.slot).await;
        let _ = consumer::drop_origins(green, green.maintenance_db(), &self.bs_slot).await;
        for db in [&self.bs_db, &self.native.green_db] {
            let _ = green.drop_database(db).await;
        }
        let _ = blue.drop_database(&self.blue_db).await;
    }
}

/// A pair's sessions on blue and green that the /proc sampler resolves pids through.
pub(crate) struct Watchers {
    blue: Arc<tokio_postgres::Client>,
    green: Arc<tokio_postgres::Client>,
}

/// Creates blueshift's slot the way a user does: `blueshift sync` creates it on its first
/// start; it is stopped (SIGTERM) once streaming, and the slot keeps the position.
pub(crate) async fn create_sync_slot(
    ctx: &Context<'_>,
    ends: &Endpoints<'_>,
    publication: &str,
    slot: &str,
) -> anyhow::Result<()> {
    say(format!(
        "creating blueshift's slot {slot} (start until streaming, then SIGTERM)"
    ));
    let mut sync = consumer::start_sync(
        ctx.blueshift,
        ends,
        publication,
        slot,
        ctx.options.workers,
        ctx.logs,
        &format!("{slot}-setup"),
    )?;
    let client = ends.blue.connect(ends.blue_db).await?;
    let sql = format!(
        "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = '{slot}' AND active"
    );
    // Active is not enough: a slot being created is active too, and a SIGTERM then leaves no
    // slot but green's origins. Sync says "sync started" once it streams from the slot.
    let log = ctx.logs.join(format!("{slot}-setup.log"));
    poll_until(
        "blueshift's slot streaming",
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
    sync.stop().await
}

/// What of blue's database to copy into a new green database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DumpSection {
    /// Schema and rows.
    All,
    /// Tables, indexes and constraints, no rows.
    Schema,
    /// Only what goes before the rows (tables, no indexes).
    PreData,
    /// Only what goes after the rows (indexes, constraints).
    PostData,
}

/// `pg_dump` of blue/`from` (without publications and subscriptions) restored into
/// green/`to` (created anew unless only post-data is copied).
pub(crate) async fn copy_database(
    ctx: &Context<'_>,
    from: &str,
    to: &str,
    section: DumpSection,
) -> anyhow::Result<()> {
    let (blue, green) = (ctx.blue(), ctx.green());
    if section != DumpSection::PostData {
        green.recreate_database(to).await?;
    }
    let file = ctx.logs.join(format!("{from}-{to}.dump"));
    let path = file.to_str().context("the log folder is not UTF-8")?;
    let mut args = vec!["-Fc", "--no-publications", "--no-subscriptions", "-f", path];
    match section {
        DumpSection::All => {}
        DumpSection::Schema => args.push("--schema-only"),
        DumpSection::PreData => args.extend(["--section", "pre-data"]),
        DumpSection::PostData => args.extend(["--section", "post-data"]),
    }
    args.push(from);
    blue.run("pg_dump", &args).await?;
    let jobs = crate::machine::nproc().to_string();
    green
        .run("pg_restore", &["--no-owner", "-j", &jobs, "-d", to, path])
        .await?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

/// Inserts a marker on blue; returns its id.
pub(crate) async fn sentinel(blue: &tokio_postgres::Client) -> anyhow::Result<i64> {
    let row = blue
        .query_one(
            "INSERT INTO public.bench_marker DEFAULT VALUES RETURNING id",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Whether marker `id` is visible on green.
pub(crate) async fn marker_visible(
    green: &tokio_postgres::Client,
    id: i64,
) -> anyhow::Result<bool> {
    let row = green
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM public.bench_marker WHERE id = $1)",
            &[&id],
        )
        .await?;
    Ok(row.get(0))
}

/// The lag of each marker in `ids` (all visible on the receiving side `client`): (seconds since
/// the first marker's insert, ms from its insert to the commit of the transaction that applied
/// it), from `bench_marker_seen` (see [`MARKER_SEEN`]). An error unless every marker has its
/// time.
pub(crate) async fn marker_lags(
    client: &tokio_postgres::Client,
    ids: &[i64],
) -> anyhow::Result<Vec<(f64, f64)>> {
    let rows = client
        .query(
            "SELECT m.id, extract(epoch FROM m.blue_at)::float8, \
             (extract(epoch FROM s.green_at - m.blue_at) * 1000)::float8 \
             FROM public.bench_marker m JOIN public.bench_marker_seen s USING (id) \
             WHERE m.id = ANY($1) ORDER BY m.id",
            &[&ids],
        )
        .await?;
    anyhow::ensure!(
        rows.len() == ids.len(),
        "{} of {} markers ({}..{}) have a commit time on the receiving side; the trigger on its \
         bench_marker did not fire for every row",
        rows.len(),
        ids.len(),
        ids.first().copied().unwrap_or_default(),
        ids.last().copied().unwrap_or_default()
    );
    let t0 = rows.first().map(|row| row.get::<_, f64>(1)).unwrap_or(0.0);
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, f64>(1) - t0, row.get::<_, f64>(2)))
        .collect())
}

/// Green's WAL flushed past everything committed when called: waits (bounded) until
/// `pg_current_wal_flush_lsn()` reaches the insert position taken first.
pub(crate) async fn green_flushed(green: &tokio_postgres::Client) -> anyhow::Result<()> {
    let target = query_value(green, "SELECT pg_catalog.pg_current_wal_insert_lsn()").await?;
    let sql = format!("SELECT pg_catalog.pg_current_wal_flush_lsn() >= '{target}'::pg_lsn");
    poll_until(
        "green's WAL flush",
        Duration::from_secs(60),
        || Ok(()),
        || async { Ok(query_value(green, &sql).await? == "t") },
    )
    .await?;
    Ok(())
}

/// A shared client, for the /proc watch's pid lookups.
pub(crate) async fn shared_client(
    server: &Server,
    db: &str,
) -> anyhow::Result<Arc<tokio_postgres::Client>> {
    Ok(Arc::new(server.connect(db).await?))
}
