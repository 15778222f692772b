//! Minimal pass-through worker, floor (i) of scripts/bench: the cheapest way the `worker`
//! crate proxies a request. The body is read once (`Request::bytes()`: one `arrayBuffer()`),
//! sent with the same method and path to ORIGIN_URL with the two headers an OpenAI-style
//! origin needs (one `Fetch`), and the origin's response is returned as is: its body streams
//! back without entering wasm. No `http` conversion (it reads `cf.httpProtocol`, which throws
//! on bare workerd) and no chunk-by-chunk reading.

use worker::{event, js_sys, Context, Env, Fetch, Headers, Request, RequestInit, Response, Result};

#[event(fetch)]
async fn fetch(mut request: Request, env: Env, _ctx: Context) -> Result<Response> {
    let origin = env.var("ORIGIN_URL").map(|v| v.to_string()).unwrap_or_else(|_| "http://127.0.0.1:8091".into());
    let url = request.url()?;
    let target = match url.query() {
        Some(query) => format!("{origin}{}?{query}", url.path()),
        None => format!("{origin}{}", url.path()),
    };
    let headers = Headers::new();
    for name in ["content-type", "authorization"] {
        if let Some(value) = request.headers().get(name)? {
            headers.set(name, &value)?;
        }
    }
    let body = request.bytes().await?;
    let mut init = RequestInit::new();
    init.with_method(request.method()).with_headers(headers);
    if !body.is_empty() {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    Fetch::Request(Request::new_with_init(&target, &init)?).send().await
}
