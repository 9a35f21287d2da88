//! The verify gate: the cutover starts only after a clean, recent `blueshift verify`.
//!
//! `verify` records each run on green in `blueshift.verify_run`, read through
//! [`crate::verify::last_run`] (`outcome` in `running | equal | different | failed`).
//! The latest run must be `equal` and have finished within `--max-verify-age`; `--skip-verify`
//! passes the gate with a loud warning.

use std::time::Duration;

use tokio_postgres::Client;

use super::error::CutoverError;

/// The gate's verdict: `Ok(None)` passed, `Ok(Some(problem))` refused.
pub(crate) async fn check(
    green: &Client,
    max_age: Duration,
    skip: bool,
) -> Result<Option<String>, CutoverError> {
    if skip {
        tracing::warn!(
            "--skip-verify: the cutover does not check that green equals blue — a difference \
             green holds now is what clients will read after the switch"
        );
        return Ok(None);
    }
    let last = crate::verify::last_run(green)
        .await
        .map_err(CutoverError::query("green", "read blueshift.verify_run"))?;
    let Some(last) = last else {
        return Ok(Some(
            "no verify has run: run `blueshift verify` or pass --skip-verify".to_owned(),
        ));
    };
    // Green's clock, as verify recorded the run with it.
    let now: std::time::SystemTime = green
        .query_one("SELECT pg_catalog.now()", &[])
        .await
        .map_err(CutoverError::query("green", "read green's clock"))?
        .get(0);
    let outcome = last.outcome;
    let differences = last.differences;
    let age = last
        .finished_at
        .map(|at| now.duration_since(at).unwrap_or_default().as_secs_f64());
    Ok(match (outcome.as_str(), age) {
        ("equal", Some(age)) if age <= max_age.as_secs_f64() => None,
        ("equal", Some(age)) => Some(format!(
            "the last verify is {age:.0} s old, older than --max-verify-age {} s: run `blueshift verify` again",
            max_age.as_secs()
        )),
        ("different", _) => Some(format!(
            "the last verify found {} differences: fix green, run `blueshift verify` again",
            differences.unwrap_or_default()
        )),
        ("running", _) => Some("a verify is still running: wait for it to finish".to_owned()),
        (other, _) => Some(format!(
            "the last verify ended {other:?}: run `blueshift verify` again"
        )),
    })
}
