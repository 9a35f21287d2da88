//! Shared by the `migrate_*` and `plan_*` tests: a cluster, a database per test, a folder of
//! scripts, connections through the engine's own client, and the `blueshift` binary.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_engine::migrate::{LockWait, MigrateConfig, Migrator};
use blueshift_tests::{blueshift_binary, Cluster, ClusterOptions, PgBinaries};
use tempfile::TempDir;

/// A running cluster with one database for the test, and a folder for its scripts.
pub(crate) struct Fixture {
    pub(crate) cluster: Cluster,
    pub(crate) db: String,
    pub(crate) dir: TempDir,
}

impl Fixture {
    /// A new cluster, database `db` on it, and an empty scripts folder.
    pub(crate) fn new(db: &str) -> Fixture {
        let bins = PgBinaries::from_env().expect("the default PostgreSQL binaries");
        let cluster =
            Cluster::start(ClusterOptions::new(bins).name("migrate")).expect("cluster starts");
        cluster.create_database(db).expect("database is created");
        Fixture {
            cluster,
            db: db.to_owned(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The scripts folder.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a script.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir().join(name);
        fs::write(&path, text).expect("script is written");
        path
    }

    /// The test database's URI.
    pub(crate) fn uri(&self) -> String {
        self.cluster.uri(&self.db)
    }

    /// A connection through the engine's client.
    pub(crate) async fn connect(&self) -> tokio_postgres::Client {
        connect_uri(&self.uri()).await
    }

    /// A migrator on the scripts folder with the default settings.
    pub(crate) fn migrator(&self) -> Migrator {
        Migrator::new(MigrateConfig {
            dir: self.dir().to_owned(),
            lock_wait: LockWait::Forever,
            lock_timeout: Duration::from_secs(2),
        })
    }

    /// `psql` on the test database.
    pub(crate) fn psql(&self, sql: &str) -> String {
        self.cluster.psql(&self.db, sql).expect("psql succeeds")
    }

    /// `blueshift migrate <args> --database <uri> --dir <dir>`.
    pub(crate) fn migrate(&self, args: &[&str]) -> Output {
        let uri = self.uri();
        let dir = self.dir().to_str().expect("temp dir is UTF-8").to_owned();
        let mut all: Vec<&str> = vec!["migrate"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database", &uri, "--dir", &dir]);
        blueshift(&all)
    }
}

/// A migration session through the engine (the user's search_path for scripts) to `uri`; the
/// connection task is spawned.
pub(crate) async fn connect_uri(uri: &str) -> tokio_postgres::Client {
    let config = ConnectConfig::from_conninfo(uri).expect("the harness URI parses");
    let (client, _task) = blueshift_engine::migrate::connect(&config, "blueshift-tests")
        .await
        .expect("connects");
    client
}

/// Runs `blueshift <args>` with a clean logging setup and no `DATABASE_URL`.
pub(crate) fn blueshift(args: &[&str]) -> Output {
    Command::new(blueshift_binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("blueshift runs")
}

/// stdout as text.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
