//! Server-sent events framing.

use bytes::Bytes;
use serde_json::Value;

/// Content type of every SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// `data: <json>\n\n` (OpenAI and Gemini style).
pub fn data(payload: &Value) -> Bytes {
    frame(None, payload)
}

/// `event: <name>\ndata: <json>\n\n` (Anthropic style).
pub fn event(name: &str, payload: &Value) -> Bytes {
    frame(Some(name), payload)
}

/// OpenAI's stream terminator.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

fn frame(name: Option<&str>, payload: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    if let Some(name) = name {
        buf.extend_from_slice(b"event: ");
        buf.extend_from_slice(name.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail: its keys are always strings.
    let _ = serde_json::to_writer(&mut buf, payload);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_frame() {
        assert_eq!(data(&json!({"a": 1})), Bytes::from_static(b"data: {\"a\":1}\n\n"));
    }

    #[test]
    fn named_event_frame() {
        assert_eq!(
            event("ping", &json!({"type": "ping"})),
            Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
        );
    }

    #[test]
    fn done_frame() {
        assert_eq!(done(), Bytes::from_static(b"data: [DONE]\n\n"));
    }
}
