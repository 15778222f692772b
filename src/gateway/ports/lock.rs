//! A lock entry in the key-value store, taken by compare-and-swap where the host has it and
//! with Fischer's algorithm elsewhere: the mutual exclusion of the usage and tally compactions
//! (`features::usage`, `features::telemetry::tally`). Also the KV counters' shared helpers.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::counter::{Amounts, Counter};
use crate::gateway::ports::{Clock, Kv};

/// Counters outlive their window by this much in KV (Cloudflare's minimum TTL is 60 s).
pub const TTL_GRACE_SECS: u64 = 60;

/// A counter stored in KV (`{requests, tokens, cost_nusd}`), or zero when absent or unreadable.
pub async fn read_amounts(kv: &impl Kv, name: &str) -> Result<Amounts> {
    Ok(Amounts::from_stored(kv.get(name).await?.as_deref()))
}

/// How long an [`acquire`] caller waits after writing the lock before reading it back.
pub const LOCK_SETTLE_MS: u64 = 50;

/// A lock older than this is treated as abandoned (its holder died).
pub const LOCK_LEASE_MS: u64 = 2_000;

/// A caller gives up (503) after waiting this long for the lock.
pub const LOCK_WAIT_MS: u64 = 10_000;

pub const LOCK_POLL_MS: u64 = 10;

#[derive(Serialize, Deserialize)]
pub struct LockValue {
    pub id: String,
    pub at: u64,
}

/// How a caller takes a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// Wait for it ([`acquire`]).
    Wait,
    /// Take it if it is free now, else skip the work: another caller is doing it (a
    /// housekeeping sweep never waits for another).
    IfFree,
}

/// Runs `work` holding `lock:<scope>` and releases it; `Ok(None)`: the lock was held and
/// `locking` is [`Locking::IfFree`], so `work` did not run.
pub async fn locked<P, T, F>(ports: &P, scope: &str, locking: Locking, work: impl FnOnce() -> F) -> Result<Option<T>>
where
    P: Kv + Clock + Counter,
    F: Future<Output = Result<T>>,
{
    let id = match locking {
        Locking::Wait => acquire(ports, scope).await?,
        Locking::IfFree => match try_acquire(ports, scope).await? {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    let result = work().await;
    release(ports, scope, &id).await;
    result.map(Some)
}

/// Takes the lock `lock:<scope>` — waiting while another holds it (failing with 503
/// `counter_busy` after 10 s) — and returns the holder id to [`release`] it with.
pub async fn acquire<P: Kv + Clock + Counter>(ports: &P, scope: &str) -> Result<String> {
    let started = ports.now_ms();
    loop {
        if ports.now_ms().saturating_sub(started) > LOCK_WAIT_MS {
            return Err(GatewayError::not_configured(
                ErrorCode::CounterBusy,
                "the rate-limit counter stayed locked; retry shortly",
            )
            .with_retry_after(1));
        }
        if let Some(id) = try_acquire(ports, scope).await? {
            return Ok(id);
        }
        ports.sleep(LOCK_POLL_MS).await;
    }
}

/// Takes the lock `lock:<scope>` if it is free (or older than its 2 s lease): `Ok(Some(id))`
/// to [`release`] it with, `Ok(None)` when another holds it.
///
/// On a host with an atomic write ([`Counter::swap_if`]: Spin's compare-and-swap) that is one
/// atomic operation. Otherwise, in a **linearizable** key-value store — one where a read sees
/// every write completed before it (Spin's SQLite or Redis stores on one node, the e2e test
/// host's files; *not* Cloudflare KV, which is eventually consistent) — Fischer's algorithm:
/// read the lock as free, write our random id, wait [`LOCK_SETTLE_MS`], read it back; if it
/// is still ours we hold it. What that guarantees, plainly: mutual exclusion *if* no caller
/// takes longer than `LOCK_SETTLE_MS` (50 ms) between reading the lock as free and its own
/// write completing — a timing assumption, not an atomic operation.
pub async fn try_acquire<P: Kv + Clock + Counter>(ports: &P, scope: &str) -> Result<Option<String>> {
    let lock = format!("lock:{scope}");
    let id = ports.random_id();
    let now = ports.now_ms();
    let mine = serde_json::to_vec(&LockValue { id: id.clone(), at: now }).unwrap_or_default();
    let free = |held: Option<&[u8]>| {
        held.and_then(|b| serde_json::from_slice::<LockValue>(b).ok())
            .is_none_or(|h| now.saturating_sub(h.at) >= LOCK_LEASE_MS)
    };
    if let Some(taken) = ports.swap_if(&lock, &mine, free).await? {
        return Ok(taken.then_some(id));
    }
    if !free(ports.get(&lock).await?.as_deref()) {
        return Ok(None);
    }
    ports.put(&lock, &mine, Some(TTL_GRACE_SECS)).await?;
    ports.sleep(LOCK_SETTLE_MS).await;
    let holder = ports.get(&lock).await?.and_then(|b| serde_json::from_slice::<LockValue>(&b).ok());
    Ok(holder.is_some_and(|h| h.id == id).then_some(id))
}

/// Releases `lock:<scope>`, unless our lease ran out and someone else holds it now.
pub async fn release<P: Kv>(ports: &P, scope: &str, id: &str) {
    let lock = format!("lock:{scope}");
    let holder = ports.get(&lock).await.ok().flatten().and_then(|b| serde_json::from_slice::<LockValue>(&b).ok());
    if holder.is_some_and(|h| h.id == id) {
        let _ = ports.delete(&lock).await;
    }
}
