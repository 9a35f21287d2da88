//! Reading tables from the system catalogs: which tables a publication publishes (or every user
//! table), and for each its columns (type, nullability, default, identity, generated), its
//! replica identity and key columns.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::{QualifiedName, SchemaError};

pub use blueshift_decoder::pgoutput::ReplicaIdentity;

/// One column, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// `format_type` with the type modifier: `character varying(20)`, `public.mood`.
    pub type_name: String,
    /// The type without modifier, schema-qualified and quoted so that `to_regtype` finds it on
    /// another server: `"pg_catalog"."varchar"`.
    pub type_ref: String,
    /// The type's OID on the server it was read from (meaningless on another).
    pub type_oid: u32,
    /// The type modifier (-1 when none).
    pub typmod: i32,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Its default expression, if it has one.
    pub default: Option<String>,
    /// `GENERATED … AS IDENTITY`.
    pub identity: bool,
    /// `GENERATED ALWAYS AS (…) STORED`.
    pub generated: bool,
    /// Part of the replica identity key (primary key or replica identity index).
    pub in_key: bool,
}

/// One table, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its schema-qualified name.
    pub name: QualifiedName,
    /// Its replica identity.
    pub replica_identity: ReplicaIdentity,
    /// Whether it has a primary key.
    pub has_primary_key: bool,
    /// Its columns, in order (the published ones only, for a publication with a column list).
    pub columns: Vec<Column>,
}

impl Table {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A table a publication publishes, with its column list if it has one (PostgreSQL 15+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTable {
    /// The table.
    pub name: QualifiedName,
    /// The published columns, when the publication lists them.
    pub columns: Option<Vec<String>>,
}

/// The tables `publication` publishes on this server, or without a publication every user table
/// (ordinary and partitioned, not partitions, outside the system schemas and `blueshift`).
pub async fn published_tables(
    client: &Client,
    publication: Option<&str>,
) -> Result<Vec<PublishedTable>, SchemaError> {
    let Some(publication) = publication else {
        let rows = client
            .query(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'blueshift') \
                    AND n.nspname NOT LIKE 'pg\\_%' \
                  ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(|e| SchemaError::query("list the user tables", e))?;
        return Ok(rows
            .iter()
            .map(|r| PublishedTable {
                name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                columns: None,
            })
            .collect());
    };
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| SchemaError::query("look up the publication", e))?;
    if exists.is_none() {
        return Err(SchemaError::NoPublication {
            publication: publication.to_owned(),
        });
    }
    let version = crate::client::server_version_num(client)
        .await
        .map_err(|e| SchemaError::query("read the server version", e))?;
    // `attnames` (the column list) exists from PostgreSQL 15. blueshift's own tables (schema
    // `blueshift`, on blue too in two-way sync) are never replicated, even `FOR ALL TABLES`.
    let sql = if version >= 150_000 {
        "SELECT schemaname::text, tablename::text, attnames::text[] \
           FROM pg_catalog.pg_publication_tables \
          WHERE pubname = $1 AND schemaname <> 'blueshift' ORDER BY 1, 2"
    } else {
        "SELECT schemaname::text, tablename::text, NULL::text[] \
           FROM pg_catalog.pg_publication_tables \
          WHERE pubname = $1 AND schemaname <> 'blueshift' ORDER BY 1, 2"
    };
    let rows = client
        .query(sql, &[&publication])
        .await
        .map_err(|e| SchemaError::query("list the published tables", e))?;
    Ok(rows
        .iter()
        .map(|r| PublishedTable {
            name: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            columns: r.get(2),
        })
        .collect())
}

/// Reads the tables named `names` that exist on this server, in no particular order.
pub async fn read_tables(
    client: &Client,
    names: &[QualifiedName],
) -> Result<Vec<Table>, SchemaError> {
    let schemas: Vec<&str> = names.iter().map(|n| n.schema.as_str()).collect();
    let relnames: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
    let tables = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident, \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                             WHERE i.indrelid = c.oid AND i.indisprimary) \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS want(nspname, relname) \
                 ON want.nspname = n.nspname AND want.relname = c.relname \
              WHERE c.relkind IN ('r', 'p')",
            &[&schemas, &relnames],
        )
        .await
        .map_err(|e| SchemaError::query("read the tables", e))?;
    let oids: Vec<u32> = tables.iter().map(|r| r.get(0)).collect();
    let columns = client
        .query(
            "SELECT a.attrelid, a.attname::text, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(t.typname), \
                    a.atttypmod, a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid), \
                    a.attidentity <> '', a.attgenerated <> '', \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                             WHERE i.indrelid = a.attrelid AND a.attnum = ANY (i.indkey) \
                               AND ((c.relreplident = 'd' AND i.indisprimary) \
                                 OR (c.relreplident = 'i' AND i.indisreplident))), \
                    a.atttypid \
               FROM pg_catalog.pg_attribute a \
               JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
               JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
               JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
               LEFT JOIN pg_catalog.pg_attrdef d \
                 ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
              WHERE a.attrelid = ANY ($1) AND a.attnum > 0 AND NOT a.attisdropped \
              ORDER BY a.attrelid, a.attnum",
            &[&oids],
        )
        .await
        .map_err(|e| SchemaError::query("read the columns", e))?;
    let mut by_table: HashMap<u32, Vec<Column>> = HashMap::new();
    for r in &columns {
        let generated: bool = r.get(8);
        by_table.entry(r.get(0)).or_default().push(Column {
            name: r.get(1),
            type_name: r.get(2),
            type_ref: r.get(3),
            typmod: r.get(4),
            not_null: r.get(5),
            // A generated column's expression is not a default.
            default: if generated { None } else { r.get(6) },
            identity: r.get(7),
            generated,
            in_key: r.get(9),
            type_oid: r.get(10),
        });
    }
    Ok(tables
        .iter()
        .map(|r| Table {
            name: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            replica_identity: u8::try_from(r.get::<_, i8>(3))
                .ok()
                .and_then(ReplicaIdentity::from_byte)
                .unwrap_or(ReplicaIdentity::Default),
            has_primary_key: r.get(4),
            columns: by_table.remove(&r.get::<_, u32>(0)).unwrap_or_default(),
        })
        .collect())
}
