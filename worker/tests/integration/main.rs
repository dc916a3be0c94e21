//! The worker's integration tests, one test binary for the crate (each extra
//! binary links every dependency again: slower CI, more disk). Every test
//! starts its own redis-server and real HTTP destinations.

mod common;

mod cluster;
mod consumers;
mod delivery;
mod end_to_end;
mod process;
