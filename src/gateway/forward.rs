//! Forwarding with failover: origins are tried in the order routing chose, skipping those a
//! per-isolate circuit breaker has marked down, within one total deadline.
//!
//! Retryable: connect errors, timeouts, 429 and 5xx (the next origin is tried; a 429 on the
//! last origin is retried after its `Retry-After` when that fits the deadline). Never 4xx: the
//! request itself is wrong. Never once the response head was accepted: from then on bytes may
//! already be on their way to the client.

use std::cell::RefCell;

use http::{header, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::gateway::config::{Config, Endpoint, Origin};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::features::normalize::Written;
use crate::gateway::ports::{Ports, UpstreamError};
use crate::gateway::providers::adapter::Call;
use crate::gateway::types::Operation;
use crate::gateway::util::map::FastMap;
use crate::gateway::util::text::{scrub, truncate};

/// Consecutive failures after which an origin is skipped for the cool-down.
const BREAKER_THRESHOLD: u32 = 3;
/// Longest `Retry-After` the gateway waits out itself (it still has to fit the deadline).
const MAX_RETRY_AFTER_MS: u64 = 10_000;

/// One origin tried, for the log line.
#[derive(Debug, Serialize)]
pub struct AttemptLog {
    pub origin: String,
    /// What clients may see of the origin (`x-gateway-origin`): its region and its index in
    /// the endpoint's `origins`, e.g. `eu#0` (`default` when it has no region).
    pub id: String,
    /// `ok`, `http_<status>`, `connect_error`, `timeout`.
    pub outcome: String,
    /// The host's reason for a connect or body error, scrubbed of URLs and key-like tokens
    /// (for the operator; clients get none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the attempt ended (ms; for the request's span, not the log line).
    #[serde(skip)]
    pub at_ms: u64,
}

/// What one forwarded call is.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    pub endpoint: &'a Endpoint,
    pub op: Operation,
    pub stream: bool,
    /// Re-aim the provider's request at another path of its API (a Responses passthrough).
    pub retarget: Option<&'a Retarget>,
    /// The residency pin (endpoint's or key's): failures are reported as the region's.
    pub pin: Option<&'a str>,
    /// Trace-context headers every origin request carries (W3C `traceparent`/`tracestate`).
    pub trace: &'a [(http::HeaderName, http::HeaderValue)],
    /// The body's bytes, when the pipeline has them (see [`Call::written`]).
    pub written: Option<&'a Written>,
}

/// A chat request the provider built (URL, credentials, headers), re-aimed at another path of
/// the same OpenAI-style API with a body of its own: `…/chat/completions` → `…/responses`.
pub struct Retarget {
    /// Replaces the trailing `chat/completions` of the request's path.
    pub path: &'static str,
    pub body: Vec<u8>,
}

impl Retarget {
    fn apply(&self, request: Request<Vec<u8>>) -> Result<Request<Vec<u8>>> {
        let (mut parts, _) = request.into_parts();
        let uri = parts.uri.to_string();
        let (path, query) = match uri.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (uri.as_str(), None),
        };
        let cannot = || {
            GatewayError::not_configured(
                ErrorCode::BadOriginRequest,
                format!("cannot send a {} request to this origin's API", self.path),
            )
        };
        let base = path.strip_suffix("chat/completions").ok_or_else(cannot)?;
        let retargeted = match query {
            Some(query) => format!("{base}{}?{query}", self.path),
            None => format!("{base}{}", self.path),
        };
        parts.uri = retargeted.parse().map_err(|_| cannot())?;
        parts.headers.remove(header::CONTENT_LENGTH);
        Ok(Request::from_parts(parts, self.body.clone()))
    }
}

/// Per-isolate origin health: an origin that failed `BREAKER_THRESHOLD` times in a row is
/// tried last for `settings.breaker_cooldown_ms`. Hosts that instantiate per request (Spin
/// under `wasmtime serve`) start fresh every time, so there it only acts within a request.
#[derive(Default)]
pub struct Breaker {
    origins: RefCell<FastMap<String, Health>>,
}

#[derive(Default, Clone, Copy)]
struct Health {
    failures: u32,
    open_until: u64,
}

impl Breaker {
    fn is_open(&self, url: &str, now: u64) -> bool {
        self.origins.borrow().get(url).is_some_and(|h| h.open_until > now)
    }

    fn record(&self, url: &str, ok: bool, now: u64, cooldown_ms: u64) {
        let mut origins = self.origins.borrow_mut();
        if ok {
            origins.remove(url);
            return;
        }
        let health = origins.entry(url.to_string()).or_default();
        health.failures += 1;
        if health.failures >= BREAKER_THRESHOLD {
            health.open_until = now.saturating_add(cooldown_ms);
        }
    }
}

/// Sends `body` to each origin in turn until one answers usefully; every origin tried is
/// recorded in `attempts` (the last one is the origin that answered, or the one to blame when
/// all failed).
pub async fn forward<P: Ports>(
    ports: &P,
    config: &Config,
    breaker: &Breaker,
    origins: &[&Origin],
    attempt: Attempt<'_>,
    mut body: Map<String, Value>,
    attempts: &mut Vec<AttemptLog>,
) -> Result<Response<P::Body>> {
    let settings = &config.settings;
    let endpoint = attempt.endpoint;
    let started = ports.now_ms();
    let deadline = started.saturating_add(settings.total_timeout_ms);
    // Healthy origins first; origins the breaker marked down stay as a last resort.
    let (mut order, down): (Vec<&Origin>, Vec<&Origin>) =
        origins.iter().copied().partition(|o| !breaker.is_open(&o.url, started));
    order.extend(down);

    let mut last_error = None;
    let mut waited_for_retry_after = false;
    let mut retry: Option<Request<Vec<u8>>> = None;
    let mut i = 0;
    while i < order.len() {
        let origin = order[i];
        let now = ports.now_ms();
        let remaining = deadline.saturating_sub(now);
        if remaining == 0 {
            last_error = Some(GatewayError::gateway_timeout(format!(
                "no origin answered within the total deadline of {} ms",
                settings.total_timeout_ms
            )));
            break;
        }
        let is_last = i + 1 == order.len();
        let request = match retry.take() {
            Some(request) => request,
            None => {
                // Only a later origin needs the body again: the last one takes it.
                let body = if is_last { std::mem::take(&mut body) } else { body.clone() };
                let call = Call {
                    op: attempt.op,
                    model: &endpoint.model,
                    body,
                    base_url: &origin.url,
                    stream: attempt.stream,
                    now_ms: now,
                    written: attempt.written,
                };
                let mut request = endpoint.provider.build_request(call, ports)?;
                for (name, value) in attempt.trace {
                    request.headers_mut().insert(name.clone(), value.clone());
                }
                match attempt.retarget {
                    Some(retarget) => retarget.apply(request)?,
                    None => request,
                }
            }
        };
        let label = origin_label(request.uri(), origin.region.as_deref());
        let id = origin_id(endpoint, origin);
        let timeout = settings.origin_timeout_ms.min(remaining);
        let error = match ports.send(&request, timeout).await {
            Ok(response) => {
                let status = response.status();
                let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                let outcome = if status.is_success() { "ok".to_string() } else { format!("http_{}", status.as_u16()) };
                attempts.push(AttemptLog { origin: label, id, outcome, detail: None, at_ms: ports.now_ms() });
                breaker.record(&origin.url, !status.is_server_error(), ports.now_ms(), settings.breaker_cooldown_ms);
                if !retryable {
                    return Ok(response);
                }
                // The last origin asked us to come back shortly: wait once if that fits.
                let wait_ms = retry_after_ms(response.headers()).filter(|ms| *ms <= MAX_RETRY_AFTER_MS);
                if let Some(ms) = wait_ms.filter(|ms| is_last && !waited_for_retry_after && ms + 1 < remaining) {
                    waited_for_retry_after = true;
                    // The built request (bytes), not the parsed body, is what goes again.
                    retry = Some(request);
                    ports.sleep(ms).await;
                    continue;
                }
                // A pinned endpoint reports "region unavailable" rather than the last error.
                if is_last && attempt.pin.is_none() {
                    return Ok(response);
                }
                GatewayError::bad_gateway(ErrorCode::OriginError, format!("origin returned HTTP {}", status.as_u16()))
            }
            Err(UpstreamError::Timeout) => {
                attempts.push(AttemptLog {
                    origin: label,
                    id,
                    outcome: "timeout".into(),
                    detail: None,
                    at_ms: ports.now_ms(),
                });
                breaker.record(&origin.url, false, ports.now_ms(), settings.breaker_cooldown_ms);
                GatewayError::gateway_timeout(format!("origin did not answer within {timeout} ms"))
            }
            Err(UpstreamError::Connect(reason) | UpstreamError::Body(reason)) => {
                // The host's reason may name the origin's URL (with a key in its query): the
                // log gets it scrubbed, the client a plain statement.
                let detail = Some(scrub(truncate(&reason, 200)));
                attempts.push(AttemptLog {
                    origin: label,
                    id,
                    outcome: "connect_error".into(),
                    detail,
                    at_ms: ports.now_ms(),
                });
                breaker.record(&origin.url, false, ports.now_ms(), settings.breaker_cooldown_ms);
                GatewayError::bad_gateway(ErrorCode::OriginUnreachable, "origin unreachable (connection failed)")
            }
        };
        last_error = Some(error);
        i += 1;
    }
    let error =
        last_error.unwrap_or_else(|| GatewayError::not_configured(ErrorCode::NoOrigin, "the endpoint has no origin"));
    Err(match attempt.pin {
        // Never fall back outside the pinned region: say why nothing answered.
        Some(region) => GatewayError::not_configured(
            ErrorCode::RegionUnavailable,
            format!("no origin in region \"{region}\" is available ({} tried; last: {})", order.len(), error.message),
        ),
        None if order.len() > 1 => {
            let message = format!("all {} origins failed; last: {}", order.len(), error.message);
            error.with_message(message)
        }
        None => error,
    })
}

fn retry_after_ms(headers: &http::HeaderMap) -> Option<u64> {
    let seconds: u64 = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    seconds.checked_mul(1000)
}

/// What clients may see of an origin: its region and index in the endpoint's `origins`.
pub fn origin_id(endpoint: &Endpoint, origin: &Origin) -> String {
    let index = endpoint.origins.iter().position(|o| std::ptr::eq(o, origin)).unwrap_or(0);
    [origin.region.as_deref().unwrap_or("default"), "#", &index.to_string()].concat()
}

/// `scheme://host:port` of an origin URL (plus its region): enough to tell origins apart,
/// nothing secret — paths and queries may carry keys.
pub fn origin_label(uri: &http::Uri, region: Option<&str>) -> String {
    let base = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => [scheme, "://", authority.as_str().rsplit('@').next().unwrap_or("")],
        _ => ["", "", ""],
    };
    match region {
        Some(region) => [base[0], base[1], base[2], " (", region, ")"].concat(),
        None => base.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_repeated_failures_and_closes_on_success() {
        let b = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            b.record("u", false, 0, 1000);
        }
        assert!(!b.is_open("u", 0));
        b.record("u", false, 0, 1000);
        assert!(b.is_open("u", 999));
        assert!(!b.is_open("u", 1000));
        b.record("u", true, 5, 1000);
        assert!(!b.is_open("u", 5));
    }

    #[test]
    fn labels_hide_paths_and_credentials() {
        let uri: http::Uri = "https://user:pw@api.example.com:8443/v1/x?key=secret".parse().unwrap();
        assert_eq!(origin_label(&uri, Some("eu")), "https://api.example.com:8443 (eu)");
    }

    #[test]
    fn retarget_keeps_origin_and_credentials_and_swaps_path_and_body() {
        let built = Request::builder()
            .method("POST")
            .uri("http://o.test/v1/chat/completions?x=1")
            .header("authorization", "Bearer sk")
            .header("content-length", "2")
            .body(b"{}".to_vec())
            .unwrap();
        let retarget = Retarget { path: "responses", body: b"{\"input\":\"hi\"}".to_vec() };
        let request = retarget.apply(built).unwrap();
        assert_eq!(request.uri(), "http://o.test/v1/responses?x=1");
        assert_eq!(request.headers()["authorization"], "Bearer sk");
        assert!(request.headers().get("content-length").is_none());
        assert_eq!(request.body(), b"{\"input\":\"hi\"}");
        let other = Request::builder().uri("http://o.test/v1/embeddings").body(Vec::new()).unwrap();
        assert_eq!(retarget.apply(other).unwrap_err().code, "bad_origin_request");
    }
}
