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
    // Most bodies fit: growing from empty reallocated (and copied) ~8 times a chat request.
    let mut out = Vec::with_capacity(1024);
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
        let mut object = Object::new(out);
        for (key, value) in self {
            object.value(key, value);
        }
        object.close();
    }
}

/// A JSON object appended to `out` field by field, in serde_json's bytes: each field's key
/// brings the `{` or the comma before it, [`Object::close`] the `}`. Values go through
/// edge_scan's writers (see [`json_body`]).
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    open: bool,
}

impl<'a> Object<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Object { out, open: false }
    }

    /// Starts a field: what follows in [`Object::out`] is its value.
    pub fn key(&mut self, name: &str) {
        edge_scan::json::write_key(self.out, !self.open, name);
        self.open = true;
    }

    /// The buffer, to write a field's value in after [`Object::key`].
    pub fn out(&mut self) -> &mut Vec<u8> {
        self.out
    }

    pub fn value(&mut self, name: &str, value: &Value) {
        self.key(name);
        edge_scan::json::write_value(self.out, value);
    }

    pub fn str(&mut self, name: &str, value: &str) {
        self.key(name);
        edge_scan::json::write_str(self.out, value);
    }

    pub fn opt_str(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(name, value);
        }
    }

    pub fn u64(&mut self, name: &str, value: u64) {
        self.key(name);
        edge_scan::json::write_u64(self.out, value);
    }

    pub fn opt_u64(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.u64(name, value);
        }
    }

    pub fn bool(&mut self, name: &str, value: bool) {
        self.key(name);
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
    }

    pub fn close(self) {
        if !self.open {
            self.out.push(b'{');
        }
        self.out.push(b'}');
    }
}

/// A flat object of counters, `{"name":n,...}`, appended to `out`: the stored form of usage
/// and tally shards, written at every flush. The bytes serde_json writes for such a struct,
/// without its generic serializer, which is compiled at this crate's size-first opt-level
/// (~6,600 instructions for one 8-field `DayUsage`, callgrind).
pub fn write_counters(out: &mut Vec<u8>, fields: &[(&str, u64)]) {
    let mut object = Object::new(out);
    for (name, n) in fields {
        object.u64(name, *n);
    }
    object.close();
}

/// A `Value` from JSON bytes, nested at most `edge_scan::json::MAX_DEPTH` deep (why: there).
/// Read in edge_scan, which release builds optimize for speed (Cargo.toml): generic serde code
/// is compiled in the crate that instantiates it, and this crate is optimized for size (writing
/// 1 MiB took 29 instructions a byte that way).
pub use edge_scan::json::{Bounds, Place, ReadError};

pub fn value_from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    edge_scan::json::parse_value(json_text(bytes)?)
}

/// How many JSON values a client's request body may hold by default (`Bounds` says which
/// count; `settings.max_body_keys`, `max_body_strings_and_arrays` and `max_body_values` change
/// them). They bound the CPU a body costs, not only its memory: a `Value` tree is far larger
/// than its text (1 MiB of `{"a":1},` was 131,072 objects, 87 MB and ~40 ms of CPU), and
/// every value is read, walked, written to the origin and freed. Measured per value through
/// the whole pipeline (`benches/slowest`, native, a 2-core box): a number or an empty value
/// ~35-45 ns, a one-letter string ~75 ns, an object key ~150-350 ns (sorting it into its map),
/// a guarded text part (an object of two keys and two strings) ~550 ns. At these bounds the
/// dearest body under the 1 MiB byte limit stays under 2 ms (issue 12). 2,000 chat messages,
/// an embedding of 30,000 token ids or an MLflow batch of 2,000 two-column
/// `dataframe_records` rows fit; larger batches need the settings raised.
pub const REQUEST_BOUNDS: Bounds = Bounds { keys: 4_096, items: 16_384, values: 32_768 };

/// A client's request body as a `Value`: as [`value_from_slice`], within `bounds`.
pub fn request_value_within(bytes: &[u8], bounds: Bounds) -> Result<Value, ReadError> {
    let text = json_text(bytes).map_err(ReadError::Invalid)?;
    edge_scan::json::parse_value_within(text, bounds)
}

/// [`request_value_within`], and where each field of a top-level object is in `bytes`.
pub fn request_value_placed_within(bytes: &[u8], bounds: Bounds) -> Result<(Value, Vec<Place>), ReadError> {
    let text = json_text(bytes).map_err(ReadError::Invalid)?;
    edge_scan::json::parse_value_placed_within(text, bounds)
}

/// `bytes` as text, for serde_json's fast `&str` reader.
fn json_text(bytes: &[u8]) -> serde_json::Result<&str> {
    std::str::from_utf8(bytes)
        .map_err(|e| serde::de::Error::custom(format_args!("invalid UTF-8 at byte {}", e.valid_up_to())))
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
        // Errors say where: the byte that is not UTF-8, where the JSON went wrong.
        assert_eq!(value_from_slice(b"{\"a\": \"\xff\"}").unwrap_err().to_string(), "invalid UTF-8 at byte 7");
        assert_eq!(value_from_slice(b"{\"a\": }").unwrap_err().to_string(), "expected value at line 1 column 7");
        assert!(value_from_slice(b"").is_err());
    }
}
