//! `/mcp` through the whole pipeline with in-memory ports: two fake upstreams (a modern one
//! that streams, a legacy one with sessions), keys with grants, limits, guardrails, and the
//! protocol's error cases.

use std::cell::RefCell;
use std::rc::Rc;

use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::gateway::config::ACTIVE_KEY;
use crate::gateway::features::keys::{self, KeyRecord};
use crate::gateway::mcp::jsonrpc::{
    FORBIDDEN, HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RATE_LIMITED,
    UNAUTHORIZED, UNSUPPORTED_PROTOCOL_VERSION, UPSTREAM_ERROR,
};
use crate::gateway::mcp::protocol::{META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_PROTOCOL_VERSION};
use crate::gateway::pipeline::{ClientInfo, Exchange, Gateway, ResponseBody};
use crate::gateway::ports::memory::{block_on, MemoryHost};
use crate::gateway::ports::UpstreamError;

const CONFIG: &str = r#"{
  "version": "mcp-1",
  "settings": {"max_body_bytes": 4096},
  "mcp_servers": [
    {"name": "tools", "url": "http://tools.test/mcp",
     "guardrails": {"redact": ["email"], "deny": [{"id": "codename", "pattern": "falcon"}, {"id": "secret", "pattern": "TOPSECRET"}], "output": true},
     "tool_limits": {"slow": {"calls": 1, "renewal_period": "minute"}}},
    {"name": "files", "url": "http://files.test/mcp", "protocol": "2025-11-25", "auth": {"bearer": "$FILES_TOKEN"}},
    {"name": "down", "url": "http://down.test/mcp"}
  ],
  "mcp_policies": {"acme": {"tools": ["tools.*", "files.read", "down.*"]}}
}"#;

type Log = Rc<RefCell<Vec<String>>>;

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder().status(status).header("content-type", content_type).body(body).unwrap()
}

fn answer(id: &Value, result: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result})).unwrap()
}

/// The modern server `tools`: echo (JSON), progress (SSE with a notification), fail (isError),
/// leak (a result the output guardrail denies), slow.
fn tools_server(req: &Request<Vec<u8>>, calls: &Log) -> Result<Response<Vec<u8>>, UpstreamError> {
    let body: Value = serde_json::from_slice(req.body()).unwrap();
    let method = body["method"].as_str().unwrap().to_string();
    let id = body["id"].clone();
    assert_eq!(req.headers()["mcp-protocol-version"], "2026-07-28");
    assert_eq!(req.headers()["mcp-method"], method.as_str());
    assert_eq!(body["params"]["_meta"][META_PROTOCOL_VERSION], "2026-07-28");
    assert!(req.headers().get("authorization").is_none(), "the client's key never reaches an upstream");
    let tool = body["params"]["name"].as_str().unwrap_or("").to_string();
    calls.borrow_mut().push(format!("tools {method} {tool}"));
    match method.as_str() {
        "tools/list" => {
            let tools: Vec<Value> = ["echo", "progress", "fail", "leak", "slow"]
                .iter()
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect();
            Ok(response(
                200,
                "application/json",
                answer(&id, json!({"tools": tools, "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})),
            ))
        }
        "prompts/list" => Ok(response(200, "application/json", answer(&id, json!({"prompts": [{"name": "greet"}]})))),
        "prompts/get" => Ok(response(
            200,
            "application/json",
            answer(&id, json!({"messages": [], "description": body["params"]["name"]})),
        )),
        "tools/call" => {
            let args = body["params"]["arguments"].clone();
            let text = |t: &str| json!({"content": [{"type": "text", "text": t}], "resultType": "complete"});
            match tool.as_str() {
                "echo" | "slow" => Ok(response(200, "application/json", answer(&id, text(&args.to_string())))),
                "fail" => Ok(response(
                    200,
                    "application/json",
                    answer(&id, json!({"content": [{"type": "text", "text": "boom"}], "isError": true})),
                )),
                "leak" => Ok(response(200, "application/json", answer(&id, text("the TOPSECRET plan")))),
                "progress" => {
                    let token = body["params"]["_meta"]["progressToken"].clone();
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1, "total": 2}});
                    let sse = format!(
                        "id: e1\nevent: message\ndata: \n\nevent: message\ndata: {note}\n\nevent: message\ndata: {}\n\n",
                        String::from_utf8(answer(&id, text("done"))).unwrap()
                    );
                    Ok(response(200, "text/event-stream", sse.into_bytes()))
                }
                _ => Ok(response(
                    200,
                    "application/json",
                    serde_json::to_vec(
                        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "Unknown tool"}}),
                    )
                    .unwrap(),
                )),
            }
        }
        _ => Ok(response(
            404,
            "application/json",
            serde_json::to_vec(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            )
            .unwrap(),
        )),
    }
}

/// The legacy server `files`: initialize gives a session; everything else needs it.
fn files_server(
    req: &Request<Vec<u8>>,
    calls: &Log,
    sessions: &Rc<RefCell<Vec<String>>>,
) -> Result<Response<Vec<u8>>, UpstreamError> {
    assert_eq!(req.headers()["authorization"], "Bearer files-secret");
    let session = req.headers().get("mcp-session-id").map(|v| v.to_str().unwrap().to_string());
    if req.method() == Method::DELETE {
        calls.borrow_mut().push(format!("files DELETE {}", session.clone().unwrap_or_default()));
        sessions.borrow_mut().retain(|s| Some(s) != session.as_ref());
        return Ok(response(200, "application/json", Vec::new()));
    }
    let body: Value = serde_json::from_slice(req.body()).unwrap();
    let method = body["method"].as_str().unwrap().to_string();
    let id = body["id"].clone();
    calls.borrow_mut().push(format!("files {method} {}", body["params"]["name"].as_str().unwrap_or("")));
    if method == "initialize" {
        let sid = format!("files-session-{}", sessions.borrow().len() + 1);
        sessions.borrow_mut().push(sid.clone());
        let mut r = response(
            200,
            "application/json",
            answer(
                &id,
                json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "files"}}),
            ),
        );
        r.headers_mut().insert("mcp-session-id", sid.parse().unwrap());
        return Ok(r);
    }
    match session {
        Some(s) if sessions.borrow().contains(&s) => {}
        _ => return Ok(response(404, "application/json", Vec::new())),
    }
    assert!(body["params"].get("_meta").and_then(|m| m.get(META_PROTOCOL_VERSION)).is_none());
    match method.as_str() {
        "notifications/initialized" | "notifications/cancelled" => Ok(response(202, "application/json", Vec::new())),
        "tools/list" => Ok(response(
            200,
            "application/json",
            answer(
                &id,
                json!({"tools": [{"name": "read", "inputSchema": {"type": "object"}}, {"name": "write", "inputSchema": {"type": "object"}}]}),
            ),
        )),
        "tools/call" => Ok(response(
            200,
            "application/json",
            answer(
                &id,
                json!({"content": [{"type": "text", "text": format!("read {}", body["params"]["arguments"]["path"])}]}),
            ),
        )),
        _ => Ok(response(
            200,
            "application/json",
            serde_json::to_vec(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            )
            .unwrap(),
        )),
    }
}

struct World {
    host: MemoryHost,
    gateway: Gateway,
    calls: Log,
    key: String,
    other_key: String,
}

fn store_key(host: &MemoryHost, tenant: &str, mcp: Option<Value>) -> String {
    let (id, key) = keys::new_key(host);
    let record = KeyRecord {
        id,
        tenant: tenant.into(),
        endpoints: vec!["*".into()],
        mcp: mcp.map(|v| serde_json::from_value(v).unwrap()),
        hash: keys::hash_key(&key),
        ..Default::default()
    };
    block_on(keys::store(host, &record)).unwrap();
    key
}

fn world() -> World {
    let calls: Log = Rc::default();
    let sessions: Rc<RefCell<Vec<String>>> = Rc::default();
    let c = calls.clone();
    let host = MemoryHost::new(move |req| match req.uri().host() {
        Some("tools.test") => tools_server(req, &c),
        Some("files.test") => files_server(req, &c, &sessions),
        _ => Err(UpstreamError::Connect("connection refused".into())),
    })
    .with_secret("FILES_TOKEN", "files-secret")
    .with_kv(ACTIVE_KEY, CONFIG);
    let key = store_key(&host, "acme", None);
    let other_key = store_key(&host, "other", Some(json!({"servers": ["files"]})));
    World { host, gateway: Gateway::new(), calls, key, other_key }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
    text: String,
    exchange: Exchange<Vec<u8>>,
}

impl World {
    fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut request = Request::builder().method(method).uri(path).body(body.as_bytes().to_vec()).unwrap();
        for (k, v) in headers {
            request.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let mut exchange = block_on(self.gateway.handle(&self.host, request, &ClientInfo::default()));
        let status = exchange.response.status();
        let headers = exchange.response.headers().clone();
        let bytes = match std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new())) {
            ResponseBody::Full(bytes) => bytes,
            ResponseBody::Stream(bytes, mut pump) => {
                let mut out = pump.chunk(&bytes);
                out.extend(pump.end());
                // The host hands the summary to the deferred work; keep it for `log`.
                exchange.deferred.log.stream_completed = Some(pump.summary().completed);
                let outcome = pump.summary().mcp.unwrap();
                if let Some(mcp) = exchange.deferred.log.mcp.as_mut() {
                    mcp.finish_stream(outcome, 0);
                }
                out
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if headers.get("content-type").is_some_and(|v| v == "text/event-stream") {
            let events = crate::gateway::test_util::parse_sse(&bytes);
            events.last().map(|(_, v)| v.clone()).unwrap_or(Value::Null)
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply { status, headers, body, text, exchange }
    }

    /// A legacy (session) request.
    fn legacy(&self, key: &str, session: &str, message: Value) -> Reply {
        let auth = format!("Bearer {key}");
        let mut headers = vec![("authorization", auth.as_str()), ("mcp-protocol-version", "2025-11-25")];
        if !session.is_empty() {
            headers.push(("mcp-session-id", session));
        }
        self.send(Method::POST, "/mcp", &headers, &message.to_string())
    }

    fn open(&self, key: &str) -> String {
        let r = self.legacy(
            key,
            "",
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        );
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["result"]["protocolVersion"], "2025-11-25");
        r.headers["mcp-session-id"].to_str().unwrap().to_string()
    }

    /// A modern (2026-07-28) request, headers mirrored from the body.
    fn modern(&self, key: &str, path: &str, method: &str, mut params: Value) -> Reply {
        params["_meta"] =
            json!({META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}, META_CLIENT_INFO: {"name": "m"}});
        let name = params.get("name").and_then(Value::as_str).map(str::to_string);
        let auth = format!("Bearer {key}");
        let mut headers =
            vec![("authorization", auth.as_str()), ("mcp-protocol-version", "2026-07-28"), ("mcp-method", method)];
        if let Some(name) = &name {
            headers.push(("mcp-name", name));
        }
        let body = json!({"jsonrpc": "2.0", "id": "m1", "method": method, "params": params});
        self.send(Method::POST, path, &headers, &body.to_string())
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn log_line(&self, reply: Reply) -> Value {
        let line = block_on(reply.exchange.deferred.complete(&self.host, None));
        serde_json::from_str(&line).unwrap()
    }
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

fn names(result: &Value) -> Vec<String> {
    result["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_legacy_session_lists_calls_and_ends() {
    let w = world();
    let session = w.open(&w.key);
    let r = w.legacy(&w.key, &session, json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert_eq!((r.status, r.text.as_str()), (StatusCode::ACCEPTED, ""));

    // The union, namespaced, filtered by the tenant's policy (files.write is not allowed; the
    // down server is left out of the listing, which still answers).
    let r = w.legacy(&w.key, &session, json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        names(&r.body["result"]),
        ["tools__echo", "tools__progress", "tools__fail", "tools__leak", "tools__slow", "files__read"]
    );
    assert!(r.body["result"].get("resultType").is_none(), "legacy results stay in their revision's shape");
    let line = w.log_line(r);
    assert_eq!(line["mcp"]["failed_servers"], json!(["down"]));

    // Routed with the original name; the answer is the upstream's.
    let r = w.legacy(&w.key, &session, call("tools__echo", json!({"text": "hi"})));
    assert_eq!(
        r.body,
        json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "{\"text\":\"hi\"}"}], "resultType": "complete"}})
    );
    let r = w.legacy(&w.key, &session, call("files__read", json!({"path": "/a"})));
    assert_eq!(r.body["result"]["content"][0]["text"], "read \"/a\"");
    // The legacy upstream's session is recorded in the gateway session (KV), so another
    // instance (a fresh Gateway) continues it without a new handshake.
    let again = Gateway::new();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/mcp")
        .body(call("files__read", json!({"path": "/b"})).to_string().into_bytes())
        .unwrap();
    for (k, v) in [
        ("authorization", format!("Bearer {}", w.key)),
        ("mcp-session-id", session.clone()),
        ("mcp-protocol-version", "2025-11-25".into()),
    ] {
        request.headers_mut().insert(k, v.parse().unwrap());
    }
    let mut exchange = block_on(again.handle(&w.host, request, &ClientInfo::default()));
    let ResponseBody::Stream(bytes, pump) =
        std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new()))
    else {
        panic!()
    };
    let out: Value = serde_json::from_slice(&pump.run(&bytes)).unwrap();
    assert_eq!(out["result"]["content"][0]["text"], "read \"/b\"");
    assert_eq!(w.calls().iter().filter(|c| c.starts_with("files initialize")).count(), 1);

    // DELETE ends the gateway session and the upstream one.
    let auth = format!("Bearer {}", w.key);
    let r = w.send(Method::DELETE, "/mcp", &[("authorization", &auth), ("mcp-session-id", &session)], "");
    assert_eq!(r.status, StatusCode::OK);
    assert!(w.calls().contains(&"files DELETE files-session-1".to_string()), "{:?}", w.calls());
    let r = w.legacy(&w.key, &session, json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}));
    assert_eq!((r.status, r.body["error"]["code"].as_i64()), (StatusCode::NOT_FOUND, Some(INVALID_REQUEST)));
}

#[test]
fn sessions_belong_to_their_key_and_endpoint() {
    let w = world();
    let session = w.open(&w.key);
    let r = w.legacy(&w.other_key, &session, json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    assert_eq!(r.status, StatusCode::NOT_FOUND, "another key's session does not exist");
    let r = w.legacy(&w.key, "", json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    assert_eq!((r.status, r.body["error"]["code"].as_i64()), (StatusCode::BAD_REQUEST, Some(INVALID_REQUEST)));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("Mcp-Session-Id"));
    let r = w.legacy(&w.key, "not-a-session", json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A session opened on /mcp is not one of /mcp/files.
    let auth = format!("Bearer {}", w.key);
    let r = w.send(
        Method::POST,
        "/mcp/tools",
        &[("authorization", &auth), ("mcp-session-id", &session)],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[test]
fn modern_requests_are_stateless() {
    let w = world();
    let r = w.modern(&w.key, "/mcp", "server/discover", json!({}));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["result"]["supportedVersions"][0], "2026-07-28");
    assert_eq!(r.body["result"]["resultType"], "complete");
    assert!(r.headers.get("mcp-session-id").is_none());

    let r = w.modern(&w.key, "/mcp", "tools/list", json!({}));
    let result = &r.body["result"];
    assert_eq!(
        (result["resultType"].as_str(), result["ttlMs"].as_i64(), result["cacheScope"].as_str()),
        (Some("complete"), Some(0), Some("private"))
    );
    assert!(names(result).contains(&"files__read".to_string()));

    // A modern client of the legacy upstream: the gateway holds a session there for the key,
    // and the result gets the modern `resultType`.
    let r = w.modern(&w.key, "/mcp", "tools/call", json!({"name": "files__read", "arguments": {"path": "/x"}}));
    assert_eq!(r.body["result"]["resultType"], "complete", "{}", r.text);
    assert_eq!(r.body["id"], "m1");

    let r = w.modern(&w.key, "/mcp", "ping", json!({}));
    assert_eq!(r.body["result"], json!({"resultType": "complete"}));
}

#[test]
fn progress_streams_through() {
    let w = world();
    let r = w.modern(&w.key, "/mcp", "tools/call", json!({"name": "tools__progress", "arguments": {}, "_meta": {}}));
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert!(r.text.contains("notifications/progress"), "{}", r.text);
    assert!(!r.text.contains("id: e1"), "no resumption ids: {}", r.text);
    assert_eq!(r.body["result"]["content"][0]["text"], "done");
    let line = w.log_line(r);
    assert_eq!(line["mcp"]["status"], "ok");
    assert_eq!(line["mcp"]["server"], "tools");
    assert_eq!(line["mcp"]["tool"], "progress");
    assert!(line["mcp"]["bytes_out"].as_u64().unwrap() > 100);
}

#[test]
fn governance_refuses_limits_and_guards() {
    let w = world();
    let session = w.open(&w.key);
    // Not allowed: an error, and the upstream never sees it.
    let r = w.legacy(&w.key, &session, call("files__write", json!({"path": "/etc"})));
    assert_eq!((r.status, r.body["error"]["code"].as_i64()), (StatusCode::OK, Some(FORBIDDEN)));
    assert!(!w.calls().iter().any(|c| c.contains("write")), "{:?}", w.calls());
    let r = w.legacy(&w.key, &session, call("nope__x", json!({})));
    assert_eq!(r.body["error"]["code"].as_i64(), Some(INVALID_PARAMS));
    let other = w.open(&w.other_key);
    let r = w.legacy(&w.other_key, &other, call("tools__echo", json!({})));
    assert_eq!(r.body["error"]["code"].as_i64(), Some(FORBIDDEN), "the key's grant allows only files");

    // Per-tool limit: 1 call per minute, then a JSON-RPC error with retry timing.
    assert!(w.legacy(&w.key, &session, call("tools__slow", json!({}))).body.get("result").is_some());
    let r = w.legacy(&w.key, &session, call("tools__slow", json!({})));
    assert_eq!(r.body["error"]["code"].as_i64(), Some(RATE_LIMITED));
    let retry = r.body["error"]["data"]["retry_after"].as_u64().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("MCP tool \"tools__slow\""), "{}", r.body);
    assert_eq!(r.headers["retry-after"], retry.to_string().as_str());
    let line = w.log_line(r);
    assert_eq!(line["mcp"]["status"], "rate_limited");

    // Arguments: redacted before the upstream sees them; denied by rule id.
    let r = w.legacy(&w.key, &session, call("tools__echo", json!({"to": "ann@example.com"})));
    assert_eq!(r.body["result"]["content"][0]["text"], "{\"to\":\"[EMAIL]\"}");
    let line = w.log_line(r);
    assert_eq!(line["mcp"]["guard"]["redacted"]["email"], 1);
    assert!(!line.to_string().contains("ann@example.com"), "never argument values: {line}");
    let r = w.legacy(&w.key, &session, call("tools__echo", json!({"q": "project Falcon"})));
    assert_eq!(r.body["error"]["code"].as_i64(), Some(FORBIDDEN));
    assert_eq!(r.body["error"]["data"]["code"], "content_denied");
    assert!(!r.text.contains("Falcon"));
    // Results: a deny rule withholds the result.
    let r = w.legacy(&w.key, &session, call("tools__leak", json!({})));
    assert_eq!(r.body["error"]["data"]["code"], "output_denied", "{}", r.text);
    let line = w.log_line(r);
    assert_eq!(line["mcp"]["status"], "denied");
    // A failing tool is the tool's answer (isError), logged as such.
    let r = w.legacy(&w.key, &session, call("tools__fail", json!({})));
    assert_eq!(r.body["result"]["isError"], true);
    let line = w.log_line(r);
    assert_eq!(line["mcp"]["status"], "tool_error");
}

#[test]
fn a_down_upstream_is_a_json_rpc_error_naming_it() {
    let w = world();
    let r = w.modern(&w.key, "/mcp", "tools/call", json!({"name": "down__x", "arguments": {}}));
    assert_eq!((r.status, r.body["error"]["code"].as_i64()), (StatusCode::OK, Some(UPSTREAM_ERROR)));
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("MCP server \"down\" is unreachable"));
    assert_eq!(r.body["error"]["data"]["server"], "down");
    let line = w.log_line(r);
    assert_eq!(line["mcp"]["status"], "upstream_error");
}

#[test]
fn one_server_endpoint_keeps_names_and_passes_through() {
    let w = world();
    let r = w.modern(&w.key, "/mcp/tools", "tools/list", json!({}));
    assert_eq!(names(&r.body["result"])[0], "echo");
    let r = w.modern(&w.key, "/mcp/tools", "tools/call", json!({"name": "echo", "arguments": {"a": 1}}));
    assert_eq!(r.body["result"]["content"][0]["text"], "{\"a\":1}");
    let r = w.modern(&w.key, "/mcp/tools", "prompts/get", json!({"name": "greet"}));
    assert_eq!(r.body["result"]["description"], "greet");
    let r = w.modern(&w.key, "/mcp", "prompts/get", json!({"name": "tools__greet"}));
    assert_eq!(r.body["result"]["description"], "greet", "routed with the original name");
    let r = w.modern(&w.key, "/mcp", "prompts/list", json!({}));
    assert_eq!(r.body["result"]["prompts"][0]["name"], "tools__greet");
    let r = w.modern(&w.other_key, "/mcp/tools", "tools/list", json!({}));
    assert_eq!(r.body["error"]["code"].as_i64(), Some(FORBIDDEN));
    let r = w.modern(&w.key, "/mcp/tols", "ping", json!({}));
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("did you mean \"tools\""));
}

#[test]
fn bad_input_gets_the_spec_error_codes_never_a_5xx() {
    let w = world();
    let auth = format!("Bearer {}", w.key);
    let h = [("authorization", auth.as_str()), ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "ping")];
    let code = |r: &Reply| (r.status.as_u16(), r.body["error"]["code"].as_i64().unwrap_or(0));
    assert_eq!(code(&w.send(Method::POST, "/mcp", &h, "{oops")), (400, PARSE_ERROR));
    assert_eq!(
        code(&w.send(Method::POST, "/mcp", &h, r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#)),
        (400, INVALID_REQUEST)
    );
    assert_eq!(code(&w.send(Method::POST, "/mcp", &h, r#"{"jsonrpc":"2.0","id":1}"#)), (400, INVALID_REQUEST));
    assert_eq!(code(&w.send(Method::POST, "/mcp", &h, &"x".repeat(5000))), (413, INVALID_REQUEST));
    assert_eq!(code(&w.modern(&w.key, "/mcp", "no/such", json!({}))), (404, METHOD_NOT_FOUND));
    let mismatch = w.send(Method::POST, "/mcp", &h, &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}}}}).to_string());
    assert_eq!(code(&mismatch), (400, HEADER_MISMATCH));
    let future = [("authorization", auth.as_str()), ("mcp-protocol-version", "2099-01-01"), ("mcp-method", "ping")];
    let r = w.send(Method::POST, "/mcp", &future, &json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": {META_PROTOCOL_VERSION: "2099-01-01", META_CLIENT_CAPABILITIES: {}}}}).to_string());
    assert_eq!(code(&r), (400, UNSUPPORTED_PROTOCOL_VERSION));
    assert!(r.body["error"]["data"]["supported"].as_array().unwrap().contains(&json!("2025-11-25")));
    let r = w.send(
        Method::POST,
        "/mcp",
        &[("mcp-protocol-version", "2026-07-28")],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    assert_eq!(code(&r), (401, UNAUTHORIZED));
    assert!(r.headers.contains_key("www-authenticate"));
    let r = w.send(Method::GET, "/mcp", &[("authorization", &auth)], "");
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST, DELETE");
    let r = w.send(Method::POST, "/mcp", &h, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    assert_eq!(code(&r), (400, INVALID_REQUEST));
    let r = w.modern(&w.key, "/mcp", "tools/list", json!({"cursor": "abc"}));
    assert_eq!(code(&r), (400, INVALID_PARAMS));
    // A hostile corpus: every answer is a JSON-RPC error or result with a 2xx/4xx status.
    for body in [
        "",
        "null",
        "{}",
        "[]",
        r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"tools__echo","arguments":[1]}}"#,
        "\u{0}\u{1}",
    ] {
        let r = w.send(Method::POST, "/mcp", &h, body);
        assert!(r.status.as_u16() < 500, "{body}: {}", r.status);
    }
}

#[test]
fn the_config_section_is_checked_with_the_rest_and_its_credentials_redacted() {
    use crate::gateway::config::Config;
    let issues = Config::from_value(
        json!({"mcp_server": [], "mcp_servers": [{"name": "x", "url": "http://x/mcp", "protocol": "2025"}]}),
    )
    .unwrap_err();
    let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(
            |t| t.starts_with("mcp_server: unknown top-level field \"mcp_server\" (did you mean \"mcp_servers\"?)")
        ),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("mcp_servers[0].protocol: unknown MCP protocol version \"2025\"")),
        "{text:?}"
    );
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    assert_eq!(config.mcp.servers.len(), 3);

    let mut value = json!({"mcp_servers": [{"name": "a", "auth": {"bearer": "literal-token"}},
                                            {"name": "b", "auth": {"header": "x-api-key", "value": "literal-key"}},
                                            {"name": "c", "auth": {"header": "x-api-key", "value": "$KEY"}}]});
    crate::gateway::admin::redact_secrets(&mut value);
    assert_eq!(value["mcp_servers"][0]["auth"]["bearer"], "[redacted]");
    assert_eq!(value["mcp_servers"][1]["auth"], json!({"header": "x-api-key", "value": "[redacted]"}));
    assert_eq!(value["mcp_servers"][2]["auth"]["value"], "$KEY");
}
