//! The `blueshift` command: parses arguments into validated settings and calls the engine.
//!
//! `main` stays thin: it sets up logging, runs one subcommand, prints the error chain once and
//! exits with a code by error class (0 done, 1 failed, 2 bad usage).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: large transactions are assembled on one runtime
/// thread and freed on another, and glibc's per-thread arenas keep such memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod cleanup;
mod demo;
mod migrate;
mod plan;
mod progress;
mod rename;
mod source;
mod status;
mod sync;
mod tail;

/// Move a live PostgreSQL database from blue to green with no write downtime.
#[derive(Debug, Parser)]
#[command(name = "blueshift", version)]
struct Cli {
    /// Log verbosity: error, warn, info, debug or trace (or a tracing filter such as
    /// `blueshift_decoder=debug`); default info (warn for the demo). The `RUST_LOG` variable
    /// wins when set.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Demo(demo::DemoArgs),
    Sync(Box<sync::SyncArgs>),
    /// Copy blue's existing rows into green, then exit.
    ///
    /// A consistent snapshot shared with the replication slot, tables split across
    /// --copy-workers, green's indexes rebuilt after the load, sequences set. Resumes an
    /// interrupted copy. `blueshift sync` then streams from the slot with no gap and nothing
    /// twice.
    Backfill(Box<sync::SyncArgs>),
    Tail(tail::TailArgs),
    Migrate(migrate::MigrateArgs),
    Plan(plan::PlanArgs),
    Status(status::StatusArgs),
    Cleanup(cleanup::CleanupArgs),
    Bench(bench::BenchArgs),
    #[command(name = "bench-decode-sink", hide = true)]
    BenchDecodeSink(bench::DecodeSinkArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo(_) | Command::Bench(_) | Command::BenchDecodeSink(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_level));
    // Test builds only: failpoints armed by BLUESHIFT_FAILPOINTS (an error in any other build).
    if let Err(e) = blueshift_engine::failpoint::configure_from_env() {
        return report(&anyhow::anyhow!(e));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("blueshift")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Sync(args) => sync::run(*args).await,
            Command::Backfill(args) => sync::run_backfill(*args).await,
            Command::Tail(args) => tail::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Plan(args) => plan::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Cleanup(args) => cleanup::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchDecodeSink(args) => bench::decode_sink(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Prints the error chain once, on stderr, and picks the exit code.
fn report(e: &anyhow::Error) -> ExitCode {
    let mut text = format!("error: {e}");
    for cause in e.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{text}");
    }
    ExitCode::FAILURE
}

/// Completes on SIGINT or SIGTERM: the signal to drain what is in flight and stop.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
