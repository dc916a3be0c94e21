//! TLS to Redis (`rediss://`), through the real `fanout-ingest` binary and
//! its flags: the server's certificate is verified against the CA file of
//! `--redis-ca-file`, so a trusted server stores events and one signed by
//! another CA is refused.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use fanout_testkit::{RedisServer, TestCertificates, free_port};

use crate::common::*;

/// The real binary serving [`ONE_ROUTE`] on `redis_url`, trusting `ca`.
struct Ingest {
    child: Child,
    base: String,
    _routes: tempfile::TempDir,
}

impl Ingest {
    async fn start(redis_url: &str, ca: &std::path::Path) -> Self {
        let routes = tempfile::tempdir().unwrap();
        let file = routes.path().join("routes.yaml");
        std::fs::write(&file, ONE_ROUTE).unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_fanout-ingest"))
            .arg("--routes")
            .arg(&file)
            .args(["--redis-url", redis_url, "--listen", &listen])
            .arg("--redis-ca-file")
            .arg(ca)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ingest = Self {
            child,
            base: format!("http://{listen}"),
            _routes: routes,
        };
        let client = reqwest::Client::new();
        wait_until(Duration::from_secs(20), || async {
            let healthz = client.get(format!("{}/healthz", ingest.base)).send().await;
            healthz.is_ok_and(|r| r.status() == 200)
        })
        .await;
        ingest
    }

    async fn post(&self, body: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/solo/v1/event", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn stored(redis: &RedisServer) -> usize {
    let mut conn = fanout_api::RedisTarget::new(&redis.url(), false)
        .unwrap()
        .connect(Duration::from_secs(2), Duration::from_secs(5));
    xlen(&mut conn, SOLO_STREAM).await
}

#[tokio::test]
async fn events_are_stored_over_tls_when_the_server_is_trusted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start_tls();
    let ingest = Ingest::start(&redis.tls_url(), redis.tls_ca()).await;
    assert_eq!(ingest.post("{\"over\":\"tls\"}").await, 202);
    assert_eq!(stored(&redis).await, 1);
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start_tls();
    let other = tempfile::tempdir().unwrap();
    let other_ca = TestCertificates::generate(other.path()).ca;
    let ingest = Ingest::start(&redis.tls_url(), &other_ca).await;
    assert_eq!(ingest.post("{\"over\":\"tls\"}").await, 503);
    assert_eq!(stored(&redis).await, 0);
}
