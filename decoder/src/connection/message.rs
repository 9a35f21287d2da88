//! Framing and parsing of the backend messages a replication connection receives.
//!
//! Implements the subset of
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html> a replication client
//! sees: authentication, startup parameters, simple-query results, errors and notices, and the
//! CopyBoth messages. The type bytes are `postgres_protocol::message::backend`'s constants;
//! the bodies are parsed here because that crate has no `CopyBothResponse` and iterates fields
//! through a trait this crate does not depend on.
//!
//! Every length is checked before it is used: the header's length against
//! [`MAX_MESSAGE_LEN`] before any buffer grows, each field's length against what is left.
//! A message is split off the read buffer as one `Bytes`, so `CopyData` payloads are slices of
//! it, never copies.

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::{
    AUTHENTICATION_TAG, BACKEND_KEY_DATA_TAG, BIND_COMPLETE_TAG, CLOSE_COMPLETE_TAG,
    COMMAND_COMPLETE_TAG, COPY_DATA_TAG, COPY_DONE_TAG, COPY_IN_RESPONSE_TAG,
    COPY_OUT_RESPONSE_TAG, DATA_ROW_TAG, EMPTY_QUERY_RESPONSE_TAG, ERROR_RESPONSE_TAG,
    NOTICE_RESPONSE_TAG, NOTIFICATION_RESPONSE_TAG, NO_DATA_TAG, PARAMETER_DESCRIPTION_TAG,
    PARAMETER_STATUS_TAG, PARSE_COMPLETE_TAG, PORTAL_SUSPENDED_TAG, READY_FOR_QUERY_TAG,
    ROW_DESCRIPTION_TAG,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::{ProtocolError, ReplicationError, ServerError};

/// `CopyBothResponse` (not in `postgres_protocol`).
pub(crate) const COPY_BOTH_RESPONSE_TAG: u8 = b'W';
/// `NegotiateProtocolVersion` (not in `postgres_protocol`).
pub(crate) const NEGOTIATE_PROTOCOL_VERSION_TAG: u8 = b'v';
/// `FunctionCallResponse` (not in `postgres_protocol`).
pub(crate) const FUNCTION_CALL_RESPONSE_TAG: u8 = b'V';

/// `AuthenticationOk`.
const AUTH_OK: i32 = 0;
/// `AuthenticationKerberosV5`.
const AUTH_KERBEROS_V5: i32 = 2;
/// `AuthenticationCleartextPassword`.
const AUTH_CLEARTEXT_PASSWORD: i32 = 3;
/// `AuthenticationMD5Password`.
const AUTH_MD5_PASSWORD: i32 = 5;
/// `AuthenticationSCMCredential` (pre-9.1 servers).
const AUTH_SCM_CREDENTIAL: i32 = 6;
/// `AuthenticationGSS`.
const AUTH_GSS: i32 = 7;
/// `AuthenticationGSSContinue`.
const AUTH_GSS_CONTINUE: i32 = 8;
/// `AuthenticationSSPI`.
const AUTH_SSPI: i32 = 9;
/// `AuthenticationSASL`.
const AUTH_SASL: i32 = 10;
/// `AuthenticationSASLContinue`.
const AUTH_SASL_CONTINUE: i32 = 11;
/// `AuthenticationSASLFinal`.
const AUTH_SASL_FINAL: i32 = 12;

/// The largest message accepted: PostgreSQL builds messages in a `StringInfo`, which cannot grow
/// past 1 GB, so anything longer is corrupt. Checked before the read buffer grows.
pub(crate) const MAX_MESSAGE_LEN: usize = (1 << 30) + (1 << 20);

/// How much the read buffer grows at least when it needs room.
const READ_RESERVE: usize = 64 * 1024;
/// How much the read buffer grows at most at a time while a long message arrives.
pub(crate) const MAX_READ_RESERVE: usize = 4 * 1024 * 1024;

/// A message from the server.
#[derive(Debug)]
pub(crate) enum BackendMessage {
    AuthenticationOk,
    AuthenticationCleartextPassword,
    AuthenticationMd5Password {
        salt: [u8; 4],
    },
    AuthenticationSasl {
        mechanisms: Vec<String>,
    },
    AuthenticationSaslContinue {
        data: Bytes,
    },
    AuthenticationSaslFinal {
        data: Bytes,
    },
    /// A method this client does not implement (Kerberos, SCM, GSS, SSPI).
    AuthenticationUnsupported {
        method: &'static str,
    },
    BackendKeyData {
        process_id: i32,
        secret_key: Bytes,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
    ReadyForQuery {
        status: u8,
    },
    RowDescription {
        columns: Vec<String>,
    },
    DataRow {
        values: Vec<Option<Bytes>>,
    },
    CommandComplete {
        tag: String,
    },
    EmptyQueryResponse,
    ErrorResponse(Box<ServerError>),
    NoticeResponse(Box<ServerError>),
    CopyBothResponse,
    CopyOutResponse,
    CopyInResponse,
    CopyData(Bytes),
    CopyDone,
    NotificationResponse,
    NegotiateProtocolVersion,
    /// An extended-query or function-call message, never sent to a simple-query client.
    Other {
        name: &'static str,
    },
}

impl BackendMessage {
    /// The protocol's name for the message, for error messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            BackendMessage::AuthenticationOk => "AuthenticationOk",
            BackendMessage::AuthenticationCleartextPassword => "AuthenticationCleartextPassword",
            BackendMessage::AuthenticationMd5Password { .. } => "AuthenticationMD5Password",
            BackendMessage::AuthenticationSasl { .. } => "AuthenticationSASL",
            BackendMessage::AuthenticationSaslContinue { .. } => "AuthenticationSASLContinue",
            BackendMessage::AuthenticationSaslFinal { .. } => "AuthenticationSASLFinal",
            BackendMessage::AuthenticationUnsupported { .. } => "Authentication",
            BackendMessage::BackendKeyData { .. } => "BackendKeyData",
            BackendMessage::ParameterStatus { .. } => "ParameterStatus",
            BackendMessage::ReadyForQuery { .. } => "ReadyForQuery",
            BackendMessage::RowDescription { .. } => "RowDescription",
            BackendMessage::DataRow { .. } => "DataRow",
            BackendMessage::CommandComplete { .. } => "CommandComplete",
            BackendMessage::EmptyQueryResponse => "EmptyQueryResponse",
            BackendMessage::ErrorResponse(_) => "ErrorResponse",
            BackendMessage::NoticeResponse(_) => "NoticeResponse",
            BackendMessage::CopyBothResponse => "CopyBothResponse",
            BackendMessage::CopyOutResponse => "CopyOutResponse",
            BackendMessage::CopyInResponse => "CopyInResponse",
            BackendMessage::CopyData(_) => "CopyData",
            BackendMessage::CopyDone => "CopyDone",
            BackendMessage::NotificationResponse => "NotificationResponse",
            BackendMessage::NegotiateProtocolVersion => "NegotiateProtocolVersion",
            BackendMessage::Other { name } => name,
        }
    }

    /// The error for receiving this message at the wrong time.
    pub(crate) fn unexpected(&self, during: &'static str) -> ReplicationError {
        ProtocolError::UnexpectedMessage {
            got: self.name(),
            during,
        }
        .into()
    }
}

/// Reads the next complete message, reading from `reader` as needed. Cancellation safe: bytes
/// read before a cancellation stay in `buf`.
pub(crate) async fn read_message<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut BytesMut,
    during: &'static str,
) -> Result<BackendMessage, ReplicationError> {
    loop {
        if let Some(message) = parse_message(buf)? {
            return Ok(message);
        }
        let n = reader
            .read_buf(buf)
            .await
            .map_err(ReplicationError::io(during))?;
        if n == 0 {
            return Err(ReplicationError::Closed { during });
        }
    }
}

/// Splits one complete message off the front of `buf`, or reserves room for the rest of it and
/// returns `None`.
pub(crate) fn parse_message(buf: &mut BytesMut) -> Result<Option<BackendMessage>, ProtocolError> {
    let Some(header) = buf.get(..5) else {
        buf.reserve(READ_RESERVE);
        return Ok(None);
    };
    let tag = header.first().copied().unwrap_or_default();
    let len = i32::from_be_bytes(array(header.get(1..5)).unwrap_or_default());
    // The length counts itself but not the type byte.
    let body_len = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_sub(4))
        .ok_or(ProtocolError::InvalidLength { tag, len })?;
    if body_len > MAX_MESSAGE_LEN {
        return Err(ProtocolError::TooLong {
            tag,
            len: body_len,
            limit: MAX_MESSAGE_LEN,
        });
    }
    let total = body_len + 5;
    if buf.len() < total {
        // Grow with the bytes that actually arrive, not by what the header claims.
        buf.reserve((total - buf.len()).clamp(READ_RESERVE, MAX_READ_RESERVE));
        return Ok(None);
    }
    let body = buf.split_to(total).freeze().slice(5..);
    parse_body(tag, body).map(Some)
}

/// Parses a message body by its type byte.
pub(crate) fn parse_body(tag: u8, body: Bytes) -> Result<BackendMessage, ProtocolError> {
    let message = match tag {
        AUTHENTICATION_TAG => parse_authentication(body)?,
        BACKEND_KEY_DATA_TAG => {
            let mut c = Cursor::new(body, "BackendKeyData");
            let process_id = c.i32()?;
            let secret_key = c.rest();
            if secret_key.len() < 4 {
                return Err(c.malformed("secret key shorter than 4 bytes"));
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            }
        }
        PARAMETER_STATUS_TAG => {
            let mut c = Cursor::new(body, "ParameterStatus");
            let name = c.string()?;
            let value = c.string()?;
            c.finish()?;
            BackendMessage::ParameterStatus { name, value }
        }
        READY_FOR_QUERY_TAG => {
            let mut c = Cursor::new(body, "ReadyForQuery");
            let status = c.u8()?;
            c.finish()?;
            BackendMessage::ReadyForQuery { status }
        }
        ROW_DESCRIPTION_TAG => parse_row_description(body)?,
        DATA_ROW_TAG => parse_data_row(body)?,
        COMMAND_COMPLETE_TAG => {
            let mut c = Cursor::new(body, "CommandComplete");
            let tag = c.string()?;
            c.finish()?;
            BackendMessage::CommandComplete { tag }
        }
        EMPTY_QUERY_RESPONSE_TAG => empty(
            body,
            "EmptyQueryResponse",
            BackendMessage::EmptyQueryResponse,
        )?,
        ERROR_RESPONSE_TAG => BackendMessage::ErrorResponse(parse_fields(body, "ErrorResponse")?),
        NOTICE_RESPONSE_TAG => {
            BackendMessage::NoticeResponse(parse_fields(body, "NoticeResponse")?)
        }
        COPY_BOTH_RESPONSE_TAG => {
            check_copy_response(body, "CopyBothResponse")?;
            BackendMessage::CopyBothResponse
        }
        COPY_OUT_RESPONSE_TAG => {
            check_copy_response(body, "CopyOutResponse")?;
            BackendMessage::CopyOutResponse
        }
        COPY_IN_RESPONSE_TAG => {
            check_copy_response(body, "CopyInResponse")?;
            BackendMessage::CopyInResponse
        }
        COPY_DATA_TAG => BackendMessage::CopyData(body),
        COPY_DONE_TAG => empty(body, "CopyDone", BackendMessage::CopyDone)?,
        NOTIFICATION_RESPONSE_TAG => BackendMessage::NotificationResponse,
        NEGOTIATE_PROTOCOL_VERSION_TAG => BackendMessage::NegotiateProtocolVersion,
        PARSE_COMPLETE_TAG => BackendMessage::Other {
            name: "ParseComplete",
        },
        BIND_COMPLETE_TAG => BackendMessage::Other {
            name: "BindComplete",
        },
        CLOSE_COMPLETE_TAG => BackendMessage::Other {
            name: "CloseComplete",
        },
        NO_DATA_TAG => BackendMessage::Other { name: "NoData" },
        PORTAL_SUSPENDED_TAG => BackendMessage::Other {
            name: "PortalSuspended",
        },
        PARAMETER_DESCRIPTION_TAG => BackendMessage::Other {
            name: "ParameterDescription",
        },
        FUNCTION_CALL_RESPONSE_TAG => BackendMessage::Other {
            name: "FunctionCallResponse",
        },
        tag => return Err(ProtocolError::UnknownMessage { tag }),
    };
    Ok(message)
}

fn empty(
    body: Bytes,
    name: &'static str,
    message: BackendMessage,
) -> Result<BackendMessage, ProtocolError> {
    Cursor::new(body, name).finish()?;
    Ok(message)
}

fn parse_authentication(body: Bytes) -> Result<BackendMessage, ProtocolError> {
    let mut c = Cursor::new(body, "Authentication");
    let message = match c.i32()? {
        AUTH_OK => BackendMessage::AuthenticationOk,
        AUTH_CLEARTEXT_PASSWORD => BackendMessage::AuthenticationCleartextPassword,
        AUTH_MD5_PASSWORD => {
            let salt = array(Some(&c.bytes(4)?[..])).unwrap_or_default();
            BackendMessage::AuthenticationMd5Password { salt }
        }
        AUTH_SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = c.string()?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            BackendMessage::AuthenticationSasl { mechanisms }
        }
        AUTH_SASL_CONTINUE => BackendMessage::AuthenticationSaslContinue { data: c.rest() },
        AUTH_SASL_FINAL => BackendMessage::AuthenticationSaslFinal { data: c.rest() },
        AUTH_KERBEROS_V5 => unsupported(&mut c, "Kerberos V5"),
        AUTH_SCM_CREDENTIAL => unsupported(&mut c, "SCM credential"),
        AUTH_GSS | AUTH_GSS_CONTINUE => unsupported(&mut c, "GSSAPI"),
        AUTH_SSPI => unsupported(&mut c, "SSPI"),
        _ => return Err(c.malformed("unknown authentication request code")),
    };
    c.finish()?;
    Ok(message)
}

fn unsupported(c: &mut Cursor, method: &'static str) -> BackendMessage {
    c.rest();
    BackendMessage::AuthenticationUnsupported { method }
}

fn parse_row_description(body: Bytes) -> Result<BackendMessage, ProtocolError> {
    let mut c = Cursor::new(body, "RowDescription");
    let count = c.count()?;
    let mut columns = Vec::with_capacity(count.min(c.remaining() / 19));
    for _ in 0..count {
        columns.push(c.string()?);
        // Table OID, column number, type OID, type size, type modifier, format code.
        c.bytes(4 + 2 + 4 + 2 + 4 + 2)?;
    }
    c.finish()?;
    Ok(BackendMessage::RowDescription { columns })
}

fn parse_data_row(body: Bytes) -> Result<BackendMessage, ProtocolError> {
    let mut c = Cursor::new(body, "DataRow");
    let count = c.count()?;
    let mut values = Vec::with_capacity(count.min(c.remaining() / 4));
    for _ in 0..count {
        let len = c.i32()?;
        values.push(match len {
            -1 => None,
            len => {
                let len =
                    usize::try_from(len).map_err(|_| c.malformed("negative column length"))?;
                Some(c.bytes(len)?)
            }
        });
    }
    c.finish()?;
    Ok(BackendMessage::DataRow { values })
}

fn check_copy_response(body: Bytes, name: &'static str) -> Result<(), ProtocolError> {
    let mut c = Cursor::new(body, name);
    c.u8()?;
    let count = c.count()?;
    for _ in 0..count {
        c.bytes(2)?;
    }
    c.finish()
}

/// Parses `ErrorResponse` / `NoticeResponse` fields: (type byte, C string)* then a zero byte.
fn parse_fields(body: Bytes, name: &'static str) -> Result<Box<ServerError>, ProtocolError> {
    let mut c = Cursor::new(body, name);
    let mut fields = Vec::new();
    loop {
        let kind = c.u8()?;
        if kind == 0 {
            break;
        }
        fields.push((kind, c.cstr()?));
    }
    c.finish()?;
    ServerError::from_fields(fields.iter().map(|(k, v)| (*k, &v[..])))
        .map(Box::new)
        .ok_or_else(|| c.malformed("severity, code or message field missing"))
}

/// Converts a 4- or 8-byte slice to an array.
fn array<const N: usize>(bytes: Option<&[u8]>) -> Option<[u8; N]> {
    bytes.and_then(|b| b.try_into().ok())
}

/// A bounds-checked reader over a message body. Every read that would pass the end is a
/// [`ProtocolError::Malformed`] naming the message.
#[derive(Debug)]
pub(crate) struct Cursor {
    data: Bytes,
    pos: usize,
    message: &'static str,
}

impl Cursor {
    pub(crate) fn new(data: Bytes, message: &'static str) -> Cursor {
        Cursor {
            data,
            pos: 0,
            message,
        }
    }

    pub(crate) fn malformed(&self, problem: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            message: self.message,
            problem,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or(ProtocolError::Malformed {
                message: self.message,
                problem: "truncated",
            })?;
        let slice = self
            .data
            .get(self.pos..end)
            .ok_or(ProtocolError::Malformed {
                message: self.message,
                problem: "truncated",
            })?;
        self.pos = end;
        Ok(slice)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let slice = self.take(N)?;
        array(Some(slice)).ok_or(ProtocolError::Malformed {
            message: "internal",
            problem: "fixed-size read",
        })
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(u8::from_be_bytes(self.fixed()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, ProtocolError> {
        Ok(i16::from_be_bytes(self.fixed()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ProtocolError> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.fixed()?))
    }

    /// An Int16 count of following items; negative is malformed.
    fn count(&mut self) -> Result<usize, ProtocolError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| self.malformed("negative count"))
    }

    /// `n` bytes as a slice of the message.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, ProtocolError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.data.slice(start..self.pos))
    }

    /// A NUL-terminated string, without the NUL.
    pub(crate) fn cstr(&mut self) -> Result<Bytes, ProtocolError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let len = memchr::memchr(0, rest).ok_or(ProtocolError::Malformed {
            message: self.message,
            problem: "string without NUL terminator",
        })?;
        let s = self.bytes(len)?;
        self.take(1)?;
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string.
    pub(crate) fn string(&mut self) -> Result<String, ProtocolError> {
        let bytes = self.cstr()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed("string is not UTF-8"))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        self.data.slice(start..)
    }

    /// Fails when bytes are left over.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes after the message"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn parse_one(bytes: &[u8]) -> Result<Option<BackendMessage>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        parse_message(&mut buf)
    }

    #[test]
    fn incomplete_messages_wait_for_more() {
        assert!(parse_one(b"").unwrap().is_none());
        assert!(parse_one(b"Z\0\0\0").unwrap().is_none());
        assert!(parse_one(b"Z\0\0\0\x05").unwrap().is_none());
        let mut buf = BytesMut::from(&message(b'Z', b"I")[..]);
        buf.extend_from_slice(b"Z\0");
        assert!(matches!(
            parse_message(&mut buf).unwrap(),
            Some(BackendMessage::ReadyForQuery { status: b'I' })
        ));
        assert_eq!(&buf[..], b"Z\0");
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert_eq!(
            parse_one(b"Z\0\0\0\x03").unwrap_err(),
            ProtocolError::InvalidLength { tag: b'Z', len: 3 }
        );
        assert!(matches!(
            parse_one(b"Z\xff\xff\xff\xff").unwrap_err(),
            ProtocolError::InvalidLength { len: -1, .. }
        ));
        // A 2 GB length is refused before anything is allocated.
        assert!(matches!(
            parse_one(b"d\x7f\xff\xff\xff").unwrap_err(),
            ProtocolError::TooLong { tag: b'd', .. }
        ));
    }

    #[test]
    fn unknown_tag_is_an_error() {
        assert_eq!(
            parse_one(&message(b'!', b"")).unwrap_err(),
            ProtocolError::UnknownMessage { tag: b'!' }
        );
    }

    #[test]
    fn trailing_bytes_are_errors() {
        assert!(matches!(
            parse_one(&message(b'Z', b"II")).unwrap_err(),
            ProtocolError::Malformed {
                message: "ReadyForQuery",
                ..
            }
        ));
        assert!(parse_one(&message(b'c', b"x")).is_err());
        assert!(parse_one(&message(b'S', b"a\0b\0c")).is_err());
    }

    #[test]
    fn truncated_bodies_are_errors() {
        for (tag, body) in [
            (b'Z', &b""[..]),
            (b'K', b"\0\0\0\x01"),
            (b'S', b"name\0value"),
            (b'R', b"\0\0"),
            (b'R', b"\0\0\0\x05ab"),
            (b'T', b"\0\x01col\0\0\0"),
            (b'D', b"\0\x01\0\0\0\x05abc"),
            (b'D', b"\0\x01\xff\xff\xff\xfe"),
            (b'D', b"\xff\xff"),
            (b'E', b"SERROR\0"),
            (b'E', b"SERROR\0C42704\0Mmsg\0"),
            (b'E', b"CX\0Mmsg\0\0"),
            (b'W', b"\0\0\x02\0\0"),
            (b'C', b"SELECT 1"),
        ] {
            assert!(
                parse_one(&message(tag, body)).is_err(),
                "{} {body:?} parsed",
                char::from(tag)
            );
        }
    }

    #[test]
    fn parses_simple_query_results() {
        let mut row_description = vec![0, 2];
        for name in [&b"a"[..], b"bb"] {
            row_description.extend_from_slice(name);
            row_description.push(0);
            row_description.extend_from_slice(&[0; 18]);
        }
        let Some(BackendMessage::RowDescription { columns }) =
            parse_one(&message(b'T', &row_description)).unwrap()
        else {
            panic!("not a RowDescription");
        };
        assert_eq!(columns, ["a", "bb"]);

        let Some(BackendMessage::DataRow { values }) =
            parse_one(&message(b'D', b"\0\x02\0\0\0\x03abc\xff\xff\xff\xff")).unwrap()
        else {
            panic!("not a DataRow");
        };
        assert_eq!(values, vec![Some(Bytes::from_static(b"abc")), None]);
    }

    #[test]
    fn parses_errors_and_auth() {
        let Some(BackendMessage::ErrorResponse(e)) = parse_one(&message(
            b'E',
            b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"u\"\0\0",
        ))
        .unwrap() else {
            panic!("not an ErrorResponse");
        };
        assert_eq!(e.code, "28P01");
        assert!(matches!(
            parse_one(&message(b'R', b"\0\0\0\x05salt")).unwrap(),
            Some(BackendMessage::AuthenticationMd5Password { salt }) if &salt == b"salt"
        ));
        let Some(BackendMessage::AuthenticationSasl { mechanisms }) = parse_one(&message(
            b'R',
            b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0",
        ))
        .unwrap() else {
            panic!("not AuthenticationSASL");
        };
        assert_eq!(mechanisms, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
        assert!(matches!(
            parse_one(&message(b'R', b"\0\0\0\x07")).unwrap(),
            Some(BackendMessage::AuthenticationUnsupported { method: "GSSAPI" })
        ));
        assert!(parse_one(&message(b'R', b"\0\0\0\x63")).is_err());
    }

    #[test]
    fn a_long_message_is_not_allocated_before_it_arrives() {
        // The header claims 1 GB; only the header is here.
        let mut buf = BytesMut::from(&b"d\x40\x00\x00\x00"[..]);
        assert!(parse_message(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= MAX_READ_RESERVE + 64);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = parse_message(&mut buf) {}
        }

        #[test]
        fn arbitrary_bodies_never_panic(
            tag in proptest::prelude::any::<u8>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let _ = parse_body(tag, Bytes::from(body));
        }
    }

    #[test]
    fn copy_data_is_a_slice_of_the_read_buffer() {
        let mut buf = BytesMut::from(&message(b'd', b"payload")[..]);
        let start = buf.as_ptr() as usize;
        let Some(BackendMessage::CopyData(data)) = parse_message(&mut buf).unwrap() else {
            panic!("not CopyData");
        };
        assert_eq!(&data[..], b"payload");
        assert_eq!(data.as_ptr() as usize, start + 5);
    }
}
