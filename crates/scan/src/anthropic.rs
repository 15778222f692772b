//! What the gateway reads from an Anthropic `content_block_delta` event, the event most of an
//! Anthropic stream is made of, without building a JSON tree (a `serde_json::Value` per event
//! was over half of translating such a stream to OpenAI chunks). As lenient as the tree: a
//! field of another type reads as absent, an `index` that is not a non-negative integer as 0,
//! and a repeated key as its last occurrence. Only text that is not JSON fails.

use std::borrow::Cow;

use serde::de::{IgnoredAny, MapAccess};
use serde_json::Value;

use crate::lenient::{
    entries, lenient_deserialize, parse_value_fields, read_value_fields, value_fields, Count, Lenient, Str, ValueFields,
};
use crate::like_last::{LikeLast, LikeNothing, Span, Varying};

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
        crate::lenient::parse(data)
    }
}

/// The fields the gateway reads from any other Anthropic stream event, each as the `Value`
/// tree has it (`Null` when missing; a repeated field as its last; none for an event that is
/// not an object); the other fields are skipped, not built into a tree.
#[derive(Debug, Default, PartialEq)]
pub struct AnthropicEvent {
    /// `type`.
    pub kind: Value,
    pub index: Value,
    pub message: Value,
    pub content_block: Value,
    pub delta: Value,
    pub usage: Value,
    pub error: Value,
}

impl AnthropicEvent {
    /// The event's fields; `None` when `data` is not JSON.
    pub fn parse(data: &str) -> Option<AnthropicEvent> {
        parse_value_fields(data)
    }
}

lenient_deserialize!(AnthropicEvent);

impl<'de> Lenient<'de> for AnthropicEvent {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        value_fields(map)
    }
}

impl ValueFields for AnthropicEvent {
    fn with_fields<R>(&mut self, read: impl FnOnce(&mut [(&'static str, &mut Value)]) -> R) -> R {
        read(&mut [
            ("type", &mut self.kind),
            ("index", &mut self.index),
            ("message", &mut self.message),
            ("content_block", &mut self.content_block),
            ("delta", &mut self.delta),
            ("usage", &mut self.usage),
            ("error", &mut self.error),
        ])
    }
}

/// Reads one stream's other events ([`AnthropicEvent::parse`]): one like the last that read as
/// nothing (an event of another format) is not read again.
#[derive(Debug, Default)]
pub struct EventReader {
    nothing: LikeNothing,
}

impl EventReader {
    pub fn read(&mut self, data: &str) -> Option<AnthropicEvent> {
        read_value_fields(&mut self.nothing, data)
    }
}

/// Reads one stream's `content_block_delta` events. Nearly every one differs from the one
/// before only in its text (or its `partial_json`): such an event is not read again
/// ([`LikeLast`]; ~150 instructions instead of ~2,000).
#[derive(Debug, Default)]
pub struct BlockReader {
    last: Option<LastBlock>,
}

/// The last event read in full, with a borrowed text or `partial_json` (the string that
/// varies): the bytes around that string, and its delta (the other strings as places).
#[derive(Debug, Default)]
struct LastBlock {
    like: LikeLast,
    index: u64,
    kind: Option<Span>,
    /// Which string varies (`text`, else `partial_json`), and where the other one is.
    varies_text: bool,
    other: Option<Span>,
}

impl BlockReader {
    /// The delta of `data`, as [`BlockDelta::parse`] reads it.
    pub fn read<'a>(&mut self, data: &'a str) -> Option<BlockDelta<'a>> {
        if let Some(last) = &self.last {
            if let Some((string, varying)) = last.like.text(data) {
                let other = varying.text(data, last.other);
                let (text, partial_json) = if last.varies_text { (Some(string), other) } else { (other, Some(string)) };
                return Some(BlockDelta { index: last.index, kind: varying.text(data, last.kind), text, partial_json });
            }
        }
        let delta = BlockDelta::parse(data)?;
        let mut last = self.last.take().unwrap_or_default();
        self.last = last.remember(data, &delta).then_some(last);
        Some(delta)
    }
}

impl LastBlock {
    /// Keeps `delta`'s event (`data`); false if it has no borrowed string to vary.
    fn remember<'a>(&mut self, data: &'a str, delta: &BlockDelta<'a>) -> bool {
        fn borrowed<'a>(text: &Option<Cow<'a, str>>) -> Option<&'a str> {
            match text {
                Some(Cow::Borrowed(text)) => Some(text),
                _ => None,
            }
        }
        let (varies_text, string, other) = match (borrowed(&delta.text), borrowed(&delta.partial_json)) {
            (Some(text), _) => (true, text, &delta.partial_json),
            (None, Some(partial)) => (false, partial, &delta.text),
            (None, None) => return false,
        };
        // A borrowed string is the event's text between its quotes (it has no escapes).
        let start = string.as_ptr() as usize - data.as_ptr() as usize - 1;
        let varying = Varying { start, end: start + string.len() + 2 };
        let span = |text: &Option<Cow<str>>| match text {
            None => Some(None),
            Some(text) => varying.span_of(data, text).map(Some),
        };
        let (Some(kind), Some(other)) = (span(&delta.kind), span(other)) else { return false };
        self.like.remember(data, varying);
        (self.index, self.kind, self.varies_text, self.other) = (delta.index, kind, varies_text, other);
        true
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

    /// A stream read with [`BlockReader`] has the delta each event has read alone, whatever
    /// follows what: events that differ only in their text or `partial_json` (the shortcut), in
    /// a byte around it, in the string's kind (escapes, a number, a bad escape), or in shape.
    #[test]
    fn a_stream_reader_reads_each_event_as_if_alone() {
        let shapes = [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":@}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":@}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":@}}"#,
            r#"{"index":0,"delta":{"text":@,"type":"text_delta"}}"#,
            r#"{"index":0,"delta":{"text":@,"partial_json":"{}"}}"#,
            r#"{"index":0,"delta":{"text":@},"delta":{"text":"x"}}"#,
            r#"{"index":0,"delta":{"text":"x"},"delta":{"text":@}}"#,
            r#"{"index":0,"delta":{"type":"t\"d","text":@}}"#,
        ];
        let mut reader = BlockReader::default();
        let mut shortcut = 0;
        for data in crate::like_last::test_stream(&shapes, 11, 5000) {
            shortcut += usize::from(reader.last.as_ref().is_some_and(|last| last.like.text(&data).is_some()));
            assert_eq!(reader.read(&data), BlockDelta::parse(&data), "{data}");
        }
        assert!(shortcut > 300, "the shortcut was taken {shortcut} times");
    }

    /// A stream read with [`EventReader`] has the fields each event has read alone, whatever
    /// follows what: events of another format that differ only in a string (the shortcut), in
    /// a byte around it, in the string's kind, or in shape, among Anthropic's own.
    #[test]
    fn an_event_reader_reads_each_event_as_if_alone() {
        let shapes = [
            r#"{"choices":[{"delta":{"content":@}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":@},"finish_reason":null}]}"#,
            r#"{"x":@,"index":null}"#,
            r#"{"type":@,"x":"y"}"#,
            r#"{"message":{"id":@}}"#,
            r#"{"delta":null,"y":[@]}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":@}}"#,
        ];
        let mut reader = EventReader::default();
        let mut shortcut = 0;
        for data in crate::like_last::test_stream(&shapes, 17, 5000) {
            shortcut += usize::from(reader.nothing.is_like(&data));
            assert_eq!(reader.read(&data), AnthropicEvent::parse(&data), "{data}");
        }
        assert!(shortcut > 300, "the shortcut was taken {shortcut} times");
    }

    /// Every other event reads as the `Value` tree has it, whatever its shape; text that is not
    /// JSON reads as nothing.
    #[test]
    fn events_read_as_the_tree_has_them() {
        for data in [
            r#"{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3}}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
            r#"{"typ\u0065":"ping","index":-1}"#,
        ]
        .into_iter()
        .chain(crate::lenient::ODD_EVENTS)
        {
            crate::lenient::assert_fields_as_tree::<AnthropicEvent>(data);
        }
        for data in ["", "{", r#"{"type":"ping""#, r#"{"a":1} x"#] {
            assert!(AnthropicEvent::parse(data).is_none(), "{data}");
        }
    }

    /// Read by hand, an event is what serde reads, whatever it holds.
    #[test]
    fn events_read_by_hand_as_through_serde() {
        crate::lenient::assert_value_fields_by_hand_as_through_serde::<AnthropicEvent>(&["text", "x", "typ\\u0065"]);
    }
}
