//! Observability: OpenTelemetry export (spans and metrics over OTLP/HTTP protobuf), W3C trace
//! context, and the KV tallies behind `GET /admin/metrics` and the console's charts.
//!
//! * `config`: the config's `telemetry` section (collector URL, secret headers, service
//!   name, sample ratio).
//! * `context`: `traceparent`/`tracestate` parsed, continued and forwarded to the origin.
//! * `span`: one SERVER span per request after the GenAI semantic conventions.
//! * `metrics`: request/token/latency/cost metrics aggregated per isolate (OTLP DELTA).
//! * `otlp`: the protobuf encoding, by hand.
//! * `batch`: the per-isolate batch, exported after the response by the requests themselves.
//! * `tally`: per-day request tallies by endpoint/tenant/status/code in KV (Prometheus).
//!
//! The pipeline starts a `SpanContext` once the config is known, forwards `propagation(..)`
//! headers to the origin, and in its after-response work (`Deferred::complete`) records the
//! request into the tallies and the batch and flushes both.

pub mod batch;
pub mod config;
pub mod context;
pub mod metrics;
pub mod otlp;
pub mod span;
pub mod tally;

pub use batch::Telemetry;
pub use config::TelemetryConfig;
pub use context::{propagation, SpanContext, TraceParent};
pub use span::RequestFacts;
pub use tally::TallyBook;

#[cfg(test)]
mod tests;
