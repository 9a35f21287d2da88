//! Tests of the ephemeral-cluster harness itself: start on the default
//! binaries and on every supported major, SQL through `psql` and
//! `tokio_postgres`, settings and `pg_hba.conf` lines, stop/restart/crash
//! keeping data, distinct ports, teardown on drop, and the errors for missing
//! binaries (which name the install command: tests never skip).

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use blueshift_tests::{eventually, eventually_async, Cluster, ClusterOptions, PgBinaries};

fn default_bins() -> PgBinaries {
    PgBinaries::from_env().expect("the default PostgreSQL binaries")
}

fn start(opts: ClusterOptions) -> Cluster {
    Cluster::start(opts).expect("cluster starts")
}

#[test]
fn starts_with_logical_wal_and_per_test_settings() {
    let cluster = start(
        ClusterOptions::new(default_bins())
            .name("blue")
            .setting("work_mem", "7MB")
            .setting("log_line_prefix", "%m it's quoted "),
    );
    assert_eq!(
        cluster.psql("postgres", "SHOW wal_level").unwrap(),
        "logical"
    );
    assert_eq!(cluster.psql("postgres", "SHOW work_mem").unwrap(), "7MB");
    assert_eq!(
        cluster.psql("postgres", "SHOW log_line_prefix").unwrap(),
        "%m it's quoted "
    );
    assert_eq!(
        cluster.psql("postgres", "SHOW cluster_name").unwrap(),
        "blue"
    );
    assert_eq!(cluster.psql("postgres", "SHOW fsync").unwrap(), "off");
    assert_eq!(
        cluster
            .psql("postgres", "SHOW max_replication_slots")
            .unwrap(),
        "20"
    );
    assert_eq!(
        cluster.psql("postgres", "SHOW server_encoding").unwrap(),
        "UTF8"
    );
    assert_eq!(cluster.psql("postgres", "SHOW lc_collate").unwrap(), "C");
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.superuser(), "postgres");
    assert_eq!(
        cluster.uri("postgres"),
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres",
            cluster.port()
        )
    );
    assert!(cluster
        .socket_dir()
        .join(format!(".s.PGSQL.{}", cluster.port()))
        .exists());
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert_eq!(
        cluster.binaries().major_version(),
        default_bins().major_version()
    );
}

#[tokio::test]
async fn psql_and_connect_see_the_same_data() {
    let cluster = start(ClusterOptions::new(default_bins()).name("blue"));
    let db = "we\"ird db";
    cluster.create_database(db).unwrap();
    // A multi-statement script, run statement by statement.
    cluster
        .psql(
            db,
            "CREATE TABLE t (id int PRIMARY KEY, v text);\n\
             INSERT INTO t VALUES (1, 'one'), (2, 'two');\n\
             VACUUM t;",
        )
        .unwrap();
    assert_eq!(
        cluster.psql(db, "SELECT id, v FROM t ORDER BY id").unwrap(),
        "1|one\n2|two"
    );

    let client = cluster.connect(db).await.unwrap();
    let rows = client
        .query("SELECT v FROM t ORDER BY id", &[])
        .await
        .unwrap();
    let values: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, ["one", "two"]);
    client
        .execute("INSERT INTO t VALUES (3, 'three')", &[])
        .await
        .unwrap();
    assert_eq!(cluster.psql(db, "SELECT count(*) FROM t").unwrap(), "3");

    // The URI names the same database (percent-encoded).
    let config: tokio_postgres::Config = cluster.uri(db).parse().unwrap();
    let (by_uri, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = by_uri
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), db);

    let found = eventually_async(Duration::from_secs(5), || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM t", &[])
            .await?
            .get(0);
        anyhow::ensure!(n == 3, "{n} rows");
        Ok(n)
    })
    .await
    .unwrap();
    assert_eq!(found, 3);
}

#[test]
fn psql_errors_carry_stderr() {
    let cluster = start(ClusterOptions::new(default_bins()).name("blue"));
    let err = cluster
        .psql("postgres", "SELECT 1;\nSELECT no_such_column;\nSELECT 2;")
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("column \"no_such_column\" does not exist"),
        "{text}"
    );
    let err = cluster.psql("no_such_db", "SELECT 1").unwrap_err();
    assert!(
        format!("{err:#}").contains("\"no_such_db\" does not exist"),
        "{err:#}"
    );
}

#[tokio::test]
async fn hba_lines_come_before_the_defaults() {
    let cluster = start(
        ClusterOptions::new(default_bins())
            .name("green")
            .hba_line("host all mallory 127.0.0.1/32 reject"),
    );
    cluster
        .psql(
            "postgres",
            "CREATE ROLE mallory LOGIN; CREATE ROLE alice LOGIN;",
        )
        .unwrap();
    let as_user = |user: &str| {
        let mut config = tokio_postgres::Config::new();
        config
            .host(cluster.host())
            .port(cluster.port())
            .user(user)
            .dbname("postgres");
        config
    };
    let err = as_user("mallory")
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("mallory is rejected");
    let message = err.as_db_error().expect("a server error").message();
    assert!(message.contains("pg_hba.conf rejects"), "{message}");
    let (alice, connection) = as_user("alice")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("alice is trusted");
    tokio::spawn(connection);
    let row = alice
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
}

#[test]
fn restart_stop_and_crash_keep_committed_data() {
    let mut cluster = start(ClusterOptions::new(default_bins()).name("blue"));
    let port = cluster.port();
    cluster.create_database("app").unwrap();
    cluster
        .psql(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);",
        )
        .unwrap();

    cluster.restart().unwrap();
    cluster.psql("app", "INSERT INTO t VALUES (2)").unwrap();

    cluster.stop().unwrap();
    assert!(cluster.psql("app", "SELECT 1").is_err(), "stopped");
    cluster.start_again().unwrap();
    cluster.psql("app", "INSERT INTO t VALUES (3)").unwrap();

    cluster.crash().unwrap();
    assert!(cluster.psql("app", "SELECT 1").is_err(), "crashed");
    cluster.start_again().unwrap();
    assert_eq!(cluster.port(), port, "the port survives restarts");
    assert_eq!(
        cluster
            .psql("app", "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .unwrap(),
        "1,2,3"
    );
    let log = cluster.log();
    assert!(
        log.contains("not properly shut down") || log.contains("was interrupted"),
        "crash recovery is in the log:\n{log}"
    );
}

#[test]
fn two_clusters_at_once_on_different_majors_get_distinct_ports() {
    let blue = start(ClusterOptions::new(default_bins()).name("blue"));
    let green =
        start(ClusterOptions::new(PgBinaries::major(18).expect("PostgreSQL 18")).name("green"));
    assert_ne!(blue.port(), green.port());
    assert_ne!(blue.data_dir(), green.data_dir());
    assert_eq!(green.binaries().major_version(), 18);
    assert!(green
        .psql("postgres", "SHOW server_version_num")
        .unwrap()
        .starts_with("18"));
    assert_eq!(
        blue.psql("postgres", "SHOW server_version_num").unwrap()[..2],
        default_bins().major_version().to_string()
    );
    assert_eq!(green.psql("postgres", "SHOW wal_level").unwrap(), "logical");
}

#[tokio::test]
async fn every_supported_major_starts_and_replicates_logically() {
    for major in 14..=18 {
        let bins = PgBinaries::major(major).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(bins.major_version(), major);
        assert!(
            bins.version().starts_with(&major.to_string()),
            "{}",
            bins.version()
        );
        assert!(bins.bin("pg_recvlogical").is_file());
        let cluster = start(ClusterOptions::new(bins).name(&format!("pg{major}")));
        let client = cluster.connect("postgres").await.unwrap();
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int / 10000",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), major as i32);
        // A logical slot with pgoutput works on each of them.
        cluster
            .psql(
                "postgres",
                "CREATE TABLE t (id int PRIMARY KEY);\n\
                 CREATE PUBLICATION p FOR TABLE t;\n\
                 SELECT 1 FROM pg_create_logical_replication_slot('s', 'pgoutput');\n\
                 INSERT INTO t VALUES (1);",
            )
            .unwrap();
        let changes = cluster
            .psql(
                "postgres",
                "SELECT count(*) > 0 FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL, \
                 'proto_version', '1', 'publication_names', 'p')",
            )
            .unwrap();
        assert_eq!(changes, "t", "PostgreSQL {major}");
    }
}

#[test]
fn drop_stops_the_server_and_removes_its_files() {
    let cluster = start(ClusterOptions::new(default_bins()));
    let root = cluster
        .data_dir()
        .parent()
        .expect("the data dir is in the cluster's temp folder")
        .to_path_buf();
    let port = cluster.port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(cluster);
    assert!(!root.exists(), "{} removed", root.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server stopped"
    );
}

#[test]
fn dropping_a_crashed_cluster_removes_its_files() {
    let mut cluster = start(ClusterOptions::new(default_bins()));
    let data_dir = cluster.data_dir().to_path_buf();
    cluster.crash().unwrap();
    drop(cluster);
    assert!(!data_dir.exists());
}

/// Runs the `pg-binaries` helper with only the given environment.
fn pg_binaries(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pg-binaries"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn missing_default_binaries_name_the_install_command() {
    let (ok, text) = pg_binaries(&[], &[("PATH", "/nonexistent")]);
    assert!(!ok, "{text}");
    assert!(text.contains("scripts/install-postgres"), "{text}");
    assert!(text.contains("apt-get install -y postgresql-15"), "{text}");

    let (ok, text) = pg_binaries(&[], &[("PG_BIN", "/nonexistent/bin")]);
    assert!(!ok, "{text}");
    assert!(text.contains("PG_BIN=/nonexistent/bin"), "{text}");
    assert!(text.contains("scripts/install-postgres"), "{text}");
}

#[test]
fn a_missing_major_names_the_fetch_command() {
    // A major that Debian does not provide here, so only the cache could.
    let major = (14..=18)
        .find(|m| !std::path::Path::new(&format!("/usr/lib/postgresql/{m}/bin/postgres")).exists())
        .expect("some major between 14 and 18 does not come from Debian");
    let empty = tempfile::tempdir().unwrap();
    let (ok, text) = pg_binaries(
        &[&major.to_string()],
        &[
            ("PATH", "/nonexistent"),
            ("BLUESHIFT_PG_CACHE", empty.path().to_str().unwrap()),
        ],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("scripts/fetch-postgres {major}")),
        "{text}"
    );

    // With the real cache (filled by scripts/fetch-postgres) it is found.
    let cache = std::env::var("BLUESHIFT_PG_CACHE").unwrap_or_default();
    let (ok, text) = pg_binaries(
        &[&major.to_string()],
        &[("PATH", "/usr/bin:/bin"), ("BLUESHIFT_PG_CACHE", &cache)],
    );
    assert!(ok, "{text}");
    assert!(text.trim().ends_with(&format!("{major}/bin")), "{text}");
}

#[test]
fn eventually_retries_until_true_and_reports_the_last_error() {
    let mut calls = 0;
    let value = eventually(Duration::from_secs(5), || {
        calls += 1;
        anyhow::ensure!(calls >= 3, "only {calls} calls");
        Ok(calls)
    })
    .unwrap();
    assert_eq!(value, 3);

    let err = eventually(Duration::from_millis(50), || -> anyhow::Result<()> {
        anyhow::bail!("never")
    })
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("never") && text.contains("50ms"), "{text}");
}
