//! The ingest service on a real 3-node Redis Cluster, with two routes held
//! by different nodes: concurrent single events (coalesced across routes,
//! written one pipeline per route), batches in MULTI/EXEC, idempotency
//! scripts, a refused batch that writes nothing on any node, and the memory
//! watermark of one primary refusing events.

use std::time::Duration;

use fanout_api::{RedisTarget, RouteKeys};
use fanout_testkit::{RedisCluster, RedisServer};
use redis::AsyncCommands;

use crate::common::*;

/// A route in namespace `shop` whose keys are on another node than
/// `shop/orders`'s, and the routes file of both.
fn two_routes_on_two_nodes(cluster: &RedisCluster) -> (String, String) {
    let other =
        cluster.name_on_another_node("orders", |name| RouteKeys::new("shop", name).events());
    let routes = format!(
        r#"
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {{name: orders, namespace: shop}}
spec:
  ingest: {{path: /orders, idempotencyTtl: 1h}}
  destinations: [{{name: a, url: "http://127.0.0.1:9/a"}}]
---
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {{name: {other}, namespace: shop}}
spec:
  ingest: {{path: /other}}
  destinations: [{{name: a, url: "http://127.0.0.1:9/a"}}]
"#
    );
    (other, routes)
}

/// XLEN of `route`'s stream asked of the node that holds it, directly.
async fn xlen_on_its_node(cluster: &RedisCluster, route: &str) -> usize {
    let stream = RouteKeys::new("shop", route).events();
    let node = cluster.node_of(&stream);
    let mut conn = RedisTarget::new(&node.url(), false)
        .unwrap()
        .connect(Duration::from_secs(2), Duration::from_secs(5));
    conn.xlen(&stream).await.unwrap()
}

#[tokio::test]
async fn routes_on_different_nodes_store_singles_batches_and_idempotent_events() {
    let cluster = RedisCluster::start(3);
    let (other, routes) = two_routes_on_two_nodes(&cluster);
    let harness = Harness::start_on(TestRedis::Cluster(cluster), &routes, |_| {}).await;
    harness.wait_ready(200).await;

    // Concurrent singles to both routes: the writer coalesces them into one
    // round and must split it per route (a cluster refuses cross-slot
    // pipelines).
    let posts = (0..200).map(|i| {
        let path = if i % 2 == 0 {
            "/orders/v1/event"
        } else {
            "/other/v1/event"
        };
        harness.post(path, format!("{{\"n\":{i}}}"))
    });
    for answer in futures::future::join_all(posts).await {
        assert_eq!(answer.status, 202, "{answer:?}");
    }

    let batch: Vec<String> = (0..100).map(|i| format!("{{\"b\":{i}}}")).collect();
    for path in ["/orders/v1/batch", "/other/v1/batch"] {
        let answer = harness.post(path, format!("[{}]", batch.join(","))).await;
        assert_eq!(answer.status, 202, "{path}: {answer:?}");
        assert_eq!(answer.json["ids"].as_array().unwrap().len(), 100);
    }

    let key = [("idempotency-key", "k-1")];
    let first = harness
        .post_with("/orders/v1/event", "application/json", &key, "7")
        .await;
    let again = harness
        .post_with("/orders/v1/event", "application/json", &key, "7")
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(again.json, first.json);

    // A batch with one malformed element writes nothing, on any node.
    let before = harness.dump().await;
    let refused = harness.post("/other/v1/batch", "[1, {\"a\":}]").await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(harness.dump().await, before);

    let Some(TestRedis::Cluster(cluster)) = &harness.redis else {
        unreachable!()
    };
    assert_eq!(xlen_on_its_node(cluster, "orders").await, 100 + 100 + 1);
    assert_eq!(xlen_on_its_node(cluster, &other).await, 100 + 100);
}

#[tokio::test]
async fn one_primary_over_the_watermark_refuses_events_for_every_route() {
    let cluster = RedisCluster::start(3);
    let (other, routes) = two_routes_on_two_nodes(&cluster);
    // The node that holds neither route: fullness anywhere counts.
    let holders = [
        cluster
            .node_of(&RouteKeys::new("shop", "orders").events())
            .port(),
        cluster
            .node_of(&RouteKeys::new("shop", &other).events())
            .port(),
    ];
    let spare = cluster
        .nodes()
        .iter()
        .find(|node| !holders.contains(&node.port()))
        .map(RedisServer::url);
    let harness = Harness::start_on(TestRedis::Cluster(cluster), &routes, |config| {
        config.redis_check_interval = Duration::from_millis(100);
    })
    .await;
    harness.wait_ready(200).await;
    assert_eq!(harness.post("/other/v1/event", "1").await.status, 202);

    // Route holders may be the same node as "spare" only when there are
    // fewer nodes than routes + 1; with 3 nodes and 2 routes on different
    // nodes there is always a third.
    let spare = spare.expect("a node holding neither route");
    let mut node = RedisTarget::new(&spare, false)
        .unwrap()
        .connect(Duration::from_secs(2), Duration::from_secs(5));
    let info = node.info_of_primaries("memory").await.unwrap().remove(0);
    let used: u64 = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:"))
        .unwrap()
        .parse()
        .unwrap();
    let config_set = |max: u64| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("maxmemory").arg(max);
        cmd
    };
    let () = config_set(used * 100 / 95)
        .query_async(&mut node)
        .await
        .unwrap();
    harness.wait_ready(503).await;

    let before = harness.dump().await;
    for path in ["/orders/v1/event", "/other/v1/batch"] {
        let body = if path.ends_with("batch") { "[1]" } else { "1" };
        let answer = harness.post(path, body).await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert_eq!(answer.error(), "redis_overloaded");
    }
    assert_eq!(harness.dump().await, before);

    let () = config_set(0).query_async(&mut node).await.unwrap();
    harness.wait_ready(200).await;
    assert_eq!(harness.post("/orders/v1/event", "2").await.status, 202);
}
