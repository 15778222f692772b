//! The fields the gateway reads from a Gemini stream event, each as the `Value` tree has it
//! (`Null` when missing); the other fields are skipped, not built into a tree. Read whole as a
//! `Value` (in the size-built gateway), a 48-byte event of other fields cost ~5,400
//! instructions, most of it building and dropping maps.

use serde::de::MapAccess;
use serde_json::Value;

use crate::lenient::{lenient_deserialize, value_fields, Lenient};

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
        crate::lenient::parse(data)
    }
}

lenient_deserialize!(GeminiEvent);

impl<'de> Lenient<'de> for GeminiEvent {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut event = GeminiEvent::default();
        let e = &mut event;
        value_fields(
            map,
            &mut [
                ("candidates", &mut e.candidates),
                ("usageMetadata", &mut e.usage_metadata),
                ("error", &mut e.error),
                ("responseId", &mut e.response_id),
                ("modelVersion", &mut e.model_version),
                ("promptFeedback", &mut e.prompt_feedback),
            ],
        )?;
        Ok(event)
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
            let e = GeminiEvent::parse(data).unwrap();
            crate::lenient::assert_fields_as_tree(
                data,
                &[
                    ("candidates", &e.candidates),
                    ("usageMetadata", &e.usage_metadata),
                    ("error", &e.error),
                    ("responseId", &e.response_id),
                    ("modelVersion", &e.model_version),
                    ("promptFeedback", &e.prompt_feedback),
                ],
            );
        }
        for data in ["", "{", r#"{"candidates":[}"#, r#"{"a":1} x"#] {
            assert!(GeminiEvent::parse(data).is_none(), "{data}");
        }
    }
}
