//! JSON written straight into an output buffer: strings for the bodies built per stream chunk,
//! and whole values for every body the gateway writes. serde_json's own code, instantiated
//! here so it is compiled for speed (generic code is compiled in the crate that instantiates
//! it; in the gateway, built for size, or through `Display`'s formatter, writing a request of
//! 5,000 short messages cost ~58 instructions a byte).

use std::fmt;

use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Appends `s` as a JSON string (quotes and escapes as serde_json writes them).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(out, s);
}

/// Appends `n` in decimal (serde_json's integer writer, without `format!`'s machinery).
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &n);
}

/// Appends `value` as JSON, the bytes of `serde_json::to_vec`.
pub fn write_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    // Writing into a Vec cannot fail, and a `Value` always serializes (its keys are strings).
    let _ = serde_json::to_writer(out, value);
}

/// Where `text`, read as JSON, first opens an array or object more than `max` levels deep
/// (`None`: it never does). Strings are skipped, escapes and all. Over valid JSON the depth is
/// exact; over anything else the answer is a guess, harmless since the parser refuses it too.
///
/// Why: serde_json refuses nesting past its recursion limit, but as the error unwinds, each
/// level works out the error's line and column afresh, a pass over the text before it: a
/// 1 MB body nested deep at its end cost ~130 passes (2.5 ms). This check is one pass.
pub fn nested_past(text: &[u8], max: usize) -> Option<usize> {
    // Text with `max` openers or fewer (strings included: one vector pass, stopping at the
    // one past `max`) cannot nest past it.
    memchr::memchr2_iter(b'[', b'{', text).nth(max)?;
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&byte) = text.get(i) {
        match byte {
            b'"' => i = string_end(text, i + 1)?,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Where the string whose text starts at `i` ends: its closing quote, past each backslash and
/// the byte it escapes (`None`: it never ends).
fn string_end(text: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += quote_or_backslash(text.get(i..)?)?;
        if text[i] == b'"' {
            return Some(i);
        }
        i += 2;
    }
}

/// The first quote or backslash in `s`. Most strings in a request are short keys and values:
/// eight bytes at a time there (a call to memchr costs more than such a string), memchr's
/// vectors past the first 64 bytes.
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    // The lowest set bit is exact: it marks the first byte of `word` equal to `b`.
    let equal = |word: u64, b: u8| {
        let x = word ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & (ONES << 7)
    };
    let mut at = 0;
    while let Some(chunk) = s.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let hits = equal(word, b'"') | equal(word, b'\\');
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
        if at == 64 {
            return memchr::memchr2(b'"', b'\\', &s[at..]).map(|k| at + k);
        }
    }
    s[at..].iter().position(|&b| b == b'"' || b == b'\\').map(|k| at + k)
}

/// The JSON object in `text` with only the entries named in `fields` kept (a repeated one as its last),
/// the other entries skipped without building a tree; `Ok(None)`: JSON, but not an object.
/// Skipping checks the text as serde_json's `IgnoredAny` does: a lone surrogate escape or a
/// number past `f64` pass (a tree refuses them), the rest as for a tree.
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
                    kept.insert(key.to_owned(), map.next_value()?);
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
        for s in ["", "plain", "quote \" backslash \\ newline \n tab \t", "\u{1}\u{1f}", "é 日本 🚀"] {
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

    /// The depth counted is the parser's: strings (escaped quotes and backslashes included)
    /// do not count, and over valid JSON the check refuses exactly what serde_json's recursion
    /// limit (127 levels) refuses.
    #[test]
    fn nesting_is_counted_outside_strings() {
        use super::nested_past;
        assert_eq!(nested_past(b"[[1]]", 2), None);
        assert_eq!(nested_past(b"[[1]]", 1), Some(1));
        assert_eq!(nested_past(br#"{"a":{"b":[]}}"#, 2), Some(10));
        assert_eq!(nested_past(br#"["[[[", "\\", "\"[[[", "{{"]"#, 1), None);
        assert_eq!(nested_past(br#"["\\"[[]"#, 2), Some(6));
        assert_eq!(nested_past(br#"["unterminated \"#, 0), Some(0));
        assert_eq!(nested_past(br#""unterminated \"#, 0), None);
        assert_eq!(nested_past(b"]]]][[", 1), Some(5));
        let pad = format!(r#"{{"s":"{}","n":[1,"]]]"]}},"#, "\\\"[".repeat(1000));
        for depth in [1, 126, 127, 128, 129, 500] {
            for prefix in ["", pad.as_str()] {
                let text = format!("[{prefix}{}1{}]", "[".repeat(depth - 1), "]".repeat(depth - 1));
                let parsed = text.parse::<serde_json::Value>();
                let past = nested_past(text.as_bytes(), 127);
                assert_eq!(past.is_some(), parsed.is_err(), "depth {depth}");
                if let Some(at) = past {
                    assert_eq!(at, prefix.len() + 127, "depth {depth}");
                }
            }
        }
    }

    /// Over any text (valid JSON or not), the word-at-a-time string skipping finds what a
    /// byte-by-byte reading finds: random texts of quotes, backslashes, brackets and runs of
    /// plain bytes up to 300 long (past the 64 bytes read eight at a time).
    #[test]
    fn nesting_agrees_with_a_byte_by_byte_reading() {
        fn reference(text: &[u8], max: usize) -> Option<usize> {
            let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
            for (i, &b) in text.iter().enumerate() {
                match (in_string, b) {
                    (true, _) if escaped => escaped = false,
                    (true, b'\\') => escaped = true,
                    (true, b'"') | (false, b'"') => in_string = !in_string,
                    (false, b'[' | b'{') => {
                        depth += 1;
                        if depth > max {
                            return Some(i);
                        }
                    }
                    (false, b']' | b'}') => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            None
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let mut text = Vec::new();
            for _ in 0..next(40) {
                match next(8) {
                    0 => text.push(b'"'),
                    1 => text.push(b'\\'),
                    2 | 3 => text.push(b"[]{}"[next(4) as usize]),
                    _ => text.extend(std::iter::repeat_n(b'a', next(300) as usize)),
                }
            }
            let max = next(6) as usize;
            assert_eq!(super::nested_past(&text, max), reference(&text, max), "{}", String::from_utf8_lossy(&text));
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
}
