//! Pass-through worker: request in, same method/path/body to ORIGIN_URL, origin's response
//! out. Crosses the JS/wasm boundary the way the gateway's adapter does (body read chunk by
//! chunk into wasm, outbound `fetch` built from Rust), so the gateway's extra cost over this
//! worker is what the gateway adds: the pipeline, reading and re-sending the origin's
//! answer, KV, accounting and logging.

use futures_util::StreamExt;
use worker::{event, js_sys, Context, Env, Fetch, Headers, HttpRequest, Request, RequestInit, Response};

#[event(fetch)]
async fn fetch(request: HttpRequest, env: Env, _ctx: Context) -> worker::Result<Response> {
    let origin = env.var("ORIGIN_URL").map(|v| v.to_string()).unwrap_or_else(|_| "http://127.0.0.1:8091".into());
    let (parts, mut body) = request.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
    }

    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // The headers an OpenAI-style origin needs: the body's type and the caller's credential.
    let headers = Headers::new();
    for name in ["content-type", "authorization"] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.set(name, value)?;
        }
    }
    let mut init = RequestInit::new();
    init.with_method(worker::Method::from(parts.method.to_string())).with_headers(headers);
    if !bytes.is_empty() {
        init.with_body(Some(js_sys::Uint8Array::from(bytes.as_slice()).into()));
    }
    let outbound = Request::new_with_init(&format!("{origin}{path}"), &init)?;
    // Returned as is: the origin's body streams back without entering wasm.
    Fetch::Request(outbound).send().await
}
