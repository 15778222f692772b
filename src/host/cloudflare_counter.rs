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
//! The class itself (`GatewayCounter` in `cloudflare/shim.mjs`) is a thin RPC shell: its
//! `count(request)` runs [`egw_count`] as a task of the same executor as requests, whose
//! commands are the object's storage calls (`StorageGet`/`Put`/`Delete`) and its `Reply`. The
//! in-memory counters live here, per object (numbered by the shim). `wrangler.toml`:
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
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::cloudflare::abi::{self, push_nul, split_nul, Cmd, Field, CODE_OK, CODE_UNBOUND};
use super::cloudflare::exec::{self, Shared};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::counter::{apply_ops, Amounts, CounterOp, CounterReply};

/// The Durable Object namespace binding in `wrangler.toml` (the shim reads `env.COUNTER`).
pub const COUNTER_BINDING: &str = "COUNTER";

#[derive(Serialize)]
struct CountRequestRef<'a> {
    ops: &'a [CounterOp],
}

#[derive(Deserialize)]
struct CountRequest {
    ops: Vec<CounterOp>,
}

/// What the object stores per counter (as JSON text).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Stored {
    value: Amounts,
    expires_at_ms: u64,
}

/// Asks the scope's Durable Object to apply `ops` (see `limits::Counter::count`). Fails closed:
/// exact limits were asked for, so a missing binding or an unreachable object is an error, not
/// a silent fallback to per-location counting.
pub(super) async fn count(shared: &Rc<Shared>, scope: &str, ops: &[CounterOp]) -> Result<CounterReply> {
    let body = serde_json::to_vec(&CountRequestRef { ops }).map_err(|_| counter_error())?;
    let out = shared.call(Cmd::Count, &[scope.into(), Field::Bytes(&body)]).await;
    match out.code {
        CODE_OK => {}
        CODE_UNBOUND => {
            return Err(GatewayError::not_configured(
                ErrorCode::CounterUnbound,
                format!(
                    "exact limits are configured but no Durable Object namespace is bound as \"{COUNTER_BINDING}\""
                ),
            ))
        }
        _ => return Err(counter_error()),
    }
    let reply: CounterReply = serde_json::from_slice(&out.data).map_err(|_| counter_error())?;
    if reply.values.len() != ops.len() {
        return Err(counter_error());
    }
    Ok(reply)
}

fn counter_error() -> GatewayError {
    GatewayError::internal(ErrorCode::CounterError, "the exact rate-limit counter failed")
}

type Counters = Rc<RefCell<HashMap<String, Stored>>>;

thread_local! {
    // Per object (the shim numbers them): its counters in memory.
    static OBJECTS: RefCell<HashMap<u32, Counters>> = RefCell::new(HashMap::new());
}

/// One `count(request)` call on object `object`, as task `task`: ends with a `Reply` (code 0
/// and the reply JSON, or code 1 and a message).
#[no_mangle]
pub extern "C" fn egw_count(task: u32, object: u32, ptr: usize, len: usize) -> usize {
    abi::begin();
    let body = abi::take(ptr, len);
    let counters = OBJECTS.with(|o| o.borrow_mut().entry(object).or_default().clone());
    exec::spawn(task, move |shared| async move {
        let (code, reply) = match apply(&shared, &counters, &body).await {
            Ok(reply) => (0u32, reply),
            Err(message) => (1, message.into_bytes()),
        };
        exec::notify(Cmd::Reply, &[code.into(), Field::Bytes(&reply)]);
    });
    abi::finish()
}

/// The object was collected: forget its counters (storage keeps them).
#[no_mangle]
pub extern "C" fn egw_object_drop(object: u32) {
    OBJECTS.with(|o| o.borrow_mut().remove(&object));
}

async fn storage(shared: &Rc<Shared>, kind: Cmd, payload: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let out = shared.call(kind, &[Field::Bytes(payload)]).await;
    if out.code == CODE_OK {
        Ok(out.data)
    } else {
        Err("the counter's storage failed".into())
    }
}

async fn apply(shared: &Rc<Shared>, counters: &Counters, body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let request: CountRequest = serde_json::from_slice(body).map_err(|e| format!("bad counter request: {e}"))?;
    let now = abi::now();

    // Forget counters whose window ended (memory and storage).
    let mut expired = Vec::new();
    counters.borrow_mut().retain(|name, s| {
        let keep = s.expires_at_ms > now;
        if !keep {
            push_nul(&mut expired, name.as_bytes());
        }
        keep
    });
    if !expired.is_empty() {
        storage(shared, Cmd::StorageDelete, &expired).await?;
    }

    // Load what memory does not have yet. A concurrent call may load the same counter
    // meanwhile; memory wins (it is never behind storage: every change goes through it).
    let mut missing: Vec<&str> = Vec::new();
    for op in &request.ops {
        if !counters.borrow().contains_key(&op.name) && !missing.contains(&op.name.as_str()) {
            missing.push(&op.name);
        }
    }
    if !missing.is_empty() {
        let mut names = Vec::new();
        for name in &missing {
            push_nul(&mut names, name.as_bytes());
        }
        let values = storage(shared, Cmd::StorageGet, &names).await?;
        let mut values = split_nul(&values);
        for name in missing {
            let value = values.next().unwrap_or_default();
            let stored: Stored = if value.is_empty() {
                Stored::default()
            } else {
                serde_json::from_slice(value).map_err(|_| format!("counter {name} is stored malformed"))?
            };
            let stored =
                if stored.expires_at_ms != 0 && stored.expires_at_ms <= now { Stored::default() } else { stored };
            counters.borrow_mut().entry(name.to_string()).or_insert(stored);
        }
    }

    // Check and add: synchronous, so calls cannot interleave here.
    let (reply, changed) = {
        let mut counters = counters.borrow_mut();
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
                    push_nul(&mut changed, op.name.as_bytes());
                    push_nul(&mut changed, &serde_json::to_vec(&*entry).map_err(|e| e.to_string())?);
                }
            }
        }
        (reply, changed)
    };
    if !changed.is_empty() {
        storage(shared, Cmd::StoragePut, &changed).await?;
    }
    serde_json::to_vec(&reply).map_err(|e| e.to_string())
}
