//! The backlog reader against a real redis-server and a real Redis Cluster,
//! with consumer groups set up the way the workers use them (keys from
//! `fanout_api::keys`).

use std::time::Duration;

use fanout_api::{
    RouteKeys,
    connection::{RedisConnection, RedisTarget},
    keys::group_name,
    route::DestinationStatus,
};
use fanout_operator::stats::RedisStats;
use fanout_testkit::{RedisCluster, RedisServer};

fn target(url: &str, cluster: bool) -> RedisTarget {
    RedisTarget::new(url, cluster).unwrap()
}

fn stats_of(target: &RedisTarget) -> RedisStats {
    RedisStats::new(target, Duration::from_secs(2))
}

fn connect(target: &RedisTarget) -> RedisConnection {
    target.connect(Duration::from_secs(2), Duration::from_secs(2))
}

async fn add(con: &mut RedisConnection, key: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let id: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(con)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn create_group(con: &mut RedisConnection, stream: &str, destination: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group_name(destination))
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await
        .unwrap();
}

async fn read_group(
    con: &mut RedisConnection,
    stream: &str,
    destination: &str,
    count: usize,
) -> Vec<String> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group_name(destination))
        .arg("c1")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(con)
        .await
        .unwrap();
    reply.keys[0].ids.iter().map(|e| e.id.clone()).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn expected(name: &str, backlog: i64, dead_letters: i64) -> DestinationStatus {
    DestinationStatus {
        name: name.into(),
        backlog,
        dead_letters,
    }
}

#[tokio::test]
async fn backlog_is_unread_plus_pending_per_group_and_dead_letters_are_counted() {
    let redis = RedisServer::start();
    let redis = target(&redis.url(), false);
    let mut con = connect(&redis);
    let keys = RouteKeys::new("shop", "orders");
    let events = keys.events();
    add(&mut con, &events, 10).await;
    create_group(&mut con, &events, "fast").await;
    create_group(&mut con, &events, "slow").await;
    // fast: read all 10, acknowledged 8 -> 2 pending, 0 unread.
    let read = read_group(&mut con, &events, "fast", 10).await;
    let _: i64 = redis::cmd("XACK")
        .arg(&events)
        .arg(group_name("fast"))
        .arg(&read[..8])
        .query_async(&mut con)
        .await
        .unwrap();
    // slow: read 3, none acknowledged -> 3 pending, 7 unread.
    read_group(&mut con, &events, "slow", 3).await;
    add(&mut con, &keys.dead_letters("slow"), 4).await;

    let stats = stats_of(&redis);
    let read = stats
        .read("shop", "orders", &names(&["fast", "slow", "new"]))
        .await
        .unwrap();
    assert_eq!(
        read,
        vec![
            expected("fast", 2, 0),
            expected("slow", 10, 4),
            // No group yet (no worker started): every entry is waiting.
            expected("new", 10, 0),
        ]
    );
}

#[tokio::test]
async fn backlog_is_counted_when_deletions_hide_the_lag() {
    let redis = RedisServer::start();
    let redis = target(&redis.url(), false);
    let mut con = connect(&redis);
    let keys = RouteKeys::new("shop", "orders");
    let events = keys.events();
    let ids = add(&mut con, &events, 10).await;
    create_group(&mut con, &events, "a").await;
    read_group(&mut con, &events, "a", 3).await;
    // Delete an unread entry: Redis can no longer tell the lag by itself.
    let _: i64 = redis::cmd("XDEL")
        .arg(&events)
        .arg(&ids[6])
        .query_async(&mut con)
        .await
        .unwrap();
    let stats = stats_of(&redis);
    let read = stats.read("shop", "orders", &names(&["a"])).await.unwrap();
    assert_eq!(read, vec![expected("a", 3 + 6, 0)]);
}

#[tokio::test]
async fn a_route_with_no_events_yet_has_no_backlog() {
    let redis = RedisServer::start();
    let stats = stats_of(&target(&redis.url(), false));
    let read = stats
        .read("shop", "orders", &names(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!(read, vec![expected("a", 0, 0), expected("b", 0, 0)]);
}

#[tokio::test]
async fn unreachable_redis_is_an_error_not_a_hang() {
    let url = RedisServer::start().url(); // stopped when dropped
    let stats = stats_of(&target(&url, false));
    let error = stats
        .read("shop", "orders", &names(&["a"]))
        .await
        .unwrap_err();
    assert!(error.to_string().starts_with("redis"), "{error}");
}

/// Two routes held by different nodes of a cluster: each route's keys share
/// its hash tag, so every read goes to the node that holds the route.
#[tokio::test]
async fn backlogs_of_routes_on_different_cluster_nodes_are_read() {
    let cluster = RedisCluster::start(3);
    let first = "orders";
    let second = cluster.name_on_another_node(first, |name| RouteKeys::new("shop", name).events());
    let redis = target(&cluster.url(), true);
    let mut con = connect(&redis);

    // orders: 5 events; "a" read 2 and acknowledged 1; "b" has 1 dead letter.
    let orders = RouteKeys::new("shop", first);
    create_group(&mut con, &orders.events(), "a").await;
    create_group(&mut con, &orders.events(), "b").await;
    add(&mut con, &orders.events(), 5).await;
    let read = read_group(&mut con, &orders.events(), "a", 2).await;
    let _: i64 = redis::cmd("XACK")
        .arg(orders.events())
        .arg(group_name("a"))
        .arg(&read[0])
        .query_async(&mut con)
        .await
        .unwrap();
    add(&mut con, &orders.dead_letters("b"), 1).await;
    // The second route: 3 events, all read by "a", none acknowledged; 2 dead letters.
    let other = RouteKeys::new("shop", &second);
    create_group(&mut con, &other.events(), "a").await;
    add(&mut con, &other.events(), 3).await;
    read_group(&mut con, &other.events(), "a", 3).await;
    add(&mut con, &other.dead_letters("a"), 2).await;

    let stats = stats_of(&redis);
    assert_eq!(
        stats
            .read("shop", first, &names(&["a", "b"]))
            .await
            .unwrap(),
        vec![expected("a", 4, 0), expected("b", 5, 1)]
    );
    assert_eq!(
        stats.read("shop", &second, &names(&["a"])).await.unwrap(),
        vec![expected("a", 3, 2)]
    );
}

/// `fanout-operator run`'s flags, parsed as the binary parses them.
#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    run: fanout_operator::config::RunArgs,
}

/// The operator's own connection over TLS to a Redis whose certificate a
/// private CA signed: built from `--redis-ca-file`, it trusts that CA; a
/// target without it (the system's CAs) is refused by the same server.
#[tokio::test]
async fn backlog_is_read_over_tls_trusting_the_ca_of_redis_ca_file() {
    use clap::Parser as _;

    let redis = RedisServer::start_tls();
    let keys = RouteKeys::new("shop", "orders");
    add(
        &mut connect(&target(&redis.url(), false)),
        &keys.events(),
        3,
    )
    .await;

    let tls_url = redis.tls_url();
    let ca = redis.tls_ca().to_str().unwrap();
    let config = Flags::try_parse_from([
        "fanout-operator",
        "--image",
        "fanout:1",
        "--redis-url",
        &tls_url,
        "--redis-ca-file",
        ca,
    ])
    .unwrap()
    .run
    .into_config()
    .unwrap();
    assert_eq!(config.redis_ca_file.as_deref(), Some(redis.tls_ca()));
    assert_eq!(
        stats_of(&config.redis)
            .read("shop", "orders", &names(&["a"]))
            .await
            .unwrap(),
        vec![expected("a", 3, 0)]
    );

    let error = stats_of(&target(&tls_url, false))
        .read("shop", "orders", &names(&["a"]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}
