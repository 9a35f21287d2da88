//! The declared mapping of blue's columns onto green's: [`Renames`], exclusions and accepted
//! lossy casts. Everything not declared is matched by name and must be carried losslessly: a
//! blue column green lacks, a type green cannot take without loss, a narrower type modifier stop
//! sync (see `blueshift_engine::schema`), unless the mapping says otherwise.
//!
//! - An **exclusion** (`--exclude '[schema.]table:column'`, `[[exclude]] table column`) leaves a
//!   blue column out on purpose: it is never copied nor applied, even when green has a column of
//!   that name (which then takes its default). A replica identity key column cannot be excluded:
//!   UPDATE and DELETE find their row by it.
//! - A **lossy cast** (`--lossy-cast '[schema.]table:column'`, `[[cast]] table column
//!   lossy = true`) accepts that green's column takes blue's values with a loss: a narrower type
//!   modifier (`numeric(12,4)` → `numeric(12,2)` rounds, `varchar(20)` → `varchar(10)` refuses
//!   long values) or a conversion that rounds or drops information (`float8` → `float4`,
//!   `timestamptz` → `timestamp`, `json` → `jsonb`).
//!
//! Columns are named by blue's name. The syntax is that of [`rename`](crate::rename): a bare
//! table is in `public`, names are exact, and one containing `.`, `:`, `=` or `"` is
//! double-quoted as in SQL (`'"My.Schema"."Users":"a:b"'`).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use blueshift_decoder::ident::quote_ident;

use crate::rename::{read_name, RenameError, Renames};

/// One blue column of one table, as an exclusion or a lossy cast names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ColumnRef {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// Blue's column.
    pub column: String,
}

/// A mapping declaration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A column reference does not follow the syntax.
    #[error(
        "invalid column {text:?}: {reason} — write [schema.]table:column, double-quoting a name \
         that contains . : = or \" (e.g. 'public.users:legacy')"
    )]
    Syntax {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rename is not usable.
    #[error(transparent)]
    Rename(#[from] RenameError),
    /// A column both renamed and excluded.
    #[error(
        "column {} of table {} is both renamed (to {}) and excluded — a blue column is either \
         carried under another name or left out: remove one of the two",
        quote_ident(column),
        table_display(schema, table),
        quote_ident(to)
    )]
    RenamedAndExcluded {
        /// The table's schema.
        schema: String,
        /// The table.
        table: String,
        /// Blue's column.
        column: String,
        /// The green column of the rename.
        to: String,
    },
    /// A column both excluded and declared a lossy cast.
    #[error(
        "column {} of table {} is both excluded and declared a lossy cast — an excluded column \
         is not carried at all: remove the lossy cast",
        quote_ident(column),
        table_display(schema, table)
    )]
    ExcludedAndLossy {
        /// The table's schema.
        schema: String,
        /// The table.
        table: String,
        /// Blue's column.
        column: String,
    },
}

fn table_display(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

fn syntax(text: &str, reason: impl Into<String>) -> MappingError {
    MappingError::Syntax {
        text: text.to_owned(),
        reason: reason.into(),
    }
}

/// Reads `[schema.]table` at the start of `text`; returns schema, table and what follows.
fn read_table<'a>(text: &str, rest: &'a str) -> Result<(String, String, &'a str), MappingError> {
    let (first, rest) = read_name(rest).map_err(|r| syntax(text, r))?;
    match rest.strip_prefix('.') {
        Some(after) => {
            let (second, after) = read_name(after).map_err(|r| syntax(text, r))?;
            Ok((first, second, after))
        }
        None => Ok(("public".to_owned(), first, rest)),
    }
}

impl ColumnRef {
    /// Column `column` (taken as it is) of `table` (`[schema.]table`, parsed as on the command
    /// line): the settings file's form.
    pub fn new(table: &str, column: &str) -> Result<ColumnRef, MappingError> {
        let (schema, name, rest) = read_table(table, table)?;
        if !rest.is_empty() {
            return Err(syntax(
                table,
                format!(
                    "unexpected {rest:?} after schema.table (quote a name that contains a dot)"
                ),
            ));
        }
        if column.is_empty() {
            return Err(syntax(&format!("{table}:"), "the column is empty"));
        }
        Ok(ColumnRef {
            schema,
            table: name,
            column: column.to_owned(),
        })
    }
}

impl ColumnRef {
    /// `'schema.table:column'` as `--exclude` and `--lossy-cast` take it, quoted for a shell: a
    /// name with `.`, `:`, `=`, `"`, a space or a `'` in double quotes.
    pub fn flag(&self) -> String {
        fn part(name: &str) -> String {
            if name.is_empty() || name.contains(['.', ':', '=', '"', ' ', '\'']) {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                name.to_owned()
            }
        }
        let text = format!(
            "{}.{}:{}",
            part(&self.schema),
            part(&self.table),
            part(&self.column)
        );
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// `[schema.]table:column`.
impl FromStr for ColumnRef {
    type Err = MappingError;

    fn from_str(text: &str) -> Result<ColumnRef, MappingError> {
        let (schema, table, rest) = read_table(text, text)?;
        let Some(after) = rest.strip_prefix(':') else {
            return Err(syntax(text, "no ':' between the table and the column"));
        };
        let (column, after) = read_name(after).map_err(|r| syntax(text, r))?;
        if !after.is_empty() {
            return Err(syntax(text, format!("unexpected {after:?} at the end")));
        }
        Ok(ColumnRef {
            schema,
            table,
            column,
        })
    }
}

/// `"schema"."table"."column"`.
impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            table_display(&self.schema, &self.table),
            quote_ident(&self.column)
        )
    }
}

/// The whole declared mapping, checked: renames (see [`Renames`]), excluded blue columns, and
/// blue columns whose lossy conversion on green is accepted. Empty by default: every column
/// matched by name and carried losslessly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    renames: Renames,
    excluded: BTreeSet<ColumnRef>,
    lossy: BTreeSet<ColumnRef>,
}

impl From<Renames> for Mapping {
    fn from(renames: Renames) -> Mapping {
        Mapping {
            renames,
            ..Mapping::default()
        }
    }
}

impl Mapping {
    /// Checks and indexes the declarations: a column may not be both renamed and excluded, nor
    /// both excluded and a lossy cast. The same exclusion or cast twice counts once.
    pub fn new(
        renames: Renames,
        excluded: impl IntoIterator<Item = ColumnRef>,
        lossy: impl IntoIterator<Item = ColumnRef>,
    ) -> Result<Mapping, MappingError> {
        let excluded: BTreeSet<ColumnRef> = excluded.into_iter().collect();
        let lossy: BTreeSet<ColumnRef> = lossy.into_iter().collect();
        for c in &excluded {
            if let Some(to) = renames.renamed_to(&c.schema, &c.table, &c.column) {
                return Err(MappingError::RenamedAndExcluded {
                    schema: c.schema.clone(),
                    table: c.table.clone(),
                    column: c.column.clone(),
                    to: to.to_owned(),
                });
            }
            if lossy.contains(c) {
                return Err(MappingError::ExcludedAndLossy {
                    schema: c.schema.clone(),
                    table: c.table.clone(),
                    column: c.column.clone(),
                });
            }
        }
        Ok(Mapping {
            renames,
            excluded,
            lossy,
        })
    }

    /// The renames.
    pub fn renames(&self) -> &Renames {
        &self.renames
    }

    /// Nothing declared.
    pub fn is_empty(&self) -> bool {
        self.renames.is_empty() && self.excluded.is_empty() && self.lossy.is_empty()
    }

    /// Every exclusion, by table then column.
    pub fn excluded(&self) -> impl Iterator<Item = &ColumnRef> + '_ {
        self.excluded.iter()
    }

    /// Every accepted lossy cast, by table then column.
    pub fn lossy(&self) -> impl Iterator<Item = &ColumnRef> + '_ {
        self.lossy.iter()
    }

    /// Every table the mapping names (renames, exclusions, casts), as `(schema, table)`.
    pub fn tables(&self) -> BTreeSet<(&str, &str)> {
        self.renames
            .tables()
            .chain(
                self.excluded
                    .iter()
                    .chain(&self.lossy)
                    .map(|c| (c.schema.as_str(), c.table.as_str())),
            )
            .collect()
    }

    fn contains(set: &BTreeSet<ColumnRef>, schema: &str, table: &str, column: &str) -> bool {
        // The sets are small; a lookup without allocating the key.
        set.iter()
            .any(|c| c.column == column && c.table == table && c.schema == schema)
    }

    /// Whether blue's column `column` of `schema.table` is excluded.
    pub fn is_excluded(&self, schema: &str, table: &str, column: &str) -> bool {
        Self::contains(&self.excluded, schema, table, column)
    }

    /// Whether a lossy conversion of blue's column `column` of `schema.table` is accepted.
    pub fn accepts_loss(&self, schema: &str, table: &str, column: &str) -> bool {
        Self::contains(&self.lossy, schema, table, column)
    }

    /// The excluded columns of one table.
    pub fn excluded_of_table<'a>(
        &'a self,
        schema: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.excluded
            .iter()
            .filter(move |c| c.schema == schema && c.table == table)
            .map(|c| c.column.as_str())
    }

    /// The columns of one table whose lossy cast is accepted.
    pub fn lossy_of_table<'a>(
        &'a self,
        schema: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.lossy
            .iter()
            .filter(move |c| c.schema == schema && c.table == table)
            .map(|c| c.column.as_str())
    }

    /// The green column blue's column `blue` of `schema.table` lands in: none when excluded,
    /// else as [`Renames::green_column`] says.
    pub fn green_column<'a>(&'a self, schema: &str, table: &str, blue: &'a str) -> Option<&'a str> {
        if self.is_excluded(schema, table, blue) {
            return None;
        }
        self.renames.green_column(schema, table, blue)
    }

    /// The blue column that fills green's column `green` of `schema.table`: the inverse of
    /// [`green_column`](Self::green_column) (none when that blue column is excluded).
    pub fn blue_column<'a>(&'a self, schema: &str, table: &str, green: &'a str) -> Option<&'a str> {
        self.renames
            .blue_column(schema, table, green)
            .filter(|blue| !self.is_excluded(schema, table, blue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rename::Rename;

    fn c(text: &str) -> ColumnRef {
        text.parse().unwrap()
    }

    fn col(schema: &str, table: &str, column: &str) -> ColumnRef {
        ColumnRef {
            schema: schema.into(),
            table: table.into(),
            column: column.into(),
        }
    }

    #[test]
    fn column_syntax() {
        assert_eq!(c("public.users:legacy"), col("public", "users", "legacy"));
        assert_eq!(c("users:legacy"), col("public", "users", "legacy"));
        assert_eq!(
            c(r#""my.schema"."Us""ers":"a:b""#),
            col("my.schema", "Us\"ers", "a:b")
        );
        assert_eq!(c("App.T:Old Name"), col("App", "T", "Old Name"));
        for (text, reason) in [
            ("", "a name is missing"),
            ("users", "no ':'"),
            ("users:", "a name is missing"),
            ("a.b.c:x", "no ':'"),
            ("t:a=b", "unexpected \"=b\""),
            ("t:a:b", "unexpected \":b\""),
            ("\"t:a", "not closed"),
        ] {
            let err = text.parse::<ColumnRef>().unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(err, MappingError::Syntax { .. }) && shown.contains(reason),
                "{text:?}: {shown}"
            );
            assert!(shown.contains("[schema.]table:column"), "{shown}");
        }
        assert_eq!(
            ColumnRef::new("\"Odd.Schema\".t", "a.b").unwrap(),
            col("Odd.Schema", "t", "a.b")
        );
        assert!(ColumnRef::new("a.b.c", "x").is_err());
        assert!(ColumnRef::new("t", "").is_err());
        assert_eq!(
            col("public", "t", "we\"ird").to_string(),
            "\"public\".\"t\".\"we\"\"ird\""
        );
        // The flag form parses back to the same column.
        for c in [
            col("public", "users", "legacy"),
            col("My.Schema", "T", "Old Col"),
            col("s", "t", "we\"ird:=x"),
        ] {
            let flag = c.flag();
            assert!(flag.starts_with('\'') && flag.ends_with('\''), "{flag}");
            assert_eq!(
                flag[1..flag.len() - 1].parse::<ColumnRef>().unwrap(),
                c,
                "{flag}"
            );
        }
        assert_eq!(
            col("public", "t", "Old Col").flag(),
            "'public.t:\"Old Col\"'"
        );
    }

    #[test]
    fn exclusions_and_renames_agree() {
        let renames = Renames::new(["users:name=full_name".parse::<Rename>().unwrap()]).unwrap();
        // Blue's own full_name is displaced by the rename; excluding it says so.
        let mapping = Mapping::new(
            renames.clone(),
            [c("users:legacy"), c("users:full_name"), c("users:legacy")],
            [c("users:price")],
        )
        .unwrap();
        assert_eq!(mapping.excluded().count(), 2);
        assert!(mapping.is_excluded("public", "users", "legacy"));
        assert!(!mapping.is_excluded("public", "users", "name"));
        assert!(!mapping.is_excluded("other", "users", "legacy"));
        assert!(mapping.accepts_loss("public", "users", "price"));
        assert_eq!(
            mapping.green_column("public", "users", "name"),
            Some("full_name")
        );
        assert_eq!(mapping.green_column("public", "users", "legacy"), None);
        assert_eq!(mapping.green_column("public", "users", "id"), Some("id"));
        assert_eq!(
            mapping.blue_column("public", "users", "full_name"),
            Some("name")
        );
        // Green's `legacy` gets nothing from blue's excluded `legacy`.
        assert_eq!(mapping.blue_column("public", "users", "legacy"), None);
        assert_eq!(
            mapping
                .excluded_of_table("public", "users")
                .collect::<Vec<_>>(),
            ["full_name", "legacy"]
        );
        assert_eq!(
            mapping
                .lossy_of_table("public", "users")
                .collect::<Vec<_>>(),
            ["price"]
        );
        assert_eq!(
            mapping.tables().into_iter().collect::<Vec<_>>(),
            [("public", "users")]
        );

        let err = Mapping::new(renames.clone(), [c("users:name")], []).unwrap_err();
        assert!(
            matches!(err, MappingError::RenamedAndExcluded { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("both renamed (to \"full_name\")"));
        let err = Mapping::new(renames, [c("users:x")], [c("users:x")]).unwrap_err();
        assert!(
            matches!(err, MappingError::ExcludedAndLossy { .. }),
            "{err}"
        );
        assert!(Mapping::default().is_empty());
    }
}
