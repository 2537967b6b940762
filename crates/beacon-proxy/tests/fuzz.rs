//! Property-based fuzzing of what a client controls on the request path: the SSE parser (fed
//! by upstreams) and the request parser with its extensions. `PROPTEST_CASES` sets the
//! number of cases (256 by default; docs/reliability.md records the longer runs).

use beacon_config::MetadataLimits;
use beacon_proxy::apis::{
    chat::Chat, completions::Completions, embeddings::Embeddings, messages::Messages,
    responses::Responses, WireApi,
};
use beacon_proxy::request::{
    limit_metadata, nesting_depth, ClientRequest, ParseContext, DROPPED_KEYS,
};
use beacon_proxy::sse::{SseEvent, SseParser, MAX_EVENT_BYTES};
use proptest::prelude::*;
use serde_json::Value;

fn parse_all(pieces: &[&[u8]]) -> (Vec<SseEvent>, bool) {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    for p in pieces {
        if parser.push(p, &mut out).is_err() {
            return (out, false);
        }
    }
    (out, true)
}

/// SSE-ish bytes: fields, terminators of every kind, and noise.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"event: x\n".to_vec()),
        Just(b": comment\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(br#"{"choices":[{"delta":{"content":"x"}}]}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// JSON values of bounded size, strings with any character.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Parses `body` as a request of API number `api` (every API of SPEC §2.1).
fn parse(api: usize, body: &[u8]) -> Result<ClientRequest<'_>, beacon_proxy::error::ProxyError> {
    let limits = MetadataLimits::default();
    let cx = ParseContext {
        session_header: None,
        limits: &limits,
    };
    match api {
        0 => Chat::parse(body, &cx),
        1 => Responses::parse(body, &cx),
        2 => Embeddings::parse(body, &cx),
        3 => Completions::parse(body, &cx),
        _ => Messages::parse(body, &cx),
    }
}

proptest! {
    #[test]
    fn sse_events_do_not_depend_on_how_the_stream_is_cut(
        bytes in sse_bytes(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for a in at {
            pieces.push(&bytes[last..a]);
            last = a;
        }
        pieces.push(&bytes[last..]);
        let (whole, ok_whole) = parse_all(&[&bytes]);
        let (cut, ok_cut) = parse_all(&pieces);
        prop_assert!(ok_whole && ok_cut);
        prop_assert_eq!(whole.len(), cut.len());
        for (a, b) in whole.iter().zip(&cut) {
            prop_assert_eq!(&a.raw, &b.raw);
            prop_assert_eq!(&a.data, &b.data);
        }
        // The events are the input's bytes, in order, each forwarded whole.
        let joined: Vec<u8> = whole.iter().flat_map(|e| e.raw.to_vec()).collect();
        prop_assert!(bytes.starts_with(&joined));
    }

    #[test]
    fn request_parsing_never_panics_on_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        api in 0usize..5,
    ) {
        let _ = parse(api, &body);
    }

    #[test]
    fn accepted_requests_forward_valid_json_without_beacons_extensions(
        extra in proptest::collection::btree_map("[a-z_]{1,12}", json_value(), 0..6),
        trace in proptest::option::of(json_value()),
        stream in proptest::option::of(json_value()),
        model in ".{1,40}",
        api in 0usize..5,
    ) {
        let mut body = serde_json::Map::new();
        for (k, v) in extra {
            body.insert(k, v);
        }
        body.insert("model".into(), Value::String(model));
        // What each API requires, so that every one gets past its own checks.
        body.insert("messages".into(), serde_json::json!([{"role": "user", "content": "hi"}]));
        body.insert("input".into(), serde_json::json!("hi"));
        body.insert("prompt".into(), serde_json::json!("hi"));
        if let Some(t) = trace {
            body.insert("trace".into(), t);
        }
        if let Some(s) = stream {
            body.insert("stream".into(), s);
        }
        let bytes = Value::Object(body).to_string();
        if let Ok(req) = parse(api, bytes.as_bytes()) {
            let up: Value = serde_json::from_slice(&req.upstream_body("m")).expect("valid JSON upstream");
            prop_assert!(up.is_object());
            prop_assert!(up.get("trace").is_none() && up.get("session_id").is_none());
            prop_assert_eq!(&up["model"], "m");
        }
    }

    #[test]
    fn kept_metadata_is_bounded_by_bytes_and_keys(
        trace in proptest::collection::btree_map(".{0,20}", json_value(), 0..80),
        value_bytes in 1usize..200,
        total_bytes in 1usize..2000,
        keys in 1usize..20,
    ) {
        let limits = MetadataLimits { value_bytes, total_bytes, keys };
        let n_in = trace.len();
        let out = limit_metadata(trace.into_iter().collect(), &limits);
        let kept: Vec<(&String, &Value)> = out
            .iter()
            .filter(|(k, _)| !k.ends_with(".truncated") && k.as_str() != DROPPED_KEYS)
            .collect();
        prop_assert!(kept.len() <= keys);
        let dropped = out.get(DROPPED_KEYS).and_then(Value::as_u64).unwrap_or(0) as usize;
        prop_assert!(dropped <= n_in);
        let mut total = 0usize;
        for (k, v) in kept {
            let len = match v {
                Value::String(s) => s.len(),
                Value::Array(_) | Value::Object(_) => v.to_string().len(),
                _ => 8,
            };
            if matches!(v, Value::String(_) | Value::Array(_) | Value::Object(_)) {
                prop_assert!(len <= value_bytes, "{k}: {len} > {value_bytes}");
            }
            total += k.len() + len;
        }
        // Scalars count 8 bytes; a key admitted with room left may overshoot by one scalar.
        prop_assert!(total <= total_bytes + 8, "{total} > {total_bytes}");
    }

    #[test]
    fn nesting_depth_matches_serde_on_values(v in json_value()) {
        fn depth(v: &Value) -> usize {
            match v {
                Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        prop_assert_eq!(nesting_depth(v.to_string().as_bytes()), depth(&v));
    }
}

proptest! {
    // Each case feeds 8 MiB: a few cases are enough to show the bound holds.
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn sse_parser_memory_is_bounded(piece in proptest::collection::vec(b'a'..=b'z', 1024..65536)) {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        let mut fed = 0usize;
        let mut failed = false;
        while fed <= MAX_EVENT_BYTES + piece.len() {
            if parser.push(&piece, &mut out).is_err() {
                failed = true;
                break;
            }
            fed += piece.len();
        }
        prop_assert!(failed, "an unterminated event past the limit is refused");
        prop_assert!(out.is_empty());
    }
}
