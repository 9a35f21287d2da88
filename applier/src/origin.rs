//! The applier's replication origin on green: the durable record of how far it has applied.
//!
//! Each applier has its own origin (`pg_replication_origin_create`), binds it to its session
//! (`pg_replication_origin_session_setup`), and tags every transaction it applies with the
//! source commit LSN and time (`pg_replication_origin_xact_setup`). PostgreSQL advances the
//! origin's progress atomically with the commit, so after any crash
//! `pg_replication_origin_progress(name, true)` says exactly what green holds.
//! See <https://www.postgresql.org/docs/current/replication-origins.html>.

use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use crate::client::SqlError;
use crate::error::ApplyError;

/// PostgreSQL's limit on a name (`NAMEDATALEN - 1`).
const MAX_NAME_BYTES: usize = 63;

/// Checks that `name` can be a replication origin name.
pub(crate) fn validate_name(name: &str) -> Result<(), ApplyError> {
    let reason = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!(
            "it is {} bytes long and PostgreSQL allows at most {MAX_NAME_BYTES}",
            name.len()
        )
    } else if name.eq_ignore_ascii_case("none") || name.eq_ignore_ascii_case("any") {
        "PostgreSQL reserves it".to_owned()
    } else if name.contains('\0') {
        "it contains a NUL character".to_owned()
    } else {
        return Ok(());
    };
    Err(ApplyError::InvalidOriginName {
        name: name.to_owned(),
        reason,
    })
}

fn origin_error(action: &'static str, name: &str, e: tokio_postgres::Error) -> ApplyError {
    ApplyError::Origin {
        action,
        name: name.to_owned(),
        source: SqlError::from(e),
    }
}

/// Creates the origin when it does not exist yet and binds it to the session.
pub(crate) async fn set_up(client: &Client, name: &str) -> Result<(), ApplyError> {
    create(client, name).await?;
    client
        .execute(
            "SELECT pg_catalog.pg_replication_origin_session_setup($1::pg_catalog.text)",
            &[&name],
        )
        .await
        .map_err(|e| origin_error("set up", name, e))?;
    Ok(())
}

/// Creates the origin when missing (without binding it to this session).
pub(crate) async fn create(client: &Client, name: &str) -> Result<(), ApplyError> {
    client
        .execute(
            "SELECT pg_catalog.pg_replication_origin_create($1::pg_catalog.text) \
             WHERE pg_catalog.pg_replication_origin_oid($1::pg_catalog.text) IS NULL",
            &[&name],
        )
        .await
        .map_err(|e| origin_error("create", name, e))?;
    Ok(())
}

/// The origin's durable progress: the commit LSN on blue of the last transaction applied under
/// it and flushed on green; `0/0` when none.
pub(crate) async fn progress(client: &Client, name: &str) -> Result<Lsn, ApplyError> {
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_replication_origin_progress($1::pg_catalog.text, true)::pg_catalog.text",
            &[&name],
        )
        .await
        .map_err(|e| origin_error("read the progress of", name, e))?;
    match row.get::<_, Option<String>>(0) {
        None => Ok(Lsn::INVALID),
        Some(text) => text.parse().map_err(|_| ApplyError::BadLsn { value: text }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("blueshift_slot_0").is_ok());
        assert!(validate_name(&"x".repeat(63)).is_ok());
        assert!(validate_name("é".repeat(31).as_str()).is_ok());
        for bad in ["", "none", "ANY", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let long = "é".repeat(32);
        let err = validate_name(&long).unwrap_err().to_string();
        assert!(err.contains("64 bytes"), "{err}");
    }
}
