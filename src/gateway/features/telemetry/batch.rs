//! The per-isolate batch and its export, after the response (Cloudflare: inside `waitUntil`;
//! Spin: once the response is written).
//!
//! Each request *records* synchronously — its span encoded into the queue (when sampled), its
//! numbers into the isolate's metrics — then waits in its own after-response work until that
//! record has gone out. One of the waiting requests at a time is the *leader*: it waits until
//! `EXPORT_GAP_MS` after the isolate's last export (requests finishing meanwhile join the
//! batch), then takes up to `MAX_BATCH` spans and all the metrics and sends them (one POST to
//! `/v1/traces`, one to `/v1/metrics`). The others sleep until that send is due and check
//! again; one whose span did not fit leads the next round. So an isolate sends at most one
//! batch per gap, a quiet isolate sends at once, and no record waits for a later request.
//!
//! Bounded everywhere: the queue holds at most `MAX_QUEUE` spans and `MAX_QUEUE_BYTES` (the
//! oldest are dropped and counted), an export is one attempt with `EXPORT_TIMEOUT_MS` (a failed
//! batch is dropped, never retried), and a request stops waiting after `MAX_WAIT_MS` (its
//! record stays queued for the next leader). Nothing here can fail or delay a response: it
//! all runs after the response, and errors come back as text for the log line.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;

use http::{header, HeaderValue, Method, Request};

use crate::gateway::features::telemetry::config::TelemetryConfig;
use crate::gateway::features::telemetry::context::SpanContext;
use crate::gateway::features::telemetry::metrics::Metrics;
use crate::gateway::features::telemetry::otlp::{self, Origin};
use crate::gateway::features::telemetry::span::{self, RequestFacts};
use crate::gateway::ports::{Clock, Ports, Secrets, UpstreamError};
use crate::gateway::util::join::join;

/// Shortest time between two exports of one isolate.
pub const EXPORT_GAP_MS: u64 = 1_000;
/// Spans per export (the OpenTelemetry SDKs' default `max_export_batch_size`).
pub const MAX_BATCH: usize = 512;
/// Spans an isolate holds at most (the SDKs' default `max_queue_size`).
pub const MAX_QUEUE: usize = 2_048;
/// Bytes of encoded spans an isolate holds at most.
pub const MAX_QUEUE_BYTES: usize = 4 << 20;
/// One export request (per signal) may take this long.
pub const EXPORT_TIMEOUT_MS: u64 = 5_000;
/// A request's after-response work waits this long at most for its record to go out: the gap,
/// one export round (its two posts go out together), a second to spare.
pub const MAX_WAIT_MS: u64 = EXPORT_GAP_MS + EXPORT_TIMEOUT_MS + 1_000;
/// A waiting request checks again at least this often while a send is in flight.
const POLL_MS: u64 = 50;

const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What this isolate has exported so far (diagnostics and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub exports: u64,
    pub spans_exported: u64,
    pub spans_dropped: u64,
    pub failed_exports: u64,
}

#[derive(Default)]
struct State {
    instance_id: String,
    /// Records taken so far (one per request).
    seq: u64,
    /// Every record up to this one is out (sent, or dropped).
    done_through: u64,
    spans: VecDeque<(u64, Vec<u8>)>,
    span_bytes: usize,
    metrics: Metrics,
    leading: bool,
    /// When the leader will send (for the others to sleep until).
    send_at_ms: u64,
    last_export_ms: u64,
    stats: Stats,
}

/// One isolate's telemetry batch. Kept in the isolate state as `Rc<Telemetry>`.
#[derive(Default)]
pub struct Telemetry {
    state: RefCell<State>,
}

/// Clears the leader flag however the leader's future ends (finished, or dropped by the host).
struct Leading<'a>(&'a Telemetry);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.state.borrow_mut().leading = false;
    }
}

enum Step {
    Done,
    Wait(u64),
    Lead(u64),
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a finished request: its span (when `span` is sampled) and its metrics.
    /// Synchronous and cheap; returns the ticket to `flush` with.
    pub fn record(&self, clock: &impl Clock, facts: &RequestFacts<'_>, span: Option<&SpanContext>) -> u64 {
        let encoded = span.filter(|s| s.sampled).map(|s| span::encode(facts, s));
        let mut state = self.state.borrow_mut();
        if state.instance_id.is_empty() {
            state.instance_id = clock.random_id();
        }
        state.seq += 1;
        let seq = state.seq;
        state.metrics.record(facts);
        if let Some(bytes) = encoded {
            state.span_bytes += bytes.len();
            state.spans.push_back((seq, bytes));
            while state.spans.len() > MAX_QUEUE || state.span_bytes > MAX_QUEUE_BYTES {
                let Some((_, old)) = state.spans.pop_front() else { break };
                state.span_bytes -= old.len();
                state.stats.spans_dropped += 1;
            }
        }
        seq
    }

    /// Waits until record `seq` is out, leading exports when it is this request's turn.
    /// Returns what went wrong in the exports this request led, for its log line.
    pub async fn flush<P: Ports>(&self, ports: &P, config: &TelemetryConfig, seq: u64) -> Option<String> {
        let deadline = ports.now_ms().saturating_add(MAX_WAIT_MS);
        let mut error = None;
        loop {
            let now = ports.now_ms();
            let step = {
                let mut s = self.state.borrow_mut();
                if s.done_through >= seq || now >= deadline {
                    Step::Done
                } else if s.leading {
                    Step::Wait(s.send_at_ms.saturating_sub(now).max(POLL_MS))
                } else {
                    let due = if s.last_export_ms == 0 { now } else { (s.last_export_ms + EXPORT_GAP_MS).max(now) };
                    s.leading = true;
                    s.send_at_ms = due;
                    Step::Lead(due - now)
                }
            };
            match step {
                Step::Done => return error,
                Step::Wait(ms) => ports.sleep(ms.min(deadline - now)).await,
                Step::Lead(ms) => {
                    let _leading = Leading(self);
                    if ms > 0 {
                        ports.sleep(ms).await;
                    }
                    if let Err(e) = self.export(ports, config).await {
                        error = Some(e);
                    }
                }
            }
        }
    }

    /// One export round: up to `MAX_BATCH` spans and the metrics window.
    async fn export<P: Ports>(&self, ports: &P, config: &TelemetryConfig) -> Result<(), String> {
        let now = ports.now_ms();
        let (spans, metrics, through, instance_id) = {
            let mut s = self.state.borrow_mut();
            let take = s.spans.len().min(MAX_BATCH);
            let spans: Vec<(u64, Vec<u8>)> = s.spans.drain(..take).collect();
            s.span_bytes -= spans.iter().map(|(_, b)| b.len()).sum::<usize>();
            let through = match s.spans.front() {
                Some((next, _)) => next - 1,
                None => s.seq,
            };
            let metrics = s.metrics.take(now);
            (spans, metrics, through, s.instance_id.clone())
        };
        let origin =
            Origin { service_name: &config.service_name, service_version: SERVICE_VERSION, instance_id: &instance_id };
        // Both signals at once: a round takes one export's time, not two (on Spin every
        // request is its own instance, held until its round is over).
        let traces = (!spans.is_empty()).then(|| {
            send(ports, config, config.traces_url(), otlp::traces_request(&origin, spans.iter().map(|(_, b)| &b[..])))
        });
        let metrics_post = (!metrics.is_empty())
            .then(|| send(ports, config, config.metrics_url(), otlp::metrics_request(&origin, &metrics)));
        let (traces, metrics_sent) = join(sent(traces), sent(metrics_post)).await;
        let errors: Vec<String> = [("traces", traces), ("metrics", metrics_sent)]
            .into_iter()
            .filter_map(|(signal, outcome)| outcome.err().map(|e| format!("{signal}: {e}")))
            .collect();
        let mut s = self.state.borrow_mut();
        s.done_through = s.done_through.max(through);
        s.last_export_ms = ports.now_ms().max(1);
        s.stats.exports += 1;
        if errors.is_empty() {
            s.stats.spans_exported += spans.len() as u64;
            Ok(())
        } else {
            s.stats.failed_exports += 1;
            s.stats.spans_dropped += spans.len() as u64;
            Err(errors.join("; "))
        }
    }

    pub fn stats(&self) -> Stats {
        self.state.borrow().stats.clone()
    }

    /// Spans waiting in the queue.
    pub fn queued(&self) -> usize {
        self.state.borrow().spans.len()
    }
}

/// A post's outcome, `Ok` for a signal with nothing to send.
async fn sent(post: Option<impl Future<Output = Result<(), String>>>) -> Result<(), String> {
    match post {
        Some(post) => post.await,
        None => Ok(()),
    }
}

/// One OTLP/HTTP POST. The error text names the status or the transport failure, never a
/// header value.
async fn send<P: Ports>(ports: &P, config: &TelemetryConfig, url: String, body: Vec<u8>) -> Result<(), String> {
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = url.parse().map_err(|_| "invalid collector URL".to_string())?;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    for (name, secret) in &config.headers {
        let value = Secrets::secret(ports, secret).filter(|v| !v.is_empty());
        let value = value.ok_or_else(|| format!("header {name}: secret ${secret} is not set"))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("header {name}: secret ${secret} is not a valid value"))?;
        headers.insert(name.clone(), value);
    }
    match ports.send(&request, EXPORT_TIMEOUT_MS).await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("collector answered HTTP {}", response.status().as_u16())),
        Err(UpstreamError::Timeout) => Err(format!("collector did not answer within {EXPORT_TIMEOUT_MS} ms")),
        Err(UpstreamError::Connect(e) | UpstreamError::Body(e)) => {
            Err(format!("collector unreachable: {}", crate::gateway::util::text::truncate(&e, 120)))
        }
    }
}
