//! The one structured log line a request leaves (after its response).

use serde::Serialize;

use crate::gateway::error::ErrorCode;
use crate::gateway::features::guard::GuardReport;
use crate::gateway::features::limits::RateHeaders;
use crate::gateway::features::usage::UsageLog;
use crate::gateway::forward::AttemptLog;
use crate::gateway::mcp::McpLog;
use crate::gateway::types::Usage;

/// One structured log line per request. Holds no secret: no key, no credential, and the
/// origin only as scheme://host:port (query strings may carry provider keys).
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
}
