//! The real `fanout-worker` binary as a separate process: killed with
//! SIGKILL mid-delivery another worker delivers everything; stopped with
//! SIGTERM it exits 0 and its restart (same consumer name) finishes its own
//! pending entries at once.

use std::{
    collections::HashSet,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::*;
use fanout_testkit::{Answer, RedisServer, Sink};

const LIMIT: Duration = Duration::from_secs(30);

/// Starts the binary on `routes` with consumer name `consumer`.
fn spawn_worker(redis_url: &str, routes: &Path, consumer: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fanout-worker"))
        .arg("--routes")
        .arg(routes)
        .args(["--redis-url", redis_url])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--consumer", consumer])
        .args(["--secrets-dir", "/nonexistent"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fanout-worker")
}

/// Distinct bodies the sink received.
fn distinct(sink: &Sink) -> HashSet<Vec<u8>> {
    sink.received().iter().map(|r| r.body.to_vec()).collect()
}

/// Waits for a child to exit, up to `limit`.
async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "worker did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_loses_nothing() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, _| Answer::status(200).delayed(Duration::from_millis(100))).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        routes_yaml(&[destination(
            "a",
            &sink.url("/"),
            "maxInFlight: 4, timeout: 1s",
        )]),
    )
    .unwrap();
    let mut conn = crate::common::redis(&redis.url()).await;
    let n = 60;
    let bodies: HashSet<Vec<u8>> = add_events(&mut conn, n).await.into_iter().collect();

    let mut first = spawn_worker(
        &redis.url(),
        &routes,
        "first",
        &["--visibility-timeout", "1s"],
    );
    sink.wait_until(LIMIT, |r| r.len() >= 10).await;
    first.kill().unwrap(); // SIGKILL: no chance to hand anything back
    first.wait().unwrap();
    let before = distinct(&sink).len();
    assert!(before < n, "the first worker finished before it was killed");

    // Another worker (another consumer name) reads what was never read and
    // reclaims what the dead one held once idle past the visibility timeout
    // (2 * 1s + 5s).
    let mut second = spawn_worker(
        &redis.url(),
        &routes,
        "second",
        &["--visibility-timeout", "1s"],
    );
    sink.wait_until(LIMIT, |r| {
        r.iter().map(|r| r.body.to_vec()).collect::<HashSet<_>>() == bodies
    })
    .await;
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    assert_eq!(
        distinct(&sink),
        bodies,
        "every event delivered at least once"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn sigterm_exits_zero_and_the_restart_finishes_its_own_pending_entries() {
    let redis = RedisServer::start();
    let sink = Sink::scripted(|_, _| Answer::status(200).delayed(Duration::from_millis(300))).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        routes_yaml(&[destination("a", &sink.url("/"), "maxInFlight: 4")]),
    )
    .unwrap();
    let mut conn = crate::common::redis(&redis.url()).await;
    let n = 24;
    let bodies: HashSet<Vec<u8>> = add_events(&mut conn, n).await.into_iter().collect();

    let mut worker = spawn_worker(&redis.url(), &routes, "pod-0", &[]);
    sink.wait_until(LIMIT, |r| r.len() >= 4).await;
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut worker, Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");
    assert!(
        distinct(&sink).len() < n,
        "it stopped before delivering everything"
    );

    // The restart uses the same consumer name, so it resumes its pending
    // entries at once rather than after the (60s) visibility timeout.
    let restarted_at = Instant::now();
    let mut restart = spawn_worker(&redis.url(), &routes, "pod-0", &[]);
    sink.wait_until(Duration::from_secs(20), |r| {
        r.iter().map(|r| r.body.to_vec()).collect::<HashSet<_>>() == bodies
    })
    .await;
    assert!(
        restarted_at.elapsed() < Duration::from_secs(20),
        "delivered well before the visibility timeout"
    );
    wait_all_done(&mut conn, &["a"], LIMIT).await;
    restart.kill().unwrap();
    restart.wait().unwrap();
}
