//! `blueshift verify` end to end, the real binary between two real clusters: zero differences at
//! several moments while the sync sidecar applies a pgbench load (the test that catches a
//! comparison at "now" instead of at L); a quiet pair after sync stopped; every injected
//! difference found with its key and both rows (a changed value, a deleted row, an extra row, a
//! duplicate in a keyless table, one byte inside a TOASTed value, a row in one partition, a
//! violated foreign key), `--workers 1` finding the same as `--workers 4`; the records cutover
//! reads; kill -9 then `--resume` covering every chunk once; blue 15 → green 18 under a mapping
//! with hostile identifiers.

#[path = "support/sync.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blueshift_tests::{blueshift_binary, eventually, PgBinaries};
use serde_json::Value;
use support::Pair;

/// Runs `blueshift verify --format json` between the pair; (exit code, report, stderr).
fn verify(pair: &Pair, extra: &[&str]) -> (i32, Value, String) {
    let out = Command::new(blueshift_binary())
        .arg("verify")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--publication", "pub", "--slot", "bs", "--format", "json"])
        .args(extra)
        .env("RUST_LOG", "info,blueshift_engine=debug")
        .stdin(Stdio::null())
        .output()
        .expect("blueshift verify runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().expect("exited");
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (code, report, stderr)
}

/// The differences of a report as (table, kind, key, blue, green, detail) strings.
fn differences(report: &Value) -> Vec<(String, String, String, String, String, String)> {
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    report["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| {
            (
                text(&d["table"]),
                text(&d["kind"]),
                text(&d["key"]),
                text(&d["blue"]),
                text(&d["green"]),
                text(&d["detail"]),
            )
        })
        .collect()
}

fn pgbench(
    pair: &Pair,
    db_cluster: &blueshift_tests::Cluster,
    args: &[&str],
) -> std::process::Output {
    let _ = pair;
    Command::new(db_cluster.binaries().bin("pgbench"))
        .args(args)
        .arg(db_cluster.uri("app"))
        .output()
        .expect("pgbench runs")
}

#[test]
fn zero_differences_under_pgbench_load_at_several_moments() {
    let pair = Pair::new("vload");
    let init = pgbench(&pair, &pair.blue, &["-i", "-s", "2", "-q"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Green: the same tables and keys, empty (the backfill fills them).
    let init = pgbench(&pair, &pair.green, &["-i", "-s", "2", "-I", "dtp"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    let mut sync = pair.sync(&["--workers", "4"]);
    pair.converge(
        &["pgbench_accounts", "pgbench_branches"],
        Duration::from_secs(120),
    );
    // Writes on blue throughout: 4 clients, no think time.
    let mut load = Command::new(pair.blue.binaries().bin("pgbench"))
        .args(["-n", "-c", "4", "-j", "2", "-T", "600"])
        .arg(pair.blue.uri("app"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgbench load starts");
    let mut pauses = Vec::new();
    for run in 0..4 {
        std::thread::sleep(Duration::from_millis(1500 + 700 * run));
        let before: i64 = pair
            .blue
            .psql("app", "SELECT count(*) FROM pgbench_history")
            .unwrap()
            .parse()
            .unwrap();
        let started = Instant::now();
        let (code, report, stderr) = verify(&pair, &["--chunk-rows", "20000", "--workers", "4"]);
        assert_eq!(
            code,
            0,
            "run {run}: {report:#}\n{stderr}\nsync log:\n{}",
            sync.log_text()
        );
        assert_eq!(report["differences_total"], 0, "run {run}: {report:#}");
        assert_eq!(report["point"]["mode"], "sidecar", "{report:#}");
        let history: u64 = report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "pgbench_history")
            .and_then(|t| t["blue_rows"].as_u64())
            .unwrap();
        assert!(
            history >= u64::try_from(before).unwrap(),
            "the point is after the run started: {history} < {before}"
        );
        let pause = report["point"]["pause_ms"]
            .as_f64()
            .expect("the pause is measured");
        pauses.push(pause);
        eprintln!(
            "verify run {run}: L = {}, pause {pause:.2} ms, {} history rows, {:.2}s",
            report["lsn"],
            history,
            started.elapsed().as_secs_f64()
        );
    }
    // A transaction left open on blue delays the creation of verify's slot past the time the
    // sidecar may stop green's commits: the sidecar lets them go after 2 s, and verify takes a
    // new point once the transaction ends — still zero differences.
    let mut long = Command::new(pair.blue.binaries().bin("psql"))
        .arg(pair.blue.uri("app"))
        .args([
            "-X",
            "-q",
            "-c",
            "INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 0); \
             SELECT pg_catalog.pg_sleep(5)",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("psql runs");
    std::thread::sleep(Duration::from_millis(500));
    let (code, report, stderr) = verify(&pair, &["--chunk-rows", "20000", "--workers", "4"]);
    assert!(long.wait().expect("psql ends").success());
    assert_eq!(
        code,
        0,
        "with a long transaction: {report:#}\n{stderr}\nsync log:\n{}",
        sync.log_text()
    );
    assert_eq!(report["differences_total"], 0, "{report:#}");
    assert!(
        sync.log_text().contains("not located in time"),
        "the sidecar let commits go while blue waited on the long transaction:\n{}",
        sync.log_text()
    );
    assert!(
        load.try_wait().unwrap().is_none(),
        "pgbench wrote during every verify run"
    );
    let _ = load.kill();
    let _ = load.wait();
    pauses.sort_by(f64::total_cmp);
    eprintln!("green's pauses (ms): {pauses:?}");
    // How each hold went, from the sidecar's side (armed, located, held, released).
    for line in sync
        .log_text()
        .lines()
        .filter(|l| l.contains("verify hold"))
    {
        eprintln!("{line}");
    }
    assert!(sync.running(), "sync kept running:\n{}", sync.log_text());
    assert!(sync.terminate(), "sync stops cleanly:\n{}", sync.log_text());
}

const SCHEMA: &str = r#"
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, doc text);
ALTER TABLE accounts ALTER COLUMN doc SET STORAGE EXTERNAL;
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
CREATE TABLE parted (id int NOT NULL, region text NOT NULL, v text, PRIMARY KEY (region, id))
    PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE seq_t (id serial PRIMARY KEY, v text);
CREATE TABLE "x; DROP TABLE y" ("Weird ""col""" int PRIMARY KEY, "ünï" text, f float8, ts timestamptz, iv interval, by bytea);
"#;

const DATA: &str = r#"
INSERT INTO accounts SELECT g, 'owner ' || g, g * 10, CASE WHEN g % 100 = 5 THEN repeat(md5(g::text), 200) END
  FROM generate_series(1, 1000) g;
INSERT INTO nokey SELECT g % 7, 'v' || (g % 7) FROM generate_series(1, 50) g;
INSERT INTO parted SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'p' || g FROM generate_series(1, 200) g;
INSERT INTO parent SELECT generate_series(1, 20);
INSERT INTO seq_t (v) SELECT 's' || g FROM generate_series(1, 5) g;
INSERT INTO child SELECT g, g % 20 + 1 FROM generate_series(1, 40) g;
INSERT INTO "x; DROP TABLE y" SELECT g, 'ü' || g, g / 3.0, '2024-01-01 00:00:00+02'::timestamptz + g * interval '1 hour',
  g * interval '1 day 3 seconds', decode(md5(g::text), 'hex') FROM generate_series(1, 300) g;
"#;

#[test]
fn injected_differences_are_found_with_keys_and_both_rows() {
    let pair = Pair::new("vinject");
    pair.schema(SCHEMA);
    pair.blue.psql("app", DATA).expect("data");
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    let mut sync = pair.sync(&["--workers", "2"]);
    pair.blue
        .psql("app", "UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0; DELETE FROM nokey WHERE a = 6")
        .expect("streamed changes");
    pair.converge(
        &[
            "accounts",
            "nokey",
            "parted",
            "parent",
            "child",
            r#""x; DROP TABLE y""#,
        ],
        Duration::from_secs(60),
    );
    assert!(sync.terminate(), "sync stops:\n{}", sync.log_text());

    // A quiet, caught-up pair: equal.
    let (code, report, stderr) = verify(&pair, &["--chunk-rows", "600"]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["point"]["mode"], "quiet");
    assert_eq!(report["differences_total"], 0);
    let run = report["run_id"].as_i64().unwrap();

    // Blue moves on while no sync runs: verify refuses rather than compare green at another point.
    pair.blue
        .psql("app", "UPDATE accounts SET owner = 'later' WHERE id = 1")
        .unwrap();
    let (code, _, stderr) = verify(&pair, &[]);
    assert_eq!(code, 3, "refused: {stderr}");
    assert!(stderr.contains("not caught up"), "{stderr}");
    // Catch up again; rows streamed into seq_t leave green's sequence behind blue's (sync does
    // not carry sequences: the backfill and the cutover copy them).
    let mut sync = pair.sync(&["--workers", "2"]);
    pair.blue
        .psql("app", "INSERT INTO seq_t (v) VALUES ('a'), ('b'), ('c')")
        .unwrap();
    pair.converge(&["accounts", "seq_t"], Duration::from_secs(60));
    assert!(sync.terminate());
    // What apply never checks: a NOT VALID check constraint (row 1000 has balance 10001) and an
    // index left invalid by a failed concurrent build (nokey has duplicates).
    pair.green
        .psql(
            "app",
            "ALTER TABLE accounts ADD CONSTRAINT small CHECK (balance < 10000) NOT VALID",
        )
        .unwrap();
    assert!(pair
        .green
        .psql(
            "app",
            "CREATE UNIQUE INDEX CONCURRENTLY nokey_a ON nokey (a)"
        )
        .is_err());

    pair.green
        .psql(
            "app",
            r#"
            UPDATE accounts SET owner = 'changed on green' WHERE id = 2;
            DELETE FROM accounts WHERE id = 3;
            INSERT INTO accounts VALUES (5000, 'only on green', 0, NULL);
            UPDATE accounts SET doc = overlay(doc placing 'X' from 3001 for 1) WHERE id = 105;
            INSERT INTO nokey VALUES (3, 'v3');
            INSERT INTO parted VALUES (7777, 'eu', 'only in parted_eu');
            SET session_replication_role = replica;
            INSERT INTO child VALUES (999, 12345);
            "#,
        )
        .expect("differences injected on green");
    let mut found = Vec::new();
    for workers in ["4", "1"] {
        let (code, report, stderr) = verify(&pair, &["--chunk-rows", "600", "--workers", workers]);
        assert_eq!(code, 1, "differences exit 1: {report:#}\n{stderr}");
        let diffs: BTreeSet<_> = differences(&report).into_iter().collect();
        found.push(diffs);
        assert!(report["run_id"].as_i64().unwrap() > run);
    }
    assert_eq!(
        found[0], found[1],
        "--workers 1 finds what --workers 4 finds"
    );
    let diffs = &found[0];
    let has = |table: &str, kind: &str, key: &str, check: &dyn Fn(&str, &str, &str) -> bool| {
        diffs
            .iter()
            .any(|(t, k, key_, b, g, d)| t == table && k == kind && key_ == key && check(b, g, d))
    };
    let t = r#""public"."accounts""#;
    assert!(
        has(t, "different", r#"["2"]"#, &|b, g, _| b.contains("owner 2")
            && g.contains("changed on green")),
        "{diffs:#?}"
    );
    assert!(
        has(t, "missing on green", r#"["3"]"#, &|b, g, _| b
            .contains("owner 3")
            && g.is_empty()),
        "{diffs:#?}"
    );
    assert!(
        has(t, "extra on green", r#"["5000"]"#, &|b, g, _| b.is_empty()
            && g.contains("only on green")),
        "{diffs:#?}"
    );
    assert!(
        has(t, "different", r#"["105"]"#, &|b, g, _| b.len() > 6000
            && g.len() > 6000
            && b != g),
        "one byte inside a TOASTed value"
    );
    assert!(
        has(r#""public"."nokey""#, "extra on green", "", &|b, g, d| b
            .contains("v3")
            && g.contains("v3")
            && d.contains("on green")),
        "a duplicate in a keyless table: {diffs:#?}"
    );
    assert!(
        has(
            r#""public"."parted_eu""#,
            "extra on green",
            r#"["7777","eu"]"#,
            &|_, g, _| g.contains("only in parted_eu")
        ),
        "a row in one partition: {diffs:#?}"
    );
    assert!(
        has(
            r#""public"."child""#,
            "constraint violated on green",
            r#"["12345"]"#,
            &|_, _, d| d.contains("child_parent_id_fkey")
        ),
        "a violated foreign key: {diffs:#?}"
    );
    let short: Vec<_> = diffs
        .iter()
        .map(|(t, k, key, _, _, d)| format!("{t} {k} {key} {d}"))
        .collect();
    assert!(
        has(
            r#""public"."child""#,
            "extra on green",
            r#"["999"]"#,
            &|_, g, _| g.contains("12345")
        ),
        "the row violating the foreign key is also extra on green: {short:#?}"
    );
    assert!(
        has(t, "constraint violated on green", "", &|_, g, d| g
            .contains("(1000,")
            && d.contains("\"small\"")),
        "a NOT VALID check constraint: {short:#?}"
    );
    assert!(
        has(
            r#""public"."nokey""#,
            "constraint violated on green",
            "",
            &|_, _, d| d.contains("\"nokey_a\" is invalid")
        ),
        "an invalid index: {short:#?}"
    );
    assert!(
        has(
            r#""public"."seq_t_id_seq""#,
            "sequence behind on green",
            "",
            &|b, g, _| b.contains("last_value 8") && g.contains("last_value 5")
        ),
        "a sequence behind: {short:#?}"
    );
    assert_eq!(diffs.len(), 11, "nothing else: {short:#?}");
    // Counts only: the tables whose counts differ.
    let (code, report, stderr) = verify(&pair, &["--counts", "--chunk-rows", "100000"]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let counted: BTreeSet<String> = differences(&report)
        .into_iter()
        .filter(|d| d.5.contains("rows on blue"))
        .map(|d| d.0)
        .collect();
    assert_eq!(
        counted,
        [
            r#""public"."child""#,
            r#""public"."nokey""#,
            r#""public"."parted_eu""#
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "accounts lost one row and gained one: equal counts"
    );

    // What cutover reads.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let green = pair.green.connect("app").await.unwrap();
        let last = blueshift_engine::verify::last_run(&green)
            .await
            .unwrap()
            .expect("a run is recorded");
        assert_eq!(last.outcome, "different");
        // The last run is the counts one: 3 counts, 3 constraints, 1 sequence.
        assert_eq!(last.differences, Some(7));
        assert!(last.lsn.is_some() && last.finished_at.is_some());
        let other = pair.blue.connect("app").await.unwrap();
        assert_eq!(
            blueshift_engine::verify::last_run(&other).await.unwrap(),
            None,
            "no record table: None"
        );
    });
}

#[test]
fn kill_9_then_resume_covers_every_chunk_once() {
    let pair = Pair::new("vresume");
    pair.schema("CREATE TABLE big (id int PRIMARY KEY, v text);");
    pair.blue
        .psql(
            "app",
            "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 40000) g",
        )
        .unwrap();
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let mut sync = pair.sync(&[]);
    pair.converge(&["big"], Duration::from_secs(60));
    assert!(sync.terminate());

    let mut cmd = Command::new(blueshift_binary());
    cmd.arg("verify")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--publication", "pub", "--slot", "bs"])
        .args(["--chunk-rows", "50", "--workers", "1"]);
    let mut first = pair.spawn_command("verify", cmd);
    let finished = |pair: &Pair| -> i64 {
        pair.green
            .psql(
                "app",
                "SELECT count(*) FROM blueshift.verify_chunk WHERE finished_at IS NOT NULL",
            )
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(finished(&pair) >= 30, "fewer than 30 chunks done");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", first.log_text()));
    first.kill9();
    let before_resume = finished(&pair);
    let planned: i64 = pair
        .green
        .psql("app", "SELECT count(*) FROM blueshift.verify_chunk")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        before_resume < planned,
        "killed mid-run ({before_resume} of {planned})"
    );
    let (code, report, stderr) = verify(&pair, &["--resume", "--workers", "2"]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["resumed"], true);
    let table = &report["tables"][0];
    assert_eq!(table["chunks_resumed"].as_i64().unwrap(), before_resume);
    assert_eq!(
        table["chunks"].as_i64().unwrap(),
        planned - before_resume,
        "only the rest"
    );
    assert_eq!(table["blue_rows"], 40000);
    let per_invocation = pair
        .green
        .psql(
            "app",
            "SELECT string_agg(invocation || ':' || n, ',' ORDER BY invocation) FROM \
             (SELECT invocation, count(*) n FROM blueshift.verify_chunk GROUP BY 1) s",
        )
        .unwrap();
    assert_eq!(
        per_invocation,
        format!("1:{before_resume},2:{}", planned - before_resume),
        "every chunk once"
    );
    let outcome = pair
        .green
        .psql(
            "app",
            "SELECT outcome || ' ' || invocations FROM blueshift.verify_run",
        )
        .unwrap();
    assert_eq!(outcome, "equal 2");

    // A difference deep inside one large chunk is bisected down to its key.
    pair.green
        .psql("app", "UPDATE big SET v = 'drift' WHERE id = 29999")
        .unwrap();
    let started = Instant::now();
    let (code, report, stderr) = verify(&pair, &["--chunk-rows", "40000"]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let diffs = differences(&report);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert_eq!(
        (diffs[0].1.as_str(), diffs[0].2.as_str()),
        ("different", r#"["29999"]"#)
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bisection halves the range each step"
    );
}

#[test]
fn blue_15_to_green_18_under_a_mapping_with_hostile_names() {
    let blue = PgBinaries::major(15).expect("PostgreSQL 15");
    let green = PgBinaries::major(18).expect("PostgreSQL 18");
    let pair = Pair::with("vcross", blue, green, &[]);
    let table = r#""we.ird"."Tab;le""#;
    pair.blue
        .psql(
            "app",
            &format!(
                r#"CREATE SCHEMA "we.ird";
                   CREATE TABLE {table} ("Id" int PRIMARY KEY, "old name" text, legacy text, amount int,
                       f float8, ts timestamptz, iv interval, j jsonb);
                   INSERT INTO {table} SELECT g, 'n' || g, 'gone', g, g / 7.0, '2020-02-29 12:00+05'::timestamptz + g * interval '1 min',
                       g * interval '1 mon 1 us', jsonb_build_object('k', g, 'a', array[g, g + 1])
                     FROM generate_series(1, 2000) g;
                   CREATE PUBLICATION pub FOR ALL TABLES;"#
            ),
        )
        .unwrap();
    pair.green
        .psql(
            "app",
            &format!(
                r#"CREATE SCHEMA "we.ird";
                   CREATE TABLE {table} ("Id" int PRIMARY KEY, "new name" text, amount bigint,
                       f float8, ts timestamptz, iv interval, j jsonb, added text DEFAULT 'green only');"#
            ),
        )
        .unwrap();
    let mapping: &[&str] = &[
        "--rename",
        r#""we.ird"."Tab;le":old name=new name"#,
        "--exclude",
        r#""we.ird"."Tab;le":legacy"#,
    ];
    let mut sync = pair.sync(mapping);
    pair.blue
        .psql(
            "app",
            &format!(
                r#"UPDATE {table} SET "old name" = 'streamed', legacy = 'x' WHERE "Id" <= 10"#
            ),
        )
        .unwrap();
    eventually(Duration::from_secs(60), || {
        let n = pair.green.psql(
            "app",
            &format!(r#"SELECT count(*) FROM {table} WHERE "new name" = 'streamed'"#),
        )?;
        anyhow::ensure!(n == "10", "not applied yet");
        Ok(())
    })
    .unwrap();
    let mut args = vec!["--chunk-rows", "500", "--sample", "20"];
    args.extend_from_slice(mapping);
    let (code, report, stderr) = verify(&pair, &args);
    assert_eq!(code, 0, "{report:#}\n{stderr}\n{}", sync.log_text());
    assert_eq!(report["sampled"], 20);
    assert_eq!(report["tables"][0]["blue_rows"], 2000);
    pair.green
        .psql(
            "app",
            &format!(r#"UPDATE {table} SET "new name" = 'drift' WHERE "Id" = 42"#),
        )
        .unwrap();
    let (code, report, stderr) = verify(&pair, &args);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    let diffs = differences(&report);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert_eq!(diffs[0].1, "different");
    assert_eq!(diffs[0].2, r#"["42"]"#);
    assert!(
        diffs[0].3.contains("n42") && diffs[0].4.contains("drift"),
        "{diffs:#?}"
    );
    assert!(sync.terminate());
}
