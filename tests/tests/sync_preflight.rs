//! `blueshift sync` preflight, the real binary: each check fails before any data moves, with an
//! error naming the object and the fix; `--create-publication` and `--binary`.

#[path = "support/sync.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use blueshift_tests::{blueshift_binary, PgBinaries};
use support::Pair;

/// Runs `blueshift sync` expecting it to stop at preflight; returns its stderr.
fn refused(pair: &Pair, extra: &[&str]) -> String {
    let out = Command::new(blueshift_binary())
        .arg("sync")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--slot", "bs"])
        .args(extra)
        .output()
        .expect("runs");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "preflight passed: {err}");
    // Nothing moved: no slot was created.
    assert_eq!(
        pair.blue
            .psql("app", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0",
        "{err}"
    );
    err
}

#[test]
fn wal_level_must_be_logical() {
    let pair = Pair::with(
        "walreplica",
        PgBinaries::from_env().unwrap(),
        PgBinaries::from_env().unwrap(),
        &[("wal_level", "replica")],
    );
    let err = refused(&pair, &["--publication", "p", "--create-publication"]);
    assert!(err.contains("wal_level = replica"), "{err}");
    assert!(
        err.contains("ALTER SYSTEM SET wal_level = logical"),
        "{err}"
    );
}

#[test]
fn missing_publication_tables_and_columns_are_named() {
    let pair = Pair::new("preflight");
    pair.blue
        .psql(
            "app",
            "CREATE TABLE a (id int PRIMARY KEY, v text, extra int); CREATE TABLE \"Only Blue\" (id int PRIMARY KEY)",
        )
        .unwrap();
    // Blue's `extra` is not on green (its values would be lost: refused unless excluded);
    // green's `tenant` has no value to take.
    pair.green
        .psql(
            "app",
            "CREATE TABLE a (id int PRIMARY KEY, v text, tenant int NOT NULL)",
        )
        .unwrap();

    let err = refused(&pair, &["--publication", "nope"]);
    assert!(
        err.contains("publication \"nope\" does not exist") && err.contains("--create-publication"),
        "{err}"
    );

    pair.blue
        .psql("app", "CREATE PUBLICATION p FOR ALL TABLES")
        .unwrap();
    let err = refused(&pair, &["--publication", "p"]);
    assert!(
        err.contains("table \"public\".\"Only Blue\" does not exist on green"),
        "{err}"
    );
    assert!(
        err.contains("column \"tenant\" of table \"public\".\"a\""),
        "{err}"
    );
    assert!(err.contains("add a default"), "{err}");
    assert!(
        err.contains("column \"extra\" of table \"public\".\"a\": green has no column \"extra\""),
        "{err}"
    );
    assert!(
        err.contains("ALTER TABLE \"public\".\"a\" ADD COLUMN \"extra\" integer")
            && err.contains("--exclude 'public.a:extra'"),
        "both fixes: {err}"
    );
    assert!(err.contains("blueshift migrate"), "{err}");
    // Excluded, `extra` is no longer a problem; the others still are.
    let err = refused(&pair, &["--publication", "p", "--exclude", "a:extra"]);
    assert!(!err.contains("\"extra\""), "{err}");
    assert!(err.contains("\"tenant\""), "{err}");
}

#[test]
fn create_publication_for_listed_tables_then_binary_mode() {
    let pair = Pair::new("createpub");
    pair.schema(
        "CREATE TABLE a (id int PRIMARY KEY, v text, n numeric, t timestamptz);
         CREATE TABLE b (id int PRIMARY KEY)",
    );
    // --binary with a type that differs on green is refused.
    pair.green
        .psql("app", "ALTER TABLE b ALTER COLUMN id TYPE bigint")
        .unwrap();
    let err = refused(
        &pair,
        &["--publication", "pub", "--create-publication", "--binary"],
    );
    assert!(
        err.contains("--binary needs the same built-in type"),
        "{err}"
    );
    assert!(err.contains("\"id\" of table \"public\".\"b\""), "{err}");
    // The failed attempt created the publication (for all tables); drop it to start over.
    pair.blue.psql("app", "DROP PUBLICATION pub").unwrap();

    // Only table a: binary mode is fine there.
    let mut sync = pair.sync(&["--create-publication", "public.a", "--binary"]);
    assert_eq!(
        pair.blue
            .psql(
                "app",
                "SELECT string_agg(tablename, ',') || ' ' || obj_description(p.oid, 'pg_publication')
                   FROM pg_publication p JOIN pg_publication_tables t ON t.pubname = p.pubname
                  WHERE p.pubname = 'pub' GROUP BY p.oid"
            )
            .unwrap(),
        "a blueshift: created by blueshift sync"
    );
    pair.blue
        .psql(
            "app",
            "INSERT INTO a VALUES (1, 'x', 1.50, '2026-01-02 03:04:05+02'), (2, NULL, 'NaN', NULL);
             UPDATE a SET v = 'y' WHERE id = 2;",
        )
        .unwrap();
    pair.converge(&["a"], Duration::from_secs(60));
    assert!(sync.terminate());
}

/// Settings from a TOML file and `BLUESHIFT_*` variables, the command line naming neither blue
/// nor green.
#[test]
fn settings_come_from_a_toml_file_and_the_environment() {
    let pair = Pair::new("config");
    pair.schema("CREATE TABLE a (id int PRIMARY KEY, v text)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sync.toml");
    std::fs::write(
        &file,
        format!(
            "source = \"{}\"\npublication = \"filepub\"\ncreate_publication = []\nslot = \"bs\"\nstatus_interval = 1\n",
            pair.blue.uri("app")
        ),
    )
    .unwrap();
    let mut child = Command::new(blueshift_binary())
        .args(["sync", "--config", file.to_str().unwrap()])
        .env("BLUESHIFT_TARGET", pair.green.uri("app"))
        .env("BLUESHIFT_WORKERS", "2")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    blueshift_tests::eventually(Duration::from_secs(60), || {
        let active = pair.blue.psql(
            "app",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bs' AND active",
        )?;
        anyhow::ensure!(active == "1", "not streaming yet");
        Ok(())
    })
    .unwrap();
    // The file's publication was created, for all tables, and marked as blueshift's.
    assert_eq!(
        pair.blue
            .psql(
                "app",
                "SELECT puballtables FROM pg_publication WHERE pubname = 'filepub'"
            )
            .unwrap(),
        "t"
    );
    pair.blue
        .psql(
            "app",
            "INSERT INTO a SELECT g, 'v' FROM generate_series(1, 100) g",
        )
        .unwrap();
    pair.converge(&["a"], Duration::from_secs(60));
    // Two appliers (BLUESHIFT_WORKERS), each with its origin on green.
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'blueshift_bs_%'"
            )
            .unwrap(),
        "2"
    );
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
}
