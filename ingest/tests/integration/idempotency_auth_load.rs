//! Idempotency keys, token rotation and many concurrent clients.

use std::{collections::BTreeSet, time::Duration};

use crate::common::*;

#[tokio::test]
async fn idempotency_key_returns_the_first_answer_and_stores_once() {
    let harness = Harness::start(TWO_ROUTES).await;
    let key = [("idempotency-key", "order-42")];
    let first = harness
        .post_with(
            "/orders/v1/event",
            "application/json; charset=utf-8",
            &key,
            "{\"n\":1}",
        )
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    let again = harness
        .post_with("/orders/v1/event", "application/json", &key, "{\"n\":1}")
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json, first.json);

    let batch_key = [("idempotency-key", "batch-7")];
    let batch = harness
        .post_with(
            "/orders/v1/batch",
            "application/json",
            &batch_key,
            "[1, {\"a\":2}]",
        )
        .await;
    assert_eq!(batch.status, 202, "{batch:?}");
    assert_eq!(batch.json["ids"].as_array().unwrap().len(), 2);
    let batch_again = harness
        .post_with(
            "/orders/v1/batch",
            "application/json",
            &batch_key,
            "[1, {\"a\":2}]",
        )
        .await;
    assert_eq!(batch_again.json, batch.json);

    let mut conn = harness.redis().await;
    let entries = stream(&mut conn, ORDERS_STREAM).await;
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            first.json["id"].as_str().unwrap(),
            batch.json["ids"][0].as_str().unwrap(),
            batch.json["ids"][1].as_str().unwrap()
        ]
    );
    // Stored like any event: content type of the request, body as received.
    assert_eq!(entries[0].1[0].1, b"application/json; charset=utf-8");
    assert_eq!(entries[0].1[1].1, b"{\"n\":1}");
    assert_eq!(entries[2].1[1].1, b"{\"a\":2}");

    // The answer is remembered for the route's idempotencyTtl (1h).
    let ttl: i64 = redis::cmd("PTTL")
        .arg("fanout:{shop/orders}:idem:order-42")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((3_500_000..=3_600_000).contains(&ttl), "{ttl}");

    let metrics = harness
        .client
        .get(harness.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = r#"fanout_ingest_events_accepted_total{route="shop/orders"} 3"#;
    assert!(metrics.contains(line), "{metrics}");
}

#[tokio::test]
async fn concurrent_requests_with_one_key_store_once() {
    let harness = Harness::start(TWO_ROUTES).await;
    let requests = (0..16).map(|_| {
        harness.post_with(
            "/orders/v1/event",
            "application/json",
            &[("idempotency-key", "same")],
            "{\"dup\":true}",
        )
    });
    let answers = futures::future::join_all(requests).await;
    let first = &answers[0].json;
    for answer in &answers {
        assert_eq!(answer.status, 202);
        assert_eq!(&answer.json, first);
    }
    let mut conn = harness.redis().await;
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 1);
}

#[tokio::test]
async fn many_concurrent_events_are_each_stored_exactly_once() {
    let harness = Harness::start(TWO_ROUTES).await;
    let clients = 64;
    let per_client = 20;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = harness.client.clone();
        let url = harness.url("/orders/v1/event");
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..per_client {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!("{{\"c\":{c},\"n\":{n}}}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 202);
                let json: serde_json::Value =
                    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                ids.push(json["id"].as_str().unwrap().to_owned());
            }
            ids
        });
    }
    let mut answered = BTreeSet::new();
    while let Some(ids) = tasks.join_next().await {
        answered.extend(ids.unwrap());
    }
    assert_eq!(answered.len(), clients * per_client, "ids are unique");

    let mut conn = harness.redis().await;
    let entries = stream(&mut conn, ORDERS_STREAM).await;
    let stored_ids: BTreeSet<String> = entries.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(stored_ids, answered);
    let bodies: BTreeSet<Vec<u8>> = entries.into_iter().map(|(_, f)| f[1].1.clone()).collect();
    let expected: BTreeSet<Vec<u8>> = (0..clients)
        .flat_map(|c| (0..per_client).map(move |n| format!("{{\"c\":{c},\"n\":{n}}}").into_bytes()))
        .collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn events_queued_while_redis_is_busy_share_one_pipeline() {
    let harness = Harness::start(TWO_ROUTES).await;
    let mut conn = harness.redis().await;
    // Hold every write for a moment so that concurrent requests queue up.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(500)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let events = 64;
    let requests = (0..events).map(|n| harness.post("/orders/v1/event", format!("{n}")));
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|a| a.status == 202));
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, events);

    let metrics = harness
        .client
        .get(harness.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pipelines: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fanout_ingest_redis_pipeline_events_count "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        pipelines < events / 4,
        "{events} events took {pipelines} round trips"
    );
}

#[tokio::test]
async fn rotated_tokens_are_picked_up_without_restart() {
    let harness = Harness::start(TWO_ROUTES).await;
    let old = [("authorization", "Bearer secret-token")];
    let new = [("authorization", "Bearer rotated-token")];
    assert_eq!(
        harness
            .post_with("/secure/v1/event", "application/json", &old, "1")
            .await
            .status,
        202
    );
    assert_eq!(
        harness
            .post_with("/secure/v1/event", "application/json", &new, "1")
            .await
            .status,
        401
    );

    write_tokens(
        harness.secrets.path(),
        "rotated-token\n# secret-token removed\n",
    );
    wait_until(Duration::from_secs(10), || async {
        harness
            .post_with("/secure/v1/event", "application/json", &new, "1")
            .await
            .status
            == 202
    })
    .await;
    let answer = harness
        .post_with("/secure/v1/event", "application/json", &old, "1")
        .await;
    assert_eq!((answer.status, answer.error()), (401, "unauthorized"));
}

#[tokio::test]
async fn a_route_with_auth_but_no_tokens_does_not_start() {
    let redis = fanout_testkit::RedisServer::start();
    let secrets = tempfile::tempdir().unwrap();
    write_tokens(secrets.path(), "# nothing yet\n");
    let mut config = fanout_ingest::Config::new(
        fanout_api::parse_routes(TWO_ROUTES).unwrap(),
        fanout_api::RedisTarget::new(&redis.url(), false).unwrap(),
    );
    config.secrets_dir = secrets.path().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = fanout_ingest::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("shop/secure") && message.contains("holds no token"),
        "{message}"
    );
}
