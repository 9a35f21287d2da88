//! libpq settings on every connection, the real binary: `connect_timeout` (and
//! `PGCONNECT_TIMEOUT`) bounds the whole connect — TCP and the startup exchange — of the SQL
//! connections (`status`, `sync`'s preflight) and of the replication connection (`tail`),
//! against a listener that accepts and never answers; the failure is a connection failure
//! (exit 4) that says it timed out. Several hosts are tried in order, and
//! `target_session_attrs` picks the server in the state asked for, on both kinds of connection.
//!
//! The bound checked is generous (the process must be gone within 20 s of a 2 s timeout, on a
//! loaded machine); without the timeout these commands hang until killed.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blueshift_tests::{blueshift_binary, eventually};

/// A listener that accepts every connection (kept open, silent) until dropped.
struct BlackHole {
    port: u16,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl BlackHole {
    fn new() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&held);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().expect("lock").push(stream);
            }
        });
        BlackHole { port, _held: held }
    }

    fn conninfo(&self, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=app user=nobody {extra}",
            self.port
        )
    }
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(blueshift_binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("BLUESHIFT_") || key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("blueshift runs")
}

/// Waits (at most 20 s) for `child` to exit; its exit code and stderr.
fn finished(mut child: Child) -> (i32, String) {
    let status = eventually(Duration::from_secs(20), || {
        child
            .try_wait()?
            .ok_or_else(|| anyhow::anyhow!("still connecting"))
    });
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            panic!("{e:#}: the connect timeout did not end it");
        }
    };
    let out = child.wait_with_output().expect("output");
    (
        status.code().expect("exited"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn connect_timeout_bounds_the_whole_connect_of_every_connection() {
    let (blue, green) = (BlackHole::new(), BlackHole::new());

    // SQL connections: status.
    let (code, err) = finished(spawn(
        &[
            "status",
            "--source",
            &blue.conninfo("connect_timeout=2"),
            "--target",
            &green.conninfo("connect_timeout=2"),
        ],
        &[],
    ));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("timed out after 2 s while connecting"),
        "{err}"
    );

    // The same from PGCONNECT_TIMEOUT.
    let (code, err) = finished(spawn(
        &[
            "status",
            "--source",
            &blue.conninfo(""),
            "--target",
            &green.conninfo(""),
        ],
        &[("PGCONNECT_TIMEOUT", "2")],
    ));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("timed out after 2 s"), "{err}");

    // sync's preflight.
    let (code, err) = finished(spawn(
        &[
            "sync",
            "--source",
            &blue.conninfo("connect_timeout=2"),
            "--target",
            &green.conninfo("connect_timeout=2"),
        ],
        &[],
    ));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("timed out"), "{err}");

    // The replication connection: tail.
    let (code, err) = finished(spawn(
        &[
            "tail",
            "--source",
            &blue.conninfo("connect_timeout=2"),
            "--publication",
            "p",
            "--temporary-slot",
        ],
        &[],
    ));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("timed out"), "{err}");
}

fn run(args: &[&str]) -> (i32, String) {
    let out = spawn(args, &[]).wait_with_output().expect("runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn several_hosts_are_tried_in_order_and_target_session_attrs_picks_the_server() {
    use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};
    let bins = PgBinaries::from_env().expect("binaries");
    let rw = Cluster::start(ClusterOptions::new(bins.clone()).name("attrs-rw")).unwrap();
    let ro = Cluster::start(ClusterOptions::new(bins).name("attrs-ro")).unwrap();
    for c in [&rw, &ro] {
        c.create_database("app").unwrap();
        c.psql("app", "CREATE PUBLICATION p FOR ALL TABLES")
            .unwrap();
    }
    ro.psql(
        "app",
        "ALTER DATABASE app SET default_transaction_read_only = on",
    )
    .unwrap();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let list = |ports: &[u16], attrs: &str| {
        let hosts = vec!["127.0.0.1"; ports.len()].join(",");
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "host={hosts} port={} dbname=app user=postgres connect_timeout=5 target_session_attrs={attrs}",
            ports.join(",")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("V1__marker.sql"),
        "CREATE TABLE marker (id int);",
    )
    .unwrap();
    let migrations = dir.path().display().to_string();

    // SQL: a dead host, then a read-only one, then the read-write one: the migration lands on it.
    let conninfo = list(&[closed, ro.port(), rw.port()], "read-write");
    let (code, err) = run(&[
        "migrate",
        "--database",
        &conninfo,
        "--dir",
        &migrations,
        "up",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        rw.psql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        )
        .unwrap(),
        "1"
    );
    assert_eq!(
        ro.psql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        )
        .unwrap(),
        "0"
    );

    // None in the state asked for: a connection failure naming what each server is.
    let conninfo = list(&[rw.port()], "standby");
    let (code, err) = run(&[
        "migrate",
        "--database",
        &conninfo,
        "--dir",
        &migrations,
        "status",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("target_session_attrs=standby"), "{err}");
    assert!(err.contains("is a read-write primary"), "{err}");

    // The replication connection: a dead host is skipped; a read-only server is refused under
    // read-write, named for what it is.
    let lsn = rw.psql("app", "SELECT pg_current_wal_lsn()").unwrap();
    let conninfo = list(&[closed, rw.port()], "any");
    let (code, err) = run(&[
        "tail",
        "--source",
        &conninfo,
        "--publication",
        "p",
        "--temporary-slot",
        "--until",
        &lsn,
    ]);
    assert_eq!(code, 0, "{err}");
    let conninfo = list(&[ro.port()], "read-write");
    let (code, err) = run(&[
        "tail",
        "--source",
        &conninfo,
        "--publication",
        "p",
        "--temporary-slot",
        "--until",
        &lsn,
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("is a read-only primary"), "{err}");
}
