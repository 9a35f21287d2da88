//! One decoded `pgoutput` message → one JSON object (a line of `blueshift tail`).
//!
//! Every object starts with `lsn` (the `XLogData` start position, `X/Y`) and `type` (the
//! message name in snake case). Row images are objects keyed by column name, in the table's
//! column order; values are the server's text form (`binary` mode values are `\x…` hex),
//! NULL is `null`, and columns whose TOASTed value an update left unchanged are left out of the
//! image and named in `unchanged_toast`. A key-only old image (`old_kind: "key"`) holds only the
//! replica identity columns.

use blueshift_decoder::pgoutput::{ColumnValue, OldTuple, PgOutputMessage, PgTimestamp, TupleData};
use blueshift_decoder::relation::{RelationCache, RelationInfo};
use blueshift_decoder::{Lsn, Oid, Xid};
use serde_json::{json, Map, Value};

/// A change names a relation the stream has not described, or its row image does not fit the
/// relation's columns.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No Relation message was seen for this OID.
    #[error("change for relation OID {oid} arrived before its Relation message")]
    UnknownRelation {
        /// The relation's OID.
        oid: Oid,
    },
    /// The row image has a different number of columns than the relation.
    #[error(
        "row image for table \"{table}\" has {got} columns but its Relation message lists {expected}"
    )]
    ColumnCount {
        /// The table, `schema.name`.
        table: String,
        /// Columns in the Relation message.
        expected: usize,
        /// Columns in the row image.
        got: usize,
    },
}

/// Renders `message`, received in the `XLogData` frame starting at `lsn`.
///
/// `relations` must already have observed `message` (a Relation renders from the cache entry).
pub(crate) fn render(
    lsn: Lsn,
    message: &PgOutputMessage,
    relations: &RelationCache,
) -> Result<Value, RenderError> {
    let mut o = Map::new();
    o.insert("lsn".into(), lsn_value(lsn));
    o.insert("type".into(), Value::from(type_name(message)));
    match message {
        PgOutputMessage::Begin(b) => {
            put_xid(&mut o, Some(b.xid));
            o.insert("final_lsn".into(), lsn_value(b.final_lsn));
            o.insert("commit_time".into(), time(b.commit_time));
        }
        PgOutputMessage::Commit(c) => {
            o.insert("commit_lsn".into(), lsn_value(c.commit_lsn));
            o.insert("end_lsn".into(), lsn_value(c.end_lsn));
            o.insert("commit_time".into(), time(c.commit_time));
        }
        PgOutputMessage::Origin(origin) => {
            o.insert("origin".into(), Value::from(origin.name.as_str()));
            o.insert("origin_lsn".into(), lsn_value(origin.commit_lsn));
        }
        PgOutputMessage::Message(m) => {
            put_xid(&mut o, m.xid);
            o.insert("transactional".into(), Value::from(m.transactional));
            o.insert("message_lsn".into(), lsn_value(m.lsn));
            o.insert("prefix".into(), Value::from(m.prefix.as_str()));
            o.insert("content".into(), bytes_value(&m.content, false));
        }
        PgOutputMessage::Relation(r) => {
            put_xid(&mut o, r.xid);
            o.insert("oid".into(), Value::from(r.oid.0));
            o.insert(
                "relation".into(),
                Value::from(relation(relations, r.oid)?.name().to_string()),
            );
            o.insert(
                "replica_identity".into(),
                Value::from(r.replica_identity.as_str()),
            );
            let columns = r
                .columns
                .iter()
                .map(|c| {
                    let type_name = relations
                        .type_name(c.type_oid)
                        .map(|t| Value::from(t.to_string()))
                        .unwrap_or(Value::Null);
                    json!({
                        "name": c.name,
                        "type_oid": c.type_oid.0,
                        "type_name": type_name,
                        "type_modifier": c.type_modifier,
                        "key": c.is_key,
                    })
                })
                .collect();
            o.insert("columns".into(), Value::Array(columns));
        }
        PgOutputMessage::Type(t) => {
            put_xid(&mut o, t.xid);
            o.insert("oid".into(), Value::from(t.oid.0));
            let name = relations.type_name(t.oid).map(|n| n.to_string());
            o.insert("name".into(), Value::from(name));
        }
        PgOutputMessage::Insert(i) => {
            put_xid(&mut o, i.xid);
            let rel = relation(relations, i.relation)?;
            o.insert("relation".into(), Value::from(rel.name().to_string()));
            put_image(&mut o, "new", &rel, &i.new, false)?;
        }
        PgOutputMessage::Update(u) => {
            put_xid(&mut o, u.xid);
            let rel = relation(relations, u.relation)?;
            o.insert("relation".into(), Value::from(rel.name().to_string()));
            if let Some(old) = &u.old {
                put_old(&mut o, &rel, old)?;
            }
            put_image(&mut o, "new", &rel, &u.new, false)?;
        }
        PgOutputMessage::Delete(d) => {
            put_xid(&mut o, d.xid);
            let rel = relation(relations, d.relation)?;
            o.insert("relation".into(), Value::from(rel.name().to_string()));
            put_old(&mut o, &rel, &d.old)?;
        }
        PgOutputMessage::Truncate(t) => {
            put_xid(&mut o, t.xid);
            let names = t
                .relations
                .iter()
                .map(|oid| relation(relations, *oid).map(|r| Value::from(r.name().to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            o.insert("relations".into(), Value::Array(names));
            o.insert("cascade".into(), Value::from(t.cascade));
            o.insert("restart_identity".into(), Value::from(t.restart_identity));
        }
        PgOutputMessage::StreamStart(s) => {
            put_xid(&mut o, Some(s.xid));
            o.insert("first_segment".into(), Value::from(s.first_segment));
        }
        PgOutputMessage::StreamStop => {}
        PgOutputMessage::StreamCommit(c) => {
            put_xid(&mut o, Some(c.xid));
            o.insert("commit_lsn".into(), lsn_value(c.commit_lsn));
            o.insert("end_lsn".into(), lsn_value(c.end_lsn));
            o.insert("commit_time".into(), time(c.commit_time));
        }
        PgOutputMessage::StreamAbort(a) => {
            put_xid(&mut o, Some(a.xid));
            o.insert("subxid".into(), Value::from(a.subxid.0));
            if let Some(info) = &a.parallel {
                o.insert("abort_lsn".into(), lsn_value(info.abort_lsn));
                o.insert("abort_time".into(), time(info.abort_time));
            }
        }
        PgOutputMessage::BeginPrepare(b) => {
            put_xid(&mut o, Some(b.xid));
            o.insert("gid".into(), Value::from(b.gid.as_str()));
            o.insert("prepare_lsn".into(), lsn_value(b.prepare_lsn));
            o.insert("end_lsn".into(), lsn_value(b.end_lsn));
            o.insert("prepare_time".into(), time(b.prepare_time));
        }
        PgOutputMessage::Prepare(p) | PgOutputMessage::StreamPrepare(p) => {
            put_xid(&mut o, Some(p.xid));
            o.insert("gid".into(), Value::from(p.gid.as_str()));
            o.insert("prepare_lsn".into(), lsn_value(p.prepare_lsn));
            o.insert("end_lsn".into(), lsn_value(p.end_lsn));
            o.insert("prepare_time".into(), time(p.prepare_time));
        }
        PgOutputMessage::CommitPrepared(c) => {
            put_xid(&mut o, Some(c.xid));
            o.insert("gid".into(), Value::from(c.gid.as_str()));
            o.insert("commit_lsn".into(), lsn_value(c.commit_lsn));
            o.insert("end_lsn".into(), lsn_value(c.end_lsn));
            o.insert("commit_time".into(), time(c.commit_time));
        }
        PgOutputMessage::RollbackPrepared(r) => {
            put_xid(&mut o, Some(r.xid));
            o.insert("gid".into(), Value::from(r.gid.as_str()));
            o.insert("prepare_end_lsn".into(), lsn_value(r.prepare_end_lsn));
            o.insert("rollback_end_lsn".into(), lsn_value(r.rollback_end_lsn));
            o.insert("prepare_time".into(), time(r.prepare_time));
            o.insert("rollback_time".into(), time(r.rollback_time));
        }
    }
    Ok(Value::Object(o))
}

/// The `type` field: the message name in snake case.
pub(crate) fn type_name(message: &PgOutputMessage) -> &'static str {
    match message {
        PgOutputMessage::Begin(_) => "begin",
        PgOutputMessage::Message(_) => "message",
        PgOutputMessage::Commit(_) => "commit",
        PgOutputMessage::Origin(_) => "origin",
        PgOutputMessage::Relation(_) => "relation",
        PgOutputMessage::Type(_) => "type",
        PgOutputMessage::Insert(_) => "insert",
        PgOutputMessage::Update(_) => "update",
        PgOutputMessage::Delete(_) => "delete",
        PgOutputMessage::Truncate(_) => "truncate",
        PgOutputMessage::StreamStart(_) => "stream_start",
        PgOutputMessage::StreamStop => "stream_stop",
        PgOutputMessage::StreamCommit(_) => "stream_commit",
        PgOutputMessage::StreamAbort(_) => "stream_abort",
        PgOutputMessage::BeginPrepare(_) => "begin_prepare",
        PgOutputMessage::Prepare(_) => "prepare",
        PgOutputMessage::CommitPrepared(_) => "commit_prepared",
        PgOutputMessage::RollbackPrepared(_) => "rollback_prepared",
        PgOutputMessage::StreamPrepare(_) => "stream_prepare",
    }
}

fn relation(
    relations: &RelationCache,
    oid: Oid,
) -> Result<std::sync::Arc<RelationInfo>, RenderError> {
    relations
        .get(oid)
        .ok_or(RenderError::UnknownRelation { oid })
}

fn put_xid(o: &mut Map<String, Value>, xid: Option<Xid>) {
    if let Some(xid) = xid {
        o.insert("xid".into(), Value::from(xid.0));
    }
}

fn put_old(
    o: &mut Map<String, Value>,
    rel: &RelationInfo,
    old: &OldTuple,
) -> Result<(), RenderError> {
    let (kind, key_only) = match old {
        OldTuple::Key(_) => ("key", true),
        OldTuple::Full(_) => ("full", false),
    };
    o.insert("old_kind".into(), Value::from(kind));
    put_image(o, "old", rel, old.tuple(), key_only)
}

/// Inserts `field` (the row as an object) and, when some columns are unchanged TOAST, the
/// list of them as `unchanged_toast`.
fn put_image(
    o: &mut Map<String, Value>,
    field: &str,
    rel: &RelationInfo,
    tuple: &TupleData,
    key_only: bool,
) -> Result<(), RenderError> {
    let columns = rel.columns();
    if columns.len() != tuple.columns.len() {
        return Err(RenderError::ColumnCount {
            table: rel.name().to_string(),
            expected: columns.len(),
            got: tuple.columns.len(),
        });
    }
    let mut row = Map::new();
    let mut unchanged = Vec::new();
    for (column, value) in columns.iter().zip(&tuple.columns) {
        if key_only && !column.is_key {
            continue;
        }
        let v = match value {
            ColumnValue::Null => Value::Null,
            ColumnValue::UnchangedToast => {
                unchanged.push(Value::from(column.name.as_str()));
                continue;
            }
            ColumnValue::Text(b) => bytes_value(b, false),
            ColumnValue::Binary(b) => bytes_value(b, true),
        };
        row.insert(column.name.clone(), v);
    }
    o.insert(field.into(), Value::Object(row));
    if !unchanged.is_empty() {
        o.insert("unchanged_toast".into(), Value::Array(unchanged));
    }
    Ok(())
}

/// Text as a string when it is UTF-8 and `binary` is false; otherwise `\x` and hex, as
/// PostgreSQL prints `bytea`.
fn bytes_value(b: &[u8], binary: bool) -> Value {
    if !binary {
        if let Ok(s) = std::str::from_utf8(b) {
            return Value::from(s);
        }
    }
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for byte in b {
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0xF)]));
    }
    Value::from(s)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn lsn_value(lsn: Lsn) -> Value {
    Value::from(lsn.to_string())
}

fn time(t: PgTimestamp) -> Value {
    Value::from(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use blueshift_decoder::pgoutput::{
        InsertBody, RelationBody, RelationColumn, ReplicaIdentity, UpdateBody,
    };
    use bytes::Bytes;

    fn cache() -> RelationCache {
        let mut cache = RelationCache::new();
        cache.observe(&PgOutputMessage::Relation(RelationBody {
            xid: None,
            oid: Oid(16_384),
            namespace: "public".into(),
            name: "we\"ird".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "id".into(),
                    type_oid: Oid(23),
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: false,
                    name: "doc".into(),
                    type_oid: Oid(25),
                    type_modifier: -1,
                },
            ],
        }));
        cache
    }

    #[test]
    fn update_with_key_image_and_unchanged_toast() {
        let message = PgOutputMessage::Update(UpdateBody {
            xid: None,
            relation: Oid(16_384),
            old: Some(OldTuple::Key(TupleData {
                columns: vec![
                    ColumnValue::Text(Bytes::from_static(b"1")),
                    ColumnValue::Null,
                ],
            })),
            new: TupleData {
                columns: vec![
                    ColumnValue::Text(Bytes::from_static(b"2")),
                    ColumnValue::UnchangedToast,
                ],
            },
        });
        let v = render(Lsn(0x1_0000_0010), &message, &cache()).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"lsn":"1/10","type":"update","relation":"public.we\"ird","old_kind":"key","old":{"id":"1"},"new":{"id":"2"},"unchanged_toast":["doc"]}"#
        );
    }

    #[test]
    fn binary_and_invalid_utf8_values_are_hex() {
        let message = PgOutputMessage::Insert(InsertBody {
            xid: Some(Xid(7)),
            relation: Oid(16_384),
            new: TupleData {
                columns: vec![
                    ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 1])),
                    ColumnValue::Text(Bytes::from_static(&[0xff, b'a'])),
                ],
            },
        });
        let v = render(Lsn(1), &message, &cache()).unwrap();
        assert_eq!(v["xid"], 7);
        assert_eq!(v["new"]["id"], "\\x00000001");
        assert_eq!(v["new"]["doc"], "\\xff61");
    }

    #[test]
    fn unknown_relation_and_column_mismatch_are_errors() {
        let message = PgOutputMessage::Insert(InsertBody {
            xid: None,
            relation: Oid(1),
            new: TupleData::default(),
        });
        assert!(matches!(
            render(Lsn(1), &message, &cache()),
            Err(RenderError::UnknownRelation { oid: Oid(1) })
        ));
        let message = PgOutputMessage::Insert(InsertBody {
            xid: None,
            relation: Oid(16_384),
            new: TupleData::default(),
        });
        let err = render(Lsn(1), &message, &cache()).unwrap_err();
        assert!(err.to_string().contains("has 0 columns"), "{err}");
    }
}
