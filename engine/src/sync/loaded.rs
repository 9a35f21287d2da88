//! The tables green holds the rows of ("loaded": copied by a backfill, or declared loaded by
//! `--no-backfill`; see `backfill::start`). A change to any other table must not be applied:
//! its existing rows are not on green.
//!
//! The reader passes every decoded message here. `Relation` messages map OIDs to names (pgoutput
//! sends one before the first change to a relation in each session; for a partition published
//! through its root it sends the leaf's as well as the root's, and the changes name the root);
//! at the first Insert, Update, Delete or Truncate of a relation that is not loaded — one added
//! to the publication while sync runs — reading stops, before any transaction touching it is
//! scheduled. Sync then drains what is in flight, the backfill copies the table under a snapshot
//! of its own, and streaming resumes from green's position, the table's fence skipping what its
//! copy holds.

use std::collections::{BTreeSet, HashMap, HashSet};

use blueshift_decoder::pgoutput::PgOutputMessage;
use blueshift_decoder::Oid;

use super::identity::{Change, Changed};
use super::SyncError;
use crate::schema::QualifiedName;

/// The loaded tables, by blue's (and green's) name, and the relations seen that are not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    tables: BTreeSet<QualifiedName>,
    /// Blue's relation OID of each loaded table, as green recorded it (see `sync::identity`).
    relids: HashMap<QualifiedName, u32>,
    /// Relations described by a `Relation` message of this session that are not loaded.
    unloaded: HashMap<Oid, QualifiedName>,
    slot: String,
    publication: String,
    /// Relations of schema `blueshift` (blueshift's own state, on both sides in two-way sync).
    own: HashSet<Oid>,
    /// In a transaction (or stream block) whose Origin is one of blueshift's: the assembler
    /// drops it whole (loop prevention), so its changes neither count as an added table's.
    own_origin: bool,
}

/// blueshift's schema: its changes are never replicated, whatever a publication holds.
pub(crate) const OWN_SCHEMA: &str = "blueshift";

impl Loaded {
    pub(crate) fn new(
        tables: BTreeSet<QualifiedName>,
        relids: HashMap<QualifiedName, u32>,
        slot: &str,
        publication: &str,
    ) -> Self {
        Loaded {
            tables,
            relids,
            unloaded: HashMap::new(),
            slot: slot.to_owned(),
            publication: publication.to_owned(),
            own: HashSet::new(),
            own_origin: false,
        }
    }

    /// The slot (for forgetting a table that changed on blue).
    pub(crate) fn slot(&self) -> &str {
        &self.slot
    }

    /// [`check`](Self::check), after dropping what concerns blueshift's own tables (a
    /// publication `FOR ALL TABLES` holds them: the slot guard and lag heartbeat of the reverse
    /// direction live on blue). False: nothing of `message` is left to apply.
    pub(crate) fn filter(&mut self, message: &mut PgOutputMessage) -> Result<bool, SyncError> {
        let own = match message {
            PgOutputMessage::Begin(_)
            | PgOutputMessage::StreamStart(_)
            | PgOutputMessage::StreamStop
            | PgOutputMessage::Commit(_) => {
                self.own_origin = false;
                false
            }
            PgOutputMessage::Origin(origin) => {
                self.own_origin = origin.name.starts_with(super::ORIGIN_PREFIX);
                false
            }
            PgOutputMessage::Relation(relation) => {
                if relation.namespace.as_str() == OWN_SCHEMA {
                    self.own.insert(relation.oid);
                    return Ok(true);
                }
                self.own.remove(&relation.oid);
                false
            }
            PgOutputMessage::Insert(change) => self.own.contains(&change.relation),
            PgOutputMessage::Update(change) => self.own.contains(&change.relation),
            PgOutputMessage::Delete(change) => self.own.contains(&change.relation),
            PgOutputMessage::Truncate(truncate) => {
                truncate.relations.retain(|oid| !self.own.contains(oid));
                truncate.relations.is_empty()
            }
            _ => false,
        };
        if own {
            return Ok(false);
        }
        // Descriptions are always recorded (pgoutput sends one per session, maybe inside a
        // transaction that is dropped); a change is checked unless its transaction is.
        if !self.own_origin || matches!(message, PgOutputMessage::Relation(_)) {
            self.check(message)?;
        }
        Ok(true)
    }

    /// Fails with [`SyncError::TableAdded`] at a change to a relation that is not loaded, and
    /// with [`SyncError::SourceChanged`] at the description of a loaded table under another OID
    /// than green recorded (dropped and created again on blue).
    pub(crate) fn check(&mut self, message: &PgOutputMessage) -> Result<(), SyncError> {
        let changed = match message {
            PgOutputMessage::Relation(relation) => {
                let table = QualifiedName::new(relation.namespace.as_str(), relation.name.as_str());
                if self
                    .relids
                    .get(&table)
                    .is_some_and(|&recorded| recorded != relation.oid.0)
                {
                    return Err(SyncError::SourceChanged {
                        changed: Changed(vec![(table, Change::Recreated)]),
                        publication: self.publication.clone(),
                    });
                }
                if self.tables.contains(&table) {
                    self.unloaded.remove(&relation.oid);
                } else {
                    self.unloaded.insert(relation.oid, table);
                }
                return Ok(());
            }
            PgOutputMessage::Insert(change) => std::slice::from_ref(&change.relation),
            PgOutputMessage::Update(change) => std::slice::from_ref(&change.relation),
            PgOutputMessage::Delete(change) => std::slice::from_ref(&change.relation),
            PgOutputMessage::Truncate(truncate) => truncate.relations.as_slice(),
            _ => return Ok(()),
        };
        match changed.iter().find_map(|oid| self.unloaded.get(oid)) {
            Some(table) => Err(SyncError::TableAdded {
                table: table.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use blueshift_decoder::pgoutput::{
        DeleteBody, OldTuple, RelationBody, ReplicaIdentity, TruncateBody, TupleData,
    };

    use super::*;

    fn relation(oid: u32, namespace: &str, name: &str) -> PgOutputMessage {
        PgOutputMessage::Relation(RelationBody {
            xid: None,
            oid: Oid(oid),
            namespace: namespace.into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: Vec::new(),
        })
    }

    fn delete(oid: u32) -> PgOutputMessage {
        PgOutputMessage::Delete(DeleteBody {
            xid: None,
            relation: Oid(oid),
            old: OldTuple::Key(TupleData {
                columns: Vec::new(),
            }),
        })
    }

    #[test]
    fn a_change_to_a_table_not_loaded_stops_the_reader() {
        let mut loaded = Loaded::new(
            [QualifiedName::new("public", "a")].into_iter().collect(),
            [(QualifiedName::new("public", "a"), 1)]
                .into_iter()
                .collect(),
            "bs",
            "pub",
        );
        assert!(loaded.check(&relation(1, "public", "a")).is_ok());
        assert!(loaded.check(&delete(1)).is_ok());
        // Described but not changed (a leaf sent along with its published root): fine.
        assert!(loaded.check(&relation(2, "public", "b")).is_ok());
        assert!(loaded.check(&PgOutputMessage::StreamStop).is_ok());
        match loaded.check(&delete(2)) {
            Err(SyncError::TableAdded { table }) => {
                assert_eq!(table, QualifiedName::new("public", "b"));
            }
            other => panic!("{other:?}"),
        }
        let truncate = PgOutputMessage::Truncate(TruncateBody {
            xid: None,
            cascade: false,
            restart_identity: false,
            relations: vec![Oid(1), Oid(2)],
        });
        assert!(loaded.check(&truncate).is_err());
        // Same name, other schema: not the loaded table.
        assert!(loaded.check(&relation(3, "other", "a")).is_ok());
        assert!(loaded.check(&delete(3)).is_err());
    }

    #[test]
    fn a_loaded_table_described_under_another_oid_stops_the_reader() {
        let mut loaded = Loaded::new(
            [QualifiedName::new("public", "a")].into_iter().collect(),
            [(QualifiedName::new("public", "a"), 1)]
                .into_iter()
                .collect(),
            "bs",
            "pub",
        );
        assert!(loaded.check(&relation(1, "public", "a")).is_ok());
        match loaded.check(&relation(7, "public", "a")) {
            Err(SyncError::SourceChanged {
                changed,
                publication,
            }) => {
                assert_eq!(
                    changed.0,
                    vec![(QualifiedName::new("public", "a"), Change::Recreated)]
                );
                assert_eq!(publication, "pub");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changes_to_blueshifts_own_tables_are_dropped() {
        let mut loaded = Loaded::new(
            [QualifiedName::new("public", "a")].into_iter().collect(),
            HashMap::new(),
            "bs",
            "pub",
        );
        assert!(loaded.filter(&mut relation(1, "public", "a")).unwrap());
        assert!(loaded
            .filter(&mut relation(7, "blueshift", "slot_guard"))
            .unwrap());
        assert!(
            !loaded.filter(&mut delete(7)).unwrap(),
            "dropped, not an added table"
        );
        assert!(loaded.filter(&mut delete(1)).unwrap());
        let mut both = PgOutputMessage::Truncate(TruncateBody {
            xid: None,
            cascade: false,
            restart_identity: false,
            relations: vec![Oid(7), Oid(1)],
        });
        assert!(loaded.filter(&mut both).unwrap());
        match both {
            PgOutputMessage::Truncate(t) => assert_eq!(t.relations, vec![Oid(1)]),
            other => panic!("{other:?}"),
        }
        let mut alone = PgOutputMessage::Truncate(TruncateBody {
            xid: None,
            cascade: false,
            restart_identity: false,
            relations: vec![Oid(7)],
        });
        assert!(!loaded.filter(&mut alone).unwrap());
        // Any other table not loaded still stops the reader…
        assert!(loaded.filter(&mut relation(2, "public", "b")).unwrap());
        assert!(loaded.filter(&mut delete(2)).is_err());
        // … unless its transaction comes from one of blueshift's origins (dropped whole).
        let origin = |name: &str| {
            PgOutputMessage::Origin(blueshift_decoder::pgoutput::OriginBody {
                commit_lsn: blueshift_decoder::Lsn(1),
                name: name.into(),
            })
        };
        assert!(loaded.filter(&mut origin("blueshift_bs_r0")).unwrap());
        assert!(loaded.filter(&mut delete(2)).unwrap());
        assert!(loaded.filter(&mut PgOutputMessage::StreamStop).unwrap());
        assert!(loaded.filter(&mut delete(2)).is_err());
        assert!(loaded.filter(&mut origin("someone_else")).unwrap());
        assert!(loaded.filter(&mut delete(2)).is_err());
        // A table first described inside a dropped transaction is still known as not loaded.
        assert!(loaded.filter(&mut origin("blueshift_bs_r1")).unwrap());
        assert!(loaded.filter(&mut relation(9, "public", "late")).unwrap());
        assert!(loaded.filter(&mut delete(9)).unwrap());
        assert!(loaded.filter(&mut PgOutputMessage::StreamStop).unwrap());
        assert!(loaded.filter(&mut delete(9)).is_err());
    }
}
