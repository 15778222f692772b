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

/// A body as JSON bytes (a whole `Value` or an object's map): the same bytes as
/// `serde_json::to_vec`, written by serde_json compiled for speed (`edge_scan::json`, see
/// [`value_from_slice`]), so it cannot fail.
pub fn json_body(value: &impl JsonBody) -> Vec<u8> {
    let mut out = Vec::new();
    value.write_json(&mut out);
    out
}

/// What [`json_body`] writes.
pub trait JsonBody {
    fn write_json(&self, out: &mut Vec<u8>);
}

impl JsonBody for Value {
    fn write_json(&self, out: &mut Vec<u8>) {
        edge_scan::json::write_value(out, self);
    }
}

/// serde_json's `Map` has no `Display`: the braces and keys are written here, each value by
/// serde_json.
impl JsonBody for serde_json::Map<String, Value> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (key, value)) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            edge_scan::json::write_str(out, key);
            out.push(b':');
            value.write_json(out);
        }
        out.push(b'}');
    }
}

/// A `Value` from JSON bytes, through serde_json's non-generic `FromStr`. Non-generic code is
/// compiled inside serde_json, which release builds optimize for speed (Cargo.toml); the
/// generic `from_slice::<Value>`/`to_vec` are compiled in this crate, which they optimize for
/// size (writing 1 MiB took 29 instructions a byte that way).
pub fn value_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.parse(),
        Err(_) => serde_json::from_slice(bytes), // its error says where the bad byte is
    }
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
        assert_eq!(json_body(&value), bytes);
        assert_eq!(json_body(value.as_object().unwrap()), bytes);
        assert_eq!(json_body(&serde_json::Map::new()), b"{}");
        assert_eq!(value_from_slice(&bytes).unwrap(), value);
        // Errors: invalid UTF-8 and invalid JSON are errors with serde_json's position.
        assert!(value_from_slice(b"{\"a\": \"\xff\"}").unwrap_err().to_string().contains("line 1"));
        assert!(value_from_slice(b"{\"a\": }").unwrap_err().to_string().contains("column"));
        assert!(value_from_slice(b"").is_err());
    }
}
