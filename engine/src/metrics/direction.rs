//! The per-direction series of a two-way sync (`blueshift sync` with the reverse direction
//! armed): the unlabelled series are the forward direction's (blue → green), as in one-way sync;
//! these name both directions with a `direction` label, `forward` or `reverse`.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `blueshift_direction_applied_transactions_total` | counter | `direction` |
//! | `blueshift_direction_applied_rows_total` | counter | `direction`, `op` |
//! | `blueshift_direction_lag_seconds` | gauge | `direction` |
//! | `blueshift_direction_lag_bytes` | gauge | `direction` |
//! | `blueshift_direction_connected` | gauge | `direction`: 1 while its stream and appliers are connected |
//! | `blueshift_direction_errors_total` | counter | `direction`, `class` |

use std::fmt::Write as _;

use super::{class_label, ErrorClass, MetricsSnapshot, ROW_OPS};

/// Appends the per-direction series of `forward` and `reverse` to `out`.
pub(super) fn render(out: &mut String, forward: &MetricsSnapshot, reverse: &MetricsSnapshot) {
    let both = [("forward", forward), ("reverse", reverse)];
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    family(
        "blueshift_direction_applied_transactions_total",
        "counter",
        "Source transactions committed on the target, by direction (forward: blue to green, reverse: green to blue).",
        &both.map(|(d, s)| (format!("direction=\"{d}\""), s.applied_transactions.to_string())),
    );
    let rows: Vec<(String, String)> = both
        .iter()
        .flat_map(|(d, s)| {
            ROW_OPS.iter().map(move |(op, count)| {
                (
                    format!("direction=\"{d}\",op=\"{op}\""),
                    count(&s.applied_rows).to_string(),
                )
            })
        })
        .collect();
    family(
        "blueshift_direction_applied_rows_total",
        "counter",
        "Rows applied on the target, by direction and operation.",
        &rows,
    );
    family(
        "blueshift_direction_lag_seconds",
        "gauge",
        "Age of the oldest source transaction the target does not hold yet, by direction.",
        &both.map(|(d, s)| (format!("direction=\"{d}\""), s.lag_seconds.to_string())),
    );
    family(
        "blueshift_direction_lag_bytes",
        "gauge",
        "WAL bytes between the source's current position and the target's durable position, by direction.",
        &both.map(|(d, s)| (format!("direction=\"{d}\""), s.lag_bytes.to_string())),
    );
    family(
        "blueshift_direction_connected",
        "gauge",
        "1 while the direction's stream and appliers are connected.",
        &both.map(|(d, s)| {
            (
                format!("direction=\"{d}\""),
                u8::from(s.connected.iter().all(|c| *c)).to_string(),
            )
        }),
    );
    let errors: Vec<(String, String)> = both
        .iter()
        .flat_map(|(d, s)| {
            [ErrorClass::Transient, ErrorClass::Definite].map(|class| {
                let n = match class {
                    ErrorClass::Transient => s.errors_transient,
                    ErrorClass::Definite => s.errors_definite,
                };
                (
                    format!("direction=\"{d}\",class=\"{}\"", class_label(class)),
                    n.to_string(),
                )
            })
        })
        .collect();
    family(
        "blueshift_direction_errors_total",
        "counter",
        "Errors handled, by direction and class.",
        &errors,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Metrics, RowCounts};

    #[test]
    fn both_directions_are_named_once_the_reverse_exists() {
        let m = Metrics::new();
        assert!(
            !m.render().contains("direction="),
            "one-way sync: no direction series"
        );
        let reverse = m.reverse();
        reverse.transaction_applied(
            &RowCounts {
                inserted: 2,
                ..RowCounts::default()
            },
            Duration::from_millis(1),
        );
        m.transaction_applied(&RowCounts::default(), Duration::from_millis(1));
        m.transaction_applied(&RowCounts::default(), Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains(
            "\nblueshift_direction_applied_transactions_total{direction=\"forward\"} 2\n"
        ));
        assert!(text.contains(
            "\nblueshift_direction_applied_transactions_total{direction=\"reverse\"} 1\n"
        ));
        assert!(text.contains(
            "\nblueshift_direction_applied_rows_total{direction=\"reverse\",op=\"insert\"} 2\n"
        ));
        assert!(
            text.contains("\nblueshift_applied_transactions_total 2\n"),
            "unlabelled: forward"
        );
        assert_eq!(
            m.reverse().snapshot().applied_transactions,
            1,
            "one registry"
        );
    }
}
