//! Google Gemini (Generative Language API) wire format:
//! `POST /v1beta/models/{model}:{generateContent|streamGenerateContent|embedContent|...}`.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use crate::embed;
use crate::exchange::{Ctx, Reply, Usage};
use crate::sse;
use crate::text::{self, Finish, Options, Output, Prompt};

/// Upper bound on `candidateCount`.
const MAX_CANDIDATES: u64 = 8;

/// Google's error body.
pub fn error(status: StatusCode, message: &str, code_name: &str) -> Reply {
    Reply::json(status, &json!({ "error": { "code": status.as_u16(), "message": message, "status": code_name } }))
}

/// The error Gemini answers for a failure injected with `status`.
pub fn fault_error(status: StatusCode) -> Reply {
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            error(status, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            error(status, "The model is overloaded. Please try again later.", "UNAVAILABLE")
        }
        _ => error(
            status,
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
            "INTERNAL",
        ),
    }
}

fn invalid(message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT")
}

/// Gemini's JSON accepts both lowerCamelCase and snake_case field names.
fn field<'v>(object: &'v Value, camel: &str, snake: &str) -> Option<&'v Value> {
    object.get(camel).or_else(|| object.get(snake))
}

/// Text parts of a `Content`, joined with a space.
fn parts_text(content: &Value) -> Option<String> {
    let texts: Vec<&str> =
        content.get("parts")?.as_array()?.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect();
    (!texts.is_empty()).then(|| texts.join(" "))
}

fn is_user(content: &Value) -> bool {
    // `role` may be omitted for single-turn requests; it then means "user".
    content.get("role").and_then(Value::as_str).unwrap_or("user") == "user"
}

fn build_prompt(request: &Value, contents: &[Value]) -> Prompt {
    let mut prompt = Prompt::default();
    if let Some(system) = field(request, "systemInstruction", "system_instruction") {
        if let Some(text) = parts_text(system) {
            prompt.count(&text);
        }
    }
    for content in contents {
        if let Some(text) = parts_text(content) {
            prompt.count(&text);
            if is_user(content) {
                prompt.last_user_text = text;
            }
        }
    }
    prompt.ends_with_user_text = contents.last().is_some_and(|c| is_user(c) && parts_text(c).is_some());
    prompt
}

/// The first function declaration, unless function calling mode is `NONE`.
fn first_tool(request: &Value) -> Option<&str> {
    let mode = field(request, "toolConfig", "tool_config")
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"))
        .and_then(|c| c.get("mode"))
        .and_then(Value::as_str);
    if mode == Some("NONE") {
        return None;
    }
    request.get("tools")?.as_array()?.iter().find_map(|tool| {
        field(tool, "functionDeclarations", "function_declarations")?.as_array()?.first()?.get("name")?.as_str()
    })
}

/// Checks the API key (`x-goog-api-key` or `?key=`).
fn authorize(ctx: &Ctx<'_>) -> Result<(), Reply> {
    let has_key = ctx.header("x-goog-api-key").is_some() || ctx.query_param("key").is_some_and(|k| !k.is_empty());
    if has_key {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
            "PERMISSION_DENIED",
        ))
    }
}

/// Serves `{model}:{action}` (the part of the path after `models/`).
pub fn handle(ctx: &Ctx<'_>, model_action: &str) -> Reply {
    let Some((model, action)) = model_action.rsplit_once(':') else {
        return not_found(ctx);
    };
    if let Err(reply) = authorize(ctx) {
        return reply;
    }
    handle_authorized(ctx, model, action)
}

/// Serves `{model}:{action}` for a caller already authenticated (Vertex AI's bearer token).
pub fn handle_authorized(ctx: &Ctx<'_>, model: &str, action: &str) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(ctx.body) else {
        return invalid("Invalid JSON payload received. Unexpected token.");
    };
    if !request.is_object() {
        return invalid("Invalid JSON payload received. Expected an object.");
    }
    match action {
        "generateContent" => generate(ctx, model, &request, None),
        "streamGenerateContent" => {
            let sse = ctx.query_param("alt") == Some("sse");
            generate(ctx, model, &request, Some(sse))
        }
        "countTokens" => count_tokens(&request),
        "embedContent" => embed_content(&request),
        "batchEmbedContents" => batch_embed(&request),
        _ => not_found(ctx),
    }
}

pub fn not_found(ctx: &Ctx<'_>) -> Reply {
    error(StatusCode::NOT_FOUND, &format!("Method not found: {} {}", ctx.method, ctx.path), "NOT_FOUND")
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::StopSequence(_) => "STOP",
        Finish::MaxTokens => "MAX_TOKENS",
    }
}

/// `generateContent`; `stream` is `Some(alt_sse)` for `streamGenerateContent`.
fn generate(ctx: &Ctx<'_>, model: &str, request: &Value, stream: Option<bool>) -> Reply {
    let Some(contents) = request.get("contents").and_then(Value::as_array) else {
        return invalid("* GenerateContentRequest.contents: contents is not specified");
    };
    let prompt = build_prompt(request, contents);
    let config = field(request, "generationConfig", "generation_config");
    let config_field = |camel: &str, snake: &str| config.and_then(|c| field(c, camel, snake));
    let options = Options {
        max_tokens: config_field("maxOutputTokens", "max_output_tokens").and_then(Value::as_u64),
        stop: config_field("stopSequences", "stop_sequences")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        tool: first_tool(request),
    };
    let candidates =
        config_field("candidateCount", "candidate_count").and_then(Value::as_u64).unwrap_or(1).clamp(1, MAX_CANDIDATES);
    let output = text::respond(&prompt, &options);
    let usage = Usage { prompt: prompt.input_tokens, completion: output.tokens() * candidates };
    let response =
        ResponseMeta { model, id: format!("{}-{}", ctx.state.name(), ctx.state.next_id()), candidates, usage };
    let (parts, finish) = match &output {
        Output::Text { text, finish } => {
            let pieces = text::pieces(text);
            let parts: Vec<Value> = if pieces.is_empty() {
                vec![json!({ "text": text })]
            } else {
                pieces.iter().map(|p| json!({ "text": p })).collect()
            };
            (parts, finish_reason(finish))
        }
        Output::ToolCall { name, input, .. } => {
            (vec![json!({ "functionCall": { "name": name, "args": input } })], "STOP")
        }
    };
    let Some(alt_sse) = stream else {
        let whole = match &output {
            Output::Text { text, .. } => vec![json!({ "text": text })],
            Output::ToolCall { .. } => parts,
        };
        return Reply::ok_json(&response.object(whole, Some(finish), true)).with_usage(usage);
    };
    let last = parts.len().saturating_sub(1);
    let objects = parts.into_iter().enumerate().map(|(i, part)| {
        let done = i == last;
        response.object(vec![part], done.then_some(finish), done)
    });
    let chunks: Vec<Bytes> = if alt_sse {
        objects.map(|object| sse::data(&object)).collect()
    } else {
        // Without `alt=sse` the stream is one JSON array, sent element by element.
        let mut chunks: Vec<Bytes> = objects
            .enumerate()
            .map(|(i, object)| Bytes::from(format!("{}{object}", if i == 0 { "[" } else { ",\r\n" })))
            .collect();
        chunks.push(Bytes::from_static(b"]"));
        chunks
    };
    let content_type = if alt_sse { sse::CONTENT_TYPE } else { "application/json" };
    Reply::stream(content_type, chunks).with_usage(usage)
}

struct ResponseMeta<'a> {
    model: &'a str,
    id: String,
    candidates: u64,
    usage: Usage,
}

impl ResponseMeta<'_> {
    /// A `GenerateContentResponse` whose candidates all carry `parts`.
    fn object(&self, parts: Vec<Value>, finish: Option<&str>, with_usage: bool) -> Value {
        let candidates: Vec<Value> = (0..self.candidates)
            .map(|index| {
                let mut candidate = json!({
                    "content": { "role": "model", "parts": parts },
                    "index": index,
                });
                if let Some(reason) = finish {
                    candidate["finishReason"] = json!(reason);
                }
                candidate
            })
            .collect();
        let mut object = json!({ "candidates": candidates });
        if with_usage {
            object["usageMetadata"] = json!({
                "promptTokenCount": self.usage.prompt,
                "candidatesTokenCount": self.usage.completion,
                "totalTokenCount": self.usage.prompt + self.usage.completion,
            });
        }
        object["modelVersion"] = json!(self.model);
        object["responseId"] = json!(self.id);
        object
    }
}

fn count_tokens(request: &Value) -> Reply {
    let nested = field(request, "generateContentRequest", "generate_content_request");
    let source = nested.unwrap_or(request);
    let contents = source.get("contents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let prompt = build_prompt(source, contents);
    Reply::ok_json(&json!({ "totalTokens": prompt.input_tokens }))
}

fn dimensions(request: &Value) -> usize {
    field(request, "outputDimensionality", "output_dimensionality")
        .and_then(Value::as_u64)
        .map_or(embed::DEFAULT_DIMENSIONS, |d| d as usize)
}

/// `{"values": [...]}` for one `EmbedContentRequest`.
fn embed_one(request: &Value) -> Result<Value, Reply> {
    let content =
        request.get("content").ok_or_else(|| invalid("* EmbedContentRequest.content: content is not specified"))?;
    let text = parts_text(content).unwrap_or_default();
    let values = embed::embedding(&text, dimensions(request));
    Ok(json!({ "values": embed::to_json(&values) }))
}

fn embed_content(request: &Value) -> Reply {
    match embed_one(request) {
        Ok(values) => Reply::ok_json(&json!({ "embedding": values })),
        Err(reply) => reply,
    }
}

fn batch_embed(request: &Value) -> Reply {
    let Some(requests) = request.get("requests").and_then(Value::as_array) else {
        return invalid("* BatchEmbedContentsRequest.requests: requests is not specified");
    };
    match requests.iter().map(embed_one).collect::<Result<Vec<_>, _>>() {
        Ok(embeddings) => Reply::ok_json(&json!({ "embeddings": embeddings })),
        Err(reply) => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_includes_system_instruction_and_defaults_role_to_user() {
        let request = json!({
            "systemInstruction": {"parts": [{"text": "be terse"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "hello there"}]},
                {"parts": [{"text": "what"}, {"text": "now"}]},
            ],
        });
        let contents = request["contents"].as_array().cloned().expect("array");
        let prompt = build_prompt(&request, &contents);
        assert_eq!(prompt.input_tokens, 2 + 1 + 2 + 2);
        assert_eq!(prompt.last_user_text, "what now");
        assert!(prompt.ends_with_user_text);
    }

    #[test]
    fn first_tool_accepts_both_spellings() {
        let camel = json!({"tools": [{"functionDeclarations": [{"name": "a"}]}]});
        let snake = json!({"tools": [{"function_declarations": [{"name": "b"}]}]});
        assert_eq!(first_tool(&camel), Some("a"));
        assert_eq!(first_tool(&snake), Some("b"));
        let disabled = json!({
            "tools": [{"functionDeclarations": [{"name": "a"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
        });
        assert_eq!(first_tool(&disabled), None);
    }
}
