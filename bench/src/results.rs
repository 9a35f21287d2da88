//! What a bench run produced: every raw sample and series, per scenario, with the figures each
//! scenario reports (which metric, which way is better), and the medians, ratios and spreads
//! computed from them.

use std::borrow::Cow;
use std::time::SystemTime;

use serde::Serialize;

use crate::machine::Machine;
use crate::options::Validated;
use crate::process::{Role, Usage};
use crate::server::Servers;

/// The side that is measured; every other side is a peer.
pub(crate) const BLUESHIFT: &str = "blueshift";
/// Figures of the workload itself (the same for every side).
pub(crate) const WORKLOAD: &str = "workload";

/// Everything one `blueshift bench` invocation measured.
#[derive(Debug, Serialize)]
pub struct Results {
    pub(crate) meta: Meta,
    pub(crate) scenarios: Vec<ScenarioResult>,
}

impl Results {
    /// Whether any scenario, run or side failed (its figures are then missing, never wrong).
    pub fn failed(&self) -> bool {
        self.scenarios
            .iter()
            .any(|s| s.error.is_some() || !s.errors.is_empty())
    }

    /// The Markdown report (what `report.md` holds and what is printed on stdout).
    pub fn markdown(&self) -> String {
        crate::report::markdown(self, "")
    }

    pub(crate) async fn new(
        options: &Validated,
        servers: &Servers,
        machine: Machine,
    ) -> anyhow::Result<Results> {
        let mut info = Vec::new();
        for s in [&servers.blue, &servers.green] {
            let version = s
                .value(s.maintenance_db(), "SELECT version()")
                .await
                .or_else(|_| {
                    Ok::<_, anyhow::Error>(format!("PostgreSQL {}", s.binaries().version()))
                })?;
            let settings = s
                .value(
                    s.maintenance_db(),
                    "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) \
                     FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', \
                     'shared_buffers', 'max_wal_size', 'wal_level', 'io_method', \
                     'data_checksums', 'logical_decoding_work_mem', 'checkpoint_timeout', \
                     'max_logical_replication_workers', 'max_sync_workers_per_subscription', \
                     'track_commit_timestamp')",
                )
                .await
                .unwrap_or_default();
            info.push(ServerInfo {
                role: s.role,
                version,
                settings,
                throwaway: s.is_throwaway(),
            });
        }
        Ok(Results {
            meta: Meta {
                command: options.command_line.clone(),
                started_unix: unix_now(),
                elapsed_s: 0.0,
                smoke: options.smoke,
                scale: options.scale,
                duration_s: options.duration,
                runs: options.runs,
                clients: options.clients,
                workers: options.workers,
                bigtxn_rows: options.bigtxn_rows,
                decode_rows: options.decode_rows,
                machine,
                servers: info,
                load_average_end: String::new(),
            },
            scenarios: Vec::new(),
        })
    }

    pub(crate) fn finish(&mut self, started: SystemTime) {
        self.meta.elapsed_s = started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.meta.load_average_end = crate::machine::load_average();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Serialize)]
pub(crate) struct Meta {
    pub(crate) command: String,
    pub(crate) started_unix: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) smoke: bool,
    pub(crate) scale: u32,
    pub(crate) duration_s: u32,
    pub(crate) runs: u32,
    pub(crate) clients: u32,
    pub(crate) workers: u32,
    pub(crate) bigtxn_rows: u64,
    pub(crate) decode_rows: u64,
    pub(crate) machine: Machine,
    pub(crate) servers: Vec<ServerInfo>,
    pub(crate) load_average_end: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ServerInfo {
    pub(crate) role: &'static str,
    pub(crate) version: String,
    pub(crate) settings: String,
    pub(crate) throwaway: bool,
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    Lower,
    Higher,
}

/// One figure a scenario reports for blueshift and each peer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    pub(crate) metric: Cow<'static, str>,
    pub(crate) label: Cow<'static, str>,
    pub(crate) better: Better,
    pub(crate) digits: usize,
}

pub(crate) const fn figure(
    metric: &'static str,
    label: &'static str,
    better: Better,
    digits: usize,
) -> Figure {
    Figure {
        metric: Cow::Borrowed(metric),
        label: Cow::Borrowed(label),
        better,
        digits,
    }
}

/// The /proc figures every scenario reports.
pub(crate) const PROCESS_FIGURES: [Figure; 7] = [
    figure(
        "consumer_peak_rss_mib",
        "consumer peak RSS, MiB",
        Better::Lower,
        1,
    ),
    figure(
        "consumer_cpu_s_per_mchange",
        "consumer CPU-s per M changes",
        Better::Lower,
        2,
    ),
    figure(
        "walsender_cpu_s_per_mchange",
        "walsender CPU-s per M changes",
        Better::Lower,
        2,
    ),
    figure(
        "walsender_peak_rss_mib",
        "walsender peak RSS, MiB",
        Better::Lower,
        1,
    ),
    figure(
        "green_backends_cpu_s_per_mchange",
        "CPU-s per M changes of the consumer's own sessions on green (blueshift only)",
        Better::Lower,
        2,
    ),
    figure(
        "total_cpu_s_per_mchange",
        "total CPU-s per M changes (consumer + its green sessions + walsender)",
        Better::Lower,
        2,
    ),
    figure(
        "consumer_switches_per_mchange",
        "consumer context switches per M changes",
        Better::Lower,
        0,
    ),
];

/// One measured value.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) run: u32,
    pub(crate) side: String,
    pub(crate) metric: String,
    pub(crate) value: f64,
}

/// A figure over time (lag per marker, throughput per interval).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Series {
    pub(crate) run: u32,
    pub(crate) side: String,
    pub(crate) metric: &'static str,
    pub(crate) x: &'static str,
    pub(crate) y: &'static str,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A failure that cost a figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunError {
    pub(crate) run: Option<u32>,
    pub(crate) side: Option<String>,
    pub(crate) message: String,
}

/// One scenario's results.
#[derive(Debug, Serialize)]
pub(crate) struct ScenarioResult {
    pub(crate) name: &'static str,
    pub(crate) workload: String,
    pub(crate) timed: String,
    pub(crate) peers: Vec<&'static str>,
    pub(crate) figures: Vec<Figure>,
    /// Workload figures: (metric, label, digits).
    pub(crate) workload_figures: Vec<(Cow<'static, str>, Cow<'static, str>, usize)>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) series: Vec<Series>,
    pub(crate) errors: Vec<RunError>,
    pub(crate) error: Option<String>,
    pub(crate) notes: Vec<String>,
    /// Plot files written for this scenario (relative to the output folder).
    pub(crate) plots: Vec<String>,
}

impl ScenarioResult {
    pub(crate) fn new(name: &'static str, peers: Vec<&'static str>) -> Self {
        ScenarioResult {
            name,
            workload: String::new(),
            timed: String::new(),
            peers,
            figures: Vec::new(),
            workload_figures: Vec::new(),
            samples: Vec::new(),
            series: Vec::new(),
            errors: Vec::new(),
            error: None,
            notes: Vec::new(),
            plots: Vec::new(),
        }
    }

    pub(crate) fn sample(&mut self, run: u32, side: &str, metric: &str, value: f64) {
        if value.is_finite() {
            self.samples.push(Sample {
                run,
                side: side.to_owned(),
                metric: metric.to_owned(),
                value,
            });
        }
    }

    /// Records the /proc usage of one side's run: per million changes for CPU.
    pub(crate) fn usage(
        &mut self,
        run: u32,
        side: &str,
        usage: &std::collections::HashMap<Role, Usage>,
        changes: f64,
    ) {
        self.usage_as(run, side, usage, changes, "");
    }

    /// [`usage`](Self::usage) with `suffix` after every metric name (one workload of several).
    pub(crate) fn usage_as(
        &mut self,
        run: u32,
        side: &str,
        usage: &std::collections::HashMap<Role, Usage>,
        changes: f64,
        suffix: &str,
    ) {
        let mut total_cpu = 0.0;
        for (role, prefix) in [
            (Role::Consumer, "consumer"),
            (Role::Walsender, "walsender"),
            (Role::GreenBackends, "green_backends"),
        ] {
            if let Some(u) = usage.get(&role) {
                if u.processes == 0 {
                    continue;
                }
                total_cpu += u.cpu_seconds;
                if role != Role::GreenBackends {
                    // Backends share memory and come and go: no peak worth a figure.
                    self.sample(
                        run,
                        side,
                        &format!("{prefix}_peak_rss_mib{suffix}"),
                        u.peak_rss_mib,
                    );
                }
                self.sample(run, side, &format!("{prefix}_cpu_s{suffix}"), u.cpu_seconds);
                if changes > 0.0 {
                    self.sample(
                        run,
                        side,
                        &format!("{prefix}_cpu_s_per_mchange{suffix}"),
                        u.cpu_seconds / changes * 1e6,
                    );
                    if role == Role::Consumer {
                        self.sample(
                            run,
                            side,
                            &format!("consumer_switches_per_mchange{suffix}"),
                            u.context_switches / changes * 1e6,
                        );
                    }
                }
            }
        }
        if changes > 0.0 && total_cpu > 0.0 {
            self.sample(
                run,
                side,
                &format!("total_cpu_s_per_mchange{suffix}"),
                total_cpu / changes * 1e6,
            );
        }
    }

    pub(crate) fn fail(&mut self, run: Option<u32>, side: Option<&str>, e: &anyhow::Error) {
        crate::say(format!(
            "{}{}{}: {e:#}",
            self.name,
            run.map(|r| format!(" run {r}")).unwrap_or_default(),
            side.map(|s| format!(" {s}")).unwrap_or_default()
        ));
        self.errors.push(RunError {
            run,
            side: side.map(str::to_owned),
            message: format!("{e:#}"),
        });
    }

    /// The values of `metric` for `side`, as (run, value).
    pub(crate) fn values(&self, side: &str, metric: &str) -> Vec<(u32, f64)> {
        self.samples
            .iter()
            .filter(|s| s.side == side && s.metric == metric)
            .map(|s| (s.run, s.value))
            .collect()
    }
}

/// The median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q`-quantile (0..=1) of `v`, nearest rank.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = v.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// "min–max" with `digits` decimals.
pub(crate) fn spread(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "–".to_owned();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.digits$}–{max:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(spread(&[2.0, 1.0, 3.0], 1), "1.0–3.0");
    }
}
