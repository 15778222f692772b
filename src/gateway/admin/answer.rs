//! What an admin handler answers, and the audit line every admin call leaves.

use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::util::text::percent_decode;

/// What the admin API answers: a JSON body and status, plus the audit line for the host's log.
/// `raw`, when set, is the body instead of `body` (Prometheus text, the console's files).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub body: Value,
    pub audit: String,
    pub raw: Option<RawBody>,
}

/// A non-JSON answer: its content type, bytes and any extra headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RawBody {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    pub headers: &'static [(&'static str, &'static str)],
}

/// What the audit line records.
#[derive(Debug, Default, Serialize)]
pub(super) struct Audit {
    pub(super) ts: u64,
    pub(super) audit: &'static str,
    pub(super) action: &'static str,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) outcome: &'static str,
    pub(super) status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) previous: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<ErrorCode>,
    /// Access approval: the request decided, the caller's principal id and the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) access_request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) endpoint: Option<String>,
}

/// A handler's answer: status + body, or an error; the audit fields it filled in either way.
pub(super) type Handled = std::result::Result<(StatusCode, Value), Failure>;

/// An error answer; `issues` adds a list of config issues to the error body.
pub(super) struct Failure {
    pub(super) error: GatewayError,
    pub(super) issues: Option<Value>,
}

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Self {
        Failure { error, issues: None }
    }
}

pub(super) fn parse_json(body: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(ErrorCode::InvalidJson, format!("{what} is not valid JSON: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Query strings

pub(super) fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

pub(super) fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}
