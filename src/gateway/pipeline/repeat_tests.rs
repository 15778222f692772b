//! Repeats (`pipeline::repeat`): a caller's byte-for-byte repeat of a request just answered
//! from the isolate's memory is answered as that hit was, without its body being read again —
//! and is still authorized, admitted, logged and accounted like any hit.

use super::tests::add_key;
use super::*;
use crate::gateway::config::ACTIVE_KEY;
use crate::gateway::features::keys;
use crate::gateway::ports::memory::{block_on, MemoryHost};
use crate::gateway::ports::Clock;
use http::{Method, Request, Response};
use serde_json::{json, Value};

const CONFIG: &str = r#"{"version": "r1", "endpoints": [
  {"name": "chat", "endpoint_type": "llm/v1/chat",
   "model": {"provider": "openai", "name": "gpt-4o-mini",
             "config": {"openai_api_key": "$K", "openai_api_base": "http://origin.test/v1"}}},
  {"name": "templated", "endpoint_type": "llm/v1/chat", "template": "brief",
   "model": {"provider": "openai", "name": "gpt-4o-mini",
             "config": {"openai_api_key": "$K", "openai_api_base": "http://origin.test/v1"}}},
  {"name": "guarded", "endpoint_type": "llm/v1/chat",
   "guardrails": {"redact": ["email"]},
   "model": {"provider": "openai", "name": "gpt-4o-mini",
             "config": {"openai_api_key": "$K", "openai_api_base": "http://origin.test/v1"}}}],
  "templates": {"brief": {"default": "1", "versions": {"1": {"system": "Be brief."}}}},
  "prices": {"*": {"input_per_1m": 1, "output_per_1m": 2}}}"#;

fn host() -> MemoryHost {
    MemoryHost::new(|_| {
        let body = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}});
        Ok(Response::builder().header("content-type", "application/json").body(body.to_string().into_bytes()).unwrap())
    })
    .with_secret("K", "k")
    .with_kv(ACTIVE_KEY, CONFIG)
}

fn request(path: &str, key: &str, body: &str) -> Request<Vec<u8>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .body(body.as_bytes().to_vec())
        .unwrap()
}

/// What a client and the operator see of one exchange: status, headers (but the request id),
/// body, and the log line (but what differs per request: id, time, latency).
fn seen(host: &MemoryHost, gateway: &Gateway, request: Request<Vec<u8>>) -> (u16, Vec<String>, Vec<u8>, Value) {
    let mut exchange = block_on(gateway.handle(host, request, &ClientInfo::default()));
    let headers = exchange
        .response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "x-request-id")
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
        .collect();
    let body = match std::mem::replace(exchange.response.body_mut(), ResponseBody::Full(Vec::new())) {
        ResponseBody::Full(bytes) => bytes,
        ResponseBody::Stream(bytes, pump) => pump.run(&bytes),
    };
    let mut line: Value = serde_json::from_str(&block_on(exchange.deferred.complete(host, None))).unwrap();
    for field in ["request_id", "ts", "latency_ms"] {
        line.as_object_mut().unwrap().remove(field);
    }
    (exchange.response.status().as_u16(), headers, body, line)
}

/// Whether `gateway` would answer `request` as a repeat now.
fn is_repeat(host: &MemoryHost, gateway: &Gateway, request: &Request<Vec<u8>>) -> bool {
    let config = gateway.config.borrow().as_ref().expect("a config in memo").config.clone();
    let Some(Ok(Some(caller))) = auth::presented(request.headers(), None)
        .map(|key| block_on(auth::caller(host, &gateway.state.auth, Some(key), &config.auth.jwt, false)))
    else {
        return false;
    };
    let incoming = repeat::Incoming {
        key: &caller.record,
        method: request.method(),
        path_and_query: request.uri().path_and_query().unwrap().as_str(),
        config: &config,
    };
    let found =
        gateway.state.repeats.find(&incoming, request.body(), request.headers(), &gateway.state.recent, host.now_ms());
    found.is_some()
}

const CHAT: &str = r#"{"model":"chat","temperature":0,"messages":[{"role":"user","content":"again"}]}"#;

/// In each client API, streamed or not: the third identical request (a repeat of the second,
/// the first hit) gets the very answer, headers and log line the second got; the origin was
/// called once.
#[test]
fn a_repeat_is_answered_and_logged_as_its_hit_was() {
    let cases = [
        ("/v1/chat/completions", CHAT.to_string()),
        ("/v1/chat/completions", CHAT.replace(r#""temperature":0"#, r#""temperature":0,"stream":true"#)),
        (
            "/v1/messages",
            r#"{"model":"chat","max_tokens":20,"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#.into(),
        ),
        (
            "/v1beta/models/chat:generateContent",
            r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"temperature":0}}"#.into(),
        ),
        ("/gateway/chat/invocations", r#"{"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#.into()),
        ("/v1/chat/completions", CHAT.replace(r#""chat""#, r#""templated""#)),
        ("/v1/chat/completions", CHAT.replace(r#""chat""#, r#""guarded""#)),
    ];
    for (path, body) in cases {
        let host = host();
        let key = add_key(&host, |k| k.rpm = Some(100));
        let gateway = Gateway::new();
        let first = seen(&host, &gateway, request(path, &key, &body));
        assert_eq!((first.0, first.3["cache"].as_str()), (200, Some("MISS")), "{path} {body}: {first:?}");
        assert!(!is_repeat(&host, &gateway, &request(path, &key, &body)), "{path}: a miss is not kept");
        let hit = seen(&host, &gateway, request(path, &key, &body));
        assert_eq!(hit.3["cache_level"], "memory", "{path} {body}: {hit:?}");
        assert!(is_repeat(&host, &gateway, &request(path, &key, &body)), "{path} {body}: the hit is kept");
        let repeat = seen(&host, &gateway, request(path, &key, &body));
        // The rate headers count down: one request more was admitted.
        let remaining = |seen: &(u16, Vec<String>, Vec<u8>, Value)| {
            seen.1.iter().find(|h| h.starts_with("x-ratelimit-remaining-requests")).cloned()
        };
        assert_eq!(remaining(&hit).as_deref(), Some("x-ratelimit-remaining-requests: 98"), "{path}: {hit:?}");
        assert_eq!(remaining(&repeat).as_deref(), Some("x-ratelimit-remaining-requests: 97"), "{path}: {repeat:?}");
        // The rest is the same but the window's reset, a second later.
        let without_remaining = |mut seen: (u16, Vec<String>, Vec<u8>, Value)| {
            seen.1.retain(|h| !h.starts_with("x-ratelimit-remaining-") && !h.starts_with("x-ratelimit-reset-"));
            seen
        };
        assert_eq!(without_remaining(repeat), without_remaining(hit), "{path} {body}");
        assert_eq!(host.sent.borrow().len(), 1, "{path}: one origin call");
    }
}

/// Only the same caller, method, path, query, body bytes and config make a repeat, and only
/// while the client lets the cache answer; a request the guardrails changed is never kept.
#[test]
fn only_the_same_bytes_from_the_same_caller_are_a_repeat() {
    let host = host();
    let key = add_key(&host, |_| {});
    let other = add_key(&host, |_| {});
    let stranger = add_key(&host, |k| k.tenant = "globex".into());
    let gateway = Gateway::new();
    let path = "/v1/chat/completions";
    for _ in 0..2 {
        assert_eq!(seen(&host, &gateway, request(path, &key, CHAT)).0, 200);
    }
    assert!(is_repeat(&host, &gateway, &request(path, &key, CHAT)));
    assert!(!is_repeat(&host, &gateway, &request(path, &other, CHAT)), "another key of the tenant");
    assert!(!is_repeat(&host, &gateway, &request(path, &stranger, CHAT)), "another tenant");
    assert!(!is_repeat(&host, &gateway, &request(path, &key, &CHAT.replace(':', ": "))), "other bytes, same JSON");
    assert!(!is_repeat(&host, &gateway, &request("/v1/chat/completions?x=1", &key, CHAT)), "another query");
    let mut no_cache = request(path, &key, CHAT);
    no_cache.headers_mut().insert("cache-control", "no-cache".parse().unwrap());
    assert!(!is_repeat(&host, &gateway, &no_cache), "the client asked past the cache");
    assert_eq!(seen(&host, &gateway, no_cache).3["cache"], "BYPASS");

    // A new config (the memo read again, changed): what was found under the old one is gone.
    host.kv.borrow_mut().insert(ACTIVE_KEY.into(), CONFIG.replace(r#""r1""#, r#""r2""#).into_bytes());
    host.advance(5_001);
    let (status, _, _, line) = seen(&host, &gateway, request(path, &key, CHAT));
    assert_eq!((status, line["cache_level"].as_str()), (200, Some("memory")));
    assert!(is_repeat(&host, &gateway, &request(path, &key, CHAT)), "kept anew under the new config");
    assert_eq!(gateway.state.repeats.count(), 1, "and only that");

    let redacted = CHAT.replace(r#""chat""#, r#""guarded""#).replace("again", "mail me at a@b.example");
    assert_eq!(seen(&host, &gateway, request(path, &key, &redacted)).3["cache"], "MISS");
    let (_, _, _, line) = seen(&host, &gateway, request(path, &key, &redacted));
    assert_eq!((line["cache_level"].as_str(), line["guard"]["redacted"]["email"].as_u64()), (Some("memory"), Some(1)));
    assert!(!is_repeat(&host, &gateway, &request(path, &key, &redacted)), "a redacted request is not kept");
}

/// A repeat is still a request of its caller: a disabled key is refused once the isolate's
/// memo of it lapses, and the rate limit counts repeats.
#[test]
fn a_repeat_is_authorized_and_admitted_like_any_request() {
    let host = host();
    let key = add_key(&host, |k| k.rpm = Some(3));
    let gateway = Gateway::new();
    let path = "/v1/chat/completions";
    let statuses: Vec<u16> = (0..4).map(|_| seen(&host, &gateway, request(path, &key, CHAT)).0).collect();
    assert_eq!(statuses, [200, 200, 200, 429], "the third is a repeat, the fourth over the limit");

    let disabled = add_key(&host, |_| {});
    for _ in 0..3 {
        assert_eq!(seen(&host, &gateway, request(path, &disabled, CHAT)).0, 200);
    }
    let mut record = block_on(keys::by_id(&host, &keys::named_id(&disabled).unwrap())).unwrap().unwrap();
    record.disabled = true;
    block_on(keys::store(&host, &record)).unwrap();
    host.advance(auth::MEMO_TTL_MS + 1);
    let (status, _, body, _) = seen(&host, &gateway, request(path, &disabled, CHAT));
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
}
