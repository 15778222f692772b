//! The core pipeline compiled to each wasm target and run there (DESIGN.md §6): under node via
//! wasm-bindgen-test on wasm32-unknown-unknown, under wasmtime on wasm32-wasip2, and natively.
//! Catches what only breaks on wasm: time, randomness, integer widths, allocation.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use edge_gateway::gateway::config::ACTIVE_KEY;
use edge_gateway::gateway::pipeline::ClientInfo;
use edge_gateway::gateway::ports::memory::{block_on, MemoryHost};
use edge_gateway::gateway::{Gateway, ResponseBody};
use http::{Request, Response, StatusCode};
use serde_json::Value;

const CONFIG: &str = r#"{"endpoints": [{"name": "chat", "public": true, "endpoint_type": "llm/v1/chat",
  "model": {"provider": "openai", "name": "gpt-4o-mini",
            "config": {"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}}}]}"#;

fn host() -> MemoryHost {
    MemoryHost::new(|request| {
        let sent: Value = serde_json::from_slice(request.body()).unwrap();
        let body = serde_json::json!({"object": "chat.completion", "model": sent["model"], "choices": []});
        Ok(Response::new(serde_json::to_vec(&body).unwrap()))
    })
    .with_secret("OPENAI_API_KEY", "sk-wasm")
    .with_kv(ACTIVE_KEY, CONFIG)
}

fn body_json(body: &ResponseBody<Vec<u8>>) -> Value {
    match body {
        ResponseBody::Full(bytes) => serde_json::from_slice(bytes).unwrap(),
        ResponseBody::Stream(..) => panic!("no streams in these cases"),
    }
}

#[test]
fn chat_is_translated_and_forwarded() {
    let host = host();
    let request = Request::post("/v1/chat/completions")
        .body(br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#.to_vec())
        .unwrap();
    let exchange = block_on(Gateway::new().handle(&host, request, &ClientInfo::default()));
    assert_eq!(exchange.response.status(), StatusCode::OK);
    assert_eq!(body_json(exchange.response.body())["model"], "gpt-4o-mini");
    assert_eq!(host.sent.borrow()[0].headers()["authorization"], "Bearer sk-wasm");
}

#[test]
fn bad_json_and_missing_config_are_clean_errors() {
    let request = Request::post("/v1/chat/completions").body(b"{".to_vec()).unwrap();
    let exchange = block_on(Gateway::new().handle(&host(), request, &ClientInfo::default()));
    assert_eq!(exchange.response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(exchange.response.body())["error"]["code"], "invalid_json");

    let empty = MemoryHost::new(|_| unreachable!("no config, no origin call"));
    let request = Request::post("/v1/chat/completions").body(b"{}".to_vec()).unwrap();
    let exchange = block_on(Gateway::new().handle(&empty, request, &ClientInfo::default()));
    assert_eq!(exchange.response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// JWT verification (RS256 with `rsa`, ES256 with `p256`) runs on the wasm targets too: a
/// trusted issuer's JWKS is fetched through the origin port, both tokens pass, a tampered
/// one is refused with its code.
#[test]
fn jwt_callers_are_verified() {
    use edge_gateway::gateway::features::identity::testing;
    let mut config: Value = serde_json::from_str(CONFIG).unwrap();
    config["endpoints"][0]["public"] = Value::Bool(false);
    config["auth"] = serde_json::json!({"jwt": {"issuers": [{"issuer": testing::ISSUER, "audiences": ["wasm"],
        "jwks_url": "http://idp.test/jwks.json", "policy": {"tenant": "wasm"}}]}});
    let host = MemoryHost::new(|request| {
        if request.uri().path() == "/jwks.json" {
            return Ok(Response::new(testing::jwks().to_string().into_bytes()));
        }
        Ok(Response::new(br#"{"object": "chat.completion", "choices": []}"#.to_vec()))
    })
    .with_secret("OPENAI_API_KEY", "sk-wasm")
    .with_kv(ACTIVE_KEY, config.to_string());
    let claims = testing::claims_at(host.now_ms.get(), "wasm");
    let rs256 = testing::sign_rs256(&claims, Some(testing::RSA_KID));
    let es256 = testing::sign_es256(&claims, Some(testing::EC_KID));
    let tampered = format!("{}.{}", &rs256[..rs256.rfind('.').unwrap()], &es256[es256.rfind('.').unwrap() + 1..]);
    let gateway = Gateway::new();
    for (token, status, code) in
        [(&rs256, 200, None), (&es256, 200, None), (&tampered, 401, Some("token_bad_signature"))]
    {
        let request = Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {token}"))
            .body(br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#.to_vec())
            .unwrap();
        let exchange = block_on(gateway.handle(&host, request, &ClientInfo::default()));
        assert_eq!(exchange.response.status().as_u16(), status);
        if let Some(code) = code {
            assert_eq!(body_json(exchange.response.body())["error"]["code"], code);
        } else {
            assert!(exchange.deferred.log.key_id.as_deref().is_some_and(|id| id.starts_with("j_")));
        }
    }
}
