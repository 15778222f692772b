//! One span per request, after the GenAI semantic conventions: named
//! `{gen_ai.operation.name} {gen_ai.request.model}` for model calls (`{method} {path}` for the
//! rest), kind SERVER, with the GenAI attributes (`gen_ai.operation.name`,
//! `gen_ai.provider.name` and the older `gen_ai.system`, `gen_ai.request.model`,
//! `gen_ai.usage.input_tokens` / `output_tokens`), the HTTP ones (`http.request.method`,
//! `url.path`, `http.response.status_code`, `error.type`) and the gateway's own (`gateway.*`:
//! endpoint, route, tenant, key id, cache status, stream, region, origin, template, cost,
//! attempts). Every origin tried is an event (`gateway.attempt`). Nothing in it is secret: no
//! header, no body, no key (only its id), no query string, origins as scheme://host:port.

use crate::gateway::features::telemetry::context::SpanContext;
use crate::gateway::features::telemetry::otlp::{
    Attr, Pb, SPAN_FLAGS_HAS_IS_REMOTE, SPAN_FLAGS_IS_REMOTE, SPAN_KIND_SERVER, STATUS_ERROR,
};
use crate::gateway::types::Operation;

/// What the pipeline knows about a finished request (borrowed from its log line).
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The error code when the gateway answered with an error.
    pub error: Option<&'static str>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub endpoint: Option<&'a str>,
    pub route: Option<&'a str>,
    /// The provider's name in config (`openai`, `bedrock`, ...).
    pub provider: Option<&'static str>,
    /// The provider-side model.
    pub model: Option<&'a str>,
    pub operation: Option<Operation>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// HIT, MISS or BYPASS.
    pub cache: Option<&'static str>,
    pub stream: bool,
    pub tenant: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub region: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub template: Option<&'a str>,
    /// Every origin tried: (origin label, outcome, when it ended in ms).
    pub attempts: Vec<(&'a str, &'a str, u64)>,
}

impl RequestFacts<'_> {
    /// `error.type`: the gateway's error code, else the status for an error status.
    pub fn error_type(&self) -> Option<String> {
        match self.error {
            Some(code) => Some(code.to_string()),
            None if self.status >= 400 => Some(self.status.to_string()),
            None => None,
        }
    }
}

/// `gen_ai.operation.name` (the conventions' well-known values where one fits).
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Chat => "chat",
        Operation::Completions => "text_completion",
        Operation::Embeddings => "embeddings",
        Operation::Predict => "predict",
    }
}

/// `gen_ai.provider.name` for the config's provider names.
pub fn provider_name(provider: &str) -> &str {
    match provider {
        "gemini" => "gcp.gemini",
        "bedrock" => "aws.bedrock",
        "huggingface-text-generation-inference" => "huggingface",
        "mlflow-model-serving" => "mlflow",
        other => other,
    }
}

const MS: u64 = 1_000_000;

/// The request's span as an encoded OTLP `Span` message.
pub fn encode(facts: &RequestFacts<'_>, ctx: &SpanContext) -> Vec<u8> {
    let mut span = Pb::with_capacity(1024);
    span.bytes(1, &ctx.trace_id);
    span.bytes(2, &ctx.span_id);
    if let Some(state) = &ctx.tracestate {
        span.string(3, state);
    }
    if let Some(parent) = &ctx.parent_id {
        span.bytes(4, parent);
    }
    let name = match (facts.operation, facts.model) {
        (Some(op), Some(model)) if !model.is_empty() => format!("{} {model}", operation_name(op)),
        (Some(op), _) => operation_name(op).to_string(),
        _ => format!("{} {}", facts.method, facts.path),
    };
    span.string(5, &name);
    span.uint(6, SPAN_KIND_SERVER);
    span.fixed64(7, facts.start_ms.saturating_mul(MS));
    span.fixed64(8, facts.end_ms.max(facts.start_ms).saturating_mul(MS));

    let mut a = |key: &str, value: Attr<'_>| span.attr(9, key, value);
    if let Some(op) = facts.operation {
        a("gen_ai.operation.name", Attr::Str(operation_name(op)));
    }
    if let Some(provider) = facts.provider {
        a("gen_ai.provider.name", Attr::Str(provider_name(provider)));
        a("gen_ai.system", Attr::Str(provider_name(provider)));
        a("gateway.provider", Attr::Str(provider));
    }
    if let Some(model) = facts.model.filter(|m| !m.is_empty()) {
        a("gen_ai.request.model", Attr::Str(model));
    }
    if let Some(n) = facts.input_tokens {
        a("gen_ai.usage.input_tokens", Attr::Int(n as i64));
    }
    if let Some(n) = facts.output_tokens {
        a("gen_ai.usage.output_tokens", Attr::Int(n as i64));
    }
    a("http.request.method", Attr::Str(facts.method));
    a("url.path", Attr::Str(facts.path));
    a("http.response.status_code", Attr::Int(i64::from(facts.status)));
    let error_type = facts.error_type();
    if let Some(e) = &error_type {
        a("error.type", Attr::Str(e));
    }
    a("gateway.request_id", Attr::Str(facts.request_id));
    let strings = [
        ("gateway.endpoint", facts.endpoint),
        ("gateway.route", facts.route),
        ("gateway.tenant", facts.tenant),
        ("gateway.key_id", facts.key_id),
        ("gateway.cache", facts.cache),
        ("gateway.region", facts.region),
        ("gateway.origin", facts.origin),
        ("gateway.template", facts.template),
    ];
    for (key, value) in strings {
        if let Some(v) = value {
            a(key, Attr::Str(v));
        }
    }
    if facts.operation.is_some() {
        a("gateway.stream", Attr::Bool(facts.stream));
    }
    if let Some(cost) = facts.cost_usd {
        a("gateway.cost_usd", Attr::Double(cost));
    }
    if !facts.attempts.is_empty() {
        a("gateway.attempts", Attr::Int(facts.attempts.len() as i64));
    }

    for (i, (origin, outcome, at_ms)) in facts.attempts.iter().enumerate() {
        span.message(11, |event| {
            event.fixed64(1, at_ms.saturating_mul(MS));
            event.string(2, "gateway.attempt");
            event.attr(3, "gateway.attempt.number", Attr::Int(i as i64 + 1));
            event.attr(3, "gateway.origin", Attr::Str(origin));
            event.attr(3, "gateway.attempt.outcome", Attr::Str(outcome));
        });
    }
    // HTTP server spans: only 5xx is an error (a 4xx is the client's).
    if facts.status >= 500 {
        span.message(15, |status| {
            status.string(2, error_type.as_deref().unwrap_or("error"));
            status.uint(3, STATUS_ERROR);
        });
    }
    let remote = if ctx.parent_id.is_some() { SPAN_FLAGS_IS_REMOTE } else { 0 };
    span.fixed32(16, u32::from(ctx.sampled) | SPAN_FLAGS_HAS_IS_REMOTE | remote);
    span.0
}
