//! `blueshift tail`, the real binary against a real server: JSON lines, acknowledgement only of
//! what was written out, resumption after `kill -9`, graceful stop on SIGTERM, clear errors.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use blueshift_decoder::Lsn;
use blueshift_tests::{blueshift_binary, eventually, Cluster, ClusterOptions, PgBinaries};
use serde_json::Value;

fn cluster(name: &str) -> Cluster {
    let c = Cluster::start(
        ClusterOptions::new(PgBinaries::from_env().expect("binaries"))
            .name(name)
            .hba_line("host all tailer 127.0.0.1/32 scram-sha-256")
            .hba_line("host replication tailer 127.0.0.1/32 scram-sha-256"),
    )
    .expect("cluster");
    c.create_database("app").expect("db");
    c.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
    )
    .expect("schema");
    c
}

fn tail(cluster: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(blueshift_binary());
    cmd.arg("tail")
        .args(["--source", &cluster.uri("app"), "--publication", "p"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("PGPASSWORD");
    cmd
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn current_lsn(cluster: &Cluster) -> String {
    cluster
        .psql("app", "SELECT pg_current_wal_lsn()")
        .expect("lsn")
}

fn confirmed(cluster: &Cluster, slot: &str) -> Lsn {
    cluster
        .psql(
            "app",
            &format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
        )
        .expect("slot")
        .parse()
        .expect("an LSN")
}

fn lsn(v: &Value) -> Lsn {
    v.as_str().expect("LSN string").parse().expect("LSN")
}

/// The ids inserted by the transactions whose commit line was written.
fn committed_ids(out: &[Value]) -> (BTreeSet<i64>, Vec<i64>) {
    let mut pending = Vec::new();
    let mut all = Vec::new();
    for v in out {
        match v["type"].as_str() {
            Some("begin") => pending.clear(),
            Some("insert") => {
                pending.push(v["new"]["id"].as_str().unwrap().parse::<i64>().unwrap())
            }
            Some("commit") => all.append(&mut pending),
            _ => {}
        }
    }
    (all.iter().copied().collect(), all)
}

#[test]
fn prints_json_lines_and_acknowledges_what_it_wrote() {
    let c = cluster("tail-json");
    // Create the slot first (exit at once: --until 0/1 is already behind it).
    let out = tail(&c, &["--slot", "s", "--create-slot", "--until", "0/1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    c.psql(
        "app",
        "INSERT INTO t VALUES (1, 'one'), (2, 'two');
         UPDATE t SET v = 'uno' WHERE id = 1;
         DELETE FROM t WHERE id = 2;
         SELECT pg_logical_emit_message(true, 'app', 'note');",
    )
    .unwrap();
    let until = current_lsn(&c);
    let out = tail(&c, &["--slot", "s", "--until", &until])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = lines(&String::from_utf8(out.stdout).unwrap());
    let kinds: Vec<_> = v.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "begin", "relation", "insert", "insert", "commit", // INSERT
            "begin", "update", "commit", // UPDATE
            "begin", "delete", "commit", // DELETE
            "begin", "message", "commit", // pg_logical_emit_message
        ]
    );
    assert_eq!(v[1]["relation"], "public.t");
    assert_eq!(v[1]["columns"][0]["name"], "id");
    assert_eq!(v[1]["columns"][0]["key"], true);
    assert_eq!(v[2]["new"], serde_json::json!({"id": "1", "v": "one"}));
    assert_eq!(v[6]["new"], serde_json::json!({"id": "1", "v": "uno"}));
    assert_eq!(v[9]["old"], serde_json::json!({"id": "2"}));
    assert_eq!(v[9]["old_kind"], "key");
    assert_eq!(v[12]["prefix"], "app");
    assert_eq!(v[12]["content"], "note");
    for l in &v {
        lsn(&l["lsn"]);
    }
    assert_eq!(v[0]["final_lsn"], v[4]["commit_lsn"]);

    // The slot was told exactly the end of the last transaction written out.
    let last_end = lsn(&v[13]["end_lsn"]);
    assert!(confirmed(&c, "s") >= last_end);
    // And a second run has nothing left before `until`.
    let out = tail(&c, &["--slot", "s", "--until", &until])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(lines(&String::from_utf8(out.stdout).unwrap()).is_empty());
}

/// `kill -9` mid-stream, five times, under concurrent writes: the slot is never acknowledged
/// past what the killed run wrote out, and the runs together hold every committed row.
#[test]
fn resumes_after_kill_9_without_losing_a_transaction() {
    let c = cluster("tail-kill");
    let dir = tempfile::tempdir().unwrap();
    let out = tail(&c, &["--slot", "k", "--create-slot", "--until", "0/1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A writer commits one row per transaction in the background.
    let uri = c.uri("app");
    let psql = c.binaries().bin("psql");
    let mut writer = Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &uri, "-c"])
        .arg(
            "DO $$ BEGIN FOR i IN 1..3000 LOOP \
             INSERT INTO t VALUES (i, 'v' || i); COMMIT; PERFORM pg_sleep(0.001); END LOOP; END $$",
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let mut seen = BTreeSet::new();
    for run in 0..5 {
        let path = dir.path().join(format!("run{run}.jsonl"));
        let before = confirmed(&c, "k");
        let mut child: Child = tail(&c, &["--slot", "k", "--status-interval", "1"])
            .stdout(fs::File::create(&path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it write some transactions, then kill it without warning.
        eventually(Duration::from_secs(60), || {
            let n = fs::read_to_string(&path)?.matches("\"commit\"").count();
            anyhow::ensure!(n >= 20, "{n} commits so far");
            Ok(())
        })
        .unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let written = lines_complete(&path);
        let (ids, _) = committed_ids(&written);
        let last_written_end = written
            .iter()
            .filter(|l| l["type"] == "commit")
            .map(|l| lsn(&l["end_lsn"]))
            .max()
            .expect("a commit was written");
        let after = confirmed(&c, "k");
        assert!(
            after <= last_written_end,
            "run {run}: slot acknowledged {after} but only {last_written_end} was written"
        );
        // Nothing the slot had confirmed before this run is sent again.
        let first_commit = written
            .iter()
            .find(|l| l["type"] == "commit")
            .map(|l| lsn(&l["end_lsn"]))
            .unwrap();
        assert!(
            first_commit > before,
            "run {run} repeated a confirmed transaction"
        );
        seen.extend(ids);
    }
    assert!(writer.wait().unwrap().success());
    // A last run to the end of WAL picks up the rest.
    let until = current_lsn(&c);
    let out = tail(&c, &["--slot", "k", "--until", &until])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ids, _) = committed_ids(&lines(&String::from_utf8(out.stdout).unwrap()));
    seen.extend(ids);
    let expected: BTreeSet<i64> = (1..=3000).collect();
    assert_eq!(seen, expected, "every committed row appears in some run");
}

/// The complete lines of a file a killed process was writing (the last may be cut).
fn lines_complete(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    lines(complete)
}

#[test]
fn sigterm_stops_cleanly_and_acknowledges() {
    let c = cluster("tail-term");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let child = tail(&c, &["--temporary-slot"])
        .stdout(fs::File::create(&path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The temporary slot exists once the stream has started.
    eventually(Duration::from_secs(30), || {
        let n = c.psql(
            "app",
            "SELECT count(*) FROM pg_replication_slots WHERE active",
        )?;
        anyhow::ensure!(n == "1", "no active slot yet");
        Ok(())
    })
    .unwrap();
    c.psql("app", "INSERT INTO t VALUES (7, 'seven')").unwrap();
    eventually(Duration::from_secs(30), || {
        anyhow::ensure!(
            fs::read_to_string(&path)?.contains("\"commit\""),
            "no commit yet"
        );
        Ok(())
    })
    .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    // SIGTERM through kill(1), as an operator or a service manager would send it.
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output: Output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit {:?}", output.status);
    let v = lines(&fs::read_to_string(&path).unwrap());
    assert_eq!(v.last().unwrap()["type"], "commit");
    assert_eq!(v[v.len() - 2]["new"]["id"], "7");
    // The temporary slot went away with the connection.
    eventually(Duration::from_secs(10), || {
        let n = c.psql("app", "SELECT count(*) FROM pg_replication_slots")?;
        anyhow::ensure!(n == "0", "{n} slots remain");
        Ok(())
    })
    .unwrap();
}

#[test]
fn bad_input_gets_a_clear_error() {
    let c = cluster("tail-errors");
    let run = |args: &[&str]| {
        let out = tail(&c, args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    };
    let e = run(&["--slot", "missing_slot"]);
    assert!(
        e.contains("\"missing_slot\" does not exist") && e.contains("--create-slot"),
        "{e}"
    );
    let e = run(&["--slot", "Bad-Name", "--create-slot"]);
    assert!(e.contains("invalid replication slot name"), "{e}");
    let e = run(&["--temporary-slot", "--from", "not-an-lsn"]);
    assert!(e.contains("invalid LSN"), "{e}");

    // A wrong password: the server's error, and the password nowhere in it.
    c.psql(
        "app",
        "SET password_encryption = 'scram-sha-256'; CREATE ROLE tailer LOGIN REPLICATION PASSWORD 'right-secret'",
    )
    .unwrap();
    let mut cmd = Command::new(blueshift_binary());
    let uri = format!(
        "postgresql://tailer:wrong-secret@127.0.0.1:{}/app?sslmode=disable",
        c.port()
    );
    let out = cmd
        .args([
            "tail",
            "--source",
            &uri,
            "--publication",
            "p",
            "--temporary-slot",
        ])
        .output()
        .unwrap();
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(!e.contains("wrong-secret"), "password printed: {e}");
    assert!(e.contains("carries a password"), "no warning: {e}");
}
