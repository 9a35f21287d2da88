//! TLS on every connection, against real servers with `ssl = on`, `hostssl`-only `pg_hba.conf`
//! (`hostnossl … reject`), SCRAM, and certificates made at test time: `verify-full` for the whole
//! lifecycle (every blueshift backend shows `pg_stat_ssl.ssl`), certificate failures before any
//! credential is sent, client certificates, channel binding, `prefer`/`require`/`allow`, and no
//! plaintext after a reconnect.
//!
//! Both connection paths are checked where it matters: the replication connection (decoder) and
//! the SQL client (applier), which share one rustls connector.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::ReplicationConnection;
use blueshift_engine::client;
use blueshift_tests::{
    blueshift_binary, eventually, succeeded, CertFiles, Cluster, ClusterOptions, PgBinaries,
    TestPki,
};

const PASSWORD: &str = "tls-Secret-9";
const SSL_OF_THIS_BACKEND: &str =
    "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()";

/// A TLS server whose `pg_hba.conf` refuses every connection without TLS over TCP, lets the
/// harness's `postgres` in over TLS, and logs connections. `extra` lines come first.
fn tls_cluster(name: &str, cert: &CertFiles, extra: &[&str]) -> Cluster {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let mut opts = ClusterOptions::new(bins)
        .name(name)
        .tls(cert)
        .only_given_hba()
        .setting("log_connections", "on")
        .setting("password_encryption", "scram-sha-256");
    for line in extra {
        opts = opts.hba_line(line);
    }
    let opts = opts
        .hba_line("hostnossl all all 127.0.0.1/32 reject")
        .hba_line("hostssl all postgres 127.0.0.1/32 trust")
        .hba_line("hostssl all bs 127.0.0.1/32 scram-sha-256")
        .hba_line("local all all trust");
    let cluster = Cluster::start(opts).expect("tls cluster starts");
    cluster.create_database("app").expect("database app");
    cluster
        .psql(
            "postgres",
            &format!("CREATE ROLE bs LOGIN SUPERUSER PASSWORD '{PASSWORD}'"),
        )
        .expect("role bs");
    cluster
}

/// A server without TLS, SCRAM for `bs` on loopback.
fn plain_cluster(name: &str) -> Cluster {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let cluster = Cluster::start(
        ClusterOptions::new(bins)
            .name(name)
            .setting("log_connections", "on")
            .hba_line("host all bs 127.0.0.1/32 scram-sha-256"),
    )
    .expect("plain cluster starts");
    cluster.create_database("app").expect("database app");
    cluster
        .psql(
            "postgres",
            &format!("CREATE ROLE bs LOGIN SUPERUSER PASSWORD '{PASSWORD}'"),
        )
        .expect("role bs");
    cluster
}

/// `postgresql://bs@HOST:PORT/app?…` with the given query.
fn uri(c: &Cluster, host: &str, query: &str) -> String {
    format!("postgresql://bs@{host}:{}/app?{query}", c.port())
}

fn config(conninfo: &str) -> ConnectConfig {
    let mut config =
        ConnectConfig::from_conninfo_with_env(conninfo, |_| None).expect("conninfo parses");
    config.set_password(blueshift_decoder::Password::new(PASSWORD));
    config
}

/// The error and its causes, as the CLI prints them.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Whether a SQL session made with `conninfo` uses TLS, or the error.
async fn sql_ssl(conninfo: &str) -> Result<bool, String> {
    let (client, _task) = client::connect(&config(conninfo), "tls test")
        .await
        .map_err(|e| chain(&e))?;
    let row = client
        .query_one(SSL_OF_THIS_BACKEND, &[])
        .await
        .map_err(|e| chain(&e))?;
    Ok(row.get(0))
}

/// Whether a replication connection made with `conninfo` uses TLS (as the server sees it), or
/// the error.
async fn replication_ssl(conninfo: &str) -> Result<bool, String> {
    let mut connection = ReplicationConnection::connect(&config(conninfo))
        .await
        .map_err(|e| chain(&e))?;
    let rows = connection
        .simple_query(SSL_OF_THIS_BACKEND)
        .await
        .map_err(|e| chain(&e))?;
    assert_eq!(
        connection.is_tls(),
        rows[0].get(0) == Some("t"),
        "client and server disagree about TLS"
    );
    Ok(rows[0].get(0) == Some("t"))
}

/// `search_path` of a SQL session and of a replication session made with `conninfo`.
async fn search_paths(conninfo: &str) -> (String, String) {
    let (client, _task) = client::connect(&config(conninfo), "tls test")
        .await
        .expect("sql session");
    let sql: String = client
        .query_one("SHOW search_path", &[])
        .await
        .expect("show")
        .get(0);
    let mut repl = ReplicationConnection::connect(&config(conninfo))
        .await
        .expect("replication session");
    let rows = repl
        .simple_query("SELECT pg_catalog.current_setting('search_path')")
        .await
        .expect("current_setting");
    (sql, rows[0].get(0).expect("a value").to_owned())
}

fn blueshift(args: &[&str]) -> Output {
    Command::new(blueshift_binary())
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .env("RUST_LOG", "info")
        .env_remove("BLUESHIFT_SOURCE")
        .env_remove("BLUESHIFT_TARGET")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("blueshift runs")
}

/// Connections of role `bs` on `c`: (with TLS, without).
fn ssl_counts(c: &Cluster) -> (u32, u32) {
    let text = c
        .psql(
            "postgres",
            "SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FILTER (WHERE NOT s.ssl) \
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'bs'",
        )
        .expect("pg_stat_ssl");
    let (with, without) = text.split_once(' ').expect("two counts");
    (with.parse().unwrap(), without.parse().unwrap())
}

/// Role `bs` never reached the server without TLS: no plaintext attempt was even rejected.
fn assert_no_plaintext_attempt(c: &Cluster) {
    let log = c.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("user \"bs\"") && l.contains("no encryption")),
        "a plaintext connection of bs reached {}:\n{log}",
        c.name()
    );
}

fn write_migration(dir: &Path) {
    std::fs::write(
        dir.join("V1__items.sql"),
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(20) NOT NULL);\n",
    )
    .unwrap();
}

#[test]
fn verify_full_lifecycle_runs_every_session_over_tls() {
    let pki = TestPki::generate().expect("test certificates");
    let blue = tls_cluster("tls-blue", &pki.server, &[]);
    let green = tls_cluster("tls-green", &pki.server, &[]);
    let ca = pki.ca.display().to_string();
    let query = format!("sslmode=verify-full&sslrootcert={ca}");
    let blue_uri = uri(&blue, "localhost", &query);
    let green_uri = uri(&green, "localhost", &query);

    // migrate, over TLS, into green.
    let migrations = tempfile::tempdir().unwrap();
    write_migration(migrations.path());
    let dir = migrations.path().to_str().unwrap();
    succeeded(
        "migrate up",
        &blueshift(&["migrate", "up", "--database", &green_uri, "--dir", dir]),
    );
    blue.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(20) NOT NULL);
         INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 500) g;
         CREATE PUBLICATION pub FOR TABLE items;",
    )
    .unwrap();

    // sync: backfill copies the 500 rows, then streams.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sync.log");
    let mut sync = Command::new(blueshift_binary())
        .args(["sync", "--source", &blue_uri, "--target", &green_uri])
        .args(["--publication", "pub", "--slot", "bs", "--workers", "2"])
        .env("PGPASSWORD", PASSWORD)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sync starts");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(90), || {
        anyhow::ensure!(log_text().contains("sync started"), "not streaming yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log_text()));
    blue.psql(
        "app",
        "INSERT INTO items SELECT g, 'live ' || g FROM generate_series(501, 600) g",
    )
    .unwrap();
    eventually(Duration::from_secs(90), || {
        anyhow::ensure!(sync.try_wait()?.is_none(), "sync exited:\n{}", log_text());
        let n = green.psql("app", "SELECT count(*) FROM items")?;
        anyhow::ensure!(n == "600", "green has {n} rows");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Every backend of blueshift's role on both sides is TLS (and `hostnossl … reject` refuses
    // any other: every command below that succeeds ran over TLS): the walsender and monitor on blue,
    // the appliers and the durability session on green.
    let (blue_tls, blue_plain) = ssl_counts(&blue);
    let (green_tls, green_plain) = ssl_counts(&green);
    assert_eq!((blue_plain, green_plain), (0, 0), "a session without TLS");
    assert!(blue_tls >= 1, "no TLS session on blue");
    // Appliers connect when they have work; at least the durability session and one applier
    // have applied the rows above. (`hostnossl … reject` refuses any other session anyway.)
    let names = green
        .psql(
            "postgres",
            "SELECT string_agg(DISTINCT application_name, ',') FROM pg_stat_activity \
              WHERE usename = 'bs'",
        )
        .unwrap();
    assert!(green_tls >= 1, "no TLS session on green: {names}");
    let walsender_tls = blue
        .psql(
            "postgres",
            "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
              WHERE r.usename = 'bs'",
        )
        .unwrap();
    assert_eq!(
        walsender_tls,
        "t",
        "the replication stream is not TLS:\n{}",
        log_text()
    );

    // verify, against the running sidecar: its sessions on both sides and the control channel
    // (a clean run, exit 0).
    let verified = succeeded(
        "verify",
        &blueshift(&[
            "verify",
            "--source",
            &blue_uri,
            "--target",
            &green_uri,
            "--publication",
            "pub",
            "--slot",
            "bs",
        ]),
    );
    assert!(verified.contains("items"), "{verified}");
    // cutover's preflight (the verify gate, lag, the reverse path's checks on green), without
    // PgBouncer: nothing changes.
    succeeded(
        "cutover --dry-run",
        &blueshift(&[
            "cutover",
            "--source",
            &blue_uri,
            "--target",
            &green_uri,
            "--publication",
            "pub",
            "--slot",
            "bs",
            "--switch-command",
            "true",
            "--max-lag",
            "60",
            "--dry-run",
        ]),
    );

    // status, while sync runs.
    let status = succeeded(
        "status",
        &blueshift(&[
            "status", "--source", &blue_uri, "--target", &green_uri, "--slot", "bs",
        ]),
    );
    assert!(status.contains("bs"), "{status}");

    sync.kill().unwrap();
    sync.wait().unwrap();

    // cleanup drops the slot over TLS.
    succeeded(
        "cleanup",
        &blueshift(&[
            "cleanup",
            "--source",
            &blue_uri,
            "--target",
            &green_uri,
            "--slot",
            "bs",
            "--publication",
            "pub",
            "--yes",
        ]),
    );
    assert_eq!(
        blue.psql("app", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0"
    );
    // The migration status, over TLS.
    succeeded(
        "migrate status",
        &blueshift(&["migrate", "status", "--database", &green_uri, "--dir", dir]),
    );
    assert_no_plaintext_attempt(&blue);
    assert_no_plaintext_attempt(&green);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_fail_before_credentials_are_sent() {
    let pki = TestPki::generate().expect("test certificates");
    // Cleartext password authentication: had the client sent a credential, the server would
    // have logged the authorization (log_connections).
    let password_line = "hostssl all bs 127.0.0.1/32 password";
    let wrong_host = tls_cluster("tls-wrong-host", &pki.wrong_host, &[password_line]);
    let unknown_ca = tls_cluster("tls-unknown-ca", &pki.unknown_ca, &[password_line]);
    let ca = pki.ca.display().to_string();
    let full = format!("sslmode=verify-full&sslrootcert={ca}");

    for (cluster, reason) in [
        (&wrong_host, "not issued for the host name \"localhost\""),
        (
            &unknown_ca,
            "not signed by a certificate authority trusted by",
        ),
    ] {
        let conninfo = uri(cluster, "localhost", &full);
        let target = format!("localhost:{}", cluster.port());
        for (path, result) in [
            ("sql", sql_ssl(&conninfo).await),
            ("replication", replication_ssl(&conninfo).await),
        ] {
            let e = result.expect_err("a certificate that does not verify is refused");
            assert!(
                e.contains(&target) && e.contains(reason),
                "{path} on {}: {e}",
                cluster.name()
            );
        }
        // The CLI says the same (green: another database on the same server).
        let green = conninfo.replace("/app?", "/postgres?");
        let out = blueshift(&[
            "status", "--source", &conninfo, "--target", &green, "--slot", "bs",
        ]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(reason) && stderr.contains(&target),
            "{stderr}"
        );
        assert!(!stderr.contains(PASSWORD), "{stderr}");
        let log = cluster.log();
        assert!(
            !log.contains("connection authorized: user=bs")
                && !log.contains("connection authenticated"),
            "a credential reached {}:\n{log}",
            cluster.name()
        );
    }

    // verify-ca checks the chain only: the wrong host name is fine, the unknown CA is not.
    let ca_only = format!("sslmode=verify-ca&sslrootcert={ca}");
    assert_eq!(
        sql_ssl(&uri(&wrong_host, "localhost", &ca_only)).await,
        Ok(true)
    );
    assert_eq!(
        replication_ssl(&uri(&wrong_host, "localhost", &ca_only)).await,
        Ok(true)
    );
    assert!(sql_ssl(&uri(&unknown_ca, "localhost", &ca_only))
        .await
        .is_err());
    // require without a root certificate: encrypted, unchecked (libpq's meaning).
    assert_eq!(
        sql_ssl(&uri(&unknown_ca, "localhost", "sslmode=require")).await,
        Ok(true)
    );
    // require with sslrootcert given: checked as verify-ca.
    let require_checked = format!("sslmode=require&sslrootcert={ca}");
    assert!(
        replication_ssl(&uri(&unknown_ca, "localhost", &require_checked))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_ip_addresses_and_pins_search_path() {
    let pki = TestPki::generate().expect("test certificates");
    let server = tls_cluster("tls-ip", &pki.server, &[]);
    let ca = pki.ca.display().to_string();
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    // The server certificate names 127.0.0.1 as an IP address SAN.
    let by_ip = uri(&server, "127.0.0.1", &full);
    assert_eq!(sql_ssl(&by_ip).await, Ok(true));
    assert_eq!(replication_ssl(&by_ip).await, Ok(true));
    // Every session pins search_path, whatever the role's setting.
    server
        .psql("postgres", "ALTER ROLE bs SET search_path = public")
        .unwrap();
    let (sql, replication) = search_paths(&by_ip).await;
    assert_eq!(sql, "pg_catalog, pg_temp");
    assert_eq!(replication, "pg_catalog, pg_temp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_authentication() {
    let pki = TestPki::generate().expect("test certificates");
    let server = tls_cluster(
        "tls-cert-auth",
        &pki.server,
        &["hostssl all client_user 127.0.0.1/32 cert"],
    );
    server
        .psql("postgres", "CREATE ROLE client_user LOGIN SUPERUSER")
        .unwrap();
    let conninfo = format!(
        "postgresql://client_user@localhost:{}/app?sslmode=verify-full&sslrootcert={}\
         &sslcert={}&sslkey={}",
        server.port(),
        pki.ca.display(),
        pki.client.cert.display(),
        pki.client.key.display()
    );
    assert_eq!(sql_ssl(&conninfo).await, Ok(true));
    assert_eq!(replication_ssl(&conninfo).await, Ok(true));
    // Without the certificate the server refuses the role.
    let without = format!(
        "postgresql://client_user@localhost:{}/app?sslmode=verify-full&sslrootcert={}",
        server.port(),
        pki.ca.display()
    );
    let e = sql_ssl(&without)
        .await
        .expect_err("no certificate, no entry");
    assert!(e.contains("certificate"), "{e}");
    assert!(replication_ssl(&without).await.is_err());
    // A key others can read is refused before connecting, as libpq does.
    let loose = tempfile::tempdir().unwrap();
    let key = loose.path().join("client.key");
    std::fs::copy(&pki.client.key, &key).unwrap();
    std::fs::set_permissions(
        &key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    let loose_conninfo = format!(
        "postgresql://client_user@localhost:{}/app?sslmode=verify-full&sslrootcert={}\
         &sslcert={}&sslkey={}",
        server.port(),
        pki.ca.display(),
        pki.client.cert.display(),
        key.display()
    );
    let e = replication_ssl(&loose_conninfo).await.unwrap_err();
    assert!(e.contains("group or world access"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_needs_scram_over_tls() {
    let pki = TestPki::generate().expect("test certificates");
    let tls = tls_cluster("tls-binding", &pki.server, &[]);
    let plain = plain_cluster("plain-binding");
    let ca = pki.ca.display().to_string();
    // SCRAM-SHA-256-PLUS over TLS: both paths authenticate (the client refuses anything less).
    let bound = uri(
        &tls,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"),
    );
    assert_eq!(sql_ssl(&bound).await, Ok(true));
    assert_eq!(replication_ssl(&bound).await, Ok(true));
    // Without TLS it cannot be met: refused before the password is sent.
    let unbound = uri(
        &plain,
        "127.0.0.1",
        "sslmode=prefer&channel_binding=require",
    );
    let e = replication_ssl(&unbound).await.unwrap_err();
    assert!(
        e.contains("channel binding required") && e.contains("does not use TLS"),
        "{e}"
    );
    let e = sql_ssl(&unbound).await.unwrap_err();
    assert!(e.contains("channel binding"), "{e}");
    assert!(
        !plain.log().contains("connection authorized: user=bs"),
        "the password went out"
    );
    // channel_binding=disable still authenticates over TLS.
    let disabled = uri(
        &tls,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=disable"),
    );
    assert_eq!(replication_ssl(&disabled).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_uses_tls_require_refuses_plaintext_allow_falls_forward() {
    let pki = TestPki::generate().expect("test certificates");
    let tls = tls_cluster("tls-modes", &pki.server, &[]);
    let plain = plain_cluster("plain-modes");
    // prefer (the default) takes TLS when offered.
    for query in ["sslmode=prefer", ""] {
        let conninfo = uri(&tls, "localhost", query);
        assert_eq!(sql_ssl(&conninfo).await, Ok(true), "{query}");
        assert_eq!(replication_ssl(&conninfo).await, Ok(true), "{query}");
    }
    // ... and goes without when the server has none.
    assert_eq!(sql_ssl(&uri(&plain, "127.0.0.1", "")).await, Ok(false));
    assert_eq!(
        replication_ssl(&uri(&plain, "127.0.0.1", "")).await,
        Ok(false)
    );
    // require never connects to a server without TLS.
    let required = uri(&plain, "127.0.0.1", "sslmode=require");
    let e = replication_ssl(&required).await.unwrap_err();
    assert!(e.contains("does not support TLS"), "{e}");
    let e = sql_ssl(&required).await.unwrap_err();
    assert!(e.contains("TLS"), "{e}");
    // allow: plaintext first; the TLS-only server refuses it, so TLS.
    let allow = uri(&tls, "localhost", "sslmode=allow");
    assert_eq!(sql_ssl(&allow).await, Ok(true));
    assert_eq!(replication_ssl(&allow).await, Ok(true));
    assert_eq!(
        sql_ssl(&uri(&plain, "127.0.0.1", "sslmode=allow")).await,
        Ok(false)
    );
    // disable never tries TLS: the TLS-only server refuses it.
    assert!(sql_ssl(&uri(&tls, "localhost", "sslmode=disable"))
        .await
        .is_err());
}

#[test]
fn sync_reconnects_over_tls_after_blue_restarts() {
    let pki = TestPki::generate().expect("test certificates");
    let mut blue = tls_cluster("tls-restart-blue", &pki.server, &[]);
    let green = tls_cluster("tls-restart-green", &pki.server, &[]);
    for c in [&blue, &green] {
        c.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)")
            .unwrap();
    }
    blue.psql("app", "CREATE PUBLICATION pub FOR TABLE t")
        .unwrap();
    let blue_uri = uri(&blue, "localhost", "sslmode=require");
    let green_uri = uri(&green, "localhost", "sslmode=require");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sync.log");
    let mut sync = Command::new(blueshift_binary())
        .args(["sync", "--source", &blue_uri, "--target", &green_uri])
        .args([
            "--publication",
            "pub",
            "--slot",
            "bs",
            "--status-interval",
            "1",
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sync starts");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let rows_on_green = |want: &str| {
        eventually(Duration::from_secs(90), || {
            let n = green.psql("app", "SELECT count(*) FROM t")?;
            anyhow::ensure!(n == want, "green has {n} rows");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_text()));
    };
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(log_text().contains("sync started"), "not streaming yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log_text()));
    blue.psql(
        "app",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 50) g",
    )
    .unwrap();
    rows_on_green("50");

    blue.restart().expect("blue restarts");
    blue.psql(
        "app",
        "INSERT INTO t SELECT g, 'b' FROM generate_series(51, 100) g",
    )
    .unwrap();
    rows_on_green("100");
    assert!(
        sync.try_wait().unwrap().is_none(),
        "sync exited:\n{}",
        log_text()
    );
    // The new walsender is TLS too, and no plaintext attempt was made.
    eventually(Duration::from_secs(30), || {
        let tls = blue.psql(
            "postgres",
            "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_replication r \
               JOIN pg_stat_ssl s USING (pid) WHERE r.usename = 'bs'",
        )?;
        anyhow::ensure!(tls == "true", "walsenders' ssl: {tls:?}");
        Ok(())
    })
    .unwrap();
    assert_no_plaintext_attempt(&blue);
    assert_no_plaintext_attempt(&green);
    sync.kill().unwrap();
    sync.wait().unwrap();
}
