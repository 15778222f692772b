//! The last phase, after the response is out: cache fill, usage and cost accounting, and the
//! log line. The pipeline hands it to the host as data (`Deferred`); each host decides when it
//! runs (Cloudflare: `waitUntil`; Spin: after the response body is written).

use crate::gateway::dialect::responses::Keep;
use crate::gateway::features::usage::{charged_usage, Accounting, Outcome};
use crate::gateway::features::{cache, housekeeping};
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
    /// A Responses API response to store (once it is known, for streams at their end).
    pub keep: Option<Keep>,
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
            // A stream without the origin's final usage (cut, stopped, left by the client, or
            // an origin that ignores `include_usage`) is charged at least the gateway's count.
            let charged = charged_usage(summary.usage, summary.estimated, summary.completed);
            self.log.set_usage(Some(charged).filter(|u| u.total() > 0));
            self.log.stream_completed = Some(summary.completed);
            self.log.stream_stopped = summary.stopped;
        }
        if let Some((key, entry, ttl)) = self.pending.cache_fill.take() {
            if let Err(e) = ports.put(&key, &entry, Some(ttl)).await {
                self.log.cache_error = Some(e.code);
            }
        }
        if let Some(keep) = self.pending.keep.take() {
            if let Some((key, record)) = keep.encode() {
                if let Err(e) = ports.put(&key, &record, Some(keep.ttl_secs)).await {
                    self.log.store_error = Some(e.code);
                }
            }
        }
        if let Some(accounting) = self.pending.accounting {
            let usage = match (self.log.prompt_tokens, self.log.completion_tokens) {
                (None, None) => None,
                (p, c) => Some(Usage { prompt_tokens: p.unwrap_or(0), completion_tokens: c.unwrap_or(0) }),
            };
            let cache_hit = self.log.cache == Some(cache::Status::Hit.as_str());
            let outcome = Outcome { usage, status: self.log.status, latency_ms: self.log.latency_ms, cache_hit };
            let mut fields = accounting.complete(ports, outcome).await;
            self.log.tenant = fields.tenant.take();
            fields.key_id = None;
            self.log.accounting = Some(fields);
        }
        // A store without TTLs (Spin) is swept now and then: expired counters, finished usage
        // shards, stale cache entries. Hosts that keep state have TTLs and few shards.
        if !ports.keeps_state() {
            let mut roll = [0u8; 1];
            ports.random_bytes(&mut roll);
            if roll[0] % housekeeping::SWEEP_ONE_IN == 0 {
                if let Err(e) = housekeeping::sweep(ports).await {
                    self.log.detail.get_or_insert_with(|| format!("housekeeping: {}", e.message));
                }
            }
        }
        serde_json::to_string(&self.log).unwrap_or_default()
    }
}
