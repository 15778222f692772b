//! JSON in and out of origins: a body we cannot use is a 502 naming what was wrong.

use serde_json::Value;

use crate::gateway::error::{ErrorCode, GatewayError, Result};

/// A 2xx body that is not what the origin's API documents.
pub fn bad_response(what: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("origin returned an unexpected body: {what}"))
}

/// Parses a 2xx JSON body or fails with `bad_response`.
pub fn parse_json(body: &[u8]) -> Result<Value> {
    value_from_slice(body).map_err(not_json)
}

/// The object a 2xx body is, with only the entries named in `fields` kept: the others are
/// checked, not built (`edge_scan::json::object_keeping`). Not JSON, or not an object:
/// `bad_response`.
pub fn parse_object_keeping(body: &[u8], fields: &[&str]) -> Result<Value> {
    match json_text(body).and_then(|text| edge_scan::json::object_keeping(text, fields)) {
        Ok(Some(kept)) => Ok(Value::Object(kept)),
        Ok(None) => Err(bad_response("not a JSON object")),
        Err(e) => Err(not_json(e)),
    }
}

fn not_json(e: serde_json::Error) -> GatewayError {
    bad_response(format!("not valid JSON ({e})"))
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

/// serde_json's recursion limit: the deepest nesting it parses.
const MAX_DEPTH: usize = 127;

/// From this size on, JSON nested past the limit is refused before parsing
/// (`edge_scan::json::nested_past` says why): serde_json's refusal costs ~20 instructions per
/// byte before the nesting (~10 M at this size), the check 0.2-5 a byte (long strings - many
/// short ones), so below this size it is not worth it.
const CHECK_DEPTH_FROM: usize = 512 * 1024;

/// A `Value` from JSON bytes, through serde_json's non-generic `FromStr`. Non-generic code is
/// compiled inside serde_json, which release builds optimize for speed (Cargo.toml); the
/// generic `from_slice::<Value>`/`to_vec` are compiled in this crate, which they optimize for
/// size (writing 1 MiB took 29 instructions a byte that way).
pub fn value_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    json_text(bytes)?.parse()
}

/// `bytes` as text for serde_json's fast `&str` reader, unless they are nested too deep or not
/// UTF-8.
fn json_text(bytes: &[u8]) -> serde_json::Result<&str> {
    if bytes.len() >= CHECK_DEPTH_FROM {
        if let Some(at) = edge_scan::json::nested_past(bytes, MAX_DEPTH) {
            let what = format_args!("more than {MAX_DEPTH} nested arrays and objects at byte {at}");
            return Err(serde::de::Error::custom(what));
        }
    }
    std::str::from_utf8(bytes)
        .map_err(|e| serde::de::Error::custom(format_args!("invalid UTF-8 at byte {}", e.valid_up_to())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The non-generic paths read and write exactly what serde_json's generic ones do (cache
    /// keys and canonical hashes depend on the bytes).
    /// A large body nested past the limit is refused at the check, naming where; nesting at
    /// the limit still parses; a small body gets serde_json's own refusal.
    #[test]
    fn deep_nesting_is_refused_before_parsing_large_bodies() {
        let padded = |depth: usize, size: usize| {
            let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            format!(r#"{{"pad":"{}","x":{nest}}}"#, "p".repeat(size))
        };
        let large = padded(MAX_DEPTH + 1, CHECK_DEPTH_FROM);
        let err = value_from_slice(large.as_bytes()).unwrap_err().to_string();
        // The object is the first level: its 127th array is one too many.
        let at = r#"{"pad":""#.len() + CHECK_DEPTH_FROM + r#"","x":"#.len() + 126;
        assert_eq!(err, format!("more than 127 nested arrays and objects at byte {at}"));
        assert!(value_from_slice(padded(MAX_DEPTH - 1, CHECK_DEPTH_FROM).as_bytes()).is_ok());
        let small = value_from_slice(padded(MAX_DEPTH + 1, 10).as_bytes()).unwrap_err().to_string();
        assert!(small.starts_with("recursion limit exceeded"), "{small}");
    }

    #[test]
    fn non_generic_paths_match_serde_json() {
        let value = json!({"b": [1, -2.5, 1e300, null, true], "a": "quote \" slash \\ nl \n tab \t ctl \u{1} é 😀",
            "\u{7f}k\"ey": {"nested": {"deep": []}, "empty": {}}, "n": u64::MAX, "i": i64::MIN});
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(json_body(&value), bytes);
        assert_eq!(json_body(value.as_object().unwrap()), bytes);
        assert_eq!(json_body(&serde_json::Map::new()), b"{}");
        assert_eq!(value_from_slice(&bytes).unwrap(), value);
        // Errors say where: the byte that is not UTF-8, serde_json's position in invalid JSON.
        assert_eq!(value_from_slice(b"{\"a\": \"\xff\"}").unwrap_err().to_string(), "invalid UTF-8 at byte 7");
        assert!(value_from_slice(b"{\"a\": }").unwrap_err().to_string().contains("column"));
        assert!(value_from_slice(b"").is_err());
    }
}
