//! The steps between the gate and RESUME, in either direction: fence the source, drain what the
//! sync still has in flight, switch PgBouncer's entry, resume traffic (see [`crate::cutover`]).

use blueshift_decoder::Lsn;
use tokio::time::Instant;

use super::super::entry::{self, Endpoint};
use super::super::error::CutoverError;
use super::super::state::{State, Way};
use super::super::switch::{self, Switch};
use super::super::{drain, endpoint_of_config, fence, watch};
use super::{epoch_now, Run};
use crate::schema::Renames;
use crate::sequence::CopyMode;
use crate::sync::direction;

impl Run<'_> {
    pub(super) async fn fence(&mut self) -> Result<(), CutoverError> {
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

    pub(super) async fn drain(&mut self, deadline: Instant) -> Result<(), CutoverError> {
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

    pub(super) async fn late_write_error(&self, barrier: Lsn) -> CutoverError {
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
    pub(super) fn destination(&self, to_green: bool) -> Result<(String, Endpoint), CutoverError> {
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

    pub(super) async fn switch(&mut self, deadline: Instant) -> Result<(), CutoverError> {
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

    pub(super) fn check_budget(
        &self,
        deadline: Instant,
        step: &'static str,
    ) -> Result<(), CutoverError> {
        if Instant::now() > deadline {
            return Err(CutoverError::PauseBudget {
                step,
                budget_ms: self.options.max_pause.as_millis(),
            });
        }
        Ok(())
    }

    pub(super) async fn resume_traffic(&mut self, deadline: Instant) -> Result<(), CutoverError> {
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
}
