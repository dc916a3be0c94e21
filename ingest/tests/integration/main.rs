//! The ingest service's integration tests, one test binary for the crate
//! (each extra binary links every dependency again: slower CI, more disk).
//! Every test starts its own redis-server and serves ingest in-process.

mod common;

mod api;
mod cluster;
mod event_id;
mod idempotency_auth_load;
mod redis_trouble;
mod tls;
