//! One Responses request as the gateway keeps it (`Turn`, its echoed `Head`), response ids,
//! and the errors a Responses client gets.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError};

/// Longest response id accepted in a path or `previous_response_id`.
const MAX_ID_LEN: usize = 128;

/// What every `response` object of one request repeats: its id, time and echoed fields.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// `resp_…`, assigned by the pipeline (random) once the request is admitted.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Request fields the `response` object echoes (instructions, tools, text, …).
    pub echo: Map<String, Value>,
    pub previous_response_id: Option<String>,
    /// `store` (default true): keep the response for `GET` and `previous_response_id`.
    pub store: bool,
}

/// One Responses request, as far as its answer and its storage need it.
#[derive(Debug, Default)]
pub struct Turn {
    pub head: Head,
    /// Whether `instructions` became the first (system) message of the chat body.
    pub has_instructions: bool,
    /// This turn's input as chat messages (instructions excluded: they do not carry over).
    pub input: Vec<Value>,
    /// The conversation so far, from `previous_response_id` (chat messages).
    pub history: Vec<Value>,
    /// The endpoint's origin speaks Responses: request and answer pass through.
    pub passthrough: bool,
    /// Responses-only request fields kept for a passthrough origin (reasoning, include, …).
    pub native: Map<String, Value>,
    /// The final `response` once known (a buffered answer's, or a stream's at its end): what
    /// `Keep` stores.
    pub finished: Rc<RefCell<Option<Value>>>,
}

/// A `resp_…` id as the gateway mints them, or an origin's (passthrough): short, and safe in a
/// KV key.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn not_found(id: &str) -> GatewayError {
    GatewayError::not_found(
        ErrorCode::ResponseNotFound,
        format!("Response with id '{}' not found.", crate::gateway::util::text::truncate(id, MAX_ID_LEN)),
    )
}

pub fn previous_not_found(id: &str) -> GatewayError {
    GatewayError::not_found(
        ErrorCode::PreviousResponseNotFound,
        format!("Previous response with id '{}' not found.", crate::gateway::util::text::truncate(id, MAX_ID_LEN)),
    )
}

/// OpenAI's error body, with `param` named where the gateway knows it.
pub fn error_body(error: &GatewayError) -> Vec<u8> {
    let param = match error.code {
        ErrorCode::PreviousResponseNotFound => Some("previous_response_id".to_string()),
        ErrorCode::InvalidRequest
        | ErrorCode::UnsupportedParameter
        | ErrorCode::InvalidModel
        | ErrorCode::MissingModel => error
            .message
            .split_once(": ")
            .map(|(p, _)| p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._".contains(&b)))
            .map(str::to_string),
        _ => None,
    };
    let body = json!({"error": {"message": error.message, "type": error.kind, "param": param, "code": error.code}});
    serde_json::to_vec(&body).unwrap_or_default()
}
