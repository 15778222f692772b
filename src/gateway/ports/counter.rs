//! The counter port: exact counters shared by every instance of the gateway (the `exact`
//! limits mode; see `features::limits`). Data and the one counting rule live here so that
//! hosts (a Cloudflare Durable Object) and the core apply the same rule.

use serde::{Deserialize, Serialize};

use crate::gateway::error::Result;

/// A counter's value: requests, tokens and nano-USD in one window.
///
/// Tokens and cost are reserved before a request is forwarded (its worst case) and settled
/// after it (the reservation released, the real usage added). Every field only ever grows, so
/// counters merge by taking the larger of two views (the `kv` mode relies on it) and a
/// retried write never double-counts: a release is a separate monotone field, and what counts
/// against a cap is [`Amounts::effective`] = charged and reserved − released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Amounts {
    pub requests: u64,
    pub tokens: u64,
    pub cost_nusd: u64,
    /// Token reservations released when their request settled.
    #[serde(skip_serializing_if = "is_zero")]
    pub released_tokens: u64,
    /// Cost reservations (nano-USD) released when their request settled.
    #[serde(skip_serializing_if = "is_zero")]
    pub released_nusd: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Amounts {
    /// A counter as stored in KV (`{requests, tokens, cost_nusd}`), or zero when absent or
    /// unreadable.
    pub fn from_stored(stored: Option<&[u8]>) -> Amounts {
        stored.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default()
    }

    pub fn plus(self, o: Amounts) -> Amounts {
        Amounts {
            requests: self.requests.saturating_add(o.requests),
            tokens: self.tokens.saturating_add(o.tokens),
            cost_nusd: self.cost_nusd.saturating_add(o.cost_nusd),
            released_tokens: self.released_tokens.saturating_add(o.released_tokens),
            released_nusd: self.released_nusd.saturating_add(o.released_nusd),
        }
    }

    pub fn max(self, o: Amounts) -> Amounts {
        Amounts {
            requests: self.requests.max(o.requests),
            tokens: self.tokens.max(o.tokens),
            cost_nusd: self.cost_nusd.max(o.cost_nusd),
            released_tokens: self.released_tokens.max(o.released_tokens),
            released_nusd: self.released_nusd.max(o.released_nusd),
        }
    }

    /// What counts against the caps: requests, and tokens and cost charged or reserved and not
    /// released.
    pub fn effective(self) -> Amounts {
        Amounts {
            requests: self.requests,
            tokens: self.tokens.saturating_sub(self.released_tokens),
            cost_nusd: self.cost_nusd.saturating_sub(self.released_nusd),
            released_tokens: 0,
            released_nusd: 0,
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
    /// A flexible reservation (a stream): when `add`'s tokens or cost do not fit under a cap,
    /// what does fit is granted instead, down to `floor` (below it the op is refused). `None`:
    /// all of `add` or nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<Amounts>,
}

/// The answer to a batch of [`CounterOp`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterReply {
    pub admitted: bool,
    /// Per op: the value after adding if admitted, else the current (unchanged) value.
    pub values: Vec<Amounts>,
    /// Per op, when admitted: what was added (`add`, or less for a flexible reservation).
    /// Empty from a counter that predates it: then all of `add` was added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted: Vec<Amounts>,
}

impl CounterReply {
    /// What op `i` added (see `granted`).
    pub fn granted(&self, i: usize, ops: &[CounterOp]) -> Amounts {
        self.granted.get(i).copied().or_else(|| ops.get(i).map(|op| op.add)).unwrap_or_default()
    }
}

/// What `op` may add to `current`, or `None` when it breaks its caps. A field with a cap L
/// admits `add` when `effective + max(add, 1) <= L` — i.e. a request is admitted while
/// `count < L`, and a token or cost reservation only if it fits entirely; a flexible op
/// (`floor`) is granted what fits instead, if that is at least its floor (and at least 1).
pub fn grant(current: Amounts, op: &CounterOp) -> Option<Amounts> {
    let current = current.effective();
    let (add, caps) = (op.add, op.caps);
    if caps.requests.is_some_and(|cap| current.requests.saturating_add(add.requests.max(1)) > cap) {
        return None;
    }
    let fit = |cur: u64, want: u64, floor: Option<u64>, cap: Option<u64>| -> Option<u64> {
        let Some(cap) = cap else { return Some(want) };
        let room = cap.saturating_sub(cur);
        if want.max(1) <= room {
            Some(want)
        } else {
            floor.filter(|f| room >= (*f).max(1)).map(|_| room)
        }
    };
    let floor = op.floor;
    let tokens = fit(current.tokens, add.tokens, floor.map(|f| f.tokens), caps.tokens)?;
    let cost_nusd = fit(current.cost_nusd, add.cost_nusd, floor.map(|f| f.cost_nusd), caps.cost_nusd)?;
    Some(Amounts { tokens, cost_nusd, ..add })
}

/// Whether `current` (+ `add`) breaks `caps` (see [`grant`], without flexibility).
pub fn violates(current: Amounts, add: Amounts, caps: Caps) -> bool {
    grant(current, &CounterOp { name: String::new(), add, caps, expires_at_ms: 0, floor: None }).is_none()
}

/// Applies `ops` to `current` (one value per op) all-or-nothing: if every op is granted (see
/// [`grant`]), every grant is added. The one rule every counter implementation uses (the
/// in-isolate limiter, the Durable Object, the compare-and-swap counter, tests).
pub fn apply_ops(current: &mut [Amounts], ops: &[CounterOp]) -> CounterReply {
    let grants: Option<Vec<Amounts>> = ops.iter().zip(current.iter()).map(|(op, cur)| grant(*cur, op)).collect();
    match grants {
        Some(granted) => {
            for (cur, add) in current.iter_mut().zip(&granted) {
                *cur = cur.plus(*add);
            }
            CounterReply { admitted: true, values: current.to_vec(), granted }
        }
        None => CounterReply { admitted: false, values: current.to_vec(), granted: Vec::new() },
    }
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

    /// Writes `value` to the KV entry `key` if `replace` accepts the entry as it is now
    /// (`None`: absent), with one atomic operation across all instances: `Ok(Some(written))`.
    /// `Ok(None)`: this host has no atomic write (the default); the caller falls back to plain
    /// KV (see `lock::try_acquire`).
    async fn swap_if(&self, key: &str, value: &[u8], replace: impl Fn(Option<&[u8]>) -> bool) -> Result<Option<bool>> {
        let _ = (key, value, replace);
        Ok(None)
    }
}
