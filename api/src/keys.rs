//! Redis key names of a route, defined once for ingest, worker and operator.
//!
//! Every key of a route carries the hash tag `{<namespace>/<route>}`, so the
//! whole route lives in one Redis Cluster slot and MULTI/EXEC and scripts
//! touching several of its keys work on a cluster too.

/// The keys of one route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteKeys {
    /// `fanout:{<namespace>/<route>}`, the prefix of every key.
    prefix: String,
}

impl RouteKeys {
    /// The keys of route `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            prefix: format!("fanout:{{{namespace}/{name}}}"),
        }
    }

    /// The route's stream: every accepted event, stored once.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// The retry state of a destination: a hash from entry id to the attempt
    /// count and the time the next attempt is due (see [`crate::entry::RetryState`]).
    pub fn retries(&self, destination: &str) -> String {
        format!("{}:retry:{destination}", self.prefix)
    }

    /// The dead-letter stream of a destination.
    pub fn dead_letters(&self, destination: &str) -> String {
        format!("{}:dead:{destination}", self.prefix)
    }

    /// The remembered answer to a request with this `Idempotency-Key`.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// The remembered entry id of the event whose own id (the route's
    /// `ingest.eventIdField`) is `id`. Apart from the `Idempotency-Key`
    /// keys, so that no header value can name one.
    pub fn event_id(&self, id: &str) -> String {
        format!("{}:eid:{id}", self.prefix)
    }
}

/// What every destination's consumer group name starts with; groups
/// without it are not fanout's own.
pub const GROUP_PREFIX: &str = "d:";

/// The consumer group of a destination on the route's stream.
pub fn group_name(destination: &str) -> String {
    format!("{GROUP_PREFIX}{destination}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_the_route_hash_tag() {
        let keys = RouteKeys::new("shop", "orders");
        for key in [
            keys.events(),
            keys.retries("a"),
            keys.dead_letters("a"),
            keys.idempotency("k"),
            keys.event_id("e"),
        ] {
            assert!(key.starts_with("fanout:{shop/orders}:"), "{key}");
        }
        assert_eq!(keys.events(), "fanout:{shop/orders}:events");
        assert_eq!(group_name("analytics"), "d:analytics");
        assert_eq!(keys.event_id("42"), "fanout:{shop/orders}:eid:42");
    }
}
