//! `fanout-operator`: `run` (the default) reconciles FanoutRoutes, `crd`
//! prints the CustomResourceDefinition, `rbac` prints the RBAC manifests.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use fanout_operator::{
    OperatorConfig,
    config::{DataPlaneConfig, LeaseConfig, RedisUrlSource, Resources},
    crd, rbac,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "fanout-operator",
    version,
    about = "Reconciles FanoutRoutes into fanout ingest and worker Deployments"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile FanoutRoutes (the default).
    Run(Box<RunArgs>),
    /// Print the FanoutRoute CustomResourceDefinition as YAML.
    Crd,
    /// Print the ServiceAccount, ClusterRole and ClusterRoleBinding the
    /// operator needs (deploy/rbac.yaml).
    Rbac {
        /// Print only the ClusterRole's rules.
        #[arg(long)]
        rules: bool,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FANOUT_NAMESPACE")]
    namespace: Option<String>,
    /// Image of the data plane (holds fanout-ingest and fanout-worker); required
    /// for `run`.
    #[arg(long, env = "FANOUT_IMAGE")]
    image: Option<String>,
    /// Pull policy of the data-plane image: Always, IfNotPresent or Never.
    #[arg(long, env = "FANOUT_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    image_pull_policy: String,
    /// Redis the data plane uses and the operator reads backlogs from.
    #[arg(
        long,
        env = "FANOUT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Give data-plane pods FANOUT_REDIS_URL from key `url` of this Secret
    /// (in each route's namespace) instead of the value of --redis-url.
    #[arg(long, env = "FANOUT_REDIS_URL_SECRET")]
    redis_url_secret: Option<String>,
    /// IngressClass for routes whose spec.ingest.ingress names none.
    #[arg(long, env = "FANOUT_INGRESS_CLASS")]
    ingress_class: Option<String>,
    /// Health and metrics listen address.
    #[arg(long, env = "FANOUT_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, env = "FANOUT_LEASE_NAME", default_value = "fanout-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the client's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: pod name or host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds between two reconciles of a valid route (backlog refresh).
    #[arg(long, env = "FANOUT_REFRESH_SECONDS", default_value_t = 30)]
    refresh_seconds: u64,
}

impl RunArgs {
    fn into_config(self) -> OperatorConfig {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let run = match cli.command {
        Some(Command::Crd) => {
            print!("{}", crd::crd_yaml()?);
            return Ok(());
        }
        Some(Command::Rbac { rules }) => {
            print!(
                "{}",
                if rules {
                    rbac::rules_yaml()?
                } else {
                    rbac::manifests_yaml()?
                }
            );
            return Ok(());
        }
        Some(Command::Run(args)) => *args,
        None => cli.run,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    fanout_operator::run(run.into_config(), shutdown)
        .await
        .context("fanout-operator stopped")
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    shutdown.cancel();
}
