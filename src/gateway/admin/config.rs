//! `/admin/config`: read, apply (with dry run), list versions, roll back.

use http::StatusCode;
use serde_json::{json, Value};

use crate::gateway::admin::answer::{parse_json, Audit, Failure, Handled};
use crate::gateway::check::did_you_mean;
use crate::gateway::config::{Config, ACTIVE_KEY};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Ports;
use crate::gateway::util::order;
use crate::gateway::util::text::hex;
use crate::gateway::util::time::{day_string, days_of};
use crate::gateway::wire::json::value_from_slice;

/// `config:v:<version>`: every applied snapshot, for rollback.
pub const VERSION_PREFIX: &str = "config:v:";

// ---------------------------------------------------------------------------------------------
// Config

pub(super) async fn get_config<P: Ports>(ports: &P) -> Handled {
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

pub(super) fn version_of(value: &Value) -> Option<String> {
    match value.get("version") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn valid_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(super) fn issues_failure(what: &str, issues: Vec<crate::gateway::check::ConfigIssue>) -> Failure {
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

pub(super) async fn active_version<P: Ports>(ports: &P) -> Option<String> {
    let raw = ports.get(ACTIVE_KEY).await.ok()??;
    version_of(&serde_json::from_slice(&raw).ok()?)
}

pub(super) async fn apply_config<P: Ports>(ports: &P, body: &[u8], dry_run: bool, audit: &mut Audit) -> Handled {
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
    let config = Config::for_storage(value.clone()).map_err(|issues| issues_failure("the config", issues))?;
    if dry_run {
        return Ok((StatusCode::OK, json!({"valid": true, "version": version, "endpoints": config.order})));
    }
    let name = format!("{VERSION_PREFIX}{version}");
    if let Some(existing) = ports.get(&name).await? {
        if value_from_slice(&existing).ok().as_ref() != Some(&value) {
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
    let mut answer = json!({"version": version, "previous": previous, "endpoints": config.order});
    let warnings = config.warnings();
    if !warnings.is_empty() {
        answer["warnings"] = json!(warnings);
    }
    Ok((StatusCode::OK, answer))
}

pub(super) async fn stored_versions<P: Ports>(ports: &P) -> Result<Vec<String>> {
    let mut versions: Vec<String> = ports
        .list(VERSION_PREFIX)
        .await?
        .iter()
        .filter_map(|k| k.strip_prefix(VERSION_PREFIX))
        .map(str::to_string)
        .collect();
    order::sort(&mut versions);
    Ok(versions)
}

pub(super) async fn versions<P: Ports>(ports: &P) -> Handled {
    let versions = stored_versions(ports).await?;
    Ok((StatusCode::OK, json!({"active": active_version(ports).await, "versions": versions})))
}

pub(super) async fn rollback<P: Ports>(ports: &P, body: &[u8], audit: &mut Audit) -> Handled {
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
/// `*password*`, `*credential*`, `*bearer*`, and an `auth` object's `value`, as MCP servers'
/// `auth` has them) with `[redacted]`; `$NAME` references are kept.
pub fn redact_secrets(value: &mut Value) {
    let redact = |s: &mut String| {
        if !s.starts_with('$') && !s.is_empty() {
            *s = "[redacted]".into();
        }
    };
    match value {
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                match v {
                    Value::String(s) if crate::gateway::config::is_secret_name(name) => redact(s),
                    _ => {
                        if name.eq_ignore_ascii_case("auth") {
                            if let Some(Value::String(s)) = v.get_mut("value") {
                                redact(s);
                            }
                        }
                        redact_secrets(v)
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}
