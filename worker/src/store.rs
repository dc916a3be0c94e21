//! The Redis side of one destination: its consumer group on the route's
//! stream, its retry hash and its dead-letter stream.
//!
//! Every Redis command the delivery runner sends is here, so the stream
//! protocol (what is acknowledged with what, which writes are one MULTI) is
//! in one place. The key names and entry format come from `fanout_api`.

use std::time::Duration;

use bytes::Bytes;
use fanout_api::RedisConnection;
use fanout_api::{
    RouteKeys,
    entry::{
        DeadLetter, FIELD_BODY, FIELD_CONTENT_TYPE, JSON_CONTENT_TYPE, RetryState, StoredEvent,
    },
    keys::group_name,
};
use redis::{RedisError, Value};

/// Longest a dead-letter stream grows (approximately, `MAXLEN ~`).
pub const DEAD_LETTER_MAXLEN: usize = 100_000;

/// A failed Redis command.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// A reply had an unexpected shape.
    #[error("unexpected reply to {0}")]
    Reply(&'static str),
}

impl StoreError {
    /// Whether the consumer group no longer exists (someone deleted it).
    pub fn is_no_group(&self) -> bool {
        matches!(self, Self::Redis(e) if e.code() == Some("NOGROUP"))
    }
}

/// One entry read from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadEntry {
    /// An event to deliver.
    Event(Entry),
    /// An entry without a body field: it cannot be delivered and is
    /// dead-lettered as malformed.
    Malformed(String),
    /// An entry still pending but no longer in the stream.
    Deleted(String),
}

impl ReadEntry {
    /// The entry id.
    pub fn id(&self) -> &str {
        match self {
            Self::Event(entry) => &entry.id,
            Self::Malformed(id) | Self::Deleted(id) => id,
        }
    }
}

/// An event with its stream id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Stream entry id.
    pub id: String,
    /// Content type to send.
    pub content_type: String,
    /// Body to send.
    pub body: Bytes,
}

/// Result of one XAUTOCLAIM call.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// Cursor for the next call (`0-0` when the scan is complete).
    pub cursor: String,
    /// Entries now owned by this consumer.
    pub entries: Vec<ReadEntry>,
}

/// The Redis state of one destination.
#[derive(Clone)]
pub struct DestinationStore {
    conn: RedisConnection,
    stream: String,
    group: String,
    consumer: String,
    retries: String,
    dead: String,
}

impl DestinationStore {
    /// The store of destination `destination` of the route with `keys`,
    /// used as consumer `consumer`, sending commands on `conn`.
    pub fn new(conn: RedisConnection, keys: &RouteKeys, destination: &str, consumer: &str) -> Self {
        Self {
            conn,
            stream: keys.events(),
            group: group_name(destination),
            consumer: consumer.to_owned(),
            retries: keys.retries(destination),
            dead: keys.dead_letters(destination),
        }
    }

    /// Creates the consumer group from the start of the stream (creating the
    /// stream too); an existing group is kept as it is.
    pub async fn create_group(&self) -> Result<(), StoreError> {
        let result: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match result {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// XREADGROUP from `start` (`0`: this consumer's pending entries after
    /// the cursor; `>`: new entries) on `conn`, waiting up to `block` for
    /// new ones.
    pub async fn read(
        &self,
        conn: &mut RedisConnection,
        start: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<ReadEntry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(start);
        let reply: Value = cmd.query_async(conn).await?;
        let mut entries = Vec::new();
        for (_, stream_entries) in pairs(reply).ok_or(StoreError::Reply("XREADGROUP"))? {
            entries.extend(parse_entries(stream_entries).ok_or(StoreError::Reply("XREADGROUP"))?);
        }
        Ok(entries)
    }

    /// The retry state of each id (none for an id never retried).
    pub async fn retry_states(&self, ids: &[&str]) -> Result<Vec<Option<RetryState>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.retries)
            .arg(ids)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(values
            .into_iter()
            .map(|v| v.as_deref().and_then(RetryState::decode))
            .collect())
    }

    /// Delivered: XACK and forget the retry state, in one MULTI.
    pub async fn ack(&self, id: &str) -> Result<(), StoreError> {
        self.ack_all(&[id]).await
    }

    /// XACK and forget the retry state of several ids, in one MULTI.
    pub async fn ack_all(&self, ids: &[&str]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(ids)
            .ignore()
            .cmd("HDEL")
            .arg(&self.retries)
            .arg(ids)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Given up: add to the dead-letter stream, XACK and forget the retry
    /// state, in one MULTI.
    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let id = letter.entry_id.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(&self.dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAXLEN)
            .arg("*");
        for (name, value) in letter.fields() {
            pipe.arg(name).arg(value);
        }
        pipe.ignore()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(id)
            .ignore()
            .cmd("HDEL")
            .arg(&self.retries)
            .arg(id)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Records that the entry awaits attempt `attempts + 1`, not before
    /// `state.due_unix_ms`. The entry stays pending, owned by this consumer.
    pub async fn set_retry(&self, id: &str, state: RetryState) -> Result<(), StoreError> {
        redis::cmd("HSET")
            .arg(&self.retries)
            .arg(id)
            .arg(state.encode())
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Resets the idle time of entries this consumer holds (XCLAIM with min
    /// idle 0, JUSTID), so no other worker reclaims them while they are in
    /// flight or waiting for a retry.
    pub async fn refresh(&self, ids: &[String]) -> Result<(), StoreError> {
        for chunk in ids.chunks(500) {
            redis::cmd("XCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .query_async::<Value>(&mut self.conn.clone())
                .await?;
        }
        Ok(())
    }

    /// Takes over up to `count` entries idle for at least `min_idle` from
    /// any consumer of the group (XAUTOCLAIM from `cursor`). Entries gone
    /// from the stream are returned as [`ReadEntry::Deleted`].
    pub async fn autoclaim(
        &self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<Reclaimed, StoreError> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.conn.clone())
            .await?;
        let bad = || StoreError::Reply("XAUTOCLAIM");
        let Value::Array(mut parts) = reply else {
            return Err(bad());
        };
        if parts.len() < 2 {
            return Err(bad());
        }
        let deleted = if parts.len() >= 3 {
            parts.remove(2)
        } else {
            Value::Array(Vec::new())
        };
        let claimed = parts.remove(1);
        let cursor = text(parts.remove(0)).ok_or_else(bad)?;
        let mut entries = parse_entries(claimed).ok_or_else(bad)?;
        if let Value::Array(ids) = deleted {
            entries.extend(ids.into_iter().filter_map(text).map(ReadEntry::Deleted));
        }
        Ok(Reclaimed { cursor, entries })
    }
}

/// A bulk or simple string as text.
pub(crate) fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// The key/value pairs of an XREAD-style reply, RESP2 (array of pairs) or
/// RESP3 (map); nil (nothing read) is no pairs.
fn pairs(value: Value) -> Option<Vec<(Value, Value)>> {
    match value {
        Value::Nil => Some(Vec::new()),
        Value::Map(pairs) => Some(pairs),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let value = pair.pop()?;
                    Some((pair.pop()?, value))
                }
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Entries `[[id, [field, value, ...] | nil], ...]`.
fn parse_entries(value: Value) -> Option<Vec<ReadEntry>> {
    let Value::Array(items) = value else {
        return if value == Value::Nil {
            Some(Vec::new())
        } else {
            None
        };
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut parts) = item else {
            continue; // nil entries of old servers' XAUTOCLAIM
        };
        if parts.is_empty() {
            continue;
        }
        let fields = if parts.len() > 1 {
            parts.remove(1)
        } else {
            Value::Nil
        };
        let id = text(parts.remove(0))?;
        let flat = match fields {
            Value::Array(flat) => flat,
            Value::Map(map) => map.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => {
                entries.push(ReadEntry::Deleted(id));
                continue;
            }
        };
        let mut named: Vec<(String, Vec<u8>)> = Vec::with_capacity(flat.len() / 2);
        let mut iter = flat.into_iter();
        while let (Some(name), Some(value)) = (iter.next(), iter.next()) {
            let (Some(name), Value::BulkString(value)) = (text(name), value) else {
                continue;
            };
            named.push((name, value));
        }
        let event = StoredEvent::from_fields(named.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        entries.push(match event {
            Ok(event) => ReadEntry::Event(Entry {
                id,
                content_type: event.content_type,
                body: Bytes::from(event.body),
            }),
            Err(_) => ReadEntry::Malformed(id),
        });
    }
    Some(entries)
}

/// The fields of a malformed entry's dead letter: no body to keep.
pub fn malformed_dead_letter(id: &str) -> DeadLetter {
    DeadLetter {
        entry_id: id.to_owned(),
        event: StoredEvent {
            content_type: JSON_CONTENT_TYPE.to_owned(),
            body: Vec::new(),
        },
        last_status: None,
        error: format!(
            "malformed stream entry: no `{FIELD_BODY}` field (`{FIELD_CONTENT_TYPE}` optional)"
        ),
        attempts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_events_deleted_and_malformed_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("fanout:{a/b}:events"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("ct"), bulk("text/plain"), bulk("b"), bulk("hi")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                Value::Array(vec![bulk("3-0"), Value::Array(vec![bulk("x"), bulk("y")])]),
            ]),
        ])]);
        let (_, entries) = pairs(reply).unwrap().pop().unwrap();
        let entries = parse_entries(entries).unwrap();
        assert_eq!(
            entries,
            vec![
                ReadEntry::Event(Entry {
                    id: "1-0".into(),
                    content_type: "text/plain".into(),
                    body: Bytes::from_static(b"hi"),
                }),
                ReadEntry::Deleted("2-0".into()),
                ReadEntry::Malformed("3-0".into()),
            ]
        );
        assert_eq!(pairs(Value::Nil), Some(Vec::new()));
    }
}
