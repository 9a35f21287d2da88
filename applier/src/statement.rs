//! The statements an applier runs on green: their SQL text, built from quoted identifiers and
//! numbered parameters only, and a bounded cache of the prepared statements.
//!
//! A statement is identified by its target table (one mapping per relation description) and
//! its [`Shape`]: the operation plus what varies from row to row — the number of rows of a
//! multi-row INSERT, the columns an UPDATE sets (unchanged TOAST values are left out), and how
//! the row is found (by key, or for REPLICA IDENTITY FULL by every old column that was sent).

use std::collections::HashMap;
use std::fmt::Write as _;

use tokio_postgres::Statement;

use crate::error::Operation;
use crate::target::TargetTable;

/// How an UPDATE or DELETE finds its row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Locate {
    /// `col = $n AND …` over these column indexes: the replica identity key.
    Key(Box<[usize]>),
    /// REPLICA IDENTITY FULL: exactly one row whose columns at these indexes hold the old
    /// values image for image (`ROW(…) *= ROW(…)`: NULL matches NULL, and `-0` does not match
    /// `0`, nor `1.0` match `1.00`, nor `'A'` match `'a'` under a case-insensitive type), found
    /// through its `ctid` so that duplicates are touched once; narrowed first by equality on
    /// the columns of green's index `index` (in [`TargetTable::full_indexes`]), when given, so
    /// that green finds it through that index instead of reading the whole table.
    Full {
        /// The columns compared (those blue sent a value of).
        columns: Box<[usize]>,
        /// The index of green's that finds the candidates.
        index: Option<usize>,
    },
}

impl Locate {
    /// The column indexes whose values follow the SET values as parameters.
    pub(crate) fn columns(&self) -> &[usize] {
        match self {
            Locate::Key(c) | Locate::Full { columns: c, .. } => c,
        }
    }
}

/// What varies between statements of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    /// A multi-row INSERT of this many rows.
    Insert {
        /// Rows per statement.
        rows: usize,
    },
    /// A multi-row INSERT that overwrites a row of the same green key
    /// (`ON CONFLICT (key) DO UPDATE`): the idempotent INSERT of a reconcile window.
    Upsert {
        /// Rows per statement.
        rows: usize,
    },
    /// An UPDATE setting the columns at these indexes.
    Update {
        /// Columns set, in order.
        set: Box<[usize]>,
        /// How the row is found.
        locate: Locate,
        /// Whether green itself fails the statement when it finds no row (see
        /// [`NO_ROW_MARKER`]): only when the `COMMIT` follows it down the pipeline unanswered;
        /// otherwise the client reads the row count before anything commits, and the plain
        /// statement costs green far less.
        checked: bool,
    },
    /// A DELETE.
    Delete {
        /// How the row is found.
        locate: Locate,
        /// Whether green itself fails the statement when it finds no row (see
        /// [`NO_ROW_MARKER`]): never for a reconcile window's DELETE, where a missing row is
        /// expected, and as for [`Shape::Update`] otherwise.
        checked: bool,
    },
    /// A folded group's INSERT of many rows, from one `text[]` per column (see [`crate::set`]).
    SetInsert,
    /// A folded group's UPDATE of many rows by key, setting the columns at these indexes.
    SetUpdate {
        /// Columns set, in order (no key column).
        set: Box<[usize]>,
    },
    /// A folded group's DELETE of many rows by key.
    SetDelete,
    /// A folded group's check that green has none of these keys (rows blue inserted and
    /// deleted inside the group).
    SetAbsent,
}

impl Shape {
    /// The row operation the statement carries out.
    pub(crate) fn operation(&self) -> Operation {
        match self {
            Shape::Insert { .. } | Shape::Upsert { .. } | Shape::SetInsert | Shape::SetAbsent => {
                Operation::Insert
            }
            Shape::Update { .. } | Shape::SetUpdate { .. } => Operation::Update,
            Shape::Delete { .. } | Shape::SetDelete => Operation::Delete,
        }
    }
}

/// What green's error says when a checked UPDATE or DELETE found no row: the text of a value
/// that cannot be read as a `bigint`, so the statement itself fails (SQLSTATE `22P02`).
pub(crate) const NO_ROW_MARKER: &str = "blueshift: no row matched";

/// Whether `shape` is answered by [`checked`]'s row count rather than a command tag.
pub(crate) fn is_checked(shape: &Shape) -> bool {
    matches!(
        shape,
        Shape::Update { checked: true, .. } | Shape::Delete { checked: true, .. }
    )
}

/// `statement` (an UPDATE or DELETE) made to fail on green when it touches no row, and to
/// answer with one `bigint`, the rows it touched.
///
/// An UPDATE or DELETE that finds no row means green diverged, and the transaction must not
/// commit. When the COMMIT is pipelined behind the changes (see
/// [`pipeline`](crate::pipeline)), the client reads the row count only after green has already
/// run the COMMIT: the check has to fail the transaction on green, before the COMMIT. The
/// failure is an input error on the marker text, raised at run time (the `CASE` depends on the
/// row count, so the planner cannot fold it); the pipeline turns it into
/// [`ApplyError::RowNotFound`](crate::ApplyError::RowNotFound).
///
/// The check is not free: the data-modifying CTE, its tuple store and the aggregate cost green
/// about 1.7 times a plain keyed UPDATE (measured with pgbench in pipeline mode, PostgreSQL 15),
/// so an applier uses it only when the `COMMIT` really is in flight behind the statement
/// (`Applier::apply` on a small transaction); otherwise it sends the plain statement and
/// checks the command tag before it commits.
fn checked(statement: &str) -> String {
    format!(
        "WITH changed AS ({statement} RETURNING 1) SELECT (CASE WHEN pg_catalog.count(*) \
         OPERATOR(pg_catalog.=) 0::pg_catalog.int8 THEN '{NO_ROW_MARKER}' ELSE \
         pg_catalog.count(*)::pg_catalog.text END)::pg_catalog.int8 FROM changed"
    )
}

/// The SQL text of `shape` on `table`. Parameters are numbered in order: INSERT row by row,
/// column by column; UPDATE the SET columns, then the locating columns; DELETE the locating
/// columns.
pub(crate) fn sql(table: &TargetTable, shape: &Shape) -> String {
    let sql = unchecked_sql(table, shape);
    if is_checked(shape) {
        checked(&sql)
    } else {
        sql
    }
}

fn unchecked_sql(table: &TargetTable, shape: &Shape) -> String {
    match shape {
        Shape::SetInsert | Shape::SetUpdate { .. } | Shape::SetDelete | Shape::SetAbsent => {
            // A set shape is only made for a foldable table.
            crate::set::sql(table, shape).unwrap_or_default()
        }
        Shape::Insert { rows } => insert_sql(table, *rows),
        Shape::Upsert { rows } => {
            let mut sql = insert_sql(table, *rows);
            let key: Vec<&str> = table
                .green_key
                .iter()
                .map(|&c| table.columns[c].quoted.as_str())
                .collect();
            let _ = write!(sql, " ON CONFLICT ({}) ", key.join(", "));
            let updates: Vec<String> = table
                .columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !table.green_key.contains(i))
                .map(|(_, c)| format!("{0} = EXCLUDED.{0}", c.quoted))
                .collect();
            if updates.is_empty() {
                sql.push_str("DO NOTHING");
            } else {
                let _ = write!(sql, "DO UPDATE SET {}", updates.join(", "));
            }
            sql
        }
        Shape::Update { set, locate, .. } => {
            let mut sql = format!("UPDATE {} SET ", only(table));
            if set.is_empty() {
                // Nothing changed but unchanged TOAST: still find (and lock) the row.
                if let Some(first) = table.columns.first() {
                    let _ = write!(sql, "{0} = {0}", first.quoted);
                }
            }
            for (n, &c) in set.iter().enumerate() {
                if n > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "{} = ${}", table.columns[c].quoted, n + 1);
            }
            push_locate(&mut sql, table, locate, set.len() + 1);
            sql
        }
        Shape::Delete { locate, .. } => {
            let mut sql = format!("DELETE FROM {}", only(table));
            push_locate(&mut sql, table, locate, 1);
            sql
        }
    }
}

/// The table an UPDATE or DELETE touches: `ONLY` the table, so that a row of an inheritance
/// child with the same key is never touched (blue sends the child's changes as the child's),
/// except a partitioned table, whose rows live in its partitions.
fn only(table: &TargetTable) -> String {
    if table.partitioned {
        table.quoted.clone()
    } else {
        format!("ONLY {}", table.quoted)
    }
}

fn insert_sql(table: &TargetTable, rows: usize) -> String {
    if table.columns.is_empty() {
        return format!("INSERT INTO {} DEFAULT VALUES", table.quoted);
    }
    let mut sql = format!("INSERT INTO {} (", table.quoted);
    for (n, column) in table.columns.iter().enumerate() {
        if n > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&column.quoted);
    }
    // Blue's value wins over green's identity column, as in native apply.
    sql.push_str(") OVERRIDING SYSTEM VALUE VALUES ");
    let width = table.columns.len();
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "${}", row * width + column + 1);
        }
        sql.push(')');
    }
    sql
}

/// Appends the WHERE clause; the first locating parameter is `$first`.
fn push_locate(sql: &mut String, table: &TargetTable, locate: &Locate, first: usize) {
    match locate {
        Locate::Key(columns) => {
            sql.push_str(" WHERE ");
            for (n, &c) in columns.iter().enumerate() {
                if n > 0 {
                    sql.push_str(" AND ");
                }
                let column = &table.columns[c];
                let _ = write!(
                    sql,
                    "{} OPERATOR({}) ${}",
                    column.quoted,
                    column.equality,
                    first + n
                );
            }
        }
        Locate::Full { columns, index } => {
            let row_id = if table.partitioned {
                "(tableoid, ctid)"
            } else {
                "ctid"
            };
            let inner_id = if table.partitioned {
                "tableoid, ctid"
            } else {
                "ctid"
            };
            let _ = write!(
                sql,
                " WHERE {row_id} OPERATOR(pg_catalog.=) (SELECT {inner_id} FROM {} WHERE ",
                only(table)
            );
            // Every parameter is cast to green's column type, the same way wherever it is used.
            let parameter =
                |n: usize, c: usize| format!("${}::{}", first + n, table.columns[c].green_type);
            let mut conditions = Vec::new();
            if let Some(index) = index.and_then(|i| table.full_indexes.get(i)) {
                for (c, operator) in &index.columns {
                    if let Some(n) = columns.iter().position(|x| x == c) {
                        conditions.push(format!(
                            "{} OPERATOR({operator}) {}",
                            table.columns[*c].quoted,
                            parameter(n, *c)
                        ));
                    }
                }
            }
            if !columns.is_empty() {
                let stored: Vec<&str> = columns
                    .iter()
                    .map(|&c| table.columns[c].quoted.as_str())
                    .collect();
                let old: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(n, &c)| parameter(n, c))
                    .collect();
                // Cast to `record`: between two bare row constructors the operator would be
                // applied column by column.
                conditions.push(format!(
                    "ROW({})::pg_catalog.record OPERATOR(pg_catalog.*=) ROW({})::pg_catalog.record",
                    stored.join(", "),
                    old.join(", ")
                ));
            }
            if conditions.is_empty() {
                sql.push_str("true");
            }
            sql.push_str(&conditions.join(" AND "));
            sql.push_str(" LIMIT 1)");
        }
    }
}

/// `TRUNCATE` of exactly the given tables, as native apply does (`ExecuteTruncateGuts` with
/// `DROP_RESTRICT`): `ONLY` each table, so that inheritance children blue did not name stay
/// (blue names each table it truncated that is published), except a partitioned table, whose
/// partitions go with it; never `CASCADE`, whatever blue ran — a green table outside the set
/// that references one of them makes the TRUNCATE fail instead; `RESTART IDENTITY` when blue
/// sent it. `tables` are quoted names, each with whether green's table is partitioned.
pub(crate) fn truncate_sql(tables: &[(&str, bool)], restart_identity: bool) -> String {
    let names: Vec<String> = tables
        .iter()
        .map(|(name, partitioned)| {
            if *partitioned {
                (*name).to_owned()
            } else {
                format!("ONLY {name}")
            }
        })
        .collect();
    let mut sql = format!("TRUNCATE TABLE {}", names.join(", "));
    if restart_identity {
        sql.push_str(" RESTART IDENTITY");
    }
    sql
}

/// Prepared statements by target table and shape, least recently used evicted first.
#[derive(Debug)]
pub(crate) struct StatementCache {
    by_table: HashMap<u64, HashMap<Shape, (Statement, u64)>>,
    len: usize,
    capacity: usize,
    clock: u64,
}

impl StatementCache {
    /// An empty cache holding at most `capacity` statements (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        StatementCache {
            by_table: HashMap::new(),
            len: 0,
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The cached statement, marked as just used.
    pub(crate) fn get(&mut self, table: u64, shape: &Shape) -> Option<Statement> {
        self.clock += 1;
        let entry = self.by_table.get_mut(&table)?.get_mut(shape)?;
        entry.1 = self.clock;
        Some(entry.0.clone())
    }

    /// Caches a statement, evicting the least recently used one when full.
    pub(crate) fn insert(&mut self, table: u64, shape: Shape, statement: Statement) {
        if self.len >= self.capacity {
            self.evict_oldest();
        }
        self.clock += 1;
        if self
            .by_table
            .entry(table)
            .or_default()
            .insert(shape, (statement, self.clock))
            .is_none()
        {
            self.len += 1;
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .by_table
            .iter()
            .flat_map(|(table, shapes)| {
                shapes
                    .iter()
                    .map(move |(shape, (_, used))| (*used, *table, shape))
            })
            .min_by_key(|(used, _, _)| *used)
            .map(|(_, table, shape)| (table, shape.clone()));
        if let Some((table, shape)) = oldest {
            if let Some(shapes) = self.by_table.get_mut(&table) {
                if shapes.remove(&shape).is_some() {
                    self.len -= 1;
                }
                if shapes.is_empty() {
                    self.by_table.remove(&table);
                }
            }
        }
    }

    /// Number of statements cached.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetColumn;

    fn table(partitioned: bool) -> TargetTable {
        let column = |name: &str, blue: usize, green_type: &str| TargetColumn {
            name: name.to_owned(),
            quoted: blueshift_decoder::ident::quote_ident(name),
            green_type: green_type.to_owned(),
            blue,
            equality: crate::target::CATALOG_EQUALITY.to_owned(),
        };
        TargetTable {
            id: 1,
            display: "s.x; DROP TABLE y".into(),
            quoted: "\"s\".\"x; DROP TABLE y\"".into(),
            partitioned,
            // Blue's column 1 is not carried: green's columns are blue's 0, 2 and 3.
            columns: vec![
                column("id", 0, "integer"),
                column("We\"ird", 2, "public.citext"),
                column("j", 3, "json"),
            ],
            blue_width: 4,
            key: vec![0],
            green_key: vec![0],
            foldable: Err("test"),
            insertable: Err("test"),
            full_indexes: vec![crate::target::FullIndex {
                columns: vec![(1, "public.=".to_owned()), (0, "pg_catalog.=".to_owned())],
            }],
            identity_full: false,
            schema: "s".into(),
            name: "x; DROP TABLE y".into(),
        }
    }

    #[test]
    fn insert_numbers_parameters_row_by_row() {
        assert_eq!(
            sql(&table(false), &Shape::Insert { rows: 2 }),
            "INSERT INTO \"s\".\"x; DROP TABLE y\" (\"id\", \"We\"\"ird\", \"j\") OVERRIDING \
             SYSTEM VALUE VALUES ($1, $2, $3), ($4, $5, $6)"
        );
    }

    #[test]
    fn upsert_merges_on_greens_key() {
        assert_eq!(
            sql(&table(false), &Shape::Upsert { rows: 1 }),
            "INSERT INTO \"s\".\"x; DROP TABLE y\" (\"id\", \"We\"\"ird\", \"j\") OVERRIDING \
             SYSTEM VALUE VALUES ($1, $2, $3) ON CONFLICT (\"id\") DO UPDATE SET \
             \"We\"\"ird\" = EXCLUDED.\"We\"\"ird\", \"j\" = EXCLUDED.\"j\""
        );
    }

    #[test]
    fn update_by_key_and_full() {
        let t = table(false);
        let by_key = Shape::Update {
            set: vec![1, 2].into(),
            locate: Locate::Key(vec![0].into()),
            checked: false,
        };
        assert_eq!(
            unchecked_sql(&t, &by_key),
            "UPDATE ONLY \"s\".\"x; DROP TABLE y\" SET \"We\"\"ird\" = $1, \"j\" = $2 WHERE \"id\" \
             OPERATOR(pg_catalog.=) $3"
        );
        let full = Shape::Delete {
            locate: Locate::Full {
                columns: vec![0, 2].into(),
                index: None,
            },
            checked: false,
        };
        assert_eq!(
            sql(&t, &full),
            "DELETE FROM ONLY \"s\".\"x; DROP TABLE y\" WHERE ctid OPERATOR(pg_catalog.=) (SELECT \
             ctid FROM ONLY \"s\".\"x; DROP TABLE y\" WHERE ROW(\"id\", \"j\")::pg_catalog.record \
             OPERATOR(pg_catalog.*=) ROW($1::integer, $2::json)::pg_catalog.record LIMIT 1)"
        );
        // Through green's index on ("We""ird", id): equality on both, then the exact image.
        let indexed = Shape::Update {
            set: vec![2].into(),
            locate: Locate::Full {
                columns: vec![0, 1, 2].into(),
                index: Some(0),
            },
            checked: false,
        };
        assert_eq!(
            unchecked_sql(&t, &indexed),
            "UPDATE ONLY \"s\".\"x; DROP TABLE y\" SET \"j\" = $1 WHERE ctid OPERATOR(pg_catalog.=) \
             (SELECT ctid FROM ONLY \"s\".\"x; DROP TABLE y\" WHERE \"We\"\"ird\" \
             OPERATOR(public.=) $3::public.citext AND \"id\" OPERATOR(pg_catalog.=) \
             $2::integer AND ROW(\"id\", \"We\"\"ird\", \"j\")::pg_catalog.record \
             OPERATOR(pg_catalog.*=) ROW($2::integer, $3::public.citext, $4::json)::pg_catalog.record \
             LIMIT 1)"
        );
        let parted = unchecked_sql(
            &table(true),
            &Shape::Update {
                set: vec![].into(),
                locate: Locate::Full {
                    columns: vec![].into(),
                    index: None,
                },
                checked: false,
            },
        );
        assert_eq!(
            parted,
            "UPDATE \"s\".\"x; DROP TABLE y\" SET \"id\" = \"id\" WHERE (tableoid, ctid) \
             OPERATOR(pg_catalog.=) (SELECT tableoid, ctid FROM \"s\".\"x; DROP TABLE y\" WHERE true LIMIT 1)"
        );
    }

    #[test]
    fn updates_and_checked_deletes_fail_on_green_when_no_row_matches() {
        let t = table(false);
        let delete = |checked| Shape::Delete {
            locate: Locate::Key(vec![0].into()),
            checked,
        };
        assert_eq!(
            sql(&t, &delete(true)),
            "WITH changed AS (DELETE FROM ONLY \"s\".\"x; DROP TABLE y\" WHERE \"id\" \
             OPERATOR(pg_catalog.=) $1 RETURNING 1) SELECT (CASE WHEN pg_catalog.count(*) \
             OPERATOR(pg_catalog.=) 0::pg_catalog.int8 THEN 'blueshift: no row matched' ELSE \
             pg_catalog.count(*)::pg_catalog.text END)::pg_catalog.int8 FROM changed"
        );
        assert_eq!(
            sql(&t, &delete(false)),
            "DELETE FROM ONLY \"s\".\"x; DROP TABLE y\" WHERE \"id\" OPERATOR(pg_catalog.=) $1"
        );
        let update = |checked| Shape::Update {
            set: vec![1].into(),
            locate: Locate::Key(vec![0].into()),
            checked,
        };
        assert!(is_checked(&update(true)) && is_checked(&delete(true)));
        assert!(!is_checked(&update(false)) && !is_checked(&delete(false)));
        assert!(sql(&t, &update(true)).starts_with("WITH changed AS (UPDATE ONLY "));
        assert_eq!(
            sql(&t, &update(false)),
            "UPDATE ONLY \"s\".\"x; DROP TABLE y\" SET \"We\"\"ird\" = $1 WHERE \"id\" \
             OPERATOR(pg_catalog.=) $2"
        );
        assert!(!is_checked(&Shape::Insert { rows: 1 }));
    }

    #[test]
    fn truncate_is_only_these_tables_and_never_cascades() {
        assert_eq!(
            truncate_sql(&[("\"a\".\"b\"", false), ("\"c\".\"d\"", true)], true),
            "TRUNCATE TABLE ONLY \"a\".\"b\", \"c\".\"d\" RESTART IDENTITY"
        );
        assert_eq!(
            truncate_sql(&[("\"t\"", false)], false),
            "TRUNCATE TABLE ONLY \"t\""
        );
    }
}
