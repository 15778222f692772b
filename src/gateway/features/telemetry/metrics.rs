//! Request, token, latency and cost metrics, aggregated per isolate between two exports and
//! sent as OTLP DELTA points (each isolate reports what it saw since its last export, so many
//! isolates add up without coordination):
//!
//! | metric | type | unit | attributes |
//! |---|---|---|---|
//! | `gateway.requests` | monotonic sum | `{request}` | `gateway.endpoint`, `gateway.tenant`, `http.response.status_code`, `error.type`, `gateway.cache` |
//! | `gen_ai.client.token.usage` | histogram | `{token}` | `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.token.type`, `gateway.endpoint`, `gateway.tenant` |
//! | `gen_ai.client.operation.duration` | histogram | `s` | `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `error.type`, `gateway.endpoint` |
//! | `gateway.cost` | monotonic sum | `USD` | `gateway.endpoint`, `gateway.tenant` |
//!
//! The histograms use the bucket boundaries the GenAI conventions advise. Each metric keeps at
//! most `MAX_SERIES` attribute sets per export window; the rest fold into one set marked
//! `otel.metric.overflow = true` (the OpenTelemetry SDKs' cardinality limit).

use crate::gateway::features::telemetry::otlp::{Attr, Pb, TEMPORALITY_DELTA};
use crate::gateway::features::telemetry::span::{operation_name, provider_name, RequestFacts};

pub const MAX_SERIES: usize = 256;

const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
const DURATION_BOUNDS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

/// `NumberDataPoint.attributes` and `HistogramDataPoint.attributes`.
const NUMBER_ATTRS: u32 = 7;
const HISTOGRAM_ATTRS: u32 = 9;

#[derive(Debug, Clone)]
struct Hist {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: [u64; 15],
}

impl Hist {
    fn new() -> Self {
        Hist { count: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, buckets: [0; 15] }
    }

    fn record(&mut self, bounds: &[f64; 14], v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        // Bucket i holds (bounds[i-1], bounds[i]]; the last one everything above.
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.buckets[i] += 1;
    }
}

/// Points keyed by their encoded attribute set (a few per window: a list beats a map here,
/// in time and in code size).
#[derive(Debug)]
struct Series<T> {
    points: Vec<(Vec<u8>, T)>,
}

impl<T> Default for Series<T> {
    fn default() -> Self {
        Series { points: Vec::new() }
    }
}

impl<T> Series<T> {
    fn point(&mut self, attrs: Vec<u8>, field: u32, new: impl Fn() -> T) -> &mut T {
        let i = match self.points.iter().position(|(k, _)| *k == attrs) {
            Some(i) => i,
            None if self.points.len() < MAX_SERIES => {
                self.points.push((attrs, new()));
                self.points.len() - 1
            }
            None => {
                let mut overflow = Pb::new();
                overflow.attr(field, "otel.metric.overflow", Attr::Bool(true));
                match self.points.iter().position(|(k, _)| *k == overflow.0) {
                    Some(i) => i,
                    None => {
                        self.points.push((overflow.0, new()));
                        self.points.len() - 1
                    }
                }
            }
        };
        &mut self.points[i].1
    }
}

/// One isolate's metrics since its last export.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Start of the current window (ms); 0 until the first request.
    window_start_ms: u64,
    requests: Series<i64>,
    cost: Series<f64>,
    tokens: Series<Hist>,
    duration: Series<Hist>,
}

struct Attrs(Pb, u32);

impl Attrs {
    fn new(field: u32) -> Self {
        Attrs(Pb::with_capacity(192), field)
    }
    fn str(mut self, key: &str, value: Option<&str>) -> Self {
        self.0.attr(self.1, key, Attr::Str(value.unwrap_or("")));
        self
    }
    fn opt(mut self, key: &str, value: Option<&str>) -> Self {
        if let Some(v) = value {
            self.0.attr(self.1, key, Attr::Str(v));
        }
        self
    }
    fn int(mut self, key: &str, value: i64) -> Self {
        self.0.attr(self.1, key, Attr::Int(value));
        self
    }
    fn done(self) -> Vec<u8> {
        self.0 .0
    }
}

impl Metrics {
    pub fn is_empty(&self) -> bool {
        self.requests.points.is_empty()
    }

    pub fn record(&mut self, facts: &RequestFacts<'_>) {
        if self.window_start_ms == 0 {
            self.window_start_ms = facts.start_ms;
        }
        let error = facts.error_type();
        let attrs = Attrs::new(NUMBER_ATTRS)
            .str("gateway.endpoint", facts.endpoint)
            .str("gateway.tenant", facts.tenant)
            .int("http.response.status_code", i64::from(facts.status))
            .opt("error.type", error.as_deref())
            .opt("gateway.cache", facts.cache)
            .done();
        *self.requests.point(attrs, NUMBER_ATTRS, || 0) += 1;
        if let Some(cost) = facts.cost_usd.filter(|c| *c > 0.0) {
            let attrs = Attrs::new(NUMBER_ATTRS)
                .str("gateway.endpoint", facts.endpoint)
                .str("gateway.tenant", facts.tenant)
                .done();
            *self.cost.point(attrs, NUMBER_ATTRS, || 0.0) += cost;
        }
        let Some(op) = facts.operation else { return };
        let provider = facts.provider.map(provider_name);
        let genai = |field| {
            Attrs::new(field)
                .str("gen_ai.operation.name", Some(operation_name(op)))
                .str("gen_ai.provider.name", provider)
                .str("gen_ai.request.model", facts.model)
        };
        for (kind, n) in [("input", facts.input_tokens), ("output", facts.output_tokens)] {
            let Some(n) = n else { continue };
            let attrs = genai(HISTOGRAM_ATTRS)
                .str("gen_ai.token.type", Some(kind))
                .str("gateway.endpoint", facts.endpoint)
                .str("gateway.tenant", facts.tenant)
                .done();
            self.tokens.point(attrs, HISTOGRAM_ATTRS, Hist::new).record(&TOKEN_BOUNDS, n as f64);
        }
        let attrs =
            genai(HISTOGRAM_ATTRS).opt("error.type", error.as_deref()).str("gateway.endpoint", facts.endpoint).done();
        let seconds = facts.end_ms.saturating_sub(facts.start_ms) as f64 / 1000.0;
        self.duration.point(attrs, HISTOGRAM_ATTRS, Hist::new).record(&DURATION_BOUNDS, seconds);
    }

    /// The window's metrics as encoded OTLP `Metric`s, ending at `now_ms`; starts a new window.
    pub fn take(&mut self, now_ms: u64) -> Vec<Vec<u8>> {
        if self.is_empty() {
            return Vec::new();
        }
        let this = std::mem::take(self);
        self.window_start_ms = now_ms;
        let (start, end) = (this.window_start_ms * 1_000_000, now_ms.max(this.window_start_ms) * 1_000_000);
        let mut out = Vec::with_capacity(4);
        let number = |name: &str, unit: &str, description: &str, points: Vec<(Vec<u8>, Value)>| {
            let mut metric = Pb::with_capacity(256 + points.len() * 320);
            metric.string(1, name);
            metric.string(2, description);
            metric.string(3, unit);
            metric.message(7, |sum| {
                for (attrs, value) in &points {
                    sum.message(1, |dp| {
                        dp.0.extend_from_slice(attrs);
                        dp.fixed64(2, start);
                        dp.fixed64(3, end);
                        match value {
                            Value::Int(i) => dp.fixed64(6, *i as u64),
                            Value::Double(d) => dp.double(4, *d),
                        }
                    });
                }
                sum.uint(2, TEMPORALITY_DELTA);
                sum.uint(3, 1);
            });
            metric.0
        };
        let histogram = |name: &str, unit: &str, description: &str, bounds: &[f64; 14], points: &[(Vec<u8>, Hist)]| {
            let mut metric = Pb::with_capacity(256 + points.len() * 320);
            metric.string(1, name);
            metric.string(2, description);
            metric.string(3, unit);
            metric.message(9, |h| {
                for (attrs, p) in points {
                    h.message(1, |dp| {
                        dp.0.extend_from_slice(attrs);
                        dp.fixed64(2, start);
                        dp.fixed64(3, end);
                        dp.fixed64(4, p.count);
                        dp.double(5, p.sum);
                        dp.packed_fixed64(6, p.buckets.iter().copied());
                        dp.packed_double(7, bounds);
                        dp.double(11, p.min);
                        dp.double(12, p.max);
                    });
                }
                h.uint(2, TEMPORALITY_DELTA);
            });
            metric.0
        };
        out.push(number(
            "gateway.requests",
            "{request}",
            "Requests the gateway answered",
            this.requests.points.into_iter().map(|(k, v)| (k, Value::Int(v))).collect(),
        ));
        if !this.cost.points.is_empty() {
            out.push(number(
                "gateway.cost",
                "USD",
                "Cost of the requests at the config's prices",
                this.cost.points.into_iter().map(|(k, v)| (k, Value::Double(v))).collect(),
            ));
        }
        if !this.tokens.points.is_empty() {
            out.push(histogram(
                "gen_ai.client.token.usage",
                "{token}",
                "Measures number of input and output tokens used",
                &TOKEN_BOUNDS,
                &this.tokens.points,
            ));
        }
        if !this.duration.points.is_empty() {
            out.push(histogram(
                "gen_ai.client.operation.duration",
                "s",
                "GenAI operation duration",
                &DURATION_BOUNDS,
                &this.duration.points,
            ));
        }
        out
    }
}

enum Value {
    Int(i64),
    Double(f64),
}
