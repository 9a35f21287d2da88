//! The migration lock and `lock_timeout`: concurrent `up` runs apply each migration exactly
//! once, `--lock-wait 0s` fails at once naming the holder, and a DDL statement stuck behind
//! another session's table lock gives up after `lock_timeout` with a message saying so.

#[path = "support/migrate.rs"]
mod support;

use std::time::Duration;

use blueshift_engine::migrate::{lock_key, LockWait, MigrateConfig, MigrateError, Migrator};
use blueshift_tests::eventually_async;
use support::Fixture;

/// Sessions waiting for the migration lock (advisory, not granted).
async fn waiters(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_up_runs_apply_each_migration_exactly_once() {
    let f = Fixture::new("concurrent");
    f.write(
        "V1__runs.sql",
        "CREATE TABLE runs (version int PRIMARY KEY, pid int);\n\
         INSERT INTO runs VALUES (1, pg_backend_pid());",
    );
    f.write(
        "V2__more.sql",
        "INSERT INTO runs VALUES (2, pg_backend_pid());",
    );
    f.write(
        "V3__more.sql",
        "INSERT INTO runs VALUES (3, pg_backend_pid());",
    );

    // Hold the lock so that both runs are sure to contend for it.
    let holder = f.connect().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&lock_key()])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut client = f.connect().await;
        let m = f.migrator();
        tasks.push(tokio::spawn(async move {
            m.up(&mut client, None, false).await.expect("up succeeds")
        }));
    }
    eventually_async(Duration::from_secs(30), || async {
        let n = waiters(&holder).await;
        anyhow::ensure!(n == 2, "{n} runs waiting for the lock");
        Ok(())
    })
    .await
    .unwrap();
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_key()])
        .await
        .unwrap();

    let mut applied = Vec::new();
    for t in tasks {
        applied.push(t.await.unwrap().steps.len());
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        [0, 3],
        "one run applied everything, the other nothing"
    );
    assert_eq!(
        f.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM runs"),
        "1,2,3"
    );
    assert_eq!(
        f.psql("SELECT count(DISTINCT pid) FROM runs"),
        "1",
        "one session applied all three"
    );
    assert_eq!(
        f.psql("SELECT count(*) FROM blueshift.schema_history WHERE action = 'up'"),
        "3"
    );
}

#[tokio::test]
async fn lock_wait_zero_fails_at_once_naming_the_holder() {
    let f = Fixture::new("lockwait");
    f.write("V1__t.sql", "CREATE TABLE t (id int);");
    let holder = f.connect().await;
    holder
        .batch_execute("SET application_name = 'other migrate run'")
        .await
        .unwrap();
    let pid: i32 = holder
        .query_one(
            "SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock($1)) l",
            &[&lock_key()],
        )
        .await
        .unwrap()
        .get(0);

    let mut client = f.connect().await;
    for wait in [Duration::ZERO, Duration::from_millis(200)] {
        let m = Migrator::new(MigrateConfig {
            dir: f.dir().to_owned(),
            lock_wait: LockWait::Bounded(wait),
            ..MigrateConfig::default()
        });
        let err = m
            .up(&mut client, None, false)
            .await
            .expect_err("the lock is held");
        match &err {
            MigrateError::LockBusy { holder, waited } => {
                assert_eq!(holder.as_ref().map(|h| h.pid), Some(pid));
                assert_eq!(*waited, wait);
            }
            other => panic!("expected LockBusy, got {other}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("pid {pid}")), "{text}");
        assert!(text.contains("other migrate run"), "{text}");
        assert!(text.contains("--lock-wait"), "{text}");
    }
    // Nothing was created while waiting.
    assert_eq!(f.psql("SELECT to_regnamespace('blueshift') IS NULL"), "t");

    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_key()])
        .await
        .unwrap();
    let m = f.migrator();
    assert_eq!(m.up(&mut client, None, false).await.unwrap().steps.len(), 1);
}

#[tokio::test]
async fn lock_timeout_stops_ddl_queueing_behind_traffic() {
    let f = Fixture::new("locktimeout");
    f.write("V1__t.sql", "CREATE TABLE t (id int);");
    let mut client = f.connect().await;
    let m = Migrator::new(MigrateConfig {
        dir: f.dir().to_owned(),
        lock_wait: LockWait::Forever,
        lock_timeout: Duration::from_millis(300),
    });
    m.up(&mut client, None, false).await.unwrap();

    // "Production traffic": an open transaction that read the table.
    let traffic = f.connect().await;
    traffic
        .batch_execute("BEGIN; SELECT * FROM public.t;")
        .await
        .unwrap();
    f.write(
        "V2__add_column.sql",
        "CREATE TABLE side (id int);\nALTER TABLE t ADD COLUMN x int;\n",
    );
    let err = m
        .up(&mut client, None, false)
        .await
        .expect_err("the ALTER times out");
    let failure = err.failure().expect("a migration failure");
    assert_eq!(failure.lock_timeout, Some(Duration::from_millis(300)));
    assert_eq!(failure.source.sqlstate(), Some("55P03"));
    let text = err.to_string();
    assert!(text.contains("V2__add_column.sql:2:1"), "{text}");
    assert!(text.contains("lock_timeout (300ms)"), "{text}");
    assert!(
        text.contains("retry off-peak or raise --lock-timeout"),
        "{text}"
    );
    assert_eq!(
        f.psql("SELECT to_regclass('side') IS NULL AND count(*) = 0 FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'x'"),
        "t"
    );
    assert_eq!(
        f.psql("SELECT count(*) FROM blueshift.schema_history WHERE outcome = 'failed' AND detail LIKE '%55P03%'"),
        "1"
    );

    traffic.batch_execute("COMMIT").await.unwrap();
    assert_eq!(m.up(&mut client, None, false).await.unwrap().steps.len(), 1);
}
