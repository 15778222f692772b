//! OpenAI's wire shapes, the gateway's internal lingua franca: answer and chunk builders,
//! request field readers, usage, the stream watcher and the replay of a whole answer as a
//! stream. Client dialects and provider adapters both build on these.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::json::{json_body, parse_json, parse_object_keeping};
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;
use edge_scan::chunk::{ChoiceList, ChunkFacts, ChunkParts};
use edge_scan::json::{write_str, write_u64};

/// The fields of a `chat.completion` answer that the client dialects translate; the others
/// are checked and skipped, not read into a tree.
pub const ANSWER_FIELDS: [&str; 4] = ["choices", "usage", "id", "model"];

/// The usage object of an OpenAI-shaped response, if present.
pub fn openai_usage(body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    Some(Usage {
        prompt_tokens: usage.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        completion_tokens: usage.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// The usage of a whole OpenAI answer (2xx), as [`openai_usage`] reads it from its tree: read
/// by hand without building one (`edge_scan::chunk::answer_usage`), else from the tree of its
/// `usage` (which also decides what is wrong with a body that is not a JSON object:
/// `bad_response`).
pub fn answer_usage(body: &[u8]) -> Result<Option<Usage>> {
    match std::str::from_utf8(body).ok().and_then(edge_scan::chunk::answer_usage) {
        Some(usage) => Ok(usage.map(Usage::from)),
        None => parse_object_keeping(body, &["usage"]).map(|kept| openai_usage(&kept)),
    }
}

/// The `usage` object of an OpenAI answer (`Usage::total` saturates: origin counts may be absurd).
pub fn usage_json(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total()})
}

/// The assistant `message` of a `chat.completion` choice; `tool_calls` only when there are some.
pub fn assistant_message(text: Option<String>, tool_calls: Vec<Value>) -> Value {
    let mut message = json!({"role": "assistant", "content": text});
    if let (false, Some(m)) = (tool_calls.is_empty(), message.as_object_mut()) {
        m.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    message
}

/// The `data` list of an OpenAI embeddings answer, one item per vector.
pub fn embedding_data<T: serde::Serialize>(vectors: impl IntoIterator<Item = T>) -> Vec<Value> {
    vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "embedding": embedding, "index": index}))
        .collect()
}

/// An OpenAI embeddings answer (`"object": "list"`), one item per vector.
pub fn embedding_list<T: serde::Serialize>(vectors: impl IntoIterator<Item = T>, model: &str, usage: Usage) -> Value {
    json!({
        "object": "list", "data": embedding_data(vectors), "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total()},
    })
}

/// Whether an embeddings request asks for OpenAI's `encoding_format: "base64"`.
pub fn wants_base64(body: &Map<String, Value>) -> bool {
    body.get("encoding_format").and_then(Value::as_str) == Some("base64")
}

/// An embeddings answer as OpenAI writes it for `encoding_format: "base64"`: every `embedding`
/// that is a list of numbers becomes the base64 (standard, padded) of its little-endian `f32`s.
/// Embeddings already in base64 (an origin that honoured the field) are left as they are, so
/// this may run on any answer.
pub fn embeddings_to_base64(body: &[u8]) -> Result<Vec<u8>> {
    let mut value = parse_json(body)?;
    let Some(data) = value.get_mut("data").and_then(Value::as_array_mut) else {
        return Ok(body.to_vec());
    };
    let mut changed = false;
    for item in data {
        let Some(Value::Array(numbers)) = item.get("embedding") else { continue };
        let mut bytes = Vec::with_capacity(numbers.len() * 4);
        for n in numbers {
            let n = n.as_f64().ok_or_else(bad_embedding)?;
            bytes.extend_from_slice(&(n as f32).to_le_bytes());
        }
        item["embedding"] = Value::String(STANDARD.encode(bytes));
        changed = true;
    }
    if !changed {
        return Ok(body.to_vec());
    }
    Ok(crate::gateway::wire::json::json_body(&value))
}

fn bad_embedding() -> GatewayError {
    GatewayError::bad_gateway(
        ErrorCode::OriginBadResponse,
        "origin returned an embedding that is not a list of numbers",
    )
}

pub fn invalid(field: &str, problem: &str) -> GatewayError {
    GatewayError::bad_request(ErrorCode::InvalidRequest, format!("{field}: {problem}"))
}

/// Removes `key`, treating an explicit `null` as absent.
pub fn take(body: &mut Map<String, Value>, key: &str) -> Option<Value> {
    body.remove(key).filter(|v| !v.is_null())
}

pub fn number(field: &str, value: &Value) -> Result<f64> {
    value.as_f64().ok_or_else(|| invalid(field, "must be a number"))
}

/// `max_completion_tokens`, else `max_tokens`, as a positive integer.
pub fn max_tokens(body: &mut Map<String, Value>) -> Result<Option<u64>> {
    let newer = take(body, "max_completion_tokens");
    let legacy = take(body, "max_tokens");
    let (field, value) = match (newer, legacy) {
        (Some(v), _) => ("max_completion_tokens", v),
        (None, Some(v)) => ("max_tokens", v),
        (None, None) => return Ok(None),
    };
    value.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| invalid(field, "must be a positive integer"))
}

/// OpenAI `stop`: a string or a list of strings.
pub fn stop_sequences(value: Option<Value>) -> Result<Vec<String>> {
    let problem = || invalid("stop", "must be a string or a list of strings");
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(problem()),
            })
            .collect(),
        Some(_) => Err(problem()),
    }
}

/// The single prompt of a completions request (`prompt` may be a one-element list).
pub fn completion_prompt(body: &mut Map<String, Value>, provider: &str) -> Result<String> {
    match take(body, "prompt") {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(mut items)) => match (items.len(), items.pop()) {
            (1, Some(Value::String(s))) => Ok(s),
            (0, _) => Err(invalid("prompt", "must not be empty")),
            (_, Some(Value::String(_))) => Err(GatewayError::unprocessable(
                ErrorCode::UnsupportedParameter,
                format!("prompt: the {provider} provider takes one prompt per request"),
            )),
            _ => Err(invalid("prompt", &format!("must be a string (token arrays are not supported by {provider})"))),
        },
        Some(_) => Err(invalid("prompt", "must be a string")),
        None => Err(invalid("prompt", "is required")),
    }
}

/// The URL of an `image_url` part (`{"url": ...}` or a bare string).
pub fn image_url(part: &Map<String, Value>) -> Option<&str> {
    let value = part.get("image_url")?;
    value.as_str().or_else(|| value.get("url").and_then(Value::as_str))
}

/// `(media type, base64 data)` of a `data:<type>;base64,<data>` URL.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let media_type = meta.split(';').next().filter(|m| !m.is_empty()).unwrap_or("application/octet-stream");
    Some((media_type, data))
}

/// One choice of an OpenAI answer.
pub struct OpenAiChoice {
    pub index: u64,
    pub text: Option<String>,
    pub tool_calls: Vec<Value>,
    pub finish_reason: Option<&'static str>,
}

/// A `chat.completion` (or, for the completions API, `text_completion`) body.
pub fn openai_answer(
    op: Operation,
    id: &str,
    model: &str,
    now_ms: u64,
    choices: Vec<OpenAiChoice>,
    usage: Option<Usage>,
) -> Value {
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|c| {
            if op == Operation::Completions {
                return json!({
                    "index": c.index,
                    "text": c.text.unwrap_or_default(),
                    "logprobs": null,
                    "finish_reason": c.finish_reason,
                });
            }
            let message = assistant_message(c.text, c.tool_calls);
            json!({"index": c.index, "message": message, "logprobs": null, "finish_reason": c.finish_reason})
        })
        .collect();
    let object = if op == Operation::Completions { "text_completion" } else { "chat.completion" };
    let mut answer = json!({"id": id, "object": object, "created": now_ms / 1000, "model": model, "choices": choices});
    if let (Some(usage), Some(a)) = (usage, answer.as_object_mut()) {
        a.insert("usage".into(), usage_json(usage));
    }
    answer
}

/// Writes OpenAI stream chunks: `chat.completion.chunk`, or `text_completion` chunks for the
/// completions API (which carry no role and no tool calls).
pub struct ChunkWriter {
    id: String,
    model: String,
    created: u64,
    text_completion: bool,
    /// What follows `"choices":[…]` in every chunk, `,"created":…,"id":…,"model":…,"object":…}`
    /// (serde_json's key order), built once per id and model: a content delta is then written
    /// without building a JSON tree.
    tail: Vec<u8>,
}

impl ChunkWriter {
    pub fn new(op: Operation, id: &str, model: &str, now_ms: u64) -> Self {
        let mut writer = ChunkWriter {
            id: id.to_string(),
            model: model.to_string(),
            created: now_ms / 1000,
            text_completion: op == Operation::Completions,
            tail: Vec::new(),
        };
        writer.name(None, None);
        writer
    }

    /// The origin's own id and model, once its stream says them.
    pub fn name(&mut self, id: Option<&str>, model: Option<&str>) {
        if let Some(id) = id {
            self.id = id.to_string();
        }
        if let Some(model) = model {
            self.model = model.to_string();
        }
        let object = if self.text_completion { "text_completion" } else { "chat.completion.chunk" };
        let mut tail = format!(",\"created\":{},\"id\":", self.created).into_bytes();
        write_str(&mut tail, &self.id);
        tail.extend_from_slice(b",\"model\":");
        write_str(&mut tail, &self.model);
        tail.extend_from_slice(format!(",\"object\":\"{object}\"}}").as_bytes());
        self.tail = tail;
    }

    /// `data: {"choices":<choices>,…}` and the blank line.
    fn write_with(&self, out: &mut Vec<u8>, choices: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(b"data: {\"choices\":");
        choices(out);
        out.extend_from_slice(&self.tail);
        out.extend_from_slice(b"\n\n");
    }

    fn write(&self, out: &mut Vec<u8>, choices: Value) {
        self.write_with(out, |out| out.extend_from_slice(&json_body(&choices)));
    }

    fn delta(&self, out: &mut Vec<u8>, index: u64, delta: Value, finish: Option<&str>) {
        self.write(out, json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]));
    }

    /// The opening chunk of a choice.
    pub fn role(&self, out: &mut Vec<u8>, index: u64) {
        if !self.text_completion {
            self.delta(out, index, json!({"role": "assistant", "content": ""}), None);
        }
    }

    /// A content delta (the chunk most streams are made of), written directly.
    pub fn text(&self, out: &mut Vec<u8>, index: u64, text: &str) {
        if text.is_empty() {
            return;
        }
        self.write_with(out, |out| {
            // Byte by byte, not through `format!`: this is the chunk most streams are made of.
            if self.text_completion {
                out.extend_from_slice(b"[{\"finish_reason\":null,\"index\":");
                write_u64(out, index);
                out.extend_from_slice(b",\"logprobs\":null,\"text\":");
                write_str(out, text);
                out.extend_from_slice(b"}]");
            } else {
                out.extend_from_slice(b"[{\"delta\":{\"content\":");
                write_str(out, text);
                out.extend_from_slice(b"},\"finish_reason\":null,\"index\":");
                write_u64(out, index);
                out.extend_from_slice(b",\"logprobs\":null}]");
            }
        });
    }

    /// One `delta.tool_calls[]` entry.
    pub fn tool_call(&self, out: &mut Vec<u8>, index: u64, call: Value) {
        if !self.text_completion {
            self.delta(out, index, json!({"tool_calls": [call]}), None);
        }
    }

    pub fn finish(&self, out: &mut Vec<u8>, index: u64, reason: &str) {
        if self.text_completion {
            self.write(out, json!([{"index": index, "text": "", "logprobs": null, "finish_reason": reason}]));
        } else {
            self.delta(out, index, json!({}), Some(reason));
        }
    }

    /// The final usage chunk (`choices: []`, as OpenAI sends with `include_usage`).
    pub fn usage(&self, out: &mut Vec<u8>, usage: Usage) {
        let object = if self.text_completion { "text_completion" } else { "chat.completion.chunk" };
        let chunk = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(usage),
        });
        sse::write_data(out, &chunk);
    }
}

/// The error chunk a client sees when the origin's stream fails mid-answer.
pub fn write_error_chunk(out: &mut Vec<u8>, message: &str, code: &str) {
    sse::write_data(out, &json!({"error": {"message": message, "type": "upstream_error", "code": code}}));
}

/// Watches an OpenAI-format stream on its way to an OpenAI client: events pass through as
/// they are, while usage is read from the final usage chunk (requested with
/// `stream_options.include_usage`) and a stream the origin cut short is closed with an error
/// event and `[DONE]` instead of just stopping.
#[derive(Debug, Default)]
pub struct StreamWatch {
    /// Drop the usage-only chunk (`choices: []`): the gateway asked the origin for it, the
    /// client did not.
    hide_usage: bool,
    usage: Option<Usage>,
    /// Content deltas seen: a lower bound on completion tokens if the stream is cut.
    deltas: u64,
    finished: bool,
    done: bool,
}

impl StreamWatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn hide_usage_chunk(mut self, hide: bool) -> Self {
        self.hide_usage = hide;
        self
    }

    /// Passes `event` through, noting its usage, content and end from `chunk` (the event's
    /// facts, read once by the caller, who may need them too). False when it hid the event.
    pub fn watch(&mut self, event: &SseEvent, chunk: Option<&ChunkFacts>, out: &mut Vec<u8>) -> bool {
        if event.data == "[DONE]" {
            self.done = true;
            sse::write_done(out);
            return true;
        }
        if let Some(chunk) = chunk {
            if let Some(usage) = chunk.usage {
                self.usage = Some(usage.into());
                let usage_only = chunk.choices.as_ref().is_none_or(ChoiceList::is_empty);
                if self.hide_usage && usage_only {
                    return false;
                }
            }
            let [first, rest] = chunk.choices.as_ref().map(ChoiceList::as_slices).unwrap_or_default();
            for choice in first.iter().chain(rest) {
                if choice.content_bytes > 0 || choice.text_bytes > 0 || choice.has_tool_calls {
                    self.deltas += 1;
                }
                if choice.finished {
                    self.finished = true;
                }
            }
        }
        edge_scan::sse::write_data(out, event.data.as_bytes());
        true
    }
}

impl StreamTranslate for StreamWatch {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        self.watch(event, ChunkFacts::parse(&event.data).as_ref(), out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if !self.finished {
            let error = serde_json::json!({"error": {"message": "origin stream ended before the answer was complete",
                "type": "upstream_error", "code": "origin_stream_cut"}});
            sse::write_data(out, &error);
        }
        sse::write_done(out);
    }

    fn usage(&self) -> Option<Usage> {
        // Without a usage chunk (cut stream, or an origin that ignores include_usage), the
        // content deltas seen are the best lower bound on what was generated.
        self.usage.or((self.deltas > 0).then_some(Usage { prompt_tokens: 0, completion_tokens: self.deltas }))
    }
}

/// Replays a whole `chat.completion` / `text_completion` body as the SSE stream OpenAI would
/// have sent (role, content, tool calls, finish reason, usage, `[DONE]`): for origins that
/// cannot stream and for cached answers.
pub fn completion_to_sse(op: Operation, body: &[u8]) -> Result<Vec<u8>> {
    let value = parse_json(body)?;
    let mut out = Vec::new();
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let created = value.get("created").cloned().unwrap_or(Value::from(0));
    let model = value.get("model").cloned().unwrap_or(Value::Null);
    let choices = value.get("choices").and_then(Value::as_array).cloned().unwrap_or_default();
    let chunk = |object: &str, choices: Value| serde_json::json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
    for choice in &choices {
        let index = choice.get("index").cloned().unwrap_or(Value::from(0));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        if op == Operation::Completions {
            let text = choice.get("text").cloned().unwrap_or(Value::from(""));
            let c = serde_json::json!([{"index": index, "text": text, "finish_reason": finish}]);
            sse::write_data(&mut out, &chunk("text_completion", c));
            continue;
        }
        let message = choice.get("message").cloned().unwrap_or_default();
        let role = message.get("role").cloned().unwrap_or(Value::from("assistant"));
        let c = serde_json::json!([{"index": index, "delta": {"role": role, "content": ""}, "finish_reason": null}]);
        sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
        if let Some(content) = message.get("content").filter(|c| !c.is_null()) {
            let c = serde_json::json!([{"index": index, "delta": {"content": content}, "finish_reason": null}]);
            sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let mut call = call.clone();
                    call["index"] = Value::from(i);
                    call
                })
                .collect();
            let c = serde_json::json!([{"index": index, "delta": {"tool_calls": calls}, "finish_reason": null}]);
            sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
        }
        let c = serde_json::json!([{"index": index, "delta": {}, "finish_reason": finish}]);
        sse::write_data(&mut out, &chunk("chat.completion.chunk", c));
    }
    if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
        let object = if op == Operation::Completions { "text_completion" } else { "chat.completion.chunk" };
        let mut last = chunk(object, Value::Array(Vec::new()));
        last["usage"] = usage.clone();
        sse::write_data(&mut out, &last);
    }
    sse::write_done(&mut out);
    Ok(out)
}

/// A whole OpenAI stream assembled into the answer it streams ([`StreamAnswer`] over an SSE
/// body): the tests' way to check the assembly against [`completion_to_sse`].
#[cfg(test)]
pub fn sse_to_completion(op: Operation, openai_sse: &[u8]) -> (Value, bool) {
    let mut answer = StreamAnswer::default();
    // Event by event from the parser's buffers, each read without a tree: a long answer is
    // thousands of small chunks.
    let mut add = |event: &mut SseEvent| {
        if let Some(chunk) = ChunkParts::parse(&event.data) {
            answer.add(&chunk);
        }
    };
    let mut parser = sse::SseParser::new();
    parser.push_each(openai_sse, &mut add);
    parser.finish_each(&mut add);
    answer.finish(op)
}

/// A whole OpenAI stream (`chat.completion.chunk` or `text_completion` chunks) assembled into
/// the answer it streams: per choice the role, content (or text), tool calls (ids, names and
/// argument fragments joined) and finish reason, plus id, model and usage. The inverse of
/// [`completion_to_sse`]: a streamed answer is kept for the cache, or guarded before it is
/// replayed, this way. Chunk by chunk: the stream pump adds the chunks it reads anyway, so a
/// kept stream is read once.
#[derive(Debug)]
pub struct StreamAnswer {
    id: Value,
    model: Value,
    created: Value,
    usage: Option<Value>,
    choices: Vec<AnswerChoice>,
    error: bool,
}

#[derive(Debug)]
struct AnswerChoice {
    index: u64,
    role: Option<Value>,
    text: String,
    has_text: bool,
    tool_calls: Vec<(u64, Map<String, Value>)>,
    finish: Value,
}

impl Default for StreamAnswer {
    fn default() -> Self {
        StreamAnswer {
            id: Value::Null,
            model: Value::Null,
            created: Value::from(0),
            usage: None,
            choices: Vec::new(),
            error: false,
        }
    }
}

impl StreamAnswer {
    pub fn add(&mut self, chunk: &ChunkParts) {
        if chunk.error.as_ref().is_some_and(|e| !e.is_null()) {
            self.error = true;
            return;
        }
        for (slot, value) in [(&mut self.id, &chunk.id), (&mut self.model, &chunk.model)] {
            if let (Value::Null, Some(value)) = (&slot, value) {
                *slot = value.clone();
            }
        }
        if let Some(c) = chunk.created.as_ref().filter(|c| c.is_u64()) {
            self.created = c.clone();
        }
        if let Some(u) = chunk.usage.as_ref().filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        // Slices, not `Option::iter().flatten()`: that adapter is a call per step where code
        // is built for size.
        for c in chunk.choices.as_deref().unwrap_or_default() {
            let choice = self.choice(c.index);
            if let Some(role) = c.role.as_ref().filter(|r| r.is_string()) {
                choice.role = Some(role.clone());
            }
            for text in [&c.content, &c.text].into_iter().flatten() {
                choice.text.push_str(text);
                choice.has_text = true;
            }
            for call in c.tool_calls.as_deref().unwrap_or_default() {
                let at = match choice.tool_calls.iter().position(|(i, _)| *i == call.index) {
                    Some(at) => at,
                    None => {
                        let mut fresh = Map::new();
                        fresh.insert("function".into(), json!({"name": "", "arguments": ""}));
                        choice.tool_calls.push((call.index, fresh));
                        choice.tool_calls.len() - 1
                    }
                };
                let entry = &mut choice.tool_calls[at].1;
                for (key, value) in [("id", &call.id), ("type", &call.kind)] {
                    if let Some(v) = value.as_ref().filter(|v| v.is_string()) {
                        entry.insert(key.into(), v.clone());
                    }
                }
                for (field, part) in [("name", &call.name), ("arguments", &call.arguments)] {
                    if let (Some(part), Some(Value::String(s))) =
                        (part, entry.get_mut("function").and_then(|f| f.get_mut(field)))
                    {
                        s.push_str(part);
                    }
                }
            }
            if let Some(finish) = c.finish_reason.as_ref().filter(|f| !f.is_null()) {
                choice.finish = finish.clone();
            }
        }
    }

    /// Adds a chunk that is only `text` for choice `index` (the pump's shortcut for a chunk
    /// like the last but for its text).
    pub fn add_text(&mut self, index: u64, text: &str) {
        let choice = self.choice(index);
        choice.text.push_str(text);
        choice.has_text = true;
    }

    fn choice(&mut self, index: u64) -> &mut AnswerChoice {
        let at = match self.choices.iter().position(|x| x.index == index) {
            Some(at) => at,
            None => {
                self.choices.push(AnswerChoice {
                    index,
                    role: None,
                    text: String::new(),
                    has_text: false,
                    tool_calls: Vec::new(),
                    finish: Value::Null,
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[at]
    }

    /// The answer, and whether the stream completed it (every choice finished, no error event).
    pub fn finish(self, op: Operation) -> (Value, bool) {
        let complete = !self.error && !self.choices.is_empty() && self.choices.iter().all(|c| !c.finish.is_null());
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|c| {
                if op == Operation::Completions {
                    return json!({"index": c.index, "text": c.text, "logprobs": null, "finish_reason": c.finish});
                }
                let text = (c.has_text || c.tool_calls.is_empty()).then_some(c.text);
                let calls = c.tool_calls.into_iter().map(|(_, call)| Value::Object(call)).collect();
                let mut message = assistant_message(text, calls);
                if let (Some(role), Some(m)) = (c.role, message.as_object_mut()) {
                    m.insert("role".into(), role);
                }
                json!({"index": c.index, "message": message, "logprobs": null, "finish_reason": c.finish})
            })
            .collect();
        let object = if op == Operation::Completions { "text_completion" } else { "chat.completion" };
        let mut answer =
            json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        if let (Some(usage), Some(a)) = (self.usage, answer.as_object_mut()) {
            a.insert("usage".into(), usage);
        }
        (answer, complete)
    }
}

/// `(id, name, arguments as a JSON object)` of an OpenAI assistant tool call.
pub fn parse_tool_call<'a>(call: &'a Value, path: &str) -> Result<(&'a str, &'a str, Value)> {
    let id = call.get("id").and_then(Value::as_str).ok_or_else(|| invalid(&format!("{path}.id"), "is required"))?;
    let function = call.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{path}.function.name"), "is required"))?;
    let input = match function.and_then(|f| f.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(other) => other.clone(),
    };
    if !input.is_object() {
        return Err(invalid(&format!("{path}.function.arguments"), "must be a JSON object encoded as a string"));
    }
    Ok((id, name, input))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer's usage is what its tree says, whichever reading answers (by hand, or the
    /// tree of its `usage` where that one is not sure); a body that is not a JSON object is a
    /// 502 naming why.
    #[test]
    fn answer_usage_is_the_trees() {
        for body in [
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#,
            r#"{"usage":{"prompt_tokens":1e2,"completion_tokens":7}}"#,
            r#"{"\u0075sage":{"prompt_tokens":5},"x":"\ud83d\ude00"}"#,
            r#"{"usage":"none"}"#,
            r#"{"id":"x"}"#,
        ] {
            let tree: Value = serde_json::from_str(body).unwrap();
            assert_eq!(answer_usage(body.as_bytes()).unwrap(), openai_usage(&tree), "{body}");
        }
        for (body, why) in
            [("[1]", "not a JSON object"), (r#"{"usage":{}"#, "not valid JSON"), ("\u{ff}", "not valid JSON")]
        {
            let e = answer_usage(body.as_bytes()).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code.as_str()), (502, "origin_bad_response"), "{body}");
            assert!(e.message.contains(why), "{body}: {}", e.message);
        }
    }

    /// Content deltas written directly are byte for byte the chunks a JSON tree gave, before
    /// and after the origin names itself (ids and models with characters to escape).
    #[test]
    fn direct_content_chunks_match_the_tree_built_ones() {
        for op in [Operation::Chat, Operation::Completions] {
            let mut writer = ChunkWriter::new(op, "msg_\"1\"", "m", 1_700_000_000_123);
            for named in [false, true] {
                if named {
                    writer.name(Some("id\\2"), Some("claude-ü"));
                }
                for (index, text) in [(0, "hi"), (3, "quote \" line\n tab\t é 🚀"), (1, "\u{1}")] {
                    let mut direct = Vec::new();
                    writer.text(&mut direct, index, text);
                    let object = if op == Operation::Completions { "text_completion" } else { "chat.completion.chunk" };
                    let choice = if op == Operation::Completions {
                        json!({"index": index, "text": text, "logprobs": null, "finish_reason": null})
                    } else {
                        json!({"index": index, "delta": {"content": text}, "logprobs": null, "finish_reason": null})
                    };
                    let chunk = json!({"id": writer.id, "object": object, "created": 1_700_000_000u64,
                        "model": writer.model, "choices": [choice]});
                    let mut tree = Vec::new();
                    sse::write_data(&mut tree, &chunk);
                    assert_eq!(String::from_utf8(direct).unwrap(), String::from_utf8(tree).unwrap());
                }
            }
        }
    }

    #[test]
    fn embeddings_in_base64_are_little_endian_f32s() {
        let answer = br#"{"object":"list","data":[{"object":"embedding","embedding":[1.0,-2.5,0.1],"index":0},
            {"object":"embedding","embedding":"AACAPw==","index":1}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}"#;
        let out: Value = serde_json::from_slice(&embeddings_to_base64(answer).unwrap()).unwrap();
        let first = STANDARD.decode(out["data"][0]["embedding"].as_str().unwrap()).unwrap();
        let floats: Vec<f32> = first.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(floats, [1.0, -2.5, 0.1]);
        assert_eq!(out["data"][0]["embedding"], "AACAPwAAIMDNzMw9");
        assert_eq!(out["data"][1]["embedding"], "AACAPw==", "already base64: kept");
        assert_eq!(out["usage"]["total_tokens"], 1);
        // Nothing to convert: the bytes are passed on unchanged.
        let b64 = br#"{"data":[{"embedding":"AACAPw=="}]}"#;
        assert_eq!(embeddings_to_base64(b64).unwrap(), b64.to_vec());
        assert_eq!(embeddings_to_base64(b"{}").unwrap(), b"{}".to_vec());
        assert_eq!(embeddings_to_base64(br#"{"data":[{"embedding":["x"]}]}"#).unwrap_err().code, "origin_bad_response");
        assert_eq!(embeddings_to_base64(b"nope").unwrap_err().code, "origin_bad_response");
        let mut body = Map::new();
        assert!(!wants_base64(&body));
        body.insert("encoding_format".into(), json!("base64"));
        assert!(wants_base64(&body));
    }

    /// A stream assembled back into its answer is the answer (tool calls joined by index).
    #[test]
    fn sse_to_completion_inverts_the_replay() {
        let answer = json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        let sse = completion_to_sse(Operation::Chat, &serde_json::to_vec(&answer).unwrap()).unwrap();
        let (back, complete) = sse_to_completion(Operation::Chat, &sse);
        assert!(complete);
        assert_eq!(back["choices"][0]["message"]["content"], "hi there");
        assert_eq!(back["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(back["usage"]["total_tokens"], 3);
        let cut = &sse[..sse.len() / 2];
        assert!(!sse_to_completion(Operation::Chat, cut).1);
    }
}
