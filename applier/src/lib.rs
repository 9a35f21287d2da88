//! Applies decoded changes to green. One [`Applier`] = one connection to green with its own
//! replication origin, applying whole source transactions exactly once (sync issue).
//!
//! - [`transaction`] defines what is applied: whole source transactions, in blue's commit
//!   order, built by the engine's transaction assembler.
//! - [`applier`] runs them on green (`BEGIN`, origin setup, the changes, `COMMIT`), through
//!   statements built per table and shape (`statement`), mapped onto green's catalog by column
//!   name and the declared [`mapping`] (renames, exclusions, accepted lossy casts; `target`),
//!   with every value sent as a parameter exactly as blue printed it (`value`).
//! - [`error`] classifies what goes wrong as transient or definite, says which errors wait for
//!   an operator to fix green ([`ApplyError::is_blocked`]), and names the column a value error
//!   is about (`diagnose`).
//! - [`client`] opens SQL connections from blueshift's connection settings.

pub mod applier;
mod change;
mod chunk;
pub mod client;
pub mod conflict;
mod diagnose;
pub mod error;
pub mod failpoint;
pub mod fence;
mod fold;
pub mod mapping;
mod origin;
pub mod outcome;
mod pipeline;
pub mod rename;
pub mod session;
mod set;
mod statement;
mod target;
pub mod transaction;
mod value;
mod wire;

pub use applier::Applier;
pub use diagnose::Culprit;
pub use error::{class_of_sqlstate, ApplyError, ErrorClass, ForeignKey, Operation};
pub use mapping::{ColumnRef, Mapping, MappingError};
pub use outcome::{ApplyOutcome, RowCounts, Staged};
pub use rename::{Rename, RenameError, Renames};
pub use session::{ApplierOptions, SynchronousCommit};
pub use transaction::{Change, Changes, Origin, SpilledChanges, Transaction};
