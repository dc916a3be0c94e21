//! The load generator: a fixed number of keep-alive HTTP/1.1 connections to
//! one loopback address, each sending the same POST back to back, bounded
//! by a request count and a duration, with a latency histogram.
//!
//! It exists so that single-event ingest, batch ingest and the no-Redis
//! handler are all measured by the same client in the same way, and so that
//! the benchmark can never send traffic anywhere but to this machine.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, task::JoinSet};

/// Why a load run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not on this machine.
    #[error("refusing to send load to {0}: only loopback targets are allowed")]
    NotLoopback(SocketAddr),
    /// No TCP connection could be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error talking to {addr}: {source}")]
    Http {
        /// The target.
        addr: SocketAddr,
        /// The hyper error.
        source: hyper::Error,
    },
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("{0} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout(SocketAddr),
    /// The request could not be built (a bad path).
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    /// The target refused the probe request sent before the run.
    #[error("{path} answered {status} to the probe request: {body}")]
    Refused {
        /// The request path.
        path: String,
        /// The status.
        status: u16,
        /// The answer's body, for the operator to read.
        body: String,
    },
}

/// What to send, where, and for how long.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// The target, a loopback address.
    pub addr: SocketAddr,
    /// The request path, for example `/bench/v1/event`.
    pub path: String,
    /// The request body, sent as `application/json` on every request.
    pub body: Bytes,
    /// Events in one request (1 for single events, the batch size for
    /// batches), to report events/s.
    pub events_per_request: u64,
    /// Concurrent keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// The run stops after this long...
    pub duration: Duration,
    /// ...or after this many requests, whichever comes first.
    pub max_requests: u64,
}

/// A request not answered within this time counts as a transport error and
/// its connection is replaced, so a hung server cannot hang a run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one load run.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise, by status.
    pub refused: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection errors).
    pub transport_errors: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Events in one request.
    pub events_per_request: u64,
    /// Latency of the 2xx requests, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    /// Requests answered 2xx per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Events accepted per second.
    pub fn events_per_sec(&self) -> f64 {
        self.requests_per_sec() * self.events_per_request as f64
    }

    /// Events accepted.
    pub fn events(&self) -> u64 {
        self.ok * self.events_per_request
    }

    /// The latency at quantile `q` (0.5 for the median).
    pub fn latency(&self, q: f64) -> Duration {
        Duration::from_micros(self.latency_us.value_at_quantile(q))
    }

    /// Requests not answered 2xx, whatever the reason.
    pub fn failed(&self) -> u64 {
        self.refused.values().sum::<u64>() + self.transport_errors
    }
}

/// Runs the load described by `spec` and reports what happened. A probe
/// request is sent first and must be answered 2xx, so a misconfigured run
/// fails loudly instead of measuring error answers.
pub async fn run(spec: &LoadSpec) -> Result<LoadReport, LoadError> {
    if !spec.addr.ip().is_loopback() {
        return Err(LoadError::NotLoopback(spec.addr));
    }
    let mut probe = Conn::open(spec.addr).await?;
    let (status, body) =
        tokio::time::timeout(REQUEST_TIMEOUT, probe.post(&spec.path, spec.body.clone()))
            .await
            .map_err(|_| LoadError::Timeout(spec.addr))??;
    if !status.is_success() {
        return Err(LoadError::Refused {
            path: spec.path.clone(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    drop(probe);

    let spec = Arc::new(spec.clone());
    let tickets = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..spec.connections.max(1) {
        tasks.spawn(connection(spec.clone(), tickets.clone(), deadline));
    }
    let mut report = LoadReport {
        ok: 0,
        refused: BTreeMap::new(),
        transport_errors: 0,
        elapsed: Duration::ZERO,
        events_per_request: spec.events_per_request,
        latency_us: new_histogram(),
    };
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stats)) => {
                report.ok += stats.ok;
                report.transport_errors += stats.transport_errors;
                for (status, n) in stats.refused {
                    *report.refused.entry(status).or_default() += n;
                }
                // Both histograms have the same bounds, so adding cannot fail.
                let _ = report.latency_us.add(&stats.latency_us);
            }
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    report.elapsed = start.elapsed();
    match first_error {
        // A connection that could not be (re)opened ends the whole run only
        // when nothing at all was measured.
        Some(error) if report.ok == 0 => Err(error),
        _ => Ok(report),
    }
}

struct ConnStats {
    ok: u64,
    refused: BTreeMap<u16, u64>,
    transport_errors: u64,
    latency_us: Histogram<u64>,
}

async fn connection(
    spec: Arc<LoadSpec>,
    tickets: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<ConnStats, LoadError> {
    let mut stats = ConnStats {
        ok: 0,
        refused: BTreeMap::new(),
        transport_errors: 0,
        latency_us: new_histogram(),
    };
    let mut conn = Conn::open(spec.addr).await?;
    while Instant::now() < deadline && tickets.fetch_add(1, Ordering::Relaxed) < spec.max_requests {
        let sent = Instant::now();
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, conn.post(&spec.path, spec.body.clone()))
                .await
                .unwrap_or(Err(LoadError::Timeout(spec.addr)));
        match answer {
            Ok((status, _)) if status.is_success() => {
                stats.ok += 1;
                stats
                    .latency_us
                    .saturating_record(sent.elapsed().as_micros() as u64);
            }
            Ok((status, _)) => *stats.refused.entry(status.as_u16()).or_default() += 1,
            Err(_) => {
                stats.transport_errors += 1;
                conn = Conn::open(spec.addr).await?;
            }
        }
    }
    Ok(stats)
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s with 3 significant digits: fixed, valid bounds.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One HTTP/1.1 keep-alive connection.
struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self, LoadError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| LoadError::Connect { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| LoadError::Connect { addr, source })?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| LoadError::Http { addr, source })?;
        tokio::spawn(driver);
        Ok(Self { addr, sender })
    }

    async fn post(&mut self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes), LoadError> {
        let addr = self.addr;
        let http = |source| LoadError::Http { addr, source };
        self.sender.ready().await.map_err(http)?;
        let request = Request::post(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(http)?;
        Ok((status, body.to_bytes()))
    }
}

/// One `GET` on a fresh connection, for readiness checks: the status, or
/// `None` when nothing answers within a second.
pub async fn get_status(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    if !addr.ip().is_loopback() {
        return None;
    }
    tokio::time::timeout(Duration::from_secs(1), get(addr, path))
        .await
        .ok()
        .flatten()
}

async fn get(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(driver);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    Some(response.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_targets_off_this_machine() {
        let spec = LoadSpec {
            addr: "192.0.2.1:80".parse().unwrap(),
            path: "/".into(),
            body: Bytes::new(),
            events_per_request: 1,
            connections: 1,
            duration: Duration::from_millis(1),
            max_requests: 1,
        };
        assert!(matches!(run(&spec).await, Err(LoadError::NotLoopback(_))));
    }
}
