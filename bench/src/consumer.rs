//! The consumers under test: `blueshift sync` as a child process (so /proc tells its memory
//! and CPU), and native logical replication (`CREATE SUBSCRIPTION` on green).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

use crate::server::{literal, tail, Server};

/// How often waits poll.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// A running `blueshift` child process (`sync`, `backfill`, `bench-decode-sink`).
#[derive(Debug)]
pub(crate) struct Child {
    child: tokio::process::Child,
    log: PathBuf,
    what: String,
    /// Password files written for it, removed when it is dropped.
    secrets: Vec<PathBuf>,
}

impl Drop for Child {
    fn drop(&mut self) {
        for f in &self.secrets {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Where blue and green are, for a blueshift child.
#[derive(Debug)]
pub(crate) struct Endpoints<'a> {
    pub(crate) blue: &'a Server,
    pub(crate) blue_db: &'a str,
    pub(crate) green: &'a Server,
    pub(crate) green_db: &'a str,
}

impl Child {
    /// Starts `blueshift <args…> --source <blue> [--target <green>]`, stderr to
    /// `logs/<log>.log`, stdout captured. Passwords go in files (0600) next to the log, never
    /// in the arguments.
    pub(crate) fn start(
        blueshift: &Path,
        args: &[&str],
        ends: &Endpoints<'_>,
        with_target: bool,
        logs: &Path,
        log: &str,
    ) -> anyhow::Result<Child> {
        let log_path = logs.join(format!("{log}.log"));
        let mut secrets = Vec::new();
        let mut cmd = tokio::process::Command::new(blueshift);
        cmd.args(args)
            .args(["--source", &ends.blue.conninfo(ends.blue_db)]);
        if with_target {
            cmd.args(["--target", &ends.green.conninfo(ends.green_db)]);
        }
        for (server, flag, side) in [
            (ends.blue, "--source-password-file", "source"),
            (ends.green, "--target-password-file", "target"),
        ] {
            if side == "target" && !with_target {
                continue;
            }
            if let Some(p) = server.password() {
                let file = logs.join(format!(".{log}-{side}.password"));
                write_secret(&file, p)?;
                cmd.arg(flag).arg(&file);
                secrets.push(file);
            }
        }
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
        cmd.env("RUST_LOG", rust_log)
            .env_remove("BLUESHIFT_SOURCE")
            .env_remove("BLUESHIFT_TARGET")
            .stdin(Stdio::null())
            // `sync` runs until stopped and nothing reads its stdout: null, so that a full
            // pipe can never block it. The others' output is read by `Child::wait`.
            .stdout(if args.first() == Some(&"sync") {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(std::fs::File::create(&log_path)?)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", blueshift.display()))?;
        let what = format!("blueshift {}", args.first().copied().unwrap_or_default());
        crate::say(format!(
            "{what} started (pid {}, log {})",
            child.id().unwrap_or(0),
            log_path.display()
        ));
        Ok(Child {
            child,
            log: log_path,
            what,
            secrets,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// An error, with the end of its log, when the process has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}):\n{}",
                self.what,
                tail(&self.log_text(), 30)
            );
        }
        Ok(())
    }

    /// SIGTERM, then waits (bounded); anything but exit 0 is an error.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            if let Some(pid) = self
                .child
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let status = match tokio::time::timeout(Duration::from_secs(120), self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("{} did not stop within 120 s of SIGTERM; killed", self.what);
            }
        };
        ensure!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            self.what,
            tail(&self.log_text(), 30)
        );
        Ok(())
    }

    /// Waits for the process to exit by itself (bounded); returns its stdout, or an error
    /// when it did not exit 0.
    pub(crate) async fn wait(mut self, timeout: Duration) -> anyhow::Result<String> {
        use tokio::io::AsyncReadExt as _;
        let what = self.what.clone();
        let log = self.log.clone();
        let mut stdout = self.child.stdout.take().context("stdout is piped")?;
        let output = async {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).await?;
            let status = self.child.wait().await?;
            Ok::<_, std::io::Error>((status, buf))
        };
        let (status, stdout) = match tokio::time::timeout(timeout, output).await {
            Ok(out) => out?,
            Err(_) => bail!("{what} did not finish within {} s", timeout.as_secs()),
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        ensure!(
            status.success(),
            "{what} failed ({status}):\n{}",
            tail(&text, 30)
        );
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    writeln!(f, "{secret}")?;
    Ok(())
}

/// `blueshift sync --no-backfill` between blue/`blue_db` and green/`green_db`.
pub(crate) fn start_sync(
    blueshift: &Path,
    ends: &Endpoints<'_>,
    publication: &str,
    slot: &str,
    workers: u32,
    logs: &Path,
    log: &str,
) -> anyhow::Result<Child> {
    start_sync_with(blueshift, ends, publication, slot, workers, logs, log, &[])
}

/// [`start_sync`] with more `sync` options (`--max-txn-memory`).
#[allow(clippy::too_many_arguments)] // start_sync's, and the extra options
pub(crate) fn start_sync_with(
    blueshift: &Path,
    ends: &Endpoints<'_>,
    publication: &str,
    slot: &str,
    workers: u32,
    logs: &Path,
    log: &str,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let workers = workers.to_string();
    let mut args = vec![
        "sync",
        "--publication",
        publication,
        "--slot",
        slot,
        "--workers",
        &workers,
        "--status-interval",
        "1",
        // Green is loaded by the scenario (pg_dump), as for a user who loaded it otherwise.
        "--no-backfill",
    ];
    args.extend_from_slice(extra);
    Child::start(blueshift, &args, ends, true, logs, log)
}

/// Polls `check` every [`POLL`] until it returns true; `alive` runs between polls (an error
/// there, such as a consumer that exited, ends the wait).
pub(crate) async fn poll_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
    mut check: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        alive()?;
        if started.elapsed() > timeout {
            bail!("{what}: not done after {} s", timeout.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A native subscription on green.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) name: String,
    pub(crate) slot: String,
    pub(crate) green_db: String,
    pub(crate) blue_db: String,
}

impl Subscription {
    /// `CREATE SUBSCRIPTION` with its slot, `streaming = on` set explicitly (PostgreSQL 18
    /// defaults to `parallel`).
    pub(crate) async fn create(
        &self,
        blue: &Server,
        green: &Server,
        publication: &str,
        copy_data: bool,
        enabled: bool,
    ) -> anyhow::Result<()> {
        self.create_with(blue, green, publication, copy_data, enabled, "")
            .await
    }

    /// [`Subscription::create`] with more options (`", origin = none"`: PostgreSQL 16+).
    pub(crate) async fn create_with(
        &self,
        blue: &Server,
        green: &Server,
        publication: &str,
        copy_data: bool,
        enabled: bool,
        more: &str,
    ) -> anyhow::Result<()> {
        let conninfo = format!(
            "{} application_name={}",
            blue.conninfo_with_password(&self.blue_db),
            self.name
        );
        green
            .execute(
                &self.green_db,
                &format!(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {publication} \
                     WITH (copy_data = {copy_data}, enabled = {enabled}, create_slot = true, \
                     slot_name = {}, streaming = on{more})",
                    self.name,
                    literal(&conninfo),
                    literal(&self.slot)
                ),
            )
            .await
    }

    pub(crate) async fn enable(&self, green: &Server) -> anyhow::Result<()> {
        green
            .execute(
                &self.green_db,
                &format!("ALTER SUBSCRIPTION {} ENABLE", self.name),
            )
            .await
    }

    /// Disables it and waits until its walsender on blue is gone.
    pub(crate) async fn disable(&self, blue: &Server, green: &Server) -> anyhow::Result<()> {
        green
            .execute(
                &self.green_db,
                &format!("ALTER SUBSCRIPTION {} DISABLE", self.name),
            )
            .await?;
        wait_slot_inactive(blue, &self.blue_db, &self.slot).await
    }

    /// Drops it (and its slot on blue); quiet when it does not exist.
    pub(crate) async fn drop(&self, blue: &Server, green: &Server) -> anyhow::Result<()> {
        let exists = green
            .value(
                &self.green_db,
                &format!(
                    "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = {}",
                    literal(&self.name)
                ),
            )
            .await?;
        if exists != "1" {
            return Ok(());
        }
        self.disable(blue, green).await?;
        green
            .execute(&self.green_db, &format!("DROP SUBSCRIPTION {}", self.name))
            .await
    }
}

/// Waits (bounded) until no walsender holds `slot`.
pub(crate) async fn wait_slot_inactive(
    blue: &Server,
    blue_db: &str,
    slot: &str,
) -> anyhow::Result<()> {
    let client = blue.connect(blue_db).await?;
    let sql = format!(
        "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = {} AND active",
        literal(slot)
    );
    poll_until(
        &format!("slot {slot} still in use"),
        Duration::from_secs(60),
        || Ok(()),
        || async { Ok(crate::server::query_value(&client, &sql).await? == "0") },
    )
    .await?;
    Ok(())
}

/// Drops `slot` on blue when it exists and is free.
pub(crate) async fn drop_slot(blue: &Server, blue_db: &str, slot: &str) -> anyhow::Result<()> {
    wait_slot_inactive(blue, blue_db, slot).await?;
    blue.execute(
        blue_db,
        &format!(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            literal(slot)
        ),
    )
    .await
}

/// Drops blueshift's replication origins of `slot` on green (`blueshift_<slot>_<n>`).
pub(crate) async fn drop_origins(green: &Server, green_db: &str, slot: &str) -> anyhow::Result<()> {
    green
        .execute(
            green_db,
            &format!(
                "SELECT pg_catalog.pg_replication_origin_drop(roname) \
                 FROM pg_catalog.pg_replication_origin WHERE roname LIKE {}",
                literal(&format!(
                    "{}%",
                    blueshift_engine::sync::origin_name(slot, 0).trim_end_matches('0')
                ))
            ),
        )
        .await
}
