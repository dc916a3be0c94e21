//! The fanout benchmark (not a test: `bench/run.sh` runs it).
