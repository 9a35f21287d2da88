//! `ApplyError`: why a transaction could not be applied to green, and whether retrying can help.
//!
//! Every error names the object (table, column, origin) and the fix. Row values never appear in
//! the text: a row of blue's data is not something to print into a log. The server's own report
//! (SQLSTATE, message, detail, hint) is kept whole as the `source`.
//!
//! [`ApplyError::class`] sorts errors once, at this boundary: [`ErrorClass::Transient`] (reconnect
//! and resume from green's durable progress) or [`ErrorClass::Definite`] (stop; an operator must
//! act). The SQLSTATE → class mapping is the one function [`class_of_sqlstate`].
//!
//! Among definite errors, [`ApplyError::is_blocked`] picks those an operator fixes **on green**
//! while sync waits: a change green cannot take as it is — a column or table green lacks, a value
//! its type or constraints refuse (SQLSTATE classes 22 and 23), a missing privilege, a TRUNCATE
//! a foreign key of a table outside the set forbids. The engine does not exit on those: it keeps
//! the transaction at the head of the line, nothing after it commits, and retries until green
//! takes it. Errors that green alone cannot fix (a divergence, a malformed stream, a bad
//! configuration) stop sync.
//!
//! A value error names the column and the row's key when the server does not
//! ([`Culprit`](crate::diagnose::Culprit)), and the values green quotes are blanked.

use std::io;

use crate::client::{ClientError, SqlError};
use crate::diagnose::Culprit;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection or the server went away, or the transaction lost a race (serialization
    /// failure, deadlock): reconnect with backoff and resume from green's durable progress.
    Transient,
    /// Retrying the same input gives the same error: stop, an operator must act.
    Definite,
}

/// The class of a SQLSTATE. Connection exceptions (`08…`), operator intervention (`57P01`
/// admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now), insufficient resources
/// (`53…`, e.g. too many connections), serialization failure (`40001`), deadlock (`40P01`),
/// lock not available (`55P03`) and object in use (`55006`: a replication origin still held by
/// the previous session of a reconnecting applier) are transient; everything else is definite.
pub fn class_of_sqlstate(sqlstate: &str) -> ErrorClass {
    match sqlstate {
        "40001" | "40P01" | "55P03" | "55006" | "57P01" | "57P02" | "57P03" => {
            ErrorClass::Transient
        }
        s if s.starts_with("08") || s.starts_with("53") => ErrorClass::Transient,
        _ => ErrorClass::Definite,
    }
}

/// Whether a definite SQLSTATE from a statement means green refuses the change as it is (and
/// an operator can change green so that it takes it): data exceptions (`22…`), integrity
/// violations (`23…`), an undefined column or table (`42703`, `42P01`), a type mismatch
/// (`42804`), a missing privilege (`42501`), and a feature not supported (`0A000`: a TRUNCATE
/// a foreign key forbids).
fn sqlstate_is_blocked(sqlstate: &str) -> bool {
    sqlstate.starts_with("22")
        || sqlstate.starts_with("23")
        || matches!(sqlstate, "42703" | "42P01" | "42804" | "42501" | "0A000")
}

/// What a statement error says after its operation and table: the column and row of a value
/// error, and the fix.
fn statement_detail(culprit: Option<&Culprit>, source: &SqlError) -> String {
    let Some(sqlstate) = source.sqlstate() else {
        return String::new();
    };
    let column = culprit.map_or_else(String::new, |c| format!(": {c}"));
    let target = match culprit.map(|c| c.columns.as_slice()) {
        Some([one]) => format!("column \"{one}\""),
        _ => "the column".to_owned(),
    };
    let fix = match sqlstate {
        "22001" => format!(
            "blue's value is longer than {target} allows on green: widen it on green (ALTER TABLE \
             … ALTER COLUMN … TYPE, blue's type or wider)"
        ),
        "22003" => format!(
            "blue's value is out of the range of {target} on green: widen it on green (ALTER \
             TABLE … ALTER COLUMN … TYPE, blue's type or wider)"
        ),
        "23502" => format!(
            "blue sent NULL for {target}, which is NOT NULL on green: drop the constraint on \
             green (ALTER TABLE … ALTER COLUMN … DROP NOT NULL) until blue has no NULLs there"
        ),
        "23505" | "23P01" => "green already has a row with this unique key: green diverged \
             from blue, or has a unique index or exclusion constraint blue does not — fix the \
             row or drop the index on green"
            .to_owned(),
        "23514" => "green's check constraint refuses blue's row: drop or relax the constraint \
             on green"
            .to_owned(),
        s if s.starts_with("22") => format!(
            "green's type of {target} cannot read blue's value: give it on green a type that \
             takes blue's values (blue's own type)"
        ),
        "42501" => "the applier's role lacks a privilege on green: GRANT it on green".to_owned(),
        "42703" | "42P01" => {
            "green's table changed under sync: make it match blue again (blueshift \
             plan shows how)"
                .to_owned()
        }
        _ => return column,
    };
    format!("{column} — {fix}; sync waits and resumes once green takes the change")
}

/// The class of a SQL error: the server's SQLSTATE when it reported one; a failure of the client
/// or the connection (closed socket, I/O) is transient, except a TLS failure that will not go
/// away by itself (a certificate that does not verify, a missing certificate file).
pub fn class_of_sql_error(error: &SqlError) -> ErrorClass {
    match (error.sqlstate(), error) {
        (Some(sqlstate), _) => class_of_sqlstate(sqlstate),
        (None, SqlError::Tls(e)) if !e.is_transient() => ErrorClass::Definite,
        (None, SqlError::Client(e)) if definite_tls_failure(e) => ErrorClass::Definite,
        (None, SqlError::Wire(e)) if !e.is_io() => ErrorClass::Definite,
        (None, _) => ErrorClass::Transient,
    }
}

/// True when a client error was caused by a TLS failure retrying cannot fix.
fn definite_tls_failure(error: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<blueshift_decoder::tls::TlsError>() {
            return !tls.is_transient();
        }
        cause = e.source();
    }
    false
}

/// A foreign key on green, from `table` to `referenced`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing table's schema.
    pub schema: String,
    /// The referencing table, `schema.name` (unquoted, for messages).
    pub table: String,
    /// The referencing table's name.
    pub name: String,
    /// The constraint's name.
    pub constraint: String,
    /// The referenced table, `schema.name`.
    pub referenced: String,
}

impl ForeignKey {
    /// `ALTER TABLE … DROP CONSTRAINT …`, quoted.
    pub fn drop_sql(&self) -> String {
        use blueshift_decoder::ident::quote_ident;
        format!(
            "ALTER TABLE {}.{} DROP CONSTRAINT {}",
            quote_ident(&self.schema),
            quote_ident(&self.name),
            quote_ident(&self.constraint)
        )
    }
}

/// The row operation a statement carried out, for messages and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `TRUNCATE`.
    Truncate,
}

impl Operation {
    /// The SQL keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "INSERT",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Truncate => "TRUNCATE",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why applying to green failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The connection to green could not be opened.
    #[error("applier cannot connect to green")]
    Connect(#[source] ClientError),

    /// A session setting could not be pinned at connect.
    #[error(
        "cannot set {setting} on green's applier session — the applier's role needs the right \
         to set it (superuser, or GRANT SET ON PARAMETER {setting} on PostgreSQL 15+)"
    )]
    Session {
        /// The setting.
        setting: &'static str,
        /// The server's error.
        #[source]
        source: SqlError,
    },

    /// The replication origin name is unusable.
    #[error(
        "replication origin name {name:?} cannot be used: {reason} — choose another slot name \
         or origin prefix"
    )]
    InvalidOriginName {
        /// The name.
        name: String,
        /// Why: too long, empty, reserved.
        reason: String,
    },

    /// The replication origin could not be created, set up or read.
    #[error(
        "cannot {action} replication origin {name:?} on green — the applier's role must be a \
         superuser or have REPLICATION, and no other session may be using the origin"
    )]
    Origin {
        /// What was being done: `create`, `set up`, `read the progress of`.
        action: &'static str,
        /// The origin's name.
        name: String,
        /// The server's error.
        #[source]
        source: SqlError,
    },

    /// Green returned an LSN that is not one.
    #[error("green returned {value:?} where an LSN was expected")]
    BadLsn {
        /// What it returned.
        value: String,
    },

    /// Green's catalog could not be read for a table.
    #[error("cannot read green's catalog for table \"{table}\"")]
    Catalog {
        /// The table, `schema.name`.
        table: String,
        /// The server's error.
        #[source]
        source: SqlError,
    },

    /// The table does not exist on green.
    #[error(
        "table \"{table}\" does not exist on green — create it there (e.g. with `blueshift \
         migrate`) before syncing, or leave it out of the publication"
    )]
    MissingTable {
        /// The table, `schema.name`.
        table: String,
    },

    /// A replica identity key column of blue has no column on green to land in: UPDATE and
    /// DELETE could not find their row.
    #[error(
        "key column \"{column}\" of table \"{table}\" has no column on green — UPDATE and \
         DELETE find their row by it: keep it on green (or declare its rename) until after \
         cutover"
    )]
    MissingKeyColumn {
        /// The table, `schema.name`.
        table: String,
        /// Blue's column.
        column: String,
    },

    /// A declared rename names a green column that does not exist.
    #[error(
        "column \"{from}\" of table \"{table}\" is renamed to \"{to}\", which green does not \
         have — fix the rename or add the column to green"
    )]
    MissingRenameTarget {
        /// The table, `schema.name`.
        table: String,
        /// Blue's column.
        from: String,
        /// The green column the rename names.
        to: String,
    },

    /// A column that blue sends is a generated column on green.
    #[error(
        "column \"{column}\" of table \"{table}\" is a generated column on green but blue sends \
         its values — make it an ordinary column on green or leave it out of the publication"
    )]
    GeneratedColumn {
        /// The table, `schema.name`.
        table: String,
        /// The column.
        column: String,
    },

    /// A blue column has no column on green to land in, and the mapping does not exclude it:
    /// its values would be lost.
    #[error(
        "column \"{column}\" of table \"{table}\" has no column on green to land in{}, so its \
         values would be lost — add it on green (ALTER TABLE … ADD COLUMN with blue's type), or \
         declare it excluded (--exclude {exclude} or [[exclude]]) to leave it out on purpose",
        if *displaced { " (green's column of that name receives a renamed column)" } else { "" }
    )]
    UnmappedColumn {
        /// The table, `schema.name`.
        table: String,
        /// Blue's column.
        column: String,
        /// Green's column of that name receives another, renamed, blue column.
        displaced: bool,
        /// The `--exclude` argument that leaves it out.
        exclude: String,
    },

    /// A replica identity key column is excluded.
    #[error(
        "key column \"{column}\" of table \"{table}\" is excluded, but UPDATE and DELETE find \
         their row by it — remove the exclusion"
    )]
    ExcludedKeyColumn {
        /// The table, `schema.name`.
        table: String,
        /// Blue's column.
        column: String,
    },

    /// A TRUNCATE of blue's tables would have to cascade to a green table outside them.
    #[error(
        "TRUNCATE of {tables} cannot be applied on green: {} by a foreign key, and blue did not \
         truncate {} — blueshift truncates exactly the tables blue truncated, never with \
         CASCADE, and green refuses a TRUNCATE a foreign key from another table points at: drop \
         that foreign key on green ({}), or drop the referencing table; when blue has that table \
         too, publish it so that blue's TRUNCATE carries it",
        referencing.iter().map(|r| format!("table \"{}\" references \"{}\"", r.table, r.referenced)).collect::<Vec<_>>().join(", "),
        if referencing.len() == 1 { "it" } else { "them" },
        referencing.iter().map(|r| r.drop_sql()).collect::<Vec<_>>().join("; ")
    )]
    TruncateReferenced {
        /// The tables blue truncated, `"schema.name"`.
        tables: String,
        /// The foreign keys pointing at them from outside.
        referencing: Vec<ForeignKey>,
    },

    /// An inserted row carries an unchanged-TOAST marker, which only an UPDATE may (malformed
    /// input).
    #[error(
        "an inserted row of table \"{table}\" has no value for column \"{column}\" (unchanged \
         TOAST) — the decoded stream is inconsistent; restart the sync from green's progress"
    )]
    ToastInInsert {
        /// The table, `schema.name`.
        table: String,
        /// The column.
        column: String,
    },

    /// A row image does not have one value per column of its relation (malformed input).
    #[error(
        "a row of table \"{table}\" has {got} values but its Relation message lists {expected} \
         columns — the decoded stream is inconsistent; restart the sync from green's progress"
    )]
    RowShape {
        /// The table, `schema.name`.
        table: String,
        /// Columns in the Relation message.
        expected: usize,
        /// Values in the row.
        got: usize,
    },

    /// An UPDATE or DELETE cannot say which row it means.
    #[error(
        "{operation} on table \"{table}\" cannot be applied: the table has no replica identity \
         key — add a primary key or set REPLICA IDENTITY FULL (or USING INDEX) on blue"
    )]
    NoReplicaIdentity {
        /// The table, `schema.name`.
        table: String,
        /// `UPDATE` or `DELETE`.
        operation: Operation,
    },

    /// An UPDATE or DELETE found no row on green.
    #[error(
        "{operation} on table \"{table}\" found no matching row on green: green has diverged \
         from blue — re-copy the table (backfill) or run `blueshift verify` to find the \
         differing rows"
    )]
    RowNotFound {
        /// The table, `schema.name`.
        table: String,
        /// `UPDATE` or `DELETE`.
        operation: Operation,
    },

    /// A row blue inserted and deleted again inside a folded group was on green before it: the
    /// INSERT of the row path would have failed.
    #[error(
        "INSERT on table \"{table}\" found the row already on green: green has diverged from \
         blue — re-copy the table (backfill) or run `blueshift verify` to find the differing rows"
    )]
    RowExists {
        /// The table, `schema.name`.
        table: String,
    },

    /// A change inside a backfill's reconcile window cannot be applied idempotently.
    #[error(
        "cannot reconcile a change to table \"{table}\" with the rows a resumed backfill copied: \
         {reason} — copy the table again (TRUNCATE it on green, drop the slot, and sync with \
         --backfill)"
    )]
    CannotReconcile {
        /// The table, `schema.name`.
        table: String,
        /// Why.
        reason: &'static str,
    },

    /// A statement on a table failed on green.
    #[error(
        "{operation} on table \"{table}\" failed on green{}",
        statement_detail(culprit.as_deref(), source)
    )]
    Statement {
        /// The table(s), `schema.name`.
        table: String,
        /// The operation.
        operation: Operation,
        /// The column (and row key) a value error is about, when known.
        culprit: Option<Box<Culprit>>,
        /// The server's error (values it quotes blanked).
        #[source]
        source: SqlError,
    },

    /// A transaction-control step failed on green.
    #[error(
        "{step} failed on green while applying the transaction committed at {commit_lsn} on blue"
    )]
    Transaction {
        /// `BEGIN`, `pg_replication_origin_xact_setup`, `COMMIT`, `ROLLBACK`, ….
        step: &'static str,
        /// The transaction's commit LSN on blue (`X/Y`).
        commit_lsn: String,
        /// The server's error.
        #[source]
        source: SqlError,
    },

    /// The spill file of a large transaction could not be read back.
    #[error(
        "cannot read back the spilled changes of the transaction committed at {commit_lsn} on \
         blue — check the spill directory's disk and permissions"
    )]
    Spill {
        /// The transaction's commit LSN on blue (`X/Y`).
        commit_lsn: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// Two-way mode met a conflict its policy says to stop at.
    #[error(
        "conflict {} on table \"{}\", row {} ({} direction): {}; `blueshift conflicts` lists \
         the conflicts resolved so far",
        .0.kind, .0.table, .0.key, .0.direction, .0.reason()
    )]
    Conflict(Box<crate::conflict::Stopped>),

    /// `begin_and_apply` was called while a transaction is still open, or `commit` while none
    /// is: the caller broke the applier's protocol.
    #[error("applier misuse: {0} — this is a bug in the caller")]
    Misuse(&'static str),
}

impl ApplyError {
    /// Whether retrying (after a reconnect) can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            ApplyError::Connect(e) => class_of_sql_error(&e.source),
            ApplyError::Session { source, .. }
            | ApplyError::Origin { source, .. }
            | ApplyError::Catalog { source, .. }
            | ApplyError::Statement { source, .. }
            | ApplyError::Transaction { source, .. } => class_of_sql_error(source),
            ApplyError::InvalidOriginName { .. }
            | ApplyError::BadLsn { .. }
            | ApplyError::MissingTable { .. }
            | ApplyError::MissingKeyColumn { .. }
            | ApplyError::MissingRenameTarget { .. }
            | ApplyError::GeneratedColumn { .. }
            | ApplyError::UnmappedColumn { .. }
            | ApplyError::ExcludedKeyColumn { .. }
            | ApplyError::TruncateReferenced { .. }
            | ApplyError::RowShape { .. }
            | ApplyError::ToastInInsert { .. }
            | ApplyError::NoReplicaIdentity { .. }
            | ApplyError::RowNotFound { .. }
            | ApplyError::RowExists { .. }
            | ApplyError::CannotReconcile { .. }
            | ApplyError::Spill { .. }
            | ApplyError::Conflict(_)
            | ApplyError::Misuse(_) => ErrorClass::Definite,
        }
    }

    /// True when [`class`](Self::class) is transient.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// Whether this is a definite error an operator fixes on green while sync waits: green lacks
    /// a table or column the change needs, refuses a value (its type, length, range, a
    /// constraint; SQLSTATE classes 22 and 23), lacks a privilege, or a foreign key forbids a
    /// TRUNCATE. Retrying the same change after the fix succeeds; nothing later may commit
    /// before it.
    pub fn is_blocked(&self) -> bool {
        match self {
            ApplyError::MissingTable { .. }
            | ApplyError::MissingKeyColumn { .. }
            | ApplyError::MissingRenameTarget { .. }
            | ApplyError::GeneratedColumn { .. }
            | ApplyError::UnmappedColumn { .. }
            | ApplyError::TruncateReferenced { .. } => true,
            ApplyError::Statement { source, .. } => {
                self.class() == ErrorClass::Definite
                    && source.sqlstate().is_some_and(sqlstate_is_blocked)
            }
            _ => false,
        }
    }

    /// The server's SQLSTATE, when green reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ApplyError::Connect(e) => e.source.sqlstate(),
            ApplyError::Session { source, .. }
            | ApplyError::Origin { source, .. }
            | ApplyError::Catalog { source, .. }
            | ApplyError::Statement { source, .. }
            | ApplyError::Transaction { source, .. } => source.sqlstate(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes() {
        for transient in [
            "40001", "40P01", "57P01", "57P02", "57P03", "08006", "08003", "53300", "55006",
            "55P03",
        ] {
            assert_eq!(
                class_of_sqlstate(transient),
                ErrorClass::Transient,
                "{transient}"
            );
        }
        for definite in [
            "23505", "42P01", "42703", "22P02", "XX000", "0A000", "25P02",
        ] {
            assert_eq!(
                class_of_sqlstate(definite),
                ErrorClass::Definite,
                "{definite}"
            );
        }
    }

    #[test]
    fn changes_green_refuses_wait_for_green_and_others_stop() {
        use crate::client::ServerError;
        let statement = |sqlstate: &str, culprit: Option<Culprit>| ApplyError::Statement {
            table: "public.t".into(),
            operation: Operation::Insert,
            culprit: culprit.map(Box::new),
            source: SqlError::Server(Box::new(ServerError {
                severity: "ERROR".into(),
                sqlstate: sqlstate.into(),
                message: "value too long for type character varying(10)".into(),
                detail: None,
                hint: None,
                position: None,
                context: None,
                column: None,
            })),
        };
        let long = statement(
            "22001",
            Some(Culprit {
                columns: vec!["code".into()],
                green_type: Some("character varying(10)".into()),
                key: Some("(id)=(42)".into()),
            }),
        );
        assert!(long.is_blocked() && !long.is_transient());
        let text = long.to_string();
        assert!(
            text.starts_with(
                "INSERT on table \"public.t\" failed on green: column \"code\" \
                 (character varying(10) on green), row with key (id)=(42) — blue's value is \
                 longer than column \"code\" allows on green"
            ),
            "{text}"
        );
        assert!(text.contains("sync waits and resumes"), "{text}");
        for blocked in ["23502", "23505", "22P02", "42703", "42501", "0A000"] {
            assert!(statement(blocked, None).is_blocked(), "{blocked}");
        }
        for not_blocked in ["40001", "08006", "XX000", "42601"] {
            assert!(!statement(not_blocked, None).is_blocked(), "{not_blocked}");
        }
        let unmapped = ApplyError::UnmappedColumn {
            table: "public.t".into(),
            column: "extra".into(),
            displaced: false,
            exclude: "'public.t:extra'".into(),
        };
        assert!(unmapped.is_blocked());
        let text = unmapped.to_string();
        assert!(
            text.contains("ADD COLUMN") && text.contains("--exclude 'public.t:extra'"),
            "{text}"
        );
        let referenced = ApplyError::TruncateReferenced {
            tables: "\"public.parent\"".into(),
            referencing: vec![ForeignKey {
                schema: "public".into(),
                table: "public.child".into(),
                name: "child".into(),
                constraint: "child_fk".into(),
                referenced: "public.parent".into(),
            }],
        };
        assert!(referenced.is_blocked());
        assert!(
            referenced.to_string().contains(
                "table \"public.child\" references \"public.parent\" by a foreign key, and blue \
                 did not truncate it"
            ) && referenced
                .to_string()
                .contains("ALTER TABLE \"public\".\"child\" DROP CONSTRAINT \"child_fk\""),
            "{referenced}"
        );
        for stops in [
            ApplyError::ExcludedKeyColumn {
                table: "public.t".into(),
                column: "id".into(),
            },
            ApplyError::RowNotFound {
                table: "public.t".into(),
                operation: Operation::Delete,
            },
        ] {
            assert!(!stops.is_blocked(), "{stops}");
        }
    }

    #[test]
    fn messages_name_object_and_fix_without_values() {
        let e = ApplyError::MissingKeyColumn {
            table: "public.t".into(),
            column: "c".into(),
        };
        let text = e.to_string();
        assert!(text.contains("\"c\"") && text.contains("\"public.t\"") && text.contains("keep"));
        let e = ApplyError::MissingRenameTarget {
            table: "public.t".into(),
            from: "a".into(),
            to: "b".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("\"a\" of table \"public.t\" is renamed to \"b\""),
            "{text}"
        );
        assert_eq!(e.class(), ErrorClass::Definite);
        let e = ApplyError::RowNotFound {
            table: "s.x".into(),
            operation: Operation::Delete,
        };
        assert!(e.to_string().starts_with("DELETE on table \"s.x\""));
        assert!(e.to_string().contains("diverged"));
        assert!(!e.is_transient());
        let e = ApplyError::InvalidOriginName {
            name: "none".into(),
            reason: "it is reserved".into(),
        };
        assert!(e.to_string().contains("reserved"));
    }
}
