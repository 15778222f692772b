//! Google's service-account OAuth2 flow (the JWT bearer grant, RFC 7523), for Vertex AI: a
//! JWT naming the service account, the scope and the token endpoint is signed RS256 with the
//! account's private key and exchanged at `token_uri` for an access token (an hour's worth).
//! Pure Rust (RustCrypto `rsa` + `sha2`), so it runs on both wasm targets.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::rand_core::{CryptoRng, RngCore};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::{BigUint, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::{Clock, Upstream};
use crate::gateway::providers::token::{form_encode, form_request, oauth_token, send_form, AccessToken};

/// The scope Vertex AI needs (MLflow's `_DEFAULT_SCOPES`).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime asked for in the assertion (Google's maximum).
const ASSERTION_SECS: u64 = 3600;

/// The fields of a service-account key file the flow uses.
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    key: RsaPrivateKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount").field("client_email", &self.client_email).finish_non_exhaustive()
    }
}

fn credentials_error(problem: impl std::fmt::Display) -> GatewayError {
    GatewayError::not_configured(ErrorCode::BadOriginRequest, format!("vertex_credentials: {problem}"))
}

/// Checks a service-account key file's JSON shape (no key parsing): the problem, for config
/// checks of inline credentials.
pub fn check_service_account_json(text: &str) -> std::result::Result<(), String> {
    let value: Value = serde_json::from_str(text).map_err(|_| "is not valid JSON".to_string())?;
    if value.get("type").and_then(Value::as_str).is_some_and(|t| t != "service_account") {
        return Err("is not a service-account key (\"type\" must be \"service_account\")".into());
    }
    for field in ["client_email", "private_key"] {
        if value.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(format!("has no \"{field}\" (expected a service-account key file's JSON)"));
        }
    }
    Ok(())
}

impl ServiceAccount {
    /// Parses a service-account key file (the JSON Google Cloud hands out).
    pub fn parse(text: &str) -> Result<ServiceAccount> {
        check_service_account_json(text).map_err(credentials_error)?;
        let value: Value = serde_json::from_str(text).map_err(|_| credentials_error("is not valid JSON"))?;
        let field = |name: &str| value.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
        let token_uri = field("token_uri").unwrap_or(DEFAULT_TOKEN_URI).to_string();
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err(credentials_error("token_uri must be an http(s) URL"));
        }
        Ok(ServiceAccount {
            client_email: field("client_email").unwrap_or_default().to_string(),
            private_key_id: field("private_key_id").map(str::to_owned),
            token_uri,
            key: private_key(field("private_key").unwrap_or_default())?,
        })
    }

    /// The signed JWT assertion for `scope`, issued at `now_s`. `seed` seeds the RSA blinding.
    pub fn assertion(&self, scope: &str, now_s: u64, seed: [u8; 32]) -> Result<String> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = Value::String(kid.clone());
        }
        let claims = json!({
            "iss": self.client_email, "scope": scope, "aud": self.token_uri,
            "iat": now_s, "exp": now_s + ASSERTION_SECS,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signer = SigningKey::<Sha256>::new(self.key.clone());
        let signature = signer
            .try_sign_with_rng(&mut HashDrbg::new(seed), signing_input.as_bytes())
            .map_err(|e| credentials_error(format!("signing failed: {e}")))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
    }
}

/// An RSA private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what Google issues) or PKCS#1.
fn private_key(pem: &str) -> Result<RsaPrivateKey> {
    let (label, der) = pem_body(pem).ok_or_else(|| credentials_error("private_key is not a PEM block"))?;
    let key = match label {
        "PRIVATE KEY" => pkcs8_rsa_key(&der),
        "RSA PRIVATE KEY" => pkcs1_rsa_key(&der),
        other => return Err(credentials_error(format!("private_key: a {other} block is not an RSA private key"))),
    };
    key.ok_or_else(|| credentials_error("private_key cannot be read (not a valid RSA key)"))
}

// A minimal DER reader for the two RSA private-key encodings, instead of the `der`/`pkcs8`
// decoders (about 30 KB of wasm for what is a sequence of integers).

/// `(tag, contents, rest)` of the DER item at the start of `input`.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes.iter().fold(0usize, |len, b| len << 8 | usize::from(*b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// PKCS#8 `PrivateKeyInfo { version, AlgorithmIdentifier { rsaEncryption, NULL }, OCTET STRING }`.
fn pkcs8_rsa_key(der: &[u8]) -> Option<RsaPrivateKey> {
    /// 1.2.840.113549.1.1.1 (rsaEncryption).
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, info, _) = der_item(der)? else { return None };
    let (0x02, _version, rest) = der_item(info)? else { return None };
    let (0x30, algorithm, rest) = der_item(rest)? else { return None };
    let (0x06, oid, _) = der_item(algorithm)? else { return None };
    let (0x04, key, _) = der_item(rest)? else { return None };
    (oid == RSA_ENCRYPTION).then(|| pkcs1_rsa_key(key)).flatten()
}

/// PKCS#1 `RSAPrivateKey { version, n, e, d, p, q, dp, dq, qinv }` (two-prime keys).
fn pkcs1_rsa_key(der: &[u8]) -> Option<RsaPrivateKey> {
    let (0x30, mut rest, _) = der_item(der)? else { return None };
    let mut ints = Vec::with_capacity(9);
    while !rest.is_empty() {
        let (0x02, int, after) = der_item(rest)? else { return None };
        ints.push(BigUint::from_bytes_be(int));
        rest = after;
    }
    let [version, n, e, d, p, q, ..] = ints.as_slice() else { return None };
    if ints.len() != 9 || *version != BigUint::from(0u8) {
        return None;
    }
    RsaPrivateKey::from_components(n.clone(), e.clone(), d.clone(), vec![p.clone(), q.clone()]).ok()
}

/// `(label, DER)` of the first PEM block in `pem`.
fn pem_body(pem: &str) -> Option<(&str, Vec<u8>)> {
    let rest = pem.split_once("-----BEGIN ")?.1;
    let (label, rest) = rest.split_once("-----")?;
    let body = rest.split_once(&format!("-----END {label}-----"))?.0;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    Some((label, STANDARD.decode(b64).ok()?))
}

/// Exchanges a fresh assertion for an access token at the account's `token_uri`:
/// `(token, expires_at_ms)`.
pub async fn exchange<P: Upstream + Clock>(
    ports: &P,
    account: &ServiceAccount,
    scope: &str,
    timeout_ms: u64,
) -> Result<(AccessToken, u64)> {
    let now_ms = ports.now_ms();
    let mut seed = [0u8; 32];
    ports.random_bytes(&mut seed);
    let assertion = account.assertion(scope, now_ms / 1000, seed)?;
    let body = form_encode(&[("grant_type", JWT_BEARER), ("assertion", &assertion)]);
    let what = "the vertex_ai token exchange";
    let request = form_request(account.token_uri.clone(), body)?;
    let answer = send_form(ports, &request, timeout_ms, what).await?;
    oauth_token(&answer, now_ms, what)
}

/// A deterministic random bit generator (SHA-256 in counter mode over a 32-byte seed from the
/// host's CSPRNG), for RSA blinding: `rsa` wants a `CryptoRng`, the ports hand out bytes.
struct HashDrbg {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl HashDrbg {
    fn new(seed: [u8; 32]) -> Self {
        HashDrbg { seed, counter: 0, block: [0; 32], used: 32 }
    }
}

impl RngCore for HashDrbg {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                let mut hasher = Sha256::new();
                hasher.update(self.seed);
                hasher.update(self.counter.to_le_bytes());
                self.block = hasher.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for HashDrbg {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::signature::Verifier;
    use std::sync::OnceLock;

    /// A throwaway 1024-bit key (small: generated per test run, never a real credential).
    pub(crate) fn test_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut HashDrbg::new([7; 32]), 1024).unwrap())
    }

    /// The key as a PKCS#8 PEM block, as in Google's key files.
    pub(crate) fn test_key_pem() -> String {
        let der = test_key().to_pkcs8_der().unwrap();
        let b64 = STANDARD.encode(der.as_bytes());
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    }

    /// A service-account key file for the test key.
    pub(crate) fn test_account_json(token_uri: &str) -> String {
        json!({"type": "service_account", "project_id": "p", "private_key_id": "kid-1",
            "private_key": test_key_pem(), "client_email": "gw@p.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": token_uri})
        .to_string()
    }

    #[test]
    fn assertion_is_a_verifiable_rs256_jwt() {
        let account = ServiceAccount::parse(&test_account_json("https://oauth2.googleapis.com/token")).unwrap();
        let jwt = account.assertion(CLOUD_PLATFORM_SCOPE, 1_700_000_000, [1; 32]).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"}));
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss": "gw@p.iam.gserviceaccount.com", "scope": CLOUD_PLATFORM_SCOPE,
                "aud": "https://oauth2.googleapis.com/token", "iat": 1_700_000_000u64, "exp": 1_700_003_600u64})
        );
        let signature = Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(test_key().to_public_key());
        verifier.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).unwrap();
        // PKCS#1 v1.5 signatures are deterministic: blinding changes nothing but timing.
        assert_eq!(jwt, account.assertion(CLOUD_PLATFORM_SCOPE, 1_700_000_000, [2; 32]).unwrap());
    }

    #[test]
    fn bad_key_files_are_named_not_printed() {
        let cases = [
            ("{", "is not valid JSON"),
            (r#"{"type": "authorized_user"}"#, "is not a service-account key"),
            (r#"{"client_email": "a@b"}"#, "has no \"private_key\""),
            (r#"{"client_email": "a@b", "private_key": "secret-not-pem"}"#, "private_key is not a PEM block"),
            (
                r#"{"client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}"#,
                "private_key cannot be read",
            ),
            (
                r#"{"client_email": "a@b", "private_key": "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----"}"#,
                "is not an RSA private key",
            ),
        ];
        for (text, expected) in cases {
            let e = ServiceAccount::parse(text).unwrap_err();
            assert!(e.message.contains(expected), "{text}: {}", e.message);
            assert!(!e.message.contains("secret-not-pem"));
            assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE);
        }
        let mut account: Value = serde_json::from_str(&test_account_json("ftp://x")).unwrap();
        assert!(ServiceAccount::parse(&account.to_string()).unwrap_err().message.contains("token_uri"));
        account["token_uri"] = Value::Null;
        assert_eq!(ServiceAccount::parse(&account.to_string()).unwrap().token_uri, DEFAULT_TOKEN_URI);
    }

    #[test]
    fn both_pem_encodings_and_hostile_der() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let pkcs1 = test_key().to_pkcs1_der().unwrap();
        assert_eq!(pkcs1_rsa_key(pkcs1.as_bytes()).as_ref(), Some(test_key()));
        let pkcs8 = test_key().to_pkcs8_der().unwrap();
        assert_eq!(pkcs8_rsa_key(pkcs8.as_bytes()).as_ref(), Some(test_key()));
        let pem = format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
            STANDARD.encode(pkcs1.as_bytes())
        );
        assert_eq!(&private_key(&pem).unwrap(), test_key());
        // Truncations and flipped bytes never panic.
        let bytes = pkcs8.as_bytes();
        for cut in 0..bytes.len() {
            assert!(pkcs8_rsa_key(&bytes[..cut]).is_none());
        }
        for at in (0..bytes.len()).step_by(3) {
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x5a;
            let _ = pkcs8_rsa_key(&bad);
        }
        assert!(der_item(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(der_item(&[0x30, 0x80]).is_none());
    }

    #[test]
    fn drbg_streams_are_seeded() {
        let (mut a, mut b) = (HashDrbg::new([1; 32]), HashDrbg::new([1; 32]));
        let mut x = [0u8; 100];
        let mut y = [0u8; 100];
        a.fill_bytes(&mut x);
        b.fill_bytes(&mut y[..33]);
        b.fill_bytes(&mut y[33..]);
        assert_eq!(x, y);
        assert_ne!(HashDrbg::new([2; 32]).next_u64(), HashDrbg::new([1; 32]).next_u64());
    }
}
