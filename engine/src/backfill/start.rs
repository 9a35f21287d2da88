//! Where a backfill starts: nothing to copy, a fresh copy of every published table, the resume
//! of an unfinished run, or the copy of the tables published since green was loaded.
//!
//! Green records which published tables it holds the rows of (*loaded*, see [`state`]): those a
//! run planned chunks for, and those declared loaded by `--no-backfill` at the first start. A
//! published table that is neither — added to the publication while sync was down, or while it
//! ran (the reader stops at its first change, see `sync::loaded`) — is copied by reopening the
//! run for it: under a snapshot of its own at S, its fence then skips the stream's changes to it
//! committed before S and applies the later ones, exactly as for the initial copy. Until the
//! run is finished again, sync streams nothing but the catch-up a resume needs, so no change
//! reaches the table before its rows.
//!
//! An added table keeps its indexes and constraints during its copy: green's other tables are
//! at an older position of blue than the copy until the stream passes it, so a foreign key
//! between them could not be validated then.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{state, BackfillError, BackfillMode, BackfillOptions};
use crate::schema::{catalog, QualifiedName};
use crate::sync::SyncConfig;

/// What a backfill does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// Nothing: every published table is loaded (or backfill is off).
    Nothing,
    /// Copy every published table into an empty green.
    Fresh,
    /// Finish the unfinished run.
    Resume,
    /// Copy these published tables, not loaded yet, into their empty green tables.
    Add(Vec<QualifiedName>),
}

/// Decides from `options.mode`, green's record and whether the slot exists on blue.
pub(super) async fn decide(
    config: &SyncConfig,
    options: &BackfillOptions,
    green: &mut Client,
    blue: &Client,
) -> Result<Start, BackfillError> {
    let slot = config.slot.as_str();
    let previous = state::run(&*green, slot).await?;
    let slot_exists = super::catalog::slot_exists(blue, slot).await?;
    if previous.as_ref().is_some_and(|r| !r.finished) {
        if options.mode == BackfillMode::Never {
            return Err(BackfillError::Unfinished {
                slot: slot.to_owned(),
            });
        }
        if !slot_exists {
            return Err(BackfillError::SlotLost {
                slot: slot.to_owned(),
            });
        }
        return Ok(Start::Resume);
    }
    // Whether the slot streams already: then only what is not loaded is copied. `--backfill`
    // with a slot but no copy recorded copies everything (green's tables must be empty).
    let streams = slot_exists && (previous.is_some() || options.mode != BackfillMode::Always);
    if options.mode != BackfillMode::Never && !streams {
        return Ok(Start::Fresh);
    }
    let published: BTreeSet<QualifiedName> =
        catalog::published_tables(blue, Some(&config.publication))
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
    let Some(loaded) = state::loaded(&*green, slot).await? else {
        // Nothing recorded: the first start with --no-backfill, or a green loaded by a
        // blueshift that did not record it.
        state::ensure(green).await?;
        let tables: Vec<QualifiedName> = published.into_iter().collect();
        state::declare(&*green, slot, &tables).await?;
        if options.mode == BackfillMode::Never {
            tracing::info!(
                slot,
                tables = tables.len(),
                "--no-backfill: every published table declared loaded on green"
            );
        } else {
            tracing::warn!(slot, tables = tables.len(), "green records no copy through this slot: every published table is taken as loaded (green was loaded another way)");
        }
        return Ok(Start::Nothing);
    };
    let unloaded: Vec<QualifiedName> = published
        .into_iter()
        .filter(|t| !loaded.contains(t))
        .collect();
    if unloaded.is_empty() {
        if options.mode == BackfillMode::Always {
            tracing::info!(slot, "the backfill of this slot finished already; not copying again (`blueshift cleanup` forgets it)");
        }
        return Ok(Start::Nothing);
    }
    if options.mode == BackfillMode::Never {
        return Err(BackfillError::NeverLoaded { tables: unloaded });
    }
    Ok(Start::Add(unloaded))
}
