//! `bedrock` / `amazon-bedrock`: Amazon Bedrock Runtime. Chat and completions go through the
//! model-agnostic Converse API (`POST /model/{modelId}/converse`); embeddings through
//! `InvokeModel` with the Titan (or Cohere-on-Bedrock) embedding body. Requests are signed with
//! AWS Signature Version 4, written here on `sha2` + `hmac` (no AWS SDK at the edge).
//!
//! Config follows MLflow: `aws_config: {aws_region, aws_access_key_id, aws_secret_access_key,
//! aws_session_token?}`. MLflow's `aws_role_arn` (STS AssumeRole) needs a second signed call
//! and a credential cache per isolate, so it is refused at config time. Extension:
//! `bedrock_api_base` (default `https://bedrock-runtime.{region}.amazonaws.com`).
//!
//! Streaming is buffered: `ConverseStream` answers in AWS's binary event-stream framing
//! (`application/vnd.amazon.eventstream`), not SSE, so it cannot use the SSE stream pump.

use hmac::{Hmac, Mac};
use http::{header, Request};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    check_url, finish_request, join_url, post_json, resolve_secret, string_config, synthetic_id,
};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::util::text::hex;
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::{assistant_message, embedding_list, usage_json};

const CONFIG_KEYS: &[&str] = &["aws_config", "bedrock_api_base"];
const AWS_KEYS: &[&str] = &[
    "aws_region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_role_arn",
    "session_length_seconds",
];
const SERVICE: &str = "bedrock";

#[derive(Debug)]
pub struct Bedrock {
    pub region: String,
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    pub session_token: Option<SecretRef>,
    pub api_base: String,
}

impl Bedrock {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Bedrock> {
        let before = issues.0.len();
        let mut api_base = None;
        let mut aws = None;
        for (key, value) in config {
            match (key.as_str(), value) {
                ("bedrock_api_base", Value::String(base)) => {
                    check_url(path, key, base, issues);
                    api_base = Some(base.clone());
                }
                ("bedrock_api_base", _) => issues.push(format!("{path}.{key}"), "must be a string"),
                ("aws_config", Value::Object(map)) => aws = Some(map),
                ("aws_config", _) => issues.push(
                    format!("{path}.{key}"),
                    "must be an object {aws_region, aws_access_key_id, aws_secret_access_key, aws_session_token?}",
                ),
                _ => issues.unknown(format!("{path}.{key}"), "bedrock config key", key, CONFIG_KEYS),
            }
        }
        let Some(aws) = aws else {
            if !config.contains_key("aws_config") {
                issues.push(
                    format!("{path}.aws_config"),
                    "is required: {aws_region, aws_access_key_id, aws_secret_access_key, aws_session_token?}",
                );
            }
            return None;
        };
        let aws_path = format!("{path}.aws_config");
        let mut values = string_config(&aws_path, "aws_config", aws, AWS_KEYS, issues);
        for key in ["aws_role_arn", "session_length_seconds"] {
            if values.remove(key).is_some() {
                issues.push(
                    format!("{aws_path}.{key}"),
                    "is not supported at the edge (assuming a role needs an STS call and a credential cache); \
                     use aws_access_key_id and aws_secret_access_key (and aws_session_token for temporary \
                     credentials) instead",
                );
            }
        }
        let region = values.remove("aws_region");
        match region.as_deref() {
            None => issues.push(format!("{aws_path}.aws_region"), "is required (e.g. \"us-east-1\")"),
            Some(r)
                if r.is_empty() || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                issues.push(
                    format!("{aws_path}.aws_region"),
                    format!(
                        "\"{r}\" is not a region name like \"us-east-1\" (it is part of the origin URL, so it \
                         cannot be a $SECRET reference)"
                    ),
                )
            }
            Some(_) => {}
        }
        let access_key_id = values.remove("aws_access_key_id");
        let secret_access_key = values.remove("aws_secret_access_key");
        for (key, value) in [("aws_access_key_id", &access_key_id), ("aws_secret_access_key", &secret_access_key)] {
            if value.is_none() {
                issues.push(
                    format!("{aws_path}.{key}"),
                    "is required (the edge has no AWS default credential chain; use a \"$SECRET_NAME\" reference)",
                );
            }
        }
        if issues.0.len() != before {
            return None;
        }
        let region = region?;
        Some(Bedrock {
            api_base: api_base.unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com")),
            region,
            access_key_id: SecretRef::parse(&access_key_id?),
            secret_access_key: SecretRef::parse(&secret_access_key?),
            session_token: values.remove("aws_session_token").map(|t| SecretRef::parse(&t)),
        })
    }
}

// ---------------------------------------------------------------------------------------
// AWS Signature Version 4

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 wants.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// SigV4's canonical URI for every service but S3: each segment of the path *as sent* is
/// URI-encoded again, so a model id's `:` travels as `%3A` and is signed as `%253A`.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in milliseconds (proleptic Gregorian, UTC).
fn amz_date(now_ms: u64) -> String {
    let secs = now_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for non-negative day counts.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// One request to sign. `path` is the path exactly as it goes on the wire and `query` the
/// already-canonical query string; `headers` are the signed headers with lowercase names.
struct SigningRequest<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a [(&'a str, &'a str)],
    payload_hash: &'a str,
    amz_date: &'a str,
    region: &'a str,
    service: &'a str,
}

/// The `Authorization` header value for `req` (AWS4-HMAC-SHA256).
fn authorization(req: &SigningRequest<'_>, access_key_id: &str, secret_access_key: &str) -> String {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    headers.sort();
    let signed_headers = headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method,
        canonical_uri(req.path),
        req.query,
        req.payload_hash
    );
    let date = req.amz_date.get(..8).unwrap_or(req.amz_date);
    let scope = format!("{date}/{}/{}/aws4_request", req.region, req.service);
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", req.amz_date, sha256_hex(canonical_request.as_bytes()));
    let mut key = hmac(format!("AWS4{secret_access_key}").as_bytes(), date.as_bytes());
    for part in [req.region, req.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// The `Host` header an HTTP client sends for `uri` (default ports dropped, no userinfo).
fn host_header(uri: &http::Uri) -> Option<String> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    Some(match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    })
}

// ---------------------------------------------------------------------------------------
// Request translation (OpenAI → Converse / InvokeModel)

fn invalid(code: ErrorCode, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(code, message)
}

/// Converse content blocks for an OpenAI `content` (string or parts).
fn content_blocks(content: Option<&Value>) -> Result<Vec<Value>> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(parts)) => parts.iter().map(part_block).collect(),
        Some(_) => Err(invalid(ErrorCode::InvalidMessage, "message content must be a string or a list of parts")),
    }
}

fn part_block(part: &Value) -> Result<Value> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") | None => match part.get("text").and_then(Value::as_str) {
            Some(text) => Ok(json!({"text": text})),
            None => Err(invalid(ErrorCode::InvalidMessage, "a text content part needs a string \"text\"")),
        },
        Some("image_url") => {
            let url = part.pointer("/image_url/url").and_then(Value::as_str).unwrap_or_default();
            // Converse takes image bytes, not URLs: only `data:image/<fmt>;base64,...` works.
            let parsed = url
                .strip_prefix("data:image/")
                .and_then(|rest| rest.split_once(";base64,"))
                .map(|(format, data)| (if format == "jpg" { "jpeg" } else { format }, data));
            match parsed {
                Some((format, data)) if ["png", "jpeg", "gif", "webp"].contains(&format) => {
                    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
                }
                _ => Err(invalid(
                    ErrorCode::UnsupportedContent,
                    "Bedrock takes images as data URLs (data:image/png|jpeg|gif|webp;base64,...), not links",
                )),
            }
        }
        other => Err(invalid(
            ErrorCode::UnsupportedContent,
            format!("content part type {} is not supported by Bedrock Converse", other.unwrap_or("(none)")),
        )),
    }
}

/// The plain text of an OpenAI `content` (system and tool messages).
fn content_text(content: Option<&Value>) -> Result<String> {
    let mut out = String::new();
    for block in content_blocks(content)? {
        match block.get("text").and_then(Value::as_str) {
            Some(text) => {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(text);
            }
            None => return Err(invalid(ErrorCode::UnsupportedContent, "system and tool messages take text only")),
        }
    }
    Ok(out)
}

fn tool_use_blocks(tool_calls: Option<&Value>) -> Result<Vec<Value>> {
    let Some(Value::Array(calls)) = tool_calls else { return Ok(Vec::new()) };
    calls
        .iter()
        .map(|call| {
            let id = call.get("id").and_then(Value::as_str);
            let name = call.pointer("/function/name").and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(invalid(ErrorCode::InvalidMessage, "each tool call needs an id and a function name"));
            };
            let input = match call.pointer("/function/arguments") {
                Some(Value::String(args)) if args.trim().is_empty() => json!({}),
                Some(Value::String(args)) => serde_json::from_str::<Value>(args).map_err(|_| {
                    invalid(
                        ErrorCode::InvalidMessage,
                        format!("the arguments of tool call \"{id}\" are not valid JSON"),
                    )
                })?,
                Some(Value::Object(args)) => Value::Object(args.clone()),
                _ => json!({}),
            };
            Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
        })
        .collect()
}

/// OpenAI messages → Converse `(system, messages)`. Consecutive turns of the same role are
/// merged (Converse wants user and assistant to alternate; tool results are user turns).
fn converse_messages(messages: Option<&Value>) -> Result<(Vec<Value>, Vec<Value>)> {
    let Some(Value::Array(messages)) = messages else {
        return Err(invalid(ErrorCode::MissingField, "\"messages\" must be a non-empty list"));
    };
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                let text = content_text(message.get("content"))?;
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
                continue;
            }
            Some("user") => ("user", content_blocks(message.get("content"))?),
            Some("assistant") => {
                let mut blocks = content_blocks(message.get("content"))?;
                blocks.extend(tool_use_blocks(message.get("tool_calls"))?);
                ("assistant", blocks)
            }
            Some("tool") => {
                let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
                    return Err(invalid(ErrorCode::InvalidMessage, "a tool message needs a \"tool_call_id\""));
                };
                let text = content_text(message.get("content"))?;
                ("user", vec![json!({"toolResult": {"toolUseId": id, "content": [{"text": text}]}})])
            }
            Some(other) => {
                return Err(invalid(
                    ErrorCode::InvalidMessage,
                    format!("message role \"{other}\" is not supported by Bedrock"),
                ))
            }
            None => return Err(invalid(ErrorCode::InvalidMessage, "each message needs a \"role\"")),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(invalid(ErrorCode::MissingField, "the request has no user or assistant content"));
    }
    let messages = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok((system, messages))
}

fn tool_config(body: &Map<String, Value>) -> Result<Option<Value>> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(tools)) if tools.is_empty() => return Ok(None),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid(ErrorCode::InvalidTools, "\"tools\" must be a list")),
    };
    let specs = tools
        .iter()
        .map(|tool| {
            let (Some("function"), Some(function)) =
                (tool.get("type").and_then(Value::as_str), tool.get("function").and_then(Value::as_object))
            else {
                return Err(invalid(
                    ErrorCode::InvalidTools,
                    "Bedrock takes {\"type\": \"function\", \"function\": {...}} tools",
                ));
            };
            let Some(name) = function.get("name").and_then(Value::as_str) else {
                return Err(invalid(ErrorCode::InvalidTools, "each tool function needs a \"name\""));
            };
            let schema = function
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut spec = json!({"name": name, "inputSchema": {"json": schema}});
            if let (Some(d), Some(obj)) = (function.get("description").and_then(Value::as_str), spec.as_object_mut()) {
                obj.insert("description".into(), Value::String(d.to_string()));
            }
            Ok(json!({"toolSpec": spec}))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut config = json!({"tools": specs});
    let choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"auto": {}})),
        Some(Value::String(s)) if s == "required" => Some(json!({"any": {}})),
        Some(choice @ Value::Object(_)) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(json!({"tool": {"name": name}})),
            None => return Err(invalid(ErrorCode::InvalidTools, "\"tool_choice\" must name a function")),
        },
        // "none" has no Converse equivalent: the model decides.
        _ => None,
    };
    if let (Some(choice), Some(obj)) = (choice, config.as_object_mut()) {
        obj.insert("toolChoice".into(), choice);
    }
    Ok(Some(config))
}

fn converse_body(op: Operation, body: &Map<String, Value>) -> Result<Value> {
    let (system, messages) = match op {
        Operation::Completions => {
            let prompt = match body.get("prompt") {
                Some(Value::String(p)) => p,
                Some(Value::Array(ps)) if ps.len() == 1 => ps.first().and_then(Value::as_str).unwrap_or_default(),
                Some(Value::Array(_)) => {
                    return Err(invalid(ErrorCode::UnsupportedParameter, "Bedrock takes one prompt per request"))
                }
                _ => return Err(invalid(ErrorCode::MissingField, "\"prompt\" must be a string")),
            };
            (Vec::new(), vec![json!({"role": "user", "content": [{"text": prompt}]})])
        }
        _ => converse_messages(body.get("messages"))?,
    };
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(invalid(ErrorCode::UnsupportedParameter, "Bedrock Converse returns one choice: \"n\" must be 1"));
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    let present = |key: &str| body.get(key).filter(|v| !v.is_null()).cloned();
    if let Some(max) = present("max_completion_tokens").or_else(|| present("max_tokens")) {
        inference.insert("maxTokens".into(), max);
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = present(from) {
            inference.insert(to.into(), v);
        }
    }
    match present("stop") {
        Some(Value::String(s)) => {
            inference.insert("stopSequences".into(), json!([s]));
        }
        Some(list @ Value::Array(_)) => {
            inference.insert("stopSequences".into(), list);
        }
        _ => {}
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if op == Operation::Chat {
        if let Some(tools) = tool_config(body)? {
            out.insert("toolConfig".into(), tools);
        }
    }
    Ok(Value::Object(out))
}

fn is_cohere_embed(model: &str) -> bool {
    model.contains("cohere.embed")
}

fn embed_body(model: &str, body: &Map<String, Value>) -> Result<Value> {
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or_else(|| invalid(ErrorCode::UnsupportedInput, "Bedrock embeds text inputs only")))
            .collect::<Result<_>>()?,
        _ => return Err(invalid(ErrorCode::MissingField, "\"input\" must be a string or a list of strings")),
    };
    if is_cohere_embed(model) {
        // Cohere embeddings on Bedrock take a batch.
        let input_type = body.get("input_type").and_then(Value::as_str).unwrap_or("search_document");
        return Ok(json!({"texts": inputs, "input_type": input_type}));
    }
    let text = match inputs.as_slice() {
        [one] => *one,
        [] => return Err(invalid(ErrorCode::MissingField, "\"input\" is empty")),
        _ => {
            return Err(invalid(
                ErrorCode::UnsupportedParameter,
                format!("Bedrock Titan embeddings take one input per request; this request has {}", inputs.len()),
            ))
        }
    };
    let mut out = json!({"inputText": text});
    if let (Some(d), Some(obj)) = (body.get("dimensions").filter(|d| d.is_u64()), out.as_object_mut()) {
        obj.insert("dimensions".into(), d.clone());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Response translation

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("content_filtered") | Some("guardrail_intervened") => "content_filter",
        _ => "stop",
    }
}

fn converse_answer(value: &Value) -> Result<(Option<String>, Vec<Value>, &'static str, Usage)> {
    let Some(content) = value.pointer("/output/message/content").and_then(Value::as_array) else {
        return Err(bad_response("expected a Converse answer with output.message.content"));
    };
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            texts.push(text);
        } else if let Some(tool) = block.get("toolUse") {
            let arguments = tool.get("input").map(Value::to_string).unwrap_or_else(|| "{}".to_string());
            tool_calls.push(json!({
                "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {"name": tool.get("name").cloned().unwrap_or(Value::Null), "arguments": arguments},
            }));
        }
        // reasoningContent, citations and other blocks have no OpenAI equivalent.
    }
    let text = if texts.is_empty() && !tool_calls.is_empty() { None } else { Some(texts.concat()) };
    let usage = Usage {
        prompt_tokens: value.pointer("/usage/inputTokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: value.pointer("/usage/outputTokens").and_then(Value::as_u64).unwrap_or(0),
    };
    Ok((text, tool_calls, finish_reason(value.get("stopReason").and_then(Value::as_str)), usage))
}

fn embeddings_answer(value: &Value) -> Result<(Vec<Value>, Usage)> {
    if let Some(embedding @ Value::Array(_)) = value.get("embedding") {
        let tokens = value.get("inputTextTokenCount").and_then(Value::as_u64).unwrap_or(0);
        return Ok((vec![embedding.clone()], Usage { prompt_tokens: tokens, completion_tokens: 0 }));
    }
    // Cohere on Bedrock: `embeddings` is a list, or `{float: [...]}` when types were asked for.
    let list = value.get("embeddings").map(|e| e.get("float").unwrap_or(e));
    match list {
        Some(Value::Array(items)) if items.iter().all(Value::is_array) => Ok((items.clone(), Usage::default())),
        _ => Err(bad_response("expected {\"embedding\": [...]} (Titan) or {\"embeddings\": [[...]]} (Cohere)")),
    }
}

impl Adapter for Bedrock {
    type Stream = NoTranslation;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let (payload, action) = match call.op {
            Operation::Chat | Operation::Completions => (converse_body(call.op, &call.body)?, "converse"),
            Operation::Embeddings => (embed_body(call.model, &call.body)?, "invoke"),
            Operation::Predict => {
                return Err(GatewayError::bad_request(
                    ErrorCode::UnsupportedOperation,
                    "bedrock endpoints do not serve MLflow model predictions",
                ))
            }
        };
        let access_key_id = resolve_secret(&self.access_key_id, secrets)?;
        let secret_access_key = resolve_secret(&self.secret_access_key, secrets)?;
        let session_token = self.session_token.as_ref().map(|t| resolve_secret(t, secrets)).transpose()?;

        let url = join_url(call.base_url, &format!("model/{}/{action}", uri_encode(call.model)));
        let uri: http::Uri = url.parse().map_err(|e| {
            GatewayError::not_configured(ErrorCode::BadOriginRequest, format!("cannot build the origin request: {e}"))
        })?;
        let Some(host) = host_header(&uri) else {
            return Err(GatewayError::not_configured(ErrorCode::BadOriginRequest, "the Bedrock base URL has no host"));
        };
        let body = json_body(&payload)?;
        let payload_hash = sha256_hex(&body);
        let date = amz_date(call.now_ms);
        let mut signed: Vec<(&str, &str)> =
            vec![("host", &host), ("x-amz-content-sha256", &payload_hash), ("x-amz-date", &date)];
        if let Some(token) = &session_token {
            signed.push(("x-amz-security-token", token));
        }
        let request = SigningRequest {
            method: "POST",
            path: uri.path(),
            query: "",
            headers: &signed,
            payload_hash: &payload_hash,
            amz_date: &date,
            region: &self.region,
            service: SERVICE,
        };
        let auth = authorization(&request, &access_key_id, &secret_access_key);
        let mut builder = post_json(&url)
            .header(header::ACCEPT, "application/json")
            .header("x-amz-date", &date)
            .header("x-amz-content-sha256", &payload_hash)
            .header(header::AUTHORIZATION, auth);
        if let Some(token) = &session_token {
            builder = builder.header("x-amz-security-token", token);
        }
        finish_request(builder, body)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        let Reply { op, body, model, now_ms, .. } = reply;
        // Bedrock errors are `{"message": "..."}` with the exception name in a header.
        let value = reply.success_json()?;
        let created = now_ms / 1000;
        let (translated, usage) = match op {
            Operation::Chat => {
                let (text, tool_calls, finish, usage) = converse_answer(&value)?;
                let message = assistant_message(text, tool_calls);
                let answer = json!({
                    "id": synthetic_id("chatcmpl", body, now_ms), "object": "chat.completion", "created": created,
                    "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage_json(usage),
                });
                (answer, usage)
            }
            Operation::Completions => {
                let (text, _, finish, usage) = converse_answer(&value)?;
                let answer = json!({
                    "id": synthetic_id("cmpl", body, now_ms), "object": "text_completion", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "text": text.unwrap_or_default(), "finish_reason": finish,
                        "logprobs": null}],
                    "usage": usage_json(usage),
                });
                (answer, usage)
            }
            Operation::Embeddings => {
                let (vectors, usage) = embeddings_answer(&value)?;
                (embedding_list(vectors, model, usage), usage)
            }
            Operation::Predict => return Err(bad_response("bedrock does not serve predictions")),
        };
        Ok(Translated { body: json_body(&translated)?, usage: Some(usage) })
    }

    fn stream_mode(&self, _op: Operation, _model: &str, _now_ms: u64) -> StreamMode<Self::Stream> {
        // ConverseStream frames events in AWS's binary event-stream encoding, not SSE.
        StreamMode::Buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::providers::test_support::{self, call, config_issues, parsed, sent, TestSecrets};
    use http::StatusCode;

    const SECRETS: TestSecrets = TestSecrets(&[
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        ("AWS_SESSION_TOKEN", "session-token"),
    ]);

    const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

    fn adapter(extra: Value) -> Bedrock {
        let mut aws = json!({"aws_region": "us-east-1", "aws_access_key_id": "$AWS_ACCESS_KEY_ID",
            "aws_secret_access_key": "$AWS_SECRET_ACCESS_KEY"});
        for (k, v) in extra.as_object().unwrap() {
            aws[k] = v.clone();
        }
        test_support::adapter(Bedrock::from_config, json!({"aws_config": aws}))
    }

    fn build(p: &Bedrock, op: Operation, model: &str, body: Value) -> Result<Request<Vec<u8>>> {
        p.build_request(call(op, model, body, p.default_base(), false, 1_440_938_160_000), &SECRETS)
    }

    fn issues_of(config: Value) -> Vec<String> {
        config_issues(Bedrock::from_config, config)
    }

    #[test]
    fn sigv4_get_vanilla_test_vector() {
        // aws-sig-v4-test-suite/get-vanilla.
        let empty_hash = sha256_hex(b"");
        let request = SigningRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &[("host", "example.amazonaws.com"), ("x-amz-date", "20150830T123600Z")],
            payload_hash: &empty_hash,
            amz_date: "20150830T123600Z",
            region: "us-east-1",
            service: "service",
        };
        assert_eq!(
            authorization(&request, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn dates_and_uri_encoding() {
        assert_eq!(amz_date(1_440_938_160_000), "20150830T123600Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400_000), "20000229T000000Z");
        assert_eq!(amz_date(1_709_251_199_999), "20240229T235959Z");
        assert_eq!(amz_date(4_102_444_800_000), "21000101T000000Z");
        assert_eq!(uri_encode("a.b-c_d~e:0/ x"), "a.b-c_d~e%3A0%2F%20x");
        assert_eq!(canonical_uri("/model/a.b-v1%3A0/converse"), "/model/a.b-v1%253A0/converse");
        assert_eq!(canonical_uri(""), "/");
    }

    #[test]
    fn converse_request_is_signed_with_the_encoded_model_id() {
        let p = adapter(json!({}));
        let body = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ], "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": "END", "stream": true});
        let req = build(&p, Operation::Chat, MODEL, body).unwrap();
        assert_eq!(
            req.uri(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(
            sent(&req),
            json!({
                "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
                "system": [{"text": "Be brief."}],
                "inferenceConfig": {"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            })
        );
        let h = req.headers();
        assert_eq!(h["x-amz-date"], "20150830T123600Z");
        assert_eq!(h["x-amz-content-sha256"], sha256_hex(req.body()).as_str());
        assert!(h.get("x-amz-security-token").is_none());
        // Recompute the signature independently of build_request's plumbing.
        let payload_hash = sha256_hex(req.body());
        let expected = authorization(
            &SigningRequest {
                method: "POST",
                path: "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
                query: "",
                headers: &[
                    ("x-amz-date", "20150830T123600Z"),
                    ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
                    ("x-amz-content-sha256", &payload_hash),
                ],
                payload_hash: &payload_hash,
                amz_date: "20150830T123600Z",
                region: "us-east-1",
                service: "bedrock",
            },
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(h["authorization"], expected.as_str());
        assert!(expected.contains("Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request"));
        assert!(expected.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date,"));
    }

    #[test]
    fn session_tokens_are_sent_and_signed() {
        let p = adapter(json!({"aws_session_token": "$AWS_SESSION_TOKEN"}));
        let req = build(&p, Operation::Chat, "m", json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert_eq!(req.headers()["x-amz-security-token"], "session-token");
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
    }

    #[test]
    fn tools_and_tool_turns_map_to_converse_blocks() {
        let p = adapter(json!({}));
        let body = json!({
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "18C"},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        });
        let v = sent(&build(&p, Operation::Chat, MODEL, body).unwrap());
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": [{"text": "Weather in Paris?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBOR"}}}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather",
                    "input": {"city": "Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "18C"}]}},
                    {"text": "Thanks"}]},
            ])
        );
        assert_eq!(
            v["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather",
                "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"tool": {"name": "get_weather"}}})
        );
        let bad = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "function":
            {"name": "f", "arguments": "{oops"}}]}]});
        assert_eq!(build(&p, Operation::Chat, MODEL, bad).unwrap_err().status, StatusCode::BAD_REQUEST);
        let link = json!({"messages": [{"role": "user", "content": [{"type": "image_url",
            "image_url": {"url": "https://x/y.png"}}]}]});
        assert_eq!(build(&p, Operation::Chat, MODEL, link).unwrap_err().code, "unsupported_content");
    }

    #[test]
    fn completions_and_embeddings_requests() {
        let p = adapter(json!({}));
        let v = sent(&build(&p, Operation::Completions, MODEL, json!({"prompt": "Say hi", "n": 1})).unwrap());
        assert_eq!(v, json!({"messages": [{"role": "user", "content": [{"text": "Say hi"}]}]}));
        let e = build(&p, Operation::Completions, MODEL, json!({"prompt": "x", "n": 2})).unwrap_err();
        assert_eq!(e.code, "unsupported_parameter");

        let req = build(
            &p,
            Operation::Embeddings,
            "amazon.titan-embed-text-v2:0",
            json!({"input": ["hello"],
            "dimensions": 256}),
        )
        .unwrap();
        assert!(req.uri().path().ends_with("/model/amazon.titan-embed-text-v2%3A0/invoke"));
        assert_eq!(sent(&req), json!({"inputText": "hello", "dimensions": 256}));
        let e =
            build(&p, Operation::Embeddings, "amazon.titan-embed-text-v1", json!({"input": ["a", "b"]})).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("one input per request"), "{}", e.message);
        let req = build(&p, Operation::Embeddings, "cohere.embed-english-v3", json!({"input": ["a", "b"]})).unwrap();
        assert_eq!(sent(&req), json!({"texts": ["a", "b"], "input_type": "search_document"}));
        assert_eq!(build(&p, Operation::Predict, MODEL, json!({})).unwrap_err().code, "unsupported_operation");
    }

    #[test]
    fn missing_credentials_name_the_reference() {
        let mut issues = Issues::default();
        let config = json!({"aws_config": {"aws_region": "eu-west-1", "aws_access_key_id": "$NOPE",
            "aws_secret_access_key": "$AWS_SECRET_ACCESS_KEY"}});
        let p = Bedrock::from_config("c", config.as_object().unwrap(), &mut issues).unwrap();
        assert_eq!(p.default_base(), "https://bedrock-runtime.eu-west-1.amazonaws.com");
        let e = build(&p, Operation::Chat, "m", json!({"messages": [{"role": "user", "content": "x"}]})).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("$NOPE"));
    }

    #[test]
    fn config_issues_name_their_path() {
        let text = issues_of(json!({"aws_config": {"aws_regon": "us-east-1", "aws_role_arn": "arn:aws:iam::1:role/x",
            "session_length_seconds": 900}, "bedrock_api_bas": "x"}));
        let has = |prefix: &str| text.iter().any(|t| t.starts_with(prefix));
        assert!(has("e.config.bedrock_api_bas: unknown bedrock config key"), "{text:?}");
        assert!(text.iter().any(|t| t.contains("did you mean \"aws_region\"")), "{text:?}");
        assert!(has("e.config.aws_config.aws_role_arn: is not supported at the edge"), "{text:?}");
        assert!(has("e.config.aws_config.session_length_seconds: is not supported"), "{text:?}");
        assert!(has("e.config.aws_config.aws_region: is required"), "{text:?}");
        assert!(has("e.config.aws_config.aws_access_key_id: is required"), "{text:?}");

        assert!(issues_of(json!({}))[0].starts_with("e.config.aws_config: is required: {aws_region, "));
        assert!(issues_of(json!({"aws_config": "x"}))[0].starts_with("e.config.aws_config: must be an object"));
        let text = issues_of(json!({"aws_config": {"aws_region": "$AWS_REGION", "aws_access_key_id": "a",
            "aws_secret_access_key": "b"}, "bedrock_api_base": "bedrock.local"}));
        assert!(text.iter().any(|t| t.starts_with("e.config.aws_config.aws_region: \"$AWS_REGION\" is not")));
        assert!(text.iter().any(|t| t.starts_with("e.config.bedrock_api_base: \"bedrock.local\" must start")));
    }

    fn translate(op: Operation, status: StatusCode, body: &[u8]) -> Result<(Value, Option<Usage>)> {
        let p = adapter(json!({}));
        let reply = Reply { op, status, body, model: MODEL, now_ms: 1_700_000_000_999 };
        p.translate_response(reply).map(parsed)
    }

    #[test]
    fn converse_answers_become_chat_completions() {
        let body = br#"{"output": {"message": {"role": "assistant", "content": [{"text": "Hello!"}]}},
            "stopReason": "end_turn", "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15},
            "metrics": {"latencyMs": 420}}"#;
        let (v, usage) = translate(Operation::Chat, StatusCode::OK, body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["created"], 1_700_000_000);
        assert_eq!(v["model"], MODEL);
        assert_eq!(v["choices"][0]["message"], json!({"role": "assistant", "content": "Hello!"}));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"], json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}));
        assert_eq!(usage, Some(Usage { prompt_tokens: 12, completion_tokens: 3 }));

        let body = br#"{"output": {"message": {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tu1",
            "name": "get_weather", "input": {"city": "Paris"}}}]}}, "stopReason": "tool_use",
            "usage": {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}}"#;
        let (v, _) = translate(Operation::Chat, StatusCode::OK, body).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "tu1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        for (reason, expected) in [
            ("max_tokens", "length"),
            ("stop_sequence", "stop"),
            ("content_filtered", "content_filter"),
            ("guardrail_intervened", "content_filter"),
        ] {
            let body = format!(
                r#"{{"output": {{"message": {{"role": "assistant", "content": [{{"text": "x"}}]}}}},
                "stopReason": "{reason}"}}"#
            );
            let (v, usage) = translate(Operation::Completions, StatusCode::OK, body.as_bytes()).unwrap();
            assert_eq!(v["object"], "text_completion");
            assert_eq!(v["choices"][0]["text"], "x");
            assert_eq!(v["choices"][0]["finish_reason"], expected, "{reason}");
            assert_eq!(usage.unwrap().total(), 0);
        }
    }

    #[test]
    fn embedding_answers() {
        let body = br#"{"embedding": [0.1, -0.2, 0.3], "inputTextTokenCount": 4}"#;
        let (v, usage) = translate(Operation::Embeddings, StatusCode::OK, body).unwrap();
        assert_eq!(v["data"], json!([{"object": "embedding", "embedding": [0.1, -0.2, 0.3], "index": 0}]));
        assert_eq!(v["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}));
        assert_eq!(usage.unwrap().prompt_tokens, 4);
        let body = br#"{"id": "x", "embeddings": [[1.0], [2.0]], "texts": ["a", "b"]}"#;
        let (v, _) = translate(Operation::Embeddings, StatusCode::OK, body).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([2.0]));
        let e = translate(Operation::Embeddings, StatusCode::OK, br#"{"vector": []}"#).unwrap_err();
        assert_eq!(e.code, "origin_bad_response");
    }

    #[test]
    fn errors_map() {
        let e = translate(
            Operation::Chat,
            StatusCode::BAD_REQUEST,
            br#"{"message": "The provided model identifier is invalid."}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("model identifier is invalid"));
        let e = translate(Operation::Chat, StatusCode::TOO_MANY_REQUESTS, br#"{"message": "Too many requests"}"#)
            .unwrap_err();
        assert_eq!(e.code, "origin_rate_limited");
        let e = translate(Operation::Chat, StatusCode::SERVICE_UNAVAILABLE, b"").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        for body in [&br#"{"output": {}}"#[..], b"[]", b"nope"] {
            let e = translate(Operation::Chat, StatusCode::OK, body).unwrap_err();
            assert_eq!(e.code, "origin_bad_response");
        }
    }
}
