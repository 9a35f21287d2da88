//! What apply does not check, checked on green in its snapshot at L: foreign keys (apply runs
//! with `session_replication_role = replica`, so they were never enforced), `NOT VALID` check
//! constraints, invalid indexes; and sequences, whose value on green must be at least blue's
//! (blue's read in its snapshot, green's now: a sequence only moves forward).

use super::compare::Pair;
use super::plan::TablePlan;
use super::point::Point;
use super::{Difference, DifferenceKind, VerifyConfig, VerifyError};
use crate::schema::{quote_ident, QualifiedName};

/// Violations reported per constraint at most.
const PER_CONSTRAINT: i64 = 100;

/// Every violation and behind sequence found.
pub(super) async fn check(
    config: &VerifyConfig,
    plans: &[TablePlan],
    point: &Point,
) -> Result<Vec<Difference>, VerifyError> {
    let pair = Pair::open(config, &point.snapshots()).await?;
    let result = check_with(config, plans, &pair).await;
    pair.close().await;
    result
}

async fn check_with(
    config: &VerifyConfig,
    plans: &[TablePlan],
    pair: &Pair,
) -> Result<Vec<Difference>, VerifyError> {
    let mut found = Vec::new();
    let schemas: Vec<&str> = plans.iter().map(|p| p.table.schema.as_str()).collect();
    let names: Vec<&str> = plans.iter().map(|p| p.table.name.as_str()).collect();
    let green = &pair.green;
    // Foreign keys of the compared tables (as children).
    let fks = green
        .query(
            "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text, k.conname::pg_catalog.text, \
                    pn.nspname::pg_catalog.text, pc.relname::pg_catalog.text, \
                    ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.unnest(k.conkey) WITH ORDINALITY u(n, o) \
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o), \
                    ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.unnest(k.confkey) WITH ORDINALITY u(n, o) \
                            JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o) \
               FROM pg_catalog.pg_constraint k \
               JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_class pc ON pc.oid = k.confrelid \
               JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace \
               JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS w(s, t) \
                 ON w.s = n.nspname AND w.t = c.relname \
              WHERE k.contype = 'f' AND k.conparentid = 0 \
              ORDER BY 1, 2, 3",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "list the foreign keys", e))?;
    for fk in &fks {
        let child = QualifiedName::new(fk.get::<_, String>(0), fk.get::<_, String>(1));
        let name: String = fk.get(2);
        let parent = QualifiedName::new(fk.get::<_, String>(3), fk.get::<_, String>(4));
        let cols: Vec<String> = fk.get(5);
        let refs: Vec<String> = fk.get(6);
        let not_null: Vec<String> = cols
            .iter()
            .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
            .collect();
        let joins: Vec<String> = cols
            .iter()
            .zip(&refs)
            .map(|(c, r)| format!("p.{} = c.{}", quote_ident(r), quote_ident(c)))
            .collect();
        let values: Vec<String> = cols
            .iter()
            .map(|c| format!("c.{}::pg_catalog.text", quote_ident(c)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {child} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {}) LIMIT $1",
            values.join(", "),
            not_null.join(" AND "),
            joins.join(" AND ")
        );
        let rows = green.query(&sql, &[&PER_CONSTRAINT]).await.map_err(|e| {
            VerifyError::sql(
                "green",
                format!("check foreign key \"{name}\" of {child}"),
                e,
            )
        })?;
        for r in &rows {
            let key: Vec<Option<String>> = (0..cols.len()).map(|i| r.get(i)).collect();
            found.push(Difference {
                table: child.clone(),
                kind: DifferenceKind::Constraint,
                key: Some(key),
                blue: None,
                green: None,
                detail: Some(format!(
                    "foreign key \"{name}\" ({}) has no row in {parent}",
                    cols.join(", ")
                )),
            });
        }
    }
    // NOT VALID check constraints: their expression as green prints it.
    let checks = green
        .query(
            "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text, k.conname::pg_catalog.text, \
                    pg_catalog.pg_get_expr(k.conbin, k.conrelid) \
               FROM pg_catalog.pg_constraint k \
               JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS w(s, t) \
                 ON w.s = n.nspname AND w.t = c.relname \
              WHERE k.contype = 'c' AND NOT k.convalidated \
              ORDER BY 1, 2, 3",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "list the NOT VALID check constraints", e))?;
    for check in &checks {
        let table = QualifiedName::new(check.get::<_, String>(0), check.get::<_, String>(1));
        let name: String = check.get(2);
        let expr: String = check.get(3);
        let sql =
            format!("SELECT ROW(t.*)::pg_catalog.text FROM {table} t WHERE NOT ({expr}) LIMIT $1");
        let rows = green.query(&sql, &[&PER_CONSTRAINT]).await.map_err(|e| {
            VerifyError::sql(
                "green",
                format!("check constraint \"{name}\" of {table}"),
                e,
            )
        })?;
        for r in &rows {
            found.push(Difference {
                table: table.clone(),
                kind: DifferenceKind::Constraint,
                key: None,
                blue: None,
                green: Some(r.get(0)),
                detail: Some(format!("NOT VALID check constraint \"{name}\" is violated")),
            });
        }
    }
    // Invalid indexes (a failed concurrent build): green would not use them, or enforce them.
    let invalid = green
        .query(
            "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text, ic.relname::pg_catalog.text \
               FROM pg_catalog.pg_index i \
               JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
               JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS w(s, t) \
                 ON w.s = n.nspname AND w.t = c.relname \
              WHERE NOT i.indisvalid ORDER BY 1, 2, 3",
            &[&schemas, &names],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "list the invalid indexes", e))?;
    for r in &invalid {
        let table = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
        let index: String = r.get(2);
        found.push(Difference {
            table,
            kind: DifferenceKind::Constraint,
            key: None,
            blue: None,
            green: None,
            detail: Some(format!(
                "index \"{index}\" is invalid on green — REINDEX INDEX it (or drop and create it again)"
            )),
        });
    }
    // Sequences: green's value at least blue's.
    let renames = config.mapping.renames();
    for sequence in crate::sequence::list(&pair.blue, &config.publication).await? {
        let Some(counterpart) =
            crate::sequence::counterpart(&pair.green, &sequence, renames).await?
        else {
            continue;
        };
        let blue = crate::sequence::read(&pair.blue, &sequence.name)
            .await
            .map_err(|source| VerifyError::Sql {
                side: "blue",
                what: format!("read sequence {}", sequence.name),
                source,
            })?;
        let green = crate::sequence::read(&pair.green, &counterpart)
            .await
            .map_err(|source| VerifyError::Sql {
                side: "green",
                what: format!("read sequence {counterpart}"),
                source,
            })?;
        // What the next nextval() would return is past what was handed out: compare the last
        // value handed out (nothing when never called).
        let handed = |s: &crate::sequence::SequenceState| s.is_called.then_some(s.last_value);
        let behind = match (handed(&blue), handed(&green)) {
            (Some(b), Some(g)) => g < b,
            (Some(_), None) => true,
            _ => false,
        };
        if behind {
            found.push(Difference {
                table: counterpart.clone(),
                kind: DifferenceKind::Sequence,
                key: None,
                blue: Some(format!(
                    "last_value {} (called: {})",
                    blue.last_value, blue.is_called
                )),
                green: Some(format!(
                    "last_value {} (called: {})",
                    green.last_value, green.is_called
                )),
                detail: Some(format!(
                    "green's sequence is behind blue's {} — `blueshift cutover` copies sequences, \
                     or SELECT pg_catalog.setval(...) on green",
                    sequence.name
                )),
            });
        }
    }
    Ok(found)
}
