//! Server-sent events: the parser for origin streams (from `edge_scan`, compiled for speed) and
//! the writers for client streams. Stream translation (Anthropic/Gemini → OpenAI chunks,
//! OpenAI → Anthropic events) is built from these.

pub use edge_scan::sse::{SseEvent, SseParser, MAX_EVENT_BYTES};

/// Appends `data: <json>\n\n`.
pub fn write_data(out: &mut Vec<u8>, json: &serde_json::Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(serde_json::to_string(json).unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Appends `event: <name>\ndata: <json>\n\n` (Anthropic's framing).
pub fn write_event(out: &mut Vec<u8>, event: &str, json: &serde_json::Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\n");
    write_data(out, json);
}

/// OpenAI's terminator.
pub fn write_done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}
