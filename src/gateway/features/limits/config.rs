//! The limits config: the top-level `limits:` (mode, tenant budgets) and an endpoint's MLflow
//! `limit: {calls, renewal_period}`, checked and typed once at load; fixed calendar windows.

use serde_json::Value;
use std::collections::HashMap;

use crate::gateway::check::Issues;
use crate::gateway::features::keys::BudgetPeriod;
use crate::gateway::util::time::{civil_from_days, day_string, days_from_civil, days_of, next_month_start, DAY_MS};

// ---------------------------------------------------------------------------------------------
// Config

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitsMode {
    #[default]
    Kv,
    Exact,
}

/// A tenant's budget (config `limits.tenants.<name>`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLimits {
    pub budget_usd: f64,
    pub budget_period: BudgetPeriod,
}

/// The config's top-level `limits` field:
/// `{"mode": "kv"|"exact", "tenants": {"acme": {"budget_usd": 100, "budget_period": "month"}}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    pub mode: LimitsMode,
    pub tenants: HashMap<String, TenantLimits>,
    /// Output tokens reserved for a request that sends no `max_tokens` (and whose endpoint sets
    /// no ceiling), when a token or USD limit applies.
    pub default_max_tokens: u64,
}

/// The default of `limits.default_max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { mode: LimitsMode::default(), tenants: HashMap::new(), default_max_tokens: DEFAULT_MAX_TOKENS }
    }
}

/// Checks the top-level `limits` field.
pub fn check_limits(path: &str, value: &Value, issues: &mut Issues) -> Option<LimitsConfig> {
    let Value::Object(map) = value else {
        issues.push(path, "must be an object: {mode, tenants}");
        return None;
    };
    let before = issues.0.len();
    let mut config = LimitsConfig::default();
    for (field, v) in map {
        let at = format!("{path}.{field}");
        match field.as_str() {
            "mode" => match v.as_str() {
                Some("kv") => config.mode = LimitsMode::Kv,
                Some("exact") => config.mode = LimitsMode::Exact,
                Some(other) => issues.unknown(at, "limits mode", other, &["kv", "exact"]),
                None => issues.push(at, "must be \"kv\" or \"exact\""),
            },
            "tenants" => {
                let Value::Object(tenants) = v else {
                    issues.push(at, "must be an object mapping tenant names to {budget_usd, budget_period}");
                    continue;
                };
                for (name, t) in tenants {
                    let at = format!("{at}.{name}");
                    if !valid_tenant(name) {
                        issues.push(&at, format!("a tenant name has {TENANT_RULE}"));
                    }
                    if let Some(limits) = check_tenant(&at, t, issues) {
                        config.tenants.insert(name.clone(), limits);
                    }
                }
            }
            "default_max_tokens" => match v.as_u64().filter(|n| (1..=10_000_000).contains(n)) {
                Some(n) => config.default_max_tokens = n,
                None => issues.push(at, "must be a whole number of tokens, 1 to 10000000"),
            },
            other => issues.unknown(at, "limits field", other, &["mode", "tenants", "default_max_tokens"]),
        }
    }
    (issues.0.len() == before).then_some(config)
}

fn check_tenant(path: &str, value: &Value, issues: &mut Issues) -> Option<TenantLimits> {
    let Value::Object(map) = value else {
        issues.push(path, "must be an object: {budget_usd, budget_period}");
        return None;
    };
    let mut budget = None;
    let mut period = BudgetPeriod::Month;
    let mut ok = true;
    for (field, v) in map {
        let at = format!("{path}.{field}");
        match field.as_str() {
            "budget_usd" => match v.as_f64().filter(|n| n.is_finite() && *n >= 0.0) {
                Some(n) => budget = Some(n),
                None => {
                    issues.push(at, "must be a number >= 0 (USD)");
                    ok = false;
                }
            },
            "budget_period" => match v.as_str().and_then(BudgetPeriod::parse) {
                Some(p) => period = p,
                None => {
                    issues.unknown(at, "budget period", v.as_str().unwrap_or("(not a string)"), &["day", "month"]);
                    ok = false;
                }
            },
            other => {
                issues.unknown(at, "tenant limits field", other, &["budget_usd", "budget_period"]);
                ok = false;
            }
        }
    }
    let Some(budget_usd) = budget else {
        if ok {
            issues.push(format!("{path}.budget_usd"), "is required");
        }
        return None;
    };
    ok.then_some(TenantLimits { budget_usd, budget_period: period })
}

/// The tenant of anonymous requests (public endpoints called without a key): their cached
/// answers live under it, so no real tenant may take the name.
pub const PUBLIC_TENANT: &str = "public";

/// What a tenant name may be, for messages.
pub const TENANT_RULE: &str = "letters, digits, '_', '-', '.'; 1-64 chars; \"public\" is reserved";

/// Tenant names: letters, digits, `_`, `-`, `.`; 1-64 chars (they appear in KV entry names);
/// not [`PUBLIC_TENANT`].
pub fn valid_tenant(name: &str) -> bool {
    valid_name(name) && name != PUBLIC_TENANT
}

/// Letters, digits, `_`, `-`, `.`; 1-64 chars.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// MLflow's `renewal_period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

impl Period {
    pub const ALL: [(&'static str, Period); 6] = [
        ("second", Period::Second),
        ("minute", Period::Minute),
        ("hour", Period::Hour),
        ("day", Period::Day),
        ("month", Period::Month),
        ("year", Period::Year),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, p)| *p == self).map_or("minute", |(s, _)| s)
    }

    /// The window containing `now_ms`: an id for counter names and its end.
    pub fn window(self, now_ms: u64) -> Window {
        let fixed =
            |len: u64, tag: &str| Window { id: format!("{tag}{}", now_ms / len), end_ms: (now_ms / len + 1) * len };
        let days = days_of(now_ms);
        let (y, m, _) = civil_from_days(days);
        let at = |days: i64| (days.max(0) as u64) * DAY_MS;
        match self {
            Period::Second => fixed(1_000, "s"),
            Period::Minute => fixed(60_000, "m"),
            Period::Hour => fixed(3_600_000, "h"),
            Period::Day => Window { id: day_string(days), end_ms: at(days + 1) },
            Period::Month => Window { id: format!("{y:04}-{m:02}"), end_ms: at(next_month_start(days)) },
            Period::Year => Window { id: format!("{y:04}"), end_ms: at(days_from_civil(y + 1, 1, 1)) },
        }
    }
}

/// When the window a counter name ends in (`rl:…:<window id>`, see [`Period::window`]) is
/// over, in unix ms; `None` when the name does not end in a window id.
pub fn window_end(counter: &str) -> Option<u64> {
    let id = counter.rsplit(':').next()?;
    let fixed = |rest: &str, len: u64| rest.parse::<u64>().ok().map(|n| n.saturating_add(1).saturating_mul(len));
    let at = |days: i64| (days.max(0) as u64).saturating_mul(DAY_MS);
    match id.as_bytes().first()? {
        b's' => fixed(&id[1..], 1_000),
        b'm' => fixed(&id[1..], 60_000),
        b'h' => fixed(&id[1..], 3_600_000),
        b'0'..=b'9' => match id.len() {
            10 => crate::gateway::util::time::parse_day(id).map(|d| at(d + 1)),
            7 => {
                let y: i64 = id.get(..4)?.parse().ok()?;
                let m: u32 = id.get(5..)?.parse().ok().filter(|m| (1..=12).contains(m))?;
                Some(at(next_month_start(days_from_civil(y, m, 1))))
            }
            4 => id.parse::<i64>().ok().map(|y| at(days_from_civil(y + 1, 1, 1))),
            _ => None,
        },
        _ => None,
    }
}

impl From<BudgetPeriod> for Period {
    fn from(p: BudgetPeriod) -> Period {
        match p {
            BudgetPeriod::Day => Period::Day,
            BudgetPeriod::Month => Period::Month,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub id: String,
    pub end_ms: u64,
}

/// An endpoint's MLflow `limit: {calls, renewal_period}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLimit {
    pub calls: u64,
    pub period: Period,
}

impl EndpointLimit {
    /// For a config that still keeps `limit` as a raw value: `None` if it is not valid.
    pub fn from_value(value: &Value) -> Option<EndpointLimit> {
        check_endpoint_limit("limit", value, &mut Issues::default())
    }
}

/// Checks an endpoint's `limit` (MLflow's shape; the optional `key` is accepted and ignored).
pub fn check_endpoint_limit(path: &str, value: &Value, issues: &mut Issues) -> Option<EndpointLimit> {
    let Value::Object(map) = value else {
        issues.push(path, "must be an object: {calls, renewal_period}");
        return None;
    };
    let before = issues.0.len();
    for field in map.keys() {
        if !["calls", "renewal_period", "key"].contains(&field.as_str()) {
            issues.unknown(format!("{path}.{field}"), "limit field", field, &["calls", "renewal_period", "key"]);
        }
    }
    let calls = match map.get("calls") {
        None => {
            issues.push(format!("{path}.calls"), "is required");
            None
        }
        Some(v) => v.as_u64().filter(|n| *n >= 1).or_else(|| {
            issues.push(format!("{path}.calls"), "must be a whole number >= 1");
            None
        }),
    };
    let names: Vec<&str> = Period::ALL.iter().map(|(s, _)| *s).collect();
    let period = match map.get("renewal_period") {
        None => {
            issues.push(format!("{path}.renewal_period"), format!("is required (one of: {})", names.join(", ")));
            None
        }
        Some(Value::String(s)) => {
            let found = Period::ALL.iter().find(|(n, _)| n == s).map(|(_, p)| *p);
            if found.is_none() {
                issues.unknown(format!("{path}.renewal_period"), "renewal period", s, &names);
            }
            found
        }
        Some(_) => {
            issues.push(format!("{path}.renewal_period"), format!("must be one of: {}", names.join(", ")));
            None
        }
    };
    if issues.0.len() != before {
        return None;
    }
    Some(EndpointLimit { calls: calls?, period: period? })
}
