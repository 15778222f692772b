//! What the gateway does to a request besides moving it: keys, limits, usage, cache,
//! guardrails, templates, normalization, telemetry. Each feature owns its config check.

pub mod cache;
pub mod guard;
pub mod keys;
pub mod limits;
pub mod normalize;
pub mod telemetry;
pub mod template;
pub mod usage;
