//! OpenAI's wire format: `openai` (and any OpenAI-compatible server via `openai_api_base`),
//! Azure OpenAI (`openai_api_type: azure|azuread`, or MLflow's provider name `azure`), and the
//! helpers every OpenAI-speaking adapter shares (`openai_compatible`'s table, Databricks,
//! Vertex AI's MaaS models). The internal shape *is* OpenAI's, so translation is setting
//! `model` and the URL.

use http::header::{self, HeaderName};
use http::Request;
use serde_json::{Map, Value};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::Result;
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    check_url, header_value, join_url, json_post, resolve_secret, string_config, take_api_key, unsupported,
};
use crate::gateway::types::Operation;
use crate::gateway::wire::json::json_body;
use crate::gateway::wire::openai::openai_usage;

const DEFAULT_BASE: &str = "https://api.openai.com/v1";
const CONFIG_KEYS: &[&str] = &[
    "openai_api_key",
    "openai_api_type",
    "openai_api_base",
    "openai_api_version",
    "openai_deployment_name",
    "openai_organization",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiType {
    OpenAi,
    /// Azure with an `api-key` header.
    Azure,
    /// Azure with an Entra ID bearer token.
    AzureAd,
}

#[derive(Debug)]
pub struct OpenAi {
    /// `openai` or `azure` (MLflow registers both names for this provider).
    pub name: &'static str,
    pub api_key: SecretRef,
    pub api_type: ApiType,
    pub api_base: String,
    pub api_version: Option<String>,
    pub deployment: Option<String>,
    pub organization: Option<String>,
}

impl OpenAi {
    /// `provider: openai`.
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<OpenAi> {
        Self::named("openai", ApiType::OpenAi, path, config, issues)
    }

    /// `provider: azure`: MLflow's `OpenAIConfig` again, with `openai_api_type` defaulting to
    /// `azure` (MLflow defaults it to `openai` under either name, which then refuses the
    /// Azure fields; the provider's name says which API is meant).
    pub fn azure_from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<OpenAi> {
        Self::named("azure", ApiType::Azure, path, config, issues)
    }

    fn named(
        name: &'static str,
        default_type: ApiType,
        path: &str,
        config: &Map<String, Value>,
        issues: &mut Issues,
    ) -> Option<OpenAi> {
        let before = issues.0.len();
        let mut values = string_config(path, name, config, CONFIG_KEYS, issues);
        // Case-insensitive, as MLflow's `OpenAIAPIType` is.
        let api_type = match values.remove("openai_api_type").map(|t| t.to_ascii_lowercase()).as_deref() {
            None => default_type,
            Some("openai") => ApiType::OpenAi,
            Some("azure") => ApiType::Azure,
            Some("azuread") => ApiType::AzureAd,
            Some(other) => {
                issues.unknown(format!("{path}.openai_api_type"), "api type", other, &["openai", "azure", "azuread"]);
                ApiType::OpenAi
            }
        };
        let api_key = take_api_key(path, "openai_api_key", config, &mut values, issues);
        let api_base = values.remove("openai_api_base");
        let api_version = values.remove("openai_api_version");
        let deployment = values.remove("openai_deployment_name");
        if api_type != ApiType::OpenAi {
            for (key, value) in [
                ("openai_api_base", &api_base),
                ("openai_deployment_name", &deployment),
                ("openai_api_version", &api_version),
            ] {
                if value.is_none() {
                    issues.push(format!("{path}.{key}"), "is required when openai_api_type is azure or azuread");
                }
            }
        }
        if api_type == ApiType::OpenAi && deployment.is_some() {
            issues.push(
                format!("{path}.openai_deployment_name"),
                "only applies when openai_api_type is azure or azuread",
            );
        }
        if api_type != ApiType::OpenAi && values.contains_key("openai_organization") {
            issues.push(format!("{path}.openai_organization"), "only applies when openai_api_type is openai");
        }
        if let Some(base) = &api_base {
            check_url(path, "openai_api_base", base, issues);
        }
        if issues.0.len() != before {
            return None;
        }
        Some(OpenAi {
            name,
            api_key: SecretRef::parse(&api_key?),
            api_type,
            api_base: api_base.unwrap_or_else(|| DEFAULT_BASE.to_string()),
            api_version,
            deployment,
            organization: values.remove("openai_organization"),
        })
    }

    pub fn is_azure(&self) -> bool {
        self.api_type != ApiType::OpenAi
    }
}

/// The path of `op` under an OpenAI-compatible base URL.
pub fn openai_path(provider: &str, op: Operation) -> Result<&'static str> {
    match op {
        Operation::Chat => Ok("chat/completions"),
        Operation::Completions => Ok("completions"),
        Operation::Embeddings => Ok("embeddings"),
        Operation::Predict => Err(unsupported(provider, op)),
    }
}

/// Asks an OpenAI-compatible origin for the final usage chunk of a stream, so streamed calls
/// are accounted like buffered ones (whatever the client said: a client's `include_usage:
/// false` must not evade token limits; the pipeline hides the chunk from a client that did not ask).
pub fn ask_stream_usage(body: &mut Map<String, Value>) {
    let options = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
    match options.as_object_mut() {
        Some(options) => {
            options.insert("include_usage".into(), Value::Bool(true));
        }
        None => *options = serde_json::json!({"include_usage": true}),
    }
}

/// An OpenAI-shaped answer passed on as it is: checked, its usage read, and the fields the
/// client's dialect wants handed over, the rest not read into a tree.
pub fn passthrough_answer(reply: Reply<'_>) -> Result<Translated> {
    if reply.wanted.is_empty() {
        // An OpenAI client takes the body as it is: only its usage is read.
        let usage = reply.success_usage()?;
        return Ok(Translated { body: reply.body.to_vec(), usage, fields: None });
    }
    // The dialects' fields (`wire::openai::ANSWER_FIELDS`) include `usage`.
    let kept = reply.success_object_keeping(reply.wanted)?;
    let usage = openai_usage(&kept);
    Ok(Translated { body: reply.body.to_vec(), usage, fields: Some(kept) })
}

/// OpenAI's reasoning model families (`o1`, `o3`, `o4`, `gpt-5`, with any suffix) accept only
/// `max_completion_tokens`; everything else, OpenAI-compatible servers included, reads
/// `max_tokens`.
fn takes_max_completion_tokens(model: &str) -> bool {
    let model = model.rsplit('/').next().unwrap_or(model).as_bytes();
    ["o1", "o3", "o4", "gpt-5"].iter().any(|family| {
        let Some((head, rest)) = model.split_at_checked(family.len()) else { return false };
        head.eq_ignore_ascii_case(family.as_bytes()) && matches!(rest.first(), None | Some(b'-' | b'.' | b'_'))
    })
}

impl Adapter for OpenAi {
    type Stream = NoTranslation;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let key = resolve_secret(&self.api_key, secrets)?;
        let path = openai_path(self.name, call.op)?;
        let mut body = call.body;
        let (url, auth) = match self.api_type {
            ApiType::OpenAi => {
                body.insert("model".into(), Value::String(call.model.to_string()));
                (join_url(call.base_url, path), (header::AUTHORIZATION, ["Bearer ", &key].concat()))
            }
            ApiType::Azure | ApiType::AzureAd => {
                let deployment = self.deployment.as_deref().unwrap_or_default();
                let version = self.api_version.as_deref().unwrap_or_default();
                let url = join_url(call.base_url, &format!("openai/deployments/{deployment}/{path}"));
                let auth = if self.api_type == ApiType::Azure {
                    (HeaderName::from_static("api-key"), key)
                } else {
                    (header::AUTHORIZATION, format!("Bearer {key}"))
                };
                (format!("{url}?api-version={version}"), auth)
            }
        };
        // Azure endpoints may leave `model.name` empty: the deployment then names the model.
        let family = if call.model.is_empty() { self.deployment.as_deref().unwrap_or_default() } else { call.model };
        if call.op == Operation::Chat && takes_max_completion_tokens(family) {
            // The gateway's internal spelling is `max_tokens`; reasoning models refuse it.
            if let Some(limit) = body.remove("max_tokens") {
                body.insert("max_completion_tokens".into(), limit);
            }
        }
        if call.stream && call.op != Operation::Embeddings {
            ask_stream_usage(&mut body);
        }
        // Only the fields set above differ from the body the pipeline prepared.
        let bytes = match call.written {
            Some(written) => written.rewrite_bytes(&body, |k| {
                ["model", "max_tokens", "max_completion_tokens", "stream_options"].contains(&k)
            }),
            None => json_body(&body),
        };
        // Freed by code compiled for speed (a large request's tree costs about as much to free
        // as to write).
        edge_scan::tree::free(body);
        let mut request = json_post(url, bytes)?;
        let headers = request.headers_mut();
        headers.append(auth.0, header_value(auth.1)?);
        if let Some(org) = &self.organization {
            headers.append(HeaderName::from_static("openai-organization"), header_value(org.as_str())?);
        }
        Ok(request)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        passthrough_answer(reply)
    }

    fn stream_mode(&self, _op: Operation, _model: &str, _now_ms: u64) -> StreamMode<Self::Stream> {
        StreamMode::Passthrough
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::providers::test_support::{self, config_issues, TestSecrets};
    use crate::gateway::wire::openai::completion_to_sse;

    use http::StatusCode;
    use serde_json::json;

    const SECRETS: TestSecrets = TestSecrets(&[("OPENAI_API_KEY", "sk-test")]);

    fn adapter(config: Value) -> OpenAi {
        test_support::adapter(OpenAi::from_config, config)
    }

    fn call(op: Operation, base: &str, body: Value, stream: bool) -> Call<'_> {
        test_support::call(op, "gpt-4o-mini", body, base, stream, 0)
    }

    #[test]
    fn builds_openai_request_with_provider_model() {
        let p = adapter(json!({"openai_api_key": "$OPENAI_API_KEY"}));
        let body = json!({"messages": [{"role": "user", "content": "hi"}]});
        let req = p.build_request(call(Operation::Chat, "http://127.0.0.1:9/v1/", body, false), &SECRETS).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(req.headers()["authorization"], "Bearer sk-test");
        let sent: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini");
        assert!(sent.get("stream_options").is_none());
    }

    #[test]
    fn streaming_requests_ask_for_usage() {
        let p = adapter(json!({"openai_api_key": "$OPENAI_API_KEY"}));
        let req =
            p.build_request(call(Operation::Chat, "http://o/v1", json!({"stream": true}), true), &SECRETS).unwrap();
        let sent: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    }

    /// M7: reasoning models (o1, o3, o4, gpt-5 families) reject `max_tokens`; they get
    /// `max_completion_tokens`. Other models keep `max_tokens` (what OpenAI-compatible servers read).
    #[test]
    fn output_token_limit_uses_the_field_the_model_family_takes() {
        let p = adapter(json!({"openai_api_key": "$OPENAI_API_KEY"}));
        let body = json!({"messages": [], "max_tokens": 100});
        for (model, field) in [
            ("o1", "max_completion_tokens"),
            ("o3-mini", "max_completion_tokens"),
            ("o4-mini-2025-04-16", "max_completion_tokens"),
            ("gpt-5-nano", "max_completion_tokens"),
            ("gpt-4o-mini", "max_tokens"),
            ("llama-3.1-8b", "max_tokens"),
            ("o1x-not-a-family", "max_tokens"),
            ("O3-Mini", "max_completion_tokens"),
            ("openai/gpt-5.1", "max_completion_tokens"),
            ("o", "max_tokens"),
        ] {
            let call = test_support::call(Operation::Chat, model, body.clone(), "http://o/v1", false, 0);
            let sent = test_support::sent(&p.build_request(call, &SECRETS).unwrap());
            assert_eq!(sent[field], 100, "{model}: {sent}");
            let other = if field == "max_tokens" { "max_completion_tokens" } else { "max_tokens" };
            assert!(sent.get(other).is_none(), "{model}: {sent}");
        }
        // The legacy completions API only knows `max_tokens`.
        let call = test_support::call(Operation::Completions, "o3-mini", body, "http://o/v1", false, 0);
        assert_eq!(test_support::sent(&p.build_request(call, &SECRETS).unwrap())["max_tokens"], 100);
    }

    #[test]
    fn builds_azure_request() {
        let p = adapter(json!({"openai_api_key": "$OPENAI_API_KEY", "openai_api_type": "azure",
            "openai_api_base": "https://x.openai.azure.com", "openai_deployment_name": "dep",
            "openai_api_version": "2024-06-01"}));
        let req = p.build_request(call(Operation::Embeddings, p.default_base(), json!({}), false), &SECRETS).unwrap();
        assert_eq!(req.uri(), "https://x.openai.azure.com/openai/deployments/dep/embeddings?api-version=2024-06-01");
        assert_eq!(req.headers()["api-key"], "sk-test");
        assert!(!serde_json::from_slice::<Value>(req.body()).unwrap().as_object().unwrap().contains_key("model"));
    }

    #[test]
    fn missing_secret_names_the_reference_only() {
        let p = adapter(json!({"openai_api_key": "$NOT_SET"}));
        let err = p.build_request(call(Operation::Chat, "http://o", json!({}), false), &SECRETS).unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.message.contains("$NOT_SET"));
    }

    #[test]
    fn config_issues_name_their_path() {
        let config = json!({"openai_api_key": "k", "openai_api_type": "azure", "openai_api_bse": "x"});
        let text = config_issues(OpenAi::from_config, config);
        assert!(
            text.iter().any(|t| t.starts_with("e.config.openai_api_bse: unknown openai config key")
                && t.contains("did you mean \"openai_api_base\"")),
            "{text:?}"
        );
        assert!(
            text.contains(
                &"e.config.openai_deployment_name: is required when openai_api_type is azure or azuread".to_string()
            ),
            "{text:?}"
        );
    }

    #[test]
    fn fields_of_the_other_api_type_are_refused_as_mlflow_does() {
        let text = config_issues(OpenAi::from_config, json!({"openai_api_key": "k", "openai_deployment_name": "d"}));
        assert_eq!(text, ["e.config.openai_deployment_name: only applies when openai_api_type is azure or azuread"]);
        let config = json!({"openai_api_key": "k", "openai_api_type": "AzureAD", "openai_api_base": "https://x",
            "openai_deployment_name": "d", "openai_api_version": "v", "openai_organization": "org"});
        let text = config_issues(OpenAi::from_config, config);
        assert_eq!(text, ["e.config.openai_organization: only applies when openai_api_type is openai"]);
        let azure = test_support::adapter(
            OpenAi::azure_from_config,
            json!({"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "https://x.openai.azure.com",
                "openai_deployment_name": "d", "openai_api_version": "2024-10-21"}),
        );
        assert_eq!((azure.name, azure.api_type), ("azure", ApiType::Azure));
        let req = azure.build_request(call(Operation::Chat, azure.default_base(), json!({}), true), &SECRETS).unwrap();
        assert_eq!(
            req.uri(),
            "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(req.headers()["api-key"], "sk-test");
    }

    fn reply(status: StatusCode, body: &[u8]) -> Reply<'_> {
        Reply { op: Operation::Chat, status, body, model: "gpt-4o-mini", now_ms: 0, wanted: &[] }
    }

    #[test]
    fn completion_replays_as_openai_stream() {
        let body = json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        let sse = completion_to_sse(Operation::Chat, &serde_json::to_vec(&body).unwrap()).unwrap();
        let mut parser = crate::gateway::wire::sse::SseParser::new();
        let events = parser.push(&sse);
        let data: Vec<Value> =
            events.iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect();
        assert_eq!(events.last().unwrap().data, "[DONE]");
        assert_eq!(data[1]["choices"][0]["delta"]["content"], "hi there");
        assert_eq!(data[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(data[3]["usage"]["total_tokens"], 3);
        assert!(data.iter().all(|d| d["object"] == "chat.completion.chunk" && d["id"] == "c1"));
    }

    /// L2: an origin's 401/403 is about the gateway's own credential: never relayed (OpenAI's
    /// text carries a masked fragment of the operator's key), and not a 401 the client would
    /// take for its own key. Other origin texts are relayed without key-like tokens or URLs.
    #[test]
    fn origin_error_texts_leak_no_credential() {
        let p = adapter(json!({"openai_api_key": "k"}));
        let openai_401 = br#"{"error":{"message":"Incorrect API key provided: sk-proj-Ab12*******************************Yz9Q. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let e = p.translate_response(reply(StatusCode::UNAUTHORIZED, openai_401)).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_GATEWAY, "origin_auth_failed"));
        assert!(!e.message.contains("sk-") && !e.message.contains("***"), "{}", e.message);
        let e = p
            .translate_response(reply(StatusCode::FORBIDDEN, br#"{"error":{"message":"key AIzaSyLEAK denied"}}"#))
            .unwrap_err();
        assert!(!e.message.contains("AIza"), "{}", e.message);
        let body = br#"{"error":{"message":"model m not found at http://10.0.0.7:9000/v1 for key sk-live-0123456789abcdefghij (token ghp_abcdefghijklmnopqrstuvwxyz0123)"}}"#;
        let e = p.translate_response(reply(StatusCode::NOT_FOUND, body)).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        for leak in ["10.0.0.7", "sk-live", "ghp_"] {
            assert!(!e.message.contains(leak), "{leak}: {}", e.message);
        }
        assert!(e.message.contains("model m not found"), "{}", e.message);
    }

    #[test]
    fn responses_pass_through_with_usage_and_errors_map() {
        let p = adapter(json!({"openai_api_key": "k"}));
        let ok = br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        let t = p.translate_response(reply(StatusCode::OK, ok)).unwrap();
        assert_eq!(t.body, ok.to_vec());
        assert_eq!(t.usage.unwrap().total(), 7);
        let e =
            p.translate_response(reply(StatusCode::BAD_REQUEST, br#"{"error":{"message":"bad temp"}}"#)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("bad temp"));
        let e = p.translate_response(reply(StatusCode::INTERNAL_SERVER_ERROR, b"<html>")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        let e = p.translate_response(reply(StatusCode::OK, b"{\"trunc")).unwrap_err();
        assert_eq!(e.code, "origin_bad_response");
        // Read without a tree, as with one: `usage: null` counts zero, none is none, a body
        // that is not an object is refused.
        let usage = |body: &[u8]| p.translate_response(reply(StatusCode::OK, body)).map(|t| t.usage);
        assert_eq!(
            usage(br#"{"usage":null,"choices":[{"message":{"content":"{\"usage\":1}"}}]}"#).unwrap().unwrap().total(),
            0
        );
        assert!(usage(br#"{"choices":[],"u\u0073age":{"prompt_tokens":2}}"#).unwrap().is_some());
        assert!(usage(br#"{"choices":[{"usage":{"prompt_tokens":2}}]}"#).unwrap().is_none());
        assert!(usage(b"[1]").unwrap_err().message.contains("not a JSON object"));
    }
}
