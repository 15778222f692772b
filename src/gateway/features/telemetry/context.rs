//! W3C Trace Context: the client's `traceparent` / `tracestate`, the request's own span
//! context, and the headers the origin gets.
//!
//! With telemetry configured the gateway *continues* the client's trace: same trace id, the
//! client's span as parent, its sampled flag decides (parent-based sampling), and the origin
//! receives `traceparent` naming the gateway's span. Without telemetry the gateway is not a
//! participant and passes both headers through unchanged, as the spec asks of intermediaries.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::gateway::ports::Clock;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// `tracestate` longer than this is dropped (the spec's limit for propagating it whole).
const MAX_TRACESTATE: usize = 512;
const SAMPLED: u8 = 0x01;

/// A valid `traceparent` (and `tracestate`) from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
    /// The header as received, for pass-through.
    pub raw: String,
    pub tracestate: Option<String>,
}

impl TraceParent {
    /// The client's trace context, when its `traceparent` is valid (one header, lower-case
    /// hex, non-zero ids, version not `ff`; a later version is read by its first four fields).
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let value = values.next()?.to_str().ok()?.trim();
        if values.next().is_some() {
            return None;
        }
        let (trace_id, parent_id, flags) = parse(value)?;
        let tracestate = {
            let parts: Vec<&str> =
                headers.get_all(TRACESTATE).iter().filter_map(|v| v.to_str().ok()).map(str::trim).collect();
            let joined = parts.join(",");
            (!joined.is_empty() && joined.len() <= MAX_TRACESTATE).then_some(joined)
        };
        Some(TraceParent { trace_id, parent_id, flags, raw: value.to_string(), tracestate })
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

fn parse(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let b = value.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&b[0..2])?[0];
    // Version 00 is exactly 55 characters; later versions may append fields after a '-'.
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = unhex::<16>(&b[3..35])?;
    let parent_id = unhex::<8>(&b[36..52])?;
    let flags = unhex::<1>(&b[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

/// Lower-case hex only (the spec forbids upper case).
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The request's span: where it sits in its trace and whether it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The client's span, when the trace was continued.
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
    pub tracestate: Option<String>,
}

impl SpanContext {
    /// Continues the client's trace, or starts one sampled with probability `sample`.
    pub fn start(parent: Option<&TraceParent>, sample: f64, clock: &impl Clock) -> SpanContext {
        let mut span_id = [0u8; 8];
        while span_id == [0; 8] {
            clock.random_bytes(&mut span_id);
        }
        match parent {
            Some(p) => SpanContext {
                trace_id: p.trace_id,
                span_id,
                parent_id: Some(p.parent_id),
                sampled: p.sampled(),
                tracestate: p.tracestate.clone(),
            },
            None => {
                let mut trace_id = [0u8; 16];
                while trace_id == [0; 16] {
                    clock.random_bytes(&mut trace_id);
                }
                SpanContext {
                    trace_id,
                    span_id,
                    parent_id: None,
                    sampled: sampled(&trace_id, sample),
                    tracestate: None,
                }
            }
        }
    }

    /// `traceparent` naming this span (version 00).
    pub fn traceparent(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        for (i, b) in self.trace_id.iter().chain(&self.span_id).enumerate() {
            let at = if i < 16 { 3 + 2 * i } else { 36 + 2 * (i - 16) };
            out[at] = DIGITS[usize::from(b >> 4)];
            out[at + 1] = DIGITS[usize::from(b & 15)];
        }
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Ratio sampling on the trace id's random low 56 bits, so every participant that samples by
/// ratio decides the same way for the same trace.
fn sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..]);
    let value = u64::from_be_bytes(low);
    (value as f64) < ratio * (1u64 << 56) as f64
}

/// The trace headers for the origin: the gateway's span as parent when it traces, else the
/// client's headers as they came.
pub fn propagation(span: Option<&SpanContext>, parent: Option<&TraceParent>) -> Vec<(HeaderName, HeaderValue)> {
    let (traceparent, tracestate) = match (span, parent) {
        (Some(span), _) => (span.traceparent(), span.tracestate.clone()),
        (None, Some(parent)) => (parent.raw.clone(), parent.tracestate.clone()),
        (None, None) => return Vec::new(),
    };
    let mut out = Vec::with_capacity(2);
    if let Ok(value) = HeaderValue::from_str(&traceparent) {
        out.push((HeaderName::from_static(TRACEPARENT), value));
    }
    if let Some(value) = tracestate.and_then(|s| HeaderValue::from_str(&s).ok()) {
        out.push((HeaderName::from_static(TRACESTATE), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::MemoryHost;
    use crate::gateway::ports::UpstreamError;
    use crate::gateway::util::text::hex;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_valid_and_refuses_invalid_traceparents() {
        let p = TraceParent::from_headers(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, "a=1"), (TRACESTATE, "b=2")]))
            .unwrap();
        assert_eq!(hex(&p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p.parent_id), "00f067aa0ba902b7");
        assert!(p.sampled());
        assert_eq!(p.tracestate.as_deref(), Some("a=1,b=2"));
        // A later version with an extra field is read by its first four fields.
        assert!(TraceParent::from_headers(&headers(&[(TRACEPARENT, &format!("01{}-what", &VALID[2..]))])).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::from_headers(&headers(&[(TRACEPARENT, bad)])).is_none(), "{bad:?}");
        }
        assert!(TraceParent::from_headers(&headers(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)])).is_none());
        let long = "k=".to_string() + &"v".repeat(600);
        let p = TraceParent::from_headers(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, &long)])).unwrap();
        assert_eq!(p.tracestate, None, "an oversized tracestate is dropped");
    }

    #[test]
    fn continues_or_starts_traces_and_propagates() {
        let host = MemoryHost::new(|_| Err(UpstreamError::Timeout));
        let parent = TraceParent::from_headers(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, "vendor=x")])).unwrap();
        let span = SpanContext::start(Some(&parent), 0.0, &host);
        assert_eq!(span.trace_id, parent.trace_id);
        assert_eq!(span.parent_id, Some(parent.parent_id));
        assert!(span.sampled, "the parent's decision wins over the ratio");
        let out = propagation(Some(&span), Some(&parent));
        assert_eq!(
            out[0].1.to_str().unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&span.span_id))
        );
        assert_eq!(out[1].1, "vendor=x");
        // Not tracing: the client's headers pass through unchanged.
        let out = propagation(None, Some(&parent));
        assert_eq!(out[0].1, VALID);
        assert!(propagation(None, None).is_empty());

        let root = SpanContext::start(None, 1.0, &host);
        assert!(root.sampled && root.parent_id.is_none() && root.trace_id != [0; 16]);
        assert!(root.traceparent().ends_with("-01"));
        let never = SpanContext::start(None, 0.0, &host);
        assert!(!never.sampled);
        assert!(never.traceparent().ends_with("-00"));
        // Ratio sampling keeps about the asked share.
        let kept = (0..2000).filter(|_| SpanContext::start(None, 0.25, &host).sampled).count();
        assert!((350..650).contains(&kept), "{kept}");
    }
}
