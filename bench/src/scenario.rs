//! The benchmark run, step by step: the no-Redis reference, single-event
//! and batch ingest, the redis-benchmark XADD ceiling, then delivery of a
//! pre-loaded backlog to 3 destinations and to 1. Every step is bounded in
//! count and time, talks only to 127.0.0.1, and every process it starts is
//! stopped when the step (or the run) ends.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::Bytes;
use fanout_testkit::free_port;
use redis::aio::MultiplexedConnection;

use crate::{
    load::{self, LoadError, LoadReport, LoadSpec},
    procs::{Proc, ProcError, own_cpu_time},
    redis_tools::{self, RedisToolError, XaddCeiling},
    report::{BenchResults, DeliveryFigure, LoadFigure, Setup},
    routes::{BenchRoute, routes_yaml},
    sink::FastSink,
};

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A child process failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A load run failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A Redis step failed.
    #[error(transparent)]
    Redis(#[from] RedisToolError),
    /// A file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A phase did not reach its goal in time.
    #[error("{0}")]
    Incomplete(String),
}

/// What to run and how hard, validated once at start-up.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The `fanout-ingest` executable (release build).
    pub ingest_bin: PathBuf,
    /// The `fanout-worker` executable (release build).
    pub worker_bin: PathBuf,
    /// The `fanout-bench` executable itself, run as the no-Redis server.
    pub self_bin: PathBuf,
    /// Concurrent keep-alive connections of every load run.
    pub connections: usize,
    /// Duration of each ingest load run.
    pub duration: Duration,
    /// Events per batch in the batch run.
    pub batch_size: u64,
    /// Events pre-loaded for each delivery run.
    pub delivery_events: u64,
    /// XADD commands redis-benchmark sends.
    pub xadd_requests: u64,
    /// Where child process logs go; a temporary directory when `None`.
    pub log_dir: Option<PathBuf>,
}

/// The body of every benchmark event: a small order, as a typical webhook
/// producer sends.
pub const EVENT: &str =
    r#"{"type":"order.created","order":{"id":"o-12345","amount":4250,"currency":"EUR"}}"#;

const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A delivery run ends in failure when no delivery arrives for this long.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Upper bound of one delivery run.
const DELIVERY_LIMIT: Duration = Duration::from_secs(600);
/// Upper bound of a pre-load.
const PRELOAD_LIMIT: Duration = Duration::from_secs(120);

/// Runs the whole benchmark; `progress` receives one line per step. Child
/// process logs are kept (and their folder named in the error) when a step
/// fails.
pub async fn run(
    config: &BenchConfig,
    progress: impl Fn(&str),
) -> Result<BenchResults, BenchError> {
    let temp = tempfile::Builder::new()
        .prefix("fanout-bench-")
        .tempdir()
        .map_err(|source| io("temporary directory", source))?;
    let log_dir = config.log_dir.clone().unwrap_or_else(|| temp.path().into());
    std::fs::create_dir_all(&log_dir).map_err(|source| io("log directory", source))?;
    let result = run_in(config, &log_dir, progress).await;
    if result.is_err() && config.log_dir.is_none() {
        let kept = temp.keep();
        eprintln!("logs of the failed run: {}", kept.display());
    }
    result
}

async fn run_in(
    config: &BenchConfig,
    log_dir: &Path,
    progress: impl Fn(&str),
) -> Result<BenchResults, BenchError> {
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok());

    // Destinations: one sink per delivery run, started first so the routes
    // file can name them.
    let sink3 = FastSink::start(3)
        .await
        .map_err(|source| io("sink", source))?;
    let sink1 = FastSink::start(1)
        .await
        .map_err(|source| io("sink", source))?;
    let ingest_route = BenchRoute::new("ingest", vec!["http://127.0.0.1:9/unused".into()]);
    let deliver3 = BenchRoute::new("deliver3", (0..3).map(|i| sink3.url(i)).collect());
    let deliver1 = BenchRoute::new("deliver1", vec![sink1.url(0)]);
    let all_routes = write_routes(
        &log_dir.join("routes.yaml"),
        &[ingest_route.clone(), deliver3.clone(), deliver1.clone()],
    )?;

    let event = Bytes::from_static(EVENT.as_bytes());
    let batch = batch_body(config.batch_size);
    let single_spec = |addr: SocketAddr, path: String| LoadSpec {
        addr,
        path,
        body: event.clone(),
        events_per_request: 1,
        connections: config.connections,
        duration: config.duration,
        max_requests: 50_000_000,
    };

    // 1. The no-Redis reference handler.
    progress("no-Redis axum handler, single events");
    let no_redis = {
        let addr = loopback(free_port());
        let mut server = Proc::spawn(
            "no-redis",
            &config.self_bin,
            &[
                "no-redis".into(),
                "--routes".into(),
                path_arg(&all_routes),
                "--listen".into(),
                addr.to_string(),
            ],
            log_dir,
        )?;
        server.wait_ready(addr, "/healthz", START_LIMIT).await?;
        let cpu_before = server.cpu_time();
        let client_before = own_cpu_time();
        let report = load::run(&single_spec(addr, ingest_route.event_path())).await?;
        let mut figure = LoadFigure::from_report(&report);
        figure.server_cpu_per_event = per_event(cpu_before, server.cpu_time(), &report);
        figure.client_cpu_per_event = per_event(client_before, own_cpu_time(), &report);
        server.terminate(STOP_GRACE).await;
        figure
    };

    // 2. Ingest, against a redis-server with production durability.
    let redis = redis_tools::start_aof_server();
    let mut conn = redis_tools::connect(&redis.url()).await?;
    let ingest_addr = loopback(free_port());
    let mut ingest = Proc::spawn(
        "ingest",
        &config.ingest_bin,
        &[
            "--routes".into(),
            path_arg(&all_routes),
            "--redis-url".into(),
            redis.url(),
            "--listen".into(),
            ingest_addr.to_string(),
        ],
        log_dir,
    )?;
    ingest
        .wait_ready(ingest_addr, "/readyz", START_LIMIT)
        .await?;
    let rss_before = ingest.rss_kib();

    progress("ingest, single events");
    let single = measure_ingest(
        &ingest,
        &mut conn,
        &single_spec(ingest_addr, ingest_route.event_path()),
    )
    .await?;
    redis_tools::del(&mut conn, &ingest_route.stream()).await?;

    progress("ingest, batches");
    let batch_spec = LoadSpec {
        addr: ingest_addr,
        path: ingest_route.batch_path(),
        body: batch.clone(),
        events_per_request: config.batch_size,
        connections: config.connections,
        duration: config.duration,
        max_requests: 100_000_000 / config.batch_size.max(1),
    };
    let batch_figure = measure_ingest(&ingest, &mut conn, &batch_spec).await?;
    redis_tools::del(&mut conn, &ingest_route.stream()).await?;
    let rss_after = ingest.rss_kib();

    // 3. The XADD ceiling of a fresh redis-server with the same settings.
    progress("redis-benchmark XADD ceiling");
    let ceiling = {
        let server = redis_tools::start_aof_server();
        let ceiling = XaddCeiling {
            port: server.port(),
            requests: config.xadd_requests,
            clients: 50,
            pipeline: 64,
        };
        (ceiling.measure(EVENT).await?, ceiling)
    };

    // 4. Deliveries of a pre-loaded backlog, 3 destinations then 1.
    let mut deliveries = Vec::new();
    for (route, sink) in [(&deliver3, &sink3), (&deliver1, &sink1)] {
        progress(&format!(
            "deliveries, {} destination(s): pre-loading {} events",
            route.destinations.len(),
            config.delivery_events
        ));
        let preload = LoadSpec {
            addr: ingest_addr,
            path: route.batch_path(),
            body: batch.clone(),
            events_per_request: config.batch_size,
            connections: config.connections.min(16),
            duration: PRELOAD_LIMIT,
            // The probe request of the load run is one batch more.
            max_requests: (config.delivery_events / config.batch_size.max(1)).saturating_sub(1),
        };
        load::run(&preload).await?;
        let events = redis_tools::xlen(&mut conn, &route.stream()).await?;
        progress(&format!(
            "deliveries, {} destination(s): draining {events} events",
            route.destinations.len()
        ));
        let routes_file = write_routes(
            &log_dir.join(format!("{}.yaml", route.name)),
            std::slice::from_ref(route),
        )?;
        deliveries.push(
            measure_delivery(
                config,
                log_dir,
                &routes_file,
                &redis.url(),
                &mut conn,
                route,
                sink,
                events,
            )
            .await?,
        );
    }
    ingest.terminate(STOP_GRACE).await;

    let (xadd_per_sec, ceiling) = ceiling;
    let results = BenchResults {
        setup: Setup {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            load_average,
            redis_version: redis_tools::server_version(),
            connections: config.connections,
            duration: config.duration,
            batch_size: config.batch_size,
            event_bytes: EVENT.len(),
            xadd_clients: ceiling.clients,
            xadd_pipeline: ceiling.pipeline,
        },
        no_redis,
        single,
        batch: batch_figure,
        xadd_per_sec,
        deliveries,
        ingest_rss_kib: (rss_before, rss_after),
    };
    Ok(results)
}

async fn measure_ingest(
    ingest: &Proc,
    conn: &mut MultiplexedConnection,
    spec: &LoadSpec,
) -> Result<LoadFigure, BenchError> {
    let cpu_before = ingest.cpu_time();
    let redis_before = redis_tools::server_cpu(conn).await?;
    let client_before = own_cpu_time();
    let report = load::run(spec).await?;
    let mut figure = LoadFigure::from_report(&report);
    figure.server_cpu_per_event = per_event(cpu_before, ingest.cpu_time(), &report);
    figure.client_cpu_per_event = per_event(client_before, own_cpu_time(), &report);
    let redis_after = redis_tools::server_cpu(conn).await?;
    figure.redis_cpu_per_event = per_event(Some(redis_before), Some(redis_after), &report);
    Ok(figure)
}

#[allow(clippy::too_many_arguments)]
async fn measure_delivery(
    config: &BenchConfig,
    log_dir: &Path,
    routes_file: &Path,
    redis_url: &str,
    conn: &mut MultiplexedConnection,
    route: &BenchRoute,
    sink: &FastSink,
    events: u64,
) -> Result<DeliveryFigure, BenchError> {
    let destinations = route.destinations.len();
    let redis_before = redis_tools::server_cpu(conn).await?;
    let mut worker = Proc::spawn(
        &format!("worker-{}", route.name),
        &config.worker_bin,
        &[
            "--routes".into(),
            path_arg(routes_file),
            "--redis-url".into(),
            redis_url.into(),
            "--metrics-listen".into(),
            loopback(free_port()).to_string(),
            "--consumer".into(),
            format!("bench-{}", route.name),
        ],
        log_dir,
    )?;

    let start = Instant::now();
    let mut last_progress = (0, Instant::now());
    loop {
        worker.check_running()?;
        let counts = sink.counts();
        let total: u64 = counts.iter().sum();
        if counts.iter().all(|&n| n >= events) {
            break;
        }
        if total > last_progress.0 {
            last_progress = (total, Instant::now());
        }
        if last_progress.1.elapsed() > STALL_LIMIT || start.elapsed() > DELIVERY_LIMIT {
            return Err(BenchError::Incomplete(format!(
                "deliveries to {} stalled: {counts:?} of {events} each",
                route.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let worker_cpu = worker.cpu_time();
    let redis_cpu = redis_tools::server_cpu(conn)
        .await?
        .saturating_sub(redis_before);
    let done = Instant::now();
    let window = sink.window().unwrap_or_default();
    let deliveries: u64 = sink.counts().iter().sum();

    // The stream should empty itself once every destination is done.
    let mut trimmed_after = None;
    while done.elapsed() < Duration::from_secs(30) {
        if redis_tools::xlen(conn, &route.stream()).await? == 0 {
            trimmed_after = Some(done.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.terminate(STOP_GRACE).await;
    Ok(DeliveryFigure {
        destinations,
        events,
        deliveries,
        window,
        worker_cpu,
        redis_cpu,
        trimmed_after,
    })
}

fn per_event(
    before: Option<Duration>,
    after: Option<Duration>,
    report: &LoadReport,
) -> Option<Duration> {
    let used = after?.checked_sub(before?)?;
    Some(used.div_f64(report.events().max(1) as f64))
}

/// A JSON array of `size` copies of [`EVENT`] (at least one).
pub fn batch_body(size: u64) -> Bytes {
    let events: Vec<&str> = (0..size.max(1)).map(|_| EVENT).collect();
    Bytes::from(format!("[{}]", events.join(",")))
}

fn write_routes(path: &Path, routes: &[BenchRoute]) -> Result<PathBuf, BenchError> {
    std::fs::write(path, routes_yaml(routes))
        .map_err(|source| io(&format!("writing {}", path.display()), source))?;
    Ok(path.into())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn io(what: &str, source: std::io::Error) -> BenchError {
    BenchError::Io {
        what: what.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_body_is_a_json_array_of_the_event() {
        let body = batch_body(3);
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[0],
            serde_json::from_str::<serde_json::Value>(EVENT).unwrap()
        );
    }
}
