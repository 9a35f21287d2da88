//! Writesets: which rows a transaction touches, as xxh3 hashes (seeded with a secret of the
//! process) of (table, unique key, key values), so the scheduler can run transactions that
//! share none of them at the same time.
//!
//! A transaction's writeset holds, for every change and for both its old and its new row image,
//! one hash per unique key of the table: blue's replica identity and **every unique index on
//! green** (primary key included) whose columns are all known and non-NULL in that image (NULLs
//! never collide in a unique index). Two transactions that could touch the same row, or the same
//! unique value, share a hash.
//!
//! Where a key cannot be computed the writeset falls back to coarser locks, never to none:
//! - a table with no usable unique key on green (no unique index, or only expression indexes)
//!   and no replica identity key: one hash for the whole table;
//! - a key column whose value is an unchanged TOAST value: the whole table;
//! - TRUNCATE, and a transaction spilled to disk (its changes are not in memory): a **barrier**
//!   that conflicts with every transaction in flight.
//!
//! Blue sends each value in its type's canonical text (or binary) form, so equal keys from blue
//! hash equally. Green's key columns are found in blue's rows through the configured mapping
//! (a green column renamed from blue's `name` is read from blue's `name`; one whose blue column
//! is excluded is filled by no blue column, so that key is not used).
//!
//! Green's unique keys are read once per table, and read again after the reader forgets the
//! table ([`KeyCatalog::forget`]): when blue's definition of it changes, and so when the
//! operator changed green's table for a change sync waited on.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use blueshift_applier::{Change, Mapping, Transaction};
use blueshift_decoder::pgoutput::{ColumnValue, TupleData};
use blueshift_decoder::relation::RelationInfo;
use tokio_postgres::Client;
use xxhash_rust::xxh3::Xxh3;

/// The rows a transaction may touch.
///
/// Two writesets conflict when either is a barrier, when they share a key hash, or when one
/// locks a table the other touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Writeset {
    /// Conflicts with every transaction.
    pub(crate) barrier: bool,
    /// Row keys (sorted, unique).
    pub(crate) keys: Vec<u64>,
    /// Every table it changes (sorted, unique).
    pub(crate) touched: Vec<u64>,
    /// Tables it changes in ways no key describes (sorted, unique).
    pub(crate) locked: Vec<u64>,
}

impl Writeset {
    /// Conflicts with everything.
    pub(crate) fn barrier() -> Writeset {
        Writeset {
            barrier: true,
            ..Writeset::default()
        }
    }

    /// Whether `self` and `other` may touch the same row.
    #[cfg(test)]
    pub(crate) fn conflicts_with(&self, other: &Writeset) -> bool {
        let shares = |a: &[u64], b: &[u64]| a.iter().any(|h| b.binary_search(h).is_ok());
        self.barrier
            || other.barrier
            || shares(&self.keys, &other.keys)
            || shares(&self.locked, &other.touched)
            || shares(&self.touched, &other.locked)
    }
}

/// A unique key of a table on green, by column names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UniqueKey {
    /// Distinguishes keys of one table in the hash.
    id: u32,
    columns: Vec<String>,
}

/// What green says about one table's unique keys.
#[derive(Debug, Clone, Default)]
struct TableKeys {
    keys: Vec<UniqueKey>,
    /// A unique index on an expression exists: its values cannot be computed here.
    has_expression_key: bool,
}

/// For one relation description: which columns of its tuples form each key.
#[derive(Debug)]
struct ResolvedKeys {
    /// The table's hash ([`table_hash`]), computed once.
    table: u64,
    /// Per key, the hash of (schema, table, key id) that seeds each value's hash, and the
    /// column positions in the tuple.
    keys: Vec<(u64, Vec<usize>)>,
    /// No key covers every change: lock the whole table.
    table_lock: bool,
}

/// Unique keys of green's tables, read from its catalog once per table.
#[derive(Debug, Default)]
pub(crate) struct KeyCatalog {
    tables: HashMap<(String, String), TableKeys>,
    /// Per relation description (pointer identity of the `Arc`, which changes with every
    /// Relation message), the resolved column positions.
    resolved: HashMap<usize, (Arc<RelationInfo>, Arc<ResolvedKeys>)>,
    /// Blue's column → green's, to find green's key columns in blue's rows.
    mapping: Arc<Mapping>,
}

/// Green's catalog could not be read.
#[derive(Debug, thiserror::Error)]
#[error("could not read the unique indexes of table \"{schema}.{table}\" on green")]
pub struct KeyCatalogError {
    schema: String,
    table: String,
    #[source]
    source: tokio_postgres::Error,
}

const UNIQUE_KEYS_SQL: &str = "
SELECT i.indexrelid::int8,
       i.indnkeyatts::int4,
       pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.ord) FILTER (WHERE k.ord <= i.indnkeyatts) AS columns,
       bool_or(k.attnum = 0 AND k.ord <= i.indnkeyatts) AS has_expression
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, ord)
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
 WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indisvalid
 GROUP BY i.indexrelid, i.indnkeyatts
 ORDER BY i.indexrelid";

impl KeyCatalog {
    /// An empty catalog; green's key columns are mapped back to blue's through `mapping`.
    pub(crate) fn new(mapping: Arc<Mapping>) -> KeyCatalog {
        KeyCatalog {
            mapping,
            ..KeyCatalog::default()
        }
    }

    /// Forgets what green said about `schema.table`: it is read again when next needed (blue's
    /// definition of the table changed, or green's did while sync waited for it).
    pub(crate) fn forget(&mut self, schema: &str, table: &str) {
        self.tables.retain(|(s, t), _| !(s == schema && t == table));
        self.resolved.retain(|_, (relation, _)| {
            let name = relation.name();
            !(name.schema() == schema && name.name == table)
        });
    }

    /// Reads the unique keys of every table `tx` touches that has not been read yet.
    pub(crate) async fn load_for(
        &mut self,
        green: &Client,
        tx: &Transaction,
    ) -> Result<(), KeyCatalogError> {
        let Some(changes) = tx.changes.in_memory() else {
            return Ok(());
        };
        for change in changes {
            for relation in relations_of(change) {
                // The common case, a description already resolved: no lookup by name (and no
                // allocation) per change.
                if self.is_resolved(relation) {
                    continue;
                }
                let name = relation.name();
                let key = (name.schema().to_owned(), name.name.clone());
                if self.tables.contains_key(&key) {
                    continue;
                }
                let rows = green
                    .query(UNIQUE_KEYS_SQL, &[&key.0, &key.1])
                    .await
                    .map_err(|source| KeyCatalogError {
                        schema: key.0.clone(),
                        table: key.1.clone(),
                        source,
                    })?;
                let mut table = TableKeys::default();
                for (n, row) in rows.iter().enumerate() {
                    if row.get::<_, Option<bool>>(3).unwrap_or(false) {
                        table.has_expression_key = true;
                        continue;
                    }
                    let columns: Vec<String> =
                        row.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
                    table.keys.push(UniqueKey {
                        id: u32::try_from(n + 1).unwrap_or(u32::MAX),
                        columns,
                    });
                }
                self.tables.insert(key, table);
            }
        }
        Ok(())
    }

    /// Test and serial use: declares a table's unique keys by column names.
    #[cfg(test)]
    fn declare(&mut self, schema: &str, table: &str, keys: &[&[&str]]) {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(n, cols)| UniqueKey {
                id: u32::try_from(n + 1).unwrap_or(u32::MAX),
                columns: cols.iter().map(|c| (*c).to_owned()).collect(),
            })
            .collect();
        self.tables.insert(
            (schema.to_owned(), table.to_owned()),
            TableKeys {
                keys,
                has_expression_key: false,
            },
        );
    }

    /// The writeset of `tx`. Tables not loaded with [`KeyCatalog::load_for`] count as having
    /// only blue's replica identity key.
    pub(crate) fn writeset(&mut self, tx: &Transaction) -> Writeset {
        let Some(changes) = tx.changes.in_memory() else {
            return Writeset::barrier();
        };
        let mut ws = Writeset::default();
        for change in changes {
            match change {
                Change::Truncate { .. } => return Writeset::barrier(),
                Change::Insert { relation, new } => {
                    let keys = self.resolve(relation);
                    hash_image(&keys, new, &mut ws);
                }
                Change::Update { relation, old, new } => {
                    let keys = self.resolve(relation);
                    if let Some(old) = old {
                        hash_image(&keys, old.tuple(), &mut ws);
                    }
                    hash_image(&keys, new, &mut ws);
                }
                Change::Delete { relation, old } => {
                    let keys = self.resolve(relation);
                    hash_image(&keys, old.tuple(), &mut ws);
                }
            }
        }
        for v in [&mut ws.keys, &mut ws.touched, &mut ws.locked] {
            v.sort_unstable();
            v.dedup();
        }
        ws
    }

    /// Whether this very description (not only its table) was resolved already, and so its
    /// table's keys loaded.
    fn is_resolved(&self, relation: &Arc<RelationInfo>) -> bool {
        self.resolved
            .get(&(Arc::as_ptr(relation) as usize))
            .is_some_and(|(held, _)| Arc::ptr_eq(held, relation))
    }

    fn resolve(&mut self, relation: &Arc<RelationInfo>) -> Arc<ResolvedKeys> {
        let ptr = Arc::as_ptr(relation) as usize;
        if let Some((held, keys)) = self.resolved.get(&ptr) {
            if Arc::ptr_eq(held, relation) {
                return Arc::clone(keys);
            }
        }
        let name = relation.name();
        let table = self
            .tables
            .get(&(name.schema().to_owned(), name.name.clone()))
            .cloned()
            .unwrap_or_default();
        let mut keys = Vec::new();
        // Blue's replica identity (key columns flagged in the Relation message), id 0.
        let identity: Vec<usize> = relation.key_columns().to_vec();
        let full_identity = !identity.is_empty() && identity.len() == relation.columns().len();
        if !identity.is_empty() && !full_identity {
            keys.push((0, identity));
        }
        for key in &table.keys {
            let positions: Option<Vec<usize>> = key
                .columns
                .iter()
                .map(|c| {
                    let blue = self.mapping.blue_column(name.schema(), &name.name, c)?;
                    relation.column_index(blue)
                })
                .collect();
            // A key column no blue column fills takes green's default: the key's value is
            // unknown here, so it cannot be used.
            if let Some(positions) = positions {
                if !positions.is_empty() {
                    keys.push((key.id, positions));
                }
            }
        }
        let table_lock = keys.is_empty() || table.has_expression_key;
        let keys = keys
            .into_iter()
            .map(|(id, positions)| (key_seed(name.schema(), &name.name, id), positions))
            .collect();
        let resolved = Arc::new(ResolvedKeys {
            table: table_hash(name.schema(), &name.name),
            keys,
            table_lock,
        });
        self.resolved
            .insert(ptr, (Arc::clone(relation), Arc::clone(&resolved)));
        resolved
    }
}

fn relations_of(change: &Change) -> &[Arc<RelationInfo>] {
    match change {
        Change::Insert { relation, .. }
        | Change::Update { relation, .. }
        | Change::Delete { relation, .. } => std::slice::from_ref(relation),
        Change::Truncate { relations, .. } => relations,
    }
}

/// Adds the hashes of one row image.
fn hash_image(keys: &ResolvedKeys, tuple: &TupleData, ws: &mut Writeset) {
    let table = keys.table;
    ws.touched.push(table);
    if keys.table_lock {
        ws.locked.push(table);
        return;
    }
    for (seed, positions) in &keys.keys {
        let mut h = Xxh3::with_seed(*seed);
        let mut usable = true;
        for &p in positions {
            match tuple.columns.get(p) {
                Some(ColumnValue::Text(v) | ColumnValue::Binary(v)) => {
                    h.update(&u64::try_from(v.len()).unwrap_or(u64::MAX).to_le_bytes());
                    h.update(v);
                }
                // NULLs never collide in a unique index; a key-only old image leaves non-key
                // columns NULL too. Either way this key says nothing about this image.
                Some(ColumnValue::Null) | None => {
                    usable = false;
                    break;
                }
                Some(ColumnValue::UnchangedToast) => {
                    ws.locked.push(table);
                    usable = false;
                    break;
                }
            }
        }
        if usable {
            ws.keys.push(h.digest());
        }
    }
}

/// A secret of this process that every hash here starts from, so that rows written on blue
/// cannot be chosen to collide in the scheduler's maps (which use these hashes as they are).
fn secret() -> u64 {
    static SECRET: OnceLock<u64> = OnceLock::new();
    *SECRET.get_or_init(|| RandomState::new().build_hasher().finish())
}

/// What one key's value hashes start from: the table and which of its keys.
fn key_seed(schema: &str, table: &str, id: u32) -> u64 {
    let mut h = Xxh3::with_seed(secret());
    h.update(schema.as_bytes());
    h.update(&[0]);
    h.update(table.as_bytes());
    h.update(&[0]);
    h.update(&id.to_le_bytes());
    h.digest()
}

fn table_hash(schema: &str, table: &str) -> u64 {
    let mut h = Xxh3::with_seed(secret());
    h.update(b"table\0");
    h.update(schema.as_bytes());
    h.update(&[0]);
    h.update(table.as_bytes());
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use blueshift_applier::{Changes, Transaction};
    use blueshift_decoder::pgoutput::{
        OldTuple, PgTimestamp, RelationBody, RelationColumn, ReplicaIdentity,
    };
    use blueshift_decoder::{Lsn, Oid, Xid};
    use bytes::Bytes;

    fn relation(name: &str, identity: ReplicaIdentity, cols: &[(&str, bool)]) -> Arc<RelationInfo> {
        Arc::new(RelationInfo::from_message(&RelationBody {
            xid: None,
            oid: Oid(1),
            namespace: "public".into(),
            name: name.into(),
            replica_identity: identity,
            columns: cols
                .iter()
                .map(|(n, key)| RelationColumn {
                    is_key: *key,
                    name: (*n).into(),
                    type_oid: Oid(25),
                    type_modifier: -1,
                })
                .collect(),
        }))
    }

    fn row(values: &[Option<&str>]) -> TupleData {
        TupleData {
            columns: values
                .iter()
                .map(|v| match v {
                    Some(s) => ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes())),
                    None => ColumnValue::Null,
                })
                .collect(),
        }
    }

    fn tx(changes: Vec<Change>) -> Transaction {
        Transaction {
            xid: Xid(1),
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: PgTimestamp(0),
            origin: None,
            changes: Changes::InMemory(changes),
        }
    }

    fn keys(w: Writeset) -> Writeset {
        assert!(!w.barrier);
        w
    }

    fn shares(a: &Writeset, b: &Writeset) -> bool {
        a.conflicts_with(b)
    }

    #[test]
    fn same_key_conflicts_and_other_keys_do_not() {
        let t = relation("t", ReplicaIdentity::Default, &[("id", true), ("v", false)]);
        let mut cat = KeyCatalog::default();
        let ins = |id: &str| {
            tx(vec![Change::Insert {
                relation: Arc::clone(&t),
                new: row(&[Some(id), Some("x")]),
            }])
        };
        let a = keys(cat.writeset(&ins("1")));
        let b = keys(cat.writeset(&ins("1")));
        let c = keys(cat.writeset(&ins("2")));
        assert!(shares(&a, &b));
        assert!(!shares(&a, &c));
        // A delete by key of row 1 conflicts with its insert.
        let d = keys(cat.writeset(&tx(vec![Change::Delete {
            relation: Arc::clone(&t),
            old: OldTuple::Key(row(&[Some("1"), None])),
        }])));
        assert!(shares(&a, &d));
    }

    #[test]
    fn unique_index_on_green_beyond_the_key_conflicts() {
        let t = relation(
            "u",
            ReplicaIdentity::Default,
            &[("id", true), ("email", false)],
        );
        let mut cat = KeyCatalog::default();
        cat.declare("public", "u", &[&["id"], &["email"]]);
        let a = keys(cat.writeset(&tx(vec![Change::Insert {
            relation: Arc::clone(&t),
            new: row(&[Some("1"), Some("a@x")]),
        }])));
        let b = keys(cat.writeset(&tx(vec![Change::Update {
            relation: Arc::clone(&t),
            old: None,
            new: row(&[Some("2"), Some("a@x")]),
        }])));
        assert!(shares(&a, &b), "same email on green's unique index");
        // NULL emails never collide.
        let n1 = keys(cat.writeset(&tx(vec![Change::Insert {
            relation: Arc::clone(&t),
            new: row(&[Some("3"), None]),
        }])));
        let n2 = keys(cat.writeset(&tx(vec![Change::Insert {
            relation: Arc::clone(&t),
            new: row(&[Some("4"), None]),
        }])));
        assert!(!shares(&n1, &n2));
    }

    #[test]
    fn a_unique_index_on_a_renamed_column_is_read_from_blue_s_column() {
        let t = relation(
            "users",
            ReplicaIdentity::Default,
            &[("id", true), ("name", false), ("full_name", false)],
        );
        let renames = blueshift_applier::Renames::new(["users:name=full_name"
            .parse::<blueshift_applier::Rename>()
            .unwrap()])
        .unwrap();
        let mut cat = KeyCatalog::new(Arc::new(Mapping::from(renames)));
        // Green's unique index is on full_name (blue's name); blue's own full_name is dropped.
        cat.declare("public", "users", &[&["id"], &["full_name"]]);
        let ins = |id: &str, name: &str, full: &str| {
            tx(vec![Change::Insert {
                relation: Arc::clone(&t),
                new: row(&[Some(id), Some(name), Some(full)]),
            }])
        };
        let a = keys(cat.writeset(&ins("1", "ada", "x")));
        let b = keys(cat.writeset(&ins("2", "ada", "y")));
        let c = keys(cat.writeset(&ins("3", "bob", "x")));
        assert!(
            shares(&a, &b),
            "the same name lands in green's unique full_name"
        );
        assert!(!shares(&a, &c), "blue's own full_name is not on green");
    }

    #[test]
    fn keyless_tables_lock_whole_table_and_truncate_is_a_barrier() {
        let t = relation("log", ReplicaIdentity::Full, &[("a", true), ("b", true)]);
        let mut cat = KeyCatalog::default();
        let a = keys(cat.writeset(&tx(vec![Change::Insert {
            relation: Arc::clone(&t),
            new: row(&[Some("1"), Some("2")]),
        }])));
        let b = keys(cat.writeset(&tx(vec![Change::Insert {
            relation: Arc::clone(&t),
            new: row(&[Some("3"), Some("4")]),
        }])));
        assert!(shares(&a, &b));
        assert!(
            cat.writeset(&tx(vec![Change::Truncate {
                relations: vec![t],
                cascade: false,
                restart_identity: false,
            }]))
            .barrier
        );
    }

    #[test]
    fn unchanged_toast_in_a_key_locks_the_table() {
        let t = relation("d", ReplicaIdentity::Default, &[("k", true), ("v", false)]);
        let mut cat = KeyCatalog::default();
        let a = keys(cat.writeset(&tx(vec![Change::Update {
            relation: Arc::clone(&t),
            old: None,
            new: TupleData {
                columns: vec![ColumnValue::UnchangedToast, ColumnValue::Null],
            },
        }])));
        let b = keys(cat.writeset(&tx(vec![Change::Insert {
            relation: Arc::clone(&t),
            new: row(&[Some("zz"), None]),
        }])));
        assert_eq!(a.locked, [table_hash("public", "d")]);
        assert!(b.locked.is_empty());
        assert!(
            shares(&a, &b),
            "a table lock conflicts with any change to the table"
        );
        let other = relation("e", ReplicaIdentity::Default, &[("k", true), ("v", false)]);
        let c = keys(cat.writeset(&tx(vec![Change::Insert {
            relation: other,
            new: row(&[Some("zz"), None]),
        }])));
        assert!(!shares(&a, &c));
    }
}
