//! The fields the gateway reads from a Gemini stream event, each as the `Value` tree has it
//! (`Null` when missing); the other fields are skipped, not built into a tree. Read whole as a
//! `Value` (in the size-built gateway), a 48-byte event of other fields cost ~5,400
//! instructions, most of it building and dropping maps.

use serde::de::MapAccess;
use serde_json::Value;

use crate::lenient::{lenient_deserialize, parse_value_fields, value_fields, Lenient, ValueFields};

/// A Gemini stream event's fields. Like the tree: a repeated field counts as its last, and an
/// event that is not an object has none.
#[derive(Debug, Default, PartialEq)]
pub struct GeminiEvent {
    pub candidates: Value,
    pub usage_metadata: Value,
    pub error: Value,
    pub response_id: Value,
    pub model_version: Value,
    pub prompt_feedback: Value,
}

impl GeminiEvent {
    /// The event's fields; `None` when `data` is not JSON.
    pub fn parse(data: &str) -> Option<GeminiEvent> {
        parse_value_fields(data)
    }
}

lenient_deserialize!(GeminiEvent);

impl<'de> Lenient<'de> for GeminiEvent {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        value_fields(map)
    }
}

impl ValueFields for GeminiEvent {
    fn with_fields<R>(&mut self, read: impl FnOnce(&mut [(&str, &mut Value)]) -> R) -> R {
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

    /// Every event reads as the `Value` tree has it, whatever its shape (a repeated field, an
    /// escaped key, an array, a scalar); text that is not JSON reads as nothing.
    #[test]
    fn events_read_as_the_tree_has_them() {
        for data in [
            r#"{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":3},"modelVersion":"g","responseId":"r"}"#,
            r#"{"candidates":[1],"candidates":[{"finishReason":"STOP"}]}"#,
            r#"{"candid\u0061tes":[{"index":2}],"error":null,"promptFeedback":{"blockReason":"SAFETY"}}"#,
            r#"{"error":{"message":"boom"},"responseId":7}"#,
        ]
        .into_iter()
        .chain(crate::lenient::ODD_EVENTS)
        {
            crate::lenient::assert_fields_as_tree::<GeminiEvent>(data);
        }
        for data in ["", "{", r#"{"candidates":[}"#, r#"{"a":1} x"#] {
            assert!(GeminiEvent::parse(data).is_none(), "{data}");
        }
    }

    /// Read by hand, an event is what serde reads, whatever it holds.
    #[test]
    fn events_read_by_hand_as_through_serde() {
        crate::lenient::assert_read_by_hand_as_through_serde::<GeminiEvent>(&[
            "candidates",
            "usageMetadata",
            "error",
            "responseId",
            "modelVersion",
            "promptFeedback",
            "content",
            "parts",
            "text",
            "x",
            "candid\\u0061tes",
        ]);
    }
}
