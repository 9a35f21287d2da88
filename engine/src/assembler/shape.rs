//! A change's row images against the description of its relation: one value per column of the
//! latest Relation message, and in a key-only old row (`K`) nothing but NULL outside the replica
//! identity columns — PostgreSQL builds that row from the identity columns alone
//! (`ExtractReplicaIdentity`) and sends every other column as NULL.
//!
//! The decoder cannot check this (it parses one frame at a time, without the relation cache),
//! and the applier would notice only the width, and only once the transaction is being applied.
//! A change that does not fit is refused here, before it is buffered.

use blueshift_applier::Change;
use blueshift_decoder::pgoutput::{OldTuple, TupleData};
use blueshift_decoder::relation::RelationInfo;
use blueshift_decoder::Xid;

use super::error::AssembleError;

/// Checks every row image of `change` against its relation; `message` is the protocol's name of
/// the message it came from.
pub(super) fn check(xid: Xid, message: &'static str, change: &Change) -> Result<(), AssembleError> {
    match change {
        Change::Insert { relation, new } => width(xid, message, relation, "new", new),
        Change::Update { relation, old, new } => {
            if let Some(old) = old {
                check_old(xid, message, relation, old)?;
            }
            width(xid, message, relation, "new", new)
        }
        Change::Delete { relation, old } => check_old(xid, message, relation, old),
        Change::Truncate { .. } => Ok(()),
    }
}

fn check_old(
    xid: Xid,
    message: &'static str,
    relation: &RelationInfo,
    old: &OldTuple,
) -> Result<(), AssembleError> {
    match old {
        OldTuple::Full(tuple) => width(xid, message, relation, "old", tuple),
        OldTuple::Key(tuple) => {
            width(xid, message, relation, "key-only old", tuple)?;
            let value_outside_key = tuple
                .columns
                .iter()
                .zip(relation.columns())
                .find(|(value, column)| !column.is_key && !value.is_null());
            match value_outside_key {
                None => Ok(()),
                Some((_, column)) => Err(AssembleError::ValueOutsideKey {
                    message,
                    xid,
                    relation: relation.name().to_string(),
                    oid: relation.oid(),
                    column: column.name.clone(),
                }),
            }
        }
    }
}

fn width(
    xid: Xid,
    message: &'static str,
    relation: &RelationInfo,
    image: &'static str,
    tuple: &TupleData,
) -> Result<(), AssembleError> {
    let expected = relation.columns().len();
    if tuple.columns.len() == expected {
        Ok(())
    } else {
        Err(AssembleError::ColumnCount {
            message,
            xid,
            image,
            got: tuple.columns.len(),
            relation: relation.name().to_string(),
            oid: relation.oid(),
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use blueshift_decoder::pgoutput::{
        BeginBody, ColumnValue, DeleteBody, InsertBody, PgOutputMessage, PgTimestamp, UpdateBody,
    };
    use blueshift_decoder::{Lsn, Oid};
    use bytes::Bytes;

    use super::super::tests::relation;
    use super::super::{AssemblerOptions, TxAssembler};
    use super::*;

    fn row(values: &[Option<&'static str>]) -> TupleData {
        TupleData {
            columns: values
                .iter()
                .map(|v| match v {
                    Some(v) => ColumnValue::Text(Bytes::from_static(v.as_bytes())),
                    None => ColumnValue::Null,
                })
                .collect(),
        }
    }

    /// An assembler inside transaction 7, which has seen relation 1 described with `columns`
    /// columns (the first one the key); `max_memory` 0 spills every change.
    fn open(dir: &std::path::Path, columns: usize, max_memory: usize) -> TxAssembler {
        let mut a = TxAssembler::new(AssemblerOptions {
            max_memory,
            spill_dir: dir.to_owned(),
            skip_origin_prefix: None,
        })
        .unwrap();
        a.push(relation(1, columns, None)).unwrap();
        a.push(PgOutputMessage::Begin(BeginBody {
            final_lsn: Lsn(100),
            commit_time: PgTimestamp(0),
            xid: Xid(7),
        }))
        .unwrap();
        a
    }

    fn insert(new: TupleData) -> PgOutputMessage {
        PgOutputMessage::Insert(InsertBody {
            xid: None,
            relation: Oid(1),
            new,
        })
    }

    fn update(old: Option<OldTuple>, new: TupleData) -> PgOutputMessage {
        PgOutputMessage::Update(UpdateBody {
            xid: None,
            relation: Oid(1),
            old,
            new,
        })
    }

    fn delete(old: OldTuple) -> PgOutputMessage {
        PgOutputMessage::Delete(DeleteBody {
            xid: None,
            relation: Oid(1),
            old,
        })
    }

    #[test]
    fn a_change_with_another_column_count_than_its_relation_is_refused() {
        let three = || row(&[Some("1"), Some("a"), None]);
        let cases = [
            (insert(three()), "Insert", "new"),
            (update(None, three()), "Update", "new"),
            (
                update(Some(OldTuple::Full(three())), row(&[Some("1")])),
                "Update",
                "old",
            ),
            (
                update(Some(OldTuple::Key(three())), row(&[Some("1")])),
                "Update",
                "key-only old",
            ),
            (delete(OldTuple::Full(three())), "Delete", "old"),
            (delete(OldTuple::Key(row(&[]))), "Delete", "key-only old"),
        ];
        for max_memory in [usize::MAX, 0] {
            for (message, name, row_image) in cases.clone() {
                let dir = tempfile::tempdir().unwrap();
                let mut a = open(dir.path(), 1, max_memory);
                let error = a.push(message).unwrap_err();
                let AssembleError::ColumnCount {
                    message,
                    xid,
                    image,
                    got,
                    relation,
                    oid,
                    expected,
                } = &error
                else {
                    panic!("{name} {row_image}: {error:?}");
                };
                assert_eq!(
                    (*message, *xid, *image, *oid, relation.as_str(), *expected),
                    (name, Xid(7), row_image, Oid(1), "public.t1", 1)
                );
                assert_ne!(*got, 1);
                let text = error.to_string();
                assert!(
                    text.contains("relation public.t1 (OID 1) was described with 1"),
                    "{text}"
                );
                // Nothing was buffered: the refused change cost no memory.
                assert_eq!(a.stats().buffered_bytes, 0);
            }
        }
        // Rows that fit pass, in memory and spilled.
        for max_memory in [usize::MAX, 0] {
            let dir = tempfile::tempdir().unwrap();
            let mut a = open(dir.path(), 3, max_memory);
            a.push(insert(three())).unwrap();
            a.push(update(Some(OldTuple::Full(three())), three()))
                .unwrap();
            a.push(delete(OldTuple::Key(row(&[Some("1"), None, None]))))
                .unwrap();
        }
    }

    #[test]
    fn a_key_only_old_row_with_a_value_outside_the_key_is_refused() {
        let key_only = || OldTuple::Key(row(&[Some("1"), None, None]));
        let with_value = || OldTuple::Key(row(&[Some("1"), None, Some("x")]));
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(dir.path(), 3, usize::MAX);
        a.push(delete(key_only())).unwrap();
        a.push(update(Some(key_only()), row(&[Some("2"), Some("b"), None])))
            .unwrap();
        // A full old row carries every column.
        a.push(delete(OldTuple::Full(row(&[
            Some("1"),
            Some("a"),
            Some("x"),
        ]))))
        .unwrap();
        for message in [
            delete(with_value()),
            update(Some(with_value()), row(&[Some("2"), None, None])),
        ] {
            let error = a.push(message).unwrap_err();
            let AssembleError::ValueOutsideKey {
                xid, column, oid, ..
            } = &error
            else {
                panic!("{error:?}");
            };
            assert_eq!((*xid, column.as_str(), *oid), (Xid(7), "c2", Oid(1)));
            assert!(
                error
                    .to_string()
                    .contains("value in column \"c2\" of relation public.t1"),
                "{error}"
            );
        }
        // An unchanged TOAST marker outside the key is a value PostgreSQL never sends there.
        let toast = OldTuple::Key(TupleData {
            columns: vec![
                ColumnValue::Text(Bytes::from_static(b"1")),
                ColumnValue::UnchangedToast,
                ColumnValue::Null,
            ],
        });
        assert!(matches!(
            a.push(delete(toast)).unwrap_err(),
            AssembleError::ValueOutsideKey { .. }
        ));
    }
}
