//! The ports: everything the core needs from the world, implemented once per host
//! (`src/host/`) and in memory for native tests (`testing.rs`). Nothing else in
//! `src/gateway/` touches a runtime API. `memory` has in-memory versions for tests and benches.
//!
//! The traits use `async fn` because every host is single-threaded wasm: the futures are not
//! `Send`, and callers are generic over the host (no `dyn`), so the lint is moot here.
#![allow(async_fn_in_trait)]

use crate::gateway::error::Result;

pub mod counter;
pub mod lock;
pub mod memory;

pub use counter::Counter;

/// Key-value store (Cloudflare KV namespace, Spin key-value store).
pub trait Kv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// `ttl_secs`: expire the entry where the host supports it (Cloudflare: at least 60 s).
    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<()>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Why an outbound request produced no response. Drives failover (all are retryable on the
/// next origin) and the client-facing 502/504.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// DNS, connection refused or reset before a response head arrived.
    Connect(String),
    /// No response head within the attempt's timeout.
    Timeout,
    /// The response head arrived but reading its body failed.
    Body(String),
}

/// One outbound HTTP exchange. `Body` is the host's streaming body type: the core either
/// hands it back to the host untouched (stream passthrough) or reads it with `read_body`.
pub trait Upstream {
    type Body;
    async fn send(
        &self,
        request: http::Request<Vec<u8>>,
        timeout_ms: u64,
    ) -> std::result::Result<http::Response<Self::Body>, UpstreamError>;
    /// Reads a whole body, failing once it exceeds `limit` bytes.
    async fn read_body(&self, body: Self::Body, limit: usize) -> std::result::Result<Vec<u8>, UpstreamError>;
}

/// Host secrets / variables; resolves the `$NAME` references in config.
pub trait Secrets {
    fn secret(&self, name: &str) -> Option<String>;
}

/// Time and randomness.
pub trait Clock {
    fn now_ms(&self) -> u64;
    /// Cryptographically secure random bytes (request ids, keys).
    fn random_bytes(&self, buf: &mut [u8]);
    /// Waits `ms` (a `Retry-After` the gateway honours itself).
    async fn sleep(&self, ms: u64);
}

/// Everything a host provides. The Background port of DESIGN.md is not a trait: the pipeline
/// returns its after-response work as data (`pipeline::Deferred`) and each host decides when
/// to run it (Cloudflare: `waitUntil`; Spin: after the response body is written).
pub trait Ports: Kv + Upstream + Secrets + Clock + Counter {}
impl<T: Kv + Upstream + Secrets + Clock + Counter> Ports for T {}
