//! The errors of the replication connection: [`ReplicationError`] and the server's own
//! [`ServerError`], built from an `ErrorResponse` as described in
//! <https://www.postgresql.org/docs/current/protocol-error-fields.html>.
//!
//! Classifying an error as transient or definite is the engine's job; this module only exposes
//! what it needs for that: [`ReplicationError::sqlstate`] and [`ReplicationError::is_io`].
//! No variant carries a password or a connection string.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::config::ConfigError;

/// Everything that can go wrong on a replication connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The socket could not be opened.
    #[error("could not connect to the server at {address}")]
    Connect {
        /// `host:port` or the socket path.
        address: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A step did not finish in time.
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        /// What was being done.
        during: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("i/o error while {during}")]
    Io {
        /// What was being done.
        during: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The server closed the connection without an error message.
    #[error("the server closed the connection unexpectedly while {during}")]
    Closed {
        /// What was being done.
        during: &'static str,
    },
    /// The server reported an error.
    #[error(transparent)]
    Server(Box<ServerError>),
    /// The server sent something this client does not understand.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Authentication could not be completed on the client side.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The connection settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A slot name PostgreSQL would reject.
    #[error("invalid replication slot name {name:?}: slot names may contain only lower case letters, digits and underscores, at most 63 of them")]
    InvalidSlotName {
        /// The name given.
        name: String,
    },
    /// A request the server cannot honour, refused before anything is sent.
    #[error("{what} — {fix}")]
    Unsupported {
        /// What was asked for, and of which server.
        what: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// An option value that makes no sense whatever the server.
    #[error("invalid option: {problem}")]
    InvalidOption {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Several hosts were listed, and none that connected is in the state
    /// `target_session_attrs` asks for.
    #[error("no server in the state target_session_attrs={target_session_attrs} asks for: {found} — list a host in that state, or change target_session_attrs")]
    NoSuitableHost {
        /// The setting.
        target_session_attrs: &'static str,
        /// What each server that connected is (`a:5432 is a standby, …`).
        found: String,
    },
    /// The standby status task ended abnormally (it panicked or was cancelled).
    #[error("the standby status task of the replication stream stopped unexpectedly")]
    StatusTask,
}

impl ReplicationError {
    /// The SQLSTATE when the server reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    /// True when the transport failed: the socket could not be opened, broke, timed out or was
    /// closed by the server without an error message.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            ReplicationError::Connect { .. }
                | ReplicationError::Io { .. }
                | ReplicationError::Closed { .. }
                | ReplicationError::Timeout { .. }
        )
    }

    /// The server's error, when it reported one.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ReplicationError::Server(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn io(during: &'static str) -> impl FnOnce(io::Error) -> ReplicationError {
        move |source| ReplicationError::Io { during, source }
    }
}

impl From<ServerError> for ReplicationError {
    fn from(e: ServerError) -> Self {
        ReplicationError::Server(Box::new(e))
    }
}

impl From<Box<ServerError>> for ReplicationError {
    fn from(e: Box<ServerError>) -> Self {
        ReplicationError::Server(e)
    }
}

/// The server sent bytes or messages that break the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A well-formed message that has no place here.
    #[error("unexpected {got} message from the server while {during}")]
    UnexpectedMessage {
        /// The message's name.
        got: &'static str,
        /// What was being done.
        during: &'static str,
    },
    /// A message type byte that is not in the protocol.
    #[error("unknown message type {} from the server", Tag(*tag))]
    UnknownMessage {
        /// The type byte.
        tag: u8,
    },
    /// A length word below 4.
    #[error("invalid length {len} in the header of a {} message", Tag(*tag))]
    InvalidLength {
        /// The type byte.
        tag: u8,
        /// The length read.
        len: i32,
    },
    /// A message longer than this client accepts.
    #[error("{} message of {len} bytes exceeds the limit of {limit} bytes", Tag(*tag))]
    TooLong {
        /// The type byte.
        tag: u8,
        /// The length read.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A message whose body does not parse.
    #[error("malformed {message} message: {problem}")]
    Malformed {
        /// The message's name.
        message: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// A CopyData frame of an unknown replication sub-protocol type.
    #[error("unknown replication frame type {} in CopyData", Tag(*tag))]
    UnknownFrame {
        /// The frame's first byte.
        tag: u8,
    },
    /// A replication command answered with something else than documented.
    #[error("unexpected result for {command}: {problem}")]
    UnexpectedResult {
        /// The command.
        command: &'static str,
        /// What did not match.
        problem: String,
    },
    /// A startup parameter every server reports is missing or unreadable.
    #[error("the server did not report a usable {parameter} (got {value:?})")]
    BadParameter {
        /// The parameter.
        parameter: &'static str,
        /// What it was, if anything.
        value: Option<String>,
    },
}

/// A type byte, printed as `'d' (0x64)`.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}' (0x{:02x})", char::from(self.0), self.0)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// Authentication could not be completed on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The server wants a password and none is known.
    #[error("the server requested {method} authentication for user \"{user}\" but no password was given — set password= in the connection string, the PGPASSWORD environment variable, or an entry in ~/.pgpass (or the file named by PGPASSFILE / passfile=)")]
    PasswordRequired {
        /// The method the server asked for.
        method: &'static str,
        /// The role.
        user: String,
    },
    /// A method this client does not implement.
    #[error("the server requested {method} authentication, which blueshift does not support — use scram-sha-256, md5, password or trust for this connection in pg_hba.conf")]
    UnsupportedMethod {
        /// The method.
        method: &'static str,
    },
    /// SASL without SCRAM-SHA-256.
    #[error("the server offered only SASL mechanisms blueshift does not support ({offered}) — SCRAM-SHA-256 without channel binding is required")]
    NoSaslMechanism {
        /// The mechanisms the server offered.
        offered: String,
    },
    /// The SCRAM exchange failed on the client side (e.g. the server's proof did not verify).
    #[error("SCRAM-SHA-256 authentication failed")]
    Scram {
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// An error or notice from the server (`ErrorResponse` / `NoticeResponse`).
///
/// Displays like psql: `ERROR: relation "t" does not exist (SQLSTATE 42P01)`, then `DETAIL:`,
/// `HINT:` and `CONTEXT:` lines when present.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC`, `WARNING`, `NOTICE`, ... (the non-localized form when sent).
    pub severity: String,
    /// The SQLSTATE code, e.g. `42704`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The detail line.
    pub detail: Option<String>,
    /// The hint line.
    pub hint: Option<String>,
    /// The 1-based character position in the command.
    pub position: Option<u32>,
    /// The context (`where`) of the error.
    pub where_: Option<String>,
    /// Schema name of the object concerned.
    pub schema: Option<String>,
    /// Table name of the object concerned.
    pub table: Option<String>,
    /// Column name of the object concerned.
    pub column: Option<String>,
    /// Data type name of the object concerned.
    pub datatype: Option<String>,
    /// Constraint name of the object concerned.
    pub constraint: Option<String>,
    /// Source routine that reported the error.
    pub routine: Option<String>,
}

impl ServerError {
    /// Builds the error from the fields of an `ErrorResponse` or `NoticeResponse`: pairs of a
    /// field type byte and its text. `None` when severity, code or message are missing.
    pub(crate) fn from_fields<'a>(
        fields: impl IntoIterator<Item = (u8, &'a [u8])>,
    ) -> Option<ServerError> {
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let mut severity_localized = None;
        let mut e = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
            position: None,
            where_: None,
            schema: None,
            table: None,
            column: None,
            datatype: None,
            constraint: None,
            routine: None,
        };
        let (mut have_code, mut have_message) = (false, false);
        for (kind, value) in fields {
            match kind {
                b'S' => severity_localized = Some(text(value)),
                b'V' => e.severity = text(value),
                b'C' => {
                    e.code = text(value);
                    have_code = true;
                }
                b'M' => {
                    e.message = text(value);
                    have_message = true;
                }
                b'D' => e.detail = Some(text(value)),
                b'H' => e.hint = Some(text(value)),
                b'P' => e.position = std::str::from_utf8(value).ok().and_then(|p| p.parse().ok()),
                b'W' => e.where_ = Some(text(value)),
                b's' => e.schema = Some(text(value)),
                b't' => e.table = Some(text(value)),
                b'c' => e.column = Some(text(value)),
                b'd' => e.datatype = Some(text(value)),
                b'n' => e.constraint = Some(text(value)),
                b'R' => e.routine = Some(text(value)),
                // File, line, internal position and query, and future fields.
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = severity_localized?;
        }
        (have_code && have_message).then_some(e)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "\nDETAIL: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nHINT: {hint}")?;
        }
        if let Some(context) = &self.where_ {
            write!(f, "\nCONTEXT: {context}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_from_fields_and_display() {
        let fields: Vec<(u8, &[u8])> = vec![
            (b'S', b"FEHLER"),
            (b'V', b"ERROR"),
            (b'C', b"42704"),
            (b'M', b"replication slot \"s\" does not exist"),
            (b'D', b"some detail"),
            (b'H', b"some hint"),
            (b'P', b"12"),
            (b'W', b"somewhere"),
            (b'F', b"slot.c"),
            (b'L', b"123"),
            (b'R', b"ReplicationSlotAcquire"),
            (b'Z', b"future field"),
        ];
        let e = ServerError::from_fields(fields).unwrap();
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "42704");
        assert_eq!(e.position, Some(12));
        assert_eq!(e.routine.as_deref(), Some("ReplicationSlotAcquire"));
        assert_eq!(
            e.to_string(),
            "ERROR: replication slot \"s\" does not exist (SQLSTATE 42704)\n\
             DETAIL: some detail\nHINT: some hint\nCONTEXT: somewhere"
        );
        let err = ReplicationError::from(e);
        assert_eq!(err.sqlstate(), Some("42704"));
        assert!(!err.is_io());
    }

    #[test]
    fn server_error_needs_code_and_message() {
        let e =
            ServerError::from_fields(vec![(b'S', &b"FATAL"[..]), (b'C', b"28P01"), (b'M', b"m")])
                .unwrap();
        assert_eq!(e.severity, "FATAL");
        assert!(ServerError::from_fields(vec![(b'S', &b"ERROR"[..]), (b'M', b"m")]).is_none());
        assert!(ServerError::from_fields(vec![(b'S', &b"ERROR"[..]), (b'C', b"x")]).is_none());
        assert!(ServerError::from_fields(vec![(b'C', &b"x"[..]), (b'M', b"m")]).is_none());
    }

    #[test]
    fn tags_print_readably() {
        assert_eq!(
            ProtocolError::UnknownMessage { tag: b'q' }.to_string(),
            "unknown message type 'q' (0x71) from the server"
        );
        assert_eq!(
            ProtocolError::UnknownFrame { tag: 0 }.to_string(),
            "unknown replication frame type 0x00 in CopyData"
        );
    }

    #[test]
    fn io_classification() {
        let closed = ReplicationError::Closed { during: "x" };
        assert!(closed.is_io());
        assert_eq!(closed.sqlstate(), None);
        assert!(!ReplicationError::StatusTask.is_io());
    }
}
