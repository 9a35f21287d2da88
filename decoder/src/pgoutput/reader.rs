//! A bounds-checked cursor over one `pgoutput` frame.
//!
//! Reads the wire types of
//! <https://www.postgresql.org/docs/current/protocol-message-types.html> (big-endian `IntN`,
//! NUL-terminated `String`, length-prefixed bytes) and turns every way they can be out of
//! bounds into a [`DecodeError`] at the offset of the field. Byte fields are returned as
//! [`Bytes::slice`]s of the frame, not copied.

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind};
use super::timestamp::PgTimestamp;
use crate::{Lsn, Oid, Xid};

/// The cursor: the frame and the offset of the next unread byte (never past the end).
pub(super) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(frame: &'a Bytes) -> Self {
        Reader { frame, pos: 0 }
    }

    /// Offset of the next unread byte.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.frame.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.frame.get(self.pos..).unwrap_or_default()
    }

    fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.pos, kind)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        match self.rest().first_chunk::<N>() {
            Some(bytes) => {
                self.pos += N;
                Ok(*bytes)
            }
            None => Err(self.error(DecodeErrorKind::Truncated {
                field,
                needed: N,
                remaining: self.remaining(),
            })),
        }
    }

    /// `Int8` / `Byte1`.
    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[b]| b)
    }

    /// `Int16`, unsigned (PostgreSQL reads counts with `pq_getmsgint(in, 2)`).
    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    /// `Int32`, signed.
    pub(super) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    /// `Int32`, unsigned.
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    /// `Int64`, signed.
    pub(super) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// `Int64 (XLogRecPtr)`.
    pub(super) fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.array(field).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// `Int64 (TimestampTz)`.
    pub(super) fn timestamp(&mut self, field: &'static str) -> Result<PgTimestamp, DecodeError> {
        self.i64(field).map(PgTimestamp)
    }

    /// `Int32 (TransactionId)`.
    pub(super) fn xid(&mut self, field: &'static str) -> Result<Xid, DecodeError> {
        self.u32(field).map(Xid)
    }

    /// `Int32 (Oid)`.
    pub(super) fn oid(&mut self, field: &'static str) -> Result<Oid, DecodeError> {
        self.u32(field).map(Oid)
    }

    /// An `Int32` length or count: negative is an error, and so is a value that does not fit a
    /// `usize`.
    pub(super) fn length(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let value = self.i32(field)?;
        if value < 0 {
            return Err(DecodeError::new(
                at,
                DecodeErrorKind::NegativeLength { field, value },
            ));
        }
        usize::try_from(value).map_err(|_| {
            DecodeError::new(
                at,
                DecodeErrorKind::LengthOverflow {
                    field,
                    value: u64::from(value.unsigned_abs()),
                },
            )
        })
    }

    /// Checks that `count` items of at least `min_each` bytes each can fit in what remains,
    /// before anything is allocated for them. `at` is the offset of the count field.
    pub(super) fn check_count(
        &self,
        at: usize,
        count: usize,
        min_each: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        let fits = count
            .checked_mul(min_each)
            .is_some_and(|min| min <= self.remaining());
        if fits {
            Ok(count)
        } else {
            let min_bytes = u64::try_from(count)
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::try_from(min_each).unwrap_or(u64::MAX));
            Err(DecodeError::new(
                at,
                DecodeErrorKind::CountExceedsInput {
                    field,
                    count,
                    min_bytes,
                    remaining: self.remaining(),
                },
            ))
        }
    }

    /// `Byten`: the next `len` bytes, as a slice of the frame.
    pub(super) fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let value = u64::try_from(len).unwrap_or(u64::MAX);
        let end = self
            .pos
            .checked_add(len)
            .ok_or_else(|| self.error(DecodeErrorKind::LengthOverflow { field, value }))?;
        if end > self.frame.len() {
            return Err(self.error(DecodeErrorKind::Truncated {
                field,
                needed: len,
                remaining: self.remaining(),
            }));
        }
        // In bounds: `pos <= end <= frame.len()` was just checked.
        let bytes = self.frame.slice(self.pos..end);
        self.pos = end;
        Ok(bytes)
    }

    /// `Int32` length followed by that many bytes.
    pub(super) fn counted_bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.length(field)?;
        self.bytes(len, field)
    }

    /// `String`: NUL-terminated, UTF-8.
    pub(super) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = self.rest();
        let Some(len) = memchr::memchr(0, rest) else {
            return Err(self.error(DecodeErrorKind::MissingNul { field }));
        };
        let raw = rest.get(..len).unwrap_or_default();
        let text = std::str::from_utf8(raw).map_err(|source| {
            DecodeError::new(
                self.pos.saturating_add(source.valid_up_to()),
                DecodeErrorKind::InvalidUtf8 { field, source },
            )
        })?;
        // `len < rest.len()`, so the NUL is in the frame and `pos` stays in bounds.
        self.pos += len + 1;
        Ok(text.to_owned())
    }

    /// Succeeds only when every byte has been read.
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error(DecodeErrorKind::TrailingBytes { count })),
        }
    }
}
