//! Sequences in two-way sync, the real binary between real clusters: preflight names the
//! sequences both sides would hand out the same values of; `--sequence-strategy interleave`
//! (odd/even) and `offset` (green far beyond blue) are applied once the reverse direction is
//! armed, after which both sides insert with their serials and nothing collides; a cutover and a
//! rollback keep each new writer's sequence beyond every value either side handed out;
//! disarming (as `blueshift finalize` does) puts the increments and bounds back.

#[path = "support/sync.rs"]
mod support;

#[path = "support/bidir.rs"]
mod bidir;

use std::time::Duration;

use bidir::disarm;
use blueshift_tests::{blueshift_binary, eventually, Cluster};
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
    cutover_and_back(&pair, &mut sync);
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());

    // Disarmed: the increments and bounds are back, the values handed out kept.
    let disarmed = disarm(&pair).expect("disarm");
    assert_eq!(disarmed.sequences, 1, "{disarmed:?}");
    for c in [&pair.blue, &pair.green] {
        assert_eq!(definition(c), "1 9223372036854775807");
    }
}

/// `blueshift <command>` (cutover, rollback) of the pair's sync, switching with a no-op command
/// (no PgBouncer: the test writes to each side directly) past the verify gate; its exit code
/// and log.
fn cutover_command(pair: &Pair, command: &str) {
    let mut cmd = std::process::Command::new(blueshift_binary());
    cmd.arg(command)
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--slot", "bs", "--publication", "pub"])
        .args(["--switch-command", "true", "--max-pause", "10"])
        .env("BLUESHIFT_SKIP_VERIFY", "1")
        .env("RUST_LOG", "info,blueshift_engine=debug");
    if command == "cutover" {
        cmd.args(["--watch", "1"]);
    }
    let mut run = pair.spawn_command(command, cmd);
    let code = run.exit_code_within(Duration::from_secs(120));
    assert_eq!(code, 0, "blueshift {command}:\n{}", run.log_text());
}

/// `last_value` of `public.s_id_seq` on `c`, and the largest id of `s` there.
fn handed_out(c: &Cluster) -> (i64, i64) {
    let text = c
        .psql(
            "app",
            "SELECT (SELECT last_value FROM s_id_seq) || ' ' || (SELECT max(id) FROM s)",
        )
        .expect("sequence");
    let (a, b) = text.split_once(' ').expect("two numbers");
    (a.parse().expect("last_value"), b.parse().expect("max"))
}

/// With the strategy in force: a cutover (green the writer) keeps green's sequence where the
/// strategy put it — never behind a value either side handed out — and a rollback (blue the
/// writer again) puts blue's past everything green handed out, lifting the offset strategy's
/// bound on blue; each side's inserts then collide with nothing, both ways.
fn cutover_and_back(pair: &Pair, sync: &mut Sync) {
    let before = handed_out(&pair.green);
    let blue_max = handed_out(&pair.blue).1;
    cutover_command(pair, "cutover");
    let (last, max) = handed_out(&pair.green);
    assert!(
        last >= max && last >= blue_max && last >= before.0,
        "green's sequence at {last} after the cutover, behind a value handed out (max id {max} \
         on green, {blue_max} on blue; {} before)",
        before.0
    );
    for i in 0..3 {
        pair.green
            .psql(
                "app",
                &format!("INSERT INTO s (side) VALUES ('after-cutover{i}')"),
            )
            .expect("green takes writes after the cutover");
    }
    pair.converge(&["s"], Duration::from_secs(60));

    cutover_command(pair, "rollback");
    let (last, _) = handed_out(&pair.blue);
    let green_max = handed_out(&pair.green).1;
    assert!(
        last >= green_max,
        "blue's sequence at {last} after the rollback, behind green's {green_max}"
    );
    for i in 0..3 {
        pair.blue
            .psql(
                "app",
                &format!("INSERT INTO s (side) VALUES ('after-rollback{i}')"),
            )
            .expect("blue takes writes after the rollback");
    }
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
            "33 33"
        );
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
