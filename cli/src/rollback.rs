//! `blueshift rollback`: traffic back from green to blue after a cutover, through the reverse
//! direction, with the cutover's own guardrails in the other direction.

use crate::cutover::{run_action, Action, CutoverArgs};

/// Move traffic back to blue after a cutover: PAUSE, fence green, drain the reverse direction
/// into blue, copy sequences green → blue, switch PgBouncer's entry back, RESUME, watch.
///
/// Every write green took since the cutover is on blue exactly once before blue takes traffic
/// again: the reverse direction (armed by the cutover, run by `blueshift sync`) carries it, and
/// the drain waits for blue's reverse origins to pass green's fence marker. Green is left
/// read-only; the forward direction keeps running, so a later `blueshift cutover` can run
/// again. Any failure before RESUME leaves traffic on green (clients saw a pause, no error);
/// --resume finishes a rollback a crash interrupted.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # Back to blue, with the cutover's settings
  blueshift rollback --config /etc/blueshift/sync.toml

  # After a crash of blueshift mid-rollback
  blueshift rollback --config sync.toml --resume")]
pub(crate) struct RollbackArgs {
    #[command(flatten)]
    args: CutoverArgs,
}

pub(crate) async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    run_action(args.args, Action::Rollback).await
}
