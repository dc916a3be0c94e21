//! The operator's integration tests, one test binary for the crate (each
//! extra binary links every dependency again: slower CI, more disk). The
//! Kubernetes API server is mocked (tower-test); Redis is a real server.

mod common;

mod build;
mod cel;
mod controller;
mod health;
mod lease;
mod manifests;
mod reconcile;
mod startup;
mod stats;
mod status;
