//! Credentials that cost an outbound call before the model call: OAuth2 access tokens (Vertex
//! AI's service-account JWT bearer grant, Databricks' OAuth M2M client credentials) and AWS STS
//! role credentials. Each provider owns a `TokenCache`, so a token is fetched once per isolate
//! and reused until shortly before it expires; `Provider::authorize` fills it through the
//! `Upstream` port and `build_request` (synchronous) reads it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use http::{HeaderValue, Request};
use serde_json::Value;

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::{Clock, Upstream};
use crate::gateway::providers::common::{origin_error, post, xml_text};
use crate::gateway::util::text::truncate;
use crate::gateway::wire::json::value_from_slice;

/// Longest token-endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// A token is renewed this long before it expires (or halfway through a shorter life), so a
/// request never goes out with one that expires on the way.
const REFRESH_MARGIN_MS: u64 = 5 * 60 * 1000;

/// One cached credential and when to fetch the next.
struct Cached<T> {
    value: T,
    refresh_at_ms: u64,
}

/// A per-isolate credential cache. A `Mutex` (uncontended: hosts are single-threaded) keeps
/// `Provider` `Send + Sync`, as the config's `Arc<Endpoint>` wants.
pub struct TokenCache<T> {
    slot: Mutex<Option<Cached<T>>>,
    /// A request is fetching a fresh value: the others wait for it (single flight).
    in_flight: AtomicBool,
}

impl<T> Default for TokenCache<T> {
    fn default() -> Self {
        TokenCache { slot: Mutex::new(None), in_flight: AtomicBool::new(false) }
    }
}

/// Clears the in-flight mark when the fetch ends, fails or is dropped (a client that left).
struct Flight<'a>(&'a AtomicBool);

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How often a waiting request looks for the fetching one's result.
const WAIT_STEP_MS: u64 = 10;

impl<T> std::fmt::Debug for TokenCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache { .. }") // never a credential in a log line
    }
}

impl<T: Clone> TokenCache<T> {
    /// The cached credential while it is fresh at `now_ms`.
    pub fn get(&self, now_ms: u64) -> Option<T> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|c| now_ms < c.refresh_at_ms).map(|c| c.value.clone())
    }

    /// Caches `value`, valid until `expires_at_ms`.
    /// Makes sure a fresh value is cached: fetched (`fetch` returns it and when it expires)
    /// by one request at a time. While one fetches, concurrent requests of the isolate wait
    /// for its result (up to `timeout_ms`) instead of each making its own exchange; if it
    /// fails, they fetch themselves.
    pub async fn ensure<C, F, Fut>(&self, clock: &C, timeout_ms: u64, fetch: F) -> Result<()>
    where
        C: Clock,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, u64)>>,
    {
        if self.get(clock.now_ms()).is_some() {
            return Ok(());
        }
        if self.in_flight.swap(true, Ordering::AcqRel) {
            let deadline = clock.now_ms().saturating_add(timeout_ms);
            while self.in_flight.load(Ordering::Acquire) && clock.now_ms() < deadline {
                clock.sleep(WAIT_STEP_MS).await;
            }
            if self.get(clock.now_ms()).is_some() {
                return Ok(());
            }
            self.in_flight.store(true, Ordering::Release);
        }
        let _flight = Flight(&self.in_flight);
        let (value, expires_at_ms) = fetch().await?;
        self.put(value, clock.now_ms(), expires_at_ms);
        Ok(())
    }

    pub fn put(&self, value: T, now_ms: u64, expires_at_ms: u64) {
        let life = expires_at_ms.saturating_sub(now_ms);
        let refresh_at_ms = expires_at_ms.saturating_sub(REFRESH_MARGIN_MS.min(life / 2));
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached { value, refresh_at_ms });
    }
}

/// An access token as `build_request` needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(pub String);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

/// The error when `build_request` finds no fresh credential (`Provider::authorize` was not
/// called first, or the token expired between the two).
pub fn not_authorized(provider: &str) -> GatewayError {
    GatewayError::internal(
        ErrorCode::SecretMissing,
        format!("the {provider} credential was not obtained before the request was built"),
    )
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_escape(name, &mut out);
        out.push('=');
        form_escape(value, &mut out);
    }
    out
}

fn form_escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The content type of a token request (`form_encode`'s body).
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// A form POST of `body` to a token endpoint.
pub fn form_request(url: String, body: String) -> Result<Request<Vec<u8>>> {
    post(url, HeaderValue::from_static(FORM_CONTENT_TYPE), body.into_bytes())
}

/// Sends a token request and returns the body of its 2xx answer. `what` names the exchange in
/// errors ("vertex_ai token exchange"); a refusal keeps the endpoint's own message (never the
/// request, which carries the credential).
pub async fn send_form<P: Upstream>(
    ports: &P,
    request: &Request<Vec<u8>>,
    timeout_ms: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let response = ports.send(request, timeout_ms).await.map_err(|e| {
        // The host's reason may name internal addresses: clients get a plain statement.
        let reason = match e {
            crate::gateway::ports::UpstreamError::Timeout => "timed out",
            _ => "could not reach the token endpoint",
        };
        GatewayError::bad_gateway(ErrorCode::OriginUnreachable, format!("{what} failed: {reason}"))
    })?;
    let status = response.status();
    let bytes = ports.read_body(response.into_body(), MAX_TOKEN_RESPONSE).await.map_err(|e| {
        let reason = match e {
            crate::gateway::ports::UpstreamError::Timeout => "timed out",
            _ => "the connection failed",
        };
        GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("{what}: reading the answer failed: {reason}"))
    })?;
    if !status.is_success() {
        // JSON error bodies (OAuth's `error_description`, Google's, Databricks') or AWS's XML.
        let text = String::from_utf8_lossy(&bytes);
        let detail = value_from_slice(&bytes)
            .ok()
            .and_then(|v| v.get("error_description").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| xml_text(&text, "Message").map(str::to_owned));
        let message = match detail {
            Some(detail) => format!("{what} was refused (HTTP {}): {}", status.as_u16(), truncate(&detail, 300)),
            None => format!("{what} was refused: {}", origin_error(status, &bytes).message),
        };
        return Err(GatewayError::bad_gateway(ErrorCode::OriginRejected, message));
    }
    Ok(bytes)
}

/// `(access_token, expires_at_ms)` of an OAuth2 token answer (RFC 6749 §5.1).
pub fn oauth_token(body: &[u8], now_ms: u64, what: &str) -> Result<(AccessToken, u64)> {
    let bad =
        |problem: &str| GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("{what} answered {problem}"));
    let value: Value = serde_json::from_slice(body).map_err(|_| bad("something that is not JSON"))?;
    let token = value.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty());
    let token = token.ok_or_else(|| bad("no access_token"))?;
    // Without expires_in, assume the usual hour.
    let expires_in = value.get("expires_in").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    let expires_in_ms = expires_in.unwrap_or(3600).min(86_400).saturating_mul(1000);
    Ok((AccessToken(token.to_string()), now_ms.saturating_add(expires_in_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_refreshes_before_expiry() {
        let cache = TokenCache::default();
        assert_eq!(cache.get(0), None);
        cache.put(AccessToken("t".into()), 1_000, 1_000 + 3_600_000);
        assert_eq!(cache.get(1_000), Some(AccessToken("t".into())));
        assert_eq!(cache.get(1_000 + 3_600_000 - 300_001), Some(AccessToken("t".into())));
        assert_eq!(cache.get(1_000 + 3_600_000 - 300_000), None);
        // A short-lived credential is renewed halfway.
        cache.put(AccessToken("s".into()), 0, 60_000);
        assert_eq!(cache.get(29_999), Some(AccessToken("s".into())));
        assert_eq!(cache.get(30_000), None);
        assert_eq!(format!("{cache:?} {:?}", AccessToken("secret".into())), "TokenCache { .. } AccessToken(..)");
    }

    /// Concurrent requests of one isolate make one token exchange, not one each; a failed
    /// exchange lets the next request try again.
    #[test]
    fn concurrent_refreshes_make_one_exchange() {
        use crate::gateway::ports::memory::{block_on, yield_once, MemoryHost};
        use std::cell::Cell;
        use std::pin::Pin;
        use std::task::Poll;
        let host = MemoryHost::new(|_| Err(crate::gateway::ports::UpstreamError::Timeout));
        let cache: TokenCache<AccessToken> = TokenCache::default();
        let exchanges = Cell::new(0);
        let fetch = || async {
            exchanges.set(exchanges.get() + 1);
            yield_once().await; // the exchange takes a while: the others arrive meanwhile
            Ok((AccessToken("t".into()), host.now_ms() + 3_600_000))
        };
        let mut calls: Vec<Pin<Box<dyn Future<Output = Result<()>> + '_>>> =
            (0..5).map(|_| Box::pin(cache.ensure(&host, 5_000, fetch)) as Pin<Box<dyn Future<Output = _>>>).collect();
        let mut done = vec![false; calls.len()];
        block_on(std::future::poll_fn(|cx| {
            for (call, done) in calls.iter_mut().zip(done.iter_mut()) {
                if !*done {
                    if let Poll::Ready(result) = call.as_mut().poll(cx) {
                        result.unwrap();
                        *done = true;
                    }
                }
            }
            if done.iter().all(|d| *d) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        assert_eq!(exchanges.get(), 1, "one exchange for five concurrent requests");
        assert_eq!(cache.get(host.now_ms()), Some(AccessToken("t".into())));

        let failing: TokenCache<AccessToken> = TokenCache::default();
        let e = block_on(failing.ensure(&host, 5_000, || async {
            Err::<(AccessToken, u64), _>(GatewayError::bad_gateway(ErrorCode::OriginUnreachable, "down"))
        }));
        assert!(e.is_err());
        block_on(failing.ensure(&host, 5_000, || async { Ok((AccessToken("u".into()), host.now_ms() + 60_000)) }))
            .unwrap();
        assert_eq!(failing.get(host.now_ms()), Some(AccessToken("u".into())));
    }

    #[test]
    fn forms_and_token_answers() {
        assert_eq!(
            form_encode(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("a b", "x/y+z=")]),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&a%20b=x%2Fy%2Bz%3D"
        );
        let (token, expires) =
            oauth_token(br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#, 10, "t").unwrap();
        assert_eq!((token.0.as_str(), expires), ("ya29.x", 10 + 3_599_000));
        let (_, expires) = oauth_token(br#"{"access_token":"x","expires_in":"60"}"#, 0, "t").unwrap();
        assert_eq!(expires, 60_000);
        for bad in [&b"<html>"[..], b"{}", br#"{"access_token":""}"#, b"[]"] {
            let e = oauth_token(bad, 0, "vertex_ai token exchange").unwrap_err();
            assert_eq!(e.code, "origin_bad_response");
            assert!(e.message.starts_with("vertex_ai token exchange answered"));
        }
    }
}
