//! OpenAI Responses API clients (`POST /v1/responses`, `GET|DELETE /v1/responses/{id}`) in
//! front of any chat endpoint.
//!
//! * `read` turns a Responses request into the internal chat shape plus a `Turn`: what the
//!   answer echoes, this turn's input as chat messages (kept for `previous_response_id`) and
//!   whether the response is stored.
//! * `render` turns the chat answer into a `response` object; `ChatStreamToResponses` turns
//!   chat chunks into the typed events the SDKs parse (`response.created` …
//!   `response.completed`, with `sequence_number`s).
//! * An endpoint whose origin speaks Responses itself (`responses: passthrough`) gets the
//!   request back in Responses form (`passthrough_request`, built from the *prepared* chat
//!   body, so templates, defaults and guardrails still apply) and its answer or event stream
//!   as it is (`ResponsesWatch` reads usage and the final response on the way).
//! * `Keep` is a response to store (KV `resp:<tenant>:<id>`, see `pipeline::stored`); stored
//!   records carry the conversation as chat messages so a later turn can continue it.
//!
//! Files: `turn` (the `Turn`, response ids, errors), `read` (the request), `render` (the
//! answer), `store` (KV records), `passthrough` (a Responses origin), `stream` (both streams).

mod passthrough;
mod read;
mod render;
mod store;
mod stream;
mod turn;

pub use passthrough::{passthrough_answer, passthrough_request};
pub use read::{read, MAX_INPUT_ITEMS, MAX_PARTS, MAX_TOOLS};
pub use render::{response_usage, usage_object};
pub use store::{
    kv_key, output_to_messages, JustStored, Keep, Known, Record, Storing, MAX_CONVERSATION, MAX_RECORD_BYTES,
};
pub use stream::{ChatStreamToResponses, ResponsesWatch};
pub use turn::{error_body, not_found, previous_not_found, valid_id, Head, Turn};

#[cfg(test)]
mod tests;
