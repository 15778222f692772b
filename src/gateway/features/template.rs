//! Prompt templates (DESIGN.md §2 step 6): Jinja templates, rendered by the small engine below.
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
//! isolate); a request only renders. Rendering is sandboxed: the engine has no loader, no
//! includes/imports/macros and no functions (nothing reaches outside the variables it is
//! given), a step budget per render (bounded time) and a bounded output (bounded memory).

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::Operation;
use crate::gateway::util::text::hex;

/// Step budget of one render (every node and expression evaluated costs one). A plain prompt
/// with a few variables uses well under 100; a loop over a 1,000-item list about 10,000.
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
    /// (name, template), in config order. Configs hold a handful: a list beats a map, in
    /// code size too.
    templates: Vec<(String, Template)>,
    /// Names whose definition had issues (already reported): references to them stay quiet.
    broken: Vec<String>,
}

#[derive(Debug)]
struct Template {
    versions: Vec<(String, TemplateRef)>,
    default: String,
}

/// One compiled template version, cheap to clone (endpoints hold one each).
#[derive(Clone)]
pub struct TemplateRef(Arc<Compiled>);

struct Compiled {
    name: String,
    version: String,
    /// (role, compiled content), in message order.
    parts: Vec<(&'static str, jinja::Program)>,
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
                out.templates.push((name.clone(), t));
            }
            _ => {
                out.broken.push(name.clone());
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
    if templates.broken.iter().any(|b| b == name) {
        return None; // its own issues are reported at its definition
    }
    let Some((_, template)) = templates.templates.iter().find(|(n, _)| n == name) else {
        let names: Vec<&str> = templates.templates.iter().map(|(n, _)| n.as_str()).collect();
        if names.is_empty() {
            issues.push(path, format!("unknown template \"{name}\" (the config defines no `templates`)"));
        } else {
            issues.unknown(path, "template", name, &names);
        }
        return None;
    };
    let version = version.unwrap_or(&template.default);
    match template.versions.iter().find(|(v, _)| v == version) {
        Some((_, compiled)) => Some(compiled.clone()),
        None => {
            let versions: Vec<&str> = template.versions.iter().map(|(v, _)| v.as_str()).collect();
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
        return Some(Template { versions: vec![("1".to_string(), compiled)], default: "1".into() });
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
    let mut versions = Vec::new();
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
                    versions.push((version.clone(), compiled));
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
/// program. Every problem is reported at its path, compile errors with the line.
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
            for key in o.keys().filter(|k| *k != "system" && *k != "user") {
                let mut known: Vec<&str> = BODY_FIELDS.to_vec();
                known.extend_from_slice(TEMPLATE_FIELDS);
                issues.unknown(format!("{path}.{key}"), "template field", key, &known);
            }
            // `system` before `user`, whatever the map order.
            for role in ["system", "user"] {
                match o.get(role) {
                    Some(Value::String(s)) => sources.push((format!("{path}.{role}"), role, s)),
                    Some(_) => issues.push(format!("{path}.{role}"), "must be a string (a template)"),
                    None => {}
                }
            }
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

    let mut parts = Vec::new();
    let mut variables = Vec::new();
    let mut ok = true;
    for (at, role, source) in sources {
        match jinja::compile(source) {
            Ok(program) => {
                program.variables(&mut variables);
                parts.push((role, program));
            }
            Err(e) => {
                issues.push(at, format!("template does not compile: syntax error: {} (line {})", e.message, e.line));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    Some(TemplateRef(Arc::new(Compiled { name: name.to_string(), version: version.to_string(), parts, variables })))
}

/// Renders `template` with `variables`. Undefined variables are a 400 that names every
/// missing one; the fuel budget and the output size are bounded (400s naming the limit).
pub fn render(template: &TemplateRef, variables: &Map<String, Value>) -> Result<RenderedPrompt> {
    let compiled = &*template.0;
    let mut limits = jinja::Limits { fuel: MAX_FUEL, output: MAX_OUTPUT_BYTES };
    let mut out = String::new();
    let mut messages = Vec::with_capacity(compiled.parts.len());
    for (role, program) in &compiled.parts {
        let start = out.len();
        jinja::render(program, variables, &mut out, &mut limits).map_err(|e| render_error(compiled, variables, &e))?;
        messages.push(serde_json::json!({"role": role, "content": &out[start..]}));
    }
    Ok(RenderedPrompt { template: compiled.name.clone(), version: compiled.version.clone(), messages })
}

fn render_error(compiled: &Compiled, variables: &Map<String, Value>, e: &jinja::Error) -> GatewayError {
    let label = format!("{}@{}", compiled.name, compiled.version);
    match e.kind {
        jinja::Kind::TooLarge => GatewayError::bad_request(
            ErrorCode::TemplateOutputTooLarge,
            format!("the prompt rendered from template \"{label}\" exceeds the limit of {MAX_OUTPUT_BYTES} bytes"),
        ),
        jinja::Kind::Fuel => GatewayError::bad_request(
            ErrorCode::TemplateTooExpensive,
            format!("rendering template \"{label}\" exceeded its budget of {MAX_FUEL} steps"),
        ),
        jinja::Kind::Undefined => {
            let missing: Vec<&str> =
                compiled.variables.iter().map(String::as_str).filter(|v| !variables.contains_key(*v)).collect();
            if missing.is_empty() {
                GatewayError::bad_request(
                    ErrorCode::TemplateRenderFailed,
                    format!("rendering template \"{label}\" failed: {} (line {})", e.message, e.line),
                )
            } else {
                GatewayError::bad_request(
                    ErrorCode::MissingTemplateVariables,
                    format!(
                        "template \"{label}\" needs variables that were not provided: {} (send them as \"variables\": {{...}})",
                        missing.join(", ")
                    ),
                )
            }
        }
        jinja::Kind::Syntax | jinja::Kind::Invalid => GatewayError::bad_request(
            ErrorCode::TemplateRenderFailed,
            format!("rendering template \"{label}\" failed: {} (line {})", e.message, e.line),
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
                Some(_) => {
                    return Err(GatewayError::bad_request(ErrorCode::InvalidMessages, "`messages` must be a list"))
                }
            }
            body.insert("messages".into(), Value::Array(messages));
            Ok(())
        }
        Operation::Completions => {
            if body.contains_key("prompt") {
                return Err(GatewayError::bad_request(
                    ErrorCode::PromptWithTemplate,
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
            ErrorCode::TemplateNotSupported,
            format!("{} requests cannot use a prompt template", op.as_str()),
        )),
    }
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A small Jinja engine: the subset prompt templates use, for ~27 KB of the gzipped worker
/// (templates and config checks included; minijinja measured 140-225 KB, more than a quarter
/// of the 500 KB budget).
///
/// Supported: `{{ expr }}`, `{% if %}/{% elif %}/{% else %}/{% endif %}`,
/// `{% for x in xs %}` / `{% for k, v in obj.items() %}` (with `loop.index`, `index0`,
/// `revindex`, `revindex0`, `first`, `last`, `length`, and `{% else %}`), `{# comments #}`,
/// `{% raw %}`, whitespace control (`{%-`, `-%}`, ...), and one trailing newline dropped as
/// Jinja does. Expressions: variables, `.attr`, `[index]`, string/number/boolean/none/list
/// literals, `~`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`, `and`, `or`, `not`,
/// `is [not] defined|undefined|none|string|number|boolean|mapping|sequence`, `.items()`,
/// `.keys()`, `.values()`, and the filters `default`/`d`, `upper`, `lower`, `capitalize`,
/// `title`, `trim`, `join`, `length`/`count`, `first`, `last`, `replace`, `string`, `tojson`
/// (case filters map Latin, Greek and Cyrillic letters; other scripts stay as they are).
/// Everything else (`set`, macros, includes, ...) is a compile error: nothing can reach
/// outside the variables it is given.
///
/// Undefined values follow minijinja's "semi-strict" rule: printing, iterating or filtering an
/// undefined value is an error (a missing variable), testing it (`if x`, `x is defined`,
/// `x | default(...)`, `x == ...`) is not.
mod jinja {
    use std::borrow::Cow;

    use serde_json::{Map, Value};

    use crate::gateway::util::text::{lower_char, upper_char};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Syntax,
        Undefined,
        Fuel,
        TooLarge,
        Invalid,
    }

    #[derive(Debug)]
    pub struct Error {
        pub kind: Kind,
        pub message: String,
        pub line: usize,
    }

    fn error<T>(kind: Kind, line: usize, message: impl Into<String>) -> Result<T, Error> {
        Err(Error { kind, message: message.into(), line })
    }

    /// Deepest nesting of blocks and expressions the parser accepts.
    const MAX_DEPTH: usize = 48;

    #[derive(Debug)]
    pub struct Program {
        nodes: Vec<Node>,
    }

    #[derive(Debug)]
    enum Node {
        Text(String),
        Print(Expr, usize),
        If(Vec<(Expr, Vec<Node>)>, Vec<Node>),
        For { targets: Vec<String>, iter: Expr, body: Vec<Node>, otherwise: Vec<Node>, line: usize },
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Filter {
        Default,
        Upper,
        Lower,
        Capitalize,
        Title,
        Trim,
        Join,
        Length,
        First,
        Last,
        Replace,
        String,
        ToJson,
    }

    /// name, filter, min args, max args
    const FILTERS: &[(&str, Filter, usize, usize)] = &[
        ("default", Filter::Default, 0, 2),
        ("d", Filter::Default, 0, 2),
        ("upper", Filter::Upper, 0, 0),
        ("lower", Filter::Lower, 0, 0),
        ("capitalize", Filter::Capitalize, 0, 0),
        ("title", Filter::Title, 0, 0),
        ("trim", Filter::Trim, 0, 0),
        ("join", Filter::Join, 0, 1),
        ("length", Filter::Length, 0, 0),
        ("count", Filter::Length, 0, 0),
        ("first", Filter::First, 0, 0),
        ("last", Filter::Last, 0, 0),
        ("replace", Filter::Replace, 2, 2),
        ("string", Filter::String, 0, 0),
        ("tojson", Filter::ToJson, 0, 1),
    ];

    const TESTS: &[&str] = &["defined", "undefined", "none", "string", "number", "boolean", "mapping", "sequence"];

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Cmp {
        Eq,
        Ne,
        Lt,
        Le,
        Gt,
        Ge,
        In,
        NotIn,
    }

    #[derive(Debug)]
    enum Expr {
        Lit(Value),
        List(Vec<Expr>),
        Var(String),
        Attr(Box<Expr>, String),
        Index(Box<Expr>, Box<Expr>),
        /// `.items()`, `.keys()`, `.values()`
        Method(Box<Expr>, &'static str),
        Filter(Box<Expr>, Filter, Vec<Expr>),
        Test(Box<Expr>, &'static str, bool),
        Not(Box<Expr>),
        And(Box<Expr>, Box<Expr>),
        Or(Box<Expr>, Box<Expr>),
        Cmp(Box<Expr>, Cmp, Box<Expr>),
        Concat(Box<Expr>, Box<Expr>),
    }

    // ---- lexing ---------------------------------------------------------------------

    enum Seg<'s> {
        Text(Cow<'s, str>),
        Print(&'s str, usize),
        Tag(&'s str, usize),
    }

    fn line_at(src: &str, at: usize) -> usize {
        1 + src.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count()
    }

    /// Where the tag opened at `from` closes: the index of `close`, skipping string literals.
    fn find_close(src: &str, from: usize, close: &str) -> Option<usize> {
        let b = src.as_bytes();
        let mut i = from;
        let mut quote: Option<u8> = None;
        while i < b.len() {
            match quote {
                Some(_) if b[i] == b'\\' => i += 1,
                Some(q) if b[i] == q => quote = None,
                Some(_) => {}
                None if b[i] == b'"' || b[i] == b'\'' => quote = Some(b[i]),
                None if b[i..].starts_with(close.as_bytes()) => return Some(i),
                None => {}
            }
            i += 1;
        }
        None
    }

    fn segments(src: &str) -> Result<Vec<Seg<'_>>, Error> {
        let src = src.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(src);
        let b = src.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        let mut trim_next = false;
        loop {
            let mut start = i;
            let open = loop {
                match b[start..].iter().position(|&c| c == b'{') {
                    None => break None,
                    Some(p) => {
                        start += p;
                        match b.get(start + 1) {
                            Some(c @ (b'{' | b'%' | b'#')) => break Some(*c),
                            _ => start += 1,
                        }
                    }
                }
            };
            let Some(open) = open else {
                let text = &src[i..];
                let text = if trim_next { text.trim_start() } else { text };
                if !text.is_empty() {
                    out.push(Seg::Text(Cow::Borrowed(text)));
                }
                return Ok(out);
            };
            let line = line_at(src, start);
            let minus = b.get(start + 2) == Some(&b'-');
            let mut text = &src[i..start];
            if trim_next {
                text = text.trim_start();
            }
            if minus {
                text = text.trim_end();
            }
            if !text.is_empty() {
                out.push(Seg::Text(Cow::Borrowed(text)));
            }
            let inner_start = start + 2 + usize::from(minus);
            let close = match open {
                b'{' => "}}",
                b'%' => "%}",
                _ => "#}",
            };
            let found = if open == b'#' {
                src[inner_start..].find(close).map(|p| p + inner_start)
            } else {
                find_close(src, inner_start, close)
            };
            let Some(end) = found else {
                let what = match open {
                    b'{' => "`{{` is never closed with `}}`",
                    b'%' => "`{%` is never closed with `%}`",
                    _ => "`{#` is never closed with `#}`",
                };
                return error(Kind::Syntax, line, what);
            };
            trim_next = end > inner_start && b[end - 1] == b'-';
            let inner = &src[inner_start..end - usize::from(trim_next)];
            i = end + 2;
            match open {
                b'{' => out.push(Seg::Print(inner, line)),
                b'%' if inner.trim() == "raw" => {
                    // Verbatim up to `{% endraw %}`.
                    let mut search = i;
                    let (raw_end, after) = loop {
                        let Some(p) = src[search..].find("{%") else {
                            return error(Kind::Syntax, line, "`{% raw %}` is never closed with `{% endraw %}`");
                        };
                        let tag_start = search + p;
                        let Some(tag_end) = src[tag_start + 2..].find("%}").map(|q| q + tag_start + 2) else {
                            return error(Kind::Syntax, line, "`{% raw %}` is never closed with `{% endraw %}`");
                        };
                        if src[tag_start + 2..tag_end].trim_matches(|c: char| c == '-' || c.is_whitespace()) == "endraw"
                        {
                            break (tag_start, tag_end + 2);
                        }
                        search = tag_start + 2;
                    };
                    let mut raw = &src[i..raw_end];
                    if trim_next {
                        raw = raw.trim_start();
                    }
                    if src[raw_end + 2..].starts_with('-') {
                        raw = raw.trim_end();
                    }
                    if !raw.is_empty() {
                        out.push(Seg::Text(Cow::Owned(raw.to_string())));
                    }
                    trim_next = src[..after - 2].ends_with('-');
                    i = after;
                }
                b'%' => out.push(Seg::Tag(inner, line)),
                _ => {}
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        Num(Value),
        Op(&'static str),
    }

    const OPS: &[&str] = &["==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", ".", "|", "~", "-"];

    fn tokens(src: &str, line: usize) -> Result<Vec<Tok>, Error> {
        let b = src.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_whitespace() {
                i += 1;
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(src[start..i].to_string()));
            } else if c.is_ascii_digit() {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                    i += 1;
                }
                let float = b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit);
                if float {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let text = src[start..i].replace('_', "");
                let value = if float {
                    serde_json::from_str::<Value>(&text).ok().filter(Value::is_number)
                } else {
                    text.parse::<i64>().ok().map(Value::from)
                };
                match value {
                    Some(v) => out.push(Tok::Num(v)),
                    None => return error(Kind::Syntax, line, format!("invalid number `{text}`")),
                }
            } else if c == b'"' || c == b'\'' {
                let mut s = String::new();
                let mut chars = src[i + 1..].char_indices();
                let mut closed = None;
                while let Some((j, ch)) = chars.next() {
                    match ch {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, 'r')) => s.push('\r'),
                            Some((_, other)) => s.push(other),
                            None => break,
                        },
                        ch if ch as u32 == u32::from(c) => {
                            closed = Some(i + 1 + j + 1);
                            break;
                        }
                        ch => s.push(ch),
                    }
                }
                let Some(end) = closed else { return error(Kind::Syntax, line, "unterminated string") };
                out.push(Tok::Str(s));
                i = end;
            } else if let Some(op) = OPS.iter().find(|op| b[i..].starts_with(op.as_bytes())) {
                out.push(Tok::Op(op));
                i += op.len();
            } else {
                let ch = src[i..].chars().next().unwrap_or('?');
                return error(Kind::Syntax, line, format!("unexpected character `{ch}`"));
            }
        }
        Ok(out)
    }

    // ---- parsing --------------------------------------------------------------------

    struct ExprParser {
        toks: Vec<Tok>,
        at: usize,
        line: usize,
        depth: usize,
    }

    impl ExprParser {
        fn new(src: &str, line: usize) -> Result<Self, Error> {
            Ok(ExprParser { toks: tokens(src, line)?, at: 0, line, depth: 0 })
        }

        fn peek(&self) -> Option<&Tok> {
            self.toks.get(self.at)
        }

        fn is_op(&self, op: &str) -> bool {
            matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
        }

        fn is_word(&self, word: &str) -> bool {
            matches!(self.peek(), Some(Tok::Ident(w)) if w == word)
        }

        fn eat_op(&mut self, op: &str) -> bool {
            let hit = self.is_op(op);
            self.at += usize::from(hit);
            hit
        }

        fn eat_word(&mut self, word: &str) -> bool {
            let hit = self.is_word(word);
            self.at += usize::from(hit);
            hit
        }

        fn fail<T>(&self, expected: &str) -> Result<T, Error> {
            let found = match self.peek() {
                None => "the end of the tag".to_string(),
                Some(Tok::Ident(w)) => format!("`{w}`"),
                Some(Tok::Str(s)) => format!("string {s:?}"),
                Some(Tok::Num(n)) => format!("`{n}`"),
                Some(Tok::Op(o)) => format!("`{o}`"),
            };
            error(Kind::Syntax, self.line, format!("expected {expected}, found {found}"))
        }

        fn expect_op(&mut self, op: &str) -> Result<(), Error> {
            if self.eat_op(op) {
                Ok(())
            } else {
                self.fail(&format!("`{op}`"))
            }
        }

        fn ident(&mut self) -> Result<String, Error> {
            match self.peek() {
                Some(Tok::Ident(w)) => {
                    let w = w.clone();
                    self.at += 1;
                    Ok(w)
                }
                _ => self.fail("a name"),
            }
        }

        fn end(&self) -> Result<(), Error> {
            if self.at == self.toks.len() {
                Ok(())
            } else {
                self.fail("the end of the tag")
            }
        }

        fn expr(&mut self) -> Result<Expr, Error> {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return error(Kind::Syntax, self.line, "expression nested too deeply");
            }
            let mut left = self.and()?;
            while self.eat_word("or") {
                left = Expr::Or(Box::new(left), Box::new(self.and()?));
            }
            self.depth -= 1;
            Ok(left)
        }

        fn and(&mut self) -> Result<Expr, Error> {
            let mut left = self.not()?;
            while self.eat_word("and") {
                left = Expr::And(Box::new(left), Box::new(self.not()?));
            }
            Ok(left)
        }

        fn not(&mut self) -> Result<Expr, Error> {
            if self.eat_word("not") {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return error(Kind::Syntax, self.line, "expression nested too deeply");
                }
                let inner = self.not()?;
                self.depth -= 1;
                return Ok(Expr::Not(Box::new(inner)));
            }
            self.compare()
        }

        fn compare(&mut self) -> Result<Expr, Error> {
            let left = self.concat()?;
            let op = match self.peek() {
                Some(Tok::Op("==")) => Cmp::Eq,
                Some(Tok::Op("!=")) => Cmp::Ne,
                Some(Tok::Op("<")) => Cmp::Lt,
                Some(Tok::Op("<=")) => Cmp::Le,
                Some(Tok::Op(">")) => Cmp::Gt,
                Some(Tok::Op(">=")) => Cmp::Ge,
                Some(Tok::Ident(w)) if w == "in" => Cmp::In,
                Some(Tok::Ident(w))
                    if w == "not" && matches!(self.toks.get(self.at + 1), Some(Tok::Ident(i)) if i == "in") =>
                {
                    self.at += 1;
                    Cmp::NotIn
                }
                _ => return Ok(left),
            };
            self.at += 1;
            Ok(Expr::Cmp(Box::new(left), op, Box::new(self.concat()?)))
        }

        fn concat(&mut self) -> Result<Expr, Error> {
            let mut left = self.filtered()?;
            while self.eat_op("~") {
                left = Expr::Concat(Box::new(left), Box::new(self.filtered()?));
            }
            Ok(left)
        }

        fn filtered(&mut self) -> Result<Expr, Error> {
            let mut e = self.postfix()?;
            while self.eat_op("|") {
                let name = self.ident()?;
                let Some(&(_, filter, min, max)) = FILTERS.iter().find(|(n, ..)| *n == name) else {
                    let names: Vec<&str> = FILTERS.iter().map(|(n, ..)| *n).collect();
                    return error(
                        Kind::Syntax,
                        self.line,
                        format!("unknown filter `{name}` (available: {})", names.join(", ")),
                    );
                };
                let args = if self.is_op("(") { self.args()? } else { Vec::new() };
                if args.len() < min || args.len() > max {
                    return error(
                        Kind::Syntax,
                        self.line,
                        format!("filter `{name}` takes {min} to {max} arguments, not {}", args.len()),
                    );
                }
                e = Expr::Filter(Box::new(e), filter, args);
            }
            if self.eat_word("is") {
                let negated = self.eat_word("not");
                let name = self.ident()?;
                let Some(test) = TESTS.iter().find(|t| **t == name) else {
                    return error(
                        Kind::Syntax,
                        self.line,
                        format!("unknown test `{name}` (available: {})", TESTS.join(", ")),
                    );
                };
                e = Expr::Test(Box::new(e), test, negated);
            }
            Ok(e)
        }

        fn args(&mut self) -> Result<Vec<Expr>, Error> {
            self.expect_op("(")?;
            let mut args = Vec::new();
            if !self.eat_op(")") {
                loop {
                    args.push(self.expr()?);
                    if self.eat_op(")") {
                        break;
                    }
                    self.expect_op(",")?;
                }
            }
            Ok(args)
        }

        fn postfix(&mut self) -> Result<Expr, Error> {
            let mut e = self.primary()?;
            loop {
                if self.eat_op(".") {
                    let name = match self.peek() {
                        Some(Tok::Num(n)) if n.is_u64() => {
                            let index = n.clone();
                            self.at += 1;
                            e = Expr::Index(Box::new(e), Box::new(Expr::Lit(index)));
                            continue;
                        }
                        _ => self.ident()?,
                    };
                    if self.is_op("(") {
                        let method = match name.as_str() {
                            "items" => "items",
                            "keys" => "keys",
                            "values" => "values",
                            _ => {
                                return error(
                                    Kind::Syntax,
                                    self.line,
                                    format!("unknown method `{name}()` (available: items, keys, values)"),
                                )
                            }
                        };
                        if !self.args()?.is_empty() {
                            return error(Kind::Syntax, self.line, format!("`{name}()` takes no arguments"));
                        }
                        e = Expr::Method(Box::new(e), method);
                    } else {
                        e = Expr::Attr(Box::new(e), name);
                    }
                } else if self.eat_op("[") {
                    let index = self.expr()?;
                    self.expect_op("]")?;
                    e = Expr::Index(Box::new(e), Box::new(index));
                } else {
                    return Ok(e);
                }
            }
        }

        fn primary(&mut self) -> Result<Expr, Error> {
            let Some(tok) = self.peek().cloned() else { return self.fail("an expression") };
            self.at += 1;
            Ok(match tok {
                Tok::Str(s) => Expr::Lit(Value::String(s)),
                Tok::Num(n) => Expr::Lit(n),
                Tok::Op("-") => match self.peek().cloned() {
                    Some(Tok::Num(n)) => {
                        self.at += 1;
                        let negated = match (n.as_i64(), n.as_f64()) {
                            (Some(i), _) => Value::from(-i),
                            (None, Some(f)) => serde_json::Number::from_f64(-f).map_or(Value::Null, Value::Number),
                            _ => Value::Null,
                        };
                        Expr::Lit(negated)
                    }
                    _ => return self.fail("a number after `-`"),
                },
                Tok::Op("(") => {
                    let e = self.expr()?;
                    self.expect_op(")")?;
                    e
                }
                Tok::Op("[") => {
                    let mut items = Vec::new();
                    if !self.eat_op("]") {
                        loop {
                            items.push(self.expr()?);
                            if self.eat_op("]") {
                                break;
                            }
                            self.expect_op(",")?;
                        }
                    }
                    Expr::List(items)
                }
                Tok::Ident(w) => match w.as_str() {
                    "true" | "True" => Expr::Lit(Value::Bool(true)),
                    "false" | "False" => Expr::Lit(Value::Bool(false)),
                    "none" | "None" => Expr::Lit(Value::Null),
                    "and" | "or" | "not" | "in" | "is" => {
                        self.at -= 1;
                        return self.fail("an expression");
                    }
                    _ => Expr::Var(w),
                },
                Tok::Op(_) => {
                    self.at -= 1;
                    return self.fail("an expression");
                }
            })
        }
    }

    struct Parser<'s> {
        segs: std::vec::IntoIter<Seg<'s>>,
        depth: usize,
    }

    /// How a block ended: the closing tag's name, its remaining source, its line.
    type End<'s> = Option<(String, &'s str, usize)>;

    impl<'s> Parser<'s> {
        fn block(&mut self, ends: &[&str]) -> Result<(Vec<Node>, End<'s>), Error> {
            let mut nodes = Vec::new();
            while let Some(seg) = self.segs.next() {
                match seg {
                    Seg::Text(t) => nodes.push(Node::Text(t.into_owned())),
                    Seg::Print(src, line) => {
                        let mut p = ExprParser::new(src, line)?;
                        let e = p.expr()?;
                        p.end()?;
                        nodes.push(Node::Print(e, line));
                    }
                    Seg::Tag(src, line) => {
                        let src = src.trim();
                        let (name, rest) = src.split_once(|c: char| c.is_whitespace()).unwrap_or((src, ""));
                        if ends.contains(&name) {
                            return Ok((nodes, Some((name.to_string(), rest, line))));
                        }
                        self.depth += 1;
                        if self.depth > MAX_DEPTH {
                            return error(Kind::Syntax, line, "blocks nested too deeply");
                        }
                        match name {
                            "if" => nodes.push(self.if_block(rest, line)?),
                            "for" => nodes.push(self.for_block(rest, line)?),
                            "endif" | "endfor" | "elif" | "else" => {
                                return error(Kind::Syntax, line, format!("unexpected `{{% {name} %}}`"));
                            }
                            "set" | "macro" | "call" | "include" | "import" | "from" | "extends" | "block"
                            | "filter" | "with" | "autoescape" => {
                                return error(
                                    Kind::Syntax,
                                    line,
                                    format!("`{{% {name} %}}` is not supported in prompt templates"),
                                );
                            }
                            _ => return error(Kind::Syntax, line, format!("unknown tag `{name}`")),
                        }
                        self.depth -= 1;
                    }
                }
            }
            Ok((nodes, None))
        }

        fn condition(src: &str, line: usize) -> Result<Expr, Error> {
            let mut p = ExprParser::new(src, line)?;
            let e = p.expr()?;
            p.end()?;
            Ok(e)
        }

        fn if_block(&mut self, src: &str, line: usize) -> Result<Node, Error> {
            let mut branches = vec![];
            let mut condition = Self::condition(src, line)?;
            loop {
                let (body, end) = self.block(&["elif", "else", "endif"])?;
                branches.push((condition, body));
                match end {
                    Some((name, rest, at)) if name == "elif" => condition = Self::condition(rest, at)?,
                    Some((name, rest, at)) if name == "else" => {
                        if !rest.trim().is_empty() {
                            return error(Kind::Syntax, at, "`{% else %}` takes nothing");
                        }
                        let (otherwise, end) = self.block(&["endif"])?;
                        if end.is_none() {
                            return error(Kind::Syntax, line, "`{% if %}` is never closed with `{% endif %}`");
                        }
                        return Ok(Node::If(branches, otherwise));
                    }
                    Some(_) => return Ok(Node::If(branches, Vec::new())),
                    None => return error(Kind::Syntax, line, "`{% if %}` is never closed with `{% endif %}`"),
                }
            }
        }

        fn for_block(&mut self, src: &str, line: usize) -> Result<Node, Error> {
            let mut p = ExprParser::new(src, line)?;
            let mut targets = vec![p.ident()?];
            if p.eat_op(",") {
                targets.push(p.ident()?);
            }
            if !p.eat_word("in") {
                return p.fail("`in`");
            }
            let iter = p.expr()?;
            p.end()?;
            let (body, end) = self.block(&["else", "endfor"])?;
            let otherwise = match end {
                Some((name, _, _)) if name == "else" => {
                    let (otherwise, end) = self.block(&["endfor"])?;
                    if end.is_none() {
                        return error(Kind::Syntax, line, "`{% for %}` is never closed with `{% endfor %}`");
                    }
                    otherwise
                }
                Some(_) => Vec::new(),
                None => return error(Kind::Syntax, line, "`{% for %}` is never closed with `{% endfor %}`"),
            };
            Ok(Node::For { targets, iter, body, otherwise, line })
        }
    }

    pub fn compile(src: &str) -> Result<Program, Error> {
        let mut parser = Parser { segs: segments(src)?.into_iter(), depth: 0 };
        let (nodes, _) = parser.block(&[])?;
        Ok(Program { nodes })
    }

    // ---- analysis -------------------------------------------------------------------

    impl Program {
        /// Adds the top-level variables the template may read (loop variables excluded) to
        /// `out`, kept sorted and without duplicates.
        pub fn variables(&self, out: &mut Vec<String>) {
            let mut bound = Vec::new();
            walk_nodes(&self.nodes, &mut bound, out);
        }
    }

    fn walk_nodes(nodes: &[Node], bound: &mut Vec<String>, out: &mut Vec<String>) {
        for node in nodes {
            match node {
                Node::Text(_) => {}
                Node::Print(e, _) => walk_expr(e, bound, out),
                Node::If(branches, otherwise) => {
                    for (c, body) in branches {
                        walk_expr(c, bound, out);
                        walk_nodes(body, bound, out);
                    }
                    walk_nodes(otherwise, bound, out);
                }
                Node::For { targets, iter, body, otherwise, .. } => {
                    walk_expr(iter, bound, out);
                    let mark = bound.len();
                    bound.extend(targets.iter().cloned());
                    bound.push("loop".to_string());
                    walk_nodes(body, bound, out);
                    bound.truncate(mark);
                    walk_nodes(otherwise, bound, out);
                }
            }
        }
    }

    fn walk_expr(e: &Expr, bound: &[String], out: &mut Vec<String>) {
        match e {
            Expr::Lit(_) => {}
            Expr::Var(name) => {
                if !bound.contains(name) {
                    if let Err(at) = out.binary_search(name) {
                        out.insert(at, name.clone());
                    }
                }
            }
            Expr::List(items) => items.iter().for_each(|i| walk_expr(i, bound, out)),
            Expr::Attr(e, _) | Expr::Method(e, _) | Expr::Test(e, ..) | Expr::Not(e) => walk_expr(e, bound, out),
            Expr::Filter(e, _, args) => {
                walk_expr(e, bound, out);
                args.iter().for_each(|a| walk_expr(a, bound, out));
            }
            Expr::Index(a, b) | Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(a, _, b) | Expr::Concat(a, b) => {
                walk_expr(a, bound, out);
                walk_expr(b, bound, out);
            }
        }
    }

    // ---- evaluation -----------------------------------------------------------------

    type Val<'a> = Option<Cow<'a, Value>>;

    pub struct Limits {
        pub fuel: u64,
        pub output: usize,
    }

    struct Render<'a> {
        vars: &'a Map<String, Value>,
        scopes: Vec<(&'a str, Cow<'a, Value>)>,
        fuel: u64,
        out: &'a mut String,
        limit: usize,
        line: usize,
    }

    /// Renders `program` into `out` (appending), within the fuel and output limits.
    pub fn render(
        program: &Program,
        vars: &Map<String, Value>,
        out: &mut String,
        limits: &mut Limits,
    ) -> Result<(), Error> {
        let limit = limits.output;
        let mut r = Render { vars, scopes: Vec::new(), fuel: limits.fuel, out, limit, line: 1 };
        let result = r.nodes(&program.nodes);
        limits.fuel = r.fuel;
        result
    }

    /// How an expression reads in messages: `user.name`, `items[0]`, or `value`.
    fn describe(e: &Expr) -> String {
        match e {
            Expr::Var(name) => name.clone(),
            Expr::Attr(e, name) => format!("{}.{name}", describe(e)),
            Expr::Index(e, i) => match &**i {
                Expr::Lit(v) => format!("{}[{v}]", describe(e)),
                _ => format!("{}[...]", describe(e)),
            },
            Expr::Filter(e, ..) | Expr::Method(e, _) => describe(e),
            _ => "value".to_string(),
        }
    }

    /// The text of a value: strings as they are, booleans and null as Jinja prints them,
    /// lists and objects as JSON.
    fn text(v: &Value) -> Cow<'_, str> {
        match v {
            Value::String(s) => Cow::Borrowed(s),
            Value::Null => Cow::Borrowed("None"),
            Value::Bool(true) => Cow::Borrowed("True"),
            Value::Bool(false) => Cow::Borrowed("False"),
            Value::Number(n) => Cow::Owned(n.to_string()),
            other => Cow::Owned(serde_json::to_string(other).unwrap_or_default()),
        }
    }

    fn truthy(v: &Val<'_>) -> bool {
        match v.as_deref() {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
        }
    }

    fn child<'a>(v: Cow<'a, Value>, pick: impl Fn(&Value) -> Option<&Value>) -> Val<'a> {
        match v {
            Cow::Borrowed(b) => pick(b).map(Cow::Borrowed),
            Cow::Owned(o) => pick(&o).cloned().map(Cow::Owned),
        }
    }

    fn equal(a: &Val<'_>, b: &Val<'_>) -> bool {
        match (a.as_deref(), b.as_deref()) {
            (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
            (x, y) => x == y,
        }
    }

    impl<'a> Render<'a> {
        fn burn(&mut self) -> Result<(), Error> {
            match self.fuel.checked_sub(1) {
                Some(left) => {
                    self.fuel = left;
                    Ok(())
                }
                None => error(Kind::Fuel, self.line, "the template ran out of fuel"),
            }
        }

        fn write(&mut self, s: &str) -> Result<(), Error> {
            if self.out.len() + s.len() > self.limit {
                return error(Kind::TooLarge, self.line, "output too large");
            }
            self.out.push_str(s);
            Ok(())
        }

        fn nodes(&mut self, nodes: &'a [Node]) -> Result<(), Error> {
            for node in nodes {
                self.burn()?;
                match node {
                    Node::Text(t) => self.write(t)?,
                    Node::Print(e, line) => {
                        self.line = *line;
                        match self.eval(e)? {
                            Some(v) => self.write(&text(&v))?,
                            None => return error(Kind::Undefined, *line, format!("`{}` is undefined", describe(e))),
                        }
                    }
                    Node::If(branches, otherwise) => {
                        let mut taken = false;
                        for (condition, body) in branches {
                            if truthy(&self.eval(condition)?) {
                                self.nodes(body)?;
                                taken = true;
                                break;
                            }
                        }
                        if !taken {
                            self.nodes(otherwise)?;
                        }
                    }
                    Node::For { targets, iter, body, otherwise, line } => {
                        self.line = *line;
                        let Some(items) = self.eval(iter)? else {
                            return error(Kind::Undefined, *line, format!("`{}` is undefined", describe(iter)));
                        };
                        let items: Vec<Cow<'a, Value>> = match items {
                            Cow::Borrowed(Value::Array(a)) => a.iter().map(Cow::Borrowed).collect(),
                            Cow::Owned(Value::Array(a)) => a.into_iter().map(Cow::Owned).collect(),
                            Cow::Borrowed(Value::Object(o)) => {
                                o.keys().map(|k| Cow::Owned(Value::String(k.clone()))).collect()
                            }
                            Cow::Owned(Value::Object(o)) => {
                                o.into_iter().map(|(k, _)| Cow::Owned(Value::String(k))).collect()
                            }
                            Cow::Borrowed(Value::String(s)) => {
                                s.chars().map(|c| Cow::Owned(Value::String(c.to_string()))).collect()
                            }
                            Cow::Owned(Value::String(s)) => {
                                s.chars().map(|c| Cow::Owned(Value::String(c.to_string()))).collect()
                            }
                            other => {
                                return error(
                                    Kind::Invalid,
                                    *line,
                                    format!("`{}` ({}) cannot be iterated", describe(iter), text(&other)),
                                );
                            }
                        };
                        if items.is_empty() {
                            self.nodes(otherwise)?;
                            continue;
                        }
                        let length = items.len();
                        for (i, item) in items.into_iter().enumerate() {
                            self.burn()?;
                            let mark = self.scopes.len();
                            if targets.len() == 2 {
                                let pair = |n| {
                                    child(item.clone(), |v| {
                                        v.as_array().filter(|a| a.len() == 2).and_then(|a| a.get(n))
                                    })
                                };
                                let (Some(k), Some(v)) = (pair(0), pair(1)) else {
                                    return error(
                                        Kind::Invalid,
                                        *line,
                                        "cannot unpack into two names: use `for k, v in obj.items()`",
                                    );
                                };
                                self.scopes.push((&targets[0], k));
                                self.scopes.push((&targets[1], v));
                            } else {
                                self.scopes.push((&targets[0], item));
                            }
                            let mut info = Map::new();
                            info.insert("index".into(), (i + 1).into());
                            info.insert("index0".into(), i.into());
                            info.insert("revindex".into(), (length - i).into());
                            info.insert("revindex0".into(), (length - i - 1).into());
                            info.insert("first".into(), (i == 0).into());
                            info.insert("last".into(), (i + 1 == length).into());
                            info.insert("length".into(), length.into());
                            self.scopes.push(("loop", Cow::Owned(Value::Object(info))));
                            let result = self.nodes(body);
                            self.scopes.truncate(mark);
                            result?;
                        }
                    }
                }
            }
            Ok(())
        }

        fn lookup(&self, name: &str) -> Val<'a> {
            if let Some((_, v)) = self.scopes.iter().rev().find(|(n, _)| *n == name) {
                return Some(v.clone());
            }
            self.vars.get(name).map(Cow::Borrowed)
        }

        fn defined(&self, v: Val<'a>, e: &Expr) -> Result<Cow<'a, Value>, Error> {
            v.map_or_else(|| error(Kind::Undefined, self.line, format!("`{}` is undefined", describe(e))), Ok)
        }

        fn eval(&mut self, e: &'a Expr) -> Result<Val<'a>, Error> {
            self.burn()?;
            Ok(match e {
                Expr::Lit(v) => Some(Cow::Borrowed(v)),
                Expr::List(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        let v = self.eval(item)?;
                        out.push(self.defined(v, item)?.into_owned());
                    }
                    Some(Cow::Owned(Value::Array(out)))
                }
                Expr::Var(name) => self.lookup(name),
                Expr::Attr(base, name) => self.eval(base)?.and_then(|v| child(v, |v| v.get(name.as_str()))),
                Expr::Index(base, index) => {
                    let base = self.eval(base)?;
                    let index = self.eval(index)?;
                    match (base, index.as_deref()) {
                        (Some(base), Some(Value::Number(n))) => child(base, |v| {
                            let a = v.as_array()?;
                            let i = n.as_i64()?;
                            let i = if i < 0 { a.len().checked_sub(i.unsigned_abs() as usize)? } else { i as usize };
                            a.get(i)
                        }),
                        (Some(base), Some(Value::String(k))) => child(base, |v| v.get(k.as_str())),
                        _ => None,
                    }
                }
                Expr::Method(base, method) => {
                    let v = self.eval(base)?;
                    let v = self.defined(v, base)?;
                    let Some(obj) = v.as_object() else {
                        return error(
                            Kind::Invalid,
                            self.line,
                            format!("`{}` has no method `{method}()`", describe(base)),
                        );
                    };
                    let list: Vec<Value> = match *method {
                        "items" => {
                            obj.iter().map(|(k, v)| Value::Array(vec![Value::String(k.clone()), v.clone()])).collect()
                        }
                        "keys" => obj.keys().map(|k| Value::String(k.clone())).collect(),
                        _ => obj.values().cloned().collect(),
                    };
                    Some(Cow::Owned(Value::Array(list)))
                }
                Expr::Filter(base, filter, args) => {
                    let v = self.eval(base)?;
                    let mut values = Vec::with_capacity(args.len());
                    for arg in args {
                        values.push(self.eval(arg)?);
                    }
                    self.filter(v, base, *filter, values)?
                }
                Expr::Test(base, test, negated) => {
                    let v = self.eval(base)?;
                    let hit = match (*test, v.as_deref()) {
                        ("defined", v) => v.is_some(),
                        ("undefined", v) => v.is_none(),
                        ("none", v) => matches!(v, Some(Value::Null)),
                        ("string", v) => matches!(v, Some(Value::String(_))),
                        ("number", v) => matches!(v, Some(Value::Number(_))),
                        ("boolean", v) => matches!(v, Some(Value::Bool(_))),
                        ("mapping", v) => matches!(v, Some(Value::Object(_))),
                        (_, v) => matches!(v, Some(Value::Array(_))),
                    };
                    Some(Cow::Owned(Value::Bool(hit != *negated)))
                }
                Expr::Not(e) => Some(Cow::Owned(Value::Bool(!truthy(&self.eval(e)?)))),
                Expr::And(a, b) => {
                    let left = self.eval(a)?;
                    if truthy(&left) {
                        self.eval(b)?
                    } else {
                        left
                    }
                }
                Expr::Or(a, b) => {
                    let left = self.eval(a)?;
                    if truthy(&left) {
                        left
                    } else {
                        self.eval(b)?
                    }
                }
                Expr::Concat(a, b) => {
                    let left = self.eval(a)?;
                    let left = self.defined(left, a)?;
                    let right = self.eval(b)?;
                    let right = self.defined(right, b)?;
                    Some(Cow::Owned(Value::String(format!("{}{}", text(&left), text(&right)))))
                }
                Expr::Cmp(a, op, b) => {
                    let left = self.eval(a)?;
                    let right = self.eval(b)?;
                    Some(Cow::Owned(Value::Bool(self.compare(left, a, *op, right, b)?)))
                }
            })
        }

        fn compare(&self, left: Val<'a>, a: &Expr, op: Cmp, right: Val<'a>, b: &Expr) -> Result<bool, Error> {
            match op {
                Cmp::Eq => return Ok(equal(&left, &right)),
                Cmp::Ne => return Ok(!equal(&left, &right)),
                _ => {}
            }
            let left = self.defined(left, a)?;
            let right = self.defined(right, b)?;
            if let Cmp::In | Cmp::NotIn = op {
                let found = match (&*left, &*right) {
                    (Value::String(needle), Value::String(hay)) => hay.contains(needle.as_str()),
                    (needle, Value::Array(items)) => {
                        items.iter().any(|i| equal(&Some(Cow::Borrowed(i)), &Some(Cow::Borrowed(needle))))
                    }
                    (Value::String(key), Value::Object(o)) => o.contains_key(key),
                    _ => {
                        return error(
                            Kind::Invalid,
                            self.line,
                            format!("cannot look for {} in `{}`", text(&left), describe(b)),
                        )
                    }
                };
                return Ok(found == (op == Cmp::In));
            }
            let ordering = match (&*left, &*right) {
                (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()),
                (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                _ => None,
            };
            let Some(ordering) = ordering else {
                return error(
                    Kind::Invalid,
                    self.line,
                    format!("cannot compare `{}` with `{}`", describe(a), describe(b)),
                );
            };
            Ok(match op {
                Cmp::Lt => ordering.is_lt(),
                Cmp::Le => ordering.is_le(),
                Cmp::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            })
        }

        fn filter(&self, v: Val<'a>, base: &Expr, filter: Filter, args: Vec<Val<'a>>) -> Result<Val<'a>, Error> {
            if filter == Filter::Default {
                let fallback = args.first().cloned().flatten().unwrap_or(Cow::Owned(Value::String(String::new())));
                let use_fallback = v.is_none() || (truthy(args.get(1).unwrap_or(&None)) && !truthy(&v));
                return Ok(if use_fallback { Some(fallback) } else { v });
            }
            let v = self.defined(v, base)?;
            let arg = |i: usize| -> Result<String, Error> {
                match args.get(i) {
                    Some(Some(a)) => Ok(text(a).into_owned()),
                    Some(None) => error(Kind::Undefined, self.line, "a filter argument is undefined"),
                    None => Ok(String::new()),
                }
            };
            let string = |s: String| Ok(Some(Cow::Owned(Value::String(s))));
            match filter {
                Filter::Upper => string(text(&v).chars().map(upper_char).collect()),
                Filter::Lower => string(text(&v).chars().map(lower_char).collect()),
                Filter::Capitalize => {
                    let mut chars = text(&v).chars().map(lower_char).collect::<Vec<_>>();
                    if let Some(first) = chars.first_mut() {
                        *first = upper_char(*first);
                    }
                    string(chars.into_iter().collect())
                }
                Filter::Title => {
                    let mut out = String::new();
                    let mut start = true;
                    for c in text(&v).chars() {
                        out.push(if start { upper_char(c) } else { lower_char(c) });
                        start = !(c.is_ascii_alphanumeric() || (c as u32) >= 0xC0);
                    }
                    string(out)
                }
                Filter::Trim => string(text(&v).trim().to_string()),
                Filter::String => string(text(&v).into_owned()),
                Filter::Replace => string(text(&v).replace(&arg(0)?, &arg(1)?)),
                Filter::ToJson => string(serde_json::to_string(&*v).unwrap_or_default()),
                Filter::Join => match &*v {
                    Value::Array(items) => string(items.iter().map(|i| text(i)).collect::<Vec<_>>().join(&arg(0)?)),
                    other => string(text(other).into_owned()),
                },
                Filter::Length => {
                    let n = match &*v {
                        Value::String(s) => s.chars().count(),
                        Value::Array(a) => a.len(),
                        Value::Object(o) => o.len(),
                        _ => return error(Kind::Invalid, self.line, format!("`{}` has no length", describe(base))),
                    };
                    Ok(Some(Cow::Owned(Value::from(n))))
                }
                Filter::First | Filter::Last => {
                    let last = filter == Filter::Last;
                    if let Some(s) = v.as_str() {
                        let c = if last { s.chars().next_back() } else { s.chars().next() };
                        return Ok(c.map(|c| Cow::Owned(Value::String(c.to_string()))));
                    }
                    Ok(child(v, |v| {
                        let a = v.as_array()?;
                        if last {
                            a.last()
                        } else {
                            a.first()
                        }
                    }))
                }
                Filter::Default => Ok(Some(v)), // handled above
            }
        }
    }
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
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "missing_template_variables"));
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
        let t = one(json!("{% for a in xs %}{% for b in xs %}{{ b }}{% endfor %}{% endfor %}"));
        let xs: Vec<Value> = (0..1000).map(|_| Value::from("")).collect();
        let e = render(&t, &obj(json!({ "xs": xs }))).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "template_too_expensive"));
        assert!(e.message.contains(&MAX_FUEL.to_string()), "{}", e.message);

        let t = one(json!("{% for i in xs %}{{ big }}{% endfor %}"));
        let xs: Vec<Value> = (0..100).map(Value::from).collect();
        let e = render(&t, &obj(json!({"big": "x".repeat(1000), "xs": xs}))).unwrap_err();
        assert_eq!(e.code, "template_output_too_large");
        assert!(e.message.contains("65536 bytes"), "{}", e.message);
        // Just under the limit is fine; the limit covers all messages together.
        let t = one(json!("{{ big }}"));
        assert_eq!(
            render(&t, &obj(json!({"big": "x".repeat(MAX_OUTPUT_BYTES)}))).unwrap().text().len(),
            MAX_OUTPUT_BYTES
        );
        let t = one(json!({"system": "{{ big }}", "user": "{{ big }}"}));
        let e = render(&t, &obj(json!({"big": "x".repeat(MAX_OUTPUT_BYTES / 2 + 1)}))).unwrap_err();
        assert_eq!(e.code, "template_output_too_large");
    }

    #[test]
    fn unsupported_tags_and_unknown_filters_fail_at_compile_time() {
        let mut issues = Issues::default();
        for (i, source) in [
            "{% include '/etc/passwd' %}",
            "{% set x = 1 %}",
            "{{ x | nosuchfilter }}",
            "{{ range(10) }}",
            "{{ x is odd }}",
        ]
        .iter()
        .enumerate()
        {
            assert!(check_inline(&format!("e[{i}]"), &json!(source), &mut issues).is_none(), "{source}");
        }
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("`{% include %}` is not supported"), "{text:?}");
        assert!(text[1].contains("`{% set %}` is not supported"), "{text:?}");
        assert!(text[2].contains("unknown filter `nosuchfilter`"), "{text:?}");
        assert!(text[3].contains("expected the end of the tag, found `(`"), "{text:?}");
        assert!(text[4].contains("unknown test `odd`"), "{text:?}");
    }

    #[test]
    fn runtime_errors_are_400_with_line() {
        let t = one(json!("a\n{{ x.y.z }}"));
        let e = render(&t, &obj(json!({"x": {}}))).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "template_render_failed"));
        assert!(e.message.contains("`x.y.z` is undefined (line 2)"), "{}", e.message);
        let t = one(json!("{% for i in n %}{% endfor %}"));
        let e = render(&t, &obj(json!({"n": 5}))).unwrap_err();
        assert!(e.message.contains("`n` (5) cannot be iterated"), "{}", e.message);
        let t = one(json!("{% if a < b %}{% endif %}"));
        assert_eq!(render(&t, &obj(json!({"a": 1, "b": "x"}))).unwrap_err().code, "template_render_failed");
    }

    fn render_str(source: &str, vars: Value) -> String {
        render(&one(json!(source)), &obj(vars)).unwrap().text()
    }

    #[test]
    fn engine_statements() {
        let vars =
            json!({"items": ["a", "b", "c"], "user": {"name": "Ann", "tags": ["x"]}, "empty": [], "mode": "brief"});
        assert_eq!(
            render_str(
                "{% for i in items %}{{ loop.index }}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}",
                vars.clone()
            ),
            "1a,2b,3c"
        );
        assert_eq!(render_str("{% for i in empty %}x{% else %}none{% endfor %}", vars.clone()), "none");
        assert_eq!(
            render_str("{% for k, v in user.items() %}{{ k }}={{ v }};{% endfor %}", vars.clone()),
            "name=Ann;tags=[\"x\"];"
        );
        assert_eq!(render_str("{% for k in user %}{{ k }} {% endfor %}", vars.clone()), "name tags ");
        assert_eq!(
            render_str("{% if mode == 'long' %}L{% elif mode == 'brief' %}B{% else %}?{% endif %}", vars.clone()),
            "B"
        );
        assert_eq!(render_str("{% if missing %}yes{% else %}no{% endif %}", vars.clone()), "no");
        assert_eq!(render_str("{% if missing is defined or 'a' in items %}in{% endif %}", vars.clone()), "in");
        assert_eq!(render_str("{% if 'z' not in items and items|length >= 3 %}ok{% endif %}", vars.clone()), "ok");
        assert_eq!(render_str("{{ items[0] }}{{ items[-1] }}{{ user['name'] }}{{ items.1 }}", vars.clone()), "acAnnb");
        assert_eq!(
            render_str("{# note #}a {{- ' b ' -}} c{% raw %}{{ not }}{% endraw %}", vars.clone()),
            "a b c{{ not }}"
        );
        assert_eq!(render_str("line\n  {%- if true %} x{% endif %}\n", vars.clone()), "line x");
        assert_eq!(render_str("{{ \"say \\\"hi\\\"\\n\" }}", vars.clone()), "say \"hi\"\n");
        assert_eq!(render_str("{{ [1, 2.5, -3, true, none] }}", vars), "[1,2.5,-3,true,null]");
    }

    #[test]
    fn engine_filters() {
        let vars = json!({"s": "  hello World  ", "xs": ["a", "b"], "n": 3, "o": {"k": [1]}});
        assert_eq!(
            render_str(
                "{{ s | trim | upper }}|{{ s | trim | lower }}|{{ s | trim | title }}|{{ 'hELLO' | capitalize }}",
                vars.clone()
            ),
            "HELLO WORLD|hello world|Hello World|Hello"
        );
        assert_eq!(render_str("{{ xs | join(', ') }}|{{ xs | join }}|{{ xs | length }}|{{ s | length }}|{{ xs | first }}{{ xs | last }}", vars.clone()), "a, b|ab|2|15|ab");
        assert_eq!(
            render_str("{{ o | tojson }}|{{ n | string ~ '!' }}|{{ 'a-b' | replace('-', '+') }}", vars.clone()),
            "{\"k\":[1]}|3!|a+b"
        );
        assert_eq!(
            render_str(
                "{{ missing | default('dflt') }}|{{ '' | default('e', true) }}|{{ missing | d }}|{{ n | default(5) }}",
                vars
            ),
            "dflt|e||3"
        );
    }

    #[test]
    fn engine_syntax_errors() {
        for (source, expected) in [
            ("{% if x %}open", "`{% if %}` is never closed with `{% endif %}` (line 1)"),
            ("a\n{% for x in %}", "expected an expression, found the end of the tag (line 2)"),
            ("{{ x ", "`{{` is never closed"),
            ("{% endif %}", "unexpected `{% endif %}`"),
            ("{% frobnicate %}", "unknown tag `frobnicate`"),
            ("{{ 'unterminated }}", "`{{` is never closed"),
            ("{{ x | join(1, 2) }}", "filter `join` takes 0 to 1 arguments, not 2"),
            ("{{ x.upper() }}", "unknown method `upper()`"),
            ("{{ x @ y }}", "unexpected character `@`"),
            ("{% raw %}never closed", "`{% raw %}` is never closed"),
        ] {
            let mut issues = Issues::default();
            assert!(check_inline("p", &json!(source), &mut issues).is_none(), "{source}");
            let message = issues.0[0].to_string();
            assert!(message.contains(expected), "{source}: {message}");
        }
        let deep = format!("{}x{}", "{% if a %}".repeat(100), "{% endif %}".repeat(100));
        let mut issues = Issues::default();
        assert!(check_inline("p", &json!(deep), &mut issues).is_none());
        assert!(issues.0[0].message.contains("nested too deeply"));
        let deep = format!("{{{{ {}x{} }}}}", "(".repeat(100), ")".repeat(100));
        assert!(check_inline("p", &json!(deep), &mut issues).is_none());
        let deep = format!("{{{{ {}x }}}}", "not ".repeat(100));
        assert!(check_inline("p", &json!(deep), &mut issues).is_none());
    }

    #[test]
    fn engine_never_panics() {
        // Random splices of template fragments: compile and render must return, never panic.
        let pieces = [
            "{{", "}}", "{%", "%}", "{#", "#}", "-", " if ", " for ", " in ", " endif ", " endfor ", " else ", "x",
            "xs", "'s", "\"", "(", ")", "[", "]", ".", "|", " default", " join", "loop", ".index", "1", "-1", "==",
            " not ", " is ", " defined", "~", ",", "é", "\n", " raw ", " endraw ", ".items()", "0.5", "_",
        ];
        let vars = obj(json!({"x": "v", "xs": [1, {"a": 2}], "s": null}));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            let mut source = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 12) {
                source.push_str(pieces[((seed >> (i * 5)) % pieces.len() as u64) as usize]);
            }
            if let Ok(program) = jinja::compile(&source) {
                let mut out = String::new();
                let _ = jinja::render(&program, &vars, &mut out, &mut jinja::Limits { fuel: 1000, output: 1000 });
            }
        }
    }
}
