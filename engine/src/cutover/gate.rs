//! The verify gate: the cutover starts only after a clean, recent `blueshift verify` of this
//! pair and of everything it publishes.
//!
//! `verify` records each run on green in `blueshift.verify_run` (`outcome` in
//! `running | equal | different | failed`, with the slot and publication it compared) and each
//! chunk it planned in `blueshift.verify_chunk` (every compared table has at least one, an empty
//! or keyless one included). The gate reads the latest run of the cutover's slot and
//! publication (another pair's runs on the same green say nothing about this one) and passes
//! only when:
//!
//! - it found green equal to blue — `equal`, or `different` by sequences behind on green only
//!   (`sequences_behind`: sync does not carry sequences, and the cutover copies every one of
//!   them during its pause, after the drain), which passes with a warning — and finished within
//!   `--max-verify-age`;
//! - it compared rows (checksums, not `--counts`: equal counts prove nothing about contents);
//! - it started after the last rollback of this slot, if any (writes went both ways since);
//! - it compared every table the publication publishes on blue now (read the way verify reads
//!   it, `schema::catalog::published_tables`): a `--tables` subset, or a table added to the
//!   publication since, proves nothing about the tables it left out.
//!
//! `--skip-verify` passes the gate with a loud warning.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use super::error::CutoverError;

/// What the gate is given.
pub(crate) struct Gate<'a> {
    pub(crate) slot: &'a str,
    pub(crate) publication: &'a str,
    pub(crate) max_age: Duration,
    pub(crate) skip: bool,
}

/// The gate's verdict.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// Why the cutover is refused (`None`: the gate passed).
    pub(crate) problem: Option<String>,
    /// What the operator should know when it passed.
    pub(crate) warning: Option<String>,
}

impl Verdict {
    fn refused(problem: String) -> Verdict {
        Verdict {
            problem: Some(problem),
            warning: None,
        }
    }
}

/// Checks the gate (see the module doc).
pub(crate) async fn check(
    gate: &Gate<'_>,
    blue: &Client,
    green: &Client,
) -> Result<Verdict, CutoverError> {
    if gate.skip {
        tracing::warn!(
            "--skip-verify: the cutover does not check that green equals blue — a difference \
             green holds now is what clients will read after the switch"
        );
        return Ok(Verdict::default());
    }
    let (slot, publication) = (gate.slot, gate.publication);
    let never = || {
        format!(
            "no verify of slot {slot:?} and publication {publication:?} has run: run \
             `blueshift verify` or pass --skip-verify"
        )
    };
    let exists = crate::client::relation_exists(green, "blueshift.verify_run")
        .await
        .map_err(CutoverError::query(
            "green",
            "look for blueshift.verify_run",
        ))?;
    if !exists {
        return Ok(Verdict::refused(never()));
    }
    // Green's clock, as verify recorded the run with it.
    let Some(last) = green
        .query_opt(
            "SELECT id, outcome, differences, finished_at, pg_catalog.now(), sequences_behind, \
                    depth, started_at \
               FROM blueshift.verify_run WHERE slot = $1 AND publication = $2 \
              ORDER BY id DESC LIMIT 1",
            &[&slot, &publication],
        )
        .await
        .map_err(CutoverError::query("green", "read blueshift.verify_run"))?
    else {
        return Ok(Verdict::refused(never()));
    };
    let id: i64 = last.get(0);
    let outcome: String = last.get(1);
    let differences: Option<i64> = last.get(2);
    let finished_at: Option<SystemTime> = last.get(3);
    let now: SystemTime = last.get(4);
    let sequences: i64 = last.get::<_, Option<i64>>(5).unwrap_or(0);
    let depth: Option<String> = last.get(6);
    let started_at: SystemTime = last.get(7);
    let age = finished_at.map(|at| now.duration_since(at).unwrap_or_default().as_secs_f64());
    // Sequences behind on green and nothing else: the rows are equal, and the drain copies
    // every sequence before RESUME.
    let only_sequences = outcome == "different" && sequences > 0 && differences == Some(sequences);
    let equal = outcome == "equal" || only_sequences;
    let problem = match (outcome.as_str(), age) {
        // Equal row counts say nothing about the rows' contents.
        (_, Some(_)) if equal && depth.as_deref() != Some("checksum") => Some(format!(
            "the last verify (run {id}) compared row counts only (--counts): equal counts do not \
             prove equal rows — run `blueshift verify` without --counts"
        )),
        (_, Some(age)) if equal && age <= gate.max_age.as_secs_f64() => None,
        (_, Some(age)) if equal => Some(format!(
            "the last verify (run {id}) is {age:.0} s old, older than --max-verify-age {} s: run `blueshift verify` again",
            gate.max_age.as_secs()
        )),
        ("different", _) => Some(format!(
            "the last verify (run {id}) found {} differences other than sequences behind on \
             green ({sequences} of those, which the cutover copies): fix green, run `blueshift \
             verify` again",
            (differences.unwrap_or_default() - sequences).max(0)
        )),
        ("running", _) => Some(format!(
            "a verify (run {id}) is still running, or was killed: wait for it, or run `blueshift verify --resume`"
        )),
        (other, _) => Some(format!(
            "the last verify (run {id}) ended {other:?}: run `blueshift verify` again"
        )),
    };
    if let Some(problem) = problem {
        return Ok(Verdict::refused(problem));
    }
    // A rollback since: both sides took writes after that proof, through both directions.
    if crate::client::relation_exists(green, "blueshift.cutover_event")
        .await
        .map_err(CutoverError::query(
            "green",
            "look for blueshift.cutover_event",
        ))?
    {
        let rolled_back: Option<SystemTime> = green
            .query_one(
                "SELECT pg_catalog.max(at) FROM blueshift.cutover_event \
                  WHERE slot = $1 AND state = 'rolled-back'",
                &[&slot],
            )
            .await
            .map_err(CutoverError::query("green", "read blueshift.cutover_event"))?
            .get(0);
        if rolled_back.is_some_and(|at| started_at <= at) {
            return Ok(Verdict::refused(format!(
                "the last verify (run {id}) started before the last rollback: writes went both \
                 ways since, which it did not see — run `blueshift verify` again"
            )));
        }
    }
    // Every published table was compared.
    let published = crate::schema::catalog::published_tables(blue, Some(publication)).await?;
    let compared: BTreeSet<(String, String)> = green
        .query(
            "SELECT DISTINCT table_schema, table_name FROM blueshift.verify_chunk WHERE run_id = $1",
            &[&id],
        )
        .await
        .map_err(CutoverError::query("green", "read blueshift.verify_chunk"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let left_out: Vec<String> = published
        .iter()
        .filter(|p| !compared.contains(&(p.name.schema.clone(), p.name.name.clone())))
        .map(|p| p.name.to_string())
        .collect();
    if left_out.is_empty() {
        return Ok(Verdict {
            problem: None,
            warning: only_sequences.then(|| {
                format!(
                    "the last verify (run {id}) found the rows equal and {sequences} sequence(s) \
                     behind on green: the cutover copies every sequence after the drain"
                )
            }),
        });
    }
    Ok(Verdict::refused(format!(
        "the last verify (run {id}) did not compare {} published table(s): {} — a --tables \
         subset, or added to publication {publication:?} since: run `blueshift verify` over the \
         whole publication",
        left_out.len(),
        left_out.join(", ")
    )))
}
