//! Cloudflare Workers adapter (`worker` crate): fetch event, KV namespace `KV`, secrets and
//! vars, `waitUntil` for after-response work. Translation only; the rules live in the core.

use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, Request};
use worker::{event, AbortController, Context, Env, Fetch, HttpRequest, KvStore, RequestInit, Response};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::pipeline::stream::{StreamPump, StreamSummary};
use crate::gateway::pipeline::{error_response, ClientInfo};
use crate::gateway::ports::{Clock, Kv, Secrets, Upstream, UpstreamError};
use crate::gateway::{Gateway, ResponseBody};

/// Bodies above this are refused before the config (and its own, lower limit) is even read.
const HARD_BODY_LIMIT: usize = 32 << 20;
const KV_BINDING: &str = "KV";

thread_local! {
    // One per isolate: the config memo survives across requests in the same isolate.
    static GATEWAY: Rc<Gateway> = Rc::new(Gateway::new());
}

struct CloudflareHost {
    env: Env,
    kv: Option<KvStore>,
}

#[event(fetch)]
async fn fetch(request: HttpRequest, env: Env, ctx: Context) -> worker::Result<Response> {
    let kv = env.kv(KV_BINDING).ok();
    let host = Rc::new(CloudflareHost { env, kv });
    let gateway = GATEWAY.with(Rc::clone);

    let client = ClientInfo {
        country: request.extensions().get::<worker::Cf>().and_then(|cf| cf.country()),
        continent: request.extensions().get::<worker::Cf>().and_then(|cf| cf.continent()),
        region: None,
    };
    let (parts, body) = request.into_parts();
    let exchange = match read_request_body(body).await {
        Ok(bytes) => gateway.handle(&*host, Request::from_parts(parts, bytes), &client).await,
        Err(error) => return Ok(to_worker_response(error_response(&error))?.0),
    };
    let deferred = exchange.deferred;
    let (response, stream_end) = to_worker_response(exchange.response)?;
    let after = host.clone();
    ctx.wait_until(async move {
        // A streamed answer is accounted once its stream ended or the client went away.
        let summary = match stream_end {
            Some(end) => end.await.ok(),
            None => None,
        };
        let line = deferred.complete(&*after, summary).await;
        worker::console_log!("{line}");
    });
    Ok(response)
}

async fn read_request_body(mut body: worker::Body) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            GatewayError::bad_request(ErrorCode::BodyReadFailed, format!("reading the request body failed: {e}"))
        })?;
        if bytes.len() + chunk.len() > HARD_BODY_LIMIT {
            return Err(GatewayError::payload_too_large(HARD_BODY_LIMIT));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The host's response, plus for streams a receiver that yields the stream's summary once it
/// ended or was dropped.
fn to_worker_response(
    response: http::Response<ResponseBody<CfBody>>,
) -> worker::Result<(Response, Option<oneshot::Receiver<StreamSummary>>)> {
    let (parts, body) = response.into_parts();
    let (response, stream_end) = match body {
        ResponseBody::Full(bytes) => (Response::from_bytes(bytes)?, None),
        ResponseBody::Stream(mut upstream, pump) => {
            let (tx, rx) = oneshot::channel();
            let state = StreamState {
                upstream: upstream.response.stream()?,
                pump,
                abort: Some(upstream.abort),
                summary: Some(tx),
            };
            (Response::from_stream(translate(state))?, Some(rx))
        }
    };
    let headers = worker::Headers::new();
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            headers.append(name.as_str(), value)?;
        }
    }
    Ok((response.with_status(parts.status.as_u16()).with_headers(headers), stream_end))
}

/// A streamed origin response in flight. Dropping it — at the end, or because the client
/// disconnected and the runtime cancelled the stream — reports the summary and, if the origin
/// was still sending, aborts the origin request.
struct StreamState {
    upstream: worker::ByteStream,
    pump: StreamPump,
    abort: Option<AbortController>,
    summary: Option<oneshot::Sender<StreamSummary>>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        let summary = self.pump.summary();
        if !summary.completed {
            if let Some(abort) = self.abort.take() {
                abort.abort();
            }
        }
        if let Some(tx) = self.summary.take() {
            let _ = tx.send(summary);
        }
    }
}

/// The origin's chunks rewritten by the core's pump, then its closing bytes.
fn translate(state: StreamState) -> impl futures_util::Stream<Item = worker::Result<Vec<u8>>> {
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            match state.upstream.next().await {
                Some(Ok(chunk)) => {
                    let out = state.pump.chunk(&chunk);
                    if !out.is_empty() {
                        return Some((Ok(out), Some(state)));
                    }
                }
                // End or a broken origin stream: the pump closes the client stream cleanly.
                Some(Err(_)) | None => return Some((Ok(state.pump.end()), None)),
            }
        }
    })
}

fn kv_error(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::internal(ErrorCode::KvError, format!("KV operation failed: {e}"))
}

impl CloudflareHost {
    fn store(&self) -> Result<&KvStore> {
        self.kv.as_ref().ok_or_else(|| {
            GatewayError::not_configured(ErrorCode::KvUnbound, format!("no KV namespace bound as \"{KV_BINDING}\""))
        })
    }
}

impl Kv for CloudflareHost {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.store()?.get(key).bytes().await.map_err(kv_error)
    }

    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<()> {
        let mut put = self.store()?.put_bytes(key, value).map_err(kv_error)?;
        if let Some(ttl) = ttl_secs {
            put = put.expiration_ttl(ttl.max(60)); // Cloudflare's minimum TTL
        }
        put.execute().await.map_err(kv_error)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.store()?.delete(key).await.map_err(kv_error)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let store = self.store()?;
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let mut list = store.list().prefix(prefix.to_string());
            if let Some(c) = cursor.take() {
                list = list.cursor(c);
            }
            let page = list.execute().await.map_err(kv_error)?;
            keys.extend(page.keys.into_iter().map(|k| k.name));
            match page.cursor {
                Some(c) if !page.list_complete => cursor = Some(c),
                _ => return Ok(keys),
            }
        }
    }
}

/// An origin response and the controller that can still cancel it.
pub struct CfBody {
    response: Response,
    abort: AbortController,
}

impl Upstream for CloudflareHost {
    type Body = CfBody;

    async fn send(
        &self,
        request: Request<Vec<u8>>,
        timeout_ms: u64,
    ) -> std::result::Result<http::Response<CfBody>, UpstreamError> {
        let (parts, body) = request.into_parts();
        let headers = worker::Headers::new();
        for (name, value) in &parts.headers {
            let value = value.to_str().map_err(|e| UpstreamError::Connect(e.to_string()))?;
            headers.append(name.as_str(), value).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        }
        let mut init = RequestInit::new();
        init.with_method(worker::Method::from(parts.method.to_string())).with_headers(headers);
        if !body.is_empty() {
            init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        }
        let request = worker::Request::new_with_init(&parts.uri.to_string(), &init)
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;

        // The timeout covers the response head; aborting also cancels the origin request.
        let controller = AbortController::default();
        let signal = controller.signal();
        let fetch = Fetch::Request(request);
        let sent = std::pin::pin!(fetch.send_with_signal(&signal));
        let timer = worker::Delay::from(Duration::from_millis(timeout_ms));
        let response = match select(sent, timer).await {
            Either::Left((result, _)) => result.map_err(|e| UpstreamError::Connect(e.to_string()))?,
            Either::Right(_) => {
                controller.abort();
                return Err(UpstreamError::Timeout);
            }
        };

        let mut builder = http::Response::builder().status(response.status_code());
        for (name, value) in response.headers().entries() {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                builder = builder.header(name, value);
            }
        }
        builder.body(CfBody { response, abort: controller }).map_err(|e| UpstreamError::Body(e.to_string()))
    }

    async fn read_body(&self, body: CfBody, limit: usize) -> std::result::Result<Vec<u8>, UpstreamError> {
        let mut body = body.response;
        let declared = body.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(UpstreamError::Body(format!("response exceeds {limit} bytes")));
        }
        // One arrayBuffer() call: far cheaper than crossing into JS per chunk.
        let bytes = body.bytes().await.map_err(|e| UpstreamError::Body(e.to_string()))?;
        if bytes.len() > limit {
            return Err(UpstreamError::Body(format!("response exceeds {limit} bytes")));
        }
        Ok(bytes)
    }
}

impl Secrets for CloudflareHost {
    fn secret(&self, name: &str) -> Option<String> {
        self.env.secret(name).map(|s| s.to_string()).or_else(|_| self.env.var(name).map(|v| v.to_string())).ok()
    }
}

impl Clock for CloudflareHost {
    fn now_ms(&self) -> u64 {
        worker::Date::now().as_millis()
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        // crypto.getRandomValues; it cannot fail for small buffers inside a worker.
        getrandom::getrandom(buf).expect("crypto.getRandomValues is available in workers");
    }

    async fn sleep(&self, ms: u64) {
        worker::Delay::from(Duration::from_millis(ms)).await;
    }
}

impl crate::gateway::ports::counter::Counter for CloudflareHost {
    async fn count(
        &self,
        scope: &str,
        ops: &[crate::gateway::ports::counter::CounterOp],
    ) -> Result<Option<crate::gateway::ports::counter::CounterReply>> {
        super::cloudflare_counter::count(&self.env, scope, ops).await.map(Some)
    }
}
