//! Honest metrics and health, the real binary: `blueshift_lag_seconds` rises while green is
//! stopped and falls back once it returns; `/readyz` follows; `blueshift_connected`,
//! `blueshift_up`, `blueshift_build_info`; `promtool check metrics` accepts the live endpoint;
//! `blueshift status` computes the lag in seconds the same way, and it grows while sync is
//! stopped.

#[path = "support/sync.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use blueshift_tests::{assert_promtool_accepts, blueshift_binary, eventually};
use support::Pair;

/// A plain HTTP/1.1 GET: (status code, body).
fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    let code = head
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status"))?
        .parse()?;
    Ok((code, body.to_owned()))
}

/// The samples of an exposition, by `name{labels}`.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let (code, body) = get(addr, "/metrics")?;
    anyhow::ensure!(code == 200, "{code}: {body}");
    Ok(samples(&body))
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `blueshift status --json` for slot `bs`.
fn status(pair: &Pair) -> serde_json::Value {
    let out = Command::new(blueshift_binary())
        .args(["status", "--json", "--slot", "bs"])
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .output()
        .expect("status runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn lag_rises_while_green_is_stopped_and_health_follows() {
    let mut pair = Pair::new("lagmetric");
    pair.schema("CREATE TABLE t (id int PRIMARY KEY, v text)");
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let addr = free_addr();
    let mut sync = pair.sync(&["--metrics-addr", &addr, "--ready-max-lag", "30"]);
    pair.blue
        .psql(
            "app",
            "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g",
        )
        .unwrap();
    pair.converge(&["t"], Duration::from_secs(60));

    // Streaming and caught up: ready, both sides connected, lag near 0.
    eventually(Duration::from_secs(60), || {
        let (code, body) = get(&addr, "/readyz")?;
        anyhow::ensure!(code == 200, "{code}: {body}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    let (code, _) = get(&addr, "/healthz").unwrap();
    assert_eq!(code, 200);
    let s = scrape(&addr).unwrap();
    assert_eq!(s["blueshift_up"], 1.0);
    assert_eq!(s["blueshift_connected{side=\"blue\"}"], 1.0);
    assert_eq!(s["blueshift_connected{side=\"green\"}"], 1.0);
    assert!(s["blueshift_lag_seconds"] < 30.0, "{s:?}");
    let build = s
        .keys()
        .find(|k| k.starts_with("blueshift_build_info{"))
        .expect("build info")
        .clone();
    assert!(build.contains("version=\"0.1.0\""), "{build}");
    assert!(build.contains("commit=\""), "{build}");
    assert!(s["blueshift_apply_latency_seconds_bucket{le=\"+Inf\"}"] >= 1.0);

    // promtool accepts the live exposition.
    let (_, body) = get(&addr, "/metrics").unwrap();
    assert_promtool_accepts(&body);

    // Green stops while blue commits: the lag grows at every scrape, ready turns 503.
    pair.green.stop().expect("green stops");
    pair.blue
        .psql("app", "INSERT INTO t VALUES (1000, 'while green is down')")
        .unwrap();
    let first = eventually(Duration::from_secs(60), || {
        let lag = scrape(&addr)?["blueshift_lag_seconds"];
        anyhow::ensure!(lag >= 2.0, "lag {lag}");
        Ok(lag)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    eventually(Duration::from_secs(30), || {
        let lag = scrape(&addr)?["blueshift_lag_seconds"];
        anyhow::ensure!(lag >= first + 1.0, "lag {lag} after {first}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    eventually(Duration::from_secs(60), || {
        let s = scrape(&addr)?;
        anyhow::ensure!(s["blueshift_connected{side=\"green\"}"] == 0.0, "{s:?}");
        let (code, body) = get(&addr, "/readyz")?;
        anyhow::ensure!(code == 503, "{code}: {body}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));

    // Green is back: sync catches up, the lag falls, ready again.
    pair.green.start_again().expect("green starts");
    pair.converge(&["t"], Duration::from_secs(120));
    eventually(Duration::from_secs(120), || {
        let lag = scrape(&addr)?["blueshift_lag_seconds"];
        anyhow::ensure!(lag < 5.0, "lag {lag}");
        let (code, body) = get(&addr, "/readyz")?;
        anyhow::ensure!(code == 200, "{code}: {body}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));

    // `status` computes the lag the same way: 0 while sync runs caught up...
    eventually(Duration::from_secs(30), || {
        let v = status(&pair);
        anyhow::ensure!(v["sync_recording"] == true, "{v}");
        let lag = v["lag_seconds"].as_f64().unwrap_or(f64::NAN);
        anyhow::ensure!(lag < 5.0, "{v}");
        Ok(())
    })
    .unwrap();
    // ...and growing once sync is stopped: nothing reaches green any more.
    assert!(sync.terminate(), "SIGTERM exits 0:\n{}", sync.log_text());
    pair.blue
        .psql("app", "INSERT INTO t VALUES (2000, 'after')")
        .unwrap();
    let first = eventually(Duration::from_secs(60), || {
        let v = status(&pair);
        anyhow::ensure!(v["sync_recording"] == false, "{v}");
        let lag = v["lag_seconds"].as_f64().unwrap_or(0.0);
        anyhow::ensure!(lag > 5.0, "{v}");
        Ok(lag)
    })
    .unwrap();
    eventually(Duration::from_secs(30), || {
        let lag = status(&pair)["lag_seconds"].as_f64().unwrap_or(0.0);
        anyhow::ensure!(lag >= first + 1.0, "lag {lag} after {first}");
        Ok(())
    })
    .unwrap();
}
