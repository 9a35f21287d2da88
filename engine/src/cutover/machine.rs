//! The state machine's run: the steps in either direction, the automatic rollback before
//! RESUME, resuming after a crash (see the module docs of [`crate::cutover`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blueshift_decoder::Lsn;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::bouncer::Admin;
use super::entry::{self, Endpoint};
use super::error::CutoverError;
use super::state::{self, Record, State, Way};
use super::switch::{self, Switch};
use super::{
    drain, endpoint_of_config, fence, preflight, watch, CutoverOptions, Finalized, Report,
};
use crate::client;
use crate::failpoint;
use crate::schema::Renames;
use crate::sequence::CopyMode;
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

    async fn fence(&mut self) -> Result<(), CutoverError> {
        let way = self.way();
        let (source, side) = self.source();
        fence::make_read_only(source, side).await?;
        let (source, side) = self.source();
        let sessions = fence::bypassing_sessions(source, side, self.admin.as_ref()).await?;
        if !sessions.is_empty() {
            let names: Vec<String> = sessions.iter().map(ToString::to_string).collect();
            if self.options.terminate_direct_sessions {
                let pids: Vec<i32> = sessions.iter().map(|s| s.pid).collect();
                fence::terminate(source, side, &pids).await?;
                for n in &names {
                    tracing::warn!(session = %n, side, "terminated a session that bypassed PgBouncer");
                    self.report
                        .direct_sessions
                        .push(format!("{n} — terminated"));
                }
            } else {
                for n in &names {
                    tracing::warn!(session = %n, side, "a session bypasses PgBouncer; it keeps its read-write default until it reconnects (--terminate-direct-sessions ends it)");
                    self.report.direct_sessions.push(n.clone());
                }
            }
        }
        let slot = self.options.slot.clone();
        let marker = match way {
            Way::Forward => fence::mark(&mut self.blue, "blue", &slot).await?,
            Way::Back => fence::mark(&mut self.green, "green", &slot).await?,
        };
        self.record.fence_lsn = Some(marker.lsn);
        self.record.fence_end = Some(marker.end);
        self.record.fence_xid = Some(marker.xid);
        self.record.drained_lsn = None;
        self.report.fence_lsn = Some(marker.lsn);
        let detail = format!(
            "PgBouncer paused, {side} read-only, fence marker at {} (xid {})",
            marker.lsn, marker.xid
        );
        self.save(State::Fenced, &detail).await
    }

    async fn drain(&mut self, deadline: Instant) -> Result<(), CutoverError> {
        let fence_lsn = self
            .record
            .fence_lsn
            .expect("fenced records hold the fence");
        let way = self.way();
        let held = drain::until(
            way,
            &self.green,
            &self.blue,
            &self.options.slot,
            fence_lsn,
            deadline,
            self.options.max_pause,
        )
        .await?;
        if let Some(end) = self.record.fence_end {
            if held >= end {
                return Err(self.late_write_error(fence_lsn).await);
            }
        }
        let synced = match way {
            Way::Forward => {
                crate::sequence::copy(
                    &self.blue,
                    &self.green,
                    &self.options.publication,
                    &self.options.renames,
                    CopyMode::NeverBack,
                )
                .await?
            }
            Way::Back => {
                // A two-way offset strategy bounded blue's sequences below green's: blue is
                // the writer again, it must be able to go past green's values.
                crate::sequence::two_way::lift_bounds(&self.blue, &self.green, &self.options.slot)
                    .await?;
                crate::sequence::copy(
                    &self.green,
                    &self.blue,
                    &self.publication(),
                    &Renames::default(),
                    CopyMode::NeverBack,
                )
                .await?
            }
        };
        self.report.sequences = synced.set;
        // Green equals blue here: the way back starts at this point (idempotent).
        let armed = if way == Way::Forward {
            let reverse = direction::arm_reverse(
                &self.options.source,
                &self.options.target,
                &self.options.slot,
                &self.options.publication,
            )
            .await?;
            format!(
                "; the way back armed (slot {} on green at {})",
                reverse.reverse_slot, reverse.armed_lsn
            )
        } else {
            String::new()
        };
        self.record.drained_lsn = Some(held);
        self.report.drained_lsn = Some(held);
        let (_, target) = self.target();
        let detail = format!(
            "{target} holds everything up to {held}; {} sequences set on {target}{armed}",
            synced.set
        );
        self.save(State::Drained, &detail).await
    }

    async fn late_write_error(&self, barrier: Lsn) -> CutoverError {
        match watch::check_late_writes(
            self.way(),
            &self.green,
            &self.blue,
            &self.options.slot,
            &self.publication(),
            barrier,
            self.record.fence_xid.unwrap_or(0),
        )
        .await
        {
            Err(e) => e,
            Ok(()) => CutoverError::LateWrite {
                side: self.source().1,
                detail: "the drained direction's origins moved past the fence".to_owned(),
            },
        }
    }

    /// The entry's value and endpoint for traffic on `way`'s target.
    fn destination(&self, to_green: bool) -> Result<(String, Endpoint), CutoverError> {
        let green = self.options.green_endpoint.clone();
        let blue_default = endpoint_of_config(&self.options.source);
        match (&self.options.switch, &self.record.blue_entry) {
            (Some(Switch::File { file, .. }), Some(blue)) => {
                let fail = |problem: String| CutoverError::EntryFile {
                    path: file.display().to_string(),
                    problem,
                };
                if to_green {
                    Ok((entry::repoint(blue, &green).map_err(fail)?, green))
                } else {
                    let end = entry::endpoint_of(blue).map_err(fail)?;
                    Ok((blue.clone(), end))
                }
            }
            (Some(Switch::File { file, .. }), None) => Err(CutoverError::EntryFile {
                path: file.display().to_string(),
                problem: "blue's entry was not recorded at preflight".to_owned(),
            }),
            _ => Ok((String::new(), if to_green { green } else { blue_default })),
        }
    }

    async fn switch(&mut self, deadline: Instant) -> Result<(), CutoverError> {
        self.check_budget(deadline, "the switch")?;
        let Some(switch) = self.options.switch.clone() else {
            return Err(CutoverError::State("no switch configured".to_owned()));
        };
        let to_green = self.way() == Way::Forward;
        let (value, end) = self.destination(to_green)?;
        let (_, side) = self.target();
        if self.record.state != State::Switched {
            if to_green {
                self.record.green_entry = Some(value.clone()).filter(|v| !v.is_empty());
            }
            let detail = format!("switching to {side} ({})", end.conninfo());
            self.save(State::Switched, &detail).await?;
        }
        // The side taking the traffic may carry a fence of an earlier run (a rollback fences
        // green; a cutover fences blue): lifted before RESUME.
        let (target, side) = self.target();
        if fence::read_only_setting(target, side).await?.is_some() {
            fence::make_writable(target, side).await?;
            self.unfenced_target = true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        switch::point(&switch, self.admin.as_ref(), &value, &end, side, left).await
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
            self.way(),
            &self.green,
            &self.blue,
            &self.options.slot,
            &self.publication(),
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
        let (_, side) = self.target();
        let detail = format!(
            "RESUME: traffic on {side}; write pause {:.1} ms",
            self.record.pause_ms.unwrap_or_default()
        );
        self.save(State::Watching, &detail).await
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
