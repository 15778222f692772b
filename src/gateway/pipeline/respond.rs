//! Responses: the body type hosts drive, and the builders every phase uses.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::gateway::error::GatewayError;
use crate::gateway::pipeline::stream::StreamPump;

/// A response body: bytes the gateway produced, or the origin's body streamed through a
/// `StreamPump` the host drives chunk by chunk (never buffered whole).
pub enum ResponseBody<B> {
    Full(Vec<u8>),
    Stream(B, StreamPump),
}

/// A JSON body with its content type.
pub fn json_bytes<B>(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::Full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn json_response<B>(status: StatusCode, value: &Value) -> Response<ResponseBody<B>> {
    json_bytes(status, crate::gateway::wire::json::json_body(value))
}

pub fn ok_json<B>(value: Value) -> Response<ResponseBody<B>> {
    json_response(StatusCode::OK, &value)
}

/// An event stream (buffered replay or a live pump).
pub fn sse_response<B>(body: ResponseBody<B>) -> Response<ResponseBody<B>> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An error in the OpenAI shape (hosts use it for failures before the pipeline runs).
pub fn error_response<B>(error: &GatewayError) -> Response<ResponseBody<B>> {
    error_with_body(error, error.body())
}

/// An error with a body already rendered in the client's shape.
pub fn error_with_body<B>(error: &GatewayError, body: Vec<u8>) -> Response<ResponseBody<B>> {
    let mut response = json_bytes(error.status, body);
    if let Some(seconds) = error.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `Retry-After` in whole seconds, as an origin sent it.
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}
