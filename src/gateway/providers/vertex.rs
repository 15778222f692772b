//! `vertex_ai`: Google Cloud Vertex AI, as MLflow 3.17's provider serves it
//! (`mlflow/gateway/providers/vertex_ai.py`): the model name picks the wire format —
//!
//! * Gemini and other Google models: the Gemini API under
//!   `v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`
//!   (`:streamGenerateContent?alt=sse`), embeddings with `:predict`;
//! * Claude (`claude-*`): Anthropic's Messages API under `publishers/anthropic/models/{model}`
//!   `:rawPredict` / `:streamRawPredict`, `anthropic_version: vertex-2023-10-16` in the body;
//! * partner "MaaS" models (`publisher/model`, `mistral*`, `codestral*`, `jamba*`, `*-maas`):
//!   OpenAI chat completions under `endpoints/openapi`.
//!
//! Config: `vertex_project`, `vertex_location` (default `global`, `us-central1` for MaaS, as in
//! MLflow), `vertex_credentials` (a service-account key file's JSON; at the edge it is required,
//! as there are no Application Default Credentials, and best given as a `$SECRET`), and
//! `vertex_anthropic_betas` (accepted; the gateway never forwards a client's `anthropic-beta`
//! header, so there is nothing to filter). Authentication is the service account's OAuth2
//! JWT-bearer exchange (`google_auth`), its access token cached per isolate.

use http::{header, Request};
use serde_json::{json, Map, Value};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::Result;
use crate::gateway::ports::{Secrets, Signatures, Upstream};
use crate::gateway::providers::adapter::{Adapter, Call, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    header_value, join_url, json_post, resolve_secret, string_config, unsupported,
};
use crate::gateway::providers::google_auth::{self, ServiceAccount, CLOUD_PLATFORM_SCOPE};
use crate::gateway::providers::openai::{ask_stream_usage, passthrough_answer};
use crate::gateway::providers::token::{not_authorized, AccessToken, TokenCache};
use crate::gateway::providers::{anthropic, gemini};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::{embedding_list, invalid};
use crate::gateway::wire::sse::SseEvent;
use crate::gateway::wire::stream::StreamTranslate;

const NAME: &str = "vertex_ai";
const CONFIG_KEYS: &[&str] = &["vertex_project", "vertex_location", "vertex_credentials", "vertex_anthropic_betas"];
/// What Vertex wants in a Claude body instead of `model` (MLflow's `_VERTEX_ANTHROPIC_VERSION`).
const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";
const MAAS_PREFIXES: &[&str] = &["mistral", "codestral", "jamba"];

/// Which wire format a Vertex model speaks (MLflow's `_classify_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    Gemini,
    Claude,
    Maas,
}

impl ModelFamily {
    pub fn of(model: &str) -> ModelFamily {
        let name = model.to_ascii_lowercase();
        if name.starts_with("claude") {
            ModelFamily::Claude
        } else if name.contains('/') || MAAS_PREFIXES.iter().any(|p| name.starts_with(p)) || name.ends_with("-maas") {
            ModelFamily::Maas
        } else {
            ModelFamily::Gemini
        }
    }
}

/// The API host serving `location` (global, multi-region `eu`/`us`, or regional).
fn vertex_host(location: &str) -> String {
    match location {
        "global" => "https://aiplatform.googleapis.com".to_string(),
        "eu" | "us" => format!("https://aiplatform.{location}.rep.googleapis.com"),
        regional => format!("https://{regional}-aiplatform.googleapis.com"),
    }
}

#[derive(Debug)]
pub struct VertexAi {
    pub project: String,
    pub location: String,
    pub family: ModelFamily,
    pub credentials: SecretRef,
    pub api_base: String,
    token: TokenCache<AccessToken>,
}

impl VertexAi {
    /// `model` is the endpoint's `model.name` (it picks the wire format and the default location).
    pub fn from_config(
        path: &str,
        model: Option<&str>,
        config: &Map<String, Value>,
        issues: &mut Issues,
    ) -> Option<VertexAi> {
        let before = issues.0.len();
        let mut plain = config.clone();
        match plain.remove("vertex_anthropic_betas") {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(_) => issues.push(
                format!("{path}.vertex_anthropic_betas"),
                "must be a list of strings (or one comma-separated string)",
            ),
        }
        let mut values = string_config(path, NAME, &plain, CONFIG_KEYS, issues);
        let project = values.remove("vertex_project");
        match project.as_deref() {
            None => issues.push(format!("{path}.vertex_project"), "is required (the Google Cloud project id)"),
            Some(p)
                if p.is_empty()
                    || !p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_')) =>
            {
                issues.push(
                    format!("{path}.vertex_project"),
                    format!("\"{p}\" is not a project id (it is part of the origin URL, so not a $SECRET reference)"),
                )
            }
            Some(_) => {}
        }
        let family = ModelFamily::of(model.unwrap_or_default());
        let location = values.remove("vertex_location");
        if let Some(l) = location.as_deref() {
            if l.is_empty() || !l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                issues.push(
                    format!("{path}.vertex_location"),
                    format!("\"{l}\" is not a location like \"us-central1\", \"europe-west4\" or \"global\""),
                );
            }
        }
        let credentials = values.remove("vertex_credentials").map(|c| SecretRef::parse(&c));
        match &credentials {
            None => issues.push(
                format!("{path}.vertex_credentials"),
                "is required at the edge (there are no Application Default Credentials): a \"$SECRET\" holding \
                 the service-account key file's JSON",
            ),
            Some(SecretRef::Literal(text)) if text.trim_start().starts_with('{') => {
                if let Err(problem) = google_auth::check_service_account_json(text) {
                    issues.push(format!("{path}.vertex_credentials"), problem);
                }
            }
            Some(SecretRef::Literal(_)) => issues.push(
                format!("{path}.vertex_credentials"),
                "looks like a file path, which cannot be read at the edge: use a \"$SECRET\" holding the \
                 service-account key file's JSON",
            ),
            Some(SecretRef::Env(_)) => {}
        }
        if issues.0.len() != before {
            return None;
        }
        let default_location = if family == ModelFamily::Maas { "us-central1" } else { "global" };
        let location = location.unwrap_or_else(|| default_location.to_string());
        Some(VertexAi {
            project: project?,
            api_base: vertex_host(&location),
            location,
            family,
            credentials: credentials?,
            token: TokenCache::default(),
        })
    }

    /// Fetches an access token unless a fresh one is cached.
    pub async fn authorize<P: Upstream + Secrets + Signatures>(&self, ports: &P, timeout_ms: u64) -> Result<()> {
        self.token
            .ensure(ports, timeout_ms, || async {
                let account = ServiceAccount::parse(&resolve_secret(&self.credentials, ports)?)?;
                google_auth::exchange(ports, &account, CLOUD_PLATFORM_SCOPE, timeout_ms).await
            })
            .await
    }

    fn prefix(&self) -> String {
        format!("v1/projects/{}/locations/{}", self.project, self.location)
    }
}

/// Vertex's `:predict` body for text-embedding models.
fn predict_body(body: &Map<String, Value>) -> Result<Value> {
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().ok_or_else(|| invalid("input", "Vertex AI embeds text inputs only")))
            .collect::<Result<_>>()?,
        _ => return Err(invalid("input", "must be a string or a non-empty list of strings")),
    };
    let instances: Vec<Value> = inputs.into_iter().map(|text| json!({"content": text})).collect();
    let mut out = json!({"instances": instances});
    if let Some(d) = body.get("dimensions").filter(|d| !d.is_null()) {
        let d = d.as_u64().filter(|d| *d > 0).ok_or_else(|| invalid("dimensions", "must be a positive integer"))?;
        out["parameters"] = json!({"outputDimensionality": d});
    }
    Ok(out)
}

/// A `:predict` answer as an OpenAI embeddings list.
fn predict_answer(value: &Value, model: &str) -> Result<(Value, Usage)> {
    let predictions =
        value.get("predictions").and_then(Value::as_array).ok_or_else(|| bad_response("no predictions list"))?;
    let mut tokens = 0u64;
    let vectors = predictions
        .iter()
        .map(|p| {
            let embeddings = p.get("embeddings");
            let count = embeddings.and_then(|e| e.pointer("/statistics/token_count")).and_then(Value::as_f64);
            tokens = tokens.saturating_add(count.unwrap_or(0.0).max(0.0) as u64);
            embeddings
                .and_then(|e| e.get("values"))
                .filter(|v| v.is_array())
                .ok_or_else(|| bad_response("a prediction without embeddings.values"))
        })
        .collect::<Result<Vec<_>>>()?;
    let usage = Usage { prompt_tokens: tokens, completion_tokens: 0 };
    Ok((embedding_list(vectors, model, usage), usage))
}

/// Claude on Vertex: a Messages body without `model`, with Vertex's `anthropic_version`.
fn claude_body(op: Operation, body: Map<String, Value>, model: &str, stream: bool) -> Result<Map<String, Value>> {
    let mut out = anthropic::messages_body(NAME, op, body, model, stream)?;
    out.remove("model");
    out.insert("anthropic_version".into(), Value::String(VERTEX_ANTHROPIC_VERSION.into()));
    Ok(out)
}

/// Vertex streams: Gemini's or Anthropic's events, per the model family.
pub enum VertexStream {
    Gemini(gemini::StreamToOpenAi),
    Claude(anthropic::StreamToOpenAi),
}

impl StreamTranslate for VertexStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match self {
            VertexStream::Gemini(t) => t.event(event, out),
            VertexStream::Claude(t) => t.event(event, out),
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            VertexStream::Gemini(t) => t.finish(out),
            VertexStream::Claude(t) => t.finish(out),
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            VertexStream::Gemini(t) => t.usage(),
            VertexStream::Claude(t) => t.usage(),
        }
    }
}

impl Adapter for VertexAi {
    type Stream = VertexStream;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, _secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let prefix = self.prefix();
        let model = call.model;
        let (path, body) = match (self.family, call.op) {
            (ModelFamily::Gemini, Operation::Chat | Operation::Completions) => (
                format!("{prefix}/publishers/google/models/{model}:{}", gemini::generate_action(call.stream)),
                Value::Object(gemini::generate_body(NAME, call.op, call.body)?),
            ),
            (ModelFamily::Gemini, Operation::Embeddings) => {
                (format!("{prefix}/publishers/google/models/{model}:predict"), predict_body(&call.body)?)
            }
            (ModelFamily::Claude, Operation::Chat | Operation::Completions) => {
                let action = if call.stream { "streamRawPredict" } else { "rawPredict" };
                let body = claude_body(call.op, call.body, model, call.stream)?;
                (format!("{prefix}/publishers/anthropic/models/{model}:{action}"), Value::Object(body))
            }
            (ModelFamily::Maas, Operation::Chat) => {
                let mut body = call.body;
                body.insert("model".into(), Value::String(model.to_string()));
                if call.stream {
                    ask_stream_usage(&mut body);
                }
                (format!("{prefix}/endpoints/openapi/chat/completions"), Value::Object(body))
            }
            (_, op) => return Err(unsupported(&format!("{NAME} ({model})"), op)),
        };
        let token = self.token.get(call.now_ms).ok_or_else(|| not_authorized(NAME))?;
        let mut request = json_post(join_url(call.base_url, &path), json_body(&body))?;
        request.headers_mut().insert(header::AUTHORIZATION, header_value(format!("Bearer {}", token.0))?);
        Ok(request)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        match (self.family, reply.op) {
            (ModelFamily::Claude, _) => anthropic::messages_answer(reply),
            (ModelFamily::Maas, _) => passthrough_answer(reply),
            (ModelFamily::Gemini, Operation::Embeddings) => {
                let value = reply.success_json()?;
                let (answer, usage) = predict_answer(&value, reply.model)?;
                Ok(Translated { body: json_body(&answer), usage: Some(usage), fields: None })
            }
            (ModelFamily::Gemini, op) => {
                let value = reply.success_json()?;
                if !value.is_object() {
                    return Err(bad_response("not a JSON object"));
                }
                let (answer, usage) = gemini::generate_answer(op, &value, reply.model, reply.now_ms)?;
                Ok(Translated { body: json_body(&answer), usage, fields: None })
            }
        }
    }

    fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode<Self::Stream> {
        match (self.family, op) {
            (ModelFamily::Maas, _) => StreamMode::Passthrough,
            (ModelFamily::Gemini, Operation::Chat | Operation::Completions) => {
                StreamMode::Translate(VertexStream::Gemini(gemini::StreamToOpenAi::new(op, model, now_ms)))
            }
            (ModelFamily::Claude, Operation::Chat | Operation::Completions) => {
                StreamMode::Translate(VertexStream::Claude(anthropic::StreamToOpenAi::new(op, model, now_ms)))
            }
            _ => StreamMode::Buffered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::providers::google_auth::tests::test_account_json;
    use crate::gateway::providers::test_support::{call, parsed, sent};
    use crate::gateway::test_util::mutations;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use http::{Response, StatusCode};

    const TOKEN_URI: &str = "http://127.0.0.1:9/token";

    fn vertex(model: &str, config: Value) -> VertexAi {
        let mut issues = Issues::default();
        let p = VertexAi::from_config("c", Some(model), config.as_object().unwrap(), &mut issues);
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        p.unwrap()
    }

    fn issues(model: &str, config: Value) -> Vec<String> {
        let mut issues = Issues::default();
        assert!(VertexAi::from_config("e.config", Some(model), config.as_object().unwrap(), &mut issues).is_none());
        issues.0.iter().map(ToString::to_string).collect()
    }

    fn config() -> Value {
        json!({"vertex_project": "my-proj", "vertex_location": "europe-west4", "vertex_credentials": "$VERTEX_SA"})
    }

    /// A host whose token endpoint answers with a token and whose model origin is never called.
    fn host() -> MemoryHost {
        MemoryHost::new(|req| {
            assert_eq!(req.uri(), TOKEN_URI);
            Ok(Response::new(br#"{"access_token":"ya29.test","expires_in":3599,"token_type":"Bearer"}"#.to_vec()))
        })
        .with_secret("VERTEX_SA", &test_account_json(TOKEN_URI))
    }

    fn authorized(model: &str, host: &MemoryHost) -> VertexAi {
        let p = vertex(model, config());
        block_on(p.authorize(host, 1000)).unwrap();
        p
    }

    fn build(
        p: &VertexAi,
        host: &MemoryHost,
        op: Operation,
        model: &str,
        body: Value,
        stream: bool,
    ) -> Result<Request<Vec<u8>>> {
        p.build_request(call(op, model, body, p.default_base(), stream, host.now_ms.get()), host)
    }

    #[test]
    fn model_names_pick_the_wire_format_and_default_location() {
        for (model, family) in [
            ("gemini-2.5-flash", ModelFamily::Gemini),
            ("text-embedding-005", ModelFamily::Gemini),
            ("claude-sonnet-4@20250514", ModelFamily::Claude),
            ("meta/llama-3.3-70b-instruct-maas", ModelFamily::Maas),
            ("mistral-small-2503", ModelFamily::Maas),
            ("jamba-1.5-large", ModelFamily::Maas),
            ("deepseek-r1-0528-maas", ModelFamily::Maas),
        ] {
            assert_eq!(ModelFamily::of(model), family, "{model}");
        }
        let c = json!({"vertex_project": "p", "vertex_credentials": "$VERTEX_SA"});
        assert_eq!(vertex("gemini-2.5-flash", c.clone()).default_base(), "https://aiplatform.googleapis.com");
        assert_eq!(vertex("claude-x", c.clone()).location, "global");
        assert_eq!(
            vertex("meta/llama-maas", c.clone()).default_base(),
            "https://us-central1-aiplatform.googleapis.com"
        );
        let eu = json!({"vertex_project": "p", "vertex_credentials": "$VERTEX_SA", "vertex_location": "eu",
            "vertex_anthropic_betas": ["context-1m-2025-08-07"]});
        assert_eq!(vertex("gemini-2.5-flash", eu).default_base(), "https://aiplatform.eu.rep.googleapis.com");
    }

    #[test]
    fn config_issues_name_their_path() {
        let text = issues("gemini-2.5-flash", json!({"vertex_projct": "p"}));
        assert!(
            text.iter().any(|t| t.starts_with("e.config.vertex_projct: unknown vertex_ai config key")
                && t.contains("did you mean \"vertex_project\"")),
            "{text:?}"
        );
        assert!(text.contains(&"e.config.vertex_project: is required (the Google Cloud project id)".to_string()));
        assert!(text.iter().any(|t| t.starts_with("e.config.vertex_credentials: is required at the edge")), "{text:?}");
        let text = issues(
            "g",
            json!({"vertex_project": "$PROJECT", "vertex_location": "Europe West",
            "vertex_credentials": "/etc/sa.json", "vertex_anthropic_betas": 3}),
        );
        let has = |p: &str| text.iter().any(|t| t.starts_with(p));
        assert!(has("e.config.vertex_project: \"$PROJECT\" is not a project id"), "{text:?}");
        assert!(has("e.config.vertex_location: \"Europe West\" is not a location"), "{text:?}");
        assert!(has("e.config.vertex_credentials: looks like a file path"), "{text:?}");
        assert!(has("e.config.vertex_anthropic_betas: must be a list of strings"), "{text:?}");
        let text = issues("g", json!({"vertex_project": "p", "vertex_credentials": "{\"type\": \"authorized_user\"}"}));
        assert!(text[0].starts_with("e.config.vertex_credentials: is not a service-account key"), "{text:?}");
        // Inline key-file JSON (MLflow's "JSON string" form) is accepted as it is.
        let inline = test_account_json(TOKEN_URI);
        vertex("g", json!({"vertex_project": "p", "vertex_credentials": inline}));
    }

    #[test]
    fn the_token_exchange_is_a_signed_jwt_bearer_grant_cached_per_isolate() {
        let host = host();
        let p = vertex("gemini-2.5-flash", config());
        let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
        let e = build(&p, &host, Operation::Chat, "gemini-2.5-flash", hi, false).unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        block_on(p.authorize(&host, 1000)).unwrap();
        block_on(p.authorize(&host, 1000)).unwrap();
        let sent_requests = host.sent.borrow();
        assert_eq!(sent_requests.len(), 1, "one exchange per isolate while the token is fresh");
        let exchange = &sent_requests[0];
        assert_eq!(exchange.headers()["content-type"], "application/x-www-form-urlencoded; charset=utf-8");
        let form = String::from_utf8_lossy(exchange.body()).to_string();
        let (grant, assertion) = form.split_once('&').unwrap();
        assert_eq!(grant, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
        let jwt = assertion.strip_prefix("assertion=").unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["aud"], TOKEN_URI);
        assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
        assert_eq!(claims["iat"], 1_700_000_000);
        drop(sent_requests);
        let req = build(
            &p,
            &host,
            Operation::Chat,
            "gemini-2.5-flash",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            false,
        )
        .unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer ya29.test");
        // Five minutes before the hour is up, the next call exchanges again.
        host.advance(3_599_000 - 300_000);
        block_on(p.authorize(&host, 1000)).unwrap();
        assert_eq!(host.sent.borrow().len(), 2);
    }

    #[test]
    fn refused_or_broken_exchanges_are_502s_without_the_credential() {
        for (status, body, code) in [
            (
                StatusCode::BAD_REQUEST,
                &br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#[..],
                "origin_rejected",
            ),
            (StatusCode::OK, b"{}", "origin_bad_response"),
        ] {
            let host = MemoryHost::new(move |_| {
                let mut r = Response::new(body.to_vec());
                *r.status_mut() = status;
                Ok(r)
            })
            .with_secret("VERTEX_SA", &test_account_json(TOKEN_URI));
            let e = block_on(vertex("g", config()).authorize(&host, 1000)).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_GATEWAY, code), "{}", e.message);
            assert!(e.message.starts_with("the vertex_ai token exchange"), "{}", e.message);
            assert!(!e.message.contains("PRIVATE KEY"));
        }
        let e = block_on(vertex("g", config()).authorize(&host().with_secret("VERTEX_SA", "nope"), 1000)).unwrap_err();
        assert!(e.message.contains("vertex_credentials: is not valid JSON"), "{}", e.message);
        let unset = MemoryHost::new(|_| unreachable!());
        let e = block_on(vertex("g", config()).authorize(&unset, 1000)).unwrap_err();
        assert!(e.message.contains("$VERTEX_SA"));
    }

    #[test]
    fn gemini_models_use_the_gemini_api_under_the_publisher_path() {
        let host = host();
        let p = authorized("gemini-2.5-flash", &host);
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5});
        let req = build(&p, &host, Operation::Chat, "gemini-2.5-flash", body.clone(), false).unwrap();
        assert_eq!(
            req.uri(),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(sent(&req)["contents"], json!([{"role": "user", "parts": [{"text": "hi"}]}]));
        assert_eq!(sent(&req)["generationConfig"], json!({"maxOutputTokens": 5}));
        let req = build(&p, &host, Operation::Completions, "gemini-2.5-flash", json!({"prompt": "x"}), true).unwrap();
        assert!(req.uri().to_string().ends_with("/gemini-2.5-flash:streamGenerateContent?alt=sse"));
        assert!(matches!(p.stream_mode(Operation::Chat, "m", 0), StreamMode::Translate(VertexStream::Gemini(_))));

        let req = build(
            &p,
            &host,
            Operation::Embeddings,
            "text-embedding-005",
            json!({"input": ["a", "b"], "dimensions": 4}),
            false,
        )
        .unwrap();
        assert!(req.uri().to_string().ends_with("/publishers/google/models/text-embedding-005:predict"));
        assert_eq!(
            sent(&req),
            json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 4}})
        );
        let answer = br#"{"predictions": [{"embeddings": {"values": [0.5, -1], "statistics": {"token_count": 2.0, "truncated": false}}},
            {"embeddings": {"values": [1, 2], "statistics": {"token_count": 3}}}]}"#;
        let reply = Reply {
            op: Operation::Embeddings,
            status: StatusCode::OK,
            body: answer,
            model: "text-embedding-005",
            now_ms: 0,
            wanted: &[],
        };
        let (v, usage) = parsed(p.translate_response(reply).unwrap());
        assert_eq!(v["data"][1], json!({"object": "embedding", "embedding": [1, 2], "index": 1}));
        assert_eq!(usage.unwrap().prompt_tokens, 5);
        let reply = Reply {
            op: Operation::Embeddings,
            status: StatusCode::OK,
            body: br#"{"predictions": [{}]}"#,
            model: "m",
            now_ms: 0,
            wanted: &[],
        };
        assert_eq!(p.translate_response(reply).unwrap_err().code, "origin_bad_response");

        let answer =
            br#"{"candidates": [{"content": {"role": "model", "parts": [{"text": "hello"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1}}"#;
        let reply = Reply {
            op: Operation::Chat,
            status: StatusCode::OK,
            body: answer,
            model: "gemini-2.5-flash",
            now_ms: 0,
            wanted: &[],
        };
        let (v, usage) = parsed(p.translate_response(reply).unwrap());
        assert_eq!(v["choices"][0]["message"]["content"], "hello");
        assert_eq!(usage.unwrap().total(), 3);
    }

    #[test]
    fn claude_models_use_raw_predict_with_vertexs_anthropic_version() {
        let host = host();
        let model = "claude-sonnet-4@20250514";
        let p = authorized(model, &host);
        let req =
            build(&p, &host, Operation::Chat, model, json!({"messages": [{"role": "user", "content": "hi"}]}), false)
                .unwrap();
        assert_eq!(
            req.uri(),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
        );
        let body = sent(&req);
        assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
        assert!(body.get("model").is_none());
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
        let req =
            build(&p, &host, Operation::Chat, model, json!({"messages": [{"role": "user", "content": "hi"}]}), true)
                .unwrap();
        assert!(req.uri().path().ends_with(":streamRawPredict"));
        assert_eq!(sent(&req)["stream"], true);
        assert!(matches!(p.stream_mode(Operation::Chat, model, 0), StreamMode::Translate(VertexStream::Claude(_))));
        let answer = br#"{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": "hey"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1}}"#;
        let reply = Reply { op: Operation::Chat, status: StatusCode::OK, body: answer, model, now_ms: 0, wanted: &[] };
        let (v, _) = parsed(p.translate_response(reply).unwrap());
        assert_eq!(v["choices"][0]["message"]["content"], "hey");
        assert_eq!(
            build(&p, &host, Operation::Embeddings, model, json!({"input": "x"}), false).unwrap_err().code,
            "unsupported_operation"
        );
    }

    #[test]
    fn maas_models_use_the_openai_endpoint() {
        let host = host();
        let model = "meta/llama-3.3-70b-instruct-maas";
        let p = authorized(model, &host);
        let req = build(&p, &host, Operation::Chat, model, json!({"messages": []}), true).unwrap();
        assert_eq!(
            req.uri(),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4/endpoints/openapi/chat/completions"
        );
        assert_eq!(sent(&req), json!({"model": model, "messages": [], "stream_options": {"include_usage": true}}));
        assert!(matches!(p.stream_mode(Operation::Chat, model, 0), StreamMode::Passthrough));
        assert_eq!(
            build(&p, &host, Operation::Completions, model, json!({"prompt": "x"}), false).unwrap_err().code,
            "unsupported_operation"
        );
    }

    #[test]
    fn hostile_bodies_never_panic() {
        let host = host();
        let template = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
            "prompt": "p", "input": ["a"], "dimensions": 3, "max_tokens": 4, "stop": ["s"], "tools": []});
        for model in ["gemini-2.5-flash", "claude-x", "meta/llama-maas"] {
            let p = authorized(model, &host);
            for body in mutations(&template) {
                for op in [Operation::Chat, Operation::Completions, Operation::Embeddings, Operation::Predict] {
                    let _ = build(&p, &host, op, model, body.clone(), true);
                }
            }
            let answer = json!({"predictions": [{"embeddings": {"values": [1], "statistics": {"token_count": 1}}}],
                "candidates": [{"content": {"parts": [{"text": "x"}]}}], "content": [{"type": "text", "text": "x"}]});
            for body in mutations(&answer) {
                let bytes = body.to_string();
                for op in [Operation::Chat, Operation::Embeddings] {
                    let reply =
                        Reply { op, status: StatusCode::OK, body: bytes.as_bytes(), model, now_ms: 0, wanted: &[] };
                    let _ = p.translate_response(reply);
                }
            }
        }
    }
}
