//! Benchmarks of blueshift. The decode microbenchmark is `benches/decode.rs`; [`tpcb`] generates
//! its input.

pub mod tpcb;
