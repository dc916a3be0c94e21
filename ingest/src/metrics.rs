//! Prometheus metrics of the ingest service, served on `/metrics`.
//!
//! - `fanout_ingest_events_accepted_total{route}`: events stored (a replayed
//!   idempotent answer stores nothing and is not counted);
//! - `fanout_ingest_events_deduplicated_total{route}`: events not stored
//!   because their own id (`ingest.eventIdField`) was seen before, answered
//!   with the first event's entry id;
//! - `fanout_ingest_requests_refused_total{route,reason}`: refused requests
//!   by error code (`route` is empty for unknown paths);
//! - `fanout_ingest_request_duration_seconds{route,endpoint}`: time from
//!   request to answer, refusals included;
//! - `fanout_ingest_redis_pipeline_events`: events per Redis round trip of
//!   the single-event writer, which shows how much requests are coalesced;
//! - `fanout_ingest_redis_ready`: 1 while Redis answers and is under its
//!   memory watermark.
//!
//! The hot path never looks labels up: each route's counters and histograms
//! are resolved once at startup ([`RouteMetrics`]).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: String,
    endpoint: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 100µs .. ~3.3s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

/// Every metric, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    accepted: Family<RouteLabels, Counter>,
    deduplicated: Family<RouteLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    duration: HistogramFamily<DurationLabels>,
    /// Events per pipeline of the single-event writer.
    pub pipeline_events: Histogram,
    /// 1 when Redis is ready for writes.
    pub redis_ready: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let accepted = Family::<RouteLabels, Counter>::default();
        registry.register(
            "fanout_ingest_events_accepted",
            "Events stored in a route's stream",
            accepted.clone(),
        );
        let deduplicated = Family::<RouteLabels, Counter>::default();
        registry.register(
            "fanout_ingest_events_deduplicated",
            "Events not stored because their own id was seen before on the route",
            deduplicated.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "fanout_ingest_requests_refused",
            "Requests refused, by error code; they wrote nothing",
            refused.clone(),
        );
        let duration: HistogramFamily<DurationLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "fanout_ingest_request_duration_seconds",
            "Time from request to answer",
            duration.clone(),
        );
        let pipeline_events = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 11),
        );
        registry.register(
            "fanout_ingest_redis_pipeline_events",
            "Single events written per Redis round trip",
            pipeline_events.clone(),
        );
        let redis_ready = Gauge::default();
        registry.register(
            "fanout_ingest_redis_ready",
            "1 while Redis answers and is under its memory watermark",
            redis_ready.clone(),
        );
        Self {
            registry,
            accepted,
            deduplicated,
            refused,
            duration,
            pipeline_events,
            redis_ready,
        }
    }
}

impl Metrics {
    /// The metrics of one route, resolved once.
    pub fn route(&self, route: &str) -> RouteMetrics {
        // One statement per lookup: a family's guard lives until the end of
        // its statement, and a second lookup that inserts would deadlock.
        let accepted = self
            .accepted
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .clone();
        let deduplicated = self
            .deduplicated
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .clone();
        let duration = |endpoint| {
            self.duration
                .get_or_create(&DurationLabels {
                    route: route.to_owned(),
                    endpoint,
                })
                .clone()
        };
        let event_duration = duration("event");
        let batch_duration = duration("batch");
        RouteMetrics {
            route: route.to_owned(),
            accepted,
            deduplicated,
            event_duration,
            batch_duration,
        }
    }

    /// Counts a refused request.
    pub fn refused(&self, route: &str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels {
                route: route.to_owned(),
                reason,
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// One route's metrics.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// `<namespace>/<name>`, the `route` label.
    pub route: String,
    /// Events stored.
    pub accepted: Counter,
    /// Events answered from a remembered event id, not stored again.
    pub deduplicated: Counter,
    /// Duration of `/v1/event` requests.
    pub event_duration: Histogram,
    /// Duration of `/v1/batch` requests.
    pub batch_duration: Histogram,
}
