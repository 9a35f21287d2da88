//! Set-based apply of a folded group: each table's net effect (see [`crate::fold`]) as a few
//! statements over arrays instead of one statement per change.
//!
//! ```text
//! -- keys inserted and deleted in the group: green must not have them (expected: 0 rows)
//! SELECT 1 FROM ONLY t AS t, ROWS FROM (unnest($1::text[])) AS u(k0)
//!  WHERE t.id OPERATOR(pg_catalog.=) u.k0::integer
//! -- deleted keys (expected: as many rows as keys)
//! DELETE FROM ONLY t AS t USING ROWS FROM (unnest($1::text[])) AS u(k0)
//!  WHERE t.id OPERATOR(pg_catalog.=) u.k0::integer
//! -- inserted rows
//! INSERT INTO t (id, v) OVERRIDING SYSTEM VALUE
//!   SELECT u.c0::integer, u.c1::text FROM ROWS FROM (unnest($1::text[]), unnest($2::text[])) AS u(c0, c1)
//! -- updated rows, one statement per set of columns sent (a `u` value is left out), by key
//! UPDATE ONLY t AS t SET v = u.s0::text FROM ROWS FROM (unnest($1::text[]), unnest($2::text[])) AS u(k0, s0)
//!  WHERE t.id OPERATOR(pg_catalog.=) u.k0::integer
//! ```
//!
//! Every identifier is quoted, every function and operator schema-qualified (the key's equality
//! is the one the row path uses, [`TargetColumn::equality`](crate::target::TargetColumn)).
//! Values go as parameters: one `text[]` per column, in the binary array format, each element
//! exactly the text blue printed, cast in SQL to green's column type *without* its modifier, so
//! the cast is the type's input function (a table whose column type has a cast from `text`
//! implemented by a function instead, such as `name` or `"char"`, is not folded) and the
//! modifier is applied by the INSERT's or UPDATE's assignment, as for the row path's
//! parameters. A statement takes at most [`MAX_SET_ROWS`] rows; the prepared statement does not
//! depend on the count.
//!
//! Row counts are checked before anything commits (a group always sends its `COMMIT` after the
//! answers are read): a DELETE or UPDATE that touched fewer rows than keys fails with
//! [`ApplyError::RowNotFound`] naming the table, a key expected absent that green has with
//! [`ApplyError::RowExists`]. Whatever fails in a folded group, the applier rolls the group back
//! and applies it again in blue's order (`Applier::begin_and_apply`), so the error finally
//! reported — the row, the column, the constraint — is exactly the row path's.
//!
//! Order: deletes, then inserts, then updates of a table (their keys are distinct, so the order
//! inside each statement does not matter), tables one after the other in order of first change.
//! The order *between* tables is not blue's: foreign keys are not checked under
//! `session_replication_role = replica`, and no trigger fires on a folded table (a table with a
//! trigger that fires during apply is not folded), so no statement can observe another table's
//! intermediate state. Within a segment of the group between two TRUNCATEs that is all of
//! them; a TRUNCATE itself is applied at its place in blue's order. One thing can still tell:
//! a trigger that fires during apply on a table applied in order, and that reads *another*
//! table, sees that table before or after the group's net changes to it rather than as it was
//! at that change in blue's order; `--fold off` is the setting for such a green.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use blueshift_decoder::pgoutput::{ColumnValue, OldTuple, TupleData};
use bytes::{BufMut as _, Bytes, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::change::{check_width, ChangeWriter};
use crate::error::ApplyError;
use crate::fence::Action;
use crate::fold::{key_of, Folded, Folder, Key, Op, Unfoldable};
use crate::statement::Shape;
use crate::target::TargetTable;
use crate::transaction::Change;

/// Rows per set statement at most (arrays of this many elements per column).
pub(crate) const MAX_SET_ROWS: usize = 8192;

/// The fewest changes a group must hold for the applier to fold it: below, the row path's
/// statements cost green less than the set statements' array handling. (A single source
/// transaction is never folded, however large: see `Applier::set_group`.)
pub(crate) const FOLD_MIN_CHANGES: usize = 16;

/// A `text[]` parameter: every element's bytes as blue printed them (`None`: NULL), sent in the
/// binary array format, which needs no quoting.
#[derive(Debug, Clone, Default)]
pub(crate) struct TextArray(pub(crate) Vec<Option<Bytes>>);

impl ToSql for TextArray {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let len = i32::try_from(self.0.len())?;
        let has_null = self.0.iter().any(Option::is_none);
        out.put_i32(1); // dimensions
        out.put_i32(i32::from(has_null));
        out.put_u32(Type::TEXT.oid());
        out.put_i32(len);
        out.put_i32(1); // lower bound
        for element in &self.0 {
            match element {
                None => out.put_i32(-1),
                Some(bytes) => {
                    out.put_i32(i32::try_from(bytes.len())?);
                    out.put_slice(bytes);
                }
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }

    to_sql_checked!();
}

/// The SQL text of a set `shape` on `table` (parameters: one `text[]` per column, key columns
/// first for UPDATE), or `None` for a row shape or a table that is not foldable (for a set
/// INSERT: not insertable, see [`TargetTable::insertable`]).
pub(crate) fn sql(table: &TargetTable, shape: &Shape) -> Option<String> {
    let types = match shape {
        Shape::SetInsert => table.insertable.as_ref().ok()?,
        _ => table.foldable.as_ref().ok()?,
    };
    let unnest = |n: usize| -> String {
        (1..=n)
            .map(|p| format!("pg_catalog.unnest(${p}::pg_catalog.text[])"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_match = || -> String {
        table
            .key
            .iter()
            .enumerate()
            .map(|(j, &c)| {
                let column = &table.columns[c];
                format!(
                    "t.{} OPERATOR({}) u.k{j}::{}",
                    column.quoted, column.equality, types[c]
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let key_names = || -> String {
        (0..table.key.len())
            .map(|j| format!("k{j}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match shape {
        Shape::SetAbsent => format!(
            "SELECT 1 FROM ONLY {} AS t, ROWS FROM ({}) AS u({}) WHERE {}",
            table.quoted,
            unnest(table.key.len()),
            key_names(),
            key_match()
        ),
        Shape::SetDelete => format!(
            "DELETE FROM ONLY {} AS t USING ROWS FROM ({}) AS u({}) WHERE {}",
            table.quoted,
            unnest(table.key.len()),
            key_names(),
            key_match()
        ),
        Shape::SetInsert => {
            let columns: Vec<&str> = table.columns.iter().map(|c| c.quoted.as_str()).collect();
            let values: Vec<String> = (0..table.columns.len())
                .map(|c| format!("u.c{c}::{}", types[c]))
                .collect();
            let names: Vec<String> = (0..table.columns.len()).map(|c| format!("c{c}")).collect();
            // Blue's value wins over green's identity column, as in native apply.
            format!(
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM ROWS FROM ({}) AS u({})",
                table.quoted,
                columns.join(", "),
                values.join(", "),
                unnest(table.columns.len()),
                names.join(", ")
            )
        }
        Shape::SetUpdate { set } => {
            let mut sql = format!("UPDATE ONLY {} AS t SET ", table.quoted);
            if set.is_empty() {
                // Only the key and unchanged TOAST: still find (and lock) the row.
                let first = &table.columns[table.key[0]];
                let _ = write!(sql, "{0} = t.{0}", first.quoted);
            }
            for (n, &c) in set.iter().enumerate() {
                if n > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "{} = u.s{n}::{}", table.columns[c].quoted, types[c]);
            }
            let mut names = key_names();
            for n in 0..set.len() {
                let _ = write!(names, ", s{n}");
            }
            let _ = write!(
                sql,
                " FROM ROWS FROM ({}) AS u({names}) WHERE {}",
                unnest(table.key.len() + set.len()),
                key_match()
            );
            sql
        }
        Shape::Insert { .. }
        | Shape::Upsert { .. }
        | Shape::Update { .. }
        | Shape::Delete { .. } => return None,
    })
}

/// One table's changes within a segment of a group.
struct TableChanges<'c> {
    /// Its mapping onto green; `None` when a fence acts on it (its changes go in order).
    target: Option<Arc<TargetTable>>,
    /// Its changes, in blue's order.
    changes: Vec<&'c Change>,
    /// Its net effect so far; `None` once it is applied in order instead.
    folder: Option<Folder>,
    /// Every change so far is an insert of a whole row in text (one relation description):
    /// a table that cannot be folded still takes them as one set INSERT when it is
    /// [insertable](TargetTable::insertable) (a keyless history table, for one).
    inserts_only: bool,
}

/// Whether `change` is an insert a set INSERT can carry: every value text or NULL (no
/// unchanged TOAST, no binary value), as many as the description has columns.
fn set_insertable(target: &TargetTable, change: &Change) -> bool {
    match change {
        Change::Insert { new, .. } => {
            check_width(target, new).is_ok()
                && new
                    .columns
                    .iter()
                    .all(|c| matches!(c, ColumnValue::Text(_) | ColumnValue::Null))
        }
        _ => false,
    }
}

/// Folds `change` (to `target`'s table) into `folder`.
fn fold_change(
    folder: &mut Folder,
    target: &TargetTable,
    change: &Change,
) -> Result<(), Unfoldable> {
    let key: Vec<usize> = target.key.iter().map(|&k| target.columns[k].blue).collect();
    let (row, op) = match change {
        Change::Insert { new, .. } => (new, Op::Insert(new)),
        // Same key (blue sent no old key): an update in place.
        Change::Update { old: None, new, .. } => (new, Op::Update(new)),
        Change::Delete {
            old: OldTuple::Key(old),
            ..
        } => (old, Op::Delete),
        // A key-changing update, or a whole old row (REPLICA IDENTITY FULL), or a TRUNCATE.
        _ => return Err(Unfoldable),
    };
    check_width(target, row).map_err(|_| Unfoldable)?;
    let key = key_of(row, &key).ok_or(Unfoldable)?;
    folder.push(key, op)
}

impl ChangeWriter<'_> {
    /// Applies a group's changes folded: segment by segment between TRUNCATEs, each table's
    /// net effect as set statements, or its changes in blue's order where it cannot be folded.
    pub(crate) async fn write_folded(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        let mut start = 0;
        for (i, change) in changes.iter().enumerate() {
            if let Change::Truncate { .. } = change {
                self.write_segment(&changes[start..i]).await?;
                self.write_one(change).await?;
                start = i + 1;
            }
        }
        self.write_segment(&changes[start..]).await
    }

    /// Applies changes holding no TRUNCATE, folded per table where possible.
    async fn write_segment(&mut self, changes: &[Change]) -> Result<(), ApplyError> {
        let mut tables: Vec<TableChanges<'_>> = Vec::new();
        let mut by_oid: HashMap<u32, usize> = HashMap::new();
        for change in changes {
            let relation = match change {
                Change::Insert { relation, .. }
                | Change::Update { relation, .. }
                | Change::Delete { relation, .. } => relation,
                Change::Truncate { .. } => {
                    return Err(ApplyError::Misuse("a TRUNCATE inside a folded segment"))
                }
            };
            let target = if self.action(relation) == Action::Apply {
                Some(self.resolve(relation).await?)
            } else {
                None
            };
            let i = *by_oid.entry(relation.oid().0).or_insert_with(|| {
                tables.push(TableChanges {
                    folder: target
                        .as_ref()
                        .filter(|t| t.foldable.is_ok())
                        .map(|_| Folder::default()),
                    target: target.clone(),
                    changes: Vec::new(),
                    inserts_only: target.as_ref().is_some_and(|t| t.insertable.is_ok()),
                });
                tables.len() - 1
            });
            let table = &mut tables[i];
            table.changes.push(change);
            let same = match (&table.target, &target) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if !same {
                // Two descriptions of the table (its columns changed inside the group), or a
                // fence: in order.
                table.folder = None;
                table.inserts_only = false;
            }
            if table.inserts_only {
                table.inserts_only = target.as_ref().is_some_and(|t| set_insertable(t, change));
            }
            if let (Some(folder), Some(target)) = (&mut table.folder, &target) {
                if fold_change(folder, target, change).is_err() {
                    tracing::debug!(table = %target.display, "a change cannot be folded; the table's changes go in blue's order");
                    table.folder = None;
                }
            }
        }
        for table in tables {
            match (table.folder, table.target) {
                (Some(folder), Some(target)) => {
                    let folded = folder.finish();
                    tracing::debug!(
                        table = %target.display,
                        changes = table.changes.len(),
                        deletes = folded.deletes.len(),
                        inserts = folded.inserts.len(),
                        updates = folded.updates.len(),
                        "changes folded into set statements"
                    );
                    self.write_set(&target, folded).await?;
                }
                (None, Some(target)) if table.inserts_only => {
                    tracing::debug!(
                        table = %target.display,
                        inserts = table.changes.len(),
                        reason = target.foldable.as_ref().err().copied().unwrap_or("a change that cannot be folded"),
                        "not foldable, but only inserts: one set INSERT"
                    );
                    let inserts = table
                        .changes
                        .iter()
                        .filter_map(|c| match c {
                            Change::Insert { new, .. } => Some(new.clone()),
                            _ => None,
                        })
                        .collect();
                    self.write_set(
                        &target,
                        Folded {
                            inserts,
                            ..Folded::default()
                        },
                    )
                    .await?;
                }
                (_, target) => {
                    if let Some(target) = target {
                        tracing::debug!(
                            table = %target.display,
                            changes = table.changes.len(),
                            reason = target.foldable.as_ref().err().copied().unwrap_or("a change that cannot be folded"),
                            "changes applied in blue's order"
                        );
                    }
                    let mut changes = table.changes.into_iter();
                    self.write_in_order(|| Ok(changes.next().map(Cow::Borrowed)))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Sends one table's folded statements: absent keys checked, deletes, inserts, updates.
    async fn write_set(
        &mut self,
        target: &Arc<TargetTable>,
        folded: Folded,
    ) -> Result<(), ApplyError> {
        let Folded {
            deletes,
            inserts,
            updates,
            absent,
        } = folded;
        for chunk in absent.chunks(MAX_SET_ROWS) {
            self.send_set(target, Shape::SetAbsent, key_arrays(target, chunk), 0)
                .await?;
        }
        for chunk in deletes.chunks(MAX_SET_ROWS) {
            let expected = chunk.len() as u64;
            self.send_set(
                target,
                Shape::SetDelete,
                key_arrays(target, chunk),
                expected,
            )
            .await?;
        }
        for chunk in inserts.chunks(MAX_SET_ROWS) {
            let mut arrays = vec![TextArray(Vec::with_capacity(chunk.len())); target.columns.len()];
            for row in chunk {
                for (array, column) in arrays.iter_mut().zip(&target.columns) {
                    array.0.push(match &row.columns[column.blue] {
                        ColumnValue::Text(b) => Some(b.clone()),
                        ColumnValue::Null => None,
                        // Folding leaves neither in an insert.
                        ColumnValue::UnchangedToast | ColumnValue::Binary(_) => {
                            return Err(ApplyError::ToastInInsert {
                                table: target.display.clone(),
                                column: column.name.clone(),
                            })
                        }
                    });
                }
            }
            let expected = chunk.len() as u64;
            self.send_set(target, Shape::SetInsert, arrays, expected)
                .await?;
        }
        // Updates grouped by the columns they set (a `u` is left out), in order of first use.
        let mut shapes: Vec<(Box<[usize]>, Vec<TupleData>)> = Vec::new();
        for row in updates {
            let set: Box<[usize]> = target
                .columns
                .iter()
                .enumerate()
                .filter(|(c, column)| {
                    !target.key.contains(c)
                        && !matches!(row.columns[column.blue], ColumnValue::UnchangedToast)
                })
                .map(|(c, _)| c)
                .collect();
            match shapes.iter_mut().find(|(s, _)| *s == set) {
                Some((_, rows)) => rows.push(row),
                None => shapes.push((set, vec![row])),
            }
        }
        for (set, rows) in shapes {
            for chunk in rows.chunks(MAX_SET_ROWS) {
                let mut arrays =
                    vec![TextArray(Vec::with_capacity(chunk.len())); target.key.len() + set.len()];
                for row in chunk {
                    for (array, &c) in arrays.iter_mut().zip(target.key.iter().chain(set.iter())) {
                        array.0.push(match &row.columns[target.columns[c].blue] {
                            ColumnValue::Text(b) => Some(b.clone()),
                            _ => None,
                        });
                    }
                }
                let expected = chunk.len() as u64;
                self.send_set(
                    target,
                    Shape::SetUpdate { set: set.clone() },
                    arrays,
                    expected,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Prepares (once) and sends one set statement; its answer must count `expected` rows.
    async fn send_set(
        &mut self,
        target: &Arc<TargetTable>,
        shape: Shape,
        arrays: Vec<TextArray>,
        expected: u64,
    ) -> Result<(), ApplyError> {
        let statement = self.statement(target, &shape).await?;
        self.pipeline
            .send_set(Arc::clone(target), shape, statement, arrays, expected)
            .await?;
        // Test builds: a crash with a set statement sent, its answer unread.
        crate::failpoint::hit("set-statement");
        Ok(())
    }
}

/// The key columns of `keys`, one array per key column.
fn key_arrays(target: &TargetTable, keys: &[Key]) -> Vec<TextArray> {
    (0..target.key.len())
        .map(|j| TextArray(keys.iter().map(|k| k[j].clone()).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetColumn;

    fn table() -> TargetTable {
        let column = |name: &str, blue: usize, ty: &str, eq: &str| TargetColumn {
            name: name.to_owned(),
            quoted: blueshift_decoder::ident::quote_ident(name),
            green_type: ty.to_owned(),
            blue,
            equality: eq.to_owned(),
        };
        TargetTable {
            id: 1,
            display: "s.x; DROP TABLE y".into(),
            schema: "s".into(),
            name: "x; DROP TABLE y".into(),
            quoted: "\"s\".\"x; DROP TABLE y\"".into(),
            partitioned: false,
            columns: vec![
                column("id", 0, "integer", "pg_catalog.="),
                column("We\"ird", 1, "public.citext", "public.="),
                column("v", 2, "character varying(3)", "pg_catalog.="),
            ],
            blue_width: 3,
            key: vec![0, 1],
            identity_full: false,
            green_key: vec![0, 1],
            full_indexes: Vec::new(),
            foldable: Ok(vec![
                "integer".into(),
                "public.citext".into(),
                "character varying".into(),
            ]),
            insertable: Ok(vec![
                "integer".into(),
                "public.citext".into(),
                "character varying".into(),
            ]),
        }
    }

    #[test]
    fn set_statements_quote_qualify_and_cast_without_modifiers() {
        let t = table();
        assert_eq!(
            sql(&t, &Shape::SetDelete).unwrap(),
            "DELETE FROM ONLY \"s\".\"x; DROP TABLE y\" AS t USING ROWS FROM \
             (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) \
             AS u(k0, k1) WHERE t.\"id\" OPERATOR(pg_catalog.=) u.k0::integer AND t.\"We\"\"ird\" \
             OPERATOR(public.=) u.k1::public.citext"
        );
        assert_eq!(
            sql(&t, &Shape::SetInsert).unwrap(),
            "INSERT INTO \"s\".\"x; DROP TABLE y\" (\"id\", \"We\"\"ird\", \"v\") OVERRIDING \
             SYSTEM VALUE SELECT u.c0::integer, u.c1::public.citext, u.c2::character varying \
             FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
             pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[])) \
             AS u(c0, c1, c2)"
        );
        assert_eq!(
            sql(
                &t,
                &Shape::SetUpdate {
                    set: vec![2].into()
                }
            )
            .unwrap(),
            "UPDATE ONLY \"s\".\"x; DROP TABLE y\" AS t SET \"v\" = u.s0::character varying \
             FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
             pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[])) \
             AS u(k0, k1, s0) WHERE t.\"id\" OPERATOR(pg_catalog.=) u.k0::integer AND \
             t.\"We\"\"ird\" OPERATOR(public.=) u.k1::public.citext"
        );
        assert_eq!(
            sql(&t, &Shape::SetUpdate { set: vec![].into() }).unwrap(),
            "UPDATE ONLY \"s\".\"x; DROP TABLE y\" AS t SET \"id\" = t.\"id\" FROM ROWS FROM \
             (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) \
             AS u(k0, k1) WHERE t.\"id\" OPERATOR(pg_catalog.=) u.k0::integer AND \
             t.\"We\"\"ird\" OPERATOR(public.=) u.k1::public.citext"
        );
        assert!(sql(&t, &Shape::SetAbsent)
            .unwrap()
            .starts_with("SELECT 1 FROM ONLY \"s\".\"x; DROP TABLE y\" AS t, ROWS FROM ("));
        assert_eq!(sql(&t, &Shape::Insert { rows: 1 }), None);
        let mut not = table();
        not.foldable = Err("test");
        assert_eq!(sql(&not, &Shape::SetDelete), None);
        // Not foldable (no key, say) but insertable: the set INSERT only.
        assert_eq!(sql(&not, &Shape::SetInsert), sql(&t, &Shape::SetInsert));
        not.insertable = Err("test");
        assert_eq!(sql(&not, &Shape::SetInsert), None);
    }

    #[test]
    fn text_arrays_go_in_the_binary_format() {
        let array = TextArray(vec![Some(Bytes::from_static(b"a\"b")), None]);
        let mut out = BytesMut::new();
        assert!(matches!(
            array.to_sql_checked(&Type::TEXT_ARRAY, &mut out),
            Ok(IsNull::No)
        ));
        let mut expected = Vec::new();
        for n in [1i32, 1, 25, 2, 1, 3] {
            expected.extend_from_slice(&n.to_be_bytes());
        }
        expected.extend_from_slice(b"a\"b");
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(&out[..], &expected[..]);
        assert!(!<TextArray as ToSql>::accepts(&Type::TEXT));
    }
}
