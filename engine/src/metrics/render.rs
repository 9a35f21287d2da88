//! The Prometheus text exposition format (version 0.0.4) of a [`MetricsSnapshot`]: for each
//! metric a `# HELP` and a `# TYPE` line, then its samples. See
//! <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>.

use std::fmt::Write as _;

use super::{class_label, ErrorClass, LatencySnapshot, MetricsSnapshot, ROW_OPS, SIDES};

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every series of `s`.
pub(super) fn render(s: &MetricsSnapshot) -> String {
    let mut out = Exposition(String::with_capacity(8192));
    out.header(
        "blueshift_up",
        "gauge",
        "1 while blueshift sync runs, 0 once it is stopping.",
    );
    out.sample("blueshift_up", &[], Value::Int(u64::from(s.up)));
    out.header(
        "blueshift_connected",
        "gauge",
        "1 while connected: side blue is the replication stream, side green the appliers.",
    );
    for (side, connected) in SIDES.iter().zip(s.connected) {
        out.sample(
            "blueshift_connected",
            &[("side", side)],
            Value::Int(u64::from(connected)),
        );
    }
    build_info(&mut out, s);
    out.header(
        "blueshift_lag_bytes",
        "gauge",
        "WAL bytes between blue's current position and green's durable position.",
    );
    out.sample("blueshift_lag_bytes", &[], Value::Int(s.lag_bytes));
    out.header(
        "blueshift_lag_seconds",
        "gauge",
        "Age of the oldest transaction blue committed that green does not hold yet (0 when caught up); grows while green or the stream is down.",
    );
    out.sample("blueshift_lag_seconds", &[], Value::Float(s.lag_seconds));

    out.header(
        "blueshift_applied_transactions_total",
        "counter",
        "Source transactions committed on green.",
    );
    out.sample(
        "blueshift_applied_transactions_total",
        &[],
        Value::Int(s.applied_transactions),
    );
    out.header(
        "blueshift_applied_groups_total",
        "counter",
        "Green transactions the applied source transactions went in: a group commit is one, so this equals blueshift_applied_transactions_total while each is applied alone (a caught-up sync) and grows slower during bursts.",
    );
    out.sample(
        "blueshift_applied_groups_total",
        &[],
        Value::Int(s.applied_groups),
    );
    out.header(
        "blueshift_applied_rows_total",
        "counter",
        "Rows applied on green, by operation (truncate counts tables).",
    );
    for (op, count) in ROW_OPS {
        out.sample(
            "blueshift_applied_rows_total",
            &[("op", op)],
            Value::Int(count(&s.applied_rows)),
        );
    }

    out.header(
        "blueshift_apply_latency_seconds",
        "histogram",
        "Time from hand-off to an applier to the commit on green, per green transaction.",
    );
    out.histogram("blueshift_apply_latency_seconds", &[], &s.latency);

    out.header(
        "blueshift_queue_depth_transactions",
        "gauge",
        "Items waiting in each pipeline queue.",
    );
    for (queue, depth) in &s.queues {
        out.sample(
            "blueshift_queue_depth_transactions",
            &[("queue", queue)],
            Value::Int(*depth),
        );
    }

    out.header(
        "blueshift_blocked",
        "gauge",
        "1 while sync waits for green to be fixed: a change green cannot take as it is holds the line.",
    );
    out.sample("blueshift_blocked", &[], Value::Int(u64::from(s.blocked)));

    out.header(
        "blueshift_spool_bytes",
        "gauge",
        "Bytes in the spool: blue's stream read while green is down, applied once it is back.",
    );
    out.sample("blueshift_spool_bytes", &[], Value::Int(s.spool_bytes));
    out.header(
        "blueshift_spool_full",
        "gauge",
        "1 while the spool is at --spool-limit and reading blue waits for green.",
    );
    out.sample(
        "blueshift_spool_full",
        &[],
        Value::Int(u64::from(s.spool_full)),
    );

    out.header(
        "blueshift_slot_retained_wal_bytes",
        "gauge",
        "WAL bytes blue retains for the replication slot (current position minus restart_lsn).",
    );
    out.sample(
        "blueshift_slot_retained_wal_bytes",
        &[],
        Value::Int(s.retained_wal_bytes),
    );
    out.header(
        "blueshift_source_lsn",
        "gauge",
        "Blue's current WAL position in bytes (pg_current_wal_lsn), as sync last read it.",
    );
    out.sample("blueshift_source_lsn", &[], Value::Int(s.source_lsn));

    out.header(
        "blueshift_errors_total",
        "counter",
        "Errors handled, by class: transient (reconnected and resumed) or definite (stopped).",
    );
    for class in [ErrorClass::Transient, ErrorClass::Definite] {
        let n = match class {
            ErrorClass::Transient => s.errors_transient,
            ErrorClass::Definite => s.errors_definite,
        };
        out.sample(
            "blueshift_errors_total",
            &[("class", class_label(class))],
            Value::Int(n),
        );
    }

    out.header(
        "blueshift_spilled_bytes_total",
        "counter",
        "Bytes of in-progress transactions written to spill files.",
    );
    out.sample(
        "blueshift_spilled_bytes_total",
        &[],
        Value::Int(s.spilled_bytes),
    );
    out.header(
        "blueshift_spilled_transactions_total",
        "counter",
        "Transactions that went past the memory limit and were spilled to disk.",
    );
    out.sample(
        "blueshift_spilled_transactions_total",
        &[],
        Value::Int(s.spilled_transactions),
    );
    out.header(
        "blueshift_backfill_rows_total",
        "counter",
        "Rows the backfill copied into green (finished chunks).",
    );
    out.sample(
        "blueshift_backfill_rows_total",
        &[],
        Value::Int(s.backfill_rows),
    );
    out.header(
        "blueshift_backfill_chunks_total",
        "counter",
        "Backfill chunks finished on green.",
    );
    out.sample(
        "blueshift_backfill_chunks_total",
        &[],
        Value::Int(s.backfill_chunks),
    );
    out.header(
        "blueshift_stage_latency_seconds",
        "histogram",
        "Where a source transaction's time goes, by stage.",
    );
    for (stage, latency) in &s.stages {
        out.histogram(
            "blueshift_stage_latency_seconds",
            &[("stage", stage.as_str())],
            latency,
        );
    }
    out.0
}

/// Only `blueshift_build_info` (a verify process's registry adds its own series).
pub(super) fn render_build(s: &MetricsSnapshot) -> String {
    let mut out = Exposition(String::with_capacity(1024));
    build_info(&mut out, s);
    out.0
}

fn build_info(out: &mut Exposition, s: &MetricsSnapshot) {
    out.header(
        "blueshift_build_info",
        "gauge",
        "The running binary: always 1, with its version and git commit as labels.",
    );
    let (version, commit) = s
        .build
        .clone()
        .unwrap_or_else(|| (env!("CARGO_PKG_VERSION").to_owned(), "unknown".to_owned()));
    out.sample(
        "blueshift_build_info",
        &[("version", &version), ("commit", &commit)],
        Value::Int(1),
    );
}

/// A sample value.
enum Value {
    Int(u64),
    Float(f64),
}

/// The text being built. Writing to a `String` cannot fail, hence the ignored results.
struct Exposition(String);

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// The `_bucket` (with `le`), `_sum` and `_count` samples of a histogram.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencySnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in &h.buckets {
            let le = format_float(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, Value::Int(*count));
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, Value::Int(h.count));
        self.sample(&format!("{name}_sum"), labels, Value::Float(h.sum_seconds));
        self.sample(&format!("{name}_count"), labels, Value::Int(h.count));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape_label_value(value));
            }
            self.0.push('}');
        }
        self.0.push(' ');
        match value {
            Value::Int(n) => {
                let _ = write!(self.0, "{n}");
            }
            Value::Float(x) => self.0.push_str(&format_float(x)),
        }
        self.0.push('\n');
    }
}

/// A float as Prometheus reads it: `NaN`, `+Inf`, `-Inf`, or Rust's shortest round-trip
/// decimal form (never an exponent).
fn format_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_owned()
    } else if x == f64::INFINITY {
        "+Inf".to_owned()
    } else if x == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        x.to_string()
    }
}

/// `\` → `\\`, newline → `\n` (HELP text).
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `\` → `\\`, `"` → `\"`, newline → `\n` (label values).
fn escape_label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::super::{Metrics, RowCounts};
    use super::*;

    /// Parses the exposition line by line: HELP and TYPE per name, samples by `name{labels}`.
    fn parse(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, f64>) {
        let mut types = BTreeMap::new();
        let mut samples = BTreeMap::new();
        let mut helped = Vec::new();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                assert!(!help.is_empty());
                helped.push(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert_eq!(
                    helped.last().map(String::as_str),
                    Some(name),
                    "HELP before TYPE"
                );
                assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
            } else {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let name = series.split('{').next().expect("a name");
                assert!(name.starts_with("blueshift_"), "{line}");
                let family = name
                    .strip_suffix("_sum")
                    .or_else(|| name.strip_suffix("_count"))
                    .or_else(|| name.strip_suffix("_bucket"))
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                    .unwrap_or(name);
                assert!(types.contains_key(family), "sample before its TYPE: {line}");
                let value: f64 = value.parse().expect("a number");
                assert!(samples.insert(series.to_owned(), value).is_none(), "{line}");
            }
        }
        (types, samples)
    }

    #[test]
    fn an_empty_registry_exports_every_series_at_zero() {
        let m = Metrics::new();
        m.lag().caught_up();
        let (types, samples) = parse(&m.render());
        // 20 of sync (the spool's 2 and the green transactions included), blue's position, the
        // latest verify run's 4 gauges, two-way conflicts, the cutover's 2.
        assert_eq!(types.len(), 28);
        assert_eq!(types["blueshift_applied_groups_total"], "counter");
        assert_eq!(types["blueshift_blocked"], "gauge");
        assert_eq!(types["blueshift_verified_lsn"], "gauge");
        assert!(
            !types.contains_key("blueshift_verify_rows_total"),
            "the verify process's"
        );
        // Two-way conflicts: the family, empty until the first one.
        assert_eq!(types["blueshift_conflicts_total"], "counter");
        // The cutover's state is unknown until the sidecar read green: every state at 0.
        assert_eq!(types["blueshift_cutover_state"], "gauge");
        assert_eq!(types["blueshift_cutover_pause_seconds"], "gauge");
        assert!(samples.contains_key("blueshift_cutover_state{state=\"cut-over\"}"));
        assert_eq!(types["blueshift_apply_latency_seconds"], "histogram");
        assert_eq!(types["blueshift_stage_latency_seconds"], "histogram");
        assert_eq!(types["blueshift_errors_total"], "counter");
        assert_eq!(types["blueshift_lag_bytes"], "gauge");
        for (series, value) in &samples {
            let one = series.starts_with("blueshift_build_info") || series == "blueshift_up";
            assert_eq!(*value, if one { 1.0 } else { 0.0 }, "{series}");
        }
        assert!(samples.contains_key("blueshift_applied_rows_total{op=\"truncate\"}"));
        assert!(samples.contains_key("blueshift_apply_latency_seconds_bucket{le=\"+Inf\"}"));
        assert!(samples
            .contains_key("blueshift_stage_latency_seconds_bucket{stage=\"commit\",le=\"0.001\"}"));
        assert!(samples.contains_key("blueshift_errors_total{class=\"definite\"}"));
        assert!(samples.contains_key("blueshift_connected{side=\"green\"}"));
    }

    #[test]
    fn a_verify_process_exports_its_series_and_the_build_only() {
        let m = Metrics::for_verify();
        m.set_build_info("1.2.3", "abc");
        let (types, s) = parse(&m.render());
        assert_eq!(
            types.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "blueshift_build_info",
                "blueshift_verified_lsn",
                "blueshift_verify_chunks_total",
                "blueshift_verify_differences_total",
                "blueshift_verify_last_run_differences",
                "blueshift_verify_last_run_outcome",
                "blueshift_verify_last_run_timestamp_seconds",
                "blueshift_verify_rows_total",
            ]
        );
        assert_eq!(types["blueshift_verify_rows_total"], "counter");
        assert!(s.values().filter(|v| **v != 0.0).count() == 1, "{s:?}");
        assert!(m.ready(Duration::ZERO), "nothing to lag behind");
        m.verify_chunk_done(10, 9, 1);
        m.verify_chunk_done(5, 5, 0);
        m.verify_differences(2);
        m.set_last_verify(Some(super::super::verify::LastVerify {
            outcome: "different".to_owned(),
            differences: 3,
            at: Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)),
            verified_lsn: Some(0x1_0000_0028),
        }));
        let (_, s) = parse(&m.render());
        assert_eq!(s["blueshift_verify_rows_total{side=\"blue\"}"], 15.0);
        assert_eq!(s["blueshift_verify_rows_total{side=\"green\"}"], 14.0);
        assert_eq!(s["blueshift_verify_chunks_total"], 2.0);
        assert_eq!(s["blueshift_verify_differences_total"], 3.0);
        assert_eq!(s["blueshift_verify_last_run_differences"], 3.0);
        assert_eq!(s["blueshift_verified_lsn"], 4_294_967_336.0);
        assert_eq!(s["blueshift_verify_last_run_timestamp_seconds"], 1.5);
        assert_eq!(
            s["blueshift_verify_last_run_outcome{outcome=\"different\"}"],
            1.0
        );
        assert_eq!(
            s["blueshift_verify_last_run_outcome{outcome=\"equal\"}"],
            0.0
        );
    }

    #[test]
    fn renders_recorded_values() {
        let m = Metrics::new();
        m.transaction_applied(
            &RowCounts {
                inserted: 5,
                truncated: 1,
                ..RowCounts::default()
            },
            Duration::from_millis(3),
        );
        m.set_lag_bytes(4096);
        m.set_build_info("1.2.3", "abc\"def");
        m.set_connected(crate::status::Side::Blue, true);
        m.set_queue_depth("decoded", 7);
        m.set_queue_depth("odd\"name\\", 1);
        m.set_retained_wal(1 << 40);
        m.error(ErrorClass::Definite);
        m.spilled(1024);
        m.transaction_spilled();
        let text = m.render();
        let (_, s) = parse(&text);
        assert_eq!(s["blueshift_applied_transactions_total"], 1.0);
        assert_eq!(s["blueshift_applied_groups_total"], 1.0);
        assert_eq!(s["blueshift_applied_rows_total{op=\"insert\"}"], 5.0);
        assert_eq!(s["blueshift_applied_rows_total{op=\"truncate\"}"], 1.0);
        assert_eq!(s["blueshift_applied_rows_total{op=\"update\"}"], 0.0);
        assert_eq!(s["blueshift_lag_bytes"], 4096.0);
        assert_eq!(s["blueshift_connected{side=\"blue\"}"], 1.0);
        assert_eq!(s["blueshift_connected{side=\"green\"}"], 0.0);
        assert_eq!(
            s["blueshift_build_info{version=\"1.2.3\",commit=\"abc\\\"def\"}"],
            1.0
        );
        assert_eq!(
            s["blueshift_queue_depth_transactions{queue=\"decoded\"}"],
            7.0
        );
        assert_eq!(
            s["blueshift_queue_depth_transactions{queue=\"odd\\\"name\\\\\"}"],
            1.0
        );
        assert_eq!(s["blueshift_slot_retained_wal_bytes"], (1u64 << 40) as f64);
        assert_eq!(s["blueshift_errors_total{class=\"definite\"}"], 1.0);
        assert_eq!(s["blueshift_errors_total{class=\"transient\"}"], 0.0);
        assert_eq!(s["blueshift_spilled_bytes_total"], 1024.0);
        assert_eq!(s["blueshift_spilled_transactions_total"], 1.0);
        assert_eq!(s["blueshift_apply_latency_seconds_count"], 1.0);
        assert_eq!(s["blueshift_apply_latency_seconds_sum"], 0.003);
        assert_eq!(
            s["blueshift_apply_latency_seconds_bucket{le=\"0.0025\"}"],
            0.0
        );
        assert_eq!(
            s["blueshift_apply_latency_seconds_bucket{le=\"0.005\"}"],
            1.0
        );
        assert_eq!(
            s["blueshift_apply_latency_seconds_bucket{le=\"+Inf\"}"],
            1.0
        );
    }

    #[test]
    fn floats_use_prometheus_spellings() {
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(0.000001), "0.000001");
        assert_eq!(format_float(2.0), "2");
    }
}
