//! Unit tests of the pure `build()`: YAML fixtures in, objects out, no client.

use std::collections::BTreeSet;

use fanout_api::FanoutRoute;
use fanout_operator::{
    config::{DataPlaneConfig, RedisUrlSource, Resources},
    desired::{self, CONFIG_HASH_ANNOTATION, DesiredObjects, build},
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::PodSpec};

fn route(fixture: &str) -> FanoutRoute {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn config() -> DataPlaneConfig {
    DataPlaneConfig {
        image: "ghcr.io/fanout-dev/fanout:0.1.0".into(),
        image_pull_policy: "IfNotPresent".into(),
        redis_url: RedisUrlSource::Value("redis://redis.fanout-system.svc:6379".into()),
        redis_cluster: false,
        redis_ca_secret: None,
        default_ingress_class: None,
        resources: Resources::default(),
    }
}

fn built(fixture: &str) -> DesiredObjects {
    build(&route(fixture), &config()).unwrap()
}

fn pod(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn hash_of(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn every_object_is_named_labelled_and_owned_by_the_route() {
    let objects = built("full.yaml");
    let metas = [
        (
            "ConfigMap",
            &objects.config_map.metadata,
            "orders-config",
            None,
        ),
        (
            "Deployment",
            &objects.ingest.metadata,
            "orders-ingest",
            Some("ingest"),
        ),
        (
            "Service",
            &objects.service.metadata,
            "orders-ingest",
            Some("ingest"),
        ),
        (
            "Deployment",
            &objects.worker.metadata,
            "orders-worker",
            Some("worker"),
        ),
        (
            "Ingress",
            &objects.ingress.as_ref().unwrap().metadata,
            "orders-ingest",
            Some("ingest"),
        ),
    ];
    for (kind, meta, name, component) in metas {
        assert_eq!(meta.name.as_deref(), Some(name), "{kind}");
        assert_eq!(meta.namespace.as_deref(), Some("shop"), "{kind} {name}");
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "fanout");
        assert_eq!(labels["app.kubernetes.io/instance"], "orders");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "fanout-operator");
        assert_eq!(
            labels
                .get("app.kubernetes.io/component")
                .map(String::as_str),
            component,
            "{kind} {name}"
        );
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1, "{kind} {name}");
        let owner = &owners[0];
        assert_eq!(owner.api_version, "fanout.dev/v1alpha1");
        assert_eq!(owner.kind, "FanoutRoute");
        assert_eq!(owner.name, "orders");
        assert_eq!(owner.uid, "6f1c1d2e-0000-4000-8000-000000000001");
        assert_eq!(
            owner.controller,
            Some(true),
            "{kind} {name} must be controlled by the route"
        );
    }
}

#[test]
fn the_config_map_holds_the_route_as_a_routes_file_and_no_secret() {
    let objects = built("full.yaml");
    let data = objects.config_map.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["route.yaml"]);
    let document = &data["route.yaml"];
    // Exactly what the data plane loads: it parses and validates as a routes file.
    let parsed = fanout_api::parse_routes(document).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].spec, route("full.yaml").spec);
    assert_eq!(parsed[0].namespace_or_default(), "shop");
    let value: serde_yaml::Value = serde_yaml::from_str(document).unwrap();
    let metadata = value["metadata"].as_mapping().unwrap();
    assert_eq!(metadata.len(), 2, "only name and namespace: {document}");
    // Secret references are names only; no secret value is ever in the ConfigMap.
    assert!(document.contains("orders-ingest-tokens"));
    assert!(objects.config_map.binary_data.is_none());
}

#[test]
fn ingest_deployment_runs_fanout_ingest_with_probes_and_its_secret_mounted() {
    let objects = built("full.yaml");
    let spec = objects.ingest.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = pod(&objects.ingest);
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/fanout-dev/fanout:0.1.0"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(c.command.as_ref().unwrap(), &["fanout-ingest"]);
    assert_eq!(
        c.args.as_ref().unwrap(),
        &[
            "--routes",
            "/etc/fanout/route.yaml",
            "--listen",
            "0.0.0.0:8080"
        ]
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
    let env = json(c.env.as_ref().unwrap());
    assert_eq!(
        env,
        serde_json::json!([{"name": "FANOUT_REDIS_URL", "value": "redis://redis.fanout-system.svc:6379"}])
    );
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    assert_eq!(probe_path(&c.liveness_probe), "/healthz");
    assert_eq!(probe_path(&c.readiness_probe), "/readyz");
    let resources = c.resources.as_ref().unwrap();
    assert!(resources.requests.as_ref().unwrap().contains_key("memory"));
    assert!(resources.limits.as_ref().unwrap().contains_key("memory"));

    let mounts = json(c.volume_mounts.as_ref().unwrap());
    assert!(mounts.as_array().unwrap().contains(&serde_json::json!(
        {"name": "config", "mountPath": "/etc/fanout", "readOnly": true}
    )));
    assert!(mounts.as_array().unwrap().contains(&serde_json::json!(
        {"name": "secret-0", "mountPath": "/var/run/fanout/secrets/orders-ingest-tokens", "readOnly": true}
    )));
    let volumes = json(pod.volumes.as_ref().unwrap());
    assert!(volumes.as_array().unwrap().contains(&serde_json::json!(
        {"name": "secret-0", "secret": {"secretName": "orders-ingest-tokens"}}
    )));
    // The signing secrets are the worker's business, not the ingest's.
    assert!(!volumes.to_string().contains("signing"));
}

#[test]
fn worker_deployment_mounts_each_signing_secret_once_and_names_its_consumer() {
    let objects = built("full.yaml");
    assert_eq!(objects.worker.spec.as_ref().unwrap().replicas, Some(3));
    let pod = pod(&objects.worker);
    let c = &pod.containers[0];
    assert_eq!(c.command.as_ref().unwrap(), &["fanout-worker"]);
    assert_eq!(
        c.args.as_ref().unwrap(),
        &[
            "--routes",
            "/etc/fanout/route.yaml",
            "--metrics-listen",
            "0.0.0.0:9090"
        ]
    );
    let env = json(c.env.as_ref().unwrap());
    assert_eq!(
        env[1],
        serde_json::json!({"name": "FANOUT_SHUTDOWN_GRACE", "value": "50s"})
    );
    assert_eq!(
        env[2],
        serde_json::json!({"name": "FANOUT_CONSUMER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
    let secret_mounts: BTreeSet<String> = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.mount_path.starts_with("/var/run/fanout/secrets/"))
        .map(|m| {
            assert_eq!(m.read_only, Some(true));
            m.mount_path.clone()
        })
        .collect();
    assert_eq!(
        secret_mounts,
        BTreeSet::from([
            "/var/run/fanout/secrets/analytics-signing".to_owned(),
            "/var/run/fanout/secrets/billing-signing".to_owned(),
        ])
    );
    assert!(
        !json(&pod.volumes)
            .to_string()
            .contains("orders-ingest-tokens")
    );
    // Longest destination timeout (45s) plus 5s to drain on SIGTERM, and
    // the pod's grace period 10s more.
    assert_eq!(pod.termination_grace_period_seconds, Some(60));
    let minimal = built("minimal.yaml");
    assert_eq!(
        self::pod(&minimal.worker).termination_grace_period_seconds,
        Some(35)
    );
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(json(&probe.port), serde_json::json!("metrics"));
}

#[test]
fn pods_run_as_non_root_with_a_read_only_root_filesystem() {
    let objects = built("minimal.yaml");
    for deployment in [&objects.ingest, &objects.worker] {
        let pod = pod(deployment);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
                &["ALL"]
            );
            assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        }
    }
}

#[test]
fn service_sends_port_80_to_the_ingest_pods() {
    let objects = built("minimal.yaml");
    let spec = objects.service.spec.as_ref().unwrap();
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.port, 80);
    assert_eq!(json(&port.target_port), serde_json::json!("http"));
    let selector = spec.selector.as_ref().unwrap();
    let template_labels = objects
        .ingest
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    for (key, value) in selector {
        assert_eq!(
            template_labels.get(key),
            Some(value),
            "selector {key} must match the ingest pods"
        );
    }
    assert_eq!(selector["app.kubernetes.io/component"], "ingest");
}

#[test]
fn ingress_exists_only_when_asked_and_routes_the_path_to_the_service() {
    assert!(built("minimal.yaml").ingress.is_none());
    let ingress = built("full.yaml").ingress.unwrap();
    assert_eq!(
        json(&ingress.spec),
        serde_json::json!({
            "ingressClassName": "nginx",
            "rules": [{
                "host": "events.example.com",
                "http": {"paths": [{
                    "path": "/orders",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": "orders-ingest", "port": {"number": 80}}}
                }]}
            }],
            "tls": [{"hosts": ["events.example.com"], "secretName": "events-tls"}]
        })
    );
    // The operator's default class applies when the route names none.
    let mut r = route("full.yaml");
    r.spec.ingest.ingress.as_mut().unwrap().class_name = None;
    let mut c = config();
    c.default_ingress_class = Some("traefik".into());
    let spec = build(&r, &c).unwrap().ingress.unwrap().spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("traefik"));
}

/// One edit of a route.
type Change = Box<dyn Fn(&mut FanoutRoute)>;

#[test]
fn config_hash_changes_when_and_only_when_the_spec_changes() {
    let base = built("full.yaml");
    assert_eq!(hash_of(&base.ingest), base.config_hash);
    assert_eq!(hash_of(&base.worker), base.config_hash);

    // Metadata and status changes do not roll pods.
    let mut same = route("full.yaml");
    same.metadata.resource_version = Some("9999".into());
    same.metadata.generation = Some(7);
    same.metadata.labels = None;
    same.metadata.annotations = Some([("note".to_owned(), "x".to_owned())].into());
    same.status = Some(fanout_api::FanoutRouteStatus {
        backlog: Some(12),
        ..Default::default()
    });
    assert_eq!(
        build(&same, &config()).unwrap().config_hash,
        base.config_hash
    );
    assert_eq!(
        build(&same, &config()).unwrap(),
        base,
        "the same spec builds the same objects"
    );

    // Any spec change does.
    let changes: Vec<(&str, Change)> = vec![
        ("path", Box::new(|r| r.spec.ingest.path = "/orders2".into())),
        (
            "maxBatchEvents",
            Box::new(|r| r.spec.ingest.max_batch_events = 10),
        ),
        (
            "url",
            Box::new(|r| r.spec.destinations[0].url = "https://other.example.com/".into()),
        ),
        (
            "header",
            Box::new(|r| {
                r.spec.destinations[0]
                    .headers
                    .insert("X-New".into(), "1".into());
            }),
        ),
        (
            "signing secret",
            Box::new(|r| {
                r.spec.destinations[1]
                    .signing
                    .as_mut()
                    .unwrap()
                    .secret_ref
                    .name = "rotated".into();
            }),
        ),
        ("auth secret", Box::new(|r| r.spec.ingest.auth = None)),
    ];
    let mut seen = BTreeSet::from([base.config_hash.clone()]);
    for (what, change) in changes {
        let mut r = route("full.yaml");
        change(&mut r);
        let hash = build(&r, &config()).unwrap().config_hash;
        assert!(
            seen.insert(hash),
            "changing {what} must change the config hash"
        );
    }
}

#[test]
fn redis_url_can_come_from_a_secret_instead_of_a_value() {
    let mut c = config();
    c.redis_url = RedisUrlSource::Secret("fanout-redis".into());
    let objects = build(&route("minimal.yaml"), &c).unwrap();
    for deployment in [&objects.ingest, &objects.worker] {
        let env = json(&pod(deployment).containers[0].env);
        assert_eq!(
            env[0],
            serde_json::json!({"name": "FANOUT_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "fanout-redis", "key": "url", "optional": false}}})
        );
        assert!(!env.to_string().contains("redis://"));
    }
}

fn env_names(deployment: &Deployment) -> Vec<String> {
    pod(deployment).containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect()
}

#[test]
fn redis_cluster_mode_is_passed_to_the_data_plane_only_when_on() {
    let single = build(&route("full.yaml"), &config()).unwrap();
    for deployment in [&single.ingest, &single.worker] {
        assert!(
            !env_names(deployment).contains(&"FANOUT_REDIS_CLUSTER".to_owned()),
            "single-server pods must not get FANOUT_REDIS_CLUSTER (their templates would change)"
        );
    }

    let mut c = config();
    c.redis_cluster = true;
    let cluster = build(&route("full.yaml"), &c).unwrap();
    for deployment in [&cluster.ingest, &cluster.worker] {
        let env = json(&pod(deployment).containers[0].env);
        let found: Vec<_> = env
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "FANOUT_REDIS_CLUSTER")
            .collect();
        assert_eq!(
            found,
            [&serde_json::json!({"name": "FANOUT_REDIS_CLUSTER", "value": "true"})]
        );
    }
    // Only the env differs: the ConfigMap and the config hash stay the same.
    assert_eq!(cluster.config_map, single.config_map);
    assert_eq!(cluster.config_hash, single.config_hash);
    let mut without = cluster.worker.clone();
    pod_mut(&mut without).containers[0]
        .env
        .as_mut()
        .unwrap()
        .retain(|e| e.name != "FANOUT_REDIS_CLUSTER");
    assert_eq!(without, single.worker);
}

#[test]
fn a_redis_ca_secret_is_mounted_read_only_with_its_env_in_every_pod_only_when_set() {
    // full.yaml: the ingest pods mount the auth Secret, the workers two
    // signing Secrets; the CA comes after them, whatever their number.
    let without = build(&route("full.yaml"), &config()).unwrap();
    for deployment in [&without.ingest, &without.worker] {
        let pod = json(pod(deployment));
        assert!(
            !pod.to_string().contains("redis-ca") && !pod.to_string().contains("CA_FILE"),
            "without --redis-ca-secret no CA volume, mount or env: {pod}"
        );
    }

    let mut c = config();
    c.redis_url = RedisUrlSource::Value("rediss://redis.data.svc:6380".into());
    c.redis_ca_secret = Some("fanout-redis-ca".into());
    let with = build(&route("full.yaml"), &c).unwrap();
    for (deployment, route_secrets) in [(&with.ingest, 1), (&with.worker, 2)] {
        let pod = pod(deployment);
        let volumes = json(pod.volumes.as_ref().unwrap());
        let ca_volumes: Vec<_> = volumes
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["secret"]["secretName"] == "fanout-redis-ca")
            .collect();
        assert_eq!(
            ca_volumes,
            [&serde_json::json!({"name": "redis-ca", "secret": {
                "secretName": "fanout-redis-ca",
                "items": [{"key": "ca.crt", "path": "ca.crt"}]
            }})]
        );
        let c = &pod.containers[0];
        let mounts = json(c.volume_mounts.as_ref().unwrap());
        assert!(
            mounts.as_array().unwrap().contains(&serde_json::json!(
                {"name": "redis-ca", "mountPath": "/var/run/fanout/redis-ca", "readOnly": true}
            )),
            "{mounts}"
        );
        // The route's own Secrets keep their volumes and mounts.
        let secret_volumes = volumes
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["name"].as_str().unwrap().starts_with("secret-"))
            .count();
        assert_eq!(secret_volumes, route_secrets);
        let env = json(c.env.as_ref().unwrap());
        let ca_env: Vec<_> = env
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "FANOUT_REDIS_CA_FILE")
            .collect();
        assert_eq!(
            ca_env,
            [
                &serde_json::json!({"name": "FANOUT_REDIS_CA_FILE", "value": "/var/run/fanout/redis-ca/ca.crt"})
            ]
        );
    }

    // A Secret mount, not config: the ConfigMap and the hash are unchanged,
    // and removing the CA volume, mount and env gives the pods without it.
    assert_eq!(with.config_map, without.config_map);
    assert_eq!(with.config_hash, without.config_hash);
    let mut c = config();
    c.redis_url = RedisUrlSource::Value("rediss://redis.data.svc:6380".into());
    let tls_without_ca = build(&route("full.yaml"), &c).unwrap();
    for (with, without) in [
        (&with.ingest, &tls_without_ca.ingest),
        (&with.worker, &tls_without_ca.worker),
    ] {
        let mut stripped = with.clone();
        let pod = pod_mut(&mut stripped);
        pod.volumes
            .as_mut()
            .unwrap()
            .retain(|v| v.name != "redis-ca");
        let container = &mut pod.containers[0];
        container
            .volume_mounts
            .as_mut()
            .unwrap()
            .retain(|m| m.name != "redis-ca");
        container
            .env
            .as_mut()
            .unwrap()
            .retain(|e| e.name != "FANOUT_REDIS_CA_FILE");
        assert_eq!(&stripped, without);
    }
}

fn pod_mut(deployment: &mut Deployment) -> &mut PodSpec {
    deployment
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
}

#[test]
fn a_route_without_uid_cannot_be_owned() {
    let mut r = route("minimal.yaml");
    r.metadata.uid = None;
    assert!(matches!(
        build(&r, &config()),
        Err(desired::BuildError::NoUid)
    ));
    assert_eq!(
        desired::ingest_url(&r),
        "http://orders-ingest.shop.svc/orders"
    );
}
