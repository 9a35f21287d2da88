//! Connection strings given on the command line.

use anyhow::Context as _;
use blueshift_decoder::config::ConnectConfig;

/// Parses a connection string given as `flag`, with the `PG*` environment as fallback, and warns
/// when it carries a password (command lines are visible to every user of the machine).
pub(crate) fn parse(flag: &str, conninfo: &str) -> anyhow::Result<ConnectConfig> {
    let own = ConnectConfig::from_conninfo_with_env(conninfo, |_| None)
        .with_context(|| format!("invalid {flag} connection string"))?;
    if own.password().is_some() {
        tracing::warn!(
            flag,
            "the connection string carries a password, which other users can read in the process list; use ~/.pgpass or PGPASSWORD instead"
        );
    }
    ConnectConfig::from_conninfo(conninfo)
        .with_context(|| format!("invalid {flag} connection string"))
}

/// Which sync a command is about: blue, green and the slot (`status`, `cleanup`).
#[derive(Debug, clap::Args)]
pub(crate) struct SyncEndpoints {
    /// Source (blue) database: a libpq URI or key=value string. PG* variables fill the gaps.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_SOURCE",
        hide_env_values = true
    )]
    source: String,

    /// Target (green) database: a libpq URI or key=value string.
    #[arg(
        long,
        value_name = "URI",
        env = "BLUESHIFT_TARGET",
        hide_env_values = true
    )]
    target: String,

    /// The sync's replication slot on blue; its origins on green are blueshift_<slot>_<n>.
    #[arg(long, value_name = "NAME", default_value = blueshift_engine::sync::DEFAULT_SLOT)]
    pub(crate) slot: String,
}

impl SyncEndpoints {
    /// Blue's settings.
    pub(crate) fn source(&self) -> anyhow::Result<ConnectConfig> {
        parse("--source", &self.source)
    }

    /// Green's settings.
    pub(crate) fn target(&self) -> anyhow::Result<ConnectConfig> {
        parse("--target", &self.target)
    }
}
