//! Blue and green: throwaway clusters started with the test harness, or existing servers given
//! with `--source`/`--target`. Either way a [`Server`] is a host, a port, a role and the
//! PostgreSQL client programs to run against it; the bench creates its own databases on it.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use blueshift_decoder::config::{ConnectConfig, Host, Password};
use blueshift_tests::{quote_ident, Cluster, ClusterOptions, PgBinaries};

use crate::options::Validated;
use crate::say;

/// The `application_name` of the bench's own sessions (setup, markers, checks, watchers): never
/// counted as a consumer's sessions, though it starts with `blueshift`.
pub(crate) const BENCH_APPLICATION_NAME: &str = "blueshift-bench";

/// Both servers of a bench run.
#[derive(Debug)]
pub(crate) struct Servers {
    pub(crate) blue: Server,
    pub(crate) green: Server,
}

/// One server the bench runs on.
pub(crate) struct Server {
    pub(crate) role: &'static str,
    host: Host,
    port: u16,
    user: String,
    password: Option<Password>,
    maintenance_db: String,
    bins: PgBinaries,
    /// Its processes are on this machine, so /proc tells their memory and CPU.
    local: bool,
    /// Kept alive (a throwaway cluster stops and is removed on drop).
    cluster: Option<Cluster>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Server({} {}@{}:{})",
            self.role, self.user, self.host, self.port
        )
    }
}

impl Servers {
    /// Starts blue and green with the harness, or connects to the given endpoints.
    pub(crate) async fn start(options: &Validated) -> anyhow::Result<Servers> {
        let bins = match &options.pg_bin {
            Some(dir) => PgBinaries::at(dir)?,
            None => PgBinaries::from_env()?,
        };
        let servers = match &options.endpoints {
            Some(ends) => Servers {
                blue: Server::external("blue", &ends.source, &bins)?,
                green: Server::external("green", &ends.target, &bins)?,
            },
            None => {
                let opts = |name: &str| cluster_options(options, &bins, name);
                let blue = Cluster::start(opts("bench-blue"))?;
                let green = Cluster::start(opts("bench-green"))?;
                Servers {
                    blue: Server::cluster("blue", blue),
                    green: Server::cluster("green", green),
                }
            }
        };
        for s in [&servers.blue, &servers.green] {
            let version = s.value(&s.maintenance_db, "SHOW server_version").await?;
            let level = s.value(&s.maintenance_db, "SHOW wal_level").await?;
            say(format!(
                "{}: PostgreSQL {version} at {}:{}, wal_level {level}",
                s.role, s.host, s.port
            ));
        }
        let level = servers
            .blue
            .value(&servers.blue.maintenance_db, "SHOW wal_level")
            .await?;
        ensure!(
            level == "logical",
            "blue has wal_level = {level}; logical replication needs wal_level = logical \
             (set it in postgresql.conf and restart blue)"
        );
        Ok(servers)
    }
}

/// The settings of the throwaway clusters: the same on blue and green, fsync on. PostgreSQL 18
/// changed defaults (io_method, subscriptions' streaming): the ones that matter are set
/// explicitly so that majors compare.
fn cluster_options(options: &Validated, bins: &PgBinaries, name: &str) -> ClusterOptions {
    let mut o = ClusterOptions::new(bins.clone())
        .name(name)
        .setting("fsync", "on")
        .setting("synchronous_commit", "on")
        .setting(
            "shared_buffers",
            if options.smoke { "128MB" } else { "1GB" },
        )
        .setting("max_wal_size", "4GB")
        .setting("checkpoint_timeout", "15min")
        .setting("max_worker_processes", "16")
        .setting("max_logical_replication_workers", "8")
        .setting("max_sync_workers_per_subscription", "2")
        .setting("max_connections", "100")
        .setting("logical_decoding_work_mem", "64MB")
        // Two-way sync (the bidirectional scenario) tells conflicts apart by commit timestamps;
        // on for every scenario, so every side of every scenario pays the same for it.
        .setting("track_commit_timestamp", "on");
    if bins.major_version() >= 16 {
        o = o.setting("max_parallel_apply_workers_per_subscription", "2");
    }
    if bins.major_version() >= 18 {
        o = o.setting("io_method", "worker");
    }
    if let Some(dir) = options.data_dir() {
        o = o.base_dir(dir);
    }
    o
}

impl Server {
    fn cluster(role: &'static str, cluster: Cluster) -> Server {
        Server {
            role,
            host: Host::Tcp(cluster.host().to_owned()),
            port: cluster.port(),
            user: cluster.superuser().to_owned(),
            password: None,
            maintenance_db: "postgres".to_owned(),
            bins: cluster.binaries().clone(),
            local: true,
            cluster: Some(cluster),
        }
    }

    fn external(role: &'static str, conninfo: &str, bins: &PgBinaries) -> anyhow::Result<Server> {
        let config = ConnectConfig::from_conninfo(conninfo)
            .with_context(|| format!("invalid connection string for {role}"))?;
        let local = match config.host() {
            Host::Unix(_) => true,
            Host::Tcp(h) => matches!(h.as_str(), "localhost" | "127.0.0.1" | "::1"),
        };
        Ok(Server {
            role,
            host: config.host().clone(),
            port: config.port(),
            user: config.user().to_owned(),
            password: config.password_for_auth(),
            maintenance_db: config.dbname().to_owned(),
            bins: bins.clone(),
            local,
            cluster: None,
        })
    }

    /// The database the bench connects to for server-wide statements.
    pub(crate) fn maintenance_db(&self) -> &str {
        &self.maintenance_db
    }

    pub(crate) fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    pub(crate) fn is_local(&self) -> bool {
        self.local
    }

    pub(crate) fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }

    /// The throwaway cluster behind it, if it is one.
    pub(crate) fn throwaway(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The server log of a throwaway cluster (empty otherwise), for error messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        self.cluster
            .as_ref()
            .map(|c| tail(&c.log(), lines))
            .unwrap_or_default()
    }

    /// A key=value connection string for `db`, without the password (child processes get it
    /// in `PGPASSWORD` or a password file, never in their arguments).
    pub(crate) fn conninfo(&self, db: &str) -> String {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        };
        format!(
            "host={} port={} user={} dbname={}",
            conninfo_value(&host),
            self.port,
            conninfo_value(&self.user),
            conninfo_value(db)
        )
    }

    /// [`Server::conninfo`] with the password, for `CREATE SUBSCRIPTION … CONNECTION`.
    pub(crate) fn conninfo_with_password(&self, db: &str) -> String {
        match &self.password {
            Some(p) => format!(
                "{} password={}",
                self.conninfo(db),
                conninfo_value(p.expose())
            ),
            None => self.conninfo(db),
        }
    }

    /// The password to hand a child process (in its environment), if any.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_ref().map(Password::expose)
    }

    /// A client connection to `db`.
    pub(crate) async fn connect(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        match &self.host {
            Host::Tcp(h) => config.host(h),
            Host::Unix(dir) => config.host_path(dir),
        };
        config
            .port(self.port)
            .user(&self.user)
            .dbname(db)
            .application_name(BENCH_APPLICATION_NAME)
            .connect_timeout(Duration::from_secs(30));
        if let Some(p) = &self.password {
            config.password(p.expose());
        }
        let (client, connection) =
            config
                .connect(tokio_postgres::NoTls)
                .await
                .with_context(|| {
                    format!(
                        "could not connect to {} ({}:{}), database {db:?}",
                        self.role, self.host, self.port
                    )
                })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Runs `sql` (one or more statements, simple protocol) on `db`.
    pub(crate) async fn execute(&self, db: &str, sql: &str) -> anyhow::Result<()> {
        let client = self.connect(db).await?;
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("on {}/{db}: {sql}", self.role))
    }

    /// The first column of the first row of `sql` on `db`, as text ("" for NULL or no row).
    pub(crate) async fn value(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let client = self.connect(db).await?;
        query_value(&client, sql)
            .await
            .with_context(|| format!("on {}/{db}: {sql}", self.role))
    }

    /// Drops (if present, forcing connections out) and creates database `db`.
    pub(crate) async fn recreate_database(&self, db: &str) -> anyhow::Result<()> {
        self.drop_database(db).await?;
        self.execute(
            &self.maintenance_db,
            &format!("CREATE DATABASE {}", quote_ident(db)),
        )
        .await
    }

    pub(crate) async fn drop_database(&self, db: &str) -> anyhow::Result<()> {
        self.execute(
            &self.maintenance_db,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db)),
        )
        .await
    }

    /// A command for one of the PostgreSQL client programs (`pgbench`, `pg_dump`, …) aimed at
    /// this server through `PG*` variables, in a cleared environment.
    pub(crate) fn command(&self, program: &str) -> Command {
        let own = self.bins.bin(program);
        let bin = if own.is_file() {
            own
        } else {
            PathBuf::from(program)
        };
        let mut cmd = Command::new(bin);
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        };
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C")
            .env("PGHOST", host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGCONNECT_TIMEOUT", "30")
            .stdin(Stdio::null());
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p.expose());
        }
        cmd
    }

    /// Runs a client program to completion; its stdout, or an error with its stderr.
    pub(crate) async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::from(self.command(program));
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .with_context(|| format!("could not run {program}"))?;
        ensure!(
            out.status.success(),
            "{program} {} on {} failed ({}): {}",
            args.join(" "),
            self.role,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The first column of the first row, as text.
pub(crate) async fn query_value(
    client: &tokio_postgres::Client,
    sql: &str,
) -> anyhow::Result<String> {
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or_default().to_owned());
        }
    }
    Ok(String::new())
}

/// A value in a key=value connection string: quoted, `\` and `'` escaped.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A string as an SQL literal.
pub(crate) fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
