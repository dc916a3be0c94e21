//! De-duplication by an event's own id (`spec.ingest.eventIdField`).

use crate::common::*;

/// `shop/orders` de-duplicating by the member `id`, ids remembered 1h.
const ID_ROUTE: &str = r#"
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: orders, namespace: shop}
spec:
  ingest: {path: /orders, idempotencyTtl: 1h, eventIdField: id}
  destinations: [{name: a, url: "http://127.0.0.1:9/a"}]
"#;

fn ids(answer: &Answer) -> Vec<String> {
    answer.json["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {answer:?}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

async fn metric(harness: &Harness, name: &str) -> u64 {
    let text = harness.get_text("/metrics").await;
    let prefix = format!("{name}{{route=\"shop/orders\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_event_posted_twice_with_its_id_is_stored_once() {
    let harness = Harness::start(ID_ROUTE).await;
    let first = harness
        .post_with(
            "/orders/v1/event",
            "application/cloudevents+json",
            &[],
            r#"{"id":"evt-1","n":1}"#,
        )
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    // A retry, even with another body, gets the first entry id.
    let again = harness
        .post("/orders/v1/event", r#"{"n":2, "id": "evt-1"}"#)
        .await;
    assert_eq!(again.status, 202, "{again:?}");
    assert_eq!(again.json, first.json);

    let mut conn = harness.redis().await;
    let entries = stream(&mut conn, ORDERS_STREAM).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, first.json["id"].as_str().unwrap());
    // Stored like any event: the request's content type, the body as sent.
    assert_eq!(entries[0].1[0].1, b"application/cloudevents+json");
    assert_eq!(entries[0].1[1].1, br#"{"id":"evt-1","n":1}"#);

    // The id is remembered for the route's idempotencyTtl (1h), apart from
    // the Idempotency-Key keys.
    let ttl: i64 = redis::cmd("PTTL")
        .arg("fanout:{shop/orders}:eid:evt-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((3_500_000..=3_600_000).contains(&ttl), "{ttl}");

    assert_eq!(
        metric(&harness, "fanout_ingest_events_accepted_total").await,
        1
    );
    assert_eq!(
        metric(&harness, "fanout_ingest_events_deduplicated_total").await,
        1
    );
}

#[tokio::test]
async fn a_batch_stores_each_id_once_and_later_requests_reuse_it() {
    let harness = Harness::start(ID_ROUTE).await;
    let batch = harness
        .post(
            "/orders/v1/batch",
            r#"[{"id":"a","n":1}, {"id":"b"}, {"id":"a","n":3}, {"no":"id"}]"#,
        )
        .await;
    assert_eq!(batch.status, 202, "{batch:?}");
    let first = ids(&batch);
    assert_eq!(first.len(), 4);
    assert_eq!(first[2], first[0], "a repeated id answers the first entry");
    assert!(first[0] != first[1] && first[1] != first[3] && first[0] != first[3]);

    let mut conn = harness.redis().await;
    let entries = stream(&mut conn, ORDERS_STREAM).await;
    let stored: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(id, fields)| (id.as_str(), &fields[1].1[..]))
        .collect();
    assert_eq!(
        stored,
        [
            (first[0].as_str(), &br#"{"id":"a","n":1}"#[..]),
            (first[1].as_str(), br#"{"id":"b"}"#),
            (first[3].as_str(), br#"{"no":"id"}"#),
        ]
    );

    // A second batch re-using `a` gets its first entry id and stores only
    // the new events; the number 7 and the string "7" are one id.
    let second = harness
        .post("/orders/v1/batch", r#"[{"id":"a"}, {"id":7}, {"id":"7"}]"#)
        .await;
    assert_eq!(second.status, 202, "{second:?}");
    let second = ids(&second);
    assert_eq!(second[0], first[0]);
    assert_eq!(second[2], second[1]);
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 4);

    // Ids are shared by the event and batch endpoints.
    let single = harness.post("/orders/v1/event", r#"{"id":"b"}"#).await;
    assert_eq!(single.json["id"].as_str().unwrap(), first[1]);
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 4);

    assert_eq!(
        metric(&harness, "fanout_ingest_events_accepted_total").await,
        4
    );
    assert_eq!(
        metric(&harness, "fanout_ingest_events_deduplicated_total").await,
        4
    );
}

#[tokio::test]
async fn concurrent_events_with_one_id_store_once() {
    let harness = Harness::start(ID_ROUTE).await;
    let requests =
        (0..16).map(|n| harness.post("/orders/v1/event", format!(r#"{{"id":"same","n":{n}}}"#)));
    let answers = futures::future::join_all(requests).await;
    let first = &answers[0].json;
    assert!(first["id"].is_string(), "{:?}", answers[0]);
    for answer in &answers {
        assert_eq!(answer.status, 202, "{answer:?}");
        assert_eq!(&answer.json, first);
    }
    let mut conn = harness.redis().await;
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 1);
}

#[tokio::test]
async fn without_event_id_field_duplicates_are_stored_twice() {
    let harness = Harness::start(TWO_ROUTES).await;
    let event = r#"{"id":"evt-1"}"#;
    let first = harness.post("/orders/v1/event", event).await;
    let again = harness.post("/orders/v1/event", event).await;
    assert_eq!((first.status, again.status), (202, 202));
    assert_ne!(first.json, again.json);
    let batch = harness
        .post("/orders/v1/batch", format!("[{event},{event}]"))
        .await;
    assert_eq!(ids(&batch).len(), 2);

    let mut conn = harness.redis().await;
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 4);
    let dump = harness.dump().await;
    assert!(
        !dump.iter().any(|line| line.contains(":eid:")),
        "no id is remembered: {dump:?}"
    );
}

#[tokio::test]
async fn an_over_long_id_is_refused_and_writes_nothing() {
    let harness = Harness::start(ID_ROUTE).await;
    // Something in Redis already, so that "unchanged" is not "empty".
    let seen = harness.post("/orders/v1/event", r#"{"id":"seen"}"#).await;
    assert_eq!(seen.status, 202);
    let before = harness.dump().await;

    let long = "x".repeat(201);
    let single = harness
        .post("/orders/v1/event", format!(r#"{{"id":"{long}"}}"#))
        .await;
    assert_eq!((single.status, single.error()), (400, "invalid_event_id"));
    let batch = harness
        .post(
            "/orders/v1/batch",
            format!(r#"[{{"id":"new"}}, {{"n":1}}, {{"id":"{long}"}}]"#),
        )
        .await;
    assert_eq!((batch.status, batch.error()), (400, "invalid_event_id"));
    assert!(
        batch.json["message"].as_str().unwrap().contains("event 2"),
        "{batch:?}"
    );
    assert_eq!(harness.dump().await, before);

    // 200 bytes is still an id.
    let at_limit = harness
        .post(
            "/orders/v1/event",
            format!(r#"{{"id":"{}"}}"#, "y".repeat(200)),
        )
        .await;
    assert_eq!(at_limit.status, 202, "{at_limit:?}");
}

#[tokio::test]
async fn an_idempotency_key_governs_the_request_over_event_ids() {
    let harness = Harness::start(ID_ROUTE).await;
    let first = harness.post("/orders/v1/event", r#"{"id":"evt-1"}"#).await;
    let keyed = harness
        .post_with(
            "/orders/v1/event",
            "application/json",
            &[("idempotency-key", "k-1")],
            r#"{"id":"evt-1"}"#,
        )
        .await;
    assert_eq!((first.status, keyed.status), (202, 202));
    assert_ne!(keyed.json, first.json, "the header, not the id, decides");
    let replay = harness
        .post_with(
            "/orders/v1/event",
            "application/json",
            &[("idempotency-key", "k-1")],
            r#"{"id":"evt-2"}"#,
        )
        .await;
    assert_eq!(replay.json, keyed.json);
    let mut conn = harness.redis().await;
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 2);
}

#[tokio::test]
async fn a_batch_with_ids_refused_by_redis_stores_nothing_and_remembers_nothing() {
    let harness = Harness::start_with(ID_ROUTE, |config| {
        // Checks so rare that only Redis itself notices the memory limit.
        config.redis_check_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    harness.wait_ready(200).await;
    let seen = harness.post("/orders/v1/event", r#"{"id":"seen"}"#).await;
    assert_eq!(seen.status, 202);
    let mut conn = harness.redis().await;
    let set_maxmemory = |bytes: u64| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .to_owned()
    };
    let _: () = set_maxmemory(1).query_async(&mut conn).await.unwrap();

    let before = harness.dump().await;
    let batch = r#"[{"id":"new"}, {"n":1}, {"id":"seen"}]"#;
    let refused = harness.post("/orders/v1/batch", batch).await;
    assert_eq!(
        (refused.status, refused.error()),
        (503, "redis_overloaded"),
        "{refused:?}"
    );
    assert_eq!(harness.dump().await, before);

    // Once Redis has room, the retry stores the new events: the refused
    // attempt remembered no id.
    let _: () = set_maxmemory(0).query_async(&mut conn).await.unwrap();
    let stored = harness.post("/orders/v1/batch", batch).await;
    assert_eq!(stored.status, 202, "{stored:?}");
    let stored = ids(&stored);
    assert_eq!(stored[2], seen.json["id"].as_str().unwrap());
    assert_eq!(xlen(&mut conn, ORDERS_STREAM).await, 3);
}
