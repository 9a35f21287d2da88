//! The replication commands before streaming: `IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT` and
//! `DROP_REPLICATION_SLOT`, for logical slots with the `pgoutput` plugin.
//!
//! Implements the commands of
//! <https://www.postgresql.org/docs/current/protocol-replication.html>. PostgreSQL 15 added a
//! parenthesised option list to `CREATE_REPLICATION_SLOT`
//! (`... LOGICAL pgoutput (SNAPSHOT 'export', TWO_PHASE true)`); 14 and older only know the
//! keywords (`EXPORT_SNAPSHOT`, `NOEXPORT_SNAPSHOT`, `USE_SNAPSHOT`), so the syntax is chosen by
//! the server's major version. 14's grammar has no `TWO_PHASE` keyword, so two-phase slots need
//! 15 or later.

use std::str::FromStr;

use super::error::{ProtocolError, ReplicationError};
use super::query::Row;
use super::ReplicationConnection;
use crate::Lsn;

/// The output plugin of every slot blueshift creates.
pub const OUTPUT_PLUGIN: &str = "pgoutput";

/// PostgreSQL's `NAMEDATALEN - 1`.
const MAX_SLOT_NAME_LEN: usize = 63;

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifySystem {
    /// The cluster's system identifier (a 64-bit number, kept as text).
    pub systemid: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database the connection is bound to.
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` does with the snapshot of the slot's consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotAction {
    /// Export it (`SNAPSHOT 'export'`), to be imported elsewhere with `SET TRANSACTION
    /// SNAPSHOT`. It stays valid until the next command on this connection or its end.
    Export,
    /// Neither export nor use it (`SNAPSHOT 'nothing'`).
    #[default]
    NoExport,
    /// Use it in the current transaction of this connection (`SNAPSHOT 'use'`): the command must
    /// be the first of a `BEGIN ISOLATION LEVEL REPEATABLE READ` transaction.
    Use,
}

/// Options of [`ReplicationConnection::create_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateSlotOptions {
    /// Dropped at the end of the session or on error.
    pub temporary: bool,
    /// What to do with the snapshot.
    pub snapshot: SnapshotAction,
    /// Decode prepared transactions at `PREPARE` time (PostgreSQL 15+).
    pub two_phase: bool,
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot_name: String,
    /// The first position from which the slot can stream changes.
    pub consistent_point: Lsn,
    /// The exported snapshot, with [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
    /// Always `pgoutput`.
    pub output_plugin: String,
}

/// Checks a slot name against PostgreSQL's rule: 1 to 63 characters, each a lower case letter,
/// a digit or an underscore.
pub fn validate_slot_name(name: &str) -> Result<(), ReplicationError> {
    let valid = (1..=MAX_SLOT_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ReplicationError::InvalidSlotName {
            name: name.to_owned(),
        })
    }
}

/// The `CREATE_REPLICATION_SLOT` command for a server of major version `major`.
pub(crate) fn create_slot_command(
    name: &str,
    options: &CreateSlotOptions,
    major: u32,
) -> Result<String, ReplicationError> {
    validate_slot_name(name)?;
    let temporary = if options.temporary { " TEMPORARY" } else { "" };
    if major >= 15 {
        let snapshot = match options.snapshot {
            SnapshotAction::Export => "export",
            SnapshotAction::NoExport => "nothing",
            SnapshotAction::Use => "use",
        };
        let two_phase = if options.two_phase {
            ", TWO_PHASE true"
        } else {
            ""
        };
        return Ok(format!(
            "CREATE_REPLICATION_SLOT \"{name}\"{temporary} LOGICAL {OUTPUT_PLUGIN} (SNAPSHOT '{snapshot}'{two_phase})"
        ));
    }
    if options.two_phase {
        // 14's grammar has no TWO_PHASE keyword (the parenthesised option list came with it in
        // 15), and a two-phase slot is of no use before pgoutput protocol 3 (also 15).
        return Err(ReplicationError::Unsupported {
            what: format!("two-phase slots need PostgreSQL 15 or later, the server is {major}"),
            fix: "create the slot without two_phase",
        });
    }
    let snapshot = match options.snapshot {
        SnapshotAction::Export => "EXPORT_SNAPSHOT",
        SnapshotAction::NoExport => "NOEXPORT_SNAPSHOT",
        SnapshotAction::Use => "USE_SNAPSHOT",
    };
    Ok(format!(
        "CREATE_REPLICATION_SLOT \"{name}\"{temporary} LOGICAL {OUTPUT_PLUGIN} {snapshot}"
    ))
}

/// The `DROP_REPLICATION_SLOT` command.
pub(crate) fn drop_slot_command(name: &str, wait: bool) -> Result<String, ReplicationError> {
    validate_slot_name(name)?;
    let wait = if wait { " WAIT" } else { "" };
    Ok(format!("DROP_REPLICATION_SLOT \"{name}\"{wait}"))
}

impl ReplicationConnection {
    /// `IDENTIFY_SYSTEM`: the cluster's identity and current WAL position.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem, ReplicationError> {
        const COMMAND: &str = "IDENTIFY_SYSTEM";
        let row = single_row(COMMAND, self.simple_query(COMMAND).await?)?;
        Ok(IdentifySystem {
            systemid: required(COMMAND, &row, "systemid")?.to_owned(),
            timeline: parse_column(COMMAND, &row, "timeline")?,
            xlogpos: parse_column(COMMAND, &row, "xlogpos")?,
            dbname: row.get_by_name("dbname").map(str::to_owned),
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput ...`.
    pub async fn create_slot(
        &mut self,
        name: &str,
        options: CreateSlotOptions,
    ) -> Result<CreatedSlot, ReplicationError> {
        const COMMAND: &str = "CREATE_REPLICATION_SLOT";
        let command = create_slot_command(name, &options, self.server_major())?;
        let row = single_row(COMMAND, self.simple_query(&command).await?)?;
        let slot = CreatedSlot {
            slot_name: required(COMMAND, &row, "slot_name")?.to_owned(),
            consistent_point: parse_column(COMMAND, &row, "consistent_point")?,
            snapshot_name: row.get_by_name("snapshot_name").map(str::to_owned),
            output_plugin: required(COMMAND, &row, "output_plugin")?.to_owned(),
        };
        tracing::info!(
            slot = %slot.slot_name,
            consistent_point = %slot.consistent_point,
            temporary = options.temporary,
            snapshot = ?options.snapshot,
            two_phase = options.two_phase,
            "replication slot created"
        );
        Ok(slot)
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`. Without `wait`, a slot in use by another walsender
    /// is an error (SQLSTATE 55006); with it, the command waits until the slot is free.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), ReplicationError> {
        let command = drop_slot_command(name, wait)?;
        self.simple_query(&command).await?;
        tracing::info!(slot = %name, "replication slot dropped");
        Ok(())
    }
}

fn single_row(command: &'static str, rows: Vec<Row>) -> Result<Row, ReplicationError> {
    let count = rows.len();
    let mut rows = rows.into_iter();
    match (rows.next(), count) {
        (Some(row), 1) => Ok(row),
        _ => Err(ProtocolError::UnexpectedResult {
            command,
            problem: format!("expected one row, got {count}"),
        }
        .into()),
    }
}

fn required<'a>(
    command: &'static str,
    row: &'a Row,
    column: &str,
) -> Result<&'a str, ReplicationError> {
    row.get_by_name(column).ok_or_else(|| {
        ProtocolError::UnexpectedResult {
            command,
            problem: format!("column {column} is missing or NULL"),
        }
        .into()
    })
}

fn parse_column<T: FromStr>(
    command: &'static str,
    row: &Row,
    column: &str,
) -> Result<T, ReplicationError> {
    let text = required(command, row, column)?;
    text.parse().map_err(|_| {
        ProtocolError::UnexpectedResult {
            command,
            problem: format!("column {column} has an unreadable value {text:?}"),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_follow_postgres_rules() {
        for good in ["a", "slot_1", "0", &"x".repeat(63)] {
            validate_slot_name(good).unwrap();
        }
        for bad in [
            "",
            "Slot",
            "slot-1",
            "slot 1",
            "sl\"ot",
            "sl'ot",
            "s;DROP",
            "é",
            &"x".repeat(64),
        ] {
            let err = validate_slot_name(bad).unwrap_err();
            assert!(
                matches!(err, ReplicationError::InvalidSlotName { .. }),
                "{bad:?}"
            );
            assert!(err.to_string().contains("lower case letters"), "{err}");
        }
    }

    #[test]
    fn create_slot_syntax_by_version() {
        let opts = |temporary, snapshot, two_phase| CreateSlotOptions {
            temporary,
            snapshot,
            two_phase,
        };
        assert_eq!(
            create_slot_command("s", &opts(true, SnapshotAction::Export, true), 15).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export', TWO_PHASE true)"
        );
        assert_eq!(
            create_slot_command("s", &opts(false, SnapshotAction::NoExport, false), 18).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing')"
        );
        assert_eq!(
            create_slot_command("s", &opts(false, SnapshotAction::Use, false), 16).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'use')"
        );
        assert_eq!(
            create_slot_command("s", &opts(true, SnapshotAction::Export, false), 14).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert!(matches!(
            create_slot_command("s", &opts(false, SnapshotAction::NoExport, true), 14),
            Err(ReplicationError::Unsupported { .. })
        ));
        assert_eq!(
            create_slot_command("s", &opts(false, SnapshotAction::NoExport, false), 14).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("s", &opts(false, SnapshotAction::Use, false), 13).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput USE_SNAPSHOT"
        );
        assert!(matches!(
            create_slot_command("s", &opts(false, SnapshotAction::Use, true), 13),
            Err(ReplicationError::Unsupported { .. })
        ));
        assert!(matches!(
            create_slot_command("S", &CreateSlotOptions::default(), 15),
            Err(ReplicationError::InvalidSlotName { .. })
        ));
    }

    #[test]
    fn drop_slot_syntax() {
        assert_eq!(
            drop_slot_command("s_1", true).unwrap(),
            "DROP_REPLICATION_SLOT \"s_1\" WAIT"
        );
        assert_eq!(
            drop_slot_command("s_1", false).unwrap(),
            "DROP_REPLICATION_SLOT \"s_1\""
        );
        assert!(drop_slot_command("s\"; x", false).is_err());
    }
}
