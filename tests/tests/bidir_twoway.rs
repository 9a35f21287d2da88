//! `blueshift sync --bidirectional`: the sidecar arms the reverse direction itself once the
//! forward one streams (after the backfill), then writers on both sides on disjoint keys converge
//! row for row — across a `kill -9` of the sidecar — and nothing bounces. A declared column
//! mapping cannot run backwards: two-way mode refuses it.

#[path = "support/sync.rs"]
mod support;

#[path = "support/bidir.rs"]
mod bidir;

use std::time::Duration;

use bidir::{counters_stop, two_way_under_load};
use support::Pair;

#[test]
fn writers_on_both_sides_converge_and_nothing_bounces() {
    let pair = Pair::two_way("bidir-twoway");
    let (mut sync, metrics) = two_way_under_load(&pair, true);
    let (forward, reverse) = counters_stop(&metrics, Duration::from_secs(3));
    assert!(forward > 0.0 && reverse > 0.0, "{forward} / {reverse}");
    let row = pair
        .green
        .psql(
            "app",
            "SELECT reverse_slot || ' ' || reverse_publication FROM blueshift.reverse WHERE slot = 'bs'",
        )
        .unwrap();
    assert_eq!(row, "bs_reverse pub_reverse");
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());

    // A table blue publishes after arming (here by FOR ALL TABLES) is not in the reverse
    // publication: green's writes to it would not reach blue, so sync refuses, naming the fix.
    pair.schema("CREATE TABLE extra (id bigint PRIMARY KEY)");
    let mut refused = pair.spawn("sync", &["--bidirectional"]);
    assert_ne!(refused.exit_code_within(Duration::from_secs(60)), 0);
    let log = refused.log_text();
    assert!(
        log.contains("\"public\".\"extra\"")
            && log.contains("ALTER PUBLICATION \"pub_reverse\" ADD TABLE"),
        "{log}"
    );
    pair.green
        .psql("app", "ALTER PUBLICATION pub_reverse ADD TABLE extra")
        .unwrap();
    let mut sync = pair.sync(&["--bidirectional"]);
    pair.green
        .psql("app", "INSERT INTO extra VALUES (7)")
        .unwrap();
    pair.converge(&["t", "keyless", "extra"], Duration::from_secs(60));
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());
}

#[test]
fn a_column_mapping_is_refused_in_two_way_mode() {
    let pair = Pair::two_way("bidir-mapping");
    pair.schema("CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL, legacy text)");
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let mut sync = pair.spawn("sync", &["--bidirectional", "--exclude", "public.t:legacy"]);
    let code = sync.exit_code_within(Duration::from_secs(60));
    assert_ne!(code, 0);
    let log = sync.log_text();
    assert!(
        log.contains("column mapping") && log.contains("cannot be applied backwards"),
        "{log}"
    );
}
