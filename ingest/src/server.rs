//! The HTTP surface: routing, and the checks a request passes before its
//! events are stored.
//!
//! Each route is served at `{path}/v1/event` and `{path}/v1/batch`, and at
//! `/v1/event` and `/v1/batch` too when the service has exactly one route.
//! A request is checked in this order, and the first failure answers:
//! auth (401), content type (415), `Idempotency-Key` (400), declared
//! `Content-Length` (413, before reading), Redis memory watermark (503),
//! body size while reading (413), JSON shape (400), batch size (413), event
//! ids too long (400, only for a route with `eventIdField` and a request
//! without `Idempotency-Key`). Only then is anything written, so a refused
//! request never changes Redis.
//!
//! Which write a request takes: with an `Idempotency-Key`, the header's
//! script, whatever the events hold; else, when the route has an
//! `eventIdField` and at least one event carries an id, the event-id script;
//! else the coalesced single-event writer or one MULTI/EXEC batch.

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use bytes::Bytes;
use fanout_api::{RouteKeys, entry::JSON_CONTENT_TYPE};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::value::RawValue;

use crate::{
    auth::TokenFile,
    content_type,
    event_id::{self, EventIdError},
    health::Health,
    idempotency,
    metrics::{Metrics, RouteMetrics},
    problem::Refusal,
    store::{EventIdWrite, IdempotentWrite, Store, StoreError},
};

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// Where events are written.
    pub store: Store,
    /// Redis reachability and memory.
    pub health: Arc<Health>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// One route's ingest endpoint, with everything resolved at startup.
#[derive(Debug)]
pub struct Endpoint {
    /// The route's `spec.ingest.path`.
    pub path: String,
    /// The route's keys.
    pub keys: RouteKeys,
    /// The route's stream key.
    pub stream: Arc<str>,
    /// `spec.ingest.maxBodyBytes`.
    pub max_body_bytes: u64,
    /// `spec.ingest.maxBatchEvents`.
    pub max_batch_events: u32,
    /// `spec.ingest.idempotencyTtl`.
    pub idempotency_ttl: std::time::Duration,
    /// `spec.ingest.eventIdField`: the member events are de-duplicated by.
    pub event_id_field: Option<Box<str>>,
    /// Accepted tokens, when the route requires auth.
    pub auth: Option<Arc<TokenFile>>,
    /// The route's metrics.
    pub metrics: RouteMetrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    Batch,
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable => Refusal::RedisUnavailable,
            StoreError::Overloaded => Refusal::RedisOverloaded,
        }
    }
}

/// The service's routes.
pub fn router(app: Arc<App>, endpoints: &[Arc<Endpoint>]) -> Router {
    let mut router = Router::new();
    let unprefixed = endpoints.len() == 1;
    for endpoint in endpoints {
        for (suffix, kind) in [("/v1/event", Kind::Event), ("/v1/batch", Kind::Batch)] {
            let method_router = ingest_route(app.clone(), endpoint.clone(), kind);
            router = router.route(&format!("{}{suffix}", endpoint.path), method_router.clone());
            if unprefixed {
                router = router.route(suffix, method_router);
            }
        }
    }
    let metrics_app = app.clone();
    let ready_app = app.clone();
    let not_found_app = app;
    router
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) })
                .fallback(method_not_allowed("GET")),
        )
        .route(
            "/readyz",
            get(move || async move { readiness(&ready_app.health) })
                .fallback(method_not_allowed("GET")),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics_app.metrics.encode(),
                )
            })
            .fallback(method_not_allowed("GET")),
        )
        .fallback(move || async move {
            not_found_app.metrics.refused("", Refusal::NotFound.code());
            Refusal::NotFound
        })
}

fn method_not_allowed(allow: &'static str) -> MethodRouter {
    axum::routing::any(move || async move { Refusal::MethodNotAllowed(allow) })
}

fn ingest_route(app: Arc<App>, endpoint: Arc<Endpoint>, kind: Kind) -> MethodRouter {
    let refused_app = app.clone();
    let refused_route = endpoint.metrics.route.clone();
    post(move |request: Request| {
        let (app, endpoint) = (app.clone(), endpoint.clone());
        async move { ingest(&app, &endpoint, kind, request).await }
    })
    .fallback(move || async move {
        refused_app
            .metrics
            .refused(&refused_route, Refusal::MethodNotAllowed("POST").code());
        Refusal::MethodNotAllowed("POST")
    })
}

fn readiness(health: &Health) -> Response {
    if health.ready() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let reason = if health.overloaded() {
            "redis memory over the watermark"
        } else {
            "redis not reachable"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not ready", "reason": reason})),
        )
            .into_response()
    }
}

async fn ingest(app: &App, endpoint: &Endpoint, kind: Kind, request: Request) -> Response {
    let started = Instant::now();
    let response = match accept(app, endpoint, kind, request).await {
        Ok(answer) => (
            StatusCode::ACCEPTED,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            answer,
        )
            .into_response(),
        Err(refusal) => {
            app.metrics.refused(&endpoint.metrics.route, refusal.code());
            refusal.into_response()
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    match kind {
        Kind::Event => endpoint.metrics.event_duration.observe(elapsed),
        Kind::Batch => endpoint.metrics.batch_duration.observe(elapsed),
    }
    response
}

async fn accept(
    app: &App,
    endpoint: &Endpoint,
    kind: Kind,
    request: Request,
) -> Result<String, Refusal> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if let Some(tokens) = &endpoint.auth
        && !tokens.accepts(headers.get(header::AUTHORIZATION))
    {
        return Err(Refusal::Unauthorized);
    }
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(value) if content_type::is_json(value.as_bytes()) => value.clone(),
        _ => return Err(Refusal::UnsupportedMediaType),
    };
    let idempotency_key = match headers.get(idempotency::HEADER) {
        None => None,
        Some(value) if idempotency::is_valid_key(value.as_bytes()) => {
            // Printable ASCII, so always text.
            Some(value.to_str().map_err(|_| Refusal::InvalidIdempotencyKey)?)
        }
        Some(_) => return Err(Refusal::InvalidIdempotencyKey),
    };
    let limit = endpoint.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(Refusal::BodyTooLarge { limit });
    }
    if app.health.overloaded() {
        return Err(Refusal::RedisOverloaded);
    }
    let body = read_body(body, limit).await?;

    match (kind, idempotency_key) {
        (Kind::Event, None) => {
            check_event(&body)?;
            if let Some(field) = endpoint.event_id_field.as_deref()
                && let Some(id) =
                    event_id::event_id(&body, field).map_err(invalid_event_id(None))?
            {
                let ids = add_with_event_ids(
                    app,
                    endpoint,
                    content_type.as_bytes(),
                    &[body],
                    &[Some(id)],
                )
                .await?;
                return Ok(format!(r#"{{"id":"{}"}}"#, ids[0]));
            }
            let id = app
                .store
                .add_event(&endpoint.stream, content_type, body)
                .await?;
            endpoint.metrics.accepted.inc();
            Ok(format!(r#"{{"id":"{id}"}}"#))
        }
        (Kind::Batch, None) => {
            let events = split_batch(&body, endpoint.max_batch_events)?;
            if let Some(field) = endpoint.event_id_field.as_deref() {
                let event_ids = events
                    .iter()
                    .enumerate()
                    .map(|(index, event)| {
                        event_id::event_id(event, field).map_err(invalid_event_id(Some(index)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if event_ids.iter().any(Option::is_some) {
                    let ids = add_with_event_ids(
                        app,
                        endpoint,
                        JSON_CONTENT_TYPE.as_bytes(),
                        &events,
                        &event_ids,
                    )
                    .await?;
                    return Ok(ids_answer(&ids));
                }
            }
            let ids = app.store.add_batch(&endpoint.stream, &events).await?;
            endpoint.metrics.accepted.inc_by(ids.len() as u64);
            Ok(ids_answer(&ids))
        }
        (kind, Some(key)) => {
            let (events, content_type) = match kind {
                Kind::Event => {
                    check_event(&body)?;
                    (vec![body], content_type.as_bytes())
                }
                Kind::Batch => (
                    split_batch(&body, endpoint.max_batch_events)?,
                    JSON_CONTENT_TYPE.as_bytes(),
                ),
            };
            let (stored, answer) = app
                .store
                .add_idempotent(IdempotentWrite {
                    key: &endpoint.keys.idempotency(key),
                    stream: &endpoint.stream,
                    ttl: endpoint.idempotency_ttl,
                    batch: kind == Kind::Batch,
                    content_type,
                    bodies: &events,
                })
                .await?;
            if stored {
                endpoint.metrics.accepted.inc_by(events.len() as u64);
            }
            Ok(answer)
        }
    }
}

/// Stores events de-duplicated by their ids and counts them; returns the
/// entry id answered for each.
async fn add_with_event_ids(
    app: &App,
    endpoint: &Endpoint,
    content_type: &[u8],
    bodies: &[Bytes],
    ids: &[Option<String>],
) -> Result<Vec<String>, Refusal> {
    let (answered, stored) = app
        .store
        .add_with_event_ids(EventIdWrite {
            keys: &endpoint.keys,
            stream: &endpoint.stream,
            ttl: endpoint.idempotency_ttl,
            content_type,
            bodies,
            ids,
        })
        .await?;
    endpoint.metrics.accepted.inc_by(stored as u64);
    endpoint
        .metrics
        .deduplicated
        .inc_by(answered.len().saturating_sub(stored) as u64);
    Ok(answered)
}

/// The refusal of an unusable event id (`index`: its place in a batch).
fn invalid_event_id(index: Option<usize>) -> impl FnOnce(EventIdError) -> Refusal {
    move |error| {
        Refusal::InvalidEventId(match index {
            Some(index) => format!("event {index} of the batch: {error}"),
            None => error.to_string(),
        })
    }
}

/// Reads the body, refusing it once it passes `limit` bytes.
async fn read_body(body: Body, limit: u64) -> Result<Bytes, Refusal> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Refusal::BodyTooLarge { limit })
        }
        Err(error) => {
            tracing::debug!(%error, "could not read a request body");
            Err(Refusal::MalformedJson(
                "the request body could not be read".into(),
            ))
        }
    }
}

/// Checks that the body is exactly one JSON value.
fn check_event(body: &[u8]) -> Result<(), Refusal> {
    serde_json::from_slice::<&RawValue>(body)
        .map(|_| ())
        .map_err(|e| Refusal::MalformedJson(format!("the body is not one JSON value: {e}")))
}

/// Splits a JSON array into its elements, each the exact bytes received.
fn split_batch(body: &Bytes, limit: u32) -> Result<Vec<Bytes>, Refusal> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        Refusal::MalformedJson(format!("the body is not a JSON array of events: {e}"))
    })?;
    if items.is_empty() {
        return Err(Refusal::EmptyBatch);
    }
    if items.len() > limit as usize {
        return Err(Refusal::BatchTooLarge {
            count: items.len(),
            limit,
        });
    }
    Ok(items
        .iter()
        .map(|raw| body.slice_ref(raw.get().as_bytes()))
        .collect())
}

fn ids_answer(ids: &[String]) -> String {
    let mut answer = String::with_capacity(12 + ids.iter().map(|id| id.len() + 3).sum::<usize>());
    answer.push_str(r#"{"ids":["#);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            answer.push(',');
        }
        answer.push('"');
        answer.push_str(id);
        answer.push('"');
    }
    answer.push_str("]}");
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_elements_keep_their_exact_bytes() {
        let body = Bytes::from_static(b" [ {\"a\" : 1}, \"x\\u0041\",\n 2.50e1 ,null] ");
        let events = split_batch(&body, 10).unwrap();
        let texts: Vec<&[u8]> = events.iter().map(|e| &e[..]).collect();
        assert_eq!(
            texts,
            [&b"{\"a\" : 1}"[..], b"\"x\\u0041\"", b"2.50e1", b"null"]
        );
    }

    #[test]
    fn batch_shape_errors() {
        let refuse = |body: &'static [u8], limit| split_batch(&Bytes::from_static(body), limit);
        assert_eq!(refuse(b"[]", 10), Err(Refusal::EmptyBatch));
        assert!(matches!(
            refuse(b"[1,2,3]", 2),
            Err(Refusal::BatchTooLarge { count: 3, limit: 2 })
        ));
        assert!(matches!(
            refuse(b"[1,{]", 10),
            Err(Refusal::MalformedJson(_))
        ));
        assert!(matches!(
            refuse(b"{\"a\":1}", 10),
            Err(Refusal::MalformedJson(_))
        ));
    }

    #[test]
    fn an_event_is_exactly_one_json_value() {
        assert!(check_event(b" {\"a\": [1, 2]}\n").is_ok());
        assert!(check_event(b"\"text\"").is_ok());
        for body in [&b""[..], b"{", b"1 2", b"{}{}", b"\xff"] {
            assert!(check_event(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn ids_answer_is_json() {
        let answer = ids_answer(&["1-0".into(), "1-1".into()]);
        assert_eq!(answer, r#"{"ids":["1-0","1-1"]}"#);
        let value: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(value["ids"][1], "1-1");
    }
}
