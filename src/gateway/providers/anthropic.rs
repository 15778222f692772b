//! Anthropic's Messages API, in both directions.
//!
//! * As a provider: OpenAI chat/completions requests become `POST {base}/messages`; Messages
//!   answers and event streams become `chat.completion` / `chat.completion.chunk` (or
//!   `text_completion` for the completions API).
//! * Inbound (`POST /v1/messages` on the gateway, so Anthropic SDK clients can use any chat
//!   endpoint): `messages_request_to_openai`, `openai_response_to_messages` and
//!   `OpenAiStreamToMessages` turn a Messages request into an OpenAI one and the OpenAI-shaped
//!   answer back into a Messages answer or event stream.
//!
//! The small OpenAI-shape helpers at the end (`ChunkWriter`, `OpenAiChoice`, request field
//! readers) are shared with `gemini.rs`.

use http::Request;
use serde_json::{json, Map, Value};

use super::{
    assistant_message, bad_response, finish_request, join_url, json_body, openai_usage, parse_json, post_json,
    resolve_secret, string_config, take_api_key, take_base_url, usage_json, Adapter, Call, Reply, StreamMode,
    StreamTranslate, StreamTranslator, Translated,
};
use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::sse::{self, SseEvent};

const DEFAULT_BASE: &str = "https://api.anthropic.com/v1";
const DEFAULT_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; OpenAI clients usually leave it out.
const DEFAULT_MAX_TOKENS: u64 = 1024;
const CONFIG_KEYS: &[&str] = &["anthropic_api_key", "anthropic_version", "anthropic_api_base"];
/// Anthropic request fields with no OpenAI counterpart that an OpenAI-speaking client may still
/// send; they are forwarded as-is. Every other OpenAI-only field (penalties, logprobs, seed,
/// response_format, stream_options, ...) is dropped: Anthropic rejects unknown fields.
/// (`service_tier` and `metadata` are not among them: OpenAI has fields of those names whose
/// values Anthropic refuses.)
const NATIVE_FIELDS: &[&str] = &["top_k", "thinking"];

#[derive(Debug)]
pub struct Anthropic {
    pub api_key: SecretRef,
    pub version: String,
    pub api_base: String,
}

impl Anthropic {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Anthropic> {
        let before = issues.0.len();
        let mut values = string_config(path, "anthropic", config, CONFIG_KEYS, issues);
        let api_key = take_api_key(path, "anthropic_api_key", config, &mut values, issues);
        let version = values.remove("anthropic_version");
        if version.as_deref().is_some_and(|v| v.trim().is_empty()) {
            issues.push(
                format!("{path}.anthropic_version"),
                format!("must not be empty (leave it out for \"{DEFAULT_VERSION}\")"),
            );
        }
        let api_base = take_base_url(path, "anthropic_api_base", &mut values, issues);
        if issues.0.len() != before {
            return None;
        }
        Some(Anthropic {
            api_key: SecretRef::parse(&api_key?),
            version: version.unwrap_or_else(|| DEFAULT_VERSION.to_string()),
            api_base: api_base.unwrap_or_else(|| DEFAULT_BASE.to_string()),
        })
    }
}

impl Adapter for Anthropic {
    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let body = match call.op {
            Operation::Chat => chat_to_messages(call.body, call.model, call.stream)?,
            Operation::Completions => {
                let mut body = call.body;
                let prompt = completion_prompt(&mut body, "anthropic")?;
                body.insert("messages".into(), json!([{"role": "user", "content": prompt}]));
                chat_to_messages(body, call.model, call.stream)?
            }
            Operation::Embeddings | Operation::Predict => return Err(unsupported("anthropic", call.op)),
        };
        let key = resolve_secret(&self.api_key, secrets)?;
        let builder = post_json(&join_url(call.base_url, "messages"))
            .header("x-api-key", key)
            .header("anthropic-version", self.version.as_str());
        finish_request(builder, json_body(&body)?)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        let Reply { op, model, now_ms, .. } = reply;
        let value = reply.success_json()?;
        let blocks = value.get("content").and_then(Value::as_array).ok_or_else(|| bad_response("no content list"))?;
        let mut text: Option<String> = None;
        let mut tool_calls = Vec::new();
        for block in blocks {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let piece = block.get("text").and_then(Value::as_str).unwrap_or_default();
                    text.get_or_insert_with(String::new).push_str(piece);
                }
                Some("tool_use") => tool_calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                    },
                })),
                _ => {} // thinking, redacted_thinking, server tool blocks: no OpenAI counterpart
            }
        }
        let usage = value.get("usage").map(anthropic_usage);
        let stop_reason = value.get("stop_reason").and_then(Value::as_str);
        let choice = OpenAiChoice { index: 0, text, tool_calls, finish_reason: openai_finish_reason(stop_reason) };
        let answer = openai_answer(
            op,
            value.get("id").and_then(Value::as_str).unwrap_or("msg_unknown"),
            value.get("model").and_then(Value::as_str).unwrap_or(model),
            now_ms,
            vec![choice],
            usage,
        );
        Ok(Translated { body: json_body(&answer)?, usage })
    }

    fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode {
        match op {
            Operation::Chat | Operation::Completions => {
                StreamMode::Translate(StreamTranslator::AnthropicToOpenAi(StreamToOpenAi::new(op, model, now_ms)))
            }
            Operation::Embeddings | Operation::Predict => StreamMode::Buffered,
        }
    }
}

/// An OpenAI chat request (without `model`) as a Messages request for `model`.
fn chat_to_messages(mut body: Map<String, Value>, model: &str, stream: bool) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    let messages = match take(&mut body, "messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(_) => return Err(invalid("messages", "must be a non-empty list of messages")),
        None => return Err(invalid("messages", "is required")),
    };
    let (system, messages) = messages_to_anthropic(messages)?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = take(&mut body, "n") {
        if n.as_u64() != Some(1) {
            return Err(GatewayError::unprocessable(
                ErrorCode::UnsupportedParameter,
                format!("n: must be 1 for the anthropic provider (got {n})"),
            ));
        }
    }
    let max_tokens = max_tokens(&mut body)?.unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), max_tokens.into());
    if let Some(t) = take(&mut body, "temperature") {
        // OpenAI's range is 0–2, Anthropic's 0–1.
        let t = number("temperature", &t)?.clamp(0.0, 1.0);
        out.insert("temperature".into(), json!(t));
    }
    if let Some(top_p) = take(&mut body, "top_p") {
        number("top_p", &top_p)?;
        out.insert("top_p".into(), top_p);
    }
    let stop = stop_sequences(take(&mut body, "stop"))?;
    if !stop.is_empty() {
        out.insert("stop_sequences".into(), stop.into());
    }
    let has_tools = match take(&mut body, "tools") {
        Some(Value::Array(tools)) if !tools.is_empty() => {
            let tools = tools.iter().enumerate().map(|(i, t)| tool_to_anthropic(i, t)).collect::<Result<Vec<_>>>()?;
            out.insert("tools".into(), Value::Array(tools));
            true
        }
        Some(Value::Array(_)) => false,
        Some(_) => return Err(invalid("tools", "must be a list")),
        None => false,
    };
    let mut tool_choice = match take(&mut body, "tool_choice") {
        Some(choice) => Some(tool_choice_to_anthropic(&choice)?),
        None => None,
    };
    if take(&mut body, "parallel_tool_calls") == Some(Value::Bool(false)) {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(choice) = choice.as_object_mut().filter(|c| c.get("type") != Some(&json!("none"))) {
            choice.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    // Anthropic refuses `tool_choice` without `tools`.
    if let Some(choice) = tool_choice.filter(|_| has_tools) {
        out.insert("tool_choice".into(), choice);
    }
    // Anthropic's metadata holds `user_id` only; OpenAI's is a free-form map.
    let metadata_user = take(&mut body, "metadata").and_then(|m| m.get("user_id").filter(|u| u.is_string()).cloned());
    if let Some(user) = take(&mut body, "user").filter(Value::is_string).or(metadata_user) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    for key in NATIVE_FIELDS {
        if let Some(value) = take(&mut body, key) {
            out.insert((*key).into(), value);
        }
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(out)
}

/// Hoists system messages into `system` and builds strictly alternating user/assistant turns
/// (consecutive same-role messages, e.g. several `tool` results, merge into one turn).
fn messages_to_anthropic(messages: Vec<Value>) -> Result<(Option<Value>, Vec<Value>)> {
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let path = format!("messages[{i}]");
        let Value::Object(mut message) = message else {
            return Err(invalid(&path, "must be an object"));
        };
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role) => role.to_string(),
            None => return Err(invalid(&format!("{path}.role"), "is required")),
        };
        let content = take(&mut message, "content");
        let (role, blocks) = match role.as_str() {
            "system" | "developer" => {
                let content = content.ok_or_else(|| invalid(&format!("{path}.content"), "is required"))?;
                system.extend(system_blocks(content, &format!("{path}.content"))?);
                continue;
            }
            "user" => {
                let content = content.ok_or_else(|| invalid(&format!("{path}.content"), "is required"))?;
                ("user", user_blocks(content, &format!("{path}.content"))?)
            }
            "assistant" => ("assistant", assistant_blocks(content, take(&mut message, "tool_calls"), &path)?),
            "tool" => {
                let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
                    return Err(invalid(&format!("{path}.tool_call_id"), "is required"));
                };
                let content = match content {
                    None => Value::String(String::new()),
                    Some(Value::String(s)) => Value::String(s),
                    Some(Value::Array(parts)) => Value::Array(parts_to_blocks(parts, &format!("{path}.content"))?),
                    Some(_) => return Err(invalid(&format!("{path}.content"), "must be a string or a list of parts")),
                };
                ("user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})])
            }
            other => {
                return Err(invalid(
                    &format!("{path}.role"),
                    &format!("unsupported role \"{other}\" (expected system, user, assistant or tool)"),
                ))
            }
        };
        if blocks.is_empty() {
            continue; // e.g. an assistant message with neither content nor tool calls
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // Tool results must open the user turn that answers a tool use.
            blocks.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            json!({"role": role, "content": collapse_blocks(blocks)})
        })
        .collect();
    let system = match system.as_slice() {
        [] => None,
        blocks if blocks.iter().all(|b| b.get("cache_control").is_none()) => {
            let texts: Vec<&str> = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
            Some(Value::String(texts.join("\n")))
        }
        _ => Some(Value::Array(system)),
    };
    Ok((system, messages))
}

/// A single plain text block is sent as a string (the form every Anthropic model accepts).
fn collapse_blocks(mut blocks: Vec<Value>) -> Value {
    let plain = |b: &Value| b.as_object().is_some_and(|o| o.len() == 2 && o.contains_key("text"));
    if blocks.len() == 1 && blocks.first().is_some_and(plain) {
        if let Some(Value::String(text)) = blocks.pop().and_then(|mut b| b.get_mut("text").map(Value::take)) {
            return Value::String(text);
        }
    }
    Value::Array(blocks)
}

fn text_block(text: String) -> Value {
    json!({"type": "text", "text": text})
}

fn system_blocks(content: Value, path: &str) -> Result<Vec<Value>> {
    match content {
        Value::String(s) => Ok(vec![text_block(s)]),
        Value::Array(parts) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| match part_to_block(part, &format!("{path}[{j}]"))? {
                block if block.get("type").and_then(Value::as_str) == Some("text") => Ok(block),
                _ => Err(invalid(&format!("{path}[{j}]"), "system messages may hold text parts only")),
            })
            .collect(),
        _ => Err(invalid(path, "must be a string or a list of text parts")),
    }
}

fn user_blocks(content: Value, path: &str) -> Result<Vec<Value>> {
    match content {
        Value::String(s) => Ok(vec![text_block(s)]),
        Value::Array(parts) => parts_to_blocks(parts, path),
        _ => Err(invalid(path, "must be a string or a list of content parts")),
    }
}

fn parts_to_blocks(parts: Vec<Value>, path: &str) -> Result<Vec<Value>> {
    parts.into_iter().enumerate().map(|(j, part)| part_to_block(part, &format!("{path}[{j}]"))).collect()
}

/// One OpenAI content part as an Anthropic content block.
fn part_to_block(part: Value, path: &str) -> Result<Value> {
    let part = match part {
        Value::String(s) => return Ok(text_block(s)),
        Value::Object(part) => part,
        _ => return Err(invalid(path, "must be a content part object")),
    };
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let Some(text) = part.get("text").and_then(Value::as_str) else {
                return Err(invalid(&format!("{path}.text"), "is required"));
            };
            let mut block = text_block(text.to_string());
            if let (Some(cache), Some(block)) = (part.get("cache_control"), block.as_object_mut()) {
                block.insert("cache_control".into(), cache.clone());
            }
            Ok(block)
        }
        Some("image_url") => {
            let url = image_url(&part).ok_or_else(|| invalid(&format!("{path}.image_url.url"), "is required"))?;
            if let Some((media_type, data)) = data_url(url) {
                Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
            } else if url.starts_with("https://") || url.starts_with("http://") {
                Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
            } else {
                Err(invalid(&format!("{path}.image_url.url"), "must be a base64 data: URL or an http(s) URL"))
            }
        }
        Some("file") => {
            let file_data = part.get("file").and_then(|f| f.get("file_data")).and_then(Value::as_str);
            match file_data.and_then(data_url) {
                Some((media_type, data)) => Ok(json!({
                    "type": "document",
                    "source": {"type": "base64", "media_type": media_type, "data": data},
                })),
                None => Err(invalid(&format!("{path}.file"), "anthropic accepts files only as a file_data data: URL")),
            }
        }
        // Anthropic-native blocks sent by a client that knows where it is going.
        Some("image" | "document") => Ok(Value::Object(part)),
        Some("input_audio") => Err(invalid(path, "anthropic does not accept audio input")),
        Some(other) => Err(invalid(&format!("{path}.type"), &format!("unsupported content part type \"{other}\""))),
        None => Err(invalid(&format!("{path}.type"), "is required")),
    }
}

fn assistant_blocks(content: Option<Value>, tool_calls: Option<Value>, path: &str) -> Result<Vec<Value>> {
    let mut blocks = Vec::new();
    match content {
        None => {}
        Some(Value::String(s)) if !s.is_empty() => blocks.push(text_block(s)),
        Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            for (j, part) in parts.into_iter().enumerate() {
                let text = match &part {
                    Value::String(s) => Some(s.as_str()),
                    _ => part.get("text").or_else(|| part.get("refusal")).and_then(Value::as_str),
                };
                match text {
                    Some("") => {}
                    Some(text) => blocks.push(text_block(text.to_string())),
                    None => {
                        return Err(invalid(&format!("{path}.content[{j}]"), "assistant content parts must be text"))
                    }
                }
            }
        }
        Some(_) => return Err(invalid(&format!("{path}.content"), "must be a string or a list of text parts")),
    }
    match tool_calls {
        None => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                let path = format!("{path}.tool_calls[{j}]");
                let (id, name, input) = parse_tool_call(call, &path)?;
                blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            }
        }
        Some(_) => return Err(invalid(&format!("{path}.tool_calls"), "must be a list")),
    }
    Ok(blocks)
}

/// `(id, name, arguments as a JSON object)` of an OpenAI assistant tool call.
pub(super) fn parse_tool_call<'a>(call: &'a Value, path: &str) -> Result<(&'a str, &'a str, Value)> {
    let id = call.get("id").and_then(Value::as_str).ok_or_else(|| invalid(&format!("{path}.id"), "is required"))?;
    let function = call.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{path}.function.name"), "is required"))?;
    let input = match function.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(other) => other.clone(),
    };
    if !input.is_object() {
        return Err(invalid(&format!("{path}.function.arguments"), "must be a JSON object encoded as a string"));
    }
    Ok((id, name, input))
}

fn tool_to_anthropic(i: usize, tool: &Value) -> Result<Value> {
    let path = format!("tools[{i}]");
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        // An Anthropic-native tool (e.g. `web_search_20250305`, or a custom tool in its shape).
        Some(_) if tool.get("name").is_some() => return Ok(tool.clone()),
        _ => return Err(invalid(&format!("{path}.type"), "must be \"function\"")),
    }
    let function = tool.get("function").ok_or_else(|| invalid(&format!("{path}.function"), "is required"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{path}.function.name"), "is required"))?;
    let schema = match function.get("parameters") {
        Some(schema @ Value::Object(_)) => schema.clone(),
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut out = json!({"name": name, "input_schema": schema});
    if let (Some(description), Some(out)) = (function.get("description").filter(|d| d.is_string()), out.as_object_mut())
    {
        out.insert("description".into(), description.clone());
    }
    Ok(out)
}

fn tool_choice_to_anthropic(choice: &Value) -> Result<Value> {
    let problem =
        || invalid("tool_choice", "must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", ...}");
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(problem()),
        },
        Value::Object(o) => {
            let name = o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => Ok(json!({"type": "tool", "name": name})),
                // Already in Anthropic's shape.
                (Some("auto" | "any" | "none" | "tool"), _) => Ok(choice.clone()),
                _ => Err(problem()),
            }
        }
        _ => Err(problem()),
    }
}

fn openai_finish_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    Some(match stop_reason? {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    })
}

/// Anthropic usage: prompt tokens include cache writes and reads (OpenAI counts cached
/// tokens inside `prompt_tokens`).
fn anthropic_usage(usage: &Value) -> Usage {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: count("input_tokens")
            .saturating_add(count("cache_creation_input_tokens"))
            .saturating_add(count("cache_read_input_tokens")),
        completion_tokens: count("output_tokens"),
    }
}

/// Messages event stream → OpenAI chunks.
pub struct StreamToOpenAi {
    chunks: ChunkWriter,
    started: bool,
    /// Anthropic content block index → OpenAI `tool_calls[].index`.
    tools: Vec<(u64, u64)>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    finish_sent: bool,
    stopped: bool,
    failed: bool,
    done: bool,
}

impl StreamToOpenAi {
    pub fn new(op: Operation, model: &str, now_ms: u64) -> Self {
        StreamToOpenAi {
            chunks: ChunkWriter::new(op, "msg_unknown", model, now_ms),
            started: false,
            tools: Vec::new(),
            prompt_tokens: None,
            completion_tokens: None,
            finish_sent: false,
            stopped: false,
            failed: false,
            done: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunks.role(out, 0);
        }
    }

    fn record_usage(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage.filter(|u| u.is_object()) else { return };
        if usage.get("input_tokens").is_some_and(Value::is_u64) {
            self.prompt_tokens = Some(anthropic_usage(usage).prompt_tokens);
        }
        if let Some(output) = usage.get("output_tokens").and_then(Value::as_u64) {
            self.completion_tokens = Some(output);
        }
    }
}

impl StreamTranslate for StreamToOpenAi {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed || self.stopped || self.done {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else { return };
        let kind = event.event.as_deref().or_else(|| data.get("type").and_then(Value::as_str)).unwrap_or_default();
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let message = data.get("message");
                if let Some(id) = message.and_then(|m| m.get("id")).and_then(Value::as_str) {
                    self.chunks.id = id.to_string();
                }
                if let Some(model) = message.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.chunks.model = model.to_string();
                }
                self.record_usage(message.and_then(|m| m.get("usage")));
                self.start(out);
            }
            "content_block_start" => {
                self.start(out);
                let block = data.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.and_then(|b| b.get("text")).and_then(Value::as_str).unwrap_or_default();
                        self.chunks.text(out, 0, text);
                    }
                    Some("tool_use") => {
                        let n = self.tools.len() as u64;
                        self.tools.push((index, n));
                        let arguments = match block.and_then(|b| b.get("input")) {
                            Some(Value::Object(input)) if !input.is_empty() => Value::Object(input.clone()).to_string(),
                            _ => String::new(),
                        };
                        self.chunks.tool_call(
                            out,
                            0,
                            json!({
                                "index": n,
                                "id": block.and_then(|b| b.get("id")).cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {
                                    "name": block.and_then(|b| b.get("name")).cloned().unwrap_or(Value::Null),
                                    "arguments": arguments,
                                },
                            }),
                        );
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.start(out);
                let delta = data.get("delta");
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.and_then(|d| d.get("text")).and_then(Value::as_str).unwrap_or_default();
                        self.chunks.text(out, 0, text);
                    }
                    Some("input_json_delta") => {
                        let partial =
                            delta.and_then(|d| d.get("partial_json")).and_then(Value::as_str).unwrap_or_default();
                        let tool = self.tools.iter().find(|(block, _)| *block == index).map(|(_, n)| *n);
                        if let Some(n) = tool.filter(|_| !partial.is_empty()) {
                            self.chunks.tool_call(out, 0, json!({"index": n, "function": {"arguments": partial}}));
                        }
                    }
                    _ => {} // thinking_delta, signature_delta, citations_delta
                }
            }
            "message_delta" => {
                self.start(out);
                self.record_usage(data.get("usage"));
                let stop = data.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                if let Some(reason) = openai_finish_reason(stop) {
                    self.chunks.finish(out, 0, reason);
                    self.finish_sent = true;
                }
            }
            "message_stop" => {
                self.start(out);
                if !self.finish_sent {
                    self.chunks.finish(out, 0, "stop");
                    self.finish_sent = true;
                }
                self.stopped = true;
            }
            "error" => {
                let error = data.get("error");
                let message = error.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("origin error");
                let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("api_error");
                write_error_chunk(out, &format!("origin stream failed ({kind}): {message}"), "origin_stream_error");
                self.failed = true;
            }
            _ => {} // ping, content_block_stop, future event types
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if !self.stopped && !self.failed {
            write_error_chunk(out, "origin stream ended early", "origin_stream_cut");
        }
        if let Some(usage) = self.usage() {
            self.chunks.usage(out, usage);
        }
        sse::write_done(out);
    }

    fn usage(&self) -> Option<Usage> {
        if self.prompt_tokens.is_none() && self.completion_tokens.is_none() {
            return None;
        }
        Some(Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound: Anthropic Messages clients in front of any (OpenAI-shaped) chat endpoint.

/// A Messages API request → an OpenAI chat request. `model` is kept as-is (it names one of
/// our endpoints). Validation errors are 400s naming the field in Anthropic's dotted style.
pub fn messages_request_to_openai(mut body: Map<String, Value>) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(model) = body.remove("model") {
        out.insert("model".into(), model);
    }
    let messages = match take(&mut body, "messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => return Err(invalid("messages", "at least one message is required")),
        Some(_) => return Err(invalid("messages", "must be a list of messages")),
        None => return Err(invalid("messages", "Field required")),
    };
    let max_tokens = match take(&mut body, "max_tokens") {
        Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| invalid("max_tokens", "must be a positive integer"))?,
        None => return Err(invalid("max_tokens", "Field required")),
    };
    let mut chat = Vec::new();
    match take(&mut body, "system") {
        None => {}
        Some(Value::String(s)) => chat.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let texts = blocks
                .iter()
                .enumerate()
                .map(|(j, b)| block_text(b).ok_or_else(|| invalid(&format!("system.{j}"), "must be a text block")))
                .collect::<Result<Vec<_>>>()?;
            chat.push(json!({"role": "system", "content": texts.join("\n")}));
        }
        Some(_) => return Err(invalid("system", "must be a string or a list of text blocks")),
    }
    for (i, message) in messages.into_iter().enumerate() {
        let path = format!("messages.{i}");
        let Value::Object(mut message) = message else {
            return Err(invalid(&path, "must be an object"));
        };
        let content =
            take(&mut message, "content").ok_or_else(|| invalid(&format!("{path}.content"), "Field required"))?;
        match message.get("role").and_then(Value::as_str) {
            Some("user") => user_to_openai(content, &format!("{path}.content"), &mut chat)?,
            Some("assistant") => chat.push(assistant_to_openai(content, &format!("{path}.content"))?),
            _ => return Err(invalid(&format!("{path}.role"), "must be \"user\" or \"assistant\"")),
        }
    }
    out.insert("messages".into(), Value::Array(chat));
    out.insert("max_tokens".into(), max_tokens.into());
    for key in ["temperature", "top_p"] {
        if let Some(value) = take(&mut body, key) {
            number(key, &value)?;
            out.insert(key.into(), value);
        }
    }
    match take(&mut body, "stop_sequences") {
        None => {}
        Some(Value::Array(stops)) => {
            if stops.iter().any(|s| !s.is_string()) {
                return Err(invalid("stop_sequences", "must be a list of strings"));
            }
            if !stops.is_empty() {
                out.insert("stop".into(), Value::Array(stops));
            }
        }
        Some(_) => return Err(invalid("stop_sequences", "must be a list of strings")),
    }
    if let Some(stream) = take(&mut body, "stream") {
        let stream = stream.as_bool().ok_or_else(|| invalid("stream", "must be a boolean"))?;
        out.insert("stream".into(), Value::Bool(stream));
    }
    match take(&mut body, "tools") {
        None => {}
        Some(Value::Array(tools)) => {
            let tools = tools
                .iter()
                .enumerate()
                .map(|(i, tool)| {
                    let path = format!("tools.{i}");
                    let name = tool.get("name").and_then(Value::as_str);
                    let schema = tool.get("input_schema").filter(|s| s.is_object());
                    let (Some(name), Some(schema)) = (name, schema) else {
                        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
                        return Err(invalid(
                            &path,
                            &format!(
                                "only custom tools with a name and an input_schema are supported (got \"{kind}\")"
                            ),
                        ));
                    };
                    let mut function = json!({"name": name, "parameters": schema});
                    if let (Some(d), Some(f)) =
                        (tool.get("description").filter(|d| d.is_string()), function.as_object_mut())
                    {
                        f.insert("description".into(), d.clone());
                    }
                    Ok(json!({"type": "function", "function": function}))
                })
                .collect::<Result<Vec<_>>>()?;
            if !tools.is_empty() {
                out.insert("tools".into(), Value::Array(tools));
            }
        }
        Some(_) => return Err(invalid("tools", "must be a list")),
    }
    if let Some(choice) = take(&mut body, "tool_choice") {
        let name = choice.get("name").and_then(Value::as_str);
        let mapped = match (choice.get("type").and_then(Value::as_str), name) {
            (Some("auto"), _) => json!("auto"),
            (Some("any"), _) => json!("required"),
            (Some("none"), _) => json!("none"),
            (Some("tool"), Some(name)) => json!({"type": "function", "function": {"name": name}}),
            (Some("tool"), None) => return Err(invalid("tool_choice.name", "Field required")),
            _ => return Err(invalid("tool_choice.type", "must be \"auto\", \"any\", \"tool\" or \"none\"")),
        };
        if out.contains_key("tools") {
            out.insert("tool_choice".into(), mapped);
            if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    if let Some(user) = body.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        out.insert("user".into(), Value::String(user.to_string()));
    }
    // top_k, thinking, service_tier, container, mcp_servers: no OpenAI counterpart; dropped.
    Ok(out)
}

fn block_text(block: &Value) -> Option<&str> {
    (block.get("type").and_then(Value::as_str) == Some("text")).then(|| block.get("text").and_then(Value::as_str))?
}

/// A user turn: `tool_result` blocks become `tool` messages (first, as OpenAI wants them right
/// after the assistant's tool calls), the rest one user message.
fn user_to_openai(content: Value, path: &str, chat: &mut Vec<Value>) -> Result<()> {
    let blocks = match content {
        Value::String(s) => {
            chat.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(path, "must be a string or a list of content blocks")),
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("{path}.{j}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block_text(block).ok_or_else(|| invalid(&format!("{path}.text"), "Field required"))?;
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("image") => {
                let url = source_url(block.get("source"), &format!("{path}.source"))?;
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("document") => {
                let source = block.get("source");
                if source.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("text") {
                    let text = source.and_then(|s| s.get("data")).and_then(Value::as_str).unwrap_or_default();
                    parts.push(json!({"type": "text", "text": text}));
                } else {
                    let url = source_url(source, &format!("{path}.source"))?;
                    if !url.starts_with("data:") {
                        return Err(invalid(&format!("{path}.source"), "documents must be base64 or text sources"));
                    }
                    let name = block.get("title").and_then(Value::as_str).unwrap_or("document.pdf");
                    parts.push(json!({"type": "file", "file": {"file_data": url, "filename": name}}));
                }
            }
            Some("tool_result") => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&format!("{path}.tool_use_id"), "Field required"))?;
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => inner
                        .iter()
                        .enumerate()
                        .map(|(k, b)| {
                            block_text(b).ok_or_else(|| {
                                invalid(&format!("{path}.content.{k}"), "only text is supported inside tool results")
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                        .join("\n"),
                    Some(_) => return Err(invalid(&format!("{path}.content"), "must be a string or a list of blocks")),
                };
                chat.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            Some(other) => {
                return Err(invalid(&format!("{path}.type"), &format!("unsupported content block type \"{other}\"")))
            }
            None => return Err(invalid(&format!("{path}.type"), "Field required")),
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            let text = only.get("text").cloned().unwrap_or_default();
            chat.push(json!({"role": "user", "content": text}));
        }
        _ => chat.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

/// An Anthropic image/document `source` as a URL (base64 sources become data: URLs).
fn source_url(source: Option<&Value>, path: &str) -> Result<String> {
    let field = |key: &str| source.and_then(|s| s.get(key)).and_then(Value::as_str);
    match field("type") {
        Some("base64") => match (field("media_type"), field("data")) {
            (Some(media_type), Some(data)) => Ok(format!("data:{media_type};base64,{data}")),
            _ => Err(invalid(path, "base64 sources need media_type and data")),
        },
        Some("url") => {
            field("url").map(str::to_string).ok_or_else(|| invalid(&format!("{path}.url"), "Field required"))
        }
        _ => Err(invalid(&format!("{path}.type"), "must be \"base64\" or \"url\"")),
    }
}

fn assistant_to_openai(content: Value, path: &str) -> Result<Value> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({"role": "assistant", "content": s})),
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(path, "must be a string or a list of content blocks")),
    };
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("{path}.{j}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.get_or_insert_with(String::new).push_str(block_text(block).unwrap_or_default()),
            Some("tool_use") => {
                let (Some(id), Some(name)) =
                    (block.get("id").and_then(Value::as_str), block.get("name").and_then(Value::as_str))
                else {
                    return Err(invalid(&path, "tool_use blocks need an id and a name"));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            Some("thinking" | "redacted_thinking") => {} // no OpenAI counterpart
            Some(other) => {
                return Err(invalid(&format!("{path}.type"), &format!("unsupported content block type \"{other}\"")))
            }
            None => return Err(invalid(&format!("{path}.type"), "Field required")),
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if let (false, Some(m)) = (calls.is_empty(), message.as_object_mut()) {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(message)
}

fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn message_id(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) => format!("msg_{id}"),
        None => "msg_gateway".to_string(),
    }
}

/// A buffered OpenAI `chat.completion` → a Messages API response.
pub fn openai_response_to_messages(body: &[u8]) -> Result<Vec<u8>> {
    let value = parse_json(body)?;
    let choice = value.get("choices").and_then(|c| c.get(0)).ok_or_else(|| bad_response("no choices"))?;
    let message = choice.get("message").ok_or_else(|| bad_response("a choice without a message"))?;
    let mut content = Vec::new();
    match message.get("content") {
        Some(Value::String(s)) if !s.is_empty() => content.push(text_block(s.clone())),
        Some(Value::Array(parts)) => {
            let texts: String = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            if !texts.is_empty() {
                content.push(text_block(texts));
            }
        }
        _ => {}
    }
    for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function");
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        let input = if arguments.trim().is_empty() {
            json!({})
        } else {
            // A model's malformed arguments are kept verbatim rather than lost.
            serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()))
        };
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or("toolu_gateway"),
            "name": function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default(),
            "input": input,
        }));
    }
    let usage = openai_usage(&value).unwrap_or_default();
    let answer = json!({
        "id": message_id(value.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": value.get("model").and_then(Value::as_str).unwrap_or_default(),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    });
    json_body(&answer)
}

/// Anthropic's error body for a gateway error, for `/v1/messages` clients.
pub fn messages_error_body(error: &GatewayError) -> Vec<u8> {
    let kind = match error.status.as_u16() {
        400 | 404 | 405 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": error.message}});
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text(u64),
    /// `(OpenAI tool_calls index, block index)`.
    Tool(u64, u64),
}

/// OpenAI `chat.completion.chunk` stream → Messages event stream.
pub struct OpenAiStreamToMessages {
    model: String,
    started: bool,
    next_block: u64,
    open: Option<Block>,
    /// OpenAI `tool_calls[].index` → content block index.
    tools: Vec<(u64, u64)>,
    stop_reason: Option<&'static str>,
    usage: Option<Usage>,
    ended: bool,
}

impl OpenAiStreamToMessages {
    /// `model` is what the Messages client is told it talks to.
    pub fn new(model: &str) -> Self {
        OpenAiStreamToMessages {
            model: model.to_string(),
            started: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            stop_reason: None,
            usage: None,
            ended: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, id: Option<&str>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let usage = self.usage.unwrap_or_default();
        let message = json!({
            "id": message_id(id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        });
        sse::write_event(out, "message_start", &json!({"type": "message_start", "message": message}));
    }

    fn open_block(&mut self, out: &mut Vec<u8>, block: Value) -> u64 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        sse::write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(Block::Text(index) | Block::Tool(_, index)) = self.open.take() {
            sse::write_event(out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn delta(out: &mut Vec<u8>, index: u64, delta: Value) {
        sse::write_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        let index = match self.open {
            Some(Block::Text(index)) => index,
            _ => {
                let index = self.open_block(out, json!({"type": "text", "text": ""}));
                self.open = Some(Block::Text(index));
                index
            }
        };
        Self::delta(out, index, json!({"type": "text_delta", "text": text}));
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, call: &Value) {
        let tool = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let known = self.tools.iter().find(|(t, _)| *t == tool).map(|(_, b)| *b);
        let index = match known {
            Some(index) => index,
            None => {
                let fallback = format!("toolu_{}", self.next_block);
                let id = call.get("id").and_then(Value::as_str).unwrap_or(&fallback).to_string();
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
                let index = self.open_block(out, json!({"type": "tool_use", "id": id, "name": name, "input": {}}));
                self.open = Some(Block::Tool(tool, index));
                self.tools.push((tool, index));
                index
            }
        };
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        if !arguments.is_empty() {
            Self::delta(out, index, json!({"type": "input_json_delta", "partial_json": arguments}));
        }
    }

    /// The normal end: close the open block, then `message_delta` and `message_stop`.
    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(out, None);
        self.close_block(out);
        let usage = self.usage.unwrap_or_default();
        sse::write_event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
            }),
        );
        sse::write_event(out, "message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }

    fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        sse::write_event(out, "error", &json!({"type": "error", "error": {"type": kind, "message": message}}));
        self.ended = true;
    }
}

impl StreamTranslate for OpenAiStreamToMessages {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if event.data.trim() == "[DONE]" {
            self.end(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else { return };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("origin error");
            let kind = error
                .get("type")
                .and_then(Value::as_str)
                .filter(|k| matches!(*k, "invalid_request_error" | "rate_limit_error" | "overloaded_error"))
                .unwrap_or("api_error");
            self.error(out, kind, message);
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()).and_then(|_| openai_usage(&chunk)) {
            self.usage = Some(usage);
        }
        self.start(out, chunk.get("id").and_then(Value::as_str));
        let choices = chunk.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        // Messages answers have one candidate: follow choice 0.
        for choice in choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
            let delta = choice.get("delta");
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.text(out, text);
            }
            for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                self.tool_call(out, call);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.stop_reason = Some(stop_reason(Some(reason)));
                self.close_block(out);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.stop_reason.is_some() {
            // Finished answer whose `[DONE]` never came: close it normally.
            self.end(out);
        } else {
            self.error(out, "api_error", "origin stream ended early");
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI-shape helpers shared with gemini.rs.

pub(super) fn invalid(field: &str, problem: &str) -> GatewayError {
    GatewayError::bad_request(ErrorCode::InvalidRequest, format!("{field}: {problem}"))
}

pub(super) fn unsupported(provider: &str, op: Operation) -> GatewayError {
    let what = match op {
        Operation::Predict => "MLflow model predictions".to_string(),
        other => format!("{} requests", other.as_str()),
    };
    GatewayError::bad_request(
        ErrorCode::UnsupportedOperation,
        format!("the {provider} provider does not support {what}"),
    )
}

/// Removes `key`, treating an explicit `null` as absent.
pub(super) fn take(body: &mut Map<String, Value>, key: &str) -> Option<Value> {
    body.remove(key).filter(|v| !v.is_null())
}

pub(super) fn number(field: &str, value: &Value) -> Result<f64> {
    value.as_f64().ok_or_else(|| invalid(field, "must be a number"))
}

/// `max_completion_tokens`, else `max_tokens`, as a positive integer.
pub(super) fn max_tokens(body: &mut Map<String, Value>) -> Result<Option<u64>> {
    let newer = take(body, "max_completion_tokens");
    let legacy = take(body, "max_tokens");
    let (field, value) = match (newer, legacy) {
        (Some(v), _) => ("max_completion_tokens", v),
        (None, Some(v)) => ("max_tokens", v),
        (None, None) => return Ok(None),
    };
    value.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| invalid(field, "must be a positive integer"))
}

/// OpenAI `stop`: a string or a list of strings.
pub(super) fn stop_sequences(value: Option<Value>) -> Result<Vec<String>> {
    let problem = || invalid("stop", "must be a string or a list of strings");
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(problem()),
            })
            .collect(),
        Some(_) => Err(problem()),
    }
}

/// The single prompt of a completions request (`prompt` may be a one-element list).
pub(super) fn completion_prompt(body: &mut Map<String, Value>, provider: &str) -> Result<String> {
    match take(body, "prompt") {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(mut items)) => match (items.len(), items.pop()) {
            (1, Some(Value::String(s))) => Ok(s),
            (0, _) => Err(invalid("prompt", "must not be empty")),
            (_, Some(Value::String(_))) => Err(GatewayError::unprocessable(
                ErrorCode::UnsupportedParameter,
                format!("prompt: the {provider} provider takes one prompt per request"),
            )),
            _ => Err(invalid("prompt", &format!("must be a string (token arrays are not supported by {provider})"))),
        },
        Some(_) => Err(invalid("prompt", "must be a string")),
        None => Err(invalid("prompt", "is required")),
    }
}

/// The URL of an `image_url` part (`{"url": ...}` or a bare string).
pub(super) fn image_url(part: &Map<String, Value>) -> Option<&str> {
    let value = part.get("image_url")?;
    value.as_str().or_else(|| value.get("url").and_then(Value::as_str))
}

/// `(media type, base64 data)` of a `data:<type>;base64,<data>` URL.
pub(super) fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let media_type = meta.split(';').next().filter(|m| !m.is_empty()).unwrap_or("application/octet-stream");
    Some((media_type, data))
}

/// One choice of an OpenAI answer.
pub(super) struct OpenAiChoice {
    pub index: u64,
    pub text: Option<String>,
    pub tool_calls: Vec<Value>,
    pub finish_reason: Option<&'static str>,
}

/// A `chat.completion` (or, for the completions API, `text_completion`) body.
pub(super) fn openai_answer(
    op: Operation,
    id: &str,
    model: &str,
    now_ms: u64,
    choices: Vec<OpenAiChoice>,
    usage: Option<Usage>,
) -> Value {
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|c| {
            if op == Operation::Completions {
                return json!({
                    "index": c.index,
                    "text": c.text.unwrap_or_default(),
                    "logprobs": null,
                    "finish_reason": c.finish_reason,
                });
            }
            let message = assistant_message(c.text, c.tool_calls);
            json!({"index": c.index, "message": message, "logprobs": null, "finish_reason": c.finish_reason})
        })
        .collect();
    let object = if op == Operation::Completions { "text_completion" } else { "chat.completion" };
    let mut answer = json!({"id": id, "object": object, "created": now_ms / 1000, "model": model, "choices": choices});
    if let (Some(usage), Some(a)) = (usage, answer.as_object_mut()) {
        a.insert("usage".into(), usage_json(usage));
    }
    answer
}

/// Writes OpenAI stream chunks: `chat.completion.chunk`, or `text_completion` chunks for the
/// completions API (which carry no role and no tool calls).
pub(super) struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub text_completion: bool,
}

impl ChunkWriter {
    pub fn new(op: Operation, id: &str, model: &str, now_ms: u64) -> Self {
        ChunkWriter {
            id: id.to_string(),
            model: model.to_string(),
            created: now_ms / 1000,
            text_completion: op == Operation::Completions,
        }
    }

    fn write(&self, out: &mut Vec<u8>, choices: Value) {
        let object = if self.text_completion { "text_completion" } else { "chat.completion.chunk" };
        let chunk =
            json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        sse::write_data(out, &chunk);
    }

    fn delta(&self, out: &mut Vec<u8>, index: u64, delta: Value, finish: Option<&str>) {
        self.write(out, json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]));
    }

    /// The opening chunk of a choice.
    pub fn role(&self, out: &mut Vec<u8>, index: u64) {
        if !self.text_completion {
            self.delta(out, index, json!({"role": "assistant", "content": ""}), None);
        }
    }

    pub fn text(&self, out: &mut Vec<u8>, index: u64, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.text_completion {
            self.write(out, json!([{"index": index, "text": text, "logprobs": null, "finish_reason": null}]));
        } else {
            self.delta(out, index, json!({"content": text}), None);
        }
    }

    /// One `delta.tool_calls[]` entry.
    pub fn tool_call(&self, out: &mut Vec<u8>, index: u64, call: Value) {
        if !self.text_completion {
            self.delta(out, index, json!({"tool_calls": [call]}), None);
        }
    }

    pub fn finish(&self, out: &mut Vec<u8>, index: u64, reason: &str) {
        if self.text_completion {
            self.write(out, json!([{"index": index, "text": "", "logprobs": null, "finish_reason": reason}]));
        } else {
            self.delta(out, index, json!({}), Some(reason));
        }
    }

    /// The final usage chunk (`choices: []`, as OpenAI sends with `include_usage`).
    pub fn usage(&self, out: &mut Vec<u8>, usage: Usage) {
        let object = if self.text_completion { "text_completion" } else { "chat.completion.chunk" };
        let chunk = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(usage),
        });
        sse::write_data(out, &chunk);
    }
}

/// The error chunk a client sees when the origin's stream fails mid-answer.
pub(super) fn write_error_chunk(out: &mut Vec<u8>, message: &str, code: &str) {
    sse::write_data(out, &json!({"error": {"message": message, "type": "upstream_error", "code": code}}));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::pipeline::stream::StreamPump;
    use crate::gateway::providers::test_support::{self, TestSecrets};
    use crate::gateway::wire::sse::SseParser;
    use http::StatusCode;

    const NOW: u64 = 1_700_000_000_123;
    const SECRETS: TestSecrets = TestSecrets(&[("ANTHROPIC_API_KEY", "sk-ant-test")]);

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn adapter() -> Anthropic {
        test_support::adapter(Anthropic::from_config, json!({"anthropic_api_key": "$ANTHROPIC_API_KEY"}))
    }

    fn call(op: Operation, body: Value, stream: bool) -> Call<'static> {
        test_support::call(op, "claude-sonnet-4-5", body, DEFAULT_BASE, stream, NOW)
    }

    fn request(op: Operation, body: Value, stream: bool) -> Result<(Request<Vec<u8>>, Value)> {
        let req = adapter().build_request(call(op, body, stream), &SECRETS)?;
        let sent = test_support::sent(&req);
        Ok((req, sent))
    }

    fn sent(body: Value) -> Value {
        request(Operation::Chat, body, false).unwrap().1
    }

    fn reply(op: Operation, status: StatusCode, body: &[u8]) -> Result<Translated> {
        adapter().translate_response(Reply { op, status, body, model: "claude-sonnet-4-5", now_ms: NOW })
    }

    /// Runs `input` through a fresh pump at every split point (and byte by byte), checks every
    /// run writes the same bytes, and returns the parsed client events.
    fn pump(make: impl Fn() -> Vec<StreamTranslator>, input: &[u8]) -> (Vec<(Option<String>, Value)>, Option<Usage>) {
        let mut whole = StreamPump::new(make());
        let mut expected = whole.chunk(input);
        expected.extend(whole.end());
        for split in 0..=input.len() {
            let mut p = StreamPump::new(make());
            let mut out = p.chunk(&input[..split]);
            out.extend(p.chunk(&input[split..]));
            out.extend(p.end());
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected), "split at {split}");
        }
        let mut p = StreamPump::new(make());
        let mut out: Vec<u8> = input.iter().flat_map(|b| p.chunk(std::slice::from_ref(b))).collect();
        out.extend(p.end());
        assert_eq!(out, expected, "byte by byte");
        (parse_sse(&expected), whole.summary().usage)
    }

    fn parse_sse(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
        let mut parser = SseParser::new();
        let mut events = parser.push(bytes);
        events.extend(parser.finish());
        events
            .into_iter()
            .map(|e| {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data));
                (e.event, data)
            })
            .collect()
    }

    fn data(events: &[(Option<String>, Value)]) -> Vec<Value> {
        events.iter().map(|(_, d)| d.clone()).collect()
    }

    // --- config -------------------------------------------------------------------------------

    #[test]
    fn config_defaults_and_issues() {
        let p = adapter();
        assert_eq!(p.default_base(), "https://api.anthropic.com/v1");
        assert_eq!(p.version, "2023-06-01");
        assert_eq!(p.api_key, SecretRef::Env("ANTHROPIC_API_KEY".into()));

        let mut issues = Issues::default();
        let config = json!({"anthropic_versoin": "2023-06-01", "anthropic_api_base": "api.example.com"});
        assert!(Anthropic::from_config("endpoints[0].model.config", &object(config), &mut issues).is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"endpoints[0].model.config.anthropic_api_key: is required (use a \"$SECRET_NAME\" reference)"
                    .to_string()
            ),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("endpoints[0].model.config.anthropic_versoin: unknown anthropic config key")
                    && t.contains("did you mean \"anthropic_version\"")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.starts_with("endpoints[0].model.config.anthropic_api_base:")), "{text:?}");
        assert_eq!(text.len(), 3, "{text:?}");

        let mut issues = Issues::default();
        let config = json!({"anthropic_api_key": "k", "anthropic_version": "2024-01-01", "anthropic_api_base": "http://127.0.0.1:8081/v1"});
        let p = Anthropic::from_config("c", &object(config), &mut issues).unwrap();
        assert_eq!((p.version.as_str(), p.default_base()), ("2024-01-01", "http://127.0.0.1:8081/v1"));
    }

    // --- provider requests --------------------------------------------------------------------

    #[test]
    fn builds_messages_request_with_headers_and_defaults() {
        let (req, body) =
            request(Operation::Chat, json!({"messages": [{"role": "user", "content": "Hello, Claude"}]}), false)
                .unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri(), "https://api.anthropic.com/v1/messages");
        assert_eq!(req.headers()["x-api-key"], "sk-ant-test");
        assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
        assert_eq!(req.headers()["content-type"], "application/json");
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": "Hello, Claude"}],
                "max_tokens": 1024,
            })
        );
    }

    #[test]
    fn translates_a_conversation_with_system_images_tools_and_results() {
        let body = sent(json!({
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image, and the weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                ]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_02", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_01", "content": "18C and sunny"},
                {"role": "tool", "tool_call_id": "toolu_02", "content": [{"type": "text", "text": "14:05"}]},
                {"role": "user", "content": "Thanks!"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            }}, {"type": "function", "function": {"name": "get_time"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stop": "\n\nHuman:",
            "temperature": 1.6,
            "top_p": 0.9,
            "max_tokens": 300,
            "user": "user-42",
            "presence_penalty": 0.5,
            "seed": 7,
            "stream_options": {"include_usage": true},
        }));
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "system": "You are terse.\nUse tools.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in this image, and the weather in Paris?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C and sunny"},
                        {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "text", "text": "14:05"}]},
                        {"type": "text", "text": "Thanks!"},
                    ]},
                ],
                "max_tokens": 300,
                "temperature": 1.0,
                "top_p": 0.9,
                "stop_sequences": ["\n\nHuman:"],
                "tools": [
                    {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "description": "Current weather"},
                    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
                ],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "user-42"},
            })
        );
    }

    #[test]
    fn maps_parameters() {
        let body = sent(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 50, "max_tokens": 10, "temperature": 0.3, "stop": ["a", "b"],
            "top_k": 5, "n": 1, "metadata": {"project": "x"}, "service_tier": "flex",
        }));
        assert!(body.get("metadata").is_none());
        assert!(body.get("service_tier").is_none());
        assert_eq!(body["max_tokens"], 50);
        assert_eq!(body["temperature"], 0.3);
        assert_eq!(body["stop_sequences"], json!(["a", "b"]));
        assert_eq!(body["top_k"], 5);
        assert!(body.get("n").is_none());
        assert!(body.get("stream").is_none());

        for (choice, expected) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (json!({"type": "function", "function": {"name": "f"}}), json!({"type": "tool", "name": "f"})),
        ] {
            let body = sent(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": choice,
            }));
            assert_eq!(body["tool_choice"], expected);
        }
        // No tools, no tool_choice (Anthropic refuses it).
        let body = sent(json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}));
        assert!(body.get("tool_choice").is_none());

        let (_, body) =
            request(Operation::Chat, json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}), true)
                .unwrap();
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn completions_wrap_the_prompt() {
        let (req, body) =
            request(Operation::Completions, json!({"prompt": ["Say hi"], "max_tokens": 20, "stop": "."}), false)
                .unwrap();
        assert_eq!(req.uri(), "https://api.anthropic.com/v1/messages");
        assert_eq!(
            body,
            json!({
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 20,
                "stop_sequences": ["."],
            })
        );
        let e = request(Operation::Completions, json!({"prompt": ["a", "b"]}), false).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = request(Operation::Completions, json!({"prompt": [[1, 2]]}), false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = request(Operation::Completions, json!({}), false).unwrap_err();
        assert_eq!(e.message, "prompt: is required");
    }

    #[test]
    fn embeddings_and_predict_are_unsupported() {
        for op in [Operation::Embeddings, Operation::Predict] {
            let e = request(op, json!({"input": "x"}), false).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "unsupported_operation"));
            assert!(e.message.contains("anthropic"), "{}", e.message);
        }
        assert!(matches!(adapter().stream_mode(Operation::Embeddings, "m", 0), StreamMode::Buffered));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({}), "messages: is required"),
            (json!({"messages": []}), "messages: must be a non-empty list of messages"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role: is required"),
            (json!({"messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role: unsupported role"),
            (json!({"messages": [{"role": "user"}]}), "messages[0].content: is required"),
            (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id: is required"),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{oops"}}]}]}),
                "messages[0].tool_calls[0].function.arguments: must be a JSON object",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
                "messages[0].content[0]: anthropic does not accept audio input",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
                "max_tokens: must be a positive integer",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                "temperature: must be a number",
            ),
            (json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}), "stop: must be a string or a list"),
        ];
        for (body, expected) in cases {
            let e = request(Operation::Chat, body.clone(), false).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.starts_with(expected), "{body}: {}", e.message);
        }
        let e = request(Operation::Chat, json!({"messages": [{"role": "user", "content": "x"}], "n": 2}), false)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn missing_secret_is_a_config_error() {
        let mut issues = Issues::default();
        let p = Anthropic::from_config("c", &object(json!({"anthropic_api_key": "$NOPE"})), &mut issues).unwrap();
        let e = p.build_request(call(Operation::Chat, json!({"messages": []}), false), &SECRETS);
        // The request is invalid first; a valid one fails on the secret, naming only the reference.
        assert_eq!(e.unwrap_err().status, StatusCode::BAD_REQUEST);
        let body = json!({"messages": [{"role": "user", "content": "x"}]});
        let e = p.build_request(call(Operation::Chat, body, false), &SECRETS).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("$NOPE"));
    }

    // --- provider responses -------------------------------------------------------------------

    fn translated(op: Operation, body: Value) -> (Value, Option<Usage>) {
        let t = reply(op, StatusCode::OK, &serde_json::to_vec(&body).unwrap()).unwrap();
        (serde_json::from_slice(&t.body).unwrap(), t.usage)
    }

    #[test]
    fn translates_a_text_answer() {
        let (body, usage) = translated(
            Operation::Chat,
            json!({
                "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [{"type": "text", "text": "Hi! My name is Claude."}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 2095, "output_tokens": 503},
            }),
        );
        assert_eq!(
            body,
            json!({
                "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "claude-sonnet-4-5-20250929",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi! My name is Claude."},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
            })
        );
        assert_eq!(usage, Some(Usage { prompt_tokens: 2095, completion_tokens: 503 }));
    }

    #[test]
    fn translates_tool_use_and_length() {
        let (body, _) = translated(
            Operation::Chat,
            json!({
                "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "stop_reason": "tool_use", "stop_sequence": null,
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}},
                ],
                "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 3},
            }),
        );
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{
                "id": "toolu_01A09q90qw90lq917835lq9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"},
            }])
        );
        assert_eq!(body["usage"]["prompt_tokens"], 113);

        let (body, _) = translated(
            Operation::Completions,
            json!({"id": "msg_1", "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Once upon"}],
                   "stop_reason": "max_tokens", "usage": {"input_tokens": 3, "output_tokens": 2}}),
        );
        assert_eq!(body["object"], "text_completion");
        assert_eq!(
            body["choices"],
            json!([{"index": 0, "text": "Once upon", "logprobs": null, "finish_reason": "length"}])
        );
    }

    #[test]
    fn maps_origin_errors() {
        let body =
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
        let e = reply(Operation::Chat, StatusCode::BAD_REQUEST, body).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "origin_rejected"));
        assert!(e.message.contains("max_tokens: Field required"), "{}", e.message);
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit."}}"#;
        let e = reply(Operation::Chat, StatusCode::TOO_MANY_REQUESTS, body).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::TOO_MANY_REQUESTS, "origin_rate_limited"));
        let overloaded = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let e = reply(Operation::Chat, StatusCode::from_u16(529).unwrap(), overloaded).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(e.message.ends_with("Overloaded"));
        for bad in [&b"{\"trunc"[..], b"[]", b"{\"content\": \"x\"}"] {
            let e = reply(Operation::Chat, StatusCode::OK, bad).unwrap_err();
            assert_eq!(e.code, "origin_bad_response");
        }
    }

    // --- provider streams ---------------------------------------------------------------------

    const TEXT_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-sonnet-4-5-20250929\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Héllo\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \" wörld ✓\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
        "event: message_delta\n",
        "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\": \"message_stop\"}\n\n",
    );

    fn to_openai(op: Operation) -> impl Fn() -> Vec<StreamTranslator> {
        move || vec![StreamTranslator::AnthropicToOpenAi(StreamToOpenAi::new(op, "claude-sonnet-4-5", NOW))]
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    #[test]
    fn streams_text_as_openai_chunks() {
        let (events, usage) = pump(to_openai(Operation::Chat), TEXT_STREAM.as_bytes());
        assert_eq!(
            data(&events),
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Héllo"}), Value::Null),
                chunk(json!({"content": " wörld ✓"}), Value::Null),
                chunk(json!({}), json!("stop")),
                json!({
                    "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": "claude-sonnet-4-5-20250929", "choices": [],
                    "usage": {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40},
                }),
                json!("[DONE]"),
            ]
        );
        assert!(events.iter().all(|(name, _)| name.is_none()));
        assert_eq!(usage, Some(Usage { prompt_tokens: 25, completion_tokens: 15 }));
    }

    #[test]
    fn streams_completions_as_text_completion_chunks() {
        let (events, _) = pump(to_openai(Operation::Completions), TEXT_STREAM.as_bytes());
        let events = data(&events);
        assert_eq!(events.len(), 5, "{events:?}");
        assert_eq!(events[0]["object"], "text_completion");
        assert_eq!(events[0]["choices"][0]["text"], "Héllo");
        assert_eq!(events[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[3]["usage"]["total_tokens"], 40);
    }

    const TOOL_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn streams_tool_use_as_tool_call_deltas() {
        let (events, usage) = pump(to_openai(Operation::Chat), TOOL_STREAM.as_bytes());
        let deltas: Vec<Value> = data(&events).iter().map(|c| c["choices"][0].clone()).collect();
        assert_eq!(deltas[1]["delta"], json!({"content": "Okay"}));
        assert_eq!(
            deltas[2]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]})
        );
        assert_eq!(
            deltas[3]["delta"],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]})
        );
        assert_eq!(deltas[4]["delta"], json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"Paris\"}"}}]}));
        assert_eq!(deltas[5]["finish_reason"], "tool_calls");
        assert_eq!(events.len(), 8);
        assert_eq!(usage, Some(Usage { prompt_tokens: 472, completion_tokens: 89 }));
    }

    #[test]
    fn cut_streams_and_error_events_end_with_an_error_chunk() {
        let cut = TEXT_STREAM.split("event: content_block_stop").next().unwrap();
        let (events, usage) = pump(to_openai(Operation::Chat), cut.as_bytes());
        let events = data(&events);
        let n = events.len();
        assert_eq!(
            events[n - 3],
            json!({"error": {"message": "origin stream ended early", "type": "upstream_error", "code": "origin_stream_cut"}})
        );
        assert_eq!(events[n - 2]["usage"]["prompt_tokens"], 25);
        assert_eq!(events[n - 1], json!("[DONE]"));
        assert_eq!(usage.unwrap().completion_tokens, 1);

        let failed = format!(
            "{cut}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n"
        );
        let (events, _) = pump(to_openai(Operation::Chat), failed.as_bytes());
        let errors: Vec<&Value> = events.iter().map(|(_, d)| d).filter(|d| d.get("error").is_some()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0]["error"]["code"], "origin_stream_error");
        assert!(errors[0]["error"]["message"].as_str().unwrap().contains("Overloaded"));

        // Nothing at all: still a well-formed client stream.
        let (events, usage) = pump(to_openai(Operation::Chat), b"");
        assert_eq!(data(&events).last(), Some(&json!("[DONE]")));
        assert_eq!(usage, None);
        // Garbage is ignored, not a panic.
        let (events, _) = pump(
            to_openai(Operation::Chat),
            b"event: content_block_delta\ndata: {\"index\": -1, \"delta\": 3}\n\ndata: nope\n\n",
        );
        assert_eq!(data(&events).last(), Some(&json!("[DONE]")));
    }

    // --- inbound: Messages clients ------------------------------------------------------------

    #[test]
    fn messages_request_becomes_an_openai_request() {
        let body = object(json!({
            "model": "my-chat-endpoint",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"type": "text", "text": "What's the weather here?"},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "...", "signature": "x"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "And tomorrow?"},
                ]},
            ],
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_k": 3,
            "stream": true,
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"},
        }));
        let out = messages_request_to_openai(body).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "model": "my-chat-endpoint",
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                        {"type": "text", "text": "What's the weather here?"},
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_01", "content": "sunny"},
                    {"role": "user", "content": "And tomorrow?"},
                ],
                "max_tokens": 1024,
                "temperature": 0.5,
                "stop": ["END"],
                "stream": true,
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "description": "Weather"}}],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "user": "u-1",
            })
        );
    }

    #[test]
    fn messages_request_round_trips_through_the_provider_direction() {
        let original = json!({
            "model": "claude-sonnet-4-5",
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}]},
            ],
            "max_tokens": 64,
            "stop_sequences": ["END"],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
        });
        let mut openai = messages_request_to_openai(object(original.clone())).unwrap();
        openai.remove("model");
        let back = chat_to_messages(openai, "claude-sonnet-4-5", false).unwrap();
        assert_eq!(Value::Object(back), original);
    }

    #[test]
    fn messages_request_validation_names_fields() {
        let cases = [
            (json!({"max_tokens": 5}), "messages: Field required"),
            (json!({"messages": [{"role": "user", "content": "x"}]}), "max_tokens: Field required"),
            (json!({"messages": [], "max_tokens": 5}), "messages: at least one message is required"),
            (
                json!({"messages": [{"role": "system", "content": "x"}], "max_tokens": 5}),
                "messages.0.role: must be \"user\" or \"assistant\"",
            ),
            (json!({"messages": [{"role": "user"}], "max_tokens": 5}), "messages.0.content: Field required"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "video"}]}], "max_tokens": 5}),
                "messages.0.content.0.type: unsupported content block type \"video\"",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}),
                "max_tokens: must be a positive integer",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools.0: only custom tools",
            ),
        ];
        for (body, expected) in cases {
            let e = messages_request_to_openai(object(body.clone())).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.starts_with(expected), "{body}: {}", e.message);
        }
    }

    #[test]
    fn openai_response_becomes_a_messages_response() {
        let body = json!({
            "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}],
            }}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        });
        let out: Value =
            serde_json::from_slice(&openai_response_to_messages(&serde_json::to_vec(&body).unwrap()).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({
                "id": "msg_chatcmpl-abc123", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 7},
            })
        );
        let length = br#"{"id":"x","choices":[{"finish_reason":"length","message":{"content":"abc"}}]}"#;
        let out: Value = serde_json::from_slice(&openai_response_to_messages(length).unwrap()).unwrap();
        assert_eq!(out["stop_reason"], "max_tokens");
        assert_eq!(openai_response_to_messages(b"{}").unwrap_err().code, "origin_bad_response");
        assert_eq!(openai_response_to_messages(b"nope").unwrap_err().code, "origin_bad_response");
    }

    #[test]
    fn messages_error_body_has_anthropic_shape() {
        let body: Value = serde_json::from_slice(&messages_error_body(&GatewayError::bad_request(
            ErrorCode::InvalidRequest,
            "messages: Field required",
        )))
        .unwrap();
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: Field required"}})
        );
    }

    fn to_messages() -> Vec<StreamTranslator> {
        vec![StreamTranslator::OpenAiToAnthropic(OpenAiStreamToMessages::new("my-chat-endpoint"))]
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" check ✓\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":20,\"total_tokens\":29}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn openai_stream_becomes_messages_events() {
        let (events, usage) = pump(to_messages, OPENAI_STREAM.as_bytes());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        for (name, data) in &events {
            assert_eq!(data["type"].as_str(), name.as_deref(), "event name and type agree");
        }
        let d = data(&events);
        assert_eq!(d[0]["message"]["id"], "msg_chatcmpl-1");
        assert_eq!(d[0]["message"]["model"], "my-chat-endpoint");
        assert_eq!(
            d[1],
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(d[3]["delta"], json!({"type": "text_delta", "text": " check ✓"}));
        assert_eq!(
            d[5],
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}})
        );
        assert_eq!(
            d[6],
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}})
        );
        assert_eq!(d[8], json!({"type": "content_block_stop", "index": 1}));
        assert_eq!(
            d[9],
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"input_tokens": 9, "output_tokens": 20}})
        );
        assert_eq!(usage, Some(Usage { prompt_tokens: 9, completion_tokens: 20 }));
    }

    #[test]
    fn openai_stream_failures_become_error_events() {
        // Cut before any finish_reason.
        let cut: String = OPENAI_STREAM.split("data: ").take(3).collect::<Vec<_>>().join("data: ");
        let (events, _) = pump(to_messages, cut.as_bytes());
        let (name, last) = events.last().unwrap();
        assert_eq!(name.as_deref(), Some("error"));
        assert_eq!(last["error"]["message"], "origin stream ended early");
        assert!(events.iter().all(|(n, _)| n.as_deref() != Some("message_stop")));

        // An error chunk from upstream (e.g. our own Anthropic/Gemini translation of a cut).
        let failed = format!(
            "{cut}data: {{\"error\":{{\"message\":\"origin stream ended early\",\"type\":\"upstream_error\",\"code\":\"origin_stream_cut\"}}}}\n\ndata: [DONE]\n\n"
        );
        let (events, _) = pump(to_messages, failed.as_bytes());
        let errors = events.iter().filter(|(n, _)| n.as_deref() == Some("error")).count();
        assert_eq!(errors, 1);
        assert_eq!(events.last().unwrap().1["error"]["type"], "api_error");

        // Finished but no [DONE]: closed normally. Empty: a valid empty message.
        let no_done = OPENAI_STREAM.replace("data: [DONE]\n\n", "");
        let (events, _) = pump(to_messages, no_done.as_bytes());
        assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));
        let (events, _) = pump(to_messages, b"data: [DONE]\n\n");
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap_or("")).collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    }

    #[test]
    fn chained_translators_carry_a_claude_stream_to_a_messages_client() {
        // Anthropic origin → OpenAI chunks → Messages events (a /v1/messages client on an
        // Anthropic endpoint): the answer survives both hops.
        let chain = || {
            let mut stages = to_openai(Operation::Chat)();
            stages.extend(to_messages());
            stages
        };
        let (events, usage) = pump(chain, TOOL_STREAM.as_bytes());
        let d = data(&events);
        assert_eq!(d[2]["delta"]["text"], "Okay");
        assert_eq!(d[4]["content_block"]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        let args: String = d.iter().filter_map(|e| e["delta"]["partial_json"].as_str()).collect();
        assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"location": "Paris"}));
        assert_eq!(d[d.len() - 2]["delta"]["stop_reason"], "tool_use");
        assert_eq!(usage, Some(Usage { prompt_tokens: 472, completion_tokens: 89 }));
    }

    // --- robustness ----------------------------------------------------------------------------

    /// Every variant of `template` with one value (at any depth) replaced by a hostile one.
    pub(crate) fn mutations(template: &Value) -> Vec<Value> {
        fn paths(value: &Value, prefix: String, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => map.iter().for_each(|(k, v)| {
                    let path = format!("{prefix}/{k}");
                    out.push(path.clone());
                    paths(v, path, out);
                }),
                Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
                    let path = format!("{prefix}/{i}");
                    out.push(path.clone());
                    paths(v, path, out);
                }),
                _ => {}
            }
        }
        let hostile = [
            json!(null),
            json!(-1),
            json!(1.5e300),
            json!(u64::MAX),
            json!(""),
            json!("data:;base64,"),
            json!([]),
            json!([null]),
            json!({}),
            json!(true),
        ];
        let mut all = Vec::new();
        paths(template, String::new(), &mut all);
        let mut out = Vec::new();
        for path in all {
            for h in &hostile {
                let mut v = template.clone();
                if let Some(slot) = v.pointer_mut(&path) {
                    *slot = h.clone();
                }
                out.push(v);
            }
        }
        out
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let p = adapter();
        let request = json!({
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "s"}]},
                {"role": "user", "content": [{"type": "text", "text": "t"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
                {"role": "assistant", "content": "a", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "r"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "stop": ["x"], "max_tokens": 5, "temperature": 0.5, "n": 1, "user": "u", "parallel_tool_calls": false,
        });
        for body in mutations(&request) {
            if let Value::Object(body) = body {
                let call =
                    Call { op: Operation::Chat, model: "m", body, base_url: "http://o", stream: true, now_ms: 0 };
                let _ = p.build_request(call, &SECRETS);
            }
        }
        let answer = json!({
            "id": "msg", "model": "m", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "t"}, {"type": "tool_use", "id": "i", "name": "n", "input": {"a": 1}}],
            "usage": {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 3},
        });
        for body in mutations(&answer) {
            let bytes = serde_json::to_vec(&body).unwrap();
            let _ = reply(Operation::Chat, StatusCode::OK, &bytes);
            let _ = reply(Operation::Completions, StatusCode::BAD_REQUEST, &bytes);
        }
        let inbound = json!({
            "model": "e", "max_tokens": 5, "system": [{"type": "text", "text": "s"}], "stop_sequences": ["x"],
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}},
                                             {"type": "document", "source": {"type": "text", "data": "d"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "i", "name": "n", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "i", "content": [{"type": "text", "text": "r"}]}]},
            ],
            "tools": [{"name": "n", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "n"},
            "metadata": {"user_id": "u"}, "stream": true, "temperature": 1,
        });
        for body in mutations(&inbound) {
            if let Value::Object(body) = body {
                let _ = messages_request_to_openai(body);
            }
        }
        let completion = json!({
            "id": "c", "model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 2},
            "choices": [{"finish_reason": "stop", "message": {"content": "x", "tool_calls": [{"id": "i", "function": {"name": "n", "arguments": "{}"}}]}}],
        });
        for body in mutations(&completion) {
            let _ = openai_response_to_messages(&serde_json::to_vec(&body).unwrap());
        }
        let events: Vec<Value> = TOOL_STREAM
            .split("\n\n")
            .filter_map(|e| e.split_once("data: "))
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        for (i, event) in events.iter().enumerate() {
            for mutated in mutations(event) {
                let mut t = StreamToOpenAi::new(Operation::Chat, "m", 0);
                let mut out = Vec::new();
                for (j, e) in events.iter().enumerate() {
                    let e = if i == j { &mutated } else { e };
                    t.event(&SseEvent { event: None, data: e.to_string() }, &mut out);
                }
                t.finish(&mut out);
                assert!(out.ends_with(b"data: [DONE]\n\n"));
            }
        }
        let chunks: Vec<Value> = OPENAI_STREAM
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        for (i, chunk) in chunks.iter().enumerate() {
            for mutated in mutations(chunk) {
                let mut t = OpenAiStreamToMessages::new("m");
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
