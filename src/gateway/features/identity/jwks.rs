//! An issuer's key set (JWKS, RFC 7517): fetched from its configured URL through the Upstream
//! port, cached in KV and in the isolate, refreshed on an unknown `kid` — bounded every way.
//!
//! | bound | value |
//! |---|---|
//! | JWKS document size | [`MAX_JWKS_BYTES`] (larger: the fetch fails) |
//! | keys kept | the first [`MAX_KEYS`] usable signature keys (RSA ≥ 2048 and ≤ 4096 bits, EC P-256; a P-256 point off the curve is kept and verifies nothing) |
//! | cache lifetime | the answer's `Cache-Control: max-age`, clamped to [`MIN_TTL_SECS`]..[`MAX_TTL_SECS`]; [`DEFAULT_TTL_SECS`] without one; the minimum with `no-cache`/`no-store` |
//! | stale use | only when a refresh fails, for at most [`STALE_IF_ERROR_SECS`] past the lifetime |
//! | fetches | at most one per request; and at most one per `refresh_cooldown_secs` per JWKS URL, counted both in the isolate and in KV (so it holds on hosts that start a fresh instance per request) |
//! | fetch time | [`FETCH_TIMEOUT_MS`] |
//!
//! KV entry `jwks:<sha256 hex of the JWKS URL>` = [`Entry`]: the usable keys as JWK objects,
//! when they were fetched, when a fetch was last tried (`checked_at`, what the cooldown
//! counts from), and when they expire. A failed fetch is recorded too (same keys or none,
//! new `checked_at`), so a down identity provider is asked once per cooldown, not per request.
//!
//! Concurrency: an isolate records its fetch attempt before awaiting it, so requests that
//! interleave in one isolate do not fetch the same set twice within the cooldown (the later
//! ones answer from what is cached: an unknown `kid` is refused until the fetch has landed).
//! Isolates (and locations) that refresh at the same moment each fetch once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::gateway::error::{ErrorCode, GatewayError};
use crate::gateway::features::identity::jwt::{key_fits, Algorithm, Refusal};
use crate::gateway::ports::signatures::PublicKey;
use crate::gateway::ports::Ports;
use crate::gateway::util::text::hex;

pub const MAX_JWKS_BYTES: usize = 64 * 1024;
pub const MAX_KEYS: usize = 16;
pub const MIN_TTL_SECS: u64 = 60;
pub const MAX_TTL_SECS: u64 = 86_400;
pub const DEFAULT_TTL_SECS: u64 = 600;
pub const STALE_IF_ERROR_SECS: u64 = 3_600;
pub const FETCH_TIMEOUT_MS: u64 = 5_000;
pub const CACHE_PREFIX: &str = "jwks:";
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;
/// The largest public exponent RustCrypto's `rsa` takes (2^33 - 1); WebCrypto takes it too.
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;
/// Key sets memoized per isolate (one per configured JWKS URL; more only after config changes).
const MEMO_MAX: usize = 64;

/// One usable verification key.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it names one.
    pub alg: Option<Algorithm>,
    pub key: PublicKey,
}

#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

impl KeySet {
    /// The key for a token's `kid` and `alg` (index into `keys`):
    /// * with a `kid`: the key of that id (`UnknownKey` when there is none); if its type or
    ///   own `alg` does not fit the token's `alg`, `Algorithm`;
    /// * without: the one key that fits `alg`; none or several: `UnknownKey`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<usize, Refusal> {
        let fits = |k: &Jwk| key_fits(&k.key, alg) && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().enumerate().filter(|(_, k)| k.kid.as_deref() == Some(kid)).peekable();
                if named.peek().is_none() {
                    return Err(Refusal::UnknownKey);
                }
                named.find(|(_, k)| fits(k)).map(|(i, _)| i).ok_or(Refusal::Algorithm)
            }
            None => {
                let mut fitting = self.keys.iter().enumerate().filter(|(_, k)| fits(k));
                match (fitting.next(), fitting.next()) {
                    (Some((i, _)), None) => Ok(i),
                    _ => Err(Refusal::UnknownKey),
                }
            }
        }
    }
}

/// Parses a JWKS document, keeping its usable signature keys (at most [`MAX_KEYS`]). Keys we
/// cannot use (other types, curves or algorithms, `use: enc`, too small, broken) are skipped;
/// a document that is not `{"keys": [...]}` is an error. Also returns the kept keys as
/// minimal JWK objects (public members only): what the KV cache stores.
pub fn parse_jwks(bytes: &[u8]) -> Result<(KeySet, Vec<Value>), String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
    }
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| "the JWKS is not JSON".to_string())?;
    let Some(items) = doc.get("keys").and_then(Value::as_array) else {
        return Err("the JWKS has no `keys` array".into());
    };
    Ok(keep_usable(items))
}

fn keep_usable(items: &[Value]) -> (KeySet, Vec<Value>) {
    let mut set = KeySet::default();
    let mut kept = Vec::new();
    for item in items {
        if set.keys.len() >= MAX_KEYS {
            break;
        }
        if let Some((jwk, minimal)) = item.as_object().and_then(parse_jwk) {
            set.keys.push(jwk);
            kept.push(minimal);
        }
    }
    (set, kept)
}

fn parse_jwk(jwk: &Map<String, Value>) -> Option<(Jwk, Value)> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") || jwk.get("use").is_some_and(|u| !u.is_string()) {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops") {
        if !ops.as_array().is_some_and(|ops| ops.iter().any(|op| op == "verify")) {
            return None;
        }
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(Algorithm::parse(name)?),
        Some(_) => return None,
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= 256 => Some(kid.clone()),
        Some(_) => return None,
    };
    let b64 = |name: &str| text(name).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
    let (key, mut minimal) = match text("kty")? {
        "RSA" => {
            let (n, e) = (b64("n")?, b64("e")?);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits(&n)) || !usable_exponent(&e) {
                return None;
            }
            (PublicKey::Rsa { n, e }, json!({"kty": "RSA", "n": text("n")?, "e": text("e")?}))
        }
        "EC" if text("crv") == Some("P-256") => {
            let (x, y) = (b64("x")?.try_into().ok()?, b64("y")?.try_into().ok()?);
            // Whether the point is on the curve is the signer's to say (it then verifies nothing).
            (PublicKey::P256 { x, y }, json!({"kty": "EC", "crv": "P-256", "x": text("x")?, "y": text("y")?}))
        }
        _ => return None,
    };
    if alg.is_some_and(|a| !key_fits(&key, a)) {
        return None;
    }
    if let Some(kid) = &kid {
        minimal["kid"] = json!(kid);
    }
    if let Some(alg) = alg {
        minimal["alg"] = json!(alg.as_str());
    }
    Some((Jwk { kid, alg, key }, minimal))
}

/// A big-endian unsigned number without its leading zero bytes.
fn significant(number: &[u8]) -> &[u8] {
    &number[number.iter().take_while(|b| **b == 0).count()..]
}

/// The bit length of a big-endian unsigned number.
fn bits(number: &[u8]) -> usize {
    let number = significant(number);
    number.first().map_or(0, |top| number.len() * 8 - top.leading_zeros() as usize)
}

/// An RSA public exponent both signers take: odd, at least 3, at most [`MAX_RSA_EXPONENT`].
fn usable_exponent(e: &[u8]) -> bool {
    let e = significant(e);
    let value = (e.len() <= 8).then(|| e.iter().fold(0u64, |v, b| v << 8 | u64::from(*b)));
    value.is_some_and(|v| (3..=MAX_RSA_EXPONENT).contains(&v) && v % 2 == 1)
}

/// The cache lifetime `Cache-Control` gives, clamped (see the module table).
pub fn ttl_secs(cache_control: Option<&str>) -> u64 {
    let Some(value) = cache_control else { return DEFAULT_TTL_SECS };
    let mut ttl = DEFAULT_TTL_SECS;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            return MIN_TTL_SECS;
        }
        if let Some(secs) = directive.strip_prefix("max-age=") {
            ttl = secs.trim_matches('"').parse::<u64>().unwrap_or(0);
        }
    }
    ttl.clamp(MIN_TTL_SECS, MAX_TTL_SECS)
}

/// The KV entry of one key set (`jwks:<sha256 hex of the URL>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub url: String,
    /// When the keys were fetched (ms); 0 when no fetch ever succeeded.
    pub fetched_at: u64,
    /// When a fetch was last tried (ms), successful or not: the cooldown counts from here.
    pub checked_at: u64,
    /// When the keys stop being fresh (ms).
    pub expires_at: u64,
    pub keys: Vec<Value>,
}

pub fn cache_key(url: &str) -> String {
    format!("{CACHE_PREFIX}{}", hex(&Sha256::digest(url.as_bytes())))
}

/// A key set as an isolate holds it.
#[derive(Debug)]
pub struct Cached {
    pub set: KeySet,
    pub fetched_at: u64,
    pub checked_at: u64,
    pub expires_at: u64,
}

impl Cached {
    fn from_entry(entry: &Entry) -> Cached {
        let (set, _) = keep_usable(&entry.keys);
        Cached { set, fetched_at: entry.fetched_at, checked_at: entry.checked_at, expires_at: entry.expires_at }
    }

    pub fn fresh(&self, now: u64) -> bool {
        now < self.expires_at
    }

    fn usable_stale(&self, now: u64) -> bool {
        !self.set.keys.is_empty() && now < self.expires_at.saturating_add(STALE_IF_ERROR_SECS * 1000)
    }
}

/// Per-isolate memo: key sets by URL, and this isolate's last fetch attempt per URL.
#[derive(Default)]
pub struct JwksMemo {
    sets: RefCell<HashMap<String, Rc<Cached>>>,
    attempts: RefCell<HashMap<String, u64>>,
}

impl JwksMemo {
    fn fresh(&self, url: &str, now: u64) -> Option<Rc<Cached>> {
        self.sets.borrow().get(url).filter(|c| c.fresh(now)).cloned()
    }

    fn put(&self, url: &str, cached: Rc<Cached>) {
        let mut sets = self.sets.borrow_mut();
        if sets.len() >= MEMO_MAX && !sets.contains_key(url) {
            sets.clear();
        }
        sets.insert(url.to_string(), cached);
    }

    fn attempted(&self, url: &str) -> Option<u64> {
        self.attempts.borrow().get(url).copied()
    }

    fn attempt(&self, url: &str, now: u64) {
        let mut attempts = self.attempts.borrow_mut();
        if attempts.len() >= MEMO_MAX && !attempts.contains_key(url) {
            attempts.clear();
        }
        attempts.insert(url.to_string(), now);
    }

    pub fn len(&self) -> usize {
        self.sets.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a key set comes from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub jwks_url: &'a str,
    pub refresh_cooldown_ms: u64,
}

/// The key set holding the key for (`kid`, `alg`) and its index: from the isolate's memo,
/// else KV, else the JWKS URL. An unknown `kid` refetches the set once (when the cooldown
/// allows). Errors: the [`Refusal`]s `UnknownKey`/`Algorithm` as 401s, or 503
/// `jwks_unavailable` when no usable key set can be had.
pub async fn find_key<P: Ports>(
    ports: &P,
    memo: &JwksMemo,
    source: Source<'_>,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<(Rc<Cached>, usize), GatewayError> {
    let url = source.jwks_url;
    let now = ports.now_ms();
    let mut cached = memo.fresh(url, now);
    let from_memo = cached.is_some();
    if cached.is_none() {
        cached = read_kv(ports, url).await;
        if let Some(c) = cached.as_ref().filter(|c| c.fresh(now)) {
            memo.put(url, c.clone());
        }
    }
    if let Some(c) = cached.as_ref().filter(|c| c.fresh(now)) {
        match c.set.select(kid, alg) {
            Ok(i) => return Ok((c.clone(), i)),
            Err(Refusal::UnknownKey) => {}
            Err(refusal) => return Err(refusal.error()),
        }
        // Another isolate may have refreshed the set since this one memoized it.
        if from_memo {
            if let Some(newer) = read_kv(ports, url).await.filter(|n| n.fresh(now) && n.fetched_at > c.fetched_at) {
                memo.put(url, newer.clone());
                match newer.set.select(kid, alg) {
                    Ok(i) => return Ok((newer.clone(), i)),
                    Err(Refusal::UnknownKey) => cached = Some(newer),
                    Err(refusal) => return Err(refusal.error()),
                }
            }
        }
    }

    let last_check = cached.as_ref().map(|c| c.checked_at).into_iter().chain(memo.attempted(url)).max();
    if last_check.is_some_and(|at| now < at.saturating_add(source.refresh_cooldown_ms)) {
        return fall_back(cached.as_deref(), now, kid, alg);
    }
    memo.attempt(url, now);
    match fetch(ports, url).await {
        Ok((set, keys, ttl)) => {
            let entry =
                Entry { url: url.to_string(), fetched_at: now, checked_at: now, expires_at: now + ttl * 1000, keys };
            // A failed cache write only costs a refetch elsewhere.
            let _ = write_kv(ports, &entry, ttl + STALE_IF_ERROR_SECS).await;
            let fetched = Rc::new(Cached { set, fetched_at: now, checked_at: now, expires_at: entry.expires_at });
            memo.put(url, fetched.clone());
            let i = fetched.set.select(kid, alg).map_err(Refusal::error)?;
            Ok((fetched, i))
        }
        Err(_) => {
            // Remember the attempt in KV too (same keys, or none), so other instances wait out
            // the cooldown instead of asking a failing identity provider again.
            let (keys, fetched_at, expires_at) = match read_entry(ports, url).await {
                Some(e) => (e.keys, e.fetched_at, e.expires_at),
                None => (Vec::new(), 0, 0),
            };
            let keep_secs =
                (expires_at.saturating_add(STALE_IF_ERROR_SECS * 1000).saturating_sub(now) / 1000).max(MIN_TTL_SECS);
            let entry = Entry { url: url.to_string(), fetched_at, checked_at: now, expires_at, keys };
            let _ = write_kv(ports, &entry, keep_secs).await;
            fall_back(cached.as_deref(), now, kid, alg)
        }
    }
}

/// No fetch (cooldown) or a failed one: answer from what is cached — fresh keys (an unknown
/// `kid` stays unknown), stale keys within the stale-if-error window, or 503.
fn fall_back(
    cached: Option<&Cached>,
    now: u64,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<(Rc<Cached>, usize), GatewayError> {
    match cached {
        Some(c) if c.fresh(now) || c.usable_stale(now) => {
            let i = c.set.select(kid, alg).map_err(Refusal::error)?;
            let copy = Cached {
                set: KeySet { keys: vec![c.set.keys[i].clone()] },
                fetched_at: c.fetched_at,
                checked_at: c.checked_at,
                expires_at: c.expires_at,
            };
            Ok((Rc::new(copy), 0))
        }
        _ => Err(unavailable()),
    }
}

fn unavailable() -> GatewayError {
    GatewayError::not_configured(
        ErrorCode::JwksUnavailable,
        "the token's issuer key set (JWKS) could not be fetched; try again shortly",
    )
}

async fn read_entry<P: Ports>(ports: &P, url: &str) -> Option<Entry> {
    let bytes = ports.get(&cache_key(url)).await.ok()??;
    serde_json::from_slice::<Entry>(&bytes).ok().filter(|e| e.url == url)
}

async fn read_kv<P: Ports>(ports: &P, url: &str) -> Option<Rc<Cached>> {
    read_entry(ports, url).await.map(|e| Rc::new(Cached::from_entry(&e)))
}

async fn write_kv<P: Ports>(ports: &P, entry: &Entry, ttl_secs: u64) -> crate::gateway::error::Result<()> {
    let bytes =
        serde_json::to_vec(entry).map_err(|e| GatewayError::internal(ErrorCode::EncodeFailed, e.to_string()))?;
    ports.put(&cache_key(&entry.url), &bytes, Some(ttl_secs.max(MIN_TTL_SECS))).await
}

/// GETs the JWKS: 200 with a parsable document of at most [`MAX_JWKS_BYTES`].
async fn fetch<P: Ports>(ports: &P, url: &str) -> Result<(KeySet, Vec<Value>, u64), String> {
    let request = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|_| "invalid JWKS URL".to_string())?;
    let response = ports.send(&request, FETCH_TIMEOUT_MS).await.map_err(|e| format!("{e:?}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("the JWKS URL answered {}", response.status().as_u16()));
    }
    let ttl = ttl_secs(response.headers().get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()));
    let body = ports.read_body(response.into_body(), MAX_JWKS_BYTES).await.map_err(|e| format!("{e:?}"))?;
    let (set, keys) = parse_jwks(&body)?;
    Ok((set, keys, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::features::identity::testing;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::UpstreamError;
    use std::cell::Cell;

    const URL: &str = "https://idp.test/jwks.json";

    /// A host whose origin serves `jwks` (shared, so tests can rotate it) with `max-age=300`,
    /// counting fetches; `down` makes it refuse connections.
    struct Idp {
        host: MemoryHost,
        fetches: Rc<Cell<u32>>,
        jwks: Rc<RefCell<Value>>,
        down: Rc<Cell<bool>>,
    }

    fn idp() -> Idp {
        let fetches = Rc::new(Cell::new(0));
        let jwks = Rc::new(RefCell::new(testing::jwks()));
        let down = Rc::new(Cell::new(false));
        let (f, j, d) = (fetches.clone(), jwks.clone(), down.clone());
        let host = MemoryHost::new(move |request| {
            assert_eq!(request.uri().to_string(), URL);
            f.set(f.get() + 1);
            if d.get() {
                return Err(UpstreamError::Connect("refused".into()));
            }
            Ok(http::Response::builder()
                .header("cache-control", "public, max-age=300")
                .body(j.borrow().to_string().into_bytes())
                .unwrap())
        });
        Idp { host, fetches, jwks, down }
    }

    const SOURCE: Source = Source { jwks_url: URL, refresh_cooldown_ms: 30_000 };

    fn find(idp: &Idp, memo: &JwksMemo, kid: Option<&str>, alg: Algorithm) -> Result<Option<String>, ErrorCode> {
        block_on(find_key(&idp.host, memo, SOURCE, kid, alg))
            .map(|(set, i)| set.set.keys[i].kid.clone())
            .map_err(|e| e.code)
    }

    #[test]
    fn parses_usable_keys_and_skips_the_rest() {
        let mut doc = testing::jwks();
        let keys = doc["keys"].as_array_mut().unwrap();
        keys.push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}));
        keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": testing::RSA_N, "e": "AQAB"}));
        keys.push(json!({"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}));
        keys.push(json!({"kty": "RSA", "kid": "even-e", "n": testing::RSA_N, "e": "Ag"}));
        keys.push(json!({"kty": "RSA", "kid": "huge-e", "n": testing::RSA_N, "e": "AQAAAAAB"}));
        keys.push(json!({"kty": "RSA", "kid": "ps", "alg": "PS256", "n": testing::RSA_N, "e": "AQAB"}));
        keys.push(json!({"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": testing::RSA_N, "e": "AQAB"}));
        keys.push(json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": testing::EC_X, "y": testing::EC_Y}));
        keys.push(json!({"kty": "EC", "kid": "offcurve", "crv": "P-256", "x": testing::EC_X, "y": testing::EC_X}));
        keys.push(json!({"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": testing::RSA_N, "e": "AQAB"}));
        keys.push(json!({"kty": "RSA", "kid": "bad64", "n": "!!", "e": "AQAB"}));
        keys.push(json!("not an object"));
        keys.push(json!({"kty": "RSA", "kid": "ok-no-alg", "n": testing::RSA_N, "e": "AQAB", "d": "private!"}));
        let (set, kept) = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        // A point off the curve is kept (only the signer can tell), and verifies nothing.
        assert_eq!(kids, ["rsa-1", "ec-1", "offcurve", "ok-no-alg"]);
        assert!(kept.iter().all(|k| k.get("d").is_none()), "only public members are cached");
        assert!(parse_jwks(b"[]").is_err() && parse_jwks(b"{\"keys\": 1}").is_err() && parse_jwks(b"nope").is_err());
        assert!(parse_jwks(&vec![b' '; MAX_JWKS_BYTES + 1]).is_err());
        let many: Vec<Value> = (0..40).map(|i| json!({"kty": "EC", "crv": "P-256", "kid": format!("k{i}"), "x": testing::EC_X, "y": testing::EC_Y})).collect();
        let (set, _) = parse_jwks(json!({ "keys": many }).to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), MAX_KEYS);
    }

    #[test]
    fn selects_by_kid_and_alg() {
        let (set, _) = parse_jwks(testing::jwks().to_string().as_bytes()).unwrap();
        assert_eq!(set.select(Some("rsa-1"), Algorithm::Rs256), Ok(0));
        assert_eq!(set.select(Some("ec-1"), Algorithm::Es256), Ok(1));
        assert_eq!(set.select(Some("rsa-1"), Algorithm::Es256), Err(Refusal::Algorithm), "kid/alg mismatch");
        assert_eq!(set.select(Some("ec-1"), Algorithm::Rs256), Err(Refusal::Algorithm));
        assert_eq!(set.select(Some("nope"), Algorithm::Rs256), Err(Refusal::UnknownKey));
        assert_eq!(set.select(None, Algorithm::Rs256), Ok(0), "one RSA key: no kid needed");
        let mut two = set.clone();
        two.keys.push(set.keys[0].clone());
        assert_eq!(two.select(None, Algorithm::Rs256), Err(Refusal::UnknownKey), "ambiguous without a kid");
    }

    #[test]
    fn cache_control_lifetimes() {
        assert_eq!(ttl_secs(None), DEFAULT_TTL_SECS);
        assert_eq!(ttl_secs(Some("public, max-age=300")), 300);
        assert_eq!(ttl_secs(Some("max-age=5")), MIN_TTL_SECS);
        assert_eq!(ttl_secs(Some("max-age=99999999")), MAX_TTL_SECS);
        assert_eq!(ttl_secs(Some("max-age=300, no-cache")), MIN_TTL_SECS);
        assert_eq!(ttl_secs(Some("no-store")), MIN_TTL_SECS);
        assert_eq!(ttl_secs(Some("max-age=abc")), MIN_TTL_SECS);
        assert_eq!(ttl_secs(Some("private")), DEFAULT_TTL_SECS);
    }

    #[test]
    fn fetches_once_then_memo_then_kv() {
        let idp = idp();
        let memo = JwksMemo::default();
        assert_eq!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256), Ok(Some("rsa-1".into())));
        assert_eq!(find(&idp, &memo, Some("ec-1"), Algorithm::Es256), Ok(Some("ec-1".into())));
        assert_eq!(idp.fetches.get(), 1);
        let entry: Entry = serde_json::from_slice(&idp.host.kv.borrow()[&cache_key(URL)]).unwrap();
        assert_eq!(entry.expires_at - entry.fetched_at, 300_000, "max-age honoured");
        // A new isolate reads KV, not the URL.
        let other = JwksMemo::default();
        assert_eq!(find(&idp, &other, Some("rsa-1"), Algorithm::Rs256), Ok(Some("rsa-1".into())));
        assert_eq!(idp.fetches.get(), 1);
        // After the lifetime, the next request refetches.
        idp.host.advance(300_001);
        assert_eq!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256), Ok(Some("rsa-1".into())));
        assert_eq!(idp.fetches.get(), 2);
    }

    #[test]
    fn unknown_kid_refetches_once_per_cooldown() {
        let idp = idp();
        let memo = JwksMemo::default();
        assert!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256).is_ok());
        // Within the cooldown of the first fetch: no refetch.
        assert_eq!(find(&idp, &memo, Some("rsa-2"), Algorithm::Rs256), Err(ErrorCode::TokenUnknownKey));
        assert_eq!(idp.fetches.get(), 1);
        // The provider rotates in a new key; after the cooldown, one refetch finds it.
        idp.jwks.borrow_mut()["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "RSA", "kid": "rsa-2", "alg": "RS256", "n": testing::RSA_N, "e": testing::RSA_E}));
        idp.host.advance(30_000);
        assert_eq!(find(&idp, &memo, Some("rsa-2"), Algorithm::Rs256), Ok(Some("rsa-2".into())));
        assert_eq!(idp.fetches.get(), 2);
        // A kid that is nowhere: one refetch after the cooldown, then refused without fetching.
        idp.host.advance(30_000);
        assert_eq!(find(&idp, &memo, Some("ghost"), Algorithm::Rs256), Err(ErrorCode::TokenUnknownKey));
        assert_eq!(idp.fetches.get(), 3);
        for _ in 0..5 {
            assert_eq!(find(&idp, &memo, Some("ghost"), Algorithm::Rs256), Err(ErrorCode::TokenUnknownKey));
        }
        assert_eq!(idp.fetches.get(), 3, "rate-limited");
        // The cooldown also holds for a fresh isolate (checked_at is in KV).
        let fresh = JwksMemo::default();
        assert_eq!(find(&idp, &fresh, Some("ghost"), Algorithm::Rs256), Err(ErrorCode::TokenUnknownKey));
        assert_eq!(idp.fetches.get(), 3);
    }

    #[test]
    fn another_isolates_refresh_is_used_without_a_fetch() {
        let idp = idp();
        let (a, b) = (JwksMemo::default(), JwksMemo::default());
        assert!(find(&idp, &a, Some("rsa-1"), Algorithm::Rs256).is_ok());
        assert!(find(&idp, &b, Some("rsa-1"), Algorithm::Rs256).is_ok());
        idp.jwks.borrow_mut()["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "EC", "kid": "ec-2", "crv": "P-256", "x": testing::EC_X, "y": testing::EC_Y}));
        idp.host.advance(31_000);
        assert_eq!(find(&idp, &a, Some("ec-2"), Algorithm::Es256), Ok(Some("ec-2".into())));
        assert_eq!(idp.fetches.get(), 2);
        // Isolate b still memoizes the old set; the newer KV copy has the key: no fetch.
        assert_eq!(find(&idp, &b, Some("ec-2"), Algorithm::Es256), Ok(Some("ec-2".into())));
        assert_eq!(idp.fetches.get(), 2);
        assert_eq!(find(&idp, &b, Some("rsa-1"), Algorithm::Rs256), Ok(Some("rsa-1".into())));
    }

    #[test]
    fn provider_down_cold_stale_and_recovery() {
        let idp = idp();
        let memo = JwksMemo::default();
        idp.down.set(true);
        assert_eq!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256), Err(ErrorCode::JwksUnavailable));
        assert_eq!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256), Err(ErrorCode::JwksUnavailable));
        assert_eq!(idp.fetches.get(), 1, "a failure also waits out the cooldown");
        let other = JwksMemo::default();
        assert_eq!(find(&idp, &other, Some("rsa-1"), Algorithm::Rs256), Err(ErrorCode::JwksUnavailable));
        assert_eq!(idp.fetches.get(), 1, "...in other isolates too (KV)");
        idp.down.set(false);
        idp.host.advance(30_000);
        assert!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256).is_ok());
        assert_eq!(idp.fetches.get(), 2);
        // Expired and the provider down: stale keys serve for STALE_IF_ERROR_SECS, then 503.
        idp.down.set(true);
        idp.host.advance(300_000);
        assert!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256).is_ok());
        assert_eq!(idp.fetches.get(), 3);
        idp.host.advance(STALE_IF_ERROR_SECS * 1000);
        assert_eq!(find(&idp, &memo, Some("rsa-1"), Algorithm::Rs256), Err(ErrorCode::JwksUnavailable));
    }

    #[test]
    fn broken_documents_and_statuses_are_fetch_failures() {
        for (status, body) in [(200, "not json"), (500, "{}"), (404, "{\"keys\": []}")] {
            let host = MemoryHost::new(move |_| {
                Ok(http::Response::builder().status(status).body(body.as_bytes().to_vec()).unwrap())
            });
            let r = block_on(find_key(&host, &JwksMemo::default(), SOURCE, Some("k"), Algorithm::Rs256));
            assert_eq!(r.unwrap_err().code, ErrorCode::JwksUnavailable, "{status} {body}");
        }
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        let host = MemoryHost::new(move |_| Ok(http::Response::builder().body(big.clone()).unwrap()));
        let r = block_on(find_key(&host, &JwksMemo::default(), SOURCE, Some("k"), Algorithm::Rs256));
        assert_eq!(r.unwrap_err().code, ErrorCode::JwksUnavailable);
    }
}
