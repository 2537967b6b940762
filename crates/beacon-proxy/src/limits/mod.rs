//! Where a request is limited (SPEC §5.1): requests and tokens per minute, concurrent
//! requests, and spend per UTC day and month, per key and per tenant.
//!
//! ```text
//! auth::Directory snapshot ── key / tenant with limits ──▶ Limited { limits, Arc<Scope> }
//! handlers::metered (after routing, with the meter) ──▶ Limiter::admit
//!      ├─ over a limit → Refusal: 429 rate_limit_exceeded | budget_exceeded, retry-after,
//!      │                 x-ratelimit-*; the record's outcome is `limited`
//!      └─ Admission (held by the meter): settle(real tokens, cost) at finish; its drop
//!                        frees the concurrency slot, however the request ends
//! Limiter::sync, once a second (the binary's main runtime) ──▶ SharedCounts (the store):
//!      this node's deltas added, every node's totals read back
//! ```
//!
//! The hot path takes one uncontended mutex per limited scope and touches nothing else: no
//! store query, no allocation on admission. Keys and tenants without limits cost nothing.
//!
//! Across nodes: each node counts locally and, once a second, adds its deltas to the
//! shared counters and reads every node's totals back. A request another node admitted
//! reaches this node's view within two sync intervals (its sync, then this node's), so a
//! limit can be overshot by at most what the *other* nodes admit in two seconds:
//! `overshoot ≤ Σ other nodes' admissions per second × 2 s` — e.g. two nodes each taking
//! 2 requests a second against a shared 20 per minute accept at most 20 + 4. Budgets are
//! also overshot by the cost of the requests in flight when the budget runs out (a
//! request's cost is known only when it ends). Without the store (it cannot be reached) a
//! node enforces its own counts alone.

pub mod window;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use beacon_config::Limits;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The clock limits run on: wall time plus an offset that tests move.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<ClockState>);

#[derive(Debug, Default)]
struct ClockState {
    offset_ms: AtomicI64,
    /// When non-zero, the time itself (unit tests stop the clock).
    fixed_ms: AtomicI64,
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let fixed = self.0.fixed_ms.load(Ordering::Relaxed);
        if fixed > 0 {
            return fixed as u64;
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        (wall + self.0.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    #[cfg(test)]
    fn set_fixed_ms(&self, ms: i64) {
        self.0.fixed_ms.store(ms, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn advance_ms(&self, ms: i64) {
        self.0.fixed_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// `wall` on this clock, in ms since the Unix epoch (a time the caller has read).
    pub fn at(&self, wall: SystemTime) -> u64 {
        let fixed = self.0.fixed_ms.load(Ordering::Relaxed);
        if fixed > 0 {
            return fixed as u64;
        }
        let wall = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        (wall + self.offset_ms()).max(0) as u64
    }

    /// How far the clock is moved from wall time, in ms.
    pub fn offset_ms(&self) -> i64 {
        self.0.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock (tests: a budget's next UTC day without waiting for it).
    pub fn set_offset_ms(&self, ms: i64) {
        self.0.offset_ms.store(ms, Ordering::Relaxed);
    }
}

/// A key's or a tenant's limits and the counters they are checked against.
#[derive(Debug)]
pub struct Limited {
    /// The limits.
    pub limits: Limits,
    /// The counters (kept across snapshot reloads).
    pub scope: Arc<Scope>,
    /// `x-ratelimit-limit-requests` and `-tokens` values, made once per snapshot.
    limit_values: [Option<&'static HeaderValue>; 2],
}

impl Limited {
    /// `limits` counted in `scope`.
    pub fn new(limits: Limits, scope: Arc<Scope>) -> Self {
        Self {
            limit_values: [
                limits.requests_per_minute.and_then(interned),
                limits.tokens_per_minute.and_then(interned),
            ],
            limits,
            scope,
        }
    }
}

impl PartialEq for Limited {
    fn eq(&self, other: &Self) -> bool {
        self.limits == other.limits && self.scope.name == other.scope.name
    }
}
impl Eq for Limited {}

/// The counters of one key (`k:<key id>`) or tenant (`t:<tenant>`).
#[derive(Debug)]
pub struct Scope {
    /// `k:<key id>` or `t:<tenant>`, also its name in the shared counters.
    pub name: String,
    state: Mutex<State>,
}

/// Which counter period a delta belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Period {
    Minute(u64),
    Day(u64),
    Month(u64),
}

impl Period {
    fn key(self) -> String {
        match self {
            Period::Minute(m) => format!("m:{m}"),
            Period::Day(d) => format!("d:{d}"),
            Period::Month(m) => format!("mo:{m}"),
        }
    }
}

/// Counts in one period: what this node adds, or what every node has added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub requests: i64,
    /// Tokens.
    pub tokens: i64,
    /// Spend, in millionths of a USD.
    pub spend_micros: i64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.requests += o.requests;
        self.tokens += o.tokens;
        self.spend_micros += o.spend_micros;
    }
}

#[derive(Debug, Default)]
struct State {
    minute: u64,
    day: u64,
    month: u64,
    /// When the current day and month end (ms): the calendar is computed only then.
    day_end_ms: u64,
    month_end_ms: u64,
    /// This node's counts: [current minute, previous minute].
    local_m: [Counts; 2],
    /// The other nodes' counts for the same minutes, as of the last sync.
    remote_m: [Counts; 2],
    local_day: Counts,
    remote_day: Counts,
    local_month: Counts,
    remote_month: Counts,
    concurrent: u64,
    /// How much of `local_m`, `local_day` and `local_month` the shared counters have: what
    /// is above it is added at the next sync. Counting a request touches only the locals.
    synced_m: [Counts; 2],
    synced_day: Counts,
    synced_month: Counts,
    /// Not-yet-synced counts of periods that rolled away before a sync (a stalled sync, or
    /// a minute skipped): pushed at the next sync, never read back.
    stale: Vec<(Period, Counts)>,
}

impl Counts {
    fn minus(self, o: Counts) -> Counts {
        Counts {
            requests: self.requests - o.requests,
            tokens: self.tokens - o.tokens,
            spend_micros: self.spend_micros - o.spend_micros,
        }
    }

    fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

impl State {
    /// Moves the windows to `now`: three comparisons, unless a period ended.
    #[inline]
    fn roll(&mut self, now: u64) {
        if window::minute(now) != self.minute || now >= self.day_end_ms || now >= self.month_end_ms
        {
            self.roll_periods(now);
        }
    }

    /// [`State::roll`] when a period ended.
    #[cold]
    fn roll_periods(&mut self, now: u64) {
        let m = window::minute(now);
        if m != self.minute {
            // The minutes that leave the two-minute window keep their unsynced counts.
            let leaving: &[usize] = if m == self.minute + 1 { &[1] } else { &[1, 0] };
            for &i in leaving {
                let unsynced = self.local_m[i].minus(self.synced_m[i]);
                if !unsynced.is_zero() {
                    let minute = self.minute.saturating_sub(i as u64);
                    self.stale.push((Period::Minute(minute), unsynced));
                }
            }
            if m == self.minute + 1 {
                self.local_m = [Counts::default(), self.local_m[0]];
                self.remote_m = [Counts::default(), self.remote_m[0]];
                self.synced_m = [Counts::default(), self.synced_m[0]];
            } else {
                self.local_m = Default::default();
                self.remote_m = Default::default();
                self.synced_m = Default::default();
            }
            self.minute = m;
        }
        if now >= self.day_end_ms {
            let d = window::day(now);
            if d != self.day {
                let unsynced = self.local_day.minus(self.synced_day);
                if !unsynced.is_zero() {
                    self.stale.push((Period::Day(self.day), unsynced));
                }
                self.day = d;
                self.local_day = Counts::default();
                self.remote_day = Counts::default();
                self.synced_day = Counts::default();
            }
            self.day_end_ms = (d + 1) * window::DAY_MS;
        }
        if now >= self.month_end_ms {
            let mo = window::month(now);
            if mo != self.month {
                let unsynced = self.local_month.minus(self.synced_month);
                if !unsynced.is_zero() {
                    self.stale.push((Period::Month(self.month), unsynced));
                }
                self.month = mo;
                self.local_month = Counts::default();
                self.remote_month = Counts::default();
                self.synced_month = Counts::default();
            }
            self.month_end_ms = window::month_start_day(mo + 1) * window::DAY_MS;
        }
    }

    fn minute_totals(&self) -> (Counts, Counts) {
        let mut cur = self.local_m[0];
        cur.add(self.remote_m[0]);
        let mut prev = self.local_m[1];
        prev.add(self.remote_m[1]);
        (cur, prev)
    }

    /// Marks `d` of period `p` as not added to the shared counters after all.
    fn unsync(&mut self, p: Period, d: Counts) {
        if d.is_zero() {
            return;
        }
        let synced = match p {
            Period::Minute(m) if m == self.minute => &mut self.synced_m[0],
            Period::Minute(m) if m + 1 == self.minute => &mut self.synced_m[1],
            Period::Day(day) if day == self.day => &mut self.synced_day,
            Period::Month(mo) if mo == self.month => &mut self.synced_month,
            _ => {
                self.stale.push((p, d));
                return;
            }
        };
        *synced = synced.minus(d);
    }

    /// Counts `c` in the current periods (the state rolled to now).
    #[inline]
    fn record(&mut self, c: Counts) {
        self.local_m[0].add(c);
        self.local_day.add(c);
        self.local_month.add(c);
    }
}

fn pos(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// A rate: requests or tokens per minute, or concurrent requests.
    Rate,
    /// A budget: USD per day or month.
    Budget,
}

/// A refused request: 429 with `retry-after` and the rate headers.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Rate or budget.
    pub kind: RefusalKind,
    /// What was exceeded, for the client.
    pub message: String,
    /// Seconds until the request would fit.
    pub retry_after_secs: u64,
    /// The key's `x-ratelimit-*` headers.
    pub headers: RateHeaders,
}

impl Refusal {
    /// The error code: `rate_limit_exceeded` or `budget_exceeded`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            RefusalKind::Rate => "rate_limit_exceeded",
            RefusalKind::Budget => "budget_exceeded",
        }
    }
}

/// OpenAI's `x-ratelimit-*` values of a limited key: the tightest of its key and tenant
/// limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    requests: Option<Rate>,
    tokens: Option<Rate>,
}

/// One rate's figures: the limit (and its premade header value), what remains, and the
/// seconds until the window is empty. Small enough to be moved without a `memcpy` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    limit: u64,
    limit_value: Option<&'static HeaderValue>,
    remaining: u64,
    reset_secs: u64,
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// Numbers below this are header values made once: cloning one allocates nothing.
const SMALL_NUMBERS: u64 = 1024;

/// Header values of the numbers below [`SMALL_NUMBERS`] and of the durations 0–120 s
/// (every request-window reset), made once. Their text is leaked on purpose: a few KiB,
/// once, so each value is a `'static` one whose clone is free.
static PREMADE: std::sync::LazyLock<(Vec<HeaderValue>, Vec<HeaderValue>)> =
    std::sync::LazyLock::new(|| {
        let make = |s: String| HeaderValue::from_static(Box::leak(s.into_boxed_str()));
        (
            (0..SMALL_NUMBERS).map(|n| make(n.to_string())).collect(),
            (0..=120).map(|secs| make(duration(secs))).collect(),
        )
    });

/// Most distinct limit values made into `'static` header values (a few bytes each, leaked
/// once); past it, a limit's value is an ordinary one.
const MAX_INTERNED: usize = 4096;

/// The header value of a limit, made once (at a snapshot's load): every response of a
/// limited key carries it, and a `'static` value is cloned without touching a shared
/// reference count. `None` past [`MAX_INTERNED`] distinct values (made per response then).
fn interned(n: u64) -> Option<&'static HeaderValue> {
    static VALUES: std::sync::LazyLock<Mutex<HashMap<u64, &'static HeaderValue>>> =
        std::sync::LazyLock::new(Default::default);
    if let Some(v) = PREMADE.0.get(n as usize) {
        return Some(v);
    }
    let mut values = match VALUES.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(v) = values.get(&n) {
        return Some(v);
    }
    if values.len() >= MAX_INTERNED {
        return None;
    }
    let text: &'static str = Box::leak(n.to_string().into_boxed_str());
    let v: &'static HeaderValue = Box::leak(Box::new(HeaderValue::from_static(text)));
    values.insert(n, v);
    Some(v)
}

fn number(n: u64) -> HeaderValue {
    match PREMADE.0.get(n as usize) {
        Some(v) => v.clone(),
        // One exact-size copy of the digits (http's `From<u64>` grows a `BytesMut`).
        None => HeaderValue::from_bytes(itoa::Buffer::new().format(n).as_bytes())
            .unwrap_or_else(|_| HeaderValue::from(n)),
    }
}

fn reset_value(secs: u64) -> HeaderValue {
    match PREMADE.1.get(secs as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from_str(&duration(secs)).unwrap_or(HeaderValue::from_static("0s")),
    }
}

/// OpenAI's duration format: `1s`, `6m0s`.
fn duration(secs: u64) -> String {
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

impl Rate {
    fn apply(self, h: &mut HeaderMap, limit: HeaderName, remaining: HeaderName, reset: HeaderName) {
        // Appended: a limited key's responses never carry the upstream's x-ratelimit-*
        // (handlers::metered leaves them out of what it relays), so there is nothing to
        // replace.
        let value = self
            .limit_value
            .map_or_else(|| number(self.limit), Clone::clone);
        h.append(limit, value);
        h.append(remaining, number(self.remaining));
        h.append(reset, reset_value(self.reset_secs));
    }
}

impl RateHeaders {
    /// Keeps the tighter (fewer remaining) of two rates.
    fn tighter(slot: &mut Option<Rate>, b: Rate) {
        if slot.as_ref().is_none_or(|a| b.remaining < a.remaining) {
            *slot = Some(b);
        }
    }

    /// (limit, remaining, seconds to reset) of the requests rate, when limited.
    pub fn requests(&self) -> Option<(u64, u64, u64)> {
        self.requests
            .as_ref()
            .map(|r| (r.limit, r.remaining, r.reset_secs))
    }

    /// (limit, remaining, seconds to reset) of the tokens rate, when limited.
    pub fn tokens(&self) -> Option<(u64, u64, u64)> {
        self.tokens
            .as_ref()
            .map(|r| (r.limit, r.remaining, r.reset_secs))
    }

    /// Sets the headers on a response.
    pub fn apply(self, h: &mut HeaderMap) {
        if let Some(rate) = self.requests {
            rate.apply(h, LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS);
        }
        if let Some(rate) = self.tokens {
            rate.apply(h, LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS);
        }
    }

    /// True when no rate applies.
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }
}

/// Seconds until a sliding count is back to zero.
fn secs_to_empty(now: u64, cur: u64, prev: u64) -> u64 {
    let left_in_minute = (window::MINUTE_MS - now % window::MINUTE_MS).div_ceil(1000);
    if cur > 0 {
        left_in_minute + 60
    } else if prev > 0 {
        left_in_minute
    } else {
        0
    }
}

/// An admitted request: its place in the counters until it ends.
#[derive(Debug)]
pub struct Admission {
    scopes: [Option<Arc<Scope>>; 2],
    estimated_tokens: u64,
    /// The clock's offset from wall time at admission (see [`Clock`]).
    offset_ms: i64,
    settled: bool,
    /// The key's `x-ratelimit-*` headers at admission.
    headers: RateHeaders,
}

impl Admission {
    /// The key's `x-ratelimit-*` headers at admission (taken once).
    pub fn take_headers(&mut self) -> RateHeaders {
        std::mem::take(&mut self.headers)
    }

    /// The request is over (at `ended_unix_ms`, wall time): the token estimate admitted is
    /// corrected to the `tokens` it really used, `cost_micros` is added to the budgets, and
    /// its concurrency slot is freed (under the same lock).
    pub fn settle(&mut self, tokens: u64, cost_micros: u64, ended_unix_ms: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let now = (ended_unix_ms as i64 + self.offset_ms).max(0) as u64;
        let delta = Counts {
            requests: 0,
            tokens: tokens as i64 - self.estimated_tokens as i64,
            spend_micros: i64::try_from(cost_micros).unwrap_or(i64::MAX),
        };
        for scope in self.scopes.iter().flatten() {
            let mut st = lock(&scope.state);
            st.roll(now);
            st.record(delta);
            st.concurrent = st.concurrent.saturating_sub(1);
        }
    }
}

impl Drop for Admission {
    /// A request that ends unsettled (cancelled, failed before an answer) frees its slot.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for scope in self.scopes.iter().flatten() {
            let mut st = lock(&scope.state);
            st.concurrent = st.concurrent.saturating_sub(1);
        }
    }
}

#[inline]
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Which limit a request is over (the refusal's message is made from it, off the fast path).
#[derive(Debug, Clone, Copy)]
enum Over {
    Requests { cur: u64, prev: u64 },
    Tokens { cur: u64, prev: u64 },
    Concurrency,
    Day,
    Month,
}

/// Checks one scope's limits for a request of `estimated_tokens` at `now`, tightening the
/// rate headers; the first limit exceeded, if any.
#[inline]
fn check(
    st: &State,
    l: &Limited,
    now: u64,
    estimated_tokens: u64,
    headers: &mut RateHeaders,
) -> Option<Over> {
    let limits = &l.limits;
    let mut over = None;
    if limits.requests_per_minute.is_some() || limits.tokens_per_minute.is_some() {
        let (cur, prev) = st.minute_totals();
        if let Some(rpm) = limits.requests_per_minute {
            let (c, p) = (pos(cur.requests), pos(prev.requests));
            let used = window::sliding(now, c, p);
            if used + 1 > rpm {
                over = Some(Over::Requests { cur: c, prev: p });
            }
            RateHeaders::tighter(
                &mut headers.requests,
                Rate {
                    limit: rpm,
                    limit_value: l.limit_values[0],
                    remaining: rpm.saturating_sub(used + 1),
                    reset_secs: secs_to_empty(now, c + 1, p),
                },
            );
        }
        if let Some(tpm) = limits.tokens_per_minute {
            let (c, p) = (pos(cur.tokens), pos(prev.tokens));
            let used = window::sliding(now, c, p);
            if used + estimated_tokens > tpm {
                over = over.or(Some(Over::Tokens { cur: c, prev: p }));
            }
            RateHeaders::tighter(
                &mut headers.tokens,
                Rate {
                    limit: tpm,
                    limit_value: l.limit_values[1],
                    remaining: tpm.saturating_sub(used + estimated_tokens),
                    reset_secs: secs_to_empty(now, c + estimated_tokens, p),
                },
            );
        }
    }
    if over.is_some() {
        return over;
    }
    if limits
        .concurrent_requests
        .is_some_and(|max| st.concurrent >= max)
    {
        return Some(Over::Concurrency);
    }
    let spent = |local: Counts, remote: Counts| pos(local.spend_micros + remote.spend_micros);
    if limits
        .usd_per_day_micros
        .is_some_and(|b| spent(st.local_day, st.remote_day) >= b)
    {
        return Some(Over::Day);
    }
    if limits
        .usd_per_month_micros
        .is_some_and(|b| spent(st.local_month, st.remote_month) >= b)
    {
        return Some(Over::Month);
    }
    None
}

/// The refusal of a request over `over` of `l`'s limits: kind, message and wait.
#[cold]
fn refusal(
    l: &Limited,
    over: Over,
    now: u64,
    estimated_tokens: u64,
    headers: RateHeaders,
) -> Refusal {
    let who = match l.scope.name.split_once(':') {
        Some(("k", id)) => format!("key `{id}`"),
        Some((_, id)) => format!("tenant `{id}`"),
        None => l.scope.name.clone(),
    };
    let limits = &l.limits;
    let (kind, message, wait) = match over {
        Over::Requests { cur, prev } => {
            let rpm = limits.requests_per_minute.unwrap_or(0);
            let wait = window::secs_until_fits(now, cur, prev, 1, rpm);
            let message = format!(
                "Rate limit reached for {who}: {rpm} requests per minute. Retry in {wait} s."
            );
            (RefusalKind::Rate, message, wait)
        }
        Over::Tokens { cur, prev } => {
            let tpm = limits.tokens_per_minute.unwrap_or(0);
            let wait = window::secs_until_fits(now, cur, prev, estimated_tokens, tpm);
            let message = format!("Rate limit reached for {who}: {tpm} tokens per minute (this request: about {estimated_tokens}). Retry in {wait} s.");
            (RefusalKind::Rate, message, wait)
        }
        Over::Concurrency => {
            let max = limits.concurrent_requests.unwrap_or(0);
            let message = format!("Concurrency limit reached for {who}: {max} requests at once.");
            (RefusalKind::Rate, message, 1)
        }
        Over::Day => {
            let budget = limits.usd_per_day_micros.unwrap_or(0) as f64 / 1e6;
            let wait = window::secs_to_next_day(now);
            let message = format!("Budget exhausted for {who}: {budget} USD per day (UTC) spent. It resets at midnight UTC, in {wait} s.");
            (RefusalKind::Budget, message, wait)
        }
        Over::Month => {
            let budget = limits.usd_per_month_micros.unwrap_or(0) as f64 / 1e6;
            let wait = window::secs_to_next_month(now);
            let message = format!("Budget exhausted for {who}: {budget} USD per month (UTC) spent. It resets on the 1st, in {wait} s.");
            (RefusalKind::Budget, message, wait)
        }
    };
    Refusal {
        kind,
        message,
        retry_after_secs: wait,
        headers,
    }
}

/// The future [`SharedCounts::exchange`] returns.
pub type ExchangeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Counts>, String>> + Send + 'a>>;

/// Counters shared by every node (the store): adds deltas and returns totals, in order.
pub trait SharedCounts: Send + Sync {
    /// Adds each (scope, period, delta) and returns each total after the addition.
    fn exchange(&self, batch: Vec<(String, String, Counts)>) -> ExchangeFuture<'_>;
}

/// Every limited scope of this node, and the clock.
#[derive(Debug, Default)]
pub struct Limiter {
    scopes: Mutex<HashMap<String, Arc<Scope>>>,
    /// The clock limits run on.
    pub clock: Clock,
}

impl Limiter {
    /// The scope named `name`, created on first use; the same counters across reloads.
    pub fn scope(&self, name: String) -> Arc<Scope> {
        let mut scopes = match self.scopes.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        scopes
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(Scope {
                    name,
                    state: Mutex::new(State::default()),
                })
            })
            .clone()
    }

    /// Admits a request of about `estimated_tokens` against the key's and the tenant's limits
    /// (either may be absent), or refuses it, now. Nothing is counted for a refused request.
    pub fn admit(
        &self,
        key: Option<&Limited>,
        tenant: Option<&Limited>,
        estimated_tokens: u64,
    ) -> Result<Admission, Refusal> {
        self.admit_at(self.clock.now_ms(), key, tenant, estimated_tokens)
    }

    /// [`Limiter::admit`] at `now` (ms on [`Limiter::clock`]: the request's arrival, which
    /// the caller has read already).
    pub fn admit_at(
        &self,
        now: u64,
        key: Option<&Limited>,
        tenant: Option<&Limited>,
        estimated_tokens: u64,
    ) -> Result<Admission, Refusal> {
        let scoped: [Option<&Limited>; 2] = [key, tenant];
        // Key first, then tenant: one lock order everywhere; both held while checking and
        // counting, so two requests cannot both take the last unit of either.
        let mut guards: [Option<MutexGuard<'_, State>>; 2] = [None, None];
        for (g, l) in guards.iter_mut().zip(scoped) {
            if let Some(l) = l {
                let mut st = lock(&l.scope.state);
                st.roll(now);
                *g = Some(st);
            }
        }
        let mut headers = RateHeaders::default();
        let mut over: Option<(&Limited, Over)> = None;
        for (g, l) in guards.iter().zip(scoped) {
            if let (Some(st), Some(l)) = (g, l) {
                if let Some(o) = check(st, l, now, estimated_tokens, &mut headers) {
                    over = over.or(Some((l, o)));
                }
            }
        }
        if let Some((l, o)) = over {
            drop(guards);
            return Err(refusal(l, o, now, estimated_tokens, headers));
        }
        let admitted = Counts {
            requests: 1,
            tokens: i64::try_from(estimated_tokens).unwrap_or(i64::MAX),
            spend_micros: 0,
        };
        for st in guards.iter_mut().flatten() {
            st.record(admitted);
            st.concurrent += 1;
        }
        drop(guards);
        Ok(Admission {
            scopes: [
                key.map(|l| l.scope.clone()),
                tenant.map(|l| l.scope.clone()),
            ],
            estimated_tokens,
            offset_ms: self.clock.offset_ms(),
            settled: false,
            headers,
        })
    }

    /// Adds this node's counts to the shared counters and takes every node's totals back
    /// (once a second); the number of counter rows exchanged (0: no limited scope). Scopes
    /// no snapshot uses any more are forgotten.
    pub async fn sync(&self, shared: &dyn SharedCounts) -> Result<usize, String> {
        let scopes: Vec<Arc<Scope>> = {
            let mut all = match self.scopes.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            all.retain(|_, s| Arc::strong_count(s) > 1);
            all.values().cloned().collect()
        };
        if scopes.is_empty() {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        // Per scope: the periods read, this node's count in each at the moment its deltas
        // were taken, and the deltas.
        let mut batch = Vec::with_capacity(scopes.len() * 4);
        let mut taken = Vec::with_capacity(scopes.len());
        for scope in &scopes {
            let mut st = lock(&scope.state);
            st.roll(now);
            let periods = [
                (Period::Minute(st.minute), st.local_m[0]),
                (Period::Minute(st.minute.saturating_sub(1)), st.local_m[1]),
                (Period::Day(st.day), st.local_day),
                (Period::Month(st.month), st.local_month),
            ];
            let deltas = [
                st.local_m[0].minus(st.synced_m[0]),
                st.local_m[1].minus(st.synced_m[1]),
                st.local_day.minus(st.synced_day),
                st.local_month.minus(st.synced_month),
            ];
            (st.synced_m, st.synced_day, st.synced_month) =
                (st.local_m, st.local_day, st.local_month);
            for ((p, _), delta) in periods.iter().zip(deltas) {
                batch.push((scope.name.clone(), p.key(), delta));
            }
            // Deltas of periods already past (a minute rolled since): pushed, not read.
            let stale = std::mem::take(&mut st.stale);
            for (p, d) in &stale {
                batch.push((scope.name.clone(), p.key(), *d));
            }
            taken.push((periods, deltas, stale));
        }
        let rows = batch.len();
        let totals = match shared.exchange(batch).await {
            Ok(t) => t,
            Err(e) => {
                // Nothing was added: the deltas go back to being unsynced.
                let now = self.clock.now_ms();
                for (scope, (periods, deltas, stale)) in scopes.iter().zip(taken) {
                    let mut st = lock(&scope.state);
                    st.roll(now);
                    for ((p, _), d) in periods.iter().zip(deltas) {
                        st.unsync(*p, d);
                    }
                    st.stale.extend(stale);
                }
                return Err(e);
            }
        };
        let mut at = 0;
        for (scope, (periods, _, stale)) in scopes.iter().zip(taken) {
            let Some(t) = totals.get(at..at + 4) else {
                break;
            };
            at += 4 + stale.len();
            let mut st = lock(&scope.state);
            st.roll(self.clock.now_ms());
            let others = |total: Counts, mine: Counts| Counts {
                requests: (total.requests - mine.requests).max(0),
                tokens: (total.tokens - mine.tokens).max(0),
                spend_micros: (total.spend_micros - mine.spend_micros).max(0),
            };
            // Applied only to the periods still current: a window that rolled meanwhile is
            // refreshed at the next sync.
            if periods[0].0 == Period::Minute(st.minute) {
                st.remote_m = [others(t[0], periods[0].1), others(t[1], periods[1].1)];
            }
            if periods[2].0 == Period::Day(st.day) {
                st.remote_day = others(t[2], periods[2].1);
            }
            if periods[3].0 == Period::Month(st.month) {
                st.remote_month = others(t[3], periods[3].1);
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_601_600_000; // 2026-12-07T00:00:00Z

    fn limiter_at(ms: i64) -> Limiter {
        let l = Limiter::default();
        l.clock.set_fixed_ms(ms);
        l
    }

    fn limited(l: &Limiter, name: &str, limits: Limits) -> Limited {
        Limited::new(limits, l.scope(name.into()))
    }

    #[test]
    fn requests_per_minute_refuse_the_sixth_and_refill_gradually() {
        let l = limiter_at(T0 + 1_000);
        let key = limited(
            &l,
            "k:key_000000000001",
            Limits {
                requests_per_minute: Some(5),
                ..Default::default()
            },
        );
        let mut held = Vec::new();
        for i in 0..5 {
            let a = l.admit(Some(&key), None, 0).unwrap();
            assert_eq!(a.headers.requests().unwrap().1, 4 - i, "remaining");
            held.push(a);
        }
        let r = l.admit(Some(&key), None, 0).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Rate);
        assert!(r.message.contains("5 requests per minute"), "{}", r.message);
        assert_eq!(r.headers.requests().unwrap().1, 0);
        // Used at 00:00:01: fits again once 20 % of them have slid out of the window, 12 s
        // into the next minute.
        assert_eq!(r.retry_after_secs, 59 + 12);
        let mut h = HeaderMap::new();
        r.headers.apply(&mut h);
        assert_eq!(h["x-ratelimit-limit-requests"], "5");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "1m59s");
        // A refused request is not counted: at 00:01:12 one fits, a second does not.
        l.clock.advance_ms(71_000);
        assert!(l.admit(Some(&key), None, 0).is_ok());
        assert!(l.admit(Some(&key), None, 0).is_err());
        // Two minutes on, the whole allowance is back.
        l.clock.advance_ms(120_000);
        for _ in 0..5 {
            assert!(l.admit(Some(&key), None, 0).is_ok());
        }
    }

    #[test]
    fn concurrency_is_released_however_a_request_ends() {
        let l = limiter_at(T0);
        let t = limited(
            &l,
            "t:acme",
            Limits {
                concurrent_requests: Some(2),
                ..Default::default()
            },
        );
        let a = l.admit(None, Some(&t), 0).unwrap();
        let b = l.admit(None, Some(&t), 0).unwrap();
        assert!(l.admit(None, Some(&t), 0).is_err());
        drop(a);
        let c = l.admit(None, Some(&t), 0).unwrap();
        drop((b, c));
        assert!(l.admit(None, Some(&t), 0).is_ok());
    }

    #[test]
    fn tokens_use_the_estimate_then_the_real_usage() {
        let l = limiter_at(T0);
        let k = limited(
            &l,
            "k:key_000000000002",
            Limits {
                tokens_per_minute: Some(1000),
                ..Default::default()
            },
        );
        let mut a = l.admit(Some(&k), None, 600).unwrap();
        assert_eq!(a.headers.tokens().unwrap().1, 400);
        assert!(l.admit(Some(&k), None, 600).is_err(), "600 + 600 > 1000");
        // It really used 100: 900 left.
        a.settle(100, 0, l.clock.now_ms());
        assert!(l.admit(Some(&k), None, 600).is_ok());
        assert!(l.admit(Some(&k), None, 301).is_err());
    }

    #[test]
    fn a_day_budget_stops_the_key_until_the_next_utc_day() {
        let l = limiter_at(T0 + 23 * 3_600_000);
        let k = limited(
            &l,
            "k:key_000000000003",
            Limits {
                usd_per_day_micros: Some(1_000_000),
                ..Default::default()
            },
        );
        let tenant = limited(&l, "t:other", Limits::default());
        let mut a = l.admit(Some(&k), Some(&tenant), 0).unwrap();
        a.settle(10, 600_000, l.clock.now_ms());
        let mut b = l.admit(Some(&k), Some(&tenant), 0).unwrap();
        b.settle(10, 600_000, l.clock.now_ms()); // in flight when admitted: the budget may be overshot by it
        let r = l.admit(Some(&k), Some(&tenant), 0).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Budget);
        assert_eq!(r.retry_after_secs, 3_600, "midnight UTC is an hour away");
        assert!(r.message.contains("1 USD per day"), "{}", r.message);
        // 23:59:59.999 still refused; midnight resets.
        l.clock.advance_ms(3_600_000 - 1);
        assert!(l.admit(Some(&k), Some(&tenant), 0).is_err());
        l.clock.advance_ms(1);
        assert!(l.admit(Some(&k), Some(&tenant), 0).is_ok());
    }

    #[test]
    fn the_tighter_of_key_and_tenant_is_reported_and_enforced() {
        let l = limiter_at(T0 + 30_000);
        let k = limited(
            &l,
            "k:key_000000000004",
            Limits {
                requests_per_minute: Some(100),
                ..Default::default()
            },
        );
        let t = limited(
            &l,
            "t:acme",
            Limits {
                requests_per_minute: Some(3),
                ..Default::default()
            },
        );
        let a = l.admit(Some(&k), Some(&t), 0).unwrap();
        assert_eq!(
            a.headers.requests().unwrap().0,
            3,
            "the tenant's is tighter"
        );
        l.admit(Some(&k), Some(&t), 0).unwrap();
        l.admit(Some(&k), Some(&t), 0).unwrap();
        let r = l.admit(Some(&k), Some(&t), 0).unwrap_err();
        assert!(r.message.contains("tenant `acme`"), "{}", r.message);
    }

    #[test]
    fn rate_headers_carry_the_limit_remaining_and_reset() {
        let l = limiter_at(T0 + 30_000);
        let k = limited(
            &l,
            "k:key_000000000005",
            Limits {
                requests_per_minute: Some(250_000),
                tokens_per_minute: Some(2_000_000),
                ..Default::default()
            },
        );
        let mut a = l.admit(Some(&k), None, 100).unwrap();
        let mut h = HeaderMap::new();
        a.take_headers().apply(&mut h);
        assert_eq!(h["x-ratelimit-limit-requests"], "250000");
        assert_eq!(h["x-ratelimit-remaining-requests"], "249999");
        assert_eq!(h["x-ratelimit-reset-requests"], "1m30s");
        assert_eq!(h["x-ratelimit-limit-tokens"], "2000000");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "1999900");
        assert_eq!(h["x-ratelimit-reset-tokens"], "1m30s");
        // A limit's value is made once and shared.
        assert_eq!(interned(250_000).unwrap(), "250000");
        assert!(std::ptr::eq(
            interned(250_000).unwrap(),
            interned(250_000).unwrap()
        ));
        assert_eq!(interned(7).unwrap(), "7");
    }

    /// Shared counters that can be made to fail, to check nothing is lost when they do.
    #[derive(Default)]
    struct Flaky {
        inner: Shared,
        down: std::sync::atomic::AtomicBool,
    }

    impl SharedCounts for Flaky {
        fn exchange(&self, batch: Vec<(String, String, Counts)>) -> ExchangeFuture<'_> {
            if self.down.load(Ordering::Relaxed) {
                return Box::pin(async { Err("the store is down".to_string()) });
            }
            self.inner.exchange(batch)
        }
    }

    fn shared_total(s: &Shared, scope: &str, period: Period) -> Counts {
        s.0.lock()
            .unwrap()
            .get(&(scope.to_string(), period.key()))
            .copied()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn counts_survive_a_failed_sync_and_a_skipped_minute() {
        let shared = Flaky::default();
        let l = limiter_at(T0 + 10_000);
        let name = "k:key_00000000000b";
        let k = limited(
            &l,
            name,
            Limits {
                requests_per_minute: Some(1_000),
                usd_per_day_micros: Some(100_000_000),
                ..Default::default()
            },
        );
        let minute0 = window::minute(T0 as u64 + 10_000);
        for _ in 0..3 {
            l.admit(Some(&k), None, 0)
                .unwrap()
                .settle(0, 1_000, l.clock.now_ms());
        }
        l.sync(&shared).await.unwrap();
        assert_eq!(
            shared_total(&shared.inner, name, Period::Minute(minute0)).requests,
            3
        );
        // The store goes down: two more, a failed sync, then the minute rolls twice.
        for _ in 0..2 {
            l.admit(Some(&k), None, 0)
                .unwrap()
                .settle(0, 1_000, l.clock.now_ms());
        }
        shared.down.store(true, Ordering::Relaxed);
        assert!(l.sync(&shared).await.is_err());
        l.clock.advance_ms(150_000);
        l.admit(Some(&k), None, 0)
            .unwrap()
            .settle(0, 1_000, l.clock.now_ms());
        assert!(l.sync(&shared).await.is_err());
        // Back up: every count reaches the store once, in the minute it was made.
        shared.down.store(false, Ordering::Relaxed);
        l.sync(&shared).await.unwrap();
        l.sync(&shared).await.unwrap();
        let minute2 = window::minute(T0 as u64 + 160_000);
        assert_eq!(
            shared_total(&shared.inner, name, Period::Minute(minute0)).requests,
            5
        );
        assert_eq!(
            shared_total(&shared.inner, name, Period::Minute(minute2)).requests,
            1
        );
        let day = shared_total(&shared.inner, name, Period::Day(window::day(T0 as u64)));
        assert_eq!((day.requests, day.spend_micros), (6, 6_000));
        // And this node does not count its own requests twice.
        let st = lock(&k.scope.state);
        assert_eq!(st.local_day.requests + st.remote_day.requests, 6);
    }

    #[test]
    fn a_settled_request_frees_its_slot_once() {
        let l = limiter_at(T0);
        let k = limited(
            &l,
            "k:key_00000000000c",
            Limits {
                concurrent_requests: Some(1),
                ..Default::default()
            },
        );
        let mut a = l.admit(Some(&k), None, 0).unwrap();
        assert!(l.admit(Some(&k), None, 0).is_err());
        a.settle(0, 0, l.clock.now_ms());
        // Freed at settle; the drop later frees nothing more.
        let b = l.admit(Some(&k), None, 0).unwrap();
        drop(a);
        assert!(
            l.admit(Some(&k), None, 0).is_err(),
            "b still holds the slot"
        );
        drop(b);
        assert!(l.admit(Some(&k), None, 0).is_ok());
    }

    /// A store stand-in: one map of totals, as the `limit_counters` table adds them.
    #[derive(Default)]
    struct Shared(Mutex<HashMap<(String, String), Counts>>);

    impl SharedCounts for Shared {
        fn exchange(&self, batch: Vec<(String, String, Counts)>) -> ExchangeFuture<'_> {
            let mut m = self.0.lock().unwrap();
            let out = batch
                .into_iter()
                .map(|(s, p, d)| {
                    let t = m.entry((s, p)).or_default();
                    t.add(d);
                    *t
                })
                .collect();
            Box::pin(async move { Ok(out) })
        }
    }

    #[tokio::test]
    async fn two_nodes_reconcile_through_the_shared_counters() {
        let shared = Shared::default();
        let (a, b) = (limiter_at(T0 + 5_000), limiter_at(T0 + 5_000));
        let limits = Limits {
            requests_per_minute: Some(10),
            usd_per_day_micros: Some(5_000_000),
            ..Default::default()
        };
        let (ka, kb) = (
            limited(&a, "k:key_00000000000a", limits),
            limited(&b, "k:key_00000000000a", limits),
        );
        for _ in 0..6 {
            a.admit(Some(&ka), None, 0)
                .unwrap()
                .settle(0, 500_000, a.clock.now_ms());
        }
        // Before a sync, node B sees nothing of A's six: it admits up to its own 10.
        a.sync(&shared).await.unwrap();
        b.sync(&shared).await.unwrap();
        // After: B knows A's six, and has room for four.
        for _ in 0..4 {
            b.admit(Some(&kb), None, 0)
                .unwrap()
                .settle(0, 500_000, b.clock.now_ms());
        }
        let r = b.admit(Some(&kb), None, 0).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Rate, "{}", r.message);
        // A learns B's four at its next sync: its own count is not counted twice.
        b.sync(&shared).await.unwrap();
        a.sync(&shared).await.unwrap();
        assert!(a.admit(Some(&ka), None, 0).is_err());
        {
            let st = lock(&ka.scope.state);
            assert_eq!((st.local_m[0].requests, st.remote_m[0].requests), (6, 4));
            assert_eq!(
                st.local_day.spend_micros + st.remote_day.spend_micros,
                5_000_000
            );
        }
        // The day budget (5 USD) is spent across the two: both refuse on budget next minute.
        a.clock.advance_ms(120_000);
        let r = a.admit(Some(&ka), None, 0).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Budget);
        // Syncing again changes nothing: the totals are idempotent reads plus zero deltas.
        a.sync(&shared).await.unwrap();
        a.sync(&shared).await.unwrap();
        let st = lock(&ka.scope.state);
        assert_eq!(
            st.local_day.spend_micros + st.remote_day.spend_micros,
            5_000_000
        );
    }
}
