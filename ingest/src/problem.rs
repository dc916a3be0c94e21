//! The refusals a client can receive, and how each is written on the wire.
//!
//! Every refused request is answered with a status code and the JSON body
//! `{"error": "<code>", "message": "<human text>"}`. The code is stable and
//! meant for programs; the message is for people and never carries internal
//! error text (that is logged instead). Keeping every refusal in one enum
//! keeps codes, statuses, messages and the metrics' `reason` label in step.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Why a request was refused. Nothing was written to Redis for any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The body is not JSON of the expected shape.
    #[error("{0}")]
    MalformedJson(String),
    /// A batch holds no event.
    #[error("the batch holds no event")]
    EmptyBatch,
    /// No or a wrong bearer token.
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    /// No route serves this path.
    #[error("no route serves this path")]
    NotFound,
    /// The path exists, the method is not served there.
    #[error("method not allowed here")]
    MethodNotAllowed(&'static str),
    /// The body is larger than the route's `maxBodyBytes`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The route's limit.
        limit: u64,
    },
    /// The batch holds more than the route's `maxBatchEvents`.
    #[error("the batch holds {count} events, more than the limit of {limit}")]
    BatchTooLarge {
        /// Events in the batch.
        count: usize,
        /// The route's limit.
        limit: u32,
    },
    /// The content type is not JSON.
    #[error("Content-Type must be application/json or application/*+json")]
    UnsupportedMediaType,
    /// Redis could not be reached or failed the write.
    #[error("the event store is unavailable, retry later")]
    RedisUnavailable,
    /// Redis memory is above the configured watermark.
    #[error("the event store is over its memory watermark, retry later")]
    RedisOverloaded,
    /// The `Idempotency-Key` header is not 1 to 200 printable ASCII characters.
    #[error("Idempotency-Key must be 1 to 200 printable ASCII characters")]
    InvalidIdempotencyKey,
    /// An event's own id (the route's `eventIdField`) is too long.
    #[error("{0}")]
    InvalidEventId(String),
}

impl Refusal {
    /// The stable error code, also the `reason` label of the refusal metric.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::EmptyBatch => "empty_batch",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RedisUnavailable => "redis_unavailable",
            Self::RedisOverloaded => "redis_overloaded",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidEventId(_) => "invalid_event_id",
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::EmptyBatch
            | Self::InvalidIdempotencyKey
            | Self::InvalidEventId(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } | Self::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RedisUnavailable | Self::RedisOverloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code(), "message": self.to_string()});
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::RedisUnavailable | Self::RedisOverloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_are_json_with_code_and_headers() {
        let response = Refusal::Unauthorized.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"], "unauthorized");
        assert!(value["message"].as_str().unwrap().contains("Bearer"));

        let response = Refusal::RedisOverloaded.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
