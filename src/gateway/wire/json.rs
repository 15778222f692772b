//! JSON in and out of origins: a body we cannot use is a 502 naming what was wrong.

use serde_json::Value;

use crate::gateway::error::{ErrorCode, GatewayError, Result};

/// A 2xx body that is not what the origin's API documents.
pub fn bad_response(what: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("origin returned an unexpected body: {what}"))
}

/// Parses a 2xx JSON body or fails with `bad_response`.
pub fn parse_json(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| bad_response(format!("not valid JSON ({e})")))
}

/// A request body for the origin as JSON bytes.
pub fn json_body(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| GatewayError::internal(ErrorCode::EncodeFailed, e.to_string()))
}
