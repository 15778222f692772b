//! Prompt templates (DESIGN.md §2 step 6), rendered with minijinja.
//!
//! Config shapes:
//! - top-level `templates: {NAME: {versions: {"1": T, "2": T}, default: "2"}}`, or the shorthand
//!   `templates: {NAME: T}` (one version, "1");
//! - an endpoint's `template: "NAME"` (the default version) or `"NAME@VERSION"`;
//! - an endpoint's `prompt_template: "..."` (MLflow's spelling: an anonymous one-version template).
//!
//! where T is a string (one user message), `{system?, user?}`, or `{messages: [{role, content}]}`,
//! every string being a Jinja template. MLflow writes its variables `{{ name }}` (the prompt
//! registry and the prompt engineering UI use Jinja's double braces), which is exactly Jinja.
//!
//! Templates are compiled once, when the config is checked (the config is memoized per
//! isolate); a request only renders. Rendering is sandboxed: no loader (no file or network
//! access), no includes/imports/macros (those minijinja features are not compiled in), a fuel
//! budget per render (bounded time) and a bounded output (bounded memory).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::gateway::config::Issues;
use crate::gateway::error::{GatewayError, Result};
use crate::gateway::normalize::hex;
use crate::gateway::providers::Operation;

/// Instruction budget of one render (minijinja fuel). A plain prompt with a few variables uses
/// well under 100; a loop over a 1,000-item list about 10,000.
pub const MAX_FUEL: u64 = 100_000;
/// Largest rendered prompt, all messages together.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Message roles a template may produce.
const ROLES: &[&str] = &["system", "user", "assistant", "developer"];
const TEMPLATE_FIELDS: &[&str] = &["versions", "default", "description"];
const BODY_FIELDS: &[&str] = &["system", "user", "messages"];

/// Request fields of the OpenAI (and MLflow) APIs: never template variables. Sorted.
const API_FIELDS: &[&str] = &[
    "audio",
    "best_of",
    "dimensions",
    "echo",
    "encoding_format",
    "frequency_penalty",
    "function_call",
    "functions",
    "input",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "messages",
    "metadata",
    "modalities",
    "model",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt",
    "reasoning_effort",
    "response_format",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "suffix",
    "temperature",
    "tool_choice",
    "tools",
    "top_k",
    "top_logprobs",
    "top_p",
    "user",
    "web_search_options",
];

/// The `templates:` section: every template by name, compiled.
#[derive(Debug, Default)]
pub struct Templates {
    templates: HashMap<String, Template>,
    /// Names whose definition had issues (already reported): references to them stay quiet.
    broken: HashSet<String>,
}

#[derive(Debug)]
struct Template {
    versions: BTreeMap<String, TemplateRef>,
    default: String,
}

/// One compiled template version, cheap to clone (endpoints hold one each).
#[derive(Clone)]
pub struct TemplateRef(Arc<Compiled>);

struct Compiled {
    name: String,
    version: String,
    env: Environment<'static>,
    /// (role, name of the part's template in `env`), in message order.
    parts: Vec<(&'static str, String)>,
    /// Top-level variables the template may read, sorted (static analysis at compile time).
    variables: Vec<String>,
}

impl fmt::Debug for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TemplateRef({}@{})", self.0.name, self.0.version)
    }
}

impl TemplateRef {
    /// The template's name (`prompt_template` for an endpoint's inline MLflow template).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The version rendered (for an inline template: the first 8 hex digits of its SHA-256).
    pub fn version(&self) -> &str {
        &self.0.version
    }

    /// Variables the template may read, sorted.
    pub fn variables(&self) -> &[String] {
        &self.0.variables
    }
}

/// A rendered prompt: OpenAI message objects plus which template version produced them.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPrompt {
    pub template: String,
    pub version: String,
    /// `{"role": ..., "content": ...}` objects, in order.
    pub messages: Vec<Value>,
}

impl RenderedPrompt {
    /// `name@version`, for the log line and the cache key.
    pub fn label(&self) -> String {
        format!("{}@{}", self.template, self.version)
    }

    /// The messages' contents joined by blank lines: the `prompt` of a completions request.
    pub fn text(&self) -> String {
        let contents: Vec<&str> =
            self.messages.iter().filter_map(|m| m.get("content").and_then(Value::as_str)).collect();
        contents.join("\n\n")
    }
}

/// Checks the top-level `templates:` section at `path` (normally `"templates"`) and compiles
/// every version. Returns `None` only when the section is not an object; templates with issues
/// are left out (and references to them are not reported a second time).
pub fn check(path: &str, value: &Value, issues: &mut Issues) -> Option<Templates> {
    let Value::Object(entries) = value else {
        issues.push(path, "must be an object mapping template names to templates");
        return None;
    };
    let mut out = Templates::default();
    for (name, def) in entries {
        let at = format!("{path}.{name}");
        let before = issues.0.len();
        if !valid_name(name, 64) {
            issues.push(
                at.as_str(),
                format!("\"{name}\" is not a valid template name (letters, digits, '_', '-', '.'; 1-64 chars)"),
            );
        }
        let template = check_template(&at, name, def, issues);
        match template {
            Some(t) if issues.0.len() == before => {
                out.templates.insert(name.clone(), t);
            }
            _ => {
                out.broken.insert(name.clone());
            }
        }
    }
    Some(out)
}

/// Checks an endpoint's `template:` reference (`"NAME"` or `"NAME@VERSION"`) at `path`
/// (e.g. `endpoints[0].template`) against the checked `templates`.
pub fn check_ref(path: &str, reference: &str, templates: &Templates, issues: &mut Issues) -> Option<TemplateRef> {
    let (name, version) = match reference.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (reference, None),
    };
    if templates.broken.contains(name) {
        return None; // its own issues are reported at its definition
    }
    let Some(template) = templates.templates.get(name) else {
        let mut names: Vec<&str> = templates.templates.keys().map(String::as_str).collect();
        names.sort_unstable();
        if names.is_empty() {
            issues.push(path, format!("unknown template \"{name}\" (the config defines no `templates`)"));
        } else {
            issues.unknown(path, "template", name, &names);
        }
        return None;
    };
    let version = version.unwrap_or(&template.default);
    match template.versions.get(version) {
        Some(compiled) => Some(compiled.clone()),
        None => {
            let versions: Vec<&str> = template.versions.keys().map(String::as_str).collect();
            issues.unknown(path, &format!("version of template \"{name}\""), version, &versions);
            None
        }
    }
}

/// Checks and compiles an endpoint's inline MLflow `prompt_template` at `path` (e.g.
/// `endpoints[0].prompt_template`): a string (one user message) or any template body shape.
pub fn check_inline(path: &str, value: &Value, issues: &mut Issues) -> Option<TemplateRef> {
    let digest = {
        use sha2::{Digest, Sha256};
        Sha256::digest(serde_json::to_vec(value).unwrap_or_default())
    };
    compile(path, "prompt_template", &hex(&digest[..4]), value, issues)
}

fn check_template(path: &str, name: &str, def: &Value, issues: &mut Issues) -> Option<Template> {
    let full_form = def.as_object().is_some_and(|o| o.contains_key("versions") || o.contains_key("default"));
    if !full_form {
        // Shorthand: the value is the one version's body.
        let shorthand = match def {
            Value::String(_) => true,
            Value::Object(o) => o.keys().any(|k| BODY_FIELDS.contains(&k.as_str())),
            _ => false,
        };
        if !shorthand {
            if let Value::Object(o) = def {
                let mut known: Vec<&str> = TEMPLATE_FIELDS.to_vec();
                known.extend_from_slice(BODY_FIELDS);
                for key in o.keys() {
                    issues.unknown(format!("{path}.{key}"), "template field", key, &known);
                }
                if o.is_empty() {
                    issues.push(path, "needs `versions` (or a template body: a string, `system`/`user`, `messages`)");
                }
            } else {
                issues.push(
                    path,
                    "must be a string, an object with `versions`, or a template body (`system`/`user`, `messages`)",
                );
            }
            return None;
        }
        let compiled = compile(path, name, "1", def, issues)?;
        return Some(Template { versions: BTreeMap::from([("1".to_string(), compiled)]), default: "1".into() });
    }

    let def = def.as_object()?;
    for key in def.keys() {
        if !TEMPLATE_FIELDS.contains(&key.as_str()) {
            issues.unknown(format!("{path}.{key}"), "template field", key, TEMPLATE_FIELDS);
        }
    }
    if let Some(description) = def.get("description") {
        if !description.is_string() {
            issues.push(format!("{path}.description"), "must be a string");
        }
    }
    let mut versions = BTreeMap::new();
    match def.get("versions") {
        Some(Value::Object(entries)) if !entries.is_empty() => {
            for (version, body) in entries {
                let at = format!("{path}.versions.{version}");
                if !valid_name(version, 32) {
                    issues.push(
                        at.as_str(),
                        format!("\"{version}\" is not a valid version (letters, digits, '_', '-', '.'; 1-32 chars)"),
                    );
                    continue;
                }
                if let Some(compiled) = compile(&at, name, version, body, issues) {
                    versions.insert(version.clone(), compiled);
                }
            }
        }
        Some(_) => issues.push(format!("{path}.versions"), "must be a non-empty object mapping versions to templates"),
        None => issues.push(format!("{path}.versions"), "is required"),
    }
    let keys: Vec<&str> = match def.get("versions") {
        Some(Value::Object(entries)) => entries.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let default = match def.get("default") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            issues.push(format!("{path}.default"), "must be a string naming a version");
            None
        }
        None if keys.len() == 1 => Some(keys[0].to_string()),
        None if !keys.is_empty() && keys.iter().all(|k| k.parse::<u64>().is_ok()) => {
            keys.iter().max_by_key(|k| k.parse::<u64>().unwrap_or(0)).map(|k| k.to_string())
        }
        None if keys.is_empty() => None,
        None => {
            issues.push(format!("{path}.default"), "is required when the versions are not all numbers");
            None
        }
    };
    let default = default?;
    if !keys.contains(&default.as_str()) {
        issues.unknown(format!("{path}.default"), "version", &default, &keys);
        return None;
    }
    Some(Template { versions, default })
}

/// Compiles one template body (string, `{system?, user?}` or `{messages}`) into its own
/// environment. Every problem is reported at its path, compile errors with minijinja's
/// message and line.
fn compile(path: &str, name: &str, version: &str, body: &Value, issues: &mut Issues) -> Option<TemplateRef> {
    // (path of the source, role, source)
    let mut sources: Vec<(String, &'static str, &str)> = Vec::new();
    match body {
        Value::String(s) => sources.push((path.to_string(), "user", s)),
        Value::Object(o) if o.contains_key("messages") => {
            for key in o.keys().filter(|k| k.as_str() != "messages") {
                issues.push(format!("{path}.{key}"), "cannot be combined with `messages`");
            }
            match o.get("messages") {
                Some(Value::Array(messages)) if !messages.is_empty() => {
                    for (i, message) in messages.iter().enumerate() {
                        let at = format!("{path}.messages[{i}]");
                        let Some(m) = message.as_object() else {
                            issues.push(at, "must be an object {role, content}");
                            continue;
                        };
                        for key in m.keys() {
                            if key != "role" && key != "content" {
                                issues.unknown(format!("{at}.{key}"), "message field", key, &["role", "content"]);
                            }
                        }
                        let role = match m.get("role") {
                            Some(Value::String(r)) => match ROLES.iter().find(|known| **known == r) {
                                Some(known) => Some(*known),
                                None => {
                                    issues.unknown(format!("{at}.role"), "role", r, ROLES);
                                    None
                                }
                            },
                            Some(_) => {
                                issues.push(format!("{at}.role"), "must be a string");
                                None
                            }
                            None => {
                                issues.push(format!("{at}.role"), "is required");
                                None
                            }
                        };
                        match (role, m.get("content")) {
                            (Some(role), Some(Value::String(content))) => {
                                sources.push((format!("{at}.content"), role, content));
                            }
                            (_, Some(Value::String(_))) => {}
                            (_, Some(_)) => issues.push(format!("{at}.content"), "must be a string (a template)"),
                            (_, None) => issues.push(format!("{at}.content"), "is required"),
                        }
                    }
                }
                _ => issues.push(format!("{path}.messages"), "must be a non-empty list of {role, content}"),
            }
        }
        Value::Object(o) => {
            for (key, value) in o {
                let role = match key.as_str() {
                    "system" => "system",
                    "user" => "user",
                    _ => {
                        let mut known: Vec<&str> = BODY_FIELDS.to_vec();
                        known.extend_from_slice(TEMPLATE_FIELDS);
                        issues.unknown(format!("{path}.{key}"), "template field", key, &known);
                        continue;
                    }
                };
                match value {
                    Value::String(s) => sources.push((format!("{path}.{key}"), role, s)),
                    _ => issues.push(format!("{path}.{key}"), "must be a string (a template)"),
                }
            }
            // `system` before `user`, whatever the map order.
            sources.sort_by_key(|(_, role, _)| *role != "system");
            if sources.is_empty() && !o.is_empty() {
                return None;
            }
            if o.is_empty() {
                issues.push(path, "needs `system` and/or `user`");
            }
        }
        _ => issues.push(path, "must be a string, `{system, user}` or `{messages: [...]}`"),
    }
    if sources.is_empty() {
        return None;
    }

    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(MAX_FUEL));
    let globals: HashSet<String> = env.globals().map(|(name, _)| name.to_string()).collect();
    let mut parts = Vec::new();
    let mut variables = BTreeSet::new();
    let mut ok = true;
    for (i, (at, role, source)) in sources.into_iter().enumerate() {
        let key = format!("{i}:{role}");
        if let Err(e) = env.add_template_owned(key.clone(), source.to_string()) {
            issues.push(at, format!("template does not compile: {}", compile_error(&e)));
            ok = false;
            continue;
        }
        if let Ok(t) = env.get_template(&key) {
            variables.extend(t.undeclared_variables(false).into_iter().filter(|v| !globals.contains(v)));
        }
        parts.push((role, key));
    }
    if !ok {
        return None;
    }
    Some(TemplateRef(Arc::new(Compiled {
        name: name.to_string(),
        version: version.to_string(),
        env,
        parts,
        variables: variables.into_iter().collect(),
    })))
}

/// minijinja's message without our internal template name, with the line.
fn compile_error(e: &minijinja::Error) -> String {
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    }
}

/// Renders `template` with `variables`. Undefined variables are a 400 that names every
/// missing one; the fuel budget and the output size are bounded (400s naming the limit).
pub fn render(template: &TemplateRef, variables: &Map<String, Value>) -> Result<RenderedPrompt> {
    let compiled = &*template.0;
    let context = minijinja::Value::from(
        variables.iter().map(|(k, v)| (k.clone(), to_jinja(v))).collect::<BTreeMap<String, minijinja::Value>>(),
    );
    let mut out = Bounded { buf: Vec::new(), limit: MAX_OUTPUT_BYTES, exceeded: false };
    let mut messages = Vec::with_capacity(compiled.parts.len());
    for (role, key) in &compiled.parts {
        let start = out.buf.len();
        let result =
            compiled.env.get_template(key).and_then(|t| t.render_captured_to(context.clone(), &mut out).map(|_| ()));
        if let Err(e) = result {
            return Err(render_error(compiled, variables, &e, out.exceeded));
        }
        let content = String::from_utf8_lossy(&out.buf[start..]).into_owned();
        messages.push(serde_json::json!({"role": role, "content": content}));
    }
    Ok(RenderedPrompt { template: compiled.name.clone(), version: compiled.version.clone(), messages })
}

fn render_error(
    compiled: &Compiled,
    variables: &Map<String, Value>,
    e: &minijinja::Error,
    too_big: bool,
) -> GatewayError {
    let label = format!("{}@{}", compiled.name, compiled.version);
    if too_big {
        return GatewayError::bad_request(
            "template_output_too_large",
            format!("the prompt rendered from template \"{label}\" exceeds the limit of {MAX_OUTPUT_BYTES} bytes"),
        );
    }
    match e.kind() {
        ErrorKind::UndefinedError => {
            let missing: Vec<&str> =
                compiled.variables.iter().map(String::as_str).filter(|v| !variables.contains_key(*v)).collect();
            if missing.is_empty() {
                GatewayError::bad_request(
                    "template_render_failed",
                    format!("rendering template \"{label}\" failed: {}", compile_error(e)),
                )
            } else {
                GatewayError::bad_request(
                    "missing_template_variables",
                    format!(
                        "template \"{label}\" needs variables that were not provided: {} (send them as \"variables\": {{...}})",
                        missing.join(", ")
                    ),
                )
            }
        }
        ErrorKind::OutOfFuel => GatewayError::bad_request(
            "template_too_expensive",
            format!("rendering template \"{label}\" exceeded its budget of {MAX_FUEL} steps"),
        ),
        _ => GatewayError::bad_request(
            "template_render_failed",
            format!("rendering template \"{label}\" failed: {}", compile_error(e)),
        ),
    }
}

/// An output sink that refuses to grow past `limit` bytes (checked per write, so a runaway
/// template stops at the limit instead of filling memory first).
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("rendered output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn to_jinja(value: &Value) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => minijinja::Value::from(i),
            (None, Some(u)) => minijinja::Value::from(u),
            _ => minijinja::Value::from(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => items.iter().map(to_jinja).collect(),
        Value::Object(map) => minijinja::Value::from(
            map.iter().map(|(k, v)| (k.clone(), to_jinja(v))).collect::<BTreeMap<String, minijinja::Value>>(),
        ),
    }
}

/// Takes the template variables out of a request body: the entries of a `variables` object,
/// and (MLflow style) every top-level field that is not an OpenAI/MLflow API field. Entries of
/// `variables` win over top-level fields of the same name. Call only for endpoints that have a
/// template: elsewhere unknown fields belong to the provider.
pub fn extract_variables(body: &mut Map<String, Value>) -> Map<String, Value> {
    let mut variables = Map::new();
    let extra: Vec<String> =
        body.keys().filter(|k| *k != "variables" && API_FIELDS.binary_search(&k.as_str()).is_err()).cloned().collect();
    for key in extra {
        if let Some(value) = body.remove(&key) {
            variables.insert(key, value);
        }
    }
    match body.remove("variables") {
        Some(Value::Object(explicit)) => variables.extend(explicit),
        Some(other) => {
            variables.insert("variables".to_string(), other);
        }
        None => {}
    }
    variables
}

/// Puts a rendered prompt into the request: for chat, the rendered messages come first, then
/// any messages the client sent (a conversation continuing under the template's system
/// prompt); for completions, `prompt` is the rendered text (a client `prompt` is refused: the
/// template owns it). Embeddings and predict requests have no prompt to template.
pub fn apply(rendered: RenderedPrompt, op: Operation, body: &mut Map<String, Value>) -> Result<()> {
    match op {
        Operation::Chat => {
            let mut messages = rendered.messages;
            match body.remove("messages") {
                None | Some(Value::Null) => {}
                Some(Value::Array(client)) => messages.extend(client),
                Some(_) => return Err(GatewayError::bad_request("invalid_messages", "`messages` must be a list")),
            }
            body.insert("messages".into(), Value::Array(messages));
            Ok(())
        }
        Operation::Completions => {
            if body.contains_key("prompt") {
                return Err(GatewayError::bad_request(
                    "prompt_with_template",
                    format!(
                        "this endpoint builds its prompt from template \"{}\": send template variables, not `prompt`",
                        rendered.label()
                    ),
                ));
            }
            body.insert("prompt".into(), Value::String(rendered.text()));
            Ok(())
        }
        Operation::Embeddings | Operation::Predict => Err(GatewayError::bad_request(
            "template_not_supported",
            format!("{} requests cannot use a prompt template", op.as_str()),
        )),
    }
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn templates(v: Value) -> (Option<Templates>, Vec<String>) {
        let mut issues = Issues::default();
        let t = check("templates", &v, &mut issues);
        (t, issues.0.iter().map(ToString::to_string).collect())
    }

    fn one(source: Value) -> TemplateRef {
        let mut issues = Issues::default();
        let t = check_inline("endpoints[0].prompt_template", &source, &mut issues);
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        t.unwrap()
    }

    #[test]
    fn versions_default_and_refs() {
        let (t, issues) = templates(json!({
            "summarize": {"versions": {"1": "Summarize: {{ text }}",
                                       "2": {"system": "You summarize in {{ words }} words.", "user": "{{ text }}"}},
                          "default": "2"}
        }));
        assert!(issues.is_empty(), "{issues:?}");
        let t = t.unwrap();
        let mut issues = Issues::default();
        let v2 = check_ref("endpoints[0].template", "summarize", &t, &mut issues).unwrap();
        let v1 = check_ref("endpoints[1].template", "summarize@1", &t, &mut issues).unwrap();
        assert!(issues.0.is_empty());
        assert_eq!((v2.name(), v2.version()), ("summarize", "2"));
        assert_eq!(v2.variables(), ["text", "words"]);
        assert_eq!(v1.version(), "1");

        let vars = obj(json!({"text": "A long story.", "words": 5}));
        let r = render(&v2, &vars).unwrap();
        assert_eq!(r.label(), "summarize@2");
        assert_eq!(
            r.messages,
            [
                json!({"role": "system", "content": "You summarize in 5 words."}),
                json!({"role": "user", "content": "A long story."})
            ]
        );
        let r = render(&v1, &vars).unwrap();
        assert_eq!(r.messages, [json!({"role": "user", "content": "Summarize: A long story."})]);
    }

    #[test]
    fn shorthand_messages_and_numeric_default() {
        let (t, issues) = templates(json!({
            "qa": {"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "assistant", "content": "Ready."},
                                {"role": "user", "content": "{{ q }}"}]},
            "n": {"versions": {"2": "two", "10": "ten"}}
        }));
        assert!(issues.is_empty(), "{issues:?}");
        let t = t.unwrap();
        let mut issues = Issues::default();
        let qa = check_ref("p", "qa", &t, &mut issues).unwrap();
        assert_eq!(qa.version(), "1");
        let r = render(&qa, &obj(json!({"q": "Why?"}))).unwrap();
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[1], json!({"role": "assistant", "content": "Ready."}));
        assert_eq!(r.text(), "Be brief.\n\nReady.\n\nWhy?");
        assert_eq!(check_ref("p", "n", &t, &mut issues).unwrap().version(), "10");
    }

    #[test]
    fn compile_error_is_reported_with_path_and_line() {
        let (t, issues) = templates(json!({
            "bad": {"versions": {"1": {"system": "ok", "user": "line one\n{{ text }\n"}}, "default": "1"},
            "good": "{{ x }}"
        }));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].starts_with("templates.bad.versions.1.user: template does not compile: syntax error"),
            "{issues:?}"
        );
        assert!(issues[0].contains("(line 2)"), "{issues:?}");
        // A reference to the broken template is not reported again; others still resolve.
        let t = t.unwrap();
        let mut issues = Issues::default();
        assert!(check_ref("endpoints[0].template", "bad", &t, &mut issues).is_none());
        assert!(issues.0.is_empty());
        assert!(check_ref("endpoints[1].template", "good", &t, &mut issues).is_some());

        let mut issues = Issues::default();
        assert!(check_inline("endpoints[2].prompt_template", &json!("{% if x %}"), &mut issues).is_none());
        assert!(issues.0[0].to_string().starts_with("endpoints[2].prompt_template: template does not compile"));
    }

    #[test]
    fn config_issues_name_paths_and_suggest() {
        let (_, issues) = templates(json!({
            "a": {"verisons": {"1": "x"}},
            "b": {"versions": {"1": "x", "2": "y"}, "default": "3"},
            "c": {"versions": {"v1": "x", "v2": "y"}},
            "d": {"messages": [{"role": "usr", "content": "x"}, {"role": "user", "content": 3}]},
            "e": {"system": "x", "usr": "y"},
            "f d": "x",
            "g": 5
        }));
        let has = |prefix: &str| issues.iter().any(|i| i.starts_with(prefix));
        assert!(
            has("templates.a.verisons: unknown template field \"verisons\" (did you mean \"versions\"?)"),
            "{issues:?}"
        );
        assert!(has("templates.b.default: unknown version \"3\""), "{issues:?}");
        assert!(has("templates.c.default: is required when the versions are not all numbers"), "{issues:?}");
        assert!(has("templates.d.messages[0].role: unknown role \"usr\" (did you mean \"user\"?)"), "{issues:?}");
        assert!(has("templates.d.messages[1].content: must be a string"), "{issues:?}");
        assert!(has("templates.e.usr: unknown template field \"usr\" (did you mean \"user\"?)"), "{issues:?}");
        assert!(has("templates.f d: \"f d\" is not a valid template name"), "{issues:?}");
        assert!(has("templates.g: must be a string"), "{issues:?}");

        let (t, _) = templates(json!({"summarize": {"versions": {"1": "x", "2": "y"}, "default": "2"}}));
        let t = t.unwrap();
        let mut issues = Issues::default();
        assert!(check_ref("endpoints[0].template", "sumarize", &t, &mut issues).is_none());
        assert!(check_ref("endpoints[1].template", "summarize@3", &t, &mut issues).is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert_eq!(text[0], "endpoints[0].template: unknown template \"sumarize\" (did you mean \"summarize\"?)");
        assert!(
            text[1].starts_with("endpoints[1].template: unknown version of template \"summarize\" \"3\""),
            "{text:?}"
        );
        let mut issues = Issues::default();
        assert!(check_ref("x", "any", &Templates::default(), &mut issues).is_none());
        assert!(issues.0[0].message.contains("defines no `templates`"));
    }

    #[test]
    fn missing_variables_are_all_named() {
        let t =
            one(json!({"system": "Tone: {{ tone }}", "user": "{{ greeting }}, {{ name }}! {{ extra | default('') }}"}));
        let e = render(&t, &obj(json!({"greeting": "Hi"}))).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "missing_template_variables"));
        assert!(e.message.contains("tone") && e.message.contains("name"), "{}", e.message);
        assert!(!e.message.contains("greeting"), "{}", e.message);
        // Optional variables (default filter, `if` checks) need not be sent.
        let t = one(json!("{{ a }}{% if b %} and {{ b }}{% endif %}{{ c | default('!') }}"));
        assert_eq!(render(&t, &obj(json!({"a": "x"}))).unwrap().text(), "x!");
        assert_eq!(render(&t, &obj(json!({"a": "x", "b": "y", "c": "?"}))).unwrap().text(), "x and y?");
    }

    #[test]
    fn mlflow_style_inline_template() {
        let t = one(json!("Answer the question: {{ question }}\nContext: {{context}}"));
        assert_eq!(t.name(), "prompt_template");
        assert_eq!(t.version().len(), 8);
        let mut body = obj(json!({"question": "Why?", "context": "none", "max_tokens": 5, "temperature": 0}));
        let vars = extract_variables(&mut body);
        assert_eq!(Value::Object(body.clone()), json!({"max_tokens": 5, "temperature": 0}));
        let r = render(&t, &vars).unwrap();
        apply(r, Operation::Completions, &mut body).unwrap();
        assert_eq!(body["prompt"], "Answer the question: Why?\nContext: none");
    }

    #[test]
    fn extract_variables_prefers_explicit_object() {
        let mut body = obj(json!({
            "messages": [{"role": "user", "content": "hi"}], "stream": true, "topic": "cats",
            "variables": {"topic": "dogs", "n_words": 10}
        }));
        let vars = extract_variables(&mut body);
        assert_eq!(Value::Object(vars), json!({"topic": "dogs", "n_words": 10}));
        assert_eq!(Value::Object(body), json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}));
        let mut body = obj(json!({"model": "m"}));
        assert!(extract_variables(&mut body).is_empty());
        assert!(API_FIELDS.windows(2).all(|w| w[0] < w[1]), "API_FIELDS must stay sorted");
    }

    #[test]
    fn apply_to_chat_and_refusals() {
        let t = one(json!({"system": "Be {{ mood }}."}));
        let r = render(&t, &obj(json!({"mood": "kind"}))).unwrap();
        let mut body = obj(json!({"messages": [{"role": "user", "content": "hello"}]}));
        apply(r.clone(), Operation::Chat, &mut body).unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello"}])
        );
        let mut body = obj(json!({"prompt": "x"}));
        assert_eq!(apply(r.clone(), Operation::Completions, &mut body).unwrap_err().code, "prompt_with_template");
        assert_eq!(apply(r, Operation::Embeddings, &mut Map::new()).unwrap_err().code, "template_not_supported");
    }

    #[test]
    fn values_of_every_json_type_render() {
        let t = one(json!("{{ s }} {{ i }} {{ f }} {{ b }} {{ items | join(', ') }} {{ o.k }} {{ n is none }} {% for x in items %}[{{ x }}]{% endfor %}"));
        let vars =
            obj(json!({"s": "str", "i": -3, "f": 1.5, "b": true, "items": ["a", "b"], "o": {"k": "v"}, "n": null}));
        assert_eq!(render(&t, &vars).unwrap().text(), "str -3 1.5 True a, b v True [a][b]");
        // Jinja prints booleans Python-style (`True`). No HTML escaping: prompts are not HTML.
        let t = one(json!("{{ s }}"));
        assert_eq!(render(&t, &obj(json!({"s": "<b>&'\""}))).unwrap().text(), "<b>&'\"");
    }

    #[test]
    fn fuel_and_output_limits_trip() {
        let t = one(json!("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"));
        let e = render(&t, &Map::new()).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "template_too_expensive"));
        assert!(e.message.contains(&MAX_FUEL.to_string()), "{}", e.message);

        let t = one(json!("{% for i in range(100) %}{{ big }}{% endfor %}"));
        let e = render(&t, &obj(json!({"big": "x".repeat(1000)}))).unwrap_err();
        assert_eq!(e.code, "template_output_too_large");
        assert!(e.message.contains("65536 bytes"), "{}", e.message);
        // Just under the limit is fine.
        let t = one(json!("{{ big }}"));
        assert_eq!(
            render(&t, &obj(json!({"big": "x".repeat(MAX_OUTPUT_BYTES)}))).unwrap().text().len(),
            MAX_OUTPUT_BYTES
        );
    }

    #[test]
    fn no_file_access_and_runtime_errors_are_400() {
        // No loader: includes cannot reach anything.
        let mut issues = Issues::default();
        let t = check_inline("p", &json!("{% include '/etc/passwd' %}"), &mut issues);
        if let Some(t) = t {
            let e = render(&t, &Map::new()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        } else {
            assert!(!issues.0.is_empty());
        }
        let t = one(json!("{{ x | nosuchfilter }}"));
        let e = render(&t, &obj(json!({"x": 1}))).unwrap_err();
        assert_eq!(e.code, "template_render_failed");
        assert!(e.message.contains("unknown filter"), "{}", e.message);
        let t = one(json!("{{ x.y.z }}"));
        let e = render(&t, &obj(json!({"x": {}}))).unwrap_err();
        assert_eq!(e.code, "template_render_failed");
    }
}
