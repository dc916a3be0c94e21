//! The real binary against an API server without the CRD: it must exit with
//! a message that says what is missing and how to install it.

use std::process::Command;

use axum::{Json, Router, http::StatusCode};

#[tokio::test]
async fn exits_with_a_clear_message_when_the_crd_is_not_installed() {
    // An API server that knows no FanoutRoutes: every request is 404.
    let app = Router::new().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            Json(
                serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                                    "message": "the server could not find the requested resource",
                                    "reason": "NotFound", "code": 404}),
            ),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://{addr}'}}}}]\n\
             users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u, namespace: fanout-system}}}}]\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_fanout-operator"))
            .args(["run", "--image", "img", "--listen", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_BACKTRACE", "0")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must fail: {stderr}");
    assert!(
        stderr.contains(
            "FanoutRoute CustomResourceDefinition (fanoutroutes.fanout.dev) is not installed"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("kubectl apply -f deploy/crd.yaml"),
        "{stderr}"
    );
}
