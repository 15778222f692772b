//! Credentials the mock knows: AWS access keys (the documented example key, plus what its STS
//! hands out), Google service-account public keys registered by a test, and the bearer tokens
//! its token endpoints issued. Unlike request history, these survive `/_mock/reset`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use rsa::{BigUint, RsaPublicKey};

/// AWS's documented example credentials (SigV4 test suite), always accepted.
pub const EXAMPLE_ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
pub const EXAMPLE_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// An AWS secret key and the session token that must come with it (temporary credentials).
#[derive(Clone)]
pub struct AwsSecret {
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

#[derive(Default)]
struct Inner {
    aws: HashMap<String, AwsSecret>,
    google_keys: HashMap<String, RsaPublicKey>,
    tokens: HashSet<String>,
}

pub struct Creds {
    inner: Mutex<Inner>,
}

impl Default for Creds {
    fn default() -> Self {
        let mut inner = Inner::default();
        inner.aws.insert(
            EXAMPLE_ACCESS_KEY_ID.into(),
            AwsSecret { secret_access_key: EXAMPLE_SECRET_ACCESS_KEY.into(), session_token: None },
        );
        Creds { inner: Mutex::new(inner) }
    }
}

impl Creds {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn aws_secret(&self, access_key_id: &str) -> Option<AwsSecret> {
        self.lock().aws.get(access_key_id).cloned()
    }

    pub fn add_aws(&self, access_key_id: String, secret: AwsSecret) {
        self.lock().aws.insert(access_key_id, secret);
    }

    /// Registers a service account's public key (`n` as hex, `e` as a number).
    pub fn add_google_key(&self, client_email: &str, n_hex: &str, e: u64) -> Result<(), String> {
        let n = BigUint::parse_bytes(n_hex.as_bytes(), 16).ok_or("n must be a hex number")?;
        let key = RsaPublicKey::new(n, BigUint::from(e)).map_err(|e| e.to_string())?;
        self.lock().google_keys.insert(client_email.to_owned(), key);
        Ok(())
    }

    pub fn google_key(&self, client_email: &str) -> Option<RsaPublicKey> {
        self.lock().google_keys.get(client_email).cloned()
    }

    pub fn issue_token(&self, token: String) {
        self.lock().tokens.insert(token);
    }

    pub fn token_is_valid(&self, token: &str) -> bool {
        self.lock().tokens.contains(token)
    }
}
