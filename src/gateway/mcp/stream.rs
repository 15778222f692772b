//! An upstream's answer streamed through to the client: the pipeline's pump drives this stage
//! chunk by chunk (`pipeline::stream::Stage::Mcp`), so a tool's progress notifications reach
//! the client as they happen and nothing is held longer than one SSE event.
//!
//! * **SSE answers**: each event is read as it completes. Notifications and other messages go
//!   out unchanged; the response message gets the result guardrails (redact, or deny: the
//!   result becomes a JSON-RPC error) and, for a modern client of a legacy upstream,
//!   `resultType`. Event ids and `retry` fields are dropped: the gateway does not offer stream
//!   resumption, so it must not invite it. A stream that ends without an answer gets a
//!   JSON-RPC error naming the server.
//! * **JSON answers**: passed through byte for byte as they arrive (a bounded copy is kept to
//!   read the outcome for the log) — unless the answer must change (result guardrails,
//!   `resultType`), which needs the whole message: then it is held, bounded, and rewritten.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::gateway::error::ErrorCode;
use crate::gateway::features::guard;
use crate::gateway::mcp::config::McpServer;
use crate::gateway::mcp::jsonrpc::{self, Answer, FORBIDDEN, UPSTREAM_ERROR};
use crate::gateway::wire::json::value_from_slice;
use crate::gateway::wire::sse::SseParser;

/// Keys whose strings the result guardrails leave alone (identifiers, types, binary data).
pub const RESULT_SKIP: &[&str] = &["_meta", "type", "mimeType", "uri", "data", "blob", "resultType", "name"];
/// How much of a passed-through JSON answer is kept to read its outcome.
const SIDE_COPY: usize = 256 << 10;

/// How a streamed answer ended, for the log line and usage (never any content).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McpOutcome {
    /// Bytes sent to the client.
    pub bytes: u64,
    /// The answer to the request was seen.
    pub answered: bool,
    /// The result said `isError: true` (the tool failed).
    pub is_error: bool,
    /// The answer was a JSON-RPC error with this code.
    pub code: Option<i64>,
    /// Spans the result guardrails redacted.
    pub redacted: u32,
    /// The result guardrails withheld the result.
    pub denied: bool,
}

enum Mode {
    Sse(SseParser),
    /// `hold`: the answer is rewritten at the end (else passed through, `held` is a side copy).
    Json {
        held: Vec<u8>,
        hold: bool,
        overflow: bool,
    },
}

/// The pump stage for one MCP answer.
pub struct McpStream {
    server: Arc<McpServer>,
    id: Value,
    mode: Mode,
    /// Apply the server's guardrails to the result.
    guard_result: bool,
    /// Add `resultType: "complete"` to results that lack it (a modern client, legacy upstream).
    result_type: bool,
    limit: usize,
    outcome: McpOutcome,
}

impl McpStream {
    /// `sse`: the upstream answered `text/event-stream`; `guard_result`: apply the server's
    /// result guardrails; `result_type`: the client speaks 2026-07-28 and the upstream does not.
    pub fn new(
        server: Arc<McpServer>,
        id: Value,
        sse: bool,
        guard_result: bool,
        result_type: bool,
        limit: usize,
    ) -> Self {
        let guard_result = guard_result && server.guardrails.output;
        let mode = if sse {
            Mode::Sse(SseParser::new())
        } else {
            Mode::Json { held: Vec::new(), hold: guard_result || result_type, overflow: false }
        };
        McpStream { server, id, mode, guard_result, result_type, limit, outcome: McpOutcome::default() }
    }

    pub fn outcome(&self) -> McpOutcome {
        self.outcome
    }

    /// Feeds upstream bytes; appends what the client gets now.
    pub fn bytes(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        match &mut self.mode {
            Mode::Sse(parser) => {
                for event in parser.push(input) {
                    self.event(&event.data, out);
                }
            }
            Mode::Json { held, hold, overflow } => {
                if !*hold {
                    out.extend_from_slice(input);
                }
                let room = if *hold { self.limit } else { SIDE_COPY };
                if held.len() + input.len() > room {
                    *overflow = true;
                } else if !*overflow {
                    held.extend_from_slice(input);
                }
            }
        }
        self.outcome.bytes += (out.len() - start) as u64;
    }

    /// The upstream body ended (or broke): flush, and make sure the client got an answer.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        match std::mem::replace(&mut self.mode, Mode::Sse(SseParser::new())) {
            Mode::Sse(mut parser) => {
                for event in parser.finish() {
                    self.event(&event.data, out);
                }
                if !self.outcome.answered {
                    let e = self.failure("ended its stream without an answer");
                    write_event(out, &e);
                }
            }
            Mode::Json { held, hold, overflow } => {
                let parsed = (!overflow).then(|| value_from_slice(&held).ok()).flatten();
                match (hold, parsed) {
                    (true, Some(mut message)) => {
                        self.answer(&mut message);
                        out.extend_from_slice(&serde_json::to_vec(&message).unwrap_or_default());
                    }
                    (true, None) => {
                        let what = if overflow {
                            "sent an answer larger than the gateway holds"
                        } else {
                            "sent an answer that is not JSON"
                        };
                        out.extend_from_slice(&serde_json::to_vec(&self.failure(what)).unwrap_or_default());
                    }
                    (false, Some(message)) => self.note(&message),
                    // Passed through already; too big (or broken) to read the outcome from.
                    (false, None) => self.outcome.answered = true,
                }
            }
        }
        self.outcome.bytes += (out.len() - start) as u64;
    }

    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        if data.is_empty() {
            return; // a priming event (an id for resumption the gateway does not offer)
        }
        match data.parse::<Value>() {
            Ok(mut message) => {
                if jsonrpc::answer_of(&message).is_some() {
                    self.answer(&mut message);
                }
                write_event(out, &message);
            }
            Err(_) => {
                // Not JSON: passed on as it came (one data line per line).
                out.extend_from_slice(b"event: message\n");
                for line in data.split('\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                out.push(b'\n');
            }
        }
    }

    /// Rewrites the answer as needed and records its outcome.
    fn answer(&mut self, message: &mut Value) {
        if self.guard_result {
            if let Some(result) = message.get_mut("result") {
                match guard::apply_json(
                    &self.server.guardrails,
                    result,
                    ErrorCode::OutputDenied,
                    "the tool result",
                    RESULT_SKIP,
                ) {
                    Ok(report) => self.outcome.redacted += report.redacted.iter().map(|(_, n)| n).sum::<u32>(),
                    Err(e) => {
                        self.outcome.denied = true;
                        let id = message.get("id").cloned().unwrap_or(Value::Null);
                        *message = json!({"jsonrpc": "2.0", "id": id, "error": {"code": FORBIDDEN, "message": e.message,
                                          "data": {"type": e.kind, "code": e.code.as_str(), "server": self.server.name}}});
                    }
                }
            }
        }
        if self.result_type {
            if let Some(Value::Object(result)) = message.get_mut("result") {
                result.entry("resultType").or_insert_with(|| json!("complete"));
            }
        }
        self.note(message);
    }

    fn note(&mut self, message: &Value) {
        match jsonrpc::answer_of(message) {
            Some(Answer::Result { is_error }) => {
                self.outcome.answered = true;
                self.outcome.is_error = is_error;
            }
            Some(Answer::Error { code }) => {
                self.outcome.answered = true;
                self.outcome.code = Some(code);
            }
            None => {}
        }
    }

    /// How long the upstream may send nothing in the middle of its answer (its `timeout_ms`).
    pub fn idle_timeout_ms(&self) -> u64 {
        self.server.timeout_ms
    }

    /// The gateway ended the upstream's answer (an idle upstream, an oversized event): the
    /// client gets a JSON-RPC error naming the server, unless it has its answer already or
    /// part of a passed-through JSON answer (which nothing can mend).
    pub fn fail(&mut self, what: &str, out: &mut Vec<u8>) {
        if self.outcome.answered {
            return;
        }
        let sse = matches!(self.mode, Mode::Sse(_));
        let untouched = match &self.mode {
            Mode::Sse(_) => true,
            Mode::Json { held, hold, .. } => *hold || (held.is_empty() && self.outcome.bytes == 0),
        };
        if !untouched {
            self.outcome.answered = true;
            self.outcome.code = Some(UPSTREAM_ERROR);
            return;
        }
        let e = self.failure(what);
        let start = out.len();
        if sse {
            write_event(out, &e);
        } else {
            out.extend_from_slice(&serde_json::to_vec(&e).unwrap_or_default());
        }
        self.outcome.bytes += (out.len() - start) as u64;
    }

    fn failure(&mut self, what: &str) -> Value {
        self.outcome.answered = true;
        self.outcome.code = Some(UPSTREAM_ERROR);
        json!({"jsonrpc": "2.0", "id": self.id, "error": {"code": UPSTREAM_ERROR,
               "message": format!("MCP server \"{}\" {what}", self.server.name), "data": {"server": self.server.name}}})
    }
}

fn write_event(out: &mut Vec<u8>, message: &Value) {
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(&serde_json::to_vec(message).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::check::Issues;
    use crate::gateway::mcp::config::check_section;

    fn server(guardrails: Value) -> Arc<McpServer> {
        let mut issues = Issues::default();
        let c = check_section(
            &json!([{"name": "files", "url": "http://f/mcp", "guardrails": guardrails}]),
            None,
            &[],
            &mut issues,
        );
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        c.servers[0].clone()
    }

    fn run(stage: &mut McpStream, input: &[u8], split: usize) -> Vec<u8> {
        let mut out = Vec::new();
        stage.bytes(&input[..split], &mut out);
        stage.bytes(&input[split..], &mut out);
        stage.finish(&mut out);
        out
    }

    fn events(out: &[u8]) -> Vec<Value> {
        let mut p = SseParser::new();
        let mut ev = p.push(out);
        ev.extend(p.finish());
        ev.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect()
    }

    const PROGRESS: &str =
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1,"total":2}}"#;

    #[test]
    fn sse_passes_notifications_and_guards_the_result_at_any_split() {
        let s = server(json!({"redact": ["email"], "output": true}));
        let input = format!(
            "id: 1\ndata: \n\nid: 2\nevent: message\ndata: {PROGRESS}\n\nretry: 10\nevent: message\ndata: {}\n\n",
            json!({"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"mail ann@example.com"}]}})
        );
        for split in 0..input.len() {
            let mut stage = McpStream::new(s.clone(), json!(7), true, true, false, 1 << 20);
            let out = run(&mut stage, input.as_bytes(), split);
            let text = String::from_utf8(out.clone()).unwrap();
            assert!(!text.contains("id:") && !text.contains("retry:"), "{text}");
            let ev = events(&out);
            assert_eq!(ev.len(), 2, "{text}");
            assert_eq!(ev[0], serde_json::from_str::<Value>(PROGRESS).unwrap());
            assert_eq!(ev[1]["result"]["content"][0]["text"], "mail [EMAIL]");
            let o = stage.outcome();
            assert_eq!((o.answered, o.is_error, o.redacted, o.bytes), (true, false, 1, out.len() as u64));
        }
    }

    /// An upstream that starts its SSE answer and then stalls: the pump's idle timeout (the
    /// server's `timeout_ms`) ends the client's stream with a JSON-RPC error naming the server.
    #[test]
    fn a_stalled_upstream_stream_ends_with_an_error_after_its_timeout() {
        use crate::gateway::pipeline::stream::{Stage, StreamPump};
        let s = server(json!({}));
        let stage = McpStream::new(s.clone(), json!(9), true, false, false, 1 << 20);
        let mut pump = StreamPump::new(vec![Stage::Mcp(stage)]).with_idle_timeout(s.timeout_ms);
        assert_eq!(pump.idle_timeout_ms(), s.timeout_ms);
        let mut out = pump.chunk(format!("event: message\ndata: {PROGRESS}\n\n").as_bytes());
        out.extend(pump.idle());
        assert!(pump.is_finished(), "the host cancels the upstream");
        let ev = events(&out);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!((ev[1]["id"].clone(), ev[1]["error"]["code"].clone()), (json!(9), json!(UPSTREAM_ERROR)));
        assert_eq!(ev[1]["error"]["data"]["server"], "files");
        assert!(ev[1]["error"]["message"].as_str().unwrap().contains("sent nothing"), "{ev:?}");
        // A JSON answer that never started gets the error as its body.
        let stage = McpStream::new(s.clone(), json!(1), false, false, false, 1 << 20);
        let mut pump = StreamPump::new(vec![Stage::Mcp(stage)]);
        let body: Value = serde_json::from_slice(&pump.idle()).unwrap();
        assert_eq!(body["error"]["code"], json!(UPSTREAM_ERROR));
    }

    #[test]
    fn a_denied_result_becomes_an_error_and_a_cut_stream_gets_one() {
        let s = server(json!({"deny": [{"id": "secret", "pattern": "TOPSECRET"}], "output": true}));
        let input = format!(
            "data: {}\n\n",
            json!({"jsonrpc":"2.0","id":"a","result":{"content":[{"type":"text","text":"TOPSECRET plans"}]}})
        );
        let mut stage = McpStream::new(s.clone(), json!("a"), true, true, false, 1 << 20);
        let ev = events(&run(&mut stage, input.as_bytes(), 3));
        assert_eq!(ev[0]["error"]["code"], FORBIDDEN);
        assert_eq!(ev[0]["error"]["data"]["code"], "output_denied");
        assert!(!ev[0].to_string().contains("TOPSECRET plans"));
        assert!(stage.outcome().denied);

        let mut stage = McpStream::new(s, json!(3), true, true, false, 1 << 20);
        let ev = events(&run(&mut stage, format!("data: {PROGRESS}\n\n").as_bytes(), 5));
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1]["id"], 3);
        assert_eq!(ev[1]["error"]["message"], "MCP server \"files\" ended its stream without an answer");
        assert_eq!(stage.outcome().code, Some(UPSTREAM_ERROR));
    }

    #[test]
    fn json_passes_through_unless_it_must_change() {
        let s = server(json!({}));
        let body = json!({"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}).to_string();
        let mut stage = McpStream::new(s.clone(), json!(1), false, true, false, 1 << 20);
        let mut first = Vec::new();
        stage.bytes(&body.as_bytes()[..10], &mut first);
        assert_eq!(first, &body.as_bytes()[..10], "streamed as it arrives");
        let mut rest = Vec::new();
        stage.bytes(&body.as_bytes()[10..], &mut rest);
        stage.finish(&mut rest);
        assert_eq!([first, rest].concat(), body.as_bytes());
        assert!(stage.outcome().is_error);

        // A modern client of a legacy upstream: resultType is added (the answer is held).
        let mut stage = McpStream::new(s.clone(), json!(1), false, true, true, 1 << 20);
        let out: Value = serde_json::from_slice(&run(&mut stage, body.as_bytes(), 4)).unwrap();
        assert_eq!(out["result"]["resultType"], "complete");

        let mut stage = McpStream::new(s, json!(1), false, true, true, 8);
        let out: Value = serde_json::from_slice(&run(&mut stage, body.as_bytes(), 4)).unwrap();
        assert_eq!(out["error"]["code"], UPSTREAM_ERROR, "over the limit: an error, not a truncated answer");
    }
}
