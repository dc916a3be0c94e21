//! Delivery progress of a route, read from Redis for its status.
//!
//! Per destination: the backlog is what its consumer group has not finished
//! (entries not yet read, the group's `lag`, plus entries read but not yet
//! acknowledged, `pending`, which includes those waiting for a retry); dead
//! letters are the length of its dead-letter stream. The key names come from
//! `fanout_api::keys`, the same definitions ingest and worker use.
//!
//! On a Redis Cluster every command here names keys of one route only, which
//! share the route's hash tag, so each goes to the one node that holds the
//! route; nothing is pipelined across routes (a cluster refuses cross-slot
//! pipelines and transactions).

use std::time::Duration;

use fanout_api::{
    RouteKeys,
    connection::{RedisConnection, RedisTarget},
    keys::group_name,
    route::DestinationStatus,
};
use redis::{AsyncCommands, Value};

/// Most entries counted one by one when Redis cannot tell a group's lag
/// (after deletions in the stream); the backlog then reads at most this.
pub const LAG_SCAN_LIMIT: usize = 10_000;

/// Why the stats could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Redis refused or failed a command, or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Reads backlogs from one Redis server or Redis Cluster, through a
/// connection that connects on first use and reconnects by itself.
pub struct RedisStats {
    connection: RedisConnection,
    timeout: Duration,
}

impl RedisStats {
    /// A reader for `target`; nothing is connected until the first read,
    /// and a read fails after `timeout`. Must be called inside a Tokio
    /// runtime.
    pub fn new(target: &RedisTarget, timeout: Duration) -> Self {
        Self {
            connection: target.connect(timeout, timeout),
            timeout,
        }
    }

    /// Backlog and dead letters of each destination of the route, in the
    /// order given.
    pub async fn read(
        &self,
        namespace: &str,
        route: &str,
        destinations: &[String],
    ) -> Result<Vec<DestinationStatus>, StatsError> {
        tokio::time::timeout(
            self.timeout,
            self.read_inner(namespace, route, destinations),
        )
        .await
        .map_err(|_| StatsError::Timeout(self.timeout))?
    }

    async fn read_inner(
        &self,
        namespace: &str,
        route: &str,
        destinations: &[String],
    ) -> Result<Vec<DestinationStatus>, StatsError> {
        let mut con = self.connection.clone();
        let keys = RouteKeys::new(namespace, route);
        let events = keys.events();
        let stream_len: i64 = con.xlen(&events).await?;
        let groups = if stream_len > 0 || exists(&mut con, &events).await? {
            xinfo_groups(&mut con, &events).await?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(destinations.len());
        for destination in destinations {
            let group = groups.iter().find(|g| g.name == group_name(destination));
            let backlog = match group {
                // No group yet (no worker has started): every entry waits.
                None => stream_len,
                Some(group) => {
                    let lag = match group.lag {
                        Some(lag) => lag,
                        None => count_after(&mut con, &events, &group.last_delivered_id).await?,
                    };
                    lag + group.pending
                }
            };
            let dead_letters: i64 = con.xlen(keys.dead_letters(destination)).await?;
            out.push(DestinationStatus {
                name: destination.clone(),
                backlog,
                dead_letters,
            });
        }
        Ok(out)
    }
}

async fn exists(con: &mut RedisConnection, key: &str) -> Result<bool, redis::RedisError> {
    con.exists(key).await
}

/// One consumer group as `XINFO GROUPS` describes it.
#[derive(Debug, Default)]
struct GroupInfo {
    name: String,
    pending: i64,
    last_delivered_id: String,
    /// `None` when Redis cannot tell (Redis < 7, or deletions in the stream).
    lag: Option<i64>,
}

async fn xinfo_groups(
    con: &mut RedisConnection,
    stream: &str,
) -> Result<Vec<GroupInfo>, redis::RedisError> {
    let reply: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await?;
    let Value::Array(groups) = reply else {
        return Ok(Vec::new());
    };
    Ok(groups.iter().map(parse_group).collect())
}

fn parse_group(value: &Value) -> GroupInfo {
    let mut info = GroupInfo::default();
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    for (key, value) in pairs {
        match (text(key).as_deref(), value) {
            (Some("name"), v) => info.name = text(v).unwrap_or_default(),
            (Some("last-delivered-id"), v) => info.last_delivered_id = text(v).unwrap_or_default(),
            (Some("pending"), Value::Int(n)) => info.pending = *n,
            (Some("lag"), Value::Int(n)) => info.lag = Some(*n),
            _ => {}
        }
    }
    info
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Entries after `id`, counted up to [`LAG_SCAN_LIMIT`].
async fn count_after(
    con: &mut RedisConnection,
    stream: &str,
    id: &str,
) -> Result<i64, redis::RedisError> {
    let mut start = format!("({id}");
    let mut counted = 0usize;
    while counted < LAG_SCAN_LIMIT {
        let page = (LAG_SCAN_LIMIT - counted).min(1000);
        let reply: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(page)
            .query_async(con)
            .await?;
        let Value::Array(entries) = reply else { break };
        counted += entries.len();
        let last_id = entries.last().and_then(|entry| match entry {
            Value::Array(parts) => parts.first().and_then(text),
            _ => None,
        });
        match last_id {
            Some(last) if entries.len() == page => start = format!("({last}"),
            _ => break,
        }
    }
    Ok(i64::try_from(counted).unwrap_or(i64::MAX))
}
