//! The operator's configuration, typed and validated once at startup.
//!
//! [`RunArgs`] (flags and environment) become an [`OperatorConfig`]; everything
//! after that (the pure `build()`, the reconciler, the lease elector) reads
//! this struct and never the environment.

use std::{net::SocketAddr, time::Duration};

/// How data-plane pods get their Redis URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisUrlSource {
    /// The URL itself, as a plain environment value (no password in it, or
    /// one you accept to be visible in the Deployment).
    Value(String),
    /// Key `url` of a Secret with this name, which must exist in every
    /// namespace that holds routes. The operator never reads or copies it.
    Secret(String),
}

/// Resource requests and limits of one data-plane container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    /// CPU request, for example `100m`.
    pub cpu_request: String,
    /// Memory request, for example `64Mi`.
    pub memory_request: String,
    /// CPU limit, for example `1`.
    pub cpu_limit: String,
    /// Memory limit, for example `256Mi`.
    pub memory_limit: String,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_request: "100m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: "1".into(),
            memory_limit: "256Mi".into(),
        }
    }
}

/// What the reconciler needs to build the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlaneConfig {
    /// The image holding `fanout-ingest` and `fanout-worker`.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// How pods get the Redis URL.
    pub redis_url: RedisUrlSource,
    /// IngressClass for routes whose `spec.ingest.ingress` names none
    /// (`None`: the cluster's default class).
    pub default_ingress_class: Option<String>,
    /// Requests and limits of every data-plane container.
    pub resources: Resources,
}

/// Leader election with a `coordination.k8s.io/v1` Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease (`None`: the client's default namespace).
    pub namespace: Option<String>,
    /// This replica's identity, written as the holder.
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// The leader stops reconciling when it could not renew for this long.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// The whole configuration of `fanout-operator run`.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Health and metrics listen address.
    pub listen: SocketAddr,
    /// The Redis URL the operator reads backlogs from.
    pub redis_url: String,
    /// What the data plane gets.
    pub data_plane: DataPlaneConfig,
    /// Leader election.
    pub lease: LeaseConfig,
    /// How often a valid route is reconciled again to refresh its backlog.
    pub refresh_interval: Duration,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The image is empty.
    #[error(
        "--image (FANOUT_IMAGE) is required: the image holding fanout-ingest and fanout-worker"
    )]
    MissingImage,
    /// Unknown pull policy.
    #[error("--image-pull-policy must be Always, IfNotPresent or Never, not {0:?}")]
    PullPolicy(String),
    /// The Redis URL is not a redis:// or rediss:// URL.
    #[error("--redis-url (FANOUT_REDIS_URL) must start with redis:// or rediss://, got {0:?}")]
    RedisUrl(String),
    /// Lease timings that cannot hold.
    #[error("lease timings must satisfy retry period < renew deadline < lease duration")]
    LeaseTimings,
}

impl OperatorConfig {
    /// Checks everything that can be checked without a cluster.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let dp = &self.data_plane;
        if dp.image.trim().is_empty() {
            return Err(ConfigError::MissingImage);
        }
        if !matches!(
            dp.image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            return Err(ConfigError::PullPolicy(dp.image_pull_policy.clone()));
        }
        let redis_ok = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        if !redis_ok(&self.redis_url) {
            return Err(ConfigError::RedisUrl(self.redis_url.clone()));
        }
        if let RedisUrlSource::Value(url) = &dp.redis_url
            && !redis_ok(url)
        {
            return Err(ConfigError::RedisUrl(url.clone()));
        }
        let lease = &self.lease;
        if !(lease.retry_period < lease.renew_deadline
            && lease.renew_deadline < lease.lease_duration)
        {
            return Err(ConfigError::LeaseTimings);
        }
        Ok(())
    }
}

impl LeaseConfig {
    /// Defaults of client-go's leader election: 15 s lease, 10 s renew
    /// deadline, 2 s retry period.
    pub fn with_defaults(
        name: impl Into<String>,
        namespace: Option<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace,
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The flags (and environment variables) of `fanout-operator run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FANOUT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of the data plane (holds fanout-ingest and fanout-worker); required
    /// for `run`.
    #[arg(long, env = "FANOUT_IMAGE")]
    pub image: Option<String>,
    /// Pull policy of the data-plane image: Always, IfNotPresent or Never.
    #[arg(long, env = "FANOUT_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// Redis the data plane uses and the operator reads backlogs from.
    #[arg(
        long,
        env = "FANOUT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Give data-plane pods FANOUT_REDIS_URL from key `url` of this Secret
    /// (in each route's namespace) instead of the value of --redis-url.
    #[arg(long, env = "FANOUT_REDIS_URL_SECRET")]
    pub redis_url_secret: Option<String>,
    /// IngressClass for routes whose spec.ingest.ingress names none.
    #[arg(long, env = "FANOUT_INGRESS_CLASS")]
    pub ingress_class: Option<String>,
    /// Health and metrics listen address.
    #[arg(long, env = "FANOUT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, env = "FANOUT_LEASE_NAME", default_value = "fanout-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the client's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: pod name or host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds between two reconciles of a valid route (backlog refresh).
    #[arg(long, env = "FANOUT_REFRESH_SECONDS", default_value_t = 30)]
    pub refresh_seconds: u64,
}

impl RunArgs {
    /// The configuration these flags describe; [`OperatorConfig::validate`]
    /// checks it.
    pub fn into_config(self) -> OperatorConfig {
        let identity = self.identity.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "fanout-operator".into());
            format!("{host}-{}", std::process::id())
        });
        let data_plane_redis = match self.redis_url_secret {
            Some(secret) => RedisUrlSource::Secret(secret),
            None => RedisUrlSource::Value(self.redis_url.clone()),
        };
        OperatorConfig {
            namespace: self.namespace,
            listen: self.listen,
            redis_url: self.redis_url,
            data_plane: DataPlaneConfig {
                image: self.image.unwrap_or_default(),
                image_pull_policy: self.image_pull_policy,
                redis_url: data_plane_redis,
                default_ingress_class: self.ingress_class,
                resources: Resources::default(),
            },
            lease: LeaseConfig::with_defaults(self.lease_name, self.lease_namespace, identity),
            refresh_interval: Duration::from_secs(self.refresh_seconds.max(1)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid configuration for tests.
    pub(crate) fn config() -> OperatorConfig {
        OperatorConfig {
            namespace: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            redis_url: "redis://127.0.0.1:6379".into(),
            data_plane: DataPlaneConfig {
                image: "ghcr.io/fanout-dev/fanout:0.1.0".into(),
                image_pull_policy: "IfNotPresent".into(),
                redis_url: RedisUrlSource::Value("redis://redis.fanout-system.svc:6379".into()),
                default_ingress_class: None,
                resources: Resources::default(),
            },
            lease: LeaseConfig::with_defaults("fanout-operator", None, "me"),
            refresh_interval: Duration::from_secs(30),
        }
    }

    #[test]
    fn validation_refuses_what_cannot_work() {
        assert_eq!(config().validate(), Ok(()));
        let mut c = config();
        c.data_plane.image = " ".into();
        assert_eq!(c.validate(), Err(ConfigError::MissingImage));
        let mut c = config();
        c.data_plane.image_pull_policy = "always".into();
        assert!(matches!(c.validate(), Err(ConfigError::PullPolicy(_))));
        let mut c = config();
        c.redis_url = "http://x".into();
        assert!(matches!(c.validate(), Err(ConfigError::RedisUrl(_))));
        let mut c = config();
        c.lease.renew_deadline = Duration::from_secs(20);
        assert_eq!(c.validate(), Err(ConfigError::LeaseTimings));
    }
}
