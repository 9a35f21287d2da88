//! Shared by the `cutover_*` tests: blue and green with a live `blueshift sync`, a real
//! PgBouncer in front of blue, pgbench writing through it at a fixed rate with a
//! per-transaction log, and the `blueshift cutover` command line.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use blueshift_tests::{blueshift_binary, eventually, PgBouncer};

#[path = "../support/sync.rs"]
pub(crate) mod sync;

pub(crate) use sync::{Pair, Sync};

/// Every kind of sequence the cutover copies: bigserial, identity, a descending one and one
/// with a cache of 50 used by several sessions, plus a hot counter row per client.
pub(crate) const SCHEMA: &str = "
CREATE TABLE orders (id bigserial PRIMARY KEY, client int NOT NULL, note text);
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind text NOT NULL);
CREATE SEQUENCE down_seq INCREMENT -1 START -1 MAXVALUE -1;
CREATE TABLE downs (id bigint PRIMARY KEY DEFAULT nextval('down_seq'), v int);
CREATE SEQUENCE cache_seq CACHE 50;
CREATE TABLE cached (id bigint PRIMARY KEY DEFAULT nextval('cache_seq'), v int);
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
";

/// The tables compared.
pub(crate) const TABLES: &[&str] = &["orders", "events", "downs", "cached", "counters"];

/// One pgbench transaction: a row in each sequence's table and the client's counter.
const SCRIPT: &str = "\
BEGIN;
INSERT INTO orders (client, note) VALUES (:client_id, 'pgbench');
INSERT INTO events (kind) VALUES ('order');
INSERT INTO downs (v) VALUES (:client_id);
INSERT INTO cached (v) VALUES (:client_id);
UPDATE counters SET n = n + 1 WHERE id = :client_id;
END;
";

/// Clients pgbench runs.
pub(crate) const CLIENTS: usize = 4;

/// Blue and green with a sync between them and PgBouncer in front of blue.
pub(crate) struct Stage {
    // Dropped in this order: the sync (printing its log on a panic) before the pair removes
    // the log folder.
    pub(crate) sync: Sync,
    pub(crate) bouncer: PgBouncer,
    pub(crate) pair: Pair,
    /// Cutovers go through the real verify gate (no BLUESHIFT_SKIP_VERIFY): set by
    /// [`Stage::with_verify_gate`].
    real_gate: bool,
    /// The sync's metrics endpoint, `127.0.0.1:PORT`.
    metrics: String,
}

impl Stage {
    pub(crate) fn new(name: &str) -> Stage {
        let pair = Pair::new(name);
        Stage::on(pair)
    }

    pub(crate) fn on(pair: Pair) -> Stage {
        pair.schema(SCHEMA);
        pair.blue
            .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
            .expect("publication");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let metrics = format!("127.0.0.1:{port}");
        let sync = pair.sync(&["--workers", "2", "--metrics-addr", &metrics]);
        let rows: Vec<String> = (0..CLIENTS).map(|i| format!("({i}, 0)")).collect();
        pair.blue
            .psql(
                "app",
                &format!("INSERT INTO counters VALUES {}", rows.join(", ")),
            )
            .expect("counters");
        pair.converge(&["counters"], Duration::from_secs(30));
        let bouncer = PgBouncer::in_front_of(&pair.blue, "app").expect("PgBouncer starts");
        Stage {
            pair,
            bouncer,
            sync,
            real_gate: false,
            metrics,
        }
    }

    /// The sync's `GET /metrics` body.
    pub(crate) fn scrape(&self) -> String {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&self.metrics).expect("metrics endpoint");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        response
    }

    /// Waits until the sidecar exports `state` as the cutover's state (it reads green once a
    /// second); returns the exposition.
    pub(crate) fn exported_state(&self, state: &str) -> String {
        let line = format!("\nblueshift_cutover_state{{state=\"{state}\"}} 1\n");
        let mut text = String::new();
        wait_until(
            Duration::from_secs(15),
            &format!("the sidecar exports cutover state {state}"),
            || {
                text = self.scrape();
                text.contains(&line)
            },
        );
        text
    }

    /// Cutovers of this stage pass the verify gate only after a real `blueshift verify`.
    pub(crate) fn with_verify_gate(mut self) -> Stage {
        self.real_gate = true;
        self
    }

    /// `blueshift verify` of the stage's pair (the running sync holds green at L), `extra`
    /// appended; waits for it.
    pub(crate) fn verify(&self, extra: &[&str]) -> Output {
        Command::new(blueshift_binary())
            .arg("verify")
            .args(["--source", &self.pair.blue.uri("app")])
            .args(["--target", &self.pair.green.uri("app")])
            .args(["--slot", "bs", "--publication", "pub"])
            .args(extra)
            .env("RUST_LOG", "info,blueshift_engine=debug")
            .stdin(Stdio::null())
            .output()
            .expect("blueshift verify runs")
    }

    /// pgbench through PgBouncer: `rate` transactions a second for `seconds`.
    pub(crate) fn pgbench(&self, rate: u32, seconds: u32) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("script.sql");
        std::fs::write(&script, SCRIPT).expect("script");
        let prefix = dir.path().join("tx");
        let out = dir.path().join("pgbench.out");
        let child = Command::new(self.pair.blue.binaries().bin("pgbench"))
            .args(["-n", "-M", "simple", "-f"])
            .arg(&script)
            .args(["-c", &CLIENTS.to_string(), "-j", "2"])
            .args(["-R", &rate.to_string(), "-T", &seconds.to_string()])
            .args(["-l", "--log-prefix"])
            .arg(&prefix)
            .args(["-h", self.bouncer.host()])
            .args(["-p", &self.bouncer.port().to_string()])
            .args(["-U", "postgres", "app"])
            .current_dir(dir.path())
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgbench starts");
        Bench {
            child: Some(child),
            dir,
            prefix,
            out,
        }
    }

    /// `blueshift cutover` with the stage's settings and `extra`, `env`; waits for it.
    pub(crate) fn cutover(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        self.cutover_command(extra, env)
            .output()
            .expect("blueshift cutover runs")
    }

    pub(crate) fn cutover_command(&self, extra: &[&str], env: &[(&str, &str)]) -> Command {
        self.command("cutover", extra, env)
    }

    /// `blueshift <sub>` (`cutover`, `rollback`, `finalize`) with the stage's settings and
    /// `extra`, `env`; waits for it.
    pub(crate) fn run(&self, sub: &str, extra: &[&str]) -> Output {
        self.command(sub, extra, &[])
            .output()
            .expect("blueshift runs")
    }

    /// The command line of `blueshift <sub>` with the stage's settings.
    pub(crate) fn command(&self, sub: &str, extra: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(blueshift_binary());
        cmd.arg(sub)
            .args(["--source", &self.pair.blue.uri("app")])
            .args(["--target", &self.pair.green.uri("app")])
            .args(["--slot", "bs", "--publication", "pub"])
            .args(["--pgbouncer", &self.bouncer.uri("app")])
            .arg("--pgbouncer-file")
            .arg(self.bouncer.databases_file());
        if !self.real_gate {
            // Tests about something else than the verify gate (faults, resume, rollback, a
            // failing switch) pass it with BLUESHIFT_SKIP_VERIFY (unless `env` says otherwise):
            // a `blueshift verify` before each cutover would double their run time and prove
            // nothing they check. The gate itself runs for real in `cutover_pgbouncer`'s main
            // test (a real verify, its refusals) and in `cutover_demo`.
            cmd.env("BLUESHIFT_SKIP_VERIFY", "1");
        }
        // `--max-lag 10`: the preflight's 1 s default refused a cutover when a loaded CI
        // machine left the sync a second behind; no test here is about that refusal.
        for (flag, value) in [("--watch", "2"), ("--max-pause", "5"), ("--max-lag", "10")] {
            if !extra.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.args(extra)
            .env("RUST_LOG", "info,blueshift_engine=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        cmd
    }

    /// `blueshift status` of the stage's slot (text).
    pub(crate) fn status(&self) -> String {
        let out = Command::new(blueshift_binary())
            .arg("status")
            .args(["--source", &self.pair.blue.uri("app")])
            .args(["--target", &self.pair.green.uri("app")])
            .args(["--slot", "bs"])
            .output()
            .expect("status runs");
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cutover's state on green.
    pub(crate) fn state(&self) -> String {
        // Empty before the first cutover created the table.
        self.pair
            .green
            .psql(
                "app",
                "SELECT state FROM blueshift.cutover WHERE slot = 'bs'",
            )
            .unwrap_or_default()
    }

    /// The port PgBouncer's entry `app` points at.
    pub(crate) fn entry_port(&self) -> u16 {
        let rows = self
            .bouncer
            .admin("SHOW DATABASES")
            .expect("SHOW DATABASES");
        rows.lines()
            .find(|l| l.starts_with("app|"))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no entry app: {rows}"))
    }

    /// Whether PgBouncer's entry `app` is paused.
    pub(crate) fn paused(&self) -> bool {
        let rows = self
            .bouncer
            .admin("SHOW DATABASES")
            .expect("SHOW DATABASES");
        // Columns of 1.18: name|host|port|database|force_user|pool_size|min_pool_size|
        // reserve_pool|pool_mode|max_connections|current_connections|paused|disabled
        rows.lines()
            .find(|l| l.starts_with("app|"))
            .and_then(|l| l.split('|').nth(11))
            .is_some_and(|p| p == "1")
    }

    /// Whether blue's `app` takes a write from a new session.
    pub(crate) fn blue_writable(&self) -> bool {
        self.pair
            .blue
            .psql(
                "app",
                "SELECT current_setting('default_transaction_read_only')",
            )
            .expect("setting")
            == "off"
    }

    /// Waits until green holds every committed row of blue (for tables written on blue only).
    pub(crate) fn converge(&self) {
        self.pair.converge(TABLES, Duration::from_secs(60));
    }

    /// Row counts on `side`.
    pub(crate) fn count(&self, green: bool, table: &str) -> i64 {
        let c = if green {
            &self.pair.green
        } else {
            &self.pair.blue
        };
        c.psql("app", &format!("SELECT count(*) FROM {table}"))
            .expect("count")
            .parse()
            .expect("a number")
    }
}

/// A running pgbench.
pub(crate) struct Bench {
    child: Option<Child>,
    dir: tempfile::TempDir,
    prefix: PathBuf,
    out: PathBuf,
}

/// What pgbench reported.
#[derive(Debug)]
pub(crate) struct BenchResult {
    /// Its exit status was 0.
    pub(crate) success: bool,
    /// Transactions committed (lines of the per-transaction log that are not failures).
    pub(crate) committed: u64,
    /// Transactions that failed (pgbench's summary and the log's `failed` lines).
    pub(crate) failed: u64,
    /// The longest transaction, from the per-transaction log (ms).
    pub(crate) max_latency_ms: f64,
    /// The longest delay from a transaction's scheduled start to its end (ms): latency plus
    /// schedule lag — the write pause as a client at a fixed rate sees it.
    pub(crate) max_delay_ms: f64,
    /// Its output.
    pub(crate) output: String,
}

impl Bench {
    /// Waits for it and reads its logs.
    pub(crate) fn finish(mut self) -> BenchResult {
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("pgbench waited");
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut stderr);
        }
        let stdout = std::fs::read_to_string(&self.out).unwrap_or_default();
        let output = format!("{stdout}\n{stderr}");
        let (committed, failed_lines, max_latency_ms, max_delay_ms) = read_logs(&self.prefix);
        let summary_failed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of failed transactions: "))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        BenchResult {
            success: status.success(),
            committed,
            failed: failed_lines.max(summary_failed),
            max_latency_ms,
            max_delay_ms,
            output,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether pgbench still runs.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The per-transaction logs `<prefix>.<pid>[.<thread>]`: `client_id transaction_no time
/// script_no time_epoch time_us [schedule_lag]`, time in µs or `failed`/`skipped`.
fn read_logs(prefix: &Path) -> (u64, u64, f64, f64) {
    let dir = prefix.parent().expect("a folder");
    let stem = prefix
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    let (mut ok, mut failed, mut max_latency, mut max_delay) = (0u64, 0u64, 0f64, 0f64);
    for entry in std::fs::read_dir(dir).expect("log folder") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{stem}.")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("log");
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(time) = fields.get(2) else { continue };
            match time.parse::<f64>() {
                Ok(us) => {
                    ok += 1;
                    let lag = fields
                        .get(6)
                        .and_then(|l| l.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    max_latency = max_latency.max(us / 1000.0);
                    max_delay = max_delay.max((us + lag) / 1000.0);
                }
                Err(_) if *time == "skipped" => {}
                Err(_) => failed += 1,
            }
        }
    }
    (ok, failed, max_latency, max_delay)
}

/// The command's output, for assertion messages.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `f` holds (bounded).
pub(crate) fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    eventually(within, || {
        anyhow::ensure!(f(), "{what}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}
