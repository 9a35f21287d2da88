//! `--sample N`: random rows of each keyed table compared column by column, in the snapshots at
//! L, after the checksums (a difference the checksums found already is not counted again).

use std::sync::Mutex;

use super::compare::{params, Key, Pair};
use super::plan::{Side, TablePlan};
use super::workers::Shared;
use super::{Difference, DifferenceKind, VerifyError, MAX_REPORTED};
use crate::backfill::Progress;

/// `n` random rows of each keyed table compared column by column; returns how many were.
pub(super) async fn sample(
    pair: &Pair,
    plans: &[TablePlan],
    n: u64,
    shared: &Mutex<Shared>,
    progress: &Progress,
) -> Result<u64, VerifyError> {
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut sampled = 0;
    for plan in plans.iter().filter(|p| !p.keyless()) {
        let table = &plan.table;
        let keys = pair
            .blue
            .query(
                &format!(
                    "SELECT {} FROM {table} ORDER BY pg_catalog.random() LIMIT $1",
                    plan.blue.key_text()
                ),
                &[&limit],
            )
            .await
            .map_err(|e| VerifyError::sql("blue", format!("sample rows of {table}"), e))?;
        let columns = |side: &Side| {
            side.exprs
                .iter()
                .map(|e| format!("({e})::pg_catalog.text"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for key in &keys {
            let key: Key = (0..plan.blue.key.len()).map(|i| key.get(i)).collect();
            let sql = |side: &Side| {
                format!(
                    "SELECT {} FROM {table} WHERE {} = {}",
                    columns(side),
                    side.key_row(),
                    side.key_params(1)
                )
            };
            let (bsql, gsql) = (sql(&plan.blue), sql(&plan.green));
            let key_params = params(&[&key]);
            let (b, g) = tokio::join!(
                pair.blue.query_opt(&bsql, &key_params),
                pair.green.query_opt(&gsql, &key_params)
            );
            let b = b.map_err(|e| {
                VerifyError::sql("blue", format!("read a sampled row of {table}"), e)
            })?;
            let g = g.map_err(|e| {
                VerifyError::sql("green", format!("read a sampled row of {table}"), e)
            })?;
            sampled += 1;
            let values = |r: &tokio_postgres::Row| -> Vec<Option<String>> {
                (0..plan.columns.len()).map(|i| r.get(i)).collect()
            };
            let differing: Vec<&str> = match (&b, &g) {
                (Some(b), Some(g)) => {
                    let (bv, gv) = (values(b), values(g));
                    plan.columns
                        .iter()
                        .zip(bv.iter().zip(&gv))
                        .filter(|(_, (x, y))| x != y)
                        .map(|(c, _)| c.as_str())
                        .collect()
                }
                (Some(_), None) => vec![],
                _ => continue,
            };
            if b.is_some() && g.is_some() && differing.is_empty() {
                continue;
            }
            let mut s = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Found by the checksums already: counted once.
            let known = s
                .differences
                .iter()
                .any(|d| d.table == *table && d.key.as_ref() == Some(&key));
            if known {
                continue;
            }
            s.total += 1;
            progress.metrics().verify_differences(1);
            if let Some(t) = s.tables.get_mut(table) {
                t.differences += 1;
            }
            if s.differences.len() < MAX_REPORTED {
                s.differences.push(Difference {
                    table: table.clone(),
                    kind: if g.is_none() {
                        DifferenceKind::MissingOnGreen
                    } else {
                        DifferenceKind::Different
                    },
                    key: Some(key.clone()),
                    blue: None,
                    green: None,
                    detail: Some(if differing.is_empty() {
                        "sampled row".to_owned()
                    } else {
                        format!("sampled row: columns {} differ", differing.join(", "))
                    }),
                });
            }
        }
    }
    Ok(sampled)
}
