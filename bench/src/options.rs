//! What `blueshift bench` is asked to do: the scenarios, their size, where the servers and the
//! output are. Validated once by [`BenchOptions::validated`]; the scenarios read only that.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _};

/// One of the scenarios (issue 6's five, verify, cutover, bidirectional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Catch-up of a paused consumer after a TPC-B backlog.
    Catchup,
    /// Lag per marker row under a fixed TPC-B rate.
    Live,
    /// Initial copy of `pgbench -i` into an empty green.
    Backfill,
    /// Decoding a recorded backlog into a discarding sink.
    Decode,
    /// One large INSERT and one large DELETE.
    Bigtxn,
    /// Proving green equals blue: blueshift verify against SQL checksums and an ordered dump.
    Verify,
    /// The write pause of a switch through PgBouncer under a TPC-B rate: blueshift cutover
    /// against the same switch by hand on native replication.
    Cutover,
    /// Catch-up after green was down during a TPC-B backlog.
    CatchupOutage,
    /// Two-way sync: pgbench on blue and on green at once (disjoint branches), lag per
    /// direction, against two native subscriptions with `origin = none` (PostgreSQL 16+); and
    /// the throughput cost of `--bidirectional` against forward-only sync.
    Bidirectional,
}

impl Scenario {
    /// Every scenario, in the order they run by default.
    pub const ALL: [Scenario; 9] = [
        Scenario::Catchup,
        Scenario::Live,
        Scenario::Backfill,
        Scenario::Decode,
        Scenario::Bigtxn,
        Scenario::Verify,
        Scenario::Cutover,
        Scenario::CatchupOutage,
        Scenario::Bidirectional,
    ];

    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Catchup => "catchup",
            Scenario::Live => "live",
            Scenario::Backfill => "backfill",
            Scenario::Decode => "decode",
            Scenario::Bigtxn => "bigtxn",
            Scenario::Verify => "verify",
            Scenario::Cutover => "cutover",
            Scenario::CatchupOutage => "catchup-outage",
            Scenario::Bidirectional => "bidirectional",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {s:?}: choose from {}",
                    Scenario::ALL.map(Scenario::name).join(", ")
                )
            })
    }
}

/// Existing servers to run on instead of throwaway clusters: libpq URIs or key=value strings
/// naming a database the bench can connect to (it creates its own databases next to it, and
/// drops them at the end). The role needs CREATEDB, REPLICATION and the right to create
/// subscriptions on green (a superuser, or `pg_create_subscription` from PostgreSQL 16).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Blue.
    pub source: String,
    /// Green.
    pub target: String,
}

/// The settings of one `blueshift bench` invocation.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scenarios to run, in this order; empty = all.
    pub scenarios: Vec<Scenario>,
    /// pgbench scale factor (100 000 accounts each) [default 50; smoke 1].
    pub scale: Option<u32>,
    /// Seconds of workload per run (TPC-B backlog, live load) [default 60; smoke 2].
    pub duration: Option<u32>,
    /// Runs per scenario; medians are reported [default 3; smoke 1].
    pub runs: Option<u32>,
    /// pgbench clients (and threads).
    pub clients: u32,
    /// `blueshift sync --workers`, `blueshift backfill --copy-workers`.
    pub workers: u32,
    /// PostgreSQL binaries folder (server and client programs) [default: PG_BIN, else
    /// pg_config].
    pub pg_bin: Option<PathBuf>,
    /// Output folder [default: bench-results/<unix time> in the current folder].
    pub out: Option<PathBuf>,
    /// Run on these servers instead of throwaway clusters.
    pub endpoints: Option<Endpoints>,
    /// Where throwaway clusters keep their data [default /var/tmp, on disk; smoke: the test
    /// harness's default, /dev/shm].
    pub data_dir: Option<PathBuf>,
    /// The `blueshift` binary to measure [default: next to the running executable].
    pub blueshift: Option<PathBuf>,
    /// Rows of the big transactions: `bigtxn` [default 5 000 000], `decode` [2 000 000].
    pub big_rows: Option<u64>,
    /// `bigtxn`: the `--max-txn-memory` of the measured sync [default: sync's own].
    pub bigtxn_memory: Option<String>,
    /// `live`: loads as percentages of blue's maximum rate, in order; empty = 80.
    pub live_loads: Vec<u32>,
    /// `catchup`: the backlog's write loads, in order; empty = TPC-B.
    pub catchup_workloads: Vec<crate::Workload>,
    /// Tiny scale, seconds per scenario: keeps the harness working (CI); no figure means
    /// anything.
    pub smoke: bool,
    /// The command line, for the report.
    pub command_line: String,
}

/// [`BenchOptions`] with every default filled in and checked.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) scale: u32,
    pub(crate) duration: u32,
    pub(crate) runs: u32,
    pub(crate) clients: u32,
    pub(crate) workers: u32,
    pub(crate) pg_bin: Option<PathBuf>,
    pub(crate) out: PathBuf,
    pub(crate) endpoints: Option<Endpoints>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) blueshift: Option<PathBuf>,
    pub(crate) bigtxn_rows: u64,
    pub(crate) bigtxn_memory: Option<String>,
    pub(crate) decode_rows: u64,
    pub(crate) live_loads: Vec<u32>,
    pub(crate) catchup_workloads: Vec<crate::Workload>,
    pub(crate) smoke: bool,
    pub(crate) command_line: String,
}

impl BenchOptions {
    pub(crate) fn validated(self) -> anyhow::Result<Validated> {
        let smoke = self.smoke;
        let pick =
            |v: Option<u32>, full: u32, small: u32| v.unwrap_or(if smoke { small } else { full });
        let scale = pick(self.scale, 50, 1);
        let duration = pick(self.duration, 60, 2);
        let runs = pick(self.runs, 3, 1);
        ensure!(scale >= 1, "--scale must be at least 1");
        ensure!(duration >= 1, "--duration must be at least 1 second");
        ensure!(runs >= 1, "--runs must be at least 1");
        ensure!(self.clients >= 1, "--clients must be at least 1");
        ensure!(
            (1..=64).contains(&self.workers),
            "--workers must be between 1 and 64"
        );
        let mut scenarios = if self.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenarios
        };
        let mut seen = std::collections::HashSet::new();
        scenarios.retain(|s| seen.insert(*s));
        let out = match self.out {
            Some(out) => out,
            None => PathBuf::from("bench-results").join(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    .to_string(),
            ),
        };
        let out = if out.is_absolute() {
            out
        } else {
            std::env::current_dir()?.join(out)
        };
        let data_dir = match (self.data_dir, smoke) {
            (Some(d), _) => Some(d),
            (None, true) => None,
            (None, false) => Some(PathBuf::from("/var/tmp")),
        };
        let mut live_loads = if self.live_loads.is_empty() {
            vec![80]
        } else {
            self.live_loads
        };
        ensure!(
            live_loads.iter().all(|l| (1..=100).contains(l)),
            "--live-load takes percentages of blue's maximum rate, each from 1 to 100"
        );
        let mut seen_load = std::collections::HashSet::new();
        live_loads.retain(|l| seen_load.insert(*l));
        let mut catchup_workloads = if self.catchup_workloads.is_empty() {
            vec![crate::Workload::Tpcb]
        } else {
            self.catchup_workloads
        };
        let mut seen_workload = std::collections::HashSet::new();
        catchup_workloads.retain(|w| seen_workload.insert(*w));
        let big = |full: u64, small: u64| self.big_rows.unwrap_or(if smoke { small } else { full });
        Ok(Validated {
            scenarios,
            scale,
            duration,
            runs,
            clients: self.clients,
            workers: self.workers,
            pg_bin: self.pg_bin,
            out,
            endpoints: self.endpoints,
            data_dir,
            blueshift: self.blueshift,
            bigtxn_rows: big(5_000_000, 20_000),
            bigtxn_memory: self.bigtxn_memory,
            decode_rows: big(2_000_000, 20_000),
            live_loads,
            catchup_workloads,
            smoke,
            command_line: self.command_line,
        })
    }
}

impl Validated {
    /// The `blueshift` binary that is measured: `--blueshift`, else `blueshift` next to the
    /// running executable (`blueshift bench` measures its own build).
    pub(crate) fn blueshift_binary(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.blueshift {
            Some(p) => p.clone(),
            None => {
                let exe = std::env::current_exe().context("cannot find the running executable")?;
                exe.parent()
                    .map(|d| d.join("blueshift"))
                    .context("the running executable has no folder")?
            }
        };
        if !path.is_file() {
            bail!(
                "no blueshift binary at {}: build it with `cargo build --release -p blueshift`, \
                 or pass --blueshift PATH",
                path.display()
            );
        }
        Ok(path)
    }

    pub(crate) fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }
}
