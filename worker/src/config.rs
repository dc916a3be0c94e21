//! The worker's configuration: command-line flags (each with an environment
//! variable), read and checked once at startup into a typed [`Config`].
//!
//! Everything that can be wrong with the configuration (an unreadable routes
//! file, an invalid route, a missing signing secret, an unparsable URL) is
//! found here, before the worker touches Redis, so a running worker never
//! meets a configuration error.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, ValueEnum};
use fanout_api::{
    FanoutRoute, HumanDuration, RedisTarget, RouteKeys, RoutesFileError,
    connection::{RedisArgs, RedisTargetError},
    load_routes_file,
    routes_file::qualified_name,
    secrets::{DEFAULT_SECRETS_DIR, DEFAULT_SIGNING_KEY},
};

use crate::signing::{SigningError, SigningKey};

/// Command-line flags of `fanout-worker`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "fanout-worker",
    version,
    about = "Delivers the events of fanout routes to their destinations"
)]
pub struct Args {
    /// Routes file: one or more FanoutRoute YAML documents.
    #[arg(long, env = "FANOUT_ROUTES")]
    pub routes: PathBuf,
    /// Redis, holding the route streams.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "FANOUT_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Directory holding mounted Secrets as `<name>/<key>` files.
    #[arg(long, env = "FANOUT_SECRETS_DIR", default_value = DEFAULT_SECRETS_DIR)]
    pub secrets_dir: PathBuf,
    /// Consumer name of this worker in every consumer group. Default: the
    /// HOSTNAME environment variable, else the machine's host name; it must
    /// stay the same across restarts of one instance (a pod name does).
    #[arg(long, env = "FANOUT_CONSUMER")]
    pub consumer: Option<String>,
    /// How long an entry held by a worker may go without a sign of life
    /// before another worker reclaims it. Per destination the timeout used is
    /// at least twice the destination's request timeout plus 5s.
    #[arg(long, env = "FANOUT_VISIBILITY_TIMEOUT", default_value = "60s")]
    pub visibility_timeout: HumanDuration,
    /// On SIGTERM, how long in-flight deliveries may take to finish.
    #[arg(long, env = "FANOUT_SHUTDOWN_GRACE", default_value = "25s")]
    pub shutdown_grace: HumanDuration,
    /// Log line format.
    #[arg(long, env = "FANOUT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The routes file is unreadable or invalid.
    #[error(transparent)]
    Routes(#[from] RoutesFileError),
    /// The Redis URL is unusable.
    #[error("--redis-url: {0}")]
    Redis(#[from] RedisTargetError),
    /// No consumer name could be found.
    #[error("no consumer name: set --consumer (FANOUT_CONSUMER) or HOSTNAME")]
    NoConsumer,
    /// A zero duration where one is needed.
    #[error("--visibility-timeout must be more than 0")]
    ZeroVisibility,
    /// A destination URL does not parse.
    #[error("route {route} destination {destination}: invalid url: {reason}")]
    Url {
        /// `<namespace>/<name>`.
        route: String,
        /// The destination.
        destination: String,
        /// Why.
        reason: String,
    },
    /// A destination's signing secret is missing or malformed.
    #[error("route {route} destination {destination}: signing secret {path}: {source}")]
    Signing {
        /// `<namespace>/<name>`.
        route: String,
        /// The destination.
        destination: String,
        /// The secret file.
        path: String,
        /// Why.
        source: SigningError,
    },
}

/// The validated configuration of a worker.
#[derive(Clone, Debug)]
pub struct Config {
    /// Routes and their destinations, ready to run.
    pub routes: Vec<RouteConfig>,
    /// Where Redis is, a single server or a cluster.
    pub redis: RedisTarget,
    /// Address of the metrics and health server.
    pub metrics_listen: SocketAddr,
    /// Consumer name in every group.
    pub consumer: String,
    /// The `--visibility-timeout` flag (see [`DestinationConfig::visibility`]).
    pub visibility_timeout: Duration,
    /// How long in-flight deliveries may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// One route of the worker.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Route namespace.
    pub namespace: String,
    /// Route name.
    pub name: String,
    /// The route's Redis keys.
    pub keys: RouteKeys,
    /// Its destinations.
    pub destinations: Vec<DestinationConfig>,
}

/// One destination, with everything resolved (signing key read, visibility
/// computed).
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// Destination name (names the consumer group).
    pub name: String,
    /// Where events are POSTed.
    pub url: reqwest::Url,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Most attempts in flight at once.
    pub max_in_flight: usize,
    /// Most entries waiting for a retry: the runner holds at most
    /// `max_in_flight + max_waiting` entries and stops reading at that limit.
    pub max_waiting: usize,
    /// Retry rules.
    pub retry: RetryRules,
    /// Signing key when signing is configured.
    pub signing: Option<SigningKey>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Effective visibility timeout: `max(flag, 2 * timeout + 5s)`.
    pub visibility: Duration,
}

/// A destination's retry policy as durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryRules {
    /// Most attempts, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Oldest an event may be and still be retried.
    pub max_age: Duration,
}

/// How many entries may wait for a retry per slot of `maxInFlight`.
pub const WAITING_PER_SLOT: usize = 10;

impl Config {
    /// Reads and checks everything the flags point at.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let routes = load_routes_file(&args.routes)?;
        let consumer = match args.consumer.filter(|c| !c.trim().is_empty()) {
            Some(consumer) => consumer,
            None => default_consumer().ok_or(ConfigError::NoConsumer)?,
        };
        Self::build(
            &routes,
            &args.secrets_dir,
            Settings {
                redis: args.redis.target()?,
                metrics_listen: args.metrics_listen,
                consumer,
                visibility_timeout: args.visibility_timeout.get(),
                shutdown_grace: args.shutdown_grace.get(),
            },
        )
    }

    /// Builds the configuration from routes already loaded.
    pub fn build(
        routes: &[FanoutRoute],
        secrets_dir: &Path,
        settings: Settings,
    ) -> Result<Self, ConfigError> {
        if settings.visibility_timeout.is_zero() {
            return Err(ConfigError::ZeroVisibility);
        }
        if settings.consumer.trim().is_empty() {
            return Err(ConfigError::NoConsumer);
        }
        let routes = routes
            .iter()
            .map(|route| route_config(route, secrets_dir, settings.visibility_timeout))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            routes,
            redis: settings.redis,
            metrics_listen: settings.metrics_listen,
            consumer: settings.consumer,
            visibility_timeout: settings.visibility_timeout,
            shutdown_grace: settings.shutdown_grace,
        })
    }
}

/// The scalar settings of [`Config::build`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where Redis is.
    pub redis: RedisTarget,
    /// Metrics server address.
    pub metrics_listen: SocketAddr,
    /// Consumer name.
    pub consumer: String,
    /// `--visibility-timeout`.
    pub visibility_timeout: Duration,
    /// `--shutdown-grace`.
    pub shutdown_grace: Duration,
}

/// The effective visibility timeout of a destination: never shorter than
/// twice its request timeout plus 5 seconds, so a slow but live attempt is
/// not reclaimed.
pub fn effective_visibility(flag: Duration, request_timeout: Duration) -> Duration {
    flag.max(request_timeout * 2 + Duration::from_secs(5))
}

fn route_config(
    route: &FanoutRoute,
    secrets_dir: &Path,
    visibility_flag: Duration,
) -> Result<RouteConfig, ConfigError> {
    let qualified = qualified_name(route);
    let destinations = route
        .spec
        .destinations
        .iter()
        .map(|dest| {
            let url = reqwest::Url::parse(&dest.url).map_err(|e| ConfigError::Url {
                route: qualified.clone(),
                destination: dest.name.clone(),
                reason: e.to_string(),
            })?;
            let signing = match &dest.signing {
                None => None,
                Some(signing) => {
                    let path = signing.secret_ref.path(secrets_dir, DEFAULT_SIGNING_KEY);
                    let key = SigningKey::read(&path).map_err(|source| ConfigError::Signing {
                        route: qualified.clone(),
                        destination: dest.name.clone(),
                        path: path.display().to_string(),
                        source,
                    })?;
                    Some(key)
                }
            };
            let timeout = dest.timeout.get();
            let max_in_flight = dest.max_in_flight.max(1) as usize;
            Ok(DestinationConfig {
                name: dest.name.clone(),
                url,
                timeout,
                max_in_flight,
                max_waiting: max_in_flight * WAITING_PER_SLOT,
                retry: RetryRules {
                    max_attempts: dest.retry.max_attempts.max(1),
                    initial_backoff: dest.retry.initial_backoff.get(),
                    max_backoff: dest.retry.max_backoff.get(),
                    max_age: dest.retry.max_age.get(),
                },
                signing,
                headers: dest
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                visibility: effective_visibility(visibility_flag, timeout),
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    Ok(RouteConfig {
        namespace: route.namespace_or_default().to_owned(),
        name: route.name().to_owned(),
        keys: RouteKeys::new(route.namespace_or_default(), route.name()),
        destinations,
    })
}

/// `HOSTNAME`, else the kernel's host name: stable across restarts of the
/// same pod (the pod name) or machine.
fn default_consumer() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = r#"
apiVersion: fanout.dev/v1alpha1
kind: FanoutRoute
metadata: {name: orders, namespace: shop}
spec:
  ingest: {path: /orders}
  destinations:
    - name: a
      url: "http://127.0.0.1:9/a"
      timeout: 40s
      maxInFlight: 4
      retry: {maxAttempts: 3, initialBackoff: 50ms, maxBackoff: 200ms, maxAge: 1h}
      headers: {X-Source: orders}
    - name: b
      url: "http://127.0.0.1:9/b"
      signing: {secretRef: {name: sig}}
"#;

    fn settings() -> Settings {
        Settings {
            redis: RedisTarget::new("redis://127.0.0.1:6379", false).unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            consumer: "w1".into(),
            visibility_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(25),
        }
    }

    fn secrets() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sig")).unwrap();
        std::fs::write(dir.path().join("sig/secret"), "whsec_c2VjcmV0\n").unwrap();
        dir
    }

    #[test]
    fn resolves_destinations_and_visibility() {
        let dir = secrets();
        let routes = fanout_api::parse_routes(ROUTES).unwrap();
        let config = Config::build(&routes, dir.path(), settings()).unwrap();
        let route = &config.routes[0];
        assert_eq!(route.keys.events(), "fanout:{shop/orders}:events");
        let a = &route.destinations[0];
        assert_eq!(a.visibility, Duration::from_secs(85), "2 * 40s + 5s");
        assert_eq!(a.max_waiting, 40);
        assert_eq!(a.retry.max_attempts, 3);
        assert_eq!(a.retry.initial_backoff, Duration::from_millis(50));
        assert_eq!(a.headers, vec![("X-Source".into(), "orders".into())]);
        let b = &route.destinations[1];
        assert_eq!(b.visibility, Duration::from_secs(60), "flag wins");
        assert_eq!(b.signing.as_ref().unwrap().bytes(), b"secret");
    }

    #[test]
    fn refuses_missing_secret_and_zero_visibility() {
        let empty = tempfile::tempdir().unwrap();
        let routes = fanout_api::parse_routes(ROUTES).unwrap();
        let err = Config::build(&routes, empty.path(), settings()).unwrap_err();
        assert!(matches!(err, ConfigError::Signing { .. }), "{err}");
        assert!(err.to_string().contains("destination b"), "{err}");

        let dir = secrets();
        let mut zero = settings();
        zero.visibility_timeout = Duration::ZERO;
        assert!(matches!(
            Config::build(&routes, dir.path(), zero),
            Err(ConfigError::ZeroVisibility)
        ));
    }

    #[test]
    fn flags_parse_with_defaults() {
        let args = Args::try_parse_from(["fanout-worker", "--routes", "r.yaml"]).unwrap();
        assert_eq!(args.redis.redis_url, "redis://127.0.0.1:6379");
        assert!(!args.redis.redis_cluster);
        assert_eq!(args.visibility_timeout.get(), Duration::from_secs(60));
        assert_eq!(args.shutdown_grace.get(), Duration::from_secs(25));
        assert_eq!(args.secrets_dir, PathBuf::from(DEFAULT_SECRETS_DIR));
        assert_eq!(args.log_format, LogFormat::Text);
        let args = Args::try_parse_from([
            "fanout-worker",
            "--routes",
            "r.yaml",
            "--visibility-timeout",
            "2s",
            "--log-format",
            "json",
            "--redis-cluster",
        ])
        .unwrap();
        assert!(args.redis.redis_cluster);
        assert_eq!(args.visibility_timeout.get(), Duration::from_secs(2));
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(
            Args::try_parse_from(["fanout-worker", "--routes", "r", "--shutdown-grace", "5"])
                .is_err()
        );
    }
}
