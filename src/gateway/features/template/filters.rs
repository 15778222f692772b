//! The filters and tests templates can use: the Jinja ones prompt templates need, written
//! here rather than taken from minijinja's `builtins` feature (which costs ~99 KB of the
//! gzipped worker for ~50 filters, float formatting and Unicode case tables).
//!
//! Every filter pays for its work in fuel before it allocates: minijinja charges a filter for
//! the string it is given and the value it returns, but not for items it visits or output it
//! builds along the way, which matters for a lazily repeated list (`[x] * 10**8`).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::gateway::features::template::output::{repr, Bounded, Capped};
use crate::gateway::util::text::{lower_char, upper_char};

/// Registers the filters and tests (minijinja's core has `defined`, `undefined`, `none`).
pub fn register(env: &mut Environment<'static>) {
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("upper", upper);
    env.add_filter("lower", lower);
    env.add_filter("capitalize", capitalize);
    env.add_filter("title", title);
    env.add_filter("trim", trim);
    env.add_filter("replace", replace);
    env.add_filter("join", join);
    env.add_filter("length", length);
    env.add_filter("count", length);
    env.add_filter("first", first);
    env.add_filter("last", last);
    env.add_filter("string", string);
    env.add_filter("items", items);
    env.add_filter("tojson", tojson);
    env.add_test("string", |v: &Value| v.kind() == ValueKind::String);
    env.add_test("number", |v: &Value| v.kind() == ValueKind::Number);
    env.add_test("boolean", |v: &Value| v.kind() == ValueKind::Bool);
    env.add_test("mapping", |v: &Value| v.kind() == ValueKind::Map);
    env.add_test("sequence", |v: &Value| matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable));
    env.add_test("odd", |v: &Value| v.as_i64().is_some_and(|n| n % 2 != 0));
    env.add_test("even", |v: &Value| v.as_i64().is_some_and(|n| n % 2 == 0));
}

/// Bytes the remaining fuel can still pay for (one fuel per 64 bytes).
fn affordable(state: &State) -> usize {
    state.fuel_levels().map_or(usize::MAX, |(_, left)| usize::try_from(left.saturating_mul(64)).unwrap_or(usize::MAX))
}

fn out_of_fuel(_: impl Sized) -> Error {
    Error::from(ErrorKind::OutOfFuel)
}

/// A filter's string argument: a string as it is, any other value as `{{ value }}` would print
/// it, written only as far as the fuel can pay for (minijinja's own conversion would print a
/// list of any length first).
fn input<'v>(state: &State, value: &'v Value) -> Result<Cow<'v, str>, Error> {
    if let Some(s) = defined(value)?.as_str() {
        return Ok(Cow::Borrowed(s));
    }
    let mut w = Bounded { out: String::new(), left: affordable(state) };
    text(&mut w, value).map_err(out_of_fuel)?;
    Ok(Cow::Owned(w.out))
}

/// An undefined value where the filter needs one: the missing-variable error.
fn defined(value: &Value) -> Result<&Value, Error> {
    if value.is_undefined() {
        Err(Error::from(ErrorKind::UndefinedError))
    } else {
        Ok(value)
    }
}

/// `default(fallback='', boolean=false)`: the fallback for an undefined value (with `boolean`,
/// for any false one).
fn default(value: &Value, fallback: Option<Value>, boolean: Option<bool>) -> Value {
    if value.is_undefined() || (boolean.unwrap_or(false) && !value.is_true()) {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        value.clone()
    }
}

// Case mappings cover Latin, Greek and Cyrillic (`guard`'s tables; std's full Unicode ones
// cost ~20 KB of wasm). Other scripts stay as they are.
fn upper(state: &State, value: &Value) -> Result<String, Error> {
    Ok(input(state, value)?.chars().map(upper_char).collect())
}

fn lower(state: &State, value: &Value) -> Result<String, Error> {
    Ok(input(state, value)?.chars().map(lower_char).collect())
}

fn capitalize(state: &State, value: &Value) -> Result<String, Error> {
    let s = input(state, value)?;
    let mut chars = s.chars();
    Ok(chars.next().map(upper_char).into_iter().chain(chars.map(lower_char)).collect())
}

/// Each word's first letter upper case, the rest lower case.
fn title(state: &State, value: &Value) -> Result<String, Error> {
    let mut start = true;
    Ok(input(state, value)?
        .chars()
        .map(|c| {
            let mapped = if start { upper_char(c) } else { lower_char(c) };
            start = !(c.is_ascii_alphanumeric() || u32::from(c) >= 0xC0);
            mapped
        })
        .collect())
}

/// `trim(chars=whitespace)`.
fn trim(state: &State, value: &Value, chars: Option<&Value>) -> Result<String, Error> {
    let s = input(state, value)?;
    Ok(match chars {
        Some(chars) => {
            let chars = input(state, chars)?;
            s.trim_matches(|c| chars.contains(c)).to_string()
        }
        None => s.trim().to_string(),
    })
}

/// `replace(old, new, count=all)`; the result is paid for before it is built.
fn replace(state: &State, value: &Value, old: &Value, new: &Value, count: Option<usize>) -> Result<String, Error> {
    let (s, old, new) = (input(state, value)?, input(state, old)?, input(state, new)?);
    let matches = s.matches(&*old).count().min(count.unwrap_or(usize::MAX));
    let size = s.len().saturating_add(matches.saturating_mul(new.len()));
    if size > affordable(state) {
        return Err(out_of_fuel(()));
    }
    Ok(match count {
        Some(n) => s.replacen(&*old, &new, n),
        None => s.replace(&*old, &new),
    })
}

/// `join(separator='')`: the items' text, separated.
fn join(state: &State, value: &Value, separator: Option<&Value>) -> Result<String, Error> {
    let separator = match separator {
        Some(separator) => input(state, separator)?,
        None => Cow::Borrowed(""),
    };
    let mut w = Bounded { out: String::new(), left: affordable(state) };
    for (i, item) in defined(value)?.try_iter()?.enumerate() {
        state.consume_fuel(1)?;
        if i > 0 {
            w.write_str(&separator).map_err(out_of_fuel)?;
        }
        text(&mut w, &item).map_err(out_of_fuel)?;
    }
    Ok(w.out)
}

/// A value's text: strings as they are, scalars as Jinja prints them, lists and dicts as
/// Python's `repr`.
pub fn text<W: fmt::Write>(w: &mut Bounded<W>, value: &Value) -> fmt::Result {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => repr(w, value, 0),
        _ => match value.as_str() {
            Some(s) => w.write_str(s),
            None => write!(w, "{value}"),
        },
    }
}

/// `length`/`count`: characters of a string, items of a list or dict.
fn length(value: &Value) -> Result<usize, Error> {
    defined(value)?
        .len()
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, format!("cannot take the length of a {}", value.kind())))
}

fn first(value: &Value) -> Result<Value, Error> {
    Ok(match defined(value)?.as_str() {
        Some(s) => s.chars().next().map_or(Value::UNDEFINED, Value::from),
        None => value.try_iter()?.next().unwrap_or(Value::UNDEFINED),
    })
}

fn last(state: &State, value: &Value) -> Result<Value, Error> {
    if let Some(s) = defined(value)?.as_str() {
        return Ok(s.chars().next_back().map_or(Value::UNDEFINED, Value::from));
    }
    if value.kind() == ValueKind::Seq {
        if let Some(len) = value.len() {
            return Ok(match len.checked_sub(1) {
                Some(at) => value.get_item(&Value::from(at))?,
                None => Value::UNDEFINED,
            });
        }
    }
    let mut last = Value::UNDEFINED;
    for item in value.try_iter()? {
        state.consume_fuel(1)?;
        last = item;
    }
    Ok(last)
}

/// `string`: the text `{{ value }}` would print.
fn string(state: &State, value: &Value) -> Result<Value, Error> {
    if value.kind() == ValueKind::String {
        return Ok(value.clone());
    }
    let mut w = Bounded { out: String::new(), left: affordable(state) };
    text(&mut w, defined(value)?).map_err(out_of_fuel)?;
    Ok(Value::from(w.out))
}

/// `items`: a dict's `[key, value]` pairs.
pub fn items(state: &State, value: &Value) -> Result<Value, Error> {
    if defined(value)?.kind() != ValueKind::Map {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("a {} has no items", value.kind())));
    }
    let mut pairs = Vec::with_capacity(value.len().unwrap_or(0));
    for key in value.try_iter()? {
        state.consume_fuel(1)?;
        let item = value.get_item(&key)?;
        pairs.push(Value::from(vec![key, item]));
    }
    Ok(Value::from(pairs))
}

/// `tojson(indent=none)`: JSON as Python's Jinja writes it (`json.dumps`: `", "` and `": "`
/// between items, keys sorted), without its HTML escaping (prompts are not HTML).
fn tojson(state: &State, value: &Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let json = to_json(state, value, 0)?;
    let mut out = Capped::new(affordable(state));
    let written = match indent {
        Some(n) => {
            let spaces = " ".repeat(n.min(16));
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            serde::Serialize::serialize(&json, &mut serde_json::Serializer::with_formatter(&mut out, formatter))
        }
        None => serde::Serialize::serialize(&json, &mut serde_json::Serializer::with_formatter(&mut out, Spaced)),
    };
    written.map_err(out_of_fuel)?;
    Ok(Value::from(String::from_utf8(out.bytes).map_err(out_of_fuel)?))
}

/// A template value as JSON, paying one fuel per node and for the bytes of strings.
fn to_json(state: &State, value: &Value, depth: usize) -> Result<serde_json::Value, Error> {
    use serde_json::Value as Json;
    state.consume_fuel(1)?;
    if depth > 128 {
        return Err(Error::new(ErrorKind::InvalidOperation, "the value is nested too deeply for JSON"));
    }
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => Json::Null,
        ValueKind::Bool => Json::Bool(value.is_true()),
        ValueKind::Number => match (value.as_i64(), u64::try_from(value.clone()), f64::try_from(value.clone())) {
            (Some(i), ..) => Json::from(i),
            (_, Ok(u), _) => Json::from(u),
            (.., Ok(f)) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
            _ => Json::Null,
        },
        ValueKind::Seq | ValueKind::Iterable => {
            let mut items = Vec::new();
            for item in value.try_iter()? {
                items.push(to_json(state, &item, depth + 1)?);
            }
            Json::Array(items)
        }
        ValueKind::Map => {
            let mut entries = serde_json::Map::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = match key.as_str() {
                    Some(s) => s.to_string(),
                    None => key.to_string(),
                };
                entries.insert(key, to_json(state, &item, depth + 1)?);
            }
            Json::Object(entries)
        }
        _ => {
            let text = match value.as_str() {
                Some(s) => s.to_string(),
                None => value.to_string(),
            };
            state.consume_fuel(text.len() as u64 / 64)?;
            Json::String(text)
        }
    })
}

/// serde_json's compact output with Python's separators.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}
