//! Google Cloud as Vertex AI callers see it: the OAuth2 token endpoint of the service-account
//! JWT-bearer flow (`POST /token`; the assertion's RS256 signature is checked against the public
//! key a test registered with `POST /_mock/google/keys`), and Vertex AI's model paths, which want
//! a token this endpoint issued:
//!
//! * `/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:{generateContent|streamGenerateContent|predict}`
//! * `/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:{rawPredict|streamRawPredict}`
//! * `/v1/projects/{p}/locations/{l}/endpoints/openapi/chat/completions`
//!
//! Also Databricks' OAuth M2M token endpoint (`POST /oidc/v1/token`, client credentials).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::StatusCode;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::embed;
use crate::exchange::{unix_now, Ctx, Reply, Usage};
use crate::openai::Flavor;
use crate::{anthropic, gemini, openai, text};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Reply {
    Reply::json(status, &json!({"error": error, "error_description": description}))
}

fn form_param(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let digit = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], digit(i + 1), digit(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn issue(ctx: &Ctx<'_>, prefix: &str) -> Reply {
    let token = format!("{prefix}.mock-{}-{}", ctx.state.name(), ctx.state.next_id());
    ctx.state.creds.issue_token(token.clone());
    Reply::ok_json(&json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
}

/// `POST /token`: a JWT-bearer grant with an RS256 assertion from a registered service account.
pub fn token(ctx: &Ctx<'_>) -> Reply {
    let form = String::from_utf8_lossy(ctx.body);
    if form_param(&form, "grant_type").as_deref() != Some(JWT_BEARER) {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form_param(&form, "assertion") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Missing required parameter: assertion");
    };
    match check_assertion(ctx, &assertion) {
        Ok(()) => issue(ctx, "ya29"),
        Err(problem) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &problem),
    }
}

fn check_assertion(ctx: &Ctx<'_>, jwt: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else { return Err("Invalid JWT: not three parts".into()) };
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| "Invalid JWT: not base64url".to_string())?;
        serde_json::from_slice(&bytes).map_err(|_| "Invalid JWT: not JSON".to_string())
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("Invalid JWT: alg must be RS256".into());
    }
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    let Some(key) = ctx.state.creds.google_key(iss) else {
        return Err(format!("Invalid JWT: no such service account {iss:?}"));
    };
    let host = ctx.header("host").unwrap_or_default();
    let audience = format!("http://{host}{}", ctx.path);
    if claims.get("aud").and_then(Value::as_str) != Some(audience.as_str()) {
        return Err(format!("Invalid JWT: aud must be {audience}"));
    }
    if !claims.get("scope").and_then(Value::as_str).unwrap_or_default().split(' ').any(|s| s == CLOUD_PLATFORM) {
        return Err("Invalid JWT: scope lacks cloud-platform".into());
    }
    let (iat, exp) = (claims.get("iat").and_then(Value::as_u64), claims.get("exp").and_then(Value::as_u64));
    let (Some(iat), Some(exp)) = (iat, exp) else { return Err("Invalid JWT: iat and exp are required".into()) };
    let now = unix_now();
    if exp <= iat || exp - iat > 3600 || iat > now + 300 || exp < now {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe".into());
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "Invalid JWT Signature.".to_string())?;
    let signature = Signature::try_from(signature.as_slice()).map_err(|_| "Invalid JWT Signature.".to_string())?;
    let signed = &jwt[..jwt.rfind('.').unwrap_or(0)];
    VerifyingKey::<Sha256>::new(key).verify(signed.as_bytes(), &signature).map_err(|_| "Invalid JWT Signature.".into())
}

/// `POST /oidc/v1/token` (Databricks OAuth M2M): client credentials in Basic auth.
pub fn databricks_token(ctx: &Ctx<'_>) -> Reply {
    let form = String::from_utf8_lossy(ctx.body);
    if form_param(&form, "grant_type").as_deref() != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "grant_type must be client_credentials");
    }
    let basic =
        ctx.header("authorization").and_then(|a| a.strip_prefix("Basic ")).and_then(|b| STANDARD.decode(b).ok());
    let pair = basic.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    match pair.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => issue(ctx, "dbx-oauth"),
        _ => oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Client authentication failed"),
    }
}

fn unauthenticated() -> Reply {
    gemini::error(
        StatusCode::UNAUTHORIZED,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other \
         valid authentication credential.",
        "UNAUTHENTICATED",
    )
}

/// `/v1/projects/{p}/locations/{l}/...` (the part after `locations/{l}/`).
pub fn vertex(ctx: &Ctx<'_>, rest: &str) -> Reply {
    if !ctx.bearer().is_some_and(|token| ctx.state.creds.token_is_valid(token)) {
        return unauthenticated();
    }
    if rest == "endpoints/openapi/chat/completions" {
        return openai::chat(ctx, Flavor::OpenAi);
    }
    let Some((publisher, model_action)) = rest.strip_prefix("publishers/").and_then(|r| r.split_once("/models/"))
    else {
        return gemini::not_found(ctx);
    };
    let Some((model, action)) = model_action.rsplit_once(':') else { return gemini::not_found(ctx) };
    match (publisher, action) {
        ("google", "predict") => predict(ctx),
        ("google", _) => gemini::handle_authorized(ctx, model, action),
        ("anthropic", "rawPredict") => anthropic::vertex_raw_predict(ctx, model, false),
        ("anthropic", "streamRawPredict") => anthropic::vertex_raw_predict(ctx, model, true),
        _ => gemini::not_found(ctx),
    }
}

/// `:predict` of a text-embedding model.
fn predict(ctx: &Ctx<'_>) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(ctx.body) else {
        return gemini::error(StatusCode::BAD_REQUEST, "Invalid JSON payload received.", "INVALID_ARGUMENT");
    };
    let Some(instances) = request.get("instances").and_then(Value::as_array) else {
        return gemini::error(StatusCode::BAD_REQUEST, "instances is required", "INVALID_ARGUMENT");
    };
    let dimensions = request
        .pointer("/parameters/outputDimensionality")
        .and_then(Value::as_u64)
        .map_or(embed::DEFAULT_DIMENSIONS, |d| d as usize);
    let mut tokens = 0;
    let predictions: Vec<Value> = instances
        .iter()
        .map(|instance| {
            let text = instance.get("content").and_then(Value::as_str).unwrap_or_default();
            let count = text::count_words(text);
            tokens += count;
            json!({"embeddings": {"values": embed::to_json(&embed::embedding(text, dimensions)),
                "statistics": {"token_count": count as f64, "truncated": false}}})
        })
        .collect();
    Reply::ok_json(&json!({"predictions": predictions, "metadata": {"billableCharacterCount": 1}}))
        .with_usage(Usage { prompt: tokens, completion: 0 })
}
