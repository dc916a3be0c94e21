//! `fanout-ingest`: the HTTP API that accepts events and stores each once in
//! its route's Redis stream, where the delivery workers read it.
//!
//! [`run`] serves the routes of a [`Config`] on a listener until a shutdown
//! future completes, then stops accepting connections, finishes the
//! requests in flight and flushes the event writer. The binary only parses
//! flags, starts logging and calls it; tests call it in-process on port 0.

pub mod auth;
pub mod config;
pub mod content_type;
pub mod event_id;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod store;

use std::{future::Future, sync::Arc, time::Duration};

use fanout_api::{RouteKeys, routes_file::qualified_name, secrets::DEFAULT_AUTH_KEY};
use tokio::{net::TcpListener, task::JoinSet};

pub use config::{Args, Config, ConfigError, LogFormat};

use crate::{
    auth::{AuthError, TokenFile},
    health::Health,
    metrics::Metrics,
    server::{App, Endpoint},
    store::Store,
};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A route's auth tokens cannot be read.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Serving HTTP failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// How long shutdown waits for queued events to be written.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Serves `config`'s routes on `listener` until `shutdown` completes, then
/// drains in-flight requests and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let metrics = Arc::new(Metrics::default());
    let mut background = JoinSet::new();

    let mut endpoints = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let name = qualified_name(route);
        let ingest = &route.spec.ingest;
        let auth = match &ingest.auth {
            Some(auth) => {
                let path = auth.secret_ref.path(&config.secrets_dir, DEFAULT_AUTH_KEY);
                let tokens = Arc::new(TokenFile::load(&name, &path)?);
                background.spawn(tokens.clone().watch(config.token_reload_interval));
                Some(tokens)
            }
            None => None,
        };
        let keys = RouteKeys::new(route.namespace_or_default(), route.name());
        endpoints.push(Arc::new(Endpoint {
            path: ingest.path.clone(),
            stream: keys.events().into(),
            keys,
            max_body_bytes: ingest.max_body_bytes,
            max_batch_events: ingest.max_batch_events,
            idempotency_ttl: ingest.idempotency_ttl.get(),
            event_id_field: ingest.event_id_field.as_deref().map(Into::into),
            auth,
            metrics: metrics.route(&name),
        }));
    }

    // Lazy: the service starts (not ready) while Redis is still down.
    let conn = config.redis.connect(
        config.redis_timeout.min(Duration::from_secs(2)),
        config.redis_timeout,
    );

    let health = Arc::new(Health::new(config.redis_check_interval * 3));
    background.spawn(health.clone().watch(
        conn.clone(),
        config.redis_check_interval,
        config.redis_memory_watermark,
        metrics.clone(),
    ));
    let (store, writer) = Store::start(conn, metrics.clone());
    let app = Arc::new(App {
        store,
        health,
        metrics,
    });
    let router = server::router(app, &endpoints);

    let served: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{} {}/v1/{{event,batch}}", e.metrics.route, e.path))
        .collect();
    tracing::info!(
        listen = %listener.local_addr().map_err(RunError::Serve)?,
        redis = %config.redis.redacted_url(),
        redis_cluster = config.redis.is_cluster(),
        routes = %served.join(", "),
        unprefixed = endpoints.len() == 1,
        "fanout-ingest serving"
    );

    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(RunError::Serve)?;
    tracing::info!("stopped accepting requests; flushing queued events");
    writer.finish(DRAIN_LIMIT).await;
    background.abort_all();
    tracing::info!("fanout-ingest stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}
