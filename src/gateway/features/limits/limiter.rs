//! The per-isolate view of `kv`-mode counters: admission checks and increments happen in
//! memory with no await between them; increments are written to KV after the response,
//! merged, one writer per counter, at most one write per counter per `gap_ms` (Cloudflare KV
//! refuses a second write to one key within a second).

use std::cell::RefCell;

use crate::gateway::error::Result;
use crate::gateway::ports::counter::Amounts;
use crate::gateway::ports::{Clock, Kv};
use crate::gateway::util::map::FastMap;

/// How often an isolate re-reads a counter from KV to see other isolates' counts.
pub const REFRESH_MS: u64 = 1_000;

/// Counters kept in memory per isolate; expired ones are dropped first.
pub(super) const MAX_ENTRIES: usize = 10_000;

use crate::gateway::ports::lock::{read_amounts, TTL_GRACE_SECS};

// ---------------------------------------------------------------------------------------------
// The per-isolate limiter (kv mode)

#[derive(Default)]
struct Entry {
    /// Best known persisted count (max of what KV returned and what this isolate wrote).
    seen: Amounts,
    /// Admitted here, not yet being written.
    pending: Amounts,
    /// Being written right now.
    inflight: Amounts,
    loaded_at: Option<u64>,
    expires_at_ms: u64,
    /// A write is in flight (its result will update `seen`).
    flushing: bool,
    /// A flush owns this counter: waiting out the gap since the last write, or writing.
    /// Other flushes leave their increments to it.
    writer: bool,
    /// When this isolate last wrote the counter (0: never).
    written_at_ms: u64,
    /// Bumped when a write starts and ends, so a read that overlapped a write is not applied.
    epoch: u64,
}

impl Entry {
    pub(super) fn estimate(&self) -> Amounts {
        self.seen.plus(self.inflight).plus(self.pending)
    }
}

/// Per-isolate counter state for the `kv` mode. Kept in `Gateway` as `Rc<Limiter>`.
#[derive(Default)]
pub struct Limiter {
    entries: RefCell<FastMap<String, Entry>>,
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Re-reads a counter from KV when this isolate has not seen it for `REFRESH_MS`.
    pub(super) async fn refresh(&self, kv: &impl Kv, name: &str, expires_at_ms: u64, now: u64) -> Result<()> {
        let epoch = {
            let entries = self.entries.borrow();
            match entries.get(name) {
                Some(e) if e.flushing => return Ok(()), // the write in flight will update `seen`
                Some(e) if e.loaded_at.is_some_and(|at| now.saturating_sub(at) < REFRESH_MS) => return Ok(()),
                Some(e) => e.epoch,
                None => 0,
            }
        };
        let stored = read_amounts(kv, name).await?;
        let mut entries = self.entries.borrow_mut();
        let entry = entries.entry(name.to_string()).or_default();
        entry.expires_at_ms = entry.expires_at_ms.max(expires_at_ms);
        if !entry.flushing && entry.epoch == epoch {
            entry.seen = entry.seen.max(stored);
            entry.loaded_at = Some(now);
        }
        Ok(())
    }

    pub(super) fn estimate(&self, name: &str) -> Amounts {
        self.entries.borrow().get(name).map(Entry::estimate).unwrap_or_default()
    }

    pub(super) fn add_pending(&self, name: &str, amounts: Amounts, expires_at_ms: u64) {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.entry(name.to_string()).or_default();
        entry.pending = entry.pending.plus(amounts);
        entry.expires_at_ms = entry.expires_at_ms.max(expires_at_ms);
    }

    /// Writes the pending increments of the named counters to KV: per counter, one writer per
    /// isolate, which waits until `gap_ms` have passed since its last write (so a burst of
    /// requests shares one write) and writes everything admitted meanwhile in its next round.
    pub async fn flush(&self, kv: &(impl Kv + Clock), names: &[String], gap_ms: u64) -> Result<()> {
        let mut result = Ok(());
        for name in names {
            if let Err(e) = self.flush_one(kv, name, gap_ms).await {
                result = Err(e);
            }
        }
        result
    }

    pub(super) async fn flush_one(&self, kv: &(impl Kv + Clock), name: &str, gap_ms: u64) -> Result<()> {
        {
            let mut entries = self.entries.borrow_mut();
            let Some(entry) = entries.get_mut(name) else { return Ok(()) };
            if entry.writer || entry.pending.is_zero() {
                return Ok(());
            }
            entry.writer = true;
        }
        let result = self.write_rounds(kv, name, gap_ms).await;
        if let Some(entry) = self.entries.borrow_mut().get_mut(name) {
            entry.writer = false;
        }
        result
    }

    /// The writer's rounds: wait out the gap, write what is pending, until nothing is.
    async fn write_rounds(&self, kv: &(impl Kv + Clock), name: &str, gap_ms: u64) -> Result<()> {
        loop {
            let (last, pending) =
                self.entries.borrow().get(name).map_or((0, false), |e| (e.written_at_ms, !e.pending.is_zero()));
            if !pending {
                return Ok(());
            }
            let wait = (last + gap_ms).saturating_sub(kv.now_ms());
            if last != 0 && wait > 0 {
                kv.sleep(wait).await; // increments admitted meanwhile join this write
            }
            let (inflight, expires_at_ms) = {
                let mut entries = self.entries.borrow_mut();
                let Some(entry) = entries.get_mut(name) else { return Ok(()) };
                if entry.pending.is_zero() {
                    return Ok(());
                }
                entry.flushing = true;
                entry.epoch += 1;
                entry.inflight = std::mem::take(&mut entry.pending);
                (entry.inflight, entry.expires_at_ms)
            };
            let written = self.write(kv, name, inflight, expires_at_ms, kv.now_ms()).await;
            let mut entries = self.entries.borrow_mut();
            let Some(entry) = entries.get_mut(name) else { return written.map(|_| ()) };
            entry.flushing = false;
            entry.epoch += 1;
            entry.inflight = Amounts::default();
            match written {
                Ok(new) => {
                    entry.seen = entry.seen.plus(inflight).max(new);
                    entry.written_at_ms = kv.now_ms().max(1);
                }
                Err(e) => {
                    entry.pending = entry.pending.plus(inflight); // the next flush retries
                    return Err(e);
                }
            }
        }
    }

    pub(super) async fn write(
        &self,
        kv: &impl Kv,
        name: &str,
        inflight: Amounts,
        expires_at_ms: u64,
        now: u64,
    ) -> Result<Amounts> {
        let stored = read_amounts(kv, name).await?;
        let seen = self.entries.borrow().get(name).map(|e| e.seen).unwrap_or_default();
        // Never write less than this isolate already knew (KV reads can be stale).
        let new = stored.max(seen).plus(inflight);
        let ttl = expires_at_ms.saturating_sub(now) / 1000 + TTL_GRACE_SECS;
        let bytes = serde_json::to_vec(&new).unwrap_or_default();
        kv.put(name, &bytes, Some(ttl)).await?;
        Ok(new)
    }

    /// Drops counters whose window ended and that have nothing left to write.
    pub(super) fn prune(&self, now: u64) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() < 64 {
            return;
        }
        let busy = |e: &Entry| e.writer || !e.pending.is_zero();
        entries.retain(|_, e| e.expires_at_ms > now || busy(e));
        if entries.len() >= MAX_ENTRIES {
            // Still full of live counters: forget the clean ones (they are re-read from KV).
            entries.retain(|_, e| busy(e));
        }
    }

    /// Counters held in memory (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
