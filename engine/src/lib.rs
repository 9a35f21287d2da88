//! The blueshift engine: the pipeline (stream → decode → assemble → schedule → apply → progress)
//! and the stages that run on it. Today: `tail` (the decoded stream as JSON lines), versioned
//! schema migrations (`migrate`) and the blue/green schema comparison (`schema`).

pub mod assembler;
pub mod client;
pub mod migrate;
pub mod schema;
pub mod tail;
