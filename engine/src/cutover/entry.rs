//! PgBouncer's database entry in its configuration file: found, read and rewritten.
//!
//! The switch re-points one `[databases]` line, `name = host=… port=… dbname=…`, and PgBouncer
//! picks it up on `RELOAD`. The file is either `pgbouncer.ini` itself (the line must sit in its
//! `[databases]` section) or a file it `%include`s there (no section header: every line is an
//! entry). Only the entry's `host`, `port` and `dbname` are replaced; its other settings
//! (`user=`, `pool_size=`…) and every other line stay byte for byte. The file is replaced
//! atomically (a temporary file beside it, then `rename`), keeping its mode and owner, so a
//! crash never leaves PgBouncer half a file.

use std::fs;
use std::path::Path;

use super::error::CutoverError;

/// Where an entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host`.
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `dbname`.
    pub dbname: String,
}

impl Endpoint {
    /// The `host=… port=… dbname=…` part of an entry.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} dbname={}",
            quote(&self.host),
            self.port,
            quote(&self.dbname)
        )
    }
}

/// Quotes a value for PgBouncer's connection string when it needs it.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// Splits a PgBouncer connection string into `(key, value)` pairs (values unquoted).
pub(crate) fn parse_conninfo(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("expected key=value, found {key:?} without a value"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of {key}")),
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value of {key}")),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if key.is_empty() {
            return Err("a value without a key".to_owned());
        }
        pairs.push((key.to_ascii_lowercase(), value));
    }
}

/// The entry's line in `text`: its index and its connection string.
fn find<'a>(text: &'a str, name: &str) -> Result<Option<(usize, &'a str)>, String> {
    let has_sections = text.lines().any(|l| l.trim_start().starts_with('['));
    let mut in_databases = !has_sections;
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_databases = trimmed.eq_ignore_ascii_case("[databases]");
            continue;
        }
        if !in_databases
            || trimmed.is_empty()
            || trimmed.starts_with(';')
            || trimmed.starts_with('#')
            || trimmed.starts_with('%')
        {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let key = key
            .strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or(key);
        if key == name {
            if found.is_some() {
                return Err(format!(
                    "database {name:?} has two entries — keep one (PgBouncer uses the last)"
                ));
            }
            found = Some((i, value.trim()));
        }
    }
    Ok(found)
}

/// The connection string of entry `name` in the file at `path`.
pub(crate) fn read(path: &Path, name: &str) -> Result<String, CutoverError> {
    let fail = |problem: String| CutoverError::EntryFile {
        path: path.display().to_string(),
        problem,
    };
    let text = fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "cannot read it: {e} — pass the file holding the [databases] entry with --pgbouncer-file"
        ))
    })?;
    match find(&text, name).map_err(fail)? {
        Some((_, value)) => Ok(value.to_owned()),
        None => Err(fail(format!(
            "no entry for database {name:?} — pass the file that holds it (pgbouncer.ini or the file it %includes)"
        ))),
    }
}

/// Where the connection string `value` points.
pub(crate) fn endpoint_of(value: &str) -> Result<Endpoint, String> {
    let pairs = parse_conninfo(value)?;
    let get = |k: &str| pairs.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v);
    let port = match get("port") {
        Some(p) => p
            .parse()
            .map_err(|_| format!("port {p:?} is not a number"))?,
        None => 5432,
    };
    Ok(Endpoint {
        host: get("host").cloned().unwrap_or_default(),
        port,
        dbname: get("dbname").cloned().unwrap_or_default(),
    })
}

/// `value` with `host`, `port` and `dbname` replaced by `to`'s; every other setting kept.
pub(crate) fn repoint(value: &str, to: &Endpoint) -> Result<String, String> {
    let mut out: Vec<String> = vec![to.conninfo()];
    for (k, v) in parse_conninfo(value)? {
        if !matches!(k.as_str(), "host" | "port" | "dbname") {
            out.push(format!("{k}={}", quote(&v)));
        }
    }
    Ok(out.join(" "))
}

/// Writes `value` as entry `name`'s connection string in the file at `path` (atomically; a
/// no-op when it is already so).
pub(crate) fn write(path: &Path, name: &str, value: &str) -> Result<(), CutoverError> {
    let fail = |problem: String| CutoverError::EntryFile {
        path: path.display().to_string(),
        problem,
    };
    let text = fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let Some((index, current)) = find(&text, name).map_err(fail)? else {
        return Err(fail(format!("no entry for database {name:?}")));
    };
    if current == value {
        return Ok(());
    }
    let mut out = String::with_capacity(text.len() + value.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == index {
            let key = line.split_once('=').map_or(name, |(k, _)| k.trim_end());
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(value);
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    let meta = fs::metadata(path).map_err(|e| fail(format!("cannot read its metadata: {e}")))?;
    let tmp = path.with_extension("blueshift-tmp");
    fs::write(&tmp, out).map_err(|e| {
        fail(format!(
            "cannot write {} beside it: {e} — blueshift needs write access to the folder",
            tmp.display()
        ))
    })?;
    let _ = fs::set_permissions(&tmp, meta.permissions());
    {
        use std::os::unix::fs::MetadataExt as _;
        let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
    }
    fs::rename(&tmp, path).map_err(|e| fail(format!("cannot replace it: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_repoints_an_entry_keeping_the_rest() {
        let text = "; comment\nother = host=x port=1 dbname=o\napp = host=127.0.0.1 port=5433 dbname='app' pool_size=5\n";
        let (i, value) = find(text, "app").unwrap().unwrap();
        assert_eq!(i, 2);
        let blue = endpoint_of(value).unwrap();
        assert_eq!(
            blue,
            Endpoint {
                host: "127.0.0.1".into(),
                port: 5433,
                dbname: "app".into()
            }
        );
        let green = Endpoint {
            host: "green.internal".into(),
            port: 6543,
            dbname: "my app".into(),
        };
        let new = repoint(value, &green).unwrap();
        assert_eq!(
            new,
            "host=green.internal port=6543 dbname='my app' pool_size=5"
        );
        assert_eq!(endpoint_of(&new).unwrap(), green);
    }

    #[test]
    fn only_the_databases_section_counts() {
        let text = "[pgbouncer]\napp = 1\n[databases]\napp = host=a dbname=b\n";
        let (i, v) = find(text, "app").unwrap().unwrap();
        assert_eq!((i, v), (3, "host=a dbname=b"));
        assert!(find(text, "nope").unwrap().is_none());
        let twice = "app = host=a\napp = host=b\n";
        assert!(find(twice, "app").unwrap_err().contains("two entries"));
    }

    #[test]
    fn quoted_values_and_bad_strings() {
        let pairs = parse_conninfo(r"host=a dbname='it\'s' user = bob").unwrap();
        assert_eq!(pairs[1], ("dbname".into(), "it's".into()));
        assert_eq!(pairs[2], ("user".into(), "bob".into()));
        assert!(parse_conninfo("host").is_err());
        assert!(parse_conninfo("dbname='open").is_err());
        assert!(endpoint_of("port=x").is_err());
    }

    #[test]
    fn writes_atomically_and_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("databases.ini");
        fs::write(
            &path,
            "a = host=h port=1 dbname=a\napp = host=h port=2 dbname=app\n",
        )
        .unwrap();
        write(&path, "app", "host=g port=3 dbname=app").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "a = host=h port=1 dbname=a\napp = host=g port=3 dbname=app\n"
        );
        write(&path, "app", "host=g port=3 dbname=app").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(read(&path, "app").unwrap(), "host=g port=3 dbname=app");
        assert!(read(&path, "zzz").is_err());
    }
}
