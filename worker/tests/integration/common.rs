//! Test support of the worker's integration tests: routes files, events
//! written exactly as ingest writes them, an in-process worker, and
//! wait-until helpers over Redis state.

use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

use fanout_api::{RedisConnection, RedisTarget, RouteKeys, entry::StoredEvent, keys::group_name};
use fanout_worker::{Config, config::Settings, run_with_listener};
use redis::Value;
use tokio::{sync::oneshot, task::JoinHandle};

/// Namespace and name of the test route.
pub const NAMESPACE: &str = "test";
/// Name of the test route.
pub const ROUTE: &str = "orders";

/// The test route's keys.
pub fn keys() -> RouteKeys {
    RouteKeys::new(NAMESPACE, ROUTE)
}

/// One destination of the test route, as YAML (a flow mapping): timeout
/// 5s unless `extra` sets one, short backoffs (50ms to 200ms), 5 attempts.
pub fn destination(name: &str, url: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    let timeout = if extra.contains("timeout:") {
        ""
    } else {
        ", timeout: 5s"
    };
    format!(
        "{{name: {name}, url: \"{url}\"{timeout}, retry: {{maxAttempts: 5, initialBackoff: 50ms, maxBackoff: 200ms, maxAge: 1h}}{extra}}}"
    )
}

/// A routes file holding the test route with these destinations.
pub fn routes_yaml(destinations: &[String]) -> String {
    format!(
        "apiVersion: fanout.dev/v1alpha1\nkind: FanoutRoute\nmetadata: {{name: {ROUTE}, namespace: {NAMESPACE}}}\nspec:\n  ingest: {{path: /orders}}\n  destinations: [{}]\n",
        destinations.join(", ")
    )
}

/// A worker configuration for `routes` against the server at `redis_url`.
pub fn config(
    redis_url: &str,
    routes: &str,
    secrets_dir: &Path,
    consumer: &str,
    visibility: Duration,
) -> Config {
    config_on(single(redis_url), routes, secrets_dir, consumer, visibility)
}

/// A worker configuration for `routes` against `redis`.
pub fn config_on(
    redis: RedisTarget,
    routes: &str,
    secrets_dir: &Path,
    consumer: &str,
    visibility: Duration,
) -> Config {
    let routes = fanout_api::parse_routes(routes).expect("valid test routes");
    Config::build(
        &routes,
        secrets_dir,
        Settings {
            redis,
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            consumer: consumer.to_owned(),
            visibility_timeout: visibility,
            shutdown_grace: Duration::from_secs(5),
        },
    )
    .expect("valid test config")
}

/// A worker running in this process.
pub struct Worker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), fanout_worker::RunError>>,
    /// Address of its metrics server.
    pub metrics_addr: std::net::SocketAddr,
}

impl Worker {
    /// Starts a worker.
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_with_listener(config, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
            metrics_addr,
        }
    }

    /// Asks it to stop and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("worker task")
            .expect("worker run");
    }
}

/// A Redis connection for the test itself.
pub async fn redis(url: &str) -> RedisConnection {
    single(url).connect(Duration::from_secs(2), Duration::from_secs(5))
}

/// The single redis-server at `url`.
pub fn single(url: &str) -> RedisTarget {
    RedisTarget::new(url, false).unwrap()
}

/// Adds an event to the route's stream exactly as ingest does; returns
/// its id.
pub async fn add_event(conn: &mut RedisConnection, content_type: &str, body: &[u8]) -> String {
    let event = StoredEvent {
        content_type: content_type.to_owned(),
        body: body.to_vec(),
    };
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys().events()).arg("*");
    for (name, value) in event.fields() {
        cmd.arg(name).arg(value);
    }
    cmd.query_async(conn).await.unwrap()
}

/// Adds `n` JSON events `{"n": i}`; returns their bodies.
pub async fn add_events(conn: &mut RedisConnection, n: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for i in 0..n {
        let body = format!("{{\"n\": {i}}}").into_bytes();
        add_event(conn, "application/json", &body).await;
        bodies.push(body);
    }
    bodies
}

/// XLEN of a key.
pub async fn xlen(conn: &mut RedisConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

/// HLEN of a key.
pub async fn hlen(conn: &mut RedisConnection, key: &str) -> u64 {
    redis::cmd("HLEN").arg(key).query_async(conn).await.unwrap()
}

/// Pending entries of a destination's group.
pub async fn pending(conn: &mut RedisConnection, destination: &str) -> u64 {
    let reply: Value = redis::cmd("XPENDING")
        .arg(keys().events())
        .arg(group_name(destination))
        .query_async(conn)
        .await
        .unwrap();
    match reply {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// The entries of a stream as (id, field map).
pub async fn entries(
    conn: &mut RedisConnection,
    key: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let map = entry
                .map
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    };
                    (k.clone(), text)
                })
                .collect();
            (entry.id, map)
        })
        .collect()
}

/// Polls `check` every 50ms until it is true, or panics with `what` after
/// `limit`.
pub async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every destination is done: the stream is trimmed to empty,
/// nothing is pending and no retry state is left.
pub async fn wait_all_done(conn: &mut RedisConnection, destinations: &[&str], limit: Duration) {
    let keys = keys();
    let start = Instant::now();
    loop {
        // Groups are only looked at once the stream is empty: before the
        // worker created them (it trims nothing until they all exist)
        // XPENDING would fail.
        let mut done = xlen(conn, &keys.events()).await == 0;
        if done {
            for dest in destinations {
                done &= pending(conn, dest).await == 0;
                done &= hlen(conn, &keys.retries(dest)).await == 0;
            }
        }
        if done {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "stream not trimmed to empty within {limit:?}: XLEN {}",
            xlen(conn, &keys.events()).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
