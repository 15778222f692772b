//! Rendering the answer: the `response` object (`Head::response_object`), a buffered chat
//! answer turned into one (`Turn::render`), and the item and usage shapes the streams share.

use serde_json::{json, Value};

use crate::gateway::dialect::responses::turn::{Head, Turn};
use crate::gateway::error::Result;
use crate::gateway::types::Usage;
use crate::gateway::wire::json::{bad_response, json_body, parse_json};
use crate::gateway::wire::openai::openai_usage;

/// `(status, incomplete reason)` for a chat `finish_reason`.
pub(super) fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// Responses' `usage` object.
pub fn usage_object(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total(),
    })
}

/// Usage of a `response` object (passthrough answers and events).
pub fn response_usage(response: &Value) -> Option<Usage> {
    let usage = response.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: usage.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: usage.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Item ids derive from the response id: `msg_<id>` and `fc_<id>_<n>`.
pub(super) fn item_id(prefix: &str, response_id: &str, n: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    if n == 0 && prefix == "msg" {
        format!("msg_{base}")
    } else {
        format!("{prefix}_{base}_{n}")
    }
}

pub(super) fn message_output(id: String, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

pub(super) fn function_output(id: String, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

impl Head {
    /// The `response` object with `status`, `output` and `usage` filled in.
    pub fn response_object(&self, model: &str, status: &str, output: Vec<Value>, usage: Option<Usage>) -> Value {
        let echo = |key: &str, default: Value| self.echo.get(key).cloned().unwrap_or(default);
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": echo("instructions", Value::Null),
            "max_output_tokens": echo("max_output_tokens", Value::Null),
            "max_tool_calls": null,
            "metadata": echo("metadata", json!({})),
            "model": model,
            "output": output,
            "parallel_tool_calls": echo("parallel_tool_calls", Value::Bool(true)),
            "previous_response_id": self.previous_response_id,
            "reasoning": echo("reasoning", json!({"effort": null, "summary": null})),
            "service_tier": "default",
            "store": self.store,
            "temperature": echo("temperature", json!(1.0)),
            "text": echo("text", json!({"format": {"type": "text"}})),
            "tool_choice": echo("tool_choice", json!("auto")),
            "tools": echo("tools", json!([])),
            "top_p": echo("top_p", json!(1.0)),
            "truncation": echo("truncation", json!("disabled")),
            "usage": usage.map(usage_object),
            "user": echo("user", Value::Null),
        });
        if let Some(s) = self.echo.get("safety_identifier") {
            response["safety_identifier"] = s.clone();
        }
        response
    }
}

impl Turn {
    /// A buffered chat answer → the `response` object (a passthrough origin's answer is one
    /// already). Either is kept in `finished`, for storing.
    pub fn render(&self, answer: Vec<u8>) -> Result<Vec<u8>> {
        if self.passthrough {
            *self.finished.borrow_mut() = Some(parse_json(&answer)?);
            return Ok(answer);
        }
        let value = parse_json(&answer)?;
        let choice = value.get("choices").and_then(|c| c.get(0)).ok_or_else(|| bad_response("no choices"))?;
        let message = choice.get("message").ok_or_else(|| bad_response("a choice without a message"))?;
        let mut output = Vec::new();
        let text = match message.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
            _ => String::new(),
        };
        let calls = message.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        if !text.is_empty() || calls.is_empty() {
            output.push(message_output(item_id("msg", &self.head.id, 0), &text, "completed"));
        }
        for (n, call) in calls.iter().enumerate() {
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default();
            let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("{}");
            let call_id = call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{n}"), str::to_string);
            output.push(function_output(item_id("fc", &self.head.id, n), &call_id, name, arguments, "completed"));
        }
        let (status, incomplete) = status_of(choice.get("finish_reason").and_then(Value::as_str));
        let model = value.get("model").and_then(Value::as_str).unwrap_or_default();
        let usage = Some(openai_usage(&value).unwrap_or_default());
        let mut response = self.head.response_object(model, status, output, usage);
        if let Some(reason) = incomplete {
            response["incomplete_details"] = json!({"reason": reason});
        }
        let body = json_body(&response);
        *self.finished.borrow_mut() = Some(response);
        Ok(body)
    }
}
