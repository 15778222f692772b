//! The one error type. Every failure anywhere in the gateway becomes a `GatewayError`, and
//! every `GatewayError` becomes the same JSON body (OpenAI's shape, which MLflow clients also
//! read): `{"error": {"message", "type", "code"}}`; dialects render the same error in their
//! client's shape. Messages name the problem and never carry a secret: provider credentials
//! and client keys are never formatted into one. Build errors with the constructors below.

use http::StatusCode;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// The stable, machine-readable `code` of an error (clients branch on it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    // The client's request.
    BadRequest = "bad_request",
    BodyReadFailed = "body_read_failed",
    InvalidJson = "invalid_json",
    InvalidRequest = "invalid_request",
    MissingField = "missing_field",
    MissingModel = "missing_model",
    InvalidModel = "invalid_model",
    InvalidMessage = "invalid_message",
    InvalidMessages = "invalid_messages",
    InvalidTools = "invalid_tools",
    InvalidScoringRequest = "invalid_scoring_request",
    InvalidPageToken = "invalid_page_token",
    UnsupportedParameter = "unsupported_parameter",
    UnsupportedOperation = "unsupported_operation",
    UnsupportedContent = "unsupported_content",
    UnsupportedInput = "unsupported_input",
    UnsupportedMediaType = "unsupported_media_type",
    MethodNotAllowed = "method_not_allowed",
    RequestTooLarge = "request_too_large",
    EndpointTypeMismatch = "endpoint_type_mismatch",
    ModelNotFound = "model_not_found",
    EndpointNotFound = "endpoint_not_found",
    RouteNotFound = "route_not_found",
    /// `GET /v1/responses/{id}`: no stored response with that id for this tenant.
    ResponseNotFound = "response_not_found",
    /// `previous_response_id` names no stored response of this tenant.
    PreviousResponseNotFound = "previous_response_not_found",
    /// A conversation continued with `previous_response_id` grew past the gateway's limit.
    ConversationTooLong = "conversation_too_long",
    // Templates and guardrails.
    MissingTemplateVariables = "missing_template_variables",
    PromptWithTemplate = "prompt_with_template",
    TemplateNotSupported = "template_not_supported",
    TemplateRenderFailed = "template_render_failed",
    TemplateTooExpensive = "template_too_expensive",
    TemplateOutputTooLarge = "template_output_too_large",
    TemplateVariableTooLarge = "template_variable_too_large",
    ContentDenied = "content_denied",
    OutputDenied = "output_denied",
    PromptInjection = "prompt_injection",
    TooManyMessages = "too_many_messages",
    InputTooLong = "input_too_long",
    // Identity, limits and budgets.
    MissingApiKey = "missing_api_key",
    InvalidApiKey = "invalid_api_key",
    EndpointNotAllowed = "endpoint_not_allowed",
    RateLimitExceeded = "rate_limit_exceeded",
    BudgetExceeded = "budget_exceeded",
    /// A USD budget applies, but the endpoint's model has no price: it could not be enforced.
    UnpricedModel = "unpriced_model",
    // JWT / OIDC tokens (features::identity) and access approval (features::access).
    TokenExpired = "token_expired",
    TokenBadSignature = "token_bad_signature",
    TokenUnknownIssuer = "token_unknown_issuer",
    TokenAudience = "token_audience",
    TokenNotYetValid = "token_not_yet_valid",
    TokenMalformed = "token_malformed",
    TokenUnknownKey = "token_unknown_key",
    TokenAlgorithm = "token_algorithm",
    JwksUnavailable = "jwks_unavailable",
    ApprovalRequired = "approval_required",
    InvalidAccessRequest = "invalid_access_request",
    AccessRequestNotFound = "access_request_not_found",
    // The admin API.
    InvalidAdminToken = "invalid_admin_token",
    InvalidKeyRequest = "invalid_key_request",
    InvalidKeyId = "invalid_key_id",
    KeyRevoked = "key_revoked",
    InvalidTenant = "invalid_tenant",
    InvalidDate = "invalid_date",
    InvalidRange = "invalid_range",
    KeyNotFound = "key_not_found",
    VersionNotFound = "version_not_found",
    InvalidPurge = "invalid_purge",
    InvalidVersion = "invalid_version",
    MissingVersion = "missing_version",
    MissingSubject = "missing_subject",
    VersionExists = "version_exists",
    ConfigInvalid = "config_invalid",
    // The gateway's own state and ports.
    ConfigMissing = "config_missing",
    SecretMissing = "secret_missing",
    AdminDisabled = "admin_disabled",
    RegionUnavailable = "region_unavailable",
    NoOrigin = "no_origin",
    KvError = "kv_error",
    KvUnbound = "kv_unbound",
    /// The key-value store (or exact counter) failed transiently while authenticating or
    /// counting limits: 503 with `Retry-After` (those fail closed; the cache fails open).
    KvUnavailable = "kv_unavailable",
    KeyRecordInvalid = "key_record_invalid",
    CounterError = "counter_error",
    CounterBusy = "counter_busy",
    CounterUnbound = "counter_unbound",
    EncodeFailed = "encode_failed",
    // Origins.
    BadOriginRequest = "bad_origin_request",
    OriginUnreachable = "origin_unreachable",
    OriginTimeout = "origin_timeout",
    OriginError = "origin_error",
    OriginRejected = "origin_rejected",
    /// The origin refused the gateway's own credential (its 401/403): an operator problem.
    OriginAuthFailed = "origin_auth_failed",
    OriginRateLimited = "origin_rate_limited",
    OriginBadResponse = "origin_bad_response",
    OriginStreamCut = "origin_stream_cut",
    OriginStreamError = "origin_stream_error",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: StatusCode,
    /// OpenAI-style `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (429/503).
    pub retry_after: Option<u64>,
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

const INVALID_REQUEST: &str = "invalid_request_error";

impl GatewayError {
    /// The general constructor, for statuses taken from elsewhere (an origin's answer).
    pub fn new(status: StatusCode, kind: &'static str, code: ErrorCode, message: impl Into<String>) -> Self {
        GatewayError { status, kind, code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, code, message)
    }
    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, INVALID_REQUEST, code, message)
    }
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message)
    }
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, INVALID_REQUEST, code, message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, INVALID_REQUEST, ErrorCode::MethodNotAllowed, message)
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, INVALID_REQUEST, code, message)
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::request_too_large(format!("request body exceeds the limit of {limit} bytes"))
    }
    /// 413 for a body under the byte limit that is still too much (too many JSON values).
    pub fn request_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, INVALID_REQUEST, ErrorCode::RequestTooLarge, message)
    }
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_REQUEST, ErrorCode::UnsupportedMediaType, message)
    }
    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, INVALID_REQUEST, code, message)
    }
    /// A limit refused the request (`rate_limit_error`, or `insufficient_quota` for budgets).
    pub fn too_many_requests(code: ErrorCode, message: impl Into<String>, retry_after: u64) -> Self {
        let kind = if code == ErrorCode::BudgetExceeded { "insufficient_quota" } else { "rate_limit_error" };
        Self::new(StatusCode::TOO_MANY_REQUESTS, kind, code, message).with_retry_after(retry_after)
    }
    /// The gateway itself is not configured (e.g. `config:active` missing or invalid).
    pub fn not_configured(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "gateway_error", code, message)
    }
    /// The origin could not be reached or answered something we cannot use.
    pub fn bad_gateway(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", code, message)
    }
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_error", ErrorCode::OriginTimeout, message)
    }
    /// A host port (KV, secrets) failed; never the client's fault.
    pub fn internal(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "gateway_error", code, message)
    }

    /// A transient store failure on a path that must fail closed (auth, limits, config).
    pub fn kv_unavailable(what: &str) -> Self {
        Self::not_configured(ErrorCode::KvUnavailable, format!("{what} is temporarily unavailable; retry shortly"))
            .with_retry_after(1)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// `{"error": {"message", "type", "code"}}`.
    pub fn body(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(serde::Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            code: ErrorCode,
        }
        let body = Body { error: Inner { message: &self.message, kind: self.kind, code: self.code } };
        // Serializing strings into a Vec cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
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
        let e = GatewayError::not_found(ErrorCode::ModelNotFound, "no endpoint named \"x\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "no endpoint named \"x\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
        }
    }
}
