//! The Responses, Gemini and MLflow 3.x dialects through the whole pipeline, on in-memory
//! ports: stored responses and their tenant scoping, keys from Gemini's sources, passthrough.

use super::*;
use crate::gateway::config::ACTIVE_KEY;
use crate::gateway::features::keys::{self, KeyRecord};
use crate::gateway::pipeline::stream::StreamSummary;
use crate::gateway::ports::memory::{block_on, MemoryHost};
use crate::gateway::ports::{Clock, UpstreamError};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

const CONFIG: &str = r#"{"version": "d1", "endpoints": [
  {"name": "chat", "public": true, "endpoint_type": "llm/v1/chat",
   "model": {"provider": "openai", "name": "gpt-4o-mini",
             "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}}},
  {"name": "keyed", "endpoint_type": "llm/v1/chat",
   "model": {"provider": "openai", "name": "gpt-4o-mini",
             "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}}},
  {"name": "native", "public": true, "endpoint_type": "llm/v1/chat", "responses": "passthrough",
   "model": {"provider": "openai", "name": "gpt-4.1",
             "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}}},
  {"name": "emb", "public": true, "endpoint_type": "llm/v1/embeddings",
   "model": {"provider": "openai", "name": "text-embedding-3-small",
             "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}}}
]}"#;

fn json_reply(body: Value) -> std::result::Result<Response<Vec<u8>>, UpstreamError> {
    Ok(Response::builder().header("content-type", "application/json").body(body.to_string().into_bytes()).unwrap())
}

fn sse_reply(events: &str) -> std::result::Result<Response<Vec<u8>>, UpstreamError> {
    Ok(Response::builder().header("content-type", "text/event-stream").body(events.as_bytes().to_vec()).unwrap())
}

/// An OpenAI-speaking origin: chat echoes the last user text (streams when asked), the
/// Responses API answers a fixed response, embeddings one vector per input.
fn origin(request: &Request<Vec<u8>>) -> std::result::Result<Response<Vec<u8>>, UpstreamError> {
    let body: Value = serde_json::from_slice(request.body()).unwrap_or_default();
    match request.uri().path() {
        "/v1/chat/completions" => {
            let last = body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
            let text = format!("echo: {}", last["content"].as_str().unwrap_or_default());
            if body["stream"] == true {
                let chunk = |delta: Value, finish: Value| {
                    format!(
                        "data: {}\n\n",
                        json!({"id": "c1", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                    )
                };
                let usage =
                    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n";
                return sse_reply(
                    &[
                        chunk(json!({"content": text}), Value::Null),
                        chunk(json!({}), json!("stop")),
                        usage.into(),
                        "data: [DONE]\n\n".into(),
                    ]
                    .concat(),
                );
            }
            json_reply(json!({"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}))
        }
        "/v1/responses" => {
            json_reply(json!({"id": "resp_origin1", "object": "response", "status": "completed", "model": "gpt-4.1",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "native"}]}],
            "usage": {"input_tokens": 4, "output_tokens": 1, "total_tokens": 5}}))
        }
        "/v1/embeddings" => json_reply(
            json!({"object": "list", "model": "e", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
        ),
        _ => Ok(Response::builder().status(404).body(b"{}".to_vec()).unwrap()),
    }
}

fn host() -> MemoryHost {
    MemoryHost::new(origin).with_secret("OPENAI_API_KEY", "sk-secret").with_kv(ACTIVE_KEY, CONFIG)
}

/// Stores a key of `tenant` allowed every endpoint; returns the plaintext.
fn add_key(host: &MemoryHost, tenant: &str) -> String {
    let (id, key) = keys::new_key(host);
    let record = KeyRecord {
        id,
        tenant: tenant.into(),
        endpoints: vec!["*".into()],
        created: host.now_ms() / 1000,
        hash: keys::hash_key(&key),
        ..Default::default()
    };
    block_on(keys::store(host, &record)).unwrap();
    key
}

fn request(method: Method, path: &str, body: Value, key: Option<&str>) -> Request<Vec<u8>> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    builder.body(body).unwrap()
}

/// Runs a request to the end, after-response work included (storing a response); returns
/// the status, the body (JSON, or the stream's text) and the log line.
fn call(host: &MemoryHost, request: Request<Vec<u8>>) -> (StatusCode, Value, String) {
    let mut exchange = block_on(Gateway::new().handle(host, request, &ClientInfo::default()));
    let status = exchange.response.status();
    let (body, summary) = match std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new())) {
        ResponseBody::Full(bytes) => (serde_json::from_slice(&bytes).unwrap_or(Value::Null), None),
        ResponseBody::Stream(bytes, mut pump) => {
            let mut out = pump.chunk(&bytes);
            out.extend(pump.end());
            let summary: StreamSummary = pump.summary();
            (Value::String(String::from_utf8(out).unwrap()), Some(summary))
        }
    };
    let line = block_on(exchange.deferred.complete(host, summary));
    (status, body, line)
}

fn sent_body(host: &MemoryHost) -> (String, Value) {
    let sent = host.sent.borrow();
    let last = sent.last().unwrap();
    (last.uri().to_string(), serde_json::from_slice(last.body()).unwrap())
}

#[test]
fn responses_are_created_stored_retrieved_and_continued() {
    let host = host();
    let body = json!({"model": "chat", "instructions": "Be brief.", "input": "hi", "metadata": {"run": "1"}});
    let (status, created, line) = call(&host, request(Method::POST, "/v1/responses", body, None));
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_") && id.len() == 53, "{id}");
    assert_eq!(created["output"][0]["content"][0]["text"], "echo: hi");
    assert_eq!(created["instructions"], "Be brief.");
    assert_eq!(created["metadata"], json!({"run": "1"}));
    assert!(
        line.contains("\"prompt_tokens\":3") && line.contains("\"completion_tokens\":2"),
        "usage is accounted: {line}"
    );
    assert!(host.kv.borrow().contains_key(&format!("resp:public:{id}")));

    let (status, got, _) = call(&host, request(Method::GET, &format!("/v1/responses/{id}"), Value::Null, None));
    assert_eq!((status, &got), (StatusCode::OK, &created));
    // SDKs of public endpoints send a placeholder key: still the public tenant.
    let placeholder = Some("unused-client-key");
    let (status, _, _) = call(&host, request(Method::GET, &format!("/v1/responses/{id}"), Value::Null, placeholder));
    assert_eq!(status, StatusCode::OK);

    let next = json!({"model": "chat", "input": [{"role": "user", "content": "more"}], "previous_response_id": id});
    let (status, second, _) = call(&host, request(Method::POST, "/gateway/openai/v1/responses", next, None));
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["previous_response_id"], id.as_str());
    assert!(second["instructions"].is_null(), "instructions do not carry over");
    let (_, sent) = sent_body(&host);
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "echo: hi"},
            {"role": "user", "content": "more"},
        ])
    );

    let (status, deleted, _) = call(&host, request(Method::DELETE, &format!("/v1/responses/{id}"), Value::Null, None));
    assert_eq!((status, deleted["deleted"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, gone, _) = call(&host, request(Method::GET, &format!("/v1/responses/{id}"), Value::Null, None));
    assert_eq!((status, gone["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("response_not_found")));
}

/// A client chaining `previous_response_id` (or retrieving the response) as soon as it has the
/// answer: the isolate answers from what it stored when the request's accounting closed, before
/// the KV write after the response lands (on Cloudflare that write waits for a timer turn).
#[test]
fn a_stored_response_can_be_continued_before_its_write_lands() {
    let host = host();
    let gateway = Gateway::new();
    let send = |method: Method, path: &str, body: Value| {
        let request = request(method, path, body, None);
        let mut exchange = block_on(gateway.handle(&host, request, &ClientInfo::default()));
        let status = exchange.response.status();
        let ResponseBody::Full(bytes) = std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new()))
        else {
            panic!("a whole answer")
        };
        (status, serde_json::from_slice::<Value>(&bytes).unwrap(), exchange.deferred.close(&host, None))
    };
    let (status, created, first) = send(Method::POST, "/v1/responses", json!({"model": "chat", "input": "hi"}));
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (path, key) = (format!("/v1/responses/{id}"), format!("resp:public:{id}"));
    assert!(!host.kv.borrow().contains_key(&key), "not written yet");

    let next = json!({"model": "chat", "input": "more", "previous_response_id": id});
    let (status, second, _) = send(Method::POST, "/v1/responses", next);
    assert_eq!(status, StatusCode::OK, "{second}");
    let (_, sent) = sent_body(&host);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "echo: hi"}, {"role": "user", "content": "more"}])
    );
    let (status, got, _) = send(Method::GET, &path, Value::Null);
    assert_eq!((status, &got), (StatusCode::OK, &created));
    // Another isolate has only KV, which has it once the write ran.
    assert_eq!(call(&host, request(Method::GET, &path, Value::Null, None)).0, StatusCode::NOT_FOUND);
    block_on(first.complete(&host));
    assert!(host.kv.borrow().contains_key(&key));
    assert_eq!(call(&host, request(Method::GET, &path, Value::Null, None)).0, StatusCode::OK);
    // Deleted: from the memo too, and gone here while KV lags behind the delete (another
    // location's KV can serve the entry for up to a minute).
    let written = host.kv.borrow()[&key].clone();
    assert_eq!(send(Method::DELETE, &path, Value::Null).0, StatusCode::OK);
    host.kv.borrow_mut().insert(key.clone(), written);
    assert_eq!(send(Method::GET, &path, Value::Null).0, StatusCode::NOT_FOUND);
    let next = json!({"model": "chat", "input": "again", "previous_response_id": id});
    let (status, refused, _) = send(Method::POST, "/v1/responses", next);
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("previous_response_not_found"))
    );
    assert_eq!(
        call(&host, request(Method::GET, &path, Value::Null, None)).0,
        StatusCode::OK,
        "another isolate reads KV"
    );
    host.kv.borrow_mut().remove(&key);

    // Deleted before its write ran: the write does not bring it back.
    let (status, created, pending) = send(Method::POST, "/v1/responses", json!({"model": "chat", "input": "brief"}));
    assert_eq!(status, StatusCode::OK, "{created}");
    let path = format!("/v1/responses/{}", created["id"].as_str().unwrap());
    assert_eq!(send(Method::DELETE, &path, Value::Null).0, StatusCode::OK);
    let line: Value = serde_json::from_str(&block_on(pending.complete(&host))).unwrap();
    assert!(line.get("store_error").is_none(), "{line}");
    assert!(!host.kv.borrow().keys().any(|k| k.ends_with(created["id"].as_str().unwrap())));
    assert_eq!(send(Method::GET, &path, Value::Null).0, StatusCode::NOT_FOUND);
}

#[test]
fn stored_responses_never_cross_tenants() {
    let host = host();
    let (a, b) = (add_key(&host, "tenant-a"), add_key(&host, "tenant-b"));
    let body = json!({"model": "keyed", "input": "secret plans"});
    let (status, created, _) = call(&host, request(Method::POST, "/v1/responses", body, Some(&a)));
    assert_eq!(status, StatusCode::OK, "{created}");
    let id = created["id"].as_str().unwrap();
    let get = |key: Option<&str>| call(&host, request(Method::GET, &format!("/v1/responses/{id}"), Value::Null, key));
    assert_eq!(get(Some(&a)).0, StatusCode::OK);
    for key in [Some(b.as_str()), None] {
        let (status, body, _) = get(key);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "response_not_found");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    assert_eq!(get(Some("egw_not_a_key")).0, StatusCode::UNAUTHORIZED);
    let continued = json!({"model": "keyed", "input": "tell me", "previous_response_id": id});
    let (status, body, _) = call(&host, request(Method::POST, "/v1/responses", continued.clone(), Some(&b)));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["error"],
        json!({"message": format!("Previous response with id '{id}' not found."),
        "type": "invalid_request_error", "param": "previous_response_id", "code": "previous_response_not_found"})
    );
    let (status, _, _) = call(&host, request(Method::DELETE, &format!("/v1/responses/{id}"), Value::Null, Some(&b)));
    assert_eq!(status, StatusCode::NOT_FOUND, "nor can another tenant delete it");
    assert_eq!(call(&host, request(Method::POST, "/v1/responses", continued, Some(&a))).0, StatusCode::OK);
}

#[test]
fn store_false_is_respected_and_streams_are_stored_at_their_end() {
    let host = host();
    let body = json!({"model": "chat", "input": "hi", "store": false});
    let (_, created, _) = call(&host, request(Method::POST, "/v1/responses", body, None));
    assert_eq!(created["store"], false);
    assert!(!host.kv.borrow().keys().any(|k| k.starts_with("resp:")));

    let body = json!({"model": "chat", "input": "stream me", "stream": true});
    let (status, stream, line) = call(&host, request(Method::POST, "/v1/responses", body, None));
    assert_eq!(status, StatusCode::OK);
    let text = stream.as_str().unwrap();
    assert!(text.starts_with("event: response.created\n"), "{text}");
    assert!(text.contains("\"delta\":\"echo: stream me\""), "{text}");
    assert!(line.contains("\"prompt_tokens\":3"), "stream usage is accounted: {line}");
    let completed = text.split("\n\n").find(|e| e.starts_with("event: response.completed")).unwrap();
    let completed: Value = serde_json::from_str(completed.split_once("data: ").unwrap().1).unwrap();
    let id = completed["response"]["id"].as_str().unwrap();
    let (status, got, _) = call(&host, request(Method::GET, &format!("/v1/responses/{id}"), Value::Null, None));
    assert_eq!((status, &got), (StatusCode::OK, &completed["response"]));
}

#[test]
fn passthrough_endpoints_send_responses_to_the_origins_own_api() {
    let host = host();
    let body = json!({"model": "native", "instructions": "Be brief.", "input": "hi", "reasoning": {"effort": "low"}});
    let (status, answer, line) = call(&host, request(Method::POST, "/v1/responses", body, None));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["id"], "resp_origin1", "the origin's answer, as it is");
    let (uri, sent) = sent_body(&host);
    assert_eq!(uri, "http://origin.test/v1/responses");
    assert_eq!(sent["model"], "gpt-4.1");
    assert_eq!(sent["instructions"], "Be brief.");
    assert_eq!(sent["input"], json!([{"type": "message", "role": "user", "content": "hi"}]));
    assert_eq!(sent["reasoning"], json!({"effort": "low"}));
    assert!(sent.get("stream_options").is_none());
    assert_eq!(host.sent.borrow().last().unwrap().headers()["authorization"], "Bearer sk-secret");
    assert!(line.contains("\"prompt_tokens\":4") && line.contains("\"completion_tokens\":1"), "{line}");
    assert!(host.kv.borrow().contains_key("resp:public:resp_origin1"));

    // Continued: the id goes to the origin (which holds the conversation) once it is ours.
    let next = json!({"model": "native", "input": "more", "previous_response_id": "resp_origin1"});
    assert_eq!(call(&host, request(Method::POST, "/v1/responses", next, None)).0, StatusCode::OK);
    let (_, sent) = sent_body(&host);
    assert_eq!(sent["previous_response_id"], "resp_origin1");
    let unknown = json!({"model": "native", "input": "x", "previous_response_id": "resp_someone_elses"});
    assert_eq!(call(&host, request(Method::POST, "/v1/responses", unknown, None)).0, StatusCode::NOT_FOUND);
    // A passthrough conversation cannot continue on a translated endpoint.
    let mixed = json!({"model": "chat", "input": "x", "previous_response_id": "resp_origin1"});
    assert_eq!(call(&host, request(Method::POST, "/v1/responses", mixed, None)).0, StatusCode::BAD_REQUEST);
}

#[test]
fn gemini_clients_authenticate_with_their_own_key_sources() {
    let host = host();
    let key = add_key(&host, "tenant-g");
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi gemini"}]}],
        "generationConfig": {"maxOutputTokens": 20}});
    let post = |path: &str, header: Option<&str>| {
        let mut r = request(Method::POST, path, body.clone(), None);
        if let Some(value) = header {
            r.headers_mut().insert("x-goog-api-key", value.parse().unwrap());
        }
        r
    };
    let (status, answer, _) = call(&host, post("/v1beta/models/keyed:generateContent", Some(&key)));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["candidates"][0]["content"]["parts"][0]["text"], "echo: hi gemini");
    assert_eq!(answer["usageMetadata"]["totalTokenCount"], 5);

    let (status, answer, line) = call(&host, post(&format!("/v1beta/models/keyed:generateContent?key={key}"), None));
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(!line.contains(&key), "the key never reaches the log line: {line}");
    let (uri, sent) = sent_body(&host);
    assert!(!uri.contains(&key) && !sent.to_string().contains(&key), "nor the origin");

    let (status, error, _) = call(&host, post("/v1beta/models/keyed:generateContent", None));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(error["error"]["details"][0]["reason"], "missing_api_key");
    let (status, error, _) = call(&host, post("/v1beta/models/keyed:generateContent?key=egw_wrong", None));
    assert_eq!((status, error["error"]["code"].as_i64()), (StatusCode::UNAUTHORIZED, Some(401)));
    // The Gemini key sources are Gemini's only.
    let mut chat = request(Method::POST, "/v1/chat/completions?key=x", json!({"model": "keyed"}), None);
    chat.headers_mut().insert("x-goog-api-key", key.parse().unwrap());
    assert_eq!(call(&host, chat).0, StatusCode::UNAUTHORIZED);

    let (status, error, _) = call(&host, post("/v1beta/models/nope:generateContent", None));
    assert_eq!((status, error["error"]["status"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
    let (status, error, _) = call(&host, post("/v1beta/models/chat:countTokens", None));
    assert_eq!((status, error["error"]["status"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
}

#[test]
fn gemini_streams_as_sse_or_as_a_json_array() {
    let host = host();
    let body = json!({"contents": [{"parts": [{"text": "stream"}]}]});
    let post = |path: &str| request(Method::POST, path, body.clone(), None);
    let mut exchange = block_on(Gateway::new().handle(
        &host,
        post("/gateway/gemini/v1beta/models/chat:streamGenerateContent?alt=sse"),
        &ClientInfo::default(),
    ));
    assert_eq!(exchange.response.headers()["content-type"], "text/event-stream");
    let (_, text, _) = call(&host, post("/v1beta/models/chat:streamGenerateContent?alt=sse"));
    assert!(text.as_str().unwrap().starts_with("data: {\"candidates\""), "{text}");
    let _ = std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new()));

    let exchange = block_on(Gateway::new().handle(
        &host,
        post("/v1beta/models/chat:streamGenerateContent"),
        &ClientInfo::default(),
    ));
    assert_eq!(exchange.response.headers()["content-type"], "application/json");
    let (_, text, _) = call(&host, post("/v1beta/models/chat:streamGenerateContent"));
    let array: Value = serde_json::from_str(text.as_str().unwrap()).unwrap();
    assert_eq!(array[0]["candidates"][0]["content"]["parts"][0]["text"], "echo: stream");
    assert_eq!(array.as_array().unwrap().last().unwrap()["candidates"][0]["finishReason"], "STOP");
}

#[test]
fn mlflow3_gateway_paths_answer_like_mlflow() {
    let host = host();
    let (status, models, _) = call(&host, request(Method::GET, "/gateway/mlflow/v1/models", Value::Null, None));
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    // Without a key, only public endpoints are listed.
    assert_eq!(ids, ["chat", "emb", "native"]);
    assert_eq!(models["data"][0]["owned_by"], "mlflow");

    let chat = json!({"messages": [{"role": "user", "content": "unified"}]});
    let (status, answer, _) = call(&host, request(Method::POST, "/gateway/chat/mlflow/invocations", chat, None));
    assert_eq!((status, answer["choices"][0]["message"]["content"].as_str()), (StatusCode::OK, Some("echo: unified")));
    let (status, answer, _) =
        call(&host, request(Method::POST, "/gateway/emb/mlflow/invocations", json!({"input": "x"}), None));
    assert_eq!((status, answer["data"][0]["embedding"].clone()), (StatusCode::OK, json!([0.5])));
    let (status, error, _) =
        call(&host, request(Method::POST, "/gateway/chat/mlflow/invocations", json!({"prompt": "x"}), None));
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let (status, error, _) =
        call(&host, request(Method::POST, "/gateway/emb/mlflow/invocations", json!({"messages": []}), None));
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("endpoint_type_mismatch")));

    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "via mlflow"}]});
    let (status, answer, _) = call(&host, request(Method::POST, "/gateway/mlflow/v1/chat/completions", body, None));
    assert_eq!(
        (status, answer["choices"][0]["message"]["content"].as_str()),
        (StatusCode::OK, Some("echo: via mlflow"))
    );
    let (uri, sent) = sent_body(&host);
    assert_eq!((uri.as_str(), sent["model"].as_str()), ("http://origin.test/v1/chat/completions", Some("gpt-4o-mini")));
    let messages = json!({"model": "chat", "max_tokens": 9, "messages": [{"role": "user", "content": "claude"}]});
    let (status, answer, _) = call(&host, request(Method::POST, "/gateway/anthropic/v1/messages", messages, None));
    assert_eq!((status, answer["content"][0]["text"].as_str()), (StatusCode::OK, Some("echo: claude")));
    let (status, error, _) =
        call(&host, request(Method::POST, "/gateway/anthropic/v1/messages", json!({"model": "chat"}), None));
    assert_eq!((status, error["type"].as_str()), (StatusCode::BAD_REQUEST, Some("error")), "Anthropic's error shape");
}

#[test]
fn errors_before_a_dialect_reads_take_its_shape() {
    let host = host();
    let bad = Request::builder().method(Method::POST).uri("/v1/responses").body(b"{nope".to_vec()).unwrap();
    let (status, body, _) = call(&host, bad);
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));
    assert!(body["error"].as_object().unwrap().contains_key("param"), "Responses errors carry `param`");
    let bad = Request::builder()
        .method(Method::POST)
        .uri("/v1beta/models/chat:generateContent")
        .body(b"[]".to_vec())
        .unwrap();
    let (status, body, _) = call(&host, bad);
    assert_eq!((status, body["error"]["status"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")));
    let (status, body, _) = call(&host, request(Method::PUT, "/v1/responses/resp_1", Value::Null, None));
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
}
