//! The `FanoutRoute` custom resource (`fanout.dev/v1alpha1`).
//!
//! This type is the one source of the CRD schema: `fanout-operator crd`
//! prints it, the data plane reads routes files of it, and the doc comments
//! below are what `kubectl explain fanoutroute.spec` shows, so they are
//! written for users.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{duration::HumanDuration, secrets::SecretKeyRef};

/// A route: one ingest endpoint whose events are each delivered to every
/// destination in the list, each destination retried independently.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fanout.dev",
    version = "v1alpha1",
    kind = "FanoutRoute",
    plural = "fanoutroutes",
    shortname = "fr",
    doc = "A FanoutRoute: an HTTP ingest endpoint whose events are stored once in Redis and delivered to every destination, each destination retried independently. The fanout operator runs its ingest and worker pods.",
    namespaced,
    status = "FanoutRouteStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.ingest.path"}"#,
    printcolumn = r#"{"name":"Destinations","type":"string","jsonPath":".spec.destinations[*].name"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FanoutRouteSpec {
    /// The HTTP endpoint that accepts events for this route.
    pub ingest: IngestSpec,
    /// The delivery workers that read this route's events and send them to
    /// the destinations.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// Where every event is delivered. Each destination has its own consumer
    /// group, retries and dead letters: a slow or failing destination never
    /// holds back another.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(d, self.exists_one(e, e.name == d.name))",
        "message": "destination names must be unique within the route"
    }]))]
    pub destinations: Vec<Destination>,
}

/// The ingest endpoint of a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// URL path prefix of the route, for example `/orders`: events are POSTed
    /// to `<path>/v1/event` (one JSON value) and `<path>/v1/batch` (a JSON
    /// array, stored all or nothing).
    #[schemars(length(min = 2, max = 200))]
    pub path: String,
    /// Number of ingest pods. Default 1.
    #[serde(default = "defaults::replicas")]
    #[schemars(range(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1",
        "message": "replicas must be at least 1"
    }]))]
    pub replicas: i32,
    /// Require `Authorization: Bearer <token>` on every request, with the
    /// accepted tokens read from a Secret (one token per line). Without it
    /// the endpoint is open to whoever can reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<IngestAuth>,
    /// Largest request body accepted, in bytes; larger requests are answered
    /// 413. Default 1 MiB.
    #[serde(default = "defaults::max_body_bytes")]
    #[schemars(range(min = 1, max = 67_108_864))]
    pub max_body_bytes: u64,
    /// Largest number of events in one batch; larger batches are answered
    /// 413. Default 1000.
    #[serde(default = "defaults::max_batch_events")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_batch_events: u32,
    /// How long a request's `Idempotency-Key` (and, with `eventIdField`, an
    /// event's own id) is remembered: a retried POST with the same key within
    /// this time gets the first answer instead of storing the events again.
    /// Default 24h.
    #[serde(default = "defaults::idempotency_ttl")]
    pub idempotency_ttl: HumanDuration,
    /// Optional: de-duplicate events by their own id, the top-level member
    /// of this name in the event's JSON object, for example `id`. An event
    /// whose member is a non-empty string or a number is stored the first
    /// time its id is seen on this route; the id is remembered for
    /// `idempotencyTtl`, and an event with the same id within that time is
    /// not stored again but answered with the first event's entry id. Ids
    /// are per route and shared by the `event` and `batch` endpoints; the
    /// string `"42"` and the number `42` are one id; an id over 200 bytes is
    /// refused (400). Events without the member are stored as usual. A
    /// request with an `Idempotency-Key` header is governed by the header
    /// alone. Default: unset, no de-duplication by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub event_id_field: Option<String>,
    /// Optional: create an Ingress that routes this path to the ingest
    /// Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

/// Bearer-token authentication of the ingest endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestAuth {
    /// The Secret holding the accepted tokens, one per line (key `tokens`
    /// unless `key` is given).
    pub secret_ref: SecretKeyRef,
}

/// The Ingress the operator creates for the route's ingest endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass to use, for example `nginx`. Default: the cluster's
    /// default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,
    /// Host name the Ingress answers for, for example `events.example.com`.
    /// Default: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub host: Option<String>,
    /// Name of a TLS Secret for `host`; when set the Ingress terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_secret_name: Option<String>,
}

/// The delivery workers of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSpec {
    /// Number of worker pods. Each reads every destination's consumer group;
    /// entries are shared between them. Default 1.
    #[serde(default = "defaults::replicas")]
    #[schemars(range(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1",
        "message": "replicas must be at least 1"
    }]))]
    pub replicas: i32,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            replicas: defaults::replicas(),
        }
    }
}

/// One destination of a route.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Name of the destination, unique within the route: a DNS label
    /// (lowercase letters, digits and `-`). It names the destination's
    /// consumer group and dead-letter stream, so renaming it starts a new
    /// group.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The http or https URL each event is POSTed to.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^https?://')",
        "message": "url must be an http:// or https:// URL"
    }]))]
    pub url: String,
    /// How long one delivery attempt may take before it counts as failed and
    /// is retried. Default 10s.
    #[serde(default = "defaults::timeout")]
    pub timeout: HumanDuration,
    /// Most deliveries to this destination in flight at once, per worker pod.
    /// Default 64.
    #[serde(default = "defaults::max_in_flight")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_in_flight: u32,
    /// When and how long failed deliveries are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Optional: sign every delivery with the Standard Webhooks scheme
    /// (`webhook-signature: v1,<base64 HMAC-SHA256>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// Extra HTTP headers sent with every delivery. `content-type`, `host`,
    /// `content-length` and `webhook-*` are set by fanout and cannot be
    /// overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Retry policy of a destination. 408, 429, 5xx answers, timeouts and
/// connection errors are retried with capped exponential backoff and jitter
/// (honouring `Retry-After`); other 4xx answers are permanent. An event whose
/// retries are exhausted goes to the destination's dead-letter stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Most delivery attempts per event, the first included. Default 12.
    #[serde(default = "defaults::max_attempts")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: u32,
    /// Wait before the first retry; each further retry waits twice as long,
    /// up to `maxBackoff`. Default 1s.
    #[serde(default = "defaults::initial_backoff")]
    pub initial_backoff: HumanDuration,
    /// Longest wait between two attempts. Default 10m.
    #[serde(default = "defaults::max_backoff")]
    pub max_backoff: HumanDuration,
    /// Oldest an event may be (since it was accepted) and still be retried.
    /// Default 24h.
    #[serde(default = "defaults::max_age")]
    pub max_age: HumanDuration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            initial_backoff: defaults::initial_backoff(),
            max_backoff: defaults::max_backoff(),
            max_age: defaults::max_age(),
        }
    }
}

/// Standard Webhooks signing of a destination's deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signing {
    /// The Secret key holding the signing secret (key `secret` unless `key`
    /// is given), in the Standard Webhooks form `whsec_<base64>`; a value
    /// without the prefix is used as raw bytes.
    pub secret_ref: SecretKeyRef,
}

/// What the operator observed of a route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FanoutRouteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `IngestAvailable`, `WorkersAvailable` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// In-cluster URL prefix of the ingest endpoint.
    #[serde(default, rename = "ingestURL", skip_serializing_if = "Option::is_none")]
    pub ingest_url: Option<String>,
    /// Events not yet delivered, summed over the destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i64>,
    /// Backlog and dead letters of each destination, read from Redis.
    #[serde(default)]
    pub destinations: Vec<DestinationStatus>,
}

/// Delivery progress of one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// The destination's name.
    pub name: String,
    /// Events not yet delivered to this destination (unread plus in
    /// progress).
    pub backlog: i64,
    /// Entries in the destination's dead-letter stream.
    pub dead_letters: i64,
}

/// Default values of the optional fields, in one place.
pub mod defaults {
    use crate::duration::HumanDuration;

    /// Pods of ingest or workers.
    pub fn replicas() -> i32 {
        1
    }
    /// 1 MiB.
    pub fn max_body_bytes() -> u64 {
        1024 * 1024
    }
    /// Events in one batch.
    pub fn max_batch_events() -> u32 {
        1000
    }
    /// How long an `Idempotency-Key` is remembered.
    pub fn idempotency_ttl() -> HumanDuration {
        HumanDuration::from_secs(24 * 3600)
    }
    /// Delivery attempt timeout.
    pub fn timeout() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    /// Concurrent deliveries per destination and worker.
    pub fn max_in_flight() -> u32 {
        64
    }
    /// Attempts per event.
    pub fn max_attempts() -> u32 {
        12
    }
    /// First retry wait.
    pub fn initial_backoff() -> HumanDuration {
        HumanDuration::from_secs(1)
    }
    /// Longest retry wait.
    pub fn max_backoff() -> HumanDuration {
        HumanDuration::from_secs(600)
    }
    /// Oldest retried event.
    pub fn max_age() -> HumanDuration {
        HumanDuration::from_secs(24 * 3600)
    }
}

impl FanoutRoute {
    /// The route's namespace; a route without one is in `default`.
    pub fn namespace_or_default(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The route's name (empty when the object has none, which validation
    /// refuses).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}
