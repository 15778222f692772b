//! The ports: everything the core needs from the world, implemented once per host
//! (`src/host/`) and in memory for native tests (`testing.rs`). Nothing else in
//! `src/gateway/` touches a runtime API. `memory` has in-memory versions for tests and benches.
//!
//! The traits use `async fn` because every host is single-threaded wasm: the futures are not
//! `Send`, and callers are generic over the host (no `dyn`), so the lint is moot here.
#![allow(async_fn_in_trait)]

use crate::gateway::error::Result;

pub mod cas;
pub mod counter;
pub mod lock;
pub mod memory;
pub mod signatures;

pub use counter::Counter;
use signatures::PublicKey;

/// Key-value store (Cloudflare KV namespace, Spin key-value store). A store failure is
/// `GatewayError::kv_unavailable` (a retryable 503 naming no runtime internals), from every host.
pub trait Kv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// `ttl_secs`: expire the entry where the host supports it (Cloudflare: at least 60 s).
    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<()>;
    async fn delete(&self, key: &str) -> Result<()>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// Shortest gap between two writes of one KV entry by one writer: Cloudflare KV accepts at
/// most one write per second to the same key (more are refused with 429). The per-isolate
/// aggregates (usage and tally shards) wait it out inside their after-response work.
pub const SAME_KEY_WRITE_GAP_MS: u64 = 1_000;

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
/// hands it back to the host untouched (stream passthrough) or reads it with `read_body`. The
/// request is lent, not given: the hosts only read it, and the caller keeps it for a retry
/// (`Retry-After`) without copying it first.
pub trait Upstream {
    type Body;
    async fn send(
        &self,
        request: &http::Request<Vec<u8>>,
        timeout_ms: u64,
    ) -> std::result::Result<http::Response<Self::Body>, UpstreamError>;
    /// Reads a whole body, failing once it exceeds `limit` bytes.
    async fn read_body(&self, body: Self::Body, limit: usize) -> std::result::Result<Vec<u8>, UpstreamError>;
}

/// Reads an origin body chunk by chunk against a limit: hosts use it in `read_body`, so a body
/// without `Content-Length` (or one that lies) is refused at the chunk that crosses the
/// limit, never buffered whole first.
///
/// ```ignore
/// let mut body = BodyLimit::new(limit);
/// while let Some(chunk) = stream.next().await {
///     body.push(&chunk.map_err(|e| UpstreamError::Body(e.to_string()))?)?;
/// }
/// Ok(body.finish())
/// ```
#[derive(Debug)]
pub struct BodyLimit {
    limit: usize,
    bytes: Vec<u8>,
}

impl BodyLimit {
    pub fn new(limit: usize) -> Self {
        BodyLimit { limit, bytes: Vec::new() }
    }

    /// Adds a chunk; fails (keeping nothing more) once the body exceeds the limit.
    pub fn push(&mut self, chunk: &[u8]) -> std::result::Result<(), UpstreamError> {
        if self.bytes.len().saturating_add(chunk.len()) > self.limit {
            self.bytes = Vec::new();
            return Err(UpstreamError::Body(format!("response exceeds {} bytes", self.limit)));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
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
    /// 16 hex digits of 8 random bytes: the id of a shard, a lock holder, an instance.
    fn random_id(&self) -> String {
        let mut bytes = [0u8; 8];
        self.random_bytes(&mut bytes);
        crate::gateway::util::text::hex(&bytes)
    }
    /// Waits `ms` (a `Retry-After` the gateway honours itself).
    async fn sleep(&self, ms: u64);
}

/// Public-key signatures with SHA-256 (RS256, ES256): see `signatures` for why a port.
pub trait Signatures: Clock {
    /// Whether `signature` is `key`'s signature of `message` (RS256 for an RSA key, ES256 with
    /// the JWS `r || s` encoding for a P-256 one). An unusable key or signature is `false`.
    #[cfg(feature = "rustcrypto")]
    async fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        signatures::rustcrypto::verify(key, message, signature)
    }
    #[cfg(not(feature = "rustcrypto"))]
    async fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool;

    /// The RS256 signature of `message` with the RSA private key `pkcs8` (a DER
    /// `PrivateKeyInfo`); `None` when the key cannot sign.
    #[cfg(feature = "rustcrypto")]
    async fn sign_rs256(&self, pkcs8: &[u8], message: &[u8]) -> Option<Vec<u8>> {
        let mut seed = [0u8; 32];
        self.random_bytes(&mut seed);
        signatures::rustcrypto::sign_rs256(pkcs8, message, seed)
    }
    #[cfg(not(feature = "rustcrypto"))]
    async fn sign_rs256(&self, pkcs8: &[u8], message: &[u8]) -> Option<Vec<u8>>;
}

/// A cache local to where the gateway runs, in front of KV for cached answers: Cloudflare's
/// Cache API (one per location, no KV read). Best effort: a failure is a miss or nothing
/// stored, never an error (KV stays the cache of record). A host without one keeps these
/// defaults: nothing found, nothing stored.
pub trait EdgeCache {
    async fn edge_get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    async fn edge_put(&self, _key: &str, _value: &[u8], _ttl_secs: u64) {}
    async fn edge_delete(&self, _key: &str) {}
}

/// Everything a host provides. The Background port of DESIGN.md is not a trait: the pipeline
/// returns its after-response work as data (`pipeline::Deferred`) and each host decides when
/// to run it (Cloudflare: `waitUntil`; Spin: after the response body is written).
pub trait Ports: Kv + Upstream + Secrets + Clock + Counter + EdgeCache + Signatures {}
impl<T: Kv + Upstream + Secrets + Clock + Counter + EdgeCache + Signatures> Ports for T {}

#[cfg(test)]
mod tests {
    use super::*;

    /// M6: a body without Content-Length is refused at the chunk that crosses the limit, not
    /// after it was read whole (hosts read origin bodies through `BodyLimit`).
    #[test]
    fn body_limit_stops_at_the_crossing_chunk() {
        let mut body = BodyLimit::new(10);
        assert!(body.push(b"12345").is_ok());
        assert!(body.push(b"67890").is_ok());
        assert_eq!(body.push(b"1"), Err(UpstreamError::Body("response exceeds 10 bytes".into())));
        let mut body = BodyLimit::new(10);
        body.push(b"abc").unwrap();
        assert_eq!(body.finish(), b"abc");
    }
}
