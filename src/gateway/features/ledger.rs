//! One KV write per request where every request is a fresh instance (Spin).
//!
//! Where an isolate lives on (Cloudflare), its usage and tally books keep running totals and
//! write each of their shards now and then (`features::usage`, `telemetry::tally`). On Spin
//! every request is a new instance, so each book would write a shard for that one request —
//! the key's usage, the tenant's usage, the tally: three writes, each read and deleted again
//! by the sweep that compacts them. There a request writes one ledger entry instead,
//! `ledger:<yyyy-mm-dd>:<16 hex digits>`: the shards it would have written, each as the line
//! of its name without the shard id (`usage:<key id>:<date>`, `usage:tenant:<tenant>:<date>`,
//! `metrics:<date>`) and the line of its value in the shard's own form. [`fold`] sums a batch
//! of entries into one shard per name (under a new shard id; the usual compaction folds those
//! further) and deletes the entries, under one KV lock. The housekeeping sweep folds in its
//! turn, and the admin API folds before it reads usage or tallies, so those count every
//! request. (A crash between a fold's writes and its deletes counts those entries twice, as a
//! compaction's would: usage reports and metrics read these, limits do not.)

use std::collections::BTreeMap;

use crate::gateway::error::Result;
use crate::gateway::features::telemetry::tally::{self, Counts, SeriesKey, TALLY_PREFIX};
use crate::gateway::features::usage::{DayUsage, Subject, UsageEvent, KEEP_SECS, MAX_KV_READS, USAGE_PREFIX};
use crate::gateway::ports::lock::{locked, Locking};
use crate::gateway::ports::{Clock, Counter, Kv};
use crate::gateway::util::map::FastMap;
use crate::gateway::util::time::{day_string, days_of};

pub const LEDGER_PREFIX: &str = "ledger:";
/// The lock every fold takes: two folds of one entry would count it twice.
const FOLD_SCOPE: &str = "ledger-fold";

/// One request's tally series and the day it counts on.
pub struct TallyLine {
    pub day: i64,
    pub key: SeriesKey,
    pub counts: Counts,
}

/// Writes the request's one entry: its usage event (an admitted request) and its tally series
/// (a model call or an error answer), whichever it has.
pub async fn write<P: Kv + Clock>(ports: &P, usage: Option<&UsageEvent>, tally: Option<&TallyLine>) -> Result<()> {
    let Some(date) = usage.map(|u| days_of(u.ts_ms)).or(tally.map(|t| t.day)).map(day_string) else { return Ok(()) };
    let mut entry = Vec::with_capacity(512);
    // No name holds a newline: key ids are `k_`/`j_` and hex digits, tenants letters, digits
    // and `_-.` (`limits::valid_tenant`); values are JSON, which escapes control characters.
    let mut line = |name: &[&str], value: &[u8]| {
        name.iter().for_each(|part| entry.extend_from_slice(part.as_bytes()));
        entry.push(b'\n');
        entry.extend_from_slice(value);
        entry.push(b'\n');
    };
    if let Some(event) = usage {
        let delta = event.delta().to_json();
        line(&[&Subject::Key(event.key_id.as_deref().unwrap_or("public")).prefix(), &date], &delta);
        if let Some(tenant) = &event.tenant {
            line(&[&Subject::Tenant(tenant).prefix(), &date], &delta);
        }
    }
    if let Some(t) = tally {
        line(&[TALLY_PREFIX, &day_string(t.day)], &tally::stored_json(std::iter::once((&t.key, &t.counts))));
    }
    ports.put(&[LEDGER_PREFIX, &date, ":", &ports.random_id()].concat(), &entry, Some(KEEP_SECS)).await
}

/// The sums of a batch of entries, by shard name (without its shard id).
#[derive(Default)]
struct Sums {
    usage: BTreeMap<String, DayUsage>,
    tallies: BTreeMap<String, FastMap<SeriesKey, Counts>>,
}

impl Sums {
    /// Adds an entry's lines (name, value; a line that does not read as one of ours is skipped).
    fn add(&mut self, entry: &[u8]) {
        let mut lines = entry.split(|b| *b == b'\n');
        while let (Some(name), Some(value)) = (lines.next(), lines.next()) {
            let Ok(name) = std::str::from_utf8(name) else { continue };
            if name.starts_with(USAGE_PREFIX) {
                if let Ok(delta) = serde_json::from_slice::<DayUsage>(value) {
                    self.usage.entry(name.to_string()).or_default().add(&delta);
                }
            } else if name.starts_with(TALLY_PREFIX) {
                tally::add_stored(self.tallies.entry(name.to_string()).or_default(), value);
            }
        }
    }
}

/// Folds the ledger entries `names` into usage and tally shards and deletes them, under the
/// fold lock; the number folded, or `None` when the lock was held and `locking` says not to
/// wait. Entries are read under the lock: one another fold took is gone. An entry that does
/// not read as one is deleted too (it can never be counted).
pub async fn fold<P: Kv + Clock + Counter>(ports: &P, names: &[String], locking: Locking) -> Result<Option<usize>> {
    locked(ports, FOLD_SCOPE, locking, || async {
        let mut sums = Sums::default();
        let mut folded = Vec::new();
        for name in names {
            if let Some(entry) = ports.get(name).await? {
                sums.add(&entry);
                folded.push(name);
            }
        }
        if folded.is_empty() {
            return Ok(0);
        }
        let shard = ports.random_id();
        for (name, total) in &sums.usage {
            ports.put(&[name, ":", &shard].concat(), &total.to_json(), Some(KEEP_SECS)).await?;
        }
        // At most MAX_KV_READS entries a fold: fewer series than a shard may hold.
        for (name, series) in &sums.tallies {
            ports.put(&[name, ":", &shard].concat(), &tally::stored_json(series.iter()), Some(KEEP_SECS)).await?;
        }
        for name in &folded {
            ports.delete(name).await?;
        }
        Ok(folded.len())
    })
    .await
}

/// Folds what the ledger holds, waiting for the lock, before usage or tallies are read (the
/// admin API, on a host that keeps no state): true when every entry was folded, false when
/// more were left than one call may read (at most `MAX_KV_READS`; call again).
pub async fn fold_pending<P: Kv + Clock + Counter>(ports: &P) -> Result<bool> {
    if ports.keeps_state() {
        return Ok(true);
    }
    let names = ports.list(LEDGER_PREFIX).await?;
    if names.is_empty() {
        return Ok(true);
    }
    let take = names.len().min(MAX_KV_READS);
    fold(ports, &names[..take], Locking::Wait).await?;
    Ok(take == names.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::features::usage::query;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::UpstreamError;
    use crate::gateway::types::Usage;

    fn host() -> MemoryHost {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        host.stateless.set(true);
        host
    }

    fn event(key: Option<&str>, tenant: Option<&str>, ts_ms: u64, prompt: u64) -> UsageEvent {
        UsageEvent {
            key_id: key.map(str::to_string),
            tenant: tenant.map(str::to_string),
            ts_ms,
            usage: Usage { prompt_tokens: prompt, completion_tokens: 2 },
            cost_nusd: Some(7),
            cache_hit: false,
            latency_ms: 5,
            status: 200,
        }
    }

    fn line(day: i64, endpoint: &str, status: u16) -> TallyLine {
        TallyLine {
            day,
            key: SeriesKey { endpoint: endpoint.into(), tenant: "t\"1".into(), status, code: String::new() },
            counts: Counts { requests: 1, prompt_tokens: 3, latency_ms: 5, ..Counts::default() },
        }
    }

    fn names(host: &MemoryHost, prefix: &str) -> Vec<String> {
        host.kv.borrow().keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    /// A request writes one entry; folded, entries become one shard per subject and day and one
    /// tally shard per day, and the queries sum exactly what the requests added.
    #[test]
    fn entries_fold_into_the_shards_the_queries_read() {
        let host = host();
        let now = host.now_ms();
        let today = days_of(now);
        let yesterday = now - 86_400_000;
        for (key, tenant, ts, prompt) in
            [(Some("k1"), Some("t\"1"), now, 10), (Some("k1"), Some("t\"1"), now, 20), (None, None, yesterday, 40)]
        {
            let tally = line(days_of(ts), "chat", 200);
            block_on(write(&host, Some(&event(key, tenant, ts, prompt)), Some(&tally))).unwrap();
        }
        block_on(write(&host, None, Some(&line(today, "", 404)))).unwrap();
        block_on(write(&host, None, None)).unwrap();
        assert_eq!(names(&host, LEDGER_PREFIX).len(), 4, "one entry a request that counts, none otherwise");
        assert_eq!(names(&host, "usage:").len() + names(&host, TALLY_PREFIX).len(), 0);

        assert!(block_on(fold_pending(&host)).unwrap());
        assert!(names(&host, LEDGER_PREFIX).is_empty());
        let mut usage_shards = names(&host, "usage:");
        usage_shards.iter_mut().for_each(|n| n.truncate(n.rfind(':').unwrap()));
        usage_shards.sort();
        let date = |day: i64| day_string(day);
        assert_eq!(
            usage_shards,
            [
                format!("usage:k1:{}", date(today)),
                format!("usage:public:{}", date(today - 1)),
                format!("usage:tenant:t\"1:{}", date(today)),
            ]
        );
        assert_eq!(names(&host, TALLY_PREFIX).len(), 2, "one a day");

        let k1 = block_on(query(&host, Subject::Key("k1"), today - 1, today)).unwrap();
        assert_eq!((k1["total"]["requests"].as_u64(), k1["total"]["prompt_tokens"].as_u64()), (Some(2), Some(30)));
        assert_eq!(k1["total"]["completion_tokens"], 4);
        let tenant = block_on(query(&host, Subject::Tenant("t\"1"), today - 1, today)).unwrap();
        assert_eq!(tenant["total"], k1["total"]);
        let public = block_on(query(&host, Subject::Key("public"), today - 1, today)).unwrap();
        assert_eq!(public["days"][0]["date"], date(today - 1));
        assert_eq!(public["total"]["prompt_tokens"], 40);
        let tallies = block_on(tally::query(&host, today - 1, today)).unwrap();
        let series: Vec<(i64, u16, u64)> = tallies
            .days
            .iter()
            .flat_map(|(day, series)| series.iter().map(|(k, c)| (*day, k.status, c.requests)))
            .collect();
        assert_eq!(series, [(today - 1, 200, 1), (today, 404, 1), (today, 200, 2)], "sorted by endpoint");
    }

    /// A fold that finds the lock held skips (the sweep) or waits (the admin API); an entry
    /// another fold already took counts once; a broken entry is dropped, not read forever.
    #[test]
    fn a_fold_counts_each_entry_once() {
        let host = host();
        let now = host.now_ms();
        for _ in 0..3 {
            block_on(write(&host, Some(&event(Some("k"), None, now, 1)), None)).unwrap();
        }
        host.kv.borrow_mut().insert(format!("{LEDGER_PREFIX}broken"), b"usage:k:2026\n{\"requests\":".to_vec());
        let entries = names(&host, LEDGER_PREFIX);
        let other = crate::gateway::ports::lock::LockValue { id: "other".into(), at: now };
        host.kv.borrow_mut().insert(format!("lock:{FOLD_SCOPE}"), serde_json::to_vec(&other).unwrap());
        assert_eq!(block_on(fold(&host, &entries, Locking::IfFree)).unwrap(), None, "held: skipped");
        assert_eq!(names(&host, LEDGER_PREFIX).len(), 4);
        host.kv.borrow_mut().remove(&format!("lock:{FOLD_SCOPE}"));
        assert_eq!(block_on(fold(&host, &entries[..2], Locking::Wait)).unwrap(), Some(2));
        assert_eq!(block_on(fold(&host, &entries, Locking::Wait)).unwrap(), Some(2), "the rest only");
        assert!(names(&host, LEDGER_PREFIX).is_empty());
        let k = block_on(query(&host, Subject::Key("k"), days_of(now), days_of(now))).unwrap();
        assert_eq!(k["total"]["requests"], 3, "{k}");
    }

    /// Past one call's reads, `fold_pending` folds what it may and says there is more; a host
    /// that keeps state has no ledger and folds nothing.
    #[test]
    fn a_backlog_folds_over_several_calls() {
        let host = host();
        let now = host.now_ms();
        for _ in 0..MAX_KV_READS + 5 {
            block_on(write(&host, Some(&event(Some("k"), None, now, 1)), None)).unwrap();
        }
        assert!(!block_on(fold_pending(&host)).unwrap());
        assert_eq!(names(&host, LEDGER_PREFIX).len(), 5);
        assert!(block_on(fold_pending(&host)).unwrap());
        let k = block_on(query(&host, Subject::Key("k"), days_of(now), days_of(now))).unwrap();
        assert_eq!(k["total"]["requests"], MAX_KV_READS as u64 + 5);

        host.stateless.set(false);
        block_on(write(&host, Some(&event(Some("k"), None, now, 1)), None)).unwrap();
        assert!(block_on(fold_pending(&host)).unwrap());
        assert_eq!(names(&host, LEDGER_PREFIX).len(), 1, "not folded where state is kept");
    }
}
