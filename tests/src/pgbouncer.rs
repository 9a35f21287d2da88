//! A throwaway PgBouncer in front of test clusters: the real pooler the cutover switches, run as
//! the `postgres` OS user (PgBouncer refuses root, like the server), in transaction pooling, on a
//! free loopback port, torn down on `Drop`.
//!
//! Layout of its temp folder:
//!
//! ```text
//! pgbouncer.ini   [pgbouncer] settings; its [databases] section is `%include databases.ini`
//! databases.ini   one line per database entry: what the cutover rewrites, then RELOADs
//! userlist.txt    auth_file: the users clients may log in as (trust authentication)
//! pgbouncer.log   the log; pgbouncer.pid the daemon's pid
//! sock/           unix_socket_dir
//! ```
//!
//! The admin console is the virtual database `pgbouncer` on the same listener, open to
//! `postgres` (`admin_users`); [`PgBouncer::admin`] runs a command there with psql.
//!
//! PgBouncer comes from Debian's package (`apt-get install pgbouncer`; `scripts/install-postgres`
//! installs it). When it is missing, [`PgBouncer::start`] fails with that command: tests never
//! skip.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use crate::cluster::{free_port, kill9, percent_encode, process_alive, wait_for_exit, HOST};
use crate::command::{chown_to_server_user, run, server_command};
use crate::eventually::eventually;
use crate::Cluster;

/// Where Debian's package puts the binary.
const DEBIAN_BINARY: &str = "/usr/sbin/pgbouncer";

/// The command that installs PgBouncer on these machines.
pub const PGBOUNCER_INSTALL_COMMAND: &str =
    "apt-get install -y pgbouncer (or scripts/install-postgres)";

/// The PgBouncer binary: `BLUESHIFT_PGBOUNCER`, else Debian's, else `pgbouncer` on `PATH`.
pub fn pgbouncer_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("BLUESHIFT_PGBOUNCER") {
        return Ok(PathBuf::from(path));
    }
    if Path::new(DEBIAN_BINARY).is_file() {
        return Ok(PathBuf::from(DEBIAN_BINARY));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pgbouncer"))
            .find(|p| p.is_file())
    });
    found.with_context(|| {
        format!("PgBouncer is not installed; install it with: {PGBOUNCER_INSTALL_COMMAND}")
    })
}

/// One `[databases]` entry: the name clients use and where PgBouncer sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    /// The database name clients connect to.
    pub name: String,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The database on the server.
    pub dbname: String,
}

impl DatabaseEntry {
    /// `name` on `cluster`, database `dbname`.
    pub fn on(name: &str, cluster: &Cluster, dbname: &str) -> DatabaseEntry {
        DatabaseEntry {
            name: name.to_owned(),
            host: cluster.host().to_owned(),
            port: cluster.port(),
            dbname: dbname.to_owned(),
        }
    }

    /// The line in `databases.ini` (PgBouncer 1.18 takes unquoted names only: the harness
    /// uses plain ones).
    pub fn line(&self) -> String {
        assert!(
            self.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "the harness's database names are plain: {:?}",
            self.name
        );
        format!(
            "{} = host={} port={} dbname='{}'",
            self.name,
            self.host,
            self.port,
            self.dbname.replace('\\', "\\\\").replace('\'', "\\'")
        )
    }
}

/// What a [`PgBouncer`] is started with.
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    databases: Vec<DatabaseEntry>,
    users: Vec<String>,
    settings: Vec<(String, String)>,
    name: String,
}

impl PgBouncerOptions {
    /// No databases yet, user `postgres`, transaction pooling.
    pub fn new() -> PgBouncerOptions {
        PgBouncerOptions {
            databases: Vec::new(),
            users: vec!["postgres".to_owned()],
            settings: Vec::new(),
            name: "pgbouncer".to_owned(),
        }
    }

    /// A `[databases]` entry.
    pub fn database(mut self, entry: DatabaseEntry) -> PgBouncerOptions {
        self.databases.push(entry);
        self
    }

    /// Another user clients may log in as (trust authentication).
    pub fn user(mut self, user: &str) -> PgBouncerOptions {
        self.users.push(user.to_owned());
        self
    }

    /// A `[pgbouncer]` setting, written after the harness's own (so it overrides them).
    pub fn setting(mut self, key: &str, value: &str) -> PgBouncerOptions {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The name used in messages.
    pub fn name(mut self, name: &str) -> PgBouncerOptions {
        self.name = name.to_owned();
        self
    }
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        PgBouncerOptions::new()
    }
}

/// A running PgBouncer. Dropping it kills the daemon and removes its files.
#[derive(Debug)]
pub struct PgBouncer {
    opts: PgBouncerOptions,
    binary: PathBuf,
    port: u16,
    root: TempDir,
    running: bool,
}

impl PgBouncer {
    /// PgBouncer with one entry `db` pointing at `cluster`'s database of the same name.
    pub fn in_front_of(cluster: &Cluster, db: &str) -> anyhow::Result<PgBouncer> {
        PgBouncer::start(PgBouncerOptions::new().database(DatabaseEntry::on(db, cluster, db)))
    }

    /// Writes the configuration and starts the daemon on a free port; returns once it accepts
    /// admin commands.
    pub fn start(opts: PgBouncerOptions) -> anyhow::Result<PgBouncer> {
        let binary = pgbouncer_binary()?;
        let root = tempfile::Builder::new()
            .prefix("blueshift-pgbouncer-")
            .tempdir()
            .context("could not create a temp folder for PgBouncer")?;
        let mut perms = fs::metadata(root.path())?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(root.path(), perms)?;
        fs::create_dir(root.path().join("sock"))?;
        let mut bouncer = PgBouncer {
            opts,
            binary,
            port: 0,
            root,
            running: false,
        };
        let mut last = None;
        for _ in 0..5 {
            bouncer.port = free_port()?;
            bouncer.write_files()?;
            match bouncer.start_again() {
                Ok(()) => return Ok(bouncer),
                Err(e) if bouncer.log().contains("Address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt")).context("no free port for PgBouncer")
    }

    fn write_files(&self) -> anyhow::Result<()> {
        let dir = self.root.path();
        let mut ini = String::new();
        ini.push_str("[databases]\n");
        let _ = writeln!(ini, "%include {}", self.databases_file().display());
        ini.push_str("\n[pgbouncer]\n");
        let port = self.port.to_string();
        let log = dir.join("pgbouncer.log");
        let pid = dir.join("pgbouncer.pid");
        let users = dir.join("userlist.txt");
        let sock = dir.join("sock");
        let defaults: Vec<(&str, String)> = vec![
            ("listen_addr", HOST.to_owned()),
            ("listen_port", port),
            ("unix_socket_dir", sock.display().to_string()),
            ("auth_type", "trust".to_owned()),
            ("auth_file", users.display().to_string()),
            ("admin_users", "postgres".to_owned()),
            ("stats_users", "postgres".to_owned()),
            ("pool_mode", "transaction".to_owned()),
            ("max_client_conn", "1000".to_owned()),
            ("default_pool_size", "40".to_owned()),
            ("logfile", log.display().to_string()),
            ("pidfile", pid.display().to_string()),
            ("ignore_startup_parameters", "extra_float_digits".to_owned()),
            ("server_login_retry", "1".to_owned()),
        ];
        for (k, v) in defaults {
            let _ = writeln!(ini, "{k} = {v}");
        }
        for (k, v) in &self.opts.settings {
            let _ = writeln!(ini, "{k} = {v}");
        }
        fs::write(dir.join("pgbouncer.ini"), ini)?;
        self.write_databases(&self.opts.databases)?;
        let mut list = String::new();
        for user in &self.opts.users {
            let _ = writeln!(list, "\"{}\" \"\"", user.replace('"', "\"\""));
        }
        fs::write(users, list)?;
        if !log.exists() {
            fs::write(&log, "")?;
        }
        chown_to_server_user(dir)?;
        Ok(())
    }

    fn write_databases(&self, entries: &[DatabaseEntry]) -> anyhow::Result<()> {
        let mut text = String::new();
        for entry in entries {
            text.push_str(&entry.line());
            text.push('\n');
        }
        fs::write(self.databases_file(), text)?;
        chown_to_server_user(&self.databases_file())?;
        Ok(())
    }

    /// Starts the daemon again (after [`stop`](Self::stop) or [`crash`](Self::crash)) with the
    /// files as they are, on the same port.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let config = self.config_file();
        run(server_command(&self.binary, self.root.path())?
            .arg("-d")
            .arg(&config))
        .with_context(|| {
            format!(
                "could not start PgBouncer {}:\n{}",
                self.opts.name,
                self.log()
            )
        })?;
        self.running = true;
        eventually(Duration::from_secs(30), || {
            self.admin("SHOW VERSION").map(|_| ())
        })
        .with_context(|| {
            format!(
                "PgBouncer {} did not come up:\n{}",
                self.opts.name,
                self.log()
            )
        })
    }

    /// The listening port on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// `postgresql://postgres@127.0.0.1:PORT/db`, through the pooler.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@{HOST}:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// The admin console's URI (`pgbouncer` database).
    pub fn admin_uri(&self) -> String {
        self.uri("pgbouncer")
    }

    /// `pgbouncer.ini`.
    pub fn config_file(&self) -> PathBuf {
        self.root.path().join("pgbouncer.ini")
    }

    /// The `%include`d file that holds the `[databases]` entries.
    pub fn databases_file(&self) -> PathBuf {
        self.root.path().join("databases.ini")
    }

    /// The PgBouncer log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.root.path().join("pgbouncer.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Runs one admin console command (`SHOW POOLS`, `PAUSE app`, `RELOAD`…) with psql and
    /// returns its unaligned output (`|`-separated, no header).
    pub fn admin(&self, command: &str) -> anyhow::Result<String> {
        let out = Command::new(psql_binary())
            .args(["-X", "-At", "-h", HOST, "-U", "postgres", "-d", "pgbouncer"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(command)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .context("could not run psql")?;
        if !out.status.success() {
            bail!(
                "PgBouncer {} admin command {command:?} failed: {}",
                self.opts.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        while text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Rewrites the `[databases]` entries and RELOADs, as an operator (or the cutover) would.
    pub fn repoint(&self, entries: &[DatabaseEntry]) -> anyhow::Result<()> {
        self.write_databases(entries)?;
        self.admin("RELOAD")?;
        Ok(())
    }

    /// Stops the daemon (SIGINT: immediate shutdown) and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.signal(rustix::process::Signal::INT)
    }

    /// `kill -9` of the daemon: clients lose their connections, as in a crash.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        let pid = self.pid().context("PgBouncer is not running")?;
        kill9(pid)?;
        wait_for_exit(&mut vec![pid], Duration::from_secs(10))?;
        let _ = fs::remove_file(self.root.path().join("pgbouncer.pid"));
        self.running = false;
        Ok(())
    }

    fn signal(&mut self, signal: rustix::process::Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("PgBouncer is not running")?;
        let target = rustix::process::Pid::from_raw(pid).context("pid 0")?;
        rustix::process::kill_process(target, signal)?;
        wait_for_exit(&mut vec![pid], Duration::from_secs(10))?;
        self.running = false;
        Ok(())
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            if process_alive(pid) {
                let _ = kill9(pid);
            }
        }
    }
}

fn psql_binary() -> PathBuf {
    crate::PgBinaries::from_env()
        .map(|b| b.bin("psql"))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"))
}
