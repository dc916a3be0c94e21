//! A fast in-process HTTP destination for the delivery benchmark.
//!
//! It answers 200 at once and only counts, per destination (`POST /d/<n>`),
//! with the times of the first and the last delivery. `testkit::Sink` keeps
//! every request, which tests need and a benchmark must not pay for.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::post,
};
use tokio::{net::TcpListener, task::JoinHandle};

struct Counter {
    count: AtomicU64,
    /// Nanoseconds since `Shared::base`; `u64::MAX` before the first.
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

struct Shared {
    base: Instant,
    destinations: Vec<Counter>,
}

/// The sink: `destinations` counters behind one loopback listener.
pub struct FastSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FastSink {
    /// Starts a sink for `destinations` destinations on a free loopback
    /// port.
    pub async fn start(destinations: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            destinations: (0..destinations)
                .map(|_| Counter {
                    count: AtomicU64::new(0),
                    first_ns: AtomicU64::new(u64::MAX),
                    last_ns: AtomicU64::new(0),
                })
                .collect(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/d/{index}", post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of destination `index`.
    pub fn url(&self, index: usize) -> String {
        format!("http://{}/d/{index}", self.addr)
    }

    /// Deliveries received so far, per destination.
    pub fn counts(&self) -> Vec<u64> {
        self.shared
            .destinations
            .iter()
            .map(|c| c.count.load(Ordering::Relaxed))
            .collect()
    }

    /// Time from the first delivery (to any destination) to the last one,
    /// or `None` before any.
    pub fn window(&self) -> Option<Duration> {
        let first = self
            .shared
            .destinations
            .iter()
            .map(|c| c.first_ns.load(Ordering::Relaxed))
            .min()?;
        let last = self
            .shared
            .destinations
            .iter()
            .map(|c| c.last_ns.load(Ordering::Relaxed))
            .max()?;
        (first != u64::MAX).then(|| Duration::from_nanos(last.saturating_sub(first)))
    }
}

impl Drop for FastSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(index): Path<usize>,
    _body: Bytes,
) -> StatusCode {
    let Some(counter) = shared.destinations.get(index) else {
        return StatusCode::NOT_FOUND;
    };
    let now = shared.base.elapsed().as_nanos() as u64;
    counter.first_ns.fetch_min(now, Ordering::Relaxed);
    counter.last_ns.fetch_max(now, Ordering::Relaxed);
    counter.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadSpec, run};

    #[tokio::test]
    async fn counts_deliveries_per_destination() {
        let sink = FastSink::start(2).await.unwrap();
        assert_eq!(sink.window(), None);
        let report = run(&LoadSpec {
            addr: sink.addr(),
            path: "/d/1".into(),
            body: Bytes::from_static(b"{}"),
            events_per_request: 1,
            connections: 2,
            duration: Duration::from_secs(5),
            max_requests: 10,
        })
        .await
        .unwrap();
        assert_eq!(report.ok, 10);
        // The probe request is the eleventh.
        assert_eq!(sink.counts(), vec![0, 11]);
        assert!(sink.window().is_some());
    }
}
