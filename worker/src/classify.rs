//! What an attempt's result means: delivered, retry later, or give up.
//!
//! One pure function ([`classify`]) holds the rule, so the rule is written
//! once and unit-tested without a network: 2xx is delivered; 408, 429, 5xx,
//! timeouts and connection errors are retried (honouring `Retry-After`);
//! anything else (1xx, 3xx since redirects are not followed, other 4xx) is a
//! permanent failure.

use std::time::{Duration, SystemTime};

/// What happened to one HTTP attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The destination answered.
    Answered {
        /// HTTP status.
        status: u16,
        /// The parsed `Retry-After` header, if any.
        retry_after: Option<Duration>,
        /// The start of the answer's body for failures (empty for 2xx),
        /// kept in dead letters to say why.
        detail: String,
    },
    /// No answer within the destination's timeout.
    Timeout,
    /// The request could not be sent or the answer not read.
    Failed(String),
}

/// What to do with the entry after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Acknowledge: the destination has it.
    Delivered,
    /// Try again later, not before `retry_after` if the destination said so.
    Retry {
        /// The destination's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Do not try again: dead-letter it.
    Permanent,
}

/// The verdict on one attempt.
pub fn classify(result: &AttemptResult) -> Verdict {
    match *result {
        AttemptResult::Answered { status, .. } if (200..300).contains(&status) => {
            Verdict::Delivered
        }
        AttemptResult::Answered {
            status,
            retry_after,
            ..
        } if status == 408 || status == 429 || (500..600).contains(&status) => {
            Verdict::Retry { retry_after }
        }
        AttemptResult::Answered { .. } => Verdict::Permanent,
        AttemptResult::Timeout | AttemptResult::Failed(_) => Verdict::Retry { retry_after: None },
    }
}

impl AttemptResult {
    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answered { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short human-readable description, stored in dead letters.
    pub fn describe(&self) -> String {
        match self {
            Self::Answered { status, detail, .. } if detail.is_empty() => format!("HTTP {status}"),
            Self::Answered { status, detail, .. } => format!("HTTP {status}: {detail}"),
            Self::Timeout => "timed out".to_owned(),
            Self::Failed(error) => error.clone(),
        }
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (a date in
/// the past means no wait). Anything else is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> AttemptResult {
        AttemptResult::Answered {
            status,
            retry_after: None,
            detail: String::new(),
        }
    }

    #[test]
    fn two_hundreds_are_delivered() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify(&answered(status)), Verdict::Delivered, "{status}");
        }
    }

    #[test]
    fn transient_answers_and_network_errors_are_retried() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                classify(&answered(status)),
                Verdict::Retry { retry_after: None },
                "{status}"
            );
        }
        assert_eq!(
            classify(&AttemptResult::Timeout),
            Verdict::Retry { retry_after: None }
        );
        assert_eq!(
            classify(&AttemptResult::Failed("connection refused".into())),
            Verdict::Retry { retry_after: None }
        );
        let with_hint = AttemptResult::Answered {
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
            detail: "slow down".into(),
        };
        assert_eq!(
            classify(&with_hint),
            Verdict::Retry {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn everything_else_is_permanent() {
        for status in [
            100, 101, 301, 302, 304, 307, 400, 401, 403, 404, 409, 410, 413, 422,
        ] {
            assert_eq!(classify(&answered(status)), Verdict::Permanent, "{status}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // 2015-10-21 07:28:00 GMT is `now`; two minutes later:
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means no wait"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn describe_names_status_or_error() {
        assert_eq!(answered(503).describe(), "HTTP 503");
        let with_detail = AttemptResult::Answered {
            status: 400,
            retry_after: None,
            detail: "missing field".into(),
        };
        assert_eq!(with_detail.describe(), "HTTP 400: missing field");
        assert_eq!(AttemptResult::Timeout.describe(), "timed out");
        assert_eq!(answered(503).status(), Some(503));
        assert_eq!(AttemptResult::Timeout.status(), None);
    }
}
