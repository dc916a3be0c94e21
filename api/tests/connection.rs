//! [`RedisConnection`] against a real single server and a real 3-node
//! cluster: the commands the data plane sends (pipelines, MULTI/EXEC,
//! scripts, blocking stream reads) on routes held by different nodes, and
//! `INFO` from every primary, and a connection made before its cluster
//! exists.

use std::time::Duration;

use fanout_api::{RedisConnection, RedisTarget, RouteKeys};
use fanout_testkit::{RedisCluster, RedisServer, free_port};
use redis::AsyncCommands;

const CONNECT: Duration = Duration::from_secs(2);
const RESPONSE: Duration = Duration::from_secs(5);

/// Writes two events to `keys`' stream in one MULTI/EXEC, runs a script on
/// it and reads the events back with a blocking XREADGROUP.
async fn exercise(conn: &mut RedisConnection, keys: &RouteKeys) {
    let stream = &keys.events();
    let ids: (String, String) = redis::pipe()
        .atomic()
        .xadd(stream, "*", &[("b", "1")])
        .xadd(stream, "*", &[("b", "2")])
        .query_async(conn)
        .await
        .unwrap();
    assert_ne!(ids.0, ids.1);
    let length: usize = redis::Script::new("return redis.call('XLEN', KEYS[1])")
        .key(stream)
        .invoke_async(conn)
        .await
        .unwrap();
    assert_eq!(length, 2);
    let () = conn.xgroup_create(stream, "d:a", "0").await.unwrap();
    let read: redis::streams::StreamReadReply = conn
        .xread_options(
            &[stream],
            &[">"],
            &redis::streams::StreamReadOptions::default()
                .group("d:a", "c1")
                .block(100),
        )
        .await
        .unwrap();
    assert_eq!(read.keys[0].ids.len(), 2);
}

#[tokio::test]
async fn a_single_server() {
    let redis = RedisServer::start();
    let target = RedisTarget::new(&redis.url(), false).unwrap();
    let mut conn = target.connect(CONNECT, RESPONSE);
    exercise(&mut conn, &RouteKeys::new("shop", "orders")).await;
    let info = conn.info_of_primaries("memory").await.unwrap();
    assert_eq!(info.len(), 1);
    assert!(info[0].contains("used_memory:"), "{}", info[0]);
}

#[tokio::test]
async fn a_cluster_with_routes_on_different_nodes() {
    let cluster = RedisCluster::start(3);
    let target = RedisTarget::new(&cluster.url(), true).unwrap();
    let mut conn = target.connect(CONNECT, RESPONSE);

    // Two routes whose hash tags land on different nodes.
    let orders = RouteKeys::new("shop", "orders");
    let other = RouteKeys::new(
        "shop",
        &cluster.name_on_another_node("orders", |name| RouteKeys::new("shop", name).events()),
    );
    for keys in [&orders, &other] {
        exercise(&mut conn, keys).await;
        // The events are on the node that owns the slot, and only there.
        let mut node = RedisTarget::new(&cluster.node_of(&keys.events()).url(), false)
            .unwrap()
            .connect(CONNECT, RESPONSE);
        let length: usize = node.xlen(keys.events()).await.unwrap();
        assert_eq!(length, 2);
    }

    let info = conn.info_of_primaries("memory").await.unwrap();
    assert_eq!(info.len(), 3);
    assert!(info.iter().all(|text| text.contains("used_memory:")));
}

/// A service may start before its Redis Cluster: the connection is lazy,
/// fails while there is no cluster, and works once the cluster is up.
#[tokio::test]
async fn a_cluster_connection_made_before_the_cluster_works_once_it_is_up() {
    let ports = [free_port(), free_port(), free_port()];
    let target = RedisTarget::new(&format!("redis://127.0.0.1:{}", ports[0]), true).unwrap();
    let mut conn = target.connect(CONNECT, RESPONSE);
    let before: Result<(), _> = conn.set("{shop/orders}:k", "v").await;
    assert!(before.is_err(), "no cluster yet");

    let _cluster = RedisCluster::start_on(&ports);
    let mut stored = None;
    for _ in 0..50 {
        if conn.set::<_, _, ()>("{shop/orders}:k", "v").await.is_ok() {
            stored = conn
                .get::<_, Option<String>>("{shop/orders}:k")
                .await
                .ok()
                .flatten();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored.as_deref(), Some("v"));
}

/// TLS with a private CA given as a file: that CA is trusted for Redis, a
/// server signed by another CA is refused, and a CA file without a
/// `rediss://` URL or without a certificate is refused at startup.
#[tokio::test]
async fn tls_with_a_private_ca_file() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = RedisServer::start_tls();
    let trusted = RedisTarget::with_ca_file(&server.tls_url(), false, server.tls_ca()).unwrap();
    let mut conn = trusted.connect(CONNECT, RESPONSE);
    let () = conn.set("{shop/orders}:k", "over tls").await.unwrap();
    let value: String = conn.get("{shop/orders}:k").await.unwrap();
    assert_eq!(value, "over tls");

    let other = tempfile::tempdir().unwrap();
    let other_ca = fanout_testkit::TestCertificates::generate(other.path()).ca;
    let untrusted = RedisTarget::with_ca_file(&server.tls_url(), false, &other_ca).unwrap();
    let refused: Result<String, _> = untrusted
        .connect(CONNECT, RESPONSE)
        .get("{shop/orders}:k")
        .await;
    assert!(refused.is_err(), "{refused:?}");

    let plain = RedisTarget::with_ca_file(&server.url(), false, server.tls_ca()).unwrap_err();
    assert!(plain.reason.contains("rediss://"), "{plain}");
    let not_pem = other.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let garbage = RedisTarget::with_ca_file(&server.tls_url(), false, &not_pem).unwrap_err();
    assert!(garbage.reason.contains("no PEM certificate"), "{garbage}");
}
