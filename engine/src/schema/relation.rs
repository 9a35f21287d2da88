//! One Relation message of blue's running stream checked against green's table: can green take
//! the changes that follow it, losslessly?
//!
//! Blue sends a Relation message before the first change to a table in a session and again
//! whenever the table's definition changes (an `ALTER TABLE … ADD COLUMN`, a new type). Its
//! columns (name, type OID, type modifier, key flag) are turned into a blue [`Table`] — a
//! built-in type's OID means the same type on green, whose catalog names it; any other type is
//! named by the Type message blue sent before it — and compared with green's table as it is now
//! by the same rules as the preflight plan ([`plan::compare`](super::plan)): a blue column green
//! lacks and the mapping does not exclude, a type green cannot take, a narrower type modifier, a
//! conversion that loses silently, each block. The engine does not apply a transaction that uses
//! a blocked description; it waits and checks again until green is fixed
//! (`engine::sync::reader`).
//!
//! Only what the stream says is checked: a rename or exclusion naming a column blue no longer
//! has is the preflight's business, not a reason to stop a running sync.

use std::fmt;

use blueshift_decoder::relation::{QualifiedName as WireName, RelationInfo};
use blueshift_decoder::Oid;
use tokio_postgres::Client;

use super::cast::Casts;
use super::catalog::{self, Column, ReplicaIdentity, Table};
use super::plan::{self, Verdict};
use super::{quote_ident, Mapping, QualifiedName, SchemaError};

/// Types below this OID are built in: the same type on every server.
const FIRST_USER_OID: u32 = 16_384;

/// Why green cannot take a relation description from blue as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The table.
    pub table: QualifiedName,
    /// Each problem, naming the column, both types and the fix.
    pub problems: Vec<String>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

/// Compares `relation` (as blue's stream describes it; `type_name` gives the name blue's Type
/// messages gave a non-built-in type OID) with green's table of the same name, mapped by
/// `mapping`. `None` when green can take it.
pub async fn check(
    green: &Client,
    relation: &RelationInfo,
    type_name: impl Fn(Oid) -> Option<std::sync::Arc<WireName>>,
    mapping: &Mapping,
) -> Result<Option<Blocked>, SchemaError> {
    let wire = relation.name();
    let name = QualifiedName::new(wire.schema(), wire.name.clone());
    let blue = blue_table(green, relation, &type_name, &name).await?;
    let green_tables = catalog::read_tables(green, std::slice::from_ref(&name)).await?;
    let columns: Vec<&Column> = blue.columns.iter().collect();
    let mut casts = Casts::new(green);
    let plan = plan::compare(&blue, &columns, green_tables.first(), mapping, &mut casts).await?;
    let mut problems = Vec::new();
    if !plan.on_green {
        problems.push(format!(
            "table {name} does not exist on green — create it there (e.g. with `blueshift \
             migrate`), or leave it out of the publication"
        ));
    }
    for column in plan
        .columns
        .iter()
        .filter(|c| c.verdict == Verdict::Blocked)
    {
        let types = match (&column.blue, &column.green) {
            (Some(b), Some(g)) => format!(" ({} on blue, {} on green)", b.type_name, g.type_name),
            (Some(b), None) => format!(" ({} on blue)", b.type_name),
            (None, Some(g)) => format!(" ({} on green)", g.type_name),
            (None, None) => String::new(),
        };
        problems.push(format!(
            "column {}{types} of table {name}: {}",
            column.label(),
            column.note
        ));
    }
    Ok((!problems.is_empty()).then_some(Blocked {
        table: name,
        problems,
    }))
}

/// The name and a `type_ref` no server resolves, for a type OID of blue's that green cannot name.
fn unknown_type(oid: u32) -> (String, String) {
    (
        format!("a type of blue's (OID {oid})"),
        format!("\"blueshift unknown\".\"type {oid}\""),
    )
}

/// Blue's table as the Relation message describes it.
async fn blue_table(
    green: &Client,
    relation: &RelationInfo,
    type_name: &impl Fn(Oid) -> Option<std::sync::Arc<WireName>>,
    name: &QualifiedName,
) -> Result<Table, SchemaError> {
    // Built-in types: green's catalog names them (and formats their modifiers).
    let (oids, typmods): (Vec<u32>, Vec<i32>) = relation
        .columns()
        .iter()
        .filter(|c| c.type_oid.0 < FIRST_USER_OID)
        .map(|c| (c.type_oid.0, c.type_modifier))
        .unzip();
    let rows = green
        .query(
            "SELECT m.oid, m.typmod, pg_catalog.format_type(m.oid, m.typmod), \
                    pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.typname) \
               FROM unnest($1::oid[], $2::int4[]) AS m(oid, typmod) \
               JOIN pg_catalog.pg_type t ON t.oid = m.oid \
               JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace",
            &[&oids, &typmods],
        )
        .await
        .map_err(|e| SchemaError::query("name blue's column types on green", e))?;
    let full = relation.replica_identity() == ReplicaIdentity::Full;
    let columns = relation
        .columns()
        .iter()
        .map(|c| {
            let oid = c.type_oid.0;
            let (type_name, type_ref) = if oid < FIRST_USER_OID {
                rows.iter()
                    .find(|r| r.get::<_, u32>(0) == oid && r.get::<_, i32>(1) == c.type_modifier)
                    .map(|r| (r.get::<_, String>(2), r.get::<_, String>(3)))
                    .unwrap_or_else(|| unknown_type(oid))
            } else {
                match type_name(c.type_oid) {
                    Some(t) => {
                        let qualified =
                            format!("{}.{}", quote_ident(t.schema()), quote_ident(&t.name));
                        (qualified.clone(), qualified)
                    }
                    None => unknown_type(oid),
                }
            };
            Column {
                name: c.name.clone(),
                type_name,
                type_ref,
                type_oid: oid,
                typmod: c.type_modifier,
                // Not in the Relation message: assumed nullable (green's NOT NULL only warns).
                not_null: false,
                default: None,
                identity: false,
                generated: false,
                // Under REPLICA IDENTITY FULL every column is flagged; none is a key.
                in_key: c.is_key && !full,
            }
        })
        .collect();
    Ok(Table {
        name: name.clone(),
        replica_identity: relation.replica_identity(),
        // Unknown here; the preflight warned about a missing key already.
        has_primary_key: true,
        columns,
    })
}
