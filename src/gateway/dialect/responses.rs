//! OpenAI Responses API clients (`POST /v1/responses`, `GET|DELETE /v1/responses/{id}`) in
//! front of any chat endpoint.
//!
//! * `read` turns a Responses request into the internal chat shape plus a `Turn`: what the
//!   answer echoes, this turn's input as chat messages (kept for `previous_response_id`) and
//!   whether the response is stored.
//! * `render` turns the chat answer into a `response` object; `ChatStreamToResponses` turns
//!   chat chunks into the typed events the SDKs parse (`response.created` …
//!   `response.completed`, with `sequence_number`s).
//! * An endpoint whose origin speaks Responses itself (`responses: passthrough`) gets the
//!   request back in Responses form (`passthrough_request`, built from the *prepared* chat
//!   body, so templates, defaults and guardrails still apply) and its answer or event stream
//!   as it is (`ResponsesWatch` reads usage and the final response on the way).
//! * `Keep` is a response to store (KV `resp:<tenant>:<id>`, see `pipeline::stored`); stored
//!   records carry the conversation as chat messages so a later turn can continue it.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::Usage;
use crate::gateway::wire::json::{bad_response, json_body, parse_json};
use crate::gateway::wire::openai::{invalid, number, openai_usage, take};
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;

/// Most input items one request may carry.
pub const MAX_INPUT_ITEMS: usize = 1024;
/// Most content parts in one message or tool output.
pub const MAX_PARTS: usize = 256;
/// Most tools one request may declare.
pub const MAX_TOOLS: usize = 128;
/// Most chat messages a conversation continued with `previous_response_id` may reach.
pub const MAX_CONVERSATION: usize = 2048;
/// Largest stored record (bytes); a larger one is not stored (and cannot be continued).
pub const MAX_RECORD_BYTES: usize = 8 << 20;
/// Longest response id accepted in a path or `previous_response_id`.
const MAX_ID_LEN: usize = 128;

/// What every `response` object of one request repeats: its id, time and echoed fields.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// `resp_…`, assigned by the pipeline (random) once the request is admitted.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Request fields the `response` object echoes (instructions, tools, text, …).
    pub echo: Map<String, Value>,
    pub previous_response_id: Option<String>,
    /// `store` (default true): keep the response for `GET` and `previous_response_id`.
    pub store: bool,
}

/// One Responses request, as far as its answer and its storage need it.
#[derive(Debug, Default)]
pub struct Turn {
    pub head: Head,
    /// Whether `instructions` became the first (system) message of the chat body.
    pub has_instructions: bool,
    /// This turn's input as chat messages (instructions excluded: they do not carry over).
    pub input: Vec<Value>,
    /// The conversation so far, from `previous_response_id` (chat messages).
    pub history: Vec<Value>,
    /// The endpoint's origin speaks Responses: request and answer pass through.
    pub passthrough: bool,
    /// Responses-only request fields kept for a passthrough origin (reasoning, include, …).
    pub native: Map<String, Value>,
    /// The final `response` once known (a buffered answer's, or a stream's at its end): what
    /// `Keep` stores.
    pub finished: Rc<RefCell<Option<Value>>>,
}

fn field_error(path: &str, problem: &str) -> GatewayError {
    invalid(path, problem)
}

fn unsupported(path: &str, problem: &str) -> GatewayError {
    GatewayError::bad_request(ErrorCode::UnsupportedParameter, format!("{path}: {problem}"))
}

/// A `resp_…` id as the gateway mints them, or an origin's (passthrough): short, and safe in a
/// KV key.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The KV key of a stored response: one prefix per tenant.
pub fn kv_key(tenant: &str, id: &str) -> String {
    format!("resp:{tenant}:{id}")
}

pub fn not_found(id: &str) -> GatewayError {
    GatewayError::not_found(
        ErrorCode::ResponseNotFound,
        format!("Response with id '{}' not found.", crate::gateway::util::text::truncate(id, MAX_ID_LEN)),
    )
}

pub fn previous_not_found(id: &str) -> GatewayError {
    GatewayError::not_found(
        ErrorCode::PreviousResponseNotFound,
        format!("Previous response with id '{}' not found.", crate::gateway::util::text::truncate(id, MAX_ID_LEN)),
    )
}

// --- reading a request ---------------------------------------------------------------------

/// A Responses request → (endpoint name, chat body, turn). Validation errors are 400s naming
/// the field (`input.3.content.0.type: …`).
pub fn read(mut body: Map<String, Value>) -> Result<(String, Map<String, Value>, Turn)> {
    let name = match body.remove("model") {
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(_) => {
            return Err(GatewayError::bad_request(
                ErrorCode::InvalidModel,
                "model: must be a string naming an endpoint",
            ))
        }
        None => {
            return Err(GatewayError::bad_request(
                ErrorCode::MissingModel,
                "model: is required: name a configured endpoint",
            ))
        }
    };
    for (key, why) in [
        ("background", "background responses are not supported by this gateway"),
        ("conversation", "conversations are not supported; continue with previous_response_id"),
        ("prompt", "stored prompts are not supported; send input (and instructions)"),
    ] {
        match take(&mut body, key) {
            None | Some(Value::Bool(false)) => {}
            Some(_) => return Err(unsupported(key, why)),
        }
    }
    let mut turn = Turn { head: Head { store: true, ..Head::default() }, ..Turn::default() };
    let mut chat = Map::new();
    let mut messages = Vec::new();

    let previous = match take(&mut body, "previous_response_id") {
        None => None,
        Some(Value::String(id)) if valid_id(&id) => Some(id),
        Some(Value::String(id)) => return Err(previous_not_found(&id)),
        Some(_) => return Err(field_error("previous_response_id", "must be a string")),
    };
    match take(&mut body, "instructions") {
        None => {}
        Some(Value::String(s)) => {
            turn.head.echo.insert("instructions".into(), Value::String(s.clone()));
            messages.push(json!({"role": "system", "content": s}));
            turn.has_instructions = true;
        }
        Some(_) => return Err(field_error("instructions", "must be a string")),
    }
    let input = match take(&mut body, "input") {
        Some(Value::String(s)) => vec![json!({"role": "user", "content": s})],
        Some(Value::Array(items)) if items.len() > MAX_INPUT_ITEMS => {
            return Err(field_error("input", &format!("at most {MAX_INPUT_ITEMS} items are allowed")))
        }
        Some(Value::Array(items)) if items.is_empty() && previous.is_none() => {
            return Err(field_error("input", "at least one item is required"))
        }
        Some(Value::Array(items)) => input_items(items)?,
        Some(_) => return Err(field_error("input", "must be a string or a list of input items")),
        None if previous.is_some() => Vec::new(),
        None => return Err(field_error("input", "Field required")),
    };
    turn.input = input;
    messages.extend(turn.input.iter().cloned());
    chat.insert("messages".into(), Value::Array(messages));

    if let Some(tools) = take(&mut body, "tools") {
        let (chat_tools, echoed) = read_tools(tools)?;
        if !chat_tools.is_empty() {
            chat.insert("tools".into(), Value::Array(chat_tools));
        }
        turn.head.echo.insert("tools".into(), Value::Array(echoed));
    }
    if let Some(choice) = take(&mut body, "tool_choice") {
        let mapped = read_tool_choice(&choice)?;
        if chat.contains_key("tools") {
            chat.insert("tool_choice".into(), mapped);
        }
        turn.head.echo.insert("tool_choice".into(), choice);
    }
    if let Some(text) = take(&mut body, "text") {
        if let Some(format) = read_text_format(&text)? {
            chat.insert("response_format".into(), format);
        }
        turn.head.echo.insert("text".into(), text);
    }
    if let Some(value) = take(&mut body, "max_output_tokens") {
        let n = value
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| field_error("max_output_tokens", "must be a positive integer"))?;
        chat.insert("max_tokens".into(), n.into());
        turn.head.echo.insert("max_output_tokens".into(), n.into());
    }
    for key in ["temperature", "top_p"] {
        if let Some(value) = take(&mut body, key) {
            number(key, &value)?;
            chat.insert(key.into(), value.clone());
            turn.head.echo.insert(key.into(), value);
        }
    }
    if let Some(value) = take(&mut body, "parallel_tool_calls") {
        let flag = value.as_bool().ok_or_else(|| field_error("parallel_tool_calls", "must be a boolean"))?;
        if chat.contains_key("tools") {
            chat.insert("parallel_tool_calls".into(), Value::Bool(flag));
        }
        turn.head.echo.insert("parallel_tool_calls".into(), Value::Bool(flag));
    }
    if let Some(value) = take(&mut body, "stream") {
        let stream = value.as_bool().ok_or_else(|| field_error("stream", "must be a boolean"))?;
        chat.insert("stream".into(), Value::Bool(stream));
    }
    if let Some(value) = take(&mut body, "store") {
        turn.head.store = value.as_bool().ok_or_else(|| field_error("store", "must be a boolean"))?;
    }
    for key in ["user", "safety_identifier"] {
        match take(&mut body, key) {
            None => {}
            Some(Value::String(s)) => {
                chat.entry("user").or_insert_with(|| Value::String(s.clone()));
                turn.head.echo.insert(key.into(), Value::String(s));
            }
            Some(_) => return Err(field_error(key, "must be a string")),
        }
    }
    match take(&mut body, "metadata") {
        None => {}
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            turn.head.echo.insert("metadata".into(), Value::Object(m));
        }
        Some(_) => return Err(field_error("metadata", "must be an object of at most 16 string values")),
    }
    if let Some(reasoning) = take(&mut body, "reasoning") {
        let effort = reasoning.get("effort").filter(|e| !e.is_null());
        match effort {
            None => {}
            Some(Value::String(e)) => {
                chat.insert("reasoning_effort".into(), Value::String(e.clone()));
            }
            Some(_) => return Err(field_error("reasoning.effort", "must be a string")),
        }
        turn.native.insert("reasoning".into(), reasoning.clone());
        turn.head.echo.insert("reasoning".into(), reasoning);
    }
    match take(&mut body, "truncation") {
        None => {}
        Some(Value::String(t)) if t == "auto" || t == "disabled" => {
            turn.native.insert("truncation".into(), Value::String(t.clone()));
            turn.head.echo.insert("truncation".into(), Value::String(t));
        }
        Some(_) => return Err(field_error("truncation", "must be \"auto\" or \"disabled\"")),
    }
    if let Some(include) = take(&mut body, "include") {
        turn.native.insert("include".into(), include);
    }
    if let Some(tier) = take(&mut body, "service_tier") {
        chat.insert("service_tier".into(), tier);
    }
    // stream_options (obfuscation), prompt_cache_key, top_logprobs, max_tool_calls and unknown
    // fields have no chat counterpart: dropped.
    turn.head.previous_response_id = previous;
    Ok((name, chat, turn))
}

fn input_items(items: Vec<Value>) -> Result<Vec<Value>> {
    let mut chat: Vec<Value> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("input.{i}");
        let Value::Object(mut item) = item else {
            return Err(field_error(&path, "must be an object"));
        };
        let kind = match item.get("type") {
            None | Some(Value::Null) => "message".to_string(),
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(field_error(&format!("{path}.type"), "must be a string")),
        };
        match kind.as_str() {
            "message" => chat.push(message_item(&mut item, &path)?),
            "function_call" => {
                let call_id = string_field(&item, "call_id", &path)?;
                let name = string_field(&item, "name", &path)?;
                let arguments = match item.get("arguments") {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(field_error(&format!("{path}.arguments"), "must be a JSON string")),
                };
                let call =
                    json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
                // Calls of one assistant turn are consecutive items: they share one message.
                let joins = chat.last().is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
                match chat.last_mut().filter(|_| joins).and_then(Value::as_object_mut) {
                    Some(last) => {
                        let calls = last.entry("tool_calls").or_insert_with(|| Value::Array(Vec::new()));
                        if let Some(calls) = calls.as_array_mut() {
                            calls.push(call);
                        }
                    }
                    None => chat.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let call_id = string_field(&item, "call_id", &path)?;
                let output = match item.remove("output") {
                    Some(Value::String(s)) => s,
                    Some(Value::Array(parts)) if parts.len() <= MAX_PARTS => parts
                        .iter()
                        .enumerate()
                        .map(|(j, p)| match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text") => {
                                Ok(p.get("text").and_then(Value::as_str).unwrap_or_default())
                            }
                            _ => Err(field_error(
                                &format!("{path}.output.{j}"),
                                "only text parts are supported in function call outputs",
                            )),
                        })
                        .collect::<Result<Vec<_>>>()?
                        .join("\n"),
                    Some(Value::Array(_)) => {
                        return Err(field_error(&format!("{path}.output"), &format!("at most {MAX_PARTS} parts")))
                    }
                    Some(_) => {
                        return Err(field_error(&format!("{path}.output"), "must be a string or a list of parts"))
                    }
                    None => return Err(field_error(&format!("{path}.output"), "Field required")),
                };
                chat.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            // Reasoning summaries from an earlier answer: no chat counterpart.
            "reasoning" => {}
            "item_reference" => {
                return Err(unsupported(&path, "item references are not supported; send the item itself"))
            }
            other => {
                return Err(unsupported(&format!("{path}.type"), &format!("unsupported input item type \"{other}\"")))
            }
        }
    }
    Ok(chat)
}

fn string_field(item: &Map<String, Value>, key: &str, path: &str) -> Result<String> {
    match item.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(field_error(&format!("{path}.{key}"), "must be a non-empty string")),
        None => Err(field_error(&format!("{path}.{key}"), "Field required")),
    }
}

/// A `message` input item (an easy message or a full one) → a chat message.
fn message_item(item: &mut Map<String, Value>, path: &str) -> Result<Value> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant" | "system" | "developer")) => role.to_string(),
        _ => {
            return Err(field_error(
                &format!("{path}.role"),
                "must be \"user\", \"assistant\", \"system\" or \"developer\"",
            ))
        }
    };
    let content = take(item, "content").ok_or_else(|| field_error(&format!("{path}.content"), "Field required"))?;
    let path = format!("{path}.content");
    let parts = match content {
        Value::String(s) => {
            let role = if role == "developer" { "system" } else { role.as_str() };
            return Ok(json!({"role": role, "content": s}));
        }
        Value::Array(parts) if parts.len() > MAX_PARTS => {
            return Err(field_error(&path, &format!("at most {MAX_PARTS} parts are allowed")))
        }
        Value::Array(parts) => parts,
        _ => return Err(field_error(&path, "must be a string or a list of content parts")),
    };
    let mut chat_parts = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let path = format!("{path}.{j}");
        let text = || {
            part.get("text")
                .and_then(Value::as_str)
                .map(|t| json!({"type": "text", "text": t}))
                .ok_or_else(|| field_error(&format!("{path}.text"), "Field required"))
        };
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => chat_parts.push(text()?),
            Some("refusal") => {
                let refusal = part.get("refusal").and_then(Value::as_str).unwrap_or_default();
                chat_parts.push(json!({"type": "text", "text": refusal}));
            }
            Some("input_image") if role == "user" => {
                if part.get("file_id").is_some_and(|f| !f.is_null()) {
                    return Err(unsupported(&format!("{path}.file_id"), "file ids are not supported; send image_url"));
                }
                let url = part
                    .get("image_url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| field_error(&format!("{path}.image_url"), "Field required"))?;
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").and_then(Value::as_str) {
                    image["detail"] = Value::String(detail.to_string());
                }
                chat_parts.push(json!({"type": "image_url", "image_url": image}));
            }
            Some("input_file") if role == "user" => {
                let Some(data) = part.get("file_data").and_then(Value::as_str) else {
                    return Err(unsupported(&path, "only inline files (file_data) are supported"));
                };
                let name = part.get("filename").and_then(Value::as_str).unwrap_or("file");
                chat_parts.push(json!({"type": "file", "file": {"file_data": data, "filename": name}}));
            }
            Some(other) => {
                return Err(field_error(
                    &format!("{path}.type"),
                    &format!("unsupported content part type \"{other}\" in a {role} message"),
                ))
            }
            None => return Err(field_error(&format!("{path}.type"), "Field required")),
        }
    }
    let all_text = chat_parts.iter().all(|p| p.get("type").and_then(Value::as_str) == Some("text"));
    if role != "user" || (all_text && chat_parts.len() <= 1) {
        // System and assistant turns are text: their parts join into one string.
        if !all_text {
            return Err(field_error(&path, &format!("a {role} message may only hold text")));
        }
        let text: Vec<&str> = chat_parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
        let role = if role == "developer" { "system" } else { role.as_str() };
        return Ok(json!({"role": role, "content": text.join("")}));
    }
    Ok(json!({"role": "user", "content": chat_parts}))
}

/// Function tools → (chat tools, the tools as the answer echoes them).
fn read_tools(tools: Value) -> Result<(Vec<Value>, Vec<Value>)> {
    let Value::Array(tools) = tools else {
        return Err(field_error("tools", "must be a list"));
    };
    if tools.len() > MAX_TOOLS {
        return Err(field_error("tools", &format!("at most {MAX_TOOLS} tools are allowed")));
    }
    let mut chat = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools.{i}");
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(unsupported(
                    &format!("{path}.type"),
                    &format!("only function tools are supported (got \"{other}\")"),
                ))
            }
            None => return Err(field_error(&format!("{path}.type"), "Field required")),
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| field_error(&format!("{path}.name"), "Field required"))?;
        let mut function = Map::new();
        function.insert("name".into(), Value::String(name.to_string()));
        if let Some(d) = tool.get("description").filter(|d| d.is_string()) {
            function.insert("description".into(), d.clone());
        }
        match tool.get("parameters") {
            None | Some(Value::Null) => {}
            Some(p @ Value::Object(_)) => {
                function.insert("parameters".into(), p.clone());
            }
            Some(_) => return Err(field_error(&format!("{path}.parameters"), "must be a JSON schema object")),
        }
        if let Some(strict) = tool.get("strict").filter(|s| s.is_boolean()) {
            function.insert("strict".into(), strict.clone());
        }
        chat.push(json!({"type": "function", "function": function}));
    }
    Ok((chat, tools))
}

fn read_tool_choice(choice: &Value) -> Result<Value> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(choice.clone()),
        Value::Object(o) => match (o.get("type").and_then(Value::as_str), o.get("name").and_then(Value::as_str)) {
            (Some("function"), Some(name)) => Ok(json!({"type": "function", "function": {"name": name}})),
            (Some("function"), None) => Err(field_error("tool_choice.name", "Field required")),
            (Some(other), _) => Err(unsupported(
                "tool_choice.type",
                &format!("only function tool choices are supported (got \"{other}\")"),
            )),
            (None, _) => Err(field_error("tool_choice.type", "Field required")),
        },
        _ => Err(field_error("tool_choice", "must be \"none\", \"auto\", \"required\" or a function choice")),
    }
}

/// `text.format` → the chat `response_format` (`None` for plain text).
fn read_text_format(text: &Value) -> Result<Option<Value>> {
    let Some(text) = text.as_object() else {
        return Err(field_error("text", "must be an object"));
    };
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = format
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| field_error("text.format.name", "Field required"))?;
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| field_error("text.format.schema", "must be a JSON schema object"))?;
            let mut json_schema = json!({"name": name, "schema": schema});
            for key in ["strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    json_schema[key] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": json_schema})))
        }
        _ => Err(field_error("text.format.type", "must be \"text\", \"json_object\" or \"json_schema\"")),
    }
}

// --- the answer ----------------------------------------------------------------------------

/// `(status, incomplete reason)` for a chat `finish_reason`.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// Responses' `usage` object.
pub fn usage_object(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total(),
    })
}

/// Usage of a `response` object (passthrough answers and events).
pub fn response_usage(response: &Value) -> Option<Usage> {
    let usage = response.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: usage.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Item ids derive from the response id: `msg_<id>` and `fc_<id>_<n>`.
fn item_id(prefix: &str, response_id: &str, n: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    if n == 0 && prefix == "msg" {
        format!("msg_{base}")
    } else {
        format!("{prefix}_{base}_{n}")
    }
}

fn message_output(id: String, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn function_output(id: String, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

impl Head {
    /// The `response` object with `status`, `output` and `usage` filled in.
    pub fn response_object(&self, model: &str, status: &str, output: Vec<Value>, usage: Option<Usage>) -> Value {
        let echo = |key: &str, default: Value| self.echo.get(key).cloned().unwrap_or(default);
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": echo("instructions", Value::Null),
            "max_output_tokens": echo("max_output_tokens", Value::Null),
            "max_tool_calls": null,
            "metadata": echo("metadata", json!({})),
            "model": model,
            "output": output,
            "parallel_tool_calls": echo("parallel_tool_calls", Value::Bool(true)),
            "previous_response_id": self.previous_response_id,
            "reasoning": echo("reasoning", json!({"effort": null, "summary": null})),
            "service_tier": "default",
            "store": self.store,
            "temperature": echo("temperature", json!(1.0)),
            "text": echo("text", json!({"format": {"type": "text"}})),
            "tool_choice": echo("tool_choice", json!("auto")),
            "tools": echo("tools", json!([])),
            "top_p": echo("top_p", json!(1.0)),
            "truncation": echo("truncation", json!("disabled")),
            "usage": usage.map(usage_object),
            "user": echo("user", Value::Null),
        });
        if let Some(s) = self.echo.get("safety_identifier") {
            response["safety_identifier"] = s.clone();
        }
        response
    }
}

impl Turn {
    /// A buffered chat answer → the `response` object (a passthrough origin's answer is one
    /// already). Either is kept in `finished`, for storing.
    pub fn render(&self, answer: Vec<u8>) -> Result<Vec<u8>> {
        if self.passthrough {
            *self.finished.borrow_mut() = Some(parse_json(&answer)?);
            return Ok(answer);
        }
        let value = parse_json(&answer)?;
        let choice = value.get("choices").and_then(|c| c.get(0)).ok_or_else(|| bad_response("no choices"))?;
        let message = choice.get("message").ok_or_else(|| bad_response("a choice without a message"))?;
        let mut output = Vec::new();
        let text = match message.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
            _ => String::new(),
        };
        let calls = message.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            output.push(message_output(item_id("msg", &self.head.id, 0), &text, "completed"));
        }
        for (n, call) in calls.iter().enumerate() {
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
            let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("{}");
            let call_id = call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{n}"), str::to_string);
            output.push(function_output(item_id("fc", &self.head.id, n), &call_id, name, arguments, "completed"));
        }
        let (status, incomplete) = status_of(choice.get("finish_reason").and_then(Value::as_str));
        let model = value.get("model").and_then(Value::as_str).unwrap_or_default();
        let usage = Some(openai_usage(&value).unwrap_or_default());
        let mut response = self.head.response_object(model, status, output, usage);
        if let Some(reason) = incomplete {
            response["incomplete_details"] = json!({"reason": reason});
        }
        let body = json_body(&response)?;
        *self.finished.borrow_mut() = Some(response);
        Ok(body)
    }
}

/// Output items of a `response` → the assistant's chat message (text and tool calls), for the
/// stored conversation.
pub fn output_to_messages(response: &Value) -> Vec<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in response.get("output").and_then(Value::as_array).into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                }
            }
            Some("function_call") => {
                let field = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
                calls.push(json!({"id": field("call_id"), "type": "function",
                    "function": {"name": field("name"), "arguments": field("arguments")}}));
            }
            _ => {}
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Vec::new();
    }
    let mut message =
        json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    vec![message]
}

// --- storage -------------------------------------------------------------------------------

/// A stored response: the `response` object, and the conversation (chat messages, this
/// turn's answer included) that a later `previous_response_id` continues.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub endpoint: String,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub messages: Vec<Value>,
    pub response: Value,
}

impl Record {
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A response to store once it is known: a buffered answer at once, a stream's at its end
/// (the turn's `finished`, filled by `render` or the stream stage). Stored under the
/// response's own id (the gateway's, or a passthrough origin's), in the tenant's prefix.
pub struct Keep {
    pub tenant: String,
    pub ttl_secs: u64,
    pub endpoint: String,
    pub passthrough: bool,
    /// The conversation before this turn's answer (history + input).
    pub messages: Vec<Value>,
    pub response: Rc<RefCell<Option<Value>>>,
}

impl Keep {
    /// `(KV key, record)`, if there is a finished response to store and it fits.
    pub fn encode(&self) -> Option<(String, Vec<u8>)> {
        let response = self.response.borrow().clone()?;
        let id = response.get("id").and_then(Value::as_str).filter(|id| valid_id(id))?.to_string();
        let messages = if self.passthrough {
            Vec::new() // the origin keeps the conversation
        } else {
            let mut messages = self.messages.clone();
            messages.extend(output_to_messages(&response));
            messages
        };
        let record = Record { endpoint: self.endpoint.clone(), passthrough: self.passthrough, messages, response };
        let bytes = serde_json::to_vec(&record).ok().filter(|b| b.len() <= MAX_RECORD_BYTES)?;
        Some((kv_key(&self.tenant, &id), bytes))
    }
}

// --- passthrough ---------------------------------------------------------------------------

/// The prepared chat body → a Responses request for an origin that speaks Responses. `model`
/// is the provider-side model; the turn supplies `previous_response_id`, `store` and the
/// Responses-only fields.
pub fn passthrough_request(turn: &Turn, chat: &Map<String, Value>, model: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    let mut items = Vec::new();
    let messages = chat.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = message.get("content");
        if i == 0 && turn.has_instructions && role == "system" {
            if let Some(text) = content.and_then(Value::as_str) {
                out.insert("instructions".into(), Value::String(text.to_string()));
                continue;
            }
        }
        match role {
            "tool" => items.push(json!({
                "type": "function_call_output",
                "call_id": message.get("tool_call_id").cloned().unwrap_or(Value::Null),
                "output": content.and_then(Value::as_str).unwrap_or_default(),
            })),
            "assistant" => {
                let text = content_text(content);
                if !text.is_empty() {
                    items.push(json!({"type": "message", "role": "assistant", "content": text}));
                }
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let function = call.get("function");
                    items.push(json!({
                        "type": "function_call",
                        "call_id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": function.and_then(|f| f.get("name")).cloned().unwrap_or(Value::Null),
                        "arguments": function.and_then(|f| f.get("arguments")).cloned().unwrap_or(json!("{}")),
                    }));
                }
            }
            role => {
                let content = match content {
                    Some(Value::Array(parts)) => Value::Array(parts.iter().filter_map(input_part).collect()),
                    Some(Value::String(s)) => Value::String(s.clone()),
                    _ => Value::String(String::new()),
                };
                items.push(json!({"type": "message", "role": role, "content": content}));
            }
        }
    }
    out.insert("input".into(), Value::Array(items));
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| {
                let mut f = t.get("function")?.as_object()?.clone();
                f.insert("type".into(), json!("function"));
                Some(Value::Object(f))
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = chat.get("tool_choice") {
        let choice = match choice.pointer("/function/name") {
            Some(name) => json!({"type": "function", "name": name}),
            None => choice.clone(),
        };
        out.insert("tool_choice".into(), choice);
    }
    match chat.get("response_format") {
        Some(format) if format.get("type").and_then(Value::as_str) == Some("json_schema") => {
            let mut f = format.get("json_schema").and_then(Value::as_object).cloned().unwrap_or_default();
            f.insert("type".into(), json!("json_schema"));
            out.insert("text".into(), json!({"format": f}));
        }
        Some(format) => {
            out.insert("text".into(), json!({"format": format}));
        }
        None => {}
    }
    if let Some(max) = chat.get("max_tokens").or_else(|| chat.get("max_completion_tokens")) {
        out.insert("max_output_tokens".into(), max.clone());
    }
    for key in ["temperature", "top_p", "parallel_tool_calls", "stream", "user", "service_tier"] {
        if let Some(v) = chat.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for key in ["metadata", "safety_identifier"] {
        if let Some(v) = turn.head.echo.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for (key, value) in &turn.native {
        out.insert(key.clone(), value.clone());
    }
    if let Some(previous) = &turn.head.previous_response_id {
        out.insert("previous_response_id".into(), Value::String(previous.clone()));
    }
    out.insert("store".into(), Value::Bool(turn.head.store));
    out
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// A chat content part → a Responses input part.
fn input_part(part: &Value) -> Option<Value> {
    match part.get("type").and_then(Value::as_str)? {
        "text" => Some(json!({"type": "input_text", "text": part.get("text")?})),
        "image_url" => {
            let image = part.get("image_url")?;
            let url = image.as_str().or_else(|| image.get("url").and_then(Value::as_str))?;
            let detail = image.get("detail").and_then(Value::as_str).unwrap_or("auto");
            Some(json!({"type": "input_image", "image_url": url, "detail": detail}))
        }
        "file" => {
            let file = part.get("file")?;
            Some(json!({"type": "input_file", "file_data": file.get("file_data")?,
                "filename": file.get("filename").cloned().unwrap_or(json!("file"))}))
        }
        _ => None,
    }
}

/// A passthrough origin's buffered answer: the body as it is, and its usage.
pub fn passthrough_answer(body: &[u8]) -> Result<(Vec<u8>, Option<Usage>)> {
    let value = parse_json(body)?;
    if value.get("object").and_then(Value::as_str) != Some("response") {
        return Err(bad_response("not a Responses API `response` object"));
    }
    Ok((body.to_vec(), response_usage(&value)))
}

// --- errors --------------------------------------------------------------------------------

/// OpenAI's error body, with `param` named where the gateway knows it.
pub fn error_body(error: &GatewayError) -> Vec<u8> {
    let param = match error.code {
        ErrorCode::PreviousResponseNotFound => Some("previous_response_id".to_string()),
        ErrorCode::InvalidRequest
        | ErrorCode::UnsupportedParameter
        | ErrorCode::InvalidModel
        | ErrorCode::MissingModel => error
            .message
            .split_once(": ")
            .map(|(p, _)| p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._".contains(&b)))
            .map(str::to_string),
        _ => None,
    };
    let body = json!({"error": {"message": error.message, "type": error.kind, "param": param, "code": error.code}});
    serde_json::to_vec(&body).unwrap_or_default()
}

// --- streams -------------------------------------------------------------------------------

fn write(out: &mut Vec<u8>, seq: &mut u64, mut event: Value) {
    event["sequence_number"] = Value::from(*seq);
    *seq += 1;
    let name = event.get("type").and_then(Value::as_str).unwrap_or("message").to_string();
    sse::write_event(out, &name, &event);
}

struct OpenText {
    output_index: usize,
    id: String,
    text: String,
}

struct OpenCall {
    /// Chat `tool_calls[].index`.
    chat_index: u64,
    output_index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    done: bool,
}

/// Chat `chat.completion.chunk` stream → Responses events.
pub struct ChatStreamToResponses {
    head: Head,
    model: String,
    seq: u64,
    started: bool,
    /// Closed items with their output index.
    output: Vec<(usize, Value)>,
    text: Option<OpenText>,
    calls: Vec<OpenCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    ended: bool,
    finished: Rc<RefCell<Option<Value>>>,
}

impl ChatStreamToResponses {
    /// `head` is the request's (id and echo fields); `finished` receives the final response.
    pub fn new(head: Head, model: &str, finished: Rc<RefCell<Option<Value>>>) -> Self {
        ChatStreamToResponses {
            head,
            model: model.to_string(),
            seq: 0,
            started: false,
            output: Vec::new(),
            text: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            ended: false,
            finished,
        }
    }

    fn next_output_index(&self) -> usize {
        self.output.len() + usize::from(self.text.is_some()) + self.calls.iter().filter(|c| !c.done).count()
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let response = self.head.response_object(&self.model, "in_progress", Vec::new(), None);
        write(out, &mut self.seq, json!({"type": "response.created", "response": response}));
        let response = self.head.response_object(&self.model, "in_progress", Vec::new(), None);
        write(out, &mut self.seq, json!({"type": "response.in_progress", "response": response}));
    }

    fn text(&mut self, out: &mut Vec<u8>, delta: &str) {
        if self.text.is_none() {
            let output_index = self.next_output_index();
            let id = item_id("msg", &self.head.id, output_index);
            let item =
                json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            write(
                out,
                &mut self.seq,
                json!({"type": "response.output_item.added", "output_index": output_index, "item": item}),
            );
            write(
                out,
                &mut self.seq,
                json!({"type": "response.content_part.added", "item_id": id, "output_index": output_index,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.text = Some(OpenText { output_index, id, text: String::new() });
        }
        let Some(open) = self.text.as_mut() else { return };
        open.text.push_str(delta);
        let event = json!({"type": "response.output_text.delta", "item_id": open.id, "output_index": open.output_index,
            "content_index": 0, "delta": delta, "logprobs": []});
        write(out, &mut self.seq, event);
    }

    fn close_text(&mut self, out: &mut Vec<u8>) {
        let Some(open) = self.text.take() else { return };
        let (id, index, text) = (open.id, open.output_index, open.text);
        write(
            out,
            &mut self.seq,
            json!({"type": "response.output_text.done", "item_id": id, "output_index": index, "content_index": 0,
                "text": text, "logprobs": []}),
        );
        write(
            out,
            &mut self.seq,
            json!({"type": "response.content_part.done", "item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
        );
        let item = message_output(id, &text, "completed");
        write(
            out,
            &mut self.seq,
            json!({"type": "response.output_item.done", "output_index": index, "item": item.clone()}),
        );
        self.output.push((index, item));
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, call: &Value) {
        let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let position = self.calls.iter().position(|c| c.chat_index == chat_index && !c.done);
        let position = match position {
            Some(p) => p,
            None => {
                self.close_text(out);
                let output_index = self.next_output_index();
                let id = item_id("fc", &self.head.id, self.calls.len());
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{}", self.calls.len()), str::to_string);
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
                let item = function_output(id.clone(), &call_id, &name, "", "in_progress");
                write(
                    out,
                    &mut self.seq,
                    json!({"type": "response.output_item.added", "output_index": output_index, "item": item}),
                );
                self.calls.push(OpenCall {
                    chat_index,
                    output_index,
                    id,
                    call_id,
                    name,
                    arguments: String::new(),
                    done: false,
                });
                self.calls.len() - 1
            }
        };
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        if arguments.is_empty() {
            return;
        }
        let open = &mut self.calls[position];
        open.arguments.push_str(arguments);
        let event = json!({"type": "response.function_call_arguments.delta", "item_id": open.id,
            "output_index": open.output_index, "delta": arguments});
        write(out, &mut self.seq, event);
    }

    fn close_calls(&mut self, out: &mut Vec<u8>) {
        let mut closing: Vec<usize> = (0..self.calls.len()).filter(|&i| !self.calls[i].done).collect();
        closing.sort_by_key(|&i| self.calls[i].output_index);
        for i in closing {
            let call = &mut self.calls[i];
            call.done = true;
            let (id, index) = (call.id.clone(), call.output_index);
            let item = function_output(id.clone(), &call.call_id, &call.name, &call.arguments, "completed");
            let arguments = call.arguments.clone();
            write(
                out,
                &mut self.seq,
                json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": index,
                    "arguments": arguments}),
            );
            write(
                out,
                &mut self.seq,
                json!({"type": "response.output_item.done", "output_index": index, "item": item.clone()}),
            );
            self.output.push((index, item));
        }
    }

    /// The closed items in output order.
    fn output(&self) -> Vec<Value> {
        let mut items = self.output.clone();
        items.sort_by_key(|(index, _)| *index);
        items.into_iter().map(|(_, item)| item).collect()
    }

    fn close_items(&mut self, out: &mut Vec<u8>) {
        self.close_text(out);
        self.close_calls(out);
    }

    /// The normal end: every item closed, then `response.completed` (or `.incomplete`).
    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_items(out);
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        let usage = Some(self.usage.unwrap_or_default());
        let mut response = self.head.response_object(&self.model, status, self.output(), usage);
        if let Some(reason) = incomplete {
            response["incomplete_details"] = json!({"reason": reason});
        }
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        write(out, &mut self.seq, json!({"type": kind, "response": response.clone()}));
        *self.finished.borrow_mut() = Some(response);
        self.ended = true;
    }

    fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        self.start(out);
        write(out, &mut self.seq, json!({"type": "error", "code": code, "message": message, "param": null}));
        let mut response = self.head.response_object(&self.model, "failed", self.output(), self.usage);
        response["error"] = json!({"code": "server_error", "message": message});
        write(out, &mut self.seq, json!({"type": "response.failed", "response": response}));
        self.ended = true;
    }
}

impl StreamTranslate for ChatStreamToResponses {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if event.data.trim() == "[DONE]" {
            if self.finish_reason.is_some() {
                self.end(out);
            } else {
                self.fail(out, "origin_stream_cut", "origin stream ended before the answer was complete");
            }
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else { return };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("origin error");
            let code = error.get("code").and_then(Value::as_str).unwrap_or("origin_stream_error");
            self.fail(out, code, message);
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()).and_then(|_| openai_usage(&chunk)) {
            self.usage = Some(usage);
        }
        if self.head.id.is_empty() {
            self.head.id = chunk
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| "resp_gateway".into(), |id| format!("resp_{id}"));
        }
        self.start(out);
        let choices = chunk.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        // A response has one candidate: follow choice 0.
        for choice in choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
            let delta = choice.get("delta");
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.text(out, text);
            }
            for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                self.tool_call(out, call);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
                self.close_items(out);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.finish_reason.is_some() {
            // A finished answer whose `[DONE]` never came: close it normally.
            self.end(out);
        } else {
            self.fail(out, "origin_stream_cut", "origin stream ended before the answer was complete");
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// A passthrough origin's Responses event stream on its way to the client: events pass as they
/// are; usage and the final response are read from the terminal event, and a stream cut
/// before one gets an `error` event.
pub struct ResponsesWatch {
    usage: Option<Usage>,
    /// Output deltas seen: a lower bound on output tokens if the stream is cut.
    deltas: u64,
    last_seq: Option<u64>,
    ended: bool,
    finished: Rc<RefCell<Option<Value>>>,
}

impl ResponsesWatch {
    pub fn new(finished: Rc<RefCell<Option<Value>>>) -> Self {
        ResponsesWatch { usage: None, deltas: 0, last_seq: None, ended: false, finished }
    }
}

impl StreamTranslate for ResponsesWatch {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if let Ok(data) = serde_json::from_str::<Value>(&event.data) {
            self.last_seq = data.get("sequence_number").and_then(Value::as_u64).or(self.last_seq);
            let kind = data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or_default();
            match kind {
                "response.output_text.delta" | "response.function_call_arguments.delta" => self.deltas += 1,
                "response.completed" | "response.incomplete" | "response.failed" => {
                    self.ended = true;
                    if let Some(response) = data.get("response") {
                        self.usage = response_usage(response).or(self.usage);
                        if kind != "response.failed" {
                            *self.finished.borrow_mut() = Some(response.clone());
                        }
                    }
                }
                "error" => self.ended = true,
                _ => {}
            }
        }
        if let Some(name) = &event.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        for line in event.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let seq = self.last_seq.map_or(0, |s| s + 1);
        let event = json!({"type": "error", "code": "origin_stream_cut", "param": null, "sequence_number": seq,
            "message": "origin stream ended before the answer was complete"});
        sse::write_event(out, "error", &event);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.or((self.deltas > 0).then_some(Usage { prompt_tokens: 0, completion_tokens: self.deltas }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::dialect::ClientStream;
    use crate::gateway::pipeline::stream::Stage;
    use crate::gateway::test_util::{data, mutations, object, parse_sse, pump};
    use http::StatusCode;

    fn turn(id: &str) -> Turn {
        let mut turn =
            Turn { head: Head { id: id.into(), created_at: 7, store: true, ..Head::default() }, ..Turn::default() };
        turn.head.echo.insert("instructions".into(), json!("Be brief."));
        turn
    }

    #[test]
    fn reads_a_full_request_into_the_chat_shape() {
        let body = json!({
            "model": "my-chat",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                ]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
                {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":\"cat\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a feline"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": "And now?"},
            ],
            "tools": [{"type": "function", "name": "lookup", "description": "Look up", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "lookup"},
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}},
            "max_output_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "parallel_tool_calls": false,
            "stream": true,
            "store": false,
            "user": "u-1",
            "metadata": {"trace": "t1"},
            "reasoning": {"effort": "low"},
            "truncation": "auto",
            "include": ["reasoning.encrypted_content"],
            "stream_options": {"include_obfuscation": false},
        });
        let (name, chat, turn) = read(object(body)).unwrap();
        assert_eq!(name, "my-chat");
        assert_eq!(
            Value::Object(chat),
            json!({
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
                    ]},
                    {"role": "assistant", "content": "A cat.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "a feline"},
                    {"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": "And now?"},
                ],
                "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "lookup"}},
                "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
                "max_tokens": 300,
                "temperature": 0.2,
                "top_p": 0.9,
                "parallel_tool_calls": false,
                "stream": true,
                "user": "u-1",
                "reasoning_effort": "low",
            })
        );
        assert!(!turn.head.store && turn.has_instructions);
        assert_eq!(turn.input.len(), 5, "instructions are not part of the stored input");
        assert_eq!(turn.head.echo["metadata"], json!({"trace": "t1"}));
        assert_eq!(turn.native["truncation"], "auto");
        let (_, chat, turn) = read(object(json!({"model": "m", "input": "hi"}))).unwrap();
        assert_eq!(Value::Object(chat), json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert!(turn.head.store && !turn.has_instructions);
    }

    #[test]
    fn validation_errors_name_the_field() {
        let cases = [
            (json!({"input": "x"}), "missing_model", "model: is required"),
            (json!({"model": "m"}), "invalid_request", "input: Field required"),
            (json!({"model": "m", "input": []}), "invalid_request", "input: at least one item"),
            (json!({"model": "m", "input": 5}), "invalid_request", "input: must be a string or a list"),
            (
                json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
                "invalid_request",
                "input.0.role: must be",
            ),
            (json!({"model": "m", "input": [{"role": "user"}]}), "invalid_request", "input.0.content: Field required"),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "invalid_request",
                "input.0.content.0.type: unsupported content part type \"input_audio\"",
            ),
            (
                json!({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "x"}]}]}),
                "invalid_request",
                "input.0.content.0.type: unsupported content part type \"input_image\" in a assistant message",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
                "invalid_request",
                "input.0.call_id: Field required",
            ),
            (json!({"model": "m", "input": [{"type": "web_search_call"}]}), "unsupported_parameter", "input.0.type"),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
                "unsupported_parameter",
                "input.0:",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "unsupported_parameter",
                "tools.0.type",
            ),
            (
                json!({"model": "m", "input": "x", "tool_choice": "sometimes"}),
                "invalid_request",
                "tool_choice: must be",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}),
                "invalid_request",
                "text.format.name",
            ),
            (json!({"model": "m", "input": "x", "max_output_tokens": 0}), "invalid_request", "max_output_tokens"),
            (
                json!({"model": "m", "input": "x", "temperature": "hot"}),
                "invalid_request",
                "temperature: must be a number",
            ),
            (json!({"model": "m", "input": "x", "background": true}), "unsupported_parameter", "background:"),
            (json!({"model": "m", "input": "x", "conversation": "conv_1"}), "unsupported_parameter", "conversation:"),
            (
                json!({"model": "m", "input": "x", "previous_response_id": "bad id!"}),
                "previous_response_not_found",
                "Previous",
            ),
            (json!({"model": "m", "input": "x", "metadata": {"a": 1}}), "invalid_request", "metadata:"),
        ];
        for (body, code, message) in cases {
            let e = read(object(body.clone())).err().unwrap();
            assert_eq!(e.code, code, "{body}: {}", e.message);
            assert!(e.message.starts_with(message), "{body}: {}", e.message);
        }
    }

    #[test]
    fn input_sizes_are_bounded() {
        let items: Vec<Value> = (0..=MAX_INPUT_ITEMS).map(|_| json!({"role": "user", "content": "x"})).collect();
        let e = read(object(json!({"model": "m", "input": items}))).err().unwrap();
        assert!(e.message.contains("at most 1024 items"), "{}", e.message);
        let parts: Vec<Value> = (0..=MAX_PARTS).map(|_| json!({"type": "input_text", "text": "x"})).collect();
        let e = read(object(json!({"model": "m", "input": [{"role": "user", "content": parts}]}))).err().unwrap();
        assert!(e.message.contains("at most 256 parts"), "{}", e.message);
        let tools: Vec<Value> = (0..=MAX_TOOLS).map(|i| json!({"type": "function", "name": format!("f{i}")})).collect();
        let e = read(object(json!({"model": "m", "input": "x", "tools": tools}))).err().unwrap();
        assert!(e.message.contains("at most 128 tools"), "{}", e.message);
    }

    #[test]
    fn previous_response_id_alone_is_a_valid_continuation() {
        let (_, chat, turn) = read(object(json!({"model": "m", "previous_response_id": "resp_1"}))).unwrap();
        assert_eq!(chat["messages"], json!([]));
        assert_eq!(turn.head.previous_response_id.as_deref(), Some("resp_1"));
    }

    #[test]
    fn renders_a_chat_answer_as_a_response() {
        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}],
            }}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        });
        let turn = turn("resp_abc");
        let out: Value = serde_json::from_slice(&turn.render(serde_json::to_vec(&answer).unwrap()).unwrap()).unwrap();
        assert_eq!(out["id"], "resp_abc");
        assert_eq!(out["object"], "response");
        assert_eq!(out["status"], "completed");
        assert_eq!(out["created_at"], 7);
        assert_eq!(out["model"], "gpt-4o-mini");
        assert_eq!(out["instructions"], "Be brief.");
        assert_eq!(
            out["output"],
            json!([
                {"id": "msg_abc", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
                {"id": "fc_abc_0", "type": "function_call", "status": "completed", "call_id": "call_9", "name": "lookup", "arguments": "{\"q\":1}"},
            ])
        );
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
                   "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19})
        );
        assert_eq!(turn.finished.borrow().as_ref().unwrap()["id"], "resp_abc", "kept for storing");

        let length = br#"{"id":"x","model":"m","choices":[{"finish_reason":"length","message":{"content":"abc"}}]}"#;
        let out: Value = serde_json::from_slice(&turn.render(length.to_vec()).unwrap()).unwrap();
        assert_eq!(
            (out["status"].as_str(), &out["incomplete_details"]),
            (Some("incomplete"), &json!({"reason": "max_output_tokens"}))
        );
        assert_eq!(turn.render(b"{}".to_vec()).unwrap_err().code, "origin_bad_response");
        assert_eq!(turn.render(b"nope".to_vec()).unwrap_err().code, "origin_bad_response");
    }

    #[test]
    fn stored_records_carry_the_conversation() {
        let turn = turn("resp_abc");
        let answer = br#"{"id":"c","model":"m","choices":[{"finish_reason":"tool_calls","message":{"content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#;
        turn.render(answer.to_vec()).unwrap();
        let keep = Keep {
            tenant: "acme".into(),
            ttl_secs: 60,
            endpoint: "chat".into(),
            passthrough: false,
            messages: vec![json!({"role": "user", "content": "call f"})],
            response: turn.finished.clone(),
        };
        let (key, bytes) = keep.encode().unwrap();
        assert_eq!(key, "resp:acme:resp_abc");
        let record = Record::decode(&bytes).unwrap();
        assert_eq!(
            record.messages,
            vec![
                json!({"role": "user", "content": "call f"}),
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
            ]
        );
        assert_eq!(record.response["id"], "resp_abc");
        // Nothing finished (an error): nothing stored. An origin id unfit for a key: not stored.
        let empty = Keep { response: Rc::default(), ..keep };
        assert!(empty.encode().is_none());
        *empty.response.borrow_mut() = Some(json!({"id": "resp:other:x"}));
        assert!(empty.encode().is_none());
        assert!(valid_id("resp_0A-b") && !valid_id("") && !valid_id("a:b") && !valid_id(&"x".repeat(129)));
    }

    #[test]
    fn errors_have_openai_shape_with_param() {
        let body: Value = serde_json::from_slice(&error_body(&previous_not_found("resp_x"))).unwrap();
        assert_eq!(
            body,
            json!({"error": {"message": "Previous response with id 'resp_x' not found.", "type": "invalid_request_error",
                   "param": "previous_response_id", "code": "previous_response_not_found"}})
        );
        let e = read(object(json!({"model": "m", "input": [{"role": "user", "content": 1}]}))).err().unwrap();
        let body: Value = serde_json::from_slice(&error_body(&e)).unwrap();
        assert_eq!(body["error"]["param"], "input.0.content");
        let body: Value = serde_json::from_slice(&error_body(&not_found("resp_y"))).unwrap();
        assert_eq!(
            (body["error"]["code"].as_str(), body["error"]["param"].is_null()),
            (Some("response_not_found"), true)
        );
        assert_eq!(not_found("x").status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn passthrough_requests_carry_the_prepared_chat_body_in_responses_form() {
        let body = json!({
            "model": "e", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "https://x/cat.png"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
            "max_output_tokens": 50, "temperature": 0, "stream": true, "store": false,
            "previous_response_id": "resp_prev", "reasoning": {"effort": "high"}, "metadata": {"k": "v"},
        });
        let (_, mut chat, turn) = read(object(body)).unwrap();
        chat.insert("user".into(), json!("gateway")); // an endpoint override, applied on the way
        let sent = Value::Object(passthrough_request(&turn, &chat, "gpt-4.1"));
        assert_eq!(
            sent,
            json!({
                "model": "gpt-4.1", "instructions": "Be brief.",
                "input": [
                    {"type": "message", "role": "user", "content": [
                        {"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "https://x/cat.png", "detail": "auto"}]},
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "42"},
                ],
                "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                "tool_choice": {"type": "function", "name": "f"},
                "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
                "max_output_tokens": 50, "temperature": 0, "stream": true, "user": "gateway",
                "metadata": {"k": "v"}, "reasoning": {"effort": "high"},
                "previous_response_id": "resp_prev", "store": false,
            })
        );
        let (body, usage) =
            passthrough_answer(br#"{"id":"resp_o","object":"response","usage":{"input_tokens":3,"output_tokens":4}}"#)
                .unwrap();
        assert_eq!((!body.is_empty(), usage), (true, Some(Usage { prompt_tokens: 3, completion_tokens: 4 })));
        assert_eq!(passthrough_answer(br#"{"choices":[]}"#).unwrap_err().code, "origin_bad_response");
    }

    // --- streams ---------------------------------------------------------------------------

    fn chunk(delta: Value, finish: Value) -> String {
        let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    }

    fn chat_stream() -> String {
        [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Let me"}), Value::Null),
            chunk(json!({"content": " check ✓"}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":20,\"total_tokens\":29}}\n\n".to_string(),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat()
    }

    fn to_responses(finished: &Rc<RefCell<Option<Value>>>) -> impl Fn() -> Vec<Stage> + '_ {
        move || {
            *finished.borrow_mut() = None;
            let head = turn("resp_s").head;
            vec![Stage::Client(ClientStream::Responses(ChatStreamToResponses::new(head, "gpt-4o", finished.clone())))]
        }
    }

    #[test]
    fn chat_stream_becomes_typed_response_events() {
        let finished = Rc::default();
        let (events, usage) = pump(to_responses(&finished), chat_stream().as_bytes());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let d = data(&events);
        for (i, (name, event)) in events.iter().enumerate() {
            assert_eq!(event["type"].as_str(), name.as_deref(), "event name and type agree");
            assert_eq!(event["sequence_number"], i, "sequence numbers count up from 0");
        }
        assert_eq!(d[0]["response"]["status"], "in_progress");
        assert_eq!(d[0]["response"]["id"], "resp_s");
        assert_eq!(
            d[2]["item"],
            json!({"id": "msg_s", "type": "message", "status": "in_progress", "role": "assistant", "content": []})
        );
        assert_eq!(d[5]["delta"], " check ✓");
        assert_eq!(d[6]["text"], "Let me check ✓");
        assert_eq!(d[9]["output_index"], 1);
        assert_eq!(d[9]["item"]["call_id"], "call_a");
        assert_eq!(d[12]["arguments"], "{\"city\":\"Paris\"}");
        let done = &d[14]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Let me check ✓");
        assert_eq!(done["output"][1]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(done["usage"]["input_tokens"], 9);
        assert_eq!(done["usage"]["total_tokens"], 29);
        assert_eq!(usage, Some(Usage { prompt_tokens: 9, completion_tokens: 20 }));
        assert_eq!(finished.borrow().as_ref(), Some(done), "the final response is kept for storing");
    }

    #[test]
    fn cut_or_failed_streams_end_with_error_and_failed_and_store_nothing() {
        let finished = Rc::default();
        let cut: String = chat_stream().split("\n\n").take(3).map(|e| format!("{e}\n\n")).collect();
        let (events, _) = pump(to_responses(&finished), cut.as_bytes());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
        assert_eq!(names[names.len() - 2..], ["error", "response.failed"]);
        assert_eq!(events.last().unwrap().1["response"]["status"], "failed");
        assert!(finished.borrow().is_none());

        let failed = format!(
            "{cut}data: {{\"error\":{{\"message\":\"boom\",\"code\":\"origin_stream_cut\"}}}}\n\ndata: [DONE]\n\n"
        );
        let (events, _) = pump(to_responses(&finished), failed.as_bytes());
        let errors: Vec<&Value> =
            events.iter().filter(|(n, _)| n.as_deref() == Some("error")).map(|(_, d)| d).collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["message"], "boom");

        // Finished but no [DONE]: completed normally. Length: incomplete.
        let no_done = chat_stream().replace("data: [DONE]\n\n", "");
        let (events, _) = pump(to_responses(&finished), no_done.as_bytes());
        assert_eq!(events.last().unwrap().0.as_deref(), Some("response.completed"));
        let length = [
            chunk(json!({"content": "abc"}), Value::Null),
            chunk(json!({}), json!("length")),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (events, _) = pump(to_responses(&finished), length.as_bytes());
        let (name, last) = events.last().unwrap();
        assert_eq!(name.as_deref(), Some("response.incomplete"));
        assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
    }

    #[test]
    fn chained_translators_carry_a_claude_stream_to_a_responses_client() {
        use crate::gateway::providers::anthropic::tests::{to_openai, TOOL_STREAM};
        use crate::gateway::types::Operation;
        let finished = Rc::default();
        let chain = || {
            let mut stages = to_openai(Operation::Chat)();
            stages.extend(to_responses(&finished)());
            stages
        };
        let (events, usage) = pump(chain, TOOL_STREAM.as_bytes());
        let last = &events.last().unwrap().1;
        assert_eq!(last["type"], "response.completed");
        let call =
            last["response"]["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap();
        assert_eq!(call["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        assert_eq!(
            serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
            json!({"location": "Paris"})
        );
        assert_eq!(usage, Some(Usage { prompt_tokens: 472, completion_tokens: 89 }), "the origin's usage counts");
    }

    #[test]
    fn passthrough_streams_are_watched_not_rewritten() {
        let completed = json!({"type": "response.completed", "sequence_number": 3,
            "response": {"id": "resp_o", "object": "response", "status": "completed", "output": [], "usage": {"input_tokens": 5, "output_tokens": 2}}});
        let stream = format!(
            "event: response.created\ndata: {{\"type\":\"response.created\",\"sequence_number\":0}}\n\n\
             event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"hé\",\"sequence_number\":1}}\n\n\
             event: response.completed\ndata: {completed}\n\n"
        );
        let finished: Rc<RefCell<Option<Value>>> = Rc::default();
        let make = || vec![Stage::Client(ClientStream::ResponsesWatch(ResponsesWatch::new(finished.clone())))];
        let (events, usage) = pump(make, stream.as_bytes());
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].1, completed);
        assert_eq!(usage, Some(Usage { prompt_tokens: 5, completion_tokens: 2 }));
        assert_eq!(finished.borrow().as_ref().unwrap()["id"], "resp_o");

        let cut: String = stream.split("\n\n").take(2).map(|e| format!("{e}\n\n")).collect();
        let (events, usage) = pump(make, cut.as_bytes());
        assert_eq!(events.last().unwrap().1["code"], "origin_stream_cut");
        assert_eq!(events.last().unwrap().1["sequence_number"], 2);
        assert_eq!(usage, Some(Usage { prompt_tokens: 0, completion_tokens: 1 }));
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let inbound = json!({
            "model": "e", "instructions": "s", "previous_response_id": "resp_1", "store": true,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "t"}, {"type": "input_image", "image_url": "u", "detail": "low"},
                                             {"type": "input_file", "file_data": "d", "filename": "f"}]},
                {"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "o"}]},
            ],
            "tools": [{"type": "function", "name": "n", "parameters": {"type": "object"}}], "tool_choice": {"type": "function", "name": "n"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}, "max_output_tokens": 5,
            "metadata": {"a": "b"}, "reasoning": {"effort": "low"}, "truncation": "auto", "stream": true, "temperature": 1,
        });
        for body in mutations(&inbound) {
            if let Value::Object(body) = body {
                if let Ok((_, chat, turn)) = read(body) {
                    let _ = passthrough_request(&turn, &chat, "m");
                }
            }
        }
        let completion = json!({
            "id": "c", "model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 2},
            "choices": [{"finish_reason": "stop", "message": {"content": "x", "tool_calls": [{"id": "i", "function": {"name": "n", "arguments": "{}"}}]}}],
        });
        let t = turn("resp_h");
        for body in mutations(&completion) {
            let _ = t.render(serde_json::to_vec(&body).unwrap());
        }
        for response in mutations(
            &json!({"id": "resp_1", "output": [{"type": "message", "content": [{"text": "x"}]}, {"type": "function_call", "call_id": "c"}]}),
        ) {
            let _ = output_to_messages(&response);
        }
        let chunks: Vec<Value> =
            parse_sse(chat_stream().as_bytes()).into_iter().map(|(_, d)| d).filter(Value::is_object).collect();
        for (i, c) in chunks.iter().enumerate() {
            for mutated in mutations(c) {
                let mut t = ChatStreamToResponses::new(turn("resp_m").head, "m", Rc::default());
                let mut out = Vec::new();
                for (j, c) in chunks.iter().enumerate() {
                    let c = if i == j { &mutated } else { c };
                    t.event(&SseEvent { event: None, data: c.to_string() }, &mut out);
                }
                t.finish(&mut out);
                assert!(!out.is_empty());
            }
        }
    }
}
