//! The password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`), read the way libpq reads it.
//!
//! Implements <https://www.postgresql.org/docs/current/libpq-pgpass.html>: one
//! `hostname:port:database:username:password` entry a line, `*` matching anything in the first
//! four fields, `\:` and `\\` escapes, `#` comment lines, the first matching line wins. Where
//! the documentation stops, libpq's code decides (`passwordFromFile` in `fe-connect.c`); the
//! `pgpass` fuzz target compares the two. The file is ignored, with a warning, when it is not a
//! regular file or is readable by group or others. For a Unix-socket connection the host looked
//! up is `localhost`.

use std::fs;
use std::io;
use std::path::Path;

use super::Password;

/// The connection a password is looked up for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) dbname: &'a str,
    pub(crate) user: &'a str,
}

/// Looks `entry` up in the password file at `path`. `None` when the file is missing, unusable
/// (a warning says why) or has no matching line.
pub(crate) fn lookup(path: &Path, entry: Entry<'_>) -> Option<Password> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "no password file");
            return None;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read password file, ignoring it");
            return None;
        }
    };
    if !metadata.is_file() {
        tracing::warn!(path = %path.display(), "password file is not a plain file, ignoring it");
        return None;
    }
    if group_or_world_accessible(&metadata) {
        tracing::warn!(
            path = %path.display(),
            "password file has group or world access, ignoring it; permissions should be u=rw (0600) or less"
        );
        return None;
    }
    let contents = match fs::read(path) {
        Ok(contents) => contents,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read password file, ignoring it");
            return None;
        }
    };
    let Ok(contents) = String::from_utf8(contents) else {
        tracing::warn!(path = %path.display(), "password file is not UTF-8, ignoring it");
        return None;
    };
    let found = find(&contents, entry);
    if found.is_some() {
        tracing::debug!(path = %path.display(), "password found in password file");
    }
    found
}

#[cfg(unix)]
fn group_or_world_accessible(metadata: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o077 != 0
}

#[cfg(not(unix))]
fn group_or_world_accessible(_metadata: &fs::Metadata) -> bool {
    false
}

/// The password of the first line of `contents` matching `entry`. As in libpq, that line wins
/// even when its password is empty, which means no password: later lines are not looked at.
pub(crate) fn find(contents: &str, entry: Entry<'_>) -> Option<Password> {
    let port = entry.port.to_string();
    let wanted = [entry.host, port.as_str(), entry.dbname, entry.user];
    contents
        .split('\n')
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            // libpq strips every trailing carriage return (pg_strip_crlf).
            let mut rest = line.trim_end_matches('\r');
            for want in wanted {
                rest = match_field(rest, want)?;
            }
            Some(unescape_last(rest))
        })
        .filter(|password| !password.is_empty())
        .map(Password::new)
}

/// Matches one `:`-terminated field at the start of `line` against `want`; returns the text after
/// the `:`. A field that is exactly `*` matches anything. As in libpq's `pwdfMatchesString`, a
/// `:` ends the field only once all of `want` has matched: before that, an unescaped `:` matches
/// a `:` in `want` like any other character.
fn match_field<'a>(line: &'a str, want: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let mut want = want.chars().peekable();
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        let (c, escaped) = if c == '\\' {
            match chars.next() {
                Some((_, next)) => (next, true),
                None => return None,
            }
        } else {
            (c, false)
        };
        if c == ':' && !escaped && want.peek().is_none() {
            return line.get(i + 1..);
        }
        if want.next() != Some(c) {
            return None;
        }
    }
    None
}

/// The password field: up to the next unescaped `:` or the end, with escapes removed.
fn unescape_last(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: Entry<'static> = Entry {
        host: "db.example",
        port: 5432,
        dbname: "app",
        user: "alice",
    };

    fn found(contents: &str, entry: Entry<'_>) -> Option<String> {
        find(contents, entry).map(|p| p.expose().to_owned())
    }

    #[test]
    fn first_matching_line_wins() {
        let file = "\
# comment:*:*:*:nope
other:5432:app:alice:wrong
db.example:5432:app:alice:right
*:*:*:*:fallback
";
        assert_eq!(found(file, ENTRY).as_deref(), Some("right"));
        let bob = Entry {
            user: "bob",
            ..ENTRY
        };
        assert_eq!(found(file, bob).as_deref(), Some("fallback"));
    }

    #[test]
    fn wildcards_and_escapes() {
        assert_eq!(found("*:*:app:alice:pw", ENTRY).as_deref(), Some("pw"));
        assert_eq!(found("*:5433:*:*:pw", ENTRY), None);
        let colon_user = Entry {
            user: "a:b\\c",
            ..ENTRY
        };
        assert_eq!(
            found("*:*:*:a\\:b\\\\c:p\\:w\\\\d", colon_user).as_deref(),
            Some("p:w\\d")
        );
        // As in libpq, an unescaped colon matches a colon of the value looked up.
        let colon = Entry {
            user: "a:b",
            ..ENTRY
        };
        assert_eq!(found("*:*:*:a:b:pw", colon).as_deref(), Some("pw"));
        assert_eq!(found("*:*:*:a:b:pw", ENTRY), None);
        // An escaped `*` is a literal star, not a wildcard.
        assert_eq!(found("\\*:*:*:*:pw", ENTRY), None);
        let star = Entry { host: "*", ..ENTRY };
        assert_eq!(found("\\*:*:*:*:pw", star).as_deref(), Some("pw"));
        // The password ends at an unescaped colon.
        assert_eq!(found("*:*:*:*:pw:extra", ENTRY).as_deref(), Some("pw"));
        // CRLF line endings; libpq strips every trailing carriage return.
        assert_eq!(found("*:*:*:*:pw\r\n", ENTRY).as_deref(), Some("pw"));
        assert_eq!(found("*:*:*:*:pw\r\r\r\n", ENTRY).as_deref(), Some("pw"));
        assert_eq!(found("*:*:*:*:pw\\\r\n", ENTRY).as_deref(), Some("pw\\"));
    }

    #[test]
    fn a_matching_line_with_an_empty_password_ends_the_lookup() {
        // libpq takes the first matching line and then treats its empty password as none; a
        // later line must not supply one (found by the `pgpass` fuzz target).
        let file = "*:*:*:*::ignored\n*:*:*:*:later\n";
        assert_eq!(found(file, ENTRY), None);
        assert_eq!(found("*:*:*:*:\n*:*:*:*:later\n", ENTRY), None);
        // A line that does not match is passed over, empty password or not.
        assert_eq!(
            found("other:*:*:*:\n*:*:*:*:later\n", ENTRY).as_deref(),
            Some("later")
        );
    }

    #[test]
    fn short_or_empty_lines_do_not_match() {
        assert_eq!(found("db.example:5432:app:alice", ENTRY), None);
        assert_eq!(found("db.example:5432:app", ENTRY), None);
        assert_eq!(found("", ENTRY), None);
        assert_eq!(found("*:*:*:*:", ENTRY), None);
        // Prefixes do not match.
        assert_eq!(found("db:5432:app:alice:pw", ENTRY), None);
        assert_eq!(found("db.example.org:5432:app:alice:pw", ENTRY), None);
    }

    #[cfg(unix)]
    #[test]
    fn file_permissions_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        fs::write(&path, "*:*:*:*:secret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&path, ENTRY).unwrap().expose(), "secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(lookup(&path, ENTRY).is_none());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        assert!(lookup(&path, ENTRY).is_none());
        assert!(lookup(&dir.path().join("missing"), ENTRY).is_none());
        assert!(lookup(dir.path(), ENTRY).is_none());
    }
}
