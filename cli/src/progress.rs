//! Showing a backfill's progress: on a terminal, a bar per table and one overall (rows/s, ETA);
//! otherwise a log line every ten seconds.

use std::io::IsTerminal as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use blueshift_engine::backfill::{Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The running display.
pub(crate) struct Display {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Display {
    /// Draws a last time and stops.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts showing `progress`.
pub(crate) fn show(progress: &Arc<Progress>) -> Display {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let progress = Arc::clone(progress);
    let task = if std::io::stderr().is_terminal() {
        tokio::spawn(async move {
            let mut bars = Bars::new();
            loop {
                let done = *stopped.borrow();
                bars.draw(&progress);
                if done || progress.phase() == Phase::Done {
                    bars.finish(&progress);
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stopped.changed() => {}
                }
            }
        })
    } else {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let phase = progress.phase();
                if phase == Phase::Done {
                    break;
                }
                if progress.totals().3 > 0 {
                    tracing::info!("{}", progress.summary_line());
                }
            }
        })
    };
    Display { task, stop }
}

/// The bars: one overall, one per table, created as tables appear.
struct Bars {
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    tables: Vec<(String, ProgressBar)>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            overall: None,
            tables: Vec::new(),
        }
    }

    fn style(template: &str) -> ProgressStyle {
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    fn draw(&mut self, progress: &Progress) {
        let tables = progress.tables();
        if tables.is_empty() {
            return;
        }
        let (rows, _, done, total, expected) = progress.totals();
        let overall = self.overall.get_or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(1));
            bar.set_style(Self::style("{prefix:>28} [{bar:30}] {msg}"));
            bar.set_prefix("all tables");
            bar
        });
        let secs = progress.elapsed().as_secs_f64();
        overall.set_length(expected.max(rows).max(1));
        overall.set_position(rows);
        overall.set_message(format!(
            "{}  {} · chunks {done}/{total}",
            rows_line(rows, expected, secs),
            progress.phase().as_str()
        ));
        for (name, counters) in tables {
            let label = name.to_string();
            let bar = match self.tables.iter().find(|(n, _)| *n == label) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self.multi.add(ProgressBar::new(1));
                    bar.set_style(Self::style("{prefix:>28} [{bar:30}] {msg}"));
                    bar.set_prefix(truncate(&label, 28));
                    self.tables.push((label, bar.clone()));
                    bar
                }
            };
            let rows = counters.rows.load(Ordering::Relaxed);
            let expected = counters.rows_expected.load(Ordering::Relaxed);
            let done = counters.chunks_done.load(Ordering::Relaxed);
            let total = counters.chunks_total.load(Ordering::Relaxed);
            bar.set_length(expected.max(rows).max(1));
            bar.set_position(rows);
            bar.set_message(format!(
                "{}  chunks {done}/{total}",
                rows_line(rows, expected, secs)
            ));
            if total > 0 && done == total && !bar.is_finished() {
                bar.set_length(rows.max(1));
                bar.finish();
            }
        }
    }

    fn finish(&mut self, progress: &Progress) {
        if let Some(overall) = &self.overall {
            overall.finish_with_message(progress.summary_line());
        }
        for (_, bar) in &self.tables {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}

/// `1,234/5,678 rows  12,345 rows/s  ETA 3 s`: the expected count only when blue's statistics
/// know one (a table never analysed has none), the rate once something was copied, the ETA
/// only when both are known.
fn rows_line(rows: u64, expected: u64, secs: f64) -> String {
    let rate = if secs > 0.5 && rows > 0 {
        Some(rows as f64 / secs)
    } else {
        None
    };
    let mut line = if expected > 0 {
        format!("{}/{} rows", thousands(rows), thousands(expected.max(rows)))
    } else {
        format!("{} rows", thousands(rows))
    };
    if let Some(rate) = rate {
        line.push_str(&format!("  {} rows/s", thousands(rate.round() as u64)));
        if expected > rows {
            let eta = ((expected - rows) as f64 / rate).ceil() as u64;
            line.push_str(&format!("  ETA {}", duration(eta)));
        }
    }
    line
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `75` → `1m15s`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_counts_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_600_000), "1,600,000");
        // No statistics: no expected count, no ETA.
        assert_eq!(rows_line(0, 0, 10.0), "0 rows");
        assert_eq!(rows_line(5000, 0, 10.0), "5,000 rows  500 rows/s");
        // A whole-number rate and an ETA once something moved.
        assert_eq!(
            rows_line(1_000_000, 1_600_000, 5.81),
            "1,000,000/1,600,000 rows  172,117 rows/s  ETA 4s"
        );
        assert_eq!(rows_line(0, 11266, 3.0), "0/11,266 rows");
        assert_eq!(duration(75), "1m15s");
        assert_eq!(duration(7300), "2h01m");
    }
}
