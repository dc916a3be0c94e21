//! The HTTP API against a real redis-server: what is stored, and that every
//! refused request leaves Redis exactly as it was.

use crate::common::*;
use fanout_api::entry::{FIELD_BODY, FIELD_CONTENT_TYPE};

#[tokio::test]
async fn single_event_is_stored_byte_for_byte_with_its_content_type() {
    let harness = Harness::start(TWO_ROUTES).await;
    let body = " {\"b\" :[1, 2.50e1, \"\\u00e9\"],\n\t\"a\": null}\n";
    let content_type = "application/cloudevents+json; charset=utf-8";
    let answer = harness
        .post_with("/orders/v1/event", content_type, &[], body)
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let id = answer.json["id"].as_str().unwrap().to_owned();

    let mut conn = harness.redis().await;
    let entries = stream(&mut conn, ORDERS_STREAM).await;
    assert_eq!(entries.len(), 1);
    let (stored_id, fields) = &entries[0];
    assert_eq!(stored_id, &id);
    assert_eq!(
        fields,
        &vec![
            (
                FIELD_CONTENT_TYPE.to_owned(),
                content_type.as_bytes().to_vec()
            ),
            (FIELD_BODY.to_owned(), body.as_bytes().to_vec()),
        ]
    );
    let stored = fanout_api::entry::StoredEvent::from_fields(
        fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    )
    .unwrap();
    assert_eq!(stored.body, body.as_bytes());
}

#[tokio::test]
async fn batch_of_1000_is_stored_in_order_as_received() {
    let harness = Harness::start(TWO_ROUTES).await;
    let elements: Vec<String> = (0..1000)
        .map(|n| format!("{{ \"n\": {n}, \"pad\" : \"x\" }}"))
        .collect();
    let body = format!("[{}]", elements.join(" ,\n"));
    let answer = harness.post("/orders/v1/batch", body).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let ids: Vec<String> = answer.json["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1000);

    let mut conn = harness.redis().await;
    let entries = stream(&mut conn, ORDERS_STREAM).await;
    let stored_ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
    assert_eq!(stored_ids, ids.iter().collect::<Vec<_>>());
    for ((_, fields), element) in entries.iter().zip(&elements) {
        assert_eq!(
            fields[0],
            (FIELD_CONTENT_TYPE.to_owned(), b"application/json".to_vec())
        );
        assert_eq!(
            fields[1],
            (FIELD_BODY.to_owned(), element.as_bytes().to_vec())
        );
    }
}

#[tokio::test]
async fn batch_with_one_malformed_element_writes_nothing() {
    let harness = Harness::start(TWO_ROUTES).await;
    let before = harness.dump().await;
    let answer = harness
        .post("/orders/v1/batch", r#"[{"a":1},{"b":2},{"c":],{"d":4}]"#)
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error(), "malformed_json");
    assert_eq!(harness.dump().await, before);
}

#[tokio::test]
async fn unprefixed_paths_are_served_only_with_one_route() {
    let solo = Harness::start(ONE_ROUTE).await;
    assert_eq!(solo.post("/v1/event", "1").await.status, 202);
    assert_eq!(solo.post("/v1/batch", "[1,2]").await.status, 202);
    assert_eq!(solo.post("/solo/v1/event", "3").await.status, 202);
    let mut conn = solo.redis().await;
    assert_eq!(xlen(&mut conn, SOLO_STREAM).await, 4);

    let two = Harness::start(TWO_ROUTES).await;
    let answer = two.post("/v1/event", "1").await;
    assert_eq!((answer.status, answer.error()), (404, "not_found"));
}

#[tokio::test]
async fn every_refused_request_leaves_redis_unchanged() {
    let harness = Harness::start(TWO_ROUTES).await;
    // Some state to compare with: one stored event on each route.
    assert_eq!(harness.post("/orders/v1/event", "0").await.status, 202);
    let token = [("authorization", "Bearer secret-token")];
    assert_eq!(
        harness
            .post_with("/secure/v1/event", "application/json", &token, "0")
            .await
            .status,
        202
    );
    let before = harness.dump().await;
    assert!(before.len() >= 3, "{before:?}");

    let json = "application/json";
    let big_body = format!("[\"{}\"]", "x".repeat(70_000));
    let big_batch = format!("[{}]", vec!["1"; 1001].join(","));
    struct Case<'a> {
        what: &'a str,
        path: &'a str,
        content_type: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        body: String,
        status: u16,
        code: &'a str,
    }
    let case = |what,
                path,
                content_type,
                headers: &[(&'static str, &'static str)],
                body: &str,
                status,
                code| Case {
        what,
        path,
        content_type,
        headers: headers.to_vec(),
        body: body.to_owned(),
        status,
        code,
    };
    let cases = [
        case(
            "malformed event",
            "/orders/v1/event",
            json,
            &[],
            "{\"a\":",
            400,
            "malformed_json",
        ),
        case(
            "two values",
            "/orders/v1/event",
            json,
            &[],
            "1 2",
            400,
            "malformed_json",
        ),
        case(
            "empty body",
            "/orders/v1/event",
            json,
            &[],
            "",
            400,
            "malformed_json",
        ),
        case(
            "batch not an array",
            "/orders/v1/batch",
            json,
            &[],
            "{\"a\":1}",
            400,
            "malformed_json",
        ),
        case(
            "empty batch",
            "/orders/v1/batch",
            json,
            &[],
            " [ ] ",
            400,
            "empty_batch",
        ),
        case(
            "missing token",
            "/secure/v1/event",
            json,
            &[],
            "1",
            401,
            "unauthorized",
        ),
        case(
            "wrong token",
            "/secure/v1/event",
            json,
            &[("authorization", "Bearer nope")],
            "1",
            401,
            "unauthorized",
        ),
        case(
            "wrong scheme",
            "/secure/v1/batch",
            json,
            &[("authorization", "Basic c2VjcmV0LXRva2Vu")],
            "[1]",
            401,
            "unauthorized",
        ),
        case(
            "unknown route",
            "/nowhere/v1/event",
            json,
            &[],
            "1",
            404,
            "not_found",
        ),
        case(
            "unknown endpoint",
            "/orders/v2/event",
            json,
            &[],
            "1",
            404,
            "not_found",
        ),
        case(
            "body too large",
            "/orders/v1/batch",
            json,
            &[],
            &big_body,
            413,
            "body_too_large",
        ),
        case(
            "batch too large",
            "/orders/v1/batch",
            json,
            &[],
            &big_batch,
            413,
            "batch_too_large",
        ),
        case(
            "text/plain",
            "/orders/v1/event",
            "text/plain",
            &[],
            "1",
            415,
            "unsupported_media_type",
        ),
        case(
            "form",
            "/orders/v1/batch",
            "application/x-www-form-urlencoded",
            &[],
            "a=1",
            415,
            "unsupported_media_type",
        ),
        case(
            "bad idempotency key",
            "/orders/v1/event",
            json,
            &[("idempotency-key", "tab\there")],
            "1",
            400,
            "invalid_idempotency_key",
        ),
    ];
    for case in cases {
        let answer = harness
            .post_with(case.path, case.content_type, &case.headers, case.body)
            .await;
        assert_eq!(answer.status, case.status, "{}: {answer:?}", case.what);
        assert_eq!(answer.error(), case.code, "{}: {answer:?}", case.what);
        assert!(
            !answer.json["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{}: no message",
            case.what
        );
        if case.status == 401 {
            assert_eq!(
                answer.header("www-authenticate"),
                Some("Bearer"),
                "{}",
                case.what
            );
        }
        assert_eq!(harness.dump().await, before, "{} changed Redis", case.what);
    }

    // A missing content type, and a declared length over the limit refused
    // before the body is read.
    let response = harness
        .client
        .post(harness.url("/orders/v1/event"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let answer = raw_request(
        &harness.base,
        "POST /orders/v1/event HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    // Wrong method: 405 JSON, with Allow.
    let response = harness
        .client
        .get(harness.url("/orders/v1/event"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let json: serde_json::Value = response.json_value().await;
    assert_eq!(json["error"], "method_not_allowed");
    assert_eq!(harness.dump().await, before, "405 changed Redis");

    // Refusals are counted by reason.
    let metrics = harness
        .client
        .get(harness.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"fanout_ingest_requests_refused_total{route="shop/orders",reason="empty_batch"} 1"#,
        r#"fanout_ingest_requests_refused_total{route="shop/secure",reason="unauthorized"} 3"#,
        r#"fanout_ingest_requests_refused_total{route="",reason="not_found"} 2"#,
        r#"fanout_ingest_events_accepted_total{route="shop/orders"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let harness = Harness::start(TWO_ROUTES).await;
    let health = harness.get("/healthz").await;
    assert_eq!(
        (health.status, health.json["status"].as_str()),
        (200, Some("ok"))
    );
    harness.wait_ready(200).await;
    assert_eq!(
        harness.post("/orders/v1/batch", "[1,2,3]").await.status,
        202
    );
    let response = harness
        .client
        .get(harness.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
    );
    let metrics = response.text().await.unwrap();
    for line in [
        r#"fanout_ingest_events_accepted_total{route="shop/orders"} 3"#,
        r#"fanout_ingest_request_duration_seconds_count{route="shop/orders",endpoint="batch"} 1"#,
        "fanout_ingest_redis_ready 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

/// Sends raw bytes on a new connection and returns everything answered.
async fn raw_request(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}
