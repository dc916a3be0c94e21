//! Shared test harness: a private redis-server (or Redis Cluster), the
//! ingest service running in-process on port 0, an HTTP client, and a full
//! dump of Redis (every node) to prove that refused requests wrote nothing.

use std::{path::PathBuf, time::Duration};

use fanout_api::{RedisConnection, RedisTarget};
use fanout_ingest::{Config, RunError};
use fanout_testkit::{RedisCluster, RedisServer};
use redis::aio::ConnectionLike;
use tokio::{sync::oneshot, task::JoinHandle};

/// Two routes: `shop/orders` (open) and `shop/secure` (bearer tokens).
pub const TWO_ROUTES: &str = r#"
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: orders, namespace: shop}
spec:
  ingest: {path: /orders, maxBodyBytes: 65536, maxBatchEvents: 1000, idempotencyTtl: 1h}
  destinations: [{name: a, url: "http://127.0.0.1:9/a"}]
---
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: secure, namespace: shop}
spec:
  ingest:
    path: /secure
    auth: {secretRef: {name: secure-tokens}}
  destinations: [{name: a, url: "http://127.0.0.1:9/a"}]
"#;

/// One open route, `default/solo`.
pub const ONE_ROUTE: &str = r#"
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: solo}
spec:
  ingest: {path: /solo}
  destinations: [{name: a, url: "http://127.0.0.1:9/a"}]
"#;

pub const ORDERS_STREAM: &str = "fanout:{shop/orders}:events";
pub const SOLO_STREAM: &str = "fanout:{default/solo}:events";

/// An answer: status, headers and the JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_default()
    }
}

/// The Redis a harness runs against.
pub enum TestRedis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    pub fn target(&self) -> RedisTarget {
        match self {
            Self::Single(server) => RedisTarget::new(&server.url(), false).unwrap(),
            Self::Cluster(cluster) => RedisTarget::new(&cluster.url(), true).unwrap(),
        }
    }

    /// Every node's URL (one for a single server).
    pub fn node_urls(&self) -> Vec<String> {
        match self {
            Self::Single(server) => vec![server.url()],
            Self::Cluster(cluster) => cluster.nodes().iter().map(RedisServer::url).collect(),
        }
    }
}

pub struct Harness {
    pub redis: Option<TestRedis>,
    pub base: String,
    pub client: reqwest::Client,
    pub secrets: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

/// Writes the `secure` route's token file.
pub fn write_tokens(secrets: &std::path::Path, text: &str) -> PathBuf {
    let dir = secrets.join("secure-tokens");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens");
    std::fs::write(&path, text).unwrap();
    path
}

impl Harness {
    /// Starts redis and the service on `routes`, with the `secure` route's
    /// token `secret-token`.
    pub async fn start(routes: &str) -> Self {
        Self::start_with(routes, |_| {}).await
    }

    pub async fn start_with(routes: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(TestRedis::Single(RedisServer::start()), routes, tweak).await
    }

    /// Starts the service on `routes` against `redis`.
    pub async fn start_on(redis: TestRedis, routes: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let secrets = tempfile::tempdir().unwrap();
        write_tokens(secrets.path(), "# test tokens\nsecret-token\n");
        let mut config = Config::new(fanout_api::parse_routes(routes).unwrap(), redis.target());
        config.secrets_dir = secrets.path().to_owned();
        config.redis_check_interval = Duration::from_millis(100);
        config.token_reload_interval = Duration::from_millis(50);
        config.redis_timeout = Duration::from_secs(2);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(fanout_ingest::run(config, listener, async {
            let _ = stop.await;
        }));
        // reqwest is built without a crypto provider (the workspace has one
        // TLS stack); plain http needs none, but the builder insists.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        Self {
            redis: Some(redis),
            base,
            client,
            secrets,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` with `content_type` and extra headers.
    pub async fn post_with(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut request = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.post_with(path, "application/json", &[], body).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        answer(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    /// GETs `path` and returns the body as text (for `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// A new connection to the test's Redis (cluster-aware on a cluster).
    pub async fn redis(&self) -> RedisConnection {
        let redis = self.redis.as_ref().expect("redis running");
        redis
            .target()
            .connect(Duration::from_secs(2), Duration::from_secs(5))
    }

    /// Every key of every node with its full content (streams entry by
    /// entry, with ids).
    pub async fn dump(&self) -> Vec<String> {
        let redis = self.redis.as_ref().expect("redis running");
        let mut dump = Vec::new();
        for (node, url) in redis.node_urls().into_iter().enumerate() {
            let mut conn = redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            for line in dump_node(&mut conn).await {
                dump.push(format!("node {node}: {line}"));
            }
        }
        dump
    }

    /// Waits until `/readyz` answers `status`.
    pub async fn wait_ready(&self, status: u16) {
        wait_until(Duration::from_secs(10), || async {
            self.get("/readyz").await.status == status
        })
        .await;
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(&mut self) -> Result<(), RunError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("ingest stops within 15s")
            .unwrap()
    }

    /// Triggers shutdown without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    pub fn take_task(&mut self) -> JoinHandle<Result<(), RunError>> {
        self.task.take().expect("running")
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

/// A stream's entries: id and (field, value) pairs as raw bytes.
pub async fn stream(
    conn: &mut impl ConnectionLike,
    key: &str,
) -> Vec<(String, Vec<(String, Vec<u8>)>)> {
    let value: redis::Value = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    let entries: Vec<(String, Vec<Vec<u8>>)> =
        redis::FromRedisValue::from_redis_value(value).unwrap();
    entries
        .into_iter()
        .map(|(id, flat)| {
            let pairs = flat
                .chunks(2)
                .map(|pair| (String::from_utf8(pair[0].clone()).unwrap(), pair[1].clone()))
                .collect();
            (id, pairs)
        })
        .collect()
}

pub async fn xlen(conn: &mut impl ConnectionLike, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

/// Polls `check` until it holds, or panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One node's keys with their full content, and its key count.
async fn dump_node(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap();
    keys.sort();
    let mut dump = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        let content = match kind.as_str() {
            "stream" => format!("{:?}", stream(conn, &key).await),
            "string" => {
                let value: Vec<u8> = redis::cmd("GET").arg(&key).query_async(conn).await.unwrap();
                format!("{value:?}")
            }
            other => other.to_owned(),
        };
        dump.push(format!("{key} {kind} {content}"));
    }
    let size: usize = redis::cmd("DBSIZE").query_async(conn).await.unwrap();
    dump.push(format!("dbsize {size}"));
    dump
}
