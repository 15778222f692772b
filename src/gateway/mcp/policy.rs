//! Who may use which MCP server and tool: the caller's grants (the key's `mcp` field and the
//! tenant's `mcp_policies` entry; both must allow), the key's residency pin, and the per-tool
//! rate limit that applies. Also the `server__tool` names clients see on `/mcp`.

use crate::gateway::features::keys::{KeyRecord, McpGrant, ToolLimit};
use crate::gateway::features::limits::{EndpointLimit, Period};
pub use crate::gateway::mcp::config::SEPARATOR;
use crate::gateway::mcp::config::{server_part, McpConfig, McpServer};

/// `server__tool`.
pub fn namespaced(server: &str, name: &str) -> String {
    format!("{server}{SEPARATOR}{name}")
}

/// Splits `server__tool` at the first separator (server names never contain one).
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR).filter(|(server, tool)| !server.is_empty() && !tool.is_empty())
}

/// `*` matches any run of characters (also none); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

/// The typed form of a [`ToolLimit`].
pub fn tool_limit(limit: &ToolLimit) -> Option<EndpointLimit> {
    let period = Period::ALL.iter().find(|(n, _)| *n == limit.renewal_period)?.1;
    (limit.calls >= 1).then_some(EndpointLimit { calls: limit.calls, period })
}

/// What one caller may do: every grant that applies must allow.
pub struct Policy<'a> {
    grants: Vec<&'a McpGrant>,
    /// The key's residency pin: only servers in this region.
    region: Option<&'a str>,
}

impl<'a> Policy<'a> {
    pub fn for_key(config: &'a McpConfig, key: &'a KeyRecord) -> Policy<'a> {
        let grants = key.mcp.iter().chain(config.policies.get(&key.tenant)).collect();
        Policy { grants, region: key.region.as_deref() }
    }

    /// No restriction (tests).
    pub fn open() -> Policy<'static> {
        Policy { grants: Vec::new(), region: None }
    }

    /// Whether any tool of `server` may be allowed (which servers a listing asks).
    pub fn allows_server(&self, server: &McpServer) -> bool {
        if self.region.is_some() && server.region.as_deref() != self.region {
            return false;
        }
        self.grants.iter().all(|g| {
            g.servers.as_ref().is_none_or(|list| list.iter().any(|p| glob(p, &server.name)))
                && g.tools.as_ref().is_none_or(|list| list.iter().any(|p| glob(server_part(p), &server.name)))
        })
    }

    /// Whether `server.tool` is allowed (also for prompts: `server.prompt`).
    pub fn allows_tool(&self, server: &McpServer, tool: &str) -> bool {
        let full = format!("{}.{tool}", server.name);
        self.allows_server(server)
            && self.grants.iter().all(|g| g.tools.as_ref().is_none_or(|list| list.iter().any(|p| glob(p, &full))))
    }

    /// The limit on `server.tool` for this caller: the key's grant first, then the tenant's,
    /// then the server's own `tool_limits`; the first pattern that matches wins.
    pub fn tool_limit(&self, server: &McpServer, tool: &str) -> Option<EndpointLimit> {
        let full = format!("{}.{tool}", server.name);
        for g in &self.grants {
            if let Some((_, limit)) = g.tool_limits.iter().find(|(p, _)| glob(p, &full)) {
                return tool_limit(limit);
            }
        }
        server.tool_limits.iter().find(|(p, _)| glob(p, tool)).map(|(_, l)| *l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::check::Issues;
    use crate::gateway::mcp::config::{check_grant, check_grant_servers, check_section};
    use serde_json::{json, Value};

    fn config() -> McpConfig {
        let mut issues = Issues::default();
        let c = check_section(
            &json!([
                {"name": "files", "url": "http://f/mcp", "region": "eu", "tool_limits": {"write": {"calls": 9, "renewal_period": "hour"}}},
                {"name": "search", "url": "http://s/mcp"}
            ]),
            Some(&json!({"acme": {"servers": ["files", "search"], "tools": ["files.read_*", "search.*"],
                                   "tool_limits": {"search.web": {"calls": 5, "renewal_period": "minute"}}}})),
            &["eu", "us"],
            &mut issues,
        );
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        c
    }

    fn key(tenant: &str, mcp: Option<Value>) -> KeyRecord {
        KeyRecord {
            id: "k_1".into(),
            tenant: tenant.into(),
            mcp: mcp.map(|v| serde_json::from_value(v).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn globs_and_names() {
        assert!(glob("*", "") && glob("*", "abc") && glob("a*c", "abbbc") && glob("files.read_*", "files.read_x"));
        assert!(!glob("a*c", "abcd") && !glob("files.read_*", "files.write") && !glob("", "x"));
        assert!(glob("*.*", "a.b") && glob("a**", "a") && glob("*b*", "abc"));
        assert_eq!(split("files__read__x"), Some(("files", "read__x")));
        assert_eq!(split("__x"), None);
        assert_eq!(split("files__"), None);
        assert_eq!(split("files"), None);
        assert_eq!(namespaced("files", "read"), "files__read");
    }

    #[test]
    fn key_and_tenant_grants_both_apply() {
        let c = config();
        let files = c.server("files").unwrap();
        let search = c.server("search").unwrap();
        // Tenant policy only.
        let k = key("acme", None);
        let p = Policy::for_key(&c, &k);
        assert!(p.allows_tool(files, "read_file") && !p.allows_tool(files, "write"));
        assert!(p.allows_tool(search, "web"));
        // Key narrows further: only search.
        let k = key("acme", Some(json!({"servers": ["search"]})));
        let p = Policy::for_key(&c, &k);
        assert!(!p.allows_server(files) && p.allows_tool(search, "web"));
        // No grant at all: everything.
        let k = key("other", None);
        let p = Policy::for_key(&c, &k);
        assert!(p.allows_tool(files, "write") && p.allows_tool(search, "x"));
        // Tools patterns imply servers.
        let k = key("other", Some(json!({"tools": ["files.read"]})));
        let p = Policy::for_key(&c, &k);
        assert!(p.allows_server(files) && !p.allows_server(search));
        assert!(p.allows_tool(files, "read") && !p.allows_tool(files, "read2"));
    }

    #[test]
    fn residency_pin_limits_servers() {
        let c = config();
        let mut k = key("other", None);
        k.region = Some("eu".into());
        let p = Policy::for_key(&c, &k);
        assert!(p.allows_server(c.server("files").unwrap()));
        assert!(!p.allows_server(c.server("search").unwrap()), "a server without a region is not in the pinned one");
    }

    #[test]
    fn tool_limits_key_then_tenant_then_server() {
        let c = config();
        let files = c.server("files").unwrap();
        let search = c.server("search").unwrap();
        let k = key("acme", Some(json!({"tool_limits": {"search.*": {"calls": 2, "renewal_period": "second"}}})));
        let p = Policy::for_key(&c, &k);
        assert_eq!(p.tool_limit(search, "web"), Some(EndpointLimit { calls: 2, period: Period::Second }));
        let k = key("acme", None);
        let p = Policy::for_key(&c, &k);
        assert_eq!(p.tool_limit(search, "web"), Some(EndpointLimit { calls: 5, period: Period::Minute }));
        assert_eq!(p.tool_limit(search, "news"), None);
        assert_eq!(p.tool_limit(files, "write"), Some(EndpointLimit { calls: 9, period: Period::Hour }));
    }

    #[test]
    fn grant_checks_have_paths() {
        let mut issues = Issues::default();
        let g = check_grant(
            "mcp",
            &json!({"servers": ["a", 3], "tools": ["files"], "tool_limits": {"x": {"calls": 1, "renewal_period": "minute"},
                    "a.b": {"calls": 0, "renewal_period": "minuet"}}, "tool": []}),
            &mut issues,
        );
        assert!(g.is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        let has = |p: &str| text.iter().any(|t| t.starts_with(p));
        assert!(has("mcp.tool: unknown MCP grant field \"tool\" (did you mean \"tools\"?)"), "{text:?}");
        assert!(has("mcp.servers[1]: must be one of server names"), "{text:?}");
        assert!(has("mcp.tools[0]: \"files\" must be \"server.tool\""), "{text:?}");
        assert!(has("mcp.tool_limits.x: a limit is keyed"), "{text:?}");
        assert!(has("mcp.tool_limits.a.b.calls: must be a whole number >= 1"), "{text:?}");
        assert!(
            has("mcp.tool_limits.a.b.renewal_period: unknown renewal period \"minuet\" (did you mean \"minute\"?)"),
            "{text:?}"
        );

        let mut issues = Issues::default();
        let g = check_grant("g", &json!({"servers": ["fils"], "tools": ["serch.*"]}), &mut issues).unwrap();
        check_grant_servers("mcp_policies.acme", &g, &config(), &mut issues);
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "mcp_policies.acme.servers[0]: unknown MCP server \"fils\" (did you mean \"files\"?)",
                "mcp_policies.acme.tools[0]: unknown MCP server \"serch\" (did you mean \"search\"?)"
            ]
        );
    }
}
