//! The counter port: exact counters shared by every instance of the gateway (the `exact`
//! limits mode; see `features::limits`). Data and the one counting rule live here so that
//! hosts (a Cloudflare Durable Object) and the core apply the same rule.

use serde::{Deserialize, Serialize};

use crate::gateway::error::Result;

/// A counter's value: requests, tokens and nano-USD in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Amounts {
    pub requests: u64,
    pub tokens: u64,
    pub cost_nusd: u64,
}

impl Amounts {
    pub fn plus(self, o: Amounts) -> Amounts {
        Amounts {
            requests: self.requests.saturating_add(o.requests),
            tokens: self.tokens.saturating_add(o.tokens),
            cost_nusd: self.cost_nusd.saturating_add(o.cost_nusd),
        }
    }

    pub fn max(self, o: Amounts) -> Amounts {
        Amounts {
            requests: self.requests.max(o.requests),
            tokens: self.tokens.max(o.tokens),
            cost_nusd: self.cost_nusd.max(o.cost_nusd),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Amounts::default()
    }
}

/// Limits on a counter's fields; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Caps {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub cost_nusd: Option<u64>,
}

/// One counter operation: check `caps` against the current value, then add `add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterOp {
    /// The counter, e.g. `rl:k_0123:m28333333`.
    pub name: String,
    #[serde(default)]
    pub add: Amounts,
    #[serde(default)]
    pub caps: Caps,
    /// When the window ends (unix ms); the counter may be dropped after that.
    pub expires_at_ms: u64,
}

/// The answer to a batch of [`CounterOp`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterReply {
    pub admitted: bool,
    /// Per op: the value after adding if admitted, else the current (unchanged) value.
    pub values: Vec<Amounts>,
}

/// Whether `current` (+ `add`) breaks `caps`: a field with a cap L breaks it when
/// `current + max(add, 1) > L` — i.e. a request is admitted while `count < L`, a token or USD
/// check (add 0) while `used < L`.
pub fn violates(current: Amounts, add: Amounts, caps: Caps) -> bool {
    let over = |cur: u64, add: u64, cap: Option<u64>| cap.is_some_and(|cap| cur.saturating_add(add.max(1)) > cap);
    over(current.requests, add.requests, caps.requests)
        || over(current.tokens, add.tokens, caps.tokens)
        || over(current.cost_nusd, add.cost_nusd, caps.cost_nusd)
}

/// Applies `ops` to `current` (one value per op) all-or-nothing: if no op violates its caps,
/// every op's `add` is added. The one rule every counter implementation uses (the in-isolate
/// limiter, the Durable Object, tests).
pub fn apply_ops(current: &mut [Amounts], ops: &[CounterOp]) -> CounterReply {
    let admitted = ops.iter().zip(current.iter()).all(|(op, cur)| !violates(*cur, op.add, op.caps));
    if admitted {
        for (cur, op) in current.iter_mut().zip(ops) {
            *cur = cur.plus(op.add);
        }
    }
    CounterReply { admitted, values: current.to_vec() }
}

/// Exact counters shared by every instance of the gateway (Cloudflare: a Durable Object per
/// `scope`).
#[allow(async_fn_in_trait)] // single-threaded wasm hosts, generic callers (see ports.rs)
pub trait Counter {
    /// Applies `ops` atomically (see [`apply_ops`]) to the counters of `scope` (a key id,
    /// `tenant:<name>` or `public`), consistently across all instances and locations.
    /// `Ok(None)`: this host has no exact counter; the core then counts in KV. The default.
    async fn count(&self, scope: &str, ops: &[CounterOp]) -> Result<Option<CounterReply>> {
        let _ = (scope, ops);
        Ok(None)
    }

    /// Whether this host's in-memory state outlives a request (Cloudflare: the isolate does;
    /// Spin: every request is a fresh instance). Without it, `kv`-mode request increments are
    /// written before the request is forwarded instead of after the response: nothing in
    /// memory would merge them, and a write that waits for the answer leaves every request
    /// in flight meanwhile uncounted.
    fn keeps_state(&self) -> bool {
        true
    }
}
