//! `blueshift status`, the real binary against a real blue and green: the slot and blue's WAL
//! figures, each origin's progress and green's durable position, the lag, as a table and as
//! JSON; an active slot names its process; a missing slot or missing origins say how to start;
//! a password given in a URI appears in no output.

#[path = "support/cli.rs"]
mod cli;

use std::process::Output;
use std::time::Duration;

use blueshift_decoder::Lsn;
use blueshift_tests::{eventually, Cluster, ClusterOptions, PgBinaries};
use serde_json::{json, Value};

const PASSWORD: &str = "St4tus-Secr3t-pw";

/// A cluster with database `app` and a superuser `bs_admin` who logs in with [`PASSWORD`].
fn cluster(name: &str) -> Cluster {
    let c = Cluster::start(
        ClusterOptions::new(PgBinaries::from_env().expect("binaries"))
            .name(name)
            .hba_line("host all bs_admin 127.0.0.1/32 scram-sha-256"),
    )
    .expect("cluster");
    c.create_database("app").expect("db");
    c.psql(
        "app",
        &format!("CREATE ROLE bs_admin LOGIN SUPERUSER PASSWORD '{PASSWORD}'"),
    )
    .expect("role");
    c
}

/// Blue with table `t`, publication `p` and slot `s`; green with `s`'s origins (one advanced to
/// 0/ABC, one never used) and look-alikes of other slots.
fn blue_and_green() -> (Cluster, Cluster) {
    let blue = cluster("status-blue");
    blue.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY);
         CREATE PUBLICATION p FOR TABLE t;
         SELECT pg_create_logical_replication_slot('s', 'pgoutput');
         INSERT INTO t SELECT generate_series(1, 100);",
    )
    .expect("blue setup");
    let green = cluster("status-green");
    green
        .psql(
            "app",
            "SELECT pg_replication_origin_create('blueshift_s_0');
             SELECT pg_replication_origin_create('blueshift_s_1');
             SELECT pg_replication_origin_advance('blueshift_s_0', '0/ABC');
             SELECT pg_replication_origin_create('blueshift_s_x');
             SELECT pg_replication_origin_create('blueshift_s_1_0');
             SELECT pg_replication_origin_create('blueshift_sx_0');
             SELECT pg_replication_origin_advance('blueshift_sx_0', '7/0');",
        )
        .expect("green setup");
    (blue, green)
}

fn status(blue_uri: &str, green_uri: &str, args: &[&str]) -> Output {
    cli::run("status", blue_uri, green_uri, args)
}

fn succeeded(out: &Output) -> String {
    cli::succeeded("status", out)
}

fn failed(out: &Output) -> String {
    cli::failed("status", out)
}

fn lsn(v: &Value) -> Lsn {
    v.as_str()
        .unwrap_or_else(|| panic!("not an LSN string: {v}"))
        .parse()
        .expect("an LSN")
}

fn psql_lsn(c: &Cluster, sql: &str) -> Lsn {
    c.psql("app", sql).expect("query").parse().expect("an LSN")
}

#[test]
fn reports_slot_origins_and_lag_as_json_and_table() {
    let (blue, green) = blue_and_green();
    let before = psql_lsn(&blue, "SELECT pg_current_wal_lsn()");
    let out = status(
        &blue.uri("app"),
        &green.uri("app"),
        &["--slot", "s", "--json"],
    );
    let after = psql_lsn(&blue, "SELECT pg_current_wal_lsn()");
    let v: Value = serde_json::from_str(&succeeded(&out)).expect("one JSON object");

    let slot = &v["slot"];
    assert_eq!(slot["name"], "s");
    assert_eq!(slot["plugin"], "pgoutput");
    assert_eq!(slot["slot_type"], "logical");
    assert_eq!(slot["database"], "app");
    assert_eq!(slot["active"], false);
    assert_eq!(slot["active_pid"], Value::Null);
    assert!(slot["wal_status"].is_string(), "{slot}");
    let restart = psql_lsn(
        &blue,
        "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 's'",
    );
    let confirmed = psql_lsn(
        &blue,
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 's'",
    );
    assert_eq!(lsn(&slot["restart_lsn"]), restart);
    assert_eq!(lsn(&slot["confirmed_flush_lsn"]), confirmed);

    let current = lsn(&v["blue"]["current_lsn"]);
    assert!(
        before <= current && current <= after,
        "{before} {current} {after}"
    );
    assert_eq!(
        v["blue"]["retained_wal_bytes"],
        current.bytes_since(restart),
        "{v}"
    );
    // The inserts after the slot's creation are WAL the slot retains.
    assert!(current.bytes_since(restart) > 0);

    assert_eq!(
        v["green"]["origins"],
        json!([
            {"name": "blueshift_s_0", "worker": 0, "progress": "0/ABC"},
            {"name": "blueshift_s_1", "worker": 1, "progress": null},
        ])
    );
    assert_eq!(v["green"]["durable_lsn"], "0/ABC");
    // The lag counts from what green holds: the origins' progress, or the slot's confirmed
    // position when further (as the running sync's blueshift_lag_bytes does).
    assert_eq!(
        v["lag_bytes"],
        current.bytes_since(Lsn(0xABC).max(confirmed)),
        "{v}"
    );
    // No sync ever recorded a heartbeat on green: the seconds are unknown, not 0.
    assert_eq!(v["lag_seconds"], Value::Null, "{v}");
    assert_eq!(v["sync_recording"], Value::Null, "{v}");

    // The table says the same.
    let text = succeeded(&status(
        &blue.uri("app"),
        &green.uri("app"),
        &["--slot", "s"],
    ));
    for expected in [
        "slot",
        "\"s\"",
        "logical (pgoutput, database app)",
        "inactive",
        &restart.to_string(),
        "origin blueshift_s_0",
        "0/ABC",
        "origin blueshift_s_1",
        "nothing applied yet",
        "durable position",
        "behind blue",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("blueshift_s_x"), "{text}");
    assert!(!text.contains("blueshift_sx_0"), "{text}");
    assert!(!text.contains("blueshift_s_1_0"), "{text}");
}

#[test]
fn an_active_slot_names_its_process() {
    let (blue, green) = blue_and_green();
    let mut consumer = cli::pg_recvlogical(&blue, "s", "p");
    let pid: i32 = eventually(Duration::from_secs(30), || {
        let pid = blue.psql(
            "app",
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's' AND active",
        )?;
        anyhow::ensure!(!pid.is_empty(), "slot not active yet");
        Ok(pid.parse()?)
    })
    .expect("pg_recvlogical streams from the slot");
    let out = status(
        &blue.uri("app"),
        &green.uri("app"),
        &["--slot", "s", "--json"],
    );
    let v: Value = serde_json::from_str(&succeeded(&out)).expect("JSON");
    assert_eq!(v["slot"]["active"], true);
    assert_eq!(v["slot"]["active_pid"], pid);
    let text = succeeded(&status(
        &blue.uri("app"),
        &green.uri("app"),
        &["--slot", "s"],
    ));
    assert!(text.contains(&format!("active (pid {pid})")), "{text}");
    consumer.kill().expect("stop pg_recvlogical");
    consumer.wait().expect("reap pg_recvlogical");
}

#[test]
fn a_missing_slot_or_origins_say_how_to_start() {
    let (blue, green) = blue_and_green();
    let err = failed(&status(
        &blue.uri("app"),
        &green.uri("app"),
        &["--slot", "nosuch"],
    ));
    assert!(err.contains("\"nosuch\" does not exist on blue"), "{err}");
    assert!(err.contains("blueshift sync"), "{err}");

    // The default slot name is `blueshift`.
    let err = failed(&status(&blue.uri("app"), &green.uri("app"), &[]));
    assert!(err.contains("\"blueshift\" does not exist"), "{err}");

    blue.psql(
        "app",
        "SELECT pg_create_logical_replication_slot('lonely', 'pgoutput')",
    )
    .expect("slot");
    let err = failed(&status(
        &blue.uri("app"),
        &green.uri("app"),
        &["--slot", "lonely"],
    ));
    assert!(
        err.contains("no replication origin of slot \"lonely\""),
        "{err}"
    );
    assert!(err.contains("blueshift_lonely_<n>"), "{err}");
    assert!(err.contains("blueshift sync"), "{err}");

    let err = failed(&status(
        &blue.uri("app"),
        &green.uri("app"),
        &["--slot", "Bad-Name"],
    ));
    assert!(err.contains("invalid replication slot name"), "{err}");
}

#[test]
fn a_password_in_a_uri_appears_in_no_output() {
    let (blue, green) = blue_and_green();
    let uri = |c: &Cluster, password: &str| {
        format!(
            "postgresql://bs_admin:{password}@127.0.0.1:{}/app",
            c.port()
        )
    };
    for args in [
        &["--slot", "s"][..],
        &["--slot", "s", "--json"],
        &["--slot", "nosuch"],
    ] {
        let out = status(&uri(&blue, PASSWORD), &uri(&green, PASSWORD), args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(PASSWORD), "{args:?}: {all}");
        if args == ["--slot", "s"] {
            assert!(out.status.success(), "{all}");
            assert!(all.contains("0/ABC"), "{all}");
            // The warning about a password on the command line, without it.
            assert!(all.contains("carries a password"), "{all}");
        }
    }
    // A wrong password: an authentication error, neither password shown.
    let wrong = "Wr0ng-Secr3t-pw";
    let out = status(&uri(&blue, PASSWORD), &uri(&green, wrong), &["--slot", "s"]);
    let err = failed(&out);
    let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("cannot reach green"), "{err}");
    assert!(!all.contains(wrong) && !all.contains(PASSWORD), "{all}");
}
