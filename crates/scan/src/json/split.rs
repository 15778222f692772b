//! One array of a JSON document left as text: where its items are, found by scanning brackets
//! and strings only, so a reader can build a tree of the rest and of each item when it needs
//! that item (the gateway's stored config: a request reads the endpoint it names, not all).

/// One item of the array [`split_array_entry`] left as text.
#[derive(Debug, PartialEq, Eq)]
pub struct Item<'t> {
    pub text: &'t str,
    /// For each of the fields asked for, the text of its value when the item is an object that
    /// has it at its top level (the last, if repeated).
    pub fields: Vec<Option<&'t str>>,
}

/// `text` (a JSON object) with the array under its top-level key `key` emptied (`[]`), and
/// each item of that array as text, with the values of its top-level `fields`. `None` when
/// `text` is not an object holding exactly one entry `key` (spelled without escapes) whose
/// value is an array, or when the scan meets something it cannot place: the caller then reads
/// the whole text, which reports what is wrong. The scan checks nothing but strings and
/// bracket depth (keys compared as written, escapes and all): the rest and each item are left
/// to a real reader.
// Not inlined: inlined into the gateway's config decoding (a large function), the scan kept
// its state on the stack (callgrind: ~3,200 more instructions per fresh instance with the
// 50-endpoint bench config).
#[inline(never)]
pub fn split_array_entry<'t>(text: &'t str, key: &str, fields: &[&str]) -> Option<(String, Vec<Item<'t>>)> {
    let mut scan = Scan { bytes: text.as_bytes(), at: 0 };
    scan.space();
    let mut array = None;
    scan.object(|scan, name| {
        if name != key.as_bytes() {
            return scan.value();
        }
        let start = scan.at;
        if array.is_some() || scan.bytes.get(start) != Some(&b'[') {
            return None;
        }
        let items = scan.items(fields)?;
        array = Some((start, scan.at, items));
        Some(())
    })?;
    scan.space();
    if scan.at != text.len() {
        return None;
    }
    let (start, end, items) = array?;
    let rest = [&text[..start], "[]", &text[end..]].concat();
    let span = |(a, b): (usize, usize)| &text[a..b];
    let items = items
        .into_iter()
        .map(|(item, found)| Item { text: span(item), fields: found.into_iter().map(|f| f.map(span)).collect() })
        .collect();
    Some((rest, items))
}

/// An item's range, and the ranges of the values of the fields asked for.
type Spans = ((usize, usize), Vec<Option<(usize, usize)>>);

struct Scan<'t> {
    bytes: &'t [u8],
    at: usize,
}

impl<'t> Scan<'t> {
    fn space(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// A string's raw contents (escapes as written).
    fn string(&mut self) -> Option<&'t [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            // Most of a config's bytes are in strings: memchr passes over them in blocks.
            self.at += memchr::memchr2(b'"', b'\\', self.bytes.get(self.at..)?)?;
            if self.bytes[self.at] == b'"' {
                self.at += 1;
                return Some(&self.bytes[start..self.at - 1]);
            }
            self.at += 2;
        }
    }

    /// Past an object: `entry` gets each key (as written) with the scan at its value, which
    /// it must pass.
    fn object(&mut self, mut entry: impl FnMut(&mut Self, &'t [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.space();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.space();
            let name = self.string()?;
            self.space();
            self.eat(b':')?;
            self.space();
            entry(self, name)?;
            self.space();
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// Past an object, with the ranges of the values of its top-level `fields`.
    fn fields(&mut self, fields: &[&str]) -> Option<Vec<Option<(usize, usize)>>> {
        let mut found = vec![None; fields.len()];
        self.object(|scan, name| {
            let start = scan.at;
            scan.value()?;
            if let Some(i) = fields.iter().position(|f| f.as_bytes() == name) {
                found[i] = Some((start, scan.at));
            }
            Some(())
        })?;
        Some(found)
    }

    /// Past one value: a string, an object or array (to its matching depth), or a scalar.
    fn value(&mut self) -> Option<()> {
        match self.bytes.get(self.at)? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.bytes.get(self.at)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                {
                    self.at += 1;
                }
                if self.at == start {
                    return None;
                }
            }
        }
        Some(())
    }

    /// The byte ranges of an array's items (with those of their `fields`), the scan then past
    /// the array.
    fn items(&mut self, fields: &[&str]) -> Option<Vec<Spans>> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        self.space();
        if self.eat(b']').is_some() {
            return Some(items);
        }
        loop {
            self.space();
            let start = self.at;
            let found = if self.bytes.get(start) == Some(&b'{') {
                self.fields(fields)?
            } else {
                self.value()?;
                vec![None; fields.len()]
            };
            items.push(((start, self.at), found));
            self.space();
            if self.eat(b',').is_none() {
                self.eat(b']')?;
                return Some(items);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_array_entry;

    #[test]
    fn splits_the_named_array_and_leaves_the_rest() {
        let text = r#" { "version": "a]}\"", "endpoints" : [ {"name": "a", "x": [1, {"y": "}]"}]}, "s\"]", 3 ,null],
            "routes": [{"name": "r"}], "e": {} } "#;
        let (rest, items) = split_array_entry(text, "endpoints", &["name", "x", "z"]).unwrap();
        let texts: Vec<&str> = items.iter().map(|i| i.text).collect();
        assert_eq!(texts, [r#"{"name": "a", "x": [1, {"y": "}]"}]}"#, r#""s\"]""#, "3", "null"]);
        assert_eq!(items[0].fields, [Some(r#""a""#), Some(r#"[1, {"y": "}]"}]"#), None]);
        assert_eq!(items[1].fields, [None, None, None]);
        let rest: serde_json::Value = serde_json::from_str(&rest).unwrap();
        assert_eq!(rest["endpoints"], serde_json::json!([]));
        assert_eq!((rest["version"].as_str(), rest["routes"][0]["name"].as_str()), (Some("a]}\""), Some("r")));
        let (rest, items) = split_array_entry(r#"{"endpoints": []}"#, "endpoints", &[]).unwrap();
        assert_eq!((rest.as_str(), items.len()), (r#"{"endpoints": []}"#, 0));
    }

    #[test]
    fn gives_up_where_a_reader_must_say_what_is_wrong() {
        for text in [
            r#"[{"endpoints": []}]"#,
            r#"{"endpoints": {}}"#,
            r#"{"endpoints": [], "endpoints": []}"#,
            r#"{"other": []}"#,
            r#"{"endpoints": [1, 2}"#,
            r#"{"endpoints": [1 2]}"#,
            r#"{"endpoints": ["a]}"#,
            r#"{"endpoints": []} x"#,
            r#"{"endpoints": [], }"#,
            r#"{"endpoints": [,]}"#,
            r#"{"endp\u006fints": []}"#,
            r#"{"endpoints": [{"name" "a"}]}"#,
            r#"{"endpoints": [{"name": "a",}]}"#,
            "",
        ] {
            assert_eq!(split_array_entry(text, "endpoints", &["name"]), None, "{text}");
        }
    }
}
