//! What the gateway reads from a Gemini stream event: its candidates (their index, visible
//! texts, function calls and finish reason) and a few fields each as the `Value` tree has it
//! (`Null` when missing); the rest is skipped, not built into a tree. Read whole as a `Value`
//! (in the size-built gateway), a 48-byte event of other fields cost ~5,400 instructions, most
//! of it building and dropping maps; its candidates as a `Value`, ~1,300 an event of one text.

use std::borrow::Cow;

use serde::de::MapAccess;
use serde_json::Value;

use crate::lenient::{lenient_deserialize, value_fields, Lenient, ValueFields};
use crate::like_last::{LikeNothing, Varying};
use crate::reader::{whole_object, Reader};

/// A Gemini stream event's fields. Like the tree: a repeated field counts as its last, and an
/// event that is not an object has none.
#[derive(Debug, Default, PartialEq)]
pub struct GeminiEvent<'a> {
    /// `candidates`, when an array (else none).
    pub candidates: Vec<Candidate<'a>>,
    pub usage_metadata: Value,
    pub error: Value,
    pub response_id: Value,
    pub model_version: Value,
    pub prompt_feedback: Value,
}

/// A candidate as the tree reads it; an element of `candidates` that is not an object has
/// nothing.
#[derive(Debug, Default, PartialEq)]
pub struct Candidate<'a> {
    /// `index`, when a non-negative integer.
    pub index: Option<u64>,
    /// `content.parts`, when an array.
    pub parts: Vec<Part<'a>>,
    /// `finishReason`, when a string.
    pub finish_reason: Option<Cow<'a, str>>,
}

/// A part of a candidate's content.
#[derive(Debug, Default, PartialEq)]
pub struct Part<'a> {
    /// `text`, when a string and the part is not a thought (`thought: true`): thought
    /// summaries are not part of the answer.
    pub text: Option<Cow<'a, str>>,
    /// `functionCall`, whatever its value, when present.
    pub function_call: Option<Value>,
}

impl GeminiEvent<'_> {
    /// The event's fields; `None` when `data` is not JSON. Read by hand ([`crate::reader`]),
    /// else, when that reading is not sure, through serde with the candidates as a tree: any
    /// text the tree refuses (a lone surrogate anywhere in them, say) makes the event nothing,
    /// as it always has.
    pub fn parse(data: &str) -> Option<GeminiEvent<'_>> {
        by_hand(data).map(|(event, _)| event).or_else(|| through_serde(data))
    }

    /// None of the fields read: all absent (or null), no candidates.
    fn is_nothing(&self) -> bool {
        let values = [&self.usage_metadata, &self.error, &self.response_id, &self.model_version, &self.prompt_feedback];
        self.candidates.is_empty() && values.iter().all(|value| value.is_null())
    }
}

/// Reads one stream's events ([`GeminiEvent::parse`]): one like the last that read as nothing
/// (an event of another format) is not read again.
#[derive(Debug, Default)]
pub struct GeminiReader {
    nothing: LikeNothing,
}

impl GeminiReader {
    pub fn read<'a>(&mut self, data: &'a str) -> Option<GeminiEvent<'a>> {
        if self.nothing.is_like(data) {
            return Some(GeminiEvent::default());
        }
        let (event, skipped) = match by_hand(data) {
            Some(read) => read,
            None => (through_serde(data)?, None),
        };
        self.nothing.after(data, event.is_nothing(), skipped);
        Some(event)
    }
}

/// An event read through serde, with its candidates as a tree.
fn through_serde(data: &str) -> Option<GeminiEvent<'static>> {
    crate::lenient::parse::<Fields>(data).map(Fields::event)
}

/// An event read by hand, and where the last string value it skipped is; `None` when not sure.
fn by_hand(data: &str) -> Option<(GeminiEvent<'_>, Option<Varying>)> {
    let mut event = GeminiEvent::default();
    let end = whole_object(data, |r, key| {
        match key {
            b"candidates" => event.candidates = r.list(Reader::candidate)?.unwrap_or_default(),
            b"usageMetadata" => event.usage_metadata = r.value()?,
            b"error" => event.error = r.value()?,
            b"responseId" => event.response_id = r.value()?,
            b"modelVersion" => event.model_version = r.value()?,
            b"promptFeedback" => event.prompt_feedback = r.value()?,
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some((event, end.skipped_string))
}

impl<'a> Reader<'a> {
    fn candidate(&mut self) -> Option<Candidate<'a>> {
        let mut candidate = Candidate::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| candidate);
        }
        self.object(|r, key| {
            match key {
                b"index" => candidate.index = r.unsigned()?,
                b"content" => candidate.parts = r.content_parts()?,
                b"finishReason" => candidate.finish_reason = r.text()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(candidate)
    }

    /// A content's parts; none when it is not an object or they are not an array.
    fn content_parts(&mut self) -> Option<Vec<Part<'a>>> {
        let mut parts = Vec::new();
        if self.peek()? != b'{' {
            return self.skip().map(|()| parts);
        }
        self.object(|r, key| {
            match key {
                b"parts" => parts = r.list(Reader::part)?.unwrap_or_default(),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(parts)
    }

    fn part(&mut self) -> Option<Part<'a>> {
        let (mut thought, mut text, mut function_call) = (false, None, None);
        if self.peek()? != b'{' {
            return self.skip().map(|()| Part::default());
        }
        self.object(|r, key| {
            match key {
                b"thought" => {
                    thought = r.peek()? == b't'; // `true` (the skip checks it)
                    r.skip()?;
                }
                b"text" => text = r.text()?,
                b"functionCall" => function_call = Some(r.value()?),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(Part { text: text.filter(|_| !thought), function_call })
    }
}

/// The event's fields as `Value` trees, read through serde.
#[derive(Debug, Default)]
struct Fields {
    candidates: Value,
    usage_metadata: Value,
    error: Value,
    response_id: Value,
    model_version: Value,
    prompt_feedback: Value,
}

impl Fields {
    fn event(self) -> GeminiEvent<'static> {
        GeminiEvent {
            candidates: candidates_of_tree(&self.candidates),
            usage_metadata: self.usage_metadata,
            error: self.error,
            response_id: self.response_id,
            model_version: self.model_version,
            prompt_feedback: self.prompt_feedback,
        }
    }
}

/// The candidates of a `candidates` tree.
fn candidates_of_tree(candidates: &Value) -> Vec<Candidate<'static>> {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(|s| Cow::Owned(s.to_owned()));
    let part = |part: &Value| Part {
        text: text(part.get("text")).filter(|_| part.get("thought").and_then(Value::as_bool) != Some(true)),
        function_call: part.get("functionCall").cloned(),
    };
    let candidate = |candidate: &Value| Candidate {
        index: candidate.get("index").and_then(Value::as_u64),
        parts: candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |parts| parts.iter().map(part).collect()),
        finish_reason: text(candidate.get("finishReason")),
    };
    candidates.as_array().map_or_else(Vec::new, |candidates| candidates.iter().map(candidate).collect())
}

lenient_deserialize!(Fields);

impl<'de> Lenient<'de> for Fields {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        value_fields(map)
    }
}

impl ValueFields for Fields {
    fn with_fields<R>(&mut self, read: impl FnOnce(&mut [(&'static str, &mut Value)]) -> R) -> R {
        read(&mut [
            ("candidates", &mut self.candidates),
            ("usageMetadata", &mut self.usage_metadata),
            ("error", &mut self.error),
            ("responseId", &mut self.response_id),
            ("modelVersion", &mut self.model_version),
            ("promptFeedback", &mut self.prompt_feedback),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event a `Value` tree of it reads as.
    fn of_tree(tree: &Value) -> GeminiEvent<'static> {
        let field = |name: &str| tree.get(name).cloned().unwrap_or_default();
        Fields {
            candidates: field("candidates"),
            usage_metadata: field("usageMetadata"),
            error: field("error"),
            response_id: field("responseId"),
            model_version: field("modelVersion"),
            prompt_feedback: field("promptFeedback"),
        }
        .event()
    }

    /// Every event reads as the `Value` tree has it, whatever its shape (a repeated field, an
    /// escaped key, a thought, a part or candidate that is not an object, an array, a scalar)
    /// and whatever its texts (escaped, a lone surrogate, a bad escape, a number); text that is
    /// not JSON (or that the tree refuses in the candidates) reads as nothing.
    #[test]
    fn events_read_as_the_tree_has_them() {
        let shapes = [
            r#"{"candidates":[{"content":{"parts":[{"text":@}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":3},"modelVersion":"g","responseId":"r"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":@}],"role":"model"}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"x","thought":true},{"text":@}]},"finishReason":"STOP"}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"thought":false,"text":@},{"functionCall":{"name":"f","args":{"a":[1]}}}]},"index":1}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":@,"thought":1},5,{"functionCall":null}]},"index":-1},"x"]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":@}],"parts":{}},"content":{"parts":[{"text":@}]},"index":2.0}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}],"parts":[{"text":@}]}},{"content":{"parts":[{"text":@}],"parts":7}}]}"#,
            r#"{"candidates":[1],"candidates":[{"finishReason":@}]}"#,
            r#"{"candid\u0061tes":[{"index":2}],"error":null,"promptFeedback":{"blockReason":@}}"#,
            r#"{"error":{"message":@},"responseId":7,"candidates":{"content":{}}}"#,
        ];
        let events = crate::like_last::test_stream(&shapes, 5, 2000);
        for data in events.iter().map(String::as_str).chain(crate::lenient::ODD_EVENTS) {
            match data.parse::<Value>() {
                Ok(tree) => assert_eq!(GeminiEvent::parse(data), Some(of_tree(&tree)), "{data}"),
                Err(_) => assert_eq!(GeminiEvent::parse(data), None, "{data}"),
            }
        }
        for data in ["", "{", r#"{"candidates":[}"#, r#"{"a":1} x"#] {
            assert!(GeminiEvent::parse(data).is_none(), "{data}");
        }
    }

    /// A stream read with [`GeminiReader`] has the fields each event has read alone, whatever
    /// follows what: events of another format that differ only in a string (the shortcut), in
    /// a byte around it, in the string's kind (escapes, a number, a bad escape), or in shape,
    /// among Gemini's own.
    #[test]
    fn a_stream_reader_reads_each_event_as_if_alone() {
        let shapes = [
            r#"{"choices":[{"delta":{"content":@}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":@},"finish_reason":null}]}"#,
            r#"{"x":@,"y":"z"}"#,
            r#"{"candidates":@}"#,
            r#"{"candidates":{"a":@},"error":null}"#,
            r#"{"error":@,"x":"y"}"#,
            r#"{"responseId":@,"x":["y"]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":@}]}}]}"#,
        ];
        let mut reader = GeminiReader::default();
        let mut shortcut = 0;
        for data in crate::like_last::test_stream(&shapes, 13, 5000) {
            shortcut += usize::from(reader.nothing.is_like(&data));
            assert_eq!(reader.read(&data), GeminiEvent::parse(&data), "{data}");
        }
        assert!(shortcut > 300, "the shortcut was taken {shortcut} times");
    }

    /// Read by hand, an event is what serde and the tree of its candidates read, whatever it
    /// holds.
    #[test]
    fn events_read_by_hand_as_through_serde() {
        let top = ["candidates", "usageMetadata", "error", "responseId", "modelVersion", "promptFeedback", "x"];
        let keys =
            ["content", "parts", "text", "thought", "functionCall", "index", "finishReason", "role", "x", "t\\u0065xt"];
        crate::lenient::assert_read_by_hand_as_through_serde(&keys, &top, |data| {
            let through_serde = crate::lenient::parse::<Fields>(data).map(Fields::event);
            let read = by_hand(data).map(|(event, _)| event);
            if read.is_some() {
                assert_eq!(read, through_serde, "{data}");
            }
            (read.is_some(), through_serde.is_some())
        });
    }
}
