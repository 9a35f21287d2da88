//! `blueshift cleanup`: drops what a sync left behind (the slot on blue, blueshift's
//! publication, the origins on green); a dry run unless `--yes`.

use anyhow::Context as _;
use blueshift_engine::cleanup::{self, CleanupOptions};

use crate::settings;

/// Drop the replication slot on blue, blueshift's publication and the origins on green.
///
/// Without --yes nothing is changed: the command prints what it would drop. Dropping the slot
/// loses its stream position, and blue stops keeping WAL for it, so a sync cannot resume after
/// this. An active slot is refused (the process streaming from it is named). A publication is
/// dropped only if its comment says blueshift created it; any other one is left, and the
/// output says so. Running it again when everything is gone reports that there is nothing to
/// do.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # What would be dropped? (changes nothing)
  blueshift cleanup --source 'postgresql://replicator@blue:5432/app' \\
      --target 'postgresql://blueshift@green:5432/app' --publication blueshift_pub

  # Drop it all, after the cutover, for the sync started with --slot app_sync
  blueshift cleanup --source \"$BLUE\" --target \"$GREEN\" --slot app_sync \\
      --publication blueshift_pub --yes

  # Everything from the sidecar's settings file (source, target, slot, publication)
  blueshift cleanup --config /etc/blueshift/sync.toml --yes

Settings as for every command: the command line, then BLUESHIFT_* variables (BLUESHIFT_SLOT…),
then --config. Passwords: --source-password-file/--target-password-file, PGPASSWORD or
~/.pgpass; one inside a URI works but is visible to other users in the process list.")]
pub(crate) struct CleanupArgs {
    #[command(flatten)]
    pair: settings::PairArgs,

    /// The sync's publication on blue, dropped only if blueshift created it (default: the
    /// file's `publication`).
    #[arg(long, value_name = "NAME", env = "BLUESHIFT_PUBLICATION")]
    publication: Option<String>,

    /// Drop for real (without it: a dry run that only prints what would be dropped).
    #[arg(long)]
    yes: bool,
}

pub(crate) async fn run(args: CleanupArgs) -> anyhow::Result<()> {
    let settings::Pair {
        file,
        source,
        target,
        slot,
    } = args.pair.resolve()?;
    let options = CleanupOptions {
        source,
        target,
        slot,
        publication: args.publication.or(file.publication),
        execute: args.yes,
    };
    let report = cleanup::cleanup(&options)
        .await
        .context("blueshift cleanup failed")?;
    crate::status::print(&report.to_string())
}
