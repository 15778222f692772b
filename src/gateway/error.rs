//! The one error type. Every failure anywhere in the gateway becomes a `GatewayError`, and
//! every `GatewayError` becomes the same JSON body (OpenAI's shape, which MLflow clients also
//! read): `{"error": {"message", "type", "code"}}`. Messages name the problem and never carry
//! a secret: provider credentials and client keys are never formatted into one.

use http::StatusCode;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: StatusCode,
    /// OpenAI-style `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// Stable machine-readable `code`, e.g. `model_not_found`.
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429/503).
    pub retry_after: Option<u64>,
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

impl GatewayError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        GatewayError { status, kind, code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", code, message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed", message)
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", "unsupported_media_type", message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", code, message)
    }
    /// The gateway itself is not configured (e.g. `config:active` missing or invalid).
    pub fn not_configured(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "gateway_error", code, message)
    }
    /// A host service the gateway depends on (e.g. KV) failed transiently; pair with
    /// `with_retry_after`.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "gateway_error", code, message)
    }
    /// The origin could not be reached or answered something we cannot use.
    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", code, message)
    }
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_error", "origin_timeout", message)
    }
    /// A host port (KV, secrets) failed; never the client's fault.
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "gateway_error", code, message)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn body(&self) -> Vec<u8> {
        let body = json!({"error": {"message": self.message, "type": self.kind, "code": self.code}});
        serde_json::to_vec(&body).expect("a json! value always serializes")
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = GatewayError::not_found("model_not_found", "no endpoint named \"x\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "no endpoint named \"x\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
