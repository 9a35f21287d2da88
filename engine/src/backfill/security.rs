//! Row-level security never filters a copy silently.
//!
//! Every copy session sets `row_security = off` (see `copy::PINNED`): a statement that a policy
//! would filter then fails with `42501` instead of returning fewer rows, as `pg_dump` does.
//! Before anything is created, [`check`] asks blue (and green) whether a policy applies to the
//! role for any relation the copy reads (writes), so the refusal names every such table at once;
//! [`refine`] turns the error of a policy that appeared after the check into the same refusal.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::BackfillError;
use crate::client::SqlError;
use crate::schema::QualifiedName;

/// On blue: the relations holding the rows of `tables` (the tables, or their leaf partitions)
/// that a policy applies to for the current role.
const BLUE: &str = "\
SELECT DISTINCT n.nspname::text, c.relname::text
  FROM unnest($1::text[], $2::text[]) AS u(s, r)
  JOIN pg_catalog.pg_namespace tn ON tn.nspname = u.s
  JOIN pg_catalog.pg_class t ON t.relnamespace = tn.oid AND t.relname = u.r
  CROSS JOIN LATERAL (SELECT relid FROM pg_catalog.pg_partition_tree(t.oid)
                      UNION SELECT t.oid) p
  JOIN pg_catalog.pg_class c ON c.oid = p.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm') AND pg_catalog.row_security_active(c.oid)
 ORDER BY 1, 2";

/// On green: the tables themselves (a copy writes into them, rows routed from there).
const GREEN: &str = "\
SELECT n.nspname::text, c.relname::text
  FROM unnest($1::text[], $2::text[]) AS u(s, r)
  JOIN pg_catalog.pg_namespace n ON n.nspname = u.s
  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = u.r
 WHERE pg_catalog.row_security_active(c.oid)
 ORDER BY 1, 2";

/// Refuses when a policy applies, for the role connected, to a relation the copy of `tables`
/// reads on blue or writes on green.
pub(super) async fn check(
    blue: &Client,
    green: &Client,
    tables: &BTreeSet<QualifiedName>,
) -> Result<(), BackfillError> {
    if tables.is_empty() {
        return Ok(());
    }
    for (side, client, sql) in [("blue", blue, BLUE), ("green", green, GREEN)] {
        let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let what = "check the tables for row-level security";
        let rows = client
            .query(sql, &[&schemas, &names])
            .await
            .map_err(|e| BackfillError::sql(side, what, e))?;
        if rows.is_empty() {
            continue;
        }
        let role: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(|e| BackfillError::sql(side, what, e))?
            .get(0);
        return Err(BackfillError::RowSecurity {
            side,
            tables: rows
                .iter()
                .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
                .collect(),
            role,
        });
    }
    Ok(())
}

/// Whether `e` is the server refusing a statement because of row-level security.
fn is_row_security(e: &SqlError) -> bool {
    let Some(server) = e.server() else {
        return false;
    };
    // 42501 with row_security = off; 0A000 is COPY FROM into a table a policy applies to.
    matches!(server.sqlstate.as_str(), "42501" | "0A000")
        && server.message.contains("row-level security")
}

/// The error of copying `source` (blue) into `target` (green) as the refusal it stands for,
/// when a policy caused it; otherwise `e` itself.
pub(super) fn refine(
    e: BackfillError,
    source: &QualifiedName,
    target: &QualifiedName,
    blue_role: &str,
    green_role: &str,
) -> BackfillError {
    match &e {
        BackfillError::Blue { source: sql, .. } if is_row_security(sql) => {
            BackfillError::RowSecurity {
                side: "blue",
                tables: vec![source.clone()],
                role: blue_role.to_owned(),
            }
        }
        BackfillError::Green { source: sql, .. } if is_row_security(sql) => {
            BackfillError::RowSecurity {
                side: "green",
                tables: vec![target.clone()],
                role: green_role.to_owned(),
            }
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ServerError;

    fn server(sqlstate: &str, message: &str) -> SqlError {
        SqlError::Server(Box::new(ServerError {
            severity: "ERROR".into(),
            sqlstate: sqlstate.into(),
            message: message.into(),
            detail: None,
            hint: None,
            position: None,
            context: None,
            column: None,
        }))
    }

    #[test]
    fn a_policy_error_becomes_the_refusal_naming_the_table() {
        let (s, t) = (
            QualifiedName::new("public", "t_p1"),
            QualifiedName::new("public", "t"),
        );
        let blue = BackfillError::Blue {
            what: "copy".into(),
            source: server(
                "42501",
                "query would be affected by row-level security policy for table \"t_p1\"",
            ),
        };
        match refine(blue, &s, &t, "r", "g") {
            BackfillError::RowSecurity { side, tables, role } => {
                assert_eq!(
                    (side, tables, role.as_str()),
                    ("blue", vec![s.clone()], "r")
                );
            }
            other => panic!("{other:?}"),
        }
        let green = BackfillError::Green {
            what: "copy".into(),
            source: server("0A000", "COPY FROM not supported with row-level security"),
        };
        assert!(matches!(
            refine(green, &s, &t, "r", "g"),
            BackfillError::RowSecurity { side: "green", .. }
        ));
        // Any other permission error stays as it is.
        let other = BackfillError::Blue {
            what: "copy".into(),
            source: server("42501", "permission denied for table t"),
        };
        assert!(matches!(
            refine(other, &s, &t, "r", "g"),
            BackfillError::Blue { .. }
        ));
    }
}
