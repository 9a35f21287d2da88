//! An ephemeral PostgreSQL cluster: a copy of the `initdb` template in a fresh
//! temp folder, configured for logical replication, listening on a free
//! loopback port, started with `pg_ctl` and torn down on `Drop`.
//!
//! Layout of the temp folder (`/dev/shm/blueshift-pg-XXXXXX` by default, see
//! [`ClusterOptions::base_dir`]):
//!
//! ```text
//! data/        the data directory
//! sock/        unix_socket_directories
//! server.log   the server's log (pg_ctl -l), appended across restarts
//! ```
//!
//! `fsync=off` is safe here: the tests simulate *process* crashes (`kill -9`
//! of the postmaster, [`Cluster::crash`]), after which the OS page cache
//! still holds every write, so recovery sees the same WAL a synced server
//! would. Only an OS crash or power loss could lose data, and a throwaway
//! test cluster (on tmpfs, by default) does not survive one anyway.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use crate::binaries::PgBinaries;
use crate::command::{chown_to_server_user, client_command, run, server_command};
use crate::eventually::eventually;
use crate::template::template_for;

pub(crate) const HOST: &str = "127.0.0.1";
const SUPERUSER: &str = "postgres";
/// How long `pg_ctl -w` waits for a start or stop, in seconds.
const PG_CTL_TIMEOUT_SECS: &str = "120";
/// How many free ports a start tries before giving up.
const PORT_ATTEMPTS: usize = 5;
/// How many lines of the server log a panicking test prints.
const LOG_TAIL_LINES: usize = 200;

/// What a [`Cluster`] is started with: binaries, extra settings, extra
/// `pg_hba.conf` lines and a name for log output.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    bins: PgBinaries,
    settings: Vec<(String, String)>,
    hba_lines: Vec<String>,
    only_given_hba: bool,
    tls: Option<crate::certs::CertFiles>,
    name: String,
    base_dir: PathBuf,
}

impl ClusterOptions {
    /// Defaults: the harness's settings, trust authentication on loopback and
    /// the Unix socket, name `"pg"`.
    pub fn new(bins: PgBinaries) -> Self {
        ClusterOptions {
            bins,
            settings: Vec::new(),
            hba_lines: Vec::new(),
            only_given_hba: false,
            tls: None,
            name: "pg".to_owned(),
            base_dir: default_base_dir(),
        }
    }

    /// One `postgresql.conf` setting, written as `key = 'value'` after the
    /// harness's own (so it overrides them); the value is quoted for you.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// One `pg_hba.conf` line, put before the harness's trust lines (so it
    /// wins for the connections it matches).
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_owned());
        self
    }

    /// Uses only the [`hba_line`](Self::hba_line)s given, without the harness's trust lines
    /// (e.g. for a `hostssl`-only server). The harness's own `psql` connects as `postgres` over
    /// TCP with libpq's defaults (TLS when offered), so give `postgres` a line it can use;
    /// [`Cluster::connect`] uses no TLS.
    pub fn only_given_hba(mut self) -> Self {
        self.only_given_hba = true;
        self
    }

    /// Turns TLS on (`ssl = on`) with this server certificate and key; `files.ca` becomes
    /// `ssl_ca_file`, so client certificates it signed are accepted (`cert` authentication).
    /// The files are copied into the cluster's folder.
    pub fn tls(mut self, files: &crate::certs::CertFiles) -> Self {
        self.tls = Some(files.clone());
        self
    }

    /// The folder the cluster's temp folder is created in. Default:
    /// `BLUESHIFT_PG_TMPDIR`, else `/dev/shm` when it has 2 GiB free (on
    /// this disk creating a file costs ~1 ms, and a data directory has ~1000),
    /// else the system temp folder. A benchmark that loads real volumes
    /// should pass a folder on disk.
    pub fn base_dir(mut self, dir: &Path) -> Self {
        self.base_dir = dir.to_path_buf();
        self
    }

    /// The name used in log output and as `cluster_name`, e.g. `"blue"`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }
}

/// A running (or stopped, or crashed) throwaway PostgreSQL server. Dropping
/// it stops the server at once and removes its files.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    port: u16,
    /// Owns the temp folder; dropped (removed) last.
    root: TempDir,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    running: bool,
    /// The System V shared memory id of a postmaster killed by
    /// [`Cluster::crash`] whose lock file was removed, until a start.
    crashed_shmid: Option<i32>,
}

impl Cluster {
    /// Copies the `initdb` template, configures and starts a server, and waits
    /// until it accepts connections.
    pub fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let started = Instant::now();
        let template = template_for(&opts.bins)?;
        let root = tempfile::Builder::new()
            .prefix("blueshift-pg-")
            .tempdir_in(&opts.base_dir)
            .context("could not create a temp folder for the cluster")?;
        let data_dir = root.path().join("data");
        let socket_dir = root.path().join("sock");
        let log_file = root.path().join("server.log");
        run(std::process::Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data_dir))
        .context("could not copy the initdb template")?;
        fs::create_dir(&socket_dir)?;
        fs::write(&log_file, "")?;
        let mut perms = fs::metadata(root.path())?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(root.path(), perms)?;
        write_hba(&data_dir, &opts.hba_lines, opts.only_given_hba)?;
        let tls_settings = match &opts.tls {
            Some(files) => install_tls(root.path(), files)?,
            None => Vec::new(),
        };
        let base_conf = fs::read_to_string(data_dir.join("postgresql.conf"))
            .context("could not read the template's postgresql.conf")?;
        chown_to_server_user(root.path())?;

        let mut opts = opts;
        opts.settings.splice(0..0, tls_settings);
        let mut cluster = Cluster {
            opts,
            port: 0,
            root,
            data_dir,
            socket_dir,
            log_file,
            running: false,
            crashed_shmid: None,
        };
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = free_port()?;
            let log_before = cluster.log().len();
            fs::write(
                cluster.data_dir.join("postgresql.conf"),
                cluster.conf_text(&base_conf),
            )?;
            match cluster.start_again() {
                Ok(()) => {
                    tracing::debug!(
                        cluster = %cluster.opts.name,
                        version = cluster.opts.bins.version(),
                        port = cluster.port,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "cluster started"
                    );
                    return Ok(cluster);
                }
                Err(e)
                    if cluster
                        .log()
                        .get(log_before..)
                        .is_some_and(|new| new.contains("could not bind")) =>
                {
                    tracing::debug!(cluster = %cluster.opts.name, port = cluster.port, "port taken, retrying");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt was made"))
            .context(format!("no free port after {PORT_ATTEMPTS} attempts"))
    }

    /// The TCP port, on [`Cluster::host`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The Unix socket folder (`unix_socket_directories`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// `postgresql://postgres@127.0.0.1:PORT/db` (the database name
    /// percent-encoded).
    pub fn uri(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@{HOST}:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// `postgres`, trusted on loopback and the socket, no password.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The binaries this cluster runs.
    pub fn binaries(&self) -> &PgBinaries {
        &self.opts.bins
    }

    /// The name given in [`ClusterOptions::name`].
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `sql` with `psql -X -At -v ON_ERROR_STOP=1` on `db` (statements
    /// one by one, as a script, so `CREATE DATABASE` and `VACUUM` work) and
    /// returns its stdout without the trailing newline. The error carries
    /// psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let psql = self.client_bin("psql");
        let mut child = client_command(&psql)
            .args([
                "-X",
                "-At",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                HOST,
                "-U",
                SUPERUSER,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .args(["-f", "-"])
            .env("PGCONNECT_TIMEOUT", "30")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not run {}", psql.display()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let script = sql.to_owned();
        // Fed from a thread so a long script and a long result cannot block
        // each other on full pipes. A write error (psql exited early) shows
        // up in its status and stderr.
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(script.as_bytes());
        });
        let out = child.wait_with_output()?;
        let _ = feeder.join();
        if !out.status.success() {
            bail!(
                "psql on cluster {} (port {}), database {db:?}, failed ({}): {}\nSQL: {}",
                self.opts.name,
                self.port,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                sql
            );
        }
        let mut text = String::from_utf8(out.stdout).context("psql printed non-UTF-8")?;
        while text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Waits up to `within` for replication slot `slot` to have no consumer. A consumer killed a
    /// moment ago holds its slot until the walsender notices it is gone.
    pub fn wait_slot_inactive(&self, db: &str, slot: &str, within: Duration) -> anyhow::Result<()> {
        let sql = format!(
            "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = '{}'",
            slot.replace('\'', "''")
        );
        eventually(within, || {
            let active = self.psql(db, &sql)?;
            anyhow::ensure!(
                active == "f",
                "slot {slot} still active (active = {active:?})"
            );
            Ok(())
        })
        .with_context(|| format!("slot {slot} on cluster {} not released", self.opts.name))
    }

    /// `CREATE DATABASE "name"` (the name quoted as an identifier).
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )?;
        Ok(())
    }

    /// A `tokio_postgres` client for `db`, as `postgres` over TCP, without
    /// TLS; the connection task is spawned on the current tokio runtime.
    pub async fn connect(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(HOST)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db)
            .application_name("blueshift-tests")
            .connect_timeout(Duration::from_secs(30))
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| {
                format!(
                    "could not connect to cluster {} (port {}), database {db:?}",
                    self.opts.name, self.port
                )
            })?;
        let name = self.opts.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(cluster = %name, error = %e, "test connection ended");
            }
        });
        Ok(client)
    }

    /// Leaves the server running and its files in place: dropping the returned value does
    /// nothing. Returns the shell command that stops the server and removes its files.
    pub fn keep(mut self) -> String {
        self.running = false;
        self.root.disable_cleanup(true);
        let as_server_user = if rustix::process::geteuid().is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "{as_server_user}{} stop -m fast -D '{}' && rm -rf '{}'",
            self.opts.bins.bin("pg_ctl").display(),
            self.data_dir.display(),
            self.root.path().display()
        )
    }

    /// Stops the server (`pg_ctl stop -m fast`, waiting).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.pg_ctl(&["stop", "-m", "fast"])
            .with_context(|| format!("could not stop cluster {}", self.opts.name))?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped (or crashed: it recovers) server on the same port
    /// and waits until it accepts connections.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let log = self.log_file.clone();
        self.pg_ctl(&["start", "-l", path_str(&log)?])
            .with_context(|| self.failure_text("could not start"))?;
        self.running = true;
        self.crashed_shmid = None;
        self.wait_ready()
    }

    /// An outage of a cluster shared behind `&` (the bench's): `pg_ctl stop -m fast`, waiting.
    /// [`Cluster::end_outage`] starts it again on the same port; until then it still counts as
    /// running (dropping it in between only warns that it could not be stopped).
    pub fn begin_outage(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["stop", "-m", "fast"])
            .with_context(|| format!("could not stop cluster {}", self.opts.name))
    }

    /// Ends [`Cluster::begin_outage`]: starts the server and waits until it accepts connections.
    pub fn end_outage(&self) -> anyhow::Result<()> {
        let log = self.log_file.clone();
        self.pg_ctl(&["start", "-l", path_str(&log)?])
            .with_context(|| self.failure_text("could not start"))?;
        self.wait_ready()
    }

    /// Restarts the server (`pg_ctl restart -m fast`, waiting).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let log = self.log_file.clone();
        self.pg_ctl(&["restart", "-m", "fast", "-l", path_str(&log)?])
            .with_context(|| self.failure_text("could not restart"))?;
        self.running = true;
        self.crashed_shmid = None;
        self.wait_ready()
    }

    /// `kill -9` of the postmaster, as an OOM killer or a crash would. Its
    /// children notice and exit on their own; this returns once they have
    /// (so [`Cluster::start_again`], which recovers, can start at once).
    pub fn crash(&mut self) -> anyhow::Result<()> {
        let pid = self
            .postmaster_pid()
            .with_context(|| format!("cluster {} is not running", self.opts.name))?;
        let children = child_pids(pid);
        kill9(pid).with_context(|| format!("could not kill postmaster {pid}"))?;
        self.running = false;
        let mut waiting: Vec<i32> = children;
        waiting.push(pid);
        if wait_for_exit(&mut waiting, Duration::from_secs(30)).is_err() {
            // Backends stuck where they do not watch for postmaster death:
            // finish the crash by hand.
            tracing::warn!(cluster = %self.opts.name, "children of the killed postmaster linger; killing them");
            for p in waiting.clone() {
                let _ = kill9(p);
            }
            wait_for_exit(&mut waiting, Duration::from_secs(10))?;
        }
        // The dead postmaster and its children stay zombies until init
        // reaps them, which can take a second or two, and a new postmaster
        // takes a zombie's pid in a lock file for a live server. A zombie
        // never runs again, so its lock files are stale: remove them (keeping
        // the System V segment id, for `Drop` to free if no start follows;
        // a new postmaster recycles that segment itself).
        self.crashed_shmid = self.postmaster_shmid();
        if PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(self.data_dir.join("postmaster.pid"));
            let _ = fs::remove_file(self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port)));
        }
        Ok(())
    }

    /// The server log so far (all starts of this cluster).
    pub fn log(&self) -> String {
        fs::read(&self.log_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        run(
            server_command(&self.opts.bins.bin("pg_ctl"), self.root.path())?
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", PG_CTL_TIMEOUT_SECS])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?;
        Ok(())
    }

    /// Immediate shutdown (what `pg_ctl stop -m immediate` does: SIGQUIT to
    /// the postmaster, which ends its children and frees shared memory), but
    /// waiting with a short poll instead of `pg_ctl`'s 100 ms steps; `kill
    /// -9` if that takes more than 30 s.
    fn stop_immediately(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        self.running = false;
        let rpid = rustix::process::Pid::from_raw(pid).context("pid 0 is not a process")?;
        if rustix::process::kill_process(rpid, rustix::process::Signal::QUIT).is_err() {
            return Ok(()); // Already gone.
        }
        let mut waiting = vec![pid];
        if wait_for_exit(&mut waiting, Duration::from_secs(30)).is_err() {
            for p in child_pids(pid).into_iter().chain([pid]) {
                let _ = kill9(p);
            }
            bail!("postmaster {pid} ignored an immediate shutdown for 30 s; killed");
        }
        Ok(())
    }

    /// `pg_ctl -w` waited for the postmaster; also wait until TCP
    /// connections are accepted, bounded.
    fn wait_ready(&self) -> anyhow::Result<()> {
        let isready = self.client_bin("pg_isready");
        eventually(Duration::from_secs(60), || {
            run(client_command(&isready)
                .args(["-q", "-h", HOST, "-U", SUPERUSER, "-d", "postgres", "-p"])
                .arg(self.port.to_string()))
            .map(drop)
        })
        .with_context(|| self.failure_text("not accepting connections"))
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The System V shared memory id in `postmaster.pid` (line 7: key, id).
    fn postmaster_shmid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().nth(6)?.split_whitespace().nth(1)?.parse().ok()
    }

    /// A client program from this cluster's binaries, else from `PATH`.
    fn client_bin(&self, name: &str) -> PathBuf {
        let own = self.opts.bins.bin(name);
        if own.is_file() {
            own
        } else {
            PathBuf::from(name)
        }
    }

    fn conf_text(&self, base: &str) -> String {
        let mut conf = base.to_owned();
        conf.push_str("\n# --- blueshift test harness ---\n");
        let socket_dir = self.socket_dir.to_string_lossy();
        let port = self.port.to_string();
        let defaults: [(&str, &str); 13] = [
            ("listen_addresses", HOST),
            ("port", &port),
            ("unix_socket_directories", &socket_dir),
            ("cluster_name", &self.opts.name),
            ("wal_level", "logical"),
            ("max_replication_slots", "20"),
            ("max_wal_senders", "20"),
            ("max_prepared_transactions", "10"),
            // Safe for tests: see the module docs.
            ("fsync", "off"),
            ("logging_collector", "off"),
            ("log_line_prefix", "%m [%p] %q%u@%d "),
            ("log_timezone", "UTC"),
            ("timezone", "UTC"),
        ];
        let settings = defaults.iter().map(|(k, v)| (*k, *v)).chain(
            self.opts
                .settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        for (key, value) in settings {
            let _ = writeln!(conf, "{key} = '{}'", value.replace('\'', "''"));
        }
        conf
    }

    fn failure_text(&self, what: &str) -> String {
        format!(
            "{what} cluster {} (PostgreSQL {}, port {}); server log:\n{}",
            self.opts.name,
            self.opts.bins.version(),
            self.port,
            tail(&self.log(), 40)
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== server log of cluster {} (PostgreSQL {}, port {}), last {LOG_TAIL_LINES} lines =====\n{}\n===== end of server log of cluster {} =====",
                self.opts.name,
                self.opts.bins.version(),
                self.port,
                tail(&self.log(), LOG_TAIL_LINES),
                self.opts.name
            );
        }
        if self.running {
            if let Err(e) = self.stop_immediately() {
                tracing::warn!(cluster = %self.opts.name, error = %format!("{e:#}"), "could not stop the cluster cleanly");
            }
        }
        if let Some(shmid) = self.crashed_shmid.take() {
            let _ = std::process::Command::new("ipcrm")
                .args(["-m", &shmid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        // The processes of a crashed cluster were waited for in `crash`; the
        // TempDir removes the files when it drops, after this.
    }
}

/// Where cluster temp folders go by default; see [`ClusterOptions::base_dir`].
fn default_base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BLUESHIFT_PG_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    const MIN_FREE: u64 = 2 << 30;
    let shm = Path::new("/dev/shm");
    match rustix::fs::statvfs(shm) {
        Ok(st)
            if st.f_bavail.saturating_mul(st.f_frsize) >= MIN_FREE
                && rustix::fs::access(shm, rustix::fs::Access::WRITE_OK).is_ok() =>
        {
            shm.to_path_buf()
        }
        _ => std::env::temp_dir(),
    }
}

pub use blueshift_decoder::ident::quote_ident;

/// Copies the server's certificate, key and CA into `root` and returns the settings naming them.
fn install_tls(
    root: &Path,
    files: &crate::certs::CertFiles,
) -> anyhow::Result<Vec<(String, String)>> {
    let dir = root.join("tls");
    fs::create_dir(&dir)?;
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let ca = dir.join("ca.crt");
    fs::copy(&files.cert, &cert).context("could not copy the server certificate")?;
    fs::copy(&files.ca, &ca).context("could not copy the CA certificate")?;
    let key_text = fs::read_to_string(&files.key).context("could not read the server key")?;
    crate::certs::write_private(&key, &key_text)?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    Ok(vec![
        ("ssl".to_owned(), "on".to_owned()),
        ("ssl_cert_file".to_owned(), path(&cert)),
        ("ssl_key_file".to_owned(), path(&key)),
        ("ssl_ca_file".to_owned(), path(&ca)),
    ])
}

fn write_hba(data_dir: &Path, test_lines: &[String], only_given: bool) -> anyhow::Result<()> {
    let mut hba = String::from("# blueshift test harness\n");
    for line in test_lines {
        hba.push_str(line);
        hba.push('\n');
    }
    if only_given {
        return fs::write(data_dir.join("pg_hba.conf"), hba).context("could not write pg_hba.conf");
    }
    hba.push_str(
        "local all all trust\n\
         host all all 127.0.0.1/32 trust\n\
         local replication all trust\n\
         host replication all 127.0.0.1/32 trust\n",
    );
    fs::write(data_dir.join("pg_hba.conf"), hba).context("could not write pg_hba.conf")
}

/// A loopback port nobody listens on right now (bound, read, closed): for a cluster, a
/// PgBouncer, or a metrics endpoint a test starts.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((HOST, 0)).context("could not bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(crate) fn kill9(pid: i32) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid).context("pid 0 is not a process")?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
    Ok(())
}

/// Waits (bounded) until every pid in `waiting` has exited.
pub(crate) fn wait_for_exit(waiting: &mut Vec<i32>, within: Duration) -> anyhow::Result<()> {
    eventually(within, || {
        waiting.retain(|p| process_alive(*p));
        if waiting.is_empty() {
            Ok(())
        } else {
            bail!("processes {waiting:?} of the killed postmaster are still alive")
        }
    })
}

pub(crate) fn process_alive(pid: i32) -> bool {
    // A zombie has exited (its parent has not reaped it yet).
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The pids whose parent is `parent` (from `/proc/*/stat`).
fn child_pids(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
