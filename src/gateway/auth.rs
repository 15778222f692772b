//! Authentication and authorization (DESIGN.md §2 steps 2-3): API keys, JWTs from trusted
//! issuers (`features::identity`), and access approval (`features::access`).
//!
//! A presented credential (`Authorization: Bearer`, `x-api-key`, `api-key`) shaped like a JWT
//! goes to the JWT verifier when the config trusts an issuer; anything else is an API key. Both
//! end as the same key-shaped policy ([`KeyRecord`]): a JWT subject's id is `j_…`, derived
//! from issuer and subject, so limits, budgets, usage and grants apply to it as to a key.
//!
//! How long a revoked (or disabled, or rotated-away) key can still pass:
//! * **in an isolate that recently saw it succeed**: at most [`MEMO_TTL_MS`] (5 s) — positive
//!   lookups are memoized per isolate for that long. Well-formed keys found unknown or refused
//!   (expired, revoked) are memoized as unknown for as long (a made-up or revoked key costs
//!   one KV read per 5 s; a key made before ids were in keys, two); expiry is checked on every request,
//!   memo or not, so an expired key is refused from its `expires_at` second on. From half its life on
//!   ([`time::refresh_due`]) a memoized record is read again once, after the response of the
//!   request that found it due ([`refresh_due`]), while every request keeps using the memo; so
//!   a key used at a steady pace of at least once per 5 s (or never more than 2.5 s apart)
//!   never lapses and no request waits for a KV read of its key: no burst of reads when it
//!   would expire, and a KV hiccup then fails no request.
//! * **plus the store's propagation delay**: Cloudflare KV is eventually consistent; a revoke
//!   written in one location can take up to 60 s to be seen by reads in another (reads in the
//!   writing location see it at once). Spin's key-value store is read-your-writes on one host.
//!
//! So the bound is 5 s after the revoke is visible in KV at the request's location: 5 s on
//! Spin and in the location that received the admin call, up to 65 s elsewhere on Cloudflare.
//! JWTs cannot be revoked (they expire); grants follow `features::access` (a new grant counts
//! on the next request, a revoked one within 5 s, an expired one at once).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use http::HeaderMap;

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::access::{self, GrantMemo};
use crate::gateway::features::identity::{self, IdentityMemo, JwtConfig};
use crate::gateway::features::keys::{self, KeyRecord, KeyState};
use crate::gateway::ports::Ports;
use crate::gateway::util::time;

/// How long an isolate trusts a lookup: a found key, or a well-formed key found unknown.
pub const MEMO_TTL_MS: u64 = 5_000;
/// At most this many keys (and as many unknown ones) are memoized per isolate; a full memo
/// drops its stale entries, then everything.
const MEMO_MAX: usize = 4096;
/// At most this many keys wait for their refresh at a time (a host that never runs
/// [`refresh_due`] leaves its memo entries to expire, as if there were no refresh).
const DUE_MAX: usize = 64;

/// Per-isolate memo of key lookups, keyed by the key's SHA-256 hex (never the key): records
/// found, and hashes found unknown (so a client repeating a made-up key costs one KV read per
/// memo period, not one per request); plus the identity state (verified JWTs, JWKS) and live
/// grants. Kept in `Gateway` next to the config memo.
pub struct AuthMemo {
    ttl_ms: u64,
    entries: RefCell<HashMap<String, Memoized>>,
    unknown: RefCell<HashMap<String, u64>>,
    /// Hashes of memoized keys found due for a refresh, for [`refresh_due`].
    due: RefCell<Vec<String>>,
    pub identity: IdentityMemo,
    pub grants: GrantMemo,
}

struct Memoized {
    record: Rc<KeyRecord>,
    fetched_at: u64,
    /// It is due for a refresh (see [`time::refresh_due`]), listed in `AuthMemo::due`. Left
    /// set if the refresh is dropped mid-read: the entry then simply expires.
    refreshing: bool,
}

impl Default for AuthMemo {
    fn default() -> Self {
        AuthMemo::new(MEMO_TTL_MS)
    }
}

impl AuthMemo {
    pub fn new(ttl_ms: u64) -> Self {
        AuthMemo {
            ttl_ms,
            entries: RefCell::default(),
            unknown: RefCell::default(),
            due: RefCell::default(),
            identity: IdentityMemo::default(),
            grants: GrantMemo::default(),
        }
    }

    fn is_unknown(&self, hash: &str, now_ms: u64) -> bool {
        self.unknown.borrow().get(hash).is_some_and(|at| now_ms.saturating_sub(*at) < self.ttl_ms)
    }

    /// A key found unknown or refused: its record (if memoized) goes, and it is memoized as
    /// unknown.
    fn refuse(&self, hash: String, now_ms: u64) {
        self.entries.borrow_mut().remove(&hash);
        let mut unknown = self.unknown.borrow_mut();
        if unknown.len() >= MEMO_MAX {
            let ttl = self.ttl_ms;
            unknown.retain(|_, at| now_ms.saturating_sub(*at) < ttl);
            if unknown.len() >= MEMO_MAX {
                unknown.clear();
            }
        }
        unknown.insert(hash, now_ms);
    }

    pub fn ttl_ms(&self) -> u64 {
        self.ttl_ms
    }

    /// The memoized record of a key hash, if it has not expired; one due for a refresh
    /// ([`time::refresh_due`]) is listed for [`refresh_due`] (once).
    fn recall(&self, hash: &str, now_ms: u64) -> Option<Rc<KeyRecord>> {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.get_mut(hash)?;
        let age = now_ms.saturating_sub(entry.fetched_at);
        if age >= self.ttl_ms {
            return None;
        }
        if time::refresh_due(age, self.ttl_ms) && !entry.refreshing {
            let mut due = self.due.borrow_mut();
            if due.len() < DUE_MAX {
                entry.refreshing = true;
                due.push(hash.to_string());
            }
        }
        Some(entry.record.clone())
    }

    /// The id of a memoized record, expired or not. A hash's record never changes its id (a
    /// rotation makes a new hash), so with a lapsed entry an older key's `keyid:` entry is read
    /// without its `key:` record first (a current key names its id itself).
    fn known_id(&self, hash: &str) -> Option<String> {
        self.entries.borrow().get(hash).map(|e| e.record.id.clone())
    }

    /// A refresh that could not read the store: the next request lists it again.
    fn refresh_failed(&self, hash: &str) {
        if let Some(entry) = self.entries.borrow_mut().get_mut(hash) {
            entry.refreshing = false;
        }
    }

    fn put(&self, hash: String, record: Rc<KeyRecord>, now_ms: u64) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MEMO_MAX {
            let ttl = self.ttl_ms;
            entries.retain(|_, e| now_ms.saturating_sub(e.fetched_at) < ttl);
            if entries.len() >= MEMO_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, Memoized { record, fetched_at: now_ms, refreshing: false });
    }

    /// Drops a memoized key (e.g. after a revoke handled by this isolate).
    pub fn forget(&self, hash: &str) {
        self.entries.borrow_mut().remove(hash);
        self.unknown.borrow_mut().remove(hash);
    }

    /// Keys memoized, found or unknown.
    pub fn len(&self) -> usize {
        self.entries.borrow().len() + self.unknown.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the caller asks to call: the endpoint's name and how it is guarded.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub name: &'a str,
    /// No credential needed (`public: true`).
    pub public: bool,
    /// Only callers with a grant (`access: approval`).
    pub approval: bool,
}

impl<'a> Target<'a> {
    pub fn new(name: &'a str, public: bool) -> Self {
        Target { name, public, approval: false }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    Key,
    Jwt { issuer: String, subject: String },
}

impl CallerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CallerKind::Key => "key",
            CallerKind::Jwt { .. } => "jwt",
        }
    }
}

/// An authenticated caller: its key-shaped policy, and how it authenticated.
#[derive(Debug, Clone)]
pub struct Caller {
    pub record: Rc<KeyRecord>,
    pub kind: CallerKind,
}

/// The credential a request presents: `Authorization: Bearer`, `x-api-key` or `api-key`, else
/// the one its dialect found (Gemini's `x-goog-api-key` or `?key=`, on Gemini routes only).
pub fn presented<'a>(headers: &'a HeaderMap, dialect_credential: Option<&'a str>) -> Option<&'a str> {
    keys::presented_key(headers).or(dialect_credential.map(str::trim).filter(|k| !k.is_empty()))
}

/// Authenticates the request's credential (see [`presented`]) and authorizes it for `target`
/// (the resolved endpoint).
///
/// * no credential: 401 `missing_api_key`, unless `public` (then `Ok(None)`);
/// * unknown, malformed, expired or disabled key: 401 `invalid_api_key`, one message for all;
///   a refused JWT: 401 with its `token_*` code; on a `public` endpoint such a credential is
///   ignored (`Ok(None)`: served anonymously);
/// * valid caller not allowed the endpoint: 403 `endpoint_not_allowed` naming it (not on
///   public endpoints: public means anyone may call it);
/// * an `approval` endpoint and no live grant for the caller: 403 `approval_required`;
/// * KV failure: 503 `kv_unavailable` with `Retry-After` (fails closed, also on public
///   endpoints: a key that was sent but cannot be checked is not silently ignored); JWKS
///   unavailable: 503.
///
/// A valid caller on a public endpoint is returned, so the request is attributed and limited.
pub async fn authenticate<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    presented: Option<&str>,
    jwt: &JwtConfig,
    target: Target<'_>,
) -> Result<Option<Rc<KeyRecord>>> {
    let Some(caller) = caller(ports, memo, presented, jwt, target.public).await? else { return Ok(None) };
    authorize(ports, memo, caller.record, target).await.map(Some)
}

/// Authorizes an identified caller (see [`caller`]) for `target`, as [`authenticate`] does.
pub async fn authorize<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    record: Rc<KeyRecord>,
    target: Target<'_>,
) -> Result<Rc<KeyRecord>> {
    if target.public {
        return Ok(record);
    }
    if !record.allows(target.name) {
        return Err(endpoint_not_allowed(target.name));
    }
    if target.approval && !access::has_grant(ports, &memo.grants, &record.id, target.name, ports.now_ms()).await? {
        return Err(approval_required(target.name));
    }
    Ok(record)
}

/// Who is calling, for requests that name no endpoint (e.g. `GET /v1/responses/{id}`): no
/// credential — or a placeholder that is neither a gateway key nor a JWT, as SDKs of public
/// endpoints send — is the public tenant (`Ok(None)`); an `egw_` key or a JWT that is not valid
/// is a 401, as anywhere.
pub async fn identify<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    presented: Option<&str>,
    jwt: &JwtConfig,
) -> Result<Option<Rc<KeyRecord>>> {
    let ours = |p: &&str| p.starts_with(keys::KEY_PREFIX) || (jwt.enabled() && identity::looks_like_jwt(p));
    let Some(presented) = presented.filter(ours) else { return Ok(None) };
    Ok(caller(ports, memo, Some(presented), jwt, false).await?.map(|c| c.record))
}

/// The caller of a read-only listing, if it presented a valid credential. Any problem (none,
/// an invalid one, a store failure) means no caller: the listing then shows only public
/// endpoints, which is the restrictive answer.
pub async fn viewer<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    headers: &HeaderMap,
    jwt: &JwtConfig,
) -> Option<Rc<KeyRecord>> {
    let presented = keys::presented_key(headers)?;
    caller(ports, memo, Some(presented), jwt, true).await.ok().flatten().map(|c| c.record)
}

/// Who the caller is, without looking at what they call: `None` only when `lenient` (a public
/// endpoint) and the credential is missing or refused.
pub async fn caller<P: Ports>(
    ports: &P,
    memo: &AuthMemo,
    presented: Option<&str>,
    jwt: &JwtConfig,
    lenient: bool,
) -> Result<Option<Caller>> {
    let Some(presented) = presented else {
        return if lenient { Ok(None) } else { Err(missing_key()) };
    };
    if jwt.enabled() && identity::looks_like_jwt(presented) {
        return match identity::verify(ports, &memo.identity, jwt, presented).await {
            Ok(verified) => Ok(Some(Caller {
                record: verified.record.clone(),
                kind: CallerKind::Jwt { issuer: verified.issuer.clone(), subject: verified.subject.clone() },
            })),
            Err(_) if lenient => Ok(None),
            Err(e) => Err(e),
        };
    }
    match lookup(ports, memo, presented).await? {
        Some(record) => Ok(Some(Caller { record, kind: CallerKind::Key })),
        None if lenient => Ok(None),
        None => Err(invalid_key()),
    }
}

/// The active record for a presented key, or `None` for any kind of invalid key. One KV read
/// per memo miss: the key names its record's id ([`keys::find`]; two reads for an older key).
pub async fn lookup<P: Ports>(ports: &P, memo: &AuthMemo, presented: &str) -> Result<Option<Rc<KeyRecord>>> {
    if !keys::looks_like_key(presented) {
        return Ok(None);
    }
    let hash = keys::hash_key(presented);
    let now = ports.now_ms();
    // A memo hit does not extend the entry: it expires MEMO_TTL_MS after the KV read.
    let found = match memo.recall(&hash, now) {
        Some(record) => Some((record, false)),
        None if memo.is_unknown(&hash, now) => return Ok(None),
        None => {
            let id = keys::named_id(presented).or_else(|| memo.known_id(&hash));
            let record = keys::find(ports, &hash, id.as_deref()).await.map_err(unavailable)?;
            record.map(|r| (Rc::new(r), true))
        }
    };
    // A refused record (revoked, expired) is memoized like a made-up key: one that clients keep
    // sending (a leaked one, say) costs its reads once per memo period, not per request.
    let Some((record, fresh)) = found.filter(|(record, _)| admits(record, now)) else {
        memo.refuse(hash, now);
        return Ok(None);
    };
    if fresh {
        memo.put(hash, record.clone(), now);
    }
    Ok(Some(record))
}

/// Looks up a presented key ahead of [`caller`], to have it memoized when `caller` asks: run
/// beside another KV read the request must make first (the config's). Returns the key's record
/// when it is valid: what [`caller`] would find for it (a JWT is never key-shaped), without
/// hashing the key a second time. Never fails: a store failure (or an invalid key) is left for
/// `caller`'s own lookup to meet and report.
pub async fn prefetch<P: Ports>(ports: &P, memo: &AuthMemo, presented: Option<&str>) -> Option<Rc<KeyRecord>> {
    lookup(ports, memo, presented?).await.ok().flatten()
}

/// Reads again the memoized keys found due for a refresh ([`time::refresh_due`]): run after a
/// response, so no request waits for it. A key found revoked, expired or gone is memoized as
/// unknown (the next request is refused without a read); a store failure leaves the entry as
/// it is, for the next request to list again.
pub async fn refresh_due<P: Ports>(ports: &P, memo: &AuthMemo) {
    let due = std::mem::take(&mut *memo.due.borrow_mut());
    for hash in due {
        let known_id = memo.known_id(&hash);
        match keys::find(ports, &hash, known_id.as_deref()).await {
            Ok(Some(record)) if admits(&record, ports.now_ms()) => {
                memo.put(hash, Rc::new(record), ports.now_ms());
            }
            Ok(_) => memo.refuse(hash, ports.now_ms()),
            Err(_) => memo.refresh_failed(&hash),
        }
    }
}

/// Whether `record` lets its key in at `now`. It is that key's record: [`keys::find`] compared
/// the hashes (in constant time), and the memo holds only what it found, under the same hash.
fn admits(record: &KeyRecord, now: u64) -> bool {
    record.state(now) == KeyState::Active
}

/// KV failures are transient: 503 + Retry-After. A corrupt record stays what it is.
fn unavailable(e: GatewayError) -> GatewayError {
    if e.code == ErrorCode::KeyRecordInvalid {
        e
    } else {
        GatewayError::kv_unavailable("the API key store")
    }
}

pub fn missing_key() -> GatewayError {
    GatewayError::unauthorized(
        ErrorCode::MissingApiKey,
        "no API key: send one as `Authorization: Bearer <key>`, `x-api-key: <key>` or `api-key: <key>`",
    )
}

fn invalid_key() -> GatewayError {
    GatewayError::unauthorized(ErrorCode::InvalidApiKey, "the API key is not valid: it is unknown, expired or revoked")
}

pub fn endpoint_not_allowed(endpoint: &str) -> GatewayError {
    GatewayError::forbidden(
        ErrorCode::EndpointNotAllowed,
        format!(
            "this API key or token may not call endpoint \"{}\"",
            crate::gateway::util::text::truncate(endpoint, 64)
        ),
    )
}

fn approval_required(endpoint: &str) -> GatewayError {
    let endpoint = crate::gateway::util::text::truncate(endpoint, 64);
    GatewayError::forbidden(
        ErrorCode::ApprovalRequired,
        format!(
            "endpoint \"{endpoint}\" requires approval: ask with POST /v1/access-requests \
             {{\"endpoint\": \"{endpoint}\", \"reason\": \"...\"}}; an admin approves it"
        ),
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

    /// Stores a key allowed `endpoints` (its record changed by `f`, its id too if `f` says so)
    /// and returns its plaintext.
    fn add_key(host: &MemoryHost, endpoints: &[&str], f: impl FnOnce(&mut KeyRecord)) -> (String, KeyRecord) {
        let mut record = KeyRecord {
            id: keys::new_id(host),
            tenant: "acme".into(),
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            created: host.now_ms() / 1000,
            ..Default::default()
        };
        f(&mut record);
        let key = keys::generate(host, &record.id);
        record.hash = keys::hash_key(&key);
        block_on(keys::store(host, &record)).unwrap();
        (key, record)
    }

    /// [`add_key`] for a key made before ids were in keys, stored as such keys were.
    fn add_older_key(host: &MemoryHost, f: impl FnOnce(&mut KeyRecord)) -> (String, KeyRecord) {
        let key = keys::older::key(host);
        let mut record = KeyRecord {
            id: keys::new_id(host),
            tenant: "acme".into(),
            endpoints: vec!["*".into()],
            created: host.now_ms() / 1000,
            hash: keys::hash_key(&key),
            ..Default::default()
        };
        f(&mut record);
        block_on(keys::older::store(host, &record)).unwrap();
        (key, record)
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        h
    }

    /// A key as `presented` returns it.
    fn key_of(key: &str) -> Option<&str> {
        Some(key)
    }

    fn bearer(key: &str) -> HeaderMap {
        headers("authorization", &format!("Bearer {key}"))
    }

    #[test]
    fn dialect_credentials_come_after_the_standard_headers_and_identify_needs_a_valid_key() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, record) = add_key(&host, &["gemini"], |_| {});
        let none = HeaderMap::new();
        assert_eq!(presented(&none, Some(" k ")), Some("k"));
        assert_eq!(presented(&none, Some("  ")), None);
        assert_eq!(presented(&bearer("std"), Some("goog")), Some("std"));
        let auth = |p: Option<&str>| {
            block_on(authenticate(&host, &memo, p, &JwtConfig::default(), Target::new("gemini", false)))
        };
        assert_eq!(auth(Some(&key)).unwrap().unwrap().id, record.id);
        assert_eq!(auth(None).unwrap_err().code, "missing_api_key");
        assert_eq!(auth(Some("egw_nope")).unwrap_err().code, "invalid_api_key");
        assert_eq!(
            block_on(identify(&host, &memo, Some(&key), &JwtConfig::default())).unwrap().unwrap().tenant,
            "acme"
        );
        assert!(block_on(identify(&host, &memo, None, &JwtConfig::default())).unwrap().is_none());
        assert!(block_on(identify(&host, &memo, Some("sk-placeholder"), &JwtConfig::default())).unwrap().is_none());
        assert_eq!(
            block_on(identify(&host, &memo, Some("egw_nope"), &JwtConfig::default())).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn auth_matrix() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, record) = add_key(&host, &["chat"], |_| {});
        let (expired, _) = add_key(&host, &["*"], |r| r.expires_at = Some(host.now_ms() / 1000));
        let (disabled, _) = add_key(&host, &["*"], |r| r.disabled = true);
        let auth = |h: &HeaderMap, endpoint: &str, public: bool| {
            block_on(authenticate(
                &host,
                &memo,
                presented(h, None),
                &JwtConfig::default(),
                Target::new(endpoint, public),
            ))
        };

        for h in [bearer(&key), headers("x-api-key", &key), headers("api-key", &key)] {
            assert_eq!(auth(&h, "chat", false).unwrap().unwrap().id, record.id);
        }
        let e = auth(&HeaderMap::new(), "chat", false).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::UNAUTHORIZED, "missing_api_key"));

        let unknown = keys::new_key(&host).1;
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
        let auth = || {
            block_on(authenticate(
                &host,
                &memo,
                presented(&bearer(&key), None),
                &JwtConfig::default(),
                Target::new("chat", false),
            ))
        };
        assert!(auth().is_ok());
        record.disabled = true;
        block_on(keys::store(&host, &record)).unwrap();
        let before_due = MEMO_TTL_MS / 2;
        for _ in 0..4 {
            host.advance((before_due - 1) / 4);
            assert!(auth().is_ok(), "memoized: still passes inside the bound (hits do not extend it)");
        }
        block_on(refresh_due(&host, &memo));
        assert!(auth().is_ok(), "not due yet: the refresh read nothing");
        host.advance((before_due - 1) % 4 + 1);
        assert!(auth().is_ok(), "in its second half the memo still counts; this request lists it for a refresh");
        block_on(refresh_due(&host, &memo));
        let before = host.kv_ops.get();
        assert_eq!(auth().unwrap_err().code, "invalid_api_key", "the refresh after that response saw the revoke");
        assert_eq!(host.kv_ops.get(), before, "and memoized it: the refused request read nothing");
        host.advance(60_000);
        assert_eq!(auth().unwrap_err().code, "invalid_api_key", "negative results are not memoized into passes");
    }

    /// A memoized key is read again from half its life on, once, after the response of the
    /// request that found it due: no request waits for that read, and a store failing at that
    /// moment fails no request.
    #[test]
    fn a_key_due_for_a_refresh_is_read_once_after_the_response() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, _) = add_key(&host, &["*"], |_| {});
        let found = || block_on(lookup(&host, &memo, &key)).map(|r| r.is_some());
        assert_eq!(found(), Ok(true));

        host.advance(MEMO_TTL_MS / 2 - 1);
        assert_eq!(found(), Ok(true));
        let before = host.kv_ops.get();
        block_on(refresh_due(&host, &memo));
        assert_eq!(host.kv_ops.get() - before, 0, "not due before half its life");

        host.advance(1);
        let before = host.kv_ops.get();
        for _ in 0..8 {
            assert_eq!(found(), Ok(true));
        }
        assert_eq!(host.kv_ops.get() - before, 0, "no request read the store");
        block_on(refresh_due(&host, &memo));
        assert_eq!(host.kv_ops.get() - before, 1, "the refresh read the record, once");
        block_on(refresh_due(&host, &memo));
        assert_eq!(host.kv_ops.get() - before, 1, "nothing else was due");

        host.advance(MEMO_TTL_MS / 2);
        let before = host.kv_ops.get();
        assert_eq!(found(), Ok(true));
        assert_eq!(host.kv_ops.get() - before, 0, "the first read's expiry passed: the memo was renewed");

        host.kv_fail.borrow_mut().push(String::new());
        block_on(refresh_due(&host, &memo));
        host.kv_fail.borrow_mut().clear();
        assert_eq!(found(), Ok(true), "the store failed during the refresh: the memo still counts");
        let before = host.kv_ops.get();
        block_on(refresh_due(&host, &memo));
        assert_eq!(host.kv_ops.get() - before, 1, "that request listed it again");

        host.advance(MEMO_TTL_MS);
        host.kv_fail.borrow_mut().push(String::new());
        assert_eq!(found().unwrap_err().code, "kv_unavailable", "past expiry the store must answer");
    }

    /// A key used every 3 s (a quiet isolate, under the 5 s memo): after the first, no request
    /// reads the store; each refresh runs after a response.
    #[test]
    fn a_key_used_every_few_seconds_is_read_only_after_responses() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, _) = add_key(&host, &["*"], |_| {});
        assert!(block_on(lookup(&host, &memo, &key)).unwrap().is_some());
        for _ in 0..10 {
            host.advance(3_000);
            let before = host.kv_ops.get();
            assert!(block_on(lookup(&host, &memo, &key)).unwrap().is_some());
            assert_eq!(host.kv_ops.get(), before, "the request found its key memoized");
            block_on(refresh_due(&host, &memo));
            assert_eq!(host.kv_ops.get() - before, 1, "and the refresh after it read the record");
        }
    }

    /// A refused key (revoked, expired) costs its KV read (an older key's two) once per isolate
    /// and memo period, not per request: a leaked key that was revoked and is still tried is no
    /// KV load.
    #[test]
    fn refused_keys_are_memoized_briefly() {
        let host = host();
        let memo = AuthMemo::default();
        let (revoked, _) = add_key(&host, &["*"], |r| r.disabled = true);
        let (expired, _) = add_key(&host, &["*"], |r| r.expires_at = Some(host.now_ms() / 1000));
        let (older, _) = add_older_key(&host, |r| r.disabled = true);
        for (key, reads) in [(&revoked, 1), (&expired, 1), (&older, 2)] {
            let before = host.kv_ops.get();
            for _ in 0..10 {
                assert_eq!(block_on(lookup(&host, &memo, key)), Ok(None));
            }
            assert_eq!(host.kv_ops.get() - before, reads, "its record read once for ten attempts");
        }
        host.advance(MEMO_TTL_MS);
        let before = host.kv_ops.get();
        assert_eq!(block_on(lookup(&host, &memo, &revoked)), Ok(None));
        assert_eq!(host.kv_ops.get() - before, 1, "read again once the memo period is over");
    }

    /// L4: an unknown key costs one KV read per isolate and memo period, not one per request.
    /// (A new key is random, so nobody presents it before it exists; a key created right after
    /// a refused attempt with the same value works once the negative entry expires.)
    #[test]
    fn unknown_keys_are_memoized_briefly() {
        let host = host();
        let memo = AuthMemo::default();
        let (id, key) = keys::new_key(&host);
        let auth =
            || block_on(authenticate(&host, &memo, key_of(&key), &JwtConfig::default(), Target::new("chat", false)));
        let before = host.kv_ops.get();
        for _ in 0..10 {
            assert_eq!(auth().unwrap_err().code, "invalid_api_key");
        }
        assert_eq!(host.kv_ops.get() - before, 1, "one KV read for ten attempts");
        let record = KeyRecord {
            id,
            tenant: "t".into(),
            endpoints: vec!["*".into()],
            hash: keys::hash_key(&key),
            ..Default::default()
        };
        block_on(keys::store(&host, &record)).unwrap();
        host.advance(MEMO_TTL_MS);
        assert!(auth().is_ok());
        // The negative memo is bounded like the positive one.
        for _ in 0..MEMO_MAX + 10 {
            let _ = block_on(authenticate(
                &host,
                &memo,
                key_of(&keys::new_key(&host).1),
                &JwtConfig::default(),
                Target::new("chat", false),
            ));
        }
        assert!(memo.len() <= 2 * MEMO_MAX);
    }

    /// A key's record is one KV read, before the key was ever seen and after its memo lapsed
    /// alike: the key names the id of its entry. An older key's lapsed memo knows the id, so its
    /// `keyid:` entry is read first (it decides), then its record.
    #[test]
    fn a_key_is_one_read_and_an_older_one_two_in_turn() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let host = host();
        let memo = AuthMemo::default();
        let (key, record) = add_key(&host, &["*"], |_| {});
        let (older, older_record) = add_older_key(&host, |_| {});
        let first_reads = |key: &str| {
            *host.kv_begun.borrow_mut() = Some(Vec::new());
            host.kv_yield.set(true);
            let mut read = std::pin::pin!(lookup(&host, &memo, key));
            assert!(read.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
            let begun = host.kv_begun.borrow_mut().replace(Vec::new()).unwrap();
            host.kv_yield.set(false);
            assert!(block_on(read).unwrap().is_some());
            let rest = host.kv_begun.borrow_mut().take().unwrap();
            (begun, rest)
        };
        let (id, hash) = (keys::id_entry(&record.id), keys::hash_entry(&older_record.hash));
        assert_eq!(first_reads(&key), (vec![id.clone()], vec![]), "never seen: one read");
        let older_id = keys::id_entry(&older_record.id);
        assert_eq!(first_reads(&older), (vec![hash.clone()], vec![older_id.clone()]), "its record for the id first");
        host.advance(MEMO_TTL_MS);
        assert_eq!(first_reads(&key), (vec![id], vec![]), "lapsed: one read");
        assert_eq!(first_reads(&older), (vec![older_id], vec![hash]), "lapsed: the id's entry first");
    }

    /// A rotation writes the id's entry once: the key it named before is refused from then on,
    /// lapsed memo or not, and nothing of it is left that could let it in. For an older key, the
    /// `keyid:` entry decides too: a `key:` record it does not name (left behind by rotations
    /// racing each other before ids were in keys) is dead, as neither list nor revoke sees it.
    #[test]
    fn a_record_the_id_entry_does_not_name_is_refused() {
        let host = host();
        let memo = AuthMemo::default();
        let auth = |key: &str| {
            block_on(authenticate(&host, &memo, key_of(key), &JwtConfig::default(), Target::new("x", false)))
                .map(|caller| caller.map(|record| record.id.clone()))
        };
        let (key, record) = add_key(&host, &["*"], |_| {});
        assert_eq!(auth(&key), Ok(Some(record.id.clone())));
        let (rotated, _) = add_key(&host, &["*"], |r| r.id = record.id.clone());
        assert_eq!(block_on(keys::by_id(&host, &record.id)).unwrap().unwrap().hash, keys::hash_key(&rotated));
        assert_eq!(auth(&rotated), Ok(Some(record.id.clone())));
        host.advance(MEMO_TTL_MS);
        assert_eq!(auth(&key).unwrap_err().code, "invalid_api_key", "the entry names the rotated key now");

        let (older, older_record) = add_older_key(&host, |_| {});
        let (other, _) = add_older_key(&host, |r| r.id = older_record.id.clone());
        // `other` was stored last: the id's entry names it; `older`'s record is an orphan.
        assert_eq!(auth(&other), Ok(Some(older_record.id.clone())));
        assert_eq!(auth(&older).unwrap_err().code, "invalid_api_key");
    }

    /// A KV failure while authenticating fails closed, as a retryable 503 (not a 500 and never
    /// a pass).
    #[test]
    fn kv_failure_is_a_503_with_retry_after() {
        let host = host();
        let memo = AuthMemo::default();
        let (key, _) = add_key(&host, &["*"], |_| {});
        host.kv_fail.borrow_mut().push(String::new());
        let e = block_on(authenticate(&host, &memo, key_of(&key), &JwtConfig::default(), Target::new("x", false)))
            .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "kv_unavailable"));
        assert_eq!(e.retry_after, Some(1));
        // On a public endpoint too: a key that cannot be checked is not silently ignored.
        let e = block_on(authenticate(&host, &memo, key_of(&key), &JwtConfig::default(), Target::new("x", true)))
            .unwrap_err();
        assert_eq!(e.code, "kv_unavailable");
        assert!(memo.is_empty(), "nothing memoized from a failed read");
    }

    #[test]
    fn expiry_is_checked_on_memoized_keys() {
        let host = host();
        let memo = AuthMemo::default();
        let expires = host.now_ms() / 1000 + 2;
        let (key, _) = add_key(&host, &["*"], |r| r.expires_at = Some(expires));
        let auth = || {
            block_on(authenticate(
                &host,
                &memo,
                presented(&bearer(&key), None),
                &JwtConfig::default(),
                Target::new("chat", false),
            ))
        };
        assert!(auth().is_ok());
        host.advance(2_000);
        assert_eq!(auth().unwrap_err().code, "invalid_api_key");
    }

    /// A record found under a name that is not its own key's (a copy, or a key made up to name
    /// another key's id) does not let that key in: the stored hash no longer matches.
    #[test]
    fn a_record_under_the_wrong_name_is_refused() {
        let host = host();
        let memo = AuthMemo::default();
        let auth = |key: &str| {
            block_on(authenticate(&host, &memo, key_of(key), &JwtConfig::default(), Target::new("x", false)))
                .map(|caller| caller.is_some())
        };
        let (key, record) = add_key(&host, &["*"], |_| {});
        let same_id = keys::generate(&host, &record.id);
        assert_eq!(auth(&key), Ok(true));
        assert_eq!(auth(&same_id).unwrap_err().code, "invalid_api_key");

        let (older, older_record) = add_older_key(&host, |_| {});
        let other = keys::older::key(&host);
        let bytes = host.kv.borrow()[&keys::hash_entry(&older_record.hash)].clone();
        host.kv.borrow_mut().insert(keys::hash_entry(&keys::hash_key(&other)), bytes);
        assert_eq!(auth(&older), Ok(true));
        assert_eq!(auth(&other).unwrap_err().code, "invalid_api_key");
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
        // So is the list of keys due for a refresh; a key left off it is listed by a later
        // request, once the list has been read.
        let memo = AuthMemo::new(MEMO_TTL_MS);
        for i in 0..DUE_MAX + 10 {
            memo.put(format!("h{i}"), record.clone(), 0);
        }
        let recall_all = || (0..DUE_MAX + 10).all(|i| memo.recall(&format!("h{i}"), MEMO_TTL_MS - 1).is_some());
        assert!(recall_all());
        assert_eq!(memo.due.borrow().len(), DUE_MAX);
        memo.due.borrow_mut().clear(); // as refresh_due takes it
        assert!(recall_all());
        assert_eq!(memo.due.borrow().len(), 10);
    }
    #[test]
    fn jwts_beside_keys() {
        use crate::gateway::features::identity::{check_auth, testing};
        let host =
            MemoryHost::new(|_| Ok(http::Response::builder().body(testing::jwks().to_string().into_bytes()).unwrap()));
        let memo = AuthMemo::default();
        let mut issues = crate::gateway::check::Issues::default();
        let auth_config = serde_json::json!({"jwt": {"issuers": [{"issuer": testing::ISSUER, "audiences": ["gw"],
            "jwks_url": "https://idp.test/jwks.json", "policy": {"tenant": "t", "endpoints": ["chat"]}}]}});
        let jwt = check_auth("auth", &auth_config, &[], &mut issues).unwrap().jwt;
        let token = testing::sign_es256(&testing::claims_at(host.now_ms(), "gw"), Some(testing::EC_KID));
        let (key, record) = add_key(&host, &["chat"], |_| {});
        let auth = |h: &HeaderMap, jwt: &JwtConfig, name: &str, public: bool| {
            block_on(authenticate(&host, &memo, presented(h, None), jwt, Target::new(name, public)))
        };

        // Any of the three headers carries a JWT; keys still work beside it.
        for h in [bearer(&token), headers("x-api-key", &token), headers("api-key", &token)] {
            let r = auth(&h, &jwt, "chat", false).unwrap().unwrap();
            assert_eq!(
                (r.id.as_str(), r.tenant.as_str()),
                (identity::claims::principal_id(testing::ISSUER, "alice").as_str(), "t")
            );
        }
        assert_eq!(auth(&bearer(&key), &jwt, "chat", false).unwrap().unwrap().id, record.id);
        assert_eq!(auth(&bearer(&token), &jwt, "embeddings", false).unwrap_err().code, "endpoint_not_allowed");
        // Without trusted issuers a JWT is just an unknown credential.
        assert_eq!(auth(&bearer(&token), &JwtConfig::default(), "chat", false).unwrap_err().code, "invalid_api_key");
        // A refused JWT on a public endpoint is ignored; on others it is a 401 with its code.
        let mut other_claims = testing::claims_at(host.now_ms(), "gw");
        other_claims["sub"] = serde_json::json!("mallory");
        let other = testing::sign_es256(&other_claims, Some(testing::EC_KID));
        let forged = format!("{}.{}", &token[..token.rfind('.').unwrap()], &other[other.rfind('.').unwrap() + 1..]);
        assert_eq!(auth(&bearer(&forged), &jwt, "open", true).unwrap(), None);
        let e = auth(&bearer(&forged), &jwt, "chat", false).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::UNAUTHORIZED, "token_bad_signature"));
        assert!(!e.message.contains(&token[..20]) && !String::from_utf8_lossy(&e.body()).contains(&token[..20]));
    }

    #[test]
    fn approval_needs_a_live_grant() {
        use crate::gateway::features::access::{self, AccessRequest, State};
        let host = host();
        let memo = AuthMemo::default();
        let (key, record) = add_key(&host, &["gated"], |_| {});
        let target = Target { name: "gated", public: false, approval: true };
        let auth =
            || block_on(authenticate(&host, &memo, presented(&bearer(&key), None), &JwtConfig::default(), target));
        let e = auth().unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::FORBIDDEN, "approval_required"));
        let request = AccessRequest {
            id: access::request_id(&record.id, "gated"),
            principal: record.id.clone(),
            kind: "key".into(),
            subject: String::new(),
            issuer: None,
            tenant: "acme".into(),
            endpoint: "gated".into(),
            reason: "r".into(),
            state: State::Pending,
            created: 0,
            updated: 0,
            expires_at: None,
            note: None,
        };
        block_on(access::store_request(&host, &request)).unwrap();
        let now = host.now_ms();
        block_on(access::decide(&host, &memo.grants, &request.id, true, Some(now / 1000 + 10), None, now)).unwrap();
        assert!(auth().is_ok());
        host.advance(10_000);
        assert_eq!(auth().unwrap_err().code, "approval_required", "expired grants are refused at once");
    }
}
