//! The figures of one benchmark run and how they are printed: a Markdown
//! table ready for `docs/benchmarks.md`, then the ratios against the targets
//! of issue 2.

use std::{fmt::Write as _, time::Duration};

use crate::load::LoadReport;

/// One load run, reduced to what is printed.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadFigure {
    /// Events accepted per second.
    pub events_per_sec: f64,
    /// Requests answered 2xx per second.
    pub requests_per_sec: f64,
    /// Median request latency.
    pub p50: Duration,
    /// 99th percentile request latency.
    pub p99: Duration,
    /// Events accepted in all.
    pub events: u64,
    /// Requests not answered 2xx.
    pub failed: u64,
    /// CPU time of the server process per accepted event, when known.
    pub server_cpu_per_event: Option<Duration>,
    /// CPU time of redis-server per accepted event, when Redis was involved.
    pub redis_cpu_per_event: Option<Duration>,
    /// CPU time of the load generator per accepted event.
    pub client_cpu_per_event: Option<Duration>,
}

impl LoadFigure {
    /// The figure of a load report.
    pub fn from_report(report: &LoadReport) -> Self {
        Self {
            events_per_sec: report.events_per_sec(),
            requests_per_sec: report.requests_per_sec(),
            p50: report.latency(0.5),
            p99: report.latency(0.99),
            events: report.events(),
            failed: report.failed(),
            server_cpu_per_event: None,
            redis_cpu_per_event: None,
            client_cpu_per_event: None,
        }
    }
}

/// One delivery run: a backlog of `events` drained by one worker into
/// `destinations` destinations.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryFigure {
    /// Destinations of the route.
    pub destinations: usize,
    /// Events pre-loaded.
    pub events: u64,
    /// Deliveries the sink received (at least `events * destinations`).
    pub deliveries: u64,
    /// From the first delivery to the last.
    pub window: Duration,
    /// Worker CPU time over the run.
    pub worker_cpu: Option<Duration>,
    /// redis-server CPU time over the run.
    pub redis_cpu: Duration,
    /// Time from the last delivery until the stream was trimmed to empty,
    /// `None` when it was not within the wait.
    pub trimmed_after: Option<Duration>,
}

impl DeliveryFigure {
    /// Deliveries per second.
    pub fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Events delivered to every destination per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Worker plus Redis CPU time per delivery: the cost of one event to one
    /// destination.
    pub fn cpu_per_delivery(&self) -> Option<Duration> {
        let total = self.worker_cpu? + self.redis_cpu;
        Some(total.div_f64(self.deliveries.max(1) as f64))
    }
}

/// The conditions of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    /// CPU cores of the machine.
    pub cores: usize,
    /// The 1-minute load average when the run started (other work on the
    /// machine skews every figure).
    pub load_average: Option<f64>,
    /// redis-server version.
    pub redis_version: String,
    /// Concurrent keep-alive connections of the load generator.
    pub connections: usize,
    /// Duration of each load run.
    pub duration: Duration,
    /// Events per batch.
    pub batch_size: u64,
    /// Bytes of one event body.
    pub event_bytes: usize,
    /// redis-benchmark clients.
    pub xadd_clients: u32,
    /// redis-benchmark pipeline depth.
    pub xadd_pipeline: u32,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResults {
    /// The conditions.
    pub setup: Setup,
    /// The no-Redis reference handler, single events.
    pub no_redis: LoadFigure,
    /// Ingest, single events.
    pub single: LoadFigure,
    /// Ingest, batches.
    pub batch: LoadFigure,
    /// redis-benchmark XADD commands per second.
    pub xadd_per_sec: f64,
    /// The delivery runs, most destinations first.
    pub deliveries: Vec<DeliveryFigure>,
    /// Ingest resident memory after start-up and after the ingest runs, KiB.
    pub ingest_rss_kib: (Option<u64>, Option<u64>),
}

/// A figure read against its target.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    /// What is divided by what.
    pub name: String,
    /// The quotient.
    pub value: f64,
    /// The target, as text.
    pub target: String,
    /// Whether the target is met.
    pub met: bool,
}

/// Largest growth of the per-delivery cost from 1 to 3 destinations that
/// still reads as "does not grow": run-to-run noise on this machine.
pub const COST_GROWTH_TOLERANCE: f64 = 1.15;

impl BenchResults {
    /// The ratios issue 2 sets targets for.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut ratios = vec![
            ratio(
                "single-event ingest / no-Redis handler",
                self.single.events_per_sec / self.no_redis.events_per_sec,
                ">= 0.5",
                |v| v >= 0.5,
            ),
            ratio(
                "batch ingest events/s / XADD ceiling",
                self.batch.events_per_sec / self.xadd_per_sec,
                ">= 0.5",
                |v| v >= 0.5,
            ),
        ];
        let most = self.deliveries.iter().max_by_key(|d| d.destinations);
        let one = self.deliveries.iter().find(|d| d.destinations == 1);
        if let (Some(most), Some(one)) = (most, one)
            && most.destinations > 1
            && let (Some(cost_most), Some(cost_one)) =
                (most.cpu_per_delivery(), one.cpu_per_delivery())
        {
            ratios.push(ratio(
                &format!(
                    "CPU per delivery, {} destinations / 1 destination",
                    most.destinations
                ),
                cost_most.as_secs_f64() / cost_one.as_secs_f64().max(1e-12),
                &format!("<= {COST_GROWTH_TOLERANCE}"),
                |v| v <= COST_GROWTH_TOLERANCE,
            ));
        }
        ratios
    }

    /// The report: a Markdown table of the figures, then the ratios.
    pub fn render(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fanout benchmark: {} cores, loopback, redis-server {} (appendonly yes, appendfsync everysec)",
            s.cores, s.redis_version
        );
        if let Some(load) = s.load_average {
            let _ = writeln!(out, "load average at start: {load:.2}");
        }
        let _ = writeln!(
            out,
            "load: {} keep-alive HTTP/1.1 connections, {} s per run, {}-byte events, batches of {}\n",
            s.connections,
            s.duration.as_secs(),
            s.event_bytes,
            s.batch_size
        );
        let _ = writeln!(out, "| run | throughput | p50 | p99 | notes |");
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- |");
        for (name, figure) in [
            ("no-Redis axum handler, single events", &self.no_redis),
            ("ingest, single events", &self.single),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {} events/s | {} | {} | {} |",
                thousands(figure.events_per_sec),
                millis(figure.p50),
                millis(figure.p99),
                load_notes(figure)
            );
        }
        let _ = writeln!(
            out,
            "| ingest, batches of {} | {} events/s ({} batches/s) | {} | {} | {} |",
            s.batch_size,
            thousands(self.batch.events_per_sec),
            thousands(self.batch.requests_per_sec),
            millis(self.batch.p50),
            millis(self.batch.p99),
            load_notes(&self.batch)
        );
        let _ = writeln!(
            out,
            "| redis-benchmark XADD ceiling (-P {} -c {}) | {} XADD/s | | | same entry shape as ingest |",
            s.xadd_pipeline,
            s.xadd_clients,
            thousands(self.xadd_per_sec)
        );
        for d in &self.deliveries {
            let _ = writeln!(
                out,
                "| deliveries, {} destination{} ({} events pre-loaded) | {} deliveries/s ({} events/s to all) | | | {} |",
                d.destinations,
                if d.destinations == 1 { "" } else { "s" },
                d.events,
                thousands(d.deliveries_per_sec()),
                thousands(d.events_per_sec()),
                delivery_notes(d)
            );
        }
        if let (Some(before), Some(after)) = self.ingest_rss_kib {
            let _ = writeln!(
                out,
                "| ingest RSS | {:.1} MiB after start, {:.1} MiB after the ingest runs | | | |",
                before as f64 / 1024.0,
                after as f64 / 1024.0
            );
        }
        let _ = writeln!(out, "\n| ratio | value | target | met |");
        let _ = writeln!(out, "| --- | ---: | --- | --- |");
        for r in self.ratios() {
            let _ = writeln!(
                out,
                "| {} | {:.2} | {} | {} |",
                r.name,
                r.value,
                r.target,
                if r.met { "yes" } else { "NO" }
            );
        }
        out
    }
}

fn ratio(name: &str, value: f64, target: &str, met: impl Fn(f64) -> bool) -> Ratio {
    Ratio {
        name: name.into(),
        value,
        target: target.into(),
        met: value.is_finite() && met(value),
    }
}

fn load_notes(figure: &LoadFigure) -> String {
    let mut notes = Vec::new();
    if let Some(cpu) = figure.server_cpu_per_event {
        notes.push(format!("server CPU {:.1} µs/event", micros(cpu)));
    }
    if let Some(cpu) = figure.redis_cpu_per_event {
        notes.push(format!("redis CPU {:.1} µs/event", micros(cpu)));
    }
    if let Some(cpu) = figure.client_cpu_per_event {
        notes.push(format!("load generator CPU {:.1} µs/event", micros(cpu)));
    }
    if figure.failed > 0 {
        notes.push(format!("{} requests not answered 2xx", figure.failed));
    }
    notes.join("; ")
}

fn delivery_notes(d: &DeliveryFigure) -> String {
    let mut notes = Vec::new();
    if let (Some(cpu), Some(worker)) = (d.cpu_per_delivery(), d.worker_cpu) {
        let per = |t: Duration| micros(t) / d.deliveries.max(1) as f64;
        notes.push(format!(
            "CPU {:.1} µs/delivery (worker {:.1}, redis {:.1})",
            micros(cpu),
            per(worker),
            per(d.redis_cpu)
        ));
    }
    let expected = d.events * d.destinations as u64;
    if d.deliveries > expected {
        notes.push(format!("{} duplicate deliveries", d.deliveries - expected));
    }
    notes.push(match d.trimmed_after {
        Some(after) => format!("stream empty {} after the last delivery", millis(after)),
        None => "stream NOT trimmed to empty".into(),
    });
    notes.join("; ")
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(events_per_sec: f64) -> LoadFigure {
        LoadFigure {
            events_per_sec,
            requests_per_sec: events_per_sec,
            p50: Duration::from_micros(500),
            p99: Duration::from_millis(2),
            events: 1000,
            failed: 0,
            server_cpu_per_event: None,
            redis_cpu_per_event: None,
            client_cpu_per_event: None,
        }
    }

    fn delivery(destinations: usize, cpu_ms: u64) -> DeliveryFigure {
        DeliveryFigure {
            destinations,
            events: 1000,
            deliveries: 1000 * destinations as u64,
            window: Duration::from_secs(1),
            worker_cpu: Some(Duration::from_millis(cpu_ms)),
            redis_cpu: Duration::ZERO,
            trimmed_after: Some(Duration::from_millis(5)),
        }
    }

    fn results() -> BenchResults {
        BenchResults {
            setup: Setup {
                cores: 2,
                load_average: Some(0.1),
                redis_version: "7.0.15".into(),
                connections: 64,
                duration: Duration::from_secs(10),
                batch_size: 100,
                event_bytes: 64,
                xadd_clients: 50,
                xadd_pipeline: 64,
            },
            no_redis: figure(100_000.0),
            single: figure(40_000.0),
            batch: figure(300_000.0),
            xadd_per_sec: 500_000.0,
            deliveries: vec![delivery(3, 3000), delivery(1, 1000)],
            ingest_rss_kib: (Some(10_240), Some(20_480)),
        }
    }

    #[test]
    fn ratios_read_against_the_targets() {
        let ratios = results().ratios();
        assert_eq!(ratios.len(), 3);
        assert!((ratios[0].value - 0.4).abs() < 1e-9 && !ratios[0].met);
        assert!((ratios[1].value - 0.6).abs() < 1e-9 && ratios[1].met);
        assert!((ratios[2].value - 1.0).abs() < 1e-9 && ratios[2].met);
    }

    #[test]
    fn report_shows_every_figure() {
        let text = results().render();
        for needle in [
            "| ingest, single events | 40,000 events/s | 0.50 ms | 2.00 ms |",
            "| ingest, batches of 100 | 300,000 events/s",
            "500,000 XADD/s",
            "deliveries, 3 destinations (1000 events pre-loaded) | 3,000 deliveries/s",
            "10.0 MiB after start, 20.0 MiB",
            "| single-event ingest / no-Redis handler | 0.40 | >= 0.5 | NO |",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }
}
