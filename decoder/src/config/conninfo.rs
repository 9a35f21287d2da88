//! Splitting a libpq connection string into `(keyword, value)` pairs: the URI form
//! (`postgresql://user:password@host:port/dbname?key=value`) and the `key=value` form.
//!
//! Implements the syntax of
//! <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>. What the
//! keywords mean is [`super`]'s business; this module only tokenizes and percent-decodes.
//!
//! Nothing here puts a value into an error: a value may be a password. A keyword is named in an
//! error only when it is one of libpq's keywords (see [`Keyword`]), because in a malformed string
//! such as `password=two words` the "keyword" `words` is half of a password.

use std::fmt;

use super::ConfigError;

/// The URI prefixes libpq accepts.
const URI_PREFIXES: [&str; 2] = ["postgresql://", "postgres://"];

/// libpq's connection keywords (`PQconndefaults`), used only to decide whether a word may be
/// echoed in an error message.
const LIBPQ_KEYWORDS: &[&str] = &[
    "application_name",
    "channel_binding",
    "client_encoding",
    "connect_timeout",
    "dbname",
    "fallback_application_name",
    "gssdelegation",
    "gssencmode",
    "gsslib",
    "host",
    "hostaddr",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "krbsrvname",
    "load_balance_hosts",
    "max_protocol_version",
    "min_protocol_version",
    "options",
    "passfile",
    "password",
    "port",
    "replication",
    "require_auth",
    "requirepeer",
    "service",
    "sslcert",
    "sslcertmode",
    "sslcompression",
    "sslcrl",
    "sslcrldir",
    "sslkey",
    "sslmode",
    "sslnegotiation",
    "sslpassword",
    "sslrootcert",
    "sslsni",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "target_session_attrs",
    "tcp_user_timeout",
    "user",
];

/// A word found where a keyword belongs, safe to print: libpq keywords are shown; another word
/// is shown only when the caller knows it cannot be a fragment of a password ([`Keyword::shown`])
/// and it looks like a keyword, else only by its byte offset.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyword {
    known: Option<&'static str>,
    shown: Option<String>,
    offset: usize,
}

impl Keyword {
    pub(crate) fn new(word: &str, offset: usize) -> Keyword {
        Keyword {
            known: LIBPQ_KEYWORDS.iter().copied().find(|k| *k == word),
            shown: None,
            offset,
        }
    }

    /// A word that stands where a keyword is expected, not right after a password: shown when it
    /// is keyword-shaped (a letter, then letters, digits and `_`, at most 63 bytes).
    pub(crate) fn shown(word: &str, offset: usize) -> Keyword {
        let shaped = word.len() <= 63
            && word.starts_with(|c: char| c.is_ascii_alphabetic())
            && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        Keyword {
            shown: shaped.then(|| word.to_owned()),
            ..Keyword::new(word, offset)
        }
    }

    /// The keyword when it is one of libpq's.
    pub(crate) fn known(&self) -> Option<&'static str> {
        self.known
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.known, &self.shown) {
            (Some(k), _) => write!(f, "\"{k}\""),
            (None, Some(word)) => write!(f, "\"{word}\" (not a libpq keyword)"),
            (None, None) => write!(f, "at byte {} (not a libpq keyword)", self.offset),
        }
    }
}

impl fmt::Debug for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One `keyword = value` setting, in the order written.
pub(crate) struct Setting {
    pub(crate) key: String,
    /// Where the keyword starts in the connection string (for error messages).
    pub(crate) offset: usize,
    pub(crate) value: String,
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the value: it may be a password.
        f.debug_struct("Setting")
            .field("key", &Keyword::new(&self.key, self.offset))
            .finish()
    }
}

/// Splits either form of connection string. An empty string gives no settings.
pub(crate) fn parse(conninfo: &str) -> Result<Vec<Setting>, ConfigError> {
    for prefix in URI_PREFIXES {
        if let Some(rest) = conninfo.strip_prefix(prefix) {
            return parse_uri(rest, prefix.len());
        }
    }
    parse_key_value(conninfo)
}

/// `key = value key2 = 'quoted \' value'`.
fn parse_key_value(s: &str) -> Result<Vec<Setting>, ConfigError> {
    let mut settings = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(key_start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(ConfigError::MissingEquals {
                key: Keyword::new(&key, key_start),
            });
        }
        if key.is_empty() {
            return Err(ConfigError::MissingKeyword { offset: key_start });
        }
        // Like libpq, blanks after `=` are skipped, so `host= port=1` sets host to "port=1".
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(ConfigError::UnterminatedQuote {
                    key: Keyword::new(&key, key_start),
                });
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        settings.push(Setting {
            key,
            offset: key_start,
            value,
        });
    }
    Ok(settings)
}

/// `[user[:password]@][host][:port][/dbname][?key=value&...]`, after the scheme.
fn parse_uri(rest: &str, base: usize) -> Result<Vec<Setting>, ConfigError> {
    let mut settings = Vec::new();
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    let query_offset = base + main.len() + 1;
    let (authority, path) = match main.split_once('/') {
        Some((authority, path)) => (authority, Some(path)),
        None => (main, None),
    };
    let path_offset = base + authority.len() + 1;

    // libpq looks for '@' before the first '/': a password with '@' or '/' must be
    // percent-encoded.
    let hostspec = match authority.split_once('@') {
        Some((userinfo, hostspec)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            push_decoded(&mut settings, "user", base, user, UriPart::User)?;
            if let Some(password) = password {
                push_decoded(&mut settings, "password", base, password, UriPart::Password)?;
            }
            (hostspec, base + userinfo.len() + 1)
        }
        None => (authority, base),
    };
    parse_hostspec(&mut settings, hostspec.0, hostspec.1)?;

    if let Some(path) = path {
        push_decoded(&mut settings, "dbname", path_offset, path, UriPart::Dbname)?;
    }

    if let Some(query) = query {
        let mut offset = query_offset;
        for pair in query.split('&') {
            if !pair.is_empty() {
                let (key, value) =
                    pair.split_once('=')
                        .ok_or_else(|| ConfigError::MissingEquals {
                            key: Keyword::new(pair, offset),
                        })?;
                let key = percent_decode(key).map_err(|problem| ConfigError::Uri {
                    part: UriPart::QueryKey,
                    problem,
                })?;
                push_decoded(&mut settings, &key, offset, value, UriPart::QueryValue)?;
            }
            offset += pair.len() + 1;
        }
    }
    Ok(settings)
}

/// A comma-separated list of `host`, `host:port`, `[v6addr]`, `[v6addr]:port` (each may be
/// empty): one `host` and one `port` setting with the lists, as libpq makes them.
fn parse_hostspec(
    settings: &mut Vec<Setting>,
    spec: &str,
    offset: usize,
) -> Result<(), ConfigError> {
    if spec.is_empty() {
        return Ok(());
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for entry in super::hosts::split_uri_hosts(spec) {
        let (host, port) = parse_one_host(entry)?;
        hosts.push(host);
        ports.push(match port {
            Some(port) => percent_decode(port).map_err(|problem| ConfigError::Uri {
                part: UriPart::Port,
                problem,
            })?,
            None => String::new(),
        });
    }
    let host = Some(hosts.join(",")).filter(|_| hosts.iter().any(|h| !h.is_empty()));
    let port = ports.iter().any(|p| !p.is_empty()).then(|| ports.join(","));
    if let Some(host) = host {
        settings.push(Setting {
            key: "host".to_owned(),
            offset,
            value: host,
        });
    }
    if let Some(port) = port {
        settings.push(Setting {
            key: "port".to_owned(),
            offset,
            value: port,
        });
    }
    Ok(())
}

/// One `host[:port]` or `[v6addr][:port]` of a URI's host list: (host, port).
fn parse_one_host(spec: &str) -> Result<(String, Option<&str>), ConfigError> {
    if spec.is_empty() {
        return Ok((String::new(), None));
    }
    if let Some(bracketed) = spec.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(ConfigError::Uri {
            part: UriPart::Host,
            problem: UriProblem::UnclosedBracket,
        })?;
        if host.is_empty() {
            return Err(ConfigError::Uri {
                part: UriPart::Host,
                problem: UriProblem::EmptyBrackets,
            });
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(ConfigError::Uri {
                part: UriPart::Host,
                problem: UriProblem::AfterBracket,
            })?),
        };
        // An IPv6 address is not percent-decoded by libpq either.
        return Ok((host.to_owned(), port));
    }
    let (host, port) = match spec.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (spec, None),
    };
    let host = percent_decode(host).map_err(|problem| ConfigError::Uri {
        part: UriPart::Host,
        problem,
    })?;
    Ok((host, port))
}

fn push_decoded(
    settings: &mut Vec<Setting>,
    key: &str,
    offset: usize,
    raw: &str,
    part: UriPart,
) -> Result<(), ConfigError> {
    let value = percent_decode(raw).map_err(|problem| ConfigError::Uri { part, problem })?;
    if !value.is_empty() {
        settings.push(Setting {
            key: key.to_owned(),
            offset,
            value,
        });
    }
    Ok(())
}

/// Decodes `%XX` escapes; the result must be UTF-8 without NUL.
fn percent_decode(s: &str) -> Result<String, UriProblem> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_value);
            let lo = bytes.next().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    let decoded = (hi << 4) | lo;
                    if decoded == 0 {
                        return Err(UriProblem::EncodedNul);
                    }
                    out.push(decoded);
                }
                _ => return Err(UriProblem::BadPercentEncoding),
            }
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| UriProblem::NotUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The part of a connection URI an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriPart {
    /// The user name before `@`.
    User,
    /// The password between `:` and `@`.
    Password,
    /// The host and port.
    Host,
    /// The port after `:`.
    Port,
    /// The database name after `/`.
    Dbname,
    /// A parameter name after `?` or `&`.
    QueryKey,
    /// A parameter value.
    QueryValue,
}

impl fmt::Display for UriPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriPart::User => "the user name",
            UriPart::Password => "the password",
            UriPart::Host => "the host",
            UriPart::Port => "the port",
            UriPart::Dbname => "the database name",
            UriPart::QueryKey => "a query parameter name",
            UriPart::QueryValue => "a query parameter value",
        })
    }
}

/// What is wrong with a part of a connection URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriProblem {
    /// `%` not followed by two hexadecimal digits.
    BadPercentEncoding,
    /// `%00`.
    EncodedNul,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// `[` without `]`.
    UnclosedBracket,
    /// `[]`.
    EmptyBrackets,
    /// Something other than `:port` after `]`.
    AfterBracket,
}

impl fmt::Display for UriProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriProblem::BadPercentEncoding => {
                "'%' must be followed by two hexadecimal digits — write a literal '%' as %25"
            }
            UriProblem::EncodedNul => "%00 is not allowed",
            UriProblem::NotUtf8 => "the percent-decoded text is not UTF-8",
            UriProblem::UnclosedBracket => {
                "'[' without a closing ']' — write IPv6 addresses as [::1]"
            }
            UriProblem::EmptyBrackets => "'[]' holds no address",
            UriProblem::AfterBracket => "only ':port' may follow ']'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse(s)
            .unwrap()
            .into_iter()
            .map(|s| (s.key, s.value))
            .collect()
    }

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_value_form() {
        assert_eq!(
            pairs("host=localhost port = 5433  dbname='my db' password='it\\'s \\\\ x'"),
            kv(&[
                ("host", "localhost"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("password", "it's \\ x"),
            ])
        );
        assert_eq!(pairs(""), kv(&[]));
        assert_eq!(pairs("   "), kv(&[]));
        assert_eq!(pairs("user=''"), kv(&[("user", "")]));
        assert_eq!(pairs("user=a\\ b"), kv(&[("user", "a b")]));
        // libpq skips blanks after '=' (so the next word is the value).
        assert_eq!(pairs("host= port=1"), kv(&[("host", "port=1")]));
    }

    #[test]
    fn key_value_errors() {
        assert!(matches!(
            parse("host"),
            Err(ConfigError::MissingEquals { .. })
        ));
        assert!(matches!(
            parse("=x"),
            Err(ConfigError::MissingKeyword { .. })
        ));
        assert!(matches!(
            parse("password='abc"),
            Err(ConfigError::UnterminatedQuote { .. })
        ));
        assert!(matches!(
            parse("password='abc\\"),
            Err(ConfigError::UnterminatedQuote { .. })
        ));
    }

    #[test]
    fn uri_form() {
        assert_eq!(
            pairs("postgresql://al%20ice:p%40ss@db.example:5433/my%2Fdb?application_name=x&sslmode=disable"),
            kv(&[
                ("user", "al ice"),
                ("password", "p@ss"),
                ("host", "db.example"),
                ("port", "5433"),
                ("dbname", "my/db"),
                ("application_name", "x"),
                ("sslmode", "disable"),
            ])
        );
        assert_eq!(
            pairs("postgres://[::1]:5432/db"),
            kv(&[("host", "::1"), ("port", "5432"), ("dbname", "db")])
        );
        assert_eq!(
            pairs("postgres://[fe80::1%25eth0]"),
            kv(&[("host", "fe80::1%25eth0")])
        );
        assert_eq!(pairs("postgresql://"), kv(&[]));
        assert_eq!(pairs("postgresql:///db"), kv(&[("dbname", "db")]));
        assert_eq!(
            pairs("postgresql://%2Fvar%2Frun%2Fpostgresql/db"),
            kv(&[("host", "/var/run/postgresql"), ("dbname", "db")])
        );
        assert_eq!(
            pairs("postgresql:///db?host=/socket/dir&port=6000"),
            kv(&[("dbname", "db"), ("host", "/socket/dir"), ("port", "6000")])
        );
        assert_eq!(
            pairs("postgresql://u@h"),
            kv(&[("user", "u"), ("host", "h")])
        );
        assert_eq!(pairs("postgresql://:5433"), kv(&[("port", "5433")]));
    }

    #[test]
    fn uri_errors() {
        let err = |s: &str| parse(s).unwrap_err();
        assert!(matches!(
            err("postgresql://u:pa%zzss@h/"),
            ConfigError::Uri {
                part: UriPart::Password,
                problem: UriProblem::BadPercentEncoding
            }
        ));
        assert!(matches!(
            err("postgresql://u:pass%@h/"),
            ConfigError::Uri {
                problem: UriProblem::BadPercentEncoding,
                ..
            }
        ));
        assert!(matches!(
            err("postgresql://u@h/d%00b"),
            ConfigError::Uri {
                part: UriPart::Dbname,
                problem: UriProblem::EncodedNul
            }
        ));
        assert!(matches!(
            err("postgresql://u@h/%ff"),
            ConfigError::Uri {
                problem: UriProblem::NotUtf8,
                ..
            }
        ));
        assert!(matches!(
            err("postgresql://[::1/db"),
            ConfigError::Uri {
                problem: UriProblem::UnclosedBracket,
                ..
            }
        ));
        assert!(matches!(err("postgresql://[]/db"), ConfigError::Uri { .. }));
        assert!(matches!(
            err("postgresql://[::1]x/db"),
            ConfigError::Uri { .. }
        ));
        let hosts = parse("postgresql://a:1,[::1]:2,b/db").unwrap();
        let kv: Vec<(&str, &str)> = hosts
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(kv[0], ("host", "a,::1,b"));
        assert_eq!(kv[1], ("port", "1,2,"));
        assert!(matches!(
            err("postgresql://h/db?sslmode"),
            ConfigError::MissingEquals { .. }
        ));
    }

    #[test]
    fn keyword_redaction() {
        assert_eq!(Keyword::new("host", 3).to_string(), "\"host\"");
        assert_eq!(
            Keyword::new("hunter2", 17).to_string(),
            "at byte 17 (not a libpq keyword)"
        );
    }
}
