//! Every rule a route must satisfy, checked in one pass.
//!
//! The operator reports the problems as a `Ready=False` condition, the data
//! plane refuses to start with them. Each problem names the field path the
//! user has to change, in `kubectl explain` form (`spec.destinations[1].url`).
//! Rules the CRD schema can express are also in the schema; this function
//! is the complete list.

use std::{collections::BTreeSet, fmt, time::Duration};

use crate::route::{Destination, FanoutRoute, FanoutRouteSpec, IngestSpec};

/// One problem of a route, with the path of the field at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, for example `spec.destinations[0].url`.
    pub path: String,
    /// What is wrong, for a user.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Longest route name: `<name>-ingest` must still be a valid object name.
pub const MAX_ROUTE_NAME_LEN: usize = 56;
/// Most destinations in a route.
pub const MAX_DESTINATIONS: usize = 32;
/// Longest `spec.ingest.eventIdField`, in characters.
pub const MAX_EVENT_ID_FIELD_LEN: usize = 128;
/// Paths the ingest server answers itself, which a route cannot take.
const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/v1"];
/// Headers fanout sets on deliveries, which a destination cannot override.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// Checks the whole route and returns every problem found (empty when the
/// route is valid).
pub fn validate_route(route: &FanoutRoute) -> Vec<FieldError> {
    let mut errors = Errors::default();
    let name = route.name();
    if name.is_empty() {
        errors.push("metadata.name", "is required");
    } else if !is_dns_label(name, MAX_ROUTE_NAME_LEN) {
        errors.push(
            "metadata.name",
            format!("{name:?} must be a DNS label of at most {MAX_ROUTE_NAME_LEN} characters (lowercase letters, digits, '-')"),
        );
    }
    validate_spec(&route.spec, &mut errors);
    errors.0
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn validate_spec(spec: &FanoutRouteSpec, errors: &mut Errors) {
    validate_ingest(&spec.ingest, errors);
    if spec.workers.replicas < 1 {
        errors.push("spec.workers.replicas", "must be at least 1");
    }
    if spec.destinations.is_empty() {
        errors.push("spec.destinations", "must list at least one destination");
    }
    if spec.destinations.len() > MAX_DESTINATIONS {
        errors.push(
            "spec.destinations",
            format!(
                "has {} entries; at most {MAX_DESTINATIONS} are allowed",
                spec.destinations.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (index, destination) in spec.destinations.iter().enumerate() {
        let path = format!("spec.destinations[{index}]");
        if !seen.insert(destination.name.as_str()) {
            errors.push(
                format!("{path}.name"),
                format!(
                    "{:?} is used by another destination; names must be unique",
                    destination.name
                ),
            );
        }
        validate_destination(&path, destination, errors);
    }
}

fn validate_ingest(ingest: &IngestSpec, errors: &mut Errors) {
    let path = &ingest.path;
    if !is_route_path(path) {
        errors.push(
            "spec.ingest.path",
            format!("{path:?} must start with '/', not end with '/', and use only letters, digits and -._~/ (at most 200 characters)"),
        );
    } else if RESERVED_PATHS
        .iter()
        .any(|reserved| path == reserved || path.starts_with(&format!("{reserved}/")))
    {
        errors.push(
            "spec.ingest.path",
            format!(
                "{path:?} collides with a path the ingest server answers itself ({})",
                RESERVED_PATHS.join(", ")
            ),
        );
    }
    if ingest.replicas < 1 {
        errors.push("spec.ingest.replicas", "must be at least 1");
    }
    if ingest.max_body_bytes == 0 {
        errors.push("spec.ingest.maxBodyBytes", "must be at least 1");
    }
    if ingest.max_batch_events == 0 {
        errors.push("spec.ingest.maxBatchEvents", "must be at least 1");
    }
    if ingest.idempotency_ttl.get() < Duration::from_secs(1) {
        errors.push("spec.ingest.idempotencyTtl", "must be at least 1s");
    }
    if let Some(field) = &ingest.event_id_field
        && !(1..=MAX_EVENT_ID_FIELD_LEN).contains(&field.chars().count())
    {
        errors.push(
            "spec.ingest.eventIdField",
            format!(
                "{field:?} must be a JSON member name of 1 to {MAX_EVENT_ID_FIELD_LEN} characters"
            ),
        );
    }
    if let Some(auth) = &ingest.auth
        && auth.secret_ref.name.is_empty()
    {
        errors.push("spec.ingest.auth.secretRef.name", "is required");
    }
    if let Some(ingress) = &ingest.ingress
        && let Some(host) = &ingress.host
        && !is_dns_name(host)
    {
        errors.push(
            "spec.ingest.ingress.host",
            format!("{host:?} must be a DNS name such as events.example.com"),
        );
    }
}

fn validate_destination(path: &str, destination: &Destination, errors: &mut Errors) {
    if !is_dns_label(&destination.name, 63) {
        errors.push(
            format!("{path}.name"),
            format!(
                "{:?} must be a DNS label (lowercase letters, digits, '-'; at most 63 characters)",
                destination.name
            ),
        );
    }
    match url::Url::parse(&destination.url) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") => errors.push(
            format!("{path}.url"),
            format!("{:?} must be an http or https URL", destination.url),
        ),
        Ok(url) if url.host_str().is_none_or(str::is_empty) => errors.push(
            format!("{path}.url"),
            format!("{:?} has no host", destination.url),
        ),
        Ok(_) => {}
        Err(error) => errors.push(
            format!("{path}.url"),
            format!("{:?} is not a valid URL: {error}", destination.url),
        ),
    }
    if destination.timeout.get().is_zero() {
        errors.push(format!("{path}.timeout"), "must be longer than 0s");
    }
    if destination.max_in_flight == 0 {
        errors.push(format!("{path}.maxInFlight"), "must be at least 1");
    }
    let retry = &destination.retry;
    if retry.max_attempts == 0 {
        errors.push(format!("{path}.retry.maxAttempts"), "must be at least 1");
    }
    if retry.initial_backoff.get().is_zero() {
        errors.push(
            format!("{path}.retry.initialBackoff"),
            "must be longer than 0s",
        );
    }
    if retry.max_backoff < retry.initial_backoff {
        errors.push(
            format!("{path}.retry.maxBackoff"),
            format!(
                "{} is shorter than initialBackoff {}",
                retry.max_backoff, retry.initial_backoff
            ),
        );
    }
    if retry.max_age.get().is_zero() {
        errors.push(format!("{path}.retry.maxAge"), "must be longer than 0s");
    }
    if let Some(signing) = &destination.signing
        && signing.secret_ref.name.is_empty()
    {
        errors.push(format!("{path}.signing.secretRef.name"), "is required");
    }
    for (name, value) in &destination.headers {
        let header_path = format!("{path}.headers[{name:?}]");
        let lower = name.to_ascii_lowercase();
        if !is_header_name(name) {
            errors.push(header_path, "is not a valid HTTP header name");
        } else if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
            errors.push(header_path, "is set by fanout and cannot be overridden");
        } else if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            errors.push(header_path, "value contains control characters");
        }
    }
}

/// A DNS label (RFC 1123): lowercase alphanumerics and '-', starting and
/// ending with an alphanumeric.
pub fn is_dns_label(text: &str, max_len: usize) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max_len
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn is_dns_name(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(|label| is_dns_label(label, 63))
}

fn is_route_path(path: &str) -> bool {
    path.len() >= 2
        && path.len() <= 200
        && path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> FanoutRoute {
        serde_yaml::from_str(yaml).unwrap()
    }

    const VALID: &str = r#"
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: orders, namespace: shop}
spec:
  ingest: {path: /orders}
  destinations:
    - {name: analytics, url: "https://analytics.example.com/collect"}
    - {name: billing, url: "http://billing.shop.svc:8080/hook"}
"#;

    fn problems(mutate: impl FnOnce(&mut FanoutRoute)) -> Vec<String> {
        let mut r = route(VALID);
        mutate(&mut r);
        validate_route(&r).iter().map(ToString::to_string).collect()
    }

    fn assert_one(mutate: impl FnOnce(&mut FanoutRoute), path: &str) {
        let found = problems(mutate);
        assert_eq!(
            found.len(),
            1,
            "expected one problem at {path}, got {found:?}"
        );
        assert!(
            found[0].starts_with(&format!("{path}: ")),
            "{found:?} does not name {path}"
        );
    }

    #[test]
    fn the_example_route_is_valid() {
        assert_eq!(problems(|_| {}), Vec::<String>::new());
    }

    #[test]
    fn route_name_rules() {
        assert_one(|r| r.metadata.name = None, "metadata.name");
        assert_one(|r| r.metadata.name = Some("Orders".into()), "metadata.name");
        assert_one(|r| r.metadata.name = Some("a".repeat(57)), "metadata.name");
    }

    #[test]
    fn ingest_rules() {
        for bad in [
            "orders",
            "/",
            "/orders/",
            "/a//b",
            "/a b",
            "/healthz",
            "/v1",
            "/metrics/x",
        ] {
            assert_one(|r| r.spec.ingest.path = bad.into(), "spec.ingest.path");
        }
        assert_one(|r| r.spec.ingest.replicas = 0, "spec.ingest.replicas");
        assert_one(
            |r| r.spec.ingest.max_body_bytes = 0,
            "spec.ingest.maxBodyBytes",
        );
        assert_one(
            |r| r.spec.ingest.max_batch_events = 0,
            "spec.ingest.maxBatchEvents",
        );
        assert_one(
            |r| r.spec.ingest.idempotency_ttl = "500ms".parse().unwrap(),
            "spec.ingest.idempotencyTtl",
        );
        assert_one(
            |r| {
                r.spec.ingest.auth = Some(crate::route::IngestAuth {
                    secret_ref: crate::secrets::SecretKeyRef {
                        name: String::new(),
                        key: None,
                    },
                })
            },
            "spec.ingest.auth.secretRef.name",
        );
        assert_one(
            |r| {
                r.spec.ingest.ingress = Some(crate::route::IngressSpec {
                    class_name: None,
                    host: Some("not a host".into()),
                    tls_secret_name: None,
                })
            },
            "spec.ingest.ingress.host",
        );
        assert_one(|r| r.spec.workers.replicas = 0, "spec.workers.replicas");
    }

    #[test]
    fn event_id_field_rules() {
        assert_eq!(
            problems(|r| r.spec.ingest.event_id_field = Some("id".into())),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(|r| r.spec.ingest.event_id_field = Some("x".repeat(128))),
            Vec::<String>::new()
        );
        assert_one(
            |r| r.spec.ingest.event_id_field = Some(String::new()),
            "spec.ingest.eventIdField",
        );
        assert_one(
            |r| r.spec.ingest.event_id_field = Some("x".repeat(129)),
            "spec.ingest.eventIdField",
        );
    }

    #[test]
    fn destination_list_rules() {
        assert_one(|r| r.spec.destinations.clear(), "spec.destinations");
        assert_one(
            |r| {
                let first = r.spec.destinations[0].clone();
                r.spec.destinations = vec![first; 33];
                for (i, d) in r.spec.destinations.iter_mut().enumerate() {
                    d.name = format!("d{i}");
                }
            },
            "spec.destinations",
        );
        assert_one(
            |r| r.spec.destinations[1].name = "analytics".into(),
            "spec.destinations[1].name",
        );
    }

    #[test]
    fn destination_rules() {
        let d = "spec.destinations[0]";
        assert_one(
            |r| r.spec.destinations[0].name = "Bad_Name".into(),
            &format!("{d}.name"),
        );
        for bad in ["ftp://x.example.com/", "not a url", "http://"] {
            assert_one(
                |r| r.spec.destinations[0].url = bad.into(),
                &format!("{d}.url"),
            );
        }
        assert_one(
            |r| r.spec.destinations[0].timeout = "0s".parse().unwrap(),
            &format!("{d}.timeout"),
        );
        assert_one(
            |r| r.spec.destinations[0].max_in_flight = 0,
            &format!("{d}.maxInFlight"),
        );
        assert_one(
            |r| r.spec.destinations[0].retry.max_attempts = 0,
            &format!("{d}.retry.maxAttempts"),
        );
        assert_one(
            |r| {
                r.spec.destinations[0].retry.initial_backoff = "0s".parse().unwrap();
                r.spec.destinations[0].retry.max_backoff = "0s".parse().unwrap();
            },
            &format!("{d}.retry.initialBackoff"),
        );
        assert_one(
            |r| r.spec.destinations[0].retry.max_backoff = "500ms".parse().unwrap(),
            &format!("{d}.retry.maxBackoff"),
        );
        assert_one(
            |r| r.spec.destinations[0].retry.max_age = "0s".parse().unwrap(),
            &format!("{d}.retry.maxAge"),
        );
        assert_one(
            |r| {
                r.spec.destinations[0].signing = Some(crate::route::Signing {
                    secret_ref: crate::secrets::SecretKeyRef {
                        name: String::new(),
                        key: None,
                    },
                })
            },
            &format!("{d}.signing.secretRef.name"),
        );
        for (name, value) in [
            ("bad header", "x"),
            ("Content-Type", "x"),
            ("Webhook-Id", "x"),
            ("X-Ok", "a\nb"),
        ] {
            assert_one(
                |r| {
                    r.spec.destinations[0]
                        .headers
                        .insert(name.into(), value.into());
                },
                &format!("{d}.headers[{name:?}]"),
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems(|r| {
            r.spec.ingest.path = "nope".into();
            r.spec.destinations[0].url = "ftp://x/".into();
            r.spec.destinations[1].max_in_flight = 0;
        });
        assert_eq!(found.len(), 3, "{found:?}");
    }
}
