//! `blueshift migrate` against a real server: a chain applied in numeric order, a failing script
//! rolled back and audited with its file:line:column, dry runs that touch nothing, down to a
//! version, baseline, validate/repair, and names with quotes, spaces and unicode.

#[path = "support/migrate.rs"]
mod support;

use blueshift_engine::migrate::{FailurePoint, MigrateError, Repair, State, TextPosition, Version};
use support::Fixture;

fn v(n: i64) -> Version {
    Version::new(n).expect("positive")
}

/// Everything a dry run must leave alone: schemas, relations, and the blueshift tables' rows.
fn snapshot(f: &Fixture) -> String {
    f.psql(
        "SELECT (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace) || ' / ' || \
                (SELECT count(*) FROM pg_class) || ' / ' || \
                CASE WHEN to_regnamespace('blueshift') IS NULL THEN -1 \
                     ELSE (SELECT count(*) FROM pg_class \
                            WHERE relnamespace = to_regnamespace('blueshift')) END",
    )
}

#[tokio::test]
async fn applies_a_chain_in_numeric_order_and_records_it() {
    let f = Fixture::new("chain");
    f.write(
        "V1__create_items.sql",
        "CREATE TABLE items (id int PRIMARY KEY);\n",
    );
    f.write(
        "V2__add_name.sql",
        "ALTER TABLE items ADD COLUMN name text;\nINSERT INTO items VALUES (1, 'one');\n",
    );
    f.write(
        "V10__add_price.sql",
        "-- ten sorts after two\nALTER TABLE items ADD COLUMN price numeric NOT NULL DEFAULT 0;",
    );
    f.write("README.md", "not a migration");
    let mut client = f.connect().await;
    let m = f.migrator();

    let run = m.up(&mut client, Some(v(2)), false).await.unwrap();
    let versions: Vec<i64> = run.steps.iter().map(|s| s.version.get()).collect();
    assert_eq!(versions, [1, 2]);
    assert!(run
        .steps
        .iter()
        .all(|s| s.transactional && s.execution_ms.is_some()));
    assert_eq!(run.from, None);

    let run = m.up(&mut client, None, false).await.unwrap();
    assert_eq!(run.steps.len(), 1);
    assert_eq!(run.steps[0].version, v(10));
    assert_eq!((run.from, run.to), (Some(v(2)), Some(v(10))));
    assert!(m
        .up(&mut client, None, false)
        .await
        .unwrap()
        .steps
        .is_empty());

    assert_eq!(f.psql("SELECT id, name, price FROM items"), "1|one|0");
    let scripts = m.scripts().unwrap();
    let recorded = f.psql(
        "SELECT string_agg(version || ':' || script || ':' || checksum || ':' || success \
                           || ':' || kind || ':' || (applied_by = current_user), ',' ORDER BY version) \
           FROM blueshift.schema_version",
    );
    let expected: Vec<String> = scripts
        .iter()
        .map(|s| {
            format!(
                "{}:{}:{}:true:migration:true",
                s.version.get(),
                s.name,
                s.checksum
            )
        })
        .collect();
    assert_eq!(recorded, expected.join(","));
    assert_eq!(
        f.psql(
            "SELECT string_agg(action || ' ' || outcome || ' ' || version, ',' ORDER BY id) \
               FROM blueshift.schema_history"
        ),
        "up success 1,up success 2,up success 10"
    );
    let status = m.validate(&client).await.unwrap();
    assert!(status.entries.iter().all(|e| e.state == State::Applied));
    assert_eq!(status.current(), Some(v(10)));

    // The audit is append-only.
    let err = client
        .execute("DELETE FROM blueshift.schema_history", &[])
        .await
        .expect_err("the history refuses deletes");
    assert!(err.to_string().contains("db error"), "{err}");
}

#[tokio::test]
async fn a_failing_script_rolls_back_and_is_audited_with_its_position() {
    let f = Fixture::new("failing");
    f.write("V1__base.sql", "CREATE TABLE base (id int);\n");
    let bad = f.write(
        "V2__half.sql",
        "CREATE TABLE half (id int);\n\
         INSERT INTO half VALUES (1);\n\
         -- the next statement names a column that does not exist\n\
         SELECT id,\n       nope FROM half;\n\
         CREATE TABLE never (id int);\n",
    );
    let mut client = f.connect().await;
    let m = f.migrator();

    let err = m.up(&mut client, None, false).await.expect_err("V2 fails");
    let failure = err.failure().expect("a migration failure");
    assert_eq!(failure.version, v(2));
    assert!(failure.transactional);
    assert_eq!(
        failure.point,
        FailurePoint::Statement {
            index: 3,
            at: TextPosition { line: 5, column: 8 },
            summary: "SELECT id,…".to_owned()
        }
    );
    let server = failure.source.server().expect("the server's error");
    assert_eq!(server.sqlstate, "42703");
    assert!(server.message.contains("nope"), "{}", server.message);
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}:5:8", bad.display())),
        "the message names file:line:column: {text}"
    );
    assert!(text.contains("rolled back"), "{text}");

    // Nothing of V2 remains; V1 does; the failure is in the history, after the rollback.
    assert_eq!(f.psql("SELECT to_regclass('half') IS NULL"), "t");
    assert_eq!(f.psql("SELECT to_regclass('base') IS NOT NULL"), "t");
    assert_eq!(
        f.psql("SELECT string_agg(version::text, ',') FROM blueshift.schema_version"),
        "1"
    );
    let failed = f.psql(
        "SELECT version || ' ' || action || ' ' || outcome || ' ' || (detail LIKE '%42703%') \
                || ' ' || (detail LIKE '%V2__half.sql:5:8%') \
           FROM blueshift.schema_history WHERE outcome = 'failed'",
    );
    assert_eq!(failed, "2 up failed true true");

    // A fixed script then applies.
    f.write(
        "V2__half.sql",
        "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nSELECT id FROM half;\n",
    );
    let run = m.up(&mut client, None, false).await.unwrap();
    assert_eq!(run.steps.len(), 1);
    assert_eq!(f.psql("SELECT count(*) FROM half"), "1");
}

#[tokio::test]
async fn transaction_control_and_concurrently_in_a_transactional_script_are_explained() {
    let f = Fixture::new("txcontrol");
    f.write(
        "V1__t.sql",
        "CREATE TABLE t (a int);\nBEGIN;\nSELECT 1;\nCOMMIT;\n",
    );
    let mut client = f.connect().await;
    let m = f.migrator();
    let err = m
        .up(&mut client, None, false)
        .await
        .expect_err("BEGIN is refused");
    assert!(
        matches!(&err, MigrateError::TransactionControl { at, .. } if *at == TextPosition { line: 2, column: 1 }),
        "{err}"
    );
    assert!(
        err.to_string().contains("blueshift:no-transaction"),
        "{err}"
    );
    assert_eq!(f.psql("SELECT to_regclass('t') IS NULL"), "t");

    f.write(
        "V1__t.sql",
        "CREATE TABLE t (a int);\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    );
    let err = m
        .up(&mut client, None, false)
        .await
        .expect_err("CONCURRENTLY fails in a transaction");
    let text = err.to_string();
    assert!(text.contains("V1__t.sql:2:1"), "{text}");
    assert!(text.contains("-- blueshift:no-transaction"), "{text}");
}

#[tokio::test]
async fn dry_runs_leave_the_database_untouched() {
    let f = Fixture::new("dryrun");
    f.write("V1__a.sql", "CREATE TABLE a (id int);");
    f.write("V1__a.down.sql", "DROP TABLE a;");
    f.write(
        "V2__b.sql",
        "-- blueshift:no-transaction\nCREATE TABLE b (id int);\nCREATE INDEX CONCURRENTLY b_id ON b (id);",
    );
    let mut client = f.connect().await;
    let m = f.migrator();
    let before = snapshot(&f);
    assert!(
        before.ends_with("/ -1"),
        "no blueshift schema yet: {before}"
    );

    let run = m.up(&mut client, None, true).await.unwrap();
    assert!(run.dry_run);
    let planned: Vec<(i64, bool, usize)> = run
        .steps
        .iter()
        .map(|s| (s.version.get(), s.transactional, s.statements))
        .collect();
    assert_eq!(planned, [(1, true, 1), (2, false, 2)]);
    assert!(run.steps.iter().all(|s| s.execution_ms.is_none()));
    assert_eq!(
        snapshot(&f),
        before,
        "a dry run creates nothing, not even the blueshift schema"
    );
    assert!(!m.status(&client).await.unwrap().initialized);

    m.up(&mut client, Some(v(1)), false).await.unwrap();
    let before = snapshot(&f);
    let history = f.psql("SELECT count(*) FROM blueshift.schema_history");
    let run = m.up(&mut client, None, true).await.unwrap();
    assert_eq!(run.steps.len(), 1);
    let run = m.down(&mut client, Some(0), true).await.unwrap();
    assert_eq!(run.steps.len(), 1);
    assert_eq!(run.steps[0].version, v(1));
    assert_eq!(snapshot(&f), before);
    assert_eq!(
        f.psql("SELECT count(*) FROM blueshift.schema_history"),
        history
    );
    assert_eq!(f.psql("SELECT to_regclass('b') IS NULL"), "t");
}

#[tokio::test]
async fn down_reverts_to_a_version_and_refuses_without_down_scripts() {
    let f = Fixture::new("down");
    f.write("V1__one.sql", "CREATE TABLE one (id int);");
    f.write("V2__two.sql", "CREATE TABLE two (id int);");
    f.write("V2__two.down.sql", "DROP TABLE two;");
    f.write("V3__three.sql", "CREATE TABLE three (id int);");
    f.write("V3__three.down.sql", "DROP TABLE three;");
    let mut client = f.connect().await;
    let m = f.migrator();
    m.up(&mut client, None, false).await.unwrap();

    // Without --to: only the newest.
    let run = m.down(&mut client, None, false).await.unwrap();
    assert_eq!(
        run.steps
            .iter()
            .map(|s| s.version.get())
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(f.psql("SELECT to_regclass('three') IS NULL"), "t");
    m.up(&mut client, None, false).await.unwrap();

    let run = m.down(&mut client, Some(1), false).await.unwrap();
    assert_eq!((run.from, run.to), (Some(v(3)), Some(v(1))));
    assert_eq!(
        run.steps
            .iter()
            .map(|s| s.version.get())
            .collect::<Vec<_>>(),
        [3, 2]
    );
    let status = m.status(&client).await.unwrap();
    let states: Vec<State> = status.entries.iter().map(|e| e.state).collect();
    assert_eq!(states, [State::Applied, State::Pending, State::Pending]);
    assert_eq!(
        f.psql("SELECT to_regclass('two') IS NULL AND to_regclass('one') IS NOT NULL"),
        "t"
    );

    // V1 has no down script: refused before anything runs, V2 and V3 stay applied.
    m.up(&mut client, None, false).await.unwrap();
    let err = m
        .down(&mut client, Some(0), false)
        .await
        .expect_err("V1 has no down script");
    match &err {
        MigrateError::MissingDown { versions } => {
            assert_eq!(versions, &[(v(1), "V1__one.sql".to_owned())]);
        }
        other => panic!("expected MissingDown, got {other}"),
    }
    assert!(err.to_string().contains("nothing was reverted"), "{err}");
    assert_eq!(
        f.psql(
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM blueshift.schema_version"
        ),
        "1,2,3"
    );
    assert_eq!(f.psql("SELECT to_regclass('three') IS NOT NULL"), "t");
    assert_eq!(
        f.psql("SELECT count(*) FROM blueshift.schema_history WHERE action = 'down' AND outcome = 'success'"),
        "3"
    );

    // A down script never filled in (only comments) is refused, not run as a no-op.
    f.write("V4__four.sql", "CREATE TABLE four (id int);");
    f.write("V4__four.down.sql", "-- Reverts V4: four\n\n");
    m.up(&mut client, None, false).await.unwrap();
    let err = m
        .down(&mut client, None, false)
        .await
        .expect_err("the down script is empty");
    assert!(matches!(err, MigrateError::EmptyScript { .. }), "{err}");
    assert_eq!(f.psql("SELECT to_regclass('four') IS NOT NULL"), "t");
}

#[tokio::test]
async fn baseline_adopts_an_existing_schema() {
    let f = Fixture::new("baseline");
    f.psql("CREATE TABLE users (id int PRIMARY KEY); INSERT INTO users VALUES (1);");
    f.write(
        "V1__create_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);",
    );
    f.write("V2__seed.sql", "CREATE TABLE seeded (id int);");
    f.write(
        "V3__add_email.sql",
        "ALTER TABLE users ADD COLUMN email text;",
    );
    f.write(
        "V3__add_email.down.sql",
        "ALTER TABLE users DROP COLUMN email;",
    );
    let mut client = f.connect().await;
    let m = f.migrator();

    m.baseline(&mut client, v(2), "schema as of the \"2024\" dump — ü")
        .await
        .unwrap();
    let status = m.status(&client).await.unwrap();
    let states: Vec<State> = status.entries.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [State::BelowBaseline, State::Baseline, State::Pending]
    );

    let run = m.up(&mut client, None, false).await.unwrap();
    assert_eq!(
        run.steps
            .iter()
            .map(|s| s.version.get())
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(f.psql("SELECT to_regclass('seeded') IS NULL"), "t");
    assert_eq!(f.psql("SELECT count(email) + count(*) FROM users"), "1");

    let err = m
        .baseline(&mut client, v(5), "again")
        .await
        .expect_err("already migrated");
    assert!(
        matches!(err, MigrateError::AlreadyMigrated { version } if version == v(3)),
        "{err}"
    );
    let err = m
        .down(&mut client, Some(0), false)
        .await
        .expect_err("cannot cross the baseline");
    assert!(
        matches!(err, MigrateError::BelowBaseline { baseline } if baseline == v(2)),
        "{err}"
    );
    m.down(&mut client, Some(2), false).await.unwrap();
    assert_eq!(
        f.psql("SELECT kind || ' ' || description FROM blueshift.schema_version"),
        "baseline schema as of the \"2024\" dump — ü"
    );
    assert_eq!(
        f.psql("SELECT count(*) FROM blueshift.schema_history WHERE action = 'baseline'"),
        "1"
    );
}

#[tokio::test]
async fn an_edited_script_fails_validate_and_blocks_up_until_repair() {
    let f = Fixture::new("validate");
    f.write("V1__one.sql", "CREATE TABLE one (id int);");
    f.write("V2__two.sql", "CREATE TABLE two (id int);");
    let mut client = f.connect().await;
    let m = f.migrator();
    m.up(&mut client, None, false).await.unwrap();

    f.write("V1__one.sql", "CREATE TABLE one (id int); -- reviewed edit");
    f.write("V3__three.sql", "CREATE TABLE three (id int);");
    let err = m.validate(&client).await.expect_err("V1 changed");
    match &err {
        MigrateError::Validation { problems } => {
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].version, v(1));
            assert_eq!(problems[0].state, State::Changed);
        }
        other => panic!("expected a validation error, got {other}"),
    }
    assert!(
        err.to_string().contains("blueshift migrate repair"),
        "{err}"
    );
    let err = m
        .up(&mut client, None, false)
        .await
        .expect_err("up refuses");
    assert!(matches!(err, MigrateError::Validation { .. }), "{err}");
    assert_eq!(f.psql("SELECT to_regclass('three') IS NULL"), "t");

    // A script removed from disk is a problem too.
    std::fs::remove_file(f.dir().join("V2__two.sql")).unwrap();
    let err = m.validate(&client).await.expect_err("V2 is missing");
    assert!(
        matches!(&err, MigrateError::Validation { problems } if problems.len() == 2
            && problems[1].state == State::MissingOnDisk),
        "{err}"
    );

    let repairs = m.repair(&mut client).await.unwrap();
    assert_eq!(repairs.len(), 2);
    assert!(matches!(&repairs[0], Repair::Realigned { version, .. } if *version == v(1)));
    assert!(
        matches!(&repairs[1], Repair::Removed { version, was: State::MissingOnDisk, .. } if *version == v(2))
    );
    m.validate(&client).await.unwrap();
    let run = m.up(&mut client, None, false).await.unwrap();
    assert_eq!(
        run.steps
            .iter()
            .map(|s| s.version.get())
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(
        f.psql("SELECT count(*) FROM blueshift.schema_history WHERE action = 'repair'"),
        "2"
    );
    assert!(m.repair(&mut client).await.unwrap().is_empty());
}

#[tokio::test]
async fn names_with_quotes_spaces_and_unicode_work_everywhere() {
    let f = Fixture::new("it's a \"db\" ü 表");
    let name = "V1__create it's \"quoted\" schema ü 表.sql";
    f.write(
        name,
        "CREATE SCHEMA \"My \"\"Schema\"\" ü\";\n\
         CREATE TABLE \"My \"\"Schema\"\" ü\".\"it's a \"\"table\"\" 表\" (\"Col 'x'\" text);\n\
         INSERT INTO \"My \"\"Schema\"\" ü\".\"it's a \"\"table\"\" 表\" VALUES ('ünï''cödé;');\n",
    );
    f.write(
        "V2__fail in \"ü\" file.sql",
        "SELECT 'é', \"nö such\" FROM \"My \"\"Schema\"\" ü\".\"it's a \"\"table\"\" 表\";",
    );
    let mut client = f.connect().await;
    let m = f.migrator();
    let err = m.up(&mut client, None, false).await.expect_err("V2 fails");
    // Columns count characters: `"nö such"` starts at character 13.
    let text = err.to_string();
    assert!(text.contains("V2__fail in \"ü\" file.sql:1:13"), "{text}");
    assert_eq!(
        f.psql("SELECT \"Col 'x'\" FROM \"My \"\"Schema\"\" ü\".\"it's a \"\"table\"\" 表\""),
        "ünï'cödé;"
    );
    assert_eq!(
        f.psql("SELECT description || ' / ' || script FROM blueshift.schema_version"),
        format!("create it's \"quoted\" schema ü 表 / {name}")
    );
    let status = m.status(&client).await.unwrap();
    assert_eq!(
        status.entries[0].description,
        "create it's \"quoted\" schema ü 表"
    );
    assert_eq!(status.entries[1].description, "fail in \"ü\" file");
    assert_eq!(
        f.psql(
            "SELECT string_agg(outcome || ' ' || description, ',' ORDER BY id) \
               FROM blueshift.schema_history"
        ),
        "success create it's \"quoted\" schema ü 表,failed fail in \"ü\" file"
    );
}
