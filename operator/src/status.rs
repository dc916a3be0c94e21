//! What a route's status should say, computed from what was observed.
//!
//! Pure functions: the reconciler gathers the facts (validation problems, the
//! Deployments as the API server returned them after apply, the Redis stats)
//! and this module turns them into `FanoutRouteStatus` following the
//! Kubernetes condition conventions. `lastTransitionTime` only moves when a
//! condition's status changes, so an unchanged route yields an identical
//! status and the reconciler can skip the write.

use fanout_api::{FanoutRoute, FanoutRouteStatus, FieldError, route::DestinationStatus};
use k8s_openapi::{
    api::apps::v1::Deployment,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::desired::ingest_url;

/// Condition types, in the order they are written.
pub mod types {
    /// The route accepts and delivers events.
    pub const READY: &str = "Ready";
    /// The ingest Deployment is available.
    pub const INGEST_AVAILABLE: &str = "IngestAvailable";
    /// The worker Deployment is available.
    pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";
    /// Something needs attention although the route may work.
    pub const DEGRADED: &str = "Degraded";
}

/// Condition reasons.
pub mod reasons {
    /// The spec breaks a validation rule.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Everything is available.
    pub const AVAILABLE: &str = "Available";
    /// The ingest Deployment is not available.
    pub const INGEST_UNAVAILABLE: &str = "IngestUnavailable";
    /// The worker Deployment is not available.
    pub const WORKERS_UNAVAILABLE: &str = "WorkersUnavailable";
    /// A Deployment has its minimum of available pods.
    pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// A Deployment lacks available pods.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// Nothing to report.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// Some destination has dead letters.
    pub const DEAD_LETTERS: &str = "DeadLetters";
    /// The backlog could not be read from Redis.
    pub const REDIS_UNAVAILABLE: &str = "RedisUnavailable";
}

/// Longest condition message the API accepts (32 KiB); ours stay far below.
const MAX_MESSAGE: usize = 4096;

/// The status of a route whose spec is invalid: `Ready=False` with every
/// problem and its field path; the rest of the old status is kept (the last
/// valid objects keep running).
pub fn invalid(route: &FanoutRoute, problems: &[FieldError], now: Timestamp) -> FanoutRouteStatus {
    let mut status = route.status.clone().unwrap_or_default();
    let message = format!(
        "the spec is invalid, nothing was applied: {}",
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let generation = route.metadata.generation;
    let ready = condition(
        types::READY,
        false,
        reasons::INVALID_SPEC,
        &message,
        generation,
        now,
    );
    let mut conditions = status.conditions.clone();
    match conditions.iter_mut().find(|c| c.type_ == types::READY) {
        Some(existing) => *existing = ready,
        None => conditions.insert(0, ready),
    }
    status.conditions = merge_transition_times(&status.conditions, conditions);
    status.observed_generation = generation;
    status
}

/// What was observed of a valid route after its objects were applied.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The ingest Deployment as the API server returned it.
    pub ingest: Deployment,
    /// The worker Deployment as the API server returned it.
    pub worker: Deployment,
    /// The per-destination stats, or why Redis could not be read.
    pub stats: Result<Vec<DestinationStatus>, String>,
}

/// The status of a valid, applied route.
pub fn observed(route: &FanoutRoute, observed: &Observed, now: Timestamp) -> FanoutRouteStatus {
    let old = route.status.clone().unwrap_or_default();
    let generation = route.metadata.generation;
    let (ingest_ok, ingest_message) = availability(&observed.ingest);
    let (workers_ok, workers_message) = availability(&observed.worker);

    let (ready_reason, ready_message) = match (ingest_ok, workers_ok) {
        (true, true) => (
            reasons::AVAILABLE,
            "ingest and workers are available".to_owned(),
        ),
        (false, _) => (
            reasons::INGEST_UNAVAILABLE,
            format!("ingest: {ingest_message}"),
        ),
        (true, false) => (
            reasons::WORKERS_UNAVAILABLE,
            format!("workers: {workers_message}"),
        ),
    };
    let available_reason = |ok| {
        if ok {
            reasons::MINIMUM_REPLICAS_AVAILABLE
        } else {
            reasons::MINIMUM_REPLICAS_UNAVAILABLE
        }
    };

    let (destinations, backlog, degraded) = match &observed.stats {
        Ok(stats) => {
            let dead: Vec<String> = stats
                .iter()
                .filter(|d| d.dead_letters > 0)
                .map(|d| format!("{} has {} dead letters", d.name, d.dead_letters))
                .collect();
            let degraded = if dead.is_empty() {
                (false, reasons::AS_EXPECTED, "no dead letters".to_owned())
            } else {
                (true, reasons::DEAD_LETTERS, dead.join("; "))
            };
            (
                stats.clone(),
                Some(stats.iter().map(|d| d.backlog).sum()),
                degraded,
            )
        }
        // Keep the last known figures rather than inventing zeros.
        Err(error) => (
            old.destinations.clone(),
            old.backlog,
            (
                true,
                reasons::REDIS_UNAVAILABLE,
                format!("cannot read the backlog from Redis: {error}"),
            ),
        ),
    };

    let conditions = vec![
        condition(
            types::READY,
            ingest_ok && workers_ok,
            ready_reason,
            &ready_message,
            generation,
            now,
        ),
        condition(
            types::INGEST_AVAILABLE,
            ingest_ok,
            available_reason(ingest_ok),
            &ingest_message,
            generation,
            now,
        ),
        condition(
            types::WORKERS_AVAILABLE,
            workers_ok,
            available_reason(workers_ok),
            &workers_message,
            generation,
            now,
        ),
        condition(
            types::DEGRADED,
            degraded.0,
            degraded.1,
            &degraded.2,
            generation,
            now,
        ),
    ];

    FanoutRouteStatus {
        observed_generation: generation,
        conditions: merge_transition_times(&old.conditions, conditions),
        ingest_url: Some(ingest_url(route)),
        backlog,
        destinations,
    }
}

/// Whether the status must be written: anything differs from what is there.
pub fn needs_update(current: Option<&FanoutRouteStatus>, desired: &FanoutRouteStatus) -> bool {
    current != Some(desired)
}

/// Whether a Deployment is available (its own `Available` condition, and at
/// least one available pod), with a message for the condition.
pub fn availability(deployment: &Deployment) -> (bool, String) {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let condition = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Available");
    let condition_ok = condition.as_ref().is_some_and(|c| c.status == "True");
    let ok = condition_ok && available > 0;
    let mut message = format!("{available}/{desired} pods available");
    if !ok && let Some(c) = condition.and_then(|c| c.message) {
        message.push_str(": ");
        message.push_str(&c);
    }
    (ok, message)
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let mut message = message.to_owned();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Keeps each condition's old `lastTransitionTime` when its status did not
/// change.
fn merge_transition_times(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut condition| {
            if let Some(previous) = old.iter().find(|c| c.type_ == condition.type_)
                && previous.status == condition.status
            {
                condition.last_transition_time = previous.last_transition_time.clone();
            }
            condition
        })
        .collect()
}
