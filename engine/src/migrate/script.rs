//! Migration scripts on disk: `V<version>__<description>.sql` and the optional
//! `V<version>__<description>.down.sql`, their versions, descriptions and checksums, and the
//! scaffolding of a new pair.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::MigrateError;

/// A migration version: a positive integer, ordered numerically. Displayed `V<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(i64);

impl Version {
    /// A version from its number; `None` unless it is at least 1.
    pub fn new(n: i64) -> Option<Version> {
        (n >= 1).then_some(Version(n))
    }

    /// The number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}", self.0)
    }
}

/// The checksum of a script: xxh3-64 of its bytes, as 16 hex digits.
pub fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", xxh3_64(bytes))
}

/// One migration: its up script and, when there is one, its down script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The version.
    pub version: Version,
    /// The description, from the file name with `_` read as a space.
    pub description: String,
    /// The up script's file name (`V3__add_users_email.sql`).
    pub name: String,
    /// The up script's path.
    pub path: PathBuf,
    /// The down script's path, if there is one.
    pub down: Option<PathBuf>,
    /// The up script's checksum.
    pub checksum: String,
}

impl Script {
    /// The text of the up or the down script.
    pub fn read(&self, path: &Path) -> Result<String, MigrateError> {
        let bytes = fs::read(path).map_err(|source| MigrateError::File {
            path: path.to_owned(),
            source,
        })?;
        String::from_utf8(bytes).map_err(|_| MigrateError::NotUtf8 {
            path: path.to_owned(),
        })
    }
}

/// What a file name says, when it names a migration script.
#[derive(Debug, PartialEq, Eq)]
struct Name {
    version: Version,
    description: String,
    down: bool,
}

/// Reads the scripts in `dir`, ordered by version. Files that do not look like migrations
/// (`README.md`, `notes.txt`) are ignored; files that look like one but are misnamed are errors.
pub fn discover(dir: &Path) -> Result<Vec<Script>, MigrateError> {
    let entries = fs::read_dir(dir).map_err(|source| MigrateError::Directory {
        dir: dir.to_owned(),
        source,
    })?;
    let mut ups: BTreeMap<Version, (String, PathBuf, String)> = BTreeMap::new();
    let mut downs: BTreeMap<Version, PathBuf> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| MigrateError::Directory {
            dir: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            let lossy = file_name.to_string_lossy();
            if looks_like_migration(&lossy) {
                return Err(MigrateError::BadName {
                    name: lossy.into_owned(),
                    reason: "the file name is not valid UTF-8".to_owned(),
                });
            }
            continue;
        };
        if !looks_like_migration(file_name) || !path.is_file() {
            continue;
        }
        let name = parse_name(file_name).map_err(|reason| MigrateError::BadName {
            name: file_name.to_owned(),
            reason,
        })?;
        if name.down {
            if let Some(first) = downs.insert(name.version, path.clone()) {
                return Err(MigrateError::DuplicateVersion {
                    version: name.version,
                    first: first.display().to_string(),
                    second: path.display().to_string(),
                });
            }
        } else if let Some((first, _, _)) = ups.get(&name.version) {
            return Err(MigrateError::DuplicateVersion {
                version: name.version,
                first: first.clone(),
                second: file_name.to_owned(),
            });
        } else {
            ups.insert(
                name.version,
                (file_name.to_owned(), path.clone(), name.description),
            );
        }
    }
    if let Some((version, path)) = downs.iter().find(|(v, _)| !ups.contains_key(v)) {
        return Err(MigrateError::OrphanDown {
            version: *version,
            path: path.clone(),
        });
    }
    ups.into_iter()
        .map(|(version, (name, path, description))| {
            let bytes = fs::read(&path).map_err(|source| MigrateError::File {
                path: path.clone(),
                source,
            })?;
            Ok(Script {
                version,
                description,
                name,
                down: downs.remove(&version),
                checksum: checksum(&bytes),
                path,
            })
        })
        .collect()
}

/// Scaffolds `V<next>__<slug>.sql` and its `.down.sql` in `dir` (created if missing), where
/// `<next>` is one more than the highest version there. Returns the two paths.
pub fn scaffold(dir: &Path, description: &str) -> Result<(PathBuf, PathBuf), MigrateError> {
    let slug = slug(description);
    if slug.is_empty() {
        return Err(MigrateError::EmptyDescription {
            description: description.to_owned(),
        });
    }
    fs::create_dir_all(dir).map_err(|source| MigrateError::Directory {
        dir: dir.to_owned(),
        source,
    })?;
    let next = discover(dir)?
        .last()
        .map_or(1, |s| s.version.get().saturating_add(1));
    let one_line = description.replace(['\n', '\r'], " ");
    let up = dir.join(format!("V{next}__{slug}.sql"));
    let down = dir.join(format!("V{next}__{slug}.down.sql"));
    let up_text = format!(
        "-- V{next}: {one_line}\n\
         --\n\
         -- Runs in one transaction, statement by statement. For statements that cannot run in a\n\
         -- transaction (CREATE INDEX CONCURRENTLY), put this line at the top of the file:\n\
         --   -- blueshift:no-transaction\n\n"
    );
    let down_text = format!("-- Reverts V{next}: {one_line}\n\n");
    write_new(&up, &up_text)?;
    if let Err(e) = write_new(&down, &down_text) {
        // Leave no half-made pair behind.
        let _ = fs::remove_file(&up);
        return Err(e);
    }
    Ok((up, down))
}

fn write_new(path: &Path, text: &str) -> Result<(), MigrateError> {
    use std::io::Write as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => MigrateError::FileExists {
                path: path.to_owned(),
            },
            _ => MigrateError::File {
                path: path.to_owned(),
                source,
            },
        })?;
    file.write_all(text.as_bytes())
        .map_err(|source| MigrateError::File {
            path: path.to_owned(),
            source,
        })
}

/// A description as a file-name-safe slug: lowercase letters and digits (any script), runs of
/// anything else replaced by one `_`, no `_` at either end.
pub fn slug(description: &str) -> String {
    let mut out = String::with_capacity(description.len());
    for c in description.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// `V` or `v`, a digit, and `.sql` at the end: meant as a migration script.
fn looks_like_migration(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('V' | 'v'))
        && chars.next().is_some_and(|c| c.is_ascii_digit())
        && name.ends_with(".sql")
}

fn parse_name(file_name: &str) -> Result<Name, String> {
    let (stem, down) = match file_name.strip_suffix(".down.sql") {
        Some(stem) => (stem, true),
        None => (
            file_name
                .strip_suffix(".sql")
                .ok_or_else(|| "it does not end in .sql".to_owned())?,
            false,
        ),
    };
    let rest = stem
        .strip_prefix('V')
        .ok_or_else(|| "it must start with an upper-case V".to_owned())?;
    let (number, description) = rest.split_once("__").ok_or_else(|| {
        "two underscores must separate the version from the description".to_owned()
    })?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the version {number:?} is not a whole number"));
    }
    let version = number
        .parse::<i64>()
        .ok()
        .and_then(Version::new)
        .ok_or_else(|| format!("the version {number} must be between 1 and {}", i64::MAX))?;
    let description = description.replace('_', " ").trim().to_owned();
    if description.is_empty() {
        return Err("the description after the two underscores is empty".to_owned());
    }
    Ok(Name {
        version,
        description,
        down,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_version_and_description() {
        let n = parse_name("V012__add_users_email.sql").expect("valid");
        assert_eq!(n.version.get(), 12);
        assert_eq!(n.description, "add users email");
        assert!(!n.down);
        let n = parse_name("V3__it's \"quoted\" ü.down.sql").expect("valid");
        assert_eq!(n.version.get(), 3);
        assert_eq!(n.description, "it's \"quoted\" ü");
        assert!(n.down);
        for bad in [
            "V1_add.sql",
            "V__add.sql",
            "V0__zero.sql",
            "V1x__add.sql",
            "V1__.sql",
            "v1__lower.sql",
            "V99999999999999999999__huge.sql",
        ] {
            assert!(parse_name(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn slugs_keep_letters_of_any_script() {
        assert_eq!(slug("add users email"), "add_users_email");
        assert_eq!(slug("  Add user's \"e-mail\"!  "), "add_user_s_e_mail");
        assert_eq!(slug("Ünïcödé 表 v2"), "ünïcödé_表_v2");
        assert_eq!(slug("../../etc/passwd"), "etc_passwd");
        assert_eq!(slug("!!!"), "");
    }

    #[test]
    fn discovery_orders_numerically_and_pairs_down_scripts() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in [
            ("V10__ten.sql", "select 10;"),
            ("V9__nine.sql", "select 9;"),
            ("V9__nine.down.sql", "select -9;"),
            ("README.md", "notes"),
        ] {
            fs::write(dir.path().join(name), text).expect("write");
        }
        let scripts = discover(dir.path()).expect("discovers");
        let versions: Vec<i64> = scripts.iter().map(|s| s.version.get()).collect();
        assert_eq!(versions, [9, 10]);
        assert!(scripts[0].down.is_some());
        assert!(scripts[1].down.is_none());
        assert_eq!(scripts[1].checksum, checksum(b"select 10;"));
        assert_eq!(scripts[1].checksum.len(), 16);

        fs::write(dir.path().join("V09__again.sql"), "").expect("write");
        let err = discover(dir.path()).expect_err("duplicate");
        assert!(
            matches!(err, MigrateError::DuplicateVersion { .. }),
            "{err}"
        );
        fs::remove_file(dir.path().join("V09__again.sql")).expect("rm");

        fs::write(dir.path().join("V11__orphan.down.sql"), "").expect("write");
        let err = discover(dir.path()).expect_err("orphan");
        assert!(matches!(err, MigrateError::OrphanDown { .. }), "{err}");
    }

    #[test]
    fn scaffold_picks_the_next_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let migrations = dir.path().join("migrations");
        let (up, down) = scaffold(&migrations, "add users email").expect("scaffolds");
        assert!(up.ends_with("V1__add_users_email.sql"));
        assert!(down.ends_with("V1__add_users_email.down.sql"));
        let (up, _) = scaffold(&migrations, "Ünïcödé \"quoted\" it's").expect("scaffolds");
        assert!(
            up.ends_with("V2__ünïcödé_quoted_it_s.sql"),
            "{}",
            up.display()
        );
        let scripts = discover(&migrations).expect("discovers");
        assert_eq!(scripts.len(), 2);
        assert_eq!(scripts[1].description, "ünïcödé quoted it s");
        assert!(matches!(
            scaffold(&migrations, "?!"),
            Err(MigrateError::EmptyDescription { .. })
        ));
    }
}
