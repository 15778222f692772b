//! What the gateway reads from an Anthropic `content_block_delta` event, the event most of an
//! Anthropic stream is made of, without building a JSON tree (a `serde_json::Value` per event
//! was over half of translating such a stream to OpenAI chunks). As lenient as the tree: a
//! field of another type reads as absent, an `index` that is not a non-negative integer as 0,
//! and a repeated key as its last occurrence. Only text that is not JSON fails.

use std::borrow::Cow;

use serde::de::{Deserialize, IgnoredAny, MapAccess};

use crate::lenient::{entries, lenient_deserialize, Count, Lenient, Str};

/// `index` and `delta` of a `content_block_delta` event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockDelta<'a> {
    pub index: u64,
    /// `delta.type`, `delta.text` and `delta.partial_json`, when strings.
    pub kind: Option<Cow<'a, str>>,
    pub text: Option<Cow<'a, str>>,
    pub partial_json: Option<Cow<'a, str>>,
}

impl BlockDelta<'_> {
    /// The delta of `data` (the event's data); `None` when it is not JSON.
    pub fn parse(data: &str) -> Option<BlockDelta<'_>> {
        let mut de = serde_json::Deserializer::from_str(data);
        let delta = BlockDelta::deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(delta)
    }
}

/// The `delta` object's fields (the event's other fields are read around it).
#[derive(Default)]
struct Delta<'a>(BlockDelta<'a>);

lenient_deserialize!(BlockDelta<'de>, Delta<'de>);

impl<'de> Lenient<'de> for BlockDelta<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let (mut index, mut delta) = (0, BlockDelta::default());
        entries(map, |key, map| {
            match key {
                "index" => index = map.next_value::<Count>()?.0,
                "delta" => delta = map.next_value::<Delta<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(BlockDelta { index, ..delta })
    }
}

impl<'de> Lenient<'de> for Delta<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut delta = BlockDelta::default();
        entries(map, |key, map| {
            match key {
                "type" => delta.kind = map.next_value::<Str<'de>>()?.0,
                "text" => delta.text = map.next_value::<Str<'de>>()?.0,
                "partial_json" => delta.partial_json = map.next_value::<Str<'de>>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(Delta(delta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The delta as a `Value` tree reads it.
    fn from_tree(event: &Value) -> BlockDelta<'static> {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| Cow::Owned(s.to_owned()));
        let delta = event.get("delta");
        BlockDelta {
            index: event.get("index").and_then(Value::as_u64).unwrap_or(0),
            kind: text(delta.and_then(|d| d.get("type"))),
            text: text(delta.and_then(|d| d.get("text"))),
            partial_json: text(delta.and_then(|d| d.get("partial_json"))),
        }
    }

    /// Well-formed, odd and hostile events read the same as through a `Value` tree; text that
    /// is not JSON reads as nothing.
    #[test]
    fn deltas_match_the_tree_reading() {
        for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"you\"\n\u00e9"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            r#"{"index":-1,"delta":{"type":5,"text":null,"partial_json":["x"]}}"#,
            r#"{"index":2.5,"delta":"text_delta"}"#,
            r#"{"index":"3","delta":{"text":"a","text":"b"},"delta":{"type":"text_delta"}}"#,
            r#"{"delta":{"type":"thinking_delta","thinking":"hm","nested":[{"a":[1,{}]}]}}"#,
            r#"[{"index":1}]"#,
            r#""content_block_delta""#,
            r#"null"#,
            r#" { "index" : 7 } "#,
        ] {
            let tree: Value = data.parse().unwrap();
            assert_eq!(BlockDelta::parse(data), Some(from_tree(&tree)), "{data}");
        }
        for data in ["", "{", r#"{"index":1} x"#, r#"{"delta":{"text":"\x"}}"#] {
            assert!(data.parse::<Value>().is_err(), "{data}");
            assert_eq!(BlockDelta::parse(data), None, "{data}");
        }
    }
}
