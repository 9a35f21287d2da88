//! Blue's schema compared with green's: what a running logical replication stream can carry.
//!
//! ```text
//!   blue (source)                      green (target)
//!   pg_publication_tables ─┐       ┌── pg_class / pg_attribute
//!   pg_class / pg_attribute├─ catalog ─┤   pg_cast / pg_type (casts)
//!                          └──▶ plan ◀──┘
//!                 per table: columns, verdicts, column mappings
//! ```
//!
//! - [`catalog`]: reads published tables, their columns, replica identity and keys.
//! - [`cast`]: whether and how green converts blue's values of one type into another, and
//!   whether every value survives ([`Fidelity`]: lossless, fails loudly, narrower, lossy).
//! - [`plan`]: the comparison, its verdicts (fine, cast, warning, blocked), and per table the
//!   column mapping (blue column → green column, with or without a cast, the declared mapping
//!   applied) that applying and backfilling reuse.
//! - [`relation`]: the same comparison for one Relation message of the running stream, so that a
//!   change blue's schema makes mid-sync is checked against green before it is applied.
//! - [`Mapping`] and [`Renames`]: what configuration declares — renames, exclusions, accepted
//!   lossy casts (defined with the applier, which follows them too; re-exported here).

use std::fmt;

pub mod cast;
pub mod catalog;
pub mod plan;
pub mod relation;

pub use blueshift_applier::mapping::{ColumnRef, Mapping, MappingError};
pub use blueshift_applier::rename::{parse_table, Rename, RenameError, Renames};
pub use cast::{CastKind, Fidelity};
pub use catalog::{Column, PublishedTable, ReplicaIdentity, Table};
pub use plan::{plan, ColumnMapping, ColumnPlan, Note, SchemaPlan, TablePlan, Verdict};

use crate::client::SqlError;

/// Why a schema comparison failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The publication named does not exist on blue.
    #[error("publication {} does not exist on blue — create it (CREATE PUBLICATION …) or pass the name of an existing one", quote_ident(publication))]
    NoPublication {
        /// The name given.
        publication: String,
    },
    /// A rename, exclusion or lossy cast names a table that is not compared.
    #[error(
        "a rename, exclusion or lossy cast names table {table}, which blue does not publish{} — \
         fix its table (schema.table; a bare name means public) or remove it",
        publication.as_deref().map(|p| format!(" in publication {}", quote_ident(p))).unwrap_or_default()
    )]
    RenameTable {
        /// The table named.
        table: QualifiedName,
        /// The publication compared, if one.
        publication: Option<String>,
    },
    /// A catalog query failed.
    #[error("cannot {what}")]
    Query {
        /// What blueshift was reading.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
}

impl SchemaError {
    pub(crate) fn query(what: &str, e: tokio_postgres::Error) -> SchemaError {
        SchemaError::Query {
            what: what.to_owned(),
            source: e.into(),
        }
    }
}

/// A schema-qualified name. Displayed quoted: `"public"."my table"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    /// The schema.
    pub schema: String,
    /// The table (or type) name.
    pub name: String,
}

impl QualifiedName {
    /// A name from its two parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> QualifiedName {
        QualifiedName {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.name)
        )
    }
}

pub use blueshift_decoder::ident::quote_ident;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_always_quoted() {
        assert_eq!(
            QualifiedName::new("public", "users").to_string(),
            r#""public"."users""#
        );
        assert_eq!(
            QualifiedName::new("my schema", r#"it's "q" ü"#).to_string(),
            r#""my schema"."it's ""q"" ü""#
        );
    }
}
