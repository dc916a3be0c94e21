//! The ingest service's configuration: flags (each with an environment
//! variable) turned into one typed [`Config`], checked once at startup.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use fanout_api::{
    FanoutRoute, RedisTarget, RoutesFileError,
    connection::{RedisArgs, RedisTargetError},
    load_routes_file,
    secrets::DEFAULT_SECRETS_DIR,
};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags of `fanout-ingest`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fanout-ingest",
    version,
    about = "Accepts events over HTTP and stores each once in its route's Redis stream"
)]
pub struct Args {
    /// Routes file: one or more FanoutRoute YAML documents.
    #[arg(long, env = "FANOUT_ROUTES")]
    pub routes: PathBuf,
    /// Redis, where events are stored.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Address to serve HTTP on.
    #[arg(long, env = "FANOUT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Directory holding the Secrets routes refer to, as
    /// `<dir>/<secret name>/<key>`.
    #[arg(long, env = "FANOUT_SECRETS_DIR", default_value = DEFAULT_SECRETS_DIR)]
    pub secrets_dir: PathBuf,
    /// Refuse events (503) while Redis used memory exceeds this fraction of
    /// its `maxmemory` (ignored when Redis has no `maxmemory`).
    #[arg(long, env = "FANOUT_REDIS_MEMORY_WATERMARK", default_value_t = 0.9)]
    pub redis_memory_watermark: f64,
    /// Log format.
    #[arg(long, env = "FANOUT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The routes file is unusable.
    #[error(transparent)]
    Routes(#[from] RoutesFileError),
    /// The Redis URL is unusable.
    #[error("--redis-url: {0}")]
    Redis(#[from] RedisTargetError),
    /// The watermark is not a fraction.
    #[error("--redis-memory-watermark must be greater than 0 and at most 1, got {0}")]
    Watermark(f64),
    /// An interval is zero.
    #[error("{0} must be longer than 0")]
    ZeroInterval(&'static str),
}

/// Everything the service needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The routes served (already validated).
    pub routes: Vec<FanoutRoute>,
    /// Where Redis is, a single server or a cluster.
    pub redis: RedisTarget,
    /// Where Secrets are mounted.
    pub secrets_dir: PathBuf,
    /// Fraction of `maxmemory` above which events are refused.
    pub redis_memory_watermark: f64,
    /// How often Redis reachability and memory are checked.
    pub redis_check_interval: Duration,
    /// How often token files are checked for changes.
    pub token_reload_interval: Duration,
    /// How long a Redis command may take before it counts as failed.
    pub redis_timeout: Duration,
}

impl Config {
    /// A configuration with every default, for `routes` on `redis`.
    pub fn new(routes: Vec<FanoutRoute>, redis: RedisTarget) -> Self {
        Self {
            routes,
            redis,
            secrets_dir: PathBuf::from(DEFAULT_SECRETS_DIR),
            redis_memory_watermark: 0.9,
            redis_check_interval: Duration::from_secs(1),
            token_reload_interval: Duration::from_secs(10),
            redis_timeout: Duration::from_secs(5),
        }
    }

    /// Reads the routes file named by the flags and builds the
    /// configuration; [`Config::validate`] checks the rest.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let routes = load_routes_file(&args.routes)?;
        let redis = args.redis.target()?;
        let mut config = Self::new(routes, redis);
        config.secrets_dir = args.secrets_dir.clone();
        config.redis_memory_watermark = args.redis_memory_watermark;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the routes file loader did not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let w = self.redis_memory_watermark;
        if !(w > 0.0 && w <= 1.0) {
            return Err(ConfigError::Watermark(w));
        }
        for (name, value) in [
            ("redis_check_interval", self.redis_check_interval),
            ("token_reload_interval", self.token_reload_interval),
            ("redis_timeout", self.redis_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroInterval(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_bad_watermarks() {
        let redis = RedisTarget::new("redis://127.0.0.1:6379", false).unwrap();
        let mut config = Config::new(Vec::new(), redis);
        assert!(config.validate().is_ok());
        for w in [0.0, -0.5, 1.5, f64::NAN] {
            config.redis_memory_watermark = w;
            assert!(
                matches!(config.validate(), Err(ConfigError::Watermark(_))),
                "{w}"
            );
        }
        config.redis_memory_watermark = 1.0;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn redis_cluster_is_a_flag_or_an_environment_boolean() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["fanout-ingest", "--routes", "r.yaml"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().redis.redis_cluster
        };
        assert!(!parse(&[]));
        assert!(parse(&["--redis-cluster"]));
    }
}
