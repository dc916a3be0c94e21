//! Delivery semantics of an in-process worker against a real redis-server
//! and real HTTP destinations: fan-out, retries, Retry-After, dead letters,
//! independence of destinations, signatures, trimming, and that a waiting
//! retry is not reclaimed by another worker.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use fanout_testkit::{Answer, Received, RedisServer, Sink};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const LIMIT: Duration = Duration::from_secs(15);
const VISIBILITY: Duration = Duration::from_secs(60);

fn no_secrets() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test]
async fn every_destination_receives_the_event_intact() {
    let redis = RedisServer::start();
    let (a, b) = (Sink::ok().await, Sink::ok().await);
    let routes = routes_yaml(&[
        destination("a", &a.url("/hook"), ""),
        destination(
            "b",
            &b.url("/other"),
            "headers: {X-Source: orders, X-Team: data}",
        ),
    ]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    let body = br#"{"order": 42, "items": ["x", "y"]}"#;
    let id = add_event(&mut conn, "application/json; charset=utf-8", body).await;

    for (sink, name, path) in [(&a, "a", "/hook"), (&b, "b", "/other")] {
        let got = sink.wait_until(LIMIT, |r| !r.is_empty()).await;
        let request = &got[0];
        assert_eq!(request.path, path);
        assert_eq!(&request.body[..], body);
        assert_eq!(
            request.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            request.header("webhook-id"),
            Some(format!("{NAMESPACE}/{ROUTE}/{name}/{id}").as_str())
        );
        let timestamp: u64 = request
            .header("webhook-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            now.abs_diff(timestamp) <= 5,
            "timestamp {timestamp} vs now {now}"
        );
        assert_eq!(request.header("webhook-signature"), None, "signing is off");
    }
    let at_b = &b.received()[0];
    assert_eq!(at_b.header("x-source"), Some("orders"));
    assert_eq!(at_b.header("x-team"), Some("data"));
    assert_eq!(a.received()[0].header("x-source"), None);

    wait_all_done(&mut conn, &["a", "b"], LIMIT).await;
    let base = format!("http://{}", worker.metrics_addr);
    assert!(
        http_get(&format!("{base}/healthz"))
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(&format!("{base}/readyz"))
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(a.received().len(), 1);
    assert_eq!(b.received().len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn a_503_twice_then_200_is_delivered_once_with_one_webhook_id() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, n| Answer::status(if n < 2 { 503 } else { 200 })).await;
    let routes = routes_yaml(&[destination("a", &sink.url("/"), "")]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    let id = add_event(&mut conn, "application/json", b"{}").await;

    let got = sink.wait_until(LIMIT, |r| r.len() >= 3).await;
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    let expected = format!("{NAMESPACE}/{ROUTE}/a/{id}");
    assert_eq!(ids, [expected.as_str(); 3]);
    // The entry is acknowledged, its retry state gone, the stream trimmed.
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    assert_eq!(sink.received().len(), 3, "exactly one successful attempt");
    assert_eq!(xlen(&mut conn, &keys().dead_letters("a")).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn retry_after_delays_the_next_attempt() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, n| {
        if n == 0 {
            Answer::status(429).header("Retry-After", "1")
        } else {
            Answer::status(200)
        }
    })
    .await;
    let routes = routes_yaml(&[destination("a", &sink.url("/"), "")]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    add_event(&mut conn, "application/json", b"[1]").await;

    let got = sink.wait_until(LIMIT, |r| r.len() >= 2).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "second attempt {gap:?} after a 429 with Retry-After: 1 (backoff alone is 50ms)"
    );
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_400_is_dead_lettered_after_exactly_one_attempt() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, _| Answer::status(400)).await;
    let routes = routes_yaml(&[destination("a", &sink.url("/"), "")]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    let id = add_event(&mut conn, "application/json", br#"{"bad": true}"#).await;

    let dead = keys().dead_letters("a");
    wait_for(LIMIT, "a dead letter", || {
        let mut conn = conn.clone();
        let dead = dead.clone();
        async move { xlen(&mut conn, &dead).await == 1 }
    })
    .await;
    let letters = entries(&mut conn, &dead).await;
    let fields = &letters[0].1;
    assert_eq!(fields["id"], id);
    assert_eq!(fields["status"], "400");
    assert_eq!(fields["attempts"], "1");
    assert_eq!(fields["b"], r#"{"bad": true}"#);
    assert_eq!(fields["ct"], "application/json");
    assert!(fields["error"].contains("permanent"), "{}", fields["error"]);
    // Dead-lettering acknowledged the entry in the same MULTI: no more
    // attempts can follow.
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    assert_eq!(sink.received().len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn exhausted_retries_are_dead_lettered_with_max_attempts() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, _| Answer::status(503)).await;
    let routes = routes_yaml(&[format!(
        "{{name: a, url: \"{}\", timeout: 1s, retry: {{maxAttempts: 3, initialBackoff: 50ms, maxBackoff: 200ms}}}}",
        sink.url("/")
    )]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    add_event(&mut conn, "application/json", b"1").await;

    let dead = keys().dead_letters("a");
    wait_for(LIMIT, "a dead letter", || {
        let mut conn = conn.clone();
        let dead = dead.clone();
        async move { xlen(&mut conn, &dead).await == 1 }
    })
    .await;
    let letters = entries(&mut conn, &dead).await;
    assert_eq!(letters[0].1["attempts"], "3");
    assert_eq!(letters[0].1["status"], "503");
    assert!(
        letters[0].1["error"].contains("exhausted"),
        "{:?}",
        letters[0].1
    );
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    assert_eq!(sink.received().len(), 3);
    worker.stop().await;
}

#[tokio::test]
async fn a_slow_destination_does_not_hold_back_another() {
    let redis = RedisServer::start();
    let fast = Sink::ok().await;
    let slow = Sink::scripted(|_, _| Answer::status(200).delayed(Duration::from_millis(500))).await;
    let routes = routes_yaml(&[
        destination("fast", &fast.url("/"), "maxInFlight: 2"),
        destination("slow", &slow.url("/"), "maxInFlight: 1"),
    ]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    let n = 20;
    add_events(&mut conn, n).await;

    // The slow one needs about 20 * 500ms = 10s.
    fast.wait_until(LIMIT, |r| r.len() >= n).await;
    let slow_so_far = slow.received().len();
    assert!(
        slow_so_far <= n / 2,
        "fast destination done while slow had {slow_so_far} of {n}: it was not held back"
    );
    slow.wait_until(Duration::from_secs(30), |r| r.len() >= n)
        .await;
    wait_all_done(&mut conn, &["fast", "slow"], LIMIT).await;
    worker.stop().await;
}

/// Standard Webhooks verification, written from the specification and
/// independent of the worker's code: the secret is `whsec_` + base64 of the
/// key; the signed content is `{id}.{timestamp}.{body}`; the header holds
/// space-separated `v1,<base64 HMAC-SHA256>` signatures; the timestamp must
/// be within five minutes.
fn verify_standard_webhook(secret: &str, request: &Received) -> Result<(), String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("secret prefix")?)
        .map_err(|e| e.to_string())?;
    let id = request.header("webhook-id").ok_or("no webhook-id")?;
    let timestamp = request.header("webhook-timestamp").ok_or("no timestamp")?;
    let signatures = request.header("webhook-signature").ok_or("no signature")?;
    let sent: i64 = timestamp.parse().map_err(|_| "timestamp not a number")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - sent).abs() > 300 {
        return Err("timestamp outside the tolerance".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let matches = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected);
    if matches {
        Ok(())
    } else {
        Err(format!("no matching signature in {signatures:?}"))
    }
}

#[tokio::test]
async fn signatures_verify_with_an_independent_standard_webhooks_check() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, n| Answer::status(if n == 0 { 500 } else { 200 })).await;
    let secret = format!(
        "whsec_{}",
        STANDARD.encode(b"a test signing key of 32 bytes!!")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("signing")).unwrap();
    std::fs::write(dir.path().join("signing/key"), format!("{secret}\n")).unwrap();
    let routes = routes_yaml(&[destination(
        "a",
        &sink.url("/"),
        "signing: {secretRef: {name: signing, key: key}}",
    )]);
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    add_event(
        &mut conn,
        "application/json",
        br#"{"signed": "yes", "n": 1}"#,
    )
    .await;

    // A failed attempt and its retry: each is signed (afresh).
    let got = sink.wait_until(LIMIT, |r| r.len() >= 2).await;
    for request in &got {
        verify_standard_webhook(&secret, request).unwrap();
    }
    // A tampered body does not verify.
    let mut tampered = got[0].clone();
    tampered.body = bytes::Bytes::from_static(br#"{"signed": "no", "n": 1}"#);
    assert!(verify_standard_webhook(&secret, &tampered).is_err());
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    worker.stop().await;
}

#[tokio::test]
async fn the_stream_is_trimmed_to_empty_after_all_deliveries() {
    let redis = RedisServer::start();
    let steady = Sink::ok().await;
    // Every event fails once at this destination, so retry state is
    // written for each and must be gone at the end.
    let flaky = Sink::scripted(|_, n| Answer::status(if n == 0 { 502 } else { 204 })).await;
    let routes = routes_yaml(&[
        destination("steady", &steady.url("/"), ""),
        destination("flaky", &flaky.url("/"), ""),
    ]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    let n = 25;
    add_events(&mut conn, n).await;
    assert_eq!(xlen(&mut conn, &keys().events()).await, n as u64);

    steady.wait_until(LIMIT, |r| r.len() >= n).await;
    flaky.wait_until(LIMIT, |r| r.len() >= 2 * n).await;
    wait_all_done(&mut conn, &["steady", "flaky"], LIMIT).await;
    assert_eq!(hlen(&mut conn, &keys().retries("flaky")).await, 0);

    // The backlog gauge follows: zero for both once done.
    let metrics_url = format!("http://{}/metrics", worker.metrics_addr);
    wait_for(LIMIT, "backlog gauges at 0", || {
        let url = metrics_url.clone();
        async move {
            let text = http_get(&url).await;
            text.contains(r#"fanout_worker_backlog{route="test/orders",destination="flaky"} 0"#)
                && text.contains(
                    r#"fanout_worker_deliveries_total{route="test/orders",destination="flaky",outcome="retry"} 25"#,
                )
        }
    })
    .await;
    worker.stop().await;
}

/// A destination being added during a rollout: a newer worker has created
/// its group, this (older) worker is not configured with it, and must not
/// trim what that group has not read yet.
#[tokio::test]
async fn a_group_this_worker_does_not_know_holds_the_stream_until_it_has_read() {
    let redis = RedisServer::start();
    let sink = Sink::ok().await;
    let routes = routes_yaml(&[destination("a", &sink.url("/"), "")]);
    let dir = no_secrets();
    let mut conn = crate::common::redis(&redis.url()).await;
    let stream = keys().events();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("d:newer")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let n = 5;
    add_events(&mut conn, n).await;
    sink.wait_until(LIMIT, |r| r.len() >= n).await;
    wait_for(LIMIT, "a acknowledged everything", || {
        let mut conn = conn.clone();
        async move { pending(&mut conn, "a").await == 0 }
    })
    .await;
    // Three trim rounds later, nothing is trimmed: "newer" read nothing.
    tokio::time::sleep(3 * fanout_worker::trim::TRIM_EVERY).await;
    assert_eq!(xlen(&mut conn, &stream).await, n as u64);

    // The newer worker reads and acknowledges everything: trimmed to empty.
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("d:newer")
        .arg("w2")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), n);
    let _: i64 = redis::cmd("XACK")
        .arg(&stream)
        .arg("d:newer")
        .arg(&ids)
        .query_async(&mut conn)
        .await
        .unwrap();
    wait_for(LIMIT, "the stream trimmed to empty", || {
        let mut conn = conn.clone();
        let stream = stream.clone();
        async move { xlen(&mut conn, &stream).await == 0 }
    })
    .await;
    worker.stop().await;
}

/// A plain HTTP/1.1 GET on loopback, returning the body text.
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test]
async fn a_waiting_retry_is_not_reclaimed_by_another_worker() {
    let redis = RedisServer::start();
    // The first answer asks for a 10s wait, longer than the visibility
    // timeout (2 * 1s + 5s = 7s): only the refresh of held entries keeps a
    // second worker from taking the entry over meanwhile.
    let sink = Sink::scripted(|_, n| {
        if n == 0 {
            Answer::status(503).header("Retry-After", "10")
        } else {
            Answer::status(200)
        }
    })
    .await;
    let routes = routes_yaml(&[destination("a", &sink.url("/"), "timeout: 1s")]);
    let dir = no_secrets();
    let short = Duration::from_millis(100);
    let first = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", short)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    add_event(&mut conn, "application/json", b"{}").await;
    let got = sink.wait_until(LIMIT, |r| !r.is_empty()).await;
    let first_at = got[0].at;
    let second = Worker::start(config(&redis.url(), &routes, dir.path(), "w2", short)).await;

    // Before any reclaim could happen (idle < 7s) the first worker has
    // already reset the entry's idle time (every 7s / 3): without that it
    // would be idle for 5s here.
    tokio::time::sleep_until((first_at + Duration::from_secs(5)).into()).await;
    let held = pending_detail(&mut conn).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1, "w1");
    assert!(
        held[0].2 < 3000,
        "idle {}ms: held entry not refreshed",
        held[0].2
    );
    // Past the visibility timeout and two reclaim rounds of the second
    // worker, the entry still belongs to the first.
    tokio::time::sleep_until((first_at + Duration::from_secs(9)).into()).await;
    let held = pending_detail(&mut conn).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].1, "w1", "the waiting retry was reclaimed: {held:?}");

    wait_all_done(&mut conn, &["a"], LIMIT).await;
    let got = sink.received();
    assert_eq!(
        got.len(),
        2,
        "one failed attempt and one retry, no duplicate"
    );
    assert!(got[1].at - first_at >= Duration::from_secs(10));
    first.stop().await;
    second.stop().await;
}

/// XPENDING detail of destination `a`: (id, owner, idle ms, deliveries).
async fn pending_detail(conn: &mut fanout_api::RedisConnection) -> Vec<(String, String, u64, u64)> {
    redis::cmd("XPENDING")
        .arg(keys().events())
        .arg("d:a")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restart_honours_the_stored_retry_state() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, _| Answer::status(503).header("Retry-After", "2")).await;
    let routes = routes_yaml(&[format!(
        "{{name: a, url: \"{}\", timeout: 1s, retry: {{maxAttempts: 2, initialBackoff: 50ms, maxBackoff: 200ms}}}}",
        sink.url("/")
    )]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    add_event(&mut conn, "application/json", b"{}").await;
    let retries = keys().retries("a");
    wait_for(LIMIT, "retry state stored", || {
        let mut conn = conn.clone();
        let retries = retries.clone();
        async move { hlen(&mut conn, &retries).await == 1 }
    })
    .await;
    worker.stop().await;
    assert_eq!(
        pending(&mut conn, "a").await,
        1,
        "the waiting entry stays pending"
    );

    // Same consumer name: it resumes its own pending entry, waits until the
    // stored due time and counts on from the stored attempts.
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let dead = keys().dead_letters("a");
    wait_for(LIMIT, "a dead letter", || {
        let mut conn = conn.clone();
        let dead = dead.clone();
        async move { xlen(&mut conn, &dead).await == 1 }
    })
    .await;
    let got = sink.received();
    assert_eq!(got.len(), 2);
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(2),
        "retry came early"
    );
    assert_eq!(entries(&mut conn, &dead).await[0].1["attempts"], "2");
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    worker.stop().await;
}

#[tokio::test]
async fn reading_pauses_while_too_many_retries_wait() {
    let redis = RedisServer::start();
    // A destination that is down: every attempt asks for a 60s wait.
    let sink = Sink::scripted(|_, _| Answer::status(503).header("Retry-After", "60")).await;
    let routes = routes_yaml(&[destination("a", &sink.url("/"), "maxInFlight: 1")]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    add_events(&mut conn, 40).await;

    // maxInFlight 1 allows 10 entries waiting for a retry (11 held in all);
    // then the worker stops reading, and the rest stays unread in Redis, not
    // in memory.
    let retries = keys().retries("a");
    wait_for(LIMIT, "10 retries waiting", || {
        let mut conn = conn.clone();
        let retries = retries.clone();
        async move { hlen(&mut conn, &retries).await >= 10 }
    })
    .await;
    // Two more read cycles (1s each) must not take more entries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // At most maxInFlight + 10 * maxInFlight entries are held.
    let held = pending(&mut conn, "a").await;
    assert_eq!(held, 11, "entries held");
    assert!(
        sink.received().len() <= 11,
        "{} attempts",
        sink.received().len()
    );
    assert_eq!(
        xlen(&mut conn, &keys().events()).await,
        40,
        "nothing trimmed"
    );
    worker.stop().await;
    // What was held stays pending for the next run, with its retry state.
    assert_eq!(pending(&mut conn, "a").await, held);
    assert_eq!(hlen(&mut conn, &retries).await, held);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried_then_dead_lettered() {
    let redis = RedisServer::start();
    let stuck = Sink::scripted(|_, _| Answer::status(200).delayed(Duration::from_secs(3))).await;
    let closed = format!("http://127.0.0.1:{}/", fanout_testkit::free_port());
    let retry = "retry: {maxAttempts: 2, initialBackoff: 50ms, maxBackoff: 50ms}";
    let routes = routes_yaml(&[
        format!(
            "{{name: stuck, url: \"{}\", timeout: 300ms, {retry}}}",
            stuck.url("/")
        ),
        format!("{{name: closed, url: \"{closed}\", timeout: 1s, {retry}}}"),
    ]);
    let dir = no_secrets();
    let worker = Worker::start(config(&redis.url(), &routes, dir.path(), "w1", VISIBILITY)).await;
    let mut conn = crate::common::redis(&redis.url()).await;
    add_event(&mut conn, "application/json", b"{}").await;

    for (dest, reason) in [("stuck", "timed out"), ("closed", "error")] {
        let dead = keys().dead_letters(dest);
        wait_for(LIMIT, "a dead letter", || {
            let mut conn = conn.clone();
            let dead = dead.clone();
            async move { xlen(&mut conn, &dead).await == 1 }
        })
        .await;
        let letter = &entries(&mut conn, &dead).await[0].1;
        assert_eq!(letter["attempts"], "2", "{dest}: {letter:?}");
        assert_eq!(letter["status"], "", "{dest}: no answer, no status");
        assert!(
            letter["error"].starts_with("retries exhausted"),
            "{letter:?}"
        );
        assert!(letter["error"].contains(reason), "{dest}: {letter:?}");
    }
    assert_eq!(
        stuck.received().len(),
        2,
        "the timed-out attempt was retried once"
    );
    wait_all_done(&mut conn, &["stuck", "closed"], LIMIT).await;
    worker.stop().await;
}
