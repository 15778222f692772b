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

use http::{HeaderName, Request};
use serde_json::{json, Map, Value};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, Reply, StreamMode, Translated};
use crate::gateway::providers::common::unsupported;
use crate::gateway::providers::common::{header_value, join_url, json_post, keyed_config, resolve_secret, KeySpec};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::util::order;
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::{
    completion_prompt, data_url, image_url, invalid, max_tokens, number, openai_answer, parse_tool_call,
    stop_sequences, take, write_error_chunk, ChunkWriter, OpenAiChoice,
};
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;
use edge_scan::anthropic::{BlockReader, EventReader};

const DEFAULT_BASE: &str = "https://api.anthropic.com/v1";
const DEFAULT_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; OpenAI clients usually leave it out.
const DEFAULT_MAX_TOKENS: u64 = 1024;
/// MLflow's `AnthropicConfig`.
const SPEC: KeySpec = KeySpec {
    provider: "anthropic",
    key: "anthropic_api_key",
    key_required: true,
    base: Some("anthropic_api_base"),
    default_base: DEFAULT_BASE,
    extra: &["anthropic_version"],
};
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
        let mut keyed = keyed_config(&SPEC, path, config, issues)?;
        let version = keyed.extra.remove("anthropic_version");
        if version.as_deref().is_some_and(|v| v.trim().is_empty()) {
            issues.push(
                format!("{path}.anthropic_version"),
                format!("must not be empty (leave it out for \"{DEFAULT_VERSION}\")"),
            );
            return None;
        }
        Some(Anthropic {
            api_key: keyed.api_key?,
            version: version.unwrap_or_else(|| DEFAULT_VERSION.to_string()),
            api_base: keyed.api_base,
        })
    }
}

impl Adapter for Anthropic {
    type Stream = StreamToOpenAi;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let body = messages_body("anthropic", call.op, call.body, call.model, call.stream)?;
        let key = resolve_secret(&self.api_key, secrets)?;
        let mut request = json_post(join_url(call.base_url, "messages"), json_body(&body))?;
        let headers = request.headers_mut();
        headers.insert(HeaderName::from_static("x-api-key"), header_value(key)?);
        headers.insert(HeaderName::from_static("anthropic-version"), header_value(self.version.as_str())?);
        Ok(request)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        messages_answer(reply)
    }

    fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode<Self::Stream> {
        match op {
            Operation::Chat | Operation::Completions => StreamMode::Translate(StreamToOpenAi::new(op, model, now_ms)),
            Operation::Embeddings | Operation::Predict => StreamMode::Buffered,
        }
    }
}

/// The Messages request of a chat or completions call (Anthropic's API, Claude on Vertex AI).
pub(crate) fn messages_body(
    provider: &str,
    op: Operation,
    mut body: Map<String, Value>,
    model: &str,
    stream: bool,
) -> Result<Map<String, Value>> {
    match op {
        Operation::Chat => chat_to_messages(body, model, stream),
        Operation::Completions => {
            let prompt = completion_prompt(&mut body, provider)?;
            body.insert("messages".into(), json!([{"role": "user", "content": prompt}]));
            chat_to_messages(body, model, stream)
        }
        Operation::Embeddings | Operation::Predict => Err(unsupported(provider, op)),
    }
}

/// A Messages answer as a `chat.completion` (or `text_completion`).
pub(crate) fn messages_answer(reply: Reply<'_>) -> Result<Translated> {
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
    Ok(Translated { body: json_body(&answer), usage, fields: None })
}

/// An OpenAI chat request (without `model`) as a Messages request for `model`.
pub(crate) fn chat_to_messages(mut body: Map<String, Value>, model: &str, stream: bool) -> Result<Map<String, Value>> {
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
            order::sort_by_key(&mut blocks, |b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
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
    /// The stream's `content_block_delta` events (one like the last is not read again).
    deltas: BlockReader,
    /// Its other events (one like the last that read as nothing is not read again).
    events: EventReader,
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
            deltas: BlockReader::default(),
            events: EventReader::default(),
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

    /// A `content_block_delta`: text, or a fragment of a tool call's arguments.
    fn block_delta(
        &mut self,
        out: &mut Vec<u8>,
        index: u64,
        kind: Option<&str>,
        text: Option<&str>,
        partial: Option<&str>,
    ) {
        self.start(out);
        match kind {
            Some("text_delta") => self.chunks.text(out, 0, text.unwrap_or_default()),
            Some("input_json_delta") => {
                let partial = partial.unwrap_or_default();
                let tool = self.tools.iter().find(|(block, _)| *block == index).map(|(_, n)| *n);
                if let Some(n) = tool.filter(|_| !partial.is_empty()) {
                    self.chunks.tool_call(out, 0, json!({"index": n, "function": {"arguments": partial}}));
                }
            }
            _ => {} // thinking_delta, signature_delta, citations_delta
        }
    }
}

impl StreamTranslate for StreamToOpenAi {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed || self.stopped || self.done {
            return;
        }
        if event.event.as_deref() == Some("content_block_delta") {
            // Most of a stream: read without a JSON tree.
            let Some(delta) = self.deltas.read(&event.data) else { return };
            let (kind, text, partial) = (delta.kind.as_deref(), delta.text.as_deref(), delta.partial_json.as_deref());
            return self.block_delta(out, delta.index, kind, text, partial);
        }
        // The fields read, without a tree of the rest (`edge_scan`: compiled for speed). Borrowed,
        // not moved out: built for size, a move copies the event byte by byte (~200 instructions).
        let read = self.events.read(&event.data);
        let Some(data) = &read else { return };
        let kind = event.event.as_deref().or(data.kind.as_str()).unwrap_or_default();
        let index = data.index.as_u64().unwrap_or(0);
        match kind {
            "message_start" => {
                let text = |field: &str| data.message.get(field).and_then(Value::as_str);
                self.chunks.name(text("id"), text("model"));
                self.record_usage(data.message.get("usage"));
                self.start(out);
            }
            "content_block_start" => {
                self.start(out);
                let block = &data.content_block;
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or_default();
                        self.chunks.text(out, 0, text);
                    }
                    Some("tool_use") => {
                        let n = self.tools.len() as u64;
                        self.tools.push((index, n));
                        let arguments = match block.get("input") {
                            Some(Value::Object(input)) if !input.is_empty() => Value::Object(input.clone()).to_string(),
                            _ => String::new(),
                        };
                        self.chunks.tool_call(
                            out,
                            0,
                            json!({
                                "index": n,
                                "id": block.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {
                                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                                    "arguments": arguments,
                                },
                            }),
                        );
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                // Only without an `event:` name (which the origin always sends) does this come here.
                let field = |name: &str| data.delta.get(name).and_then(Value::as_str);
                self.block_delta(out, index, field("type"), field("text"), field("partial_json"));
            }
            "message_delta" => {
                self.start(out);
                self.record_usage(Some(&data.usage));
                let stop = data.delta.get("stop_reason").and_then(Value::as_str);
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
                let message = data.error.get("message").and_then(Value::as_str).unwrap_or("origin error");
                let kind = data.error.get("type").and_then(Value::as_str).unwrap_or("api_error");
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::pipeline::stream::Stage;
    use crate::gateway::providers::test_support::{self, TestSecrets};
    use crate::gateway::providers::ProviderStream;
    use crate::gateway::test_util::{data, mutations, object, pump};

    use http::StatusCode;

    const NOW: u64 = 1_700_000_000_123;
    const SECRETS: TestSecrets = TestSecrets(&[("ANTHROPIC_API_KEY", "sk-ant-test")]);

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
        adapter().translate_response(Reply { op, status, body, model: "claude-sonnet-4-5", now_ms: NOW, wanted: &[] })
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

    pub(crate) const TEXT_STREAM: &str = concat!(
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

    pub(crate) fn to_openai(op: Operation) -> impl Fn() -> Vec<Stage> {
        move || {
            vec![Stage::Provider(ProviderStream::AnthropicToOpenAi(StreamToOpenAi::new(op, "claude-sonnet-4-5", NOW)))]
        }
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

    pub(crate) const TOOL_STREAM: &str = concat!(
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
                let call = Call {
                    op: Operation::Chat,
                    model: "m",
                    body,
                    base_url: "http://o",
                    stream: true,
                    now_ms: 0,
                    written: None,
                };
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
    }
}
