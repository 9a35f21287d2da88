//! The state machine's run: the steps in either direction, the automatic rollback before
//! RESUME, resuming after a crash (see the module docs of [`crate::cutover`]).

mod steps;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueshift_decoder::Lsn;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::bouncer::Admin;
use super::error::CutoverError;
use super::state::{self, Record, State, Way};
use super::switch::{self, Switch};
use super::{fence, preflight, watch, CutoverOptions, Finalized, Report};
use crate::client;
use crate::failpoint;
use crate::sync::direction;

/// Which command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Command {
    Cutover,
    Rollback,
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct Sessions {
    green: Client,
    green_conn: tokio::task::JoinHandle<()>,
    blue: Client,
    blue_conn: tokio::task::JoinHandle<()>,
    admin: Option<Admin>,
}

async fn open(options: &CutoverOptions) -> Result<Sessions, CutoverError> {
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
    fence::exempt(&blue, "blue").await?;
    fence::exempt(&green, "green").await?;
    Ok(Sessions {
        green,
        green_conn,
        blue,
        blue_conn,
        admin,
    })
}

async fn close(s: Sessions) {
    if let Some(admin) = s.admin {
        admin.close().await;
    }
    client::close(s.blue, s.blue_conn).await;
    client::close(s.green, s.green_conn).await;
}

pub(super) async fn run(
    options: &CutoverOptions,
    command: Command,
) -> Result<Report, CutoverError> {
    let sessions = open(options).await?;
    let mut run = Run {
        options,
        green: sessions.green,
        blue: sessions.blue,
        admin: sessions.admin,
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
        unfenced_target: false,
    };
    let result = match command {
        Command::Cutover => run.start_cutover().await,
        Command::Rollback => run.start_rollback().await,
    };
    let Run {
        green, blue, admin, ..
    } = run;
    close(Sessions {
        green,
        green_conn: sessions.green_conn,
        blue,
        blue_conn: sessions.blue_conn,
        admin,
    })
    .await;
    result
}

pub(super) async fn finalize(options: &CutoverOptions) -> Result<Finalized, CutoverError> {
    let s = open(options).await?;
    let result = async {
        let record = state::load(&s.green, &options.slot).await?;
        let current = record.as_ref().map_or(State::Replicating, |r| r.state);
        if !matches!(current, State::CutOver | State::Finalized) {
            return Err(CutoverError::State(format!(
                "slot {:?} is not cut over (state {current}): finalize ends a cutover the operator is satisfied with",
                options.slot
            )));
        }
        let disarmed = direction::disarm_reverse(
            &options.source,
            &options.target,
            &options.slot,
            &options.publication,
        )
        .await?;
        let fenced = fence::read_only_setting(&s.blue, "blue").await?.is_some();
        if fenced {
            fence::make_writable(&s.blue, "blue").await?;
        }
        if let Some(mut record) = record {
            if record.state != State::Finalized {
                record.state = State::Finalized;
                state::save(
                    &s.green,
                    &record,
                    "finalized: the way back disarmed, blue's fence lifted",
                )
                .await?;
            }
        }
        Ok(Finalized {
            disarmed,
            blue_fence_lifted: fenced,
        })
    }
    .await;
    close(s).await;
    result
}

/// One run of the machine: its sessions and its record.
struct Run<'a> {
    options: &'a CutoverOptions,
    green: Client,
    blue: Client,
    admin: Option<Admin>,
    record: Record,
    report: Report,
    /// This run lifted a read-only fence on the side taking the traffic (undone on rollback).
    unfenced_target: bool,
}

impl Run<'_> {
    fn database(&self) -> String {
        self.options
            .pgbouncer
            .as_ref()
            .map(|p| p.dbname().to_owned())
            .unwrap_or_default()
    }

    fn way(&self) -> Way {
        self.record.way
    }

    /// The side traffic leaves, and its name.
    fn source(&self) -> (&Client, &'static str) {
        match self.way() {
            Way::Forward => (&self.blue, "blue"),
            Way::Back => (&self.green, "green"),
        }
    }

    /// The side traffic goes to, and its name.
    fn target(&self) -> (&Client, &'static str) {
        match self.way() {
            Way::Forward => (&self.green, "green"),
            Way::Back => (&self.blue, "blue"),
        }
    }

    /// The publication of the side traffic leaves.
    fn publication(&self) -> String {
        match self.way() {
            Way::Forward => self.options.publication.clone(),
            Way::Back => direction::reverse_publication_name(&self.options.publication),
        }
    }

    async fn save(&mut self, state: State, detail: &str) -> Result<(), CutoverError> {
        self.record.state = state;
        self.report.state = state;
        state::save(&self.green, &self.record, detail).await
    }

    async fn start_cutover(&mut self) -> Result<Report, CutoverError> {
        let options = self.options;
        let existing = state::load(&self.green, &options.slot).await?;
        let current = existing.as_ref().map_or(State::Replicating, |r| r.state);
        let way = existing.as_ref().map_or(Way::Forward, |r| r.way);
        let slot = &options.slot;
        match (current, options.resume) {
            (s, false) if s.in_progress() => {
                let command = if way == Way::Back { "rollback" } else { "cutover" };
                return Err(CutoverError::State(format!(
                    "a {command} of slot {slot:?} stopped at state {s} — run `blueshift {command} --resume` to finish it (or roll it back)"
                )));
            }
            (s, true) if s.in_progress() && way == Way::Back => {
                return Err(CutoverError::State(format!(
                    "a rollback of slot {slot:?} stopped at state {s} — run `blueshift rollback --resume`"
                )));
            }
            (State::CutOver, _) => {
                return Err(CutoverError::State(format!(
                    "slot {slot:?} is cut over already: green takes the traffic — `blueshift rollback` to go back, `blueshift finalize` when satisfied"
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
        let preflight =
            preflight::run(options, &self.blue, &self.green, self.admin.as_ref()).await?;
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

    async fn start_rollback(&mut self) -> Result<Report, CutoverError> {
        let options = self.options;
        let slot = &options.slot;
        let Some(existing) = state::load(&self.green, slot).await? else {
            return Err(CutoverError::State(format!(
                "no cutover of slot {slot:?} to roll back: traffic is on blue"
            )));
        };
        let current = existing.state;
        let way = existing.way;
        self.record = existing;
        if current.in_progress() && way == Way::Back {
            if !options.resume {
                return Err(CutoverError::State(format!(
                    "a rollback of slot {slot:?} stopped at state {current} — run `blueshift rollback --resume`"
                )));
            }
            return self.resume(current).await;
        }
        if current.in_progress() {
            return Err(CutoverError::State(format!(
                "the cutover of slot {slot:?} stopped at state {current} — `blueshift cutover --resume` finishes it or rolls it back before RESUME"
            )));
        }
        if current != State::CutOver {
            return Err(CutoverError::State(format!(
                "slot {slot:?} is not cut over (state {current}): traffic is on blue, nothing to roll back"
            )));
        }
        self.rollback_problems().await?;
        self.record.way = Way::Back;
        self.record.paused_at = None;
        self.record.resumed_at = None;
        self.record.pause_ms = None;
        self.save(
            State::Ready,
            "rollback: preflight passed (reverse direction armed and streaming)",
        )
        .await?;
        self.fence_and_switch().await
    }

    /// What a rollback needs: the reverse direction armed and streaming, PgBouncer's entry.
    async fn rollback_problems(&self) -> Result<(), CutoverError> {
        let mut problems = Vec::new();
        let slot = &self.options.slot;
        match direction::read_reverse(&self.green, slot).await {
            Ok(Some(reverse)) => {
                let active: Option<bool> = self
                    .green
                    .query_opt(
                        "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                        &[&reverse.reverse_slot],
                    )
                    .await
                    .map_err(CutoverError::query("green", "read the reverse slot"))?
                    .map(|r| r.get(0));
                match active {
                    Some(true) => {}
                    Some(false) => problems.push(format!(
                        "the reverse slot {:?} on green is not streaming: run `blueshift sync` (it runs the way back while armed)",
                        reverse.reverse_slot
                    )),
                    None => problems.push(format!(
                        "the reverse slot {:?} is gone from green: green's writes since the cutover may be missing on blue — do not roll back through blueshift",
                        reverse.reverse_slot
                    )),
                }
            }
            Ok(None) => problems.push(
                "the way back is not armed (no blueshift.reverse row): the cutover did not arm it, or `finalize` disarmed it".to_owned(),
            ),
            Err(source) => {
                return Err(CutoverError::Query {
                    side: "green",
                    what: "read blueshift.reverse".to_owned(),
                    source,
                })
            }
        }
        if self.record.blue_entry.is_none()
            && matches!(self.options.switch, Some(Switch::File { .. }))
        {
            problems
                .push("the cutover recorded no PgBouncer entry for blue to go back to".to_owned());
        }
        if self.options.switch.is_none() {
            problems.push(
                "nothing would switch the traffic: pass --pgbouncer-file or --switch-command"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CutoverError::Preflight { problems })
        }
    }

    async fn resume(&mut self, current: State) -> Result<Report, CutoverError> {
        tracing::info!(state = %current, direction = self.way().as_str(), "resuming");
        match current {
            State::Switched => {
                let (source, side) = self.source();
                if fence::read_only_setting(source, side).await?.is_none() {
                    tracing::warn!(side, "the fence was lifted (a rollback before RESUME that could not be recorded); laying it again");
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
    async fn guarded(
        &mut self,
        deadline: Instant,
        from_switch: bool,
    ) -> Result<Report, CutoverError> {
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
        let outcome =
            match tokio::time::timeout_at(deadline + Duration::from_millis(500), steps).await {
                Ok(r) => r,
                Err(_) => Err(CutoverError::PauseBudget {
                    step: "the switch finished",
                    budget_ms: self.options.max_pause.as_millis(),
                }),
            };
        if let Err(e) = outcome {
            return Err(self.roll_back(e).await);
        }
        failpoint::hit("cutover-resumed");
        self.watch_and_finish().await
    }

    async fn watch_and_finish(&mut self) -> Result<Report, CutoverError> {
        self.report.pause_ms = self.record.pause_ms;
        self.report.fence_lsn = self.record.fence_lsn;
        self.report.drained_lsn = self.record.drained_lsn;
        let publication = self.publication();
        let w = watch::Watch {
            green: &self.green,
            blue: &self.blue,
            way: self.way(),
            pooler: self.options.pgbouncer.as_ref(),
            slot: &self.options.slot,
            publication: &publication,
            barrier: self
                .record
                .drained_lsn
                .or(self.record.fence_lsn)
                .unwrap_or(Lsn(0)),
            fence_xid: self.record.fence_xid.unwrap_or(0),
            duration: self.options.watch,
            max_error_rate: self.options.max_error_rate,
        };
        let done = match self.way() {
            Way::Forward => State::CutOver,
            Way::Back => State::RolledBack,
        };
        match w.run().await {
            Ok(watched) => {
                let (_, side) = self.target();
                let detail = format!(
                    "watch passed: {} probes on {side}, {} of {} transactions rolled back",
                    watched.probes, watched.rollbacks, watched.transactions
                );
                self.report.watched = Some(watched);
                self.save(done, &detail).await?;
                Ok(self.report.clone())
            }
            Err(e) => {
                let detail = format!("watch failed: {e}");
                let _ = state::save(&self.green, &self.record, &detail).await;
                if self.way() == Way::Back {
                    return Err(CutoverError::Watch(format!(
                        "{e}; traffic is on blue (state watching): investigate, then `blueshift rollback --resume` to watch again"
                    )));
                }
                // A failed watch after a cutover goes back to blue through the reverse stream:
                // the cutover is complete as a switch (recorded so), and the rollback starts
                // from there.
                tracing::warn!(error = %e, "the watch failed; rolling back to blue");
                self.save(State::CutOver, "the watch failed: rolling back to blue")
                    .await?;
                let back = Box::pin(self.start_rollback()).await;
                Err(CutoverError::Watch(match back {
                    Ok(_) => format!("{e}; rolled back to blue automatically through the reverse direction"),
                    Err(b) => format!("{e}; the automatic rollback to blue failed too: {b} — traffic is where `blueshift status` says"),
                }))
            }
        }
    }

    /// Before RESUME: the source writable, the traffic back on it, RESUME.
    async fn roll_back(&mut self, cause: CutoverError) -> CutoverError {
        let way = self.way();
        let (back_to_green, stay) = match way {
            Way::Forward => (false, "blue"),
            Way::Back => (true, "green"),
        };
        tracing::warn!(error = %cause, stay, "failed before RESUME; traffic stays where it was");
        let name = self.database();
        let mut failed = Vec::new();
        {
            let (source, side) = self.source();
            if let Err(e) = fence::make_writable(source, side).await {
                failed.push(format!("make {side} writable: {e}"));
            }
        }
        if self.unfenced_target {
            let (target, side) = self.target();
            if let Err(e) = fence::make_read_only(target, side).await {
                failed.push(format!("fence {side} again: {e}"));
            }
        }
        if let Some(switch) = &self.options.switch {
            let must =
                matches!(switch, Switch::File { .. }) || self.record.state == State::Switched;
            if must {
                match self.destination(back_to_green) {
                    Ok((value, end)) => {
                        if let Err(e) = switch::point(
                            switch,
                            self.admin.as_ref(),
                            &value,
                            &end,
                            stay,
                            Duration::from_secs(30),
                        )
                        .await
                        {
                            failed.push(format!("point the traffic back at {stay}: {e}"));
                        }
                    }
                    Err(e) => failed.push(format!("point the traffic back at {stay}: {e}")),
                }
            }
        }
        if let Some(pooler) = &self.options.pgbouncer {
            // The session may be stuck behind a PAUSE that never returned: use a fresh one.
            let resumed = match Admin::connect(pooler).await {
                Ok(fresh) => {
                    let r = fresh.resume(&name).await;
                    fresh.close().await;
                    r
                }
                Err(e) => match &self.admin {
                    Some(admin) => admin.resume(&name).await,
                    None => Err(e),
                },
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
        let detail = format!("failed before RESUME, traffic stays on {stay}: {cause}");
        self.record.state = match way {
            Way::Forward => State::RolledBack,
            Way::Back => State::CutOver,
        };
        self.record.way = Way::Forward;
        if let Err(e) = state::save(&self.green, &self.record, &detail).await {
            tracing::warn!(error = %e, "could not record the outcome on green; a --resume lays the fence again");
        }
        CutoverError::RolledBack {
            side: stay,
            cause: Box::new(cause),
        }
    }
}
