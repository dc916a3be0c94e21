//! The CRD's CEL rules evaluated client-side (kube's `cel` feature, the
//! Kubernetes CEL library): what `kubectl apply` refuses before the operator
//! ever sees it.

use fanout_api::FanoutRoute;
use kube::core::cel::validate_cel;

fn route() -> FanoutRoute {
    let path = format!("{}/tests/fixtures/full.yaml", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn refusal(route: &FanoutRoute) -> String {
    validate_cel(route)
        .expect_err("the API server would refuse this route")
        .to_string()
}

#[test]
fn a_valid_route_passes_every_rule() {
    validate_cel(&route()).unwrap();
}

#[test]
fn duplicate_destination_names_are_refused() {
    let mut r = route();
    r.spec.destinations[1].name = r.spec.destinations[0].name.clone();
    let message = refusal(&r);
    assert!(
        message.contains("destination names must be unique"),
        "{message}"
    );
}

#[test]
fn a_url_that_is_not_http_or_https_is_refused() {
    for url in ["ftp://example.com/x", "example.com/hook", "HTTP:/x"] {
        let mut r = route();
        r.spec.destinations[0].url = url.into();
        let message = refusal(&r);
        assert!(message.contains("http:// or https://"), "{url}: {message}");
    }
}

#[test]
fn zero_replicas_are_refused() {
    let mut r = route();
    r.spec.workers.replicas = 0;
    assert!(refusal(&r).contains("replicas must be at least 1"));
    let mut r = route();
    r.spec.ingest.replicas = 0;
    assert!(refusal(&r).contains("replicas must be at least 1"));
}
