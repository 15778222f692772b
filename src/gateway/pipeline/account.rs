//! The last phase, after the response is out: cache fill, usage and cost accounting, and the
//! log line. The pipeline hands it to the host as data (`Deferred`); each host decides when it
//! runs (Cloudflare: `waitUntil`; Spin: after the response body is written).

use crate::gateway::features::cache;
use crate::gateway::features::usage::{Accounting, Outcome};
use crate::gateway::pipeline::log::LogRecord;
use crate::gateway::pipeline::stream::StreamSummary;
use crate::gateway::ports::Ports;
use crate::gateway::types::Usage;

/// After-response work (the Background port as data): accounting and the log line.
pub struct Deferred {
    pub log: LogRecord,
    pub pending: Pending,
    pub audit: Option<String>,
}

/// Work a request leaves for after its response: filled in by the phases as they run.
#[derive(Default)]
pub struct Pending {
    pub accounting: Option<Accounting>,
    /// A deterministic answer to store: (KV key, encoded entry, TTL seconds).
    pub cache_fill: Option<(String, Vec<u8>, u64)>,
}

impl Deferred {
    /// Runs the work once the response is out and returns the structured log line for the
    /// host to emit. `stream` is the pump's summary when the body was streamed — taken when the
    /// stream ended or the client went away, so partial usage is still counted.
    pub async fn complete<P: Ports>(mut self, ports: &P, stream: Option<StreamSummary>) -> String {
        if let Some(audit) = self.audit {
            return audit;
        }
        if let Some(summary) = stream {
            self.log.set_usage(summary.usage);
            self.log.stream_completed = Some(summary.completed);
            if let Some(mcp) = self.log.mcp.as_mut() {
                mcp.finish_stream(summary.mcp.unwrap_or_default(), ports.now_ms());
            }
        }
        if let Some((key, entry, ttl)) = self.pending.cache_fill.take() {
            if let Err(e) = ports.put(&key, &entry, Some(ttl)).await {
                self.log.cache_error = Some(e.code);
            }
        }
        if let Some(accounting) = self.pending.accounting {
            let usage = match (self.log.prompt_tokens, self.log.completion_tokens) {
                (None, None) => None,
                (p, c) => Some(Usage { prompt_tokens: p.unwrap_or(0), completion_tokens: c.unwrap_or(0) }),
            };
            let cache_hit = self.log.cache == Some(cache::Status::Hit.as_str());
            // An MCP tool call counts its own outcome (a refused call is an HTTP 200).
            let (status, latency_ms) = match &self.log.mcp {
                Some(mcp) => (mcp.usage_status(), mcp.latency_ms),
                None => (self.log.status, self.log.latency_ms),
            };
            let outcome = Outcome { usage, status, latency_ms, cache_hit };
            let mut fields = accounting.complete(ports, outcome).await;
            self.log.tenant = fields.tenant.take();
            fields.key_id = None;
            self.log.accounting = Some(fields);
        }
        serde_json::to_string(&self.log).unwrap_or_default()
    }
}
