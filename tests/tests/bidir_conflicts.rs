//! Conflicts of two-way sync (`blueshift sync --bidirectional`), the real binary between real
//! clusters. Each conflict is made on purpose: the sidecar stops, blue and then green write the
//! same key (green's commit is the later one), the sidecar starts again and each direction
//! meets the other side's row. Each policy gives its documented result (both sides equal where
//! the policy promises it), every conflict is recorded once, with both rows, on the side that
//! detected it — across a crash in the middle of applying them — and `stop` names the row.
//! Two-way mode refuses to start without `track_commit_timestamp` on both sides.

#[path = "support/sync.rs"]
mod support;

#[path = "support/bidir.rs"]
mod bidir;

use std::time::Duration;

use bidir::{free_addr, scrape};
use blueshift_tests::{eventually, Cluster, PgBinaries};
use support::{Pair, Sync};

const SCHEMA: &str = "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL, u int UNIQUE);
     CREATE TABLE w (id bigint PRIMARY KEY, u int UNIQUE);";

/// Two-way sync running with `args` (and `--metrics-addr`), seeded, the reverse direction armed
/// and streaming; then stopped, so that the test can write on both sides unseen.
fn armed_then_stopped(pair: &Pair, args: &[&str]) {
    pair.schema(SCHEMA);
    pair.blue
        .psql(
            "app",
            "CREATE PUBLICATION pub FOR ALL TABLES;
             INSERT INTO t SELECT g, 'seed', g FROM generate_series(1, 10) g;
             INSERT INTO w VALUES (1, 10), (2, 20);",
        )
        .expect("blue");
    let mut sync = pair.sync(args);
    pair.converge(&["t", "w"], Duration::from_secs(60));
    eventually(Duration::from_secs(30), || {
        let active = pair.green.psql(
            "app",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bs_reverse' AND active",
        )?;
        anyhow::ensure!(active == "1", "the reverse slot is not streaming yet");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());
}

fn args<'a>(metrics: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--bidirectional",
        "--workers",
        "2",
        "--metrics-addr",
        metrics,
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs each statement as its own transaction, in order.
fn each(c: &Cluster, statements: &[&str]) {
    for sql in statements {
        c.psql("app", sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"));
    }
}

/// `kind resolution local? remote?` of every conflict recorded on `c`, sorted.
fn recorded(c: &Cluster) -> Vec<String> {
    let text = c
        .psql(
            "app",
            "SELECT coalesce(string_agg(relation || ' ' || kind || ' ' || resolution || ' ' || \
                     (local_row IS NOT NULL) || ' ' || (remote_row IS NOT NULL) || ' ' || \
                     (local_commit_ts IS NOT NULL), ',' ORDER BY relation, kind, id), '') \
               FROM blueshift.conflict WHERE slot = 'bs'",
        )
        .expect("blueshift.conflict");
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits until `c` recorded `n` conflicts.
fn wait_recorded(c: &Cluster, n: usize, sync: &Sync) {
    eventually(Duration::from_secs(60), || {
        let got = recorded(c);
        anyhow::ensure!(got.len() >= n, "{} of {n} conflicts: {got:?}", got.len());
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
}

/// `id:v` of `t`'s rows of ids 1, 2, 3 and 100 on `c`.
fn rows(c: &Cluster) -> String {
    c.psql(
        "app",
        "SELECT coalesce(string_agg(id || ':' || v, ' ' ORDER BY id), '') FROM t \
          WHERE id IN (1, 2, 3, 100)",
    )
    .expect("rows")
}

/// The same key written on both sides while the sidecar is down: blue first, then green.
fn same_keys_on_both_sides(pair: &Pair) {
    each(
        &pair.blue,
        &[
            "INSERT INTO t VALUES (100, 'blue', NULL)",
            "UPDATE t SET v = 'blue' WHERE id = 1",
            "UPDATE t SET v = 'blue' WHERE id = 2",
            "DELETE FROM t WHERE id = 3",
        ],
    );
    each(
        &pair.green,
        &[
            "INSERT INTO t VALUES (100, 'green', NULL)",
            "UPDATE t SET v = 'green' WHERE id = 1",
            "DELETE FROM t WHERE id = 2",
            "DELETE FROM t WHERE id = 3",
        ],
    );
}

/// last-writer-wins: green wrote last, so green's rows win on both sides; the delete of row 2
/// wins over blue's update of it; `w` (skip, its own policy) keeps each side's rows. Every
/// conflict is recorded once although the first run dies in the middle of applying them.
#[test]
fn last_writer_wins_converges_and_each_conflict_is_recorded_once_across_a_crash() {
    let pair = Pair::two_way("bidir-lww");
    let metrics = free_addr();
    let policy = args(
        &metrics,
        &[
            "--conflict-policy",
            "last-writer-wins",
            "--conflict-policy",
            "public.w=skip",
        ],
    );
    armed_then_stopped(&pair, &policy);
    same_keys_on_both_sides(&pair);
    // w: blue's row 7 collides with two of green's rows (key and u); rows 1 and 2 both take
    // u = 99.
    each(
        &pair.blue,
        &[
            "INSERT INTO w VALUES (7, 70)",
            "UPDATE w SET u = 99 WHERE id = 1",
        ],
    );
    each(
        &pair.green,
        &[
            "INSERT INTO w VALUES (7, 1)",
            "INSERT INTO w VALUES (8, 70)",
            "UPDATE w SET u = 99 WHERE id = 2",
        ],
    );

    // Killed at the first statement or COMMIT it sends, whichever direction gets there first.
    let mut crashed = pair.spawn_env(
        "sync",
        &policy,
        &[(
            "BLUESHIFT_FAILPOINTS",
            "between-statements=kill;commit-in-flight=kill",
        )],
    );
    let status = crashed.exited(Duration::from_secs(60));
    assert!(
        crashed.log_text().contains("failpoint reached"),
        "{status:?}\n{}",
        crashed.log_text()
    );
    let mut sync = pair.sync(&policy);
    wait_recorded(&pair.green, 6, &sync);
    wait_recorded(&pair.blue, 7, &sync);
    pair.converge(&["t"], Duration::from_secs(60));
    assert_eq!(rows(&pair.green), "1:green 100:green");
    assert_eq!(rows(&pair.blue), "1:green 100:green");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        recorded(&pair.green),
        [
            "public.t delete_missing keep_local false true false",
            "public.t insert_exists keep_local true true true",
            "public.t update_missing keep_local false true false",
            "public.t update_origin_differs keep_local true true true",
            "public.w multiple_unique_conflicts keep_local true true true",
            "public.w update_exists keep_local true true true",
        ],
        "on green, blue's changes: each once"
    );
    assert_eq!(
        recorded(&pair.blue),
        [
            "public.t delete_missing keep_local false true false",
            "public.t delete_origin_differs apply_remote true true true",
            "public.t insert_exists apply_remote true true true",
            "public.t update_origin_differs apply_remote true true true",
            "public.w insert_exists keep_local true true true",
            "public.w insert_exists keep_local true true true",
            "public.w update_exists keep_local true true true",
        ],
        "on blue, green's changes: each once"
    );
    // skip keeps each side's own rows.
    let w = |c: &Cluster| {
        c.psql(
            "app",
            "SELECT string_agg(id || ':' || coalesce(u::text, '-'), ' ' ORDER BY id) FROM w",
        )
        .unwrap()
    };
    assert_eq!(w(&pair.blue), "1:99 2:20 7:70");
    assert_eq!(w(&pair.green), "1:10 2:99 7:1 8:70");
    // Both rows as JSON, the commit timestamps in order, the remote LSN.
    let detail = pair
        .blue
        .psql(
            "app",
            "SELECT local_row->>'v', remote_row->>'v', remote_row->>'id', \
                    remote_commit_ts > local_commit_ts, remote_origin, local_origin, \
                    remote_lsn > '0/0', key::text \
               FROM blueshift.conflict WHERE kind = 'update_origin_differs'",
        )
        .unwrap();
    assert_eq!(detail, "blue|green|1|t|local|local|t|{\"id\": \"1\"}");
    let out = std::process::Command::new(blueshift_tests::blueshift_binary())
        .args(["conflicts", "--slot", "bs"])
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .output()
        .expect("blueshift conflicts runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("public.")).count(),
        13,
        "{text}"
    );
    assert!(
        text.contains("update_origin_differs")
            && text.contains("public.t")
            && text.contains("(id)=(1)"),
        "{text}"
    );
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());
}

/// blue-wins and green-wins: the named side's rows on both sides, whatever kind the conflict
/// (an update of a row the other side deleted puts the whole row back when the update wins).
fn side_wins(policy: &str, expected: &str, counts: &[(&str, &str)]) {
    let pair = Pair::two_way(&format!("bidir-{policy}"));
    let metrics = free_addr();
    let args = args(&metrics, &["--conflict-policy", policy]);
    armed_then_stopped(&pair, &args);
    same_keys_on_both_sides(&pair);
    let mut sync = pair.sync(&args);
    wait_recorded(&pair.green, 4, &sync);
    wait_recorded(&pair.blue, 4, &sync);
    pair.converge(&["t", "w"], Duration::from_secs(60));
    assert_eq!(rows(&pair.green), expected);
    assert_eq!(rows(&pair.blue), expected);
    let samples = scrape(&metrics).expect("metrics");
    for (series, value) in counts {
        assert_eq!(
            samples
                .get(&format!("blueshift_conflicts_total{{{series}}}"))
                .copied(),
            Some(value.parse::<f64>().unwrap()),
            "{series}: {samples:?}"
        );
    }
    assert!(sync.terminate(), "clean stop:\n{}", sync.log_text());
}

#[test]
fn blue_wins_on_both_sides() {
    side_wins(
        "blue-wins",
        "1:blue 2:blue 100:blue",
        &[
            (
                "direction=\"forward\",kind=\"insert_exists\",resolution=\"apply_remote\"",
                "1",
            ),
            (
                "direction=\"forward\",kind=\"update_missing\",resolution=\"apply_remote\"",
                "1",
            ),
            (
                "direction=\"reverse\",kind=\"update_origin_differs\",resolution=\"keep_local\"",
                "1",
            ),
            (
                "direction=\"reverse\",kind=\"delete_origin_differs\",resolution=\"keep_local\"",
                "1",
            ),
        ],
    );
}

#[test]
fn green_wins_on_both_sides() {
    side_wins(
        "green-wins",
        "1:green 100:green",
        &[
            (
                "direction=\"forward\",kind=\"insert_exists\",resolution=\"keep_local\"",
                "1",
            ),
            (
                "direction=\"forward\",kind=\"update_missing\",resolution=\"keep_local\"",
                "1",
            ),
            (
                "direction=\"reverse\",kind=\"insert_exists\",resolution=\"apply_remote\"",
                "1",
            ),
            (
                "direction=\"forward\",kind=\"delete_missing\",resolution=\"keep_local\"",
                "1",
            ),
        ],
    );
}

/// The default, stop: sync exits with the data-stop code, naming the table, the row's key, the
/// kind and the fix; nothing of the transaction is applied.
#[test]
fn stop_names_the_row_and_the_fix() {
    let pair = Pair::two_way("bidir-stop");
    let metrics = free_addr();
    let args = args(&metrics, &[]);
    armed_then_stopped(&pair, &args);
    each(&pair.blue, &["INSERT INTO t VALUES (100, 'blue', NULL)"]);
    each(&pair.green, &["INSERT INTO t VALUES (100, 'green', NULL)"]);
    let mut sync = pair.spawn("sync", &args);
    let code = sync.exit_code_within(Duration::from_secs(60));
    let log = sync.log_text();
    assert_eq!(code, 5, "{log}");
    assert!(
        log.contains("conflict insert_exists on table \"public.t\", row (id)=(100)")
            && log.contains("--conflict-policy"),
        "{log}"
    );
    assert_eq!(
        pair.green
            .psql("app", "SELECT v FROM t WHERE id = 100")
            .unwrap(),
        "green"
    );
    assert_eq!(
        pair.blue
            .psql("app", "SELECT v FROM t WHERE id = 100")
            .unwrap(),
        "blue"
    );
}

/// last-writer-wins and a collision between two different rows (each side gave another row the
/// same unique value): the winner's side would delete the loser's row and the loser's side keep
/// its change, so the sides would differ — sync stops instead, naming the row and the fix, and
/// applies nothing of it.
#[test]
fn last_writer_wins_refuses_a_collision_between_different_rows() {
    let pair = Pair::two_way("bidir-lww-rows");
    let metrics = free_addr();
    let args = args(&metrics, &["--conflict-policy", "last-writer-wins"]);
    armed_then_stopped(&pair, &args);
    each(&pair.blue, &["UPDATE w SET u = 99 WHERE id = 1"]);
    each(&pair.green, &["UPDATE w SET u = 99 WHERE id = 2"]);
    let mut sync = pair.spawn("sync", &args);
    let code = sync.exit_code_within(Duration::from_secs(60));
    let log = sync.log_text();
    assert_eq!(code, 5, "{log}");
    assert!(
        log.contains("conflict update_exists on table \"public.w\", row (id)=(")
            && log.contains("last-writer-wins cannot make both sides converge")
            && log.contains("skip keeps each side's rows"),
        "{log}"
    );
    let w = |c: &Cluster| {
        c.psql(
            "app",
            "SELECT string_agg(id || ':' || u, ' ' ORDER BY id) FROM w",
        )
        .unwrap()
    };
    assert_eq!(w(&pair.blue), "1:99 2:20");
    assert_eq!(w(&pair.green), "1:10 2:99");
}

/// Two-way mode without track_commit_timestamp on green: refused at start, with the fix.
#[test]
fn two_way_mode_needs_commit_timestamps_on_both_sides() {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let pair = Pair::with_settings(
        "bidir-nots",
        bins.clone(),
        bins,
        &[("track_commit_timestamp", "on")],
        &[],
    );
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let mut sync = pair.spawn("sync", &["--bidirectional"]);
    let code = sync.exit_code_within(Duration::from_secs(60));
    let log = sync.log_text();
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("track_commit_timestamp = on")
            && log.contains("off on green")
            && log.contains("ALTER SYSTEM SET track_commit_timestamp = on on green"),
        "{log}"
    );
}
