//! The deterministic response cache (DESIGN.md §4).
//!
//! Key names carry their scope so KV list-by-prefix can purge them:
//!
//! ```text
//! cache:<tenant>:<endpoint>:<sha256 hex>
//! ```
//!
//! `<tenant>` is the tenant id percent-encoded (every byte outside `[A-Za-z0-9_.-]`, so a
//! segment never contains `:`), or `*` for entries the endpoint shares across tenants
//! (`cache: {shared: true}`; `*` is never produced by the encoding, so no tenant can collide
//! with it). `<endpoint>` is encoded the same way. The hash covers every part of the key
//! (length-prefixed) plus the provider, model, template version and canonical body.
//!
//! Tenant first, because erasing a tenant's data is the purge that must be complete and cheap:
//! one prefix. Purging one endpoint across tenants lists `cache:` and filters with
//! [`purge_matches`]. No separate index keys: one KV write per fill, and nothing to drift out
//! of sync when an entry expires (Cloudflare KV TTL) or is left behind (Spin has no TTL, so
//! freshness is also checked on read: [`Entry::fresh`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use http::HeaderMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::gateway::check::Issues;
use crate::gateway::error::Result;
use crate::gateway::features::normalize::Canonical;
use crate::gateway::types::{Operation, Usage};
use crate::gateway::util::text::hex;
use crate::gateway::wire::openai::completion_to_sse;

/// Cloudflare KV refuses shorter TTLs.
pub const MIN_TTL_SECS: u64 = 60;
pub const DEFAULT_TTL_SECS: u64 = 300;
/// The tenant segment of entries shared across tenants.
pub const SHARED: &str = "*";
/// Response header: `HIT`, `MISS` or `BYPASS`.
pub const STATUS_HEADER: &str = "x-gateway-cache";

const FIELDS: &[&str] = &["mode", "ttl_secs", "shared"];
const MODES: &[&str] = &["auto", "always", "off"];
/// Longest encoded tenant kept readable in key names; longer ones are hashed.
const MAX_SEGMENT: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Cache deterministic requests only (DESIGN §4).
    #[default]
    Auto,
    /// Cache every request of the endpoint.
    Always,
    Off,
}

/// An endpoint's `cache:` settings. An endpoint without `cache:` gets the default: auto,
/// 300 s, per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub mode: Mode,
    pub ttl_secs: u64,
    /// Entries are shared across tenants (`*` tenant segment).
    pub shared: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy { mode: Mode::Auto, ttl_secs: DEFAULT_TTL_SECS, shared: false }
    }
}

impl CachePolicy {
    /// The tenant segment a request's entries use: the tenant, or [`SHARED`].
    pub fn scope<'a>(&self, tenant: &'a str) -> Scope<'a> {
        if self.shared {
            Scope::Shared
        } else {
            Scope::Tenant(tenant)
        }
    }
}

/// Whose entries: one tenant's, or the shared ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Tenant(&'a str),
    Shared,
}

impl Scope<'_> {
    fn segment(&self) -> String {
        match self {
            Scope::Tenant(t) => segment(t),
            Scope::Shared => SHARED.to_string(),
        }
    }
}

/// Checks an endpoint's `cache:` at `path` (e.g. `endpoints[0].cache`): an object
/// `{mode, ttl_secs, shared}` or just the mode (`cache: always`).
pub fn check(path: &str, value: &Value, issues: &mut Issues) -> Option<CachePolicy> {
    let mut policy = CachePolicy::default();
    let before = issues.0.len();
    let mut mode = |at: &str, value: &Value, issues: &mut Issues| match value.as_str() {
        Some("auto") => policy.mode = Mode::Auto,
        Some("always") => policy.mode = Mode::Always,
        Some("off") => policy.mode = Mode::Off,
        Some(other) => issues.unknown(at, "cache mode", other, MODES),
        None => issues.push(at, "must be one of: auto, always, off"),
    };
    match value {
        Value::String(_) => mode(path, value, issues),
        Value::Object(fields) => {
            for (key, value) in fields {
                let at = format!("{path}.{key}");
                match key.as_str() {
                    "mode" => mode(&at, value, issues),
                    "ttl_secs" => match value.as_u64() {
                        Some(ttl) if ttl >= MIN_TTL_SECS => policy.ttl_secs = ttl,
                        Some(_) => {
                            issues.push(at, format!("must be at least {MIN_TTL_SECS} (Cloudflare KV's minimum TTL)"))
                        }
                        None => issues.push(at, "must be a whole number of seconds"),
                    },
                    "shared" => match value {
                        Value::Bool(b) => policy.shared = *b,
                        _ => issues.push(at, "must be true or false"),
                    },
                    _ => issues.unknown(at, "cache field", key, FIELDS),
                }
            }
        }
        _ => issues.push(path, "must be a mode (auto, always, off) or {mode, ttl_secs, shared}"),
    }
    (issues.0.len() == before).then_some(policy)
}

/// Whether a request may be answered from / stored in the cache (DESIGN §4): never when the
/// endpoint says `off`, always when it says `always`; otherwise embeddings and MLflow model
/// invocations, and chat/completions that are deterministic: `temperature` 0 or a `seed`,
/// `n` absent or 1, and no tools (a tool call may have side effects).
pub fn cacheable(op: Operation, body: &Map<String, Value>, policy: &CachePolicy) -> bool {
    match policy.mode {
        Mode::Off => false,
        Mode::Always => true,
        Mode::Auto => match op {
            Operation::Embeddings | Operation::Predict => true,
            Operation::Chat | Operation::Completions => {
                let set = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
                let zero_temperature = body.get("temperature").and_then(Value::as_f64) == Some(0.0);
                let seeded = set("seed");
                let single = match body.get("n") {
                    None | Some(Value::Null) => true,
                    Some(n) => n.as_f64() == Some(1.0),
                };
                let no_tools = ["tools", "functions"]
                    .iter()
                    .all(|k| body.get(*k).is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty)));
                (zero_temperature || seeded) && single && no_tools
            }
        },
    }
}

/// The client's `Cache-Control` (and HTTP/1.0 `Pragma`) wishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directive {
    /// `no-cache`: do not answer from the cache (the answer may still be stored).
    pub no_cache: bool,
    /// `no-store`: do not store the answer.
    pub no_store: bool,
}

impl Directive {
    pub fn lookup(&self) -> bool {
        !self.no_cache
    }

    pub fn fill(&self) -> bool {
        !self.no_store
    }
}

pub fn directive(headers: &HeaderMap) -> Directive {
    let mut d = Directive::default();
    for value in headers.get_all(http::header::CACHE_CONTROL).iter().chain(headers.get_all(http::header::PRAGMA).iter())
    {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            let name = token.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            }
        }
    }
    d
}

/// The `x-gateway-cache` response header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Bypass,
    /// Answered with an identical in-flight request's answer (`features::coalesce`).
    Coalesced,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Bypass => "BYPASS",
            Status::Coalesced => "COALESCED",
        }
    }
}

/// Where a hit was found (the log line's `cache_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// This isolate's memory ([`Recent`]).
    Memory,
    /// This location's edge cache (Cloudflare's Cache API).
    Edge,
    Kv,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Memory => "memory",
            Level::Edge => "edge",
            Level::Kv => "kv",
        }
    }
}

/// How long an answer stays in an isolate's memory ([`Recent`]): a purge in another isolate
/// reaches this one within it (a purge here clears it at once).
pub const MEMORY_TTL_MS: u64 = 10_000;
/// In a kept answer's last second in memory, the first request to find it looks in the edge
/// cache and KV instead (and refreshes it there) while the others keep using it: without this,
/// every request in flight at the expiry read KV (16 connections, 16 reads every 10 s).
pub const MEMORY_REFRESH_AHEAD_MS: u64 = 1_000;
/// Bounds of one isolate's [`Recent`] (an isolate has 128 MB for everything).
const MEMORY_MAX_ENTRIES: usize = 64;
const MEMORY_MAX_BYTES: usize = 4 << 20;

/// The answers this isolate stored or found in the last seconds: a hit here reads neither the
/// edge cache nor KV. Oldest first; bounded in entries and bytes (the oldest go first).
#[derive(Default)]
pub struct Recent {
    entries: RefCell<VecDeque<Kept>>,
}

/// One answer in [`Recent`], under its key's input, until `expires_ms`.
struct Kept {
    key: Vec<u8>,
    entry: Rc<Entry>,
    expires_ms: u64,
    /// A request is refreshing it (see [`MEMORY_REFRESH_AHEAD_MS`]).
    refreshing: Cell<bool>,
}

impl Kept {
    fn size(&self) -> usize {
        self.key.len() + self.entry.body.len()
    }
}

impl Recent {
    /// The entry stored under `key` (a [`KeyInput`]'s bytes), if it is still fresh at `now_ms`
    /// — except for the one request that is to refresh it ([`MEMORY_REFRESH_AHEAD_MS`]), which
    /// gets `None` and reads the other levels (a hit there puts it back for another
    /// [`MEMORY_TTL_MS`]).
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<Rc<Entry>> {
        let entries = self.entries.borrow();
        let kept = entries.iter().rev().find(|kept| kept.key == key)?;
        if kept.expires_ms <= now_ms || !kept.entry.fresh(now_ms) {
            return None;
        }
        if kept.expires_ms - now_ms <= MEMORY_REFRESH_AHEAD_MS && !kept.refreshing.replace(true) {
            return None;
        }
        Some(kept.entry.clone())
    }

    /// The entry stored under `key` while it is fresh at `now_ms` and not yet due for a
    /// refresh: [`Recent::get`] without taking the refreshing request's turn (from
    /// [`MEMORY_REFRESH_AHEAD_MS`] before its end, `None`, and `get` decides who refreshes).
    pub fn get_settled(&self, key: &[u8], now_ms: u64) -> Option<Rc<Entry>> {
        let entries = self.entries.borrow();
        let kept = entries.iter().rev().find(|kept| kept.key == key)?;
        let settled = kept.expires_ms > now_ms.saturating_add(MEMORY_REFRESH_AHEAD_MS) && kept.entry.fresh(now_ms);
        settled.then(|| kept.entry.clone())
    }

    /// Keeps `entry` for at most [`MEMORY_TTL_MS`] (never past its TTL), replacing an older
    /// copy, dropping expired ones and then the oldest past the bounds.
    pub fn put(&self, key: &[u8], entry: Rc<Entry>, now_ms: u64) {
        let size = key.len() + entry.body.len();
        if size > MEMORY_MAX_BYTES / 4 {
            return; // a few large answers would push out every small one
        }
        let expires_ms = now_ms.saturating_add(MEMORY_TTL_MS);
        let mut entries = self.entries.borrow_mut();
        entries.retain(|kept| kept.expires_ms > now_ms && kept.key != key);
        entries.push_back(Kept { key: key.to_vec(), entry, expires_ms, refreshing: Cell::new(false) });
        let mut bytes: usize = entries.iter().map(Kept::size).sum();
        while entries.len() > MEMORY_MAX_ENTRIES || bytes > MEMORY_MAX_BYTES {
            let Some(oldest) = entries.pop_front() else { break };
            bytes -= oldest.size();
        }
    }

    /// Forgets everything (a purge).
    pub fn clear(&self) {
        self.entries.borrow_mut().clear();
    }
}

/// The canonical body the key hashes: the request's canonical form without the fields that
/// only change how the answer is delivered (`stream`, `stream_options`), so a streamed request
/// replays an entry filled by a plain one and vice versa.
pub fn key_body(canonical: &Canonical) -> Vec<u8> {
    canonical.without(&["stream", "stream_options"])
}

/// What a cache key hashes, before hashing: the isolate's memory level ([`Recent`]) is keyed
/// by these bytes, so a hit there hashes nothing (SHA-256 of a 1 KB chat request was ~72k
/// instructions in callgrind, which like wasm runs it without SHA extensions).
pub struct KeyInput {
    /// `cache:<tenant>:<endpoint>:`
    prefix: String,
    bytes: Vec<u8>,
}

/// A cache key: `name`, the entry's name in KV and the edge cache ([`key_input`]), and `input`,
/// what it hashes ([`KeyInput`]; the memory level's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    pub input: Vec<u8>,
}

/// The key of an entry: its name is `cache:<tenant>:<endpoint>:<sha256 hex>`, the hash over
/// every part, length-prefixed (call [`KeyInput::finish`]). `template_version` should name the
/// template too (`summarize@2`).
pub fn key_input(
    scope: Scope<'_>,
    endpoint: &str,
    provider: &str,
    model: &str,
    template_version: Option<&str>,
    canonical_body: &[u8],
) -> KeyInput {
    let tenant = scope.segment();
    let endpoint_segment = segment(endpoint);
    let mut bytes = Vec::with_capacity(96 + endpoint.len() + provider.len() + model.len() + canonical_body.len());
    bytes.extend_from_slice(b"edge-gateway cache v1");
    for part in [tenant.as_bytes(), endpoint_segment.as_bytes(), provider.as_bytes(), model.as_bytes()] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    match template_version {
        Some(v) => {
            bytes.push(1);
            bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
            bytes.extend_from_slice(v.as_bytes());
        }
        None => bytes.push(0),
    }
    bytes.extend_from_slice(&(canonical_body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(canonical_body);
    KeyInput { prefix: format!("cache:{tenant}:{endpoint_segment}:"), bytes }
}

impl KeyInput {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Hashes the input into the entry's name.
    pub fn finish(self) -> Key {
        let mut name = self.prefix;
        name.push_str(&hex(&Sha256::digest(&self.bytes)));
        Key { name, input: self.bytes }
    }
}

/// The longest KV prefix that lists every entry of `scope` (None: all tenants and the shared
/// entries) and `endpoint` (None: all endpoints). With an endpoint but no scope the prefix
/// is `cache:`: filter the listed keys with [`purge_matches`].
pub fn purge_prefix(scope: Option<Scope<'_>>, endpoint: Option<&str>) -> String {
    match (scope, endpoint) {
        (None, _) => "cache:".to_string(),
        (Some(scope), None) => format!("cache:{}:", scope.segment()),
        (Some(scope), Some(endpoint)) => format!("cache:{}:{}:", scope.segment(), segment(endpoint)),
    }
}

/// Whether a listed key belongs to `scope` and `endpoint` (None: any).
pub fn purge_matches(key: &str, scope: Option<Scope<'_>>, endpoint: Option<&str>) -> bool {
    let mut parts = match key.strip_prefix("cache:") {
        Some(rest) => rest.split(':'),
        None => return false,
    };
    let (Some(tenant), Some(ep), Some(_hash), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    scope.is_none_or(|s| s.segment() == tenant) && endpoint.is_none_or(|e| segment(e) == ep)
}

/// A key segment: bytes outside `[A-Za-z0-9_.-]` percent-encoded (so never `:` or `*`);
/// over `MAX_SEGMENT` chars, `%h` + 32 hex digits of its SHA-256 (not a valid escape, so
/// it cannot collide with an encoded name).
fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push_str(&hex(&[b]).to_ascii_uppercase());
        }
    }
    if out.len() > MAX_SEGMENT {
        return format!("%h{}", &hex(&Sha256::digest(raw.as_bytes()))[..32]);
    }
    out
}

/// A cached answer: the OpenAI-shaped response body plus what is needed to judge and account
/// it. Stored as one compact JSON header line, `\n`, then the body bytes as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub created_ms: u64,
    pub ttl_secs: u64,
    pub endpoint: String,
    pub op: Operation,
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
}

const FORMAT: u64 = 1;

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut header = Map::new();
        header.insert("v".into(), FORMAT.into());
        header.insert("created_ms".into(), self.created_ms.into());
        header.insert("ttl_secs".into(), self.ttl_secs.into());
        header.insert("endpoint".into(), self.endpoint.clone().into());
        header.insert("op".into(), self.op.as_str().into());
        if let Some(u) = self.usage {
            header.insert(
                "usage".into(),
                serde_json::json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}),
            );
        }
        let mut out = serde_json::to_vec(&header).unwrap_or_default();
        out.reserve(self.body.len() + 1);
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for anything that is not an entry of this format (treat as a miss).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes[..newline]).ok()?;
        if header.get("v")?.as_u64()? != FORMAT {
            return None;
        }
        let op = match header.get("op")?.as_str()? {
            "chat" => Operation::Chat,
            "completions" => Operation::Completions,
            "embeddings" => Operation::Embeddings,
            "predict" => Operation::Predict,
            _ => return None,
        };
        let usage = match header.get("usage") {
            Some(u) => Some(Usage {
                prompt_tokens: u.get("prompt_tokens")?.as_u64()?,
                completion_tokens: u.get("completion_tokens")?.as_u64()?,
            }),
            None => None,
        };
        Some(Entry {
            created_ms: header.get("created_ms")?.as_u64()?,
            ttl_secs: header.get("ttl_secs")?.as_u64()?,
            endpoint: header.get("endpoint")?.as_str()?.to_string(),
            op,
            body: bytes[newline + 1..].to_vec(),
            usage,
        })
    }

    /// Younger than its TTL. Checked on every read: Spin's key-value store never expires.
    pub fn fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.created_ms) < self.ttl_secs.saturating_mul(1000)
    }

    /// How long a copy may stay in the edge cache from `now_ms` ([`edge_ttl_secs`] of what is
    /// left of its TTL).
    pub fn edge_ttl_secs(&self, now_ms: u64) -> u64 {
        let left_ms = self.ttl_secs.saturating_mul(1000).saturating_sub(now_ms.saturating_sub(self.created_ms));
        edge_ttl_secs(left_ms / 1000)
    }
}

/// The longest a cached answer stays in the edge cache (Cloudflare's Cache API, one per
/// location). A purge deletes the KV entries and this location's copies; other locations
/// cannot be reached, so their copies are kept at most this long.
pub const EDGE_TTL_MAX_SECS: u64 = 60;

/// The edge cache's TTL for an entry with `ttl_secs` left: at most [`EDGE_TTL_MAX_SECS`]
/// (0: not worth storing).
pub fn edge_ttl_secs(ttl_secs: u64) -> u64 {
    ttl_secs.min(EDGE_TTL_MAX_SECS)
}

/// The answer to send for a hit: the stored body, or for a streaming chat/completions request
/// the same answer replayed as OpenAI SSE.
pub fn replay(entry: &Entry, stream: bool) -> Result<Vec<u8>> {
    match entry.op {
        Operation::Chat | Operation::Completions if stream => completion_to_sse(entry.op, &entry.body),
        _ => Ok(entry.body.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::json::REQUEST_BOUNDS;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// An entry's name.
    fn key(scope: Scope, endpoint: &str, provider: &str, model: &str, tv: Option<&str>, body: &[u8]) -> String {
        key_input(scope, endpoint, provider, model, tv, body).finish().name
    }

    fn entry_of(bytes: usize, created_ms: u64, ttl_secs: u64) -> Rc<Entry> {
        Rc::new(Entry {
            created_ms,
            ttl_secs,
            endpoint: "e".into(),
            op: Operation::Chat,
            body: vec![b'x'; bytes],
            usage: None,
        })
    }

    /// An isolate's recent answers: found while fresh (neither past `MEMORY_TTL_MS` nor past
    /// the entry's TTL), replaced by a newer copy, bounded in entries and bytes (the oldest go
    /// first), large answers not kept, all gone after `clear`.
    #[test]
    fn recent_answers_are_bounded_and_expire() {
        let recent = Recent::default();
        let now = 1_000_000;
        recent.put(b"a", entry_of(10, now, 300), now);
        assert!(recent.get(b"a", now + MEMORY_TTL_MS - 1).is_none(), "the first in its last second refreshes it");
        assert_eq!(recent.get(b"a", now + MEMORY_TTL_MS - 1).unwrap().body.len(), 10);
        assert!(recent.get(b"a", now + MEMORY_TTL_MS).is_none(), "kept at most MEMORY_TTL_MS");
        assert!(recent.get(b"b", now).is_none());
        recent.put(b"short", entry_of(10, now - 299_500, 300), now);
        assert!(recent.get(b"short", now + 499).is_some());
        assert!(recent.get(b"short", now + 500).is_none(), "never past the entry's TTL");
        recent.put(b"a", entry_of(20, now, 300), now + 1);
        assert_eq!(recent.get(b"a", now + 2).unwrap().body.len(), 20, "a newer copy replaces the older");
        assert_eq!(recent.entries.borrow().iter().filter(|kept| kept.key == b"a").count(), 1);

        for i in 0..MEMORY_MAX_ENTRIES + 10 {
            recent.put(format!("k{i}").as_bytes(), entry_of(1, now, 300), now);
        }
        assert_eq!(recent.entries.borrow().len(), MEMORY_MAX_ENTRIES);
        assert!(
            recent.get(b"k0", now).is_none()
                && recent.get(format!("k{}", MEMORY_MAX_ENTRIES + 9).as_bytes(), now).is_some()
        );

        recent.put(b"huge", entry_of(MEMORY_MAX_BYTES / 4 + 1, now, 300), now);
        assert!(recent.get(b"huge", now).is_none(), "a large answer is not kept");
        for i in 0..8 {
            recent.put(format!("big{i}").as_bytes(), entry_of(MEMORY_MAX_BYTES / 5, now, 300), now);
        }
        let bytes: usize = recent.entries.borrow().iter().map(Kept::size).sum();
        assert!(bytes <= MEMORY_MAX_BYTES && recent.get(b"big7", now).is_some() && recent.get(b"big0", now).is_none());
        recent.clear();
        assert!(recent.get(b"big7", now).is_none());
    }

    /// In a kept answer's last second in memory exactly one request is sent to refresh it from
    /// the other levels; the rest keep using it, and its refresh keeps it another 10 s.
    #[test]
    fn one_request_refreshes_a_recent_answer_before_it_expires() {
        let recent = Recent::default();
        let now = 1_000_000;
        recent.put(b"a", entry_of(10, now, 300), now);
        let early = now + MEMORY_TTL_MS - MEMORY_REFRESH_AHEAD_MS - 1;
        assert!((0..5).all(|_| recent.get(b"a", early).is_some()), "before the last second: all served");
        let late = now + MEMORY_TTL_MS - MEMORY_REFRESH_AHEAD_MS;
        let served: Vec<bool> = (0..16).map(|_| recent.get(b"a", late).is_some()).collect();
        assert_eq!(served.iter().filter(|s| !**s).count(), 1, "one refreshes: {served:?}");
        assert!(!served[0] && served[1..].iter().all(|s| *s), "the first one");
        recent.put(b"a", entry_of(10, now, 300), late);
        assert!(recent.get(b"a", now + MEMORY_TTL_MS + 1).is_some(), "refreshed: kept 10 s from the refresh");
    }

    fn policy(v: Value) -> (Option<CachePolicy>, Vec<String>) {
        let mut issues = Issues::default();
        let p = check("endpoints[0].cache", &v, &mut issues);
        (p, issues.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn config_shapes_and_issues() {
        assert_eq!(policy(json!({})).0, Some(CachePolicy::default()));
        assert_eq!(
            policy(json!({"mode": "always", "ttl_secs": 3600, "shared": true})).0,
            Some(CachePolicy { mode: Mode::Always, ttl_secs: 3600, shared: true })
        );
        assert_eq!(policy(json!("off")).0.unwrap().mode, Mode::Off);
        let (p, issues) = policy(json!({"mode": "alwys", "ttl_secs": 30, "shard": true, "shared": "yes"}));
        assert!(p.is_none());
        assert!(
            issues.contains(
                &"endpoints[0].cache.mode: unknown cache mode \"alwys\" (did you mean \"always\"?)".to_string()
            ),
            "{issues:?}"
        );
        assert!(
            issues.contains(
                &"endpoints[0].cache.ttl_secs: must be at least 60 (Cloudflare KV's minimum TTL)".to_string()
            ),
            "{issues:?}"
        );
        assert!(
            issues
                .iter()
                .any(|i| i
                    .starts_with("endpoints[0].cache.shard: unknown cache field \"shard\" (did you mean \"shared\"?)")),
            "{issues:?}"
        );
        assert!(issues.contains(&"endpoints[0].cache.shared: must be true or false".to_string()), "{issues:?}");
        assert_eq!(
            policy(json!(5)).1,
            ["endpoints[0].cache: must be a mode (auto, always, off) or {mode, ttl_secs, shared}"]
        );
    }

    #[test]
    fn cacheable_matrix() {
        let auto = CachePolicy::default();
        let chat = |v: Value| cacheable(Operation::Chat, &obj(v), &auto);
        let m = json!([{"role": "user", "content": "hi"}]);
        assert!(chat(json!({"messages": m, "temperature": 0})));
        assert!(chat(json!({"messages": m, "temperature": 0.0, "n": 1})));
        assert!(!chat(json!({"messages": m, "temperature": 0.7})));
        assert!(!chat(json!({"messages": m})), "provider default temperature is not deterministic");
        assert!(chat(json!({"messages": m, "temperature": 0.7, "seed": 42})));
        assert!(!chat(json!({"messages": m, "temperature": 0, "n": 2})));
        assert!(!chat(json!({"messages": m, "temperature": 0, "tools": [{"type": "function"}]})));
        assert!(chat(json!({"messages": m, "temperature": 0, "tools": []})));
        assert!(!chat(json!({"messages": m, "seed": 1, "functions": [{"name": "f"}]})));
        assert!(!chat(json!({"messages": m, "seed": null})));
        assert!(cacheable(Operation::Completions, &obj(json!({"prompt": "x", "temperature": 0})), &auto));
        assert!(cacheable(Operation::Embeddings, &obj(json!({"input": "x"})), &auto));
        assert!(cacheable(Operation::Predict, &obj(json!({"inputs": [1]})), &auto));
        let always = CachePolicy { mode: Mode::Always, ..auto };
        assert!(cacheable(Operation::Chat, &obj(json!({"temperature": 0.9, "n": 3})), &always));
        let off = CachePolicy { mode: Mode::Off, ..auto };
        assert!(!cacheable(Operation::Embeddings, &obj(json!({"input": "x"})), &off));
    }

    #[test]
    fn directives() {
        let mut h = HeaderMap::new();
        assert_eq!(directive(&h), Directive::default());
        assert!(directive(&h).lookup() && directive(&h).fill());
        h.insert(http::header::CACHE_CONTROL, "No-Cache".parse().unwrap());
        assert_eq!(directive(&h), Directive { no_cache: true, no_store: false });
        h.insert(http::header::CACHE_CONTROL, "max-age=0, no-store".parse().unwrap());
        assert_eq!(directive(&h), Directive { no_cache: false, no_store: true });
        h.append(http::header::CACHE_CONTROL, "no-cache=\"x\"".parse().unwrap());
        let d = directive(&h);
        assert!(!d.lookup() && !d.fill());
        let mut h = HeaderMap::new();
        h.insert(http::header::PRAGMA, "no-cache".parse().unwrap());
        assert!(directive(&h).no_cache);
        assert_eq!(Status::Bypass.as_str(), "BYPASS");
    }

    #[test]
    fn keys_separate_every_part() {
        let body = key_body(&Canonical::of(&obj(json!({"temperature": 0, "messages": []}))));
        let k = |scope, endpoint, model, tv| key(scope, endpoint, "openai", model, tv, &body);
        let base = k(Scope::Tenant("acme"), "chat", "gpt-4o", None);
        assert!(base.starts_with("cache:acme:chat:"), "{base}");
        assert_eq!(base.len(), "cache:acme:chat:".len() + 64);
        assert_eq!(base, k(Scope::Tenant("acme"), "chat", "gpt-4o", None));
        let others = [
            k(Scope::Tenant("globex"), "chat", "gpt-4o", None),
            k(Scope::Shared, "chat", "gpt-4o", None),
            k(Scope::Tenant("acme"), "chat2", "gpt-4o", None),
            k(Scope::Tenant("acme"), "chat", "gpt-4o-mini", None),
            k(Scope::Tenant("acme"), "chat", "gpt-4o", Some("summarize@1")),
            k(Scope::Tenant("acme"), "chat", "gpt-4o", Some("summarize@2")),
            k(Scope::Tenant("acme"), "chat", "gpt-4o", Some("")),
            key(Scope::Tenant("acme"), "chat", "anthropic", "gpt-4o", None, &body),
            key(Scope::Tenant("acme"), "chat", "openai", "gpt-4o", None, b"{}"),
            // Shifting bytes between parts changes the key (length prefixes).
            key(Scope::Tenant("acme"), "chat", "openaig", "pt-4o", None, &body),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "variant {i}");
        }
        assert!(others[1].starts_with("cache:*:chat:"));
        // A tenant named like the shared marker, or with ':' in it, stays in its own segment.
        assert!(k(Scope::Tenant("*"), "chat", "m", None).starts_with("cache:%2A:chat:"));
        assert!(k(Scope::Tenant("a:b"), "chat", "m", None).starts_with("cache:a%3Ab:chat:"));
        let long = "t".repeat(500);
        let long_key = k(Scope::Tenant(&long), "chat", "m", None);
        assert!(long_key.starts_with("cache:%h") && long_key.len() < 200, "{long_key}");
        // Names stay what earlier releases stored (pinned: SHA-256 of the length-prefixed parts,
        // computed apart); the memory level's key is the hashed input itself.
        let input = key_input(Scope::Tenant("acme"), "chat", "openai", "gpt-4o-mini", Some("t@1"), b"{}");
        let bytes = input.bytes().to_vec();
        let pinned = input.finish();
        assert_eq!(pinned.name, "cache:acme:chat:59f1989f318cbde844183aebf4140d9aa040391012a0721460fcfa75a549ee19");
        assert_eq!(pinned.input, bytes);
        assert!(
            bytes.starts_with(b"edge-gateway cache v1\x04\0\0\0\0\0\0\0acme")
                && bytes.ends_with(b"\x02\0\0\0\0\0\0\0{}")
        );
    }

    #[test]
    fn equal_requests_share_a_key_streaming_or_not() {
        let a = obj(json!({"temperature": 0, "messages": [{"role": "user", "content": "hi"}], "stream": true,
                           "stream_options": {"include_usage": true}}));
        let b = crate::gateway::features::normalize::parse_json_object(
            br#"{ "messages" : [ {"content":"hi","role":"user"} ], "temperature":0 }"#,
            1000,
            REQUEST_BOUNDS,
        )
        .unwrap();
        let key_body = |body: &Map<String, Value>| key_body(&Canonical::of(body));
        assert_eq!(key_body(&a), key_body(&b));
        assert_eq!(key_body(&b), crate::gateway::wire::json::json_body(&b));
        assert_eq!(key_body(&Map::new()), b"{}");
    }

    #[test]
    fn purge_prefixes_and_filter() {
        let k1 = key(Scope::Tenant("acme"), "chat", "openai", "m", None, b"{}");
        let k2 = key(Scope::Tenant("acme"), "embed", "openai", "m", None, b"{}");
        let k3 = key(Scope::Shared, "chat", "openai", "m", None, b"{}");
        assert_eq!(purge_prefix(None, None), "cache:");
        assert_eq!(purge_prefix(Some(Scope::Tenant("acme")), None), "cache:acme:");
        assert_eq!(purge_prefix(Some(Scope::Tenant("acme")), Some("chat")), "cache:acme:chat:");
        assert_eq!(purge_prefix(Some(Scope::Shared), None), "cache:*:");
        assert_eq!(purge_prefix(None, Some("chat")), "cache:");
        let listed = [k1.as_str(), k2.as_str(), k3.as_str(), "config:active", "cache:broken"];
        let select = |scope, endpoint| -> Vec<&str> {
            let prefix = purge_prefix(scope, endpoint);
            listed.iter().copied().filter(|k| k.starts_with(&prefix) && purge_matches(k, scope, endpoint)).collect()
        };
        assert_eq!(select(Some(Scope::Tenant("acme")), None), [k1.as_str(), k2.as_str()]);
        assert_eq!(select(None, Some("chat")), [k1.as_str(), k3.as_str()]);
        assert_eq!(select(Some(Scope::Shared), Some("chat")), [k3.as_str()]);
        assert_eq!(select(None, None), [k1.as_str(), k2.as_str(), k3.as_str()]);
        // "acme" is not a prefix match for tenant "acm".
        assert!(select(Some(Scope::Tenant("acm")), None).is_empty());
        assert_eq!(CachePolicy { shared: true, ..CachePolicy::default() }.scope("acme"), Scope::Shared);
        assert_eq!(CachePolicy::default().scope("acme"), Scope::Tenant("acme"));
    }

    fn entry(op: Operation, body: &[u8]) -> Entry {
        Entry {
            created_ms: 1_000_000,
            ttl_secs: 60,
            endpoint: "chat".into(),
            op,
            body: body.to_vec(),
            usage: Some(Usage { prompt_tokens: 3, completion_tokens: 5 }),
        }
    }

    #[test]
    fn entry_round_trip_and_freshness() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"line1\nline2"}}]}"#;
        let e = entry(Operation::Chat, body);
        let bytes = e.encode();
        assert!(bytes.starts_with(br#"{"created_ms":1000000,"endpoint":"chat","op":"chat","ttl_secs":60,"usage":"#));
        assert_eq!(Entry::decode(&bytes), Some(e.clone()));
        let no_usage = Entry { usage: None, op: Operation::Embeddings, ..e.clone() };
        assert_eq!(Entry::decode(&no_usage.encode()), Some(no_usage));
        assert!(e.fresh(1_000_000));
        assert!(e.fresh(1_059_999));
        assert!(!e.fresh(1_060_000));
        assert!(e.fresh(0), "an entry from a clock slightly ahead is still fresh");
        for junk in [&b""[..], b"\n", b"{}\n{}", b"{\"v\":2}\nx", b"not json\n{}", &bytes[..10]] {
            assert_eq!(Entry::decode(junk), None);
        }
    }

    #[test]
    fn replay_plain_and_as_sse() {
        let body = br#"{"id":"c1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
        let e = entry(Operation::Chat, body);
        assert_eq!(replay(&e, false).unwrap(), body.to_vec());
        let sse = String::from_utf8(replay(&e, true).unwrap()).unwrap();
        assert!(sse.starts_with("data: {"), "{sse}");
        assert!(sse.contains(r#""delta":{"content":"Hello"}"#), "{sse}");
        assert!(sse.contains(r#""finish_reason":"stop""#), "{sse}");
        assert!(sse.trim_end().ends_with("data: [DONE]"), "{sse}");
        let emb = entry(Operation::Embeddings, b"{\"data\":[]}");
        assert_eq!(replay(&emb, true).unwrap(), b"{\"data\":[]}".to_vec());
    }

    /// Per-request cost of the new phases on a typical ~1 KB chat request. A program that
    /// prints numbers, not a timed assertion: `cargo test --release --lib -- --ignored
    /// --nocapture per_request_cost`.
    #[test]
    #[ignore]
    fn per_request_cost() {
        use crate::gateway::features::{guard, normalize, template};
        use std::time::Instant;

        let mut issues = Issues::default();
        let templates = template::check(
            "templates",
            &json!({"support": {"versions": {"1": {"system": "You are a support agent for {{ product }}. Answer in {{ language }}.",
                                                   "user": "Customer {{ name }} asks: {{ question }}"}}}}),
            &mut issues,
        )
        .unwrap();
        let tref = template::check_ref("t", "support", &templates, &mut issues).unwrap();
        let guards = guard::check(
            "g",
            &json!({"max_messages": 50, "max_chars": 20000, "injection": "flag", "redact": ["email", "phone", "card", "iban"],
                    "deny": [{"id": "codename", "pattern": "project falcon"}, {"id": "key", "pattern": "BEGIN [A-Z ]*PRIVATE KEY", "regex": true}]}),
            &mut issues,
        )
        .unwrap();
        assert!(issues.0.is_empty());
        let question = "My order arrived damaged and the replacement also had a cracked screen. I have tried the troubleshooting steps from the manual, restarted twice and reset the settings, but the display still flickers when the brightness is below half. The warranty card says two years and I bought it eleven months ago from your online store. Could you tell me whether I should send it back to the same address as last time, or whether there is a repair centre closer to me? I would also like to know how long a repair usually takes at this time of year, since I need the device for work. Thank you for your help, and sorry for the long message.";
        let raw = serde_json::to_vec(&json!({
            "model": "support", "temperature": 0, "max_tokens": 300,
            "messages": [{"role": "user", "content": "Earlier conversation: the customer was told to restart the device and try again later."}],
            "variables": {"product": "Acme Phone X", "language": "English", "name": "Jane", "question": question}
        }))
        .unwrap();
        println!("request body: {} bytes", raw.len());

        let n = 20_000;
        let mut totals = [0u128; 6];
        let mut sink = 0usize;
        for _ in 0..n {
            let t0 = Instant::now();
            let mut body = normalize::parse_json_object(&raw, 1 << 20, REQUEST_BOUNDS).unwrap();
            body.remove("model");
            let t1 = Instant::now();
            let vars = template::extract_variables(&mut body);
            let rendered = template::render(&tref, &vars).unwrap();
            let label = rendered.label();
            template::apply(rendered, Operation::Chat, &mut body).unwrap();
            let t2 = Instant::now();
            let report = guard::apply_input(&guards, &mut body).unwrap();
            let t3 = Instant::now();
            let ok = cacheable(Operation::Chat, &body, &CachePolicy::default());
            let k = key(
                Scope::Tenant("acme"),
                "support",
                "openai",
                "gpt-4o-mini",
                Some(&label),
                &key_body(&normalize::Canonical::of(&body)),
            );
            let t4 = Instant::now();
            let hash = normalize::Canonical::of(&body).hash();
            let t5 = Instant::now();
            sink += k.len() + usize::from(ok) + usize::from(report.flagged) + (hash as usize & 1);
            for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0].iter().enumerate() {
                totals[i] += d.as_nanos();
            }
        }
        // Guard variants, same body.
        let body0 = {
            let mut body = normalize::parse_json_object(&raw, 1 << 20, REQUEST_BOUNDS).unwrap();
            let vars = template::extract_variables(&mut body);
            template::apply(template::render(&tref, &vars).unwrap(), Operation::Chat, &mut body).unwrap();
            body
        };
        for (name, config) in [
            ("literal deny", json!({"deny": [{"id": "codename", "pattern": "project falcon"}]})),
            ("regex deny", json!({"deny": [{"id": "key", "pattern": "BEGIN [A-Z ]*PRIVATE KEY", "regex": true}]})),
            ("injection", json!({"injection": "flag"})),
            ("email", json!({"redact": ["email"]})),
            ("phone", json!({"redact": ["phone"]})),
            ("card", json!({"redact": ["card"]})),
            ("iban", json!({"redact": ["iban"]})),
            ("limits", json!({"max_messages": 50, "max_chars": 20000})),
        ] {
            let g = guard::check("g", &config, &mut issues).unwrap();
            let t = Instant::now();
            for _ in 0..n {
                let mut body = body0.clone();
                sink += usize::from(guard::apply_input(&g, &mut body).unwrap().flagged);
            }
            let clone = Instant::now();
            for _ in 0..n {
                let body = body0.clone();
                sink += body.len();
            }
            let base = clone.elapsed();
            let spent = (clone - t).saturating_sub(base);
            println!("{:>32}: {:>8.2} µs", format!("guard, {name} only"), spent.as_nanos() as f64 / n as f64 / 1000.0);
        }
        let names = [
            "parse JSON",
            "template (extract+render+apply)",
            "guard (input)",
            "cacheable + key",
            "request_hash",
            "total",
        ];
        for (name, total) in names.iter().zip(totals) {
            println!("{name:>32}: {:>8.2} µs", total as f64 / n as f64 / 1000.0);
        }
        assert!(sink > 0);
    }
}
