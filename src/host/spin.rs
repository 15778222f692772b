//! Spin adapter (`spin-sdk` 5.2, WASI 0.2 component): incoming HTTP, the default key-value
//! store, variables for secrets, outbound `wasi:http`. After-response work (the log line) runs
//! inline once the response body is finished — Spin has no `waitUntil`.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue, Request};
use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};

use crate::gateway::error::{ErrorCode as GwCode, GatewayError, Result};
use crate::gateway::pipeline::stream::StreamSummary;
use crate::gateway::pipeline::{error_response, ClientInfo};
use crate::gateway::ports::cas::{cas_count, CasStore};
use crate::gateway::ports::{BodyLimit, Clock, Kv, Secrets, Upstream, UpstreamError};
use crate::gateway::{Gateway, ResponseBody};

/// Bodies above this are refused before the config (and its own, lower limit) is even read.
const HARD_BODY_LIMIT: usize = 32 << 20;

thread_local! {
    // One per component instance; Spin may reuse an instance across requests.
    static GATEWAY: Rc<Gateway> = Rc::new(Gateway::new());
}

struct SpinHost {
    store: std::result::Result<Store, String>,
    /// The same store through wasi:keyvalue (for its compare-and-swap), opened on first use.
    bucket: std::cell::OnceCell<spin_sdk::wit::wasi::keyvalue::store::Bucket>,
}

/// The origin's response, kept alive while its body streams (dropping it cancels the request).
pub struct SpinBody(IncomingResponse);

#[http_component]
async fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
    let host = SpinHost { store: Store::open_default().map_err(|e| e.to_string()), bucket: Default::default() };
    let gateway = GATEWAY.with(Rc::clone);

    // Spin has no geo data; a deployment can fix its region with the `gateway_region` variable.
    let mut client = ClientInfo::default();
    client.region = spin_sdk::variables::get("gateway_region").ok();
    let exchange = match to_http_request(request).await {
        Ok(request) => gateway.handle(&host, request, &client).await,
        Err(error) => {
            let _ = write_response(error_response(&error), response_out).await;
            return;
        }
    };
    // Spin keeps no state between requests (an instance per request) and has no waitUntil: a
    // buffered answer is accounted before it is sent (its usage and tally are one ledger entry,
    // `features::ledger`), so the next request sees its counts; telemetry export and the
    // occasional housekeeping sweep wait until the response is out.
    if matches!(exchange.response.body(), ResponseBody::Full(_)) {
        let request_id = exchange.deferred.log.request_id.clone();
        let (line, observe) = exchange.deferred.settle(&host, None).await;
        let _ = write_response(exchange.response, response_out).await;
        emit(&line);
        let afterwards = observe.run(&host).await;
        if afterwards.telemetry_error.is_some() || afterwards.housekeeping_error.is_some() {
            let mut errors = serde_json::Map::new();
            errors.insert("request_id".into(), request_id.into());
            if let Some(e) = afterwards.telemetry_error {
                errors.insert("telemetry_error".into(), e.into());
            }
            if let Some(e) = afterwards.housekeeping_error {
                errors.insert("housekeeping_error".into(), e.into());
            }
            emit(&serde_json::Value::Object(errors).to_string());
        }
    } else {
        let summary = write_response(exchange.response, response_out).await;
        let line = exchange.deferred.complete(&host, summary).await;
        emit(&line);
    }
}

/// Writes one log line with a single write, so lines of concurrent requests never interleave.
fn emit(line: &str) {
    use std::io::Write;
    let mut out = Vec::with_capacity(line.len() + 1);
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    let _ = std::io::stderr().write_all(&out);
}

async fn to_http_request(request: IncomingRequest) -> Result<Request<Vec<u8>>> {
    let mut builder = Request::builder()
        .method(spin_method(&request.method()))
        .uri(request.path_with_query().unwrap_or_else(|| "/".into()));
    for (name, value) in request.headers().entries() {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            builder = builder.header(name, value);
        }
    }
    let mut body = Vec::new();
    let mut stream = request.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            GatewayError::bad_request(GwCode::BodyReadFailed, format!("reading the request body failed: {e}"))
        })?;
        if body.len() + chunk.len() > HARD_BODY_LIMIT {
            return Err(GatewayError::payload_too_large(HARD_BODY_LIMIT));
        }
        body.extend_from_slice(&chunk);
    }
    builder.body(body).map_err(|e| GatewayError::bad_request(GwCode::BadRequest, e.to_string()))
}

fn spin_method(method: &Method) -> http::Method {
    match method {
        Method::Get => http::Method::GET,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Patch => http::Method::PATCH,
        Method::Head => http::Method::HEAD,
        Method::Options => http::Method::OPTIONS,
        Method::Connect => http::Method::CONNECT,
        Method::Trace => http::Method::TRACE,
        Method::Other(other) => http::Method::from_bytes(other.as_bytes()).unwrap_or(http::Method::GET),
    }
}

/// Sends the response; for a stream, returns its summary once it ended or the client left.
async fn write_response(
    response: http::Response<ResponseBody<SpinBody>>,
    out: ResponseOutparam,
) -> Option<StreamSummary> {
    let (parts, body) = response.into_parts();
    let headers: Vec<(String, Vec<u8>)> =
        parts.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect();
    let Ok(fields) = Fields::from_list(&headers) else { return None };
    let outgoing = OutgoingResponse::new(fields);
    let _ = outgoing.set_status_code(parts.status.as_u16());
    let mut sink = outgoing.take_body();
    out.set(outgoing);
    match body {
        ResponseBody::Full(bytes) => {
            let _ = sink.send(bytes).await;
            None
        }
        ResponseBody::Stream(SpinBody(upstream), mut pump) => {
            let mut chunks = upstream.take_body_stream();
            let idle = pump.idle_timeout_ms();
            loop {
                let next = {
                    let timer = std::pin::pin!(SpinHost::delay(idle));
                    match futures_util::future::select(chunks.next(), timer).await {
                        futures_util::future::Either::Left((next, _)) => Some(next),
                        futures_util::future::Either::Right(_) => None,
                    }
                };
                let out = match next {
                    Some(Some(Ok(chunk))) => pump.chunk(&chunk),
                    // End or a broken origin stream: the pump closes the client stream cleanly.
                    Some(Some(Err(_)) | None) => {
                        let _ = sink.send(pump.end()).await;
                        break;
                    }
                    // The origin went quiet: the client gets an error and the end.
                    None => {
                        let _ = sink.send(pump.idle()).await;
                        break;
                    }
                };
                if !out.is_empty() && sink.send(out).await.is_err() {
                    break; // client went away; dropping `upstream` cancels the origin request
                }
                if pump.is_finished() {
                    break; // stopped at a cap or on a broken event: dropping `upstream` cancels it
                }
            }
            Some(pump.summary())
        }
    }
}

/// A store failure: a 503 with Retry-After that names no runtime internals (the runtime's text
/// stays out of responses and logs).
fn kv_error<E>(_: E) -> GatewayError {
    GatewayError::kv_unavailable("the key-value store")
}

/// One retry: a store hiccup should not fail the request.
fn retry<T, E>(op: impl Fn() -> std::result::Result<T, E>) -> Result<T> {
    op().or_else(|_| op()).map_err(kv_error)
}

impl SpinHost {
    fn store(&self) -> Result<&Store> {
        self.store.as_ref().map_err(kv_error)
    }
}

/// Spin has no cache local to the location: cached answers come from KV.
impl crate::gateway::ports::EdgeCache for SpinHost {}
/// RustCrypto (the `rustcrypto` feature, which `spin` turns on).
impl crate::gateway::ports::Signatures for SpinHost {}

impl Kv for SpinHost {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let store = self.store()?;
        retry(|| store.get(key))
    }

    async fn put(&self, key: &str, value: &[u8], _ttl_secs: Option<u64>) -> Result<()> {
        // Spin's key-value interface has no TTL; readers check expiry stored in the value.
        let store = self.store()?;
        retry(|| store.set(key, value))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let store = self.store()?;
        retry(|| store.delete(key))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let store = self.store()?;
        let keys = retry(|| store.get_keys())?;
        Ok(keys.into_iter().filter(|k| k.starts_with(prefix)).collect())
    }
}

impl Upstream for SpinHost {
    type Body = SpinBody;

    async fn send(
        &self,
        request: &Request<Vec<u8>>,
        timeout_ms: u64,
    ) -> std::result::Result<http::Response<SpinBody>, UpstreamError> {
        let body = request.body();
        let headers = outbound_headers(request, body.len());
        let fields = Fields::from_list(&headers).map_err(|e| UpstreamError::Connect(format!("bad header: {e:?}")))?;
        let outgoing = OutgoingRequest::new(fields);
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            _ => Scheme::Http,
        };
        let invalid = |_| UpstreamError::Connect(format!("invalid origin URL {uri}"));
        outgoing.set_method(&to_spin_method(request.method())).map_err(invalid)?;
        outgoing.set_scheme(Some(&scheme)).map_err(invalid)?;
        outgoing.set_authority(uri.authority().map(|a| a.as_str())).map_err(invalid)?;
        outgoing.set_path_with_query(uri.path_and_query().map(|p| p.as_str())).map_err(invalid)?;

        let options = RequestOptions::new();
        let timeout = Some(Duration::from_millis(timeout_ms).as_nanos() as u64);
        let _ = options.set_connect_timeout(timeout);
        let _ = options.set_first_byte_timeout(timeout);
        // No unbounded wait after the response head: a body that stalls this long fails. A
        // second longer than the stream pump's own idle timer (the same `timeout_ms`), so a
        // quiet stream ends as on Cloudflare (an `origin_timeout` event), not as a cut one.
        let between_bytes = Duration::from_millis(timeout_ms.saturating_add(1_000)).as_nanos() as u64;
        let _ = options.set_between_bytes_timeout(Some(between_bytes));

        let outgoing_body = outgoing.body().map_err(|_| UpstreamError::Connect("request body unavailable".into()))?;
        let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(upstream_error)?;
        {
            let stream =
                outgoing_body.write().map_err(|_| UpstreamError::Connect("request body unavailable".into()))?;
            for chunk in body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| UpstreamError::Connect(format!("sending body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(outgoing_body, None).map_err(upstream_error)?;

        let response = std::future::poll_fn(|cx| match pending.get() {
            Some(result) => std::task::Poll::Ready(result),
            None => {
                spin_executor::push_waker(pending.subscribe(), cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
        .map_err(|()| UpstreamError::Connect("response already taken".into()))?
        .map_err(upstream_error)?;

        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers().entries() {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                builder = builder.header(name, value);
            }
        }
        builder.body(SpinBody(response)).map_err(|e| UpstreamError::Body(e.to_string()))
    }

    async fn read_body(&self, body: SpinBody, limit: usize) -> std::result::Result<Vec<u8>, UpstreamError> {
        let mut bytes = BodyLimit::new(limit);
        let mut chunks = body.0.take_body_stream();
        while let Some(chunk) = chunks.next().await {
            bytes.push(&chunk.map_err(|e| UpstreamError::Body(e.to_string()))?)?;
        }
        Ok(bytes.finish())
    }
}

/// The outbound header fields, with the body framed by its length.
///
/// wasi:http 0.2 frames an outgoing body by the `content-length` field of the request's
/// headers: `outgoing-request.body` reads it, wasmtime then sends `Content-Length` and enforces
/// it (writing past it fails, and `outgoing-body.finish` short of it fails with
/// `HTTP-request-body-size` and aborts the request). Without the field the length is unknown
/// and hyper sends `Transfer-Encoding: chunked`, which origins that read Content-Length only
/// (Python's `http.server`, many model servers, HTTP/1.0 servers, some WAFs) take as an empty
/// body. The core always hands over a whole body, so its length is always known: chunked
/// would only be right for a body streamed from the client, which the `Upstream` port has not.
/// Bodyless GET/HEAD requests carry no length, as any HTTP client sends them.
fn outbound_headers(request: &Request<Vec<u8>>, body_len: usize) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<(String, Vec<u8>)> = request
        .headers()
        .iter()
        // Framing is this function's business alone (and `transfer-encoding` is a forbidden field).
        .filter(|(name, _)| *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING)
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    if body_len > 0 || !matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
        headers.push((http::header::CONTENT_LENGTH.as_str().to_string(), body_len.to_string().into_bytes()));
    }
    headers
}

fn to_spin_method(method: &http::Method) -> Method {
    match *method {
        http::Method::GET => Method::Get,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::DELETE => Method::Delete,
        http::Method::PATCH => Method::Patch,
        http::Method::HEAD => Method::Head,
        http::Method::OPTIONS => Method::Options,
        _ => Method::Other(method.to_string()),
    }
}

fn upstream_error(code: ErrorCode) -> UpstreamError {
    match code {
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            UpstreamError::Timeout
        }
        other => UpstreamError::Connect(format!("{other:?}")),
    }
}

impl Secrets for SpinHost {
    fn secret(&self, name: &str) -> Option<String> {
        // Spin variable names are lower case: `$OPENAI_API_KEY` reads variable `openai_api_key`.
        spin_sdk::variables::get(&name.to_ascii_lowercase()).ok()
    }
}

impl Clock for SpinHost {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        // wasi:random directly: `getrandom` 0.2 goes through the WASI preview 1 adapter, whose
        // state each fresh instance then sets up (3 of the ~37 page faults of a forward).
        buf.copy_from_slice(&wasi::random::random::get_random_bytes(buf.len() as u64));
    }

    async fn sleep(&self, ms: u64) {
        SpinHost::delay(ms).await
    }
}

impl SpinHost {
    /// Waits `ms`. Dropping the future unregisters its timer (a stream's per-chunk idle timer
    /// must not pile up in the executor).
    async fn delay(ms: u64) {
        use wasi::clocks::monotonic_clock;
        let deadline = monotonic_clock::now().saturating_add(ms.saturating_mul(1_000_000));
        let mut registered: Option<spin_executor::CancelOnDropToken> = None;
        std::future::poll_fn(|cx| {
            if monotonic_clock::now() >= deadline {
                return std::task::Poll::Ready(());
            }
            let pollable = monotonic_clock::subscribe_instant(deadline);
            registered = Some(spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()).into());
            std::task::Poll::Pending
        })
        .await
    }
}

/// The default store through wasi:keyvalue, whose `atomics` Spin serves over the same stores
/// as its key-value interface: compare-and-swap for the exact counters.
struct AtomicStore<'a>(&'a spin_sdk::wit::wasi::keyvalue::store::Bucket);

impl SpinHost {
    /// The default store through wasi:keyvalue, opened on first use.
    fn atomic_store(&self) -> Result<AtomicStore<'_>> {
        let bucket = match self.bucket.get() {
            Some(bucket) => bucket,
            None => {
                let opened = spin_sdk::wit::wasi::keyvalue::store::open("default").map_err(kv_error)?;
                self.bucket.get_or_init(|| opened)
            }
        };
        Ok(AtomicStore(bucket))
    }
}

impl CasStore for AtomicStore<'_> {
    type Handle = spin_sdk::wit::wasi::keyvalue::atomics::Cas;

    fn read(&self, key: &str) -> Result<(Self::Handle, Option<Vec<u8>>)> {
        let cas = spin_sdk::wit::wasi::keyvalue::atomics::Cas::new(self.0, key).map_err(kv_error)?;
        let value = cas.current().map_err(kv_error)?;
        Ok((cas, value))
    }

    fn swap(&self, cas: Self::Handle, value: &[u8]) -> Result<bool> {
        use spin_sdk::wit::wasi::keyvalue::atomics::{swap, CasError};
        match swap(cas, value) {
            Ok(()) => Ok(true),
            Err(CasError::CasFailed(_)) => Ok(false),
            Err(CasError::StoreError(e)) => Err(kv_error(e)),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.0.get(key).map_err(kv_error)
    }
}

impl crate::gateway::ports::counter::Counter for SpinHost {
    /// Exact: each scope's counters are one entry, checked and added with one compare-and-swap.
    async fn count(
        &self,
        scope: &str,
        ops: &[crate::gateway::ports::counter::CounterOp],
    ) -> Result<Option<crate::gateway::ports::counter::CounterReply>> {
        cas_count(&self.atomic_store()?, scope, ops, self.now_ms()).map(Some)
    }

    fn keeps_state(&self) -> bool {
        false
    }

    /// Exact: one compare-and-swap (the compactions' locks).
    async fn swap_if(&self, key: &str, value: &[u8], replace: impl Fn(Option<&[u8]>) -> bool) -> Result<Option<bool>> {
        crate::gateway::ports::cas::swap_if(&self.atomic_store()?, key, value, replace).map(Some)
    }
}
