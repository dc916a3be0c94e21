//! `fanout-operator`: `run` (the default) reconciles FanoutRoutes, `crd`
//! prints the CustomResourceDefinition, `rbac` prints the RBAC manifests.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fanout_operator::{config::RunArgs, crd, rbac};
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let config = run.into_config().context("invalid configuration")?;
    fanout_operator::run(config, shutdown)
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
