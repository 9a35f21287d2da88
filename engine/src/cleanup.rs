//! `cleanup`: removes what a blue → green sync left on the two servers once it is no longer
//! wanted: the replication slot on blue, the publication when blueshift created it, and the
//! appliers' replication origins and blueshift's records of the slot (the slot guard, the
//! backfill) on green.
//!
//! ```text
//!   plan (read only)                               execute (with `execute: true`)
//!   blue:  pg_replication_slots (slot)  ─┐         pg_drop_replication_slot(slot)
//!   green: blueshift.slot_guard         ─┤         DELETE its record (crate::slot_guard)
//!   blue:  pg_publication + its comment ─┼─ steps ─ DROP PUBLICATION (only blueshift's)
//!   green: pg_replication_origin        ─┘         pg_replication_origin_drop(origin) …
//! ```
//!
//! Dropping the slot throws away blue's stream position and the WAL kept for it, so:
//! - without `execute` the plan is only reported (a dry run);
//! - an active slot is refused (after [`SLOT_RELEASE_WAIT`] for a consumer that just stopped),
//!   naming the process that streams from it, and so is a slot that
//!   is not a logical `pgoutput` slot (blueshift did not create it);
//! - a publication is dropped only when its comment is exactly [`PUBLICATION_COMMENT`], the
//!   mark `blueshift sync` leaves on the publications it creates; any other one is left, and
//!   the report says why.
//!
//! Every step is idempotent: what is already gone is not a step, so a second run reports that
//! there is nothing to do.

use std::fmt;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::OUTPUT_PLUGIN;
use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::Lsn;
use tokio_postgres::Client;
use tracing::info;

use crate::client::{self, ClientError, SqlError};
use crate::status::{origin, slot, OriginProgress, Side, ORIGIN_PREFIX};

pub use crate::sync::PUBLICATION_COMMENT;

/// SQLSTATE `undefined_object`: what a drop of something already gone reports.
const UNDEFINED_OBJECT: &str = "42704";

/// How long cleanup waits for an active slot to be released before it calls it in use: a
/// walsender whose client was just killed holds the slot until it notices.
const SLOT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// SQLSTATE `object_in_use`: a slot or origin some process is using.
const OBJECT_IN_USE: &str = "55006";

/// What to clean up.
#[derive(Debug, Clone)]
pub struct CleanupOptions {
    /// Blue's connection settings (the database of the publication).
    pub source: ConnectConfig,
    /// Green's connection settings.
    pub target: ConnectConfig,
    /// The slot on blue; its origins on green are `blueshift_<slot>_<n>`.
    pub slot: String,
    /// The publication to drop if blueshift created it.
    pub publication: Option<String>,
    /// Drop for real; `false` only reports what would be dropped.
    pub execute: bool,
}

/// Why cleanup stopped.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// Privileges are missing (each named with the GRANT that fixes it); nothing was dropped.
    #[error(transparent)]
    Privileges(crate::privileges::MissingPrivileges),
    /// The slot name is not one PostgreSQL accepts.
    #[error("invalid replication slot name {slot:?}: slot names may contain only lower case letters, digits and underscores, at most 63 of them")]
    InvalidSlotName {
        /// The name given.
        slot: String,
    },
    /// A server could not be reached.
    #[error("cannot reach {side}")]
    Connect {
        /// Which one.
        side: Side,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A process streams from the slot.
    #[error("replication slot {} on blue is in use by {} — stop the `blueshift sync` (or other consumer) streaming from it, then run cleanup again{}", quote_ident(slot), pid.map_or_else(|| "a process".to_owned(), |p| format!("process {p}")), pid.map_or_else(String::new, |p| format!(" (on blue, SELECT pg_catalog.pg_terminate_backend({p}) ends that process)")))]
    SlotActive {
        /// The slot.
        slot: String,
        /// `pg_replication_slots.active_pid`.
        pid: Option<i32>,
    },
    /// The slot is not a logical `pgoutput` slot, so blueshift did not create it.
    #[error("replication slot {} on blue is a {kind} slot, not a logical pgoutput slot as blueshift creates — it belongs to something else; pass the --slot that `blueshift sync` used", quote_ident(slot))]
    NotBlueshiftsSlot {
        /// The slot.
        slot: String,
        /// `physical`, or `logical (plugin)`.
        kind: String,
    },
    /// A catalog query or a drop failed.
    #[error("cannot {what} on {side} ({target})")]
    Sql {
        /// Which server.
        side: Side,
        /// Where, without the password.
        target: String,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// The reverse direction (green → blue) could not be disarmed.
    #[error(transparent)]
    Reverse(crate::sync::direction::DirectionError),
}

/// One thing cleanup does, or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Disarm the reverse direction of the slot (see [`crate::sync::direction`]): its row, slot
    /// and publication on green, its guard record and origins on blue. First, so that no slot
    /// is left on green holding its WAL.
    DisarmReverse {
        /// The forward slot.
        slot: String,
        /// The reverse slot on green.
        reverse_slot: String,
        /// Where it was armed.
        armed_lsn: Lsn,
    },
    /// Drop the replication slot on blue.
    DropSlot {
        /// The slot.
        slot: String,
        /// Its `confirmed_flush_lsn`: the stream position lost with it.
        confirmed_flush_lsn: Option<Lsn>,
    },
    /// Forget green's record of the slot (`blueshift.slot_guard`): a slot created afresh under
    /// the same name is then a new start, not a slot that moved.
    ForgetSlotGuard {
        /// The slot.
        slot: String,
        /// What the record says blueshift acknowledged.
        acknowledged: Lsn,
    },
    /// Drop the publication on blue (its comment marks it as blueshift's).
    DropPublication {
        /// The publication.
        publication: String,
    },
    /// Forget the slot's backfill record on green (`blueshift.backfill_*`): its chunks and the
    /// fences sync derives from them belong to this slot's stream positions.
    ForgetBackfill {
        /// The slot.
        slot: String,
        /// Whether the backfill had finished.
        finished: bool,
    },
    /// Forget the slot's lag heartbeat on green (`blueshift.sync_lag`), which `status` reads.
    ForgetLagHeartbeat {
        /// The slot.
        slot: String,
    },
    /// Drop one applier's replication origin on green.
    DropOrigin {
        /// The origin.
        origin: String,
        /// Its progress: the commit LSN on blue of the last transaction it applied.
        progress: Option<Lsn>,
    },
}

/// A publication cleanup does not drop, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftPublication {
    /// The named publication does not carry blueshift's comment.
    NotBlueshifts {
        /// The publication.
        publication: String,
        /// Its comment, if any.
        comment: Option<String>,
    },
    /// A publication blueshift created that was not named with `--publication`: it may belong
    /// to another slot's sync.
    NotNamed {
        /// The publication.
        publication: String,
    },
}

/// What cleanup did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// The slot.
    pub slot: String,
    /// The publication named, if any.
    pub publication: Option<String>,
    /// Whether the steps were carried out (`false`: a dry run).
    pub executed: bool,
    /// The drops, in the order they are (or would be) done.
    pub steps: Vec<Step>,
    /// Publications left in place.
    pub left: Vec<LeftPublication>,
}

impl CleanupReport {
    /// True when there was nothing left to drop.
    pub fn nothing_to_do(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Finds what is left of slot `options.slot`'s sync and, with `options.execute`, drops it.
pub async fn cleanup(options: &CleanupOptions) -> Result<CleanupReport, CleanupError> {
    let slot_name = options.slot.as_str();
    if blueshift_decoder::connection::validate_slot_name(slot_name).is_err() {
        return Err(CleanupError::InvalidSlotName {
            slot: slot_name.to_owned(),
        });
    }
    let blue = Server::connect(Side::Blue, &options.source).await?;
    let green = match Server::connect(Side::Green, &options.target).await {
        Ok(green) => green,
        Err(e) => {
            blue.close().await;
            return Err(e);
        }
    };
    let report = plan_and_execute(options, &blue, &green).await;
    blue.close().await;
    green.close().await;
    report
}

async fn plan_and_execute(
    options: &CleanupOptions,
    blue: &Server,
    green: &Server,
) -> Result<CleanupReport, CleanupError> {
    let slot_name = options.slot.as_str();
    // Privileges first: a cleanup that stops halfway leaves a half-removed sync.
    let mut missing = crate::privileges::blue_for_slot_drop(&blue.client)
        .await
        .map_err(|e| blue.error("check privileges", e))?;
    missing.extend(
        crate::privileges::green_for_origins(&green.client, true)
            .await
            .map_err(|e| green.error("check privileges", e))?,
    );
    if !missing.is_empty() {
        return Err(CleanupError::Privileges(
            crate::privileges::MissingPrivileges { missing },
        ));
    }

    // Plan: read everything first, so that a refusal leaves both servers untouched.
    let mut steps = Vec::new();
    let mut left = Vec::new();
    if let Some(reverse) = crate::sync::direction::read_reverse(&green.client, slot_name)
        .await
        .map_err(|e| green.error("read blueshift.reverse", e))?
    {
        steps.push(Step::DisarmReverse {
            slot: reverse.slot,
            reverse_slot: reverse.reverse_slot,
            armed_lsn: reverse.armed_lsn,
        });
    }
    let slot = slot::after_release_grace(
        SLOT_RELEASE_WAIT,
        || async {
            slot::read(&blue.client, slot_name)
                .await
                .map_err(|e| blue.error("read pg_replication_slots", e))
        },
        |slot| slot.as_ref().is_some_and(|s| s.active),
    )
    .await?;
    if let Some(slot) = slot {
        if slot.slot_type != "logical" || slot.plugin.as_deref() != Some(OUTPUT_PLUGIN) {
            let kind = match &slot.plugin {
                Some(plugin) => format!("{} ({plugin})", slot.slot_type),
                None => slot.slot_type.clone(),
            };
            return Err(CleanupError::NotBlueshiftsSlot {
                slot: slot.name,
                kind,
            });
        }
        if slot.active {
            return Err(CleanupError::SlotActive {
                slot: slot.name,
                pid: slot.active_pid,
            });
        }
        steps.push(Step::DropSlot {
            slot: slot.name,
            confirmed_flush_lsn: slot.confirmed_flush_lsn,
        });
    }
    // The slot guard's record goes with the slot (or after it, when the slot is gone already).
    if let Some(record) = crate::slot_guard::read(&green.client, slot_name)
        .await
        .map_err(|e| green.error("read blueshift.slot_guard", e))?
    {
        steps.push(Step::ForgetSlotGuard {
            slot: slot_name.to_owned(),
            acknowledged: record.acknowledged,
        });
    }
    let marked = marked_publications(&blue.client)
        .await
        .map_err(|e| blue.error("read pg_publication", e))?;
    if let Some(publication) = &options.publication {
        let comment = publication_comment(&blue.client, publication)
            .await
            .map_err(|e| blue.error("read pg_publication", e))?;
        match comment {
            None => {}
            Some(comment) if is_blueshifts(comment.as_deref()) => {
                steps.push(Step::DropPublication {
                    publication: publication.clone(),
                });
            }
            Some(comment) => left.push(LeftPublication::NotBlueshifts {
                publication: publication.clone(),
                comment,
            }),
        }
    }
    left.extend(
        marked
            .into_iter()
            .filter(|p| options.publication.as_ref() != Some(p))
            .map(|publication| LeftPublication::NotNamed { publication }),
    );
    let origins = origin::read(&green.client, slot_name)
        .await
        .map_err(|e| green.error("read the replication origins", e))?;
    steps.extend(
        origins
            .into_iter()
            .map(|OriginProgress { name, progress, .. }| Step::DropOrigin {
                origin: name,
                progress,
            }),
    );

    match crate::backfill::recorded(&green.client, slot_name)
        .await
        .map_err(|e| green.error("read the backfill record", e))?
    {
        None => {}
        // Its record holds the definitions of indexes it dropped: never lose those.
        Some((_, unrestored)) if unrestored > 0 => tracing::warn!(
            slot = slot_name,
            unrestored,
            "left the unfinished backfill record on green: it holds index and constraint \
             definitions not restored yet (blueshift.backfill_ddl); finish it with `blueshift \
             backfill`, or restore them yourself"
        ),
        Some((finished, _)) => steps.push(Step::ForgetBackfill {
            slot: slot_name.to_owned(),
            finished,
        }),
    }
    if crate::sync::heartbeat::recorded(&green.client, slot_name)
        .await
        .map_err(|e| green.error("read the lag heartbeat", e))?
    {
        steps.push(Step::ForgetLagHeartbeat {
            slot: slot_name.to_owned(),
        });
    }

    if options.execute {
        for step in &steps {
            execute(step, blue, green).await?;
        }
    }
    Ok(CleanupReport {
        slot: slot_name.to_owned(),
        publication: options.publication.clone(),
        executed: options.execute,
        steps,
        left,
    })
}

/// One connection, with what its errors need to name.
struct Server {
    side: Side,
    target: String,
    client: Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn connect(side: Side, config: &ConnectConfig) -> Result<Server, CleanupError> {
        let (client, connection) = client::connect(config, "blueshift cleanup")
            .await
            .map_err(|source| CleanupError::Connect { side, source })?;
        Ok(Server {
            side,
            target: config.to_string(),
            client,
            connection,
        })
    }

    /// Ends the session with a Terminate.
    async fn close(self) {
        client::close(self.client, self.connection).await;
    }

    fn error(&self, what: impl Into<String>, e: impl Into<SqlError>) -> CleanupError {
        CleanupError::Sql {
            side: self.side,
            target: self.target.clone(),
            what: what.into(),
            source: e.into(),
        }
    }
}

/// Carries out one step. Something already gone (a concurrent cleanup) counts as done.
async fn execute(step: &Step, blue: &Server, green: &Server) -> Result<(), CleanupError> {
    let gone = |e: &tokio_postgres::Error| e.code().is_some_and(|c| c.code() == UNDEFINED_OBJECT);
    match step {
        Step::DisarmReverse { slot, .. } => {
            // The row names the publication; a row deleted meanwhile leaves no publication name
            // to guess, and only the slot and origins are looked for.
            crate::sync::direction::disarm_with(&blue.client, &green.client, slot, "")
                .await
                .map_err(CleanupError::Reverse)?;
        }
        Step::DropSlot { slot, .. } => {
            match blue
                .client
                .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[slot])
                .await
            {
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) if e.code().is_some_and(|c| c.code() == OBJECT_IN_USE) => {
                    return Err(CleanupError::SlotActive {
                        slot: slot.clone(),
                        pid: None,
                    })
                }
                Err(e) => {
                    return Err(
                        blue.error(format!("drop replication slot {}", quote_ident(slot)), e)
                    )
                }
            }
            info!(slot = %slot, "replication slot dropped on blue");
        }
        Step::DropPublication { publication } => {
            let sql = format!("DROP PUBLICATION IF EXISTS {}", quote_ident(publication));
            blue.client.batch_execute(&sql).await.map_err(|e| {
                blue.error(format!("drop publication {}", quote_ident(publication)), e)
            })?;
            info!(publication = %publication, "publication dropped on blue");
        }
        Step::DropOrigin { origin, .. } => {
            match green
                .client
                .execute("SELECT pg_catalog.pg_replication_origin_drop($1)", &[origin])
                .await
            {
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => {
                    return Err(green.error(
                        format!(
                            "drop replication origin {} (is a `blueshift sync` applying to green still running?)",
                            quote_ident(origin)
                        ),
                        e,
                    ))
                }
            }
            info!(origin = %origin, "replication origin dropped on green");
        }
        Step::ForgetSlotGuard { slot, .. } => {
            crate::slot_guard::forget(&green.client, slot)
                .await
                .map_err(|e| green.error("delete the slot guard record", e))?;
            info!(slot = %slot, "slot guard record deleted on green");
        }
        Step::ForgetBackfill { slot, .. } => {
            crate::backfill::forget(&green.client, slot)
                .await
                .map_err(|e| green.error("delete the backfill record", e))?;
            info!(slot = %slot, "backfill record deleted on green");
        }
        Step::ForgetLagHeartbeat { slot } => {
            crate::sync::heartbeat::forget(&green.client, slot)
                .await
                .map_err(|e| green.error("delete the lag heartbeat", e))?;
            info!(slot = %slot, "lag heartbeat deleted on green");
        }
    }
    Ok(())
}

/// The comment of publication `name`: `None` when it does not exist, `Some(None)` when it
/// exists without a comment.
async fn publication_comment(
    client: &Client,
    name: &str,
) -> Result<Option<Option<String>>, SqlError> {
    let row = client
        .query_opt(
            "SELECT pg_catalog.obj_description(oid, 'pg_publication') \
               FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $1",
            &[&name],
        )
        .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(row.try_get(0)?)),
    }
}

/// The publications of blue's database whose comment marks them as blueshift's.
async fn marked_publications(client: &Client) -> Result<Vec<String>, SqlError> {
    let rows = client
        .query(
            "SELECT pubname::pg_catalog.text FROM pg_catalog.pg_publication
              WHERE pg_catalog.obj_description(oid, 'pg_publication') \
                    OPERATOR(pg_catalog.=) $1 ORDER BY pubname",
            &[&PUBLICATION_COMMENT],
        )
        .await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(SqlError::from))
        .collect()
}

fn is_blueshifts(comment: Option<&str>) -> bool {
    comment == Some(PUBLICATION_COMMENT)
}

impl fmt::Display for Step {
    /// What the step drops, without a verb tense: `replication slot "s" on blue (…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lsn = |l: &Option<Lsn>| l.map_or_else(|| "none".to_owned(), |l| l.to_string());
        match self {
            Step::DisarmReverse {
                reverse_slot,
                armed_lsn,
                ..
            } => write!(
                f,
                "the reverse direction (green → blue, armed at {armed_lsn}): replication slot {} \
                 and its publication on green, blueshift.reverse, its slot guard record and \
                 replication origins on blue",
                quote_ident(reverse_slot)
            ),
            Step::DropSlot {
                slot,
                confirmed_flush_lsn,
            } => write!(
                f,
                "replication slot {} on blue (confirmed_flush_lsn {}; the stream position is lost with it)",
                quote_ident(slot),
                lsn(confirmed_flush_lsn)
            ),
            Step::DropPublication { publication } => write!(
                f,
                "publication {} on blue (created by blueshift)",
                quote_ident(publication)
            ),
            Step::ForgetSlotGuard { slot, acknowledged } => write!(
                f,
                "green's record of slot {} (blueshift.slot_guard; acknowledged up to {acknowledged})",
                quote_ident(slot)
            ),
            Step::ForgetBackfill { slot, finished } => write!(
                f,
                "the {} backfill record of slot {} on green (blueshift.backfill_*; green's rows stay)",
                if *finished { "finished" } else { "unfinished" },
                quote_ident(slot)
            ),
            Step::ForgetLagHeartbeat { slot } => write!(
                f,
                "the lag heartbeat of slot {} on green (blueshift.sync_lag)",
                quote_ident(slot)
            ),
            Step::DropOrigin { origin, progress } => match progress {
                Some(progress) => write!(
                    f,
                    "replication origin {} on green (progress {progress})",
                    quote_ident(origin)
                ),
                None => write!(
                    f,
                    "replication origin {} on green (nothing applied through it)",
                    quote_ident(origin)
                ),
            },
        }
    }
}

impl LeftPublication {
    fn is(&self, name: &str) -> bool {
        match self {
            LeftPublication::NotBlueshifts { publication, .. }
            | LeftPublication::NotNamed { publication } => publication == name,
        }
    }
}

impl fmt::Display for LeftPublication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeftPublication::NotBlueshifts {
                publication,
                comment,
            } => {
                write!(
                    f,
                    "left publication {} on blue: blueshift did not create it (its comment is ",
                    quote_ident(publication)
                )?;
                match comment {
                    Some(c) => write!(f, "{c:?}")?,
                    None => f.write_str("empty")?,
                }
                write!(
                    f,
                    ", not {PUBLICATION_COMMENT:?}); drop it yourself if nothing else uses it"
                )
            }
            LeftPublication::NotNamed { publication } => write!(
                f,
                "left publication {} on blue: blueshift created it, but it was not named; pass --publication {publication} to drop it too",
                quote_ident(publication)
            ),
        }
    }
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nothing_to_do() {
            write!(
                f,
                "nothing to do: no replication slot {} on blue, no {ORIGIN_PREFIX}{}_<n> replication origin on green",
                quote_ident(&self.slot),
                self.slot
            )?;
            match &self.publication {
                Some(p) if self.left.iter().all(|l| !l.is(p)) => {
                    writeln!(f, ", no publication {} on blue", quote_ident(p))?
                }
                _ => writeln!(f)?,
            }
        } else if self.executed {
            for step in &self.steps {
                writeln!(f, "dropped {step}")?;
            }
        } else {
            writeln!(
                f,
                "dry run: nothing was changed; run again with --yes to drop:"
            )?;
            for step in &self.steps {
                writeln!(f, "  {step}")?;
            }
        }
        for left in &self.left {
            writeln!(f, "{left}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_mark_counts() {
        assert!(is_blueshifts(Some(PUBLICATION_COMMENT)));
        assert!(!is_blueshifts(None));
        assert!(!is_blueshifts(Some("blueshift")));
        assert!(!is_blueshifts(Some(
            "blueshift: created by blueshift sync, then edited"
        )));
    }

    #[test]
    fn reports_read_as_plans_and_as_done() {
        let mut report = CleanupReport {
            slot: "s".into(),
            publication: Some("App Pub".into()),
            executed: false,
            steps: vec![
                Step::DropSlot {
                    slot: "s".into(),
                    confirmed_flush_lsn: Some(Lsn(0x16_0000_0010)),
                },
                Step::DropOrigin {
                    origin: "blueshift_s_0".into(),
                    progress: None,
                },
            ],
            left: vec![LeftPublication::NotBlueshifts {
                publication: "App Pub".into(),
                comment: None,
            }],
        };
        let text = report.to_string();
        assert!(text.starts_with("dry run"), "{text}");
        assert!(
            text.contains("replication slot \"s\" on blue (confirmed_flush_lsn 16/10"),
            "{text}"
        );
        assert!(text.contains("left publication \"App Pub\""), "{text}");
        report.executed = true;
        let text = report.to_string();
        assert!(
            text.contains("dropped replication origin \"blueshift_s_0\" on green"),
            "{text}"
        );
        report.steps.clear();
        let text = report.to_string();
        assert!(text.starts_with("nothing to do"), "{text}");
        assert!(!text.contains("no publication"), "{text}");
        report.left.clear();
        let text = report.to_string();
        assert!(
            text.contains(", no publication \"App Pub\" on blue\n"),
            "{text}"
        );
    }
}
