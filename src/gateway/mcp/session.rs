//! Gateway sessions (legacy clients) and the upstream sessions behind them, in KV, so that any
//! isolate or instance can serve a session's next request.
//!
//! | KV entry | value |
//! |---|---|
//! | `mcp:session:<id>` | [`Session`]: owner key id, negotiated version, the client's info and capabilities, and per legacy upstream its `Mcp-Session-Id` |
//! | `mcp:upstream:<server>:<key id>` | [`UpstreamSession`] a modern client's calls share with a legacy upstream |
//!
//! A session id is 24 random bytes, base64url (32 characters): unguessable, and bound to the
//! key that opened it: presented with another key it does not exist (404), as the spec's
//! session-hijacking advice asks. Sessions expire [`SESSION_TTL_SECS`] after they were opened
//! (KV TTL on Cloudflare; on Spin readers check `expires_ms`). Cloudflare KV is eventually
//! consistent across locations: a session opened in one location may take up to ~60 s to be
//! readable in another (within a location it is at once).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::error::Result;
use crate::gateway::features::keys::base64url;
use crate::gateway::ports::{Clock, Kv};

pub const SESSION_PREFIX: &str = "mcp:session:";
pub const UPSTREAM_PREFIX: &str = "mcp:upstream:";
pub const SESSION_TTL_SECS: u64 = 24 * 3600;

/// One gateway session, opened by a legacy client's `initialize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The negotiated (legacy) protocol version.
    pub version: String,
    /// The key that opened it; only that key may use it.
    pub key_id: String,
    /// Set for sessions opened on `/mcp/{server}`: they are valid there only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<Value>,
    #[serde(default)]
    pub capabilities: Value,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Server name → the upstream session this gateway session holds there (legacy upstreams).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream: BTreeMap<String, UpstreamSession>,
}

/// A session with a legacy upstream: its id (servers may not assign one) and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub version: String,
}

/// A fresh session id.
pub fn new_id(clock: &impl Clock) -> String {
    let mut bytes = [0u8; 24];
    clock.random_bytes(&mut bytes);
    base64url(&bytes)
}

/// Whether a presented id has our shape (checked before any KV read).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn session_key(id: &str) -> String {
    format!("{SESSION_PREFIX}{id}")
}

fn upstream_key(server: &str, key_id: &str) -> String {
    format!("{UPSTREAM_PREFIX}{server}:{key_id}")
}

/// The live session `id`, if any (expired, malformed or unreadable entries are absent).
pub async fn load(kv: &impl Kv, id: &str, now_ms: u64) -> Result<Option<Session>> {
    if !valid_id(id) {
        return Ok(None);
    }
    let Some(bytes) = kv.get(&session_key(id)).await? else { return Ok(None) };
    Ok(serde_json::from_slice::<Session>(&bytes).ok().filter(|s| s.expires_ms > now_ms))
}

pub async fn store(kv: &impl Kv, id: &str, session: &Session, now_ms: u64) -> Result<()> {
    let bytes = serde_json::to_vec(session).unwrap_or_default();
    let ttl = session.expires_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
    kv.put(&session_key(id), &bytes, Some(ttl)).await
}

pub async fn delete(kv: &impl Kv, id: &str) -> Result<()> {
    kv.delete(&session_key(id)).await
}

/// The upstream session a key's modern (sessionless) calls share with a legacy server.
pub async fn load_shared(kv: &impl Kv, server: &str, key_id: &str) -> Option<UpstreamSession> {
    let bytes = kv.get(&upstream_key(server, key_id)).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

pub async fn store_shared(kv: &impl Kv, server: &str, key_id: &str, upstream: &UpstreamSession) -> Result<()> {
    let bytes = serde_json::to_vec(upstream).unwrap_or_default();
    kv.put(&upstream_key(server, key_id), &bytes, Some(SESSION_TTL_SECS)).await
}

pub async fn forget_shared(kv: &impl Kv, server: &str, key_id: &str) -> Result<()> {
    kv.delete(&upstream_key(server, key_id)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::UpstreamError;
    use serde_json::json;

    #[test]
    fn sessions_round_trip_and_expire() {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let id = new_id(&host);
        assert!(valid_id(&id), "{id}");
        assert_ne!(id, new_id(&host));
        let now = host.now_ms();
        let mut session = Session {
            version: "2025-11-25".into(),
            key_id: "k_1".into(),
            server: None,
            client_info: Some(json!({"name": "c"})),
            capabilities: json!({}),
            created_ms: now,
            expires_ms: now + 1000,
            upstream: BTreeMap::new(),
        };
        session
            .upstream
            .insert("files".into(), UpstreamSession { id: Some("up-1".into()), version: "2025-06-18".into() });
        block_on(store(&host, &id, &session, now)).unwrap();
        assert_eq!(block_on(load(&host, &id, now)).unwrap(), Some(session.clone()));
        assert_eq!(block_on(load(&host, &id, now + 1000)).unwrap(), None, "expired");
        assert_eq!(block_on(load(&host, "../etc", now)).unwrap(), None, "malformed ids are never looked up");
        block_on(delete(&host, &id)).unwrap();
        assert_eq!(block_on(load(&host, &id, now)).unwrap(), None);

        let shared = UpstreamSession { id: None, version: "2025-11-25".into() };
        block_on(store_shared(&host, "files", "k_1", &shared)).unwrap();
        assert_eq!(block_on(load_shared(&host, "files", "k_1")), Some(shared));
        assert_eq!(block_on(load_shared(&host, "files", "k_2")), None);
    }
}
