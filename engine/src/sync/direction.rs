//! `direction`: the way back, green → blue, armed once green equals blue and run by the same
//! sidecar as the forward direction.
//!
//! ```text
//!  forward:  blue ── slot <slot>, publication <publication> ──► appliers on green
//!                                                              origins blueshift_<slot>_<n>
//!  reverse:  green ── slot <slot>_reverse,                  ──► appliers on blue
//!                     publication <publication>_reverse         origins blueshift_<slot>_r<n>
//!
//!  green: blueshift.reverse (slot, reverse_slot, reverse_publication, armed_lsn, armed_at)
//!  blue:  blueshift.slot_guard row of <slot>_reverse (the reverse slot's guard)
//! ```
//!
//! - **Arming** ([`arm_reverse`]) is called when green equals blue (the cutover after its drain;
//!   `blueshift sync --bidirectional` once green is caught up and blue is quiet). It creates on
//!   green a publication for the tables of the forward publication, a logical slot whose
//!   consistent point is `armed_lsn` — every write green commits after it flows to blue, none
//!   before it — records the slot in the slot guard on blue (the side the reverse appliers write
//!   to, as the forward guard lives on green), and last writes the `blueshift.reverse` row. A
//!   crash before the row leaves nothing armed: the next call starts over. With the row and the
//!   slot present it does nothing; a row whose slot is gone is refused (what green took since
//!   `armed_lsn` may be missing on blue).
//! - **Running**: whenever the row exists, `blueshift sync` runs the reverse direction next to
//!   the forward one ([`sidecar`]), through the same pipeline with the roles of the servers
//!   swapped: its own stream, its own appliers on blue whose origins
//!   (`blueshift_<slot>_r<n>`) hold its progress, exactly once across crashes; it never creates
//!   the reverse slot (a missing one is the guard's "lost" error).
//! - **No loops.** Each direction tags what it applies with an origin starting with
//!   [`ORIGIN_PREFIX`](super::ORIGIN_PREFIX) and drops what arrives with one: the server does it
//!   on 16+ (`origin = none`), the assembler on 14 and 15 (the Origin message). blueshift's own
//!   state tables (schema `blueshift`, on both sides now) are never replicated: the stream drops
//!   changes to them even when a publication is `FOR ALL TABLES`.
//! - **Disarming** ([`disarm_reverse`], `blueshift finalize`) deletes the row first (a running
//!   sidecar stops the reverse direction within a second), then drops the slot and the
//!   publication on green and the guard record and origins on blue.

mod disarm;
mod error;
pub(crate) mod preflight;
pub(crate) mod sidecar;
mod status;

pub(crate) use disarm::disarm_with;
pub use disarm::{disarm_reverse, Disarmed};
use disarm::{drop_origins, drop_publication, drop_slot, slot_on};
pub use error::DirectionError;
pub use status::{reverse_status, ReverseStatus};

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use blueshift_applier::client::SqlError;
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::{
    validate_slot_name, CreateSlotOptions, ReplicationConnection, SnapshotAction,
};
use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use super::{ORIGIN_PREFIX, PUBLICATION_COMMENT};
use crate::client;
use crate::schema::QualifiedName;
use crate::slot_guard::{self, BlueIdentity};

/// The table on green that arms the reverse direction (one row per forward slot), created when
/// missing under the advisory lock blueshift's other state tables use.
const SCHEMA: &str = "\
SELECT pg_catalog.pg_advisory_xact_lock(7235342165031183718);
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.reverse (
    slot text PRIMARY KEY,
    reverse_slot text NOT NULL,
    reverse_publication text NOT NULL,
    armed_lsn pg_lsn NOT NULL,
    armed_at timestamptz NOT NULL
)";

/// PostgreSQL's longest identifier (`NAMEDATALEN - 1`).
pub(super) const MAX_NAME_LEN: usize = 63;

/// SQLSTATE `object_in_use`: a slot or origin some process is using.
pub(super) const OBJECT_IN_USE: &str = "55006";

/// How long disarming waits for a running sidecar to let go of the reverse slot and origins.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Which way a pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// Blue → green, from the forward slot on blue.
    Forward,
    /// Green → blue, from the reverse slot on green.
    Reverse {
        /// The forward slot's name (the reverse origins are named after it).
        forward_slot: String,
    },
}

impl Direction {
    /// The `direction` label of metrics and logs: `forward` or `reverse`.
    pub fn label(&self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse { .. } => "reverse",
        }
    }

    /// The replication origin of applier `n` (`slot`: the slot this direction streams from).
    pub fn origin_name(&self, slot: &str, n: usize) -> String {
        match self {
            Direction::Forward => super::origin_name(slot, n),
            Direction::Reverse { forward_slot } => reverse_origin_name(forward_slot, n),
        }
    }
}

/// The reverse slot of forward slot `slot`: `<slot>_reverse`.
pub fn reverse_slot_name(slot: &str) -> String {
    format!("{slot}_reverse")
}

/// The reverse publication of forward publication `publication`: `<publication>_reverse`.
pub fn reverse_publication_name(publication: &str) -> String {
    format!("{publication}_reverse")
}

/// The replication origin on blue of reverse applier `n` of forward slot `slot`:
/// `blueshift_<slot>_r<n>` (the forward direction drops what arrives with it).
pub fn reverse_origin_name(slot: &str, n: usize) -> String {
    format!("{ORIGIN_PREFIX}{slot}_r{n}")
}

/// The reverse applier number of `origin` when it is one of `slot`'s reverse origins.
pub fn reverse_origin_worker(slot: &str, origin: &str) -> Option<usize> {
    let n = origin
        .strip_prefix(ORIGIN_PREFIX)?
        .strip_prefix(slot)?
        .strip_prefix("_r")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok()
}

/// The `blueshift.reverse` row of one forward slot: the reverse direction is armed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reverse {
    /// The forward slot (on blue).
    pub slot: String,
    /// The reverse slot (on green).
    pub reverse_slot: String,
    /// The reverse publication (on green).
    pub reverse_publication: String,
    /// The reverse slot's consistent point on green: every transaction green commits after it
    /// flows to blue.
    pub armed_lsn: Lsn,
    /// When it was armed.
    pub armed_at: SystemTime,
}

/// The tables the reverse direction holds (those of its publication on green, blueshift's own
/// excluded); `None` for the forward direction, whose loaded tables are the backfill's.
pub(crate) async fn loaded(
    config: &super::SyncConfig,
    direction: &Direction,
) -> Result<Option<super::loaded::Loaded>, super::SyncError> {
    if *direction == Direction::Forward {
        return Ok(None);
    }
    let (green, conn) = client::connect(&config.source, "blueshift sync")
        .await
        .map_err(|source| super::SyncError::Sql {
            what: format!("could not connect to green ({})", config.source),
            source,
        })?;
    let tables = published_tables(&green, &config.publication).await;
    client::close(green, conn).await;
    Ok(Some(super::loaded::Loaded::new(
        tables?,
        std::collections::HashMap::new(),
        &config.slot,
        &config.publication,
    )))
}

/// Reads the `blueshift.reverse` row of forward slot `slot` from green (`None`: not armed, or the
/// table does not exist).
pub async fn read_reverse(green: &Client, slot: &str) -> Result<Option<Reverse>, SqlError> {
    let exists = crate::client::relation_exists(green, "blueshift.reverse").await?;
    if !exists {
        return Ok(None);
    }
    let row = green
        .query_opt(
            "SELECT slot, reverse_slot, reverse_publication, armed_lsn::pg_catalog.text, \
                    pg_catalog.date_part('epoch', armed_at)::pg_catalog.float8 \
               FROM blueshift.reverse WHERE slot = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| {
        let epoch: f64 = r.get(4);
        Reverse {
            slot: r.get(0),
            reverse_slot: r.get(1),
            reverse_publication: r.get(2),
            armed_lsn: r.get::<_, String>(3).parse().unwrap_or(Lsn::INVALID),
            armed_at: SystemTime::UNIX_EPOCH
                + Duration::try_from_secs_f64(epoch.max(0.0)).unwrap_or_default(),
        }
    }))
}

/// Arms the reverse direction of forward slot `slot` and publication `publication` (see the
/// module docs). Call it only when green equals blue: it copies nothing. Idempotent.
pub async fn arm_reverse(
    blue: &ConnectConfig,
    green: &ConnectConfig,
    slot: &str,
    publication: &str,
) -> Result<Reverse, DirectionError> {
    let reverse_slot = reverse_slot_name(slot);
    let reverse_publication = reverse_publication_name(publication);
    check_names(&reverse_slot, &reverse_publication)?;
    let (green_sql, green_conn) = connect(green, "green").await?;
    let (mut blue_sql, blue_conn) = match connect(blue, "blue").await {
        Ok(c) => c,
        Err(e) => {
            client::close(green_sql, green_conn).await;
            return Err(e);
        }
    };
    let armed = arm(
        green,
        &mut blue_sql,
        &green_sql,
        slot,
        publication,
        &reverse_slot,
        &reverse_publication,
    )
    .await;
    client::close(green_sql, green_conn).await;
    client::close(blue_sql, blue_conn).await;
    armed
}

fn check_names(reverse_slot: &str, reverse_publication: &str) -> Result<(), DirectionError> {
    if reverse_slot.len() > MAX_NAME_LEN {
        return Err(DirectionError::NameTooLong {
            what: "slot",
            name: reverse_slot.to_owned(),
        });
    }
    if reverse_publication.len() > MAX_NAME_LEN {
        return Err(DirectionError::NameTooLong {
            what: "publication",
            name: reverse_publication.to_owned(),
        });
    }
    validate_slot_name(reverse_slot).map_err(|source| DirectionError::Replication {
        what: "name the reverse slot",
        source,
    })
}

pub(super) async fn connect(
    config: &ConnectConfig,
    side: &'static str,
) -> Result<(Client, tokio::task::JoinHandle<()>), DirectionError> {
    client::connect(config, "blueshift reverse")
        .await
        .map_err(|source| DirectionError::Connect { side, source })
}

#[allow(clippy::too_many_arguments)]
async fn arm(
    green: &ConnectConfig,
    blue_sql: &mut Client,
    green_sql: &Client,
    slot: &str,
    publication: &str,
    reverse_slot: &str,
    reverse_publication: &str,
) -> Result<Reverse, DirectionError> {
    let read = |e| DirectionError::Sql {
        side: "green",
        what: "read blueshift.reverse".to_owned(),
        source: e,
    };
    if let Some(row) = read_reverse(green_sql, slot).await.map_err(read)? {
        let present = slot_on(green_sql, &row.reverse_slot).await?.is_some();
        if !present {
            return Err(DirectionError::SlotLost {
                slot: row.slot,
                reverse_slot: row.reverse_slot,
                armed_lsn: row.armed_lsn,
            });
        }
        tracing::info!(slot, reverse_slot = %row.reverse_slot, armed_lsn = %row.armed_lsn, "the reverse direction is armed already");
        return Ok(row);
    }
    // Not armed: whatever a crashed earlier call left (a publication, a slot, a guard record,
    // origins) is removed and made afresh, now that green equals blue.
    let tables = published_tables(blue_sql, publication).await?;
    check_on_green(green_sql, &tables).await?;
    drop_slot(green_sql, reverse_slot).await?;
    drop_publication(green_sql, reverse_publication).await?;
    let list = tables
        .iter()
        .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let name = quote_ident(reverse_publication);
    green_sql
        .batch_execute(&format!(
            "BEGIN; CREATE PUBLICATION {name} FOR TABLE {list}; \
             COMMENT ON PUBLICATION {name} IS '{PUBLICATION_COMMENT}'; COMMIT"
        ))
        .await
        .map_err(DirectionError::sql("green", "CREATE PUBLICATION"))?;
    drop_origins(blue_sql, slot).await?;
    slot_guard::forget(&*blue_sql, reverse_slot)
        .await
        .map_err(DirectionError::sql(
            "blue",
            "forget an old reverse slot guard record",
        ))?;
    let mut replication = ReplicationConnection::connect(green)
        .await
        .map_err(|source| DirectionError::Replication {
            what: "open a replication connection",
            source,
        })?;
    let identity = BlueIdentity::from(&replication.identify_system().await.map_err(|source| {
        DirectionError::Replication {
            what: "run IDENTIFY_SYSTEM",
            source,
        }
    })?);
    let created = replication
        .create_slot(
            reverse_slot,
            CreateSlotOptions {
                temporary: false,
                snapshot: SnapshotAction::NoExport,
                two_phase: false,
            },
        )
        .await
        .map_err(|source| DirectionError::Replication {
            what: "create the reverse replication slot",
            source,
        })?;
    let _ = replication.close().await;
    let at = created.consistent_point;
    // The reverse slot's guard lives where its appliers write, as the forward one does.
    slot_guard::record(blue_sql, reverse_slot, &identity, at, true).await?;
    green_sql
        .batch_execute(&format!("BEGIN; {SCHEMA}; COMMIT"))
        .await
        .map_err(DirectionError::sql("green", "create blueshift.reverse"))?;
    green_sql
        .execute(
            "INSERT INTO blueshift.reverse \
                 (slot, reverse_slot, reverse_publication, armed_lsn, armed_at) \
             VALUES ($1, $2, $3, $4::text::pg_lsn, pg_catalog.now())",
            &[&slot, &reverse_slot, &reverse_publication, &at.to_string()],
        )
        .await
        .map_err(DirectionError::sql(
            "green",
            "record the reverse direction in blueshift.reverse",
        ))?;
    tracing::info!(slot, reverse_slot, reverse_publication, armed_lsn = %at, tables = tables.len(), "the reverse direction is armed: green's writes from here on flow to blue");
    read_reverse(green_sql, slot)
        .await
        .map_err(read)?
        .ok_or_else(|| DirectionError::SlotLost {
            slot: slot.to_owned(),
            reverse_slot: reverse_slot.to_owned(),
            armed_lsn: at,
        })
}

/// Fails with [`DirectionError::NotReversed`] when `blue`'s publication `publication` holds a
/// table `green`'s `reverse_publication` does not (one added to the forward publication after
/// arming).
pub(crate) async fn check_reversed(
    blue: &Client,
    green: &Client,
    publication: &str,
    reverse_publication: &str,
) -> Result<(), DirectionError> {
    let forward = published_tables(blue, publication).await?;
    let reverse = published_tables(green, reverse_publication).await?;
    match forward.difference(&reverse).next() {
        Some(table) => Err(DirectionError::NotReversed {
            table: table.clone(),
            publication: publication.to_owned(),
            reverse_publication: reverse_publication.to_owned(),
        }),
        None => Ok(()),
    }
}

/// The tables of publication `publication` (on blue for arming, on green for the reverse
/// stream), blueshift's own excluded.
async fn published_tables(
    blue: &Client,
    publication: &str,
) -> Result<BTreeSet<QualifiedName>, DirectionError> {
    let rows = blue
        .query(
            "SELECT schemaname::pg_catalog.text, tablename::pg_catalog.text \
               FROM pg_catalog.pg_publication_tables \
              WHERE pubname OPERATOR(pg_catalog.=) $1 \
                AND schemaname OPERATOR(pg_catalog.<>) 'blueshift'",
            &[&publication],
        )
        .await
        .map_err(DirectionError::sql(
            "the publisher",
            "read the published tables",
        ))?;
    let tables: BTreeSet<QualifiedName> = rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    if tables.is_empty() {
        return Err(DirectionError::NoTables {
            publication: publication.to_owned(),
        });
    }
    Ok(tables)
}

/// Every table exists on green under the same name.
async fn check_on_green(
    green: &Client,
    tables: &BTreeSet<QualifiedName>,
) -> Result<(), DirectionError> {
    for table in tables {
        let found = green
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
                  WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2 \
                    AND c.relkind IN ('r', 'p'))",
                &[&table.schema, &table.name],
            )
            .await
            .map_err(DirectionError::sql("green", "look up a published table"))?
            .get::<_, bool>(0);
        if !found {
            return Err(DirectionError::MissingOnGreen {
                table: table.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(reverse_slot_name("bs"), "bs_reverse");
        assert_eq!(reverse_publication_name("pub"), "pub_reverse");
        assert_eq!(reverse_origin_name("bs", 3), "blueshift_bs_r3");
        assert_eq!(
            Direction::Reverse {
                forward_slot: "bs".into()
            }
            .origin_name("bs_reverse", 0),
            "blueshift_bs_r0"
        );
        assert_eq!(Direction::Forward.origin_name("bs", 1), "blueshift_bs_1");
        assert!(reverse_origin_name("bs", 0).starts_with(ORIGIN_PREFIX));
    }

    #[test]
    fn reverse_origins_are_told_apart_from_forward_ones() {
        assert_eq!(reverse_origin_worker("bs", "blueshift_bs_r0"), Some(0));
        assert_eq!(reverse_origin_worker("bs", "blueshift_bs_r12"), Some(12));
        assert_eq!(reverse_origin_worker("bs", "blueshift_bs_0"), None);
        assert_eq!(reverse_origin_worker("bs", "blueshift_bs_r"), None);
        assert_eq!(reverse_origin_worker("bs", "blueshift_bs_r01"), None);
        assert_eq!(reverse_origin_worker("b", "blueshift_bs_r0"), None);
        assert_eq!(
            crate::status::origin_worker("bs", "blueshift_bs_r0"),
            None,
            "the forward cleanup never takes a reverse origin"
        );
    }

    #[test]
    fn long_names_are_refused() {
        let slot = "s".repeat(60);
        assert!(matches!(
            check_names(&reverse_slot_name(&slot), "p_reverse"),
            Err(DirectionError::NameTooLong { what: "slot", .. })
        ));
        let publication = "p".repeat(60);
        assert!(matches!(
            check_names("s_reverse", &reverse_publication_name(&publication)),
            Err(DirectionError::NameTooLong {
                what: "publication",
                ..
            })
        ));
        assert!(check_names("s_reverse", "p_reverse").is_ok());
    }
}
