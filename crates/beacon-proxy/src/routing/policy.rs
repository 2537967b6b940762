//! The attempt policy (SPEC §2.2), a pure function: what one attempt's result means for the
//! request — serve it, retry the same target after a wait, fail over to the next target, or
//! give up with it.

use std::time::Duration;

use beacon_config::RoutingConfig;

/// How one attempt ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response the client can have: 2xx, or an error status that is the client's to see.
    Status(u16),
    /// No connection (refused, DNS, TLS, connect timeout).
    Unreachable,
    /// No response headers within `routing.attempt_timeout_secs`.
    TimedOut,
    /// A 2xx stream that failed before its first event (nothing reached the client).
    StreamFailedEarly,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Relay this attempt's response to the client.
    Serve,
    /// Try the next target now.
    FailOver,
    /// No other target is left: try the same one again after this wait.
    RetrySame(Duration),
    /// Stop: this attempt's failure is the answer.
    GiveUp,
}

/// Statuses that mean "try elsewhere" (SPEC §2.2): request timeout, rate limited, server
/// errors a retry can cure, and Anthropic's overloaded.
pub fn fails_over(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// The policy. `attempt` is 1 for the first attempt; `retry_after` is the response's
/// `Retry-After`; `elapsed` is the time since the request arrived; `others_left` says
/// whether another target can still be tried.
pub fn decide(
    cfg: &RoutingConfig,
    attempt: u32,
    result: AttemptResult,
    retry_after: Option<Duration>,
    elapsed: Duration,
    others_left: bool,
) -> Decision {
    let failed = match result {
        AttemptResult::Status(s) => fails_over(s),
        AttemptResult::Unreachable | AttemptResult::TimedOut | AttemptResult::StreamFailedEarly => {
            true
        }
    };
    if !failed {
        return Decision::Serve;
    }
    if attempt >= cfg.max_attempts || elapsed >= cfg.deadline {
        return Decision::GiveUp;
    }
    // A Retry-After longer than the policy allows is not waited for here.
    let too_long = retry_after.is_some_and(|d| d > cfg.max_retry_after);
    if others_left {
        return Decision::FailOver;
    }
    if too_long {
        return Decision::GiveUp;
    }
    // Same target again: its Retry-After, else exponential backoff from retry_backoff.
    let backoff = cfg.retry_backoff.saturating_mul(1 << (attempt - 1).min(6));
    let wait = retry_after.unwrap_or(backoff);
    if elapsed + wait >= cfg.deadline {
        return Decision::GiveUp;
    }
    Decision::RetrySame(wait)
}

/// Reads `retry-after-ms` (OpenAI's), else `Retry-After` (seconds, or an HTTP date; parsed
/// as the export path parses a destination's).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    beacon_broadcast::retry::parse_retry_after(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RoutingConfig {
        RoutingConfig {
            max_attempts: 3,
            deadline: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(500),
            ..RoutingConfig::default()
        }
    }

    const T0: Duration = Duration::ZERO;

    #[test]
    fn success_and_client_errors_are_served_at_once() {
        for s in [200, 201, 400, 401, 403, 404, 422, 501] {
            assert_eq!(
                decide(&cfg(), 1, AttemptResult::Status(s), None, T0, true),
                Decision::Serve,
                "{s}"
            );
        }
    }

    #[test]
    fn failures_fail_over_while_another_target_is_left() {
        for r in [
            AttemptResult::Status(408),
            AttemptResult::Status(429),
            AttemptResult::Status(500),
            AttemptResult::Status(502),
            AttemptResult::Status(503),
            AttemptResult::Status(504),
            AttemptResult::Status(529),
            AttemptResult::Unreachable,
            AttemptResult::TimedOut,
            AttemptResult::StreamFailedEarly,
        ] {
            assert_eq!(
                decide(&cfg(), 1, r, None, T0, true),
                Decision::FailOver,
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_only_target_is_retried_after_retry_after_or_backoff() {
        let one = Some(Duration::from_secs(1));
        assert_eq!(
            decide(&cfg(), 1, AttemptResult::Status(429), one, T0, false),
            Decision::RetrySame(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&cfg(), 1, AttemptResult::Status(503), None, T0, false),
            Decision::RetrySame(Duration::from_millis(500))
        );
        assert_eq!(
            decide(&cfg(), 2, AttemptResult::Unreachable, None, T0, false),
            Decision::RetrySame(Duration::from_secs(1))
        );
        // A Retry-After beyond max_retry_after: give up rather than wait.
        let long = Some(Duration::from_secs(60));
        assert_eq!(
            decide(&cfg(), 1, AttemptResult::Status(429), long, T0, false),
            Decision::GiveUp
        );
        // ... but another target is still tried.
        assert_eq!(
            decide(&cfg(), 1, AttemptResult::Status(429), long, T0, true),
            Decision::FailOver
        );
    }

    #[test]
    fn attempts_and_the_deadline_bound_the_chain() {
        assert_eq!(
            decide(&cfg(), 3, AttemptResult::Status(503), None, T0, true),
            Decision::GiveUp
        );
        let late = Duration::from_secs(30);
        assert_eq!(
            decide(&cfg(), 1, AttemptResult::Status(503), None, late, true),
            Decision::GiveUp
        );
        // A wait that would cross the deadline is not started.
        let near = Duration::from_secs(29);
        let one = Some(Duration::from_secs(2));
        assert_eq!(
            decide(&cfg(), 1, AttemptResult::Status(429), one, near, false),
            Decision::GiveUp
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut d = http::HeaderMap::new();
        d.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&d), Some(Duration::ZERO), "a date in the past");
        let mut bad = http::HeaderMap::new();
        bad.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&bad), None);
    }
}
