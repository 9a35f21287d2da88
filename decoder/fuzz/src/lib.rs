//! What the fuzz targets in `fuzz_targets/` share: the counting global allocator that bounds
//! every run's memory ([`alloc`]), the framing of multi-frame inputs ([`input`]) and the
//! `pgoutput` target's checks and model ([`pgoutput`]).
//!
//! Linking this crate installs the allocator; a target then runs its body through
//! [`alloc::bounded`].

pub mod alloc;
pub mod input;
pub mod pgoutput;
