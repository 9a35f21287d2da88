//! Throwaway PostgreSQL clusters for tests, the demo and the bench: find a
//! binaries folder ([`PgBinaries`]), start a server configured for logical
//! replication on a free loopback port ([`Cluster::start`]), talk to it
//! (`psql`, `tokio_postgres`), stop, restart, crash it, and remove it on
//! `Drop`.
//!
//! ```no_run
//! use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};
//!
//! let blue = Cluster::start(ClusterOptions::new(PgBinaries::major(15)?).name("blue"))?;
//! let green = Cluster::start(ClusterOptions::new(PgBinaries::major(18)?).name("green"))?;
//! blue.create_database("app")?;
//! assert_eq!(blue.psql("app", "SHOW wal_level")?, "logical");
//! # let _ = green;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Missing binaries are an error naming the install command
//! (`scripts/install-postgres`, `scripts/fetch-postgres <major>`); tests
//! fail with it, they never skip. Majors other than Debian's 15 live in
//! `${BLUESHIFT_PG_CACHE:-/var/cache/blueshift/postgresql}/<major>/bin`.
//!
//! A start copies a cached `initdb` result (see the `template` module) into
//! `/dev/shm` (see [`ClusterOptions::base_dir`]): about 0.2 s on these
//! machines, against about 2 s for the first start of a binaries folder.
//! The `pg-binaries` program prints the folder for a major, for scripts.

mod binaries;
mod certs;
mod cluster;
mod command;
mod eventually;
mod pgbouncer;
mod program;
mod template;
mod tools;

pub use binaries::{cache_dir, fetch_script, install_command, PgBinaries, DEFAULT_CACHE_DIR};
pub use certs::{CertFiles, TestPki};
pub use cluster::{free_port, quote_ident, Cluster, ClusterOptions};
pub use eventually::{eventually, eventually_async};
pub use pgbouncer::{
    pgbouncer_binary, DatabaseEntry, PgBouncer, PgBouncerOptions, PGBOUNCER_INSTALL_COMMAND,
};
pub use program::{blueshift_binary, succeeded};
pub use tools::{assert_promtool_accepts, docker_compose, promtool, TOOLS_INSTALL_COMMAND};
