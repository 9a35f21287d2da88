//! The target table: how one relation description from blue maps onto green's table.
//!
//! Columns are matched by name. Green's catalog (`pg_attribute`, without dropped and generated
//! columns) is read once per relation description; a Relation message that changes a table's
//! columns is a new description and so gets a new mapping (and new statements). A table or
//! column that blue sends and green lacks is an error naming it and the fix; schema mapping
//! (renames, casts, columns only on one side) is a later stage's work.

use std::collections::HashMap;
use std::sync::Arc;

use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::relation::RelationInfo;
use tokio_postgres::Client;

use crate::client::SqlError;
use crate::error::ApplyError;

/// Green's columns of a table, by name.
const CATALOG_QUERY: &str = "\
SELECT c.relkind::text, a.attname::text, a.attgenerated::text <> '', \
       (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::int8 \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_attribute a \
       ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
ORDER BY a.attnum";

/// Built-in types without an `=` operator, or whose `=` is not identity (the geometric types
/// compare areas or point counts), and their arrays: a REPLICA IDENTITY FULL match compares
/// these as text instead (`json`, `xml`, `point`, `path`, `box`, `polygon`, `circle`).
const COMPARE_AS_TEXT: &[i64] = &[
    114, 199, 142, 143, 600, 1017, 602, 1019, 603, 1020, 604, 1027, 718, 719,
];

/// One column of the target table, in blue's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetColumn {
    /// The column name, for messages.
    pub(crate) name: String,
    /// The column name, quoted for SQL.
    pub(crate) quoted: String,
    /// Whether a NULL-safe equality on it must compare the text forms (no usable `=`).
    pub(crate) compare_as_text: bool,
}

/// A relation description from blue mapped onto green's table.
#[derive(Debug)]
pub(crate) struct TargetTable {
    /// A number unique within one applier: statements are cached under it.
    pub(crate) id: u64,
    /// `schema.name`, unquoted: for messages.
    pub(crate) display: String,
    /// `"schema"."name"`: for SQL.
    pub(crate) quoted: String,
    /// Green's table is partitioned: a row is identified by `(tableoid, ctid)`, not `ctid`.
    pub(crate) partitioned: bool,
    /// Blue's columns, in the order rows carry them.
    pub(crate) columns: Vec<TargetColumn>,
    /// Indexes of the replica identity key columns.
    pub(crate) key: Vec<usize>,
}

impl TargetTable {
    /// Reads green's catalog for `relation` and matches its columns by name.
    pub(crate) async fn load(
        client: &Client,
        relation: &RelationInfo,
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
        let mut green: HashMap<String, (bool, i64)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            if let Some(column) = row.get::<_, Option<String>>(1) {
                let generated: bool = row.get(2);
                let type_oid: i64 = row.get(3);
                green.insert(column, (generated, type_oid));
            }
        }
        let mut columns = Vec::with_capacity(relation.columns().len());
        for column in relation.columns() {
            match green.get(&column.name) {
                None => {
                    return Err(ApplyError::MissingColumn {
                        table: display,
                        column: column.name.clone(),
                    })
                }
                Some((true, _)) => {
                    return Err(ApplyError::GeneratedColumn {
                        table: display,
                        column: column.name.clone(),
                    })
                }
                Some((false, type_oid)) => columns.push(TargetColumn {
                    name: column.name.clone(),
                    quoted: quote_ident(&column.name),
                    compare_as_text: COMPARE_AS_TEXT.contains(type_oid),
                }),
            }
        }
        Ok(TargetTable {
            id,
            quoted: format!("{}.{}", quote_ident(name.schema()), quote_ident(&name.name)),
            display,
            partitioned,
            columns,
            key: relation.key_columns().to_vec(),
        })
    }
}

/// The target tables an applier has loaded, by relation OID; a few descriptions per OID, so a
/// table whose columns change mid-stream keeps both mappings while changes of both are in flight.
#[derive(Debug, Default)]
pub(crate) struct TargetCache {
    by_oid: HashMap<u32, Vec<Mapped>>,
    next_id: u64,
}

/// A relation description and its mapping onto green.
type Mapped = (Arc<RelationInfo>, Arc<TargetTable>);

/// Descriptions kept per relation OID.
const VERSIONS_PER_RELATION: usize = 4;

impl TargetCache {
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
        let target = Arc::new(TargetTable::load(client, relation, self.next_id).await?);
        tracing::debug!(table = %target.display, columns = target.columns.len(), "target table loaded");
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
