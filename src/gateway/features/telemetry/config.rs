//! The config's `telemetry` section: where spans and metrics go.
//!
//! ```json
//! "telemetry": {
//!   "otlp_endpoint": "https://otel.example.com:4318",
//!   "headers": {"authorization": "$OTLP_AUTH"},
//!   "service_name": "edge-gateway",
//!   "sample": 0.25
//! }
//! ```
//!
//! `otlp_endpoint` is the collector's OTLP/HTTP base URL: spans go to `<base>/v1/traces` and
//! metrics to `<base>/v1/metrics` (as `OTEL_EXPORTER_OTLP_ENDPOINT` works). Header values must
//! be `$NAME` secret references: a literal would sit in KV and in `GET /admin/config`.
//! `sample` is the share of new traces recorded (0..=1, default 1); a client's `traceparent`
//! decides for the traces it continues (parent-based sampling). Metrics count every request.

use http::HeaderName;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::gateway::check::Issues;

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The base URL without a trailing `/`.
    pub otlp_endpoint: String,
    /// Header name → name of the host secret holding its value.
    pub headers: Vec<(HeaderName, String)>,
    pub service_name: String,
    pub sample: f64,
}

impl TelemetryConfig {
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint)
    }

    pub fn metrics_url(&self) -> String {
        format!("{}/v1/metrics", self.otlp_endpoint)
    }
}

pub const DEFAULT_SERVICE_NAME: &str = "edge-gateway";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    otlp_endpoint: String,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    sample: Option<f64>,
}

/// Headers the exporter sets itself.
const RESERVED: &[&str] = &["host", "content-type", "content-length", "transfer-encoding", "connection"];

/// Checks the `telemetry` section.
pub fn check(path: &str, value: &Value, issues: &mut Issues) -> Option<TelemetryConfig> {
    let raw: Raw = issues.parse(path, value.clone())?;
    let before = issues.0.len();
    let endpoint = raw.otlp_endpoint.trim_end_matches('/').to_string();
    let at = format!("{path}.otlp_endpoint");
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                issues.push(&at, "must not carry credentials: put them in `headers` as $SECRET references");
            }
            if uri.query().is_some() {
                issues.push(&at, "must not have a query string");
            }
            if endpoint.ends_with("/v1/traces") || endpoint.ends_with("/v1/metrics") {
                issues.push(&at, "give the collector's base URL: /v1/traces and /v1/metrics are appended");
            }
        }
        _ => issues.push(&at, format!("\"{}\" must be an http:// or https:// URL", raw.otlp_endpoint)),
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let at = format!("{path}.headers.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            issues.push(&at, "is not a valid header name");
            continue;
        };
        if RESERVED.contains(&header.as_str()) {
            issues.push(&at, "is set by the exporter itself");
            continue;
        }
        match value.as_str().and_then(|v| v.strip_prefix('$')).filter(|n| valid_secret_name(n)) {
            Some(secret) => headers.push((header, secret.to_string())),
            None => issues.push(&at, "must be a $SECRET reference (a literal would be stored in KV)"),
        }
    }
    let service_name = raw.service_name.unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    if service_name.is_empty() || service_name.len() > 128 || service_name.chars().any(char::is_control) {
        issues.push(format!("{path}.service_name"), "must be 1-128 printable characters");
    }
    let sample = raw.sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) {
        issues.push(format!("{path}.sample"), "must be a number from 0 to 1 (the share of new traces recorded)");
    }
    (issues.0.len() == before).then_some(TelemetryConfig { otlp_endpoint: endpoint, headers, service_name, sample })
}

fn valid_secret_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_full_section() {
        let mut issues = Issues::default();
        let config = check(
            "telemetry",
            &json!({"otlp_endpoint": "https://otel.example.com:4318/", "headers": {"Authorization": "$OTLP_AUTH"},
                    "service_name": "gw-eu", "sample": 0.5}),
            &mut issues,
        )
        .unwrap();
        assert!(issues.0.is_empty());
        assert_eq!(config.traces_url(), "https://otel.example.com:4318/v1/traces");
        assert_eq!(config.metrics_url(), "https://otel.example.com:4318/v1/metrics");
        assert_eq!(config.headers, vec![(HeaderName::from_static("authorization"), "OTLP_AUTH".to_string())]);
        assert_eq!((config.service_name.as_str(), config.sample), ("gw-eu", 0.5));
        let minimal = check("t", &json!({"otlp_endpoint": "http://127.0.0.1:4318"}), &mut issues).unwrap();
        assert_eq!((minimal.service_name.as_str(), minimal.sample), (DEFAULT_SERVICE_NAME, 1.0));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let mut issues = Issues::default();
        let bad = json!({"otlp_endpoint": "https://user:pw@otel.example.com/v1/traces",
                         "headers": {"authorization": "Bearer literal", "content-type": "$X", "bad header": "$Y"},
                         "service_name": "", "sample": 2});
        assert!(check("telemetry", &bad, &mut issues).is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        for expected in [
            "telemetry.otlp_endpoint: must not carry credentials",
            "telemetry.otlp_endpoint: give the collector's base URL",
            "telemetry.headers.authorization: must be a $SECRET reference",
            "telemetry.headers.content-type: is set by the exporter itself",
            "telemetry.headers.bad header: is not a valid header name",
            "telemetry.service_name: must be 1-128",
            "telemetry.sample: must be a number from 0 to 1",
        ] {
            assert!(text.iter().any(|t| t.starts_with(expected)), "{expected} in {text:?}");
        }
        let mut issues = Issues::default();
        assert!(check("telemetry", &json!({"otlp_endpoint": "collector:4318"}), &mut issues).is_none());
        assert!(check("telemetry", &json!({"endpoint": "http://x"}), &mut issues).is_none());
        assert_eq!(issues.0.len(), 2, "{:?}", issues.0);
    }
}
