//! Trace context from request headers: Sentry's `sentry-trace` and W3C `traceparent`, so an
//! app instrumented with Sentry sees its LLM calls inside its own traces.

use beacon_broadcast::record::TraceContext;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// `<32 hex trace id>-<16 hex span id>[-<0|1>]`.
pub fn parse_sentry_trace(v: &str) -> Option<TraceContext> {
    let mut parts = v.trim().split('-');
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let sampled = match parts.next() {
        None => None,
        Some("1") => Some(true),
        Some("0") => Some(false),
        Some(_) => return None,
    };
    if parts.next().is_some() || !is_hex(trace_id, 32) || !is_hex(span_id, 16) {
        return None;
    }
    Some(TraceContext {
        trace_id: trace_id.to_ascii_lowercase(),
        parent_span_id: span_id.to_ascii_lowercase(),
        sampled,
        sample_rate: None,
    })
}

/// `00-<32 hex>-<16 hex>-<2 hex flags>`.
pub fn parse_traceparent(v: &str) -> Option<TraceContext> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let [version, trace_id, span_id, flags] = parts.as_slice() else {
        return None;
    };
    if version.len() != 2 || *version == "ff" || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if !is_hex(trace_id, 32) || !is_hex(span_id, 16) || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id: trace_id.to_ascii_lowercase(),
        parent_span_id: span_id.to_ascii_lowercase(),
        sampled: Some(flags & 1 == 1),
        sample_rate: None,
    })
}

/// `sentry-sample_rate` from a W3C `baggage` header (what Sentry SDKs send beside
/// `sentry-trace`): a number in (0, 1].
pub fn baggage_sample_rate(v: &str) -> Option<f64> {
    v.split(',').find_map(|member| {
        let (key, value) = member.split_once('=')?;
        if key.trim() != "sentry-sample_rate" {
            return None;
        }
        let value = value.split(';').next()?.trim();
        value
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1.0)
    })
}

/// `sentry-trace` wins over `traceparent`; `baggage` adds the caller's sample rate.
pub fn from_headers(headers: &http::HeaderMap) -> Option<TraceContext> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut context = get("sentry-trace")
        .and_then(parse_sentry_trace)
        .or_else(|| get("traceparent").and_then(parse_traceparent))?;
    context.sample_rate = get("baggage").and_then(baggage_sample_rate);
    Some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "771a43a4192642f0b136d5159a501700";
    const S: &str = "b7ad6b7169203331";

    #[test]
    fn baggage_carries_the_callers_sample_rate() {
        let b = "other=1, sentry-trace_id=771a43a4192642f0b136d5159a501700,sentry-sample_rate=0.25;p=1,sentry-sampled=true";
        assert_eq!(baggage_sample_rate(b), Some(0.25));
        assert_eq!(baggage_sample_rate("sentry-sample_rate=2"), None);
        assert_eq!(baggage_sample_rate("sentry-sample_rate=abc"), None);
        assert_eq!(baggage_sample_rate("foo=bar"), None);
        let mut h = http::HeaderMap::new();
        h.insert("sentry-trace", format!("{T}-{S}-0").parse().unwrap());
        h.insert("baggage", "sentry-sample_rate=0.5".parse().unwrap());
        let c = from_headers(&h).unwrap();
        assert_eq!((c.sampled, c.sample_rate), (Some(false), Some(0.5)));
    }

    #[test]
    fn sentry_trace() {
        let c = parse_sentry_trace(&format!("{T}-{S}-1")).unwrap();
        assert_eq!(
            (c.trace_id.as_str(), c.parent_span_id.as_str(), c.sampled),
            (T, S, Some(true))
        );
        assert_eq!(
            parse_sentry_trace(&format!("{T}-{S}")).unwrap().sampled,
            None
        );
        assert!(parse_sentry_trace(&format!("{T}-{S}-2")).is_none());
        assert!(parse_sentry_trace(&format!("{T}-short")).is_none());
        assert!(parse_sentry_trace(&format!("{}-{S}", "0".repeat(32))).is_none());
        assert!(parse_sentry_trace("garbage").is_none());
    }

    #[test]
    fn traceparent() {
        let c = parse_traceparent(&format!("00-{T}-{S}-01")).unwrap();
        assert_eq!(c.sampled, Some(true));
        assert_eq!(
            parse_traceparent(&format!("00-{T}-{S}-00"))
                .unwrap()
                .sampled,
            Some(false)
        );
        assert!(parse_traceparent(&format!("ff-{T}-{S}-01")).is_none());
        assert!(parse_traceparent(&format!("00-{T}-{S}")).is_none());
    }

    #[test]
    fn sentry_header_wins() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            format!("00-{}-{S}-01", "a".repeat(32)).parse().unwrap(),
        );
        assert_eq!(from_headers(&h).unwrap().trace_id, "a".repeat(32));
        h.insert("sentry-trace", format!("{T}-{S}-1").parse().unwrap());
        assert_eq!(from_headers(&h).unwrap().trace_id, T);
    }
}
