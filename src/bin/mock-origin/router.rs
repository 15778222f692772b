//! Request dispatch: control API, recording, routing to a wire format, and
//! fault injection.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::{Chunks, MockBody};
use crate::control::{self, Recorded, State};
use crate::exchange::{Ctx, Payload, Reply};
use crate::fault::{self, Fault, Mode};
use crate::openai::Flavor;
use crate::{anthropic, aws, gemini, google, openai, responses};

/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Header naming the origin that answered (`--name`).
const X_MOCK_ORIGIN: HeaderName = HeaderName::from_static("x-mock-origin");

/// Per-connection flags shared with the connection's IO.
#[derive(Default)]
pub struct ConnFlags {
    /// Set to make the connection close with a TCP reset.
    pub reset: AtomicBool,
}

/// Returned instead of a response to make hyper close the connection silently.
#[derive(Debug)]
pub struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by mock fault")
    }
}

impl std::error::Error for Dropped {}

/// Which provider's error shape a path calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

impl Provider {
    fn of(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Provider::Anthropic
        } else if path.starts_with("/model/") {
            Provider::Bedrock
        } else if path.starts_with("/v1beta/") || path.starts_with("/v1/projects/") || gemini_path(path).is_some() {
            Provider::Gemini
        } else {
            Provider::OpenAi
        }
    }

    fn fault_error(self, status: StatusCode) -> Reply {
        match self {
            Provider::OpenAi => openai::fault_error(status),
            Provider::Anthropic => anthropic::fault_error(status),
            Provider::Gemini => gemini::fault_error(status),
            Provider::Bedrock => aws::fault_error(status),
        }
    }

    fn bad_request(self, message: &str) -> Reply {
        let status = StatusCode::BAD_REQUEST;
        match self {
            Provider::OpenAi => openai::error(status, message, "invalid_request_error", None),
            Provider::Anthropic => anthropic::error(status, "invalid_request_error", message),
            Provider::Gemini => gemini::error(status, message, "INVALID_ARGUMENT"),
            Provider::Bedrock => aws::error(status, "ValidationException", message),
        }
    }
}

/// `{model}:{action}` for Gemini paths (`/v1beta/models/...` or `/v1/models/...:x`).
fn gemini_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/").filter(|rest| rest.contains(':')))
}

/// The hyper service: one call per request.
pub async fn handle(
    state: Arc<State>,
    conn: Arc<ConnFlags>,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, Dropped> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let provider = Provider::of(path);
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let reply = provider.bad_request("could not read the request body");
            return Ok(into_response(&state, reply, |c| c));
        }
    };

    if path.starts_with("/_mock/") {
        let reply = control::handle(&state, &parts.method, path, &body);
        return Ok(into_response(&state, reply, |c| c));
    }

    state.record(Recorded::new(&parts.method, path, query, &parts.headers, body.clone()));
    let header_fault = match fault::from_headers(&parts.headers) {
        Ok(fault) => fault,
        Err(message) => {
            return Ok(into_response(&state, provider.bad_request(&message), |c| c));
        }
    };
    let ctx = Ctx { method: &parts.method, path, query, headers: &parts.headers, body: &body, state: &state };
    let reply = dispatch(&ctx);
    let fault = match header_fault {
        Some(fault) => fault,
        None => state.take_fault(path, reply.is_stream()),
    };
    match fault {
        None => Ok(deliver(&state, reply, |c| c)),
        Some(fault) => apply(&state, &conn, provider, reply, fault).await,
    }
}

/// Routes a recorded request to its wire format.
fn dispatch(ctx: &Ctx<'_>) -> Reply {
    let path = ctx.path;
    if path == "/echo" || path.starts_with("/echo/") {
        let request = Recorded::new(ctx.method, path, ctx.query, ctx.headers, Bytes::copy_from_slice(ctx.body));
        return Reply::ok_json(&request.to_json());
    }
    let post = ctx.method == Method::POST;
    if post {
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            return azure(ctx, rest);
        }
        // Groq-style bases (`https://api.groq.com/openai/v1`): the OpenAI API under a prefix.
        if let Some(rest) = path.strip_prefix("/openai/v1/") {
            let v1 = format!("/v1/{rest}");
            return dispatch(&Ctx { path: &v1, ..*ctx });
        }
        if let Some(rest) = path.strip_prefix("/mistral/v1/") {
            return mistral(ctx, rest);
        }
        if let Some(operation) = path.strip_prefix("/serving-endpoints/") {
            return databricks(ctx, operation);
        }
        if let Some(rest) = path.strip_prefix("/v1/projects/") {
            // {project}/locations/{location}/{rest}
            let mut parts = rest.splitn(4, '/');
            let (_project, locations, _location) = (parts.next(), parts.next(), parts.next());
            return match (locations, parts.next()) {
                (Some("locations"), Some(rest)) => google::vertex(ctx, rest),
                _ => gemini::not_found(ctx),
            };
        }
        if let Some(rest) = path.strip_prefix("/model/") {
            return aws::bedrock(ctx, rest);
        }
        match path {
            "/" => return aws::sts(ctx),
            "/token" => return google::token(ctx),
            "/oidc/v1/token" => return google::databricks_token(ctx),
            _ => {}
        }
        if let Some(model_action) = gemini_path(path) {
            return gemini::handle(ctx, model_action);
        }
    }
    if ctx.method == Method::GET {
        if let Some(id) = path.strip_prefix("/v1/models/") {
            return openai::model(ctx, id);
        }
    }
    match (ctx.method, path) {
        (&Method::POST, "/v1/chat/completions") => openai::chat(ctx, Flavor::OpenAi),
        (&Method::POST, "/v1/completions") => openai::completions(ctx, Flavor::OpenAi),
        (&Method::POST, "/v1/embeddings") => openai::embeddings(ctx, Flavor::OpenAi),
        (&Method::POST, "/v1/responses") => responses::create(ctx),
        (&Method::POST, "/v1/messages") => anthropic::messages(ctx),
        (&Method::GET, "/v1/models") => openai::models(ctx),
        _ => match Provider::of(path) {
            Provider::Gemini => gemini::not_found(ctx),
            _ => openai::not_found(ctx),
        },
    }
}

/// Databricks' OpenAI-compatible serving endpoints (`/serving-endpoints/{operation}`).
fn databricks(ctx: &Ctx<'_>, operation: &str) -> Reply {
    match operation {
        "chat/completions" => openai::chat(ctx, Flavor::OpenAi),
        "completions" => openai::completions(ctx, Flavor::OpenAi),
        "embeddings" => openai::embeddings(ctx, Flavor::OpenAi),
        _ => openai::not_found(ctx),
    }
}

/// Fields Mistral's API accepts; it refuses any other with 422 (`extra_forbidden`).
const MISTRAL_CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "safe_prompt",
    "prompt_mode",
];
const MISTRAL_EMBEDDING_FIELDS: &[&str] = &["model", "input", "output_dimension", "output_dtype"];

/// Mistral (`/mistral/v1/...`): OpenAI's shapes, but unknown fields are refused, the seed is
/// `random_seed`, and streams end with usage unasked.
fn mistral(ctx: &Ctx<'_>, rest: &str) -> Reply {
    let allowed = match rest {
        "chat/completions" => MISTRAL_CHAT_FIELDS,
        "embeddings" => MISTRAL_EMBEDDING_FIELDS,
        _ => return openai::not_found(ctx),
    };
    let Some(mut request) = ctx.json_object() else {
        return openai::error(StatusCode::BAD_REQUEST, "Invalid JSON", "invalid_request_error", None);
    };
    if let Some(extra) = request.keys().find(|k| !allowed.contains(&k.as_str())) {
        let detail = serde_json::json!({"object": "error", "message": {"detail": [{"type": "extra_forbidden",
            "loc": ["body", extra], "msg": "Extra inputs are not permitted"}]}, "type": "invalid_request_error",
            "param": null, "code": null});
        return Reply::json(StatusCode::UNPROCESSABLE_ENTITY, &detail);
    }
    if rest == "embeddings" {
        if let Some(d) = request.remove("output_dimension") {
            request.insert("dimensions".into(), d);
        }
        let body = serde_json::to_vec(&request).unwrap_or_default();
        return openai::embeddings(&Ctx { body: &body, ..*ctx }, Flavor::OpenAi);
    }
    request.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
    let body = serde_json::to_vec(&request).unwrap_or_default();
    openai::chat(&Ctx { body: &body, ..*ctx }, Flavor::OpenAi)
}

/// `/openai/deployments/{deployment}/{operation}`.
fn azure(ctx: &Ctx<'_>, rest: &str) -> Reply {
    let Some((deployment, operation)) = rest.split_once('/') else {
        return openai::not_found(ctx);
    };
    let flavor = Flavor::Azure { deployment };
    match operation {
        "chat/completions" => openai::chat(ctx, flavor),
        "completions" => openai::completions(ctx, flavor),
        "embeddings" => openai::embeddings(ctx, flavor),
        _ => openai::not_found(ctx),
    }
}

/// Applies an injected fault to the reply the request would have had.
async fn apply(
    state: &State,
    conn: &ConnFlags,
    provider: Provider,
    reply: Reply,
    fault: Fault,
) -> Result<Response<MockBody>, Dropped> {
    match fault.mode {
        Mode::Delay => {
            tokio::time::sleep(fault.delay_or_default()).await;
            Ok(deliver(state, reply, |c| c))
        }
        Mode::Hang => {
            let watch = state.hang_watch();
            tokio::time::sleep(fault.delay_or_default()).await;
            watch.ended();
            Err(Dropped)
        }
        Mode::Reset => {
            conn.reset.store(true, Ordering::Relaxed);
            Err(Dropped)
        }
        Mode::Status500 | Mode::Status503 | Mode::Status429 => {
            let status = match fault.mode {
                Mode::Status429 => StatusCode::TOO_MANY_REQUESTS,
                Mode::Status503 => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut error = provider.fault_error(status);
            let retry = fault.mode == Mode::Status429 || (fault.mode == Mode::Status503 && fault.retry_after.is_some());
            if retry {
                let seconds = HeaderValue::from(fault.retry_after_or_default());
                error = error.with_header(RETRY_AFTER, seconds);
            }
            Ok(into_response(state, error, |c| c))
        }
        Mode::SlowStream => {
            let gap = fault.delay_or_default();
            Ok(deliver(state, reply, |c| c.paced(gap)))
        }
        Mode::CutStream => Ok(into_response(state, reply, Chunks::cut_in_half)),
        Mode::CorruptStream => {
            // One flipped byte in the middle chunk: a checksum (event stream) or JSON breaks.
            let reply = match reply.payload {
                Payload::Stream(mut chunks) if !chunks.is_empty() => {
                    let middle = chunks.len() / 2;
                    let mut bytes = chunks[middle].to_vec();
                    let at = bytes.len().saturating_sub(6);
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= 0x20;
                    }
                    chunks[middle] = Bytes::from(bytes);
                    Reply { payload: Payload::Stream(chunks), ..reply }
                }
                payload => Reply { payload, ..reply },
            };
            Ok(deliver(state, reply, |c| c))
        }
        Mode::MalformedJson => {
            let truncated = match reply.payload {
                Payload::Full(bytes) if bytes.len() > 1 => bytes.slice(..bytes.len() / 2),
                _ => Bytes::from_static(b"{\"id\":\"mock\",\"choices\":[{\"message\":{\"content\":\"tru"),
            };
            let reply = Reply::full(StatusCode::OK, "application/json", truncated);
            Ok(into_response(state, reply, |c| c))
        }
        Mode::WrongContentType => {
            let html = Bytes::from_static(b"<html>oops</html>");
            let reply = Reply::full(StatusCode::OK, "text/html", html);
            Ok(into_response(state, reply, |c| c))
        }
    }
}

/// Sends `reply` as answered, counting the usage it reports.
fn deliver(state: &State, reply: Reply, shape: impl FnOnce(Chunks) -> Chunks) -> Response<MockBody> {
    state.add_usage(reply.usage);
    into_response(state, reply, shape)
}

fn into_response(state: &State, reply: Reply, shape: impl FnOnce(Chunks) -> Chunks) -> Response<MockBody> {
    let streaming = reply.is_stream();
    let body = match reply.payload {
        Payload::Full(bytes) => MockBody::full(bytes),
        Payload::Stream(chunks) => MockBody::Chunks(shape(Chunks::new(chunks).watched(state.abandoned_streams()))),
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if streaming {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    if let Some(origin) = state.origin_header() {
        headers.insert(X_MOCK_ORIGIN, origin.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shape_follows_the_path() {
        assert_eq!(Provider::of("/v1/chat/completions"), Provider::OpenAi);
        assert_eq!(Provider::of("/openai/deployments/d/embeddings"), Provider::OpenAi);
        assert_eq!(Provider::of("/v1/messages"), Provider::Anthropic);
        assert_eq!(Provider::of("/v1beta/models/g:generateContent"), Provider::Gemini);
        assert_eq!(Provider::of("/v1/models/g:embedContent"), Provider::Gemini);
        assert_eq!(Provider::of("/v1/models/gpt-4o"), Provider::OpenAi);
        assert_eq!(Provider::of("/model/amazon.titan-embed-text-v2%3A0/invoke"), Provider::Bedrock);
        assert_eq!(Provider::of("/v1/projects/p/locations/l/publishers/google/models/g:predict"), Provider::Gemini);
    }
}
