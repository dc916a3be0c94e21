//! The worker on a real 3-node Redis Cluster, with two routes held by
//! different nodes: blocking reads, acknowledgements, retries, dead letters
//! and trimming each go to the node that holds the route.

use std::time::Duration;

use fanout_api::{RedisConnection, RedisTarget, RouteKeys, entry::StoredEvent};
use fanout_testkit::{Answer, RedisCluster, Sink};

use crate::common::{Worker, config_on, destination, wait_for, xlen};

async fn add_events(conn: &mut RedisConnection, keys: &RouteKeys, n: usize) {
    for i in 0..n {
        let event = StoredEvent {
            content_type: "application/json".into(),
            body: format!("{{\"n\": {i}}}").into_bytes(),
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(keys.events()).arg("*");
        for (name, value) in event.fields() {
            cmd.arg(name).arg(value);
        }
        let _: String = cmd.query_async(conn).await.unwrap();
    }
}

fn route_yaml(name: &str, destinations: &[String]) -> String {
    format!(
        "apiVersion: fanout.dev/v1alpha1\nkind: FanoutRoute\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  ingest: {{path: /{name}}}\n  destinations: [{}]\n",
        destinations.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_on_different_nodes_are_delivered_dead_lettered_and_trimmed() {
    let cluster = RedisCluster::start(3);
    let other =
        cluster.name_on_another_node("orders", |name| RouteKeys::new("test", name).events());
    let (orders, second) = (
        RouteKeys::new("test", "orders"),
        RouteKeys::new("test", &other),
    );

    let ok = Sink::ok().await;
    let refusing = Sink::scripted(|_, _| Answer::status(400)).await;
    let flaky =
        Sink::scripted(|_, earlier| Answer::status(if earlier == 0 { 503 } else { 200 })).await;
    let routes = [
        route_yaml(
            "orders",
            &[
                destination("ok", &ok.url("/ok"), ""),
                destination("refusing", &refusing.url("/refusing"), ""),
            ],
        ),
        route_yaml(&other, &[destination("flaky", &flaky.url("/flaky"), "")]),
    ]
    .join("---\n");

    let target = RedisTarget::new(&cluster.url(), true).unwrap();
    let mut conn = target.connect(Duration::from_secs(2), Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(config_on(
        target.clone(),
        &routes,
        dir.path(),
        "w1",
        Duration::from_secs(30),
    ))
    .await;
    add_events(&mut conn, &orders, 20).await;
    add_events(&mut conn, &second, 20).await;

    let limit = Duration::from_secs(30);
    wait_for(limit, "both streams trimmed to empty", || {
        let mut conn = conn.clone();
        let (orders, second) = (orders.events(), second.events());
        async move { xlen(&mut conn, &orders).await == 0 && xlen(&mut conn, &second).await == 0 }
    })
    .await;
    assert_eq!(ok.received().len(), 20);
    assert_eq!(refusing.received().len(), 20, "one attempt each");
    assert_eq!(flaky.received().len(), 40, "a retry each");
    assert_eq!(xlen(&mut conn, &orders.dead_letters("refusing")).await, 20);
    assert_eq!(xlen(&mut conn, &orders.dead_letters("ok")).await, 0);
    assert_eq!(xlen(&mut conn, &second.dead_letters("flaky")).await, 0);
    worker.stop().await;
}
