//! Observability through the whole pipeline: trace context forwarded to the origin, the span
//! and metrics exported after the response, the tallies behind `/admin/metrics`, the console.

use super::*;
use crate::gateway::config::ACTIVE_KEY;
use crate::gateway::ports::memory::{block_on, MemoryHost};
use crate::gateway::ports::UpstreamError;
use http::{Method, Request, Response, StatusCode};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const ADMIN: &str = "admin-token-observe-0123456789";

fn config(telemetry: bool) -> String {
    let telemetry = if telemetry {
        r#""telemetry": {"otlp_endpoint": "http://collector.test:4318", "headers": {"authorization": "$OTLP_AUTH"}},"#
    } else {
        ""
    };
    format!(
        r#"{{"version": "o1", {telemetry} "endpoints": [
  {{"name": "chat", "public": true, "endpoint_type": "llm/v1/chat",
   "model": {{"provider": "openai", "name": "gpt-4o-mini",
             "config": {{"openai_api_key": "$OPENAI_API_KEY", "openai_api_base": "http://origin.test/v1"}}}}}}],
  "prices": {{"openai/gpt-4o-mini": {{"input_per_1m": 0.15, "output_per_1m": 0.6}}}}}}"#
    )
}

fn origin(request: &Request<Vec<u8>>) -> std::result::Result<Response<Vec<u8>>, UpstreamError> {
    let body = if request.uri().path().ends_with("/chat/completions") {
        br#"{"id":"c1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#
            .to_vec()
    } else {
        Vec::new() // the collector
    };
    Ok(Response::builder().header("content-type", "application/json").body(body).unwrap())
}

fn host(telemetry: bool) -> MemoryHost {
    MemoryHost::new(origin)
        .with_secret("OPENAI_API_KEY", "sk-provider-secret")
        .with_secret("OTLP_AUTH", "Bearer otlp-secret")
        .with_secret("GATEWAY_ADMIN_TOKEN", ADMIN)
        .with_kv(ACTIVE_KEY, config(telemetry))
}

fn chat(traceparent: Option<&str>) -> Request<Vec<u8>> {
    let mut builder = Request::builder().method(Method::POST).uri("/v1/chat/completions");
    if let Some(tp) = traceparent {
        builder = builder.header("traceparent", tp).header("tracestate", "vendor=1");
    }
    builder.body(br#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#.to_vec()).unwrap()
}

fn admin_get(gateway: &Gateway, host: &MemoryHost, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut builder = Request::builder().method(Method::GET).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let exchange = block_on(gateway.handle(host, builder.body(Vec::new()).unwrap(), &ClientInfo::default()));
    let (parts, body) = exchange.response.into_parts();
    let ResponseBody::Full(bytes) = body else { panic!("a full body") };
    (parts.status, parts.headers, String::from_utf8(bytes).unwrap())
}

#[test]
fn traces_continue_to_the_origin_and_spans_go_out_after_the_response() {
    let host = host(true);
    let gateway = Gateway::new();
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let exchange = block_on(gateway.handle(&host, chat(Some(&tp)), &ClientInfo::default()));
    assert_eq!(exchange.response.status(), StatusCode::OK);
    {
        let sent = host.sent.borrow();
        assert_eq!(sent.len(), 1, "nothing but the origin before the response");
        let forwarded = sent[0].headers()["traceparent"].to_str().unwrap();
        assert!(forwarded.starts_with(&format!("00-{CLIENT_TRACE}-")) && forwarded.ends_with("-01"), "{forwarded}");
        assert!(!forwarded.contains(CLIENT_SPAN), "the gateway's span is the origin's parent");
        assert_eq!(sent[0].headers()["tracestate"], "vendor=1");
    }
    let line = block_on(exchange.deferred.complete(&host, None));
    assert!(!line.contains("telemetry_error"), "{line}");
    let sent = host.sent.borrow();
    let paths: Vec<&str> = sent.iter().map(|r| r.uri().path()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/traces", "/v1/metrics"]);
    assert_eq!(sent[1].headers()["authorization"], "Bearer otlp-secret");
    let body = sent[1].body();
    let raw_trace: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&CLIENT_TRACE[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert!(body.windows(16).any(|w| w == raw_trace.as_slice()), "the span is in the client's trace");
    assert!(body.windows(16).any(|w| w == b"chat gpt-4o-mini"));
    for r in sent.iter() {
        let text = String::from_utf8_lossy(r.body());
        assert!(!text.contains("sk-provider-secret") && !text.contains("otlp-secret"));
    }
}

#[test]
fn without_telemetry_the_client_trace_headers_pass_through_unchanged() {
    let host = host(false);
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let exchange = block_on(Gateway::new().handle(&host, chat(Some(&tp)), &ClientInfo::default()));
    block_on(exchange.deferred.complete(&host, None));
    {
        let sent = host.sent.borrow();
        assert_eq!(sent.len(), 1, "no export without a telemetry section");
        assert_eq!(sent[0].headers()["traceparent"], tp.as_str());
    }
    let exchange = block_on(Gateway::new().handle(&host, chat(None), &ClientInfo::default()));
    block_on(exchange.deferred.complete(&host, None));
    assert!(host.sent.borrow()[1].headers().get("traceparent").is_none());
}

#[test]
fn admin_metrics_count_what_the_pipeline_answered() {
    let host = host(false);
    let gateway = Gateway::new();
    for request in [chat(None), chat(None)] {
        let exchange = block_on(gateway.handle(&host, request, &ClientInfo::default()));
        block_on(exchange.deferred.complete(&host, None));
    }
    let unknown = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .body(br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#.to_vec())
        .unwrap();
    let exchange = block_on(gateway.handle(&host, unknown, &ClientInfo::default()));
    block_on(exchange.deferred.complete(&host, None));

    let (status, _, _) = admin_get(&gateway, &host, "/admin/metrics", None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, text) = admin_get(&gateway, &host, "/admin/metrics", Some(ADMIN));
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert_eq!(headers["cache-control"], "no-store");
    for expected in [
        "gateway_requests_total{endpoint=\"chat\",tenant=\"public\",status=\"200\"} 2",
        "gateway_tokens_total{endpoint=\"chat\",tenant=\"public\",type=\"input\"} 10",
        "gateway_cost_usd_total{endpoint=\"chat\",tenant=\"public\"} 0.0000051",
        "gateway_errors_total{endpoint=\"\",tenant=\"\",status=\"404\",code=\"model_not_found\"} 1",
    ] {
        assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
    }
    let (status, _, json) = admin_get(&gateway, &host, "/admin/usage/series", Some(ADMIN));
    assert_eq!(status, StatusCode::OK);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let series = value["days"][0]["series"].as_array().unwrap();
    let chat = series.iter().find(|s| s["endpoint"] == "chat").unwrap();
    assert_eq!((chat["requests"].as_u64(), chat["prompt_tokens"].as_u64()), (Some(2), Some(10)));
}

#[test]
fn the_console_is_served_without_the_token_with_a_strict_policy() {
    let host = host(false);
    let gateway = Gateway::new();
    let (status, headers, html) = admin_get(&gateway, &host, "/admin/ui", None);
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(html.contains("<script src=\"/admin/ui/app.js\">"));
    let (status, headers, _) = admin_get(&gateway, &host, "/admin/ui/app.js", None);
    assert_eq!((status, headers["content-type"].to_str().unwrap()), (StatusCode::OK, "text/javascript; charset=utf-8"));
    assert_eq!(admin_get(&gateway, &host, "/admin/ui/secret.json", None).0, StatusCode::UNAUTHORIZED);
}

#[test]
fn the_public_tenant_label_matches_the_cache_scope_tenant() {
    assert_eq!(account::PUBLIC_TENANT, context::PUBLIC_TENANT);
}
