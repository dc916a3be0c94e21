//! The pure `build()`: a route and the operator's configuration in, every
//! Kubernetes object the route needs out, with no client and no I/O.
//!
//! Everything about the shape of the data plane (names, labels, owner
//! references, the config hash, volumes, probes, security context) is decided
//! here, so it is unit-tested from YAML fixtures and the apply step only sends
//! what this module returns.

use std::collections::{BTreeMap, BTreeSet};

use fanout_api::{FanoutRoute, secrets::DEFAULT_SECRETS_DIR};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
            EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
            ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource,
            SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
        },
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
            IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{DataPlaneConfig, RedisUrlSource};

/// Field manager of every server-side apply, and the `managed-by` label.
pub const MANAGER: &str = "fanout-operator";
/// Pod template annotation holding the config hash.
pub const CONFIG_HASH_ANNOTATION: &str = "fanout.dev/config-hash";
/// Key of the route document in the ConfigMap.
pub const ROUTE_FILE_KEY: &str = "route.yaml";
/// Where the ConfigMap is mounted in data-plane pods.
pub const CONFIG_DIR: &str = "/etc/fanout";
/// Port the ingest container listens on.
pub const INGEST_PORT: i32 = 8080;
/// Port of the ingest Service.
pub const SERVICE_PORT: i32 = 80;
/// Port of the worker's health and metrics endpoint.
pub const WORKER_METRICS_PORT: i32 = 9090;
/// Shortest time a stopping worker gets to finish its deliveries, in
/// seconds (the worker's own default).
pub const WORKER_MIN_SHUTDOWN_GRACE: u64 = 25;
/// User and group the data plane runs as (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;
/// Where the Secret of `--redis-ca-secret` is mounted in data-plane pods.
pub const REDIS_CA_DIR: &str = "/var/run/fanout/redis-ca";
/// The key of that Secret holding the CA certificate (PEM), and its file name.
pub const REDIS_CA_KEY: &str = "ca.crt";
/// Volume name of the `--redis-ca-secret` Secret.
const REDIS_CA_VOLUME: &str = "redis-ca";

/// The objects one route needs, as the apply step sends them.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObjects {
    /// `<route>-config`: the route as a routes file.
    pub config_map: ConfigMap,
    /// `<route>-ingest` Deployment.
    pub ingest: Deployment,
    /// `<route>-ingest` Service, port 80 to the ingest pods.
    pub service: Service,
    /// `<route>-worker` Deployment.
    pub worker: Deployment,
    /// `<route>-ingest` Ingress, only when `spec.ingest.ingress` is set.
    pub ingress: Option<Ingress>,
    /// The hash put on both pod templates.
    pub config_hash: String,
}

/// Why the objects could not be built (only for objects that did not come
/// from the API server).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The route has no uid, so no owner reference can point to it.
    #[error("the route has no metadata.uid; it must come from the API server")]
    NoUid,
    /// The route could not be serialized into the ConfigMap.
    #[error("cannot serialize the route for its ConfigMap: {0}")]
    Serialize(#[from] serde_yaml::Error),
}

/// Names of the objects of a route.
pub mod names {
    /// The ConfigMap.
    pub fn config_map(route: &str) -> String {
        format!("{route}-config")
    }
    /// The ingest Deployment, Service and Ingress.
    pub fn ingest(route: &str) -> String {
        format!("{route}-ingest")
    }
    /// The worker Deployment.
    pub fn worker(route: &str) -> String {
        format!("{route}-worker")
    }
}

/// The in-cluster URL prefix of a route's ingest endpoint.
pub fn ingest_url(route: &FanoutRoute) -> String {
    format!(
        "http://{}.{}.svc{}",
        names::ingest(route.name()),
        route.namespace_or_default(),
        route.spec.ingest.path
    )
}

/// The route as the data plane reads it: a routes-file document with only
/// apiVersion, kind, metadata name and namespace, and spec.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteDocument<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: RouteDocumentMetadata<'a>,
    spec: &'a fanout_api::FanoutRouteSpec,
}

#[derive(Serialize)]
struct RouteDocumentMetadata<'a> {
    name: &'a str,
    namespace: &'a str,
}

/// The `route.yaml` document of the ConfigMap.
pub fn route_document(route: &FanoutRoute) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&RouteDocument {
        api_version: "fanout.dev/v1alpha1",
        kind: "FanoutRoute",
        metadata: RouteDocumentMetadata {
            name: route.name(),
            namespace: route.namespace_or_default(),
        },
        spec: &route.spec,
    })
}

/// Secrets the ingest pods mount (the auth tokens).
pub fn ingest_secrets(route: &FanoutRoute) -> BTreeSet<String> {
    route
        .spec
        .ingest
        .auth
        .iter()
        .map(|auth| auth.secret_ref.name.clone())
        .collect()
}

/// Secrets the worker pods mount (the signing keys).
pub fn worker_secrets(route: &FanoutRoute) -> BTreeSet<String> {
    route
        .spec
        .destinations
        .iter()
        .filter_map(|d| d.signing.as_ref().map(|s| s.secret_ref.name.clone()))
        .collect()
}

/// sha256 of the ConfigMap data and the referenced Secret names: it changes
/// when, and only when, what the pods are given changes.
pub fn config_hash(
    data: &BTreeMap<String, String>,
    ingest: &BTreeSet<String>,
    worker: &BTreeSet<String>,
) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update(format!("data:{}:{key}\n", key.len()));
        hasher.update(format!("{}:", value.len()));
        hasher.update(value);
    }
    for (kind, names) in [("ingest", ingest), ("worker", worker)] {
        for name in names {
            hasher.update(format!("\nsecret:{kind}:{name}"));
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Builds every object the route needs. The route must be valid
/// (`fanout_api::validate_route` returned nothing).
pub fn build(route: &FanoutRoute, config: &DataPlaneConfig) -> Result<DesiredObjects, BuildError> {
    let owner = owner_reference(route)?;
    let name = route.name();
    let namespace = route.namespace_or_default();

    let data = BTreeMap::from([(ROUTE_FILE_KEY.to_owned(), route_document(route)?)]);
    let ingest_secrets = ingest_secrets(route);
    let worker_secrets = worker_secrets(route);
    let config_hash = config_hash(&data, &ingest_secrets, &worker_secrets);
    let ingest_mounts = secret_mounts(&ingest_secrets, config);
    let worker_mounts = secret_mounts(&worker_secrets, config);

    let meta = |object_name: String, component: Option<&str>| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(name, component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };

    let config_map = ConfigMap {
        metadata: meta(names::config_map(name), None),
        data: Some(data),
        ..ConfigMap::default()
    };

    let ingest_container = Container {
        name: "ingest".into(),
        command: Some(vec!["fanout-ingest".into()]),
        args: Some(vec![
            "--routes".into(),
            format!("{CONFIG_DIR}/{ROUTE_FILE_KEY}"),
            "--listen".into(),
            format!("0.0.0.0:{INGEST_PORT}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: INGEST_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(redis_env(config)),
        liveness_probe: Some(probe("/healthz", "http", 10)),
        readiness_probe: Some(probe("/readyz", "http", 5)),
        volume_mounts: Some(mounts(&ingest_mounts)),
        ..container_defaults(config)
    };
    let ingest_pod = pod_spec(ingest_container, &ingest_mounts, name, 30);
    let ingest = deployment(
        meta(names::ingest(name), Some("ingest")),
        name,
        "ingest",
        route.spec.ingest.replicas,
        &config_hash,
        ingest_pod,
    );

    // A stopping worker finishes its in-flight deliveries: its shutdown
    // grace covers the longest delivery timeout, and the pod's termination
    // grace period covers that plus a margin.
    let longest_timeout = route
        .spec
        .destinations
        .iter()
        .map(|d| d.timeout.get().as_secs())
        .max()
        .unwrap_or(0);
    let shutdown_grace = longest_timeout
        .saturating_add(5)
        .max(WORKER_MIN_SHUTDOWN_GRACE);
    let grace = i64::try_from(shutdown_grace)
        .unwrap_or(i64::MAX / 2)
        .saturating_add(10);

    let worker_container = Container {
        name: "worker".into(),
        command: Some(vec!["fanout-worker".into()]),
        args: Some(vec![
            "--routes".into(),
            format!("{CONFIG_DIR}/{ROUTE_FILE_KEY}"),
            "--metrics-listen".into(),
            format!("0.0.0.0:{WORKER_METRICS_PORT}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: WORKER_METRICS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(
            redis_env(config)
                .into_iter()
                .chain([
                    EnvVar {
                        name: "FANOUT_SHUTDOWN_GRACE".into(),
                        value: Some(format!("{shutdown_grace}s")),
                        ..EnvVar::default()
                    },
                    EnvVar {
                        name: "FANOUT_CONSUMER".into(),
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.name".into(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..EnvVarSource::default()
                        }),
                        ..EnvVar::default()
                    },
                ])
                .collect(),
        ),
        liveness_probe: Some(probe("/healthz", "metrics", 10)),
        readiness_probe: Some(probe("/readyz", "metrics", 5)),
        volume_mounts: Some(mounts(&worker_mounts)),
        ..container_defaults(config)
    };
    let worker_pod = pod_spec(worker_container, &worker_mounts, name, grace);
    let worker = deployment(
        meta(names::worker(name), Some("worker")),
        name,
        "worker",
        route.spec.workers.replicas,
        &config_hash,
        worker_pod,
    );

    let service = Service {
        metadata: meta(names::ingest(name), Some("ingest")),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(name, "ingest")),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let ingress = route.spec.ingest.ingress.as_ref().map(|spec| Ingress {
        metadata: meta(names::ingest(name), Some("ingest")),
        spec: Some(IngressSpec {
            ingress_class_name: spec
                .class_name
                .clone()
                .or_else(|| config.default_ingress_class.clone()),
            rules: Some(vec![IngressRule {
                host: spec.host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(route.spec.ingest.path.clone()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names::ingest(name),
                                port: Some(ServiceBackendPort {
                                    number: Some(SERVICE_PORT),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: spec.host.clone().map(|host| vec![host]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    });

    Ok(DesiredObjects {
        config_map,
        ingest,
        service,
        worker,
        ingress,
        config_hash,
    })
}

/// The controller owner reference to the route.
fn owner_reference(route: &FanoutRoute) -> Result<OwnerReference, BuildError> {
    if route.metadata.uid.is_none() {
        return Err(BuildError::NoUid);
    }
    route.controller_owner_ref(&()).ok_or(BuildError::NoUid)
}

/// Labels of every object of the route; `component` for ingest and worker
/// objects.
pub fn labels(route: &str, component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "fanout".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), route.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGER.to_owned(),
        ),
    ]);
    if let Some(component) = component {
        labels.insert("app.kubernetes.io/component".into(), component.into());
    }
    labels
}

/// The (immutable) selector of a Deployment and its Service.
fn selector_labels(route: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "fanout".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), route.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
    ])
}

/// `FANOUT_REDIS_URL`, `FANOUT_REDIS_CLUSTER=true` only in cluster mode and
/// `FANOUT_REDIS_CA_FILE` only with a CA Secret (each left out otherwise, so
/// the pod templates of installs without them stay as they were).
fn redis_env(config: &DataPlaneConfig) -> Vec<EnvVar> {
    let mut env = vec![redis_url_env(&config.redis_url)];
    if config.redis_cluster {
        env.push(EnvVar {
            name: "FANOUT_REDIS_CLUSTER".into(),
            value: Some("true".into()),
            ..EnvVar::default()
        });
    }
    if config.redis_ca_secret.is_some() {
        env.push(EnvVar {
            name: "FANOUT_REDIS_CA_FILE".into(),
            value: Some(format!("{REDIS_CA_DIR}/{REDIS_CA_KEY}")),
            ..EnvVar::default()
        });
    }
    env
}

fn redis_url_env(source: &RedisUrlSource) -> EnvVar {
    match source {
        RedisUrlSource::Value(url) => EnvVar {
            name: "FANOUT_REDIS_URL".into(),
            value: Some(url.clone()),
            ..EnvVar::default()
        },
        RedisUrlSource::Secret(secret) => EnvVar {
            name: "FANOUT_REDIS_URL".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: "url".into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    }
}

fn probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn container_defaults(config: &DataPlaneConfig) -> Container {
    let r = &config.resources;
    Container {
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(r.cpu_request.clone())),
                ("memory".to_owned(), Quantity(r.memory_request.clone())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(r.cpu_limit.clone())),
                ("memory".to_owned(), Quantity(r.memory_limit.clone())),
            ])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// Volume name of the `index`-th mounted Secret (Secret names may be longer
/// than a volume name can be).
fn secret_volume_name(index: usize) -> String {
    format!("secret-{index}")
}

/// A Secret mounted read-only into a data-plane pod: one code path for the
/// route's own Secrets (auth tokens, signing keys: every key, under
/// [`DEFAULT_SECRETS_DIR`]) and the operator's Redis CA (one key).
struct SecretMount {
    volume: String,
    secret: String,
    mount_path: String,
    /// Only these keys (`None`: every key of the Secret).
    items: Option<Vec<KeyToPath>>,
}

/// The Secrets a pod mounts: the route's `secrets`, then the Redis CA of
/// `--redis-ca-secret` when set (last, so the others keep their volumes).
fn secret_mounts(secrets: &BTreeSet<String>, config: &DataPlaneConfig) -> Vec<SecretMount> {
    let mut mounts: Vec<SecretMount> = secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| SecretMount {
            volume: secret_volume_name(index),
            secret: secret.clone(),
            mount_path: format!("{DEFAULT_SECRETS_DIR}/{secret}"),
            items: None,
        })
        .collect();
    mounts.extend(config.redis_ca_secret.iter().map(|secret| SecretMount {
        volume: REDIS_CA_VOLUME.into(),
        secret: secret.clone(),
        mount_path: REDIS_CA_DIR.into(),
        items: Some(vec![KeyToPath {
            key: REDIS_CA_KEY.into(),
            path: REDIS_CA_KEY.into(),
            ..KeyToPath::default()
        }]),
    }));
    mounts
}

fn mounts(secrets: &[SecretMount]) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    mounts.extend(secrets.iter().map(|secret| VolumeMount {
        name: secret.volume.clone(),
        mount_path: secret.mount_path.clone(),
        read_only: Some(true),
        ..VolumeMount::default()
    }));
    mounts
}

fn pod_spec(
    container: Container,
    secrets: &[SecretMount],
    route: &str,
    grace_seconds: i64,
) -> PodSpec {
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(route),
                items: Some(vec![KeyToPath {
                    key: ROUTE_FILE_KEY.into(),
                    path: ROUTE_FILE_KEY.into(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    volumes.extend(secrets.iter().map(|secret| Volume {
        name: secret.volume.clone(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.secret.clone()),
            items: secret.items.clone(),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }));
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(grace_seconds),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn deployment(
    metadata: ObjectMeta,
    route: &str,
    component: &str,
    replicas: i32,
    config_hash: &str,
    pod: PodSpec,
) -> Deployment {
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(route, component)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(route, Some(component))),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
