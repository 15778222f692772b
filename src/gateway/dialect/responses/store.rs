//! Stored responses: the KV key (`resp:<tenant>:<id>`), the stored `Record` and `Keep`, the
//! response to store once it is known (see `pipeline::stored`).

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::gateway::dialect::responses::turn::valid_id;

/// Most chat messages a conversation continued with `previous_response_id` may reach.
pub const MAX_CONVERSATION: usize = 2048;
/// Largest stored record (bytes); a larger one is not stored (and cannot be continued).
pub const MAX_RECORD_BYTES: usize = 8 << 20;

/// The KV key of a stored response: one prefix per tenant.
pub fn kv_key(tenant: &str, id: &str) -> String {
    format!("resp:{tenant}:{id}")
}

/// Output items of a `response` → the assistant's chat message (text and tool calls), for the
/// stored conversation.
pub fn output_to_messages(response: &Value) -> Vec<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in response.get("output").and_then(Value::as_array).into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                }
            }
            Some("function_call") => {
                let field = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
                calls.push(json!({"id": field("call_id"), "type": "function",
                    "function": {"name": field("name"), "arguments": field("arguments")}}));
            }
            _ => {}
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Vec::new();
    }
    let mut message =
        json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    vec![message]
}

/// A stored response: the `response` object, and the conversation (chat messages, this
/// turn's answer included) that a later `previous_response_id` continues.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub endpoint: String,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub messages: Vec<Value>,
    pub response: Value,
}

impl Record {
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A response to store once it is known: a buffered answer at once, a stream's at its end
/// (the turn's `finished`, filled by `render` or the stream stage). Stored under the
/// response's own id (the gateway's, or a passthrough origin's), in the tenant's prefix.
pub struct Keep {
    pub tenant: String,
    pub ttl_secs: u64,
    pub endpoint: String,
    pub passthrough: bool,
    /// The conversation before this turn's answer (history + input).
    pub messages: Vec<Value>,
    pub response: Rc<RefCell<Option<Value>>>,
}

impl Keep {
    /// `(KV key, record)`, if there is a finished response to store and it fits.
    pub fn encode(&self) -> Option<(String, Vec<u8>)> {
        let response = self.response.borrow().clone()?;
        let id = response.get("id").and_then(Value::as_str).filter(|id| valid_id(id))?.to_string();
        let messages = if self.passthrough {
            Vec::new() // the origin keeps the conversation
        } else {
            let mut messages = self.messages.clone();
            messages.extend(output_to_messages(&response));
            messages
        };
        let record = Record { endpoint: self.endpoint.clone(), passthrough: self.passthrough, messages, response };
        let bytes = serde_json::to_vec(&record).ok().filter(|b| b.len() <= MAX_RECORD_BYTES)?;
        Some((kv_key(&self.tenant, &id), bytes))
    }
}
