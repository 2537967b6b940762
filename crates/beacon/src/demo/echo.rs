//! The demo's upstream: an in-process server that speaks OpenAI's chat completions and
//! Responses framing (JSON and server-sent events) and answers every request by echoing the
//! last user message, with token usage counted by words. No account, no network.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The one model the echo upstream serves.
pub const MODEL: &str = "echo-1";
/// Largest request body it reads.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest echoed text, in bytes.
const MAX_ECHO: usize = 4096;
/// Pause between streamed words, so a stream looks like one.
const WORD_DELAY: Duration = Duration::from_millis(15);

/// A response body: all at once, or events as they are produced.
pub enum EchoBody {
    /// The whole body.
    Full(Option<Bytes>),
    /// Server-sent events from a producer task.
    Events(mpsc::Receiver<Bytes>),
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            EchoBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            EchoBody::Events(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<EchoBody> {
    let mut r = Response::new(EchoBody::Full(Some(Bytes::from(v.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<EchoBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

/// Serves one request.
pub async fn handle(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if parts.method == Method::GET && path == "/v1/models" {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "beacon-demo"}]}),
        ));
    }
    if parts.method != Method::POST {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "The demo upstream serves POST /v1/chat/completions and /v1/responses.",
        ));
    }
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request body is too large for the demo upstream.",
            ))
        }
    };
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(error(StatusCode::BAD_REQUEST, "The body is not JSON."));
    };
    Ok(match path.as_str() {
        "/v1/chat/completions" => chat(&body),
        "/v1/responses" => responses(&body),
        _ => error(
            StatusCode::NOT_FOUND,
            "The demo upstream serves POST /v1/chat/completions and /v1/responses.",
        ),
    })
}

/// Text of a message's `content`: a string, or the text parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Roughly a token per word, plus a few per message — the shape of real counts.
fn tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn reply_to(last_user: &str) -> String {
    let mut said: String = last_user.trim().to_string();
    if said.len() > MAX_ECHO {
        let mut cut = MAX_ECHO;
        while !said.is_char_boundary(cut) {
            cut -= 1;
        }
        said.truncate(cut);
    }
    if said.is_empty() {
        "Echo: (nothing to echo)".to_string()
    } else {
        format!("Echo: {said}")
    }
}

fn id(prefix: &str) -> String {
    format!("{prefix}{:016x}", super::random())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Splits the reply into stream pieces: each word with the space before it.
fn pieces(reply: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in reply.split(' ').enumerate() {
        out.push(if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        });
    }
    out
}

fn stream(events: Vec<Bytes>) -> Response<EchoBody> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(WORD_DELAY).await;
            }
            if tx.send(e).await.is_err() {
                return; // the client (Beacon) went away
            }
        }
    });
    let mut r = Response::new(EchoBody::Events(rx));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r
}

/// `POST /v1/chat/completions`.
fn chat(body: &Value) -> Response<EchoBody> {
    let Some(messages) = body["messages"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "`messages` must be an array.");
    };
    let prompt: u64 = messages
        .iter()
        .map(|m| tokens(&text_of(&m["content"])) + 3)
        .sum();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    let reply = reply_to(&last_user);
    let completion = tokens(&reply);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
    let id = id("chatcmpl-demo");
    let created = now_secs();
    if !body["stream"].as_bool().unwrap_or(false) {
        return json_response(
            StatusCode::OK,
            &json!({"id": id, "object": "chat.completion", "created": created, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null},
                    "logprobs": null, "finish_reason": "stop"}],
                "usage": usage}),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for p in pieces(&reply) {
        events.push(chunk(json!({"content": p}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if body["stream_options"]["include_usage"].as_bool() == Some(true) {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": MODEL,
            "choices": [], "usage": usage});
        events.push(Bytes::from(format!("data: {c}\n\n")));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream(events)
}

/// `POST /v1/responses`.
fn responses(body: &Value) -> Response<EchoBody> {
    let (prompt, last_user) = match &body["input"] {
        Value::String(s) => (tokens(s) + 3, s.clone()),
        Value::Array(items) => (
            items
                .iter()
                .map(|i| tokens(&text_of(&i["content"])) + 3)
                .sum(),
            items
                .iter()
                .rev()
                .find(|i| i["role"] == "user")
                .map(|i| text_of(&i["content"]))
                .unwrap_or_default(),
        ),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "`input` must be a string or an array of items.",
            )
        }
    };
    let reply = reply_to(&last_user);
    let completion = tokens(&reply);
    let usage = json!({"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion});
    let id = id("resp_demo");
    let msg_id = id.replacen("resp_", "msg_", 1);
    let message = |text: &str, status: &str| {
        json!({"id": msg_id, "type": "message", "status": status, "role": "assistant",
            "content": if status == "completed" { json!([{"type": "output_text", "text": text, "annotations": []}]) } else { json!([]) }})
    };
    let object = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": now_secs(), "status": status,
            "model": MODEL, "output": output, "usage": usage, "error": null, "incomplete_details": null,
            "instructions": null, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
            "temperature": 1.0, "top_p": 1.0, "metadata": {}})
    };
    let done = object(
        "completed",
        json!([message(&reply, "completed")]),
        usage.clone(),
    );
    if !body["stream"].as_bool().unwrap_or(false) {
        return json_response(StatusCode::OK, &done);
    }
    let mut seq = 0u64;
    let mut ev = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
    };
    let pending = object("in_progress", json!([]), Value::Null);
    let mut events = vec![
        ev("response.created", json!({"response": pending.clone()})),
        ev("response.in_progress", json!({"response": pending})),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": message("", "in_progress")}),
        ),
        ev(
            "response.content_part.added",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
    ];
    for p in pieces(&reply) {
        events.push(ev(
            "response.output_text.delta",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": p, "logprobs": []}),
        ));
    }
    events.push(ev(
        "response.output_text.done",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": reply, "logprobs": []}),
    ));
    events.push(ev(
        "response.content_part.done",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": reply, "annotations": []}}),
    ));
    events.push(ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": message(&reply, "completed")}),
    ));
    events.push(ev("response.completed", json!({"response": done})));
    stream(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_last_user_message_with_word_counts() {
        assert_eq!(reply_to("  hello there "), "Echo: hello there");
        assert_eq!(reply_to(""), "Echo: (nothing to echo)");
        let long = "é".repeat(MAX_ECHO);
        assert!(reply_to(&long).len() <= MAX_ECHO + 6);
        assert_eq!(pieces("Echo: a b").concat(), "Echo: a b");
        assert_eq!(tokens("one two  three"), 3);
        assert_eq!(
            text_of(
                &json!([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}])
            ),
            "a b"
        );
    }
}
