//! OpenAI Responses API wire format: `POST /v1/responses`, buffered or as typed events, for
//! the gateway's Responses passthrough. The mock keeps no conversations: a
//! `previous_response_id` is echoed back (the gateway's request log shows it was sent).

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::exchange::{unix_now, Ctx, Reply, Usage};
use crate::openai;
use crate::sse;
use crate::text::{self, Finish, Options, Output, Prompt};

/// Text of an input item's `content`: a string, or its text parts joined with a space.
fn content_text(content: Option<&Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            (!texts.is_empty()).then(|| texts.join(" "))
        }
        _ => None,
    }
}

fn prompt_of(request: &Map<String, Value>) -> Prompt {
    let mut prompt = Prompt::default();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        prompt.count(instructions);
    }
    match request.get("input") {
        Some(Value::String(s)) => {
            prompt.count(s);
            prompt.last_user_text = s.clone();
            prompt.ends_with_user_text = true;
        }
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(text) = content_text(item.get("content")) {
                    prompt.count(&text);
                    if item.get("role").and_then(Value::as_str) == Some("user") {
                        prompt.last_user_text = text;
                    }
                }
            }
            prompt.ends_with_user_text = items.last().is_some_and(|i| {
                i.get("role").and_then(Value::as_str) == Some("user") && content_text(i.get("content")).is_some()
            });
        }
        _ => {}
    }
    prompt
}

fn usage_json(usage: Usage) -> Value {
    json!({"input_tokens": usage.prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": usage.prompt + usage.completion})
}

/// `POST /v1/responses`.
pub fn create(ctx: &Ctx<'_>) -> Reply {
    if ctx.bearer().is_none() {
        return openai::error(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    let Some(request) = ctx.json_object() else {
        return openai::error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    if request.get("input").is_none() {
        return openai::error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'input'.",
            "invalid_request_error",
            Some("missing_required_parameter"),
        );
    }
    let prompt = prompt_of(&request);
    let tool = request
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|_| request.get("tool_choice").and_then(Value::as_str) != Some("none"));
    let options =
        Options { max_tokens: request.get("max_output_tokens").and_then(Value::as_u64), stop: Vec::new(), tool };
    let output = text::respond(&prompt, &options);
    let usage = Usage { prompt: prompt.input_tokens, completion: output.tokens() };
    let n = ctx.state.next_id();
    let id = format!("resp_mock{}{n}", ctx.state.name());
    let (item, status) = match &output {
        Output::Text { text, finish } => {
            let item = json!({"id": format!("msg_mock{n}"), "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]});
            (item, if *finish == Finish::MaxTokens { "incomplete" } else { "completed" })
        }
        Output::ToolCall { name, arguments, .. } => {
            let item = json!({"id": format!("fc_mock{n}"), "type": "function_call", "status": "completed",
                "call_id": format!("call_mock{n}"), "name": name, "arguments": arguments});
            (item, "completed")
        }
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": unix_now(), "status": status,
            "model": request.get("model").cloned().unwrap_or(Value::Null), "output": output, "usage": usage,
            "previous_response_id": request.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "store": request.get("store").cloned().unwrap_or(Value::Bool(true)),
            "instructions": request.get("instructions").cloned().unwrap_or(Value::Null)})
    };
    let done = response(status, json!([item]), usage_json(usage));
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return Reply::ok_json(&done).with_usage(usage);
    }
    let mut seq = 0u64;
    let mut events = Vec::new();
    let mut push = |mut event: Value| {
        event["sequence_number"] = json!(seq);
        seq += 1;
        let name = event["type"].as_str().unwrap_or_default().to_string();
        events.push(sse::event(&name, &event));
    };
    push(json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}));
    push(json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}));
    let item_id = item["id"].clone();
    let mut opening = item.clone();
    opening["status"] = json!("in_progress");
    match &output {
        Output::Text { text, .. } => {
            opening["content"] = json!([]);
            push(json!({"type": "response.output_item.added", "output_index": 0, "item": opening}));
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            push(
                json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
            );
            for piece in text::pieces(text) {
                push(
                    json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece}),
                );
            }
            push(
                json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0, "content_index": 0, "text": text}),
            );
        }
        Output::ToolCall { arguments, .. } => {
            opening["arguments"] = json!("");
            push(json!({"type": "response.output_item.added", "output_index": 0, "item": opening}));
            push(
                json!({"type": "response.function_call_arguments.delta", "item_id": item_id, "output_index": 0, "delta": arguments}),
            );
            push(
                json!({"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": 0, "arguments": arguments}),
            );
        }
    }
    push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
    push(json!({"type": kind, "response": done}));
    Reply::stream(sse::CONTENT_TYPE, events).with_usage(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_reads_string_and_item_inputs() {
        let request = json!({"instructions": "be brief", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "first question"}]},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ]});
        let prompt = prompt_of(request.as_object().unwrap());
        assert_eq!(prompt.input_tokens, 4);
        assert_eq!(prompt.last_user_text, "first question");
        assert!(!prompt.ends_with_user_text);
        let prompt = prompt_of(json!({"input": "hi there"}).as_object().unwrap());
        assert!(prompt.ends_with_user_text && prompt.last_user_text == "hi there");
    }
}
