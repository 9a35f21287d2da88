//! The blueshift engine: the pipeline (stream → decode → assemble → schedule → apply → progress)
//! and the stages that run on it. Today: `tail` (the decoded stream as JSON lines), versioned
//! schema migrations (`migrate`) and the blue/green schema comparison (`schema`).

pub mod assembler;
pub mod backfill;
pub mod cleanup;
pub mod conflicts;
pub mod control;
pub mod cutover;
pub mod metrics;
pub mod migrate;
pub mod privileges;
pub mod schema;
pub mod sequence;
pub mod slot_guard;
pub mod status;
pub mod sync;
pub mod tail;
pub mod verify;

pub use blueshift_applier::{client, failpoint};
