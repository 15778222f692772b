//! `cohere`: Cohere's v2 API. Chat goes to `POST /v2/chat` (its messages and function tools
//! are close to OpenAI's), completions too (the prompt becomes one user message), embeddings to
//! `POST /v2/embed` asking for float vectors. Bearer auth with `cohere_api_key`; extension
//! `cohere_api_base` (default `https://api.cohere.com`).
//!
//! Streaming is buffered: Cohere's v2 stream is SSE with its own event types
//! (`message-start`, `content-delta`, `tool-call-delta`, ...); translating them is left for
//! later, so a streamed request is answered once complete and replayed by the gateway.

use http::{header, HeaderValue, Request};
use serde_json::{json, Map, Value};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    header_value, join_url, json_post, keyed_config, map_params, param, resolve_secret, synthetic_id, KeySpec, Param,
    Shape,
};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::{assistant_message, embedding_list, usage_json};

/// MLflow's `cohere_api_key`; `cohere_api_base` is our extension.
const SPEC: KeySpec = KeySpec {
    provider: "cohere",
    key: "cohere_api_key",
    key_required: true,
    base: Some("cohere_api_base"),
    default_base: "https://api.cohere.com",
    extra: &[],
};
/// OpenAI fields under Cohere v2's names, then Cohere-native chat fields a client may send
/// through unchanged.
const CHAT_PARAMS: &[Param] = &[
    param("max_completion_tokens", "max_tokens", Shape::Count),
    param("max_tokens", "max_tokens", Shape::Count),
    param("temperature", "temperature", Shape::Number),
    param("top_p", "p", Shape::Number),
    param("top_k", "k", Shape::Any),
    param("seed", "seed", Shape::Any),
    param("frequency_penalty", "frequency_penalty", Shape::Number),
    param("presence_penalty", "presence_penalty", Shape::Number),
    param("stop", "stop_sequences", Shape::Stops),
    param("k", "k", Shape::Any),
    param("documents", "documents", Shape::Any),
    param("citation_options", "citation_options", Shape::Any),
    param("safety_mode", "safety_mode", Shape::Any),
    param("strict_tools", "strict_tools", Shape::Any),
    param("thinking", "thinking", Shape::Any),
];

#[derive(Debug)]
pub struct Cohere {
    pub api_key: SecretRef,
    pub api_base: String,
}

impl Cohere {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Cohere> {
        let keyed = keyed_config(&SPEC, path, config, issues)?;
        Some(Cohere { api_key: keyed.api_key?, api_base: keyed.api_base })
    }
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(code, message)
}

/// The text of an OpenAI `content`: a string, or the text parts of a part list.
fn content_text(content: Option<&Value>) -> Result<String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                match part.get("text").and_then(Value::as_str) {
                    Some(text) if matches!(part.get("type").and_then(Value::as_str), Some("text") | None) => {
                        texts.push(text)
                    }
                    _ => return Err(invalid(ErrorCode::UnsupportedContent, "this message takes text content only")),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(invalid(ErrorCode::InvalidMessage, "message content must be a string or a list of parts")),
    }
}

/// A user message's content: a string, or text and `image_url` parts (Cohere v2 takes both).
fn user_content(content: Option<&Value>) -> Result<Value> {
    match content {
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") | None => match part.get("text").and_then(Value::as_str) {
                    Some(text) => Ok(json!({"type": "text", "text": text})),
                    None => Err(invalid(ErrorCode::InvalidMessage, "a text content part needs a string \"text\"")),
                },
                Some("image_url") => match part.get("image_url") {
                    Some(image @ Value::Object(_)) => Ok(json!({"type": "image_url", "image_url": image})),
                    _ => Err(invalid(ErrorCode::InvalidMessage, "an image_url part needs an \"image_url\" object")),
                },
                Some(other) => Err(invalid(
                    ErrorCode::UnsupportedContent,
                    format!("content part type {other} is not supported by Cohere"),
                )),
            })
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
        other => content_text(other).map(Value::String),
    }
}

/// OpenAI messages → Cohere v2 messages.
fn cohere_messages(messages: Option<&Value>) -> Result<Vec<Value>> {
    let Some(Value::Array(messages)) = messages.filter(|m| m.as_array().is_some_and(|m| !m.is_empty())) else {
        return Err(invalid(ErrorCode::MissingField, "\"messages\" must be a non-empty list"));
    };
    messages
        .iter()
        .map(|message| match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                Ok(json!({"role": "system", "content": content_text(message.get("content"))?}))
            }
            Some("user") => Ok(json!({"role": "user", "content": user_content(message.get("content"))?})),
            Some("assistant") => {
                let mut out = Map::new();
                out.insert("role".into(), "assistant".into());
                let text = content_text(message.get("content"))?;
                let tool_calls = message.get("tool_calls").filter(|t| t.as_array().is_some_and(|t| !t.is_empty()));
                if !text.is_empty() || tool_calls.is_none() {
                    out.insert("content".into(), Value::String(text));
                }
                if let Some(calls) = tool_calls {
                    // Cohere v2 tool calls have OpenAI's shape: {id, type, function: {name, arguments}}.
                    out.insert("tool_calls".into(), calls.clone());
                }
                Ok(Value::Object(out))
            }
            Some("tool") => {
                let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
                    return Err(invalid(ErrorCode::InvalidMessage, "a tool message needs a \"tool_call_id\""));
                };
                Ok(json!({"role": "tool", "tool_call_id": id, "content": content_text(message.get("content"))?}))
            }
            Some(other) => {
                Err(invalid(ErrorCode::InvalidMessage, format!("message role \"{other}\" is not supported by Cohere")))
            }
            None => Err(invalid(ErrorCode::InvalidMessage, "each message needs a \"role\"")),
        })
        .collect()
}

/// The Cohere v2 chat body: OpenAI sampling fields renamed, tools and formats mapped.
fn chat_body(model: &str, body: &Map<String, Value>, messages: Vec<Value>) -> Result<Value> {
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(invalid(ErrorCode::UnsupportedParameter, "Cohere returns one choice: \"n\" must be 1"));
    }
    let present = |key: &str| body.get(key).filter(|v| !v.is_null()).cloned();
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    out.insert("messages".into(), Value::Array(messages));
    map_params(body, CHAT_PARAMS, &mut out)?;
    match present("response_format") {
        None => {}
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let schema = format.pointer("/json_schema/schema").cloned().unwrap_or_else(|| json!({}));
                out.insert("response_format".into(), json!({"type": "json_object", "json_schema": schema}));
            }
            _ => return Err(invalid(ErrorCode::UnsupportedParameter, "unknown \"response_format\" type")),
        },
    }
    if let Some(tools) = present("tools") {
        let Value::Array(mut tools) = tools else {
            return Err(invalid(ErrorCode::InvalidTools, "\"tools\" must be a list"));
        };
        match present("tool_choice") {
            Some(Value::String(s)) if s == "required" => {
                out.insert("tool_choice".into(), "REQUIRED".into());
            }
            Some(Value::String(s)) if s == "none" => {
                out.insert("tool_choice".into(), "NONE".into());
            }
            Some(choice @ Value::Object(_)) => {
                // One named function: offer only that tool and require a call.
                let Some(name) = choice.pointer("/function/name").and_then(Value::as_str) else {
                    return Err(invalid(ErrorCode::InvalidTools, "\"tool_choice\" must name a function"));
                };
                tools.retain(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name));
                if tools.is_empty() {
                    return Err(invalid(
                        ErrorCode::InvalidTools,
                        format!("\"tool_choice\" names \"{name}\", not in \"tools\""),
                    ));
                }
                out.insert("tool_choice".into(), "REQUIRED".into());
            }
            _ => {}
        }
        if !tools.is_empty() {
            // Cohere v2 takes OpenAI's {"type": "function", "function": {...}} tools as they are.
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    Ok(Value::Object(out))
}

fn embed_body(model: &str, body: &Map<String, Value>) -> Result<Value> {
    let texts: Vec<Value> = match body.get("input") {
        Some(text @ Value::String(_)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => items.clone(),
        Some(Value::Array(items)) if !items.is_empty() => {
            return Err(invalid(ErrorCode::UnsupportedInput, "Cohere embeds text: token-id inputs are not supported"))
        }
        _ => return Err(invalid(ErrorCode::MissingField, "\"input\" must be a string or a non-empty list of strings")),
    };
    let input_type = body.get("input_type").and_then(Value::as_str).unwrap_or("search_document");
    let mut out = json!({"model": model, "texts": texts, "input_type": input_type, "embedding_types": ["float"]});
    if let Some(obj) = out.as_object_mut() {
        if let Some(d) = body.get("dimensions").filter(|d| d.is_u64()) {
            obj.insert("output_dimension".into(), d.clone());
        }
        if let Some(t) = body.get("truncate").filter(|t| t.is_string()) {
            obj.insert("truncate".into(), t.clone());
        }
    }
    Ok(out)
}

fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some("TOOL_CALL") => "tool_calls",
        Some("ERROR_TOXIC") => "content_filter",
        // COMPLETE, STOP_SEQUENCE, and ERROR/TIMEOUT (which still carry what was generated).
        _ => "stop",
    }
}

/// Billed units when present (what Cohere charges), else the raw token counts.
fn usage_of(value: &Value) -> Usage {
    let counts = |pointer: &str| {
        let v = value.pointer(pointer)?;
        let input = v.get("input_tokens").and_then(Value::as_f64);
        let output = v.get("output_tokens").and_then(Value::as_f64);
        (input.is_some() || output.is_some()).then(|| Usage {
            prompt_tokens: input.unwrap_or(0.0) as u64,
            completion_tokens: output.unwrap_or(0.0) as u64,
        })
    };
    counts("/usage/billed_units")
        .or_else(|| counts("/usage/tokens"))
        .or_else(|| counts("/meta/billed_units"))
        .unwrap_or_default()
}

struct ChatAnswer {
    text: Option<String>,
    tool_calls: Vec<Value>,
    finish: &'static str,
    usage: Usage,
}

fn chat_answer(value: &Value) -> Result<ChatAnswer> {
    let Some(message) = value.get("message").filter(|m| m.is_object()) else {
        return Err(bad_response("expected a Cohere v2 chat answer with a \"message\" object"));
    };
    let texts: Vec<&str> = message
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str).is_none_or(|t| t == "text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let tool_calls: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|call| {
                    let arguments = match call.pointer("/function/arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => "{}".to_string(),
                    };
                    json!({
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {"name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                            "arguments": arguments},
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let text = if texts.is_empty() && !tool_calls.is_empty() { None } else { Some(texts.concat()) };
    Ok(ChatAnswer {
        text,
        tool_calls,
        finish: finish_reason(value.get("finish_reason").and_then(Value::as_str)),
        usage: usage_of(value),
    })
}

impl Adapter for Cohere {
    type Stream = NoTranslation;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let (path, payload) = match call.op {
            Operation::Chat => {
                let messages = cohere_messages(call.body.get("messages"))?;
                ("v2/chat", chat_body(call.model, &call.body, messages)?)
            }
            Operation::Completions => {
                let prompt = match call.body.get("prompt") {
                    Some(Value::String(p)) => p.clone(),
                    Some(Value::Array(ps)) if ps.len() == 1 && ps.iter().all(Value::is_string) => {
                        ps.first().and_then(Value::as_str).unwrap_or_default().to_string()
                    }
                    Some(Value::Array(_)) => {
                        return Err(invalid(
                            ErrorCode::UnsupportedParameter,
                            "Cohere takes one string prompt per request",
                        ))
                    }
                    _ => return Err(invalid(ErrorCode::MissingField, "\"prompt\" must be a string")),
                };
                let messages = vec![json!({"role": "user", "content": prompt})];
                ("v2/chat", chat_body(call.model, &call.body, messages)?)
            }
            Operation::Embeddings => ("v2/embed", embed_body(call.model, &call.body)?),
            Operation::Predict => {
                return Err(GatewayError::bad_request(
                    ErrorCode::UnsupportedOperation,
                    "cohere endpoints do not serve MLflow model predictions",
                ))
            }
        };
        let key = resolve_secret(&self.api_key, secrets)?;
        let mut request = json_post(join_url(call.base_url, path), json_body(&payload))?;
        let headers = request.headers_mut();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::AUTHORIZATION, header_value(format!("Bearer {key}"))?);
        Ok(request)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        let Reply { op, body, model, now_ms, .. } = reply;
        // Cohere errors are `{"message": "..."}`.
        let value = reply.success_json()?;
        let created = now_ms / 1000;
        let id = |prefix: &str| match value.get("id").and_then(Value::as_str) {
            Some(id) => Value::String(id.to_string()),
            None => Value::String(synthetic_id(prefix, body, now_ms)),
        };
        let (translated, usage) = match op {
            Operation::Chat => {
                let answer = chat_answer(&value)?;
                let message = assistant_message(answer.text, answer.tool_calls);
                let out = json!({
                    "id": id("chatcmpl"), "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": answer.finish}],
                    "usage": usage_json(answer.usage),
                });
                (out, answer.usage)
            }
            Operation::Completions => {
                let answer = chat_answer(&value)?;
                let out = json!({
                    "id": id("cmpl"), "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, "text": answer.text.unwrap_or_default(),
                        "finish_reason": answer.finish, "logprobs": null}],
                    "usage": usage_json(answer.usage),
                });
                (out, answer.usage)
            }
            Operation::Embeddings => {
                // v2 with embedding_types: {"embeddings": {"float": [[...]]}}; v1-style: a list.
                let list = value.get("embeddings").map(|e| e.get("float").unwrap_or(e));
                let Some(Value::Array(vectors)) =
                    list.filter(|l| l.as_array().is_some_and(|v| v.iter().all(Value::is_array)))
                else {
                    return Err(bad_response("expected {\"embeddings\": {\"float\": [[...], ...]}}"));
                };
                let usage = Usage { prompt_tokens: usage_of(&value).prompt_tokens, completion_tokens: 0 };
                (embedding_list(vectors, model, usage), usage)
            }
            Operation::Predict => return Err(bad_response("cohere does not serve predictions")),
        };
        Ok(Translated { body: json_body(&translated), usage: Some(usage), fields: None })
    }

    fn stream_mode(&self, _op: Operation, _model: &str, _now_ms: u64) -> StreamMode<Self::Stream> {
        // Cohere's v2 SSE events are not OpenAI chunks and have no translator yet.
        StreamMode::Buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::providers::test_support::{self, call, config_issues, parsed, sent, TestSecrets};
    use http::StatusCode;

    const SECRETS: TestSecrets = TestSecrets(&[("COHERE_API_KEY", "co-test")]);

    fn adapter() -> Cohere {
        test_support::adapter(Cohere::from_config, json!({"cohere_api_key": "$COHERE_API_KEY"}))
    }

    fn build(op: Operation, body: Value) -> Result<Request<Vec<u8>>> {
        let p = adapter();
        p.build_request(call(op, "command-r-plus-08-2024", body, p.default_base(), false, 0), &SECRETS)
    }

    fn translate(op: Operation, status: StatusCode, body: &[u8]) -> Result<(Value, Option<Usage>)> {
        let reply = Reply { op, status, body, model: "command-r-plus-08-2024", now_ms: 1_700_000_000_500, wanted: &[] };
        adapter().translate_response(reply).map(parsed)
    }

    #[test]
    fn config_issues_name_their_path() {
        let config = json!({"cohere_api_bse": "https://x", "cohere_api_base": "api.cohere.com"});
        let text = config_issues(Cohere::from_config, config);
        let has = |prefix: &str| text.iter().any(|t| t.starts_with(prefix));
        assert!(has("e.config.cohere_api_bse: unknown cohere config key"), "{text:?}");
        assert!(text.iter().any(|t| t.contains("did you mean \"cohere_api_base\"")), "{text:?}");
        assert!(has("e.config.cohere_api_key: is required"), "{text:?}");
        assert!(has("e.config.cohere_api_base: \"api.cohere.com\" must start with http"), "{text:?}");
        assert_eq!(adapter().default_base(), "https://api.cohere.com");
    }

    #[test]
    fn chat_request_maps_fields() {
        let body = json!({
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "max_tokens": 50, "temperature": 0.3, "top_p": 0.8, "stop": ["\n\n"], "stream": true,
            "user": "u-1", "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                "schema": {"type": "object"}}},
        });
        let req = build(Operation::Chat, body).unwrap();
        assert_eq!(req.uri(), "https://api.cohere.com/v2/chat");
        assert_eq!(req.headers()["authorization"], "Bearer co-test");
        assert_eq!(
            sent(&req),
            json!({
                "model": "command-r-plus-08-2024",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "max_tokens": 50, "temperature": 0.3, "p": 0.8, "stop_sequences": ["\n\n"],
                "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
            })
        );
        let e = build(Operation::Chat, json!({"messages": [{"role": "user", "content": "x"}], "n": 2})).unwrap_err();
        assert_eq!(e.code, "unsupported_parameter");
        assert_eq!(build(Operation::Chat, json!({"messages": []})).unwrap_err().code, "missing_field");
        let bad = json!({"messages": [{"role": "function", "content": "x"}]});
        assert_eq!(build(Operation::Chat, bad).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn tool_turns_and_tools() {
        let tool = json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}});
        let other = json!({"type": "function", "function": {"name": "other"}});
        let calls = json!([{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]);
        let body = json!({
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            ],
            "tools": [tool, other],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        });
        let v = sent(&build(Operation::Chat, body).unwrap());
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "assistant", "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            ])
        );
        assert_eq!(v["tools"], json!([tool]));
        assert_eq!(v["tool_choice"], "REQUIRED");
        let body = json!({"messages": [{"role": "user", "content": "x"}], "tools": [other], "tool_choice": "none"});
        assert_eq!(sent(&build(Operation::Chat, body).unwrap())["tool_choice"], "NONE");
    }

    #[test]
    fn completions_and_embeddings_requests() {
        let v = sent(&build(Operation::Completions, json!({"prompt": "Say hi", "max_tokens": 5})).unwrap());
        assert_eq!(
            v,
            json!({"model": "command-r-plus-08-2024", "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 5})
        );
        assert_eq!(
            build(Operation::Completions, json!({"prompt": ["a", "b"]})).unwrap_err().code,
            "unsupported_parameter"
        );

        let req = build(Operation::Embeddings, json!({"input": ["hello", "world"], "dimensions": 256})).unwrap();
        assert_eq!(req.uri(), "https://api.cohere.com/v2/embed");
        assert_eq!(
            sent(&req),
            json!({"model": "command-r-plus-08-2024", "texts": ["hello", "world"], "input_type": "search_document",
                "embedding_types": ["float"], "output_dimension": 256})
        );
        let v = sent(&build(Operation::Embeddings, json!({"input": "q", "input_type": "search_query"})).unwrap());
        assert_eq!((v["texts"].clone(), v["input_type"].clone()), (json!(["q"]), json!("search_query")));
        assert_eq!(build(Operation::Embeddings, json!({"input": [[1, 2]]})).unwrap_err().code, "unsupported_input");
        assert_eq!(build(Operation::Predict, json!({})).unwrap_err().code, "unsupported_operation");
    }

    #[test]
    fn chat_answers_become_chat_completions() {
        let body = br#"{
            "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
            "finish_reason": "COMPLETE",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello! How can I help?"}]},
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 7},
                "tokens": {"input_tokens": 71, "output_tokens": 7}}
        }"#;
        let (v, usage) = translate(Operation::Chat, StatusCode::OK, body).unwrap();
        assert_eq!(v["id"], "c14c80c3-18eb-4519-9460-6c92edd8cfb4");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["created"], 1_700_000_000);
        assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "Hello! How can I help?"}));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"], json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}));
        assert_eq!(usage, Some(Usage { prompt_tokens: 5, completion_tokens: 7 }));

        let body = br#"{"id": "x", "finish_reason": "TOOL_CALL", "message": {"role": "assistant",
            "tool_plan": "I will look up the weather.",
            "tool_calls": [{"id": "get_weather_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Toronto\"}"}}]},
            "usage": {"tokens": {"input_tokens": 30, "output_tokens": 10}}}"#;
        let (v, usage) = translate(Operation::Chat, StatusCode::OK, body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"location\":\"Toronto\"}");
        assert_eq!(usage.unwrap().total(), 40);

        for (reason, expected) in
            [("MAX_TOKENS", "length"), ("STOP_SEQUENCE", "stop"), ("ERROR_TOXIC", "content_filter")]
        {
            let body = format!(
                r#"{{"finish_reason": "{reason}", "message": {{"role": "assistant",
                "content": [{{"type": "text", "text": "x"}}]}}}}"#
            );
            let (v, _) = translate(Operation::Completions, StatusCode::OK, body.as_bytes()).unwrap();
            assert_eq!(v["object"], "text_completion");
            assert_eq!(v["choices"][0]["text"], "x");
            assert_eq!(v["choices"][0]["finish_reason"], expected);
            assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        }
    }

    #[test]
    fn embed_answers_and_errors() {
        let body = br#"{"id": "e1", "embeddings": {"float": [[0.1, 0.2], [0.3, 0.4]]}, "texts": ["a", "b"],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 2}},
            "response_type": "embeddings_by_type"}"#;
        let (v, usage) = translate(Operation::Embeddings, StatusCode::OK, body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1], json!({"object": "embedding", "embedding": [0.3, 0.4], "index": 1}));
        assert_eq!(v["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));
        assert_eq!(usage.unwrap().prompt_tokens, 2);
        let e = translate(Operation::Embeddings, StatusCode::OK, br#"{"embeddings": {"int8": [[1]]}}"#).unwrap_err();
        assert_eq!(e.code, "origin_bad_response");

        // The origin refusing the gateway's own credential is a 502 (common::origin_error).
        let e =
            translate(Operation::Chat, StatusCode::UNAUTHORIZED, br#"{"message": "invalid api token"}"#).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_GATEWAY, "origin_auth_failed"));
        let e = translate(Operation::Chat, StatusCode::TOO_MANY_REQUESTS, b"{}").unwrap_err();
        assert_eq!(e.code, "origin_rate_limited");
        let e = translate(Operation::Chat, StatusCode::INTERNAL_SERVER_ERROR, b"oops").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        let e = translate(Operation::Chat, StatusCode::OK, br#"{"text": "v1 shape"}"#).unwrap_err();
        assert_eq!(e.code, "origin_bad_response");
    }
}
