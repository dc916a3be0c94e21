//! The pure status computation: condition conventions and availability.

use fanout_api::{FanoutRoute, route::DestinationStatus};
use fanout_operator::status::{self, Observed};
use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use serde_json::json;

fn route() -> FanoutRoute {
    let path = format!("{}/tests/fixtures/minimal.yaml", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn deployment(available: Option<bool>, replicas: i32, available_replicas: i32) -> Deployment {
    let mut value = json!({"metadata": {"name": "d"}, "spec": {"replicas": replicas, "selector": {},
        "template": {}}, "status": {"availableReplicas": available_replicas}});
    if let Some(ok) = available {
        value["status"]["conditions"] = json!([{"type": "Available", "status": if ok {"True"} else {"False"},
            "message": "Deployment does not have minimum availability."}]);
    }
    serde_json::from_value(value).unwrap()
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn ready(
    status: &fanout_api::FanoutRouteStatus,
) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
}

#[test]
fn availability_follows_the_deployments_own_condition() {
    assert!(status::availability(&deployment(Some(true), 2, 2)).0);
    assert_eq!(
        status::availability(&deployment(Some(true), 2, 1)).1,
        "1/2 pods available"
    );
    let (ok, message) = status::availability(&deployment(Some(false), 2, 0));
    assert!(!ok);
    assert!(message.contains("minimum availability"), "{message}");
    // Just created: no status yet.
    assert!(!status::availability(&deployment(None, 1, 0)).0);
}

#[test]
fn transition_time_moves_only_when_a_condition_changes_status() {
    let stats = Ok(vec![DestinationStatus {
        name: "analytics".into(),
        backlog: 3,
        dead_letters: 0,
    }]);
    let unavailable = Observed {
        ingest: deployment(Some(false), 1, 0),
        worker: deployment(Some(true), 1, 1),
        stats: stats.clone(),
    };
    let mut r = route();
    let first = status::observed(&r, &unavailable, at(0));
    assert_eq!(ready(&first).status, "False");
    assert_eq!(ready(&first).reason, "IngestUnavailable");
    r.status = Some(first.clone());

    // Same facts later: identical status, nothing to write.
    let again = status::observed(&r, &unavailable, at(60));
    assert_eq!(again, first);
    assert!(!status::needs_update(r.status.as_ref(), &again));

    // Ingest becomes available: Ready and IngestAvailable move, the others keep their time.
    let available = Observed {
        ingest: deployment(Some(true), 1, 1),
        ..unavailable
    };
    let later = status::observed(&r, &available, at(120));
    assert!(status::needs_update(r.status.as_ref(), &later));
    for c in &later.conditions {
        let before = first
            .conditions
            .iter()
            .find(|b| b.type_ == c.type_)
            .unwrap();
        let moved = c.last_transition_time != before.last_transition_time;
        assert_eq!(moved, c.status != before.status, "{}", c.type_);
    }
    assert_eq!(ready(&later).status, "True");
    assert_eq!(later.backlog, Some(3));
}

#[test]
fn invalid_spec_keeps_the_rest_of_the_status_and_names_the_fields() {
    let mut r = route();
    let observed = Observed {
        ingest: deployment(Some(true), 1, 1),
        worker: deployment(Some(true), 1, 1),
        stats: Ok(vec![]),
    };
    r.status = Some(status::observed(&r, &observed, at(0)));
    r.spec.ingest.path = "no-slash".into();
    r.metadata.generation = Some(2);
    let problems = fanout_api::validate_route(&r);
    let invalid = status::invalid(&r, &problems, at(10));
    assert_eq!(invalid.observed_generation, Some(2));
    let c = ready(&invalid);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(c.message.contains("spec.ingest.path"), "{}", c.message);
    assert_eq!(c.observed_generation, Some(2));
    assert_eq!(
        invalid.ingest_url.as_deref(),
        Some("http://orders-ingest.shop.svc/orders")
    );
    assert_eq!(invalid.conditions.len(), 4, "the other conditions are kept");
}
