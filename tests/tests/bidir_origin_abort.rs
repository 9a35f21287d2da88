//! From PostgreSQL 16 a transaction that aborts after `pg_replication_origin_xact_setup` moves
//! the origin's progress as if it had committed. The applier tags the origin only together with
//! the COMMIT, so a transaction rolled back after its changes ran (the deadlock breaker, a re-run
//! at the head of the line) or cut off by a `kill -9` of blueshift while it waited for its turn
//! leaves the progress where it was, on every version: a restart applies it again instead of
//! skipping it. (Found by `bidir_reverse`'s `kill -9` under two-way load: green 16 lost the
//! transaction an applier held open when the sidecar died.)
//!
//! The same holds for a transaction whose `COMMIT` would fail on a deferred check (a deferred
//! constraint trigger enabled for replicated changes, `ENABLE ALWAYS`, that a diverged green
//! trips): the applier runs the deferred checks before the tag (`SET CONSTRAINTS ALL
//! IMMEDIATE`), so the failure leaves the progress where it was and a restart applies the
//! transaction once green is fixed. (A `DEFERRABLE` unique or exclusion constraint is rechecked
//! by an internal trigger that does not fire under `session_replication_role = replica`, native
//! apply's setting and the applier's.)

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

/// A deferred check that fails at the commit (green diverged: it holds the value already) leaves the origin where it was, through both commit paths; once green is fixed the
/// same transaction commits and moves it.
async fn a_failing_deferred_check_leaves_the_origin_where_it_was(major: u32) {
    let (cluster, config) = green(major);
    cluster
        .psql(
            "app",
            "CREATE TABLE d (id text PRIMARY KEY, u text); \
             CREATE FUNCTION d_u_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF (SELECT count(*) FROM public.d WHERE u = NEW.u) > 1 THEN \
                 RAISE EXCEPTION 'u % taken twice', NEW.u; \
               END IF; RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER d_u_once AFTER INSERT ON d \
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION d_u_once(); \
             ALTER TABLE d ENABLE ALWAYS TRIGGER d_u_once; \
             INSERT INTO d VALUES ('diverged', 'dup')",
        )
        .expect("schema");
    let d = relation(
        2,
        "public",
        "d",
        ReplicaIdentity::Default,
        &[("id", true), ("u", false)],
    );
    let origin = "blueshift_deferred_0";

    // One round trip (`apply`).
    let mut applier = Applier::connect(&config, ApplierOptions::new(origin))
        .await
        .expect("applier connects");
    let mut t = tx(0x3000, vec![insert(&d, &[Some("blue"), Some("dup")])]);
    let e = applier
        .apply(&mut t)
        .await
        .expect_err("green's deferred check refuses the row");
    assert!(
        format!("{e:?}").contains("taken twice"),
        "PostgreSQL {major}: {e:?}"
    );
    applier.close().await;
    assert_eq!(
        progress(&config, origin).await,
        Lsn::INVALID,
        "PostgreSQL {major}: a COMMIT that failed its deferred check moved the origin"
    );

    // Changes first, the COMMIT at its turn (`begin_and_apply`, `commit`).
    let mut applier = Applier::connect(&config, ApplierOptions::new(origin))
        .await
        .expect("applier connects");
    applier.begin_and_apply(&mut t).await.expect("changes run");
    applier
        .commit()
        .await
        .expect_err("green's deferred check refuses the row");
    applier.close().await;
    assert_eq!(
        progress(&config, origin).await,
        Lsn::INVALID,
        "PostgreSQL {major}: a COMMIT that failed its deferred check moved the origin"
    );
    assert_eq!(cluster.psql("app", "SELECT id FROM d").unwrap(), "diverged");

    // Green fixed: the same transaction commits (a restart would not have skipped it).
    cluster
        .psql("app", "DELETE FROM d WHERE id = 'diverged'")
        .expect("fix green");
    let mut applier = Applier::connect(&config, ApplierOptions::new(origin))
        .await
        .expect("applier connects");
    applier.apply(&mut t).await.expect("committed");
    applier.close().await;
    assert_eq!(progress(&config, origin).await, Lsn(0x3000));
    assert_eq!(
        cluster.psql("app", "SELECT id || '=' || u FROM d").unwrap(),
        "blue=dup"
    );
}

#[tokio::test]
async fn a_failing_deferred_check_on_green_16() {
    a_failing_deferred_check_leaves_the_origin_where_it_was(16).await;
}

#[tokio::test]
async fn a_failing_deferred_check_on_green_18() {
    a_failing_deferred_check_leaves_the_origin_where_it_was(18).await;
}

#[tokio::test]
async fn a_failing_deferred_check_on_green_15() {
    a_failing_deferred_check_leaves_the_origin_where_it_was(15).await;
}
