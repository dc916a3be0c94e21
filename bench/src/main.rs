//! `fanout-bench`: see `bench/run.sh`.
fn main() {}
