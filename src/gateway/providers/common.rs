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
use crate::gateway::wire::json::value_from_slice;
use crate::gateway::wire::openai::{invalid, number, stop_sequences};

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

/// How a keyed provider's `model.config` is spelled: its credential field, its base-URL field
/// and default, and any other string fields it reads. One declaration per provider replaces a
/// hand-written `from_config` (see `keyed_config`).
#[derive(Debug)]
pub struct KeySpec {
    /// The provider name, for "unknown <provider> config key" issues.
    pub provider: &'static str,
    /// The credential field (e.g. `cohere_api_key`, or `api_key` for the OpenAI-compatible family).
    pub key: &'static str,
    /// Whether the credential must be set (Ollama's may be left out).
    pub key_required: bool,
    /// The base-URL field, if the provider has one (MLflow's or our extension).
    pub base: Option<&'static str>,
    /// The provider's public API base, used when the base field is absent.
    pub default_base: &'static str,
    /// Other string fields the provider reads (returned in `Keyed::extra`).
    pub extra: &'static [&'static str],
}

/// A keyed provider's checked config.
#[derive(Debug)]
pub struct Keyed {
    pub api_key: Option<SecretRef>,
    pub api_base: String,
    /// The `KeySpec::extra` fields that were set.
    pub extra: HashMap<String, String>,
}

/// Checks a keyed provider's `model.config` at `path`: unknown keys (with did-you-mean),
/// non-strings, a missing or empty credential, a base URL that is not http(s). `None` when any
/// issue was raised.
pub fn keyed_config(spec: &KeySpec, path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Keyed> {
    let before = issues.0.len();
    let known: Vec<&str> = std::iter::once(spec.key).chain(spec.base).chain(spec.extra.iter().copied()).collect();
    let mut values = string_config(path, spec.provider, config, &known, issues);
    let api_key = if spec.key_required {
        take_api_key(path, spec.key, config, &mut values, issues)
    } else {
        let key = values.remove(spec.key);
        if key.as_deref() == Some("") {
            issues.push(format!("{path}.{}", spec.key), "must not be empty (leave it out for none)");
        }
        key
    };
    let api_base = spec.base.and_then(|field| take_base_url(path, field, &mut values, issues));
    if issues.0.len() != before {
        return None;
    }
    Some(Keyed {
        api_key: api_key.map(|k| SecretRef::parse(&k)),
        api_base: api_base.unwrap_or_else(|| spec.default_base.to_string()),
        extra: values,
    })
}

/// What a mapped request field must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Anything, passed on as is.
    Any,
    /// A JSON number.
    Number,
    /// A positive integer (token counts, candidate counts).
    Count,
    /// OpenAI's `stop`: a string or a list of strings, sent as a list (left out when empty).
    Stops,
}

/// One row of a provider's parameter table: the OpenAI request field `from` is sent as the
/// provider's `to` (`""`: dropped), checked to have `shape`. Modelled on Portkey's per-provider
/// parameter configs; rows for the same `to` are tried in order and the first present wins
/// (`max_completion_tokens` before `max_tokens`).
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub from: &'static str,
    pub to: &'static str,
    pub shape: Shape,
}

/// A `Param` row (`const` so tables can be `static`).
pub const fn param(from: &'static str, to: &'static str, shape: Shape) -> Param {
    Param { from, to, shape }
}

/// The value `p.from` holds in `body`, checked and shaped for the provider; `None` when the
/// field is absent, `null`, an empty stop list, or dropped.
fn mapped(p: &Param, body: &Map<String, Value>) -> Result<Option<Value>> {
    let Some(value) = body.get(p.from).filter(|v| !v.is_null()) else { return Ok(None) };
    if p.to.is_empty() {
        return Ok(None);
    }
    Ok(Some(match p.shape {
        Shape::Any => value.clone(),
        Shape::Number => {
            number(p.from, value)?;
            value.clone()
        }
        Shape::Count => match value.as_u64().filter(|n| *n > 0) {
            Some(n) => Value::from(n),
            None => return Err(invalid(p.from, "must be a positive integer")),
        },
        Shape::Stops => {
            let stops = stop_sequences(Some(value.clone()))?;
            if stops.is_empty() {
                return Ok(None);
            }
            Value::from(stops)
        }
    }))
}

/// Copies the fields of `body` that `table` maps into `out`, under the provider's names.
/// Fields the table does not name are not copied (the provider's body is built field by field).
pub fn map_params(body: &Map<String, Value>, table: &[Param], out: &mut Map<String, Value>) -> Result<()> {
    for p in table {
        if out.contains_key(p.to) {
            continue;
        }
        if let Some(value) = mapped(p, body)? {
            out.insert(p.to.to_string(), value);
        }
    }
    Ok(())
}

/// Renames (and drops) in place the fields of an OpenAI-shaped `body` that `table` names, for
/// origins that take OpenAI's body with a few differences; other fields pass through.
pub fn rename_params(body: &mut Map<String, Value>, table: &[Param]) -> Result<()> {
    let mut renamed = Map::new();
    map_params(body, table, &mut renamed)?;
    for p in table {
        body.remove(p.from);
    }
    body.extend(renamed);
    Ok(())
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
    let message = value_from_slice(body).ok().and_then(|v| {
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

/// The text inside the first `<tag>...</tag>` of `xml` (no attributes, as AWS writes them).
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// A response id for answers that carry none: unique enough per answer, and deterministic.
pub fn synthetic_id(prefix: &str, body: &[u8], now_ms: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(now_ms.to_be_bytes());
    hasher.update(body);
    let digest = hasher.finalize();
    format!("{prefix}-{}", hex(&digest[..12]))
}

/// A `POST {url}` request of `content_type`, built in place: http's `Builder` moves the whole
/// request through each step (~4,000 instructions a request at opt-level z). Headers are added
/// with [`header_value`]; an invalid URL is a `BadOriginRequest`.
pub fn post(url: String, content_type: http::HeaderValue, body: Vec<u8>) -> Result<Request<Vec<u8>>> {
    let mut request = Request::new(body);
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::try_from(url).map_err(|e| bad_origin_request(e.into()))?;
    request.headers_mut().insert(http::header::CONTENT_TYPE, content_type);
    Ok(request)
}

/// A JSON [`post`], the request of nearly every provider.
pub fn json_post(url: String, body: Vec<u8>) -> Result<Request<Vec<u8>>> {
    post(url, http::HeaderValue::from_static("application/json"), body)
}

/// A header value for a [`post`]'s request; an invalid one is a `BadOriginRequest`.
pub fn header_value<V>(value: V) -> Result<http::HeaderValue>
where
    V: TryInto<http::HeaderValue, Error = http::header::InvalidHeaderValue>,
{
    value.try_into().map_err(|e| bad_origin_request(e.into()))
}

fn bad_origin_request(e: http::Error) -> GatewayError {
    GatewayError::not_configured(ErrorCode::BadOriginRequest, format!("cannot build the origin request: {e}"))
}

/// `base` joined with `path`, tolerating a trailing slash on `base`.
pub fn join_url(base: &str, path: &str) -> String {
    [base.trim_end_matches('/'), "/", path.trim_start_matches('/')].concat()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TABLE: &[Param] = &[
        param("max_completion_tokens", "maxTokens", Shape::Count),
        param("max_tokens", "maxTokens", Shape::Count),
        param("temperature", "temperature", Shape::Number),
        param("stop", "stopSequences", Shape::Stops),
        param("seed", "random_seed", Shape::Any),
        param("user", "", Shape::Any),
    ];

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parameter_tables_rename_shape_and_drop() {
        let body = object(json!({"max_tokens": 5, "max_completion_tokens": 9, "temperature": 0.5, "stop": "END",
            "seed": 1, "user": "u", "other": true, "top_p": null}));
        let mut out = Map::new();
        map_params(&body, TABLE, &mut out).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"maxTokens": 9, "temperature": 0.5, "stopSequences": ["END"], "random_seed": 1})
        );
        let mut body = body;
        rename_params(&mut body, TABLE).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"maxTokens": 9, "temperature": 0.5, "stopSequences": ["END"], "random_seed": 1, "other": true,
                "top_p": null})
        );
        let mut out = Map::new();
        map_params(&object(json!({"stop": []})), TABLE, &mut out).unwrap();
        assert!(out.is_empty(), "an empty stop list is left out");
        for (bad, field) in [
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": -3}), "max_tokens"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"stop": [1]}), "stop"),
            (json!({"stop": {}}), "stop"),
        ] {
            let e = map_params(&object(bad), TABLE, &mut Map::new()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }

    #[test]
    fn keyed_configs_are_declared_once() {
        let spec = KeySpec {
            provider: "acme",
            key: "acme_api_key",
            key_required: true,
            base: Some("acme_api_base"),
            default_base: "https://api.acme.test/v1",
            extra: &["acme_region"],
        };
        let mut issues = Issues::default();
        let keyed =
            keyed_config(&spec, "c", &object(json!({"acme_api_key": "$ACME", "acme_region": "eu"})), &mut issues)
                .unwrap();
        assert_eq!(keyed.api_key, Some(SecretRef::Env("ACME".into())));
        assert_eq!(keyed.api_base, "https://api.acme.test/v1");
        assert_eq!(keyed.extra["acme_region"], "eu");
        let mut issues = Issues::default();
        let config =
            object(json!({"acme_api_kye": "k", "acme_api_base": "ftp://x", "acme_region": 3, "acme_extra": [1]}));
        assert!(keyed_config(&spec, "e.config", &config, &mut issues).is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.starts_with("e.config.acme_api_kye: unknown acme config key")
                && t.contains("did you mean \"acme_api_key\"")),
            "{text:?}"
        );
        assert!(text.contains(&"e.config.acme_api_key: is required (use a \"$SECRET_NAME\" reference)".to_string()));
        assert!(text.contains(&"e.config.acme_api_base: \"ftp://x\" must start with http:// or https://".to_string()));
        assert!(text.iter().any(|t| t.starts_with("e.config.acme_extra: unknown acme config key")), "{text:?}");
    }
}
