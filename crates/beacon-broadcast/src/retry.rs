//! Retry classification, as a pure function of (status, headers, attempt).
//!
//! 2xx is delivered. 429 and 503 (and 502/504, and connection failures) are retried after a
//! backoff with jitter that honours `Retry-After` and Sentry's `X-Sentry-Rate-Limits`; other
//! 4xx are rejected for good, and so are redirects (a destination's endpoint must be its
//! final URL: following one would send the batch, and its credentials, elsewhere); other
//! 5xx are retried.

use std::time::Duration;

/// Attempts per batch, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// First backoff.
pub const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff between attempts, and the longest rate-limit wait honoured per attempt.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered.
    Delivered,
    /// Try again after this long.
    RetryAfter(Duration),
    /// The destination refused the data (non-retryable 4xx): drop it, counted as rejected.
    Rejected,
    /// Retries are used up: drop it, counted as retries exhausted.
    GiveUp,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// An HTTP response arrived.
    Response {
        /// Its status.
        status: u16,
        /// `Retry-After`, if any.
        retry_after: Option<&'a str>,
        /// `X-Sentry-Rate-Limits`, if any.
        sentry_rate_limits: Option<&'a str>,
    },
    /// No response: connect error, timeout, broken connection.
    Failed,
}

/// Classifies attempt number `attempt` (1-based). `jitter` in `[0, 1)` spreads retries.
pub fn classify(outcome: &Attempt<'_>, attempt: u32, jitter: f64) -> Decision {
    let (status, server_wait) = match outcome {
        Attempt::Failed => (None, None),
        Attempt::Response {
            status,
            retry_after,
            sentry_rate_limits,
        } => {
            let wait = sentry_rate_limits
                .and_then(parse_sentry_rate_limits)
                .into_iter()
                .chain(retry_after.and_then(parse_retry_after))
                .max();
            (Some(*status), wait)
        }
    };
    match status {
        Some(200..=299) => return Decision::Delivered,
        Some(429 | 502 | 503 | 504) | None => {}
        Some(300..=499) => return Decision::Rejected,
        Some(_) => {}
    }
    if attempt >= MAX_ATTEMPTS {
        return Decision::GiveUp;
    }
    let exp = BASE_BACKOFF
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
        .min(MAX_BACKOFF);
    // Jitter between half and the full backoff, so many destinations do not retry in step.
    let backoff = exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    Decision::RetryAfter(
        server_wait
            .map_or(backoff, |w| w.max(backoff))
            .min(MAX_BACKOFF),
    )
}

/// `Retry-After`: delay-seconds, or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = httpdate(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn httpdate(v: &str) -> Option<std::time::SystemTime> {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) {
        return None;
    }
    let days = beacon_config::calendar::days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The longest wait in `X-Sentry-Rate-Limits` that applies to spans or transactions:
/// `<seconds>:<categories>:<scope>[:<reason>[:<namespaces>]], …`; empty categories = all.
pub fn parse_sentry_rate_limits(v: &str) -> Option<Duration> {
    v.split(',')
        .filter_map(|limit| {
            let mut fields = limit.trim().split(':');
            let secs: f64 = fields.next()?.trim().parse().ok()?;
            let categories = fields.next().unwrap_or("");
            let applies = categories.is_empty()
                || categories
                    .split(';')
                    .any(|c| matches!(c, "span" | "transaction" | "default" | "trace_metric"));
            (applies && secs.is_finite() && secs >= 0.0)
                .then(|| Duration::from_secs_f64(secs.min(86_400.0)))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> Attempt<'static> {
        Attempt::Response {
            status,
            retry_after: None,
            sentry_rate_limits: None,
        }
    }

    #[test]
    fn success_rejection_and_retry() {
        assert_eq!(classify(&resp(200), 1, 0.5), Decision::Delivered);
        assert_eq!(classify(&resp(204), 1, 0.5), Decision::Delivered);
        for s in [301, 302, 307, 308, 400, 401, 403, 404, 413] {
            assert_eq!(classify(&resp(s), 1, 0.5), Decision::Rejected, "{s}");
        }
        for s in [429, 500, 502, 503, 504] {
            assert!(
                matches!(classify(&resp(s), 1, 0.5), Decision::RetryAfter(_)),
                "{s}"
            );
        }
        assert!(matches!(
            classify(&Attempt::Failed, 1, 0.5),
            Decision::RetryAfter(_)
        ));
        assert_eq!(classify(&resp(503), MAX_ATTEMPTS, 0.5), Decision::GiveUp);
        assert_eq!(
            classify(&Attempt::Failed, MAX_ATTEMPTS, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let d = |attempt, jitter| match classify(&Attempt::Failed, attempt, jitter) {
            Decision::RetryAfter(d) => d,
            other => panic!("{other:?}"),
        };
        assert_eq!(d(1, 0.0), Duration::from_millis(250));
        assert_eq!(d(1, 1.0), Duration::from_millis(500));
        assert_eq!(d(3, 1.0), Duration::from_secs(2));
        assert!(d(4, 0.99) <= MAX_BACKOFF);
    }

    #[test]
    fn server_waits_are_honoured() {
        let a = Attempt::Response {
            status: 429,
            retry_after: Some("7"),
            sentry_rate_limits: None,
        };
        assert_eq!(
            classify(&a, 1, 0.0),
            Decision::RetryAfter(Duration::from_secs(7))
        );
        let a = Attempt::Response {
            status: 429,
            retry_after: Some("1"),
            sentry_rate_limits: Some("60:transaction;span:organization:quota_exceeded, 5::key"),
        };
        assert_eq!(
            classify(&a, 1, 0.0),
            Decision::RetryAfter(Duration::from_secs(30)),
            "capped at MAX_BACKOFF"
        );
        assert_eq!(
            parse_sentry_rate_limits("12:span:key, 3::organization"),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_sentry_rate_limits("12:error:key"),
            None,
            "other categories do not apply"
        );
        assert_eq!(parse_retry_after("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
