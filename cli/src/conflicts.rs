//! `blueshift conflicts`: the conflicts two-way sync met and how each was resolved.

use anyhow::Context as _;
use blueshift_engine::conflicts;

use crate::settings;
use crate::status::print;

/// List the conflicts two-way sync recorded (blueshift.conflict on both sides).
///
/// Each conflict is recorded on the side that detected it, in the same transaction as the
/// change it resolved: green holds those of blue's changes (direction forward), blue those of
/// green's (reverse). Shown oldest first: when, where, the kind (insert_exists, update_missing,
/// delete_missing, update_origin_differs, delete_origin_differs, update_exists,
/// multiple_unique_conflicts), the table and the row's key, the resolution (apply_remote or
/// keep_local); --json adds both rows, their commit timestamps, origins and LSNs.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  blueshift conflicts --source \"$BLUE\" --target \"$GREEN\"
  blueshift conflicts --config /etc/blueshift/sync.toml --json | jq 'select(.kind == \"insert_exists\")'")]
pub(crate) struct ConflictsArgs {
    #[command(flatten)]
    pair: settings::PairArgs,

    /// One JSON object per line, with both rows.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ConflictsArgs) -> anyhow::Result<()> {
    let settings::Pair {
        source,
        target,
        slot,
        ..
    } = args.pair.resolve()?;
    let found = conflicts::list(&source, &target, &slot)
        .await
        .context("blueshift conflicts failed")?;
    let mut text = String::new();
    if args.json {
        for c in &found {
            text.push_str(&c.to_json().to_string());
            text.push('\n');
        }
    } else if found.is_empty() {
        text.push_str("no conflicts recorded\n");
    } else {
        text.push_str(&format!(
            "{:<27} {:<5} {:<7} {:<26} {:<12} {:<24} {}\n",
            "detected at", "on", "dir", "kind", "resolution", "table", "key"
        ));
        for c in &found {
            text.push_str(&format!(
                "{:<27} {:<5} {:<7} {:<26} {:<12} {:<24} {}\n",
                c.detected_at,
                c.side,
                c.direction,
                c.kind,
                c.resolution,
                c.relation,
                c.key_text()
            ));
        }
    }
    print(&text)
}
