//! Helpers of the applier tests: a green cluster, appliers, and transactions built by hand
//! from Relation descriptions.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use blueshift_applier::{Applier, ApplierOptions, Change, Changes, Transaction};
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::pgoutput::{
    ColumnValue, OldTuple, PgTimestamp, RelationBody, RelationColumn, ReplicaIdentity, TupleData,
};
use blueshift_decoder::relation::RelationInfo;
use blueshift_decoder::{Lsn, Oid, Xid};
use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};
use bytes::Bytes;

/// A green cluster with database `db` holding `schema`.
pub fn green(name: &str, db: &str, schema: &str) -> (Cluster, ConnectConfig) {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let cluster = Cluster::start(ClusterOptions::new(bins).name(name)).expect("start green");
    cluster.create_database(db).expect("create database");
    cluster.psql(db, schema).expect("schema");
    let config =
        ConnectConfig::from_conninfo_with_env(&cluster.uri(db), |_| None).expect("conninfo");
    (cluster, config)
}

pub async fn applier(config: &ConnectConfig, origin: &str) -> Applier {
    Applier::connect(config, ApplierOptions::new(origin))
        .await
        .expect("applier connects")
}

/// A relation description: columns `(name, is_key)`, every one typed `text` (the applier does
/// not look at blue's type OIDs: green's columns parse the text).
pub fn relation(
    oid: u32,
    namespace: &str,
    name: &str,
    replica_identity: ReplicaIdentity,
    columns: &[(&str, bool)],
) -> Arc<RelationInfo> {
    Arc::new(RelationInfo::from_message(&RelationBody {
        xid: None,
        oid: Oid(oid),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        replica_identity,
        columns: columns
            .iter()
            .map(|(name, is_key)| RelationColumn {
                is_key: *is_key,
                name: (*name).to_owned(),
                type_oid: Oid(25),
                type_modifier: -1,
            })
            .collect(),
    }))
}

/// A value: `Some(text)`, `None` for NULL; [`TOAST`] for an unchanged TOAST value.
pub type V<'a> = Option<&'a str>;
pub const TOAST: V<'static> = Some("\u{0}toast");

pub fn row(values: &[V<'_>]) -> TupleData {
    TupleData {
        columns: values
            .iter()
            .map(|v| match *v {
                v if v == TOAST => ColumnValue::UnchangedToast,
                Some(text) => ColumnValue::Text(Bytes::copy_from_slice(text.as_bytes())),
                None => ColumnValue::Null,
            })
            .collect(),
    }
}

pub fn insert(relation: &Arc<RelationInfo>, values: &[V<'_>]) -> Change {
    Change::Insert {
        relation: Arc::clone(relation),
        new: row(values),
    }
}

pub fn update(relation: &Arc<RelationInfo>, old: Option<OldTuple>, new: &[V<'_>]) -> Change {
    Change::Update {
        relation: Arc::clone(relation),
        old,
        new: row(new),
    }
}

pub fn delete(relation: &Arc<RelationInfo>, old: OldTuple) -> Change {
    Change::Delete {
        relation: Arc::clone(relation),
        old,
    }
}

pub fn key(values: &[V<'_>]) -> OldTuple {
    OldTuple::Key(row(values))
}

pub fn full(values: &[V<'_>]) -> OldTuple {
    OldTuple::Full(row(values))
}

pub fn tx(commit_lsn: u64, changes: Vec<Change>) -> Transaction {
    Transaction {
        xid: Xid(u32::try_from(commit_lsn % 1_000_000).expect("small")),
        commit_lsn: Lsn(commit_lsn),
        end_lsn: Lsn(commit_lsn + 8),
        commit_time: PgTimestamp(820_000_000_000_000 + i64::try_from(commit_lsn).expect("small")),
        origin: None,
        changes: Changes::InMemory(changes),
    }
}
