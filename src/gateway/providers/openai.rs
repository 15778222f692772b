//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Together, Mistral,
//! DeepSeek via `openai_api_base`), plus Azure OpenAI (`openai_api_type: azure|azuread`).
//! The internal shape *is* OpenAI's, so translation is setting `model` and the URL.

use http::{header, Request};
use serde_json::{Map, Value};

use super::{
    check_url, finish_request, join_url, json_body, openai_usage, parse_json, post_json, resolve_secret, string_config,
    take_api_key, Adapter, Call, Reply, StreamMode, StreamTranslate, Translated,
};
use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::sse::{self, SseEvent};

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
    pub api_key: SecretRef,
    pub api_type: ApiType,
    pub api_base: String,
    pub api_version: Option<String>,
    pub deployment: Option<String>,
    pub organization: Option<String>,
}

impl OpenAi {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<OpenAi> {
        let before = issues.0.len();
        let mut values = string_config(path, "openai", config, CONFIG_KEYS, issues);
        let api_type = match values.remove("openai_api_type").as_deref() {
            None | Some("openai") => ApiType::OpenAi,
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
        if let Some(base) = &api_base {
            check_url(path, "openai_api_base", base, issues);
        }
        if issues.0.len() != before {
            return None;
        }
        Some(OpenAi {
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

    fn path(op: Operation) -> Result<&'static str> {
        match op {
            Operation::Chat => Ok("chat/completions"),
            Operation::Completions => Ok("completions"),
            Operation::Embeddings => Ok("embeddings"),
            Operation::Predict => Err(GatewayError::bad_request(
                ErrorCode::UnsupportedOperation,
                "openai endpoints do not serve MLflow model predictions",
            )),
        }
    }
}

impl Adapter for OpenAi {
    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let key = resolve_secret(&self.api_key, secrets)?;
        let path = Self::path(call.op)?;
        let mut body = call.body;
        let mut builder = match self.api_type {
            ApiType::OpenAi => {
                body.insert("model".into(), Value::String(call.model.to_string()));
                post_json(&join_url(call.base_url, path)).header(header::AUTHORIZATION, format!("Bearer {key}"))
            }
            ApiType::Azure | ApiType::AzureAd => {
                let deployment = self.deployment.as_deref().unwrap_or_default();
                let version = self.api_version.as_deref().unwrap_or_default();
                let url = join_url(call.base_url, &format!("openai/deployments/{deployment}/{path}"));
                let builder = post_json(&format!("{url}?api-version={version}"));
                if self.api_type == ApiType::Azure {
                    builder.header("api-key", key)
                } else {
                    builder.header(header::AUTHORIZATION, format!("Bearer {key}"))
                }
            }
        };
        if call.stream && call.op != Operation::Embeddings {
            // Ask for the final usage chunk so streamed calls are accounted like buffered ones.
            let options = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
            if let Some(options) = options.as_object_mut() {
                options.entry("include_usage").or_insert(Value::Bool(true));
            }
        }
        if let Some(org) = &self.organization {
            builder = builder.header("openai-organization", org);
        }
        finish_request(builder, json_body(&body)?)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        // Already OpenAI-shaped: pass the bytes on; parse only to check them and read usage.
        let value = reply.success_json()?;
        if !value.is_object() {
            return Err(super::bad_response("not a JSON object"));
        }
        Ok(Translated { body: reply.body.to_vec(), usage: openai_usage(&value) })
    }

    fn stream_mode(&self, _op: Operation, _model: &str, _now_ms: u64) -> StreamMode {
        StreamMode::Passthrough
    }
}

/// Watches an OpenAI-format stream on its way to an OpenAI client: events pass through as
/// they are, while usage is read from the final usage chunk (requested with
/// `stream_options.include_usage`) and a stream the origin cut short is closed with an error
/// event and `[DONE]` instead of just stopping.
#[derive(Debug, Default)]
pub struct StreamWatch {
    usage: Option<Usage>,
    /// Content deltas seen: a lower bound on completion tokens if the stream is cut.
    deltas: u64,
    finished: bool,
    done: bool,
}

impl StreamWatch {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamTranslate for StreamWatch {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if event.data == "[DONE]" {
            self.done = true;
            sse::write_done(out);
            return;
        }
        if let Ok(chunk) = serde_json::from_str::<Value>(&event.data) {
            if let Some(usage) = openai_usage(&chunk).filter(|_| chunk["usage"].is_object()) {
                self.usage = Some(usage);
            }
            for choice in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
                let delta = &choice["delta"];
                if delta.get("content").and_then(Value::as_str).is_some_and(|c| !c.is_empty())
                    || choice.get("text").and_then(Value::as_str).is_some_and(|c| !c.is_empty())
                    || delta.get("tool_calls").is_some()
                {
                    self.deltas += 1;
                }
                if !choice["finish_reason"].is_null() {
                    self.finished = true;
                }
            }
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(event.data.as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if !self.finished {
            let error = serde_json::json!({"error": {"message": "origin stream ended before the answer was complete",
                "type": "upstream_error", "code": "origin_stream_cut"}});
            sse::write_data(out, &error);
        }
        sse::write_done(out);
    }

    fn usage(&self) -> Option<Usage> {
        // Without a usage chunk (cut stream, or an origin that ignores include_usage), the
        // content deltas seen are the best lower bound on what was generated.
        self.usage.or((self.deltas > 0).then_some(Usage { prompt_tokens: 0, completion_tokens: self.deltas }))
    }
}

/// Replays a whole `chat.completion` / `text_completion` body as the SSE stream OpenAI would
/// have sent (role, content, tool calls, finish reason, usage, `[DONE]`): for origins that
/// cannot stream and for cached answers.
pub fn completion_to_sse(op: Operation, body: &[u8]) -> Result<Vec<u8>> {
    let value = parse_json(body)?;
    let mut out = Vec::new();
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let created = value.get("created").cloned().unwrap_or(Value::from(0));
    let model = value.get("model").cloned().unwrap_or(Value::Null);
    let choices = value.get("choices").and_then(Value::as_array).cloned().unwrap_or_default();
    let chunk = |object: &str, choices: Value| serde_json::json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
    for choice in &choices {
        let index = choice.get("index").cloned().unwrap_or(Value::from(0));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        if op == Operation::Completions {
            let text = choice.get("text").cloned().unwrap_or(Value::from(""));
            let c = serde_json::json!([{"index": index, "text": text, "finish_reason": finish}]);
            sse::write_data(&mut out, &chunk("text_completion", c));
            continue;
        }
        let message = choice.get("message").cloned().unwrap_or_default();
        let role = message.get("role").cloned().unwrap_or(Value::from("assistant"));
        let c = serde_json::json!([{"index": index, "delta": {"role": role, "content": ""}, "finish_reason": null}]);
        sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
        if let Some(content) = message.get("content").filter(|c| !c.is_null()) {
            let c = serde_json::json!([{"index": index, "delta": {"content": content}, "finish_reason": null}]);
            sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    call["index"] = Value::from(i);
                    call
                })
                .collect();
            let c = serde_json::json!([{"index": index, "delta": {"tool_calls": calls}, "finish_reason": null}]);
            sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
        }
        let c = serde_json::json!([{"index": index, "delta": {}, "finish_reason": finish}]);
        sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
    }
    if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
        let object = if op == Operation::Completions { "text_completion" } else { "chat.completion.chunk" };
        let mut last = chunk(object, Value::Array(Vec::new()));
        last["usage"] = usage.clone();
        sse::write_data(&mut out, &last);
    }
    sse::write_done(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::providers::test_support::{self, config_issues, TestSecrets};
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

    fn reply(status: StatusCode, body: &[u8]) -> Reply<'_> {
        Reply { op: Operation::Chat, status, body, model: "gpt-4o-mini", now_ms: 0 }
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
    }
}
