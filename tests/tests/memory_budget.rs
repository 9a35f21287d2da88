//! Memory is bounded by configuration, really: a transaction far larger than a small
//! `--max-txn-memory` goes through `blueshift sync` exactly once while the process's peak
//! resident size (`VmHWM` from `/proc/<pid>/status`) grows, over what it was once streaming
//! and before the writes, by at most the budget plus a stated margin — streamed by blue as it
//! is written (the default `logical_decoding_work_mem`), and sent whole at commit (a walsender
//! that buffers it all). A memory test, not a timed one.
//!
//! The margin, [`MARGIN_MIB`], is what the process holds besides in-flight changes while it
//! applies: the statements an applier has in flight with their parameters, the writesets of
//! queued transactions, the spill file's writer and reader, the allocator's slack. What it
//! holds at rest is measured, not assumed, and printed: some 47 MiB for the debug build tests
//! run, 22 MiB of it the binary's mapped pages (`RssFile`) and the rest start-up (the runtime,
//! one connection to blue and several to green, TLS roots, the catalogs).
//!
//! Rows are 256 bytes of values. The spilled transaction is folded and applied chunk by chunk
//! (`applier::chunk`): an applier holds at most 2 MiB of parameters in statements not yet
//! answered, whatever the row width, plus the chunk of at most 2 MiB being folded and the copies
//! folding makes. What the heap really holds (`heaptrack` on a `--features system-allocator`
//! build, this test): at most 10 MiB over the process at rest, the budget included. The rest of
//! the growth was the allocator's: mimalloc kept freed pages resident for its 1 s purge delay
//! (growth 42 / 37 MiB, streamed / sent whole); `cli::allocator` now purges at once.

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use blueshift_tests::PgBinaries;
use support::Pair;

const SCHEMA: &str = "CREATE TABLE wide (id int PRIMARY KEY, a text NOT NULL, b text NOT NULL)";

/// The budget under test.
const BUDGET_MIB: u64 = 4;

/// What applying may add besides the budget (see the module docs): the goal, budget +
/// 32 MiB over the process at rest.
const MARGIN_MIB: u64 = 32;

/// Rows of the big transaction, each 256 bytes of values: 50 MiB of values, over 130 MiB as
/// decoded changes in memory (some 700 bytes each), over 30 × the budget.
const ROWS: u32 = 200_000;

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn big_transaction_within_budget(name: &str, settings: &[(&str, &str)]) {
    let pair = Pair::with(
        name,
        PgBinaries::from_env().unwrap(),
        PgBinaries::from_env().unwrap(),
        settings,
    );
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let spill = tempfile::tempdir().unwrap();
    let budget = format!("{BUDGET_MIB}MiB");
    let mut sync = pair.sync(&[
        "--workers",
        "2",
        "--max-txn-memory",
        &budget,
        "--spill-dir",
        spill.path().to_str().unwrap(),
    ]);
    let started_kib = status_kib(sync.pid(), "VmHWM:");
    // Small transactions around it go through the same budget in memory.
    pair.blue
        .psql(
            "app",
            "INSERT INTO wide SELECT g, 'before', 'x' FROM generate_series(-100, -1) g",
        )
        .unwrap();
    pair.blue
        .psql(
            "app",
            &format!(
                "INSERT INTO wide SELECT g, repeat(md5(g::text), 4), repeat(md5((-g)::text), 4) \
                 FROM generate_series(1, {ROWS}) g"
            ),
        )
        .unwrap();
    pair.blue
        .psql(
            "app",
            "UPDATE wide SET b = 'after' WHERE id < 0; DELETE FROM wide WHERE id % 1000 = 0",
        )
        .unwrap();
    // Row for row, so every row is there once with its values (the key refuses a duplicate).
    pair.converge(&["wide"], Duration::from_secs(600));
    let expected = ROWS - ROWS / 1000 + 100;
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*), count(*) FILTER (WHERE b = 'after') FROM wide"
            )
            .unwrap(),
        format!("{expected}|100")
    );
    let peak_kib = sync.peak_rss_kib();
    let mapped_kib = status_kib(sync.pid(), "RssFile:");
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "{name}: blueshift sync peak RSS (VmHWM) {:.1} MiB with a {BUDGET_MIB} MiB budget; \
         {:.1} MiB once streaming, before the writes; mapped files (RssFile) {:.1} MiB",
        mib(peak_kib),
        mib(started_kib),
        mib(mapped_kib),
    );
    let grown_kib = peak_kib.saturating_sub(started_kib);
    assert!(
        grown_kib <= (BUDGET_MIB + MARGIN_MIB) * 1024,
        "{name}: blueshift sync's peak grew by {grown_kib} KiB (to {peak_kib} KiB), more than \
         the {BUDGET_MIB} MiB budget + {MARGIN_MIB} MiB"
    );
    assert!(sync.running(), "sync is still streaming");
    assert!(sync.terminate());
}

#[test]
fn a_streamed_transaction_30_times_the_budget_stays_within_it() {
    big_transaction_within_budget("membudget_streamed", &[]);
}

#[test]
fn a_transaction_sent_whole_at_commit_30_times_the_budget_stays_within_it() {
    big_transaction_within_budget("membudget_whole", &[("logical_decoding_work_mem", "1GB")]);
}
