//! The batch end to end over in-memory ports, with a small protobuf reader to check what the
//! collector would receive (the e2e suite decodes it with the official `opentelemetry-proto`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};

use super::batch::{Telemetry, EXPORT_GAP_MS, MAX_BATCH, MAX_QUEUE};
use super::config::TelemetryConfig;
use super::context::SpanContext;
use super::span::RequestFacts;
use crate::gateway::ports::memory::{block_on, MemoryHost};
use crate::gateway::ports::{Clock, Counter, Kv, Secrets, Upstream, UpstreamError};
use crate::gateway::types::Operation;

// ---------------------------------------------------------------------------------------------
// A protobuf reader: enough to walk OTLP messages.

#[derive(Debug, Clone)]
enum F {
    Varint(u64),
    I64(u64),
    Len(Vec<u8>),
    I32(u32),
}

fn fields(mut b: &[u8]) -> Vec<(u32, F)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => F::Varint(varint(&mut b)),
            1 => {
                let v = u64::from_le_bytes(b[..8].try_into().unwrap());
                b = &b[8..];
                F::I64(v)
            }
            2 => {
                let n = varint(&mut b) as usize;
                let v = b[..n].to_vec();
                b = &b[n..];
                F::Len(v)
            }
            5 => {
                let v = u32::from_le_bytes(b[..4].try_into().unwrap());
                b = &b[4..];
                F::I32(v)
            }
            w => panic!("wire type {w}"),
        };
        out.push((field, value));
    }
    out
}

fn msgs(b: &[u8], field: u32) -> Vec<Vec<u8>> {
    fields(b)
        .into_iter()
        .filter_map(|(f, v)| match v {
            F::Len(bytes) if f == field => Some(bytes),
            _ => None,
        })
        .collect()
}

fn one(b: &[u8], field: u32) -> F {
    fields(b).into_iter().find(|(f, _)| *f == field).map(|(_, v)| v).unwrap_or_else(|| panic!("no field {field}"))
}

fn string(b: &[u8], field: u32) -> String {
    match one(b, field) {
        F::Len(v) => String::from_utf8(v).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// Attributes (repeated KeyValue at `field`) as "key=value" strings.
fn attrs(b: &[u8], field: u32) -> Vec<String> {
    msgs(b, field)
        .iter()
        .map(|kv| {
            let key = string(kv, 1);
            let any = match one(kv, 2) {
                F::Len(v) => v,
                _ => unreachable!(),
            };
            let value = match fields(&any).remove(0) {
                (1, F::Len(s)) => String::from_utf8(s).unwrap(),
                (2, F::Varint(v)) => (v != 0).to_string(),
                (3, F::Varint(v)) => (v as i64).to_string(),
                (4, F::I64(v)) => f64::from_bits(v).to_string(),
                other => panic!("{other:?}"),
            };
            format!("{key}={value}")
        })
        .collect()
}

/// The spans of an ExportTraceServiceRequest.
fn spans(body: &[u8]) -> Vec<Vec<u8>> {
    msgs(body, 1).iter().flat_map(|rs| msgs(rs, 2)).flat_map(|ss| msgs(&ss, 2)).collect()
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const SECRET: &str = "otlp-secret-value-123";

fn config() -> TelemetryConfig {
    TelemetryConfig {
        otlp_endpoint: "http://collector.test:4318".into(),
        headers: vec![(http::HeaderName::from_static("authorization"), "OTLP_AUTH".into())],
        service_name: "gw-test".into(),
        sample: 1.0,
    }
}

fn host(status: u16) -> MemoryHost {
    MemoryHost::new(move |_| Ok(Response::builder().status(status).body(Vec::new()).unwrap()))
        .with_secret("OTLP_AUTH", SECRET)
}

fn facts<'a>(start: u64, attempts: Vec<(&'a str, &'a str, u64)>) -> RequestFacts<'a> {
    RequestFacts {
        request_id: "req-1",
        method: "POST",
        path: "/v1/chat/completions",
        status: 200,
        start_ms: start,
        end_ms: start + 42,
        endpoint: Some("chat"),
        provider: Some("openai"),
        model: Some("gpt-4o-mini"),
        operation: Some(Operation::Chat),
        input_tokens: Some(11),
        output_tokens: Some(7),
        cost_usd: Some(0.0000123),
        cache: Some("MISS"),
        tenant: Some("acme"),
        key_id: Some("k_0123"),
        origin: Some("http://127.0.0.1:9000"),
        attempts,
        ..RequestFacts::default()
    }
}

fn sent_to(host: &MemoryHost, path: &str) -> Vec<Request<Vec<u8>>> {
    let sent = host.sent.borrow();
    sent.iter()
        .filter(|r| r.uri().path() == path)
        .map(|r| {
            let mut copy = Request::new(r.body().clone());
            *copy.uri_mut() = r.uri().clone();
            *copy.headers_mut() = r.headers().clone();
            copy
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_request_is_exported_as_one_genai_span_and_metrics() {
    let host = host(200);
    let telemetry = Telemetry::new();
    let t0 = host.now_ms();
    let span = SpanContext::start(None, 1.0, &host);
    let attempts =
        vec![("http://127.0.0.1:9 (eu)", "connect_error", t0 + 10), ("http://127.0.0.1:9000", "ok", t0 + 40)];
    let seq = telemetry.record(&host, &facts(t0, attempts), Some(&span));
    assert_eq!(block_on(telemetry.flush(&host, &config(), seq)), None);

    let traces = sent_to(&host, "/v1/traces");
    assert_eq!(traces.len(), 1);
    let request = &traces[0];
    assert_eq!(request.uri().to_string(), "http://collector.test:4318/v1/traces");
    assert_eq!(request.headers()["content-type"], "application/x-protobuf");
    assert_eq!(request.headers()["authorization"], SECRET, "the header comes from the secret");
    let body = request.body();
    let resource = msgs(&msgs(body, 1)[0], 1).remove(0);
    assert!(attrs(&resource, 1).contains(&"service.name=gw-test".to_string()));
    let spans = spans(body);
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(string(s, 5), "chat gpt-4o-mini");
    assert!(matches!(one(s, 1), F::Len(id) if id == span.trace_id));
    assert!(matches!(one(s, 6), F::Varint(2)), "SERVER");
    assert!(matches!(one(s, 7), F::I64(ns) if ns == t0 * 1_000_000));
    assert!(matches!(one(s, 8), F::I64(ns) if ns == (t0 + 42) * 1_000_000));
    let a = attrs(s, 9);
    for expected in [
        "gen_ai.operation.name=chat",
        "gen_ai.provider.name=openai",
        "gen_ai.system=openai",
        "gen_ai.request.model=gpt-4o-mini",
        "gen_ai.usage.input_tokens=11",
        "gen_ai.usage.output_tokens=7",
        "http.response.status_code=200",
        "gateway.cache=MISS",
        "gateway.tenant=acme",
        "gateway.attempts=2",
    ] {
        assert!(a.contains(&expected.to_string()), "{expected} in {a:?}");
    }
    let events = msgs(s, 11);
    assert_eq!(events.len(), 2);
    assert_eq!(string(&events[0], 2), "gateway.attempt");
    assert!(attrs(&events[0], 3).contains(&"gateway.attempt.outcome=connect_error".to_string()));
    assert!(matches!(one(s, 16), F::I32(0x101)), "sampled, local root");

    let metrics = sent_to(&host, "/v1/metrics");
    assert_eq!(metrics.len(), 1);
    let body = metrics[0].body();
    let scope = msgs(&msgs(body, 1)[0], 2).remove(0);
    let names: Vec<String> = msgs(&scope, 2).iter().map(|m| string(m, 1)).collect();
    assert_eq!(
        names,
        ["gateway.requests", "gateway.cost", "gen_ai.client.token.usage", "gen_ai.client.operation.duration"]
    );
    let requests = msgs(&scope, 2).remove(0);
    let sum = msgs(&requests, 7).remove(0);
    let point = msgs(&sum, 1).remove(0);
    assert!(matches!(one(&point, 6), F::I64(1)));
    assert!(matches!(one(&sum, 2), F::Varint(1)), "DELTA");
    assert!(attrs(&point, 7).contains(&"gateway.endpoint=chat".to_string()));
    let tokens = msgs(&scope, 2).remove(2);
    let points = msgs(&msgs(&tokens, 9)[0], 1);
    assert_eq!(points.len(), 2, "input and output");
    assert!(attrs(&points[0], 9).iter().any(|a| a.starts_with("gen_ai.token.type=")));

    let text = format!("{:?}", host.sent.borrow().iter().map(|r| r.body().clone()).collect::<Vec<_>>());
    assert!(!text.contains(SECRET), "the secret is a header, never in a body");
    assert_eq!(telemetry.stats().spans_exported, 1);
}

#[test]
fn unsampled_requests_send_metrics_only_and_continued_traces_keep_their_parent() {
    let host = host(200);
    let telemetry = Telemetry::new();
    let never = SpanContext::start(None, 0.0, &host);
    let seq = telemetry.record(&host, &facts(host.now_ms(), vec![]), Some(&never));
    block_on(telemetry.flush(&host, &config(), seq));
    assert!(sent_to(&host, "/v1/traces").is_empty());
    assert_eq!(sent_to(&host, "/v1/metrics").len(), 1);

    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
    let parent = super::context::TraceParent::from_headers(&headers).unwrap();
    let continued = SpanContext::start(Some(&parent), 0.0, &host);
    host.advance(EXPORT_GAP_MS);
    let mut f = facts(host.now_ms(), vec![]);
    f.status = 502;
    f.error = Some("origin_unreachable");
    let seq = telemetry.record(&host, &f, Some(&continued));
    block_on(telemetry.flush(&host, &config(), seq));
    let s = spans(sent_to(&host, "/v1/traces")[0].body()).remove(0);
    assert!(matches!(one(&s, 4), F::Len(id) if id == parent.parent_id));
    assert!(matches!(one(&s, 16), F::I32(0x301)), "sampled, remote parent");
    assert!(attrs(&s, 9).contains(&"error.type=origin_unreachable".to_string()));
    let status = msgs(&s, 15).remove(0);
    assert!(matches!(one(&status, 3), F::Varint(2)), "a 5xx is an ERROR span");
}

#[test]
fn failures_are_reported_never_raised_and_name_no_secret() {
    let host = host(503);
    let telemetry = Telemetry::new();
    let span = SpanContext::start(None, 1.0, &host);
    let seq = telemetry.record(&host, &facts(host.now_ms(), vec![]), Some(&span));
    let error = block_on(telemetry.flush(&host, &config(), seq)).unwrap();
    assert_eq!(error, "traces: collector answered HTTP 503; metrics: collector answered HTTP 503");
    assert_eq!(telemetry.stats().failed_exports, 1);
    assert_eq!(telemetry.queued(), 0, "a failed batch is dropped, not retried");

    let no_secret = MemoryHost::new(|_| Err(UpstreamError::Timeout));
    let seq = telemetry.record(&no_secret, &facts(no_secret.now_ms(), vec![]), Some(&span));
    let error = block_on(telemetry.flush(&no_secret, &config(), seq)).unwrap();
    assert!(error.contains("secret $OTLP_AUTH is not set"), "{error}");
    let down = MemoryHost::new(|_| Err(UpstreamError::Timeout)).with_secret("OTLP_AUTH", SECRET);
    let seq = telemetry.record(&down, &facts(down.now_ms(), vec![]), Some(&span));
    let error = block_on(telemetry.flush(&down, &config(), seq)).unwrap();
    assert!(error.contains("did not answer") && !error.contains(SECRET), "{error}");
}

#[test]
fn the_queue_is_bounded_and_drains_in_batches() {
    let host = host(200);
    let telemetry = Telemetry::new();
    let span = SpanContext::start(None, 1.0, &host);
    let mut last = 0;
    for _ in 0..MAX_QUEUE + 5 {
        last = telemetry.record(&host, &facts(host.now_ms(), vec![]), Some(&span));
    }
    assert_eq!(telemetry.queued(), MAX_QUEUE);
    assert_eq!(telemetry.stats().spans_dropped, 5);
    let before = host.now_ms();
    block_on(telemetry.flush(&host, &config(), last));
    let traces = sent_to(&host, "/v1/traces");
    assert_eq!(traces.len(), MAX_QUEUE / MAX_BATCH);
    assert!(traces.iter().all(|t| spans(t.body()).len() == MAX_BATCH));
    assert!(host.now_ms() >= before + 3 * EXPORT_GAP_MS, "one batch per gap");
    assert_eq!(telemetry.queued(), 0);
}

// ---------------------------------------------------------------------------------------------
// Concurrent after-response work in one isolate: sleeps yield, so requests interleave.

/// The host, and how long its collector takes to answer a post.
struct Yielding<'a>(&'a MemoryHost, u64);

impl Kv for Yielding<'_> {
    async fn get(&self, key: &str) -> crate::gateway::error::Result<Option<Vec<u8>>> {
        self.0.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Option<u64>) -> crate::gateway::error::Result<()> {
        self.0.put(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> crate::gateway::error::Result<()> {
        self.0.delete(key).await
    }
    async fn list(&self, prefix: &str) -> crate::gateway::error::Result<Vec<String>> {
        self.0.list(prefix).await
    }
}

impl Upstream for Yielding<'_> {
    type Body = Vec<u8>;
    async fn send(&self, request: &Request<Vec<u8>>, timeout: u64) -> Result<Response<Vec<u8>>, UpstreamError> {
        if self.1 > 0 {
            self.sleep(self.1).await;
        }
        self.0.send(request, timeout).await
    }
    async fn read_body(&self, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, UpstreamError> {
        self.0.read_body(body, limit).await
    }
}

impl Secrets for Yielding<'_> {
    fn secret(&self, name: &str) -> Option<String> {
        self.0.secret(name)
    }
}

impl Clock for Yielding<'_> {
    fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        self.0.random_bytes(buf)
    }
    /// Yields once, then the time has passed (a timer the executor fires in order).
    async fn sleep(&self, ms: u64) {
        let target = self.0.now_ms() + ms;
        let yielded = Cell::new(false);
        std::future::poll_fn(|_| {
            if yielded.replace(true) {
                if self.0.now_ms() < target {
                    self.0.now_ms.set(target);
                }
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Counter for Yielding<'_> {}
impl crate::gateway::ports::EdgeCache for Yielding<'_> {}
impl crate::gateway::ports::Signatures for Yielding<'_> {}

/// Polls every future round robin until all are done.
fn run_all(mut futures: Vec<Pin<Box<dyn Future<Output = Option<String>> + '_>>>) -> Vec<Option<String>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out: Vec<Option<Option<String>>> = futures.iter().map(|_| None).collect();
    while out.iter().any(Option::is_none) {
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    out[i] = Some(v);
                }
            }
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn concurrent_requests_share_one_export_per_gap() {
    let memory = host(200);
    let ports = Yielding(&memory, 0);
    let telemetry = Rc::new(Telemetry::new());
    let config = config();
    let span = SpanContext::start(None, 1.0, &memory);
    // A first request exports at once (the isolate was quiet).
    let seq = telemetry.record(&ports, &facts(memory.now_ms(), vec![]), Some(&span));
    assert_eq!(run_all(vec![Box::pin(telemetry.flush(&ports, &config, seq))]), [None]);
    let first = memory.now_ms();
    // Then ten finish close together: one leader waits out the gap and sends all ten.
    let seqs: Vec<u64> =
        (0..10).map(|_| telemetry.record(&ports, &facts(memory.now_ms(), vec![]), Some(&span))).collect();
    let order = RefCell::new(Vec::new());
    let futures = seqs
        .iter()
        .map(|seq| {
            let (t, ports, config, order) = (&telemetry, &ports, &config, &order);
            Box::pin(async move {
                let r = t.flush(ports, config, *seq).await;
                order.borrow_mut().push(*seq);
                r
            }) as Pin<Box<dyn Future<Output = Option<String>> + '_>>
        })
        .collect();
    assert!(run_all(futures).iter().all(Option::is_none));
    let traces = sent_to(&memory, "/v1/traces");
    assert_eq!(traces.len(), 2);
    assert_eq!(spans(traces[1].body()).len(), 10);
    assert!(memory.now_ms() >= first + EXPORT_GAP_MS);
    assert_eq!(order.borrow().len(), 10, "every request's wait ended");
    assert_eq!(sent_to(&memory, "/v1/metrics").len(), 2);
}

/// The traces and the metrics post of a round go out together: with a collector that takes
/// 4 s to answer, a request waits 4 s for its round, not 8 (a Spin instance is held that long).
#[test]
fn a_rounds_two_posts_go_out_together() {
    let memory = host(200);
    let ports = Yielding(&memory, 4_000);
    let telemetry = Telemetry::new();
    let span = SpanContext::start(None, 1.0, &memory);
    let seq = telemetry.record(&ports, &facts(memory.now_ms(), vec![]), Some(&span));
    let before = memory.now_ms();
    assert_eq!(run_all(vec![Box::pin(telemetry.flush(&ports, &config(), seq))]), [None]);
    assert_eq!((sent_to(&memory, "/v1/traces").len(), sent_to(&memory, "/v1/metrics").len()), (1, 1));
    assert_eq!(memory.now_ms() - before, 4_000);
    assert_eq!(telemetry.stats().spans_exported, 1);
}
