//! Each phase on its own, with in-memory ports: what it reads, what it decides, what it leaves
//! in the request context for the phases after it.

use std::cell::Cell;
use std::rc::Rc;

use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::gateway::config::Config;
use crate::gateway::dialect::{ClientRequest, Dialect};
use crate::gateway::error::ErrorCode;
use crate::gateway::features::keys::{self, KeyRecord};
use crate::gateway::pipeline::account::Pending;
use crate::gateway::pipeline::context::{ClientInfo, Geo, IsolateState, ModelCall, RequestContext};
use crate::gateway::pipeline::log::LogRecord;
use crate::gateway::pipeline::phases;
use crate::gateway::pipeline::respond::ResponseBody;
use crate::gateway::ports::memory::{block_on, MemoryHost};
use crate::gateway::ports::Kv;
use crate::gateway::types::Operation;

fn config(extra: Value) -> Rc<Config> {
    config_with_regions(extra, json!({"eu": {"continents": ["EU"]}, "us": {"continents": ["NA"]}}))
}

fn config_with_regions(extra: Value, regions: Value) -> Rc<Config> {
    let mut chat = json!({"name": "chat", "endpoint_type": "llm/v1/chat",
        "model": {"provider": "openai", "name": "gpt-4o-mini",
                  "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}},
        "parameters": {"temperature": 0.5}, "limits": {"max_tokens": 100}});
    if let (Some(chat), Value::Object(extra)) = (chat.as_object_mut(), extra) {
        chat.extend(extra);
    }
    let value = json!({"endpoints": [chat], "regions": regions});
    Rc::new(Config::from_value(value).unwrap())
}

fn ctx<'a>(state: &'a IsolateState, client: &'a ClientInfo) -> RequestContext<'a> {
    RequestContext {
        state,
        client,
        dialect: Dialect::OpenAi(Operation::Chat),
        log: LogRecord::default(),
        pending: Pending::default(),
        observed: Default::default(),
        repeat_seed: Default::default(),
    }
}

fn request(body: Value) -> ClientRequest {
    let Value::Object(mut body) = body else { unreachable!("tests pass objects") };
    body.remove("model");
    ClientRequest { name: "chat".into(), body, credential: None, verbatim: None }
}

fn call(config: Rc<Config>, body: Value) -> ModelCall {
    let state = IsolateState::default();
    let client = ClientInfo::default();
    phases::resolve(&mut ctx(&state, &client), config, HeaderMap::new(), request(body)).unwrap()
}

fn host() -> MemoryHost {
    MemoryHost::new(|_| {
        Ok(Response::builder()
            .header("content-type", "application/json")
            .body(br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#.to_vec())
            .unwrap())
    })
    .with_secret("OPENAI_API_KEY", "sk-test")
}

#[test]
fn resolve_names_the_endpoint_and_refuses_unknown_and_mismatched_names() {
    let state = IsolateState::default();
    let client = ClientInfo::default();
    let mut cx = ctx(&state, &client);
    let c = phases::resolve(&mut cx, config(json!({})), HeaderMap::new(), request(json!({"messages": []}))).unwrap();
    assert_eq!((c.endpoint.name.as_str(), c.op), ("chat", Operation::Chat));
    assert_eq!(cx.log.provider, Some("openai"));
    let unknown = ClientRequest { name: "chta".into(), body: Map::new(), credential: None, verbatim: None };
    let e = phases::resolve(&mut cx, config(json!({})), HeaderMap::new(), unknown).err().unwrap();
    assert_eq!(e.code, ErrorCode::ModelNotFound);
    cx.dialect = Dialect::OpenAi(Operation::Embeddings);
    let e = phases::resolve(&mut cx, config(json!({})), HeaderMap::new(), request(json!({}))).err().unwrap();
    assert_eq!(e.code, ErrorCode::EndpointTypeMismatch);
}

#[test]
fn authenticate_then_admit_need_a_key_unless_public_and_record_who_called() {
    let host = host();
    let state = IsolateState::default();
    let client = ClientInfo::default();
    let mut cx = ctx(&state, &client);
    let mut c = call(config(json!({})), json!({"messages": []}));
    let e = block_on(phases::authenticate(&host, &mut cx, &mut c, None)).unwrap_err();
    assert_eq!((e.status, e.code), (StatusCode::UNAUTHORIZED, ErrorCode::MissingApiKey));

    // A key made before ids were in keys, stored as such keys were.
    let key = format!("egw_{}", "A".repeat(43));
    let hash = keys::hash_key(&key);
    let record = KeyRecord {
        id: "k_1".into(),
        tenant: "acme".into(),
        endpoints: vec!["*".into()],
        hash: hash.clone(),
        ..KeyRecord::default()
    };
    block_on(host.put(&keys::hash_entry(&hash), &serde_json::to_vec(&record).unwrap(), None)).unwrap();
    block_on(host.put(&keys::id_entry("k_1"), hash.as_bytes(), None)).unwrap();
    c.headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
    block_on(phases::authenticate(&host, &mut cx, &mut c, None)).unwrap();
    block_on(phases::admit(&host, &mut cx, &mut c)).unwrap();
    assert_eq!(c.tenant(), "acme");
    assert_eq!(cx.log.key_id.as_deref(), Some("k_1"));
    assert!(cx.pending.accounting.is_some(), "an admitted call is accounted after the response");
}

#[test]
fn prepare_applies_defaults_and_ceilings_and_reads_the_stream_flag() {
    let state = IsolateState::default();
    let client = ClientInfo::default();
    let mut cx = ctx(&state, &client);
    let mut c = call(
        config(json!({})),
        json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5000, "stream": true}),
    );
    phases::prepare(&mut cx, &mut c).unwrap();
    assert_eq!(c.body["temperature"], 0.5);
    assert_eq!(c.body["max_tokens"], 100);
    assert!(c.stream && cx.log.stream);
}

#[test]
fn cache_lookup_misses_then_hits_after_the_fill() {
    let host = host();
    let state = IsolateState::default();
    let client = ClientInfo::default();
    let mut cx = ctx(&state, &client);
    let mut c = call(
        config(json!({"public": true})),
        json!({"messages": [{"role": "user", "content": "x"}], "temperature": 0}),
    );
    let miss = block_on(phases::cache_lookup::<_, ()>(&host, &mut cx, &mut c)).unwrap();
    assert!(miss.is_none());
    assert_eq!(cx.log.cache, Some("MISS"));
    let key = c.cache_key.clone().expect("a deterministic request is filled after the answer").name;
    assert!(key.starts_with("cache:public:chat:"), "{key}");

    let mut fresh = ctx(&state, &client);
    let upstream = block_on(phases::forward(&host, &mut fresh, &mut c, &[])).err();
    assert_eq!(upstream.map(|e| e.code), Some(ErrorCode::NoOrigin), "no origins: nothing sent");

    let entry = crate::gateway::features::cache::Entry {
        created_ms: host.now_ms.get(),
        ttl_secs: 300,
        endpoint: "chat".into(),
        op: Operation::Chat,
        body: br#"{"id":"cached","object":"chat.completion","choices":[]}"#.to_vec(),
        usage: None,
    };
    block_on(host.put(&key, &entry.encode(), None)).unwrap();
    let mut again = ctx(&state, &client);
    let mut c2 = call(
        config(json!({"public": true})),
        json!({"messages": [{"role": "user", "content": "x"}], "temperature": 0}),
    );
    let hit = block_on(phases::cache_lookup::<_, ()>(&host, &mut again, &mut c2)).unwrap().expect("a hit");
    assert_eq!(again.log.cache, Some("HIT"));
    let ResponseBody::Full(body) = hit.into_body() else { panic!("a cached answer is buffered") };
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["id"], "cached");
}

#[test]
fn choose_origins_prefers_the_client_region() {
    let cfg = config(
        json!({"origins": [{"url": "http://us.test/v1", "region": "us"}, {"url": "http://eu.test/v1", "region": "eu"}]}),
    );
    let state = IsolateState::default();
    let client = ClientInfo::with_geo(Geo { continent: Some("EU".into()), country: None });
    let mut cx = ctx(&state, &client);
    let mut c = call(cfg, json!({"messages": []}));
    let endpoint = c.endpoint.clone();
    let origins = phases::choose_origins(&mut cx, &mut c, &endpoint).unwrap();
    let urls: Vec<&str> = origins.iter().map(|o| o.url.as_str()).collect();
    assert_eq!(urls, ["http://eu.test/v1", "http://us.test/v1"]);
    assert_eq!(cx.log.region.as_deref(), Some("eu"));
}

#[test]
fn geo_data_is_read_once_and_only_when_routing_needs_it() {
    let reads = Rc::new(Cell::new(0));
    let counted = |reads: &Rc<Cell<u32>>| {
        let reads = Rc::clone(reads);
        ClientInfo::with_lookup(move || {
            reads.set(reads.get() + 1);
            Geo { country: None, continent: Some("EU".into()) }
        })
    };
    let origins = json!({"origins": [{"url": "http://us.test/v1", "region": "us"}, {"url": "http://eu.test/v1", "region": "eu"}]});
    let state = IsolateState::default();
    let route = |client: &ClientInfo, cfg: Rc<Config>| {
        let mut cx = ctx(&state, client);
        let mut c = call(cfg, json!({"messages": []}));
        let endpoint = c.endpoint.clone();
        phases::choose_origins(&mut cx, &mut c, &endpoint).unwrap();
        phases::choose_origins(&mut cx, &mut c, &endpoint).unwrap();
        cx.log.region
    };
    // Regions mapped to continents: read once, however often routing asks.
    assert_eq!((route(&counted(&reads), config(origins.clone())), reads.get()), (Some("eu".into()), 1));
    // A region fixed by the deployment: never read.
    let mut fixed = counted(&reads);
    fixed.region = Some("us".into());
    assert_eq!((route(&fixed, config(origins.clone())), reads.get()), (Some("us".into()), 1));
    // Regions that name no location: never read (the config's default region, none here).
    let unmapped = config_with_regions(origins, json!({"eu": {}, "us": {}}));
    assert_eq!((route(&counted(&reads), unmapped), reads.get()), (None, 1));
}

#[test]
fn forward_then_respond_translate_the_answer_and_record_usage() {
    let host = host();
    let state = IsolateState::default();
    let client = ClientInfo::default();
    let mut cx = ctx(&state, &client);
    let mut c = call(config(json!({"public": true})), json!({"messages": [{"role": "user", "content": "x"}]}));
    let endpoint = c.endpoint.clone();
    let origins = phases::choose_origins(&mut cx, &mut c, &endpoint).unwrap();
    let upstream = block_on(phases::forward(&host, &mut cx, &mut c, &origins)).unwrap();
    assert_eq!(cx.log.origin.as_deref(), Some("http://origin.test"));
    let response = block_on(phases::respond(&host, &mut cx, &c, upstream)).unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!((cx.log.prompt_tokens, cx.log.completion_tokens), (Some(3), Some(1)));
    let sent: Value = serde_json::from_slice(host.sent.borrow()[0].body()).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
}
