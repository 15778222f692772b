//! Anthropic Messages API wire format (`POST /v1/messages`).

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::exchange::{Ctx, Reply, Usage};
use crate::sse;
use crate::text::{self, Finish, Options, Output, Prompt};

const DEFAULT_MODEL: &str = "mock-model";

/// Anthropic's error body.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Reply {
    Reply::json(status, &json!({ "type": "error", "error": { "type": kind, "message": message } }))
}

/// The error Anthropic answers for a failure injected with `status`.
pub fn fault_error(status: StatusCode) -> Reply {
    match status {
        StatusCode::TOO_MANY_REQUESTS => error(
            status,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit. Please try again later.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => error(status, "overloaded_error", "Overloaded"),
        _ => error(status, "api_error", "Internal server error"),
    }
}

fn invalid(message: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// Text of `content`: a string, or its `text` blocks joined with a space.
fn content_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join(" "))
        }
        _ => None,
    }
}

/// Text inside `tool_result` blocks (counted as prompt, never echoed).
fn tool_result_text(content: Option<&Value>) -> String {
    let Some(Value::Array(blocks)) = content else {
        return String::new();
    };
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .filter_map(|b| content_text(b.get("content")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn build_prompt(request: &Map<String, Value>, messages: &[Value]) -> Prompt {
    let mut prompt = Prompt::default();
    if let Some(system) = content_text(request.get("system")) {
        prompt.count(&system);
    }
    for message in messages {
        let content = message.get("content");
        prompt.count(&tool_result_text(content));
        if let Some(text) = content_text(content) {
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

/// The first declared tool, unless `tool_choice` is `{"type": "none"}`.
fn first_tool(request: &Map<String, Value>) -> Option<&str> {
    let choice = request.get("tool_choice").and_then(|c| c.get("type"));
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    request.get("tools")?.as_array()?.first()?.get("name")?.as_str()
}

fn stop_reason(finish: &Finish) -> (&'static str, Option<&str>) {
    match finish {
        Finish::Stop => ("end_turn", None),
        Finish::StopSequence(sequence) => ("stop_sequence", Some(sequence)),
        Finish::MaxTokens => ("max_tokens", None),
    }
}

/// `POST /v1/messages`.
pub fn messages(ctx: &Ctx<'_>) -> Reply {
    if ctx.header("x-api-key").is_none() {
        return error(StatusCode::UNAUTHORIZED, "authentication_error", "x-api-key header is required");
    }
    if ctx.header("anthropic-version").is_none() {
        return error(StatusCode::UNAUTHORIZED, "authentication_error", "anthropic-version header is required");
    }
    let Some(request) = ctx.json_object() else {
        return invalid("There was an error parsing the body of your request: invalid JSON");
    };
    answer(ctx, &request)
}

/// Claude on Vertex AI (`publishers/anthropic/models/{model}:rawPredict|streamRawPredict`): the
/// model is in the URL, `anthropic_version` in the body (and `model` must not be).
pub fn vertex_raw_predict(ctx: &Ctx<'_>, model: &str, stream: bool) -> Reply {
    let Some(mut request) = ctx.json_object() else {
        return invalid("There was an error parsing the body of your request: invalid JSON");
    };
    if request.get("anthropic_version").and_then(Value::as_str) != Some("vertex-2023-10-16") {
        return invalid("anthropic_version: must be \"vertex-2023-10-16\" on Vertex AI");
    }
    if request.contains_key("model") {
        return invalid("model: Extra inputs are not permitted");
    }
    request.insert("model".into(), Value::String(model.to_owned()));
    request.insert("stream".into(), Value::Bool(stream));
    answer(ctx, &request)
}

fn answer(ctx: &Ctx<'_>, request: &Map<String, Value>) -> Reply {
    let request = request.clone();
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return invalid("messages: Field required");
    };
    let Some(max_tokens) = request.get("max_tokens") else {
        return invalid("max_tokens: Field required");
    };
    let Some(max_tokens) = max_tokens.as_u64() else {
        return invalid("max_tokens: Input should be a valid integer");
    };
    let prompt = build_prompt(&request, messages);
    let options = Options {
        max_tokens: Some(max_tokens),
        stop: request
            .get("stop_sequences")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        tool: first_tool(&request),
    };
    let output = text::respond(&prompt, &options);
    let usage = Usage { prompt: prompt.input_tokens, completion: output.tokens() };
    let name = ctx.state.name();
    let serial = ctx.state.next_id();
    let message = MessageMeta {
        id: format!("msg_{name}_{serial}"),
        tool_id: format!("toolu_{name}_{serial}"),
        model: request.get("model").and_then(Value::as_str).unwrap_or(DEFAULT_MODEL),
    };
    let reply = if request.get("stream").and_then(Value::as_bool) == Some(true) {
        Reply::stream(sse::CONTENT_TYPE, message.events(&output, usage))
    } else {
        Reply::ok_json(&message.full(&output, usage))
    };
    reply.with_usage(usage)
}

struct MessageMeta<'a> {
    id: String,
    tool_id: String,
    model: &'a str,
}

impl MessageMeta<'_> {
    fn message(&self, content: Value, stop: (Option<&str>, Option<&str>), usage: Value) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop.0,
            "stop_sequence": stop.1,
            "usage": usage,
        })
    }

    fn full(&self, output: &Output, usage: Usage) -> Value {
        let (content, reason, sequence) = match output {
            Output::Text { text, finish } => {
                let (reason, sequence) = stop_reason(finish);
                (json!([{ "type": "text", "text": text }]), reason, sequence)
            }
            Output::ToolCall { name, input, .. } => {
                (json!([{ "type": "tool_use", "id": self.tool_id, "name": name, "input": input }]), "tool_use", None)
            }
        };
        self.message(
            content,
            (Some(reason), sequence),
            json!({ "input_tokens": usage.prompt, "output_tokens": usage.completion }),
        )
    }

    /// The Messages streaming event sequence.
    fn events(&self, output: &Output, usage: Usage) -> Vec<bytes::Bytes> {
        let start = self.message(json!([]), (None, None), json!({ "input_tokens": usage.prompt, "output_tokens": 1 }));
        let mut events = vec![sse::event("message_start", &json!({ "type": "message_start", "message": start }))];
        let (block, deltas, reason, sequence) = match output {
            Output::Text { text, finish } => {
                let (reason, sequence) = stop_reason(finish);
                let deltas: Vec<Value> = text::pieces(text)
                    .into_iter()
                    .map(|piece| json!({ "type": "text_delta", "text": piece }))
                    .collect();
                (json!({ "type": "text", "text": "" }), deltas, reason, sequence)
            }
            Output::ToolCall { name, arguments, .. } => {
                let deltas: Vec<Value> = text::pieces(arguments)
                    .into_iter()
                    .map(|piece| json!({ "type": "input_json_delta", "partial_json": piece }))
                    .collect();
                let block = json!({
                    "type": "tool_use", "id": self.tool_id, "name": name, "input": {},
                });
                (block, deltas, "tool_use", None)
            }
        };
        events.push(sse::event(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": 0, "content_block": block }),
        ));
        events.push(sse::event("ping", &json!({ "type": "ping" })));
        for delta in deltas {
            events.push(sse::event(
                "content_block_delta",
                &json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
            ));
        }
        events.push(sse::event("content_block_stop", &json!({ "type": "content_block_stop", "index": 0 })));
        events.push(sse::event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": { "stop_reason": reason, "stop_sequence": sequence },
                "usage": { "output_tokens": usage.completion },
            }),
        ));
        events.push(sse::event("message_stop", &json!({ "type": "message_stop" })));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn prompt_counts_system_blocks_and_tool_results() {
        let request = object(json!({
            "system": [{"type": "text", "text": "be nice"}],
            "messages": [
                {"role": "user", "content": "call tool please"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "forty two"}]},
            ],
        }));
        let messages = request["messages"].as_array().cloned().expect("array");
        let prompt = build_prompt(&request, &messages);
        assert_eq!(prompt.input_tokens, 2 + 3 + 2);
        assert_eq!(prompt.last_user_text, "call tool please");
        assert!(!prompt.ends_with_user_text);
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(stop_reason(&Finish::Stop), ("end_turn", None));
        assert_eq!(stop_reason(&Finish::MaxTokens), ("max_tokens", None));
        assert_eq!(stop_reason(&Finish::StopSequence("X".into())), ("stop_sequence", Some("X")));
    }

    #[test]
    fn stream_has_the_documented_event_order() {
        let meta = MessageMeta { id: "msg_1".into(), tool_id: "toolu_1".into(), model: "m" };
        let output = Output::Text { text: "echo: hi there".into(), finish: Finish::Stop };
        let events = meta.events(&output, Usage { prompt: 2, completion: 3 });
        let names: Vec<String> = events
            .iter()
            .map(|e| {
                let text = String::from_utf8_lossy(e);
                text.lines().next().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "event: message_start",
                "event: content_block_start",
                "event: ping",
                "event: content_block_delta",
                "event: content_block_delta",
                "event: content_block_delta",
                "event: content_block_stop",
                "event: message_delta",
                "event: message_stop",
            ]
        );
    }
}
