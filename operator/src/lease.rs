//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several
//! operator replicas exactly one reconciles.
//!
//! kube-runtime has no elector, so this is a small one in the client-go
//! manner: every `retry_period` each replica reads the Lease; the holder
//! renews it, the others take it over only once it has not changed for a
//! whole `leaseDurationSeconds` as measured on their own clock (no trust in
//! other machines' clocks). Every write is a replace guarded by the
//! `resourceVersion` read, so two replicas cannot both win a race. A leader
//! that cannot renew within `renew_deadline` stops reconciling before anyone
//! else may take over; on shutdown it releases the Lease for a fast handover.

use std::{future::Future, sync::Mutex};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::time::{Instant, sleep, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{config::LeaseConfig, metrics::Metrics};

/// A Lease request failed (other than losing a race, which is not an error).
#[derive(Debug, thiserror::Error)]
#[error("lease {namespace}/{name}: {error}")]
pub struct LeaseError {
    namespace: String,
    name: String,
    error: kube::Error,
}

/// The last Lease record seen, and when (on this replica's clock).
#[derive(Debug)]
struct Observation {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

/// Acquires, renews and releases one Lease.
pub struct LeaseElector {
    api: Api<Lease>,
    config: LeaseConfig,
    namespace: String,
    observed: Mutex<Option<Observation>>,
}

impl LeaseElector {
    /// An elector for the Lease named in `config` (in the client's default
    /// namespace when the config names none).
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Self {
            api: Api::namespaced(client, &namespace),
            config,
            namespace,
            observed: Mutex::new(None),
        }
    }

    fn error(&self, error: kube::Error) -> LeaseError {
        LeaseError {
            namespace: self.namespace.clone(),
            name: self.config.name.clone(),
            error,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One round: returns whether this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let Some(lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status))
                    if status.is_already_exists() || status.is_conflict() =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let observed_at = self.observe(&holder, &spec.renew_time);
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        let mut next = spec.clone();
        next.renew_time = Some(now.clone());
        next.lease_duration_seconds = Some(self.duration_seconds());
        if !mine {
            let valid_for = spec
                .lease_duration_seconds
                .map_or(self.config.lease_duration, |s| {
                    std::time::Duration::from_secs(s.max(0).unsigned_abs().into())
                });
            if holder.is_some() && observed_at + valid_for > Instant::now() {
                return Ok(false);
            }
            next.holder_identity = Some(self.config.identity.clone());
            next.acquire_time = Some(now);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        self.replace(lease, next).await
    }

    /// Gives the Lease up if this replica holds it, so another replica can
    /// take over at once.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let next = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..spec
        };
        self.replace(lease, next).await.map(|_| ())
    }

    /// Replaces the Lease with `spec`, guarded by the resourceVersion read;
    /// a conflict means someone else wrote first.
    async fn replace(&self, mut lease: Lease, spec: LeaseSpec) -> Result<bool, LeaseError> {
        lease.spec = Some(spec);
        lease.metadata.managed_fields = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Records the record seen; returns when it was first seen unchanged.
    fn observe(&self, holder: &Option<String>, renew_time: &Option<MicroTime>) -> Instant {
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match observed.as_ref() {
            Some(o) if &o.holder == holder && &o.renew_time == renew_time => o.at,
            _ => {
                let at = Instant::now();
                *observed = Some(Observation {
                    holder: holder.clone(),
                    renew_time: renew_time.clone(),
                    at,
                });
                at
            }
        }
    }

    /// Runs `work` whenever this replica leads, until `shutdown`.
    ///
    /// `work` gets a token that is cancelled when leadership is lost (or on
    /// shutdown) and must stop reconciling then. After losing the Lease the
    /// replica waits to lead again; on shutdown it releases the Lease.
    pub async fn run<F, Fut>(&self, metrics: &Metrics, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            if !self.wait_to_lead(&shutdown).await {
                return;
            }
            info!(identity = %self.config.identity, lease = %self.config.name, "leading: reconciling starts");
            metrics.leader.set(1);
            let lost = shutdown.child_token();
            let work_done = {
                let running = work(lost.clone());
                let lost = lost.clone();
                async move {
                    running.await;
                    lost.cancel();
                }
            };
            tokio::join!(work_done, self.keep_renewing(&lost));
            metrics.leader.set(0);
            if shutdown.is_cancelled() {
                if let Err(error) = self.release().await {
                    warn!(%error, "cannot release the lease; another replica takes over when it expires");
                }
                return;
            }
            warn!(identity = %self.config.identity, "lost the lease: stopped reconciling, waiting to lead again");
        }
    }

    /// Tries every retry period until this replica leads (true) or shutdown
    /// (false).
    async fn wait_to_lead(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Renews every retry period; cancels `lost` when the Lease went to
    /// someone else or could not be renewed within the renew deadline.
    async fn keep_renewing(&self, lost: &CancellationToken) {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = lost.cancelled() => return,
                () = sleep(self.config.retry_period) => {}
            }
            let deadline = renewed + self.config.renew_deadline;
            match timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    warn!("the lease is held by another replica");
                    break;
                }
                Ok(Err(error)) => warn!(%error, "cannot renew the lease"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                warn!(deadline = ?self.config.renew_deadline, "could not renew the lease in time");
                break;
            }
        }
        lost.cancel();
    }
}
