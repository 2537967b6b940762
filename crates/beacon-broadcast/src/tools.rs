//! Where tool executions are found (SPEC §4.5): a completion that asks for tool calls is
//! remembered by (tenant, trace, call id) on the export thread; a later request of the same
//! trace whose messages carry those calls' results gets a [`ToolExecution`] for each — from
//! the end of the asking completion to the arrival of the result — which the span builder
//! turns into `gen_ai.execute_tool` spans.
//!
//! ```text
//! record 1 (response: tool_calls [call_1 get_weather]) ──▶ remember (acme, trace, call_1)
//! record 2 (messages: role tool, tool_call_id call_1)  ──▶ executions [call_1 get_weather,
//!                                                          started = record 1's end]
//! ```
//!
//! Only completions this node exported are linked (a result arriving on another node has
//! no start to measure from). Each call is linked once: a conversation resends its old tool
//! results with every turn, and only the first gets the span. Bounded: at most
//! [`MAX_PENDING`] calls wait (the oldest are forgotten first), for at most [`PENDING_TTL`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::record::{CompletionRecord, ToolExecution};

/// Most tool calls remembered at once (a few hundred bytes each).
pub const MAX_PENDING: usize = 10_000;
/// How long a tool call waits for its result.
pub const PENDING_TTL: Duration = Duration::from_secs(3_600);

/// (tenant, trace id as the caller gave it, call id).
type Key = (String, String, String);

/// Tool calls waiting for their results.
#[derive(Debug, Default)]
pub struct ToolCalls {
    pending: HashMap<Key, Pending>,
    /// Keys in the order they were remembered, with when: the oldest leave first.
    order: VecDeque<(Key, u64)>,
}

#[derive(Debug)]
struct Pending {
    name: String,
    /// When the asking completion ended (Unix ns).
    ended_unix_nanos: u64,
}

/// The trace a record belongs to as the caller named it: the body's `trace.trace_id`, else
/// the `sentry-trace` / `traceparent` header's. `None`: each completion is its own trace.
fn trace_of(record: &CompletionRecord) -> Option<&str> {
    record
        .trace
        .as_ref()
        .and_then(|t| t.get("trace_id"))
        .and_then(serde_json::Value::as_str)
        .or_else(|| record.trace_context.as_ref().map(|t| t.trace_id.as_str()))
        .filter(|t| !t.is_empty())
}

impl ToolCalls {
    /// Links `record`'s tool results to the calls they answer (filling
    /// `record.tools.executions`), then remembers the calls `record` asked for.
    pub fn link(&mut self, record: &mut CompletionRecord) {
        let Some(trace) = trace_of(record) else {
            return;
        };
        if record.tools.answered.is_empty() && record.tools.requested.is_empty() {
            return;
        }
        let received = record.timings.received_unix_nanos;
        self.expire(received);
        let tenant = record.tenant_id.clone();
        let trace = trace.to_string();
        let mut executions = Vec::new();
        for id in &record.tools.answered {
            let key = (tenant.clone(), trace.clone(), id.clone());
            if let Some(p) = self.pending.remove(&key) {
                executions.push(ToolExecution {
                    call_id: id.clone(),
                    name: p.name,
                    started_unix_nanos: p.ended_unix_nanos.min(received),
                });
            }
        }
        record.tools.executions = executions;
        let ended = received.saturating_add(record.timings.last_byte_us.saturating_mul(1000));
        for call in &record.tools.requested {
            let key = (tenant.clone(), trace.clone(), call.id.clone());
            while self.pending.len() >= MAX_PENDING {
                let Some((old, at)) = self.order.pop_front() else {
                    break;
                };
                if self.is_current(&old, at) {
                    self.pending.remove(&old);
                }
            }
            let pending = Pending {
                name: call.name.clone(),
                ended_unix_nanos: ended,
            };
            self.pending.insert(key.clone(), pending);
            self.order.push_back((key, ended));
        }
        // Entries of calls linked (or replaced) meanwhile: dropped once they are as many as
        // the waiting calls, so the queue stays within twice the bound.
        if self.order.len() > 2 * self.pending.len().max(MAX_PENDING / 2) {
            let pending = &self.pending;
            self.order
                .retain(|(k, at)| pending.get(k).is_some_and(|p| p.ended_unix_nanos == *at));
        }
    }

    /// Whether the queue entry (`key`, `at`) is the call still waiting under `key`.
    fn is_current(&self, key: &Key, at: u64) -> bool {
        self.pending
            .get(key)
            .is_some_and(|p| p.ended_unix_nanos == at)
    }

    /// Forgets calls older than [`PENDING_TTL`] at `now` (Unix ns), and order entries of
    /// calls already linked.
    fn expire(&mut self, now: u64) {
        let ttl = PENDING_TTL.as_nanos() as u64;
        while let Some((key, at)) = self.order.front() {
            let current = self.is_current(key, *at);
            if current && at.saturating_add(ttl) >= now {
                break;
            }
            if let Some((key, _)) = self.order.pop_front() {
                if current {
                    self.pending.remove(&key);
                }
            }
        }
    }

    /// Calls waiting for their results.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// No call is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ToolCallRef;

    const SEC: u64 = 1_000_000_000;

    fn record(tenant: &str, trace: Option<&str>, at_s: u64) -> CompletionRecord {
        let mut r = crate::ingress::tests::record(tenant);
        r.trace = trace.map(|t| {
            let mut m = serde_json::Map::new();
            m.insert("trace_id".into(), t.into());
            m
        });
        r.timings.received_unix_nanos = at_s * SEC;
        r.timings.last_byte_us = 500_000;
        r
    }

    fn asks(mut r: CompletionRecord, calls: &[(&str, &str)]) -> CompletionRecord {
        r.tools.requested = calls
            .iter()
            .map(|(id, name)| ToolCallRef {
                id: id.to_string(),
                name: name.to_string(),
            })
            .collect();
        r
    }

    fn answers(mut r: CompletionRecord, ids: &[&str]) -> CompletionRecord {
        r.tools.answered = ids.iter().map(|s| s.to_string()).collect();
        r
    }

    #[test]
    fn a_result_in_the_same_trace_is_linked_once_from_the_asking_completions_end() {
        let mut t = ToolCalls::default();
        let mut first = asks(
            record("acme", Some("run-1"), 100),
            &[("call_1", "get_weather"), ("call_2", "get_time")],
        );
        t.link(&mut first);
        assert!(first.tools.executions.is_empty());
        assert_eq!(t.len(), 2);
        // The next turn answers call_1 only.
        let mut second = answers(record("acme", Some("run-1"), 103), &["call_1"]);
        t.link(&mut second);
        assert_eq!(
            second.tools.executions,
            vec![ToolExecution {
                call_id: "call_1".into(),
                name: "get_weather".into(),
                started_unix_nanos: 100 * SEC + SEC / 2,
            }]
        );
        // The turn after resends call_1's result and adds call_2's: only call_2 is new.
        let mut third = answers(record("acme", Some("run-1"), 107), &["call_1", "call_2"]);
        t.link(&mut third);
        let linked: Vec<&str> = third
            .tools
            .executions
            .iter()
            .map(|e| e.call_id.as_str())
            .collect();
        assert_eq!(linked, ["call_2"]);
        assert!(t.is_empty());
    }

    #[test]
    fn other_traces_tenants_and_untraced_requests_are_not_linked() {
        let mut t = ToolCalls::default();
        t.link(&mut asks(
            record("acme", Some("run-1"), 100),
            &[("call_1", "f")],
        ));
        for mut r in [
            answers(record("acme", Some("run-2"), 101), &["call_1"]),
            answers(record("other", Some("run-1"), 101), &["call_1"]),
            answers(record("acme", None, 101), &["call_1"]),
        ] {
            t.link(&mut r);
            assert!(r.tools.executions.is_empty());
        }
        // Without a trace nothing is remembered either.
        t.link(&mut asks(record("acme", None, 100), &[("call_9", "f")]));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pending_calls_are_bounded_and_expire() {
        let mut t = ToolCalls::default();
        for i in 0..MAX_PENDING + 10 {
            t.link(&mut asks(
                record("acme", Some("run"), 100),
                &[(&format!("call_{i}"), "f")],
            ));
        }
        assert_eq!(t.len(), MAX_PENDING);
        // The oldest went first.
        let mut r = answers(record("acme", Some("run"), 101), &["call_0", "call_10"]);
        t.link(&mut r);
        assert_eq!(r.tools.executions.len(), 1);
        assert_eq!(r.tools.executions[0].call_id, "call_10");
        // An hour later every waiting call is gone.
        let later = 100 + PENDING_TTL.as_secs() + 1;
        let mut r = answers(record("acme", Some("run"), later), &["call_11"]);
        t.link(&mut r);
        assert!(r.tools.executions.is_empty());
        assert!(t.is_empty());
    }
}
