//! End to end through both services, as a user sees fanout: events POSTed
//! to a real `fanout-ingest` (in process, real HTTP, real redis-server) are
//! delivered by a real `fanout-worker` to every destination, a flaky
//! destination included, and Redis holds nothing afterwards. This is the
//! promise "every 202 is eventually delivered or dead-lettered" checked
//! across the seam between the two crates, on a single redis-server, on a
//! 3-node Redis Cluster, and over TLS with a private CA.

use std::{collections::HashSet, time::Duration};

use crate::common::{Worker, config_on, destination, keys, routes_yaml, wait_all_done, xlen};
use fanout_api::RedisTarget;
use fanout_testkit::{Answer, RedisCluster, RedisServer, Sink};
use tokio::{net::TcpListener, sync::oneshot};

/// Starts `fanout-ingest` on a free port; returns its base URL and a stop
/// handle.
async fn start_ingest(routes: &str, redis: RedisTarget) -> (String, oneshot::Sender<()>) {
    let routes = fanout_api::parse_routes(routes).expect("valid routes");
    let config = fanout_ingest::config::Config::new(routes, redis);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(fanout_ingest::run(config, listener, async move {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// The JSON body of a 202 answer.
async fn accepted(answer: reqwest::Response) -> serde_json::Value {
    assert_eq!(answer.status(), 202);
    serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_reaches_every_destination_once_on_a_single_server() {
    let server = RedisServer::start();
    every_accepted_event_reaches_every_destination_once(
        RedisTarget::new(&server.url(), false).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_reaches_every_destination_once_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    every_accepted_event_reaches_every_destination_once(
        RedisTarget::new(&cluster.url(), true).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_reaches_every_destination_once_over_tls() {
    let server = RedisServer::start_tls();
    every_accepted_event_reaches_every_destination_once(
        RedisTarget::with_ca_file(&server.tls_url(), false, server.tls_ca()).unwrap(),
    )
    .await;
}

async fn every_accepted_event_reaches_every_destination_once(redis: RedisTarget) {
    let steady = Sink::ok().await;
    // The flaky destination fails the first attempt of every event.
    let flaky = Sink::scripted(|_, earlier| {
        if earlier == 0 {
            Answer::status(503)
        } else {
            Answer::status(200)
        }
    })
    .await;
    let routes = routes_yaml(&[
        destination("steady", &steady.url("/steady"), ""),
        destination("flaky", &flaky.url("/flaky"), ""),
    ]);
    let (ingest, stop_ingest) = start_ingest(&routes, redis.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(config_on(
        redis.clone(),
        &routes,
        dir.path(),
        "e2e",
        Duration::from_secs(30),
    ))
    .await;

    let client = http_client();
    let post = |path: &str, body: String, idempotency_key: Option<&str>| {
        let mut request = client
            .post(format!("{ingest}/orders/v1/{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        async move { accepted(request.send().await.unwrap()).await }
    };
    let mut sent = HashSet::new();
    let mut accepted_ids = HashSet::new();
    // Single events...
    for i in 0..20 {
        let body = format!("{{\"single\": {i}}}");
        let json = post("event", body.clone(), None).await;
        accepted_ids.insert(json["id"].as_str().unwrap().to_owned());
        sent.insert(body);
    }
    // ...a batch...
    let batch: Vec<String> = (0..50).map(|i| format!("{{\"batch\": {i}}}")).collect();
    let json = post("batch", format!("[{}]", batch.join(",")), None).await;
    for id in json["ids"].as_array().unwrap() {
        accepted_ids.insert(id.as_str().unwrap().to_owned());
    }
    sent.extend(batch);
    // ...and a retried POST with an Idempotency-Key, which stores nothing new.
    for _ in 0..2 {
        let json = post("event", "{\"retried\": true}".into(), Some("order-77")).await;
        accepted_ids.insert(json["id"].as_str().unwrap().to_owned());
    }
    sent.insert("{\"retried\": true}".to_owned());
    assert_eq!(
        accepted_ids.len(),
        sent.len(),
        "one entry per distinct event"
    );

    let mut conn = redis.connect(Duration::from_secs(2), Duration::from_secs(5));
    wait_all_done(&mut conn, &["steady", "flaky"], Duration::from_secs(30)).await;

    // Every event reached each destination, byte for byte, with a webhook-id
    // naming the route, the destination and one of the accepted entries.
    for (sink, name, attempts_per_event) in [(&steady, "steady", 1), (&flaky, "flaky", 2)] {
        let received = sink.received();
        let bodies: HashSet<String> = received
            .iter()
            .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
            .collect();
        assert_eq!(bodies, sent, "{name} received every event");
        assert_eq!(
            received.len(),
            sent.len() * attempts_per_event,
            "{name}: attempts per event"
        );
        let delivered_ids: HashSet<String> = received
            .iter()
            .map(|r| {
                let id = r.header("webhook-id").expect("webhook-id header");
                let prefix = format!("test/orders/{name}/");
                id.strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{id} does not start with {prefix}"))
                    .to_owned()
            })
            .collect();
        assert_eq!(delivered_ids, accepted_ids, "{name}: the accepted entries");
    }
    // Nothing dead-lettered, nothing left behind.
    for name in ["steady", "flaky"] {
        assert_eq!(xlen(&mut conn, &keys().dead_letters(name)).await, 0);
    }
    assert_eq!(xlen(&mut conn, &keys().events()).await, 0);

    worker.stop().await;
    let _ = stop_ingest.send(());
}
