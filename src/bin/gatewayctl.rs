//! `gatewayctl`: operate the gateway from a terminal.
//!
//! Offline (no gateway needed):
//!   gatewayctl validate FILE      check a config (JSON or YAML); every issue with its path
//!   gatewayctl render FILE        print the KV entries for it, as `wrangler kv bulk put` takes
//!
//! Against a running gateway's admin API (`--url URL` or `GATEWAY_URL`; the admin token from
//! `GATEWAY_ADMIN_TOKEN`, never from the command line, so it stays out of shell history):
//!   gatewayctl plan FILE          validate locally and on the gateway, diff against the live config
//!   gatewayctl apply FILE         store it as config:v:<version> and make it active
//!   gatewayctl rollback VERSION   make an earlier applied version active again
//!   gatewayctl config             print the live config (secret references only)
//!   gatewayctl versions           list applied versions
//!   gatewayctl keys create --tenant T [--name N] [--endpoints a,b] [--rpm N] [--tpm N]
//!                          [--budget-usd X] [--budget-period day|month] [--region R]
//!                          [--expires-in SECS | --expires-at UNIX] [--exact]
//!                          [--mcp-servers a,b] [--mcp-tools "server.tool,server.*"]
//!   gatewayctl keys list [--tenant T]
//!   gatewayctl keys revoke ID | gatewayctl keys rotate ID
//!   gatewayctl usage (--key ID | --tenant T) [--from YYYY-MM-DD] [--to YYYY-MM-DD]
//!   gatewayctl access list [--state pending|approved|denied|all] [--tenant T]
//!   gatewayctl access get ID
//!   gatewayctl access approve ID [--expires-in SECS | --expires-at UNIX] [--note TEXT]
//!   gatewayctl access deny ID [--note TEXT]
//!
//! Answers are printed as JSON on stdout. `keys create` and `keys rotate` print the new key
//! once (it is not stored anywhere); errors go to stderr with a non-zero exit.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use edge_gateway::gateway::admin::redact_secrets;
use edge_gateway::gateway::config::{Config, ACTIVE_KEY};
use serde_json::{json, Map, Value};

const USAGE: &str = "usage: gatewayctl validate FILE | gatewayctl render FILE
       gatewayctl [--url URL] plan FILE | apply FILE | rollback VERSION | config | versions
       gatewayctl [--url URL] keys create --tenant T [--name N] [--endpoints a,b] [--rpm N] [--tpm N]
                  [--budget-usd X] [--budget-period day|month] [--region R] [--expires-in SECS | --expires-at UNIX] [--exact]
                  [--mcp-servers a,b] [--mcp-tools server.tool,server.*]
       gatewayctl [--url URL] keys list [--tenant T] | keys revoke ID | keys rotate ID
       gatewayctl [--url URL] usage (--key ID | --tenant T) [--from YYYY-MM-DD] [--to YYYY-MM-DD]
       gatewayctl [--url URL] access list [--state pending|approved|denied|all] [--tenant T] | access get ID
       gatewayctl [--url URL] access approve ID [--expires-in SECS | --expires-at UNIX] [--note TEXT]
       gatewayctl [--url URL] access deny ID [--note TEXT]
the gateway URL comes from --url or GATEWAY_URL, the admin token from GATEWAY_ADMIN_TOKEN";

/// The value flags of `keys create` (the key's spec).
const KEY_FLAGS: &[&str] = &[
    "tenant",
    "name",
    "endpoints",
    "rpm",
    "tpm",
    "budget-usd",
    "budget-period",
    "region",
    "expires-in",
    "expires-at",
    "mcp-servers",
    "mcp-tools",
];
/// Other flags that take a value.
const OTHER_VALUE_FLAGS: &[&str] = &["url", "key", "from", "to", "state", "note"];
/// Flags that are switches.
const SWITCHES: &[&str] = &["exact"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    if matches!(args.as_slice(), [a] if a == "-h" || a == "--help" || a == "help") {
        out(USAGE);
        return Ok(());
    }
    let (flags, positional) = parse_args(args)?;
    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    let only = |allowed: &[&str]| -> Result<(), String> {
        match flags.keys().find(|f| !allowed.contains(&f.as_str())) {
            Some(f) => Err(format!("--{f} does not apply here\n{USAGE}")),
            None => Ok(()),
        }
    };
    match words.as_slice() {
        ["validate", file] => {
            only(&[])?;
            validate(file)
        }
        ["render", file] => {
            only(&[])?;
            render(file)
        }
        ["plan", file] => {
            only(&["url"])?;
            plan(&Client::new(&flags)?, file)
        }
        ["apply", file] => {
            only(&["url"])?;
            apply(&Client::new(&flags)?, file)
        }
        ["rollback", version] => {
            only(&["url"])?;
            let client = Client::new(&flags)?;
            print_json(&client.call("POST", "/admin/config/rollback", Some(&json!({"version": version})))?);
            Ok(())
        }
        ["config"] => {
            only(&["url"])?;
            print_json(&Client::new(&flags)?.call("GET", "/admin/config", None)?);
            Ok(())
        }
        ["versions"] => {
            only(&["url"])?;
            print_json(&Client::new(&flags)?.call("GET", "/admin/config/versions", None)?);
            Ok(())
        }
        ["keys", "create"] => {
            only(&[KEY_FLAGS, &["url", "exact"]].concat())?;
            let body = key_request(&flags)?;
            let created = Client::new(&flags)?.call("POST", "/admin/keys", Some(&body))?;
            print_json(&created);
            eprintln!("store the key now: it is shown only once");
            Ok(())
        }
        ["keys", "list"] => {
            only(&["url", "tenant"])?;
            // The admin API answers in pages; follow `next_cursor` and print them as one list.
            let client = Client::new(&flags)?;
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut query = Vec::new();
                if let Some(t) = flags.get("tenant") {
                    query.push(format!("tenant={}", encode(t)));
                }
                if let Some(c) = &cursor {
                    query.push(format!("cursor={}", encode(c)));
                }
                let path = if query.is_empty() {
                    "/admin/keys".to_string()
                } else {
                    format!("/admin/keys?{}", query.join("&"))
                };
                let page = client.call("GET", &path, None)?;
                keys.extend(page["keys"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_string()),
                    None => break,
                }
            }
            print_json(&json!({ "keys": keys }));
            Ok(())
        }
        ["keys", action @ ("revoke" | "rotate"), id] => {
            only(&["url"])?;
            let answer = Client::new(&flags)?.call("POST", &format!("/admin/keys/{}/{action}", encode(id)), None)?;
            print_json(&answer);
            if *action == "rotate" {
                eprintln!("store the new key now: it is shown only once; the previous key no longer works");
            }
            Ok(())
        }
        ["usage"] => {
            only(&["url", "key", "tenant", "from", "to"])?;
            let mut query = Vec::new();
            for name in ["key", "tenant", "from", "to"] {
                if let Some(v) = flags.get(name) {
                    query.push(format!("{name}={}", encode(v)));
                }
            }
            if !flags.contains_key("key") && !flags.contains_key("tenant") {
                return Err(format!("usage needs --key ID or --tenant NAME\n{USAGE}"));
            }
            print_json(&Client::new(&flags)?.call("GET", &format!("/admin/usage?{}", query.join("&")), None)?);
            Ok(())
        }
        ["access", "list"] => {
            only(&["url", "state", "tenant"])?;
            let mut query = Vec::new();
            for name in ["state", "tenant"] {
                if let Some(v) = flags.get(name) {
                    query.push(format!("{name}={}", encode(v)));
                }
            }
            let path = format!("/admin/access-requests?{}", query.join("&"));
            print_json(&Client::new(&flags)?.call("GET", path.trim_end_matches('?'), None)?);
            Ok(())
        }
        ["access", "get", id] => {
            only(&["url"])?;
            print_json(&Client::new(&flags)?.call("GET", &format!("/admin/access-requests/{}", encode(id)), None)?);
            Ok(())
        }
        ["access", action @ ("approve" | "deny"), id] => {
            let body = if *action == "approve" {
                only(&["url", "expires-in", "expires-at", "note"])?;
                decision(&flags)?
            } else {
                only(&["url", "note"])?;
                decision(&flags)?
            };
            let path = format!("/admin/access-requests/{}/{action}", encode(id));
            print_json(&Client::new(&flags)?.call("POST", &path, Some(&body))?);
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    }
}

/// The body of `access approve|deny`: `{expires_in?, expires_at?, note?}`.
fn decision(flags: &BTreeMap<String, String>) -> Result<Value, String> {
    let mut body = Map::new();
    for (flag, field) in [("expires-in", "expires_in"), ("expires-at", "expires_at")] {
        if let Some(v) = flags.get(flag) {
            let n: u64 = v.parse().map_err(|_| format!("--{flag} must be a whole number, not {v:?}"))?;
            body.insert(field.into(), json!(n));
        }
    }
    if let Some(note) = flags.get("note") {
        body.insert("note".into(), json!(note));
    }
    Ok(Value::Object(body))
}

/// Splits `--flag value`, `--flag=value` and switches from positional words.
fn parse_args(args: Vec<String>) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut flags = BTreeMap::new();
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            positional.push(arg);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        if SWITCHES.contains(&name.as_str()) {
            if inline.is_some() {
                return Err(format!("--{name} takes no value"));
            }
            flags.insert(name, "true".into());
        } else if KEY_FLAGS.contains(&name.as_str()) || OTHER_VALUE_FLAGS.contains(&name.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("--{name} needs a value"))?,
            };
            flags.insert(name, value);
        } else {
            return Err(format!("unknown flag --{name}\n{USAGE}"));
        }
    }
    Ok((flags, positional))
}

/// Reads a config file as a JSON value; YAML when the name says so.
fn load(file: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    if file.ends_with(".yaml") || file.ends_with(".yml") {
        serde_yaml::from_str(&text).map_err(|e| format!("{file}: invalid YAML: {e}"))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{file}: invalid JSON: {e}"))
    }
}

fn check(file: &str) -> Result<(Value, Config), String> {
    let value = load(file)?;
    match Config::for_storage(value.clone()) {
        Ok(config) => Ok((value, config)),
        Err(issues) => {
            let lines: Vec<String> = issues.iter().map(|i| format!("  {i}")).collect();
            Err(format!("{file}: {} issue(s)\n{}", issues.len(), lines.join("\n")))
        }
    }
}

fn validate(file: &str) -> Result<(), String> {
    let (_, config) = check(file)?;
    for warning in config.warnings() {
        eprintln!("{file}: warning: {warning}");
    }
    let mut summary = format!("{} endpoint(s): {}", config.order.len(), config.order.join(", "));
    if !config.mcp.is_empty() {
        let servers: Vec<&str> = config.mcp.servers.iter().map(|s| s.name.as_str()).collect();
        summary.push_str(&format!("; {} MCP server(s): {}", servers.len(), servers.join(", ")));
    }
    out(&format!("{file}: ok ({summary})"));
    Ok(())
}

fn render(file: &str) -> Result<(), String> {
    let (value, _) = check(file)?;
    let entries = json!([{ "key": ACTIVE_KEY, "value": value.to_string() }]);
    out(&serde_json::to_string_pretty(&entries).unwrap_or_default());
    Ok(())
}

fn plan(client: &Client, file: &str) -> Result<(), String> {
    let (mut local, _) = check(file)?;
    // The gateway validates too: its code may be older or newer than this binary's.
    client
        .call("POST", "/admin/config?dry_run=true", Some(&local))
        .map_err(|e| format!("{file}: the gateway refuses it: {e}"))?;
    let live = match client.request("GET", "/admin/config", None)? {
        (200, value) => Some(value),
        (404, _) => None,
        (status, body) => return Err(describe_error(status, &body)),
    };
    redact_secrets(&mut local);
    let mut changes = Vec::new();
    diff("", live.as_ref(), Some(&local), &mut changes);
    let live_version = live.as_ref().and_then(|v| v.get("version")).map(Value::to_string);
    let local_version = local.get("version").map(Value::to_string);
    match &live {
        None => out(&format!(
            "no live config: apply would create version {}",
            local_version.as_deref().unwrap_or("(generated)")
        )),
        Some(_) if changes.is_empty() => {
            out(&format!("no changes (live version {})", live_version.as_deref().unwrap_or("?")))
        }
        Some(_) => {
            for line in &changes {
                out(line);
            }
            out(&format!(
                "{} change(s) against live version {}",
                changes.len(),
                live_version.as_deref().unwrap_or("?")
            ));
            if live_version.is_some() && live_version == local_version {
                out("note: the version is unchanged; apply refuses new content under an applied version: bump `version`");
            }
        }
    }
    Ok(())
}

/// Structural diff; arrays of objects with a `name` are matched by name.
fn diff(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
    let show = |v: &Value| {
        let s = v.to_string();
        if s.chars().count() > 200 {
            format!("{}…", s.chars().take(200).collect::<String>())
        } else {
            s
        }
    };
    let at = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match (old, new) {
        (Some(a), Some(b)) if a == b => {}
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                diff(&at(name), a.get(name), b.get(name), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => match (by_name(a), by_name(b)) {
            (Some(a), Some(b)) => {
                let mut names: Vec<&str> = a.keys().chain(b.keys()).copied().collect();
                names.sort();
                names.dedup();
                for name in names {
                    diff(&format!("{path}[{name}]"), a.get(name).copied(), b.get(name).copied(), out);
                }
            }
            _ => {
                for i in 0..a.len().max(b.len()) {
                    diff(&format!("{path}[{i}]"), a.get(i), b.get(i), out);
                }
            }
        },
        (None, Some(b)) => out.push(format!("+ {path}: {}", show(b))),
        (Some(a), None) => out.push(format!("- {path}: {}", show(a))),
        (Some(a), Some(b)) => out.push(format!("~ {path}: {} -> {}", show(a), show(b))),
        (None, None) => {}
    }
}

fn by_name(items: &[Value]) -> Option<BTreeMap<&str, &Value>> {
    let mut map = BTreeMap::new();
    for item in items {
        let name = item.get("name")?.as_str()?;
        if map.insert(name, item).is_some() {
            return None;
        }
    }
    Some(map)
}

fn apply(client: &Client, file: &str) -> Result<(), String> {
    let (value, _) = check(file)?;
    let answer = client.call("POST", "/admin/config", Some(&value))?;
    print_json(&answer);
    Ok(())
}

fn key_request(flags: &BTreeMap<String, String>) -> Result<Value, String> {
    let mut body = Map::new();
    let tenant = flags.get("tenant").ok_or_else(|| format!("keys create needs --tenant\n{USAGE}"))?;
    body.insert("tenant".into(), json!(tenant));
    if let Some(v) = flags.get("name") {
        body.insert("name".into(), json!(v));
    }
    if let Some(v) = flags.get("endpoints") {
        let list: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        body.insert("endpoints".into(), json!(list));
    }
    for (flag, field) in [("rpm", "rpm"), ("tpm", "tpm"), ("expires-in", "expires_in"), ("expires-at", "expires_at")] {
        if let Some(v) = flags.get(flag) {
            let n: u64 = v.parse().map_err(|_| format!("--{flag} must be a whole number, not {v:?}"))?;
            body.insert(field.into(), json!(n));
        }
    }
    if let Some(v) = flags.get("budget-usd") {
        let n: f64 = v.parse().map_err(|_| format!("--budget-usd must be a number, not {v:?}"))?;
        body.insert("budget_usd".into(), json!(n));
    }
    if let Some(v) = flags.get("budget-period") {
        body.insert("budget_period".into(), json!(v));
    }
    if let Some(v) = flags.get("region") {
        body.insert("region".into(), json!(v));
    }
    if flags.contains_key("exact") {
        body.insert("exact".into(), json!(true));
    }
    // The key's MCP grant (per-tool limits: through the admin API's `mcp.tool_limits`).
    let mut mcp = Map::new();
    for (flag, field) in [("mcp-servers", "servers"), ("mcp-tools", "tools")] {
        if let Some(v) = flags.get(flag) {
            let list: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            mcp.insert(field.into(), json!(list));
        }
    }
    if !mcp.is_empty() {
        body.insert("mcp".into(), Value::Object(mcp));
    }
    Ok(Value::Object(body))
}

fn print_json(value: &Value) {
    out(&serde_json::to_string_pretty(value).unwrap_or_default());
}

/// One line on stdout; a closed pipe (`gatewayctl render x | head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Percent-encodes a query or path component.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn describe_error(status: u16, body: &Value) -> String {
    let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("(no message)");
    let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("error");
    let mut text = format!("gateway answered {status} {code}: {message}");
    if let Some(issues) = body.get("issues").and_then(Value::as_array) {
        for issue in issues {
            let path = issue.get("path").and_then(Value::as_str).unwrap_or("");
            let message = issue.get("message").and_then(Value::as_str).unwrap_or("");
            text.push_str(&format!("\n  {path}: {message}"));
        }
    }
    text
}

/// The admin API client. The token is only ever sent in the Authorization header.
struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn new(flags: &BTreeMap<String, String>) -> Result<Client, String> {
        let base = flags
            .get("url")
            .cloned()
            .or_else(|| std::env::var("GATEWAY_URL").ok())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| format!("no gateway URL: pass --url URL or set GATEWAY_URL\n{USAGE}"))?;
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("the gateway URL must start with http:// or https://, not {base:?}"));
        }
        let token = std::env::var("GATEWAY_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or("no admin token: set GATEWAY_ADMIN_TOKEN (the gateway's host secret of that name)")?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Client { agent, base: base.trim_end_matches('/').to_string(), token })
    }

    /// One call; any status. Network failures are errors.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", &auth).call(),
            (_, body) => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.map(Value::to_string).unwrap_or_default()),
        };
        let mut response = sent.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let text =
            response.body_mut().read_to_string().map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| json!({"error": {"message": text.trim(), "code": "not_json"}}));
        Ok((status, value))
    }

    /// One call that must succeed (2xx); otherwise the gateway's error, issues included.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        match self.request(method, path, body)? {
            (status, value) if (200..300).contains(&status) => Ok(value),
            (status, value) => Err(describe_error(status, &value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_words() {
        let (flags, words) =
            parse_args(strings(&["keys", "create", "--tenant", "acme", "--rpm=5", "--exact"])).unwrap();
        assert_eq!(words, ["keys", "create"]);
        assert_eq!(flags["tenant"], "acme");
        assert_eq!(flags["rpm"], "5");
        assert_eq!(flags["exact"], "true");
        assert!(parse_args(strings(&["--tenant"])).is_err());
        assert!(parse_args(strings(&["--bogus", "x"])).is_err());
        let body = key_request(&flags).unwrap();
        assert_eq!(body, json!({"tenant": "acme", "rpm": 5, "exact": true}));
        let (flags, _) =
            parse_args(strings(&["--tenant", "t", "--endpoints", "chat, embeddings", "--budget-usd", "1.5"])).unwrap();
        assert_eq!(key_request(&flags).unwrap()["endpoints"], json!(["chat", "embeddings"]));
        let (flags, _) = parse_args(strings(&["--tenant", "t", "--rpm", "five"])).unwrap();
        assert!(key_request(&flags).is_err());
        let (flags, _) = parse_args(strings(&[
            "--tenant",
            "t",
            "--mcp-servers",
            "files",
            "--mcp-tools",
            "files.read_*, files.search",
        ]))
        .unwrap();
        assert_eq!(
            key_request(&flags).unwrap()["mcp"],
            json!({"servers": ["files"], "tools": ["files.read_*", "files.search"]})
        );
    }

    #[test]
    fn diff_matches_named_items() {
        let old = json!({"version": "1", "endpoints": [{"name": "a", "model": {"name": "m1"}}, {"name": "b"}]});
        let new = json!({"version": "2", "endpoints": [{"name": "c"}, {"name": "a", "model": {"name": "m2"}}]});
        let mut out = Vec::new();
        diff("", Some(&old), Some(&new), &mut out);
        assert_eq!(
            out,
            [
                "~ endpoints[a].model.name: \"m1\" -> \"m2\"",
                "- endpoints[b]: {\"name\":\"b\"}",
                "+ endpoints[c]: {\"name\":\"c\"}",
                "~ version: \"1\" -> \"2\"",
            ]
        );
        let mut none = Vec::new();
        diff("", Some(&old), Some(&old), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn access_decisions() {
        let (flags, words) =
            parse_args(strings(&["access", "approve", "ar_01", "--expires-in", "3600", "--note", "ok"])).unwrap();
        assert_eq!(words, ["access", "approve", "ar_01"]);
        assert_eq!(decision(&flags).unwrap(), json!({"expires_in": 3600, "note": "ok"}));
        let (flags, _) = parse_args(strings(&["access", "deny", "ar_01"])).unwrap();
        assert_eq!(decision(&flags).unwrap(), json!({}));
        let (flags, _) = parse_args(strings(&["--expires-in", "soon"])).unwrap();
        assert!(decision(&flags).is_err());
        assert!(run(strings(&["access", "deny", "ar_01", "--expires-in", "5"]))
            .unwrap_err()
            .contains("does not apply"));
    }

    #[test]
    fn encodes_components() {
        assert_eq!(encode("k_01ab"), "k_01ab");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
