//! `blueshift status`: where a blue → green sync stands (slot, green's progress, lag, WAL
//! retained), read from the two servers.

use anyhow::Context as _;
use blueshift_engine::status::{self, StatusOptions};

use crate::exit::Differences;
use crate::settings;

/// Show where a sync stands: the slot on blue, green's durable position, the lag, the WAL kept.
///
/// From blue: the replication slot (active or not, plugin, confirmed_flush_lsn, restart_lsn,
/// wal_status, safe_wal_size), pg_current_wal_lsn() and the WAL retained for the slot. From
/// green: each applier's replication origin (blueshift_<slot>_<n>) and its progress; their
/// maximum is what green durably holds. The lag, computed as the running sync computes its
/// metrics: in bytes, blue's current position minus what green holds (or the slot's confirmed
/// position when further); in seconds, the age of the oldest commit green does not hold, from
/// the heartbeat the sync records on green — it keeps growing while the sync is stopped.
///
/// Exits 1 when the report lists a problem (a lost or unreserved slot, a slot that is not the
/// one blueshift left…), after printing it.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # How far behind is green?
  blueshift status --source 'postgresql://replicator@blue:5432/app' \\
      --target 'postgresql://blueshift@green:5432/app'

  # The same for a sync started with --slot app_sync, as JSON for a script
  blueshift status --source \"$BLUE\" --target \"$GREEN\" --slot app_sync --json | jq .lag_bytes

  # Read the sidecar's own settings file (source, target, slot)
  blueshift status --config /etc/blueshift/sync.toml

Settings as for every command: the command line, then BLUESHIFT_* variables (BLUESHIFT_SLOT…),
then --config. Passwords: --source-password-file/--target-password-file, PGPASSWORD or
~/.pgpass; one inside a URI works but is visible to other users in the process list.")]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pair: settings::PairArgs,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let settings::Pair {
        source,
        target,
        slot,
        ..
    } = args.pair.resolve()?;
    let options = StatusOptions {
        source,
        target,
        slot,
    };
    let status = status::status(&options)
        .await
        .context("blueshift status failed")?;
    // The cutover's state machine, when a cutover ever ran for this slot.
    let cutover = blueshift_engine::cutover::status(&options.target, &options.slot)
        .await
        .context("blueshift status could not read the cutover state")?;
    let text = if args.json {
        let mut json = status.to_json();
        json["cutover"] = cutover
            .as_ref()
            .map_or(serde_json::Value::Null, |c| c.to_json());
        format!("{json}\n")
    } else {
        let mut text = status.to_string();
        if let Some(c) = &cutover {
            text.push_str(&c.to_string());
        }
        text
    };
    print(&text)?;
    // A script must not read "all is well" from a report that lists problems.
    if !status.problems.is_empty() {
        return Err(anyhow::Error::new(Differences(format!(
            "status lists {} problem(s) (the PROBLEM lines above): {}",
            status.problems.len(),
            status.problems.join("; ")
        ))));
    }
    Ok(())
}

/// Writes `text` to stdout; a closed stdout (`| head`) is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write to stdout"),
    }
}
