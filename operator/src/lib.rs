//! fanout-operator: reconciles `FanoutRoute` resources into the data plane
//! (a ConfigMap, ingest and worker Deployments, a Service, an optional
//! Ingress) and reports each route's health and backlog in its status.
//!
//! Reconcile is split into steps, each in its own module: validation (in
//! `fanout-api`), the pure [`desired::build`], [`apply`], [`status`]; the
//! [`reconcile`] module sequences them and [`controller`] runs them in a
//! kube-runtime controller behind a [`lease`] leader election.

pub mod apply;
pub mod config;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod stats;
pub mod status;

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::OperatorConfig;

/// How long one Redis stats read may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// No Kubernetes client could be built (no kubeconfig, no in-cluster
    /// environment).
    #[error("cannot connect to Kubernetes (no kubeconfig found and not running in a cluster?)")]
    Client(#[source] kube::Error),
    /// The startup check failed.
    #[error(transparent)]
    Startup(#[from] controller::StartupError),
    /// The health endpoint could not listen.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs the operator until `shutdown` is cancelled: health endpoint, startup
/// check, then leader election and the controller while leading.
pub async fn run(config: OperatorConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let health = http::Health::default();
    let server = tokio::spawn(http::serve(listener, health.clone(), shutdown.clone()));

    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    controller::check_crd(client.clone(), config.namespace.as_deref()).await?;
    health.ready.store(true, Ordering::Release);
    info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        "FanoutRoute CRD found"
    );

    info!(
        redis = %config.redis.redacted_url(),
        redis_cluster = config.redis.is_cluster(),
        redis_ca_file = config
            .redis_ca_file
            .as_deref()
            .map_or_else(|| "(none)".into(), |p| p.display().to_string()),
        "reading backlogs from Redis"
    );
    let stats = stats::RedisStats::new(&config.redis, STATS_TIMEOUT);
    let ctx = Arc::new(reconcile::Context::new(
        client.clone(),
        config.data_plane.clone(),
        stats,
        health.metrics.clone(),
        config.refresh_interval,
        Some(config.lease.identity.clone()),
    ));
    let elector = lease::LeaseElector::new(client, config.lease.clone());
    let namespace = config.namespace.clone();
    elector
        .run(&health.metrics, shutdown.clone(), |stop| {
            controller::run(ctx.clone(), namespace.clone(), stop)
        })
        .await;
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
