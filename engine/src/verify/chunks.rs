//! The chunk plan: each table's key ranges, from blue's catalog and key index, never from a
//! scan of its rows when the key is a single integer column.
//!
//! A chunk is a key range (`lo`, `hi`] (open at either end for the first and last), so every key
//! on either side falls in exactly one chunk whatever the boundaries are: the plan only decides
//! how the work is cut, never what is compared. It is therefore made on a plain blue session
//! while the consistent point is being taken, not in the snapshot at L, and recorded on green
//! before any chunk is compared (`--resume` reuses the recorded plan).
//!
//! - A single `smallint`/`integer`/`bigint` key: its range from `min` to `max` (two probes of
//!   its index) split by value into about `rows / --chunk-rows` parts, `rows` being the
//!   planner's estimate (blue's statistics scaled to the table's current size, partitions
//!   summed: `EXPLAIN`, which reads no row). A sparse key or a stale estimate gives uneven
//!   chunks, never a wrong one.
//! - Any other key: every `--chunk-rows`-th key in key order (one pass over blue's key index).
//! - No key: one chunk, compared as a multiset.

use tokio_postgres::Client;

use super::plan::TablePlan;
use super::record::{self, PlannedChunk, RecordedChunk};
use super::{VerifyConfig, VerifyError};
use crate::schema::QualifiedName;

/// A table's chunks (recorded, or planned and recorded now) and blue's estimate of its rows.
pub(super) struct TableChunks {
    /// Index into the table plans.
    pub(super) plan: usize,
    /// Every chunk of the table, with the result of those an earlier invocation finished.
    pub(super) chunks: Vec<RecordedChunk>,
    /// The rows blue's planner expects (progress and ETA only; 0 when unknown).
    pub(super) expected_rows: u64,
}

/// Plans (or, resuming, reads) the chunks of every table and records new plans on green in one
/// transaction. The tables are planned concurrently on `blue` (its queries pipelined).
pub(super) async fn plan_all(
    blue: &Client,
    records: &Client,
    plans: &[TablePlan],
    config: &VerifyConfig,
    run_id: i64,
    resumed: bool,
) -> Result<Vec<TableChunks>, VerifyError> {
    let each = plans.iter().enumerate().map(|(index, plan)| async move {
        let recorded = if resumed {
            record::chunks(records, run_id, &plan.table).await?
        } else {
            Vec::new()
        };
        let (expected_rows, planned) = if recorded.is_empty() {
            let expected = estimate(blue, &plan.table).await;
            let bounds = if plan.keyless() {
                Vec::new()
            } else {
                boundaries(blue, plan, config.chunk_rows, expected).await?
            };
            (expected, chunks_of(&plan.table, bounds))
        } else {
            (estimate(blue, &plan.table).await, Vec::new())
        };
        Ok::<_, VerifyError>((index, recorded, planned, expected_rows))
    });
    let planned = futures_util::future::try_join_all(each).await?;
    let new: Vec<PlannedChunk> = planned
        .iter()
        .flat_map(|(_, _, planned, _)| planned.iter().cloned())
        .collect();
    if !new.is_empty() {
        record::plan(records, run_id, &new).await?;
    }
    Ok(planned
        .into_iter()
        .map(|(plan, recorded, planned, expected_rows)| TableChunks {
            plan,
            chunks: if recorded.is_empty() {
                planned
                    .into_iter()
                    .map(|planned| RecordedChunk {
                        planned,
                        result: None,
                    })
                    .collect()
            } else {
                recorded
            },
            expected_rows,
        })
        .collect())
}

/// The rows blue's planner expects in `table` (its partitions summed): `EXPLAIN` reads the
/// statistics and the current size, no row. 0 when it cannot say — an estimate shapes chunks
/// and the ETA, never a result.
async fn estimate(blue: &Client, table: &QualifiedName) -> u64 {
    let explained = blue
        .simple_query(&format!("EXPLAIN (FORMAT JSON) SELECT FROM {table}"))
        .await;
    let text = match explained {
        Ok(messages) => messages.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        }),
        Err(e) => {
            tracing::debug!(table = %table, error = %e, "no row estimate");
            None
        }
    };
    text.and_then(|t| plan_rows(&t)).unwrap_or(0)
}

/// `Plan Rows` of the top node of an `EXPLAIN (FORMAT JSON)` answer.
fn plan_rows(json: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let rows = value.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()?;
    // A float from the planner: non-negative and finite, rounded (saturating) to a count.
    (rows.is_finite() && rows >= 0.0).then(|| rows.round() as u64)
}

/// Integer types whose key range can be split by value.
const INTEGER_KEYS: &[&str] = &["smallint", "integer", "bigint"];

/// The chunks' upper bounds on blue (see the module docs).
async fn boundaries(
    blue: &Client,
    plan: &TablePlan,
    chunk_rows: u64,
    expected_rows: u64,
) -> Result<Vec<Vec<String>>, VerifyError> {
    let side = &plan.blue;
    let failed = |e| VerifyError::sql("blue", format!("plan the chunks of {}", plan.table), e);
    if let ([key], [ty]) = (side.key.as_slice(), side.key_types.as_slice()) {
        if INTEGER_KEYS.contains(&ty.as_str()) {
            let row = blue
                .query_one(
                    &format!(
                        "SELECT pg_catalog.min({key})::pg_catalog.int8, \
                                pg_catalog.max({key})::pg_catalog.int8 FROM {}",
                        plan.table
                    ),
                    &[],
                )
                .await
                .map_err(failed)?;
            let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            let Some((min, max)) = min.zip(max) else {
                return Ok(Vec::new());
            };
            // A unique integer key holds at most max - min + 1 rows; no estimate, one chunk.
            let span = u64::try_from(i128::from(max) - i128::from(min) + 1).unwrap_or(u64::MAX);
            let rows = expected_rows.min(span);
            return Ok(split_by_value(min, max, rows, chunk_rows)
                .into_iter()
                .map(|b| vec![b.to_string()])
                .collect());
        }
    }
    let aliases: Vec<String> = (0..side.key.len()).map(|i| format!("k{i}")).collect();
    let inner: Vec<String> = side
        .key
        .iter()
        .zip(&aliases)
        .map(|(k, a)| format!("{k} AS {a}"))
        .collect();
    let outer: Vec<String> = aliases
        .iter()
        .map(|a| format!("{a}::pg_catalog.text"))
        .collect();
    let sql = format!(
        "SELECT {} FROM (SELECT {}, pg_catalog.row_number() OVER (ORDER BY {}) AS rn FROM {}) s \
          WHERE rn OPERATOR(pg_catalog.%) $1 = 0 ORDER BY rn",
        outer.join(", "),
        inner.join(", "),
        side.key.join(", "),
        plan.table
    );
    let every = i64::try_from(chunk_rows.max(1)).unwrap_or(i64::MAX);
    let rows = blue.query(&sql, &[&every]).await.map_err(failed)?;
    Ok(rows
        .iter()
        .map(|r| (0..side.key.len()).map(|i| r.get(i)).collect())
        .collect())
}

/// Upper bounds splitting `min..=max` into about `rows / chunk_rows` ranges of equal width.
fn split_by_value(min: i64, max: i64, rows: u64, chunk_rows: u64) -> Vec<i64> {
    let chunk_rows = i128::from(chunk_rows.max(1));
    let parts = (i128::from(rows) + chunk_rows - 1) / chunk_rows;
    if parts <= 1 || max <= min {
        return Vec::new();
    }
    let width = (i128::from(max) - i128::from(min) + 1) / parts;
    if width < 1 {
        return Vec::new();
    }
    (1..parts)
        .filter_map(|i| i64::try_from(i128::from(min) + i * width - 1).ok())
        .collect()
}

/// The chunks of a table: (-∞, b1], (b1, b2], …, (bn, +∞); one for a keyless table.
fn chunks_of(table: &QualifiedName, bounds: Vec<Vec<String>>) -> Vec<PlannedChunk> {
    let mut chunks = Vec::with_capacity(bounds.len() + 1);
    let mut lo = None;
    for (n, hi) in bounds
        .into_iter()
        .map(Some)
        .chain(std::iter::once(None))
        .enumerate()
    {
        chunks.push(PlannedChunk {
            table: table.clone(),
            chunk: i32::try_from(n).unwrap_or(i32::MAX),
            lo: lo.clone(),
            hi: hi.clone(),
        });
        lo = hi;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_split_by_value() {
        assert_eq!(split_by_value(1, 100, 100, 25), vec![25, 50, 75]);
        assert_eq!(split_by_value(1, 100, 100, 1000), Vec::<i64>::new());
        assert_eq!(split_by_value(5, 5, 10, 1), Vec::<i64>::new());
        let wide = split_by_value(i64::MIN, i64::MAX, 4, 1);
        assert_eq!(wide.len(), 3);
        assert!(wide.windows(2).all(|w| w[0] < w[1]));
        // An estimate of u64::MAX rows (the span of a full bigint range) does not overflow.
        let many = split_by_value(0, 10, u64::MAX, 1);
        assert!(many.len() <= 11);
    }

    #[test]
    fn chunks_cover_every_key_once() {
        let t = QualifiedName::new("public", "t");
        let chunks = chunks_of(&t, vec![vec!["10".into()], vec!["20".into()]]);
        let bounds: Vec<_> = chunks
            .iter()
            .map(|c| (c.lo.clone(), c.hi.clone()))
            .collect();
        assert_eq!(
            bounds,
            vec![
                (None, Some(vec!["10".to_owned()])),
                (Some(vec!["10".to_owned()]), Some(vec!["20".to_owned()])),
                (Some(vec!["20".to_owned()]), None),
            ]
        );
        assert_eq!(chunks_of(&t, Vec::new()).len(), 1);
    }

    #[test]
    fn the_planner_estimate_is_read_from_explain() {
        let json =
            r#"[{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 1000003, "Plan Width": 0}}]"#;
        assert_eq!(plan_rows(json), Some(1_000_003));
        assert_eq!(plan_rows("[]"), None);
        assert_eq!(plan_rows("not json"), None);
        assert_eq!(plan_rows(r#"[{"Plan": {"Plan Rows": -1}}]"#), None);
    }
}
