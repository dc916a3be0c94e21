//! What clients see when Redis is gone or full, and how shutdown drains.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn killed_redis_answers_503_with_retry_after() {
    let mut harness = Harness::start(TWO_ROUTES).await;
    assert_eq!(harness.post("/orders/v1/event", "1").await.status, 202);
    harness.wait_ready(200).await;

    drop(harness.redis.take()); // kills redis-server

    for (path, body) in [("/orders/v1/event", "2"), ("/orders/v1/batch", "[1,2]")] {
        let answer = harness.post(path, body).await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert_eq!(answer.error(), "redis_unavailable", "{path}");
        assert_eq!(answer.header("retry-after"), Some("1"), "{path}");
        // No internal error text reaches the client.
        let message = answer.json["message"].as_str().unwrap();
        assert!(!message.to_lowercase().contains("refused"), "{message}");
    }
    let answer = harness
        .post_with(
            "/orders/v1/event",
            "application/json",
            &[("idempotency-key", "k")],
            "3",
        )
        .await;
    assert_eq!((answer.status, answer.error()), (503, "redis_unavailable"));
    harness.wait_ready(503).await;
    assert_eq!(
        harness.get("/healthz").await.status,
        200,
        "alive without Redis"
    );
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn redis_over_the_memory_watermark_refuses_without_writing() {
    let harness = Harness::start(TWO_ROUTES).await;
    assert_eq!(harness.post("/orders/v1/event", "1").await.status, 202);
    harness.wait_ready(200).await;

    let mut conn = harness.redis().await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let used: u64 = fanout_ingest_used_memory(&info);
    // used/max = 0.95, over the default watermark of 0.9, yet under the
    // limit at which Redis itself would refuse writes.
    let max = used * 100 / 95;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(max)
        .query_async(&mut conn)
        .await
        .unwrap();
    harness.wait_ready(503).await;
    let readyz = harness.get("/readyz").await;
    assert!(
        readyz.json["reason"]
            .as_str()
            .unwrap()
            .contains("watermark"),
        "{readyz:?}"
    );

    let before = harness.dump().await;
    for (path, body) in [("/orders/v1/event", "2"), ("/orders/v1/batch", "[1,2]")] {
        let answer = harness.post(path, body).await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert_eq!(answer.error(), "redis_overloaded");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    assert_eq!(harness.dump().await, before);

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    harness.wait_ready(200).await;
    assert_eq!(harness.post("/orders/v1/event", "3").await.status, 202);
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 2);
}

fn fanout_ingest_used_memory(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:"))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let mut harness = Harness::start(TWO_ROUTES).await;
    let addr = harness.base.trim_start_matches("http://").to_owned();
    let body = br#"{"in":"flight"}"#;

    // Start a request and hold its body back until the handler asks for it
    // (100-continue): from then on it is in flight.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /orders/v1/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    harness.trigger_shutdown();
    let task = harness.take_task();
    // The listener closes: new connections are refused...
    wait_until(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert!(!task.is_finished(), "run returned with a request in flight");

    // ...while the request in flight completes and is stored.
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("run returns after the last request")
        .unwrap()
        .unwrap();
    let mut conn = harness.redis().await;
    let entries = stream_entries(&mut conn).await;
    assert_eq!(entries, vec![body.to_vec()]);
}

async fn stream_entries(conn: &mut fanout_api::RedisConnection) -> Vec<Vec<u8>> {
    stream(conn, ORDERS_STREAM)
        .await
        .into_iter()
        .map(|(_, fields)| fields[1].1.clone())
        .collect()
}

#[tokio::test]
async fn redis_oom_refusals_answer_503_overloaded_and_store_nothing() {
    // Checks so rare that only Redis itself notices the memory limit.
    let harness = Harness::start_with(TWO_ROUTES, |config| {
        config.redis_check_interval = Duration::from_secs(3600);
    })
    .await;
    harness.wait_ready(200).await;
    assert_eq!(harness.post("/orders/v1/event", "1").await.status, 202);
    let mut conn = harness.redis().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();

    let before = harness.dump().await;
    let idempotent = [("idempotency-key", "k")];
    for (path, headers, body) in [
        ("/orders/v1/event", &[][..], "2"),
        ("/orders/v1/batch", &[][..], "[1,2]"),
        ("/orders/v1/event", &idempotent[..], "3"),
    ] {
        let answer = harness
            .post_with(path, "application/json", headers, body)
            .await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert_eq!(answer.error(), "redis_overloaded", "{path} {headers:?}");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    assert_eq!(harness.dump().await, before);
}

#[tokio::test]
async fn a_dropped_redis_connection_is_replaced() {
    let harness = Harness::start(TWO_ROUTES).await;
    assert_eq!(harness.post("/orders/v1/event", "1").await.status, 202);
    let mut conn = harness.redis().await;
    let killed: usize = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1, "ingest's connection was killed");
    // At most the requests that met the dead connection are refused (503,
    // nothing stored); then the service reconnects on its own.
    wait_until(Duration::from_secs(10), || async {
        let status = harness.post("/orders/v1/event", "2").await.status;
        assert!(status == 202 || status == 503, "unexpected status {status}");
        status == 202
    })
    .await;
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 2);
    harness.wait_ready(200).await;
}
