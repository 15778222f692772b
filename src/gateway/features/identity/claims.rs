//! From a verified token's claims to the policy an API key has: a [`KeyRecord`] that limits,
//! budgets, usage and the cache treat exactly like a key's. Its id is `j_` + 16 hex digits of
//! SHA-256(issuer, subject): stable for one subject of one issuer, so counters and grants
//! follow the person (or service) across tokens; it cannot be turned back into the subject.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::gateway::features::identity::config::{valid_pattern, Issuer};
use crate::gateway::features::identity::jwt::{Refusal, Validity};
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::features::limits::valid_tenant;
use crate::gateway::util::text::{hex, truncate};

/// Prefix of principal ids derived from JWT subjects (keys' ids start with `k_`).
pub const PRINCIPAL_PREFIX: &str = "j_";
/// Endpoint names taken from one token, at most.
const MAX_CLAIMED_ENDPOINTS: usize = 64;

/// The stable id of `subject` at `issuer`.
pub fn principal_id(issuer: &str, subject: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(issuer.as_bytes());
    hasher.update([0]);
    hasher.update(subject.as_bytes());
    format!("{PRINCIPAL_PREFIX}{}", &hex(&hasher.finalize())[..16])
}

/// Whether `id` has the shape of a principal id: a key's (`k_…`) or a subject's (`j_…`).
pub fn valid_principal_id(id: &str) -> bool {
    (id.starts_with("k_") || id.starts_with(PRINCIPAL_PREFIX))
        && id.len() > 2
        && id.len() <= 40
        && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A claim by name: the name as written first (URL-style names contain dots), then as a
/// dotted path into nested objects (`realm_access.roles`).
pub fn claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The values a claim holds: an array's strings (numbers and booleans as text), or a string
/// whole and split at whitespace (OAuth's space-separated `scope`).
fn values(claim: &Value) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match claim {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        Value::String(s) => std::iter::once(s.clone()).chain(s.split_whitespace().map(str::to_string)).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

/// The allow-list both `a` and `b` admit, as patterns (`*`, names, `prefix*`).
pub fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in a {
        for y in b {
            let both = match (x.strip_suffix('*'), y.strip_suffix('*')) {
                (Some(px), Some(py)) if px.starts_with(py) => Some(x),
                (Some(px), Some(py)) if py.starts_with(px) => Some(y),
                (Some(px), None) if y.starts_with(px) => Some(y),
                (None, Some(py)) if x.starts_with(py) => Some(x),
                (None, None) if x == y => Some(x),
                _ => None,
            };
            if let Some(pattern) = both.filter(|p| !out.contains(p)) {
                out.push(pattern.clone());
            }
        }
    }
    out
}

/// The key-shaped record for a verified token of `issuer`: tenant, allow-list, limits,
/// budget and region from the issuer's policy, the first matching rule and the claims.
/// A configured tenant claim that is missing (without a fallback) or not a valid tenant
/// name is `Malformed`.
pub fn map_claims(
    issuer: &Issuer,
    claims: &Map<String, Value>,
    subject: &str,
    validity: &Validity,
) -> Result<KeyRecord, Refusal> {
    let tenant = match issuer.claims.tenant.as_deref().and_then(|name| claim(claims, name)) {
        Some(Value::String(t)) if valid_tenant(t) => t.clone(),
        Some(_) => return Err(Refusal::Malformed),
        None => issuer.policy.tenant.clone().ok_or(Refusal::Malformed)?,
    };
    let policy = &issuer.policy;
    let rule =
        issuer.rules.iter().find(|rule| claim(claims, &rule.claim).is_some_and(|v| values(v).contains(&rule.value)));
    let ceiling = rule.and_then(|r| r.endpoints.clone()).unwrap_or_else(|| policy.endpoints.clone());
    let endpoints = match &issuer.claims.endpoints {
        None => ceiling,
        Some(name) => {
            let prefix = issuer.claims.endpoint_prefix.as_str();
            let claimed: Vec<String> = claim(claims, name)
                .map(values)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.strip_prefix(prefix).map(str::to_string))
                .filter(|v| valid_pattern(v))
                .take(MAX_CLAIMED_ENDPOINTS)
                .collect();
            intersect(&claimed, &ceiling)
        }
    };
    Ok(KeyRecord {
        id: principal_id(&issuer.issuer, subject),
        tenant,
        name: truncate(subject, 128).to_string(),
        endpoints,
        rpm: rule.and_then(|r| r.rpm).or(policy.rpm),
        tpm: rule.and_then(|r| r.tpm).or(policy.tpm),
        budget_usd: rule.and_then(|r| r.budget_usd).or(policy.budget_usd),
        budget_period: rule.and_then(|r| r.budget_period).unwrap_or(policy.budget_period),
        region: rule.and_then(|r| r.region.clone()).or_else(|| policy.region.clone()),
        created: validity.issued_at.unwrap_or(0),
        expires_at: Some(validity.expires_at),
        disabled: false,
        exact: rule.and_then(|r| r.exact).unwrap_or(policy.exact),
        hash: String::new(),
        // No MCP grant of its own: the tenant's `mcp_policies` decide.
        mcp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::check::Issues;
    use crate::gateway::features::identity::config::check_auth;
    use crate::gateway::features::keys::BudgetPeriod;
    use serde_json::json;

    fn issuer(extra: Value) -> Issuer {
        let mut value = json!({"issuer": "https://idp.test", "audiences": ["gw"], "jwks_url": "https://idp.test/k"});
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        let mut issues = Issues::default();
        let auth = check_auth("auth", &json!({"jwt": {"issuers": [value]}}), &["eu"], &mut issues);
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        auth.unwrap().jwt.issuers.remove(0)
    }

    fn map(issuer: &Issuer, claims: Value) -> Result<KeyRecord, Refusal> {
        let validity = Validity { expires_at: 2_000, not_before: None, issued_at: Some(1_000) };
        map_claims(issuer, claims.as_object().unwrap(), "alice", &validity)
    }

    #[test]
    fn principal_ids_are_stable_and_distinct() {
        let a = principal_id("https://idp.test", "alice");
        assert_eq!(a, principal_id("https://idp.test", "alice"));
        assert_ne!(a, principal_id("https://other.test", "alice"));
        assert_ne!(principal_id("ab", "c"), principal_id("a", "bc"), "the separator counts");
        assert!(a.starts_with("j_") && a.len() == 18 && valid_principal_id(&a));
        assert!(valid_principal_id("k_0123456789abcdef") && !valid_principal_id("x_01") && !valid_principal_id("j_zz"));
    }

    #[test]
    fn tenant_from_claim_with_fallback() {
        let i = issuer(json!({"claims": {"tenant": "org_id"}, "policy": {"tenant": "default"}}));
        assert_eq!(map(&i, json!({"org_id": "acme"})).unwrap().tenant, "acme");
        assert_eq!(map(&i, json!({})).unwrap().tenant, "default");
        assert_eq!(map(&i, json!({"org_id": "a b"})), Err(Refusal::Malformed));
        assert_eq!(map(&i, json!({"org_id": 7})), Err(Refusal::Malformed));
        let strict = issuer(json!({"claims": {"tenant": "org.id"}}));
        assert_eq!(map(&strict, json!({"org": {"id": "nested"}})).unwrap().tenant, "nested", "dotted path");
        assert_eq!(map(&strict, json!({"org.id": "literal"})).unwrap().tenant, "literal", "literal name first");
        assert_eq!(map(&strict, json!({})), Err(Refusal::Malformed), "no claim, no fallback");
    }

    #[test]
    fn endpoints_from_claim_within_the_ceiling() {
        let i = issuer(json!({"claims": {"tenant": "org_id", "endpoints": "groups", "endpoint_prefix": "gw:"},
                               "policy": {"endpoints": ["chat*", "emb"]}}));
        let r = map(
            &i,
            json!({"org_id": "acme", "groups": ["gw:chat", "gw:chat-large", "gw:emb", "gw:admin", "staff", "gw:a b"]}),
        )
        .unwrap();
        assert_eq!(r.endpoints, ["chat", "chat-large", "emb"]);
        assert!(r.allows("chat") && !r.allows("admin") && !r.allows("staff"));
        let r = map(&i, json!({"org_id": "acme", "groups": "gw:chat gw:other"})).unwrap();
        assert_eq!(r.endpoints, ["chat"], "space-separated string");
        let r = map(&i, json!({"org_id": "acme", "groups": ["gw:*"]})).unwrap();
        assert_eq!(r.endpoints, ["chat*", "emb"], "a wildcard claim gets the ceiling");
        assert!(map(&i, json!({"org_id": "acme"})).unwrap().endpoints.is_empty(), "no claim: nothing");
        let open = issuer(json!({"policy": {"tenant": "t"}}));
        assert_eq!(map(&open, json!({})).unwrap().endpoints, ["*"]);
    }

    #[test]
    fn first_matching_rule_overrides_the_policy() {
        let i = issuer(json!({
            "policy": {"tenant": "t", "endpoints": ["chat"], "rpm": 10, "tpm": 100, "budget_usd": 1, "region": "eu"},
            "rules": [{"claim": "roles", "value": "admin", "endpoints": ["*"], "rpm": 100, "exact": true},
                      {"claim": "tier", "value": 2, "budget_usd": 5, "budget_period": "day"},
                      {"claim": "roles", "value": "user", "rpm": 1}]
        }));
        let base = map(&i, json!({})).unwrap();
        assert_eq!(
            (base.rpm, base.tpm, base.budget_usd, base.region.as_deref()),
            (Some(10), Some(100), Some(1.0), Some("eu"))
        );
        assert_eq!(base.id, principal_id("https://idp.test", "alice"));
        assert_eq!((base.created, base.expires_at, base.hash.as_str()), (1_000, Some(2_000), ""));
        let admin = map(&i, json!({"roles": ["user", "admin"]})).unwrap();
        assert_eq!(
            (admin.endpoints.clone(), admin.rpm, admin.tpm, admin.exact),
            (vec!["*".to_string()], Some(100), Some(100), true)
        );
        let tier = map(&i, json!({"tier": 2})).unwrap();
        assert_eq!((tier.budget_usd, tier.budget_period, tier.rpm), (Some(5.0), BudgetPeriod::Day, Some(10)));
        assert_eq!(map(&i, json!({"roles": "user"})).unwrap().rpm, Some(1));
    }

    #[test]
    fn pattern_intersection() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(intersect(&s(&["*"]), &s(&["a", "b*"])), s(&["a", "b*"]));
        assert_eq!(intersect(&s(&["ab*"]), &s(&["a*"])), s(&["ab*"]));
        assert_eq!(intersect(&s(&["a*"]), &s(&["ab*", "x"])), s(&["ab*"]));
        assert_eq!(intersect(&s(&["abc"]), &s(&["ab*"])), s(&["abc"]));
        assert_eq!(intersect(&s(&["ab*"]), &s(&["abc", "b"])), s(&["abc"]));
        assert!(intersect(&s(&["a*"]), &s(&["b*", "c"])).is_empty());
        assert!(intersect(&s(&[]), &s(&["*"])).is_empty());
    }
}
