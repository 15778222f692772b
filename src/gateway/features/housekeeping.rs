//! Housekeeping for hosts whose key-value store has no TTL (Spin's key-value interface has
//! none, and its `list` reads every key of the store): expired rate-limit counters are
//! deleted, requests' ledger entries (one per request there, `features::ledger`) are folded
//! into usage and tally shards, finished shards are compacted into one entry per day, and
//! stale cache entries and verified-token entries (`features::identity`) are dropped. Each run
//! does a bounded amount of work; the pipeline runs it after a response now and then
//! (`pipeline::account`).

use std::collections::BTreeMap;

use crate::gateway::error::Result;
use crate::gateway::features::cache;
use crate::gateway::features::identity::{vouch_expired, VOUCHED_PREFIX};
use crate::gateway::features::ledger::{self, LEDGER_PREFIX};
use crate::gateway::features::limits::window_end;
use crate::gateway::features::telemetry::tally::{self, TALLY_PREFIX};
use crate::gateway::features::usage::{compact_day, COMPACTED, MAX_KV_READS, USAGE_PREFIX};
use crate::gateway::ports::counter::Counter;
use crate::gateway::ports::lock::{Locking, TTL_GRACE_SECS};
use crate::gateway::ports::{Clock, Kv};
use crate::gateway::util::time::parse_day;

/// A run of the sweeper on a stateless host happens after about one response in this many.
pub const SWEEP_ONE_IN: u8 = 32;

/// What one run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub counters: usize,
    pub shards: usize,
    pub cache_entries: usize,
    /// Verified-token entries past their minute.
    pub vouches: usize,
    /// Ledger entries folded into shards.
    pub entries: usize,
}

/// The shards of one day to fold now, taken from `budget`: none while fewer than two are
/// loose (not yet the compacted entry) or the budget is spent.
fn to_fold<'s>(shards: &'s [String], budget: &mut usize) -> Option<&'s [String]> {
    let loose = shards.iter().filter(|s| !s.ends_with(COMPACTED)).count();
    if loose < 2 || *budget == 0 {
        return None;
    }
    let take = shards.len().min(*budget);
    *budget -= take;
    Some(&shards[..take])
}

/// Reads the entries under `prefix` (one unit of `budget` each) and deletes those `stale` says
/// are; how many it deleted.
async fn drop_stale<P: Kv>(
    ports: &P,
    names: &[String],
    prefix: &str,
    budget: &mut usize,
    stale: impl Fn(&[u8]) -> bool,
) -> Result<usize> {
    let mut dropped = 0;
    for name in names.iter().filter(|n| n.starts_with(prefix)) {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        if ports.get(name).await?.is_some_and(|entry| stale(&entry)) {
            ports.delete(name).await?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// One bounded run: at most `MAX_KV_READS` deletes of counters, shards folded, and reads of
/// token and cache entries.
/// Only for hosts where every request is a fresh instance (usage shards are final once
/// written; see `usage::compact_day`).
pub async fn sweep<P: Kv + Clock + Counter>(ports: &P) -> Result<Swept> {
    let now = ports.now_ms();
    let names = ports.list("").await?;
    let mut budget = MAX_KV_READS;
    let mut swept = Swept::default();
    // Requests' ledger entries first: into shards, which the next run compacts.
    let entries: Vec<String> = names.iter().filter(|n| n.starts_with(LEDGER_PREFIX)).take(budget).cloned().collect();
    if !entries.is_empty() {
        budget -= entries.len();
        swept.entries = ledger::fold(ports, &entries, Locking::IfFree).await?.unwrap_or(0);
    }
    for name in names.iter().filter(|n| n.starts_with("rl:")) {
        if budget == 0 {
            break;
        }
        if window_end(name).is_some_and(|end| end.saturating_add(TTL_GRACE_SECS * 1000) <= now) {
            ports.delete(name).await?;
            budget -= 1;
            swept.counters += 1;
        }
    }
    // usage:<subject>:<date>:<shard>, the subject possibly holding ':' (tenant:<name>).
    let mut days: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for name in names.iter().filter(|n| n.starts_with(USAGE_PREFIX)) {
        let mut parts = name.rsplitn(3, ':');
        let (Some(_shard), Some(date), Some(subject)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Some(day) = parse_day(date) else { continue };
        days.entry((format!("{subject}:"), day)).or_default().push(name.clone());
    }
    for ((prefix, day), shards) in days {
        if let Some(fold) = to_fold(&shards, &mut budget) {
            if compact_day(ports, &prefix, day, fold, Locking::IfFree).await?.is_some() {
                swept.shards += fold.len();
            }
        }
    }
    let tallies: Vec<String> = names.iter().filter(|n| n.starts_with(TALLY_PREFIX)).cloned().collect();
    for (day, shards) in tally::shards_by_day(&tallies) {
        if let Some(fold) = to_fold(&shards, &mut budget) {
            if tally::compact_day(ports, day, fold, Locking::IfFree).await?.is_some() {
                swept.shards += fold.len();
            }
        }
    }
    // Token entries before cache entries: each lives a minute, so nearly every one read here
    // is deleted, where a fresh cache entry is read again by every run until it goes stale.
    swept.vouches = drop_stale(ports, &names, VOUCHED_PREFIX, &mut budget, |entry| vouch_expired(entry, now)).await?;
    swept.cache_entries = drop_stale(ports, &names, "cache:", &mut budget, |entry| {
        cache::Entry::decode(entry).is_none_or(|e| !e.fresh(now))
    })
    .await?;
    Ok(swept)
}
