//! A lock entry in a linearizable key-value store, taken with Fischer's algorithm: the
//! mutual exclusion of the usage and tally compactions (`features::usage`,
//! `features::telemetry::tally`). Also the KV counters' shared helpers.

use serde::{Deserialize, Serialize};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::counter::Amounts;
use crate::gateway::ports::Kv;

/// Counters outlive their window by this much in KV (Cloudflare's minimum TTL is 60 s).
pub const TTL_GRACE_SECS: u64 = 60;

/// A counter stored in KV (`{requests, tokens, cost_nusd}`), or zero when absent or unreadable.
pub async fn read_amounts(kv: &impl Kv, name: &str) -> Result<Amounts> {
    Ok(kv.get(name).await?.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default())
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

/// Takes the lock `lock:<scope>` in a **linearizable** key-value store — one where a read
/// sees every write completed before it (Spin's SQLite or Redis stores on one node, the e2e
/// test host's files; *not* Cloudflare KV, which is eventually consistent); returns the holder
/// id to [`release`] it with.
///
/// Fischer's algorithm: wait until the lock is free (or older than its 2 s lease), write our
/// random id, wait [`LOCK_SETTLE_MS`], read it back; if it is still ours we hold it. What it
/// guarantees, plainly: mutual exclusion *if* no caller takes longer than `LOCK_SETTLE_MS`
/// (50 ms) between reading the lock as free and its own write completing — a timing
/// assumption, not an atomic operation. Fails with 503 `counter_busy` after waiting 10 s.
pub async fn acquire<P: Kv + crate::gateway::ports::Clock>(ports: &P, scope: &str) -> Result<String> {
    let lock = format!("lock:{scope}");
    let mut id = [0u8; 8];
    ports.random_bytes(&mut id);
    let id = crate::gateway::util::text::hex(&id);
    let started = ports.now_ms();
    loop {
        let now = ports.now_ms();
        if now.saturating_sub(started) > LOCK_WAIT_MS {
            return Err(GatewayError::not_configured(
                ErrorCode::CounterBusy,
                "the rate-limit counter stayed locked; retry shortly",
            )
            .with_retry_after(1));
        }
        let holder = ports.get(&lock).await?.and_then(|b| serde_json::from_slice::<LockValue>(&b).ok());
        if holder.is_some_and(|h| ports.now_ms().saturating_sub(h.at) < LOCK_LEASE_MS) {
            ports.sleep(LOCK_POLL_MS).await;
            continue;
        }
        let mine = serde_json::to_vec(&LockValue { id: id.clone(), at: ports.now_ms() }).unwrap_or_default();
        ports.put(&lock, &mine, Some(TTL_GRACE_SECS)).await?;
        ports.sleep(LOCK_SETTLE_MS).await;
        let holder = ports.get(&lock).await?.and_then(|b| serde_json::from_slice::<LockValue>(&b).ok());
        if holder.is_some_and(|h| h.id == id) {
            return Ok(id);
        }
    }
}

/// Releases `lock:<scope>`, unless our lease ran out and someone else holds it now.
pub async fn release<P: Kv>(ports: &P, scope: &str, id: &str) {
    let lock = format!("lock:{scope}");
    let holder = ports.get(&lock).await.ok().flatten().and_then(|b| serde_json::from_slice::<LockValue>(&b).ok());
    if holder.is_some_and(|h| h.id == id) {
        let _ = ports.delete(&lock).await;
    }
}
