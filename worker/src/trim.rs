//! Trimming a route's stream once every destination is done with its
//! oldest entries, and the per-destination backlog gauge.
//!
//! About once a second, per route: XINFO GROUPS on the route's stream; for
//! each group the oldest entry it still needs is its smallest pending id
//! (XPENDING summary) when it has pending entries, else the id just after
//! its last-delivered id; the stream is trimmed exactly (`XTRIM MINID`, not
//! `~`) to the smallest of those, so it is empty when all deliveries are
//! done. Every group on the stream counts, not only the destinations this
//! worker is configured with: during a rollout that adds a destination, the
//! workers still on the old routes must not trim what the new group has not
//! read. Groups nobody reads any more are destroyed by
//! [`crate::consumers`]. While a configured destination's group does not
//! exist yet nothing is trimmed. Every worker replica runs this; the trims
//! are idempotent.

use std::{sync::Arc, time::Duration};

use fanout_api::RedisConnection;
use redis::{Value, streams::StreamInfoGroupsReply};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    config::RouteConfig,
    metrics::{DestinationLabels, Metrics},
    store::{StoreError, text},
};

/// How often a route's stream is trimmed.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// A stream entry id `<ms>-<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// Parses `<ms>-<seq>` (or `<ms>`).
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id greater than this one.
    pub fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What one destination's group still needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupProgress {
    /// Pending entries (read, not acknowledged).
    pub pending: u64,
    /// Smallest pending id, when known.
    pub first_pending: Option<StreamId>,
    /// Last id delivered to the group.
    pub last_delivered: StreamId,
}

/// The id below which no group needs anything: the trim point.
pub fn trim_point(groups: &[GroupProgress]) -> Option<StreamId> {
    groups
        .iter()
        .map(|g| match (g.pending, g.first_pending) {
            (p, Some(first)) if p > 0 => first,
            _ => g.last_delivered.next(),
        })
        .min()
}

/// Trims one route's stream and updates its backlog gauges until `done`.
pub async fn trim_loop(
    route: RouteConfig,
    conn: RedisConnection,
    metrics: Arc<Metrics>,
    done: CancellationToken,
) {
    let route_label = format!("{}/{}", route.namespace, route.name);
    let mut ticker = tokio::time::interval(TRIM_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = done.cancelled() => return,
        }
        if let Err(error) = trim_once(&route, &mut conn.clone(), &metrics, &route_label).await {
            warn!(route = %route_label, %error, "cannot trim stream");
        }
    }
}

/// One trim and backlog update.
pub async fn trim_once(
    route: &RouteConfig,
    conn: &mut RedisConnection,
    metrics: &Metrics,
    route_label: &str,
) -> Result<(), StoreError> {
    let stream = route.keys.events();
    let info: Result<StreamInfoGroupsReply, _> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(conn)
        .await;
    let info = match info {
        Ok(info) => info,
        // No stream yet: nothing to trim.
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let complete = route.destinations.iter().all(|dest| {
        let group = fanout_api::keys::group_name(&dest.name);
        info.groups.iter().any(|g| g.name == group)
    });
    let mut progress = Vec::with_capacity(info.groups.len());
    for found in &info.groups {
        let last_delivered =
            StreamId::parse(&found.last_delivered_id).ok_or(StoreError::Reply("XINFO GROUPS"))?;
        let first_pending = if found.pending > 0 {
            first_pending(conn, &stream, &found.name).await?
        } else {
            None
        };
        // The backlog gauge is for this worker's own destinations.
        if let Some(dest) = route
            .destinations
            .iter()
            .find(|d| fanout_api::keys::group_name(&d.name) == found.name)
        {
            let lag = match found.lag {
                Some(lag) => lag as u64,
                // Redis cannot tell the lag (rare, after deletions): count it.
                None => count_after(conn, &stream, last_delivered).await?,
            };
            metrics
                .backlog
                .get_or_create(&DestinationLabels {
                    route: route_label.to_owned(),
                    destination: dest.name.clone(),
                })
                .set((lag + found.pending as u64) as i64);
        }
        progress.push(GroupProgress {
            pending: found.pending as u64,
            first_pending,
            last_delivered,
        });
    }
    if !complete {
        return Ok(());
    }
    if let Some(point) = trim_point(&progress) {
        redis::cmd("XTRIM")
            .arg(&stream)
            .arg("MINID")
            .arg(point.to_string())
            .query_async::<i64>(conn)
            .await?;
    }
    Ok(())
}

/// The smallest pending id of a group (XPENDING summary).
async fn first_pending(
    conn: &mut RedisConnection,
    stream: &str,
    group: &str,
) -> Result<Option<StreamId>, StoreError> {
    let reply: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await?;
    let Value::Array(mut parts) = reply else {
        return Err(StoreError::Reply("XPENDING"));
    };
    if parts.len() < 2 {
        return Err(StoreError::Reply("XPENDING"));
    }
    Ok(text(parts.swap_remove(1)).and_then(|id| StreamId::parse(&id)))
}

/// Entries after `after` (used only when Redis does not report the lag).
async fn count_after(
    conn: &mut RedisConnection,
    stream: &str,
    after: StreamId,
) -> Result<u64, StoreError> {
    let ids: Vec<Value> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({after}"))
        .arg("+")
        .arg("COUNT")
        .arg(100_000)
        .query_async(conn)
        .await?;
    Ok(ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> StreamId {
        StreamId::parse(text).unwrap()
    }

    #[test]
    fn ids_parse_order_and_step() {
        assert!(id("5-1") < id("5-2"));
        assert!(id("5-9") < id("6-0"));
        assert_eq!(id("7"), id("7-0"));
        assert_eq!(id("5-1").next().to_string(), "5-2");
        assert_eq!(
            StreamId {
                ms: 5,
                seq: u64::MAX
            }
            .next(),
            id("6-0")
        );
        assert_eq!(StreamId::parse("x-1"), None);
    }

    #[test]
    fn trim_point_is_the_oldest_entry_any_group_needs() {
        let done = GroupProgress {
            pending: 0,
            first_pending: None,
            last_delivered: id("10-0"),
        };
        let busy = GroupProgress {
            pending: 2,
            first_pending: Some(id("4-0")),
            last_delivered: id("10-0"),
        };
        let behind = GroupProgress {
            pending: 0,
            first_pending: None,
            last_delivered: id("7-3"),
        };
        assert_eq!(trim_point(std::slice::from_ref(&done)), Some(id("10-1")));
        assert_eq!(trim_point(&[done.clone(), busy]), Some(id("4-0")));
        assert_eq!(trim_point(&[done, behind]), Some(id("7-4")));
        assert_eq!(trim_point(&[]), None);
    }
}
