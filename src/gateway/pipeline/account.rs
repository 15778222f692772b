//! The last phase, after the response is out: cache fill, usage and cost accounting, the log
//! line, and observability (request tallies for `/admin/metrics`, the OpenTelemetry span and
//! metrics). The pipeline hands it to the host as data (`Deferred`); each host decides when it
//! runs (Cloudflare: `waitUntil`; Spin: after the response body is written).

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::gateway::dialect::responses::{Keep, Storing};
use crate::gateway::features::ledger::{self, TallyLine};
use crate::gateway::features::telemetry::tally::{Counts, SeriesKey};
use crate::gateway::features::telemetry::{
    RequestFacts, SpanContext, TallyBook, Telemetry, TelemetryConfig, TraceParent,
};
use crate::gateway::features::usage::{charged_usage, Accounting, Closing, Outcome};
use crate::gateway::features::{cache, housekeeping};
use crate::gateway::pipeline::log::LogRecord;
use crate::gateway::pipeline::stream::Captured;
use crate::gateway::pipeline::stream::StreamSummary;
use crate::gateway::ports::Ports;
use crate::gateway::types::{Operation, Usage};
use crate::gateway::util::time::days_of;
use crate::gateway::wire::openai::{openai_usage, StreamAnswer};

/// The tenant label of keyless calls to public endpoints (`context::PUBLIC_TENANT`, which this
/// module cannot name without an import cycle; a test keeps the two equal).
pub const PUBLIC_TENANT: &str = "public";

/// After-response work (the Background port as data): accounting and the log line.
pub struct Deferred {
    pub log: LogRecord,
    pub pending: Pending,
    pub audit: Option<String>,
    pub observed: Observed,
}

/// Work a request leaves for after its response: filled in by the phases as they run.
#[derive(Default)]
pub struct Pending {
    pub accounting: Option<Accounting>,
    /// A deterministic answer to store: (KV key, encoded entry, TTL seconds), in KV and the
    /// edge cache.
    pub cache_fill: Option<(String, Vec<u8>, u64)>,
    /// A KV hit to copy into the edge cache: (key, encoded entry, edge TTL seconds).
    pub edge_fill: Option<(String, Vec<u8>, u64)>,
    /// A Responses API response to store (once it is known, for streams at their end).
    pub keep: Option<Keep>,
    /// A deterministic streamed answer to store once its stream completed: (KV key, the entry
    /// without its body, the stream's OpenAI chunks as the pump captured them).
    pub cache_stream: Option<(String, cache::Entry, Captured)>,
}

/// What observability needs beyond the log line, gathered as the request runs.
#[derive(Default)]
pub struct Observed {
    /// The client's `traceparent` (and `tracestate`), when valid.
    pub parent: Option<TraceParent>,
    /// The request's span: set once the config is known and has `telemetry`.
    pub span: Option<SpanContext>,
    pub config: Option<Arc<TelemetryConfig>>,
    /// The provider-side model and the operation, once the endpoint is resolved.
    pub model: Option<String>,
    pub operation: Option<Operation>,
    /// The isolate's tallies and telemetry batch (`None`: nothing to record, e.g. admin calls).
    pub books: Option<(Rc<TallyBook>, Rc<Telemetry>)>,
}

/// The part of the after-response work that must not hold up a response even where the host
/// runs the rest before sending (Spin, buffered answers): writing the tallies, exporting
/// telemetry and, now and then on a store without TTLs, the housekeeping sweep (up to
/// `usage::MAX_KV_READS` operations after a listing of the whole store). `Deferred::complete`
/// runs it itself.
#[derive(Default)]
pub struct Observe {
    tally: Option<(Rc<TallyBook>, i64)>,
    export: Option<(Rc<Telemetry>, Arc<TelemetryConfig>, u64)>,
    sweep: bool,
}

/// What failed after the response (never a secret), for the log.
#[derive(Debug, Default)]
pub struct Afterwards {
    pub telemetry_error: Option<String>,
    pub housekeeping_error: Option<String>,
}

impl Observe {
    /// Writes the tallies, waits for the request's telemetry to be exported (bounded; see
    /// `telemetry::batch`) and sweeps when it is this request's turn.
    pub async fn run<P: Ports>(self, ports: &P) -> Afterwards {
        let mut errors = Vec::new();
        if let Some((book, day)) = self.tally {
            if let Err(e) = book.flush(ports, day).await {
                errors.push(format!("tallies: {}", e.message));
            }
        }
        if let Some((telemetry, config, seq)) = self.export {
            // Boxed: an export's future (two OTLP posts, joined) is ~10 KB, most of the
            // after-response future's size, and runs on few requests; inline, every request's
            // future would carry (and copy) it.
            if let Some(e) = Box::pin(telemetry.flush(ports, &config, seq)).await {
                errors.push(e);
            }
        }
        let housekeeping_error = if self.sweep {
            housekeeping::sweep(ports).await.err().map(|e| ["housekeeping: ", &e.message].concat())
        } else {
            None
        };
        Afterwards { telemetry_error: (!errors.is_empty()).then(|| errors.join("; ")), housekeeping_error }
    }
}

impl Deferred {
    /// Ends the request's accounting in the isolate's memory, synchronously: its usage is
    /// booked and its limit counters settled (`Accounting::close`), so the isolate's next
    /// request is admitted against the settled amounts however late the host runs the writes
    /// (Cloudflare lets a whole answer go out first, a timer turn in which the client may
    /// already send its next request). `stream` is the pump's summary when the body was
    /// streamed — taken when the stream ended or the client went away, so partial usage is
    /// still counted.
    pub fn close<P: Ports>(mut self, ports: &P, stream: Option<StreamSummary>) -> Closed {
        if self.audit.is_some() {
            return Closed { deferred: self, stream, closing: None, stored: None };
        }
        if let Some(summary) = &stream {
            // A stream without the origin's final usage (cut, stopped, left by the client, or
            // an origin that ignores `include_usage`) is charged at least the gateway's count.
            let charged = charged_usage(summary.usage, summary.estimated, summary.completed);
            self.log.set_usage(Some(charged).filter(|u| u.total() > 0));
            self.log.stream_completed = Some(summary.completed);
            self.log.stream_stopped = summary.stopped;
            if let Some(mcp) = self.log.mcp.as_mut() {
                mcp.finish_stream(summary.mcp.unwrap_or_default(), ports.now_ms());
            }
        }
        let closing = self.pending.accounting.take().map(|accounting| {
            let log = &self.log;
            let usage = match (log.prompt_tokens, log.completion_tokens) {
                (None, None) => None,
                (p, c) => Some(Usage { prompt_tokens: p.unwrap_or(0), completion_tokens: c.unwrap_or(0) }),
            };
            let cache_hit = log.cache == Some(cache::Status::Hit.as_str());
            // An MCP tool call counts its own outcome (a refused call is an HTTP 200).
            let (status, latency_ms) = match &log.mcp {
                Some(mcp) => (mcp.usage_status(), mcp.latency_ms),
                None => (log.status, log.latency_ms),
            };
            accounting.close(ports, Outcome { usage, status, latency_ms, cache_hit })
        });
        // A stored response is the isolate's to answer from now, its KV write still to come.
        let stored = self.pending.keep.take().and_then(|keep| keep.close(ports.now_ms()));
        Closed { deferred: self, stream, closing, stored }
    }

    /// `close`, then `Closed::complete`. (Not an `async fn`: one would hold `self` beside the
    /// inner future for its whole life, a second copy of the request's state to build and move.)
    pub fn complete<'a, P: Ports>(
        self,
        ports: &'a P,
        stream: Option<StreamSummary>,
    ) -> impl Future<Output = String> + 'a {
        self.close(ports, stream).complete(ports)
    }

    /// `close`, then `Closed::settle`.
    pub fn settle<'a, P: Ports>(
        self,
        ports: &'a P,
        stream: Option<StreamSummary>,
    ) -> impl Future<Output = (String, Observe)> + 'a {
        self.close(ports, stream).settle(ports)
    }
}

/// The after-response work once the request's accounting is closed in memory
/// (`Deferred::close`): the writes are left.
pub struct Closed {
    deferred: Deferred,
    stream: Option<StreamSummary>,
    closing: Option<Closing>,
    /// A Responses API response to write.
    stored: Option<Storing>,
}

impl Closed {
    /// Runs the writes once the response is out and returns the structured log line for the
    /// host to emit.
    pub async fn complete<P: Ports>(mut self, ports: &P) -> String {
        let Some(observe) = self.write(ports).await else { return self.into_line() };
        let afterwards = observe.run(ports).await;
        let log = &mut self.deferred.log;
        if let Some(e) = afterwards.telemetry_error {
            add_error(&mut log.telemetry_error, e);
        }
        if let Some(e) = afterwards.housekeeping_error {
            log.detail.get_or_insert(e);
        }
        log.to_json()
    }

    /// `complete` without the observability writes: for a host that accounts before sending
    /// the response. It returns the log line now and the rest to run once the response is out.
    pub async fn settle<P: Ports>(mut self, ports: &P) -> (String, Observe) {
        let observe = self.write(ports).await.unwrap_or_default();
        (self.into_line(), observe)
    }

    /// The log line, or an admin call's audit line.
    fn into_line(self) -> String {
        match self.deferred.audit {
            Some(audit) => audit,
            None => self.deferred.log.to_json(),
        }
    }

    /// The cache fill and the accounting writes; records the request into the isolate's
    /// tallies and telemetry batch (synchronously). `None` for an admin call (its audit line
    /// is the log). Works in place (`&mut self`): the request's state is held once.
    async fn write<P: Ports>(&mut self, ports: &P) -> Option<Observe> {
        if self.deferred.audit.is_some() {
            return None;
        }
        let Deferred { log, pending, observed, .. } = &mut self.deferred;
        if let Some((key, entry, ttl)) = pending.cache_fill.take() {
            if let Err(e) = ports.put(&key, &entry, Some(ttl)).await {
                log.cache_error = Some(e.code);
            }
            pending.edge_fill = Some((key, entry, cache::edge_ttl_secs(ttl)));
        }
        if let Some((key, entry, ttl)) = pending.edge_fill.take().filter(|(_, _, ttl)| *ttl > 0) {
            ports.edge_put(&key, &entry, ttl).await;
        }
        if let (Some((key, entry, captured)), Some(summary)) = (pending.cache_stream.take(), self.stream) {
            let answer = captured.borrow_mut().take();
            let entry = answer.filter(|_| summary.completed).and_then(|a| streamed_entry(entry, a, summary.usage));
            if let Some(entry) = entry {
                let bytes = entry.encode();
                if let Err(e) = ports.put(&key, &bytes, Some(entry.ttl_secs)).await {
                    log.cache_error = Some(e.code);
                }
                ports.edge_put(&key, &bytes, cache::edge_ttl_secs(entry.ttl_secs)).await;
            }
        }
        if let Some(stored) = self.stored.take().filter(|s| !s.deleted(ports.now_ms())) {
            if let Err(e) = ports.put(&stored.key, &stored.record, Some(stored.ttl_secs)).await {
                log.store_error = Some(e.code);
            }
        }
        let admitted = self.closing.is_some();
        let mut unbooked = None;
        if let Some(closing) = self.closing.take() {
            let (mut fields, event) = closing.write(ports).await;
            unbooked = event;
            log.tenant = fields.tenant.take();
            fields.key_id = None;
            log.accounting = Some(fields);
        }
        // A store without TTLs (Spin) is swept now and then (by `Observe`): expired counters,
        // finished usage shards, stale cache entries. Hosts that keep state have TTLs and few
        // shards.
        let sweep = !ports.keeps_state() && {
            let mut roll = [0u8; 1];
            ports.random_bytes(&mut roll);
            roll[0] % housekeeping::SWEEP_ONE_IN == 0
        };
        let end_ms = if log.stream_completed.is_some() { ports.now_ms() } else { log.ts + log.latency_ms };
        let (mut observe, tally) = record(log, observed, admitted, end_ms, ports);
        if unbooked.is_some() || tally.is_some() {
            if let Err(e) = ledger::write(ports, unbooked.as_ref(), tally.as_ref()).await {
                let slot = match log.accounting.as_mut() {
                    Some(fields) => &mut fields.accounting_error,
                    None => &mut log.telemetry_error,
                };
                add_error(slot, ["ledger: ", &e.message].concat());
            }
        }
        observe.sweep = sweep;
        Some(observe)
    }
}

/// Adds `error` to a log field of errors (`"; "` between them).
fn add_error(errors: &mut Option<String>, error: String) {
    *errors = Some(match errors.take() {
        Some(before) => [before, error].join("; "),
        None => error,
    });
}

/// A completed stream's answer as a cache entry (`None` if the stream did not finish the
/// answer), with the origin's usage (`usage`: as the pump saw it, when the client's stream hid
/// the usage chunk).
fn streamed_entry(mut entry: cache::Entry, answer: StreamAnswer, usage: Option<Usage>) -> Option<cache::Entry> {
    let (mut answer, complete) = answer.finish(entry.op);
    if !complete {
        return None;
    }
    let usage = answer.get("usage").and_then(openai_usage).or(usage);
    if let (Some(u), true) = (usage, answer.get("usage").is_none_or(serde_json::Value::is_null)) {
        answer["usage"] = serde_json::json!({"prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens, "total_tokens": u.total()});
    }
    entry.usage = usage;
    entry.body = crate::gateway::wire::json::json_body(&answer);
    Some(entry)
}

/// Records the request into the isolate's tallies (model calls and errors) and telemetry;
/// where the host keeps no state, the tally series is returned instead, for the request's
/// ledger entry.
fn record<P: Ports>(
    log: &LogRecord,
    observed: &Observed,
    admitted: bool,
    end_ms: u64,
    ports: &P,
) -> (Observe, Option<TallyLine>) {
    let Some((tally, telemetry)) = &observed.books else { return (Observe::default(), None) };
    let tenant = match (&log.tenant, admitted) {
        (Some(t), _) => Some(t.as_str()),
        (None, true) => Some(PUBLIC_TENANT),
        (None, false) => None,
    };
    let cost_usd = log.accounting.as_ref().and_then(|a| a.cost_usd);
    let series = (log.endpoint.is_some() || log.status >= 400).then(|| {
        let key = SeriesKey {
            endpoint: log.endpoint.clone().unwrap_or_default(),
            tenant: tenant.unwrap_or_default().to_string(),
            status: log.status,
            code: log.error.map(|e| e.as_str().to_string()).unwrap_or_default(),
        };
        let counts = Counts {
            requests: 1,
            prompt_tokens: log.prompt_tokens.unwrap_or(0),
            completion_tokens: log.completion_tokens.unwrap_or(0),
            cost_nusd: cost_usd.map_or(0, |usd| (usd * 1e9).round() as u64),
            cache_hits: u64::from(log.cache == Some(cache::Status::Hit.as_str())),
            latency_ms: log.latency_ms,
        };
        (key, counts)
    });
    let (tally, line) = match series {
        Some((key, counts)) if ports.keeps_state() => {
            (Some((tally.clone(), tally.record(ports, log.ts, key, &counts))), None)
        }
        Some((key, counts)) => (None, Some(TallyLine { day: days_of(log.ts), key, counts })),
        None => (None, None),
    };
    let export = observed.config.as_ref().map(|config| {
        let facts = RequestFacts {
            request_id: &log.request_id,
            method: &log.method,
            path: &log.path,
            status: log.status,
            error: log.error.map(|e| e.as_str()),
            start_ms: log.ts,
            end_ms,
            endpoint: log.endpoint.as_deref(),
            route: log.route.as_deref(),
            provider: log.provider,
            model: observed.model.as_deref(),
            operation: observed.operation,
            input_tokens: log.prompt_tokens,
            output_tokens: log.completion_tokens,
            cost_usd,
            cache: log.cache,
            stream: log.stream,
            tenant,
            key_id: log.key_id.as_deref(),
            region: log.region.as_deref(),
            origin: log.origin.as_deref(),
            template: log.template.as_deref(),
            attempts: log.attempts.iter().map(|a| (a.origin.as_str(), a.outcome.as_str(), a.at_ms)).collect(),
        };
        let seq = telemetry.record(ports, &facts, observed.span.as_ref());
        (telemetry.clone(), config.clone(), seq)
    });
    (Observe { tally, export, sweep: false }, line)
}
