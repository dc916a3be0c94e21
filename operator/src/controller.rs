//! Wires the reconciler into a kube-runtime `Controller`: routes watched in
//! one namespace or all, owned objects watched so their changes (a Deployment
//! becoming available) trigger a reconcile, plus the startup check that the
//! CRD is installed.

use std::sync::Arc;

use fanout_api::FanoutRoute;
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
    networking::v1::Ingress,
};
use kube::{
    Api, Client, Resource,
    api::ListParams,
    runtime::{Controller, watcher},
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    desired::MANAGER,
    reconcile::{Context, error_policy, reconcile},
};

/// The startup check failed.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The FanoutRoute CRD is not installed.
    #[error(
        "the FanoutRoute CustomResourceDefinition (fanoutroutes.fanout.dev) is not installed in this cluster: install it with `kubectl apply -f deploy/crd.yaml` (or `fanout-operator crd | kubectl apply -f -`)"
    )]
    CrdMissing,
    /// Listing routes failed otherwise (no access, no connection).
    #[error("cannot list FanoutRoutes")]
    List(#[source] kube::Error),
}

/// Routes in `namespace`, or in all namespaces.
pub fn scoped<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

/// Lists one route to prove the CRD is served and readable.
pub async fn check_crd(client: Client, namespace: Option<&str>) -> Result<(), StartupError> {
    let routes: Api<FanoutRoute> = scoped(client, namespace);
    match routes.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(StartupError::CrdMissing),
        Err(error) => Err(StartupError::List(error)),
    }
}

/// Only the objects this operator manages.
fn owned_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"))
}

fn owned<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned,
{
    scoped(client.clone(), namespace)
}

/// Runs the controller until `stop` is cancelled.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, stop: CancellationToken) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    // The default initial list strategy (list, then watch): no streaming
    // lists, so clusters before 1.32 work.
    Controller::new(
        scoped::<FanoutRoute>(client.clone(), ns),
        watcher::Config::default(),
    )
    .owns(owned::<ConfigMap>(&client, ns), owned_config())
    .owns(owned::<Service>(&client, ns), owned_config())
    .owns(owned::<Deployment>(&client, ns), owned_config())
    .owns(owned::<Ingress>(&client, ns), owned_config())
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((route, _)) => debug!(route = %route, "reconciled"),
            // Already logged by the reconciler, with the route.
            Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
            Err(error) => warn!(%error, "controller"),
        }
    })
    .await;
}
