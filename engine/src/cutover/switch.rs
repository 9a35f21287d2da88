//! The switch: where clients' new transactions go.
//!
//! Either PgBouncer's database entry is re-pointed in its configuration file and PgBouncer
//! told to `RELOAD` (transactions queued by `PAUSE` then go to the new server at `RESUME`), or
//! the operator's `--switch-command` runs (DNS, HAProxy, a Kubernetes Service…) with
//! `BLUESHIFT_TARGET_HOST`, `BLUESHIFT_TARGET_PORT`, `BLUESHIFT_TARGET_DBNAME` and
//! `BLUESHIFT_SWITCH_DIRECTION` (`to-green` or `to-blue`) in its environment; its exit status
//! decides. Both are idempotent: the same switch twice leaves the same result.

use std::path::PathBuf;
use std::time::Duration;

use super::bouncer::Admin;
use super::entry::{self, Endpoint};
use super::error::CutoverError;

/// How traffic is switched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// Rewrite entry `database` in `file`, then `RELOAD`.
    File {
        /// The file holding the entry.
        file: PathBuf,
        /// The entry's name.
        database: String,
    },
    /// Run this shell command.
    Command(String),
}

/// Points traffic at `to` (`side` names it): `value` is the entry's full connection string for
/// a file switch.
pub(crate) async fn point(
    switch: &Switch,
    admin: Option<&Admin>,
    value: &str,
    to: &Endpoint,
    side: &'static str,
    within: Duration,
) -> Result<(), CutoverError> {
    match switch {
        Switch::File { file, database } => {
            entry::write(file, database, value)?;
            let Some(admin) = admin else {
                return Err(CutoverError::State(
                    "a PgBouncer file switch needs --pgbouncer (how clients reach PgBouncer)"
                        .to_owned(),
                ));
            };
            admin.reload().await
        }
        Switch::Command(command) => {
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(command)
                .env("BLUESHIFT_TARGET_HOST", &to.host)
                .env("BLUESHIFT_TARGET_PORT", to.port.to_string())
                .env("BLUESHIFT_TARGET_DBNAME", &to.dbname)
                .env(
                    "BLUESHIFT_SWITCH_DIRECTION",
                    if side == "green" {
                        "to-green"
                    } else {
                        "to-blue"
                    },
                )
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let keep = if side == "green" { "blue" } else { "green" };
            let mut child = cmd.spawn().map_err(|e| CutoverError::SwitchCommand {
                status: format!("cannot start /bin/sh: {e}"),
                side: keep,
            })?;
            match tokio::time::timeout(within, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(CutoverError::SwitchCommand {
                    status: status.to_string(),
                    side: keep,
                }),
                Ok(Err(e)) => Err(CutoverError::SwitchCommand {
                    status: format!("cannot wait for it: {e}"),
                    side: keep,
                }),
                Err(_) => {
                    let _ = child.kill().await;
                    Err(CutoverError::SwitchCommand {
                        status: format!("still running after {} ms, killed", within.as_millis()),
                        side: keep,
                    })
                }
            }
        }
    }
}
