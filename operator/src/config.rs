//! The operator's configuration, typed and validated once at startup.
//!
//! [`RunArgs`] (flags and environment) become an [`OperatorConfig`]; everything
//! after that (the pure `build()`, the reconciler, the lease elector) reads
//! this struct and never the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use fanout_api::connection::{RedisArgs, RedisTarget, redact};

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
    /// The URL names a node of a Redis Cluster: pods get
    /// `FANOUT_REDIS_CLUSTER=true` (and nothing when false, so the pods of a
    /// single-server install never change).
    pub redis_cluster: bool,
    /// A Secret (in each route's namespace) whose key `ca.crt` is the CA of
    /// a Redis served over TLS with a private CA: pods mount it read-only
    /// and get `FANOUT_REDIS_CA_FILE` (nothing when `None`, so the pods of an
    /// install without it never change).
    pub redis_ca_secret: Option<String>,
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
    /// The Redis the operator reads backlogs from (URL checked, single
    /// server or cluster).
    pub redis: RedisTarget,
    /// The PEM file of the private CA `redis` trusts (`None`: the system's
    /// CAs, or no TLS); for the startup log, the target already holds it.
    pub redis_ca_file: Option<PathBuf>,
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
    /// The data plane's Redis URL is not a redis:// or rediss:// URL
    /// (password hidden).
    #[error("--redis-url (FANOUT_REDIS_URL) must start with redis:// or rediss://, got {0:?}")]
    RedisUrl(String),
    /// The Redis URL cannot be used (malformed, or a database other than 0
    /// with --redis-cluster); the text of the [`RedisTargetError`], password
    /// hidden.
    #[error("--redis-url (FANOUT_REDIS_URL): {0}")]
    Redis(String),
    /// The Redis URL cannot be used with the CA file of --redis-ca-file (not
    /// a rediss:// URL, the file unreadable or without a PEM certificate);
    /// the text of the [`RedisTargetError`], password hidden.
    #[error("--redis-url (FANOUT_REDIS_URL) with --redis-ca-file (FANOUT_REDIS_CA_FILE): {0}")]
    RedisCaFile(String),
    /// A CA Secret for the data plane, but its Redis URL (given as a value)
    /// is not TLS (password hidden).
    #[error(
        "--redis-ca-secret (FANOUT_REDIS_CA_SECRET) is the CA of a Redis served over TLS: --redis-url (FANOUT_REDIS_URL) must start with rediss://, got {0:?}"
    )]
    CaSecretWithoutTls(String),
    /// The CA Secret's name is not a Kubernetes object name.
    #[error(
        "--redis-ca-secret (FANOUT_REDIS_CA_SECRET) must name a Secret (lowercase letters, digits, '-' and '.', at most 253), got {0:?}"
    )]
    CaSecretName(String),
    /// The operator and the data plane would disagree about cluster mode.
    #[error(
        "the operator's Redis and the data plane's must both be a cluster or both not (--redis-cluster)"
    )]
    ClusterMismatch,
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
        // The operator's own URL was checked by `RedisTarget::new`; the
        // data plane's, when given as a value, is checked here (a Secret's
        // is never read by the operator).
        let redis_ok = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        if self.redis.is_cluster() != dp.redis_cluster {
            return Err(ConfigError::ClusterMismatch);
        }
        if let RedisUrlSource::Value(url) = &dp.redis_url
            && !redis_ok(url)
        {
            return Err(ConfigError::RedisUrl(redact(url)));
        }
        if let Some(secret) = &dp.redis_ca_secret {
            if !is_object_name(secret) {
                return Err(ConfigError::CaSecretName(secret.clone()));
            }
            // A Secret's URL (--redis-url-secret) is never read by the
            // operator: that one is the installer's to make rediss://.
            if let RedisUrlSource::Value(url) = &dp.redis_url
                && !url.starts_with("rediss://")
            {
                return Err(ConfigError::CaSecretWithoutTls(redact(url)));
            }
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

/// A DNS subdomain name (RFC 1123), what a Secret's name must be.
fn is_object_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
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
    /// Redis, which the data plane uses and the operator reads backlogs
    /// from; cluster mode is passed on to the data plane as
    /// FANOUT_REDIS_CLUSTER=true. The CA file is for the operator's own
    /// connection (route pods get theirs from --redis-ca-secret).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Give data-plane pods FANOUT_REDIS_URL from key `url` of this Secret
    /// (in each route's namespace) instead of the value of --redis-url.
    #[arg(long, env = "FANOUT_REDIS_URL_SECRET")]
    pub redis_url_secret: Option<String>,
    /// Mount key `ca.crt` of this Secret (in each route's namespace) into
    /// data-plane pods and give them FANOUT_REDIS_CA_FILE pointing at it
    /// (rediss:// only).
    #[arg(long, env = "FANOUT_REDIS_CA_SECRET")]
    pub redis_ca_secret: Option<String>,
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
    /// The configuration these flags describe, checked
    /// ([`OperatorConfig::validate`] and the Redis URL).
    pub fn into_config(self) -> Result<OperatorConfig, ConfigError> {
        let identity = self.identity.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "fanout-operator".into());
            format!("{host}-{}", std::process::id())
        });
        let data_plane_redis = match self.redis_url_secret {
            Some(secret) => RedisUrlSource::Secret(secret),
            None => RedisUrlSource::Value(self.redis.redis_url.clone()),
        };
        let redis = self
            .redis
            .target()
            .map_err(|e| match self.redis.redis_ca_file {
                Some(_) => ConfigError::RedisCaFile(e.to_string()),
                None => ConfigError::Redis(e.to_string()),
            })?;
        let config = OperatorConfig {
            namespace: self.namespace,
            listen: self.listen,
            redis,
            redis_ca_file: self.redis.redis_ca_file,
            data_plane: DataPlaneConfig {
                image: self.image.unwrap_or_default(),
                image_pull_policy: self.image_pull_policy,
                redis_url: data_plane_redis,
                redis_cluster: self.redis.redis_cluster,
                redis_ca_secret: self.redis_ca_secret,
                default_ingress_class: self.ingress_class,
                resources: Resources::default(),
            },
            lease: LeaseConfig::with_defaults(self.lease_name, self.lease_namespace, identity),
            refresh_interval: Duration::from_secs(self.refresh_seconds.max(1)),
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use clap::Parser;

    use super::*;

    /// A valid configuration for tests.
    pub(crate) fn config() -> OperatorConfig {
        OperatorConfig {
            namespace: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            redis: RedisTarget::new("redis://127.0.0.1:6379", false).unwrap(),
            redis_ca_file: None,
            data_plane: DataPlaneConfig {
                image: "ghcr.io/fanout-dev/fanout:0.1.0".into(),
                image_pull_policy: "IfNotPresent".into(),
                redis_url: RedisUrlSource::Value("redis://redis.fanout-system.svc:6379".into()),
                redis_cluster: false,
                redis_ca_secret: None,
                default_ingress_class: None,
                resources: Resources::default(),
            },
            lease: LeaseConfig::with_defaults("fanout-operator", None, "me"),
            refresh_interval: Duration::from_secs(30),
        }
    }

    /// `fanout-operator run`'s flags, parsed as the binary parses them.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunArgs,
    }

    fn from_flags(args: &[&str]) -> Result<OperatorConfig, ConfigError> {
        let mut argv = vec!["fanout-operator", "--image", "fanout:1"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).unwrap().run.into_config()
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
        c.data_plane.redis_url = RedisUrlSource::Value("http://x".into());
        assert!(matches!(c.validate(), Err(ConfigError::RedisUrl(_))));
        let mut c = config();
        c.data_plane.redis_cluster = true;
        assert_eq!(c.validate(), Err(ConfigError::ClusterMismatch));
        let mut c = config();
        c.lease.renew_deadline = Duration::from_secs(20);
        assert_eq!(c.validate(), Err(ConfigError::LeaseTimings));
    }

    #[test]
    fn redis_cluster_is_off_by_default_and_reaches_the_data_plane_when_on() {
        let single = from_flags(&["--redis-url", "redis://redis:6379"]).unwrap();
        assert!(!single.redis.is_cluster());
        assert!(!single.data_plane.redis_cluster);

        let cluster =
            from_flags(&["--redis-url", "redis://node-0:6379", "--redis-cluster"]).unwrap();
        assert!(cluster.redis.is_cluster());
        assert!(cluster.data_plane.redis_cluster);
        assert_eq!(
            cluster.data_plane.redis_url,
            RedisUrlSource::Value("redis://node-0:6379".into())
        );
    }

    #[test]
    fn the_operators_redis_url_is_checked_at_startup() {
        let refused = |args: &[&str]| match from_flags(args) {
            Err(e @ ConfigError::Redis(_)) => e.to_string(),
            other => panic!("{args:?} must be refused as a Redis URL, got {other:?}"),
        };
        let message = refused(&["--redis-url", "redis://node-0:6379/2", "--redis-cluster"]);
        assert!(message.starts_with("--redis-url"), "{message}");
        assert!(message.contains("database 0"), "{message}");
        // Database 2 of a single server is fine.
        assert!(from_flags(&["--redis-url", "redis://redis:6379/2"]).is_ok());

        let message = refused(&["--redis-url", "http://user:secret@redis:6379"]);
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn a_redis_ca_secret_is_off_by_default_and_needs_a_tls_url() {
        let plain = from_flags(&["--redis-url", "redis://redis:6379"]).unwrap();
        assert_eq!(plain.data_plane.redis_ca_secret, None);
        assert_eq!(plain.redis_ca_file, None);

        let tls = from_flags(&[
            "--redis-url",
            "rediss://redis:6380",
            "--redis-ca-secret",
            "fanout-redis-ca",
        ])
        .unwrap();
        assert_eq!(
            tls.data_plane.redis_ca_secret.as_deref(),
            Some("fanout-redis-ca")
        );

        let refused = from_flags(&[
            "--redis-url",
            "redis://:secret@redis:6379",
            "--redis-ca-secret",
            "fanout-redis-ca",
        ])
        .unwrap_err();
        assert!(
            matches!(refused, ConfigError::CaSecretWithoutTls(_)),
            "{refused:?}"
        );
        let message = refused.to_string();
        for needed in ["--redis-ca-secret", "--redis-url", "rediss://"] {
            assert!(message.contains(needed), "{message}");
        }
        assert!(!message.contains("secret@"), "password shown: {message}");

        // The URL a Secret gives the pods is never read by the operator.
        let mut c = config();
        c.data_plane.redis_url = RedisUrlSource::Secret("fanout-redis-url".into());
        c.data_plane.redis_ca_secret = Some("fanout-redis-ca".into());
        assert_eq!(c.validate(), Ok(()));

        for bad in ["", "Fanout-CA", "-ca", "ca_secret"] {
            let mut c = config();
            c.data_plane.redis_url = RedisUrlSource::Value("rediss://redis:6380".into());
            c.data_plane.redis_ca_secret = Some(bad.into());
            assert_eq!(
                c.validate(),
                Err(ConfigError::CaSecretName(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_operators_redis_ca_file_is_checked_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |args: &[&str]| match from_flags(args) {
            Err(e @ ConfigError::RedisCaFile(_)) => e.to_string(),
            other => panic!("{args:?} must be refused for its CA file, got {other:?}"),
        };
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();
        let message = refused(&[
            "--redis-url",
            "rediss://redis:6380",
            "--redis-ca-file",
            missing,
        ]);
        assert!(message.contains("--redis-ca-file"), "{message}");
        assert!(message.contains("cannot read CA file"), "{message}");

        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let message = refused(&[
            "--redis-url",
            "rediss://redis:6380",
            "--redis-ca-file",
            not_pem.to_str().unwrap(),
        ]);
        assert!(message.contains("no PEM certificate"), "{message}");

        let message = refused(&[
            "--redis-url",
            "redis://redis:6379",
            "--redis-ca-file",
            not_pem.to_str().unwrap(),
        ]);
        assert!(message.contains("rediss://"), "{message}");
    }
}
