//! What clients speak: one file per API. Each reads a request into the internal (OpenAI
//! chat) shape and renders answers, streams and errors back in the client's shape; the
//! pipeline only asks `Dialect` for those four things.

pub mod anthropic;
pub mod mlflow;
pub mod openai;

use serde_json::{Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::sse::SseEvent;
use crate::gateway::wire::stream::StreamTranslate;

/// The API a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI-compatible: `model` in the body names the endpoint.
    OpenAi(Operation),
    /// MLflow invocations: the path names the endpoint, whose type decides the operation.
    Mlflow,
    /// Anthropic Messages (`/v1/messages`), served by chat endpoints.
    Anthropic,
}

/// A client's request read into the internal shape.
#[derive(Debug)]
pub struct ClientRequest {
    /// The endpoint or traffic route the client named.
    pub name: String,
    /// The request in OpenAI's shape, without `model`.
    pub body: Map<String, Value>,
}

impl Dialect {
    /// The operation the client's API asks for; `None` when the endpoint decides (MLflow).
    pub fn operation(self) -> Option<Operation> {
        match self {
            Dialect::OpenAi(op) => Some(op),
            Dialect::Anthropic => Some(Operation::Chat),
            Dialect::Mlflow => None,
        }
    }

    /// Reads the client's request; `path_name` is the endpoint the path named, if any.
    pub fn read(self, body: Map<String, Value>, path_name: Option<String>) -> Result<ClientRequest> {
        let (name, body) = match (self, path_name) {
            (_, Some(name)) => (name, mlflow::read(body)),
            (Dialect::Anthropic, None) => openai::read(anthropic::messages_request_to_openai(body)?)?,
            (_, None) => openai::read(body)?,
        };
        Ok(ClientRequest { name, body })
    }

    /// An OpenAI-shaped answer in the client's shape.
    pub fn render(self, answer: Vec<u8>) -> Result<Vec<u8>> {
        match self {
            Dialect::Anthropic => anthropic::openai_response_to_messages(&answer),
            Dialect::OpenAi(_) | Dialect::Mlflow => Ok(answer),
        }
    }

    /// The stream stage that turns OpenAI chunks into the client's events (`None`: the client
    /// reads OpenAI chunks as they are).
    pub fn stream_stage(self, model: &str) -> Option<ClientStream> {
        match self {
            Dialect::Anthropic => Some(ClientStream::Anthropic(anthropic::OpenAiStreamToMessages::new(model))),
            Dialect::OpenAi(_) | Dialect::Mlflow => None,
        }
    }

    /// An error body in the client's shape.
    pub fn error_body(self, error: &GatewayError) -> Vec<u8> {
        match self {
            Dialect::Anthropic => anthropic::messages_error_body(error),
            Dialect::OpenAi(_) | Dialect::Mlflow => error.body(),
        }
    }
}

/// The client-side stream translators, as an enum (no dynamic dispatch per chunk).
pub enum ClientStream {
    /// OpenAI chunks → Anthropic Messages events.
    Anthropic(anthropic::OpenAiStreamToMessages),
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
        }
    }
}

impl StreamTranslate for ClientStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match self {
            ClientStream::Anthropic(t) => t.event(event, out),
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            ClientStream::Anthropic(t) => t.finish(out),
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            ClientStream::Anthropic(t) => t.usage(),
        }
    }
}
