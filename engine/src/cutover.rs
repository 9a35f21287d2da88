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
//!    past L, then copy every sequence blue → green ([`crate::sequence::copy`]), never moving
//!    green's back (a two-way sequence strategy may have put it further along than blue's); a
//!    rollback first lifts the offset strategy's bound on blue
//!    ([`crate::sequence::two_way::lift_bounds`]).
//! 4. **Arm the way back**: green's publication and slot for the reverse direction are created
//!    here, where green equals blue ([`crate::sync::direction`]); the running sidecar streams
//!    green → blue from then on, so `rollback` has every write green took.
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
mod machine;
pub mod preflight;
pub mod state;
pub mod switch;
pub mod watch;

use std::fmt;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::Lsn;
use std::time::Duration;
use tokio_postgres::Client;

pub use entry::Endpoint;
pub use error::CutoverError;
pub use preflight::Preflight;
pub use state::{Record, State, Way};
pub use switch::Switch;
pub use watch::Watched;

use crate::schema::Renames;

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

/// Runs (or resumes, `--resume`) the cutover, blue → green.
pub async fn cutover(options: &CutoverOptions) -> Result<Report, CutoverError> {
    machine::run(options, machine::Command::Cutover).await
}

/// Rolls back a cutover (or resumes a rollback, `--resume`), green → blue through the reverse
/// direction: the same fence, drain, sequences and switch the other way.
pub async fn rollback(options: &CutoverOptions) -> Result<Report, CutoverError> {
    machine::run(options, machine::Command::Rollback).await
}

/// What [`finalize`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalized {
    /// What the reverse direction's disarming removed.
    pub disarmed: crate::sync::direction::Disarmed,
    /// Whether blue's read-only fence was lifted.
    pub blue_fence_lifted: bool,
}

impl fmt::Display for Finalized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cutover: finalized")?;
        writeln!(
            f,
            "  reverse direction: row {}, slot {}, publication {}, {} origins on blue",
            if self.disarmed.row {
                "deleted"
            } else {
                "absent"
            },
            if self.disarmed.slot {
                "dropped"
            } else {
                "absent"
            },
            if self.disarmed.publication {
                "dropped"
            } else {
                "absent"
            },
            self.disarmed.origins
        )?;
        writeln!(
            f,
            "  blue's read-only fence: {}",
            if self.blue_fence_lifted {
                "lifted"
            } else {
                "none"
            }
        )
    }
}

/// Ends a cutover the operator is satisfied with: the reverse direction disarmed (its row,
/// slot and publication on green, its origins on blue) and blue's read-only fence lifted.
/// Only from `cut-over`; idempotent once `finalized`.
pub async fn finalize(options: &CutoverOptions) -> Result<Finalized, CutoverError> {
    machine::finalize(options).await
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

/// The cutover lines of `blueshift status`: the state machine's row, its last events, and
/// whether the way back is armed.
#[derive(Debug, Clone, PartialEq)]
pub struct CutoverStatus {
    /// The row.
    pub record: Record,
    /// The last events, oldest first.
    pub events: Vec<state::Event>,
    /// The reverse slot on green, when the way back is armed.
    pub reverse_slot: Option<String>,
}

impl CutoverStatus {
    /// As JSON, for `status --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let lsn = |l: Option<Lsn>| l.map(|l| l.to_string());
        serde_json::json!({
            "state": self.record.state.as_str(),
            "direction": self.record.way.as_str(),
            "fence_lsn": lsn(self.record.fence_lsn),
            "drained_lsn": lsn(self.record.drained_lsn),
            "pause_ms": self.record.pause_ms,
            "reverse_slot": self.reverse_slot,
            "events": self.events.iter().map(|e| serde_json::json!({
                "at": e.at, "state": e.state, "detail": e.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for CutoverStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.record;
        writeln!(f, "cutover")?;
        writeln!(f, "  {:<28}{} ({})", "state", r.state, r.way.as_str())?;
        if let Some(l) = r.fence_lsn {
            writeln!(f, "  {:<28}{l}", "fence")?;
        }
        if let Some(l) = r.drained_lsn {
            writeln!(f, "  {:<28}{l}", "drained to")?;
        }
        if let Some(ms) = r.pause_ms {
            writeln!(f, "  {:<28}{ms:.1} ms", "write pause")?;
        }
        writeln!(
            f,
            "  {:<28}{}",
            "way back",
            self.reverse_slot.as_deref().map_or_else(
                || "not armed".to_owned(),
                |s| format!("armed (slot {s} on green)")
            )
        )?;
        for e in &self.events {
            writeln!(f, "  {} {}: {}", e.at, e.state, e.detail)?;
        }
        Ok(())
    }
}

/// The cutover lines of `slot` read from green (`None` when no cutover ever ran).
pub async fn status(
    target: &ConnectConfig,
    slot: &str,
) -> Result<Option<CutoverStatus>, CutoverError> {
    let (green, conn) = crate::client::connect(target, "blueshift status")
        .await
        .map_err(CutoverError::connect("green"))?;
    let result = async {
        let Some(record) = state::load(&green, slot).await? else {
            return Ok(None);
        };
        let events = state::events(&green, slot, 5).await?;
        let reverse = crate::sync::direction::read_reverse(&green, slot)
            .await
            .map_err(|source| CutoverError::Query {
                side: "green",
                what: "read blueshift.reverse".to_owned(),
                source,
            })?;
        Ok(Some(CutoverStatus {
            record,
            events,
            reverse_slot: reverse.map(|r| r.reverse_slot),
        }))
    }
    .await;
    crate::client::close(green, conn).await;
    result
}
