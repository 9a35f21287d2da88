//! `blueshift tail`: prints the decoded change stream as JSON lines.

use std::io::{self, BufWriter};
use std::time::Duration;

use anyhow::Context as _;
use blueshift_decoder::Lsn;
use blueshift_engine::tail::{self, JsonLines, SlotChoice, TailError, TailOptions};

use crate::exit::Refused;
use crate::settings;
use crate::signals::Signals;

/// Print the decoded change stream of a publication as JSON lines.
///
/// One JSON object per pgoutput message (begin, relation, insert, update, delete, truncate,
/// commit, …), LSNs as X/Y, column values as text. The slot is told "flushed" only up to the end
/// of the last transaction written out, so with a permanent slot a restart resumes right after
/// it.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  # What does the app publication carry right now? (a temporary slot, gone on exit)
  blueshift tail --source 'postgresql://replicator@blue:5432/app' --publication app_pub --temporary-slot

  # Follow a permanent slot across restarts, creating it on first use
  blueshift tail --source 'host=blue dbname=app user=replicator' --publication app_pub \\
      --slot audit_tail --create-slot | jq -c 'select(.type == \"update\")'

  # Replay up to a known position, then exit
  blueshift tail --source \"$BLUE\" --publication app_pub --slot audit_tail --until 0/3000060

The password comes from ~/.pgpass or PGPASSWORD; one inside --source works but is visible to
other users in the process list.")]
pub(crate) struct TailArgs {
    #[command(flatten)]
    config: settings::ConfigArg,
    #[command(flatten)]
    source: settings::SourceArgs,

    /// Publication to stream (repeat for several; default: the file's `publication`).
    #[arg(long = "publication", value_name = "NAME")]
    publications: Vec<String>,

    /// Permanent logical replication slot (pgoutput) to stream from (also BLUESHIFT_TAIL_SLOT;
    /// not the file's `slot`, which is the sync's).
    #[arg(
        long,
        value_name = "NAME",
        env = "BLUESHIFT_TAIL_SLOT",
        conflicts_with = "temporary_slot",
        required_unless_present = "temporary_slot"
    )]
    slot: Option<String>,

    /// Create --slot when it does not exist.
    #[arg(long, requires = "slot")]
    create_slot: bool,

    /// Use a temporary slot, dropped on exit; streaming starts at its creation.
    #[arg(long, env = "BLUESHIFT_TEMPORARY_SLOT", value_parser = settings::boolish())]
    temporary_slot: bool,

    /// Start at this LSN instead of the slot's confirmed position (X/Y).
    #[arg(long, value_name = "LSN")]
    from: Option<Lsn>,

    /// Exit once everything up to this LSN (X/Y) has been written out.
    #[arg(long, value_name = "LSN")]
    until: Option<Lsn>,

    /// Ask for column values in binary (printed as \x hex).
    #[arg(long)]
    binary: bool,

    /// Leave out pg_logical_emit_message messages.
    #[arg(long)]
    no_messages: bool,

    /// Receive large transactions whole at commit instead of streamed in chunks.
    #[arg(long)]
    no_streaming: bool,

    /// pgoutput protocol version (1-4); default: the best the server supports.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4))]
    proto_version: Option<u32>,

    /// Seconds between standby status updates.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    status_interval: u64,
}

pub(crate) async fn run(args: TailArgs, signals: &Signals) -> anyhow::Result<()> {
    let file = args.config.load()?;
    let source = args.source.resolve(&file)?;
    let publications = if args.publications.is_empty() {
        file.publication.into_iter().collect()
    } else {
        args.publications
    };
    if publications.is_empty() {
        return Err(anyhow::Error::new(Refused(
            "no publication to stream: pass --publication NAME (or publication = \"…\" in the \
             --config file)"
                .to_owned(),
        )));
    }
    let slot = match args.slot {
        Some(name) => SlotChoice::Named {
            name,
            create: args.create_slot,
        },
        None => SlotChoice::Temporary,
    };
    let options = TailOptions {
        source,
        publications,
        slot,
        from: args.from,
        until: args.until,
        binary: args.binary,
        messages: !args.no_messages,
        streaming: !args.no_streaming,
        proto_version: args.proto_version,
        status_interval: Duration::from_secs(args.status_interval.max(1)),
    };
    let mut sink = JsonLines::new(BufWriter::with_capacity(64 * 1024, io::stdout().lock()));
    match tail::tail(options, &mut sink, signals.requested()).await {
        Ok(_) => Ok(()),
        // A closed stdout (`| head`) is a normal way to stop reading.
        Err(TailError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("blueshift tail stopped"),
    }
}
