//! Sequences in two-way sync, the real binary between real clusters: preflight names the
//! sequences both sides would hand out the same values of; `--sequence-strategy interleave`
//! (odd/even) and `offset` (green far beyond blue) are applied once the reverse direction is
//! armed, after which both sides insert with their serials and nothing collides; disarming (as
//! `blueshift finalize` does) puts the increments and bounds back.

#[path = "support/sync.rs"]
mod support;

#[path = "support/bidir.rs"]
mod bidir;

use std::time::Duration;

use bidir::disarm;
use blueshift_tests::{eventually, Cluster};
use support::{Pair, Sync};

/// `increment_by max_value` of `public.s_id_seq` on `c`.
fn definition(c: &Cluster) -> String {
    c.psql(
        "app",
        "SELECT increment_by || ' ' || max_value FROM pg_sequences WHERE sequencename = 's_id_seq'",
    )
    .expect("pg_sequences")
}

fn wait_log(sync: &Sync, text: &str) {
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(sync.log_text().contains(text), "no \"{text}\" yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
}

/// Both sides insert `n` rows each with their own serial values.
fn insert_on_both(pair: &Pair, n: u32) {
    for i in 0..n {
        for (c, side) in [(&pair.blue, "blue"), (&pair.green, "green")] {
            c.psql("app", &format!("INSERT INTO s (side) VALUES ('{side}{i}')"))
                .expect("insert");
        }
    }
}

fn strategy(name: &str, check: impl Fn(&Pair)) {
    let pair = Pair::two_way(&format!("bidir-seq-{name}"));
    pair.schema("CREATE TABLE s (id bigserial PRIMARY KEY, side text NOT NULL)");
    pair.blue
        .psql(
            "app",
            "CREATE PUBLICATION pub FOR ALL TABLES;
             INSERT INTO s (side) SELECT 'seed' FROM generate_series(1, 5);",
        )
        .unwrap();
    // Without a strategy: named, left alone.
    let mut sync = pair.sync(&["--bidirectional"]);
    wait_log(&sync, "two-way sync: the reverse direction is armed");
    let log = sync.log_text();
    assert!(
        log.contains("would hand out the same values of these sequences")
            && log.contains("\"public\".\"s_id_seq\"")
            && log.contains("--sequence-strategy"),
        "{log}"
    );
    assert_eq!(definition(&pair.green), "1 9223372036854775807");
    pair.converge(&["s"], Duration::from_secs(60));
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());

    // With it: applied once the reverse direction is armed (here: found armed at start).
    let mut sync = pair.sync(&["--bidirectional", "--sequence-strategy", name]);
    wait_log(&sync, "the sequences of both sides no longer overlap");
    check(&pair);
    insert_on_both(&pair, 10);
    pair.converge(&["s"], Duration::from_secs(60));
    assert!(
        sync.running(),
        "no conflict stopped sync:\n{}",
        sync.log_text()
    );
    for c in [&pair.blue, &pair.green] {
        assert_eq!(
            c.psql("app", "SELECT count(*) || ' ' || count(DISTINCT id) FROM s")
                .unwrap(),
            "27 27"
        );
    }
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*) FROM blueshift.sequence_strategy WHERE applied"
            )
            .unwrap(),
        "2"
    );
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());

    // Disarmed: the increments and bounds are back, the values handed out kept.
    let disarmed = disarm(&pair).expect("disarm");
    assert_eq!(disarmed.sequences, 1, "{disarmed:?}");
    for c in [&pair.blue, &pair.green] {
        assert_eq!(definition(c), "1 9223372036854775807");
    }
}

#[test]
fn interleave_gives_blue_and_green_alternate_values() {
    strategy("interleave", |pair| {
        assert_eq!(definition(&pair.blue), "2 9223372036854775807");
        assert_eq!(definition(&pair.green), "2 9223372036854775807");
        // The rows each side inserts from now on: one parity on blue, the other on green.
        insert_on_both(pair, 1);
        let parity = |c: &Cluster, side: &str| {
            c.psql(
                "app",
                &format!("SELECT id % 2 FROM s WHERE side = '{side}0'"),
            )
            .unwrap()
        };
        assert_ne!(parity(&pair.blue, "blue"), parity(&pair.green, "green"));
    });
}

#[test]
fn offset_puts_green_far_beyond_blue() {
    strategy("offset", |pair| {
        let half = (i64::MAX - 5) / 2 + 5;
        assert_eq!(
            definition(&pair.blue),
            format!("1 {}", half - 1),
            "blue bounded below green's start"
        );
        assert_eq!(definition(&pair.green), "1 9223372036854775807");
        insert_on_both(pair, 1);
        assert_eq!(
            pair.green
                .psql("app", "SELECT id FROM s WHERE side = 'green0'")
                .unwrap(),
            half.to_string()
        );
    });
}
