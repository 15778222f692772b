//! Usage and cost accounting (DESIGN.md §2 step 11): after each response, the request's
//! tokens, cost, cache flag, latency and status are added to per-key and per-tenant daily
//! aggregates in KV and returned as fields for the structured log line.
//!
//! # Nothing lost, nothing double-counted
//!
//! KV has no atomic increment, so a read-modify-write shared by many writers loses updates.
//! Aggregates are therefore **sharded by writer**: each isolate (Cloudflare) or component
//! instance (Spin) picks a random shard id on first use and is the *only* writer of
//!
//! * `usage:<key id>:<yyyy-mm-dd>:<shard>` (`usage:public:...` for requests without a key)
//! * `usage:tenant:<tenant>:<yyyy-mm-dd>:<shard>`
//!
//! It keeps each shard's running total in memory and writes the whole total (a blind `put`,
//! no read): a write can never lose another writer's increments because there is no other
//! writer, and rewriting a total is idempotent, so a retried write never double-counts. Writes
//! of one shard are serialized inside the isolate (one in flight; increments that arrive
//! meanwhile are merged and written by the next round), so an older total never overwrites a
//! newer one. [`query`] sums the shards. Caveats: a write that fails is retried only when the
//! next request of that shard flushes (logged in `accounting_error` until then); an isolate
//! evicted between a response and its `waitUntil` write loses that last delta; Cloudflare
//! `list` and reads are eventually consistent (up to ~60 s), so a query may briefly lag; on
//! Spin every request is a fresh instance, so a request's usage is written as part of its one
//! ledger entry (`features::ledger`), whose folds write shards of their own, and Spin's `list`
//! reads every key of the store. So a day's final shards are compacted into one
//! entry (`<subject>:<date>:compacted`, under a KV lock; [`compact_day`]): by the usage query
//! as it reads (days before yesterday everywhere, any day on Spin, at most [`MAX_KV_READS`]
//! reads per call), and on Spin by the housekeeping sweep (`features::housekeeping`).
//!
//! Days are UTC, by the request's start time. Costs are integers in nano-USD (1e-9 USD), so
//! sums are exact; the admin API shows `cost_usd`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::features::limits::{Admission, Reservation, Room, Settlement};
use crate::gateway::ports::lock::{locked, Locking};
use crate::gateway::ports::Counter;
use crate::gateway::ports::{Clock, Kv, Ports, SAME_KEY_WRITE_GAP_MS};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::util::map::FastMap;
use crate::gateway::util::time::{day_string, days_of, parse_day};
use crate::gateway::wire::json::write_counters;

pub const USAGE_PREFIX: &str = "usage:";
/// Usage shards are kept this long (where the host has TTLs).
pub const KEEP_SECS: u64 = 400 * 86_400;
/// Longest range one usage query may cover.
pub const MAX_QUERY_DAYS: i64 = 366;

// ---------------------------------------------------------------------------------------------
// Prices

/// USD per million tokens for one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_1m: f64,
    #[serde(default)]
    pub output_per_1m: f64,
}

impl Price {
    /// Cost in nano-USD: tokens × USD per 1M tokens × 1000.
    pub fn cost_nusd(&self, usage: Usage) -> u64 {
        let nusd = usage.prompt_tokens as f64 * self.input_per_1m * 1000.0
            + usage.completion_tokens as f64 * self.output_per_1m * 1000.0;
        if nusd.is_finite() && nusd > 0.0 {
            nusd.round().min(u64::MAX as f64) as u64
        } else {
            0
        }
    }
}

/// The config's price table: `"<provider>/<model>"` (or just `"<model>"`) → [`Price`], where
/// model is the provider-side model name (`model.name` of the endpoint). `"*"` is the price of
/// every model not listed (so USD budgets hold on every endpoint).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(pub FastMap<String, Price>);

/// The entry of `prices` that applies to unlisted models.
pub const DEFAULT_PRICE: &str = "*";

impl Prices {
    /// `provider/model` first, then `model` alone, then the `"*"` default.
    pub fn get(&self, provider: &str, model: &str) -> Option<Price> {
        self.0
            .get(&[provider, "/", model].concat())
            .or_else(|| self.0.get(model))
            .or_else(|| self.0.get(DEFAULT_PRICE))
            .copied()
    }
}

/// The 403 for a request a USD budget applies to, on an endpoint whose model has no price:
/// the budget could not be enforced, so it is refused rather than served for free.
pub fn unpriced(endpoint: &str, model: &str) -> GatewayError {
    GatewayError::forbidden(
        ErrorCode::UnpricedModel,
        format!(
            "a USD budget applies to this API key, but endpoint \"{endpoint}\" (model \"{}\") has no price in the \
             gateway's config, so the budget cannot be enforced; the operator must add one to `prices` (or a \
             \"*\" default)",
            crate::gateway::util::text::truncate(model, 64)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Estimates and reservations

/// The gateway's estimate of a request's prompt tokens: the bytes of every string in it over
/// three (above the ~4 bytes per token of English text, so reservations err high), plus 4 per
/// message of framing. Used for reservations and when an origin reports no usage.
pub fn estimate_prompt_tokens(body: &Map<String, Value>) -> u64 {
    let text: u64 = ["messages", "prompt", "input", "system", "tools", "functions", "documents"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(|v| edge_scan::tree::string_bytes(v, "model"))
        .sum();
    let messages = body.get("messages").and_then(Value::as_array).map_or(0, Vec::len) as u64;
    text.div_ceil(3).saturating_add(messages.saturating_mul(4)).saturating_add(1)
}

/// A request's worst case, reserved against its token and USD limits: the prompt estimate
/// plus `max_tokens` (× `n` choices; `default_max_tokens` when it sends none) of output, at
/// `price`. A stream may be granted less (down to its prompt and one token of output) and is
/// stopped at what it was granted; a buffered request must fit whole.
pub fn reservation(
    op: Operation,
    body: &Map<String, Value>,
    stream: bool,
    price: Option<Price>,
    prompt_estimate: u64,
    default_max_tokens: u64,
) -> Reservation {
    let output = match op {
        Operation::Chat | Operation::Completions => {
            let max = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(default_max_tokens);
            let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 128);
            max.saturating_mul(n)
        }
        Operation::Embeddings | Operation::Predict => 0,
    };
    let cost = |completion_tokens: u64| {
        price.map_or(0, |p| p.cost_nusd(Usage { prompt_tokens: prompt_estimate, completion_tokens }))
    };
    let streams = stream && matches!(op, Operation::Chat | Operation::Completions);
    Reservation {
        tokens: prompt_estimate.saturating_add(output),
        cost_nusd: cost(output),
        floor: streams.then(|| (prompt_estimate.saturating_add(1), cost(1))),
    }
}

/// What a request is charged. A completed stream (or buffered answer) whose origin reported
/// its usage is charged that; otherwise — the origin reported none, or the stream was cut,
/// stopped, or left by its client — at least the gateway's own count (`estimated`: the prompt
/// estimate and the text seen), per field the larger of the two. Disconnecting right after the
/// first chunk therefore still pays for the prompt.
pub fn charged_usage(reported: Option<Usage>, estimated: Usage, completed: bool) -> Usage {
    match reported {
        Some(r) if completed && r.prompt_tokens > 0 => r,
        _ => {
            let r = reported.unwrap_or_default();
            Usage {
                prompt_tokens: r.prompt_tokens.max(estimated.prompt_tokens),
                completion_tokens: r.completion_tokens.max(estimated.completion_tokens),
            }
        }
    }
}

/// Checks the top-level `prices` field:
/// `{"openai/gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6}, ...}`.
pub fn check_prices(path: &str, value: &Value, issues: &mut Issues) -> Option<Prices> {
    let Value::Object(map) = value else {
        issues.push(path, "must be an object mapping \"provider/model\" to {input_per_1m, output_per_1m}");
        return None;
    };
    let before = issues.0.len();
    let mut prices = FastMap::default();
    for (name, entry) in map {
        let at = format!("{path}.{name}");
        if name.is_empty() || name.len() > 200 {
            issues.push(&at, "a price name must be \"provider/model\" or \"model\" (1-200 chars)");
            continue;
        }
        let Value::Object(fields) = entry else {
            issues.push(&at, "must be an object: {input_per_1m, output_per_1m}");
            continue;
        };
        for field in fields.keys() {
            if !["input_per_1m", "output_per_1m"].contains(&field.as_str()) {
                issues.unknown(format!("{at}.{field}"), "price field", field, &["input_per_1m", "output_per_1m"]);
            }
        }
        let mut number = |field: &str, required: bool| match fields.get(field) {
            None if !required => Some(0.0),
            None => {
                issues.push(format!("{at}.{field}"), "is required (USD per million tokens)");
                None
            }
            Some(v) => match v.as_f64().filter(|n| n.is_finite() && *n >= 0.0) {
                Some(n) => Some(n),
                None => {
                    issues.push(format!("{at}.{field}"), "must be a number >= 0 (USD per million tokens)");
                    None
                }
            },
        };
        let input = number("input_per_1m", true);
        let output = number("output_per_1m", false);
        if let (Some(input_per_1m), Some(output_per_1m)) = (input, output) {
            prices.insert(name.clone(), Price { input_per_1m, output_per_1m });
        }
    }
    (issues.0.len() == before).then_some(Prices(prices))
}

// ---------------------------------------------------------------------------------------------
// Aggregates

/// One day's usage for one key or tenant (one shard, or the sum of shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DayUsage {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_nusd: u64,
    pub cache_hits: u64,
    /// Responses with status >= 400.
    pub errors: u64,
    /// Requests whose model has no price in config (cost counted as 0).
    pub unpriced: u64,
    /// Sum of latencies, for the average.
    pub latency_ms: u64,
}

impl DayUsage {
    pub fn add(&mut self, other: &DayUsage) {
        // Saturating: origin-reported counts can be absurd, and a wrapped sum would undercount.
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.cost_nusd = self.cost_nusd.saturating_add(other.cost_nusd);
        self.cache_hits = self.cache_hits.saturating_add(other.cache_hits);
        self.errors = self.errors.saturating_add(other.errors);
        self.unpriced = self.unpriced.saturating_add(other.unpriced);
        self.latency_ms = self.latency_ms.saturating_add(other.latency_ms);
    }

    /// The stored form, `{"requests":n,...}` (read back by `Deserialize`).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        write_counters(
            &mut out,
            &[
                ("requests", self.requests),
                ("prompt_tokens", self.prompt_tokens),
                ("completion_tokens", self.completion_tokens),
                ("cost_nusd", self.cost_nusd),
                ("cache_hits", self.cache_hits),
                ("errors", self.errors),
                ("unpriced", self.unpriced),
                ("latency_ms", self.latency_ms),
            ],
        );
        out
    }

    /// The admin API's view.
    pub fn view(&self) -> Value {
        json!({
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens),
            "cost_usd": nusd_to_usd(self.cost_nusd),
            "cache_hits": self.cache_hits,
            "errors": self.errors,
            "unpriced_requests": self.unpriced,
            "latency_ms_avg": self.latency_ms.checked_div(self.requests).unwrap_or(0),
        })
    }
}

pub fn nusd_to_usd(nusd: u64) -> f64 {
    nusd as f64 / 1e9
}

/// What one finished request contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageEvent {
    /// `None`: an anonymous request to a public endpoint.
    pub key_id: Option<String>,
    pub tenant: Option<String>,
    /// Request start (UTC day of the aggregate).
    pub ts_ms: u64,
    pub usage: Usage,
    /// `None`: the model has no price.
    pub cost_nusd: Option<u64>,
    pub cache_hit: bool,
    pub latency_ms: u64,
    pub status: u16,
}

impl UsageEvent {
    /// What the event adds to its day.
    pub fn delta(&self) -> DayUsage {
        DayUsage {
            requests: 1,
            prompt_tokens: self.usage.prompt_tokens,
            completion_tokens: self.usage.completion_tokens,
            cost_nusd: self.cost_nusd.unwrap_or(0),
            cache_hits: u64::from(self.cache_hit),
            errors: u64::from(self.status >= 400),
            unpriced: u64::from(self.cost_nusd.is_none()),
            latency_ms: self.latency_ms,
        }
    }
}

struct Shard {
    total: DayUsage,
    day: i64,
    /// Bumped by every event; `written` is the version last stored.
    version: u64,
    written: u64,
    flushing: bool,
    /// When this isolate last stored the shard (0: never).
    written_at_ms: u64,
}

/// Shortest gap between two writes of one shard from one isolate: Cloudflare's one write per
/// second per key. Under load a burst of requests then shares one KV write instead of one each;
/// the writer waits the gap out inside its own after-response work (`waitUntil`), so no
/// increment is lost.
const MIN_WRITE_GAP_MS: u64 = SAME_KEY_WRITE_GAP_MS;

/// Per-isolate usage state: this isolate's shard totals. Kept in `Gateway` as `Rc<UsageBook>`.
#[derive(Default)]
pub struct UsageBook {
    shard_id: RefCell<Option<String>>,
    shards: RefCell<FastMap<String, Shard>>,
}

impl UsageBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event to this isolate's shard totals (synchronously) and returns the KV entries
    /// to flush.
    pub fn record(&self, clock: &impl Clock, event: &UsageEvent) -> Vec<String> {
        let mut shard_id = self.shard_id.borrow_mut();
        let shard: &str = shard_id.get_or_insert_with(|| clock.random_id());
        let day = days_of(event.ts_ms);
        let date = day_string(day);
        // `concat`, not `format!`: one exact allocation (twice per request).
        let owner = event.key_id.as_deref().unwrap_or("public");
        let mut names = vec![[USAGE_PREFIX, owner, ":", &date, ":", shard].concat()];
        if let Some(tenant) = &event.tenant {
            names.push([USAGE_PREFIX, "tenant:", tenant, ":", &date, ":", shard].concat());
        }
        let delta = event.delta();
        let mut shards = self.shards.borrow_mut();
        for name in &names {
            // Looked up before inserted: a shard is found on all but its day's first request,
            // which is the only one that needs its name copied.
            let entry = match shards.get_mut(name) {
                Some(entry) => entry,
                None => shards.entry(name.clone()).or_insert(Shard {
                    total: DayUsage::default(),
                    day,
                    version: 0,
                    written: 0,
                    flushing: false,
                    written_at_ms: 0,
                }),
            };
            entry.total.add(&delta);
            entry.version += 1;
        }
        names
    }

    /// Writes the named shards whose totals changed. One write per shard at a time; a caller
    /// that finds a write in flight leaves its increments to that writer's next round.
    pub async fn flush(&self, kv: &(impl Kv + Clock), names: &[String]) -> Result<()> {
        let mut result = Ok(());
        for name in names {
            if let Err(e) = self.flush_one(kv, name).await {
                result = Err(e);
            }
        }
        self.prune();
        result
    }

    async fn flush_one(&self, kv: &(impl Kv + Clock), name: &str) -> Result<()> {
        {
            let mut shards = self.shards.borrow_mut();
            let Some(shard) = shards.get_mut(name) else { return Ok(()) };
            if shard.flushing {
                return Ok(());
            }
            shard.flushing = true;
        }
        loop {
            let (last, dirty) =
                self.shards.borrow().get(name).map_or((0, false), |s| (s.written_at_ms, s.version != s.written));
            if !dirty {
                break;
            }
            let wait = (last + MIN_WRITE_GAP_MS).saturating_sub(kv.now_ms());
            if last != 0 && wait > 0 {
                kv.sleep(wait).await; // increments arriving meanwhile join this write
            }
            let snapshot = {
                let shards = self.shards.borrow();
                match shards.get(name) {
                    Some(s) if s.version != s.written => Some((s.total, s.version)),
                    _ => None,
                }
            };
            let Some((total, version)) = snapshot else { break };
            let bytes = total.to_json();
            let written = kv.put(name, &bytes, Some(KEEP_SECS)).await;
            let mut shards = self.shards.borrow_mut();
            let Some(shard) = shards.get_mut(name) else { break };
            match written {
                Ok(()) => {
                    shard.written = version;
                    shard.written_at_ms = kv.now_ms().max(1);
                }
                Err(e) => {
                    shard.flushing = false;
                    return Err(e);
                }
            }
        }
        if let Some(shard) = self.shards.borrow_mut().get_mut(name) {
            shard.flushing = false;
        }
        Ok(())
    }

    /// Forgets written shards of days before yesterday (their totals are final in KV).
    fn prune(&self) {
        let mut shards = self.shards.borrow_mut();
        let Some(newest) = shards.values().map(|s| s.day).max() else { return };
        shards.retain(|_, s| s.flushing || s.version != s.written || s.day + 1 >= newest);
    }

    /// Shards held in memory (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.shards.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// After-response work

/// Everything needed after the response to account for one admitted request. Built in the
/// pipeline once the key is authenticated, limits admitted and the endpoint resolved; carried
/// in `Deferred`; closed by [`Accounting::close`].
pub struct Accounting {
    book: Rc<UsageBook>,
    key_id: Option<String>,
    tenant: Option<String>,
    price: Option<Price>,
    started_ms: u64,
    admission: Option<Admission>,
}

/// How the request ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// From the provider's response, or the stream's final usage; `None` counts 0 tokens.
    pub usage: Option<Usage>,
    pub status: u16,
    pub latency_ms: u64,
    pub cache_hit: bool,
}

/// The accounting fields of the structured log line (flatten into `LogRecord`). No secret:
/// the key appears only as its id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Written once by the log line itself (`LogRecord`), not again here.
    #[serde(skip)]
    pub prompt_tokens: u64,
    #[serde(skip)]
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `None` when the model has no price.
    pub cost_usd: Option<f64>,
    pub cache_hit: bool,
    /// How limits were counted: `kv`, `exact`, or `none` (no limit applied).
    pub limits: &'static str,
    /// Counters or usage that could not be written (KV error text; never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounting_error: Option<String>,
}

impl Accounting {
    /// `price`: `config.prices.get(provider, model)` for the endpoint that serves the request.
    pub fn new(
        book: &Rc<UsageBook>,
        key: Option<&KeyRecord>,
        price: Option<Price>,
        started_ms: u64,
        admission: Option<Admission>,
    ) -> Self {
        Accounting {
            book: book.clone(),
            key_id: key.map(|k| k.id.clone()),
            tenant: key.map(|k| k.tenant.clone()),
            price,
            started_ms,
            admission,
        }
    }

    /// The room the request had under its token and USD limits (for a stream's cap).
    pub fn room(&self) -> Option<&Room> {
        self.admission.as_ref().map(Admission::room)
    }

    /// The endpoint's price, if it has one.
    pub fn price(&self) -> Option<Price> {
        self.price
    }

    /// The `x-ratelimit-*` headers of the admission, for the response.
    pub fn apply_headers(&self, headers: &mut http::HeaderMap) {
        if let Some(admission) = &self.admission {
            admission.apply_headers(headers);
        }
    }

    /// Books the request's usage and settles its limit counters in the isolate's memory now
    /// (so the isolate's next request sees them, whenever the host runs the writes);
    /// `Closing::write` writes both. Where the host keeps no state (Spin), the usage is not
    /// booked but returned, for the request's one ledger entry (`features::ledger`).
    pub fn close<P: Ports>(self, ports: &P, outcome: Outcome) -> Closing {
        let usage = outcome.usage.unwrap_or_default();
        let cost = self.price.map(|p| p.cost_nusd(usage));
        let event = UsageEvent {
            key_id: self.key_id,
            tenant: self.tenant,
            ts_ms: self.started_ms,
            usage,
            cost_nusd: cost,
            cache_hit: outcome.cache_hit,
            latency_ms: outcome.latency_ms,
            status: outcome.status,
        };
        let booked = ports.keeps_state().then(|| self.book.record(ports, &event));
        let limits = self.admission.as_ref().map_or("none", Admission::mode);
        let settlement = self.admission.map(|a| a.release(usage.total(), cost.unwrap_or(0)));
        Closing { book: self.book, event, booked, settlement, limits }
    }
}

/// A closed request's accounting writes (`Accounting::close`).
#[must_use = "the usage and counters are not written until `write`"]
pub struct Closing {
    book: Rc<UsageBook>,
    event: UsageEvent,
    /// The shards the event was booked on (`None`: not booked, the host keeps no state).
    booked: Option<Vec<String>>,
    settlement: Option<Settlement>,
    limits: &'static str,
}

impl Closing {
    /// Writes the limit counters and the booked usage; returns the log fields, and the event
    /// where nothing booked it.
    pub async fn write<P: Ports + Counter>(self, ports: &P) -> (UsageLog, Option<UsageEvent>) {
        let Closing { book, event, booked, settlement, limits } = self;
        let mut errors = Vec::new();
        if let Some(settlement) = settlement {
            if let Err(e) = settlement.write(ports).await {
                errors.push(format!("limits: {}", e.message));
            }
        }
        if let Some(names) = &booked {
            if let Err(e) = book.flush(ports, names).await {
                errors.push(format!("usage: {}", e.message));
            }
        }
        let usage = event.usage;
        let (cost, cache_hit) = (event.cost_nusd, event.cache_hit);
        // The event is returned only where nothing booked it: else its names move to the log.
        let (key_id, tenant, unbooked) = match booked {
            Some(_) => (event.key_id, event.tenant, None),
            None => (event.key_id.clone(), event.tenant.clone(), Some(event)),
        };
        let log = UsageLog {
            key_id,
            tenant,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total(),
            cost_usd: cost.map(nusd_to_usd),
            cache_hit,
            limits,
            accounting_error: (!errors.is_empty()).then(|| errors.join("; ")),
        };
        (log, unbooked)
    }
}

// ---------------------------------------------------------------------------------------------
// Queries

/// Whose usage to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Key(&'a str),
    Tenant(&'a str),
}

impl Subject<'_> {
    /// What the names of its shards start with: `usage:<key id>:` (`usage:public:` for calls
    /// without a key), `usage:tenant:<tenant>:`.
    pub fn prefix(&self) -> String {
        match self {
            Subject::Key(id) => [USAGE_PREFIX, id, ":"].concat(),
            Subject::Tenant(t) => [USAGE_PREFIX, "tenant:", t, ":"].concat(),
        }
    }
}

/// Most KV reads (or deletes) one usage query or sweep makes: Cloudflare caps KV operations per
/// invocation.
pub const MAX_KV_READS: usize = 300;

/// The shard id of a day's compacted entry (shard ids are otherwise 16 hex digits).
pub const COMPACTED: &str = "compacted";

/// Whether the shards of `day` are final, so they can be folded into one entry: days before
/// yesterday everywhere (no isolate writes them any more), any day where every request is a
/// fresh instance that writes its shard once (Spin).
pub fn compactable<P: Clock + Counter>(ports: &P, day: i64) -> bool {
    !ports.keeps_state() || day + 2 <= days_of(ports.now_ms())
}

/// Sums the shards of `subject` for the UTC days `from..=to` (days since the epoch):
/// `{"days": [{"date", ...DayUsage view}], "total": {...}}`.
///
/// Bounded: one list and at most [`MAX_KV_READS`] shard reads per call. Days whose shards are
/// final are compacted into one entry as they are read; when a range holds more shards than
/// one call may read, the answer says `"partial": true` (its totals then miss the days it did
/// not reach): call again — each call folds part of the backlog, and the next ones read less.
pub async fn query<P: Kv + Clock + Counter>(ports: &P, subject: Subject<'_>, from: i64, to: i64) -> Result<Value> {
    if to < from || to - from >= MAX_QUERY_DAYS {
        return Err(GatewayError::bad_request(
            ErrorCode::InvalidRange,
            format!("`from` must not be after `to`, and a query covers at most {MAX_QUERY_DAYS} days"),
        ));
    }
    let prefix = subject.prefix();
    let mut by_day: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for name in ports.list(&prefix).await? {
        let Some((date, _shard)) = name.strip_prefix(&prefix).and_then(|rest| rest.split_once(':')) else { continue };
        let Some(day) = parse_day(date).filter(|d| (from..=to).contains(d)) else { continue };
        by_day.entry(day).or_default().push(name);
    }
    let mut budget = MAX_KV_READS;
    let mut partial = false;
    let mut days: BTreeMap<i64, DayUsage> = BTreeMap::new();
    for (day, names) in by_day {
        if names.len() > budget {
            partial = true;
            if budget > 0 && compactable(ports, day) {
                // Fold what this call may read; the next call finds fewer shards.
                let _ = compact_day(ports, &prefix, day, &names[..budget], Locking::Wait).await;
            }
            break;
        }
        budget -= names.len();
        if names.len() > 1 && compactable(ports, day) {
            if let Ok(Some(total)) = compact_day(ports, &prefix, day, &names, Locking::Wait).await {
                days.insert(day, total);
                continue;
            }
        }
        let usage = days.entry(day).or_default();
        for name in &names {
            if let Some(shard) = ports.get(name).await?.and_then(|b| serde_json::from_slice::<DayUsage>(&b).ok()) {
                usage.add(&shard);
            }
        }
    }
    let mut total = DayUsage::default();
    let list: Vec<Value> = days
        .iter()
        .map(|(day, usage)| {
            total.add(usage);
            let mut view = usage.view();
            view["date"] = json!(day_string(*day));
            view
        })
        .collect();
    let mut out = Map::new();
    match subject {
        Subject::Key(id) => out.insert("key".into(), json!(id)),
        Subject::Tenant(t) => out.insert("tenant".into(), json!(t)),
    };
    out.insert("from".into(), json!(day_string(from)));
    out.insert("to".into(), json!(day_string(to)));
    out.insert("days".into(), Value::Array(list));
    out.insert("total".into(), total.view());
    if partial {
        out.insert("partial".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// Folds `names` (shards of `day` under `prefix`) into the day's compacted entry and deletes
/// them, under a KV lock (two compactions of one day would count a shard twice); returns the
/// compacted entry's new total, or `None` when the lock was held and `locking` says not to
/// wait. Shards are re-read under the lock: one another compaction already folded is gone. (A
/// crash between the write and the deletes counts those shards twice at the next compaction:
/// usage reports, not limits, read these.)
pub async fn compact_day<P: Kv + Clock + Counter>(
    ports: &P,
    prefix: &str,
    day: i64,
    names: &[String],
    locking: Locking,
) -> Result<Option<DayUsage>> {
    let date = day_string(day);
    let scope = format!("usage-compact:{prefix}{date}");
    locked(ports, &scope, locking, || async {
        let compacted = format!("{prefix}{date}:{COMPACTED}");
        let read = |bytes: Option<Vec<u8>>| bytes.and_then(|b| serde_json::from_slice::<DayUsage>(&b).ok());
        let mut total = read(ports.get(&compacted).await?).unwrap_or_default();
        let mut folded = Vec::new();
        for name in names.iter().filter(|n| **n != compacted) {
            if let Some(shard) = read(ports.get(name).await?) {
                total.add(&shard);
                folded.push(name);
            }
        }
        if !folded.is_empty() {
            let bytes = total.to_json();
            ports.put(&compacted, &bytes, Some(KEEP_SECS)).await?;
            for name in folded {
                ports.delete(name).await?;
            }
        }
        Ok(total)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::UpstreamError;
    use crate::gateway::util::time::DAY_MS;
    use std::task::Poll;

    fn host() -> MemoryHost {
        MemoryHost::new(|_| Err(UpstreamError::Timeout))
    }

    /// The stored form reads back as written, every field and the largest counts included.
    #[test]
    fn a_stored_day_reads_back() {
        let day = DayUsage {
            requests: u64::MAX,
            prompt_tokens: 1,
            completion_tokens: 2,
            cost_nusd: 3,
            cache_hits: 4,
            errors: 5,
            unpriced: 6,
            latency_ms: u64::MAX - 1,
        };
        let bytes = day.to_json();
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap().as_object().unwrap().len(), 8);
        assert_eq!(serde_json::from_slice::<DayUsage>(&bytes).unwrap(), day);
        assert_eq!(serde_json::from_slice::<DayUsage>(&DayUsage::default().to_json()).unwrap(), DayUsage::default());
    }

    /// The test host's store, noting the time of every put; with `slow`, a put stays pending
    /// for one poll, so two flushes overlap.
    struct Watched<'a> {
        host: &'a MemoryHost,
        slow: bool,
        puts: RefCell<Vec<(String, u64)>>,
    }

    impl Kv for Watched<'_> {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.host.get(key).await
        }
        async fn put(&self, key: &str, value: &[u8], ttl: Option<u64>) -> Result<()> {
            self.puts.borrow_mut().push((key.to_string(), self.host.now_ms()));
            let mut pending = self.slow;
            std::future::poll_fn(|_| if std::mem::take(&mut pending) { Poll::Pending } else { Poll::Ready(()) }).await;
            self.host.put(key, value, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.host.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>> {
            self.host.list(prefix).await
        }
    }

    impl Clock for Watched<'_> {
        fn now_ms(&self) -> u64 {
            self.host.now_ms()
        }
        fn random_bytes(&self, buf: &mut [u8]) {
            self.host.random_bytes(buf)
        }
        async fn sleep(&self, ms: u64) {
            self.host.sleep(ms).await
        }
    }

    fn event(key: &str, prompt: u64, completion: u64, ts_ms: u64) -> UsageEvent {
        UsageEvent {
            key_id: Some(key.into()),
            tenant: Some("acme".into()),
            ts_ms,
            usage: Usage { prompt_tokens: prompt, completion_tokens: completion },
            cost_nusd: Some(prompt * 150 + completion * 600),
            cache_hit: prompt == 0,
            latency_ms: 10,
            status: if completion == 0 { 500 } else { 200 },
        }
    }

    /// L5: absurd origin-reported counts saturate instead of wrapping (or panicking).
    #[test]
    fn day_usage_saturates() {
        let mut day = DayUsage { prompt_tokens: u64::MAX, completion_tokens: u64::MAX, ..DayUsage::default() };
        day.add(&DayUsage { prompt_tokens: 5, completion_tokens: 5, requests: 1, ..DayUsage::default() });
        assert_eq!(day.prompt_tokens, u64::MAX);
        assert_eq!(day.view()["total_tokens"], u64::MAX);
    }

    #[test]
    fn prices_check_and_cost() {
        let mut issues = Issues::default();
        let prices = check_prices(
            "prices",
            &json!({"openai/gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6}, "embed-x": {"input_per_1m": 0.02}}),
            &mut issues,
        )
        .unwrap();
        assert!(issues.0.is_empty());
        let p = prices.get("openai", "gpt-4o-mini").unwrap();
        assert_eq!(p.cost_nusd(Usage { prompt_tokens: 2, completion_tokens: 3 }), 300 + 1800);
        assert_eq!(prices.get("azure", "embed-x").unwrap().output_per_1m, 0.0);
        assert_eq!(prices.get("openai", "gpt-4o"), None);
        // 1M tokens at $2.5 is exactly $2.5.
        let big = Price { input_per_1m: 2.5, output_per_1m: 10.0 };
        assert_eq!(big.cost_nusd(Usage { prompt_tokens: 1_000_000, completion_tokens: 0 }), 2_500_000_000);

        let mut issues = Issues::default();
        let bad = json!({"a": {"input_per_1m": -1}, "b": {"input": 1, "input_per_1m": 1}, "c": 3, "d": {}});
        assert!(check_prices("prices", &bad, &mut issues).is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"prices.a.input_per_1m: must be a number >= 0 (USD per million tokens)".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("prices.b.input: unknown price field \"input\" (expected one of")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.starts_with("prices.c: must be an object")), "{text:?}");
        assert!(text.contains(&"prices.d.input_per_1m: is required (USD per million tokens)".to_string()), "{text:?}");
        let mut issues = Issues::default();
        assert!(check_prices("prices", &json!([1]), &mut issues).is_none());
    }

    #[test]
    fn aggregates_equal_the_sum_of_events() {
        let host = host();
        let book = UsageBook::new();
        let now = host.now_ms();
        let events =
            [event("k_1", 5, 7, now), event("k_1", 3, 0, now), event("k_1", 0, 4, now), event("k_2", 11, 13, now)];
        for e in &events {
            let names = book.record(&host, e);
            block_on(book.flush(&host, &names)).unwrap();
        }
        let day = days_of(now);
        let k1 = block_on(query(&host, Subject::Key("k_1"), day, day)).unwrap();
        assert_eq!(k1["total"]["requests"], 3);
        assert_eq!(k1["total"]["prompt_tokens"], 8);
        assert_eq!(k1["total"]["completion_tokens"], 11);
        assert_eq!(k1["total"]["cache_hits"], 1);
        assert_eq!(k1["total"]["errors"], 1);
        assert_eq!(k1["days"][0]["date"], day_string(day));
        let tenant = block_on(query(&host, Subject::Tenant("acme"), day, day)).unwrap();
        assert_eq!(tenant["total"]["prompt_tokens"], 19);
        assert_eq!(tenant["total"]["completion_tokens"], 24);
        let expected_cost: u64 = events.iter().map(|e| e.cost_nusd.unwrap()).sum();
        assert_eq!(tenant["total"]["cost_usd"], json!(nusd_to_usd(expected_cost)));
        // Outside the range: nothing.
        let before = block_on(query(&host, Subject::Key("k_1"), day - 3, day - 1)).unwrap();
        assert_eq!(before["total"]["requests"], 0);
        assert!(block_on(query(&host, Subject::Key("k_1"), day, day - 1)).is_err());
        assert!(block_on(query(&host, Subject::Key("k_1"), day - 400, day)).is_err());
    }

    /// Several isolates (books) writing the same key's day never lose or double-count, however
    /// their writes interleave: each writes only its own shard.
    #[test]
    fn isolates_write_separate_shards() {
        let host = host();
        let books: Vec<UsageBook> = (0..3).map(|_| UsageBook::new()).collect();
        let now = host.now_ms();
        let mut expected = 0;
        for round in 0..4 {
            for (i, book) in books.iter().enumerate() {
                let prompt = (round * 3 + i) as u64 + 1;
                expected += prompt;
                let names = book.record(&host, &event("k_1", prompt, 1, now));
                if round % 2 == 0 {
                    block_on(book.flush(&host, &names)).unwrap(); // some rounds flush late
                }
            }
        }
        for book in &books {
            let names: Vec<String> = book.shards.borrow().keys().cloned().collect();
            block_on(book.flush(&host, &names)).unwrap();
        }
        let day = days_of(now);
        let total = block_on(query(&host, Subject::Key("k_1"), day, day)).unwrap()["total"].clone();
        assert_eq!(total["prompt_tokens"], expected);
        assert_eq!(total["requests"], 12);
        // A flush of an unchanged shard writes nothing new and changes nothing.
        let before = host.kv.borrow().clone();
        let names: Vec<String> = books[0].shards.borrow().keys().cloned().collect();
        block_on(books[0].flush(&host, &names)).unwrap();
        assert_eq!(*host.kv.borrow(), before);
    }

    /// A flush that finds a write in flight leaves its delta to that writer, which writes it in
    /// its next round: nothing is lost within an isolate.
    #[test]
    fn concurrent_flushes_in_one_isolate_merge() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Waker};

        let host = host();
        let kv = Watched { host: &host, slow: true, puts: RefCell::default() };
        let book = UsageBook::new();
        let now = host.now_ms();
        let names = book.record(&host, &event("k_1", 1, 1, now));
        let mut first = pin!(book.flush(&kv, &names));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(first.as_mut().poll(&mut cx).is_pending(), "first write in flight");
        let names2 = book.record(&host, &event("k_1", 10, 1, now));
        assert!(block_on(book.flush(&kv, &names2)).is_ok(), "returns at once: a write is in flight");
        while first.as_mut().poll(&mut cx).is_pending() {}
        let day = days_of(now);
        let total = block_on(query(&host, Subject::Key("k_1"), day, day)).unwrap()["total"].clone();
        assert_eq!(total["prompt_tokens"], 11);
        assert_eq!(total["requests"], 2);
    }

    #[test]
    fn a_burst_shares_one_write_per_gap() {
        let host = host();
        let book = UsageBook::new();
        let now = host.now_ms();
        let names = book.record(&host, &event("k_1", 1, 1, now));
        block_on(book.flush(&host, &names)).unwrap();
        let written_at = host.now_ms();
        for _ in 0..5 {
            book.record(&host, &event("k_1", 1, 1, now));
        }
        block_on(book.flush(&host, &names)).unwrap();
        assert!(host.now_ms() >= written_at + MIN_WRITE_GAP_MS, "the second write waited out the gap");
        let day = days_of(now);
        let total = block_on(query(&host, Subject::Key("k_1"), day, day)).unwrap()["total"].clone();
        assert_eq!(total["requests"], 6, "nothing lost");
        let after = host.now_ms();
        block_on(book.flush(&host, &names)).unwrap();
        assert_eq!(host.now_ms(), after, "nothing to write: no wait");
    }

    /// Cloudflare KV refuses a second write to one key within a second (429): under steady
    /// traffic an isolate's shard is written at most once a second, and nothing is lost.
    #[test]
    fn a_shard_is_written_at_most_once_a_second() {
        let host = host();
        let kv = Watched { host: &host, slow: false, puts: RefCell::default() };
        let book = UsageBook::new();
        let start = host.now_ms();
        for _ in 0..40 {
            // A request every 100 ms, each flushing after its response.
            let names = book.record(&host, &event("k_1", 1, 1, start));
            block_on(book.flush(&kv, &names)).unwrap();
            host.advance(100);
        }
        let mut writes: FastMap<String, Vec<u64>> = FastMap::default();
        for (name, at) in kv.puts.take() {
            writes.entry(name).or_default().push(at);
        }
        assert_eq!(writes.len(), 2, "the key's and the tenant's shard: {writes:?}");
        for (name, times) in &writes {
            assert!(times.len() > 1, "{name} was written more than once");
            for pair in times.windows(2) {
                assert!(pair[1] - pair[0] >= 1_000, "{name} written {} ms after its last write", pair[1] - pair[0]);
            }
        }
        let day = days_of(start);
        let total = block_on(query(&host, Subject::Key("k_1"), day, day)).unwrap()["total"].clone();
        assert_eq!(total["requests"], 40, "nothing lost");
    }

    #[test]
    fn old_days_are_pruned_once_written() {
        let host = host();
        let book = UsageBook::new();
        let now = host.now_ms();
        let names = book.record(&host, &event("k_1", 1, 1, now - 3 * DAY_MS));
        block_on(book.flush(&host, &names)).unwrap();
        let names = book.record(&host, &event("k_1", 1, 1, now));
        block_on(book.flush(&host, &names)).unwrap();
        assert_eq!(book.len(), 2, "today's key and tenant shards only");
    }
}
