//! Startup check and watches, against a mocked API server.

use std::{sync::Arc, time::Duration};

use crate::common::mock;
use fanout_api::connection::RedisTarget;
use fanout_operator::{
    config::{DataPlaneConfig, RedisUrlSource, Resources},
    controller::{StartupError, check_crd},
    metrics::Metrics,
    reconcile::Context,
    stats::RedisStats,
};
use http::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_missing_crd_is_reported_with_how_to_install_it() {
    let (client, mut server) = mock();
    let check = tokio::spawn(check_crd(client, None));
    server
        .expect(
            Method::GET,
            "/apis/fanout.dev/v1alpha1/fanoutroutes?&limit=1",
        )
        .await
        .fail(404, "NotFound");
    let error = check.await.unwrap().unwrap_err();
    assert!(matches!(error, StartupError::CrdMissing));
    assert!(
        error
            .to_string()
            .contains("kubectl apply -f deploy/crd.yaml"),
        "{error}"
    );
    server.assert_done().await;
}

#[tokio::test]
async fn the_crd_check_lists_in_the_watched_namespace_only() {
    let (client, mut server) = mock();
    let check = tokio::spawn(async move { check_crd(client, Some("shop")).await });
    server
        .expect(Method::GET, "/apis/fanout.dev/v1alpha1/namespaces/shop/fanoutroutes?&limit=1")
        .await
        .ok(&json!({"apiVersion": "fanout.dev/v1alpha1", "kind": "FanoutRouteList", "metadata": {}, "items": []}));
    check.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_controller_lists_then_watches_routes_and_only_its_own_objects() {
    let (client, mut server) = mock();
    let ctx = Arc::new(Context::new(
        client,
        DataPlaneConfig {
            image: "img".into(),
            image_pull_policy: "IfNotPresent".into(),
            redis_url: RedisUrlSource::Value("redis://127.0.0.1:1".into()),
            redis_cluster: false,
            redis_ca_secret: None,
            default_ingress_class: None,
            resources: Resources::default(),
        },
        RedisStats::new(
            &RedisTarget::new("redis://127.0.0.1:1", false).unwrap(),
            Duration::from_secs(1),
        ),
        Arc::new(Metrics::default()),
        Duration::from_secs(30),
        None,
    ));
    let stop = CancellationToken::new();
    let run = tokio::spawn(fanout_operator::controller::run(ctx, None, stop.clone()));
    let mut listed = Vec::new();
    let mut held = Vec::new();
    // Five watchers (routes and four owned kinds): each lists first, then
    // watches from the list's resourceVersion.
    while listed.len() < 5 || held.len() < 5 {
        let (request, send) = server.next_raw().await;
        let uri = request.uri().to_string();
        assert_eq!(request.method(), Method::GET);
        assert!(
            !uri.contains("sendInitialEvents"),
            "no streaming lists: {uri}"
        );
        crate::common::check_rbac(request.method(), &uri);
        if uri.contains("watch=true") {
            held.push(send); // a watch that stays open
        } else {
            let path = uri.split('?').next().unwrap().to_owned();
            if !path.ends_with("/fanoutroutes") {
                assert!(
                    uri.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dfanout-operator"),
                    "owned objects are watched by label: {uri}"
                );
            }
            listed.push(path);
            let empty = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
            send.send_response(
                http::Response::builder()
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&empty).unwrap(),
                    ))
                    .unwrap(),
            );
        }
    }
    listed.sort();
    assert_eq!(
        listed,
        [
            "/api/v1/configmaps",
            "/api/v1/services",
            "/apis/apps/v1/deployments",
            "/apis/fanout.dev/v1alpha1/fanoutroutes",
            "/apis/networking.k8s.io/v1/ingresses",
        ]
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the controller stops when told")
        .unwrap();
}
