//! Blue's tables compared with green's, column by column, with a verdict on whether logical
//! replication can carry each difference, and the column mapping (blue column → green column,
//! with or without a cast) that applying and backfilling use.
//!
//! Columns are matched by name, or as the declared [`Mapping`] says: a rename (blue's `from`
//! lands in green's `to`; see [`blueshift_applier::rename`] for the exact rule, which the applier
//! follows too), an exclusion (the blue column is left out on purpose), an accepted lossy cast.
//! Nothing is dropped unless declared: green equals blue, or sync does not start.
//! Verdicts, per column and per table (the worst of its columns and notes):
//!
//! | difference                                   | verdict  |
//! |----------------------------------------------|----------|
//! | same column, same type                       | fine     |
//! | column only on blue, excluded: not copied    | fine     |
//! | column only on blue, not excluded: its values would be lost | blocked |
//! | blue key column excluded                     | blocked  |
//! | column only on green, nullable / default / identity / generated: takes its default | fine |
//! | column only on green, `NOT NULL` without default | blocked |
//! | type change green converts losslessly, or refusing (loudly) what does not fit | cast |
//! | narrower type modifier, or a conversion that loses silently (see [`Fidelity`]) | blocked |
//! | … the same, declared an accepted lossy cast  | warning  |
//! | type change without an assignment cast       | blocked  |
//! | blue key column dropped on green             | blocked  |
//! | green column generated, blue sends values    | blocked  |
//! | `NOT NULL` on green, nullable on blue        | warning  |
//! | table missing on green                       | blocked  |
//! | blue table without primary key / replica identity | warning |
//! | renamed column, green has the new name       | as the types say (fine, cast, …) |
//! | rename naming a column blue does not publish | blocked |
//! | exclusion or lossy cast naming a column blue does not publish (yet) | warning |
//! | rename whose `to` green does not have        | blocked  |
//! | blue column whose green namesake receives a renamed column, not excluded | blocked |
//! | rename, exclusion or cast naming a table blue does not publish | error ([`SchemaError::RenameTable`]) |
//!
//! The same comparison checks each Relation message of the running stream
//! ([`relation`](super::relation)), so a column blue gains mid-sync, or a type it narrows, stops
//! sync at that change just as it would at preflight.
//!
//! A cast is green's work: streamed values go as text parameters and a text `COPY` as text, so
//! green's input function of the column's type reads blue's text form, as PostgreSQL's own
//! apply workers do. The cast found in `pg_cast` says the types are related; the input function
//! decides each value (an `integer` column takes `'42'` from a `numeric`, not `'1.5'`). Binary
//! transfer needs the same built-in type on both sides ([`TablePlan::binary_compatible`]).

use std::fmt;

use serde_json::{json, Value};
use tokio_postgres::Client;

use super::cast::{fidelity, CastKind, Casts, Conversion, Fidelity};
use super::catalog::{self, Column, ReplicaIdentity, Table};
use super::{quote_ident, ColumnRef, Mapping, QualifiedName, SchemaError};

/// Types below this OID are built in: the same type, with the same binary format, on every
/// server.
const FIRST_USER_OID: u32 = 16_384;

/// Whether replication can carry a difference. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Nothing to do.
    Fine,
    /// Carried with a cast on green; values that do not fit fail.
    Cast,
    /// Carried, but something may fail or be slow: read the note.
    Warning,
    /// Cannot be carried: fix it before starting sync.
    Blocked,
}

impl Verdict {
    /// `fine`, `cast`, `warning`, `blocked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Fine => "fine",
            Verdict::Cast => "cast",
            Verdict::Warning => "warning",
            Verdict::Blocked => "blocked",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One blue column and the green column it lands in, or a column on one side only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Blue's name of a blue column; green's name of a column only on green.
    pub name: String,
    /// Blue's column, if blue publishes it.
    pub blue: Option<Column>,
    /// Green's column it lands in (of the same name, or of the name a rename declares).
    pub green: Option<Column>,
    /// The green name a rename declares for the blue column, whether or not green has it.
    pub renamed_to: Option<String>,
    /// The blue column is excluded by the mapping: not copied.
    pub excluded: bool,
    /// The verdict.
    pub verdict: Verdict,
    /// The cast green applies, if any.
    pub cast: Option<CastKind>,
    /// What happens, and for anything not fine, the fix.
    pub note: String,
}

impl ColumnPlan {
    /// The name of green's column, when there is one.
    pub fn green_name(&self) -> Option<&str> {
        self.green.as_ref().map(|g| g.name.as_str())
    }

    /// The column quoted, as `"name" → "full_name"` when renamed.
    pub fn label(&self) -> String {
        match &self.renamed_to {
            Some(to) => format!("{} → {}", quote_ident(&self.name), quote_ident(to)),
            None => quote_ident(&self.name),
        }
    }

    /// Blue's and green's column have the same built-in type and modifier, so a value's binary
    /// form means the same on both sides. False unless the column is on both.
    pub fn same_builtin_type(&self) -> bool {
        match (&self.blue, &self.green) {
            (Some(b), Some(g)) => {
                b.type_oid == g.type_oid && b.typmod == g.typmod && b.type_oid < FIRST_USER_OID
            }
            _ => false,
        }
    }

    /// Blue's values land in green: on both sides and not blocked.
    fn is_mapped(&self) -> bool {
        self.blue.is_some() && self.green.is_some() && self.verdict != Verdict::Blocked
    }
}

/// A table-level remark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// How serious.
    pub verdict: Verdict,
    /// What, and the fix.
    pub message: String,
}

/// Where one blue column's values go on green.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// The blue column.
    pub blue: String,
    /// The green column: the same name, or the one a rename declares.
    pub green: String,
    /// Green's column type (`format_type`), for an explicit cast.
    pub green_type: String,
    /// The cast green applies, `None` for the same type.
    pub cast: Option<CastKind>,
}

/// One published blue table compared with green's table of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// The table.
    pub table: QualifiedName,
    /// Whether green has it.
    pub on_green: bool,
    /// Blue's replica identity.
    pub replica_identity: ReplicaIdentity,
    /// Every blue column (with the green column it lands in), in blue's order, then green's
    /// columns no blue column lands in.
    pub columns: Vec<ColumnPlan>,
    /// Table-level remarks.
    pub notes: Vec<Note>,
    /// The worst verdict of the columns and notes.
    pub verdict: Verdict,
}

impl TablePlan {
    /// The blue columns that land in a green column (renames applied), in blue's order, with
    /// the cast if any. Blocked columns are left out; so are blue columns green does not have
    /// (not copied) and green columns no blue column fills (they take their defaults).
    pub fn column_mappings(&self) -> Vec<ColumnMapping> {
        self.columns
            .iter()
            .filter(|c| c.is_mapped())
            .filter_map(|c| {
                let green = c.green.as_ref()?;
                Some(ColumnMapping {
                    blue: c.name.clone(),
                    green: green.name.clone(),
                    green_type: green.type_name.clone(),
                    cast: c.cast,
                })
            })
            .collect()
    }

    /// Whether blue's values of every mapped column can go in the binary format: green has the
    /// table and each column of [`column_mappings`](Self::column_mappings) has the same built-in
    /// type (and modifier) on both sides ([`ColumnPlan::same_builtin_type`]).
    pub fn binary_compatible(&self) -> bool {
        self.on_green
            && self
                .columns
                .iter()
                .filter(|c| c.is_mapped())
                .all(ColumnPlan::same_builtin_type)
    }

    /// The blue column named `name` (or, for a column only on green, green's column).
    pub fn column(&self, name: &str) -> Option<&ColumnPlan> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Every published table compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaPlan {
    /// The publication read, if one was given.
    pub publication: Option<String>,
    /// The tables, by name.
    pub tables: Vec<TablePlan>,
}

impl SchemaPlan {
    /// The worst verdict of all tables (fine when there are none).
    pub fn verdict(&self) -> Verdict {
        self.tables
            .iter()
            .map(|t| t.verdict)
            .max()
            .unwrap_or(Verdict::Fine)
    }

    /// The table `schema.name`.
    pub fn table(&self, schema: &str, name: &str) -> Option<&TablePlan> {
        self.tables
            .iter()
            .find(|t| t.table.schema == schema && t.table.name == name)
    }

    /// The plan as JSON, for `blueshift plan --json`.
    pub fn to_json(&self) -> Value {
        let tables: Vec<Value> = self
            .tables
            .iter()
            .map(|t| {
                let columns: Vec<Value> = t
                    .columns
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "green_name": c.green_name(),
                            "renamed_to": c.renamed_to,
                            "excluded": c.excluded,
                            "blue_type": c.blue.as_ref().map(|b| &b.type_name),
                            "green_type": c.green.as_ref().map(|g| &g.type_name),
                            "verdict": c.verdict.as_str(),
                            "cast": c.cast.map(CastKind::as_str),
                            "note": c.note,
                        })
                    })
                    .collect();
                let mappings: Vec<Value> = t
                    .column_mappings()
                    .iter()
                    .map(|m| {
                        json!({
                            "blue": m.blue,
                            "green": m.green,
                            "green_type": m.green_type,
                            "cast": m.cast.map(CastKind::as_str),
                        })
                    })
                    .collect();
                let notes: Vec<Value> = t
                    .notes
                    .iter()
                    .map(|n| json!({"verdict": n.verdict.as_str(), "message": n.message}))
                    .collect();
                json!({
                    "schema": t.table.schema,
                    "table": t.table.name,
                    "verdict": t.verdict.as_str(),
                    "on_green": t.on_green,
                    "replica_identity": t.replica_identity.as_str(),
                    "notes": notes,
                    "columns": columns,
                    "mappings": mappings,
                    "binary_compatible": t.binary_compatible(),
                })
            })
            .collect();
        json!({
            "publication": self.publication,
            "verdict": self.verdict().as_str(),
            "tables": tables,
        })
    }
}

/// Compares every table `publication` publishes on blue (every user table without one) with
/// green's table of the same name, blue's columns mapped by `mapping`. A mapping naming a table
/// that is not compared is an error.
pub async fn plan(
    blue: &Client,
    green: &Client,
    publication: Option<&str>,
    mapping: &Mapping,
) -> Result<SchemaPlan, SchemaError> {
    let published = catalog::published_tables(blue, publication).await?;
    for (schema, table) in mapping.tables() {
        if !published
            .iter()
            .any(|p| p.name.schema == schema && p.name.name == table)
        {
            return Err(SchemaError::RenameTable {
                table: QualifiedName::new(schema, table),
                publication: publication.map(str::to_owned),
            });
        }
    }
    let names: Vec<QualifiedName> = published.iter().map(|p| p.name.clone()).collect();
    let blue_tables = catalog::read_tables(blue, &names).await?;
    let green_tables = catalog::read_tables(green, &names).await?;
    let mut casts = Casts::new(green);
    let mut tables = Vec::with_capacity(published.len());
    for p in &published {
        // A table dropped on blue since the publication was read: nothing to compare.
        let Some(blue_table) = blue_tables.iter().find(|t| t.name == p.name) else {
            continue;
        };
        let blue_columns: Vec<&Column> = blue_table
            .columns
            .iter()
            .filter(|c| p.columns.as_ref().is_none_or(|list| list.contains(&c.name)))
            .collect();
        let green_table = green_tables.iter().find(|t| t.name == p.name);
        tables.push(compare(blue_table, &blue_columns, green_table, mapping, &mut casts).await?);
    }
    Ok(SchemaPlan {
        publication: publication.map(str::to_owned),
        tables,
    })
}

/// `blue`'s columns `blue_columns` compared with `green`'s table, as `mapping` maps them.
pub(crate) async fn compare(
    blue: &Table,
    blue_columns: &[&Column],
    green: Option<&Table>,
    mapping: &Mapping,
    casts: &mut Casts<'_>,
) -> Result<TablePlan, SchemaError> {
    let (schema, table) = (blue.name.schema.as_str(), blue.name.name.as_str());
    let renames = mapping.renames();
    let mut notes = identity_notes(blue);
    let publishes = |column: &str| blue_columns.iter().any(|b| b.name == column);
    for (from, to) in renames.of_table(schema, table) {
        if !publishes(from) {
            notes.push(Note {
                verdict: Verdict::Blocked,
                message: format!(
                    "the rename of column {} to {} names no column blue publishes in table {} — \
                     fix the rename (blue's exact column name) or remove it",
                    quote_ident(from),
                    quote_ident(to),
                    blue.name
                ),
            });
        }
    }
    for (what, columns) in [
        (
            "exclusion",
            mapping.excluded_of_table(schema, table).collect::<Vec<_>>(),
        ),
        (
            "lossy cast",
            mapping.lossy_of_table(schema, table).collect(),
        ),
    ] {
        // Harmless: it takes effect when blue adds the column (declared ahead of a migration),
        // and a misspelt one excludes nothing — the column it meant still stops sync if green
        // cannot take it.
        for column in columns.into_iter().filter(|c| !publishes(c)) {
            notes.push(Note {
                verdict: Verdict::Warning,
                message: format!(
                    "the {what} of column {} names no column blue publishes in table {}: it \
                     takes effect if blue adds the column — check the name (blue's exact \
                     column name)",
                    quote_ident(column),
                    blue.name
                ),
            });
        }
    }
    let Some(green) = green else {
        notes.push(Note {
            verdict: Verdict::Blocked,
            message: format!(
                "table {} does not exist on green — create it with a migration before starting sync",
                blue.name
            ),
        });
        return Ok(finish(blue, false, Vec::new(), notes));
    };
    let mut columns: Vec<ColumnPlan> = Vec::new();
    for b in blue_columns {
        let renamed_to = renames.renamed_to(schema, table, &b.name);
        let mut plan = if mapping.is_excluded(schema, table, &b.name) {
            excluded(b, blue)
        } else {
            match renames.green_column(schema, table, &b.name) {
                Some(target) => match green.column(target) {
                    Some(g) => {
                        let accepted = mapping.accepts_loss(schema, table, &b.name);
                        both(b, g, accepted, blue, casts).await?
                    }
                    None if renamed_to.is_some() => rename_missing(b, target),
                    None => only_on_blue(b, blue),
                },
                None => displaced(b, renames.blue_column(schema, table, &b.name), blue),
            }
        };
        plan.renamed_to = renamed_to.map(str::to_owned);
        columns.push(plan);
    }
    for g in &green.columns {
        if !columns
            .iter()
            .any(|c| c.green_name() == Some(g.name.as_str()))
        {
            columns.push(only_on_green(g));
        }
    }
    Ok(finish(blue, true, columns, notes))
}

fn finish(blue: &Table, on_green: bool, columns: Vec<ColumnPlan>, notes: Vec<Note>) -> TablePlan {
    let verdict = columns
        .iter()
        .map(|c| c.verdict)
        .chain(notes.iter().map(|n| n.verdict))
        .max()
        .unwrap_or(Verdict::Fine);
    TablePlan {
        table: blue.name.clone(),
        on_green,
        replica_identity: blue.replica_identity,
        columns,
        notes,
        verdict,
    }
}

fn identity_notes(blue: &Table) -> Vec<Note> {
    let message = match blue.replica_identity {
        ReplicaIdentity::Nothing => format!(
            "table {} has REPLICA IDENTITY NOTHING on blue; UPDATE and DELETE cannot be \
             replicated, and blue itself refuses UPDATE and DELETE on it once it is in a \
             publication that publishes them — add a primary key or set REPLICA IDENTITY FULL",
            blue.name
        ),
        ReplicaIdentity::Default if !blue.has_primary_key => format!(
            "table {} has no primary key on blue; UPDATE and DELETE cannot be replicated, and \
             blue itself refuses UPDATE and DELETE on it once it is in a publication that \
             publishes them — add a primary key or set REPLICA IDENTITY FULL",
            blue.name
        ),
        ReplicaIdentity::Full => {
            return vec![Note {
                verdict: Verdict::Fine,
                message: format!(
                    "table {} has REPLICA IDENTITY FULL on blue: updates and deletes are matched \
                     on every column green has",
                    blue.name
                ),
            }]
        }
        _ => return Vec::new(),
    };
    vec![Note {
        verdict: Verdict::Warning,
        message,
    }]
}

async fn both(
    b: &Column,
    g: &Column,
    accepted: bool,
    table: &Table,
    casts: &mut Casts<'_>,
) -> Result<ColumnPlan, SchemaError> {
    let column = quote_ident(&g.name);
    let (mut verdict, cast, mut note) = if g.generated {
        (
            Verdict::Blocked,
            None,
            format!(
                "green computes {column} (GENERATED ALWAYS … STORED), so blue's values cannot be \
                 written — drop the expression on green or leave the column out of the publication"
            ),
        )
    } else {
        let conversion = casts.conversion(b, g, g.type_oid).await?;
        match &conversion {
            Conversion::Same => (Verdict::Fine, None, "same type".to_owned()),
            Conversion::Cast(kind) => {
                let how = format!(
                    "{} → {} by {} cast on green",
                    b.type_name,
                    g.type_name,
                    kind.as_str()
                );
                match fidelity(b, g, &conversion) {
                    Fidelity::Lossless => (Verdict::Cast, Some(*kind), how),
                    Fidelity::FailsLoudly(what) => (
                        Verdict::Cast,
                        Some(*kind),
                        format!("{how}; {what}, naming the column"),
                    ),
                    Fidelity::Narrowing(loss) | Fidelity::LosesSilently(loss) if accepted => (
                        Verdict::Warning,
                        Some(*kind),
                        format!("{how}; accepted lossy cast: {loss}"),
                    ),
                    Fidelity::Narrowing(loss) | Fidelity::LosesSilently(loss) => (
                        Verdict::Blocked,
                        Some(*kind),
                        format!(
                            "{loss}, so green would not equal blue — give {column} blue's type on \
                             green (ALTER TABLE {} ALTER COLUMN {column} TYPE {}), or accept the \
                             loss: --lossy-cast {} (or [[cast]] with lossy = true)",
                            table.name,
                            b.type_name,
                            flag_form(&table.name, &b.name)
                        ),
                    ),
                }
            }
            Conversion::Impossible(why) => (
                Verdict::Blocked,
                None,
                format!(
                    "{why} — give {column} on green a type blue's {} converts to, or create an \
                     assignment cast (CREATE CAST … AS ASSIGNMENT)",
                    b.type_name
                ),
            ),
        }
    };
    if verdict < Verdict::Warning && g.not_null && !b.not_null && !b.in_key {
        verdict = Verdict::Warning;
        note = format!(
            "{note}; NOT NULL on green but nullable on blue: a NULL from blue fails on green — \
             fill the NULLs on blue, or add the constraint on green after cutover"
        );
    }
    Ok(ColumnPlan {
        name: b.name.clone(),
        blue: Some(b.clone()),
        green: Some(g.clone()),
        renamed_to: None,
        excluded: false,
        verdict,
        cast,
        note,
    })
}

/// `[schema.]table:column` as `--exclude` and `--lossy-cast` take it, quoted for a shell.
fn flag_form(table: &QualifiedName, column: &str) -> String {
    ColumnRef {
        schema: table.schema.clone(),
        table: table.name.clone(),
        column: column.to_owned(),
    }
    .flag()
}

/// A blue column the mapping excludes.
fn excluded(b: &Column, table: &Table) -> ColumnPlan {
    let (verdict, note) = if b.in_key && table.replica_identity != ReplicaIdentity::Full {
        (
            Verdict::Blocked,
            format!(
                "key column {} is excluded, but UPDATE and DELETE find their row by it — remove \
                 the exclusion",
                quote_ident(&b.name)
            ),
        )
    } else {
        (Verdict::Fine, "excluded: not copied".to_owned())
    };
    ColumnPlan {
        name: b.name.clone(),
        blue: Some(b.clone()),
        green: None,
        renamed_to: None,
        excluded: true,
        verdict,
        cast: None,
        note,
    }
}

/// A blue column renamed to `to`, which green does not have.
fn rename_missing(b: &Column, to: &str) -> ColumnPlan {
    ColumnPlan {
        name: b.name.clone(),
        blue: Some(b.clone()),
        green: None,
        renamed_to: Some(to.to_owned()),
        excluded: false,
        verdict: Verdict::Blocked,
        cast: None,
        note: format!(
            "renamed to {}, which green does not have — fix the rename (green's exact column \
             name) or add the column on green",
            quote_ident(to)
        ),
    }
}

/// A blue column whose green namesake receives another, renamed, blue column (`by`).
fn displaced(b: &Column, by: Option<&str>, table: &Table) -> ColumnPlan {
    let mut plan = only_on_blue(b, table);
    if !b.in_key {
        plan.note = format!(
            "green's column {} receives blue's {} (renamed), so blue's own {} has nowhere to go \
             and its values would be lost — declare a rename for it too, or exclude it: --exclude \
             {} (or [[exclude]])",
            quote_ident(&b.name),
            by.map_or_else(|| "column".to_owned(), quote_ident),
            quote_ident(&b.name),
            flag_form(&table.name, &b.name)
        );
    }
    plan
}

fn only_on_blue(b: &Column, table: &Table) -> ColumnPlan {
    let column = quote_ident(&b.name);
    let note = if b.in_key {
        format!(
            "key column {column} is missing on green; UPDATE and DELETE find their row by it \
             — keep it on green (or declare its rename) until after cutover"
        )
    } else {
        format!(
            "green has no column {column}, so blue's values of it would be lost — add it on green \
             (ALTER TABLE {} ADD COLUMN {column} {}), or leave it out on purpose: --exclude {} \
             (or [[exclude]])",
            table.name,
            b.type_name,
            flag_form(&table.name, &b.name)
        )
    };
    ColumnPlan {
        name: b.name.clone(),
        blue: Some(b.clone()),
        green: None,
        renamed_to: None,
        excluded: false,
        verdict: Verdict::Blocked,
        cast: None,
        note,
    }
}

fn only_on_green(g: &Column) -> ColumnPlan {
    let column = quote_ident(&g.name);
    let (verdict, note) = if g.generated {
        (Verdict::Fine, "added on green, computed there".to_owned())
    } else if g.identity {
        (
            Verdict::Fine,
            "added on green, filled by its identity".to_owned(),
        )
    } else if let Some(default) = &g.default {
        (
            Verdict::Fine,
            format!("added on green, takes its default {default}"),
        )
    } else if !g.not_null {
        (Verdict::Fine, "added on green, takes NULL".to_owned())
    } else {
        (
            Verdict::Blocked,
            format!(
                "added on green as NOT NULL without a default: rows from blue have no value for \
                 {column} — add a default (ALTER TABLE … ALTER COLUMN {column} SET DEFAULT …) or \
                 make it nullable (ALTER TABLE … ALTER COLUMN {column} DROP NOT NULL)"
            ),
        )
    };
    ColumnPlan {
        name: g.name.clone(),
        blue: None,
        green: Some(g.clone()),
        renamed_to: None,
        excluded: false,
        verdict,
        cast: None,
        note,
    }
}
