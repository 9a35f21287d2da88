//! The tables green holds the rows of ("loaded": copied by a backfill, or declared loaded by
//! `--no-backfill`; see `backfill::start`). A change to any other table must not be applied:
//! its existing rows are not on green. The reader checks every `Relation` message — pgoutput
//! sends one before the first change to a table in each session — and stops at the first one
//! naming a table that is not loaded (one added to the publication while sync runs), before any
//! transaction touching it is scheduled. Sync then drains what is in flight, the backfill copies
//! the table under a snapshot of its own, and streaming resumes from green's position, the
//! table's fence skipping what its copy holds.

use std::collections::BTreeSet;

use blueshift_decoder::pgoutput::PgOutputMessage;

use super::SyncError;
use crate::schema::QualifiedName;

/// The loaded tables, by blue's (and green's) name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded(BTreeSet<QualifiedName>);

impl Loaded {
    pub(crate) fn new(tables: BTreeSet<QualifiedName>) -> Self {
        Loaded(tables)
    }

    /// Fails with [`SyncError::TableAdded`] at a `Relation` message of a table not loaded.
    pub(crate) fn check(&self, message: &PgOutputMessage) -> Result<(), SyncError> {
        let PgOutputMessage::Relation(relation) = message else {
            return Ok(());
        };
        let table = QualifiedName::new(relation.namespace.as_str(), relation.name.as_str());
        if self.0.contains(&table) {
            Ok(())
        } else {
            Err(SyncError::TableAdded { table })
        }
    }
}

#[cfg(test)]
mod tests {
    use blueshift_decoder::pgoutput::{RelationBody, ReplicaIdentity};
    use blueshift_decoder::Oid;

    use super::*;

    fn relation(namespace: &str, name: &str) -> PgOutputMessage {
        PgOutputMessage::Relation(RelationBody {
            xid: None,
            oid: Oid(16384),
            namespace: namespace.into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: Vec::new(),
        })
    }

    #[test]
    fn a_relation_not_loaded_stops_the_reader() {
        let loaded = Loaded::new([QualifiedName::new("public", "a")].into_iter().collect());
        assert!(loaded.check(&relation("public", "a")).is_ok());
        assert!(loaded.check(&PgOutputMessage::StreamStop).is_ok());
        match loaded.check(&relation("public", "b")) {
            Err(SyncError::TableAdded { table }) => {
                assert_eq!(table, QualifiedName::new("public", "b"));
            }
            other => panic!("{other:?}"),
        }
        // Same name, other schema: not the loaded table.
        assert!(loaded.check(&relation("other", "a")).is_err());
    }
}
