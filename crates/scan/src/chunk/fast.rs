//! [`ChunkFacts`] and [`ChunkParts`] read by hand, for the chunks a stream is made of.
//! serde_json only to skip over a value costs ~29 instructions a byte (1,351 for a 47-byte
//! chunk); reading its facts through the lenient visitors, 2,343; this reader, 1,507, most of
//! it per token (calls and checks), not per byte.
//!
//! It answers only when it is sure: JSON serde_json accepts, and what the slow reading (the
//! lenient visitors for facts, the `Value` tree for parts) gives. Anything outside the plain
//! subset it knows (an escaped key or id, a surrogate escape, an exponent, an integer over 18
//! digits, a float or negative number where a value is kept, nesting deeper than 64, a top
//! level that is not an object, any error at all) is `None`, and the caller reads the chunk the
//! slow way, which decides. So it never has to copy serde_json's error rules, only its grammar.

use std::borrow::Cow;

use serde_json::Value;

use super::{CallParts, ChoiceFacts, ChoiceList, ChoiceParts, ChunkFacts, ChunkParts, Usage};

/// The facts of `data`, or `None` when the slow reading must decide.
pub(super) fn facts(data: &str) -> Option<ChunkFacts<'_>> {
    facts_and_content(data).map(|(facts, _)| facts)
}

/// [`facts`], and where the chunk's one `delta.content` string is (from its opening quote to
/// past its closing one) when it has exactly one: the rest of the chunk decides the facts.
pub(super) fn facts_and_content(data: &str) -> Option<(ChunkFacts<'_>, Option<(usize, usize)>)> {
    let mut facts = ChunkFacts::default();
    let mut content = Content::None;
    whole_object(data, |r, key| {
        match key {
            b"id" => facts.id = r.plain_str()?,
            b"model" => facts.model = r.plain_str()?,
            b"object" => facts.object = r.plain_str()?,
            b"usage" => facts.usage = r.usage()?,
            b"choices" => {
                if facts.choices.is_some() {
                    content = Content::Several; // which `choices` counts is the reading's rule
                }
                facts.choices = r.choices(&mut content)?;
            }
            b"error" => {
                content = Content::Several; // an answer being assembled skips an error chunk's text
                r.skip()?;
            }
            _ => r.skip()?,
        }
        Some(())
    })?;
    let one_choice = facts.choices.as_ref().is_some_and(|c| c.len() == 1);
    let span = match content {
        Content::One(start, end) if one_choice => Some((start, end)),
        _ => None,
    };
    Some((facts, span))
}

/// The JSON string at `at` in `data`, unescaped, and where it ends (past its closing quote);
/// `None` when there is none the fast reading accepts.
pub(crate) fn text_at(data: &str, at: usize) -> Option<(Cow<'_, str>, usize)> {
    // A stream's texts are short and plain: a plain loop to the closing quote, no table or
    // iterator set-up (~100 instructions less for a two-letter text).
    let bytes = data.as_bytes();
    if bytes.get(at) == Some(&b'"') {
        let mut end = at + 1;
        while let Some(&b) = bytes.get(end) {
            match b {
                b'"' => return Some((Cow::Borrowed(data.get(at + 1..end)?), end + 1)),
                b'\\' | 0..0x20 => break, // escapes: read below
                _ => end += 1,
            }
        }
    }
    let mut r = Reader { s: bytes, text: data, at, depth: 0 };
    let text = r.text()??;
    Some((text, r.at))
}

/// The `delta.content` strings a chunk has: where the one is, if there is just one.
#[derive(Clone, Copy)]
enum Content {
    None,
    One(usize, usize),
    Several,
}

/// The parts of `data`, or `None` when the slow reading must decide.
pub(super) fn parts(data: &str) -> Option<ChunkParts<'_>> {
    let mut parts = ChunkParts::default();
    whole_object(data, |r, key| {
        match key {
            b"id" => parts.id = Some(r.value()?),
            b"model" => parts.model = Some(r.value()?),
            b"object" => parts.object = r.text()?,
            b"created" => parts.created = Some(r.value()?),
            b"usage" => parts.usage = Some(r.value()?),
            b"error" => parts.error = Some(r.value()?),
            b"choices" => parts.choices = r.list(Reader::choice_parts)?,
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(parts)
}

/// `data` as one object and nothing else but whitespace, `field` called at each value.
fn whole_object<'a>(data: &'a str, field: impl FnMut(&mut Reader<'a>, &'a [u8]) -> Option<()>) -> Option<()> {
    let mut r = Reader { s: data.as_bytes(), text: data, at: 0, depth: 0 };
    r.ws();
    if r.peek()? != b'{' {
        return None;
    }
    r.object(field)?;
    r.ws();
    (r.at == r.s.len()).then_some(())
}

/// Quote, backslash and the control bytes: where a plain run of string bytes ends.
const STOPS_A_STRING_RUN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Deeper than this, the slow reading decides (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 64;

struct Reader<'a> {
    s: &'a [u8],
    text: &'a str,
    at: usize,
    depth: u32,
}

/// A string field's text, when it is a string.
type Text<'a> = Option<Cow<'a, str>>;

/// A choice's `delta`: role, content, tool calls (when an array), and whether `tool_calls`
/// is there at all.
type DeltaParts<'a> = (Option<Value>, Text<'a>, Option<Vec<CallParts<'a>>>, bool);

/// A number: a non-negative integer that fits, or any other number.
enum Number {
    Unsigned(u64),
    Other,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.at += usize::from(hit);
        hit
    }

    /// `{ "key": value, ... }`, calling `field` at each value (the reader is at the value).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            let key = r.key()?;
            r.ws();
            if !r.eat(b':') {
                return None;
            }
            r.ws();
            field(r, key)
        })
    }

    /// `[ value, ... ]`, calling `element` at each value.
    fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.sequence(b'[', b']', element)
    }

    /// `open`, items separated by commas, `close`.
    fn sequence(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.enter(open)?;
        self.ws();
        if !self.eat(close) {
            loop {
                self.ws();
                item(self)?;
                self.ws();
                if self.eat(b',') {
                    continue;
                }
                if self.eat(close) {
                    break;
                }
                return None;
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn enter(&mut self, open: u8) -> Option<()> {
        if !self.eat(open) || self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        Some(())
    }

    /// An object's key, as bytes: the keys read are compared, never kept. A key with an escape
    /// (or a control byte) is left to the slow reading. Most of the strings in a chunk are keys:
    /// this skips the string's UTF-8 slicing and its wider return.
    fn key(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        // A plain loop: keys are a few bytes, too short for the table's iterator set-up.
        let mut end = start;
        loop {
            match *self.s.get(end)? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => end += 1,
            }
        }
        self.at = end + 1;
        self.s.get(start..end)
    }

    /// A string: its raw text (between the quotes), its length once unescaped, and whether it
    /// had escapes.
    fn string(&mut self) -> Option<(&'a str, usize, bool)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let (mut len, mut escaped) = (0usize, false);
        loop {
            // The plain run up to the next quote, backslash or control byte, in one tight loop.
            let run = self.s.get(self.at..)?.iter().position(|&b| STOPS_A_STRING_RUN[usize::from(b)])?;
            len += run;
            self.at += run;
            match self.s[self.at] {
                b'"' => {
                    // Both ends are ASCII quotes, so the slice is on character boundaries.
                    let raw = self.text.get(start..self.at)?;
                    self.at += 1;
                    return Some((raw, len, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *self.s.get(self.at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                            len += 1;
                            self.at += 2;
                        }
                        b'u' => {
                            let hex = std::str::from_utf8(self.s.get(self.at + 2..self.at + 6)?).ok()?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return None;
                            }
                            let code = u32::from_str_radix(hex, 16).ok()?;
                            // Surrogates (pairs or lone) are left to serde_json's rules.
                            len += char::from_u32(code)?.len_utf8();
                            self.at += 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control byte
            }
        }
    }

    /// A number in JSON's grammar, without an exponent and with at most 18 integer digits
    /// (so it is finite and, when an unsigned integer, fits a u64).
    fn number(&mut self) -> Option<Number> {
        let negative = self.eat(b'-');
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0')); // checked below
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || digits > 18 || (digits > 1 && self.s[start] == b'0') {
            return None;
        }
        let mut fraction = false;
        if self.eat(b'.') {
            let from = self.at;
            while let Some(b'0'..=b'9') = self.peek() {
                self.at += 1;
            }
            if self.at == from {
                return None;
            }
            fraction = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            return None;
        }
        Some(if negative || fraction { Number::Other } else { Number::Unsigned(value) })
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.s.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// Any value, skipped.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|r, _| r.skip()),
            b'[' => self.array(Self::skip),
            b'"' => self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    /// A string without escapes (`Some(Some)`), or a value of another type (`Some(None)`).
    fn plain_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? != b'"' {
            return self.skip().map(|()| None);
        }
        let (raw, _, escaped) = self.string()?;
        (!escaped).then_some(Some(Cow::Borrowed(raw)))
    }

    /// A string's unescaped length; 0 for a value of another type.
    fn str_len(&mut self) -> Option<usize> {
        if self.peek()? != b'"' {
            return self.skip().map(|()| 0);
        }
        self.string().map(|(_, len, _)| len)
    }

    /// A non-negative integer; 0 for any other value.
    fn count(&mut self) -> Option<u64> {
        if let Some(b'0'..=b'9') = self.peek() {
            return Some(match self.number()? {
                Number::Unsigned(v) => v,
                Number::Other => 0,
            });
        }
        self.skip().map(|()| 0)
    }

    /// Whether the value is anything but null.
    fn not_null(&mut self) -> Option<bool> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| false);
        }
        self.skip().map(|()| true)
    }

    /// A string, unescaped (borrowed when it has no escapes); `None` for any other value.
    fn text(&mut self) -> Option<Text<'a>> {
        if self.peek()? != b'"' {
            return self.skip().map(|()| None);
        }
        let (raw, len, escaped) = self.string()?;
        if !escaped {
            return Some(Some(Cow::Borrowed(raw)));
        }
        // `string` checked every escape; surrogates never get here.
        let mut out = String::with_capacity(len);
        let mut rest = raw;
        while let Some(at) = rest.find('\\') {
            out.push_str(&rest[..at]);
            let escape = rest.as_bytes()[at + 1];
            let skip = match escape {
                b'u' => {
                    out.push(char::from_u32(u32::from_str_radix(rest.get(at + 2..at + 6)?, 16).ok()?)?);
                    6
                }
                b'b' => (out.push('\u{8}'), 2).1,
                b'f' => (out.push('\u{c}'), 2).1,
                b'n' => (out.push('\n'), 2).1,
                b'r' => (out.push('\r'), 2).1,
                b't' => (out.push('\t'), 2).1,
                other => (out.push(char::from(other)), 2).1, // " \\ /
            };
            rest = &rest[at + skip..];
        }
        out.push_str(rest);
        Some(Some(Cow::Owned(out)))
    }

    /// Any value as a JSON tree: scalars built here, an object or array by serde_json from
    /// its text. Floats (whose spelling serde_json rounds) are left to the slow reading.
    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => self.text()?.map(|s| Value::String(s.into_owned())),
            b'0'..=b'9' => match self.number()? {
                Number::Unsigned(v) => Some(Value::from(v)),
                Number::Other => None,
            },
            b'n' => self.literal(b"null").map(|()| Value::Null),
            b't' => self.literal(b"true").map(|()| Value::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Value::Bool(false)),
            b'{' | b'[' => {
                let start = self.at;
                self.skip()?;
                serde_json::from_str(self.text.get(start..self.at)?).ok()
            }
            _ => None, // negative numbers too: i64 or float, left to serde_json
        }
    }

    /// An array of `T` (each element read by `element`), else absent.
    fn list<T>(&mut self, mut element: impl FnMut(&mut Self) -> Option<T>) -> Option<Option<Vec<T>>> {
        if self.peek()? != b'[' {
            return self.skip().map(|()| None);
        }
        let mut items = Vec::new();
        self.array(|r| {
            items.push(element(r)?);
            Some(())
        })?;
        Some(Some(items))
    }

    /// A choice's parts; an element that is not an object is a default one.
    fn choice_parts(&mut self) -> Option<ChoiceParts<'a>> {
        let mut choice = ChoiceParts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| choice);
        }
        // The last `delta` counts, as in the lenient reading.
        let mut delta = Default::default();
        self.object(|r, key| {
            match key {
                b"index" => choice.index = r.count()?,
                b"text" => choice.text = r.text()?,
                b"finish_reason" => choice.finish_reason = Some(r.value()?),
                b"delta" => delta = r.delta_parts()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        (choice.role, choice.content, choice.tool_calls, choice.has_tool_calls) = delta;
        Some(choice)
    }

    /// `delta`: role, content and tool calls; all absent when it is not an object.
    fn delta_parts(&mut self) -> Option<DeltaParts<'a>> {
        let mut delta = DeltaParts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| delta);
        }
        self.object(|r, key| {
            match key {
                b"role" => delta.0 = Some(r.value()?),
                b"content" => delta.1 = r.text()?,
                b"tool_calls" => (delta.2, delta.3) = (r.list(Reader::call_parts)?, true),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(delta)
    }

    /// A tool call's parts; an element that is not an object is a default one.
    fn call_parts(&mut self) -> Option<CallParts<'a>> {
        let mut call = CallParts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| call);
        }
        self.object(|r, key| {
            match key {
                b"index" => call.index = r.count()?,
                b"id" => call.id = Some(r.value()?),
                b"type" => call.kind = Some(r.value()?),
                b"function" => (call.name, call.arguments) = r.function_parts()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(call)
    }

    /// `function`'s name and arguments, when strings; both absent when it is not an object.
    fn function_parts(&mut self) -> Option<(Text<'a>, Text<'a>)> {
        let (mut name, mut arguments) = (None, None);
        if self.peek()? != b'{' {
            return self.skip().map(|()| (name, arguments));
        }
        self.object(|r, key| {
            match key {
                b"name" => name = r.text()?,
                b"arguments" => arguments = r.text()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some((name, arguments))
    }

    fn usage(&mut self) -> Option<Option<Usage>> {
        if self.peek()? != b'{' {
            return self.skip().map(|()| None);
        }
        let mut usage = Usage::default();
        self.object(|r, key| {
            match key {
                b"prompt_tokens" => usage.prompt_tokens = r.count()?,
                b"completion_tokens" => usage.completion_tokens = r.count()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(Some(usage))
    }

    fn choices(&mut self, content: &mut Content) -> Option<Option<ChoiceList>> {
        if self.peek()? != b'[' {
            return self.skip().map(|()| None);
        }
        let mut choices = ChoiceList::default();
        self.array(|r| {
            choices.push(r.choice(content)?);
            Some(())
        })?;
        Some(Some(choices))
    }

    /// A choice; an element that is not an object is a default one.
    fn choice(&mut self, content: &mut Content) -> Option<ChoiceFacts> {
        let mut choice = ChoiceFacts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| choice);
        }
        // The last `delta` counts, as in the lenient reading.
        let (mut content_bytes, mut tool_calls, mut deltas) = (0, None, 0);
        self.object(|r, key| {
            match key {
                b"index" => choice.index = r.count()?,
                b"text" => choice.text_bytes = r.str_len()?,
                b"finish_reason" => choice.finished = r.not_null()?,
                b"delta" => {
                    deltas += 1;
                    if deltas > 1 {
                        *content = Content::Several;
                    }
                    (content_bytes, tool_calls) = r.delta(content)?;
                }
                _ => r.skip()?,
            }
            Some(())
        })?;
        choice.content_bytes = content_bytes;
        choice.has_tool_calls = tool_calls.is_some();
        choice.tool_call_bytes = tool_calls.unwrap_or(0);
        Some(choice)
    }

    /// `delta`: its content's bytes and, when `tool_calls` is present (whatever its value),
    /// the bytes of the calls' names and arguments.
    fn delta(&mut self, strings: &mut Content) -> Option<(usize, Option<usize>)> {
        let (mut content, mut calls) = (0, None);
        if self.peek()? != b'{' {
            return self.skip().map(|()| (content, calls));
        }
        self.object(|r, key| {
            match key {
                b"content" => {
                    let start = r.at;
                    content = r.str_len()?;
                    if r.s[start] == b'"' {
                        *strings = match strings {
                            Content::None => Content::One(start, r.at),
                            _ => Content::Several,
                        };
                    }
                }
                b"tool_calls" => calls = Some(r.tool_calls()?),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some((content, calls))
    }

    fn tool_calls(&mut self) -> Option<usize> {
        let mut bytes = 0usize;
        if self.peek()? != b'[' {
            return self.skip().map(|()| bytes);
        }
        self.array(|r| {
            bytes = bytes.saturating_add(r.tool_call()?);
            Some(())
        })?;
        Some(bytes)
    }

    /// A call's function name and arguments, in bytes (the last `function` counts).
    fn tool_call(&mut self) -> Option<usize> {
        let mut bytes = 0;
        if self.peek()? != b'{' {
            return self.skip().map(|()| bytes);
        }
        self.object(|r, key| {
            match key {
                b"function" => bytes = r.function()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(bytes)
    }

    /// `function`'s name and arguments, in bytes.
    fn function(&mut self) -> Option<usize> {
        let len = |text: Text<'_>| text.map_or(0, |t| t.len());
        self.function_parts().map(|(name, arguments)| len(name) + len(arguments))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{lenient_facts, tree_parts};
    use super::{facts, parts};

    const KEYS: [&str; 23] = [
        "id",
        "model",
        "object",
        "usage",
        "choices",
        "index",
        "delta",
        "content",
        "text",
        "finish_reason",
        "tool_calls",
        "function",
        "name",
        "arguments",
        "prompt_tokens",
        "completion_tokens",
        "x",
        "i\\u0064",
        "created",
        "error",
        "role",
        "type",
        "id",
    ];
    const ATOMS: [&str; 24] = [
        "0",
        "7",
        "-1",
        "-0",
        "1.5",
        "1e3",
        "2E-2",
        "01",
        "1.",
        "-",
        "123456789012345678",
        "1234567890123456789",
        "18446744073709551616",
        "true",
        "false",
        "null",
        "nul",
        "\"hi\"",
        "\"\"",
        "\"a\\nb\\\"c\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"\\x\"",
        "\"tab\there\"",
    ];
    const WS: [&str; 5] = ["", "", " ", "\n\t", "\r "];

    /// `open`, `n` items (each written by `item`, whitespace around it) separated by commas,
    /// `close`.
    fn list<R: FnMut(usize) -> usize>(
        rng: &mut R,
        out: &mut String,
        (open, close): (char, char),
        n: usize,
        mut item: impl FnMut(&mut R, &mut String),
    ) {
        out.push(open);
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            out.push_str(WS[rng(WS.len())]);
            item(rng, out);
            out.push_str(WS[rng(WS.len())]);
        }
        out.push(close);
    }

    /// `"key": value`.
    fn member<R: FnMut(usize) -> usize>(rng: &mut R, key: &str, depth: usize, out: &mut String) {
        out.push_str(&format!("\"{key}\""));
        out.push_str(WS[rng(WS.len())]);
        out.push(':');
        out.push_str(WS[rng(WS.len())]);
        value(rng, depth, out);
    }

    fn value<R: FnMut(usize) -> usize>(rng: &mut R, depth: usize, out: &mut String) {
        match if depth > 5 { 2 } else { rng(4) } {
            0 => {
                let n = rng(4);
                list(rng, out, ('{', '}'), n, |rng, out| {
                    let key = KEYS[rng(KEYS.len())];
                    member(rng, key, depth + 1, out)
                });
            }
            1 => {
                let n = rng(3);
                list(rng, out, ('[', ']'), n, |rng, out| value(rng, depth + 1, out));
            }
            _ => out.push_str(ATOMS[rng(ATOMS.len())]),
        }
    }

    /// Wherever the fast reader answers, it answers what serde_json and the lenient visitors
    /// (for parts: the `Value` tree) do, over random chunk-shaped JSON (keys the gateway reads,
    /// values of every type, odd numbers and escapes) and mutations of it (cut, a byte changed);
    /// and it does answer for most well-formed chunks, so the slow path is the exception.
    #[test]
    fn fast_facts_agree_with_the_lenient_reading() {
        let mut rng = crate::test_rng(0x5eed_c4a7);
        let (mut answered, mut answered_parts, mut well_formed) = (0, 0, 0);
        for case in 0..60_000 {
            // A chunk: an object of the keys read at its top level.
            let mut data = String::new();
            let n = rng(5);
            list(&mut rng, &mut data, ('{', '}'), n, |rng, out| {
                let key = KEYS[[0, 1, 2, 3, 4, 18, 19][rng(7)]];
                member(rng, key, 1, out)
            });
            if case % 3 == 0 {
                let at = rng(data.len() + 1);
                let bytes = b"{}[],:\"\\ 0-9.eEntfu";
                match rng(3) {
                    0 => data.truncate(at),
                    1 if at < data.len() && data.is_char_boundary(at) && data.is_char_boundary(at + 1) => {
                        data.replace_range(at..at + 1, &(bytes[rng(bytes.len())] as char).to_string())
                    }
                    _ => data.insert(at.min(data.len()), bytes[rng(bytes.len())] as char),
                }
            }
            let slow = lenient_facts(&data);
            if let Some(fast) = facts(&data) {
                assert_eq!(Some(fast), slow, "{data}");
                answered += 1;
            }
            let slow_parts = tree_parts(&data);
            // A kept stream's facts come from its parts: the same as read directly. (The tree
            // refuses some text the facts' reading skips, e.g. a lone surrogate escape: then the
            // facts are read directly.)
            if let Some(slow_parts) = &slow_parts {
                assert_eq!(Some(slow_parts.facts()), slow, "{data}");
            }
            if let Some(fast) = parts(&data) {
                assert_eq!(Some(fast), slow_parts, "{data}");
                answered_parts += 1;
            }
            well_formed += usize::from(case % 3 != 0 && slow.is_some());
        }
        assert!(answered * 2 > well_formed, "the fast reader answered {answered} of {well_formed} well-formed chunks");
        assert!(answered_parts * 2 > well_formed, "parts: {answered_parts} of {well_formed} well-formed chunks");
        for chunk in [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"h\u00e9\n"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            r#"{"id":"c","object":"text_completion","choices":[{"text":"abc","index":0,"logprobs":null,"finish_reason":"length"}]}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
        ] {
            assert!(facts(chunk).is_some(), "{chunk}");
            assert_eq!(facts(chunk), lenient_facts(chunk), "{chunk}");
            assert!(parts(chunk).is_some(), "{chunk}");
            assert_eq!(parts(chunk), tree_parts(chunk), "{chunk}");
        }
    }
}
