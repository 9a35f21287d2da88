//! The verify gate: the cutover starts only after a clean, recent `blueshift verify`.
//!
//! `verify` records each run on green in `blueshift.verify_run` (`id`, `started_at`,
//! `finished_at`, `lsn`, `outcome` in `running | equal | different | failed`, `differences`).
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
    let exists: bool = green
        .query_one(
            "SELECT pg_catalog.to_regclass('blueshift.verify_run') IS NOT NULL",
            &[],
        )
        .await
        .map_err(CutoverError::query(
            "green",
            "look for blueshift.verify_run",
        ))?
        .get(0);
    if !exists {
        return Ok(Some(
            "no verify has run: run `blueshift verify` or pass --skip-verify".to_owned(),
        ));
    }
    let row = green
        .query_opt(
            "SELECT outcome, differences,
                    pg_catalog.date_part('epoch', pg_catalog.now() - finished_at)
               FROM blueshift.verify_run ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(CutoverError::query("green", "read blueshift.verify_run"))?;
    let Some(row) = row else {
        return Ok(Some(
            "no verify has run: run `blueshift verify` or pass --skip-verify".to_owned(),
        ));
    };
    let outcome: String = row.get(0);
    let differences: Option<i64> = row.get(1);
    let age: Option<f64> = row.get(2);
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
