//! The declared column mapping, from the command line and from the settings file (see
//! [`crate::settings`]), for `sync`, `backfill` and `plan`:
//!
//! - renames: `--rename [SCHEMA.]TABLE:FROM=TO` (repeatable), `[[rename]]` tables with `table`,
//!   `from`, `to`;
//! - exclusions: `--exclude [SCHEMA.]TABLE:COLUMN`, `[[exclude]]` tables with `table`, `column`
//!   — a blue column left out on purpose;
//! - accepted lossy casts: `--lossy-cast [SCHEMA.]TABLE:COLUMN`, `[[cast]]` tables with `table`,
//!   `column`, `lossy = true` — a blue column green may take with a loss (a narrower type
//!   modifier, a rounding conversion).
//!
//! File and flags add up; the same blue column renamed twice, two columns renamed to one, a
//! column renamed to itself, or both renamed and excluded is an error. The syntax is
//! `blueshift_engine::schema`'s: names are exact (no case folding), a bare table is in
//! `public`, and a name containing `.`, `:`, `=` or `"` is double-quoted as in SQL. In the file
//! only `table` is parsed that way; the column names are taken as they are.

use anyhow::Context as _;
use blueshift_engine::schema::{ColumnRef, Mapping, Rename, Renames};
use serde::Deserialize;

/// `--rename`, `--exclude` and `--lossy-cast`, for commands that compare or apply with a
/// mapping.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct RenameArgs {
    /// Blue's column FROM of TABLE is green's column TO; repeatable. TABLE is `schema.table` or
    /// `table` (in `public`); names are exact, and one containing . : = or " goes in double
    /// quotes: --rename 'public.users:name=full_name' --rename '"My.Schema".t:"a:b"=c'.
    #[arg(long = "rename", value_name = "[SCHEMA.]TABLE:FROM=TO")]
    pub(crate) renames: Vec<Rename>,

    /// Leave blue's column COLUMN of TABLE out on purpose: it is neither copied nor applied;
    /// repeatable. Without it, a blue column green lacks stops sync (its values would be lost).
    /// A replica identity key column cannot be excluded: --exclude 'public.users:legacy'.
    #[arg(long = "exclude", value_name = "[SCHEMA.]TABLE:COLUMN")]
    pub(crate) excluded: Vec<ColumnRef>,

    /// Accept that green's type for blue's column COLUMN of TABLE loses something: a narrower
    /// type modifier (numeric(12,4) → numeric(12,2) rounds) or a lossy conversion (float8 →
    /// float4, timestamptz → timestamp, json → jsonb); repeatable. Without it, such a column
    /// stops sync: --lossy-cast 'public.prices:amount'.
    #[arg(long = "lossy-cast", value_name = "[SCHEMA.]TABLE:COLUMN")]
    pub(crate) lossy: Vec<ColumnRef>,
}

/// One `[[rename]]` of the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRename {
    /// `schema.table` or `table` (in `public`).
    table: String,
    /// Blue's column.
    from: String,
    /// Green's column.
    to: String,
}

/// One `[[exclude]]` of the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileExclude {
    /// `schema.table` or `table` (in `public`).
    table: String,
    /// Blue's column.
    column: String,
}

/// One `[[cast]]` of the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCast {
    /// `schema.table` or `table` (in `public`).
    table: String,
    /// Blue's column.
    column: String,
    /// Must be `true`: the loss is accepted.
    lossy: bool,
}

/// The mapping tables of a settings file.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct FileMapping {
    #[serde(default)]
    pub(crate) rename: Vec<FileRename>,
    #[serde(default)]
    pub(crate) exclude: Vec<FileExclude>,
    #[serde(default)]
    pub(crate) cast: Vec<FileCast>,
}

/// The file's mapping and the flags', checked together.
pub(crate) fn collect(file: FileMapping, flags: RenameArgs) -> anyhow::Result<Mapping> {
    let mut renames = Vec::with_capacity(file.rename.len() + flags.renames.len());
    for (n, r) in file.rename.into_iter().enumerate() {
        renames.push(
            Rename::new(&r.table, &r.from, &r.to)
                .with_context(|| format!("invalid [[rename]] #{} in the settings file", n + 1))?,
        );
    }
    renames.extend(flags.renames);
    let mut excluded = Vec::with_capacity(file.exclude.len() + flags.excluded.len());
    for (n, e) in file.exclude.into_iter().enumerate() {
        excluded.push(
            ColumnRef::new(&e.table, &e.column)
                .with_context(|| format!("invalid [[exclude]] #{} in the settings file", n + 1))?,
        );
    }
    excluded.extend(flags.excluded);
    let mut lossy = Vec::with_capacity(file.cast.len() + flags.lossy.len());
    for (n, c) in file.cast.into_iter().enumerate() {
        let context = || format!("invalid [[cast]] #{} in the settings file", n + 1);
        anyhow::ensure!(
            c.lossy,
            "{}: lossy = false declares nothing — remove it, or set lossy = true to accept the \
             loss",
            context()
        );
        lossy.push(ColumnRef::new(&c.table, &c.column).with_context(context)?);
    }
    lossy.extend(flags.lossy);
    Ok(Mapping::new(Renames::new(renames)?, excluded, lossy)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml_text: &str) -> FileMapping {
        toml::from_str::<FileMapping>(toml_text).unwrap()
    }

    fn flags(renames: &[&str], excluded: &[&str], lossy: &[&str]) -> RenameArgs {
        RenameArgs {
            renames: renames.iter().map(|r| r.parse().unwrap()).collect(),
            excluded: excluded.iter().map(|r| r.parse().unwrap()).collect(),
            lossy: lossy.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn file_and_flags_add_up() {
        let from_file = file(
            "[[rename]]\ntable = \"public.users\"\nfrom = \"name\"\nto = \"full_name\"\n\
             [[rename]]\ntable = '\"Odd.Schema\".t'\nfrom = \"a.b\"\nto = \"c\"\n\
             [[exclude]]\ntable = \"users\"\ncolumn = \"legacy\"\n\
             [[cast]]\ntable = \"prices\"\ncolumn = \"amount\"\nlossy = true\n",
        );
        let mapping = collect(
            from_file,
            flags(&["orders:qty=quantity"], &["orders:old"], &["t:x"]),
        )
        .unwrap();
        let renames = mapping.renames();
        assert_eq!(
            renames.green_column("public", "users", "name"),
            Some("full_name")
        );
        assert_eq!(renames.green_column("Odd.Schema", "t", "a.b"), Some("c"));
        assert_eq!(
            renames.green_column("public", "orders", "qty"),
            Some("quantity")
        );
        assert!(mapping.is_excluded("public", "users", "legacy"));
        assert!(mapping.is_excluded("public", "orders", "old"));
        assert!(mapping.accepts_loss("public", "prices", "amount"));
        assert!(mapping.accepts_loss("public", "t", "x"));
    }

    #[test]
    fn errors_name_the_declaration() {
        let twice = file("[[rename]]\ntable = \"users\"\nfrom = \"name\"\nto = \"full_name\"\n");
        let err = collect(twice, flags(&["public.users:name=other"], &[], &[])).unwrap_err();
        assert!(format!("{err:#}").contains("renamed twice"), "{err:#}");

        let itself = file("[[rename]]\ntable = \"users\"\nfrom = \"a\"\nto = \"a\"\n");
        let err = collect(itself, RenameArgs::default()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[[rename]] #1") && text.contains("to itself"),
            "{text}"
        );

        let bad_table = file("[[rename]]\ntable = \"a.b.c\"\nfrom = \"x\"\nto = \"y\"\n");
        let err = collect(bad_table, RenameArgs::default()).unwrap_err();
        assert!(format!("{err:#}").contains("invalid rename"), "{err:#}");

        let bad_exclude = file("[[exclude]]\ntable = \"a.b.c\"\ncolumn = \"x\"\n");
        let err = collect(bad_exclude, RenameArgs::default()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[[exclude]] #1") && text.contains("[schema.]table:column"),
            "{text}"
        );

        let not_lossy = file("[[cast]]\ntable = \"t\"\ncolumn = \"x\"\nlossy = false\n");
        let err = collect(not_lossy, RenameArgs::default()).unwrap_err();
        assert!(format!("{err:#}").contains("lossy = true"), "{err:#}");

        let renamed_and_excluded =
            collect(FileMapping::default(), flags(&["t:a=b"], &["t:a"], &[])).unwrap_err();
        assert!(
            format!("{renamed_and_excluded:#}").contains("both renamed"),
            "{renamed_and_excluded:#}"
        );

        let unknown_key = toml::from_str::<FileMapping>(
            "[[rename]]\ntable = \"t\"\nfrom = \"x\"\nto = \"y\"\nschema = \"s\"\n",
        );
        assert!(unknown_key.is_err());
        let missing_lossy =
            toml::from_str::<FileMapping>("[[cast]]\ntable = \"t\"\ncolumn = \"x\"\n");
        assert!(missing_lossy.is_err());
    }
}
