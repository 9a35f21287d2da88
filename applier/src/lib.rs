//! Applies decoded changes to green. One applier = one connection to green (sync issue).
//!
//! [`transaction`] defines what is applied: whole source transactions, in blue's commit order,
//! built by the engine's transaction assembler.

pub mod transaction;

pub use transaction::{Change, Changes, Origin, SpilledChanges, Transaction};
