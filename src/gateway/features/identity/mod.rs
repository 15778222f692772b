//! JWT / OIDC authentication beside API keys: a bearer credential shaped like a JWT is
//! verified against the config's trusted issuers (`auth.jwt.issuers`, see `config`) and
//! becomes the same key-shaped policy an API key has (`claims`).
//!
//! Verification, in order (RFC 7519 §7.2, RFC 8725):
//! 1. shape: at most 8 KiB, three canonical base64url parts, JSON header with `alg` (and
//!    `kid`), JSON claims; no `crit` → else `token_malformed`
//! 2. `iss` names a configured issuer (exact match) → else `token_unknown_issuer`
//! 3. `alg` is in that issuer's `algorithms` (RS256/ES256 only: never `none`, never HS*)
//!    → else `token_algorithm`
//! 4. the key: by `kid` from the issuer's JWKS (`jwks`: memo, KV, URL; one refetch on an
//!    unknown `kid`) → `token_unknown_key`; its `kty`/`crv`/`alg` must fit → `token_algorithm`
//! 5. the signature → `token_bad_signature`
//! 6. `exp` (required) → `token_expired`; `nbf`, `iat` → `token_not_yet_valid`; `aud` names
//!    one of the issuer's audiences → `token_audience`; the subject claim (required) and the
//!    tenant claim (when configured) → `token_malformed`
//!
//! Every refusal is a 401 with its code and a fixed message; no token, claim value or key id
//! ever goes into an error or a log line. A JWKS that cannot be fetched (and no usable cached
//! copy) is a 503 `jwks_unavailable`.
//!
//! Verified tokens are memoized per isolate by SHA-256 of the token (never the token) for
//! [`TOKEN_MEMO_TTL_MS`], under the config's `auth` fingerprint; `exp`/`nbf` are rechecked on
//! every hit. So a token stays accepted after its signing key leaves the JWKS for at most the
//! JWKS cache lifetime (see `jwks`), plus this memo's 60 s in an isolate that verified it.
//!
//! A host without state between requests (Spin: a fresh instance each) keeps that memo in KV
//! instead (`jwtok:<SHA-256 of the token>`, [`VOUCHED_PREFIX`]): otherwise every request would
//! read the JWKS and check the signature again, ~0.6 ms (RS256) and ~1 ms (ES256) of wasm per
//! request there (scripts/bench, the JWT rows). An entry says only that this token's signature
//! held under this config, and when: the token is parsed and its claims checked on every
//! request as before, and the entry counts for the same 60 s. The housekeeping sweep deletes
//! entries past that.

pub mod claims;
pub mod config;
pub mod jwks;
pub mod jwt;
#[cfg(feature = "rustcrypto")]
pub mod testing;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::gateway::error::Result;
use crate::gateway::features::keys::KeyRecord;
use crate::gateway::ports::Ports;
use crate::gateway::util::text::hex;

pub use config::{check_auth, AuthConfig, Issuer, JwtConfig};
pub use jwks::JwksMemo;
pub use jwt::{looks_like_jwt, Algorithm, Refusal};

/// How long an isolate (or, on a stateless host, the KV memo) reuses a verified token.
pub const TOKEN_MEMO_TTL_MS: u64 = 60_000;
const TOKEN_MEMO_MAX: usize = 4096;
/// KV entries of tokens whose signature held, on stateless hosts: `<fingerprint hex>:<unix ms>`.
pub const VOUCHED_PREFIX: &str = "jwtok:";

/// A KV memo entry for a token verified at `at` under the config `fingerprint`.
fn vouched_entry(fingerprint: u64, at: u64) -> String {
    format!("{fingerprint:016x}:{at}")
}

/// When the entry's token was verified, if the entry is well formed.
fn vouched_at(entry: &[u8]) -> Option<(u64, u64)> {
    let (fingerprint, at) = std::str::from_utf8(entry).ok()?.split_once(':')?;
    Some((u64::from_str_radix(fingerprint, 16).ok()?, at.parse().ok()?))
}

/// Whether a KV memo entry still vouches for its token under the config `fingerprint`.
fn vouches(entry: &[u8], fingerprint: u64, now: u64) -> bool {
    vouched_at(entry).is_some_and(|(f, at)| f == fingerprint && at <= now && now - at < TOKEN_MEMO_TTL_MS)
}

/// For the housekeeping sweep: an entry that vouches for nothing any more (or is not one).
pub fn vouch_expired(entry: &[u8], now: u64) -> bool {
    vouched_at(entry).is_none_or(|(_, at)| now.saturating_sub(at) >= TOKEN_MEMO_TTL_MS)
}

/// A verified token's caller.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The key-shaped policy (id `j_…`, tenant, allow-list, limits, region).
    pub record: Rc<KeyRecord>,
    /// The configured issuer that vouched for it.
    pub issuer: String,
    /// The subject claim's value.
    pub subject: String,
    /// `exp` and `nbf` with the issuer's skew applied (unix seconds), rechecked on memo hits.
    valid_until: f64,
    valid_from: f64,
}

struct Memoized {
    verified: Rc<Verified>,
    fingerprint: u64,
    at: u64,
}

/// The isolate's identity state: verified tokens and JWKS.
#[derive(Default)]
pub struct IdentityMemo {
    pub jwks: JwksMemo,
    tokens: RefCell<HashMap<String, Memoized>>,
}

impl IdentityMemo {
    pub fn tokens(&self) -> usize {
        self.tokens.borrow().len()
    }

    fn get(&self, hash: &str, fingerprint: u64, now: u64) -> Option<Rc<Verified>> {
        let tokens = self.tokens.borrow();
        let m = tokens.get(hash)?;
        (m.fingerprint == fingerprint && now.saturating_sub(m.at) < TOKEN_MEMO_TTL_MS).then(|| m.verified.clone())
    }

    fn put(&self, hash: String, verified: Rc<Verified>, fingerprint: u64, now: u64) {
        let mut tokens = self.tokens.borrow_mut();
        if tokens.len() >= TOKEN_MEMO_MAX {
            tokens.retain(|_, m| now.saturating_sub(m.at) < TOKEN_MEMO_TTL_MS);
            if tokens.len() >= TOKEN_MEMO_MAX {
                tokens.clear();
            }
        }
        tokens.insert(hash, Memoized { verified, fingerprint, at: now });
    }
}

/// Verifies `token` against the trusted issuers of `config` (steps in the module docs).
pub async fn verify<P: Ports>(ports: &P, memo: &IdentityMemo, config: &JwtConfig, token: &str) -> Result<Rc<Verified>> {
    let now = ports.now_ms();
    let hash = hex(&Sha256::digest(token.as_bytes()));
    if let Some(verified) = memo.get(&hash, config.fingerprint, now) {
        let secs = now as f64 / 1000.0;
        if secs >= verified.valid_until {
            return Err(Refusal::Expired.error());
        }
        if secs < verified.valid_from {
            return Err(Refusal::NotYetValid.error());
        }
        return Ok(verified);
    }
    let parsed = jwt::parse(token).map_err(Refusal::error)?;
    let iss = parsed.issuer().ok_or(Refusal::Malformed).map_err(Refusal::error)?;
    let issuer = config.issuer(iss).ok_or(Refusal::UnknownIssuer).map_err(Refusal::error)?;
    let alg = Algorithm::parse(&parsed.alg)
        .filter(|a| issuer.algorithms.contains(a))
        .ok_or(Refusal::Algorithm)
        .map_err(Refusal::error)?;
    // A store that fails here only costs the shortcut: the JWKS path reports its own failures.
    let vouched_key = (!ports.keeps_state()).then(|| format!("{VOUCHED_PREFIX}{hash}"));
    let vouched = match &vouched_key {
        Some(key) => matches!(ports.get(key).await, Ok(Some(entry)) if vouches(&entry, config.fingerprint, now)),
        None => false,
    };
    if !vouched {
        let source =
            jwks::Source { jwks_url: &issuer.jwks_url, refresh_cooldown_ms: issuer.refresh_cooldown_secs * 1000 };
        let (set, index) = jwks::find_key(ports, &memo.jwks, source, parsed.kid.as_deref(), alg).await?;
        let key = &set.set.keys[index].key;
        if !(jwt::key_fits(key, alg) && ports.verify(key, parsed.signing_input, &parsed.signature).await) {
            return Err(Refusal::BadSignature.error());
        }
    }
    let expected = jwt::Expected { audiences: &issuer.audiences, clock_skew_secs: issuer.clock_skew_secs, now_ms: now };
    let validity = jwt::check_claims(&parsed.claims, expected).map_err(Refusal::error)?;
    let subject = jwt::subject(&parsed.claims, &issuer.claims.subject).map_err(Refusal::error)?;
    let record = claims::map_claims(issuer, &parsed.claims, subject, &validity).map_err(Refusal::error)?;
    let skew = issuer.clock_skew_secs as f64;
    let verified = Rc::new(Verified {
        record: Rc::new(record),
        issuer: issuer.issuer.clone(),
        subject: subject.to_string(),
        valid_until: validity.expires_at as f64 + skew,
        valid_from: validity.not_before.map_or(f64::MIN, |nbf| nbf - skew),
    });
    if let (Some(key), false) = (&vouched_key, vouched) {
        // Best effort: without the entry, the next request verifies the signature again.
        let entry = vouched_entry(config.fingerprint, now);
        let _ = ports.put(key, entry.as_bytes(), Some(TOKEN_MEMO_TTL_MS / 1000)).await;
    }
    memo.put(hash, verified.clone(), config.fingerprint, now);
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::check::Issues;
    use crate::gateway::error::ErrorCode;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::Clock;
    use serde_json::{json, Value};
    use std::cell::Cell;

    fn config(extra: Value) -> JwtConfig {
        let mut issuer = json!({"issuer": testing::ISSUER, "audiences": ["gw"], "jwks_url": "https://idp.test/jwks.json",
                                "clock_skew_secs": 30,
                                "claims": {"tenant": "org_id", "endpoints": "groups", "endpoint_prefix": "gw:"},
                                "policy": {"rpm": 5}});
        for (k, v) in extra.as_object().unwrap() {
            issuer[k] = v.clone();
        }
        let mut issues = Issues::default();
        let auth = check_auth("auth", &json!({"jwt": {"issuers": [issuer]}}), &[], &mut issues);
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        auth.unwrap().jwt
    }

    fn host(fetches: Rc<Cell<u32>>) -> MemoryHost {
        MemoryHost::new(move |_| {
            fetches.set(fetches.get() + 1);
            Ok(http::Response::builder().body(testing::jwks().to_string().into_bytes()).unwrap())
        })
    }

    fn code(r: Result<Rc<Verified>>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn verifies_and_maps_rs256_and_es256() {
        let fetches = Rc::new(Cell::new(0));
        let host = host(fetches.clone());
        let memo = IdentityMemo::default();
        let config = config(json!({}));
        let claims = testing::claims_at(host.now_ms(), "gw");
        for token in
            [testing::sign_rs256(&claims, Some(testing::RSA_KID)), testing::sign_es256(&claims, Some(testing::EC_KID))]
        {
            let v = block_on(verify(&host, &memo, &config, &token)).unwrap();
            assert_eq!((v.issuer.as_str(), v.subject.as_str()), (testing::ISSUER, "alice"));
            assert_eq!(v.record.tenant, "acme");
            assert_eq!(v.record.endpoints, ["chat"]);
            assert_eq!(v.record.rpm, Some(5));
            assert_eq!(v.record.id, claims::principal_id(testing::ISSUER, "alice"));
        }
        assert_eq!(fetches.get(), 1);
        assert_eq!(memo.tokens(), 2);
    }

    #[test]
    fn every_refusal_has_its_code() {
        let host = host(Rc::default());
        let memo = IdentityMemo::default();
        let config = config(json!({"algorithms": ["RS256"]}));
        let now = host.now_ms();
        let good = testing::claims_at(now, "gw");
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let rs = |c: &Value| testing::sign_rs256(c, Some(testing::RSA_KID));
        let secs = (now / 1000) as i64;
        let cases = [
            (rs(&with("exp", json!(secs - 31))), ErrorCode::TokenExpired),
            (rs(&with("nbf", json!(secs + 31))), ErrorCode::TokenNotYetValid),
            (rs(&with("aud", json!("other"))), ErrorCode::TokenAudience),
            (rs(&with("iss", json!("https://evil.test"))), ErrorCode::TokenUnknownIssuer),
            (rs(&with("sub", json!(""))), ErrorCode::TokenMalformed),
            (rs(&with("org_id", json!(["x"]))), ErrorCode::TokenMalformed),
            (testing::sign_rs256(&good, Some("rsa-9")), ErrorCode::TokenUnknownKey),
            (testing::sign_es256(&good, Some(testing::EC_KID)), ErrorCode::TokenAlgorithm),
            ("not.a.jwt".to_string(), ErrorCode::TokenMalformed),
        ];
        for (token, expected) in cases {
            let e = block_on(verify(&host, &memo, &config, &token)).unwrap_err();
            assert_eq!(e.code, expected);
            assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
            assert!(!e.message.contains(&token[..token.len().min(30)]) && !e.message.contains("alice"));
        }
        let token = rs(&good);
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            with("org_id", json!("other")).to_string(),
        );
        assert_eq!(code(block_on(verify(&host, &memo, &config, &parts.join(".")))), ErrorCode::TokenBadSignature);
    }

    #[test]
    fn memo_rechecks_time_and_follows_the_config() {
        let fetches = Rc::new(Cell::new(0));
        let host = host(fetches.clone());
        let memo = IdentityMemo::default();
        let config = config(json!({}));
        let mut claims = testing::claims_at(host.now_ms(), "gw");
        claims["exp"] = json!(host.now_ms() / 1000 + 10);
        let token = testing::sign_es256(&claims, Some(testing::EC_KID));
        assert!(block_on(verify(&host, &memo, &config, &token)).is_ok());
        host.advance(39_000);
        assert!(block_on(verify(&host, &memo, &config, &token)).is_ok(), "memo hit within exp + skew");
        host.advance(2_000);
        assert_eq!(code(block_on(verify(&host, &memo, &config, &token))), ErrorCode::TokenExpired);
        // Another config (another fingerprint) does not reuse the memo.
        let fresh = testing::sign_es256(&testing::claims_at(host.now_ms(), "gw"), Some(testing::EC_KID));
        assert!(block_on(verify(&host, &memo, &config, &fresh)).is_ok());
        let other = config_with_aud("gw2");
        assert_eq!(code(block_on(verify(&host, &memo, &other, &fresh))), ErrorCode::TokenAudience);
    }

    /// On a stateless host (Spin: a fresh instance per request) a verified token is vouched
    /// for in KV for a minute: the next instance reads that entry instead of the JWKS and
    /// checks no signature, but checks the claims again; another token, another config, or the
    /// same token a minute later are verified again; the sweep deletes stale entries.
    #[test]
    fn a_stateless_host_remembers_verified_tokens_in_kv() {
        let host = host(Rc::default());
        host.stateless.set(true);
        let config = config(json!({}));
        // Verifies `token` in a fresh instance: whether it succeeded, and whether it read the JWKS.
        let fresh = |config: &JwtConfig, token: &str| {
            *host.kv_begun.borrow_mut() = Some(Vec::new());
            let result = block_on(verify(&host, &IdentityMemo::default(), config, token));
            let begun = host.kv_begun.borrow_mut().take().unwrap();
            (
                result.map(|v| v.subject.clone()).map_err(|e| e.code),
                begun.iter().any(|k| k.starts_with(jwks::CACHE_PREFIX)),
            )
        };
        let mut claims = testing::claims_at(host.now_ms(), "gw");
        claims["exp"] = json!(host.now_ms() / 1000 + 20);
        let token = testing::sign_es256(&claims, Some(testing::EC_KID));
        let entry = format!("{VOUCHED_PREFIX}{}", hex(&Sha256::digest(token.as_bytes())));
        assert_eq!(fresh(&config, &token), (Ok("alice".into()), true));
        assert!(host.kv.borrow().contains_key(&entry));
        host.advance(10_000);
        assert_eq!(fresh(&config, &token), (Ok("alice".into()), false), "vouched for: no JWKS, no signature");
        // The entry vouches for that token only: the same signature over other claims is checked.
        let mut other = claims.clone();
        other["sub"] = json!("mallory");
        let other = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, other.to_string());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &other;
        assert_eq!(fresh(&config, &parts.join(".")), (Err(ErrorCode::TokenBadSignature), true));
        // The claims are checked on every request: past exp (+ the 30 s skew) the entry does not help.
        host.advance(45_000);
        assert!(vouches(&host.kv.borrow()[&entry], config.fingerprint, host.now_ms()));
        assert_eq!(fresh(&config, &token), (Err(ErrorCode::TokenExpired), false));
        // A minute after its verification the entry is stale: a new token then verifies again.
        host.advance(6_000);
        assert!(!vouches(&host.kv.borrow()[&entry], config.fingerprint, host.now_ms()));
        let later = testing::sign_rs256(&testing::claims_at(host.now_ms(), "gw"), Some(testing::RSA_KID));
        assert_eq!(fresh(&config, &later), (Ok("alice".into()), true));
        assert_eq!(fresh(&config, &later), (Ok("alice".into()), false));
        // Another config (another fingerprint) verifies again.
        assert_eq!(fresh(&config_with_skew(31), &later), (Ok("alice".into()), true));
        let swept = block_on(crate::gateway::features::housekeeping::sweep(&host)).unwrap();
        assert_eq!(swept.vouches, 1);
        assert!(!host.kv.borrow().contains_key(&entry));
        assert_eq!(host.kv.borrow().keys().filter(|k| k.starts_with(VOUCHED_PREFIX)).count(), 1, "the later one stays");
        // Entries that are not ours vouch for nothing, and the sweep deletes them.
        for bad in [&b""[..], b"zz:1", b"00:x", b"0000000000000000"] {
            assert!(!vouches(bad, 0, 1) && vouch_expired(bad, 1));
        }
    }

    fn config_with_skew(secs: u64) -> JwtConfig {
        config(json!({ "clock_skew_secs": secs }))
    }

    fn config_with_aud(aud: &str) -> JwtConfig {
        config(json!({ "audiences": [aud] }))
    }
}
