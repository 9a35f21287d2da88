//! `blueshift bench`: blueshift next to native PostgreSQL logical replication (and the other
//! peers of each scenario) on the same two clusters, in one invocation, every run checked row
//! for row before it yields a number.
//!
//! ```text
//!  run(options)
//!   ├── Servers: blue and green (throwaway clusters, or --source/--target)
//!   ├── for each scenario (catchup, live, backfill, decode, bigtxn, verify):
//!   │     setup (databases, pgbench -i, publication, consumers paused)
//!   │     K runs: each side in turn (the order alternates), timed, /proc sampled, checked
//!   │     teardown (subscriptions, slots, origins, databases)
//!   └── Results ──► report.md (Markdown), results.json (every raw sample), *.svg (plots)
//! ```
//!
//! [`run`] is what `blueshift bench` calls; [`decode_sink`] is the discarding consumer the
//! `decode` scenario runs as `blueshift bench-decode-sink`. The `decode` microbenchmark without
//! a server is `benches/decode.rs`, fed by [`tpcb`].

mod check;
mod consumer;
pub mod decode_sink;
mod machine;
mod options;
mod pgbench;
mod plot;
mod process;
mod report;
mod results;
mod scenario;
mod server;
pub mod tpcb;
mod workload;

pub use options::{BenchOptions, Endpoints, Scenario};
pub use results::Results;
pub use workload::Workload;

use std::time::SystemTime;

use anyhow::Context as _;

use crate::server::Servers;

/// Runs the scenarios of `options`, writes the report, the JSON and the plots to
/// `options.out`, and returns the results (the report is also printed on stdout by the CLI).
/// A scenario that fails is recorded as an error in the results and the next one runs; check
/// [`Results::failed`].
pub async fn run(options: BenchOptions) -> anyhow::Result<Results> {
    let options = options.validated()?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("could not create {}", options.out.display()))?;
    let logs = options.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let blueshift = options.blueshift_binary()?;
    say(format!(
        "blueshift bench: {} scenario(s), scale {}, {} s, {} run(s); blueshift {}; output in {}",
        options.scenarios.len(),
        options.scale,
        options.duration,
        options.runs,
        blueshift.display(),
        options.out.display()
    ));
    let servers = Servers::start(&options).await?;
    let started = SystemTime::now();
    let mut results = Results::new(&options, &servers, machine::Machine::probe()).await?;
    for scenario in &options.scenarios {
        say(format!("== scenario {}", scenario.name()));
        let ctx = scenario::Context {
            options: &options,
            servers: &servers,
            blueshift: &blueshift,
            logs: &logs,
        };
        let result = scenario::run(*scenario, &ctx).await;
        if let Some(e) = &result.error {
            say(format!("scenario {} FAILED: {e}", scenario.name()));
        }
        results.scenarios.push(result);
    }
    results.finish(started);
    report::write(&mut results, &options.out)?;
    say(format!("report written to {}", options.out.display()));
    Ok(results)
}

/// Progress on stderr (the report goes to stdout).
pub(crate) fn say(text: impl AsRef<str>) {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "[bench {:02}:{:02}:{:02}] {}",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            text.as_ref()
        );
    }
}
