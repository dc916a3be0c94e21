//! Test support shared by the ingest, worker and end-to-end tests and the
//! benchmark: a private `redis-server` per test ([`RedisServer`]) or a
//! private Redis Cluster of several ([`RedisCluster`]), a redis-server
//! that also speaks TLS with a test CA ([`RedisServer::start_tls`]), and a real
//! in-process HTTP destination that records what it receives and answers as
//! the test scripts it ([`Sink`]).
//!
//! Nothing here mocks Redis or HTTP; tests talk to the real things on
//! loopback.

mod redis_cluster;
mod redis_server;
mod sink;
mod tls;

pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisServer, free_port};
pub use sink::{Answer, Received, Sink};
pub use tls::TestCertificates;
