//! Removing consumers that have left a group for good.
//!
//! Each worker pod reads under its own consumer name (the pod name), so
//! every rollout leaves the replaced pods' names behind in every group. A
//! consumer with no pending entries that has not read for
//! [`DEAD_CONSUMER_IDLE`] is gone: a live worker reads at least once a
//! second. Deleting it loses nothing, since its pending list is empty, and
//! keeps `XINFO CONSUMERS` short. A consumer that still has pending entries
//! is never deleted here: reclaim hands those entries to a live worker
//! first, and the consumer goes on a later pass.

use std::time::Duration;

use redis::{aio::ConnectionLike, streams::StreamInfoConsumersReply};

use crate::store::StoreError;

/// How long a consumer with nothing pending must have been idle before it
/// counts as gone.
pub const DEAD_CONSUMER_IDLE: Duration = Duration::from_secs(3600);

/// Deletes the consumers of `group` on `stream` that have no pending entries
/// and have been idle longer than `idle_limit`; returns their names.
pub async fn remove_dead_consumers(
    conn: &mut impl ConnectionLike,
    stream: &str,
    group: &str,
    idle_limit: Duration,
) -> Result<Vec<String>, StoreError> {
    let reply: StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await?;
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

/// How often each route's groups are checked for dead consumers.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(300);

/// Removes dead consumers from every configured destination's group of
/// `route`, every [`CLEANUP_EVERY`], until `done`.
pub async fn cleanup_loop(
    route: crate::config::RouteConfig,
    conn: fanout_api::RedisConnection,
    done: tokio_util::sync::CancellationToken,
) {
    let stream = route.keys.events();
    let mut ticker = tokio::time::interval(CLEANUP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = done.cancelled() => return,
        }
        for dest in &route.destinations {
            let group = fanout_api::keys::group_name(&dest.name);
            match remove_dead_consumers(&mut conn.clone(), &stream, &group, DEAD_CONSUMER_IDLE)
                .await
            {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(%stream, %group, ?removed, "removed consumers idle for over an hour with nothing pending");
                }
                Ok(_) => {}
                // No stream or group yet: nothing to clean.
                Err(error) if error.is_no_group() => {}
                Err(error) => tracing::warn!(%stream, %group, %error, "cannot list consumers"),
            }
        }
    }
}
