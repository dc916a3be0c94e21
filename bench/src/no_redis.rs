//! The reference server: an axum handler that does the request work of
//! `fanout-ingest` (route lookup, content type, body limit, JSON validation
//! of an event or of every element of a batch, an id per event, a JSON 202
//! answer) and no Redis work at all.
//!
//! Ingest throughput divided by this server's, under the same load on the
//! same machine, is the share of the HTTP ceiling that ingest keeps while
//! storing every event durably; issue 2 asks for at least one half.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use fanout_api::{FanoutRoute, RoutesFileError, load_routes_file};
use serde_json::{json, value::RawValue};
use tokio::net::TcpListener;

/// Why the reference server could not run.
#[derive(Debug, thiserror::Error)]
pub enum NoRedisError {
    /// The routes file is unusable.
    #[error(transparent)]
    Routes(#[from] RoutesFileError),
    /// The listener could not be bound or served.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The limits of one route, as ingest applies them.
#[derive(Clone, Copy)]
struct Limits {
    max_body_bytes: usize,
    max_batch_events: usize,
}

#[derive(Default)]
struct Ids {
    seq: AtomicU64,
}

impl Ids {
    /// An id shaped like a stream entry id (`<ms>-<seq>`).
    fn next(&self) -> String {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        format!("{ms}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }
}

/// Serves the routes of `routes_file` on `addr` until `shutdown` resolves.
pub async fn run(
    routes_file: &Path,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NoRedisError> {
    let routes = load_routes_file(routes_file)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| NoRedisError::Listen { addr, source })?;
    axum::serve(listener, router(&routes))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| NoRedisError::Listen { addr, source })
}

fn router(routes: &[FanoutRoute]) -> Router {
    let ids = Arc::new(Ids::default());
    let mut app = Router::new().route("/healthz", get(|| async { "ok" }));
    let mut largest_body = 0;
    for (index, route) in routes.iter().enumerate() {
        let limits = Limits {
            max_body_bytes: route.spec.ingest.max_body_bytes as usize,
            max_batch_events: route.spec.ingest.max_batch_events as usize,
        };
        largest_body = largest_body.max(limits.max_body_bytes);
        let prefix = route.spec.ingest.path.trim_end_matches('/');
        let mut prefixes = vec![prefix.to_owned()];
        if index == 0 && routes.len() == 1 {
            prefixes.push(String::new());
        }
        for prefix in prefixes {
            let (event_ids, batch_ids) = (ids.clone(), ids.clone());
            app = app
                .route(
                    &format!("{prefix}/v1/event"),
                    post(move |headers: HeaderMap, body: Bytes| async move {
                        event(&event_ids, limits, &headers, &body)
                    }),
                )
                .route(
                    &format!("{prefix}/v1/batch"),
                    post(move |headers: HeaderMap, body: Bytes| async move {
                        batch(&batch_ids, limits, &headers, &body)
                    }),
                );
        }
    }
    // The body limit is checked per route in the handlers; this only lets
    // bodies up to the largest route limit through to them.
    app.layer(DefaultBodyLimit::max(largest_body + 1))
}

fn event(ids: &Ids, limits: Limits, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(Refusal(status, code, message)) = check_request(limits, headers, body) {
        return refuse(status, code, message);
    }
    if serde_json::from_slice::<&RawValue>(body).is_err() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "body is not JSON",
        );
    }
    (StatusCode::ACCEPTED, Json(json!({ "id": ids.next() }))).into_response()
}

fn batch(ids: &Ids, limits: Limits, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Err(Refusal(status, code, message)) = check_request(limits, headers, body) {
        return refuse(status, code, message);
    }
    let Ok(events) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "body is not a JSON array",
        );
    };
    if events.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "empty_batch", "batch is empty");
    }
    if events.len() > limits.max_batch_events {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            "too many events",
        );
    }
    let ids: Vec<String> = events.iter().map(|_| ids.next()).collect();
    (StatusCode::ACCEPTED, Json(json!({ "ids": ids }))).into_response()
}

/// A refused request: status, error code and message.
struct Refusal(StatusCode, &'static str, &'static str);

fn check_request(limits: Limits, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "content type must be application/json",
        ));
    }
    if body.len() > limits.max_body_bytes {
        return Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "body over the route's limit",
        ));
    }
    Ok(())
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::{LoadSpec, run as load};

    const ROUTES: &str = "apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: r}
spec:
  ingest: {path: /r, maxBatchEvents: 2}
  destinations: [{name: a, url: 'http://127.0.0.1:1/'}]
";

    async fn post(addr: SocketAddr, path: &str, body: &'static str) -> Result<u64, String> {
        let report = load(&LoadSpec {
            addr,
            path: path.into(),
            body: Bytes::from_static(body.as_bytes()),
            events_per_request: 1,
            connections: 1,
            duration: Duration::from_secs(5),
            max_requests: 1,
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(report.ok)
    }

    #[tokio::test]
    async fn accepts_what_ingest_accepts_and_refuses_the_rest() {
        let routes = fanout_api::parse_routes(ROUTES).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(&routes)).await });

        assert_eq!(post(addr, "/r/v1/event", r#"{"a":1}"#).await, Ok(1));
        assert_eq!(post(addr, "/v1/batch", "[1,2]").await, Ok(1));
        for (path, body, status) in [
            ("/r/v1/event", "{", "400"),
            ("/r/v1/batch", "[]", "400"),
            ("/r/v1/batch", "[1,2,3]", "413"),
            ("/other/v1/event", "{}", "404"),
        ] {
            let error = post(addr, path, body).await.unwrap_err();
            assert!(error.contains(status), "{path} {body}: {error}");
        }
    }
}
