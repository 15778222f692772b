//! Gemini clients (`POST /v1beta/models/{endpoint}:generateContent` and
//! `:streamGenerateContent`, as google-genai sends them) in front of any chat endpoint:
//! `read` turns a `GenerateContentRequest` into the internal chat shape, `render` a chat
//! answer into a `GenerateContentResponse`, and `ChatStreamToGemini` chat chunks into the
//! stream Gemini sends — SSE with `alt=sse`, else one JSON array written element by element.
//! Errors take Google's shape: `{"error": {"code", "message", "status"}}`.
//!
//! Gemini's JSON accepts lowerCamelCase and snake_case field names; so does this reader.

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::Usage;
use crate::gateway::wire::json::{bad_response, json_body, parse_object_keeping};
use crate::gateway::wire::openai::{invalid, number, openai_usage, ANSWER_FIELDS};
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;

/// Most `contents` one request may carry.
pub const MAX_CONTENTS: usize = 1024;
/// Most parts in one content.
pub const MAX_PARTS: usize = 256;
/// Most function declarations one request may carry.
pub const MAX_FUNCTIONS: usize = 128;
/// Deepest schema (`responseSchema`, function `parameters`) the reader converts.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// How the client asked for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `:generateContent`: one JSON answer.
    Generate,
    /// `:streamGenerateContent?alt=sse`: server-sent events, one response per event.
    StreamSse,
    /// `:streamGenerateContent` without `alt=sse`: one JSON array, element by element.
    StreamJson,
}

impl Mode {
    pub fn is_stream(self) -> bool {
        self != Mode::Generate
    }
}

/// Splits a path segment `{endpoint}:{method}` (the endpoint may itself hold `:`).
pub fn endpoint_and_method(segment: &str) -> Option<(&str, &str)> {
    segment.rsplit_once(':').filter(|(name, method)| !name.is_empty() && !method.is_empty())
}

/// `Mode` for a method and the request's query (`alt=sse`).
pub fn mode(method: &str, query: &str) -> Option<Mode> {
    match method {
        "generateContent" => Some(Mode::Generate),
        "streamGenerateContent" => {
            let sse = query.split('&').any(|pair| pair == "alt=sse");
            Some(if sse { Mode::StreamSse } else { Mode::StreamJson })
        }
        _ => None,
    }
}

/// The API key a Gemini client sends: `x-goog-api-key`, else `?key=` (google-genai uses the
/// header; `?key=` is the REST API's other spelling). The query value is never logged or
/// forwarded: the log line holds the path only, and origin requests are built afresh.
pub fn api_key(headers: &http::HeaderMap, query: &str) -> Option<String> {
    if let Some(key) = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::trim) {
        if !key.is_empty() {
            return Some(key.to_string());
        }
    }
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .map(|k| crate::gateway::util::text::percent_decode(k, true))
        .filter(|k| !k.trim().is_empty())
}

/// `object[camel]`, else `object[snake]`, treating `null` as absent.
fn field<'v>(object: &'v Value, camel: &str, snake: &str) -> Option<&'v Value> {
    object.get(camel).or_else(|| object.get(snake)).filter(|v| !v.is_null())
}

// --- reading a request ---------------------------------------------------------------------

/// A `GenerateContentRequest` → the chat body (the path names the endpoint).
pub fn read(body: Map<String, Value>, mode: Mode) -> Result<Map<String, Value>> {
    let body = Value::Object(body);
    let mut chat = Map::new();
    let mut messages = Vec::new();
    if field(&body, "cachedContent", "cached_content").is_some() {
        return Err(unsupported("cachedContent", "cached contents are not supported by this gateway"));
    }
    if let Some(system) = field(&body, "systemInstruction", "system_instruction") {
        let text = match system {
            Value::String(s) => s.clone(),
            Value::Object(_) => text_of(system, "systemInstruction")?,
            _ => return Err(invalid("systemInstruction", "must be a Content object")),
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    let contents = match body.get("contents") {
        Some(Value::Array(c)) if c.is_empty() => return Err(invalid("contents", "at least one content is required")),
        Some(Value::Array(c)) if c.len() > MAX_CONTENTS => {
            return Err(invalid("contents", &format!("at most {MAX_CONTENTS} contents are allowed")))
        }
        Some(Value::Array(c)) => c,
        Some(_) => return Err(invalid("contents", "must be a list of Content objects")),
        None => return Err(invalid("contents", "contents is not specified")),
    };
    let mut pending = Calls::default();
    for (i, content) in contents.iter().enumerate() {
        read_content(content, i, &mut pending, &mut messages)?;
    }
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(config) = field(&body, "generationConfig", "generation_config") {
        read_config(config, &mut chat)?;
    }
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        let tools = read_tools(tools)?;
        if !tools.is_empty() {
            chat.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(config) = field(&body, "toolConfig", "tool_config") {
        if let Some(choice) = read_tool_config(config)? {
            if chat.contains_key("tools") {
                chat.insert("tool_choice".into(), choice);
            }
        }
    }
    if mode.is_stream() {
        chat.insert("stream".into(), Value::Bool(true));
    }
    // safetySettings, labels, serviceTier: no chat counterpart; dropped.
    Ok(chat)
}

fn unsupported(path: &str, problem: &str) -> GatewayError {
    GatewayError::bad_request(ErrorCode::UnsupportedParameter, format!("{path}: {problem}"))
}

/// The text parts of a `Content`, joined with a newline.
fn text_of(content: &Value, path: &str) -> Result<String> {
    let parts = match content.get("parts") {
        Some(Value::Array(parts)) => parts,
        _ => return Err(invalid(&format!("{path}.parts"), "must be a list of parts")),
    };
    let texts = parts
        .iter()
        .enumerate()
        .map(|(j, p)| {
            p.get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{path}.parts.{j}"), "must be a text part"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(texts.join("\n"))
}

/// Function calls the model made and no response answered yet: `(call id, name)`.
#[derive(Default)]
struct Calls {
    open: Vec<(String, String)>,
}

impl Calls {
    /// The id of the call a `functionResponse` answers: by id when it has one, else the
    /// earliest open call of that name.
    fn answer(&mut self, id: Option<&str>, name: &str) -> Option<String> {
        let position = match id {
            Some(id) => self.open.iter().position(|(open, _)| open == id),
            None => self.open.iter().position(|(_, open)| open == name),
        }?;
        Some(self.open.remove(position).0)
    }
}

fn read_content(content: &Value, i: usize, calls: &mut Calls, chat: &mut Vec<Value>) -> Result<()> {
    let path = format!("contents.{i}");
    if !content.is_object() {
        return Err(invalid(&path, "must be a Content object"));
    }
    let parts = match content.get("parts") {
        Some(Value::Array(parts)) if parts.len() > MAX_PARTS => {
            return Err(invalid(&format!("{path}.parts"), &format!("at most {MAX_PARTS} parts are allowed")))
        }
        Some(Value::Array(parts)) => parts,
        _ => return Err(invalid(&format!("{path}.parts"), "must be a list of parts")),
    };
    let role = content.get("role").and_then(Value::as_str).unwrap_or("user");
    match role {
        "model" => chat.push(model_turn(parts, &path, i, calls)?),
        "user" | "function" | "tool" => user_turn(parts, &path, calls, chat)?,
        _ => return Err(invalid(&format!("{path}.role"), "must be \"user\" or \"model\"")),
    }
    Ok(())
}

fn model_turn(parts: &[Value], path: &str, i: usize, calls: &mut Calls) -> Result<Value> {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let path = format!("{path}.parts.{j}");
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue; // the model's thoughts: no chat counterpart
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.get_or_insert_with(String::new).push_str(t);
        } else if let Some(call) = field(part, "functionCall", "function_call") {
            let name = call
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid(&format!("{path}.functionCall.name"), "Field required"))?;
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map_or_else(|| format!("call_{i}_{j}"), str::to_string);
            let args = match call.get("args") {
                None | Some(Value::Null) => json!({}),
                Some(args @ Value::Object(_)) => args.clone(),
                Some(_) => return Err(invalid(&format!("{path}.functionCall.args"), "must be an object")),
            };
            calls.open.push((id.clone(), name.to_string()));
            tool_calls
                .push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}));
        } else {
            return Err(part_error(part, &path, "model"));
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    Ok(message)
}

/// A user turn: `functionResponse` parts become `tool` messages (first, right after the
/// model's calls, as chat wants them), the rest one user message.
fn user_turn(parts: &[Value], path: &str, calls: &mut Calls, chat: &mut Vec<Value>) -> Result<()> {
    let mut user = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let path = format!("{path}.parts.{j}");
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            user.push(json!({"type": "text", "text": t}));
        } else if let Some(data) = field(part, "inlineData", "inline_data") {
            user.push(inline_part(data, &path)?);
        } else if let Some(file) = field(part, "fileData", "file_data") {
            let mime = field(file, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or_default();
            let uri = field(file, "fileUri", "file_uri").and_then(Value::as_str);
            match uri {
                Some(uri) if mime.starts_with("image/") => {
                    user.push(json!({"type": "image_url", "image_url": {"url": uri}}))
                }
                _ => return Err(unsupported(&format!("{path}.fileData"), "only images may be referenced by URI")),
            }
        } else if let Some(response) = field(part, "functionResponse", "function_response") {
            let name = response
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("{path}.functionResponse.name"), "Field required"))?;
            let id = response.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
            let call_id = calls.answer(id, name).ok_or_else(|| {
                invalid(
                    &format!("{path}.functionResponse"),
                    &format!("no earlier functionCall of \"{name}\" to answer"),
                )
            })?;
            let output = match response.get("response") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "{}".to_string(),
            };
            chat.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        } else if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        } else {
            return Err(part_error(part, &path, "user"));
        }
    }
    match user.as_slice() {
        [] => {}
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            chat.push(json!({"role": "user", "content": only["text"].clone()}));
        }
        _ => chat.push(json!({"role": "user", "content": user})),
    }
    Ok(())
}

fn part_error(part: &Value, path: &str, role: &str) -> GatewayError {
    let kind = part.as_object().and_then(|p| {
        p.keys().find(|k| !matches!(k.as_str(), "thought" | "thoughtSignature" | "thought_signature")).cloned()
    });
    match kind {
        Some(kind) => unsupported(path, &format!("unsupported part \"{kind}\" in a {role} content")),
        None => invalid(path, "must hold text, inlineData, fileData, functionCall or functionResponse"),
    }
}

/// `inlineData` (base64) → an image, audio or file part.
fn inline_part(data: &Value, path: &str) -> Result<Value> {
    let mime = field(data, "mimeType", "mime_type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{path}.inlineData.mimeType"), "Field required"))?;
    let bytes = data
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{path}.inlineData.data"), "Field required"))?;
    let url = format!("data:{mime};base64,{bytes}");
    Ok(match mime {
        m if m.starts_with("image/") => json!({"type": "image_url", "image_url": {"url": url}}),
        "audio/wav" | "audio/x-wav" => json!({"type": "input_audio", "input_audio": {"data": bytes, "format": "wav"}}),
        "audio/mp3" | "audio/mpeg" => json!({"type": "input_audio", "input_audio": {"data": bytes, "format": "mp3"}}),
        m if m == "application/pdf" || m.starts_with("text/") => {
            json!({"type": "file", "file": {"file_data": url, "filename": "file"}})
        }
        other => {
            return Err(unsupported(
                &format!("{path}.inlineData.mimeType"),
                &format!("unsupported media type \"{other}\""),
            ))
        }
    })
}

fn read_config(config: &Value, chat: &mut Map<String, Value>) -> Result<()> {
    if !config.is_object() {
        return Err(invalid("generationConfig", "must be an object"));
    }
    let get = |camel: &str, snake: &str| field(config, camel, snake);
    for (camel, snake, key) in [
        ("temperature", "temperature", "temperature"),
        ("topP", "top_p", "top_p"),
        ("presencePenalty", "presence_penalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty", "frequency_penalty"),
    ] {
        if let Some(v) = get(camel, snake) {
            number(&format!("generationConfig.{camel}"), v)?;
            chat.insert(key.into(), v.clone());
        }
    }
    if let Some(seed) = get("seed", "seed") {
        let seed = seed.as_i64().ok_or_else(|| invalid("generationConfig.seed", "must be an integer"))?;
        chat.insert("seed".into(), seed.into());
    }
    if let Some(v) = get("maxOutputTokens", "max_output_tokens") {
        let n = v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid("generationConfig.maxOutputTokens", "must be a positive integer"))?;
        chat.insert("max_tokens".into(), n.into());
    }
    if let Some(v) = get("candidateCount", "candidate_count") {
        if v.as_u64() != Some(1) {
            return Err(unsupported("generationConfig.candidateCount", "only 1 candidate is supported"));
        }
    }
    match get("stopSequences", "stop_sequences") {
        None => {}
        Some(Value::Array(stops)) if stops.is_empty() => {}
        Some(Value::Array(stops)) if stops.len() <= 16 && stops.iter().all(Value::is_string) => {
            chat.insert("stop".into(), Value::Array(stops.clone()));
        }
        Some(_) => return Err(invalid("generationConfig.stopSequences", "must be a list of at most 16 strings")),
    }
    if let Some(modalities) = get("responseModalities", "response_modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|x| x.as_str().is_some_and(|s| s.eq_ignore_ascii_case("text"))));
        if !text_only {
            return Err(unsupported("generationConfig.responseModalities", "only TEXT answers are supported"));
        }
    }
    let mime = get("responseMimeType", "response_mime_type").and_then(Value::as_str);
    let json_schema = get("responseJsonSchema", "response_json_schema").or_else(|| config.get("_responseJsonSchema"));
    let schema = match (json_schema, get("responseSchema", "response_schema")) {
        (Some(s), _) if s.is_object() => Some(s.clone()),
        (Some(_), _) => return Err(invalid("generationConfig.responseJsonSchema", "must be a JSON schema object")),
        (None, Some(s)) => Some(json_schema_of(s, "generationConfig.responseSchema", 0)?),
        (None, None) => None,
    };
    match (mime, schema) {
        (Some("application/json"), Some(schema)) => {
            chat.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
            );
        }
        (Some("application/json"), None) => {
            chat.insert("response_format".into(), json!({"type": "json_object"}));
        }
        (None | Some("text/plain"), None) => {}
        (None | Some("text/plain"), Some(_)) => {
            return Err(invalid("generationConfig.responseMimeType", "a response schema needs \"application/json\""))
        }
        (Some(other), _) => {
            return Err(unsupported("generationConfig.responseMimeType", &format!("unsupported mime type \"{other}\"")))
        }
    }
    // topK, thinkingConfig, responseLogprobs, logprobs, mediaResolution: dropped.
    Ok(())
}

/// Gemini's `Schema` (OpenAPI 3.0 subset: upper-case types, `nullable`) → JSON Schema.
fn json_schema_of(schema: &Value, path: &str, depth: usize) -> Result<Value> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(invalid(path, &format!("schemas may nest at most {MAX_SCHEMA_DEPTH} levels")));
    }
    let Some(schema) = schema.as_object() else {
        return Err(invalid(path, "must be a Schema object"));
    };
    let mut out = Map::new();
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    for (key, value) in schema {
        match key.as_str() {
            "type" => {
                let t = value
                    .as_str()
                    .ok_or_else(|| invalid(&format!("{path}.type"), "must be a string"))?
                    .to_ascii_lowercase();
                let t = if t == "type_unspecified" { None } else { Some(Value::String(t)) };
                if let Some(t) = t {
                    out.insert("type".into(), if nullable { json!([t, "null"]) } else { t });
                }
            }
            "properties" => {
                let props =
                    value.as_object().ok_or_else(|| invalid(&format!("{path}.properties"), "must be an object"))?;
                let mut converted = Map::new();
                for (name, prop) in props {
                    converted
                        .insert(name.clone(), json_schema_of(prop, &format!("{path}.properties.{name}"), depth + 1)?);
                }
                out.insert("properties".into(), Value::Object(converted));
            }
            "items" => {
                out.insert("items".into(), json_schema_of(value, &format!("{path}.items"), depth + 1)?);
            }
            "anyOf" | "any_of" => {
                let options = value.as_array().ok_or_else(|| invalid(&format!("{path}.anyOf"), "must be a list"))?;
                let options = options
                    .iter()
                    .enumerate()
                    .map(|(k, o)| json_schema_of(o, &format!("{path}.anyOf.{k}"), depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                out.insert("anyOf".into(), Value::Array(options));
            }
            "nullable" | "propertyOrdering" | "property_ordering" | "example" => {}
            "minItems" | "min_items" => {
                out.insert("minItems".into(), value.clone());
            }
            "maxItems" | "max_items" => {
                out.insert("maxItems".into(), value.clone());
            }
            "enum" | "required" | "description" | "format" | "title" | "minimum" | "maximum" | "pattern"
            | "default" | "minLength" | "maxLength" => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn read_tools(tools: &Value) -> Result<Vec<Value>> {
    let Some(tools) = tools.as_array() else {
        return Err(invalid("tools", "must be a list of Tool objects"));
    };
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools.{i}");
        let Some(declarations) = field(tool, "functionDeclarations", "function_declarations") else {
            let kind = tool.as_object().and_then(|t| t.keys().next().cloned()).unwrap_or_default();
            return Err(unsupported(&path, &format!("only functionDeclarations are supported (got \"{kind}\")")));
        };
        let declarations = declarations
            .as_array()
            .ok_or_else(|| invalid(&format!("{path}.functionDeclarations"), "must be a list"))?;
        for (k, declaration) in declarations.iter().enumerate() {
            if out.len() >= MAX_FUNCTIONS {
                return Err(invalid("tools", &format!("at most {MAX_FUNCTIONS} function declarations are allowed")));
            }
            let path = format!("{path}.functionDeclarations.{k}");
            let name = declaration
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid(&format!("{path}.name"), "Field required"))?;
            let mut function = json!({"name": name});
            if let Some(d) = declaration.get("description").filter(|d| d.is_string()) {
                function["description"] = d.clone();
            }
            if let Some(p) = field(declaration, "parametersJsonSchema", "parameters_json_schema") {
                if !p.is_object() {
                    return Err(invalid(&format!("{path}.parametersJsonSchema"), "must be a JSON schema object"));
                }
                function["parameters"] = p.clone();
            } else if let Some(p) = declaration.get("parameters").filter(|p| !p.is_null()) {
                function["parameters"] = json_schema_of(p, &format!("{path}.parameters"), 0)?;
            }
            out.push(json!({"type": "function", "function": function}));
        }
    }
    Ok(out)
}

fn read_tool_config(config: &Value) -> Result<Option<Value>> {
    let Some(calling) = field(config, "functionCallingConfig", "function_calling_config") else {
        return Ok(None);
    };
    let allowed = field(calling, "allowedFunctionNames", "allowed_function_names").and_then(Value::as_array);
    Ok(match calling.get("mode").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
        None | Some("AUTO" | "MODE_UNSPECIFIED" | "VALIDATED") => Some(json!("auto")),
        Some("NONE") => Some(json!("none")),
        Some("ANY") => match allowed.map(Vec::as_slice) {
            Some([only]) if only.is_string() => Some(json!({"type": "function", "function": {"name": only}})),
            _ => Some(json!("required")),
        },
        Some(other) => {
            return Err(invalid(
                "toolConfig.functionCallingConfig.mode",
                &format!("must be AUTO, ANY or NONE (got \"{other}\")"),
            ))
        }
    })
}

// --- the answer ----------------------------------------------------------------------------

fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        _ => "STOP",
    }
}

pub fn usage_metadata(usage: Usage) -> Value {
    json!({"promptTokenCount": usage.prompt_tokens, "candidatesTokenCount": usage.completion_tokens,
        "totalTokenCount": usage.total()})
}

/// A chat tool call → a `functionCall` part (arguments that are not a JSON object become `{}`
/// wrapped as `{"arguments": "<text>"}`, so nothing the model said is lost).
fn function_call_part(call: &Value) -> Value {
    let function = call.get("function");
    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
    let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
    let args = match arguments.parse::<Value>() {
        Ok(args @ Value::Object(_)) => args,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({"arguments": arguments}),
    };
    let mut part = json!({"name": name, "args": args});
    if let Some(id) = call.get("id").and_then(Value::as_str) {
        part["id"] = Value::String(id.to_string());
    }
    json!({"functionCall": part})
}

fn response_object(parts: Vec<Value>, finish: Option<&str>, usage: Option<Usage>, model: &str, id: &str) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = Value::String(finish.to_string());
    }
    let mut response = json!({"candidates": [candidate]});
    if let Some(usage) = usage {
        response["usageMetadata"] = usage_metadata(usage);
    }
    response["modelVersion"] = Value::String(model.to_string());
    response["responseId"] = Value::String(id.to_string());
    response
}

/// A buffered chat answer → a `GenerateContentResponse`.
pub fn render(answer: &[u8], fields: Option<Value>) -> Result<Vec<u8>> {
    let value = match fields {
        Some(fields) => fields,
        None => parse_object_keeping(answer, &ANSWER_FIELDS)?,
    };
    let choice = value.get("choices").and_then(|c| c.get(0)).ok_or_else(|| bad_response("no choices"))?;
    let message = choice.get("message").ok_or_else(|| bad_response("a choice without a message"))?;
    let mut parts = Vec::new();
    let text: String = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    let calls = message.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !text.is_empty() || calls.is_empty() {
        parts.push(json!({"text": text}));
    }
    parts.extend(calls.iter().map(function_call_part));
    let finish = finish_reason(choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop"));
    let model = value.get("model").and_then(Value::as_str).unwrap_or_default();
    let id = value.get("id").and_then(Value::as_str).unwrap_or_default();
    Ok(json_body(&response_object(parts, Some(finish), Some(openai_usage(&value).unwrap_or_default()), model, id)))
}

// --- errors --------------------------------------------------------------------------------

/// Google's canonical status name for an HTTP status.
pub fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 413 | 415 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn error_value(status: StatusCode, message: &str, reason: &str) -> Value {
    json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "status": status_name(status),
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "edge-gateway"}],
    }})
}

/// Google's error body for a gateway error; `details[0].reason` is the gateway's error code.
pub fn error_body(error: &GatewayError) -> Vec<u8> {
    serde_json::to_vec(&error_value(error.status, &error.message, error.code.as_str())).unwrap_or_default()
}

// --- streams -------------------------------------------------------------------------------

struct ToolCall {
    chat_index: u64,
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Chat `chat.completion.chunk` stream → Gemini's stream (SSE events or JSON array elements).
pub struct ChatStreamToGemini {
    mode: Mode,
    model: String,
    id: String,
    opened: bool,
    calls: Vec<ToolCall>,
    finish: Option<&'static str>,
    usage: Option<Usage>,
    ended: bool,
}

impl ChatStreamToGemini {
    /// `model` is reported as `modelVersion` until the origin's chunks name one.
    pub fn new(mode: Mode, model: &str) -> Self {
        ChatStreamToGemini {
            mode,
            model: model.to_string(),
            id: String::new(),
            opened: false,
            calls: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, value: &Value) {
        match self.mode {
            Mode::StreamJson => {
                out.extend_from_slice(if std::mem::replace(&mut self.opened, true) { b",\r\n" } else { b"[" });
                out.extend_from_slice(serde_json::to_string(value).unwrap_or_default().as_bytes());
            }
            Mode::StreamSse | Mode::Generate => {
                self.opened = true;
                sse::write_data(out, value);
            }
        }
    }

    /// An error element after the stream's end (the gateway stopped it at a cap). A JSON
    /// array is closed by then, so only the SSE form carries it (the finish reason shows the
    /// cut in both).
    pub fn error_event(&mut self, out: &mut Vec<u8>, message: &str, reason: &str) {
        if self.mode != Mode::StreamJson {
            sse::write_data(out, &error_value(StatusCode::TOO_MANY_REQUESTS, message, reason));
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.ended = true;
        if self.mode == Mode::StreamJson {
            out.extend_from_slice(if self.opened { b"]" } else { b"[]" });
        }
    }

    /// The normal end: the last element carries the function calls, the finish reason and
    /// the usage.
    fn end(&mut self, out: &mut Vec<u8>) {
        let mut parts: Vec<Value> = self
            .calls
            .iter()
            .map(|c| {
                let mut call = json!({"function": {"name": c.name, "arguments": c.arguments}});
                if let Some(id) = &c.id {
                    call["id"] = Value::String(id.clone());
                }
                function_call_part(&call)
            })
            .collect();
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        let finish = if self.calls.is_empty() { self.finish.unwrap_or("STOP") } else { "STOP" };
        let response =
            response_object(parts, Some(finish), Some(self.usage.unwrap_or_default()), &self.model, &self.id);
        self.emit(out, &response);
        self.close(out);
    }

    fn fail(&mut self, out: &mut Vec<u8>, status: StatusCode, message: &str, reason: &str) {
        let error = error_value(status, message, reason);
        self.emit(out, &error);
        self.close(out);
    }
}

impl StreamTranslate for ChatStreamToGemini {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if event.data.trim() == "[DONE]" {
            match self.finish {
                Some(_) => self.end(out),
                None => self.fail(
                    out,
                    StatusCode::BAD_GATEWAY,
                    "origin stream ended before the answer was complete",
                    "origin_stream_cut",
                ),
            }
            return;
        }
        let Ok(chunk) = event.data.parse::<Value>() else { return };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("origin error");
            let code = error.get("code").and_then(Value::as_str).unwrap_or("origin_stream_error");
            self.fail(out, StatusCode::BAD_GATEWAY, message, code);
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()).and_then(|_| openai_usage(&chunk)) {
            self.usage = Some(usage);
        }
        if let Some(id) = chunk.get("id").and_then(Value::as_str).filter(|_| self.id.is_empty()) {
            self.id = id.to_string();
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            self.model = model.to_string();
        }
        let choices = chunk.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for choice in choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
            let delta = choice.get("delta");
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                let response = response_object(vec![json!({"text": text})], None, None, &self.model, &self.id);
                self.emit(out, &response);
            }
            for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let function = call.get("function");
                let piece = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
                match self.calls.iter_mut().find(|c| c.chat_index == chat_index) {
                    Some(open) => open.arguments.push_str(piece),
                    None => self.calls.push(ToolCall {
                        chat_index,
                        id: call.get("id").and_then(Value::as_str).map(str::to_string),
                        name: function
                            .and_then(|f| f.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        arguments: piece.to_string(),
                    }),
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(finish_reason(reason));
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match self.finish {
            // A finished answer whose `[DONE]` never came: close it normally.
            Some(_) => self.end(out),
            None => self.fail(
                out,
                StatusCode::BAD_GATEWAY,
                "origin stream ended before the answer was complete",
                "origin_stream_cut",
            ),
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
    use crate::gateway::pipeline::stream::{Stage, StreamPump};
    use crate::gateway::test_util::{data, mutations, object, parse_sse, pump};

    #[test]
    fn reads_what_google_genai_sends() {
        let body = json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is this?"},
                    {"inlineData": {"mimeType": "image/png", "data": "AA"}},
                    {"inline_data": {"mime_type": "application/pdf", "data": "JVBE"}},
                ]},
                {"role": "model", "parts": [
                    {"text": "Let me look.", "thought": true},
                    {"text": "Checking."},
                    {"functionCall": {"name": "lookup", "args": {"q": "cat"}}},
                    {"function_call": {"name": "lookup", "args": {"q": "dog"}, "id": "fc-2"}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "lookup", "id": "fc-2", "response": {"output": "a dog"}}},
                    {"functionResponse": {"name": "lookup", "response": {"output": "a cat"}}},
                    {"text": "Thanks"},
                ]},
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
            "generationConfig": {
                "temperature": 0.1, "topP": 0.8, "topK": 40, "candidateCount": 1, "maxOutputTokens": 99,
                "stopSequences": ["END"], "seed": 7, "presencePenalty": 0.5,
                "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": true}}, "required": ["n"], "propertyOrdering": ["n"]},
            },
            "tools": [{"functionDeclarations": [
                {"name": "lookup", "description": "Look up", "parameters": {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}}},
                {"name": "raw", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}},
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        });
        let chat = read(object(body), Mode::StreamSse).unwrap();
        assert_eq!(
            Value::Object(chat),
            json!({
                "messages": [
                    {"role": "system", "content": "Be brief.\nBe kind."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "file"}},
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1_2", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}},
                        {"id": "fc-2", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"dog\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "fc-2", "content": "{\"output\":\"a dog\"}"},
                    {"role": "tool", "tool_call_id": "call_1_2", "content": "{\"output\":\"a cat\"}"},
                    {"role": "user", "content": "Thanks"},
                ],
                "temperature": 0.1, "top_p": 0.8, "presence_penalty": 0.5, "seed": 7, "max_tokens": 99, "stop": ["END"],
                "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema":
                    {"type": "object", "properties": {"n": {"type": ["integer", "null"]}}, "required": ["n"]}}},
                "tools": [
                    {"type": "function", "function": {"name": "lookup", "description": "Look up",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
                    {"type": "function", "function": {"name": "raw", "parameters": {"type": "object", "additionalProperties": false}}},
                ],
                "tool_choice": {"type": "function", "function": {"name": "lookup"}},
                "stream": true,
            })
        );
        let plain = read(object(json!({"contents": [{"parts": [{"text": "hi"}]}]})), Mode::Generate).unwrap();
        assert_eq!(Value::Object(plain), json!({"messages": [{"role": "user", "content": "hi"}]}));
        let json_only = read(
            object(json!({"contents": [{"parts": [{"text": "hi"}]}], "generation_config": {"response_mime_type": "application/json"},
                          "tool_config": {"function_calling_config": {"mode": "NONE"}}, "tools": [{"function_declarations": [{"name": "f"}]}]})),
            Mode::Generate,
        )
        .unwrap();
        assert_eq!(json_only["response_format"], json!({"type": "json_object"}));
        assert_eq!(json_only["tool_choice"], "none");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({}), "invalid_request", "contents: contents is not specified"),
            (json!({"contents": []}), "invalid_request", "contents: at least one"),
            (json!({"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}), "invalid_request", "contents.0.role"),
            (json!({"contents": [{"role": "user"}]}), "invalid_request", "contents.0.parts: must be a list"),
            (
                json!({"contents": [{"parts": [{"executableCode": {}}]}]}),
                "unsupported_parameter",
                "contents.0.parts.0: unsupported part \"executableCode\"",
            ),
            (
                json!({"contents": [{"parts": [{"inlineData": {"mimeType": "video/mp4", "data": "AA"}}]}]}),
                "unsupported_parameter",
                "contents.0.parts.0.inlineData.mimeType",
            ),
            (
                json!({"contents": [{"parts": [{"fileData": {"mimeType": "application/pdf", "fileUri": "gs://x"}}]}]}),
                "unsupported_parameter",
                "contents.0.parts.0.fileData",
            ),
            (
                json!({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}),
                "invalid_request",
                "contents.0.parts.0.functionResponse: no earlier functionCall of \"f\"",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 2}}),
                "unsupported_parameter",
                "generationConfig.candidateCount",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": -1}}),
                "invalid_request",
                "generationConfig.maxOutputTokens",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/x.enum"}}),
                "unsupported_parameter",
                "generationConfig.responseMimeType",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseModalities": ["IMAGE"]}}),
                "unsupported_parameter",
                "generationConfig.responseModalities",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]}),
                "unsupported_parameter",
                "tools.0: only functionDeclarations",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "cachedContent": "cachedContents/1"}),
                "unsupported_parameter",
                "cachedContent",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}),
                "invalid_request",
                "toolConfig.functionCallingConfig.mode",
            ),
        ];
        for (body, code, message) in cases {
            let e = read(object(body.clone()), Mode::Generate).unwrap_err();
            assert_eq!(e.code, code, "{body}: {}", e.message);
            assert!(e.message.starts_with(message), "{body}: {}", e.message);
        }
    }

    #[test]
    fn sizes_and_schema_depth_are_bounded() {
        let contents: Vec<Value> = (0..=MAX_CONTENTS).map(|_| json!({"parts": [{"text": "x"}]})).collect();
        assert!(read(object(json!({"contents": contents})), Mode::Generate)
            .unwrap_err()
            .message
            .contains("at most 1024"));
        let parts: Vec<Value> = (0..=MAX_PARTS).map(|_| json!({"text": "x"})).collect();
        assert!(read(object(json!({"contents": [{"parts": parts}]})), Mode::Generate)
            .unwrap_err()
            .message
            .contains("at most 256"));
        let functions: Vec<Value> = (0..=MAX_FUNCTIONS).map(|i| json!({"name": format!("f{i}")})).collect();
        let body = json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": functions}]});
        assert!(read(object(body), Mode::Generate).unwrap_err().message.contains("at most 128"));
        let mut schema = json!({"type": "STRING"});
        for _ in 0..=MAX_SCHEMA_DEPTH {
            schema = json!({"type": "ARRAY", "items": schema});
        }
        let body = json!({"contents": [{"parts": [{"text": "x"}]}],
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}});
        assert!(read(object(body), Mode::Generate).unwrap_err().message.contains("at most 32 levels"));
    }

    #[test]
    fn paths_modes_and_keys() {
        assert_eq!(endpoint_and_method("my:chat:generateContent"), Some(("my:chat", "generateContent")));
        assert_eq!(endpoint_and_method(":generateContent"), None);
        assert_eq!(mode("generateContent", ""), Some(Mode::Generate));
        assert_eq!(mode("streamGenerateContent", "alt=sse"), Some(Mode::StreamSse));
        assert_eq!(mode("streamGenerateContent", "key=k&alt=sse"), Some(Mode::StreamSse));
        assert_eq!(mode("streamGenerateContent", ""), Some(Mode::StreamJson));
        assert_eq!(mode("countTokens", ""), None);
        let mut headers = http::HeaderMap::new();
        assert_eq!(api_key(&headers, "alt=sse&key=egw%5Fabc"), Some("egw_abc".into()));
        assert_eq!(api_key(&headers, "key="), None);
        headers.insert("x-goog-api-key", " egw_hdr ".parse().unwrap());
        assert_eq!(api_key(&headers, "key=egw_q"), Some("egw_hdr".into()));
    }

    #[test]
    fn renders_answers_with_candidates_usage_and_finish_reasons() {
        let answer = json!({
            "id": "chatcmpl-1", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        });
        let out: Value = serde_json::from_slice(&render(&serde_json::to_vec(&answer).unwrap(), None).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({
                "candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Checking."}, {"functionCall": {"name": "lookup", "args": {"q": 1}, "id": "call_1"}}]},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
                "modelVersion": "gpt-4o-mini", "responseId": "chatcmpl-1",
            })
        );
        for (reason, expected) in [("length", "MAX_TOKENS"), ("content_filter", "SAFETY"), ("stop", "STOP")] {
            let body = format!(r#"{{"choices":[{{"finish_reason":"{reason}","message":{{"content":"x"}}}}]}}"#);
            let out: Value = serde_json::from_slice(&render(body.as_bytes(), None).unwrap()).unwrap();
            assert_eq!(out["candidates"][0]["finishReason"], expected);
        }
        let odd = br#"{"choices":[{"message":{"tool_calls":[{"function":{"name":"f","arguments":"not json"}}]}}]}"#;
        let out: Value = serde_json::from_slice(&render(odd, None).unwrap()).unwrap();
        assert_eq!(
            out["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
            json!({"arguments": "not json"})
        );
        assert_eq!(render(b"{}", None).unwrap_err().code, "origin_bad_response");
    }

    #[test]
    fn errors_have_googles_shape() {
        let cases = [
            (GatewayError::bad_request(ErrorCode::InvalidRequest, "contents: x"), 400, "INVALID_ARGUMENT"),
            (GatewayError::unauthorized(ErrorCode::InvalidApiKey, "bad key"), 401, "UNAUTHENTICATED"),
            (GatewayError::forbidden(ErrorCode::EndpointNotAllowed, "no"), 403, "PERMISSION_DENIED"),
            (GatewayError::not_found(ErrorCode::ModelNotFound, "no"), 404, "NOT_FOUND"),
            (GatewayError::too_many_requests(ErrorCode::RateLimitExceeded, "slow", 3), 429, "RESOURCE_EXHAUSTED"),
            (GatewayError::bad_gateway(ErrorCode::OriginError, "bad"), 502, "UNAVAILABLE"),
            (GatewayError::gateway_timeout("late"), 504, "DEADLINE_EXCEEDED"),
            (GatewayError::internal(ErrorCode::KvError, "kv"), 500, "INTERNAL"),
        ];
        for (error, code, status) in cases {
            let body: Value = serde_json::from_slice(&error_body(&error)).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["status"], status);
            assert_eq!(body["error"]["message"], error.message.as_str());
            assert_eq!(body["error"]["details"][0]["reason"], error.code.as_str());
        }
    }

    fn chunk(delta: Value, finish: Value) -> String {
        let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    }

    const USAGE: &str = "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":20,\"total_tokens\":29}}\n\n";

    fn text_stream() -> String {
        [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Bon"}), Value::Null),
            chunk(json!({"content": "jour ✓"}), Value::Null),
            chunk(json!({}), json!("length")),
            USAGE.to_string(),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat()
    }

    fn tool_stream() -> String {
        [
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            USAGE.to_string(),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat()
    }

    fn to_gemini(mode: Mode) -> impl Fn() -> Vec<Stage> {
        move || vec![Stage::Client(ClientStream::Gemini(ChatStreamToGemini::new(mode, "gemini-x")))]
    }

    #[test]
    fn chat_stream_becomes_gemini_sse() {
        let (events, usage) = pump(to_gemini(Mode::StreamSse), text_stream().as_bytes());
        let d = data(&events);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0]["candidates"][0]["content"], json!({"role": "model", "parts": [{"text": "Bon"}]}));
        assert_eq!(d[1]["candidates"][0]["content"]["parts"][0]["text"], "jour ✓");
        assert_eq!(d[0]["modelVersion"], "gpt-4o");
        assert_eq!(d[0]["responseId"], "chatcmpl-1");
        assert_eq!(d[2]["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(
            d[2]["usageMetadata"],
            json!({"promptTokenCount": 9, "candidatesTokenCount": 20, "totalTokenCount": 29})
        );
        assert_eq!(usage, Some(Usage { prompt_tokens: 9, completion_tokens: 20 }));

        let (events, _) = pump(to_gemini(Mode::StreamSse), tool_stream().as_bytes());
        let d = data(&events);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0]["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_a"}}])
        );
        assert_eq!(d[0]["candidates"][0]["finishReason"], "STOP");
    }

    /// Runs `input` through the JSON-array stream at every split; returns the parsed array.
    fn json_array(input: &str) -> Value {
        let run = |split: usize| {
            let mut p = StreamPump::new(to_gemini(Mode::StreamJson)());
            let mut out = p.chunk(&input.as_bytes()[..split]);
            out.extend(p.chunk(&input.as_bytes()[split..]));
            out.extend(p.end());
            out
        };
        let whole = run(input.len());
        for split in 0..input.len() {
            assert_eq!(run(split), whole, "split at {split}");
        }
        serde_json::from_slice(&whole).unwrap()
    }

    #[test]
    fn chat_stream_becomes_a_json_array_without_alt_sse() {
        let array = json_array(&text_stream());
        let items = array.as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1]["candidates"][0]["content"]["parts"][0]["text"], "jour ✓");
        assert_eq!(items[2]["usageMetadata"]["totalTokenCount"], 29);
        assert_eq!(json_array("data: [DONE]\n\n")[0]["error"]["code"], 502, "a stream with no answer is an error");
        assert_eq!(
            json_array(""),
            json!([{"error": {"code": 502, "message": "origin stream ended before the answer was complete",
            "status": "UNAVAILABLE", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "origin_stream_cut", "domain": "edge-gateway"}]}}])
        );
    }

    #[test]
    fn chained_translators_carry_a_claude_stream_to_a_gemini_client() {
        use crate::gateway::providers::anthropic::tests::{to_openai, TOOL_STREAM};
        use crate::gateway::types::Operation;
        let chain = || {
            let mut stages = to_openai(Operation::Chat)();
            stages.extend(to_gemini(Mode::StreamSse)());
            stages
        };
        let (events, usage) = pump(chain, TOOL_STREAM.as_bytes());
        let last = &events.last().unwrap().1;
        let parts = last["candidates"][0]["content"]["parts"].as_array().unwrap();
        assert_eq!(parts.last().unwrap()["functionCall"]["args"], json!({"location": "Paris"}));
        assert_eq!(usage, Some(Usage { prompt_tokens: 472, completion_tokens: 89 }));
    }

    #[test]
    fn cut_and_failed_streams_end_with_an_error() {
        let cut: String = text_stream().split("\n\n").take(2).map(|e| format!("{e}\n\n")).collect();
        let (events, _) = pump(to_gemini(Mode::StreamSse), cut.as_bytes());
        let last = &events.last().unwrap().1;
        assert_eq!(
            (last["error"]["code"].as_i64(), last["error"]["status"].as_str()),
            (Some(502), Some("UNAVAILABLE"))
        );
        let failed = format!(
            "{cut}data: {{\"error\":{{\"message\":\"boom\",\"code\":\"origin_stream_cut\"}}}}\n\ndata: [DONE]\n\n"
        );
        let (events, _) = pump(to_gemini(Mode::StreamSse), failed.as_bytes());
        assert_eq!(events.iter().filter(|(_, d)| d.get("error").is_some()).count(), 1);
        assert_eq!(events.last().unwrap().1["error"]["message"], "boom");
        // Finished without [DONE]: closed normally.
        let no_done = text_stream().replace("data: [DONE]\n\n", "");
        let (events, _) = pump(to_gemini(Mode::StreamSse), no_done.as_bytes());
        assert_eq!(events.last().unwrap().1["candidates"][0]["finishReason"], "MAX_TOKENS");
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let inbound = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "t"}, {"inlineData": {"mimeType": "image/png", "data": "AA"}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}, "id": "i"}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "id": "i", "response": {"r": 1}}}]},
            ],
            "systemInstruction": {"parts": [{"text": "s"}]},
            "generationConfig": {"temperature": 1, "maxOutputTokens": 5, "stopSequences": ["x"], "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {"type": "STRING"}}}}},
            "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        });
        for body in mutations(&inbound) {
            if let Value::Object(body) = body {
                let _ = read(body, Mode::StreamSse);
            }
        }
        let completion = json!({
            "id": "c", "model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 2},
            "choices": [{"finish_reason": "stop", "message": {"content": "x", "tool_calls": [{"id": "i", "function": {"name": "n", "arguments": "{}"}}]}}],
        });
        for body in mutations(&completion) {
            let _ = render(&serde_json::to_vec(&body).unwrap(), None);
        }
        let chunks: Vec<Value> = parse_sse(format!("{}{}", text_stream(), tool_stream()).as_bytes())
            .into_iter()
            .map(|(_, d)| d)
            .filter(Value::is_object)
            .collect();
        for mode in [Mode::StreamSse, Mode::StreamJson] {
            for (i, c) in chunks.iter().enumerate() {
                for mutated in mutations(c) {
                    let mut t = ChatStreamToGemini::new(mode, "m");
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
}
