//! Anthropic Messages clients (`POST /v1/messages`) in front of any chat endpoint:
//! `messages_request_to_openai`, `openai_response_to_messages` and `OpenAiStreamToMessages`
//! turn a Messages request into an OpenAI one and the OpenAI-shaped answer back into a
//! Messages answer or event stream; errors take Anthropic's shape.

use serde_json::{json, Map, Value};

use crate::gateway::error::{GatewayError, Result};
use crate::gateway::types::Usage;
use crate::gateway::wire::json::{bad_response, json_body, parse_object_keeping};
use crate::gateway::wire::openai::{invalid, number, openai_usage, take, ANSWER_FIELDS};
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;
use edge_scan::chunk::FactsReader;
use edge_scan::json::{write_str, write_u64};
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

fn text_block(text: String) -> Value {
    json!({"type": "text", "text": text})
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
pub fn openai_response_to_messages(body: &[u8], fields: Option<Value>) -> Result<Vec<u8>> {
    let value = match fields {
        Some(fields) => fields,
        None => parse_object_keeping(body, &ANSWER_FIELDS)?,
    };
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
    Ok(json_body(&answer))
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
    /// The stream's chunks: one like the last but for its text is not read again.
    chunks: FactsReader,
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
            chunks: FactsReader::default(),
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
        // Byte by byte (the bytes `json!` would give, keys sorted): most of a stream.
        out.extend_from_slice(b"event: content_block_delta\ndata: {\"delta\":{\"text\":");
        write_str(out, text);
        out.extend_from_slice(b",\"type\":\"text_delta\"},\"index\":");
        write_u64(out, index);
        out.extend_from_slice(b",\"type\":\"content_block_delta\"}\n\n");
    }

    /// A chunk that is the last one with another text, when the last was a plain text chunk
    /// (choice 0, no usage, no finish reason): what reading it in full would do, without
    /// reading it (most chunks of an answer). False for any other chunk.
    fn like_last(&mut self, out: &mut Vec<u8>, data: &str) -> bool {
        let Some((facts, text)) = self.chunks.like_last(data) else { return false };
        let plain = facts.usage.is_none()
            && facts.choices.as_ref().and_then(|c| c.iter().next()).is_some_and(|c| c.index == 0 && !c.finished);
        if !plain {
            return false;
        }
        self.start(out, facts.id.as_deref());
        if !text.is_empty() {
            self.text(out, &text);
        }
        true
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
        if self.like_last(out, &event.data) {
            return;
        }
        // Read in full, and by the chunk reader too, so the chunks like it need not be.
        self.chunks.read(&event.data);
        let Ok(chunk) = event.data.parse::<Value>() else { return };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::dialect::ClientStream;
    use crate::gateway::error::ErrorCode;
    use crate::gateway::pipeline::stream::Stage;
    use crate::gateway::providers::anthropic::chat_to_messages;
    use crate::gateway::providers::anthropic::tests::{to_openai, TOOL_STREAM};
    use crate::gateway::test_util::{data, mutations, object, pump};
    use crate::gateway::types::Operation;
    use http::StatusCode;

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
            serde_json::from_slice(&openai_response_to_messages(&serde_json::to_vec(&body).unwrap(), None).unwrap())
                .unwrap();
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
        let out: Value = serde_json::from_slice(&openai_response_to_messages(length, None).unwrap()).unwrap();
        assert_eq!(out["stop_reason"], "max_tokens");
        assert_eq!(openai_response_to_messages(b"{}", None).unwrap_err().code, "origin_bad_response");
        assert_eq!(openai_response_to_messages(b"nope", None).unwrap_err().code, "origin_bad_response");
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

    fn to_messages() -> Vec<Stage> {
        vec![Stage::Client(ClientStream::Anthropic(OpenAiStreamToMessages::new("my-chat-endpoint")))]
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

    #[test]
    fn hostile_messages_inputs_never_panic() {
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
            let _ = openai_response_to_messages(&serde_json::to_vec(&body).unwrap(), None);
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

    /// Chunks like the last but for their text (most of a stream; not read again) come out as
    /// the same events, byte for byte, as reading each in full gives: the `json!`-built
    /// `content_block_delta` for every text, escapes and non-ASCII included; a chunk that is
    /// not plain text (another index, a finish reason, usage) is read in full.
    #[test]
    fn text_chunks_like_the_last_give_the_events_reading_them_gives() {
        let chunk = |text: &str, index: u64, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": index, "delta": {"content": text}, "finish_reason": finish}]})
            .to_string()
        };
        let texts = ["he", "llo", " \"wörld\"\n", "", "\u{1F600}", "x", "y"];
        let mut events: Vec<String> = texts.iter().map(|t| chunk(t, 0, Value::Null)).collect();
        events.insert(5, chunk("other choice", 1, Value::Null));
        events.push(chunk("!", 0, json!("stop")));
        let mut t = OpenAiStreamToMessages::new("m");
        let mut out = Vec::new();
        for data in &events {
            t.event(&SseEvent { event: None, data: data.clone() }, &mut out);
        }
        t.event(&SseEvent { event: None, data: "[DONE]".into() }, &mut out);
        let text = String::from_utf8(out).unwrap();
        let mut deltas = Vec::new();
        for t in texts.iter().chain(["!"].iter()).filter(|t| !t.is_empty()) {
            let mut one = Vec::new();
            sse::write_event(
                &mut one,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
            );
            deltas.push(String::from_utf8(one).unwrap());
        }
        let written: Vec<&str> =
            text.split_inclusive("\n\n").filter(|e| e.starts_with("event: content_block_delta")).collect();
        assert_eq!(written, deltas, "{text}");
        assert!(
            text.contains("\"stop_reason\":\"end_turn\"")
                && text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            "{text}"
        );
    }
}
