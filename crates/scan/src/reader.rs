//! JSON read by hand, for the stream events read per event. serde_json only to skip over a
//! value costs ~29 instructions a byte (1,351 for a 47-byte chunk); reading a chunk's facts
//! through the lenient visitors, 2,343; this reader, 1,507, most of it per token (calls and
//! checks), not per byte.
//!
//! Its readings answer only when they are sure: JSON serde_json accepts, and what the slow
//! reading (the lenient visitors, the `Value` tree) gives. Anything outside the plain subset it
//! knows (an escaped key, a surrogate escape, an exponent, an integer over 18 digits, a float or
//! negative number where a value is kept, nesting deeper than 64, a top level that is not an
//! object, any error at all) is `None`, and the caller reads the event the slow way, which
//! decides. So it never has to copy serde_json's error rules, only its grammar.

use std::borrow::Cow;

use serde_json::Value;

use crate::json::{plain_until, ESCAPE};
use crate::like_last::Varying;

/// The JSON string at `at` in `data`, unescaped, and where it ends (past its closing quote);
/// `None` when there is none the fast reading accepts.
pub(crate) fn text_at(data: &str, at: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = data.as_bytes();
    if bytes.get(at) == Some(&b'"') {
        // A stream's texts are mostly a few bytes: the first 16 are scanned one by one, without
        // the eight-byte scan's set-up (~25 instructions an event), the rest eight at a time.
        let mut end = at + 1;
        let first = bytes.len().min(end + 16);
        while end < first && !stops_a_string_run(bytes[end]) {
            end += 1;
        }
        if end == first {
            end = run_end(bytes, end)?;
        }
        if bytes[end] == b'"' {
            return Some((Cow::Borrowed(data.get(at + 1..end)?), end + 1));
        }
        // escapes: read below
    }
    let mut r = Reader { s: bytes, text: data, at, depth: 0, skipped_string: None };
    let text = r.text()??;
    Some((text, r.at))
}

/// `data` as one object and nothing else but whitespace, `field` called at each value; the
/// reader at its end.
pub(crate) fn whole_object<'a>(
    data: &'a str,
    field: impl FnMut(&mut Reader<'a>, &'a [u8]) -> Option<()>,
) -> Option<Reader<'a>> {
    let mut r = Reader { s: data.as_bytes(), text: data, at: 0, depth: 0, skipped_string: None };
    r.ws();
    if r.peek()? != b'{' {
        return None;
    }
    r.object(field)?;
    r.ws();
    (r.at == r.s.len()).then_some(r)
}

/// Where the plain run of string bytes from `at` ends: at the first quote, backslash or
/// control byte (`None`: none). The JSON writer's and reader's scan ([`plain_until`]: eight
/// bytes at a time, sixteen on long text), where a byte loop (or a table's iterator, with its
/// set-up) cost ~9 instructions a byte.
#[inline]
fn run_end(s: &[u8], at: usize) -> Option<usize> {
    Some(plain_until(s, at)).filter(|&end| end < s.len())
}

/// Quote, backslash and the control bytes: where a plain run of string bytes ends.
fn stops_a_string_run(b: u8) -> bool {
    ESCAPE[usize::from(b)] != 0
}

/// Deeper than this, the slow reading decides (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 64;

pub(crate) struct Reader<'a> {
    pub(crate) s: &'a [u8],
    pub(crate) text: &'a str,
    pub(crate) at: usize,
    depth: u32,
    /// Where the last string value skipped is (from its opening quote to past its closing one).
    pub(crate) skipped_string: Option<Varying>,
}

/// A string field's text, when it is a string.
pub(crate) type Text<'a> = Option<Cow<'a, str>>;

/// A number: a non-negative integer that fits, or any other number.
pub(crate) enum Number {
    Unsigned(u64),
    Other,
}

impl<'a> Reader<'a> {
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.at += usize::from(hit);
        hit
    }

    /// `{ "key": value, ... }`, calling `field` at each value (the reader is at the value).
    pub(crate) fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            let key = r.entry_key()?;
            field(r, key)
        })
    }

    /// `[ value, ... ]`, calling `element` at each value.
    pub(crate) fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
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
    #[inline(always)]
    fn key(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        let end = run_end(self.s, start)?;
        if self.s[end] != b'"' {
            return None;
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
            let run = run_end(self.s, self.at)? - self.at;
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

    /// Any value, skipped: one loop over its tokens, the open containers kept as bits (a call
    /// per value and per entry, through `object`'s closures, cost ~700 instructions for a
    /// 40-byte event).
    pub(crate) fn skip(&mut self) -> Option<()> {
        // Bit i: whether the container i levels up from the innermost is an object.
        let (mut objects, mut open) = (0u64, 0u32);
        loop {
            // At a value.
            match self.peek()? {
                b'"' => {
                    let start = self.at;
                    // A plain string here, one with escapes by `string`, which checks them.
                    match run_end(self.s, start + 1)? {
                        end if self.s[end] == b'"' => self.at = end + 1,
                        _ => _ = self.string()?,
                    }
                    self.skipped_string = Some(Varying { start, end: self.at });
                }
                open_byte @ (b'{' | b'[') => {
                    if self.depth >= MAX_DEPTH {
                        return None;
                    }
                    let object = open_byte == b'{';
                    (self.at, self.depth, open, objects) =
                        (self.at + 1, self.depth + 1, open + 1, objects << 1 | u64::from(object));
                    self.ws();
                    if !self.eat(if object { b'}' } else { b']' }) {
                        if object {
                            self.entry_key()?;
                        }
                        continue;
                    }
                    (self.depth, open, objects) = (self.depth - 1, open - 1, objects >> 1);
                }
                b'-' | b'0'..=b'9' => _ = self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return None,
            }
            // Past a value: the next one after a comma, or the ends of the containers it closes.
            loop {
                if open == 0 {
                    return Some(());
                }
                self.ws();
                let object = objects & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.ws();
                        if object {
                            self.entry_key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                (self.at, self.depth, open, objects) = (self.at + 1, self.depth - 1, open - 1, objects >> 1);
            }
        }
    }

    /// An entry's key and colon, up to its value.
    #[inline(always)]
    fn entry_key(&mut self) -> Option<&'a [u8]> {
        let key = self.key()?;
        self.ws();
        if !self.eat(b':') {
            return None;
        }
        self.ws();
        Some(key)
    }

    /// A string without escapes (`Some(Some)`), or a value of another type (`Some(None)`).
    pub(crate) fn plain_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? != b'"' {
            return self.skip().map(|()| None);
        }
        let (raw, _, escaped) = self.string()?;
        (!escaped).then_some(Some(Cow::Borrowed(raw)))
    }

    /// A string's unescaped length; 0 for a value of another type.
    pub(crate) fn str_len(&mut self) -> Option<usize> {
        if self.peek()? != b'"' {
            return self.skip().map(|()| 0);
        }
        self.string().map(|(_, len, _)| len)
    }

    /// A non-negative integer; 0 for any other value.
    pub(crate) fn count(&mut self) -> Option<u64> {
        self.unsigned().map(|n| n.unwrap_or(0))
    }

    /// A non-negative integer, else absent.
    pub(crate) fn unsigned(&mut self) -> Option<Option<u64>> {
        if let Some(b'0'..=b'9') = self.peek() {
            return Some(match self.number()? {
                Number::Unsigned(v) => Some(v),
                Number::Other => None,
            });
        }
        self.skip().map(|()| None)
    }

    /// Whether the value is anything but null.
    pub(crate) fn not_null(&mut self) -> Option<bool> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| false);
        }
        self.skip().map(|()| true)
    }

    /// A string, unescaped (borrowed when it has no escapes); `None` for any other value.
    pub(crate) fn text(&mut self) -> Option<Text<'a>> {
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
    pub(crate) fn value(&mut self) -> Option<Value> {
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
    pub(crate) fn list<T>(&mut self, mut element: impl FnMut(&mut Self) -> Option<T>) -> Option<Option<Vec<T>>> {
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
}

/// Random JSON for the hand readings' differential tests: objects of chosen keys, values of
/// every type (odd numbers and escapes among them), whitespace anywhere, and mutations of it.
#[cfg(test)]
pub(crate) mod random_json {
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
    /// Deep enough for a Gemini event's parts (an object in an array in an object in an object
    /// in an array in the event).
    const MAX_NESTING: usize = 6;

    /// An object of up to 4 entries, each keyed by one of `top`, nested objects keyed by `keys`.
    pub(crate) fn object<R: FnMut(usize) -> usize>(rng: &mut R, keys: &[&str], top: &[&str]) -> String {
        let mut data = String::new();
        let n = rng(5);
        list(rng, &mut data, ('{', '}'), n, |rng, out| {
            let key = top[rng(top.len())];
            member(rng, keys, key, 1, out)
        });
        data
    }

    /// `data` cut, or with a byte of JSON's syntax put in place of one or added.
    pub(crate) fn mutate<R: FnMut(usize) -> usize>(rng: &mut R, data: &mut String) {
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
    fn member<R: FnMut(usize) -> usize>(rng: &mut R, keys: &[&str], key: &str, depth: usize, out: &mut String) {
        out.push_str(&format!("\"{key}\""));
        out.push_str(WS[rng(WS.len())]);
        out.push(':');
        out.push_str(WS[rng(WS.len())]);
        value(rng, keys, depth, out);
    }

    fn value<R: FnMut(usize) -> usize>(rng: &mut R, keys: &[&str], depth: usize, out: &mut String) {
        match if depth > MAX_NESTING { 2 } else { rng(4) } {
            0 => {
                let n = rng(4);
                list(rng, out, ('{', '}'), n, |rng, out| {
                    let key = keys[rng(keys.len())];
                    member(rng, keys, key, depth + 1, out)
                });
            }
            1 => {
                let n = rng(3);
                list(rng, out, ('[', ']'), n, |rng, out| value(rng, keys, depth + 1, out));
            }
            _ => out.push_str(ATOMS[rng(ATOMS.len())]),
        }
    }
}
