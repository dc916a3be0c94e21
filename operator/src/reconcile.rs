//! One reconcile of one route: validate, build, apply, status.
//!
//! The steps live in their own modules; this one sequences them, records
//! Kubernetes Events for what was done or failed, and decides when the route
//! is looked at again: an invalid route waits for a change, a valid one is
//! refreshed every `refresh_interval` (its backlog), an error is retried with
//! a per-route exponential backoff.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fanout_api::{FanoutRoute, FanoutRouteStatus, validate_route};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
    },
};
use tracing::{info, warn};

use crate::{
    apply::{self, ApplyError},
    config::DataPlaneConfig,
    desired::{self, BuildError, MANAGER},
    metrics::Metrics,
    stats::RedisStats,
    status,
};

/// First retry delay after a failed reconcile.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay after repeated failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// What the data plane gets.
    pub data_plane: DataPlaneConfig,
    /// Backlog reader.
    pub stats: RedisStats,
    /// Publishes Events on routes.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// How often a valid route is looked at again.
    pub refresh_interval: Duration,
    /// Consecutive failed reconciles per route (`namespace/name`).
    failures: Mutex<HashMap<String, u32>>,
    /// Consecutive failed Redis reads per route.
    redis_failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context; `recorder` publishes as `fanout-operator`.
    pub fn new(
        client: Client,
        data_plane: DataPlaneConfig,
        stats: RedisStats,
        metrics: Arc<Metrics>,
        refresh_interval: Duration,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: MANAGER.into(),
                instance,
            },
        );
        Self {
            client,
            data_plane,
            stats,
            recorder,
            metrics,
            refresh_interval,
            failures: Mutex::default(),
            redis_failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn redis_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.redis_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a reconcile failed; the controller retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The desired objects could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Applying or deleting an object failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Writing the status failed.
    #[error("patch status of FanoutRoute {namespace}/{name}: {error}")]
    Status {
        /// Namespace of the route.
        namespace: String,
        /// Name of the route.
        name: String,
        /// What the API server said.
        error: kube::Error,
    },
}

/// Delay before retry number `failures` (1 for the first failure): 5 s,
/// doubling, at most 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

/// The controller's reconcile function.
pub async fn reconcile(
    route: Arc<FanoutRoute>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_route(&route, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let key = key(&route);
    match &result {
        Ok(_) => {
            ctx.failures().remove(&key);
        }
        Err(error) => {
            ctx.metrics.failures.inc();
            warn!(route = %key, %error, "reconcile failed");
        }
    }
    result
}

/// The controller's error policy: retry the route with exponential backoff.
pub fn error_policy(route: Arc<FanoutRoute>, _error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures();
    let count = failures.entry(key(&route)).or_insert(0);
    *count = count.saturating_add(1);
    Action::requeue(backoff(*count))
}

fn key(route: &FanoutRoute) -> String {
    format!("{}/{}", route.namespace_or_default(), route.name_any())
}

/// Now, to the second: what a `metav1.Time` can hold.
fn now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

async fn reconcile_route(route: &FanoutRoute, ctx: &Context) -> Result<Action, ReconcileError> {
    let problems = validate_route(route);
    if !problems.is_empty() {
        let status = status::invalid(route, &problems, now());
        if status::needs_update(route.status.as_ref(), &status) {
            let message = status
                .conditions
                .iter()
                .find(|c| c.type_ == status::types::READY)
                .map(|c| c.message.clone());
            patch_status(ctx, route, &status).await?;
            publish(
                ctx,
                route,
                EventType::Warning,
                status::reasons::INVALID_SPEC,
                "Validate",
                message,
            )
            .await;
        }
        // Nothing will change until the user edits the route.
        return Ok(Action::await_change());
    }

    let namespace = route.namespace_or_default();
    let objects = desired::build(route, &ctx.data_plane)?;
    let applied = match apply::apply_all(&ctx.client, namespace, &objects).await {
        Ok(applied) => applied,
        Err(error) => {
            publish(
                ctx,
                route,
                EventType::Warning,
                "ApplyFailed",
                "Apply",
                Some(error.to_string()),
            )
            .await;
            return Err(error.into());
        }
    };
    if objects.ingress.is_none() && apply::remove_stale_ingress(&ctx.client, route).await? {
        let note = format!(
            "deleted Ingress {}: spec.ingest.ingress is no longer set",
            desired::names::ingest(route.name())
        );
        publish(
            ctx,
            route,
            EventType::Normal,
            "IngressDeleted",
            "Delete",
            Some(note),
        )
        .await;
    }
    let generation_seen = route.status.as_ref().and_then(|s| s.observed_generation);
    if generation_seen != route.metadata.generation {
        let (reason, verb) = if generation_seen.is_none() {
            ("Created", "created")
        } else {
            ("Updated", "updated")
        };
        let note = format!(
            "{verb} ConfigMap {}, Deployments {} and {}, Service {}{} for generation {} (config hash {})",
            objects.config_map.name_any(),
            objects.ingest.name_any(),
            objects.worker.name_any(),
            objects.service.name_any(),
            if objects.ingress.is_some() {
                " and its Ingress"
            } else {
                ""
            },
            route.metadata.generation.unwrap_or_default(),
            &objects.config_hash[..12],
        );
        info!(route = %key(route), "{note}");
        publish(ctx, route, EventType::Normal, reason, "Apply", Some(note)).await;
    }

    let destinations: Vec<String> = route
        .spec
        .destinations
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let stats = ctx
        .stats
        .read(namespace, route.name(), &destinations)
        .await
        .map_err(|error| error.to_string());
    let redis_failed = stats.is_err();
    let observed = status::Observed {
        ingest: applied.ingest,
        worker: applied.worker,
        stats,
    };
    let status = status::observed(route, &observed, now());
    if status::needs_update(route.status.as_ref(), &status) {
        patch_status(ctx, route, &status).await?;
        if let Some((type_, reason, note)) = readiness_change(route.status.as_ref(), &status) {
            publish(ctx, route, type_, reason, "Observe", Some(note)).await;
        }
    }
    let mut redis_failures = ctx.redis_failures();
    if redis_failed {
        // Try Redis again sooner, backing off while it stays away.
        let count = redis_failures.entry(key(route)).or_insert(0);
        *count = count.saturating_add(1);
        return Ok(Action::requeue(backoff(*count).min(ctx.refresh_interval)));
    }
    redis_failures.remove(&key(route));
    Ok(Action::requeue(ctx.refresh_interval))
}

/// An Event for a route whose `Ready` condition flipped (not for its first
/// status: `Created` covers that).
fn readiness_change(
    old: Option<&FanoutRouteStatus>,
    new: &FanoutRouteStatus,
) -> Option<(EventType, &'static str, String)> {
    let ready = |s: &FanoutRouteStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::types::READY)
            .cloned()
    };
    let before = ready(old?)?;
    let after = ready(new)?;
    if before.status == after.status {
        return None;
    }
    Some(if after.status == "True" {
        (EventType::Normal, "Available", after.message)
    } else {
        (EventType::Warning, "Unavailable", after.message)
    })
}

async fn patch_status(
    ctx: &Context,
    route: &FanoutRoute,
    status: &FanoutRouteStatus,
) -> Result<(), ReconcileError> {
    let namespace = route.namespace_or_default();
    let api: Api<FanoutRoute> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": FanoutRoute::api_version(&()),
        "kind": FanoutRoute::kind(&()),
        "status": status,
    });
    api.patch_status(
        route.name(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| ReconcileError::Status {
        namespace: namespace.to_owned(),
        name: route.name().to_owned(),
        error: source,
    })?;
    Ok(())
}

/// Records an Event on the route; a failure to record is logged, not fatal.
async fn publish(
    ctx: &Context,
    route: &FanoutRoute,
    type_: EventType,
    reason: &str,
    action: &str,
    note: Option<String>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: note.map(|n| truncate(n, 1000)),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &route.object_ref(&())).await {
        warn!(route = %key(route), %error, "cannot record event");
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
