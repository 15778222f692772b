//! The minijinja side: the sandboxed environment every template is compiled into, the
//! conversion of request variables, the bounded output, and the checks made at compile time.
//!
//! The sandbox: minijinja is built with its core only (no `builtins`, no `multi_template`, no
//! `macros`): no loader, so `include`, `import`, `extends` and `block` are syntax errors,
//! reported at check time with the template's path, as are `macro` and `call`. There are no
//! functions; the filters and tests are the ones in [`filters`], which only compute on
//! the values given. Undefined values are "semi-strict": printing, iterating or filtering one
//! is an error (a missing variable), testing it (`if x`, `x is defined`, `x | default(...)`) is
//! not.
//!
//! Bounds: minijinja's fuel (`MAX_FUEL`) charges every instruction and every byte a template
//! creates (checked before a known-size allocation such as `'x' * n`), the strings filters are
//! given and the values they return, and each loop iteration; strings and lists are iterated
//! lazily (a loop over a 1 MB string does not build a million values first). The output goes
//! straight into a buffer that refuses to grow past `MAX_OUTPUT_BYTES` ([`Capped`]), and one
//! printed value may not exceed it either ([`format`]), which stops a huge list from being
//! written into captured output (`{% set %}` blocks) before its fuel is charged.

use std::collections::BTreeMap;

use minijinja::machinery::{tokenize, Token};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Value as JinjaValue, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use serde_json::{Map, Value};

use crate::gateway::features::template::filters;
use crate::gateway::features::template::output::{Bounded, MAX_FUEL, MAX_OUTPUT_BYTES};

/// Methods a template may call: Python's dict methods on mappings, and the loop's own.
const METHODS: &[&str] = &["items", "keys", "values", "cycle", "changed"];

/// Words of the template language that may precede a `(` without being a call.
const KEYWORDS: &[&str] = &["and", "do", "elif", "else", "for", "if", "in", "not", "or", "recursive", "set", "with"];

/// The environment of one template version (its messages are added as templates "0", ...).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    filters::register(&mut env);
    // Prompts are not HTML: no escaping, whatever the template is called.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(MAX_FUEL));
    env.set_formatter(format);
    env.set_unknown_method_callback(method);
    env
}

/// The request's variables as the render context. A string longer than `MAX_OUTPUT_BYTES`
/// (which could never be printed whole) is refused, naming where it is (`doc`,
/// `items[2].text`): minijinja does not charge fuel for everything it does with a string
/// (indexing, slicing and comparing scan it), so the size of one string bounds how much work a
/// single step can do.
pub fn context(variables: &Map<String, Value>) -> Result<JinjaValue, String> {
    map(variables).map_err(|mut path| {
        path.reverse();
        path.concat().trim_start_matches('.').to_string()
    })
}

/// On error, the path to the long string, innermost segment first.
fn map(entries: &Map<String, Value>) -> Result<JinjaValue, Vec<String>> {
    let mut out = BTreeMap::new();
    for (key, v) in entries {
        if key.len() > MAX_OUTPUT_BYTES {
            return Err(vec![format!(".{}...", &key[..key.floor_char_boundary(16)])]);
        }
        let v = value(v).map_err(|mut path| {
            path.push(format!(".{key}"));
            path
        })?;
        out.insert(key.clone(), v);
    }
    Ok(JinjaValue::from(out))
}

fn value(v: &Value) -> Result<JinjaValue, Vec<String>> {
    Ok(match v {
        Value::Null => JinjaValue::from(()),
        Value::Bool(b) => JinjaValue::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => JinjaValue::from(i),
            (_, Some(u)) => JinjaValue::from(u),
            _ => JinjaValue::from(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) if s.len() > MAX_OUTPUT_BYTES => return Err(Vec::new()),
        Value::String(s) => JinjaValue::from(s.as_str()),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(value(item).map_err(|mut path| {
                    path.push(format!("[{i}]"));
                    path
                })?);
            }
            JinjaValue::from(out)
        }
        Value::Object(entries) => map(entries)?,
    })
}

/// Prints a value as Jinja does (strings as they are; `True`, `None`, lists and dicts as
/// Python writes them), at most `MAX_OUTPUT_BYTES` of it: a list's text is written while
/// walking it, and the walk stops at the cap (minijinja's own printing would walk on).
fn format(out: &mut Output, _: &mut State, value: &JinjaValue) -> Result<(), Error> {
    filters::text(&mut Bounded { out, left: MAX_OUTPUT_BYTES }, value)
        .map_err(|_| Error::new(ErrorKind::WriteFailure, "the output is too large"))
}

/// `.items()`, `.keys()`, `.values()` on mappings, as in Python.
fn method(state: &mut State, value: &JinjaValue, name: &str, args: &[JinjaValue]) -> Result<JinjaValue, Error> {
    if value.kind() != ValueKind::Map || !args.is_empty() {
        return Err(Error::from(ErrorKind::UnknownMethod));
    }
    let pick = match name {
        "items" => return filters::items(state, value),
        "keys" => 0,
        "values" => 1,
        _ => return Err(Error::from(ErrorKind::UnknownMethod)),
    };
    let pairs = filters::items(state, value)?;
    let mut list = Vec::with_capacity(pairs.len().unwrap_or(0));
    for pair in pairs.try_iter()? {
        list.push(pair.get_item(&JinjaValue::from(pick))?);
    }
    Ok(JinjaValue::from(list))
}

/// What went wrong, with the line: minijinja's kind and detail (its own `Display` would add
/// the internal template name).
pub fn describe(e: &Error) -> String {
    let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    match e.detail() {
        Some(detail) => format!("{}: {detail}{line}", e.kind()),
        None => format!("{}{line}", e.kind()),
    }
}

/// A compile error, saying so plainly for the tags the sandbox leaves out.
pub fn compile_error(e: &Error) -> String {
    if let Some(tag) = e.detail().and_then(|d| d.strip_prefix("unknown statement ")) {
        if ["include", "import", "from", "extends", "block", "macro", "call"].contains(&tag) {
            let line = e.line().unwrap_or(1);
            return format!(
                "`{{% {tag} %}}` is not supported in prompt templates: they cannot load other templates or define macros (line {line})"
            );
        }
    }
    describe(e)
}

/// Finds the filters, tests, methods and functions a template names and checks that they
/// exist, so that a typo is a config issue rather than a failing request (minijinja looks
/// them up only when rendering).
pub fn check_names(env: &Environment<'static>, source: &str) -> Result<(), String> {
    #[derive(Clone, Copy)]
    enum Prev<'s> {
        Other,
        BlockStart,
        Pipe,
        FilterTag,
        Is,
        IsNot,
        Dot,
        Name(&'s str, bool),
    }
    let fails = |expression: String, kind: ErrorKind| {
        env.compile_expression_owned(expression).and_then(|e| e.eval(())).is_err_and(|e| e.kind() == kind)
    };
    let mut prev = Prev::Other;
    for token in tokenize(source, false, SyntaxConfig::default()) {
        let Ok((token, span)) = token else { break };
        let line = span.start_line;
        prev = match (token, prev) {
            (Token::Ident(name), Prev::Pipe | Prev::FilterTag) => {
                if fails(format!("none | {name}"), ErrorKind::UnknownFilter) {
                    return Err(format!("unknown filter `{name}` (line {line})"));
                }
                Prev::Other
            }
            (Token::Ident("not"), Prev::Is) => Prev::IsNot,
            (Token::Ident(name), Prev::Is | Prev::IsNot) => {
                if fails(format!("none is {name}"), ErrorKind::UnknownTest) {
                    return Err(format!("unknown test `{name}` (line {line})"));
                }
                Prev::Other
            }
            (Token::Ident("filter"), Prev::BlockStart) => Prev::FilterTag,
            (Token::Ident("is"), _) => Prev::Is,
            (Token::Ident(name), Prev::Dot) => Prev::Name(name, true),
            (Token::Ident(name), _) if !KEYWORDS.contains(&name) => Prev::Name(name, false),
            (Token::ParenOpen, Prev::Name(name, true)) if !METHODS.contains(&name) => {
                return Err(format!("unknown method `{name}()` (available: {}) (line {line})", METHODS.join(", ")));
            }
            // `loop(...)` recurses in a `recursive` loop; there are no other functions.
            (Token::ParenOpen, Prev::Name(name, false)) if name != "loop" => {
                return Err(format!("unknown function `{name}()`: templates have no functions (line {line})"));
            }
            (Token::Pipe, _) => Prev::Pipe,
            (Token::Dot, _) => Prev::Dot,
            (Token::BlockStart, _) => Prev::BlockStart,
            _ => Prev::Other,
        };
    }
    Ok(())
}
