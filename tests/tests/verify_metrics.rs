//! Verify's metrics, the real binaries between two real clusters: a `blueshift verify
//! --metrics-addr` scraped while it runs shows `blueshift_verify_rows_total` and
//! `blueshift_verify_chunks_total` grow and `blueshift_verify_differences_total` count an
//! injected difference, exports none of the sync's series, and passes `promtool check
//! metrics`; the running sidecar exports the latest run from green's records —
//! `blueshift_verified_lsn` is the L of the latest equal run (it stays there after a run that
//! found a difference), `blueshift_verify_last_run_outcome` and `_differences` follow each run —
//! and `blueshift_source_lsn` is blue's position, at or past L. Progress: on a terminal (a
//! pty from `script`) a bar per table with rows and rows/s and a final summary; otherwise a log
//! line every 10 s.

#[path = "support/sync.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use blueshift_tests::{assert_promtool_accepts, blueshift_binary, eventually};
use serde_json::Value;
use support::Pair;

/// A plain HTTP/1.1 GET of `/metrics`: the body.
fn metrics_text(addr: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_owned())
}

/// The samples of an exposition, by `name{labels}`.
fn scrape(addr: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(metrics_text(addr)?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `X/Y` → the byte position.
fn lsn(text: &str) -> f64 {
    let (hi, lo) = text.split_once('/').expect("an LSN");
    let v = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    v as f64
}

/// `blueshift verify --format json --metrics-addr addr`, small chunks on one worker so that
/// the run lasts long enough to be scraped; stdout and stderr to files in `dir`.
fn spawn_verify(pair: &Pair, addr: &str, dir: &Path, name: &str) -> Child {
    Command::new(blueshift_binary())
        .arg("verify")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--publication", "pub", "--slot", "bs", "--format", "json"])
        .args(["--chunk-rows", "50", "--workers", "1"])
        .args(["--metrics-addr", addr])
        .env("RUST_LOG", "info,blueshift_engine=debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{name}.json"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .expect("blueshift verify starts")
}

/// Waits for `child`; (exit code, report, stderr).
fn finish(mut child: Child, dir: &Path, name: &str) -> (i32, Value, String) {
    let status = child.wait().expect("verify exits");
    let stdout = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    let stderr = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (status.code().expect("exited"), report, stderr)
}

#[test]
fn verify_counts_while_it_runs_and_the_sidecar_exports_the_latest_run() {
    let pair = Pair::new("vmetrics");
    pair.schema(
        "CREATE TABLE big (id int PRIMARY KEY, v text); \
         CREATE TABLE tick (id int PRIMARY KEY, at timestamptz DEFAULT now());",
    );
    pair.blue
        .psql(
            "app",
            "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 40000) g",
        )
        .unwrap();
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let sidecar = free_addr();
    let sync = pair.sync(&["--metrics-addr", &sidecar]);
    pair.converge(&["big"], Duration::from_secs(120));
    // Blue keeps committing, as in production: the sidecar reaches each verify's L with the next
    // commit instead of waiting for an idle walsender's keepalive (up to wal_sender_timeout/2).
    // No sequence: green's would be behind blue's until cutover copies it (a difference).
    let mut ticker = pair.background_on_blue(
        "DO $$ BEGIN FOR i IN 1..1500 LOOP INSERT INTO tick (id) VALUES (i); COMMIT; \
         PERFORM pg_sleep(0.2); END LOOP; END $$",
    );

    // No verify ran yet: no proof, no outcome; blue's position is known.
    let s = eventually(Duration::from_secs(30), || {
        let s = scrape(&sidecar)?;
        anyhow::ensure!(s["blueshift_source_lsn"] > 0.0, "{s:?}");
        Ok(s)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert_eq!(s["blueshift_verified_lsn"], 0.0);
    assert_eq!(s["blueshift_verify_last_run_timestamp_seconds"], 0.0);
    for outcome in ["running", "equal", "different", "failed"] {
        let key = format!("blueshift_verify_last_run_outcome{{outcome=\"{outcome}\"}}");
        assert_eq!(s[&key], 0.0, "{key}");
    }
    assert!(
        !s.keys()
            .any(|k| k.starts_with("blueshift_verify_rows_total")),
        "the sidecar does not compare rows"
    );

    // A run, scraped while it compares (800 chunks of 50 rows, one worker).
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let started = std::time::Instant::now();
    let child = spawn_verify(&pair, &addr, dir.path(), "first");
    let first = eventually(Duration::from_secs(150), || {
        let s = scrape(&addr)?;
        let rows = s["blueshift_verify_rows_total{side=\"blue\"}"];
        anyhow::ensure!(rows > 0.0, "nothing compared yet");
        Ok(s)
    })
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default();
        panic!("{e:#}\nverify:\n{log}\nsync:\n{}", sync.log_text())
    });
    let body = metrics_text(&addr).expect("still running");
    assert_promtool_accepts(&body);
    assert!(body.contains("blueshift_build_info{"), "{body}");
    for sync_only in [
        "blueshift_up",
        "blueshift_lag_seconds",
        "blueshift_connected",
    ] {
        assert!(
            !body.contains(&format!("\n{sync_only}")),
            "a verify process exports no {sync_only}:\n{body}"
        );
    }
    let later = eventually(Duration::from_secs(60), || {
        let s = scrape(&addr)?;
        anyhow::ensure!(
            s["blueshift_verify_chunks_total"] > first["blueshift_verify_chunks_total"],
            "no more chunks yet"
        );
        Ok(s)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let rows_blue = later["blueshift_verify_rows_total{side=\"blue\"}"];
    assert!(rows_blue > first["blueshift_verify_rows_total{side=\"blue\"}"]);
    assert!(rows_blue <= 40000.0);
    assert_eq!(
        later["blueshift_verify_rows_total{side=\"green\"}"], rows_blue,
        "equal tables: as many rows on each side"
    );
    assert_eq!(later["blueshift_verify_differences_total"], 0.0);
    let (code, report, stderr) = finish(child, dir.path(), "first");
    let took = started.elapsed();
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    // Not a terminal: a progress line every 10 s (when the run lasted that long).
    if took > Duration::from_secs(11) {
        assert!(
            stderr.contains("verify comparing: "),
            "no progress line in {took:?}:\n{stderr}"
        );
    }
    assert_eq!(report["tables"][0]["blue_rows"], 40000);
    let l1 = lsn(report["lsn"].as_str().expect("lsn"));

    // The sidecar reads the run from green: proven at L1.
    let s = eventually(Duration::from_secs(30), || {
        let s = scrape(&sidecar)?;
        anyhow::ensure!(s["blueshift_verified_lsn"] == l1, "{s:?}");
        Ok(s)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert_eq!(
        s["blueshift_verify_last_run_outcome{outcome=\"equal\"}"],
        1.0
    );
    assert_eq!(
        s["blueshift_verify_last_run_outcome{outcome=\"running\"}"],
        0.0
    );
    assert_eq!(s["blueshift_verify_last_run_differences"], 0.0);
    assert!(s["blueshift_verify_last_run_timestamp_seconds"] > 1.7e9);
    assert!(s["blueshift_source_lsn"] >= l1, "{s:?}");
    assert_promtool_accepts(&metrics_text(&sidecar).unwrap());

    // A row changed on green by hand: counted as the run finds it.
    pair.green
        .psql("app", "UPDATE big SET v = 'drift' WHERE id = 7")
        .unwrap();
    let child = spawn_verify(&pair, &addr, dir.path(), "second");
    eventually(Duration::from_secs(150), || {
        let s = scrape(&addr)?;
        anyhow::ensure!(s["blueshift_verify_differences_total"] == 1.0, "{s:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (code, report, stderr) = finish(child, dir.path(), "second");
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["differences_total"], 1);
    let s = eventually(Duration::from_secs(30), || {
        let s = scrape(&sidecar)?;
        anyhow::ensure!(
            s["blueshift_verify_last_run_outcome{outcome=\"different\"}"] == 1.0,
            "{s:?}"
        );
        Ok(s)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert_eq!(s["blueshift_verify_last_run_differences"], 1.0);
    assert_eq!(
        s["blueshift_verify_last_run_outcome{outcome=\"equal\"}"],
        0.0
    );
    assert_eq!(
        s["blueshift_verified_lsn"], l1,
        "the last proof is still the first run's"
    );
    let _ = ticker.kill();
    let _ = ticker.wait();
}

#[test]
fn on_a_terminal_verify_draws_a_bar_per_table() {
    let pair = Pair::new("vbars");
    pair.schema("CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (v text);");
    pair.blue
        .psql(
            "app",
            "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g; \
             INSERT INTO small SELECT 'x' FROM generate_series(1, 10); ANALYZE",
        )
        .unwrap();
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let mut sync = pair.sync(&[]);
    pair.converge(&["big", "small"], Duration::from_secs(120));
    assert!(sync.terminate());
    // Sync stopped, caught up: a quiet pair. `script` gives verify a pseudo-terminal.
    let command = format!(
        "{} verify --source '{}' --target '{}' --publication pub --slot bs \
         --chunk-rows 50 --workers 1",
        blueshift_binary().display(),
        pair.blue.uri("app"),
        pair.green.uri("app")
    );
    let out = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for needed in ["all tables", "big", "small", "rows/s", "chunks 1/1"] {
        assert!(
            text.contains(needed),
            "no {needed:?} on the terminal:\n{text}"
        );
    }
    // The overall bar ends with the summary line.
    assert!(
        text.contains("verify done: 20010 rows in "),
        "no final summary:\n{text}"
    );
}
