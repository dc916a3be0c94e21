//! One HTTP attempt to deliver one event to one destination.
//!
//! Each destination has its own pooled HTTP client (keep-alive connections
//! are reused between attempts), with the destination's timeout for the
//! whole attempt and redirects not followed (a 3xx is an answer, classified
//! as permanent). TLS is rustls with the `ring` provider, the one kube
//! already brings, so the process has a single crypto provider.
//!
//! Every attempt carries the Standard Webhooks headers: `webhook-id`
//! (`<namespace>/<route>/<destination>/<entry id>`, the same on every
//! attempt, for receivers to de-duplicate), `webhook-timestamp` (this
//! attempt's Unix seconds: each attempt is signed afresh so a late retry
//! still passes a receiver's replay window) and `webhook-signature` when
//! signing is configured.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::{
    classify::{AttemptResult, parse_retry_after},
    config::{DestinationConfig, RouteConfig},
    signing::SigningKey,
};

/// Header carrying the delivery id.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header carrying the attempt's Unix time in seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// How much of a failed answer's body is kept for its dead letter.
pub const DETAIL_BYTES: usize = 256;
/// Largest answer body read to its end to keep the connection alive.
pub const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// Header carrying the signature.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Why a destination's HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// An extra header has an invalid name or value.
    #[error("destination {destination}: invalid header {name:?}")]
    Header {
        /// The destination.
        destination: String,
        /// The header name.
        name: String,
    },
    /// The HTTP client could not be built.
    #[error("destination {destination}: cannot build HTTP client: {source}")]
    Client {
        /// The destination.
        destination: String,
        /// Why.
        source: reqwest::Error,
    },
}

/// Makes `ring` the process's rustls crypto provider (once; later calls do
/// nothing).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sends a destination's attempts.
#[derive(Debug)]
pub struct Deliverer {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    signing: Option<SigningKey>,
    id_prefix: String,
}

/// Headers fanout sets itself; a destination's `headers` cannot replace them.
fn is_reserved(name: &HeaderName) -> bool {
    name == header::CONTENT_TYPE
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name.as_str().starts_with("webhook-")
}

impl Deliverer {
    /// Builds the client of one destination.
    pub fn new(route: &RouteConfig, dest: &DestinationConfig) -> Result<Self, DeliveryError> {
        install_crypto_provider();
        let mut headers = HeaderMap::new();
        for (name, value) in &dest.headers {
            let invalid = || DeliveryError::Header {
                destination: dest.name.clone(),
                name: name.clone(),
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
            if !is_reserved(&name) {
                headers.insert(name, value);
            }
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(dest.timeout)
            .connect_timeout(dest.timeout)
            .pool_max_idle_per_host(dest.max_in_flight)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("fanout-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| DeliveryError::Client {
                destination: dest.name.clone(),
                source,
            })?;
        Ok(Self {
            client,
            url: dest.url.clone(),
            headers,
            signing: dest.signing.clone(),
            id_prefix: format!("{}/{}/{}/", route.namespace, route.name, dest.name),
        })
    }

    /// The `webhook-id` of an entry: the same on every attempt.
    pub fn webhook_id(&self, entry_id: &str) -> String {
        format!("{}{entry_id}", self.id_prefix)
    }

    /// Makes one attempt.
    pub async fn attempt(&self, entry_id: &str, content_type: &str, body: Bytes) -> AttemptResult {
        let id = self.webhook_id(entry_id);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header(WEBHOOK_ID, id.as_str())
            .header(WEBHOOK_TIMESTAMP, timestamp.to_string());
        if let Some(key) = &self.signing {
            request = request.header(WEBHOOK_SIGNATURE, key.sign(&id, timestamp, &body));
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => return failure(&error),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read the answer to its end so the connection can be reused (the
        // client's timeout bounds this too), keeping the start of a failure's
        // body for the dead letter.
        let keep = if (200..300).contains(&status) {
            0
        } else {
            DETAIL_BYTES
        };
        let mut detail = Vec::new();
        let mut read = 0;
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = keep.saturating_sub(detail.len());
                    detail.extend_from_slice(&chunk[..room.min(chunk.len())]);
                    read += chunk.len();
                    if read > MAX_DRAIN_BYTES {
                        break; // not worth it: the connection is dropped
                    }
                }
                Ok(None) => break,
                Err(error) if error.is_timeout() => return AttemptResult::Timeout,
                // The status is known: a broken body does not change it.
                Err(_) => break,
            }
        }
        AttemptResult::Answered {
            status,
            retry_after,
            detail: String::from_utf8_lossy(&detail).trim().to_owned(),
        }
    }
}

fn failure(error: &reqwest::Error) -> AttemptResult {
    if error.is_timeout() {
        return AttemptResult::Timeout;
    }
    // The full source chain says what went wrong (refused, reset, TLS).
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    AttemptResult::Failed(text)
}
