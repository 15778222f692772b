//! JSON Web Tokens (RFC 7519) in JWS compact serialization (RFC 7515), verified with public
//! keys only: RS256 (RSASSA-PKCS1-v1_5 with SHA-256) and ES256 (ECDSA on P-256 with SHA-256).
//! Pure functions, no ports: parse, match a key to the algorithm, check the registered claims
//! (the signature is the `Signatures` port's).
//!
//! Refused, following RFC 8725: `alg: none` and every HMAC algorithm (not in [`Algorithm`],
//! so never in an issuer's list: a public key can never be used as an HMAC secret); an `alg`
//! not in the issuer's list; a key whose `kty`/`crv`/`alg`/`use` does not fit the header's
//! `alg`; any `crit` header (we implement no extension); non-canonical base64url; tokens over
//! [`MAX_TOKEN_BYTES`]. Header parameters that point at keys (`jku`, `jwk`, `x5u`, `x5c`) are
//! ignored: keys come only from the issuer's configured JWKS URL.
//!
//! Nothing here formats a token (or any part of one) into an error message.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError};
use crate::gateway::ports::signatures::PublicKey;

/// Longest token accepted (bytes). Real access tokens are 0.5–2 KB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `sub` (or configured subject claim) accepted.
pub const MAX_SUBJECT_CHARS: usize = 256;

/// The signature algorithms the gateway verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rs256,
    Es256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Rs256, Algorithm::Es256];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Why a token is refused: each is a 401 with its own code. Messages never carry the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Expired,
    BadSignature,
    UnknownIssuer,
    Audience,
    NotYetValid,
    Malformed,
    UnknownKey,
    Algorithm,
}

impl Refusal {
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::Expired => ErrorCode::TokenExpired,
            Refusal::BadSignature => ErrorCode::TokenBadSignature,
            Refusal::UnknownIssuer => ErrorCode::TokenUnknownIssuer,
            Refusal::Audience => ErrorCode::TokenAudience,
            Refusal::NotYetValid => ErrorCode::TokenNotYetValid,
            Refusal::Malformed => ErrorCode::TokenMalformed,
            Refusal::UnknownKey => ErrorCode::TokenUnknownKey,
            Refusal::Algorithm => ErrorCode::TokenAlgorithm,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Expired => "the token has expired (`exp`)",
            Refusal::BadSignature => "the token's signature does not verify",
            Refusal::UnknownIssuer => "the token's issuer (`iss`) is not trusted by this gateway",
            Refusal::Audience => "the token's audience (`aud`) does not name this gateway",
            Refusal::NotYetValid => "the token is not valid yet (`nbf` or `iat` is in the future)",
            Refusal::Malformed => {
                "the token is not a well-formed signed JWT (three base64url parts, JSON header and claims, `exp` and a subject)"
            }
            Refusal::UnknownKey => "the token's signing key (`kid`) is not in the issuer's key set",
            Refusal::Algorithm => "the token's algorithm (`alg`) is not allowed for this issuer or does not fit its key",
        }
    }

    pub fn error(self) -> GatewayError {
        GatewayError::unauthorized(self.code(), self.message())
    }
}

/// A token split and decoded, not yet verified: nothing in it is trusted until the
/// `Signatures` port says its signature holds.
#[derive(Debug)]
pub struct Parsed<'t> {
    /// The header's `alg`, as written (checked against the issuer's list later).
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `base64url(header) . base64url(claims)`: what the signature covers.
    pub signing_input: &'t [u8],
    pub signature: Vec<u8>,
}

impl Parsed<'_> {
    /// The `iss` claim (unverified until the signature is).
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Whether a presented credential has the shape of a compact JWS (`xxx.yyy.zzz`, base64url
/// characters only). Decides which verifier sees it; [`parse`] does the real checks.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.len() <= MAX_TOKEN_BYTES
        && credential.bytes().filter(|b| *b == b'.').count() == 2
        && credential.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Splits and decodes a compact JWS. Never panics, whatever the input.
pub fn parse(token: &str) -> Result<Parsed<'_>, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let header: Map<String, Value> = decode_json(header)?;
    let claims: Map<String, Value> = decode_json(payload)?;
    let signature = decode(signature)?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(Refusal::Malformed),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= 256 => Some(kid.clone()),
        Some(_) => return Err(Refusal::Malformed),
    };
    // RFC 7515 §4.1.11: a recipient must reject `crit` extensions it does not understand; we
    // understand none (this also refuses unencoded payloads, `b64: false`).
    if header.contains_key("crit") {
        return Err(Refusal::Malformed);
    }
    let signing_input = &token.as_bytes()[..token.len() - signature_len(token)];
    Ok(Parsed { alg, kid, claims, signing_input, signature })
}

/// Length of the last part plus its dot.
fn signature_len(token: &str) -> usize {
    token.rsplit('.').next().map_or(0, |s| s.len() + 1)
}

fn decode(part: &str) -> Result<Vec<u8>, Refusal> {
    // URL_SAFE_NO_PAD refuses padding, non-alphabet bytes and non-canonical trailing bits.
    URL_SAFE_NO_PAD.decode(part).map_err(|_| Refusal::Malformed)
}

fn decode_json(part: &str) -> Result<Map<String, Value>, Refusal> {
    if part.is_empty() {
        return Err(Refusal::Malformed);
    }
    serde_json::from_slice(&decode(part)?).map_err(|_| Refusal::Malformed)
}

/// Whether `key` can verify `alg` (the JWK's `kty`/`crv` against the header's `alg`). The
/// signature itself is the `Signatures` port's to check.
pub fn key_fits(key: &PublicKey, alg: Algorithm) -> bool {
    matches!((key, alg), (PublicKey::Rsa { .. }, Algorithm::Rs256) | (PublicKey::P256 { .. }, Algorithm::Es256))
}

/// What the registered claims are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub audiences: &'a [String],
    pub clock_skew_secs: u64,
    pub now_ms: u64,
}

/// The registered claims of a verified token, once they pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Validity {
    /// `exp`, unix seconds (rounded down).
    pub expires_at: u64,
    /// `nbf`, unix seconds, if any.
    pub not_before: Option<f64>,
    /// `iat`, unix seconds, if any.
    pub issued_at: Option<u64>,
}

/// Checks `exp` (required), `nbf`, `iat` and `aud` (required, one of `audiences`), with
/// `clock_skew_secs` leeway on the times. Run only on claims whose signature verified.
pub fn check_claims(claims: &Map<String, Value>, expected: Expected<'_>) -> Result<Validity, Refusal> {
    let now = expected.now_ms as f64 / 1000.0;
    let skew = expected.clock_skew_secs as f64;
    let time = |name: &str| -> Result<Option<f64>, Refusal> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|t| t.is_finite() && *t >= 0.0).map(Some).ok_or(Refusal::Malformed),
        }
    };
    let exp = time("exp")?.ok_or(Refusal::Malformed)?;
    let nbf = time("nbf")?;
    let iat = time("iat")?;
    if now >= exp + skew {
        return Err(Refusal::Expired);
    }
    if nbf.is_some_and(|nbf| now + skew < nbf) || iat.is_some_and(|iat| now + skew < iat) {
        return Err(Refusal::NotYetValid);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => expected.audiences.iter().any(|a| a == aud),
        Some(Value::Array(items)) => {
            items.iter().filter_map(Value::as_str).any(|aud| expected.audiences.iter().any(|a| a == aud))
        }
        _ => false,
    };
    if !audience_ok {
        return Err(Refusal::Audience);
    }
    Ok(Validity { expires_at: exp as u64, not_before: nbf, issued_at: iat.map(|t| t as u64) })
}

/// The subject: `claim` (default `sub`), a non-empty string of at most [`MAX_SUBJECT_CHARS`].
pub fn subject<'c>(claims: &'c Map<String, Value>, claim: &str) -> Result<&'c str, Refusal> {
    match claims.get(claim) {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_SUBJECT_CHARS => Ok(s),
        _ => Err(Refusal::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::features::identity::testing::{self, claims_at};
    use crate::gateway::ports::signatures::rustcrypto;
    use serde_json::json;

    const NOW_MS: u64 = 1_700_000_000_000;

    fn expected(audiences: &[String]) -> Expected<'_> {
        Expected { audiences, clock_skew_secs: 30, now_ms: NOW_MS }
    }

    fn rsa() -> PublicKey {
        testing::rsa_public()
    }

    fn ec() -> PublicKey {
        testing::ec_public()
    }

    fn verify(token: &str, key: &PublicKey) -> Result<(), Refusal> {
        let parsed = parse(token)?;
        let alg = Algorithm::parse(&parsed.alg).ok_or(Refusal::Algorithm)?;
        if !key_fits(key, alg) {
            return Err(Refusal::Algorithm);
        }
        if !rustcrypto::verify(key, parsed.signing_input, &parsed.signature) {
            return Err(Refusal::BadSignature);
        }
        check_claims(&parsed.claims, expected(&["gw".to_string()])).map(|_| ())
    }

    #[test]
    fn valid_rs256_and_es256() {
        let claims = claims_at(NOW_MS, "gw");
        let rs = testing::sign_rs256(&claims, Some("rsa-1"));
        let es = testing::sign_es256(&claims, Some("ec-1"));
        assert!(looks_like_jwt(&rs) && looks_like_jwt(&es));
        assert_eq!(verify(&rs, &rsa()), Ok(()));
        assert_eq!(verify(&es, &ec()), Ok(()));
        let parsed = parse(&rs).unwrap();
        assert_eq!((parsed.alg.as_str(), parsed.kid.as_deref()), ("RS256", Some("rsa-1")));
        assert_eq!(parsed.issuer(), Some(testing::ISSUER));
        assert_eq!(parsed.signature.len(), 256);
        assert_eq!(parse(&es).unwrap().signature.len(), 64);
    }

    #[test]
    fn tampered_tokens_fail_the_signature() {
        let claims = claims_at(NOW_MS, "gw");
        for token in [testing::sign_rs256(&claims, None), testing::sign_es256(&claims, None)] {
            let key = if token.starts_with(&testing::header_b64("RS256", None)) { rsa() } else { ec() };
            let parts: Vec<&str> = token.split('.').collect();
            let mut other = claims.clone();
            other["sub"] = json!("admin");
            let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(other.to_string()), parts[2]);
            assert_eq!(verify(&forged, &key), Err(Refusal::BadSignature));
            let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            sig[10] ^= 1;
            let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
            assert_eq!(verify(&flipped, &key), Err(Refusal::BadSignature));
            let empty = format!("{}.{}.", parts[0], parts[1]);
            assert_eq!(verify(&empty, &key), Err(Refusal::BadSignature));
        }
        // An ES256 signature in DER form (what a naive signer emits) is not JWS.
        let es = testing::sign_es256(&claims, None);
        let parts: Vec<&str> = es.split('.').collect();
        let raw = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let mut der = vec![0x30, 0x44, 0x02, 0x20];
        der.extend_from_slice(&raw[..32]);
        der.extend_from_slice(&[0x02, 0x20]);
        der.extend_from_slice(&raw[32..]);
        let der_token = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&der));
        assert_eq!(verify(&der_token, &ec()), Err(Refusal::BadSignature));
    }

    #[test]
    fn algorithm_confusion_and_none_are_refused() {
        let claims = claims_at(NOW_MS, "gw");
        // `alg: none` with an empty signature: not an algorithm we know.
        let none = format!("{}.{}.", testing::header_b64("none", None), URL_SAFE_NO_PAD.encode(claims.to_string()));
        assert_eq!(parse(&none).unwrap().alg, "none");
        assert_eq!(verify(&none, &rsa()), Err(Refusal::Algorithm));
        // HS256 "signed" with the RSA public key's bytes as the HMAC secret (the classic
        // confusion attack): HS256 is not an algorithm we know, whatever the key.
        use hmac::{Hmac, Mac};
        use sha2::Sha256;
        let input = format!("{}.{}", testing::header_b64("HS256", None), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut mac = Hmac::<Sha256>::new_from_slice(testing::RSA_N.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        let hs = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        assert_eq!(verify(&hs, &rsa()), Err(Refusal::Algorithm));
        // RS256 header, EC key (and the other way round): the key does not fit the alg.
        assert_eq!(verify(&testing::sign_rs256(&claims, None), &ec()), Err(Refusal::Algorithm));
        assert_eq!(verify(&testing::sign_es256(&claims, None), &rsa()), Err(Refusal::Algorithm));
        assert!(!key_fits(&ec(), Algorithm::Rs256) && !key_fits(&rsa(), Algorithm::Es256));
        // `crit` is refused.
        let crit = format!(
            "{}.{}.AA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","crit":["b64"],"b64":false}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(parse(&crit).unwrap_err(), Refusal::Malformed);
    }

    #[test]
    fn registered_claims() {
        let aud = ["gw".to_string(), "other".to_string()];
        let check = |claims: Value| check_claims(claims.as_object().unwrap(), expected(&aud));
        let now = (NOW_MS / 1000) as i64;
        assert!(check(json!({"exp": now + 10, "aud": "gw"})).is_ok());
        assert!(check(json!({"exp": now + 10, "aud": ["x", "other"]})).is_ok());
        assert_eq!(check(json!({"exp": now - 31, "aud": "gw"})), Err(Refusal::Expired));
        assert!(check(json!({"exp": now - 29, "aud": "gw"})).is_ok(), "within the skew");
        assert_eq!(check(json!({"exp": now + 10, "nbf": now + 31, "aud": "gw"})), Err(Refusal::NotYetValid));
        assert_eq!(check(json!({"exp": now + 10, "iat": now + 60, "aud": "gw"})), Err(Refusal::NotYetValid));
        assert!(check(json!({"exp": now + 10, "nbf": now + 29, "aud": "gw"})).is_ok());
        assert_eq!(check(json!({"exp": now + 10, "aud": "gateway"})), Err(Refusal::Audience));
        assert_eq!(check(json!({"exp": now + 10, "aud": ["x"]})), Err(Refusal::Audience));
        assert_eq!(check(json!({"exp": now + 10})), Err(Refusal::Audience));
        assert_eq!(check(json!({"exp": now + 10, "aud": 7})), Err(Refusal::Audience));
        assert_eq!(check(json!({"aud": "gw"})), Err(Refusal::Malformed), "exp is required");
        assert_eq!(check(json!({"exp": "tomorrow", "aud": "gw"})), Err(Refusal::Malformed));
        assert_eq!(check(json!({"exp": -5, "aud": "gw"})), Err(Refusal::Malformed));
        let v = check(json!({"exp": now as f64 + 10.5, "iat": now, "aud": "gw"})).unwrap();
        assert_eq!((v.expires_at, v.issued_at), (now as u64 + 10, Some(now as u64)));
        let claims = json!({"sub": "alice", "email": "", "n": 1});
        let claims = claims.as_object().unwrap();
        assert_eq!(subject(claims, "sub"), Ok("alice"));
        assert_eq!(subject(claims, "email"), Err(Refusal::Malformed));
        assert_eq!(subject(claims, "n"), Err(Refusal::Malformed));
        assert_eq!(subject(claims, "missing"), Err(Refusal::Malformed));
    }

    #[test]
    fn garbage_never_panics_and_is_malformed() {
        let claims = claims_at(NOW_MS, "gw");
        let good = testing::sign_rs256(&claims, Some("rsa-1"));
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        let oversized = format!("{}.{}.{}", "e".repeat(5000), "e".repeat(5000), "e");
        let padded = good.replacen('.', "=.", 1);
        let not_json = format!("{}.{}.AA", URL_SAFE_NO_PAD.encode("nope"), URL_SAFE_NO_PAD.encode("{}"));
        let array_header = format!("{}.{}.AA", URL_SAFE_NO_PAD.encode("[1]"), URL_SAFE_NO_PAD.encode("{}"));
        let no_alg = format!("{}.{}.AA", URL_SAFE_NO_PAD.encode("{}"), URL_SAFE_NO_PAD.encode("{}"));
        let num_alg = format!("{}.{}.AA", URL_SAFE_NO_PAD.encode(r#"{"alg":1}"#), URL_SAFE_NO_PAD.encode("{}"));
        let num_kid =
            format!("{}.{}.AA", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":1}"#), URL_SAFE_NO_PAD.encode("{}"));
        let trailing_bits = format!("{}.{}.AB", testing::header_b64("RS256", None), URL_SAFE_NO_PAD.encode("{}"));
        for bad in [
            "",
            ".",
            "..",
            "...",
            "a.b",
            "a.b.c.d",
            "eyJ.eyJ.x",
            "\u{0}.\u{0}.\u{0}",
            "ééé.ééé.ééé",
            &huge,
            &oversized,
            &padded,
            &not_json,
            &array_header,
            &no_alg,
            &num_alg,
            &num_kid,
            &trailing_bits,
        ] {
            assert_eq!(parse(bad).unwrap_err(), Refusal::Malformed, "{:?}", &bad[..bad.len().min(40)]);
        }
        // Every truncation and every single-byte change of a good token: no panic, never valid.
        let key = rsa();
        for cut in 0..good.len() {
            assert!(verify(&good[..cut], &key).is_err());
        }
        let bytes = good.as_bytes();
        for i in (0..bytes.len()).step_by(7) {
            for replacement in [b'A', b'_', b'.', b'=', 0xff] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[i] = replacement;
                let Ok(text) = String::from_utf8(changed) else { continue };
                assert!(verify(&text, &key).is_err(), "changed byte {i}");
            }
        }
        for message in [Refusal::Malformed, Refusal::BadSignature, Refusal::Expired] {
            assert!(!message.message().contains(&good[..20]));
        }
    }
}
