//! Writing accepted events to their route's Redis stream.
//!
//! Three kinds of write, each all or nothing for its request:
//!
//! - a single event goes to the *writer*, a task that drains every event
//!   queued while Redis was busy and sends them as one pipeline of `XADD`s
//!   (up to [`MAX_PIPELINE`] events, at most [`PIPELINES_IN_FLIGHT`]
//!   pipelines at once). Under load, many concurrent requests share one
//!   round trip; alone, an event goes out at once. Each event of a pipeline
//!   succeeds or fails on its own (no MULTI), so one refused event does not
//!   fail the others;
//! - a batch is one `MULTI`/`EXEC` of `XADD`s: stored entirely or not at all;
//! - a request with an `Idempotency-Key` is one Lua script
//!   ([`crate::idempotency`]);
//! - a request without that header whose events carry their own ids (route
//!   with `ingest.eventIdField`) is one Lua script too ([`crate::event_id`]).
//!
//! Entries are never trimmed here: the worker trims once every destination
//! is done. All writes share one connection ([`RedisConnection`]) that
//! reconnects after a failure; on Redis Cluster, each route's writes go to
//! the node holding its slot.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use fanout_api::RedisConnection;
use fanout_api::{
    RouteKeys,
    entry::{FIELD_BODY, FIELD_CONTENT_TYPE, JSON_CONTENT_TYPE},
};
use http::HeaderValue;
use redis::RedisError;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{event_id, idempotency, metrics::Metrics};

/// Most single events sent in one pipeline.
pub const MAX_PIPELINE: usize = 512;
/// Most pipelines of single events waiting for Redis at once.
pub const PIPELINES_IN_FLIGHT: u32 = 4;
/// Single events queued for the writer before requests wait for room.
const QUEUE: usize = 16 * 1024;

/// Why a write failed. Either way the request's events were not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached, timed out or failed the command.
    #[error("redis unavailable")]
    Unavailable,
    /// Redis refused the write for lack of memory (`maxmemory`).
    #[error("redis out of memory")]
    Overloaded,
}

fn classify(error: &RedisError) -> StoreError {
    if error.code() == Some("OOM") || error.to_string().contains("OOM") {
        StoreError::Overloaded
    } else {
        StoreError::Unavailable
    }
}

/// Classifies a failed write and logs it (the client only sees the code).
fn failed(error: &RedisError, what: &str) -> StoreError {
    let class = classify(error);
    match class {
        StoreError::Overloaded => tracing::warn!(%error, "Redis refused {what}: over maxmemory"),
        StoreError::Unavailable => tracing::warn!(%error, "Redis failed {what}"),
    }
    class
}

/// One single event waiting for the writer.
struct Job {
    stream: Arc<str>,
    content_type: HeaderValue,
    body: Bytes,
    reply: oneshot::Sender<Result<String, StoreError>>,
}

/// The route streams' writer. Cheap to share behind an `Arc`.
pub struct Store {
    conn: RedisConnection,
    singles: mpsc::Sender<Job>,
    script: redis::Script,
    event_id_script: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The running single-event writer.
#[derive(Debug)]
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
    close: oneshot::Sender<()>,
}

impl Writer {
    /// Stops taking new events, then waits (at most `limit`) until every
    /// queued event has been written and answered.
    pub async fn finish(self, limit: Duration) {
        let _ = self.close.send(());
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("the event writer did not finish in {limit:?}");
        }
    }
}

impl Store {
    /// Starts the single-event writer on `conn`.
    pub fn start(conn: RedisConnection, metrics: Arc<Metrics>) -> (Self, Writer) {
        let (singles, queue) = mpsc::channel(QUEUE);
        let (close, closing) = oneshot::channel();
        let task = tokio::spawn(write_singles(queue, closing, conn.clone(), metrics));
        let store = Self {
            conn,
            singles,
            script: idempotency::script(),
            event_id_script: event_id::script(),
        };
        (store, Writer { task, close })
    }

    /// Stores one event; returns its entry id.
    pub async fn add_event(
        &self,
        stream: &Arc<str>,
        content_type: HeaderValue,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            stream: stream.clone(),
            content_type,
            body,
            reply,
        };
        if self.singles.send(job).await.is_err() {
            return Err(StoreError::Unavailable);
        }
        answer.await.unwrap_or(Err(StoreError::Unavailable))
    }

    /// Stores a batch in one MULTI/EXEC; returns the entry ids in order.
    pub async fn add_batch(
        &self,
        stream: &str,
        bodies: &[Bytes],
    ) -> Result<Vec<String>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for body in bodies {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(FIELD_CONTENT_TYPE)
                .arg(JSON_CONTENT_TYPE)
                .arg(FIELD_BODY)
                .arg(&body[..]);
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn)
            .await
            .map_err(|e| failed(&e, "a batch"))
    }

    /// Stores events under an idempotency key, or returns the answer stored
    /// by an earlier request with the key. Returns whether events were stored
    /// now, and the answer JSON.
    pub async fn add_idempotent(
        &self,
        request: IdempotentWrite<'_>,
    ) -> Result<(bool, String), StoreError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(request.key)
            .key(request.stream)
            .arg(request.ttl.as_millis().max(1) as u64)
            .arg(if request.batch { "batch" } else { "event" })
            .arg(idempotency::FIELDS[0])
            .arg(idempotency::FIELDS[1])
            .arg(request.content_type);
        for body in request.bodies {
            invocation.arg(&body[..]);
        }
        let mut conn = self.conn.clone();
        let (stored, answer): (i64, String) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| failed(&e, "an idempotent write"))?;
        Ok((stored == 1, answer))
    }

    /// Stores the events whose id has not been seen on the route (nor
    /// earlier in the request), and remembers their ids. Returns the entry
    /// id answered for each event, in order, and how many events were
    /// stored now.
    pub async fn add_with_event_ids(
        &self,
        request: EventIdWrite<'_>,
    ) -> Result<(Vec<String>, usize), StoreError> {
        let mut invocation = self.event_id_script.prepare_invoke();
        invocation.key(request.stream);
        // KEYS index (1-based, the stream first) of each distinct id's key.
        let mut key_index: HashMap<&str, usize> = HashMap::new();
        for id in request.ids.iter().flatten() {
            let next = key_index.len() + 2;
            key_index.entry(id.as_str()).or_insert_with(|| {
                invocation.key(request.keys.event_id(id));
                next
            });
        }
        invocation
            .arg(request.ttl.as_millis().max(1) as u64)
            .arg(idempotency::FIELDS[0])
            .arg(idempotency::FIELDS[1])
            .arg(request.content_type);
        for (body, id) in request.bodies.iter().zip(request.ids) {
            let index = id.as_deref().map_or(0, |id| key_index[id]);
            invocation.arg(index).arg(&body[..]);
        }
        let mut conn = self.conn.clone();
        let (stored, ids): (usize, Vec<String>) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| failed(&e, "events with ids"))?;
        if ids.len() != request.bodies.len() {
            tracing::error!(
                expected = request.bodies.len(),
                got = ids.len(),
                "Redis answered the event-id script with the wrong number of ids"
            );
            return Err(StoreError::Unavailable);
        }
        Ok((ids, stored))
    }
}

/// A write of events de-duplicated by their own ids.
#[derive(Debug)]
pub struct EventIdWrite<'a> {
    /// The route's keys (its id keys).
    pub keys: &'a RouteKeys,
    /// The route's stream.
    pub stream: &'a str,
    /// How long an id is remembered.
    pub ttl: Duration,
    /// The content type stored with every event.
    pub content_type: &'a [u8],
    /// The events' bodies.
    pub bodies: &'a [Bytes],
    /// Each event's id, `None` for an event without one; as long as
    /// `bodies`.
    pub ids: &'a [Option<String>],
}

/// A write under an `Idempotency-Key`.
#[derive(Debug)]
pub struct IdempotentWrite<'a> {
    /// The route's idempotency key for the header's value.
    pub key: &'a str,
    /// The route's stream.
    pub stream: &'a str,
    /// How long the answer is remembered.
    pub ttl: Duration,
    /// Whether this is a batch (answer `{"ids": [...]}`) or one event
    /// (`{"id": ...}`).
    pub batch: bool,
    /// The content type stored with every event.
    pub content_type: &'a [u8],
    /// The events' bodies.
    pub bodies: &'a [Bytes],
}

async fn write_singles(
    mut queue: mpsc::Receiver<Job>,
    mut closing: oneshot::Receiver<()>,
    conn: RedisConnection,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(PIPELINES_IN_FLIGHT as usize));
    let mut jobs = Vec::with_capacity(MAX_PIPELINE);
    let mut closed = false;
    loop {
        // Wait for room first: while every pipeline is in flight, events
        // queue up and the next pipeline takes them all at once.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let received = tokio::select! {
            received = queue.recv_many(&mut jobs, MAX_PIPELINE) => received,
            _ = &mut closing, if !closed => {
                // Refuse new events, then drain what is queued.
                closed = true;
                queue.close();
                queue.recv_many(&mut jobs, MAX_PIPELINE).await
            }
        };
        if received == 0 {
            break;
        }
        let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_PIPELINE));
        metrics.pipeline_events.observe(batch.len() as f64);
        let conn = conn.clone();
        tokio::spawn(async move {
            write_pipelines(batch, conn).await;
            drop(permit);
        });
    }
    // Closed and drained: wait for the pipelines still in flight.
    let _ = permits.acquire_many(PIPELINES_IN_FLIGHT).await;
}

/// Writes `jobs` as one pipeline per route, all at once: a cluster refuses a
/// pipeline whose keys are in different slots, and a route's keys share one.
async fn write_pipelines(jobs: Vec<Job>, conn: RedisConnection) {
    let mut by_stream: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        match by_stream
            .iter_mut()
            .find(|group| group[0].stream == job.stream)
        {
            Some(group) => group.push(job),
            None => by_stream.push(vec![job]),
        }
    }
    futures::future::join_all(
        by_stream
            .into_iter()
            .map(|group| write_pipeline(group, conn.clone())),
    )
    .await;
}

async fn write_pipeline(jobs: Vec<Job>, mut conn: RedisConnection) {
    let mut pipe = redis::Pipeline::with_capacity(jobs.len());
    pipe.ignore_errors();
    for job in &jobs {
        pipe.cmd("XADD")
            .arg(&*job.stream)
            .arg("*")
            .arg(FIELD_CONTENT_TYPE)
            .arg(job.content_type.as_bytes())
            .arg(FIELD_BODY)
            .arg(&job.body[..]);
    }
    match pipe
        .query_async::<Vec<redis::RedisResult<String>>>(&mut conn)
        .await
    {
        Ok(results) if results.len() == jobs.len() => {
            // Log one failed event per pipeline, not each of them.
            if let Some(error) = results.iter().find_map(|r| r.as_ref().err()) {
                failed(error, "events of a pipeline");
            }
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result.map_err(|e| classify(&e)));
            }
        }
        Ok(results) => {
            tracing::error!(
                expected = jobs.len(),
                got = results.len(),
                "Redis answered a pipeline with the wrong number of replies"
            );
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable));
            }
        }
        Err(error) => {
            let error = failed(&error, "a pipeline of events");
            for job in jobs {
                let _ = job.reply.send(Err(error));
            }
        }
    }
}
