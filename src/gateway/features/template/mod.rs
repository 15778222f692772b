//! Prompt templates (DESIGN.md §2 step 6): Jinja templates, rendered by minijinja.
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
//! isolate); a request only renders. Rendering is sandboxed (see [`engine`]): no loader (so no
//! `include`/`import`/`extends`), no macros, no functions, nothing that reaches outside the
//! variables given; a fuel budget per render (bounded time and memory) and a bounded output.
//! The filters and tests are in [`filters`].

mod engine;
mod filters;
mod output;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::Operation;
use crate::gateway::util::text::hex;

pub use output::{MAX_FUEL, MAX_OUTPUT_BYTES};

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
    /// The sandboxed environment holding this version's messages as templates.
    env: Environment<'static>,
    /// (role, name of its template in `env`), in message order.
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

    let mut env = engine::environment();
    let mut parts = Vec::new();
    let mut variables: Vec<String> = Vec::new();
    let mut ok = true;
    for (i, (at, role, source)) in sources.into_iter().enumerate() {
        let part = i.to_string();
        let checked = env
            .add_template_owned(part.clone(), source.to_string())
            .map_err(|e| engine::compile_error(&e))
            .and_then(|()| engine::check_names(&env, source));
        if let Err(message) = checked {
            issues.push(at, format!("template does not compile: {message}"));
            ok = false;
            continue;
        }
        if let Ok(template) = env.get_template(&part) {
            for variable in template.undeclared_variables(false) {
                if env.globals().all(|(global, _)| global != variable) {
                    if let Err(at) = variables.binary_search(&variable) {
                        variables.insert(at, variable);
                    }
                }
            }
        }
        parts.push((role, part));
    }
    if !ok {
        return None;
    }
    Some(TemplateRef(Arc::new(Compiled {
        name: name.to_string(),
        version: version.to_string(),
        env,
        parts,
        variables,
    })))
}

/// Renders `template` with `variables`. Undefined variables are a 400 that names every
/// missing one; the fuel budget and the output size are bounded (400s naming the limit).
pub fn render(template: &TemplateRef, variables: &Map<String, Value>) -> Result<RenderedPrompt> {
    let compiled = &*template.0;
    let context = engine::context(variables).map_err(|at| {
        GatewayError::bad_request(
            ErrorCode::TemplateVariableTooLarge,
            format!("template variable `{at}` is longer than {MAX_OUTPUT_BYTES} bytes, the limit of a rendered prompt"),
        )
    })?;
    let mut out = output::Capped::new(MAX_OUTPUT_BYTES);
    let mut fuel = MAX_FUEL;
    let mut messages = Vec::with_capacity(compiled.parts.len());
    for (role, name) in &compiled.parts {
        // One budget for all messages: a later message gets what the earlier ones left.
        let env = if fuel == MAX_FUEL {
            std::borrow::Cow::Borrowed(&compiled.env)
        } else {
            let mut env = compiled.env.clone();
            env.set_fuel(Some(fuel));
            std::borrow::Cow::Owned(env)
        };
        let start = out.bytes.len();
        let used = env
            .get_template(name)
            .and_then(|t| t.render_captured_to(context.clone(), &mut out).map(|c| c.state().fuel_levels()))
            .map_err(|e| render_error(compiled, variables, &e))?;
        fuel = fuel.saturating_sub(used.map_or(0, |(used, _)| used));
        let content = String::from_utf8_lossy(&out.bytes[start..]).into_owned();
        messages.push(serde_json::json!({"role": role, "content": content}));
    }
    Ok(RenderedPrompt { template: compiled.name.clone(), version: compiled.version.clone(), messages })
}

fn render_error(compiled: &Compiled, variables: &Map<String, Value>, e: &minijinja::Error) -> GatewayError {
    let label = format!("{}@{}", compiled.name, compiled.version);
    let missing: Vec<&str> =
        compiled.variables.iter().map(String::as_str).filter(|v| !variables.contains_key(*v)).collect();
    match e.kind() {
        // The only writers that fail are the output caps (`engine::Capped`, `engine::format`).
        ErrorKind::WriteFailure => GatewayError::bad_request(
            ErrorCode::TemplateOutputTooLarge,
            format!("the prompt rendered from template \"{label}\" exceeds the limit of {MAX_OUTPUT_BYTES} bytes"),
        ),
        ErrorKind::OutOfFuel => GatewayError::bad_request(
            ErrorCode::TemplateTooExpensive,
            format!("rendering template \"{label}\" exceeded its budget of {MAX_FUEL} steps"),
        ),
        ErrorKind::UndefinedError if !missing.is_empty() => GatewayError::bad_request(
            ErrorCode::MissingTemplateVariables,
            format!(
                "template \"{label}\" needs variables that were not provided: {} (send them as \"variables\": {{...}})",
                missing.join(", ")
            ),
        ),
        _ => GatewayError::bad_request(
            ErrorCode::TemplateRenderFailed,
            format!("rendering template \"{label}\" failed: {}", engine::describe(e)),
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
