//! Decode throughput of the `pgoutput` decoder, in MB/s of payload and messages/s.
//!
//! The input is a generated TPC-B backlog as pgoutput sends it with protocol v4 (text values):
//! per transaction a Begin, three Updates (`pgbench_accounts`, `pgbench_tellers`,
//! `pgbench_branches`, key-only old tuple absent as for a non-key update), one Insert into
//! `pgbench_history` and a Commit — plus one large insert-only transaction, so both shapes of a
//! real backlog are measured. The frames are produced by the crate's own encoder, which the
//! golden-frame tests prove byte-identical to a real server's output.
//!
//! Run: `cargo bench -p blueshift-bench --bench decode` (add `-- --quick` for a short run).
//! Reported: the median of the timed runs, after one warm-up run.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use blueshift_bench::tpcb;
use blueshift_decoder::pgoutput::{PgOutputDecoder, ProtocolVersion};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (transactions, runs) = if quick { (20_000, 3) } else { (200_000, 7) };
    let frames = tpcb::backlog_frames(transactions, 100_000);
    let bytes: usize = frames.iter().map(|f| f.len()).sum();

    let mut timings = Vec::with_capacity(runs);
    for run in 0..=runs {
        let started = Instant::now();
        let mut decoder = PgOutputDecoder::new(ProtocolVersion::V4);
        let mut values = 0usize;
        for frame in &frames {
            let message = decoder
                .decode(frame.clone())
                .expect("generated frames decode");
            values += std::hint::black_box(&message).name().len();
        }
        std::hint::black_box(values);
        if run > 0 {
            timings.push(started.elapsed());
        }
    }
    timings.sort();
    let median = timings[timings.len() / 2];
    let spread = timings[timings.len() - 1].saturating_sub(timings[0]);
    let secs = median.as_secs_f64();
    println!(
        "pgoutput decode: {} frames, {:.1} MB; median of {runs} runs {:.1} ms (spread {:.1} ms)",
        frames.len(),
        bytes as f64 / 1e6,
        ms(median),
        ms(spread),
    );
    println!(
        "pgoutput decode: {:.0} MB/s, {:.2} M messages/s",
        bytes as f64 / 1e6 / secs,
        frames.len() as f64 / 1e6 / secs
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
