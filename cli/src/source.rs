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
