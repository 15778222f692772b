//! Cloudflare Workers adapter over a raw wasm boundary. The worker's `main` is a small
//! hand-written JS shim (`cloudflare/shim.mjs`); this side exports a handful of functions and
//! keeps every rule in the core. Per request the shim crosses into the wasm once with the
//! request (head as one string, body from one `arrayBuffer()`), then once per port call's
//! outcome; the wasm answers each call with a batch of commands (`abi.rs`): KV, fetch, sleep,
//! counter, respond, log. After `respond`, the same task goes on with the after-response work
//! (stream summary, cache fill, accounting, the log line) under `ctx.waitUntil`.
//!
//! Exports (all return the out buffer's address unless noted):
//! - `egw_alloc(len) -> ptr`: memory for the shim to fill (see `abi::take`)
//! - `egw_env(ptr, len)`: the worker's text bindings, `name\0value\0…`, once per instance
//! - `egw_fetch(task, head, head_len, head_cap, body, body_len, flags)`: start a request task
//!   (the head in an `egw_alloc(head_cap)` buffer, its first `head_len` bytes filled)
//! - `egw_resume(task, op, code, ptr, len, body_ptr, body_len)`: a command's outcome
//! - `egw_chunk(task, ptr, len)` / `egw_chunk_end(task)` / `egw_chunk_idle(task)`: the
//!   response stream's pump; `egw_pump_done(task)`: the pump ended the stream itself (cap);
//!   `egw_idle_ms(task)`: how long to wait for the origin's next chunk
//! - `egw_cancel(task)`: drop a task
//! - `egw_count(task, object, ptr, len)` / `egw_object_drop(object)`: the Durable Object
//!   (`cloudflare_counter.rs`)

pub(super) mod abi;
pub(super) mod exec;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use http::{HeaderName, HeaderValue, Request, Response};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::pipeline::{error_response, ClientInfo, Exchange};
use crate::gateway::ports::counter::{Counter, CounterOp, CounterReply};
use crate::gateway::ports::signatures::PublicKey;
use crate::gateway::ports::{Clock, EdgeCache, Kv, Secrets, Signatures, Upstream, UpstreamError};
use crate::gateway::{Gateway, ResponseBody};

use abi::{split_nul, Cmd, Field, CODE_MISSING, CODE_OK, CODE_UNBOUND};
use exec::{Outcome, Shared};

/// Bodies above this are refused before the config (and its own, lower limit) is even read;
/// the shim does not read a body whose declared length exceeds it.
const HARD_BODY_LIMIT: usize = 32 << 20;
/// `egw_fetch` flags from the shim.
const FLAG_TOO_LARGE: u32 = 1;
const FLAG_READ_FAILED: u32 = 2;

// The worker's allocator: talc instead of Rust's default for wasm (dlmalloc), which took
// ~6 us of the ~37 us a forward spends in the wasm on workerd (perf), in less code (-2.2 KB
// gzipped). A/B on workerd (scripts/bench BENCH_BASE, 3 runs): CPU per forward 2-5% lower,
// cache hits unchanged. The Spin component keeps wasi-libc's allocator: with talc its code
// grew 135 KB (inlined at the component's opt-level 3) and a request took ~80 us more CPU.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

thread_local! {
    // One per isolate: the config memo, key memo and breaker survive across requests.
    static GATEWAY: Rc<Gateway> = Rc::new(Gateway::new());
    static SECRETS: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

#[no_mangle]
pub extern "C" fn egw_env(ptr: usize, len: usize) {
    abi::install_panic_hook();
    let bytes = abi::take(ptr, len);
    let mut parts = split_nul(&bytes);
    let mut secrets = HashMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        secrets.insert(String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned());
    }
    SECRETS.with(|s| *s.borrow_mut() = secrets);
}

#[no_mangle]
pub extern "C" fn egw_fetch(
    task: u32,
    head_ptr: usize,
    head_len: usize,
    head_cap: usize,
    body_ptr: usize,
    body_len: usize,
    flags: u32,
) -> usize {
    abi::begin();
    let head = abi::take_filled(head_ptr, head_len, head_cap);
    let body = abi::take(body_ptr, body_len);
    let request = read_request(task, &head, body, flags);
    exec::spawn(task, move |shared| serve(CfHost { shared }, request));
    abi::finish()
}

#[no_mangle]
pub extern "C" fn egw_resume(
    task: u32,
    op: u32,
    code: i32,
    ptr: usize,
    len: usize,
    body_ptr: usize,
    body_len: usize,
) -> usize {
    abi::begin();
    exec::resume(task, op, Outcome { code, data: abi::take(ptr, len), body: abi::take(body_ptr, body_len) });
    abi::finish()
}

/// One chunk of the origin's body through the task's pump: the bytes for the client.
#[no_mangle]
pub extern "C" fn egw_chunk(task: u32, ptr: usize, len: usize) -> usize {
    let chunk = abi::take(ptr, len);
    let out = exec::shared(task).and_then(|s| s.pump.borrow_mut().as_mut().map(|p| p.chunk(&chunk)));
    abi::finish_with(&out.unwrap_or_default())
}

/// The origin's body ended (or broke): the pump's closing bytes.
#[no_mangle]
pub extern "C" fn egw_chunk_end(task: u32) -> usize {
    let out = exec::shared(task).and_then(|s| s.pump.borrow_mut().as_mut().map(|p| p.end()));
    abi::finish_with(&out.unwrap_or_default())
}

/// Whether the task's pump ended the client's stream itself (a cap crossed, an oversized origin
/// event): the shim then closes the client's stream and cancels the origin request.
#[no_mangle]
pub extern "C" fn egw_pump_done(task: u32) -> u32 {
    let done = exec::shared(task).and_then(|s| s.pump.borrow().as_ref().map(|p| p.is_finished()));
    u32::from(done.unwrap_or(true))
}

/// How long the shim waits for the origin's next chunk before calling `egw_chunk_idle`.
#[no_mangle]
pub extern "C" fn egw_idle_ms(task: u32) -> u32 {
    let ms = exec::shared(task).and_then(|s| s.pump.borrow().as_ref().map(|p| p.idle_timeout_ms()));
    ms.map_or(0, |ms| ms.min(u64::from(u32::MAX)) as u32)
}

/// The origin sent nothing for the idle timeout: the pump's closing bytes (an error event).
#[no_mangle]
pub extern "C" fn egw_chunk_idle(task: u32) -> usize {
    let out = exec::shared(task).and_then(|s| s.pump.borrow_mut().as_mut().map(|p| p.idle()));
    abi::finish_with(&out.unwrap_or_default())
}

#[no_mangle]
pub extern "C" fn egw_cancel(task: u32) -> usize {
    abi::begin();
    exec::cancel(task);
    abi::finish()
}

/// The request as the core takes it, or the error the client gets without running the core.
/// Head: `method\nurl\n` then `name:value\n` per header. The client's geo data is asked of
/// the shim only if routing needs it.
fn read_request(task: u32, head: &[u8], body: Vec<u8>, flags: u32) -> Result<(Request<Vec<u8>>, ClientInfo)> {
    if flags & FLAG_TOO_LARGE != 0 || body.len() > HARD_BODY_LIMIT {
        return Err(GatewayError::payload_too_large(HARD_BODY_LIMIT));
    }
    if flags & FLAG_READ_FAILED != 0 {
        return Err(GatewayError::bad_request(ErrorCode::BodyReadFailed, "reading the request body failed"));
    }
    let bad_head = || GatewayError::bad_request(ErrorCode::BadRequest, "the request line or headers could not be read");
    let mut lines = head.split(|b| *b == b'\n');
    let mut next = || lines.next().ok_or_else(bad_head);
    let method = http::Method::from_bytes(next()?).map_err(|_| bad_head())?;
    let uri = http::Uri::try_from(next()?).map_err(|_| bad_head())?;
    let client = ClientInfo::with_lookup(move || abi::client_geo_of(task));
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(&line[colon + 1..]))
        {
            headers.append(name, value);
        }
    }
    Ok((request, client))
}

/// One request: the pipeline, the response, then the after-response work.
async fn serve(host: CfHost, request: Result<(Request<Vec<u8>>, ClientInfo)>) {
    let (request, client) = match request {
        Ok(request) => request,
        Err(error) => {
            respond(error_response::<CfBody>(&error), &host.shared);
            return;
        }
    };
    let gateway = GATEWAY.with(Rc::clone);
    let Exchange { response, deferred } = gateway.handle(&host, request, &client).await;
    // A streamed answer is accounted once its stream ended or the client went away. The
    // accounting is closed in memory before any yield: the client may send its next request
    // as soon as the answer is out.
    let (summary, whole) = match respond(response, &host.shared) {
        Sent::Whole => (None, true),
        Sent::Streaming(stream_end) => {
            stream_end.await;
            (host.shared.pump.borrow_mut().take().map(|pump| pump.summary()), false)
        }
        Sent::Pumped(summary) => (Some(summary), true),
    };
    let closed = deferred.close(&host, summary);
    // A stream's answer went out as it was read; a whole one is sent once this call returns.
    if whole {
        yield_when_idle(&host).await;
    }
    let line = closed.complete(&host).await;
    exec::notify(Cmd::Log, &[line.as_str().into()]);
    // Memos this request found about to expire are read again now, not by a later request
    // that would wait for the read (Spin needs none of this: each instance serves one request).
    gateway.refresh_due(&host).await;
}

/// Lets a whole answer go out before the after-response work when no other request waits for
/// its answer. The shim performs a call's commands when the call returns, so the answer would
/// wait for that work's synchronous part; one timer turn first sends it sooner (unloaded, on
/// bare workerd: ~30 us for a cache hit, ~60 us for a forward), but the turn costs ~13% of a
/// cache hit's CPU (workerd's timer dispatch). With requests waiting, that CPU is theirs.
async fn yield_when_idle(host: &CfHost) {
    // This request counts until the shim performs its respond command.
    if abi::requests_unanswered() <= 1 {
        host.sleep(0).await;
    }
}

/// How a response went out.
enum Sent {
    Whole,
    /// Streaming: the op resolves when the stream is over.
    Streaming(exec::Op),
    /// A stream whose whole origin body was already here: pumped at once.
    Pumped(crate::gateway::pipeline::stream::StreamSummary),
}

fn respond(response: Response<ResponseBody<CfBody>>, shared: &Rc<Shared>) -> Sent {
    let (parts, body) = response.into_parts();
    let mut headers = Vec::with_capacity(256);
    for (name, value) in &parts.headers {
        // Only text values, as the Headers API takes them.
        if value.to_str().is_ok() {
            abi::push_nul(&mut headers, name.as_str().as_bytes());
            abi::push_nul(&mut headers, value.as_bytes());
        }
    }
    let status = u32::from(parts.status.as_u16());
    match body {
        ResponseBody::Full(bytes) => {
            exec::notify(Cmd::Respond, &[status.into(), Field::Bytes(&headers), Field::Bytes(&bytes)]);
            Sent::Whole
        }
        ResponseBody::Stream(mut upstream, mut pump) => {
            if let Some(read) = upstream.read.take() {
                // Already read whole (the shim reads ahead only what is not an event stream):
                // the pump runs over it at once.
                std::mem::forget(upstream);
                let mut bytes = pump.chunk(&read);
                bytes.extend(pump.end());
                exec::notify(Cmd::Respond, &[status.into(), Field::Bytes(&headers), Field::Bytes(&bytes)]);
                return Sent::Pumped(pump.summary());
            }
            *shared.pump.borrow_mut() = Some(pump);
            let handle = upstream.into_handle();
            Sent::Streaming(shared.call(Cmd::RespondStream, &[status.into(), Field::Bytes(&headers), handle.into()]))
        }
    }
}

/// The ports of one task.
struct CfHost {
    shared: Rc<Shared>,
}

/// A KV command that failed (the shim already retried it once): a 503 the client may retry,
/// never the runtime's exception text.
fn kv_failed(code: i32) -> GatewayError {
    if code == CODE_UNBOUND {
        return GatewayError::not_configured(ErrorCode::KvUnbound, "no KV namespace is bound as \"KV\"");
    }
    GatewayError::kv_unavailable("the key-value store")
}

impl Kv for CfHost {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let out = self.shared.call(Cmd::KvGet, &[key.into()]).await;
        match out.code {
            CODE_OK => Ok(Some(out.data)),
            CODE_MISSING => Ok(None),
            code => Err(kv_failed(code)),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<()> {
        // Cloudflare's minimum TTL is 60 s.
        let ttl = ttl_secs.map_or(0, |t| t.clamp(60, u64::from(u32::MAX)) as u32);
        let out = self.shared.call(Cmd::KvPut, &[key.into(), value.into(), ttl.into()]).await;
        if out.code == CODE_OK {
            Ok(())
        } else {
            Err(kv_failed(out.code))
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let out = self.shared.call(Cmd::KvDelete, &[key.into()]).await;
        if out.code == CODE_OK {
            Ok(())
        } else {
            Err(kv_failed(out.code))
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self.shared.call(Cmd::KvList, &[prefix.into()]).await;
        if out.code != CODE_OK {
            return Err(kv_failed(out.code));
        }
        Ok(split_nul(&out.data).map(|k| String::from_utf8_lossy(k).into_owned()).collect())
    }
}

/// An origin body: still held by the shim (under the fetch's op number), or already read with
/// the head. Dropping a held one unused tells the shim to cancel it.
pub struct CfBody {
    handle: u32,
    content_length: Option<usize>,
    read: Option<Vec<u8>>,
}

impl CfBody {
    fn into_handle(self) -> u32 {
        let handle = self.handle;
        std::mem::forget(self);
        handle
    }
}

impl Drop for CfBody {
    fn drop(&mut self) {
        if self.read.is_none() {
            exec::notify(Cmd::DropBody, &[self.handle.into()]);
        }
    }
}

impl Upstream for CfHost {
    type Body = CfBody;

    async fn send(
        &self,
        request: &Request<Vec<u8>>,
        timeout_ms: u64,
    ) -> std::result::Result<Response<CfBody>, UpstreamError> {
        let mut headers = Vec::with_capacity(256);
        for (name, value) in request.headers() {
            value.to_str().map_err(|_| UpstreamError::Connect(format!("header {name} is not text")))?;
            abi::push_nul(&mut headers, name.as_str().as_bytes());
            abi::push_nul(&mut headers, value.as_bytes());
        }
        let url = request.uri().to_string();
        let timeout = timeout_ms.min(u64::from(u32::MAX)) as u32;
        let fields = [
            request.method().as_str().into(),
            url.as_str().into(),
            Field::Bytes(&headers),
            Field::Bytes(request.body()),
            timeout.into(),
        ];
        let op = self.shared.call(Cmd::Fetch, &fields);
        let handle = op.id;
        let out = op.await;
        let (code, head, read) = match out.code {
            abi::CODE_TIMEOUT => return Err(UpstreamError::Timeout),
            code if code < 0 => return Err(UpstreamError::Connect("the connection failed".into())),
            code if code >= abi::BODY_INCLUDED => (code - abi::BODY_INCLUDED, out.data, Some(out.body)),
            code => (code, out.data, None),
        };
        let status = http::StatusCode::from_u16(code as u16)
            .map_err(|_| UpstreamError::Connect(format!("invalid status {code}")))?;
        let mut response = Response::new(CfBody { handle, content_length: None, read });
        *response.status_mut() = status;
        let headers = response.headers_mut();
        let mut parts = split_nul(&head);
        while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                headers.append(name, value);
            }
        }
        let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        response.body_mut().content_length = declared;
        Ok(response)
    }

    async fn read_body(&self, mut body: CfBody, limit: usize) -> std::result::Result<Vec<u8>, UpstreamError> {
        let too_large = || UpstreamError::Body(format!("response exceeds {limit} bytes"));
        if body.content_length.is_some_and(|n| n > limit) {
            return Err(too_large()); // dropping `body` cancels it
        }
        if let Some(bytes) = body.read.take() {
            std::mem::forget(body);
            return if bytes.len() <= limit { Ok(bytes) } else { Err(too_large()) };
        }
        let handle = body.into_handle();
        let limit_u32 = limit.min(u32::MAX as usize) as u32;
        // One arrayBuffer() in the shim, one copy into the wasm.
        let out = self.shared.call(Cmd::ReadBody, &[handle.into(), limit_u32.into()]).await;
        match out.code {
            CODE_OK if out.data.len() <= limit => Ok(out.data),
            CODE_OK | abi::CODE_TOO_LARGE => Err(too_large()),
            _ => Err(UpstreamError::Body("reading the response body failed".into())),
        }
    }
}

impl Secrets for CfHost {
    fn secret(&self, name: &str) -> Option<String> {
        SECRETS.with(|s| s.borrow().get(name).cloned())
    }
}

impl Clock for CfHost {
    fn now_ms(&self) -> u64 {
        abi::now()
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        abi::random(buf);
    }

    async fn sleep(&self, ms: u64) {
        self.shared.call(Cmd::Sleep, &[(ms.min(u64::from(u32::MAX)) as u32).into()]).await;
    }
}

/// The Cache API (`caches.open("edge-gateway")`, this location only). The shim treats a
/// failure or a runtime without it as a miss or nothing stored.
impl EdgeCache for CfHost {
    async fn edge_get(&self, key: &str) -> Option<Vec<u8>> {
        let out = self.shared.call(Cmd::CacheGet, &[key.into()]).await;
        (out.code == CODE_OK).then_some(out.data)
    }

    async fn edge_put(&self, key: &str, value: &[u8], ttl_secs: u64) {
        let ttl = ttl_secs.min(u64::from(u32::MAX)) as u32;
        self.shared.call(Cmd::CachePut, &[key.into(), value.into(), ttl.into()]).await;
    }

    async fn edge_delete(&self, key: &str) {
        self.shared.call(Cmd::CacheDelete, &[key.into()]).await;
    }
}

/// WebCrypto (`crypto.subtle`): the worker ships no RSA or P-256 code (ports/signatures.rs).
impl Signatures for CfHost {
    async fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        let jwk = key.jwk();
        let out = self.shared.call(Cmd::Verify, &[jwk.as_str().into(), message.into(), signature.into()]).await;
        out.code == CODE_OK
    }

    async fn sign_rs256(&self, pkcs8: &[u8], message: &[u8]) -> Option<Vec<u8>> {
        let out = self.shared.call(Cmd::SignRs256, &[pkcs8.into(), message.into()]).await;
        (out.code == CODE_OK).then_some(out.data)
    }
}

impl Counter for CfHost {
    async fn count(&self, scope: &str, ops: &[CounterOp]) -> Result<Option<CounterReply>> {
        super::cloudflare_counter::count(&self.shared, scope, ops).await.map(Some)
    }
}
