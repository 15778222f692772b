//! Exact rate-limit counters on Cloudflare: one Durable Object per scope (a key id,
//! `tenant:<name>` or `public`), reached through the core's `limits::Counter` port.
//!
//! A Durable Object is single-threaded and unique worldwide, so its check-and-add is atomic
//! across every isolate and location: the limit does not multiply with the number of
//! instances. The object keeps its counters in memory, loads a missing one from its storage
//! before the check, applies the batch with `limits::apply_ops` synchronously (no await between
//! reading and updating the in-memory values), then persists the changed counters; the
//! runtime's output gate holds the reply until that write is durable. Counters whose window
//! ended are deleted on the next call.
//!
//! Wiring (in `cloudflare.rs`): `mod` this file in `src/host/mod.rs` under the `cloudflare`
//! feature, then
//! ```ignore
//! impl crate::gateway::ports::counter::Counter for CloudflareHost {
//!     async fn count(&self, scope: &str, ops: &[CounterOp]) -> Result<Option<CounterReply>> {
//!         super::cloudflare_counter::count(&self.env, scope, ops).await.map(Some)
//!     }
//! }
//! ```
//! and in `wrangler.toml`:
//! ```toml
//! [[durable_objects.bindings]]
//! name = "COUNTER"
//! class_name = "GatewayCounter"
//!
//! [[migrations]]
//! tag = "v1"
//! new_sqlite_classes = ["GatewayCounter"]
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{durable_object, DurableObject, Env, Method, Request, RequestInit, Response, State};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::counter::{apply_ops, Amounts, CounterOp, CounterReply};

/// The Durable Object namespace binding in `wrangler.toml`.
pub const COUNTER_BINDING: &str = "COUNTER";

#[derive(Serialize, Deserialize)]
struct CountRequest {
    ops: Vec<CounterOp>,
}

/// What the object stores per counter.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Stored {
    value: Amounts,
    expires_at_ms: u64,
}

/// Asks the scope's Durable Object to apply `ops` (see `limits::Counter::count`). Fails closed:
/// exact limits were asked for, so a missing binding or an unreachable object is an error, not
/// a silent fallback to per-location counting.
pub async fn count(env: &Env, scope: &str, ops: &[CounterOp]) -> Result<CounterReply> {
    let namespace = env.durable_object(COUNTER_BINDING).map_err(|_| {
        GatewayError::not_configured(
            ErrorCode::CounterUnbound,
            format!("exact limits are configured but no Durable Object namespace is bound as \"{COUNTER_BINDING}\""),
        )
    })?;
    let stub = namespace.get_by_name(scope).map_err(counter_error)?;
    let body = serde_json::to_string(&CountRequest { ops: ops.to_vec() }).map_err(counter_error)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(JsValue::from_str(&body)));
    let request = Request::new_with_init("https://counter.internal/count", &init).map_err(counter_error)?;
    let mut response = stub.fetch_with_request(request).await.map_err(counter_error)?;
    if response.status_code() != 200 {
        let text = response.text().await.unwrap_or_default();
        return Err(counter_error(format!(
            "HTTP {}: {}",
            response.status_code(),
            text.chars().take(200).collect::<String>()
        )));
    }
    let reply: CounterReply = response.json().await.map_err(counter_error)?;
    if reply.values.len() != ops.len() {
        return Err(counter_error("the counter answered the wrong number of values"));
    }
    Ok(reply)
}

fn counter_error(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::internal(ErrorCode::CounterError, format!("the exact rate-limit counter failed: {e}"))
}

/// One per scope (`idFromName(scope)`).
#[durable_object(fetch)]
pub struct GatewayCounter {
    state: State,
    counters: RefCell<HashMap<String, Stored>>,
}

impl DurableObject for GatewayCounter {
    fn new(state: State, _env: Env) -> Self {
        GatewayCounter { state, counters: RefCell::default() }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let request: CountRequest = match req.json().await {
            Ok(r) => r,
            Err(e) => return Response::error(format!("bad counter request: {e}"), 400),
        };
        let now = worker::Date::now().as_millis();
        let storage = self.state.storage();

        // Forget counters whose window ended (memory and storage).
        let expired: Vec<String> = self
            .counters
            .borrow()
            .iter()
            .filter(|(_, s)| s.expires_at_ms <= now)
            .map(|(name, _)| name.clone())
            .collect();
        if !expired.is_empty() {
            self.counters.borrow_mut().retain(|_, s| s.expires_at_ms > now);
            storage.delete_multiple(expired).await?;
        }

        // Load what memory does not have yet. A concurrent call may load the same counter
        // meanwhile; memory wins (it is never behind storage: every change goes through it).
        for op in &request.ops {
            if self.counters.borrow().contains_key(&op.name) {
                continue;
            }
            let stored: Stored = storage.get(&op.name).await?.unwrap_or_default();
            let stored =
                if stored.expires_at_ms != 0 && stored.expires_at_ms <= now { Stored::default() } else { stored };
            self.counters.borrow_mut().entry(op.name.clone()).or_insert(stored);
        }

        // Check and add: synchronous, so calls cannot interleave here.
        let (reply, changed) = {
            let mut counters = self.counters.borrow_mut();
            let mut current: Vec<Amounts> =
                request.ops.iter().map(|op| counters.get(&op.name).map(|s| s.value).unwrap_or_default()).collect();
            let reply = apply_ops(&mut current, &request.ops);
            let mut changed = Vec::new();
            if reply.admitted {
                for (op, value) in request.ops.iter().zip(&reply.values) {
                    let entry = counters.entry(op.name.clone()).or_default();
                    entry.value = *value;
                    entry.expires_at_ms = entry.expires_at_ms.max(op.expires_at_ms);
                    if !op.add.is_zero() {
                        changed.push((op.name.clone(), *entry));
                    }
                }
            }
            (reply, changed)
        };
        for (name, stored) in changed {
            storage.put(&name, stored).await?;
        }
        Response::from_json(&reply)
    }
}
