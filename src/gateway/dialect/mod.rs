//! What clients speak: one file per API. Each reads a request into the internal (OpenAI
//! chat) shape and renders answers, streams and errors back in the client's shape; the
//! pipeline only asks `Dialect` for those things.

pub mod anthropic;
pub mod gemini;
pub mod mlflow;
pub mod openai;
pub mod responses;

use serde_json::{Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::normalize::Verbatim;
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::openai::ANSWER_FIELDS;
use crate::gateway::wire::sse::SseEvent;
use crate::gateway::wire::stream::StreamTranslate;

/// The API a client speaks, with what one request in it needs to be answered.
#[derive(Debug)]
pub enum Dialect {
    /// OpenAI-compatible: `model` in the body names the endpoint.
    OpenAi(Operation),
    /// MLflow invocations: the path names the endpoint, whose type decides the operation.
    Mlflow,
    /// Anthropic Messages (`/v1/messages`), served by chat endpoints.
    Anthropic,
    /// OpenAI Responses (`/v1/responses`), served by chat endpoints; the turn is filled by
    /// `read` and by the pipeline (id, history, passthrough).
    Responses(Box<responses::Turn>),
    /// Gemini `generateContent` / `streamGenerateContent`, served by chat endpoints.
    Gemini(gemini::Mode),
}

/// A client's request read into the internal shape.
#[derive(Debug)]
pub struct ClientRequest {
    /// The endpoint or traffic route the client named.
    pub name: String,
    /// The request in OpenAI's shape, without `model`.
    pub body: Map<String, Value>,
    /// An API key the dialect found outside the standard headers (Gemini's `x-goog-api-key`
    /// or `?key=`); the standard headers still come first.
    pub credential: Option<String>,
    /// `body` as the client wrote it, when `body` is the client's own object but for `model`
    /// (an OpenAI client's): see `normalize::Verbatim`.
    pub verbatim: Option<Verbatim>,
}

impl Dialect {
    /// A Responses client, before its request is read.
    pub fn responses() -> Dialect {
        Dialect::Responses(Box::default())
    }

    /// The operation the client's API asks for; `None` when the endpoint decides (MLflow).
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Dialect::OpenAi(op) => Some(*op),
            Dialect::Anthropic | Dialect::Responses(_) | Dialect::Gemini(_) => Some(Operation::Chat),
            Dialect::Mlflow => None,
        }
    }

    /// Reads the client's request; `path_name` is the endpoint the path named, if any.
    pub fn read(&mut self, body: Map<String, Value>, path_name: Option<String>) -> Result<ClientRequest> {
        let (name, body) = match (self, path_name) {
            (Dialect::Gemini(mode), Some(name)) => (name, gemini::read(body, *mode)?),
            (_, Some(name)) => (name, mlflow::read(body)),
            (Dialect::Anthropic, None) => openai::read(anthropic::messages_request_to_openai(body)?)?,
            (Dialect::Responses(turn), None) => {
                let (name, chat, read) = responses::read(body)?;
                **turn = read;
                (name, chat)
            }
            (_, None) => openai::read(body)?,
        };
        Ok(ClientRequest { name, body, credential: None, verbatim: None })
    }

    /// The Responses turn, for the pipeline's stored-response step.
    pub fn turn_mut(&mut self) -> Option<&mut responses::Turn> {
        match self {
            Dialect::Responses(turn) => Some(turn),
            _ => None,
        }
    }

    pub fn turn(&self) -> Option<&responses::Turn> {
        match self {
            Dialect::Responses(turn) => Some(turn),
            _ => None,
        }
    }

    /// The origin speaks the client's API itself: its answers and streams pass through (and
    /// are not cached: they are not in the internal shape).
    pub fn passthrough(&self) -> bool {
        self.turn().is_some_and(|t| t.passthrough)
    }

    /// The fields of an OpenAI answer [`Dialect::render`] reads (none: it takes the whole).
    pub fn answer_fields(&self) -> &'static [&'static str] {
        match self {
            Dialect::Anthropic | Dialect::Gemini(_) => &ANSWER_FIELDS,
            Dialect::Responses(_) | Dialect::OpenAi(_) | Dialect::Mlflow => &[],
        }
    }

    /// An OpenAI-shaped answer (or a passthrough origin's own) in the client's shape; `fields`:
    /// its [`Dialect::answer_fields`], when they were read already.
    pub fn render(&self, answer: Vec<u8>, fields: Option<Value>) -> Result<Vec<u8>> {
        match self {
            Dialect::Anthropic => anthropic::openai_response_to_messages(&answer, fields),
            Dialect::Responses(turn) => turn.render(answer),
            Dialect::Gemini(_) => gemini::render(&answer, fields),
            Dialect::OpenAi(_) | Dialect::Mlflow => Ok(answer),
        }
    }

    /// The stream stage that turns OpenAI chunks into the client's events (`None`: the client
    /// reads OpenAI chunks as they are).
    pub fn stream_stage(&self, model: &str) -> Option<ClientStream> {
        match self {
            Dialect::Anthropic => Some(ClientStream::Anthropic(anthropic::OpenAiStreamToMessages::new(model))),
            Dialect::Responses(turn) => Some(ClientStream::Responses(responses::ChatStreamToResponses::new(
                turn.head.clone(),
                model,
                turn.finished.clone(),
            ))),
            Dialect::Gemini(mode) => Some(ClientStream::Gemini(gemini::ChatStreamToGemini::new(*mode, model))),
            Dialect::OpenAi(_) | Dialect::Mlflow => None,
        }
    }

    /// For a passthrough origin: the stage that watches its own event stream (the only one).
    pub fn origin_stage(&self) -> Option<ClientStream> {
        let turn = self.turn().filter(|t| t.passthrough)?;
        Some(ClientStream::ResponsesWatch(responses::ResponsesWatch::new(turn.finished.clone())))
    }

    /// The content type of a streamed answer (Gemini without `alt=sse` streams a JSON array).
    pub fn stream_content_type(&self) -> &'static str {
        match self {
            Dialect::Gemini(gemini::Mode::StreamJson) => "application/json",
            _ => "text/event-stream",
        }
    }

    /// An error body in the client's shape.
    pub fn error_body(&self, error: &GatewayError) -> Vec<u8> {
        match self {
            Dialect::Anthropic => anthropic::messages_error_body(error),
            Dialect::Responses(_) => responses::error_body(error),
            Dialect::Gemini(_) => gemini::error_body(error),
            Dialect::OpenAi(_) | Dialect::Mlflow => error.body(),
        }
    }
}

/// The client-side stream translators, as an enum (no dynamic dispatch per chunk).
pub enum ClientStream {
    /// OpenAI chunks → Anthropic Messages events.
    Anthropic(anthropic::OpenAiStreamToMessages),
    /// OpenAI chunks → Responses events.
    Responses(responses::ChatStreamToResponses),
    /// A passthrough origin's Responses events, watched.
    ResponsesWatch(responses::ResponsesWatch),
    /// OpenAI chunks → Gemini responses (SSE or a JSON array).
    Gemini(gemini::ChatStreamToGemini),
}

impl ClientStream {
    /// An error event in the client's stream format, after the stream's normal end (the
    /// gateway stopped a stream at a budget or token cap).
    pub fn error_event(&mut self, out: &mut Vec<u8>, kind: &str, code: ErrorCode, message: &str) {
        match self {
            ClientStream::Anthropic(_) => crate::gateway::wire::sse::write_event(
                out,
                "error",
                &serde_json::json!({"type": "error", "error": {"type": kind, "message": format!("{message} ({code})")}}),
            ),
            ClientStream::Responses(t) => t.error_event(out, code.as_str(), message),
            ClientStream::ResponsesWatch(_) => crate::gateway::wire::sse::write_event(
                out,
                "error",
                &serde_json::json!({"type": "error", "code": code.as_str(), "message": message, "param": null}),
            ),
            ClientStream::Gemini(t) => t.error_event(out, message, code.as_str()),
        }
    }
}

impl StreamTranslate for ClientStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match self {
            ClientStream::Anthropic(t) => t.event(event, out),
            ClientStream::Responses(t) => t.event(event, out),
            ClientStream::ResponsesWatch(t) => t.event(event, out),
            ClientStream::Gemini(t) => t.event(event, out),
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            ClientStream::Anthropic(t) => t.finish(out),
            ClientStream::Responses(t) => t.finish(out),
            ClientStream::ResponsesWatch(t) => t.finish(out),
            ClientStream::Gemini(t) => t.finish(out),
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            ClientStream::Anthropic(t) => t.usage(),
            ClientStream::Responses(t) => t.usage(),
            ClientStream::ResponsesWatch(t) => t.usage(),
            ClientStream::Gemini(t) => t.usage(),
        }
    }
}
