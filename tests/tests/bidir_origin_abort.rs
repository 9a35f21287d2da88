//! From PostgreSQL 16 a transaction that aborts after `pg_replication_origin_xact_setup` moves
//! the origin's progress as if it had committed. The applier tags the origin only together with
//! the COMMIT, so a transaction rolled back after its changes ran (the deadlock breaker, a re-run
//! at the head of the line) or cut off by a `kill -9` of blueshift while it waited for its turn
//! leaves the progress where it was, on every version: a restart applies it again instead of
//! skipping it. (Found by `bidir_reverse`'s `kill -9` under two-way load: green 16 lost the
//! transaction an applier held open when the sidecar died.)

#[path = "support/applier.rs"]
mod support;

use blueshift_applier::{Applier, ApplierOptions};
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::pgoutput::ReplicaIdentity;
use blueshift_decoder::Lsn;
use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};
use support::{insert, relation, tx};

async fn progress(config: &ConnectConfig, origin: &str) -> Lsn {
    let mut applier = Applier::connect(config, ApplierOptions::new(origin))
        .await
        .expect("applier connects");
    let lsn = applier.origin_progress().await.expect("progress");
    applier.close().await;
    lsn
}

fn green(major: u32) -> (Cluster, ConnectConfig) {
    let bins = PgBinaries::major(major).expect("PostgreSQL binaries");
    let cluster = Cluster::start(ClusterOptions::new(bins).name(&format!("abort-{major}")))
        .expect("start green");
    cluster.create_database("app").expect("database");
    cluster
        .psql("app", "CREATE TABLE t (id text PRIMARY KEY)")
        .expect("schema");
    let config =
        ConnectConfig::from_conninfo_with_env(&cluster.uri("app"), |_| None).expect("conninfo");
    (cluster, config)
}

async fn an_aborted_transaction_leaves_the_origin_where_it_was(major: u32) {
    let (cluster, config) = green(major);
    let t = relation(1, "public", "t", ReplicaIdentity::Default, &[("id", true)]);

    // Rolled back after its changes ran (the deadlock breaker).
    let mut applier = Applier::connect(&config, ApplierOptions::new("blueshift_abort_0"))
        .await
        .expect("applier connects");
    let mut first = tx(0x1000, vec![insert(&t, &[Some("a")])]);
    applier.begin_and_apply(&mut first).await.expect("applied");
    applier.rollback().await.expect("rolled back");
    applier.close().await;
    assert_eq!(
        progress(&config, "blueshift_abort_0").await,
        Lsn::INVALID,
        "PostgreSQL {major}: a rollback moved the origin"
    );

    // Cut off while it waits for its turn: the connection dies with the transaction open.
    let mut applier = Applier::connect(&config, ApplierOptions::new("blueshift_abort_0"))
        .await
        .expect("applier connects");
    let mut second = tx(0x2000, vec![insert(&t, &[Some("b")])]);
    applier.begin_and_apply(&mut second).await.expect("applied");
    applier.close().await;
    assert_eq!(
        progress(&config, "blueshift_abort_0").await,
        Lsn::INVALID,
        "PostgreSQL {major}: a transaction cut off moved the origin"
    );
    assert_eq!(cluster.psql("app", "SELECT count(*) FROM t").unwrap(), "0");

    // Committed: the progress is its commit LSN.
    let mut applier = Applier::connect(&config, ApplierOptions::new("blueshift_abort_0"))
        .await
        .expect("applier connects");
    applier.apply(&mut second).await.expect("committed");
    applier.close().await;
    assert_eq!(progress(&config, "blueshift_abort_0").await, Lsn(0x2000));
    assert_eq!(cluster.psql("app", "SELECT id FROM t").unwrap(), "b");
}

#[tokio::test]
async fn on_green_16() {
    an_aborted_transaction_leaves_the_origin_where_it_was(16).await;
}

#[tokio::test]
async fn on_green_18() {
    an_aborted_transaction_leaves_the_origin_where_it_was(18).await;
}

#[tokio::test]
async fn on_green_14() {
    an_aborted_transaction_leaves_the_origin_where_it_was(14).await;
}
