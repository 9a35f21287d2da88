//! Column renames from the command line (`--rename [SCHEMA.]TABLE:FROM=TO`, repeatable) and from
//! the settings file (`[[rename]]` tables with `table`, `from`, `to`), for `sync`, `backfill`
//! and `plan`.
//!
//! Both add up; the same blue column renamed twice, two columns renamed to one, or a column
//! renamed to itself is an error. The syntax is `blueshift_engine::schema::Rename`'s: names are
//! exact (no case folding), a bare table is in `public`, and a name containing `.`, `:`, `=` or
//! `"` is double-quoted as in SQL. In the file only `table` is parsed that way; `from` and `to`
//! are taken as they are.

use anyhow::Context as _;
use blueshift_engine::schema::{Rename, Renames};
use serde::Deserialize;

/// `--rename`, for commands that compare or apply with renames.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct RenameArgs {
    /// Blue's column FROM of TABLE is green's column TO; repeatable. TABLE is `schema.table` or
    /// `table` (in `public`); names are exact, and one containing . : = or " goes in double
    /// quotes: --rename 'public.users:name=full_name' --rename '"My.Schema".t:"a:b"=c'.
    #[arg(long = "rename", value_name = "[SCHEMA.]TABLE:FROM=TO")]
    pub(crate) renames: Vec<Rename>,
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

/// The file's renames and the flags', checked together.
pub(crate) fn collect(file: Vec<FileRename>, flags: Vec<Rename>) -> anyhow::Result<Renames> {
    let mut all = Vec::with_capacity(file.len() + flags.len());
    for (n, r) in file.into_iter().enumerate() {
        all.push(
            Rename::new(&r.table, &r.from, &r.to)
                .with_context(|| format!("invalid [[rename]] #{} in the settings file", n + 1))?,
        );
    }
    all.extend(flags);
    Ok(Renames::new(all)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The renames of a settings file.
    #[derive(Debug, Default, Deserialize)]
    struct RenamesOnly {
        #[serde(default)]
        rename: Vec<FileRename>,
    }

    fn file(toml_text: &str) -> Vec<FileRename> {
        toml::from_str::<RenamesOnly>(toml_text).unwrap().rename
    }

    #[test]
    fn file_and_flags_add_up() {
        let from_file = file(
            "source = \"ignored here\"\n\
             [[rename]]\ntable = \"public.users\"\nfrom = \"name\"\nto = \"full_name\"\n\
             [[rename]]\ntable = '\"Odd.Schema\".t'\nfrom = \"a.b\"\nto = \"c\"\n",
        );
        let flags = vec!["orders:qty=quantity".parse().unwrap()];
        let renames = collect(from_file, flags).unwrap();
        assert_eq!(
            renames.green_column("public", "users", "name"),
            Some("full_name")
        );
        assert_eq!(renames.green_column("Odd.Schema", "t", "a.b"), Some("c"));
        assert_eq!(
            renames.green_column("public", "orders", "qty"),
            Some("quantity")
        );
    }

    #[test]
    fn errors_name_the_rename() {
        let twice = file("[[rename]]\ntable = \"users\"\nfrom = \"name\"\nto = \"full_name\"\n");
        let err = collect(twice, vec!["public.users:name=other".parse().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("renamed twice"), "{err:#}");

        let itself = file("[[rename]]\ntable = \"users\"\nfrom = \"a\"\nto = \"a\"\n");
        let err = collect(itself, Vec::new()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[[rename]] #1") && text.contains("to itself"),
            "{text}"
        );

        let bad_table = file("[[rename]]\ntable = \"a.b.c\"\nfrom = \"x\"\nto = \"y\"\n");
        let err = collect(bad_table, Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("invalid rename"), "{err:#}");

        let unknown_key = toml::from_str::<RenamesOnly>(
            "[[rename]]\ntable = \"t\"\nfrom = \"x\"\nto = \"y\"\nschema = \"s\"\n",
        );
        assert!(unknown_key.is_err());
    }
}
