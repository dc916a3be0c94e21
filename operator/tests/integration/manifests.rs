//! The committed manifests in `deploy/` against what the code generates and
//! uses: CRD drift, the CRD's printer columns and CEL rules, RBAC drift and
//! the exact permission set, the example route, the operator Deployment.

use std::collections::BTreeSet;

use fanout_operator::{crd, rbac};
use serde_json::Value;

fn deploy(file: &str) -> String {
    let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn deploy_crd_yaml_is_the_output_of_fanout_operator_crd() {
    let generated = crd::crd_yaml().unwrap();
    assert!(
        deploy("crd.yaml") == generated,
        "deploy/crd.yaml differs from `fanout-operator crd`; regenerate it with:\n  cargo run -p fanout-operator -- crd > deploy/crd.yaml"
    );
}

#[test]
fn deploy_rbac_yaml_is_the_output_of_fanout_operator_rbac() {
    let generated = rbac::manifests_yaml().unwrap();
    assert!(
        deploy("rbac.yaml") == generated,
        "deploy/rbac.yaml differs from `fanout-operator rbac`; regenerate it with:\n  cargo run -p fanout-operator -- rbac > deploy/rbac.yaml"
    );
}

#[test]
fn cluster_role_grants_exactly_the_required_rules() {
    let docs = documents(&deploy("rbac.yaml"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let s = |v: &Value| v.as_str().unwrap().to_owned();
                    granted.insert((s(group), s(resource), s(verb)));
                }
            }
        }
    }
    assert_eq!(granted, rbac::permission_set());
    assert!(
        !granted.iter().any(|(_, _, verb)| verb == "*"),
        "no wildcards"
    );
    assert!(
        !granted.iter().any(|(_, resource, _)| resource == "secrets"),
        "the operator never reads secrets"
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "fanout-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "fanout-system");
    // `fanout-operator rbac --rules` prints the same rules, for the chart.
    let rules: Value = serde_yaml::from_str(&rbac::rules_yaml().unwrap()).unwrap();
    assert_eq!(rules, role["rules"]);
}

fn find_rules(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(rules.iter().map(|r| r["rule"].as_str().unwrap().to_owned()));
            }
            map.values().for_each(|v| find_rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| find_rules(v, out)),
        _ => {}
    }
}

#[test]
fn crd_has_printer_columns_short_name_status_and_cel_rules() {
    let crd: Value = serde_yaml::from_str(&crd::crd_yaml().unwrap()).unwrap();
    assert_eq!(crd["metadata"]["name"], "fanoutroutes.fanout.dev");
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["fr"])
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(
        version["subresources"]["status"].is_object(),
        "status subresource"
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for wanted in ["Ready", "Path", "Destinations", "Backlog", "Age"] {
        assert!(
            columns.contains(&wanted),
            "printer column {wanted} in {columns:?}"
        );
    }
    let schema = &version["schema"]["openAPIV3Schema"];
    let spec = &schema["properties"]["spec"]["properties"];
    let destinations = &spec["destinations"];
    assert_eq!(
        destinations["maxItems"], 32,
        "lists are bounded for the CEL cost limit"
    );
    assert_eq!(destinations["items"]["properties"]["name"]["maxLength"], 63);
    assert_eq!(
        destinations["items"]["properties"]["url"]["maxLength"],
        2048
    );
    assert_eq!(spec["ingest"]["properties"]["replicas"]["minimum"], 1.0);
    let mut rules = Vec::new();
    find_rules(schema, &mut rules);
    for wanted in [
        "self.all(d, self.exists_one(e, e.name == d.name))",
        "self.matches('^https?://')",
        "self >= 1",
    ] {
        assert!(
            rules.iter().any(|r| r == wanted),
            "CEL rule {wanted} in {rules:?}"
        );
    }
    // Field descriptions are there for `kubectl explain`.
    assert!(
        spec["ingest"]["properties"]["path"]["description"]
            .as_str()
            .unwrap()
            .contains("/v1/event")
    );
}

#[test]
fn the_example_route_is_a_valid_route() {
    let routes = fanout_api::parse_routes(&deploy("examples/route.yaml")).unwrap();
    assert_eq!(routes.len(), 1);
    let route = &routes[0];
    assert_eq!(
        (route.namespace_or_default(), route.name()),
        ("shop", "orders")
    );
    assert!(route.spec.ingest.ingress.is_some());
}

#[test]
fn operator_deployment_uses_the_rbac_service_account_and_passes_the_data_plane_settings() {
    let namespace = &documents(&deploy("namespace.yaml"))[0];
    assert_eq!(namespace["kind"], "Namespace");
    assert_eq!(namespace["metadata"]["name"], rbac::NAMESPACE);
    let docs = documents(&deploy("operator.yaml"));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["metadata"]["namespace"], rbac::NAMESPACE);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], rbac::NAME);
    let env: Vec<&str> = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "FANOUT_IMAGE",
        "FANOUT_REDIS_URL",
        "POD_NAME",
        "POD_NAMESPACE",
    ] {
        assert!(env.contains(&wanted), "{wanted} in {env:?}");
    }
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
}
