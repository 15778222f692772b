//! Streams: chat chunks → Responses events (`ChatStreamToResponses`), and a passthrough
//! origin's own event stream watched on its way (`ResponsesWatch`).

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::gateway::dialect::responses::render::{function_output, item_id, message_output, response_usage, status_of};
use crate::gateway::dialect::responses::turn::Head;
use crate::gateway::types::Usage;
use crate::gateway::util::order;
use crate::gateway::wire::openai::openai_usage;
use crate::gateway::wire::sse::{self, SseEvent};
use crate::gateway::wire::stream::StreamTranslate;

fn write(out: &mut Vec<u8>, seq: &mut u64, mut event: Value) {
    event["sequence_number"] = Value::from(*seq);
    *seq += 1;
    let name = event.get("type").and_then(Value::as_str).unwrap_or("message").to_string();
    sse::write_event(out, &name, &event);
}

struct OpenText {
    output_index: usize,
    id: String,
    text: String,
}

struct OpenCall {
    /// Chat `tool_calls[].index`.
    chat_index: u64,
    output_index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    done: bool,
}

/// Chat `chat.completion.chunk` stream → Responses events.
pub struct ChatStreamToResponses {
    head: Head,
    model: String,
    seq: u64,
    started: bool,
    /// Closed items with their output index.
    output: Vec<(usize, Value)>,
    text: Option<OpenText>,
    calls: Vec<OpenCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    ended: bool,
    finished: Rc<RefCell<Option<Value>>>,
}

impl ChatStreamToResponses {
    /// `head` is the request's (id and echo fields); `finished` receives the final response.
    pub fn new(head: Head, model: &str, finished: Rc<RefCell<Option<Value>>>) -> Self {
        ChatStreamToResponses {
            head,
            model: model.to_string(),
            seq: 0,
            started: false,
            output: Vec::new(),
            text: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            ended: false,
            finished,
        }
    }

    fn next_output_index(&self) -> usize {
        self.output.len() + usize::from(self.text.is_some()) + self.calls.iter().filter(|c| !c.done).count()
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let response = self.head.response_object(&self.model, "in_progress", Vec::new(), None);
        write(out, &mut self.seq, json!({"type": "response.created", "response": response}));
        let response = self.head.response_object(&self.model, "in_progress", Vec::new(), None);
        write(out, &mut self.seq, json!({"type": "response.in_progress", "response": response}));
    }

    fn text(&mut self, out: &mut Vec<u8>, delta: &str) {
        if self.text.is_none() {
            let output_index = self.next_output_index();
            let id = item_id("msg", &self.head.id, output_index);
            let item =
                json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            write(
                out,
                &mut self.seq,
                json!({"type": "response.output_item.added", "output_index": output_index, "item": item}),
            );
            write(
                out,
                &mut self.seq,
                json!({"type": "response.content_part.added", "item_id": id, "output_index": output_index,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.text = Some(OpenText { output_index, id, text: String::new() });
        }
        let Some(open) = self.text.as_mut() else { return };
        open.text.push_str(delta);
        let event = json!({"type": "response.output_text.delta", "item_id": open.id, "output_index": open.output_index,
            "content_index": 0, "delta": delta, "logprobs": []});
        write(out, &mut self.seq, event);
    }

    fn close_text(&mut self, out: &mut Vec<u8>) {
        let Some(open) = self.text.take() else { return };
        let (id, index, text) = (open.id, open.output_index, open.text);
        write(
            out,
            &mut self.seq,
            json!({"type": "response.output_text.done", "item_id": id, "output_index": index, "content_index": 0,
                "text": text, "logprobs": []}),
        );
        write(
            out,
            &mut self.seq,
            json!({"type": "response.content_part.done", "item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
        );
        let item = message_output(id, &text, "completed");
        write(
            out,
            &mut self.seq,
            json!({"type": "response.output_item.done", "output_index": index, "item": item.clone()}),
        );
        self.output.push((index, item));
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, call: &Value) {
        let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let position = self.calls.iter().position(|c| c.chat_index == chat_index && !c.done);
        let position = match position {
            Some(p) => p,
            None => {
                self.close_text(out);
                let output_index = self.next_output_index();
                let id = item_id("fc", &self.head.id, self.calls.len());
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{}", self.calls.len()), str::to_string);
                let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
                let item = function_output(id.clone(), &call_id, &name, "", "in_progress");
                write(
                    out,
                    &mut self.seq,
                    json!({"type": "response.output_item.added", "output_index": output_index, "item": item}),
                );
                self.calls.push(OpenCall {
                    chat_index,
                    output_index,
                    id,
                    call_id,
                    name,
                    arguments: String::new(),
                    done: false,
                });
                self.calls.len() - 1
            }
        };
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default();
        if arguments.is_empty() {
            return;
        }
        let open = &mut self.calls[position];
        open.arguments.push_str(arguments);
        let event = json!({"type": "response.function_call_arguments.delta", "item_id": open.id,
            "output_index": open.output_index, "delta": arguments});
        write(out, &mut self.seq, event);
    }

    fn close_calls(&mut self, out: &mut Vec<u8>) {
        let mut closing: Vec<usize> = (0..self.calls.len()).filter(|&i| !self.calls[i].done).collect();
        order::sort_by_key(&mut closing, |&i| self.calls[i].output_index);
        for i in closing {
            let call = &mut self.calls[i];
            call.done = true;
            let (id, index) = (call.id.clone(), call.output_index);
            let item = function_output(id.clone(), &call.call_id, &call.name, &call.arguments, "completed");
            let arguments = call.arguments.clone();
            write(
                out,
                &mut self.seq,
                json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": index,
                    "arguments": arguments}),
            );
            write(
                out,
                &mut self.seq,
                json!({"type": "response.output_item.done", "output_index": index, "item": item.clone()}),
            );
            self.output.push((index, item));
        }
    }

    /// The closed items in output order.
    fn output(&self) -> Vec<Value> {
        let mut items = self.output.clone();
        order::sort_by_key(&mut items, |(index, _)| *index);
        items.into_iter().map(|(_, item)| item).collect()
    }

    fn close_items(&mut self, out: &mut Vec<u8>) {
        self.close_text(out);
        self.close_calls(out);
    }

    /// The normal end: every item closed, then `response.completed` (or `.incomplete`).
    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_items(out);
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        let usage = Some(self.usage.unwrap_or_default());
        let mut response = self.head.response_object(&self.model, status, self.output(), usage);
        if let Some(reason) = incomplete {
            response["incomplete_details"] = json!({"reason": reason});
        }
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        write(out, &mut self.seq, json!({"type": kind, "response": response.clone()}));
        *self.finished.borrow_mut() = Some(response);
        self.ended = true;
    }

    /// An `error` event after the stream's end (the gateway stopped it at a cap).
    pub fn error_event(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        write(out, &mut self.seq, json!({"type": "error", "code": code, "message": message, "param": null}));
    }

    fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        self.start(out);
        write(out, &mut self.seq, json!({"type": "error", "code": code, "message": message, "param": null}));
        let mut response = self.head.response_object(&self.model, "failed", self.output(), self.usage);
        response["error"] = json!({"code": "server_error", "message": message});
        write(out, &mut self.seq, json!({"type": "response.failed", "response": response}));
        self.ended = true;
    }
}

impl StreamTranslate for ChatStreamToResponses {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if event.data.trim() == "[DONE]" {
            if self.finish_reason.is_some() {
                self.end(out);
            } else {
                self.fail(out, "origin_stream_cut", "origin stream ended before the answer was complete");
            }
            return;
        }
        let Ok(chunk) = event.data.parse::<Value>() else { return };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("origin error");
            let code = error.get("code").and_then(Value::as_str).unwrap_or("origin_stream_error");
            self.fail(out, code, message);
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()).and_then(|_| openai_usage(&chunk)) {
            self.usage = Some(usage);
        }
        if self.head.id.is_empty() {
            self.head.id = chunk
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| "resp_gateway".into(), |id| format!("resp_{id}"));
        }
        self.start(out);
        let choices = chunk.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        // A response has one candidate: follow choice 0.
        for choice in choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
            let delta = choice.get("delta");
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                self.text(out, text);
            }
            for call in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
                self.tool_call(out, call);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
                self.close_items(out);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.finish_reason.is_some() {
            // A finished answer whose `[DONE]` never came: close it normally.
            self.end(out);
        } else {
            self.fail(out, "origin_stream_cut", "origin stream ended before the answer was complete");
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// A passthrough origin's Responses event stream on its way to the client: events pass as they
/// are; usage and the final response are read from the terminal event, and a stream cut
/// before one gets an `error` event.
pub struct ResponsesWatch {
    usage: Option<Usage>,
    /// Output deltas seen: a lower bound on output tokens if the stream is cut.
    deltas: u64,
    last_seq: Option<u64>,
    ended: bool,
    finished: Rc<RefCell<Option<Value>>>,
}

impl ResponsesWatch {
    pub fn new(finished: Rc<RefCell<Option<Value>>>) -> Self {
        ResponsesWatch { usage: None, deltas: 0, last_seq: None, ended: false, finished }
    }
}

impl StreamTranslate for ResponsesWatch {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if let Ok(data) = event.data.parse::<Value>() {
            self.last_seq = data.get("sequence_number").and_then(Value::as_u64).or(self.last_seq);
            let kind = data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or_default();
            match kind {
                "response.output_text.delta" | "response.function_call_arguments.delta" => self.deltas += 1,
                "response.completed" | "response.incomplete" | "response.failed" => {
                    self.ended = true;
                    if let Some(response) = data.get("response") {
                        self.usage = response_usage(response).or(self.usage);
                        if kind != "response.failed" {
                            *self.finished.borrow_mut() = Some(response.clone());
                        }
                    }
                }
                "error" => self.ended = true,
                _ => {}
            }
        }
        if let Some(name) = &event.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        for line in event.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let seq = self.last_seq.map_or(0, |s| s + 1);
        let event = json!({"type": "error", "code": "origin_stream_cut", "param": null, "sequence_number": seq,
            "message": "origin stream ended before the answer was complete"});
        sse::write_event(out, "error", &event);
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.or((self.deltas > 0).then_some(Usage { prompt_tokens: 0, completion_tokens: self.deltas }))
    }
}
