//! The contract shared by every fanout component.
//!
//! The operator, the ingest service and the workers all depend on this crate
//! and on nothing of each other: the `FanoutRoute` resource ([`route`]), the
//! rules a route must satisfy ([`validation`]), how a routes file is read in
//! local mode ([`routes_file`]), durations as users write them
//! ([`duration`]), where Redis keeps a route's data ([`keys`]), how one
//! event is laid out in the stream ([`entry`]), how to reach Redis, a single
//! server or a cluster ([`connection`]), and where mounted secrets are found
//! ([`secrets`]).

pub mod connection;
pub mod duration;
pub mod entry;
pub mod keys;
pub mod route;
pub mod routes_file;
pub mod secrets;
pub mod validation;

pub use connection::{RedisConnection, RedisTarget};
pub use duration::HumanDuration;
pub use keys::RouteKeys;
pub use route::{
    Destination, FanoutRoute, FanoutRouteSpec, FanoutRouteStatus, IngestSpec, RetryPolicy,
};
pub use routes_file::{RoutesFileError, load_routes_file, parse_routes};
pub use validation::{FieldError, validate_route};
