//! The reverse direction (green → blue), the real binary between real clusters: armed where
//! green equals blue (`arm_reverse`, idempotent), picked up by the running sidecar, green's
//! writes reach blue exactly once while blue's keep reaching green — across a `kill -9` of the
//! sidecar — and nothing bounces (the applied counters of both directions stop when the writers
//! stop). Disarmed (`disarm_reverse`), the sidecar lets go and forward sync goes on; a row whose
//! slot is gone is refused by arming and by sync. Blue 15 ⇄ green 18: the forward stream drops
//! the reverse appliers' transactions by their Origin message (15), the reverse stream asks the
//! server for `origin = none` (18); and 14 ⇄ 16 the same way.

#[path = "support/sync.rs"]
mod support;

#[path = "support/bidir.rs"]
mod bidir;

use std::time::Duration;

use bidir::{arm, counters_stop, disarm, two_way_under_load};
use blueshift_engine::sync::direction::DirectionError;
use blueshift_tests::{eventually, PgBinaries};
use support::Pair;

#[test]
fn greens_writes_reach_blue_exactly_once_and_nothing_bounces() {
    let pair = Pair::new("bidir-rev");
    let (mut sync, metrics) = two_way_under_load(&pair, false);
    let (forward, reverse) = counters_stop(&metrics, Duration::from_secs(3));
    assert!(
        reverse > 0.0,
        "the reverse direction applied green's writes"
    );
    assert!(forward > 0.0, "the forward direction applied blue's writes");
    assert_eq!(
        pair.blue
            .psql(
                "app",
                "SELECT string_agg(roname, ',' ORDER BY roname) FROM pg_replication_origin"
            )
            .unwrap(),
        "blueshift_bs_r0,blueshift_bs_r1",
        "the reverse appliers' origins on blue"
    );
    // blueshift's state on blue (the reverse slot's guard, its lag heartbeat) stays there.
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*) FROM blueshift.slot_guard WHERE slot = 'bs_reverse'"
            )
            .unwrap(),
        "0"
    );
    assert_eq!(
        pair.blue
            .psql(
                "app",
                "SELECT count(*) FROM blueshift.slot_guard WHERE slot = 'bs_reverse'"
            )
            .unwrap(),
        "1"
    );

    // `blueshift status` names both directions.
    let shown = status(&pair);
    assert_eq!(shown["direction"], "forward");
    let reverse = &shown["reverse"];
    assert_eq!(reverse["slot"], "bs_reverse", "{shown}");
    assert_eq!(reverse["slot_active"], true, "{shown}");
    assert_eq!(reverse["blue"]["origins"].as_array().map(Vec::len), Some(2));
    assert!(reverse["blue"]["durable_lsn"].is_string(), "{shown}");

    // Disarmed: the sidecar lets go of the slot and origins, forward sync goes on.
    let disarmed = disarm(&pair).expect("disarm_reverse");
    assert!(
        disarmed.row && disarmed.slot && disarmed.publication,
        "{disarmed:?}"
    );
    assert_eq!(disarmed.origins, 2);
    assert!(sync.running(), "forward sync goes on:\n{}", sync.log_text());
    assert!(status(&pair)["reverse"].is_null(), "disarmed");
    assert_eq!(
        disarm(&pair).expect("disarm again"),
        Default::default(),
        "idempotent"
    );
    pair.green
        .psql("app", "INSERT INTO t VALUES (-1, 'after disarm')")
        .unwrap();
    pair.blue
        .psql("app", "INSERT INTO t VALUES (-2, 'forward still')")
        .unwrap();
    eventually(Duration::from_secs(30), || {
        let n = pair
            .green
            .psql("app", "SELECT count(*) FROM t WHERE id = -2")?;
        anyhow::ensure!(n == "1", "blue's row not on green yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert_eq!(
        pair.blue
            .psql("app", "SELECT count(*) FROM t WHERE id = -1")
            .unwrap(),
        "0",
        "disarmed: green's writes no longer flow back"
    );
    pair.green
        .psql("app", "DELETE FROM t WHERE id = -1")
        .unwrap();

    // Armed again, then its slot lost: arming and sync both refuse, naming the fix.
    arm(&pair).expect("arm again");
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());
    pair.green
        .psql("app", "SELECT pg_drop_replication_slot('bs_reverse')")
        .unwrap();
    match arm(&pair) {
        Err(e @ DirectionError::SlotLost { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("\"bs_reverse\"") && text.contains("finalize"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut refused = pair.spawn("sync", &["--workers", "2"]);
    let code = refused.exit_code_within(Duration::from_secs(60));
    assert_ne!(code, 0);
    let log = refused.log_text();
    assert!(
        log.contains("bs_reverse") && log.contains("reverse direction"),
        "{log}"
    );

    // `blueshift cleanup` disarms the reverse direction first: nothing of it is left.
    let out = std::process::Command::new(blueshift_tests::blueshift_binary())
        .args(["cleanup", "--slot", "bs", "--publication", "pub", "--yes"])
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .output()
        .expect("cleanup runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the reverse direction"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT (SELECT count(*) FROM blueshift.reverse) || ' ' || \
                        (SELECT count(*) FROM pg_publication WHERE pubname = 'pub_reverse')"
            )
            .unwrap(),
        "0 0"
    );
    assert_eq!(
        pair.blue
            .psql(
                "app",
                "SELECT (SELECT count(*) FROM pg_replication_origin) || ' ' || \
                        (SELECT count(*) FROM blueshift.slot_guard WHERE slot = 'bs_reverse')"
            )
            .unwrap(),
        "0 0"
    );
}

/// `blueshift status --json` for slot `bs`.
fn status(pair: &Pair) -> serde_json::Value {
    let out = std::process::Command::new(blueshift_tests::blueshift_binary())
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

fn cross_version(name: &str, blue: u32, green: u32) {
    let pair = Pair::with(
        name,
        PgBinaries::major(blue).expect("blue's binaries"),
        PgBinaries::major(green).expect("green's binaries"),
        &[],
    );
    let (mut sync, metrics) = two_way_under_load(&pair, false);
    let (forward, reverse) = counters_stop(&metrics, Duration::from_secs(3));
    assert!(forward > 0.0 && reverse > 0.0);
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());
}

#[test]
fn blue_15_and_green_18_filter_on_the_client_and_on_the_server() {
    cross_version("bidir-15-18", 15, 18);
}

#[test]
fn blue_14_and_green_16() {
    cross_version("bidir-14-16", 14, 16);
}
