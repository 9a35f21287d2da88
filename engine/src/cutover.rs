//! `cutover`: traffic moves from blue to green through PgBouncer with a write pause of
//! milliseconds, no failed client transaction and no lost write — or goes back to blue
//! untouched.
//!
//! A persisted state machine on green ([`state`]: `blueshift.cutover` and the append-only
//! `blueshift.cutover_event`), each step idempotent, resumable after a crash of blueshift at
//! any point (`--resume`):
//!
//! ```text
//!  replicating ─► ready ─► fenced ─► drained ─► switched ─► watching ─► cut-over
//!   preflight ─┘    │         │          │          │  RESUME ─┘   watch ─┘
//!   (nothing        │ PAUSE   │ green ≥ L│ entry → green + RELOAD
//!    changes)       │ blue RO │ sequences│ (or --switch-command)
//!                   │ marker L│          │
//!                   └─────────┴──────────┴─► any failure before RESUME, or --max-pause
//!                                             reached: blue writable, entry on blue, RESUME
//!                                             ─► rolled-back (clients saw a pause, no error)
//! ```
//!
//! 1. **Preflight** ([`preflight`]): the sync streams with a lag under `--max-lag`; the last
//!    verify is clean and recent ([`gate`]) or `--skip-verify`; no transaction on blue older
//!    than the pause budget; green can take the reverse path; PgBouncer's console and entry;
//!    nothing else holds blue's read-only setting. `--dry-run` stops here and prints the plan.
//! 2. **Fence** ([`fence`]): PgBouncer `PAUSE <db>` ([`bouncer`]; clients queue, none fails;
//!    PAUSE returns once no server connection is in use), blue's database made read-only for
//!    new sessions (blueshift's own sessions exempt themselves), the sessions that bypass the
//!    pooler listed or, with `--terminate-direct-sessions`, terminated, and the fence marker
//!    written into blue's WAL: its LSN is L.
//! 3. **Drain** ([`drain`]): wait until green's durable position (the sync's origins) is at or
//!    past L, then copy every sequence blue → green ([`crate::sequence::copy`]).
//! 4. **Arm the way back**: not yet — the reverse direction (green → blue) is built apart; until
//!    it lands, a cutover has no automatic way back *after* RESUME.
//! 5. **Switch** ([`switch`]): PgBouncer's entry re-pointed at green ([`entry`]) and `RELOAD`,
//!    or `--switch-command`; a last check for writes on blue after the fence; then `RESUME`.
//!    From `PAUSE` to `RESUME` the pause is bounded by `--max-pause`.
//! 6. **Watch** ([`watch`]): probes through PgBouncer land on green, green's rollback rate,
//!    late writes on blue.
//!
//! **Resuming** (`--resume`) after a crash: from `ready`, `fenced` or `drained` the fence is
//! laid again (PAUSE and read-only are idempotent; a new marker, a new drain); from `switched`
//! the switch is repeated and traffic resumed — but only while blue is still fenced (read-only):
//! a blue made writable again means an automatic rollback ran without being able to record it
//! (green was down), and the cutover starts over from the fence; from `watching` the watch
//! runs again. PgBouncer keeps a PAUSE across blueshift's crash, so clients wait, and none
//! fails, until `--resume` finishes or rolls back.
//!
//! **Known limits.** A direct session that committed on blue in the instant between the fence
//! marker's commit and the read of blue's WAL position is not told apart from the marker; a
//! deleted row leaves no xid to name (the tables are still found through green's origins).

pub mod bouncer;
pub mod drain;
pub mod entry;
pub mod error;
pub mod fence;
pub mod gate;
pub mod preflight;
pub mod state;
pub mod switch;
pub mod watch;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::Lsn;
use tokio::time::Instant;
use tokio_postgres::Client;

pub use entry::Endpoint;
pub use error::CutoverError;
pub use preflight::Preflight;
pub use state::{Record, State};
pub use switch::Switch;
pub use watch::Watched;

use crate::client;
use crate::failpoint;
use crate::schema::Renames;
use bouncer::Admin;

/// What `cutover` is given.
#[derive(Debug, Clone)]
pub struct CutoverOptions {
    /// Blue.
    pub source: ConnectConfig,
    /// Green.
    pub target: ConnectConfig,
    /// The sync's slot (its origins on green are `blueshift_<slot>_<n>`).
    pub slot: String,
    /// The sync's publication (its tables' sequences are copied).
    pub publication: String,
    /// Column renames, for the sequences of renamed columns.
    pub renames: Renames,
    /// How clients reach the database through PgBouncer (its database is the entry's name);
    /// its admin console is the `pgbouncer` database on the same listener.
    pub pgbouncer: Option<ConnectConfig>,
    /// How traffic is switched.
    pub switch: Option<Switch>,
    /// Where PgBouncer's entry points for green (default: `--target`'s host, port, database).
    pub green_endpoint: Endpoint,
    /// The most lag preflight accepts.
    pub max_lag: Duration,
    /// How old the last clean verify may be.
    pub max_verify_age: Duration,
    /// Pass the verify gate without a verify (warned).
    pub skip_verify: bool,
    /// The longest write pause, PAUSE to RESUME.
    pub max_pause: Duration,
    /// How long the watch runs after RESUME.
    pub watch: Duration,
    /// The most rolled-back share of green's transactions during the watch.
    pub max_error_rate: f64,
    /// Terminate the sessions on blue that bypass PgBouncer at the fence.
    pub terminate_direct_sessions: bool,
    /// Stop after preflight and print the plan.
    pub dry_run: bool,
    /// Resume the cutover a crash interrupted.
    pub resume: bool,
}

/// What a cutover did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Where the machine stands now.
    pub state: State,
    /// What preflight found (`None` when resumed past it).
    pub preflight: Option<Preflight>,
    /// The fence LSN L.
    pub fence_lsn: Option<Lsn>,
    /// Green's durable position once drained.
    pub drained_lsn: Option<Lsn>,
    /// Sequences set on green.
    pub sequences: usize,
    /// The write pause blueshift measured, PAUSE to RESUME, in milliseconds.
    pub pause_ms: Option<f64>,
    /// Sessions on blue that bypassed PgBouncer (and whether they were terminated).
    pub direct_sessions: Vec<String>,
    /// What the watch saw.
    pub watched: Option<Watched>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.preflight {
            if self.state == State::Ready {
                writeln!(f, "cutover plan (dry run, nothing changed):")?;
                writeln!(
                    f,
                    "  sync lag: {}",
                    p.lag_seconds
                        .map_or_else(|| "unknown".to_owned(), |l| format!("{l:.3} s"))
                )?;
                writeln!(
                    f,
                    "  oldest transaction on blue: {:.3} s",
                    p.oldest_transaction
                )?;
                writeln!(
                    f,
                    "  steps: PAUSE, blue read-only, fence marker, drain to green, sequences, switch, RESUME, watch"
                )?;
                writeln!(
                    f,
                    "  estimated write pause: {} ms",
                    p.estimated_pause().as_millis()
                )?;
                for w in &p.warnings {
                    writeln!(f, "  warning: {w}")?;
                }
                for s in &p.direct_sessions {
                    writeln!(f, "  session bypassing PgBouncer: {s}")?;
                }
                return Ok(());
            }
        }
        writeln!(f, "cutover: {}", self.state)?;
        if let Some(l) = self.fence_lsn {
            writeln!(f, "  fence at {l} on blue")?;
        }
        if let Some(l) = self.drained_lsn {
            writeln!(f, "  green drained to {l}")?;
        }
        writeln!(f, "  sequences set on green: {}", self.sequences)?;
        if let Some(ms) = self.pause_ms {
            writeln!(f, "  write pause (PAUSE to RESUME): {ms:.1} ms")?;
        }
        for s in &self.direct_sessions {
            writeln!(f, "  session bypassing PgBouncer: {s}")?;
        }
        if let Some(w) = &self.watched {
            writeln!(
                f,
                "  watch: {} probes landed on green; {} of {} transactions on green rolled back",
                w.probes, w.rollbacks, w.transactions
            )?;
        }
        Ok(())
    }
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs (or resumes) the cutover.
pub async fn cutover(options: &CutoverOptions) -> Result<Report, CutoverError> {
    let (green, green_conn) = client::connect(&options.target, "blueshift cutover")
        .await
        .map_err(CutoverError::connect("green"))?;
    let (blue, blue_conn) = client::connect(&options.source, "blueshift cutover")
        .await
        .map_err(CutoverError::connect("blue"))?;
    let admin = match &options.pgbouncer {
        Some(pooler) => Some(Admin::connect(pooler).await?),
        None => None,
    };
    let mut run = Run {
        options,
        green,
        blue,
        admin,
        record: Record::new(&options.slot, State::Replicating),
        report: Report {
            state: State::Replicating,
            preflight: None,
            fence_lsn: None,
            drained_lsn: None,
            sequences: 0,
            pause_ms: None,
            direct_sessions: Vec::new(),
            watched: None,
        },
    };
    let result = run.start().await;
    let Run {
        green, blue, admin, ..
    } = run;
    if let Some(admin) = admin {
        admin.close().await;
    }
    client::close(blue, blue_conn).await;
    client::close(green, green_conn).await;
    result
}

/// One cutover in progress: its sessions and its record.
struct Run<'a> {
    options: &'a CutoverOptions,
    green: Client,
    blue: Client,
    admin: Option<Admin>,
    record: Record,
    report: Report,
}

impl Run<'_> {
    fn database(&self) -> String {
        self.options
            .pgbouncer
            .as_ref()
            .map(|p| p.dbname().to_owned())
            .unwrap_or_default()
    }

    async fn save(&mut self, state: State, detail: &str) -> Result<(), CutoverError> {
        self.record.state = state;
        self.report.state = state;
        state::save(&self.green, &self.record, detail).await
    }

    async fn start(&mut self) -> Result<Report, CutoverError> {
        let options = self.options;
        fence::exempt(&self.blue, "blue").await?;
        fence::exempt(&self.green, "green").await?;
        let existing = state::load(&self.green, &options.slot).await?;
        let current = existing.as_ref().map_or(State::Replicating, |r| r.state);
        let slot = &options.slot;
        match (current, options.resume) {
            (s, false) if s.in_progress() => {
                return Err(CutoverError::State(format!(
                    "a cutover of slot {slot:?} stopped at state {s} — run `blueshift cutover --resume` to finish it (or roll it back)"
                )))
            }
            (State::CutOver, _) => {
                return Err(CutoverError::State(format!(
                    "slot {slot:?} is cut over already: green takes the traffic — `blueshift finalize` when satisfied"
                )))
            }
            (State::Finalized, _) => {
                return Err(CutoverError::State(format!(
                    "the cutover of slot {slot:?} is finalized: nothing to do"
                )))
            }
            (s, true) if !s.in_progress() && s != State::Ready => {
                return Err(CutoverError::State(format!(
                    "no cutover of slot {slot:?} to resume (state {s}) — run `blueshift cutover` without --resume"
                )))
            }
            _ => {}
        }
        if let Some(record) = existing {
            self.record = record;
        }
        if options.resume && current.in_progress() {
            if options.dry_run {
                return Err(CutoverError::State(
                    "--dry-run cannot be combined with --resume of a cutover under way".to_owned(),
                ));
            }
            return self.resume(current).await;
        }
        // A fresh cutover: preflight, nothing changed yet.
        let preflight = preflight::run(options, &self.blue, &self.green, self.admin.as_ref()).await?;
        if !preflight.problems.is_empty() {
            return Err(CutoverError::Preflight {
                problems: preflight.problems,
            });
        }
        for w in &preflight.warnings {
            tracing::warn!(warning = %w, "preflight");
        }
        let blue_entry = preflight.blue_entry.clone();
        self.report.preflight = Some(preflight);
        if options.dry_run {
            self.report.state = State::Ready;
            return Ok(self.report.clone());
        }
        state::ensure(&self.green).await?;
        let mut fresh = Record::new(slot, State::Ready);
        fresh.blue_entry = blue_entry;
        self.record = fresh;
        self.save(State::Ready, "preflight passed").await?;
        self.fence_and_switch().await
    }

    async fn resume(&mut self, current: State) -> Result<Report, CutoverError> {
        tracing::info!(state = %current, "resuming the cutover");
        match current {
            State::Switched => {
                if fence::read_only_setting(&self.blue, "blue").await?.is_none() {
                    tracing::warn!("blue is writable again: the fence was lifted; laying it again");
                    self.fence_and_switch().await
                } else {
                    let deadline = Instant::now() + self.options.max_pause;
                    self.guarded(deadline, true).await
                }
            }
            State::Watching => self.watch_and_finish().await,
            _ => self.fence_and_switch().await,
        }
    }

    /// PAUSE, then everything up to RESUME under the automatic rollback.
    async fn fence_and_switch(&mut self) -> Result<Report, CutoverError> {
        let deadline = Instant::now() + self.options.max_pause;
        if self.record.paused_at.is_none() || self.record.state == State::Ready {
            self.record.paused_at = Some(epoch_now());
        }
        if let Some(admin) = &self.admin {
            let name = self.database();
            if let Err(e) = admin.pause(&name, self.options.max_pause).await {
                return Err(self.roll_back(e).await);
            }
        }
        self.record.state = State::Ready;
        self.guarded(deadline, false).await
    }

    /// The steps between PAUSE and RESUME; any failure rolls back.
    async fn guarded(&mut self, deadline: Instant, from_switch: bool) -> Result<Report, CutoverError> {
        let steps = async {
            if !from_switch {
                self.fence().await?;
                failpoint::hit("cutover-fenced");
                self.drain(deadline).await?;
                failpoint::hit("cutover-drained");
            }
            self.switch(deadline).await?;
            failpoint::hit("cutover-switched");
            self.resume_traffic(deadline).await
        };
        let outcome = match tokio::time::timeout_at(deadline + Duration::from_millis(500), steps).await {
            Ok(r) => r,
            Err(_) => Err(CutoverError::PauseBudget {
                step: "the switch finished",
                budget_ms: self.options.max_pause.as_millis(),
            }),
        };
        match outcome {
            Ok(()) => {}
            Err(e) => return Err(self.roll_back(e).await),
        }
        failpoint::hit("cutover-resumed");
        self.watch_and_finish().await
    }

    async fn fence(&mut self) -> Result<(), CutoverError> {
        fence::make_read_only(&self.blue, "blue").await?;
        let pooled = match &self.admin {
            Some(admin) => admin.server_pids().await?,
            None => Vec::new(),
        };
        let sessions = fence::direct_sessions(&self.blue, "blue", &pooled).await?;
        if !sessions.is_empty() {
            let names: Vec<String> = sessions.iter().map(ToString::to_string).collect();
            if self.options.terminate_direct_sessions {
                let pids: Vec<i32> = sessions.iter().map(|s| s.pid).collect();
                fence::terminate(&self.blue, "blue", &pids).await?;
                for n in &names {
                    tracing::warn!(session = %n, "terminated a session that bypassed PgBouncer");
                    self.report
                        .direct_sessions
                        .push(format!("{n} — terminated"));
                }
            } else {
                for n in &names {
                    tracing::warn!(session = %n, "a session bypasses PgBouncer; it keeps its read-write default until it reconnects (--terminate-direct-sessions ends it)");
                    self.report.direct_sessions.push(n.clone());
                }
            }
        }
        let marker = fence::mark(&mut self.blue, &self.options.slot).await?;
        self.record.fence_lsn = Some(marker.lsn);
        self.record.fence_end = Some(marker.end);
        self.record.fence_xid = Some(marker.xid);
        self.record.drained_lsn = None;
        self.report.fence_lsn = Some(marker.lsn);
        let detail = format!(
            "PgBouncer paused, blue read-only, fence marker at {} (xid {})",
            marker.lsn, marker.xid
        );
        self.save(State::Fenced, &detail).await
    }

    async fn drain(&mut self, deadline: Instant) -> Result<(), CutoverError> {
        let fence_lsn = self.record.fence_lsn.expect("fenced records hold the fence");
        let held = drain::until(
            &self.green,
            &self.options.slot,
            fence_lsn,
            deadline,
            self.options.max_pause,
        )
        .await?;
        if let Some(end) = self.record.fence_end {
            if held >= end {
                return Err(self.late_write_error().await);
            }
        }
        let synced = crate::sequence::copy(
            &self.blue,
            &self.green,
            &self.options.publication,
            &self.options.renames,
        )
        .await?;
        self.report.sequences = synced.set;
        self.record.drained_lsn = Some(held);
        self.report.drained_lsn = Some(held);
        let detail = format!(
            "green holds blue up to {held}; {} sequences set on green",
            synced.set
        );
        self.save(State::Drained, &detail).await
    }

    async fn late_write_error(&self) -> CutoverError {
        let barrier = self.record.fence_lsn.unwrap_or(Lsn(0));
        match watch::check_late_writes(
            &self.green,
            &self.blue,
            &self.options.slot,
            &self.options.publication,
            barrier,
            self.record.fence_xid.unwrap_or(0),
        )
        .await
        {
            Err(e) => e,
            Ok(()) => CutoverError::LateWrite {
                detail: "green's origins moved past the fence".to_owned(),
            },
        }
    }

    fn green_value(&self) -> Result<String, CutoverError> {
        match (&self.options.switch, &self.record.blue_entry) {
            (Some(Switch::File { file, .. }), Some(blue)) => {
                entry::repoint(blue, &self.options.green_endpoint).map_err(|problem| {
                    CutoverError::EntryFile {
                        path: file.display().to_string(),
                        problem,
                    }
                })
            }
            (Some(Switch::File { file, .. }), None) => Err(CutoverError::EntryFile {
                path: file.display().to_string(),
                problem: "blue's entry was not recorded at preflight".to_owned(),
            }),
            _ => Ok(String::new()),
        }
    }

    async fn switch(&mut self, deadline: Instant) -> Result<(), CutoverError> {
        self.check_budget(deadline, "the switch")?;
        let Some(switch) = self.options.switch.clone() else {
            return Err(CutoverError::State("no switch configured".to_owned()));
        };
        let value = self.green_value()?;
        if self.record.state != State::Switched {
            self.record.green_entry = Some(value.clone()).filter(|v| !v.is_empty());
            let detail = format!("switching to green ({})", self.options.green_endpoint.conninfo());
            self.save(State::Switched, &detail).await?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        switch::point(
            &switch,
            self.admin.as_ref(),
            &value,
            &self.options.green_endpoint,
            "green",
            left,
        )
        .await
    }

    fn check_budget(&self, deadline: Instant, step: &'static str) -> Result<(), CutoverError> {
        if Instant::now() > deadline {
            return Err(CutoverError::PauseBudget {
                step,
                budget_ms: self.options.max_pause.as_millis(),
            });
        }
        Ok(())
    }

    async fn resume_traffic(&mut self, deadline: Instant) -> Result<(), CutoverError> {
        let barrier = self
            .record
            .drained_lsn
            .or(self.record.fence_lsn)
            .unwrap_or(Lsn(0));
        watch::check_late_writes(
            &self.green,
            &self.blue,
            &self.options.slot,
            &self.options.publication,
            barrier,
            self.record.fence_xid.unwrap_or(0),
        )
        .await?;
        self.check_budget(deadline, "RESUME")?;
        if let Some(admin) = &self.admin {
            admin.resume(&self.database()).await?;
        }
        let now = epoch_now();
        self.record.resumed_at = Some(now);
        self.record.pause_ms = self.record.paused_at.map(|p| (now - p) * 1000.0);
        self.report.pause_ms = self.record.pause_ms;
        let detail = format!(
            "RESUME: traffic on green; write pause {:.1} ms",
            self.record.pause_ms.unwrap_or_default()
        );
        self.save(State::Watching, &detail).await
    }

    async fn watch_and_finish(&mut self) -> Result<Report, CutoverError> {
        self.report.pause_ms = self.record.pause_ms;
        self.report.fence_lsn = self.record.fence_lsn;
        self.report.drained_lsn = self.record.drained_lsn;
        let w = watch::Watch {
            green: &self.green,
            blue: &self.blue,
            pooler: self.options.pgbouncer.as_ref(),
            slot: &self.options.slot,
            publication: &self.options.publication,
            barrier: self
                .record
                .drained_lsn
                .or(self.record.fence_lsn)
                .unwrap_or(Lsn(0)),
            fence_xid: self.record.fence_xid.unwrap_or(0),
            duration: self.options.watch,
            max_error_rate: self.options.max_error_rate,
        };
        match w.run().await {
            Ok(watched) => {
                let detail = format!(
                    "watch passed: {} probes on green, {} of {} transactions rolled back",
                    watched.probes, watched.rollbacks, watched.transactions
                );
                self.report.watched = Some(watched);
                self.save(State::CutOver, &detail).await?;
                Ok(self.report.clone())
            }
            Err(e) => {
                let detail = format!("watch failed: {e}");
                let _ = state::save(&self.green, &self.record, &detail).await;
                Err(CutoverError::Watch(format!(
                    "{e}; traffic is on green and stays there (state watching): the automatic way back after RESUME needs the reverse direction, which this build does not arm — investigate, then `blueshift cutover --resume` to watch again"
                )))
            }
        }
    }

    /// Before RESUME: blue writable, the entry (or the switch command) back on blue, RESUME.
    async fn roll_back(&mut self, cause: CutoverError) -> CutoverError {
        tracing::warn!(error = %cause, "cutover failed before RESUME; rolling back to blue");
        let name = self.database();
        let mut failed = Vec::new();
        if let Err(e) = fence::make_writable(&self.blue, "blue").await {
            failed.push(format!("make blue writable: {e}"));
        }
        if let Some(switch) = &self.options.switch {
            let blue_end = endpoint_of_config(&self.options.source);
            let target = match switch {
                Switch::File { .. } => self.record.blue_entry.clone().map(|value| {
                    let end = entry::endpoint_of(&value).unwrap_or(blue_end.clone());
                    (value, end)
                }),
                // The command ran (or may have): run it again towards blue.
                Switch::Command(_) if self.record.state == State::Switched => {
                    Some((String::new(), blue_end.clone()))
                }
                Switch::Command(_) => None,
            };
            if let Some((value, end)) = target {
                if let Err(e) = switch::point(
                    switch,
                    self.admin.as_ref(),
                    &value,
                    &end,
                    "blue",
                    Duration::from_secs(30),
                )
                .await
                {
                    failed.push(format!("point the traffic back at blue: {e}"));
                }
            }
        }
        if let Some(admin) = &self.admin {
            // The session may be stuck behind a PAUSE that never returned: use a fresh one.
            let resumed = match &self.options.pgbouncer {
                Some(pooler) => match Admin::connect(pooler).await {
                    Ok(fresh) => {
                        let r = fresh.resume(&name).await;
                        fresh.close().await;
                        r
                    }
                    Err(_) => admin.resume(&name).await,
                },
                None => Ok(()),
            };
            if let Err(e) = resumed {
                failed.push(format!("RESUME {name}: {e}"));
            }
        }
        if !failed.is_empty() {
            return CutoverError::RollbackFailed {
                rollback: failed.join("; "),
                cause: cause.to_string(),
                database: name,
            };
        }
        let detail = format!("rolled back before RESUME: {cause}");
        self.record.state = State::RolledBack;
        if let Err(e) = state::save(&self.green, &self.record, &detail).await {
            tracing::warn!(error = %e, "could not record the rollback on green; a --resume lays the fence again");
        }
        CutoverError::RolledBack {
            cause: Box::new(cause),
        }
    }
}

/// The cutover's state of `slot` on green, for `status`.
pub async fn read_state(green: &Client, slot: &str) -> Result<Option<Record>, CutoverError> {
    state::load(green, slot).await
}

/// Where the endpoint of a connection points (for `--green-entry`'s default).
pub fn endpoint_of_config(config: &ConnectConfig) -> Endpoint {
    let host = match config.host() {
        blueshift_decoder::config::Host::Tcp(name) => name.clone(),
        blueshift_decoder::config::Host::Unix(dir) => dir.display().to_string(),
    };
    Endpoint {
        host,
        port: config.port(),
        dbname: config.dbname().to_owned(),
    }
}

/// Parses `host=… port=… dbname=…` (PgBouncer's form) into an endpoint.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    entry::endpoint_of(text)
}
