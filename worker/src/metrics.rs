//! The worker's Prometheus metrics, registered once and shared by every
//! runner, and their text encoding for `/metrics`.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels naming one destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// `<namespace>/<route>`.
    pub route: String,
    /// Destination name.
    pub destination: String,
}

/// What became of one attempt.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// 2xx: acknowledged.
    delivered,
    /// Retry scheduled.
    retry,
    /// Sent to the dead-letter stream.
    dead_letter,
}

/// Labels of [`Metrics::deliveries`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `<namespace>/<route>`.
    pub route: String,
    /// Destination name.
    pub destination: String,
    /// What became of the attempt.
    pub outcome: Outcome,
}

/// One destination's series of the delivery metrics (see [`Metrics`]).
#[derive(Clone, Debug)]
pub struct DestinationMetrics {
    /// `deliveries_total{outcome="delivered"}`.
    pub delivered: Counter,
    /// `deliveries_total{outcome="retry"}`.
    pub retried: Counter,
    /// `deliveries_total{outcome="dead_letter"}`.
    pub dead_lettered: Counter,
    /// `delivery_duration_seconds`.
    pub duration: Histogram,
    /// `retries_scheduled_total`.
    pub retries_scheduled: Counter,
    /// `dead_letters_total`.
    pub dead_letters: Counter,
    /// `in_flight`.
    pub in_flight: Gauge,
}

impl DestinationMetrics {
    /// The `deliveries_total` series of `outcome`.
    pub fn deliveries(&self, outcome: Outcome) -> &Counter {
        match outcome {
            Outcome::delivered => &self.delivered,
            Outcome::retry => &self.retried,
            Outcome::dead_letter => &self.dead_lettered,
        }
    }
}

/// Every metric of the worker.
pub struct Metrics {
    registry: Registry,
    /// `fanout_worker_deliveries_total`: attempts by outcome.
    pub deliveries: Family<OutcomeLabels, Counter>,
    /// `fanout_worker_delivery_duration_seconds`: attempt latency.
    pub duration: Family<DestinationLabels, Histogram>,
    /// `fanout_worker_retries_scheduled_total`.
    pub retries_scheduled: Family<DestinationLabels, Counter>,
    /// `fanout_worker_dead_letters_total`.
    pub dead_letters: Family<DestinationLabels, Counter>,
    /// `fanout_worker_backlog`: entries not yet delivered (lag + pending).
    pub backlog: Family<DestinationLabels, Gauge>,
    /// `fanout_worker_in_flight`: attempts running now.
    pub in_flight: Family<DestinationLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fanout_worker");
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by destination and outcome (delivered, retry, dead_letter)",
            deliveries.clone(),
        );
        let duration = Family::<DestinationLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let duration_family: Family<DestinationLabels, Histogram> = duration.clone();
        registry.register(
            "delivery_duration_seconds",
            "Duration of one delivery attempt, answer or failure",
            duration_family,
        );
        let retries_scheduled = Family::<DestinationLabels, Counter>::default();
        registry.register(
            "retries_scheduled",
            "Retries scheduled after a failed attempt",
            retries_scheduled.clone(),
        );
        let dead_letters = Family::<DestinationLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Events written to a destination's dead-letter stream",
            dead_letters.clone(),
        );
        let backlog = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "backlog",
            "Events not yet delivered to the destination: unread plus pending",
            backlog.clone(),
        );
        let in_flight = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "in_flight",
            "Delivery attempts in progress in this worker",
            in_flight.clone(),
        );
        Self {
            registry,
            deliveries,
            duration: Family::clone(&duration),
            retries_scheduled,
            dead_letters,
            backlog,
            in_flight,
        }
    }

    /// The handles of one destination's series, looked up once so that the
    /// delivery path updates them without hashing labels.
    pub fn destination(&self, labels: &DestinationLabels) -> DestinationMetrics {
        let outcome = |outcome| {
            self.deliveries
                .get_or_create(&OutcomeLabels {
                    route: labels.route.clone(),
                    destination: labels.destination.clone(),
                    outcome,
                })
                .clone()
        };
        DestinationMetrics {
            delivered: outcome(Outcome::delivered),
            retried: outcome(Outcome::retry),
            dead_lettered: outcome(Outcome::dead_letter),
            duration: self.duration.get_or_create(labels).clone(),
            retries_scheduled: self.retries_scheduled.get_or_create(labels).clone(),
            dead_letters: self.dead_letters.get_or_create(labels).clone(),
            in_flight: self.in_flight.get_or_create(labels).clone(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_labels() {
        let metrics = Metrics::new();
        let dest = DestinationLabels {
            route: "shop/orders".into(),
            destination: "a".into(),
        };
        metrics
            .deliveries
            .get_or_create(&OutcomeLabels {
                route: dest.route.clone(),
                destination: dest.destination.clone(),
                outcome: Outcome::dead_letter,
            })
            .inc();
        metrics.duration.get_or_create(&dest).observe(0.02);
        metrics.backlog.get_or_create(&dest).set(7);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"fanout_worker_deliveries_total{route="shop/orders",destination="a",outcome="dead_letter"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("fanout_worker_delivery_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"fanout_worker_backlog{route="shop/orders",destination="a"} 7"#),
            "{text}"
        );
    }
}
