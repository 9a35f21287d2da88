//! The `blueshift` command: parses arguments into validated settings and calls the engine.
//!
//! `main` stays thin: it sets up logging and the signal handlers, runs one subcommand, prints
//! the error chain once and exits with a code by error class ([`exit`]: 0 done, 1 differences,
//! 2 usage, 3 refused, 4 connection, 5 data stop, 6 interrupted, 7 internal).

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};

use signals::Signals;

mod allocator;
mod bench;
mod cleanup;
mod conflicts;
mod cutover;
mod demo;
mod docs;
mod exit;
mod finalize;
mod logging;
mod migrate;
mod plan;
mod progress;
mod rename;
mod rollback;
mod settings;
mod signals;
mod source;
mod status;
mod sync;
mod tail;
mod verify;
mod version;

/// Move a live PostgreSQL database from blue to green with no write downtime.
#[derive(Debug, Parser)]
#[command(
    name = "blueshift",
    version = version::SHORT,
    long_version = version::LONG,
    after_long_help = exit::HELP
)]
struct Cli {
    /// Log verbosity: error, warn, info, debug or trace (or a tracing filter such as
    /// `blueshift_decoder=debug`); default info (warn for the demo). The `RUST_LOG` variable
    /// wins when set.
    #[arg(long, global = true, value_name = "FILTER", env = "BLUESHIFT_LOG")]
    log: Option<String>,

    /// Log lines as text, or as one JSON object per line (timestamp, level, message and the
    /// event's fields) for a log collector.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = logging::Format::Text,
        env = "BLUESHIFT_LOG_FORMAT"
    )]
    log_format: logging::Format,

    /// After SIGINT/SIGTERM, how long sync, backfill and tail may drain what is in flight
    /// before they stop at once (a second signal stops at once too).
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 30,
        env = "BLUESHIFT_SHUTDOWN_TIMEOUT"
    )]
    shutdown_timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Demo(demo::DemoArgs),
    Sync(Box<sync::SyncArgs>),
    Backfill(Box<sync::BackfillArgs>),
    Tail(tail::TailArgs),
    Migrate(migrate::MigrateArgs),
    Plan(plan::PlanArgs),
    Status(status::StatusArgs),
    Cleanup(cleanup::CleanupArgs),
    Conflicts(conflicts::ConflictsArgs),
    Verify(Box<verify::VerifyArgs>),
    Cutover(cutover::CutoverArgs),
    Rollback(rollback::RollbackArgs),
    Finalize(finalize::FinalizeArgs),
    Bench(bench::BenchArgs),
    Completions(docs::CompletionsArgs),
    Man(docs::ManArgs),
    #[command(name = "bench-decode-sink", hide = true)]
    BenchDecodeSink(bench::DecodeSinkArgs),
}

impl Command {
    /// Whether the first signal asks the command to drain (sync, backfill, tail) rather than
    /// stopping it at once.
    fn drains(&self) -> bool {
        matches!(
            self,
            Command::Sync(_) | Command::Backfill(_) | Command::Tail(_)
        )
    }

    /// Whether the command runs on a single-threaded runtime rather than a thread per core.
    ///
    /// `sync`: its pipeline is a chain of small hand-offs — a replication message to the
    /// reader, a transaction to an applier, a statement to its connection task, an answer
    /// back, a commit to the durability tracker — each a wake-up of another task. On the
    /// multi-threaded runtime most of them cross threads (a futex wake and a context switch
    /// each), and a caught-up pipeline does little else. On one thread they are function
    /// calls between two `epoll_wait`s. Measured with TPC-B at 1 000 transactions/s against
    /// PostgreSQL 15 on a 2-core VM: 8–9 context switches per source transaction down to 3, the
    /// process's CPU per transaction down by 30 % (245 to 172 µs); catch-up time unchanged (the
    /// reader and the appliers need a fraction of one core while green does the work). What is
    /// CPU-heavy runs elsewhere already: a backfill copies on threads of its own, and decoding
    /// on blue.
    fn single_threaded(&self) -> bool {
        matches!(self, Command::Sync(_))
    }
}

/// After a forced stop, how long the dropped connections get to say goodbye.
const TERMINATE_GRACE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo(_) | Command::Bench(_) | Command::BenchDecodeSink(_) => "warn",
        _ => "info",
    };
    let format = cli.log_format;
    logging::init(cli.log.as_deref().unwrap_or(default_level), format);
    // Test builds only: failpoints armed by BLUESHIFT_FAILPOINTS (an error in any other build).
    if let Err(e) = blueshift_engine::failpoint::configure_from_env() {
        return report(&anyhow::Error::new(exit::Refused(e.to_string())), format);
    }
    let mut builder = if cli.command.single_threaded() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().thread_name("blueshift").build() {
        Ok(rt) => rt,
        Err(e) => {
            return report(
                &anyhow::Error::new(e).context("cannot start the async runtime"),
                format,
            )
        }
    };
    let shutdown_timeout = Duration::from_secs(cli.shutdown_timeout);
    let code = runtime.block_on(async move {
        let signals = Signals::install();
        let drains = cli.command.drains();
        let stop: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> = if drains {
            Box::pin(signals.forced(shutdown_timeout))
        } else {
            let requested = signals.requested();
            Box::pin(async move {
                requested.await;
                "stopped by a signal".to_owned()
            })
        };
        let work = run(cli.command, signals);
        let result = tokio::select! {
            result = work => result,
            why = stop => {
                // The command was dropped: its SQL clients with it. Their connection tasks
                // send a Terminate as soon as they run; give them that moment.
                tokio::time::sleep(TERMINATE_GRACE).await;
                Err(anyhow::Error::new(exit::Interrupted(format!(
                    "{why}; nothing half-done was committed, so running the same command \
                     again resumes"
                ))))
            }
        };
        match result {
            Ok(()) => exit::Class::Done.exit_code(),
            Err(e) => report(&e, format),
        }
    });
    // Tasks still running (a forced stop) are dropped; copy threads end with the process.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn run(command: Command, signals: Signals) -> anyhow::Result<()> {
    match command {
        Command::Demo(args) => demo::run(args).await,
        Command::Sync(args) => sync::run(*args, &signals).await,
        Command::Backfill(args) => sync::run_backfill(*args, &signals).await,
        Command::Tail(args) => tail::run(args, &signals).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Cleanup(args) => cleanup::run(args).await,
        Command::Conflicts(args) => conflicts::run(args).await,
        Command::Verify(args) => verify::run(*args).await,
        Command::Cutover(args) => cutover::run(args).await,
        Command::Rollback(args) => rollback::run(args).await,
        Command::Finalize(args) => finalize::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Completions(args) => docs::completions(args, Cli::command()),
        Command::Man(args) => docs::man(args, Cli::command()),
        Command::BenchDecodeSink(args) => bench::decode_sink(args).await,
    }
}

/// Prints the error chain once (on stderr, or as a JSON log line) and picks the exit code by
/// the error's class.
fn report(e: &anyhow::Error, format: logging::Format) -> ExitCode {
    let class = exit::classify(e);
    let mut text = format!("error: {e}");
    for cause in e.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    match format {
        logging::Format::Json => {
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            tracing::error!(
                error = %e,
                causes = %chain.get(1..).unwrap_or_default().join(": "),
                exit_code = class.code(),
                "blueshift stopped"
            );
        }
        logging::Format::Text => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{text}");
            }
        }
    }
    class.exit_code()
}
