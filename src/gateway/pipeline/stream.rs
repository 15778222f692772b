//! Driving a translated stream: the host feeds the origin's body chunks in as they arrive and
//! writes out what comes back. Parsing and translation stay here, in the core.
//!
//! A pump is a chain of stages, each an SSE parser plus a translator; stage N's output is
//! stage N+1's input. That composes, e.g., Gemini → OpenAI chunks → Anthropic events for an
//! Anthropic client of a Gemini endpoint, with each translator written once.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde_json::json;

use crate::gateway::dialect::ClientStream;
use crate::gateway::error::ErrorCode;
use crate::gateway::features::usage::Price;
use crate::gateway::mcp::{McpOutcome, McpStream};
use crate::gateway::providers::{ProviderStream, StreamDecoder};
use crate::gateway::types::Usage;
use crate::gateway::wire::openai::{StreamAnswer, StreamWatch};
use crate::gateway::wire::sse::{self, SseEvent, SseParser, MAX_EVENT_BYTES};
use crate::gateway::wire::stream::StreamTranslate;
use edge_scan::chunk::{ChoiceFacts, ChoiceList, ChunkFacts, ChunkParts, FactsReader};

/// One stage of a pump: the origin's stream watched or translated into OpenAI chunks, or
/// OpenAI chunks translated into the client's events. An enum: no dynamic dispatch per chunk.
pub enum Stage {
    /// An OpenAI-format stream passed through, watched for usage and a clean end.
    Watch(StreamWatch),
    /// A provider's own stream format into OpenAI chunks.
    Provider(ProviderStream),
    /// OpenAI chunks into the client's dialect.
    Client(ClientStream),
    /// An MCP server's answer (SSE or JSON) on its way to the client. It reads bytes, not
    /// events (a JSON answer is not an event stream), so the pump hands it the raw chunks.
    Mcp(McpStream),
}

impl StreamTranslate for Stage {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match self {
            Stage::Watch(t) => t.event(event, out),
            Stage::Provider(t) => t.event(event, out),
            Stage::Client(t) => t.event(event, out),
            Stage::Mcp(_) => {}
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Stage::Watch(t) => t.finish(out),
            Stage::Provider(t) => t.finish(out),
            Stage::Client(t) => t.finish(out),
            Stage::Mcp(t) => t.finish(out),
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            Stage::Watch(t) => t.usage(),
            Stage::Provider(t) => t.usage(),
            Stage::Client(t) => t.usage(),
            Stage::Mcp(_) => None,
        }
    }
}

/// What a finished (or abandoned) stream tells the after-response work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// From the origin's usage events; partial (what was seen) if the stream did not complete.
    pub usage: Option<Usage>,
    /// What the gateway counted itself: the prompt estimate and the generated text seen (about
    /// 4 bytes per token). Accounting charges it when the origin's own usage is missing or the
    /// stream did not complete (`usage::charged_usage`).
    pub estimated: Usage,
    /// The origin's body ended (cleanly or cut) and the client's stream was closed: false when
    /// the client went away first, or the gateway stopped the stream (see `stopped`). Hosts
    /// cancel the origin request when it is false.
    pub completed: bool,
    /// Why the gateway ended the stream itself, if it did (a budget or token cap, an oversized
    /// origin event, an idle origin).
    pub stopped: Option<ErrorCode>,
    /// For an MCP answer: how it ended (bytes, outcome).
    pub mcp: Option<McpOutcome>,
}

/// A cap on one stream: the budget (tokens, nano-USD) it may still use. When its running usage
/// (origin-reported, else the gateway's count) crosses either, the pump ends the client's
/// stream the dialect's normal way plus an error event naming the cap, and the host cancels
/// the origin request.
#[derive(Debug, Clone)]
pub struct StreamCap {
    /// Tokens the stream may use in all (prompt included), and what the client is told when
    /// it crosses them (`rate_limit_exceeded`).
    pub tokens: Option<(u64, String)>,
    /// Nano-USD at `price`, and the message (`budget_exceeded`).
    pub cost_nusd: Option<(u64, String)>,
    pub price: Option<Price>,
}

/// Running count of an OpenAI-format stream (the first stage's output): what it generated,
/// the origin's usage if reported, and what is needed to close it (id, model, open choices).
#[derive(Debug, Default)]
struct Meter {
    /// For a translated stream: its events (the first stage's output), read back.
    parser: SseParser,
    /// The stream's chunks read one after another (a chunk like the last is not read again).
    chunks: FactsReader,
    count: Count,
}

/// What a [`Meter`] has counted. Apart from the meter's readers, so reading borrows them and
/// counting borrows this, and nothing is moved out and back per call (~450 instructions).
#[derive(Debug, Default)]
struct Count {
    id: Option<String>,
    model: Option<String>,
    object: Option<String>,
    /// Choice indices that have started and not finished.
    open: Vec<u64>,
    generated_bytes: u64,
    deltas: u64,
    reported: Option<Usage>,
    prompt_estimate: u64,
}

impl Meter {
    /// Reads the first stage's output when that stage translated (its events are ours), and
    /// hands each chunk's parts to `capture` when the answer is kept.
    fn feed(&mut self, openai_sse: &[u8], capture: Option<&Capture>) {
        let Meter { parser, chunks, count } = self;
        parser.push_each(openai_sse, &mut |event| {
            read_chunk(&event.data, chunks, capture.is_some_and(Capture::keeping), |facts, addition| {
                if let Some(facts) = facts {
                    count.observe(facts);
                }
                if let Some(capture) = capture {
                    capture.add(addition);
                }
            });
        });
    }
}

impl Count {
    /// Plain `if let`s and slice loops: this runs for every chunk, in code built for size,
    /// where `Option::map` and chained or array iterators are calls (~400 instructions a chunk).
    fn observe(&mut self, chunk: &ChunkFacts) {
        keep_first(&mut self.id, &chunk.id);
        keep_first(&mut self.model, &chunk.model);
        keep_first(&mut self.object, &chunk.object);
        if let Some(usage) = chunk.usage {
            self.reported = Some(usage.into());
        }
        let [first, rest] = chunk.choices.as_ref().map(ChoiceList::as_slices).unwrap_or_default();
        for choice in first {
            self.observe_choice(choice);
        }
        for choice in rest {
            self.observe_choice(choice);
        }
    }

    #[inline(always)] // a call per chunk is ~15 instructions at opt-level "z"
    fn observe_choice(&mut self, choice: &ChoiceFacts) {
        let bytes = choice.content_bytes + choice.text_bytes + choice.tool_call_bytes;
        if bytes > 0 {
            self.deltas += 1;
            self.generated_bytes = self.generated_bytes.saturating_add(bytes as u64);
        }
        match (choice.finished, self.open.contains(&choice.index)) {
            (true, _) => self.open.retain(|i| *i != choice.index),
            (false, false) => self.open.push(choice.index),
            _ => {}
        }
    }

    /// The gateway's own count: the prompt estimate, and about 4 bytes of text per token (at
    /// least one per content delta).
    fn estimated(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: self.generated_bytes.div_ceil(4).max(self.deltas),
        }
    }

    /// The best running usage: per field, the origin's report or the estimate, whichever is
    /// larger (an origin's running count may lag; a final one is exact, and larger).
    fn running(&self) -> Usage {
        let estimated = self.estimated();
        let reported = self.reported.unwrap_or_default();
        Usage {
            prompt_tokens: if reported.prompt_tokens > 0 { reported.prompt_tokens } else { estimated.prompt_tokens },
            completion_tokens: reported.completion_tokens.max(estimated.completion_tokens),
        }
    }

    /// The closing OpenAI chunk of every open choice (`finish_reason: "length"`).
    fn finish_chunks(&self, out: &mut Vec<u8>) {
        let object = self.object.as_deref().unwrap_or("chat.completion.chunk");
        for index in &self.open {
            let choice = if object == "text_completion" {
                json!({"index": index, "text": "", "logprobs": null, "finish_reason": "length"})
            } else {
                json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": "length"})
            };
            let chunk = json!({"id": self.id, "object": object, "model": self.model, "choices": [choice]});
            sse::write_data(out, &chunk);
        }
    }
}

/// What a kept answer takes from a chunk.
enum Addition<'a, 'p> {
    /// The chunk is the last one with another text: just that text, to choice `index`.
    Text(u64, Cow<'a, str>),
    Parts(&'p ChunkParts<'a>),
    Nothing,
}

/// Reads an OpenAI chunk once and hands `use_chunk` its facts and, when the answer is kept
/// (`keep`), what the answer takes from it. A chunk like the last but for its text is not read
/// again (`FactsReader`); a kept answer's other chunks are read for their parts, the facts then
/// coming from the parts. The tree behind the parts refuses a little text the facts' reading
/// skips (a lone surrogate escape in an ignored field): such a chunk comes with its facts
/// alone, so the meter still counts it.
fn read_chunk(
    data: &str,
    chunks: &mut FactsReader,
    keep: bool,
    mut use_chunk: impl FnMut(Option<&ChunkFacts>, Addition),
) {
    if keep {
        if let Some((facts, text)) = chunks.like_last(data) {
            let index = facts.choices.as_ref().and_then(|c| c.iter().next()).map_or(0, |c| c.index);
            return use_chunk(Some(&facts), Addition::Text(index, text));
        }
        if let Some(parts) = ChunkParts::parse(data) {
            chunks.remember(data, &parts);
            return use_chunk(Some(&parts.facts()), Addition::Parts(&parts));
        }
    }
    chunks.read_with(data, &mut |facts| use_chunk(facts, Addition::Nothing));
}

/// The first string seen: `kept` is set once. Inlined: three calls a chunk (~35 instructions)
/// for what is nearly always one test.
#[inline(always)]
fn keep_first(kept: &mut Option<String>, seen: &Option<Cow<str>>) {
    if let (None, Some(seen)) = (&kept, seen) {
        *kept = Some(seen.to_string());
    }
}

/// Runs the events `parser` completes from `input` through one stage, then (with `finish`:
/// the origin's stream ended) closes it. The first stage also feeds the meter and the kept
/// answer: a watched OpenAI stream with the chunk the watch read (each chunk read once), a
/// translating stage by reading back what it wrote. Events are handed over one by one from
/// the parser's buffers.
fn run_stage(
    stage: &mut Stage,
    parser: &mut SseParser,
    input: &[u8],
    finish: bool,
    meter: Option<&mut Meter>,
    capture: Option<&Capture>,
    out: &mut Vec<u8>,
) {
    match (stage, meter) {
        (Stage::Watch(watch), Some(meter)) => {
            let Meter { chunks, count, .. } = meter;
            let mut each = |event: &mut SseEvent| {
                read_chunk(&event.data, chunks, capture.is_some_and(Capture::keeping), |facts, addition| {
                    let shown = watch.watch(event, facts, out);
                    if let Some(facts) = facts {
                        count.observe(facts);
                    }
                    // What the watch hides (the usage chunk the client did not ask for) is not
                    // kept: the cache keeps what the client saw.
                    if let (true, Some(capture)) = (shown, capture) {
                        capture.add(addition);
                    }
                });
            };
            parser.push_each(input, &mut each);
            if finish {
                parser.finish_each(&mut each);
                watch.finish(out); // an error event and `[DONE]`: nothing to count
            }
        }
        (stage, meter) => {
            let from = out.len();
            let mut each = |event: &mut SseEvent| stage.event(event, out);
            parser.push_each(input, &mut each);
            if finish {
                parser.finish_each(&mut each);
                stage.finish(out);
            }
            if let Some(meter) = meter {
                meter.feed(&out[from..], capture);
            }
        }
    }
}

pub struct StreamPump {
    /// Turns a non-SSE origin stream (Bedrock's event stream) into SSE for the first stage.
    decoder: Option<StreamDecoder>,
    stages: Vec<(SseParser, Stage)>,
    /// The client's stream is closed (normally or by `stop`): nothing more is written.
    finished: bool,
    /// The origin's body ended (`end`).
    origin_done: bool,
    stopped: Option<ErrorCode>,
    // Boxed: the pump travels inside every response body; most responses are not streams.
    meter: Option<Box<Meter>>,
    cap: Option<Box<StreamCap>>,
    idle_timeout_ms: u64,
    capture: Option<Box<Capture>>,
}

/// The answer the first stage's OpenAI chunks stream, assembled as they pass (while they
/// total at most `limit` bytes) for the cache: shared with the after-response work, which
/// stores it if the stream completed. `None` once the stream was too long to keep.
pub type Captured = Rc<RefCell<Option<StreamAnswer>>>;

struct Capture {
    into: Captured,
    limit: usize,
    /// Bytes of the first stage's output so far.
    bytes: Cell<usize>,
}

impl Capture {
    /// Whether the answer is still kept (the stream is not yet over the limit).
    fn keeping(&self) -> bool {
        self.into.borrow().is_some()
    }

    fn add(&self, addition: Addition) {
        if let Some(answer) = self.into.borrow_mut().as_mut() {
            match addition {
                Addition::Text(index, text) => answer.add_text(index, &text),
                Addition::Parts(parts) => answer.add(parts),
                Addition::Nothing => {}
            }
        }
    }

    /// Counts the first stage's output; past the limit, nothing is stored.
    fn count(&self, bytes: usize) {
        self.bytes.set(self.bytes.get().saturating_add(bytes));
        if self.bytes.get() > self.limit {
            *self.into.borrow_mut() = None;
        }
    }
}

/// How long a host waits for the origin's next chunk before ending the stream (`idle`) when
/// the pump was not given a value.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

impl StreamPump {
    pub fn new(translators: Vec<Stage>) -> Self {
        StreamPump {
            decoder: None,
            stages: translators.into_iter().map(|t| (SseParser::new(), t)).collect(),
            finished: false,
            origin_done: false,
            stopped: None,
            meter: None,
            cap: None,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            capture: None,
        }
    }

    /// Assembles the answer the first stage's output (OpenAI chunks) streams in `into`, while
    /// that output is at most `limit` bytes, so a completed deterministic stream can fill the
    /// cache. Needs `metered`: the meter's reading of each chunk is what feeds it.
    pub fn capturing(mut self, into: Captured, limit: usize) -> Self {
        self.capture = Some(Box::new(Capture { into, limit, bytes: Cell::new(0) }));
        self
    }

    /// An origin's stream: counted as it goes (its first stage outputs OpenAI chunks), with the
    /// request's prompt estimate for when the origin reports no usage.
    pub fn metered(mut self, prompt_estimate: u64) -> Self {
        let count = Count { prompt_estimate, ..Count::default() };
        self.meter = Some(Box::new(Meter { count, ..Meter::default() }));
        self
    }

    /// Ends the stream when its running usage crosses `cap` (needs `metered`).
    pub fn with_cap(mut self, cap: Option<StreamCap>) -> Self {
        self.cap = cap.map(Box::new);
        self
    }

    /// How long the host waits for the origin's next chunk before calling [`StreamPump::idle`].
    pub fn with_idle_timeout(mut self, ms: u64) -> Self {
        self.idle_timeout_ms = ms;
        self
    }

    pub fn idle_timeout_ms(&self) -> u64 {
        self.idle_timeout_ms
    }

    /// The client's stream is closed: the host sends what the last call returned, stops
    /// reading the origin and (when `summary().completed` is false) cancels its request.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Origins whose streams are not SSE (Bedrock's event stream) are decoded to SSE first.
    pub fn with_decoder(mut self, decoder: Option<StreamDecoder>) -> Self {
        self.decoder = decoder;
        self
    }

    /// Translates one chunk of origin bytes; may return nothing while an event is incomplete.
    /// May finish the stream (an oversized origin event, a crossed cap): the returned bytes
    /// then end with the client's closing events, and later calls return nothing.
    pub fn chunk(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.finished {
            return Vec::new();
        }
        let mut data = match &mut self.decoder {
            Some(decoder) => {
                let mut sse = Vec::new();
                decoder.decode(bytes, &mut sse);
                Cow::Owned(sse)
            }
            None => Cow::Borrowed(bytes),
        };
        for (i, (parser, translator)) in self.stages.iter_mut().enumerate() {
            // About what comes in goes out: sized once, not grown from empty per chunk.
            let mut out = Vec::with_capacity(data.len() + 64);
            let meter = if i == 0 { self.meter.as_deref_mut() } else { None };
            if let Stage::Mcp(stage) = translator {
                stage.bytes(&data, &mut out);
            } else {
                let capture = if i == 0 { self.capture.as_deref() } else { None };
                run_stage(translator, parser, &data, false, meter, capture, &mut out);
            }
            if parser.overflowed() {
                let message = format!("the origin sent an event over {MAX_EVENT_BYTES} bytes");
                return self.stop(ErrorCode::OriginStreamError, &message, false);
            }
            if let (0, Some(capture)) = (i, &self.capture) {
                capture.count(out.len());
            }
            data = Cow::Owned(out);
        }
        let mut data = data.into_owned();
        if let Some((code, message)) = self.crossed_cap() {
            data.extend(self.stop(code, &message, true));
        }
        data
    }

    /// The cap the running usage crossed, if any: its code and message.
    fn crossed_cap(&self) -> Option<(ErrorCode, String)> {
        let (cap, meter) = (self.cap.as_ref()?, self.meter.as_ref()?);
        let usage = meter.count.running();
        if let Some((limit, message)) = &cap.tokens {
            if usage.total() > *limit {
                return Some((ErrorCode::RateLimitExceeded, message.clone()));
            }
        }
        if let (Some((limit, message)), Some(price)) = (&cap.cost_nusd, cap.price) {
            if price.cost_nusd(usage) > *limit {
                return Some((ErrorCode::BudgetExceeded, message.clone()));
            }
        }
        None
    }

    /// The origin body ended (or failed): flush and close the client's stream properly.
    pub fn end(&mut self) -> Vec<u8> {
        if std::mem::replace(&mut self.finished, true) {
            return Vec::new();
        }
        self.origin_done = true;
        let mut data = Vec::new();
        if let Some(decoder) = &mut self.decoder {
            decoder.finish(&mut data);
        }
        for (i, (parser, translator)) in self.stages.iter_mut().enumerate() {
            let mut out = Vec::new();
            let meter = if i == 0 { self.meter.as_deref_mut() } else { None };
            if let Stage::Mcp(stage) = translator {
                stage.bytes(&data, &mut out);
                stage.finish(&mut out);
            } else {
                let capture = if i == 0 { self.capture.as_deref() } else { None };
                run_stage(translator, parser, &data, true, meter, capture, &mut out);
            }
            if let (0, Some(capture)) = (i, &self.capture) {
                capture.count(out.len());
            }
            data = out;
        }
        data
    }

    /// The origin sent nothing for the idle timeout: the client's stream is closed with an
    /// error, and the host cancels the origin request.
    pub fn idle(&mut self) -> Vec<u8> {
        let message = format!("the origin sent nothing for {} ms", self.idle_timeout_ms);
        self.stop(ErrorCode::OriginTimeout, &message, false)
    }

    /// Ends the client's stream early: for a cap, the open choices finish (`length`) and the
    /// stream ends the dialect's normal way (`[DONE]`; Anthropic: `message_delta` +
    /// `message_stop`) with an error event naming the reason; for an origin failure, an error
    /// event and the end. The origin is to be cancelled.
    fn stop(&mut self, code: ErrorCode, message: &str, cap: bool) -> Vec<u8> {
        if std::mem::replace(&mut self.finished, true) {
            return Vec::new();
        }
        self.stopped = Some(code);
        if let Some((_, Stage::Mcp(stage))) = self.stages.last_mut() {
            // An MCP answer ends as a JSON-RPC error, not an OpenAI event.
            let mut out = Vec::new();
            stage.fail(&format!("stopped answering: {message}"), &mut out);
            return out;
        }
        let mut openai = Vec::new();
        if let (true, Some(meter)) = (cap, &self.meter) {
            meter.count.finish_chunks(&mut openai);
        }
        let error_kind = if cap { "rate_limit_error" } else { "upstream_error" };
        let mut out = Vec::new();
        let several = self.stages.len() > 1;
        match self.stages.last_mut() {
            Some((_, Stage::Client(client))) if several => {
                let mut parser = SseParser::new();
                let mut events = parser.push(&openai);
                if cap {
                    events.push(SseEvent { event: None, data: "[DONE]".into() });
                    for event in &events {
                        client.event(event, &mut out);
                    }
                    client.error_event(&mut out, error_kind, code, message);
                } else {
                    for event in &events {
                        client.event(event, &mut out);
                    }
                    let error = json!({"error": {"message": message, "type": error_kind, "code": code.as_str()}});
                    client.event(&SseEvent { event: None, data: error.to_string() }, &mut out);
                    client.finish(&mut out);
                }
            }
            _ => {
                out = openai;
                let error = json!({"error": {"message": message, "type": error_kind, "code": code.as_str()}});
                sse::write_data(&mut out, &error);
                sse::write_done(&mut out);
            }
        }
        out
    }

    /// A whole body at once (a replayed answer).
    pub fn run(mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = self.chunk(bytes);
        out.extend(self.end());
        out
    }

    /// The first stage sees the origin's own events, so its usage is the origin's.
    pub fn summary(&self) -> StreamSummary {
        StreamSummary {
            usage: self.stages.first().and_then(|(_, t)| t.usage()),
            estimated: self.meter.as_ref().map(|m| m.count.estimated()).unwrap_or_default(),
            completed: self.origin_done && self.stopped.is_none(),
            stopped: self.stopped,
            mcp: self.stages.iter().find_map(|(_, t)| match t {
                Stage::Mcp(stage) => Some(stage.outcome()),
                _ => None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::test_util::parse_sse;
    use serde_json::Value;

    /// M6: an origin event over the parser's bound ends the client's stream with an error and
    /// `[DONE]` (and the origin is to be cancelled: the pump is finished, the origin is not).
    #[test]
    fn an_oversized_origin_event_ends_the_stream_cleanly() {
        let mut pump = StreamPump::new(vec![Stage::Watch(StreamWatch::new())]);
        let mut out = pump.chunk(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n");
        out.extend(pump.chunk(b"data: "));
        let giant = vec![b'a'; 256 * 1024];
        for _ in 0..8 {
            out.extend(pump.chunk(&giant));
        }
        assert!(pump.is_finished());
        let events = parse_sse(&out);
        let last = &events[events.len() - 1].1;
        assert_eq!(last, "[DONE]");
        assert_eq!(events[events.len() - 2].1["error"]["code"], "origin_stream_error", "{events:?}");
        assert!(pump.chunk(b"data: more\n\n").is_empty() && pump.end().is_empty());
        assert!(!pump.summary().completed, "the origin did not finish: the host cancels it");
    }

    /// A kept answer assembled as the pump reads (chunks like the last but for their text
    /// added as text, the others as parts) is the answer the whole stream assembles to, read
    /// after the fact; what the watch hides (the usage chunk) is not kept.
    #[test]
    fn a_kept_answer_is_the_assembled_stream() {
        let chunk = |content: &Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
        };
        let mut events = vec![json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})];
        for text in ["he", "llo", " \"wörld\"\n", "", "\u{1F600}", "x"] {
            events.push(chunk(&json!(text), Value::Null));
        }
        events.push(chunk(&json!(5), Value::Null)); // not text: nothing added
        events.push(json!({"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t",
            "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": null}]}));
        events.push(chunk(&json!("!"), json!("stop")));
        events.push(json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}));
        let mut sse = Vec::new();
        for event in &events {
            sse::write_data(&mut sse, event);
        }
        sse::write_done(&mut sse);

        let kept: Captured = Rc::new(RefCell::new(Some(StreamAnswer::default())));
        let mut pump = StreamPump::new(vec![Stage::Watch(StreamWatch::new().hide_usage_chunk(true))])
            .metered(0)
            .capturing(kept.clone(), usize::MAX);
        let mut shown = Vec::new();
        for piece in sse.chunks(7) {
            shown.extend(pump.chunk(piece));
        }
        shown.extend(pump.end());
        let (answer, complete) = kept.take().unwrap().finish(crate::gateway::types::Operation::Chat);
        assert_eq!(
            (answer.clone(), complete),
            crate::gateway::wire::openai::sse_to_completion(crate::gateway::types::Operation::Chat, &shown)
        );
        assert_eq!(answer["choices"][0]["message"]["content"], "hello \"wörld\"\n\u{1F600}x!");
        assert_eq!(answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "f");
        assert!(complete && answer.get("usage").is_none(), "{answer}");
    }
}
