//! The `auth:` section of the config: trusted JWT issuers, and how their tokens' claims map to
//! the policy an API key has. Checked like every other section: each issue with its path.
//!
//! ```yaml
//! auth:
//!   jwt:
//!     issuers:
//!       - issuer: https://login.example.com/         # must equal the token's `iss`
//!         audiences: [edge-gateway]                   # the token's `aud` must name one
//!         jwks_url: https://login.example.com/.well-known/jwks.json
//!         algorithms: [RS256, ES256]                  # default both; `none`/HS* never
//!         clock_skew_secs: 60                         # leeway on exp/nbf/iat (default 60, max 600)
//!         refresh_cooldown_secs: 30                   # min gap between JWKS fetches (default 30)
//!         claims:
//!           subject: sub                              # who the caller is (default `sub`)
//!           tenant: org_id                            # tenant from this claim...
//!           endpoints: groups                         # endpoint names from this claim (list, or space-separated)
//!           endpoint_prefix: "gw:"                    # ...only values with this prefix count (stripped)
//!         policy:                                     # what every subject of this issuer gets
//!           tenant: default-tenant                    # ...else this tenant
//!           endpoints: ["chat", "emb-*"]              # the allow-list; with claims.endpoints, the ceiling
//!           rpm: 60
//!           tpm: 100000
//!           budget_usd: 5
//!           budget_period: day
//!           region: eu
//!           exact: false
//!         rules:                                      # the first rule whose claim matches overrides policy fields
//!           - {claim: groups, value: ml-admins, endpoints: ["*"], rpm: 600}
//! ```
//!
//! A claim name is looked up as written first, then as a dotted path (`realm_access.roles`).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::gateway::check::Issues;
use crate::gateway::features::identity::jwt::Algorithm;
use crate::gateway::features::keys::BudgetPeriod;
use crate::gateway::features::limits::valid_tenant;

pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;
pub const DEFAULT_REFRESH_COOLDOWN_SECS: u64 = 30;
pub const MAX_REFRESH_COOLDOWN_SECS: u64 = 3_600;
pub const MAX_ISSUERS: usize = 16;

/// The `auth:` section.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub jwt: JwtConfig,
}

#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    pub issuers: Vec<Issuer>,
    /// A hash of the section as configured: memoized verifications of one config are not
    /// reused under another.
    pub fingerprint: u64,
}

impl JwtConfig {
    pub fn enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// The trusted issuer whose `issuer` equals `iss` exactly.
    pub fn issuer(&self, iss: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.issuer == iss)
    }
}

#[derive(Debug, Clone)]
pub struct Issuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks_url: String,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew_secs: u64,
    pub refresh_cooldown_secs: u64,
    pub claims: ClaimRules,
    pub policy: Policy,
    pub rules: Vec<Rule>,
}

/// Which claims say who the caller is and what they may call.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub subject: String,
    pub tenant: Option<String>,
    pub endpoints: Option<String>,
    pub endpoint_prefix: String,
}

/// The key-shaped policy a subject gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub tenant: Option<String>,
    pub endpoints: Vec<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_usd: Option<f64>,
    pub budget_period: BudgetPeriod,
    pub region: Option<String>,
    pub exact: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            tenant: None,
            endpoints: vec!["*".into()],
            rpm: None,
            tpm: None,
            budget_usd: None,
            budget_period: BudgetPeriod::Month,
            region: None,
            exact: false,
        }
    }
}

/// When `claim` has `value` (equal, or one of its items), these fields replace the policy's.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub claim: String,
    pub value: String,
    pub endpoints: Option<Vec<String>>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_usd: Option<f64>,
    pub budget_period: Option<BudgetPeriod>,
    pub region: Option<String>,
    pub exact: Option<bool>,
}

mod raw {
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Auth {
        #[serde(default)]
        pub jwt: Option<Jwt>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Jwt {
        #[serde(default)]
        pub issuers: Vec<Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Issuer {
        pub issuer: String,
        pub audiences: Vec<String>,
        pub jwks_url: String,
        #[serde(default)]
        pub algorithms: Option<Vec<String>>,
        #[serde(default)]
        pub clock_skew_secs: Option<u64>,
        #[serde(default)]
        pub refresh_cooldown_secs: Option<u64>,
        #[serde(default)]
        pub claims: Option<Claims>,
        #[serde(default)]
        pub policy: Option<Policy>,
        #[serde(default)]
        pub rules: Vec<Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Claims {
        #[serde(default)]
        pub subject: Option<String>,
        #[serde(default)]
        pub tenant: Option<String>,
        #[serde(default)]
        pub endpoints: Option<String>,
        #[serde(default)]
        pub endpoint_prefix: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Policy {
        #[serde(default)]
        pub tenant: Option<String>,
        #[serde(default)]
        pub endpoints: Option<Vec<String>>,
        #[serde(default)]
        pub rpm: Option<u64>,
        #[serde(default)]
        pub tpm: Option<u64>,
        #[serde(default)]
        pub budget_usd: Option<f64>,
        #[serde(default)]
        pub budget_period: Option<String>,
        #[serde(default)]
        pub region: Option<String>,
        #[serde(default)]
        pub exact: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        pub claim: String,
        pub value: Value,
        #[serde(default)]
        pub endpoints: Option<Vec<String>>,
        #[serde(default)]
        pub rpm: Option<u64>,
        #[serde(default)]
        pub tpm: Option<u64>,
        #[serde(default)]
        pub budget_usd: Option<f64>,
        #[serde(default)]
        pub budget_period: Option<String>,
        #[serde(default)]
        pub region: Option<String>,
        #[serde(default)]
        pub exact: Option<bool>,
    }
}

/// Checks the `auth:` section at `path`; `regions` are the config's region names.
pub fn check_auth(path: &str, value: &Value, regions: &[&str], issues: &mut Issues) -> Option<AuthConfig> {
    let raw: raw::Auth = issues.parse(path, value.clone())?;
    let before = issues.0.len();
    let mut jwt = JwtConfig { issuers: Vec::new(), fingerprint: fingerprint(value) };
    if let Some(raw_jwt) = raw.jwt {
        if raw_jwt.issuers.len() > MAX_ISSUERS {
            issues.push(format!("{path}.jwt.issuers"), format!("at most {MAX_ISSUERS} issuers"));
        }
        for (i, value) in raw_jwt.issuers.into_iter().enumerate() {
            let at = format!("{path}.jwt.issuers[{i}]");
            let Some(issuer) = check_issuer(&at, value, regions, issues) else { continue };
            if jwt.issuers.iter().any(|other| other.issuer == issuer.issuer) {
                issues.push(format!("{at}.issuer"), format!("duplicate issuer \"{}\"", issuer.issuer));
                continue;
            }
            jwt.issuers.push(issuer);
        }
    }
    (issues.0.len() == before).then_some(AuthConfig { jwt })
}

fn fingerprint(value: &Value) -> u64 {
    let digest = Sha256::digest(value.to_string().as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

fn check_issuer(path: &str, value: Value, regions: &[&str], issues: &mut Issues) -> Option<Issuer> {
    let raw: raw::Issuer = issues.parse(path, value)?;
    let before = issues.0.len();
    if raw.issuer.is_empty() || raw.issuer.len() > 512 {
        issues.push(format!("{path}.issuer"), "must be the issuer's identifier (the tokens' `iss`), 1-512 characters");
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(|a| a.is_empty() || a.len() > 512) {
        issues.push(format!("{path}.audiences"), "must list at least one audience (what the tokens' `aud` names)");
    }
    if !(raw.jwks_url.starts_with("https://") || raw.jwks_url.starts_with("http://"))
        || http::Uri::try_from(raw.jwks_url.as_str()).is_err()
    {
        issues.push(format!("{path}.jwks_url"), format!("\"{}\" must be an http:// or https:// URL", raw.jwks_url));
    }
    let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
    let mut algorithms = Vec::new();
    for (i, name) in raw.algorithms.unwrap_or_else(|| names.iter().map(|s| s.to_string()).collect()).iter().enumerate()
    {
        match Algorithm::parse(name) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => {}
            None if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") => issues.push(
                format!("{path}.algorithms[{i}]"),
                format!(
                    "\"{name}\" is never accepted: tokens must be signed with the issuer's private key (RS256, ES256)"
                ),
            ),
            None => issues.unknown(format!("{path}.algorithms[{i}]"), "algorithm", name, &names),
        }
    }
    if algorithms.is_empty() && issues.0.len() == before {
        issues.push(format!("{path}.algorithms"), "must list at least one algorithm");
    }
    let clock_skew_secs = raw.clock_skew_secs.unwrap_or(DEFAULT_CLOCK_SKEW_SECS);
    if clock_skew_secs > MAX_CLOCK_SKEW_SECS {
        issues.push(format!("{path}.clock_skew_secs"), format!("at most {MAX_CLOCK_SKEW_SECS}"));
    }
    let refresh_cooldown_secs = raw.refresh_cooldown_secs.unwrap_or(DEFAULT_REFRESH_COOLDOWN_SECS);
    if !(1..=MAX_REFRESH_COOLDOWN_SECS).contains(&refresh_cooldown_secs) {
        issues.push(format!("{path}.refresh_cooldown_secs"), format!("must be 1 to {MAX_REFRESH_COOLDOWN_SECS}"));
    }
    let raw_claims =
        raw.claims.unwrap_or(raw::Claims { subject: None, tenant: None, endpoints: None, endpoint_prefix: None });
    let claim_name = |field: &str, name: Option<String>, issues: &mut Issues| {
        if let Some(name) = &name {
            if name.is_empty() || name.len() > 256 {
                issues.push(format!("{path}.claims.{field}"), "must be a claim name (1-256 characters)");
            }
        }
        name
    };
    let claims = ClaimRules {
        subject: claim_name("subject", raw_claims.subject, issues).unwrap_or_else(|| "sub".into()),
        tenant: claim_name("tenant", raw_claims.tenant, issues),
        endpoints: claim_name("endpoints", raw_claims.endpoints, issues),
        endpoint_prefix: raw_claims.endpoint_prefix.unwrap_or_default(),
    };
    if !claims.endpoint_prefix.is_empty() && claims.endpoints.is_none() {
        issues.push(format!("{path}.claims.endpoint_prefix"), "only applies with claims.endpoints");
    }
    let raw_policy = raw.policy.unwrap_or_default();
    let mut policy = Policy::default();
    if let Some(tenant) = raw_policy.tenant {
        if !valid_tenant(&tenant) {
            issues.push(format!("{path}.policy.tenant"), "letters, digits, '_', '-', '.'; 1-64 chars");
        }
        policy.tenant = Some(tenant);
    }
    if claims.tenant.is_none() && policy.tenant.is_none() {
        issues.push(
            format!("{path}.policy.tenant"),
            "set claims.tenant (the claim naming the tenant) or policy.tenant (one tenant for every subject)",
        );
    }
    let fields = PolicyFields {
        endpoints: raw_policy.endpoints,
        rpm: raw_policy.rpm,
        tpm: raw_policy.tpm,
        budget_usd: raw_policy.budget_usd,
        budget_period: raw_policy.budget_period,
        region: raw_policy.region,
    };
    let checked = fields.check(&format!("{path}.policy"), regions, issues);
    policy.endpoints = checked.endpoints.unwrap_or(policy.endpoints);
    policy.rpm = checked.rpm;
    policy.tpm = checked.tpm;
    policy.budget_usd = checked.budget_usd;
    policy.budget_period = checked.budget_period.unwrap_or(policy.budget_period);
    policy.region = checked.region;
    policy.exact = raw_policy.exact.unwrap_or(false);

    let mut rules = Vec::new();
    for (i, value) in raw.rules.into_iter().enumerate() {
        let at = format!("{path}.rules[{i}]");
        let Some(rule) = issues.parse::<raw::Rule>(&at, value) else { continue };
        if rule.claim.is_empty() || rule.claim.len() > 256 {
            issues.push(format!("{at}.claim"), "must be a claim name (1-256 characters)");
        }
        let value = match rule.value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                issues.push(format!("{at}.value"), "must be a string, number or boolean");
                String::new()
            }
        };
        let fields = PolicyFields {
            endpoints: rule.endpoints,
            rpm: rule.rpm,
            tpm: rule.tpm,
            budget_usd: rule.budget_usd,
            budget_period: rule.budget_period,
            region: rule.region,
        };
        let checked = fields.check(&at, regions, issues);
        rules.push(Rule {
            claim: rule.claim,
            value,
            endpoints: checked.endpoints,
            rpm: checked.rpm,
            tpm: checked.tpm,
            budget_usd: checked.budget_usd,
            budget_period: checked.budget_period,
            region: checked.region,
            exact: rule.exact,
        });
    }
    (issues.0.len() == before).then_some(Issuer {
        issuer: raw.issuer,
        audiences: raw.audiences,
        jwks_url: raw.jwks_url,
        algorithms,
        clock_skew_secs,
        refresh_cooldown_secs,
        claims,
        policy,
        rules,
    })
}

/// The policy fields a rule and the issuer's policy share.
struct PolicyFields {
    endpoints: Option<Vec<String>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
    region: Option<String>,
}

struct CheckedFields {
    endpoints: Option<Vec<String>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    budget_usd: Option<f64>,
    budget_period: Option<BudgetPeriod>,
    region: Option<String>,
}

impl PolicyFields {
    fn check(self, path: &str, regions: &[&str], issues: &mut Issues) -> CheckedFields {
        if let Some(endpoints) = &self.endpoints {
            for (i, pattern) in endpoints.iter().enumerate() {
                if !valid_pattern(pattern) {
                    issues.push(
                        format!("{path}.endpoints[{i}]"),
                        "must be an endpoint name, \"*\" or \"prefix*\" (letters, digits, '_', '-', '.')",
                    );
                }
            }
        }
        if self.budget_usd.is_some_and(|b| !b.is_finite() || b < 0.0) {
            issues.push(format!("{path}.budget_usd"), "must be a number >= 0 (USD)");
        }
        let budget_period = self.budget_period.as_deref().and_then(|p| {
            let parsed = BudgetPeriod::parse(p);
            if parsed.is_none() {
                issues.unknown(format!("{path}.budget_period"), "budget period", p, &["day", "month"]);
            }
            parsed
        });
        if let Some(region) = &self.region {
            if !regions.contains(&region.as_str()) {
                issues.unknown(format!("{path}.region"), "region", region, regions);
            }
        }
        CheckedFields {
            endpoints: self.endpoints,
            rpm: self.rpm,
            tpm: self.tpm,
            budget_usd: self.budget_usd,
            budget_period,
            region: self.region,
        }
    }
}

/// An endpoint name, `*`, or `prefix*` (what a key's allow-list holds).
pub fn valid_pattern(s: &str) -> bool {
    let name = s.strip_suffix('*').unwrap_or(s);
    s == "*"
        || (!name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value) -> Result<AuthConfig, Vec<String>> {
        let mut issues = Issues::default();
        let config = check_auth("auth", &value, &["eu", "us"], &mut issues);
        match config {
            Some(c) if issues.0.is_empty() => Ok(c),
            _ => Err(issues.0.iter().map(ToString::to_string).collect()),
        }
    }

    fn issuer() -> Value {
        json!({"issuer": "https://idp.test", "audiences": ["gw"], "jwks_url": "https://idp.test/jwks.json",
               "claims": {"tenant": "org_id"}})
    }

    #[test]
    fn defaults_and_full_shape() {
        let c = check(json!({"jwt": {"issuers": [issuer()]}})).unwrap();
        let i = &c.jwt.issuers[0];
        assert_eq!(i.algorithms, [Algorithm::Rs256, Algorithm::Es256]);
        assert_eq!((i.clock_skew_secs, i.refresh_cooldown_secs), (60, 30));
        assert_eq!(i.claims.subject, "sub");
        assert_eq!(i.policy, Policy::default());
        assert!(
            c.jwt.enabled()
                && c.jwt.issuer("https://idp.test").is_some()
                && c.jwt.issuer("https://idp.test/").is_none()
        );
        let full = json!({"jwt": {"issuers": [{
            "issuer": "https://idp.test", "audiences": ["gw", "api"], "jwks_url": "https://idp.test/jwks.json",
            "algorithms": ["ES256"], "clock_skew_secs": 5, "refresh_cooldown_secs": 2,
            "claims": {"subject": "oid", "tenant": "org_id", "endpoints": "groups", "endpoint_prefix": "gw:"},
            "policy": {"tenant": "fallback", "endpoints": ["chat", "emb-*"], "rpm": 10, "tpm": 1000, "budget_usd": 2.5,
                       "budget_period": "day", "region": "eu", "exact": true},
            "rules": [{"claim": "groups", "value": "admins", "endpoints": ["*"], "rpm": 100},
                      {"claim": "tier", "value": 3, "budget_usd": 10}]
        }]}});
        let c = check(full.clone()).unwrap();
        let i = &c.jwt.issuers[0];
        assert_eq!(i.algorithms, [Algorithm::Es256]);
        assert_eq!(i.policy.region.as_deref(), Some("eu"));
        assert_eq!(i.policy.budget_period, BudgetPeriod::Day);
        assert_eq!(i.rules[1].value, "3");
        assert_ne!(c.jwt.fingerprint, check(json!({"jwt": {"issuers": [issuer()]}})).unwrap().jwt.fingerprint);
        assert_eq!(c.jwt.fingerprint, check(full).unwrap().jwt.fingerprint);
    }

    #[test]
    fn every_issue_with_its_path() {
        let mut bad = issuer();
        bad["algorithms"] = json!(["none", "HS256", "RS265", "ES256"]);
        bad["audiences"] = json!([]);
        bad["jwks_url"] = json!("idp.test/jwks");
        bad["clock_skew_secs"] = json!(3600);
        bad["refresh_cooldown_secs"] = json!(0);
        bad["claims"] = json!({"endpoint_prefix": "gw:"});
        bad["policy"] = json!({"endpoints": ["a b"], "region": "asia", "budget_period": "week", "budget_usd": -1});
        bad["rules"] = json!([{"claim": "", "value": [1]}]);
        bad["extra"] = json!(1);
        let issues = check(json!({"jwt": {"issuers": [bad]}})).unwrap_err();
        assert_eq!(issues.len(), 1, "unknown fields stop the issuer: {issues:?}");
        assert!(issues[0].contains("unknown field `extra`"), "{issues:?}");
        let mut bad = issuer();
        bad["algorithms"] = json!(["none", "HS256", "RS265", "ES256"]);
        bad["audiences"] = json!([]);
        bad["jwks_url"] = json!("idp.test/jwks");
        bad["clock_skew_secs"] = json!(3600);
        bad["refresh_cooldown_secs"] = json!(0);
        bad["claims"] = json!({"endpoint_prefix": "gw:"});
        bad["policy"] = json!({"endpoints": ["a b"], "region": "asia", "budget_period": "week", "budget_usd": -1});
        bad["rules"] = json!([{"claim": "", "value": [1]}]);
        let issues = check(json!({"jwt": {"issuers": [bad, issuer(), issuer()]}})).unwrap_err();
        let has = |p: &str| issues.iter().any(|i| i.starts_with(p));
        for path in [
            "auth.jwt.issuers[0].algorithms[0]: \"none\" is never accepted",
            "auth.jwt.issuers[0].algorithms[1]: \"HS256\" is never accepted",
            "auth.jwt.issuers[0].algorithms[2]: unknown algorithm \"RS265\" (did you mean \"RS256\"?)",
            "auth.jwt.issuers[0].audiences",
            "auth.jwt.issuers[0].jwks_url",
            "auth.jwt.issuers[0].clock_skew_secs",
            "auth.jwt.issuers[0].refresh_cooldown_secs",
            "auth.jwt.issuers[0].claims.endpoint_prefix",
            "auth.jwt.issuers[0].policy.tenant",
            "auth.jwt.issuers[0].policy.endpoints[0]",
            "auth.jwt.issuers[0].policy.region: unknown region \"asia\"",
            "auth.jwt.issuers[0].policy.budget_period",
            "auth.jwt.issuers[0].policy.budget_usd",
            "auth.jwt.issuers[0].rules[0].claim",
            "auth.jwt.issuers[0].rules[0].value",
            "auth.jwt.issuers[2].issuer: duplicate issuer",
        ] {
            assert!(has(path), "missing {path}: {issues:#?}");
        }
        assert!(check(json!({"jwt": {"issuers": [{"issuer": "x"}]}})).is_err());
        assert!(check(json!({"oidc": {}})).unwrap_err()[0].contains("unknown field `oidc`"));
        assert!(check(json!({})).unwrap().jwt.issuers.is_empty());
    }
}
