//! Stored responses: the KV key (`resp:<tenant>:<id>`), the stored `Record` and `Keep`, the
//! response to store once it is known (see `pipeline::stored`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::gateway::dialect::responses::turn::valid_id;

/// Most chat messages a conversation continued with `previous_response_id` may reach.
pub const MAX_CONVERSATION: usize = 2048;
/// Largest stored record (bytes); a larger one is not stored (and cannot be continued).
pub const MAX_RECORD_BYTES: usize = 8 << 20;
/// How long an isolate remembers a response it stored (`JustStored`).
const JUST_STORED_MS: u64 = 60_000;
/// What an isolate's `JustStored` holds at most: bytes of records (each at most a quarter),
/// and entries (deletions included), which bounds a lookup's scan.
const JUST_STORED_MAX_BYTES: usize = 4 << 20;
const JUST_STORED_MAX_ENTRIES: usize = 512;

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
    /// The isolate's memo of the records it stored (`None` where nothing outlives the request).
    pub just_stored: Option<Rc<JustStored>>,
}

impl Keep {
    /// Encodes the record and, where the isolate keeps a memo, remembers it there now: the
    /// response is then the isolate's to answer before its KV write (`Storing`) runs.
    pub fn close(self, now_ms: u64) -> Option<Storing> {
        let (key, record) = self.encode()?;
        let record: Rc<[u8]> = record.into();
        if let Some(memo) = &self.just_stored {
            memo.put(&key, record.clone(), now_ms, self.ttl_secs);
        }
        Some(Storing { key, record, ttl_secs: self.ttl_secs, memo: self.just_stored })
    }

    /// `(KV key, record)`, if there is a finished response to store and it fits.
    pub(super) fn encode(&self) -> Option<(String, Vec<u8>)> {
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

/// A closed `Keep`: the record to write to KV.
pub struct Storing {
    pub key: String,
    pub record: Rc<[u8]>,
    pub ttl_secs: u64,
    memo: Option<Rc<JustStored>>,
}

impl Storing {
    /// The response was deleted before its write ran (from the isolate's memo): writing it
    /// would bring it back.
    pub fn deleted(&self, now_ms: u64) -> bool {
        self.memo.as_ref().is_some_and(|memo| memo.deleted(&self.key, now_ms))
    }
}

/// The responses this isolate stored in the last minute (KV key → record), from the moment the
/// request's accounting closes (`Deferred::close`), before its KV write runs: a client chaining
/// `previous_response_id` sends its next call as soon as it has the answer, and on Cloudflare
/// that call can arrive before the write after the response. Oldest first; bounded in bytes.
#[derive(Default)]
pub struct JustStored {
    entries: RefCell<VecDeque<Remembered>>,
}

/// What [`JustStored`] knows of a response it stored or deleted in the last minute.
#[derive(Clone)]
pub enum Known {
    /// The record this isolate stored.
    Stored(Rc<[u8]>),
    /// This isolate deleted it; KV, which can lag, may still have it.
    Deleted,
}

/// One key in [`JustStored`], until `expires_ms`.
struct Remembered {
    key: String,
    known: Known,
    expires_ms: u64,
}

impl Remembered {
    fn size(&self) -> usize {
        self.key.len() + if let Known::Stored(record) = &self.known { record.len() } else { 0 }
    }
}

impl JustStored {
    /// Remembers `record` under `key` until `now_ms` + a minute (or the record's `ttl_secs`, if
    /// sooner). A record larger than a quarter of the memo is only written to KV.
    pub fn put(&self, key: &str, record: Rc<[u8]>, now_ms: u64, ttl_secs: u64) {
        if record.len() > JUST_STORED_MAX_BYTES / 4 {
            return;
        }
        let expires_ms = now_ms.saturating_add(JUST_STORED_MS.min(ttl_secs.saturating_mul(1000)));
        self.push(Remembered { key: key.to_string(), known: Known::Stored(record), expires_ms }, now_ms);
    }

    /// Adds `entry` in place of any under its key, dropping the expired and then the oldest
    /// entries past the bounds.
    fn push(&self, entry: Remembered, now_ms: u64) {
        let mut entries = self.entries.borrow_mut();
        entries.retain(|e| e.key != entry.key && e.expires_ms > now_ms);
        let mut bytes = entries.iter().map(Remembered::size).sum::<usize>() + entry.size();
        while bytes > JUST_STORED_MAX_BYTES || entries.len() >= JUST_STORED_MAX_ENTRIES {
            let Some(oldest) = entries.pop_front() else { break };
            bytes -= oldest.size();
        }
        entries.push_back(entry);
    }

    /// What this isolate knows of `key` from the last minute, if anything.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<Known> {
        let entries = self.entries.borrow();
        entries.iter().find(|e| e.key == key && e.expires_ms > now_ms).map(|e| e.known.clone())
    }

    /// Forgets `key`, the response deleted, and remembers that for a minute: a write of it
    /// still to run is then skipped (`Storing::deleted`).
    pub fn remove(&self, key: &str, now_ms: u64) {
        let expires_ms = now_ms.saturating_add(JUST_STORED_MS);
        self.push(Remembered { key: key.to_string(), known: Known::Deleted, expires_ms }, now_ms);
    }

    /// Whether this isolate deleted `key` in the last minute.
    pub(super) fn deleted(&self, key: &str, now_ms: u64) -> bool {
        matches!(self.get(key, now_ms), Some(Known::Deleted))
    }
}
