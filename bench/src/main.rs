//! `fanout-bench`: the benchmark of the fanout data plane (`run`, what
//! `bench/run.sh` calls), and the two helpers it is made of, usable alone:
//! the no-Redis reference server and the load generator.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use fanout_api::HumanDuration;
use fanout_bench::{load, no_redis, scenario};

#[derive(Parser)]
#[command(about = "Benchmark of the fanout data plane on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole benchmark: starts redis-server, fanout-ingest,
    /// fanout-worker, a sink and the reference server, prints the figures.
    Run(RunArgs),
    /// The reference server: ingest's request handling without Redis.
    NoRedis {
        /// Routes file (FanoutRoute YAML).
        #[arg(long)]
        routes: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
    /// Load one loopback endpoint with POSTs of the benchmark event.
    Load {
        /// Target address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Request path, for example `/orders/v1/event`.
        #[arg(long)]
        path: String,
        /// Send batches of this many events (a JSON array) instead of one.
        #[arg(long)]
        batch: Option<u64>,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// How long to run.
        #[arg(long, default_value = "10s")]
        duration: HumanDuration,
        /// Most requests to send.
        #[arg(long, default_value_t = 10_000_000)]
        max_requests: u64,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The fanout-ingest executable; default: next to this one.
    #[arg(long)]
    ingest_bin: Option<PathBuf>,
    /// The fanout-worker executable; default: next to this one.
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Duration of each ingest run.
    #[arg(long, default_value = "10s")]
    duration: HumanDuration,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: u64,
    /// Events pre-loaded for each delivery run.
    #[arg(long, default_value_t = 50_000)]
    delivery_events: u64,
    /// XADD commands of the redis-benchmark run.
    #[arg(long, default_value_t = 2_000_000)]
    xadd_requests: u64,
    /// Keep child process logs in this folder.
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    match cli.command {
        Command::Run(args) => {
            let config = run_config(args)?;
            // On SIGINT/SIGTERM the run is dropped, which stops every
            // process it started.
            let outcome = runtime.block_on(async {
                tokio::select! {
                    results = scenario::run(&config, |step| eprintln!("== {step}")) => Some(results),
                    _ = shutdown_signal() => None,
                }
            });
            match outcome {
                Some(results) => println!("{}", results?.render()),
                None => {
                    eprintln!("interrupted; every process the benchmark started is stopped");
                    std::process::exit(130);
                }
            }
        }
        Command::NoRedis { routes, listen } => {
            runtime.block_on(async { no_redis::run(&routes, listen, shutdown_signal()).await })?
        }
        Command::Load {
            addr,
            path,
            batch,
            connections,
            duration,
            max_requests,
        } => {
            let (body, events_per_request) = match batch {
                Some(n) => (scenario::batch_body(n), n.max(1)),
                None => (Bytes::from_static(scenario::EVENT.as_bytes()), 1),
            };
            let report = runtime.block_on(load::run(&load::LoadSpec {
                addr,
                path,
                body,
                events_per_request,
                connections,
                duration: duration.get(),
                max_requests,
            }))?;
            println!(
                "{:.0} events/s, {:.0} requests/s, p50 {:?}, p99 {:?}, {} not 2xx",
                report.events_per_sec(),
                report.requests_per_sec(),
                report.latency(0.5),
                report.latency(0.99),
                report.failed()
            );
        }
    }
    Ok(())
}

fn run_config(args: RunArgs) -> anyhow::Result<scenario::BenchConfig> {
    let self_bin = std::env::current_exe().context("locating fanout-bench")?;
    let sibling = |name: &str| self_bin.with_file_name(name);
    let ingest_bin = args.ingest_bin.unwrap_or_else(|| sibling("fanout-ingest"));
    let worker_bin = args.worker_bin.unwrap_or_else(|| sibling("fanout-worker"));
    for bin in [&ingest_bin, &worker_bin] {
        if !bin.is_file() {
            bail!(
                "{} not found: build it first (bench/run.sh does)",
                bin.display()
            );
        }
    }
    if args.connections == 0 || args.batch_size == 0 || args.delivery_events == 0 {
        bail!("--connections, --batch-size and --delivery-events must be at least 1");
    }
    if args.duration.get() < Duration::from_secs(1) {
        bail!("--duration must be at least 1s");
    }
    Ok(scenario::BenchConfig {
        ingest_bin,
        worker_bin,
        self_bin,
        connections: args.connections,
        duration: args.duration.get(),
        batch_size: args.batch_size,
        delivery_events: args.delivery_events,
        xadd_requests: args.xadd_requests,
        log_dir: args.log_dir,
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
