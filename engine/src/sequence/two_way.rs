//! Sequences in two-way sync: both sides handing out the same serial values is the classic
//! two-writer failure (each side's INSERT then collides with the other's: `insert_exists`).
//!
//! **Overlap.** For each sequence of the published tables and its counterpart on green (see
//! [`super::counterpart`]), the values each side will still hand out form an arithmetic
//! progression inside its bounds; [`overlaps`] says whether the two can meet (their ranges
//! intersect and the progressions share a residue). Two-way preflight names every overlapping
//! pair and the fix.
//!
//! **Strategies**, applied only on request (`--sequence-strategy`), from the largest value either
//! side has handed out (`M`):
//!
//! ```text
//!  interleave: blue  INCREMENT 2d, next M + 2d, M + 4d, …      (d: the sequence's increment)
//!              green INCREMENT 2d, next M + 3d, M + 5d, …
//!  offset:     green next G = M + (max − M) / 2, blue MAXVALUE G − 1   (ascending only)
//! ```
//!
//! Each sequence's original increment and bounds are recorded on green
//! (`blueshift.sequence_strategy`) before anything is altered; interleave is re-applied from
//! them (idempotent), offset once (`applied`). [`revert`] (at `blueshift finalize`, with the
//! reverse direction's disarming) puts the recorded increments and bounds back on both sides
//! and keeps the current values.
//!
//! **Cutover.** The cutover's sequence copy never moves the new writer's sequences back
//! ([`super::CopyMode::NeverBack`]), so it keeps what a strategy did: green stays beyond blue
//! (offset) or on its parity past blue's last value (interleave). A rollback makes blue the
//! writer again: [`lift_bounds`] first puts back the `MAXVALUE` the offset strategy lowered on
//! blue, or blue could not take green's values.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::Client;

use super::{counterpart, list, read, SequenceError};
use crate::schema::{QualifiedName, Renames};

const SCHEMA: &str = "\
SELECT pg_catalog.pg_advisory_xact_lock(7235342165031183718);
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.sequence_strategy (
    slot text NOT NULL,
    side text NOT NULL,
    seq_schema text NOT NULL,
    seq_name text NOT NULL,
    strategy text NOT NULL,
    increment int8 NOT NULL,
    max_value int8 NOT NULL,
    applied boolean NOT NULL DEFAULT false,
    PRIMARY KEY (slot, side, seq_schema, seq_name)
)";

/// How two-way sync keeps the two sides' serial values apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Green's sequences continue far beyond blue's, and blue's stop below them.
    Offset,
    /// Both step by twice the increment, blue on one residue and green on the other.
    Interleave,
}

impl Strategy {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Offset => "offset",
            Strategy::Interleave => "interleave",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "offset" => Ok(Strategy::Offset),
            "interleave" => Ok(Strategy::Interleave),
            other => Err(format!(
                "unknown sequence strategy \"{other}\" — use offset or interleave"
            )),
        }
    }
}

/// A sequence's definition and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `INCREMENT`.
    pub increment: i64,
    /// `MINVALUE`.
    pub min: i64,
    /// `MAXVALUE`.
    pub max: i64,
    /// The value `nextval` returns next (unbounded: may lie past the bounds when exhausted).
    pub next: i128,
}

impl Params {
    /// The last value handed out (or, never called, the one before the first).
    fn used(&self) -> i128 {
        self.next - i128::from(self.increment)
    }
}

/// Whether the values `blue` and `green` will still hand out can meet.
pub fn overlaps(blue: &Params, green: &Params) -> bool {
    let range = |p: &Params| {
        if p.increment > 0 {
            (p.next, i128::from(p.max))
        } else {
            (i128::from(p.min), p.next)
        }
    };
    let (b, g) = (range(blue), range(green));
    if b.0 > b.1 || g.0 > g.1 || b.0.max(g.0) > b.1.min(g.1) {
        return false;
    }
    let d = gcd(
        i128::from(blue.increment).abs(),
        i128::from(green.increment).abs(),
    );
    d == 0 || (blue.next - green.next) % d == 0
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A published sequence and its counterpart on green.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencePair {
    /// Blue's.
    pub blue: QualifiedName,
    /// Green's.
    pub green: QualifiedName,
    /// Blue's definition and position.
    pub blue_params: Params,
    /// Green's.
    pub green_params: Params,
}

async fn params(
    client: &Client,
    side: &'static str,
    sequence: &QualifiedName,
) -> Result<Params, SequenceError> {
    let state = read(client, sequence)
        .await
        .map_err(|source| SequenceError::Query {
            side,
            what: format!("read sequence {sequence}"),
            source,
        })?;
    let row = client
        .query_one(
            "SELECT seqincrement, seqmin, seqmax FROM pg_catalog.pg_sequence \
              WHERE seqrelid OPERATOR(pg_catalog.=) $1::pg_catalog.text::pg_catalog.regclass",
            &[&sequence.to_string()],
        )
        .await
        .map_err(|e| SequenceError::query(side, format!("read the definition of {sequence}"), e))?;
    let increment: i64 = row.get(0);
    let next = if state.is_called {
        i128::from(state.last_value) + i128::from(increment)
    } else {
        i128::from(state.last_value)
    };
    Ok(Params {
        increment,
        min: row.get(1),
        max: row.get(2),
        next,
    })
}

/// Every sequence of `publication` with a counterpart on green, with both sides' state.
pub async fn pairs(
    blue: &Client,
    green: &Client,
    publication: &str,
    renames: &Renames,
) -> Result<Vec<SequencePair>, SequenceError> {
    let mut found = Vec::new();
    for sequence in list(blue, publication).await? {
        let Some(target) = counterpart(green, &sequence, renames).await? else {
            continue;
        };
        found.push(SequencePair {
            blue_params: params(blue, "blue", &sequence.name).await?,
            green_params: params(green, "green", &target).await?,
            blue: sequence.name,
            green: target,
        });
    }
    Ok(found)
}

async fn run(
    client: &Client,
    side: &'static str,
    what: String,
    sql: &str,
) -> Result<(), SequenceError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| SequenceError::query(side, what, e))
}

/// A sequence the strategy cannot be applied to.
fn refuse(sequence: &QualifiedName, problem: String, fix: &str) -> SequenceError {
    SequenceError::NotSynced {
        failures: vec![super::NotSynced {
            sequence: sequence.clone(),
            problem,
            fix: fix.to_owned(),
        }],
    }
}

async fn setval(
    client: &Client,
    side: &'static str,
    sequence: &QualifiedName,
    value: i128,
    is_called: bool,
) -> Result<(), SequenceError> {
    let value = i64::try_from(value).map_err(|_| {
        refuse(
            sequence,
            format!("the value {value} it would take on {side} is out of range"),
            "widen it (ALTER SEQUENCE … AS bigint) or use the other strategy",
        )
    })?;
    client
        .execute(
            "SELECT pg_catalog.setval($1::pg_catalog.text::pg_catalog.regclass, $2, $3)",
            &[&sequence.to_string(), &value, &is_called],
        )
        .await
        .map_err(|e| SequenceError::query(side, format!("set sequence {sequence}"), e))?;
    Ok(())
}

/// Applies `strategy` to every overlapping sequence of `publication` (and, for interleave, again
/// to those it was applied to before); the sequences it changed.
pub async fn apply(
    blue: &Client,
    green: &Client,
    slot: &str,
    publication: &str,
    renames: &Renames,
    strategy: Strategy,
) -> Result<Vec<QualifiedName>, SequenceError> {
    run(
        green,
        "green",
        "create blueshift.sequence_strategy".to_owned(),
        &format!("BEGIN; {SCHEMA}; COMMIT"),
    )
    .await?;
    let mut changed = Vec::new();
    for pair in pairs(blue, green, publication, renames).await? {
        let recorded = green
            .query_opt(
                "SELECT strategy, increment, applied FROM blueshift.sequence_strategy \
                  WHERE slot = $1 AND side = 'green' AND seq_schema = $2 AND seq_name = $3",
                &[&slot, &pair.green.schema, &pair.green.name],
            )
            .await
            .map_err(|e| SequenceError::query("green", "read blueshift.sequence_strategy", e))?;
        let (recorded_strategy, d) = match &recorded {
            Some(row) => {
                let applied: bool = row.get(2);
                let s: String = row.get(0);
                if s == "offset" && applied {
                    continue;
                }
                (s, row.get::<_, i64>(1))
            }
            None if overlaps(&pair.blue_params, &pair.green_params) => {
                (strategy.as_str().to_owned(), pair.blue_params.increment)
            }
            None => continue,
        };
        if pair.blue_params.increment != pair.green_params.increment && recorded.is_none() {
            return Err(refuse(
                &pair.blue,
                format!(
                    "its increment is {} on blue and {} on green",
                    pair.blue_params.increment, pair.green_params.increment
                ),
                "give it the same increment on both sides (ALTER SEQUENCE … INCREMENT BY) and \
                 start sync again",
            ));
        }
        // The originals, before anything is altered.
        for (side, name, p) in [
            ("blue", &pair.blue, &pair.blue_params),
            ("green", &pair.green, &pair.green_params),
        ] {
            green
                .execute(
                    "INSERT INTO blueshift.sequence_strategy \
                       (slot, side, seq_schema, seq_name, strategy, increment, max_value) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &[
                        &slot,
                        &side,
                        &name.schema,
                        &name.name,
                        &recorded_strategy,
                        &p.increment,
                        &p.max,
                    ],
                )
                .await
                .map_err(|e| {
                    SequenceError::query("green", "record in blueshift.sequence_strategy", e)
                })?;
        }
        let (b, g) = (&pair.blue_params, &pair.green_params);
        let m = if d > 0 {
            b.used().max(g.used())
        } else {
            b.used().min(g.used())
        };
        let d128 = i128::from(d);
        match recorded_strategy.as_str() {
            "interleave" => {
                let step = d.checked_mul(2).ok_or_else(|| {
                    refuse(
                        &pair.blue,
                        format!("its increment {d} cannot be doubled"),
                        "use --sequence-strategy offset",
                    )
                })?;
                for (client, side, name, value) in [
                    (blue, "blue", &pair.blue, m),
                    (green, "green", &pair.green, m + d128),
                ] {
                    run(
                        client,
                        side,
                        format!("interleave sequence {name}"),
                        &format!("ALTER SEQUENCE {name} INCREMENT BY {step}"),
                    )
                    .await?;
                    setval(client, side, name, value, true).await?;
                }
            }
            _ => {
                if d < 0 {
                    return Err(refuse(
                        &pair.blue,
                        "it counts downwards; the offset strategy moves green's sequences up"
                            .to_owned(),
                        "use --sequence-strategy interleave",
                    ));
                }
                let top = i128::from(b.max.min(g.max));
                let start = m + (top - m) / 2;
                run(
                    blue,
                    "blue",
                    format!("bound sequence {}", pair.blue),
                    &format!(
                        "ALTER SEQUENCE {} MAXVALUE {}",
                        pair.blue,
                        start.saturating_sub(1)
                    ),
                )
                .await?;
                setval(green, "green", &pair.green, start, false).await?;
            }
        }
        green
            .execute(
                "UPDATE blueshift.sequence_strategy SET applied = true \
                  WHERE slot = $1 AND ((side = 'blue' AND seq_schema = $2 AND seq_name = $3) \
                     OR (side = 'green' AND seq_schema = $4 AND seq_name = $5))",
                &[
                    &slot,
                    &pair.blue.schema,
                    &pair.blue.name,
                    &pair.green.schema,
                    &pair.green.name,
                ],
            )
            .await
            .map_err(|e| {
                SequenceError::query("green", "record in blueshift.sequence_strategy", e)
            })?;
        tracing::info!(sequence = %pair.blue, strategy = %recorded_strategy, "two-way sync: sequence strategy applied");
        changed.push(pair.blue);
    }
    Ok(changed)
}

/// Puts back on blue the `MAXVALUE` an offset strategy of `slot` lowered (the recorded
/// original), keeping everything else recorded for [`revert`]; how many sequences. A rollback
/// calls it before it copies green's sequences onto blue: blue is the writer again and must go
/// past the values green handed out, beyond the bound.
pub async fn lift_bounds(
    blue: &Client,
    green: &Client,
    slot: &str,
) -> Result<usize, SequenceError> {
    let exists = crate::client::relation_exists(green, "blueshift.sequence_strategy")
        .await
        .map_err(|e| SequenceError::query("green", "look for blueshift.sequence_strategy", e))?;
    if !exists {
        return Ok(0);
    }
    let rows = green
        .query(
            "SELECT seq_schema, seq_name, max_value FROM blueshift.sequence_strategy \
              WHERE slot = $1 AND side = 'blue' AND strategy = 'offset' AND applied \
              ORDER BY seq_schema, seq_name",
            &[&slot],
        )
        .await
        .map_err(|e| SequenceError::query("green", "read blueshift.sequence_strategy", e))?;
    for row in &rows {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        let max: i64 = row.get(2);
        run(
            blue,
            "blue",
            format!("lift the bound of sequence {name}"),
            &format!("ALTER SEQUENCE {name} MAXVALUE {max}"),
        )
        .await?;
        tracing::info!(sequence = %name, max_value = max, "the offset strategy's bound on blue lifted");
    }
    Ok(rows.len())
}

/// Puts back the increments and bounds recorded for `slot` on both sides (keeping the values
/// handed out) and forgets them; how many sequences.
pub async fn revert(blue: &Client, green: &Client, slot: &str) -> Result<usize, SequenceError> {
    let exists = crate::client::relation_exists(green, "blueshift.sequence_strategy")
        .await
        .map_err(|e| SequenceError::query("green", "look for blueshift.sequence_strategy", e))?;
    if !exists {
        return Ok(0);
    }
    let rows = green
        .query(
            "SELECT side, seq_schema, seq_name, strategy, increment, max_value \
               FROM blueshift.sequence_strategy WHERE slot = $1 \
              ORDER BY side, seq_schema, seq_name",
            &[&slot],
        )
        .await
        .map_err(|e| SequenceError::query("green", "read blueshift.sequence_strategy", e))?;
    for row in &rows {
        let (side, strategy, increment, max): (String, String, i64, i64) =
            (row.get(0), row.get(3), row.get(4), row.get(5));
        let name = QualifiedName::new(row.get::<_, String>(1), row.get::<_, String>(2));
        let (client, side) = if side == "blue" {
            (blue, "blue")
        } else {
            (green, "green")
        };
        let sql = if strategy == "interleave" {
            format!("ALTER SEQUENCE {name} INCREMENT BY {increment}")
        } else {
            format!("ALTER SEQUENCE {name} MAXVALUE {max}")
        };
        run(client, side, format!("revert sequence {name}"), &sql).await?;
    }
    green
        .execute(
            "DELETE FROM blueshift.sequence_strategy WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(|e| SequenceError::query("green", "clear blueshift.sequence_strategy", e))?;
    Ok(rows.len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(increment: i64, next: i128) -> Params {
        Params {
            increment,
            min: 1,
            max: i64::MAX,
            next,
        }
    }

    #[test]
    fn overlapping_ranges_and_residues() {
        // Both counting up from about the same place.
        assert!(overlaps(&p(1, 101), &p(1, 51)));
        // Interleaved: odd on blue, even on green.
        assert!(!overlaps(&p(2, 101), &p(2, 102)));
        assert!(overlaps(&p(2, 101), &p(2, 103)));
        // Offset: blue bounded below green's start.
        let blue = Params {
            max: 999,
            ..p(1, 101)
        };
        assert!(!overlaps(&blue, &p(1, 1000)));
        assert!(overlaps(&blue, &p(1, 999)));
        // Exhausted.
        assert!(!overlaps(
            &Params {
                max: 100,
                ..p(1, 101)
            },
            &p(1, 1)
        ));
        // Downwards.
        let down = |next| Params {
            increment: -1,
            min: -1000,
            max: -1,
            next,
        };
        assert!(overlaps(&down(-10), &down(-5)));
        assert!(!overlaps(&down(-10), &p(1, 1)));
        assert_eq!("interleave".parse(), Ok(Strategy::Interleave));
        assert!("odd".parse::<Strategy>().is_err());
    }
}
