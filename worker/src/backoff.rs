//! When the next attempt happens, or whether there is one at all.
//!
//! Pure functions of the attempt count, the destination's retry rules, the
//! clock and an injected random number, so the schedule is unit-tested
//! exactly. Capped exponential backoff with "equal jitter": after `n` failed
//! attempts the wait is `d = min(initialBackoff * 2^(n-1), maxBackoff)`,
//! of which half is fixed and half random (`d/2 + rand * d/2`), and never less
//! than the destination's `Retry-After`.

use std::time::Duration;

use crate::{classify::Verdict, config::RetryRules};

/// The wait after `failed` failed attempts (`failed >= 1`), with `random` in
/// `[0, 1)`.
pub fn backoff(failed: u32, rules: &RetryRules, random: f64) -> Duration {
    let exponent = failed.saturating_sub(1).min(63);
    let factor = 1u64 << exponent;
    let max_ms = rules.max_backoff.as_millis() as u64;
    let ceiling_ms = (rules.initial_backoff.as_millis() as u64)
        .saturating_mul(factor)
        .min(max_ms);
    let half = ceiling_ms / 2;
    let random = random.clamp(0.0, 1.0);
    let jitter = ((ceiling_ms - half) as f64 * random) as u64;
    Duration::from_millis(half + jitter)
}

/// Why an entry goes to the dead-letter stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The destination's answer was permanent.
    Permanent,
    /// `maxAttempts` attempts were made.
    Exhausted,
    /// The event is older than `maxAge`.
    Expired,
}

impl GiveUp {
    /// Prefix of the dead letter's error text.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Permanent => "permanent failure",
            Self::Exhausted => "retries exhausted",
            Self::Expired => "older than maxAge",
        }
    }
}

/// What happens to an entry after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Acknowledge it.
    Ack,
    /// Attempt again at this Unix time in milliseconds.
    RetryAt(u64),
    /// Dead-letter it.
    DeadLetter(GiveUp),
}

/// The decision after attempt number `attempts` (from 1) of an entry whose
/// stream id says it was accepted at `accepted_ms`, at time `now_ms`.
pub fn decide(
    verdict: Verdict,
    attempts: u32,
    rules: &RetryRules,
    accepted_ms: u64,
    now_ms: u64,
    random: f64,
) -> Decision {
    let retry_after = match verdict {
        Verdict::Delivered => return Decision::Ack,
        Verdict::Permanent => return Decision::DeadLetter(GiveUp::Permanent),
        Verdict::Retry { retry_after } => retry_after,
    };
    if attempts >= rules.max_attempts {
        return Decision::DeadLetter(GiveUp::Exhausted);
    }
    if now_ms.saturating_sub(accepted_ms) > rules.max_age.as_millis() as u64 {
        return Decision::DeadLetter(GiveUp::Expired);
    }
    let wait = backoff(attempts, rules, random).max(retry_after.unwrap_or_default());
    Decision::RetryAt(now_ms.saturating_add(wait.as_millis() as u64))
}

/// The millisecond part of a stream entry id (`<ms>-<seq>`): when the event
/// was accepted.
pub fn entry_millis(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RetryRules {
        RetryRules {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn doubles_from_initial_and_caps_at_max() {
        let r = rules();
        // random = 1 gives the ceiling, random = 0 gives half of it.
        let ceilings: Vec<u64> = (1..=6)
            .map(|n| backoff(n, &r, 1.0).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [1000, 2000, 4000, 8000, 10_000, 10_000]);
        let floors: Vec<u64> = (1..=6)
            .map(|n| backoff(n, &r, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(floors, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff(3, &r, 0.5), Duration::from_millis(3000));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let r = rules();
        assert_eq!(backoff(1000, &r, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(0, &r, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn delivered_acks_and_permanent_dead_letters_at_once() {
        let r = rules();
        assert_eq!(decide(Verdict::Delivered, 1, &r, 0, 0, 0.5), Decision::Ack);
        assert_eq!(
            decide(Verdict::Permanent, 1, &r, 0, 0, 0.5),
            Decision::DeadLetter(GiveUp::Permanent)
        );
    }

    #[test]
    fn retries_until_max_attempts() {
        let r = rules();
        let retry = Verdict::Retry { retry_after: None };
        assert_eq!(
            decide(retry, 1, &r, 1000, 1000, 1.0),
            Decision::RetryAt(2000)
        );
        assert_eq!(
            decide(retry, 4, &r, 1000, 1000, 1.0),
            Decision::RetryAt(9000)
        );
        assert_eq!(
            decide(retry, 5, &r, 1000, 1000, 1.0),
            Decision::DeadLetter(GiveUp::Exhausted)
        );
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_the_wait() {
        let r = rules();
        let long = Verdict::Retry {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(decide(long, 1, &r, 0, 0, 1.0), Decision::RetryAt(30_000));
        let short = Verdict::Retry {
            retry_after: Some(Duration::from_millis(10)),
        };
        assert_eq!(decide(short, 1, &r, 0, 0, 1.0), Decision::RetryAt(1000));
    }

    #[test]
    fn events_older_than_max_age_are_not_retried() {
        let r = rules();
        let retry = Verdict::Retry { retry_after: None };
        let accepted = 1_000_000;
        assert_eq!(
            decide(retry, 1, &r, accepted, accepted + 3_600_000, 0.0),
            Decision::RetryAt(accepted + 3_600_000 + 500)
        );
        assert_eq!(
            decide(retry, 1, &r, accepted, accepted + 3_600_001, 0.0),
            Decision::DeadLetter(GiveUp::Expired)
        );
    }

    #[test]
    fn entry_millis_reads_the_id_time() {
        assert_eq!(entry_millis("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(entry_millis("17"), Some(17));
        assert_eq!(entry_millis("x-1"), None);
    }
}
