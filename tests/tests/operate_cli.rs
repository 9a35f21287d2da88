//! One settings surface and exit codes by class, the real binary: every command reads the same
//! `--config` file and `BLUESHIFT_*` variables (`BLUESHIFT_SLOT` for status and cleanup,
//! `BLUESHIFT_NO_BACKFILL=1`); a second sync on a slot in use is refused at once (exit 3)
//! naming the other process; each class of failure has its exit code; `--log-format json`;
//! no NOTICE noise in sync's log and no dropped connection in blue's.

#[path = "support/sync.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use blueshift_tests::{blueshift_binary, eventually};
use support::Pair;

/// `blueshift <args>` with `env` and none of the caller's `BLUESHIFT_*` / `PG*` settings.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = clean(Command::new(blueshift_binary()));
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("blueshift runs")
}

/// `cmd` without the caller's `BLUESHIFT_*` and `PG*` variables.
fn clean(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("BLUESHIFT_") || key.starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_config(dir: &Path, pair: &Pair) -> String {
    let path = dir.join("blueshift.toml");
    std::fs::write(
        &path,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\npublication = \"pub\"\nslot = \"bs\"\nworkers = 2\nstatus_interval = 1\n",
            pair.blue.uri("app"),
            pair.green.uri("app")
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn every_command_reads_the_config_file_and_the_environment() {
    let pair = Pair::new("settings");
    pair.schema("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue
        .psql(
            "app",
            "CREATE PUBLICATION pub FOR ALL TABLES;
             INSERT INTO t SELECT g, 'before' FROM generate_series(1, 10) g",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pair);
    let env_endpoints = [
        ("BLUESHIFT_SOURCE", pair.blue.uri("app")),
        ("BLUESHIFT_TARGET", pair.green.uri("app")),
        ("BLUESHIFT_SLOT", "bs".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env_endpoints
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();

    // backfill: everything from the file.
    let out = run(&["backfill", "--config", &config], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Counted as green counted them (a binary COPY's trailer is not a row).
    assert!(
        stderr(&out).contains("backfill finished rows=10 "),
        "{}",
        stderr(&out)
    );
    pair.converge(&["t"], Duration::from_secs(10));

    // sync: the file, and BLUESHIFT_NO_BACKFILL=1 (a boolean variable spelled as 1).
    let mut cmd = clean(Command::new(blueshift_binary()));
    cmd.args(["sync", "--config", &config])
        .env("BLUESHIFT_NO_BACKFILL", "1");
    let mut sync = pair.spawn_command("sync", cmd);
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(sync.running(), "sync exited:\n{}", sync.log_text());
        anyhow::ensure!(
            sync.log_text().contains("sync started"),
            "not streaming yet"
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    pair.blue
        .psql("app", "INSERT INTO t VALUES (11, 'streamed')")
        .unwrap();
    pair.converge(&["t"], Duration::from_secs(60));

    // A second sync on the same slot is refused at once, naming the first.
    let out = run(&["sync", "--config", &config, "--no-backfill"], &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert!(
        err.contains("replication slot \"bs\" on blue is in use"),
        "{err}"
    );
    assert!(err.contains("blueshift sync bs (pid "), "{err}");
    assert!(err.contains("pg_terminate_backend"), "{err}");

    // status: the file alone, or the variables alone (BLUESHIFT_SLOT included).
    for (args, env) in [
        (
            vec!["status", "--json", "--config", config.as_str()],
            &[][..],
        ),
        (vec!["status", "--json"], &env[..]),
    ] {
        let out = run(&args, env);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["slot"]["name"], "bs", "{v}");
        assert_eq!(v["slot"]["active"], true, "{v}");
    }

    // plan and tail: the file's endpoints and publication.
    let out = run(&["plan", "--config", &config], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("publication \"pub\""),
        "{}",
        stdout(&out)
    );
    let lsn = pair.blue_lsn();
    let out = run(
        &[
            "tail",
            "--config",
            &config,
            "--temporary-slot",
            "--until",
            &lsn,
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // migrate: the file's target.
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    let out = run(
        &[
            "migrate",
            "--config",
            &config,
            "--dir",
            &migrations.display().to_string(),
            "status",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    assert!(sync.terminate(), "SIGTERM exits 0:\n{}", sync.log_text());

    // cleanup (a dry run): the file alone, or BLUESHIFT_SLOT and friends alone.
    for (args, env) in [
        (vec!["cleanup", "--config", config.as_str()], &[][..]),
        (vec!["cleanup"], &env[..]),
    ] {
        let out = run(&args, env);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("replication slot \"bs\""), "{args:?}: {text}");
        assert!(
            text.contains("the lag heartbeat of slot \"bs\""),
            "{args:?}: {text}"
        );
    }

    // Quiet servers: no "already exists, skipping" relayed, no connection dropped mid-way.
    let log = sync.log_text();
    assert!(!log.contains("already exists, skipping"), "{log}");
    for (name, server_log) in [("blue", pair.blue.log()), ("green", pair.green.log())] {
        for noise in [
            "could not send data to client",
            "unexpected EOF",
            "connection reset",
        ] {
            assert!(
                !server_log.contains(noise),
                "{name} logged {noise:?}:\n{server_log}"
            );
        }
    }
}

#[test]
fn each_class_of_failure_has_its_exit_code() {
    let closed = |_: ()| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("host=127.0.0.1 port={port} dbname=app user=postgres connect_timeout=5")
    };
    let (nowhere_a, nowhere_b) = (closed(()), closed(()));

    // 2: usage.
    let out = run(&["status", "--bogus"], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // 3: a settings file with an unknown key, named.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "source = \"host=a\"\nwrokers = 4\n").unwrap();
    let out = run(&["status", "--config", &bad.display().to_string()], &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrokers"), "{}", stderr(&out));

    // 3: the same database as source and target.
    let out = run(
        &["status", "--source", &nowhere_a, "--target", &nowhere_a],
        &[],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("same database"), "{}", stderr(&out));

    // 4: nothing listens; as JSON log lines, the last one carrying the exit code.
    let out = run(
        &[
            "--log-format",
            "json",
            "status",
            "--source",
            &nowhere_a,
            "--target",
            &nowhere_b,
        ],
        &[],
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().expect("a log line");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["fields"]["exit_code"], 4, "{last}");
    assert!(last["fields"]["message"] == "blueshift stopped", "{last}");

    let pair = Pair::new("exitcodes");
    pair.schema("CREATE TABLE t (id int PRIMARY KEY, v text)");

    // 3: preflight refused (no publication).
    let out = run(
        &[
            "sync",
            "--source",
            &pair.blue.uri("app"),
            "--target",
            &pair.green.uri("app"),
            "--publication",
            "pub",
            "--slot",
            "bs",
        ],
        &[],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("publication \"pub\" does not exist"),
        "{}",
        stderr(&out)
    );

    // 1: plan finds a table replication cannot carry.
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    pair.green
        .psql("app", "ALTER TABLE t ADD COLUMN tenant int NOT NULL")
        .unwrap();
    let out = run(
        &[
            "plan",
            "--source",
            &pair.blue.uri("app"),
            "--target",
            &pair.green.uri("app"),
            "--publication",
            "pub",
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    pair.green
        .psql("app", "ALTER TABLE t DROP COLUMN tenant")
        .unwrap();

    // 5: the slot is gone while green holds changes streamed through it.
    let mut sync = pair.sync(&[]);
    pair.blue
        .psql("app", "INSERT INTO t VALUES (1, 'a')")
        .unwrap();
    pair.converge(&["t"], Duration::from_secs(60));
    assert!(sync.terminate(), "{}", sync.log_text());
    pair.blue
        .psql("app", "SELECT pg_drop_replication_slot('bs')")
        .unwrap();
    let mut again = pair.spawn("sync", &["--no-backfill"]);
    let code = again.exit_code_within(Duration::from_secs(60));
    let log = again.log_text();
    assert_eq!(code, 5, "{log}");
    assert!(log.contains("does not exist on blue"), "{log}");
}
