//! Token estimation with a real BPE tokenizer, for upstreams that report no usage.
//!
//! Counts follow OpenAI's chat accounting: each message costs its tokens plus a fixed
//! framing overhead, and the reply is primed with three tokens. Text beyond
//! [`MAX_TOKENIZED_BYTES`] is extrapolated from the bytes-per-token ratio of what was
//! tokenized, which bounds the CPU one request can take.
//!
//! The tokenizer runs in linear time (no quadratic merge on long runs such as a megabyte
//! of one repeated character), but a large estimate still takes milliseconds. Estimates
//! over [`INLINE_BYTES`] therefore run on one estimator thread ([`spawn`]), never on a
//! proxy event loop, where they would stall every other request of that worker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::OnceLock;

use beacon_broadcast::record::TokenUsage;
use bytes::Bytes;
use serde_json::Value;
use tiktoken::CoreBpe;

/// Most text tokenized per side of one completion.
pub const MAX_TOKENIZED_BYTES: usize = 1024 * 1024;

/// Estimates over this many bytes of text run on the estimator thread. Below it an estimate
/// takes a few microseconds on prose (criterion: 16 KiB in 16 µs) and at most a few
/// milliseconds on adversarial text (16 KiB of one repeated letter: 1.3 ms; random
/// non-Latin letters: about 1 µs per byte), comparable to the hand-off itself.
pub const INLINE_BYTES: usize = 4 * 1024;

/// Estimates waiting for the estimator thread, at most.
const QUEUE: usize = 256;

/// Text waiting for the estimator thread, at most (the queued jobs hold their request's
/// messages); past either bound an estimate is [`Input::coarse`].
pub const QUEUED_BYTES_MAX: usize = 64 * 1024 * 1024;

const TOKENS_PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

fn encoder(model: &str) -> Option<&'static CoreBpe> {
    // gpt-4o, gpt-4.1, gpt-5 and the o-series use o200k_base; older OpenAI models and most
    // other vendors are closer to cl100k_base.
    let m = model.rsplit('/').next().unwrap_or(model);
    let legacy = m.starts_with("gpt-3.5")
        || (m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4.1"));
    // Loaded on first use and kept: both tables are compiled in, so `None` cannot happen
    // with this crate's features.
    tiktoken::get_encoding(if legacy { "cl100k_base" } else { "o200k_base" })
}

/// Tokens in `text`, whose full length was `total_bytes` (≥ `text.len()` when truncated).
pub fn count_text(model: &str, text: &str, total_bytes: usize) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let mut end = text.len().min(MAX_TOKENIZED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let counted = match encoder(model) {
        Some(bpe) => bpe.count(&text[..end]) as u64,
        // Unreachable with the vocabularies compiled in; OpenAI's rule of thumb otherwise.
        None => end.div_ceil(4) as u64,
    };
    let total_bytes = total_bytes.max(text.len());
    if end == total_bytes || end == 0 {
        counted
    } else {
        // Extrapolate at the same bytes-per-token ratio.
        (counted as f64 * total_bytes as f64 / end as f64).ceil() as u64
    }
}

/// Prompt tokens of a `messages` array (as the client sent it).
pub fn count_prompt(model: &str, messages: &Value) -> u64 {
    let mut text = String::new();
    let mut messages_n = 0u64;
    let mut total_bytes = 0usize;
    let mut push = |s: &str, text: &mut String| {
        total_bytes += s.len();
        if text.len() < MAX_TOKENIZED_BYTES {
            text.push_str(s);
            text.push('\n');
        }
    };
    for m in messages.as_array().into_iter().flatten() {
        messages_n += 1;
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            push(role, &mut text);
        }
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            push(name, &mut text);
        }
        match m.get("content") {
            Some(Value::String(s)) => push(s, &mut text),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        push(t, &mut text);
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = m.get("tool_calls") {
            push(&calls.to_string(), &mut text);
        }
    }
    if messages_n == 0 {
        return 0;
    }
    count_text(model, &text, total_bytes.max(text.len()))
        + messages_n * TOKENS_PER_MESSAGE
        + REPLY_PRIMING
}

/// How an estimate was made, as counted in `beacon_token_estimates_total{method}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Counted with the tokenizer.
    Tokenizer,
    /// Four bytes per token, because the estimator was saturated.
    Coarse,
}

impl Method {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Method::Tokenizer => "tokenizer",
            Method::Coarse => "coarse",
        }
    }
}

/// Everything one completion's estimate needs, owned, so that it can move to the
/// estimator thread.
#[derive(Debug)]
pub struct Input {
    /// Served (or else upstream) model: picks the encoding.
    pub model: String,
    /// The request's raw `messages` array.
    pub messages: Bytes,
    /// Output text kept (with tool-call names and arguments appended).
    pub output: String,
    /// Output bytes seen in all, ≥ `output.len()` when the kept text was capped.
    pub output_bytes: usize,
}

impl Input {
    /// Bytes of text this estimate would tokenize (before the per-side cap).
    pub fn bytes(&self) -> usize {
        self.messages.len() + self.output.len()
    }

    /// Whether the estimate is small enough to run where it is asked for.
    pub fn is_small(&self) -> bool {
        self.bytes() <= INLINE_BYTES
    }

    /// A tokenizer-free estimate, four bytes per token (OpenAI's rule of thumb), for when the
    /// estimator is saturated; marked estimated like the others.
    pub fn coarse(&self) -> TokenUsage {
        estimated(
            self.messages.len().div_ceil(4) as u64,
            self.output_bytes.max(self.output.len()).div_ceil(4) as u64,
        )
    }

    /// Counts prompt and completion tokens; the usage is marked estimated.
    pub fn run(&self) -> TokenUsage {
        let prompt = serde_json::from_slice::<Value>(&self.messages)
            .map(|m| count_prompt(&self.model, &m))
            .unwrap_or(0);
        estimated(
            prompt,
            count_text(&self.model, &self.output, self.output_bytes),
        )
    }
}

/// Usage with `prompt` and `completion` tokens, marked estimated.
fn estimated(prompt: u64, completion: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        estimated: true,
        ..TokenUsage::default()
    }
}

/// What the estimator thread is sent.
enum Job {
    /// An estimate, and what to do with it there.
    Estimate(Input, Box<dyn FnOnce(TokenUsage, Method) + Send>),
    /// Answers once everything queued before it has run ([`flush`]).
    Marker(SyncSender<()>),
}

/// Text waiting for the estimator, in bytes.
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Whether the current overload has been logged.
static OVERLOADED: AtomicBool = AtomicBool::new(false);

fn estimator() -> Option<&'static SyncSender<Job>> {
    static TX: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let started = std::thread::Builder::new()
            .name("beacon-estimate".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Estimate(input, then) => {
                            let usage = input.run();
                            QUEUED_BYTES.fetch_sub(input.bytes(), Ordering::Relaxed);
                            then(usage, Method::Tokenizer);
                        }
                        Job::Marker(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        match started {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "no estimator thread: large estimates are coarse");
                None
            }
        }
    })
    .as_ref()
}

/// Runs `input`'s estimate on the estimator thread and hands the usage to `then` there.
///
/// Back-pressure instead of an unbounded queue of request bodies: when the estimator is
/// saturated (its queue full, or more than [`QUEUED_BYTES_MAX`] of text waiting) or could not
/// start, `then` gets [`Input::coarse`] at once, on the caller's thread. A tokenizer never
/// runs long on an event loop either way.
pub fn spawn(input: Input, then: impl FnOnce(TokenUsage, Method) + Send + 'static) {
    let n = input.bytes();
    // Checked before it is added, so a refused job never counts against the others (two
    // callers racing past the check overshoot the bound by one job, harmlessly).
    let queued = QUEUED_BYTES.load(Ordering::Relaxed).saturating_add(n);
    let refused = match estimator() {
        Some(tx) if queued <= QUEUED_BYTES_MAX => {
            QUEUED_BYTES.fetch_add(n, Ordering::Relaxed);
            match tx.try_send(Job::Estimate(input, Box::new(then))) {
                Ok(()) => {
                    if queued <= QUEUED_BYTES_MAX / 2 {
                        OVERLOADED.store(false, Ordering::Relaxed);
                    }
                    return;
                }
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    QUEUED_BYTES.fetch_sub(n, Ordering::Relaxed);
                    job
                }
            }
        }
        _ => Job::Estimate(input, Box::new(then)),
    };
    if let Job::Estimate(input, then) = refused {
        if !OVERLOADED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                queued_bytes = queued,
                "token estimator saturated: large estimates are coarse (bytes / 4) until it catches up"
            );
        }
        then(input.coarse(), Method::Coarse);
    }
}

/// Waits (up to `timeout`) until every estimate queued so far has finished and submitted its
/// record: at shutdown, between the proxy workers stopping and the broadcast queue closing.
/// Returns whether the queue drained in time.
pub fn flush(timeout: std::time::Duration) -> bool {
    let Some(tx) = estimator() else {
        return true;
    };
    let deadline = std::time::Instant::now() + timeout;
    let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
    // The thread runs jobs in order: the marker runs after everything queued before it.
    let mut marker = Job::Marker(done_tx);
    loop {
        match tx.try_send(marker) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                marker = back;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
    done_rx
        .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        .is_ok()
}

/// Makes the estimate without blocking the event loop when it is large: on the estimator
/// thread, awaiting its answer.
pub async fn off_loop(input: Input) -> (TokenUsage, Method) {
    if input.is_small() {
        return (input.run(), Method::Tokenizer);
    }
    let coarse = input.coarse();
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(input, move |usage, method| {
        let _ = tx.send((usage, method));
    });
    // No answer only if the estimator thread died mid-job.
    rx.await.unwrap_or((coarse, Method::Coarse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_with_a_real_tokenizer() {
        // "hello world" is two tokens in both encodings.
        assert_eq!(count_text("gpt-4o", "hello world", 11), 2);
        assert_eq!(count_text("gpt-3.5-turbo", "hello world", 11), 2);
        assert_eq!(count_text("gpt-4o", "", 0), 0);
    }

    #[test]
    fn prompt_counts_include_message_framing() {
        let msgs = json!([{"role": "user", "content": "hello world"}]);
        let n = count_prompt("gpt-4o", &msgs);
        // role (1) + newline + text (2) + newline, + 3 per message + 3 priming
        assert!((8..=12).contains(&n), "{n}");
        let parts = json!([{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]);
        assert_eq!(count_prompt("gpt-4o", &parts), n);
        assert_eq!(count_prompt("gpt-4o", &json!([])), 0);
    }

    #[test]
    fn long_runs_of_one_character_take_linear_time() {
        // A quadratic merge (tiktoken-rs) took 2.6 s for 100 kB of one letter; a megabyte
        // would have stalled its worker for minutes. Here: the whole capped megabyte.
        let text = "a".repeat(MAX_TOKENIZED_BYTES);
        let started = std::time::Instant::now();
        let n = count_text("gpt-4o", &text, text.len());
        assert!(n > 0 && n < text.len() as u64, "{n}");
        // Generous for a debug build on a shared 2-core machine; quadratic would be hours.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn large_estimates_run_off_the_event_loop() {
        let messages = json!([{"role": "user", "content": "word ".repeat(10_000)}]).to_string();
        let input = Input {
            model: "gpt-4o".into(),
            messages: Bytes::from(messages),
            output: "hello world".into(),
            output_bytes: 11,
        };
        assert!(!input.is_small());
        let expected = input.run();
        assert!(expected.prompt_tokens > 10_000 && expected.estimated);
        assert_eq!(expected.completion_tokens, 2);
        // Same answer from the estimator thread, and it really ran there.
        assert_eq!(off_loop(input).await, (expected, Method::Tokenizer));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let big = Input {
            model: "gpt-4o".into(),
            messages: Bytes::from(vec![b' '; INLINE_BYTES + 1]),
            output: String::new(),
            output_bytes: 0,
        };
        spawn(big, move |usage, method| {
            let thread = std::thread::current().name().map(str::to_owned);
            let _ = tx.send((usage, method, thread));
        });
        let (usage, method, thread) = rx.await.unwrap();
        assert_eq!(thread.as_deref(), Some("beacon-estimate"));
        assert_eq!(method, Method::Tokenizer);
        assert!(usage.estimated);

        // flush() returns once what was queued before it has run.
        let (tx, rx) = std::sync::mpsc::channel();
        let slow = Input {
            model: "gpt-4o".into(),
            messages: Bytes::from(
                json!([{"role": "user", "content": "x".repeat(200_000)}]).to_string(),
            ),
            output: String::new(),
            output_bytes: 0,
        };
        spawn(slow, move |usage, _| {
            let _ = tx.send(usage);
        });
        assert!(flush(std::time::Duration::from_secs(30)));
        assert!(rx.try_recv().is_ok_and(|u| u.prompt_tokens > 0));
    }

    #[test]
    fn a_saturated_estimator_gives_coarse_estimates_at_once() {
        let input = Input {
            model: "gpt-4o".into(),
            messages: Bytes::from(vec![b'x'; 4000]),
            output: "y".repeat(100),
            output_bytes: 400,
        };
        let coarse = input.coarse();
        assert_eq!(
            (coarse.prompt_tokens, coarse.completion_tokens),
            (1000, 100)
        );
        assert!(coarse.estimated);
        // Past the byte bound nothing is queued: the answer comes on this thread, coarse.
        let huge = Input {
            model: "gpt-4o".into(),
            messages: Bytes::from(vec![b'x'; QUEUED_BYTES_MAX + 1]),
            output: String::new(),
            output_bytes: 0,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let caller = std::thread::current().id();
        spawn(huge, move |usage, method| {
            let _ = tx.send((usage, method, std::thread::current().id()));
        });
        let (usage, method, thread) = rx.try_recv().unwrap();
        assert_eq!(thread, caller);
        assert_eq!(method, Method::Coarse);
        assert_eq!(
            usage.prompt_tokens,
            (QUEUED_BYTES_MAX as u64 + 1).div_ceil(4)
        );
    }

    #[test]
    fn truncated_text_is_extrapolated() {
        let exact = count_text("gpt-4o", "hello world ", 12);
        let doubled = count_text("gpt-4o", "hello world ", 24);
        assert_eq!(doubled, exact * 2);
    }
}
