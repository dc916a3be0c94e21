//! The fanout benchmark: how fast the data plane ingests and delivers on
//! loopback, read as ratios against what the machine allows without fanout
//! (a no-Redis axum handler, `redis-benchmark` XADD). `bench/run.sh` builds
//! the release binaries and runs it; it is not a test.
//!
//! [`scenario`] is the run, [`load`] the HTTP load generator, [`sink`] the
//! in-process destination, [`no_redis`] the reference server, [`procs`] the
//! child processes, [`redis_tools`] redis-server and redis-benchmark,
//! [`routes`] the generated routes file and [`report`] what is printed.

pub mod load;
pub mod no_redis;
pub mod procs;
pub mod redis_tools;
pub mod report;
pub mod routes;
pub mod scenario;
pub mod sink;
