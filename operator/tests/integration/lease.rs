//! The Lease elector against a mocked API server, with tokio's paused clock
//! standing in for the passing of lease durations.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::common::{ApiServer, mock};
use fanout_operator::{config::LeaseConfig, lease::LeaseElector, metrics::Metrics};
use http::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/fanout-system/leases/fanout-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/fanout-system/leases?";

fn elector(client: kube::Client) -> Arc<LeaseElector> {
    let config = LeaseConfig::with_defaults("fanout-operator", Some("fanout-system".into()), "me");
    Arc::new(LeaseElector::new(client, config))
}

fn lease(holder: &str, renew_time: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "fanout-operator", "namespace": "fanout-system", "resourceVersion": resource_version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew_time,
                 "acquireTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 4}
    })
}

async fn attempt(
    server: &mut ApiServer,
    elector: &Arc<LeaseElector>,
    script: impl AsyncFnOnce(&mut ApiServer),
) -> bool {
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_acquire_or_renew().await.unwrap() });
    script(server).await;
    task.await.unwrap()
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none() {
    let (client, mut server) = mock();
    let elector = elector(client);
    let won = attempt(&mut server, &elector, async |server| {
        server
            .expect(Method::GET, LEASE)
            .await
            .fail(404, "NotFound");
        let create = server.expect(Method::POST, LEASES).await;
        assert_eq!(create.body["spec"]["holderIdentity"], "me");
        assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(create.body["spec"]["leaseTransitions"], 0);
        create.echo();
    })
    .await;
    assert!(won);
    // Someone else created it first: not an error, just not the leader.
    let won = attempt(&mut server, &elector, async |server| {
        server
            .expect(Method::GET, LEASE)
            .await
            .fail(404, "NotFound");
        server
            .expect(Method::POST, LEASES)
            .await
            .fail(409, "AlreadyExists");
    })
    .await;
    assert!(!won);
    drop(elector);
    server.assert_done().await;
}

#[tokio::test]
async fn renews_its_own_lease_with_a_replace_guarded_by_resource_version() {
    let (client, mut server) = mock();
    let elector = elector(client);
    let won = attempt(&mut server, &elector, async |server| {
        server.expect(Method::GET, LEASE).await.ok(&lease(
            "me",
            "2026-01-01T00:00:00.000000Z",
            "7",
        ));
        let put = server.expect(Method::PUT, &format!("{LEASE}?")).await;
        assert_eq!(put.body["metadata"]["resourceVersion"], "7");
        assert_eq!(put.body["spec"]["holderIdentity"], "me");
        assert_eq!(
            put.body["spec"]["leaseTransitions"], 4,
            "a renewal is no transition"
        );
        assert_ne!(put.body["spec"]["renewTime"], "2026-01-01T00:00:00.000000Z");
        put.echo();
    })
    .await;
    assert!(won);
    // A concurrent writer changed it first: the replace conflicts.
    let won = attempt(&mut server, &elector, async |server| {
        server.expect(Method::GET, LEASE).await.ok(&lease(
            "me",
            "2026-01-01T00:00:01.000000Z",
            "8",
        ));
        server
            .expect(Method::PUT, &format!("{LEASE}?"))
            .await
            .fail(409, "Conflict");
    })
    .await;
    assert!(!won);
}

#[tokio::test(start_paused = true)]
async fn takes_over_only_after_the_lease_went_unrenewed_for_its_duration() {
    let (client, mut server) = mock();
    let elector = elector(client);
    let held = lease("other", "2026-01-01T00:00:00.000000Z", "7");
    for _ in 0..2 {
        let won = attempt(&mut server, &elector, async |server| {
            server.expect(Method::GET, LEASE).await.ok(&held);
        })
        .await;
        assert!(!won);
        tokio::time::advance(Duration::from_secs(10)).await;
    }
    // 20 s without a change, more than the 15 s lease duration.
    let won = attempt(&mut server, &elector, async |server| {
        server.expect(Method::GET, LEASE).await.ok(&held);
        let put = server.expect(Method::PUT, &format!("{LEASE}?")).await;
        assert_eq!(put.body["metadata"]["resourceVersion"], "7");
        assert_eq!(put.body["spec"]["holderIdentity"], "me");
        assert_eq!(put.body["spec"]["leaseTransitions"], 5);
        put.echo();
    })
    .await;
    assert!(won);
}

#[tokio::test(start_paused = true)]
async fn a_renewed_lease_is_not_taken_over() {
    let (client, mut server) = mock();
    let elector = elector(client);
    for second in 0..4 {
        let renewed = lease("other", &format!("2026-01-01T00:00:0{second}.000000Z"), "7");
        let won = attempt(&mut server, &elector, async |server| {
            server.expect(Method::GET, LEASE).await.ok(&renewed);
        })
        .await;
        assert!(!won, "the holder keeps renewing");
        tokio::time::advance(Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn release_clears_the_holder_for_a_fast_handover() {
    let (client, mut server) = mock();
    let elector = elector(client);
    let e = elector.clone();
    let task = tokio::spawn(async move { e.release().await.unwrap() });
    server
        .expect(Method::GET, LEASE)
        .await
        .ok(&lease("me", "2026-01-01T00:00:00.000000Z", "9"));
    let put = server.expect(Method::PUT, &format!("{LEASE}?")).await;
    assert!(
        put.body["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null),
        "{}",
        put.body
    );
    assert_eq!(put.body["spec"]["leaseDurationSeconds"], 1);
    put.echo();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn work_runs_only_while_leading_and_stops_when_the_lease_is_lost() {
    let (client, mut server) = mock();
    let elector = elector(client);
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let run = {
        let (elector, metrics, shutdown) = (elector.clone(), metrics.clone(), shutdown.clone());
        let (started, stopped) = (started.clone(), stopped.clone());
        tokio::spawn(async move {
            elector
                .run(&metrics, shutdown, |lost| {
                    let (started, stopped) = (started.clone(), stopped.clone());
                    async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        lost.cancelled().await;
                        stopped.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await;
        })
    };
    // Acquire.
    server
        .expect(Method::GET, LEASE)
        .await
        .fail(404, "NotFound");
    server.expect(Method::POST, LEASES).await.echo();
    // Renew once.
    server
        .expect(Method::GET, LEASE)
        .await
        .ok(&lease("me", "2026-01-01T00:00:00.000000Z", "2"));
    server
        .expect(Method::PUT, &format!("{LEASE}?"))
        .await
        .echo();
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert!(metrics.encode().contains("fanout_operator_leader 1"));
    // Another replica holds it now (we were partitioned): stop working.
    server
        .expect(Method::GET, LEASE)
        .await
        .ok(&lease("other", "2026-01-01T00:01:00.000000Z", "3"));
    // Back to waiting: the next attempt finds it still held by the other one.
    server
        .expect(Method::GET, LEASE)
        .await
        .ok(&lease("other", "2026-01-01T00:01:00.000000Z", "3"));
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        1,
        "work stopped when the lease was lost"
    );
    assert!(metrics.encode().contains("fanout_operator_leader 0"));
    shutdown.cancel();
    run.await.unwrap();
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "work never ran without the lease"
    );
    drop(elector);
    server.assert_done().await;
}
