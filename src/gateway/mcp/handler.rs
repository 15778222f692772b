//! `/mcp` and `/mcp/{server}`: one MCP endpoint (Streamable HTTP) in front of the configured
//! servers. The pipeline authenticates the key; this module does the rest of one POST:
//! framing, the protocol era (a modern request's envelope, or a legacy session), the method,
//! and the governance of tool calls (allow-lists, per-tool limits, guardrails).
//!
//! On `/mcp` the servers' tools and prompts appear as `server__name`, filtered by the caller's
//! policy; calls are routed to the owning server with the original name. On `/mcp/{server}`
//! names are the server's own and every method the gateway does not govern is passed through.

use std::rc::Rc;
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::gateway::check::did_you_mean;
use crate::gateway::error::{ErrorCode, GatewayError};
use crate::gateway::features::guard;
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::features::limits::{self, Admission, Limiter, LimitsConfig};
use crate::gateway::mcp::catalog::{self, Kind};
use crate::gateway::mcp::config::{McpConfig, McpServer};
use crate::gateway::mcp::jsonrpc::{self, Message, RpcError, FORBIDDEN, INVALID_PARAMS, RATE_LIMITED};
use crate::gateway::mcp::log::McpLog;
use crate::gateway::mcp::policy::{self, Policy};
use crate::gateway::mcp::protocol::{self, Envelope, Era, H_PARAM_PREFIX, H_SESSION};
use crate::gateway::mcp::session::{self, Session};
use crate::gateway::mcp::state::McpState;
use crate::gateway::mcp::stream::McpStream;
use crate::gateway::mcp::upstream::{self, Caller, Outbound, Reply};
use crate::gateway::ports::Ports;
use crate::gateway::wire::json::Bounds;

/// One HTTP request to `/mcp` or `/mcp/{server}`.
pub struct McpRequest<'a> {
    pub method: &'a Method,
    /// `/mcp/{server}`: the one server this endpoint fronts.
    pub server: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What the handler needs from the gateway: config, limits and isolate state.
pub struct McpEnv<'a> {
    pub config: &'a McpConfig,
    pub limits: &'a LimitsConfig,
    pub limiter: &'a Rc<Limiter>,
    pub state: &'a McpState,
    pub max_body_bytes: usize,
    pub body_bounds: Bounds,
    pub max_response_bytes: usize,
}

pub enum McpBody<B> {
    Full(Vec<u8>),
    /// The upstream's body, streamed through the stage.
    Stream(B, McpStream),
}

/// The answer, its log fields, and (for a tool call) what to account after the response.
pub struct McpAnswer<B> {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: McpBody<B>,
    pub log: McpLog,
    /// This was a tool call: it gets one usage record.
    pub tool_call: bool,
    /// Its admission by the limits (settled after the response).
    pub admission: Option<Admission>,
}

const SERVER_NAME: &str = "edge-gateway";

/// Serves one request. `key` is the pipeline's authentication outcome.
pub async fn handle<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    key: Result<Rc<KeyRecord>, GatewayError>,
    request: McpRequest<'_>,
) -> McpAnswer<P::Body> {
    let now = ports.now_ms();
    let mut log = McpLog::new(now, request.body.len());
    log.method = request.method.to_string();
    let mut answer = match serve(ports, env, key, &request, &mut log).await {
        Ok(answer) => answer,
        Err((id, e)) => {
            if log.status == "ok" {
                log.error(&e);
            } else {
                log.code = Some(e.code); // e.g. "denied" stays
            }
            let mut answer = error_answer(id.as_ref(), &e, log);
            if e.http == StatusCode::METHOD_NOT_ALLOWED {
                answer.headers.insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            }
            answer
        }
    };
    // Every tool call of an authenticated caller gets a usage record, refused ones included.
    answer.tool_call = answer.log.method == "tools/call";
    if !answer.log.streamed {
        answer.log.latency_ms = ports.now_ms().saturating_sub(now);
        if let McpBody::Full(bytes) = &answer.body {
            answer.log.bytes_out = bytes.len() as u64;
        }
    }
    answer
}

type Failed = (Option<Value>, RpcError);

/// Everything a request carries into its method.
struct Ctx<'r> {
    key: Rc<KeyRecord>,
    /// `/mcp/{server}`: that server.
    single: Option<Arc<McpServer>>,
    caller: Caller,
    era: Era,
    headers: &'r HeaderMap,
}

async fn serve<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    key: Result<Rc<KeyRecord>, GatewayError>,
    request: &McpRequest<'_>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, Failed> {
    let key = key.map_err(|e| (None, RpcError::from_gateway(&e)))?;
    if !key.allows("mcp") && key.mcp.is_none() {
        return Err((
            None,
            RpcError::refusal(FORBIDDEN, "this API key may not use MCP (its endpoints do not include \"mcp\")"),
        ));
    }
    let single = match request.server {
        None => None,
        Some(name) => {
            let server = env.config.server(name).ok_or_else(|| (None, unknown_server(env.config, name)))?;
            if !Policy::for_key(env.config, &key).allows_server(server) {
                return Err((
                    None,
                    RpcError::refusal(FORBIDDEN, format!("this API key may not use MCP server \"{name}\"")),
                ));
            }
            log.server = Some(name.to_string());
            Some(server.clone())
        }
    };
    match *request.method {
        Method::POST => {}
        Method::DELETE => return end_session(ports, env, &key, request, single.as_deref(), log).await,
        _ => {
            let e = RpcError::invalid_request(
                "this endpoint takes POST (and DELETE to end a session); it offers no GET stream",
            )
            .with_http(StatusCode::METHOD_NOT_ALLOWED);
            return Err((None, e));
        }
    }
    if request.body.len() > env.max_body_bytes {
        let e = RpcError::invalid_request(format!("the message exceeds the limit of {} bytes", env.max_body_bytes))
            .with_http(StatusCode::PAYLOAD_TOO_LARGE);
        return Err((None, e));
    }
    let message = jsonrpc::parse(request.body, env.body_bounds)?;
    log.method = message.method().to_string();
    let (id, method, params) = match message {
        Message::Response { id } => {
            return Err((
                Some(id),
                RpcError::invalid_request("the gateway sends no requests to clients, so it takes no responses"),
            ))
        }
        Message::Request { id, method, params } => (Some(id), method, params),
        Message::Notification { method, params } => (None, method, params),
    };
    let fail = |e: RpcError| (id.clone(), e);

    if method == "initialize" {
        let Some(id) = &id else { return Err(fail(RpcError::invalid_request("initialize must be a request"))) };
        return initialize(ports, &key, single.as_deref(), id, &params, log).await.map_err(fail);
    }
    let version_header = protocol::version_header(request.headers).map(str::to_string);
    let legacy_version = match version_header.as_deref() {
        None => Some(protocol::DEFAULT_LEGACY),
        Some(v) if protocol::era_of(v) == Some(Era::Legacy) => Some(v),
        Some(_) => None,
    };
    let (era, caller) = match legacy_version {
        None => {
            let envelope = protocol::validate_modern(request.headers, &method, &params).map_err(fail)?;
            log.protocol = Some(envelope.version.clone());
            (Era::Modern, Caller { key_id: key.id.clone(), envelope, session: None })
        }
        Some(version) => {
            let (session_id, session) = legacy_session(ports, &key, request, single.as_deref()).await.map_err(fail)?;
            log.protocol = Some(version.to_string());
            let envelope = Envelope {
                version: session.version.clone(),
                client_info: session.client_info.clone(),
                capabilities: session.capabilities.clone(),
            };
            (Era::Legacy, Caller { key_id: key.id.clone(), envelope, session: Some((session_id, session)) })
        }
    };
    let mut cx = Ctx { key, single, caller, era, headers: request.headers };
    let Some(id) = id else {
        notification(ports, env, &mut cx, &method, params).await;
        return Ok(accepted(log.clone()));
    };
    request_method(ports, env, &mut cx, &id, &method, params, log).await.map_err(|e| (Some(id), e))
}

async fn request_method<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    id: &Value,
    method: &str,
    params: Map<String, Value>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, RpcError> {
    if let Some(kind) = Kind::from_method(method) {
        return list(ports, env, cx, id, kind, &params, log).await;
    }
    match method {
        "ping" => Ok(result_answer(id, complete(cx.era, json!({})), log)),
        "server/discover" => Ok(result_answer(id, discover(cx.single.as_deref()), log)),
        "tools/call" => call_tool(ports, env, cx, id, params, log).await,
        "prompts/get" => {
            let (server, name) = route_by_name(env, cx, &params, "prompt")?;
            forward(ports, env, cx, &server, Forward::plain(id, method, with_name(params, "name", &name)), log).await
        }
        "resources/read" => {
            let server = match &cx.single {
                Some(s) => s.clone(),
                None => resource_owner(ports, env, cx, &params).await?,
            };
            forward(ports, env, cx, &server, Forward::plain(id, method, params), log).await
        }
        "completion/complete" => {
            let server = completion_target(ports, env, cx, &params).await?;
            let mut params = params;
            if cx.single.is_none() {
                if let Some(Value::Object(r)) = params.get_mut("ref") {
                    if let Some((_, name)) = r.get("name").and_then(Value::as_str).and_then(policy::split) {
                        let name = name.to_string();
                        r.insert("name".into(), json!(name));
                    }
                }
            }
            forward(ports, env, cx, &server, Forward::plain(id, method, params), log).await
        }
        "logging/setLevel" if cx.single.is_none() => Ok(result_answer(id, complete(cx.era, json!({})), log)),
        _ => match cx.single.clone() {
            // One server: whatever the gateway does not govern is the server's business.
            Some(server) => forward(ports, env, cx, &server, Forward::plain(id, method, params), log).await,
            None => Err(RpcError::method_not_found(method)),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}, "prompts": {"listChanged": false},
           "resources": {"subscribe": false, "listChanged": false}, "completions": {}})
}

fn server_info() -> Value {
    json!({"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION")})
}

fn instructions(single: Option<&McpServer>) -> String {
    match single {
        Some(s) => format!("The MCP server \"{}\", through the Edge AI Gateway.", s.name),
        None => "Tools and prompts of several MCP servers through the Edge AI Gateway, named \"<server>__<name>\"."
            .to_string(),
    }
}

/// A legacy client's handshake: the negotiated version, and a new gateway session in KV.
async fn initialize<P: Ports>(
    ports: &P,
    key: &KeyRecord,
    single: Option<&McpServer>,
    id: &Value,
    params: &Map<String, Value>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, RpcError> {
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = protocol::negotiate_legacy(requested);
    log.protocol = Some(version.to_string());
    let now = ports.now_ms();
    let session_id = session::new_id(ports);
    let record = Session {
        version: version.to_string(),
        key_id: key.id.clone(),
        server: single.map(|s| s.name.clone()),
        client_info: params.get("clientInfo").cloned(),
        capabilities: params.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        created_ms: now,
        expires_ms: now + session::SESSION_TTL_SECS * 1000,
        upstream: Default::default(),
    };
    session::store(ports, &session_id, &record, now).await.map_err(store_failed)?;
    let result = json!({"protocolVersion": version, "capabilities": capabilities(), "serverInfo": server_info(),
                        "instructions": instructions(single)});
    let mut answer = result_answer(id, result, log);
    if let Ok(value) = HeaderValue::from_str(&session_id) {
        answer.headers.insert(H_SESSION, value);
    }
    Ok(answer)
}

/// `server/discover` (2026-07-28).
fn discover(single: Option<&McpServer>) -> Value {
    json!({"supportedVersions": protocol::supported(), "capabilities": capabilities(),
           "instructions": instructions(single), "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
           "_meta": {protocol::META_SERVER_INFO: server_info()}})
}

/// The gateway session a legacy request names: it must exist, be this key's, and belong to
/// this endpoint.
async fn legacy_session<P: Ports>(
    ports: &P,
    key: &KeyRecord,
    request: &McpRequest<'_>,
    single: Option<&McpServer>,
) -> Result<(String, Session), RpcError> {
    let Some(id) = request.headers.get(H_SESSION).and_then(|v| v.to_str().ok()) else {
        return Err(RpcError::invalid_request(
            "Bad Request: no Mcp-Session-Id (send `initialize` first, or use the 2026-07-28 request envelope)",
        ));
    };
    let found = session::load(ports, id, ports.now_ms()).await.map_err(store_failed)?;
    match found {
        Some(s) if s.key_id == key.id && s.server.as_deref() == single.map(|s| s.name.as_str()) => {
            Ok((id.to_string(), s))
        }
        _ => Err(RpcError::invalid_request("Session not found").with_http(StatusCode::NOT_FOUND)),
    }
}

/// DELETE: ends the gateway session and the upstream sessions behind it.
async fn end_session<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    key: &KeyRecord,
    request: &McpRequest<'_>,
    single: Option<&McpServer>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, Failed> {
    let (id, record) = legacy_session(ports, key, request, single).await.map_err(|e| (None, e))?;
    for (name, upstream) in &record.upstream {
        if let Some(server) = env.config.server(name) {
            upstream::end_session(ports, server, upstream).await;
        }
    }
    session::delete(ports, &id).await.map_err(|e| (None, store_failed(e)))?;
    let mut answer = accepted(log.clone());
    answer.status = StatusCode::OK;
    Ok(answer)
}

/// Client notifications: `notifications/initialized` is the gateway's; the rest go to the
/// legacy upstream sessions this client holds (modern upstreams take none over HTTP).
async fn notification<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    method: &str,
    params: Map<String, Value>,
) {
    if method == "notifications/initialized" || cx.era == Era::Modern {
        return;
    }
    let names: Vec<String> = match &cx.caller.session {
        Some((_, s)) => s.upstream.keys().cloned().collect(),
        None => Vec::new(),
    };
    for name in names {
        if let Some(server) = env.config.server(&name) {
            let out = Outbound { id: None, method, params: params.clone(), param_headers: Vec::new() };
            upstream::notify(ports, &env.state.eras, server, &mut cx.caller, &out).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Listings

/// The servers a caller may see here, in config order.
fn servers_for(env: &McpEnv<'_>, cx: &Ctx<'_>) -> Vec<Arc<McpServer>> {
    let policy = Policy::for_key(env.config, &cx.key);
    match &cx.single {
        Some(s) => vec![s.clone()],
        None => env.config.servers.iter().filter(|s| policy.allows_server(s)).cloned().collect(),
    }
}

/// `tools/list`, `prompts/list`, `resources/list`, `resources/templates/list`: the union over
/// the caller's servers (one page), filtered and namespaced.
async fn list<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    id: &Value,
    kind: Kind,
    params: &Map<String, Value>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, RpcError> {
    if params.get("cursor").is_some_and(|c| !c.is_null()) {
        return Err(RpcError::invalid_params("invalid cursor: the gateway lists everything in one page"));
    }
    let mut items = Vec::new();
    for server in servers_for(env, cx) {
        let listed = catalog::items(ports, &env.state.listings, &env.state.eras, &server, &mut cx.caller, kind).await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(_) if cx.single.is_none() => {
                log.failed_servers.push(server.name.clone());
                continue;
            }
            Err(e) => return Err(e),
        };
        let policy = Policy::for_key(env.config, &cx.key);
        for item in listed.iter() {
            let name = item.get("name").and_then(Value::as_str).unwrap_or("");
            if kind == Kind::Tools && !policy.allows_tool(&server, name) {
                continue;
            }
            let mut item = item.clone();
            if cx.single.is_none() && matches!(kind, Kind::Tools | Kind::Prompts) {
                item["name"] = json!(policy::namespaced(&server.name, name));
            }
            items.push(item);
        }
    }
    let mut result = Map::new();
    result.insert(kind.field().into(), Value::Array(items));
    let mut result = Value::Object(result);
    if cx.era == Era::Modern {
        result["ttlMs"] = json!(0);
        result["cacheScope"] = json!("private");
    }
    Ok(result_answer(id, complete(cx.era, result), log))
}

/// The server of a `server__name` (on `/mcp`) or this endpoint's server, and the upstream name.
fn route_by_name(
    env: &McpEnv<'_>,
    cx: &Ctx<'_>,
    params: &Map<String, Value>,
    what: &str,
) -> Result<(Arc<McpServer>, String), RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(RpcError::invalid_params(format!("params.name must be the {what}'s name")));
    };
    let (server, upstream_name) = match &cx.single {
        Some(s) => (Some(s.clone()), name),
        None => match policy::split(name) {
            Some((server, rest)) => (env.config.server(server).cloned(), rest),
            None => (None, name),
        },
    };
    let policy = Policy::for_key(env.config, &cx.key);
    match server {
        Some(s) if policy.allows_server(&s) => Ok((s, upstream_name.to_string())),
        _ => Err(RpcError::invalid_params(format!(
            "Unknown {what}: {}",
            crate::gateway::util::text::truncate(name, 128)
        ))),
    }
}

/// The allowed server whose resource listing has `params.uri`.
async fn resource_owner<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    params: &Map<String, Value>,
) -> Result<Arc<McpServer>, RpcError> {
    let Some(uri) = params.get("uri").and_then(Value::as_str) else {
        return Err(RpcError::invalid_params("params.uri must be the resource's URI"));
    };
    for server in servers_for(env, cx) {
        let Ok(listed) =
            catalog::items(ports, &env.state.listings, &env.state.eras, &server, &mut cx.caller, Kind::Resources).await
        else {
            continue;
        };
        if listed.iter().any(|r| r.get("uri").and_then(Value::as_str) == Some(uri)) {
            return Ok(server);
        }
    }
    // 2026-07-28 reports a missing resource as -32602; earlier revisions used -32002.
    let code = if cx.era == Era::Modern { INVALID_PARAMS } else { -32002 };
    Err(RpcError::refusal(code, "Resource not found").with_data(json!({"uri": uri})))
}

/// `completion/complete`: the prompt's server (by its namespaced name) or the resource's.
async fn completion_target<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    params: &Map<String, Value>,
) -> Result<Arc<McpServer>, RpcError> {
    if let Some(s) = &cx.single {
        return Ok(s.clone());
    }
    let reference = params.get("ref").and_then(Value::as_object).cloned().unwrap_or_default();
    match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => route_by_name(env, cx, &reference, "prompt").map(|(s, _)| s),
        Some("ref/resource") => resource_owner(ports, env, cx, &reference).await,
        _ => Err(RpcError::invalid_params("params.ref must be a ref/prompt or ref/resource")),
    }
}

// ---------------------------------------------------------------------------------------------
// Tool calls

/// `tools/call`: allow-list, argument guardrails, per-tool limit, then the owning server with
/// the original name; the answer streams back through the result guardrails.
async fn call_tool<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    id: &Value,
    mut params: Map<String, Value>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str).map(str::to_string) else {
        return Err(RpcError::invalid_params("params.name must be the tool's name"));
    };
    let (server, tool) = match &cx.single {
        Some(s) => (Some(s.clone()), name.clone()),
        None => match policy::split(&name) {
            Some((server, tool)) => (env.config.server(server).cloned(), tool.to_string()),
            None => (None, name.clone()),
        },
    };
    let Some(server) = server else {
        return Err(RpcError::invalid_params(format!(
            "Unknown tool: {}",
            crate::gateway::util::text::truncate(&name, 128)
        )));
    };
    log.server = Some(server.name.clone());
    log.tool = Some(tool.clone());
    let policy = Policy::for_key(env.config, &cx.key);
    if !policy.allows_tool(&server, &tool) {
        // Absent from this caller's tools/list, and it never reaches the upstream.
        return Err(RpcError::refusal(FORBIDDEN, format!("tool \"{name}\" is not allowed for this API key"))
            .with_data(json!({"code": "tool_not_allowed", "server": server.name})));
    }
    let mut arguments = match params.remove("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(RpcError::invalid_params("params.arguments must be an object")),
    };
    let report =
        guard::apply_json(&server.guardrails, &mut arguments, ErrorCode::ContentDenied, "the tool arguments", &[])
            .map_err(|e| {
                log.status = "denied";
                RpcError::from_gateway(&e)
            })?;
    let changed = !report.is_empty();
    log.guard = Some(report).filter(|r| !r.is_empty());

    let limit = policy.tool_limit(&server, &tool);
    let counter = format!("mcp:{}.{tool}", server.name);
    let admission = limits::admit(
        ports,
        env.limiter,
        env.limits,
        Some(&cx.key),
        &counter,
        limit.as_ref(),
        // A tool call uses no tokens: nothing to reserve.
        limits::Reservation::default(),
    )
    .await
    .map_err(|refused| {
        let mut e = RpcError::from_gateway(&refused.error);
        e.message = e.message.replace(&format!("for endpoint \"{counter}\""), &format!("for MCP tool \"{name}\""));
        e
    })?;

    // The client mirrored arguments into Mcp-Param-* headers; after a redaction they are
    // computed again from the tool's schema, so they match the body the upstream checks.
    let param_headers = if changed {
        catalog::cached_tool(&env.state.listings, &server, &tool, ports.now_ms())
            .map(|t| protocol::param_headers(t.get("inputSchema").unwrap_or(&Value::Null), &arguments))
            .unwrap_or_default()
    } else {
        client_param_headers(cx.headers)
    };
    params.insert("name".into(), json!(tool));
    params.insert("arguments".into(), arguments);
    let call = Forward { id, method: "tools/call", params, param_headers, guard_result: true };
    let mut answer = forward_with(ports, env, cx, &server, call, log).await?;
    answer.admission = Some(admission);
    Ok(answer)
}

fn client_param_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let suffix = name.as_str().strip_prefix(H_PARAM_PREFIX)?;
            Some((suffix.to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Forwarding

/// One request to send to an upstream server.
struct Forward<'a> {
    id: &'a Value,
    method: &'a str,
    params: Map<String, Value>,
    /// `Mcp-Param-*` headers (modern upstreams).
    param_headers: Vec<(String, String)>,
    /// Apply the server's result guardrails to the answer.
    guard_result: bool,
}

impl<'a> Forward<'a> {
    fn plain(id: &'a Value, method: &'a str, params: Map<String, Value>) -> Self {
        Forward { id, method, params, param_headers: Vec::new(), guard_result: false }
    }
}

async fn forward<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    server: &Arc<McpServer>,
    call: Forward<'_>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, RpcError> {
    log.server.get_or_insert_with(|| server.name.clone());
    if log.tool.is_none() {
        log.tool = protocol::name_param(call.method).and_then(|k| call.params.get(k)?.as_str().map(str::to_string));
    }
    forward_with(ports, env, cx, server, call, log).await
}

/// Sends the request to `server` and streams its answer back: SSE or JSON through the stage;
/// a refusal without a usable body becomes an error naming the server.
async fn forward_with<P: Ports>(
    ports: &P,
    env: &McpEnv<'_>,
    cx: &mut Ctx<'_>,
    server: &Arc<McpServer>,
    call: Forward<'_>,
    log: &mut McpLog,
) -> Result<McpAnswer<P::Body>, RpcError> {
    let Forward { id, method, params, param_headers, guard_result } = call;
    let out = Outbound { id: Some(id), method, params, param_headers };
    let (reply, route) = upstream::send(ports, &env.state.eras, server, &mut cx.caller, &out).await?;
    log.upstream = Some(match route.era {
        Era::Modern => "modern",
        Era::Legacy => "legacy",
    });
    let result_type = cx.era == Era::Modern && route.era == Era::Legacy;
    let response = match reply {
        Reply::Live(response) if response.status().is_success() => response,
        other => {
            // A refusal: relay the upstream's JSON-RPC error, else name the server and status.
            let (parts, body) = match other {
                Reply::Read(parts, body) => (parts, body),
                Reply::Live(response) => {
                    let (parts, body) = response.into_parts();
                    (parts, ports.read_body(body, upstream::MAX_BUFFERED).await.unwrap_or_default())
                }
            };
            let message = upstream::answer_message(server, &parts, &body, id)?;
            return match upstream::result_of(message) {
                Err(e) => Err(e),
                Ok(result) => Ok(result_answer(id, result, log)),
            };
        }
    };
    if response.status() == StatusCode::ACCEPTED {
        return Err(upstream::upstream_error(server, "accepted the request without answering it"));
    }
    let sse = upstream::content_type(response.headers()).starts_with("text/event-stream");
    let stage = McpStream::new(server.clone(), id.clone(), sse, guard_result, result_type, env.max_response_bytes);
    let mut headers = HeaderMap::new();
    if sse {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    } else {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    log.streamed = true;
    Ok(McpAnswer {
        status: StatusCode::OK,
        headers,
        body: McpBody::Stream(response.into_body(), stage),
        log: log.clone(),
        tool_call: false,
        admission: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Answers

/// A modern client's results carry `resultType`.
fn complete(era: Era, mut result: Value) -> Value {
    if era == Era::Modern {
        if let Value::Object(map) = &mut result {
            map.entry("resultType").or_insert_with(|| json!("complete"));
        }
    }
    result
}

fn with_name(mut params: Map<String, Value>, key: &str, name: &str) -> Map<String, Value> {
    params.insert(key.into(), json!(name));
    params
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

fn result_answer<B>(id: &Value, result: Value, log: &McpLog) -> McpAnswer<B> {
    McpAnswer {
        status: StatusCode::OK,
        headers: json_headers(),
        body: McpBody::Full(jsonrpc::result_body(id, &result)),
        log: log.clone(),
        tool_call: false,
        admission: None,
    }
}

/// A JSON-RPC error in the HTTP status it calls for.
pub fn error_answer<B>(id: Option<&Value>, e: &RpcError, log: McpLog) -> McpAnswer<B> {
    let mut headers = json_headers();
    if e.code == jsonrpc::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"edge-gateway\""));
    }
    if let Some(seconds) = e.retry_after().filter(|_| e.code == RATE_LIMITED) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    McpAnswer {
        status: e.http,
        headers,
        body: McpBody::Full(jsonrpc::error_body(id, e)),
        log,
        tool_call: false,
        admission: None,
    }
}

fn accepted<B>(log: McpLog) -> McpAnswer<B> {
    McpAnswer {
        status: StatusCode::ACCEPTED,
        headers: HeaderMap::new(),
        body: McpBody::Full(Vec::new()),
        log,
        tool_call: false,
        admission: None,
    }
}

fn unknown_server(config: &McpConfig, name: &str) -> RpcError {
    let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
    let hint = did_you_mean(name, &names).map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default();
    RpcError::invalid_request(format!(
        "no MCP server named \"{}\"{hint}",
        crate::gateway::util::text::truncate(name, 64)
    ))
    .with_http(StatusCode::NOT_FOUND)
}

fn store_failed(e: GatewayError) -> RpcError {
    RpcError::refusal(jsonrpc::INTERNAL_ERROR, format!("the session store failed: {}", e.message))
        .with_http(StatusCode::SERVICE_UNAVAILABLE)
}
