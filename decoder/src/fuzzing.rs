//! Doors into the crate-private parsers of untrusted bytes, for the fuzz targets in
//! `decoder/fuzz` (see its README). Compiled only with the `fuzzing` feature, which nothing but
//! those targets enables: this is not an API, and it may change with the parsers.
//!
//! Each function hands its input to the parser the replication connection really uses and
//! returns what a target needs to check the result from outside; none of them parses anything
//! itself.

use bytes::{Bytes, BytesMut};

use crate::config::{conninfo, pgpass, ConfigError, Password};
use crate::connection::message::{self, BackendMessage};
use crate::connection::{ProtocolError, ReplicationError, ServerError};

/// The largest backend message body accepted ([`parse_backend_message`] refuses longer ones
/// before any buffer grows).
pub const MAX_MESSAGE_LEN: usize = message::MAX_MESSAGE_LEN;

/// The most the read buffer is grown by at a time while a message arrives: what
/// [`parse_backend_message`] may reserve beyond the bytes it was given.
pub const MAX_READ_RESERVE: usize = message::MAX_READ_RESERVE;

/// One backend message as [`parse_backend_message`] parsed it.
#[derive(Debug)]
pub struct ParsedMessage {
    /// The protocol's name of the message.
    pub name: &'static str,
    /// The payload of a `CopyData`: a slice of the read buffer.
    pub copy_data: Option<Bytes>,
    /// The error or notice of an `ErrorResponse` or `NoticeResponse`.
    pub server_error: Option<ServerError>,
    /// The error the connection reports when this message arrives where it cannot.
    pub unexpected: ReplicationError,
    /// The message's `Debug` form.
    pub debug: String,
}

/// Splits one complete backend message off the front of `buf`, as the replication connection
/// does with what it reads; `Ok(None)` when more bytes are needed (the buffer may have grown).
pub fn parse_backend_message(buf: &mut BytesMut) -> Result<Option<ParsedMessage>, ProtocolError> {
    let Some(parsed) = message::parse_message(buf)? else {
        return Ok(None);
    };
    let debug = format!("{parsed:?}");
    let unexpected = parsed.unexpected("fuzzing");
    let name = parsed.name();
    let (copy_data, server_error) = match parsed {
        BackendMessage::CopyData(data) => (Some(data), None),
        BackendMessage::ErrorResponse(e) | BackendMessage::NoticeResponse(e) => (None, Some(*e)),
        _ => (None, None),
    };
    Ok(Some(ParsedMessage {
        name,
        copy_data,
        server_error,
        unexpected,
        debug,
    }))
}

/// The `(keyword, value)` pairs of a connection string in either form, in order, before they
/// are interpreted.
pub fn conninfo_settings(conninfo: &str) -> Result<Vec<(String, String)>, ConfigError> {
    Ok(conninfo::parse(conninfo)?
        .into_iter()
        .map(|s| (s.key, s.value))
        .collect())
}

/// The password the password file `contents` gives for a connection to `host`, `port`,
/// `dbname` as `user`.
pub fn pgpass_find(
    contents: &str,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<Password> {
    pgpass::find(
        contents,
        pgpass::Entry {
            host,
            port,
            dbname,
            user,
        },
    )
}
