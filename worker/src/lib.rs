//! fanout-worker: delivers the events of fanout routes to their
//! destinations, at least once, with retries, dead letters and reclaim.
//!
//! Each destination of each route has a consumer group on the route's
//! stream and its own [`runner`]; the [`trim`] task of each route removes
//! entries every destination is done with. The pure rules live in
//! [`classify`] (what an answer means) and [`backoff`] (when to try again);
//! [`delivery`] makes one HTTP attempt, [`signing`] signs it, [`store`] holds
//! every Redis command. `docs/delivery.md` describes the semantics.

pub mod acker;
pub mod backoff;
pub mod classify;
pub mod config;
pub mod consumers;
pub mod delivery;
pub mod metrics;
pub mod runner;
pub mod server;
pub mod signing;
pub mod store;
pub mod trim;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

pub use config::{Args, Config, ConfigError};

use crate::{
    delivery::{Deliverer, DeliveryError},
    metrics::Metrics,
    runner::{Lifecycle, READ_BLOCK, Runner},
    store::DestinationStore,
};

/// How long a connection attempt to Redis may take.
const REDIS_CONNECT: Duration = Duration::from_secs(5);

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A destination's HTTP client could not be built.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Runs the worker until `shutdown` completes, then drains: reading stops,
/// in-flight attempts get up to `shutdown_grace` to finish, and whatever is
/// left stays pending in Redis for the next run or another worker.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.metrics_listen,
            source,
        })?;
    run_with_listener(config, listener, shutdown).await
}

/// [`run`] with the metrics server on an already bound listener.
pub async fn run_with_listener(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    delivery::install_crypto_provider();
    let shared_conn = config.redis.connect(REDIS_CONNECT, Duration::from_secs(5));
    let metrics = Arc::new(Metrics::new());
    let life = Lifecycle {
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        done: CancellationToken::new(),
        tasks: TaskTracker::new(),
    };

    let mut runners = Vec::new();
    for route in &config.routes {
        let label = format!("{}/{}", route.namespace, route.name);
        for dest in &route.destinations {
            let deliverer = Deliverer::new(route, dest)?;
            let store = DestinationStore::new(
                shared_conn.clone(),
                &route.keys,
                &dest.name,
                &config.consumer,
            );
            // A blocking XREADGROUP stalls its connection: one per runner
            // (on a cluster, its own connection to each node), with a
            // response timeout longer than the block.
            let reader = config
                .redis
                .connect(REDIS_CONNECT, READ_BLOCK + Duration::from_secs(5));
            runners.push(Runner::new(
                label.clone(),
                dest.clone(),
                store,
                deliverer,
                reader,
                metrics.clone(),
                life.clone(),
            ));
        }
    }

    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        shared_conn.clone(),
        life.done.clone(),
    ));
    let trimmers: Vec<_> = config
        .routes
        .iter()
        .map(|route| {
            tokio::spawn(trim::trim_loop(
                route.clone(),
                shared_conn.clone(),
                metrics.clone(),
                life.done.clone(),
            ))
        })
        .collect();
    let cleaners: Vec<_> = config
        .routes
        .iter()
        .map(|route| {
            tokio::spawn(consumers::cleanup_loop(
                route.clone(),
                shared_conn.clone(),
                life.done.clone(),
            ))
        })
        .collect();
    let readers: Vec<_> = runners
        .into_iter()
        .map(|runner| tokio::spawn(runner.run()))
        .collect();
    info!(consumer = %config.consumer, routes = config.routes.len(), "worker started");

    shutdown.await;
    info!("shutting down: reading stops, in-flight deliveries finish");
    life.stop.cancel();
    for reader in readers {
        let _ = reader.await;
    }
    life.tasks.close();
    if tokio::time::timeout(config.shutdown_grace, life.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            grace = ?config.shutdown_grace,
            "deliveries still in flight after the shutdown grace; they stay pending and will be retried"
        );
        life.abort.cancel();
        life.tasks.wait().await;
    }
    life.done.cancel();
    for background in trimmers.into_iter().chain(cleaners) {
        let _ = background.await;
    }
    let _ = server.await;
    info!("worker stopped");
    Ok(())
}
