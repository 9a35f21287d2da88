//! Several hosts in one connection string, and `target_session_attrs`, as libpq has them
//! (<https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-MULTIPLE-HOSTS>).
//!
//! `host=a,b,c port=5432,5433,5434` (or `postgresql://a:5432,b:5433/db`) lists servers to try in
//! order; a single port applies to every host, an empty entry is the default. Each connect
//! attempt is bounded by `connect_timeout` on its own. With `target_session_attrs` other than
//! `any`, a server that connects is kept only if it is in the state asked for:
//!
//! | value | keeps a server that |
//! |---|---|
//! | `any` | connects |
//! | `read-write` | accepts writes (not in recovery, `transaction_read_only` off) |
//! | `read-only` | does not accept writes |
//! | `primary` | is not in recovery |
//! | `standby` | is in recovery |
//! | `prefer-standby` | is in recovery; if none is, any server |
//!
//! The connect loops themselves are the connections' (the replication connection's and the SQL
//! client's); this module says which server states suit.

use std::fmt;
use std::str::FromStr;

/// libpq's `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSessionAttrs {
    /// Any server.
    #[default]
    Any,
    /// A server that accepts writes.
    ReadWrite,
    /// A server that does not accept writes.
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery (a hot standby).
    Standby,
    /// A standby if there is one, else any server.
    PreferStandby,
}

/// One pass over the host list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Keep only servers that match [`TargetSessionAttrs`] exactly.
    Strict,
    /// Keep any server (the second pass of `prefer-standby`).
    Any,
}

/// What a server said about itself after connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// `transaction_read_only` of a new session.
    pub read_only: bool,
}

impl ServerState {
    /// The query that reads it; answers two text columns, `true`/`false` and `on`/`off`.
    pub const QUERY: &'static str = "SELECT pg_catalog.pg_is_in_recovery()::text, \
                                     pg_catalog.current_setting('transaction_read_only')";

    /// Reads the two columns of [`ServerState::QUERY`]'s row; `None` when they do not parse.
    pub fn from_row(in_recovery: Option<&str>, read_only: Option<&str>) -> Option<ServerState> {
        let flag = |v: Option<&str>| match v? {
            "true" | "on" | "t" => Some(true),
            "false" | "off" | "f" => Some(false),
            _ => None,
        };
        Some(ServerState {
            in_recovery: flag(in_recovery)?,
            read_only: flag(read_only)?,
        })
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.in_recovery, self.read_only) {
            (true, _) => "a standby",
            (false, true) => "a read-only primary",
            (false, false) => "a read-write primary",
        })
    }
}

impl TargetSessionAttrs {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// The passes over the host list: one, or two for `prefer-standby`.
    pub fn passes(self) -> &'static [Pass] {
        match self {
            TargetSessionAttrs::PreferStandby => &[Pass::Strict, Pass::Any],
            _ => &[Pass::Strict],
        }
    }

    /// Whether a server's state must be read after connecting in `pass`.
    pub fn needs_check(self, pass: Pass) -> bool {
        pass == Pass::Strict && self != TargetSessionAttrs::Any
    }

    /// Whether a server in `state` suits in `pass`.
    pub fn accepts(self, pass: Pass, state: ServerState) -> bool {
        if pass == Pass::Any {
            return true;
        }
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !state.in_recovery && !state.read_only,
            TargetSessionAttrs::ReadOnly => state.in_recovery || state.read_only,
            TargetSessionAttrs::Primary => !state.in_recovery,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => state.in_recovery,
        }
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            _ => return Err(()),
        })
    }
}

/// Splits a URI's host list (`a:1,[::1]:2,b`) at the commas outside brackets.
pub(crate) fn split_uri_hosts(spec: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in spec.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&spec[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: ServerState = ServerState {
        in_recovery: false,
        read_only: false,
    };
    const STANDBY: ServerState = ServerState {
        in_recovery: true,
        read_only: true,
    };

    #[test]
    fn each_mode_keeps_what_libpq_keeps() {
        use TargetSessionAttrs::*;
        let strict = Pass::Strict;
        assert!(ReadWrite.accepts(strict, PRIMARY) && !ReadWrite.accepts(strict, STANDBY));
        assert!(!ReadOnly.accepts(strict, PRIMARY) && ReadOnly.accepts(strict, STANDBY));
        assert!(Primary.accepts(strict, PRIMARY) && !Primary.accepts(strict, STANDBY));
        assert!(Standby.accepts(strict, STANDBY) && !Standby.accepts(strict, PRIMARY));
        assert_eq!(PreferStandby.passes(), &[Pass::Strict, Pass::Any]);
        assert!(PreferStandby.accepts(Pass::Any, PRIMARY));
        assert!(!Any.needs_check(strict) && ReadWrite.needs_check(strict));
        let read_only_primary = ServerState {
            in_recovery: false,
            read_only: true,
        };
        assert!(!ReadWrite.accepts(strict, read_only_primary));
        assert!(Primary.accepts(strict, read_only_primary));
        for s in [
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ] {
            assert_eq!(s.parse::<TargetSessionAttrs>().unwrap().as_str(), s);
        }
        assert!("master".parse::<TargetSessionAttrs>().is_err());
    }

    #[test]
    fn uri_host_lists_split_outside_brackets() {
        assert_eq!(split_uri_hosts("a:1,[::1]:2,b"), ["a:1", "[::1]:2", "b"]);
        assert_eq!(split_uri_hosts("[fe80::1,x]"), ["[fe80::1,x]"]);
        assert_eq!(split_uri_hosts("a"), ["a"]);
    }

    #[test]
    fn server_states_read_from_text() {
        assert_eq!(
            ServerState::from_row(Some("false"), Some("off")),
            Some(PRIMARY)
        );
        assert_eq!(
            ServerState::from_row(Some("true"), Some("on")),
            Some(STANDBY)
        );
        assert_eq!(ServerState::from_row(Some("x"), Some("on")), None);
    }
}
