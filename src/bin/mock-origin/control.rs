//! Shared state (counters, history, armed fault) and the `/_mock/*` control API.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::creds::Creds;
use crate::exchange::{Reply, Usage};
use crate::fault::{self, Armed, Fault};

/// How many requests `/_mock/requests` remembers.
const HISTORY: usize = 100;

/// A request as remembered for `/_mock/requests`.
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn new(method: &Method, path: &str, query: &str, headers: &HeaderMap, body: Bytes) -> Self {
        Recorded {
            method: method.clone(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body,
        }
    }

    /// `{method, path, query, headers, body}`, the shape shared by
    /// `/_mock/requests` and `/echo/...`.
    pub fn to_json(&self) -> Value {
        json!({
            "method": self.method.as_str(),
            "path": self.path,
            "query": self.query,
            "headers": headers_json(&self.headers),
            "body": body_json(&self.body),
        })
    }
}

/// Header map with lowercased names; repeated headers are joined with `, `.
fn headers_json(headers: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        match map.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                map.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    Value::Object(map)
}

/// The body parsed as JSON, else as a (lossy UTF-8) string; `null` when empty.
pub fn body_json(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[derive(Default)]
struct Inner {
    count: u64,
    by_path: BTreeMap<String, u64>,
    history: VecDeque<Recorded>,
    usage: Usage,
    fault: Option<Armed>,
}

/// See [`State::hang_watch`].
pub struct HangWatch<'a> {
    counter: &'a AtomicU64,
    armed: bool,
}

impl HangWatch<'_> {
    /// The hang ran its course.
    pub fn ended(mut self) {
        self.armed = false;
    }
}

impl Drop for HangWatch<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Everything the origin shares between connections.
pub struct State {
    name: String,
    origin_header: Option<HeaderValue>,
    ids: AtomicU64,
    inner: Mutex<Inner>,
    /// Streams whose client disconnected before the end (a gateway cancelling upstream).
    abandoned: Arc<AtomicU64>,
    /// Hanging requests whose client disconnected before the hang ended (a gateway giving up).
    hangs_abandoned: AtomicU64,
    /// Keys and tokens the auth endpoints accept (kept across `/_mock/reset`).
    pub creds: Creds,
}

impl State {
    pub fn new(name: String) -> Self {
        State {
            origin_header: HeaderValue::from_str(&name).ok(),
            name,
            ids: AtomicU64::new(0),
            abandoned: Arc::default(),
            hangs_abandoned: AtomicU64::new(0),
            inner: Mutex::default(),
            creds: Creds::default(),
        }
    }

    /// The `--name` of this origin (used in ids and `x-mock-origin`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn origin_header(&self) -> Option<&HeaderValue> {
        self.origin_header.as_ref()
    }

    /// A process-wide sequence number for response ids.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters inconsistent
        // in a way that matters for a mock, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, request: Recorded) {
        let mut inner = self.lock();
        inner.count += 1;
        match inner.by_path.get_mut(&request.path) {
            Some(n) => *n += 1,
            None => {
                inner.by_path.insert(request.path.clone(), 1);
            }
        }
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(request);
    }

    pub fn add_usage(&self, usage: Usage) {
        if usage == Usage::default() {
            return;
        }
        let mut inner = self.lock();
        inner.usage.prompt += usage.prompt;
        inner.usage.completion += usage.completion;
    }

    /// Takes one use of the armed fault if it applies to this request.
    pub fn take_fault(&self, path: &str, is_stream: bool) -> Option<Fault> {
        let mut inner = self.lock();
        let armed = inner.fault.as_mut()?;
        if !armed.matches(path, is_stream) {
            return None;
        }
        let fault = armed.fault.clone();
        if let Some(remaining) = armed.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                inner.fault = None;
            }
        }
        Some(fault)
    }

    fn reset(&self) {
        *self.lock() = Inner::default();
        self.abandoned.store(0, Ordering::Relaxed);
        self.hangs_abandoned.store(0, Ordering::Relaxed);
    }

    /// Counts the hang it is held across as abandoned if it is dropped first: hyper drops a
    /// request's handler when its client closes the connection.
    pub fn hang_watch(&self) -> HangWatch<'_> {
        HangWatch { counter: &self.hangs_abandoned, armed: true }
    }

    pub fn abandoned_streams(&self) -> Arc<AtomicU64> {
        self.abandoned.clone()
    }

    fn requests_json(&self) -> Value {
        let inner = self.lock();
        let requests: Vec<Value> = inner.history.iter().map(Recorded::to_json).collect();
        json!({ "count": inner.count, "requests": requests })
    }

    fn stats_json(&self) -> Value {
        let inner = self.lock();
        json!({
            "name": self.name,
            "count": inner.count,
            "by_path": inner.by_path,
            "streams_abandoned": self.abandoned.load(Ordering::Relaxed),
            "hangs_abandoned": self.hangs_abandoned.load(Ordering::Relaxed),
            "usage": {
                "prompt_tokens": inner.usage.prompt,
                "completion_tokens": inner.usage.completion,
                "total_tokens": inner.usage.prompt + inner.usage.completion,
            },
        })
    }

    fn fault_json(&self) -> Value {
        let inner = self.lock();
        json!({ "fault": inner.fault.as_ref().map(Armed::to_json) })
    }

    fn arm(&self, body: &[u8]) -> Reply {
        let config = match serde_json::from_slice::<Value>(body) {
            Ok(value) => fault::parse_config(&value),
            Err(e) => Err(format!("body is not valid JSON: {e}")),
        };
        match config {
            Ok(armed) => {
                self.lock().fault = armed;
                Reply::ok_json(&json!({ "ok": true, "fault": self.fault_json()["fault"] }))
            }
            Err(message) => control_error(StatusCode::BAD_REQUEST, &message),
        }
    }
}

fn control_error(status: StatusCode, message: &str) -> Reply {
    Reply::json(status, &json!({ "ok": false, "error": message }))
}

/// Serves `/_mock/*`. These requests are neither counted nor faulted.
pub fn handle(state: &State, method: &Method, path: &str, body: &[u8]) -> Reply {
    match (method, path) {
        (&Method::GET, "/_mock/requests") => Reply::ok_json(&state.requests_json()),
        (&Method::GET, "/_mock/stats") => Reply::ok_json(&state.stats_json()),
        (&Method::GET, "/_mock/fault") => Reply::ok_json(&state.fault_json()),
        (&Method::GET, "/_mock/health") => Reply::ok_json(&json!({ "status": "ok", "name": state.name() })),
        (&Method::POST, "/_mock/reset") => {
            state.reset();
            Reply::ok_json(&json!({ "ok": true }))
        }
        (&Method::POST, "/_mock/fault") => state.arm(body),
        (&Method::POST, "/_mock/google/keys") => {
            // {"client_email", "n": <modulus as hex>, "e": <public exponent>}
            let key = serde_json::from_slice::<Value>(body).ok();
            let field = |name: &str| key.as_ref().and_then(|k| k.get(name)).cloned();
            let result = match (field("client_email"), field("n"), field("e").and_then(|e| e.as_u64())) {
                (Some(Value::String(email)), Some(Value::String(n)), Some(e)) => {
                    state.creds.add_google_key(&email, &n, e)
                }
                _ => Err("expected {\"client_email\", \"n\" (hex), \"e\"}".into()),
            };
            match result {
                Ok(()) => Reply::ok_json(&json!({ "ok": true })),
                Err(message) => control_error(StatusCode::BAD_REQUEST, &message),
            }
        }
        _ => control_error(StatusCode::NOT_FOUND, &format!("no control endpoint {method} {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> Recorded {
        Recorded::new(&Method::POST, path, "", &HeaderMap::new(), Bytes::new())
    }

    #[test]
    fn remembers_the_last_hundred() {
        let state = State::new("t".into());
        for i in 0..150 {
            state.record(request(&format!("/p/{}", i % 2)));
        }
        let requests = state.requests_json();
        assert_eq!(requests["count"], 150);
        assert_eq!(requests["requests"].as_array().map(Vec::len), Some(100));
        let stats = state.stats_json();
        assert_eq!(stats["by_path"]["/p/0"], 75);
        state.reset();
        assert_eq!(state.stats_json()["count"], 0);
    }

    #[test]
    fn fault_clears_after_times() {
        let state = State::new("t".into());
        let reply = state.arm(br#"{"mode":"status_500","times":2}"#);
        assert_eq!(reply.status, StatusCode::OK);
        assert!(state.take_fault("/v1/x", false).is_some());
        assert!(state.take_fault("/v1/x", false).is_some());
        assert!(state.take_fault("/v1/x", false).is_none());
        assert_eq!(state.arm(b"nope").status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn body_is_json_or_string() {
        assert_eq!(body_json(b""), Value::Null);
        assert_eq!(body_json(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(body_json(b"plain"), json!("plain"));
    }

    #[test]
    fn repeated_headers_are_joined() {
        let headers = vec![("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())];
        assert_eq!(headers_json(&headers), json!({"a": "1, 2"}));
    }
}
