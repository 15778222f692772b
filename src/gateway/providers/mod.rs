//! The provider registry: one file per wire format, one `Provider` variant per provider.
//! Inside the gateway every request and response is in OpenAI's shape (the lingua franca of
//! LLM APIs); each adapter translates that to its provider's wire format and back, including
//! streams. Adding a provider = one file implementing `Adapter` + one line per match below.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod gemini;
pub mod huggingface;
pub mod mlflow;
pub mod openai;

use std::collections::HashMap;

use http::{Request, StatusCode};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::types::{Operation, Usage};
use crate::gateway::util::text::hex;
use crate::gateway::util::text::truncate;
use crate::gateway::wire::sse::SseEvent;

/// One origin call, in OpenAI's shape. `body` has no `model`: the endpoint's `model` is the
/// provider-side model name.
#[derive(Debug)]
pub struct Call<'a> {
    pub op: Operation,
    pub model: &'a str,
    pub body: Map<String, Value>,
    /// Origin base URL chosen by routing (an `origins[].url`, else `Adapter::default_base`).
    pub base_url: &'a str,
    pub stream: bool,
    /// Wall clock, for request signing (SigV4) and nothing else.
    pub now_ms: u64,
}

/// A buffered origin answer to translate.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub op: Operation,
    pub status: StatusCode,
    pub body: &'a [u8],
    /// The provider-side model name, for responses that do not carry one.
    pub model: &'a str,
    /// For `created` fields of responses that do not carry one.
    pub now_ms: u64,
}

impl Reply<'_> {
    /// The body of a 2xx answer as JSON: a non-2xx answer is an `origin_error`, a body that is
    /// not JSON a `bad_response`.
    pub fn success_json(&self) -> Result<Value> {
        if !self.status.is_success() {
            return Err(origin_error(self.status, self.body));
        }
        parse_json(self.body)
    }
}

/// An origin response translated to the OpenAI-shaped body sent to the client.
#[derive(Debug)]
pub struct Translated {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
}

/// How a streaming answer reaches an OpenAI-speaking client.
pub enum StreamMode {
    /// The origin speaks OpenAI SSE: forward bytes untouched.
    Passthrough,
    /// Translate event by event.
    Translate(StreamTranslator),
    /// The origin cannot stream (e.g. `mlflow models serve`): the gateway buffers and replays.
    Buffered,
}

/// The contract every provider file implements.
pub trait Adapter {
    /// The provider's public API base, used when the endpoint lists no `origins`.
    fn default_base(&self) -> &str;
    /// Builds the origin request for `call`; credentials come from `secrets`.
    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>>;
    /// Translates a buffered origin answer. Non-2xx answers become a `GatewayError` (use
    /// `origin_error`); a 2xx body of the wrong shape is a 502 `origin_bad_response`.
    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated>;
    /// How streamed answers are turned into OpenAI `chat.completion.chunk` events
    /// (`model` and `now_ms` as in `Reply`).
    fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode;
}

/// Incremental translation of one event stream into another. Fed one parsed origin event at
/// a time; appends client-format SSE bytes to `out` (use `sse::write_data` / `write_event`).
pub trait StreamTranslate {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>);
    /// The origin stream ended, cleanly or not: close the client stream properly
    /// (OpenAI: `data: [DONE]`; an error event first if the origin stopped mid-answer).
    fn finish(&mut self, out: &mut Vec<u8>);
    /// Usage seen so far (final once `finish` ran).
    fn usage(&self) -> Option<Usage>;
}

/// The stream translators, as an enum so the per-chunk path has no dynamic dispatch.
pub enum StreamTranslator {
    /// OpenAI format in and out: watch usage and completion, pass events through.
    OpenAiWatch(openai::StreamWatch),
    AnthropicToOpenAi(anthropic::StreamToOpenAi),
    GeminiToOpenAi(gemini::StreamToOpenAi),
    /// For Anthropic Messages clients (`/v1/messages`) of an OpenAI-shaped stream.
    OpenAiToAnthropic(anthropic::OpenAiStreamToMessages),
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match self {
            StreamTranslator::OpenAiWatch(t) => t.event(event, out),
            StreamTranslator::AnthropicToOpenAi(t) => t.event(event, out),
            StreamTranslator::GeminiToOpenAi(t) => t.event(event, out),
            StreamTranslator::OpenAiToAnthropic(t) => t.event(event, out),
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            StreamTranslator::OpenAiWatch(t) => t.finish(out),
            StreamTranslator::AnthropicToOpenAi(t) => t.finish(out),
            StreamTranslator::GeminiToOpenAi(t) => t.finish(out),
            StreamTranslator::OpenAiToAnthropic(t) => t.finish(out),
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            StreamTranslator::OpenAiWatch(t) => t.usage(),
            StreamTranslator::AnthropicToOpenAi(t) => t.usage(),
            StreamTranslator::GeminiToOpenAi(t) => t.usage(),
            StreamTranslator::OpenAiToAnthropic(t) => t.usage(),
        }
    }
}

#[derive(Debug)]
pub enum Provider {
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
    Gemini(gemini::Gemini),
    Bedrock(bedrock::Bedrock),
    Cohere(cohere::Cohere),
    HuggingFaceTgi(huggingface::Tgi),
    MlflowModelServing(mlflow::ModelServing),
}

/// Provider names accepted in `model.provider` (MLflow's spellings).
pub const PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "gemini",
    "bedrock",
    "amazon-bedrock",
    "cohere",
    "huggingface-text-generation-inference",
    "mlflow-model-serving",
];

/// Dispatches a method call to whichever adapter `$provider` holds.
macro_rules! each_provider {
    ($provider:expr, $p:ident => $call:expr) => {
        match $provider {
            Provider::OpenAi($p) => $call,
            Provider::Anthropic($p) => $call,
            Provider::Gemini($p) => $call,
            Provider::Bedrock($p) => $call,
            Provider::Cohere($p) => $call,
            Provider::HuggingFaceTgi($p) => $call,
            Provider::MlflowModelServing($p) => $call,
        }
    };
}

impl Provider {
    /// Checks `model.provider` and `model.config` at `path` (e.g. `endpoints[0].model`).
    pub fn from_config(path: &str, name: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Provider> {
        let path = format!("{path}.config");
        Some(match name {
            "openai" => Provider::OpenAi(openai::OpenAi::from_config(&path, config, issues)?),
            "anthropic" => Provider::Anthropic(anthropic::Anthropic::from_config(&path, config, issues)?),
            "gemini" => Provider::Gemini(gemini::Gemini::from_config(&path, config, issues)?),
            "bedrock" | "amazon-bedrock" => Provider::Bedrock(bedrock::Bedrock::from_config(&path, config, issues)?),
            "cohere" => Provider::Cohere(cohere::Cohere::from_config(&path, config, issues)?),
            "huggingface-text-generation-inference" => {
                Provider::HuggingFaceTgi(huggingface::Tgi::from_config(&path, config, issues)?)
            }
            "mlflow-model-serving" => {
                Provider::MlflowModelServing(mlflow::ModelServing::from_config(&path, config, issues)?)
            }
            _ => {
                let path = path.trim_end_matches(".config");
                issues.unknown(format!("{path}.provider"), "provider", name, PROVIDERS);
                return None;
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Provider::OpenAi(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
            Provider::Gemini(_) => "gemini",
            Provider::Bedrock(_) => "bedrock",
            Provider::Cohere(_) => "cohere",
            Provider::HuggingFaceTgi(_) => "huggingface-text-generation-inference",
            Provider::MlflowModelServing(_) => "mlflow-model-serving",
        }
    }

    /// Whether `model.name` must be set (some providers route by URL instead).
    pub fn needs_model_name(&self) -> bool {
        match self {
            Provider::OpenAi(p) => !p.is_azure(),
            Provider::HuggingFaceTgi(_) | Provider::MlflowModelServing(_) => false,
            _ => true,
        }
    }

    pub fn default_base(&self) -> &str {
        each_provider!(self, p => p.default_base())
    }

    pub fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        each_provider!(self, p => p.build_request(call, secrets))
    }

    pub fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        each_provider!(self, p => p.translate_response(reply))
    }

    pub fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode {
        each_provider!(self, p => p.stream_mode(op, model, now_ms))
    }
}

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
pub fn origin_error(status: StatusCode, body: &[u8]) -> GatewayError {
    let message = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let m = v
            .pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .or_else(|| v.get("detail"))?;
        m.as_str().map(str::to_owned)
    });
    let message = match message {
        Some(m) => format!("origin returned HTTP {}: {}", status.as_u16(), truncate(&m, 500)),
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

/// A 2xx body that is not what the provider documents.
pub fn bad_response(what: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("origin returned an unexpected body: {what}"))
}

/// Parses a 2xx JSON body or fails with `bad_response`.
pub fn parse_json(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| bad_response(format!("not valid JSON ({e})")))
}

/// A request body for the origin as JSON bytes.
pub fn json_body(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| GatewayError::internal(ErrorCode::EncodeFailed, e.to_string()))
}

/// The usage object of an OpenAI-shaped response, if present.
pub fn openai_usage(body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    Some(Usage {
        prompt_tokens: usage.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// The `usage` object of an OpenAI answer (`Usage::total` saturates: origin counts may be absurd).
pub fn usage_json(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total()})
}

/// The assistant `message` of a `chat.completion` choice; `tool_calls` only when there are some.
pub fn assistant_message(text: Option<String>, tool_calls: Vec<Value>) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    if let (false, Some(m)) = (tool_calls.is_empty(), message.as_object_mut()) {
        m.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    message
}

/// The `data` list of an OpenAI embeddings answer, one item per vector.
pub fn embedding_data<T: serde::Serialize>(vectors: impl IntoIterator<Item = T>) -> Vec<Value> {
    vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "embedding": embedding, "index": index}))
        .collect()
}

/// An OpenAI embeddings answer (`"object": "list"`), one item per vector.
pub fn embedding_list<T: serde::Serialize>(vectors: impl IntoIterator<Item = T>, model: &str, usage: Usage) -> Value {
    json!({
        "object": "list", "data": embedding_data(vectors), "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total()},
    })
}

/// A response id for answers that carry none: unique enough per answer, and deterministic.
pub(crate) fn synthetic_id(prefix: &str, body: &[u8], now_ms: u64) -> String {
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

/// Test scaffolding shared by the provider files' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Host secrets for tests: a fixed list of `(name, value)`; every other name is unset.
    pub(crate) struct TestSecrets(pub &'static [(&'static str, &'static str)]);

    impl Secrets for TestSecrets {
        fn secret(&self, name: &str) -> Option<String> {
            self.0.iter().find(|(n, _)| *n == name).map(|(_, value)| value.to_string())
        }
    }

    /// A host with no secrets at all.
    pub(crate) const NO_SECRETS: TestSecrets = TestSecrets(&[]);

    /// A provider's `from_config`.
    pub(crate) type FromConfig<P> = fn(&str, &Map<String, Value>, &mut Issues) -> Option<P>;

    /// The adapter `from_config` makes of `config` (at path `c`), which must raise no issue.
    pub(crate) fn adapter<P>(from_config: FromConfig<P>, config: Value) -> P {
        let mut issues = Issues::default();
        let p = from_config("c", config.as_object().unwrap(), &mut issues);
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        p.unwrap()
    }

    /// The issues `from_config` reports for `config` at path `e.config`, which it must refuse.
    pub(crate) fn config_issues<P>(from_config: FromConfig<P>, config: Value) -> Vec<String> {
        let mut issues = Issues::default();
        assert!(from_config("e.config", config.as_object().unwrap(), &mut issues).is_none());
        issues.0.iter().map(ToString::to_string).collect()
    }

    /// A call of `op` with `body` (a JSON object).
    pub(crate) fn call<'a>(
        op: Operation,
        model: &'a str,
        body: Value,
        base_url: &'a str,
        stream: bool,
        now_ms: u64,
    ) -> Call<'a> {
        Call { op, model, body: body.as_object().unwrap().clone(), base_url, stream, now_ms }
    }

    /// The JSON body of a built origin request.
    pub(crate) fn sent(req: &Request<Vec<u8>>) -> Value {
        serde_json::from_slice(req.body()).unwrap()
    }

    /// A translated answer's body, parsed, and its usage.
    pub(crate) fn parsed(t: Translated) -> (Value, Option<Usage>) {
        (serde_json::from_slice(&t.body).unwrap(), t.usage)
    }
}
