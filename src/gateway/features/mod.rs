//! What the gateway does to a request besides moving it: keys, JWT identity, access approval,
//! limits, usage, cache, guardrails, templates, normalization, telemetry. Each feature owns its
//! config check.

pub mod access;
pub mod cache;
pub mod coalesce;
pub mod guard;
pub mod housekeeping;
pub mod identity;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod normalize;
pub mod telemetry;
pub mod template;
pub mod usage;
