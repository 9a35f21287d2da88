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
            bar.set_style(Self::style(
                "{prefix:>28} [{bar:30}] {pos}/{len} rows  {per_sec}  ETA {eta}  {msg}",
            ));
            bar.set_prefix("all tables");
            bar
        });
        overall.set_length(expected.max(rows).max(1));
        overall.set_position(rows);
        overall.set_message(format!(
            "{} · chunks {done}/{total}",
            progress.phase().as_str()
        ));
        for (name, counters) in tables {
            let label = name.to_string();
            let bar = match self.tables.iter().find(|(n, _)| *n == label) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self.multi.add(ProgressBar::new(1));
                    bar.set_style(Self::style(
                        "{prefix:>28} [{bar:30}] {pos}/{len} rows  {per_sec}  {msg}",
                    ));
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
            bar.set_message(format!("chunks {done}/{total}"));
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
