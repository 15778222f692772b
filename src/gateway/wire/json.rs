//! JSON in and out of origins: a body we cannot use is a 502 naming what was wrong.

use serde_json::Value;

use crate::gateway::error::{ErrorCode, GatewayError, Result};

/// A 2xx body that is not what the origin's API documents.
pub fn bad_response(what: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("origin returned an unexpected body: {what}"))
}

/// Parses a 2xx JSON body or fails with `bad_response`.
pub fn parse_json(body: &[u8]) -> Result<Value> {
    value_from_slice(body).map_err(|e| bad_response(format!("not valid JSON ({e})")))
}

/// A body as JSON bytes: a whole `Value` or an object's map.
pub fn json_body(value: &impl JsonBody) -> Vec<u8> {
    value.to_json()
}

/// What [`json_body`] writes, each through serde_json's non-generic code (see
/// [`value_from_slice`]).
pub trait JsonBody {
    fn to_json(&self) -> Vec<u8>;
}

impl JsonBody for Value {
    fn to_json(&self) -> Vec<u8> {
        value_to_vec(self)
    }
}

impl JsonBody for serde_json::Map<String, Value> {
    fn to_json(&self) -> Vec<u8> {
        object_to_vec(self)
    }
}

/// A JSON object's bytes (see [`value_to_vec`]; serde_json's `Map` has no `Display`, so the
/// braces and keys are written here and each value by serde_json).
pub fn object_to_vec(map: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(serde_json::to_vec(key).unwrap_or_default());
        out.push(b':');
        out.extend(value.to_string().into_bytes());
    }
    out.push(b'}');
    out
}

/// A `Value` from JSON bytes, through serde_json's non-generic `FromStr`. Non-generic code is
/// compiled inside serde_json, which release builds optimize for speed (Cargo.toml); the
/// generic `from_slice::<Value>` would be compiled in this crate, which they optimize for size,
/// at ~3x the instructions per byte (1 MiB of request or answer is ~10 M instructions).
pub fn value_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.parse(),
        Err(_) => serde_json::from_slice(bytes), // its error says where the bad byte is
    }
}

/// The compact JSON bytes of a `Value`, through serde_json's non-generic `Display` (see
/// [`value_from_slice`]): the same bytes as `to_vec`, and it cannot fail.
pub fn value_to_vec(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The non-generic paths read and write exactly what serde_json's generic ones do (cache
    /// keys and canonical hashes depend on the bytes).
    #[test]
    fn non_generic_paths_match_serde_json() {
        let value = json!({"b": [1, -2.5, 1e300, null, true], "a": "quote \" slash \\ nl \n tab \t ctl \u{1} é 😀",
            "\u{7f}k\"ey": {"nested": {"deep": []}, "empty": {}}, "n": u64::MAX, "i": i64::MIN});
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(value_to_vec(&value), bytes);
        assert_eq!(json_body(&value), bytes);
        assert_eq!(json_body(value.as_object().unwrap()), bytes);
        assert_eq!(object_to_vec(&serde_json::Map::new()), b"{}");
        assert_eq!(value_from_slice(&bytes).unwrap(), value);
        // Errors: invalid UTF-8 and invalid JSON are errors with serde_json's position.
        assert!(value_from_slice(b"{\"a\": \"\xff\"}").unwrap_err().to_string().contains("line 1"));
        assert!(value_from_slice(b"{\"a\": }").unwrap_err().to_string().contains("column"));
        assert!(value_from_slice(b"").is_err());
    }
}
