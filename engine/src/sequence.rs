//! Sequences, blue → green. Logical replication does not carry them, so blueshift copies their
//! state itself: at the end of a backfill (and the cutover copies them again, once blue's writes
//! have stopped, with the same [`copy`]).
//!
//! **Never back, at a cutover.** A backfill sets green's exact state ([`CopyMode::Exact`]). A
//! cutover (either way) makes the target the writer, so it must hand out only values beyond
//! everything both sides handed out: [`CopyMode::NeverBack`] keeps the target's own state
//! when it is already further along in the sequence's direction — a two-way sequence strategy
//! put green's sequences far beyond blue's, or on the other parity, and green handed out values
//! of its own — and otherwise sets the source's (then the source's next value, on the target,
//! is beyond every value both handed out).
//!
//! **Which.** Every sequence of the published tables — the one a serial or identity column owns,
//! one a column default calls (`nextval('s')`) — and every standalone sequence (owned by no
//! column) in a schema that holds a published table. A published table's partitions and
//! ancestors count as published. A sequence owned by a column of a table blue does not publish
//! is left alone.
//!
//! **Reading fails when it cannot read.** The state is read with `SELECT last_value, is_called
//! FROM <sequence>`, which needs SELECT on it; `pg_sequences` would show a NULL `last_value`
//! instead and the sequence would stay at its start on green. Every sequence that cannot be read
//! on blue or set on green is reported, with the GRANT that fixes it: [`SequenceError::NotSynced`].
//! [`check_readable`] asks the same of blue's privileges up front, before a long copy.
//!
//! **Where to.** A column's sequence goes to the sequence of green's column (renames applied,
//! `pg_get_serial_sequence`), so a serial on blue and an identity on green match; otherwise to
//! green's sequence of the same name. A sequence with no counterpart on green is reported in
//! [`Synced::missing_on_green`] (green's schema has no use for it), never guessed.
//!
//! **Exact state.** `setval(green, last_value, is_called)`: a sequence never called stays so (its
//! next value is its start), a negative increment goes on downwards from blue's last value.

pub mod two_way;

use std::fmt;

use tokio_postgres::GenericClient;

use crate::client::SqlError;
use crate::schema::{quote_ident, QualifiedName, Renames};

/// The sequences of a publication's tables and schemas (`$1`: the publication).
const LIST: &str = "\
WITH pub AS (
    SELECT c.oid FROM pg_catalog.pg_publication_tables p
      JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
      JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
     WHERE p.pubname = $1 AND p.schemaname <> 'blueshift'
), rel AS (
    SELECT oid FROM pub
    UNION SELECT t.relid FROM pub, LATERAL pg_catalog.pg_partition_tree(pub.oid) t
    UNION SELECT a.relid FROM pub, LATERAL pg_catalog.pg_partition_ancestors(pub.oid) a
), owned AS (
    SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS col
      FROM pg_catalog.pg_depend d
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
), called AS (
    SELECT d.refobjid AS seq FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND ad.adrelid IN (SELECT oid FROM rel)
)
SELECT sn.nspname::text, s.relname::text, tn.nspname::text, t.relname::text, a.attname::text
  FROM pg_catalog.pg_class s
  JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
  LEFT JOIN owned o ON o.seq = s.oid
  LEFT JOIN pg_catalog.pg_class t ON t.oid = o.rel
  LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = o.rel AND a.attnum = o.col
 WHERE s.relkind = 'S'
   AND (o.rel IN (SELECT oid FROM rel)
        OR s.oid IN (SELECT seq FROM called)
        OR (o.seq IS NULL
            AND s.relnamespace IN (SELECT c.relnamespace FROM pg_catalog.pg_class c
                                    WHERE c.oid IN (SELECT oid FROM pub))))
 ORDER BY 1, 2";

/// Green's sequence of a column (`$1`: the table, quoted; `$2`: the column, as it is), if the
/// table and column exist and the column has one.
const COLUMN_SEQUENCE: &str = "\
SELECT n.nspname::text, c.relname::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = (SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                                          WHERE attrelid = pg_catalog.to_regclass($1)
                                            AND attname = $2 AND NOT attisdropped)
                            THEN pg_catalog.pg_get_serial_sequence($1, $2) END)::pg_catalog.regclass";

/// A sequence on blue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueSequence {
    /// Its name.
    pub name: QualifiedName,
    /// The table and column that own it (serial, identity), when one does.
    pub owner: Option<(QualifiedName, String)>,
}

/// What a sequence has handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceState {
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`: false while the sequence has never been called (its next value is
    /// `last_value` itself).
    pub is_called: bool,
}

/// One sequence not synced, and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSynced {
    /// Blue's sequence.
    pub sequence: QualifiedName,
    /// What went wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for NotSynced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sequence {}: {} — {}",
            self.sequence, self.problem, self.fix
        )
    }
}

/// Why sequences could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    /// A catalog query failed.
    #[error("could not {what} on {side}")]
    Query {
        /// `blue` or `green`.
        side: &'static str,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// Some sequences could not be read on blue or set on green; every one is named.
    #[error(
        "{} not synced to green, so green would hand out values blue already used: {}",
        count(failures.len()),
        failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    NotSynced {
        /// Each sequence, its problem and its fix.
        failures: Vec<NotSynced>,
    },
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 sequence".to_owned()
    } else {
        format!("{n} sequences")
    }
}

impl SequenceError {
    fn query(side: &'static str, what: impl Into<String>, e: tokio_postgres::Error) -> Self {
        SequenceError::Query {
            side,
            what: what.into(),
            source: SqlError::from(e),
        }
    }

    /// Whether trying again soon may help (a lost connection); a sequence not synced needs an
    /// operator.
    pub fn is_transient(&self) -> bool {
        match self {
            SequenceError::Query { source, .. } => source.is_transient(),
            SequenceError::NotSynced { .. } => false,
        }
    }
}

/// What [`copy`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    /// Sequences set on green.
    pub set: usize,
    /// Blue's sequences green has no counterpart of (left alone).
    pub missing_on_green: Vec<QualifiedName>,
    /// Green's sequences already further along than blue's, left as they are
    /// ([`CopyMode::NeverBack`] only).
    pub kept_ahead: Vec<QualifiedName>,
}

/// How [`copy`] sets the target's sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// The source's exact state (a backfill: green's sequences have handed out nothing).
    Exact,
    /// The source's state, unless the target's sequence is already further along in its
    /// direction (it handed out values of its own: two-way sync, a sequence strategy); then it
    /// is kept. Either way the target then hands out only values beyond everything both sides
    /// handed out. What a cutover does, both ways.
    NeverBack,
}

/// Blue's sequences of the tables and schemas `publication` publishes (see the module docs).
pub async fn list(
    blue: &impl GenericClient,
    publication: &str,
) -> Result<Vec<BlueSequence>, SequenceError> {
    let rows = blue
        .query(LIST, &[&publication])
        .await
        .map_err(|e| SequenceError::query("blue", "list the published tables' sequences", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let owner = match (
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<String>>(3),
                r.get::<_, Option<String>>(4),
            ) {
                (Some(schema), Some(table), Some(column)) => {
                    Some((QualifiedName::new(schema, table), column))
                }
                _ => None,
            };
            BlueSequence {
                name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                owner,
            }
        })
        .collect())
}

/// Reads `sequence`'s state; fails (`42501`) without SELECT on it.
pub async fn read(
    client: &impl GenericClient,
    sequence: &QualifiedName,
) -> Result<SequenceState, SqlError> {
    let row = client
        .query_one(
            &format!("SELECT last_value, is_called FROM {sequence}"),
            &[],
        )
        .await?;
    Ok(SequenceState {
        last_value: row.get(0),
        is_called: row.get(1),
    })
}

/// Sets `sequence` to `state`; fails (`42501`) without UPDATE on it.
pub async fn set(
    client: &impl GenericClient,
    sequence: &QualifiedName,
    state: SequenceState,
) -> Result<(), SqlError> {
    client
        .execute(
            "SELECT pg_catalog.setval($1::pg_catalog.text::pg_catalog.regclass, $2, $3)",
            &[&sequence.to_string(), &state.last_value, &state.is_called],
        )
        .await?;
    Ok(())
}

/// Green's counterpart of blue's `sequence`: the sequence of green's column when a column owns
/// it on blue (renames applied), else green's sequence of the same name.
pub async fn counterpart(
    green: &impl GenericClient,
    sequence: &BlueSequence,
    renames: &Renames,
) -> Result<Option<QualifiedName>, SequenceError> {
    let what = || format!("look up the counterpart of sequence {}", sequence.name);
    if let Some((table, column)) = &sequence.owner {
        if let Some(green_column) = renames.green_column(&table.schema, &table.name, column) {
            let row = green
                .query_opt(COLUMN_SEQUENCE, &[&table.to_string(), &green_column])
                .await
                .map_err(|e| SequenceError::query("green", what(), e))?;
            if let Some(row) = row {
                return Ok(Some(QualifiedName::new(
                    row.get::<_, String>(0),
                    row.get::<_, String>(1),
                )));
            }
        }
    }
    let exists: bool = green
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'S')",
            &[&sequence.name.schema, &sequence.name.name],
        )
        .await
        .map_err(|e| SequenceError::query("green", what(), e))?
        .get(0);
    Ok(exists.then(|| sequence.name.clone()))
}

/// Copies the state of every sequence of `publication` (see [`list`]) from blue to green, as
/// `how` says. Every sequence that cannot be read on blue or set on green is reported at the
/// end, each with its fix; the others are set all the same.
pub async fn copy(
    blue: &impl GenericClient,
    green: &impl GenericClient,
    publication: &str,
    renames: &Renames,
    how: CopyMode,
) -> Result<Synced, SequenceError> {
    let sequences = list(blue, publication).await?;
    let blue_role = current_user(blue, "blue").await?;
    let green_role = current_user(green, "green").await?;
    let mut synced = Synced::default();
    let mut failures = Vec::new();
    for sequence in &sequences {
        let state = match read(blue, &sequence.name).await {
            Ok(state) => state,
            Err(e) if e.is_transient() => {
                return Err(SequenceError::Query {
                    side: "blue",
                    what: format!("read sequence {}", sequence.name),
                    source: e,
                })
            }
            Err(e) => {
                failures.push(not_synced(&sequence.name, "blue", &blue_role, &e, None));
                continue;
            }
        };
        let Some(target) = counterpart(green, sequence, renames).await? else {
            tracing::warn!(sequence = %sequence.name, "green has no counterpart of this sequence; left alone");
            synced.missing_on_green.push(sequence.name.clone());
            continue;
        };
        if how == CopyMode::NeverBack {
            match ahead(blue, green, &sequence.name, state, &target).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(sequence = %sequence.name, green = %target, "green's sequence is further along than blue's (it handed out values of its own); kept");
                    synced.kept_ahead.push(target);
                    continue;
                }
                Err(e) if e.is_transient() => {
                    return Err(SequenceError::Query {
                        side: "green",
                        what: format!("read sequence {target}"),
                        source: e,
                    })
                }
                Err(e) => {
                    failures.push(unreadable_on_green(
                        &sequence.name,
                        &target,
                        &green_role,
                        &e,
                    ));
                    continue;
                }
            }
        }
        match set(green, &target, state).await {
            Ok(()) => {
                tracing::debug!(sequence = %sequence.name, green = %target, last_value = state.last_value, is_called = state.is_called, "sequence set");
                synced.set += 1;
            }
            Err(e) if e.is_transient() => {
                return Err(SequenceError::Query {
                    side: "green",
                    what: format!("set sequence {target}"),
                    source: e,
                })
            }
            Err(e) => failures.push(not_synced(
                &sequence.name,
                "green",
                &green_role,
                &e,
                Some(&target),
            )),
        }
    }
    if failures.is_empty() {
        Ok(synced)
    } else {
        Err(SequenceError::NotSynced { failures })
    }
}

/// Whether green's `target` will next hand out a value beyond the one blue's `sequence` (in
/// `state`) would, in the direction blue's sequence counts: green then keeps its own state.
async fn ahead(
    blue: &impl GenericClient,
    green: &impl GenericClient,
    sequence: &QualifiedName,
    state: SequenceState,
    target: &QualifiedName,
) -> Result<bool, SqlError> {
    let theirs = read(green, target).await?;
    let blue_step = increment(blue, sequence).await?;
    let green_step = increment(green, target).await?;
    let next = |s: SequenceState, step: i64| {
        i128::from(s.last_value) + if s.is_called { i128::from(step) } else { 0 }
    };
    let (b, g) = (next(state, blue_step), next(theirs, green_step));
    Ok(if blue_step > 0 { g > b } else { g < b })
}

/// `sequence`'s increment.
async fn increment(client: &impl GenericClient, sequence: &QualifiedName) -> Result<i64, SqlError> {
    Ok(client
        .query_one(
            "SELECT seqincrement FROM pg_catalog.pg_sequence \
              WHERE seqrelid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.regclass",
            &[&sequence.to_string()],
        )
        .await?
        .get(0))
}

/// Refuses, naming each with its GRANT, the sequences of `publication` the connected role may
/// not read on blue: run before a copy starts, so that it does not end on them.
pub async fn check_readable(
    blue: &impl GenericClient,
    publication: &str,
) -> Result<(), SequenceError> {
    let role = current_user(blue, "blue").await?;
    let mut failures = Vec::new();
    for sequence in list(blue, publication).await? {
        let readable: bool = blue
            .query_one(
                "SELECT pg_catalog.has_sequence_privilege($1, 'SELECT')",
                &[&sequence.name.to_string()],
            )
            .await
            .map_err(|e| SequenceError::query("blue", "check the sequences' privileges", e))?
            .get(0);
        if !readable {
            failures.push(unreadable(&sequence.name, &role, "no SELECT privilege"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(SequenceError::NotSynced { failures })
    }
}

/// The report of a sequence `role` may not read on blue.
fn unreadable(sequence: &QualifiedName, role: &str, why: &str) -> NotSynced {
    NotSynced {
        sequence: sequence.clone(),
        problem: format!("role {} may not read it on blue ({why})", quote_ident(role)),
        fix: format!(
            "GRANT SELECT ON SEQUENCE {sequence} TO {} on blue",
            quote_ident(role)
        ),
    }
}

/// The report of green's `target` that could not be read (to tell whether it is ahead of
/// blue's `sequence`).
fn unreadable_on_green(
    sequence: &QualifiedName,
    target: &QualifiedName,
    role: &str,
    e: &SqlError,
) -> NotSynced {
    if e.sqlstate() != Some("42501") {
        return not_synced(sequence, "green", role, e, Some(target));
    }
    let server = e
        .server()
        .map_or_else(|| e.to_string(), |s| s.message.clone());
    NotSynced {
        sequence: sequence.clone(),
        problem: format!(
            "role {} may not read green's {target} ({server}), so the cutover cannot tell \
             whether green is further along",
            quote_ident(role)
        ),
        fix: format!(
            "GRANT SELECT, UPDATE ON SEQUENCE {target} TO {} on green",
            quote_ident(role)
        ),
    }
}

async fn current_user(
    client: &impl GenericClient,
    side: &'static str,
) -> Result<String, SequenceError> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| SequenceError::query(side, "read the current role", e))?
        .get(0))
}

/// The report of a sequence that could not be read on blue (`green_target: None`) or set on
/// green.
fn not_synced(
    sequence: &QualifiedName,
    side: &str,
    role: &str,
    e: &SqlError,
    green_target: Option<&QualifiedName>,
) -> NotSynced {
    let target = green_target.unwrap_or(sequence);
    let server = e
        .server()
        .map_or_else(|| e.to_string(), |s| s.message.clone());
    let (problem, fix) = match (e.sqlstate(), green_target) {
        (Some("42501"), None) => return unreadable(sequence, role, &server),
        (Some("42501"), Some(_)) => (
            format!(
                "role {} may not set green's {target} ({server})",
                quote_ident(role)
            ),
            format!(
                "GRANT UPDATE ON SEQUENCE {target} TO {} on green",
                quote_ident(role)
            ),
        ),
        _ => (
            format!("{side} refused it ({server})"),
            format!(
                "make green's {target} able to take blue's value (the same type, bounds and \
                 increment as on blue: ALTER SEQUENCE on green)"
            ),
        ),
    };
    NotSynced {
        sequence: sequence.clone(),
        problem,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ServerError;

    fn server(sqlstate: &str, message: &str) -> SqlError {
        SqlError::Server(Box::new(ServerError {
            severity: "ERROR".into(),
            sqlstate: sqlstate.into(),
            message: message.into(),
            detail: None,
            hint: None,
            position: None,
            context: None,
            column: None,
        }))
    }

    #[test]
    fn every_failure_is_named_with_its_fix() {
        let a = QualifiedName::new("public", "a_id_seq");
        let b = QualifiedName::new("my schema", "B");
        let e = SequenceError::NotSynced {
            failures: vec![
                not_synced(
                    &a,
                    "blue",
                    "bs reader",
                    &server("42501", "permission denied for sequence a_id_seq"),
                    None,
                ),
                not_synced(
                    &b,
                    "green",
                    "app",
                    &server("42501", "permission denied for sequence B"),
                    Some(&b),
                ),
            ],
        };
        let text = e.to_string();
        assert!(
            text.starts_with("2 sequences not synced to green"),
            "{text}"
        );
        assert!(
            text.contains(
                "sequence \"public\".\"a_id_seq\": role \"bs reader\" may not read it on blue \
                 (permission denied for sequence a_id_seq) — GRANT SELECT ON SEQUENCE \
                 \"public\".\"a_id_seq\" TO \"bs reader\" on blue"
            ),
            "{text}"
        );
        assert!(
            text.contains("GRANT UPDATE ON SEQUENCE \"my schema\".\"B\" TO \"app\" on green"),
            "{text}"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn green_unreadable_at_a_cutover_names_the_grant() {
        let s = QualifiedName::new("public", "s");
        let n = unreadable_on_green(
            &s,
            &s,
            "app",
            &server("42501", "permission denied for sequence s"),
        );
        assert!(n.problem.contains("may not read green's"), "{n}");
        assert_eq!(
            n.fix,
            "GRANT SELECT, UPDATE ON SEQUENCE \"public\".\"s\" TO \"app\" on green"
        );
    }

    #[test]
    fn a_value_green_cannot_take_names_the_bounds() {
        let s = QualifiedName::new("public", "s");
        let n = not_synced(
            &s,
            "green",
            "app",
            &server(
                "22003",
                "setval: value 5000 is out of bounds for sequence \"s\"",
            ),
            Some(&s),
        );
        assert!(n.problem.contains("out of bounds"), "{n}");
        assert!(n.fix.contains("ALTER SEQUENCE"), "{n}");
    }
}
