//! Pass-through HTTP component: request in, same method/path/body to ORIGIN_URL, origin's
//! response out. The reference point for the gateway's cost under `wasmtime serve`.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> anyhow::Result<Response> {
    let origin = std::env::var("ORIGIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8091".into());
    let url = format!("{origin}{}", request.path_and_query().unwrap_or("/"));
    let mut outgoing = Request::builder();
    outgoing.method(request.method().clone()).uri(url);
    // The headers an OpenAI-style origin needs: the body's type and the caller's credential.
    for name in ["content-type", "authorization"] {
        if let Some(value) = request.header(name).and_then(|v| v.as_str()) {
            outgoing.header(name, value);
        }
    }
    // The whole body, read by the SDK before `handle` runs.
    let outgoing = outgoing.body(request.into_body()).build();
    let response: Response = spin_sdk::http::send(outgoing).await?;
    Ok(response)
}
