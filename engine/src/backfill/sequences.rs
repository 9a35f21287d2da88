//! Sequences: logical replication does not carry them, so the backfill sets each green sequence
//! that has a namesake on blue to blue's current value at its end. (Cutover sets them again,
//! once blue's writes have stopped.)

use tokio_postgres::Client;

use super::BackfillError;
use crate::schema::QualifiedName;

/// Copies `last_value` / `is_called` of every blue sequence (outside the system schemas and
/// `blueshift`) to the green sequence of the same name; returns how many were set.
pub(crate) async fn copy(blue: &Client, green: &Client) -> Result<usize, BackfillError> {
    let rows = blue
        .query(
            "SELECT schemaname::text, sequencename::text, last_value \
               FROM pg_catalog.pg_sequences \
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'blueshift') \
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| BackfillError::blue("read blue's sequences", e))?;
    let mut set = 0;
    for row in rows {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        let last: Option<i64> = row.get(2);
        let quoted = name.to_string();
        let exists = green
            .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&quoted])
            .await
            .map_err(|e| BackfillError::green("look up a sequence", e))?;
        if !exists.get::<_, bool>(0) {
            tracing::debug!(sequence = %name, "sequence not on green; left alone");
            continue;
        }
        // Never called on blue: green's stays as it is (its own start).
        let Some(last) = last else { continue };
        green
            .execute(
                "SELECT pg_catalog.setval($1::pg_catalog.text::pg_catalog.regclass, $2, true)",
                &[&quoted, &last],
            )
            .await
            .map_err(|e| BackfillError::green(&format!("set sequence {name}"), e))?;
        set += 1;
    }
    Ok(set)
}
