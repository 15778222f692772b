//! JSON-RPC 2.0 framing as MCP uses it: one message per HTTP POST (batches were removed in
//! 2025-06-18), named params only, ids that are strings or integers (never null), and the error
//! codes the spec names. The HTTP status that carries each error is decided here too, so every
//! refusal — of the framing, the protocol or a policy — is a JSON-RPC error, never a 5xx.

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::gateway::error::GatewayError;
use crate::gateway::wire::json::{request_value_within, Bounds, ReadError};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid JSON-RPC request (and batches, which MCP no longer allows).
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Bad params, an unknown tool/prompt, or a missing resource (2026-07-28 replaced -32002).
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// 2026-07-28: the `MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name` headers disagree with the
/// body, or a required one is missing.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the protocol version is not one this server implements (`data.supported`).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

// The gateway's own refusals. The spec reserves -32768..-32000 and asks for application codes
// outside it; these reuse the HTTP status numbers they stand for, so they read at a glance.
/// No or an invalid API key.
pub const UNAUTHORIZED: i64 = 401;
/// The caller's policy does not allow this server/tool, or a guardrail refused the content.
pub const FORBIDDEN: i64 = 403;
/// A per-tool (or key) rate limit; `data.retry_after` is in seconds.
pub const RATE_LIMITED: i64 = 429;
/// The upstream MCP server failed or answered something unusable (`data.server` names it).
pub const UPSTREAM_ERROR: i64 = 502;
/// The upstream MCP server did not answer in time.
pub const UPSTREAM_TIMEOUT: i64 = 504;

/// One error, with the HTTP status of the response that carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub http: StatusCode,
}

impl RpcError {
    fn new(code: i64, http: StatusCode, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), data: None, http }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn with_http(mut self, http: StatusCode) -> Self {
        self.http = http;
        self
    }

    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, StatusCode::BAD_REQUEST, message)
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, StatusCode::BAD_REQUEST, message)
    }
    /// 404, as 2026-07-28 asks (the JSON-RPC body tells it from a legacy server's bare 404).
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, StatusCode::NOT_FOUND, format!("method not found: {}", clip(method)))
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, StatusCode::BAD_REQUEST, message)
    }
    pub fn header_mismatch(message: impl Into<String>) -> Self {
        Self::new(HEADER_MISMATCH, StatusCode::BAD_REQUEST, message)
    }
    pub fn unsupported_version(requested: &str, supported: &[&str]) -> Self {
        Self::new(UNSUPPORTED_PROTOCOL_VERSION, StatusCode::BAD_REQUEST, "Unsupported protocol version")
            .with_data(json!({"supported": supported, "requested": clip(requested)}))
    }
    /// A refusal that is not the transport's business (policy, limits, upstream): HTTP 200, the
    /// JSON-RPC error is the answer.
    pub fn refusal(code: i64, message: impl Into<String>) -> Self {
        Self::new(code, StatusCode::OK, message)
    }

    /// A gateway error (auth, limits, guardrails) as a JSON-RPC error: the code is the HTTP
    /// status it stands for; `data` carries the gateway's error code and any retry timing.
    pub fn from_gateway(e: &GatewayError) -> Self {
        let mut data = Map::new();
        data.insert("type".into(), json!(e.kind));
        data.insert("code".into(), json!(e.code.as_str()));
        if let Some(seconds) = e.retry_after {
            data.insert("retry_after".into(), json!(seconds));
        }
        let code = match e.status.as_u16() {
            401 => UNAUTHORIZED,
            403 | 400 | 422 => FORBIDDEN,
            429 => RATE_LIMITED,
            504 => UPSTREAM_TIMEOUT,
            _ => UPSTREAM_ERROR,
        };
        // Authentication is the transport's business (401); everything else rides in a 200.
        let http = if code == UNAUTHORIZED { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        RpcError { code, message: e.message.clone(), data: Some(Value::Object(data)), http }
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.data.as_ref()?.get("retry_after")?.as_u64()
    }
}

/// What a POST body held.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: answered with a result or an error carrying `id`.
    Request { id: Value, method: String, params: Map<String, Value> },
    /// A notification: answered with 202 and no body.
    Notification { method: String, params: Map<String, Value> },
    /// A response to a server-initiated request.
    Response { id: Value },
}

impl Message {
    pub fn method(&self) -> &str {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => method,
            Message::Response { .. } => "",
        }
    }
}

/// A framing failure: the error, and the request id when it could be read.
pub type Rejected = (Option<Value>, RpcError);

/// Parses one POST body into a message, within the bounds of every request body (413 past
/// them, as for the model APIs: `settings.max_body_*`).
pub fn parse(body: &[u8], bounds: Bounds) -> Result<Message, Rejected> {
    let value = request_value_within(body, bounds).map_err(|e| match e {
        ReadError::Invalid(e) => (None, RpcError::parse(format!("Parse error: {e}"))),
        too_many => {
            let message = format!("the message holds {too_many} (this gateway's limit)");
            (None, RpcError::invalid_request(message).with_http(StatusCode::PAYLOAD_TOO_LARGE))
        }
    })?;
    let Value::Object(mut map) = value else {
        let message = if value.is_array() {
            "JSON-RPC batches are not supported: send one message per POST (batching was removed in MCP 2025-06-18)"
        } else {
            "a JSON-RPC message must be a JSON object"
        };
        return Err((None, RpcError::invalid_request(message)));
    };
    let id = map.remove("id");
    let id_ok = |id: &Value| id.is_string() || id.as_i64().is_some() || id.as_u64().is_some();
    // The id is echoed in the error when it is a usable one.
    let echo = id.as_ref().filter(|id| id_ok(id)).cloned();
    let fail = |message: &str| Err((echo.clone(), RpcError::invalid_request(message.to_string())));
    if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return fail("`jsonrpc` must be \"2.0\"");
    }
    if let Some(id) = &id {
        if !id_ok(id) {
            return fail("`id` must be a string or an integer (MCP forbids null ids)");
        }
    }
    let method = match map.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => Some(m),
        Some(_) => return fail("`method` must be a non-empty string"),
        None => None,
    };
    let params = match map.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err((echo, RpcError::invalid_params("`params` must be an object (MCP uses named parameters)")))
        }
    };
    match (method, id) {
        (Some(method), Some(id)) => Ok(Message::Request { id, method, params }),
        (Some(method), None) => Ok(Message::Notification { method, params }),
        (None, Some(id)) if map.contains_key("result") || map.contains_key("error") => Ok(Message::Response { id }),
        (None, _) => fail("a JSON-RPC request needs a `method`"),
    }
}

/// `{"jsonrpc":"2.0","id":…,"result":…}`
pub fn result_body(id: &Value, result: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result})).unwrap_or_default()
}

/// `{"jsonrpc":"2.0","id":…,"error":{code,message,data?}}`; the id is omitted when unknown.
pub fn error_body(id: Option<&Value>, e: &RpcError) -> Vec<u8> {
    let mut error = Map::new();
    error.insert("code".into(), json!(e.code));
    error.insert("message".into(), json!(e.message));
    if let Some(data) = &e.data {
        error.insert("data".into(), data.clone());
    }
    let mut message = Map::new();
    message.insert("jsonrpc".into(), json!("2.0"));
    if let Some(id) = id {
        message.insert("id".into(), id.clone());
    }
    message.insert("error".into(), Value::Object(error));
    serde_json::to_vec(&Value::Object(message)).unwrap_or_default()
}

/// What a JSON-RPC answer (a response object from an upstream) says, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Result { is_error: bool },
    Error { code: i64 },
}

/// Reads a message that answers a request; `None` for notifications and anything else.
pub fn answer_of(message: &Value) -> Option<Answer> {
    let map = message.as_object()?;
    if map.contains_key("method") {
        return None;
    }
    if let Some(error) = map.get("error") {
        return Some(Answer::Error { code: error.get("code").and_then(Value::as_i64).unwrap_or(INTERNAL_ERROR) });
    }
    let result = map.get("result")?;
    Some(Answer::Result { is_error: result.get("isError").and_then(Value::as_bool).unwrap_or(false) })
}

/// At most 64 bytes of client-supplied text in a message.
fn clip(s: &str) -> &str {
    crate::gateway::util::text::truncate(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::error::ErrorCode;
    use crate::gateway::wire::json::REQUEST_BOUNDS;

    fn rejected(body: &str) -> (Option<Value>, i64) {
        let (id, e) = parse(body.as_bytes(), REQUEST_BOUNDS).unwrap_err();
        (id, e.code)
    }

    #[test]
    fn requests_notifications_and_responses() {
        let m = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"x"}}"#, REQUEST_BOUNDS)
            .unwrap();
        assert_eq!(
            m,
            Message::Request {
                id: json!(7),
                method: "tools/list".into(),
                params: json!({"cursor":"x"}).as_object().unwrap().clone()
            }
        );
        let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, REQUEST_BOUNDS).unwrap();
        assert_eq!(m, Message::Notification { method: "notifications/initialized".into(), params: Map::new() });
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#, REQUEST_BOUNDS).unwrap(),
            Message::Response { id: json!("a") }
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":"a","method":"ping","params":null}"#, REQUEST_BOUNDS).unwrap().method(),
            "ping"
        );
    }

    #[test]
    fn framing_errors_have_the_spec_codes() {
        assert_eq!(rejected("{not json"), (None, PARSE_ERROR));
        assert_eq!(rejected(""), (None, PARSE_ERROR));
        assert_eq!(rejected(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#), (None, INVALID_REQUEST));
        assert_eq!(rejected("42"), (None, INVALID_REQUEST));
        assert_eq!(rejected(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#), (Some(json!(1)), INVALID_REQUEST));
        assert_eq!(rejected(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#), (None, INVALID_REQUEST));
        assert_eq!(rejected(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#), (None, INVALID_REQUEST));
        assert_eq!(rejected(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#), (None, INVALID_REQUEST));
        assert_eq!(rejected(r#"{"jsonrpc":"2.0","id":2,"method":5}"#), (Some(json!(2)), INVALID_REQUEST));
        assert_eq!(rejected(r#"{"jsonrpc":"2.0","id":"x"}"#), (Some(json!("x")), INVALID_REQUEST));
        assert_eq!(
            rejected(r#"{"jsonrpc":"2.0","id":3,"method":"ping","params":[1]}"#),
            (Some(json!(3)), INVALID_PARAMS)
        );
        let (_, e) = parse(b"[]", REQUEST_BOUNDS).unwrap_err();
        assert!(e.message.contains("batches"), "{}", e.message);
        assert_eq!(e.http, StatusCode::BAD_REQUEST);
        assert_eq!(RpcError::method_not_found("x").http, StatusCode::NOT_FOUND);
        // A message holding more values than any request body may: 413, naming the limit.
        let many = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"x":[{}]}}}}"#,
            "{\"a\":1},".repeat(4_096) + "1"
        );
        let (_, e) = parse(many.as_bytes(), REQUEST_BOUNDS).unwrap_err();
        assert_eq!((e.code, e.http), (INVALID_REQUEST, StatusCode::PAYLOAD_TOO_LARGE));
        assert_eq!(e.message, "the message holds more than 4096 JSON object keys (this gateway's limit)");
    }

    #[test]
    fn bodies() {
        let e = RpcError::unsupported_version("1900-01-01", &["2026-07-28"]);
        let body: Value = serde_json::from_slice(&error_body(Some(&json!(1)), &e)).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"Unsupported protocol version",
                   "data":{"supported":["2026-07-28"],"requested":"1900-01-01"}}})
        );
        let body: Value = serde_json::from_slice(&error_body(None, &RpcError::parse("Parse error"))).unwrap();
        assert!(body.get("id").is_none());
        let body: Value = serde_json::from_slice(&result_body(&json!("r"), &json!({}))).unwrap();
        assert_eq!(body, json!({"jsonrpc":"2.0","id":"r","result":{}}));
    }

    #[test]
    fn gateway_errors_map_to_gateway_codes() {
        let limited = GatewayError::too_many_requests(ErrorCode::RateLimitExceeded, "slow down", 12);
        let e = RpcError::from_gateway(&limited);
        assert_eq!((e.code, e.http, e.retry_after()), (RATE_LIMITED, StatusCode::OK, Some(12)));
        assert_eq!(e.data.as_ref().unwrap()["code"], "rate_limit_exceeded");
        let e = RpcError::from_gateway(&GatewayError::unauthorized(ErrorCode::InvalidApiKey, "no"));
        assert_eq!((e.code, e.http), (UNAUTHORIZED, StatusCode::UNAUTHORIZED));
        let e = RpcError::from_gateway(&GatewayError::bad_request(ErrorCode::ContentDenied, "rule"));
        assert_eq!(e.code, FORBIDDEN);
    }

    #[test]
    fn answers() {
        assert_eq!(answer_of(&json!({"id":1,"result":{"content":[]}})), Some(Answer::Result { is_error: false }));
        assert_eq!(answer_of(&json!({"id":1,"result":{"isError":true}})), Some(Answer::Result { is_error: true }));
        assert_eq!(answer_of(&json!({"id":1,"error":{"code":-32602}})), Some(Answer::Error { code: -32602 }));
        assert_eq!(answer_of(&json!({"method":"notifications/progress","params":{}})), None);
    }
}
