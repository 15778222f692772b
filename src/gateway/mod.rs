//! The host-agnostic core. It knows HTTP semantics and JSON and talks to the world only
//! through the traits in `ports`; `src/host/` adapts each runtime to them.
//!
//! Layers, bottom to top; each module imports only from layers below it (and its own
//! folder), which `scripts/check-layers` enforces:
//!
//! 1. `error`, `check`, `util`, `types`: one error type, config-check plumbing, helpers
//! 2. `ports`: what a host provides (KV, upstream HTTP, secrets, clock, counters)
//! 3. `wire/`: SSE framing and OpenAI's shapes (the internal lingua franca)
//! 4. `features/`: keys, identity (JWT), access (approval), limits, usage, cache, guard,
//!    template, normalize
//! 5. `dialect/` (what clients speak) and `providers/` (what origins speak)
//! 6. `mcp/`: the MCP endpoint (protocol, upstream MCP servers, tool governance)
//! 7. `config`: the typed config, composing the features' checks
//! 8. `routing`, `auth`, `forward`, `catalog`, `admin/`
//! 9. `pipeline/`: the request lifecycle as named phases

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod check;
pub mod error;
pub mod types;
pub mod util;

pub mod ports;

pub mod wire;

pub mod features;

pub mod dialect;
pub mod providers;

pub mod mcp;

pub mod config;

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod forward;
pub mod routing;

pub mod pipeline;

#[cfg(test)]
pub(crate) mod test_util;

pub use error::GatewayError;
pub use pipeline::{Deferred, Exchange, Gateway, ResponseBody};
