//! Driving a translated stream: the host feeds the origin's body chunks in as they arrive and
//! writes out what comes back. Parsing and translation stay here, in the core.
//!
//! A pump is a chain of stages, each an SSE parser plus a translator; stage N's output is
//! stage N+1's input. That composes, e.g., Gemini → OpenAI chunks → Anthropic events for an
//! Anthropic client of a Gemini endpoint, with each translator written once.

use crate::gateway::dialect::ClientStream;
use crate::gateway::mcp::{McpOutcome, McpStream};
use crate::gateway::providers::ProviderStream;
use crate::gateway::types::Usage;
use crate::gateway::wire::openai::StreamWatch;
use crate::gateway::wire::sse::{SseEvent, SseParser};
use crate::gateway::wire::stream::StreamTranslate;

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
    /// The origin's body ended (cleanly or cut) and the client's stream was closed; false when
    /// the client went away first.
    pub completed: bool,
    /// For an MCP answer: how it ended (bytes, outcome).
    pub mcp: Option<McpOutcome>,
}

pub struct StreamPump {
    stages: Vec<(SseParser, Stage)>,
    finished: bool,
}

impl StreamPump {
    pub fn new(translators: Vec<Stage>) -> Self {
        StreamPump { stages: translators.into_iter().map(|t| (SseParser::new(), t)).collect(), finished: false }
    }

    /// Translates one chunk of origin bytes; may return nothing while an event is incomplete.
    pub fn chunk(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut data = bytes.to_vec();
        for (parser, translator) in &mut self.stages {
            let mut out = Vec::new();
            if let Stage::Mcp(stage) = translator {
                stage.bytes(&data, &mut out);
            } else {
                for event in parser.push(&data) {
                    translator.event(&event, &mut out);
                }
            }
            data = out;
        }
        data
    }

    /// The origin body ended (or failed): flush and close the client's stream properly.
    pub fn end(&mut self) -> Vec<u8> {
        if std::mem::replace(&mut self.finished, true) {
            return Vec::new();
        }
        let mut data = Vec::new();
        for (parser, translator) in &mut self.stages {
            let mut out = Vec::new();
            if let Stage::Mcp(stage) = translator {
                stage.bytes(&data, &mut out);
            } else {
                for event in parser.push(&data).into_iter().chain(parser.finish()) {
                    translator.event(&event, &mut out);
                }
            }
            translator.finish(&mut out);
            data = out;
        }
        data
    }

    /// A whole body at once (a replayed answer).
    pub fn run(mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = self.chunk(bytes);
        out.extend(self.end());
        out
    }

    /// The first stage sees the origin's own events, so its usage is the origin's.
    pub fn summary(&self) -> StreamSummary {
        let mcp = self.stages.iter().find_map(|(_, t)| match t {
            Stage::Mcp(stage) => Some(stage.outcome()),
            _ => None,
        });
        StreamSummary { usage: self.stages.first().and_then(|(_, t)| t.usage()), completed: self.finished, mcp }
    }
}
