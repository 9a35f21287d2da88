//! The checks that stand between a run and its figure: green equal to blue, table by table
//! (row count and an order-independent hash of every row's text), and for a backfill the same
//! indexes and sequences.

use anyhow::ensure;

use crate::server::{query_value, Server};

/// Session settings that make a row's text the same on both servers.
const STABLE_TEXT: &str = "SET datestyle = ISO; SET timezone = UTC; SET extra_float_digits = 3; \
                           SET intervalstyle = postgres;";

/// `count:sum of 64-bit hashes of each row's text` of `table`.
pub(crate) async fn fingerprint(
    client: &tokio_postgres::Client,
    table: &str,
) -> anyhow::Result<String> {
    client.batch_execute(STABLE_TEXT).await?;
    query_value(
        client,
        &format!(
            "SELECT count(*) || ':' || coalesce(sum(hashtextextended(x::text, 0)::numeric), 0) \
             FROM {table} x"
        ),
    )
    .await
}

/// Every table in `tables` equal on blue/`blue_db` and green/`green_db`.
pub(crate) async fn tables_equal(
    blue: &Server,
    blue_db: &str,
    green: &Server,
    green_db: &str,
    tables: &[&str],
) -> anyhow::Result<()> {
    let b = blue.connect(blue_db).await?;
    let g = green.connect(green_db).await?;
    for table in tables {
        let (fb, fg) = tokio::try_join!(fingerprint(&b, table), fingerprint(&g, table))?;
        ensure!(
            fb == fg,
            "green database {green_db} differs from blue on {table}: blue {fb}, green {fg} \
             (rows:hash)"
        );
    }
    Ok(())
}

/// The index definitions of the `public` schema, one per line, sorted.
const INDEXES: &str = "SELECT coalesce(string_agg(indexdef, E'\\n' ORDER BY indexdef), '') \
                       FROM pg_catalog.pg_indexes WHERE schemaname = 'public'";

/// Every sequence with its last value.
const SEQUENCES: &str = "SELECT coalesce(string_agg(schemaname || '.' || sequencename || '=' || \
                         coalesce(last_value::text, 'unset'), ', ' ORDER BY schemaname, \
                         sequencename), '') FROM pg_catalog.pg_sequences \
                         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')";

/// Same indexes and the same sequence values on blue and green: what "ready" means after a
/// backfill, besides the rows.
pub(crate) async fn schema_ready(
    blue: &Server,
    blue_db: &str,
    green: &Server,
    green_db: &str,
) -> anyhow::Result<()> {
    for (what, sql) in [("indexes", INDEXES), ("sequences", SEQUENCES)] {
        let b = blue.value(blue_db, sql).await?;
        let g = green.value(green_db, sql).await?;
        ensure!(
            b == g,
            "green database {green_db} has other {what} than blue:\nblue:  {b}\ngreen: {g}"
        );
    }
    Ok(())
}
