//! JSON text read into a `serde_json::Value` by hand: the values serde_json's own reading
//! builds, the same texts refused. By hand because serde_json reads a tree through a visitor
//! call per value and a string byte by byte, and decodes a `\u` escape in ~200 instructions;
//! here a string's plain runs are passed over eight bytes at a time and an escape is decoded
//! in place (a request of 5,000 short messages: 12.1 -> 10.4 M instructions, most of them now
//! the allocations of the tree). Errors say what was wrong and where.

use serde_json::{Map, Number, Value};

use super::{plain_until, Bounds, Place, ReadError, MAX_DEPTH};

type Result<T> = std::result::Result<T, serde_json::Error>;

const TOO_DEEP: &str = "arrays and objects nested more than 64 deep";
const _: () = assert!(MAX_DEPTH == 64, "TOO_DEEP names the limit");
const IN_OBJECT: &str = "EOF while parsing an object";

/// The value `text` is: one JSON value with only whitespace around it, holding at most
/// `bounds` of the values they count.
pub(super) fn value(text: &str, bounds: Bounds) -> std::result::Result<Value, ReadError> {
    read(text, bounds, None)
}

/// [`value`], and where each field of a top-level object is in `text` ([`Place`], in text
/// order; none for another value).
pub(super) fn value_placed(text: &str, bounds: Bounds) -> std::result::Result<(Value, Vec<Place>), ReadError> {
    let mut places = Vec::new();
    read(text, bounds, Some(&mut places)).map(|value| (value, places))
}

fn read(text: &str, mut bounds: Bounds, places: Option<&mut Vec<Place>>) -> std::result::Result<Value, ReadError> {
    let mut reader = Reader { text, bytes: text.as_bytes(), at: 0, left: bounds, over: None, places };
    let read = reader.value(0).and_then(|value| {
        reader.skip_whitespace();
        match reader.at < reader.bytes.len() {
            true => Err(reader.fail("trailing characters", reader.at)),
            false => Ok(value),
        }
    });
    read.map_err(|e| match reader.over {
        Some(count) => ReadError::TooMany { what: count.what(), limit: *count.of(&mut bounds) },
        None => ReadError::Invalid(e),
    })
}

/// Which of the [`Bounds`] a value counts against.
#[derive(Clone, Copy)]
enum Count {
    Keys,
    Items,
    Values,
}

impl Count {
    /// The count of `bounds` this is.
    fn of(self, bounds: &mut Bounds) -> &mut usize {
        match self {
            Count::Keys => &mut bounds.keys,
            Count::Items => &mut bounds.items,
            Count::Values => &mut bounds.values,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Count::Keys => "JSON object keys",
            Count::Items => "non-empty JSON strings and arrays",
            Count::Values => "JSON values and keys",
        }
    }
}

/// What was wrong, at the line and column (from 1, in bytes) of byte `at`, as serde_json
/// says it; worked out once, here, not at each level the error goes up through.
fn fail_in(bytes: &[u8], what: &str, at: usize) -> serde_json::Error {
    let before = &bytes[..at.min(bytes.len())];
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let column = before.len() - memchr::memrchr(b'\n', before).map_or(0, |newline| newline + 1) + 1;
    serde::de::Error::custom(format_args!("{what} at line {line} column {column}"))
}

struct Reader<'t> {
    text: &'t str,
    bytes: &'t [u8],
    /// The next byte to read.
    at: usize,
    /// How many more object keys, non-empty strings (keys too) and arrays, and values and
    /// keys of any kind, may be read.
    left: Bounds,
    /// Which count ran out, when one did (the read then stops with an error).
    over: Option<Count>,
    /// Where the top-level object's fields are, when asked for.
    places: Option<&'t mut Vec<Place>>,
}

impl Reader<'_> {
    fn fail(&self, what: &str, at: usize) -> serde_json::Error {
        fail_in(self.bytes, what, at)
    }

    /// Counts one more against `count`; an error once more than `bounds` allows were read.
    fn count(&mut self, count: Count) -> Result<()> {
        self.count_n(count, 1)
    }

    /// Counts `n` more against `count`.
    fn count_n(&mut self, count: Count, n: usize) -> Result<()> {
        let left = count.of(&mut self.left);
        match left.checked_sub(n) {
            Some(n) => {
                *left = n;
                Ok(())
            }
            None => {
                self.over = Some(count);
                Err(self.fail(count.what(), self.at))
            }
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    /// A value nested `depth` levels inside arrays and objects.
    fn value(&mut self, depth: usize) -> Result<Value> {
        self.count(Count::Values)?;
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                self.string().map(Value::String)
            }
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.fail("expected value", self.at)),
            None => Err(self.fail("EOF while parsing a value", self.at)),
        }
    }

    fn word(&mut self, word: &str, value: Value) -> Result<Value> {
        if !self.bytes[self.at..].starts_with(word.as_bytes()) {
            return Err(self.fail("expected value", self.at));
        }
        self.at += word.len();
        Ok(value)
    }

    /// At `[` or `{`: the depth of what it holds, or `None` when `close` follows at once.
    fn open(&mut self, depth: usize, close: u8) -> Result<Option<usize>> {
        if depth == MAX_DEPTH {
            return Err(self.fail(TOO_DEEP, self.at));
        }
        self.at += 1;
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(None);
        }
        Ok(Some(depth + 1))
    }

    /// After an item: `true` past a `,` (another follows), `false` past `close` (the end);
    /// else the error `expected`, or `eof` at the end of the text.
    fn more(&mut self, close: u8, expected: &str, eof: &str) -> Result<bool> {
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                Ok(true)
            }
            Some(c) if c == close => {
                self.at += 1;
                Ok(false)
            }
            Some(_) => Err(self.fail(expected, self.at)),
            None => Err(self.fail(eof, self.at)),
        }
    }

    /// After whitespace, the byte `expected` (consumed); else the error `what`, or `eof` at
    /// the end of the text.
    fn expect(&mut self, expected: u8, what: &str, eof: &str) -> Result<()> {
        match self.peek() {
            Some(c) if c == expected => {
                self.at += 1;
                Ok(())
            }
            Some(_) => Err(self.fail(what, self.at)),
            None => Err(self.fail(eof, self.at)),
        }
    }

    /// At `[`.
    fn array(&mut self, depth: usize) -> Result<Value> {
        let mut items = Vec::new();
        let Some(inner) = self.open(depth, b']')? else { return Ok(Value::Array(items)) };
        self.count(Count::Items)?;
        loop {
            items.push(self.value(inner)?);
            if !self.more(b']', "expected `,` or `]`", "EOF while parsing a list")? {
                return Ok(Value::Array(items));
            }
        }
    }

    /// At `{`. A repeated key keeps its last value, as serde_json's map does.
    fn object(&mut self, depth: usize) -> Result<Value> {
        let mut entries = Map::new();
        let Some(inner) = self.open(depth, b'}')? else { return Ok(Value::Object(entries)) };
        loop {
            self.expect(b'"', "key must be a string", IN_OBJECT)?;
            let start = self.at - 1;
            self.count(Count::Keys)?;
            self.count(Count::Values)?;
            let key = self.string()?;
            let key_end = self.at;
            self.expect(b':', "expected `:`", IN_OBJECT)?;
            let value = self.value(inner)?;
            if let (0, Some(places)) = (depth, self.places.as_mut()) {
                places.push((start..self.at, key_end));
            }
            entries.insert(key, value);
            if !self.more(b'}', "expected `,` or `}`", IN_OBJECT)? {
                return Ok(Value::Object(entries));
            }
        }
    }

    /// After the opening quote: the string's text, escapes decoded.
    fn string(&mut self) -> Result<String> {
        let start = self.at;
        // `plain_until` stops only at ASCII bytes, so every index it gives is a char boundary.
        let mut plain = plain_until(self.bytes, start);
        if self.bytes.get(plain) == Some(&b'"') {
            self.at = plain + 1;
            if plain > start {
                self.count(Count::Items)?;
            }
            return Ok(self.text[start..plain].to_owned());
        }
        self.count(Count::Items)?;
        let mut out = String::with_capacity(plain - start + 16);
        out.push_str(&self.text[start..plain]);
        // An escape costs ~10 plain bytes to read and write again: every 8th counts as a value.
        let mut escapes = 0usize;
        loop {
            match self.bytes.get(plain) {
                Some(b'"') => {
                    self.at = plain + 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    escapes += 1;
                    if escapes.is_multiple_of(8) {
                        self.count(Count::Values)?;
                    }
                    plain = self.escape(plain + 1, &mut out)?;
                }
                Some(_) => {
                    return Err(self.fail("control character (\\u0000-\\u001F) found while parsing a string", plain))
                }
                None => return Err(self.fail("EOF while parsing a string", plain)),
            }
            // Escapes often come in runs (text of control characters).
            if self.bytes.get(plain) != Some(&b'\\') {
                let end = plain_until(self.bytes, plain);
                out.push_str(&self.text[plain..end]);
                plain = end;
            }
        }
    }

    /// After a backslash at `at - 1`: the escape decoded onto `out`; where the text goes on.
    fn escape(&self, at: usize, out: &mut String) -> Result<usize> {
        let decoded = match self.bytes.get(at) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(at + 1, out),
            Some(_) => return Err(self.fail("invalid escape", at)),
            None => return Err(self.fail("EOF while parsing a string", at)),
        };
        out.push(decoded);
        Ok(at + 1)
    }

    /// After `\u`: four hex digits, a surrogate pair as two escapes; a lone surrogate is
    /// refused, as serde_json's `Value` reading refuses it.
    fn unicode_escape(&self, at: usize, out: &mut String) -> Result<usize> {
        let unit = self.hex4(at)?;
        let (code, end) = match unit {
            0xD800..=0xDBFF => {
                let low = match self.bytes.get(at + 4..at + 6) {
                    Some(b"\\u") => self.hex4(at + 6)?,
                    Some(_) => return Err(self.fail("lone leading surrogate in hex escape", at + 4)),
                    None => return Err(self.fail("EOF while parsing a string", self.bytes.len())),
                };
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.fail("lone leading surrogate in hex escape", at + 6));
                }
                (0x1_0000 + ((u32::from(unit) - 0xD800) << 10 | (u32::from(low) - 0xDC00)), at + 10)
            }
            0xDC00..=0xDFFF => return Err(self.fail("lone trailing surrogate in hex escape", at)),
            _ => (u32::from(unit), at + 4),
        };
        // Every value left is a scalar value: surrogates are handled above.
        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
        Ok(end)
    }

    fn hex4(&self, at: usize) -> Result<u16> {
        let Some(digits) = self.bytes.get(at..at + 4) else {
            return Err(self.fail("EOF while parsing a string", self.bytes.len()));
        };
        let mut unit = 0u16;
        for (i, &digit) in digits.iter().enumerate() {
            let value = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => return Err(self.fail("invalid escape", at + i)),
            };
            unit = unit << 4 | u16::from(value);
        }
        Ok(unit)
    }

    /// At `-` or a digit. Integers that fit are `u64` (or `i64` when negative), as serde_json
    /// reads them (`-0` is the float `-0.0`); the rest `f64`, refused when out of its range.
    fn number(&mut self) -> Result<Value> {
        let start = self.at;
        let negative = self.bytes[start] == b'-';
        let mut at = start + usize::from(negative);
        let digits = |at: usize| self.bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let whole = match self.bytes.get(at) {
            Some(b'0') if self.bytes.get(at + 1).is_some_and(u8::is_ascii_digit) => {
                return Err(self.fail("invalid number", at + 1))
            }
            Some(b'0'..=b'9') => digits(at),
            Some(_) => return Err(self.fail("invalid number", at)),
            None => return Err(self.fail("EOF while parsing a value", at)),
        };
        at += whole;
        let int_end = at;
        if self.bytes.get(at) == Some(&b'.') {
            at += 1;
            match digits(at) {
                0 => return Err(self.fail("invalid number", at)),
                n => at += n,
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(at) {
                at += 1;
            }
            match digits(at) {
                0 => return Err(self.fail("invalid number", at)),
                n => at += n,
            }
        }
        self.at = at;
        if at == int_end {
            let magnitude = self.bytes[int_end - whole..int_end]
                .iter()
                .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')));
            match (negative, magnitude) {
                (false, Some(n)) => return Ok(Value::Number(n.into())),
                (true, Some(n)) if n != 0 && n <= 1 << 63 => {
                    return Ok(Value::Number((n as i64).wrapping_neg().into()))
                }
                _ => {}
            }
        }
        // Reading and writing a float costs more the longer its text (~110 ns for 30 digits,
        // against ~35 for an integer): each further 8 bytes count as one more value.
        self.count_n(Count::Values, (at - start) / 8)?;
        // Rust's reading is correctly rounded; serde_json's default one can be a few units in
        // the last place off (by one for 123456789012345678901, past u64).
        let float: f64 = self.text[start..at].parse().map_err(|_| self.fail("invalid number", start))?;
        Number::from_f64(float).map(Value::Number).ok_or_else(|| self.fail("number out of range", start))
    }
}
