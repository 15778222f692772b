//! API keys: their format, how they are presented, and their records in KV (DESIGN.md §3).
//!
//! A key is `egw_` + base64url (no padding) of its record's id (the 8 bytes that `k_` + 16
//! hex digits spell) and 30 random bytes: 55 characters, 240 bits of entropy, one block of
//! SHA-256 (a 56th character would make every request hash two). Keys made before the id was
//! part of the key, `egw_` + base64url of 32 random bytes (47 characters), keep working. The
//! plaintext exists only in the admin response that creates (or rotates) it and in the
//! client's hands. KV holds:
//!
//! | entry | value |
//! |---|---|
//! | `keyid:<id>` | the JSON [`KeyRecord`], the SHA-256 hex of its key in `hash` (an older key not written since: that hash alone) |
//! | `key:<sha256 hex of the key>` | older keys only: their JSON record, read to learn the id |
//!
//! So a request with a key reads one entry, `keyid:<id>` (the id is in the key), and that
//! entry alone decides: a rotation replaces it in one write, so the old key stops matching
//! at once and nothing is left behind that could still let it in. An older key costs two
//! reads in turn: its `key:` record for the id, then the `keyid:` entry, which must name it.
//!
//! The id (`k_` + 16 hex digits) is what logs, usage and counters name; it is not secret, and
//! it cannot be turned into the key. A fast hash (SHA-256) is right here: the secret part is
//! 240 random bits, so there is nothing to brute-force, unlike a password.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::{Clock, Kv};
use crate::gateway::util::order;
use crate::gateway::util::text::hex;

pub const KEY_PREFIX: &str = "egw_";
/// `keyid:<id>`: a key's record, by its id.
pub const ID_PREFIX: &str = "keyid:";
/// `key:<hash>`: an older key's record, by the hash of the key (see the module doc).
pub const HASH_PREFIX: &str = "key:";
/// Random bytes in a new key.
pub const KEY_BYTES: usize = 30;
/// Bytes of a key id (16 hex digits after `k_`), as [`new_id`] makes them and a key carries them.
const ID_BYTES: usize = 8;
/// base64url characters of a key's id and random bytes.
const BODY_CHARS: usize = ((ID_BYTES + KEY_BYTES) * 8).div_ceil(6);
/// Longest key accepted (`egw_` + 96 bytes of base64url): anything longer is not one of ours
/// and is refused without a KV lookup.
const MAX_KEY_CHARS: usize = 4 + 128;

/// The period a USD budget renews over (UTC calendar day or month).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    #[default]
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    pub fn parse(value: &str) -> Option<BudgetPeriod> {
        match value {
            "day" => Some(BudgetPeriod::Day),
            "month" => Some(BudgetPeriod::Month),
            _ => None,
        }
    }
}

/// The KV record of one key. Never holds the key itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `k_` + 16 hex digits; safe to log.
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub name: String,
    /// Endpoint (or route) names this key may call; `*` allows all, `prefix*` a family.
    #[serde(default = "all_endpoints")]
    pub endpoints: Vec<String>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub budget_period: BudgetPeriod,
    /// Residency pin: requests with this key never leave this region.
    #[serde(default)]
    pub region: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the key is refused from this instant on.
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub disabled: bool,
    /// Count this key's limits exactly (a Durable Object on Cloudflare) even when the config's
    /// `limits.mode` is `kv`.
    #[serde(default)]
    pub exact: bool,
    /// What this key may do through `/mcp` (servers, tools, per-tool limits); `None`: no
    /// key-level restriction (the tenant's `mcp_policies` entry still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpGrant>,
    /// SHA-256 hex of the key; compared in constant time with the presented key's hash.
    pub hash: String,
}

/// An MCP grant — of a key (`KeyRecord::mcp`) or a tenant (config `mcp_policies`): the servers
/// and tools (`server.tool` glob patterns) it allows and its per-tool rate limits. An absent
/// list restricts nothing. Checked by `mcp::policy::check_grant`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// `server.tool` pattern → limit, counted per key and tool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_limits: BTreeMap<String, ToolLimit>,
}

/// MLflow's limit shape, `{calls, renewal_period}`, for one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolLimit {
    pub calls: u64,
    pub renewal_period: String,
}

fn all_endpoints() -> Vec<String> {
    vec!["*".to_string()]
}

/// Why a stored key is not usable. Clients are never told which (one 401 message for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Expired,
    Disabled,
}

impl KeyRecord {
    pub fn state(&self, now_ms: u64) -> KeyState {
        if self.disabled {
            KeyState::Disabled
        } else if self.expires_at.is_some_and(|at| now_ms / 1000 >= at) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    /// Whether the allow-list admits `endpoint` (`*`, an exact name, or `prefix*`).
    pub fn allows(&self, endpoint: &str) -> bool {
        self.endpoints.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => endpoint.starts_with(prefix),
            None => pattern == endpoint,
        })
    }

    /// The budget in nano-USD (the unit counters use), if any.
    pub fn budget_nusd(&self) -> Option<u64> {
        self.budget_usd.map(usd_to_nusd)
    }

    /// The record as the admin API shows it: everything but the hash.
    pub fn view(&self, now_ms: u64) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.remove("hash");
            let state = match self.state(now_ms) {
                KeyState::Active => "active",
                KeyState::Expired => "expired",
                KeyState::Disabled => "revoked",
            };
            map.insert("state".into(), json!(state));
        }
        value
    }
}

/// USD to nano-USD, rounded; negative and non-finite amounts are 0.
pub fn usd_to_nusd(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e9).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// A fresh key for the record `id` (one [`new_id`] made): `egw_` + base64url(the id's 8 bytes
/// + 30 random bytes).
pub fn generate(clock: &impl Clock, id: &str) -> String {
    let digits = id.strip_prefix("k_").filter(|d| d.len() == 2 * ID_BYTES);
    let id_bytes = digits.and_then(|d| u64::from_str_radix(d, 16).ok());
    debug_assert!(id_bytes.is_some(), "not an id new_id makes: {id}");
    let mut bytes = [0u8; ID_BYTES + KEY_BYTES];
    bytes[..ID_BYTES].copy_from_slice(&id_bytes.unwrap_or_default().to_be_bytes());
    clock.random_bytes(&mut bytes[ID_BYTES..]);
    format!("{KEY_PREFIX}{}", base64url(&bytes))
}

/// A fresh key id: `k_` + 16 hex digits.
pub fn new_id(clock: &impl Clock) -> String {
    let mut bytes = [0u8; ID_BYTES];
    clock.random_bytes(&mut bytes);
    format!("k_{}", hex(&bytes))
}

/// A fresh id and a key for it: `(id, key)`.
pub fn new_key(clock: &impl Clock) -> (String, String) {
    let id = new_id(clock);
    let key = generate(clock, &id);
    (id, key)
}

/// The id of the record a key names; `None` for an older key (its record is found by the
/// key's hash) or anything that is not a key.
pub fn named_id(key: &str) -> Option<String> {
    let body = key.strip_prefix(KEY_PREFIX).filter(|body| body.len() == BODY_CHARS)?;
    // The id is in the first 12 characters (9 bytes): the rest is never decoded.
    let bytes = URL_SAFE_NO_PAD.decode(body.get(..12)?).ok()?;
    Some(format!("k_{}", hex(&bytes[..ID_BYTES])))
}

/// SHA-256 hex of a key: what its record's `hash` holds.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// The entry of key `id`'s record.
pub fn id_entry(id: &str) -> String {
    format!("{ID_PREFIX}{id}")
}

/// The entry of an older key's record, by the key's hash.
pub fn hash_entry(hash: &str) -> String {
    format!("{HASH_PREFIX}{hash}")
}

/// Whether `key` has our shape (prefix, base64url body of 32+ bytes). Anything else is
/// refused without a KV read.
pub fn looks_like_key(key: &str) -> bool {
    let Some(body) = key.strip_prefix(KEY_PREFIX) else { return false };
    key.len() <= MAX_KEY_CHARS
        && body.len() >= 43
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a key id has our shape (`k_` + hex); ids come from URLs in the admin API.
pub fn valid_id(id: &str) -> bool {
    id.len() > 2 && id.len() <= 40 && id.starts_with("k_") && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The key the client presented: `Authorization: Bearer` (OpenAI SDKs), `x-api-key`
/// (Anthropic SDKs), `api-key` (Azure OpenAI SDKs), in that order. Blank values count as absent.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    // Names made at compile time (a `&str` name is parsed on every lookup).
    const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");
    const API_KEY: http::HeaderName = http::HeaderName::from_static("api-key");
    let bearer = headers.get_all(http::header::AUTHORIZATION).iter().find_map(|value| {
        let value = value.to_str().ok()?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .into_iter()
        .chain([X_API_KEY, API_KEY].iter().filter_map(|name| headers.get(name)?.to_str().ok().map(str::trim)))
        .find(|key| !key.is_empty())
}

/// Constant-time equality: every byte is compared whatever the first difference. Lengths are
/// not secret here (both sides are SHA-256 hex).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What `keyid:<id>` holds: the record, or (an older key not changed since) its key's hash.
// Read and taken apart at once: a box would only add an allocation per lookup.
#[allow(clippy::large_enum_variant)]
enum IdEntry {
    Record(KeyRecord),
    Hash(Vec<u8>),
}

async fn read_id_entry(kv: &impl Kv, id: &str) -> Result<Option<IdEntry>> {
    let Some(bytes) = kv.get(&id_entry(id)).await? else { return Ok(None) };
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(&bytes).map(|record| Some(IdEntry::Record(record))).map_err(|_| corrupt())
    } else {
        Ok(Some(IdEntry::Hash(bytes)))
    }
}

/// An older key's record under `key:<hash>`, if any. It only tells the id: the `keyid:` entry
/// decides ([`find`]).
pub async fn load(kv: &impl Kv, hash: &str) -> Result<Option<KeyRecord>> {
    let Some(bytes) = kv.get(&hash_entry(hash)).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|_| corrupt())
}

/// The live record of the key whose SHA-256 hex is `hash` (its state is the caller's to
/// check). `id`: the id the key names ([`named_id`]) or a lapsed memo entry knew; then the
/// `keyid:` entry is the one read, unless it is an older key's (a hash), whose record comes
/// next. Without it, an older key's `key:` record is read for the id first.
pub async fn find(kv: &impl Kv, hash: &str, id: Option<&str>) -> Result<Option<KeyRecord>> {
    let (id, loaded) = match id {
        Some(id) => (id.to_string(), None),
        None => match load(kv, hash).await? {
            Some(record) => (record.id.clone(), Some(record)),
            None => return Ok(None),
        },
    };
    match read_id_entry(kv, &id).await? {
        Some(IdEntry::Record(record)) => {
            Ok((record.id == id && ct_eq(record.hash.as_bytes(), hash.as_bytes())).then_some(record))
        }
        Some(IdEntry::Hash(named)) if ct_eq(&named, hash.as_bytes()) => match loaded {
            Some(record) => Ok(Some(record)),
            None => Ok(load(kv, hash).await?.filter(|record| record.id == id)),
        },
        _ => Ok(None),
    }
}

/// Writes the record under its id: one write, which also retires whatever key the entry named
/// before (a rotation).
pub async fn store(kv: &impl Kv, record: &KeyRecord) -> Result<()> {
    let bytes = serde_json::to_vec(record).map_err(|_| corrupt())?;
    kv.put(&id_entry(&record.id), &bytes, None).await
}

/// The record of key `id`.
pub async fn by_id(kv: &impl Kv, id: &str) -> Result<Option<KeyRecord>> {
    if !valid_id(id) {
        return Ok(None);
    }
    match read_id_entry(kv, id).await? {
        Some(IdEntry::Record(record)) => Ok(Some(record).filter(|r| r.id == id)),
        Some(IdEntry::Hash(hash)) => {
            let hash = String::from_utf8(hash).map_err(|_| corrupt())?;
            Ok(load(kv, &hash).await?.filter(|r| r.id == id))
        }
        None => Ok(None),
    }
}

/// Every key record, oldest first. A KV read per key (two for an older one): for tests and
/// small stores; the admin API pages with [`list_page`].
pub async fn list(kv: &impl Kv) -> Result<Vec<KeyRecord>> {
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = list_page(kv, cursor.as_deref(), MAX_PAGE).await?;
        records.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    order::sort_by(&mut records, |a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(records)
}

/// Largest page of [`list_page`]: up to two KV reads per key, so a page stays well under
/// Cloudflare's per-invocation cap on KV operations.
pub const MAX_PAGE: usize = 200;

/// Up to `limit` key records in id order after `cursor` (a key id), and the cursor of the next
/// page (`None`: this was the last). One list plus a read per key (two for an older one).
pub async fn list_page(kv: &impl Kv, cursor: Option<&str>, limit: usize) -> Result<(Vec<KeyRecord>, Option<String>)> {
    let mut ids: Vec<String> =
        kv.list(ID_PREFIX).await?.iter().filter_map(|n| n.strip_prefix(ID_PREFIX)).map(str::to_owned).collect();
    order::sort(&mut ids);
    let start = cursor.map_or(0, |c| ids.partition_point(|id| id.as_str() <= c));
    let limit = limit.clamp(1, MAX_PAGE);
    let page = &ids[start.min(ids.len())..(start + limit).min(ids.len())];
    let mut records = Vec::with_capacity(page.len());
    for id in page {
        if let Some(record) = by_id(kv, id).await? {
            records.push(record);
        }
    }
    let next = (start + limit < ids.len()).then(|| page.last().cloned()).flatten();
    Ok((records, next))
}

fn corrupt() -> GatewayError {
    GatewayError::internal(ErrorCode::KeyRecordInvalid, "a stored API key record could not be read")
}

/// RFC 4648 base64url without padding.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};

    fn host() -> MemoryHost {
        MemoryHost::new(|_| Err(crate::gateway::ports::UpstreamError::Timeout))
    }

    fn record(hash: &str) -> KeyRecord {
        KeyRecord {
            id: "k_0123456789abcdef".into(),
            tenant: "acme".into(),
            name: "ci".into(),
            endpoints: vec!["chat".into(), "emb-*".into()],
            rpm: Some(5),
            tpm: None,
            budget_usd: Some(1.5),
            budget_period: BudgetPeriod::Day,
            region: None,
            created: 1_700_000_000,
            expires_at: Some(1_700_000_100),
            disabled: false,
            exact: false,
            mcp: None,
            hash: hash.into(),
        }
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn generated_keys_have_the_format_and_differ() {
        let host = host();
        let id = new_id(&host);
        assert!(valid_id(&id) && id.len() == 2 + 16, "{id}");
        let a = generate(&host, &id);
        let b = generate(&host, &id);
        assert!(a.starts_with("egw_") && a.len() == 55, "{a}: one SHA-256 block holds at most 55 bytes");
        assert!(looks_like_key(&a) && looks_like_key(&b));
        assert_ne!(a, b);
        assert_eq!(hash_key(&a).len(), 64);
        assert_eq!((named_id(&a), named_id(&b)), (Some(id.clone()), Some(id)));
        assert!(!looks_like_key("sk-abc") && !looks_like_key("egw_short") && !looks_like_key(&format!("{a}!")));
        assert!(!valid_id("k_") && !valid_id("../x") && !valid_id("k_zz"));
    }

    #[test]
    fn only_a_key_of_the_current_shape_names_an_id() {
        let host = host();
        assert_eq!(named_id(&older::key(&host)), None, "an older key is found by its hash");
        let id = "k_0123456789abcdef";
        let key = generate(&host, id);
        assert_eq!(named_id(&key).as_deref(), Some(id));
        let body = &key[4..];
        for not_one in [
            format!("egw_{body}A"),
            format!("egw_{}", &body[1..]),
            format!("sk-_{body}"),
            format!("egw_!{}", &body[1..]),
        ] {
            assert_eq!(named_id(&not_one), None, "{not_one}");
        }
    }

    #[test]
    fn presented_key_from_each_sdk_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("api-key", "azure".parse().unwrap());
        assert_eq!(presented_key(&h), Some("azure"));
        h.insert("x-api-key", " anthropic ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("anthropic"));
        h.insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(presented_key(&h), Some("anthropic"), "non-bearer authorization is not a key");
        h.insert("authorization", "bearer  openai ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("openai"));
        let mut blank = HeaderMap::new();
        blank.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(presented_key(&blank), None);
    }

    #[test]
    fn state_allow_list_and_view() {
        let r = record("h");
        assert_eq!(r.state(1_700_000_099_999), KeyState::Active);
        assert_eq!(r.state(1_700_000_100_000), KeyState::Expired);
        assert_eq!(KeyRecord { disabled: true, ..r.clone() }.state(0), KeyState::Disabled);
        assert!(r.allows("chat") && r.allows("emb-small") && !r.allows("chat2") && !r.allows("embeddings"));
        assert!(KeyRecord { endpoints: all_endpoints(), ..r.clone() }.allows("anything"));
        let view = r.view(0);
        assert!(view.get("hash").is_none());
        assert_eq!(view["state"], "active");
        assert_eq!(r.budget_nusd(), Some(1_500_000_000));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn store_find_and_list() {
        let host = host();
        let mut r = record("");
        let key = generate(&host, &r.id);
        r.hash = hash_key(&key);
        block_on(store(&host, &r)).unwrap();
        let kv = host.kv.borrow().clone();
        assert_eq!(kv.keys().collect::<Vec<_>>(), vec![&id_entry(&r.id)], "one entry per key");
        assert!(kv.values().all(|v| !String::from_utf8_lossy(v).contains(&key)), "plaintext never stored");
        let before = host.kv_ops.get();
        assert_eq!(block_on(find(&host, &r.hash, named_id(&key).as_deref())).unwrap(), Some(r.clone()));
        assert_eq!(host.kv_ops.get() - before, 1, "a key's record is one read");
        assert_eq!(block_on(find(&host, &hash_key(&generate(&host, &r.id)), Some(&r.id))).unwrap(), None);
        assert_eq!(block_on(by_id(&host, &r.id)).unwrap(), Some(r.clone()));
        assert_eq!(block_on(by_id(&host, "k_ffff")).unwrap(), None);
        assert_eq!(block_on(list(&host)).unwrap(), vec![r.clone()]);
        host.kv.borrow_mut().insert(id_entry(&r.id), b"{not json".to_vec());
        let e = block_on(by_id(&host, &r.id)).unwrap_err();
        assert_eq!(e.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Keys made before the id was in the key: found by their hash, decided by the `keyid:`
    /// entry, and moved to the current layout by the first write of their record.
    #[test]
    fn an_older_key_is_found_by_its_hash_until_its_record_is_written_again() {
        let host = host();
        let key = older::key(&host);
        let mut r = record(&hash_key(&key));
        block_on(older::store(&host, &r)).unwrap();
        let before = host.kv_ops.get();
        assert_eq!(block_on(find(&host, &r.hash, None)).unwrap(), Some(r.clone()));
        assert_eq!(host.kv_ops.get() - before, 2, "its record for the id, then the id's entry");
        assert_eq!(block_on(find(&host, &r.hash, Some(&r.id))).unwrap(), Some(r.clone()), "id known: the same");
        assert_eq!(block_on(by_id(&host, &r.id)).unwrap(), Some(r.clone()));
        assert_eq!(block_on(list(&host)).unwrap(), vec![r.clone()]);
        // A revoke writes the record under its id: the stale `key:` record no longer counts.
        r.disabled = true;
        block_on(store(&host, &r)).unwrap();
        assert!(block_on(find(&host, &r.hash, None)).unwrap().unwrap().disabled);
        assert!(block_on(by_id(&host, &r.id)).unwrap().unwrap().disabled);
        // A rotation names a new key in the entry: the older key's record is left behind, dead.
        let rotated = generate(&host, &r.id);
        block_on(store(&host, &KeyRecord { hash: hash_key(&rotated), disabled: false, ..r.clone() })).unwrap();
        assert_eq!(block_on(find(&host, &hash_key(&key), None)).unwrap(), None);
        assert!(block_on(find(&host, &hash_key(&rotated), named_id(&rotated).as_deref())).unwrap().is_some());
        host.kv.borrow_mut().insert(hash_entry(&r.hash), b"{not json".to_vec());
        assert_eq!(block_on(load(&host, &r.hash)).unwrap_err().status, http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn minimal_record_gets_defaults() {
        let r: KeyRecord =
            serde_json::from_value(json!({"id": "k_01", "tenant": "t", "created": 1, "hash": "h"})).unwrap();
        assert_eq!(r.endpoints, vec!["*"]);
        assert_eq!(r.budget_period, BudgetPeriod::Month);
        assert!(!r.disabled && !r.exact && r.rpm.is_none());
    }
}

/// Keys and records as they were made before the id was in the key, for tests of that path.
#[cfg(test)]
pub mod older {
    use super::*;

    /// `egw_` + base64url(32 random bytes).
    pub fn key(clock: &impl Clock) -> String {
        let mut bytes = [0u8; 32];
        clock.random_bytes(&mut bytes);
        format!("{KEY_PREFIX}{}", base64url(&bytes))
    }

    /// The record under `key:<hash>`, and its hash under `keyid:<id>`.
    pub async fn store(kv: &impl Kv, record: &KeyRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).map_err(|_| corrupt())?;
        kv.put(&hash_entry(&record.hash), &bytes, None).await?;
        kv.put(&id_entry(&record.id), record.hash.as_bytes(), None).await
    }
}
