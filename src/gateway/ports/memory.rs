//! In-memory ports for native unit tests and the pipeline benchmark. Not used by any host.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};

use crate::gateway::error::{GatewayError, Result};
use crate::gateway::ports::{Clock, EdgeCache, Kv, Secrets, Upstream, UpstreamError};

type Origin = Box<dyn Fn(&Request<Vec<u8>>) -> std::result::Result<Response<Vec<u8>>, UpstreamError>>;

/// An edge cache: key → (value, expiry ms).
pub type EdgeEntries = HashMap<String, (Vec<u8>, u64)>;

pub struct MemoryHost {
    pub kv: RefCell<BTreeMap<String, Vec<u8>>>,
    pub secrets: HashMap<String, String>,
    pub now_ms: Cell<u64>,
    origin: Origin,
    /// Requests sent to the origin, in order (only when `record` is on).
    pub sent: RefCell<Vec<Request<Vec<u8>>>>,
    pub record: bool,
    rng: Cell<u64>,
    /// KV operations performed (get, put, delete, list), for tests of per-call caps.
    pub kv_ops: Cell<u64>,
    /// When `Some`, the keys (or list prefixes) of those operations in the order they began,
    /// before any [`MemoryHost::kv_yield`] wait: which reads a request makes side by side. Off by
    /// default (the benches and the fuzzer make millions of operations).
    pub kv_begun: RefCell<Option<Vec<String>>>,
    /// KV operations on keys starting with any of these prefixes fail as a host's would
    /// (`""` fails them all): transient-error tests.
    pub kv_fail: RefCell<Vec<String>>,
    /// Every KV operation and origin call is pending once before it completes, so concurrent
    /// requests interleave at each await (as in an isolate).
    pub kv_yield: Cell<bool>,
    /// Like Spin: no in-memory state between requests (`Counter::keeps_state` is false), and
    /// exact counting by compare-and-swap.
    pub stateless: Cell<bool>,
    /// The edge cache (Cloudflare's Cache API): `None`, the default, is a host without one.
    pub edge: RefCell<Option<EdgeEntries>>,
    /// Sleeps wait until the caller has moved the clock past their end, instead of moving it
    /// themselves: an isolate under load, where after-response work waits while the next
    /// requests run (the native bench). Off by default: a lone `block_on` would wait forever.
    pub clock_driven: Cell<bool>,
}

impl MemoryHost {
    /// A host whose origin answers every request with `origin(request)`.
    pub fn new(
        origin: impl Fn(&Request<Vec<u8>>) -> std::result::Result<Response<Vec<u8>>, UpstreamError> + 'static,
    ) -> Self {
        MemoryHost {
            kv: RefCell::default(),
            secrets: HashMap::new(),
            now_ms: Cell::new(1_700_000_000_000),
            origin: Box::new(origin),
            sent: RefCell::default(),
            record: true,
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            kv_ops: Cell::new(0),
            kv_begun: RefCell::default(),
            kv_fail: RefCell::default(),
            kv_yield: Cell::new(false),
            stateless: Cell::new(false),
            edge: RefCell::new(None),
            clock_driven: Cell::new(false),
        }
    }

    /// The host with an (empty) edge cache.
    pub fn with_edge_cache(self) -> Self {
        *self.edge.borrow_mut() = Some(HashMap::new());
        self
    }

    /// One KV operation on `key`: possibly pending once, then as [`MemoryHost::kv_op_now`].
    async fn kv_op(&self, key: &str) -> Result<()> {
        if let Some(begun) = self.kv_begun.borrow_mut().as_mut() {
            begun.push(key.to_string());
        }
        if self.kv_yield.get() {
            yield_once().await;
        }
        self.kv_op_now(key)
    }

    /// One KV operation on `key` that does not wait: counted, possibly failing.
    fn kv_op_now(&self, key: &str) -> Result<()> {
        self.kv_ops.set(self.kv_ops.get() + 1);
        if self.kv_fail.borrow().iter().any(|p| key.starts_with(p.as_str())) {
            return Err(GatewayError::kv_unavailable("the key-value store"));
        }
        Ok(())
    }

    pub fn with_secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    pub fn with_kv(self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.kv.borrow_mut().insert(key.into(), value.into());
        self
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }
}

impl Kv for MemoryHost {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.kv_op(key).await?;
        Ok(self.kv.borrow().get(key).cloned())
    }
    async fn put(&self, key: &str, value: &[u8], _ttl_secs: Option<u64>) -> Result<()> {
        self.kv_op(key).await?;
        self.kv.borrow_mut().insert(key.into(), value.to_vec());
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.kv_op(key).await?;
        self.kv.borrow_mut().remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.kv_op(prefix).await?;
        Ok(self.kv.borrow().keys().filter(|k| k.starts_with(prefix)).cloned().collect())
    }
}

/// RustCrypto: the port's defaults (the in-memory host is for tests and benches, which have
/// the `rustcrypto` feature).
#[cfg(feature = "rustcrypto")]
impl crate::gateway::ports::Signatures for MemoryHost {}

impl EdgeCache for MemoryHost {
    async fn edge_get(&self, key: &str) -> Option<Vec<u8>> {
        let now = self.now_ms.get();
        let edge = self.edge.borrow();
        edge.as_ref()?.get(key).filter(|(_, expires)| *expires > now).map(|(value, _)| value.clone())
    }
    async fn edge_put(&self, key: &str, value: &[u8], ttl_secs: u64) {
        let expires = self.now_ms.get().saturating_add(ttl_secs.saturating_mul(1000));
        if let Some(edge) = self.edge.borrow_mut().as_mut() {
            edge.insert(key.into(), (value.to_vec(), expires));
        }
    }
    async fn edge_delete(&self, key: &str) {
        if let Some(edge) = self.edge.borrow_mut().as_mut() {
            edge.remove(key);
        }
    }
}

/// Pending once, then ready: an await point where other futures can run.
pub async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|_| if std::mem::replace(&mut yielded, true) { Poll::Ready(()) } else { Poll::Pending }).await
}

/// Polls all futures round-robin until every one is done: requests interleaving at each
/// await in one single-threaded isolate.
pub fn run_interleaved<'a, T>(mut futures: Vec<std::pin::Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut cx = Context::from_waker(Waker::noop());
    while out.iter().any(Option::is_none) {
        for (i, f) in futures.iter_mut().enumerate() {
            if out[i].is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    out[i] = Some(v);
                }
            }
        }
    }
    out.into_iter().flatten().collect()
}

impl Upstream for MemoryHost {
    type Body = Vec<u8>;
    async fn send(
        &self,
        request: &Request<Vec<u8>>,
        _timeout_ms: u64,
    ) -> std::result::Result<Response<Vec<u8>>, UpstreamError> {
        if self.kv_yield.get() {
            yield_once().await;
        }
        let response = (self.origin)(request);
        if self.record {
            let mut copy = Request::new(request.body().clone());
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.headers_mut() = request.headers().clone();
            self.sent.borrow_mut().push(copy);
        }
        response
    }
    async fn read_body(&self, body: Vec<u8>, limit: usize) -> std::result::Result<Vec<u8>, UpstreamError> {
        let mut limited = crate::gateway::ports::BodyLimit::new(limit);
        for chunk in body.chunks(64 * 1024) {
            limited.push(chunk)?;
        }
        Ok(limited.finish())
    }
}

impl Secrets for MemoryHost {
    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).cloned()
    }
}

impl Clock for MemoryHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }
    fn random_bytes(&self, buf: &mut [u8]) {
        // xorshift: deterministic test randomness, never used by a real host.
        for b in buf {
            let mut x = self.rng.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.rng.set(x);
            *b = x as u8;
        }
    }
    /// Time jumps ahead, and the task yields once (as a real sleep lets others run); with
    /// `clock_driven`, pending until the caller's clock reaches the end.
    async fn sleep(&self, ms: u64) {
        if self.clock_driven.get() {
            let end = self.now_ms.get().saturating_add(ms);
            std::future::poll_fn(|_| if self.now_ms.get() >= end { Poll::Ready(()) } else { Poll::Pending }).await;
            return;
        }
        self.advance(ms);
        yield_once().await;
    }
}

/// Polls a future to completion. The in-memory ports never return `Pending`.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Compare-and-swap over the KV (as Spin's wasi:keyvalue atomics): a swap writes only while
/// the entry still holds what was read.
impl crate::gateway::ports::cas::CasStore for MemoryHost {
    type Handle = (String, Option<Vec<u8>>);

    fn read(&self, key: &str) -> Result<(Self::Handle, Option<Vec<u8>>)> {
        self.kv_op_now(key)?;
        let value = self.kv.borrow().get(key).cloned();
        Ok(((key.to_string(), value.clone()), value))
    }

    fn swap(&self, (key, seen): Self::Handle, value: &[u8]) -> Result<bool> {
        self.kv_op_now(&key)?;
        let mut kv = self.kv.borrow_mut();
        if kv.get(&key) != seen.as_ref() {
            return Ok(false);
        }
        kv.insert(key, value.to_vec());
        Ok(true)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.kv_op_now(key)?;
        Ok(self.kv.borrow().get(key).cloned())
    }
}

impl crate::gateway::ports::Counter for MemoryHost {
    /// A stateless host counts exactly by compare-and-swap (as the Spin host does); otherwise
    /// the host has no exact counter.
    async fn count(
        &self,
        scope: &str,
        ops: &[crate::gateway::ports::counter::CounterOp],
    ) -> Result<Option<crate::gateway::ports::counter::CounterReply>> {
        if self.stateless.get() {
            return crate::gateway::ports::cas::cas_count(self, scope, ops, self.now_ms.get()).map(Some);
        }
        Ok(None)
    }

    fn keeps_state(&self) -> bool {
        !self.stateless.get()
    }

    /// A stateless host writes atomically by compare-and-swap, as the Spin host does.
    async fn swap_if(&self, key: &str, value: &[u8], replace: impl Fn(Option<&[u8]>) -> bool) -> Result<Option<bool>> {
        if self.stateless.get() {
            return crate::gateway::ports::cas::swap_if(self, key, value, replace).map(Some);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driven_clock_holds_a_sleep_until_the_caller_moves_it_past_the_end() {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        host.clock_driven.set(true);
        let start = host.now_ms.get();
        let mut sleep = pin!(host.sleep(1_000));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        host.advance(999);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        host.advance(1);
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(host.now_ms.get(), start + 1_000, "the sleep itself moved no time");
    }

    #[test]
    fn otherwise_a_sleep_moves_the_clock_itself() {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let start = host.now_ms.get();
        block_on(host.sleep(1_000));
        assert_eq!(host.now_ms.get(), start + 1_000);
    }
}
