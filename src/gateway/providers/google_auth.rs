//! Google's service-account OAuth2 flow (the JWT bearer grant, RFC 7523), for Vertex AI: a
//! JWT naming the service account, the scope and the token endpoint is signed RS256 with the
//! account's private key and exchanged at `token_uri` for an access token (an hour's worth).
//! The signature is the `Signatures` port's (WebCrypto in the worker, RustCrypto elsewhere).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::{Clock, Signatures, Upstream};
use crate::gateway::providers::token::{form_encode, form_request, oauth_token, send_form, AccessToken};
use crate::gateway::util::der;

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
    /// The private key as PKCS#8 DER (a PKCS#1 key file's key is wrapped).
    pkcs8: Vec<u8>,
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
            pkcs8: private_key(field("private_key").unwrap_or_default())?,
        })
    }

    /// The JWT assertion for `scope`, issued at `now_s`, signed through `signer`.
    pub async fn assertion(&self, signer: &impl Signatures, scope: &str, now_s: u64) -> Result<String> {
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
        let signature = (signer.sign_rs256(&self.pkcs8, signing_input.as_bytes()).await)
            .ok_or_else(|| credentials_error("private_key cannot sign (not a valid RSA key)"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// An RSA private key from PEM, as PKCS#8 DER: PKCS#8 (`BEGIN PRIVATE KEY`, what Google
/// issues) or PKCS#1 (`BEGIN RSA PRIVATE KEY`, wrapped). Only its shape is checked here.
fn private_key(pem: &str) -> Result<Vec<u8>> {
    let (label, der) = pem_body(pem).ok_or_else(|| credentials_error("private_key is not a PEM block"))?;
    let key = match label {
        "PRIVATE KEY" => der::pkcs8_rsa_inner(&der).and_then(der::pkcs1_integers).is_some().then_some(der),
        "RSA PRIVATE KEY" => der::pkcs1_integers(&der).is_some().then(|| der::pkcs8_of_pkcs1(&der)),
        other => return Err(credentials_error(format!("private_key: a {other} block is not an RSA private key"))),
    };
    key.ok_or_else(|| credentials_error("private_key cannot be read (not a valid RSA key)"))
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
pub async fn exchange<P: Upstream + Clock + Signatures>(
    ports: &P,
    account: &ServiceAccount,
    scope: &str,
    timeout_ms: u64,
) -> Result<(AccessToken, u64)> {
    let now_ms = ports.now_ms();
    let assertion = account.assertion(ports, scope, now_ms / 1000).await?;
    let body = form_encode(&[("grant_type", JWT_BEARER), ("assertion", &assertion)]);
    let what = "the vertex_ai token exchange";
    let request = form_request(account.token_uri.clone(), body)?;
    let answer = send_form(ports, &request, timeout_ms, what).await?;
    oauth_token(&answer, now_ms, what)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::ports::signatures::rustcrypto::HashDrbg;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::signature::Verifier;
    use rsa::RsaPrivateKey;
    use sha2::Sha256;
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

    fn signer() -> MemoryHost {
        MemoryHost::new(|_| Err(crate::gateway::ports::UpstreamError::Connect("no origin".into())))
    }

    #[test]
    fn assertion_is_a_verifiable_rs256_jwt() {
        let account = ServiceAccount::parse(&test_account_json("https://oauth2.googleapis.com/token")).unwrap();
        let jwt = block_on(account.assertion(&signer(), CLOUD_PLATFORM_SCOPE, 1_700_000_000)).unwrap();
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
        // PKCS#1 v1.5 signatures are deterministic: blinding (another seed) changes nothing
        // but timing.
        let host = signer();
        host.random_bytes(&mut [0; 32]);
        assert_eq!(jwt, block_on(account.assertion(&host, CLOUD_PLATFORM_SCOPE, 1_700_000_000)).unwrap());
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

    /// A key of the right shape whose numbers make no key: read, then refused by the signer
    /// with a message that names the problem (never the key's bytes).
    #[test]
    fn a_key_that_cannot_sign_is_named() {
        let account = ServiceAccount::parse(&test_account_json("https://t")).unwrap();
        let broken = ServiceAccount { pkcs8: der::pkcs8_of_pkcs1(&zero_key()), ..account };
        let e = block_on(broken.assertion(&signer(), CLOUD_PLATFORM_SCOPE, 1)).unwrap_err();
        assert!(e.message.contains("private_key cannot sign"), "{}", e.message);
    }

    /// PKCS#1 `RSAPrivateKey` of nine zero integers (version 0).
    fn zero_key() -> Vec<u8> {
        let mut ints = Vec::new();
        for _ in 0..9 {
            ints.extend_from_slice(&[0x02, 0x01, 0x00]);
        }
        let mut key = vec![0x30, ints.len() as u8];
        key.extend_from_slice(&ints);
        key
    }

    #[test]
    fn both_pem_encodings_sign_alike() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let pkcs1 = test_key().to_pkcs1_der().unwrap();
        let pkcs8 = test_key().to_pkcs8_der().unwrap();
        let pem = format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
            STANDARD.encode(pkcs1.as_bytes())
        );
        // A PKCS#1 key file's key is wrapped into the PKCS#8 that Google's own files hold.
        assert_eq!(private_key(&pem).unwrap(), pkcs8.as_bytes());
        assert_eq!(private_key(&test_key_pem()).unwrap(), pkcs8.as_bytes());
    }
}
