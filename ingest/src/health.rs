//! Whether Redis can take writes: reachable, and under the memory watermark.
//!
//! A background check reads `INFO memory` of every primary (one for a
//! single server, each primary of a cluster) every `redis_check_interval`
//! (1 s by default). `/readyz` is 200 only while the
//! last successful check is recent and memory is under the watermark, so a
//! load balancer stops sending to an ingest that cannot store. Requests are
//! refused up front with 503 `redis_overloaded` while used memory is over
//! `--redis-memory-watermark` of `maxmemory` (only when `maxmemory` is set),
//! rather than letting Redis fill up and refuse writes half-way. On a
//! cluster, one primary over the watermark is enough: the node holding a
//! route can change with a resharding, so the check does not guess. An
//! unreachable Redis is noticed by the write itself (503
//! `redis_unavailable`), so a short outage refuses no more than it must.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fanout_api::RedisConnection;

use crate::metrics::Metrics;

const NEVER: u64 = u64::MAX;

/// The last observed state of Redis.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    last_ok_ms: AtomicU64,
    overloaded: AtomicBool,
    stale_after: Duration,
}

impl Health {
    /// A state that is not ready until the first successful check; a check
    /// older than `stale_after` counts as failed.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_ok_ms: AtomicU64::new(NEVER),
            overloaded: AtomicBool::new(false),
            stale_after,
        }
    }

    /// Whether Redis memory was over the watermark at the last check.
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Whether Redis answered recently and is under the watermark.
    pub fn ready(&self) -> bool {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        last != NEVER
            && (self.started.elapsed().as_millis() as u64).saturating_sub(last)
                <= self.stale_after.as_millis() as u64
            && !self.overloaded()
    }

    fn record(&self, ratio: Option<f64>, watermark: f64, metrics: &Metrics) {
        let over = ratio.is_some_and(|r| r > watermark);
        if over != self.overloaded.swap(over, Ordering::Relaxed) {
            if over {
                tracing::warn!(
                    ratio = ratio.unwrap_or_default(),
                    watermark,
                    "Redis memory over the watermark: refusing events"
                );
            } else {
                tracing::info!("Redis memory back under the watermark: accepting events");
            }
        }
        self.last_ok_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        metrics.redis_ready.set(i64::from(!over));
    }

    /// Checks Redis every `interval` until the task is dropped.
    pub async fn watch(
        self: Arc<Self>,
        mut conn: RedisConnection,
        interval: Duration,
        watermark: f64,
        metrics: Arc<Metrics>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_ok = true;
        loop {
            ticker.tick().await;
            let check = conn.info_of_primaries("memory");
            match tokio::time::timeout(interval.max(Duration::from_secs(1)), check).await {
                Ok(Ok(infos)) => {
                    if !was_ok {
                        tracing::info!("Redis reachable again");
                    }
                    was_ok = true;
                    let fullest = infos
                        .iter()
                        .filter_map(|info| memory_ratio(info))
                        .reduce(f64::max);
                    self.record(fullest, watermark, &metrics);
                }
                failed => {
                    if was_ok {
                        match failed {
                            Ok(Err(error)) => tracing::warn!(%error, "Redis health check failed"),
                            _ => tracing::warn!("Redis health check timed out"),
                        }
                    }
                    was_ok = false;
                    metrics.redis_ready.set(0);
                }
            }
        }
    }
}

/// `used_memory / maxmemory` from the text of `INFO memory`, or `None` when
/// `maxmemory` is 0 (no limit) or missing.
pub fn memory_ratio(info: &str) -> Option<f64> {
    let field = |name: &str| {
        info.lines().find_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            (key == name).then(|| value.trim().parse::<u64>().ok())?
        })
    };
    let max = field("maxmemory").filter(|&max| max > 0)?;
    Some(field("used_memory")? as f64 / max as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_ratio_reads_used_and_max() {
        let info = "# Memory\r\nused_memory:900\r\nused_memory_human:900B\r\nmaxmemory:1000\r\nmaxmemory_human:1000B\r\n";
        assert_eq!(memory_ratio(info), Some(0.9));
        let unlimited = "used_memory:900\r\nmaxmemory:0\r\n";
        assert_eq!(memory_ratio(unlimited), None);
        assert_eq!(memory_ratio("garbage"), None);
    }

    #[test]
    fn readiness_needs_a_recent_check_under_the_watermark() {
        let metrics = Metrics::default();
        let health = Health::new(Duration::from_secs(60));
        assert!(!health.ready());
        health.record(Some(0.5), 0.9, &metrics);
        assert!(health.ready() && !health.overloaded());
        health.record(Some(0.95), 0.9, &metrics);
        assert!(!health.ready() && health.overloaded());
        health.record(None, 0.9, &metrics);
        assert!(health.ready());
        let stale = Health::new(Duration::ZERO);
        stale.record(None, 0.9, &metrics);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!stale.ready());
    }
}
