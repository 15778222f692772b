//! A test identity provider: one fixed RSA-2048 key (`rsa-1`) and one fixed P-256 key
//! (`ec-1`), their JWKS, and token signing. For unit tests and the pipeline benchmark; no host
//! uses it (and the release builds strip it). These private keys are public test fixtures:
//! never trust them anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures: the constants are valid keys

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::gateway::ports::signatures::PublicKey;

pub const ISSUER: &str = "https://idp.test";
pub const RSA_KID: &str = "rsa-1";
pub const EC_KID: &str = "ec-1";

pub const RSA_N: &str = "zAY5Ewv0DFxgdEn_EtfarWJ2uXOLNvq42YUpCMKTdKYD1oKIrV3cJS2b3HamZy1Q-95skSoB96MRIqyZnHCq5CkG3wK49CmnCZs3m_Uj5PnMXiBGD_rI4z5qbH2YUInqbuiK0CdopaaOlYxOmIaxQ6r3zYHr5L4X5CapbasvJSmjRgyXboMpebaHj7H-rC8SNwLApBZM-hX9Et6DQRe3q31hjWHEjMbK_mEAXVaEm02S3Fhlw-8LQQ4cvDPr7ZXiidvQhegq3A95UjbFEjem2Pug4U-P1FRK2DMwEEo-t_2s1CznB9dbl3Swsoj4ctHlQLBjLZA0SWyNsvBQKER0AQ";
pub const RSA_E: &str = "AQAB";
const RSA_D: &str = "YyBU46GnocfSHz4CfcO9Xgdceq8eQQig_iJZ9QUggojUjYjfYigbuT6HHx7Qq4mTcsQ3CHKaARjLzwaAHceJ6A_c5EZc2VhRbXPqGU6J8YrClirlD4d_yhT9vRdqhRr0-YznQMoc6HrbhOJmH2o1vxRWkJUiqQEI95MnN374CXvpgNc7oSFeEx-OIH4EYojS_v4MrZHPO1nEHVdPuXlYOCdaDV6GOVerTmfsfYP74PJSy9a8R4kX-7Y7dnajBjM_t4JCFWmD9j74KeiXwNjjOUvRt_ubSsDFIXomT1sD-Mlki3-iahUU42lE04mfjcr4QZSrMa8tQUEnP-GBsPDo5w";
const RSA_P: &str = "_3d5DpVdYWw0unSMVl_P5uHLCM7F6uKd9mOZHscEWIy0TW4mN3xnuWrM1AGlBZLznUh1FLPYpfuEllovDYSfLuuxxqXtXrK_qGkBxgbv7N-MJNtEUE7lzyq7nYbHgM4BFYBN19XGHBkuRB7eNtw3rx8Xq6QWwNNteQozyVU18Lc";
const RSA_Q: &str = "zHNCE0hzbrPIFVPPhAa4mZi0G94nZMu4wEA82YKgHoEUawnrHrHAZcXdtNGNpspEKld8CUDD_swwwHgSSpdVzivZptOzuwKlEjD36ZQGPM4OaFLYgrgcLzV4cUKiDu_ZSyvY_37_Fx8Q9h-oJHygIutv2CPBcKjbaHEcYX__GQc";
const EC_D: &str = "HjkPiDWTOn1UvwWkhlozsFs2hRe2mqskBV8DNmGRdiY";
pub const EC_X: &str = "C_YhTyWXlbuSe52ABDJnP-aXQiduvor1FdEIjYUitTE";
pub const EC_Y: &str = "KwYHa1QBZFKKtx1VRL43MaZW9OarjXEnQ7GhGHcX_Fc";

fn uint(b64: &str) -> rsa::BigUint {
    rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(b64).unwrap())
}

pub fn rsa_public() -> PublicKey {
    PublicKey::Rsa { n: URL_SAFE_NO_PAD.decode(RSA_N).unwrap(), e: URL_SAFE_NO_PAD.decode(RSA_E).unwrap() }
}

pub fn ec_public() -> PublicKey {
    let decode = |b64| <[u8; 32]>::try_from(URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap();
    PublicKey::P256 { x: decode(EC_X), y: decode(EC_Y) }
}

fn ec_private() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&URL_SAFE_NO_PAD.decode(EC_D).unwrap()).unwrap()
}

/// The provider's key set: `rsa-1` (RS256) and `ec-1` (ES256).
pub fn jwks() -> Value {
    json!({"keys": [
        {"kty": "RSA", "kid": RSA_KID, "use": "sig", "alg": "RS256", "n": RSA_N, "e": RSA_E},
        {"kty": "EC", "kid": EC_KID, "use": "sig", "alg": "ES256", "crv": "P-256", "x": EC_X, "y": EC_Y},
    ]})
}

/// base64url of a JWS header `{"alg", "typ": "JWT", "kid"?}`.
pub fn header_b64(alg: &str, kid: Option<&str>) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    URL_SAFE_NO_PAD.encode(header.to_string())
}

fn signing_input(alg: &str, claims: &Value, kid: Option<&str>) -> String {
    format!("{}.{}", header_b64(alg, kid), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// An RS256 token over `claims`, signed with the fixture RSA key.
pub fn sign_rs256(claims: &Value, kid: Option<&str>) -> String {
    let input = signing_input("RS256", claims, kid);
    static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        rsa::RsaPrivateKey::from_components(uint(RSA_N), uint(RSA_E), uint(RSA_D), vec![uint(RSA_P), uint(RSA_Q)])
            .unwrap()
    });
    let signature = key.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input.as_bytes())).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An ES256 token over `claims`, signed with the fixture P-256 key (r || s).
pub fn sign_es256(claims: &Value, kid: Option<&str>) -> String {
    use p256::ecdsa::signature::Signer;
    let input = signing_input("ES256", claims, kid);
    let signature: p256::ecdsa::Signature = ec_private().sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// Claims valid at `now_ms` for an hour: issuer [`ISSUER`], subject `alice`, audience `aud`,
/// tenant claim `org_id: acme`, `groups` naming endpoints with the `gw:` prefix.
pub fn claims_at(now_ms: u64, aud: &str) -> Value {
    let now = now_ms / 1000;
    json!({
        "iss": ISSUER, "sub": "alice", "aud": aud, "iat": now, "nbf": now, "exp": now + 3600,
        "org_id": "acme", "groups": ["gw:chat", "staff"],
    })
}
