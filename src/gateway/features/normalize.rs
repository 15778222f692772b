//! Request parsing and normalization: the body is parsed once, bounded first.

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::wire::json::{request_value_placed_within, request_value_within, Bounds, Place, ReadError};

/// Parses a JSON object body, refusing bodies over `limit` bytes before parsing and bodies
/// holding more values than `bounds` allows while parsing.
pub fn parse_json_object(body: &[u8], limit: usize, bounds: Bounds) -> Result<Map<String, Value>> {
    parse(body, limit, |text| request_value_within(text, bounds).map(|value| (value, ()))).map(|(map, ())| map)
}

/// [`parse_json_object`], and where each of the object's fields is in `body` (text order; for
/// [`Verbatim::of`]).
pub fn parse_json_object_placed(body: &[u8], limit: usize, bounds: Bounds) -> Result<(Map<String, Value>, Vec<Place>)> {
    parse(body, limit, |text| request_value_placed_within(text, bounds))
}

/// The object `read` finds in `body`, with what else it found there.
fn parse<T>(
    body: &[u8],
    limit: usize,
    read: impl FnOnce(&[u8]) -> std::result::Result<(Value, T), ReadError>,
) -> Result<(Map<String, Value>, T)> {
    if body.len() > limit {
        return Err(GatewayError::payload_too_large(limit));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request(ErrorCode::InvalidJson, "request body is empty; expected a JSON object"));
    }
    match read(body) {
        Ok((Value::Object(map), found)) => Ok((map, found)),
        Ok(_) => Err(GatewayError::bad_request(ErrorCode::InvalidJson, "request body must be a JSON object")),
        Err(ReadError::Invalid(e)) => {
            Err(GatewayError::bad_request(ErrorCode::InvalidJson, format!("request body is not valid JSON: {e}")))
        }
        Err(too_many) => {
            Err(GatewayError::request_too_large(format!("request body holds {too_many} (this gateway's limit)")))
        }
    }
}

/// The internal spelling of the output-token limit (adapters write the provider's own).
pub const MAX_TOKENS: &str = "max_tokens";

/// The endpoint's rules on request fields, in order: `parameters` as defaults (the client's
/// own fields win; an explicit `null` counts as absent), `limits` as ceilings on numbers,
/// `overrides` forced. The output-token limit has one spelling afterwards:
/// `max_completion_tokens` folds into `max_tokens` (the smaller wins if both are sent), which
/// every adapter reads. A ceiling on `max_tokens` also applies when the client sent none (or
/// `null`, or a non-number): the provider's default could be far above it.
pub fn apply_endpoint_rules(
    body: &mut Map<String, Value>,
    defaults: &Map<String, Value>,
    ceilings: &Map<String, Value>,
    overrides: &Map<String, Value>,
) {
    body.retain(|_, v| !v.is_null());
    if let Some(completion) = body.remove("max_completion_tokens") {
        let folded = match (body.get("max_tokens").and_then(Value::as_f64), completion.as_f64()) {
            (Some(a), Some(b)) if a <= b => body["max_tokens"].clone(),
            _ => completion,
        };
        body.insert("max_tokens".into(), folded);
    }
    for (key, value) in defaults {
        if !body.contains_key(key) {
            body.insert(key.clone(), value.clone());
        }
    }
    for (key, ceiling) in ceilings {
        let Some(max) = ceiling.as_f64() else { continue };
        match body.get(key).and_then(Value::as_f64) {
            Some(given) if given > max => {
                body.insert(key.clone(), ceiling.clone());
            }
            None if key == MAX_TOKENS => {
                body.insert(key.clone(), ceiling.clone());
            }
            _ => {}
        }
    }
    for (key, value) in overrides {
        body.insert(key.clone(), value.clone());
    }
}

fn hash_of(canonical: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(canonical);
    u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// Whether [`apply_endpoint_rules`] with these rules may set field `key` (any other field it
/// can only remove, when it is `null`).
pub fn may_set(
    key: &str,
    defaults: &Map<String, Value>,
    ceilings: &Map<String, Value>,
    overrides: &Map<String, Value>,
) -> bool {
    key == MAX_TOKENS
        || key == "max_completion_tokens"
        || defaults.contains_key(key)
        || ceilings.contains_key(key)
        || overrides.contains_key(key)
}

/// The fields [`may_set`] says these rules may set (a name may come twice).
pub fn settable<'a>(
    defaults: &'a Map<String, Value>,
    ceilings: &'a Map<String, Value>,
    overrides: &'a Map<String, Value>,
) -> impl Iterator<Item = &'a str> {
    let ruled = defaults.keys().chain(ceilings.keys()).chain(overrides.keys()).map(String::as_str);
    [MAX_TOKENS, "max_completion_tokens"].into_iter().chain(ruled)
}

/// A JSON object's bytes with each field's place (its `"key":value` and where its key ends),
/// fields in key order: what a rewrite copies unchanged fields from. [`Canonical`] and
/// [`Verbatim`] are the two kinds; the forwarded body is written from either.
#[derive(Debug, Default)]
pub struct Written {
    bytes: Vec<u8>,
    /// Where each field is in `bytes`, in key order (no copy of the keys: a small request
    /// would pay an allocation for each).
    fields: Vec<Place>,
}

impl Written {
    /// The written key of a field: `"key"`, as it is in the bytes.
    fn key(&self, &(ref range, key_end): &Place) -> &[u8] {
        &self.bytes[range.start..key_end]
    }

    /// `body` written with the fields `changed` names (changed, added or removed) written
    /// anew and the others copied from these bytes; `body` is the one these were written of
    /// or read from but for those fields. A field whose key is not in these bytes as
    /// serde_json writes it is written anew too.
    pub fn rewrite(&self, body: &Map<String, Value>, changed: impl Fn(&str) -> bool) -> Written {
        let mut fields = Vec::with_capacity(body.len());
        let bytes = self.write(body, changed, Some(&mut fields));
        Written { bytes, fields }
    }

    /// [`Written::rewrite`]'s bytes alone, for a body that is sent, not rewritten again: no
    /// index of its fields is built.
    pub fn rewrite_bytes(&self, body: &Map<String, Value>, changed: impl Fn(&str) -> bool) -> Vec<u8> {
        self.write(body, changed, None)
    }

    /// The rewrite's bytes, each field's place pushed to `fields` when asked for.
    fn write(
        &self,
        body: &Map<String, Value>,
        changed: impl Fn(&str) -> bool,
        mut fields: Option<&mut Vec<Place>>,
    ) -> Vec<u8> {
        // At least 256 bytes: a small request pays no allocation per field.
        let mut bytes = Vec::with_capacity((self.bytes.len() + 64).max(256));
        // The fields kept are in the same order in both: each is found at or after the last.
        let mut next = 0;
        bytes.push(b'{');
        for (key, value) in body {
            if bytes.len() > 1 {
                bytes.push(b',');
            }
            let start = bytes.len();
            edge_scan::json::write_str(&mut bytes, key);
            let key_end = bytes.len();
            let written = &bytes[start..key_end];
            let kept =
                if changed(key) { None } else { self.fields[next..].iter().position(|f| self.key(f) == written) };
            match kept {
                Some(at) => {
                    let (range, old_key_end) = &self.fields[next + at];
                    bytes.extend_from_slice(&self.bytes[*old_key_end..range.end]);
                    next += at + 1;
                }
                None => {
                    bytes.push(b':');
                    edge_scan::json::write_value(&mut bytes, value);
                }
            }
            if let Some(fields) = fields.as_deref_mut() {
                fields.push((start..bytes.len(), key_end));
            }
        }
        bytes.push(b'}');
        bytes
    }
}

/// The canonical form of a request body: keys sorted (serde_json's map is ordered), no
/// insignificant whitespace, numbers in serde's one spelling. Hashes, cache keys and traffic
/// splits use it, so equal requests stay equal however the client formatted them. Written
/// once for all that read it (the route's hash, the cache key, the origin choice's hash, the
/// forwarded body): writing a large body costs ~16 instructions a byte, copying its fields out
/// of these bytes next to nothing.
#[derive(Debug)]
pub struct Canonical(Written);

impl Canonical {
    pub fn of(body: &Map<String, Value>) -> Canonical {
        // Every field written anew: the rewrite of nothing.
        Canonical(Written::default().rewrite(body, |_| true))
    }

    /// A stable 64-bit hash of the body (traffic splits, weighted origin choice).
    pub fn hash(&self) -> u64 {
        hash_of(&self.0.bytes)
    }

    /// The canonical form without the fields named in `skip` (names JSON writes unescaped).
    pub fn without(&self, skip: &[&str]) -> Vec<u8> {
        let Written { bytes, fields } = &self.0;
        let mut out = Vec::with_capacity(bytes.len());
        out.push(b'{');
        for field in fields {
            let key = self.0.key(field);
            if skip.iter().any(|name| key.get(1..key.len() - 1) == Some(name.as_bytes())) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&bytes[field.0.clone()]);
        }
        out.push(b'}');
        out
    }

    /// The canonical form of `body`, a body that is the one `self` was written of but for
    /// the fields `changed` names ([`Written::rewrite`]).
    pub fn rewrite(&self, body: &Map<String, Value>, changed: impl Fn(&str) -> bool) -> Canonical {
        Canonical(self.0.rewrite(body, changed))
    }

    pub fn written(&self) -> &Written {
        &self.0
    }
}

/// A client's request body as the client wrote it, field by field: an OpenAI client's request
/// goes to an OpenAI-shaped origin with its unchanged fields copied from these bytes instead
/// of written anew from the tree (~16 instructions a byte). At 1 KB the copy and the index cost
/// about what writing saves; the gain grows with the body (natively, a forward of 80 KB of
/// messages: -15% instructions). Never hashed, compared or stored: its spacing and number
/// spellings are the client's.
#[derive(Debug)]
pub struct Verbatim(Written);

impl Verbatim {
    /// `bytes`, the JSON object `body` was read from, with its fields' `places` (text order,
    /// [`parse_json_object_placed`]). `None` when a key is repeated or spelled twice (`"a"`
    /// and `"\u0061"`): `body` keeps one of them, and only a body written from the tree says
    /// which.
    pub fn of(bytes: Vec<u8>, mut places: Vec<Place>, body: &Map<String, Value>) -> Option<Verbatim> {
        if places.len() != body.len() {
            return None;
        }
        // In the map's order: by the key's text, which a key without escapes is, byte for
        // byte (a key with escapes is never copied: its spelling is not serde_json's).
        places.sort_unstable_by(|a, b| bytes[a.0.start + 1..a.1 - 1].cmp(&bytes[b.0.start + 1..b.1 - 1]));
        Some(Verbatim(Written { bytes, fields: places }))
    }

    /// Forgets the fields named in `changed`: the body they are the bytes of changed there, so
    /// those are written anew. (No copy: the bytes stay as the client sent them.) Looked up by
    /// name in the sorted fields, not each field tested: a request has more fields than an
    /// endpoint has rules.
    pub fn forget<'a>(&mut self, changed: impl IntoIterator<Item = &'a str>) {
        let Written { bytes, fields } = &mut self.0;
        for name in changed {
            let found =
                fields.binary_search_by(|(range, key_end)| bytes[range.start + 1..key_end - 1].cmp(name.as_bytes()));
            if let Ok(i) = found {
                fields.remove(i);
            }
        }
    }

    pub fn written(&self) -> &Written {
        &self.0
    }
}

/// The client's `x-request-id` when it is short and printable, so traces line up; else none.
pub fn client_request_id(headers: &HeaderMap) -> Option<&str> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::json::{json_body, REQUEST_BOUNDS};
    use http::StatusCode;
    use serde_json::json;

    #[test]
    fn rejects_bad_bodies_with_clear_errors() {
        assert_eq!(parse_json_object(b"{}", 1, REQUEST_BOUNDS).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = parse_json_object(b"{\"a\":", 100, REQUEST_BOUNDS).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_json"));
        assert_eq!(e.message, "request body is not valid JSON: EOF while parsing a value at line 1 column 6");
        assert_eq!(
            parse_json_object(b"[1]", 100, REQUEST_BOUNDS).unwrap_err().message,
            "request body must be a JSON object"
        );
        assert_eq!(parse_json_object(b"  ", 100, REQUEST_BOUNDS).unwrap_err().code, "invalid_json");
        assert_eq!(parse_json_object(b"{\"a\":1}", 100, REQUEST_BOUNDS).unwrap()["a"], 1);
        // Under the byte limit, but more values than a request may hold (each costs CPU to
        // read, write and free; objects and strings memory as well).
        let list = |item: &str, n: usize| format!("{{\"x\":[{}]}}", vec![item; n].join(","));
        let refused = |body: String| parse_json_object(body.as_bytes(), 1 << 20, REQUEST_BOUNDS).unwrap_err();
        let e = refused(list("{\"a\":1}", 4_096));
        assert_eq!((e.status, e.code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"));
        assert_eq!(e.message, "request body holds more than 4096 JSON object keys (this gateway's limit)");
        let e = refused(list("\"s\"", 16_384));
        assert!(e.message.contains("more than 16384 non-empty JSON strings and arrays"), "{}", e.message);
        // Empty objects, strings and arrays, and numbers, take no memory of their own, but
        // they count as values: the object, the key, the list and 32,765 in it are the bound.
        let at_bound = list("{},\"\",[],1", 8_191).replacen("[", "[1,", 1);
        let x = parse_json_object(at_bound.as_bytes(), 1 << 20, REQUEST_BOUNDS).unwrap();
        assert_eq!(x["x"].as_array().unwrap().len(), 32_765);
        let e = refused(at_bound.replacen("[", "[1,", 1));
        assert_eq!(e.message, "request body holds more than 32768 JSON values and keys (this gateway's limit)");
        // A config may raise them (or lower them).
        let raised = Bounds { keys: 8_192, ..REQUEST_BOUNDS };
        assert!(parse_json_object(list("{\"a\":1}", 4_096).as_bytes(), 1 << 20, raised).is_ok());
    }

    /// The rules applied to `body`; every field they set is one `may_set` and `settable` name.
    fn rules(body: Value, defaults: Value, ceilings: Value, overrides: Value) -> Value {
        let mut body = body.as_object().unwrap().clone();
        let before = body.clone();
        let map = |v: Value| v.as_object().unwrap().clone();
        let (defaults, ceilings, overrides) = (map(defaults), map(ceilings), map(overrides));
        apply_endpoint_rules(&mut body, &defaults, &ceilings, &overrides);
        for (key, value) in &body {
            let set = before.get(key) != Some(value);
            assert!(!set || may_set(key, &defaults, &ceilings, &overrides), "{key} was set");
            assert!(!set || settable(&defaults, &ceilings, &overrides).any(|k| k == key), "{key} was set");
        }
        Value::Object(body)
    }

    #[test]
    fn defaults_clamps_and_overrides() {
        let out = rules(json!({"temperature": 0.2}), json!({"temperature": 1, "max_tokens": 50}), json!({}), json!({}));
        assert_eq!(out, json!({"temperature": 0.2, "max_tokens": 50}), "client fields win over defaults");
        let out = rules(
            json!({"max_tokens": 9000, "top_p": 0.5}),
            json!({}),
            json!({"max_tokens": 512, "top_p": 1}),
            json!({}),
        );
        assert_eq!(out, json!({"max_tokens": 512, "top_p": 0.5}), "ceilings cap, never raise");
        let out = rules(json!({"user": "x", "temperature": 2}), json!({}), json!({}), json!({"temperature": 0}));
        assert_eq!(out, json!({"user": "x", "temperature": 0}), "overrides are forced");
    }

    #[test]
    fn output_token_limit_has_one_spelling() {
        let out = rules(
            json!({"max_completion_tokens": 100}),
            json!({"max_tokens": 50}),
            json!({"max_tokens": 80}),
            json!({}),
        );
        assert_eq!(out, json!({"max_tokens": 80}));
        let out = rules(json!({"max_completion_tokens": 100, "max_tokens": 30}), json!({}), json!({}), json!({}));
        assert_eq!(out, json!({"max_tokens": 30}));
    }

    /// M1: a missing, `null` or non-numeric output-token limit does not escape the endpoint's
    /// ceiling (the provider's default could be far above it).
    #[test]
    fn missing_or_null_max_tokens_gets_the_ceiling() {
        let ceiling = json!({"max_tokens": 512});
        for body in [
            json!({}),
            json!({"max_tokens": null}),
            json!({"max_completion_tokens": null}),
            json!({"max_tokens": "9000"}),
            json!({"max_tokens": null, "max_completion_tokens": null}),
        ] {
            let out = rules(body.clone(), json!({}), ceiling.clone(), json!({}));
            assert_eq!(out, json!({"max_tokens": 512}), "{body}");
        }
        // A null does not hide a default either.
        let out = rules(json!({"max_tokens": null}), json!({"max_tokens": 50}), json!({}), json!({}));
        assert_eq!(out, json!({"max_tokens": 50}));
        // Other ceilings still only cap what is given.
        let out = rules(json!({}), json!({}), json!({"top_p": 1}), json!({}));
        assert_eq!(out, json!({}));
    }

    #[test]
    fn canonical_form_ignores_formatting_and_key_order() {
        let a = parse_json_object(br#"{"b": 1, "a": {"y": [1, 2.50], "x": null}}"#, 1000, REQUEST_BOUNDS).unwrap();
        let b = parse_json_object(br#"{"a":{"x":null,"y":[1,2.5]},"b":1}"#, 1000, REQUEST_BOUNDS).unwrap();
        let (a, b) = (Canonical::of(&a), Canonical::of(&b));
        assert_eq!(a.0.bytes, br#"{"a":{"x":null,"y":[1,2.5]},"b":1}"#);
        assert_eq!(a.hash(), b.hash());
        let c = parse_json_object(br#"{"b": 2}"#, 1000, REQUEST_BOUNDS).unwrap();
        assert_ne!(a.hash(), Canonical::of(&c).hash());
    }

    /// The canonical bytes written once give what writing the body anew gives: its hash, the
    /// body without some fields, and the body with some fields changed, added or removed.
    #[test]
    fn canonical_bytes_are_reused_exactly() {
        let mut body = parse_json_object(
            br#"{"messages": [{"role": "user", "content": "h\u00e9 \"x\""}], "max_tokens": 9, "stream": true, "n": 1.50,
                "s\"tream": 1, "\u0001": 2}"#, 1000, REQUEST_BOUNDS)
        .unwrap();
        let canonical = Canonical::of(&body);
        assert_eq!(canonical.0.bytes, json_body(&body));
        assert_eq!(canonical.hash(), hash_of(&json_body(&body)));
        let mut without = body.clone();
        without.remove("stream");
        without.remove("n");
        assert_eq!(canonical.without(&["stream", "n", "absent"]), json_body(&without));
        body.insert("model".into(), json!("m"));
        body.insert("max_tokens".into(), json!(5));
        body.remove("stream");
        body.insert("zzz".into(), json!({"a": [1]}));
        let rewritten = canonical.rewrite(&body, |k| ["model", "max_tokens", "stream", "zzz"].contains(&k));
        assert_eq!(rewritten.0.bytes, json_body(&body));
        // Its fields are where they are: a second rewrite copies them too.
        body.remove("zzz");
        assert_eq!(rewritten.rewrite(&body, |k| k == "zzz").0.bytes, json_body(&body));
        // A field not named is copied as it was written, not written anew.
        let mut stale = body.clone();
        stale.insert("n".into(), json!(7));
        assert_eq!(rewritten.rewrite(&stale, |k| k == "zzz").0.bytes, json_body(&body));
        assert_eq!(Canonical::of(&Map::new()).rewrite(&Map::new(), |_| true).0.bytes, b"{}");
    }

    /// A client's bytes, placed and indexed, written back with some fields changed: the same
    /// JSON as the body written anew, the unchanged fields in the client's spelling.
    #[test]
    fn verbatim_bytes_are_copied_where_unchanged() {
        let text = br#" { "stream" : true, "n":1.50, "messages" : [ {"role": "user", "content": "h\u00e9"} ],
            "\u0074op_p": 1, "max_tokens": 9, "a b": 0, "a": [ ] } "#;
        let (mut body, places) = parse_json_object_placed(text, 1000, REQUEST_BOUNDS).unwrap();
        assert_eq!(places.len(), 7);
        let mut verbatim = Verbatim::of(text.to_vec(), places, &body).unwrap();
        body.insert("max_tokens".into(), json!(5));
        body.remove("stream");
        body.insert("model".into(), json!("m"));
        verbatim.forget(["max_tokens", "stream"]);
        let out = verbatim.written().rewrite_bytes(&body, |k| k == "model");
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), Value::Object(body.clone()));
        let out = String::from_utf8(out).unwrap();
        // Copied: spacing, `1.50`, the escape in a string. Written anew: the changed fields and
        // the key the client escaped (not in the spelling the rewrite looks for).
        assert_eq!(
            out,
            r#"{"a": [ ],"a b": 0,"max_tokens":5,"messages" : [ {"role": "user", "content": "h\u00e9"} ],"model":"m","n":1.50,"top_p":1}"#
        );
        // A field forgotten but not changed, or not named at all, is still right: written anew.
        let (body, places) = parse_json_object_placed(br#"{"b":1,"a":2}"#, 100, REQUEST_BOUNDS).unwrap();
        let mut verbatim = Verbatim::of(br#"{"b":1,"a":2}"#.to_vec(), places, &body).unwrap();
        verbatim.forget(["b"]);
        assert_eq!(verbatim.written().rewrite_bytes(&body, |_| false), br#"{"a":2,"b":1}"#);
    }

    /// A key sent twice, or spelled two ways, leaves the tree one value for two places: no
    /// verbatim form (the body is written from the tree).
    #[test]
    fn repeated_keys_have_no_verbatim_form() {
        for text in [&br#"{"n": 1, "n": 2}"#[..], br#"{"a": 1, "\u0061": 2}"#, br#"{"x": {"y": 1, "y": 2}, "y": 3}"#] {
            let (body, places) = parse_json_object_placed(text, 100, REQUEST_BOUNDS).unwrap();
            let repeated = text.starts_with(br#"{"x""#);
            assert_eq!(
                Verbatim::of(text.to_vec(), places, &body).is_some(),
                repeated,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn request_id_is_sanitized() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(client_request_id(&h), Some("abc-123"));
        h.insert("x-request-id", "has space".parse().unwrap());
        assert_eq!(client_request_id(&h), None);
    }
}
