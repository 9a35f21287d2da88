//! The apply path of two-way mode: each change checked (see [`crate::conflict`]), then applied,
//! changed, or left out as its conflict's resolution says, the conflict recorded beside it.

use std::borrow::Cow;

use blueshift_decoder::pgoutput::{ColumnValue, OldTuple};

use super::{Kind, Local, Resolution};
use crate::change::{check_width, locate, ChangeWriter};
use crate::error::{ApplyError, Operation};
use crate::fence::Action;
use crate::statement::Locate;
use crate::transaction::Change;

impl ChangeWriter<'_> {
    /// Applies one change of a two-way transaction.
    pub(crate) async fn write_detected(&mut self, change: &Change) -> Result<(), ApplyError> {
        // Every earlier statement is answered: what the checks read includes it.
        self.pipeline.drain().await?;
        match change {
            Change::Insert { relation, new } => {
                match self.action(relation) {
                    Action::Skip => return Ok(()),
                    Action::Reconcile => return self.write_one(change).await,
                    Action::Apply => {}
                }
                let target = self.resolve(relation).await?;
                check_width(&target, new)?;
                let (detector, remote) = self.conflicts.as_mut().expect("two-way mode");
                let remote = *remote;
                let collisions = detector
                    .unique_collisions(self.client, &target, new, None)
                    .await?;
                if collisions.locals.is_empty() {
                    return self.write_one(change).await;
                }
                let kind = if collisions.indexes > 1 {
                    Kind::MultipleUniqueConflicts
                } else {
                    Kind::InsertExists
                };
                if detector.refuses(&target.display, &collisions) {
                    return Err(detector.refusal(&target, kind, new));
                }
                let locals = collisions.locals;
                let resolution = detector.resolve(kind, &target.display, remote, &locals);
                detector
                    .record(self.client, &target, kind, resolution, remote, new, &locals)
                    .await?;
                if resolution == Resolution::ApplyRemote {
                    detector.delete(self.client, &target, &locals).await?;
                    self.write_one(change).await?;
                }
                Ok(())
            }
            Change::Update { relation, old, new } => {
                if self.action(relation) != Action::Apply {
                    return self.write_one(change).await;
                }
                let target = self.resolve(relation).await?;
                check_width(&target, new)?;
                let (found_by, source) =
                    locate(&target, relation, Operation::Update, old.as_ref(), new)?;
                let Locate::Key(key) = found_by else {
                    // REPLICA IDENTITY FULL: the one-way rule (no row found: stop).
                    return self.write_one(change).await;
                };
                let (detector, remote) = self.conflicts.as_mut().expect("two-way mode");
                let remote = *remote;
                let mut rows = detector.lookup(self.client, &target, &key, source).await?;
                let Some(row) = rows.pop() else {
                    let kind = Kind::UpdateMissing;
                    let resolution = detector.resolve(kind, &target.display, remote, &[]);
                    detector
                        .record(self.client, &target, kind, resolution, remote, new, &[])
                        .await?;
                    if resolution == Resolution::ApplyRemote {
                        // The winning update is the whole row: insert it.
                        if let Some(c) = target
                            .columns
                            .iter()
                            .find(|c| matches!(new.columns[c.blue], ColumnValue::UnchangedToast))
                        {
                            return Err(ApplyError::ToastInInsert {
                                table: target.display.clone(),
                                column: c.name.clone(),
                            });
                        }
                        self.insert(&target, &[Cow::Borrowed(new)]).await?;
                    }
                    return Ok(());
                };
                let collisions = detector
                    .unique_collisions(self.client, &target, new, Some(&row))
                    .await?;
                let (kind, locals) = if !collisions.locals.is_empty() {
                    let kind = if collisions.indexes > 1 {
                        Kind::MultipleUniqueConflicts
                    } else {
                        Kind::UpdateExists
                    };
                    if detector.refuses(&target.display, &collisions) {
                        return Err(detector.refusal(&target, kind, new));
                    }
                    (kind, collisions.locals)
                } else if detector.origin_differs(&row) {
                    (Kind::UpdateOriginDiffers, vec![row])
                } else {
                    return self.write_one(change).await;
                };
                let resolution = detector.resolve(kind, &target.display, remote, &locals);
                detector
                    .record(self.client, &target, kind, resolution, remote, new, &locals)
                    .await?;
                if resolution == Resolution::ApplyRemote {
                    if kind != Kind::UpdateOriginDiffers {
                        detector.delete(self.client, &target, &locals).await?;
                    }
                    self.write_one(change).await?;
                }
                Ok(())
            }
            Change::Delete { relation, old } => {
                if self.action(relation) != Action::Apply {
                    return self.write_one(change).await;
                }
                let target = self.resolve(relation).await?;
                let (found_by, source) =
                    locate(&target, relation, Operation::Delete, Some(old), old.tuple())?;
                let (Locate::Key(key), OldTuple::Key(_)) = (found_by, old) else {
                    return self.write_one(change).await;
                };
                let (detector, remote) = self.conflicts.as_mut().expect("two-way mode");
                let remote = *remote;
                let rows: Vec<Local> = detector.lookup(self.client, &target, &key, source).await?;
                let kind = match rows.first() {
                    None => Kind::DeleteMissing,
                    Some(row) if detector.origin_differs(row) => Kind::DeleteOriginDiffers,
                    Some(_) => return self.write_one(change).await,
                };
                let resolution = detector.resolve(kind, &target.display, remote, &rows);
                detector
                    .record(
                        self.client,
                        &target,
                        kind,
                        resolution,
                        remote,
                        old.tuple(),
                        &rows,
                    )
                    .await?;
                if resolution == Resolution::ApplyRemote && kind == Kind::DeleteOriginDiffers {
                    self.write_one(change).await?;
                }
                Ok(())
            }
            Change::Truncate { .. } => self.write_one(change).await,
        }
    }
}
