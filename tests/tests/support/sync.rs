//! Shared by the `sync_*` tests: a blue and a green cluster, the real `blueshift sync` binary,
//! and row-for-row comparison of tables.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use blueshift_tests::{blueshift_binary, eventually, Cluster, ClusterOptions, PgBinaries};

/// Blue and green, each with database `app`.
pub(crate) struct Pair {
    pub(crate) blue: Cluster,
    pub(crate) green: Cluster,
    pub(crate) logs: tempfile::TempDir,
}

impl Pair {
    /// Both on the default binaries.
    pub(crate) fn new(name: &str) -> Pair {
        let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
        Pair::with(name, bins.clone(), bins, &[])
    }

    /// Blue and green on the given binaries, blue with extra settings.
    pub(crate) fn with(
        name: &str,
        blue_bins: PgBinaries,
        green_bins: PgBinaries,
        blue_settings: &[(&str, &str)],
    ) -> Pair {
        Pair::with_settings(name, blue_bins, green_bins, blue_settings, &[])
    }

    /// Both on the default binaries, ready for two-way sync (`track_commit_timestamp = on`).
    pub(crate) fn two_way(name: &str) -> Pair {
        let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
        Pair::two_way_with(name, bins.clone(), bins)
    }

    /// Blue and green on the given binaries, ready for two-way sync.
    pub(crate) fn two_way_with(name: &str, blue_bins: PgBinaries, green_bins: PgBinaries) -> Pair {
        let on = [("track_commit_timestamp", "on")];
        Pair::with_settings(name, blue_bins, green_bins, &on, &on)
    }

    /// Blue and green on the given binaries, each with extra settings.
    pub(crate) fn with_settings(
        name: &str,
        blue_bins: PgBinaries,
        green_bins: PgBinaries,
        blue_settings: &[(&str, &str)],
        green_settings: &[(&str, &str)],
    ) -> Pair {
        let mut opts = ClusterOptions::new(blue_bins).name(&format!("{name}-blue"));
        for (k, v) in blue_settings {
            opts = opts.setting(k, v);
        }
        let blue = Cluster::start(opts).expect("blue starts");
        let mut opts = ClusterOptions::new(green_bins).name(&format!("{name}-green"));
        for (k, v) in green_settings {
            opts = opts.setting(k, v);
        }
        let green = Cluster::start(opts).expect("green starts");
        blue.create_database("app").expect("blue db");
        green.create_database("app").expect("green db");
        Pair {
            blue,
            green,
            logs: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Runs the same DDL on both.
    pub(crate) fn schema(&self, sql: &str) {
        self.blue.psql("app", sql).expect("schema on blue");
        self.green.psql("app", sql).expect("schema on green");
    }

    /// `blueshift sync` between the two, with extra arguments; stderr goes to a log file that
    /// is printed if the test fails. Returns once the slot streams.
    pub(crate) fn sync(&self, extra: &[&str]) -> Sync {
        let mut sync = self.spawn("sync", extra);
        // Changes count from the slot's creation (backfill is another stage): wait until
        // streaming has started before the test writes.
        eventually(Duration::from_secs(60), || {
            anyhow::ensure!(
                sync.running(),
                "blueshift sync exited:\n{}",
                sync.log_text()
            );
            // The slot is active while a backfill creates it too: streaming has begun when
            // sync says so.
            anyhow::ensure!(
                sync.log_text().contains("sync started"),
                "sync has not started streaming yet"
            );
            let active = self.blue.psql(
                "app",
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bs' AND active",
            )?;
            anyhow::ensure!(active == "1", "the slot is not streaming yet");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        sync
    }

    /// `blueshift <command>` (`sync` or `backfill`) between the two, without waiting for
    /// anything; stderr goes to a log file that is printed if the test fails.
    pub(crate) fn spawn(&self, command: &str, extra: &[&str]) -> Sync {
        self.spawn_env(command, extra, &[])
    }

    /// [`spawn`](Self::spawn), connecting to blue's `app` as `user` (trusted on loopback, no
    /// password).
    pub(crate) fn spawn_as(&self, command: &str, user: &str, extra: &[&str]) -> Sync {
        let source = format!("postgresql://{user}@127.0.0.1:{}/app", self.blue.port());
        self.spawn_with(command, &source, extra, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables (`BLUESHIFT_FAILPOINTS`). The
    /// status interval is 1 s unless `extra` sets one.
    pub(crate) fn spawn_env(&self, command: &str, extra: &[&str], env: &[(&str, &str)]) -> Sync {
        self.spawn_with(command, &self.blue.uri("app"), extra, env)
    }

    fn spawn_with(
        &self,
        command: &str,
        source: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Sync {
        let interval: &[&str] = if extra.contains(&"--status-interval") {
            &[]
        } else {
            &["--status-interval", "1"]
        };
        let mut cmd = Command::new(blueshift_binary());
        cmd.arg(command)
            .args(["--source", source])
            .args(["--target", &self.green.uri("app")])
            .args(["--publication", "pub", "--slot", "bs"])
            .args(interval)
            .args(extra)
            .env("RUST_LOG", "info,blueshift_engine=debug")
            .envs(env.iter().copied());
        self.spawn_command(command, cmd)
    }

    /// Runs `cmd` (a `blueshift` command line built by the caller) like [`Pair::spawn`]:
    /// stderr to a log file printed if the test fails; `RUST_LOG` unless `cmd` sets it.
    pub(crate) fn spawn_command(&self, name: &str, mut cmd: Command) -> Sync {
        let log = self.logs.path().join(format!(
            "{name}-{}.log",
            std::fs::read_dir(self.logs.path())
                .map(|d| d.count())
                .unwrap_or(0)
        ));
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info,blueshift_engine=debug");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("blueshift starts");
        Sync {
            child: Some(child),
            log,
        }
    }

    /// Waits until every table in `tables` holds the same rows on green as on blue.
    pub(crate) fn converge(&self, tables: &[&str], within: Duration) {
        eventually(within, || {
            for t in tables {
                let b = fingerprint(&self.blue, t)?;
                let g = fingerprint(&self.green, t)?;
                anyhow::ensure!(b == g, "table {t}: blue {b} / green {g}");
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("green did not converge: {e:#}\n{}", self.every_log()));
    }

    /// Every log this pair's commands wrote, oldest first (what a failed convergence shows: the
    /// runs before the last one explain how green got where it is).
    pub(crate) fn every_log(&self) -> String {
        let mut logs: Vec<_> = std::fs::read_dir(self.logs.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        logs.iter()
            .map(|p| {
                format!(
                    "===== {} =====\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `sql` on blue's `app` in a `psql` of its own, in the background (a concurrent
    /// writer).
    pub(crate) fn background_on_blue(&self, sql: &str) -> Child {
        Command::new(self.blue.binaries().bin("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                &self.blue.uri("app"),
                "-c",
                sql,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("background psql starts")
    }

    /// blue's current WAL position.
    pub(crate) fn blue_lsn(&self) -> String {
        self.blue
            .psql("app", "SELECT pg_current_wal_lsn()")
            .expect("lsn")
    }

    /// The slot's confirmed position on blue.
    pub(crate) fn confirmed(&self) -> String {
        self.blue
            .psql(
                "app",
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'bs'",
            )
            .expect("slot")
    }
}

/// Row count and a hash of the sorted rows as text: equal fingerprints mean the same rows, no
/// more, no fewer, no duplicate.
pub(crate) fn fingerprint(c: &Cluster, table: &str) -> anyhow::Result<String> {
    // Fixed output formats, whatever the server's defaults, so equal values print equally.
    c.psql(
        "app",
        &format!(
            "SET datestyle = ISO; SET intervalstyle = postgres; SET extra_float_digits = 3; SET timezone = UTC;
             SELECT count(*) || ':' || md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM {table} x"
        ),
    )
}

/// A running `blueshift sync`.
pub(crate) struct Sync {
    child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Sync {
    /// SIGKILL, no warning.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
        }
    }

    /// SIGTERM; returns whether it exited 0. A sync still in its backfill is first given time
    /// (bounded) to start streaming: a signal during a backfill interrupts it, which exits 6 by
    /// design, while a test that terminates a sync means "stop it cleanly now that it is done".
    pub(crate) fn terminate(&mut self) -> bool {
        if self.child.is_some() {
            let _ = eventually(Duration::from_secs(60), || {
                let log = self.log_text();
                let exited = self
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                // Every backfill that began (a fresh copy, a resume, a table added) logs its
                // planning phase and, once finished, its done phase.
                let begun = log.matches("backfill phase=\"planning\"").count();
                let done = log.matches("backfill phase=\"done\"").count();
                anyhow::ensure!(exited || begun <= done, "still backfilling");
                Ok(())
            });
        }
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = child.wait().expect("reaped");
        status.success()
    }

    /// Sends `signal` (`TERM`, `INT`) without waiting.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits at most `within` for it to exit; its exit code. Panics (with the log) when it is
    /// still running then.
    pub(crate) fn exit_code_within(&mut self, within: Duration) -> i32 {
        let child = self.child.as_mut().expect("running");
        let status = eventually(within, || {
            child
                .try_wait()?
                .ok_or_else(|| anyhow::anyhow!("still running"))
        })
        .unwrap_or_else(|e| panic!("blueshift did not exit: {e:#}\n{}", self.log_text()));
        self.child = None;
        status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {status:?}\n{}", self.log_text()))
    }

    /// Waits for it to exit; returns whether it exited 0.
    pub(crate) fn wait(&mut self) -> bool {
        self.child
            .take()
            .is_some_and(|mut c| c.wait().expect("wait").success())
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to `within` for it to exit on its own; how it exited.
    pub(crate) fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = eventually(within, || {
            child
                .try_wait()?
                .ok_or_else(|| anyhow::anyhow!("still running"))
        });
        match status {
            Ok(status) => {
                self.child = None;
                status
            }
            Err(e) => panic!("blueshift did not exit: {e:#}\n{}", self.log_text()),
        }
    }

    /// Waits up to `within` for a sync started with `BLUESHIFT_FAILPOINTS=spec` (`name=kill@N`)
    /// to kill itself there: asserts it died of SIGKILL at that failpoint; its log.
    pub(crate) fn killed_at(&mut self, spec: &str, within: Duration) -> String {
        use std::os::unix::process::ExitStatusExt as _;
        let status = self.exited(within);
        let log = self.log_text();
        assert_eq!(
            status.signal(),
            Some(9),
            "sync was to kill itself at {spec}, it exited with {status}:\n{log}"
        );
        let name = spec.split_once('=').map_or(spec, |(name, _)| name);
        assert!(
            log.contains(&format!("failpoint {name} reached")),
            "sync died of SIGKILL, but not at failpoint {name}:\n{log}"
        );
        log
    }

    /// Whether it is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Its peak resident memory so far (`VmHWM`), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// Its log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== blueshift sync log {} =====\n{}\n===== end =====",
                self.log.display(),
                self.log_text()
            );
        }
        self.kill9();
    }
}

/// A plain HTTP/1.1 GET (a metrics endpoint); the body.
pub(crate) fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
