//! The `blueshift` command.

fn main() {}
