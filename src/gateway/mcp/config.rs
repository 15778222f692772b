//! The MCP part of the config: `mcp_servers:` (the upstreams `/mcp` fronts) and
//! `mcp_policies:` (per-tenant grants), checked with paths and suggestions like the rest.
//!
//! ```yaml
//! mcp_servers:
//!   - name: files                      # letters, digits, '-', '_' (never "__"); tools show as files__<tool>
//!     url: https://files.example.com/mcp   # Streamable HTTP endpoint
//!     auth: {bearer: $FILES_TOKEN}     # or {header: x-api-key, value: $KEY}; omit to send nothing
//!     protocol: auto                   # auto | 2026-07-28 | 2025-11-25 | 2025-06-18 | 2025-03-26
//!     timeout_ms: 30000                # for the answer's head (a JSON answer: the whole answer)
//!     region: eu                       # where it runs (keys pinned to a region see only its servers)
//!     tools_ttl_ms: 30000              # how long an isolate reuses the server's tools/list
//!     guardrails: {deny: [...], redact: [email], output: true}   # on arguments (and results)
//!     tool_limits: {write_file: {calls: 10, renewal_period: minute}}   # per key, every caller
//! mcp_policies:
//!   acme: {servers: [files], tools: ["files.read_*"], tool_limits: {"files.read_*": {calls: 60, renewal_period: minute}}}
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::features::guard::{self, Guardrails};
use crate::gateway::features::keys::{McpGrant, ToolLimit};
use crate::gateway::features::limits::{check_endpoint_limit, valid_tenant, EndpointLimit};
use crate::gateway::mcp::protocol::{LEGACY, MODERN};

const FIELDS: &[&str] = &[
    "name",
    "url",
    "auth",
    "protocol",
    "timeout_ms",
    "region",
    "tools_ttl_ms",
    "guardrails",
    "tool_limits",
    "description",
];

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_TOOLS_TTL_MS: u64 = 30_000;

/// The typed `mcp_servers` and `mcp_policies`.
#[derive(Debug, Default)]
pub struct McpConfig {
    /// In config order (the order of the union listings).
    pub servers: Vec<Arc<McpServer>>,
    /// Tenant → grant.
    pub policies: HashMap<String, McpGrant>,
}

impl McpConfig {
    pub fn server(&self, name: &str) -> Option<&Arc<McpServer>> {
        self.servers.iter().find(|s| s.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

#[derive(Debug)]
pub struct McpServer {
    pub name: String,
    pub url: String,
    pub auth: Option<UpstreamAuth>,
    pub protocol: Protocol,
    pub timeout_ms: u64,
    pub region: Option<String>,
    pub tools_ttl_ms: u64,
    /// Deny/redact on tool arguments; with `output: true` on results too.
    pub guardrails: Guardrails,
    /// Tool name pattern → limit, per key.
    pub tool_limits: Vec<(String, EndpointLimit)>,
}

/// A header carrying the gateway's credential for the upstream (never the client's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAuth {
    pub header: http::HeaderName,
    /// Text before the secret (`Bearer ` for `bearer:`).
    pub prefix: &'static str,
    pub value: SecretRef,
}

/// Which protocol era to speak to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Try the modern envelope first; on a non-modern refusal fall back to `initialize`
    /// (memoized per isolate), as the 2026-07-28 backward-compatibility section describes.
    Auto,
    /// This version, always.
    Version(&'static str),
}

/// Separates the server from the tool (or prompt) in names on `/mcp`: `files__read`.
pub const SEPARATOR: &str = "__";

/// The server part of a `server.tool` pattern.
pub fn server_part(pattern: &str) -> &str {
    pattern.split_once('.').map_or(pattern, |(s, _)| s)
}

fn valid_pattern(p: &str) -> bool {
    !p.is_empty() && p.len() <= 200 && p.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks a grant (a key's `mcp` field, or an `mcp_policies` entry) at `path`.
pub fn check_grant(path: &str, value: &Value, issues: &mut Issues) -> Option<McpGrant> {
    const FIELDS: &[&str] = &["servers", "tools", "tool_limits"];
    let before = issues.0.len();
    let Value::Object(map) = value else {
        issues.push(path, "must be an object: {servers, tools, tool_limits}");
        return None;
    };
    for field in map.keys().filter(|f| !FIELDS.contains(&f.as_str())) {
        issues.unknown(format!("{path}.{field}"), "MCP grant field", field, FIELDS);
    }
    let list = |field: &str, what: &str, issues: &mut Issues| -> Option<Vec<String>> {
        let v = map.get(field).filter(|v| !v.is_null())?;
        let Some(items) = v.as_array() else {
            issues.push(format!("{path}.{field}"), format!("must be a list of {what}"));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().filter(|s| valid_pattern(s)) {
                Some(s) => out.push(s.to_string()),
                None => issues.push(format!("{path}.{field}[{i}]"), format!("must be one of {what}")),
            }
        }
        Some(out)
    };
    let servers = list("servers", "server names (\"*\" for all)", issues);
    let tools = list("tools", "\"server.tool\" patterns (\"*\" matches any text)", issues);
    if let Some(tools) = &tools {
        for (i, t) in tools.iter().enumerate() {
            if !t.contains('.') && t != "*" {
                issues.push(format!("{path}.tools[{i}]"), format!("\"{t}\" must be \"server.tool\" (e.g. \"{t}.*\")"));
            }
        }
    }
    let mut tool_limits = std::collections::BTreeMap::new();
    match map.get("tool_limits") {
        None | Some(Value::Null) => {}
        Some(Value::Object(limits)) => {
            for (pattern, v) in limits {
                let at = format!("{path}.tool_limits.{pattern}");
                if !valid_pattern(pattern) || !pattern.contains('.') {
                    issues.push(&at, "a limit is keyed by a \"server.tool\" pattern");
                    continue;
                }
                if let Some(limit) = check_endpoint_limit(&at, v, issues) {
                    let renewal_period = limit.period.as_str().to_string();
                    tool_limits.insert(pattern.clone(), ToolLimit { calls: limit.calls, renewal_period });
                }
            }
        }
        Some(_) => {
            issues.push(format!("{path}.tool_limits"), "must map \"server.tool\" patterns to {calls, renewal_period}")
        }
    }
    (issues.0.len() == before).then_some(McpGrant { servers, tools, tool_limits })
}

/// Reports grant entries that name servers the config does not have (typos).
pub fn check_grant_servers(path: &str, grant: &McpGrant, config: &McpConfig, issues: &mut Issues) {
    let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
    let known = |s: &str| s.contains('*') || names.contains(&s);
    for (i, s) in grant.servers.iter().flatten().enumerate() {
        if !known(s) {
            issues.unknown(format!("{path}.servers[{i}]"), "MCP server", s, &names);
        }
    }
    for (i, t) in grant.tools.iter().flatten().enumerate() {
        let server = server_part(t);
        if !known(server) {
            issues.unknown(format!("{path}.tools[{i}]"), "MCP server", server, &names);
        }
    }
    for pattern in grant.tool_limits.keys() {
        let server = server_part(pattern);
        if !known(server) {
            issues.unknown(format!("{path}.tool_limits.{pattern}"), "MCP server", server, &names);
        }
    }
}

/// A valid server name: letters, digits, '-' and '_', 1-32 chars, no "__" (the separator in
/// namespaced names), not starting or ending with '_'.
pub fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.contains(SEPARATOR)
        && !name.starts_with('_')
        && !name.ends_with('_')
}

/// Checks `mcp_servers` (a list) and `mcp_policies` (tenant → grant). `regions` are the config's
/// region names.
pub fn check_section(servers: &Value, policies: Option<&Value>, regions: &[&str], issues: &mut Issues) -> McpConfig {
    let mut config = McpConfig::default();
    match servers {
        Value::Null => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("mcp_servers[{i}]");
                let Some(server) = check_server(&path, item, regions, issues) else { continue };
                if config.server(&server.name).is_some() {
                    issues.push(format!("{path}.name"), format!("duplicate MCP server name \"{}\"", server.name));
                    continue;
                }
                config.servers.push(Arc::new(server));
            }
        }
        _ => issues.push("mcp_servers", "must be a list of servers: [{name, url, ...}]"),
    }
    match policies {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (tenant, value) in map {
                let path = format!("mcp_policies.{tenant}");
                if !valid_tenant(tenant) {
                    issues.push(&path, "a tenant name has letters, digits, '_', '-', '.' (1-64 chars)");
                    continue;
                }
                if let Some(grant) = check_grant(&path, value, issues) {
                    check_grant_servers(&path, &grant, &config, issues);
                    config.policies.insert(tenant.clone(), grant);
                }
            }
        }
        Some(_) => issues.push("mcp_policies", "must map tenant names to {servers, tools, tool_limits}"),
    }
    config
}

fn check_server(path: &str, value: &Value, regions: &[&str], issues: &mut Issues) -> Option<McpServer> {
    let Value::Object(map) = value else {
        issues.push(path, "must be an object: {name, url, ...}");
        return None;
    };
    let before = issues.0.len();
    for field in map.keys().filter(|f| !FIELDS.contains(&f.as_str())) {
        issues.unknown(format!("{path}.{field}"), "MCP server field", field, FIELDS);
    }
    let string = |field: &str, issues: &mut Issues| match map.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            issues.push(format!("{path}.{field}"), "must be a string");
            None
        }
    };
    let name = string("name", issues).unwrap_or_default();
    if !map.contains_key("name") {
        issues.push(format!("{path}.name"), "is required");
    } else if !valid_server_name(&name) {
        issues.push(
            format!("{path}.name"),
            format!("\"{name}\" is not a valid server name (letters, digits, '-', '_'; 1-32 chars; no \"__\")"),
        );
    }
    let url = string("url", issues).unwrap_or_default();
    if !map.contains_key("url") {
        issues.push(format!("{path}.url"), "is required (the server's Streamable HTTP endpoint)");
    } else if !(url.starts_with("http://") || url.starts_with("https://")) || url.parse::<http::Uri>().is_err() {
        issues.push(format!("{path}.url"), format!("\"{url}\" must be an http:// or https:// URL"));
    }
    let auth = map.get("auth").filter(|v| !v.is_null()).and_then(|v| check_auth(&format!("{path}.auth"), v, issues));
    let protocol = match string("protocol", issues).as_deref() {
        None | Some("auto") => Protocol::Auto,
        Some(v) => match MODERN.iter().chain(LEGACY).find(|known| **known == v) {
            Some(known) => Protocol::Version(known),
            None => {
                let names: Vec<&str> = std::iter::once("auto").chain(MODERN.iter().chain(LEGACY).copied()).collect();
                issues.unknown(format!("{path}.protocol"), "MCP protocol version", v, &names);
                Protocol::Auto
            }
        },
    };
    let number = |field: &str, default: u64, min: u64, max: u64, issues: &mut Issues| match map.get(field) {
        None | Some(Value::Null) => default,
        Some(v) => match v.as_u64().filter(|n| (min..=max).contains(n)) {
            Some(n) => n,
            None => {
                issues.push(format!("{path}.{field}"), format!("must be a whole number from {min} to {max}"));
                default
            }
        },
    };
    let timeout_ms = number("timeout_ms", DEFAULT_TIMEOUT_MS, 1, 600_000, issues);
    let tools_ttl_ms = number("tools_ttl_ms", DEFAULT_TOOLS_TTL_MS, 0, 3_600_000, issues);
    let region = string("region", issues);
    if let Some(region) = &region {
        if !regions.contains(&region.as_str()) {
            issues.unknown(format!("{path}.region"), "region", region, regions);
        }
    }
    let guardrails = match map.get("guardrails").filter(|v| !v.is_null()) {
        Some(v) => guard::check(&format!("{path}.guardrails"), v, issues).unwrap_or_default(),
        None => Guardrails::default(),
    };
    let mut tool_limits = Vec::new();
    match map.get("tool_limits") {
        None | Some(Value::Null) => {}
        Some(Value::Object(limits)) => {
            for (tool, v) in limits {
                if let Some(limit) = check_endpoint_limit(&format!("{path}.tool_limits.{tool}"), v, issues) {
                    tool_limits.push((tool.clone(), limit));
                }
            }
        }
        Some(_) => issues.push(format!("{path}.tool_limits"), "must map tool names to {calls, renewal_period}"),
    }
    if let Some(d) = map.get("description") {
        if !d.is_string() {
            issues.push(format!("{path}.description"), "must be a string");
        }
    }
    (issues.0.len() == before).then_some(McpServer {
        name,
        url,
        auth,
        protocol,
        timeout_ms,
        region,
        tools_ttl_ms,
        guardrails,
        tool_limits,
    })
}

fn check_auth(path: &str, value: &Value, issues: &mut Issues) -> Option<UpstreamAuth> {
    const AUTH_FIELDS: &[&str] = &["bearer", "header", "value"];
    let Value::Object(map) = value else {
        issues.push(path, "must be {bearer: $SECRET} or {header: <name>, value: $SECRET}");
        return None;
    };
    for field in map.keys().filter(|f| !AUTH_FIELDS.contains(&f.as_str())) {
        issues.unknown(format!("{path}.{field}"), "auth field", field, AUTH_FIELDS);
    }
    let text = |field: &str| map.get(field).and_then(Value::as_str).filter(|s| !s.is_empty());
    match (text("bearer"), text("header"), text("value")) {
        (Some(secret), None, None) => Some(UpstreamAuth {
            header: http::header::AUTHORIZATION,
            prefix: "Bearer ",
            value: SecretRef::parse(secret),
        }),
        (None, Some(header), Some(secret)) => match http::HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) if !is_hop_or_framing(&name) => {
                Some(UpstreamAuth { header: name, prefix: "", value: SecretRef::parse(secret) })
            }
            _ => {
                issues.push(format!("{path}.header"), format!("\"{header}\" is not a header the gateway may set"));
                None
            }
        },
        _ => {
            issues.push(path, "give either `bearer: $SECRET`, or `header: <name>` with `value: $SECRET`");
            None
        }
    }
}

fn is_hop_or_framing(name: &http::HeaderName) -> bool {
    use http::header::*;
    [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, HOST, CONTENT_TYPE, ACCEPT, TE, UPGRADE].contains(name)
        || name.as_str().starts_with("mcp-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issues_of(servers: Value, policies: Option<Value>) -> Vec<String> {
        let mut issues = Issues::default();
        check_section(&servers, policies.as_ref(), &["eu", "us"], &mut issues);
        issues.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_full_server() {
        let mut issues = Issues::default();
        let c = check_section(
            &json!([{"name": "files", "url": "https://f.example/mcp", "auth": {"bearer": "$FILES_TOKEN"},
                     "protocol": "2025-11-25", "timeout_ms": 5000, "region": "eu", "tools_ttl_ms": 0,
                     "guardrails": {"redact": ["email"], "output": true},
                     "tool_limits": {"write": {"calls": 3, "renewal_period": "minute"}}},
                    {"name": "search-2", "url": "http://s/mcp", "auth": {"header": "x-api-key", "value": "lit"}}]),
            None,
            &["eu"],
            &mut issues,
        );
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        let f = c.server("files").unwrap();
        assert_eq!(f.protocol, Protocol::Version("2025-11-25"));
        assert_eq!((f.timeout_ms, f.tools_ttl_ms, f.region.as_deref()), (5000, 0, Some("eu")));
        let auth = f.auth.as_ref().unwrap();
        assert_eq!((auth.header.as_str(), auth.prefix), ("authorization", "Bearer "));
        assert_eq!(auth.value, SecretRef::Env("FILES_TOKEN".into()));
        assert!(f.guardrails.output);
        let s = c.server("search-2").unwrap();
        assert_eq!((s.protocol, s.timeout_ms), (Protocol::Auto, DEFAULT_TIMEOUT_MS));
        assert_eq!(s.auth.as_ref().unwrap().header.as_str(), "x-api-key");
    }

    #[test]
    fn every_issue_with_its_path() {
        let text = issues_of(
            json!([
                {"name": "a__b", "url": "ftp://x", "protocl": "auto"},
                {"name": "ok", "url": "http://x/mcp", "protocol": "2025-11-26", "timeout_ms": 0, "region": "europe",
                 "auth": {"bearer": "$T", "header": "x"}, "tool_limits": {"t": {"calls": 1}}},
                {"name": "ok", "url": "http://y/mcp"},
                {"url": "http://z/mcp", "auth": {"header": "content-length", "value": "v"}}
            ]),
            Some(json!({"acme": {"servers": ["okk"]}, "bad tenant": {}})),
        );
        let has = |p: &str| text.iter().any(|t| t.starts_with(p));
        assert!(
            has("mcp_servers[0].protocl: unknown MCP server field \"protocl\" (did you mean \"protocol\"?)"),
            "{text:?}"
        );
        assert!(has("mcp_servers[0].name: \"a__b\" is not a valid server name"), "{text:?}");
        assert!(has("mcp_servers[0].url: \"ftp://x\" must be an http:// or https:// URL"), "{text:?}");
        assert!(
            has("mcp_servers[1].protocol: unknown MCP protocol version \"2025-11-26\" (did you mean \"2025-11-25\"?)"),
            "{text:?}"
        );
        assert!(has("mcp_servers[1].timeout_ms: must be a whole number from 1 to 600000"), "{text:?}");
        assert!(has("mcp_servers[1].region: unknown region \"europe\""), "{text:?}");
        assert!(has("mcp_servers[1].auth: give either"), "{text:?}");
        assert!(has("mcp_servers[1].tool_limits.t.renewal_period: is required"), "{text:?}");
        assert!(has("mcp_servers[3].name: is required"), "{text:?}");
        assert!(has("mcp_servers[3].auth.header: \"content-length\" is not a header"), "{text:?}");
        assert!(has("mcp_policies.acme.servers[0]: unknown MCP server \"okk\" (did you mean \"ok\"?)"), "{text:?}");
        assert!(has("mcp_policies.bad tenant: a tenant name has"), "{text:?}");
        assert_eq!(
            issues_of(json!({"name": "x"}), None),
            ["mcp_servers: must be a list of servers: [{name, url, ...}]"]
        );
        assert_eq!(
            issues_of(json!([{"name": "a", "url": "http://a/mcp"}, {"name": "a", "url": "http://b/mcp"}]), None),
            ["mcp_servers[1].name: duplicate MCP server name \"a\""]
        );
    }

    #[test]
    fn server_names() {
        for ok in ["files", "a", "my-server", "srv_2"] {
            assert!(valid_server_name(ok), "{ok}");
        }
        for bad in ["", "a__b", "_a", "a_", "a.b", "a b", &"x".repeat(33)] {
            assert!(!valid_server_name(bad), "{bad}");
        }
    }
}
