//! Every Kubernetes permission the operator uses, in one table.
//!
//! `deploy/rbac.yaml` is generated from [`REQUIRED_RULES`] (`fanout-operator
//! rbac`), the reconciler tests check that every request the operator makes
//! is covered by it, and the Helm chart's ClusterRole is compared with the same
//! rules, so the granted permissions are exactly the used ones.

use std::collections::BTreeSet;

use serde::Serialize;

/// Name of the ServiceAccount, ClusterRole and ClusterRoleBinding.
pub const NAME: &str = "fanout-operator";
/// Namespace the operator runs in, in `deploy/`.
pub const NAMESPACE: &str = "fanout-system";

/// One ClusterRole rule: the verbs allowed on resources of one API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource names (plural, with `/subresource` where needed).
    pub resources: &'static [&'static str],
    /// Verbs, sorted.
    pub verbs: &'static [&'static str],
}

/// What the operator does, resource by resource:
/// - FanoutRoutes: watched (list, watch; the startup check lists); status written with
///   server-side apply (patch on `fanoutroutes/status`).
/// - ConfigMaps, Services, Deployments: watched because they are owned, and
///   written with server-side apply (patch, plus create for new objects).
/// - Ingresses: as above, plus get and delete to remove an Ingress the route
///   no longer asks for.
/// - Events: recorded on routes (create, and patch for repeated events).
/// - Leases: leader election (get, create, update).
pub const REQUIRED_RULES: &[Rule] = &[
    Rule {
        group: "fanout.dev",
        resources: &["fanoutroutes"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "fanout.dev",
        resources: &["fanoutroutes/status"],
        verbs: &["patch"],
    },
    Rule {
        group: "",
        resources: &["configmaps", "services"],
        verbs: &["create", "list", "patch", "watch"],
    },
    Rule {
        group: "apps",
        resources: &["deployments"],
        verbs: &["create", "list", "patch", "watch"],
    },
    Rule {
        group: "networking.k8s.io",
        resources: &["ingresses"],
        verbs: &["create", "delete", "get", "list", "patch", "watch"],
    },
    Rule {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
    Rule {
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["create", "get", "update"],
    },
];

/// Every (group, resource, verb) the table grants.
pub fn permission_set() -> BTreeSet<(String, String, String)> {
    REQUIRED_RULES
        .iter()
        .flat_map(|rule| {
            rule.resources.iter().flat_map(move |resource| {
                rule.verbs
                    .iter()
                    .map(move |verb| (rule.group.into(), (*resource).into(), (*verb).into()))
            })
        })
        .collect()
}

/// Whether the table allows `verb` on `resource` of `group`.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    REQUIRED_RULES.iter().any(|rule| {
        rule.group == group && rule.resources.contains(&resource) && rule.verbs.contains(&verb)
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct YamlRule {
    api_groups: [&'static str; 1],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
}

fn yaml_rules() -> Vec<YamlRule> {
    REQUIRED_RULES
        .iter()
        .map(|rule| YamlRule {
            api_groups: [rule.group],
            resources: rule.resources,
            verbs: rule.verbs,
        })
        .collect()
}

/// Why the RBAC manifests could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the RBAC manifests as YAML")]
pub struct RbacError(#[from] serde_yaml::Error);

/// The ClusterRole `rules:` list alone, as YAML (for comparing a Helm chart's
/// ClusterRole with what the operator needs).
pub fn rules_yaml() -> Result<String, RbacError> {
    Ok(serde_yaml::to_string(&yaml_rules())?)
}

/// `deploy/rbac.yaml`: ServiceAccount, ClusterRole and ClusterRoleBinding.
pub fn manifests_yaml() -> Result<String, RbacError> {
    let service_account = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels()},
    });
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": NAME, "labels": labels()},
        "rules": serde_json::to_value(yaml_rules()).unwrap_or_default(),
    });
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": NAME, "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    });
    let mut out = String::from(
        "# Generated by `fanout-operator rbac` from operator/src/rbac.rs (REQUIRED_RULES).\n# Do not edit: regenerate with `cargo run -p fanout-operator -- rbac > deploy/rbac.yaml`.\n",
    );
    for (index, doc) in [service_account, role, binding].iter().enumerate() {
        if index > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(doc)?);
    }
    Ok(out)
}

fn labels() -> serde_json::Value {
    serde_json::json!({
        "app.kubernetes.io/name": "fanout",
        "app.kubernetes.io/component": "operator",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_sorted_and_rules_do_not_overlap() {
        let mut seen = BTreeSet::new();
        for rule in REQUIRED_RULES {
            let mut sorted = rule.verbs.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, rule.verbs, "verbs of {rule:?} must be sorted");
            for resource in rule.resources {
                assert!(
                    seen.insert((rule.group, *resource)),
                    "{resource} listed twice"
                );
            }
        }
        assert!(allows("apps", "deployments", "patch"));
        assert!(!allows("", "secrets", "get"));
    }
}
