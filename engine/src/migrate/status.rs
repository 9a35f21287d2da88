//! Where each migration stands: the scripts on disk reconciled with `blueshift.schema_version`
//! (applied, pending, changed on disk, missing on disk, failed, baseline, …), and the problems
//! that make `validate` fail and `up` refuse to run.

use std::collections::BTreeMap;
use std::fmt;

use super::history::{AppliedMigration, Kind};
use super::script::{Script, Version};

/// The state of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Applied, and its file is unchanged.
    Applied,
    /// On disk, not applied yet; `up` will apply it.
    Pending,
    /// Applied, but its file changed since.
    Changed,
    /// Applied, but its file is gone.
    MissingOnDisk,
    /// Failed part-way outside a transaction: the database may hold part of it.
    Failed,
    /// The baseline the database was adopted at.
    Baseline,
    /// On disk, at or below the baseline: taken as already in the database.
    BelowBaseline,
    /// On disk, not applied, but a later version is: it would run out of order.
    OutOfOrder,
}

impl State {
    /// The state as shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::Changed => "changed-on-disk",
            State::MissingOnDisk => "missing-on-disk",
            State::Failed => "failed",
            State::Baseline => "baseline",
            State::BelowBaseline => "below-baseline",
            State::OutOfOrder => "out-of-order",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version: its script, its row in `schema_version`, and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The version.
    pub version: Version,
    /// The description (from the file, else from the row).
    pub description: String,
    /// The script on disk, if there is one.
    pub script: Option<Script>,
    /// The row in `schema_version`, if there is one.
    pub applied: Option<AppliedMigration>,
    /// The state.
    pub state: State,
}

/// Every version known on disk or in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether the bookkeeping tables exist yet.
    pub initialized: bool,
    /// The versions, in order.
    pub entries: Vec<Entry>,
}

/// A reason not to migrate: an applied script changed or went missing, a migration failed
/// part-way, or a script would run out of order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The version.
    pub version: Version,
    /// Its description.
    pub description: String,
    /// The state that is a problem.
    pub state: State,
    /// The checksum recorded when it was applied.
    pub recorded_checksum: Option<String>,
    /// The checksum of the file on disk now.
    pub disk_checksum: Option<String>,
    /// The highest applied version (for out-of-order scripts).
    pub current: Option<Version>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}) ", self.version, self.description)?;
        match self.state {
            State::Changed => write!(
                f,
                "changed on disk since it was applied (checksum {} applied, {} on disk)",
                self.recorded_checksum.as_deref().unwrap_or("?"),
                self.disk_checksum.as_deref().unwrap_or("?")
            ),
            State::MissingOnDisk => f.write_str("was applied but its file is missing"),
            State::Failed => f.write_str(
                "failed part-way outside a transaction; the database may hold part of it",
            ),
            State::OutOfOrder => match self.current {
                Some(current) => write!(
                    f,
                    "is not applied but {current} is; renumber it above {current}"
                ),
                None => f.write_str("would run out of order"),
            },
            other => write!(f, "is {other}"),
        }
    }
}

impl Status {
    /// Reconciles the scripts on disk with the rows of `schema_version`.
    pub fn reconcile(
        initialized: bool,
        scripts: &[Script],
        applied: &[AppliedMigration],
    ) -> Status {
        let baseline = applied
            .iter()
            .filter(|a| a.kind == Kind::Baseline)
            .map(|a| a.version)
            .max();
        let current = applied
            .iter()
            .filter(|a| a.success)
            .map(|a| a.version)
            .max();
        let mut by_version: BTreeMap<Version, (Option<&Script>, Option<&AppliedMigration>)> =
            BTreeMap::new();
        for s in scripts {
            by_version.entry(s.version).or_default().0 = Some(s);
        }
        for a in applied {
            by_version.entry(a.version).or_default().1 = Some(a);
        }
        let entries = by_version
            .into_iter()
            .map(|(version, (script, row))| {
                let state = match (script, row) {
                    (_, Some(row)) if row.kind == Kind::Baseline => State::Baseline,
                    (_, Some(row)) if !row.success => State::Failed,
                    (None, Some(_)) => State::MissingOnDisk,
                    (Some(s), Some(row)) if s.checksum != row.checksum => State::Changed,
                    (Some(_), Some(_)) => State::Applied,
                    (Some(_), None) if baseline.is_some_and(|b| version <= b) => {
                        State::BelowBaseline
                    }
                    (Some(_), None) if current.is_some_and(|c| version < c) => State::OutOfOrder,
                    (Some(_) | None, None) => State::Pending,
                };
                Entry {
                    version,
                    description: script
                        .map(|s| s.description.clone())
                        .or_else(|| row.map(|r| r.description.clone()))
                        .unwrap_or_default(),
                    script: script.cloned(),
                    applied: row.cloned(),
                    state,
                }
            })
            .collect();
        Status {
            initialized,
            entries,
        }
    }

    /// The highest version applied successfully (or baselined).
    pub fn current(&self) -> Option<Version> {
        self.entries
            .iter()
            .filter(|e| e.applied.as_ref().is_some_and(|a| a.success))
            .map(|e| e.version)
            .max()
    }

    /// What `validate` reports and what keeps `up` and `down` from running.
    pub fn problems(&self) -> Vec<Problem> {
        let current = self.current();
        self.entries
            .iter()
            .filter(|e| {
                matches!(
                    e.state,
                    State::Changed | State::MissingOnDisk | State::Failed | State::OutOfOrder
                )
            })
            .map(|e| Problem {
                version: e.version,
                description: e.description.clone(),
                state: e.state,
                recorded_checksum: e.applied.as_ref().map(|a| a.checksum.clone()),
                disk_checksum: e.script.as_ref().map(|s| s.checksum.clone()),
                current,
            })
            .collect()
    }

    /// The scripts `up` would apply, in order, up to `to` (inclusive) when given.
    pub fn pending(&self, to: Option<Version>) -> Vec<&Script> {
        self.entries
            .iter()
            .filter(|e| e.state == State::Pending && to.is_none_or(|to| e.version <= to))
            .filter_map(|e| e.script.as_ref())
            .collect()
    }

    /// The entry of a version.
    pub fn entry(&self, version: Version) -> Option<&Entry> {
        self.entries.iter().find(|e| e.version == version)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn v(n: i64) -> Version {
        Version::new(n).expect("positive")
    }

    fn script(n: i64, checksum: &str) -> Script {
        Script {
            version: v(n),
            description: format!("m{n}"),
            name: format!("V{n}__m{n}.sql"),
            path: PathBuf::from(format!("V{n}__m{n}.sql")),
            down: None,
            checksum: checksum.to_owned(),
        }
    }

    fn row(n: i64, checksum: &str, kind: Kind, success: bool) -> AppliedMigration {
        AppliedMigration {
            version: v(n),
            description: format!("m{n}"),
            script: format!("V{n}__m{n}.sql"),
            checksum: checksum.to_owned(),
            kind,
            applied_at: String::new(),
            applied_by: String::new(),
            execution_ms: 0,
            success,
        }
    }

    #[test]
    fn every_state_is_recognized() {
        let scripts = [
            script(1, "a"),
            script(2, "b"),
            script(3, "c"),
            script(4, "d2"),
            script(6, "f"),
            script(8, "h"),
            script(9, "i"),
        ];
        let applied = [
            row(2, "", Kind::Baseline, true),
            row(3, "c", Kind::Migration, true),
            row(4, "d", Kind::Migration, true),
            row(5, "e", Kind::Migration, true),
            row(7, "g", Kind::Migration, false),
            row(8, "h", Kind::Migration, true),
        ];
        let status = Status::reconcile(true, &scripts, &applied[..5]);
        let states: Vec<(i64, State)> = status
            .entries
            .iter()
            .map(|e| (e.version.get(), e.state))
            .collect();
        assert_eq!(
            states,
            [
                (1, State::BelowBaseline),
                (2, State::Baseline),
                (3, State::Applied),
                (4, State::Changed),
                (5, State::MissingOnDisk),
                (6, State::Pending),
                (7, State::Failed),
                (8, State::Pending),
                (9, State::Pending),
            ]
        );
        assert_eq!(status.current().map(Version::get), Some(5));
        let problems: Vec<i64> = status.problems().iter().map(|p| p.version.get()).collect();
        assert_eq!(problems, [4, 5, 7]);

        let status = Status::reconcile(true, &scripts, &applied);
        let six = status.entry(v(6)).expect("known");
        assert_eq!(six.state, State::OutOfOrder);
        let problems = status.problems();
        let out_of_order = problems
            .iter()
            .find(|p| p.version == v(6))
            .expect("V6 is a problem");
        assert!(out_of_order.to_string().contains("renumber it above V8"));
        let pending: Vec<i64> = status
            .pending(None)
            .iter()
            .map(|s| s.version.get())
            .collect();
        assert_eq!(pending, [9]);
        assert!(status.pending(Some(v(8))).is_empty());
    }
}
