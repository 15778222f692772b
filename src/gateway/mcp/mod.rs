//! MCP at the edge: `/mcp` (and `/mcp/{server}`) speaks the Model Context Protocol's
//! Streamable HTTP transport — the current revision (2026-07-28, stateless) and the
//! `initialize`-based ones (2025-03-26 … 2025-11-25, with sessions) — in front of the MCP
//! servers in config, governed by the same keys, tenants, limits, guardrails and usage as
//! model calls.
//!
//! * `jsonrpc`: framing, error codes and the HTTP status each error rides in
//! * `protocol`: eras, version negotiation, the modern envelope and its mirrored headers
//! * `config`: `mcp_servers` and `mcp_policies`, checked with paths and suggestions
//! * `policy`: who may use which server and tool, per-tool limits, `server__tool` names
//! * `session`: gateway sessions and the upstream sessions behind them, in KV
//! * `upstream`: the gateway as a client of one upstream (era, handshake, request)
//! * `catalog`: the upstreams' listings, cached per isolate
//! * `stream`: the pump stage an upstream's answer streams through
//! * `handler`: one request, method by method; `log`: its log fields; `state`: isolate memos

pub mod catalog;
pub mod config;
pub mod handler;
pub mod jsonrpc;
pub mod log;
pub mod policy;
pub mod protocol;
pub mod session;
pub mod state;
pub mod stream;
pub mod upstream;

pub use config::McpConfig;
pub use handler::{handle, McpAnswer, McpBody, McpEnv, McpRequest};
pub use log::McpLog;
pub use state::McpState;
pub use stream::{McpOutcome, McpStream};

#[cfg(test)]
mod tests;
