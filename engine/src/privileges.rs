//! Least privilege, checked first: what blueshift's role needs on blue and on green for each
//! command, checked from the catalogs before anything is created, and for each missing
//! privilege the exact statement that grants it (`docs/privileges.md` explains each one).
//!
//! | side | privilege | why |
//! |---|---|---|
//! | blue | `REPLICATION` | the replication connection, the slot (create, stream, drop) |
//! | blue | `USAGE` on each published table's schema, `SELECT` on the table (and its partitions) | the backfill copies it |
//! | blue | `SELECT` on sequences with a namesake on green (backfill) | the backfill sets green's sequences from them |
//! | blue | `CREATE` on the database and ownership of the tables (only to create the publication) | `CREATE PUBLICATION … FOR TABLE` |
//! | green | `CREATE` on the database | blueshift's state lives in schema `blueshift`, created if missing |
//! | green | `EXECUTE` on `pg_replication_origin_{create,oid,session_setup,xact_setup,progress}` | each applier's progress is a replication origin |
//! | green | `SET` on `session_replication_role` (15+; superuser on 14) | apply runs as a replica: no user triggers, no FK checks |
//! | green | `USAGE` on each table's schema; `SELECT, INSERT, UPDATE, DELETE, TRUNCATE` on the table | apply |
//! | green | ownership of each table (backfill without `--keep-indexes`) | indexes and constraints are dropped and rebuilt around the load |
//! | green | `TEMPORARY` on the database (backfill) | a resumed copy stages rows in a temporary table |
//! | green | `UPDATE` on sequences with a namesake on blue (backfill) | `setval` |
//! | green | `SELECT` on `pg_catalog.pg_replication_origin` (status, cleanup) | listing the sync's origins |
//! | green | `EXECUTE` on `pg_replication_origin_drop` (cleanup) | dropping them |

use std::fmt;

use blueshift_decoder::ident::quote_ident;
use tokio_postgres::Client;

use crate::schema::QualifiedName;

/// One privilege the role lacks, and the statement that grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// `blue` or `green`.
    pub side: &'static str,
    /// What is missing and why, e.g. `SELECT on table public.t (the backfill copies it)`.
    pub what: String,
    /// The statement a superuser (or the object's owner) runs to grant it.
    pub fix: String,
}

/// Privileges blueshift's roles lack; nothing was created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MissingPrivileges {
    /// Every one found, blue's first.
    pub missing: Vec<Missing>,
}

impl fmt::Display for MissingPrivileges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blueshift's role lacks {} privilege(s); nothing was created — run these as a \
             superuser (or the objects' owner), then start again:",
            self.missing.len()
        )?;
        for m in &self.missing {
            write!(f, "\n  on {}: {}  -- {}", m.side, m.fix, m.what)?;
        }
        Ok(())
    }
}

/// What a command will do, for the checks that depend on it.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// The tables published (blue's names; green's tables have the same names).
    pub tables: Vec<QualifiedName>,
    /// The publication must be created: `Some(true)` for `FOR ALL TABLES`.
    pub create_publication: Option<bool>,
    /// A backfill may run.
    pub backfill: bool,
    /// The backfill keeps green's indexes (no ownership needed).
    pub keep_indexes: bool,
}

/// The role's name (quoted), superuser flag and replication flag, and the database's name.
struct Role {
    quoted: String,
    superuser: bool,
    replication: bool,
    database: String,
    major: i32,
}

async fn role(c: &Client) -> Result<Role, tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT r.rolname::pg_catalog.text, r.rolsuper, r.rolreplication, \
                    pg_catalog.current_database()::pg_catalog.text, \
                    pg_catalog.current_setting('server_version_num')::pg_catalog.int4 \
                      OPERATOR(pg_catalog./) 10000 \
               FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user",
            &[],
        )
        .await?;
    Ok(Role {
        quoted: quote_ident(row.get::<_, &str>(0)),
        superuser: row.get(1),
        replication: row.get(2),
        database: row.get(3),
        major: row.get(4),
    })
}

fn names(tables: &[QualifiedName]) -> (Vec<&str>, Vec<&str>) {
    tables
        .iter()
        .map(|t| (t.schema.as_str(), t.name.as_str()))
        .unzip()
}

/// Blue's privileges for `sync` and `backfill`.
pub async fn blue_for_sync(
    blue: &Client,
    needs: &Needs,
) -> Result<Vec<Missing>, tokio_postgres::Error> {
    let role = role(blue).await?;
    let mut missing = Vec::new();
    let mut add = |what: String, fix: String| {
        missing.push(Missing {
            side: "blue",
            what,
            fix,
        })
    };
    if role.superuser {
        return Ok(Vec::new());
    }
    if !role.replication {
        add(
            "the REPLICATION attribute (the replication slot and stream)".to_owned(),
            format!("ALTER ROLE {} REPLICATION;", role.quoted),
        );
    }
    let (schemas, tables) = names(&needs.tables);
    // Every relation of each published table's partition tree: the backfill copies leaves.
    let rows = blue
        .query(
            "SELECT DISTINCT ln.nspname::pg_catalog.text, l.relname::pg_catalog.text, \
                    pg_catalog.has_schema_privilege(ln.oid, 'USAGE'), \
                    pg_catalog.has_table_privilege(l.oid, 'SELECT'), \
                    pg_catalog.pg_has_role(c.relowner, 'USAGE') \
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                               pg_catalog.unnest($2::pg_catalog.text[])) AS w(s, t) \
               JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) w.s \
               JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
                                         AND c.relname OPERATOR(pg_catalog.=) w.t \
               CROSS JOIN LATERAL (SELECT c.oid UNION \
                                   SELECT relid FROM pg_catalog.pg_partition_tree(c.oid)) p(relid) \
               JOIN pg_catalog.pg_class l ON l.oid OPERATOR(pg_catalog.=) p.relid \
               JOIN pg_catalog.pg_namespace ln ON ln.oid OPERATOR(pg_catalog.=) l.relnamespace \
              ORDER BY 1, 2",
            &[&schemas, &tables],
        )
        .await?;
    let mut usage_added = Vec::new();
    for row in &rows {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        if !row.get::<_, bool>(2) && !usage_added.contains(&name.schema) {
            usage_added.push(name.schema.clone());
            add(
                format!("USAGE on schema {}", quote_ident(&name.schema)),
                format!(
                    "GRANT USAGE ON SCHEMA {} TO {};",
                    quote_ident(&name.schema),
                    role.quoted
                ),
            );
        }
        if !row.get::<_, bool>(3) {
            add(
                format!("SELECT on table {name} (the backfill copies it)"),
                format!("GRANT SELECT ON TABLE {name} TO {};", role.quoted),
            );
        }
        if needs.create_publication == Some(false) && !row.get::<_, bool>(4) {
            add(
                format!("ownership of table {name} (to create the publication FOR TABLE)"),
                format!(
                    "ALTER TABLE {name} OWNER TO {};  -- or create the publication as its owner",
                    role.quoted
                ),
            );
        }
    }
    if let Some(all_tables) = needs.create_publication {
        let create = blue
            .query_one(
                "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')",
                &[],
            )
            .await?;
        if !create.get::<_, bool>(0) {
            add(
                "CREATE on the database (to create the publication)".to_owned(),
                format!(
                    "GRANT CREATE ON DATABASE {} TO {};",
                    quote_ident(&role.database),
                    role.quoted
                ),
            );
        }
        if all_tables {
            add(
                "superuser (only a superuser may create a publication FOR ALL TABLES)".to_owned(),
                "CREATE PUBLICATION … FOR ALL TABLES;  -- as a superuser, then pass --publication"
                    .to_owned(),
            );
        }
    }
    Ok(missing)
}

/// Blue's sequences the backfill reads that the role may not read, as fixes.
pub async fn blue_sequences(
    blue: &Client,
    green_has: &[QualifiedName],
) -> Result<Vec<Missing>, tokio_postgres::Error> {
    let role = role(blue).await?;
    if role.superuser || green_has.is_empty() {
        return Ok(Vec::new());
    }
    let (schemas, names) = names(green_has);
    let rows = blue
        .query(
            "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text, \
                    pg_catalog.has_schema_privilege(n.oid, 'USAGE') \
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                               pg_catalog.unnest($2::pg_catalog.text[])) AS w(s, t) \
               JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) w.s \
               JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
                                         AND c.relname OPERATOR(pg_catalog.=) w.t \
              WHERE c.relkind OPERATOR(pg_catalog.=) 'S' \
                AND NOT (pg_catalog.has_schema_privilege(n.oid, 'USAGE') \
                         AND pg_catalog.has_sequence_privilege(c.oid, 'SELECT')) \
              ORDER BY 1, 2",
            &[&schemas, &names],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            let mut fix = String::new();
            if !r.get::<_, bool>(2) {
                fix = format!(
                    "GRANT USAGE ON SCHEMA {} TO {}; ",
                    quote_ident(&name.schema),
                    role.quoted
                );
            }
            fix.push_str(&format!(
                "GRANT SELECT ON SEQUENCE {name} TO {};",
                role.quoted
            ));
            Missing {
                side: "blue",
                what: format!(
                    "SELECT on sequence {name} (the backfill sets green's namesake from it)"
                ),
                fix,
            }
        })
        .collect())
}

/// The sequences of the schemas outside the system ones, on either side, by name.
pub async fn sequences(c: &Client) -> Result<Vec<QualifiedName>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
              WHERE c.relkind OPERATOR(pg_catalog.=) 'S' \
                AND n.nspname OPERATOR(pg_catalog.<>) ALL ('{pg_catalog,information_schema,blueshift}')",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// The origin functions an applier calls.
const APPLY_ORIGIN_FUNCTIONS: &[&str] = &[
    "pg_catalog.pg_replication_origin_create(text)",
    "pg_catalog.pg_replication_origin_oid(text)",
    "pg_catalog.pg_replication_origin_session_setup(text)",
    "pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)",
    "pg_catalog.pg_replication_origin_progress(text, boolean)",
];

/// Green's privileges for `sync` and `backfill`.
pub async fn green_for_sync(
    green: &Client,
    needs: &Needs,
) -> Result<Vec<Missing>, tokio_postgres::Error> {
    let role = role(green).await?;
    if role.superuser {
        return Ok(Vec::new());
    }
    let mut missing = Vec::new();
    let mut add = |what: String, fix: String| {
        missing.push(Missing {
            side: "green",
            what,
            fix,
        })
    };
    let db = green
        .query_one(
            "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE'), \
                    pg_catalog.has_database_privilege(pg_catalog.current_database(), 'TEMPORARY')",
            &[],
        )
        .await?;
    let database = quote_ident(&role.database);
    if !db.get::<_, bool>(0) {
        add(
            "CREATE on the database (blueshift keeps its state in schema blueshift)".to_owned(),
            format!("GRANT CREATE ON DATABASE {database} TO {};", role.quoted),
        );
    }
    if needs.backfill && !db.get::<_, bool>(1) {
        add(
            "TEMPORARY on the database (a resumed backfill stages rows in a temporary table)"
                .to_owned(),
            format!("GRANT TEMPORARY ON DATABASE {database} TO {};", role.quoted),
        );
    }
    for function in APPLY_ORIGIN_FUNCTIONS {
        let ok = green
            .query_one(
                "SELECT pg_catalog.has_function_privilege($1, 'EXECUTE')",
                &[function],
            )
            .await?;
        if !ok.get::<_, bool>(0) {
            add(
                format!("EXECUTE on {function} (appliers record progress in origins)"),
                format!("GRANT EXECUTE ON FUNCTION {function} TO {};", role.quoted),
            );
        }
    }
    if role.major >= 15 {
        let ok = green
            .query_one(
                "SELECT pg_catalog.has_parameter_privilege('session_replication_role', 'SET')",
                &[],
            )
            .await?;
        if !ok.get::<_, bool>(0) {
            add(
                "SET on session_replication_role (apply runs as a replica: no user triggers, \
                 no foreign-key checks)"
                    .to_owned(),
                format!(
                    "GRANT SET ON PARAMETER session_replication_role TO {};",
                    role.quoted
                ),
            );
        }
    } else {
        add(
            "superuser: on PostgreSQL 14 only a superuser may set session_replication_role, \
             which apply needs"
                .to_owned(),
            format!(
                "ALTER ROLE {} SUPERUSER;  -- PostgreSQL 14 has no GRANT SET ON PARAMETER",
                role.quoted
            ),
        );
    }
    // Schema blueshift, when it exists already: the role creates and uses its tables.
    let state = green
        .query_opt(
            "SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') \
                    AND pg_catalog.has_schema_privilege(n.oid, 'CREATE'), \
                    pg_catalog.array_agg(c.relname::pg_catalog.text ORDER BY c.relname) \
                      FILTER (WHERE c.oid IS NOT NULL AND NOT ( \
                        pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE'))) \
               FROM pg_catalog.pg_namespace n \
               LEFT JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
                                              AND c.relkind OPERATOR(pg_catalog.=) 'r' \
              WHERE n.nspname OPERATOR(pg_catalog.=) 'blueshift' \
              GROUP BY n.oid",
            &[],
        )
        .await?;
    if let Some(state) = state {
        if !state.get::<_, bool>(0) {
            add(
                "USAGE and CREATE on schema blueshift (blueshift's state)".to_owned(),
                format!(
                    "GRANT USAGE, CREATE ON SCHEMA blueshift TO {};",
                    role.quoted
                ),
            );
        }
        let tables: Option<Vec<String>> = state.get(1);
        for table in tables.unwrap_or_default() {
            let name = QualifiedName::new("blueshift", table);
            add(
                format!("SELECT, INSERT, UPDATE, DELETE on {name} (blueshift's state)"),
                format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {name} TO {};",
                    role.quoted
                ),
            );
        }
    }
    let (schemas, tables) = names(&needs.tables);
    let rows = green
        .query(
            "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text, \
                    pg_catalog.has_schema_privilege(n.oid, 'USAGE'), \
                    pg_catalog.array_to_string(ARRAY( \
                      SELECT p FROM pg_catalog.unnest( \
                        '{SELECT,INSERT,UPDATE,DELETE,TRUNCATE}'::pg_catalog.text[]) AS p \
                       WHERE NOT pg_catalog.has_table_privilege(c.oid, p)), ', '), \
                    pg_catalog.pg_has_role(c.relowner, 'USAGE') \
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                               pg_catalog.unnest($2::pg_catalog.text[])) AS w(s, t) \
               JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) w.s \
               JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
                                         AND c.relname OPERATOR(pg_catalog.=) w.t \
              ORDER BY 1, 2",
            &[&schemas, &tables],
        )
        .await?;
    let mut usage_added = Vec::new();
    for row in &rows {
        let name = QualifiedName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        if !row.get::<_, bool>(2) && !usage_added.contains(&name.schema) {
            usage_added.push(name.schema.clone());
            add(
                format!("USAGE on schema {}", quote_ident(&name.schema)),
                format!(
                    "GRANT USAGE ON SCHEMA {} TO {};",
                    quote_ident(&name.schema),
                    role.quoted
                ),
            );
        }
        let lacking: String = row.get(3);
        if !lacking.is_empty() {
            add(
                format!("{lacking} on table {name} (apply writes it)"),
                format!("GRANT {lacking} ON TABLE {name} TO {};", role.quoted),
            );
        }
        if needs.backfill && !needs.keep_indexes && !row.get::<_, bool>(4) {
            add(
                format!(
                    "ownership of table {name} (the backfill drops and rebuilds its indexes; \
                     or pass --keep-indexes)"
                ),
                format!("ALTER TABLE {name} OWNER TO {};", role.quoted),
            );
        }
    }
    Ok(missing)
}

/// Green's sequences the backfill sets that the role may not update.
pub async fn green_sequences(
    green: &Client,
    blue_has: &[QualifiedName],
) -> Result<Vec<Missing>, tokio_postgres::Error> {
    let role = role(green).await?;
    if role.superuser || blue_has.is_empty() {
        return Ok(Vec::new());
    }
    let (schemas, names) = names(blue_has);
    let rows = green
        .query(
            "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text \
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                               pg_catalog.unnest($2::pg_catalog.text[])) AS w(s, t) \
               JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) w.s \
               JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
                                         AND c.relname OPERATOR(pg_catalog.=) w.t \
              WHERE c.relkind OPERATOR(pg_catalog.=) 'S' \
                AND NOT (pg_catalog.has_schema_privilege(n.oid, 'USAGE') \
                         AND pg_catalog.has_sequence_privilege(c.oid, 'UPDATE')) \
              ORDER BY 1, 2",
            &[&schemas, &names],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name = QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1));
            Missing {
                side: "green",
                what: format!("UPDATE on sequence {name} (the backfill sets it from blue)"),
                fix: format!("GRANT UPDATE ON SEQUENCE {name} TO {};", role.quoted),
            }
        })
        .collect())
}

/// Green's privileges for reading the sync's origins (`status`, `cleanup`) and, when `drop`,
/// dropping them (`cleanup`).
pub async fn green_for_origins(
    green: &Client,
    drop: bool,
) -> Result<Vec<Missing>, tokio_postgres::Error> {
    let role = role(green).await?;
    if role.superuser {
        return Ok(Vec::new());
    }
    let mut missing = Vec::new();
    let row = green
        .query_one(
            "SELECT pg_catalog.has_table_privilege('pg_catalog.pg_replication_origin', 'SELECT'), \
                    pg_catalog.has_function_privilege( \
                      'pg_catalog.pg_replication_origin_progress(text, boolean)', 'EXECUTE'), \
                    pg_catalog.has_function_privilege( \
                      'pg_catalog.pg_replication_origin_drop(text)', 'EXECUTE')",
            &[],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        missing.push(Missing {
            side: "green",
            what: "SELECT on pg_catalog.pg_replication_origin (listing the sync's origins)"
                .to_owned(),
            fix: format!(
                "GRANT SELECT ON TABLE pg_catalog.pg_replication_origin TO {};",
                role.quoted
            ),
        });
    }
    if !row.get::<_, bool>(1) {
        missing.push(Missing {
            side: "green",
            what: "EXECUTE on pg_catalog.pg_replication_origin_progress(text, boolean)".to_owned(),
            fix: format!(
                "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_progress(text, boolean) TO {};",
                role.quoted
            ),
        });
    }
    if drop && !row.get::<_, bool>(2) {
        missing.push(Missing {
            side: "green",
            what:
                "EXECUTE on pg_catalog.pg_replication_origin_drop(text) (cleanup drops the origins)"
                    .to_owned(),
            fix: format!(
                "GRANT EXECUTE ON FUNCTION pg_catalog.pg_replication_origin_drop(text) TO {};",
                role.quoted
            ),
        });
    }
    Ok(missing)
}

/// Blue's privilege for dropping the slot (`cleanup`).
pub async fn blue_for_slot_drop(blue: &Client) -> Result<Vec<Missing>, tokio_postgres::Error> {
    let role = role(blue).await?;
    if role.superuser || role.replication {
        return Ok(Vec::new());
    }
    Ok(vec![Missing {
        side: "blue",
        what: "the REPLICATION attribute (dropping the replication slot)".to_owned(),
        fix: format!("ALTER ROLE {} REPLICATION;", role.quoted),
    }])
}

/// Every privilege `sync` (or `backfill`) needs on both sides; all the missing ones in one error.
pub(crate) async fn check_sync(
    config: &crate::sync::SyncConfig,
    blue: &Client,
    green: &Client,
) -> Result<(), crate::sync::preflight::PreflightError> {
    use crate::sync::preflight::PreflightError;
    let query = |side: &'static str| {
        move |source| PreflightError::Query {
            side,
            what: "privileges",
            source,
        }
    };
    let published = blue
        .query(
            "SELECT schemaname::pg_catalog.text, tablename::pg_catalog.text \
               FROM pg_catalog.pg_publication_tables WHERE pubname OPERATOR(pg_catalog.=) $1 \
                AND schemaname OPERATOR(pg_catalog.<>) 'blueshift'",
            &[&config.publication],
        )
        .await
        .map_err(query("blue"))?;
    let exists = blue
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $1",
            &[&config.publication],
        )
        .await
        .map_err(query("blue"))?
        .is_some();
    let mut needs = Needs {
        tables: published
            .iter()
            .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect(),
        create_publication: None,
        backfill: config.backfill.mode != crate::backfill::BackfillMode::Never,
        keep_indexes: config.backfill.keep_indexes,
    };
    if !exists {
        if let Some(tables) = &config.create_publication {
            needs.create_publication = Some(tables.is_empty());
            needs.tables = tables
                .iter()
                .map(|t| match t.split_once('.') {
                    Some((schema, table)) => QualifiedName::new(schema, table),
                    None => QualifiedName::new("public", t.as_str()),
                })
                .collect();
        }
    }
    let mut missing = blue_for_sync(blue, &needs).await.map_err(query("blue"))?;
    missing.extend(
        green_for_sync(green, &needs)
            .await
            .map_err(query("green"))?,
    );
    if needs.backfill {
        let blue_seqs = sequences(blue).await.map_err(query("blue"))?;
        let green_seqs = sequences(green).await.map_err(query("green"))?;
        let both: Vec<QualifiedName> = blue_seqs
            .into_iter()
            .filter(|s| green_seqs.contains(s))
            .collect();
        missing.extend(blue_sequences(blue, &both).await.map_err(query("blue"))?);
        missing.extend(
            green_sequences(green, &both)
                .await
                .map_err(query("green"))?,
        );
    }
    // Blue's findings first, as they were added.
    missing.sort_by_key(|m| m.side != "blue");
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingPrivileges { missing }.into())
    }
}
