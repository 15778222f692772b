//! OpenAI (and Azure OpenAI) wire format: chat completions, legacy
//! completions, embeddings and the model list.

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::embed;
use crate::exchange::{unix_now, Ctx, Reply, Usage};
use crate::sse;
use crate::text::{self, Finish, Options, Output, Prompt};

/// The model reported when the request names none.
const DEFAULT_MODEL: &str = "mock-model";
/// Upper bound on `n`.
const MAX_CHOICES: u64 = 16;

/// Which dialect the request arrived in.
#[derive(Debug, Clone, Copy)]
pub enum Flavor<'a> {
    OpenAi,
    /// `/openai/deployments/{deployment}/...?api-version=...` with `api-key`.
    Azure {
        deployment: &'a str,
    },
}

impl Flavor<'_> {
    fn model(&self, request: &Map<String, Value>) -> String {
        match self {
            Flavor::Azure { deployment } => (*deployment).to_owned(),
            Flavor::OpenAi => request.get("model").and_then(Value::as_str).unwrap_or(DEFAULT_MODEL).to_owned(),
        }
    }
}

/// OpenAI's error body.
pub fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Reply {
    Reply::json(
        status,
        &json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        }),
    )
}

/// The error OpenAI answers for a failure injected with `status`.
pub fn fault_error(status: StatusCode) -> Reply {
    match status {
        StatusCode::TOO_MANY_REQUESTS => error(
            status,
            "Rate limit reached for requests. Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        StatusCode::SERVICE_UNAVAILABLE => {
            error(status, "The engine is currently overloaded, please try again later.", "server_error", None)
        }
        _ => error(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
    }
}

/// 404 for an unknown route.
pub fn not_found(ctx: &Ctx<'_>) -> Reply {
    error(StatusCode::NOT_FOUND, &format!("Invalid URL ({} {})", ctx.method, ctx.path), "invalid_request_error", None)
}

fn invalid_json() -> Reply {
    error(
        StatusCode::BAD_REQUEST,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
         using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was \
         sent was not valid JSON.)",
        "invalid_request_error",
        None,
    )
}

fn missing(param: &str) -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": {
            "message": format!("Missing required parameter: '{param}'."),
            "type": "invalid_request_error",
            "param": param,
            "code": "missing_required_parameter",
        }}),
    )
}

/// Checks credentials and api-version; `Err` carries the rejection.
fn authorize(ctx: &Ctx<'_>, flavor: Flavor<'_>) -> Result<(), Reply> {
    match flavor {
        Flavor::OpenAi => match ctx.bearer() {
            Some(_) => Ok(()),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                Some("invalid_api_key"),
            )),
        },
        Flavor::Azure { .. } => {
            if ctx.header("api-key").is_none() && ctx.bearer().is_none() {
                return Err(Reply::json(
                    StatusCode::UNAUTHORIZED,
                    &json!({ "error": {
                        "code": "401",
                        "message": "Access denied due to invalid subscription key or wrong API \
                                    endpoint. Make sure to provide a valid key for an active \
                                    subscription and use a correct regional API endpoint for \
                                    your resource.",
                    }}),
                ));
            }
            if ctx.query_param("api-version").is_none_or(str::is_empty) {
                return Err(Reply::json(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": { "code": "404", "message": "Resource not found" } }),
                ));
            }
            Ok(())
        }
    }
}

/// Authorizes and parses the JSON body.
fn accept(ctx: &Ctx<'_>, flavor: Flavor<'_>) -> Result<Map<String, Value>, Reply> {
    authorize(ctx, flavor)?;
    ctx.json_object().ok_or_else(invalid_json)
}

/// Text of a message `content`: a string, or the text parts joined with a space.
fn content_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect();
            (!texts.is_empty()).then(|| texts.join(" "))
        }
        _ => None,
    }
}

fn prompt_from_messages(messages: &[Value]) -> Prompt {
    let mut prompt = Prompt::default();
    for message in messages {
        if let Some(text) = content_text(message.get("content")) {
            prompt.count(&text);
            if message.get("role").and_then(Value::as_str) == Some("user") {
                prompt.last_user_text = text;
            }
        }
    }
    prompt.ends_with_user_text = messages.last().is_some_and(|m| {
        m.get("role").and_then(Value::as_str) == Some("user") && content_text(m.get("content")).is_some()
    });
    prompt
}

/// The first declared function, unless `tool_choice` is `"none"`.
fn first_tool(request: &Map<String, Value>) -> Option<&str> {
    if request.get("tool_choice").and_then(Value::as_str) == Some("none") {
        return None;
    }
    let tool = request.get("tools")?.as_array()?.first()?;
    tool.pointer("/function/name").or_else(|| tool.get("name")).and_then(Value::as_str)
}

/// `stop`: a string or a list of strings.
fn stop_sequences(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

fn choice_count(request: &Map<String, Value>) -> u64 {
    request.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, MAX_CHOICES)
}

fn wants_stream(request: &Map<String, Value>) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
}

fn include_usage(request: &Map<String, Value>) -> bool {
    request.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true)
}

fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
    })
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::MaxTokens => "length",
    }
}

/// Fields shared by every object of one response.
struct Meta {
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
}

impl Meta {
    fn new(ctx: &Ctx<'_>, prefix: &str, model: String) -> Self {
        let name = ctx.state.name();
        Meta {
            id: format!("{prefix}-{name}-{}", ctx.state.next_id()),
            created: unix_now(),
            model,
            fingerprint: format!("fp_{name}"),
        }
    }

    fn object(&self, object: &str, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        })
    }
}

/// `POST /v1/chat/completions`.
pub fn chat(ctx: &Ctx<'_>, flavor: Flavor<'_>) -> Reply {
    let request = match accept(ctx, flavor) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return missing("messages");
    };
    let prompt = prompt_from_messages(messages);
    let options = Options {
        max_tokens: request.get("max_completion_tokens").or_else(|| request.get("max_tokens")).and_then(Value::as_u64),
        stop: stop_sequences(request.get("stop")),
        tool: first_tool(&request),
    };
    let output = text::respond(&prompt, &options);
    let n = choice_count(&request);
    let usage = Usage { prompt: prompt.input_tokens, completion: output.tokens() * n };
    let meta = Meta::new(ctx, "chatcmpl", flavor.model(&request));
    if wants_stream(&request) {
        return stream_chat(&meta, &output, n, include_usage(&request), usage);
    }
    let (message, finish) = match &output {
        Output::Text { text, finish } => (json!({ "role": "assistant", "content": text }), finish_reason(finish)),
        Output::ToolCall { name, arguments, .. } => (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": tool_call_id(&meta),
                    "type": "function",
                    "function": { "name": name, "arguments": arguments },
                }],
            }),
            "tool_calls",
        ),
    };
    let choices: Vec<Value> = (0..n)
        .map(|index| json!({ "index": index, "message": message, "logprobs": null, "finish_reason": finish }))
        .collect();
    let mut body = meta.object("chat.completion", Value::Array(choices));
    body["usage"] = usage_json(usage);
    Reply::ok_json(&body).with_usage(usage)
}

fn tool_call_id(meta: &Meta) -> String {
    format!("call_{}", meta.id.trim_start_matches("chatcmpl-"))
}

fn stream_chat(meta: &Meta, output: &Output, n: u64, with_usage: bool, usage: Usage) -> Reply {
    let chunk = |index: u64, delta: Value, finish: Option<&str>| {
        let choice = json!({
            "index": index, "delta": delta, "logprobs": null, "finish_reason": finish,
        });
        let mut object = meta.object("chat.completion.chunk", json!([choice]));
        if with_usage {
            object["usage"] = Value::Null;
        }
        sse::data(&object)
    };
    let mut events = Vec::new();
    for index in 0..n {
        match output {
            Output::Text { text, finish } => {
                events.push(chunk(index, json!({ "role": "assistant", "content": "" }), None));
                for piece in text::pieces(text) {
                    events.push(chunk(index, json!({ "content": piece }), None));
                }
                events.push(chunk(index, json!({}), Some(finish_reason(finish))));
            }
            Output::ToolCall { name, arguments, .. } => {
                let start = json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "index": 0,
                        "id": tool_call_id(meta),
                        "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }],
                });
                events.push(chunk(index, start, None));
                for piece in text::pieces(arguments) {
                    let delta = json!({
                        "tool_calls": [{ "index": 0, "function": { "arguments": piece } }],
                    });
                    events.push(chunk(index, delta, None));
                }
                events.push(chunk(index, json!({}), Some("tool_calls")));
            }
        }
    }
    let reported = if with_usage {
        let mut last = meta.object("chat.completion.chunk", json!([]));
        last["usage"] = usage_json(usage);
        events.push(sse::data(&last));
        usage
    } else {
        Usage::default()
    };
    events.push(sse::done());
    Reply::stream(sse::CONTENT_TYPE, events).with_usage(reported)
}

/// `prompt`: a string, a list of strings, or token arrays (rendered as JSON).
fn prompts(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()
        }
        Value::Array(items) if items.iter().all(Value::is_array) => items.iter().map(Value::to_string).collect(),
        other => vec![other.to_string()],
    }
}

/// `POST /v1/completions` (legacy text completions).
pub fn completions(ctx: &Ctx<'_>, flavor: Flavor<'_>) -> Reply {
    let request = match accept(ctx, flavor) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let Some(prompt) = request.get("prompt") else {
        return missing("prompt");
    };
    let options = Options {
        max_tokens: request.get("max_tokens").and_then(Value::as_u64),
        stop: stop_sequences(request.get("stop")),
        tool: None,
    };
    let n = choice_count(&request);
    let meta = Meta::new(ctx, "cmpl", flavor.model(&request));
    let mut usage = Usage::default();
    let mut answers = Vec::new();
    for prompt in prompts(prompt) {
        usage.prompt += text::count_words(&prompt);
        let (reply, finish) = text::limit(&text::echo(&prompt), &options);
        usage.completion += text::count_words(&reply) * n;
        for _ in 0..n {
            answers.push((reply.clone(), finish_reason(&finish)));
        }
    }
    if wants_stream(&request) {
        let with_usage = include_usage(&request);
        let mut events = Vec::new();
        for (index, (reply, finish)) in answers.iter().enumerate() {
            let choice = |text: &str, finish: Option<&str>| json!([{ "text": text, "index": index, "logprobs": null, "finish_reason": finish }]);
            for piece in text::pieces(reply) {
                events.push(sse::data(&meta.object("text_completion", choice(piece, None))));
            }
            events.push(sse::data(&meta.object("text_completion", choice("", Some(finish)))));
        }
        let reported = if with_usage {
            let mut last = meta.object("text_completion", json!([]));
            last["usage"] = usage_json(usage);
            events.push(sse::data(&last));
            usage
        } else {
            Usage::default()
        };
        events.push(sse::done());
        return Reply::stream(sse::CONTENT_TYPE, events).with_usage(reported);
    }
    let choices: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(index, (text, finish))| {
            json!({ "text": text, "index": index, "logprobs": null, "finish_reason": finish })
        })
        .collect();
    let mut body = meta.object("text_completion", Value::Array(choices));
    body["usage"] = usage_json(usage);
    Reply::ok_json(&body).with_usage(usage)
}

/// `POST /v1/embeddings`.
pub fn embeddings(ctx: &Ctx<'_>, flavor: Flavor<'_>) -> Reply {
    let request = match accept(ctx, flavor) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let Some(input) = request.get("input") else {
        return missing("input");
    };
    let inputs: Vec<(String, u64)> = match input {
        Value::String(s) => vec![(s.clone(), text::count_words(s))],
        // A single token array.
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            vec![(input.to_string(), items.len() as u64)]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => (s.clone(), text::count_words(s)),
                Value::Array(tokens) => (item.to_string(), tokens.len() as u64),
                other => (other.to_string(), 1),
            })
            .collect(),
        other => vec![(other.to_string(), 1)],
    };
    let dimensions =
        request.get("dimensions").and_then(Value::as_u64).map_or(embed::DEFAULT_DIMENSIONS, |d| d as usize);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let values = embed::embedding(text, dimensions);
            let embedding = if base64 { json!(embed::to_base64(&values)) } else { embed::to_json(&values) };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let prompt_tokens: u64 = inputs.iter().map(|(_, tokens)| tokens).sum();
    let body = json!({
        "object": "list",
        "data": data,
        "model": flavor.model(&request),
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    });
    Reply::ok_json(&body).with_usage(Usage { prompt: prompt_tokens, completion: 0 })
}

fn model_json(id: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock-origin" })
}

/// `GET /v1/models`.
pub fn models(ctx: &Ctx<'_>) -> Reply {
    if let Err(reply) = authorize(ctx, Flavor::OpenAi) {
        return reply;
    }
    Reply::ok_json(&json!({ "object": "list", "data": [model_json(DEFAULT_MODEL)] }))
}

/// `GET /v1/models/{model}`: every model exists.
pub fn model(ctx: &Ctx<'_>, id: &str) -> Reply {
    if let Err(reply) = authorize(ctx, Flavor::OpenAi) {
        return reply;
    }
    Reply::ok_json(&model_json(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_counts_all_messages_and_keeps_last_user_text() {
        let messages = json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [
                {"type": "text", "text": "second"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "part"},
            ]},
        ]);
        let prompt = prompt_from_messages(messages.as_array().expect("array"));
        assert_eq!(prompt.input_tokens, 8);
        assert_eq!(prompt.last_user_text, "second part");
        assert!(prompt.ends_with_user_text);
    }

    #[test]
    fn tool_result_is_not_a_user_turn() {
        let messages = json!([
            {"role": "user", "content": "call tool"},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "tool_call_id": "x", "content": "42"},
        ]);
        let prompt = prompt_from_messages(messages.as_array().expect("array"));
        assert_eq!(prompt.last_user_text, "call tool");
        assert!(!prompt.ends_with_user_text);
    }

    #[test]
    fn first_tool_respects_tool_choice_none() {
        let request = json!({"tools": [{"type": "function", "function": {"name": "f"}}]});
        let mut request = request.as_object().cloned().expect("object");
        assert_eq!(first_tool(&request), Some("f"));
        request.insert("tool_choice".into(), json!("none"));
        assert_eq!(first_tool(&request), None);
    }

    #[test]
    fn stop_accepts_string_or_list() {
        assert_eq!(stop_sequences(Some(&json!("x"))), vec!["x"]);
        assert_eq!(stop_sequences(Some(&json!(["a", 1, "b"]))), vec!["a", "b"]);
        assert!(stop_sequences(None).is_empty());
    }
}
