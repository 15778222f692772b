//! Request tallies in KV by endpoint, tenant, status and error code, per UTC day: the source of
//! `GET /admin/metrics` (Prometheus) and of the console's usage charts. They complement the
//! per-key/per-tenant usage aggregates (`features::usage`), which have no endpoint or status.
//!
//! Written the same way, for the same reasons: each isolate (Spin: each instance) is the only
//! writer of its own shard `metrics:<yyyy-mm-dd>:<shard>` — one JSON entry holding all its
//! series of that day — and stores its whole running total with a blind `put` (no lost
//! update, a retried write never double-counts), at most once per `MIN_WRITE_GAP_MS`, one
//! write in flight; [`query`] sums the shards. Every model call and every error answer is
//! counted (health checks and listings that succeed are not). A shard keeps at most
//! `MAX_SERIES` series per day; more fold into `endpoint="_other", tenant="_other"`.
//! Caveats as for usage: Cloudflare's `list` is eventually consistent (a scrape may briefly
//! miss a new shard), and an isolate evicted before its write loses that last delta.
//!
//! As usage shards are, finished shards are folded into one entry per day
//! (`metrics:<yyyy-mm-dd>:compacted`, under a KV lock; [`compact_day`]): by [`query`] as it
//! reads (at most `MAX_KV_READS` shard reads per call) and on Spin by the housekeeping sweep.
//! There every request is a fresh instance: its series goes into the request's one ledger
//! entry (`features::ledger`), and folds of those entries write the shards.

use std::cell::RefCell;

use edge_scan::json::{write_str, write_u64};
use serde::Deserialize;

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::usage::{compactable, COMPACTED, MAX_KV_READS};
use crate::gateway::ports::lock::{self, Locking};
use crate::gateway::ports::{Clock, Counter, Kv, SAME_KEY_WRITE_GAP_MS};
use crate::gateway::util::map::FastMap;
use crate::gateway::util::order;
use crate::gateway::util::time::{day_string, days_of, parse_day};
use crate::gateway::wire::json::write_counters;

pub const TALLY_PREFIX: &str = "metrics:";
const KEEP_SECS: u64 = 400 * 86_400;
pub const MAX_SERIES: usize = 1_000;
const MIN_WRITE_GAP_MS: u64 = SAME_KEY_WRITE_GAP_MS;
pub const MAX_QUERY_DAYS: i64 = 92;
pub const OTHER: &str = "_other";

/// What a series is counted by.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// Empty when the request never reached an endpoint (unknown route or endpoint).
    pub endpoint: String,
    /// Empty when the caller was not identified; `public` for keyless calls to public endpoints.
    pub tenant: String,
    pub status: u16,
    /// The gateway's error code, empty on success.
    pub code: String,
}

/// What a series counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_nusd: u64,
    pub cache_hits: u64,
    /// Sum of latencies (ms), for averages.
    pub latency_ms: u64,
}

impl Counts {
    /// Saturating: token counts come from origins, which may report anything.
    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.cost_nusd = self.cost_nusd.saturating_add(other.cost_nusd);
        self.cache_hits = self.cache_hits.saturating_add(other.cache_hits);
        self.latency_ms = self.latency_ms.saturating_add(other.latency_ms);
    }
}

/// One series as stored: the key's and the counts' fields side by side.
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    code: String,
    #[serde(default)]
    counts: Counts,
}

impl Entry {
    fn key(self) -> (SeriesKey, Counts) {
        let Entry { endpoint, tenant, status, code, counts } = self;
        (SeriesKey { endpoint, tenant, status, code }, counts)
    }
}

#[derive(Deserialize, Default)]
struct Stored {
    series: Vec<Entry>,
}

/// The stored form of a shard, `{"series":[{"endpoint", "tenant", "status", "code", "counts"}]}`
/// (read back as [`Stored`]), written without serde's generic serializer (see
/// [`write_counters`]): a flush writes every series of the day.
pub fn stored_json<'a>(series: impl ExactSizeIterator<Item = (&'a SeriesKey, &'a Counts)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + series.len() * 224);
    out.extend_from_slice(b"{\"series\":[");
    for (i, (key, c)) in series.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"endpoint\":");
        write_str(&mut out, &key.endpoint);
        out.extend_from_slice(b",\"tenant\":");
        write_str(&mut out, &key.tenant);
        out.extend_from_slice(b",\"status\":");
        write_u64(&mut out, u64::from(key.status));
        out.extend_from_slice(b",\"code\":");
        write_str(&mut out, &key.code);
        out.extend_from_slice(b",\"counts\":");
        write_counters(
            &mut out,
            &[
                ("requests", c.requests),
                ("prompt_tokens", c.prompt_tokens),
                ("completion_tokens", c.completion_tokens),
                ("cost_nusd", c.cost_nusd),
                ("cache_hits", c.cache_hits),
                ("latency_ms", c.latency_ms),
            ],
        );
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

struct DayShard {
    series: FastMap<SeriesKey, Counts>,
    version: u64,
    written: u64,
    flushing: bool,
    written_at_ms: u64,
}

/// One isolate's tallies. Kept in the isolate state as `Rc<TallyBook>`.
#[derive(Default)]
pub struct TallyBook {
    shard_id: RefCell<Option<String>>,
    /// Today's shard and, around midnight, yesterday's (a list: there are one or two).
    days: RefCell<Vec<(i64, DayShard)>>,
}

impl TallyBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one request (synchronously); returns the day to flush.
    pub fn record(&self, clock: &impl Clock, ts_ms: u64, key: SeriesKey, counts: &Counts) -> i64 {
        self.shard_id.borrow_mut().get_or_insert_with(|| clock.random_id());
        let day = days_of(ts_ms);
        let mut days = self.days.borrow_mut();
        let i = days.iter().position(|(d, _)| *d == day).unwrap_or_else(|| {
            let shard =
                DayShard { series: FastMap::default(), version: 0, written: 0, flushing: false, written_at_ms: 0 };
            days.push((day, shard));
            days.len() - 1
        });
        let shard = &mut days[i].1;
        let key = if shard.series.len() >= MAX_SERIES && !shard.series.contains_key(&key) {
            SeriesKey { endpoint: OTHER.into(), tenant: OTHER.into(), ..key }
        } else {
            key
        };
        shard.series.entry(key).or_default().add(counts);
        shard.version += 1;
        day
    }

    /// Writes the day's shard if it changed (one write in flight per shard; increments that
    /// arrive meanwhile are written by the next round, after the gap).
    pub async fn flush(&self, kv: &(impl Kv + Clock), day: i64) -> Result<()> {
        let Some(shard_id) = self.shard_id.borrow().clone() else { return Ok(()) };
        let name = [TALLY_PREFIX, &day_string(day), ":", &shard_id].concat();
        {
            let mut days = self.days.borrow_mut();
            let Some(shard) = shard_of(&mut days, day) else { return Ok(()) };
            if shard.flushing {
                return Ok(());
            }
            shard.flushing = true;
        }
        let result = self.write_rounds(kv, day, &name).await;
        if let Some(shard) = shard_of(&mut self.days.borrow_mut(), day) {
            shard.flushing = false;
        }
        self.prune();
        result
    }

    async fn write_rounds(&self, kv: &(impl Kv + Clock), day: i64, name: &str) -> Result<()> {
        loop {
            let last = match shard_of(&mut self.days.borrow_mut(), day) {
                Some(s) if s.version != s.written => s.written_at_ms,
                _ => return Ok(()),
            };
            let wait = (last + MIN_WRITE_GAP_MS).saturating_sub(kv.now_ms());
            if last != 0 && wait > 0 {
                kv.sleep(wait).await;
            }
            let (bytes, version) = {
                let mut days = self.days.borrow_mut();
                let Some(s) = shard_of(&mut days, day) else { return Ok(()) };
                (stored_json(s.series.iter()), s.version)
            };
            kv.put(name, &bytes, Some(KEEP_SECS)).await?;
            if let Some(s) = shard_of(&mut self.days.borrow_mut(), day) {
                s.written = version;
                s.written_at_ms = kv.now_ms().max(1);
            }
        }
    }

    /// Forgets written days before yesterday (their totals are final in KV).
    fn prune(&self) {
        let mut days = self.days.borrow_mut();
        let Some(newest) = days.iter().map(|(d, _)| *d).max() else { return };
        days.retain(|(day, s)| s.flushing || s.version != s.written || day + 1 >= newest);
    }
}

fn shard_of(days: &mut [(i64, DayShard)], day: i64) -> Option<&mut DayShard> {
    days.iter_mut().find(|(d, _)| *d == day).map(|(_, s)| s)
}

/// One day's series, summed over every shard, sorted by key.
pub type Day = Vec<(SeriesKey, Counts)>;

/// The series of days `from..=to` (days without data left out), and whether they are partial.
pub struct Tallies {
    pub days: Vec<(i64, Day)>,
    /// More shards than one call may read: the sums miss the days not reached (call again:
    /// each call folds part of the backlog).
    pub partial: bool,
}

/// The sum of every shard per day for the UTC days `from..=to`. Bounded as usage queries are:
/// a list per day and at most `MAX_KV_READS` shard reads per call; days whose shards are final
/// are compacted into one entry as they are read.
pub async fn query<P: Kv + Clock + Counter>(ports: &P, from: i64, to: i64) -> Result<Tallies> {
    if to < from || to - from >= MAX_QUERY_DAYS {
        return Err(GatewayError::bad_request(
            ErrorCode::InvalidRange,
            format!("`from` must not be after `to`, and a query covers at most {MAX_QUERY_DAYS} days"),
        ));
    }
    let mut budget = MAX_KV_READS;
    let mut out = Tallies { days: Vec::new(), partial: false };
    for day in from..=to {
        // A list per day: all days' shards would be up to 400 days of them.
        let names = ports.list(&format!("{TALLY_PREFIX}{}:", day_string(day))).await?;
        if names.len() > budget {
            out.partial = true;
            if budget > 0 && compactable(ports, day) {
                let _ = compact_day(ports, day, &names[..budget], Locking::Wait).await;
            }
            break;
        }
        budget -= names.len();
        let compacted = match names.len() > 1 && compactable(ports, day) {
            true => compact_day(ports, day, &names, Locking::Wait).await.ok().flatten(),
            false => None,
        };
        let series = match compacted {
            Some(series) => series,
            None => {
                let mut series = FastMap::default();
                for name in &names {
                    if let Some(bytes) = ports.get(name).await? {
                        add_stored(&mut series, &bytes);
                    }
                }
                series
            }
        };
        if !series.is_empty() {
            let mut series: Day = series.into_iter().collect();
            order::sort_by(&mut series, |a, b| a.0.cmp(&b.0));
            out.days.push((day, series));
        }
    }
    Ok(out)
}

/// The shard names among `names` (`metrics:<date>:<shard>`) by day.
pub fn shards_by_day(names: &[String]) -> std::collections::BTreeMap<i64, Vec<String>> {
    let mut by_day = std::collections::BTreeMap::<i64, Vec<String>>::new();
    for name in names {
        let Some((date, _shard)) = name.strip_prefix(TALLY_PREFIX).and_then(|rest| rest.split_once(':')) else {
            continue;
        };
        if let Some(day) = parse_day(date) {
            by_day.entry(day).or_default().push(name.clone());
        }
    }
    by_day
}

/// Adds a stored shard's series to `series`; false when `bytes` is not one.
pub fn add_stored(series: &mut FastMap<SeriesKey, Counts>, bytes: &[u8]) -> bool {
    let Ok(stored) = serde_json::from_slice::<Stored>(bytes) else { return false };
    for (key, counts) in stored.series.into_iter().map(Entry::key) {
        series.entry(key).or_default().add(&counts);
    }
    true
}

/// Folds `names` (shards of `day`) into the day's compacted entry and deletes them, under a
/// KV lock, as `usage::compact_day` does; returns the day's series. Past the `MAX_SERIES`
/// with the most requests, series fold into `endpoint="_other", tenant="_other"` (as a
/// shard's do; kept apart by status and code).
pub async fn compact_day<P: Kv + Clock + Counter>(
    ports: &P,
    day: i64,
    names: &[String],
    locking: Locking,
) -> Result<Option<FastMap<SeriesKey, Counts>>> {
    let date = day_string(day);
    let scope = format!("tally-compact:{date}");
    lock::locked(ports, &scope, locking, || async {
        let compacted = format!("{TALLY_PREFIX}{date}:{COMPACTED}");
        let mut series = FastMap::default();
        if let Some(bytes) = ports.get(&compacted).await? {
            add_stored(&mut series, &bytes);
        }
        let mut folded = Vec::new();
        for name in names.iter().filter(|n| **n != compacted) {
            if let Some(bytes) = ports.get(name).await? {
                if add_stored(&mut series, &bytes) {
                    folded.push(name);
                }
            }
        }
        let series = capped(series);
        if !folded.is_empty() {
            ports.put(&compacted, &stored_json(series.iter()), Some(KEEP_SECS)).await?;
            for name in folded {
                ports.delete(name).await?;
            }
        }
        Ok(series)
    })
    .await
}

/// The `MAX_SERIES` series with the most requests, and the others folded into `_other`.
fn capped(series: FastMap<SeriesKey, Counts>) -> FastMap<SeriesKey, Counts> {
    if series.len() <= MAX_SERIES {
        return series;
    }
    let mut list: Vec<(SeriesKey, Counts)> = series.into_iter().collect();
    order::sort_by(&mut list, |a, b| b.1.requests.cmp(&a.1.requests).then_with(|| a.0.cmp(&b.0)));
    let mut out: FastMap<SeriesKey, Counts> = FastMap::default();
    for (i, (key, counts)) in list.into_iter().enumerate() {
        let key = match i < MAX_SERIES {
            true => key,
            false => SeriesKey { endpoint: OTHER.into(), tenant: OTHER.into(), ..key },
        };
        out.entry(key).or_default().add(&counts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::UpstreamError;

    fn key(endpoint: &str, tenant: &str, status: u16) -> SeriesKey {
        SeriesKey { endpoint: endpoint.into(), tenant: tenant.into(), status, code: String::new() }
    }

    fn one(prompt: u64) -> Counts {
        Counts { requests: 1, prompt_tokens: prompt, completion_tokens: 2, cost_nusd: 7, cache_hits: 0, latency_ms: 5 }
    }

    /// A shard written by hand reads back as written: every field, escaped names, the
    /// largest counts.
    #[test]
    fn a_stored_shard_reads_back() {
        let series: FastMap<SeriesKey, Counts> = [
            (key("chat", "acme", 200), one(3)),
            (SeriesKey { code: "rate_limit_exceeded".into(), ..key("a\"b\\c\n\u{1}é", "", 429) }, one(0)),
            (
                key("", "public", 502),
                Counts {
                    requests: u64::MAX,
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    cost_nusd: 3,
                    cache_hits: 4,
                    latency_ms: u64::MAX - 1,
                },
            ),
        ]
        .into_iter()
        .collect();
        let bytes = stored_json(series.iter());
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["series"].as_array().unwrap().len(), 3, "{value}");
        let mut read = FastMap::default();
        assert!(add_stored(&mut read, &bytes));
        assert_eq!(read, series);
        assert!(add_stored(&mut read, &stored_json(std::iter::empty())), "an empty shard");
        assert_eq!(read, series);
    }

    #[test]
    fn isolates_write_their_own_shards_and_queries_sum_them() {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let now = host.now_ms();
        let books = [TallyBook::new(), TallyBook::new()];
        for (i, book) in books.iter().enumerate() {
            for n in 0..3 {
                let day = book.record(&host, now, key("chat", "acme", 200), &one(n + i as u64));
                block_on(book.flush(&host, day)).unwrap();
            }
            book.record(&host, now, key("chat", "acme", 429), &one(0));
            block_on(book.flush(&host, days_of(now))).unwrap();
        }
        assert_eq!(host.kv.borrow().keys().filter(|k| k.starts_with(TALLY_PREFIX)).count(), 2);
        let day = days_of(now);
        let got = block_on(query(&host, day, day)).unwrap().days;
        assert_eq!(got[0].0, day);
        let find = |k: SeriesKey| got[0].1.iter().find(|(s, _)| *s == k).unwrap().1;
        assert_eq!(find(key("chat", "acme", 200)).requests, 6);
        assert_eq!(find(key("chat", "acme", 200)).prompt_tokens, 3 + 6);
        assert_eq!(find(key("chat", "acme", 429)).requests, 2);
        assert!(got[0].1.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert!(block_on(query(&host, day - 1, day - 1)).unwrap().days.is_empty());
        assert!(block_on(query(&host, day, day - 1)).is_err());
    }

    /// Compaction folds shards into one entry and keeps the counts; series past
    /// `MAX_SERIES` (the ones with the fewest requests) fold into `_other`.
    #[test]
    fn compaction_keeps_every_count_and_bounds_the_series() {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let day = days_of(host.now_ms()) - 5;
        let names: Vec<String> = (0..2)
            .map(|shard| {
                let series: FastMap<SeriesKey, Counts> = (0..MAX_SERIES)
                    .map(|i| (key(&format!("e{shard}-{i}"), "t", 200), one(1)))
                    .chain([(key("big", "t", 200), Counts { requests: 50, ..one(1) })])
                    .collect();
                let name = format!("{TALLY_PREFIX}{}:{shard:016x}", day_string(day));
                host.kv.borrow_mut().insert(name.clone(), stored_json(series.iter()));
                name
            })
            .collect();
        let series = block_on(compact_day(&host, day, &names, Locking::Wait)).unwrap().unwrap();
        assert_eq!(series.len(), MAX_SERIES + 1, "the kept series and one `_other` per status");
        assert_eq!(series[&key("big", "t", 200)].requests, 100, "the largest series are kept");
        let total: u64 = series.values().map(|c| c.requests).sum();
        assert_eq!(total, 2 * MAX_SERIES as u64 + 100, "nothing lost");
        let left: Vec<String> = host.kv.borrow().keys().filter(|k| k.starts_with(TALLY_PREFIX)).cloned().collect();
        assert_eq!(left, [format!("{TALLY_PREFIX}{}:{COMPACTED}", day_string(day))]);
        let read = block_on(query(&host, day, day)).unwrap();
        assert_eq!(read.days[0].1.iter().map(|(_, c)| c.requests).sum::<u64>(), total);
    }

    #[test]
    fn writes_wait_out_the_gap_and_series_are_bounded() {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let book = TallyBook::new();
        let now = host.now_ms();
        let day = book.record(&host, now, key("a", "t", 200), &one(1));
        block_on(book.flush(&host, day)).unwrap();
        let first = host.now_ms();
        for i in 0..(MAX_SERIES + 10) {
            book.record(&host, now, key(&format!("e{i}"), "t", 200), &one(1));
        }
        block_on(book.flush(&host, day)).unwrap();
        assert!(host.now_ms() >= first + MIN_WRITE_GAP_MS);
        let series = block_on(query(&host, day, day)).unwrap().days.remove(0).1;
        assert_eq!(series.len(), MAX_SERIES + 1, "the overflow folds into one series");
        assert_eq!(series.iter().find(|(k, _)| *k == key(OTHER, OTHER, 200)).unwrap().1.requests, 11);
        assert_eq!(series.iter().map(|(_, c)| c.requests).sum::<u64>(), MAX_SERIES as u64 + 11);
    }
}
