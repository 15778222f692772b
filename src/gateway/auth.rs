//! Authentication and authorization of API keys (DESIGN.md §2 steps 2-3).
//!
//! How long a revoked (or disabled, or rotated-away) key can still pass:
//! * **in an isolate that recently saw it succeed**: at most [`MEMO_TTL_MS`] (5 s) — positive
//!   lookups are memoized per isolate for that long. Negative results (unknown, expired,
//!   disabled) are never memoized, and expiry is checked on every request, memo or not, so an
//!   expired key is refused from its `expires_at` second on.
//! * **plus the store's propagation delay**: Cloudflare KV is eventually consistent; a revoke
//!   written in one location can take up to 60 s to be seen by reads in another (reads in the
//!   writing location see it at once). Spin's key-value store is read-your-writes on one host.
//!
//! So the bound is 5 s after the revoke is visible in KV at the request's location: 5 s on
//! Spin and in the location that received the admin call, up to 65 s elsewhere on Cloudflare.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use http::HeaderMap;

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::keys::{self, KeyRecord, KeyState};
use crate::gateway::ports::Ports;

/// How long an isolate trusts a successful lookup.
pub const MEMO_TTL_MS: u64 = 5_000;
/// At most this many keys are memoized per isolate; the memo is cleared when full.
const MEMO_MAX: usize = 4096;

/// Per-isolate memo of successful key lookups, keyed by the key's SHA-256 hex (never the key).
/// Kept in `Gateway` next to the config memo.
pub struct AuthMemo {
    ttl_ms: u64,
    entries: RefCell<HashMap<String, (Rc<KeyRecord>, u64)>>,
}

impl Default for AuthMemo {
    fn default() -> Self {
        AuthMemo::new(MEMO_TTL_MS)
    }
}

impl AuthMemo {
    pub fn new(ttl_ms: u64) -> Self {
        AuthMemo { ttl_ms, entries: RefCell::default() }
    }

    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    fn get(&self, hash: &str, now_ms: u64) -> Option<Rc<KeyRecord>> {
        let entries = self.entries.borrow();
        let (record, fetched_at) = entries.get(hash)?;
        (now_ms.saturating_sub(*fetched_at) < self.ttl_ms).then(|| record.clone())
    }

    fn put(&self, hash: String, record: Rc<KeyRecord>, now_ms: u64) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MEMO_MAX {
            let ttl = self.ttl_ms;
            entries.retain(|_, (_, at)| now_ms.saturating_sub(*at) < ttl);
            if entries.len() >= MEMO_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (record, now_ms));
    }

    /// Drops a memoized key (e.g. after a revoke handled by this isolate).
    pub fn forget(&self, hash: &str) {
        self.entries.borrow_mut().remove(hash);
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Authenticates the request's key and authorizes it for `endpoint` (the name the client
/// asked for: an endpoint or a traffic route).
///
/// * no key: 401 `missing_api_key`, unless `public` (then `Ok(None)`);
/// * unknown, malformed, expired or disabled key: 401 `invalid_api_key`, one message for all;
///   on a `public` endpoint such a key is ignored (`Ok(None)`: served anonymously);
/// * valid key not allowed `endpoint`: 403 `endpoint_not_allowed` naming it (not on public
///   endpoints: public means anyone may call it);
/// * KV failure: 500 (fails closed).
///
/// A valid key on a public endpoint is returned, so the request is attributed and limited.
pub async fn authenticate<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    headers: &HeaderMap,
    endpoint: &str,
    public: bool,
) -> Result<Option<Rc<KeyRecord>>> {
    let Some(presented) = keys::presented_key(headers) else {
        return if public { Ok(None) } else { Err(missing_key()) };
    };
    let record = match lookup(ports, memo, presented).await? {
        Some(record) => record,
        None if public => return Ok(None),
        None => return Err(invalid_key()),
    };
    if !public && !record.allows(endpoint) {
        return Err(endpoint_not_allowed(endpoint));
    }
    Ok(Some(record))
}

/// Authenticates the request's key with no endpoint check: for `/mcp`, which authorizes with
/// the key's MCP grant. A key is required (401 `missing_api_key` / `invalid_api_key`).
pub async fn authenticate_key<P: Ports>(ports: &P, memo: &AuthMemo, headers: &HeaderMap) -> Result<Rc<KeyRecord>> {
    let Some(presented) = keys::presented_key(headers) else { return Err(missing_key()) };
    lookup(ports, memo, presented).await?.ok_or_else(invalid_key)
}

/// The active record for a presented key, or `None` for any kind of invalid key.
async fn lookup<P: Ports>(ports: &P, memo: &AuthMemo, presented: &str) -> Result<Option<Rc<KeyRecord>>> {
    if !keys::looks_like_key(presented) {
        return Ok(None);
    }
    let hash = keys::hash_key(presented);
    let now = ports.now_ms();
    // A memo hit does not extend the entry: it expires MEMO_TTL_MS after the KV read.
    let (record, fresh) = match memo.get(&hash, now) {
        Some(record) => (record, false),
        None => match keys::load(ports, &hash).await? {
            Some(record) => (Rc::new(record), true),
            None => return Ok(None),
        },
    };
    if !keys::ct_eq(record.hash.as_bytes(), hash.as_bytes()) || record.state(now) != KeyState::Active {
        memo.forget(&hash);
        return Ok(None);
    }
    if fresh {
        memo.put(hash, record.clone(), now);
    }
    Ok(Some(record))
}

fn missing_key() -> GatewayError {
    GatewayError::unauthorized(
        ErrorCode::MissingApiKey,
        "no API key: send one as `Authorization: Bearer <key>`, `x-api-key: <key>` or `api-key: <key>`",
    )
}

fn invalid_key() -> GatewayError {
    GatewayError::unauthorized(ErrorCode::InvalidApiKey, "the API key is not valid: it is unknown, expired or revoked")
}

fn endpoint_not_allowed(endpoint: &str) -> GatewayError {
    GatewayError::forbidden(
        ErrorCode::EndpointNotAllowed,
        format!("this API key may not call endpoint \"{}\"", crate::gateway::util::text::truncate(endpoint, 64)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::{Clock, UpstreamError};
    use http::StatusCode;

    fn host() -> MemoryHost {
        MemoryHost::new(|_| Err(UpstreamError::Timeout))
    }

    /// Stores a key allowed `endpoints` and returns its plaintext.
    fn add_key(host: &MemoryHost, endpoints: &[&str], f: impl FnOnce(&mut KeyRecord)) -> (String, KeyRecord) {
        let key = keys::generate(host);
        let mut record = KeyRecord {
            id: keys::new_id(host),
            tenant: "acme".into(),
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            created: host.now_ms() / 1000,
            hash: keys::hash_key(&key),
            ..Default::default()
        };
        f(&mut record);
        block_on(keys::store(host, &record)).unwrap();
        (key, record)
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        h
    }

    fn bearer(key: &str) -> HeaderMap {
        headers("authorization", &format!("Bearer {key}"))
    }

    #[test]
    fn auth_matrix() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, record) = add_key(&host, &["chat"], |_| {});
        let (expired, _) = add_key(&host, &["*"], |r| r.expires_at = Some(host.now_ms() / 1000));
        let (disabled, _) = add_key(&host, &["*"], |r| r.disabled = true);
        let auth =
            |h: &HeaderMap, endpoint: &str, public: bool| block_on(authenticate(&host, &memo, h, endpoint, public));

        for h in [bearer(&key), headers("x-api-key", &key), headers("api-key", &key)] {
            assert_eq!(auth(&h, "chat", false).unwrap().unwrap().id, record.id);
        }
        let e = auth(&HeaderMap::new(), "chat", false).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::UNAUTHORIZED, "missing_api_key"));

        let unknown = keys::generate(&host);
        let messages: Vec<GatewayError> = [unknown.as_str(), &expired, &disabled, "sk-not-ours", "egw_short"]
            .iter()
            .map(|k| auth(&bearer(k), "chat", false).unwrap_err())
            .collect();
        for e in &messages {
            assert_eq!((e.status, e.code.as_str()), (StatusCode::UNAUTHORIZED, "invalid_api_key"));
            assert_eq!(e.message, messages[0].message, "one message, whatever the reason");
        }
        for (e, k) in messages.iter().zip([&unknown, &expired, &disabled]) {
            assert!(!e.message.contains(k.as_str()) && !String::from_utf8_lossy(&e.body()).contains(k.as_str()));
        }

        let e = auth(&bearer(&key), "embeddings", false).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::FORBIDDEN, "endpoint_not_allowed"));
        assert!(e.message.contains("\"embeddings\""), "{}", e.message);
        assert!(!e.message.contains(&key));

        // Public endpoints: no key is fine, a bad key is ignored, a good key is attributed.
        assert_eq!(auth(&HeaderMap::new(), "open", true).unwrap(), None);
        assert_eq!(auth(&bearer(&disabled), "open", true).unwrap(), None);
        assert_eq!(auth(&bearer(&key), "open", true).unwrap().unwrap().id, record.id);
    }

    #[test]
    fn revoked_key_passes_for_at_most_the_memo_ttl() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, mut record) = add_key(&host, &["*"], |_| {});
        let auth = || block_on(authenticate(&host, &memo, &bearer(&key), "chat", false));
        assert!(auth().is_ok());
        record.disabled = true;
        block_on(keys::store(&host, &record)).unwrap();
        for _ in 0..4 {
            host.advance((MEMO_TTL_MS - 1) / 4);
            assert!(auth().is_ok(), "memoized: still passes inside the bound (hits do not extend it)");
        }
        host.advance((MEMO_TTL_MS - 1) % 4);
        host.advance(1);
        assert_eq!(auth().unwrap_err().code, "invalid_api_key", "refused once the bound has passed");
        host.advance(60_000);
        assert_eq!(auth().unwrap_err().code, "invalid_api_key", "negative results are not memoized into passes");
    }

    #[test]
    fn negative_results_are_never_memoized() {
        let host = host();
        let memo = AuthMemo::default();
        let key = keys::generate(&host);
        let auth = || block_on(authenticate(&host, &memo, &bearer(&key), "chat", false));
        assert!(auth().is_err());
        assert!(memo.is_empty());
        // The key is created right after a refused attempt: it works at once.
        let record = KeyRecord {
            id: "k_aa".into(),
            tenant: "t".into(),
            endpoints: vec!["*".into()],
            hash: keys::hash_key(&key),
            ..Default::default()
        };
        block_on(keys::store(&host, &record)).unwrap();
        assert!(auth().is_ok());
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn expiry_is_checked_on_memoized_keys() {
        let host = host();
        let memo = AuthMemo::default();
        let expires = host.now_ms() / 1000 + 2;
        let (key, _) = add_key(&host, &["*"], |r| r.expires_at = Some(expires));
        let auth = || block_on(authenticate(&host, &memo, &bearer(&key), "chat", false));
        assert!(auth().is_ok());
        host.advance(2_000);
        assert_eq!(auth().unwrap_err().code, "invalid_api_key");
    }

    #[test]
    fn a_record_under_the_wrong_name_is_refused() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, record) = add_key(&host, &["*"], |_| {});
        let other = keys::generate(&host);
        // Copy the record under another key's name: the stored hash no longer matches.
        let bytes = host.kv.borrow()[&keys::record_key(&record.hash)].clone();
        host.kv.borrow_mut().insert(keys::record_key(&keys::hash_key(&other)), bytes);
        assert!(block_on(authenticate(&host, &memo, &bearer(&key), "x", false)).is_ok());
        assert_eq!(
            block_on(authenticate(&host, &memo, &bearer(&other), "x", false)).unwrap_err().code,
            "invalid_api_key"
        );
    }

    #[test]
    fn memo_is_bounded() {
        let memo = AuthMemo::new(1000);
        let record =
            Rc::new(KeyRecord { id: "k_aa".into(), tenant: "t".into(), endpoints: vec![], ..Default::default() });
        for i in 0..MEMO_MAX + 10 {
            memo.put(format!("h{i}"), record.clone(), 0);
        }
        assert!(memo.len() <= MEMO_MAX);
    }
}
