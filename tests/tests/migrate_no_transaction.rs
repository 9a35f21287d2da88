//! Scripts marked `-- blueshift:no-transaction`: `CREATE INDEX CONCURRENTLY` works, and a failure
//! part-way says exactly which statements ran, marks the version failed, and blocks `up` until
//! the operator cleans up and runs `repair`.

#[path = "support/migrate.rs"]
mod support;

use blueshift_engine::migrate::{FailurePoint, MigrateError, Repair, State, Version};
use support::Fixture;

fn v(n: i64) -> Version {
    Version::new(n).expect("positive")
}

#[tokio::test]
async fn create_index_concurrently_runs_outside_a_transaction() {
    let f = Fixture::new("concurrently");
    f.write(
        "V1__t.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t SELECT generate_series(1, 1000);",
    );
    f.write(
        "V2__index_t.sql",
        "-- Build the index without blocking writes.\n\
         -- blueshift:no-transaction\n\n\
         CREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    );
    let mut client = f.connect().await;
    let run = f.migrator().up(&mut client, None, false).await.unwrap();
    assert!(run.steps[0].transactional);
    assert!(!run.steps[1].transactional);
    assert_eq!(
        f.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_a'::regclass"),
        "t"
    );
    assert_eq!(
        f.psql("SELECT string_agg(version || ' ' || success, ',' ORDER BY version) FROM blueshift.schema_version"),
        "1 true,2 true"
    );
}

#[tokio::test]
async fn a_failure_outside_a_transaction_says_which_statements_ran() {
    let f = Fixture::new("partial");
    f.write(
        "V1__t.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (1), (2);",
    );
    let script = "-- blueshift:no-transaction\n\
                  CREATE INDEX CONCURRENTLY t_a ON t (a);\n\
                  ALTER TABLE t ADD COLUMN b int;\n\
                  CREATE UNIQUE INDEX CONCURRENTLY t_a_unique ON t (a);\n\
                  ALTER TABLE t ADD COLUMN c int;\n";
    f.write("V2__index_and_columns.sql", script);
    let mut client = f.connect().await;
    let m = f.migrator();

    let err = m
        .up(&mut client, None, false)
        .await
        .expect_err("the unique index fails");
    let failure = err.failure().expect("a migration failure");
    assert!(!failure.transactional);
    assert!(failure.recorded_failed);
    assert!(matches!(
        &failure.point,
        FailurePoint::Statement { index: 3, at, .. } if at.line == 4 && at.column == 1
    ));
    assert_eq!(failure.source.sqlstate(), Some("23505"));
    let text = err.to_string();
    assert!(text.contains("V2__index_and_columns.sql:4:1"), "{text}");
    assert!(
        text.contains("statements 1–2 ran and stay committed"),
        "{text}"
    );
    assert!(
        text.contains("statement 3 failed, statement 4 did not run"),
        "{text}"
    );
    assert!(text.contains("blueshift migrate repair"), "{text}");

    // Exactly statements 1 and 2 took effect (3 left an invalid index behind).
    assert_eq!(
        f.psql(
            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute \
              WHERE attrelid = 't'::regclass AND attnum > 0"
        ),
        "a,b"
    );
    assert_eq!(
        f.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_a_unique'::regclass"),
        "f"
    );
    assert_eq!(
        f.psql("SELECT success FROM blueshift.schema_version WHERE version = 2"),
        "f"
    );

    // Failed: validate and up refuse until the operator cleans up and repairs.
    let status = m.status(&client).await.unwrap();
    assert_eq!(status.entry(v(2)).unwrap().state, State::Failed);
    let err = m
        .up(&mut client, None, false)
        .await
        .expect_err("up refuses");
    assert!(matches!(err, MigrateError::Validation { .. }), "{err}");

    f.psql(
        "DROP INDEX t_a_unique; DELETE FROM t WHERE ctid = (SELECT min(ctid) FROM t WHERE a = 1);",
    );
    let repairs = m.repair(&mut client).await.unwrap();
    assert!(
        matches!(&repairs[..], [Repair::Removed { version, was: State::Failed, .. }] if *version == v(2))
    );
    // The script, made idempotent, now completes.
    f.write(
        "V2__index_and_columns.sql",
        "-- blueshift:no-transaction\n\
         CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a ON t (a);\n\
         ALTER TABLE t ADD COLUMN IF NOT EXISTS b int;\n\
         CREATE UNIQUE INDEX CONCURRENTLY t_a_unique ON t (a);\n\
         ALTER TABLE t ADD COLUMN c int;\n",
    );
    m.up(&mut client, None, false).await.unwrap();
    m.validate(&client).await.unwrap();
    assert_eq!(
        f.psql(
            "SELECT string_agg(action || ' ' || outcome, ',' ORDER BY id) FROM blueshift.schema_history \
              WHERE version = 2"
        ),
        "up failed,repair success,up success"
    );
}
