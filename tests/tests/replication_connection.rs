//! The replication connection against real servers: authentication methods, Unix sockets and
//! the password file, `IDENTIFY_SYSTEM`, slot commands with each snapshot action,
//! `START_REPLICATION` and the CopyBoth stream (XLogData, keepalives answered without polling,
//! flush feedback moving `confirmed_flush_lsn`), server errors, and options refused before
//! anything is sent. One cluster per test.

use std::collections::HashMap;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use blueshift_decoder::config::{ConnectConfig, Password};
use blueshift_decoder::connection::{
    AuthError, CreateSlotOptions, ReplicationConnection, ReplicationError, SnapshotAction,
};
use blueshift_decoder::stream::{
    OriginFilter, ReplicationFrame, ReplicationStream, StartOptions, StatusOptions, Streaming,
};
use blueshift_decoder::Lsn;
use blueshift_tests::{eventually, Cluster, ClusterOptions, PgBinaries};

/// A password with characters that need care in SQL, URIs and SASLprep.
const PASSWORD: &str = "s3cr:t p@ss'wörd";
/// How long a test waits for something that should happen quickly.
const WAIT: Duration = Duration::from_secs(30);

fn default_bins() -> PgBinaries {
    PgBinaries::from_env().expect("the default PostgreSQL binaries")
}

fn start(opts: ClusterOptions) -> Cluster {
    Cluster::start(opts).expect("cluster starts")
}

/// A config from key=value text, with an empty environment.
fn config(conninfo: &str) -> ConnectConfig {
    ConnectConfig::from_conninfo_with_env(conninfo, |_| None).expect("valid conninfo")
}

/// `postgres` over TCP, trusted by the harness.
fn superuser_config(cluster: &Cluster, db: &str) -> ConnectConfig {
    config(&format!(
        "host={} port={} user=postgres dbname={db} application_name=blueshift_test connect_timeout=30",
        cluster.host(),
        cluster.port()
    ))
}

async fn connect(cluster: &Cluster, db: &str) -> ReplicationConnection {
    ReplicationConnection::connect(&superuser_config(cluster, db))
        .await
        .expect("replication connection")
}

fn psql(cluster: &Cluster, db: &str, sql: &str) -> String {
    cluster.psql(db, sql).expect("psql")
}

fn lsn(text: &str) -> Lsn {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// A database with table `t (id int primary key, v text)` and publication `pub_t` for it.
fn setup_db(cluster: &Cluster, db: &str) {
    cluster.create_database(db).unwrap();
    psql(
        cluster,
        db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub_t FOR TABLE t;",
    );
}

/// The next frame, failing the test after [`WAIT`].
async fn next_frame(stream: &mut ReplicationStream) -> ReplicationFrame {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a frame within the wait")
        .expect("no stream error")
        .expect("the stream has not ended")
}

/// Reads frames until an XLogData whose pgoutput message type is `tag`; returns it.
async fn next_message(stream: &mut ReplicationStream, tag: u8) -> ReplicationFrame {
    loop {
        let frame = next_frame(stream).await;
        if let ReplicationFrame::XLogData { data, .. } = &frame {
            if data.first() == Some(&tag) {
                return frame;
            }
        }
    }
}

fn wal_start(frame: &ReplicationFrame) -> Lsn {
    match frame {
        ReplicationFrame::XLogData { wal_start, .. } => *wal_start,
        other => panic!("not XLogData: {other:?}"),
    }
}

fn slot_column(cluster: &Cluster, db: &str, slot: &str, column: &str) -> String {
    psql(
        cluster,
        db,
        &format!("SELECT {column} FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
}

fn walsender_alive(cluster: &Cluster, pid: i32) -> bool {
    psql(
        cluster,
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_replication WHERE pid = {pid}"),
    ) == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_identify_system_and_parameters() {
    let cluster = start(ClusterOptions::new(default_bins()));
    cluster.create_database("ident_db").unwrap();
    let mut conn = connect(&cluster, "ident_db").await;

    assert_eq!(conn.server_major(), cluster.binaries().major_version());
    assert!(conn
        .server_version()
        .starts_with(&conn.server_major().to_string()));
    assert_eq!(conn.parameter("server_encoding"), Some("UTF8"));
    assert_eq!(conn.parameter("client_encoding"), Some("UTF8"));
    assert_eq!(conn.parameter("application_name"), Some("blueshift_test"));
    let pid = conn.backend_key().expect("BackendKeyData").process_id();
    assert_eq!(
        psql(
            &cluster,
            "postgres",
            &format!(
                "SELECT backend_type || ' ' || datname FROM pg_stat_activity WHERE pid = {pid}"
            ),
        ),
        "walsender ident_db"
    );

    let system = conn.identify_system().await.unwrap();
    assert_eq!(
        system.systemid,
        psql(
            &cluster,
            "postgres",
            "SELECT system_identifier FROM pg_control_system()"
        )
    );
    assert_eq!(system.timeline, 1);
    assert_eq!(system.dbname.as_deref(), Some("ident_db"));
    let current = lsn(&psql(
        &cluster,
        "postgres",
        "SELECT pg_current_wal_flush_lsn()",
    ));
    assert!(system.xlogpos <= current && !system.xlogpos.is_invalid());

    let rows = conn.simple_query("SHOW wal_sender_timeout").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get_by_name("wal_sender_timeout"), Some("1min"));
    conn.close().await.unwrap();
}

/// `password`, `md5` and `scram-sha-256`, each with a role whose password is stored the matching
/// way; a wrong password is 28P01 with no password in the error; a missing one names the fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication_methods() {
    let cluster = start(
        ClusterOptions::new(default_bins())
            .hba_line("host all pw_user 127.0.0.1/32 password")
            .hba_line("host all md5_user 127.0.0.1/32 md5")
            .hba_line("host all scram_user 127.0.0.1/32 scram-sha-256"),
    );
    let literal = PASSWORD.replace('\'', "''");
    psql(
        &cluster,
        "postgres",
        &format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE pw_user LOGIN REPLICATION PASSWORD '{literal}';
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD '{literal}';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN REPLICATION PASSWORD '{literal}';"
        ),
    );
    assert!(psql(
        &cluster,
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'md5_user'"
    )
    .starts_with("md5"));
    assert!(psql(
        &cluster,
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_user'"
    )
    .starts_with("SCRAM-SHA-256$"));

    let base = |user: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres",
            cluster.port()
        )
    };
    for user in ["pw_user", "md5_user", "scram_user"] {
        // The password through the URI form, percent-encoded.
        let uri = format!(
            "postgresql://{user}:{}@127.0.0.1:{}/postgres",
            percent_encode(PASSWORD),
            cluster.port()
        );
        let mut conn = ReplicationConnection::connect(&config(&uri))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        assert_eq!(
            conn.identify_system().await.unwrap().dbname.as_deref(),
            Some("postgres")
        );
        conn.close().await.unwrap();

        // Through the environment (PGPASSWORD).
        let env = HashMap::from([("PGPASSWORD", PASSWORD)]);
        let from_env = ConnectConfig::from_conninfo_with_env(&base(user), |k| {
            env.get(k).map(|v| v.to_string())
        })
        .unwrap();
        ReplicationConnection::connect(&from_env)
            .await
            .unwrap()
            .close()
            .await
            .unwrap();

        // A wrong password: the server's 28P01, and neither password in any rendering.
        let wrong_password = "Wr0ng-Passw0rd";
        let mut wrong = config(&base(user));
        wrong.set_password(Password::new(wrong_password));
        let err = ReplicationConnection::connect(&wrong).await.unwrap_err();
        assert_eq!(err.sqlstate(), Some("28P01"), "{user}: {err:?}");
        let server = err.server_error().unwrap();
        assert_eq!(server.severity, "FATAL");
        assert!(server.message.contains(user), "{}", server.message);
        for text in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
            assert!(!text.contains(wrong_password), "{user}: {text}");
            assert!(!text.contains(PASSWORD), "{user}: {text}");
        }
        assert!(!format!("{wrong:?}").contains(wrong_password));

        // No password at all.
        let err = ReplicationConnection::connect(&config(&base(user)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                ReplicationError::Auth(AuthError::PasswordRequired { .. })
            ),
            "{user}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("~/.pgpass") && text.contains("PGPASSWORD"),
            "{text}"
        );
    }
}

/// A Unix-socket connection, and the password file for TCP (`127.0.0.1`) and for the socket
/// (`localhost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_and_pgpass() {
    let cluster = start(
        ClusterOptions::new(default_bins())
            .hba_line("local all scram_user scram-sha-256")
            .hba_line("host all scram_user 127.0.0.1/32 scram-sha-256"),
    );
    psql(
        &cluster,
        "postgres",
        &format!(
            "CREATE ROLE scram_user LOGIN REPLICATION PASSWORD '{}'",
            PASSWORD.replace('\'', "''")
        ),
    );
    let socket_dir = cluster.socket_dir().to_str().unwrap().to_owned();

    // Trusted superuser over the socket, socket directory given as a URI query parameter.
    let uri = format!(
        "postgresql:///postgres?host={socket_dir}&port={}&user=postgres",
        cluster.port()
    );
    let mut conn = ReplicationConnection::connect(&config(&uri)).await.unwrap();
    assert_eq!(
        conn.identify_system().await.unwrap().dbname.as_deref(),
        Some("postgres")
    );
    conn.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    let escaped = PASSWORD.replace('\\', "\\\\").replace(':', "\\:");
    std::fs::write(
        &passfile,
        format!(
            "# blueshift test\n\
             127.0.0.1:{port}:postgres:scram_user:tcp-{escaped}\n\
             localhost:{port}:*:scram_user:{escaped}\n\
             127.0.0.1:{port}:*:scram_user:{escaped}\n",
            port = cluster.port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, Permissions::from_mode(0o600)).unwrap();
    let file = passfile.to_str().unwrap();

    // Over the socket the lookup uses `localhost`.
    let unix = config(&format!(
        "host={socket_dir} port={} user=scram_user dbname=postgres passfile={file}",
        cluster.port()
    ));
    ReplicationConnection::connect(&unix)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    // Over TCP the first matching line wins: dbname postgres matches the wrong `tcp-` entry...
    let tcp = |db: &str| {
        config(&format!(
            "host=127.0.0.1 port={} user=scram_user dbname={db} passfile={file}",
            cluster.port()
        ))
    };
    let err = ReplicationConnection::connect(&tcp("postgres"))
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("28P01"));
    // ... and another database falls through to the wildcard line.
    cluster.create_database("other_db").unwrap();
    ReplicationConnection::connect(&tcp("other_db"))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    // PGPASSFILE from the environment.
    let env = HashMap::from([("PGPASSFILE", file.to_owned())]);
    let from_env = ConnectConfig::from_conninfo_with_env(
        &format!(
            "host={socket_dir} port={} user=scram_user dbname=postgres",
            cluster.port()
        ),
        |k| env.get(k).cloned(),
    )
    .unwrap();
    ReplicationConnection::connect(&from_env)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    // A group-readable file is ignored, so there is no password.
    std::fs::set_permissions(&passfile, Permissions::from_mode(0o640)).unwrap();
    let err = ReplicationConnection::connect(&unix).await.unwrap_err();
    assert!(
        matches!(
            err,
            ReplicationError::Auth(AuthError::PasswordRequired { .. })
        ),
        "{err:?}"
    );
}

/// Permanent and temporary slots with each snapshot action, two-phase, and the errors of
/// duplicate, missing and invalid slots (after which the connection still works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_drop_slots() {
    let cluster = start(ClusterOptions::new(default_bins()));
    setup_db(&cluster, "slot_db");
    psql(&cluster, "slot_db", "INSERT INTO t VALUES (1, 'before')");
    let mut conn = connect(&cluster, "slot_db").await;
    let major = conn.server_major();

    // Permanent, no snapshot.
    let created = conn
        .create_slot("perm_slot", CreateSlotOptions::default())
        .await
        .unwrap();
    assert_eq!(created.slot_name, "perm_slot");
    assert_eq!(created.output_plugin, "pgoutput");
    assert_eq!(created.snapshot_name, None);
    assert!(!created.consistent_point.is_invalid());
    assert_eq!(
        slot_column(
            &cluster,
            "slot_db",
            "perm_slot",
            "temporary::text || ' ' || plugin || ' ' || database"
        ),
        "false pgoutput slot_db"
    );
    assert_eq!(
        lsn(&slot_column(
            &cluster,
            "slot_db",
            "perm_slot",
            "confirmed_flush_lsn"
        )),
        created.consistent_point
    );

    // Duplicate: the server's error, fields filled, and the connection still usable.
    let err = conn
        .create_slot("perm_slot", CreateSlotOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42710"), "{err:?}");
    let server = err.server_error().unwrap();
    assert_eq!(server.severity, "ERROR");
    assert!(server.message.contains("perm_slot"), "{}", server.message);
    assert!(err.to_string().starts_with("ERROR: ") && err.to_string().contains("(SQLSTATE 42710)"));
    conn.identify_system().await.unwrap();

    conn.drop_slot("perm_slot", true).await.unwrap();
    assert_eq!(
        slot_column(&cluster, "slot_db", "perm_slot", "count(*)"),
        "0"
    );
    let err = conn.drop_slot("perm_slot", false).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("42704"), "{err:?}");

    // Invalid names never reach the server.
    for bad in ["Upper", "with-dash", "x\"; DROP", ""] {
        let err = conn
            .create_slot(bad, CreateSlotOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReplicationError::InvalidSlotName { .. }),
            "{err:?}"
        );
    }

    // Temporary with an exported snapshot that another session imports.
    let exported = conn
        .create_slot(
            "temp_slot",
            CreateSlotOptions {
                temporary: true,
                snapshot: SnapshotAction::Export,
                two_phase: false,
            },
        )
        .await
        .unwrap();
    let snapshot = exported
        .snapshot_name
        .clone()
        .expect("an exported snapshot");
    assert_eq!(
        slot_column(&cluster, "slot_db", "temp_slot", "temporary"),
        "t"
    );
    psql(
        &cluster,
        "slot_db",
        "INSERT INTO t VALUES (2, 'after the snapshot')",
    );
    let client = cluster.connect("slot_db").await.unwrap();
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "the exported snapshot predates the second insert");
    client.batch_execute("COMMIT").await.unwrap();

    // The snapshot used by this connection's own transaction.
    conn.simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    assert!(conn.in_transaction());
    let used = conn
        .create_slot(
            "use_slot",
            CreateSlotOptions {
                temporary: true,
                snapshot: SnapshotAction::Use,
                two_phase: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(used.snapshot_name, None);
    psql(
        &cluster,
        "slot_db",
        "INSERT INTO t VALUES (3, 'after the used snapshot')",
    );
    // The replication session pins search_path to pg_catalog, pg_temp: user tables are named
    // with their schema.
    let rows = conn
        .simple_query("SELECT count(*) AS n FROM public.t")
        .await
        .unwrap();
    assert_eq!(rows[0].get_by_name("n"), Some("2"));
    conn.simple_query("COMMIT").await.unwrap();
    assert!(!conn.in_transaction());

    // Two-phase decoding enabled on the slot (the column exists from 14).
    conn.create_slot(
        "two_phase_slot",
        CreateSlotOptions {
            temporary: false,
            snapshot: SnapshotAction::NoExport,
            two_phase: true,
        },
    )
    .await
    .unwrap();
    if major >= 14 {
        assert_eq!(
            slot_column(&cluster, "slot_db", "two_phase_slot", "two_phase"),
            "t"
        );
    }
    conn.drop_slot("two_phase_slot", false).await.unwrap();

    // Temporary slots go with the session.
    conn.close().await.unwrap();
    eventually(WAIT, || {
        let n = cluster.psql("slot_db", "SELECT count(*) FROM pg_replication_slots")?;
        anyhow::ensure!(n == "0", "{n} slots left");
        Ok(())
    })
    .unwrap();
}

/// START_REPLICATION streams the changes of an insert as XLogData; `finish` gives the
/// connection back; flush feedback moves `confirmed_flush_lsn` to exactly what was confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_changes_and_confirms_flush() {
    let cluster = start(ClusterOptions::new(default_bins()));
    setup_db(&cluster, "stream_db");
    let mut conn = connect(&cluster, "stream_db").await;
    let created = conn
        .create_slot("stream_slot", CreateSlotOptions::default())
        .await
        .unwrap();
    let status = StatusOptions {
        interval: Duration::from_millis(200),
    };
    let mut stream = conn
        .start_replication(
            "stream_slot",
            created.consistent_point,
            StartOptions::new(["pub_t"]),
            status,
        )
        .await
        .unwrap();
    assert_eq!(
        stream.proto_version(),
        blueshift_decoder::stream::max_proto_version(stream.server_major())
    );
    let feedback = stream.feedback();
    let confirmed = || {
        lsn(&slot_column(
            &cluster,
            "stream_db",
            "stream_slot",
            "confirmed_flush_lsn",
        ))
    };
    let written = || {
        let text = psql(
            &cluster,
            "postgres",
            "SELECT write_lsn FROM pg_stat_replication WHERE application_name = 'blueshift_test'",
        );
        if text.is_empty() {
            Lsn::INVALID
        } else {
            lsn(&text)
        }
    };

    psql(&cluster, "stream_db", "INSERT INTO t VALUES (1, 'one')");
    let begin = next_message(&mut stream, b'B').await;
    assert!(wal_start(&begin) >= created.consistent_point);
    let insert = next_message(&mut stream, b'I').await;
    let ReplicationFrame::XLogData { data, .. } = &insert else {
        unreachable!()
    };
    assert!(
        data.windows(3).any(|w| w == b"one"),
        "the insert carries the new row"
    );
    let commit = next_message(&mut stream, b'C').await;
    let first_commit_end = wal_start(&commit);
    // The Commit message's end_lsn (after flags and commit_lsn) is the frame's wal_start.
    let ReplicationFrame::XLogData { data, .. } = &commit else {
        unreachable!()
    };
    assert_eq!(
        data.get(10..18)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap())),
        Some(first_commit_end.0)
    );

    // Nothing confirmed yet: status updates report written, but flush 0/0 leaves the slot alone.
    eventually(WAIT, || {
        let w = written();
        anyhow::ensure!(
            w >= first_commit_end,
            "write_lsn {w} behind {first_commit_end}"
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(feedback.written(), stream.feedback().written());
    assert!(feedback.written() >= first_commit_end);
    assert_eq!(feedback.flushed(), Lsn::INVALID);
    assert_eq!(confirmed(), created.consistent_point);

    // Confirm the first transaction: the slot follows exactly.
    feedback.set_flushed(first_commit_end);
    feedback.request_status_update();
    eventually(WAIT, || {
        let c = confirmed();
        anyhow::ensure!(
            c == first_commit_end,
            "confirmed_flush_lsn {c}, want {first_commit_end}"
        );
        Ok(())
    })
    .unwrap();
    feedback.set_flushed(created.consistent_point);
    assert_eq!(
        feedback.flushed(),
        first_commit_end,
        "flushed never moves back"
    );

    // A second transaction, received but not confirmed: the slot stays at the first.
    psql(&cluster, "stream_db", "INSERT INTO t VALUES (2, 'two')");
    let second_commit_end = wal_start(&next_message(&mut stream, b'C').await);
    assert!(second_commit_end > first_commit_end);
    eventually(WAIT, || {
        let w = written();
        anyhow::ensure!(
            w >= second_commit_end,
            "write_lsn {w} behind {second_commit_end}"
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(confirmed(), first_commit_end);

    // finish: final status (with the second confirmed), CopyDone, and a usable connection.
    feedback.set_flushed(second_commit_end);
    let mut conn = stream.finish().await.unwrap();
    assert_eq!(confirmed(), second_commit_end);
    assert_eq!(
        slot_column(&cluster, "stream_db", "stream_slot", "active"),
        "f"
    );
    conn.identify_system().await.unwrap();

    // PostgreSQL cannot START_REPLICATION twice on one logical connection: refused up front.
    let err = conn
        .start_replication(
            "stream_slot",
            second_commit_end,
            StartOptions::new(["pub_t"]),
            status,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReplicationError::Unsupported { .. }),
        "{err:?}"
    );

    // Streaming again on a new connection from the confirmed position sends only later changes.
    psql(&cluster, "stream_db", "INSERT INTO t VALUES (3, 'three')");
    let conn = connect(&cluster, "stream_db").await;
    let mut stream = conn
        .start_replication(
            "stream_slot",
            second_commit_end,
            StartOptions::new(["pub_t"]),
            status,
        )
        .await
        .unwrap();
    let insert = next_message(&mut stream, b'I').await;
    let ReplicationFrame::XLogData { data, .. } = &insert else {
        unreachable!()
    };
    assert!(data.windows(5).any(|w| w == b"three"));
    let mut conn = stream.finish().await.unwrap();
    conn.drop_slot("stream_slot", true).await.unwrap();
    conn.close().await.unwrap();
}

/// With `wal_sender_timeout` at 2 s: while the caller polls, keepalives asking for a reply are
/// answered at once (the interval is far longer than the timeout); while the caller does not poll
/// at all, the status task alone keeps the connection alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_answered_and_status_sent_without_polling() {
    let cluster = start(ClusterOptions::new(default_bins()));
    setup_db(&cluster, "ka_db");
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=ka_db options='-c wal_sender_timeout=2s'",
        cluster.port()
    );

    // 1. Polling, interval 1 min: only immediate replies can keep the connection alive.
    let mut conn = ReplicationConnection::connect(&config(&conninfo))
        .await
        .unwrap();
    let rows = conn.simple_query("SHOW wal_sender_timeout").await.unwrap();
    assert_eq!(rows[0].get(0), Some("2s"));
    let pid = conn.backend_key().unwrap().process_id();
    let created = conn
        .create_slot(
            "ka_slot",
            CreateSlotOptions {
                temporary: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let status = StatusOptions {
        interval: Duration::from_secs(60),
    };
    let mut stream = conn
        .start_replication(
            "ka_slot",
            created.consistent_point,
            StartOptions::new(["pub_t"]),
            status,
        )
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut reply_requests = 0;
    while started.elapsed() < Duration::from_secs(7) {
        if let ReplicationFrame::Keepalive {
            reply_requested: true,
            ..
        } = next_frame(&mut stream).await
        {
            reply_requests += 1;
        }
    }
    assert!(
        reply_requests >= 2,
        "only {reply_requests} keepalives asked for a reply"
    );
    assert!(walsender_alive(&cluster, pid), "the walsender timed us out");
    stream.close().await.unwrap();

    // 2. Not polling at all for three timeouts, interval 300 ms: the status task keeps it alive.
    let mut conn = ReplicationConnection::connect(&config(&conninfo))
        .await
        .unwrap();
    let pid = conn.backend_key().unwrap().process_id();
    let created = conn
        .create_slot(
            "ka_slot2",
            CreateSlotOptions {
                temporary: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let status = StatusOptions {
        interval: Duration::from_millis(300),
    };
    let mut stream = conn
        .start_replication(
            "ka_slot2",
            created.consistent_point,
            StartOptions::new(["pub_t"]),
            status,
        )
        .await
        .unwrap();
    let before = psql(
        &cluster,
        "postgres",
        &format!("SELECT reply_time FROM pg_stat_replication WHERE pid = {pid}"),
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        walsender_alive(&cluster, pid),
        "the walsender timed out a caller that did not poll"
    );
    let after = psql(
        &cluster,
        "postgres",
        &format!("SELECT reply_time FROM pg_stat_replication WHERE pid = {pid}"),
    );
    assert_ne!(before, after, "status updates kept arriving");
    // The backlog of keepalives is still there to read, and a change after it.
    psql(&cluster, "ka_db", "INSERT INTO t VALUES (1, 'late')");
    next_message(&mut stream, b'I').await;
    stream.close().await.unwrap();
}

/// A server error inside the stream (a publication that does not exist fails at the first
/// change) surfaces as `ReplicationError::Server`; terminating the walsender ends the stream
/// with an error or an end, and later calls return `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_mid_stream() {
    let cluster = start(ClusterOptions::new(default_bins()));
    setup_db(&cluster, "err_db");

    // START_REPLICATION of a slot that does not exist: the error, fields filled.
    let conn = connect(&cluster, "err_db").await;
    let err = conn
        .start_replication(
            "no_such_slot",
            Lsn::INVALID,
            StartOptions::new(["pub_t"]),
            StatusOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("42704"), "{err:?}");
    assert!(err.server_error().unwrap().message.contains("no_such_slot"));

    let mut conn = connect(&cluster, "err_db").await;
    // PostgreSQL 18 only warns about a missing publication ("skipped loading publication") and
    // streams nothing for it, so the error case exists up to 17.
    if conn.server_major() <= 17 {
        let created = conn
            .create_slot(
                "err_slot",
                CreateSlotOptions {
                    temporary: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut stream = conn
            .start_replication(
                "err_slot",
                created.consistent_point,
                StartOptions::new(["missing_pub"]),
                StatusOptions::default(),
            )
            .await
            .unwrap();
        psql(&cluster, "err_db", "INSERT INTO t VALUES (1, 'x')");
        let err = loop {
            match tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("an error within the wait")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without the error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.sqlstate(), Some("42704"), "{err:?}");
        let server = err.server_error().unwrap();
        assert_eq!(server.severity, "ERROR");
        assert!(server.message.contains("missing_pub"), "{}", server.message);
        assert!(stream.next().await.unwrap().is_none());
        // After an ERROR the walsender is back in command mode: finish drains to ReadyForQuery.
        let mut conn = stream.finish().await.unwrap();
        conn.identify_system().await.unwrap();
        conn.close().await.unwrap();
    } else {
        conn.close().await.unwrap();
    }

    let mut conn = connect(&cluster, "err_db").await;

    // The walsender terminated by an administrator: FATAL 57P01, or the socket closing.
    let pid = conn.backend_key().unwrap().process_id();
    let created = conn
        .create_slot(
            "term_slot",
            CreateSlotOptions {
                temporary: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut stream = conn
        .start_replication(
            "term_slot",
            created.consistent_point,
            StartOptions::new(["pub_t"]),
            StatusOptions::default(),
        )
        .await
        .unwrap();
    psql(
        &cluster,
        "postgres",
        &format!("SELECT pg_terminate_backend({pid})"),
    );
    let end = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the stream ends within the wait")
        {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    match end {
        Ok(None) => {}
        Err(e) if e.sqlstate() == Some("57P01") || e.is_io() => {}
        other => panic!("unexpected end of a terminated stream: {other:?}"),
    }
    assert!(stream.next().await.unwrap().is_none());
    stream.close().await.unwrap();
}

/// Options the server cannot honour are refused before START_REPLICATION is sent: the error is
/// ours (not the server's), and the slot was never activated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_options_refused_before_sending() {
    let cluster = start(ClusterOptions::new(PgBinaries::major(15).unwrap()));
    setup_db(&cluster, "opt_db");
    let mut conn = connect(&cluster, "opt_db").await;
    conn.create_slot("opt_slot", CreateSlotOptions::default())
        .await
        .unwrap();
    conn.close().await.unwrap();

    let base = || StartOptions::new(["pub_t"]);
    let refused = [
        StartOptions {
            proto_version: Some(4),
            ..base()
        },
        StartOptions {
            proto_version: Some(5),
            ..base()
        },
        StartOptions {
            streaming: Streaming::Parallel,
            ..base()
        },
        StartOptions {
            streaming: Streaming::On,
            proto_version: Some(1),
            ..base()
        },
        StartOptions {
            origin: Some(OriginFilter::None),
            ..base()
        },
        StartOptions {
            two_phase: true,
            proto_version: Some(2),
            ..base()
        },
        StartOptions::new(Vec::<String>::new()),
    ];
    for options in refused {
        let conn = connect(&cluster, "opt_db").await;
        let err = conn
            .start_replication(
                "opt_slot",
                Lsn::INVALID,
                options.clone(),
                StatusOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ReplicationError::Unsupported { .. } | ReplicationError::InvalidOption { .. }
            ),
            "{options:?}: {err:?}"
        );
        assert_eq!(err.sqlstate(), None);
        // The walsender never started streaming (it is gone or idle, never active on the slot).
        assert_eq!(
            slot_column(&cluster, "opt_db", "opt_slot", "active_pid IS NULL"),
            "t",
            "{options:?}"
        );
    }
    let conn = connect(&cluster, "opt_db").await;
    let err = conn
        .start_replication("Bad-Slot", Lsn::INVALID, base(), StatusOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicationError::InvalidSlotName { .. }));

    // What PostgreSQL 15 does support works: protocol 3, streaming on, two-phase, binary, messages.
    let conn = connect(&cluster, "opt_db").await;
    let options = StartOptions {
        streaming: Streaming::On,
        two_phase: true,
        binary: true,
        messages: true,
        ..base()
    };
    let mut stream = conn
        .start_replication("opt_slot", Lsn::INVALID, options, StatusOptions::default())
        .await
        .unwrap();
    assert_eq!(stream.proto_version(), 3);
    psql(&cluster, "opt_db", "INSERT INTO t VALUES (1, 'x')");
    next_message(&mut stream, b'I').await;
    let mut conn = stream.finish().await.unwrap();
    conn.drop_slot("opt_slot", false).await.unwrap();
    conn.close().await.unwrap();
}

/// Every supported major: the slot syntax of its version (old keywords on 14), the best protocol
/// by default, the newest options where available, and an insert streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_major() {
    for major in 14..=18 {
        let cluster = start(
            ClusterOptions::new(PgBinaries::major(major).unwrap()).name(&format!("pg{major}")),
        );
        setup_db(&cluster, "ver_db");
        let mut conn = connect(&cluster, "ver_db").await;
        assert_eq!(conn.server_major(), major);
        let exported = conn
            .create_slot(
                "ver_slot",
                CreateSlotOptions {
                    temporary: false,
                    snapshot: SnapshotAction::Export,
                    two_phase: major >= 15,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"));
        assert!(exported.snapshot_name.is_some());
        let two_phase = if major >= 15 { "t" } else { "f" };
        assert_eq!(
            slot_column(&cluster, "ver_db", "ver_slot", "two_phase"),
            two_phase
        );
        if major < 15 {
            // 14 has no TWO_PHASE in its replication grammar: refused before sending.
            let err = conn
                .create_slot(
                    "ver_slot_2pc",
                    CreateSlotOptions {
                        two_phase: true,
                        ..CreateSlotOptions::default()
                    },
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, ReplicationError::Unsupported { .. }),
                "{err:?}"
            );
        }
        let options = StartOptions {
            streaming: if major >= 16 {
                Streaming::Parallel
            } else {
                Streaming::On
            },
            origin: (major >= 16).then_some(OriginFilter::Any),
            two_phase: major >= 15,
            binary: true,
            messages: true,
            ..StartOptions::new(["pub_t"])
        };
        let mut stream = conn
            .start_replication(
                "ver_slot",
                exported.consistent_point,
                options,
                StatusOptions::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL {major}: {e}"));
        assert_eq!(
            stream.proto_version(),
            blueshift_decoder::stream::max_proto_version(major)
        );
        psql(&cluster, "ver_db", "INSERT INTO t VALUES (1, 'x')");
        let commit = next_message(&mut stream, b'C').await;
        stream.feedback().set_flushed(wal_start(&commit));
        let mut conn = stream.finish().await.unwrap();
        assert_eq!(
            lsn(&slot_column(
                &cluster,
                "ver_db",
                "ver_slot",
                "confirmed_flush_lsn"
            )),
            wal_start(&commit)
        );
        conn.drop_slot("ver_slot", true).await.unwrap();
        conn.close().await.unwrap();
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
