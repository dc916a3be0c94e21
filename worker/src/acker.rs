//! Coalesces the acknowledgements of one destination: deliveries that end
//! while an acknowledgement is being written are acknowledged together in
//! the next MULTI (`XACK` of all their ids plus `HDEL` of their retry
//! state), so a busy destination costs one Redis transaction per batch
//! rather than per event.

use tokio::sync::{mpsc, oneshot};

use crate::store::DestinationStore;

/// Most ids in one acknowledgement.
pub const MAX_BATCH: usize = 512;

/// The acknowledgement could not be written (Redis error text).
#[derive(Debug, Clone, thiserror::Error)]
#[error("acknowledgement failed: {0}")]
pub struct AckError(String);

type Request = (String, oneshot::Sender<Result<(), AckError>>);

/// Handle of a destination's acknowledgement task; the task ends when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct Acker {
    requests: mpsc::UnboundedSender<Request>,
}

impl Acker {
    /// Starts the acknowledgement task of `store`'s destination.
    pub fn spawn(store: DestinationStore) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(store, receiver));
        Self { requests }
    }

    /// Acknowledges `id` (and removes its retry state); returns once
    /// written.
    pub async fn ack(&self, id: String) -> Result<(), AckError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((id, reply))
            .map_err(|_| AckError("acknowledgement task stopped".into()))?;
        answer
            .await
            .map_err(|_| AckError("acknowledgement task stopped".into()))?
    }
}

async fn run(store: DestinationStore, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::new();
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let result = store
            .ack_all(&ids)
            .await
            .map_err(|e| AckError(e.to_string()));
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(result.clone());
        }
    }
}
