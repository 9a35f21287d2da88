//! Least privilege: the whole lifecycle (migrate, sync with backfill, status, cleanup) with no
//! superuser on either side, using exactly the grants `docs/privileges.md` lists; and with each
//! of those privileges taken away in turn, `blueshift sync` stops at preflight naming the exact
//! GRANT and creates nothing (no slot, no origin, no schema `blueshift`).

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use blueshift_tests::{
    blueshift_binary, eventually, succeeded, Cluster, ClusterOptions, PgBinaries,
};

/// blue's grants for role `bs_blue` (as docs/privileges.md gives them).
const BLUE_GRANTS: &str = "
CREATE ROLE bs_blue LOGIN REPLICATION;
GRANT USAGE ON SCHEMA shop TO bs_blue;
GRANT SELECT ON ALL TABLES IN SCHEMA shop TO bs_blue;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA shop TO bs_blue;
";

/// green's grants for role `bs_green` (PostgreSQL 15 and later).
const GREEN_GRANTS: &str = "
CREATE ROLE bs_green LOGIN;
GRANT CREATE ON DATABASE app TO bs_green;
GRANT USAGE, CREATE ON SCHEMA shop TO bs_green;
GRANT SET ON PARAMETER session_replication_role TO bs_green;
GRANT EXECUTE ON FUNCTION
    pg_catalog.pg_replication_origin_create(text),
    pg_catalog.pg_replication_origin_oid(text),
    pg_catalog.pg_replication_origin_session_setup(text),
    pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamptz),
    pg_catalog.pg_replication_origin_progress(text, boolean),
    pg_catalog.pg_replication_origin_drop(text)
  TO bs_green;
GRANT SELECT ON pg_catalog.pg_replication_origin TO bs_green;
";

const TABLES: &str = "
CREATE TABLE shop.items (id bigserial PRIMARY KEY, name text NOT NULL, price int);
CREATE TABLE shop.tags (item bigint NOT NULL, tag text NOT NULL, PRIMARY KEY (item, tag));
CREATE INDEX items_name ON shop.items (name);
";

struct Setup {
    blue: Cluster,
    green: Cluster,
}

/// Blue with schema `shop`, its tables, rows, the publication (made by the superuser) and
/// `bs_blue`; green with schema `shop` owned by the superuser and `bs_green`, no tables yet.
fn setup(name: &str) -> Setup {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let blue = Cluster::start(ClusterOptions::new(bins.clone()).name(&format!("{name}-blue")))
        .expect("blue starts");
    let green = Cluster::start(ClusterOptions::new(bins).name(&format!("{name}-green")))
        .expect("green starts");
    for c in [&blue, &green] {
        c.create_database("app").unwrap();
        c.psql("app", "CREATE SCHEMA shop").unwrap();
    }
    blue.psql("app", TABLES).unwrap();
    blue.psql(
        "app",
        "INSERT INTO shop.items (name, price) SELECT 'item ' || g, g FROM generate_series(1, 300) g;
         INSERT INTO shop.tags SELECT g, 't' || (g % 3) FROM generate_series(1, 300) g;
         CREATE PUBLICATION pub FOR TABLE shop.items, shop.tags;",
    )
    .unwrap();
    blue.psql("app", BLUE_GRANTS).unwrap();
    green.psql("app", GREEN_GRANTS).unwrap();
    Setup { blue, green }
}

fn blue_uri(s: &Setup) -> String {
    format!("postgresql://bs_blue@127.0.0.1:{}/app", s.blue.port())
}

fn green_uri(s: &Setup) -> String {
    format!("postgresql://bs_green@127.0.0.1:{}/app", s.green.port())
}

fn blueshift(args: &[&str]) -> Output {
    Command::new(blueshift_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("PGPASSWORD")
        .env_remove("DATABASE_URL")
        .env_remove("BLUESHIFT_SOURCE")
        .env_remove("BLUESHIFT_TARGET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("blueshift runs")
}

/// Green's tables through `blueshift migrate` as `bs_green`, which so owns them.
fn migrate_green(s: &Setup) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("V1__shop.sql"), TABLES).unwrap();
    let uri = green_uri(s);
    succeeded(
        "migrate up",
        &blueshift(&[
            "migrate",
            "up",
            "--database",
            &uri,
            "--dir",
            dir.path().to_str().unwrap(),
        ]),
    );
}

fn rows(c: &Cluster, table: &str) -> String {
    c.psql(
        "app",
        &format!(
            "SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) \
               FROM {table} x"
        ),
    )
    .unwrap()
}

#[test]
fn whole_lifecycle_without_a_superuser() {
    let s = setup("lp-life");
    assert_eq!(
        s.green
            .psql(
                "app",
                "SELECT rolsuper FROM pg_roles WHERE rolname = 'bs_green'"
            )
            .unwrap(),
        "f"
    );
    migrate_green(&s);
    let (blue, green) = (blue_uri(&s), green_uri(&s));
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sync.log");
    let mut sync = Command::new(blueshift_binary())
        .args(["sync", "--source", &blue, "--target", &green])
        .args([
            "--publication",
            "pub",
            "--slot",
            "lp",
            "--status-interval",
            "1",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sync starts");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(90), || {
        anyhow::ensure!(sync.try_wait()?.is_none(), "sync exited:\n{}", log_text());
        anyhow::ensure!(log_text().contains("sync started"), "not streaming yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    s.blue
        .psql(
            "app",
            "UPDATE shop.items SET price = price + 1 WHERE id <= 50;
             DELETE FROM shop.tags WHERE item > 250;
             INSERT INTO shop.items (name, price) VALUES ('late', 0);
             TRUNCATE shop.tags;
             INSERT INTO shop.tags VALUES (1, 'again');",
        )
        .unwrap();
    eventually(Duration::from_secs(90), || {
        for t in ["shop.items", "shop.tags"] {
            anyhow::ensure!(rows(&s.blue, t) == rows(&s.green, t), "{t} differs");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log_text()));
    // The backfill set green's sequence from blue's (as of the copy: 300 rows).
    assert_eq!(
        s.green
            .psql("app", "SELECT last_value FROM shop.items_id_seq")
            .unwrap(),
        "300"
    );
    let status = succeeded(
        "status",
        &blueshift(&[
            "status", "--source", &blue, "--target", &green, "--slot", "lp",
        ]),
    );
    assert!(status.contains("lp"), "{status}");
    sync.kill().unwrap();
    sync.wait().unwrap();
    succeeded(
        "cleanup",
        &blueshift(&[
            "cleanup", "--source", &blue, "--target", &green, "--slot", "lp", "--yes",
        ]),
    );
    assert_eq!(
        s.blue
            .psql("app", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0"
    );
    assert_eq!(
        s.green
            .psql("app", "SELECT count(*) FROM pg_replication_origin")
            .unwrap(),
        "0"
    );
}

#[test]
fn each_missing_privilege_is_named_and_nothing_is_created() {
    let s = setup("lp-missing");
    migrate_green(&s);
    let (blue, green) = (blue_uri(&s), green_uri(&s));
    // (cluster, take away, the exact fix expected, give back)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "blue",
            "ALTER ROLE bs_blue NOREPLICATION",
            "ALTER ROLE \"bs_blue\" REPLICATION;",
            "ALTER ROLE bs_blue REPLICATION",
        ),
        (
            "blue",
            "REVOKE SELECT ON shop.tags FROM bs_blue",
            "GRANT SELECT ON TABLE \"shop\".\"tags\" TO \"bs_blue\";",
            "GRANT SELECT ON shop.tags TO bs_blue",
        ),
        (
            "blue",
            "REVOKE USAGE ON SCHEMA shop FROM bs_blue",
            "GRANT USAGE ON SCHEMA \"shop\" TO \"bs_blue\";",
            "GRANT USAGE ON SCHEMA shop TO bs_blue",
        ),
        (
            "blue",
            "REVOKE SELECT ON SEQUENCE shop.items_id_seq FROM bs_blue",
            "GRANT SELECT ON SEQUENCE \"shop\".\"items_id_seq\" TO \"bs_blue\";",
            "GRANT SELECT ON SEQUENCE shop.items_id_seq TO bs_blue",
        ),
        (
            "green",
            "REVOKE CREATE ON DATABASE app FROM bs_green",
            "GRANT CREATE ON DATABASE \"app\" TO \"bs_green\";",
            "GRANT CREATE ON DATABASE app TO bs_green",
        ),
        (
            "green",
            "REVOKE SET ON PARAMETER session_replication_role FROM bs_green",
            "GRANT SET ON PARAMETER session_replication_role TO \"bs_green\";",
            "GRANT SET ON PARAMETER session_replication_role TO bs_green",
        ),
        (
            "green",
            "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamptz) FROM bs_green",
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone) TO \"bs_green\";",
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamptz) TO bs_green",
        ),
        (
            "green",
            "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text) FROM bs_green",
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text) TO \"bs_green\";",
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_create(text) TO bs_green",
        ),
        (
            "green",
            "REVOKE USAGE ON SCHEMA shop FROM bs_green",
            "GRANT USAGE ON SCHEMA \"shop\" TO \"bs_green\";",
            "GRANT USAGE ON SCHEMA shop TO bs_green",
        ),
        (
            "green",
            "ALTER TABLE shop.items OWNER TO postgres",
            "ALTER TABLE \"shop\".\"items\" OWNER TO \"bs_green\";",
            "ALTER TABLE shop.items OWNER TO bs_green",
        ),
        (
            "green",
            "ALTER TABLE shop.tags OWNER TO postgres; GRANT SELECT, INSERT ON shop.tags TO bs_green",
            "GRANT UPDATE, DELETE, TRUNCATE ON TABLE \"shop\".\"tags\" TO \"bs_green\";",
            "ALTER TABLE shop.tags OWNER TO bs_green",
        ),
    ];
    for (side, take, fix, give) in cases {
        let cluster = if *side == "blue" { &s.blue } else { &s.green };
        cluster.psql("app", take).unwrap();
        let out = blueshift(&[
            "sync",
            "--source",
            &blue,
            "--target",
            &green,
            "--publication",
            "pub",
            "--slot",
            "lp",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "sync ran without {fix}:\n{stderr}");
        assert!(
            stderr.contains(&format!("on {side}: {fix}")),
            "after `{take}` the error does not name `{fix}`:\n{stderr}"
        );
        assert!(stderr.contains("nothing was created"), "{stderr}");
        // Nothing was created on either side.
        assert_eq!(
            s.blue
                .psql("app", "SELECT count(*) FROM pg_replication_slots")
                .unwrap(),
            "0",
            "a slot was left behind after `{take}`"
        );
        assert_eq!(
            s.green
                .psql("app", "SELECT count(*) FROM pg_replication_origin")
                .unwrap(),
            "0",
            "an origin was created after `{take}`"
        );
        assert_eq!(
            s.green
                .psql(
                    "app",
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE n.nspname = 'blueshift' AND c.relname LIKE 'backfill%'"
                )
                .unwrap(),
            "0",
            "backfill state was created after `{take}`"
        );
        cluster.psql("app", give).unwrap();
    }
}
