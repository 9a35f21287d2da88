//! `blueshift_conflicts_total{direction, kind, resolution}`: the conflicts two-way sync met, each
//! counted once its transaction committed on the target (or once, when the policy stopped
//! sync). The family is always exported, empty until the first conflict.

use std::fmt::Write as _;

use super::Metrics;

/// Appends the family, with `forward`'s conflicts and `reverse`'s when that registry exists.
pub(super) fn render(out: &mut String, forward: &Metrics, reverse: Option<&Metrics>) {
    let name = "blueshift_conflicts_total";
    let _ = writeln!(
        out,
        "# HELP {name} Conflicts of two-way sync, by direction, kind (PostgreSQL 18's names) and resolution (apply_remote, keep_local, stop)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (direction, metrics) in [("forward", Some(forward)), ("reverse", reverse)] {
        let Some(metrics) = metrics else { continue };
        for (kind, resolution, n) in metrics.conflicts() {
            let _ = writeln!(
                out,
                "{name}{{direction=\"{direction}\",kind=\"{kind}\",resolution=\"{}\"}} {n}",
                resolution.as_str()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use blueshift_applier::conflict::{Kind, Resolution};

    use crate::metrics::Metrics;

    #[test]
    fn counts_by_direction_kind_and_resolution() {
        let m = Metrics::new();
        assert!(m
            .render()
            .contains("# TYPE blueshift_conflicts_total counter"));
        m.conflict(Kind::InsertExists, Resolution::ApplyRemote);
        m.conflict(Kind::InsertExists, Resolution::ApplyRemote);
        m.reverse()
            .conflict(Kind::UpdateMissing, Resolution::KeepLocal);
        let text = m.render();
        assert!(
            text.contains("blueshift_conflicts_total{direction=\"forward\",kind=\"insert_exists\",resolution=\"apply_remote\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("blueshift_conflicts_total{direction=\"reverse\",kind=\"update_missing\",resolution=\"keep_local\"} 1"),
            "{text}"
        );
    }
}
