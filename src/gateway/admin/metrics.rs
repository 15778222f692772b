//! `GET /admin/metrics`: Prometheus text exposition (format 0.0.4) of today's request tallies
//! (`features::telemetry::tally`, summed over every isolate's shard), and
//! `GET /admin/usage/series`: the same tallies per day, for the console's charts.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gateway_requests_total` | counter | `endpoint`, `tenant`, `status` |
//! | `gateway_errors_total` | counter | `endpoint`, `tenant`, `status`, `code` |
//! | `gateway_tokens_total` | counter | `endpoint`, `tenant`, `type` (`input`/`output`) |
//! | `gateway_cost_usd_total` | counter | `endpoint`, `tenant` |
//! | `gateway_cache_hits_total` | counter | `endpoint`, `tenant` |
//! | `gateway_request_duration_seconds` | summary (`_sum`, `_count`) | `endpoint`, `tenant` |
//! | `gateway_tally_window_start_seconds` | gauge | |
//!
//! The counters cover the current UTC day and restart from 0 at 00:00 UTC (Prometheus's
//! `rate()`/`increase()` treat that as a counter reset). `endpoint=""` is a request that named
//! no known endpoint; `tenant=""` a caller that was not identified.

use std::fmt::{Display, Write};

use http::StatusCode;
use serde_json::{json, Value};

use crate::gateway::admin::answer::{query_value, Handled, RawBody};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::ledger;
use crate::gateway::features::telemetry::tally::{self, Counts, SeriesKey};
use crate::gateway::features::usage::nusd_to_usd;
use crate::gateway::ports::Ports;
use crate::gateway::util::time::{day_string, days_of, parse_day, DAY_MS};

/// The tallies of `from..=to`, the requests still in the ledger (Spin) folded in first.
async fn tallies<P: Ports>(ports: &P, from: i64, to: i64) -> Result<tally::Tallies> {
    let folded = ledger::fold_pending(ports).await?;
    let mut tallies = tally::query(ports, from, to).await?;
    tallies.partial |= !folded;
    Ok(tallies)
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn prometheus<P: Ports>(ports: &P) -> Result<RawBody> {
    let today = days_of(ports.now_ms());
    let tallies = tallies(ports, today, today).await?;
    let series = tallies.days.into_iter().next().map(|(_, series)| series).unwrap_or_default();
    let mut text = exposition(&series, today);
    if tallies.partial {
        text.insert_str(
            0,
            "# partial: a backlog of tally shards is being compacted; these sums miss some (scrape again)\n",
        );
    }
    Ok(RawBody { content_type: CONTENT_TYPE, bytes: text.into_bytes(), headers: &[] })
}

/// The entry for `key` in a small list of sums (kept in first-seen order).
fn sum<K: PartialEq, V: Default>(list: &mut Vec<(K, V)>, key: K) -> &mut V {
    let i = list.iter().position(|(k, _)| *k == key).unwrap_or_else(|| {
        list.push((key, V::default()));
        list.len() - 1
    });
    &mut list[i].1
}

/// The exposition text of one day's series (sorted by key, so the output is too).
pub fn exposition(series: &[(SeriesKey, Counts)], day: i64) -> String {
    let mut requests: Vec<((&str, &str, u16), u64)> = Vec::new();
    let mut per: Vec<((&str, &str), Counts)> = Vec::new();
    for (key, counts) in series {
        let (endpoint, tenant) = (key.endpoint.as_str(), key.tenant.as_str());
        *sum(&mut requests, (endpoint, tenant, key.status)) += counts.requests;
        sum(&mut per, (endpoint, tenant)).add(counts);
    }

    let mut out = String::with_capacity(256 + series.len() * 160);
    head(
        &mut out,
        "gateway_requests_total",
        "counter",
        "Requests answered today (UTC), by endpoint, tenant and status.",
    );
    for ((e, t, s), n) in &requests {
        line(&mut out, "gateway_requests_total", &[("endpoint", e), ("tenant", t), ("status", &s.to_string())], n);
    }
    head(
        &mut out,
        "gateway_errors_total",
        "counter",
        "Error answers today (UTC), by endpoint, tenant, status and error code.",
    );
    for (key, counts) in series.iter().filter(|(k, _)| k.status >= 400) {
        let code = if key.code.is_empty() { "unknown" } else { key.code.as_str() };
        let status = key.status.to_string();
        let labels =
            [("endpoint", key.endpoint.as_str()), ("tenant", &key.tenant), ("status", &status), ("code", code)];
        line(&mut out, "gateway_errors_total", &labels, counts.requests);
    }
    head(
        &mut out,
        "gateway_tokens_total",
        "counter",
        "Tokens today (UTC), by endpoint, tenant and type (input/output).",
    );
    for ((e, t), c) in &per {
        line(&mut out, "gateway_tokens_total", &[("endpoint", e), ("tenant", t), ("type", "input")], c.prompt_tokens);
        line(
            &mut out,
            "gateway_tokens_total",
            &[("endpoint", e), ("tenant", t), ("type", "output")],
            c.completion_tokens,
        );
    }
    head(&mut out, "gateway_cost_usd_total", "counter", "Cost in USD today (UTC) at the config's prices.");
    for ((e, t), c) in &per {
        line(&mut out, "gateway_cost_usd_total", &[("endpoint", e), ("tenant", t)], nusd_to_usd(c.cost_nusd));
    }
    head(&mut out, "gateway_cache_hits_total", "counter", "Answers served from the cache today (UTC).");
    for ((e, t), c) in &per {
        line(&mut out, "gateway_cache_hits_total", &[("endpoint", e), ("tenant", t)], c.cache_hits);
    }
    head(&mut out, "gateway_request_duration_seconds", "summary", "Time to the response head, today (UTC).");
    for ((e, t), c) in &per {
        let labels = [("endpoint", *e), ("tenant", *t)];
        line(&mut out, "gateway_request_duration_seconds_sum", &labels, c.latency_ms as f64 / 1000.0);
        line(&mut out, "gateway_request_duration_seconds_count", &labels, c.requests);
    }
    head(&mut out, "gateway_tally_window_start_seconds", "gauge", "Start of the counters' window (00:00 UTC today).");
    line(&mut out, "gateway_tally_window_start_seconds", &[], (day.max(0) as u64) * DAY_MS / 1000);
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for ch in v.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// `GET /admin/usage/series?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: today).
pub(super) async fn series<P: Ports>(ports: &P, query: &[(String, String)]) -> Handled {
    let today = days_of(ports.now_ms());
    let day = |name: &str| -> Result<i64> {
        match query_value(query, name) {
            None => Ok(today),
            Some(s) => parse_day(s).ok_or_else(|| {
                GatewayError::bad_request(ErrorCode::InvalidDate, format!("`{name}` must be a date YYYY-MM-DD (UTC)"))
            }),
        }
    };
    let (from, to) = (day("from")?, day("to")?);
    let tallies = tallies(ports, from, to).await?;
    let days: Vec<Value> = (tallies.days)
        .iter()
        .map(|(day, series)| {
            let series: Vec<Value> = series
                .iter()
                .map(|(k, c)| {
                    json!({
                        "endpoint": k.endpoint, "tenant": k.tenant, "status": k.status,
                        "code": (!k.code.is_empty()).then_some(k.code.as_str()),
                        "requests": c.requests, "prompt_tokens": c.prompt_tokens,
                        "completion_tokens": c.completion_tokens, "cost_usd": nusd_to_usd(c.cost_nusd),
                        "cache_hits": c.cache_hits, "latency_ms": c.latency_ms,
                    })
                })
                .collect();
            json!({"date": day_string(*day), "series": series})
        })
        .collect();
    let mut answer = json!({"from": day_string(from), "to": day_string(to), "days": days});
    if tallies.partial {
        answer["partial"] = json!(true);
    }
    Ok((StatusCode::OK, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_sums_by_labels_and_escapes() {
        let mut series = Vec::new();
        let key = |e: &str, t: &str, s: u16, c: &str| SeriesKey {
            endpoint: e.into(),
            tenant: t.into(),
            status: s,
            code: c.into(),
        };
        let counts = |n, p, c, cost| Counts {
            requests: n,
            prompt_tokens: p,
            completion_tokens: c,
            cost_nusd: cost,
            cache_hits: 1,
            latency_ms: 250 * n,
        };
        series.push((key("chat", "acme", 200, ""), counts(3, 30, 12, 1_500)));
        series.push((key("chat", "acme", 429, "rate_limit_exceeded"), counts(2, 0, 0, 0)));
        series.push((key("", "", 401, "invalid_api_key"), counts(1, 0, 0, 0)));
        series.push((key("x", "we\"ird\\", 502, ""), counts(1, 0, 0, 0)));
        let text = exposition(&series, 20_000);
        for expected in [
            "# TYPE gateway_requests_total counter",
            "gateway_requests_total{endpoint=\"chat\",tenant=\"acme\",status=\"200\"} 3",
            "gateway_requests_total{endpoint=\"chat\",tenant=\"acme\",status=\"429\"} 2",
            "gateway_errors_total{endpoint=\"chat\",tenant=\"acme\",status=\"429\",code=\"rate_limit_exceeded\"} 2",
            "gateway_errors_total{endpoint=\"\",tenant=\"\",status=\"401\",code=\"invalid_api_key\"} 1",
            "gateway_errors_total{endpoint=\"x\",tenant=\"we\\\"ird\\\\\",status=\"502\",code=\"unknown\"} 1",
            "gateway_tokens_total{endpoint=\"chat\",tenant=\"acme\",type=\"input\"} 30",
            "gateway_tokens_total{endpoint=\"chat\",tenant=\"acme\",type=\"output\"} 12",
            "gateway_cost_usd_total{endpoint=\"chat\",tenant=\"acme\"} 0.0000015",
            "gateway_cache_hits_total{endpoint=\"chat\",tenant=\"acme\"} 2",
            "gateway_request_duration_seconds_sum{endpoint=\"chat\",tenant=\"acme\"} 1.25",
            "gateway_request_duration_seconds_count{endpoint=\"chat\",tenant=\"acme\"} 5",
            "gateway_tally_window_start_seconds 1728000000",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
        }
        assert!(text.ends_with('\n'));
    }
}
