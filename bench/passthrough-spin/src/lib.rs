//! Pass-through HTTP component: request in, same method/path/body to ORIGIN_URL, origin's
//! response out. The reference point for the gateway's cost under `wasmtime serve`.

use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: Request) -> anyhow::Result<Response> {
    let origin = std::env::var("ORIGIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8091".into());
    let url = format!("{origin}{}", request.path_and_query().unwrap_or("/"));
    let content_type = request.header("content-type").and_then(|v| v.as_str()).unwrap_or("application/json").to_string();
    let method = request.method().clone();
    let outgoing = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(request.into_body()) // the whole body, read by the SDK before `handle` runs
        .build();
    let response: Response = spin_sdk::http::send(outgoing).await?;
    Ok(response)
}
