//! Sends the desired objects to the API server with server-side apply.
//!
//! One field manager (`fanout-operator`), forced, so the operator owns the
//! fields it sets and a change to the route always wins. Applying an
//! unchanged object is a no-op on the server. An Ingress the route no longer
//! asks for is deleted, but only one this route controls.

use fanout_api::FanoutRoute;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::Deployment, networking::v1::Ingress},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::desired::{DesiredObjects, MANAGER, names};

/// A request to the API server failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {namespace}/{name}: {error}")]
pub struct ApplyError {
    /// `apply`, `get` or `delete`.
    pub action: &'static str,
    /// Kind of the object.
    pub kind: &'static str,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// What the API server or the connection said (in the message, so logs
    /// and Events show it).
    pub error: kube::Error,
}

/// The Deployments as the API server returned them, status included.
#[derive(Clone, Debug)]
pub struct Applied {
    /// `<route>-ingest`.
    pub ingest: Deployment,
    /// `<route>-worker`.
    pub worker: Deployment,
}

/// Applies every object, the ConfigMap first so new pods find their config.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: &DesiredObjects,
) -> Result<Applied, ApplyError> {
    apply(client, namespace, "ConfigMap", &desired.config_map).await?;
    apply(client, namespace, "Service", &desired.service).await?;
    let ingest = apply(client, namespace, "Deployment", &desired.ingest).await?;
    let worker = apply(client, namespace, "Deployment", &desired.worker).await?;
    if let Some(ingress) = &desired.ingress {
        apply(client, namespace, "Ingress", ingress).await?;
    }
    Ok(Applied { ingest, worker })
}

async fn apply<K>(
    client: &Client,
    namespace: &str,
    kind: &'static str,
    object: &K,
) -> Result<K, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| ApplyError {
        action: "apply",
        kind,
        namespace: namespace.to_owned(),
        name,
        error: source,
    })
}

/// Deletes `<route>-ingest` Ingress when it exists and this route is its
/// controller; returns whether it deleted one.
pub async fn remove_stale_ingress(
    client: &Client,
    route: &FanoutRoute,
) -> Result<bool, ApplyError> {
    let namespace = route.namespace_or_default();
    let name = names::ingest(route.name());
    let error = |action, source| ApplyError {
        action,
        kind: "Ingress",
        namespace: namespace.to_owned(),
        name: name.clone(),
        error: source,
    };
    let api: Api<Ingress> = Api::namespaced(client.clone(), namespace);
    let Some(ingress) = api.get_opt(&name).await.map_err(|e| error("get", e))? else {
        return Ok(false);
    };
    let ours = ingress.owner_references().iter().any(|owner| {
        owner.controller == Some(true) && Some(&owner.uid) == route.metadata.uid.as_ref()
    });
    if !ours {
        return Ok(false);
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(e) => Err(error("delete", e)),
    }
}
