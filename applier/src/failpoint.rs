//! Failpoints: named places on the commit/acknowledge boundary where a test build of blueshift
//! can be made to die, so that the crash-safety argument is tested at exactly the points it is
//! about rather than wherever a `kill -9` from outside happens to land.
//!
//! They exist only with the `failpoints` cargo feature (off by default; `blueshift-engine` and
//! the `blueshift` binary forward it, and the test harness builds the binary with it). Without
//! the feature [`hit`] is an empty inline function and the names below are never read: a release
//! build has no failpoints at all.
//!
//! A test arms them through the environment of the process:
//!
//! ```text
//! BLUESHIFT_FAILPOINTS='after-green-commit=kill'            # die at the first hit
//! BLUESHIFT_FAILPOINTS='between-statements=kill@7;slot-guard-write=kill'
//! ```
//!
//! `kill` sends `SIGKILL` to the process itself (no unwinding, no destructor, no final status
//! update: a `kill -9` at that instruction); `kill@N` does it at the N-th hit (1 = the first).
//! The process logs `failpoint reached` with the name just before it dies.
//!
//! | name | where |
//! |---|---|
//! | `between-statements` | an applier, before each statement of the green transaction it is building (a group commit included) |
//! | `set-statement` | an applier applying a folded group, once a set statement went down the pipeline, before its answer is read |
//! | `mid-window` | an applier on its pipelined session, once part of a window (its requests past 256 KiB) or a whole window went out, before green's answers to it are read (the `Sync` unanswered) |
//! | `commit-in-flight` | an applier whose transaction's turn has come, once its `COMMIT` went down the pipeline behind its changes, before its answer is read |
//! | `after-green-commit` | a sync applier, after green's `COMMIT` returned, before the commit is queued for the durability tracker and the commit order moves |
//! | `after-durable` | the durability tracker, once green's WAL flush covers a commit, before the acknowledger hears of it |
//! | `slot-guard-write` | the slot guard's record on green, after the `UPDATE`/`INSERT` and before its `COMMIT` |
//! | `after-slot-guard-record` | after the slot guard's record committed, before the slot is told the position |
//! | `after-status-update` | after a standby status update carrying a new flushed position went out to blue |
//! | `cutover-fenced` | `cutover`, once the fence (PAUSE, blue read-only, marker) is recorded on green |
//! | `cutover-drained` | `cutover`, once green reached the fence and the sequences are copied |
//! | `cutover-switched` | `cutover`, once PgBouncer's entry (or the switch command) points at green, before RESUME |
//! | `cutover-resumed` | `cutover`, after RESUME, before the watch |

/// Every failpoint name, for validating the environment variable.
pub const NAMES: &[&str] = &[
    "between-statements",
    "set-statement",
    "mid-window",
    "commit-in-flight",
    "after-green-commit",
    "after-durable",
    "slot-guard-write",
    "after-slot-guard-record",
    "after-status-update",
    "cutover-fenced",
    "cutover-drained",
    "cutover-switched",
    "cutover-resumed",
];

/// The environment variable that arms failpoints.
pub const ENV: &str = "BLUESHIFT_FAILPOINTS";

/// Whether this build has failpoints (the `failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Passes failpoint `name`: dies here when the environment armed it (test builds only).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Passes failpoint `name`: dies here when the environment armed it (test builds only).
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    armed::hit(name);
}

/// Reads [`ENV`] and checks every entry; an error names the bad entry. Without the feature a
/// set variable is an error too (the build cannot honour it).
pub fn configure_from_env() -> Result<(), String> {
    let Some(spec) = std::env::var_os(ENV) else {
        return Ok(());
    };
    let spec = spec
        .into_string()
        .map_err(|_| format!("{ENV} is not valid UTF-8"))?;
    if !ENABLED {
        return Err(format!(
            "{ENV} is set, but this blueshift was built without failpoints — build it with \
             `cargo build --features failpoints` (test builds only)"
        ));
    }
    let parsed = parse(&spec)?;
    #[cfg(feature = "failpoints")]
    armed::set(parsed);
    #[cfg(not(feature = "failpoints"))]
    drop(parsed);
    Ok(())
}

/// When an armed failpoint fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kill {
    /// At this hit, counted from 1.
    at: u64,
}

/// `name=kill[@N];…` into (name, action) pairs.
fn parse(spec: &str) -> Result<Vec<(&'static str, Kill)>, String> {
    let mut armed = Vec::new();
    for entry in spec
        .split([';', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (name, action) = entry
            .split_once('=')
            .ok_or_else(|| format!("{ENV}: {entry:?} is not name=kill or name=kill@N"))?;
        let name = NAMES
            .iter()
            .copied()
            .find(|n| *n == name.trim())
            .ok_or_else(|| {
                format!(
                    "{ENV}: unknown failpoint {:?}; known: {}",
                    name.trim(),
                    NAMES.join(", ")
                )
            })?;
        let at = match action.trim().split_once('@') {
            None if action.trim() == "kill" => 1,
            Some(("kill", n)) => n
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{ENV}: {entry:?}: N in kill@N must be 1 or more"))?,
            _ => {
                return Err(format!(
                    "{ENV}: {entry:?}: the action must be kill or kill@N"
                ))
            }
        };
        armed.push((name, Kill { at }));
    }
    Ok(armed)
}

#[cfg(feature = "failpoints")]
mod armed {
    //! The armed failpoints of this process and their hit counters.

    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use super::Kill;

    static ARMED: OnceLock<Mutex<HashMap<&'static str, (Kill, u64)>>> = OnceLock::new();

    pub(super) fn set(parsed: Vec<(&'static str, Kill)>) {
        let map = parsed.into_iter().map(|(n, k)| (n, (k, 0))).collect();
        let _ = ARMED.set(Mutex::new(map));
    }

    pub(super) fn hit(name: &'static str) {
        let Some(armed) = ARMED.get() else { return };
        let due = {
            let mut armed = armed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match armed.get_mut(name) {
                Some((kill, hits)) => {
                    *hits += 1;
                    *hits == kill.at
                }
                None => false,
            }
        };
        if due {
            tracing::error!(failpoint = name, "failpoint reached: killing the process");
            eprintln!("blueshift: failpoint {name} reached: killing the process");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // SIGKILL cannot be caught; should it not have been delivered, die anyway.
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse("after-green-commit=kill; between-statements=kill@7").unwrap(),
            vec![
                ("after-green-commit", Kill { at: 1 }),
                ("between-statements", Kill { at: 7 })
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("nope=kill")
            .unwrap_err()
            .contains("unknown failpoint"));
        assert!(parse("after-durable").unwrap_err().contains("name=kill"));
        assert!(parse("after-durable=panic")
            .unwrap_err()
            .contains("kill or kill@N"));
        assert!(parse("after-durable=kill@0")
            .unwrap_err()
            .contains("1 or more"));
    }
}
