//! Google Gemini (Generative Language API): chat and completions go to
//! `POST {base}/models/{model}:generateContent` (`:streamGenerateContent?alt=sse` when
//! streaming), embeddings to `:batchEmbedContents`. The API key travels in the
//! `x-goog-api-key` header, never in the URL: URLs end up in logs.

use http::{HeaderName, Request};
use serde_json::{json, Map, Value};

use crate::gateway::wire::openai::parse_tool_call;
use edge_scan::gemini::GeminiReader;

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::Result;
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    header_value, join_url, json_post, keyed_config, map_params, param, resolve_secret, unsupported, KeySpec, Param,
    Shape,
};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::openai_answer;
use crate::gateway::wire::openai::{
    completion_prompt, data_url, embedding_list, image_url, invalid, take, write_error_chunk, ChunkWriter, OpenAiChoice,
};
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;

/// MLflow's `gemini_api_key`; `gemini_api_base` is our extension.
const SPEC: KeySpec = KeySpec {
    provider: "gemini",
    key: "gemini_api_key",
    key_required: true,
    base: Some("gemini_api_base"),
    default_base: "https://generativelanguage.googleapis.com/v1beta",
    extra: &[],
};
/// Gemini request fields a client may send as-is; every other OpenAI-only field is dropped.
const NATIVE_FIELDS: &[&str] = &["safetySettings", "cachedContent"];
/// The JSON Schema keywords Gemini's `Schema` (an OpenAPI subset) accepts; it rejects the
/// others (`additionalProperties`, `$schema`, `$ref`, ...), which OpenAI tools often carry.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "propertyOrdering",
    "default",
    "minimum",
    "maximum",
];
const SCHEMA_FORMATS: &[&str] = &["enum", "date-time", "int32", "int64", "float", "double"];

#[derive(Debug)]
pub struct Gemini {
    pub api_key: SecretRef,
    pub api_base: String,
}

impl Gemini {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Gemini> {
        let keyed = keyed_config(&SPEC, path, config, issues)?;
        Some(Gemini { api_key: keyed.api_key?, api_base: keyed.api_base })
    }
}

/// `models/{model}` unless the name already carries its collection (`tunedModels/...`).
fn model_path(model: &str) -> String {
    if model.starts_with("models/") || model.starts_with("tunedModels/") {
        model.to_string()
    } else {
        format!("models/{model}")
    }
}

impl Adapter for Gemini {
    type Stream = StreamToOpenAi;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let (action, body) = match call.op {
            Operation::Chat | Operation::Completions => {
                (generate_action(call.stream), generate_body("gemini", call.op, call.body)?)
            }
            Operation::Embeddings => ("batchEmbedContents", embeddings_to_gemini(call.body, call.model)?),
            Operation::Predict => return Err(unsupported("gemini", call.op)),
        };
        let key = resolve_secret(&self.api_key, secrets)?;
        let url = join_url(call.base_url, &format!("{}:{action}", model_path(call.model)));
        let mut request = json_post(url, json_body(&body))?;
        request.headers_mut().insert(HeaderName::from_static("x-goog-api-key"), header_value(key)?);
        Ok(request)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        let Reply { op, model, now_ms, .. } = reply;
        let value = reply.success_json()?;
        if !value.is_object() {
            return Err(bad_response("not a JSON object"));
        }
        let (answer, usage) = match op {
            Operation::Embeddings => embeddings_answer(&value, model)?,
            _ => generate_answer(op, &value, model, now_ms)?,
        };
        Ok(Translated { body: json_body(&answer), usage, fields: None })
    }

    fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode<Self::Stream> {
        match op {
            Operation::Chat | Operation::Completions => StreamMode::Translate(StreamToOpenAi::new(op, model, now_ms)),
            Operation::Embeddings | Operation::Predict => StreamMode::Buffered,
        }
    }
}

/// The `generateContent` action, or its SSE stream.
pub(crate) fn generate_action(stream: bool) -> &'static str {
    if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    }
}

/// The `GenerateContentRequest` of a chat or completions call (Gemini API and Vertex AI).
pub(crate) fn generate_body(provider: &str, op: Operation, mut body: Map<String, Value>) -> Result<Map<String, Value>> {
    if op == Operation::Completions {
        let prompt = completion_prompt(&mut body, provider)?;
        body.insert("messages".into(), json!([{"role": "user", "content": prompt}]));
    }
    chat_to_gemini(body)
}

/// OpenAI sampling fields → `generationConfig`.
const GENERATION_PARAMS: &[Param] = &[
    param("temperature", "temperature", Shape::Number),
    param("top_p", "topP", Shape::Number),
    param("top_k", "topK", Shape::Number),
    param("presence_penalty", "presencePenalty", Shape::Number),
    param("frequency_penalty", "frequencyPenalty", Shape::Number),
    param("seed", "seed", Shape::Number),
    param("max_completion_tokens", "maxOutputTokens", Shape::Count),
    param("max_tokens", "maxOutputTokens", Shape::Count),
    param("stop", "stopSequences", Shape::Stops),
    param("n", "candidateCount", Shape::Count),
];

/// An OpenAI chat request (without `model`) as a `GenerateContentRequest`.
fn chat_to_gemini(mut body: Map<String, Value>) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    let messages = match take(&mut body, "messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(_) => return Err(invalid("messages", "must be a non-empty list of messages")),
        None => return Err(invalid("messages", "is required")),
    };
    let (system, contents) = messages_to_gemini(messages)?;
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }

    let mut config = Map::new();
    map_params(&body, GENERATION_PARAMS, &mut config)?;
    if let Some(format) = take(&mut body, "response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                let schema = format.get("json_schema").and_then(|s| s.get("schema")).filter(|s| s.is_object());
                let schema = schema.ok_or_else(|| invalid("response_format.json_schema.schema", "is required"))?;
                config.insert("responseMimeType".into(), "application/json".into());
                config.insert("responseJsonSchema".into(), schema.clone());
            }
            _ => return Err(invalid("response_format.type", "must be \"text\", \"json_object\" or \"json_schema\"")),
        }
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }

    match take(&mut body, "tools") {
        None => {}
        Some(Value::Array(tools)) => {
            let mut declarations = Vec::new();
            let mut native = Vec::new();
            for (i, tool) in tools.iter().enumerate() {
                match tool.get("type").and_then(Value::as_str) {
                    Some("function") => declarations.push(declaration(i, tool)?),
                    // A Gemini-native tool, e.g. `{"googleSearch": {}}`.
                    None if tool.is_object() => native.push(tool.clone()),
                    _ => return Err(invalid(&format!("tools[{i}].type"), "must be \"function\"")),
                }
            }
            if !declarations.is_empty() {
                native.insert(0, json!({"functionDeclarations": declarations}));
            }
            if !native.is_empty() {
                out.insert("tools".into(), Value::Array(native));
            }
        }
        Some(_) => return Err(invalid("tools", "must be a list")),
    }
    if let Some(choice) = take(&mut body, "tool_choice") {
        let config = match (&choice, choice.get("function").and_then(|f| f.get("name")).and_then(Value::as_str)) {
            (Value::String(s), _) if s == "auto" => json!({"mode": "AUTO"}),
            (Value::String(s), _) if s == "none" => json!({"mode": "NONE"}),
            (Value::String(s), _) if s == "required" => json!({"mode": "ANY"}),
            (Value::Object(_), Some(name)) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", ...}",
                ))
            }
        };
        if out.contains_key("tools") {
            out.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
        }
    }
    for key in NATIVE_FIELDS {
        if let Some(value) = take(&mut body, key) {
            out.insert((*key).into(), value);
        }
    }
    Ok(out)
}

/// `(systemInstruction parts, contents)`: roles become user/model, consecutive same-role
/// messages (e.g. parallel tool results) merge into one content.
fn messages_to_gemini(messages: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Tool call id → function name, to name the function a `tool` message answers.
    let mut calls: Vec<(String, String)> = Vec::new();
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
        let content_path = format!("{path}.content");
        let (role, parts) = match role.as_str() {
            "system" | "developer" => {
                let content = content.ok_or_else(|| invalid(&content_path, "is required"))?;
                system.extend(text_parts(content, &content_path)?.into_iter().map(|t| json!({"text": t})));
                continue;
            }
            "user" => match content {
                Some(Value::String(s)) => ("user", vec![json!({"text": s})]),
                Some(Value::Array(parts)) => ("user", user_parts(parts, &content_path)?),
                Some(_) => return Err(invalid(&content_path, "must be a string or a list of content parts")),
                None => return Err(invalid(&content_path, "is required")),
            },
            "assistant" => {
                let mut parts: Vec<Value> = match content {
                    None => Vec::new(),
                    Some(content) => text_parts(content, &content_path)?
                        .into_iter()
                        .filter(|t| !t.is_empty())
                        .map(|t| json!({"text": t}))
                        .collect(),
                };
                match take(&mut message, "tool_calls") {
                    None => {}
                    Some(Value::Array(tool_calls)) => {
                        for (j, call) in tool_calls.iter().enumerate() {
                            let (id, name, args) = parse_tool_call(call, &format!("{path}.tool_calls[{j}]"))?;
                            calls.push((id.to_string(), name.to_string()));
                            parts.push(json!({"functionCall": {"name": name, "args": args}}));
                        }
                    }
                    Some(_) => return Err(invalid(&format!("{path}.tool_calls"), "must be a list")),
                }
                ("model", parts)
            }
            "tool" | "function" => {
                let name = if role == "tool" {
                    let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
                        return Err(invalid(&format!("{path}.tool_call_id"), "is required"));
                    };
                    // The latest call with that id: ids like `call_0` recur across turns.
                    match calls.iter().rev().find(|(call, _)| call == id) {
                        Some((_, name)) => name.clone(),
                        None => {
                            return Err(invalid(
                                &format!("{path}.tool_call_id"),
                                &format!("\"{id}\" matches no tool call of an earlier assistant message"),
                            ))
                        }
                    }
                } else {
                    match message.get("name").and_then(Value::as_str) {
                        Some(name) => name.to_string(),
                        None => return Err(invalid(&format!("{path}.name"), "is required")),
                    }
                };
                let text = match content {
                    None => String::new(),
                    Some(content) => text_parts(content, &content_path)?.concat(),
                };
                // Gemini wants an object; plain results go under "output", as Google documents.
                let response = match text.parse::<Value>() {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({"output": text}),
                };
                ("user", vec![json!({"functionResponse": {"name": name, "response": response}})])
            }
            other => {
                return Err(invalid(
                    &format!("{path}.role"),
                    &format!("unsupported role \"{other}\" (expected system, user, assistant or tool)"),
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let contents = contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect();
    Ok((system, contents))
}

/// The texts of a content that may hold text only (system, assistant and tool messages).
fn text_parts(content: Value, path: &str) -> Result<Vec<String>> {
    match content {
        Value::String(s) => Ok(vec![s]),
        Value::Array(parts) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| match part {
                Value::String(s) => Ok(s),
                part => match part.get("text").or_else(|| part.get("refusal")).and_then(Value::as_str) {
                    Some(text) => Ok(text.to_string()),
                    None => Err(invalid(&format!("{path}[{j}]"), "only text parts are allowed here")),
                },
            })
            .collect(),
        _ => Err(invalid(path, "must be a string or a list of text parts")),
    }
}

fn user_parts(parts: Vec<Value>, path: &str) -> Result<Vec<Value>> {
    parts.into_iter().enumerate().map(|(j, part)| user_part(part, &format!("{path}[{j}]"))).collect()
}

fn user_part(part: Value, path: &str) -> Result<Value> {
    let part = match part {
        Value::String(s) => return Ok(json!({"text": s})),
        Value::Object(part) => part,
        _ => return Err(invalid(path, "must be a content part object")),
    };
    match part.get("type").and_then(Value::as_str) {
        Some("text") => match part.get("text").and_then(Value::as_str) {
            Some(text) => Ok(json!({"text": text})),
            None => Err(invalid(&format!("{path}.text"), "is required")),
        },
        Some("image_url") => {
            let url = image_url(&part).ok_or_else(|| invalid(&format!("{path}.image_url.url"), "is required"))?;
            if let Some((mime_type, data)) = data_url(url) {
                return Ok(json!({"inlineData": {"mimeType": mime_type, "data": data}}));
            }
            // Files API URIs, gs:// and (on recent models) public URLs.
            let mut file = json!({"fileUri": url});
            if let (Some(mime_type), Some(file)) = (guess_mime_type(url), file.as_object_mut()) {
                file.insert("mimeType".into(), mime_type.into());
            }
            Ok(json!({"fileData": file}))
        }
        Some("input_audio") => {
            let audio = part.get("input_audio");
            let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
            let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
            match (data, format) {
                (Some(data), Some(format)) => {
                    Ok(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}))
                }
                _ => Err(invalid(&format!("{path}.input_audio"), "needs data and format")),
            }
        }
        Some("file") => {
            let file_data = part.get("file").and_then(|f| f.get("file_data")).and_then(Value::as_str);
            match file_data.and_then(data_url) {
                Some((mime_type, data)) => Ok(json!({"inlineData": {"mimeType": mime_type, "data": data}})),
                None => Err(invalid(&format!("{path}.file"), "gemini accepts files only as a file_data data: URL")),
            }
        }
        Some(other) => Err(invalid(&format!("{path}.type"), &format!("unsupported content part type \"{other}\""))),
        None => Err(invalid(&format!("{path}.type"), "is required")),
    }
}

fn guess_mime_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    let extension = path.rsplit_once('.')?.1;
    Some(match extension {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// An OpenAI function tool as a Gemini `FunctionDeclaration`.
fn declaration(i: usize, tool: &Value) -> Result<Value> {
    let function = tool.get("function").ok_or_else(|| invalid(&format!("tools[{i}].function"), "is required"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("tools[{i}].function.name"), "is required"))?;
    let mut out = Map::new();
    out.insert("name".into(), name.into());
    if let Some(description) = function.get("description").filter(|d| d.is_string()) {
        out.insert("description".into(), description.clone());
    }
    // Gemini refuses an OBJECT schema with no properties: a function without parameters
    // simply has none.
    let parameters = function.get("parameters").filter(|p| {
        p.get("properties").and_then(Value::as_object).is_some_and(|props| !props.is_empty())
            || p.get("type").and_then(Value::as_str).is_some_and(|t| t != "object")
    });
    if let Some(parameters) = parameters {
        out.insert("parameters".into(), gemini_schema(parameters));
    }
    Ok(Value::Object(out))
}

/// A JSON Schema reduced to what Gemini's `Schema` accepts (nesting is bounded by
/// serde_json's parse depth limit).
fn gemini_schema(schema: &Value) -> Value {
    let Some(schema) = schema.as_object() else { return json!({}) };
    let mut out = Map::new();
    for (key, value) in schema {
        match key.as_str() {
            "type" => match value {
                Value::Array(types) => {
                    let named: Vec<&Value> = types.iter().filter(|t| t.as_str() != Some("null")).collect();
                    if named.len() < types.len() {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                    match named.as_slice() {
                        [one] => {
                            out.insert("type".into(), (*one).clone());
                        }
                        [] => {}
                        many => {
                            let any: Vec<Value> = many.iter().map(|t| json!({"type": t})).collect();
                            out.insert("anyOf".into(), Value::Array(any));
                        }
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                if let Some(properties) = value.as_object() {
                    let properties = properties.iter().map(|(k, v)| (k.clone(), gemini_schema(v))).collect();
                    out.insert("properties".into(), Value::Object(properties));
                }
            }
            "items" => {
                let items = match value {
                    Value::Array(tuple) => tuple.first(),
                    other => Some(other),
                };
                if let Some(items) = items {
                    out.insert("items".into(), gemini_schema(items));
                }
            }
            "anyOf" | "oneOf" => {
                if let Some(options) = value.as_array() {
                    out.insert("anyOf".into(), options.iter().map(gemini_schema).collect());
                }
            }
            "const" => {
                out.entry("enum").or_insert_with(|| json!([value]));
            }
            "format" if value.as_str().is_some_and(|f| SCHEMA_FORMATS.contains(&f)) => {
                out.insert("format".into(), value.clone());
            }
            "format" => {}
            key if SCHEMA_KEYS.contains(&key) => {
                out.insert(key.into(), value.clone());
            }
            _ => {} // additionalProperties, $schema, $ref, $defs, strict, ...
        }
    }
    Value::Object(out)
}

fn embeddings_to_gemini(mut body: Map<String, Value>, model: &str) -> Result<Map<String, Value>> {
    let problem = || invalid("input", "must be a string or a list of strings (gemini embeds text, not token arrays)");
    let inputs: Vec<Value> = match take(&mut body, "input") {
        Some(Value::String(s)) => vec![Value::String(s)],
        Some(Value::Array(items)) if items.is_empty() => return Err(invalid("input", "must not be empty")),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items,
        Some(_) => return Err(problem()),
        None => return Err(invalid("input", "is required")),
    };
    let dimensions = match take(&mut body, "dimensions") {
        Some(d) => {
            Some(d.as_u64().filter(|d| *d > 0).ok_or_else(|| invalid("dimensions", "must be a positive integer"))?)
        }
        None => None,
    };
    let model = model_path(model);
    let requests: Vec<Value> = inputs
        .into_iter()
        .map(|text| {
            let mut request = json!({"model": model, "content": {"parts": [{"text": text}]}});
            if let (Some(d), Some(r)) = (dimensions, request.as_object_mut()) {
                r.insert("outputDimensionality".into(), d.into());
            }
            request
        })
        .collect();
    let mut out = Map::new();
    out.insert("requests".into(), Value::Array(requests));
    Ok(out)
}

fn embeddings_answer(value: &Value, model: &str) -> Result<(Value, Option<Usage>)> {
    let embeddings =
        value.get("embeddings").and_then(Value::as_array).ok_or_else(|| bad_response("no embeddings list"))?;
    let vectors = embeddings
        .iter()
        .map(|e| e.get("values").filter(|v| v.is_array()).ok_or_else(|| bad_response("an embedding without values")))
        .collect::<Result<Vec<_>>>()?;
    // batchEmbedContents reports no usage today; use it if a future version does.
    let usage = value
        .get("usageMetadata")
        .and_then(|u| u.get("promptTokenCount"))
        .and_then(Value::as_u64)
        .map(|p| Usage { prompt_tokens: p, completion_tokens: 0 });
    Ok((embedding_list(vectors, model, usage.unwrap_or_default()), usage))
}

fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ => "stop", // STOP, OTHER, MALFORMED_FUNCTION_CALL, ...
    }
}

/// Prompt tokens include tool-use prompts; completion tokens include thinking.
fn gemini_usage(meta: &Value) -> Usage {
    let count = |key: &str| meta.get(key).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: count("promptTokenCount").saturating_add(count("toolUsePromptTokenCount")),
        completion_tokens: count("candidatesTokenCount").saturating_add(count("thoughtsTokenCount")),
    }
}

/// The parts of a candidate's content (missing when a candidate was blocked).
fn candidate_parts(candidate: &Value) -> &[Value] {
    candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Visible text of a part (thought summaries are not part of the answer).
fn part_text(part: &Value) -> Option<&str> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    part.get("text").and_then(Value::as_str)
}

/// An OpenAI tool call for a `functionCall` part, numbered within its candidate.
fn tool_call(function_call: &Value, number: u64) -> Value {
    json!({
        "id": format!("call_{number}"),
        "type": "function",
        "function": {
            "name": function_call.get("name").cloned().unwrap_or(Value::Null),
            "arguments": function_call.get("args").map_or_else(|| "{}".to_string(), Value::to_string),
        },
    })
}

pub(crate) fn generate_answer(
    op: Operation,
    value: &Value,
    model: &str,
    now_ms: u64,
) -> Result<(Value, Option<Usage>)> {
    let candidates = value.get("candidates").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut choices = Vec::new();
    for (position, candidate) in candidates.iter().enumerate() {
        let mut text: Option<String> = None;
        let mut tool_calls = Vec::new();
        for part in candidate_parts(candidate) {
            if let Some(piece) = part_text(part) {
                text.get_or_insert_with(String::new).push_str(piece);
            } else if let Some(call) = part.get("functionCall") {
                tool_calls.push(tool_call(call, tool_calls.len() as u64));
            }
        }
        let finish = if tool_calls.is_empty() {
            finish_reason(candidate.get("finishReason").and_then(Value::as_str).unwrap_or("STOP"))
        } else {
            "tool_calls"
        };
        let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
        choices.push(OpenAiChoice { index, text, tool_calls, finish_reason: Some(finish) });
    }
    if choices.is_empty() {
        // The prompt itself was blocked: say so the way OpenAI does.
        if value.get("promptFeedback").and_then(|f| f.get("blockReason")).is_none() {
            return Err(bad_response("no candidates"));
        }
        choices.push(OpenAiChoice {
            index: 0,
            text: None,
            tool_calls: Vec::new(),
            finish_reason: Some("content_filter"),
        });
    }
    let usage = value.get("usageMetadata").map(gemini_usage);
    let fallback_id = format!("gemini-{now_ms}");
    let answer = openai_answer(
        op,
        value.get("responseId").and_then(Value::as_str).unwrap_or(&fallback_id),
        value.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        now_ms,
        choices,
        usage,
    );
    Ok((answer, usage))
}

#[derive(Debug)]
struct CandidateState {
    index: u64,
    calls: u64,
    finished: bool,
}

/// `streamGenerateContent?alt=sse` events (each a `GenerateContentResponse`) → OpenAI chunks.
pub struct StreamToOpenAi {
    chunks: ChunkWriter,
    /// The stream's events (one like the last that read as nothing is not read again).
    events: GeminiReader,
    named: bool,
    candidates: Vec<CandidateState>,
    blocked: bool,
    usage: Option<Usage>,
    failed: bool,
    done: bool,
}

impl StreamToOpenAi {
    pub fn new(op: Operation, model: &str, now_ms: u64) -> Self {
        StreamToOpenAi {
            chunks: ChunkWriter::new(op, &format!("gemini-{now_ms}"), model, now_ms),
            events: GeminiReader::default(),
            named: false,
            candidates: Vec::new(),
            blocked: false,
            usage: None,
            failed: false,
            done: false,
        }
    }

    /// The state of candidate `index`, opening its choice on first sight.
    fn candidate(&mut self, index: u64, out: &mut Vec<u8>) -> usize {
        if let Some(position) = self.candidates.iter().position(|c| c.index == index) {
            return position;
        }
        self.chunks.role(out, index);
        self.candidates.push(CandidateState { index, calls: 0, finished: false });
        self.candidates.len() - 1
    }
}

impl StreamTranslate for StreamToOpenAi {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed || self.done {
            return;
        }
        // The fields read, without a tree of the rest (`edge_scan`: compiled for speed). Borrowed,
        // not moved out: built for size, a move copies the event byte by byte (~200 instructions).
        let read = self.events.read(&event.data);
        let Some(data) = &read else { return };
        if !data.error.is_null() {
            let message = data.error.get("message").and_then(Value::as_str).unwrap_or("origin error");
            write_error_chunk(out, &format!("origin stream failed: {message}"), "origin_stream_error");
            self.failed = true;
            return;
        }
        if !self.named {
            self.named = true;
            self.chunks.name(data.response_id.as_str(), data.model_version.as_str());
        }
        if data.usage_metadata.is_object() {
            self.usage = Some(gemini_usage(&data.usage_metadata));
        }
        for (position, candidate) in data.candidates.iter().enumerate() {
            let index = candidate.index.unwrap_or(position as u64);
            let slot = self.candidate(index, out);
            let Some(state) = self.candidates.get_mut(slot) else { continue };
            if state.finished {
                continue;
            }
            for part in &candidate.parts {
                if let Some(text) = &part.text {
                    self.chunks.text(out, index, text);
                } else if let Some(call) = &part.function_call {
                    let mut call = tool_call(call, state.calls);
                    if let Some(call) = call.as_object_mut() {
                        call.insert("index".into(), state.calls.into());
                    }
                    self.chunks.tool_call(out, index, call);
                    state.calls += 1;
                }
            }
            if let Some(reason) = candidate.finish_reason.as_deref() {
                let reason = if state.calls > 0 { "tool_calls" } else { finish_reason(reason) };
                self.chunks.finish(out, index, reason);
                state.finished = true;
            }
        }
        if data.candidates.is_empty() && data.prompt_feedback.get("blockReason").is_some() {
            let slot = self.candidate(0, out);
            if let Some(state) = self.candidates.get_mut(slot).filter(|s| !s.finished) {
                state.finished = true;
                self.chunks.finish(out, 0, "content_filter");
            }
            self.blocked = true;
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let complete = self.blocked || (!self.candidates.is_empty() && self.candidates.iter().all(|c| c.finished));
        if !complete && !self.failed {
            write_error_chunk(out, "origin stream ended early", "origin_stream_cut");
        }
        if let Some(usage) = self.usage {
            self.chunks.usage(out, usage);
        }
        sse::write_done(out);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::dialect::anthropic::OpenAiStreamToMessages;
    use crate::gateway::dialect::ClientStream;
    use crate::gateway::pipeline::stream::{Stage, StreamPump};
    use crate::gateway::providers::test_support::{self, config_issues, TestSecrets};
    use crate::gateway::providers::ProviderStream;
    use crate::gateway::wire::sse::SseParser;
    use http::StatusCode;

    const NOW: u64 = 1_700_000_000_123;
    const BASE: &str = "https://generativelanguage.googleapis.com/v1beta";
    const SECRETS: TestSecrets = TestSecrets(&[("GEMINI_API_KEY", "AIza-test")]);

    fn adapter() -> Gemini {
        test_support::adapter(Gemini::from_config, json!({"gemini_api_key": "$GEMINI_API_KEY"}))
    }

    fn request(op: Operation, body: Value, stream: bool) -> Result<(Request<Vec<u8>>, Value)> {
        let call = test_support::call(op, "gemini-2.5-flash", body, BASE, stream, NOW);
        let req = adapter().build_request(call, &SECRETS)?;
        let sent = test_support::sent(&req);
        Ok((req, sent))
    }

    fn sent(body: Value) -> Value {
        request(Operation::Chat, body, false).unwrap().1
    }

    fn reply(op: Operation, status: StatusCode, body: &[u8]) -> Result<Translated> {
        adapter().translate_response(Reply { op, status, body, model: "gemini-2.5-flash", now_ms: NOW, wanted: &[] })
    }

    fn translated(op: Operation, body: Value) -> (Value, Option<Usage>) {
        test_support::parsed(reply(op, StatusCode::OK, &serde_json::to_vec(&body).unwrap()).unwrap())
    }

    // --- config and requests ------------------------------------------------------------------

    #[test]
    fn config_defaults_and_issues() {
        let p = adapter();
        assert_eq!(p.default_base(), BASE);
        assert_eq!(p.api_key, SecretRef::Env("GEMINI_API_KEY".into()));
        let text = config_issues(Gemini::from_config, json!({"gemini_api_bse": "https://x", "gemini_api_key": ["k"]}));
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text.iter().any(|t| t.starts_with("e.config.gemini_api_bse: unknown gemini config key")
                && t.contains("did you mean \"gemini_api_base\"")),
            "{text:?}"
        );
        assert!(text.contains(&"e.config.gemini_api_key: must be a string".to_string()), "{text:?}");
        let text = config_issues(Gemini::from_config, json!({}));
        assert_eq!(text[0], "e.config.gemini_api_key: is required (use a \"$SECRET_NAME\" reference)");
    }

    #[test]
    fn key_goes_in_a_header_never_the_url() {
        let (req, body) =
            request(Operation::Chat, json!({"messages": [{"role": "user", "content": "Hi"}]}), false).unwrap();
        assert_eq!(
            req.uri(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(req.headers()["x-goog-api-key"], "AIza-test");
        assert!(!req.uri().to_string().contains("AIza"));
        assert_eq!(body, json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}));

        let (req, _) =
            request(Operation::Chat, json!({"messages": [{"role": "user", "content": "Hi"}], "stream": true}), true)
                .unwrap();
        assert_eq!(
            req.uri(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert!(!req.uri().to_string().contains("key="));
    }

    #[test]
    fn translates_a_conversation_with_system_images_tools_and_results() {
        let body = sent(json!({
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this, and the weather in Paris and Rome?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?x=1"}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"time\": \"14:05\"}"},
                {"role": "tool", "tool_call_id": "call_0", "content": "18C and sunny"},
                {"role": "assistant", "content": "Sunny in Paris."},
                {"role": "user", "content": "Thanks"},
            ],
            "temperature": 1.5,
            "top_p": 0.95,
            "max_tokens": 200,
            "stop": ["END"],
            "n": 2,
            "seed": 7,
            "response_format": {"type": "json_object"},
            "tools": [
                {"type": "function", "function": {
                    "name": "get_weather", "description": "Current weather",
                    "parameters": {
                        "$schema": "http://json-schema.org/draft-07/schema#",
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "format": "uri", "description": "City"},
                            "unit": {"type": ["string", "null"], "enum": ["C", "F"]},
                            "days": {"type": "array", "items": {"type": "integer", "format": "int32"}},
                        },
                        "required": ["city"],
                        "additionalProperties": false,
                    },
                    "strict": true,
                }},
                {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
            ],
            "tool_choice": "required",
            "user": "dropped",
            "stream_options": {"include_usage": true},
        }));
        assert_eq!(
            body,
            json!({
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "What is this, and the weather in Paris and Rome?"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                        {"fileData": {"fileUri": "https://example.com/cat.JPG?x=1", "mimeType": "image/jpeg"}},
                    ]},
                    {"role": "model", "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                        {"functionCall": {"name": "get_time", "args": {}}},
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_time", "response": {"time": "14:05"}}},
                        {"functionResponse": {"name": "get_weather", "response": {"output": "18C and sunny"}}},
                    ]},
                    {"role": "model", "parts": [{"text": "Sunny in Paris."}]},
                    {"role": "user", "parts": [{"text": "Thanks"}]},
                ],
                "systemInstruction": {"parts": [{"text": "You are terse."}]},
                "generationConfig": {
                    "temperature": 1.5,
                    "topP": 0.95,
                    "seed": 7,
                    "maxOutputTokens": 200,
                    "stopSequences": ["END"],
                    "candidateCount": 2,
                    "responseMimeType": "application/json",
                },
                "tools": [{"functionDeclarations": [
                    {"name": "get_weather", "description": "Current weather", "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "description": "City"},
                            "unit": {"nullable": true, "type": "string", "enum": ["C", "F"]},
                            "days": {"type": "array", "items": {"type": "integer", "format": "int32"}},
                        },
                        "required": ["city"],
                    }},
                    {"name": "get_time"},
                ]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            })
        );
    }

    #[test]
    fn maps_tool_choice_and_response_format() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, expected) in [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
            ),
        ] {
            let body =
                sent(json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}));
            assert_eq!(body["toolConfig"]["functionCallingConfig"], expected);
        }
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let body = sent(json!({
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
            "max_completion_tokens": 9,
        }));
        assert_eq!(
            body["generationConfig"],
            json!({"maxOutputTokens": 9, "responseMimeType": "application/json", "responseJsonSchema": schema})
        );
    }

    #[test]
    fn completions_embeddings_and_model_paths() {
        let (req, body) = request(Operation::Completions, json!({"prompt": "Once", "max_tokens": 5}), false).unwrap();
        assert!(req.uri().path().ends_with("/models/gemini-2.5-flash:generateContent"));
        assert_eq!(
            body,
            json!({"contents": [{"role": "user", "parts": [{"text": "Once"}]}], "generationConfig": {"maxOutputTokens": 5}})
        );

        let (req, body) = request(
            Operation::Embeddings,
            json!({"input": ["a", "b"], "dimensions": 8, "encoding_format": "float"}),
            false,
        )
        .unwrap();
        assert_eq!(
            req.uri(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:batchEmbedContents"
        );
        assert_eq!(
            body,
            json!({"requests": [
                {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                {"model": "models/gemini-2.5-flash", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8},
            ]})
        );
        let e = request(Operation::Embeddings, json!({"input": [[1, 2]]}), false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = request(Operation::Predict, json!({"inputs": [1]}), false).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "unsupported_operation"));
        assert!(e.message.contains("gemini"));

        assert_eq!(model_path("models/text-embedding-004"), "models/text-embedding-004");
        assert_eq!(model_path("tunedModels/my-model"), "tunedModels/my-model");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({}), "messages: is required"),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]}),
                "messages[0].tool_call_id: \"call_9\" matches no tool call",
            ),
            (json!({"messages": [{"role": "narrator", "content": "x"}]}), "messages[0].role: unsupported role"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0].image_url.url: is required",
            ),
            (
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": "x"}]}]}),
                "messages[0].content[0]: only text parts",
            ),
            (json!({"messages": [{"role": "user", "content": "x"}], "n": 0}), "n: must be a positive integer"),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "retrieval"}]}),
                "tools[0].type: must be \"function\"",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}),
                "response_format.type",
            ),
        ];
        for (body, expected) in cases {
            let e = request(Operation::Chat, body.clone(), false).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.starts_with(expected), "{body}: {}", e.message);
        }
    }

    #[test]
    fn schema_sanitizing_keeps_what_gemini_understands() {
        let schema = json!({
            "type": "object",
            "properties": {
                "mode": {"const": "fast"},
                "any": {"type": ["string", "integer", "null"]},
                "list": {"type": "array", "items": [{"type": "string", "minLength": 1}]},
                "choice": {"oneOf": [{"type": "string"}, {"$ref": "#/$defs/x"}]},
            },
            "$defs": {"x": {"type": "number"}},
        });
        assert_eq!(
            gemini_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "mode": {"enum": ["fast"]},
                    "any": {"nullable": true, "anyOf": [{"type": "string"}, {"type": "integer"}]},
                    "list": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "choice": {"anyOf": [{"type": "string"}, {}]},
                },
            })
        );
        assert_eq!(gemini_schema(&json!(true)), json!({}));
    }

    // --- responses ----------------------------------------------------------------------------

    #[test]
    fn translates_a_text_answer() {
        let (body, usage) = translated(
            Operation::Chat,
            json!({
                "candidates": [{
                    "content": {"parts": [{"text": "In a land far away, "}, {"text": "a dragon slept."}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                    "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
                }],
                "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 12, "totalTokenCount": 24, "thoughtsTokenCount": 4},
                "modelVersion": "gemini-2.5-flash",
                "responseId": "mAitaLmkHPPlz7IPvtfUqQ4",
            }),
        );
        assert_eq!(
            body,
            json!({
                "id": "mAitaLmkHPPlz7IPvtfUqQ4",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gemini-2.5-flash",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "In a land far away, a dragon slept."},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24},
            })
        );
        assert_eq!(usage, Some(Usage { prompt_tokens: 8, completion_tokens: 16 }));
    }

    #[test]
    fn translates_function_calls_length_and_filters() {
        let (body, _) = translated(
            Operation::Chat,
            json!({"candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "thinking...", "thought": true},
                    {"functionCall": {"name": "find_theaters", "args": {"location": "Mountain View, CA", "movie": "Barbie"}}},
                    {"functionCall": {"name": "get_time"}},
                ]},
                "finishReason": "STOP", "index": 0,
            }]}),
        );
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([
                {"id": "call_0", "type": "function", "function": {"name": "find_theaters", "arguments": "{\"location\":\"Mountain View, CA\",\"movie\":\"Barbie\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ])
        );
        assert!(body.get("usage").is_none());

        let (body, _) = translated(
            Operation::Chat,
            json!({"candidates": [
                {"content": {"role": "model", "parts": [{"text": "Once upon"}]}, "finishReason": "MAX_TOKENS", "index": 0},
                {"finishReason": "SAFETY", "index": 1},
            ]}),
        );
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(
            body["choices"][1],
            json!({"index": 1, "message": {"role": "assistant", "content": null}, "logprobs": null, "finish_reason": "content_filter"})
        );

        let (body, _) = translated(
            Operation::Chat,
            json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}),
        );
        assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(body["usage"]["prompt_tokens"], 5);

        let (body, _) = translated(
            Operation::Completions,
            json!({"candidates": [{"content": {"parts": [{"text": "upon a time"}]}, "finishReason": "STOP"}]}),
        );
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["id"], "gemini-1700000000123");
        assert_eq!(body["model"], "gemini-2.5-flash");
        assert_eq!(
            body["choices"],
            json!([{"index": 0, "text": "upon a time", "logprobs": null, "finish_reason": "stop"}])
        );
    }

    #[test]
    fn translates_embeddings() {
        let (body, usage) =
            translated(Operation::Embeddings, json!({"embeddings": [{"values": [0.1, -0.2]}, {"values": [0.3, 0.4]}]}));
        assert_eq!(
            body,
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "embedding": [0.1, -0.2], "index": 0},
                    {"object": "embedding", "embedding": [0.3, 0.4], "index": 1},
                ],
                "model": "gemini-2.5-flash",
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            })
        );
        assert_eq!(usage, None);
        let e = reply(Operation::Embeddings, StatusCode::OK, br#"{"embeddings": [{"value": []}]}"#).unwrap_err();
        assert_eq!(e.code, "origin_bad_response");
    }

    #[test]
    fn maps_origin_errors() {
        let body = br#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}"#;
        let e = reply(Operation::Chat, StatusCode::BAD_REQUEST, body).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "origin_rejected"));
        assert!(e.message.ends_with("API key not valid. Please pass a valid API key."), "{}", e.message);
        let body = br#"{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(
            reply(Operation::Chat, StatusCode::TOO_MANY_REQUESTS, body).unwrap_err().code,
            "origin_rate_limited"
        );
        let e = reply(Operation::Embeddings, StatusCode::INTERNAL_SERVER_ERROR, b"oops").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        for bad in [&b"{"[..], b"[1]", b"{}"] {
            assert_eq!(reply(Operation::Chat, StatusCode::OK, bad).unwrap_err().code, "origin_bad_response");
        }
    }

    // --- streams ------------------------------------------------------------------------------

    fn to_openai(op: Operation) -> impl Fn() -> Vec<Stage> {
        move || vec![Stage::Provider(ProviderStream::GeminiToOpenAi(StreamToOpenAi::new(op, "gemini-2.5-flash", NOW)))]
    }

    /// Every split point (and byte by byte) must produce the same client bytes.
    fn pump(make: impl Fn() -> Vec<Stage>, input: &[u8]) -> (Vec<Value>, Option<Usage>) {
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
        let mut parser = SseParser::new();
        let mut events = parser.push(&expected);
        events.extend(parser.finish());
        let events =
            events.into_iter().map(|e| serde_json::from_str(&e.data).unwrap_or(Value::String(e.data))).collect();
        (events, whole.summary().usage)
    }

    /// What `streamGenerateContent?alt=sse` sends (the mock origin's framing, with `\r\n`).
    const TEXT_STREAM: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Héllo\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"totalTokenCount\": 4},\"modelVersion\": \"gemini-2.5-flash-001\",\"responseId\": \"resp-1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" wörld ✓\"}],\"role\": \"model\"},\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash-001\",\"responseId\": \"resp-1\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 3,\"totalTokenCount\": 7},\"modelVersion\": \"gemini-2.5-flash-001\",\"responseId\": \"resp-1\"}\r\n\r\n",
    );

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({
            "id": "resp-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gemini-2.5-flash-001",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    #[test]
    fn streams_text_as_openai_chunks() {
        let (events, usage) = pump(to_openai(Operation::Chat), TEXT_STREAM.as_bytes());
        assert_eq!(
            events,
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Héllo"}), Value::Null),
                chunk(json!({"content": " wörld ✓"}), Value::Null),
                chunk(json!({}), json!("stop")),
                json!({
                    "id": "resp-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": "gemini-2.5-flash-001", "choices": [],
                    "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
                }),
                json!("[DONE]"),
            ]
        );
        assert_eq!(usage, Some(Usage { prompt_tokens: 4, completion_tokens: 3 }));

        let (events, _) = pump(to_openai(Operation::Completions), TEXT_STREAM.as_bytes());
        assert_eq!(events[0]["object"], "text_completion");
        assert_eq!(events[0]["choices"][0]["text"], "Héllo");
        assert_eq!(events[2]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn streams_function_calls_and_candidates() {
        let stream = concat!(
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\", \"args\": {\"city\": \"Paris\"}}}], \"role\": \"model\"}, \"index\": 0}, {\"content\": {\"parts\": [{\"text\": \"No tools\"}], \"role\": \"model\"}, \"finishReason\": \"MAX_TOKENS\", \"index\": 1}]}\n\n",
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_time\", \"args\": {}}}], \"role\": \"model\"}, \"finishReason\": \"STOP\", \"index\": 0}], \"usageMetadata\": {\"promptTokenCount\": 10, \"candidatesTokenCount\": 6}}\n\n",
        );
        let (events, usage) = pump(to_openai(Operation::Chat), stream.as_bytes());
        let choices: Vec<&Value> = events.iter().filter_map(|e| e["choices"].get(0)).collect();
        assert_eq!(choices[0]["delta"]["role"], "assistant");
        assert_eq!(
            choices[1]["delta"]["tool_calls"],
            json!([{"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}, "index": 0}])
        );
        assert_eq!((choices[2]["index"].clone(), choices[2]["delta"]["role"].clone()), (json!(1), json!("assistant")));
        assert_eq!(choices[3]["delta"]["content"], "No tools");
        assert_eq!((choices[4]["index"].clone(), choices[4]["finish_reason"].clone()), (json!(1), json!("length")));
        assert_eq!(choices[5]["delta"]["tool_calls"][0]["id"], "call_1");
        assert_eq!(choices[5]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(choices[6]["finish_reason"], "tool_calls");
        assert!(events.iter().all(|e| e.get("error").is_none()));
        assert_eq!(usage, Some(Usage { prompt_tokens: 10, completion_tokens: 6 }));
    }

    #[test]
    fn cut_and_failed_streams_end_with_an_error_chunk() {
        let cut: String = TEXT_STREAM.split_inclusive("\r\n\r\n").take(2).collect();
        let (events, usage) = pump(to_openai(Operation::Chat), cut.as_bytes());
        let n = events.len();
        assert_eq!(
            events[n - 3],
            json!({"error": {"message": "origin stream ended early", "type": "upstream_error", "code": "origin_stream_cut"}})
        );
        assert_eq!(events[n - 2]["usage"]["prompt_tokens"], 4);
        assert_eq!(events[n - 1], json!("[DONE]"));
        assert_eq!(usage, Some(Usage { prompt_tokens: 4, completion_tokens: 0 }));

        let failed = format!("{cut}data: {{\"error\": {{\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}}}\n\n");
        let (events, _) = pump(to_openai(Operation::Chat), failed.as_bytes());
        let errors: Vec<&Value> = events.iter().filter(|e| e.get("error").is_some()).collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["error"]["code"], "origin_stream_error");
        assert!(errors[0]["error"]["message"].as_str().unwrap().contains("overloaded"));

        let blocked = b"data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}}\n\n";
        let (events, _) = pump(to_openai(Operation::Chat), blocked);
        assert_eq!(events[1]["choices"][0]["finish_reason"], "content_filter");
        assert!(events.iter().all(|e| e.get("error").is_none()));

        let (events, _) =
            pump(to_openai(Operation::Chat), b"data: [1, 2]\n\ndata: {\"candidates\": 7}\n\n: keepalive\n\n");
        assert_eq!(events.last(), Some(&json!("[DONE]")));
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn a_messages_client_can_stream_from_gemini() {
        let chain = || {
            let mut stages = to_openai(Operation::Chat)();
            stages.push(Stage::Client(ClientStream::Anthropic(OpenAiStreamToMessages::new("ep"))));
            stages
        };
        let (events, usage) = pump(chain, TEXT_STREAM.as_bytes());
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            types,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[5]["usage"], json!({"input_tokens": 4, "output_tokens": 3}));
        assert_eq!(usage, Some(Usage { prompt_tokens: 4, completion_tokens: 3 }));
    }

    #[test]
    fn hostile_inputs_never_panic() {
        use crate::gateway::test_util::mutations;
        let p = adapter();
        let request = json!({
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "t"}, {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
                                             {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a"}], "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "{\"a\": 1}"},
                {"role": "function", "name": "f", "content": "r"},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": ["object"], "properties": {"a": {"type": "array", "items": [{"type": "string"}]}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"schema": {}}},
            "stop": "x", "max_tokens": 5, "temperature": 0.5, "n": 2,
        });
        for body in mutations(&request) {
            if let Value::Object(body) = body {
                for op in [Operation::Chat, Operation::Completions, Operation::Embeddings] {
                    let call = Call {
                        op,
                        model: "m",
                        body: body.clone(),
                        base_url: "http://o",
                        stream: true,
                        now_ms: 0,
                        written: None,
                    };
                    let _ = p.build_request(call, &SECRETS);
                }
            }
        }
        let answer = json!({
            "candidates": [{"content": {"parts": [{"text": "t", "thought": false}, {"functionCall": {"name": "n", "args": {"a": 1}}}]}, "finishReason": "STOP", "index": 0}],
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2},
            "embeddings": [{"values": [0.5]}],
            "modelVersion": "m", "responseId": "r",
        });
        for body in mutations(&answer) {
            let bytes = serde_json::to_vec(&body).unwrap();
            for op in [Operation::Chat, Operation::Completions, Operation::Embeddings] {
                let _ = reply(op, StatusCode::OK, &bytes);
            }
            let mut t = StreamToOpenAi::new(Operation::Chat, "m", 0);
            let mut out = Vec::new();
            t.event(&SseEvent { event: None, data: body.to_string() }, &mut out);
            t.event(&SseEvent { event: None, data: answer.to_string() }, &mut out);
            t.finish(&mut out);
            assert!(out.ends_with(b"data: [DONE]\n\n"));
        }
    }
}
