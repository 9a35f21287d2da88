//! The target table: how one relation description from blue maps onto green's table.
//!
//! Green's catalog (`pg_attribute`, without dropped and generated columns) is read once per
//! relation description; a Relation message that changes a table's columns is a new description
//! and so gets a new mapping (and new statements), read from green as it is then — so a column
//! the operator added on green while sync waited for it is carried. [`TargetCache::clear`]
//! forgets every mapping (after green changed under a running applier). Each blue column lands
//! in the green column of the same name, or of the name a [`rename`](crate::rename) declares,
//! and then:
//! - a blue column the [`mapping`](crate::mapping) excludes is not carried: statements leave it
//!   out. Except a column of the replica identity key (not under REPLICA IDENTITY FULL): UPDATE
//!   and DELETE find their row by it, so excluding it is an error naming it;
//! - a blue column green lacks, and that is not excluded, is an error naming it and both fixes
//!   (add it on green, or exclude it): its values would be lost. The engine checks each Relation
//!   message against green before applying it and waits for the fix; this is the backstop;
//! - a green column no blue column lands in is never in a statement: an INSERT gives it its
//!   default;
//! - a column whose type differs is converted by green: values go as text parameters, and the
//!   statement's parameter takes the type of green's column, so green's input function of that
//!   type reads blue's text, as PostgreSQL's own apply workers do;
//! - a declared rename to a column green lacks, and a blue value for a column green generates,
//!   are errors naming the column and the fix.
//!
//! A table green lacks is an error too.
//!
//! Under REPLICA IDENTITY FULL, green's indexes that can find a row by equality on plain
//! columns are read too ([`TargetTable::full_indexes`]), as PostgreSQL 16's own apply uses
//! them: without one, every UPDATE and DELETE reads the whole table.

use std::collections::HashMap;
use std::sync::Arc;

use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::pgoutput::ReplicaIdentity;
use blueshift_decoder::relation::RelationInfo;
use tokio_postgres::Client;

use crate::client::SqlError;
use crate::error::ApplyError;
use crate::mapping::{ColumnRef, Mapping};

/// Green's columns of a table, by name, each with the equality operator of its type's default
/// B-tree operator class (schema-qualified) when the type has one of its own.
const CATALOG_QUERY: &str = "\
SELECT c.relkind::text, a.attname::text, a.attgenerated::text <> '', \
       (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::int8, \
       pg_catalog.format_type(a.atttypid, a.atttypmod), \
       (SELECT pg_catalog.quote_ident(opn.nspname) || '.' || o.oprname::text \
          FROM pg_catalog.pg_opclass oc \
          JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod \
          JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 3 \
               AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype \
          JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr \
          JOIN pg_catalog.pg_namespace opn ON opn.oid = o.oprnamespace \
         WHERE am.amname = 'btree' AND oc.opcdefault \
           AND oc.opcintype = (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END) \
         LIMIT 1), \
       pg_catalog.format_type(a.atttypid, NULL), \
       EXISTS (SELECT 1 FROM pg_catalog.pg_cast k \
                WHERE k.castsource OPERATOR(pg_catalog.=) 'pg_catalog.text'::pg_catalog.regtype \
                  AND k.casttarget = (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END) \
                  AND k.castmethod = 'f') \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_attribute a \
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
ORDER BY a.attnum";

/// Green's primary key columns (else the replica identity index's), in index order.
const GREEN_KEY_QUERY: &str = "\
SELECT a.attname::text FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
JOIN LATERAL (SELECT x.indkey, x.indnkeyatts FROM pg_catalog.pg_index x \
               WHERE x.indrelid = c.oid AND x.indisunique AND (x.indisprimary OR x.indisreplident) \
               ORDER BY x.indisprimary DESC LIMIT 1) k ON true \
CROSS JOIN LATERAL pg_catalog.unnest(k.indkey::pg_catalog.int2[]) WITH ORDINALITY AS u(attnum, pos) \
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum \
WHERE n.nspname = $1 AND c.relname = $2 AND u.pos <= k.indnkeyatts \
ORDER BY u.pos";

/// What decides whether a table's changes may be folded (see [`crate::fold`]): whether a
/// trigger fires under `session_replication_role = replica` (`ENABLE ALWAYS` or `ENABLE
/// REPLICA`: folding would hide the intermediate rows it sees), and per unique index or
/// exclusion constraint whether it is plain (no expression, no predicate, not an exclusion)
/// with its key columns' names.
const FOLD_QUERY: &str = "\
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g \
                WHERE g.tgrelid = c.oid AND NOT g.tgisinternal AND g.tgenabled IN ('A', 'R')), \
       x.indexrelid IS NOT NULL, \
       (x.indexprs IS NULL AND x.indpred IS NULL AND NOT x.indisexclusion), \
       ARRAY(SELECT a.attname::pg_catalog.text \
               FROM pg_catalog.unnest(x.indkey::pg_catalog.int2[]) WITH ORDINALITY AS u(attnum, pos) \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum \
              WHERE u.pos <= x.indnkeyatts) \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_index x ON x.indrelid = c.oid AND (x.indisunique OR x.indisexclusion) \
WHERE n.nspname = $1 AND c.relname = $2";

/// Green's indexes that can find a row by equality on plain columns (B-tree or hash, valid, not
/// partial, no expression), best first (primary, unique, most columns), one row per key column
/// in index order, each with the equality operator of its operator class, schema-qualified.
const FULL_INDEX_QUERY: &str = "\
SELECT x.indexrelid::pg_catalog.int8, a.attname::pg_catalog.text, \
       (SELECT pg_catalog.quote_ident(opn.nspname) OPERATOR(pg_catalog.||) '.' \
               OPERATOR(pg_catalog.||) o.oprname::pg_catalog.text \
          FROM pg_catalog.pg_opclass oc \
          JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily \
               AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype \
               AND ao.amopmethod = am.oid \
               AND ao.amopstrategy = (CASE WHEN am.amname = 'hash' THEN 1 ELSE 3 END) \
          JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr \
          JOIN pg_catalog.pg_namespace opn ON opn.oid = o.oprnamespace \
         WHERE oc.oid = u.opclass LIMIT 1) \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_catalog.pg_index x ON x.indrelid = c.oid \
JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid \
JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(x.indkey::pg_catalog.int2[]), \
                              pg_catalog.unnest(x.indclass::pg_catalog.oid[])) \
     WITH ORDINALITY AS u(attnum, opclass, pos) \
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum \
WHERE n.nspname = $1 AND c.relname = $2 AND x.indisvalid AND x.indisready AND x.indislive \
  AND x.indexprs IS NULL AND x.indpred IS NULL AND am.amname IN ('btree', 'hash') \
  AND u.pos <= x.indnkeyatts \
ORDER BY x.indisprimary DESC, x.indisunique DESC, x.indnkeyatts DESC, x.indexrelid, u.pos";

/// An index of green that a REPLICA IDENTITY FULL change can find its row through: equality on
/// each of its columns, all carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FullIndex {
    /// Per key column, in index order: its index in [`TargetTable::columns`] and the equality
    /// operator of the index's operator class, schema-qualified for `OPERATOR(…)`.
    pub(crate) columns: Vec<(usize, String)>,
}

/// One column of the target table: a blue column that lands in a green column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetColumn {
    /// Green's column name, for messages.
    pub(crate) name: String,
    /// Green's column name, quoted for SQL.
    pub(crate) quoted: String,
    /// Green's column type, with its modifier (`character varying(10)`), as green's
    /// `format_type` spells it (quoted and schema-qualified where needed): for messages, and
    /// the cast of a REPLICA IDENTITY FULL match's parameters.
    pub(crate) green_type: String,
    /// Where the value is in blue's rows.
    pub(crate) blue: usize,
    /// The equality operator that finds a row by this column, schema-qualified for
    /// `OPERATOR(…)`: the type's own default B-tree equality (`public.=` for `citext`), else
    /// `pg_catalog.=`. Never resolved through `search_path`.
    pub(crate) equality: String,
}

/// The equality operator for [`TargetColumn::equality`] when the type has none of its own.
pub(crate) const CATALOG_EQUALITY: &str = "pg_catalog.=";

/// `schema.op` from green's catalog, if it is a quoted-or-plain schema name and an operator
/// made only of operator characters; else `pg_catalog.=`.
fn equality_operator(found: Option<String>) -> String {
    let valid = |q: &str| {
        let Some((schema, op)) = q.rsplit_once('.') else {
            return false;
        };
        !schema.is_empty()
            && !op.is_empty()
            && op.chars().all(|c| "+-*/<>=~!@#%^&|`?".contains(c))
            && (schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || (schema.starts_with('"') && schema.ends_with('"') && schema.len() > 1))
    };
    match found {
        Some(q) if valid(&q) => q,
        _ => CATALOG_EQUALITY.to_owned(),
    }
}

/// A relation description from blue mapped onto green's table.
#[derive(Debug)]
pub(crate) struct TargetTable {
    /// A number unique within one applier: statements are cached under it.
    pub(crate) id: u64,
    /// `schema.name`, unquoted: for messages.
    pub(crate) display: String,
    /// The schema, unquoted.
    pub(crate) schema: String,
    /// The table name, unquoted.
    pub(crate) name: String,
    /// `"schema"."name"`: for SQL.
    pub(crate) quoted: String,
    /// Green's table is partitioned: a row is identified by `(tableoid, ctid)`, not `ctid`.
    pub(crate) partitioned: bool,
    /// The blue columns carried to green, in blue's order. Statements refer to columns by
    /// their index here.
    pub(crate) columns: Vec<TargetColumn>,
    /// Values per row from blue: the relation description's column count.
    pub(crate) blue_width: usize,
    /// Indexes (in `columns`) of the replica identity key columns (every column under REPLICA
    /// IDENTITY FULL).
    pub(crate) key: Vec<usize>,
    /// Blue's table has REPLICA IDENTITY FULL: `key` is the whole row, not a key to print.
    pub(crate) identity_full: bool,
    /// Indexes (in `columns`) of green's primary key (else its replica identity index): the
    /// conflict target of an idempotent INSERT. Empty when green has none or a column of it is
    /// not carried.
    pub(crate) green_key: Vec<usize>,
    /// Under REPLICA IDENTITY FULL: green's indexes a change can find its row through, best
    /// first; only those whose every column is carried and has an equality operator.
    pub(crate) full_indexes: Vec<FullIndex>,
    /// Whether a group's changes to this table may be folded and applied as set statements
    /// (see [`crate::fold`]): per column of [`columns`](Self::columns), green's type without
    /// its modifier, which text array elements are cast to; or why not.
    pub(crate) foldable: Result<Vec<String>, &'static str>,
    /// Whether a group's changes to this table, when they are all inserts, may go as one set
    /// INSERT even though the table is not foldable (no key, REPLICA IDENTITY FULL, a unique
    /// index beyond the key: inserts need no key, and inserting a set of rows leaves
    /// what inserting them one by one does, and fails where that fails): the same types as
    /// [`foldable`](Self::foldable), or why not (a trigger that fires during apply would see
    /// the rows in another order).
    pub(crate) insertable: Result<Vec<String>, &'static str>,
}

/// Green's indexes of `schema.name` usable under REPLICA IDENTITY FULL (see
/// [`FULL_INDEX_QUERY`]), with their columns as indexes in `columns`.
async fn full_indexes(
    client: &Client,
    display: &str,
    schema: &str,
    name: &str,
    columns: &[TargetColumn],
) -> Result<Vec<FullIndex>, ApplyError> {
    let rows = client
        .query(FULL_INDEX_QUERY, &[&schema, &name])
        .await
        .map_err(|e| ApplyError::Catalog {
            table: display.to_owned(),
            source: SqlError::from(e),
        })?;
    // Per index, in the query's order: its columns, or None once one is unusable.
    let mut found: Vec<(i64, Option<FullIndex>)> = Vec::new();
    for row in &rows {
        let index: i64 = row.get(0);
        let column: String = row.get(1);
        let operator: Option<String> = row.get(2);
        if found.last().is_none_or(|(last, _)| *last != index) {
            found.push((index, Some(FullIndex::default())));
        }
        let carried = columns.iter().position(|c| c.name == column);
        // Only an operator the catalog spelled as `schema.op` (else the index is not used).
        let operator = operator.filter(|o| equality_operator(Some(o.clone())) == *o);
        if let Some((_, usable)) = found.last_mut() {
            match (carried, operator, usable.as_mut()) {
                (Some(c), Some(operator), Some(entry)) => entry.columns.push((c, operator)),
                _ => *usable = None,
            }
        }
    }
    Ok(found
        .into_iter()
        .filter_map(|(_, index)| index.filter(|i| !i.columns.is_empty()))
        .collect())
}

/// Why green's `schema.name` must take a group's changes in blue's order, if it must.
#[derive(Debug, Default, Clone, Copy)]
struct FoldBlockers {
    /// A trigger fires during apply: it would see the rows in another order (this blocks set
    /// INSERTs too).
    trigger: Option<&'static str>,
    /// A unique index or exclusion constraint that is not implied by the key, which a folded
    /// group could violate where blue's order does not.
    unique: Option<&'static str>,
}

/// Reads [`FoldBlockers`] of `schema.name` from green's catalog; `key` names the key columns.
async fn fold_blockers(
    client: &Client,
    display: &str,
    schema: &str,
    name: &str,
    key: &[&str],
) -> Result<FoldBlockers, ApplyError> {
    let rows = client
        .query(FOLD_QUERY, &[&schema, &name])
        .await
        .map_err(|e| ApplyError::Catalog {
            table: display.to_owned(),
            source: SqlError::from(e),
        })?;
    let mut blockers = FoldBlockers::default();
    for row in &rows {
        if row.get::<_, bool>(0) {
            blockers.trigger =
                Some("a trigger fires during apply (ENABLE ALWAYS or ENABLE REPLICA)");
        }
        if !row.get::<_, bool>(1) {
            continue;
        }
        let plain: bool = row.get(2);
        let columns: Vec<String> = row.get(3);
        if !plain || !key.iter().all(|k| columns.iter().any(|c| c == k)) {
            blockers.unique = Some("a unique index or exclusion constraint beyond the key");
        }
    }
    Ok(blockers)
}

impl TargetTable {
    /// Reads green's catalog for `relation` and maps its columns as `mapping` declares.
    pub(crate) async fn load(
        client: &Client,
        relation: &RelationInfo,
        mapping: &Mapping,
        id: u64,
    ) -> Result<TargetTable, ApplyError> {
        let name = relation.name();
        let display = name.to_string();
        let rows = client
            .query(CATALOG_QUERY, &[&name.schema(), &name.name])
            .await
            .map_err(|e| ApplyError::Catalog {
                table: display.clone(),
                source: SqlError::from(e),
            })?;
        let Some(first) = rows.first() else {
            return Err(ApplyError::MissingTable { table: display });
        };
        let partitioned = first.get::<_, String>(0) == "p";
        let mut green: HashMap<String, (bool, String, String)> = HashMap::with_capacity(rows.len());
        // Per green column: its type without modifier, and whether a cast from text to it runs
        // a function rather than the type's input function.
        let mut set_types: HashMap<String, (String, bool)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            if let Some(column) = row.get::<_, Option<String>>(1) {
                let generated: bool = row.get(2);
                let type_name: String = row.get(4);
                let equality = equality_operator(row.get(5));
                set_types.insert(column.clone(), (row.get(6), row.get(7)));
                green.insert(column, (generated, type_name, equality));
            }
        }
        let full = relation.replica_identity() == ReplicaIdentity::Full;
        let (schema, table) = (name.schema(), name.name.as_str());
        let mut columns = Vec::with_capacity(relation.columns().len());
        let mut key = Vec::new();
        for (blue, column) in relation.columns().iter().enumerate() {
            let in_key = relation.key_columns().contains(&blue);
            let target = mapping.green_column(schema, table, &column.name);
            match target.and_then(|t| green.get(t).map(|g| (t, g))) {
                Some((target, (false, type_name, equality))) => {
                    if in_key {
                        key.push(columns.len());
                    }
                    columns.push(TargetColumn {
                        name: target.to_owned(),
                        quoted: quote_ident(target),
                        green_type: type_name.clone(),
                        blue,
                        equality: equality.clone(),
                    });
                }
                Some((target, (true, _, _))) => {
                    return Err(ApplyError::GeneratedColumn {
                        table: display,
                        column: target.to_owned(),
                    })
                }
                None => {
                    let excluded = mapping.is_excluded(schema, table, &column.name);
                    if let Some(to) = mapping.renames().renamed_to(schema, table, &column.name) {
                        return Err(ApplyError::MissingRenameTarget {
                            table: display,
                            from: column.name.clone(),
                            to: to.to_owned(),
                        });
                    }
                    // Rows are found by a key column: it must be carried.
                    if in_key && !full {
                        return Err(if excluded {
                            ApplyError::ExcludedKeyColumn {
                                table: display,
                                column: column.name.clone(),
                            }
                        } else {
                            ApplyError::MissingKeyColumn {
                                table: display,
                                column: column.name.clone(),
                            }
                        });
                    }
                    if !excluded {
                        let exclude = ColumnRef {
                            schema: schema.to_owned(),
                            table: table.to_owned(),
                            column: column.name.clone(),
                        }
                        .flag();
                        return Err(ApplyError::UnmappedColumn {
                            table: display,
                            column: column.name.clone(),
                            // Displaced: green's column of that name receives a renamed one.
                            displaced: target.is_none(),
                            exclude,
                        });
                    }
                }
            }
        }
        let key_rows = client
            .query(GREEN_KEY_QUERY, &[&name.schema(), &name.name])
            .await
            .map_err(|e| ApplyError::Catalog {
                table: display.clone(),
                source: SqlError::from(e),
            })?;
        let green_key: Option<Vec<usize>> = key_rows
            .iter()
            .map(|r| {
                let column: String = r.get(0);
                columns.iter().position(|c| c.name == column)
            })
            .collect();
        let full_indexes = if full {
            full_indexes(client, &display, name.schema(), &name.name, &columns).await?
        } else {
            Vec::new()
        };
        let green_key = green_key.unwrap_or_default();
        let key_names: Vec<&str> = key.iter().map(|&k| columns[k].name.as_str()).collect();
        let blockers =
            fold_blockers(client, &display, name.schema(), &name.name, &key_names).await?;
        // Per carried column, the type its text array elements are cast to.
        let set_columns: Result<Vec<String>, &'static str> = if columns.is_empty() {
            Err("no column carried")
        } else {
            columns
                .iter()
                .map(|c| match set_types.get(&c.name) {
                    Some((base, false)) => Ok(base.clone()),
                    _ => Err(
                        "a column's type is cast from text by a function, not its input function",
                    ),
                })
                .collect()
        };
        // A partitioned table's triggers are on its partitions, which the catalog query does
        // not look at: its inserts go in blue's order.
        let insertable = match blockers.trigger {
            Some(reason) => Err(reason),
            None if partitioned => Err("partitioned on green"),
            None => set_columns.clone(),
        };
        let foldable = if full {
            Err("REPLICA IDENTITY FULL")
        } else if key.is_empty() {
            Err("no replica identity key")
        } else if partitioned {
            Err("partitioned on green")
        } else if columns.is_empty() {
            Err("no column carried")
        } else {
            let mut sorted_key = key.clone();
            sorted_key.sort_unstable();
            let mut sorted_green = green_key.clone();
            sorted_green.sort_unstable();
            if sorted_key != sorted_green {
                Err("green's primary key is not blue's replica identity key")
            } else {
                match blockers.trigger.or(blockers.unique) {
                    Some(reason) => Err(reason),
                    None => set_columns,
                }
            }
        };
        Ok(TargetTable {
            id,
            foldable,
            insertable,
            full_indexes,
            green_key,
            identity_full: full,
            schema: name.schema().to_owned(),
            name: name.name.clone(),
            quoted: format!("{}.{}", quote_ident(name.schema()), quote_ident(&name.name)),
            display,
            partitioned,
            columns,
            blue_width: relation.columns().len(),
            key,
        })
    }
}

/// The target tables an applier has loaded, by relation OID; a few descriptions per OID, so a
/// table whose columns change mid-stream keeps both mappings while changes of both are in flight.
#[derive(Debug)]
pub(crate) struct TargetCache {
    by_oid: HashMap<u32, Vec<Mapped>>,
    next_id: u64,
    mapping: Arc<Mapping>,
}

/// A relation description and its mapping onto green.
type Mapped = (Arc<RelationInfo>, Arc<TargetTable>);

/// Descriptions kept per relation OID.
const VERSIONS_PER_RELATION: usize = 4;

impl TargetCache {
    /// An empty cache mapping columns as `mapping` declares.
    pub(crate) fn new(mapping: Arc<Mapping>) -> Self {
        TargetCache {
            by_oid: HashMap::new(),
            next_id: 0,
            mapping,
        }
    }

    /// The mapping of `relation`, when loaded. Matches the same `Arc` at once, else an equal
    /// description (a spilled transaction reads back new `Arc`s).
    pub(crate) fn get(&self, relation: &Arc<RelationInfo>) -> Option<Arc<TargetTable>> {
        let versions = self.by_oid.get(&relation.oid().0)?;
        versions
            .iter()
            .rev()
            .find(|(r, _)| Arc::ptr_eq(r, relation) || **r == **relation)
            .map(|(_, t)| Arc::clone(t))
    }

    /// The mapping of `relation`, loading it from green's catalog when new.
    pub(crate) async fn resolve(
        &mut self,
        client: &Client,
        relation: &Arc<RelationInfo>,
    ) -> Result<Arc<TargetTable>, ApplyError> {
        if let Some(target) = self.get(relation) {
            return Ok(target);
        }
        self.next_id += 1;
        let target =
            Arc::new(TargetTable::load(client, relation, &self.mapping, self.next_id).await?);
        tracing::debug!(
            table = %target.display,
            columns = target.columns.len(),
            excluded = target.blue_width - target.columns.len(),
            "target table loaded"
        );
        let versions = self.by_oid.entry(relation.oid().0).or_default();
        if versions.len() >= VERSIONS_PER_RELATION {
            versions.remove(0);
        }
        versions.push((Arc::clone(relation), Arc::clone(&target)));
        Ok(target)
    }

    /// Forgets every mapping (after DDL on green, or on reconnect).
    pub(crate) fn clear(&mut self) {
        self.by_oid.clear();
    }
}
