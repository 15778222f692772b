//! The guardrails config: what `guardrails:` may say, checked and compiled once when the
//! config loads (patterns, literal prefilters, detector order).

pub(super) use edge_scan::find::contains_ascii_ci;
use edge_scan::shift_and::ShiftAnd;
use edge_scan::windows::Windows;
use regex_lite::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::util::text::lower_char;

pub(super) const FIELDS: &[&str] = &["max_messages", "max_chars", "deny", "redact", "injection", "output"];

pub(super) const BUILTIN: &[&str] = &["email", "phone", "card", "iban"];

pub(super) const INJECTION_MODES: &[&str] = &["off", "flag", "block"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Injection {
    #[default]
    Off,
    /// Let the request through; the report says `flagged` (→ `x-gateway-guard: flagged`).
    Flag,
    /// 400 `prompt_injection`.
    Block,
}

/// An endpoint's compiled guardrails.
#[derive(Debug, Default)]
pub struct Guardrails {
    pub max_messages: Option<usize>,
    pub max_chars: Option<usize>,
    pub(super) deny: Vec<DenyRule>,
    pub(super) redact: Vec<Redactor>,
    pub injection: Injection,
    /// Apply deny and redact rules to non-streamed answers too.
    pub output: bool,
}

#[derive(Debug)]
pub(super) struct DenyRule {
    pub(super) id: String,
    pub(super) matcher: Matcher,
}

#[derive(Debug)]
pub(super) enum Matcher {
    /// ASCII case-insensitive literal, stored lowercased.
    Ascii(Vec<u8>),
    /// Non-ASCII literal, compared char by char in lowercase, stored lowercased.
    Unicode(Vec<char>),
    Regex(Pattern),
}

#[derive(Debug)]
pub(super) enum Redactor {
    Email,
    Phone,
    Card,
    Iban,
    Custom { id: String, regex: Pattern, placeholder: String },
}

impl Redactor {
    pub(super) fn id(&self) -> &str {
        match self {
            Redactor::Email => "email",
            Redactor::Phone => "phone",
            Redactor::Card => "card",
            Redactor::Iban => "iban",
            Redactor::Custom { id, .. } => id,
        }
    }

    pub(super) fn placeholder(&self) -> &str {
        match self {
            Redactor::Email => "[EMAIL]",
            Redactor::Phone => "[PHONE]",
            Redactor::Card => "[CARD]",
            Redactor::Iban => "[IBAN]",
            Redactor::Custom { placeholder, .. } => placeholder,
        }
    }

    /// Built-in detectors run first, most specific first, so their spans win overlaps.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Redactor::Iban => 0,
            Redactor::Card => 1,
            Redactor::Email => 2,
            Redactor::Phone => 3,
            Redactor::Custom { .. } => 4,
        }
    }
}

/// Checks an endpoint's `guardrails:` at `path` (e.g. `endpoints[0].guardrails`) and compiles
/// its patterns; an invalid regex is an issue at the pattern's path.
pub fn check(path: &str, value: &Value, issues: &mut Issues) -> Option<Guardrails> {
    let Value::Object(fields) = value else {
        issues.push(path, "must be an object");
        return None;
    };
    let before = issues.0.len();
    let mut g = Guardrails::default();
    for (key, value) in fields {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "max_messages" => g.max_messages = positive(&at, value, issues),
            "max_chars" => g.max_chars = positive(&at, value, issues),
            "output" => match value {
                Value::Bool(b) => g.output = *b,
                _ => issues.push(at, "must be true or false"),
            },
            "injection" => match value.as_str() {
                Some("off") => g.injection = Injection::Off,
                Some("flag") => g.injection = Injection::Flag,
                Some("block") => g.injection = Injection::Block,
                Some(other) => issues.unknown(at, "injection mode", other, INJECTION_MODES),
                None => issues.push(at, "must be one of: off, flag, block"),
            },
            "deny" => g.deny = check_deny(&at, value, issues),
            "redact" => g.redact = check_redact(&at, value, issues),
            _ => issues.unknown(at, "guardrails field", key, FIELDS),
        }
    }
    // Built-ins first, most specific first; custom rules keep their config order.
    let mut unordered: Vec<Option<Redactor>> = std::mem::take(&mut g.redact).into_iter().map(Some).collect();
    for rank in 0..=4 {
        for slot in unordered.iter_mut() {
            if let Some(r) = slot.take_if(|r| r.rank() == rank) {
                g.redact.push(r);
            }
        }
    }
    (issues.0.len() == before).then_some(g)
}

pub(super) fn positive(path: &str, value: &Value, issues: &mut Issues) -> Option<usize> {
    match value.as_u64().filter(|n| *n > 0) {
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => {
            issues.push(path, "must be a positive integer");
            None
        }
    }
}

/// A compiled regex plus what can be read off the pattern to run it less (regex-lite costs
/// ~550 instructions a byte): a literal every match contains (texts without it skip the
/// regex), an exact matcher when the pattern is a plain sequence of classes (a few
/// instructions a byte), else the windows of a text its matches can lie in (the regex runs
/// only there).
#[derive(Debug)]
pub(super) struct Pattern {
    pub(super) regex: Regex,
    /// Lowercase; matched ASCII case-insensitively (a superset of what the regex can match).
    pub(super) required: Option<Vec<u8>>,
    // Boxed to keep `Pattern` small in enums of small variants (the windows are 264 bytes).
    exact: Option<Box<ShiftAnd>>,
    windows: Option<Box<Windows>>,
}

impl Pattern {
    pub(super) fn may_match(&self, text: &str) -> bool {
        self.required.as_deref().is_none_or(|lit| contains_ascii_ci(text.as_bytes(), lit))
    }

    pub(super) fn is_match(&self, text: &str) -> bool {
        self.may_match(text)
            && match (&self.exact, &self.windows) {
                (Some(exact), _) => exact.is_match(text),
                (None, Some(windows)) => windows.spans(text).any(|(from, to)| self.regex.is_match(&text[from..to])),
                (None, None) => self.regex.is_match(text),
            }
    }

    /// Appends every non-empty match to `found`, in order, as byte ranges (regex-lite's
    /// `find_iter`).
    pub(super) fn find_into(&self, text: &str, found: &mut Vec<(usize, usize)>) {
        if !self.may_match(text) {
            return;
        }
        match &self.exact {
            Some(exact) => exact.find_into(text, found),
            None => found.extend(self.regex.find_iter(text).filter(|m| !m.is_empty()).map(|m| (m.start(), m.end()))),
        }
    }
}

pub(super) fn compile_regex(path: &str, pattern: &str, case_insensitive: bool, issues: &mut Issues) -> Option<Pattern> {
    let required = required_literal(pattern).map(|l| l.to_ascii_lowercase());
    let exact = ShiftAnd::of(pattern, case_insensitive).map(Box::new);
    // The windows serve only the regex, which an exact matcher replaces.
    let windows = if exact.is_none() { Windows::of(pattern, case_insensitive).map(Box::new) } else { None };
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| {
            let message = e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
            issues.push(path, format!("invalid regular expression: {message}"));
        })
        .ok()
        .map(|regex| Pattern { regex, required, exact, windows })
}

/// The longest literal (3+ bytes) that every match of `pattern` must contain, read off the
/// pattern's top level: runs of plain characters, cut at anything else (classes, groups,
/// escapes like `\d`, optional or repeated characters). `None` when there is no such run or
/// the pattern has a top-level `|` or verbose mode: then the regex always runs.
pub(super) fn required_literal(pattern: &str) -> Option<Vec<u8>> {
    let p = pattern.as_bytes();
    let mut i = 0;
    while let Some(at) = pattern[i..].find("(?") {
        let flags = &pattern[i + at + 2..];
        let end = flags.find([':', ')']).unwrap_or(flags.len());
        if flags[..end].contains('x') {
            return None;
        }
        i += at + 2;
    }
    let mut runs: Vec<Vec<u8>> = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'|' | b')' | b']' | b'*' | b'+' | b'?' | b'{' | b'}' => return None,
            b'(' => {
                runs.push(std::mem::take(&mut run));
                let mut depth = 0usize;
                loop {
                    match *p.get(i)? {
                        b'\\' => i += 1,
                        b'[' => {
                            i = skip_class(p, i)?;
                            continue;
                        }
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                i = skip_quantifier(p, i)?;
            }
            b'[' => {
                runs.push(std::mem::take(&mut run));
                i = skip_quantifier(p, skip_class(p, i)?)?;
            }
            b'.' | b'^' | b'$' => {
                runs.push(std::mem::take(&mut run));
                i = skip_quantifier(p, i + 1)?;
            }
            b'\\' => {
                let next = *p.get(i + 1)?;
                if next.is_ascii_punctuation() {
                    i = literal(p, i + 1, 1, &mut run, &mut runs)?;
                } else {
                    // A class, an assertion or a character escape: not a plain literal.
                    runs.push(std::mem::take(&mut run));
                    i += 2;
                    if p.get(i) == Some(&b'{') {
                        i += p[i..].iter().position(|&c| c == b'}')? + 1;
                    } else {
                        i += match next {
                            b'x' => 2,
                            b'u' => 4,
                            b'U' => 8,
                            b'0'..=b'9' => return None,
                            _ => 0,
                        };
                    }
                    i = skip_quantifier(p, i)?;
                }
            }
            _ => {
                let width = pattern[i..].chars().next()?.len_utf8();
                i = literal(p, i, width, &mut run, &mut runs)?;
            }
        }
    }
    runs.push(run);
    runs.into_iter().filter(|r| r.len() >= 3).max_by_key(Vec::len)
}

/// One literal character of `width` bytes at `i`: kept in the run unless a quantifier makes
/// it optional (`*`, `?`, `{`); `+` keeps it but ends the run. Returns the next index.
pub(super) fn literal(p: &[u8], i: usize, width: usize, run: &mut Vec<u8>, runs: &mut Vec<Vec<u8>>) -> Option<usize> {
    let unit = p.get(i..i + width)?;
    match p.get(i + width) {
        Some(b'*' | b'?' | b'{') => runs.push(std::mem::take(run)),
        Some(b'+') => {
            run.extend_from_slice(unit);
            runs.push(std::mem::take(run));
        }
        _ => run.extend_from_slice(unit),
    }
    skip_quantifier(p, i + width)
}

/// Skips a quantifier (`*`, `+`, `?`, `{m,n}`, each possibly lazy) at `i`.
pub(super) fn skip_quantifier(p: &[u8], mut i: usize) -> Option<usize> {
    match p.get(i) {
        Some(b'*' | b'+' | b'?') => i += 1,
        Some(b'{') => i += p[i..].iter().position(|&c| c == b'}')? + 1,
        _ => return Some(i),
    }
    if p.get(i) == Some(&b'?') {
        i += 1;
    }
    Some(i)
}

/// Skips a bracketed class starting at `i` (`[`), nested classes and escapes included.
pub(super) fn skip_class(p: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if p.get(j) == Some(&b'^') {
        j += 1;
    }
    if p.get(j) == Some(&b']') {
        j += 1;
    }
    loop {
        match *p.get(j)? {
            b'\\' => j += 2,
            b'[' => j = skip_class(p, j)?,
            b']' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

pub(super) fn rule_id(
    path: &str,
    rule: &Map<String, Value>,
    ids: &mut Vec<String>,
    issues: &mut Issues,
) -> Option<String> {
    match rule.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 64 => {
            if ids.contains(id) || BUILTIN.contains(&id.as_str()) {
                issues.push(format!("{path}.id"), format!("duplicate rule id \"{id}\""));
            }
            ids.push(id.clone());
            Some(id.clone())
        }
        Some(_) => {
            issues.push(format!("{path}.id"), "must be a non-empty string (at most 64 chars)");
            None
        }
        None => {
            issues.push(format!("{path}.id"), "is required (errors and logs name the rule by it)");
            None
        }
    }
}

pub(super) fn pattern<'a>(path: &str, rule: &'a Map<String, Value>, issues: &mut Issues) -> Option<&'a str> {
    match rule.get("pattern") {
        Some(Value::String(p)) if !p.is_empty() => Some(p),
        Some(_) => {
            issues.push(format!("{path}.pattern"), "must be a non-empty string");
            None
        }
        None => {
            issues.push(format!("{path}.pattern"), "is required");
            None
        }
    }
}

pub(super) fn check_deny(path: &str, value: &Value, issues: &mut Issues) -> Vec<DenyRule> {
    let Value::Array(rules) = value else {
        issues.push(path, "must be a list of {id, pattern, regex?}");
        return Vec::new();
    };
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Value::Object(rule) = rule else {
            issues.push(at, "must be an object {id, pattern, regex?}");
            continue;
        };
        for key in rule.keys() {
            if !["id", "pattern", "regex"].contains(&key.as_str()) {
                issues.unknown(format!("{at}.{key}"), "deny rule field", key, &["id", "pattern", "regex"]);
            }
        }
        let id = rule_id(&at, rule, &mut ids, issues);
        let pattern = pattern(&at, rule, issues);
        let regex = match rule.get("regex") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                issues.push(format!("{at}.regex"), "must be true or false");
                false
            }
        };
        let (Some(id), Some(pattern)) = (id, pattern) else { continue };
        let matcher = if regex {
            match compile_regex(&format!("{at}.pattern"), pattern, true, issues) {
                Some(r) => Matcher::Regex(r),
                None => continue,
            }
        } else if pattern.is_ascii() {
            Matcher::Ascii(pattern.to_ascii_lowercase().into_bytes())
        } else {
            Matcher::Unicode(pattern.chars().map(lower_char).collect())
        };
        out.push(DenyRule { id, matcher });
    }
    out
}

pub(super) fn check_redact(path: &str, value: &Value, issues: &mut Issues) -> Vec<Redactor> {
    let Value::Array(rules) = value else {
        issues.push(path, "must be a list of built-in detectors (email, phone, card, iban) or {id, pattern, label}");
        return Vec::new();
    };
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match rule {
            Value::String(name) => {
                let redactor = match name.as_str() {
                    "email" => Redactor::Email,
                    "phone" => Redactor::Phone,
                    "card" => Redactor::Card,
                    "iban" => Redactor::Iban,
                    _ => {
                        issues.unknown(at, "redaction detector", name, BUILTIN);
                        continue;
                    }
                };
                if out.iter().any(|r: &Redactor| r.id() == name) {
                    issues.push(at, format!("\"{name}\" is listed twice"));
                    continue;
                }
                out.push(redactor);
            }
            Value::Object(rule) => {
                for key in rule.keys() {
                    if !["id", "pattern", "label"].contains(&key.as_str()) {
                        issues.unknown(format!("{at}.{key}"), "redaction rule field", key, &["id", "pattern", "label"]);
                    }
                }
                let id = rule_id(&at, rule, &mut ids, issues);
                let regex =
                    pattern(&at, rule, issues).and_then(|p| compile_regex(&format!("{at}.pattern"), p, false, issues));
                let label = match rule.get("label") {
                    Some(Value::String(l))
                        if !l.is_empty()
                            && l.len() <= 32
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b' ')) =>
                    {
                        Some(l.as_str())
                    }
                    Some(_) => {
                        issues.push(format!("{at}.label"), "must be 1-32 letters, digits, '_', '-' or spaces");
                        None
                    }
                    None => {
                        issues.push(format!("{at}.label"), "is required (the text is replaced by [LABEL])");
                        None
                    }
                };
                if let (Some(id), Some(regex), Some(label)) = (id, regex, label) {
                    out.push(Redactor::Custom { id, regex, placeholder: format!("[{label}]") });
                }
            }
            _ => issues.push(at, "must be a detector name or {id, pattern, label}"),
        }
    }
    out
}

pub(super) fn contains_unicode_ci(hay: &str, needle: &[char]) -> bool {
    let Some(&first) = needle.first() else { return false };
    hay.char_indices().any(|(i, c)| {
        lower_char(c) == first && {
            let mut rest = hay[i..].chars();
            needle.iter().all(|n| rest.next().is_some_and(|c| lower_char(c) == *n))
        }
    })
}
