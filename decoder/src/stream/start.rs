//! `START_REPLICATION SLOT ... LOGICAL ...` with `pgoutput` options, checked against the
//! server's version before anything is sent.
//!
//! The options are those of
//! <https://www.postgresql.org/docs/current/protocol-logical-replication.html#PROTOCOL-LOGICAL-REPLICATION-PARAMS>:
//! protocol version 1 (PostgreSQL 10), 2 (14: streaming of in-progress transactions), 3 (15:
//! two-phase) and 4 (16: parallel streaming); `binary` and `messages` from 14; `origin` from 16.

use std::time::Duration;

use crate::connection::{validate_slot_name, ReplicationError};
use crate::Lsn;

/// Highest `pgoutput` protocol version known.
pub const MAX_PROTO_VERSION: u32 = 4;

/// PostgreSQL's `NAMEDATALEN - 1`.
const MAX_PUBLICATION_NAME_LEN: usize = 63;

/// Default interval between standby status updates.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Streaming of large in-progress transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streaming {
    /// Transactions arrive whole, at commit.
    #[default]
    Off,
    /// In-progress transactions arrive in chunks (protocol 2+, PostgreSQL 14+).
    On,
    /// As `On`, and the chunks may be applied in parallel (protocol 4, PostgreSQL 16+).
    Parallel,
}

/// Which changes to send by their replication origin (PostgreSQL 16+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginFilter {
    /// All changes.
    Any,
    /// Only changes without an origin (not themselves replicated).
    None,
}

/// Options of `START_REPLICATION` for `pgoutput`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartOptions {
    /// The publications to stream (at least one).
    pub publication_names: Vec<String>,
    /// The `pgoutput` protocol version; `None` picks the best the server supports
    /// (14 → 2, 15 → 3, 16+ → 4).
    pub proto_version: Option<u32>,
    /// Column values in binary rather than text (PostgreSQL 14+).
    pub binary: bool,
    /// Send `pg_logical_emit_message` messages (PostgreSQL 14+).
    pub messages: bool,
    /// Streaming of in-progress transactions.
    pub streaming: Streaming,
    /// Filter by origin (PostgreSQL 16+).
    pub origin: Option<OriginFilter>,
    /// Send prepared transactions at `PREPARE` (protocol 3+, PostgreSQL 15+).
    pub two_phase: bool,
}

/// Options of the standby status updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusOptions {
    /// Time between updates when nothing asks for one sooner. Keep it well below the server's
    /// `wal_sender_timeout` (60 s by default).
    pub interval: Duration,
}

impl Default for StatusOptions {
    fn default() -> Self {
        StatusOptions {
            interval: DEFAULT_STATUS_INTERVAL,
        }
    }
}

/// The shortest interval [`StatusOptions::within`] picks, however short the server's timeout.
const MIN_STATUS_INTERVAL: Duration = Duration::from_millis(100);

impl StatusOptions {
    /// These options with the interval shortened, when needed, to a third of the server's
    /// `wal_sender_timeout` (`None` or zero: the server never times out): the server ends a
    /// connection it has heard nothing from for that long, whatever the caller is busy with, so
    /// status must go out well inside it even when no keepalive asking for a reply gets read
    /// (a caller blocked by back-pressure reads nothing).
    pub fn within(self, wal_sender_timeout: Option<Duration>) -> StatusOptions {
        match wal_sender_timeout {
            Some(timeout) if !timeout.is_zero() => StatusOptions {
                interval: self.interval.min((timeout / 3).max(MIN_STATUS_INTERVAL)),
            },
            _ => self,
        }
    }

    pub(crate) fn check(&self) -> Result<(), ReplicationError> {
        if self.interval.is_zero() {
            return Err(ReplicationError::InvalidOption {
                problem: "the standby status interval must be longer than zero".to_owned(),
            });
        }
        Ok(())
    }
}

impl crate::connection::ReplicationConnection {
    /// The server's `wal_sender_timeout` (`SHOW` works on a replication connection); `None`
    /// when it is 0 (no timeout).
    pub async fn wal_sender_timeout(&mut self) -> Result<Option<Duration>, ReplicationError> {
        const COMMAND: &str = "SHOW wal_sender_timeout";
        let rows = self.simple_query(COMMAND).await?;
        let text = rows
            .first()
            .and_then(|r| r.get(0))
            .unwrap_or_default()
            .to_owned();
        let timeout = parse_setting_duration(&text).ok_or_else(|| {
            ReplicationError::from(crate::connection::ProtocolError::UnexpectedResult {
                command: COMMAND,
                problem: format!("unreadable value {text:?}"),
            })
        })?;
        Ok((!timeout.is_zero()).then_some(timeout))
    }
}

/// A time setting as `SHOW` prints it (`60s`, `500ms`, `1min`, `0`; a bare number is
/// milliseconds, the unit of `wal_sender_timeout`).
fn parse_setting_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_ms: u64 = match unit.trim() {
        "" | "ms" => 1,
        "us" => return Some(Duration::from_micros(n)),
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(unit_ms)?))
}

/// The best `pgoutput` protocol version a server of major version `major` supports.
pub fn max_proto_version(major: u32) -> u32 {
    match major {
        16.. => 4,
        15 => 3,
        14 => 2,
        _ => 1,
    }
}

/// The oldest major version supporting `pgoutput` protocol version `proto`.
fn min_major_for_proto(proto: u32) -> u32 {
    match proto {
        4 => 16,
        3 => 15,
        2 => 14,
        _ => 10,
    }
}

impl StartOptions {
    /// Options streaming `publications` with everything else at its default.
    pub fn new<I, S>(publications: I) -> StartOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StartOptions {
            publication_names: publications.into_iter().map(Into::into).collect(),
            ..StartOptions::default()
        }
    }

    /// Checks the options against a server of major version `major` and returns the protocol
    /// version that would be used.
    pub fn check(&self, major: u32) -> Result<u32, ReplicationError> {
        let unsupported =
            |what: String, fix: &'static str| Err(ReplicationError::Unsupported { what, fix });
        let max = max_proto_version(major);
        let proto = self.proto_version.unwrap_or(max);
        if !(1..=MAX_PROTO_VERSION).contains(&proto) {
            return Err(ReplicationError::InvalidOption {
                problem: format!(
                    "pgoutput protocol version {proto} does not exist — use 1 to {MAX_PROTO_VERSION}, or leave it unset"
                ),
            });
        }
        if proto > max {
            return unsupported(
                format!(
                    "pgoutput protocol version {proto} needs PostgreSQL {} or later, the server is {major}",
                    min_major_for_proto(proto)
                ),
                "leave proto_version unset to use the best version the server supports",
            );
        }
        match self.streaming {
            Streaming::Off => {}
            Streaming::On if proto < 2 => {
                return unsupported(
                    format!("streaming=on needs pgoutput protocol version 2 or later (PostgreSQL 14+), requested {proto} of a PostgreSQL {major} server"),
                    "use protocol version 2 or later, or streaming off",
                )
            }
            Streaming::On => {}
            Streaming::Parallel if proto < 4 => {
                return unsupported(
                    format!("streaming=parallel needs pgoutput protocol version 4 (PostgreSQL 16+), requested {proto} of a PostgreSQL {major} server"),
                    "use streaming=on, or protocol version 4 on PostgreSQL 16 or later",
                )
            }
            Streaming::Parallel => {}
        }
        if self.two_phase && proto < 3 {
            return unsupported(
                format!("two_phase needs pgoutput protocol version 3 or later (PostgreSQL 15+), requested {proto} of a PostgreSQL {major} server"),
                "use protocol version 3 or later, or turn two_phase off",
            );
        }
        if self.origin.is_some() && major < 16 {
            return unsupported(
                format!("the origin option needs PostgreSQL 16 or later, the server is {major}"),
                "leave origin unset and filter Origin messages on the client",
            );
        }
        if self.binary && major < 14 {
            return unsupported(
                format!("binary transfer needs PostgreSQL 14 or later, the server is {major}"),
                "turn binary off",
            );
        }
        if self.messages && major < 14 {
            return unsupported(
                format!(
                    "logical decoding messages need PostgreSQL 14 or later, the server is {major}"
                ),
                "turn messages off",
            );
        }
        if self.publication_names.is_empty() {
            return Err(ReplicationError::InvalidOption {
                problem: "at least one publication name is required".to_owned(),
            });
        }
        for name in &self.publication_names {
            if name.is_empty() || name.contains('\0') || name.len() > MAX_PUBLICATION_NAME_LEN {
                return Err(ReplicationError::InvalidOption {
                    problem: format!(
                        "invalid publication name {name:?}: it must be 1 to {MAX_PUBLICATION_NAME_LEN} bytes without NUL"
                    ),
                });
            }
        }
        Ok(proto)
    }

    /// The `START_REPLICATION` command, after [`StartOptions::check`].
    pub(crate) fn command(
        &self,
        slot: &str,
        start_lsn: Lsn,
        major: u32,
    ) -> Result<(String, u32), ReplicationError> {
        validate_slot_name(slot)?;
        let proto = self.check(major)?;
        let mut options = vec![
            format!("proto_version '{proto}'"),
            format!(
                "publication_names {}",
                quote_literal(&publication_list(&self.publication_names))
            ),
        ];
        if self.binary {
            options.push("binary 'true'".to_owned());
        }
        if self.messages {
            options.push("messages 'true'".to_owned());
        }
        match self.streaming {
            Streaming::Off => {}
            Streaming::On => options.push("streaming 'on'".to_owned()),
            Streaming::Parallel => options.push("streaming 'parallel'".to_owned()),
        }
        match self.origin {
            None => {}
            Some(OriginFilter::Any) => options.push("origin 'any'".to_owned()),
            Some(OriginFilter::None) => options.push("origin 'none'".to_owned()),
        }
        if self.two_phase {
            options.push("two_phase 'true'".to_owned());
        }
        let command = format!(
            "START_REPLICATION SLOT \"{slot}\" LOGICAL {start_lsn} ({})",
            options.join(", ")
        );
        Ok((command, proto))
    }
}

/// The publication names as pgoutput's list of identifiers: each double-quoted (so case and
/// punctuation survive), `"` doubled, separated by commas.
fn publication_list(names: &[String]) -> String {
    let mut list = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(&crate::ident::quote_ident(name));
    }
    list
}

/// A string literal of the replication grammar: single quotes, `'` doubled. The replication
/// scanner gives backslashes no meaning, so they stay as they are.
fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

impl std::fmt::Display for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Streaming::Off => "off",
            Streaming::On => "on",
            Streaming::Parallel => "parallel",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fits_inside_the_wal_sender_timeout() {
        let s = |secs| StatusOptions {
            interval: Duration::from_secs(secs),
        };
        assert_eq!(parse_setting_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_setting_duration("1min"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_setting_duration("500ms"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_setting_duration("250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_setting_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_setting_duration("5 fortnights"), None);
        assert_eq!(parse_setting_duration(""), None);
        // A third of the timeout, never longer than asked, never below the floor.
        assert_eq!(
            s(10).within(Some(Duration::from_secs(5))).interval,
            Duration::from_secs(5) / 3
        );
        assert_eq!(
            s(10).within(Some(Duration::from_secs(60))).interval,
            Duration::from_secs(10)
        );
        assert_eq!(
            s(1).within(Some(Duration::from_secs(60))).interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            s(10).within(Some(Duration::from_millis(30))).interval,
            MIN_STATUS_INTERVAL
        );
        assert_eq!(s(10).within(None).interval, Duration::from_secs(10));
        assert_eq!(
            s(10).within(Some(Duration::ZERO)).interval,
            Duration::from_secs(10)
        );
    }

    fn cmd(options: &StartOptions, major: u32) -> Result<String, ReplicationError> {
        options
            .command("slot_1", Lsn(0x16_B374_D848), major)
            .map(|(c, _)| c)
    }

    #[test]
    fn best_protocol_per_server() {
        assert_eq!(max_proto_version(13), 1);
        assert_eq!(max_proto_version(14), 2);
        assert_eq!(max_proto_version(15), 3);
        assert_eq!(max_proto_version(16), 4);
        assert_eq!(max_proto_version(18), 4);
        let options = StartOptions::new(["p"]);
        assert_eq!(options.check(14).unwrap(), 2);
        assert_eq!(options.check(15).unwrap(), 3);
        assert_eq!(options.check(17).unwrap(), 4);
    }

    #[test]
    fn command_text() {
        assert_eq!(
            cmd(&StartOptions::new(["p1"]), 15).unwrap(),
            "START_REPLICATION SLOT \"slot_1\" LOGICAL 16/B374D848 (proto_version '3', publication_names '\"p1\"')"
        );
        let all = StartOptions {
            publication_names: vec!["p1".into(), "p2".into()],
            proto_version: Some(4),
            binary: true,
            messages: true,
            streaming: Streaming::Parallel,
            origin: Some(OriginFilter::None),
            two_phase: true,
        };
        assert_eq!(
            cmd(&all, 16).unwrap(),
            "START_REPLICATION SLOT \"slot_1\" LOGICAL 16/B374D848 (proto_version '4', \
             publication_names '\"p1\",\"p2\"', binary 'true', messages 'true', \
             streaming 'parallel', origin 'none', two_phase 'true')"
        );
        let on = StartOptions {
            streaming: Streaming::On,
            origin: Some(OriginFilter::Any),
            ..StartOptions::new(["p"])
        };
        assert!(cmd(&on, 16)
            .unwrap()
            .ends_with("streaming 'on', origin 'any')"));
    }

    #[test]
    fn hostile_publication_names_are_quoted() {
        let names = [
            "we\"ird",
            "it's",
            "a,b",
            "back\\slash",
            " spaced ",
            "Upper",
            "'); DROP --",
        ];
        let command = cmd(&StartOptions::new(names), 16).unwrap();
        assert_eq!(
            command,
            "START_REPLICATION SLOT \"slot_1\" LOGICAL 16/B374D848 (proto_version '4', publication_names \
             '\"we\"\"ird\",\"it''s\",\"a,b\",\"back\\slash\",\" spaced \",\"Upper\",\"''); DROP --\"')"
        );
        for bad in ["", "x\0y", &"p".repeat(64)] {
            assert!(matches!(
                cmd(&StartOptions::new([bad]), 16),
                Err(ReplicationError::InvalidOption { .. })
            ));
        }
        assert!(matches!(
            cmd(&StartOptions::new(Vec::<String>::new()), 16),
            Err(ReplicationError::InvalidOption { .. })
        ));
    }

    #[test]
    fn invalid_slot_rejected() {
        assert!(matches!(
            StartOptions::new(["p"]).command("Bad-Slot", Lsn::INVALID, 16),
            Err(ReplicationError::InvalidSlotName { .. })
        ));
    }

    #[test]
    fn version_checks() {
        let unsupported = |options: StartOptions, major: u32| {
            let err = options.check(major).unwrap_err();
            assert!(
                matches!(err, ReplicationError::Unsupported { .. }),
                "{err:?}"
            );
            err.to_string()
        };
        let base = || StartOptions::new(["p"]);
        let msg = unsupported(
            StartOptions {
                proto_version: Some(4),
                ..base()
            },
            15,
        );
        assert!(msg.contains("PostgreSQL 16"), "{msg}");
        unsupported(
            StartOptions {
                proto_version: Some(3),
                ..base()
            },
            14,
        );
        unsupported(
            StartOptions {
                proto_version: Some(2),
                ..base()
            },
            13,
        );
        for bad in [0, 5] {
            assert!(matches!(
                StartOptions {
                    proto_version: Some(bad),
                    ..base()
                }
                .check(16),
                Err(ReplicationError::InvalidOption { .. })
            ));
        }
        let msg = unsupported(
            StartOptions {
                streaming: Streaming::Parallel,
                ..base()
            },
            15,
        );
        assert!(msg.contains("streaming=parallel"), "{msg}");
        unsupported(
            StartOptions {
                streaming: Streaming::Parallel,
                proto_version: Some(3),
                ..base()
            },
            16,
        );
        unsupported(
            StartOptions {
                streaming: Streaming::On,
                proto_version: Some(1),
                ..base()
            },
            16,
        );
        StartOptions {
            streaming: Streaming::On,
            ..base()
        }
        .check(14)
        .unwrap();
        let msg = unsupported(
            StartOptions {
                origin: Some(OriginFilter::Any),
                ..base()
            },
            15,
        );
        assert!(msg.contains("origin"), "{msg}");
        StartOptions {
            origin: Some(OriginFilter::None),
            ..base()
        }
        .check(16)
        .unwrap();
        let msg = unsupported(
            StartOptions {
                two_phase: true,
                ..base()
            },
            14,
        );
        assert!(msg.contains("two_phase"), "{msg}");
        unsupported(
            StartOptions {
                two_phase: true,
                proto_version: Some(2),
                ..base()
            },
            16,
        );
        StartOptions {
            two_phase: true,
            ..base()
        }
        .check(15)
        .unwrap();
        unsupported(
            StartOptions {
                binary: true,
                ..base()
            },
            13,
        );
        unsupported(
            StartOptions {
                messages: true,
                ..base()
            },
            13,
        );
        StartOptions {
            binary: true,
            messages: true,
            ..base()
        }
        .check(14)
        .unwrap();
    }

    #[test]
    fn status_interval_must_be_positive() {
        assert!(StatusOptions {
            interval: Duration::ZERO
        }
        .check()
        .is_err());
        StatusOptions::default().check().unwrap();
        assert_eq!(StatusOptions::default().interval, Duration::from_secs(10));
    }
}
