//! JSON in and out, compiled for speed (generic code is compiled in the crate that
//! instantiates it; in the gateway, built for size, or through `Display`'s formatter, writing
//! a request of 5,000 short messages cost ~58 instructions a byte): values written straight
//! into an output buffer, the bytes `serde_json::to_vec` writes; documents read into `Value`s
//! (or only the entries wanted) with a depth limit.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

mod read;
mod split;

pub use split::{split_array_entry, Item};

/// Appends `s` as a JSON string, quoted and escaped as serde_json writes it: `"`, `\\` and
/// the control characters escaped (`\b \f \n \r \t` short, the others `\u00xx`), the rest
/// as it is. By hand because serde_json's escaper looks up every byte (~4 instructions a
/// byte); here runs of eight plain bytes are passed over at once.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut done = 0;
    let mut i = plain_until(bytes, 0);
    while let Some(&byte) = bytes.get(i) {
        if done < i {
            out.extend_from_slice(&bytes[done..i]);
        }
        let short = ESCAPE[usize::from(byte)];
        if short == b'u' {
            let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]);
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
        done = i + 1;
        // Escapes often come in runs (text of control characters).
        let escaped_next = bytes.get(done).is_some_and(|&b| ESCAPE[usize::from(b)] != 0);
        i = if escaped_next { done } else { plain_until(bytes, done) };
    }
    out.extend_from_slice(&bytes[done..]);
    out.push(b'"');
}

/// Appends an object's field name with what comes before and after it: `{"name":` for the
/// first field (`first`), else `,"name":`, the name escaped as [`write_str`] does. Names are
/// short and almost never need an escape: such a name is checked byte by byte and copied
/// whole, without `write_str`'s eight-byte scan, whose set-up cost ~110 instructions for a
/// 10-byte name (a log line has ~25 names, a usage shard 8, a request body dozens).
pub fn write_key(out: &mut Vec<u8>, first: bool, name: &str) {
    let open = if first { b'{' } else { b',' };
    let bytes = name.as_bytes();
    if bytes.iter().any(|&b| ESCAPE[usize::from(b)] != 0) {
        out.push(open);
        write_str(out, name);
        out.push(b':');
        return;
    }
    out.reserve(bytes.len() + 4);
    out.extend_from_slice(&[open, b'"']);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\":");
}

/// The first byte from `from` on that needs an escape (the length: none does): eight bytes
/// at a time, sixteen once 32 were plain (long text, [`plain_pairs`]); in the word that has
/// one, from the lowest byte its mask marks (never after the first that needs an escape)
/// byte by byte, as in the last few bytes.
pub(crate) fn plain_until(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mask = escapes(word(chunk));
        if mask != 0 {
            i += (mask.trailing_zeros() / 8) as usize;
            break;
        }
        i += 8;
        if i - from == 32 {
            i = plain_pairs(bytes, i);
        }
    }
    while bytes.get(i).is_some_and(|&b| ESCAPE[usize::from(b)] == 0) {
        i += 1;
    }
    i
}

/// Where, from `from` on, sixteen bytes in a row are no longer all plain (or fewer are left).
/// Apart from [`plain_until`], whose loop stays small for the short strings most are.
#[inline(never)]
fn plain_pairs(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    for pair in bytes[from..].chunks_exact(16) {
        if escapes(word(&pair[..8])) | escapes(word(&pair[8..])) != 0 {
            break;
        }
        i += 16;
    }
    i
}

fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().unwrap_or_default())
}

/// Not zero when a byte of `word` is below 0x20, `"` or `\\` (the bit tricks are exact about
/// whether there is one, not about which).
fn escapes(word: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    let equal = |b: u8| {
        let x = word ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x
    };
    (word.wrapping_sub(ONES * 0x20) | equal(b'"') | equal(b'\\')) & !word & (ONES << 7)
}

/// What follows the backslash in each byte's escape (`u`: `\u00xx`); 0: written as it is.
pub(crate) static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `n` in decimal (serde_json's integer writer, without `format!`'s machinery).
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &n);
}

/// Appends `value` as JSON, the bytes of `serde_json::to_vec`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Writing into a Vec cannot fail.
        Value::Number(n) => drop(serde_json::to_writer(&mut *out, n)),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(entries) if entries.is_empty() => out.extend_from_slice(b"{}"),
        Value::Object(entries) => {
            for (i, (key, item)) in entries.iter().enumerate() {
                write_key(out, i == 0, key);
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// How deep JSON read here may nest: arrays and objects inside one another, 64 levels.
///
/// Why a limit below serde_json's own (128): when a parse fails, serde_json works out the
/// error's line and column at every level of nesting it unwinds through, each time a pass over
/// the text before the error, so a failure costs (depth × offset): a 1 MB body failing 127
/// levels deep took ~21 M instructions (2.5 ms). Here a failure costs at most 64 passes; real
/// bodies nest ~10 deep (tool schemas ~25).
pub const MAX_DEPTH: usize = 64;

/// JSON text as a `Value`, as `text.parse::<Value>()` reads it (read by hand, [`read`]), but
/// refused when nested more than [`MAX_DEPTH`] levels deep, with floats correctly rounded
/// (serde_json's default reading can be a few units in the last place off), and errors in
/// serde_json's form (what, at line L column C) but with words of their own.
pub fn parse_value(text: &str) -> serde_json::Result<Value> {
    read::value(text, Bounds::NONE).map_err(|e| match e {
        ReadError::Invalid(e) => e,
        too_many => serde::de::Error::custom(too_many),
    })
}

/// As [`parse_value`], refused once `text` holds more values that allocate than `bounds`.
pub fn parse_value_within(text: &str, bounds: Bounds) -> Result<Value, ReadError> {
    read::value(text, bounds)
}

/// Where a field of a top-level object is in its text: from its key's opening quote to past
/// its value, and where the key ends (past its closing quote). The text from there to the
/// field's end is `:` and the value, with any whitespace the text has around the `:`.
pub type Place = (std::ops::Range<usize>, usize);

/// As [`parse_value_within`], and where each field of a top-level object is in `text`, in
/// text order (a repeated key is placed each time; the `Value` keeps its last).
pub fn parse_value_placed_within(text: &str, bounds: Bounds) -> Result<(Value, Vec<Place>), ReadError> {
    read::value_placed(text, bounds)
}

/// How many values a text may hold, by what each costs to read, keep, write and free: an
/// object key is an entry sorted into its object's map (~150-350 ns each through the
/// gateway, most of it comparing keys); a non-empty string or array a buffer of its own; empty
/// ones, numbers, booleans and null allocate nothing, but each is still a 32-byte slot read,
/// written and dropped (1 MiB of `1,` is 524,287 of them). A non-empty object (a 628-byte
/// node however few its entries) has at least one key, so `keys` bounds them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Object keys (entries), in all objects together.
    pub keys: usize,
    /// Non-empty strings (object keys too) and arrays.
    pub items: usize,
    /// Every value, and every object key.
    pub values: usize,
}

impl Bounds {
    pub const NONE: Bounds = Bounds { keys: usize::MAX, items: usize::MAX, values: usize::MAX };
}

/// Why a text was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Not JSON (or nested too deep): serde_json's kind of error, with where.
    Invalid(serde_json::Error),
    /// It holds more `what` ("JSON object keys", ...) than `limit`.
    TooMany { what: &'static str, limit: usize },
}

/// "more than 4096 JSON object keys", or serde_json's error.
impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ReadError::Invalid(e) => e.fmt(f),
            ReadError::TooMany { what, limit } => write!(f, "more than {limit} {what}"),
        }
    }
}

/// serde_json's own `Value` reading with a depth count (for the entries [`object_keeping`]
/// keeps): the values it builds are the same.
#[derive(Clone, Copy)]
struct Tree {
    depth: usize,
}

impl Tree {
    fn nested<E: serde::de::Error>(self) -> Result<Tree, E> {
        if self.depth == MAX_DEPTH {
            return Err(E::custom(format_args!("arrays and objects nested more than {MAX_DEPTH} deep")));
        }
        Ok(Tree { depth: self.depth + 1 })
    }
}

impl<'de> DeserializeSeed<'de> for Tree {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tree {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut entries = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.insert(key, map.next_value_seed(inner)?);
        }
        Ok(Value::Object(entries))
    }
}

/// The JSON object in `text` with only the entries named in `fields` kept (a repeated one as its last),
/// the other entries skipped without building a tree; `Ok(None)`: JSON, but not an object.
/// Skipping checks the text as serde_json's `IgnoredAny` does: a lone surrogate escape or a
/// number past `f64` pass (a tree refuses them), the rest as for a tree. Kept entries nest
/// at most [`MAX_DEPTH`] deep, as in [`parse_value`]; skipped ones are skipped without recursion.
pub fn object_keeping(text: &str, fields: &[&str]) -> serde_json::Result<Option<Map<String, Value>>> {
    struct Fields<'f>(&'f [&'f str]);
    impl<'de> Visitor<'de> for Fields<'_> {
        type Value = Option<Map<String, Value>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let mut kept = Map::new();
            crate::lenient::entries(map, |key, map| {
                if self.0.contains(&key) {
                    kept.insert(key.to_owned(), map.next_value_seed(Tree { depth: 1 })?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(())
            })?;
            Ok(Some(kept))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let kept = de.deserialize_any(Fields(fields))?;
    de.end()?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        let every_ascii: String = (0..128u8).map(char::from).collect();
        let long = format!("{}\"{}\u{7f}{}\n", "a".repeat(17), "é".repeat(9), "b".repeat(8));
        for s in
            ["", "plain", "quote \" backslash \\ newline \n tab \t", "\u{1}\u{1f}", "é 日本 🚀", &every_ascii, &long]
        {
            let mut out = b"x".to_vec();
            super::write_str(&mut out, s);
            assert_eq!(&out[1..], serde_json::to_string(s).unwrap().as_bytes(), "{s:?}");
        }
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            super::write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    /// The field reads as the tree has it, whatever the body's shape; a body that is not JSON
    /// is refused as the tree refuses it, one that is not an object reads as none.
    #[test]
    fn an_object_keeping_a_field_is_the_tree_without_the_others() {
        for text in [
            r#"{"id":"x","usage":{"prompt_tokens":3},"choices":[{"message":{"content":"a\"b"}}]}"#,
            r#"{"usage":1,"usage":{"completion_tokens":2}}"#,
            r#"{"us\u0061ge":{"prompt_tokens":4}}"#,
            r#"{"choices":[],"usage":null}"#,
            r#" {} "#,
        ]
        .into_iter()
        .chain(crate::lenient::ODD_EVENTS)
        {
            let tree: Value = text.parse().unwrap();
            let fields = ["usage", "choices", "data"];
            let kept =
                tree.as_object().map(|o| o.clone().into_iter().filter(|(k, _)| fields.contains(&&**k)).collect());
            assert_eq!(super::object_keeping(text, &fields).unwrap(), kept, "{text}");
        }
        for text in ["", "{", r#"{"usage":}"#, r#"{"a":1} x"#, "[1,]", r#"{"a":"\x"}"#, "{\"a\":\"\u{1}\"}"] {
            // What is wrong, not always where: skipping a string may stop a byte sooner.
            let what = |e: serde_json::Error| e.to_string().split(" at line").next().map(str::to_owned);
            let tree = text.parse::<Value>().unwrap_err();
            assert_eq!(what(super::object_keeping(text, &["usage"]).unwrap_err()), what(tree), "{text}");
        }
    }

    /// A field name is written as `write_str` writes it, after `{` or `,` and before `:`.
    #[test]
    fn keys_are_written_as_strings_are() {
        for name in
            ["", "ts", "request_id", "quote\"d", "back\\slash", "nl\n", "\u{1f}", "\u{7f}é日🚀", &"k".repeat(40)]
        {
            for first in [true, false] {
                let mut out = b"x".to_vec();
                super::write_key(&mut out, first, name);
                let mut expected = b"x".to_vec();
                expected.push(if first { b'{' } else { b',' });
                super::write_str(&mut expected, name);
                expected.push(b':');
                assert_eq!(out, expected, "{name:?}");
            }
        }
    }

    /// Strings are written as serde_json writes them wherever the bytes to escape fall
    /// against the eight-byte runs: random strings of plain runs, every control character,
    /// quotes, backslashes, DEL and non-ASCII.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut next = crate::test_rng(0x1234_5678_9abc_def1);
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..next(12) {
                match next(5) {
                    0 => s.push(char::from(next(0x20) as u8)),
                    1 => s.push(['"', '\\', '\u{7f}', 'é', '日', '🚀', ' '][next(7)]),
                    _ => s.extend(std::iter::repeat_n('a', next(20))),
                }
            }
            let mut out = b"x".to_vec();
            super::write_str(&mut out, &s);
            assert_eq!(&out[1..], serde_json::to_string(&s).unwrap().as_bytes(), "{s:?}");
        }
    }

    /// `parse_value` reads what serde_json's own `Value` reading reads, and refuses what it
    /// refuses, and `write_value` writes what it writes: random documents of every kind of
    /// value (numbers at the edges of each type, escapes, repeated keys, nesting), then each
    /// cut short or with a byte changed.
    #[test]
    fn values_read_as_serde_json_reads_them() {
        let mut next = crate::test_rng(0x2545_f491_4f6c_dd1d);
        fn document(next: &mut dyn FnMut(usize) -> usize, depth: u32, out: &mut String) {
            const ATOMS: [&str; 16] = [
                "0",
                "-0",
                "-0.0",
                "1e308",
                "1e-400",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "-9223372036854775809",
                "2.5E+3",
                "true",
                "false",
                "null",
                r#""a\"b\\c\u00e9\ud83d\ude00""#,
                r#""""#,
                r#""é 日本""#,
            ];
            match if depth > 4 { 0 } else { next(4) } {
                0 | 1 => out.push_str(ATOMS[next(16)]),
                2 => {
                    out.push('[');
                    for i in 0..next(4) {
                        out.push_str(if i > 0 { "," } else { "" });
                        document(next, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    for i in 0..next(4) {
                        out.push_str(if i > 0 { "," } else { "" });
                        out.push_str(["\"k\":", "\"k\\u0031\":", "\"k1\":", " \"\" : "][next(4)]);
                        document(next, depth + 1, out);
                    }
                    out.push('}');
                }
            }
        }
        let same = |text: &str| match (super::parse_value(text), text.parse::<Value>()) {
            (Ok(read), Ok(tree)) => {
                assert_eq!(read, tree, "{text}");
                let mut written = Vec::new();
                super::write_value(&mut written, &read);
                assert_eq!(written, serde_json::to_vec(&tree).unwrap(), "{text}");
            }
            // Said in other words, at the place where the text went wrong.
            (Err(read), Err(_)) => assert!(at_byte(&read.to_string(), text) <= text.len(), "{text}: {read}"),
            (read, tree) => panic!("{text}: {read:?} vs {tree:?}"),
        };
        for _ in 0..5_000 {
            let mut text = String::new();
            document(&mut next, 0, &mut text);
            same(&text);
            let cut = next(text.len() + 1);
            if text.is_char_boundary(cut) {
                same(&text[..cut]);
                let changed = format!("{}{}{}", &text[..cut], ["x", ",", "]", "}", "\"", ":"][next(6)], &text[cut..]);
                same(&changed);
            }
        }
    }

    /// The byte of `text` an error message names (it ends "at line L column C", from 1).
    fn at_byte(message: &str, text: &str) -> usize {
        let number = |s: &str| s.parse::<usize>().unwrap_or_else(|_| panic!("{message}"));
        let (rest, column) = message.rsplit_once(" column ").unwrap_or_else(|| panic!("{message}"));
        let (_, line) = rest.rsplit_once(" at line ").unwrap_or_else(|| panic!("{message}"));
        let line_start: usize = text.split('\n').take(number(line) - 1).map(|l| l.len() + 1).sum();
        line_start + number(column) - 1
    }

    /// The edges of the grammar read (or are refused) as serde_json reads them: numbers at
    /// each type's limits and malformed, words cut short, stray commas, surrogates paired and
    /// lone, bad escapes, control characters, escapes on both sides of eight-byte runs; and
    /// random floats, written shortest and in exponent form, read to the same `f64`.
    #[test]
    fn odd_texts_read_as_serde_json_reads_them() {
        let texts = [
            "01",
            "-",
            "-a",
            "-01",
            "1.",
            "1.e5",
            ".5",
            "1e",
            "1e+",
            "1E-2",
            "1e400",
            "-1e400",
            "1e-400",
            "123456789012345678901",
            "-123456789012345678901",
            "9999999999999999999",
            "99999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "-0",
            "0",
            "-0.0",
            "0.1",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "4.9e-324",
            "2.2250738585072014e-308",
            "5e-324",
            "1.7976931348623159e308",
            "tru",
            "truex",
            "nul",
            "fals",
            "true ",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[]x",
            "[",
            "]",
            "{",
            "}",
            r#"{"a":1,}"#,
            "{,}",
            r#"{"a" 1}"#,
            "{1:2}",
            r#"{"a":1 "b":2}"#,
            r#"{"a":1,"a":2}"#,
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#""\ud800\udc00""#,
            r#""\uD83D\uDE00""#,
            r#""\ud800\ud800\udc00""#,
            r#""\ud800\""#,
            r#""\ud800x""#,
            r#""\u00zz""#,
            r#""\u12""#,
            r#""\x""#,
            "\"a\u{1}b\"",
            "\"\u{7f}\"",
            "\"\u{1f}\"",
            " \t\r\n[ 1 , 2 ] \n",
            "\u{c}1",
            r#""abc"#,
            r#""abc\"#,
            r#""a\"b""#,
            r#""aaaaaaaaaa\naaaaaaaaaa\t\u0000\u0001bbbbbbbbbbbbbbbb""#,
            r#""\\\\\\""#,
            r#""\/\b\f\n\r\t""#,
            "\"é\\n日本🚀\"",
            "",
            " ",
            "nulll",
            "[true,false,null]",
        ];
        let mut next = crate::test_rng(0x9e37_79b9_7f4a_7c15);
        let floats = (0..20_000).map(|_| {
            let bits = (next(1 << 32) as u64) << 32 | next(1 << 32) as u64;
            let x = f64::from_bits(bits);
            if next(2) == 0 {
                format!("{x}")
            } else {
                format!("{x:e}")
            }
        });
        for text in texts.iter().map(|t| t.to_string()).chain(floats) {
            match (super::parse_value(&text), text.parse::<Value>()) {
                // serde_json's default float reading can be a few units in the last place off
                // (2.0924588001863438e-109: two); this one is Rust's, correctly rounded.
                (Ok(Value::Number(read)), Ok(Value::Number(tree))) if read != tree => {
                    let (read, tree) = (read.as_f64().unwrap(), tree.as_f64().unwrap());
                    assert_eq!(read, text.parse::<f64>().unwrap(), "{text}");
                    assert!(read.to_bits().abs_diff(tree.to_bits()) <= 4, "{text}: {read} vs {tree}");
                }
                (Ok(read), Ok(tree)) => {
                    assert_eq!(read, tree, "{text}");
                    let mut written = Vec::new();
                    super::write_value(&mut written, &read);
                    assert_eq!(written, serde_json::to_vec(&tree).unwrap(), "{text}");
                }
                (Err(read), Err(_)) => assert!(at_byte(&read.to_string(), &text) <= text.len(), "{text}: {read}"),
                (read, tree) => panic!("{text}: {read:?} vs {tree:?}"),
            }
        }
    }

    /// A pretty-printed body's error says the line and column, as serde_json's does.
    #[test]
    fn errors_name_the_line_and_column() {
        let text = "{\n  \"a\": 1,\n  \"b\": x\n}";
        let serde = text.parse::<Value>().unwrap_err().to_string();
        assert_eq!(serde, "expected value at line 3 column 8");
        assert_eq!(super::parse_value(text).unwrap_err().to_string(), serde);
    }

    /// Nesting up to the limit reads; one level more is refused, naming the limit, in a whole
    /// document and in a kept entry; a skipped entry may nest deeper (it is not read).
    #[test]
    fn nesting_past_the_limit_is_refused() {
        let nest = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(super::parse_value(&nest(super::MAX_DEPTH)).is_ok());
        let err = super::parse_value(&nest(super::MAX_DEPTH + 1)).unwrap_err().to_string();
        assert_eq!(err, "arrays and objects nested more than 64 deep at line 1 column 65");
        let kept = format!(r#"{{"usage":{}}}"#, nest(super::MAX_DEPTH - 1));
        assert!(super::object_keeping(&kept, &["usage"]).is_ok());
        let deep = format!(r#"{{"usage":{}}}"#, nest(super::MAX_DEPTH));
        assert!(super::object_keeping(&deep, &["usage"])
            .unwrap_err()
            .to_string()
            .starts_with("arrays and objects nested more than 64"));
        let skipped = format!(r#"{{"other":{},"usage":1}}"#, nest(500));
        assert_eq!(super::object_keeping(&skipped, &["usage"]).unwrap().unwrap()["usage"], 1);
    }

    /// A large object reads as serde_json reads it: sorted, a repeated key keeping its last
    /// value.
    #[test]
    fn large_objects_read_as_serde_json_reads_them() {
        let mut entries: Vec<String> = (0..200).map(|i| format!("\"k{:03}\":{i}", (i * 37) % 150)).collect();
        entries.push("\"k000\":\"last\"".into());
        entries.insert(5, "\"k149\":\"early\"".into());
        let text = format!("{{{}}}", entries.join(","));
        let ours = super::parse_value(&text).unwrap();
        assert_eq!(ours, serde_json::from_str::<serde_json::Value>(&text).unwrap());
        assert_eq!(ours.as_object().unwrap().len(), 150);
        assert_eq!(ours["k000"], "last");
        let ordered: Vec<&String> = ours.as_object().unwrap().keys().collect();
        assert!(ordered.windows(2).all(|w| w[0] < w[1]));
    }

    /// The bounds count object keys (`keys`); non-empty strings (keys too) and arrays
    /// (`items`); and every value and key (`values`). Up to them a text reads, one more is
    /// refused naming the count.
    #[test]
    fn values_past_the_bounds_are_refused() {
        use super::{parse_value_within, Bounds, ReadError};
        let bounds = Bounds { keys: 4, items: 6, values: 18 };
        // keys: "k" and "a" x3; items: those, the array, "s"; values: 14, and the 4 keys.
        let at_bounds = r#"{"k":[{"a":1},{"a":"s"},{"a":null},{},"",[],[],1.5,true]}"#;
        assert!(parse_value_within(at_bounds, bounds).is_ok());
        let refused_within = |text: &str, bounds: Bounds| match parse_value_within(text, bounds) {
            Err(e @ ReadError::TooMany { what, limit }) => (what, limit, e.to_string()),
            other => panic!("{other:?}"),
        };
        let refused = |text: &str| {
            let (what, limit, _) = refused_within(text, bounds);
            (what, limit)
        };
        assert_eq!(refused(r#"[{},{"a":1},{"a":1},{"a":1},{"a":1},{"a":1}]"#), ("JSON object keys", 4));
        assert_eq!(refused(r#"[{"":1,"":2,"":3,"":4,"":5}]"#), ("JSON object keys", 4));
        assert_eq!(refused(r#"["a","b","c","d","e","f"]"#), ("non-empty JSON strings and arrays", 6));
        assert_eq!(refused(r#"[[1],[1],[1],[1],[1],[1]]"#), ("non-empty JSON strings and arrays", 6));
        assert_eq!(refused(r#"["\u0041","b","c","d","e","f"]"#), ("non-empty JSON strings and arrays", 6));
        // Values that allocate nothing still count: the array and 17 numbers are 18.
        assert!(parse_value_within(&format!("[{}1]", "1,".repeat(16)), bounds).is_ok());
        let (_, _, message) = refused_within(&format!("[{}1]", "1,".repeat(17)), bounds);
        assert_eq!(message, "more than 18 JSON values and keys");
        assert_eq!(refused(&format!("[{}[]]", "\"\",{},null,".repeat(6))), ("JSON values and keys", 18));
        // A float counts one more value for each further 8 bytes of its text; an integer
        // that fits 64 bits is one value however long.
        assert!(parse_value_within(
            "[1.0000000000000001,1.5,18446744073709551615]",
            Bounds { values: 6, ..Bounds::NONE }
        )
        .is_ok());
        assert_eq!(
            refused_within("[1.00000000000000001]", Bounds { values: 3, ..Bounds::NONE }).0,
            "JSON values and keys"
        );
        // So does every 8th escape in a string.
        let escaped = |n: usize| format!("[\"{}\"]", "\\n".repeat(n));
        assert!(parse_value_within(&escaped(15), Bounds { values: 3, ..Bounds::NONE }).is_ok());
        assert_eq!(refused_within(&escaped(16), Bounds { values: 3, ..Bounds::NONE }).0, "JSON values and keys");
        // Keys count as values: an object of 8 entries is 17, of 9 entries 19.
        let values_only = Bounds { values: 18, ..Bounds::NONE };
        let object = |n: usize| format!("{{{}}}", (0..n).map(|i| format!("\"{i}\":1")).collect::<Vec<_>>().join(","));
        assert!(parse_value_within(&object(8), values_only).is_ok());
        assert_eq!(refused_within(&object(9), values_only).0, "JSON values and keys");
        // Not JSON stays an `Invalid` error, and no bounds is the plain reading.
        assert!(matches!(parse_value_within("[1,", bounds), Err(ReadError::Invalid(_))));
        assert!(parse_value_within(&format!("[{}1]", r#"{"a":"b"},"#.repeat(10_000)), Bounds::NONE).is_ok());
    }
}
