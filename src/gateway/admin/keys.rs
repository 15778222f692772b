//! `/admin/keys`: create (the only time a key is shown), list, read, revoke, rotate.

use http::StatusCode;
use serde_json::{json, Value};

use crate::gateway::admin::answer::{parse_json, Audit, Failure, Handled};
use crate::gateway::admin::config::issues_failure;
use crate::gateway::auth::AuthMemo;
use crate::gateway::check::did_you_mean;
use crate::gateway::config::{Config, ACTIVE_KEY};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::keys::{self, BudgetPeriod, KeyRecord};
use crate::gateway::features::limits::{valid_name, valid_tenant, TENANT_RULE};
use crate::gateway::mcp;
use crate::gateway::ports::Ports;

// ---------------------------------------------------------------------------------------------
// Keys

pub(super) const KEY_FIELDS: &[&str] = &[
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
    "mcp",
];

/// Validates a key-creation request into a record (without id, hash, created).
pub(super) fn key_spec(body: &[u8], now_ms: u64) -> std::result::Result<KeyRecord, Failure> {
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
            issues.push("tenant", TENANT_RULE);
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
        Some(Value::String(s)) if valid_name(s) => Some(s.clone()),
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
        (None, Some(secs)) => match (now_ms / 1000).checked_add(secs) {
            Some(at) => Some(at),
            None => {
                issues.push("expires_in", "is too large (seconds from now)");
                None
            }
        },
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
    let mcp = map.get("mcp").filter(|v| !v.is_null()).and_then(|v| mcp::config::check_grant("mcp", v, &mut issues));
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
        mcp,
        hash: String::new(),
    })
}

pub(super) fn valid_pattern(s: &str) -> bool {
    let name = s.strip_suffix('*').unwrap_or(s);
    s == "*"
        || (!name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
}

/// Names in the allow-list that match nothing in the active config (typos), with suggestions;
/// for a key under a USD budget, the endpoints it may call that have no price (refused).
pub(super) async fn endpoint_warnings<P: Ports>(ports: &P, record: &KeyRecord) -> Vec<String> {
    let Ok(Some(raw)) = ports.get(ACTIVE_KEY).await else { return Vec::new() };
    let Ok(config) = Config::from_json(&raw) else { return Vec::new() };
    let names: Vec<&str> = config.order.iter().map(String::as_str).collect();
    let probe = KeyRecord { endpoints: Vec::new(), ..record.clone() };
    let mut warnings = Vec::new();
    if record.budget_usd.is_some() || config.limits.tenants.contains_key(&record.tenant) {
        let unpriced = config.unpriced(|name| record.allows(name));
        if !unpriced.is_empty() {
            let list: Vec<String> = unpriced.iter().map(|(e, m)| format!("\"{e}\" ({m})")).collect();
            warnings.push(format!(
                "this key is under a USD budget, and these endpoints it may call have no price, so its \
                 requests there are refused: {}",
                list.join(", ")
            ));
        }
    }
    warnings.extend(
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
            }),
    );
    warnings
}

/// A residency pin must name a region of the active config (a typo would pin the key to no
/// origin at all, or look like a pin while the config has no such region).
pub(super) async fn check_region<P: Ports>(ports: &P, region: &str) -> std::result::Result<(), Failure> {
    let config = match ports.get(ACTIVE_KEY).await? {
        Some(raw) => Config::from_json(&raw).ok(),
        None => None,
    };
    let names: Vec<&str> = config.iter().flat_map(|c| c.regions.iter().map(|r| r.name.as_str())).collect();
    if names.contains(&region) {
        return Ok(());
    }
    let mut issues = crate::gateway::check::Issues::default();
    if names.is_empty() {
        issues.push("region", "the active config defines no regions: a residency pin needs one");
    } else {
        issues.unknown("region", "region", region, &names);
    }
    Err(issues_failure("the key request", issues.0))
}

pub(super) async fn create_key<P: Ports>(ports: &P, body: &[u8], audit: &mut Audit) -> Handled {
    let mut record = key_spec(body, ports.now_ms())?;
    if let Some(region) = &record.region {
        check_region(ports, region).await?;
    }
    audit.tenant = Some(record.tenant.clone());
    let key;
    (record.id, key) = keys::new_key(ports);
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

/// Keys per page of `GET /admin/keys` unless `limit` says otherwise (at most
/// `keys::MAX_PAGE`): each costs a KV read (two for an older key), and Cloudflare caps KV
/// operations per call.
pub(super) const DEFAULT_PAGE: usize = 100;

/// `GET /admin/keys?tenant=&limit=&cursor=`: one page of keys in id order and the cursor of the
/// next (`next_cursor`, absent on the last page). With `tenant`, a page holds that tenant's
/// keys among the page's ids (it may be short, even empty: follow `next_cursor`).
pub(super) async fn list_keys<P: Ports>(
    ports: &P,
    tenant: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Handled {
    let limit = match limit {
        None => DEFAULT_PAGE,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=keys::MAX_PAGE).contains(n)).ok_or_else(|| {
            GatewayError::bad_request(
                ErrorCode::InvalidKeyRequest,
                format!("`limit` must be a number from 1 to {}", keys::MAX_PAGE),
            )
        })?,
    };
    if cursor.is_some_and(|c| !keys::valid_id(c)) {
        return Err(GatewayError::bad_request(ErrorCode::InvalidKeyId, "`cursor` must be a key id").into());
    }
    let now = ports.now_ms();
    let (page, next) = keys::list_page(ports, cursor, limit).await?;
    let list: Vec<Value> = page.iter().filter(|r| tenant.is_none_or(|t| r.tenant == t)).map(|r| r.view(now)).collect();
    let mut body = json!({"keys": list});
    if let Some(next) = next {
        body["next_cursor"] = json!(next);
    }
    Ok((StatusCode::OK, body))
}

pub(super) async fn find_key<P: Ports>(ports: &P, id: &str) -> Result<KeyRecord> {
    keys::by_id(ports, id).await?.ok_or_else(|| {
        GatewayError::not_found(
            ErrorCode::KeyNotFound,
            format!("no API key with id \"{}\"", crate::gateway::util::text::truncate(id, 40)),
        )
    })
}

pub(super) async fn get_key<P: Ports>(ports: &P, id: &str) -> Handled {
    let record = find_key(ports, id).await?;
    Ok((StatusCode::OK, record.view(ports.now_ms())))
}

pub(super) async fn revoke_key<P: Ports>(ports: &P, memo: &AuthMemo, id: &str, audit: &mut Audit) -> Handled {
    let mut record = find_key(ports, id).await?;
    audit.tenant = Some(record.tenant.clone());
    record.disabled = true;
    keys::store(ports, &record).await?;
    memo.forget(&record.hash);
    Ok((StatusCode::OK, record.view(ports.now_ms())))
}

pub(super) async fn rotate_key<P: Ports>(ports: &P, memo: &AuthMemo, id: &str, audit: &mut Audit) -> Handled {
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
    let key = keys::generate(ports, &record.id);
    record.hash = keys::hash_key(&key);
    // One write retires the old key (the id's entry names the new one); then an older key's
    // `key:` record goes too, which no longer counts either way.
    keys::store(ports, &record).await?;
    ports.delete(&keys::hash_entry(&old_hash)).await?;
    memo.forget(&old_hash);
    let mut body = record.view(ports.now_ms());
    body["key"] = json!(key);
    body["note"] = json!("store this key now: it is shown only once; the previous key no longer works");
    Ok((StatusCode::OK, body))
}
