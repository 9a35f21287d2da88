//! `Value`: one column value of a decoded row, sent to green as a statement parameter exactly as
//! blue wrote it.
//!
//! A text value (`pgoutput`'s `t`) goes in the text format: green parses it with the target
//! column's own input function, so every type — built-in, arrays, json/jsonb, numeric, ranges,
//! enums, domains, composites — arrives exactly as blue printed it. This relies on blue's
//! replication session printing values in a form green's pinned session reads back
//! (`DateStyle=ISO`, `IntervalStyle=postgres`, `extra_float_digits=3`, UTF8).
//!
//! A binary value (`b`, when the stream was started with `binary`) goes in the binary format:
//! valid only when the blue and green column types are the same (same `send`/`recv` format);
//! with different types green rejects it or, worse, reads it as something else.

use blueshift_decoder::pgoutput::ColumnValue;
use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};

/// One parameter value, borrowed from a decoded row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// SQL NULL.
    Null,
    /// The type's text output.
    Text(&'a [u8]),
    /// The type's binary send format.
    Binary(&'a [u8]),
}

impl<'a> Value<'a> {
    /// The parameter for a column value; `None` for an unchanged TOAST value, which has no
    /// value to send (the caller leaves that column out of the statement).
    pub(crate) fn of(column: &'a ColumnValue) -> Option<Value<'a>> {
        match column {
            ColumnValue::Null => Some(Value::Null),
            ColumnValue::Text(b) => Some(Value::Text(b)),
            ColumnValue::Binary(b) => Some(Value::Binary(b)),
            ColumnValue::UnchangedToast => None,
        }
    }
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Text(bytes) | Value::Binary(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    /// Every type: the server, not the client, parses the value.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Value::Binary(_) => Format::Binary,
            Value::Null | Value::Text(_) => Format::Text,
        }
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn writes_bytes_as_they_are() {
        let text = ColumnValue::Text(Bytes::from_static(b"{1,NULL,\"a b\"}"));
        let value = Value::of(&text).expect("a value");
        let mut out = BytesMut::new();
        assert!(matches!(
            value.to_sql_checked(&Type::INT4_ARRAY, &mut out),
            Ok(IsNull::No)
        ));
        assert_eq!(&out[..], b"{1,NULL,\"a b\"}");
        assert!(matches!(value.encode_format(&Type::INT4), Format::Text));

        let null = ColumnValue::Null;
        let mut out = BytesMut::new();
        assert!(matches!(
            Value::of(&null).unwrap().to_sql(&Type::TEXT, &mut out),
            Ok(IsNull::Yes)
        ));
        assert!(out.is_empty());

        let binary = ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 1]));
        assert!(matches!(
            Value::of(&binary).unwrap().encode_format(&Type::INT4),
            Format::Binary
        ));
        assert_eq!(Value::of(&ColumnValue::UnchangedToast), None);
        assert!(<Value<'_> as ToSql>::accepts(&Type::JSONB));
    }
}
