//! Fuzz target `pgpass`: arbitrary password files and connections into the `.pgpass` parser
//! (`config/pgpass.rs`), checked against libpq's own algorithm, re-implemented here from
//! `passwordFromFile` and `pwdfMatchesString` in PostgreSQL's `fe-connect.c`: byte by byte,
//! first matching line wins, `*:` matches any field, `\` escapes the next byte, trailing
//! carriage returns and newlines are stripped, `#` lines are comments, and an empty password is
//! no password (libpq drops it after the lookup).
//!
//! Input: a 2-byte port, then host, database and user, each ended by a NUL byte, then the file's
//! contents (all taken as UTF-8, invalid sequences replaced). A file holding a NUL byte is only
//! run, not compared: libpq reads lines as C strings and stops at a NUL. Allocation budget:
//! 8 bytes per input byte plus 4 KiB.
//! Format: <https://www.postgresql.org/docs/current/libpq-pgpass.html>.

#![no_main]

use blueshift_decoder::fuzzing::pgpass_find;
use blueshift_decoder_fuzz::alloc::{bounded, Budget};
use libfuzzer_sys::fuzz_target;

const BUDGET: Budget = Budget {
    per_input_byte: 8,
    fixed: 4096,
};

fuzz_target!(|data: &[u8]| {
    bounded(data.len(), BUDGET, || run(data));
});

fn run(data: &[u8]) {
    let Some((port, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let port = u16::from_be_bytes(*port);
    let mut parts = rest.splitn(4, |b| *b == 0);
    let (Some(host), Some(dbname), Some(user), Some(contents)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (host, dbname, user, contents) = (text(host), text(dbname), text(user), text(contents));
    let found = pgpass_find(&contents, &host, port, &dbname, &user);
    if let Some(password) = &found {
        assert_eq!(format!("{password:?}"), "***");
        assert_eq!(password.to_string(), "***");
    }
    if contents.contains('\0') {
        return;
    }
    let port = port.to_string();
    let tokens = [
        host.as_bytes(),
        port.as_bytes(),
        dbname.as_bytes(),
        user.as_bytes(),
    ];
    let libpq = password_from_file(contents.as_bytes(), tokens).filter(|p| !p.is_empty());
    assert_eq!(
        found.as_ref().map(|p| p.expose().as_bytes()),
        libpq.as_deref(),
        "blueshift and libpq disagree on the password for host {host:?} port {port} \
         database {dbname:?} user {user:?} in {contents:?}"
    );
}

/// libpq's `passwordFromFile`, after the file is open: the password of the first matching line,
/// de-escaped (possibly empty).
fn password_from_file(contents: &[u8], tokens: [&[u8]; 4]) -> Option<Vec<u8>> {
    for line in contents.split(|b| *b == b'\n') {
        if line.first() == Some(&b'#') {
            continue;
        }
        // pg_strip_crlf
        let mut t = line;
        while let [rest @ .., b'\r' | b'\n'] = t {
            t = rest;
        }
        if t.is_empty() {
            continue;
        }
        let mut rest = Some(t);
        for token in tokens {
            rest = rest.and_then(|r| pwdf_matches_string(r, token));
        }
        let Some(field) = rest else {
            continue;
        };
        let mut password = Vec::new();
        let mut i = 0;
        while i < field.len() && field[i] != b':' {
            if field[i] == b'\\' && i + 1 < field.len() {
                i += 1;
            }
            password.push(field[i]);
            i += 1;
        }
        return Some(password);
    }
    None
}

/// libpq's `pwdfMatchesString`: the rest of the line after the field, if the field matches.
fn pwdf_matches_string<'a>(buf: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
    if buf.starts_with(b"*:") {
        return Some(&buf[2..]);
    }
    let (mut i, mut j) = (0, 0);
    let mut bslash = false;
    while i < buf.len() {
        if buf[i] == b'\\' && !bslash {
            i += 1;
            bslash = true;
        }
        // C reads the string's NUL when a backslash ends it.
        let c = buf.get(i).copied().unwrap_or(0);
        if c == b':' && j == token.len() && !bslash {
            return Some(&buf[i + 1..]);
        }
        bslash = false;
        if j == token.len() || c != token[j] {
            return None;
        }
        i += 1;
        j += 1;
    }
    None
}
