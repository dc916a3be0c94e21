//! The worker's small HTTP server: `/metrics` (Prometheus text),
//! `/healthz` (the process runs) and `/readyz` (Redis answers PING; on a
//! cluster, every node).

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use fanout_api::RedisConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    redis: RedisConnection,
}

/// Serves the endpoints on `listener` until `done`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    redis: RedisConnection,
    done: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AppState { metrics, redis });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut conn = state.redis.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n"),
    }
}
