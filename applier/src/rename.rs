//! Column renames declared in configuration: blue's column `from` of a table is green's column
//! `to`.
//!
//! Columns are otherwise matched by name. With renames, blue's column `c` of a table lands in
//! green's column
//! - `to`, when a rename `c → to` is declared;
//! - nowhere, when `c` is the `to` of another rename (green's `c` takes that column's values);
//! - `c` otherwise.
//!
//! The same rule read backwards says which blue column fills a green column. Applying, the
//! writeset, the plan and the backfill all ask [`Renames`], so they agree.
//!
//! The command-line form is `[schema.]table:from=to` (a bare table is in `public`). Names are
//! exact, as in the catalog: no case folding. A name containing `.`, `:`, `=` or `"` is written
//! in double quotes, an inner `"` doubled, as in SQL: `'"my.schema"."Users":"a=b"=c'`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use blueshift_decoder::ident::quote_ident;

/// One declared rename.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rename {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// Blue's column.
    pub from: String,
    /// Green's column.
    pub to: String,
}

/// A rename that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenameError {
    /// The text does not follow the syntax.
    #[error(
        "invalid rename {text:?}: {reason} — write [schema.]table:from=to, double-quoting a name \
         that contains . : = or \" (e.g. 'public.users:name=full_name')"
    )]
    Syntax {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A column renamed to its own name.
    #[error(
        "rename of column {} of table {} to itself — remove it: columns of the same name are \
         matched without one",
        quote_ident(column),
        table_display(schema, table)
    )]
    ToItself {
        /// The table's schema.
        schema: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// The same blue column renamed twice.
    #[error(
        "column {} of table {} is renamed twice — keep one rename per blue column",
        quote_ident(column),
        table_display(schema, table)
    )]
    DuplicateFrom {
        /// The table's schema.
        schema: String,
        /// The table.
        table: String,
        /// Blue's column.
        column: String,
    },
    /// Two blue columns renamed to the same green column.
    #[error(
        "two columns of table {} are renamed to {} — a green column can receive one blue column",
        table_display(schema, table),
        quote_ident(column)
    )]
    DuplicateTo {
        /// The table's schema.
        schema: String,
        /// The table.
        table: String,
        /// Green's column.
        column: String,
    },
}

fn table_display(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

fn syntax(text: &str, reason: impl Into<String>) -> RenameError {
    RenameError::Syntax {
        text: text.to_owned(),
        reason: reason.into(),
    }
}

/// Reads one name at the start of `rest`: quoted (`"…"`, `""` inside is `"`) or unquoted (up to
/// the next `.`, `:` or `=`). Returns the name and what follows it, or why it is not a name.
pub(crate) fn read_name(rest: &str) -> Result<(String, &str), &'static str> {
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '"' {
                out.push(c);
                continue;
            }
            if quoted[i + 1..].starts_with('"') {
                out.push('"');
                chars.next();
                continue;
            }
            if out.is_empty() {
                return Err("an empty quoted name");
            }
            return Ok((out, &quoted[i + 1..]));
        }
        return Err("a quoted name is not closed");
    }
    let end = rest.find(['.', ':', '=', '"']).unwrap_or(rest.len());
    if rest[end..].starts_with('"') {
        return Err("a double quote inside an unquoted name (quote the whole name)");
    }
    if end == 0 {
        return Err("a name is missing");
    }
    Ok((rest[..end].to_owned(), &rest[end..]))
}

/// [`read_name`], its failure a [`RenameError::Syntax`] about `text`.
fn name<'a>(text: &str, rest: &'a str) -> Result<(String, &'a str), RenameError> {
    read_name(rest).map_err(|reason| syntax(text, reason))
}

/// Parses `[schema.]table` (a bare table is in `public`) into its schema and name.
pub fn parse_table(text: &str) -> Result<(String, String), RenameError> {
    let (first, rest) = name(text, text)?;
    let Some(rest) = rest.strip_prefix('.') else {
        if rest.is_empty() {
            return Ok(("public".to_owned(), first));
        }
        return Err(syntax(text, format!("unexpected {rest:?} after the table")));
    };
    let (second, rest) = name(text, rest)?;
    if !rest.is_empty() {
        return Err(syntax(
            text,
            format!("unexpected {rest:?} after schema.table (quote a name that contains a dot)"),
        ));
    }
    Ok((first, second))
}

impl Rename {
    /// A rename of `table`'s (`[schema.]table`, see [`parse_table`]) column `from` to `to`;
    /// the column names are taken as they are.
    pub fn new(table: &str, from: &str, to: &str) -> Result<Rename, RenameError> {
        let (schema, table) = parse_table(table)?;
        for (what, column) in [("from", from), ("to", to)] {
            if column.is_empty() {
                return Err(syntax(
                    &format!("{table}:{from}={to}"),
                    format!("the {what} column is empty"),
                ));
            }
        }
        let rename = Rename {
            schema,
            table,
            from: from.to_owned(),
            to: to.to_owned(),
        };
        if rename.from == rename.to {
            return Err(RenameError::ToItself {
                schema: rename.schema,
                table: rename.table,
                column: rename.from,
            });
        }
        Ok(rename)
    }
}

/// `[schema.]table:from=to`.
impl FromStr for Rename {
    type Err = RenameError;

    fn from_str(text: &str) -> Result<Rename, RenameError> {
        let (first, mut rest) = name(text, text)?;
        let (schema, table) = match rest.strip_prefix('.') {
            Some(after) => {
                let (second, after) = name(text, after)?;
                rest = after;
                (first, second)
            }
            None => ("public".to_owned(), first),
        };
        let Some(after) = rest.strip_prefix(':') else {
            return Err(syntax(text, "no ':' between the table and the columns"));
        };
        let (from, after) = name(text, after)?;
        let Some(after) = after.strip_prefix('=') else {
            return Err(syntax(
                text,
                "no '=' between the old and the new column name",
            ));
        };
        let (to, after) = name(text, after)?;
        if !after.is_empty() {
            return Err(syntax(text, format!("unexpected {after:?} at the end")));
        }
        if from == to {
            return Err(RenameError::ToItself {
                schema,
                table,
                column: from,
            });
        }
        Ok(Rename {
            schema,
            table,
            from,
            to,
        })
    }
}

/// `"schema"."table"."from" → "to"`.
impl fmt::Display for Rename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{} → {}",
            table_display(&self.schema, &self.table),
            quote_ident(&self.from),
            quote_ident(&self.to)
        )
    }
}

/// One table's renames, both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TableRenames {
    /// Blue's name → green's.
    to_green: BTreeMap<String, String>,
    /// Green's name → blue's.
    to_blue: BTreeMap<String, String>,
}

/// Every declared rename, checked: per table, each blue column renamed at most once, each green
/// column the target of at most one rename, no column renamed to itself. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renames {
    tables: BTreeMap<(String, String), TableRenames>,
}

impl Renames {
    /// Checks and indexes `renames`.
    pub fn new(renames: impl IntoIterator<Item = Rename>) -> Result<Renames, RenameError> {
        let mut tables: BTreeMap<(String, String), TableRenames> = BTreeMap::new();
        for r in renames {
            if r.from == r.to {
                return Err(RenameError::ToItself {
                    schema: r.schema,
                    table: r.table,
                    column: r.from,
                });
            }
            let table = tables
                .entry((r.schema.clone(), r.table.clone()))
                .or_default();
            if table.to_green.contains_key(&r.from) {
                return Err(RenameError::DuplicateFrom {
                    schema: r.schema,
                    table: r.table,
                    column: r.from,
                });
            }
            if table.to_blue.contains_key(&r.to) {
                return Err(RenameError::DuplicateTo {
                    schema: r.schema,
                    table: r.table,
                    column: r.to,
                });
            }
            table.to_green.insert(r.from.clone(), r.to.clone());
            table.to_blue.insert(r.to, r.from);
        }
        Ok(Renames { tables })
    }

    /// No rename declared.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Every rename, by table then blue column.
    pub fn iter(&self) -> impl Iterator<Item = Rename> + '_ {
        self.tables.iter().flat_map(|((schema, table), renames)| {
            renames.to_green.iter().map(move |(from, to)| Rename {
                schema: schema.clone(),
                table: table.clone(),
                from: from.clone(),
                to: to.clone(),
            })
        })
    }

    /// The tables with renames, as `(schema, table)`.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.tables.keys().map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// The renames of one table, as `(from, to)`.
    pub fn of_table<'a>(
        &'a self,
        schema: &str,
        table: &str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.table(schema, table)
            .into_iter()
            .flat_map(|t| t.to_green.iter().map(|(f, t)| (f.as_str(), t.as_str())))
    }

    fn table(&self, schema: &str, table: &str) -> Option<&TableRenames> {
        // The map is small; a lookup without allocating the key.
        self.tables
            .iter()
            .find(|((s, t), _)| s == schema && t == table)
            .map(|(_, r)| r)
    }

    /// The green column declared for blue's column `blue`, if renamed.
    pub fn renamed_to(&self, schema: &str, table: &str, blue: &str) -> Option<&str> {
        self.table(schema, table)?
            .to_green
            .get(blue)
            .map(String::as_str)
    }

    /// The green column that blue's column `blue` of `schema.table` lands in: its rename, else
    /// the same name, except when that name is the target of another rename (then none).
    pub fn green_column<'a>(&'a self, schema: &str, table: &str, blue: &'a str) -> Option<&'a str> {
        let Some(renames) = self.table(schema, table) else {
            return Some(blue);
        };
        if let Some(to) = renames.to_green.get(blue) {
            return Some(to);
        }
        if renames.to_blue.contains_key(blue) {
            return None;
        }
        Some(blue)
    }

    /// The blue column that fills green's column `green` of `schema.table`: the inverse of
    /// [`green_column`](Self::green_column).
    pub fn blue_column<'a>(&'a self, schema: &str, table: &str, green: &'a str) -> Option<&'a str> {
        let Some(renames) = self.table(schema, table) else {
            return Some(green);
        };
        if let Some(from) = renames.to_blue.get(green) {
            return Some(from);
        }
        if renames.to_green.contains_key(green) {
            return None;
        }
        Some(green)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> Result<Rename, RenameError> {
        text.parse()
    }

    fn rename(schema: &str, table: &str, from: &str, to: &str) -> Rename {
        Rename {
            schema: schema.into(),
            table: table.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn flag_syntax() {
        assert_eq!(
            r("public.users:name=full_name").unwrap(),
            rename("public", "users", "name", "full_name")
        );
        assert_eq!(r("users:a=b").unwrap(), rename("public", "users", "a", "b"));
        assert_eq!(
            r(r#""my.schema"."Us""ers":"a=b"="c:d""#).unwrap(),
            rename("my.schema", "Us\"ers", "a=b", "c:d")
        );
        // Names are exact: no case folding, spaces kept.
        assert_eq!(
            r("App.Users:Old Name=New Name").unwrap(),
            rename("App", "Users", "Old Name", "New Name")
        );
        assert_eq!(r("t:ü=ß").unwrap(), rename("public", "t", "ü", "ß"));
    }

    #[test]
    fn flag_syntax_errors() {
        for (text, reason) in [
            ("", "a name is missing"),
            ("users", "no ':'"),
            ("users:name", "no '='"),
            ("users:=b", "a name is missing"),
            ("users:a=", "a name is missing"),
            ("a.b.c:x=y", "no ':'"),
            (":a=b", "a name is missing"),
            ("\"unclosed:a=b", "not closed"),
            ("\"\".t:a=b", "empty quoted name"),
            ("t:a=b=c", "unexpected \"=c\""),
            ("t:a\"x=b", "double quote inside an unquoted name"),
            ("t:a=\"b\"c", "unexpected \"c\""),
        ] {
            let err = r(text).unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(err, RenameError::Syntax { .. }) && shown.contains(reason),
                "{text:?}: {shown}"
            );
            assert!(shown.contains("[schema.]table:from=to"), "{shown}");
        }
        let err = r("t:a=a").unwrap_err();
        assert!(matches!(err, RenameError::ToItself { .. }), "{err}");
        assert!(err.to_string().contains("\"a\" of table \"public\".\"t\""));
    }

    #[test]
    fn table_names() {
        assert_eq!(
            parse_table("public.users").unwrap(),
            ("public".into(), "users".into())
        );
        assert_eq!(
            parse_table("users").unwrap(),
            ("public".into(), "users".into())
        );
        assert_eq!(
            parse_table(r#""a.b"."c""d""#).unwrap(),
            ("a.b".into(), "c\"d".into())
        );
        assert!(parse_table("a.b.c").is_err());
        assert!(parse_table("").is_err());
        assert!(parse_table("a.").is_err());
        assert!(parse_table("a:b").is_err());
        let err = Rename::new("public.users", "name", "").unwrap_err();
        assert!(err.to_string().contains("to column is empty"), "{err}");
        assert!(matches!(
            Rename::new("users", "x", "x"),
            Err(RenameError::ToItself { .. })
        ));
        assert_eq!(
            Rename::new("s.t", "a.b", "c=d").unwrap(),
            rename("s", "t", "a.b", "c=d")
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let err = Renames::new([
            rename("public", "t", "a", "b"),
            rename("public", "t", "a", "c"),
        ])
        .unwrap_err();
        assert!(matches!(err, RenameError::DuplicateFrom { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("\"a\" of table \"public\".\"t\" is renamed twice"));
        let err = Renames::new([
            rename("public", "t", "a", "c"),
            rename("public", "t", "b", "c"),
        ])
        .unwrap_err();
        assert!(matches!(err, RenameError::DuplicateTo { .. }), "{err}");
        assert!(err.to_string().contains("renamed to \"c\""), "{err}");
        let err = Renames::new([rename("public", "t", "a", "a")]).unwrap_err();
        assert!(matches!(err, RenameError::ToItself { .. }), "{err}");
        // The same names in another table are another rename.
        let ok = Renames::new([
            rename("public", "t", "a", "c"),
            rename("other", "t", "a", "c"),
        ])
        .unwrap();
        assert_eq!(ok.iter().count(), 2);
        assert_eq!(ok.tables().count(), 2);
    }

    #[test]
    fn both_directions() {
        let renames = Renames::new([
            rename("public", "users", "name", "full_name"),
            // A swap.
            rename("public", "swap", "a", "b"),
            rename("public", "swap", "b", "a"),
        ])
        .unwrap();
        let g = |t: &str, c: &'static str| renames.green_column("public", t, c);
        let b = |t: &str, c: &'static str| renames.blue_column("public", t, c);
        assert_eq!(g("users", "name"), Some("full_name"));
        assert_eq!(g("users", "id"), Some("id"));
        // Blue's own `full_name`, if it has one, is taken over by the rename.
        assert_eq!(g("users", "full_name"), None);
        assert_eq!(b("users", "full_name"), Some("name"));
        // Green's `name`, if it has one, gets nothing from blue.
        assert_eq!(b("users", "name"), None);
        assert_eq!(b("users", "id"), Some("id"));
        assert_eq!(g("swap", "a"), Some("b"));
        assert_eq!(g("swap", "b"), Some("a"));
        assert_eq!(b("swap", "a"), Some("b"));
        assert_eq!(g("other", "name"), Some("name"));
        assert_eq!(
            renames.renamed_to("public", "users", "name"),
            Some("full_name")
        );
        assert_eq!(renames.renamed_to("public", "users", "id"), None);
        assert_eq!(
            renames.of_table("public", "swap").collect::<Vec<_>>(),
            [("a", "b"), ("b", "a")]
        );
        assert!(!renames.is_empty());
        assert!(Renames::default().is_empty());
        assert_eq!(
            rename("public", "users", "name", "full_name").to_string(),
            "\"public\".\"users\".\"name\" → \"full_name\""
        );
    }
}
