//! The replication origins of a slot's appliers on green and their progress.
//!
//! Applier `n` of slot `s` records its progress in the origin `blueshift_<s>_<n>`; green's
//! durable position is the maximum of their `pg_replication_origin_progress(name, true)`.

use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use super::slot::parse_lsn;
use crate::client::SqlError;

pub use crate::sync::{origin_name, ORIGIN_PREFIX};

/// The applier number of `origin` when it is one of `slot`'s origins (`blueshift_<slot>_<n>`
/// with `n` in decimal), else `None`. Slot `a`'s origins are not slot `a_1`'s.
pub fn origin_worker(slot: &str, origin: &str) -> Option<usize> {
    let n = origin
        .strip_prefix(ORIGIN_PREFIX)?
        .strip_prefix(slot)?
        .strip_prefix('_')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok()
}

/// One replication origin on green.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginProgress {
    /// Its name, `blueshift_<slot>_<n>`.
    pub name: String,
    /// The applier number `n`.
    pub worker: usize,
    /// The commit LSN on blue of the last transaction it committed durably on green; `None`
    /// when it has committed nothing yet.
    pub progress: Option<Lsn>,
}

/// The origins of slot `slot` on green, by applier number.
pub(crate) async fn read(client: &Client, slot: &str) -> Result<Vec<OriginProgress>, SqlError> {
    // starts_with rather than LIKE: `_` in a slot name is a LIKE wildcard. The exact shape is
    // checked here, below.
    let prefix = format!("{ORIGIN_PREFIX}{slot}_");
    let rows = client
        .query(
            "SELECT roname::pg_catalog.text, pg_catalog.pg_replication_origin_progress(roname, true)::pg_catalog.text
               FROM pg_catalog.pg_replication_origin
              WHERE pg_catalog.starts_with(roname, $1)",
            &[&prefix],
        )
        .await?;
    let mut origins = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0)?;
        let Some(worker) = origin_worker(slot, &name) else {
            continue;
        };
        origins.push(OriginProgress {
            name,
            worker,
            progress: parse_lsn(row.try_get(1)?),
        });
    }
    origins.sort_by_key(|o| o.worker);
    Ok(origins)
}

/// The maximum progress over `origins`: what green durably holds.
pub fn durable_position(origins: &[OriginProgress]) -> Option<Lsn> {
    origins.iter().filter_map(|o| o.progress).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_workers() {
        assert_eq!(origin_name("s", 0), "blueshift_s_0");
        assert_eq!(origin_worker("s", "blueshift_s_0"), Some(0));
        assert_eq!(origin_worker("s", "blueshift_s_12"), Some(12));
        assert_eq!(origin_worker("a", "blueshift_a_1_0"), None);
        assert_eq!(origin_worker("a_1", "blueshift_a_1_0"), Some(0));
        assert_eq!(origin_worker("s", "blueshift_s_"), None);
        assert_eq!(origin_worker("s", "blueshift_s_01"), None);
        assert_eq!(origin_worker("s", "blueshift_s_x"), None);
        assert_eq!(origin_worker("s", "pg_16384"), None);
        assert_eq!(origin_worker("s", "blueshift_sx_0"), None);
    }

    #[test]
    fn durable_position_is_the_maximum() {
        let o = |worker, progress| OriginProgress {
            name: origin_name("s", worker),
            worker,
            progress,
        };
        assert_eq!(durable_position(&[]), None);
        assert_eq!(durable_position(&[o(0, None)]), None);
        assert_eq!(
            durable_position(&[o(0, Some(Lsn(5))), o(1, None), o(2, Some(Lsn(9)))]),
            Some(Lsn(9))
        );
    }
}
