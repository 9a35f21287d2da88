use super::*;
use crate::target::TargetColumn;
use blueshift_decoder::pgoutput::{RelationBody, RelationColumn};
use blueshift_decoder::Oid;
use bytes::Bytes;

fn relation(identity: ReplicaIdentity, keys: &[bool]) -> RelationInfo {
    RelationInfo::from_message(&RelationBody {
        xid: None,
        oid: Oid(1),
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: identity,
        columns: keys
            .iter()
            .enumerate()
            .map(|(i, &is_key)| RelationColumn {
                is_key,
                name: format!("c{i}"),
                type_oid: Oid(25),
                type_modifier: -1,
            })
            .collect(),
    })
}

fn target(relation: &RelationInfo) -> TargetTable {
    TargetTable {
        id: 1,
        display: relation.name().to_string(),
        quoted: "\"public\".\"t\"".into(),
        partitioned: false,
        columns: relation
            .columns()
            .iter()
            .enumerate()
            .map(|(blue, c)| TargetColumn {
                name: c.name.clone(),
                quoted: format!("\"{}\"", c.name),
                green_type: "text".to_owned(),
                blue,
                equality: crate::target::CATALOG_EQUALITY.to_owned(),
            })
            .collect(),
        blue_width: relation.columns().len(),
        key: relation.key_columns().to_vec(),
        green_key: relation.key_columns().to_vec(),
        foldable: Err("test"),
        insertable: Err("test"),
        full_indexes: Vec::new(),
        identity_full: relation.replica_identity() == ReplicaIdentity::Full,
        schema: "public".into(),
        name: "t".into(),
    }
}

fn text(s: &'static str) -> ColumnValue {
    ColumnValue::Text(Bytes::from_static(s.as_bytes()))
}

fn tuple(columns: Vec<ColumnValue>) -> TupleData {
    TupleData { columns }
}

#[test]
fn locates_by_old_key_new_key_or_full_row() {
    let keyed = relation(ReplicaIdentity::Default, &[true, false, false]);
    let t = target(&keyed);
    let new = tuple(vec![
        text("1"),
        ColumnValue::UnchangedToast,
        ColumnValue::Null,
    ]);
    assert_eq!(&*present(&t, &new), &[0, 2]);

    let (found, source) = locate(&t, &keyed, Operation::Update, None, &new).unwrap();
    assert_eq!(found, Locate::Key(vec![0].into()));
    assert_eq!(source, &new);

    let old = OldTuple::Key(tuple(vec![text("0"), ColumnValue::Null, ColumnValue::Null]));
    let (found, source) = locate(&t, &keyed, Operation::Update, Some(&old), &new).unwrap();
    assert_eq!(found, Locate::Key(vec![0].into()));
    assert_eq!(source, old.tuple());
    let mut params = Vec::new();
    push_locating(&mut params, &t, &found, source);
    assert_eq!(params, vec![text("0")]);

    let full_rel = relation(ReplicaIdentity::Full, &[true, true, true]);
    let old = OldTuple::Full(tuple(vec![
        text("0"),
        ColumnValue::UnchangedToast,
        ColumnValue::Null,
    ]));
    let (found, _) = locate(
        &target(&full_rel),
        &full_rel,
        Operation::Delete,
        Some(&old),
        old.tuple(),
    )
    .unwrap();
    assert_eq!(
        found,
        Locate::Full {
            columns: vec![0, 2].into(),
            index: None
        }
    );

    let keyless = relation(ReplicaIdentity::Default, &[false, false, false]);
    let err = locate(&target(&keyless), &keyless, Operation::Update, None, &new).unwrap_err();
    assert!(
        matches!(err, ApplyError::NoReplicaIdentity { .. }),
        "{err:?}"
    );

    let short = OldTuple::Key(tuple(vec![text("0")]));
    let err = locate(&t, &keyed, Operation::Delete, Some(&short), short.tuple()).unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::RowShape {
                expected: 3,
                got: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Blue's `c1` is not on green: green's columns are blue's `c0` (renamed `k`) and `c2`.
fn dropping_c1(relation: &RelationInfo) -> TargetTable {
    let mut t = target(relation);
    t.columns.remove(1);
    t.columns[0].name = "k".into();
    t.key = vec![0];
    t
}

#[test]
fn a_column_not_carried_is_left_out_of_sets_and_locates() {
    let keyed = relation(ReplicaIdentity::Default, &[true, false, false]);
    let t = dropping_c1(&keyed);
    // An UPDATE that changed only c1 still sets (and so finds) the row by its key.
    let new = tuple(vec![text("1"), text("only c1 changed"), text("x")]);
    assert_eq!(&*present(&t, &new), &[0, 1]);
    let (found, source) = locate(&t, &keyed, Operation::Update, None, &new).unwrap();
    assert_eq!(found, Locate::Key(vec![0].into()));
    let mut params = Vec::new();
    push_locating(&mut params, &t, &found, source);
    assert_eq!(params, vec![text("1")]);

    // REPLICA IDENTITY FULL: the row is found by the carried columns only.
    let full = relation(ReplicaIdentity::Full, &[true, true, true]);
    let t = dropping_c1(&full);
    let old = OldTuple::Full(tuple(vec![text("1"), text("gone"), ColumnValue::Null]));
    let (found, source) = locate(&t, &full, Operation::Delete, Some(&old), old.tuple()).unwrap();
    assert_eq!(
        found,
        Locate::Full {
            columns: vec![0, 1].into(),
            index: None
        }
    );
    let mut params = Vec::new();
    push_locating(&mut params, &t, &found, source);
    assert_eq!(params, vec![text("1"), ColumnValue::Null]);

    // Rows are checked against blue's width, not green's.
    let short = OldTuple::Full(tuple(vec![text("1"), ColumnValue::Null]));
    let err = locate(&t, &full, Operation::Delete, Some(&short), short.tuple()).unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::RowShape {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[derive(Debug)]
struct Spill(Vec<Change>, u64);

impl SpilledChanges for Spill {
    fn next_change(&mut self) -> io::Result<Option<Change>> {
        Ok(self.0.pop())
    }

    fn len(&self) -> u64 {
        self.1
    }

    fn rewind(&mut self) -> io::Result<()> {
        Err(io::Error::other("not rewound in this test"))
    }

    fn relations(&self) -> Vec<Arc<RelationInfo>> {
        Changes::InMemory(self.0.clone()).relations()
    }
}

#[test]
fn a_spill_is_read_once() {
    let rel = Arc::new(relation(ReplicaIdentity::Default, &[true]));
    let change = Change::Insert {
        relation: rel,
        new: tuple(vec![text("1")]),
    };
    let mut changes = Changes::Spilled(Box::new(Spill(vec![change], 1)));
    let mut cursor = Cursor::new(&mut changes);
    assert!(matches!(cursor.next(), Ok(Some(Cow::Owned(_)))));
    assert!(matches!(cursor.next(), Ok(None)));
    let mut again = Cursor::new(&mut changes);
    let err = again.next().unwrap_err();
    assert!(err.to_string().contains("0 of its 1"), "{err}");
}
