//! What the upstreams offer — tools, prompts, resources, resource templates — read with their
//! `*/list` methods (every page) and kept per isolate for the server's `tools_ttl_ms`. The
//! union on `/mcp` is built from these per caller (filtered by policy, names namespaced).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{json, Map, Value};

use crate::gateway::mcp::config::McpServer;
use crate::gateway::mcp::jsonrpc::{RpcError, METHOD_NOT_FOUND};
use crate::gateway::mcp::upstream::{self, Caller, Eras, Outbound};
use crate::gateway::ports::Ports;

/// Pages read from one server per listing, at most.
const MAX_PAGES: usize = 20;
/// Listings kept per isolate, at most (cleared when full).
const MAX_LISTINGS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl Kind {
    pub fn from_method(method: &str) -> Option<Kind> {
        Some(match method {
            "tools/list" => Kind::Tools,
            "prompts/list" => Kind::Prompts,
            "resources/list" => Kind::Resources,
            "resources/templates/list" => Kind::Templates,
            _ => return None,
        })
    }

    pub fn method(self) -> &'static str {
        match self {
            Kind::Tools => "tools/list",
            Kind::Prompts => "prompts/list",
            Kind::Resources => "resources/list",
            Kind::Templates => "resources/templates/list",
        }
    }

    /// The result field holding the items.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Prompts => "prompts",
            Kind::Resources => "resources",
            Kind::Templates => "resourceTemplates",
        }
    }
}

/// (fetched at, items) per (kind, server).
type Cached = HashMap<(Kind, String), (u64, Rc<Vec<Value>>)>;

/// The per-isolate listing cache.
#[derive(Default)]
pub struct Listings(RefCell<Cached>);

impl Listings {
    fn get(&self, kind: Kind, server: &McpServer, now_ms: u64) -> Option<Rc<Vec<Value>>> {
        let map = self.0.borrow();
        let (at, items) = map.get(&(kind, cache_name(server)))?;
        (now_ms.saturating_sub(*at) < server.tools_ttl_ms).then(|| items.clone())
    }

    fn put(&self, kind: Kind, server: &McpServer, now_ms: u64, items: Rc<Vec<Value>>) {
        if server.tools_ttl_ms == 0 {
            return;
        }
        let mut map = self.0.borrow_mut();
        if map.len() >= MAX_LISTINGS {
            map.clear();
        }
        map.insert((kind, cache_name(server)), (now_ms, items));
    }
}

/// A tool's definition from the isolate's cache, if it is there and fresh (no upstream call).
pub fn cached_tool(listings: &Listings, server: &McpServer, tool: &str, now_ms: u64) -> Option<Value> {
    let tools = listings.get(Kind::Tools, server, now_ms)?;
    tools.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(tool)).cloned()
}

/// Same name, other URL (a config change): another listing.
fn cache_name(server: &McpServer) -> String {
    format!("{}|{}", server.name, server.url)
}

/// Everything `server` offers of `kind` (all pages); a server that does not implement the
/// listing offers nothing.
pub async fn items<P: Ports>(
    ports: &P,
    listings: &Listings,
    eras: &Eras,
    server: &McpServer,
    caller: &mut Caller,
    kind: Kind,
) -> Result<Rc<Vec<Value>>, RpcError> {
    if let Some(items) = listings.get(kind, server, ports.now_ms()) {
        return Ok(items);
    }
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let mut params = Map::new();
        if let Some(c) = &cursor {
            params.insert("cursor".into(), json!(c));
        }
        let id = json!(format!("gateway-list-{page}"));
        let out = Outbound { id: Some(&id), method: kind.method(), params, param_headers: Vec::new() };
        let result = match upstream::call(ports, eras, server, caller, &out).await {
            Ok(result) => result,
            Err(e) if e.code == METHOD_NOT_FOUND => break,
            Err(e) => return Err(e),
        };
        if let Some(Value::Array(items)) = result.get(kind.field()) {
            all.extend(items.iter().filter(|i| i.is_object()).cloned());
        }
        cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let all = Rc::new(all);
    listings.put(kind, server, ports.now_ms(), all.clone());
    Ok(all)
}
