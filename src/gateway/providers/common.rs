//! Helpers the provider files share: config reading, secrets, request building, origin errors.

use std::collections::HashMap;

use http::{Request, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::types::Operation;
use crate::gateway::util::text::{hex, scrub, truncate};

/// Resolves a secret reference, failing with a message that names the reference, never a value.
pub fn resolve_secret(secret: &SecretRef, secrets: &impl Secrets) -> Result<String> {
    match secret {
        SecretRef::Literal(value) => Ok(value.clone()),
        SecretRef::Env(name) => secrets.secret(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            GatewayError::not_configured(
                ErrorCode::SecretMissing,
                format!("the provider credential ${name} is not set in this host's secrets"),
            )
        }),
    }
}

/// Reads the string config keys of a provider, reporting unknown keys and non-strings.
/// Returns a lookup that yields each known key's value.
pub fn string_config(
    path: &str,
    provider: &str,
    config: &Map<String, Value>,
    known: &[&str],
    issues: &mut Issues,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (key, value) in config {
        if !known.contains(&key.as_str()) {
            issues.unknown(format!("{path}.{key}"), &format!("{provider} config key"), key, known);
            continue;
        }
        match value {
            Value::String(s) => {
                out.insert(key.clone(), s.clone());
            }
            Value::Number(n) => {
                out.insert(key.clone(), n.to_string());
            }
            _ => issues.push(format!("{path}.{key}"), "must be a string"),
        }
    }
    out
}

/// Checks that a configured base URL is absolute http(s).
pub fn check_url(path: &str, key: &str, url: &str, issues: &mut Issues) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        issues.push(format!("{path}.{key}"), format!("\"{url}\" must start with http:// or https://"));
    }
}

/// Takes a required credential key out of `string_config`'s `values`, reporting it missing or
/// empty. (A key that is present but not a string was already reported by `string_config`.)
pub fn take_api_key(
    path: &str,
    key: &str,
    config: &Map<String, Value>,
    values: &mut HashMap<String, String>,
    issues: &mut Issues,
) -> Option<String> {
    let api_key = values.remove(key);
    match api_key.as_deref() {
        None if !config.contains_key(key) => {
            issues.push(format!("{path}.{key}"), "is required (use a \"$SECRET_NAME\" reference)")
        }
        Some("") => issues.push(format!("{path}.{key}"), "must not be empty"),
        _ => {}
    }
    api_key
}

/// Takes an optional base-URL key out of `string_config`'s `values`, checking it with `check_url`.
pub fn take_base_url(
    path: &str,
    key: &str,
    values: &mut HashMap<String, String>,
    issues: &mut Issues,
) -> Option<String> {
    let url = values.remove(key);
    if let Some(url) = &url {
        check_url(path, key, url, issues);
    }
    url
}

/// Takes a required server URL out of `string_config`'s `values`, checking it with `check_url`;
/// `hint` says what the URL is in the "is required" message.
pub fn take_server_url(
    path: &str,
    key: &str,
    hint: &str,
    values: &mut HashMap<String, String>,
    issues: &mut Issues,
) -> Option<String> {
    let url = values.remove(key);
    match &url {
        None => issues.push(format!("{path}.{key}"), format!("is required ({hint})")),
        Some(url) => check_url(path, key, url, issues),
    }
    url
}

/// Best-effort extraction of an error message from an origin's error body, for the client.
/// Origins put it in different places; anything unreadable falls back to the status line.
/// An origin's 401/403 is about the gateway's own credential, so its text is never relayed
/// (OpenAI's carries a masked fragment of the key) and it is a 502 `origin_auth_failed`, not
/// a 401 the client would take for its own key; other texts are relayed scrubbed of key-like
/// tokens and addresses (`util::text::scrub`).
pub fn origin_error(status: StatusCode, body: &[u8]) -> GatewayError {
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return GatewayError::bad_gateway(
            ErrorCode::OriginAuthFailed,
            format!(
                "the origin refused the gateway's credentials (HTTP {}); the gateway's operator must check them",
                status.as_u16()
            ),
        );
    }
    let message = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let m = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .or_else(|| v.get("detail"))?;
        m.as_str().map(str::to_owned)
    });
    let message = match message {
        Some(m) => format!("origin returned HTTP {}: {}", status.as_u16(), scrub(truncate(&m, 500))),
        None => format!("origin returned HTTP {}", status.as_u16()),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        GatewayError::new(status, "rate_limit_error", ErrorCode::OriginRateLimited, message)
    } else if status.is_client_error() {
        // The request was wrong for the origin: keep the status so SDKs react alike.
        GatewayError::new(status, "invalid_request_error", ErrorCode::OriginRejected, message)
    } else {
        GatewayError::bad_gateway(ErrorCode::OriginError, message)
    }
}

/// A response id for answers that carry none: unique enough per answer, and deterministic.
pub fn synthetic_id(prefix: &str, body: &[u8], now_ms: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(now_ms.to_be_bytes());
    hasher.update(body);
    let digest = hasher.finalize();
    format!("{prefix}-{}", hex(&digest[..12]))
}

/// A `POST {url}` request with a JSON content type; `url` is validated.
pub fn post_json(url: &str) -> http::request::Builder {
    Request::builder().method(http::Method::POST).uri(url).header(http::header::CONTENT_TYPE, "application/json")
}

/// Finishes a builder, mapping an invalid URL/header to a config error naming the problem.
pub fn finish_request(builder: http::request::Builder, body: Vec<u8>) -> Result<Request<Vec<u8>>> {
    builder.body(body).map_err(|e| {
        GatewayError::not_configured(ErrorCode::BadOriginRequest, format!("cannot build the origin request: {e}"))
    })
}

/// `base` joined with `path`, tolerating a trailing slash on `base`.
pub fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

pub fn unsupported(provider: &str, op: Operation) -> GatewayError {
    let what = match op {
        Operation::Predict => "MLflow model predictions".to_string(),
        other => format!("{} requests", other.as_str()),
    };
    GatewayError::bad_request(
        ErrorCode::UnsupportedOperation,
        format!("the {provider} provider does not support {what}"),
    )
}
