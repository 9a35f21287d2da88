//! Shared by the `bidir_*` tests: arming and disarming the reverse direction through the
//! engine's API, writers on either side, the per-direction metrics.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_engine::sync::direction::{self, DirectionError, Disarmed, Reverse};
use blueshift_tests::{eventually, Cluster};

use crate::support::{Pair, Sync};

/// Two tables: `t` (a key, updated and deleted) and `keyless` (insert-only, no key: a change
/// applied twice shows as a duplicate).
pub(crate) const SCHEMA: &str = "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
     CREATE TABLE keyless (n bigint NOT NULL, side text NOT NULL);";

fn config(c: &Cluster) -> ConnectConfig {
    ConnectConfig::from_conninfo_with_env(&c.uri("app"), |_| None).expect("conninfo")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `arm_reverse` for slot `bs` and publication `pub`.
pub(crate) fn arm(pair: &Pair) -> Result<Reverse, DirectionError> {
    runtime().block_on(direction::arm_reverse(
        &config(&pair.blue),
        &config(&pair.green),
        "bs",
        "pub",
    ))
}

/// `disarm_reverse` for slot `bs` and publication `pub`.
pub(crate) fn disarm(pair: &Pair) -> Result<Disarmed, DirectionError> {
    runtime().block_on(direction::disarm_reverse(
        &config(&pair.blue),
        &config(&pair.green),
        "bs",
        "pub",
    ))
}

/// A `psql` committing `count` transactions on `c`, each inserting row `base + i` into `t` and
/// `keyless`, updating the row three back and deleting the one seven back every fifth time;
/// `pause` seconds between transactions.
pub(crate) fn writer(c: &Cluster, side: &str, base: i64, count: u32, pause: f64) -> Child {
    let sql = format!(
        "DO $$ BEGIN FOR i IN 1..{count} LOOP
           INSERT INTO t VALUES ({base} + i, '{side}' || i);
           INSERT INTO keyless VALUES ({base} + i, '{side}');
           UPDATE t SET v = v || '+' WHERE id = {base} + i - 3;
           IF i % 5 = 0 THEN DELETE FROM t WHERE id = {base} + i - 7; END IF;
           COMMIT;
           PERFORM pg_sleep({pause});
         END LOOP; END $$"
    );
    Command::new(c.binaries().bin("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            &c.uri("app"),
            "-c",
            &sql,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("psql writer")
}

/// Waits for a writer; panics unless it succeeded.
pub(crate) fn finish(mut writer: Child) {
    let status = writer.wait().expect("writer");
    assert!(status.success(), "a writer failed: {status:?}");
}

/// A free loopback address for `--metrics-addr`.
pub(crate) fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("127.0.0.1:{port}")
}

/// The samples of `/metrics`, by `name{labels}`.
pub(crate) fn scrape(addr: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (_, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

/// Applied transactions (forward, reverse).
pub(crate) fn applied(addr: &str) -> anyhow::Result<(f64, f64)> {
    let s = scrape(addr)?;
    let get = |d: &str| {
        s.get(&format!(
            "blueshift_direction_applied_transactions_total{{direction=\"{d}\"}}"
        ))
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no {d} series yet"))
    };
    Ok((get("forward")?, get("reverse")?))
}

/// No loop: once writers stopped, the applied counters of both directions stop moving (read
/// over `quiet` after they first agree twice in a row).
pub(crate) fn counters_stop(addr: &str, quiet: Duration) -> (f64, f64) {
    let settled = eventually(Duration::from_secs(60), || {
        let a = applied(addr)?;
        std::thread::sleep(Duration::from_secs(2));
        let b = applied(addr)?;
        anyhow::ensure!(a == b, "still moving: {a:?} → {b:?}");
        Ok(b)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    std::thread::sleep(quiet);
    let later = applied(addr).expect("metrics");
    assert_eq!(
        settled, later,
        "the applied counters moved with no writer: a change bounces between blue and green"
    );
    later
}

/// Rows of `keyless` by side, on `c`: (count, distinct) — equal when nothing was applied twice.
pub(crate) fn keyless(c: &Cluster, side: &str) -> (i64, i64) {
    let text = c
        .psql(
            "app",
            &format!(
                "SELECT count(*) || ' ' || count(DISTINCT n) FROM keyless WHERE side = '{side}'"
            ),
        )
        .expect("keyless");
    let (a, b) = text.split_once(' ').expect("two numbers");
    (a.parse().expect("count"), b.parse().expect("distinct"))
}

/// Both directions under load on disjoint keys, a `kill -9` in the middle; returns the sidecar
/// (running, both directions caught up) and its metrics address. The reverse direction is armed
/// through `arm_reverse` (as the cutover does), or by the sidecar itself with `--bidirectional`.
pub(crate) fn two_way_under_load(pair: &Pair, bidirectional: bool) -> (Sync, String) {
    pair.schema(SCHEMA);
    pair.blue
        .psql(
            "app",
            "CREATE PUBLICATION pub FOR ALL TABLES;
             INSERT INTO t SELECT g, 'seed' FROM generate_series(1, 100) g;",
        )
        .expect("blue");
    let metrics = free_addr();
    let mut args = vec!["--workers", "2", "--metrics-addr", metrics.as_str()];
    if bidirectional {
        args.push("--bidirectional");
    }
    let mut sync = pair.sync(&args);
    pair.converge(&["t", "keyless"], Duration::from_secs(60));

    if bidirectional {
        eventually(Duration::from_secs(30), || {
            anyhow::ensure!(
                sync.log_text()
                    .contains("two-way sync: the reverse direction is armed"),
                "not armed yet"
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    } else {
        // Green equals blue here: arm, twice (the second is a no-op).
        let armed = arm(pair).expect("arm_reverse");
        assert_eq!(armed.slot, "bs");
        assert_eq!(armed.reverse_slot, "bs_reverse");
        assert_eq!(armed.reverse_publication, "pub_reverse");
        assert_eq!(arm(pair).expect("arm_reverse again"), armed, "idempotent");
        assert_eq!(
            pair.green
                .psql(
                    "app",
                    "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables \
                      WHERE pubname = 'pub_reverse'"
                )
                .unwrap(),
            "keyless,t",
            "the forward publication's tables, blueshift's own left out"
        );
    }
    // The sidecar picks the row up by itself.
    eventually(Duration::from_secs(30), || {
        let active = pair.green.psql(
            "app",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bs_reverse' AND active",
        )?;
        anyhow::ensure!(active == "1", "the reverse slot is not streaming yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));

    let green_writer = writer(&pair.green, "green", 1_000_000, 400, 0.005);
    let blue_writer = writer(&pair.blue, "blue", 2_000_000, 400, 0.005);
    // Some of green's writes are on blue: kill the sidecar under load, then start it again.
    eventually(Duration::from_secs(60), || {
        let n: i64 = pair
            .blue
            .psql("app", "SELECT count(*) FROM keyless WHERE side = 'green'")?
            .parse()?;
        anyhow::ensure!(n >= 50, "{n} of green's rows on blue");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    sync.kill9();
    let sync = pair.sync(&args);
    finish(green_writer);
    finish(blue_writer);
    pair.converge(&["t", "keyless"], Duration::from_secs(120));
    for cluster in [&pair.blue, &pair.green] {
        for side in ["green", "blue"] {
            assert_eq!(
                keyless(cluster, side),
                (400, 400),
                "every {side} transaction once, on both sides"
            );
        }
    }
    // The writers may have been applied before the kill: one write on each side now (disjoint
    // seed rows), so that each direction of this process has applied something its counters
    // show.
    pair.blue
        .psql("app", "UPDATE t SET v = v || ' after restart' WHERE id = 1")
        .expect("blue");
    pair.green
        .psql("app", "UPDATE t SET v = v || ' after restart' WHERE id = 2")
        .expect("green");
    pair.converge(&["t", "keyless"], Duration::from_secs(60));
    (sync, metrics)
}
