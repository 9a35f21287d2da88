//! The spool (`engine::sync::spool`): green down while blue takes writes, the real binary keeps
//! reading blue into its spool and applies it once green is back — exactly once, the slot never
//! acknowledged past green's durable position, across kill -9 of blueshift; a spool green
//! already holds is discarded, a corrupt one stops sync naming the file, a full one makes
//! reading wait.

#[path = "support/sync.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use blueshift_tests::{eventually, PgBinaries};
use support::{Pair, Sync};

const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE events (n int, what text);
";

/// Blue with a short `wal_sender_timeout`: a spooling stream that stopped answering would be
/// ended by blue within seconds.
fn pair(name: &str) -> Pair {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let pair = Pair::with(name, bins.clone(), bins, &[("wal_sender_timeout", "3s")]);
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    pair
}

/// The spool file under `spill_dir`, once there is one.
fn spool_file(spill_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(spill_dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "spool"))
        .map(|folder| folder.join("spool.bin"))
        .filter(|f| f.exists())
}

fn spool_len(spill_dir: &Path) -> u64 {
    spool_file(spill_dir)
        .and_then(|f| std::fs::metadata(f).ok())
        .map_or(0, |m| m.len())
}

fn sync_with(pair: &Pair, spill_dir: &Path, extra: &[&str]) -> Sync {
    let mut args = vec!["--workers", "2", "--spill-dir", spill_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    pair.sync(&args)
}

/// Blue's writes during the outage: `n` transactions, each an insert into the keyless
/// `events` (a duplicate would show) and an update of a hot row.
fn write_on_blue(pair: &Pair, from: i32, n: i32) {
    pair.blue
        .psql(
            "app",
            &format!(
                "DO $$ BEGIN FOR i IN {from}..{} LOOP
                   INSERT INTO events VALUES (i, 'e');
                   INSERT INTO accounts VALUES (i, i, 'x') ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1;
                   UPDATE accounts SET balance = balance + 1 WHERE id = 1;
                   COMMIT;
                 END LOOP; END $$",
                from + n - 1
            ),
        )
        .expect("writes on blue");
}

/// The slot's confirmed position and whether it is active, as an `pg_lsn` text and a bool.
fn slot_state(pair: &Pair) -> (String, String) {
    let row = pair
        .blue
        .psql(
            "app",
            "SELECT confirmed_flush_lsn, active_pid FROM pg_replication_slots WHERE slot_name = 'bs'",
        )
        .expect("slot");
    let (lsn, pid) = row.split_once('|').expect("two columns");
    (lsn.to_owned(), pid.to_owned())
}

fn lsn_le(pair: &Pair, a: &str, b: &str) -> bool {
    pair.blue
        .psql("app", &format!("SELECT '{a}'::pg_lsn <= '{b}'::pg_lsn"))
        .expect("compare")
        == "t"
}

fn assert_exactly_once(pair: &Pair, n: i32) {
    pair.converge(&["accounts", "events"], Duration::from_secs(120));
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*), count(DISTINCT n) FROM events")
            .unwrap(),
        format!("{n}|{n}"),
        "every transaction exactly once"
    );
}

#[test]
fn green_down_spools_blue_and_applies_it_once_green_is_back() {
    let mut pair = pair("spoolout");
    let spill = tempfile::tempdir().unwrap();
    let mut sync = sync_with(&pair, spill.path(), &[]);
    write_on_blue(&pair, 1, 200);
    pair.converge(&["accounts", "events"], Duration::from_secs(60));

    pair.green.crash().expect("green stops (immediate)");
    write_on_blue(&pair, 201, 1500);
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(sync.running(), "sync exited:\n{}", sync.log_text());
        anyhow::ensure!(
            sync.log_text().contains("spooling blue's stream"),
            "not spooling yet"
        );
        anyhow::ensure!(spool_len(spill.path()) > 100_000, "the spool is small");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    // The outage goes on well past blue's wal_sender_timeout: the stream stays up, and the slot
    // is not acknowledged past what green held.
    let (confirmed, walsender) = slot_state(&pair);
    assert_ne!(walsender, "", "the spool's stream holds the slot");
    let grown = spool_len(spill.path());
    write_on_blue(&pair, 1701, 300);
    eventually(Duration::from_secs(30), || {
        anyhow::ensure!(spool_len(spill.path()) > grown, "the spool did not grow");
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let (still, walsender_after) = slot_state(&pair);
    assert_eq!(still, confirmed, "nothing acknowledged while green is down");
    assert_eq!(
        walsender_after, walsender,
        "the same walsender: keepalives kept it alive past wal_sender_timeout"
    );

    pair.green.start_again().expect("green is back");
    assert_exactly_once(&pair, 2000);
    let guard = pair
        .green
        .psql(
            "app",
            "SELECT acknowledged FROM blueshift.slot_guard WHERE slot = 'bs'",
        )
        .unwrap();
    assert!(
        lsn_le(&pair, &confirmed, &guard),
        "the slot ({confirmed}) never passed what green recorded durable ({guard})"
    );
    let log = sync.log_text();
    assert!(log.contains("replaying the spool"), "{log}");
    // Trimmed once green's durable position passes its end.
    eventually(Duration::from_secs(30), || {
        anyhow::ensure!(
            spool_file(spill.path()).is_none(),
            "the spool is still there"
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert!(sync.running(), "sync rode out the outage");
    assert!(sync.terminate());
}

#[test]
fn kill9_while_spooling_and_restart_applies_exactly_once() {
    let mut pair = pair("spoolkill");
    let spill = tempfile::tempdir().unwrap();
    let mut sync = sync_with(&pair, spill.path(), &[]);
    write_on_blue(&pair, 1, 100);
    pair.converge(&["accounts", "events"], Duration::from_secs(60));
    pair.green.crash().expect("green stops");
    write_on_blue(&pair, 101, 800);
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(spool_len(spill.path()) > 50_000, "the spool is small");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    sync.kill9();
    // Green still down: the new process spools on from the old spool's end.
    let first = spool_len(spill.path());
    let mut again = pair.spawn(
        "sync",
        &[
            "--workers",
            "2",
            "--spill-dir",
            spill.path().to_str().unwrap(),
        ],
    );
    write_on_blue(&pair, 901, 600);
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(again.running(), "sync exited:\n{}", again.log_text());
        anyhow::ensure!(spool_len(spill.path()) > first, "the spool did not grow");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", again.log_text()));
    again.kill9();
    // Killed once more mid-spool; then green comes back and a third process applies it.
    pair.green.start_again().expect("green is back");
    let mut last = pair.spawn(
        "sync",
        &[
            "--workers",
            "2",
            "--spill-dir",
            spill.path().to_str().unwrap(),
        ],
    );
    assert_exactly_once(&pair, 1500);
    assert!(
        last.log_text().contains("replaying the spool"),
        "{}",
        last.log_text()
    );
    assert!(last.terminate());
}

#[test]
fn a_spool_green_already_holds_is_discarded_and_a_corrupt_one_stops_sync() {
    let mut pair = pair("spoolstale");
    let spill = tempfile::tempdir().unwrap();
    let spill_arg = spill.path().to_str().unwrap().to_owned();
    let mut sync = sync_with(&pair, spill.path(), &[]);
    write_on_blue(&pair, 1, 50);
    pair.converge(&["accounts", "events"], Duration::from_secs(60));
    pair.green.crash().expect("green stops");
    write_on_blue(&pair, 51, 400);
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(spool_len(spill.path()) > 20_000, "the spool is small");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    sync.kill9();
    pair.green.start_again().expect("green is back");
    let file = spool_file(spill.path()).expect("a spool");
    let saved = std::fs::read(&file).unwrap();
    // What green kept through its crash (its unflushed commits are gone).
    let kept = pair
        .green
        .psql("app", "SELECT count(*) FROM events")
        .unwrap();

    // A corrupt record: sync stops, naming the file, and applies nothing from it.
    let mut bytes = saved.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let mut corrupt = pair.spawn("sync", &["--workers", "2", "--spill-dir", &spill_arg]);
    let code = corrupt.exit_code_within(Duration::from_secs(60));
    assert_ne!(code, 0);
    let log = corrupt.log_text();
    assert!(
        log.contains(&format!("{file:?}")) && log.contains("corrupt"),
        "{log}"
    );
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM events")
            .unwrap(),
        kept,
        "nothing applied from a corrupt spool"
    );

    // Green catches up without the spool (--spool-limit 0 leaves it where it is) ...
    std::fs::write(&file, &saved).unwrap();
    let mut without = pair.sync(&[
        "--workers",
        "2",
        "--spill-dir",
        &spill_arg,
        "--spool-limit",
        "0",
    ]);
    assert_exactly_once(&pair, 450);
    assert!(without.terminate());
    assert!(file.exists());
    // ... so the spool no longer continues green's position: discarded, not applied again.
    let mut after = sync_with(&pair, spill.path(), &[]);
    write_on_blue(&pair, 451, 50);
    assert_exactly_once(&pair, 500);
    let log = after.log_text();
    assert!(
        log.contains("green holds everything in it") && !log.contains("replaying the spool"),
        "{log}"
    );
    assert!(!file.exists());
    assert!(after.terminate());
}

#[test]
fn a_full_spool_makes_reading_wait_and_loses_nothing() {
    let mut pair = pair("spoolfull");
    let spill = tempfile::tempdir().unwrap();
    let limit = 256 * 1024;
    let mut sync = sync_with(&pair, spill.path(), &["--spool-limit", "256KiB"]);
    write_on_blue(&pair, 1, 50);
    pair.converge(&["accounts", "events"], Duration::from_secs(60));
    pair.green.crash().expect("green stops");
    write_on_blue(&pair, 51, 3000);
    eventually(Duration::from_secs(60), || {
        anyhow::ensure!(
            sync.log_text().contains("the spool is full"),
            "not full yet"
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    let full = spool_len(spill.path());
    assert!(
        (limit..limit + 64 * 1024).contains(&full),
        "the spool stops at its limit: {full} bytes"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(spool_len(spill.path()), full, "reading waits");
    pair.green.start_again().expect("green is back");
    assert_exactly_once(&pair, 3050);
    assert!(sync.running());
    assert!(sync.terminate());
}
