//! Removing what has left for good: consumers of replaced pods, and the
//! groups of destinations no worker delivers to any more.
//!
//! Each worker pod reads under its own consumer name (the pod name), so
//! every rollout leaves the replaced pods' names behind in every group. A
//! consumer with no pending entries that has not read for
//! [`DEAD_CONSUMER_IDLE`] is gone: a live worker reads at least once a
//! second. Deleting it loses nothing, since its pending list is empty, and
//! keeps `XINFO CONSUMERS` short. A consumer that still has pending entries
//! is never deleted here: reclaim hands those entries to a live worker
//! first, and the consumer goes on a later pass.
//!
//! Trimming waits for every group on a stream ([`crate::trim`]), so the
//! group of a destination removed from its route would hold the stream
//! forever. A fanout group (`d:` prefix) that this worker is not configured
//! with, that holds the stream back (entries pending, or entries it has not
//! read), and whose consumers have all been idle for [`ABANDONED_GROUP_IDLE`]
//! on two passes in a row, is read by no live worker: it is destroyed, with
//! what it still had pending. A live worker with work in such a group
//! refreshes its consumer's idle time at least every few seconds (it reads
//! the unread entries; it heartbeats the pending ones with XCLAIM), on every
//! Redis version; a group with no work is left alone, since it holds
//! nothing back and Redis before 7.2 does not count an empty read as
//! activity. A group some other worker still reads (an older or newer routes
//! file during a rollout, or destinations split over workers) is therefore
//! never destroyed. A group not named by fanout is never touched.

use std::{collections::HashSet, time::Duration};

use fanout_api::keys::GROUP_PREFIX;
use redis::{
    aio::ConnectionLike,
    streams::{StreamInfoConsumersReply, StreamInfoGroupsReply},
};

use crate::{store::StoreError, trim::StreamId};

/// How long a consumer with nothing pending must have been idle before it
/// counts as gone.
pub const DEAD_CONSUMER_IDLE: Duration = Duration::from_secs(3600);

/// XINFO CONSUMERS of `group` on `stream`.
async fn consumers(
    conn: &mut impl ConnectionLike,
    stream: &str,
    group: &str,
) -> Result<StreamInfoConsumersReply, StoreError> {
    Ok(redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await?)
}

/// Deletes the consumers of `group` on `stream` that have no pending entries
/// and have been idle longer than `idle_limit`; returns their names.
pub async fn remove_dead_consumers(
    conn: &mut impl ConnectionLike,
    stream: &str,
    group: &str,
    idle_limit: Duration,
) -> Result<Vec<String>, StoreError> {
    let reply = consumers(conn, stream, group).await?;
    let mut removed = Vec::new();
    for consumer in reply.consumers {
        if consumer.pending == 0 && consumer.idle as u128 > idle_limit.as_millis() {
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(stream)
                .arg(group)
                .arg(&consumer.name)
                .query_async(conn)
                .await?;
            removed.push(consumer.name);
        }
    }
    Ok(removed)
}

/// How long every consumer of a group this worker is not configured with
/// must have been idle, on two passes in a row, before the group counts as
/// abandoned.
pub const ABANDONED_GROUP_IDLE: Duration = Duration::from_secs(600);

/// Whether nobody has read `group` for `idle_limit`: every consumer idle
/// longer than that (true for a group without consumers).
pub async fn group_is_idle(
    conn: &mut impl ConnectionLike,
    stream: &str,
    group: &str,
    idle_limit: Duration,
) -> Result<bool, StoreError> {
    let reply = consumers(conn, stream, group).await?;
    Ok(reply
        .consumers
        .iter()
        .all(|consumer| consumer.idle as u128 > idle_limit.as_millis()))
}

/// What one [`Cleanup::pass`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// `(group, consumer)` of each dead consumer deleted.
    pub consumers: Vec<(String, String)>,
    /// Each abandoned group destroyed.
    pub groups: Vec<String>,
}

/// The cleanup of one route's stream, pass after pass: it remembers which
/// groups looked abandoned on the previous pass.
#[derive(Debug)]
pub struct Cleanup {
    stream: String,
    configured: Vec<String>,
    consumer_idle: Duration,
    group_idle: Duration,
    suspects: HashSet<String>,
}

impl Cleanup {
    /// The cleanup of `stream`, whose groups `configured` this worker reads.
    pub fn new(
        stream: String,
        configured: Vec<String>,
        consumer_idle: Duration,
        group_idle: Duration,
    ) -> Self {
        Self {
            stream,
            configured,
            consumer_idle,
            group_idle,
            suspects: HashSet::new(),
        }
    }

    /// Deletes the dead consumers of the configured groups and destroys the
    /// fanout groups that held the stream back unread on this pass and the
    /// one before.
    pub async fn pass(&mut self, conn: &mut impl ConnectionLike) -> Result<Removed, StoreError> {
        let info: Result<StreamInfoGroupsReply, _> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(conn)
            .await;
        let info = match info {
            Ok(info) => info,
            // No stream yet: nothing to clean.
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                return Ok(Removed::default());
            }
            Err(e) => return Err(e.into()),
        };
        let newest: Vec<(String, Vec<(String, redis::Value)>)> = redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        let newest = newest.first().and_then(|(id, _)| StreamId::parse(id));
        let mut removed = Removed::default();
        let mut suspects = HashSet::new();
        for found in info.groups {
            let holds_back = found.pending > 0
                || newest.is_some_and(|newest| {
                    StreamId::parse(&found.last_delivered_id).is_none_or(|last| last < newest)
                });
            let group = found.name;
            if self.configured.contains(&group) {
                for consumer in
                    remove_dead_consumers(conn, &self.stream, &group, self.consumer_idle).await?
                {
                    removed.consumers.push((group.clone(), consumer));
                }
            } else if group.starts_with(GROUP_PREFIX)
                && holds_back
                && group_is_idle(conn, &self.stream, &group, self.group_idle).await?
            {
                if self.suspects.contains(&group) {
                    let _: i64 = redis::cmd("XGROUP")
                        .arg("DESTROY")
                        .arg(&self.stream)
                        .arg(&group)
                        .query_async(conn)
                        .await?;
                    removed.groups.push(group);
                } else {
                    suspects.insert(group);
                }
            }
        }
        self.suspects = suspects;
        Ok(removed)
    }
}

/// How often each route's groups are checked.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(300);

/// Runs a [`Cleanup`] of `route`'s stream every [`CLEANUP_EVERY`] until
/// `done`.
pub async fn cleanup_loop(
    route: crate::config::RouteConfig,
    conn: fanout_api::RedisConnection,
    done: tokio_util::sync::CancellationToken,
) {
    let stream = route.keys.events();
    let configured = route
        .destinations
        .iter()
        .map(|d| fanout_api::keys::group_name(&d.name))
        .collect();
    let mut cleanup = Cleanup::new(
        stream.clone(),
        configured,
        DEAD_CONSUMER_IDLE,
        ABANDONED_GROUP_IDLE,
    );
    let mut ticker = tokio::time::interval(CLEANUP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = done.cancelled() => return,
        }
        match cleanup.pass(&mut conn.clone()).await {
            Ok(removed) => {
                for (group, consumer) in removed.consumers {
                    tracing::info!(%stream, %group, %consumer, "removed a consumer idle for over an hour with nothing pending");
                }
                for group in removed.groups {
                    tracing::warn!(%stream, %group, "destroyed the group of a destination no worker reads any more (removed from its route)");
                }
            }
            Err(error) => tracing::warn!(%stream, %error, "cannot clean up consumers and groups"),
        }
    }
}
