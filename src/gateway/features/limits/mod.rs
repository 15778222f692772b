//! Rate limits and budgets (DESIGN.md §2 step 3): per key requests and tokens per minute, per
//! endpoint MLflow `limit: {calls, renewal_period}`, per key and per tenant USD budgets per day
//! or month. Over a limit → 429 with `Retry-After` and OpenAI's `x-ratelimit-*` headers.
//!
//! # Windows and rules
//!
//! Windows are fixed and aligned: minute/hour/second windows on the unix clock, day/month/year
//! windows on the UTC calendar. A request is admitted when, for every counter that applies:
//! requests `count < rpm`; tokens and USD: its **reservation** fits in what is neither used
//! nor reserved. A refused request is not counted.
//!
//! # Reserve, then settle
//!
//! Tokens and cost are only known after the answer, and checking "spent < budget" lets every
//! request racing for the last of a budget through (what LiteLLM and Bifrost users report).
//! So before a request is forwarded it reserves its worst case ([`Reservation`]: the prompt
//! estimate plus `max_tokens` × `n` — `limits.default_max_tokens` when it sends none — at
//! the endpoint's price) on the key's tpm and USD counters and its tenant's; concurrent
//! requests see it at once. After the response the reservation is released and the real usage
//! added (`Admission::settle`). A buffered request must fit whole (429 naming what it may
//! cost: lower `max_tokens`); a stream may be granted what is left, down to its prompt and one
//! token, and is stopped at the room it had (see `pipeline::stream::StreamCap`). Counters stay
//! monotone (`released_*` fields), so merges and retries stay safe.
//!
//! The endpoint `limit` counts per endpoint *and key* (MLflow counts per client address; the
//! key is our client identity); requests without a key (public endpoints) share one counter
//! per endpoint. MLflow's optional `limit.key` is accepted and ignored.
//!
//! # Counting modes
//!
//! **`kv` (default): per isolate, exact; across isolates and locations, approximate.** Each
//! counter `rl:<key id>:<window>` is a KV entry `{requests, tokens, cost_nusd}`. An isolate
//! keeps its own view of each counter in memory ([`Limiter`]): the last value read from KV
//! (re-read at most every [`REFRESH_MS`]) plus the increments it admitted and has not yet
//! written. Admission checks and increments that view **synchronously, with no await in
//! between**, so requests interleaving in one isolate can never both take the last slot: N
//! concurrent requests against a limit of L admit exactly L in one isolate. The increments are
//! written to KV after the response (`waitUntil` on Cloudflare), merged: one write in flight
//! per counter per isolate, carrying everything admitted meanwhile. What KV counting means:
//! * KV has no atomic increment: the write is a read-modify-write (`max(KV, what this isolate
//!   last saw) + its increments`). Two isolates flushing the same counter at the same moment
//!   can lose one's increments: across isolates counts can be low.
//! * Cloudflare KV is per location and eventually consistent: another location sees a write
//!   after up to ~60 s, and an isolate sees other isolates' counts only at its next refresh.
//!   So with I isolates (in one or many locations) admitting at once, up to about I × L
//!   requests can pass in one window: **the limit multiplies with the number of instances.**
//! * Cloudflare KV accepts one write per second per key: an isolate writes a counter at most
//!   once per [`SAME_KEY_WRITE_GAP_MS`] (its writer waits the gap out after the response,
//!   carrying every increment admitted meanwhile), so other isolates see its counts up to a
//!   second later. Several isolates busy on one key can still exceed the rate together (write
//!   errors are reported in the log's `accounting_error` and retried by the next flush): use
//!   `exact` for such keys.
//! * **Budget overshoot in `kv` mode, and by how much.** Within one isolate: none — admission
//!   and reservation are one synchronous step over the isolate's view, so concurrent requests
//!   there can never reserve more than is left. Across isolates an isolate sees the others'
//!   reservations and charges only once they are written (after each response, merged) and
//!   re-read (every [`REFRESH_MS`], plus KV's propagation in other locations). So per location,
//!   the spend can exceed a budget by at most what the *other* isolates admitted in that window:
//!   each of them at most the remaining budget it last saw, i.e. ≤ (isolates − 1) × remaining,
//!   and with one isolate per location (wrangler dev, light traffic) 0; across L locations up
//!   to L times that. Streams are also cut at the room they were admitted with. Use `exact`
//!   (0 overshoot) when that is too much.
//! * Spin: every request is a fresh component instance, so there is no in-memory view
//!   (`Counter::keeps_state` is false) and nothing to make the `kv` mode exact within: every
//!   limit is counted by the exact counter there, whatever the mode (a read-modify-write per
//!   request would let a burst that arrives together all pass).
//!
//! **`exact`** (config `limits.mode: "exact"`, or a key's `exact: true`): counters live behind
//! the [`Counter`] port, which checks and adds a request's counters atomically:
//! * Cloudflare: one Durable Object per key (per tenant for tenant budgets), so the limit
//!   holds across all isolates and locations, at the cost of one Durable Object round trip
//!   before the request and one after (`src/host/cloudflare_counter.rs`).
//! * Spin: `ports::cas`, each scope's counters in one key-value entry written with one
//!   compare-and-swap (wasi:keyvalue's `atomics`, served by Spin over the same stores): exact
//!   across the instances of one Spin node, with no lock; a swap that lost a race is retried.
//!
//! A host without an exact counter answers `None` and the `kv` mode is used instead; the log
//! line's `limits` field says which mode counted.

mod config;
mod limiter;

use std::rc::Rc;

use http::{HeaderMap, HeaderValue};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::keys::{usd_to_nusd, BudgetPeriod, KeyRecord};
use crate::gateway::ports::counter::{apply_ops, grant, Amounts, Caps, Counter, CounterOp};
use crate::gateway::ports::{Ports, SAME_KEY_WRITE_GAP_MS};
use crate::gateway::util::order;
use crate::gateway::util::time::{day_string, days_of, duration_string};

pub use config::{
    check_endpoint_limit, check_limits, valid_name, valid_tenant, window_end, EndpointLimit, LimitsConfig, LimitsMode,
    Period, TenantLimits, Window, PUBLIC_TENANT, TENANT_RULE,
};
pub use limiter::{Limiter, REFRESH_MS};

// ---------------------------------------------------------------------------------------------
// Admission

/// What a counter check is for (messages and headers).
#[derive(Debug, Clone, PartialEq)]
enum What {
    /// Key rpm/tpm, one minute window.
    KeyMinute {
        rpm: Option<u64>,
        tpm: Option<u64>,
    },
    Endpoint {
        endpoint: String,
        limit: EndpointLimit,
    },
    KeyBudget {
        budget: u64,
        period: BudgetPeriod,
    },
    TenantBudget {
        tenant: String,
        budget: u64,
        period: BudgetPeriod,
    },
}

#[derive(Debug, Clone)]
struct Check {
    scope: String,
    op: CounterOp,
    what: What,
}

/// OpenAI-style rate-limit headers: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// (limit, remaining, ms until reset)
    pub requests: Option<(u64, u64, u64)>,
    pub tokens: Option<(u64, u64, u64)>,
}

impl RateHeaders {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (kind, values) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some((limit, remaining, reset_ms)) = values else { continue };
            let mut put = |name: String, value: String| {
                if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    headers.insert(name, value);
                }
            };
            put(format!("x-ratelimit-limit-{kind}"), limit.to_string());
            put(format!("x-ratelimit-remaining-{kind}"), remaining.to_string());
            put(format!("x-ratelimit-reset-{kind}"), duration_string(reset_ms));
        }
    }
}

/// A refused request: the 429 (or a 5xx when a counter could not be read) and the headers to
/// put on the error response.
#[derive(Debug, Clone)]
pub struct Refused {
    pub error: GatewayError,
    pub headers: RateHeaders,
}

impl Refused {
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        self.headers.apply(headers);
    }
}

impl From<GatewayError> for Refused {
    fn from(error: GatewayError) -> Self {
        Refused { error, headers: RateHeaders::default() }
    }
}

/// What a request may consume, reserved against its token and USD limits before it is
/// forwarded and settled to its real usage after the response (so concurrent requests see each
/// other's worst case, not only what already finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    /// The prompt estimate plus the most output the request may produce.
    pub tokens: u64,
    /// Those tokens at the endpoint's price (nano-USD; 0 when unpriced).
    pub cost_nusd: u64,
    /// A stream may be admitted with less than its worst case, down to this (the prompt and a
    /// token of output): it is then stopped at what it was granted. `None`: all or nothing.
    pub floor: Option<(u64, u64)>,
}

/// Where a settled amount goes after the response.
#[derive(Debug, Clone)]
struct Target {
    scope: String,
    name: String,
    expires_at_ms: u64,
    tokens: bool,
    cost: bool,
    exact: bool,
    /// What was reserved on this counter (released when the request settles).
    reserved: Amounts,
}

/// What one admitted request may still use, per kind of cap: the room left under the
/// tightest token limit and the tightest USD limit when it was admitted (its stream is cut
/// when it crosses either).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    pub tokens: Option<(u64, String)>,
    pub cost_nusd: Option<(u64, String)>,
}

/// An admitted request: its rate-limit headers, and the counters to settle after the response.
pub struct Admission {
    limiter: Rc<Limiter>,
    targets: Vec<Target>,
    headers: RateHeaders,
    mode: &'static str,
    room: Room,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("mode", &self.mode).field("headers", &self.headers).finish_non_exhaustive()
    }
}

impl Admission {
    /// `kv`, `exact` or `none` (no limit applied), for the log line.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    pub fn headers(&self) -> &RateHeaders {
        &self.headers
    }

    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        self.headers.apply(headers);
    }

    /// The room this request had under its token and USD limits when admitted.
    pub fn room(&self) -> &Room {
        &self.room
    }

    /// What was reserved, summed per kind over the counters (for tests and the log).
    pub fn reserved(&self) -> Amounts {
        self.targets.iter().fold(Amounts::default(), |a, t| a.plus(t.reserved))
    }

    /// After the response: releases the request's reservations and adds its real tokens and
    /// cost (nano-USD) to its counters. The isolate's own counters (`kv` mode) change now, so a
    /// request admitted next in the isolate sees the settled amounts even when the host runs
    /// the writes later; `Settlement::write` writes the `kv`-mode counters (this request's
    /// changes and any merged ones) and sends the exact counters theirs.
    pub fn release(self, tokens: u64, cost_nusd: u64) -> Settlement {
        let amounts = |t: &Target| Amounts {
            requests: 0,
            tokens: if t.tokens { tokens } else { 0 },
            cost_nusd: if t.cost { cost_nusd } else { 0 },
            released_tokens: t.reserved.tokens,
            released_nusd: t.reserved.cost_nusd,
        };
        let mut kv_names = Vec::new();
        for t in self.targets.iter().filter(|t| !t.exact) {
            self.limiter.add_pending(&t.name, amounts(t), t.expires_at_ms);
            kv_names.push(t.name.clone());
        }
        let mut scopes: Vec<(String, Vec<CounterOp>)> = Vec::new();
        for t in self.targets.iter().filter(|t| t.exact) {
            let add = amounts(t);
            if add.is_zero() {
                continue;
            }
            let op = CounterOp {
                name: t.name.clone(),
                add,
                caps: Caps::default(),
                expires_at_ms: t.expires_at_ms,
                floor: None,
            };
            match scopes.iter_mut().find(|(s, _)| *s == t.scope) {
                Some((_, ops)) => ops.push(op),
                None => scopes.push((t.scope.clone(), vec![op])),
            }
        }
        Settlement { limiter: self.limiter, kv_names, scopes }
    }
}

/// A released admission's writes (`Admission::release`).
#[must_use = "a settlement does nothing until it is written"]
pub struct Settlement {
    limiter: Rc<Limiter>,
    /// The `kv`-mode counters the request changed.
    kv_names: Vec<String>,
    /// The exact counters' operations, per scope.
    scopes: Vec<(String, Vec<CounterOp>)>,
}

impl Settlement {
    pub async fn write<P: Ports + Counter>(self, ports: &P) -> Result<()> {
        // Within one isolate a counter is written at most once a second (Cloudflare KV's limit
        // per key); where nothing outlives the request (Spin) there is no later round to wait for.
        let gap_ms = if ports.keeps_state() { SAME_KEY_WRITE_GAP_MS } else { 0 };
        let mut result = self.limiter.flush(ports, &self.kv_names, gap_ms).await;
        for (scope, ops) in &self.scopes {
            if let Err(e) = ports.count(scope, ops).await {
                result = Err(e);
            }
        }
        self.limiter.prune(ports.now_ms());
        result
    }
}

/// Checks and counts one request against every limit that applies to it: the key's rpm/tpm and
/// budget, its tenant's budget (`config.tenants`), and the endpoint's `limit`, reserving the
/// request's worst case (`reservation`) on its token and USD counters. `endpoint` is the
/// resolved endpoint's name. Returns the admission (headers for the response, counters to
/// settle after it) or the refusal (429 + headers).
///
/// Where the counting happens: the exact counter (`limits.mode: exact` or a key's `exact`),
/// else the isolate's `kv` view — except on hosts without in-memory state (Spin), where every
/// check uses the exact counter when the host has one: there is no view to check against, and
/// a read-modify-write per request lets concurrent requests through together.
pub async fn admit<P: Ports + Counter>(
    ports: &P,
    limiter: &Rc<Limiter>,
    config: &LimitsConfig,
    key: Option<&KeyRecord>,
    endpoint: &str,
    endpoint_limit: Option<&EndpointLimit>,
    reservation: Reservation,
) -> std::result::Result<Admission, Refused> {
    let now = ports.now_ms();
    let checks = plan(config, key, endpoint, endpoint_limit, now, reservation);
    let mut admission = Admission {
        limiter: limiter.clone(),
        targets: Vec::new(),
        headers: RateHeaders::default(),
        mode: "none",
        room: Room::default(),
    };
    if checks.is_empty() {
        return Ok(admission);
    }
    let exact = config.mode == LimitsMode::Exact || key.is_some_and(|k| k.exact) || !ports.keeps_state();
    let mut values: Vec<Option<Amounts>> = vec![None; checks.len()];
    let mut granted: Vec<Amounts> = vec![Amounts::default(); checks.len()];
    let mut kv_checks: Vec<usize> = Vec::new();
    if exact {
        // Scopes in order: tenant budgets first, then the key's own counters. A refusal by a
        // later scope releases what the earlier ones reserved.
        let mut scopes: Vec<&str> = Vec::new();
        for c in &checks {
            if !scopes.contains(&c.scope.as_str()) {
                scopes.push(&c.scope);
            }
        }
        order::sort_by_key(&mut scopes, |s| !s.starts_with("tenant:"));
        let mut admitted: Vec<(&str, Vec<usize>)> = Vec::new();
        for scope in scopes {
            let idx: Vec<usize> = (0..checks.len()).filter(|i| checks[*i].scope == scope).collect();
            let ops: Vec<CounterOp> = idx.iter().map(|i| checks[*i].op.clone()).collect();
            match ports.count(scope, &ops).await.map_err(unavailable)? {
                Some(reply) if reply.values.len() == ops.len() => {
                    for (n, (i, v)) in idx.iter().zip(&reply.values).enumerate() {
                        values[*i] = Some(*v);
                        granted[*i] = reply.granted(n, &ops);
                    }
                    if !reply.admitted {
                        release(ports, &checks, &granted, &admitted).await;
                        return Err(refusal(&checks, &values, now));
                    }
                    admitted.push((scope, idx));
                }
                Some(_) => {
                    release(ports, &checks, &granted, &admitted).await;
                    return Err(GatewayError::internal(
                        ErrorCode::CounterError,
                        "the exact counter answered malformed data",
                    )
                    .into());
                }
                None => kv_checks.extend(idx),
            }
        }
    } else {
        kv_checks = (0..checks.len()).collect();
    }

    if !kv_checks.is_empty() {
        for i in &kv_checks {
            let op = &checks[*i].op;
            limiter.refresh(ports, &op.name, op.expires_at_ms, now).await.map_err(unavailable)?;
        }
        // From here to the increments: no await, so interleaved requests see each other.
        let ops: Vec<CounterOp> = kv_checks.iter().map(|i| checks[*i].op.clone()).collect();
        let mut current: Vec<Amounts> = ops.iter().map(|op| limiter.estimate(&op.name)).collect();
        let reply = apply_ops(&mut current, &ops);
        for (n, (i, v)) in kv_checks.iter().zip(&reply.values).enumerate() {
            values[*i] = Some(*v);
            if reply.admitted {
                granted[*i] = reply.granted(n, &ops);
            }
        }
        if !reply.admitted {
            return Err(refusal(&checks, &values, now));
        }
        for (i, op) in kv_checks.iter().zip(&ops) {
            limiter.add_pending(&op.name, granted[*i], op.expires_at_ms);
        }
        if !ports.keeps_state() {
            // A failed write stays pending; `settle` retries it and reports the error.
            let names: Vec<String> = ops.iter().map(|op| op.name.clone()).collect();
            let _ = limiter.flush(ports, &names, 0).await;
        }
    }

    admission.mode = if kv_checks.is_empty() { "exact" } else { "kv" };
    admission.headers = headers(&checks, &values, now);
    admission.room = room(&checks, &values, &granted);
    admission.targets = checks
        .iter()
        .enumerate()
        .map(|(i, c)| Target {
            scope: c.scope.clone(),
            name: c.op.name.clone(),
            expires_at_ms: c.op.expires_at_ms,
            tokens: c.op.caps.tokens.is_some(),
            cost: c.op.caps.cost_nusd.is_some(),
            exact: !kv_checks.contains(&i),
            reserved: Amounts { tokens: granted[i].tokens, cost_nusd: granted[i].cost_nusd, ..Amounts::default() },
        })
        .collect();
    Ok(admission)
}

/// Releases the reservations of scopes that admitted a request a later scope refused.
async fn release<P: Ports + Counter>(
    ports: &P,
    checks: &[Check],
    granted: &[Amounts],
    admitted: &[(&str, Vec<usize>)],
) {
    for (scope, idx) in admitted {
        let ops: Vec<CounterOp> = idx
            .iter()
            .map(|i| CounterOp {
                name: checks[*i].op.name.clone(),
                add: Amounts {
                    released_tokens: granted[*i].tokens,
                    released_nusd: granted[*i].cost_nusd,
                    ..Amounts::default()
                },
                caps: Caps::default(),
                expires_at_ms: checks[*i].op.expires_at_ms,
                floor: None,
            })
            .filter(|op| !op.add.is_zero())
            .collect();
        if !ops.is_empty() {
            let _ = ports.count(scope, &ops).await;
        }
    }
}

/// A store or counter failure while admitting: limits fail closed, as a retryable 503
/// (`kv_unavailable`); a 503 the counter chose itself (busy, unbound) stays as it is.
fn unavailable(e: GatewayError) -> GatewayError {
    if e.status.is_server_error() && e.status != http::StatusCode::SERVICE_UNAVAILABLE {
        GatewayError::kv_unavailable("the rate-limit counter")
    } else {
        e
    }
}

/// The counters that apply to a request.
fn plan(
    config: &LimitsConfig,
    key: Option<&KeyRecord>,
    endpoint: &str,
    endpoint_limit: Option<&EndpointLimit>,
    now: u64,
    reservation: Reservation,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let scope = key.map_or_else(|| "public".to_string(), |k| k.id.clone());
    let floor_of = |tokens: bool, cost: bool| {
        reservation.floor.map(|(t, c)| Amounts {
            tokens: if tokens { t } else { 0 },
            cost_nusd: if cost { c } else { 0 },
            ..Amounts::default()
        })
    };
    let mut push =
        |scope: &str, name: String, window: &Window, add: Amounts, caps: Caps, floor: Option<Amounts>, what: What| {
            checks.push(Check {
                scope: scope.to_string(),
                op: CounterOp { name, add, caps, expires_at_ms: window.end_ms, floor },
                what,
            })
        };
    let one = Amounts { requests: 1, ..Amounts::default() };
    let cost = Amounts { cost_nusd: reservation.cost_nusd, ..Amounts::default() };
    if let Some(k) = key {
        if k.rpm.is_some() || k.tpm.is_some() {
            let w = Period::Minute.window(now);
            let caps = Caps { requests: k.rpm, tokens: k.tpm, cost_nusd: None };
            let add = Amounts { tokens: if k.tpm.is_some() { reservation.tokens } else { 0 }, ..one };
            let floor = k.tpm.and(floor_of(true, false));
            let what = What::KeyMinute { rpm: k.rpm, tpm: k.tpm };
            push(&scope, format!("rl:{scope}:{}", w.id), &w, add, caps, floor, what);
        }
    }
    if let Some(limit) = endpoint_limit {
        let w = limit.period.window(now);
        let caps = Caps { requests: Some(limit.calls), ..Caps::default() };
        let what = What::Endpoint { endpoint: endpoint.to_string(), limit: *limit };
        push(&scope, format!("rl:{scope}:ep:{endpoint}:{}", w.id), &w, one, caps, None, what);
    }
    if let Some(k) = key {
        if let Some(budget) = k.budget_nusd() {
            let w = Period::from(k.budget_period).window(now);
            let caps = Caps { cost_nusd: Some(budget), ..Caps::default() };
            let what = What::KeyBudget { budget, period: k.budget_period };
            push(&scope, format!("rl:{scope}:usd:{}", w.id), &w, cost, caps, floor_of(false, true), what);
        }
        if let Some(t) = config.tenants.get(&k.tenant) {
            let w = Period::from(t.budget_period).window(now);
            let budget = usd_to_nusd(t.budget_usd);
            let caps = Caps { cost_nusd: Some(budget), ..Caps::default() };
            let what = What::TenantBudget { tenant: k.tenant.clone(), budget, period: t.budget_period };
            let tscope = format!("tenant:{}", k.tenant);
            push(&tscope, format!("rl:{tscope}:usd:{}", w.id), &w, cost, caps, floor_of(false, true), what);
        }
    }
    checks
}

/// The room an admitted request had: per kind, the tightest cap minus what counted before it.
fn room(checks: &[Check], values: &[Option<Amounts>], granted: &[Amounts]) -> Room {
    let mut room = Room::default();
    for ((c, v), g) in checks.iter().zip(values).zip(granted) {
        let before = v.unwrap_or_default().effective();
        if let (Some(cap), What::KeyMinute { tpm: Some(tpm), .. }) = (c.op.caps.tokens, &c.what) {
            let left = cap.saturating_sub(before.tokens.saturating_sub(g.tokens));
            if room.tokens.as_ref().is_none_or(|(r, _)| left < *r) {
                room.tokens = Some((left, format!("the API key's token limit of {tpm} tokens per minute")));
            }
        }
        if let Some(cap) = c.op.caps.cost_nusd {
            let left = cap.saturating_sub(before.cost_nusd.saturating_sub(g.cost_nusd));
            let whose = match &c.what {
                What::TenantBudget { tenant, period, .. } => format!("tenant \"{tenant}\"'s {} budget", daily(*period)),
                What::KeyBudget { period, .. } => format!("the API key's {} budget", daily(*period)),
                _ => "the budget".to_string(),
            };
            if room.cost_nusd.as_ref().is_none_or(|(r, _)| left < *r) {
                room.cost_nusd = Some((left, format!("{whose} ({} left when the request started)", usd(left))));
            }
        }
    }
    room
}

/// The headers for the tightest request limit and the key's token limit.
fn headers(checks: &[Check], values: &[Option<Amounts>], now: u64) -> RateHeaders {
    let mut out = RateHeaders::default();
    for (c, v) in checks.iter().zip(values) {
        let v = v.unwrap_or_default().effective();
        let reset = c.op.expires_at_ms.saturating_sub(now);
        if let Some(cap) = c.op.caps.requests {
            let entry = (cap, cap.saturating_sub(v.requests), reset);
            if out.requests.is_none_or(|(_, remaining, _)| entry.1 < remaining) {
                out.requests = Some(entry);
            }
        }
        if let What::KeyMinute { tpm: Some(tpm), .. } = &c.what {
            out.tokens = Some((*tpm, tpm.saturating_sub(v.tokens), reset));
        }
    }
    out
}

/// The 429 for the first check whose current value breaks its caps.
fn refusal(checks: &[Check], values: &[Option<Amounts>], now: u64) -> Refused {
    let headers = headers(checks, values, now);
    let broken = checks.iter().zip(values).find(|(c, v)| v.is_some_and(|v| grant(v, &c.op).is_none()));
    let Some((check, value)) = broken else {
        return Refused {
            error: GatewayError::internal(ErrorCode::CounterError, "a limit refused the request without naming it"),
            headers,
        };
    };
    let value = value.unwrap_or_default().effective();
    let wait_ms = check.op.expires_at_ms.saturating_sub(now);
    let retry_after = wait_ms.div_ceil(1000).max(1);
    let in_time = format!("retry in {}", duration_string(wait_ms));
    let needs = |what: String| {
        if check.op.add.cost_nusd > 0 || check.op.add.tokens > 0 {
            format!("; this request may use up to {what} (lower max_tokens to fit)")
        } else {
            String::new()
        }
    };
    let (code, message) = match &check.what {
        What::KeyMinute { rpm, tpm } => {
            if rpm.is_some_and(|r| value.requests >= r) {
                (
                    ErrorCode::RateLimitExceeded,
                    format!("rate limit reached for this API key: {} requests per minute; {in_time}", rpm.unwrap_or(0)),
                )
            } else {
                (
                    ErrorCode::RateLimitExceeded,
                    format!(
                        "token rate limit reached for this API key: {} tokens per minute (used or reserved {}{}); {in_time}",
                        tpm.unwrap_or(0),
                        value.tokens,
                        needs(format!("{} tokens", check.op.add.tokens))
                    ),
                )
            }
        }
        What::Endpoint { endpoint, limit } => (
            ErrorCode::RateLimitExceeded,
            format!(
                "rate limit reached for endpoint \"{endpoint}\": {} calls per {}; {in_time}",
                limit.calls,
                limit.period.as_str()
            ),
        ),
        What::KeyBudget { budget, period } => (
            ErrorCode::BudgetExceeded,
            format!(
                "budget exceeded: this API key has spent or reserved {} of its {} {} budget{}; it renews at {} UTC",
                usd(value.cost_nusd),
                usd(*budget),
                daily(*period),
                needs(usd(check.op.add.cost_nusd)),
                renews(check.op.expires_at_ms)
            ),
        ),
        What::TenantBudget { tenant, budget, period } => (
            ErrorCode::BudgetExceeded,
            format!(
                "budget exceeded: tenant \"{tenant}\" has spent or reserved {} of its {} {} budget{}; it renews at {} UTC",
                usd(value.cost_nusd),
                usd(*budget),
                daily(*period),
                needs(usd(check.op.add.cost_nusd)),
                renews(check.op.expires_at_ms)
            ),
        ),
    };
    Refused { error: GatewayError::too_many_requests(code, message, retry_after), headers }
}

fn daily(period: BudgetPeriod) -> &'static str {
    match period {
        BudgetPeriod::Day => "daily",
        BudgetPeriod::Month => "monthly",
    }
}

fn renews(end_ms: u64) -> String {
    format!("{} 00:00", day_string(days_of(end_ms)))
}

/// `$1.50`, `$0.000123`: at least cents, at most micro-dollars.
pub fn usd(nusd: u64) -> String {
    let micros = nusd.div_ceil(1000);
    let whole = micros / 1_000_000;
    let frac = format!("{:06}", micros % 1_000_000);
    let trimmed = frac.trim_end_matches('0');
    let frac = if trimmed.len() < 2 { &frac[..2] } else { trimmed };
    format!("${whole}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::check::Issues;
    use crate::gateway::features::keys::BudgetPeriod;
    use crate::gateway::ports::counter::CounterReply;
    use crate::gateway::ports::lock::{acquire, release, LockValue, LOCK_LEASE_MS};
    use crate::gateway::ports::memory::{block_on, run_interleaved, MemoryHost};
    use crate::gateway::ports::Kv;
    use crate::gateway::ports::{Clock, Secrets, Upstream, UpstreamError};
    use crate::gateway::util::time::DAY_MS;
    use http::StatusCode;
    use serde_json::json;
    use std::cell::Cell;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    /// A MemoryHost whose KV reads can yield once (so concurrent requests interleave at every
    /// await, as in a Cloudflare isolate) and which can offer an exact counter (a stand-in for
    /// the Durable Object, shared by every "isolate" using this host).
    struct TestHost {
        inner: MemoryHost,
        slow: bool,
        exact: Option<RefCell<HashMap<String, HashMap<String, Amounts>>>>,
        exact_calls: Cell<u32>,
        /// Every KV write: the entry's name and the host time.
        puts: RefCell<Vec<(String, u64)>>,
    }

    impl TestHost {
        fn new() -> Self {
            TestHost {
                inner: MemoryHost::new(|_| Err(UpstreamError::Timeout)),
                slow: false,
                exact: None,
                exact_calls: Cell::new(0),
                puts: RefCell::default(),
            }
        }
        fn slow(mut self) -> Self {
            self.slow = true;
            self
        }
        fn with_exact(mut self) -> Self {
            self.exact = Some(RefCell::default());
            self
        }
    }

    async fn yield_once() {
        let mut yielded = false;
        std::future::poll_fn(|_| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                Poll::Pending
            }
        })
        .await
    }

    impl Kv for TestHost {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            if self.slow {
                yield_once().await;
            }
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, value: &[u8], ttl: Option<u64>) -> Result<()> {
            if self.slow {
                yield_once().await;
            }
            self.puts.borrow_mut().push((key.to_string(), self.now_ms()));
            self.inner.put(key, value, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>> {
            self.inner.list(prefix).await
        }
    }
    impl Upstream for TestHost {
        type Body = Vec<u8>;
        async fn send(
            &self,
            request: &http::Request<Vec<u8>>,
            timeout_ms: u64,
        ) -> std::result::Result<http::Response<Vec<u8>>, UpstreamError> {
            self.inner.send(request, timeout_ms).await
        }
        async fn read_body(&self, body: Vec<u8>, limit: usize) -> std::result::Result<Vec<u8>, UpstreamError> {
            self.inner.read_body(body, limit).await
        }
    }
    impl Secrets for TestHost {
        fn secret(&self, name: &str) -> Option<String> {
            self.inner.secret(name)
        }
    }
    impl Clock for TestHost {
        fn now_ms(&self) -> u64 {
            self.inner.now_ms()
        }
        fn random_bytes(&self, buf: &mut [u8]) {
            self.inner.random_bytes(buf)
        }
        async fn sleep(&self, ms: u64) {
            self.inner.sleep(ms).await;
            if self.slow {
                yield_once().await;
            }
        }
    }
    impl crate::gateway::ports::EdgeCache for TestHost {}
    impl crate::gateway::ports::Signatures for TestHost {}

    impl Counter for TestHost {
        async fn count(&self, scope: &str, ops: &[CounterOp]) -> Result<Option<CounterReply>> {
            if !self.inner.keeps_state() {
                return self.inner.count(scope, ops).await;
            }
            let Some(exact) = &self.exact else { return Ok(None) };
            self.exact_calls.set(self.exact_calls.get() + 1);
            if self.slow {
                yield_once().await; // the round trip; the object itself is serialized
            }
            let mut all = exact.borrow_mut();
            let counters = all.entry(scope.to_string()).or_default();
            let mut current: Vec<Amounts> =
                ops.iter().map(|op| counters.get(&op.name).copied().unwrap_or_default()).collect();
            let reply = apply_ops(&mut current, ops);
            if reply.admitted {
                for (op, v) in ops.iter().zip(&reply.values) {
                    counters.insert(op.name.clone(), *v);
                }
            }
            Ok(Some(reply))
        }

        fn keeps_state(&self) -> bool {
            self.inner.keeps_state()
        }
    }

    fn key(f: impl FnOnce(&mut KeyRecord)) -> KeyRecord {
        let mut k =
            KeyRecord { id: "k_00aa".into(), tenant: "acme".into(), endpoints: vec!["*".into()], ..Default::default() };
        f(&mut k);
        k
    }

    /// Starts host time at the beginning of a minute, so windows do not roll mid-test.
    fn at_minute_start(host: &TestHost) {
        let now = host.now_ms();
        host.inner.advance(60_000 - now % 60_000);
    }

    #[allow(clippy::result_large_err)] // mirrors `admit`'s signature
    fn admit_one(
        host: &TestHost,
        limiter: &Rc<Limiter>,
        config: &LimitsConfig,
        key: Option<&KeyRecord>,
        limit: Option<&EndpointLimit>,
    ) -> std::result::Result<Admission, Refused> {
        admit_with(host, limiter, config, key, limit, Reservation::default())
    }

    #[allow(clippy::result_large_err)] // mirrors `admit`'s signature
    fn admit_with(
        host: &TestHost,
        limiter: &Rc<Limiter>,
        config: &LimitsConfig,
        key: Option<&KeyRecord>,
        limit: Option<&EndpointLimit>,
        reservation: Reservation,
    ) -> std::result::Result<Admission, Refused> {
        block_on(admit(host, limiter, config, key, "chat", limit, reservation))
    }

    fn header_map(h: &RateHeaders) -> HeaderMap {
        let mut map = HeaderMap::new();
        h.apply(&mut map);
        map
    }

    #[test]
    fn rpm_admits_five_then_429_with_headers_then_renews() {
        let host = TestHost::new();
        at_minute_start(&host);
        let limiter = Rc::new(Limiter::new());
        let config = LimitsConfig::default();
        let k = key(|k| k.rpm = Some(5));
        for i in 0..5u64 {
            let a = admit_one(&host, &limiter, &config, Some(&k), None).unwrap();
            assert_eq!(a.mode(), "kv");
            let h = header_map(a.headers());
            assert_eq!(h["x-ratelimit-limit-requests"], "5");
            assert_eq!(h["x-ratelimit-remaining-requests"], (4 - i).to_string().as_str());
            let reset = if i == 0 { "1m0s".to_string() } else { format!("{}s", 60 - i) };
            assert_eq!(h["x-ratelimit-reset-requests"], reset.as_str());
            block_on(a.release(10, 0).write(&host)).unwrap();
            host.inner.advance(1_000);
        }
        let refused = admit_one(&host, &limiter, &config, Some(&k), None).unwrap_err();
        assert_eq!(refused.error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.error.code, "rate_limit_exceeded");
        assert_eq!(refused.error.retry_after, Some(55));
        assert!(refused.error.message.contains("5 requests per minute"), "{}", refused.error.message);
        let h = header_map(&refused.headers);
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "55s");
        // The refused request was not counted; KV holds the 5 admitted ones and their tokens.
        let w = Period::Minute.window(host.now_ms());
        let stored: Amounts = serde_json::from_slice(&host.inner.kv.borrow()[&format!("rl:k_00aa:{}", w.id)]).unwrap();
        assert_eq!(stored, Amounts { requests: 5, ..Amounts::default() }, "tokens only counted where a tpm applies");
        host.inner.advance(55_000);
        assert!(admit_one(&host, &limiter, &config, Some(&k), None).is_ok(), "next window");
    }

    #[test]
    fn concurrent_requests_in_one_isolate_admit_exactly_the_limit() {
        let host = TestHost::new().slow();
        at_minute_start(&host);
        let limiter = Rc::new(Limiter::new());
        let config = LimitsConfig::default();
        let k = key(|k| k.rpm = Some(5));
        let futures: Vec<Pin<Box<dyn Future<Output = bool> + '_>>> = (0..12)
            .map(|_| {
                let limiter = limiter.clone();
                let (host, config, k) = (&host, &config, &k);
                Box::pin(async move {
                    match admit(host, &limiter, config, Some(k), "chat", None, Reservation::default()).await {
                        Ok(a) => {
                            a.release(0, 0).write(host).await.unwrap();
                            true
                        }
                        Err(_) => false,
                    }
                }) as Pin<Box<dyn Future<Output = bool>>>
            })
            .collect();
        let admitted = run_interleaved(futures).into_iter().filter(|a| *a).count();
        assert_eq!(admitted, 5);
        let w = Period::Minute.window(host.now_ms());
        let stored: Amounts = serde_json::from_slice(&host.inner.kv.borrow()[&format!("rl:k_00aa:{}", w.id)]).unwrap();
        assert_eq!(stored.requests, 5, "every increment written, none lost to interleaved writes");
    }

    #[test]
    fn kv_mode_multiplies_across_isolates_exact_mode_does_not() {
        // Two isolates (two limiters) admitting at once before either has written: kv mode
        // lets each take the whole limit — the documented failure exact mode avoids.
        let host = TestHost::new();
        at_minute_start(&host);
        let config = LimitsConfig::default();
        let k = key(|k| k.rpm = Some(3));
        let isolates = [Rc::new(Limiter::new()), Rc::new(Limiter::new())];
        let mut held = Vec::new();
        for limiter in &isolates {
            for _ in 0..3 {
                held.push(admit_one(&host, limiter, &config, Some(&k), None).unwrap());
            }
        }
        assert_eq!(held.len(), 6);

        let host = TestHost::new().with_exact();
        at_minute_start(&host);
        let exact = key(|k| {
            k.rpm = Some(3);
            k.exact = true;
        });
        let mut admitted = 0;
        for limiter in &isolates {
            for _ in 0..3 {
                if let Ok(a) = admit_one(&host, limiter, &config, Some(&exact), None) {
                    assert_eq!(a.mode(), "exact");
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 3);
        assert!(host.inner.kv.borrow().keys().all(|k| !k.starts_with("rl:")), "exact counters never touch KV");
    }

    #[test]
    fn exact_mode_concurrent_and_config_wide() {
        let host = TestHost::new().with_exact().slow();
        at_minute_start(&host);
        let config = LimitsConfig { mode: LimitsMode::Exact, ..LimitsConfig::default() };
        let k = key(|k| k.rpm = Some(4));
        let futures: Vec<Pin<Box<dyn Future<Output = bool> + '_>>> = (0..10)
            .map(|i| {
                // Every request in its own "isolate".
                let limiter = Rc::new(Limiter::new());
                let (host, config, k) = (&host, &config, &k);
                let _ = i;
                Box::pin(async move {
                    admit(host, &limiter, config, Some(k), "chat", None, Reservation::default()).await.is_ok()
                }) as Pin<Box<dyn Future<Output = bool>>>
            })
            .collect();
        assert_eq!(run_interleaved(futures).into_iter().filter(|a| *a).count(), 4);
    }

    #[test]
    fn a_host_without_state_counts_every_limit_exactly_whatever_the_mode() {
        // A Spin-like host: no state between requests (each request a fresh limiter), exact
        // counters by compare-and-swap; the key is in the default `kv` mode.
        let host = TestHost::new().slow();
        host.inner.stateless.set(true);
        at_minute_start(&host);
        let config = LimitsConfig::default();
        let k = key(|k| k.rpm = Some(4));
        let futures: Vec<Pin<Box<dyn Future<Output = bool> + '_>>> = (0..10)
            .map(|_| {
                let limiter = Rc::new(Limiter::new());
                let (host, config, k) = (&host, &config, &k);
                Box::pin(async move {
                    match admit(host, &limiter, config, Some(k), "chat", None, Reservation::default()).await {
                        Ok(a) => {
                            assert_eq!(a.mode(), "exact");
                            a.release(3, 0).write(host).await.unwrap();
                            true
                        }
                        Err(r) => {
                            assert_eq!(r.error.code, "rate_limit_exceeded");
                            false
                        }
                    }
                }) as Pin<Box<dyn Future<Output = bool>>>
            })
            .collect();
        assert_eq!(run_interleaved(futures).into_iter().filter(|a| *a).count(), 4);
        let w = Period::Minute.window(host.now_ms());
        let entry: HashMap<String, (Amounts, u64)> =
            serde_json::from_slice(&host.inner.kv.borrow()["ctr:k_00aa"]).unwrap();
        assert_eq!(entry[&format!("rl:k_00aa:{}", w.id)].0.requests, 4);
        assert!(host.inner.kv.borrow().keys().all(|k| !k.starts_with("rl:")), "no kv-mode counter");
    }

    #[test]
    fn an_abandoned_lock_is_broken_after_its_lease() {
        let host = TestHost::new();
        let stale = serde_json::to_vec(&LockValue { id: "dead".into(), at: host.now_ms() }).unwrap();
        host.inner.kv.borrow_mut().insert("lock:k_1".into(), stale);
        let started = host.now_ms();
        let id = block_on(acquire(&host, "k_1")).unwrap();
        assert!(host.now_ms() - started >= LOCK_LEASE_MS, "waited for the lease");
        let holder: LockValue = serde_json::from_slice(&host.inner.kv.borrow()["lock:k_1"]).unwrap();
        assert_eq!(holder.id, id);
        block_on(release(&host, "k_1", &id));
        assert!(!host.inner.kv.borrow().contains_key("lock:k_1"));
    }

    #[test]
    fn exact_mode_falls_back_to_kv_when_the_host_has_no_counter() {
        let host = TestHost::new();
        let config = LimitsConfig { mode: LimitsMode::Exact, ..LimitsConfig::default() };
        let limiter = Rc::new(Limiter::new());
        let a = admit_one(&host, &limiter, &config, Some(&key(|k| k.rpm = Some(1))), None).unwrap();
        assert_eq!(a.mode(), "kv");
    }

    /// Token limits reserve each request's worst case: a request is admitted only if it fits
    /// in what is neither used nor reserved; its reservation is released (its real usage kept)
    /// when it settles.
    #[test]
    fn token_limit_reserves_the_worst_case_and_settles_to_the_real_usage() {
        let host = TestHost::new();
        at_minute_start(&host);
        let limiter = Rc::new(Limiter::new());
        let config = LimitsConfig::default();
        let k = key(|k| k.tpm = Some(25));
        let worst = Reservation { tokens: 10, cost_nusd: 0, floor: None };
        // Reserve 10, use 5 each: used before = 0, 5, 10 → admitted.
        for used in [0u64, 5] {
            let a = admit_with(&host, &limiter, &config, Some(&k), None, worst).unwrap();
            let h = header_map(a.headers());
            assert_eq!(h["x-ratelimit-limit-tokens"], "25");
            assert_eq!(h["x-ratelimit-remaining-tokens"], (25 - used - 10).to_string().as_str(), "reserved counts");
            assert!(h.get("x-ratelimit-limit-requests").is_none(), "no request limit on this key");
            block_on(a.release(5, 0).write(&host)).unwrap();
        }
        let third = admit_with(&host, &limiter, &config, Some(&k), None, worst).unwrap();
        // While the third is in flight (10 used + 10 reserved), another 10 does not fit.
        let refused = admit_with(&host, &limiter, &config, Some(&k), None, worst).unwrap_err();
        assert_eq!(refused.error.code, "rate_limit_exceeded");
        assert!(
            refused
                .error
                .message
                .contains("25 tokens per minute (used or reserved 20; this request may use up to 10 tokens"),
            "{}",
            refused.error.message
        );
        block_on(third.release(5, 0).write(&host)).unwrap();
        assert!(admit_with(&host, &limiter, &config, Some(&k), None, Reservation { tokens: 11, ..worst }).is_err());
        assert!(admit_with(&host, &limiter, &config, Some(&k), None, worst).is_ok(), "15 + 10 fits in 25");
        // A stream may take what is left, down to its floor.
        let host = TestHost::new();
        at_minute_start(&host);
        let limiter = Rc::new(Limiter::new());
        let stream = Reservation { tokens: 100, cost_nusd: 0, floor: Some((5, 0)) };
        let a = admit_with(&host, &limiter, &config, Some(&k), None, stream).unwrap();
        assert_eq!(a.reserved().tokens, 25, "granted what fits");
        assert_eq!(a.room().tokens.as_ref().map(|(n, _)| *n), Some(25));
        assert!(admit_with(&host, &limiter, &config, Some(&k), None, stream).is_err(), "nothing left");
        block_on(a.release(7, 0).write(&host)).unwrap();
        let b = admit_with(&host, &limiter, &config, Some(&k), None, stream).unwrap();
        assert_eq!(b.reserved().tokens, 18);
    }

    #[test]
    fn key_budget_trips_on_the_right_request_and_renews_next_period() {
        let host = TestHost::new();
        let limiter = Rc::new(Limiter::new());
        let config = LimitsConfig::default();
        let k = key(|k| {
            k.budget_usd = Some(0.001);
            k.budget_period = BudgetPeriod::Day;
        });
        // Reserve and spend $0.0004 per request: before = 0, .0004 → fit; .0008 + .0004 > .001.
        let worst = Reservation { tokens: 7, cost_nusd: 400_000, floor: None };
        for _ in 0..2 {
            let a = admit_with(&host, &limiter, &config, Some(&k), None, worst).unwrap();
            block_on(a.release(7, 400_000).write(&host)).unwrap();
        }
        let refused = admit_with(&host, &limiter, &config, Some(&k), None, worst).unwrap_err();
        assert_eq!(
            (refused.error.status, refused.error.code.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "budget_exceeded")
        );
        assert!(
            refused
                .error
                .message
                .contains("spent or reserved $0.0008 of its $0.001 daily budget; this request may use up to $0.0004"),
            "{}",
            refused.error.message
        );
        assert!(refused.error.retry_after.unwrap() <= 86_400);
        // A new isolate (or Spin's fresh instance) reads the same spend from KV.
        let fresh = Rc::new(Limiter::new());
        assert!(admit_with(&host, &fresh, &config, Some(&k), None, worst).is_err());
        assert!(admit_with(&host, &fresh, &config, Some(&k), None, Reservation::default()).is_ok(), "$0.0002 left");
        host.inner.advance(86_400_000);
        assert!(admit_with(&host, &limiter, &config, Some(&k), None, worst).is_ok(), "renewed the next day");
    }

    /// Concurrent requests against a nearly spent budget, interleaved at every await in one
    /// isolate (kv mode) and across isolates (exact mode): the reservations keep the spend
    /// within the budget (no overshoot), where checking "spent < budget" let all of them in.
    #[test]
    fn concurrent_reservations_never_overshoot_the_budget() {
        for exact in [false, true] {
            let host = if exact { TestHost::new().with_exact().slow() } else { TestHost::new().slow() };
            let config = LimitsConfig::default();
            let k = key(|k| {
                k.budget_usd = Some(0.01); // 10_000_000 nUSD
                k.exact = exact;
            });
            let worst = Reservation { tokens: 10, cost_nusd: 3_000_000, floor: None };
            let shared = Rc::new(Limiter::new());
            let futures: Vec<Pin<Box<dyn Future<Output = bool> + '_>>> = (0..10)
                .map(|_| {
                    let limiter = if exact { Rc::new(Limiter::new()) } else { shared.clone() };
                    let (host, config, k) = (&host, &config, &k);
                    Box::pin(async move {
                        match admit(host, &limiter, config, Some(k), "chat", None, worst).await {
                            Ok(a) => {
                                a.release(10, 3_000_000).write(host).await.unwrap();
                                true
                            }
                            Err(_) => false,
                        }
                    }) as Pin<Box<dyn Future<Output = bool>>>
                })
                .collect();
            let admitted = run_interleaved(futures).into_iter().filter(|a| *a).count();
            assert_eq!(admitted, 3, "exact: {exact}: 3 × $0.003 fit in $0.01, a 4th would overshoot");
        }
    }

    #[test]
    fn tenant_budget_applies_to_all_its_keys() {
        let host = TestHost::new();
        let limiter = Rc::new(Limiter::new());
        let mut config = LimitsConfig::default();
        config.tenants.insert("acme".into(), TenantLimits { budget_usd: 1.0, budget_period: BudgetPeriod::Month });
        let a = key(|k| k.id = "k_01".into());
        let b = key(|k| k.id = "k_02".into());
        let first = admit_one(&host, &limiter, &config, Some(&a), None).unwrap();
        block_on(first.release(0, 1_000_000_000).write(&host)).unwrap();
        let refused = admit_one(&host, &limiter, &config, Some(&b), None).unwrap_err();
        assert_eq!(refused.error.code, "budget_exceeded");
        assert!(
            refused.error.message.contains("tenant \"acme\" has spent or reserved $1.00 of its $1.00 monthly budget"),
            "{}",
            refused.error.message
        );
        let other = key(|k| k.tenant = "other".into());
        assert!(admit_one(&host, &limiter, &config, Some(&other), None).is_ok());
    }

    #[test]
    fn tenant_budget_in_exact_mode_uses_its_own_scope() {
        let host = TestHost::new().with_exact();
        let limiter = Rc::new(Limiter::new());
        let mut config = LimitsConfig { mode: LimitsMode::Exact, ..LimitsConfig::default() };
        config.tenants.insert("acme".into(), TenantLimits { budget_usd: 1.0, budget_period: BudgetPeriod::Month });
        let k = key(|k| k.rpm = Some(10));
        let a = admit_one(&host, &limiter, &config, Some(&k), None).unwrap();
        assert_eq!(a.mode(), "exact");
        block_on(a.release(5, 2_000_000_000).write(&host)).unwrap();
        let exact = host.exact.as_ref().unwrap().borrow();
        assert!(exact.contains_key("tenant:acme") && exact.contains_key("k_00aa"), "{:?}", exact.keys());
        drop(exact);
        let refused = admit_one(&host, &limiter, &config, Some(&k), None).unwrap_err();
        assert_eq!(refused.error.code, "budget_exceeded");
        // The refusal came from the tenant scope before the key's counter was touched.
        let exact = host.exact.as_ref().unwrap().borrow();
        let requests: u64 = exact["k_00aa"].values().map(|a| a.requests).sum();
        assert_eq!(requests, 1);
    }

    #[test]
    fn endpoint_limit_per_key_and_for_public_requests() {
        let host = TestHost::new();
        let now = host.now_ms();
        host.inner.advance(3_600_000 - now % 3_600_000);
        let limiter = Rc::new(Limiter::new());
        let config = LimitsConfig::default();
        let limit = EndpointLimit { calls: 2, period: Period::Hour };
        let k = key(|_| {});
        for _ in 0..2 {
            let a = admit_one(&host, &limiter, &config, Some(&k), Some(&limit)).unwrap();
            assert_eq!(header_map(a.headers())["x-ratelimit-reset-requests"], "1h0m0s");
        }
        let refused = admit_one(&host, &limiter, &config, Some(&k), Some(&limit)).unwrap_err();
        assert!(refused.error.message.contains("endpoint \"chat\": 2 calls per hour"), "{}", refused.error.message);
        assert_eq!(refused.error.retry_after, Some(3600));
        // Another key has its own count; anonymous requests share one.
        assert!(admit_one(&host, &limiter, &config, Some(&key(|k| k.id = "k_bb".into())), Some(&limit)).is_ok());
        assert!(admit_one(&host, &limiter, &config, None, Some(&limit)).is_ok());
        assert!(admit_one(&host, &limiter, &config, None, Some(&limit)).is_ok());
        assert!(admit_one(&host, &limiter, &config, None, Some(&limit)).is_err());
    }

    #[test]
    fn tightest_request_limit_is_reported() {
        let host = TestHost::new();
        at_minute_start(&host);
        let limiter = Rc::new(Limiter::new());
        let k = key(|k| k.rpm = Some(100));
        let limit = EndpointLimit { calls: 3, period: Period::Minute };
        let a = admit_one(&host, &limiter, &LimitsConfig::default(), Some(&k), Some(&limit)).unwrap();
        let h = header_map(a.headers());
        assert_eq!(
            (&h["x-ratelimit-limit-requests"], &h["x-ratelimit-remaining-requests"]),
            (&"3".parse::<HeaderValue>().unwrap(), &"2".parse::<HeaderValue>().unwrap())
        );
    }

    #[test]
    fn no_limits_means_no_counters_and_no_kv_traffic() {
        let host = TestHost::new();
        let limiter = Rc::new(Limiter::new());
        let a = admit_one(&host, &limiter, &LimitsConfig::default(), Some(&key(|_| {})), None).unwrap();
        assert_eq!(a.mode(), "none");
        assert!(header_map(a.headers()).is_empty());
        block_on(a.release(100, 100).write(&host)).unwrap();
        assert!(host.inner.kv.borrow().is_empty());
        assert!(limiter.is_empty());
    }

    #[test]
    fn other_isolates_counts_are_seen_after_a_refresh() {
        let host = TestHost::new();
        at_minute_start(&host);
        let config = LimitsConfig::default();
        let k = key(|k| k.rpm = Some(4));
        let (a, b) = (Rc::new(Limiter::new()), Rc::new(Limiter::new()));
        // b has now read the counter.
        assert!(admit_one(&host, &b, &config, Some(&k), None).is_ok());
        // Three requests in flight together in a: the first to settle writes all three.
        let admitted: Vec<Admission> = (0..3).map(|_| admit_one(&host, &a, &config, Some(&k), None).unwrap()).collect();
        for adm in admitted {
            block_on(adm.release(0, 0).write(&host)).unwrap();
        }
        // b still trusts its memory (1 admitted) until REFRESH_MS has passed…
        assert!(admit_one(&host, &b, &config, Some(&k), None).is_ok());
        host.inner.advance(REFRESH_MS);
        // …then sees a's 3 (+ its own 2 pending): 5 >= 4.
        assert!(admit_one(&host, &b, &config, Some(&k), None).is_err());
    }

    #[test]
    fn a_stale_kv_read_never_undoes_this_isolates_counts() {
        let host = TestHost::new();
        at_minute_start(&host);
        let config = LimitsConfig::default();
        let k = key(|k| k.rpm = Some(10));
        let limiter = Rc::new(Limiter::new());
        for _ in 0..3 {
            let adm = admit_one(&host, &limiter, &config, Some(&k), None).unwrap();
            block_on(adm.release(0, 0).write(&host)).unwrap();
        }
        let w = Period::Minute.window(host.now_ms());
        let name = format!("rl:k_00aa:{}", w.id);
        // KV answers an old value (eventual consistency).
        host.inner.kv.borrow_mut().insert(name.clone(), br#"{"requests":1}"#.to_vec());
        host.inner.advance(REFRESH_MS);
        let adm = admit_one(&host, &limiter, &config, Some(&k), None).unwrap();
        assert_eq!(header_map(adm.headers())["x-ratelimit-remaining-requests"], "6");
        block_on(adm.release(0, 0).write(&host)).unwrap();
        let stored: Amounts = serde_json::from_slice(&host.inner.kv.borrow()[&name]).unwrap();
        assert_eq!(stored.requests, 4);
    }

    #[test]
    fn failed_writes_are_retried_by_the_next_flush() {
        struct FailingPut(TestHost, Cell<bool>);
        impl Kv for FailingPut {
            async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
                self.0.get(key).await
            }
            async fn put(&self, key: &str, value: &[u8], ttl: Option<u64>) -> Result<()> {
                if self.1.get() {
                    return Err(GatewayError::internal(ErrorCode::KvError, "KV operation failed: boom"));
                }
                self.0.put(key, value, ttl).await
            }
            async fn delete(&self, key: &str) -> Result<()> {
                self.0.delete(key).await
            }
            async fn list(&self, prefix: &str) -> Result<Vec<String>> {
                self.0.list(prefix).await
            }
        }
        impl Clock for FailingPut {
            fn now_ms(&self) -> u64 {
                self.0.now_ms()
            }
            fn random_bytes(&self, buf: &mut [u8]) {
                self.0.random_bytes(buf)
            }
            async fn sleep(&self, ms: u64) {
                self.0.sleep(ms).await
            }
        }
        let host = TestHost::new();
        at_minute_start(&host);
        let kv = FailingPut(TestHost::new(), Cell::new(true));
        let limiter = Limiter::new();
        let name = "rl:k:m1".to_string();
        limiter.add_pending(&name, Amounts { requests: 2, ..Amounts::default() }, u64::MAX);
        assert!(block_on(limiter.flush(&kv, std::slice::from_ref(&name), SAME_KEY_WRITE_GAP_MS)).is_err());
        assert_eq!(limiter.estimate(&name).requests, 2, "kept in memory");
        kv.1.set(false);
        limiter.add_pending(&name, Amounts { requests: 1, ..Amounts::default() }, u64::MAX);
        block_on(limiter.flush(&kv, std::slice::from_ref(&name), SAME_KEY_WRITE_GAP_MS)).unwrap();
        let stored: Amounts = serde_json::from_slice(&kv.0.inner.kv.borrow()[&name]).unwrap();
        assert_eq!(stored.requests, 3);
        assert_eq!(limiter.estimate(&name).requests, 3);
    }

    /// Cloudflare KV refuses a second write to one key within a second (429): under steady
    /// traffic an isolate writes each counter at most once a second, and nothing is lost.
    #[test]
    fn a_counter_is_written_at_most_once_a_second() {
        let host = TestHost::new();
        at_minute_start(&host);
        let config = LimitsConfig::default();
        let k = key(|k| k.rpm = Some(1_000));
        let limiter = Rc::new(Limiter::new());
        for _ in 0..40 {
            // A request every 100 ms, each settling after its response.
            let adm = admit_one(&host, &limiter, &config, Some(&k), None).unwrap();
            block_on(adm.release(0, 0).write(&host)).unwrap();
            host.inner.advance(100);
        }
        let name = format!("rl:k_00aa:{}", Period::Minute.window(host.now_ms()).id);
        let times: Vec<u64> = host.puts.take().into_iter().filter(|(n, _)| *n == name).map(|(_, at)| at).collect();
        assert!(times.len() > 1, "written more than once: {times:?}");
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= SAME_KEY_WRITE_GAP_MS,
                "written {} ms after its last write",
                pair[1] - pair[0]
            );
        }
        let stored: Amounts = serde_json::from_slice(&host.inner.kv.borrow()[&name]).unwrap();
        assert_eq!(stored.requests, 40, "nothing lost");
    }

    #[test]
    fn windows() {
        let t = crate::gateway::util::time::days_from_civil(2024, 12, 31) as u64 * DAY_MS + 3_723_004; // 01:02:03.004
        assert_eq!(Period::Second.window(t).end_ms, t - 4 + 1000);
        assert_eq!(Period::Minute.window(t).end_ms, t - 3_004 + 60_000);
        assert_eq!(Period::Hour.window(t).end_ms, t - 123_004 + 3_600_000);
        assert_eq!(Period::Day.window(t), Window { id: "2024-12-31".into(), end_ms: t - 3_723_004 + DAY_MS });
        let month = Period::Month.window(t);
        assert_eq!(month.id, "2024-12");
        assert_eq!(month.end_ms, crate::gateway::util::time::days_from_civil(2025, 1, 1) as u64 * DAY_MS);
        assert_eq!(Period::Year.window(t).id, "2024");
        assert_eq!(Period::Year.window(t).end_ms, month.end_ms);
        assert_ne!(Period::Minute.window(t).id, Period::Minute.window(t + 60_000).id);
    }

    #[test]
    fn window_end_reads_every_counter_name() {
        let t = 1_735_689_600_000 - 3_723_004; // 2024-12-31 22:57:56.996 UTC
        for period in [Period::Second, Period::Minute, Period::Hour, Period::Day, Period::Month, Period::Year] {
            let w = period.window(t);
            assert_eq!(window_end(&format!("rl:k_1:usd:{}", w.id)), Some(w.end_ms), "{period:?}");
        }
        assert_eq!(window_end("rl:k_1:ep:chat"), None);
        assert_eq!(window_end("rl:k_1:m-1"), None);
    }

    #[test]
    fn apply_ops_is_all_or_nothing() {
        let ops = vec![
            CounterOp {
                name: "a".into(),
                add: Amounts { requests: 1, ..Amounts::default() },
                caps: Caps { requests: Some(2), ..Caps::default() },
                expires_at_ms: 0,
                floor: None,
            },
            CounterOp {
                name: "b".into(),
                add: Amounts::default(),
                caps: Caps { cost_nusd: Some(10), ..Caps::default() },
                expires_at_ms: 0,
                floor: None,
            },
        ];
        let mut current =
            vec![Amounts { requests: 1, ..Amounts::default() }, Amounts { cost_nusd: 10, ..Amounts::default() }];
        let reply = apply_ops(&mut current, &ops);
        assert!(!reply.admitted);
        assert_eq!(current[0].requests, 1, "nothing added when one op refuses");
        current[1].cost_nusd = 9;
        assert!(apply_ops(&mut current, &ops).admitted);
        assert_eq!(current[0].requests, 2);
        assert!(!apply_ops(&mut current, &ops).admitted, "2 of 2 used");
        // A cap of 0 blocks.
        assert!(crate::gateway::ports::counter::violates(
            Amounts::default(),
            Amounts::default(),
            Caps { requests: Some(0), ..Caps::default() }
        ));
        // Wire shape for the Durable Object.
        let wire = serde_json::to_value(&ops[1]).unwrap();
        assert_eq!(wire["caps"]["cost_nusd"], 10);
        let back: CounterOp = serde_json::from_value(wire).unwrap();
        assert_eq!(back, ops[1]);
    }

    #[test]
    fn config_checks() {
        let mut issues = Issues::default();
        let config = check_limits(
            "limits",
            &json!({"mode": "exact", "tenants": {"acme": {"budget_usd": 50, "budget_period": "day"}}}),
            &mut issues,
        )
        .unwrap();
        assert_eq!(config.mode, LimitsMode::Exact);
        assert_eq!(config.tenants["acme"], TenantLimits { budget_usd: 50.0, budget_period: BudgetPeriod::Day });

        let mut issues = Issues::default();
        let bad = json!({"mode": "exakt", "tenants": {"a b": {"budget_usd": 1}, "t": {"budget_usd": -1, "budget_periode": "day"}, "u": {}}, "x": 1});
        assert!(check_limits("limits", &bad, &mut issues).is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"limits.mode: unknown limits mode \"exakt\" (did you mean \"exact\"?)".to_string()),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.starts_with("limits.tenants.a b: a tenant name")), "{text:?}");
        assert!(text.contains(&"limits.tenants.t.budget_usd: must be a number >= 0 (USD)".to_string()), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("limits.tenants.t.budget_periode: unknown tenant limits field \"budget_periode\" (did you mean \"budget_period\"?)")), "{text:?}");
        assert!(text.contains(&"limits.tenants.u.budget_usd: is required".to_string()), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("limits.x: unknown limits field")), "{text:?}");

        let mut issues = Issues::default();
        let limit = check_endpoint_limit(
            "endpoints[0].limit",
            &json!({"calls": 10, "renewal_period": "minute", "key": "x"}),
            &mut issues,
        );
        assert_eq!(limit, Some(EndpointLimit { calls: 10, period: Period::Minute }));
        let mut issues = Issues::default();
        assert!(check_endpoint_limit(
            "e.limit",
            &json!({"calls": 0, "renewal_period": "minit", "cals": 1}),
            &mut issues
        )
        .is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"e.limit.calls: must be a whole number >= 1".to_string()), "{text:?}");
        assert!(
            text.contains(
                &"e.limit.renewal_period: unknown renewal period \"minit\" (did you mean \"minute\"?)".to_string()
            ),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("e.limit.cals: unknown limit field \"cals\" (did you mean \"calls\"?)")),
            "{text:?}"
        );
        assert_eq!(
            EndpointLimit::from_value(&json!({"calls": 5, "renewal_period": "day"})),
            Some(EndpointLimit { calls: 5, period: Period::Day })
        );
        assert_eq!(EndpointLimit::from_value(&json!("5/minute")), None);
    }

    #[test]
    fn formatting() {
        assert_eq!(duration_string(250), "250ms");
        assert_eq!(duration_string(1000), "1s");
        assert_eq!(duration_string(6_500), "7s");
        assert_eq!(duration_string(360_000), "6m0s");
        assert_eq!(duration_string(3_723_000), "1h2m3s");
        assert_eq!(usd(1_500_000_000), "$1.50");
        assert_eq!(usd(400_000), "$0.0004");
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(123), "$0.000001");
    }
}
