//! Attribute dialects: what a destination reads besides `gen_ai.*` (SPEC §4.4). Which one a
//! destination gets is its type's choice (`destination::Target::dialect`).
//!
//! - Langfuse (langfuse/langfuse `packages/shared/src/server/otel`, and
//!   <https://langfuse.com/integrations/native/opentelemetry>): `langfuse.observation.*`
//!   take precedence over `gen_ai.*`; the prompt and answer are read from
//!   `langfuse.observation.input/output` (or `input.value`), not `gen_ai.input.messages`,
//!   so in a dialect they are sent under the dialect's names only. Its generic usage mapping subtracts cache and reasoning
//!   tokens from the totals, so the usage is sent as `usage_details` already split: `input`
//!   is the uncached prompt, `output` the non-reasoning completion. Input and output are read
//!   from `langfuse.observation.input/output` (not from `gen_ai.input.messages`).
//! - OpenInference (Arize-ai/openinference `spec/semantic_conventions.md`), for Phoenix:
//!   `openinference.span.kind` is required; `llm.*` token counts and costs, `input.value` /
//!   `output.value` with their mime types.

use super::{decimal_f64, error_status, trace_str, Attrs};
use crate::destination::Dialect;
use crate::record::{CompletionRecord, CostSource};
use beacon_config::Api;

/// What kind of span, in the dialects' words.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Generation,
    Agent,
    Function,
    Tool,
    Attempt,
}

/// The span kind attribute of `kind` for `record`.
pub(super) fn kind(dialect: Dialect, kind: Kind, record: &CompletionRecord, a: &mut impl Attrs) {
    let embedding = record.api == Api::Embeddings;
    match dialect {
        Dialect::GenAi => {}
        Dialect::Langfuse => a.str(
            "langfuse.observation.type",
            match kind {
                Kind::Generation if embedding => "embedding",
                Kind::Generation => "generation",
                Kind::Agent => "agent",
                Kind::Tool => "tool",
                Kind::Function | Kind::Attempt => "span",
            },
        ),
        Dialect::OpenInference => a.str(
            "openinference.span.kind",
            match kind {
                Kind::Generation if embedding => "EMBEDDING",
                Kind::Generation | Kind::Attempt => "LLM",
                Kind::Agent => "AGENT",
                Kind::Tool => "TOOL",
                Kind::Function => "CHAIN",
            },
        ),
    }
}

/// Writes `{"k":v,…}` of `pairs` into `out` (keys are this module's own names, never
/// escaped), numbers formatted as serde_json formats them (`itoa`, and `ryu`'s shortest
/// round-trip floats). Hand-written: a `serde_json::Value` per record and dialect cost more
/// than the rest of the span, and `core::fmt` was still a tenth of the export thread.
fn json_object(out: &mut String, pairs: &[(&str, Number)]) {
    let mut ints = itoa::Buffer::new();
    let mut floats = ryu::Buffer::new();
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(k);
        out.push_str("\":");
        match *v {
            Number::Int(n) => out.push_str(ints.format(n)),
            Number::Uint(n) => out.push_str(ints.format(n)),
            Number::Float(f) if f.is_finite() => out.push_str(floats.format_finite(f)),
            Number::Float(_) => out.push_str("null"),
            Number::Decimal(d) => push_decimal(out, d),
            Number::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        }
    }
    out.push('}');
}

/// Appends `d` as a JSON number: its exact decimal digits (`0.00139`, `2.5`, `0`). A reader
/// parses them to the correctly rounded double, the one [`decimal_f64`] gives for every amount
/// a price table makes (both round the same exact value once) — without the conversion to a
/// double and its shortest-digits search, which were half of this dialect's cost JSON.
fn push_decimal(out: &mut String, d: rust_decimal::Decimal) {
    let (Ok(mantissa), scale) = (i64::try_from(d.mantissa()), d.scale() as usize) else {
        // Beyond 19 digits (no price table makes one): through the double.
        out.push_str(ryu::Buffer::new().format_finite(decimal_f64(d)));
        return;
    };
    if mantissa == 0 {
        out.push('0');
        return;
    }
    if mantissa < 0 {
        out.push('-');
    }
    let mut ints = itoa::Buffer::new();
    let digits = ints.format(mantissa.unsigned_abs());
    if scale == 0 {
        out.push_str(digits);
        return;
    }
    // Trailing zeros of the fraction say nothing: `1.50` is `1.5`, `2.000` is `2`.
    let kept = digits.trim_end_matches('0');
    let dropped = (digits.len() - kept.len()).min(scale);
    let (digits, scale) = (&digits[..digits.len() - dropped], scale - dropped);
    if scale == 0 {
        out.push_str(digits);
    } else if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else {
        out.push_str("0.");
        for _ in digits.len()..scale {
            out.push('0');
        }
        out.push_str(digits);
    }
}

/// A JSON number (or boolean) of [`json_object`].
#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i64),
    Uint(u64),
    Float(f64),
    /// An amount of money, written with its exact digits ([`push_decimal`]).
    Decimal(rust_decimal::Decimal),
    Bool(bool),
}

/// The request's sampling parameters as one JSON object (absent ones left out).
fn parameters(record: &CompletionRecord, out: &mut String) {
    let p = &record.params;
    let mut pairs: Vec<(&str, Number)> = Vec::with_capacity(7);
    for (k, v) in [
        ("temperature", p.temperature),
        ("top_p", p.top_p),
        ("frequency_penalty", p.frequency_penalty),
        ("presence_penalty", p.presence_penalty),
    ] {
        if let Some(v) = v {
            pairs.push((k, Number::Float(v)));
        }
    }
    if let Some(v) = p.max_tokens {
        pairs.push(("max_tokens", Number::Int(v)));
    }
    if let Some(v) = p.seed {
        pairs.push(("seed", Number::Int(v)));
    }
    pairs.push(("stream", Number::Bool(record.stream)));
    json_object(out, &pairs);
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` of Unix nanoseconds.
pub(super) fn iso8601(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let micros = (unix_nanos % 1_000_000_000) / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (y, m, d) = beacon_config::calendar::civil(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The generation span's dialect attributes (besides input and output: [`input`],
/// [`output`]).
pub(super) fn generation(dialect: Dialect, record: &CompletionRecord, a: &mut impl Attrs) {
    let model = record
        .served_model
        .as_deref()
        .unwrap_or(&record.requested_model);
    let u = &record.usage;
    let known_cost = record.cost.source != CostSource::Unknown;
    let c = &record.cost;
    match dialect {
        Dialect::GenAi => {}
        Dialect::Langfuse => {
            a.str("langfuse.observation.model.name", model);
            let mut json = String::with_capacity(256);
            parameters(record, &mut json);
            a.str("langfuse.observation.model.parameters", &json);
            json.clear();
            json_object(
                &mut json,
                &[
                    (
                        "input",
                        Number::Uint(
                            u.prompt_tokens
                                .saturating_sub(u.cached_tokens + u.cache_write_tokens),
                        ),
                    ),
                    ("input_cache_read", Number::Uint(u.cached_tokens)),
                    ("input_cache_creation", Number::Uint(u.cache_write_tokens)),
                    (
                        "output",
                        Number::Uint(u.completion_tokens.saturating_sub(u.reasoning_tokens)),
                    ),
                    ("output_reasoning", Number::Uint(u.reasoning_tokens)),
                    ("total", Number::Uint(u.total_tokens)),
                ],
            );
            a.str("langfuse.observation.usage_details", &json);
            if known_cost {
                json.clear();
                json_object(
                    &mut json,
                    &[
                        (
                            "input",
                            Number::Decimal(c.input - c.cache_read - c.cache_creation),
                        ),
                        ("input_cache_read", Number::Decimal(c.cache_read)),
                        ("input_cache_creation", Number::Decimal(c.cache_creation)),
                        ("output", Number::Decimal(c.output - c.reasoning)),
                        ("output_reasoning", Number::Decimal(c.reasoning)),
                        ("total", Number::Decimal(c.total)),
                    ],
                );
                a.str("langfuse.observation.cost_details", &json);
            }
            if let (true, Some(first)) = (record.stream, record.timings.first_chunk_us) {
                let at = record.timings.received_unix_nanos + first * 1000;
                a.str("langfuse.observation.completion_start_time", &iso8601(at));
            }
            if let Some((_, message)) = error_status(record) {
                a.str("langfuse.observation.level", "ERROR");
                a.str("langfuse.observation.status_message", message);
            }
        }
        Dialect::OpenInference => {
            a.str("llm.model_name", model);
            a.str("llm.provider", &record.provider);
            let mut json = String::with_capacity(128);
            parameters(record, &mut json);
            a.str("llm.invocation_parameters", &json);
            a.count("llm.token_count.prompt", u.prompt_tokens);
            a.count("llm.token_count.completion", u.completion_tokens);
            a.count("llm.token_count.total", u.total_tokens);
            a.count("llm.token_count.prompt_details.cache_read", u.cached_tokens);
            a.count(
                "llm.token_count.prompt_details.cache_write",
                u.cache_write_tokens,
            );
            a.count(
                "llm.token_count.completion_details.reasoning",
                u.reasoning_tokens,
            );
            if known_cost {
                a.double("llm.cost.prompt", decimal_f64(c.input));
                a.double("llm.cost.completion", decimal_f64(c.output));
                a.double("llm.cost.total", decimal_f64(c.total));
                a.double(
                    "llm.cost.prompt_details.cache_read",
                    decimal_f64(c.cache_read),
                );
                a.double(
                    "llm.cost.prompt_details.cache_write",
                    decimal_f64(c.cache_creation),
                );
                a.double(
                    "llm.cost.completion_details.reasoning",
                    decimal_f64(c.reasoning),
                );
            }
        }
    }
}

/// Attributes every span of the completion carries in the dialect: Langfuse reads trace
/// name, environment and release from any span and wants them on every span.
pub(super) fn common(dialect: Dialect, record: &CompletionRecord, a: &mut impl Attrs) {
    if dialect != Dialect::Langfuse {
        return;
    }
    if let Some(name) = trace_str(record, "trace_name") {
        a.str("langfuse.trace.name", name);
    }
    if let Some(env) = trace_str(record, "environment") {
        a.str("langfuse.environment", env);
    }
    if let Some(release) = trace_str(record, "release") {
        a.str("langfuse.release", release);
    }
}

/// The prompt (`json`: OpenTelemetry's `gen_ai.input.messages` form) where the dialect
/// reads it — instead of `gen_ai.input.messages` in the dialects, which their tools do not read.
pub(super) fn input(dialect: Dialect, json: &str, a: &mut impl Attrs) {
    match dialect {
        Dialect::GenAi => a.str("gen_ai.input.messages", json),
        Dialect::Langfuse => a.str("langfuse.observation.input", json),
        Dialect::OpenInference => {
            a.str("input.value", json);
            a.str("input.mime_type", "application/json");
        }
    }
}

/// The answer (`messages`: OpenTelemetry's `gen_ai.output.messages` form, `text`: its text)
/// where the dialect reads it — instead of `gen_ai.output.messages` in the dialects.
pub(super) fn output(
    dialect: Dialect,
    messages: &str,
    text: &str,
    tool_calls: &[crate::record::ToolCall],
    a: &mut impl Attrs,
) {
    match dialect {
        Dialect::GenAi => a.str("gen_ai.output.messages", messages),
        Dialect::Langfuse => a.str("langfuse.observation.output", messages),
        Dialect::OpenInference => {
            a.str("output.value", text);
            a.str("output.mime_type", "text/plain");
            a.str("llm.output_messages.0.message.role", "assistant");
            a.str("llm.output_messages.0.message.content", text);
            for (i, call) in tool_calls.iter().enumerate() {
                let key =
                    |k: &str| format!("llm.output_messages.0.message.tool_calls.{i}.tool_call.{k}");
                if let Some(id) = &call.id {
                    a.str(&key("id"), id);
                }
                if let Some(name) = &call.name {
                    a.str(&key("function.name"), name);
                }
                a.str(&key("function.arguments"), &call.arguments);
            }
        }
    }
}

/// A tool run's name, arguments and result where the dialect reads them.
pub(super) fn tool(
    dialect: Dialect,
    name: &str,
    arguments: Option<&str>,
    result: Option<&str>,
    a: &mut impl Attrs,
) {
    match dialect {
        Dialect::GenAi => {}
        Dialect::Langfuse => {
            if let Some(args) = arguments {
                a.str("langfuse.observation.input", args);
            }
            if let Some(result) = result {
                a.str("langfuse.observation.output", result);
            }
        }
        Dialect::OpenInference => {
            a.str("tool.name", name);
            if let Some(args) = arguments {
                a.str("input.value", args);
            }
            if let Some(result) = result {
                a.str("output.value", result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{iso8601, json_object, Number};

    #[test]
    fn hand_written_json_parses_as_the_same_object() {
        let mut out = String::new();
        json_object(
            &mut out,
            &[
                ("input", Number::Uint(100)),
                ("cost", Number::Float(0.000575)),
                ("tiny", Number::Float(1e-9)),
                ("seed", Number::Int(-7)),
                ("stream", Number::Bool(true)),
                ("bad", Number::Float(f64::NAN)),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"input": 100, "cost": 0.000575, "tiny": 1e-9, "seed": -7,
                "stream": true, "bad": null})
        );
    }

    #[test]
    fn money_is_written_with_its_exact_digits_and_reads_back_as_the_same_double() {
        use rust_decimal::Decimal;
        for (text, written) in [
            ("0", "0"),
            ("0.000", "0"),
            ("0.00139", "0.00139"),
            ("0.001390", "0.00139"),
            ("2.5", "2.5"),
            ("-1.25", "-1.25"),
            ("12.000", "12"),
            ("100", "100"),
            ("0.0000000001", "0.0000000001"),
            ("123456.789012", "123456.789012"),
            ("9223372036854775807", "9223372036854775807"),
            ("-0.5", "-0.5"),
        ] {
            let d: Decimal = text.parse().unwrap();
            let mut out = String::new();
            super::push_decimal(&mut out, d);
            assert_eq!(out, written, "{text}");
            let read: f64 = serde_json::from_str(&out).unwrap();
            assert_eq!(read, super::decimal_f64(d), "{text}");
        }
        // Beyond 19 digits: through the double, still a JSON number of the same value.
        let huge: Decimal = "79228162514264337593543950335".parse().unwrap();
        let mut out = String::new();
        super::push_decimal(&mut out, huge);
        assert_eq!(
            serde_json::from_str::<f64>(&out).unwrap(),
            super::decimal_f64(huge)
        );
        // Every amount a price table makes of a few digits, at every scale.
        for mantissa in [1i64, 7, 10, 139, 2_500, 999_999, 1_000_001] {
            for scale in 0..=12u32 {
                let d = Decimal::new(mantissa, scale);
                let mut out = String::new();
                super::push_decimal(&mut out, d);
                let read: f64 = serde_json::from_str(&out).unwrap();
                assert_eq!(read, super::decimal_f64(d), "{mantissa}e-{scale}");
            }
        }
    }

    #[test]
    fn iso8601_of_unix_nanos() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000Z");
        // 2026-12-07T14:24:04.123456Z
        assert_eq!(
            iso8601(1_796_653_444_123_456_789),
            "2026-12-07T14:24:04.123456Z"
        );
    }
}
