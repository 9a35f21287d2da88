//! Fuzz target `conninfo`: connection strings in both of libpq's forms (`key=value` and
//! `postgresql://` URIs) into the tokenizer (`config/conninfo.rs`) and the resolution into a
//! `ConnectConfig` (`config.rs`), with `PG*` variables from a few fixed environments.
//!
//! The first byte's bit 0 picks the mode, its bits 1–3 the environment.
//!
//! - Free mode: the rest is the connection string. Whatever the tokenizer accepts must come
//!   back unchanged after being written out again in `key='value'` form and, when every value is
//!   non-empty, as a URI query string with every byte percent-encoded; the `Debug` and `Display`
//!   of a configuration with a password must not change when only the password does.
//! - Password mode: the rest builds a connection string (NUL-separated pieces: the form, then
//!   keyword choices and raw values) in which every password is a canary; `PGPASSWORD` may hold
//!   another. No error and no configuration may print either canary, in `Display` or `Debug`,
//!   unless the tokenizer put it into a setting that is not a password (a raw piece can swallow
//!   it, as `password=two words` swallows half a password: that is the user's string, not a
//!   leak).
//!
//! Allocation budget: 256 bytes per input byte plus 16 KiB (see `BUDGET`).
//! Format: <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>.

#![no_main]

use blueshift_decoder::config::{ConfigError, ConnectConfig, Password};
use blueshift_decoder::fuzzing::conninfo_settings;
use blueshift_decoder_fuzz::alloc::{bounded, outside, Budget};
use libfuzzer_sys::fuzz_target;

// A comma makes a host: a 24-byte `OsString` slot in a vector that grows by doubling (old and
// new buffers live at once); then `resolve` holds the parsed hosts and the (host, port) pairs
// built from them at once, each in a doubling vector, and each empty host its own copy of the
// default socket folder — a list of N empty hosts holds up to ~200 × N bytes at its peak
// (an hour's campaign found 140 KiB from 1255 bytes). Linear in the input, which is all the
// budget is there to check: an unbounded reservation from a declared length still fails it.
const BUDGET: Budget = Budget {
    per_input_byte: 256,
    fixed: 16 * 1024,
};

/// The password of password mode: characters that no message of blueshift's contains.
const CANARY: &str = "pw\u{3a9}7\u{2603}canary";
/// The password `PGPASSWORD` holds in some environments.
const ENV_CANARY: &str = "env\u{3a9}8\u{2603}canary";

/// Keywords password mode chooses from: libpq's, blueshift's unsupported ones, and junk.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "application_name",
    "fallback_application_name",
    "options",
    "connect_timeout",
    "sslmode",
    "replication",
    "service",
    "client_encoding",
    "target_session_attrs",
    "keepalives",
    "nonsense",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    bounded(data.len(), BUDGET, || {
        let env = environment(selector >> 1);
        if selector & 1 == 0 {
            free(&String::from_utf8_lossy(rest), &env);
        } else {
            passwords(rest, &env);
        }
    });
});

/// The variables of environment `n` (of 8).
fn environment(n: u8) -> Vec<(&'static str, String)> {
    let mut env = vec![("HOME", "/home/fuzz".to_owned())];
    if n & 1 != 0 {
        env.push(("PGPASSWORD", ENV_CANARY.to_owned()));
    }
    if n & 2 != 0 {
        env.extend([
            ("PGHOST", "db.example".to_owned()),
            ("PGPORT", "6543".to_owned()),
            ("PGUSER", "alice".to_owned()),
            ("PGDATABASE", "app".to_owned()),
        ]);
    }
    if n & 4 != 0 {
        env.extend([
            ("PGSSLMODE", "verify-full".to_owned()),
            ("PGCONNECT_TIMEOUT", "soon".to_owned()),
        ]);
    }
    env
}

fn resolve(conninfo: &str, env: &[(&str, String)]) -> Result<ConnectConfig, ConfigError> {
    ConnectConfig::from_conninfo_with_env(conninfo, |name| {
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
    })
}

/// Free mode: the tokenizer's round trips, and output that does not depend on the password.
fn free(conninfo: &str, env: &[(&str, String)]) {
    if let Ok(settings) = conninfo_settings(conninfo) {
        check_key_value_round_trip(&settings);
        check_uri_round_trip(&settings);
    }
    let resolved = resolve(conninfo, env);
    // Formatting what came back is the harness's check, outside the budget (see `outside`).
    outside(|| match &resolved {
        Ok(config) if config.password().is_some() => {
            let mut other = config.clone();
            other.set_password(Password::new("something else entirely"));
            assert_eq!(format!("{config:?}"), format!("{other:?}"));
            assert_eq!(config.to_string(), other.to_string());
        }
        Ok(config) => {
            let _ = format!("{config:?} {config}");
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _ = format!("{e:?}");
        }
    });
}

/// Settings written out as `key='value' …` parse back to themselves (keys that cannot be
/// written in that form are left out of the check).
fn check_key_value_round_trip(settings: &[(String, String)]) {
    let writable = |k: &str| !k.is_empty() && !k.contains(|c: char| c == '=' || c.is_whitespace());
    if !settings.iter().all(|(k, _)| writable(k)) {
        return;
    }
    // A leading blank keeps a first key that looks like a URI scheme from being taken for one.
    let mut text = String::from(" ");
    for (key, value) in settings {
        text.push_str(key);
        text.push_str("='");
        for c in value.chars() {
            if c == '\'' || c == '\\' {
                text.push('\\');
            }
            text.push(c);
        }
        text.push_str("' ");
    }
    let again = conninfo_settings(&text).expect("a written-out connection string parses");
    assert_eq!(again, settings, "key=value round trip of {text:?}");
}

/// Settings with non-empty values written out as a URI query string parse back to themselves.
fn check_uri_round_trip(settings: &[(String, String)]) {
    let encodable = |s: &str| !s.contains('\0');
    if !settings
        .iter()
        .all(|(k, v)| !v.is_empty() && encodable(k) && encodable(v))
    {
        return;
    }
    let encode = |s: &str| -> String { s.bytes().map(|b| format!("%{b:02X}")).collect() };
    let query: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let text = format!("postgresql://?{}", query.join("&"));
    let again = conninfo_settings(&text).expect("a percent-encoded URI parses");
    assert_eq!(again, settings, "URI round trip of {text:?}");
}

/// Password mode: builds a connection string whose passwords are the canary.
fn passwords(data: &[u8], env: &[(&str, String)]) {
    let mut pieces = data.split(|b| *b == 0);
    let form = pieces.next().and_then(|p| p.first().copied()).unwrap_or(0);
    let raw = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    let mut conninfo = String::new();
    if form & 1 == 0 {
        while let Some(choice) = pieces.next() {
            let key = KEYWORDS[usize::from(choice.first().copied().unwrap_or(0)) % KEYWORDS.len()];
            let value = pieces.next().unwrap_or_default();
            conninfo.push_str(key);
            conninfo.push('=');
            if key == "password" {
                conninfo.push_str(&format!("'{CANARY}'"));
            } else {
                conninfo.push_str(&raw(value));
            }
            conninfo.push(' ');
        }
    } else {
        // postgresql://user:canary@host/dbname?key=value&…
        let mut next = || raw(pieces.next().unwrap_or_default());
        let (user, host, dbname) = (next(), next(), next());
        let canary: String = CANARY.bytes().map(|b| format!("%{b:02X}")).collect();
        conninfo = format!("postgresql://{user}:{canary}@{host}/{dbname}?");
        while let Some(choice) = pieces.next() {
            let key = KEYWORDS[usize::from(choice.first().copied().unwrap_or(0)) % KEYWORDS.len()];
            let value = pieces.next().unwrap_or_default();
            let value = if key == "password" {
                canary.clone()
            } else {
                raw(value)
            };
            conninfo.push_str(&format!("{key}={value}&"));
        }
    }
    // A canary the tokenizer put into a setting other than the password is the string's own
    // text, which errors about that setting may quote.
    let swallowed = conninfo_settings(&conninfo).is_ok_and(|settings| {
        settings
            .iter()
            .any(|(k, v)| k != "password" && (v.contains(CANARY) || v.contains(ENV_CANARY)))
    });
    let resolved = resolve(&conninfo, env);
    if swallowed {
        return;
    }
    // Formatting what came back is the harness's check, outside the budget (see `outside`).
    outside(|| {
        let texts = match &resolved {
            Ok(config) => vec![config.to_string(), format!("{config:?}")],
            Err(e) => vec![e.to_string(), format!("{e:?}")],
        };
        for text in texts {
            for canary in [CANARY, ENV_CANARY] {
                assert!(
                    !text.contains(canary),
                    "a password is printed: {text:?} (connection string {conninfo:?})"
                );
            }
        }
    });
}
