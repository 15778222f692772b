//! `bedrock` / `amazon-bedrock`: Amazon Bedrock Runtime. Chat and completions go through the
//! model-agnostic Converse API (`POST /model/{modelId}/converse`, `/converse-stream` when
//! streaming); embeddings through `InvokeModel` with the Titan (or Cohere-on-Bedrock) embedding
//! body. `ConverseStream` answers in AWS's binary event-stream framing: `aws::EventStreamToSse`
//! decodes it as it arrives (checksums checked) and `ConverseStreamToOpenAi` turns its events
//! into OpenAI chunks.
//!
//! Config follows MLflow's `AmazonBedrockConfig`, every `aws_config` form it accepts:
//! * `aws_bearer_token` (a Bedrock API key): `Authorization: Bearer`;
//! * `aws_access_key_id` + `aws_secret_access_key` (+ `aws_session_token`): SigV4;
//! * `aws_role_arn` (+ `session_length_seconds`, default 900): STS `AssumeRole`, signed with the
//!   keys given beside it or else the host's `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
//!   (`AWS_SESSION_TOKEN`) secrets; the role's credentials are cached per isolate until shortly
//!   before they expire;
//! * `aws_region` only: AWS's environment credentials, read from the host's secrets
//!   (`AWS_BEARER_TOKEN_BEDROCK`, else the access-key names above).
//!
//! `aws_region` is required at the edge (MLflow falls back on the SDK's region chain): it is
//! part of the URL and of every signature. Extensions: `bedrock_api_base` (default
//! `https://bedrock-runtime.{region}.amazonaws.com`), `sts_api_base` (default
//! `https://sts.{region}.amazonaws.com`).

use http::{header, HeaderValue, Request};
use serde_json::{json, Map, Value};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::{Clock, Secrets, Upstream};
use crate::gateway::providers::adapter::{Adapter, Call, Reply, StreamMode, Translated};
use crate::gateway::providers::aws::{self, uri_encode, AssumeRole, Credentials, KeyRefs, Scope};
use crate::gateway::providers::common::{
    check_url, header_value, join_url, json_post, map_params, param, resolve_secret, string_config, synthetic_id,
    Param, Shape,
};
use crate::gateway::providers::token::{not_authorized, TokenCache};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::{assistant_message, embedding_list, usage_json, write_error_chunk, ChunkWriter};
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;

const CONFIG_KEYS: &[&str] = &["aws_config", "bedrock_api_base", "sts_api_base"];
const AWS_KEYS: &[&str] = &[
    "aws_region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_role_arn",
    "session_length_seconds",
    "aws_bearer_token",
];
const SERVICE: &str = "bedrock";
/// MLflow's `AWSRole.session_length_seconds` default.
const DEFAULT_SESSION_SECS: u64 = 15 * 60;
/// The host secret AWS's SDKs read a Bedrock API key from.
const BEARER_ENV: &str = "AWS_BEARER_TOKEN_BEDROCK";
const AWS_CONFIG_SHAPE: &str = "{aws_region, and one of: aws_bearer_token | aws_access_key_id + \
    aws_secret_access_key (+ aws_session_token) | aws_role_arn (+ session_length_seconds) | nothing more (host \
    secrets)}";

/// How Bedrock requests are authenticated (MLflow's `aws_config` forms).
#[derive(Debug)]
pub enum AwsAuth {
    Bearer(SecretRef),
    Keys(KeyRefs),
    Role {
        role_arn: String,
        session_secs: u64,
        caller: KeyRefs,
        credentials: TokenCache<Credentials>,
    },
    /// Region only: the host's secrets, as AWS's environment credential provider reads them.
    Environment,
}

#[derive(Debug)]
pub struct Bedrock {
    pub region: String,
    pub auth: AwsAuth,
    pub api_base: String,
    pub sts_base: String,
}

/// Resolved credentials for one request.
enum Auth {
    Bearer(String),
    Signed(Credentials),
}

impl Bedrock {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Bedrock> {
        let before = issues.0.len();
        let mut bases = config.clone();
        let aws = bases.remove("aws_config");
        let mut values = string_config(path, "bedrock", &bases, CONFIG_KEYS, issues);
        let api_base = values.remove("bedrock_api_base");
        let sts_base = values.remove("sts_api_base");
        for (key, url) in [("bedrock_api_base", &api_base), ("sts_api_base", &sts_base)] {
            if let Some(url) = url {
                check_url(path, key, url, issues);
            }
        }
        let aws = match aws {
            Some(Value::Object(map)) => map,
            Some(_) => {
                issues.push(format!("{path}.aws_config"), format!("must be an object {AWS_CONFIG_SHAPE}"));
                return None;
            }
            None => {
                issues.push(format!("{path}.aws_config"), format!("is required: {AWS_CONFIG_SHAPE}"));
                return None;
            }
        };
        let aws_path = format!("{path}.aws_config");
        let mut values = string_config(&aws_path, "aws_config", &aws, AWS_KEYS, issues);
        let region = values.remove("aws_region");
        match region.as_deref() {
            None => issues.push(
                format!("{aws_path}.aws_region"),
                "is required at the edge (e.g. \"us-east-1\"; there is no AWS region chain to fall back on)",
            ),
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
        let auth = aws_auth(&aws_path, &mut values, issues);
        if issues.0.len() != before {
            return None;
        }
        let region = region?;
        Some(Bedrock {
            api_base: api_base.unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com")),
            sts_base: sts_base.unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
            region,
            auth: auth?,
        })
    }

    /// For a role: assumes it unless fresh credentials are cached.
    pub async fn authorize<P: Upstream + Secrets + Clock>(&self, ports: &P, timeout_ms: u64) -> Result<()> {
        let AwsAuth::Role { role_arn, session_secs, caller, credentials } = &self.auth else { return Ok(()) };
        credentials
            .ensure(ports, timeout_ms, || async {
                let caller = caller.resolve(ports)?;
                let role = AssumeRole {
                    sts_base: &self.sts_base,
                    region: &self.region,
                    role_arn,
                    duration_secs: *session_secs,
                    caller: &caller,
                };
                aws::assume_role(ports, role, timeout_ms).await
            })
            .await
    }

    fn resolve_auth(&self, secrets: &impl Secrets, now_ms: u64) -> Result<Auth> {
        Ok(match &self.auth {
            AwsAuth::Bearer(token) => Auth::Bearer(resolve_secret(token, secrets)?),
            AwsAuth::Keys(keys) => Auth::Signed(keys.resolve(secrets)?),
            AwsAuth::Role { credentials, .. } => {
                Auth::Signed(credentials.get(now_ms).ok_or_else(|| not_authorized("bedrock role"))?)
            }
            AwsAuth::Environment => match secrets.secret(BEARER_ENV).filter(|t| !t.is_empty()) {
                Some(token) => Auth::Bearer(token),
                None => Auth::Signed(KeyRefs::environment().resolve(secrets)?),
            },
        })
    }
}

/// The `aws_config` form (MLflow's `AWSBearerToken | AWSRole | AWSIdAndKey | AWSBaseConfig`).
fn aws_auth(
    path: &str,
    values: &mut std::collections::HashMap<String, String>,
    issues: &mut Issues,
) -> Option<AwsAuth> {
    let bearer = values.remove("aws_bearer_token");
    let role_arn = values.remove("aws_role_arn");
    let session = values.remove("session_length_seconds");
    let key_id = values.remove("aws_access_key_id");
    let secret = values.remove("aws_secret_access_key");
    let token = values.remove("aws_session_token");
    let keys = match (key_id, secret) {
        (Some(id), Some(secret)) => Some(KeyRefs {
            access_key_id: SecretRef::parse(&id),
            secret_access_key: SecretRef::parse(&secret),
            session_token: token.map(|t| SecretRef::parse(&t)),
            session_token_optional: false,
        }),
        (Some(_), None) => {
            issues.push(format!("{path}.aws_secret_access_key"), "is required with aws_access_key_id");
            None
        }
        (None, Some(_)) => {
            issues.push(format!("{path}.aws_access_key_id"), "is required with aws_secret_access_key");
            None
        }
        (None, None) => {
            if token.is_some() {
                issues.push(
                    format!("{path}.aws_session_token"),
                    "goes with aws_access_key_id and aws_secret_access_key (temporary credentials)",
                );
            }
            None
        }
    };
    if session.is_some() && role_arn.is_none() {
        issues.push(format!("{path}.session_length_seconds"), "only applies with aws_role_arn");
    }
    if let Some(bearer) = bearer {
        if keys.is_some() || role_arn.is_some() {
            issues.push(
                format!("{path}.aws_bearer_token"),
                "is a credential form of its own: leave out the access keys and aws_role_arn",
            );
            return None;
        }
        return Some(AwsAuth::Bearer(SecretRef::parse(&bearer)));
    }
    if let Some(role_arn) = role_arn {
        if !role_arn.starts_with("arn:") {
            issues.push(
                format!("{path}.aws_role_arn"),
                format!("\"{role_arn}\" is not a role ARN (arn:aws:iam::<account>:role/<name>)"),
            );
        }
        let session_secs = match session.as_deref().map(str::parse::<u64>) {
            None => DEFAULT_SESSION_SECS,
            Some(Ok(secs)) if (900..=43_200).contains(&secs) => secs,
            Some(_) => {
                issues.push(
                    format!("{path}.session_length_seconds"),
                    "must be a whole number of seconds from 900 to 43200 (what STS allows)",
                );
                DEFAULT_SESSION_SECS
            }
        };
        let caller = keys.unwrap_or_else(KeyRefs::environment);
        return Some(AwsAuth::Role { role_arn, session_secs, caller, credentials: TokenCache::default() });
    }
    Some(keys.map_or(AwsAuth::Environment, AwsAuth::Keys))
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
                Some(Value::String(args)) => args.parse::<Value>().map_err(|_| {
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

/// OpenAI sampling fields → Converse `inferenceConfig`.
const INFERENCE_PARAMS: &[Param] = &[
    param("max_completion_tokens", "maxTokens", Shape::Count),
    param("max_tokens", "maxTokens", Shape::Count),
    param("temperature", "temperature", Shape::Number),
    param("top_p", "topP", Shape::Number),
    param("stop", "stopSequences", Shape::Stops),
];

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
    map_params(body, INFERENCE_PARAMS, &mut inference)?;
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
    type Stream = ConverseStreamToOpenAi;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let (payload, action) = match call.op {
            Operation::Chat | Operation::Completions => {
                let action = if call.stream { "converse-stream" } else { "converse" };
                (converse_body(call.op, &call.body)?, action)
            }
            Operation::Embeddings => (embed_body(call.model, &call.body)?, "invoke"),
            Operation::Predict => {
                return Err(GatewayError::bad_request(
                    ErrorCode::UnsupportedOperation,
                    "bedrock endpoints do not serve MLflow model predictions",
                ))
            }
        };
        let auth = self.resolve_auth(secrets, call.now_ms)?;
        let url = join_url(call.base_url, &format!("model/{}/{action}", uri_encode(call.model)));
        let body = json_body(&payload);
        let accept = if action == "converse-stream" { aws::EVENT_STREAM } else { "application/json" };
        let mut request = json_post(url, body)?;
        request.headers_mut().insert(header::ACCEPT, HeaderValue::from_static(accept));
        match auth {
            Auth::Bearer(token) => {
                request.headers_mut().insert(header::AUTHORIZATION, header_value(format!("Bearer {token}"))?);
            }
            Auth::Signed(credentials) => {
                let scope = Scope { region: &self.region, service: SERVICE };
                aws::sign(&mut request, &[], &credentials, scope, call.now_ms)?;
            }
        }
        Ok(request)
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
        Ok(Translated { body: json_body(&translated), usage: Some(usage), fields: None })
    }

    fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode<Self::Stream> {
        match op {
            Operation::Chat | Operation::Completions => {
                StreamMode::Translate(ConverseStreamToOpenAi::new(op, model, now_ms))
            }
            Operation::Embeddings | Operation::Predict => StreamMode::Buffered,
        }
    }
}

/// `ConverseStream` events (decoded from the event stream by `aws::EventStreamToSse`, named by
/// their `:event-type`) → OpenAI chunks: `messageStart`, `contentBlockStart` (a tool use),
/// `contentBlockDelta` (text or tool input), `messageStop` (the stop reason), `metadata`
/// (usage), and `exception` (a mid-stream error or a framing error such as a bad checksum).
pub struct ConverseStreamToOpenAi {
    chunks: ChunkWriter,
    started: bool,
    /// Converse content block index → OpenAI `tool_calls[].index`.
    tools: Vec<(u64, u64)>,
    usage: Option<Usage>,
    stopped: bool,
    failed: bool,
    done: bool,
}

impl ConverseStreamToOpenAi {
    pub fn new(op: Operation, model: &str, now_ms: u64) -> Self {
        let id = synthetic_id(if op == Operation::Completions { "cmpl" } else { "chatcmpl" }, model.as_bytes(), now_ms);
        ConverseStreamToOpenAi {
            chunks: ChunkWriter::new(op, &id, model, now_ms),
            started: false,
            tools: Vec::new(),
            usage: None,
            stopped: false,
            failed: false,
            done: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !std::mem::replace(&mut self.started, true) {
            self.chunks.role(out, 0);
        }
    }
}

impl StreamTranslate for ConverseStreamToOpenAi {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.failed || self.done {
            return;
        }
        let Ok(data) = event.data.parse::<Value>() else { return };
        let index = data.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event.event.as_deref().unwrap_or_default() {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                self.start(out);
                if let Some(tool) = data.pointer("/start/toolUse") {
                    let n = self.tools.len() as u64;
                    self.tools.push((index, n));
                    let call = json!({
                        "index": n, "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null), "type": "function",
                        "function": {"name": tool.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                    });
                    self.chunks.tool_call(out, 0, call);
                }
            }
            "contentBlockDelta" => {
                self.start(out);
                let delta = data.get("delta");
                if let Some(text) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                    self.chunks.text(out, 0, text);
                } else if let Some(input) = delta.and_then(|d| d.pointer("/toolUse/input")).and_then(Value::as_str) {
                    let tool = self.tools.iter().find(|(block, _)| *block == index).map(|(_, n)| *n);
                    if let Some(n) = tool.filter(|_| !input.is_empty()) {
                        self.chunks.tool_call(out, 0, json!({"index": n, "function": {"arguments": input}}));
                    }
                }
                // reasoningContent and citations have no OpenAI counterpart.
            }
            "messageStop" => {
                self.start(out);
                if !std::mem::replace(&mut self.stopped, true) {
                    let reason = finish_reason(data.get("stopReason").and_then(Value::as_str));
                    self.chunks.finish(out, 0, reason);
                }
            }
            "metadata" => {
                let count = |key: &str| data.pointer(&format!("/usage/{key}")).and_then(Value::as_u64);
                if let (Some(input), Some(output)) = (count("inputTokens"), count("outputTokens")) {
                    self.usage = Some(Usage { prompt_tokens: input, completion_tokens: output });
                }
            }
            "exception" => {
                let kind = data.get("type").and_then(Value::as_str).unwrap_or("exception");
                let message = data.get("message").and_then(Value::as_str).unwrap_or_default();
                write_error_chunk(out, &format!("origin stream failed ({kind}): {message}"), "origin_stream_error");
                self.failed = true;
            }
            _ => {} // contentBlockStop, future event types
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if !self.stopped && !self.failed {
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
    use crate::gateway::providers::aws::{authorization, sha256_hex, SigningRequest};
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
        let text = issues_of(json!({"aws_config": {"aws_regon": "us-east-1", "aws_role_arn": "role/x",
            "session_length_seconds": 60}, "bedrock_api_bas": "x"}));
        let has = |prefix: &str| text.iter().any(|t| t.starts_with(prefix));
        assert!(has("e.config.bedrock_api_bas: unknown bedrock config key"), "{text:?}");
        assert!(text.iter().any(|t| t.contains("did you mean \"aws_region\"")), "{text:?}");
        assert!(has("e.config.aws_config.aws_role_arn: \"role/x\" is not a role ARN"), "{text:?}");
        assert!(
            has("e.config.aws_config.session_length_seconds: must be a whole number of seconds from 900"),
            "{text:?}"
        );
        assert!(has("e.config.aws_config.aws_region: is required at the edge"), "{text:?}");

        assert!(issues_of(json!({}))[0].starts_with("e.config.aws_config: is required: {aws_region, "));
        assert!(issues_of(json!({"aws_config": "x"}))[0].starts_with("e.config.aws_config: must be an object"));
        let text = issues_of(json!({"aws_config": {"aws_region": "$AWS_REGION", "aws_access_key_id": "a",
            "aws_secret_access_key": "b"}, "bedrock_api_base": "bedrock.local", "sts_api_base": "sts"}));
        assert!(text.iter().any(|t| t.starts_with("e.config.aws_config.aws_region: \"$AWS_REGION\" is not")));
        assert!(text.iter().any(|t| t.starts_with("e.config.bedrock_api_base: \"bedrock.local\" must start")));
        assert!(text.iter().any(|t| t.starts_with("e.config.sts_api_base: \"sts\" must start")));
        let region = |extra: Value| {
            let mut aws = json!({"aws_region": "us-east-1"});
            aws.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            issues_of(json!({"aws_config": aws}))
        };
        assert_eq!(
            region(json!({"aws_access_key_id": "a"})),
            ["e.config.aws_config.aws_secret_access_key: is required with aws_access_key_id"]
        );
        assert_eq!(
            region(json!({"aws_secret_access_key": "a"})),
            ["e.config.aws_config.aws_access_key_id: is required with aws_secret_access_key"]
        );
        assert!(region(json!({"aws_session_token": "t"}))[0]
            .starts_with("e.config.aws_config.aws_session_token: goes with"));
        assert!(region(json!({"session_length_seconds": 900}))[0].contains("only applies with aws_role_arn"));
        assert!(region(json!({"aws_bearer_token": "b", "aws_role_arn": "arn:aws:iam::1:role/r"}))[0]
            .starts_with("e.config.aws_config.aws_bearer_token: is a credential form of its own"));
    }

    fn aws_form(aws: Value) -> Bedrock {
        test_support::adapter(Bedrock::from_config, json!({"aws_config": aws}))
    }

    #[test]
    fn every_mlflow_aws_config_form_is_served() {
        let p = aws_form(json!({"aws_region": "eu-west-1", "aws_bearer_token": "$BEDROCK_KEY"}));
        assert!(matches!(p.auth, AwsAuth::Bearer(_)));
        let secrets = TestSecrets(&[("BEDROCK_KEY", "bedrock-api-key")]);
        let req = p
            .build_request(
                call(
                    Operation::Chat,
                    MODEL,
                    json!({"messages": [{"role": "user", "content": "x"}]}),
                    p.default_base(),
                    false,
                    0,
                ),
                &secrets,
            )
            .unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer bedrock-api-key");
        assert!(req.headers().get("x-amz-date").is_none());

        let p = aws_form(json!({"aws_region": "eu-west-1", "aws_role_arn": "arn:aws:iam::1:role/r"}));
        let AwsAuth::Role { session_secs, caller, .. } = &p.auth else { panic!("{:?}", p.auth) };
        assert_eq!((*session_secs, caller), (900, &KeyRefs::environment()));
        assert_eq!(p.sts_base, "https://sts.eu-west-1.amazonaws.com");

        let p = aws_form(json!({"aws_region": "eu-west-1"}));
        assert!(matches!(p.auth, AwsAuth::Environment));
        // Region only: the host's AWS_* secrets, a Bedrock API key first.
        let req = build(&p, Operation::Chat, MODEL, json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert!(req.headers()["authorization"].to_str().unwrap().contains("Credential=AKIDEXAMPLE/"));
        assert_eq!(req.headers()["x-amz-security-token"], "session-token");
        let keyed = TestSecrets(&[(BEARER_ENV, "abk")]);
        let req = p
            .build_request(
                call(
                    Operation::Chat,
                    MODEL,
                    json!({"messages": [{"role": "user", "content": "x"}]}),
                    p.default_base(),
                    false,
                    0,
                ),
                &keyed,
            )
            .unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer abk");
    }

    #[test]
    fn a_role_is_assumed_once_and_its_credentials_sign_the_call() {
        use crate::gateway::ports::memory::{block_on, MemoryHost};
        use http::Response;
        let sts = r#"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAROLE</AccessKeyId>
            <SecretAccessKey>rolesecret</SecretAccessKey><SessionToken>roletoken</SessionToken>
            <Expiration>2023-11-14T23:13:20Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"#;
        let host = MemoryHost::new(move |_| Ok(Response::new(sts.as_bytes().to_vec())))
            .with_secret("AWS_ACCESS_KEY_ID", "AKIDCALLER")
            .with_secret("AWS_SECRET_ACCESS_KEY", "callersecret");
        let p = aws_form(json!({"aws_region": "us-east-1", "aws_role_arn": "arn:aws:iam::1:role/r",
            "session_length_seconds": 3600}));
        let chat = || json!({"messages": [{"role": "user", "content": "x"}]});
        let e =
            p.build_request(call(Operation::Chat, MODEL, chat(), p.default_base(), false, host.now_ms.get()), &host);
        assert_eq!(e.unwrap_err().status, StatusCode::INTERNAL_SERVER_ERROR, "not authorized yet");
        block_on(p.authorize(&host, 1000)).unwrap();
        block_on(p.authorize(&host, 1000)).unwrap();
        assert_eq!(host.sent.borrow().len(), 1, "the role's credentials are cached");
        let sts_call = host.sent.borrow()[0].headers()["authorization"].to_str().unwrap().to_string();
        assert!(sts_call.contains("Credential=AKIDCALLER/20231114/us-east-1/sts/aws4_request"), "{sts_call}");
        assert!(String::from_utf8_lossy(host.sent.borrow()[0].body()).contains("DurationSeconds=3600"));
        let req = p
            .build_request(call(Operation::Chat, MODEL, chat(), p.default_base(), false, host.now_ms.get()), &host)
            .unwrap();
        assert!(req.headers()["authorization"].to_str().unwrap().contains("Credential=ASIAROLE/"));
        assert_eq!(req.headers()["x-amz-security-token"], "roletoken");
        // Shortly before the credentials expire (an hour after 22:13:20), they are fetched again.
        host.advance(3_600_000 - 299_000);
        block_on(p.authorize(&host, 1000)).unwrap();
        assert_eq!(host.sent.borrow().len(), 2);
    }

    #[test]
    fn streaming_asks_for_converse_stream() {
        let p = adapter(json!({}));
        let req = p
            .build_request(
                call(
                    Operation::Chat,
                    MODEL,
                    json!({"messages": [{"role": "user", "content": "x"}]}),
                    p.default_base(),
                    true,
                    0,
                ),
                &SECRETS,
            )
            .unwrap();
        assert!(req.uri().path().ends_with("/converse-stream"));
        assert_eq!(req.headers()["accept"], "application/vnd.amazon.eventstream");
    }

    fn converse_stream(frames: &[(&str, Value)]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|(kind, payload)| {
                aws::encode_message(
                    &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
                    payload.to_string().as_bytes(),
                )
            })
            .collect()
    }

    /// Event-stream bytes through the decoder and the translator, at every split point.
    fn run_stream(op: Operation, bytes: &[u8]) -> (Vec<Value>, Option<Usage>) {
        use crate::gateway::pipeline::stream::{Stage, StreamPump};
        use crate::gateway::providers::ProviderStream;
        use crate::gateway::test_util::parse_sse;
        let run = |parts: &[&[u8]]| {
            let translator = ConverseStreamToOpenAi::new(op, MODEL, 1_700_000_000_000);
            let provider = ProviderStream::from(translator);
            let mut decoder = provider.decoder().unwrap();
            let mut pump = StreamPump::new(vec![Stage::Provider(provider)]);
            let mut out = Vec::new();
            for part in parts {
                let mut sse = Vec::new();
                decoder.decode(part, &mut sse);
                out.extend(pump.chunk(&sse));
            }
            let mut sse = Vec::new();
            decoder.finish(&mut sse);
            out.extend(pump.chunk(&sse));
            out.extend(pump.end());
            (out, pump.summary().usage)
        };
        let (whole, usage) = run(&[bytes]);
        for split in (0..=bytes.len()).step_by(7) {
            assert_eq!(run(&[&bytes[..split], &bytes[split..]]).0, whole, "split at {split}");
        }
        let events = parse_sse(&whole).into_iter().map(|(_, d)| d).collect();
        (events, usage)
    }

    #[test]
    fn converse_stream_becomes_openai_chunks() {
        let bytes = converse_stream(&[
            ("messageStart", json!({"role": "assistant"})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": " there"}})),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            (
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu1", "name": "f"}}}),
            ),
            ("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}})),
            ("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}})),
            ("messageStop", json!({"stopReason": "tool_use"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}, "metrics": {"latencyMs": 5}}),
            ),
        ]);
        let (events, usage) = run_stream(Operation::Chat, &bytes);
        assert_eq!(usage, Some(Usage { prompt_tokens: 7, completion_tokens: 3 }));
        assert_eq!(events[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Hello there");
        let calls: Vec<&Value> = events.iter().filter_map(|e| e["choices"][0]["delta"].get("tool_calls")).collect();
        assert_eq!(
            calls[0][0],
            json!({"index": 0, "id": "tu1", "type": "function", "function": {"name": "f", "arguments": ""}})
        );
        let args: String = calls.iter().filter_map(|c| c[0]["function"]["arguments"].as_str()).collect();
        assert_eq!(args, "{\"a\":1}");
        let finishes: Vec<&Value> =
            events.iter().map(|e| &e["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
        assert_eq!(finishes, [&json!("tool_calls")]);
        let n = events.len();
        assert_eq!(events[n - 2]["usage"], json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}));
        assert_eq!(events[n - 1], json!("[DONE]"));
        assert!(events.iter().filter(|e| e.is_object()).all(|e| e["object"] == "chat.completion.chunk"));

        let (events, _) = run_stream(
            Operation::Completions,
            &converse_stream(&[
                ("messageStart", json!({"role": "assistant"})),
                ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}})),
                ("messageStop", json!({"stopReason": "max_tokens"})),
            ]),
        );
        assert_eq!(events[0]["object"], "text_completion");
        assert_eq!(events[0]["choices"][0]["text"], "Hi");
        assert_eq!(events[1]["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn a_bad_checksum_or_a_cut_ends_the_stream_with_an_error_chunk() {
        let mut bytes = converse_stream(&[
            ("messageStart", json!({"role": "assistant"})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}})),
            ("messageStop", json!({"stopReason": "end_turn"})),
        ]);
        let n = bytes.len();
        bytes[n - 10] ^= 0xff; // inside the last frame's payload
        let (events, _) = run_stream(Operation::Chat, &bytes);
        let last_two = &events[events.len() - 2..];
        assert_eq!(last_two[0]["error"]["code"], "origin_stream_error");
        assert!(last_two[0]["error"]["message"].as_str().unwrap().contains("checksum mismatch"), "{events:?}");
        assert_eq!(last_two[1], json!("[DONE]"));
        assert!(events.iter().all(|e| e["choices"][0]["finish_reason"].is_null()), "no finish after a bad frame");

        let good = converse_stream(&[
            ("messageStart", json!({"role": "assistant"})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}})),
        ]);
        let (events, _) = run_stream(Operation::Chat, &good[..good.len() - 5]);
        assert_eq!(events[events.len() - 2]["error"]["code"], "origin_stream_error");
        let (events, _) = run_stream(Operation::Chat, &good);
        assert_eq!(events[events.len() - 2]["error"]["code"], "origin_stream_cut");

        let throttled = [
            good.clone(),
            aws::encode_message(
                &[(":message-type", "exception"), (":exception-type", "throttlingException")],
                br#"{"message":"slow down"}"#,
            ),
        ]
        .concat();
        let (events, _) = run_stream(Operation::Chat, &throttled);
        let error = &events[events.len() - 2]["error"];
        assert_eq!(error["message"], "origin stream failed (throttlingException): slow down");
    }

    #[test]
    fn hostile_stream_events_never_panic() {
        use crate::gateway::test_util::mutations;
        let template = json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}},
            "delta": {"text": "x", "toolUse": {"input": "{}"}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 1, "outputTokens": 2}});
        for payload in mutations(&template) {
            for kind in
                ["messageStart", "contentBlockStart", "contentBlockDelta", "messageStop", "metadata", "exception"]
            {
                let mut t = ConverseStreamToOpenAi::new(Operation::Chat, "m", 0);
                let mut out = Vec::new();
                t.event(&SseEvent { event: Some(kind.into()), data: payload.to_string() }, &mut out);
                t.finish(&mut out);
            }
        }
    }

    fn translate(op: Operation, status: StatusCode, body: &[u8]) -> Result<(Value, Option<Usage>)> {
        let p = adapter(json!({}));
        let reply = Reply { op, status, body, model: MODEL, now_ms: 1_700_000_000_999, wanted: &[] };
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
