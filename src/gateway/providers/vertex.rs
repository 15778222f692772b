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
use crate::gateway::ports::{Clock, Secrets, Upstream};
use crate::gateway::providers::adapter::{Adapter, Call, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    finish_request, join_url, post_json, resolve_secret, string_config, unsupported,
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
    pub async fn authorize<P: Upstream + Secrets + Clock>(&self, ports: &P, timeout_ms: u64) -> Result<()> {
        if self.token.get(ports.now_ms()).is_some() {
            return Ok(());
        }
        let account = ServiceAccount::parse(&resolve_secret(&self.credentials, ports)?)?;
        let (token, expires_at) = google_auth::exchange(ports, &account, CLOUD_PLATFORM_SCOPE, timeout_ms).await?;
        self.token.put(token, ports.now_ms(), expires_at);
        Ok(())
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
        let builder =
            post_json(&join_url(call.base_url, &path)).header(header::AUTHORIZATION, format!("Bearer {}", token.0));
        finish_request(builder, json_body(&body)?)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        match (self.family, reply.op) {
            (ModelFamily::Claude, _) => anthropic::messages_answer(reply),
            (ModelFamily::Maas, _) => passthrough_answer(reply),
            (ModelFamily::Gemini, Operation::Embeddings) => {
                let value = reply.success_json()?;
                let (answer, usage) = predict_answer(&value, reply.model)?;
                Ok(Translated { body: json_body(&answer)?, usage: Some(usage) })
            }
            (ModelFamily::Gemini, op) => {
                let value = reply.success_json()?;
                if !value.is_object() {
                    return Err(bad_response("not a JSON object"));
                }
                let (answer, usage) = gemini::generate_answer(op, &value, reply.model, reply.now_ms)?;
                Ok(Translated { body: json_body(&answer)?, usage })
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
