//! A mocked Kubernetes API server (tower-test) for reconciler and lease
//! tests: each test states the exact sequence of requests it expects and
//! answers them with fixtures. Every request is also checked against the
//! operator's RBAC table, so a call the ClusterRole does not grant fails the
//! test.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use serde_json::Value;
use tower_test::mock::{Handle, SendResponse};

/// The test side of the mocked API server.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A client talking to a fresh mocked API server.
pub fn mock() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer { handle })
}

/// One request the operator made.
pub struct Call {
    /// JSON body (Null when empty).
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    /// Answers with `status` and a JSON body.
    pub fn respond(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(bytes))
                .unwrap(),
        );
    }

    /// Answers 200 with `body`.
    pub fn ok(self, body: &Value) {
        self.respond(StatusCode::OK, body);
    }

    /// Answers 200 with the request's own body (what an apply returns).
    pub fn echo(self) {
        let body = self.body.clone();
        self.ok(&body);
    }

    /// Answers with a Kubernetes `Status` error.
    pub fn fail(self, code: u16, reason: &str) {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": format!("mock: {reason}"), "reason": reason, "code": code,
        });
        self.respond(StatusCode::from_u16(code).unwrap(), &body);
    }
}

impl ApiServer {
    /// Waits for the next request and checks its method and path (with
    /// query). Panics after 10 s without one.
    pub async fn expect(&mut self, method: Method, uri: &str) -> Call {
        let next = tokio::time::timeout(Duration::from_secs(10), self.handle.next_request());
        let (request, send) = next
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {uri}"))
            .unwrap_or_else(|| panic!("the client is gone; expected {method} {uri}"));
        let actual_method = request.method().clone();
        let actual_uri = request.uri().to_string();
        assert_eq!(
            (actual_method.as_str(), actual_uri.as_str()),
            (method.as_str(), uri),
            "unexpected request"
        );
        check_rbac(&actual_method, &actual_uri);
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call { body, send }
    }

    /// The next request as it came, unchecked (for requests whose order is
    /// not fixed).
    pub async fn next_raw(&mut self) -> (Request<Body>, SendResponse<Response<Body>>) {
        tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
            .await
            .expect("no request came")
            .expect("the client is gone")
    }

    /// Asserts the operator made no further request: every client clone
    /// must be dropped first, so this returns at once.
    pub async fn assert_done(mut self) {
        if let Some((request, _)) = self.handle.next_request().await {
            panic!(
                "unexpected extra request {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

/// (group, resource, verbs) of a request, from its path.
pub fn check_rbac(method: &Method, uri: &str) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path {path}"),
    };
    let verbs: &[&str] = match (method.as_str(), named) {
        ("GET", true) => &["get"],
        ("GET", false) if query.contains("watch=true") => &["watch"],
        ("GET", false) => &["list"],
        ("POST", false) => &["create"],
        // A server-side apply creates the object when it does not exist.
        ("PATCH", true) if query.contains("fieldManager") && !resource.contains('/') => {
            &["patch", "create"]
        }
        ("PATCH", true) => &["patch"],
        ("PUT", true) => &["update"],
        ("DELETE", true) => &["delete"],
        other => panic!("unexpected request {other:?} {uri}"),
    };
    for verb in verbs {
        assert!(
            fanout_operator::rbac::allows(group, &resource, verb),
            "{method} {uri} needs {verb} on {group}/{resource}, which operator/src/rbac.rs REQUIRED_RULES does not grant"
        );
    }
}

/// The query of every server-side apply the operator sends.
pub const APPLY: &str = "?&force=true&fieldManager=fanout-operator";
