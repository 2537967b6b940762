//! The mock upstream's other APIs, each in its documented framing (checked against the
//! official SDKs by the end-to-end tests that drive them):
//!
//! - OpenAI Responses `POST /v1/responses`: a `response` object; streams of typed events
//!   (`event: <type>` + `data: {"type": ..., "sequence_number": n}`) from `response.created`
//!   through `response.output_text.delta` to `response.completed`, whose `response.usage`
//!   has `input_tokens` (+ cached) and `output_tokens` (+ reasoning). The retrieval routes
//!   answer too.
//! - OpenAI embeddings `POST /v1/embeddings`: one vector per input, as floats or (what the
//!   SDK asks for by default) base64 of little-endian float32.
//! - OpenAI legacy completions `POST /v1/completions`: `text_completion` objects and chunks.
//! - Anthropic Messages `POST /v1/messages`: requires `x-api-key` (or a bearer token, as
//!   OpenRouter's Messages endpoint takes) and `anthropic-version`
//!   (401 / 400 in Anthropic's error shape otherwise); a `message`, or `message_start`,
//!   `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`,
//!   `message_delta` (cumulative `usage.output_tokens`), `message_stop`.
//!
//! Models pick behaviours as in `mock_upstream`: `tool-call` (a `get_weather` call; once the
//! request carries its result, the answer), `endless` (a delta every 20 ms, 500 at most,
//! noting when the client goes away), `error-event` (two deltas, then the API's own error
//! event, then the end), `incomplete` (Responses: `response.incomplete`), `error-500` /
//! `error-529` (an error status in the API's shape).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::mock_upstream::{full, openai_error, stream_response, MockBody, State, WORDS};

/// Usage of a Responses answer.
pub fn responses_usage() -> Value {
    json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4},
           "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 18})
}

/// Usage of an Anthropic answer (input tokens exclude the cache's).
pub fn anthropic_usage(output: u64) -> Value {
    json!({"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 100,
           "output_tokens": output})
}

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

async fn send(tx: &Tx, s: String) -> bool {
    tx.send(Ok(Bytes::from(s))).await.is_ok()
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn response_object(
    id: &str,
    model: &str,
    status: &str,
    output: Value,
    usage: Option<Value>,
) -> Value {
    json!({"id": id, "object": "response", "created_at": 1_700_000_000, "status": status,
           "model": model, "output": output, "usage": usage, "error": null,
           "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
           "instructions": null, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
           "temperature": 1.0, "top_p": 1.0, "metadata": {}})
}

fn message_item(text: &str) -> Value {
    json!({"id": "msg_mock1", "type": "message", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn function_call_item(arguments: &str) -> Value {
    json!({"id": "fc_mock1", "type": "function_call", "status": "completed", "call_id": "call_abc",
           "name": "get_weather", "arguments": arguments})
}

/// `POST /v1/responses`.
pub fn responses(state: Arc<State>, body: &Value) -> Response<MockBody> {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let served = format!("{model}-2025-04-14");
    if model == "error-500" {
        return openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            "server_error",
            None,
        );
    }
    let answered = body["input"]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["type"] == "function_call_output"));
    let call = model == "tool-call" && !answered;
    let text = if answered {
        "It is 18C in Paris.".to_string()
    } else {
        WORDS.concat()
    };
    if !body["stream"].as_bool().unwrap_or(false) {
        let output = if call {
            json!([function_call_item("{\"city\":\"Paris\"}")])
        } else {
            json!([message_item(&text)])
        };
        let status = if model == "incomplete" {
            "incomplete"
        } else {
            "completed"
        };
        let usage = (model != "no-usage").then(responses_usage);
        return full(
            StatusCode::OK,
            "application/json",
            response_object("resp_mock123", &served, status, output, usage).to_string(),
        );
    }
    stream_response(move |tx| async move {
        let mut seq = 0u64;
        let mut ev = |name: &str, mut data: Value| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(seq);
            seq += 1;
            event(name, &data)
        };
        let pending = response_object("resp_mock123", &served, "in_progress", json!([]), None);
        let mut ok = send(
            &tx,
            ev("response.created", json!({"response": pending.clone()})),
        )
        .await;
        ok &= send(
            &tx,
            ev("response.in_progress", json!({"response": pending})),
        )
        .await;
        if call {
            let item = json!({"id": "fc_mock1", "type": "function_call", "status": "in_progress",
                              "call_id": "call_abc", "name": "get_weather", "arguments": ""});
            ok &= send(
                &tx,
                ev(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": item}),
                ),
            )
            .await;
            for piece in ["{\"city\":", "\"Paris\"}"] {
                ok &= send(
                    &tx,
                    ev(
                        "response.function_call_arguments.delta",
                        json!({"item_id": "fc_mock1", "output_index": 0, "delta": piece}),
                    ),
                )
                .await;
            }
            ok &= send(&tx, ev("response.function_call_arguments.done",
                json!({"item_id": "fc_mock1", "output_index": 0, "arguments": "{\"city\":\"Paris\"}"}))).await;
            ok &= send(
                &tx,
                ev(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": function_call_item("{\"city\":\"Paris\"}")}),
                ),
            )
            .await;
        } else {
            let item = json!({"id": "msg_mock1", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            ok &= send(
                &tx,
                ev(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": item}),
                ),
            )
            .await;
            ok &= send(&tx, ev("response.content_part.added", json!({"item_id": "msg_mock1", "output_index": 0,
                "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}))).await;
            let delta = |w: String| json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "delta": w, "logprobs": []});
            match model.as_str() {
                "endless" => {
                    for i in 0..500 {
                        if !send(
                            &tx,
                            ev("response.output_text.delta", delta(format!(" word{i}"))),
                        )
                        .await
                        {
                            state.client_gone.store(true, Ordering::SeqCst);
                            return;
                        }
                        state.endless_sent.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                "error-event" => {
                    for w in &WORDS[..2] {
                        ok &=
                            send(&tx, ev("response.output_text.delta", delta(w.to_string()))).await;
                    }
                    let _ = ok
                        && send(
                            &tx,
                            ev(
                                "error",
                                json!({"code": "server_error",
                        "message": "The model is overloaded", "param": null}),
                            ),
                        )
                        .await;
                    return;
                }
                _ => {
                    let words: Vec<String> = if answered {
                        vec![text.clone()]
                    } else {
                        WORDS.iter().map(|w| w.to_string()).collect()
                    };
                    for w in words {
                        ok &= send(&tx, ev("response.output_text.delta", delta(w))).await;
                    }
                }
            }
            ok &= send(
                &tx,
                ev(
                    "response.output_text.done",
                    json!({"item_id": "msg_mock1",
                "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
                ),
            )
            .await;
            ok &= send(
                &tx,
                ev(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": message_item(&text)}),
                ),
            )
            .await;
        }
        let output = if call {
            json!([function_call_item("{\"city\":\"Paris\"}")])
        } else {
            json!([message_item(&text)])
        };
        let (name, status) = if model == "incomplete" {
            ("response.incomplete", "incomplete")
        } else {
            ("response.completed", "completed")
        };
        let done = response_object(
            "resp_mock123",
            &served,
            status,
            output,
            Some(responses_usage()),
        );
        let _ = ok && send(&tx, ev(name, json!({"response": done}))).await;
    })
}

/// The Responses retrieval routes under `/v1/responses/{id}`.
pub fn retrieval(method: &Method, rest: &str) -> Response<MockBody> {
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let body = match (method, tail) {
        (&Method::GET, "") => response_object(
            id,
            "gpt-4o-2025-04-14",
            "completed",
            json!([message_item(&WORDS.concat())]),
            Some(responses_usage()),
        ),
        (&Method::DELETE, "") => json!({"id": id, "object": "response", "deleted": true}),
        (&Method::POST, "cancel") => {
            response_object(id, "gpt-4o-2025-04-14", "cancelled", json!([]), None)
        }
        (&Method::GET, "input_items") => json!({"object": "list", "data": [
            {"id": "msg_in1", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": "Hi"}]}],
            "first_id": "msg_in1", "last_id": "msg_in1", "has_more": false}),
        _ => {
            return openai_error(
                StatusCode::NOT_FOUND,
                "Unknown request URL",
                "invalid_request_error",
                Some("unknown_url"),
            )
        }
    };
    full(StatusCode::OK, "application/json", body.to_string())
}

/// `POST /v1/embeddings`.
pub fn embeddings(body: &Value) -> Response<MockBody> {
    let model = body["model"].as_str().unwrap_or_default();
    let inputs = match &body["input"] {
        Value::Array(items) if items.iter().any(|i| !i.is_number()) => items.len(),
        _ => 1,
    };
    let vector = [0.25f32, -0.5, 0.125];
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens = 4 * inputs as u64;
    let resp = json!({"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    full(StatusCode::OK, "application/json", resp.to_string())
}

/// `POST /v1/completions`.
pub fn completions(body: &Value) -> Response<MockBody> {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let usage = json!({"prompt_tokens": 5, "completion_tokens": WORDS.len(), "total_tokens": 5 + WORDS.len()});
    let chunk = |text: &str, finish: Option<&str>| {
        json!({"id": "cmpl-mock123", "object": "text_completion", "created": 1_700_000_000, "model": model,
               "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
    };
    if !body["stream"].as_bool().unwrap_or(false) {
        let mut c = chunk(&WORDS.concat(), Some("stop"));
        c["usage"] = usage;
        return full(StatusCode::OK, "application/json", c.to_string());
    }
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let mut events: Vec<String> = WORDS
        .iter()
        .map(|w| format!("data: {}\n\n", chunk(w, None)))
        .collect();
    events.push(format!("data: {}\n\n", chunk("", Some("stop"))));
    if include_usage {
        let u = json!({"id": "cmpl-mock123", "object": "text_completion", "created": 1_700_000_000,
                       "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {u}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    stream_response(move |tx| async move {
        for e in events {
            if !send(&tx, e).await {
                return;
            }
        }
    })
}

fn anthropic_error(status: StatusCode, error_type: &str, message: &str) -> Response<MockBody> {
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
    full(status, "application/json", body.to_string())
}

/// `POST /v1/messages`.
pub fn messages(state: Arc<State>, headers: &http::HeaderMap, body: &Value) -> Response<MockBody> {
    // Anthropic's key header, or a bearer token as OpenRouter's Messages endpoint takes.
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if headers.get("x-api-key").is_none_or(|k| k.is_empty()) && !bearer {
        return anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        );
    }
    if headers.get("anthropic-version").is_none() {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if model == "error-529" {
        return anthropic_error(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
            "Overloaded",
        );
    }
    let served = format!("{model}-20250929");
    let answered = body["messages"].as_array().is_some_and(|ms| {
        ms.iter().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|bs| bs.iter().any(|b| b["type"] == "tool_result"))
        })
    });
    let call = model == "tool-call" && !answered;
    let text = if answered {
        "It is 18C in Paris.".to_string()
    } else if call {
        "Let me check.".to_string()
    } else {
        WORDS.concat()
    };
    let stop_reason = if call { "tool_use" } else { "end_turn" };
    if !body["stream"].as_bool().unwrap_or(false) {
        let mut content = vec![json!({"type": "text", "text": text})];
        if call {
            content.push(json!({"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {"city": "Paris"}}));
        }
        let msg = json!({"id": "msg_mock123", "type": "message", "role": "assistant", "model": served,
                         "content": content, "stop_reason": stop_reason, "stop_sequence": null,
                         "usage": anthropic_usage(6)});
        return full(StatusCode::OK, "application/json", msg.to_string());
    }
    stream_response(move |tx| async move {
        let start = json!({"type": "message_start", "message": {"id": "msg_mock123", "type": "message",
            "role": "assistant", "model": served, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": anthropic_usage(1)}});
        let mut ok = send(&tx, event("message_start", &start)).await;
        ok &= send(
            &tx,
            event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
            ),
        )
        .await;
        ok &= send(&tx, event("ping", &json!({"type": "ping"}))).await;
        let delta = |w: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}});
        match model.as_str() {
            "endless" => {
                for i in 0..500 {
                    if !send(
                        &tx,
                        event("content_block_delta", &delta(&format!(" word{i}"))),
                    )
                    .await
                    {
                        state.client_gone.store(true, Ordering::SeqCst);
                        return;
                    }
                    state.endless_sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            "error-event" => {
                for w in &WORDS[..2] {
                    ok &= send(&tx, event("content_block_delta", &delta(w))).await;
                }
                let _ = ok
                    && send(
                        &tx,
                        event(
                            "error",
                            &json!({"type": "error",
                    "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                        ),
                    )
                    .await;
                return;
            }
            _ if call || answered => {
                ok &= send(&tx, event("content_block_delta", &delta(&text))).await;
            }
            _ => {
                for w in WORDS {
                    ok &= send(&tx, event("content_block_delta", &delta(w))).await;
                }
            }
        }
        ok &= send(
            &tx,
            event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ),
        )
        .await;
        if call {
            ok &= send(&tx, event("content_block_start", &json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {}}}))).await;
            for piece in ["{\"city\":", " \"Paris\"}"] {
                ok &= send(
                    &tx,
                    event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ),
                )
                .await;
            }
            ok &= send(
                &tx,
                event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": 1}),
                ),
            )
            .await;
        }
        ok &= send(&tx, event("message_delta", &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 6}}))).await;
        let _ = ok && send(&tx, event("message_stop", &json!({"type": "message_stop"}))).await;
    })
}
