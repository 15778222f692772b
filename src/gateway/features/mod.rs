//! What the gateway does to a request besides moving it: keys, limits, usage, cache,
//! guardrails, templates, normalization. Each feature owns its config check.

pub mod cache;
pub mod guard;
pub mod housekeeping;
pub mod keys;
pub mod limits;
pub mod normalize;
pub mod template;
pub mod usage;
