//! The applier end to end: a workload runs on blue, our replication connection decodes it with
//! `pgoutput`, a tiny test-only assembler turns Begin … Commit into transactions, an applier
//! applies them to green, and green must then equal blue row for row. Covers every DML kind,
//! unchanged TOAST, REPLICA IDENTITY FULL (duplicates, NULLs) and USING INDEX, a table without
//! a primary key, TRUNCATE with CASCADE and RESTART IDENTITY, a table of every built-in type
//! family, hostile identifiers and a column added mid-stream; then re-delivery of the whole
//! stream to a new applier on the same origin, which must skip everything. Runs blue → green on
//! the default binaries and blue 15 → green 18.

use std::time::Duration;

use blueshift_applier::{Applier, ApplierOptions, Change, Changes, Transaction};
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::{CreateSlotOptions, ReplicationConnection};
use blueshift_decoder::pgoutput::{PgOutputDecoder, PgOutputMessage, ProtocolVersion};
use blueshift_decoder::relation::RelationCache;
use blueshift_decoder::stream::{ReplicationFrame, StartOptions, StatusOptions};
use blueshift_decoder::Lsn;
use blueshift_tests::{eventually, Cluster, ClusterOptions, PgBinaries};

/// Tables and types on both sides.
const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (x int, label text);
CREATE TABLE items (id int PRIMARY KEY, name text, big text);
ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_t (id int, v text, j json);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE idx_t (id int NOT NULL, code text NOT NULL, v text);
CREATE UNIQUE INDEX idx_t_code ON idx_t (code);
ALTER TABLE idx_t REPLICA IDENTITY USING INDEX idx_t_code;
CREATE TABLE nopk (n int, v text);
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE seq_t (id serial PRIMARY KEY, v text);
CREATE SCHEMA "Sch""ema";
CREATE TABLE "Sch""ema"."x; DROP TABLE y" ("Mixed Case" int PRIMARY KEY, "we""ird" text, "ünï cödé" text);
CREATE TABLE y (id int);
CREATE TABLE types (
  id int PRIMARY KEY,
  i2 smallint, i4 int, i8 bigint, num numeric, num_p numeric(12,3), f4 real, f8 double precision,
  t text, vc varchar(10), ch char(5), by bytea, b bool,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz(3), iv interval,
  u uuid, js json, jb jsonb,
  ai int[], at text[], a2 int[][], ea mood[],
  r int4range, tsr tstzrange, nr numrange, mr int4multirange,
  ip inet, cd cidr, mac macaddr, mac8 macaddr8,
  m money, bt bit(4), vb varbit,
  tv tsvector, tq tsquery,
  pt point, ln line, ls lseg, bx box, pa path, pg polygon, ci circle,
  e mood, dm posint, cp pair, o oid, lsn pg_lsn
);
CREATE TABLE done (id int PRIMARY KEY);
"#;

/// `grow` gets a column mid-stream on blue; green has it from the start.
const BLUE_ONLY: &str = "CREATE TABLE grow (id int PRIMARY KEY, a text);
CREATE PUBLICATION every_pub FOR ALL TABLES;";
const GREEN_ONLY: &str = "CREATE TABLE grow (id int PRIMARY KEY, a text, c text);";

/// Every table, with the ORDER BY that makes its text dump deterministic.
const TABLES: &[(&str, &str)] = &[
    ("items", "id"),
    ("full_t", "id, v"),
    ("idx_t", "code"),
    ("nopk", "n"),
    ("parent", "id"),
    ("child", "id"),
    ("seq_t", "id"),
    (r#""Sch""ema"."x; DROP TABLE y""#, r#""Mixed Case""#),
    ("y", "id"),
    ("types", "id"),
    ("grow", "id"),
    ("done", "id"),
];

const TYPES_ROWS: &str = r#"
INSERT INTO types VALUES (
  1, 32767, -2147483648, 9223372036854775807, 123456789012345678901234567890.123456789, 3.142,
  3.4028235e38, 2.2250738585072014e-308,
  'plain', 'varchar', 'ab', '\x00ff10', true,
  '2026-11-24', '23:59:59.999999', '12:00:00+05:30', '2000-02-29 01:02:03.456789',
  '2026-11-24 02:28:05.123+00', '1 year 2 mons 3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1, "a": [1, 2.50, null]}', '{"b": 1, "a": [1, 2.50, null]}',
  '{1,NULL,3}', '{"a b","c\"d","e\\f",NULL,""}', '{{1,2},{3,4}}', '{happy,sad}',
  '[1,10)', '[2026-01-01 00:00:00+00,)', '(,1.5]', '{[1,3), [5,7)}',
  '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
  '12.34', B'1010', B'10111',
  'a fat cat sat on a mat', 'fat & (rat | cat)',
  '(1.5,-2)', '{1,-1,0}', '[(0,0),(1,1)]', '((0,0),(2,2))', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(1,1),5>',
  'ok', 42, ROW(7, 'seven "quoted"'), 4294967295, '16/B374D848'
), (
  2, -32768, 0, -9223372036854775808, 'NaN', -0.001,
  '-Infinity', '-0',
  E'tab\there, quote '' and "double", backslash \\, unicode ü€😀', '', '', '\x', false,
  'infinity', '00:00:00', '00:00:00-12', '-infinity',
  'infinity', '-178000000 years',
  '00000000-0000-0000-0000-000000000000', '[]', '{"nested": {"deep": [{}, []]}, "n": -0.0e10}',
  '{}', '{NULL}', '{{NULL,NULL},{NULL,5}}', '{}',
  'empty', '(,)', '[-Infinity,Infinity]', '{}',
  '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00:00:00',
  '-92233720368547758.08', B'0000', B'',
  '', '!a',
  '(0,0)', '{0,1,-1}', '[(1e300,-1e-300),(0,0)]', '((1,1),(1,1))', '((0,0))', '((0,0))', '<(0,0),0>',
  'sad', 1, ROW(NULL, NULL), 0, '0/0'
);
INSERT INTO types (id) VALUES (3);
INSERT INTO types (id, f4, f8, num) VALUES (4, 'NaN', 'Infinity', '-Infinity');
"#;

/// The workload on blue; each string is one psql script (one or more transactions).
fn workload() -> Vec<String> {
    let big = "0123456789abcdef".repeat(250);
    vec![
        format!("INSERT INTO items VALUES (1, 'a', '{big}'), (2, 'b', 'small'), (3, 'c', NULL)"),
        // Unchanged TOAST: `big` is not sent, green must keep its own copy.
        "UPDATE items SET name = 'a2' WHERE id = 1".into(),
        "UPDATE items SET id = 20 WHERE id = 2".into(),
        "DELETE FROM items WHERE id = 3".into(),
        "BEGIN; INSERT INTO full_t VALUES (1, 'x', '{\"k\": 1}'), (1, 'x', '{\"k\": 1}'), \
         (2, NULL, NULL), (3, 'z', '[1]'); COMMIT"
            .into(),
        "DELETE FROM full_t WHERE ctid = (SELECT ctid FROM full_t WHERE id = 1 LIMIT 1)".into(),
        "UPDATE full_t SET v = 'y' WHERE id = 2".into(),
        "UPDATE full_t SET j = '[2]' WHERE id = 3".into(),
        "INSERT INTO idx_t VALUES (1, 'A', 'one'), (2, 'B', 'two'), (3, 'C', 'three')".into(),
        "UPDATE idx_t SET v = 'uno' WHERE code = 'A'".into(),
        "UPDATE idx_t SET code = 'BB' WHERE code = 'B'".into(),
        "DELETE FROM idx_t WHERE code = 'C'".into(),
        "INSERT INTO nopk SELECT g, 'v' || g FROM generate_series(1, 1000) g".into(),
        "INSERT INTO nopk VALUES (1001, NULL), (1001, NULL)".into(),
        "INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1)".into(),
        "TRUNCATE parent CASCADE".into(),
        "INSERT INTO parent VALUES (3)".into(),
        "INSERT INTO seq_t (v) VALUES ('s1'), ('s2')".into(),
        "TRUNCATE seq_t RESTART IDENTITY".into(),
        "INSERT INTO seq_t (v) VALUES ('after')".into(),
        r#"INSERT INTO "Sch""ema"."x; DROP TABLE y" VALUES (1, '''); DROP TABLE y; --', 'ü'), (2, '$1', NULL);
           UPDATE "Sch""ema"."x; DROP TABLE y" SET "we""ird" = '"q"' WHERE "Mixed Case" = 1;
           DELETE FROM "Sch""ema"."x; DROP TABLE y" WHERE "Mixed Case" = 2"#
            .into(),
        TYPES_ROWS.into(),
        "UPDATE types SET jb = jb || '{\"c\": true}', ai = ai || 4, iv = iv * 2 WHERE id = 1".into(),
        "BEGIN; DELETE FROM types WHERE id = 4; UPDATE types SET t = 'again' WHERE id = 2; COMMIT"
            .into(),
        "INSERT INTO grow VALUES (1, 'one')".into(),
        "ALTER TABLE grow ADD COLUMN c text".into(),
        "INSERT INTO grow VALUES (2, 'two', 'c2'); UPDATE grow SET c = 'c1' WHERE id = 1".into(),
        "INSERT INTO done VALUES (1)".into(),
    ]
}

/// Streams `slot` from the start and assembles every transaction until the one that inserts
/// into `done`: Begin opens one, each change takes the relation description current at that
/// point of the stream, Commit closes it.
async fn transactions(config: &ConnectConfig, slot: &str) -> Vec<Transaction> {
    let conn = ReplicationConnection::connect(config)
        .await
        .expect("replication connection");
    let mut stream = conn
        .start_replication(
            slot,
            Lsn::INVALID,
            StartOptions {
                publication_names: vec!["every_pub".into()],
                ..StartOptions::default()
            },
            StatusOptions {
                interval: Duration::from_secs(1),
            },
        )
        .await
        .expect("START_REPLICATION");
    let version = ProtocolVersion::try_from(stream.proto_version()).expect("version");
    let mut decoder = PgOutputDecoder::new(version);
    let mut relations = RelationCache::new();
    let mut out = Vec::new();
    let mut open: Option<(Transaction, Vec<Change>)> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let frame = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the marker arrives within 2 minutes")
            .expect("stream")
            .expect("the stream stays open");
        let ReplicationFrame::XLogData { data, .. } = frame else {
            continue;
        };
        let message = decoder.decode(data).expect("decode");
        relations.observe(&message);
        let relation = |oid| relations.require(oid).expect("Relation before its changes");
        match message {
            PgOutputMessage::Begin(begin) => {
                assert!(open.is_none(), "Begin inside a transaction");
                open = Some((
                    Transaction {
                        xid: begin.xid,
                        commit_lsn: begin.final_lsn,
                        end_lsn: Lsn::INVALID,
                        commit_time: begin.commit_time,
                        origin: None,
                        changes: Changes::InMemory(Vec::new()),
                    },
                    Vec::new(),
                ));
            }
            PgOutputMessage::Insert(i) => open.as_mut().expect("open").1.push(Change::Insert {
                relation: relation(i.relation),
                new: i.new,
            }),
            PgOutputMessage::Update(u) => open.as_mut().expect("open").1.push(Change::Update {
                relation: relation(u.relation),
                old: u.old,
                new: u.new,
            }),
            PgOutputMessage::Delete(d) => open.as_mut().expect("open").1.push(Change::Delete {
                relation: relation(d.relation),
                old: d.old,
            }),
            PgOutputMessage::Truncate(t) => open.as_mut().expect("open").1.push(Change::Truncate {
                relations: t.relations.iter().map(|&oid| relation(oid)).collect(),
                cascade: t.cascade,
                restart_identity: t.restart_identity,
            }),
            PgOutputMessage::Commit(commit) => {
                let (mut tx, changes) = open.take().expect("Commit closes a transaction");
                assert_eq!(tx.commit_lsn, commit.commit_lsn);
                tx.end_lsn = commit.end_lsn;
                let last_is_done = changes.iter().any(|c| {
                    matches!(c, Change::Insert { relation, .. } if relation.name().name == "done")
                });
                tx.changes = Changes::InMemory(changes);
                out.push(tx);
                if last_is_done {
                    stream.feedback().set_flushed(commit.end_lsn);
                    break;
                }
            }
            _ => {}
        }
    }
    stream.close().await.expect("close stream");
    out
}

/// Every table of `db` as text, row by row.
fn dump(cluster: &Cluster, db: &str) -> Vec<(String, String)> {
    TABLES
        .iter()
        .map(|(table, order)| {
            let rows = cluster
                .psql(
                    db,
                    &format!("SELECT dump_row::text FROM {table} AS dump_row ORDER BY {order}"),
                )
                .unwrap_or_else(|e| panic!("dump {table}: {e:#}"));
            ((*table).to_owned(), rows)
        })
        .collect()
}

/// Runs the workload on blue, applies the decoded stream to green with `options` (origin
/// name set here) and checks green against blue.
async fn replay(
    blue_major: Option<u32>,
    green_major: Option<u32>,
    name: &str,
    tune: impl Fn(&mut ApplierOptions),
) {
    let bins = |major: Option<u32>| match major {
        Some(major) => PgBinaries::major(major).expect("PostgreSQL binaries"),
        None => PgBinaries::from_env().expect("PostgreSQL binaries"),
    };
    let blue = Cluster::start(ClusterOptions::new(bins(blue_major)).name(&format!("{name}-blue")))
        .expect("start blue");
    let green =
        Cluster::start(ClusterOptions::new(bins(green_major)).name(&format!("{name}-green")))
            .expect("start green");
    if let Some(major) = blue_major {
        assert_eq!(blue.binaries().major_version(), major);
    }
    if let Some(major) = green_major {
        assert_eq!(green.binaries().major_version(), major);
    }
    blue.create_database("app").expect("blue db");
    green.create_database("app").expect("green db");
    blue.psql("app", &format!("{SCHEMA}\n{BLUE_ONLY}"))
        .expect("blue schema");
    green
        .psql("app", &format!("{SCHEMA}\n{GREEN_ONLY}"))
        .expect("green schema");

    let blue_config =
        ConnectConfig::from_conninfo_with_env(&blue.uri("app"), |_| None).expect("conninfo");
    let green_config =
        ConnectConfig::from_conninfo_with_env(&green.uri("app"), |_| None).expect("conninfo");
    let mut conn = ReplicationConnection::connect(&blue_config)
        .await
        .expect("replication connection");
    conn.create_slot("apply_slot", CreateSlotOptions::default())
        .await
        .expect("create slot");
    conn.close().await.expect("close");

    for script in workload() {
        blue.psql("app", &script)
            .unwrap_or_else(|e| panic!("{script}: {e:#}"));
    }
    let mut txs = transactions(&blue_config, "apply_slot").await;
    assert!(txs.len() >= 25, "{} transactions", txs.len());
    let with_columns_changed = txs
        .iter()
        .flat_map(|tx| tx.changes.in_memory().unwrap_or_default())
        .filter_map(|c| match c {
            Change::Insert { relation, .. } if relation.name().name == "grow" => {
                Some(relation.columns().len())
            }
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(
        with_columns_changed,
        vec![2, 3],
        "grow's Relation changed mid-stream"
    );

    let origin = "blueshift_apply_slot_0";
    let mut options = ApplierOptions::new(origin);
    tune(&mut options);
    let mut applier = Applier::connect(&green_config, options.clone())
        .await
        .expect("applier");
    let mut rows = 0;
    for tx in &mut txs {
        let outcome = applier.apply(tx).await.unwrap_or_else(|e| {
            panic!(
                "apply the transaction committed at {}: {e:#?}",
                tx.commit_lsn
            )
        });
        assert!(!outcome.skipped);
        rows += outcome.rows.rows();
    }
    assert!(rows > 1000, "{rows} rows");
    let last = txs.last().expect("transactions").commit_lsn;
    assert_eq!(applier.progress(), last);
    // Durable once green's WAL is flushed (at once with synchronous_commit on, soon with off).
    eventually(Duration::from_secs(30), || {
        let durable = green.psql(
            "app",
            &format!("SELECT pg_replication_origin_progress('{origin}', true)"),
        )?;
        anyhow::ensure!(
            durable == last.to_string(),
            "durable {durable}, applied {last}"
        );
        Ok(())
    })
    .expect("the origin's progress becomes durable");
    applier.close().await;

    let blue_tables = dump(&blue, "app");
    let green_tables = dump(&green, "app");
    for ((table, blue_rows), (_, green_rows)) in blue_tables.iter().zip(&green_tables) {
        assert_eq!(blue_rows, green_rows, "table {table}: blue vs green");
    }
    assert!(
        blue_tables[9].1.contains("NaN"),
        "the types table is filled: {}",
        blue_tables[9].1
    );
    // The TOASTed value kept through the update that did not send it.
    assert_eq!(
        green
            .psql("app", "SELECT name, length(big) FROM items WHERE id = 1")
            .unwrap(),
        "a2|4000"
    );

    // Re-delivery to a new applier on the same origin applies nothing twice.
    let mut again = Applier::connect(&green_config, options)
        .await
        .expect("applier");
    for tx in &mut txs {
        assert!(again.apply(tx).await.expect("apply").skipped);
    }
    again.close().await;
    assert_eq!(dump(&green, "app"), green_tables);
    assert_eq!(
        green.psql("app", "SELECT count(*) FROM y").unwrap(),
        "0",
        "hostile names did nothing else"
    );
}

#[tokio::test]
async fn replay_blue_to_green() {
    replay(None, None, "replay", |_| {}).await;
}

/// The serial path gives the same green: no pipelining, one row per INSERT, and a statement
/// cache so small that statements are evicted and prepared again all the time.
#[tokio::test]
async fn replay_serial_unbatched() {
    replay(None, None, "replay-serial", |o| {
        o.pipeline_depth = 1;
        o.insert_batch_rows = 1;
        o.statement_cache_capacity = 2;
    })
    .await;
}

/// The major-upgrade path, with `synchronous_commit = off` as the engine may run it.
#[tokio::test]
async fn replay_blue_15_to_green_18() {
    replay(Some(15), Some(18), "replay-15-18", |o| {
        o.synchronous_commit = blueshift_applier::SynchronousCommit::Off;
    })
    .await;
}
