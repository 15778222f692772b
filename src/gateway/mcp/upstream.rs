//! The gateway as an MCP client of one upstream server: which era to speak (the server's
//! `protocol`, or detected and memoized per isolate), the legacy handshake and its session
//! (kept in KV, re-established once when the upstream forgot it), the request itself, and
//! reading a whole answer (JSON or an SSE stream) when the gateway needs the result.
//! Every failure is a JSON-RPC error that names the server — never a hang or a 5xx.

use std::cell::RefCell;
use std::collections::HashMap;

use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use serde_json::{json, Map, Value};

use crate::gateway::check::SecretRef;
use crate::gateway::mcp::config::{McpServer, Protocol};
use crate::gateway::mcp::jsonrpc::{self, RpcError, UPSTREAM_ERROR, UPSTREAM_TIMEOUT};
use crate::gateway::mcp::protocol::{
    self, encode_header_value, era_of, Envelope, Era, H_METHOD, H_NAME, H_PARAM_PREFIX, H_PROTOCOL_VERSION, H_SESSION,
    LATEST_LEGACY, MODERN,
};
use crate::gateway::mcp::session::{self, Session, UpstreamSession};
use crate::gateway::ports::{Ports, UpstreamError};
use crate::gateway::wire::json::value_from_slice;
use crate::gateway::wire::sse::SseParser;

/// Largest answer the gateway reads whole (listings, handshakes, refusals).
pub const MAX_BUFFERED: usize = 4 << 20;

/// What an isolate remembers about upstreams: the era each `protocol: auto` server speaks.
#[derive(Default)]
pub struct Eras(RefCell<HashMap<String, Era>>);

impl Eras {
    fn get(&self, server: &McpServer) -> Option<Era> {
        match server.protocol {
            Protocol::Version(v) => era_of(v),
            Protocol::Auto => self.0.borrow().get(&server.url).copied(),
        }
    }

    fn set(&self, server: &McpServer, era: Era) {
        if server.protocol == Protocol::Auto {
            self.0.borrow_mut().insert(server.url.clone(), era);
        }
    }

    fn forget(&self, server: &McpServer) {
        self.0.borrow_mut().remove(&server.url);
    }
}

/// Who is calling, as the upstream is told: the client's identity, and where its upstream
/// sessions live (its gateway session, or the key's shared entries).
pub struct Caller {
    pub key_id: String,
    pub envelope: Envelope,
    /// A legacy client's gateway session (id, record); `None` for modern clients.
    pub session: Option<(String, Session)>,
}

/// One message for an upstream.
pub struct Outbound<'a> {
    /// `None` for notifications.
    pub id: Option<&'a Value>,
    pub method: &'a str,
    pub params: Map<String, Value>,
    /// `Mcp-Param-*` headers to send (modern upstreams).
    pub param_headers: Vec<(String, String)>,
}

/// An upstream's answer: still streaming, or already read (a refusal the era check looked at).
pub enum Reply<B> {
    Live(http::Response<B>),
    Read(http::response::Parts, Vec<u8>),
}

impl<B> Reply<B> {
    pub fn status(&self) -> StatusCode {
        match self {
            Reply::Live(r) => r.status(),
            Reply::Read(parts, _) => parts.status,
        }
    }
}

/// How a call reached the server (for the answer's shape and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub era: Era,
}

/// Sends `out` to `server`: in the era it speaks, through a legacy session when it needs one
/// (established, persisted, and re-established once if the upstream lost it).
pub async fn send<P: Ports>(
    ports: &P,
    eras: &Eras,
    server: &McpServer,
    caller: &mut Caller,
    out: &Outbound<'_>,
) -> Result<(Reply<P::Body>, Route), RpcError> {
    let known = eras.get(server);
    if known != Some(Era::Legacy) {
        let response = post(ports, server, build_modern(server, &caller.envelope, out)?).await?;
        if known == Some(Era::Modern) || response.status().is_success() {
            eras.set(server, Era::Modern);
            return Ok((Reply::Live(response), Route { era: Era::Modern }));
        }
        // A refusal: a modern server says so with a modern JSON-RPC error; anything else is a
        // legacy server (2026-07-28 "Backward Compatibility").
        let (parts, body) = response.into_parts();
        let body = ports.read_body(body, MAX_BUFFERED).await.unwrap_or_default();
        if is_modern_refusal(&body, out.id) {
            eras.set(server, Era::Modern);
            return Ok((Reply::Read(parts, body), Route { era: Era::Modern }));
        }
        eras.set(server, Era::Legacy);
    }
    for attempt in 0..2 {
        let upstream = match legacy_session(ports, server, caller).await {
            Ok(upstream) => upstream,
            Err(e) => {
                // A detection is not kept when the handshake it led to failed.
                eras.forget(server);
                return Err(e);
            }
        };
        let request = build_legacy(server, &upstream, out)?;
        let response = post(ports, server, request).await?;
        // 404 on a request with a session id: the upstream ended (or forgot) the session.
        if response.status() == StatusCode::NOT_FOUND && upstream.id.is_some() && attempt == 0 {
            forget_session(ports, server, caller).await;
            continue;
        }
        return Ok((Reply::Live(response), Route { era: Era::Legacy }));
    }
    Err(upstream_error(server, "kept losing its session"))
}

/// Sends a request and reads its whole answer: the `result`, or the upstream's JSON-RPC error.
pub async fn call<P: Ports>(
    ports: &P,
    eras: &Eras,
    server: &McpServer,
    caller: &mut Caller,
    out: &Outbound<'_>,
) -> Result<Value, RpcError> {
    let (reply, _) = send(ports, eras, server, caller, out).await?;
    let (parts, body) = match reply {
        Reply::Read(parts, body) => (parts, body),
        Reply::Live(response) => {
            let (parts, body) = response.into_parts();
            let body = ports.read_body(body, MAX_BUFFERED).await.map_err(|e| {
                upstream_error(server, &format!("its answer could not be read ({})", upstream_text(&e)))
            })?;
            (parts, body)
        }
    };
    let id = out.id.cloned().unwrap_or(Value::Null);
    let message = answer_message(server, &parts, &body, &id)?;
    result_of(message)
}

/// Forwards a notification (best effort: the client has its 202 either way).
pub async fn notify<P: Ports>(ports: &P, eras: &Eras, server: &McpServer, caller: &mut Caller, out: &Outbound<'_>) {
    if let Ok((Reply::Live(response), _)) = send(ports, eras, server, caller, out).await {
        let _ = ports.read_body(response.into_body(), 64 << 10).await;
    }
}

/// Ends this caller's legacy sessions with the server (DELETE), best effort.
pub async fn end_session<P: Ports>(ports: &P, server: &McpServer, upstream: &UpstreamSession) {
    let Some(id) = &upstream.id else { return };
    let Ok(mut request) = base_request(server, http::Method::DELETE, Vec::new()) else { return };
    let headers = request.headers_mut();
    put(headers, H_SESSION, id);
    put(headers, H_PROTOCOL_VERSION, &upstream.version);
    if let Ok(request) = authorize(ports, server, request) {
        if let Ok(response) = ports.send(&request, server.timeout_ms).await {
            let _ = ports.read_body(response.into_body(), 64 << 10).await;
        }
    }
}

/// The message that answers request `id` in a JSON body or an SSE stream; a non-JSON-RPC
/// refusal becomes an error naming the server and its HTTP status.
pub fn answer_message(
    server: &McpServer,
    parts: &http::response::Parts,
    body: &[u8],
    id: &Value,
) -> Result<Value, RpcError> {
    let is_sse = content_type(&parts.headers).starts_with("text/event-stream");
    let found = if is_sse {
        let mut parser = SseParser::new();
        let mut events = parser.push(body);
        events.extend(parser.finish());
        events
            .iter()
            .filter_map(|e| e.data.parse::<Value>().ok())
            .find(|m| jsonrpc::answer_of(m).is_some() && (m.get("id") == Some(id) || id.is_null()))
    } else {
        value_from_slice(body).ok().filter(|m| jsonrpc::answer_of(m).is_some())
    };
    match found {
        Some(message) => Ok(message),
        None if parts.status.is_success() => Err(upstream_error(server, "answered without a JSON-RPC response")),
        None => Err(upstream_error(server, &format!("answered HTTP {}", parts.status.as_u16()))),
    }
}

/// The `result` of an answer, or its error relayed as is.
pub fn result_of(message: Value) -> Result<Value, RpcError> {
    let Value::Object(mut map) = message else { return Err(RpcError::refusal(UPSTREAM_ERROR, "invalid answer")) };
    if let Some(error) = map.remove("error") {
        return Err(relayed(&error));
    }
    Ok(map.remove("result").unwrap_or_else(|| json!({})))
}

/// An upstream's JSON-RPC error, for the client: its code, message and data unchanged; the HTTP
/// status the code calls for.
pub fn relayed(error: &Value) -> RpcError {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(jsonrpc::INTERNAL_ERROR);
    let message = error.get("message").and_then(Value::as_str).unwrap_or("error").to_string();
    let http = match code {
        jsonrpc::PARSE_ERROR
        | jsonrpc::INVALID_REQUEST
        | jsonrpc::INVALID_PARAMS
        | jsonrpc::HEADER_MISMATCH
        | jsonrpc::UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        jsonrpc::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    let mut e = RpcError::refusal(code, message).with_http(http);
    e.data = error.get("data").cloned();
    e
}

/// A JSON-RPC error for a failed upstream, naming it (`data.server`).
pub fn upstream_error(server: &McpServer, what: &str) -> RpcError {
    RpcError::refusal(UPSTREAM_ERROR, format!("MCP server \"{}\" {what}", server.name))
        .with_data(json!({"server": server.name}))
}

fn upstream_text(e: &UpstreamError) -> String {
    match e {
        UpstreamError::Connect(m) | UpstreamError::Body(m) => crate::gateway::util::text::truncate(m, 200).to_string(),
        UpstreamError::Timeout => "timeout".into(),
    }
}

pub fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Whether a refusal of a modern request came from a modern server: an error only modern
/// servers send (-32020..-32022), or any JSON-RPC error about this very request (the server
/// read and processed it; a legacy server without a session refuses before reading it).
fn is_modern_refusal(body: &[u8], id: Option<&Value>) -> bool {
    let Ok(message) = value_from_slice(body) else { return false };
    let code = message.get("error").and_then(|e| e.get("code")).and_then(Value::as_i64);
    matches!(code, Some(-32022..=-32020)) || (code.is_some() && id.is_some() && message.get("id") == id)
}

async fn post<P: Ports>(
    ports: &P,
    server: &McpServer,
    request: Request<Vec<u8>>,
) -> Result<http::Response<P::Body>, RpcError> {
    let request = authorize(ports, server, request)?;
    ports.send(&request, server.timeout_ms).await.map_err(|e| match e {
        UpstreamError::Timeout => RpcError::refusal(
            UPSTREAM_TIMEOUT,
            format!("MCP server \"{}\" did not answer within {} ms", server.name, server.timeout_ms),
        )
        .with_data(json!({"server": server.name})),
        other => upstream_error(server, &format!("is unreachable ({})", upstream_text(&other))),
    })
}

/// Adds the gateway's credential for the server (never the client's).
fn authorize<P: Ports>(
    ports: &P,
    server: &McpServer,
    mut request: Request<Vec<u8>>,
) -> Result<Request<Vec<u8>>, RpcError> {
    let Some(auth) = &server.auth else { return Ok(request) };
    let secret = match &auth.value {
        SecretRef::Literal(v) => v.clone(),
        SecretRef::Env(name) => ports.secret(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            upstream_error(
                server,
                &format!("cannot be called: its credential ${name} is not set in this host's secrets"),
            )
        })?,
    };
    let value = HeaderValue::from_str(&format!("{}{secret}", auth.prefix))
        .map_err(|_| upstream_error(server, "has a credential that is not a valid header value"))?;
    request.headers_mut().insert(auth.header.clone(), value);
    Ok(request)
}

fn base_request(server: &McpServer, method: http::Method, body: Vec<u8>) -> Result<Request<Vec<u8>>, RpcError> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = server.url.parse().map_err(|_| upstream_error(server, "has an invalid URL"))?;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
    Ok(request)
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn body_of(out: &Outbound<'_>, params: Map<String, Value>) -> Vec<u8> {
    let mut message = Map::new();
    message.insert("jsonrpc".into(), json!("2.0"));
    if let Some(id) = out.id {
        message.insert("id".into(), id.clone());
    }
    message.insert("method".into(), json!(out.method));
    if !params.is_empty() {
        message.insert("params".into(), Value::Object(params));
    }
    serde_json::to_vec(&Value::Object(message)).unwrap_or_default()
}

/// A modern request: the client's identity in `_meta`, mirrored into the routing headers.
fn build_modern(server: &McpServer, envelope: &Envelope, out: &Outbound<'_>) -> Result<Request<Vec<u8>>, RpcError> {
    let version = MODERN[0];
    let mut params = out.params.clone();
    envelope.stamp(&mut params, version);
    let name = protocol::name_param(out.method).and_then(|k| params.get(k)?.as_str().map(encode_header_value));
    let mut request = base_request(server, http::Method::POST, body_of(out, params))?;
    let headers = request.headers_mut();
    put(headers, H_PROTOCOL_VERSION, version);
    put(headers, H_METHOD, out.method);
    if let Some(name) = name {
        put(headers, H_NAME, &name);
    }
    for (name, value) in &out.param_headers {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(format!("{H_PARAM_PREFIX}{name}").as_bytes()), HeaderValue::from_str(value))
        {
            headers.insert(name, value);
        }
    }
    Ok(request)
}

/// A legacy request: the session's id and version in headers, no modern `_meta` keys.
fn build_legacy(
    server: &McpServer,
    upstream: &UpstreamSession,
    out: &Outbound<'_>,
) -> Result<Request<Vec<u8>>, RpcError> {
    let mut params = out.params.clone();
    protocol::unstamp(&mut params);
    let mut request = base_request(server, http::Method::POST, body_of(out, params))?;
    let headers = request.headers_mut();
    put(headers, H_PROTOCOL_VERSION, &upstream.version);
    if let Some(id) = &upstream.id {
        put(headers, H_SESSION, id);
    }
    Ok(request)
}

/// The caller's session with a legacy server: recorded (in its gateway session, or the key's
/// shared entry), else established now and recorded.
async fn legacy_session<P: Ports>(
    ports: &P,
    server: &McpServer,
    caller: &mut Caller,
) -> Result<UpstreamSession, RpcError> {
    let recorded = match &caller.session {
        Some((_, s)) => s.upstream.get(&server.name).cloned(),
        None => session::load_shared(ports, &server.name, &caller.key_id).await,
    };
    if let Some(upstream) = recorded {
        return Ok(upstream);
    }
    let version = match server.protocol {
        Protocol::Version(v) if era_of(v) == Some(Era::Legacy) => v,
        _ => caller.session.as_ref().map_or(LATEST_LEGACY, |(_, s)| protocol::negotiate_legacy(Some(&s.version))),
    };
    let upstream = initialize(ports, server, &caller.envelope, version).await?;
    // Recording failures only cost a new handshake next time.
    let now = ports.now_ms();
    match &mut caller.session {
        Some((id, s)) => {
            s.upstream.insert(server.name.clone(), upstream.clone());
            let _ = session::store(ports, id, s, now).await;
        }
        None => {
            let _ = session::store_shared(ports, &server.name, &caller.key_id, &upstream).await;
        }
    }
    Ok(upstream)
}

async fn forget_session<P: Ports>(ports: &P, server: &McpServer, caller: &mut Caller) {
    match &mut caller.session {
        Some((id, s)) => {
            s.upstream.remove(&server.name);
            let _ = session::store(ports, id, s, ports.now_ms()).await;
        }
        None => {
            let _ = session::forget_shared(ports, &server.name, &caller.key_id).await;
        }
    }
}

/// The legacy handshake: `initialize` (the client's capabilities and info), then
/// `notifications/initialized` in the session the server assigned.
async fn initialize<P: Ports>(
    ports: &P,
    server: &McpServer,
    envelope: &Envelope,
    version: &str,
) -> Result<UpstreamSession, RpcError> {
    let id = json!("gateway-initialize");
    let mut params = Map::new();
    params.insert("protocolVersion".into(), json!(version));
    params.insert("capabilities".into(), envelope.capabilities.clone());
    params.insert(
        "clientInfo".into(),
        envelope
            .client_info
            .clone()
            .unwrap_or_else(|| json!({"name": "edge-gateway", "version": env!("CARGO_PKG_VERSION")})),
    );
    let out = Outbound { id: Some(&id), method: "initialize", params, param_headers: Vec::new() };
    let request = base_request(server, http::Method::POST, body_of(&out, out.params.clone()))?;
    let response = post(ports, server, request).await?;
    let (parts, body) = response.into_parts();
    let body = ports
        .read_body(body, MAX_BUFFERED)
        .await
        .map_err(|e| upstream_error(server, &format!("failed its handshake ({})", upstream_text(&e))))?;
    let result = result_of(answer_message(server, &parts, &body, &id)?)
        .map_err(|e| upstream_error(server, &format!("refused the handshake: {}", e.message)))?;
    let negotiated = result.get("protocolVersion").and_then(Value::as_str).unwrap_or(version);
    if era_of(negotiated) != Some(Era::Legacy) {
        return Err(upstream_error(server, &format!("negotiated an unsupported protocol version \"{negotiated}\"")));
    }
    let session_id = parts.headers.get(H_SESSION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let upstream = UpstreamSession { id: session_id, version: negotiated.to_string() };
    let initialized =
        Outbound { id: None, method: "notifications/initialized", params: Map::new(), param_headers: Vec::new() };
    let request = build_legacy(server, &upstream, &initialized)?;
    let response = post(ports, server, request).await?;
    let _ = ports.read_body(response.into_body(), 64 << 10).await;
    Ok(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::check::Issues;
    use crate::gateway::mcp::config::check_section;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use std::cell::Cell;
    use std::rc::Rc;

    fn server(protocol: &str) -> std::sync::Arc<McpServer> {
        let mut issues = Issues::default();
        let c = check_section(
            &json!([{"name": "files", "url": "http://files.test/mcp", "protocol": protocol, "auth": {"bearer": "$FILES_TOKEN"}}]),
            None,
            &[],
            &mut issues,
        );
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        c.servers[0].clone()
    }

    fn caller() -> Caller {
        Caller {
            key_id: "k_1".into(),
            envelope: Envelope {
                version: "2026-07-28".into(),
                client_info: Some(json!({"name": "c"})),
                capabilities: json!({}),
            },
            session: None,
        }
    }

    fn json_response(status: u16, body: Value, session: Option<&str>) -> http::Response<Vec<u8>> {
        let mut r = http::Response::new(serde_json::to_vec(&body).unwrap());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(s) = session {
            r.headers_mut().insert(H_SESSION, HeaderValue::from_str(s).unwrap());
        }
        r
    }

    /// A legacy server: needs initialize and its session id; answers tools/list.
    fn legacy_host(sessions_issued: Rc<Cell<u32>>) -> MemoryHost {
        MemoryHost::new(move |req| {
            let body: Value = serde_json::from_slice(req.body()).unwrap();
            let method = body["method"].as_str().unwrap();
            if method == "initialize" {
                sessions_issued.set(sessions_issued.get() + 1);
                assert_eq!(req.headers()["authorization"], "Bearer s3cret");
                let id = format!("up-{}", sessions_issued.get());
                return Ok(json_response(200, json!({"jsonrpc":"2.0","id":body["id"],"result":{"protocolVersion":"2025-06-18"}}), Some(&id)));
            }
            let session = req.headers().get(H_SESSION).map(|v| v.to_str().unwrap().to_string());
            match session {
                None => Ok(json_response(400, json!({"jsonrpc":"2.0","id":"server-error","error":{"code":-32600,"message":"Bad Request: No valid session ID provided"}}), None)),
                Some(s) if s != format!("up-{}", sessions_issued.get()) => Ok(json_response(404, json!({"jsonrpc":"2.0","error":{"code":-32600,"message":"Session not found"}}), None)),
                Some(_) if method == "notifications/initialized" => {
                    let mut r = http::Response::new(Vec::new());
                    *r.status_mut() = StatusCode::ACCEPTED;
                    Ok(r)
                }
                Some(_) => {
                    assert!(body["params"].get("_meta").is_none(), "no modern envelope to a legacy server");
                    assert_eq!(req.headers()[H_PROTOCOL_VERSION], "2025-06-18");
                    Ok(json_response(200, json!({"jsonrpc":"2.0","id":body["id"],"result":{"tools":[{"name":"read"}]}}), None))
                }
            }
        })
        .with_secret("FILES_TOKEN", "s3cret")
    }

    #[test]
    fn auto_detects_a_legacy_server_and_keeps_its_session() {
        let issued = Rc::new(Cell::new(0));
        let host = legacy_host(issued.clone());
        let eras = Eras::default();
        let files = server("auto");
        let mut c = caller();
        let id = json!(1);
        let out = Outbound { id: Some(&id), method: "tools/list", params: Map::new(), param_headers: Vec::new() };
        let result = block_on(call(&host, &eras, &files, &mut c, &out)).unwrap();
        assert_eq!(result["tools"][0]["name"], "read");
        assert_eq!(eras.get(&files), Some(Era::Legacy), "memoized");
        assert_eq!(issued.get(), 1);
        // The key's shared upstream session is reused by the next call.
        block_on(call(&host, &eras, &files, &mut c, &out)).unwrap();
        assert_eq!(issued.get(), 1);
        // The upstream forgets the session: one new handshake, same answer.
        issued.set(5);
        block_on(call(&host, &eras, &files, &mut c, &out)).unwrap();
        assert_eq!(issued.get(), 6);
        assert_eq!(block_on(session::load_shared(&host, "files", "k_1")).map(|u| u.id), Some(Some("up-6".into())));
        let sent = host.sent.borrow();
        assert_eq!(sent[0].headers()[H_METHOD], "tools/list", "the first try is modern");
    }

    #[test]
    fn a_modern_refusal_is_not_taken_for_a_legacy_server() {
        let host = MemoryHost::new(|req| {
            let body: Value = serde_json::from_slice(req.body()).unwrap();
            assert_ne!(body["method"], "initialize", "no fallback to the handshake");
            Ok(json_response(
                400,
                json!({"jsonrpc":"2.0","id":body["id"],"error":{"code":-32602,"message":"bad arguments"}}),
                None,
            ))
        })
        .with_secret("FILES_TOKEN", "t");
        let eras = Eras::default();
        let files = server("auto");
        let id = json!(4);
        let out = Outbound { id: Some(&id), method: "tools/call", params: Map::new(), param_headers: Vec::new() };
        let e = block_on(call(&host, &eras, &files, &mut caller(), &out)).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (-32602, "bad arguments"));
        assert_eq!(eras.get(&files), Some(Era::Modern));

        // A legacy verdict whose handshake then fails is not kept.
        let refusing =
            MemoryHost::new(|_| Ok(json_response(400, json!({"error": "nope"}), None))).with_secret("FILES_TOKEN", "t");
        let eras = Eras::default();
        assert!(block_on(call(&refusing, &eras, &files, &mut caller(), &out)).is_err());
        assert_eq!(eras.get(&files), None);
    }

    #[test]
    fn a_modern_server_gets_the_envelope_and_routing_headers() {
        let host = MemoryHost::new(|req| {
            let body: Value = serde_json::from_slice(req.body()).unwrap();
            assert_eq!(body["params"]["_meta"][protocol::META_PROTOCOL_VERSION], "2026-07-28");
            assert_eq!(body["params"]["name"], "é tool");
            assert_eq!(req.headers()[H_NAME], "=?base64?w6kgdG9vbA==?=");
            assert_eq!(req.headers()["mcp-param-region"], "eu");
            let mut r = json_response(200, json!({}), None);
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            *r.body_mut() = format!(
                "event: message\ndata: {}\n\nevent: message\ndata: {}\n\n",
                json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}),
                json!({"jsonrpc":"2.0","id":9,"result":{"content":[],"resultType":"complete"}})
            )
            .into_bytes();
            Ok(r)
        })
        .with_secret("FILES_TOKEN", "t");
        let eras = Eras::default();
        let files = server("2026-07-28");
        let id = json!(9);
        let params = json!({"name": "é tool", "arguments": {"region": "eu"}}).as_object().unwrap().clone();
        let out = Outbound {
            id: Some(&id),
            method: "tools/call",
            params,
            param_headers: vec![("Region".into(), "eu".into())],
        };
        let result = block_on(call(&host, &eras, &files, &mut caller(), &out)).unwrap();
        assert_eq!(result["resultType"], "complete");
    }

    #[test]
    fn failures_name_the_server() {
        let eras = Eras::default();
        let files = server("2026-07-28");
        let id = json!(1);
        let out = Outbound { id: Some(&id), method: "ping", params: Map::new(), param_headers: Vec::new() };
        let down = MemoryHost::new(|_| Err(UpstreamError::Connect("connection refused".into())))
            .with_secret("FILES_TOKEN", "t");
        let e = block_on(call(&down, &eras, &files, &mut caller(), &out)).unwrap_err();
        assert_eq!((e.code, e.http), (UPSTREAM_ERROR, StatusCode::OK));
        assert!(e.message.starts_with("MCP server \"files\" is unreachable"), "{}", e.message);
        let slow = MemoryHost::new(|_| Err(UpstreamError::Timeout)).with_secret("FILES_TOKEN", "t");
        let e = block_on(call(&slow, &eras, &files, &mut caller(), &out)).unwrap_err();
        assert_eq!(e.code, UPSTREAM_TIMEOUT);
        assert_eq!(e.data.unwrap()["server"], "files");
        let no_secret = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let e = block_on(call(&no_secret, &eras, &files, &mut caller(), &out)).unwrap_err();
        assert!(e.message.contains("$FILES_TOKEN is not set"), "{}", e.message);
        let broken = MemoryHost::new(|_| Ok(json_response(500, json!("oops"), None))).with_secret("FILES_TOKEN", "t");
        let e = block_on(call(&broken, &eras, &files, &mut caller(), &out)).unwrap_err();
        assert_eq!(e.message, "MCP server \"files\" answered HTTP 500");
        let refusing = MemoryHost::new(|_| {
            Ok(json_response(
                200,
                json!({"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool"}}),
                None,
            ))
        })
        .with_secret("FILES_TOKEN", "t");
        let e = block_on(call(&refusing, &eras, &files, &mut caller(), &out)).unwrap_err();
        assert_eq!((e.code, e.message.as_str(), e.http), (-32602, "Unknown tool", StatusCode::BAD_REQUEST));
    }
}
