//! Exact counting over a key-value store with compare-and-swap (Spin: wasi:keyvalue's
//! `atomics`, served over the same stores as Spin's key-value interface).
//!
//! All the counters of one scope (a key id, `tenant:<name>` or `public`) are one entry,
//! `ctr:<scope>`: counter name → its value and the end of its window. A request's counters of
//! a scope are checked and added with [`apply_ops`] on the entry as read, and written back with
//! one compare-and-swap; a swap that lost a race to another instance is retried on the value
//! that won; a refusal writes nothing; an entry that does not decode is an error, never a
//! reset count. So concurrent requests, each in its own instance, admit exactly the limit, with no
//! lock and no timing assumption.

use std::collections::BTreeMap;

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::counter::{apply_ops, Amounts, CounterOp, CounterReply};
use crate::gateway::ports::lock::TTL_GRACE_SECS;

pub const SCOPE_ENTRY_PREFIX: &str = "ctr:";

/// Swaps one entry may lose in a row before the request gets a 503 to retry: each loss means
/// another request's counters went in, so this bounds the wait under a burst on one scope.
pub const CAS_ATTEMPTS: usize = 64;

/// Compare-and-swap on one entry, as a host's store offers it.
pub trait CasStore {
    /// What a swap needs to know what was read.
    type Handle;
    /// The entry `key` as it is now (`None`: absent), and the handle to swap it with.
    fn read(&self, key: &str) -> Result<(Self::Handle, Option<Vec<u8>>)>;
    /// Writes `value` if the entry is still as `handle` read it: `Ok(false)` when it changed.
    fn swap(&self, handle: Self::Handle, value: &[u8]) -> Result<bool>;
    /// The entry `key`, read with no swap to follow.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
}

/// A scope entry: counter name → (value, the end of its window in unix ms).
type ScopeEntry = BTreeMap<String, (Amounts, u64)>;

/// Applies `ops` to the counters of `scope` in `store` atomically (see the module docs).
///
/// A counter the scope entry does not hold yet starts from the entry of its own name, if any:
/// the layout before scope entries (one entry per counter; Spin before 7857eb3), so an upgrade
/// does not give a window's requests or a day's budget back.
pub fn cas_count(store: &impl CasStore, scope: &str, ops: &[CounterOp], now_ms: u64) -> Result<CounterReply> {
    let key = [SCOPE_ENTRY_PREFIX, scope].concat();
    // Counters of the layout before, read at most once however often the swap is retried.
    let mut before: BTreeMap<&str, Amounts> = BTreeMap::new();
    for _ in 0..CAS_ATTEMPTS {
        let (handle, stored) = store.read(&key)?;
        let mut entry: ScopeEntry = match stored {
            None => ScopeEntry::new(),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                GatewayError::internal(ErrorCode::CounterError, "a stored rate-limit counter is unreadable")
            })?,
        };
        let mut current = Vec::with_capacity(ops.len());
        for op in ops {
            current.push(match (entry.get(&op.name), before.get(op.name.as_str())) {
                (Some((value, _)), _) => *value,
                (None, Some(value)) => *value,
                (None, None) => {
                    let value = Amounts::from_stored(store.get(&op.name)?.as_deref());
                    *before.entry(&op.name).or_insert(value)
                }
            });
        }
        let reply = apply_ops(&mut current, ops);
        if !reply.admitted {
            return Ok(reply);
        }
        // Windows that ended over a minute ago are not counted again: drop them as we write.
        let grace_ms = TTL_GRACE_SECS * 1000;
        entry.retain(|_, (_, ends)| ends.saturating_add(grace_ms) > now_ms);
        for (op, value) in ops.iter().zip(current) {
            entry.insert(op.name.clone(), (value, op.expires_at_ms));
        }
        let bytes = serde_json::to_vec(&entry).map_err(|_| {
            GatewayError::internal(ErrorCode::CounterError, "a rate-limit counter could not be encoded")
        })?;
        if store.swap(handle, &bytes)? {
            return Ok(reply);
        }
    }
    Err(busy("the rate-limit counter"))
}

/// Writes `value` to `key` if `replace` accepts the entry as it is now (`None`: absent):
/// `Ok(false)` when it does not. A swap lost to another writer is decided again on the value
/// that won.
pub fn swap_if(
    store: &impl CasStore,
    key: &str,
    value: &[u8],
    replace: impl Fn(Option<&[u8]>) -> bool,
) -> Result<bool> {
    for _ in 0..CAS_ATTEMPTS {
        let (handle, current) = store.read(key)?;
        if !replace(current.as_deref()) {
            return Ok(false);
        }
        if store.swap(handle, value)? {
            return Ok(true);
        }
    }
    Err(busy("an entry of the key-value store"))
}

fn busy(what: &str) -> GatewayError {
    GatewayError::not_configured(ErrorCode::CounterBusy, format!("{what} is contended; retry shortly"))
        .with_retry_after(1)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;
    use crate::gateway::ports::counter::Caps;

    /// Another instance's write.
    type Write = Box<dyn Fn(&Store)>;

    /// A store with versioned entries; `interfere` writes between a read and its swap, as
    /// another instance would.
    #[derive(Default)]
    struct Store {
        entries: RefCell<HashMap<String, (u64, Vec<u8>)>>,
        interfere: RefCell<Vec<Write>>,
        swaps_lost: Cell<usize>,
        plain_reads: Cell<usize>,
    }

    impl CasStore for Store {
        type Handle = (String, u64);

        fn read(&self, key: &str) -> Result<((String, u64), Option<Vec<u8>>)> {
            let (version, value) = self.entries.borrow().get(key).cloned().map_or((0, None), |(n, v)| (n, Some(v)));
            let next = self.interfere.borrow_mut().pop();
            if let Some(write) = next {
                write(self);
            }
            Ok(((key.to_string(), version), value))
        }

        fn swap(&self, (key, version): (String, u64), value: &[u8]) -> Result<bool> {
            let mut entries = self.entries.borrow_mut();
            let now = entries.get(&key).map_or(0, |(n, _)| *n);
            if now != version {
                self.swaps_lost.set(self.swaps_lost.get() + 1);
                return Ok(false);
            }
            entries.insert(key, (version + 1, value.to_vec()));
            Ok(true)
        }

        fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.plain_reads.set(self.plain_reads.get() + 1);
            Ok(self.entries.borrow().get(key).map(|(_, v)| v.clone()))
        }
    }

    fn request(name: &str, rpm: u64, ends: u64) -> CounterOp {
        CounterOp {
            name: name.into(),
            add: Amounts { requests: 1, ..Amounts::default() },
            caps: Caps { requests: Some(rpm), ..Caps::default() },
            expires_at_ms: ends,
            floor: None,
        }
    }

    #[test]
    fn a_swap_that_lost_a_race_is_retried_on_the_winners_count() {
        let store = Store::default();
        let op = request("rl:k_1:m1", 2, 60_000);
        // Another instance admits a request between our read and our swap.
        let other = op.clone();
        store.interfere.borrow_mut().push(Box::new(move |s: &Store| {
            assert!(cas_count(s, "k_1", std::slice::from_ref(&other), 1_000).unwrap().admitted);
        }));
        let ours = cas_count(&store, "k_1", std::slice::from_ref(&op), 1_000).unwrap();
        assert!(ours.admitted);
        assert_eq!(ours.values[0].requests, 2, "counted on top of the other instance's request");
        assert_eq!(store.swaps_lost.get(), 1);
        // The limit is 2: a third request is refused, and a refusal writes nothing.
        let third = cas_count(&store, "k_1", &[op], 1_000).unwrap();
        assert!(!third.admitted);
        assert_eq!(third.values[0].requests, 2);
        assert_eq!(store.entries.borrow()["ctr:k_1"].0, 2, "two writes");
    }

    #[test]
    fn the_ops_of_a_scope_go_in_together_and_ended_windows_are_dropped() {
        let store = Store::default();
        let old = request("rl:k_1:m1", 10, 60_000);
        assert!(cas_count(&store, "k_1", &[old], 1_000).unwrap().admitted);
        // A minute and more after the first window ended: a new minute and a day budget.
        let minute = request("rl:k_1:m3", 1, 180_000);
        let budget = CounterOp {
            name: "bud:k_1:d0".into(),
            add: Amounts { cost_nusd: 500, ..Amounts::default() },
            caps: Caps { cost_nusd: Some(1_000), ..Caps::default() },
            expires_at_ms: 86_400_000,
            floor: None,
        };
        let ops = [minute.clone(), budget.clone()];
        assert!(cas_count(&store, "k_1", &ops, 121_000).unwrap().admitted);
        let entry: ScopeEntry = serde_json::from_slice(&store.entries.borrow()["ctr:k_1"].1).unwrap();
        assert_eq!(entry.keys().collect::<Vec<_>>(), ["bud:k_1:d0", "rl:k_1:m3"]);
        // The minute is full: neither op goes in, the budget's 500 stays unspent.
        let refused = cas_count(&store, "k_1", &ops, 122_000).unwrap();
        assert!(!refused.admitted);
        assert_eq!(refused.values[1].cost_nusd, 500);
    }

    /// Every read is raced: another instance writes the entry before each swap.
    struct Racing(Store);

    impl CasStore for Racing {
        type Handle = (String, u64);

        fn read(&self, key: &str) -> Result<((String, u64), Option<Vec<u8>>)> {
            let read = self.0.read(key)?;
            let mut entries = self.0.entries.borrow_mut();
            let (version, value) = entries.get(key).cloned().unwrap_or((0, b"{}".to_vec()));
            entries.insert(key.to_string(), (version + 1, value));
            Ok(read)
        }

        fn swap(&self, handle: (String, u64), value: &[u8]) -> Result<bool> {
            self.0.swap(handle, value)
        }

        fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.0.get(key)
        }
    }

    #[test]
    fn a_scope_contended_past_the_attempts_is_a_503_and_garbage_is_an_error() {
        let op = request("rl:k_1:m1", 1_000, 60_000);
        let racing = Racing(Store::default());
        // A counter of the layout before is read once, not once per lost swap.
        racing.0.entries.borrow_mut().insert("rl:k_1:m1".into(), (1, br#"{"requests":3}"#.to_vec()));
        let e = cas_count(&racing, "k_1", std::slice::from_ref(&op), 1_000).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (503, ErrorCode::CounterBusy));
        assert_eq!(racing.0.swaps_lost.get(), CAS_ATTEMPTS);
        assert_eq!(racing.0.plain_reads.get(), 1);

        let garbage = Store::default();
        garbage.entries.borrow_mut().insert("ctr:k_1".into(), (1, b"not json".to_vec()));
        let e = cas_count(&garbage, "k_1", &[op], 1_000).unwrap_err();
        assert_eq!(e.code, ErrorCode::CounterError);
    }

    #[test]
    fn a_counter_of_the_layout_before_starts_where_it_was() {
        let store = Store::default();
        let before = Amounts { requests: 2, cost_nusd: 900, ..Amounts::default() };
        store.entries.borrow_mut().insert("rl:k_1:m1".into(), (1, serde_json::to_vec(&before).unwrap()));
        // rpm 3: one more request fits, then the window is full.
        assert!(cas_count(&store, "k_1", &[request("rl:k_1:m1", 3, 60_000)], 1_000).unwrap().admitted);
        let full = cas_count(&store, "k_1", &[request("rl:k_1:m1", 3, 60_000)], 1_000).unwrap();
        assert!(!full.admitted);
        assert_eq!((full.values[0].requests, full.values[0].cost_nusd), (3, 900));
    }
}
