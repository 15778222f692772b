//! Reading a Responses request: input items, tools, `tool_choice` and `text.format` into the
//! chat shape, plus the `Turn` its answer and storage need.

use serde_json::{json, Map, Value};

use crate::gateway::dialect::responses::turn::{previous_not_found, valid_id, Head, Turn};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::wire::openai::{invalid, number, take};

/// Most input items one request may carry.
pub const MAX_INPUT_ITEMS: usize = 1024;
/// Most content parts in one message or tool output.
pub const MAX_PARTS: usize = 256;
/// Most tools one request may declare.
pub const MAX_TOOLS: usize = 128;

fn field_error(path: &str, problem: &str) -> GatewayError {
    invalid(path, problem)
}

fn unsupported(path: &str, problem: &str) -> GatewayError {
    GatewayError::bad_request(ErrorCode::UnsupportedParameter, format!("{path}: {problem}"))
}

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
