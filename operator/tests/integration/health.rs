//! The operator's health and metrics endpoint over real HTTP on port 0.

use std::sync::atomic::Ordering;

use fanout_operator::http::{Health, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn healthz_readyz_and_metrics() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, health.clone(), shutdown.clone()));

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "not ready before the startup checks"
    );
    health.ready.store(true, Ordering::Release);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    health.metrics.reconciles.inc();
    health.metrics.duration.observe(0.2);
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for metric in [
        "fanout_operator_reconciles_total 1",
        "fanout_operator_reconcile_failures_total 0",
        "fanout_operator_reconcile_duration_seconds_count 1",
        "fanout_operator_leader 0",
    ] {
        assert!(body.contains(metric), "{metric} in\n{body}");
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
