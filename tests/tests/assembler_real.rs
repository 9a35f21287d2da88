//! The transaction assembler against a real server (the default binaries, PostgreSQL 15:
//! protocol 3, `streaming on`, `logical_decoding_work_mem = 64kB` so large transactions arrive
//! as streamed blocks):
//!
//! - a 1,000,000-row insert under a 1 MiB memory limit is spilled and read back whole and in
//!   order, the process's peak memory growing far less than the data, and its spill file is
//!   deleted with its reader;
//! - the same insert rolled back yields nothing and leaves no file;
//! - a transaction whose large (nested) subtransactions were rolled back yields only the
//!   surviving rows;
//! - transactions under a replication origin named with the skip prefix are dropped (reported
//!   as skipped), one under another origin is kept with its origin.
//!
//! The tests run one at a time (a lock), so each peak-memory reading is its own.

use std::path::Path;
use std::time::{Duration, Instant};

use blueshift_applier::{Change, Changes, Transaction};
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::{CreateSlotOptions, ReplicationConnection, SnapshotAction};
use blueshift_decoder::pgoutput::{ColumnValue, PgOutputDecoder, PgOutputMessage, ProtocolVersion};
use blueshift_decoder::stream::{ReplicationFrame, StartOptions, StatusOptions, Streaming};
use blueshift_decoder::Lsn;
use blueshift_engine::assembler::{
    collect_changes, Assembled, AssemblerOptions, AssemblerStats, TxAssembler,
};
use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};

/// One test at a time: the peak-memory figure is per process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ROWS: i64 = 1_000_000;
const MIB: usize = 1 << 20;

const SCHEMA: &str = "
CREATE TABLE big (id int PRIMARY KEY, payload text);
CREATE TABLE done (id int PRIMARY KEY);
CREATE PUBLICATION asm_pub FOR ALL TABLES;
";

/// A cluster with the schema, and a slot created before any workload.
async fn setup(name: &str) -> (Cluster, ConnectConfig) {
    setup_with(name, PgBinaries::from_env().expect("PostgreSQL binaries")).await
}

/// As [`setup`], on the given binaries.
async fn setup_with(name: &str, bins: PgBinaries) -> (Cluster, ConnectConfig) {
    let cluster = Cluster::start(
        ClusterOptions::new(bins)
            .name(name)
            .setting("logical_decoding_work_mem", "64kB"),
    )
    .expect("start cluster");
    cluster.create_database("asm").expect("create database");
    cluster.psql("asm", SCHEMA).expect("schema");
    let config =
        ConnectConfig::from_conninfo_with_env(&cluster.uri("asm"), |_| None).expect("conninfo");
    let mut conn = ReplicationConnection::connect(&config)
        .await
        .expect("replication connection");
    conn.create_slot(
        "asm_slot",
        CreateSlotOptions {
            temporary: false,
            snapshot: SnapshotAction::NoExport,
            two_phase: false,
        },
    )
    .await
    .expect("create slot");
    conn.close().await.expect("close");
    (cluster, config)
}

fn sql(cluster: &Cluster, sql: &str) {
    cluster
        .psql("asm", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"));
}

/// What one streaming run gave.
struct Run {
    outputs: Vec<Assembled>,
    stats: AssemblerStats,
    /// Bytes of `pgoutput` payloads received.
    payload_bytes: u64,
    /// Stream Abort messages of a subtransaction (subxid ≠ xid) received.
    subxact_aborts: usize,
}

fn options(spill_dir: &Path, max_memory: usize) -> AssemblerOptions {
    AssemblerOptions {
        max_memory,
        spill_dir: spill_dir.to_owned(),
        skip_origin_prefix: Some("blueshift_".to_owned()),
    }
}

/// The table of a transaction's first change, when its changes are in memory.
fn first_table(t: &Transaction) -> Option<String> {
    match t.changes.in_memory()?.first()? {
        Change::Insert { relation, .. } => Some(relation.name().to_string()),
        _ => None,
    }
}

/// A replication session on `asm_slot` feeding an assembler.
struct Session {
    stream: blueshift_decoder::ReplicationStream,
    decoder: PgOutputDecoder,
    assembler: TxAssembler,
    run: Run,
}

impl Session {
    async fn start(config: &ConnectConfig, options: AssemblerOptions) -> Session {
        Session::start_with(config, options, Streaming::On).await
    }

    async fn start_with(
        config: &ConnectConfig,
        options: AssemblerOptions,
        streaming: Streaming,
    ) -> Session {
        let conn = ReplicationConnection::connect(config)
            .await
            .expect("connect");
        let start = StartOptions {
            publication_names: vec!["asm_pub".into()],
            streaming,
            ..StartOptions::default()
        };
        let stream = conn
            .start_replication(
                "asm_slot",
                Lsn::INVALID,
                start,
                StatusOptions {
                    interval: Duration::from_secs(1),
                },
            )
            .await
            .expect("START_REPLICATION");
        let version = ProtocolVersion::try_from(stream.proto_version()).expect("version");
        Session {
            stream,
            decoder: PgOutputDecoder::new(version)
                .with_parallel_streaming(streaming == Streaming::Parallel),
            assembler: TxAssembler::new(options).expect("assembler"),
            run: Run {
                outputs: Vec::new(),
                stats: AssemblerStats::default(),
                payload_bytes: 0,
                subxact_aborts: 0,
            },
        }
    }

    /// Feeds messages to the assembler until `done` holds after one.
    async fn pump(&mut self, mut done: impl FnMut(&TxAssembler, &[Assembled]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("the stream delivers within 5 minutes")
                .expect("stream")
                .expect("the stream stays open");
            let ReplicationFrame::XLogData { data, .. } = frame else {
                continue;
            };
            self.run.payload_bytes += data.len() as u64;
            let message = self.decoder.decode(data).expect("decode");
            if matches!(&message, PgOutputMessage::StreamAbort(a) if a.subxid != a.xid) {
                self.run.subxact_aborts += 1;
            }
            if let Some(out) = self.assembler.push(message).expect("assemble") {
                self.run.outputs.push(out);
            }
            if done(&self.assembler, &self.run.outputs) {
                return;
            }
        }
    }

    /// Pumps until the marker transaction (an insert into `done`) comes out, then closes the
    /// stream without confirming anything (a test may stream the slot again).
    async fn finish(mut self) -> (Run, TxAssembler) {
        self.pump(|_, outputs| match outputs.last() {
            Some(Assembled::Transaction(t)) => first_table(t).as_deref() == Some("public.done"),
            _ => false,
        })
        .await;
        self.stream.close().await.expect("close stream");
        self.run.stats = self.assembler.stats();
        (self.run, self.assembler)
    }
}

/// Streams the slot through an assembler until the marker transaction comes out.
async fn assemble(config: &ConnectConfig, options: AssemblerOptions) -> (Run, TxAssembler) {
    Session::start(config, options).await.finish().await
}

fn transaction(out: Assembled) -> Transaction {
    match out {
        Assembled::Transaction(t) => t,
        skipped @ Assembled::Skipped { .. } => panic!("unexpected {skipped:?}"),
    }
}

/// The `id` column (the first) of an insert.
fn id_of(change: &Change) -> i64 {
    let Change::Insert { new, .. } = change else {
        panic!("not an insert: {change:?}")
    };
    let ColumnValue::Text(id) = &new.columns[0] else {
        panic!("id is not text: {:?}", new.columns[0])
    };
    std::str::from_utf8(id)
        .expect("utf8")
        .parse()
        .expect("an integer id")
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("read spill dir").count()
}

/// A `/proc/self/status` figure in KiB (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB")
}

/// Resets the peak resident set to the current one (`clear_refs` 5), so the next `VmHWM`
/// reading is this test's own peak.
fn reset_peak_memory() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM through clear_refs");
}

fn the_marker(out: Assembled) {
    let t = transaction(out);
    assert_eq!(first_table(&t).as_deref(), Some("public.done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_insert_is_spilled_and_read_back_in_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let began = Instant::now();
    let (cluster, config) = setup("asm_million").await;
    sql(
        &cluster,
        &format!("INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, {ROWS}) g"),
    );
    sql(&cluster, "INSERT INTO done VALUES (1)");
    let workload = began.elapsed();

    let spill = tempfile::tempdir().expect("spill dir");
    reset_peak_memory();
    let rss_before = status_kib("VmRSS");
    let (run, assembler) = assemble(&config, options(spill.path(), MIB)).await;
    let streamed = began.elapsed();
    assert_eq!(run.outputs.len(), 2, "the insert and the marker");
    assert_eq!(run.stats.spilled_transactions_total, 1, "{:?}", run.stats);
    assert!(run.stats.buffered_bytes <= MIB);
    let mut outputs = run.outputs.into_iter();
    let big = transaction(outputs.next().expect("the big insert"));
    the_marker(outputs.next().expect("the marker"));

    let Changes::Spilled(mut changes) = big.changes else {
        panic!("a 1M-row transaction under a 1 MiB limit stayed in memory")
    };
    assert_eq!(changes.len(), ROWS as u64);
    assert_eq!(files_in(spill.path()), 1, "one spill file while it is read");
    let (mut count, mut sum, mut first, mut last) = (0i64, 0i64, None, 0i64);
    while let Some(change) = changes.next_change().expect("read back") {
        let id = id_of(&change);
        let Change::Insert { relation, new } = &change else {
            unreachable!()
        };
        assert_eq!(relation.name().to_string(), "public.big");
        assert_eq!(new.columns.len(), 2);
        assert_eq!(id, count + 1, "in order");
        first.get_or_insert(id);
        last = id;
        sum += id;
        count += 1;
    }
    assert_eq!(count, ROWS);
    assert_eq!(first, Some(1));
    assert_eq!(last, ROWS);
    assert_eq!(sum, ROWS * (ROWS + 1) / 2);
    let peak = status_kib("VmHWM");
    drop(changes);
    assert_eq!(
        files_in(spill.path()),
        0,
        "the spill file is deleted with its reader"
    );
    drop(assembler);

    let growth_kib = peak.saturating_sub(rss_before);
    let data_kib = run.payload_bytes / 1024;
    eprintln!(
        "1M rows: workload {workload:?}, streamed+assembled {:?}, read back {:?}; payload \
         {data_kib} KiB, spilled {} KiB; RSS before {rss_before} KiB, peak {peak} KiB, \
         growth {growth_kib} KiB",
        streamed - workload,
        began.elapsed() - streamed,
        run.stats.spilled_bytes_total / 1024,
    );
    assert!(data_kib > 100 * 1024, "the payload is over 100 MiB");
    assert!(
        growth_kib < 48 * 1024 && growth_kib * 4 < data_kib,
        "peak memory grew by {growth_kib} KiB for {data_kib} KiB of data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_insert_rolled_back_yields_nothing_and_leaves_no_file() {
    let _serial = SERIAL.lock().await;
    let (cluster, config) = setup("asm_rollback").await;
    let spill = tempfile::tempdir().expect("spill dir");
    // Streaming runs while the insert does, and the ROLLBACK waits until the transaction was
    // streamed and spilled: a server decoding an already-aborted transaction may not stream
    // it at all.
    let mut session = Session::start(&config, options(spill.path(), MIB)).await;
    let client = cluster.connect("asm").await.expect("connect");
    client
        .batch_execute(&format!(
            "BEGIN; INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .expect("insert");
    session
        .pump(|a, _| a.stats().spilled_transactions_total >= 1)
        .await;
    assert_eq!(
        files_in(spill.path()),
        1,
        "the open transaction's spill file"
    );
    client.batch_execute("ROLLBACK").await.expect("rollback");
    sql(&cluster, "INSERT INTO done VALUES (1)");
    let (run, assembler) = session.finish().await;
    assert_eq!(run.outputs.len(), 1, "only the marker");
    the_marker(run.outputs.into_iter().next().expect("marker"));
    assert!(
        run.stats.spilled_transactions_total >= 1,
        "the rolled-back insert was streamed and spilled before its abort: {:?}",
        run.stats
    );
    assert_eq!(run.stats.open_transactions, 0);
    assert_eq!(
        files_in(spill.path()),
        0,
        "the abort deleted the spill file"
    );
    drop(assembler);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_subtransactions_leave_only_the_surviving_rows() {
    let _serial = SERIAL.lock().await;
    let (cluster, config) = setup("asm_subxact").await;
    subtransactions(&cluster, &config, Streaming::On).await;
}

/// The same on PostgreSQL 18 with `streaming parallel` (protocol 4: Stream Abort carries the
/// abort LSN and time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_subtransactions_postgres_18_parallel_streaming() {
    let _serial = SERIAL.lock().await;
    let bins = PgBinaries::major(18).expect("PostgreSQL 18 binaries");
    let (cluster, config) = setup_with("asm_subxact18", bins).await;
    subtransactions(&cluster, &config, Streaming::Parallel).await;
}

async fn subtransactions(cluster: &Cluster, config: &ConnectConfig, streaming: Streaming) {
    // Kept: 1..20000 and 200001..210000. Undone: 100001..150000 (s1) with a nested
    // 150001..160000 (s2), rolled back together; then 160001..170000 (s3) alone.
    sql(
        cluster,
        "BEGIN;
         INSERT INTO big SELECT g, 'kept' FROM generate_series(1, 20000) g;
         SAVEPOINT s1;
         INSERT INTO big SELECT g, 'undone' FROM generate_series(100001, 150000) g;
         SAVEPOINT s2;
         INSERT INTO big SELECT g, 'undone' FROM generate_series(150001, 160000) g;
         ROLLBACK TO SAVEPOINT s1;
         SAVEPOINT s3;
         INSERT INTO big SELECT g, 'undone' FROM generate_series(160001, 170000) g;
         ROLLBACK TO SAVEPOINT s3;
         INSERT INTO big SELECT g, 'kept' FROM generate_series(200001, 210000) g;
         COMMIT",
    );
    sql(cluster, "INSERT INTO done VALUES (1)");
    for max_memory in [MIB, usize::MAX] {
        // The slot was not advanced past the transaction: stream it again, in memory.
        let spill = tempfile::tempdir().expect("spill dir");
        let session =
            Session::start_with(config, options(spill.path(), max_memory), streaming).await;
        let (run, _assembler) = session.finish().await;
        assert_eq!(run.outputs.len(), 2, "the transaction and the marker");
        let mut outputs = run.outputs.into_iter();
        let t = transaction(outputs.next().expect("transaction"));
        the_marker(outputs.next().expect("marker"));
        assert_eq!(t.changes.in_memory().is_none(), max_memory == MIB);
        let ids: Vec<i64> = collect_changes(t.changes)
            .expect("read back")
            .iter()
            .map(id_of)
            .collect();
        let expected: Vec<i64> = (1..=20_000).chain(200_001..=210_000).collect();
        assert_eq!(ids.len(), expected.len(), "max_memory {max_memory}");
        assert!(
            ids == expected,
            "surviving rows in order, max_memory {max_memory}"
        );
        assert_eq!(files_in(spill.path()), 0);
        assert!(
            run.subxact_aborts >= 3,
            "s1, the nested s2 and s3 were streamed, then aborted: {} Stream Aborts",
            run.subxact_aborts
        );
        if max_memory == MIB {
            assert!(run.stats.spilled_transactions_total >= 1, "{:?}", run.stats);
        } else {
            assert_eq!(run.stats.spilled_transactions_total, 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_under_the_skip_origin_are_dropped_others_kept() {
    let _serial = SERIAL.lock().await;
    let (cluster, config) = setup("asm_origin").await;
    sql(
        &cluster,
        "SELECT pg_replication_origin_create('blueshift_test');
         SELECT pg_replication_origin_create('remote_blue');",
    );
    let under = |origin: &str, insert: &str| {
        sql(
            &cluster,
            &format!(
                "SELECT pg_replication_origin_session_setup('{origin}');
                 BEGIN;
                 SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2026-01-02 03:04:05+00');
                 {insert};
                 COMMIT;
                 SELECT pg_replication_origin_session_reset();"
            ),
        )
    };
    // Dropped: a small one and a large (streamed) one; kept: one from another origin.
    under("blueshift_test", "INSERT INTO big VALUES (1, 'loop')");
    under(
        "blueshift_test",
        "INSERT INTO big SELECT g, 'loop' FROM generate_series(2, 20001) g",
    );
    under("remote_blue", "INSERT INTO big VALUES (30000, 'remote')");
    sql(&cluster, "INSERT INTO done VALUES (1)");

    let spill = tempfile::tempdir().expect("spill dir");
    let (run, _assembler) = assemble(&config, options(spill.path(), MIB)).await;
    assert_eq!(
        run.outputs.len(),
        4,
        "two skipped, the kept one, the marker"
    );
    let mut outputs = run.outputs.into_iter();
    for what in ["small", "streamed"] {
        match outputs.next().expect("a skipped transaction") {
            Assembled::Skipped {
                origin,
                commit_lsn,
                end_lsn,
                ..
            } => {
                assert_eq!(origin.name, "blueshift_test", "{what}");
                assert!(end_lsn > commit_lsn, "{what}");
            }
            other => panic!("the {what} transaction was not skipped: {other:?}"),
        }
    }
    let kept = transaction(outputs.next().expect("kept"));
    let origin = kept.origin.clone().expect("origin set");
    assert_eq!(origin.name, "remote_blue");
    assert_eq!(origin.lsn, "0/ABCDEF".parse::<Lsn>().expect("lsn"));
    let ids: Vec<i64> = collect_changes(kept.changes)
        .expect("changes")
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, [30000]);
    the_marker(outputs.next().expect("marker"));
    assert_eq!(run.stats.skipped_transactions_total, 2);
    assert_eq!(
        run.stats.spilled_transactions_total, 0,
        "a dropped transaction is never buffered"
    );
    assert_eq!(files_in(spill.path()), 0);
}
