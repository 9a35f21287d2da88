//! Row images: `TupleData` and its column values.
//!
//! The `TupleData` layout of
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>:
//! an `Int16` column count, then per column a kind byte (`n` NULL, `u` unchanged TOAST, `t`
//! text, `b` binary) and, for `t` and `b`, an `Int32` length and the value. Values are
//! [`Bytes`] slices of the frame they were decoded from.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::reader::Reader;
use super::tag;

/// One row image, one value per column of the relation, in the Relation message's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TupleData {
    /// The column values.
    pub columns: Vec<ColumnValue>,
}

/// One column of a [`TupleData`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: a TOASTed value that the update did not change; its value is not sent.
    UnchangedToast,
    /// `t`: the value in the type's text output format (a slice of the frame).
    Text(Bytes),
    /// `b`: the value in the type's binary send format (a slice of the frame), when the
    /// `binary` option was requested.
    Binary(Bytes),
}

impl ColumnValue {
    /// The value's bytes, for `Text` and `Binary`.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            ColumnValue::Text(b) | ColumnValue::Binary(b) => Some(b),
            ColumnValue::Null | ColumnValue::UnchangedToast => None,
        }
    }

    /// True for SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, ColumnValue::Null)
    }
}

/// The old row an Update or Delete carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity key columns are meaningful; the others are NULL.
    Key(TupleData),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData),
}

impl OldTuple {
    /// The row image, whichever kind it is.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }

    /// The submessage byte it is sent with: `K` or `O`.
    pub fn tag(&self) -> u8 {
        match self {
            OldTuple::Key(_) => tag::TUPLE_KEY,
            OldTuple::Full(_) => tag::TUPLE_OLD,
        }
    }
}

/// Reads one `TupleData`.
pub(super) fn read_tuple(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
    const COUNT: &str = "tuple column count";
    let at = r.position();
    let count = usize::from(r.u16(COUNT)?);
    // Every column takes at least its kind byte.
    let count = r.check_count(at, count, 1, COUNT)?;
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.position();
        let value = match r.u8("tuple column kind")? {
            tag::COLUMN_NULL => ColumnValue::Null,
            tag::COLUMN_UNCHANGED_TOAST => ColumnValue::UnchangedToast,
            tag::COLUMN_TEXT => ColumnValue::Text(r.counted_bytes("text column value")?),
            tag::COLUMN_BINARY => ColumnValue::Binary(r.counted_bytes("binary column value")?),
            kind => {
                return Err(DecodeError::new(
                    at,
                    DecodeErrorKind::UnknownColumnKind { kind },
                ))
            }
        };
        columns.push(value);
    }
    Ok(TupleData { columns })
}

/// Writes one `TupleData`.
pub(super) fn write_tuple(tuple: &TupleData, out: &mut BytesMut) -> Result<(), EncodeError> {
    let count = u16::try_from(tuple.columns.len()).map_err(|_| EncodeError::TooMany {
        field: "tuple columns",
        count: tuple.columns.len(),
        max: usize::from(u16::MAX),
    })?;
    out.put_u16(count);
    for column in &tuple.columns {
        match column {
            ColumnValue::Null => out.put_u8(tag::COLUMN_NULL),
            ColumnValue::UnchangedToast => out.put_u8(tag::COLUMN_UNCHANGED_TOAST),
            ColumnValue::Text(value) => {
                out.put_u8(tag::COLUMN_TEXT);
                super::encode::put_counted_bytes(out, value, "text column value")?;
            }
            ColumnValue::Binary(value) => {
                out.put_u8(tag::COLUMN_BINARY);
                super::encode::put_counted_bytes(out, value, "binary column value")?;
            }
        }
    }
    Ok(())
}
