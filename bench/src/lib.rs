//! Benchmarks of blueshift; the decode microbenchmark is `benches/decode.rs`.
