//! An endpoint whose origin speaks Responses itself (`responses: passthrough`): the request
//! rebuilt in Responses form from the prepared chat body, and its answer taken as it is.

use serde_json::{json, Map, Value};

use crate::gateway::dialect::responses::render::response_usage;
use crate::gateway::dialect::responses::turn::Turn;
use crate::gateway::error::Result;
use crate::gateway::types::Usage;
use crate::gateway::wire::json::{bad_response, parse_json};

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
