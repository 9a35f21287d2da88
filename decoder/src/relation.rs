//! The relation cache: what the Relation and Type messages of a `pgoutput` stream have said
//! about each table and type, by OID.
//!
//! Insert, Update, Delete and Truncate name their table only by OID; the server sends a
//! Relation message before the first change to a table in a session and again whenever its
//! definition changes, and a Type message before a Relation that uses a non-built-in type
//! (<https://www.postgresql.org/docs/current/protocol-logical-replication.html>,
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>).
//! A later Relation for the same OID replaces the earlier one: columns may change mid-stream.
//! Lookups return an [`Arc`], so a decoded change can hold on to the description it was
//! decoded under after the cache moves on.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::pgoutput::{PgOutputMessage, RelationBody, RelationColumn, ReplicaIdentity, TypeBody};
use crate::Oid;

/// A schema-qualified name as sent on the wire. PostgreSQL sends an empty namespace for
/// `pg_catalog`; it is kept empty here and shown as `pg_catalog`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    /// Namespace (schema), empty for `pg_catalog`.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl QualifiedName {
    /// The namespace, with the empty one spelled `pg_catalog`.
    pub fn schema(&self) -> &str {
        if self.namespace.is_empty() {
            "pg_catalog"
        } else {
            &self.namespace
        }
    }
}

impl fmt::Display for QualifiedName {
    /// `schema.name`, unquoted: for messages and logs, never for SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema(), self.name)
    }
}

/// What the latest Relation message said about one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationInfo {
    oid: Oid,
    name: QualifiedName,
    replica_identity: ReplicaIdentity,
    columns: Vec<RelationColumn>,
    key_columns: Vec<usize>,
}

impl RelationInfo {
    /// Builds the description from a Relation message.
    pub fn from_message(body: &RelationBody) -> Self {
        let key_columns = body
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        RelationInfo {
            oid: body.oid,
            name: QualifiedName {
                namespace: body.namespace.clone(),
                name: body.name.clone(),
            },
            replica_identity: body.replica_identity,
            columns: body.columns.clone(),
            key_columns,
        }
    }

    /// The relation's OID.
    pub fn oid(&self) -> Oid {
        self.oid
    }

    /// The schema-qualified table name.
    pub fn name(&self) -> &QualifiedName {
        &self.name
    }

    /// The table's replica identity setting.
    pub fn replica_identity(&self) -> ReplicaIdentity {
        self.replica_identity
    }

    /// The published columns, in the order tuples carry them.
    pub fn columns(&self) -> &[RelationColumn] {
        &self.columns
    }

    /// Indexes into [`columns`](Self::columns) of the replica identity key columns, ascending.
    /// Empty for `REPLICA IDENTITY NOTHING` and for a table without a key; every column for
    /// `REPLICA IDENTITY FULL`.
    pub fn key_columns(&self) -> &[usize] {
        &self.key_columns
    }

    /// The index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A change referred to a relation OID that no Relation message has described.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "relation OID {oid} was used before any Relation message described it — the stream must \
     be read from the start of the session, where the server sends each table's Relation \
     message before its first change"
)]
pub struct UnknownRelation {
    /// The OID.
    pub oid: Oid,
}

/// Relations and types by OID, as the stream's Relation and Type messages described them.
#[derive(Clone, Debug, Default)]
pub struct RelationCache {
    relations: HashMap<Oid, Arc<RelationInfo>>,
    types: HashMap<Oid, Arc<QualifiedName>>,
}

impl RelationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a Relation or Type message; every other message is ignored.
    pub fn observe(&mut self, message: &PgOutputMessage) {
        match message {
            PgOutputMessage::Relation(body) => {
                self.insert_relation(body);
            }
            PgOutputMessage::Type(body) => {
                self.insert_type(body);
            }
            _ => {}
        }
    }

    /// Records a Relation message, replacing any earlier description of the same OID, and
    /// returns the new description.
    pub fn insert_relation(&mut self, body: &RelationBody) -> Arc<RelationInfo> {
        let info = Arc::new(RelationInfo::from_message(body));
        self.relations.insert(body.oid, Arc::clone(&info));
        info
    }

    /// Records a Type message, replacing any earlier name for the same OID.
    pub fn insert_type(&mut self, body: &TypeBody) -> Arc<QualifiedName> {
        let name = Arc::new(QualifiedName {
            namespace: body.namespace.clone(),
            name: body.name.clone(),
        });
        self.types.insert(body.oid, Arc::clone(&name));
        name
    }

    /// The latest description of relation `oid`.
    pub fn get(&self, oid: Oid) -> Option<Arc<RelationInfo>> {
        self.relations.get(&oid).cloned()
    }

    /// The latest description of relation `oid`, or an error naming the OID.
    pub fn require(&self, oid: Oid) -> Result<Arc<RelationInfo>, UnknownRelation> {
        self.get(oid).ok_or(UnknownRelation { oid })
    }

    /// The qualified name of type `oid`, when a Type message gave it.
    pub fn type_name(&self, oid: Oid) -> Option<Arc<QualifiedName>> {
        self.types.get(&oid).cloned()
    }

    /// Forgets relation `oid`, returning what was known of it.
    pub fn remove(&mut self, oid: Oid) -> Option<Arc<RelationInfo>> {
        self.relations.remove(&oid)
    }

    /// Number of relations known.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    /// True when no relation is known.
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    /// Forgets everything, as when a new replication session starts.
    pub fn clear(&mut self) {
        self.relations.clear();
        self.types.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Xid;

    fn column(name: &str, is_key: bool, type_oid: u32) -> RelationColumn {
        RelationColumn {
            is_key,
            name: name.to_owned(),
            type_oid: Oid(type_oid),
            type_modifier: -1,
        }
    }

    fn relation(oid: u32, columns: Vec<RelationColumn>) -> RelationBody {
        RelationBody {
            xid: None,
            oid: Oid(oid),
            namespace: "public".to_owned(),
            name: "accounts".to_owned(),
            replica_identity: ReplicaIdentity::Default,
            columns,
        }
    }

    #[test]
    fn records_relation_and_key_columns() {
        let mut cache = RelationCache::new();
        assert!(cache.is_empty());
        let body = relation(
            16384,
            vec![
                column("tenant", true, 23),
                column("note", false, 25),
                column("id", true, 20),
            ],
        );
        cache.observe(&PgOutputMessage::Relation(body.clone()));
        let info = cache.get(Oid(16384)).expect("recorded");
        assert_eq!(info.oid(), Oid(16384));
        assert_eq!(info.name().to_string(), "public.accounts");
        assert_eq!(info.replica_identity(), ReplicaIdentity::Default);
        assert_eq!(info.columns(), body.columns.as_slice());
        assert_eq!(info.key_columns(), &[0, 2]);
        assert_eq!(info.column_index("id"), Some(2));
        assert_eq!(info.column_index("missing"), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn later_relation_replaces_earlier_and_old_arc_survives() {
        let mut cache = RelationCache::new();
        let before = cache.insert_relation(&relation(1, vec![column("id", true, 23)]));
        let mut changed = relation(1, vec![column("id", true, 23), column("added", false, 25)]);
        changed.replica_identity = ReplicaIdentity::Full;
        changed.xid = Some(Xid(7));
        cache.observe(&PgOutputMessage::Relation(changed));
        let after = cache.require(Oid(1)).unwrap();
        assert_eq!(after.columns().len(), 2);
        assert_eq!(after.replica_identity(), ReplicaIdentity::Full);
        assert_eq!(
            before.columns().len(),
            1,
            "a held description does not change"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn unknown_relation_is_an_error_naming_the_oid() {
        let cache = RelationCache::new();
        let err = cache.require(Oid(42)).unwrap_err();
        assert_eq!(err.oid, Oid(42));
        assert!(err.to_string().contains("relation OID 42"));
    }

    #[test]
    fn records_types_and_ignores_other_messages() {
        let mut cache = RelationCache::new();
        cache.observe(&PgOutputMessage::Type(TypeBody {
            xid: None,
            oid: Oid(16400),
            namespace: "public".to_owned(),
            name: "mood".to_owned(),
        }));
        cache.observe(&PgOutputMessage::StreamStop);
        assert_eq!(
            cache.type_name(Oid(16400)).unwrap().to_string(),
            "public.mood"
        );
        assert!(cache.type_name(Oid(1)).is_none());
        assert!(cache.is_empty());
        cache.insert_relation(&relation(5, vec![]));
        assert!(cache.remove(Oid(5)).is_some());
        cache.insert_relation(&relation(6, vec![]));
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.type_name(Oid(16400)).is_none());
    }

    #[test]
    fn empty_namespace_is_pg_catalog() {
        let name = QualifiedName {
            namespace: String::new(),
            name: "int4".to_owned(),
        };
        assert_eq!(name.to_string(), "pg_catalog.int4");
        assert_eq!(name.schema(), "pg_catalog");
    }
}
