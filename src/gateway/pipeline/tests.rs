use super::*;
use crate::gateway::ports::memory::{block_on, MemoryHost};
use crate::gateway::ports::UpstreamError;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::gateway::config::ACTIVE_KEY;

const CONFIG: &str = r#"{"version": "t1", "settings": {"config_ttl_ms": 1000}, "endpoints": [
  {"name": "chat", "public": true, "endpoint_type": "llm/v1/chat",
   "model": {"provider": "openai", "name": "gpt-4o-mini",
             "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}},
   "parameters": {"temperature": 0.5}},
  {"name": "embed", "public": true, "endpoint_type": "llm/v1/embeddings",
   "model": {"provider": "openai", "name": "text-embedding-3-small",
             "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}}}
]}"#;

fn ok_origin(_: &Request<Vec<u8>>) -> std::result::Result<Response<Vec<u8>>, UpstreamError> {
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(br#"{"id":"c1","object":"chat.completion","choices":[]}"#.to_vec())
        .unwrap())
}

fn host() -> MemoryHost {
    MemoryHost::new(ok_origin).with_secret("OPENAI_API_KEY", "sk-secret-value").with_kv(ACTIVE_KEY, CONFIG)
}

fn post(path: &str, body: &str) -> Request<Vec<u8>> {
    Request::builder().method(Method::POST).uri(path).body(body.as_bytes().to_vec()).unwrap()
}

fn run(host: &MemoryHost, request: Request<Vec<u8>>) -> (StatusCode, Value, Exchange<Vec<u8>>) {
    let mut exchange = block_on(Gateway::new().handle(host, request, &ClientInfo::default()));
    let status = exchange.response.status();
    let body = match std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new())) {
        ResponseBody::Full(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        ResponseBody::Stream(bytes, pump) => Value::String(String::from_utf8(pump.run(&bytes)).unwrap()),
    };
    (status, body, exchange)
}

#[test]
fn forwards_chat_with_provider_model_defaults_and_fresh_credentials() {
    let host = host();
    let mut request = post("/v1/chat/completions", r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#);
    request.headers_mut().insert("authorization", "Bearer client-key".parse().unwrap());
    let (status, body, exchange) = run(&host, request);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], "c1");
    let sent = host.sent.borrow();
    assert_eq!(sent[0].uri(), "http://origin.test/v1/chat/completions");
    assert_eq!(sent[0].headers()["authorization"], "Bearer sk-secret-value");
    let forwarded: Value = serde_json::from_slice(sent[0].body()).unwrap();
    assert_eq!(forwarded["model"], "gpt-4o-mini");
    assert_eq!(forwarded["temperature"], 0.5);
    assert_eq!(exchange.deferred.log.endpoint.as_deref(), Some("chat"));
    assert_eq!(exchange.deferred.log.origin.as_deref(), Some("http://origin.test"));
}

#[test]
fn errors_have_documented_status_and_shape() {
    let cases = [
        (post("/v1/chat/completions", "{not json"), StatusCode::BAD_REQUEST, "invalid_json"),
        (post("/v1/chat/completions", r#"{"model":"nope"}"#), StatusCode::NOT_FOUND, "model_not_found"),
        (post("/v1/embeddings", r#"{"model":"chat","input":"x"}"#), StatusCode::BAD_REQUEST, "endpoint_type_mismatch"),
        (post("/v1/chat/completions", r#"{"messages":[]}"#), StatusCode::BAD_REQUEST, "missing_model"),
        (post("/v2/unknown", "{}"), StatusCode::NOT_FOUND, "route_not_found"),
    ];
    for (request, status, code) in cases {
        let (got, body, _) = run(&host(), request);
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[test]
fn missing_config_is_503_naming_the_kv_entry() {
    let host = MemoryHost::new(ok_origin);
    let (status, body, _) = run(&host, post("/v1/chat/completions", r#"{"model":"chat"}"#));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"]["message"].as_str().unwrap().contains("config:active"));
}

/// L3: an invalid config is a 503 that names no config detail to clients; the log line has it.
#[test]
fn invalid_config_is_a_503_without_details_for_clients() {
    let bad = r#"{"settings": {"origin_timeout_ms": "internal-billing"}, "endpoints": [{"name": "chat",
        "endpoint_type": "llm/v1/chat", "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K"}}}]}"#;
    let host = MemoryHost::new(ok_origin).with_kv(ACTIVE_KEY, bad);
    let (status, body, exchange) = run(&host, post("/v1/chat/completions", r#"{"model":"chat"}"#));
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("config_invalid")));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("settings") && !message.contains("internal-billing"), "{message}");
    let line = block_on(exchange.deferred.complete(&host, None));
    assert!(line.contains("settings"), "{line}");
}

/// An invalid endpoint in the stored config (hand-edited, or accepted by an older version)
/// answers `config_invalid` for itself only, with the issue in the log and not in the answer;
/// the other endpoints keep serving (each is decoded on its first use).
#[test]
fn an_invalid_stored_endpoint_fails_alone() {
    let bad = r#"{"endpoints": [
        {"name": "internal-billing-chat", "endpoint_type": "llm/v1/chatt", "public": true,
         "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K"}}},
        {"name": "chat", "endpoint_type": "llm/v1/chat", "public": true,
         "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K"}}}]}"#;
    let host = MemoryHost::new(ok_origin).with_kv(ACTIVE_KEY, bad).with_secret("K", "sk-test");
    let (status, body, _) = run(&host, post("/v1/chat/completions", r#"{"model":"chat"}"#));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, exchange) =
        run(&host, post("/v1/chat/completions", r#"{"model":"internal-billing-chat","messages":[]}"#));
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("config_invalid")));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("endpoints[0]") && !message.contains("chatt"), "{message}");
    let line = block_on(exchange.deferred.complete(&host, None));
    assert!(line.contains("endpoints[0].endpoint_type"), "{line}");
}

/// Stores a key for `tenant` with `f` applied and returns its plaintext.
pub(super) fn add_key(host: &MemoryHost, f: impl FnOnce(&mut crate::gateway::features::keys::KeyRecord)) -> String {
    use crate::gateway::features::keys;
    let (id, key) = keys::new_key(host);
    let mut record = keys::KeyRecord {
        id,
        tenant: "acme".into(),
        endpoints: vec!["*".into()],
        hash: keys::hash_key(&key),
        ..Default::default()
    };
    f(&mut record);
    block_on(keys::store(host, &record)).unwrap();
    key
}

fn with_key(mut request: Request<Vec<u8>>, key: &str) -> Request<Vec<u8>> {
    request.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// KV transient errors: limits and config fail closed (503 kv_unavailable + Retry-After; an
/// isolate with a config memo keeps serving it), the cache fails open (a miss, the origin
/// answers).
#[test]
fn kv_errors_fail_closed_for_limits_and_config_and_open_for_the_cache() {
    let host = host();
    let key = add_key(&host, |k| k.rpm = Some(100));
    let chat = || with_key(post("/v1/chat/completions", r#"{"model":"chat","temperature":0}"#), &key);
    host.kv_fail.borrow_mut().push("rl:".into());
    let (status, body, exchange) = run(&host, chat());
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("kv_unavailable")));
    assert_eq!(exchange.response.headers()["retry-after"], "1");
    assert!(host.sent.borrow().is_empty(), "nothing forwarded");

    *host.kv_fail.borrow_mut() = vec!["cache:".into()];
    let (status, _, exchange) = run(&host, chat());
    assert_eq!(status, StatusCode::OK, "the cache fails open");
    assert_eq!(exchange.deferred.log.cache, Some("MISS"));

    let gateway = Gateway::new();
    host.kv_fail.borrow_mut().clear();
    let anon = || post("/v1/chat/completions", r#"{"model":"chat"}"#);
    assert_eq!(block_on(gateway.handle(&host, anon(), &ClientInfo::default())).response.status(), StatusCode::OK);
    host.advance(1001);
    *host.kv_fail.borrow_mut() = vec!["config:".into()];
    let stale = block_on(gateway.handle(&host, anon(), &ClientInfo::default()));
    assert_eq!(stale.response.status(), StatusCode::OK, "the isolate keeps its last config");
    let (status, body, exchange) = run(&host, anon());
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("kv_unavailable")));
    assert_eq!(exchange.response.headers()["retry-after"], "1");
}

#[test]
fn unreachable_origin_is_502_and_timeout_504() {
    let host = MemoryHost::new(|_| Err(UpstreamError::Connect("connection refused".into())))
        .with_secret("OPENAI_API_KEY", "k")
        .with_kv(ACTIVE_KEY, CONFIG);
    let (status, body, _) = run(&host, post("/v1/chat/completions", r#"{"model":"chat"}"#));
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("origin_unreachable")));

    let host =
        MemoryHost::new(|_| Err(UpstreamError::Timeout)).with_secret("OPENAI_API_KEY", "k").with_kv(ACTIVE_KEY, CONFIG);
    let (status, _, _) = run(&host, post("/v1/chat/completions", r#"{"model":"chat"}"#));
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[test]
fn streams_sse_through_untouched() {
    let host = MemoryHost::new(|_| {
        Ok(Response::builder().header("content-type", "text/event-stream").body(b"data: [DONE]\n\n".to_vec()).unwrap())
    })
    .with_secret("OPENAI_API_KEY", "k")
    .with_kv(ACTIVE_KEY, CONFIG);
    let (status, body, exchange) = run(&host, post("/v1/chat/completions", r#"{"model":"chat","stream":true}"#));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::String("data: [DONE]\n\n".into()));
    assert!(exchange.deferred.log.stream);
}

/// H5: output guardrails apply to streamed answers too (buffered, guarded, replayed): the
/// client picking `stream` does not pick "no output guard". Redaction works across chunk
/// boundaries; a deny rule withholds the answer (422) before any byte is sent.
#[test]
fn output_guardrails_apply_to_streams() {
    let config = r#"{"endpoints": [{"name": "g", "public": true, "endpoint_type": "llm/v1/chat",
        "guardrails": {"redact": ["email"], "deny": [{"id": "secret", "pattern": "s3cr3t"}], "output": true},
        "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K", "openai_api_base": "http://o/v1"}}}]}"#;
    let stream = |parts: &[&str]| {
        let mut sse = String::new();
        sse.push_str(r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#);
        sse.push_str("\n\n");
        for p in parts {
            let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        sse.push_str(r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#);
        sse.push_str("\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n");
        sse
    };
    let answer = stream(&["write to bob@ex", "ample.org today"]);
    let host = MemoryHost::new(move |_| {
        Ok(Response::builder().header("content-type", "text/event-stream").body(answer.clone().into_bytes()).unwrap())
    })
    .with_secret("K", "k")
    .with_kv(ACTIVE_KEY, config);
    let (status, body, exchange) = run(&host, post("/v1/chat/completions", r#"{"model":"g","stream":true}"#));
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(!text.contains("bob@") && !text.contains("ample.org"), "{text}");
    let events = crate::gateway::test_util::parse_sse(text.as_bytes());
    let content: String = events.iter().filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "write to [EMAIL] today");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert_eq!(exchange.deferred.log.guard_output.as_ref().map(|g| g.count("email")), Some(1));
    assert_eq!(exchange.deferred.log.completion_tokens, Some(4));

    let denied = stream(&["the s3", "cr3t is out"]);
    let host = MemoryHost::new(move |_| {
        Ok(Response::builder().header("content-type", "text/event-stream").body(denied.clone().into_bytes()).unwrap())
    })
    .with_secret("K", "k")
    .with_kv(ACTIVE_KEY, config);
    let (status, body, _) = run(&host, post("/v1/chat/completions", r#"{"model":"g","stream":true}"#));
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("output_denied")));
}

/// Anthropic and Gemini clients get the answer the output guardrails left: the answer's
/// fields the adapter read for the client's dialect are dropped once the guardrails change it.
#[test]
fn output_guardrails_apply_to_answers_rendered_for_other_dialects() {
    let config = r#"{"endpoints": [{"name": "g", "public": true, "endpoint_type": "llm/v1/chat",
        "guardrails": {"redact": ["email"], "output": true},
        "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K", "openai_api_base": "http://o/v1"}}}]}"#;
    let answer = json!({"id": "c1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "write to bob@example.org"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});
    let host = MemoryHost::new(move |_| Ok(Response::builder().body(answer.to_string().into_bytes()).unwrap()))
        .with_secret("K", "k")
        .with_kv(ACTIVE_KEY, config);
    let messages = r#"{"model":"g","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body, _) = run(&host, post("/v1/messages", messages));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["content"][0]["text"], "write to [EMAIL]");
    assert_eq!(body["usage"]["output_tokens"], 4);
    let contents = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let (status, body, _) = run(&host, post("/v1beta/models/g:generateContent", contents));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "write to [EMAIL]");
}

#[test]
fn config_memo_expires_and_notices_removal() {
    let host = host();
    let gateway = Gateway::new();
    let chat = || post("/v1/chat/completions", r#"{"model":"chat"}"#);
    assert_eq!(block_on(gateway.handle(&host, chat(), &ClientInfo::default())).response.status(), StatusCode::OK);
    host.kv.borrow_mut().clear();
    // Within the memo TTL the isolate still serves the config it has.
    assert_eq!(block_on(gateway.handle(&host, chat(), &ClientInfo::default())).response.status(), StatusCode::OK);
    host.advance(1001);
    assert_eq!(
        block_on(gateway.handle(&host, chat(), &ClientInfo::default())).response.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// From half the config memo's life on (config_ttl_ms is 1 s here: from 500 ms) requests keep
/// the memo without reading KV; the config is read again once, by `refresh_due` after the
/// response, and the requests after that see what it read (here: the config is gone).
#[test]
fn a_config_due_for_a_refresh_is_read_after_the_response() {
    let host = host();
    let gateway = Gateway::new();
    let status = || {
        let chat = post("/v1/chat/completions", r#"{"model":"chat"}"#);
        block_on(gateway.handle(&host, chat, &ClientInfo::default())).response.status()
    };
    assert_eq!(status(), StatusCode::OK);
    host.kv.borrow_mut().clear();
    host.advance(499);
    assert_eq!(status(), StatusCode::OK);
    block_on(gateway.refresh_due(&host));
    assert_eq!(status(), StatusCode::OK, "not due yet: nothing was read");
    host.advance(1);
    assert_eq!(status(), StatusCode::OK, "due: this request still kept the memo");
    assert_eq!(status(), StatusCode::OK);
    block_on(gateway.refresh_due(&host));
    assert_eq!(status(), StatusCode::SERVICE_UNAVAILABLE, "the refresh after the response read the config (gone)");
}

/// A config used every 600 ms (config_ttl_ms 1 s: a quiet isolate's traffic relative to its
/// TTL) is read by no request after the first: each refresh runs after a response.
#[test]
fn a_config_used_now_and_then_is_read_only_after_responses() {
    let host = host();
    let gateway = Gateway::new();
    let chat = || post("/v1/chat/completions", r#"{"model":"chat"}"#);
    assert_eq!(block_on(gateway.handle(&host, chat(), &ClientInfo::default())).response.status(), StatusCode::OK);
    let config_reads =
        || host.kv_begun.borrow_mut().replace(Vec::new()).unwrap().iter().filter(|k| *k == ACTIVE_KEY).count();
    *host.kv_begun.borrow_mut() = Some(Vec::new());
    for _ in 0..10 {
        host.advance(600);
        let status = block_on(gateway.handle(&host, chat(), &ClientInfo::default())).response.status();
        assert_eq!((status, config_reads()), (StatusCode::OK, 0), "the request kept the memo");
        block_on(gateway.refresh_due(&host));
        assert_eq!(config_reads(), 1, "the refresh after it read the config");
    }
}

/// A request that must read the config (a new isolate, or a quiet one whose memo lapsed) reads
/// its key beside it, not after it: the key's read begins before the config's has answered,
/// one KV round trip less before the origin call. The key is still read once, and a store
/// failure on it is still the lookup's 503.
#[test]
fn a_request_with_a_cold_config_reads_its_key_beside_it() {
    use crate::gateway::features::keys;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let host = host();
    let key = add_key(&host, |_| {});
    host.kv_yield.set(true);
    *host.kv_begun.borrow_mut() = Some(Vec::new());
    let gateway = Gateway::new();
    let chat = || with_key(post("/v1/chat/completions", r#"{"model":"chat"}"#), &key);
    let client = ClientInfo::default();
    let mut handled = std::pin::pin!(gateway.handle(&host, chat(), &client));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(handled.as_mut().poll(&mut cx).is_pending());
    let key_entry = keys::id_entry(&keys::named_id(&key).unwrap());
    assert_eq!(*host.kv_begun.borrow(), Some(vec![ACTIVE_KEY.to_string(), key_entry.clone()]), "both began at once");
    let status = loop {
        if let Poll::Ready(exchange) = handled.as_mut().poll(&mut cx) {
            break exchange.response.status();
        }
    };
    assert_eq!(status, StatusCode::OK);
    let begun = host.kv_begun.borrow_mut().take().unwrap_or_default();
    assert_eq!(begun.iter().filter(|k| **k == key_entry).count(), 1, "the key was read once");

    host.kv_yield.set(false);
    host.kv_fail.borrow_mut().push(keys::ID_PREFIX.into());
    let cold = Gateway::new();
    let failed = block_on(cold.handle(&host, chat(), &ClientInfo::default()));
    assert_eq!(failed.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.response.headers()["retry-after"], "1");
}

/// Once the config memo has expired, one request reads the config again while the others in
/// flight keep the memo: one KV read per refresh, not one per request. A refreshing request
/// dropped midway (a client gone) leaves the next one to read.
#[test]
fn an_expired_config_is_read_once_by_concurrent_requests() {
    use crate::gateway::ports::memory::run_interleaved;
    use std::future::Future;
    use std::pin::Pin;
    let host = host();
    let gateway = Gateway::new();
    let chat = || post("/v1/chat/completions", r#"{"model":"chat"}"#);
    let status = |request| async { gateway.handle(&host, request, &ClientInfo::default()).await.response.status() };
    assert_eq!(block_on(status(chat())), StatusCode::OK);
    host.advance(1001);
    host.kv_yield.set(true);
    let before = host.kv_ops.get();
    let futures: Vec<Pin<Box<dyn Future<Output = StatusCode> + '_>>> =
        (0..8).map(|_| Box::pin(status(chat())) as Pin<Box<dyn Future<Output = StatusCode>>>).collect();
    assert_eq!(run_interleaved(futures), vec![StatusCode::OK; 8]);
    assert_eq!(host.kv_ops.get() - before, 1, "one config read for eight requests");

    host.advance(1001);
    let mut dropped = Box::pin(status(chat()));
    let waker = std::task::Waker::noop();
    assert!(dropped.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_pending(), "reading the config");
    drop(dropped);
    let before = host.kv_ops.get();
    assert_eq!(block_on(status(chat())), StatusCode::OK);
    assert_eq!(host.kv_ops.get() - before, 1, "the next request read it");
}

#[test]
fn request_id_echoed_or_generated_and_log_has_no_secret() {
    let mut request = post("/v1/chat/completions", r#"{"model":"chat"}"#);
    request.headers_mut().insert("x-request-id", "trace-1".parse().unwrap());
    request.headers_mut().insert("authorization", "Bearer client-key".parse().unwrap());
    let host = host();
    let exchange = block_on(Gateway::new().handle(&host, request, &ClientInfo::default()));
    assert_eq!(exchange.response.headers()["x-request-id"], "trace-1");
    let line = block_on(exchange.deferred.complete(&host, None));
    assert!(line.contains("\"request_id\":\"trace-1\""), "{line}");
    assert!(!line.contains("sk-secret-value") && !line.contains("client-key"), "{line}");

    let exchange = block_on(Gateway::new().handle(&host, post("/health", ""), &ClientInfo::default()));
    assert_eq!(exchange.response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(exchange.response.headers()["x-request-id"].len(), 24);
}

#[test]
fn health_and_models() {
    let host = host();
    let get = |path: &str| Request::builder().uri(path).body(Vec::new()).unwrap();
    let (status, body, _) = run(&host, get("/health"));
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "OK"})));
    let (_, body, _) = run(&host, get("/v1/models"));
    assert_eq!(body["data"][0]["id"], "chat");
    assert_eq!(body["data"][1]["id"], "embed");
}

const REGIONAL: &str = r#"{"regions": {"eu": {"continents": ["EU"]}, "us": {"continents": ["NA"]}},
  "settings": {"region_header": "x-gateway-region"},
  "endpoints": [
    {"name": "ha", "public": true, "endpoint_type": "llm/v1/chat",
     "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$OPENAI_API_KEY"}},
     "origins": [{"url": "http://down.eu/v1", "region": "eu"}, {"url": "http://up.us/v1", "region": "us"}]},
    {"name": "pinned", "public": true, "endpoint_type": "llm/v1/chat", "residency": "eu",
     "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$OPENAI_API_KEY"}},
     "origins": [{"url": "http://down.eu/v1", "region": "eu"}, {"url": "http://up.us/v1", "region": "us"}]},
    {"name": "busy", "public": true, "endpoint_type": "llm/v1/chat",
     "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$OPENAI_API_KEY"}},
     "origins": [{"url": "http://busy.eu/v1", "region": "eu"}, {"url": "http://bad.us/v1", "region": "us"}]}
  ]}"#;

/// `down.*` refuses connections, `busy.*` answers 429, `bad.*` answers 400, `up.*` works.
fn regional_host() -> MemoryHost {
    MemoryHost::new(|request| {
        let host = request.uri().host().unwrap_or_default();
        let status = match host.split('.').next() {
            Some("down") => return Err(UpstreamError::Connect("connection refused".into())),
            Some("busy") => 429,
            Some("bad") => 400,
            _ => 200,
        };
        Ok(Response::builder().status(status).header("retry-after", "7").body(br#"{"id":"x"}"#.to_vec()).unwrap())
    })
    .with_secret("OPENAI_API_KEY", "k")
    .with_kv(ACTIVE_KEY, REGIONAL)
}

fn chat_in(model: &str, region: &str) -> Request<Vec<u8>> {
    let mut request = post("/v1/chat/completions", &format!(r#"{{"model":"{model}"}}"#));
    request.headers_mut().insert("x-gateway-region", region.parse().unwrap());
    request
}

#[test]
fn fails_over_to_the_next_region_and_reports_attempts() {
    let host = regional_host();
    let (status, _, exchange) = run(&host, chat_in("ha", "eu"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(exchange.response.headers()["x-gateway-origin"], "us#1");
    assert_eq!(exchange.deferred.log.origin.as_deref(), Some("http://up.us (us)"));
    assert_eq!(exchange.response.headers()["x-gateway-attempts"], "2");
    let outcomes: Vec<&str> = exchange.deferred.log.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["connect_error", "ok"]);
    assert_eq!(exchange.deferred.log.region.as_deref(), Some("eu"));
}

#[test]
fn residency_pin_answers_503_instead_of_leaving_the_region() {
    let host = regional_host();
    let (status, body, _) = run(&host, chat_in("pinned", "us"));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "region_unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("\"eu\""));
    assert!(host.sent.borrow().iter().all(|r| r.uri().host() == Some("down.eu")));
}

/// H3: a key's residency pin is enforced like an endpoint's: its requests never reach an
/// origin outside the pinned region, and a pin that contradicts the endpoint's is a 503.
#[test]
fn key_residency_pin_never_leaves_the_region() {
    let host = regional_host();
    let eu_key = add_key(&host, |k| k.region = Some("eu".into()));
    let (status, body, _) = run(&host, with_key(chat_in("ha", "us"), &eu_key));
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("region_unavailable")));
    assert!(!host.sent.borrow().is_empty());
    assert!(host.sent.borrow().iter().all(|r| r.uri().host() == Some("down.eu")), "only eu origins tried");

    let us_key = add_key(&host, |k| k.region = Some("us".into()));
    host.sent.borrow_mut().clear();
    let (status, body, _) = run(&host, with_key(chat_in("pinned", "us"), &us_key));
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("region_unavailable")));
    assert!(host.sent.borrow().is_empty(), "the key's pin and the endpoint's exclude every origin");
    // The same key on an endpoint with a us origin is served there.
    let (status, _, exchange) = run(&host, with_key(chat_in("ha", "eu"), &us_key));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(exchange.deferred.log.origin.as_deref(), Some("http://up.us (us)"));
}

/// L2: what unauthenticated clients and origin failures may reveal. The catalog and 404
/// suggestions show non-public endpoints only to keys allowed them; `x-gateway-origin` names
/// a region and an origin index, not a host; connect errors do not echo the origin's URL.
#[test]
fn internal_names_and_hosts_stay_internal() {
    let config = r#"{"endpoints": [
        {"name": "open-chat", "public": true, "endpoint_type": "llm/v1/chat",
         "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K", "openai_api_base": "http://origin.test/v1"}}},
        {"name": "payroll-internal", "endpoint_type": "llm/v1/chat",
         "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K", "openai_api_base": "http://10.1.2.3:8000/v1"}}}]}"#;
    let host = MemoryHost::new(ok_origin).with_secret("K", "k").with_kv(ACTIVE_KEY, config);
    let get = |path: &str| Request::builder().uri(path).body(Vec::new()).unwrap();
    for path in ["/v1/models", "/api/2.0/endpoints/", "/api/2.0/gateway/routes/"] {
        let (_, body, _) = run(&host, get(path));
        assert!(!body.to_string().contains("payroll"), "{path}: {body}");
        assert!(body.to_string().contains("open-chat"), "{path}: {body}");
    }
    let (status, _, _) = run(&host, get("/api/2.0/endpoints/payroll-internal"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let key = add_key(&host, |k| k.endpoints = vec!["payroll-*".into()]);
    let (_, body, _) = run(&host, with_key(get("/v1/models"), &key));
    assert!(body.to_string().contains("payroll-internal"), "a key allowed it sees it: {body}");
    let (_, body, _) = run(&host, post("/v1/chat/completions", r#"{"model":"payroll-internl"}"#));
    assert!(!body.to_string().contains("payroll-internal"), "no suggestion of a non-public name: {body}");

    let (status, _, exchange) = run(&host, post("/v1/chat/completions", r#"{"model":"open-chat"}"#));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(exchange.response.headers()["x-gateway-origin"], "default#0");
    assert_eq!(exchange.deferred.log.origin.as_deref(), Some("http://origin.test"), "the log keeps the host");

    let host = MemoryHost::new(|_| {
        Err(UpstreamError::Connect("invalid origin URL http://10.1.2.3:8000/v1?key=AIzaLEAK".into()))
    })
    .with_secret("K", "k")
    .with_kv(ACTIVE_KEY, config);
    let (status, body, _) = run(&host, post("/v1/chat/completions", r#"{"model":"open-chat"}"#));
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.to_string().contains("10.1.2.3") && !body.to_string().contains("AIzaLEAK"), "{body}");
}

#[test]
fn retries_429_but_not_4xx_and_keeps_the_last_answer() {
    let host = regional_host();
    let (status, body, exchange) = run(&host, chat_in("busy", "eu"));
    // eu answered 429 → moved on; us answered 400 → returned as is, no further retry.
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "origin_rejected");
    assert_eq!(exchange.deferred.log.attempts.len(), 2);
}

#[test]
fn mlflow_invocations_and_traffic_routes() {
    let config = r#"{"endpoints": [
        {"name": "a", "public": true, "endpoint_type": "llm/v1/chat", "model": {"provider": "openai", "name": "model-a", "config": {"openai_api_key": "k", "openai_api_base": "http://o/v1"}}},
        {"name": "b", "public": true, "endpoint_type": "llm/v1/chat", "model": {"provider": "openai", "name": "model-b", "config": {"openai_api_key": "k", "openai_api_base": "http://o/v1"}}}],
      "routes": [{"name": "ab", "task_type": "llm/v1/chat", "destinations": [{"name": "a", "traffic_percentage": 50}, {"name": "b", "traffic_percentage": 50}]}]}"#;
    let host = MemoryHost::new(|request| {
        let sent: Value = serde_json::from_slice(request.body()).unwrap();
        Ok(Response::new(serde_json::to_vec(&json!({"model": sent["model"]})).unwrap()))
    })
    .with_kv(ACTIVE_KEY, config);
    let (status, body, _) = run(&host, post("/gateway/a/invocations", r#"{"messages":[],"model":"ignored"}"#));
    assert_eq!((status, body["model"].as_str()), (StatusCode::OK, Some("model-a")));
    // The same request always takes the same branch; different requests spread over both.
    let pick = |i: u32| {
        let (_, body, exchange) =
            run(&host, post("/endpoints/ab/invocations", &format!(r#"{{"messages":[],"n":{i}}}"#)));
        assert_eq!(exchange.deferred.log.route.as_deref(), Some("ab"));
        body["model"].as_str().unwrap().to_string()
    };
    assert_eq!(pick(1), pick(1));
    let seen: std::collections::HashSet<String> = (0..40).map(pick).collect();
    assert_eq!(seen.len(), 2);
}

/// However many phases read the canonical body before the origin gets it (a traffic route's
/// hash, the cache key, the choice between two origins), the origin gets the prepared body
/// byte for byte as writing it anew gives, with the fields the endpoint's rules and the
/// adapter set.
#[test]
fn routed_cached_requests_forward_their_canonical_body() {
    let config = r#"{"endpoints": [
        {"name": "a", "public": true, "endpoint_type": "llm/v1/chat", "cache": "always",
         "parameters": {"top_p": 0.5}, "limits": {"max_tokens": 64}, "overrides": {"user": "u"},
         "origins": [{"url": "http://o1/v1"}, {"url": "http://o2/v1"}],
         "model": {"provider": "openai", "name": "model-a", "config": {"openai_api_key": "k"}}}],
      "routes": [{"name": "r", "task_type": "llm/v1/chat", "destinations": [{"name": "a", "traffic_percentage": 100}]}]}"#;
    let host = MemoryHost::new(ok_origin).with_kv(ACTIVE_KEY, config);
    let request = r#"{"model": "r", "seed": null, "temperature": 0, "stream": false, "max_completion_tokens": 500,
        "messages": [{"role": "user", "content": "h\u00e9"}], "stream_options": {"include_usage": false}}"#;
    for (stream, usage) in [("false", false), ("true", true)] {
        host.sent.borrow_mut().clear();
        let (_, _, exchange) =
            run(&host, post("/v1/chat/completions", &request.replace("false,", &format!("{stream},"))));
        assert_eq!(exchange.deferred.log.route.as_deref(), Some("r"));
        assert_eq!(exchange.deferred.log.cache, Some("MISS"));
        let expected = json!({"max_tokens": 64, "messages": [{"content": "hé", "role": "user"}], "model": "model-a",
            "stream": stream == "true", "stream_options": {"include_usage": usage}, "temperature": 0, "top_p": 0.5,
            "user": "u"});
        assert_eq!(host.sent.borrow()[0].body(), &serde_json::to_vec(&expected).unwrap());
    }
}

/// An OpenAI client's request that no route or cache writes in canonical form goes on in
/// the client's own bytes, field by field: what the endpoint's rules and the provider set is
/// written anew (`null`s dropped), the rest copied as the client spelled it. A repeated key
/// (which one counts is the tree's call) sends the body written from the tree.
#[test]
fn plain_requests_forward_the_clients_own_bytes() {
    let config = r#"{"endpoints": [
        {"name": "a", "public": true, "endpoint_type": "llm/v1/chat",
         "parameters": {"top_p": 0.5}, "limits": {"max_tokens": 64}, "overrides": {"user": "u"},
         "model": {"provider": "openai", "name": "model-a", "config": {"openai_api_key": "k", "openai_api_base": "http://o/v1"}}}]}"#;
    let host = MemoryHost::new(ok_origin).with_kv(ACTIVE_KEY, config);
    let request = r#"{ "model" : "a", "seed": null, "temperature" : 1e0, "max_completion_tokens": 500, "user": "x",
        "messages": [ {"role": "user", "content": "h\u00e9"} ], "n":1 }"#;
    let (status, _, _) = run(&host, post("/v1/chat/completions", request));
    assert_eq!(status, StatusCode::OK);
    let sent = String::from_utf8(host.sent.borrow()[0].body().clone()).unwrap();
    assert_eq!(
        sent,
        r#"{"max_tokens":64,"messages": [ {"role": "user", "content": "h\u00e9"} ],"model":"model-a","n":1,"temperature" : 1e0,"top_p":0.5,"user":"u"}"#
    );
    host.sent.borrow_mut().clear();
    let repeated = r#"{"model": "a", "n": 1, "messages": [{"role": "user", "content": "hi"}], "n": 2}"#;
    let (status, _, _) = run(&host, post("/v1/chat/completions", repeated));
    assert_eq!(status, StatusCode::OK);
    let expected = json!({"max_tokens": 64, "messages": [{"content": "hi", "role": "user"}], "model": "model-a", "n": 2,
        "top_p": 0.5, "user": "u"});
    assert_eq!(host.sent.borrow()[0].body(), &serde_json::to_vec(&expected).unwrap());
}

#[test]
fn mlflow_endpoint_listing() {
    let host = host();
    let get = |path: &str| Request::builder().uri(path).body(Vec::new()).unwrap();
    let (status, body, _) = run(&host, get("/api/2.0/endpoints/"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["endpoints"][0]["endpoint_url"], "/gateway/chat/invocations");
    let (_, body, _) = run(&host, get("/api/2.0/endpoints/embed"));
    assert_eq!(body["model"], json!({"name": "text-embedding-3-small", "provider": "openai"}));
    let (status, _, _) = run(&host, get("/api/2.0/gateway/routes/nope"));
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn honours_retry_after_on_the_last_origin_when_it_fits_the_deadline() {
    let config = r#"{"endpoints": [{"name": "c", "public": true, "endpoint_type": "llm/v1/chat",
        "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "k", "openai_api_base": "http://o/v1"}}}]}"#;
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = calls.clone();
    let host = MemoryHost::new(move |_| {
        seen.set(seen.get() + 1);
        let status = if seen.get() == 1 { 429 } else { 200 };
        Ok(Response::builder().status(status).header("retry-after", "2").body(br#"{"id":"ok"}"#.to_vec()).unwrap())
    })
    .with_kv(ACTIVE_KEY, config);
    let before = host.now_ms.get();
    let (status, body, exchange) = run(&host, post("/v1/chat/completions", r#"{"model":"c"}"#));
    assert_eq!((status, body["id"].as_str()), (StatusCode::OK, Some("ok")));
    assert_eq!(calls.get(), 2);
    assert!(host.now_ms.get() - before >= 2000, "waited out Retry-After");
    let sent = host.sent.borrow();
    assert!(!sent[1].body().is_empty() && sent[0].body() == sent[1].body(), "the retry resends the same request");
    assert_eq!(exchange.deferred.log.attempts.len(), 2);
}

#[test]
fn breaker_skips_an_origin_that_keeps_failing() {
    let host = regional_host();
    let gateway = Gateway::new();
    let tried_down = || host.sent.borrow().iter().filter(|r| r.uri().host() == Some("down.eu")).count();
    for _ in 0..3 {
        let e = block_on(gateway.handle(&host, chat_in("ha", "eu"), &ClientInfo::default()));
        assert_eq!(e.response.status(), StatusCode::OK);
    }
    assert_eq!(tried_down(), 3);
    // Open now: the failing origin goes last, so the healthy one answers first time.
    let e = block_on(gateway.handle(&host, chat_in("ha", "eu"), &ClientInfo::default()));
    assert_eq!(e.response.headers()["x-gateway-attempts"], "1");
    assert_eq!(tried_down(), 3);
    host.advance(10_001);
    block_on(gateway.handle(&host, chat_in("ha", "eu"), &ClientInfo::default()));
    assert_eq!(tried_down(), 4, "after the cool-down it is tried again");
}

#[test]
fn hostile_input_gets_a_4xx_never_a_panic() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<String> = vec![
        String::new(),
        "null".into(),
        "\u{0}\u{ffff}".into(),
        deep,
        r#"{"model": ["chat"]}"#.into(),
        r#"{"model": "chat", "messages": "nope"}"#.into(),
        r#"{"model": "chat", "messages": [{"role": 7, "content": {"x": 1}}], "max_tokens": -1e308}"#.into(),
        r#"{"model": "chat", "stream": "yes", "n": 1e400}"#.into(),
        r#"{"model": "embed", "input": [[[[1]]]], "temperature": "hot"}"#.into(),
        r#"{"model": "chat", "system": [{"type": "image"}], "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}"#.into(),
    ];
    let paths = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/endpoints/chat/invocations",
        "/gateway/embed/invocations",
        "/gateway/%ff%fe/invocations",
    ];
    let host = host();
    for path in paths {
        for body in &bodies {
            let (status, json, _) = run(&host, post(path, body));
            assert!(status.is_client_error() || status.is_success(), "{path} {body:.40}: {status} {json}");
            if status.is_client_error() {
                assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {json}");
            }
        }
    }
}

// --- budgets, streams and usage (issue 12) ----------------------------------------------------

/// A keyed, priced chat endpoint ($1000 / $2000 per 1M tokens: 1000 / 2000 nUSD per token) and
/// an unpriced one; the origin answers with the given usage.
const PRICED: &str = r#"{"endpoints": [
    {"name": "paid", "endpoint_type": "llm/v1/chat",
     "model": {"provider": "openai", "name": "priced", "config": {"openai_api_key": "$K", "openai_api_base": "http://o/v1"}}},
    {"name": "free-model", "endpoint_type": "llm/v1/chat",
     "model": {"provider": "openai", "name": "unpriced", "config": {"openai_api_key": "$K", "openai_api_base": "http://o/v1"}}}],
  "prices": {"openai/priced": {"input_per_1m": 1000, "output_per_1m": 2000}}}"#;

fn priced_host(answer: impl Fn(&Request<Vec<u8>>) -> Response<Vec<u8>> + 'static) -> MemoryHost {
    MemoryHost::new(move |r| Ok(answer(r))).with_secret("K", "k").with_kv(ACTIVE_KEY, PRICED)
}

fn completion(prompt: u64, completion: u64) -> Response<Vec<u8>> {
    let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "priced",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
    Response::builder().header("content-type", "application/json").body(serde_json::to_vec(&body).unwrap()).unwrap()
}

fn sse_response(events: &[Value], done: bool) -> Response<Vec<u8>> {
    let mut body = String::new();
    for e in events {
        body.push_str(&format!("data: {e}\n\n"));
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    Response::builder().header("content-type", "text/event-stream").body(body.into_bytes()).unwrap()
}

fn chunk(content: &str, finish: Option<&str>) -> Value {
    json!({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "priced",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
}

/// Budgets hold under concurrency: requests racing for the last of a key's budget (interleaved
/// at every KV call in one isolate) each reserve their worst case before being forwarded, so
/// no more are admitted than can be paid for. (Checking "spent < budget" let all of them in.)
#[test]
fn concurrent_requests_against_a_nearly_spent_budget_do_not_overshoot() {
    use crate::gateway::ports::memory::run_interleaved;
    use std::future::Future;
    use std::pin::Pin;
    // Each request: 7 prompt tokens estimated + max_tokens 20 → reserves $0.047; it really costs
    // 5 × $0.001 + 20 × $0.002 = $0.045. After the first, $0.155 of $0.2 holds 3 more.
    let host = priced_host(|_| completion(5, 20));
    let key = add_key(&host, |k| k.budget_usd = Some(0.2));
    let body = r#"{"model":"paid","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#;
    let first = run(&host, with_key(post("/v1/chat/completions", body), &key));
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let first_line: Value = serde_json::from_str(&block_on(first.2.deferred.complete(&host, None))).unwrap();
    host.kv_yield.set(true);
    let gateway = Gateway::new();
    let requests: Vec<Request<Vec<u8>>> = (0..8).map(|_| with_key(post("/v1/chat/completions", body), &key)).collect();
    type Call<'a> = Pin<Box<dyn Future<Output = (StatusCode, String)> + 'a>>;
    let futures: Vec<Call<'_>> = requests
        .into_iter()
        .map(|r| {
            let (gateway, host) = (&gateway, &host);
            Box::pin(async move {
                let exchange = gateway.handle(host, r, &ClientInfo::default()).await;
                let status = exchange.response.status();
                (status, exchange.deferred.complete(host, None).await)
            }) as Call<'_>
        })
        .collect();
    let results = run_interleaved(futures);
    host.kv_yield.set(false);
    let served = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert!(results.iter().all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS));
    let spent: f64 = results
        .iter()
        .filter_map(|(_, line)| serde_json::from_str::<Value>(line).ok())
        .filter_map(|l| l["cost_usd"].as_f64())
        .sum::<f64>()
        + first_line["cost_usd"].as_f64().unwrap();
    assert_eq!(served, 3, "spent ${spent}");
    assert!(spent <= 0.2 + 1e-9, "spent ${spent} of $0.2");
}

/// A request's limits are settled when its accounting is closed (`Deferred::close`, which the
/// Cloudflare host runs before it yields for the answer to go out), not when its writes run:
/// the isolate's next request is admitted against the real usage, not the reservation. (The
/// e2e suite caught a client's next request refused on workerd while the first one's
/// after-response work still waited for its timer turn.)
#[test]
fn a_closed_request_is_settled_before_its_writes_run() {
    let host = priced_host(|_| completion(5, 5));
    let body = r#"{"model":"paid","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#;
    let gateway = Gateway::new();
    let call = |key: &str| {
        block_on(gateway.handle(&host, with_key(post("/v1/chat/completions", body), key), &ClientInfo::default()))
    };
    let remaining = |e: &Exchange<Vec<u8>>| -> u64 {
        e.response.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap()
    };
    let probe = add_key(&host, |k| k.tpm = Some(1000));
    let reserve = 1000 - remaining(&call(&probe));
    let used = 10;
    assert!(reserve > used, "the worst case (prompt estimate + max_tokens) exceeds the real usage");
    // Room for two requests' usage and one reservation.
    let key = add_key(&host, |k| k.tpm = Some(2 * used + reserve));
    let first = call(&key);
    assert_eq!(first.response.status(), StatusCode::OK);
    let first = first.deferred.close(&host, None);
    let second = call(&key);
    assert_eq!(second.response.status(), StatusCode::OK, "settled to {used} tokens, not {reserve}");
    assert_eq!(remaining(&second), used);
    // While the second is not closed, its reservation holds: a third does not fit.
    assert_eq!(call(&key).response.status(), StatusCode::TOO_MANY_REQUESTS);
    let second = second.deferred.close(&host, None);
    let third = call(&key);
    assert_eq!(third.response.status(), StatusCode::OK);
    assert_eq!(remaining(&third), 0);
    for closed in [first, second, third.deferred.close(&host, None)] {
        let line: Value = serde_json::from_str(&block_on(closed.complete(&host))).unwrap();
        assert_eq!((line["total_tokens"].as_u64(), line["accounting_error"].as_str()), (Some(used), None), "{line}");
    }
}

/// M2: a USD budget on an endpoint whose model has no price would never trip: refused (403)
/// unless the config prices it (a `"*"` default does).
#[test]
fn budgets_are_not_unlimited_on_unpriced_models() {
    let host = priced_host(|_| completion(1, 1));
    let key = add_key(&host, |k| k.budget_usd = Some(5.0));
    let body = r#"{"model":"free-model","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body_json, _) = run(&host, with_key(post("/v1/chat/completions", body), &key));
    assert_eq!((status, body_json["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("unpriced_model")));
    let unbudgeted = add_key(&host, |_| {});
    assert_eq!(run(&host, with_key(post("/v1/chat/completions", body), &unbudgeted)).0, StatusCode::OK);
    let with_default = PRICED.replace(r#""prices": {"#, r#""prices": {"*": {"input_per_1m": 1}, "#);
    host.kv.borrow_mut().insert(ACTIVE_KEY.into(), with_default.into_bytes());
    assert_eq!(run(&host, with_key(post("/v1/chat/completions", body), &key)).0, StatusCode::OK);
}

/// H4: a client's `include_usage: false` does not stop the gateway asking the origin for
/// usage (it just does not see the usage chunk), so the stream is charged what it used.
#[test]
fn streams_are_charged_even_without_include_usage() {
    let host = priced_host(|r| {
        let sent: Value = serde_json::from_slice(r.body()).unwrap();
        let usage = sent["stream_options"]["include_usage"] == true;
        let mut events = vec![chunk("hello", None), chunk("", Some("stop"))];
        if usage {
            events.push(json!({"id": "s", "object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}}));
        }
        sse_response(&events, true)
    });
    let key = add_key(&host, |k| k.budget_usd = Some(5.0));
    let body = r#"{"model":"paid","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, text, exchange) = run(&host, with_key(post("/v1/chat/completions", body), &key));
    assert_eq!(status, StatusCode::OK);
    assert!(!text.as_str().unwrap().contains("\"usage\":{"), "the client did not ask for it: {text}");
    assert!(exchange.deferred.log.stream);
    let sent: Value = serde_json::from_slice(host.sent.borrow()[0].body()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

/// H4: a stream that ends without the origin's usage (cut, or the client gone after the first
/// chunk) is charged the gateway's estimate: the prompt at least, and the text it saw.
#[test]
fn cut_streams_are_charged_an_estimate() {
    let host = priced_host(|_| sse_response(&[chunk("hello there", None)], false));
    let key = add_key(&host, |k| k.budget_usd = Some(5.0));
    let prompt = "word ".repeat(300);
    let body = json!({"model": "paid", "stream": true, "messages": [{"role": "user", "content": prompt}]}).to_string();
    let mut exchange = block_on(Gateway::new().handle(
        &host,
        with_key(post("/v1/chat/completions", &body), &key),
        &ClientInfo::default(),
    ));
    let ResponseBody::Stream(bytes, mut pump) =
        std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new()))
    else {
        panic!("a live stream")
    };
    // The client goes away after the first chunk: the host drops the pump without `end`.
    let _ = pump.chunk(&bytes[..bytes.len() / 2]);
    let summary = pump.summary();
    assert!(!summary.completed);
    let line: Value = serde_json::from_str(&block_on(exchange.deferred.complete(&host, Some(summary)))).unwrap();
    assert!(line["prompt_tokens"].as_u64().unwrap() >= 300, "{line}");
    assert!(line["cost_usd"].as_f64().unwrap() > 0.0, "{line}");
}

/// Stop a stream at the cap: when a stream's running usage crosses the room its key had, the
/// client gets the normal end of an OpenAI stream (the open choice finishes, `[DONE]`) with an
/// error event naming the cap before it, the pump is finished (the host stops reading) and the
/// origin is to be cancelled (`completed` is false); the stream is charged what it used.
#[test]
fn a_stream_is_stopped_at_the_cap() {
    let host = priced_host(|_| {
        let events: Vec<Value> = (0..50).map(|i| chunk(&format!("word{i:02} "), None)).collect();
        sse_response(&events, true)
    });
    // tpm 60: the prompt (~4 tokens) and 50 × 7 bytes ≈ 88 tokens of output do not fit.
    let key = add_key(&host, |k| k.tpm = Some(60));
    let body = r#"{"model":"paid","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut exchange = block_on(Gateway::new().handle(
        &host,
        with_key(post("/v1/chat/completions", body), &key),
        &ClientInfo::default(),
    ));
    assert_eq!(exchange.response.status(), StatusCode::OK);
    let ResponseBody::Stream(bytes, mut pump) =
        std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new()))
    else {
        panic!("a live stream")
    };
    let mut out = Vec::new();
    let mut fed = 0;
    for piece in bytes.chunks(64) {
        out.extend(pump.chunk(piece));
        fed += piece.len();
        if pump.is_finished() {
            break;
        }
    }
    assert!(pump.is_finished() && fed < bytes.len(), "stopped before the origin's end");
    let events = crate::gateway::test_util::parse_sse(&out);
    let n = events.len();
    assert_eq!(events[n - 1].1, "[DONE]");
    assert_eq!(events[n - 2].1["error"]["code"], "rate_limit_exceeded", "{events:?}");
    assert!(events[n - 2].1["error"]["message"].as_str().unwrap().contains("60 tokens per minute"));
    assert_eq!(events[n - 3].1["choices"][0]["finish_reason"], "length");
    let summary = pump.summary();
    assert!(!summary.completed && summary.stopped.is_some());
    let line: Value = serde_json::from_str(&block_on(exchange.deferred.complete(&host, Some(summary)))).unwrap();
    assert_eq!(line["stream_stopped"], "rate_limit_exceeded");
    assert!(line["total_tokens"].as_u64().unwrap() > 60, "charged what it used: {line}");
}

/// Spin sends a buffered answer after `settle` and only then runs `Observe`: the sweep (a listing
/// of the whole store and up to `MAX_KV_READS` operations) never holds up a response.
#[test]
fn the_sweep_waits_until_the_answer_is_out() {
    let (host, key) = stateless_host();
    // Ledger entries not yet folded into shards: a request writes one (its usage and its
    // tally), a sweep folds them.
    let loose = || host.kv.borrow().keys().filter(|k| k.starts_with("ledger:")).count();
    let shards = || host.kv.borrow().keys().filter(|k| k.starts_with("usage:") || k.starts_with("metrics:")).count();
    let mut swept = 0;
    for _ in 0..100 {
        let exchange = fresh_instance_call(&host, &key, PAID_CALL);
        let before = (loose(), shards());
        let (_line, observe) = block_on(exchange.deferred.settle(&host, None));
        assert_eq!(
            (loose(), shards()),
            (before.0 + 1, before.1),
            "settle (before the answer is sent) writes one entry and sweeps nothing"
        );
        let afterwards = block_on(observe.run(&host));
        assert_eq!(afterwards.housekeeping_error, None);
        swept += usize::from(loose() < before.0 + 1);
        host.advance(1_000);
    }
    assert!(swept > 0, "some of the 100 runs after the answer swept");
}

/// On Spin a request's one ledger write that fails (a KV hiccup) is named in its log line; the
/// answer stands, and nothing else was written in its place.
#[test]
fn a_failed_ledger_write_is_named_in_the_log_line() {
    let (host, key) = stateless_host();
    host.kv_fail.borrow_mut().push("ledger:".into());
    let exchange = fresh_instance_call(&host, &key, PAID_CALL);
    let (line, _observe) = block_on(exchange.deferred.settle(&host, None));
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["status"], 200);
    assert!(line["accounting_error"].as_str().is_some_and(|e| e.starts_with("ledger: ")), "{line}");
    let written = |p: &str| host.kv.borrow().keys().filter(|k| k.starts_with(p)).count();
    assert_eq!((written("ledger:"), written("usage:"), written("metrics:")), (0, 0, 0));
}

/// One chat call with `key` through a new `Gateway`, as Spin makes a fresh instance per
/// request; it must answer 200.
fn fresh_instance_call(host: &MemoryHost, key: &str, body: &str) -> Exchange<Vec<u8>> {
    let request = with_key(post("/v1/chat/completions", body), key);
    let exchange = block_on(Gateway::new().handle(host, request, &ClientInfo::default()));
    assert_eq!(exchange.response.status(), StatusCode::OK);
    exchange
}

/// A host without TTLs or in-memory state (Spin) after `requests` requests of one key with an
/// rpm limit, each in a fresh instance with its after-response work done, `gap_ms` apart.
fn stateless_host_after(requests: usize, gap_ms: u64) -> MemoryHost {
    let (host, key) = stateless_host();
    for _ in 0..requests {
        let exchange = fresh_instance_call(&host, &key, PAID_CALL);
        block_on(exchange.deferred.complete(&host, None));
        host.advance(gap_ms);
    }
    host
}

/// A host without TTLs or in-memory state (Spin) and a key with an rpm limit on it.
fn stateless_host() -> (MemoryHost, String) {
    let host = priced_host(|_| completion(1, 1));
    host.stateless.set(true);
    let key = add_key(&host, |k| k.rpm = Some(1000));
    (host, key)
}

const PAID_CALL: &str = r#"{"model":"paid","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;

/// M5 on Spin: its store has no TTL and every request writes its own ledger entry, so the
/// gateway sweeps now and then: counters of ended windows are deleted, entries folded into
/// shards and finished shards compacted (the store stops growing with every request).
#[test]
fn a_store_without_ttls_is_swept() {
    let host = stateless_host_after(200, 30_000);
    let count = |prefix: &str| host.kv.borrow().keys().filter(|k| k.starts_with(prefix)).count();
    // 100 minute windows were used; 200 requests wrote 200 ledger entries (each with the
    // request's usage and tally). Sweeps run after ~1 in 32 responses (when is chance, so the
    // bounds only say some ran).
    assert!(count("rl:") < 100, "{} counters left", count("rl:"));
    assert!(count("ledger:") < 200, "{} ledger entries left", count("ledger:"));
    // Each sweep's KV work is bounded: a backlog takes a few.
    let swept = block_on(crate::gateway::features::housekeeping::sweep(&host)).unwrap();
    assert!(swept.entries + swept.shards > 0 || count("usage:") <= 4);
    for _ in 0..4 {
        block_on(crate::gateway::features::housekeeping::sweep(&host)).unwrap();
    }
    assert_eq!(count("ledger:"), 0, "every entry folded");
    assert!(count("rl:") <= 2, "{} counters left after a sweep", count("rl:"));
    assert!(
        count("usage:") <= 4,
        "{:?}",
        host.kv.borrow().keys().filter(|k| k.starts_with("usage:")).collect::<Vec<_>>()
    );
    assert!(count("metrics:") <= 2, "{} tally entries left (one per request before)", count("metrics:"));
    // Nothing was lost: the usage API still sums all 200 requests.
    let today = crate::gateway::util::time::days_of(host.now_ms.get());
    let id = host.kv.borrow().keys().find_map(|k| k.strip_prefix("keyid:").map(str::to_owned)).unwrap();
    let usage = block_on(crate::gateway::features::usage::query(
        &host,
        crate::gateway::features::usage::Subject::Key(&id),
        today - 1,
        today,
    ))
    .unwrap();
    assert_eq!(usage["total"]["requests"], 200, "{usage}");
    let tallies = block_on(crate::gateway::features::telemetry::tally::query(&host, today - 1, today)).unwrap();
    let requests: u64 = tallies.days.iter().flat_map(|(_, day)| day).map(|(_, counts)| counts.requests).sum();
    assert_eq!((requests, tallies.partial), (200, false), "the request tallies too");
}

/// Concurrent sweeps on Spin: one that finds a compaction's lock held skips that compaction
/// and goes on with the rest, at once (before, it waited for the lock — until its holder
/// released it or its 2 s lease ran out — and every later compaction of the sweep waited
/// behind it). The locks are taken by compare-and-swap there, so taking a free one does not
/// wait either (Fischer's algorithm waits 50 ms for each).
#[test]
fn a_sweep_skips_a_compaction_another_holds_and_goes_on() {
    // Two folds of three requests' ledger entries each: two shards of each kind.
    let (host, key) = stateless_host();
    for _ in 0..2 {
        for _ in 0..3 {
            let exchange = fresh_instance_call(&host, &key, PAID_CALL);
            block_on(exchange.deferred.settle(&host, None));
            host.advance(10);
        }
        assert!(block_on(crate::gateway::features::ledger::fold_pending(&host)).unwrap());
    }
    let count = |prefix: &str| host.kv.borrow().keys().filter(|k| k.starts_with(prefix)).count();
    let id = host.kv.borrow().keys().find_map(|k| k.strip_prefix("keyid:").map(str::to_owned)).unwrap();
    let date = crate::gateway::util::time::day_string(crate::gateway::util::time::days_of(host.now_ms.get()));
    let key_shards = format!("usage:{id}:");
    let (before_key, before_tenant, before_tallies) = (count(&key_shards), count("usage:tenant:"), count("metrics:"));
    assert!(before_key > 1 && before_tenant > 1 && before_tallies > 1, "{before_key} {before_tenant} {before_tallies}");
    // Another instance is compacting this key's day.
    let held = format!("lock:usage-compact:{key_shards}{date}");
    let other =
        serde_json::to_vec(&crate::gateway::ports::lock::LockValue { id: "other".into(), at: host.now_ms.get() });
    host.kv.borrow_mut().insert(held.clone(), other.unwrap());
    let started = host.now_ms.get();
    let swept = block_on(crate::gateway::features::housekeeping::sweep(&host)).unwrap();
    assert_eq!(host.now_ms.get(), started, "no lock was waited for");
    assert_eq!(count(&key_shards), before_key, "the held compaction was skipped");
    assert_eq!((count("usage:tenant:"), count("metrics:")), (1, 1), "the others were folded");
    assert_eq!(swept.shards, before_tenant + before_tallies);
    assert!(host.kv.borrow()[&held].starts_with(br#"{"id":"other""#), "the other's lock is left alone");
    // Once the other is done, the next sweep folds this key's day too.
    host.kv.borrow_mut().remove(&held);
    block_on(crate::gateway::features::housekeeping::sweep(&host)).unwrap();
    assert_eq!(count(&key_shards), 1);
}

/// A deterministic stream fills the cache once it completes: the same request again is a hit
/// (replayed as a stream, without calling the origin); a cut stream fills nothing.
#[test]
fn a_completed_deterministic_stream_fills_the_cache() {
    let cut = std::rc::Rc::new(std::cell::Cell::new(false));
    let origin_cut = cut.clone();
    let host = MemoryHost::new(move |_| {
        let mut events = vec![chunk("streamed ", None), chunk("answer", Some("stop"))];
        events.push(json!({"id": "s", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}));
        if origin_cut.get() {
            events.truncate(1);
        }
        Ok(sse_response(&events, !origin_cut.get()))
    })
    .with_secret("OPENAI_API_KEY", "sk-secret-value")
    .with_kv(ACTIVE_KEY, CONFIG)
    .with_edge_cache();
    let edge_entries = || host.edge.borrow().as_ref().map_or(0, |edge| edge.len());
    let stream = |content: &str| {
        let body = json!({"model": "chat", "temperature": 0, "stream": true,
            "messages": [{"role": "user", "content": content}]});
        let mut exchange = block_on(Gateway::new().handle(
            &host,
            post("/v1/chat/completions", &body.to_string()),
            &ClientInfo::default(),
        ));
        let cache = exchange.response.headers().get("x-gateway-cache").map(|v| v.to_str().unwrap().to_string());
        let (text, summary) = match std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new())) {
            ResponseBody::Full(bytes) => (String::from_utf8(bytes).unwrap(), None),
            ResponseBody::Stream(origin, mut pump) => {
                let mut out = pump.chunk(&origin);
                out.extend(pump.end());
                (String::from_utf8(out).unwrap(), Some(pump.summary()))
            }
        };
        block_on(exchange.deferred.complete(&host, summary));
        (cache, text)
    };
    let (first, text) = stream("fill me");
    assert_eq!(first.as_deref(), Some("MISS"));
    assert!(text.contains("streamed ") && text.contains("answer"));
    assert_eq!(edge_entries(), 1, "stored in the edge cache too");
    let (second, replay) = stream("fill me");
    assert_eq!(second.as_deref(), Some("HIT"), "the completed stream was stored");
    assert_eq!(host.sent.borrow().len(), 1, "the hit did not call the origin");
    let events = crate::gateway::test_util::parse_sse(replay.as_bytes());
    let text: String =
        events.iter().filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert_eq!(text, "streamed answer");
    // The client hid the usage chunk, the cache did not: a buffered hit reports the usage.
    let body = json!({"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "fill me"}]});
    let (status, answer, exchange) = run(&host, post("/v1/chat/completions", &body.to_string()));
    assert_eq!((status, exchange.response.headers()["x-gateway-cache"].to_str().unwrap()), (StatusCode::OK, "HIT"));
    assert_eq!(answer["usage"]["total_tokens"], 5, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "streamed answer");

    cut.set(true);
    let (miss, _) = stream("cut me");
    assert_eq!(miss.as_deref(), Some("MISS"));
    let (again, _) = stream("cut me");
    assert_eq!(again.as_deref(), Some("MISS"), "a cut stream is not cached");
    assert_eq!(edge_entries(), 1, "nor copied to the edge");
}

const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// `POST /admin/cache/purge {}` with [`ADMIN_TOKEN`]: every cached answer.
fn purge_all() -> Request<Vec<u8>> {
    Request::builder()
        .method(Method::POST)
        .uri("/admin/cache/purge")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(b"{}".to_vec())
        .unwrap()
}

/// The edge cache (Cloudflare's Cache API, one per location) answers hits before KV: the
/// answer is copied there when stored, and a KV hit copies it there for this location; a copy
/// lives at most `EDGE_TTL_MAX_SECS`; a purge deletes this location's copies with the KV
/// entries. The log line says which level answered.
#[test]
fn hits_come_from_the_edge_cache_before_kv() {
    use crate::gateway::features::cache::EDGE_TTL_MAX_SECS;
    let host = host().with_edge_cache().with_secret("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN);
    let body = json!({"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "edge"}]});
    let ask = || {
        let (status, _, exchange) = run(&host, post("/v1/chat/completions", &body.to_string()));
        assert_eq!(status, StatusCode::OK);
        let cache = exchange.response.headers()["x-gateway-cache"].to_str().unwrap().to_string();
        let line: Value = serde_json::from_str(&block_on(exchange.deferred.complete(&host, None))).unwrap();
        (cache, line["cache_level"].as_str().map(str::to_owned))
    };
    let level = |level: &str| ("HIT".to_string(), Some(level.to_string()));
    assert_eq!(ask(), ("MISS".to_string(), None));
    let key = host.kv.borrow().keys().find(|k| k.starts_with("cache:")).cloned().expect("stored in KV");
    let stored = host.kv.borrow()[&key].clone();
    assert_eq!(host.edge.borrow().as_ref().unwrap()[&key].0, stored, "and copied to the edge");

    // The edge copy answers without KV (here: its entry is gone).
    host.kv.borrow_mut().remove(&key);
    assert_eq!(ask(), level("edge"));
    // Another location (an empty edge cache): KV answers, and this location gets a copy.
    host.kv.borrow_mut().insert(key.clone(), stored.clone());
    host.edge.borrow_mut().as_mut().unwrap().clear();
    assert_eq!(ask(), level("kv"));
    assert_eq!(ask(), level("edge"));
    // A copy outlives neither EDGE_TTL_MAX_SECS nor the entry's TTL (300 s here).
    host.advance(EDGE_TTL_MAX_SECS * 1000 + 1);
    assert_eq!(ask(), level("kv"));
    let expires = host.edge.borrow().as_ref().unwrap()[&key].1;
    assert_eq!(expires, host.now_ms.get() + EDGE_TTL_MAX_SECS * 1000);
    host.advance(250_000 - (EDGE_TTL_MAX_SECS * 1000 + 1)); // 250 s after the fill: 50 s left
    assert_eq!(ask(), level("kv"));
    let expires = host.edge.borrow().as_ref().unwrap()[&key].1;
    assert!(expires <= host.now_ms.get() + 50_000, "no longer than what is left of the TTL");
    assert_eq!(host.sent.borrow().len(), 1, "every hit without the origin");

    // A purge deletes this location's copy too.
    let (status, answer, _) = run(&host, purge_all());
    assert_eq!((status, &answer["purged"]), (StatusCode::OK, &json!(1)), "{answer}");
    assert!(host.edge.borrow().as_ref().unwrap().is_empty());
    assert_eq!(ask(), ("MISS".to_string(), None));
    assert_eq!(host.sent.borrow().len(), 2);
}

/// In an isolate that keeps state, an answer stored or found here answers the same request
/// again from memory (no edge cache, no KV read) for at most `MEMORY_TTL_MS`; a purge here
/// clears it. A host without state between requests (Spin) keeps nothing.
#[test]
fn recent_answers_are_served_from_the_isolates_memory() {
    use crate::gateway::features::cache::MEMORY_TTL_MS;
    for stateless in [false, true] {
        let host = host().with_secret("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN);
        host.stateless.set(stateless);
        let gateway = Gateway::new();
        let body = json!({"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": "memory"}]});
        let send = |request: Request<Vec<u8>>| {
            let exchange = block_on(gateway.handle(&host, request, &ClientInfo::default()));
            let cache = exchange.response.headers().get("x-gateway-cache").map(|v| v.to_str().unwrap().to_string());
            let line: Value = serde_json::from_str(&block_on(exchange.deferred.complete(&host, None))).unwrap();
            (cache, line["cache_level"].as_str().map(str::to_owned))
        };
        let ask = || send(post("/v1/chat/completions", &body.to_string()));
        let hit = |level: &str| (Some("HIT".to_string()), Some(level.to_string()));
        assert_eq!(ask(), (Some("MISS".to_string()), None));
        let key = host.kv.borrow().keys().find(|k| k.starts_with("cache:")).cloned().unwrap();
        let stored = host.kv.borrow_mut().remove(&key).unwrap();
        if stateless {
            assert_eq!(ask().0.as_deref(), Some("MISS"), "{stateless}: nothing kept in memory");
            continue;
        }
        assert_eq!(ask(), hit("memory"), "no KV read");
        host.kv.borrow_mut().insert(key.clone(), stored);
        host.advance(MEMORY_TTL_MS);
        assert_eq!(ask(), hit("kv"));
        assert_eq!(ask(), hit("memory"), "a KV hit is kept too");
        send(purge_all());
        assert_eq!(ask(), (Some("MISS".to_string()), None), "the purge cleared this isolate's memory");
        assert_eq!(host.sent.borrow().len(), 2);
    }
}

/// Identical deterministic requests in flight together make one origin call: the others wait
/// for its answer (`x-gateway-cache: COALESCED`), and each request is accounted with the
/// answer's usage.
#[test]
fn identical_concurrent_requests_share_one_origin_call() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    let host = MemoryHost::new(|_| Ok(completion(7, 3)))
        .with_secret("OPENAI_API_KEY", "sk-secret-value")
        .with_kv(ACTIVE_KEY, CONFIG);
    host.kv_yield.set(true); // every KV call lets the other requests run: they overlap
    let gateway = Gateway::new();
    let body = r#"{"model":"chat","temperature":0,"messages":[{"role":"user","content":"together"}]}"#;
    let client = ClientInfo::default();
    type Call<'a> = Pin<Box<dyn Future<Output = Exchange<Vec<u8>>> + 'a>>;
    let mut calls: Vec<Call<'_>> = (0..5)
        .map(|_| {
            Box::pin(gateway.handle(&host, post("/v1/chat/completions", body), &client))
                as Pin<Box<dyn Future<Output = _>>>
        })
        .collect();
    let mut exchanges: Vec<Option<Exchange<Vec<u8>>>> = (0..5).map(|_| None).collect();
    block_on(std::future::poll_fn(|cx| {
        for (call, slot) in calls.iter_mut().zip(exchanges.iter_mut()) {
            if slot.is_none() {
                if let Poll::Ready(exchange) = call.as_mut().poll(cx) {
                    *slot = Some(exchange);
                }
            }
        }
        if exchanges.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    assert_eq!(host.sent.borrow().len(), 1, "one origin call for five identical requests");
    let mut statuses = Vec::new();
    for exchange in exchanges.into_iter().flatten() {
        assert_eq!(exchange.response.status(), StatusCode::OK);
        statuses.push(exchange.response.headers()["x-gateway-cache"].to_str().unwrap().to_string());
        let line: Value = serde_json::from_str(&block_on(exchange.deferred.complete(&host, None))).unwrap();
        assert_eq!(line["total_tokens"], 10, "each request is accounted: {line}");
    }
    statuses.sort();
    assert_eq!(statuses, ["COALESCED", "COALESCED", "COALESCED", "COALESCED", "MISS"]);
    assert!(gateway.state.in_flight.is_empty(), "the flight ended with its leader");
}

/// A body's JSON values are bounded by count (each costs CPU to read, guard, write and free),
/// at defaults that keep the dearest body under 2 ms (`benches/slowest`); 413 names the
/// bound, and a config's `settings.max_body_*` moves it.
#[test]
fn settings_bound_how_many_json_values_a_body_may_hold() {
    let list = |item: &str, n: usize| format!(r#"{{"model":"chat","messages":[],"x":[{}]}}"#, vec![item; n].join(","));
    let (status, answer, _) = run(&host(), post("/v1/chat/completions", &list("{\"a\":1}", 5_000)));
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large")));
    assert_eq!(answer["error"]["message"], "request body holds more than 4096 JSON object keys (this gateway's limit)");
    let (status, answer, _) = run(&host(), post("/v1/chat/completions", &list("1", 40_000)));
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer["error"]["message"],
        "request body holds more than 32768 JSON values and keys (this gateway's limit)"
    );
    let raised = CONFIG.replace(
        r#""settings": {"config_ttl_ms": 1000}"#,
        r#""settings": {"config_ttl_ms": 1000, "max_body_keys": 8192, "max_body_values": 65536}"#,
    );
    assert_ne!(raised, CONFIG);
    let raised_host =
        &MemoryHost::new(ok_origin).with_secret("OPENAI_API_KEY", "sk-x").with_kv(ACTIVE_KEY, raised.as_str());
    for body in [list("{\"a\":1}", 5_000), list("1", 40_000)] {
        let (status, answer, _) = run(raised_host, post("/v1/chat/completions", &body));
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}
/// Where no endpoint is public, a model call without a valid caller is refused before its
/// body is read: malformed JSON, a body past the request bounds, an unknown model are all the
/// same 401 (they were a 400, a 413 and a 404 with suggestions, each after a parse of the
/// whole body into a tree). A valid key gets the body's own answers; where an endpoint is
/// public, an anonymous body is read to find its endpoint.
#[test]
fn without_public_endpoints_an_unauthenticated_body_is_never_read() {
    let private = CONFIG.replace(r#""public": true, "#, "");
    assert!(!private.contains("public"));
    let private_host =
        &MemoryHost::new(ok_origin).with_secret("OPENAI_API_KEY", "sk-x").with_kv(ACTIVE_KEY, private.as_str());
    let tiny_objects = format!(r#"{{"model":"chat","x":[{}]}}"#, vec![r#"{"a":1}"#; 20_000].join(","));
    let bodies = ["{not json", tiny_objects.as_str(), r#"{"model":"chta","messages":[]}"#];
    let key = add_key(private_host, |_| {});
    for body in bodies {
        let (status, answer, _) = run(private_host, post("/v1/chat/completions", body));
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_api_key")));
        let (status, answer, _) = run(private_host, with_key(post("/v1/chat/completions", body), "egw_not-a-key"));
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_api_key")));
    }
    let answers: Vec<(StatusCode, Option<String>)> = bodies
        .iter()
        .map(|body| {
            let (status, answer, _) = run(private_host, with_key(post("/v1/chat/completions", body), &key));
            (status, answer["error"]["code"].as_str().map(String::from))
        })
        .collect();
    assert_eq!(answers[0], (StatusCode::BAD_REQUEST, Some("invalid_json".into())));
    assert_eq!(answers[1].0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answers[2], (StatusCode::NOT_FOUND, Some("model_not_found".into())));
    // A key that may not call the endpoint: still 403 once the body named it.
    let narrow = add_key(private_host, |k| k.endpoints = vec!["embed".into()]);
    let (status, answer, _) =
        run(private_host, with_key(post("/v1/chat/completions", r#"{"model":"chat","messages":[]}"#), &narrow));
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("endpoint_not_allowed")));
    // With a public endpoint in the config the body is read first.
    let (status, answer, _) = run(&host(), post("/v1/chat/completions", "{not json"));
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));
}
