//! Helpers shared by the unit tests of several modules (streams, hostile inputs).

use serde_json::{json, Map, Value};

use crate::gateway::pipeline::stream::{Stage, StreamPump};
use crate::gateway::types::Usage;
use crate::gateway::wire::sse::SseParser;

pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// Runs `input` through a fresh pump at every split point (and byte by byte), checks every
/// run writes the same bytes, and returns the parsed client events.
pub fn pump(make: impl Fn() -> Vec<Stage>, input: &[u8]) -> (Vec<(Option<String>, Value)>, Option<Usage>) {
    let mut whole = StreamPump::new(make());
    let mut expected = whole.chunk(input);
    expected.extend(whole.end());
    for split in 0..=input.len() {
        let mut p = StreamPump::new(make());
        let mut out = p.chunk(&input[..split]);
        out.extend(p.chunk(&input[split..]));
        out.extend(p.end());
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected), "split at {split}");
    }
    let mut p = StreamPump::new(make());
    let mut out: Vec<u8> = input.iter().flat_map(|b| p.chunk(std::slice::from_ref(b))).collect();
    out.extend(p.end());
    assert_eq!(out, expected, "byte by byte");
    (parse_sse(&expected), whole.summary().usage)
}

pub fn parse_sse(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut parser = SseParser::new();
    let mut events = parser.push(bytes);
    events.extend(parser.finish());
    events
        .into_iter()
        .map(|e| {
            let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data));
            (e.event, data)
        })
        .collect()
}

pub fn data(events: &[(Option<String>, Value)]) -> Vec<Value> {
    events.iter().map(|(_, d)| d.clone()).collect()
}

// --- robustness ----------------------------------------------------------------------------

/// Every variant of `template` with one value (at any depth) replaced by a hostile one.
pub fn mutations(template: &Value) -> Vec<Value> {
    fn paths(value: &Value, prefix: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                let path = format!("{prefix}/{k}");
                out.push(path.clone());
                paths(v, path, out);
            }),
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
                let path = format!("{prefix}/{i}");
                out.push(path.clone());
                paths(v, path, out);
            }),
            _ => {}
        }
    }
    let hostile = [
        json!(null),
        json!(-1),
        json!(1.5e300),
        json!(u64::MAX),
        json!(""),
        json!("data:;base64,"),
        json!([]),
        json!([null]),
        json!({}),
        json!(true),
    ];
    let mut all = Vec::new();
    paths(template, String::new(), &mut all);
    let mut out = Vec::new();
    for path in all {
        for h in &hostile {
            let mut v = template.clone();
            if let Some(slot) = v.pointer_mut(&path) {
                *slot = h.clone();
            }
            out.push(v);
        }
    }
    out
}
