//! The `mcp` part of a request's log line: method, server, tool, outcome, latency and bytes —
//! never argument values or results (guardrail effects appear as rule ids and counts only).

use serde::Serialize;

use crate::gateway::features::guard::GuardReport;
use crate::gateway::mcp::jsonrpc::{self, RpcError};
use crate::gateway::mcp::stream::McpOutcome;

#[derive(Debug, Clone, Default, Serialize)]
pub struct McpLog {
    /// The JSON-RPC method (or the HTTP method for GET/DELETE).
    pub method: String,
    /// The client's protocol version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The tool (prompt, resource) as the upstream names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// ok | tool_error | error | invalid | unauthorized | refused | denied | rate_limited |
    /// upstream_error | timeout | cancelled
    pub status: &'static str,
    /// The JSON-RPC error code the client got, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// The era spoken to the upstream (`modern` / `legacy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'static str>,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Answer bytes sent to the client (streamed answers: counted to the end of the stream).
    pub bytes_out: u64,
    /// Until the answer ended (streamed answers: to the end of the stream).
    pub latency_ms: u64,
    /// Argument guardrails: rule ids and counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
    /// Result spans redacted.
    #[serde(skip_serializing_if = "is_zero")]
    pub redacted_result: u32,
    /// Servers a listing had to leave out (they failed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_servers: Vec<String>,
    /// Whether the answer was streamed (its outcome is filled in at the stream's end).
    #[serde(skip)]
    pub streamed: bool,
    #[serde(skip)]
    pub started_ms: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl McpLog {
    pub fn new(started_ms: u64, bytes_in: usize) -> Self {
        McpLog { status: "ok", started_ms, bytes_in: bytes_in as u64, ..McpLog::default() }
    }

    /// Records the error the client got.
    pub fn error(&mut self, e: &RpcError) {
        self.code = Some(e.code);
        self.status = status_of(e.code);
    }

    /// The end of a streamed answer.
    pub fn finish_stream(&mut self, outcome: McpOutcome, now_ms: u64) {
        self.bytes_out = outcome.bytes;
        self.latency_ms = now_ms.saturating_sub(self.started_ms);
        self.redacted_result = outcome.redacted;
        self.code = outcome.code;
        self.status = if !outcome.answered {
            "cancelled" // the client left before the answer
        } else if outcome.denied {
            "denied"
        } else if let Some(code) = outcome.code {
            status_of(code)
        } else if outcome.is_error {
            "tool_error"
        } else {
            "ok"
        };
    }

    /// The status the usage record counts (errors are >= 400; a tool that reported an error
    /// counts as one, 424).
    pub fn usage_status(&self) -> u16 {
        match self.status {
            "ok" => 200,
            "tool_error" => 424,
            "unauthorized" => 401,
            "refused" | "denied" => 403,
            "rate_limited" => 429,
            "upstream_error" => 502,
            "timeout" => 504,
            "cancelled" => 499,
            _ => 400,
        }
    }
}

/// The log status of a JSON-RPC error code.
pub fn status_of(code: i64) -> &'static str {
    match code {
        jsonrpc::UNAUTHORIZED => "unauthorized",
        jsonrpc::FORBIDDEN => "refused",
        jsonrpc::RATE_LIMITED => "rate_limited",
        jsonrpc::UPSTREAM_ERROR => "upstream_error",
        jsonrpc::UPSTREAM_TIMEOUT => "timeout",
        jsonrpc::PARSE_ERROR
        | jsonrpc::INVALID_REQUEST
        | jsonrpc::METHOD_NOT_FOUND
        | jsonrpc::HEADER_MISMATCH
        | jsonrpc::UNSUPPORTED_PROTOCOL_VERSION => "invalid",
        _ => "error",
    }
}
