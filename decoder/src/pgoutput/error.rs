//! Errors of the `pgoutput` decoder and encoder.
//!
//! A [`DecodeError`] says where (the byte offset in the frame), in which message (its tag) and
//! what ([`DecodeErrorKind`]) went wrong, against the formats of
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.
//! All of them are *definite*: the same bytes will fail the same way, so the stream cannot go
//! on past them; they indicate a server bug, corruption, or options (protocol version,
//! `streaming 'parallel'`) that differ from what the decoder was told.

use std::fmt;
use std::str::Utf8Error;

use super::message::ProtocolVersion;
use super::tag::{message_name, ByteDisplay};

/// A `pgoutput` frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    offset: usize,
    tag: Option<u8>,
    #[source]
    kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(offset: usize, kind: DecodeErrorKind) -> Self {
        DecodeError {
            offset,
            tag: None,
            kind,
        }
    }

    pub(crate) fn in_message(mut self, tag: u8) -> Self {
        self.tag = Some(tag);
        self
    }

    /// The byte offset in the frame where the problem is: the start of the field that could not
    /// be read, or the first offending byte.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The tag of the message being decoded, when it got that far.
    pub fn tag(&self) -> Option<u8> {
        self.tag
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag.and_then(message_name) {
            Some(name) => write!(
                f,
                "malformed pgoutput {name} message at byte {}",
                self.offset
            ),
            None => write!(f, "malformed pgoutput message at byte {}", self.offset),
        }
    }
}

/// What made a `pgoutput` frame undecodable. `field` names say which part of the message was
/// being read, in the words of the protocol documentation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The frame has no bytes at all.
    #[error("empty frame: every pgoutput message starts with a tag byte")]
    Empty,
    /// The first byte is not a message tag of any protocol version.
    #[error("unknown message tag {}", ByteDisplay(*tag))]
    UnknownTag {
        /// The byte found.
        tag: u8,
    },
    /// The message exists only in a later protocol version than the one negotiated.
    #[error(
        "{} message needs protocol version {required} but version {negotiated} was negotiated — \
         check the proto_version given to START_REPLICATION",
        message_name(*tag).unwrap_or("this")
    )]
    TagNotInVersion {
        /// The message tag.
        tag: u8,
        /// The first protocol version with this message.
        required: ProtocolVersion,
        /// The protocol version the decoder was told.
        negotiated: ProtocolVersion,
    },
    /// A message that never appears inside a Stream Start … Stream Stop block came inside one
    /// (e.g. Begin, or a second Stream Start): the decoder has lost track of the stream.
    #[error(
        "{} message inside a Stream Start … Stream Stop block",
        message_name(*tag).unwrap_or("this")
    )]
    NotAllowedInStream {
        /// The message tag.
        tag: u8,
    },
    /// A message that only appears inside a Stream Start … Stream Stop block (Stream Stop) came
    /// outside one.
    #[error(
        "{} message outside a Stream Start … Stream Stop block",
        message_name(*tag).unwrap_or("this")
    )]
    NotAllowedOutsideStream {
        /// The message tag.
        tag: u8,
    },
    /// A tuple column kind other than `n`, `u`, `t` or `b`.
    #[error("unknown tuple column kind {} (expected 'n', 'u', 't' or 'b')", ByteDisplay(*kind))]
    UnknownColumnKind {
        /// The byte found.
        kind: u8,
    },
    /// A replica identity other than `d`, `n`, `f` or `i`.
    #[error("unknown replica identity {} (expected 'd', 'n', 'f' or 'i')", ByteDisplay(*identity))]
    UnknownReplicaIdentity {
        /// The byte found.
        identity: u8,
    },
    /// The byte before a tuple is not one that may stand there (e.g. an Update without `N`).
    #[error("unexpected byte {} before {field} (expected {expected})", ByteDisplay(*found))]
    UnexpectedSubmessage {
        /// What was being read.
        field: &'static str,
        /// The byte found.
        found: u8,
        /// The bytes that may stand there.
        expected: &'static str,
    },
    /// The frame ends in the middle of a field.
    #[error("frame truncated: {field} needs {needed} bytes but {remaining} remain")]
    Truncated {
        /// What was being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the frame.
        remaining: usize,
    },
    /// A length or count on the wire is negative (`-1` is not used for NULL in pgoutput; NULL
    /// is a column kind).
    #[error("negative {field}: {value}")]
    NegativeLength {
        /// What was being read.
        field: &'static str,
        /// The value found.
        value: i32,
    },
    /// A length or count does not fit in memory addresses on this platform.
    #[error("{field} {value} overflows the address space")]
    LengthOverflow {
        /// What was being read.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A count of items that cannot all fit in the bytes that remain, refused before
    /// allocating for them.
    #[error("{field} {count} needs at least {min_bytes} bytes but {remaining} remain")]
    CountExceedsInput {
        /// What was being counted.
        field: &'static str,
        /// The count found.
        count: usize,
        /// The fewest bytes that many items take.
        min_bytes: u64,
        /// Bytes left in the frame.
        remaining: usize,
    },
    /// A string runs to the end of the frame without its NUL terminator.
    #[error("{field} has no NUL terminator before the end of the frame")]
    MissingNul {
        /// What was being read.
        field: &'static str,
    },
    /// A string is not valid UTF-8 (the decoder expects `client_encoding` UTF8).
    #[error("{field} is not valid UTF-8 — the database encoding must be UTF8")]
    InvalidUtf8 {
        /// What was being read.
        field: &'static str,
        /// Why the bytes are not UTF-8.
        #[source]
        source: Utf8Error,
    },
    /// A flags byte with bits this protocol does not define.
    #[error("{field} has undefined bits set: 0x{value:02X}")]
    InvalidFlags {
        /// What was being read.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// Bytes are left after a complete message.
    #[error("{count} trailing bytes after a complete message")]
    TrailingBytes {
        /// How many bytes are left.
        count: usize,
    },
}

/// A message that cannot be put on the wire as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string field contains a NUL byte, which would end it early on the wire.
    #[error("{field} contains a NUL byte and cannot be sent as a protocol string")]
    InteriorNul {
        /// The field.
        field: &'static str,
    },
    /// A byte field longer than an `Int32` length can describe.
    #[error("{field} is {len} bytes, more than the protocol's limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The largest length the wire can carry.
        max: usize,
    },
    /// More items than the wire's count field can describe.
    #[error("{field} has {count} items, more than the protocol's limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// How many items.
        count: usize,
        /// The largest count the wire can carry.
        max: usize,
    },
    /// A message's xid prefix disagrees with where it is sent: inside a Stream Start … Stream
    /// Stop block the xid must be `Some`, outside it must be `None`.
    #[error(
        "{message} message {} an xid {} a Stream Start … Stream Stop block",
        if *in_stream { "lacks" } else { "has" },
        if *in_stream { "inside" } else { "outside" }
    )]
    StreamXidMismatch {
        /// The message name.
        message: &'static str,
        /// Whether the encoder was told it is inside a streamed block.
        in_stream: bool,
    },
}

/// A `proto_version` number this decoder does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unsupported pgoutput protocol version {number}: versions 1 to 4 are implemented")]
pub struct UnsupportedProtocolVersion {
    /// The number asked for.
    pub number: u32,
}
