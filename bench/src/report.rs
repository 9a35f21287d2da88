//! The outputs of a bench run, written to the output folder:
//!
//! | file | what |
//! |---|---|
//! | `report.md` | the Markdown report: machine, servers, command, one table per scenario (figure, blueshift, peer, ratio, runs, spread) |
//! | `BENCHMARKS.md` | the same report with the plots linked from `docs/bench/`: what the root's `BENCHMARKS.md` holds (`cp <out>/BENCHMARKS.md . && cp <out>/*.svg docs/bench/`) |
//! | `results.json` | every raw sample and series, with the settings and the machine |
//! | `<scenario>-<metric>.svg` | lag over time (`live`), throughput over time (`catchup`): blueshift and the peer on the same axes |

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::results::{median, spread, Better, Results, ScenarioResult, BLUESHIFT, WORKLOAD};

/// Writes the plots, `results.json` and `report.md` into `out`.
pub(crate) fn write(results: &mut Results, out: &Path) -> anyhow::Result<()> {
    for s in &mut results.scenarios {
        s.plots = crate::plot::write(s, out)?;
    }
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(out.join("results.json"), json)
        .with_context(|| format!("could not write {}", out.join("results.json").display()))?;
    for (file, plots) in [("report.md", ""), ("BENCHMARKS.md", PUBLISHED_PLOTS)] {
        std::fs::write(out.join(file), markdown(results, plots))
            .with_context(|| format!("could not write {}", out.join(file).display()))?;
    }
    Ok(())
}

/// Where the root's `BENCHMARKS.md` finds the plots.
const PUBLISHED_PLOTS: &str = "docs/bench/";

/// What issue 6 publishes: `--scale 50 --duration 60 --runs 3`, every scenario, default sizes.
const FULL_RUN: &str = "cargo build --release -p blueshift && target/release/blueshift bench \
                        --scale 50 --duration 60 --runs 3 --out bench-results/full";

/// The Markdown report; plots are linked as `<plots><file>`.
pub(crate) fn markdown(results: &Results, plots: &str) -> String {
    let m = &results.meta;
    let mut out = String::new();
    let _ = writeln!(out, "# blueshift bench results\n");
    if m.smoke {
        let _ = writeln!(
            out,
            "**Smoke run** (`--smoke`): tiny scale, seconds per scenario. It proves the harness \
             works; its figures mean nothing.\n"
        );
    }
    let full = !m.smoke
        && m.scale == 50
        && m.duration_s == 60
        && m.runs >= 3
        && m.bigtxn_rows == 5_000_000
        && m.decode_rows == 2_000_000
        && results.scenarios.len() == 5;
    if !full && !m.smoke {
        let _ = writeln!(
            out,
            "**Small run**, not the full run of issue 6 (every scenario, `--scale 50 --duration 60 \
             --runs 3`, big transactions of 5 M and 2 M rows). The full run, on a quiet machine: \
             `{FULL_RUN}`.\n"
        );
    }
    let _ = writeln!(
        out,
        "Command: `{}` (from a release build: `cargo build --release -p blueshift`)\n",
        m.command
    );
    let _ = writeln!(
        out,
        "Machine: {} CPUs (nproc), {:.1} GiB RAM, {}, Linux {}; load average {} at the start, \
         {} at the end; {:.0} s in all.\n",
        m.machine.nproc,
        m.machine.memory_gib,
        m.machine.cpu_model,
        m.machine.kernel,
        m.machine.load_average_start,
        m.load_average_end,
        m.elapsed_s
    );
    for s in &m.servers {
        let _ = writeln!(
            out,
            "- {}{}: {}; {}",
            s.role,
            if s.throwaway {
                " (throwaway cluster)"
            } else {
                ""
            },
            s.version,
            s.settings
        );
    }
    let _ = writeln!(
        out,
        "\nSettings: pgbench scale {}, {} s of workload per run, {} run(s) per scenario (medians; \
         the order of the sides alternates between runs), {} pgbench clients, {} blueshift \
         workers, big transactions of {} rows (bigtxn) and {} rows (decode).\n",
        m.scale, m.duration_s, m.runs, m.clients, m.workers, m.bigtxn_rows, m.decode_rows
    );
    let _ = writeln!(
        out,
        "**ratio**: how many times better blueshift is than the peer — peer ÷ blueshift for a \
         figure where lower is better, blueshift ÷ peer where higher is better; the median of \
         the per-run ratios. Above 1 blueshift wins, below 1 the peer does. **spread**: min–max \
         over the runs, blueshift; peer. Every run was checked (green equal to blue row for row, \
         or the consumer's counts equal to what was written) before it yielded a figure; a \
         failed check is listed as an error and gives no figure.\n"
    );
    for s in &results.scenarios {
        scenario_markdown(&mut out, s, plots);
    }
    out
}

fn scenario_markdown(out: &mut String, s: &ScenarioResult, plots: &str) {
    let _ = writeln!(out, "## `{}`\n", s.name);
    if !s.workload.is_empty() {
        let _ = writeln!(out, "Workload: {}\n", s.workload);
    }
    if !s.timed.is_empty() {
        let _ = writeln!(out, "Timed: {}\n", s.timed);
    }
    if let Some(e) = &s.error {
        let _ = writeln!(out, "**Scenario failed:** {e}\n");
    }
    if s.samples.is_empty() && s.errors.is_empty() {
        return;
    }
    let _ = writeln!(out, "| figure | blueshift | peer | ratio | runs | spread |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for f in &s.figures {
        let bs = s.values(BLUESHIFT, &f.metric);
        let bs_values: Vec<f64> = bs.iter().map(|(_, v)| *v).collect();
        let label = format!(
            "{} ({} is better)",
            f.label,
            match f.better {
                Better::Lower => "lower",
                Better::Higher => "higher",
            }
        );
        let d = f.digits;
        let bs_cell = if bs_values.is_empty() {
            side_error(s, BLUESHIFT).unwrap_or_else(|| "–".to_owned())
        } else {
            format!("{:.d$}", median(&bs_values))
        };
        for peer in &s.peers {
            let pv = s.values(peer, &f.metric);
            let pv_values: Vec<f64> = pv.iter().map(|(_, v)| *v).collect();
            // A figure a peer does not have (the COPY pipe has no process of its own).
            if pv_values.is_empty() && side_error(s, peer).is_none() {
                continue;
            }
            let peer_cell = if pv_values.is_empty() {
                format!(
                    "{} ({peer})",
                    side_error(s, peer).unwrap_or_else(|| "–".to_owned())
                )
            } else {
                format!("{:.d$} ({peer})", median(&pv_values))
            };
            let ratios: Vec<f64> = bs
                .iter()
                .filter_map(|(run, b)| {
                    let p = pv.iter().find(|(r, _)| r == run)?.1;
                    let r = match f.better {
                        Better::Lower => p / b,
                        Better::Higher => b / p,
                    };
                    r.is_finite().then_some(r)
                })
                .collect();
            let ratio = if ratios.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.2}", median(&ratios))
            };
            let _ = writeln!(
                out,
                "| {label} | {bs_cell} | {peer_cell} | {ratio} | {} | {}; {} |",
                if ratios.is_empty() {
                    bs_values.len().max(pv_values.len())
                } else {
                    ratios.len()
                },
                spread(&bs_values, d),
                spread(&pv_values, d)
            );
        }
    }
    if !s.workload_figures.is_empty() {
        let parts: Vec<String> = s
            .workload_figures
            .iter()
            .filter_map(|(metric, label, d)| {
                let v: Vec<f64> = s.values(WORKLOAD, metric).iter().map(|(_, v)| *v).collect();
                (!v.is_empty())
                    .then(|| format!("{label} {:.d$} ({})", median(&v), spread(&v, *d), d = *d))
            })
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(out, "\nWorkload, median (spread): {}.", parts.join("; "));
        }
    }
    for n in &s.notes {
        let _ = writeln!(out, "\n{n}");
    }
    if !s.errors.is_empty() {
        let _ = writeln!(out, "\nErrors:\n");
        for e in &s.errors {
            let _ = writeln!(
                out,
                "- {}{}: {}",
                e.side.as_deref().unwrap_or("scenario"),
                e.run.map(|r| format!(", run {r}")).unwrap_or_default(),
                e.message.replace('\n', " ")
            );
        }
    }
    for p in &s.plots {
        let _ = writeln!(out, "\n![{p}]({plots}{p})");
    }
    let _ = writeln!(out);
}

/// "error" when `side` failed in some run (the errors are listed under the table).
fn side_error(s: &ScenarioResult, side: &str) -> Option<String> {
    s.errors
        .iter()
        .any(|e| e.side.as_deref() == Some(side) || e.side.is_none())
        .then(|| "error (below)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{figure, RunError};

    fn scenario() -> ScenarioResult {
        let mut s = ScenarioResult::new("catchup", vec!["native"]);
        s.figures = vec![
            figure("catchup_s", "catch-up seconds", Better::Lower, 2),
            figure(
                "applied_txn_per_s",
                "applied transactions/s",
                Better::Higher,
                0,
            ),
        ];
        for (run, bs, native) in [(1, 2.0, 1.0), (2, 4.0, 1.0), (3, 3.0, 3.0)] {
            s.sample(run, BLUESHIFT, "catchup_s", bs);
            s.sample(run, "native", "catchup_s", native);
            s.sample(run, BLUESHIFT, "applied_txn_per_s", 1000.0 / bs);
            s.sample(run, "native", "applied_txn_per_s", 1000.0 / native);
        }
        s
    }

    #[test]
    fn a_row_has_medians_the_median_ratio_and_the_spreads() {
        let mut out = String::new();
        scenario_markdown(&mut out, &scenario(), "");
        // Ratios per run: 0.5, 0.25, 1.0 → median 0.5, whichever way the figure is better.
        assert!(
            out.contains("| catch-up seconds (lower is better) | 3.00 | 1.00 (native) | 0.50 | 3 | 2.00–4.00; 1.00–3.00 |"),
            "{out}"
        );
        assert!(
            out.contains("| applied transactions/s (higher is better) | 333 | 1000 (native) | 0.50 | 3 | 250–500; 333–1000 |"),
            "{out}"
        );
    }

    #[test]
    fn a_failed_side_shows_an_error_and_no_number() {
        let mut s = ScenarioResult::new("backfill", vec!["native"]);
        s.figures = vec![figure("backfill_s", "seconds to ready", Better::Lower, 2)];
        s.sample(1, "native", "backfill_s", 1.5);
        s.errors.push(RunError {
            run: Some(1),
            side: Some(BLUESHIFT.to_owned()),
            message: "blueshift backfill not available".to_owned(),
        });
        let mut out = String::new();
        scenario_markdown(&mut out, &s, "");
        assert!(
            out.contains(
                "| seconds to ready (lower is better) | error (below) | 1.50 (native) | – | 1 |"
            ),
            "{out}"
        );
        assert!(
            out.contains("- blueshift, run 1: blueshift backfill not available"),
            "{out}"
        );
    }
}
