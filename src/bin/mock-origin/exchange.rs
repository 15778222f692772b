//! The request context handed to each wire format, and the reply it builds.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use crate::control::State;

/// One buffered request, as seen by the wire-format handlers.
pub struct Ctx<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub state: &'a State,
}

impl Ctx<'_> {
    /// A header value, trimmed; `None` when absent, empty or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        non_empty_header(self.headers, name)
    }

    /// A raw (not percent-decoded) query parameter value.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_param(self.query, name)
    }

    /// The body as a JSON object.
    pub fn json_object(&self) -> Option<Map<String, Value>> {
        match serde_json::from_slice(self.body) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    /// A Bearer token from `Authorization`, when present and non-empty.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }
}

/// A header value, trimmed; `None` when absent, empty or not UTF-8.
pub fn non_empty_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

/// A raw (not percent-decoded) parameter of a query string.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Token usage this origin reported in a response.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
}

/// A response body: complete, or a sequence of chunks to stream.
pub enum Payload {
    Full(Bytes),
    Stream(Vec<Bytes>),
}

/// What a handler answers, before faults are applied.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub payload: Payload,
    /// Usage reported in the body (counted in `/_mock/stats` once delivered).
    pub usage: Usage,
}

impl Reply {
    pub fn json(status: StatusCode, value: &Value) -> Self {
        Self::full(status, "application/json", Bytes::from(value.to_string()))
    }

    /// A complete body of any content type.
    pub fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Self {
        Reply { status, content_type, headers: Vec::new(), payload: Payload::Full(body), usage: Usage::default() }
    }

    pub fn ok_json(value: &Value) -> Self {
        Self::json(StatusCode::OK, value)
    }

    /// A streamed response made of `chunks`.
    pub fn stream(content_type: &'static str, chunks: Vec<Bytes>) -> Self {
        Reply {
            status: StatusCode::OK,
            content_type,
            headers: Vec::new(),
            payload: Payload::Stream(chunks),
            usage: Usage::default(),
        }
    }

    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.payload, Payload::Stream(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_query_params() {
        assert_eq!(query_param("alt=sse&key=abc", "key"), Some("abc"));
        assert_eq!(query_param("alt=sse&key=abc", "alt"), Some("sse"));
        assert_eq!(query_param("flag&x=1", "flag"), Some(""));
        assert_eq!(query_param("", "key"), None);
        assert_eq!(query_param("keys=1", "key"), None);
    }
}
