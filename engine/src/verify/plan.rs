//! What is compared for each published table: the columns on both sides through sync's mapping,
//! the key, and the SQL of a row's canonical form on each side.
//!
//! - Blue's columns (the publication's column list when it has one) in order, less those the
//!   mapping excludes and generated ones (green computes its own); each goes to green's column of
//!   the same name or its declared rename, which must exist. Green-only columns are ignored.
//! - A blue column whose green type differs is cast to green's type on blue, so both sides print
//!   green's text form (a lossy cast the mapping accepts rounds the same way apply did).
//! - The key is blue's replica identity key (primary key or identity index); a table without
//!   one (`REPLICA IDENTITY FULL` or `NOTHING`) is compared as a multiset.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{VerifyConfig, VerifyError};
use crate::schema::catalog::{self, ReplicaIdentity, Table};
use crate::schema::{quote_ident, QualifiedName};

/// How a compared column enters the row hash (by green's type, which both sides' expressions
/// have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hashed {
    /// Its value through its type's own 64-bit hash function: a type whose equality is the
    /// identity of its text form and whose hash takes every bit of the value (`smallint`,
    /// `integer`, `boolean`, `date`, `uuid`, `bytea`). Not `bigint` nor the timestamps: their
    /// hash folds 64 bits into 32, so two values would hash alike by construction.
    Value,
    /// A string type (`text`, `varchar`, `char(n)`), hashed as its bytes: collation `"C"`, so
    /// a nondeterministic collation cannot make two spellings hash alike. `char(n)` values are
    /// always padded to n, so ignoring trailing blanks (as its hash does) loses nothing.
    Bytes,
    /// Every other type: its canonical text (all such columns in one `ROW(…)::text`).
    Text,
}

impl Hashed {
    /// The way a column of type `type_name` (`format_type`) is hashed.
    pub(crate) fn of(type_name: &str) -> Hashed {
        if type_name.ends_with("[]") {
            return Hashed::Text;
        }
        match type_name {
            "smallint" | "integer" | "boolean" | "date" | "uuid" | "bytea" => Hashed::Value,
            "text" | "character varying" => Hashed::Bytes,
            t if t.starts_with("character varying(") || t.starts_with("character(") => {
                Hashed::Bytes
            }
            _ => Hashed::Text,
        }
    }
}

/// One side's SQL of a table.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    /// The compared columns' expressions, in order.
    pub(crate) exprs: Vec<String>,
    /// How each compared column is hashed (the same on both sides).
    pub(crate) hashed: Vec<Hashed>,
    /// The key columns, quoted.
    pub(crate) key: Vec<String>,
    /// The key columns' types (`format_type`), for typed parameters.
    pub(crate) key_types: Vec<String>,
}

impl Side {
    /// `ROW(…)::text`: the canonical form of a row.
    pub(crate) fn row_text(&self) -> String {
        format!("ROW({})::pg_catalog.text", self.exprs.join(", "))
    }

    /// A 64-bit hash of the row. A table whose columns are all [`Hashed::Text`] hashes its
    /// canonical form: `hashtextextended`, PostgreSQL's `hash_any_extended` over the text's
    /// bytes (the database collations blueshift supports are deterministic, so it hashes the
    /// bytes). Otherwise the columns' own hashes are combined by `hash_record_extended`
    /// ([`Hashed`]: the [`Hashed::Text`] columns enter as one `ROW(…)::text`), which skips
    /// printing every value as text — measured about a third less server CPU per row on
    /// pgbench's tables. `hash_record_extended` is linear in the columns' hashes
    /// (h = Σ 31^k·h_k), so values swapped between two rows would leave a chunk's sum
    /// unchanged: its result is hashed once more (`hashtextextended` of its decimal text),
    /// which makes the row hash a non-linear function of the row. Every function here gives
    /// the same bits on 14–18 (the hash functions are those of hash partitioning, which
    /// PostgreSQL keeps stable; checked by `verify_hashing` 15 → 18).
    pub(crate) fn row_hash(&self) -> String {
        if self.hashed.iter().all(|h| *h == Hashed::Text) {
            return format!("pg_catalog.hashtextextended({}, 0)", self.row_text());
        }
        let mut elements = Vec::with_capacity(self.exprs.len());
        let mut text = Vec::new();
        for (expr, hashed) in self.exprs.iter().zip(&self.hashed) {
            match hashed {
                Hashed::Value => elements.push(expr.clone()),
                Hashed::Bytes => elements.push(format!("({expr}) COLLATE \"C\"")),
                Hashed::Text => text.push(expr.as_str()),
            }
        }
        if !text.is_empty() {
            elements.push(format!(
                "ROW({})::pg_catalog.text COLLATE \"C\"",
                text.join(", ")
            ));
        }
        format!(
            "pg_catalog.hashtextextended(pg_catalog.hash_record_extended(ROW({}), 0)\
             ::pg_catalog.text, 0)",
            elements.join(", ")
        )
    }

    /// `ROW(k1, …)`.
    pub(crate) fn key_row(&self) -> String {
        format!("ROW({})", self.key.join(", "))
    }

    /// The key's columns as text, for reading keys out.
    pub(crate) fn key_text(&self) -> String {
        self.key
            .iter()
            .map(|k| format!("{k}::pg_catalog.text"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `ROW(CAST($n::text AS t1), …)` for the key, its parameters from `$first`.
    pub(crate) fn key_params(&self, first: usize) -> String {
        let params: Vec<String> = self
            .key_types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("CAST(${}::pg_catalog.text AS {t})", first + i))
            .collect();
        format!("ROW({})", params.join(", "))
    }

    /// The predicate of the key range (`lo`, `hi`], either end open when `None`; its parameters
    /// start at `$1`, `lo`'s first.
    pub(crate) fn range(&self, lo: bool, hi: bool) -> String {
        let mut parts = Vec::new();
        let mut next = 1;
        if lo {
            parts.push(format!("{} > {}", self.key_row(), self.key_params(next)));
            next += self.key.len();
        }
        if hi {
            parts.push(format!("{} <= {}", self.key_row(), self.key_params(next)));
        }
        if parts.is_empty() {
            "true".to_owned()
        } else {
            parts.join(" AND ")
        }
    }
}

/// One table's plan.
#[derive(Debug, Clone)]
pub(crate) struct TablePlan {
    /// The table (the same name on both sides).
    pub(crate) table: QualifiedName,
    pub(crate) blue: Side,
    pub(crate) green: Side,
    /// Green's column names of the compared columns, in order.
    pub(crate) columns: Vec<String>,
}

impl TablePlan {
    /// Whether the table has no key.
    pub(crate) fn keyless(&self) -> bool {
        self.blue.key.is_empty()
    }
}

/// Whether `published` matches one of the `--tables` names (`name` or `schema.name`).
fn selected(published: &QualifiedName, wanted: &[String]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| match w.split_once('.') {
            Some((schema, name)) => published.schema == schema && published.name == name,
            None => published.name == *w,
        })
}

/// The plans of the published tables (those of `--tables`).
pub(crate) async fn tables(
    blue: &Client,
    green: &Client,
    config: &VerifyConfig,
) -> Result<Vec<TablePlan>, VerifyError> {
    let published = catalog::published_tables(blue, Some(&config.publication)).await?;
    for wanted in &config.tables {
        let found = published
            .iter()
            .any(|p| selected(&p.name, std::slice::from_ref(wanted)));
        if !found {
            return Err(VerifyError::NotPublished {
                name: wanted.clone(),
                publication: config.publication.clone(),
            });
        }
    }
    let published: Vec<_> = published
        .into_iter()
        .filter(|p| selected(&p.name, &config.tables))
        .collect();
    let names: Vec<QualifiedName> = published.iter().map(|p| p.name.clone()).collect();
    let blue_tables = catalog::read_tables(blue, &names).await?;
    let green_tables = catalog::read_tables(green, &names).await?;
    let mut plans = Vec::with_capacity(published.len());
    for p in &published {
        let Some(b) = blue_tables.iter().find(|t| t.name == p.name) else {
            continue;
        };
        let Some(g) = green_tables.iter().find(|t| t.name == p.name) else {
            return Err(VerifyError::GreenTableMissing {
                table: p.name.clone(),
            });
        };
        plans.push(plan_table(b, g, p.columns.as_deref(), config)?);
    }
    Ok(plans)
}

fn plan_table(
    blue: &Table,
    green: &Table,
    column_list: Option<&[String]>,
    config: &VerifyConfig,
) -> Result<TablePlan, VerifyError> {
    let name = &blue.name;
    let listed: Option<BTreeSet<&str>> =
        column_list.map(|cols| cols.iter().map(String::as_str).collect());
    let mut plan = TablePlan {
        table: name.clone(),
        blue: Side {
            exprs: Vec::new(),
            hashed: Vec::new(),
            key: Vec::new(),
            key_types: Vec::new(),
        },
        green: Side {
            exprs: Vec::new(),
            hashed: Vec::new(),
            key: Vec::new(),
            key_types: Vec::new(),
        },
        columns: Vec::new(),
    };
    let keyed = !matches!(
        blue.replica_identity,
        ReplicaIdentity::Full | ReplicaIdentity::Nothing
    ) && blue.columns.iter().any(|c| c.in_key);
    for b in &blue.columns {
        if b.generated
            || listed
                .as_ref()
                .is_some_and(|l| !l.contains(b.name.as_str()))
            || config
                .mapping
                .is_excluded(&name.schema, &name.name, &b.name)
        {
            continue;
        }
        let green_name = config
            .mapping
            .green_column(&name.schema, &name.name, &b.name)
            .unwrap_or(&b.name);
        let Some(g) = green.column(green_name) else {
            return Err(VerifyError::GreenColumnMissing {
                table: name.clone(),
                column: b.name.clone(),
                green: green_name.to_owned(),
            });
        };
        if g.generated {
            continue;
        }
        let blue_ident = quote_ident(&b.name);
        let green_ident = quote_ident(&g.name);
        if b.type_name == g.type_name {
            plan.blue.exprs.push(blue_ident.clone());
        } else {
            plan.blue
                .exprs
                .push(format!("CAST({blue_ident} AS {})", g.type_name));
        }
        plan.green.exprs.push(green_ident.clone());
        let hashed = Hashed::of(&g.type_name);
        plan.blue.hashed.push(hashed);
        plan.green.hashed.push(hashed);
        plan.columns.push(g.name.clone());
        if keyed && b.in_key {
            plan.blue.key.push(blue_ident);
            plan.blue.key_types.push(b.type_name.clone());
            plan.green.key.push(green_ident);
            plan.green.key_types.push(g.type_name.clone());
        }
    }
    // A key that is not compared whole (a key column excluded or not published) cannot order
    // the rows: compare the table as a multiset.
    let key_columns = blue.columns.iter().filter(|c| c.in_key).count();
    if plan.blue.key.len() != key_columns {
        for side in [&mut plan.blue, &mut plan.green] {
            side.key.clear();
            side.key_types.clear();
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_selected_by_name_or_qualified_name() {
        let t = QualifiedName::new("s", "t");
        assert!(selected(&t, &[]));
        assert!(selected(&t, &["t".to_owned()]));
        assert!(selected(&t, &["s.t".to_owned()]));
        assert!(!selected(&t, &["public.t".to_owned()]));
    }

    #[test]
    fn columns_are_hashed_by_their_type() {
        for t in ["smallint", "integer", "boolean", "date", "uuid", "bytea"] {
            assert_eq!(Hashed::of(t), Hashed::Value, "{t}");
        }
        for t in [
            "text",
            "character varying",
            "character varying(20)",
            "character(84)",
        ] {
            assert_eq!(Hashed::of(t), Hashed::Bytes, "{t}");
        }
        for t in [
            "bigint",
            "timestamp with time zone",
            "timestamp without time zone",
            "numeric(12,2)",
            "double precision",
            "real",
            "interval",
            "jsonb",
            "bpchar",
            "integer[]",
            "text[]",
            "character varying(5)[]",
            "public.my_domain",
            "\"char\"",
        ] {
            assert_eq!(Hashed::of(t), Hashed::Text, "{t}");
        }
    }

    #[test]
    fn the_row_hash_is_the_canonical_text_or_the_columns_hashes_rehashed() {
        let side = |hashed: Vec<Hashed>| Side {
            exprs: vec!["\"a\"".into(), "\"b\"".into(), "CAST(\"c\" AS text)".into()],
            hashed,
            key: vec![],
            key_types: vec![],
        };
        assert_eq!(
            side(vec![Hashed::Text; 3]).row_hash(),
            "pg_catalog.hashtextextended(ROW(\"a\", \"b\", CAST(\"c\" AS text))::pg_catalog.text, 0)"
        );
        assert_eq!(
            side(vec![Hashed::Value, Hashed::Text, Hashed::Bytes]).row_hash(),
            "pg_catalog.hashtextextended(pg_catalog.hash_record_extended(ROW(\"a\", \
             (CAST(\"c\" AS text)) COLLATE \"C\", ROW(\"b\")::pg_catalog.text COLLATE \"C\"), 0)\
             ::pg_catalog.text, 0)"
        );
    }

    #[test]
    fn ranges_take_typed_parameters_in_order() {
        let side = Side {
            exprs: vec!["\"a\"".into()],
            hashed: vec![Hashed::Value],
            key: vec!["\"a\"".into(), "\"b\"".into()],
            key_types: vec!["integer".into(), "text".into()],
        };
        assert_eq!(side.range(false, false), "true");
        assert_eq!(
            side.range(true, true),
            "ROW(\"a\", \"b\") > ROW(CAST($1::pg_catalog.text AS integer), CAST($2::pg_catalog.text AS text)) \
             AND ROW(\"a\", \"b\") <= ROW(CAST($3::pg_catalog.text AS integer), CAST($4::pg_catalog.text AS text))"
        );
        assert_eq!(
            side.range(false, true),
            "ROW(\"a\", \"b\") <= ROW(CAST($1::pg_catalog.text AS integer), CAST($2::pg_catalog.text AS text))"
        );
    }
}
