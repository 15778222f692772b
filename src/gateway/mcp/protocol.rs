//! MCP's protocol eras over Streamable HTTP, and what the transport mirrors into headers.
//!
//! * **Modern** (2026-07-28, the current revision): stateless. Every request carries its
//!   protocol version, client info and capabilities in `params._meta`, mirrored into the
//!   `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers, which must agree with the
//!   body (`HeaderMismatch`, -32020). No `initialize`, no sessions, no GET stream.
//! * **Legacy** (2025-03-26 … 2025-11-25): an `initialize` handshake negotiates the version and
//!   the server may assign an `Mcp-Session-Id`, ended with DELETE.
//!
//! The gateway is a dual-era server: a request with the modern envelope is served statelessly,
//! an `initialize` opens a (gateway) session. Towards each upstream it is a client of the era
//! the server speaks (config `protocol`, or detected).

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::gateway::mcp::jsonrpc::RpcError;

/// Revisions served with the per-request envelope, newest first.
pub const MODERN: &[&str] = &["2026-07-28"];
/// Revisions reachable through `initialize`, newest first.
pub const LEGACY: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// What a legacy client that asks for anything else is offered.
pub const LATEST_LEGACY: &str = "2025-11-25";
/// Legacy requests without `MCP-Protocol-Version` are this version (transport spec).
pub const DEFAULT_LEGACY: &str = "2025-03-26";

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

pub const H_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const H_METHOD: &str = "mcp-method";
pub const H_NAME: &str = "mcp-name";
pub const H_SESSION: &str = "mcp-session-id";
pub const H_PARAM_PREFIX: &str = "mcp-param-";

/// Every version the gateway speaks, newest first (what `UnsupportedProtocolVersion` lists).
pub fn supported() -> Vec<&'static str> {
    MODERN.iter().chain(LEGACY).copied().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Modern,
    Legacy,
}

/// The era a version belongs to, if the gateway speaks it.
pub fn era_of(version: &str) -> Option<Era> {
    if MODERN.contains(&version) {
        Some(Era::Modern)
    } else if LEGACY.contains(&version) {
        Some(Era::Legacy)
    } else {
        None
    }
}

/// The version a legacy `initialize` gets: the client's when the gateway speaks it, else the
/// newest legacy one (the client then decides whether it can go on).
pub fn negotiate_legacy(requested: Option<&str>) -> &'static str {
    LEGACY.iter().find(|v| Some(**v) == requested).copied().unwrap_or(LATEST_LEGACY)
}

/// The params key mirrored into `Mcp-Name`, per method.
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The client identity a modern request carries (or a legacy session recorded).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    pub version: String,
    pub client_info: Option<Value>,
    pub capabilities: Value,
}

impl Envelope {
    /// Writes the modern `_meta` keys into `params` (for a modern upstream).
    pub fn stamp(&self, params: &mut Map<String, Value>, version: &str) {
        let meta = params.entry("_meta").or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Value::Object(meta) = meta {
            meta.insert(META_PROTOCOL_VERSION.into(), Value::String(version.into()));
            meta.insert(META_CLIENT_CAPABILITIES.into(), self.capabilities.clone());
            if let Some(info) = &self.client_info {
                meta.insert(META_CLIENT_INFO.into(), info.clone());
            }
        }
    }
}

/// Removes the modern `_meta` keys (for a legacy upstream, which would not expect them).
pub fn unstamp(params: &mut Map<String, Value>) {
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        for key in [META_PROTOCOL_VERSION, META_CLIENT_INFO, META_CLIENT_CAPABILITIES] {
            meta.remove(key);
        }
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `MCP-Protocol-Version` header, if sent.
pub fn version_header(headers: &HeaderMap) -> Option<&str> {
    header(headers, H_PROTOCOL_VERSION).map(str::trim)
}

/// Checks a modern request (2026-07-28 "Server Validation"): the `_meta` envelope is present,
/// each routing header is sent once and equals its body field. Returns the envelope.
pub fn validate_modern(headers: &HeaderMap, method: &str, params: &Map<String, Value>) -> Result<Envelope, RpcError> {
    let Some(Value::Object(meta)) = params.get("_meta") else {
        return Err(RpcError::invalid_params(format!(
            "params._meta must be an object carrying \"{META_PROTOCOL_VERSION}\" and \"{META_CLIENT_CAPABILITIES}\""
        )));
    };
    let missing: Vec<&str> =
        [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES].into_iter().filter(|k| !meta.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(RpcError::invalid_params(format!(
            "params._meta is missing the required envelope key(s): {}",
            missing.join(", ")
        )));
    }
    for name in [H_PROTOCOL_VERSION, H_METHOD, H_NAME] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(RpcError::header_mismatch(format!("the {name} header was sent more than once")));
        }
    }
    let Some(version) = meta.get(META_PROTOCOL_VERSION).and_then(Value::as_str) else {
        return Err(RpcError::invalid_params(format!("_meta \"{META_PROTOCOL_VERSION}\" must be a string")));
    };
    if version_header(headers) != Some(version) {
        return Err(RpcError::header_mismatch(
            "the MCP-Protocol-Version header does not match the request's _meta protocol version",
        ));
    }
    if header(headers, H_METHOD) != Some(method) {
        return Err(RpcError::header_mismatch("the Mcp-Method header does not match the request body's method"));
    }
    if let Some(key) = name_param(method) {
        if let Some(body_value) = params.get(key).and_then(Value::as_str) {
            if header(headers, H_NAME).and_then(decode_header_value).as_deref() != Some(body_value) {
                return Err(RpcError::header_mismatch(format!(
                    "the Mcp-Name header does not match the request body's \"{key}\""
                )));
            }
        }
    }
    if era_of(version) != Some(Era::Modern) {
        return Err(RpcError::unsupported_version(version, &supported()));
    }
    Ok(Envelope {
        version: version.to_string(),
        client_info: meta.get(META_CLIENT_INFO).cloned(),
        capabilities: meta.get(META_CLIENT_CAPABILITIES).cloned().unwrap_or_else(|| Value::Object(Map::new())),
    })
}

/// A header value as the transport spec encodes it: verbatim when it is plain printable ASCII
/// without edge whitespace, else `=?base64?…?=`.
pub fn encode_header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim() == value
        && !(value.starts_with("=?base64?") && value.ends_with("?="));
    if plain {
        value.to_string()
    } else {
        format!("=?base64?{}?=", base64_encode(value.as_bytes()))
    }
}

/// The inverse of [`encode_header_value`]; `None` for a malformed (or non-canonical) sentinel.
pub fn decode_header_value(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        None => Some(value.to_string()),
        Some(payload) => {
            let bytes = base64_decode(payload)?;
            (base64_encode(&bytes) == payload).then_some(())?;
            String::from_utf8(bytes).ok()
        }
    }
}

/// The `Mcp-Param-{name}` headers a tool's `inputSchema` asks for (`x-mcp-header` on
/// properties reachable through `properties` chains), with the values in `arguments`:
/// (name, encoded value). Used when the gateway changed the arguments (redaction), so the
/// mirrored headers still match the body the upstream validates them against.
pub fn param_headers(schema: &Value, arguments: &Value) -> Vec<(String, String)> {
    fn render(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }
    fn walk(schema: &Value, value: Option<&Value>, out: &mut Vec<(String, String)>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
        for (key, sub) in props {
            let v = value.and_then(|v| v.get(key));
            if let (Some(name), Some(text)) = (sub.get("x-mcp-header").and_then(Value::as_str), v.and_then(render)) {
                out.push((name.to_string(), encode_header_value(&text)));
            }
            walk(sub, v, out);
        }
    }
    let mut out = Vec::new();
    walk(schema, Some(arguments), &mut out);
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// RFC 4648 base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { B64.iter().position(|c| c == b)? as u32 };
            n |= v << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::mcp::jsonrpc::{HEADER_MISMATCH, INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn params(version: &str, name: Option<&str>) -> Map<String, Value> {
        let mut p = json!({"_meta": {META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {},
                                     META_CLIENT_INFO: {"name": "t", "version": "1"}}});
        if let Some(name) = name {
            p["name"] = json!(name);
        }
        p.as_object().unwrap().clone()
    }

    #[test]
    fn header_values_round_trip_the_sentinel() {
        for v in ["plain", "Hello, 世界", " padded ", "line1\nline2", "=?base64?literal?=", ""] {
            assert_eq!(decode_header_value(&encode_header_value(v)).as_deref(), Some(v), "{v:?}");
        }
        assert_eq!(encode_header_value("us-west1"), "us-west1");
        assert_eq!(encode_header_value("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(encode_header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(decode_header_value("=?base64?not base64?="), None);
        assert_eq!(decode_header_value("=?base64?SGk=?="), Some("Hi".into()));
        assert_eq!(decode_header_value("=?base64?SGl=?="), None, "non-canonical trailing bits");
    }

    #[test]
    fn modern_requests_are_validated_against_their_headers() {
        let ok = headers(&[(H_PROTOCOL_VERSION, "2026-07-28"), (H_METHOD, "tools/call"), (H_NAME, "a__b")]);
        let env = validate_modern(&ok, "tools/call", &params("2026-07-28", Some("a__b"))).unwrap();
        assert_eq!(env.version, "2026-07-28");
        assert_eq!(env.client_info, Some(json!({"name": "t", "version": "1"})));

        let code =
            |h: &HeaderMap, method: &str, p: Map<String, Value>| validate_modern(h, method, &p).unwrap_err().code;
        assert_eq!(code(&ok, "tools/call", params("2026-07-28", Some("a__c"))), HEADER_MISMATCH);
        assert_eq!(code(&ok, "tools/list", params("2026-07-28", None)), HEADER_MISMATCH);
        let no_name = headers(&[(H_PROTOCOL_VERSION, "2026-07-28"), (H_METHOD, "tools/call")]);
        assert_eq!(code(&no_name, "tools/call", params("2026-07-28", Some("a__b"))), HEADER_MISMATCH);
        let twice = headers(&[(H_PROTOCOL_VERSION, "2026-07-28"), (H_METHOD, "ping"), (H_METHOD, "ping")]);
        assert_eq!(code(&twice, "ping", params("2026-07-28", None)), HEADER_MISMATCH);
        assert_eq!(code(&ok, "tools/call", Map::new()), INVALID_PARAMS);
        let mut p = params("2026-07-28", Some("a__b"));
        p["_meta"].as_object_mut().unwrap().remove(META_CLIENT_CAPABILITIES);
        assert_eq!(code(&ok, "tools/call", p), INVALID_PARAMS);
        let future = headers(&[(H_PROTOCOL_VERSION, "2099-01-01"), (H_METHOD, "ping")]);
        let e = validate_modern(&future, "ping", &params("2099-01-01", None)).unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.data.unwrap()["supported"][0], "2026-07-28");
        let encoded =
            headers(&[(H_PROTOCOL_VERSION, "2026-07-28"), (H_METHOD, "prompts/get"), (H_NAME, "=?base64?w6k=?=")]);
        assert!(validate_modern(&encoded, "prompts/get", &params("2026-07-28", Some("é"))).is_ok());
    }

    #[test]
    fn mirrored_params_follow_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
            "n": {"type": "integer", "x-mcp-header": "N"},
            "q": {"type": "string"}}});
        let h = param_headers(&schema, &json!({"region": "Zürich", "opts": {"dry": true}, "q": "x"}));
        assert_eq!(
            h,
            [("Dry".to_string(), "true".to_string()), ("Region".to_string(), "=?base64?WsO8cmljaA==?=".to_string())]
        );
        assert_eq!(param_headers(&schema, &json!({"n": 42})), [("N".to_string(), "42".to_string())]);
    }

    #[test]
    fn negotiation_and_envelopes() {
        assert_eq!(negotiate_legacy(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate_legacy(Some("2024-11-05")), LATEST_LEGACY);
        assert_eq!(negotiate_legacy(None), LATEST_LEGACY);
        assert_eq!(era_of("2026-07-28"), Some(Era::Modern));
        assert_eq!(era_of("2025-03-26"), Some(Era::Legacy));
        assert_eq!(era_of("x"), None);
        let env =
            Envelope { version: "2025-11-25".into(), client_info: Some(json!({"name": "c"})), capabilities: json!({}) };
        let mut p = json!({"name": "t", "_meta": {"progressToken": 5}}).as_object().unwrap().clone();
        env.stamp(&mut p, "2026-07-28");
        assert_eq!(p["_meta"][META_PROTOCOL_VERSION], "2026-07-28");
        assert_eq!(p["_meta"]["progressToken"], 5);
        unstamp(&mut p);
        assert_eq!(p["_meta"], json!({"progressToken": 5}));
        let mut q = Map::new();
        env.stamp(&mut q, "2026-07-28");
        unstamp(&mut q);
        assert!(q.is_empty());
    }
}
