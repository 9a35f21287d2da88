//! `blueshift finalize`: ends a cutover the operator is satisfied with.

use crate::cutover::{run_action, Action, CutoverArgs};

/// End a cutover: disarm the way back (the reverse slot and publication on green, the reverse
/// origins on blue) and lift blue's read-only fence.
///
/// Only after `blueshift cutover` reached cut-over; a rollback is no longer possible afterwards.
/// `blueshift cleanup` still removes the forward direction (the slot on blue, the origins on
/// green) once the sync is stopped. Running it again does nothing more.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blueshift finalize --config /etc/blueshift/sync.toml")]
pub(crate) struct FinalizeArgs {
    #[command(flatten)]
    args: CutoverArgs,
}

pub(crate) async fn run(args: FinalizeArgs) -> anyhow::Result<()> {
    run_action(args.args, Action::Finalize).await
}
