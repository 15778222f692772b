//! The contract every provider file implements: an origin call in OpenAI's shape goes out in
//! the provider's wire format, and its answer (or stream) comes back in OpenAI's shape.

use http::{Request, StatusCode};
use serde_json::{Map, Value};

use crate::gateway::error::Result;
use crate::gateway::features::normalize::Written;
use crate::gateway::ports::Secrets;
use crate::gateway::providers::common::origin_error;
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::json::{parse_json, parse_object_keeping};
use crate::gateway::wire::openai::answer_usage;

/// One origin call, in OpenAI's shape. `body` has no `model`: the endpoint's `model` is the
/// provider-side model name.
#[derive(Debug)]
pub struct Call<'a> {
    pub op: Operation,
    pub model: &'a str,
    pub body: Map<String, Value>,
    /// Origin base URL chosen by routing (an `origins[].url`, else `Adapter::default_base`).
    pub base_url: &'a str,
    pub stream: bool,
    /// Wall clock, for request signing (SigV4) and nothing else.
    pub now_ms: u64,
    /// `body`'s bytes when the pipeline has them (its canonical form, or the client's own
    /// bytes): an adapter that sends the body as it is, with a few fields changed, copies the
    /// rest from them ([`Written::rewrite`]).
    pub written: Option<&'a Written>,
}

/// A buffered origin answer to translate.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub op: Operation,
    pub status: StatusCode,
    pub body: &'a [u8],
    /// The provider-side model name, for responses that do not carry one.
    pub model: &'a str,
    /// For `created` fields of responses that do not carry one.
    pub now_ms: u64,
    /// The answer's fields the client's dialect reads (none: it takes the body as it is). An
    /// adapter that reads the answer anyway hands them over ([`Translated::fields`]).
    pub wanted: &'a [&'a str],
}

impl Reply<'_> {
    /// The body of a 2xx answer as JSON: a non-2xx answer is an `origin_error`, a body that is
    /// not JSON a `bad_response`.
    pub fn success_json(&self) -> Result<Value> {
        parse_json(self.success_body()?)
    }

    /// The object a 2xx answer is, with only the entries named in `fields` kept (the others
    /// checked, not built): errors as for [`Reply::success_json`], and one for a body that is
    /// not an object.
    pub fn success_object_keeping(&self, fields: &[&str]) -> Result<Value> {
        parse_object_keeping(self.success_body()?, fields)
    }

    /// The usage a 2xx OpenAI-shaped answer reports, the rest of it checked, not built: errors
    /// as for [`Reply::success_object_keeping`].
    pub fn success_usage(&self) -> Result<Option<Usage>> {
        answer_usage(self.success_body()?)
    }

    /// The body of a 2xx answer; a non-2xx answer is an `origin_error`.
    fn success_body(&self) -> Result<&[u8]> {
        match self.status.is_success() {
            true => Ok(self.body),
            false => Err(origin_error(self.status, self.body)),
        }
    }
}

/// An origin response translated to the OpenAI-shaped body sent to the client.
#[derive(Debug)]
pub struct Translated {
    pub body: Vec<u8>,
    pub usage: Option<Usage>,
    /// The `wanted` fields of `body`, when the adapter read them (the rest of the body need
    /// not be read again).
    pub fields: Option<Value>,
}

/// How a streaming answer reaches an OpenAI-speaking client.
pub enum StreamMode<T> {
    /// The origin speaks OpenAI SSE: forward the bytes as they are (watched for usage).
    Passthrough,
    /// Translate event by event with the adapter's translator.
    Translate(T),
    /// The origin cannot stream (e.g. `mlflow models serve`): the gateway buffers and replays.
    Buffered,
}

impl<T> StreamMode<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> StreamMode<U> {
        match self {
            StreamMode::Passthrough => StreamMode::Passthrough,
            StreamMode::Translate(t) => StreamMode::Translate(f(t)),
            StreamMode::Buffered => StreamMode::Buffered,
        }
    }
}

/// A translator type for adapters whose streams need none (`StreamMode::Translate` cannot
/// be built with it).
#[derive(Debug)]
pub enum NoTranslation {}

/// The contract every provider file implements.
pub trait Adapter {
    /// What translates this provider's event stream into OpenAI chunks.
    type Stream;
    /// The provider's public API base, used when the endpoint lists no `origins`.
    fn default_base(&self) -> &str;
    /// Builds the origin request for `call`; credentials come from `secrets`.
    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>>;
    /// Translates a buffered origin answer. Non-2xx answers become a `GatewayError` (use
    /// `origin_error`); a 2xx body of the wrong shape is a 502 `origin_bad_response`.
    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated>;
    /// How streamed answers are turned into OpenAI `chat.completion.chunk` events
    /// (`model` and `now_ms` as in `Reply`).
    fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode<Self::Stream>;
}
