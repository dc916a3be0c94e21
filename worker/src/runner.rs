//! The delivery runner of one destination: reads its consumer group and
//! drives every entry it holds through attempts, retries and the final
//! acknowledgement or dead letter.
//!
//! Each destination has its own runner (and its own blocking Redis
//! connection), so a slow or failing destination never holds back another.
//! Memory is bounded: the runner reads only as many entries as it has free
//! in-flight slots (`maxInFlight`), and holds at most `11 * maxInFlight`
//! entries (in flight, plus up to `10 * maxInFlight` waiting for a retry);
//! at that limit it stops reading until some are done.
//!
//! Order of work: first this consumer's own pending entries (left by an
//! earlier run of the same instance), honouring their stored retry state;
//! then new entries; and every `visibility / 2` entries that any consumer
//! left idle longer than the visibility timeout (XAUTOCLAIM). Every
//! `visibility / 3` the idle time of every entry held here is reset, so
//! entries in flight or waiting for a retry are never reclaimed by another
//! worker while this one is alive.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fanout_api::RedisConnection;
use fanout_api::entry::{DeadLetter, RetryState, StoredEvent};
use tokio::sync::{Notify, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use crate::{
    acker::Acker,
    backoff::{Decision, decide, entry_millis},
    classify::classify,
    config::DestinationConfig,
    delivery::Deliverer,
    metrics::{DestinationLabels, DestinationMetrics, Metrics, Outcome},
    store::{DestinationStore, Entry, ReadEntry, malformed_dead_letter},
};

/// How long one XREADGROUP waits for new entries.
pub const READ_BLOCK: Duration = Duration::from_secs(1);
/// Wait after a failed Redis command before the next one.
const REDIS_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Tokens shared by every runner of a worker.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    /// Cancelled on SIGTERM: stop reading, stop waiting, finish attempts.
    pub stop: CancellationToken,
    /// Cancelled when the shutdown grace is over: abandon attempts.
    pub abort: CancellationToken,
    /// Cancelled when every entry task has ended: stop background loops.
    pub done: CancellationToken,
    /// Every entry task, to wait for at shutdown.
    pub tasks: TaskTracker,
}

/// Everything an entry task needs, shared by the runner's tasks.
struct Shared {
    /// `<namespace>/<route>`, for logs.
    route: String,
    dest: DestinationConfig,
    store: DestinationStore,
    acker: Acker,
    deliverer: Deliverer,
    metrics: DestinationMetrics,
    life: Lifecycle,
    /// Ids of the entries this runner holds (in flight or waiting).
    held: Mutex<HashSet<String>>,
    /// In-flight slots (`maxInFlight`).
    slots: Semaphore,
    /// Signalled whenever an entry leaves `held`.
    released: Notify,
}

/// The runner of one destination.
pub struct Runner {
    shared: Arc<Shared>,
    reader: RedisConnection,
}

impl Runner {
    /// A runner for `dest`, reading with its own connection `reader` (a
    /// blocking read stalls its connection) and writing through `store`.
    pub fn new(
        route: String,
        dest: DestinationConfig,
        store: DestinationStore,
        deliverer: Deliverer,
        reader: RedisConnection,
        metrics: Arc<Metrics>,
        life: Lifecycle,
    ) -> Self {
        let labels = DestinationLabels {
            route: route.clone(),
            destination: dest.name.clone(),
        };
        let slots = Semaphore::new(dest.max_in_flight);
        Self {
            shared: Arc::new(Shared {
                route,
                dest,
                acker: Acker::spawn(store.clone()),
                store,
                deliverer,
                metrics: metrics.destination(&labels),
                life,
                held: Mutex::new(HashSet::new()),
                slots,
                released: Notify::new(),
            }),
            reader,
        }
    }

    /// Reads and delivers until `stop`; returns when reading has stopped
    /// (entry tasks go on in [`Lifecycle::tasks`]).
    pub async fn run(mut self) {
        let shared = self.shared.clone();
        let stop = shared.life.stop.clone();
        while let Err(error) = shared.store.create_group().await {
            warn!(destination = %shared.dest.name, %error, "cannot create consumer group; retrying");
            if pause(&stop).await {
                return;
            }
        }
        tokio::spawn(refresh_loop(shared.clone()));
        info!(route = %shared.route, destination = %shared.dest.name, "delivering");

        // This consumer's own pending entries first.
        let mut cursor = "0".to_owned();
        while let Some(count) = self.capacity().await {
            match shared
                .store
                .read(&mut self.reader, &cursor, count, None)
                .await
            {
                Ok(entries) if entries.is_empty() => break,
                Ok(entries) => {
                    cursor = entries.last().map(|e| e.id().to_owned()).unwrap_or(cursor);
                    take(&shared, entries, true).await;
                }
                Err(error) => {
                    warn!(destination = %shared.dest.name, %error, "cannot read pending entries");
                    if pause(&stop).await {
                        return;
                    }
                }
            }
        }

        let reclaim_every = shared.dest.visibility / 2;
        let mut last_reclaim = Instant::now();
        let mut reclaim_cursor = "0-0".to_owned();
        while let Some(count) = self.capacity().await {
            if last_reclaim.elapsed() >= reclaim_every {
                match shared
                    .store
                    .autoclaim(shared.dest.visibility, &reclaim_cursor, count)
                    .await
                {
                    Ok(reclaimed) => {
                        if !reclaimed.entries.is_empty() {
                            info!(
                                destination = %shared.dest.name,
                                count = reclaimed.entries.len(),
                                "reclaimed idle entries"
                            );
                        }
                        take(&shared, reclaimed.entries, true).await;
                        reclaim_cursor = reclaimed.cursor;
                        if reclaim_cursor == "0-0" {
                            last_reclaim = Instant::now();
                        }
                    }
                    Err(error) => {
                        warn!(destination = %shared.dest.name, %error, "XAUTOCLAIM failed");
                        last_reclaim = Instant::now();
                    }
                }
                continue;
            }
            let read = shared
                .store
                .read(&mut self.reader, ">", count, Some(READ_BLOCK));
            let entries = tokio::select! {
                result = read => result,
                () = stop.cancelled() => break,
            };
            match entries {
                Ok(entries) => take(&shared, entries, false).await,
                Err(error) if error.is_no_group() => {
                    warn!(destination = %shared.dest.name, "consumer group vanished; creating it again");
                    let _ = shared.store.create_group().await;
                }
                Err(error) => {
                    warn!(destination = %shared.dest.name, %error, "cannot read new entries");
                    if pause(&stop).await {
                        break;
                    }
                }
            }
        }
        debug!(destination = %shared.dest.name, "reading stopped");
    }

    /// Waits until the runner may take entries and returns how many (the
    /// free in-flight slots, at least a quarter of `maxInFlight`, within the
    /// limit of held entries), or `None` once stopping.
    async fn capacity(&self) -> Option<usize> {
        let shared = &self.shared;
        let stop = &shared.life.stop;
        let limit = shared.dest.max_in_flight + shared.dest.max_waiting;
        loop {
            if stop.is_cancelled() {
                return None;
            }
            let notified = shared.released.notified();
            let room = limit.saturating_sub(shared.held.lock().unwrap().len());
            if room == 0 {
                tokio::select! {
                    () = notified => continue,
                    () = stop.cancelled() => return None,
                }
            }
            // Wait for a quarter of the slots to be free, so that a busy
            // destination reads in batches rather than one entry per read.
            let batch = (shared.dest.max_in_flight / 4).max(1);
            let permits = tokio::select! {
                permits = shared.slots.acquire_many(batch as u32) => permits.ok()?,
                () = stop.cancelled() => return None,
            };
            drop(permits);
            return Some(shared.slots.available_permits().max(batch).min(room));
        }
    }
}

/// Starts an entry task for each entry read. `lookup_retry`: the entries
/// were pending already (own pending list or reclaimed), so their stored
/// retry state is honoured.
async fn take(shared: &Arc<Shared>, entries: Vec<ReadEntry>, lookup_retry: bool) {
    let mut events = Vec::new();
    let mut gone = Vec::new();
    for entry in entries {
        match entry {
            ReadEntry::Event(entry) => {
                if shared.held.lock().unwrap().insert(entry.id.clone()) {
                    events.push(entry);
                }
            }
            ReadEntry::Deleted(id) => gone.push(id),
            ReadEntry::Malformed(id) => {
                warn!(destination = %shared.dest.name, id, "malformed entry: dead-lettering it");
                if let Err(error) = shared.store.dead_letter(&malformed_dead_letter(&id)).await {
                    warn!(destination = %shared.dest.name, %error, "cannot dead-letter malformed entry");
                } else {
                    shared.metrics.dead_letters.inc();
                }
            }
        }
    }
    if !gone.is_empty() {
        let ids: Vec<&str> = gone.iter().map(String::as_str).collect();
        if let Err(error) = shared.store.ack_all(&ids).await {
            warn!(destination = %shared.dest.name, %error, "cannot acknowledge deleted entries");
        }
    }
    let states = if lookup_retry && !events.is_empty() {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        match shared.store.retry_states(&ids).await {
            Ok(states) => states,
            Err(error) => {
                // Without the state the entry starts over: a few attempts
                // more than maxAttempts at worst.
                warn!(destination = %shared.dest.name, %error, "cannot read retry state");
                vec![None; events.len()]
            }
        }
    } else {
        vec![None; events.len()]
    };
    for (entry, state) in events.into_iter().zip(states) {
        let state = state.unwrap_or(RetryState {
            attempts: 0,
            due_unix_ms: 0,
        });
        let shared = shared.clone();
        shared
            .life
            .tasks
            .clone()
            .spawn(deliver_entry(shared, entry, state));
    }
}

/// Removes the entry from the held set when its task ends, however it ends.
struct Held<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.shared.held.lock().unwrap().remove(&self.id);
        self.shared.released.notify_waiters();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Drives one entry to its end: attempts, retries (waiting in memory), then
/// the acknowledgement or dead letter. Returns early, leaving the entry
/// pending with its retry state, when the worker stops.
async fn deliver_entry(shared: Arc<Shared>, entry: Entry, mut state: RetryState) {
    let _held = Held {
        shared: &shared,
        id: entry.id.clone(),
    };
    let life = &shared.life;
    let accepted_ms = entry_millis(&entry.id).unwrap_or_else(now_ms);
    loop {
        let wait = state.due_unix_ms.saturating_sub(now_ms());
        if wait > 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                () = life.stop.cancelled() => return,
            }
        }
        let permit = tokio::select! {
            permit = shared.slots.acquire() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = life.stop.cancelled() => return,
        };
        if life.stop.is_cancelled() {
            // No attempt starts after SIGTERM; the entry stays pending.
            return;
        }
        let in_flight = &shared.metrics.in_flight;
        in_flight.inc();
        let started = Instant::now();
        let attempt = shared
            .deliverer
            .attempt(&entry.id, &entry.content_type, entry.body.clone());
        let result = tokio::select! {
            result = attempt => Some(result),
            () = life.abort.cancelled() => None,
        };
        in_flight.dec();
        drop(permit);
        let Some(result) = result else {
            return; // shutdown grace over: the entry stays pending
        };
        shared
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        state.attempts += 1;
        let verdict = classify(&result);
        let decision = decide(
            verdict,
            state.attempts,
            &shared.dest.retry,
            accepted_ms,
            now_ms(),
            fastrand::f64(),
        );
        let outcome = match decision {
            Decision::Ack => Outcome::delivered,
            Decision::RetryAt(_) => Outcome::retry,
            Decision::DeadLetter(_) => Outcome::dead_letter,
        };
        shared.metrics.deliveries(outcome).inc();
        let written: Result<(), String> = match decision {
            Decision::Ack => shared
                .acker
                .ack(entry.id.clone())
                .await
                .map_err(|e| e.to_string()),
            Decision::DeadLetter(why) => {
                warn!(
                    destination = %shared.dest.name,
                    id = %entry.id,
                    attempts = state.attempts,
                    result = %result.describe(),
                    "dead-lettering: {}",
                    why.describe()
                );
                let letter = DeadLetter {
                    entry_id: entry.id.clone(),
                    event: StoredEvent {
                        content_type: entry.content_type.clone(),
                        body: entry.body.to_vec(),
                    },
                    last_status: result.status(),
                    error: format!("{}: {}", why.describe(), result.describe()),
                    attempts: state.attempts,
                };
                let written = shared
                    .store
                    .dead_letter(&letter)
                    .await
                    .map_err(|e| e.to_string());
                if written.is_ok() {
                    shared.metrics.dead_letters.inc();
                }
                written
            }
            Decision::RetryAt(due) => {
                shared.metrics.retries_scheduled.inc();
                debug!(
                    destination = %shared.dest.name,
                    id = %entry.id,
                    attempts = state.attempts,
                    result = %result.describe(),
                    "retry scheduled"
                );
                state.due_unix_ms = due;
                // If this write fails the in-memory timer still runs; only a
                // restart would lose the wait (and retry early).
                let written = shared.store.set_retry(&entry.id, state).await;
                if let Err(error) = written {
                    warn!(destination = %shared.dest.name, %error, "cannot store retry state");
                }
                if life.stop.is_cancelled() {
                    return;
                }
                continue;
            }
        };
        if let Err(error) = written {
            // The entry stays pending; once idle past the visibility timeout
            // it is reclaimed and attempted again (at least once).
            warn!(destination = %shared.dest.name, id = %entry.id, %error, "cannot record the outcome");
        }
        return;
    }
}

/// Every `visibility / 3`, resets the idle time of every held entry.
async fn refresh_loop(shared: Arc<Shared>) {
    let every = (shared.dest.visibility / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shared.life.done.cancelled() => return,
        }
        let ids: Vec<String> = shared.held.lock().unwrap().iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        if let Err(error) = shared.store.refresh(&ids).await {
            warn!(destination = %shared.dest.name, %error, "cannot refresh held entries");
        }
    }
}

/// Sleeps after an error; true when stopping.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(REDIS_ERROR_PAUSE) => false,
        () = stop.cancelled() => true,
    }
}
