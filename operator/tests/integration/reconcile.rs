//! Reconciler scenarios against a mocked API server, one per expected call
//! sequence, with a real redis-server for the backlog.

use std::{sync::Arc, time::Duration};

use crate::common::{APPLY, ApiServer, mock};
use fanout_api::{FanoutRoute, connection::RedisTarget};
use fanout_operator::{
    config::{DataPlaneConfig, RedisUrlSource, Resources},
    metrics::Metrics,
    reconcile::{Context, error_policy, reconcile},
    stats::RedisStats,
};
use fanout_testkit::RedisServer;
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const NS: &str = "/api/v1/namespaces/shop";
const APPS: &str = "/apis/apps/v1/namespaces/shop";
const NET: &str = "/apis/networking.k8s.io/v1/namespaces/shop";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events?";
const ROUTE: &str = "/apis/fanout.dev/v1alpha1/namespaces/shop/fanoutroutes/orders";

fn route(fixture: &str) -> FanoutRoute {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn context(client: kube::Client, redis_url: &str) -> Arc<Context> {
    let data_plane = DataPlaneConfig {
        image: "ghcr.io/fanout-dev/fanout:0.1.0".into(),
        image_pull_policy: "IfNotPresent".into(),
        redis_url: RedisUrlSource::Value("redis://redis:6379".into()),
        redis_cluster: false,
        redis_ca_secret: None,
        default_ingress_class: None,
        resources: Resources::default(),
    };
    let stats = RedisStats::new(
        &RedisTarget::new(redis_url, false).unwrap(),
        Duration::from_secs(2),
    );
    Arc::new(Context::new(
        client,
        data_plane,
        stats,
        Arc::new(Metrics::default()),
        Duration::from_secs(30),
        Some("test".into()),
    ))
}

/// A Deployment as the API server returns it after apply, available or not.
fn with_status(mut applied: Value, available: bool) -> Value {
    let replicas = applied["spec"]["replicas"].clone();
    applied["status"] = if available {
        json!({"availableReplicas": replicas, "replicas": replicas,
               "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]})
    } else {
        json!({"replicas": replicas, "conditions": [{"type": "Available", "status": "False",
               "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."}]})
    };
    applied
}

/// The applies of a route's ConfigMap, Service and Deployments, answered as
/// the API server would; returns the applied bodies by name.
async fn expect_applies(server: &mut ApiServer, available: bool) -> Vec<Value> {
    let mut bodies = Vec::new();
    for (method, uri) in [
        (
            Method::PATCH,
            format!("{NS}/configmaps/orders-config{APPLY}"),
        ),
        (Method::PATCH, format!("{NS}/services/orders-ingest{APPLY}")),
    ] {
        let call = server.expect(method, &uri).await;
        bodies.push(call.body.clone());
        call.echo();
    }
    for name in ["orders-ingest", "orders-worker"] {
        let call = server
            .expect(Method::PATCH, &format!("{APPS}/deployments/{name}{APPLY}"))
            .await;
        bodies.push(call.body.clone());
        let answer = with_status(call.body.clone(), available);
        call.ok(&answer);
    }
    bodies
}

/// Answers a status patch as the API server does: the whole route with the
/// new status.
fn answer_status(call: crate::common::Call) {
    let mut answer = serde_json::to_value(route("minimal.yaml")).unwrap();
    answer["status"] = call.body["status"].clone();
    call.ok(&answer);
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// Runs one reconcile while `script` plays the API server; returns its
/// result after checking that no request is left over.
async fn scenario<F, Fut>(
    route: FanoutRoute,
    redis_url: &str,
    script: F,
) -> Result<Action, fanout_operator::reconcile::ReconcileError>
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ApiServer>,
{
    let (client, server) = mock();
    let ctx = context(client, redis_url);
    let task = tokio::spawn(reconcile(Arc::new(route), ctx));
    let server = script(server).await;
    let result = task.await.unwrap();
    server.assert_done().await;
    result
}

/// Runs the new-route scenario and returns the status it wrote.
async fn new_route_status(redis: &RedisServer) -> Value {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let action = scenario(
        route("minimal.yaml"),
        &redis.url(),
        |mut server| async move {
            let bodies = expect_applies(&mut server, true).await;
            assert_eq!(bodies[0]["kind"], "ConfigMap");
            assert_eq!(
                bodies[0]["metadata"]["ownerReferences"][0]["controller"],
                true
            );
            assert!(
                bodies[0]["data"]["route.yaml"]
                    .as_str()
                    .unwrap()
                    .contains("/orders")
            );
            assert_eq!(
                bodies[2]["spec"]["template"]["spec"]["containers"][0]["command"][0],
                "fanout-ingest"
            );
            // No Ingress asked: the operator checks that none of its own is left.
            server
                .expect(Method::GET, &format!("{NET}/ingresses/orders-ingest"))
                .await
                .fail(404, "NotFound");
            let event = server.expect(Method::POST, EVENTS).await;
            assert_eq!(event.body["reason"], "Created");
            assert_eq!(event.body["type"], "Normal");
            assert_eq!(event.body["regarding"]["name"], "orders");
            assert!(
                event.body["note"]
                    .as_str()
                    .unwrap()
                    .contains("orders-worker")
            );
            event.echo();
            let patch = server
                .expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}"))
                .await;
            assert_eq!(patch.body["apiVersion"], "fanout.dev/v1alpha1");
            assert_eq!(patch.body["kind"], "FanoutRoute");
            let status = patch.body["status"].clone();
            answer_status(patch);
            tx.send(status).unwrap();
            server
        },
    )
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    rx.await.unwrap()
}

#[tokio::test]
async fn new_route_applies_its_objects_records_an_event_and_writes_status() {
    let redis = RedisServer::start();
    let status = new_route_status(&redis).await;
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["ingestURL"], "http://orders-ingest.shop.svc/orders");
    assert_eq!(status["backlog"], 0);
    assert_eq!(
        status["destinations"],
        json!([{"name": "analytics", "backlog": 0, "deadLetters": 0}])
    );
    for (type_, value, reason) in [
        ("Ready", "True", "Available"),
        ("IngestAvailable", "True", "MinimumReplicasAvailable"),
        ("WorkersAvailable", "True", "MinimumReplicasAvailable"),
        ("Degraded", "False", "AsExpected"),
    ] {
        let c = condition(&status, type_);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some(value), Some(reason)),
            "{c}"
        );
        assert_eq!(c["observedGeneration"], 1);
        assert!(c["lastTransitionTime"].is_string());
    }
}

#[tokio::test]
async fn second_reconcile_of_an_unchanged_route_changes_nothing() {
    let redis = RedisServer::start();
    let status = new_route_status(&redis).await;
    let mut unchanged = route("minimal.yaml");
    unchanged.status = Some(serde_json::from_value(status).unwrap());
    let action = scenario(unchanged, &redis.url(), |mut server| async move {
        // The applies are sent again (a no-op on the server for unchanged
        // objects); no event, and no status write.
        expect_applies(&mut server, true).await;
        server
            .expect(Method::GET, &format!("{NET}/ingresses/orders-ingest"))
            .await
            .fail(404, "NotFound");
        server
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_route_that_stops_being_available_says_so_in_status_and_an_event() {
    let redis = RedisServer::start();
    let mut status = new_route_status(&redis).await;
    for c in status["conditions"].as_array_mut().unwrap() {
        c["lastTransitionTime"] = json!("2026-01-01T00:00:00Z");
    }
    let mut was_ready = route("minimal.yaml");
    was_ready.status = Some(serde_json::from_value(status.clone()).unwrap());
    scenario(was_ready, &redis.url(), |mut server| async move {
        expect_applies(&mut server, false).await;
        server
            .expect(Method::GET, &format!("{NET}/ingresses/orders-ingest"))
            .await
            .fail(404, "NotFound");
        let patch = server
            .expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}"))
            .await;
        let ready = condition(&patch.body["status"], "Ready").clone();
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("IngestUnavailable"))
        );
        assert_ne!(
            ready["lastTransitionTime"],
            condition(&status, "Ready")["lastTransitionTime"]
        );
        // Degraded did not change: its transition time stays.
        assert_eq!(
            condition(&patch.body["status"], "Degraded")["lastTransitionTime"],
            condition(&status, "Degraded")["lastTransitionTime"]
        );
        answer_status(patch);
        let event = server.expect(Method::POST, EVENTS).await;
        assert_eq!(
            (event.body["type"].as_str(), event.body["reason"].as_str()),
            (Some("Warning"), Some("Unavailable"))
        );
        assert!(
            event.body["note"]
                .as_str()
                .unwrap()
                .contains("0/1 pods available"),
            "{}",
            event.body
        );
        event.echo();
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_route_writes_ready_false_with_every_field_and_applies_nothing() {
    let redis = RedisServer::start();
    let mut invalid = route("minimal.yaml");
    invalid.spec.destinations[0].url = "ftp://analytics.example.com/".into();
    invalid
        .spec
        .destinations
        .push(invalid.spec.destinations[0].clone());
    invalid.spec.destinations[1].url = "https://ok.example.com/".into();
    let action = scenario(invalid, &redis.url(), |mut server| async move {
        let patch = server
            .expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}"))
            .await;
        let ready = condition(&patch.body["status"], "Ready").clone();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "InvalidSpec");
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains("spec.destinations[0].url"), "{message}");
        assert!(message.contains("spec.destinations[1].name"), "{message}");
        assert_eq!(patch.body["status"]["observedGeneration"], 1);
        answer_status(patch);
        let event = server.expect(Method::POST, EVENTS).await;
        assert_eq!(
            (event.body["type"].as_str(), event.body["reason"].as_str()),
            (Some("Warning"), Some("InvalidSpec"))
        );
        event.echo();
        server
    })
    .await
    .unwrap();
    // It waits for the user to change the route: no requeue, no hot loop.
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn invalid_route_already_reported_is_left_alone() {
    let redis = RedisServer::start();
    let mut invalid = route("minimal.yaml");
    invalid.spec.workers.replicas = 0;
    let reported = fanout_operator::status::invalid(
        &invalid,
        &fanout_api::validate_route(&invalid),
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    );
    invalid.status = Some(reported);
    let action = scenario(invalid, &redis.url(), |server| async move { server })
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn ingress_is_applied_when_asked_and_deleted_when_no_longer_asked() {
    let redis = RedisServer::start();
    let mut with_ingress = route("full.yaml");
    with_ingress.status = None;
    scenario(
        with_ingress.clone(),
        &redis.url(),
        |mut server| async move {
            expect_applies(&mut server, false).await;
            let ingress = server
                .expect(
                    Method::PATCH,
                    &format!("{NET}/ingresses/orders-ingest{APPLY}"),
                )
                .await;
            assert_eq!(
                ingress.body["spec"]["rules"][0]["http"]["paths"][0]["path"],
                "/orders"
            );
            ingress.echo();
            server.expect(Method::POST, EVENTS).await.echo();
            let patch = server
                .expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}"))
                .await;
            let status = &patch.body["status"];
            assert_eq!(condition(status, "Ready")["status"], "False");
            assert_eq!(condition(status, "Ready")["reason"], "IngestUnavailable");
            assert_eq!(condition(status, "IngestAvailable")["status"], "False");
            answer_status(patch);
            server
        },
    )
    .await
    .unwrap();

    let mut without = with_ingress.clone();
    without.spec.ingest.ingress = None;
    let owner = json!({"apiVersion": "fanout.dev/v1alpha1", "kind": "FanoutRoute", "name": "orders",
                       "uid": with_ingress.metadata.uid, "controller": true});
    scenario(without, &redis.url(), |mut server| async move {
        expect_applies(&mut server, true).await;
        server
            .expect(Method::GET, &format!("{NET}/ingresses/orders-ingest"))
            .await
            .ok(&json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                        "metadata": {"name": "orders-ingest", "namespace": "shop", "ownerReferences": [owner]}}));
        server
            .expect(Method::DELETE, &format!("{NET}/ingresses/orders-ingest?"))
            .await
            .ok(&json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}));
        let deleted = server.expect(Method::POST, EVENTS).await;
        assert_eq!(deleted.body["reason"], "IngressDeleted");
        deleted.echo();
        server.expect(Method::POST, EVENTS).await.echo(); // Created (first observed generation)
        answer_status(server.expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}")).await);
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_ingress_someone_else_controls_is_not_deleted() {
    let redis = RedisServer::start();
    let mut r = route("minimal.yaml");
    r.status = None;
    scenario(r, &redis.url(), |mut server| async move {
        expect_applies(&mut server, true).await;
        server
            .expect(Method::GET, &format!("{NET}/ingresses/orders-ingest"))
            .await
            .ok(
                &json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                        "metadata": {"name": "orders-ingest", "namespace": "shop"}}),
            );
        server.expect(Method::POST, EVENTS).await.echo();
        answer_status(
            server
                .expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}"))
                .await,
        );
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn failed_apply_records_a_warning_and_retries_with_growing_backoff() {
    let redis = RedisServer::start();
    let (client, mut server) = mock();
    let ctx = context(client, &redis.url());
    let r = Arc::new(route("minimal.yaml"));
    let task = tokio::spawn(reconcile(r.clone(), ctx.clone()));
    server
        .expect(
            Method::PATCH,
            &format!("{NS}/configmaps/orders-config{APPLY}"),
        )
        .await
        .fail(500, "InternalError");
    let event = server.expect(Method::POST, EVENTS).await;
    assert_eq!(
        (event.body["type"].as_str(), event.body["reason"].as_str()),
        (Some("Warning"), Some("ApplyFailed"))
    );
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("orders-config")
    );
    event.echo();
    let error = task.await.unwrap().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("apply ConfigMap shop/orders-config"),
        "{error}"
    );
    assert_eq!(
        error_policy(r.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(r.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(
        error_policy(r, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(20))
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("fanout_operator_reconcile_failures_total 1")
    );
    drop(ctx);
    server.assert_done().await;
}

#[tokio::test]
async fn backlog_and_dead_letters_come_from_redis_and_mark_the_route_degraded() {
    let redis = RedisServer::start();
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = fanout_api::RouteKeys::new("shop", "orders");
    for i in 0..5 {
        let _: String = redis::cmd("XADD")
            .arg(keys.events())
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let _: String = redis::cmd("XADD")
        .arg(keys.dead_letters("analytics"))
        .arg("*")
        .arg("x")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    let mut r = route("minimal.yaml");
    r.status = None;
    scenario(r, &redis.url(), |mut server| async move {
        expect_applies(&mut server, true).await;
        server
            .expect(Method::GET, &format!("{NET}/ingresses/orders-ingest"))
            .await
            .fail(404, "NotFound");
        server.expect(Method::POST, EVENTS).await.echo();
        let patch = server
            .expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}"))
            .await;
        let status = &patch.body["status"];
        assert_eq!(status["backlog"], 5);
        assert_eq!(
            status["destinations"],
            json!([{"name": "analytics", "backlog": 5, "deadLetters": 1}])
        );
        let degraded = condition(status, "Degraded");
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some("DeadLetters"))
        );
        // Dead letters do not make the route unready.
        assert_eq!(condition(status, "Ready")["status"], "True");
        answer_status(patch);
        server
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unreachable_redis_marks_the_route_degraded_and_retries_sooner() {
    // A port nothing listens on: start a server, note its URL, stop it.
    let url = RedisServer::start().url();
    let mut r = route("minimal.yaml");
    r.status = None;
    let action = scenario(r, &url, |mut server| async move {
        expect_applies(&mut server, true).await;
        server
            .expect(Method::GET, &format!("{NET}/ingresses/orders-ingest"))
            .await
            .fail(404, "NotFound");
        server.expect(Method::POST, EVENTS).await.echo();
        let patch = server
            .expect(Method::PATCH, &format!("{ROUTE}/status{APPLY}"))
            .await;
        let degraded = condition(&patch.body["status"], "Degraded").clone();
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some("RedisUnavailable"))
        );
        assert_eq!(condition(&patch.body["status"], "Ready")["status"], "True");
        answer_status(patch);
        server
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
}
