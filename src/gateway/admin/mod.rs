//! The admin API (`/admin/*`): config apply/rollback/read, API keys, usage. Everything needs
//! `Authorization: Bearer <token>` where the token is the host secret `GATEWAY_ADMIN_TOKEN`
//! (compared in constant time; without that secret the admin API is off: 503). Every call —
//! refused ones too — produces one audit line (JSON, returned for the host to print) naming
//! the action, outcome and the objects touched: key ids and config versions, never a key, a
//! token or a config value.
//!
//! | method & path | body / query | answer |
//! |---|---|---|
//! | `GET /admin/config` | | the active snapshot as stored (secret *references* like `$OPENAI_API_KEY`; any literal secret-like value is shown as `[redacted]`) |
//! | `POST /admin/config` | config JSON; `?dry_run=true` validates only | `{version, previous, endpoints}`; 400 with `issues` |
//! | `GET /admin/config/versions` | | `{active, versions}` |
//! | `POST /admin/config/rollback` | `{"version": "..."}` | `{version, previous}` |
//! | `POST /admin/keys` | `{tenant, name?, endpoints?, rpm?, tpm?, budget_usd?, budget_period?, region?, expires_at?, expires_in?, exact?}` | 201 `{key, id, ...}` — the only time the key is shown |
//! | `GET /admin/keys` | `?tenant=` | `{keys: [...]}` (no key, no hash) |
//! | `GET /admin/keys/{id}` | | the record |
//! | `POST /admin/keys/{id}/revoke` | | the record, `state: revoked` |
//! | `POST /admin/keys/{id}/rotate` | | `{key, id, ...}`: a new key for the same record; the old one stops working |
//! | `GET /admin/usage` | `?key=<id>` or `?tenant=<name>`, `&from=YYYY-MM-DD&to=YYYY-MM-DD` (default today) | `{days: [...], total}` |

use http::{Method, Request, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::gateway::auth::AuthMemo;
use crate::gateway::check::did_you_mean;
use crate::gateway::config::{Config, ACTIVE_KEY};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::keys::{self, BudgetPeriod, KeyRecord};
use crate::gateway::features::limits::valid_tenant;
use crate::gateway::util::text::{hex, percent_decode};
use crate::gateway::util::time::{day_string, days_of, parse_day};

use crate::gateway::features::usage::{self, Subject};
use crate::gateway::ports::Ports;

/// The host secret holding the admin token.
pub const ADMIN_TOKEN_SECRET: &str = "GATEWAY_ADMIN_TOKEN";
/// `config:v:<version>`: every applied snapshot, for rollback.
pub const VERSION_PREFIX: &str = "config:v:";

/// What the admin API answers: a JSON body and status, plus the audit line for the host's log.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub body: Value,
    pub audit: String,
}

/// What the audit line records.
#[derive(Debug, Default, Serialize)]
struct Audit {
    ts: u64,
    audit: &'static str,
    action: &'static str,
    method: String,
    path: String,
    outcome: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorCode>,
}

/// A handler's answer: status + body, or an error; the audit fields it filled in either way.
type Handled = std::result::Result<(StatusCode, Value), Failure>;

/// An error answer; `issues` adds a list of config issues to the error body.
struct Failure {
    error: GatewayError,
    issues: Option<Value>,
}

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Self {
        Failure { error, issues: None }
    }
}

/// Serves one `/admin/*` request. `memo` is the isolate's key memo: a revoke or rotate handled
/// here takes effect in this isolate at once (elsewhere within the bound in `auth`).
pub async fn handle<P: Ports>(ports: &P, memo: &AuthMemo, request: &Request<Vec<u8>>) -> AdminResponse {
    let mut audit = Audit {
        ts: ports.now_ms(),
        audit: "admin",
        action: "unknown",
        method: request.method().to_string(),
        path: crate::gateway::util::text::truncate(request.uri().path(), 200).to_string(),
        ..Audit::default()
    };
    let result = match check_token(ports, request.headers()) {
        Ok(()) => route(ports, memo, request, &mut audit).await,
        Err(e) => {
            audit.action = "auth";
            Err(e.into())
        }
    };
    let (status, body) = match result {
        Ok((status, body)) => {
            audit.outcome = "ok";
            (status, body)
        }
        Err(Failure { error, issues }) => {
            audit.outcome = match error.status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "denied",
                s if s.is_server_error() => "error",
                _ => "rejected",
            };
            audit.error = Some(error.code);
            let mut body: Value = serde_json::from_slice(&error.body()).unwrap_or(Value::Null);
            if let (Some(issues), Value::Object(map)) = (issues, &mut body) {
                map.insert("issues".into(), issues);
            }
            (error.status, body)
        }
    };
    audit.status = status.as_u16();
    AdminResponse { status, body, audit: serde_json::to_string(&audit).unwrap_or_default() }
}

fn check_token<P: Ports>(ports: &P, headers: &http::HeaderMap) -> Result<()> {
    let Some(expected) = ports.secret(ADMIN_TOKEN_SECRET).filter(|t| !t.is_empty()) else {
        return Err(GatewayError::not_configured(
            ErrorCode::AdminDisabled,
            format!("the admin API is disabled: host secret {ADMIN_TOKEN_SECRET} is not set"),
        ));
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    // Hash both sides so neither the length nor a prefix of the token leaks through timing.
    let ok = keys::ct_eq(&Sha256::digest(presented.as_bytes()), &Sha256::digest(expected.as_bytes()));
    if ok && !presented.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::unauthorized(
            ErrorCode::InvalidAdminToken,
            "the admin API needs `Authorization: Bearer <admin token>`; the token is missing or wrong",
        ))
    }
}

async fn route<P: Ports>(ports: &P, memo: &AuthMemo, request: &Request<Vec<u8>>, audit: &mut Audit) -> Handled {
    let path = request.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(2).collect(); // after "/admin"
    if !path.starts_with("/admin") || path.split('/').nth(1) != Some("admin") {
        return Err(GatewayError::not_found(ErrorCode::RouteNotFound, "admin routes live under /admin/").into());
    }
    let query = query_params(request.uri().query().unwrap_or(""));
    let method = request.method();
    let body = request.body();
    let (action, allowed): (&'static str, Method) = match segments.as_slice() {
        ["config"] if method == Method::GET => ("config.get", Method::GET),
        ["config"] => ("config.apply", Method::POST),
        ["config", "versions"] => ("config.versions", Method::GET),
        ["config", "rollback"] => ("config.rollback", Method::POST),
        ["keys"] if method == Method::GET => ("keys.list", Method::GET),
        ["keys"] => ("keys.create", Method::POST),
        ["keys", _] => ("keys.get", Method::GET),
        ["keys", _, "revoke"] => ("keys.revoke", Method::POST),
        ["keys", _, "rotate"] => ("keys.rotate", Method::POST),
        ["usage"] => ("usage.get", Method::GET),
        ["cache", "purge"] => ("cache.purge", Method::POST),
        _ => {
            return Err(GatewayError::not_found(
                ErrorCode::RouteNotFound,
                format!("no admin route {method} {}", crate::gateway::util::text::truncate(path, 200)),
            )
            .into())
        }
    };
    audit.action = action;
    if *method != allowed {
        return Err(GatewayError::method_not_allowed(format!("{path} accepts {allowed}, not {method}")).into());
    }
    let key_id = segments.get(1).map(|s| s.to_string());
    if let (Some(id), true) = (&key_id, action.starts_with("keys.")) {
        audit.key_id = Some(crate::gateway::util::text::truncate(id, 40).to_string());
    }
    match action {
        "config.get" => get_config(ports).await,
        "config.apply" => {
            let dry_run = query.iter().any(|(k, v)| k == "dry_run" && matches!(v.as_str(), "" | "1" | "true"));
            apply_config(ports, body, dry_run, audit).await
        }
        "config.versions" => versions(ports).await,
        "config.rollback" => rollback(ports, body, audit).await,
        "keys.list" => list_keys(ports, query_value(&query, "tenant")).await,
        "keys.create" => create_key(ports, body, audit).await,
        "keys.get" => get_key(ports, key_id.as_deref().unwrap_or("")).await,
        "keys.revoke" => revoke_key(ports, memo, key_id.as_deref().unwrap_or(""), audit).await,
        "keys.rotate" => rotate_key(ports, memo, key_id.as_deref().unwrap_or(""), audit).await,
        "cache.purge" => purge_cache(ports, body).await,
        _ => get_usage(ports, &query, audit).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Cache

/// `POST /admin/cache/purge {"tenant"?, "endpoint"?, "shared"?: bool}`: deletes the cached
/// answers of a tenant (or the shared ones), of an endpoint, or both; `{}` purges everything.
async fn purge_cache<P: Ports>(ports: &P, body: &[u8]) -> Handled {
    use crate::gateway::features::cache::{self, Scope};
    let spec = if body.is_empty() { Value::Object(Map::new()) } else { parse_json(body, "the purge request")? };
    let field = |name: &str| spec.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let scope = match (field("tenant"), spec.get("shared").and_then(Value::as_bool).unwrap_or(false)) {
        (Some(_), true) => {
            return Err(
                GatewayError::bad_request(ErrorCode::InvalidPurge, "give `tenant` or `shared: true`, not both").into()
            )
        }
        (Some(tenant), false) => Some(Scope::Tenant(tenant)),
        (None, true) => Some(Scope::Shared),
        (None, false) => None,
    };
    let endpoint = field("endpoint");
    let keys = ports.list(&cache::purge_prefix(scope, endpoint)).await?;
    let mut purged = 0u64;
    for key in keys.iter().filter(|k| cache::purge_matches(k, scope, endpoint)) {
        ports.delete(key).await?;
        purged += 1;
    }
    Ok((StatusCode::OK, json!({"purged": purged})))
}

// ---------------------------------------------------------------------------------------------
// Config

async fn get_config<P: Ports>(ports: &P) -> Handled {
    let Some(raw) = ports.get(ACTIVE_KEY).await? else {
        return Err(GatewayError::not_found(
            ErrorCode::ConfigMissing,
            format!("no active config: KV entry \"{ACTIVE_KEY}\" is missing"),
        )
        .into());
    };
    let mut value: Value = serde_json::from_slice(&raw).map_err(|_| {
        GatewayError::internal(ErrorCode::ConfigInvalid, format!("KV entry \"{ACTIVE_KEY}\" is not valid JSON"))
    })?;
    redact_secrets(&mut value);
    Ok((StatusCode::OK, value))
}

fn parse_json(body: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(ErrorCode::InvalidJson, format!("{what} is not valid JSON: {e}")))
}

fn version_of(value: &Value) -> Option<String> {
    match value.get("version") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn valid_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn issues_failure(what: &str, issues: Vec<crate::gateway::check::ConfigIssue>) -> Failure {
    let first = issues.first().map(ToString::to_string).unwrap_or_default();
    let list: Vec<Value> = issues.iter().map(|i| json!({"path": i.path, "message": i.message})).collect();
    Failure {
        error: GatewayError::bad_request(
            ErrorCode::ConfigInvalid,
            format!("{what} has {} issue(s); first: {first}", issues.len()),
        ),
        issues: Some(Value::Array(list)),
    }
}

async fn active_version<P: Ports>(ports: &P) -> Option<String> {
    let raw = ports.get(ACTIVE_KEY).await.ok()??;
    version_of(&serde_json::from_slice(&raw).ok()?)
}

async fn apply_config<P: Ports>(ports: &P, body: &[u8], dry_run: bool, audit: &mut Audit) -> Handled {
    let mut value = parse_json(body, "the config")?;
    if !value.is_object() {
        return Err(GatewayError::bad_request(ErrorCode::ConfigInvalid, "the config must be a JSON object").into());
    }
    let version = match version_of(&value) {
        Some(v) => v,
        None => {
            let mut bytes = [0u8; 3];
            ports.random_bytes(&mut bytes);
            let v = format!("{}-{}", day_string(days_of(ports.now_ms())), hex(&bytes));
            value["version"] = json!(v);
            v
        }
    };
    audit.version = Some(crate::gateway::util::text::truncate(&version, 64).to_string());
    if !valid_version(&version) {
        return Err(GatewayError::bad_request(
            ErrorCode::InvalidVersion,
            "`version` must be 1-64 letters, digits, '_', '-' or '.' (it names the KV entry config:v:<version>)",
        )
        .into());
    }
    let config = Config::from_value(value.clone()).map_err(|issues| issues_failure("the config", issues))?;
    if dry_run {
        return Ok((StatusCode::OK, json!({"valid": true, "version": version, "endpoints": config.order})));
    }
    let name = format!("{VERSION_PREFIX}{version}");
    if let Some(existing) = ports.get(&name).await? {
        if serde_json::from_slice::<Value>(&existing).ok().as_ref() != Some(&value) {
            return Err(GatewayError::conflict(
        ErrorCode::VersionExists,
        format!("version \"{version}\" was already applied with different content: give this config a new `version`"),
    )
            .into());
        }
    }
    let previous = active_version(ports).await;
    audit.previous = previous.clone();
    let bytes = serde_json::to_vec(&value)
        .map_err(|_| GatewayError::internal(ErrorCode::ConfigInvalid, "the config could not be stored"))?;
    ports.put(&name, &bytes, None).await?;
    ports.put(ACTIVE_KEY, &bytes, None).await?;
    Ok((StatusCode::OK, json!({"version": version, "previous": previous, "endpoints": config.order})))
}

async fn stored_versions<P: Ports>(ports: &P) -> Result<Vec<String>> {
    let mut versions: Vec<String> = ports
        .list(VERSION_PREFIX)
        .await?
        .iter()
        .filter_map(|k| k.strip_prefix(VERSION_PREFIX))
        .map(str::to_string)
        .collect();
    versions.sort();
    Ok(versions)
}

async fn versions<P: Ports>(ports: &P) -> Handled {
    let versions = stored_versions(ports).await?;
    Ok((StatusCode::OK, json!({"active": active_version(ports).await, "versions": versions})))
}

async fn rollback<P: Ports>(ports: &P, body: &[u8], audit: &mut Audit) -> Handled {
    let request = parse_json(body, "the rollback request")?;
    let version = match request.get("version") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(GatewayError::bad_request(
                ErrorCode::MissingVersion,
                "send {\"version\": \"<version to activate>\"}",
            )
            .into())
        }
    };
    audit.version = Some(crate::gateway::util::text::truncate(&version, 64).to_string());
    let stored = if valid_version(&version) { ports.get(&format!("{VERSION_PREFIX}{version}")).await? } else { None };
    let Some(raw) = stored else {
        let known = stored_versions(ports).await?;
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        let hint = match did_you_mean(&version, &names) {
            Some(s) => format!(" (did you mean \"{s}\"?)"),
            None if names.is_empty() => " (no version has been applied through the admin API)".to_string(),
            None => format!(" (known: {})", names.iter().rev().take(10).copied().collect::<Vec<_>>().join(", ")),
        };
        return Err(GatewayError::not_found(
            ErrorCode::VersionNotFound,
            format!("no stored config version \"{}\"{hint}", crate::gateway::util::text::truncate(&version, 64)),
        )
        .into());
    };
    Config::from_json(&raw).map_err(|issues| issues_failure(&format!("stored version \"{version}\""), issues))?;
    let previous = active_version(ports).await;
    audit.previous = previous.clone();
    ports.put(ACTIVE_KEY, &raw, None).await?;
    Ok((StatusCode::OK, json!({"version": version, "previous": previous})))
}

/// Replaces literal values of secret-looking fields (`*key*`, `*secret*`, `*token*`,
/// `*password*`, `*credential*`) with `[redacted]`; `$NAME` references are kept.
pub fn redact_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                let lower = name.to_ascii_lowercase();
                let secretish = ["key", "secret", "token", "password", "credential"].iter().any(|s| lower.contains(s));
                match v {
                    Value::String(s) if secretish && !s.starts_with('$') && !s.is_empty() => *s = "[redacted]".into(),
                    _ => redact_secrets(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

const KEY_FIELDS: &[&str] = &[
    "tenant",
    "name",
    "endpoints",
    "rpm",
    "tpm",
    "budget_usd",
    "budget_period",
    "region",
    "expires_at",
    "expires_in",
    "exact",
];

/// Validates a key-creation request into a record (without id, hash, created).
fn key_spec(body: &[u8], now_ms: u64) -> std::result::Result<KeyRecord, Failure> {
    let value = parse_json(body, "the key request")?;
    let Value::Object(map) = value else {
        return Err(
            GatewayError::bad_request(ErrorCode::InvalidKeyRequest, "the key request must be a JSON object").into()
        );
    };
    let mut issues = crate::gateway::check::Issues::default();
    for field in map.keys() {
        if !KEY_FIELDS.contains(&field.as_str()) {
            issues.unknown(field.as_str(), "key field", field, KEY_FIELDS);
        }
    }
    let u64_field = |name: &str, issues: &mut crate::gateway::check::Issues| match map.get(name) {
        None | Some(Value::Null) => None,
        Some(v) => v.as_u64().or_else(|| {
            issues.push(name, "must be a whole number >= 0");
            None
        }),
    };
    let tenant = match map.get("tenant").and_then(Value::as_str) {
        Some(t) if valid_tenant(t) => t.to_string(),
        Some(_) => {
            issues.push("tenant", "letters, digits, '_', '-', '.'; 1-64 chars");
            String::new()
        }
        None => {
            issues.push("tenant", "is required (the tenant this key belongs to)");
            String::new()
        }
    };
    let name = match map.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.len() <= 128 && !s.chars().any(char::is_control) => s.clone(),
        Some(_) => {
            issues.push("name", "must be a string of at most 128 printable characters");
            String::new()
        }
    };
    let endpoints = match map.get("endpoints") {
        None | Some(Value::Null) => vec!["*".to_string()],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if valid_pattern(s) => out.push(s.to_string()),
                    _ => issues.push(
                        format!("endpoints[{i}]"),
                        "must be an endpoint name, \"*\" or \"prefix*\" (letters, digits, '_', '-', '.')",
                    ),
                }
            }
            out
        }
        Some(_) => {
            issues.push("endpoints", "must be a non-empty list of endpoint names (\"*\" allows all)");
            Vec::new()
        }
    };
    let rpm = u64_field("rpm", &mut issues);
    let tpm = u64_field("tpm", &mut issues);
    let budget_usd = match map.get("budget_usd") {
        None | Some(Value::Null) => None,
        Some(v) => v.as_f64().filter(|n| n.is_finite() && *n >= 0.0).or_else(|| {
            issues.push("budget_usd", "must be a number >= 0 (USD)");
            None
        }),
    };
    let budget_period = match map.get("budget_period") {
        None | Some(Value::Null) => BudgetPeriod::Month,
        Some(v) => v.as_str().and_then(BudgetPeriod::parse).unwrap_or_else(|| {
            issues.unknown("budget_period", "budget period", v.as_str().unwrap_or("(not a string)"), &["day", "month"]);
            BudgetPeriod::Month
        }),
    };
    let region = match map.get("region") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if valid_tenant(s) => Some(s.clone()),
        Some(_) => {
            issues.push("region", "must be a region name from the config");
            None
        }
    };
    let expires_at = match (u64_field("expires_at", &mut issues), u64_field("expires_in", &mut issues)) {
        (Some(_), Some(_)) => {
            issues.push("expires_in", "give either expires_at (unix seconds) or expires_in (seconds), not both");
            None
        }
        (Some(at), None) => Some(at),
        (None, Some(secs)) => Some(now_ms / 1000 + secs),
        (None, None) => None,
    };
    let exact = match map.get("exact") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            issues.push("exact", "must be true or false");
            false
        }
    };
    if !issues.0.is_empty() {
        return Err(issues_failure("the key request", issues.0));
    }
    Ok(KeyRecord {
        id: String::new(),
        tenant,
        name,
        endpoints,
        rpm,
        tpm,
        budget_usd,
        budget_period,
        region,
        created: now_ms / 1000,
        expires_at,
        disabled: false,
        exact,
        hash: String::new(),
    })
}

fn valid_pattern(s: &str) -> bool {
    let name = s.strip_suffix('*').unwrap_or(s);
    s == "*"
        || (!name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
}

/// Names in the allow-list that match nothing in the active config (typos), with suggestions.
async fn endpoint_warnings<P: Ports>(ports: &P, record: &KeyRecord) -> Vec<String> {
    let Ok(Some(raw)) = ports.get(ACTIVE_KEY).await else { return Vec::new() };
    let Ok(config) = Config::from_json(&raw) else { return Vec::new() };
    let names: Vec<&str> = config.order.iter().map(String::as_str).collect();
    let probe = KeyRecord { endpoints: Vec::new(), ..record.clone() };
    record
        .endpoints
        .iter()
        .filter(|pattern| {
            let one = KeyRecord { endpoints: vec![(*pattern).clone()], ..probe.clone() };
            !names.iter().any(|n| one.allows(n))
        })
        .map(|pattern| match did_you_mean(pattern, &names) {
            Some(s) => format!("endpoint \"{pattern}\" is not in the active config (did you mean \"{s}\"?)"),
            None => format!("endpoint \"{pattern}\" is not in the active config"),
        })
        .collect()
}

async fn create_key<P: Ports>(ports: &P, body: &[u8], audit: &mut Audit) -> Handled {
    let mut record = key_spec(body, ports.now_ms())?;
    audit.tenant = Some(record.tenant.clone());
    let key = keys::generate(ports);
    record.id = keys::new_id(ports);
    record.hash = keys::hash_key(&key);
    audit.key_id = Some(record.id.clone());
    keys::store(ports, &record).await?;
    let warnings = endpoint_warnings(ports, &record).await;
    let mut body = record.view(ports.now_ms());
    body["key"] = json!(key);
    body["note"] = json!("store this key now: it is shown only once");
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Ok((StatusCode::CREATED, body))
}

async fn list_keys<P: Ports>(ports: &P, tenant: Option<&str>) -> Handled {
    let now = ports.now_ms();
    let list: Vec<Value> =
        keys::list(ports).await?.iter().filter(|r| tenant.is_none_or(|t| r.tenant == t)).map(|r| r.view(now)).collect();
    Ok((StatusCode::OK, json!({"keys": list})))
}

async fn find_key<P: Ports>(ports: &P, id: &str) -> Result<KeyRecord> {
    keys::by_id(ports, id).await?.ok_or_else(|| {
        GatewayError::not_found(
            ErrorCode::KeyNotFound,
            format!("no API key with id \"{}\"", crate::gateway::util::text::truncate(id, 40)),
        )
    })
}

async fn get_key<P: Ports>(ports: &P, id: &str) -> Handled {
    let record = find_key(ports, id).await?;
    Ok((StatusCode::OK, record.view(ports.now_ms())))
}

async fn revoke_key<P: Ports>(ports: &P, memo: &AuthMemo, id: &str, audit: &mut Audit) -> Handled {
    let mut record = find_key(ports, id).await?;
    audit.tenant = Some(record.tenant.clone());
    record.disabled = true;
    keys::store(ports, &record).await?;
    memo.forget(&record.hash);
    Ok((StatusCode::OK, record.view(ports.now_ms())))
}

async fn rotate_key<P: Ports>(ports: &P, memo: &AuthMemo, id: &str, audit: &mut Audit) -> Handled {
    let mut record = find_key(ports, id).await?;
    audit.tenant = Some(record.tenant.clone());
    if record.disabled {
        return Err(GatewayError::conflict(
            ErrorCode::KeyRevoked,
            format!("API key \"{}\" is revoked; create a new key instead", record.id),
        )
        .into());
    }
    let old_hash = std::mem::take(&mut record.hash);
    let key = keys::generate(ports);
    record.hash = keys::hash_key(&key);
    // New record and index first, then the old record goes: the id never points nowhere.
    keys::store(ports, &record).await?;
    ports.delete(&keys::record_key(&old_hash)).await?;
    memo.forget(&old_hash);
    let mut body = record.view(ports.now_ms());
    body["key"] = json!(key);
    body["note"] = json!("store this key now: it is shown only once; the previous key no longer works");
    Ok((StatusCode::OK, body))
}

// ---------------------------------------------------------------------------------------------
// Usage

async fn get_usage<P: Ports>(ports: &P, query: &[(String, String)], audit: &mut Audit) -> Handled {
    let today = days_of(ports.now_ms());
    let day = |name: &str| -> Result<i64> {
        match query_value(query, name) {
            None => Ok(today),
            Some(s) => parse_day(s).ok_or_else(|| {
                GatewayError::bad_request(ErrorCode::InvalidDate, format!("`{name}` must be a date YYYY-MM-DD (UTC)"))
            }),
        }
    };
    let (from, to) = (day("from")?, day("to")?);
    let subject = match (query_value(query, "key"), query_value(query, "tenant")) {
        (Some(id), None) if keys::valid_id(id) => {
            audit.key_id = Some(id.to_string());
            Subject::Key(id)
        }
        (None, Some(t)) if valid_tenant(t) => {
            audit.tenant = Some(t.to_string());
            Subject::Tenant(t)
        }
        (Some(_), None) => {
            return Err(GatewayError::bad_request(ErrorCode::InvalidKeyId, "`key` must be a key id (k_...)").into())
        }
        (None, Some(_)) => {
            return Err(
                GatewayError::bad_request(ErrorCode::InvalidTenant, "`tenant` is not a valid tenant name").into()
            )
        }
        _ => {
            return Err(GatewayError::bad_request(
                ErrorCode::MissingSubject,
                "give exactly one of `key=<key id>` or `tenant=<name>`",
            )
            .into())
        }
    };
    Ok((StatusCode::OK, usage::query(ports, subject, from, to).await?))
}

// ---------------------------------------------------------------------------------------------
// Query strings

fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::auth::authenticate;
    use crate::gateway::features::limits::{admit, Limiter, LimitsConfig};
    use crate::gateway::features::usage::{Accounting, Outcome, Price, UsageBook};
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::UpstreamError;
    use crate::gateway::types::Usage;
    use std::rc::Rc;

    const TOKEN: &str = "admin-token-e2e-0123456789";

    fn host() -> MemoryHost {
        MemoryHost::new(|_| Err(UpstreamError::Timeout)).with_secret(ADMIN_TOKEN_SECRET, TOKEN)
    }

    fn config(version: &str) -> Value {
        json!({"version": version, "endpoints": [
            {"name": "chat", "endpoint_type": "llm/v1/chat",
             "model": {"provider": "openai", "name": "gpt-4o-mini", "config": {"openai_api_key": "$OPENAI_API_KEY"}}},
            {"name": "embeddings", "endpoint_type": "llm/v1/embeddings",
             "model": {"provider": "openai", "name": "text-embedding-3-small", "config": {"openai_api_key": "$OPENAI_API_KEY"}}}
        ]})
    }

    fn call(
        host: &MemoryHost,
        memo: &AuthMemo,
        method: Method,
        uri: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> AdminResponse {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
        block_on(handle(host, memo, &builder.body(body).unwrap()))
    }

    fn admin(host: &MemoryHost, memo: &AuthMemo, method: Method, uri: &str, body: Option<Value>) -> AdminResponse {
        call(host, memo, method, uri, body, Some(TOKEN))
    }

    fn audit(r: &AdminResponse) -> Value {
        serde_json::from_str(&r.audit).unwrap()
    }

    #[test]
    fn every_route_needs_the_admin_token() {
        let host = host();
        let memo = AuthMemo::default();
        for (token, status) in [(None, 401), (Some("wrong"), 401), (Some(""), 401), (Some(TOKEN), 200)] {
            let r = call(&host, &memo, Method::GET, "/admin/keys", None, token);
            assert_eq!(r.status.as_u16(), status, "{token:?}");
            let a = audit(&r);
            assert_eq!(a["audit"], "admin");
            assert_eq!(a["outcome"], if status == 200 { "ok" } else { "denied" });
            assert!(!r.audit.contains(TOKEN) && !r.body.to_string().contains(TOKEN));
        }
        // Unknown admin paths are not revealed to callers without the token.
        assert_eq!(call(&host, &memo, Method::GET, "/admin/nothing", None, None).status, StatusCode::UNAUTHORIZED);
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/nothing", None).status, StatusCode::NOT_FOUND);
        assert_eq!(admin(&host, &memo, Method::DELETE, "/admin/keys", None).status, StatusCode::METHOD_NOT_ALLOWED);

        let off = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let r = call(&off, &memo, Method::GET, "/admin/keys", None, Some(TOKEN));
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("GATEWAY_ADMIN_TOKEN"));
    }

    #[test]
    fn apply_get_versions_and_rollback() {
        let host = host();
        let memo = AuthMemo::default();
        let mut bad = config("v2");
        bad["endpoints"][0]["endpoint_type"] = json!("llm/v1/chatt");
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(bad));
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.body["error"]["code"], "config_invalid");
        assert_eq!(r.body["issues"][0]["path"], "endpoints[0].endpoint_type");
        assert!(r.body["issues"][0]["message"].as_str().unwrap().contains("did you mean \"llm/v1/chat\""));
        assert!(host.kv.borrow().is_empty(), "nothing stored");

        let r = admin(&host, &memo, Method::POST, "/admin/config?dry_run=true", Some(config("v1")));
        assert_eq!((r.status, &r.body["valid"]), (StatusCode::OK, &json!(true)));
        assert!(host.kv.borrow().is_empty(), "dry run stores nothing");

        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(config("v1")));
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["endpoints"], json!(["chat", "embeddings"]));
        assert_eq!(audit(&r)["action"], "config.apply");
        assert_eq!(audit(&r)["version"], "v1");
        let mut v2 = config("v2");
        v2["endpoints"].as_array_mut().unwrap().pop();
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(v2.clone()));
        assert_eq!((r.status, &r.body["previous"]), (StatusCode::OK, &json!("v1")));
        assert!(host.kv.borrow().contains_key("config:v:v1") && host.kv.borrow().contains_key("config:v:v2"));

        let r = admin(&host, &memo, Method::GET, "/admin/config", None);
        assert_eq!(r.body, v2);
        assert_eq!(
            r.body["endpoints"][0]["model"]["config"]["openai_api_key"], "$OPENAI_API_KEY",
            "references, not values"
        );

        // Same version, different content: refused.
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(config("v2")));
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("version_exists")));

        let r = admin(&host, &memo, Method::GET, "/admin/config/versions", None);
        assert_eq!(r.body, json!({"active": "v2", "versions": ["v1", "v2"]}));

        let r = admin(&host, &memo, Method::POST, "/admin/config/rollback", Some(json!({"version": "v0"})));
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("did you mean \"v1\""), "{}", r.body);
        let r = admin(&host, &memo, Method::POST, "/admin/config/rollback", Some(json!({"version": "v1"})));
        assert_eq!((r.status, &r.body["previous"]), (StatusCode::OK, &json!("v2")));
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/config", None).body, config("v1"));
        assert_eq!(audit(&r)["action"], "config.rollback");

        // Re-applying a known version with the same content switches back to it.
        assert_eq!(admin(&host, &memo, Method::POST, "/admin/config", Some(v2.clone())).status, StatusCode::OK);
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/config", None).body, v2);
    }

    #[test]
    fn config_without_version_gets_one_and_literal_secrets_are_redacted() {
        let host = host();
        let memo = AuthMemo::default();
        let mut c = config("x");
        c.as_object_mut().unwrap().remove("version");
        c["endpoints"][0]["model"]["config"]["openai_api_key"] = json!("sk-live-literal");
        let r = admin(&host, &memo, Method::POST, "/admin/config", Some(c));
        assert_eq!(r.status, StatusCode::OK);
        let version = r.body["version"].as_str().unwrap().to_string();
        assert!(valid_version(&version), "{version}");
        let got = admin(&host, &memo, Method::GET, "/admin/config", None).body;
        assert_eq!(got["version"], version.as_str());
        assert_eq!(got["endpoints"][0]["model"]["config"]["openai_api_key"], "[redacted]");
        assert_eq!(got["endpoints"][1]["model"]["config"]["openai_api_key"], "$OPENAI_API_KEY");
        assert!(!r.audit.contains("sk-live-literal"));
        let bad = admin(&host, &memo, Method::POST, "/admin/config", Some(json!({"version": "../x", "endpoints": []})));
        assert_eq!(bad.body["error"]["code"], "invalid_version");
        let bad = admin(&host, &memo, Method::POST, "/admin/config", Some(json!([1])));
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn keys_create_list_revoke_rotate_and_plaintext_never_kept() {
        let host = host();
        let memo = AuthMemo::default();
        admin(&host, &memo, Method::POST, "/admin/config", Some(config("v1")));
        let r = admin(
            &host,
            &memo,
            Method::POST,
            "/admin/keys",
            Some(
                json!({"tenant": "acme", "name": "ci", "endpoints": ["chat", "chta"], "rpm": 5, "budget_usd": 2.5, "budget_period": "day"}),
            ),
        );
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let key = r.body["key"].as_str().unwrap().to_string();
        let id = r.body["id"].as_str().unwrap().to_string();
        assert!(keys::looks_like_key(&key));
        assert_eq!(r.body["warnings"][0], "endpoint \"chta\" is not in the active config (did you mean \"chat\"?)");
        assert!(r.body.get("hash").is_none());
        assert!(!r.audit.contains(&key) && r.audit.contains(&id));

        let everything = format!("{:?}", host.kv.borrow());
        assert!(!everything.contains(&key), "the plaintext is never stored");

        let list = admin(&host, &memo, Method::GET, "/admin/keys?tenant=acme", None);
        assert_eq!(list.body["keys"].as_array().unwrap().len(), 1);
        assert_eq!(list.body["keys"][0]["id"], id.as_str());
        assert_eq!(list.body["keys"][0]["state"], "active");
        assert!(!list.body.to_string().contains(&key) && list.body["keys"][0].get("hash").is_none());
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/keys?tenant=other", None).body["keys"], json!([]));
        assert_eq!(admin(&host, &memo, Method::GET, &format!("/admin/keys/{id}"), None).body["rpm"], 5);

        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
        assert!(block_on(authenticate(&host, &memo, &headers, "chat", false)).is_ok());

        // Rotate: the old key stops at once in this isolate, the new one works.
        let r = admin(&host, &memo, Method::POST, &format!("/admin/keys/{id}/rotate"), None);
        assert_eq!(r.status, StatusCode::OK);
        let new_key = r.body["key"].as_str().unwrap().to_string();
        assert_ne!(new_key, key);
        assert_eq!(block_on(authenticate(&host, &memo, &headers, "chat", false)).unwrap_err().code, "invalid_api_key");
        let mut new_headers = http::HeaderMap::new();
        new_headers.insert("x-api-key", new_key.parse().unwrap());
        assert_eq!(block_on(authenticate(&host, &memo, &new_headers, "chat", false)).unwrap().unwrap().id, id);

        // Revoke: refused at once in this isolate (the memo entry is dropped).
        let r = admin(&host, &memo, Method::POST, &format!("/admin/keys/{id}/revoke"), None);
        assert_eq!((r.status, &r.body["state"]), (StatusCode::OK, &json!("revoked")));
        assert_eq!(audit(&r)["key_id"], id.as_str());
        assert_eq!(
            block_on(authenticate(&host, &memo, &new_headers, "chat", false)).unwrap_err().code,
            "invalid_api_key"
        );
        assert_eq!(
            admin(&host, &memo, Method::POST, &format!("/admin/keys/{id}/rotate"), None).status,
            StatusCode::CONFLICT
        );
        assert_eq!(admin(&host, &memo, Method::POST, "/admin/keys/k_ffff/revoke", None).status, StatusCode::NOT_FOUND);
        assert_eq!(admin(&host, &memo, Method::POST, "/admin/keys/..%2F/revoke", None).status, StatusCode::NOT_FOUND);
        let everything = format!("{:?}", host.kv.borrow());
        assert!(!everything.contains(&key) && !everything.contains(&new_key));
    }

    #[test]
    fn key_requests_are_validated() {
        let host = host();
        let memo = AuthMemo::default();
        let r = admin(
            &host,
            &memo,
            Method::POST,
            "/admin/keys",
            Some(
                json!({"tenant": "a b", "rmp": 5, "endpoints": [], "budget_period": "week", "expires_at": 1, "expires_in": 2}),
            ),
        );
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let text = r.body["issues"].to_string();
        for expected in [
            "did you mean \\\"rpm\\\"",
            "\"tenant\"",
            "\"endpoints\"",
            "unknown budget period \\\"week\\\"",
            "not both",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"name": "x"})));
        assert!(r.body["issues"].to_string().contains("is required"));
        let r = admin(&host, &memo, Method::POST, "/admin/keys", Some(json!({"tenant": "t", "expires_in": 60})));
        assert_eq!(r.body["expires_at"], host.now_ms.get() / 1000 + 60);
        assert_eq!(r.body["endpoints"], json!(["*"]));
    }

    /// The pipeline's order, with the admin API around it: create a key, authenticate, admit,
    /// account for several answers; the usage API returns exactly their sum.
    #[test]
    fn usage_api_returns_the_sum_of_accounted_requests() {
        let host = host();
        let memo = AuthMemo::default();
        let limiter = Rc::new(Limiter::new());
        let book = Rc::new(UsageBook::new());
        let r = admin(
            &host,
            &memo,
            Method::POST,
            "/admin/keys",
            Some(json!({"tenant": "acme", "rpm": 100, "budget_usd": 10})),
        );
        let (key, id) = (r.body["key"].as_str().unwrap().to_string(), r.body["id"].as_str().unwrap().to_string());
        let mut headers = http::HeaderMap::new();
        headers.insert("api-key", key.parse().unwrap());
        let price = Price { input_per_1m: 0.15, output_per_1m: 0.6 };
        let usages = [(3, 5), (10, 0), (7, 9)];
        let mut lines = Vec::new();
        for (prompt, completion) in usages {
            let record = block_on(authenticate(&host, &memo, &headers, "chat", false)).unwrap().unwrap();
            let admission =
                block_on(admit(&host, &limiter, &LimitsConfig::default(), Some(&record), "chat", None)).unwrap();
            let accounting = Accounting::new(&book, Some(&record), Some(price), host.now_ms.get(), Some(admission));
            let outcome = Outcome {
                usage: Some(Usage { prompt_tokens: prompt, completion_tokens: completion }),
                status: 200,
                latency_ms: 20,
                cache_hit: false,
            };
            let log = block_on(accounting.complete(&host, outcome));
            assert_eq!(log.accounting_error, None);
            assert_eq!(log.limits, "kv");
            lines.push(serde_json::to_string(&log).unwrap());
        }
        assert!(lines.iter().all(|l| l.contains(&id) && !l.contains(&key)), "{lines:?}");
        let r = admin(&host, &memo, Method::GET, &format!("/admin/usage?key={id}"), None);
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["total"]["requests"], 3);
        assert_eq!(r.body["total"]["prompt_tokens"], 20);
        assert_eq!(r.body["total"]["completion_tokens"], 14);
        let expected_nusd: u64 =
            usages.iter().map(|(p, c)| price.cost_nusd(Usage { prompt_tokens: *p, completion_tokens: *c })).sum();
        assert_eq!(r.body["total"]["cost_usd"], json!(expected_nusd as f64 / 1e9));
        let t = admin(&host, &memo, Method::GET, "/admin/usage?tenant=acme&from=2000-01-01&to=2000-01-02", None);
        assert_eq!(t.body["total"]["requests"], 0);
        let today = day_string(days_of(host.now_ms.get()));
        let t = admin(&host, &memo, Method::GET, &format!("/admin/usage?tenant=acme&from={today}&to={today}"), None);
        assert_eq!(t.body["total"]["prompt_tokens"], 20);
        assert_eq!(admin(&host, &memo, Method::GET, "/admin/usage", None).body["error"]["code"], "missing_subject");
        assert_eq!(
            admin(&host, &memo, Method::GET, "/admin/usage?key=k_01&from=2024-02-30", None).body["error"]["code"],
            "invalid_date"
        );
    }

    #[test]
    fn never_panics_on_odd_requests() {
        let host = host();
        let memo = AuthMemo::default();
        for (method, uri, body) in [
            (Method::POST, "/admin/config", &b"\xff\xfe"[..]),
            (Method::POST, "/admin/config/rollback", b"{}"),
            (Method::POST, "/admin/config/rollback", b"{\"version\": {}}"),
            (Method::POST, "/admin/keys", b"null"),
            (Method::GET, "/admin/usage?key=%zz&tenant=%", b""),
            (Method::GET, "/admin/keys/%FF%FE", b""),
            (Method::GET, "/admin//", b""),
            (Method::GET, "/admin", b""),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(body.to_vec())
                .unwrap();
            let r = block_on(handle(&host, &memo, &request));
            assert!(r.status.is_client_error(), "{uri}: {}", r.status);
            assert!(r.body["error"]["message"].is_string());
        }
    }
}
