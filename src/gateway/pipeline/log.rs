//! The one structured log line a request leaves (after its response).

use serde::Serialize;

use crate::gateway::error::ErrorCode;
use crate::gateway::features::guard::GuardReport;
use crate::gateway::features::limits::RateHeaders;
use crate::gateway::features::usage::UsageLog;
use crate::gateway::forward::AttemptLog;
use crate::gateway::mcp::McpLog;
use crate::gateway::types::Usage;
use crate::gateway::wire::json::Object;

/// One structured log line per request. Holds no secret: no key, no credential, and the
/// origin only as scheme://host:port (query strings may carry provider keys).
///
/// Written by [`LogRecord::to_json`]; the `Serialize` derive is its specification (a test keeps
/// the two byte-equal; a new field goes into both and into that test's full record).
#[derive(Debug, Default, Serialize)]
pub struct LogRecord {
    pub ts: u64,
    pub request_id: String,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The origin that answered (or the last one tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The same origin as clients see it (`x-gateway-origin`: region and index).
    #[serde(skip)]
    pub origin_id: Option<String>,
    /// Every origin tried, in order, with its outcome.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptLog>,
    pub status: u16,
    pub latency_ms: u64,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// What the operator needs to know about an error and the client must not see (e.g. the
    /// config issue behind a `config_invalid`). Never a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// For streams: false when the client went away before the origin's stream ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_completed: Option<bool>,
    /// For streams the gateway ended itself: why (a budget or token cap, a broken or idle
    /// origin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_stopped: Option<ErrorCode>,
    /// `name@version` of the rendered prompt template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Input guardrail effects (rule ids and counts, never the matched text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_output: Option<GuardReport>,
    /// HIT, MISS or BYPASS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// Where a hit came from: `edge` (this location's Cache API) or `kv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_error: Option<ErrorCode>,
    /// Storing a Responses API response failed (it cannot be retrieved or continued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<UsageLog>,
    /// What went wrong writing the request tallies or exporting telemetry (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry_error: Option<String>,
    /// An `/mcp` request: method, server, tool, outcome, bytes, latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpLog>,
    #[serde(skip)]
    pub rate_headers: RateHeaders,
}

impl LogRecord {
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        self.prompt_tokens = usage.map(|u| u.prompt_tokens);
        self.completion_tokens = usage.map(|u| u.completion_tokens);
    }

    /// The line, as `serde_json::to_string` writes it from the derive, written by hand over
    /// edge_scan's writers: serde's generic serializer is compiled at this crate's size-first
    /// opt-level and cost ~22k instructions a forwarded request (~9% of it, callgrind). The
    /// rare nested parts (guard reports, MCP) still go through serde.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        let mut w = Object::new(&mut out);
        w.u64("ts", self.ts);
        w.str("request_id", &self.request_id);
        w.str("method", &self.method);
        w.str("path", &self.path);
        w.opt_str("endpoint", self.endpoint.as_deref());
        w.opt_str("provider", self.provider);
        w.opt_str("route", self.route.as_deref());
        w.opt_str("region", self.region.as_deref());
        w.opt_str("origin", self.origin.as_deref());
        if !self.attempts.is_empty() {
            w.key("attempts");
            w.out().push(b'[');
            for (i, attempt) in self.attempts.iter().enumerate() {
                if i > 0 {
                    w.out().push(b',');
                }
                let mut a = Object::new(w.out());
                a.str("origin", &attempt.origin);
                a.str("id", &attempt.id);
                a.str("outcome", &attempt.outcome);
                a.opt_str("detail", attempt.detail.as_deref());
                a.close();
            }
            w.out().push(b']');
        }
        w.u64("status", u64::from(self.status));
        w.u64("latency_ms", self.latency_ms);
        w.bool("stream", self.stream);
        w.opt_str("error", self.error.map(ErrorCode::as_str));
        w.opt_str("detail", self.detail.as_deref());
        w.opt_u64("prompt_tokens", self.prompt_tokens);
        w.opt_u64("completion_tokens", self.completion_tokens);
        if let Some(completed) = self.stream_completed {
            w.bool("stream_completed", completed);
        }
        w.opt_str("stream_stopped", self.stream_stopped.map(ErrorCode::as_str));
        w.opt_str("template", self.template.as_deref());
        opt_serde(&mut w, "guard", self.guard.as_ref());
        opt_serde(&mut w, "guard_output", self.guard_output.as_ref());
        w.opt_str("cache", self.cache);
        w.opt_str("cache_level", self.cache_level);
        w.opt_str("cache_error", self.cache_error.map(ErrorCode::as_str));
        w.opt_str("store_error", self.store_error.map(ErrorCode::as_str));
        w.opt_str("key_id", self.key_id.as_deref());
        w.opt_str("tenant", self.tenant.as_deref());
        if let Some(a) = &self.accounting {
            // Flattened into the line, as `#[serde(flatten)]` does.
            w.opt_str("key_id", a.key_id.as_deref());
            w.opt_str("tenant", a.tenant.as_deref());
            w.u64("total_tokens", a.total_tokens);
            w.value("cost_usd", &a.cost_usd.map_or(serde_json::Value::Null, Into::into));
            w.bool("cache_hit", a.cache_hit);
            w.str("limits", a.limits);
            w.opt_str("accounting_error", a.accounting_error.as_deref());
        }
        w.opt_str("telemetry_error", self.telemetry_error.as_deref());
        opt_serde(&mut w, "mcp", self.mcp.as_ref());
        w.close();
        // Only UTF-8 went in: `&str`s through write_str, and serde_json's own output.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A nested part that still goes through serde (guard reports, MCP: not on every request).
fn opt_serde(w: &mut Object<'_>, name: &str, value: Option<&impl Serialize>) {
    if let Some(value) = value {
        w.key(name);
        // Writing into a Vec cannot fail, and these types serialize without errors.
        let _ = serde_json::to_writer(w.out(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: &str, detail: Option<&str>) -> AttemptLog {
        AttemptLog {
            origin: "https://api.example.com:443".into(),
            id: "eu#0".into(),
            outcome: outcome.into(),
            detail: detail.map(Into::into),
            at_ms: 7,
        }
    }

    /// Every field set (strings that need escaping, both attempt shapes, a flattened
    /// accounting part, the nested serde parts), the fields a forwarded request has, and none.
    #[test]
    fn the_hand_written_line_is_the_derives() {
        let full = LogRecord {
            ts: u64::MAX,
            request_id: "req-\"1\"\n\u{1}\u{7f}é😀".into(),
            method: "POST".into(),
            path: "/v1/chat/completions\\x".into(),
            endpoint: Some("chat".into()),
            provider: Some("openai"),
            route: Some("split/b".into()),
            region: Some("eu".into()),
            origin: Some("https://api.example.com:443".into()),
            origin_id: Some("eu#0".into()),
            attempts: vec![attempt("connect_error", Some("refused \"x\"")), attempt("ok", None)],
            status: 502,
            latency_ms: 12,
            stream: true,
            error: Some(ErrorCode::OriginUnreachable),
            detail: Some("config: bad\tvalue".into()),
            prompt_tokens: Some(10),
            completion_tokens: Some(0),
            stream_completed: Some(false),
            stream_stopped: Some(ErrorCode::BudgetExceeded),
            template: Some("support@3".into()),
            guard: Some(GuardReport {
                redacted: vec![("email".into(), 2), ("card".into(), 1)],
                flagged: true,
                injection: Some("ignore"),
            }),
            guard_output: Some(GuardReport::default()),
            cache: Some("MISS"),
            cache_level: Some("edge"),
            cache_error: Some(ErrorCode::KvUnavailable),
            store_error: Some(ErrorCode::KvUnavailable),
            key_id: Some("k_1".into()),
            tenant: Some("acme".into()),
            accounting: Some(UsageLog {
                key_id: Some("k_2".into()),
                tenant: Some("t".into()),
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                cost_usd: Some(0.000_123_45),
                cache_hit: true,
                limits: "exact",
                accounting_error: Some("kv: down".into()),
            }),
            telemetry_error: Some("otlp: 503".into()),
            mcp: Some(McpLog { server: Some("tools".into()), code: Some(-32600), ..McpLog::new(5, 10) }),
            rate_headers: RateHeaders::default(),
        };
        let forwarded = LogRecord {
            ts: 1_700_000_000_000,
            request_id: "r".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            endpoint: Some("chat".into()),
            provider: Some("openai"),
            attempts: vec![attempt("ok", None)],
            status: 200,
            prompt_tokens: Some(1),
            completion_tokens: Some(2),
            tenant: Some("acme".into()),
            accounting: Some(UsageLog { total_tokens: 3, cost_usd: None, limits: "none", ..UsageLog::default() }),
            ..LogRecord::default()
        };
        let mut costs = LogRecord::default();
        for record in [full, forwarded, LogRecord::default()] {
            assert_eq!(record.to_json(), serde_json::to_string(&record).unwrap());
        }
        for cost in [0.0, 1.0, 1e-12, 123_456.789, f64::NAN, f64::INFINITY] {
            costs.accounting = Some(UsageLog { cost_usd: Some(cost), ..UsageLog::default() });
            assert_eq!(costs.to_json(), serde_json::to_string(&costs).unwrap(), "{cost}");
        }
    }
}
